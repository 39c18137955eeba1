"""GPS sources on real ports: pyserial loop://, socket:// fed by a thread, a pty that is
unplugged and plugged back, a real gpsd on a pty, and replayed logs."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.adapters.gps import (
    GpsdSource,
    ReplayGpsSource,
    SerialGpsSource,
    build_gps_source,
    check_gps,
    tpv_to_fix,
)
from edge.adapters.gps_config import GpsConfig
from edge.core.errors import GpsError
from edge.core.gps import Fix, FixAssembler, gps_state
from edge.core.nmea import with_checksum
from tests.gps.nmea_gen import drive, epoch
from tests.waiting import wait_until

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
GSV = [  # the 9 satellites the GSA of nmea_gen.epoch uses; gpsd counts used-and-seen ones
    with_checksum("GPGSV,3,1,09,01,40,083,46,02,17,308,41,03,07,344,39,04,22,228,45"),
    with_checksum("GPGSV,3,2,09,05,40,083,46,06,17,308,41,07,07,344,39,08,22,228,45"),
    with_checksum("GPGSV,3,3,09,09,40,083,46"),
]
FAST = {
    "reconnect_min_s": 0.05,
    "reconnect_max_s": 0.2,
    "silence_timeout_s": 0.5,
    "max_fix_age_s": 0.5,
}


def lines_bytes(lines: list[str]) -> bytes:
    return "".join(x + "\r\n" for x in lines).encode()


# --- loop:// -------------------------------------------------------------------------------


def test_loop_port_gives_fixes_and_counts_bad_sentences() -> None:
    ports: list[serial.SerialBase] = []

    def factory(url: str, **kw: Any) -> serial.SerialBase:
        port = serial.serial_for_url(url, **kw)
        ports.append(port)
        return port

    got: list[Fix] = []
    cfg = GpsConfig(source="loop://", baud=115200)
    src = SerialGpsSource(cfg, serial_factory=factory, on_fix=got.append)
    assert src.state == "no_receiver"
    assert src.latest() is None
    src.start()
    try:
        assert wait_until(lambda: bool(ports))
        bad = epoch(T0, 0, 0)[0][:-2] + "00"
        ports[0].write(lines_bytes([*drive(T0, 3), bad, "$GPGGA,no,checksum", "noise"]))
        assert wait_until(lambda: src.state == "fix_3d")
        assert wait_until(lambda: len(got) == 2)  # the 3rd epoch is still open
        fix = src.latest()
        assert fix is not None
        assert fix.time == T0 + dt.timedelta(seconds=2)
        assert fix.lat == pytest.approx(51.5 + 2e-5, abs=1e-6)
        assert fix.speed_mps == pytest.approx(12.5 * 1852 / 3600, abs=1e-6)
        stats = src.stats
        assert stats["bad_checksum"] == 1
        assert stats["no_checksum"] == 1
        assert stats["sentences_ok"] == 9
        assert stats["connected"] is True
    finally:
        src.close()
        src.close()  # idempotent
    assert src.stats["connected"] is False


def test_spy_url_on_a_pty_logs_the_traffic(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rx = Receiver(tmp_path / "gps0")
    rx.plug()
    src = build_gps_source(GpsConfig(source=f"spy://{rx.link}", **FAST))
    src.start()
    try:
        assert wait_until(lambda: src.stats["connected"])
        rx.send(drive(T0, 2))
        assert wait_until(lambda: src.state == "fix_3d")
    finally:
        src.close()
        rx.unplug()
    err = capsys.readouterr().err
    assert " RX " in err, err[:500]  # spy's hex dump
    # 16 bytes a line, so a sentence may wrap anywhere: read the bytes back from the hex
    rx_lines = re.findall(r" RX +[0-9A-F]{4}  ((?:[0-9A-F]{2}(?: {1,2}|$)){1,16})", err, re.M)
    received = bytes.fromhex("".join(rx_lines))
    assert b"GPRMC,120000.00," in received, err[:500]


# --- socket:// with a feeding thread, reconnect after the peer drops ------------------------


class NmeaServer:
    """A TCP server that sends each accepted client one batch of epochs, then hangs up.

    pyserial's socket:// discards what arrived before ``open()`` returns, and a ``read()`` that
    meets the hang-up drops what it had read in the same call. So the n-th batch goes out only
    once ``opened(n)`` says the client has opened its n-th connection, and the server hangs
    up only once ``read(lines)`` says the client has taken every line sent so far."""

    def __init__(self, batches: list[list[str]]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.batches = batches
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def start(self, *, opened: Callable[[int], bool], read: Callable[[int], bool]) -> None:
        """Serve (connections made before this wait in the listen backlog)."""
        self.opened, self.read = opened, read
        self.thread.start()

    def _serve(self) -> None:
        sent = 0
        for batch in self.batches:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn, contextlib.suppress(OSError):  # the test may close first
                if wait_until(functools.partial(self.opened, self.accepted), 10):
                    conn.sendall(lines_bytes(batch))
                    sent += len(batch)
                    wait_until(functools.partial(self.read, sent), 10)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.slow
def test_socket_url_reconnects_after_the_peer_hangs_up() -> None:
    server = NmeaServer([drive(T0, 5), drive(T0 + dt.timedelta(seconds=10), 5)])
    cfg = GpsConfig(source=f"socket://127.0.0.1:{server.port}", **FAST)
    src = build_gps_source(cfg)
    server.start(
        opened=lambda n: src.stats["connects"] >= n,  # counted once open() returned
        read=lambda lines: src.stats["sentences_ok"] >= lines,
    )
    src.start()
    try:
        assert wait_until(lambda: server.accepted == 2 and src.stats["reconnects"] >= 1), src.stats
        assert wait_until(
            lambda: (
                (f := src.latest()) is not None
                and f.time is not None
                and f.time >= T0 + dt.timedelta(seconds=12)
            )
        ), (src.stats, src.latest())
        assert "socket disconnected" in (src.stats["last_error"] or "")
    finally:
        src.close()
        server.close()


# --- a pty unplugged and plugged back --------------------------------------------------------


class Receiver:
    """A fake receiver on a pty; ``link`` is a stable symlink like /dev/serial/by-id/..."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = self.slave = -1

    def plug(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tmp = self.link.with_suffix(".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(os.ttyname(self.slave))
        tmp.replace(self.link)

    def send(self, lines: list[str]) -> None:
        os.write(self.master, lines_bytes(lines))

    def unplug(self) -> None:
        self.link.unlink(missing_ok=True)
        os.close(self.master)
        os.close(self.slave)


def test_pty_unplug_and_replug(tmp_path: Path) -> None:
    rx = Receiver(tmp_path / "gps0")
    rx.plug()
    cfg = GpsConfig(source=str(rx.link), baud=9600, **FAST)
    src = build_gps_source(cfg)
    src.start()
    try:
        assert wait_until(lambda: src.stats["connected"])
        rx.send(drive(T0, 2))
        assert wait_until(lambda: src.state == "fix_3d")
        rx.unplug()
        assert wait_until(lambda: not src.stats["connected"])
        assert wait_until(lambda: src.state == "stale")  # the last fix, now too old
        fix = src.latest()
        assert fix is not None
        assert fix.has_position
        assert fix.age_s > cfg.max_fix_age_s
        assert src.stats["open_failures"] >= 1 or wait_until(
            lambda: src.stats["open_failures"] >= 1
        )
        rx.plug()
        assert wait_until(lambda: src.stats["connected"])
        rx.send(drive(T0 + dt.timedelta(seconds=60), 2))
        assert wait_until(lambda: src.state == "fix_3d")
        assert src.stats["reconnects"] == 1
        new = src.latest()
        assert new is not None
        assert new.time == T0 + dt.timedelta(seconds=61)
    finally:
        src.close()
        if rx.link.exists():
            rx.unplug()


def test_silent_port_is_no_receiver(tmp_path: Path) -> None:
    rx = Receiver(tmp_path / "gps0")
    rx.plug()
    src = build_gps_source(GpsConfig(source=str(rx.link), **FAST))
    src.start()
    try:
        assert wait_until(lambda: src.stats["connected"])
        rx.send(
            epoch(T0, 0, 0, valid=False) + epoch(T0 + dt.timedelta(seconds=1), 0, 0, valid=False)
        )
        assert wait_until(lambda: src.state == "no_fix")
        fix = src.latest()
        assert fix is not None
        assert fix.mode == "none"
        assert fix.lat is None
        assert wait_until(lambda: src.state == "no_receiver", 3.0)  # talked, then went silent
    finally:
        src.close()
        rx.unplug()


# --- replay ------------------------------------------------------------------------------


def write_log(path: Path, lines: list[str]) -> Path:
    path.write_text("# a comment line\n" + "\n".join(lines) + "\n")
    return path


def test_replay_fast_and_paced(tmp_path: Path) -> None:
    log = write_log(tmp_path / "drive.nmea", drive(T0, 3))
    got: list[Fix] = []
    fast = ReplayGpsSource(
        GpsConfig(source=f"replay:{log}", replay_speed=0, rollover_floor=dt.date(2000, 1, 1)),
        on_fix=got.append,
    )
    fast.start()
    assert fast.finished.wait(5)
    assert [f.time for f in got] == [T0 + dt.timedelta(seconds=i) for i in range(3)]
    assert fast.stats["sentences_ok"] == 9
    assert fast.stats["malformed"] == 0
    fast.close()

    paced = ReplayGpsSource(GpsConfig(source=f"replay:{log}", replay_speed=10))
    t = time.monotonic()
    paced.start()
    assert paced.finished.wait(5)
    elapsed = time.monotonic() - t
    paced.close()
    assert elapsed >= 0.18  # two 1 s gaps at 10x; a pacing check, not a benchmark


def test_replay_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GpsError, match="not found"):
        build_gps_source(GpsConfig(source=f"replay:{tmp_path / 'nope.nmea'}"))


def test_replay_of_a_real_capture(nmea_dir: Path) -> None:
    src = ReplayGpsSource(
        GpsConfig(
            source=f"replay:{nmea_dir / 'ublox-neo-m9n-nmea.log'}",
            replay_speed=0,
            rollover_floor=dt.date(2000, 1, 1),
        )
    )
    src.start()
    assert src.finished.wait(10)
    s = src.stats
    src.close()
    assert s["fixes"] >= 50
    assert s["bad_checksum"] == 0


def test_demo_drive_replay_keeps_the_last_position_through_the_tunnel() -> None:
    demo = Path(__file__).resolve().parents[2] / "deploy" / "gps" / "demo-drive.nmea"
    got: list[Fix] = []
    src = ReplayGpsSource(GpsConfig(source=f"replay:{demo}", replay_speed=0), on_fix=got.append)
    src.start()
    assert src.finished.wait(5)
    src.close()
    modes = [f.mode for f in got]
    assert len(got) == 60
    assert modes[30:35] == ["none"] * 5
    assert modes.count("3d") == 55
    assert all(f.lat is None for f in got[30:35])
    assert got[29].speed_mps == pytest.approx(13.0, abs=0.05)

    # in the tunnel, latest() is the last real position, with its age growing
    asm = FixAssembler(clock=lambda: 0.0)
    t_s = 0.0  # monotonic time = seconds into the drive, as if it arrived live
    for line in demo.read_text().splitlines():
        if line.startswith("$GPRMC,083034"):
            break
        if line.startswith(("$GPRMC,0830", "$GPGGA,0830")):
            t_s = float(line[11:13])
        if not line.startswith("#"):
            asm.feed(line, t_s)
    fix = asm.latest(33.5)
    assert fix is not None
    assert fix.time is not None
    assert fix.time.second == 29
    assert fix.has_position
    assert fix.age_s == pytest.approx(4.5)
    assert gps_state(fix, is_receiving=True, max_age_s=3.0) == "stale"


# --- check_gps ---------------------------------------------------------------------------


def test_check_gps_reports_each_state(tmp_path: Path) -> None:
    good = write_log(tmp_path / "good.nmea", drive(T0, 2))
    ok, msg = check_gps(
        GpsConfig(source=f"replay:{good}", replay_speed=0, max_fix_age_s=60), timeout_s=3
    )
    assert ok
    assert msg.startswith("GPS fix_3d: 51.5")
    assert "sats 9" in msg
    nofix = write_log(tmp_path / "nofix.nmea", epoch(T0, 0, 0, valid=False))
    ok, msg = check_gps(GpsConfig(source=f"replay:{nofix}", replay_speed=0), timeout_s=2)
    assert not ok
    assert msg.startswith("GPS no_fix: the receiver talks")
    ok, msg = check_gps(GpsConfig(source=str(tmp_path / "ttyNOPE"), **FAST), timeout_s=0.5)
    assert not ok
    assert msg.startswith("GPS no_receiver")
    assert "ttyNOPE" in msg
    ok, msg = check_gps(GpsConfig(source=f"replay:{tmp_path / 'missing'}"), timeout_s=0.5)
    assert not ok
    assert "not found" in msg


# --- gpsd ----------------------------------------------------------------------------------


def test_tpv_to_fix_rejects_nonsense() -> None:
    assert tpv_to_fix({"class": "TPV", "mode": 7}, {}, 0.0) is None
    assert tpv_to_fix({"class": "TPV", "mode": 3, "time": "yesterday"}, {}, 0.0) is None
    no_pos = tpv_to_fix({"class": "TPV", "mode": 3, "lat": 95.0, "lon": 1.0}, {}, 0.0)
    assert no_pos is not None
    assert no_pos.mode == "none"
    assert no_pos.lat is None
    fix = tpv_to_fix(
        {
            "class": "TPV",
            "mode": 2,
            "time": "2026-03-01T12:00:00.000Z",
            "lat": 1.5,
            "lon": -2.5,
            "speed": 3.0,
            "track": 45.0,
            "status": 2,
        },
        {"hdop": 0.9, "uSat": 7},
        1.0,
    )
    assert fix is not None
    assert fix.to_dict()["mode"] == "2d"
    assert fix.quality == 2
    assert (fix.hdop, fix.sats, fix.time) == (0.9, 7, T0)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=6,
)
_TPV_KEYS = st.sampled_from(
    ["mode", "time", "lat", "lon", "alt", "altMSL", "speed", "track", "status", "geoidSep"]
)


@pytest.mark.slow
@settings(max_examples=120, deadline=None)
@given(
    tpv=st.dictionaries(_TPV_KEYS, _JSON, max_size=10),
    sky=st.dictionaries(st.sampled_from(["hdop", "uSat", "pdop", "vdop"]), _JSON),
)
def test_tpv_to_fix_never_crashes_or_leaves_the_globe(
    tpv: dict[str, Any], sky: dict[str, Any]
) -> None:
    fix = tpv_to_fix(tpv, sky, 0.0)
    if fix is not None:
        assert fix.lat is None or -90 <= fix.lat <= 90
        assert fix.lon is None or -180 <= fix.lon <= 180
        assert fix.has_position == (fix.mode != "none")
        assert fix.time is None or fix.time.tzinfo is not None
        json.dumps(fix.to_dict())


class Gpsd:
    """A real gpsd (the apt package) reading a pty we write NMEA into."""

    def __init__(self, exe: str) -> None:
        self.exe = exe
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> bool:
        self.proc = subprocess.Popen(
            [self.exe, "-N", "-n", "-b", "-S", str(self.port), os.ttyname(self.slave)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return wait_until(lambda: _can_connect(self.port), 5.0)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
            self.proc = None

    def close(self) -> None:
        self.stop()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def gpsd() -> Iterator[Gpsd]:
    exe = shutil.which("gpsd") or ("/usr/sbin/gpsd" if os.path.exists("/usr/sbin/gpsd") else None)
    if exe is None:
        pytest.skip("gpsd is not installed (apt-get install gpsd)")
    g = Gpsd(exe)
    try:
        if not g.start():
            pytest.skip("gpsd did not start")
        yield g
    finally:
        g.close()


class Feeder:
    """Writes one epoch every 0.1 s (fresh times) into a pty master until stopped."""

    def __init__(self, master: int, lat: float = 48.1, lon: float = 11.5) -> None:
        self.master, self.lat, self.lon = master, lat, lon
        self.stop_event = threading.Event()
        self.i = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            t = T0 + dt.timedelta(seconds=self.i)
            with contextlib.suppress(OSError):
                os.write(self.master, lines_bytes([*epoch(t, self.lat, self.lon), *GSV]))
            self.i += 1
            self.stop_event.wait(0.1)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join()


def _can_connect(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_real_gpsd_reports_the_fix_we_fed_it(gpsd: Gpsd) -> None:
    got: list[Fix] = []
    src = GpsdSource(GpsConfig(source=f"gpsd://127.0.0.1:{gpsd.port}", **FAST), on_fix=got.append)
    src.start()
    feeder = Feeder(gpsd.master)
    try:
        assert wait_until(lambda: src.state == "fix_3d", 10.0), src.stats
        fix = src.latest()
        assert fix is not None
        assert fix.time is not None
        assert fix.time >= T0
        assert fix.lat == pytest.approx(48.1, abs=1e-6)
        assert fix.lon == pytest.approx(11.5, abs=1e-6)
        assert fix.speed_mps == pytest.approx(12.5 * 1852 / 3600, abs=1e-3)
        assert wait_until(lambda: (f := src.latest()) is not None and f.sats is not None)
        fix = src.latest()
        assert fix is not None
        assert fix.sats == 9
        assert fix.hdop == pytest.approx(0.9)
        assert wait_until(lambda: len(got) >= 2)
        assert json.dumps(fix.to_dict())

        # gpsd restarts (an upgrade, a crash): the state degrades, then the fix comes back
        gpsd.stop()
        assert wait_until(lambda: not src.stats["connected"])
        assert wait_until(lambda: src.state == "stale")
        assert gpsd.start()
        assert wait_until(lambda: src.stats["reconnects"] >= 1, 10.0), src.stats
        assert wait_until(lambda: src.state == "fix_3d", 10.0), src.stats
    finally:
        feeder.stop()
        src.close()
    assert src.stats["bad_json"] == 0


def test_gpsd_not_running_is_no_receiver() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = GpsdSource(GpsConfig(source=f"gpsd://127.0.0.1:{port}", **FAST))
    src.start()
    try:
        assert wait_until(lambda: src.stats["open_failures"] >= 2)
        assert src.state == "no_receiver"
        assert "gpsd" in (src.stats["last_error"] or "")
    finally:
        src.close()
