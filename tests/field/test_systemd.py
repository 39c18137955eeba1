"""sd_notify against a socket the test listens on, the frame-gated watchdog, and the unit file."""

from __future__ import annotations

import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.app.systemd import FrameWatchdog, SystemdNotifier, poweroff

from .conftest import REPO, ManualClock

UNIT = REPO / "deploy" / "systemd" / "phonewatch.service"


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(5)
    yield s, path
    s.close()


def test_ready_status_watchdog_stopping_datagrams(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"})
    assert n.enabled
    assert n.watchdog_interval_s == 15.0
    assert n.ready("camera, model and outbox up")
    assert sock.recv(4096) == b"READY=1\nSTATUS=camera, model and outbox up"
    assert n.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"
    assert n.status("degraded:\ncamera lost")
    assert sock.recv(4096) == b"STATUS=degraded: camera lost"  # one line, as systemd wants
    assert n.extend_timeout(90)
    assert sock.recv(4096) == b"EXTEND_TIMEOUT_USEC=90000000"
    assert n.stopping("ignition off")
    assert sock.recv(4096) == b"STOPPING=1\nSTATUS=ignition off"
    n.close()
    n.close()


def test_abstract_namespace_socket() -> None:
    name = f"phonewatch-test-{uuid.uuid4().hex}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(b"\0" + name.encode())
    s.settimeout(5)
    try:
        n = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert s.recv(100) == b"READY=1"
    finally:
        s.close()


def test_no_op_outside_systemd() -> None:
    n = SystemdNotifier({})
    assert not n.enabled
    assert n.watchdog_interval_s is None
    assert n.ready() is False
    assert n.watchdog() is False
    assert n.stopping() is False


@pytest.mark.parametrize(
    ("env", "interval_s"),
    [
        ({"WATCHDOG_USEC": "2000000"}, 1.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}, 1.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, None),  # someone else's watchdog
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval_from_env(env: dict[str, str], interval_s: float | None) -> None:
    assert SystemdNotifier(env).watchdog_interval_s == interval_s


def test_listener_gone_is_counted_not_raised(tmp_path: Path) -> None:
    n = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody.sock")})
    assert n.ready() is False
    assert n.send_errors == 1


@pytest.mark.slow
def test_child_process_notifies_with_its_own_pid(listener: tuple[socket.socket, str]) -> None:
    """As under systemd (NotifyAccess=main): the datagram's sender credentials are the service's."""
    sock, path = listener
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    code = textwrap.dedent("""
        from edge.app.systemd import SystemdNotifier
        n = SystemdNotifier()
        assert n.watchdog_interval_s == 5.0, n.watchdog_interval_s
        n.ready("up"); n.watchdog(); n.stopping()
    """)
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO)
    got: list[tuple[bytes, int]] = []
    for _ in range(3):
        msg, anc, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = -1
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid, _uid, _gid = struct.unpack("iII", data[:12])
        got.append((msg, pid))
    assert proc.wait(30) == 0
    assert [m for m, _ in got] == [b"READY=1\nSTATUS=up", b"WATCHDOG=1", b"STOPPING=1"]
    assert {p for _, p in got} == {proc.pid}


def test_frame_watchdog_pets_only_while_frames_flow(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    sock.settimeout(0.2)
    clock = ManualClock()
    wd = FrameWatchdog(
        SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000"}), clock=clock
    )
    assert wd.interval_s == 10.0
    assert wd.stale_s == 10.0
    assert wd.tick() is False  # no frame yet: a pipeline that never starts is restarted
    for _ in range(6):  # frames for 6 s, ticked every second: pets every 5 s
        clock.advance(1.0)
        wd.frame_seen()
        wd.tick()
    assert wd.pets == 2  # t=1 and t=6; the next is due at t=11
    for _ in range(2):
        assert sock.recv(100) == b"WATCHDOG=1"
    clock.advance(5.0)
    assert wd.tick() is True  # last frame 5 s ago: still fresh
    clock.advance(6.0)
    assert wd.tick() is False  # frames stopped 11 s ago: systemd will restart us
    assert wd.withheld == 1
    wd.frame_seen()
    assert wd.tick() is True


def test_frame_watchdog_off_without_watchdog_usec() -> None:
    wd = FrameWatchdog(SystemdNotifier({}), clock=ManualClock())
    wd.frame_seen()
    assert wd.tick() is False
    assert wd.pets == 0


def test_poweroff_asks_systemctl() -> None:
    calls: list[list[str]] = []
    poweroff(runner=lambda cmd: calls.append(list(cmd)))
    assert calls == [["systemctl", "poweroff", "--no-wall"]]


# -- the unit file ---------------------------------------------------------------------------


def _unit_settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_unit_file_has_the_promised_settings() -> None:
    s = _unit_settings()
    assert s["Type"] == ["notify"]
    assert s["Restart"] == ["on-failure"]
    assert float(s["WatchdogSec"][0]) > 0
    assert s["ProtectSystem"] == ["strict"]
    assert s["NoNewPrivileges"] == ["true"]
    assert s["ReadWritePaths"] == ["/var/lib/phonewatch"]
    assert set(s["SupplementaryGroups"][0].split()) == {"video", "gpio", "dialout"}
    assert s["ExecStart"] == [
        "/opt/phonewatch/venv/bin/phonewatch run --config /etc/phonewatch/unit.toml"
    ]
    assert s["StandardOutput"] == ["journal"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    # verify checks that ExecStart exists; point it at a real binary, keep everything else.
    unit = tmp_path / "phonewatch.service"
    unit.write_text(UNIT.read_text().replace("/opt/phonewatch/venv/bin/phonewatch", "/bin/true"))
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if "phonewatch.service" in ln]
    assert r.returncode == 0, r.stdout + r.stderr
    assert problems == [], r.stdout + r.stderr
    r = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 4.0  # "OK" on systemd's scale (the default is 9.6, "UNSAFE")
