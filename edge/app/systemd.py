"""systemd integration without libsystemd: ``sd_notify`` over ``$NOTIFY_SOCKET`` and the watchdog.

The unit file (``deploy/systemd/phonewatch.service``) is ``Type=notify`` with ``WatchdogSec``:

- ``ready()`` once the camera, the model and the outbox are up (systemd then starts the units
  ordered after phonewatch and reports it "active");
- ``watchdog()`` at least every ``watchdog_interval_s`` (half of ``WatchdogSec``) **only while
  frames are flowing** — :class:`FrameWatchdog` does that bookkeeping, so a pipeline that stops
  delivering frames is killed with SIGABRT and restarted (``Restart=on-failure``);
- ``status(text)`` for ``systemctl status``; ``stopping()`` when a clean shutdown begins.

Outside systemd (``NOTIFY_SOCKET`` unset) every call is a no-op, so the same code runs anywhere.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence

from edge.core.ports import Clock, SystemClock

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends ``sd_notify`` datagrams; a no-op when the service manager did not ask for them."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = _watchdog_usec(env)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self.send_errors = 0

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to pet the watchdog (half of ``WatchdogSec``); None when it is off."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2e6

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; True if sent (False: off or failed)."""
        if self._address is None:
            return False
        payload = "\n".join(fields).encode("utf-8")
        with self._lock:
            try:
                if self._sock is None:
                    kind = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                    self._sock = socket.socket(socket.AF_UNIX, kind)
                self._sock.sendto(payload, self._address)
            except OSError as e:
                # Never fatal: a missed notification at worst gets us restarted by systemd.
                self.send_errors += 1
                log.warning("sd_notify %s failed: %s", fields[0] if fields else "", e)
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        fields = ["READY=1"] + ([f"STATUS={status}"] if status else [])
        return self.notify(*fields)

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={_one_line(text)}")

    def stopping(self, status: str | None = None) -> bool:
        fields = ["STOPPING=1"] + ([f"STATUS={_one_line(status)}"] if status else [])
        return self.notify(*fields)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start-up (or stop) time, e.g. while a large model loads."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


class FrameWatchdog:
    """Pets the systemd watchdog only while frames keep arriving.

    The capture stage calls ``frame_seen()`` per frame (one float store, no I/O); a periodic
    tick (the stats loop) calls ``tick()``, which sends ``WATCHDOG=1`` when the last frame is
    younger than ``stale_s`` and the last pet is older than the interval. No frames, no pets:
    systemd restarts a stuck pipeline after ``WatchdogSec``.
    """

    def __init__(
        self,
        notifier: SystemdNotifier,
        *,
        stale_s: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._notifier = notifier
        self._clock = clock or SystemClock()
        interval = notifier.watchdog_interval_s
        self.interval_s = interval
        self.stale_s = stale_s if stale_s is not None else (interval if interval else 5.0)
        self._last_frame_s: float | None = None
        self._last_pet_s: float | None = None
        self.pets = 0
        self.withheld = 0

    def frame_seen(self) -> None:
        self._last_frame_s = self._clock.monotonic()

    def tick(self) -> bool:
        """Pet if due and frames are fresh; True when a pet was sent."""
        if self.interval_s is None:
            return False
        now = self._clock.monotonic()
        if self._last_pet_s is not None and now - self._last_pet_s < self.interval_s / 2:
            return False
        if self._last_frame_s is None or now - self._last_frame_s > self.stale_s:
            self.withheld += 1
            if self.withheld == 1 or self.withheld % 10 == 0:
                log.warning(
                    "no frame for %s: not petting the systemd watchdog",
                    "ever" if self._last_frame_s is None else f"{now - self._last_frame_s:.1f} s",
                )
            return False
        self.withheld = 0
        if self._notifier.watchdog():
            self._last_pet_s = now
            self.pets += 1
            return True
        return False


def poweroff(*, runner: Callable[[Sequence[str]], object] | None = None) -> None:
    """Ask systemd (logind, through polkit) to power the unit off cleanly.

    The service runs with ``NoNewPrivileges``; ``deploy/ansible`` installs a polkit rule that
    lets the ``phonewatch`` user (only) call ``org.freedesktop.login1.power-off``.
    """
    cmd = ["systemctl", "poweroff", "--no-wall"]
    log.warning("powering off: %s", " ".join(cmd))
    if runner is not None:
        runner(cmd)
        return
    subprocess.run(cmd, check=False, timeout=30)


def _socket_address(value: str) -> str | bytes | None:
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # Linux abstract namespace
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract socket; ignoring", value)
    return None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None  # the watchdog belongs to another process (e.g. our parent)
    try:
        usec = int(raw)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not a number; watchdog off", raw)
        return None
    return usec if usec > 0 else None


def _one_line(text: str) -> str:
    return " ".join(text.split())
