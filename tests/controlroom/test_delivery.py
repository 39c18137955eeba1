"""End-to-end delivery: every recorded hit stored exactly once, whatever the broker and the
control room do meanwhile (issue 17, item 1).

Real parts only: the unit's MqttUplink with its outbox, a real Mosquitto (2.0.11 on Debian
Bookworm, persistence on), and the control room's real Receiver with its shared subscription,
storing into SQLite. The unit forgets an alert only on the control room's receipt; what is not
receipted is sent again, and the control room's (unit, seq) key absorbs the duplicates.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controlroom import db
from controlroom.receiver import Receiver
from edge.adapters.mqtt import MqttUplink
from edge.adapters.mqtt_config import MqttSinkConfig
from edge.app.compose import build_uplink
from edge.app.local_broker import LocalBroker
from edge.common.signing import key_id, load_public_key, raw_public_bytes, write_key_pair
from edge.core.ports import Detection
from tests.controlroom.conftest import mqtt_cfg
from tests.uplink.conftest import make_detection as make_detection
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
UNIT = "unit-d"
FAST_RECEIPTS = {
    "receipt_timeout_s": 0.5,
    "receipt_timeout_max_s": 2.0,
    "reconnect_min_s": 0.2,
    "reconnect_max_s": 1.0,
    "outbox_fsync": False,
}


def register(engine: Engine, data: Path) -> None:
    """The unit's key, made and registered before it raises anything."""
    import base64

    _, pub_path, _ = write_key_pair(UNIT, data / "keys")
    pub = load_public_key(pub_path)
    db.upsert_unit(engine, UNIT, base64.b64encode(raw_public_bytes(pub)).decode(), key_id(pub))


def stored_seqs(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return sorted(
            r[0] for r in conn.execute(sa.select(db.alerts.c.seq).where(db.alerts.c.unit == UNIT))
        )


def stored_evidence(engine: Engine, table: sa.Table = db.evidence) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count()).select_from(table).where(table.c.unit == UNIT)
            ).scalar_one()
        )


@pytest.fixture
def unit(tmp_path: Path, engine: Engine) -> Iterator[Callable[[LocalBroker], MqttUplink]]:
    data = tmp_path / "unit"
    register(engine, data)
    made: list[MqttUplink] = []

    def make(broker: LocalBroker) -> MqttUplink:
        cfg = MqttSinkConfig(**broker.sink_settings(UNIT), **FAST_RECEIPTS)
        up = build_uplink(cfg, unit_id=UNIT, data_dir=data)
        made.append(up)
        return up

    yield make
    for up in made:
        up.close(drain_timeout_s=0)


def receiver_for(broker: LocalBroker, engine: Engine, **kw: Any) -> Receiver:
    cfg = mqtt_cfg(
        broker,
        client_id=kw.pop("client_id", "cr-delivery"),
        share_group=kw.pop("share_group", "controlroom"),
        **kw,
    )
    r = Receiver(cfg, engine).start()
    assert r.wait_ready(10), "receiver did not subscribe"
    return r


def assert_all_stored_once(engine: Engine, up: MqttUplink, n: int) -> None:
    assert wait_until(
        lambda: len(stored_seqs(engine)) >= n and stored_evidence(engine) >= n, timeout_s=60
    ), f"stored {len(stored_seqs(engine))} of {n}"
    assert up.wait_drained(30), f"outbox still holds {up.outbox.depth()}"
    seqs = stored_seqs(engine)
    assert len(seqs) == n
    assert len(set(seqs)) == n  # every hit, once
    assert seqs == list(range(seqs[0], seqs[0] + n))
    assert stored_evidence(engine) == n
    assert stored_evidence(engine, db.crops) == n  # the driver-window crop travels too


def test_first_start_before_any_receiver_ever_connected(
    engine: Engine,
    unit: Callable[[LocalBroker], MqttUplink],
    make_detection: Callable[..., Detection],
) -> None:
    """No control-room session exists at all: the broker drops every alert (PUBACK 0x10).
    The unit keeps them and sends them again once the receiver is there."""
    with LocalBroker() as broker:
        up = unit(broker)
        assert up.wait_connected(10)
        for _ in range(10):
            up.send(make_detection())
        assert wait_until(lambda: up.stats()["no_subscribers"] >= 20)
        assert up.outbox.depth() == 10
        r = receiver_for(broker, engine)
        try:
            assert_all_stored_once(engine, up, 10)
            assert up.stats()["retransmitted"] >= 20
        finally:
            r.close()


def test_broker_restart_mid_stream_loses_nothing(
    engine: Engine,
    unit: Callable[[LocalBroker], MqttUplink],
    make_detection: Callable[..., Detection],
) -> None:
    """Mosquitto 2.0.11 with persistence does not restore a $share subscription after a
    restart: until the receiver resubscribes, alerts get PUBACK 'no matching subscribers'."""
    with LocalBroker() as broker:
        r = receiver_for(broker, engine)
        try:
            up = unit(broker)
            assert up.wait_connected(10)
            for _ in range(10):
                up.send(make_detection())
            assert wait_until(lambda: len(stored_seqs(engine)) >= 3)
            broker.restart()
            for _ in range(10):
                up.send(make_detection())  # raised across and just after the restart
            assert_all_stored_once(engine, up, 20)
        finally:
            r.close()


def test_control_room_outage_longer_than_the_broker_queue(
    engine: Engine,
    unit: Callable[[LocalBroker], MqttUplink],
    make_detection: Callable[..., Detection],
) -> None:
    """The control room is down while more alerts arrive than the broker queues for its
    session (10 here, 10,000 in deploy/mosquitto): the broker drops the rest; the unit does
    not, and sends them again when the control room is back."""
    with LocalBroker(max_queued_messages=10) as broker:
        receiver_for(broker, engine).close()  # a persistent session with the shared subscription
        up = unit(broker)
        assert up.wait_connected(10)
        for _ in range(30):  # 60 messages (alert + evidence) for a queue of 10
            up.send(make_detection())
        assert wait_until(lambda: up.stats()["published"] >= 60 and up.stats()["inflight"] == 0)
        assert up.outbox.depth() == 30
        r = receiver_for(broker, engine)
        try:
            assert_all_stored_once(engine, up, 30)
        finally:
            r.close()


RECEIVER_CHILD = textwrap.dedent("""
    import json, sys, threading
    from controlroom import db
    from controlroom.config import MqttConfig
    from controlroom.receiver import Receiver

    engine = db.make_engine(sys.argv[1])
    r = Receiver(MqttConfig(**json.loads(sys.argv[2])), engine).start()
    r.wait_ready(10)
    print("ready", flush=True)
    threading.Event().wait()
""")


def test_receiver_killed_9_mid_batch_loses_nothing(
    tmp_path: Path,
    engine: Engine,
    unit: Callable[[LocalBroker], MqttUplink],
    make_detection: Callable[..., Detection],
) -> None:
    url = str(engine.url)
    with LocalBroker() as broker:
        cfg = mqtt_cfg(
            broker, client_id="cr-killed", share_group="controlroom", batch_max=5
        ).model_dump(mode="json", exclude_none=True)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        child = subprocess.Popen(
            [sys.executable, "-c", RECEIVER_CHILD, url, json.dumps(cfg)],
            stdout=subprocess.PIPE,
            cwd=REPO,
            env=env,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == b"ready"
            up = unit(broker)
            assert up.wait_connected(10)
            for _ in range(40):
                up.send(make_detection())
            assert wait_until(lambda: len(stored_seqs(engine)) >= 5, timeout_s=30)
            os.kill(child.pid, signal.SIGKILL)  # mid-stream: batches stored, others in flight
        finally:
            child.kill()
            child.wait()
        assert len(stored_seqs(engine)) < 40 or up.outbox.depth() > 0
        r = receiver_for(broker, engine, client_id="cr-killed", batch_max=5)
        try:
            assert_all_stored_once(engine, up, 40)
        finally:
            r.close()
