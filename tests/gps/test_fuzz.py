"""Property tests: sentences built from random fields (with valid checksums, so they reach the
field parsers) never make the parser raise anything but ``NmeaError``, never make the
assembler raise at all, and never give a fix with an implausible time, position or speed;
``alert_time`` never raises on any fix the assembler gives.

Examples per run: 600 (typed fields) + 300 (arbitrary fields) + 200 (date-less epochs) = 1,100.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.core import nmea
from edge.core.errors import NmeaError
from edge.core.gps import Fix, FixAssembler, is_plausible_time
from edge.core.nmea import with_checksum
from tests.gps.timing import alert_time

pytestmark = pytest.mark.slow  # over a second a test (make check skips it)

NOW_WALL_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z
MAX_SPEED_MPS = nmea.MAX_SPEED_KNOTS * nmea.KNOTS_TO_MPS
FLOORS = [dt.date(1980, 1, 6), dt.date(2000, 1, 1), dt.date(2024, 1, 1)]


def _d(lo: int, hi: int, width: int) -> st.SearchStrategy[str]:
    return st.integers(lo, hi).map(lambda v: f"{v:0{width}d}")


def _mostly(good: st.SearchStrategy[str], *odd: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``good`` three times as often as each ``odd``: most sentences parse, so the assembler's
    own checks (not only the parser's) are exercised."""
    return st.one_of(good, good, good, *odd)


_opt = st.just("")
_talker = _mostly(
    st.sampled_from(["GP", "GN", "GL"]), st.sampled_from([*sorted(nmea.TALKERS), "XX"])
)
_frac = st.sampled_from(["", ".00", ".50", ".999", ".123456789"])
_time = _mostly(
    st.sampled_from(["120000.00", "120001.00", "235959.00", "000000.00", "000001.00"]),
    st.builds(lambda h, m, s, f: f"{h}{m}{s}{f}", _d(0, 23, 2), _d(0, 59, 2), _d(0, 59, 2), _frac),
    st.builds(lambda h, m, s, f: f"{h}{m}{s}{f}", _d(0, 25, 2), _d(0, 61, 2), _d(0, 61, 2), _frac),
    st.sampled_from(["235960.00", "120060.00", "235960.5"]),
    _opt,
)
_digits = st.just("") | st.integers(0, 9_999_999).map(str)
_lat_ok = st.builds(lambda d, m, f: f"{d}{m}.{f}", _d(0, 89, 2), _d(0, 59, 2), _digits)
_lon_ok = st.builds(lambda d, m, f: f"{d}{m}.{f}", _d(0, 179, 3), _d(0, 59, 2), _digits)
_lat = st.one_of(
    _lat_ok, st.builds(lambda d, m, f: f"{d}{m}.{f}", _d(0, 95, 2), _d(0, 61, 2), _digits), _opt
)
_lon = st.one_of(
    _lon_ok, st.builds(lambda d, m, f: f"{d}{m}.{f}", _d(0, 185, 3), _d(0, 61, 2), _digits), _opt
)
_pos = _mostly(
    # near one another (so two sentences of an epoch agree) or anywhere on the globe
    st.builds(
        lambda la, ns, lo, ew: f"{la},{ns},{lo},{ew}",
        st.sampled_from(["5130.0000", "5130.0010", "5522.0000"]) | _lat_ok,
        st.sampled_from(["N", "S"]),
        st.sampled_from(["00007.2000"]) | _lon_ok,
        st.sampled_from(["E", "W"]),
    ),
    st.builds(
        lambda la, ns, lo, ew: f"{la},{ns},{lo},{ew}",
        _lat,
        st.sampled_from(["N", "S", "", "E"]),
        _lon,
        st.sampled_from(["E", "W", "", "N"]),
    ),
    st.just(",,,"),
)
_number = _mostly(
    st.floats(0, 1500, allow_nan=False).map(lambda x: f"{x:.3f}"),
    st.sampled_from(
        [
            "0",
            "-1",
            "999.9",
            "1000.0",
            "1000.01",
            "1852",
            "1852.01",
            "100000.0",
            "1e5",
            "nan",
            "1.",
            ".5",
        ]
    ),
    _opt,
)
_ddmmyy = _mostly(
    st.builds(lambda d, m, y: d + m + y, _d(1, 28, 2), _d(1, 12, 2), _d(0, 99, 2)),
    st.builds(lambda d, m, y: d + m + y, _d(0, 32, 2), _d(0, 13, 2), _d(0, 99, 2)),
    st.sampled_from(["311216", "300615", "150317", "050180", "060180", "010179", "220899"]),
    _opt,
)
_zda_date = _mostly(
    st.builds(lambda d, m, y: f"{d},{m},{y}", _d(1, 28, 2), _d(1, 12, 2), _d(1980, 2100, 4)),
    st.sampled_from(
        [
            "31,12,2016",
            "30,06,2015",
            "15,03,2017",
            "01,01,1979",
            "01,01,2079",
            "31,12,9999",
            "01,01,0000",
        ]
    ),
    st.builds(lambda d, m, y: f"{d},{m},{y}", _d(0, 32, 2), _d(0, 13, 2), _d(0, 9999, 4)),
    st.just(",,"),
)
_faa = _mostly(st.sampled_from(["A", "D", ""]), st.sampled_from([*"ADEFMNPRSCU", ""]))
_status = _mostly(st.just("A"), st.sampled_from(["V", ""]))
_quality = _mostly(st.sampled_from(["1", "2"]), st.integers(0, 9).map(str), _opt)
_sats = _mostly(_d(4, 24, 2), _d(0, 3, 2), _opt)

_rmc = st.builds(
    lambda t, tm, s, pos, sp, tr, d, faa: f"{t}RMC,{tm},{s},{pos},{sp},{tr},{d},,,{faa}",
    _talker,
    _time,
    _status,
    _pos,
    _number,
    _number,
    _ddmmyy,
    _faa,
)
_gga = st.builds(
    lambda t, tm, pos, q, n, h, a: f"{t}GGA,{tm},{pos},{q},{n},{h},{a},M,47.0,M,,",
    _talker,
    _time,
    _pos,
    _quality,
    _sats,
    _number,
    _number,
)
_gll = st.builds(
    lambda t, pos, tm, s, faa: f"{t}GLL,{pos},{tm},{s},{faa}", _talker, _pos, _time, _status, _faa
)
_vtg = st.builds(
    lambda t, tr, kn, kph, faa: f"{t}VTG,{tr},T,,M,{kn},N,{kph},K,{faa}",
    _talker,
    _number,
    _number,
    _number,
    _faa,
)
_zda = st.builds(lambda t, tm, d: f"{t}ZDA,{tm},{d},00,00", _talker, _time, _zda_date)
_gns = st.builds(
    lambda t, tm, pos, modes, n, h, a: f"{t}GNS,{tm},{pos},{modes},{n},{h},{a},47.0,,",
    _talker,
    _time,
    _pos,
    st.lists(st.sampled_from("ADEFMNPRS"), min_size=1, max_size=4).map("".join),
    _sats,
    _number,
    _number,
)
_gsa = st.builds(
    lambda t, mode, p: f"{t}GSA,A,{mode},01,02,03,04,,,,,,,,,{p},{p},{p}",
    _talker,
    st.sampled_from(["1", "2", "3", ""]),
    _number,
)
_sentence = st.one_of(_rmc, _gga, _gll, _vtg, _zda, _gns, _gsa).map(with_checksum)

_field_text = st.text(alphabet=string.printable[:94].replace("$", "").replace("*", ""), max_size=12)
_any_fields = st.builds(
    lambda t, k, fields: with_checksum(f"{t}{k}," + ",".join(fields)),
    _talker,
    st.sampled_from(["RMC", "GGA", "GLL", "VTG", "ZDA", "GNS", "GSA"]),
    st.lists(_field_text, max_size=20),
)


def check_fix(fix: Fix | None, *, latest: dt.date) -> None:
    """Everything a fix from the assembler may claim is plausible, and alert_time never
    raises on it (whatever its age and the allowed age)."""
    if fix is None:
        return
    if fix.time is not None:
        assert fix.time.tzinfo is not None
        assert is_plausible_time(fix.time)
        assert nmea.GPS_EPOCH_DATE <= fix.time.date() <= latest, fix
    if fix.has_position:
        assert fix.lat is not None
        assert fix.lon is not None
        assert -90.0 <= fix.lat <= 90.0
        assert -180.0 <= fix.lon <= 180.0
        # a real position; its time may be withheld (two dates, or 23:59:60 on a wrong day)
        assert fix.reason in (None, "date_conflict", "leap_second"), fix
        assert fix.quality not in (0, 6, 7, 8), fix
    else:
        assert fix.lat is None, fix
        assert fix.lon is None, fix
        assert fix.speed_mps is None, fix
    if fix.reason in ("date_conflict", "leap_second", "simulator", "manual"):
        assert fix.time is None, fix
    assert fix.speed_mps is None or 0.0 <= fix.speed_mps <= MAX_SPEED_MPS + 1e-9
    assert fix.track_deg is None or 0.0 <= fix.track_deg <= 360.0
    d = fix.to_dict()
    assert d["mode"] in ("none", "2d", "3d")
    for age in (0.5, 1e7, math.inf, math.nan):
        for max_age in (2.0, math.inf):
            aged = fix.aged(fix.received_mono_s + age)
            when, source = alert_time(aged, NOW_WALL_S, max_age)
            assert when.tzinfo is not None
            if source == "gps":
                assert aged.has_position
                assert aged.time is not None
                assert is_plausible_time(aged.time)
                assert 0.0 <= aged.age_s <= max_age


def run(lines: list[str], *, floor: dt.date, step_s: float) -> FixAssembler:
    asm = FixAssembler(rollover_floor=floor, clock=lambda: 0.0)
    latest = asm.latest_date
    for i, line in enumerate(lines):
        with contextlib.suppress(NmeaError):  # the documented family; nothing else may escape
            nmea.parse_sentence(line)
        now = i * step_s
        check_fix(asm.feed(line, now), latest=latest)
        check_fix(asm.current(), latest=latest)
        check_fix(asm.latest(now + 0.5), latest=latest)
    check_fix(asm.flush(), latest=latest)
    check_fix(asm.last_closed(), latest=latest)
    assert asm.stats["errors"] == 0, asm.last_error
    s = asm.stats
    assert s["lines"] == (
        s["sentences_ok"] + s["bad_checksum"] + s["no_checksum"] + s["malformed"] + s["implausible"]
    )
    return asm


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(_sentence, min_size=1, max_size=12),
    floor=st.sampled_from(FLOORS),
    step_s=st.sampled_from([0.0, 0.1, 1.0, 3600.0, 50_000.0]),
)
def test_typed_random_sentences_give_only_plausible_fixes(
    lines: list[str], floor: dt.date, step_s: float
) -> None:
    run(lines, floor=floor, step_s=step_s)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(_any_fields | _sentence, min_size=1, max_size=8), floor=st.sampled_from(FLOORS)
)
def test_arbitrary_fields_never_escape_the_nmea_error_family(
    lines: list[str], floor: dt.date
) -> None:
    run(lines, floor=floor, step_s=1.0)


@settings(max_examples=200, deadline=None)
@given(
    start=st.datetimes(min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2040, 1, 1)),
    later_s=st.floats(0, 3 * 86400),
    skew_s=st.floats(-6 * 3600, 6 * 3600),
)
def test_a_dateless_epoch_is_dated_within_12_hours_of_the_clock(
    start: dt.datetime, later_s: float, skew_s: float
) -> None:
    """An RMC gives a date; a GGA arrives ``later_s`` of monotonic time afterwards carrying a
    time of day that is off the expected one by up to 6 h either way (out of order, receiver
    restart ...). Its date is the one nearest the expectation: never a day off."""
    t0 = start.replace(microsecond=0, tzinfo=dt.UTC)
    seen = t0 + dt.timedelta(seconds=round(later_s + skew_s))
    asm = FixAssembler(rollover_floor=dt.date(2024, 1, 1), clock=lambda: 0.0)
    asm.feed(
        with_checksum(f"GPRMC,{t0:%H%M%S}.00,A,5130.0000,N,00007.2000,W,1.0,90.0,{t0:%d%m%y},,,A"),
        0.0,
    )
    asm.feed(
        with_checksum(f"GPGGA,{seen:%H%M%S}.00,5130.0000,N,00007.2000,W,1,09,0.9,35.0,M,47.0,M,,"),
        later_s,
    )
    fix = asm.current()
    assert fix is not None
    assert fix.time is not None
    if seen.time() != t0.time():  # else the GGA joins the RMC's epoch (same time of day)
        assert fix.time == seen
