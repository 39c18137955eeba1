"""GPS sources: a serial NMEA receiver (pyserial URL), a gpsd, or a replayed NMEA log.

Each source reads in its own thread and keeps only the newest fix; ``latest()`` never blocks.
Serial and gpsd sources survive the receiver going away (unplugged USB, gpsd restarted):
they reopen with a doubling backoff and report ``no_receiver`` or ``stale`` meanwhile.
I/O lives here; everything about sentences and fixes is in :mod:`edge.core.gps`.

We run our own reader thread rather than pyserial's ``ReaderThread``: it ends on the first
error, and we want the same thread to reopen the port with backoff.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import serial

from edge.adapters.gps_config import GpsConfig, gpsd_address, source_kind
from edge.core import nmea
from edge.core.errors import GpsError, NmeaError
from edge.core.gps import Fix, FixAssembler, GpsSource, gps_state

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 4096
OnFix = Callable[[Fix], None]


class _ThreadedSource:
    """Thread, lock, stop event, connection state and backoff shared by every source."""

    kind = "gps"

    def __init__(
        self,
        name: str,
        cfg: GpsConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_fix: OnFix | None = None,
    ) -> None:
        self.name = name
        self._cfg = cfg
        self._clock = clock
        self._on_fix = on_fix
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._is_connected = False
        self._last_rx_mono: float | None = None
        self._counters: dict[str, int] = {"connects": 0, "reconnects": 0, "open_failures": 0}
        self._last_error: str | None = None
        self.finished = threading.Event()
        """Set when the source has nothing more to give (end of a replay, or closed)."""

    # --- GpsSource ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        if self._stop.is_set():
            raise GpsError(f"{self.name}: source was closed; build a new one")
        self._thread = threading.Thread(
            target=self._run_guarded, name=f"gps-{self.kind}", daemon=True
        )
        self._thread.start()

    def latest(self) -> Fix | None:
        now = self._clock()
        with self._lock:
            return self._latest_locked(now)

    @property
    def state(self) -> str:
        now = self._clock()
        with self._lock:
            fix = self._latest_locked(now)
            receiving = (
                self._is_connected
                and self._last_rx_mono is not None
                and now - self._last_rx_mono <= self._cfg.silence_timeout_s
            )
        return gps_state(fix, is_receiving=receiving, max_age_s=self._cfg.max_fix_age_s)

    @property
    def stats(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = {"source": self.name, "connected": self._is_connected}
            out.update(self._counters)
            out.update(self._stats_locked())
            out["last_error"] = self._last_error
        out["state"] = self.state
        return out

    def close(self) -> None:
        self._stop.set()
        self._interrupt()
        self._set_connected(False)
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5.0)
            if t.is_alive():
                log.warning("%s: reader thread did not stop within 5 s", self.name)
        self.finished.set()

    def __enter__(self) -> _ThreadedSource:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- for subclasses ----------------------------------------------------------------------

    def _latest_locked(self, now: float) -> Fix | None:
        raise NotImplementedError

    def _stats_locked(self) -> dict[str, Any]:
        return {}

    def _run(self) -> None:
        raise NotImplementedError

    def _interrupt(self) -> None:
        """Wake the reader thread out of a blocking read (close() calls it)."""

    def _emit(self, fix: Fix | None) -> None:
        if fix is not None and self._on_fix is not None:
            try:
                self._on_fix(fix)
            except Exception:
                log.exception("%s: on_fix callback failed", self.name)

    def _set_connected(self, is_connected: bool, error: str | None = None) -> None:
        with self._lock:
            if is_connected and not self._is_connected:
                self._counters["connects"] += 1
                if self._counters["connects"] > 1:
                    self._counters["reconnects"] += 1
            self._is_connected = is_connected
            if error is not None:
                self._last_error = error

    def _backoff_waits(self) -> _Backoff:
        return _Backoff(self._cfg.reconnect_min_s, self._cfg.reconnect_max_s, self._stop)

    def _run_guarded(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("%s: GPS reader thread died", self.name)
            self._set_connected(False, "reader thread died (see log)")
        finally:
            self.finished.set()


class _Backoff:
    def __init__(self, first_s: float, max_s: float, stop: threading.Event) -> None:
        self._first_s, self._max_s, self._stop = first_s, max_s, stop
        self._next_s = first_s

    def reset(self) -> None:
        self._next_s = self._first_s

    def wait(self) -> bool:
        """Sleep the current backoff (or until stopped); False if stopped."""
        stopped = self._stop.wait(self._next_s)
        self._next_s = min(self._next_s * 2, self._max_s)
        return not stopped


class _NmeaSource(_ThreadedSource):
    """A source that feeds NMEA lines into a :class:`FixAssembler`."""

    def __init__(self, name: str, cfg: GpsConfig, **kw: Any) -> None:
        super().__init__(name, cfg, **kw)
        self._asm = FixAssembler(
            allow_no_checksum=cfg.allow_no_checksum,
            rollover_floor=cfg.rollover_floor,
            clock=self._clock,
        )
        self._overlong = 0

    def _latest_locked(self, now: float) -> Fix | None:
        return self._asm.latest(now)

    def _stats_locked(self) -> dict[str, Any]:
        return {**self._asm.stats, "overlong_lines": self._overlong}

    def _feed(self, line: bytes | str) -> None:
        now = self._clock()
        with self._lock:
            self._last_rx_mono = now
            before = self._asm.stats["bad_checksum"] + self._asm.stats["malformed"]
            closed = self._asm.feed(line, now)
            if self._asm.stats["bad_checksum"] + self._asm.stats["malformed"] > before:
                log.debug("%s: dropped %r: %s", self.name, line, self._asm.last_error)
        self._emit(closed)

    def _flush(self) -> None:
        with self._lock:
            closed = self._asm.flush()
        self._emit(closed)


class SerialGpsSource(_NmeaSource):
    """An NMEA receiver on a serial port, opened by pyserial URL (``/dev/serial0``, ``loop://``,
    ``socket://host:port``, ``spy://...``). ``serial_factory`` is pyserial's ``serial_for_url``
    unless a test passes its own (e.g. to keep a handle on a ``loop://`` port)."""

    kind = "serial"
    READ_TIMEOUT_S = 0.2
    BULK_READ_TIMEOUT_S = 0.05
    BULK_SCHEMES = ("socket://", "rfc2217://")
    """Transports whose ``in_waiting`` is only 0 or 1: read in bulk with a short timeout
    (at most 50 ms added latency) instead of byte by byte (25x the CPU, measured)."""

    def __init__(
        self,
        cfg: GpsConfig,
        *,
        serial_factory: Callable[..., serial.SerialBase] = serial.serial_for_url,
        **kw: Any,
    ) -> None:
        super().__init__(cfg.source, cfg, **kw)
        self._factory = serial_factory
        self._port: serial.SerialBase | None = None
        self._is_bulk = cfg.source.startswith(self.BULK_SCHEMES)

    def _interrupt(self) -> None:
        port = self._port
        if port is not None and hasattr(port, "cancel_read"):
            try:
                port.cancel_read()
            except Exception:  # a port closing under us
                log.debug("%s: cancel_read failed", self.name, exc_info=True)

    def _run(self) -> None:
        backoff = self._backoff_waits()
        logged_outage = False
        while not self._stop.is_set():
            try:
                port = self._factory(
                    self._cfg.source,
                    baudrate=self._cfg.baud,
                    timeout=(self.BULK_READ_TIMEOUT_S if self._is_bulk else self.READ_TIMEOUT_S),
                )
            except (serial.SerialException, OSError, ValueError) as e:
                with self._lock:
                    self._counters["open_failures"] += 1
                self._set_connected(False, f"cannot open: {e}")
                if not logged_outage:
                    log.warning(
                        "%s: cannot open GPS port: %s (retrying with backoff)", self.name, e
                    )
                    logged_outage = True
                if not backoff.wait():
                    return
                continue
            self._port = port
            self._set_connected(True)
            log.info("%s: GPS port open at %d baud", self.name, self._cfg.baud)
            logged_outage = False
            backoff.reset()
            try:
                self._read_lines(port)
            except (serial.SerialException, OSError) as e:
                self._set_connected(False, f"read failed: {e}")
                log.warning("%s: GPS port lost: %s (reopening)", self.name, e)
                logged_outage = True
            except Exception as e:  # a transport bug must not end GPS for good: reopen
                self._set_connected(False, f"reader error: {e!r}")
                log.exception("%s: unexpected error reading the GPS port (reopening)", self.name)
                logged_outage = True
            finally:
                self._port = None
                try:
                    port.close()
                except Exception:
                    log.debug("%s: close failed", self.name, exc_info=True)
                self._set_connected(False)
            if not self._stop.is_set() and not backoff.wait():
                return

    def _read_lines(self, port: serial.SerialBase) -> None:
        buf = bytearray()
        while not self._stop.is_set():
            if self._is_bulk:
                chunk = port.read(4096)
            else:  # a tty: in_waiting is exact, so read what is there without waiting
                chunk = port.read(max(1, min(int(getattr(port, "in_waiting", 0)), 4096)))
            if not chunk:
                continue
            buf += chunk
            while True:
                end = buf.find(b"\n")
                if end < 0:
                    break
                line = bytes(buf[:end])
                del buf[: end + 1]
                self._feed(line)
            if len(buf) > MAX_LINE_BYTES:
                with self._lock:
                    self._overlong += 1
                buf.clear()


class ReplayGpsSource(_NmeaSource):
    """An NMEA log replayed at its own pace (epoch to epoch), or as fast as possible with
    ``replay_speed = 0``. Lines starting with ``#`` are comments."""

    kind = "replay"
    MAX_GAP_S = 5.0

    def __init__(self, cfg: GpsConfig, **kw: Any) -> None:
        path = Path(cfg.source[len("replay:") :].strip()).expanduser()
        super().__init__(cfg.source, cfg, **kw)
        if not path.is_file():
            raise GpsError(f"gps.source: replay file not found: {path}")
        self.path = path

    def _run(self) -> None:
        self._set_connected(True)
        while not self._stop.is_set():
            self._play_once()
            self._flush()
            if not self._cfg.replay_loop:
                break
        # The log has ended: the "receiver" is still there but silent, so the state turns to
        # no_receiver after silence_timeout_s and the last fix goes stale, as with a real one.

    def _play_once(self) -> None:
        speed = self._cfg.replay_speed
        last_s: float | None = None
        with self.path.open("rb") as f:
            for raw in f:
                if self._stop.is_set():
                    return
                line = raw.strip()
                if not line or line.startswith(b"#"):
                    continue
                if speed > 0:
                    tod_s = _time_of_day_s(line)
                    if tod_s is not None:
                        if last_s is not None and tod_s != last_s:
                            gap = (tod_s - last_s) % 86400.0
                            if self._stop.wait(min(gap, self.MAX_GAP_S) / speed):
                                return
                        last_s = tod_s
                self._feed(line)


def _time_of_day_s(line: bytes) -> float | None:
    try:
        rec = nmea.parse_sentence(line, allow_no_checksum=True)
    except NmeaError:
        return None
    tod = getattr(rec, "time", None)
    return tod.seconds() if isinstance(tod, nmea.TimeOfDay) else None


_GPSD_STATUS_TO_QUALITY = {1: 1, 2: 2, 3: 4, 4: 5, 5: 6, 6: 6, 7: 7, 8: 8}


class GpsdSource(_ThreadedSource):
    """TPV reports from a gpsd over TCP (``gpsd://host:2947``), for units where gpsd and chrony
    already own the receiver and the clock."""

    kind = "gpsd"
    READ_TIMEOUT_S = 0.5

    def __init__(self, cfg: GpsConfig, **kw: Any) -> None:
        super().__init__(cfg.source, cfg, **kw)
        self.host, self.port = gpsd_address(cfg.source)
        self._sock: socket.socket | None = None
        self._newest: Fix | None = None
        self._last_position: Fix | None = None
        self._pending: Fix | None = None
        self._sky: dict[str, Any] = {}
        self._counts = {
            "reports_ok": 0,
            "tpv": 0,
            "sky": 0,
            "bad_json": 0,
            "bad_tpv": 0,
            "epochs": 0,
            "fixes": 0,
        }

    def _latest_locked(self, now: float) -> Fix | None:
        newest = self._newest
        if newest is not None and newest.has_position:
            return newest.aged(now)
        if self._last_position is not None:
            return self._last_position.aged(now)
        return newest.aged(now) if newest is not None else None

    def _stats_locked(self) -> dict[str, Any]:
        return dict(self._counts)

    def _interrupt(self) -> None:
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _run(self) -> None:
        backoff = self._backoff_waits()
        logged_outage = False
        while not self._stop.is_set():
            try:
                sock = socket.create_connection((self.host, self.port), timeout=5.0)
            except OSError as e:
                with self._lock:
                    self._counters["open_failures"] += 1
                self._set_connected(False, f"cannot connect to gpsd: {e}")
                if not logged_outage:
                    log.warning("%s: cannot connect to gpsd: %s (retrying)", self.name, e)
                    logged_outage = True
                if not backoff.wait():
                    return
                continue
            self._sock = sock
            self._set_connected(True)
            logged_outage = False
            backoff.reset()
            try:
                sock.settimeout(self.READ_TIMEOUT_S)
                sock.sendall(b'?WATCH={"enable":true,"json":true};\n')
                self._read_reports(sock)
            except OSError as e:
                if not self._stop.is_set():
                    self._set_connected(False, f"gpsd connection lost: {e}")
                    log.warning("%s: gpsd connection lost: %s", self.name, e)
                    logged_outage = True
            finally:
                self._sock = None
                sock.close()
                self._set_connected(False)
            if not self._stop.is_set() and not backoff.wait():
                return

    def _read_reports(self, sock: socket.socket) -> None:
        buf = bytearray()
        while not self._stop.is_set():
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise ConnectionResetError("gpsd closed the connection")
            buf += chunk
            while (end := buf.find(b"\n")) >= 0:
                line = bytes(buf[:end])
                del buf[: end + 1]
                self._report(line)
            if len(buf) > 1 << 20:
                buf.clear()

    def _report(self, line: bytes) -> None:
        now = self._clock()
        closed: Fix | None = None
        with self._lock:
            self._last_rx_mono = now
            try:
                obj = json.loads(line)
            except ValueError:
                self._counts["bad_json"] += 1
                return
            if not isinstance(obj, dict):
                self._counts["bad_json"] += 1
                return
            self._counts["reports_ok"] += 1
            cls = obj.get("class")
            if cls == "SKY":
                self._counts["sky"] += 1
                self._sky = obj
            elif cls == "TPV":
                self._counts["tpv"] += 1
                fix = tpv_to_fix(obj, self._sky, now)
                if fix is None:
                    self._counts["bad_tpv"] += 1
                    return
                pending = self._pending
                if pending is not None and pending.time != fix.time:
                    closed = pending
                    self._counts["epochs"] += 1
                    self._counts["fixes"] += pending.has_position
                self._pending = self._newest = fix
                if fix.has_position:
                    self._last_position = fix
        self._emit(closed)


def _num(obj: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    v = obj.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v) if lo <= v <= hi else None


def tpv_to_fix(tpv: dict[str, Any], sky: dict[str, Any], now_mono_s: float) -> Fix | None:
    """A gpsd TPV (and the newest SKY) -> Fix; None if the report is malformed."""
    mode_n = tpv.get("mode", 0)
    if not isinstance(mode_n, int) or mode_n not in (0, 1, 2, 3):
        return None
    when: dt.datetime | None = None
    t = tpv.get("time")
    if isinstance(t, str):
        try:
            parsed = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
        except ValueError:
            return None
        when = parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)
    lat = _num(tpv, "lat", -90, 90)
    lon = _num(tpv, "lon", -180, 180)
    mode = {2: "2d", 3: "3d"}.get(mode_n, "none")
    if mode != "none" and (lat is None or lon is None):
        mode = "none"
    has_pos = mode != "none"
    status = tpv.get("status", 1)
    quality = _GPSD_STATUS_TO_QUALITY.get(status, 1) if isinstance(status, int) else 1
    alt = _num(tpv, "altMSL", -2e4, 1e7)
    if alt is None:
        alt = _num(tpv, "alt", -2e4, 1e7)
    sats = sky.get("uSat")
    return Fix(
        time=when,
        lat=lat if has_pos else None,
        lon=lon if has_pos else None,
        alt_m=alt if mode == "3d" else None,
        speed_mps=_num(tpv, "speed", 0, 1e5) if has_pos else None,
        track_deg=_num(tpv, "track", 0, 360) if has_pos else None,
        mode=mode,  # type: ignore[arg-type]
        quality=quality if has_pos else 0,
        hdop=_num(sky, "hdop", 0, 100),
        sats=sats if isinstance(sats, int) and not isinstance(sats, bool) else None,
        received_mono_s=now_mono_s,
        pdop=_num(sky, "pdop", 0, 100),
        vdop=_num(sky, "vdop", 0, 100),
        geoid_sep_m=_num(tpv, "geoidSep", -1e3, 1e3) if mode == "3d" else None,
    )


SOURCES: dict[str, Callable[..., GpsSource]] = {
    "serial": SerialGpsSource,
    "gpsd": GpsdSource,
    "replay": ReplayGpsSource,
}
"""Each kind of ``gps.source`` (see :func:`edge.adapters.gps_config.source_kind`) and the
source class built for it."""


def build_gps_source(
    cfg: GpsConfig, *, clock: Callable[[], float] = time.monotonic, on_fix: OnFix | None = None
) -> GpsSource:
    """The source ``cfg.source`` names (not started), looked up by its kind in SOURCES."""
    return SOURCES[source_kind(cfg.source)](cfg, clock=clock, on_fix=on_fix)


def check_gps(cfg: GpsConfig, timeout_s: float) -> tuple[bool, str]:
    """For ``phonewatch check``: listen up to ``timeout_s`` for a valid fix.
    Returns (ok, one line for a person)."""
    try:
        source = build_gps_source(cfg)
    except GpsError as e:
        return False, str(e)
    deadline = time.monotonic() + timeout_s
    try:
        source.start()
        # the best state seen in the window: a receiver that talked counts even if a replay
        # ended (or the receiver went quiet) before the window closed
        rank = {"no_receiver": 0, "stale": 1, "no_fix": 2, "fix_2d": 3, "fix_3d": 4}
        state = source.state
        while True:
            now_state = source.state
            if rank.get(now_state, 0) >= rank.get(state, 0):
                state = now_state
            if state in ("fix_2d", "fix_3d") or time.monotonic() >= deadline:
                break
            if isinstance(source, _ThreadedSource) and source.finished.wait(0.1):
                now_state = source.state
                state = now_state if rank.get(now_state, 0) >= rank[state] else state
                break
        stats = source.stats
        fix = source.latest()
    finally:
        source.close()
    summary = (
        f"{stats.get('sentences_ok', stats.get('reports_ok', 0))} sentences ok, "
        f"{stats.get('bad_checksum', 0)} bad checksum"
    )
    if state in ("fix_2d", "fix_3d") and fix is not None:
        d = fix.to_dict()
        return True, (
            f"GPS {state}: {d['lat']:.6f}, {d['lon']:.6f}, sats {d['sats']}, "
            f"hdop {d['hdop']}, time {d['time']} ({cfg.source}; {summary})"
        )
    if state == "stale":
        return False, f"GPS stale: last fix is {fix.age_s if fix else 0:.0f} s old ({summary})"
    if state == "no_fix":
        return False, (
            f"GPS no_fix: the receiver talks ({summary}) but has no valid fix yet; "
            "is the antenna outside with a clear view of the sky?"
        )
    err = stats.get("last_error") or f"nothing received in {timeout_s:g} s"
    return False, f"GPS no_receiver: {cfg.source}: {err}"
