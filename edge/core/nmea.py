"""NMEA 0183 parsing: checksum, framing and the position sentences (pure, no I/O).

``parse_sentence(line)`` turns one line into a typed record (:class:`Rmc`, :class:`Gga`,
:class:`Gsa`, :class:`Vtg`, :class:`Gll`, :class:`Zda`, :class:`Gns`), returns ``None`` for a
well-formed sentence of a type we do not use (GSV, TXT, proprietary ``$P...``), and raises
:class:`NmeaChecksumError` / :class:`NmeaError` for a sentence that must be dropped and counted.

Every number is range-checked: a record never carries a latitude outside +-90 deg, a longitude
outside +-180 deg, a time of day that does not exist or a negative speed. A field that is empty
is ``None``; a field that is present but malformed rejects the whole sentence (a half-understood
sentence is worth less than none when it carries a position).

Values that are well-formed but cannot come from a real receiver raise
:class:`NmeaImplausibleError` (a kind of :class:`NmeaError`, counted apart): a date before the GPS
epoch (1980-01-06) or after :data:`LATEST_DATE`, a second 60 anywhere but 23:59:60 at the end of
June or December, a speed over the 1,000-knot export (COCOM) limit. Whether an FAA mode or GGA
quality means "not a GNSS fix" (simulator, manual, estimated) is left to the assembler: the
record carries the receiver's word unchanged.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass

from edge.core.errors import NmeaChecksumError, NmeaError

KNOTS_TO_MPS = 1852.0 / 3600.0
KPH_TO_MPS = 1000.0 / 3600.0
MAX_SENTENCE_CHARS = 160
"""NMEA says 82; high-precision and RTK receivers exceed it, so we allow about twice that."""

TALKERS = frozenset({"GP", "GN", "GL", "GA", "GB", "BD", "GQ", "GI"})
"""GPS, multi-GNSS, GLONASS, Galileo, BeiDou (two spellings), QZSS, NavIC."""

GPS_EPOCH_DATE = dt.date(1980, 1, 6)
"""GPS time began here: no receiver can report an earlier date."""
LATEST_DATE = dt.date(2099, 12, 31)
"""A sanity bound on any date (a ZDA year 9999 would overflow date arithmetic). The assembler
applies a tighter window that follows its week-rollover floor."""
MAX_SPEED_KNOTS = 1000.0
"""Civilian receivers stop reporting above 1,000 knots (the COCOM export limit, 514 m/s)."""
LEAP_SECOND_DAYS = frozenset({(6, 30), (12, 31)})
"""(month, day) on which a leap second (23:59:60 UTC) has ever been inserted."""


class NmeaImplausibleError(NmeaError):
    """A well-formed sentence whose values no real receiver can report (dropped and counted)."""


_TIME_RE = re.compile(r"^(\d\d)(\d\d)(\d\d)(?:\.(\d{1,9}))?$")
_LATLON_RE = re.compile(r"^(\d{1,5})\.(\d*)$")
_NUM_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)$")
_INT_RE = re.compile(r"^\d{1,3}$")


@dataclass(frozen=True, slots=True)
class TimeOfDay:
    hour: int
    minute: int
    second: int
    microsecond: int

    def seconds(self) -> float:
        return self.hour * 3600 + self.minute * 60 + self.second + self.microsecond / 1e6


@dataclass(frozen=True, slots=True)
class Sentence:
    """A framed sentence: ``$GNRMC,...*7D`` -> talker ``GN``, kind ``RMC``, the fields after it."""

    talker: str
    kind: str
    fields: tuple[str, ...]
    has_checksum: bool


@dataclass(frozen=True, slots=True)
class Rmc:
    talker: str
    time: TimeOfDay | None
    is_valid: bool
    lat: float | None
    lon: float | None
    speed_mps: float | None
    track_deg: float | None
    date: dt.date | None
    faa_mode: str | None


@dataclass(frozen=True, slots=True)
class Gga:
    talker: str
    time: TimeOfDay | None
    lat: float | None
    lon: float | None
    quality: int
    sats: int | None
    hdop: float | None
    alt_m: float | None
    """Altitude above mean sea level (the geoid)."""
    geoid_sep_m: float | None


@dataclass(frozen=True, slots=True)
class Gsa:
    talker: str
    mode: int | None
    """1 = no fix, 2 = 2D, 3 = 3D."""
    prns: tuple[int, ...]
    pdop: float | None
    hdop: float | None
    vdop: float | None


@dataclass(frozen=True, slots=True)
class Vtg:
    talker: str
    track_deg: float | None
    speed_mps: float | None
    faa_mode: str | None


@dataclass(frozen=True, slots=True)
class Gll:
    talker: str
    lat: float | None
    lon: float | None
    time: TimeOfDay | None
    is_valid: bool
    faa_mode: str | None


@dataclass(frozen=True, slots=True)
class Zda:
    talker: str
    time: TimeOfDay | None
    date: dt.date | None


@dataclass(frozen=True, slots=True)
class Gns:
    talker: str
    time: TimeOfDay | None
    lat: float | None
    lon: float | None
    modes: str
    """One FAA mode letter per constellation (GPS, GLONASS, Galileo, BeiDou ...)."""
    is_valid: bool
    sats: int | None
    hdop: float | None
    alt_m: float | None
    geoid_sep_m: float | None


Record = Rmc | Gga | Gsa | Vtg | Gll | Zda | Gns


def checksum(body: str) -> int:
    """XOR of the characters between ``$`` and ``*``."""
    value = 0
    for ch in body.encode("ascii", "replace"):
        value ^= ch
    return value


def with_checksum(body: str) -> str:
    """``GPGGA,...`` -> ``$GPGGA,...*hh`` (for tests, replays and simulators)."""
    return f"${body}*{checksum(body):02X}"


def split_sentence(line: str | bytes, *, allow_no_checksum: bool = False) -> Sentence:
    """Frame one line; verify its checksum. Junk before the last ``$`` is ignored (a line that
    was cut off by a buffer overflow and continued by the next sentence keeps the second)."""
    if isinstance(line, bytes | bytearray):
        line = bytes(line).decode("ascii", "replace")
    start = line.rfind("$")
    if start < 0:
        raise NmeaError("no '$' sentence start")
    text = line[start + 1 :].rstrip("\r\n\x00 ")
    if len(text) > MAX_SENTENCE_CHARS:
        raise NmeaError(f"sentence longer than {MAX_SENTENCE_CHARS} characters")
    if not text.isascii() or not text.isprintable():
        raise NmeaError("non-printable characters in sentence")
    star = text.rfind("*")
    if star >= 0:
        body, given = text[:star], text[star + 1 :]
        if len(given) != 2 or not all(c in "0123456789ABCDEFabcdef" for c in given):
            raise NmeaChecksumError(f"malformed checksum {given!r}")
        if int(given, 16) != checksum(body):
            raise NmeaChecksumError(
                f"bad checksum: sentence says {given.upper()}, computed {checksum(body):02X}"
            )
        has_checksum = True
    else:
        if not allow_no_checksum:
            raise NmeaChecksumError("sentence has no checksum")
        body, has_checksum = text, False
    parts = body.split(",")
    address = parts[0]
    if address.startswith("P"):
        return Sentence("P", address[1:], tuple(parts[1:]), has_checksum)
    if len(address) != 5 or not address.isalpha() or not address.isupper():
        raise NmeaError(f"malformed address field {address!r}")
    return Sentence(address[:2], address[2:], tuple(parts[1:]), has_checksum)


def parse_sentence(line: str | bytes, *, allow_no_checksum: bool = False) -> Record | None:
    """Parse one line. ``None``: a valid sentence we do not use. Raises ``NmeaError``."""
    s = split_sentence(line, allow_no_checksum=allow_no_checksum)
    if s.talker not in TALKERS:
        return None
    parser = _PARSERS.get(s.kind)
    if parser is None:
        return None
    return parser(s)


# --- field helpers -------------------------------------------------------------------------


def _field(f: tuple[str, ...], i: int) -> str:
    return f[i].strip() if i < len(f) else ""


def _need(s: Sentence, n: int) -> None:
    if len(s.fields) < n:
        raise NmeaError(f"{s.talker}{s.kind}: {len(s.fields)} fields, need at least {n}")


def _float(v: str, name: str) -> float | None:
    if v == "":
        return None
    if not _NUM_RE.match(v):
        raise NmeaError(f"{name}: not a number: {v!r}")
    return float(v)


def _float_range(v: str, name: str, lo: float, hi: float) -> float | None:
    x = _float(v, name)
    if x is not None and not lo <= x <= hi:
        raise NmeaError(f"{name}: {x} outside {lo}..{hi}")
    return x


def _int(v: str, name: str, lo: int, hi: int) -> int | None:
    if v == "":
        return None
    if not _INT_RE.match(v):
        raise NmeaError(f"{name}: not a small integer: {v!r}")
    x = int(v)
    if not lo <= x <= hi:
        raise NmeaError(f"{name}: {x} outside {lo}..{hi}")
    return x


def parse_time(v: str) -> TimeOfDay | None:
    """``hhmmss[.sss]`` -> :class:`TimeOfDay`; empty -> None; second 60 only at 23:59:60."""
    if v == "":
        return None
    m = _TIME_RE.match(v)
    if not m:
        raise NmeaError(f"time: malformed {v!r}")
    hour, minute, second = int(m[1]), int(m[2]), int(m[3])
    if hour > 23 or minute > 59 or second > 60:
        raise NmeaError(f"time: no such time of day {v!r}")
    if second == 60 and (hour, minute) != (23, 59):
        raise NmeaImplausibleError(f"time: a leap second exists only at 23:59:60, not {v!r}")
    frac = (m[4] or "0")[:6].ljust(6, "0")
    return TimeOfDay(hour, minute, second, int(frac))


def is_leap_second_day(date: dt.date) -> bool:
    """A day that can end in 23:59:60 (the last day of June or December)."""
    return (date.month, date.day) in LEAP_SECOND_DAYS


def check_date(date: dt.date, tod: TimeOfDay | None = None, *, name: str = "date") -> dt.date:
    """``date`` if a receiver can report it (with ``tod``, a leap second on a leap-second day);
    else raises :class:`NmeaImplausibleError`."""
    if not GPS_EPOCH_DATE <= date <= LATEST_DATE:
        raise NmeaImplausibleError(
            f"{name}: {date.isoformat()} is outside {GPS_EPOCH_DATE}..{LATEST_DATE}"
        )
    if tod is not None and tod.second == 60 and not is_leap_second_day(date):
        raise NmeaImplausibleError(
            f"{name}: no leap second at the end of {date.isoformat()} (only 30 June, 31 December)"
        )
    return date


def parse_ddmmyy(v: str) -> dt.date | None:
    """RMC ``ddmmyy``: years 80..99 are 1980..1999 (GPS began in 1980), else 2000..2079; a date
    before 1980-01-06 is implausible. Whether 2079 is plausible is for the assembler, which
    knows the week-rollover floor."""
    if v == "":
        return None
    if len(v) != 6 or not v.isdigit():
        raise NmeaError(f"date: malformed {v!r}")
    day, month, yy = int(v[:2]), int(v[2:4]), int(v[4:])
    year = 2000 + yy if yy < 80 else 1900 + yy
    try:
        date = dt.date(year, month, day)
    except ValueError:
        raise NmeaError(f"date: no such date {v!r}") from None
    return check_date(date)


def _coord(value: str, hemi: str, name: str, max_deg: int, hemis: str) -> float | None:
    """``DDDMM.mmmm`` + hemisphere -> signed degrees. Both empty -> None."""
    if value == "" and hemi == "":
        return None
    if value == "" or hemi == "":
        raise NmeaError(f"{name}: value {value!r} with hemisphere {hemi!r}")
    m = _LATLON_RE.match(value)
    if not m:
        raise NmeaError(f"{name}: malformed {value!r}")
    if hemi not in hemis:
        raise NmeaError(f"{name}: hemisphere {hemi!r} is not one of {hemis}")
    whole = int(m[1])
    degrees, minutes_int = divmod(whole, 100)
    minutes = minutes_int + (float("0." + m[2]) if m[2] else 0.0)
    if minutes >= 60.0:
        raise NmeaError(f"{name}: minutes {minutes} >= 60 in {value!r}")
    deg = degrees + minutes / 60.0
    if deg > max_deg:
        raise NmeaError(f"{name}: {deg} deg is beyond {max_deg}")
    return -deg if hemi == hemis[1] else deg


def _latlon(f: tuple[str, ...], i: int) -> tuple[float | None, float | None]:
    lat = _coord(_field(f, i), _field(f, i + 1), "latitude", 90, "NS")
    lon = _coord(_field(f, i + 2), _field(f, i + 3), "longitude", 180, "EW")
    if (lat is None) != (lon is None):
        raise NmeaError("latitude and longitude must both be present or both empty")
    return lat, lon


def _faa(v: str) -> str | None:
    if v == "":
        return None
    if len(v) != 1 or v not in "ADEFMNPRSCU":
        raise NmeaError(f"FAA mode: unknown {v!r}")
    return v


# --- sentences -----------------------------------------------------------------------------


def _rmc(s: Sentence) -> Rmc:
    # time, status, lat, N/S, lon, E/W, speed kn, track, ddmmyy, magvar, E/W, [faa], [nav status]
    _need(s, 9)
    f = s.fields
    status = _field(f, 1)
    if status not in ("A", "V", ""):
        raise NmeaError(f"RMC status: {status!r}")
    faa = _faa(_field(f, 11))
    lat, lon = _latlon(f, 2)
    is_valid = status == "A" and faa != "N" and lat is not None
    tod = parse_time(_field(f, 0))
    date = parse_ddmmyy(_field(f, 8))
    if date is not None:
        check_date(date, tod, name="RMC date")
    return Rmc(
        talker=s.talker,
        time=tod,
        is_valid=is_valid,
        lat=lat,
        lon=lon,
        speed_mps=_speed(_knots(_field(f, 6), "RMC speed"), KNOTS_TO_MPS),
        track_deg=_float_range(_field(f, 7), "RMC track", 0, 360),
        date=date,
        faa_mode=faa,
    )


def _speed(v: float | None, factor: float) -> float | None:
    return None if v is None else v * factor


def _knots(v: str, name: str, factor: float = 1.0) -> float | None:
    """A speed field (knots, or km/h with ``factor`` = knots per km/h): >= 0 and no faster
    than :data:`MAX_SPEED_KNOTS`."""
    x = _float_range(v, name, 0, 1e9)
    if x is not None and x * factor > MAX_SPEED_KNOTS * (1 + 1e-9):
        raise NmeaImplausibleError(f"{name}: {x:g} is faster than {MAX_SPEED_KNOTS:g} knots")
    return x


def _gga(s: Sentence) -> Gga:
    # time, lat, N/S, lon, E/W, quality, sats, hdop, alt, M, geoid sep, M, dgps age, station
    _need(s, 9)
    f = s.fields
    lat, lon = _latlon(f, 1)
    quality = _int(_field(f, 5), "GGA quality", 0, 9)
    return Gga(
        talker=s.talker,
        time=parse_time(_field(f, 0)),
        lat=lat,
        lon=lon,
        quality=0 if quality is None else quality,
        sats=_int(_field(f, 6), "GGA satellites", 0, 255),
        hdop=_float_range(_field(f, 7), "GGA hdop", 0, 100),
        alt_m=_float_range(_field(f, 8), "GGA altitude", -2e4, 1e7),
        geoid_sep_m=_float_range(_field(f, 10), "GGA geoid separation", -1e3, 1e3),
    )


def _gsa(s: Sentence) -> Gsa:
    # A/M, mode 1/2/3, 12 PRNs, pdop, hdop, vdop, [system id]
    _need(s, 17)
    f = s.fields
    mode = _int(_field(f, 1), "GSA mode", 1, 3)
    prns = tuple(
        p for p in (_int(_field(f, i), "GSA PRN", 0, 999) for i in range(2, 14)) if p is not None
    )
    return Gsa(
        talker=s.talker,
        mode=mode,
        prns=prns,
        pdop=_float_range(_field(f, 14), "GSA pdop", 0, 100),
        hdop=_float_range(_field(f, 15), "GSA hdop", 0, 100),
        vdop=_float_range(_field(f, 16), "GSA vdop", 0, 100),
    )


def _vtg(s: Sentence) -> Vtg:
    f = s.fields
    if len(f) >= 8 and _field(f, 1) in ("T", ""):
        # track T, track M, knots N, kph K, [faa]
        faa = _faa(_field(f, 8))
        knots = _knots(_field(f, 4), "VTG speed")
        kph = _knots(_field(f, 6), "VTG speed km/h", KPH_TO_MPS / KNOTS_TO_MPS)
        speed = _speed(knots, KNOTS_TO_MPS) if knots is not None else _speed(kph, KPH_TO_MPS)
        track = _float_range(_field(f, 0), "VTG track", 0, 360)
    elif len(f) == 4:
        # NMEA 1.5: track true, track magnetic, knots, kph (no unit letters)
        faa = None
        track = _float_range(_field(f, 0), "VTG track", 0, 360)
        speed = _speed(_knots(_field(f, 2), "VTG speed"), KNOTS_TO_MPS)
    else:
        raise NmeaError(f"VTG: unrecognised layout with {len(f)} fields")
    if faa == "N":
        track, speed = None, None
    return Vtg(talker=s.talker, track_deg=track, speed_mps=speed, faa_mode=faa)


def _gll(s: Sentence) -> Gll:
    # lat, N/S, lon, E/W, time, status, [faa]
    _need(s, 4)
    f = s.fields
    lat, lon = _latlon(f, 0)
    status = _field(f, 5)
    if status not in ("A", "V", ""):
        raise NmeaError(f"GLL status: {status!r}")
    faa = _faa(_field(f, 6))
    return Gll(
        talker=s.talker,
        lat=lat,
        lon=lon,
        time=parse_time(_field(f, 4)),
        is_valid=status == "A" and faa != "N" and lat is not None,
        faa_mode=faa,
    )


def _zda(s: Sentence) -> Zda:
    # time, day, month, year, [tz hours, tz minutes]
    _need(s, 4)
    f = s.fields
    day = _int(_field(f, 1), "ZDA day", 1, 31)
    month = _int(_field(f, 2), "ZDA month", 1, 12)
    year_s = _field(f, 3)
    tod = parse_time(_field(f, 0))
    date = None
    if day is not None and month is not None and year_s:
        if len(year_s) != 4 or not year_s.isdigit():
            raise NmeaError(f"ZDA year: malformed {year_s!r}")
        try:
            date = dt.date(int(year_s), month, day)
        except ValueError:
            raise NmeaError("ZDA: no such date") from None
        check_date(date, tod, name="ZDA date")
    return Zda(talker=s.talker, time=tod, date=date)


def _gns(s: Sentence) -> Gns:
    # time, lat, N/S, lon, E/W, modes, sats, hdop, alt, geoid sep, dgps age, station, [nav status]
    _need(s, 10)
    f = s.fields
    lat, lon = _latlon(f, 1)
    modes = _field(f, 5)
    if not all(c in "ADEFMNPRSCU" for c in modes):
        raise NmeaError(f"GNS mode: {modes!r}")
    return Gns(
        talker=s.talker,
        time=parse_time(_field(f, 0)),
        lat=lat,
        lon=lon,
        modes=modes,
        is_valid=lat is not None and any(c != "N" for c in modes),
        sats=_int(_field(f, 6), "GNS satellites", 0, 255),
        hdop=_float_range(_field(f, 7), "GNS hdop", 0, 100),
        alt_m=_float_range(_field(f, 8), "GNS altitude", -2e4, 1e7),
        geoid_sep_m=_float_range(_field(f, 9), "GNS geoid separation", -1e3, 1e3),
    )


_PARSERS: dict[str, Callable[[Sentence], Record]] = {
    "RMC": _rmc,
    "GGA": _gga,
    "GSA": _gsa,
    "VTG": _vtg,
    "GLL": _gll,
    "ZDA": _zda,
    "GNS": _gns,
}
