"""Field benchmark: what the field parts cost in the unit's hot paths.

Per call, median of repeated batches (µs):

* ``FrameWatchdog.frame_seen`` — runs once per frame in the capture stage;
* ``FrameWatchdog.tick`` + ``sd_notify WATCHDOG=1`` to a listening socket — the run loop;
* ``FieldIo.on_hit`` / ``set_status`` on gpiozero's MockFactory — once per hit / state change;
* ``Supervisor.tick`` (Pico logic under CPython, fake ``machine``) — every 10 ms on the Pico;
  MicroPython on an RP2040 is roughly 50-100x slower than CPython here, so this says whether
  a 10 ms tick leaves headroom;
* supervisor line encode + decode (Pi side), UBX VALSET encode.

Run: ``.venv/bin/python bench/field.py``.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import REPO, machine

sys.path.insert(0, str(REPO / "tests" / "field"))
sys.path.insert(0, str(REPO / "firmware" / "supervisor"))
sys.path.insert(0, str(REPO / "firmware" / "gnss"))
import fake_machine

sys.modules.setdefault("machine", fake_machine)
import main as pico_main  # noqa: E402
import pins  # noqa: E402
import supervisor as sup  # noqa: E402
import ubx  # noqa: E402
from gpiozero.pins.mock import MockFactory  # noqa: E402

from edge.adapters import supervisor as link  # noqa: E402
from edge.adapters.gpio import FieldIo  # noqa: E402
from edge.adapters.gpio_config import GpioConfig  # noqa: E402
from edge.app.stats import grid  # noqa: E402
from edge.app.systemd import FrameWatchdog, SystemdNotifier  # noqa: E402


def per_call_us(fn: Callable[[], object], n: int, repeats: int) -> tuple[float, float]:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs), max(runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    rows: list[tuple[str, float, float]] = []

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "notify.sock")
        rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        rx.bind(path)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        notifier = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"})
        wd = FrameWatchdog(notifier)
        rows.append(
            ("FrameWatchdog.frame_seen", *per_call_us(wd.frame_seen, 100_000, args.repeats))
        )

        def pet() -> None:
            notifier.watchdog()
            rx.recv(64)

        rows.append(("sd_notify WATCHDOG=1 (+ recv)", *per_call_us(pet, 5_000, args.repeats)))
        notifier.close()
        rx.close()

    factory = MockFactory()
    factory.pin(23).drive_high()
    io = FieldIo.from_config(GpioConfig(), mode="patrol", pin_factory=factory)
    try:
        rows.append(
            (
                "FieldIo.on_hit (MockFactory)",
                *per_call_us(lambda: io.on_hit("lane1"), 200, args.repeats),
            )
        )
        states = iter(["running", "degraded"] * 100_000)
        rows.append(
            (
                "FieldIo.set_status (MockFactory)",
                *per_call_us(lambda: io.set_status(next(states)), 2_000, args.repeats),
            )
        )
    finally:
        io.close()

    fake_machine.Pin.reset()
    fake_machine.Pin.external[pins.IGNITION_RAW] = 0
    t = fake_machine.FakeTime()
    s = pico_main.build(fake_machine, t, sup.Settings())
    hb = link.encode("HB", 1, "run")

    def pico_tick() -> None:
        s._uart.rx += hb
        s.tick()
        s._uart.tx.clear()
        t.sleep_ms(10)

    rows.append(
        ("Pico Supervisor.tick (CPython, 1 HB/tick)", *per_call_us(pico_tick, 20_000, args.repeats))
    )
    rows.append(
        (
            "supervisor line encode+decode (Pi side)",
            *per_call_us(
                lambda: link.decode(link.encode("ST", "1.0.0", "running", 1, 0, 3600)),
                20_000,
                args.repeats,
            ),
        )
    )
    items = [("CFG-RATE-MEAS", 200), ("CFG-UART1-BAUDRATE", 115200), ("CFG-SIGNAL-GPS_ENA", 1)]
    rows.append(
        (
            "UBX VALSET encode (3 items)",
            *per_call_us(lambda: ubx.valset(items), 20_000, args.repeats),
        )
    )

    print(
        grid(
            [(name, f"{med:.2f}", f"{worst:.2f}") for name, med, worst in rows],
            header=("what", "median µs", "worst µs"),
            title=f"machine: {machine()}",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
