"""The Pi's end of the link to the Pico power supervisor (``firmware/supervisor/``).

One ASCII line per message, NMEA-style: ``$PW<KIND>,field,...*hh\\r\\n`` with the XOR checksum
of everything between ``$`` and ``*``. The Pico's implementation is
``firmware/supervisor/protocol.py``; the tests hold the two to each other. The protocol table
is in docs/field.md ("Supervisor link").

:class:`SupervisorLink` runs one reader thread (pyserial) and sends a heartbeat every
``heartbeat_s`` while ``is_healthy()`` says so; the Pico power-cycles the Pi when heartbeats
stop. ``announce_shutdown()`` tells the Pico to cut power once the Pi has halted.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import serial

from edge.core.errors import SupervisorError
from edge.core.ports import Clock, SystemClock

log = logging.getLogger(__name__)

MAX_LINE = 96


def checksum(body: str) -> int:
    x = 0
    for ch in body:
        x ^= ord(ch)
    return x


def encode(kind: str, *fields: object) -> bytes:
    if len(kind) != 2 or not kind.isalpha() or not kind.isupper():
        raise ValueError(f"kind must be two capital letters, not {kind!r}")
    texts = [str(f) for f in fields]
    for t in texts:
        if any(c in t for c in ",*$\r\n"):
            raise ValueError(f"field {t!r} may not contain , * $ or a newline")
    body = ",".join([f"PW{kind}", *texts])
    line = f"${body}*{checksum(body):02X}\r\n"
    if len(line) > MAX_LINE:
        raise ValueError("line too long")
    return line.encode("ascii")


def decode(line: bytes) -> tuple[str, list[str]]:
    """``b'$PWIG,0*..'`` -> ``('IG', ['0'])``; :class:`SupervisorError` when malformed."""
    try:
        text = line.decode("ascii").strip()
    except UnicodeDecodeError:
        raise SupervisorError("supervisor line is not ASCII") from None
    if len(text) > MAX_LINE or not text.startswith("$PW") or len(text) < 8 or text[-3] != "*":
        raise SupervisorError(f"not a supervisor line: {text[:40]!r}")
    body = text[1:-3]
    try:
        got = int(text[-2:], 16)
    except ValueError:
        raise SupervisorError(f"checksum is not hex: {text[:40]!r}") from None
    if got != checksum(body):
        raise SupervisorError(f"bad checksum: {text[:40]!r}")
    kind, *fields = body.split(",")
    return kind[2:], fields


@dataclass(frozen=True)
class SupervisorStatus:
    firmware: str
    state: str
    ignition_on: bool
    resets: int
    uptime_s: int


class SupervisorLink:
    """Heartbeats to, and status from, the Pico. Thread-safe; ``close()`` idempotent."""

    def __init__(
        self,
        port: str,
        *,
        baud: int = 115200,
        heartbeat_s: float | None = 2.0,
        is_healthy: Callable[[], bool] | None = None,
        status_text: Callable[[], str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        try:
            self._serial = serial.serial_for_url(port, baudrate=baud, timeout=0.2)
        except (serial.SerialException, ValueError) as e:
            raise SupervisorError(f"supervisor port {port}: {e}") from e
        self.port = port
        self.heartbeat_s = heartbeat_s
        self._clock = clock or SystemClock()
        self._is_healthy = is_healthy or (lambda: True)
        self._status_text = status_text or (lambda: "run")
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self._seq = 0
        self.status: SupervisorStatus | None = None
        self.acks: list[str] = []
        self.errors_from_pico: list[str] = []
        self.bad_lines = 0
        self.on_ignition: Callable[[bool], None] | None = None
        self._ack_event = threading.Condition()
        self._reader = threading.Thread(target=self._read_loop, name="supervisor-rx", daemon=True)
        self._beater = threading.Thread(target=self._beat_loop, name="supervisor-hb", daemon=True)
        self._reader.start()
        if heartbeat_s is not None:  # None: a tool that only talks, never keeps the Pi alive
            self._beater.start()

    # -- sending -----------------------------------------------------------------------------

    def _send(self, kind: str, *fields: object) -> None:
        data = encode(kind, *fields)
        with self._write_lock:
            try:
                self._serial.write(data)
                self._serial.flush()
            except (serial.SerialException, OSError) as e:
                raise SupervisorError(f"supervisor port {self.port}: {e}") from e

    def heartbeat(self) -> None:
        self._seq = (self._seq + 1) % 100000
        status = "".join(" " if c in ",*$\r\n" else c for c in self._status_text())[:24]
        self._send("HB", self._seq, status.strip() or "-")

    def announce_shutdown(self, halt_s: int = 20) -> None:
        """Tell the Pico the Pi is going down; it cuts power ``halt_s`` after the last beat."""
        self._send("SD", int(halt_s))

    def set_strobe(self, on_us: int, max_duty_pct: int = 25) -> None:
        self._send("IR", int(on_us), int(max_duty_pct))

    def query(self) -> None:
        self._send("QS")

    def wait_ack(self, kind: str, timeout_s: float) -> bool:
        with self._ack_event:
            return self._ack_event.wait_for(lambda: kind in self.acks, timeout=timeout_s)

    # -- threads -----------------------------------------------------------------------------

    def _beat_loop(self) -> None:
        wait_s = 0.0
        while not self._clock.wait(self._stop, wait_s):
            wait_s = self.heartbeat_s or 1.0
            try:
                if self._is_healthy():
                    self.heartbeat()
                else:
                    log.warning("unit unhealthy: withholding the supervisor heartbeat")
            except (SupervisorError, ValueError) as e:
                log.warning("supervisor heartbeat: %s", e)

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            try:
                line = self._serial.readline()
            except (serial.SerialException, OSError, TypeError) as e:
                if not self._stop.is_set():
                    log.warning("supervisor port %s: %s", self.port, e)
                    self._clock.wait(self._stop, 1.0)
                continue
            if line:
                self._handle(line)

    def _handle(self, line: bytes) -> None:
        try:
            kind, fields = decode(line)
            if kind == "ST":
                fw, state, ign, resets, uptime = fields
                self.status = SupervisorStatus(fw, state, ign == "1", int(resets), int(uptime))
            elif kind == "IG":
                on = fields[0] == "1"
                log.info("supervisor: ignition %s", "on" if on else "off")
                if self.on_ignition is not None:
                    self.on_ignition(on)
            elif kind == "AK":
                with self._ack_event:
                    self.acks.append(fields[0])
                    self._ack_event.notify_all()
            elif kind == "ER":
                self.errors_from_pico.append(",".join(fields))
                log.warning("supervisor rejected a line: %s", ",".join(fields))
            else:
                raise SupervisorError(f"unknown kind {kind!r}")
        except (SupervisorError, ValueError) as e:
            self.bad_lines += 1
            log.warning("supervisor: %s", e)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._beater.is_alive():
            self._beater.join(timeout=5)
        with contextlib.suppress(AttributeError, serial.SerialException, OSError):
            self._serial.cancel_read()
        self._reader.join(timeout=5)
        self._serial.close()

    def __enter__(self) -> SupervisorLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
