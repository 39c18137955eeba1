"""The receiver against a real Mosquitto and a real SQLite file: good alerts stored once, every
kind of bad message rejected, counted and never stored, and the receiver keeps going."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controlroom import db
from controlroom.receiver import Receiver
from edge.adapters.mqtt_config import MqttSinkConfig
from edge.app.compose import build_uplink
from edge.app.local_broker import LocalBroker
from edge.common.signing import generate_key, sign_alert, write_key_pair
from edge.core import messages as m
from edge.core.ports import Detection
from tests.controlroom.conftest import (
    Publisher,
    Unit,
    jpeg_bytes,
    mqtt_cfg,
    raw_pub_b64,
)
from tests.uplink.conftest import make_detection  # noqa: F401  (fixture)
from tests.waiting import wait_until

T = "phonewatch/unit-a"


def count(engine: Engine, table: sa.Table = db.alerts) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)


def test_signed_alert_and_evidence_are_stored(
    receiver: Receiver, publisher: Publisher, unit_a: Unit, engine: Engine
) -> None:
    payload, jpeg = unit_a.alert()
    publisher.publish(f"{T}/alert", payload)
    publisher.publish(f"{T}/evidence/unit-a-1", jpeg)
    assert wait_until(lambda: receiver.stats().get("evidence_stored") == 1)
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.alerts)).one()
        ev = conn.execute(sa.select(db.evidence)).one()
    assert (row.unit, row.seq, row.alert_id, row.status) == ("unit-a", 1, "unit-a-1", "new")
    assert row.payload.encode() == payload  # byte-exact, so it can be re-verified later
    assert (row.lat, row.lon, row.fix_mode) == (51.5007, -0.1246, "3d")
    assert bytes(ev.jpeg) == jpeg
    assert ev.sha256 == row.frame_sha256
    assert receiver.stats()["rejected_total"] == 0


def test_qos1_duplicates_and_redelivery_store_once(
    receiver: Receiver, publisher: Publisher, unit_a: Unit, engine: Engine
) -> None:
    payload, jpeg = unit_a.alert()
    for _ in range(3):
        publisher.publish(f"{T}/alert", payload)
        publisher.publish(f"{T}/evidence/unit-a-1", jpeg)
    assert wait_until(lambda: receiver.stats().get("duplicates") == 4)
    assert count(engine) == 1
    assert count(engine, db.evidence) == 1
    assert receiver.stats()["rejected_total"] == 0


def test_every_bad_message_is_rejected_counted_and_not_stored(
    receiver: Receiver, publisher: Publisher, unit_a: Unit, engine: Engine
) -> None:
    stranger = Unit("unit-x", generate_key())  # never registered
    forger = Unit("unit-a", generate_key())  # claims to be unit-a with another key
    good, good_jpeg = unit_a.alert(seq=1)
    tampered = json.loads(good)
    tampered["score"] = 0.99  # signed at 0.93
    schema_bad = json.loads(unit_a.alert(seq=2)[0])
    schema_bad["score"] = 7
    schema_bad = sign_alert({k: v for k, v in schema_bad.items() if k != "signature"}, unit_a.key)
    huge = sign_alert(dict(json.loads(unit_a.alert(seq=3)[0]), gps_state="x" * 40000), unit_a.key)
    msgs = [
        ("phonewatch/unit-x/alert", stranger.alert()[0]),
        (f"{T}/alert", forger.alert(seq=5)[0]),
        (f"{T}/alert", m.encode(tampered)),
        (f"{T}/alert", m.encode(schema_bad)),
        (f"{T}/alert", m.encode(huge)),
        (f"{T}/alert", b"\xff\xfe not json"),
        (f"{T}/alert", b"[1, 2, 3]"),
        (f"{T}/alert", unit_a.alert(seq=4, sign=False)[0]),
        ("phonewatch/unit-b/alert", unit_a.alert(seq=6)[0]),  # unit-a's alert on unit-b's topic
        (f"{T}/evidence/unit-a-1", b"GIF89a not a jpeg at all"),
        (f"{T}/evidence/unit-a-1", jpeg_bytes(99)),  # a JPEG, but not the one that was signed
        ("phonewatch/unit-a/status", b'{"state": "online"}'),
        ("phonewatch/unit-a/heartbeat", b"{}"),
    ]
    publisher.publish(f"{T}/alert", good)
    assert wait_until(lambda: count(engine) == 1)
    for topic, payload in msgs:
        publisher.publish(topic, payload)
    publisher.publish(f"{T}/evidence/unit-a-1", good_jpeg)
    assert wait_until(lambda: receiver.stats().get("evidence_stored") == 1)
    stats = receiver.stats()
    rejected = stats["rejected"]
    assert rejected == {
        "unknown_unit": 1,
        "bad_signature": 2,
        "schema": 4,
        "oversized": 1,
        "not_json": 2,
        "topic_mismatch": 1,
        "not_jpeg": 1,
        "evidence_mismatch": 1,
    }, rejected
    assert count(engine) == 1
    assert count(engine, db.evidence) == 1
    with engine.connect() as conn:
        assert conn.execute(sa.select(db.alerts.c.score)).scalar() == 0.93
    assert receiver.is_connected  # still running and still storing:
    publisher.publish(f"{T}/alert", unit_a.alert(seq=7)[0])
    assert wait_until(lambda: count(engine) == 2)


@pytest.mark.slow
def test_replay_of_an_old_or_purged_alert_is_rejected(
    receiver: Receiver, publisher: Publisher, unit_a: Unit, engine: Engine
) -> None:
    payload, _ = unit_a.alert(seq=1)
    publisher.publish(f"{T}/alert", payload)
    assert wait_until(lambda: count(engine) == 1)
    with engine.begin() as conn:  # stored an hour ago, then purged by retention
        conn.execute(
            db.alerts.update().values(
                received_at=time.time() - 3600, status="purged", purged_at=time.time(), payload=None
            )
        )
    publisher.publish(f"{T}/alert", payload)
    assert wait_until(lambda: receiver.stats()["rejected"].get("replay") == 1)
    assert count(engine) == 1
    with engine.connect() as conn:
        assert conn.execute(sa.select(db.alerts.c.status)).scalar() == "purged"


def test_evidence_before_its_alert_is_kept_and_matched(
    receiver: Receiver, publisher: Publisher, unit_a: Unit, engine: Engine
) -> None:
    payload, jpeg = unit_a.alert(seq=1)
    publisher.publish(f"{T}/evidence/unit-a-1", jpeg)
    assert wait_until(lambda: count(engine, db.evidence) == 1)
    publisher.publish(f"{T}/alert", payload)
    assert wait_until(lambda: count(engine) == 1)
    with engine.connect() as conn:
        joined = conn.execute(
            sa.select(db.evidence.c.alert_id).join(
                db.alerts,
                sa.and_(
                    db.alerts.c.alert_id == db.evidence.c.alert_id,
                    db.alerts.c.frame_sha256 == db.evidence.c.sha256,
                ),
            )
        ).all()
    assert [r[0] for r in joined] == ["unit-a-1"]


@pytest.mark.slow
def test_status_and_heartbeat_update_the_unit(
    receiver: Receiver, publisher: Publisher, unit_a: Unit, engine: Engine
) -> None:
    status = m.build_status("unit-a", "online", t_wall_s=time.time(), software="0.1.0")
    hb = m.build_heartbeat(
        "unit-a",
        t_wall_s=time.time(),
        uptime_s=12.0,
        pipeline={"fps": 29.5, "dropped_frames": 3},
        outbox_depth=2,
        evidence_pruned=0,
        alerts_pruned=0,
        gps_state="3d",
        cpu_temp_c=51.2,
    )
    publisher.publish(f"{T}/status", m.encode(status), retain=True)
    publisher.publish(f"{T}/heartbeat", m.encode(hb), qos=0)
    assert wait_until(
        lambda: (
            receiver.stats().get("heartbeats") == 1 and receiver.stats().get("status_updates") == 1
        )
    )
    with engine.connect() as conn:
        u = conn.execute(sa.select(db.units).where(db.units.c.unit_id == "unit-a")).one()
    assert u.status_state == "online"
    assert u.software == "0.1.0"
    assert json.loads(u.heartbeat)["fps"] == 29.5


@pytest.mark.slow
def test_retained_status_reaches_a_receiver_started_later(
    broker: LocalBroker, publisher: Publisher, unit_a: Unit, engine: Engine
) -> None:
    offline = m.build_status(
        "unit-a", "offline", t_wall_s=time.time(), software="0.1.0", reason="connection lost"
    )
    publisher.publish(f"{T}/status", m.encode(offline), retain=True)
    r = Receiver(mqtt_cfg(broker), engine).start()
    try:
        assert r.wait_ready(10)
        assert wait_until(lambda: r.stats().get("status_updates") == 1)
    finally:
        r.close()
    with engine.connect() as conn:
        assert conn.execute(sa.select(db.units.c.status_state)).scalar() == "offline"


def test_nothing_lost_while_the_receiver_is_down(
    broker: LocalBroker, publisher: Publisher, unit_a: Unit, engine: Engine
) -> None:
    """Persistent session + manual ack: alerts sent while the receiver is away are stored
    when it comes back."""
    cfg = mqtt_cfg(broker)
    r = Receiver(cfg, engine).start()
    assert r.wait_ready(10)
    r.close()
    for _ in range(20):
        publisher.publish(f"{T}/alert", unit_a.alert()[0])
    r2 = Receiver(cfg, engine).start()
    try:
        assert wait_until(lambda: count(engine) == 20)
    finally:
        r2.close()


def test_unit_registered_while_running_is_accepted(
    receiver: Receiver, publisher: Publisher, engine: Engine
) -> None:
    late = Unit("unit-late", generate_key())
    receiver.ingest.key_refresh_s = 0.0
    publisher.publish("phonewatch/unit-late/alert", late.alert()[0])
    assert wait_until(lambda: receiver.stats()["rejected"].get("unknown_unit") == 1)
    db.upsert_unit(engine, late.unit_id, raw_pub_b64(late.key), "0" * 16)
    publisher.publish("phonewatch/unit-late/alert", late.alert()[0])
    assert wait_until(lambda: count(engine) == 1)


@pytest.mark.slow
def test_real_uplink_to_receiver(
    broker: LocalBroker,
    receiver: Receiver,
    engine: Engine,
    tmp_path: Path,
    make_detection: Callable[..., Detection],  # noqa: F811
) -> None:
    """The unit's own MqttUplink (outbox, signing, evidence) and heartbeat emitter into the
    control room."""
    from controlroom import crypto
    from edge.app.heartbeat import StatsEmitter

    data = tmp_path / "unit"
    _, pub_path, _ = write_key_pair("unit-r", data / "keys")
    pub = crypto.parse_public_key(pub_path.read_bytes())
    db.upsert_unit(
        engine,
        "unit-r",
        base64.b64encode(crypto.raw_public_bytes(pub)).decode(),
        crypto.key_id(pub),
    )
    receiver.ingest.reload_keys()
    cfg = MqttSinkConfig(
        **broker.sink_settings("unit-r"), outbox_fsync=False, heartbeat_interval_s=1.0
    )
    uplink = build_uplink(cfg, unit_id="unit-r", data_dir=data, on_command=None)
    emitter = StatsEmitter(
        unit_id="unit-r", uplink=uplink, interval_s=1.0, pipeline_stats=lambda: {"fps": 30.0}
    ).start()
    try:
        for _ in range(3):
            uplink.send(make_detection())
        assert uplink.wait_drained(15)
        assert wait_until(
            lambda: (
                receiver.stats().get("evidence_stored", 0) == 3
                and count(engine) == 3
                and receiver.stats().get("heartbeats")
            )
        )
    finally:
        emitter.close()
        uplink.close()
    with engine.connect() as conn:
        seqs = sorted(r[0] for r in conn.execute(sa.select(db.alerts.c.seq)))
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]  # a new outbox numbers from the clock
    assert seqs[0] >= 1_735_689_600
    assert receiver.stats()["rejected_total"] == 0


@pytest.mark.slow
def test_production_broker_tls_acl_and_shared_subscription(tmp_path: Path, engine: Engine) -> None:
    """The production Mosquitto config (TLS, client certificates, per-unit ACL): the control
    room's certificate may take the shared subscription and receives a unit's alert, evidence
    and clip."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    unit = Unit("unit-a", generate_key())
    db.upsert_unit(engine, unit.unit_id, raw_pub_b64(unit.key), "0" * 16)
    with LocalBroker(tls=True, units=["unit-a"]) as b:
        certs = b.client_certs("controlroom")
        r = Receiver(mqtt_cfg(b, host="localhost", **certs), engine).start()
        try:
            assert r.wait_ready(15)
            assert r.stats()["subscriptions_refused"] == 0  # the ACL allows $share/...
            ucerts = b.client_certs("unit-a")
            c = mqtt.Client(
                callback_api_version=CallbackAPIVersion.VERSION2,
                client_id="unit-a",
                protocol=mqtt.MQTTv5,
            )
            c.tls_set(str(ucerts["ca_file"]), str(ucerts["cert_file"]), str(ucerts["key_file"]))
            c.connect("localhost", b.port)
            c.loop_start()
            try:
                clip = b"\x1a\x45\xdf\xa3" + bytes(60)  # WebM magic: the ACL lets units send clips
                payload, jpeg = unit.alert(clip=clip)
                c.publish(f"{T}/alert", payload, qos=1).wait_for_publish(10)
                c.publish(f"{T}/evidence/unit-a-1", jpeg, qos=1).wait_for_publish(10)
                c.publish(f"{T}/clip/unit-a-1", clip, qos=1).wait_for_publish(10)
            finally:
                c.disconnect()
                c.loop_stop()
            assert wait_until(
                lambda: r.stats().get("evidence_stored") == 1 == r.stats().get("clips_stored"),
                timeout_s=15,
            ), r.stats()
        finally:
            r.close()
    assert count(engine) == 1


@pytest.mark.slow
def test_database_failure_keeps_messages_until_it_recovers(
    receiver: Receiver, publisher: Publisher, unit_a: Unit, engine: Engine
) -> None:
    """While the database refuses writes the batch stays unacknowledged and is retried; once
    it recovers, every alert is stored once."""
    with engine.begin() as conn:  # a real failure: the table is gone
        conn.execute(sa.text("ALTER TABLE alerts RENAME TO alerts_away"))
    for _ in range(5):
        publisher.publish(f"{T}/alert", unit_a.alert()[0])
    assert wait_until(lambda: receiver.db_errors >= 2, timeout_s=15)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE alerts_away RENAME TO alerts"))
    # the rows are visible once the transaction commits; the counters are updated just after it
    assert wait_until(lambda: receiver.stats().get("stored") == 5, timeout_s=15), receiver.stats()
    assert count(engine) == 5


def big_jpeg(i: int, size: int) -> bytes:
    """A distinct JPEG-framed payload of ``size`` bytes (the receiver checks the markers and,
    against the signed alert, the size and SHA-256; it never decodes the image)."""
    head = b"\xff\xd8\xff\xe0" + i.to_bytes(4, "big")
    return head + bytes(size - len(head) - 2) + b"\xff\xd9"


def test_queued_bytes_stay_within_queue_max_mb_while_the_database_is_locked(
    broker: LocalBroker, publisher: Publisher, unit_a: Unit, engine: Engine, tmp_path: Path
) -> None:
    """Issue 17: large evidence arriving while another process holds the SQLite write lock.
    The receiver holds at most ``queue_max_mb`` of received, unstored messages and leaves the
    rest at the broker (paho stops reading; un-PUBACKed messages count against ReceiveMaximum);
    once the lock is released every alert and JPEG is stored exactly once."""
    import sqlite3

    n, size = 12, 1024 * 1024
    bound = 3 * 1024 * 1024
    # its own topic root: retained status messages of other tests stay out of the counts
    r = Receiver(mqtt_cfg(broker, queue_max_mb=3, topic_root="big"), engine).start()
    lock = sqlite3.connect(tmp_path / "cr.sqlite", isolation_level=None)
    try:
        assert r.wait_ready(10)
        lock.execute("BEGIN IMMEDIATE")  # the database write lock, as a busy writer holds it
        sent = [unit_a.alert(jpeg=big_jpeg(i, size)) for i in range(n)]
        infos = []
        for seq, (payload, jpeg) in enumerate(sent, start=1):
            infos.append(publisher.publish("big/unit-a/alert", payload, wait=False))
            infos.append(publisher.publish(f"big/unit-a/evidence/unit-a-{seq}", jpeg, wait=False))
        for info in infos:
            info.wait_for_publish(30)  # all of it is at the broker
        # The receiver has filled its budget and stopped taking messages.
        assert wait_until(lambda: r.stats()["flow_paused"] >= 1, timeout_s=20), r.stats()
        held = r.stats()
        assert held["queued_bytes"] <= bound < held["queued_bytes"] + size, held
        # the rest stayed at the broker: at most two JPEGs (and their small alerts) here
        assert r.backlog() <= 2 * (bound // size) + 1, r.backlog()
        assert count(engine) == 0
        lock.execute("ROLLBACK")
        # counted at the commit; handed back to the budget just after the PUBACKs
        assert wait_until(
            lambda: r.stats().get("evidence_stored") == n and r.stats()["queued_messages"] == 0,
            timeout_s=60,
        ), r.stats()
        stats = r.stats()
    finally:
        lock.close()
        r.close()
    assert stats["queued_bytes_peak"] <= bound == stats["queue_max_bytes"], stats
    assert stats["queued_bytes"] == 0, stats
    assert stats["queued_messages"] == 0, stats
    assert stats["stored"] == n, stats
    assert stats["rejected_total"] == 0, stats
    with engine.connect() as conn:
        assert sorted(x[0] for x in conn.execute(sa.select(db.alerts.c.seq))) == list(
            range(1, n + 1)
        )
        ev = conn.execute(sa.select(db.evidence.c.alert_id, db.evidence.c.sha256)).all()
    assert len(ev) == len(set(ev)) == n


def test_the_crop_is_stored_only_if_it_is_the_one_the_alert_signed(
    receiver: Receiver, publisher: Publisher, unit_a: Unit, engine: Engine
) -> None:
    """The driver-window crop travels on <root>/<unit>/crop/<alert_id>: checked against the
    signed alert's crop_sha256 and size; one that arrives first waits for its alert."""
    early, _ = unit_a.alert(seq=2)
    publisher.publish(f"{T}/crop/unit-a-2", Unit.crop(2))  # before its alert
    good, _ = unit_a.alert(seq=1)
    publisher.publish(f"{T}/alert", good)
    publisher.publish(f"{T}/crop/unit-a-1", Unit.crop(99))  # a JPEG, but not the signed one
    publisher.publish(f"{T}/crop/unit-a-1", b"not a jpeg")
    publisher.publish(f"{T}/crop/unit-a-1", Unit.crop(1))
    publisher.publish(f"{T}/alert", early)
    assert wait_until(lambda: count(engine, db.crops) == 2 and count(engine) == 2)
    stats = receiver.stats()
    assert stats["rejected"].get("crop_mismatch") == 1
    assert stats["rejected"].get("not_jpeg") == 1
    with engine.connect() as conn:
        got = dict(conn.execute(sa.select(db.crops.c.alert_id, db.crops.c.jpeg)).all())
    assert got == {"unit-a-1": Unit.crop(1), "unit-a-2": Unit.crop(2)}
