"""GPS plausibility (issue 17, item 4): one regression test per implausible input that used to
be taken as a real fix or time, and what the unit does with it now."""

from __future__ import annotations

import datetime as dt

import pytest

from edge.core import nmea
from edge.core.errors import NmeaError
from edge.core.gps import Fix, FixAssembler
from edge.core.nmea import with_checksum
from tests.gps.timing import alert_time

FLOOR = dt.date(2000, 1, 1)
NOW_WALL_S = 1_767_225_600.0  # 2026-01-01T00:00:00Z
LONDON = "5130.0000,N,00007.2000,W"


def feed(asm: FixAssembler, bodies: list[str], t: float = 0.0) -> list[Fix]:
    out = [asm.feed(with_checksum(b), t) for b in bodies]
    return [f for f in out if f is not None]


def rejected(asm: FixAssembler) -> int:
    s = asm.stats
    return s["bad_checksum"] + s["no_checksum"] + s["malformed"] + s.get("implausible", 0)


# --- ZDA year 9999 -------------------------------------------------------------------------


def test_zda_year_9999_is_rejected_and_alert_time_never_overflows() -> None:
    asm = FixAssembler(rollover_floor=FLOOR)
    feed(
        asm,
        [f"GPGGA,235959.50,{LONDON},1,09,0.9,35.0,M,47.0,M,,", "GPZDA,235959.50,31,12,9999,00,00"],
    )
    fix = asm.latest(1.5)
    assert fix is not None
    assert fix.has_position
    when, source = alert_time(fix, now_wall_s=NOW_WALL_S, max_age_s=2.0)  # raised OverflowError
    assert source == "system"
    assert when.year == 2026
    assert fix.time is None
    assert asm.stats["implausible"] == 1
    assert asm.last_error is not None


# --- RMC two-digit year 79 -----------------------------------------------------------------


def test_rmc_year_79_is_not_taken_as_2079() -> None:
    asm = FixAssembler(rollover_floor=FLOOR)
    feed(asm, [f"GPRMC,120000.00,A,{LONDON},10.0,90.0,010179,,,A"])
    fix = asm.current()
    assert fix is None or fix.time is None or fix.time.year < 2079
    assert asm.stats["implausible"] == 1


def test_dates_before_the_gps_epoch_are_rejected_by_the_parser() -> None:
    with pytest.raises(NmeaError):
        nmea.parse_ddmmyy("050180")  # 1980-01-05, a day before GPS time
    assert nmea.parse_ddmmyy("060180") == dt.date(1980, 1, 6)
    with pytest.raises(NmeaError):
        nmea.parse_sentence(with_checksum("GPZDA,120000.00,31,12,1979,00,00"))


# --- leap second outside 23:59:60 at the end of June or December ----------------------------


def test_second_60_at_noon_is_rejected() -> None:
    with pytest.raises(NmeaError):
        nmea.parse_sentence(with_checksum(f"GPGGA,120060.00,{LONDON},1,09,0.9,35.0,M,47.0,M,,"))
    asm = FixAssembler(rollover_floor=FLOOR)
    feed(asm, [f"GPRMC,120060.00,A,{LONDON},10.0,90.0,150317,,,A"])
    assert asm.current() is None
    assert asm.stats["implausible"] == 1


def test_leap_second_only_on_the_last_day_of_june_or_december() -> None:
    real = nmea.parse_sentence(with_checksum(f"GPRMC,235960.00,A,{LONDON},1.0,90.0,311216,,,A"))
    assert isinstance(real, nmea.Rmc)
    assert real.time == nmea.TimeOfDay(23, 59, 60, 0)
    with pytest.raises(NmeaError):
        nmea.parse_sentence(with_checksum(f"GPRMC,235960.00,A,{LONDON},1.0,90.0,150317,,,A"))
    with pytest.raises(NmeaError):
        nmea.parse_sentence(with_checksum("GPZDA,235960.00,15,03,2017,00,00"))
    # a GGA-only epoch at 23:59:60 takes its date from an earlier RMC: 15 March has none
    asm = FixAssembler(rollover_floor=FLOOR)
    feed(
        asm,
        [
            f"GPRMC,235959.00,A,{LONDON},1.0,90.0,150317,,,A",
            f"GPGGA,235960.00,{LONDON},1,09,0.9,35.0,M,47.0,M,,",
        ],
    )
    fix = asm.current()
    assert fix is not None
    assert fix.time is None
    assert fix.reason == "leap_second"
    assert alert_time(fix.aged(0.1), now_wall_s=NOW_WALL_S, max_age_s=2.0)[1] == "system"


# --- simulator / manual / estimated positions -----------------------------------------------


@pytest.mark.parametrize(
    ("faa", "quality", "reason"),
    [
        ("S", 8, "simulator"),
        ("M", 7, "manual"),
        ("E", 6, "estimated"),
    ],
)
def test_rmc_faa_simulator_manual_estimated_are_not_gnss_fixes(
    faa: str, quality: int, reason: str
) -> None:
    asm = FixAssembler(rollover_floor=FLOOR)
    feed(asm, [f"GPRMC,120000.00,A,{LONDON},10.0,90.0,150317,,,{faa}"])
    fix = asm.latest(0.1)
    assert fix is not None
    assert not fix.has_position
    assert fix.lat is None
    assert (fix.mode, fix.quality, fix.reason) == ("none", quality, reason)
    assert fix.to_dict()["quality"] == quality
    assert fix.to_dict()["reason"] == reason
    assert alert_time(fix, now_wall_s=NOW_WALL_S, max_age_s=2.0)[1] == "system"


@pytest.mark.parametrize(("quality", "reason"), [(6, "estimated"), (7, "manual"), (8, "simulator")])
def test_gga_quality_6_7_8_are_not_gnss_fixes(quality: int, reason: str) -> None:
    asm = FixAssembler(rollover_floor=FLOOR)
    feed(
        asm,
        [
            f"GPRMC,120000.00,A,{LONDON},10.0,90.0,150317,,,A",
            f"GPGGA,120000.00,{LONDON},{quality},09,0.9,35.0,M,47.0,M,,",
        ],
    )
    fix = asm.latest(0.1)
    assert fix is not None
    assert not fix.has_position
    assert (fix.mode, fix.quality, fix.reason) == ("none", quality, reason)
    assert alert_time(fix, now_wall_s=NOW_WALL_S, max_age_s=2.0)[1] == "system"
    asm.flush()
    assert asm.stats["not_gnss"] == 1
    assert asm.stats["fixes"] == 0


# --- 100,000 knots -------------------------------------------------------------------------


def test_a_speed_of_100000_knots_is_rejected() -> None:
    asm = FixAssembler(rollover_floor=FLOOR)
    feed(
        asm,
        [
            f"GPRMC,120000.00,A,{LONDON},100000.0,90.0,150317,,,A",
            "GPVTG,90.0,T,,M,100000.0,N,185200.0,K,A",
        ],
    )
    fix = asm.current()
    assert fix is None or fix.speed_mps is None or fix.speed_mps < 600
    assert asm.stats["implausible"] == 2


# --- two talkers far apart in one epoch ------------------------------------------------------


def test_two_talkers_430_km_apart_give_no_position() -> None:
    asm = FixAssembler(rollover_floor=FLOOR)
    feed(
        asm,
        [
            f"GPRMC,120000.00,A,{LONDON},10.0,90.0,150317,,,A",
            # 3.867 deg of latitude north (about 430 km), same time of day, other talker
            "GNGGA,120000.00,5522.0000,N,00007.2000,W,1,09,0.9,35.0,M,47.0,M,,",
        ],
    )
    fix = asm.current()
    assert fix is not None
    assert not fix.has_position
    assert fix.lat is None
    assert fix.reason == "position_conflict"
    asm.flush()
    assert asm.stats["conflicts"] == 1
    assert asm.stats["fixes"] == 0


def test_talkers_that_agree_within_metres_still_give_a_fix() -> None:
    asm = FixAssembler(rollover_floor=FLOOR)
    feed(
        asm,
        [
            f"GPRMC,120000.00,A,{LONDON},10.0,90.0,150317,,,A",
            "GLGGA,120000.00,5130.0010,N,00007.2010,W,1,09,0.9,35.0,M,47.0,M,,",
        ],
    )
    fix = asm.current()
    assert fix is not None
    assert fix.has_position
    assert fix.reason is None


# --- a date-less epoch that steps back across midnight ---------------------------------------


def test_dateless_epoch_stepping_back_across_midnight_keeps_yesterdays_date() -> None:
    asm = FixAssembler(rollover_floor=FLOOR)
    feed(asm, [f"GPRMC,000005.00,A,{LONDON},1.0,90.0,010125,,,A"], 10.0)
    # a late GGA from two seconds before midnight (out of order, no date of its own)
    closed = feed(asm, [f"GPGGA,235958.00,{LONDON},1,09,0.9,35.0,M,47.0,M,,"], 10.1)
    fix = asm.current()
    assert len(closed) == 1
    assert fix is not None
    assert fix.time == dt.datetime(2024, 12, 31, 23, 59, 58, tzinfo=dt.UTC)


def test_dateless_stream_across_midnight_is_dated_by_elapsed_time() -> None:
    asm = FixAssembler(rollover_floor=FLOOR)
    feed(asm, [f"GPRMC,100000.00,A,{LONDON},1.0,90.0,311224,,,A"], 0.0)
    # 14 hours of GGA-only epochs, one every 10 minutes, then past midnight
    t = 0.0
    for minutes in range(10, 14 * 60 + 1, 10):
        t = minutes * 60.0
        hh, mm = divmod(10 * 60 + minutes, 60)
        feed(asm, [f"GPGGA,{hh % 24:02d}{mm:02d}00.00,{LONDON},1,09,0.9,35.0,M,47.0,M,,"], t)
    fix = asm.current()
    assert fix is not None
    assert fix.time == dt.datetime(2025, 1, 1, 0, 0, 0, tzinfo=dt.UTC)


def test_dateless_epoch_after_a_long_silence_uses_the_monotonic_clock() -> None:
    asm = FixAssembler(rollover_floor=FLOOR)
    feed(asm, [f"GPRMC,100000.00,A,{LONDON},1.0,90.0,311224,,,A"], 0.0)
    # the receiver is silent for 20 h (e.g. no sky, no output); next it sends a GGA at 06:00
    feed(asm, [f"GPGGA,060000.00,{LONDON},1,09,0.9,35.0,M,47.0,M,,"], 20 * 3600.0)
    fix = asm.current()
    assert fix is not None
    assert fix.time == dt.datetime(2025, 1, 1, 6, 0, 0, tzinfo=dt.UTC)


# --- hostile input is counted, never raised --------------------------------------------------


def test_hostile_lines_are_counted_and_the_assembler_keeps_going() -> None:
    asm = FixAssembler(rollover_floor=FLOOR)
    hostile = [
        "GPZDA,120000.00,31,12,9999,00,00",
        f"GPRMC,120000.00,A,{LONDON},10.0,90.0,010179,,,A",
        f"GPGGA,120060.00,{LONDON},1,09,0.9,35.0,M,47.0,M,,",
        f"GPRMC,120000.00,A,{LONDON},100000.0,90.0,150317,,,A",
    ]
    feed(asm, hostile)
    assert rejected(asm) == len(hostile)
    assert asm.stats["errors"] == 0
    feed(asm, [f"GPRMC,120001.00,A,{LONDON},10.0,90.0,150317,,,A"])
    fix = asm.current()
    assert fix is not None
    assert fix.has_position
    assert fix.time == dt.datetime(2017, 3, 15, 12, 0, 1, tzinfo=dt.UTC)


# --- the date window and two dates in one epoch ---------------------------------------------


def test_the_date_window_follows_the_rollover_floor() -> None:
    # one 1024-week window after the later of the floor and the software's own date
    assert FixAssembler(rollover_floor=dt.date(1980, 1, 6)).latest_date == dt.date(2043, 8, 17)
    assert FixAssembler().latest_date == dt.date(2043, 8, 17)
    assert FixAssembler(rollover_floor=dt.date(2040, 1, 1)).latest_date == (
        dt.date(2040, 1, 1) + dt.timedelta(weeks=1024)
    )
    asm = FixAssembler(rollover_floor=dt.date(2024, 1, 1))
    feed(asm, [f"GPRMC,120000.00,A,{LONDON},1.0,90.0,170843,,,A"])  # last day accepted
    feed(asm, [f"GPRMC,120001.00,A,{LONDON},1.0,90.0,180843,,,A"])  # one day too late
    assert asm.stats["implausible"] == 1
    assert asm.stats["sentences_ok"] == 1


def test_two_dates_in_one_epoch_keep_the_position_but_not_the_time() -> None:
    asm = FixAssembler(rollover_floor=FLOOR)
    feed(
        asm, [f"GPRMC,120000.00,A,{LONDON},1.0,90.0,150317,,,A", "GNZDA,120000.00,16,03,2017,00,00"]
    )
    fix = asm.current()
    assert fix is not None
    assert fix.has_position
    assert fix.time is None
    assert fix.reason == "date_conflict"
    assert alert_time(fix.aged(0.1), now_wall_s=NOW_WALL_S, max_age_s=2.0)[1] == "system"
