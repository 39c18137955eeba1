"""Control-room ingest benchmark: how many signed alerts per second reach the database, and how
long from the broker to stored?

A real Mosquitto on a free port; the receiver (paho, shared subscription, manual ack after
commit) in this process; a publisher in a separate process (so it does not share our GIL)
sending pre-signed alerts. For SQLite and, when installed, a throw-away PostgreSQL:

* burst: N alerts published as fast as the publisher can; sustained stored alerts/s (first to
  last stored) and whether every alert arrived exactly once (target >= 2,000/s into SQLite);
* paced: alerts published on a fixed schedule (default 1,000/s); latency from the scheduled
  publish time (the alert's own signed time) to the committed row, p50 / p99 (target p99 <=
  200 ms);
* the CPU cost of the checks alone (JSON, schema, Ed25519 verify) per alert, no broker or
  database: the reference functions of ``edge.core.messages`` and the receiver's own path
  (``controlroom.fastcheck`` + the payload-cut signature check), and Ed25519 verify alone.

With ``--repeat K`` every throughput figure is measured K times and reported as the median
(min-max). Prints one table (and writes it to var/bench/ingest.txt).

Usage:  .venv/bin/python bench/ingest.py [--n 20000] [--rate 1000] [--paced-s 10] [--no-pg]
                                         [--repeat 3]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import glob
import hashlib
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _common import REPO, machine
from cryptography.hazmat.primitives import serialization

from controlroom import crypto, db, fastcheck
from controlroom.config import MqttConfig
from controlroom.ingest import Ingest, Message, StoredAlert
from controlroom.receiver import Receiver
from edge.app.local_broker import LocalBroker, free_port
from edge.app.stats import table
from edge.common.signing import Ed25519PrivateKey, generate_key, sign_alert
from edge.core import messages as m
from edge.core.ports import Detection, EvidenceRecord

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40 + b"\xff\xd9"
N_UNITS = 20


def make_alerts(
    keys: list[tuple[str, Ed25519PrivateKey]], n: int, *, t0: float, rate: float | None, seq0: int
) -> list[tuple[str, bytes, float]]:
    """(topic, payload, scheduled publish wall time) — time is signed into each alert."""
    sha = hashlib.sha256(JPEG).hexdigest()
    out = []
    for i in range(n):
        unit, key = keys[i % len(keys)]
        t = t0 + (i / rate if rate else 0.0)
        ev = EvidenceRecord(
            alert_id="x",
            frame_path="",
            frame_sha256=sha,
            frame_bytes=len(JPEG),
            crop_path="",
            crop_sha256=sha,
            crop_bytes=len(JPEG),
        )
        det = Detection(
            alert_id="x",
            roi_id="lane1",
            score=0.9,
            frames_over=5,
            window=8,
            frame_index=i,
            t_wall_s=t,
            t_mono_s=0.0,
            model_name="bench",
            model_version="1",
            model_sha256="ab" * 32,
            threshold=0.7,
            evidence=ev,
        )
        alert = sign_alert(m.build_alert(det, unit=unit, seq=seq0 + i // len(keys)), key)
        out.append((f"phonewatch/{unit}/alert", m.encode(alert), t))
    return out


def publisher_main(host: str, port: int, msgs: list[tuple[str, bytes, float]], paced: bool) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"bench-pub-{uuid.uuid4().hex[:6]}",
        protocol=mqtt.MQTTv5,
    )
    c.max_inflight_messages_set(2000)
    c.max_queued_messages_set(0)
    c.connect(host, port)
    c.loop_start()
    infos = []
    for topic, payload, t in msgs:
        if paced:
            delay = t - time.time()
            if delay > 0:
                time.sleep(delay)
        infos.append(c.publish(topic, payload, qos=1))
    for info in infos:
        info.wait_for_publish(120)
    c.disconnect()
    c.loop_stop()


@contextlib.contextmanager
def temp_postgres() -> Iterator[str | None]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        yield None
        return
    bindir = Path(found[-1]).parent
    base = Path(tempfile.mkdtemp(prefix="pw-bench-pg-"))
    run_as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if run_as:
        os.chmod(base, 0o777)
    port = free_port()
    data = base / "data"
    try:
        subprocess.run(
            [
                *run_as,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "pw",
                "--auth=trust",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1"
        subprocess.run(
            [
                *run_as,
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                opts,
                "-w",
                "-l",
                str(base / "log"),
                "start",
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "pw", "bench"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg://pw@127.0.0.1:{port}/bench"
    finally:
        subprocess.run(
            [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(base, ignore_errors=True)


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.n = 0
        self.first = self.last = 0.0
        self.latency_ms: list[float] = []

    def __call__(self, stored: list[StoredAlert]) -> None:
        now = time.time()
        with self.lock:
            if self.n == 0:
                self.first = now
            self.n += len(stored)
            self.last = now
            self.latency_ms.extend((now - s.time_s) * 1000 for s in stored if s.time_s)


def receiver_main(url: str, cfg: MqttConfig, ready: Any, stop: Any, out: Any) -> None:
    """One receiver process: store until told to stop, then report what it stored and when."""
    engine = db.make_engine(url)
    rec = Recorder()
    r = Receiver(cfg, engine, on_stored=rec).start()
    if r.wait_ready(20):
        ready.set()
    stop.wait()
    r.close()
    out.put((rec.n, rec.first, rec.last, rec.latency_ms, r.stats()["rejected_total"]))
    engine.dispose()


def stored_rows(url: str, seq0: int) -> int:
    engine = db.make_engine(url)
    with engine.connect() as conn:
        rows = int(
            conn.execute(
                sa.select(sa.func.count()).select_from(db.alerts).where(db.alerts.c.seq >= seq0)
            ).scalar()
            or 0
        )
    engine.dispose()
    return rows


@dataclass
class Result:
    stored: int
    rows: int
    rejected: int
    first: float
    last: float
    latency_ms: list[float]
    publish_s: float


def run(
    url: str,
    broker: LocalBroker,
    keys: list[tuple[str, Ed25519PrivateKey]],
    *,
    n: int,
    rate: float | None,
    seq0: int,
    receivers: int,
) -> Result:
    ctx = mp.get_context("fork")
    group = f"bench{uuid.uuid4().hex[:6]}"
    stop, out = ctx.Event(), ctx.Queue()
    procs, readies = [], []
    for i in range(receivers):
        cfg = MqttConfig(
            host=broker.host,
            port=broker.port,
            client_id=f"{group}-{i}",
            share_group=group,
            session_expiry_s=0,
        )
        ready = ctx.Event()
        readies.append(ready)
        procs.append(ctx.Process(target=receiver_main, args=(url, cfg, ready, stop, out)))
        procs[-1].start()
    for ready in readies:
        if not ready.wait(30):
            raise SystemExit("a receiver did not connect")
    t = time.perf_counter()
    make_alerts(keys, 200, t0=0.0, rate=None, seq0=seq0)
    sign_s = (time.perf_counter() - t) / 200
    t0 = time.time() + 1.0 + 1.5 * n * sign_s  # the schedule starts after signing is done
    msgs = make_alerts(keys, n, t0=t0, rate=rate, seq0=seq0)
    if time.time() > t0:
        print("  warning: signing overran the schedule start; latencies include it")
    pub = ctx.Process(
        target=publisher_main, args=(broker.host, broker.port, msgs, rate is not None)
    )
    pub.start()
    pub.join(600)
    publish_s = time.time() - max(t0, 0.0)
    deadline = time.monotonic() + 120
    while stored_rows(url, seq0) < n and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    parts = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    got = [p for p in parts if p[0]]
    return Result(
        stored=sum(p[0] for p in parts),
        rows=stored_rows(url, seq0),
        rejected=sum(p[4] for p in parts),
        first=min((p[1] for p in got), default=0.0),
        last=max((p[2] for p in got), default=0.0),
        latency_ms=sorted(x for p in parts for x in p[3]),
        publish_s=publish_s,
    )


def drain_rate(
    url: str,
    broker: LocalBroker,
    keys: list[tuple[str, Ed25519PrivateKey]],
    n: int,
    seq0: int,
    receivers: int,
) -> tuple[float, int]:
    """A backlog of n alerts queued by the broker for offline receivers (persistent sessions
    in one share group), then drained by ``receivers`` processes with no publisher running:
    stored alerts/s, and the rows stored."""
    ctx = mp.get_context("fork")
    group = f"bench{uuid.uuid4().hex[:6]}"
    cfgs = [
        MqttConfig(
            host=broker.host,
            port=broker.port,
            client_id=f"{group}-{i}",
            share_group=group,
            session_expiry_s=3600,
        )
        for i in range(receivers)
    ]
    engine = db.make_engine(url)
    for cfg in cfgs:  # create the sessions, then go away
        r = Receiver(cfg, engine).start()
        assert r.wait_ready(20)
        r.close()
    engine.dispose()
    msgs = make_alerts(keys, n, t0=time.time(), rate=None, seq0=seq0)
    pub = ctx.Process(target=publisher_main, args=(broker.host, broker.port, msgs, False))
    pub.start()
    pub.join(600)
    stop, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=receiver_main, args=(url, cfg, ctx.Event(), stop, out)) for cfg in cfgs
    ]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 300
    while stored_rows(url, seq0) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    stop.set()
    parts = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    got = [p for p in parts if p[0]]
    first = min(p[1] for p in got)
    last = max(p[2] for p in got)
    return (sum(p[0] for p in parts) - 1) / max(last - first, 1e-9), stored_rows(url, seq0)


def direct_rate(url: str, keys: list[tuple[str, Ed25519PrivateKey]], n: int, seq0: int) -> float:
    """Ingest.process in batches of 500, no broker: checks + database only."""
    msgs = [
        Message(t, p, time.time())
        for t, p, _ in make_alerts(keys, n, t0=time.time(), rate=None, seq0=seq0)
    ]
    engine = db.make_engine(url)
    ingest = Ingest(engine)
    t = time.perf_counter()
    for i in range(0, n, 500):
        ingest.process(msgs[i : i + 500])
    rate = n / (time.perf_counter() - t)
    assert ingest.counts["stored"] == n, ingest.stats()
    engine.dispose()
    return rate


def check_cost_us(
    keys: list[tuple[str, Ed25519PrivateKey]], n: int = 2000
) -> tuple[float, float, float]:
    """Per alert: the reference checks, the receiver's checks, Ed25519 verify alone (us)."""
    msgs = make_alerts(keys, n, t0=time.time(), rate=None, seq0=1)
    pubs = {u: k.public_key() for u, k in keys}
    kids = {u: crypto.key_id(k) for u, k in pubs.items()}
    t = time.perf_counter()
    for _topic, payload, _ in msgs:
        alert = m.decode(payload)
        assert not m.schema_errors(alert, m.ALERT_SCHEMA)
        assert crypto.signature_problem(alert, pubs[alert["unit"]]) is None
    reference = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    for _topic, payload, _ in msgs:
        alert = m.decode(payload)
        assert not fastcheck.schema_errors(alert, m.ALERT_SCHEMA)
        unit = alert["unit"]
        assert (
            crypto.signature_problem(alert, pubs[unit], payload=payload, expected_key_id=kids[unit])
            is None
        )
    receiver = (time.perf_counter() - t) / n * 1e6
    jobs = []
    for _topic, payload, _ in msgs:
        alert = m.decode(payload)
        jobs.append(
            (
                pubs[alert["unit"]],
                base64.b64decode(alert["signature"]["value"]),
                m.signing_bytes(alert),
            )
        )
    t = time.perf_counter()
    for pub, sig, data in jobs:
        pub.verify(sig, data)
    verify = (time.perf_counter() - t) / n * 1e6
    return reference, receiver, verify


def med(values: list[float], fmt: str = "{:,.0f}") -> str:
    """``median (min-max)`` of repeated measurements, or the one value."""
    if len(values) == 1:
        return fmt.format(values[0])
    return (
        f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-"
        f"{fmt.format(max(values))}, {len(values)} runs)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="alerts in the burst run")
    ap.add_argument("--rate", type=float, default=1000.0, help="alerts/s in the paced run")
    ap.add_argument("--paced-s", type=float, default=10.0, help="length of the paced run")
    ap.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    ap.add_argument(
        "--receivers",
        type=int,
        nargs="+",
        default=[1, 2],
        help="receiver process counts to try (one shared subscription)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure each throughput this many times; report the median",
    )
    args = ap.parse_args()
    reps = range(max(1, args.repeat))

    keys = [(f"unit-{i:03d}", generate_key()) for i in range(N_UNITS)]
    rows_out: list[tuple[str, str]] = [("machine", machine())]
    costs = [check_cost_us(keys) for _ in reps]
    for i, label in enumerate(
        (
            "reference (messages.decode/schema_errors, re-encode)",
            "receiver (fastcheck + payload-cut signature)",
            "of which Ed25519 verify alone",
        )
    ):
        rows_out.append((f"checks per alert: {label}", med([c[i] for c in costs], "{:.0f} us")))
    work = REPO / "var" / "bench"
    work.mkdir(parents=True, exist_ok=True)
    with (
        LocalBroker() as broker,
        tempfile.TemporaryDirectory() as tmp,
        temp_postgres() if not args.no_pg else contextlib.nullcontext() as pg_url,
    ):
        backends = [("SQLite", f"sqlite:///{tmp}/bench.sqlite")]
        if pg_url:
            backends.append(("PostgreSQL", pg_url))
        for name, url in backends:
            engine = db.make_engine(url)
            db.migrate(engine)
            for unit, key in keys:
                raw = key.public_key().public_bytes(
                    serialization.Encoding.Raw, serialization.PublicFormat.Raw
                )
                db.upsert_unit(engine, unit, base64.b64encode(raw).decode(), "0" * 16)
            engine.dispose()
            seq0 = 1
            direct = []
            for _ in reps:
                direct.append(direct_rate(url, keys, 5000, seq0))
                seq0 += 5000
            rows_out.append(
                (f"{name}, no broker: checks + store, alerts/s (1 process)", med(direct))
            )
            for receivers in args.receivers:
                rates, all_rows = [], []
                for _ in reps:
                    rate, rows = drain_rate(url, broker, keys, args.n, seq0, receivers)
                    seq0 += args.n
                    rates.append(rate)
                    all_rows.append(rows)
                rows_out.append(
                    (f"{name}, {receivers} receiver(s) draining a backlog: alerts/s", med(rates))
                )
                rows_out.append(
                    (
                        f"{name}, {receivers} receiver(s) draining: rows stored",
                        " ".join(f"{r}/{args.n}" for r in all_rows),
                    )
                )
            for receivers in args.receivers:
                label = f"{name}, {receivers} receiver{'s' if receivers > 1 else ''}"
                stored_rates, pub_rates, counts = [], [], []
                for _ in reps:
                    res = run(
                        url, broker, keys, n=args.n, rate=None, seq0=seq0, receivers=receivers
                    )
                    seq0 += args.n
                    span = max(res.last - res.first, 1e-9)
                    stored_rates.append((res.stored - 1) / span)
                    pub_rates.append(args.n / max(res.publish_s, 1e-9))
                    counts.append(f"{res.rows}/{args.n} ({res.rejected})")
                rows_out += [
                    (f"{label}, burst: rows / published (rejected)", " ".join(counts)),
                    (f"{label}, burst: sustained stored alerts/s", med(stored_rates)),
                    (f"{label}, burst: publisher alerts/s", med(pub_rates)),
                ]
                n_paced = int(args.rate * args.paced_s)
                res = run(
                    url, broker, keys, n=n_paced, rate=args.rate, seq0=seq0, receivers=receivers
                )
                seq0 += n_paced
                lat = res.latency_ms
                p50 = statistics.median(lat) if lat else float("nan")
                p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
                rows_out += [
                    (
                        f"{label}, paced {args.rate:,.0f}/s: rows / published",
                        f"{res.rows} / {n_paced}",
                    ),
                    (f"{label}, paced: publish -> stored p50 / p99", f"{p50:.1f} / {p99:.1f} ms"),
                ]
                print(f"{label} done", flush=True)
    text = table(
        rows_out, title="control-room ingest (signature checks on, QoS 1, ack after commit)"
    )
    print(text)
    (work / "ingest.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
