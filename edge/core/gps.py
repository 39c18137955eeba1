"""GPS in the pure core: the :class:`Fix`, the epoch assembler, the ``GpsSource`` port and the
rule that decides which clock an alert's time comes from.

A receiver sends several sentences per epoch (RMC, GGA, GSA, VTG, GLL, ZDA ... all stamped with
the same time of day). :class:`FixAssembler` merges them into one :class:`Fix`. Only an epoch a
receiver calls valid carries a position: an RMC/GLL status ``V``, a GGA quality 0, an FAA mode
``N`` or a GSA "no fix" anywhere in the epoch makes it a fix with ``mode == "none"`` and no
latitude or longitude. Nothing is carried from one epoch into the next except the date (GGA and
GLL carry a time of day only).

Plausibility: a fix never claims to be a real GNSS position or time when it is not. An epoch in
which any sentence says simulator (FAA ``S``, GGA quality 8), manual input (``M``, 7) or
dead reckoning (``E``, 6), or in which two sentences place the receiver more than
``conflict_m`` apart, or two dates disagree, has no position; :attr:`Fix.reason` says why and
``quality`` shows 6/7/8 for the first three. Sentences with impossible values (see
:mod:`edge.core.nmea`) or a date outside the assembler's window are dropped and counted as
``implausible``. Nothing a line contains makes :meth:`FixAssembler.feed` raise.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from edge.core import nmea
from edge.core.errors import NmeaChecksumError, NmeaError

log = logging.getLogger(__name__)

FixMode = Literal["none", "2d", "3d"]
GpsState = Literal["no_receiver", "no_fix", "fix_2d", "fix_3d", "stale"]
GPS_STATES: tuple[str, ...] = ("no_receiver", "no_fix", "fix_2d", "fix_3d", "stale")

GPS_WEEK_ROLLOVER = dt.timedelta(weeks=1024)
DEFAULT_ROLLOVER_FLOOR = dt.date(2024, 1, 1)
"""A receiver date before this is taken as a GPS week-number rollover (old firmware counting
1024 weeks too few) and moved forward by 1024 weeks until it is not. The software did not exist
before this date, so no genuine date can be older."""

_FAA_QUALITY = {"A": 1, "D": 2, "P": 3, "R": 4, "F": 5, "E": 6, "M": 7, "S": 8}

DEFAULT_CONFLICT_M = 500.0
"""Two positions of one epoch further apart than this (m) contradict each other. Per-constellation
solutions of one receiver (GP / GL / GN talkers) agree to tens of metres; the real captures agree
exactly."""

NOT_GNSS_QUALITY: dict[str, int] = {"estimated": 6, "manual": 7, "simulator": 8}
"""``Fix.reason`` for an epoch a receiver did not measure, and the GGA quality that says so."""
_NOT_GNSS_FAA = {"E": "estimated", "M": "manual", "S": "simulator"}
_NOT_GNSS_GGA = {q: r for r, q in NOT_GNSS_QUALITY.items()}
_REAL_GNSS_FAA = frozenset("ADPRF")
_EARTH_RADIUS_M = 6_371_008.8
_MAX_ELAPSED_S = 1e9
"""Cap on the monotonic time between a date anchor and an epoch (keeps date arithmetic finite)."""


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
    reason: str | None = None
    """Why a sentence's position or time is *not* in this fix, or None: ``simulator``,
    ``manual``, ``estimated`` (not a GNSS measurement; ``quality`` 8/7/6), ``position_conflict``
    (two positions of the epoch disagree), ``date_conflict`` (two dates disagree; no time),
    ``leap_second`` (23:59:60 on a day without one; no time)."""

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
            "reason": self.reason,
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


def is_plausible_time(t: dt.datetime) -> bool:
    """A timezone-aware UTC time on a date a receiver can report (GPS epoch .. LATEST_DATE)."""
    return t.tzinfo is not None and nmea.GPS_EPOCH_DATE <= t.date() <= nmea.LATEST_DATE


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
    not_gnss: str | None = None
    """``simulator`` / ``manual`` / ``estimated`` when a sentence of the epoch said so."""
    is_position_conflict: bool = False
    is_date_conflict: bool = False
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

    def __init__(
        self,
        *,
        allow_no_checksum: bool = False,
        rollover_floor: dt.date = DEFAULT_ROLLOVER_FLOOR,
        latest_date: dt.date | None = None,
        conflict_m: float = DEFAULT_CONFLICT_M,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``latest_date``: the last date a receiver may report (after the rollover
        correction); default 1024 weeks after the later of ``rollover_floor`` and
        :data:`DEFAULT_ROLLOVER_FLOOR` (the software's own date). A later date is implausible
        (a two-digit year 79 read as 2079, a corrupt ZDA year) and its sentence is dropped."""
        self._allow_no_checksum = allow_no_checksum
        self._floor = rollover_floor
        self._latest = min(
            latest_date
            if latest_date is not None
            else max(rollover_floor, DEFAULT_ROLLOVER_FLOOR) + GPS_WEEK_ROLLOVER,
            nmea.LATEST_DATE,
        )
        self._conflict_m = conflict_m
        self._clock = clock
        self._epoch = _Epoch()
        self._date_anchor: tuple[dt.datetime, float] | None = None
        """(UTC of the newest dated moment, monotonic time it arrived): dates GGA/GLL epochs."""
        self._last_fix: Fix | None = None
        self._last_position_fix: Fix | None = None
        self.stats: dict[str, int] = {
            "lines": 0,
            "sentences_ok": 0,
            "bad_checksum": 0,
            "no_checksum": 0,
            "malformed": 0,
            "implausible": 0,
            "ignored": 0,
            "epochs": 0,
            "fixes": 0,
            "rollover_corrected": 0,
            "not_gnss": 0,
            "conflicts": 0,
            "errors": 0,
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
            if record is not None:
                self._check_date(record)
        except NmeaChecksumError as e:
            self.stats["no_checksum" if "*" not in text else "bad_checksum"] += 1
            self.last_error = str(e)
            return None
        except nmea.NmeaImplausibleError as e:
            self.stats["implausible"] += 1
            self.last_error = str(e)
            log.debug("dropped implausible sentence %r: %s", text[:200], e)
            return None
        except NmeaError as e:
            self.stats["malformed"] += 1
            self.last_error = str(e)
            return None
        self.stats["sentences_ok"] += 1
        if record is None:
            self.stats["ignored"] += 1
            return None
        try:
            return self._merge(record, now)
        except Exception as e:  # a bug, not bad input: never let one line stop the reader
            self.stats["errors"] += 1
            self.last_error = f"internal error on {text[:80]!r}: {e!r}"
            log.warning("GPS assembler failed on %r; epoch discarded", text[:200], exc_info=True)
            self._epoch = _Epoch()
            return None

    def flush(self) -> Fix | None:
        """Close the epoch being assembled (end of a replay)."""
        if self._epoch.sentences == 0:
            return None
        fix = self._build(self._epoch)
        self._epoch = _Epoch()
        self._publish(fix)
        return fix

    @property
    def latest_date(self) -> dt.date:
        """The last date this assembler accepts from a receiver (after rollover correction)."""
        return self._latest

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
        if fix.reason in NOT_GNSS_QUALITY:
            self.stats["not_gnss"] += 1
        elif fix.reason in ("position_conflict", "date_conflict"):
            self.stats["conflicts"] += 1
        if fix.reason is not None:
            log.debug(
                "GPS epoch without %s: %s", "time" if fix.time is None else "position", fix.reason
            )
        self._last_fix = fix
        if fix.has_position:
            self.stats["fixes"] += 1
            self._last_position_fix = fix

    def _merge(self, r: nmea.Record, now: float) -> Fix | None:
        """Add one sentence to the epoch; returns the previous epoch's fix if ``r`` closed it."""
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
                self._merge_rmc(ep, r, tod, now)
            case nmea.Gga():
                self._merge_gga(ep, r)
            case nmea.Gns():
                self._merge_gns(ep, r)
            case nmea.Gll():
                self._merge_gll(ep, r)
            case nmea.Gsa():
                self._merge_gsa(ep, r)
            case nmea.Vtg():
                self._merge_vtg(ep, r)
            case nmea.Zda():
                if r.date is not None:
                    self._set_date(ep, r.date, tod, now)
        return closed

    def _merge_rmc(self, ep: _Epoch, r: nmea.Rmc, tod: nmea.TimeOfDay | None, now: float) -> None:
        self._flag_faa(ep, r.faa_mode)
        if r.date is not None and r.faa_mode not in ("S", "M"):
            self._set_date(ep, r.date, tod, now)
        if r.is_valid:
            self._position(ep, r.lat, r.lon)
            ep.speed_mps = r.speed_mps if r.speed_mps is not None else ep.speed_mps
            ep.track_deg = r.track_deg if r.track_deg is not None else ep.track_deg
            ep.faa = r.faa_mode or ep.faa
        else:
            ep.is_invalid = True
            ep.notes.add("rmc_invalid")

    def _merge_gga(self, ep: _Epoch, r: nmea.Gga) -> None:
        if r.quality in _NOT_GNSS_GGA:
            self._flag(ep, _NOT_GNSS_GGA[r.quality])
        elif r.quality == 0 or r.lat is None:
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

    def _merge_gns(self, ep: _Epoch, r: nmea.Gns) -> None:
        if not any(c in _REAL_GNSS_FAA for c in r.modes):
            for c in r.modes:
                self._flag_faa(ep, c)
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

    def _merge_gll(self, ep: _Epoch, r: nmea.Gll) -> None:
        self._flag_faa(ep, r.faa_mode)
        if r.is_valid:
            self._position(ep, r.lat, r.lon)
        else:
            ep.is_invalid = True
            ep.notes.add("gll_invalid")

    @staticmethod
    def _merge_gsa(ep: _Epoch, r: nmea.Gsa) -> None:
        if r.mode is not None:
            ep.notes.add(f"gsa_mode_{r.mode}")
            ep.gsa_mode = r.mode if ep.gsa_mode is None else max(ep.gsa_mode, r.mode)
        ep.gsa_prns.update(r.prns)
        ep.pdop = r.pdop if r.pdop is not None else ep.pdop
        ep.hdop = ep.hdop if ep.hdop is not None else r.hdop
        ep.vdop = r.vdop if r.vdop is not None else ep.vdop

    def _merge_vtg(self, ep: _Epoch, r: nmea.Vtg) -> None:
        self._flag_faa(ep, r.faa_mode)
        if r.faa_mode != "N":
            ep.speed_mps = r.speed_mps if r.speed_mps is not None else ep.speed_mps
            ep.track_deg = r.track_deg if r.track_deg is not None else ep.track_deg

    def _flag(self, ep: _Epoch, reason: str) -> None:
        """Mark the epoch as not a GNSS measurement; the strongest word wins."""
        if ep.not_gnss is None or NOT_GNSS_QUALITY[reason] > NOT_GNSS_QUALITY[ep.not_gnss]:
            ep.not_gnss = reason
        ep.notes.add(f"not_gnss_{reason}")

    def _flag_faa(self, ep: _Epoch, faa: str | None) -> None:
        if faa is not None and faa in _NOT_GNSS_FAA:
            self._flag(ep, _NOT_GNSS_FAA[faa])

    def _position(self, ep: _Epoch, lat: float | None, lon: float | None) -> None:
        if lat is None or lon is None:
            return
        if (
            ep.lat is not None
            and ep.lon is not None
            and (distance_m(ep.lat, ep.lon, lat, lon) > self._conflict_m)
        ):
            ep.is_position_conflict = True
            ep.notes.add("position_conflict")
        ep.lat, ep.lon, ep.is_valid = lat, lon, True

    def _rolled(self, date: dt.date) -> dt.date:
        """``date`` moved forward by whole GPS weeks (1024) until it is not before the floor."""
        if date >= self._floor:
            return date
        n = -((date - self._floor) // GPS_WEEK_ROLLOVER)  # ceil((floor - date) / 1024 weeks)
        return date + n * GPS_WEEK_ROLLOVER

    def _check_date(self, r: nmea.Record) -> None:
        """Raise ``NmeaImplausibleError`` for a date after the window (checked before merging,
        so a dropped sentence changes nothing)."""
        date = getattr(r, "date", None)
        if not isinstance(date, dt.date):
            return
        try:
            rolled = self._rolled(date)
        except OverflowError:
            rolled = dt.date.max
        if rolled > self._latest:
            raise nmea.NmeaImplausibleError(
                f"date {date.isoformat()} is after {self._latest.isoformat()}, the last date "
                f"this unit accepts (rollover floor {self._floor.isoformat()})"
            )

    def _set_date(self, ep: _Epoch, date: dt.date, tod: nmea.TimeOfDay | None, now: float) -> None:
        rolled = self._rolled(date)
        if rolled != date:
            self.stats["rollover_corrected"] += 1
        if ep.date is not None and ep.date != rolled:
            ep.is_date_conflict = True
            ep.notes.add("date_conflict")
        ep.date = rolled
        if tod is not None:
            self._date_anchor = (_at(rolled, tod), now)

    def _date_for(self, tod: nmea.TimeOfDay, now: float) -> dt.date | None:
        """The date of a date-less time of day: the day that puts it nearest to the last dated
        moment moved on by the monotonic time since (so a GGA from just before midnight that
        arrives after an RMC from just after keeps yesterday's date, and a silence of many
        hours is crossed correctly). Moves the anchor forward, never back."""
        if self._date_anchor is None:
            return None
        anchor, anchor_mono = self._date_anchor
        elapsed = min(max(now - anchor_mono, 0.0), _MAX_ELAPSED_S)
        if math.isnan(elapsed):
            elapsed = 0.0
        expected = anchor + dt.timedelta(seconds=elapsed)
        day = expected.date()
        candidates = [day + dt.timedelta(days=k) for k in (-1, 0, 1)]
        date = min(candidates, key=lambda d: abs(_at(d, tod) - expected))
        moment = _at(date, tod)
        if moment > anchor:
            self._date_anchor = (moment, now)
        return date if nmea.GPS_EPOCH_DATE <= date <= self._latest else None

    def _build(self, ep: _Epoch) -> Fix:
        when: dt.datetime | None = None
        reason: str | None = None
        if ep.tod is not None:
            date = ep.date or self._date_for(ep.tod, ep.received_mono_s)
            if date is not None and ep.tod.second == 60 and not nmea.is_leap_second_day(date):
                reason = "leap_second"
            elif date is not None:
                second = min(ep.tod.second, 59)  # a leap second is shown as :59.999
                micro = ep.tod.microsecond if ep.tod.second < 60 else 999_999
                when = dt.datetime(
                    date.year,
                    date.month,
                    date.day,
                    ep.tod.hour,
                    ep.tod.minute,
                    second,
                    micro,
                    tzinfo=dt.UTC,
                )
        if ep.is_date_conflict:
            when, reason = None, "date_conflict"
        valid = ep.is_valid and not ep.is_invalid and ep.gsa_mode != 1
        if ep.is_position_conflict:
            valid, reason = False, "position_conflict"
        if ep.not_gnss is not None:
            valid, reason = False, ep.not_gnss
            if ep.not_gnss != "estimated":
                when = None  # a simulator's or a person's clock is not GNSS time either
        mode: FixMode = "none"
        if valid:
            is_3d = ep.gsa_mode == 3 or (ep.gsa_mode is None and ep.has_altitude_fix)
            mode = "3d" if is_3d else "2d"
        quality = ep.quality if ep.quality is not None else _FAA_QUALITY.get(ep.faa or "A", 1)
        if not valid:
            # 0 = no fix; 6/7/8 = the receiver offered a position it did not measure
            quality = NOT_GNSS_QUALITY[ep.not_gnss] if ep.not_gnss is not None else 0
        sats = ep.sats if ep.sats is not None else (len(ep.gsa_prns) or None)
        return Fix(
            time=when,
            lat=ep.lat if valid else None,
            lon=ep.lon if valid else None,
            alt_m=ep.alt_m if mode == "3d" else None,
            speed_mps=ep.speed_mps if valid else None,
            track_deg=ep.track_deg if valid else None,
            mode=mode,
            quality=quality,
            hdop=ep.hdop,
            sats=sats,
            received_mono_s=ep.received_mono_s,
            pdop=ep.pdop,
            vdop=ep.vdop,
            geoid_sep_m=ep.geoid_sep_m if mode == "3d" else None,
            reason=reason,
        )


def _at(date: dt.date, tod: nmea.TimeOfDay) -> dt.datetime:
    """UTC of ``tod`` on ``date`` (23:59:60 is the next day's 00:00:00)."""
    return dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC) + dt.timedelta(
        seconds=tod.seconds()
    )


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine, mean Earth radius), metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))
