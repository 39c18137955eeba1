"""GPS in the pure core: the :class:`Fix`, the epoch assembler, the ``GpsSource`` port and the
rule that decides which clock an alert's time comes from.

A receiver sends several sentences per epoch (RMC, GGA, GSA, VTG, GLL, ZDA ... all stamped with
the same time of day). :class:`FixAssembler` merges them into one :class:`Fix`. Only an epoch a
receiver calls valid carries a position: an RMC/GLL status ``V``, a GGA quality 0, an FAA mode
``N`` or a GSA "no fix" anywhere in the epoch makes it a fix with ``mode == "none"`` and no
latitude or longitude. Nothing is carried from one epoch into the next except the date (GGA and
GLL carry a time of day only).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from edge.core import nmea
from edge.core.errors import NmeaChecksumError, NmeaError

FixMode = Literal["none", "2d", "3d"]
GpsState = Literal["no_receiver", "no_fix", "fix_2d", "fix_3d", "stale"]
GPS_STATES: tuple[str, ...] = ("no_receiver", "no_fix", "fix_2d", "fix_3d", "stale")

GPS_WEEK_ROLLOVER = dt.timedelta(weeks=1024)
DEFAULT_ROLLOVER_FLOOR = dt.date(2024, 1, 1)
"""A receiver date before this is taken as a GPS week-number rollover (old firmware counting
1024 weeks too few) and moved forward by 1024 weeks until it is not. The software did not exist
before this date, so no genuine date can be older."""

_FAA_QUALITY = {"A": 1, "D": 2, "P": 3, "R": 4, "F": 5, "E": 6, "M": 7, "S": 8}


@dataclass(frozen=True, slots=True)
class Fix:
    """One epoch from the receiver. ``lat``/``lon`` are set only when ``mode`` is 2d or 3d."""

    time: dt.datetime | None
    """UTC time of the epoch (timezone-aware), or None if the receiver has not given a date."""
    lat: float | None
    lon: float | None
    alt_m: float | None
    """Altitude above mean sea level (m)."""
    speed_mps: float | None
    track_deg: float | None
    """Course over ground, degrees from true north."""
    mode: FixMode
    quality: int
    """GGA fix quality: 0 none, 1 GPS, 2 DGPS, 4 RTK fixed, 5 RTK float, 6 dead reckoning ..."""
    hdop: float | None
    sats: int | None
    """Satellites used in the solution."""
    received_mono_s: float
    """Monotonic time (s) at which the epoch's newest sentence arrived."""
    pdop: float | None = None
    vdop: float | None = None
    geoid_sep_m: float | None = None
    age_s: float = 0.0
    """Seconds between the epoch's arrival and the moment this copy was taken (``aged``)."""

    @property
    def has_position(self) -> bool:
        return self.mode != "none" and self.lat is not None and self.lon is not None

    def aged(self, now_mono_s: float) -> Fix:
        return replace(self, age_s=max(0.0, now_mono_s - self.received_mono_s))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields for alerts, heartbeats and the ``phonewatch gps`` command."""
        return {
            "time": format_utc(self.time) if self.time is not None else None,
            "lat": round(self.lat, 9) if self.lat is not None else None,
            "lon": round(self.lon, 9) if self.lon is not None else None,
            "alt_m": self.alt_m,
            "speed_mps": round(self.speed_mps, 3) if self.speed_mps is not None else None,
            "track_deg": self.track_deg,
            "mode": self.mode,
            "quality": self.quality,
            "hdop": self.hdop,
            "sats": self.sats,
            "age_s": round(self.age_s, 3),
        }


def format_utc(t: dt.datetime) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``: ``2017-01-10T00:09:41.000Z``."""
    t = t.astimezone(dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class GpsSource(Protocol):
    """Where the unit's fixes come from (a serial receiver, gpsd, a replayed log).

    ``latest()`` never blocks: it returns the newest fix that has a position (with its age
    computed now), else the newest fix without one, else None. Alerts never wait for GPS.
    """

    def start(self) -> None: ...
    def latest(self) -> Fix | None: ...
    @property
    def state(self) -> str: ...
    @property
    def stats(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


def gps_state(fix: Fix | None, *, is_receiving: bool, max_age_s: float) -> GpsState:
    """``fix`` as ``latest()`` returns it (aged). A position older than ``max_age_s`` is
    ``stale`` whether or not the receiver still talks; with no position at all the state says
    whether the receiver is there (``no_fix``) or not (``no_receiver``)."""
    if fix is not None and fix.has_position:
        if fix.age_s > max_age_s:
            return "stale"
        return "fix_3d" if fix.mode == "3d" else "fix_2d"
    return "no_fix" if is_receiving else "no_receiver"


def alert_time(fix: Fix | None, now_wall_s: float, max_age_s: float
               ) -> tuple[dt.datetime, Literal["gps", "system"]]:
    """UTC for an alert made now: the fix's time moved on by its age when the fix is valid and
    no older than ``max_age_s``; otherwise the system clock. Says which it used."""
    if (fix is not None and fix.has_position and fix.time is not None
            and 0.0 <= fix.age_s <= max_age_s):
        return fix.time + dt.timedelta(seconds=fix.age_s), "gps"
    return dt.datetime.fromtimestamp(now_wall_s, tz=dt.UTC), "system"


@dataclass(slots=True)
class _Epoch:
    tod: nmea.TimeOfDay | None = None
    date: dt.date | None = None
    lat: float | None = None
    lon: float | None = None
    alt_m: float | None = None
    geoid_sep_m: float | None = None
    speed_mps: float | None = None
    track_deg: float | None = None
    quality: int | None = None
    faa: str | None = None
    hdop: float | None = None
    pdop: float | None = None
    vdop: float | None = None
    sats: int | None = None
    gsa_mode: int | None = None
    gsa_prns: set[int] = field(default_factory=set)
    is_valid: bool = False
    is_invalid: bool = False
    has_altitude_fix: bool = False
    received_mono_s: float = 0.0
    sentences: int = 0
    notes: set[str] = field(default_factory=set)
    """Why the epoch came out as it did (diagnostics for tests and ``phonewatch gps -v``)."""


class FixAssembler:
    """Feed it lines; it keeps the newest fix. Not thread-safe (sources hold a lock).

    ``feed`` returns the fix of an epoch when a line *closes* it (the next epoch's first timed
    sentence); ``current()`` is the epoch still being assembled.
    """

    def __init__(self, *, allow_no_checksum: bool = False,
                 rollover_floor: dt.date = DEFAULT_ROLLOVER_FLOOR,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._allow_no_checksum = allow_no_checksum
        self._floor = rollover_floor
        self._clock = clock
        self._epoch = _Epoch()
        self._date_anchor: tuple[dt.date, float] | None = None
        self._last_fix: Fix | None = None
        self._last_position_fix: Fix | None = None
        self.stats: dict[str, int] = {
            "lines": 0, "sentences_ok": 0, "bad_checksum": 0, "no_checksum": 0,
            "malformed": 0, "ignored": 0, "epochs": 0, "fixes": 0, "rollover_corrected": 0,
        }
        self.last_error: str | None = None

    # --- input ---------------------------------------------------------------------------

    def feed(self, line: str | bytes, now_mono_s: float | None = None) -> Fix | None:
        now = self._clock() if now_mono_s is None else now_mono_s
        text = line.decode("ascii", "replace") if isinstance(line, bytes | bytearray) else line
        text = text.strip()
        if not text:
            return None
        self.stats["lines"] += 1
        try:
            record = nmea.parse_sentence(text, allow_no_checksum=self._allow_no_checksum)
        except NmeaChecksumError as e:
            self.stats["no_checksum" if "*" not in text else "bad_checksum"] += 1
            self.last_error = str(e)
            return None
        except NmeaError as e:
            self.stats["malformed"] += 1
            self.last_error = str(e)
            return None
        self.stats["sentences_ok"] += 1
        if record is None:
            self.stats["ignored"] += 1
            return None
        return self._merge(record, now)

    def flush(self) -> Fix | None:
        """Close the epoch being assembled (end of a replay)."""
        if self._epoch.sentences == 0:
            return None
        fix = self._build(self._epoch)
        self._epoch = _Epoch()
        self._publish(fix)
        return fix

    # --- output --------------------------------------------------------------------------

    def current(self) -> Fix | None:
        return self._build(self._epoch) if self._epoch.sentences else None

    def last_closed(self) -> Fix | None:
        """The newest completed epoch (with or without a position)."""
        return self._last_fix

    def current_notes(self) -> frozenset[str]:
        """Diagnostics for the epoch being assembled (e.g. ``rmc_invalid``, ``gsa_mode_2``)."""
        return frozenset(self._epoch.notes)

    def latest(self, now_mono_s: float | None = None) -> Fix | None:
        """Newest fix with a position (completed or in progress), else the newest without."""
        now = self._clock() if now_mono_s is None else now_mono_s
        cur = self.current()
        if cur is not None and cur.has_position:
            return cur.aged(now)
        if self._last_position_fix is not None:
            return self._last_position_fix.aged(now)
        newest = cur or self._last_fix
        return newest.aged(now) if newest is not None else None

    # --- internals -----------------------------------------------------------------------

    def _publish(self, fix: Fix) -> None:
        self.stats["epochs"] += 1
        self._last_fix = fix
        if fix.has_position:
            self.stats["fixes"] += 1
            self._last_position_fix = fix

    def _merge(self, r: nmea.Record, now: float) -> Fix | None:
        closed: Fix | None = None
        tod = getattr(r, "time", None)
        ep = self._epoch
        if tod is not None and ep.tod is not None and tod != ep.tod:
            closed = self._build(ep)
            self._publish(closed)
            ep = self._epoch = _Epoch()
        if tod is not None and ep.tod is None:
            ep.tod = tod
        ep.sentences += 1
        ep.received_mono_s = now
        match r:
            case nmea.Rmc():
                if r.date is not None:
                    ep.date = self._set_date(r.date, tod)
                if r.is_valid:
                    self._position(ep, r.lat, r.lon)
                    ep.speed_mps = r.speed_mps if r.speed_mps is not None else ep.speed_mps
                    ep.track_deg = r.track_deg if r.track_deg is not None else ep.track_deg
                    ep.faa = r.faa_mode or ep.faa
                else:
                    ep.is_invalid = True
                    ep.notes.add("rmc_invalid")
            case nmea.Gga():
                if r.quality == 0 or r.lat is None:
                    ep.is_invalid = True
                    ep.notes.add("gga_no_fix")
                elif r.sats is not None and r.sats < 3:
                    # Fewer than 3 satellites cannot give a position: a per-constellation
                    # GGA (SiRFstarV, Telit send one per GNSS) or a bogus one. Not used.
                    ep.notes.add("gga_few_sats")
                else:
                    self._position(ep, r.lat, r.lon)
                    ep.quality = r.quality
                    if r.alt_m is not None:
                        ep.alt_m = r.alt_m
                        # a height needs a 4th satellite
                        ep.has_altitude_fix = r.sats is None or r.sats >= 4
                        if not ep.has_altitude_fix:
                            ep.notes.add("gga_alt_few_sats")
                    ep.geoid_sep_m = r.geoid_sep_m
                ep.sats = r.sats if r.sats is not None else ep.sats
                ep.hdop = r.hdop if r.hdop is not None else ep.hdop
            case nmea.Gns():
                if not r.is_valid:
                    ep.is_invalid = True
                    ep.notes.add("gns_invalid")
                else:
                    self._position(ep, r.lat, r.lon)
                    if r.alt_m is not None:
                        ep.alt_m, ep.has_altitude_fix = r.alt_m, True
                    ep.geoid_sep_m = r.geoid_sep_m
                ep.sats = r.sats if r.sats is not None else ep.sats
                ep.hdop = r.hdop if r.hdop is not None else ep.hdop
            case nmea.Gll():
                if r.is_valid:
                    self._position(ep, r.lat, r.lon)
                else:
                    ep.is_invalid = True
                    ep.notes.add("gll_invalid")
            case nmea.Gsa():
                if r.mode is not None:
                    ep.notes.add(f"gsa_mode_{r.mode}")
                    ep.gsa_mode = r.mode if ep.gsa_mode is None else max(ep.gsa_mode, r.mode)
                ep.gsa_prns.update(r.prns)
                ep.pdop = r.pdop if r.pdop is not None else ep.pdop
                ep.hdop = ep.hdop if ep.hdop is not None else r.hdop
                ep.vdop = r.vdop if r.vdop is not None else ep.vdop
            case nmea.Vtg():
                if r.faa_mode != "N":
                    ep.speed_mps = r.speed_mps if r.speed_mps is not None else ep.speed_mps
                    ep.track_deg = r.track_deg if r.track_deg is not None else ep.track_deg
            case nmea.Zda():
                if r.date is not None:
                    ep.date = self._set_date(r.date, tod)
        return closed

    @staticmethod
    def _position(ep: _Epoch, lat: float | None, lon: float | None) -> None:
        if lat is not None and lon is not None:
            ep.lat, ep.lon, ep.is_valid = lat, lon, True

    def _set_date(self, date: dt.date, tod: nmea.TimeOfDay | None) -> dt.date:
        if date < self._floor:
            self.stats["rollover_corrected"] += 1
            while date < self._floor:
                date += GPS_WEEK_ROLLOVER
        self._date_anchor = (date, tod.seconds() if tod is not None else 0.0)
        return date

    def _date_for(self, tod: nmea.TimeOfDay) -> dt.date | None:
        if self._date_anchor is None:
            return None
        date, anchor_s = self._date_anchor
        if tod.seconds() + 43200 < anchor_s:  # past midnight since the date was given
            date += dt.timedelta(days=1)
            self._date_anchor = (date, tod.seconds())
        return date

    def _build(self, ep: _Epoch) -> Fix:
        when: dt.datetime | None = None
        if ep.tod is not None:
            date = ep.date or self._date_for(ep.tod)
            if date is not None:
                second = min(ep.tod.second, 59)  # a leap second is shown as :59.999
                micro = ep.tod.microsecond if ep.tod.second < 60 else 999_999
                when = dt.datetime(date.year, date.month, date.day, ep.tod.hour,
                                   ep.tod.minute, second, micro, tzinfo=dt.UTC)
        valid = ep.is_valid and not ep.is_invalid and ep.gsa_mode != 1
        mode: FixMode = "none"
        if valid:
            is_3d = ep.gsa_mode == 3 or (ep.gsa_mode is None and ep.has_altitude_fix)
            mode = "3d" if is_3d else "2d"
        quality = ep.quality if ep.quality is not None else _FAA_QUALITY.get(ep.faa or "A", 1)
        sats = ep.sats if ep.sats is not None else (len(ep.gsa_prns) or None)
        return Fix(
            time=when,
            lat=ep.lat if valid else None,
            lon=ep.lon if valid else None,
            alt_m=ep.alt_m if mode == "3d" else None,
            speed_mps=ep.speed_mps if valid else None,
            track_deg=ep.track_deg if valid else None,
            mode=mode,
            quality=quality if valid else 0,
            hdop=ep.hdop,
            sats=sats,
            received_mono_s=ep.received_mono_s,
            pdop=ep.pdop,
            vdop=ep.vdop,
            geoid_sep_m=ep.geoid_sep_m if mode == "3d" else None,
        )
