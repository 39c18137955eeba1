"""Uplink benchmarks on loopback with a real Mosquitto; prints a table.

* hit -> alert delivered: ``MqttUplink.send()`` (build, sign, validate, fsync'd commit) until a
  control-room subscriber has the alert, one alert at a time (p50 / p99; target p99 <= 50 ms),
  plain and TLS;
* durable outbox throughput with fsync on (target >= 200 alerts/s): the raw ``Outbox.add`` and
  the whole ``send()`` path, each with an evidence JPEG of ``--evidence-kb``;
* drain rate after an outage: alerts committed while the broker is down, then the broker comes
  back; alerts/s until the outbox is empty;
* opening a full outbox (``--open-mb``, the default quota): the integrity check at open reads
  the whole file, so this is the start-up delay after a long outage (cold = page cache
  dropped, which needs root).

Usage: ``.venv/bin/python bench/uplink.py [--alerts N] [--evidence-kb KB] [--open-mb MB]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from _common import machine
from paho.mqtt.enums import CallbackAPIVersion

from edge.adapters.mqtt import MqttUplink
from edge.adapters.mqtt_config import MqttSinkConfig
from edge.adapters.outbox import Outbox
from edge.app.compose import build_uplink
from edge.app.local_broker import CONTROLROOM, LocalBroker
from edge.app.stats import grid
from edge.core import messages as m
from edge.core.ports import Detection, EvidenceRecord

UNIT = "bench-unit"


def percentile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


class Arrivals:
    """The control room's part, without its database: records when each alert seq arrives and
    receipts every alert and evidence image at once (the unit forgets a part only on a
    receipt), so drain figures include the receipt's round trip but no storage time."""

    def __init__(self, broker: LocalBroker) -> None:
        self.t: dict[int, float] = {}
        self.cond = threading.Condition()
        self.c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="bench-cr",
            protocol=mqtt.MQTTv5,
        )
        if broker.tls:
            f = broker.client_certs(CONTROLROOM)
            self.c.tls_set(str(f["ca_file"]), str(f["cert_file"]), str(f["key_file"]))
        self.c.on_message = self._on_message
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.connect("localhost" if broker.tls else broker.host, broker.port)
        self.c.subscribe([(f"{broker.root}/+/alert", 1), (f"{broker.root}/+/evidence/+", 1)])
        self.c.loop_start()
        done.wait(10)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        now = time.perf_counter()
        parts = msg.topic.split("/")
        if parts[-1] == "alert":
            seq, alerts, evidence = int(json.loads(msg.payload)["seq"]), True, False
        else:
            seq, alerts, evidence = int(parts[-1].rsplit("-", 1)[1]), False, True
        unit = parts[-2] if alerts else parts[-3]
        receipt = m.build_receipt(
            unit,
            alerts=[seq] if alerts else [],
            evidence=[seq] if evidence else [],
            t_wall_s=time.time(),
        )
        root = "/".join(parts[:-2] if alerts else parts[:-3])
        client.publish(f"{root}/{unit}/ack", m.encode(receipt), qos=1)
        if alerts:
            with self.cond:
                self.t.setdefault(seq, now)
                self.cond.notify_all()

    def wait(self, seq: int, timeout_s: float = 10.0) -> float:
        with self.cond:
            self.cond.wait_for(lambda: seq in self.t, timeout_s)
            return self.t.get(seq, float("nan"))

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def make_detections(folder: Path, n: int, evidence_kb: int) -> list[Detection]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        jpeg = b"\xff\xd8" + os.urandom(evidence_kb * 1024) + b"\xff\xd9"
        p = folder / f"ev{i}.jpg"
        p.write_bytes(jpeg)
        h = hashlib.sha256(jpeg).hexdigest()
        ev = EvidenceRecord(str(i), str(p), h, len(jpeg), str(p), h, len(jpeg), frame_jpeg=jpeg)
        out.append(
            Detection(
                str(i),
                "lane1",
                0.9,
                5,
                8,
                i,
                time.time(),
                time.monotonic(),
                "bench-model",
                "1",
                "0" * 64,
                0.7,
                ev,
            )
        )
    return out


def uplink_for(broker: LocalBroker, data: Path, **over: Any) -> MqttUplink:
    cfg = MqttSinkConfig(
        **broker.sink_settings(UNIT),
        signing_key_autogenerate=True,
        heartbeat_interval_s=3600,
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
        **over,
    )
    return build_uplink(cfg, unit_id=UNIT, data_dir=data, on_command=None)


def bench_latency(tls: bool, n: int, evidence_kb: int, tmp: Path) -> list[float]:
    with LocalBroker(tls=tls, units=[UNIT]) as broker:
        arr = Arrivals(broker)
        up = uplink_for(broker, tmp / f"lat-{tls}")
        up.wait_connected(10)
        dets = make_detections(tmp / f"lat-ev-{tls}", n, evidence_kb)
        lat_ms = []
        for d in dets:
            seq = up.outbox.next_seq  # the number this send() will commit under
            t0 = time.perf_counter()
            up.send(d)
            lat_ms.append((arr.wait(seq) - t0) * 1e3)
            up.wait_drained(5)  # one at a time: latency, not queueing
        up.close()
        arr.close()
    return lat_ms


def _raw_payload(seq: int) -> bytes:
    """An alert-sized payload for timing the outbox alone (no signing or schema check)."""
    return b'{"alert_id":"u-%d","pad":"%s"}' % (seq, b"x" * 1200)


def bench_outbox(n: int, evidence_kb: int, tmp: Path, fsync: bool) -> float:
    ev = os.urandom(evidence_kb * 1024)
    with Outbox(tmp / f"raw-{fsync}.sqlite", fsync=fsync) as ob:
        t0 = time.perf_counter()
        for _ in range(n):
            ob.add(_raw_payload, evidence=ev)
        return n / (time.perf_counter() - t0)


def bench_send_path(n: int, evidence_kb: int, tmp: Path) -> tuple[float, float]:
    """Whole send() (GPS read, build, sign, validate, read evidence, fsync'd commit), no broker."""
    broker = LocalBroker()  # never started: everything stays in the outbox
    try:
        up = uplink_for(broker, tmp / "send")
        dets = make_detections(tmp / "send-ev", n, evidence_kb)
        per_ms = []
        t0 = time.perf_counter()
        for d in dets:
            t = time.perf_counter()
            up.send(d)
            per_ms.append((time.perf_counter() - t) * 1e3)
        rate = n / (time.perf_counter() - t0)
        up.close(drain_timeout_s=0)
        return rate, statistics.median(per_ms)
    finally:
        broker.close()


def bench_drain(n: int, evidence_kb: int, tmp: Path) -> tuple[float, float]:
    broker = LocalBroker()
    try:
        up = uplink_for(broker, tmp / "drain", max_inflight=32)
        for d in make_detections(tmp / "drain-ev", n, evidence_kb):
            up.send(d)
        assert up.outbox.depth() == n
        broker.start()
        arr = Arrivals(broker)
        t0 = time.perf_counter()
        up.wait_connected(10)
        t_conn = time.perf_counter()
        ok = up.wait_drained(120)
        dt = time.perf_counter() - t0
        up.close()
        arr.close()
        if not ok:
            raise SystemExit("drain did not finish")
        return n / dt, (t_conn - t0) * 1e3
    finally:
        broker.close()


def _drop_page_cache() -> bool:
    """Ask Linux to forget cached file pages (root only) so the next read comes from disk."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def bench_open(quota_mb: int, evidence_kb: int, tmp: Path) -> tuple[int, float | None, float]:
    """Fill an outbox to ``quota_mb`` and time opening it (the integrity check reads it all):
    (alerts, cold ms or None without root, warm ms median of three)."""
    path = tmp / "full.sqlite"
    ev = os.urandom(evidence_kb * 1024)
    quota = quota_mb * 1024 * 1024
    with Outbox(path, fsync=False, quota_bytes=quota) as ob:
        n = 0
        while ob.stats()["used_bytes"] + len(ev) + 2048 <= quota:  # up to the quota, no pruning
            ob.add(_raw_payload, evidence=ev)
            n += 1

    def open_ms() -> float:
        t = time.perf_counter()
        Outbox(path).close()
        return (time.perf_counter() - t) * 1e3

    cold = open_ms() if _drop_page_cache() else None
    warm = statistics.median(open_ms() for _ in range(3))
    return n, cold, warm


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=300)
    ap.add_argument(
        "--evidence-kb",
        type=int,
        default=150,
        help="evidence JPEG size (a 1080p frame at quality 92 is ~150-400 kB)",
    )
    ap.add_argument(
        "--open-mb",
        type=int,
        default=512,
        help="fill an outbox to this quota and time opening it (0: skip)",
    )
    args = ap.parse_args()
    n, kb = args.alerts, args.evidence_kb
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory(prefix="pw-bench-uplink-") as t:
        tmp = Path(t)
        for tls in (False, True):
            lat = bench_latency(tls, n, kb, tmp)
            name = "TLS + client cert" if tls else "plain"
            rows.append(
                (
                    f"hit -> alert at subscriber, {name}",
                    f"p50 {percentile(lat, 50):.1f} ms, p99 {percentile(lat, 99):.1f} ms",
                    "p99 <= 50 ms",
                )
            )
        rows.append(
            (
                "outbox.add, fsync on",
                f"{bench_outbox(n, kb, tmp, True):.0f} alerts/s",
                ">= 200 alerts/s",
            )
        )
        rows.append(
            (
                "outbox.add, fsync off",
                f"{bench_outbox(n, kb, tmp, False):.0f} alerts/s",
                "(reference)",
            )
        )
        rate, med = bench_send_path(n, kb, tmp)
        rows.append(
            (
                "send() whole path, fsync on",
                f"{rate:.0f} alerts/s (median {med:.1f} ms)",
                ">= 200 alerts/s",
            )
        )
        drain, conn_ms = bench_drain(n, kb, tmp)
        rows.append(
            (
                f"drain {n} after outage",
                f"{drain:.0f} alerts/s (+evidence); reconnect {conn_ms:.0f} ms",
                "(report)",
            )
        )
        if args.open_mb > 0:
            full, cold, warm = bench_open(args.open_mb, kb, tmp)
            rows.append(
                (
                    f"open a full {args.open_mb} MiB outbox ({full} alerts)",
                    (f"cold {cold:.0f} ms, " if cold is not None else "cold n/a (needs root), ")
                    + f"warm {warm:.0f} ms",
                    "(report)",
                )
            )
    print(
        f"\nphonewatch uplink bench: {n} alerts, evidence {kb} kB, {machine()}, "
        f"tmp on {tempfile.gettempdir()}\n"
    )
    print(grid(rows, header=("measure", "result", "target"), align="lll"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
