"""GPS benchmark: CPU cost per 1,000 NMEA sentences.

At 10 Hz a receiver sends ~50-150 sentences a second, so this is about headroom, not speed.
Measures process CPU time (user + system, all threads) per 1,000 sentences, median of runs:

* ``parse``: ``edge.core.nmea.parse_sentence`` alone;
* ``assemble``: ``FixAssembler.feed`` (parse + merge into fixes);
* ``serial source (pty)``: the whole ``SerialGpsSource`` (reader thread, pyserial, lock,
  assembler) reading a pty, the same termios path as a UART. (pyserial's ``loop://`` is not
  used here: it queues byte by byte and would measure itself, not us.)
* ``socket:// source``: the same through pyserial's ``socket://`` (serial-to-TCP bridges);
* ``replay --fast``: ``ReplayGpsSource`` reading a file as fast as it can.

Input: every sentence of the real captures in ../shared/data/nmea when present (a mix of 36
receivers), else generated RMC/GGA/GSA epochs. Run: ``.venv/bin/python bench/gps.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path

from _common import REPO, machine

from edge.adapters.gps import ReplayGpsSource, SerialGpsSource
from edge.adapters.gps_config import GpsConfig
from edge.app.stats import grid
from edge.core.errors import NmeaError
from edge.core.gps import FixAssembler
from edge.core.nmea import parse_sentence


def load_sentences() -> tuple[list[str], str]:
    data = REPO / ".." / "shared" / "data" / "nmea"
    lines: list[str] = []
    if data.is_dir():
        for log in sorted(data.glob("*.log")):
            for raw in log.read_bytes().decode("latin-1").splitlines():
                if raw.startswith("$"):
                    lines.append(raw)
        return lines, f"{len(lines)} sentences from {len(list(data.glob('*.log')))} real captures"
    sys.path.insert(0, str(REPO))
    from tests.gps.nmea_gen import drive

    lines = drive(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), 2000)
    return lines, f"{len(lines)} generated RMC/GGA/GSA sentences"


def cpu_per_1000(fn: Callable[[], int], runs: int) -> tuple[float, float]:
    """(median ms of CPU per 1,000 sentences, median sentences/s wall)."""
    cpu_ms: list[float] = []
    rates: list[float] = []
    for _ in range(runs):
        c0, w0 = time.process_time(), time.perf_counter()
        n = fn()
        c1, w1 = time.process_time(), time.perf_counter()
        cpu_ms.append((c1 - c0) * 1000 / n * 1000)
        rates.append(n / (w1 - w0))
    return statistics.median(cpu_ms), statistics.median(rates)


def bench_parse(lines: list[str]) -> int:
    for x in lines:
        with contextlib.suppress(NmeaError):
            parse_sentence(x)
    return len(lines)


def bench_assemble(lines: list[str]) -> int:
    asm = FixAssembler(rollover_floor=dt.date(1990, 1, 1), clock=lambda: 0.0)
    for x in lines:
        asm.feed(x, 0.0)
    return len(lines)


def bench_serial_pty(payload: bytes, n: int) -> int:
    """The real serial path (termios tty, os.read of what the kernel has buffered) on a pty;
    the writer thread's CPU is counted too, so this slightly overstates our cost."""
    master, slave = os.openpty()
    tty.setraw(slave)
    src = SerialGpsSource(
        GpsConfig(source=os.ttyname(slave), baud=115200, rollover_floor=dt.date(1990, 1, 1))
    )
    src.start()
    while not src.stats["connected"]:
        time.sleep(0.001)
    writer = threading.Thread(target=_write_all, args=(master, payload), daemon=True)
    writer.start()
    deadline = time.monotonic() + 60
    while src.stats["lines"] < n and time.monotonic() < deadline:
        time.sleep(0.002)
    src.close()
    writer.join()
    os.close(master)
    os.close(slave)
    return n


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        k = os.write(fd, view[:4096])
        view = view[k:]


def bench_socket(payload: bytes, n: int) -> int:
    """``socket://`` (a serial-to-TCP bridge); the sending thread's CPU is counted too."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            time.sleep(0.2)  # pyserial drops what arrives before open() returns
            conn.sendall(payload)
            time.sleep(2)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    src = SerialGpsSource(
        GpsConfig(source=f"socket://127.0.0.1:{port}", rollover_floor=dt.date(1990, 1, 1))
    )
    src.start()
    deadline = time.monotonic() + 60
    while src.stats["lines"] < n and time.monotonic() < deadline:
        time.sleep(0.002)
    src.close()
    srv.close()
    return n


def bench_replay(path: Path, n: int) -> int:
    src = ReplayGpsSource(
        GpsConfig(source=f"replay:{path}", replay_speed=0, rollover_floor=dt.date(1990, 1, 1))
    )
    src.start()
    src.finished.wait(60)
    src.close()
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    lines, what = load_sentences()
    clean = [x for x in lines if "\x00" not in x]
    payload = "".join(x + "\r\n" for x in clean).encode("latin-1")
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "all.nmea"
        log.write_bytes(payload)
        rows = [
            ("parse (core)", *cpu_per_1000(lambda: bench_parse(lines), args.runs)),
            ("assemble (core)", *cpu_per_1000(lambda: bench_assemble(lines), args.runs)),
            (
                "serial source (pty)",
                *cpu_per_1000(lambda: bench_serial_pty(payload, len(clean)), args.runs),
            ),
            (
                "socket:// source",
                *cpu_per_1000(lambda: bench_socket(payload, len(clean)), args.runs),
            ),
            (
                "replay --fast source",
                *cpu_per_1000(lambda: bench_replay(log, len(clean)), args.runs),
            ),
        ]
    print(f"GPS: CPU per 1,000 NMEA sentences ({what}; median of {args.runs} runs)")
    print(
        grid(
            [(name, f"{ms:.2f}", f"{rate:.0f}", f"{ms * 0.015:.3f}%") for name, ms, rate in rows],
            header=("path", "CPU ms / 1k", "sentences/s", "CPU % at 150/s"),
            title=f"machine: {machine()}",
        )
    )
    print("sentences/s is wall clock including each source's start-up: a floor, not a limit.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
