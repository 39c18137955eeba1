"""MqttUplink against a real Mosquitto (plain listener): round trip, GPS, heartbeat, status,
commands, outages, restarts and crashes."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.adapters.mqtt import MqttUplink
from edge.adapters.mqtt_config import MqttSinkConfig
from edge.app.compose import build_uplink
from edge.app.heartbeat import StatsEmitter, read_cpu_temp_c, stamp_position
from edge.app.local_broker import LocalBroker
from edge.common.signing import load_public_key, verify_alert, verify_evidence
from edge.core import messages as m
from edge.core.ports import Detection
from tests.uplink.conftest import (
    UNIT_A,
    FakeFix,
    SettableGps,
    Subscriber,
    connect_client,
    fix_dict,
    subscribe,
)
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("need_mosquitto")]

REPO = Path(__file__).resolve().parents[2]


def sink_config(broker: LocalBroker, unit: str = UNIT_A, **over: Any) -> MqttSinkConfig:
    settings: dict[str, Any] = {
        **broker.sink_settings(unit),
        "signing_key_autogenerate": True,
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 1.0,
        "heartbeat_interval_s": 3600,
        "keepalive_s": 5,
        "receipt_timeout_s": 2.0,
        "receipt_timeout_max_s": 8.0,
    }
    settings.update(over)
    return MqttSinkConfig(**settings)


@pytest.fixture
def uplinks(tmp_path: Path) -> Iterator[Callable[..., MqttUplink]]:
    made: list[MqttUplink] = []

    def make(
        broker: LocalBroker,
        unit: str = UNIT_A,
        *,
        on_command: Callable[[str, dict[str, Any]], None] | None = None,
        **over: Any,
    ) -> MqttUplink:
        up = build_uplink(
            sink_config(broker, unit, **over),
            unit_id=unit,
            data_dir=tmp_path / unit,
            on_command=on_command,
        )
        made.append(up)
        return up

    yield make
    for up in made:
        up.close(drain_timeout_s=0)


def public_key(tmp_path: Path, unit: str = UNIT_A) -> Any:
    return load_public_key(tmp_path / unit / "keys" / f"{unit}.sign.pub")


def seqs_in_order(sub: Subscriber) -> list[int]:
    """Alert sequence numbers as received, after de-duplication on (unit, seq)."""
    seen: set[tuple[str, int]] = set()
    out: list[int] = []
    for a in sub.alerts():
        if (a["unit"], a["seq"]) not in seen:
            seen.add((a["unit"], a["seq"]))
            out.append(a["seq"])
    return out


def test_round_trip_alert_and_evidence_signed_and_verified(
    broker: LocalBroker,
    tmp_path: Path,
    uplinks: Callable[..., MqttUplink],
    make_detection: Callable[..., Detection],
) -> None:
    sub = subscribe(broker, certs_for=None, receipts=True)
    up = uplinks(broker)
    assert up.wait_connected(10)
    dets = [make_detection(roi_id=f"lane{i}") for i in range(3)]
    for d in dets:
        up.send(d)
    assert sub.wait(
        lambda ms: (
            len([r for r in ms if "/evidence/" in r.topic]) >= 3
            and len([r for r in ms if r.topic.endswith("/alert")]) >= 3
        )
    )
    pub = public_key(tmp_path)
    alerts = sub.alerts()
    evidence = sub.evidence()
    s0 = alerts[0]["seq"]
    assert [a["alert_id"] for a in alerts] == [f"unit-a-{s0 + i}" for i in range(3)]
    for a, d in zip(alerts, dets, strict=True):
        assert m.schema_errors(a, m.ALERT_SCHEMA) == []
        assert verify_alert(a, pub)
        assert a["roi"] == d.roi_id
        assert a["fix"] is None
        assert a["time_source"] == "system"
        assert evidence[a["alert_id"]] == Path(d.evidence.frame_path).read_bytes()
        assert verify_evidence(a, evidence[a["alert_id"]])
    status = [json.loads(r.payload) for r in sub.on("/unit-a/status")]
    assert status
    assert status[0]["state"] == "online"
    assert m.schema_errors(status[0], m.STATUS_SCHEMA) == []
    assert up.wait_drained(5)
    assert up.stats()["inflight"] == 0
    sub.close()


def with_clip(d: Detection, clip: bytes) -> Detection:
    ev = dataclasses.replace(
        d.evidence,
        clip_sha256=hashlib.sha256(clip).hexdigest(),
        clip_bytes=len(clip),
        clip_type="video/webm",
        clip_data=clip,
    )
    return dataclasses.replace(d, evidence=ev)


def test_the_clip_follows_its_alert_and_is_forgotten_only_on_its_receipt(
    broker: LocalBroker,
    tmp_path: Path,
    uplinks: Callable[..., MqttUplink],
    make_detection: Callable[..., Detection],
) -> None:
    clip = b"\x1a\x45\xdf\xa3" + bytes(range(256)) * 300  # 77 kB standing in for a WebM
    big = b"\x1a\x45\xdf\xa3" + b"\0" * 1_200_000  # over clip_max_mb = 1
    topics = ("phonewatch/+/alert", "phonewatch/+/evidence/+", "phonewatch/+/clip/+")
    sub = subscribe(broker, certs_for=None, topics=topics)  # no receipts yet
    up = uplinks(broker, clip_max_mb=1)
    up.send(with_clip(make_detection(), clip))
    up.send(with_clip(make_detection(), big))
    assert sub.wait(lambda ms: len([r for r in ms if "/clip/" in r.topic]) >= 1)
    assert sub.wait(lambda ms: len([r for r in ms if r.topic.endswith("/alert")]) >= 2)
    first, second = sub.alerts()[:2]
    got = [r for r in sub.messages if "/clip/" in r.topic]
    assert {r.topic for r in got} == {f"phonewatch/{UNIT_A}/clip/{first['alert_id']}"}
    assert got[0].payload == clip
    assert first["evidence"]["clip_sha256"] == hashlib.sha256(clip).hexdigest()
    assert verify_alert(first, public_key(tmp_path))  # the clip's hash is signed
    # the big clip's hash is signed too (it stays on the unit), its bytes are not sent
    assert second["evidence"]["clip_bytes"] == len(big)
    # receipts without the clip: the first alert's row waits for the clip's receipt
    seq1, seq2 = first["seq"], second["seq"]
    receipt = m.build_receipt(
        UNIT_A, alerts=[seq1, seq2], evidence=[seq1, seq2], crops=[seq1, seq2], t_wall_s=0
    )
    sub.client.publish(f"phonewatch/{UNIT_A}/ack", m.encode(receipt), qos=1)
    assert wait_until(lambda: up.outbox.depth() == 1)
    assert [i.seq for i in up.outbox.pending()] == [seq1]
    receipt = m.build_receipt(UNIT_A, alerts=[], evidence=[], clips=[seq1], t_wall_s=0)
    sub.client.publish(f"phonewatch/{UNIT_A}/ack", m.encode(receipt), qos=1)
    assert up.wait_drained(10)
    sub.close()


def test_online_status_is_retained_and_offline_on_close(
    broker: LocalBroker, uplinks: Callable[..., MqttUplink]
) -> None:
    up = uplinks(broker)
    assert up.wait_connected(10)
    late = subscribe(broker, certs_for=None, topics=("phonewatch/+/status",))
    assert late.wait(lambda ms: any(r.retain for r in ms))
    assert json.loads(late.messages[0].payload)["state"] == "online"
    up.close()
    assert late.wait(lambda ms: any(json.loads(r.payload)["state"] == "offline" for r in ms))
    offline = json.loads(late.messages[-1].payload)
    assert offline["reason"] == "stopped"
    assert m.schema_errors(offline, m.STATUS_SCHEMA) == []
    late.close()


def test_alert_carries_the_gps_fix_stamped_when_recorded_never_waits(
    broker: LocalBroker,
    uplinks: Callable[..., MqttUplink],
    make_detection: Callable[..., Detection],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The app stamps the fix on the detection (edge.app.heartbeat.stamp_position, what
    Unit.stamp calls); the uplink carries it as stamped."""
    gps = SettableGps()
    sub = subscribe(broker, certs_for=None, topics=("phonewatch/+/alert",))
    up = uplinks(broker)

    def send() -> None:
        up.send(
            stamp_position(
                make_detection(),
                gps,  # type: ignore[arg-type]  # a duck-typed GPS
                max_fix_age_s=2.0,
            )
        )

    gps.fix, gps.state = FakeFix(fix_dict(age_s=0.2)), "3d"
    send()
    gps.fix, gps.state = FakeFix(fix_dict(age_s=45.0)), "stale"
    send()
    gps.fix, gps.state = None, "no-fix"
    send()

    def broken() -> None:
        raise RuntimeError("serial port gone")

    monkeypatch.setattr(gps, "latest", broken)
    send()
    assert sub.wait_alerts(4)
    a1, a2, a3, a4 = sub.alerts()
    assert a1["time_source"] == "gps"
    assert a1["fix"]["lat"] == 51.5007
    assert a1["gps_state"] == "3d"
    assert a2["time_source"] == "system"
    assert a2["fix"]["age_s"] == 45.0
    assert a3["fix"] is None
    assert a3["gps_state"] == "no-fix"
    assert a4["fix"] is None
    assert a4["gps_state"] == "error"
    sub.close()


def test_heartbeat_carries_pipeline_outbox_gps_and_temperature(
    broker: LocalBroker, uplinks: Callable[..., MqttUplink]
) -> None:
    gps = SettableGps()
    gps.state, gps.fix = "3d", FakeFix(fix_dict(age_s=0.5))
    calls = {"n": 0}

    def stats() -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("stats broke once")
        return {
            "fps": 29.5,
            "dropped_frames": 12,
            "invoke_ms_p50": 7.5,
            "invoke_ms_p99": 11.0,
            "frames": 900,
        }

    sub = subscribe(broker, certs_for=None, topics=("phonewatch/+/heartbeat",))
    up = uplinks(broker)
    emitter = StatsEmitter(unit_id=UNIT_A, uplink=up, interval_s=1, pipeline_stats=stats, gps=gps)  # type: ignore[arg-type]  # a duck-typed GPS
    emitter.start()
    try:
        assert sub.wait(lambda ms: len(ms) >= 3, timeout_s=10)
    finally:
        emitter.close()
    beats = [json.loads(r.payload) for r in sub.messages]
    for hb in beats:
        assert m.schema_errors(hb, m.HEARTBEAT_SCHEMA) == []
        assert hb["outbox_depth"] == 0
        assert hb["gps_state"] == "3d"
        assert hb["fix"]["lat"] == 51.5007
        assert hb["fix"]["age_s"] == 0.5
        assert (
            hb["cpu_temp_c"] == pytest.approx(read_cpu_temp_c(), abs=15)
            if read_cpu_temp_c() is not None
            else hb["cpu_temp_c"] is None
        )
    assert beats[0]["fps"] == 29.5
    assert beats[0]["dropped_frames"] == 12
    assert beats[0]["pipeline"] == {"frames": 900}
    assert beats[1]["fps"] is None  # stats() failed: heartbeat still sent
    sub.close()


def test_cpu_temperature_from_sysfs(tmp_path: Path) -> None:
    p = tmp_path / "temp"
    p.write_text("48312\n")
    assert read_cpu_temp_c(p) == 48.3
    assert read_cpu_temp_c(tmp_path / "absent") is None
    p.write_text("garbage")
    assert read_cpu_temp_c(p) is None


def test_commands_validated_bad_ones_rejected_unit_keeps_running(
    broker: LocalBroker,
    uplinks: Callable[..., MqttUplink],
    make_detection: Callable[..., Detection],
) -> None:
    got: list[tuple[str, dict[str, Any]]] = []
    done = threading.Event()

    def on_command(name: str, body: dict[str, Any]) -> None:
        got.append((name, body))
        if name == "reload":
            done.set()
        if name == "snapshot":
            raise RuntimeError("handler bug")  # must not take the uplink down

    cr = connect_client(broker, "controlroom-cmd")
    cr.loop_start()
    base = "phonewatch/unit-a/cmd/"
    # a retained command would replay on every reconnect: refused when it arrives as retained
    cr.publish(base + "mute", b'{"duration_s": 5}', qos=1, retain=True).wait_for_publish(5)
    up = uplinks(broker, on_command=on_command, command_max_bytes=1024)
    assert up.wait_connected(10)
    # The broker sends the retained command once it has the unit's subscription: from then on
    # every command below is routed to the unit (before it, a first connect can miss them).
    wait_until(lambda: up.stats()["commands_rejected"] >= 1, 10)
    assert up.stats()["commands_rejected"] == 1
    bad = [
        ("reboot", b"{}"),
        ("mute", b"{}"),
        ("mute", b'{"duration_s": "x"}'),
        ("mute", b"not json"),
        ("mute", b'{"duration_s": 1e999}'),
        ("snapshot", b'{"reason": "' + b"A" * 5000 + b'"}'),
        ("snapshot", b"\x00" * 2000),
        ("mute", b'{"duration_s": 5, "shell": "rm -rf /"}'),
    ]
    for name, payload in bad:
        cr.publish(base + name, payload, qos=1).wait_for_publish(5)
    for name, payload in [("snapshot", b""), ("mute", b'{"duration_s": 60}'), ("reload", b"{}")]:
        cr.publish(base + name, payload, qos=1).wait_for_publish(5)
    assert done.wait(10)
    assert got == [("snapshot", {}), ("mute", {"duration_s": 60}), ("reload", {})]
    st = up.stats()
    assert st["commands_rejected"] == len(bad) + 1
    assert st["commands_accepted"] == 3
    assert up.is_connected
    sub = subscribe(broker, certs_for=None, topics=("phonewatch/+/alert",))
    up.send(make_detection())
    assert sub.wait_alerts(1)
    cr.loop_stop()
    cr.disconnect()
    sub.close()


def test_missing_or_altered_evidence_still_sends_the_alert(
    broker: LocalBroker,
    uplinks: Callable[..., MqttUplink],
    make_detection: Callable[..., Detection],
) -> None:
    """The uplink sends the bytes the pipeline encoded, never re-reading the file: a detection
    that arrives without them (a record rebuilt from disk) still sends its alert."""
    sub = subscribe(broker, certs_for=None, receipts=True)
    up = uplinks(broker)

    def without_bytes(d: Detection) -> Detection:
        return dataclasses.replace(d, evidence=dataclasses.replace(d.evidence, frame_jpeg=None))

    gone, altered, fine = make_detection(), make_detection(), make_detection()
    Path(fine.evidence.frame_path).unlink()  # the file is not what is sent
    gone, altered = without_bytes(gone), without_bytes(altered)
    for d in (gone, altered, fine):
        up.send(d)
    assert sub.wait_alerts(3)
    assert up.wait_drained(5)
    third = sub.alerts()[2]["alert_id"]  # the one whose evidence is intact
    # the broker acknowledges before it forwards: wait for the one JPEG that should come
    assert sub.wait(lambda ms: any(r.topic.endswith(f"/evidence/{third}") for r in ms))
    assert list(sub.evidence()) == [third]
    assert up.stats()["evidence_missing"] == 2
    sub.close()


def test_username_password_and_connected_only_on_success(
    tmp_path: Path, uplinks: Callable[..., MqttUplink], make_detection: Callable[..., Detection]
) -> None:
    with LocalBroker(passwords={UNIT_A: "right", "unit-b": "other"}) as b:
        bad = uplinks(b, "unit-b", username="unit-b", password="wrong")
        good = uplinks(b, UNIT_A, username=UNIT_A, password="right")
        assert good.wait_connected(10)
        bad.send(make_detection())
        assert wait_until(lambda: bad.stats()["connect_failures"] >= 2)  # refused CONNACKs
        st = bad.stats()
        assert not bad.is_connected
        assert st["connects"] == 0
        assert st["connect_failures"] >= 1
        assert st["outbox_depth"] == 1  # kept, not lost


def test_unit_restart_resends_what_was_never_acknowledged(
    tmp_path: Path, uplinks: Callable[..., MqttUplink], make_detection: Callable[..., Detection]
) -> None:
    b = LocalBroker()  # not started yet: the unit raises alerts with no broker at all
    try:
        first = uplinks(b)
        for _ in range(5):
            first.send(make_detection())
        assert not first.is_connected
        first.close()
        b.start()
        sub = subscribe(
            b,
            certs_for=None,
            receipts=True,
            topics=("phonewatch/+/alert", "phonewatch/+/evidence/+"),
        )
        second = uplinks(b)
        second.send(make_detection())
        assert sub.wait_alerts(6)
        got = seqs_in_order(sub)
        assert got == list(range(got[0], got[0] + 6))
        assert second.wait_drained(5)
        sub.close()
    finally:
        b.close()


def test_broker_restart_with_persistence_loses_nothing(
    broker: LocalBroker,
    tmp_path: Path,
    uplinks: Callable[..., MqttUplink],
    make_detection: Callable[..., Detection],
) -> None:
    # the control room has a persistent session and is offline while alerts arrive
    cr = subscribe(
        broker,
        certs_for=None,
        client_id="cr-persistent",
        persistent=True,
        topics=("phonewatch/+/alert", "phonewatch/+/evidence/+", "phonewatch/+/crop/+"),
    )
    cr.close()
    up = uplinks(broker)
    for _ in range(10):
        up.send(make_detection())
    # the broker holds them for the control room; the unit keeps them until it receipts them
    assert wait_until(lambda: up.stats()["published"] >= 10 and up.stats()["inflight"] == 0)
    assert up.outbox.depth() == 10
    broker.restart()  # SIGTERM: mosquitto saves its persistence file
    for _ in range(5):
        up.send(make_detection())  # raised across the restart
    cr2 = subscribe(
        broker,
        certs_for=None,
        client_id="cr-persistent",
        persistent=True,
        topics=("phonewatch/+/alert", "phonewatch/+/evidence/+"),
        receipts=True,
    )
    assert cr2.wait_alerts(15, timeout_s=20), seqs_in_order(cr2)
    assert up.wait_drained(10)
    got = seqs_in_order(cr2)
    assert got == list(range(got[0], got[0] + 15))
    pub = public_key(tmp_path)
    assert all(verify_alert(a, pub) for a in cr2.alerts())
    cr2.close()


OUTAGE_FAILED_RECONNECTS = int(os.environ.get("PHONEWATCH_TEST_OUTAGE_RECONNECTS", "8"))
"""How long the broker outage below lasts, counted in the uplink's failed reconnects rather
than seconds (its backoff is 0.1..0.5 s there); raise it for a long soak."""


@pytest.mark.slow
def test_broker_down_while_100_alerts_are_raised(
    broker: LocalBroker,
    tmp_path: Path,
    uplinks: Callable[..., MqttUplink],
    make_detection: Callable[..., Detection],
) -> None:
    cr = subscribe(
        broker,
        certs_for=None,
        client_id="cr-outage",
        persistent=True,
        topics=("phonewatch/+/alert", "phonewatch/+/evidence/+"),
        receipts=True,
    )
    up = uplinks(broker, reconnect_min_s=0.1, reconnect_max_s=0.5)
    assert up.wait_connected(10)
    up.send(make_detection())
    assert cr.wait_alerts(1)
    assert up.wait_drained(10)  # receipted: the unit forgot it
    broker.stop()
    failed_at_stop = up.stats()["connect_failures"]

    def failed_reconnects(at_least: int) -> bool:
        return int(up.stats()["connect_failures"]) - int(failed_at_stop) >= at_least

    for i in range(100):  # raised across the outage: a batch after each of 4 failed reconnects
        if i % 25 == 0:
            assert wait_until(functools.partial(failed_reconnects, i // 25 + 1), timeout_s=30)
        up.send(make_detection())
    assert up.outbox.depth() == 100
    assert wait_until(
        functools.partial(failed_reconnects, max(4, OUTAGE_FAILED_RECONNECTS)),
        timeout_s=30 + OUTAGE_FAILED_RECONNECTS,
    )
    broker.start()
    assert cr.wait_alerts(101, timeout_s=60), f"got {len(seqs_in_order(cr))}"
    got = seqs_in_order(cr)
    assert got == list(range(got[0], got[0] + 101))  # all, in order, once after de-dup
    assert up.wait_drained(20)
    assert cr.wait(lambda ms: len({r.topic for r in ms if "/evidence/" in r.topic}) == 101, 20)
    pub = public_key(tmp_path)
    assert all(verify_alert(a, pub) for a in cr.alerts())
    cr.close()


CHILD = textwrap.dedent("""
    import hashlib, json, sys, time
    from pathlib import Path
    from edge.app.compose import build_uplink
    from edge.adapters.mqtt_config import MqttSinkConfig
    from edge.core.ports import Detection, EvidenceRecord

    cfg = MqttSinkConfig(**json.loads(sys.argv[1]))
    data = Path(sys.argv[2])
    mode = sys.argv[3]
    up = build_uplink(cfg, unit_id="unit-a", data_dir=data, on_command=None)
    if mode == "drain":
        up.wait_connected(10)
        ok = up.wait_drained(30)
        up.close()
        sys.exit(0 if ok else 3)
    up.wait_connected(10)
    for i in range(100000):
        jpeg = b"\\xff\\xd8" + (b"%d " % i) * 3000
        p = data / f"ev{i}.jpg"
        p.write_bytes(jpeg)
        h = hashlib.sha256(jpeg).hexdigest()
        ev = EvidenceRecord(str(i), str(p), h, len(jpeg), str(p), h, len(jpeg),
                            frame_jpeg=jpeg)
        up.send(Detection(str(i), "lane1", 0.9, 5, 8, i, time.time(), time.monotonic(),
                          "m", "1", "0" * 64, 0.7, ev))
        print(i + 1, flush=True)
        time.sleep(0.002)
""")


def test_kill_9_mid_publish_then_restart_loses_nothing(broker: LocalBroker, tmp_path: Path) -> None:
    cr = subscribe(
        broker,
        certs_for=None,
        client_id="cr-kill",
        persistent=True,
        topics=("phonewatch/+/alert", "phonewatch/+/evidence/+", "phonewatch/+/status"),
        receipts=True,
    )
    data = tmp_path / "unit"
    data.mkdir()
    cfg = {**sink_config(broker).model_dump(mode="json", exclude_none=True)}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(cfg), str(data), "raise"],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env=env,
    )
    assert child.stdout is not None
    assert cr.wait_alerts(30, timeout_s=30)  # publishing is well under way
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    committed = [int(x) for x in child.stdout.read().split()]
    assert committed, "child reported no committed alert"
    # the broker sees the socket close and publishes the Last Will
    assert cr.wait(
        lambda ms: any(
            r.topic.endswith("/status") and json.loads(r.payload)["state"] == "offline" for r in ms
        ),
        timeout_s=10,
    )
    restarted = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(cfg), str(data), "drain"],
        cwd=REPO,
        env=env,
        timeout=60,
        check=False,
    )
    assert restarted.returncode == 0
    top = max(committed)  # the child prints how many alerts the outbox had committed
    assert cr.wait_alerts(top, timeout_s=20)
    got = seqs_in_order(cr)
    # every committed alert arrived, in order, and nothing beyond what the outbox numbered
    assert got[:top] == list(range(got[0], got[0] + top))
    assert got == list(range(got[0], got[0] + len(got)))
    assert cr.wait(lambda ms: len({r.topic for r in ms if "/evidence/" in r.topic}) >= top, 20)
    pub = load_public_key(data / "keys" / "unit-a.sign.pub")
    assert all(verify_alert(a, pub) for a in cr.alerts())
    cr.close()


# --- end-to-end delivery: a PUBACK is not delivery; the control room's receipt is ----------


def test_no_subscriber_puback_is_not_delivery_the_alert_is_sent_again(
    broker: LocalBroker,
    uplinks: Callable[..., MqttUplink],
    make_detection: Callable[..., Detection],
) -> None:
    """First start, before any control room ever connected: the broker accepts each publish
    with PUBACK 0x10 'no matching subscribers' and drops it. The unit keeps the alerts and
    sends them again once a control room is there to receipt them."""
    up = uplinks(broker, receipt_timeout_s=0.3, receipt_timeout_max_s=1.0)
    assert up.wait_connected(10)
    for _ in range(3):
        up.send(make_detection())
    assert wait_until(lambda: up.stats()["no_subscribers"] >= 6)  # 3 alerts + 3 images
    assert up.outbox.depth() == 3  # nothing forgotten on the broker's word
    cr = subscribe(
        broker,
        certs_for=None,
        receipts=True,
        topics=("phonewatch/+/alert", "phonewatch/+/evidence/+"),
    )
    assert cr.wait_alerts(3, timeout_s=15)
    assert up.wait_drained(15)
    st = up.stats()
    assert st["retransmitted"] >= 6
    assert st["receipts"] >= 6
    assert st["awaiting_receipt"] == 0
    cr.close()


def test_unreceipted_parts_are_sent_again_with_a_growing_wait(
    broker: LocalBroker,
    uplinks: Callable[..., MqttUplink],
    make_detection: Callable[..., Detection],
) -> None:
    """A subscriber that takes the alert but never receipts it (a control room that cannot
    commit): the unit resends, waiting longer each time, and keeps the alert."""
    silent = subscribe(broker, certs_for=None, topics=("phonewatch/+/alert",))
    up = uplinks(broker, receipt_timeout_s=0.2, receipt_timeout_max_s=0.8, publish_evidence=False)
    up.send(make_detection())
    assert silent.wait(lambda ms: len(ms) >= 4, timeout_s=20)  # the first send + 3 resends
    arrivals = [r for r in silent.messages]
    assert len({json.loads(r.payload)["seq"] for r in arrivals}) == 1  # one alert, resent
    assert wait_until(lambda: up.stats()["retransmitted"] >= 3)  # counted after the publish
    assert up.outbox.depth() == 1
    assert up._attempts
    assert max(up._attempts.values()) >= 3  # the wait doubles per attempt
    assert up._timeout_s(next(iter(up._attempts))) == 0.8  # capped at receipt_timeout_max_s
    silent.close()


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"schema":"phonewatch.receipt","v":1,"unit":"unit-b","alerts":[1],"evidence":[]}',
        b'{"schema":"phonewatch.receipt","v":1,"unit":"unit-a","alerts":["1"],"evidence":[]}',
        b'{"schema":"phonewatch.receipt","v":1,"unit":"unit-a","alerts":[-1],"evidence":[]}',
        b'{"schema":"phonewatch.receipt","v":1,"unit":"unit-a","alerts":[1]}',
        b'{"schema":"phonewatch.receipt","v":1,"unit":"unit-a","alerts":[],"evidence":[],"x":1}',
    ],
)
def test_hostile_receipts_are_rejected_and_forget_nothing(
    broker: LocalBroker,
    uplinks: Callable[..., MqttUplink],
    make_detection: Callable[..., Detection],
    payload: bytes,
) -> None:
    up = uplinks(broker, publish_evidence=False)
    assert up.wait_connected(10)
    up.send(make_detection())
    assert wait_until(lambda: up.stats()["inflight"] == 0 and up.stats()["published"] >= 1)
    seq = up.outbox.pending()[0].seq
    forged = payload.replace(b'"alerts":[1]', b'"alerts":[%d]' % seq)
    attacker = connect_client(broker, "attacker")
    attacker.loop_start()
    attacker.publish(f"phonewatch/{UNIT_A}/ack", forged, qos=1).wait_for_publish(5)
    assert wait_until(lambda: up.stats()["receipts_rejected"] >= 1)
    assert up.outbox.depth() == 1
    assert up.stats()["receipts"] == 0
    attacker.loop_stop()
    attacker.disconnect()
