"""Faults injected end to end, and what each cost: alerts recorded / stored / duplicated.

Real parts only: the unit's uplink and outbox, a real Mosquitto (persistence on), the control
room's Receiver with its shared subscription, SQLite. Each scenario raises N hits on the unit,
injects one fault, then waits until the unit's outbox is empty (every part receipted) and counts
what the control room stored. ``duplicates`` are messages the receiver got more than once and
absorbed (the (unit, seq) key); ``lost`` must be 0.

    .venv/bin/python bench/reliability.py            # prints one table (about a minute)
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402

from controlroom import db  # noqa: E402
from controlroom.config import MqttConfig  # noqa: E402
from controlroom.receiver import Receiver  # noqa: E402
from edge.adapters.mqtt import MqttUplink  # noqa: E402
from edge.adapters.mqtt_config import MqttSinkConfig  # noqa: E402
from edge.app.compose import build_uplink  # noqa: E402
from edge.app.local_broker import LocalBroker  # noqa: E402
from edge.app.stats import table  # noqa: E402
from edge.common.signing import key_id, load_public_key, raw_public_bytes, write_key_pair  # noqa: E402
from edge.core.ports import Detection, EvidenceRecord  # noqa: E402

UNIT = "unit-rel"
FAST = {
    "receipt_timeout_s": 0.5,
    "receipt_timeout_max_s": 2.0,
    "reconnect_min_s": 0.2,
    "reconnect_max_s": 1.0,
    "outbox_fsync": True,
}


def detection(i: int) -> Detection:
    jpeg = b"\xff\xd8\xff\xe0" + hashlib.sha256(b"%d" % i).digest() * 300 + b"\xff\xd9"
    sha = hashlib.sha256(jpeg).hexdigest()
    ev = EvidenceRecord(f"x-{i}", "-", sha, len(jpeg), "-", sha, len(jpeg), frame_jpeg=jpeg)
    return Detection(
        f"x-{i}", "lane1", 0.9, 5, 8, i, time.time(), time.monotonic(), "m", "1", "0" * 64, 0.7, ev
    )


class Site:
    """One broker, one SQLite control-room database, one unit's data folder."""

    def __init__(self, work: Path, *, max_queued: int = 100000) -> None:
        self.work = work
        self.broker = LocalBroker(max_queued_messages=max_queued).start()
        self.url = f"sqlite:///{work / 'cr.sqlite'}"
        self.engine = db.make_engine(self.url)
        db.migrate(self.engine)
        self.data = work / "unit"
        _, pub_path, _ = write_key_pair(UNIT, self.data / "keys")
        pub = load_public_key(pub_path)
        db.upsert_unit(
            self.engine, UNIT, base64.b64encode(raw_public_bytes(pub)).decode(), key_id(pub)
        )
        self.receivers: list[Receiver] = []

    def sink_cfg(self) -> MqttSinkConfig:
        return MqttSinkConfig(**self.broker.sink_settings(UNIT), **FAST)

    def mqtt_cfg(self, client_id: str = "cr-rel") -> MqttConfig:
        return MqttConfig(
            host=self.broker.host,
            port=self.broker.port,
            client_id=client_id,
            share_group="controlroom",
            batch_max=5,
        )

    def uplink(self) -> MqttUplink:
        return build_uplink(self.sink_cfg(), unit_id=UNIT, data_dir=self.data)

    def receiver(self, client_id: str = "cr-rel") -> Receiver:
        r = Receiver(self.mqtt_cfg(client_id), self.engine).start()
        r.wait_ready(10)
        self.receivers.append(r)
        return r

    def stored(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(db.alerts)).scalar_one())

    def duplicates(self) -> int:
        return sum(int(r.stats().get("duplicates", 0)) for r in self.receivers)

    def close(self) -> None:
        for r in self.receivers:
            r.close()
        self.engine.dispose()
        self.broker.close()


def drain(up: MqttUplink, site: Site, n: int, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (up.outbox.depth() or site.stored() < n):
        time.sleep(0.05)


def first_start(site: Site) -> tuple[int, str]:
    up = site.uplink()
    up.wait_connected(10)
    for i in range(10):
        up.send(detection(i))
    time.sleep(1.0)  # every publish answered 0x10 'no matching subscribers' meanwhile
    site.receiver()
    drain(up, site, 10)
    up.close()
    return 10, "no receiver session existed when the alerts were raised"


def broker_restart(site: Site) -> tuple[int, str]:
    site.receiver()
    up = site.uplink()
    up.wait_connected(10)
    for i in range(10):
        up.send(detection(i))
    site.broker.restart()
    for i in range(10, 20):
        up.send(detection(i))
    drain(up, site, 20)
    up.close()
    return 20, "Mosquitto 2.0.11 restarted (persistence on) mid-stream"


def outage_past_queue(site: Site) -> tuple[int, str]:
    site.receiver().close()
    site.receivers.clear()
    up = site.uplink()
    up.wait_connected(10)
    for i in range(30):
        up.send(detection(i))
    time.sleep(1.0)
    site.receiver()
    drain(up, site, 30)
    up.close()
    return 30, "control room down for 60 messages; the broker queues 10 per session"


CHILD = textwrap.dedent("""
    import json, sys, threading
    from controlroom import db
    from controlroom.config import MqttConfig
    from controlroom.receiver import Receiver
    r = Receiver(MqttConfig(**json.loads(sys.argv[2])), db.make_engine(sys.argv[1])).start()
    r.wait_ready(10)
    print("ready", flush=True)
    threading.Event().wait()
""")


def receiver_kill_9(site: Site) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cfg = site.mqtt_cfg("cr-killed").model_dump(mode="json", exclude_none=True)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, site.url, json.dumps(cfg)],
        stdout=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    assert child.stdout is not None
    child.stdout.readline()
    up = site.uplink()
    up.wait_connected(10)
    for i in range(40):
        up.send(detection(i))
    while site.stored() < 5:
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    site.receiver("cr-killed")
    drain(up, site, 40)
    up.close()
    return 40, "receiver killed -9 after 5 stored, batches in flight"


UNIT_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[3])
    from bench.reliability import Site, detection, UNIT
    from edge.adapters.mqtt_config import MqttSinkConfig
    from edge.app.compose import build_uplink
    import json
    cfg = MqttSinkConfig(**json.loads(sys.argv[1]))
    up = build_uplink(cfg, unit_id=UNIT, data_dir=__import__("pathlib").Path(sys.argv[2]))
    up.wait_connected(10)
    for i in range(100000):
        up.send(detection(i))
        print(i + 1, flush=True)
        time.sleep(0.005)
""")


def unit_kill_9(site: Site) -> tuple[int, str]:
    site.receiver()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cfg = site.sink_cfg().model_dump(mode="json", exclude_none=True)
    child = subprocess.Popen(
        [sys.executable, "-c", UNIT_CHILD, json.dumps(cfg), str(site.data), str(REPO)],
        stdout=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    assert child.stdout is not None
    committed = 0
    while committed < 30:
        committed = int(child.stdout.readline() or 0)
    os.kill(child.pid, signal.SIGKILL)  # mid-commit or mid-publish: a power cut, to SQLite
    child.wait()
    committed = max([committed, *[int(x) for x in child.stdout.read().split()]])
    up = site.uplink()  # the unit restarts and resends what was never receipted
    up.wait_connected(10)
    drain(up, site, committed)
    up.close()
    return committed, "unit killed -9 while raising alerts (power cut), then restarted"


SCENARIOS: dict[str, tuple[Callable[[Site], tuple[int, str]], dict[str, Any]]] = {
    "first start, no receiver yet": (first_start, {}),
    "broker restart mid-stream": (broker_restart, {}),
    "control room out past the queue cap": (outage_past_queue, {"max_queued": 10}),
    "receiver kill -9 mid-batch": (receiver_kill_9, {}),
    "unit kill -9 mid-write, restart": (unit_kill_9, {}),
}


def main() -> int:
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    rows: list[tuple[str, str]] = []
    bad = 0
    for name, (run, kw) in SCENARIOS.items():
        with tempfile.TemporaryDirectory(prefix="pw-rel-") as tmp:
            site = Site(Path(tmp), **kw)
            try:
                t0 = time.monotonic()
                recorded, what = run(site)
                stored, dups = site.stored(), site.duplicates()
            finally:
                site.close()
        lost = recorded - stored
        bad += lost != 0
        rows.append(
            (
                name,
                f"recorded {recorded:3d}, stored {stored:3d}, duplicated {dups:3d}, "
                f"lost {lost} ({time.monotonic() - t0:.1f} s): {what}",
            )
        )
    print(table(rows, title="reliability: faults injected (real Mosquitto, real receiver)"))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
