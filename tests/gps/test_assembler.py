"""The fix assembler, the GPS state and the alert-time rule (pure, fake monotonic time)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.core import nmea
from edge.core.gps import Fix, FixAssembler, format_utc, gps_state
from edge.core.nmea import with_checksum
from tests.gps.timing import alert_time

EPOCH_1 = [
    "$GNRMC,000941.00,A,4404.13387,N,12118.85628,W,0.029,,100117,,,A*7D",
    "$GNVTG,,T,,M,0.029,N,0.053,K,A*30",
    "$GNGGA,000941.00,4404.13387,N,12118.85628,W,1,12,1.01,1144.8,M,-21.4,M,,*4D",
    "$GNGSA,A,3,23,09,16,07,26,03,27,22,,,,,1.71,1.01,1.38*1B",
    "$GNGLL,4404.13387,N,12118.85628,W,000941.00,A,A*69",
]
NEXT = "$GNRMC,000942.00,A,4404.13401,N,12118.85633,W,0.041,,100117,,,A*73"
FLOOR = dt.date(2000, 1, 1)


def feed(asm: FixAssembler, lines: list[str], t: float = 0.0) -> list[Fix]:
    return [f for f in (asm.feed(x, t) for x in lines) if f is not None]


def test_one_epoch_merges_into_one_3d_fix() -> None:
    asm = FixAssembler(rollover_floor=FLOOR, clock=lambda: 0.0)
    assert feed(asm, EPOCH_1, 10.0) == []
    closed = asm.feed(NEXT, 10.5)
    assert closed is not None
    d = closed.aged(11.0).to_dict()
    assert d == {
        "time": "2017-01-10T00:09:41.000Z",
        "lat": pytest.approx(44.068897833),
        "lon": pytest.approx(-121.314271333),
        "alt_m": 1144.8,
        "speed_mps": pytest.approx(0.029 * 1852 / 3600, abs=1e-3),
        "track_deg": None,
        "mode": "3d",
        "quality": 1,
        "hdop": 1.01,
        "sats": 12,
        "age_s": 1.0,
        "reason": None,
    }
    assert asm.stats["bad_checksum"] == 0
    assert asm.stats["epochs"] == 1


def test_invalid_epoch_has_no_position_even_if_another_sentence_has_one() -> None:
    asm = FixAssembler(rollover_floor=FLOOR)
    feed(
        asm,
        [
            with_checksum("GPRMC,125106,V,3854.5087,N,07726.4523,W,0.0,0.0,241011,10.5,W,S"),
            with_checksum("GPGGA,125106,3854.5087,N,07726.4523,W,8,10,2.0,268.8,M,-33.9,M,,"),
        ],
    )
    fix = asm.current()
    assert fix is not None
    assert fix.mode == "none"
    assert fix.lat is None
    assert fix.lon is None
    assert fix.to_dict()["lat"] is None
    assert not fix.has_position


def test_gsa_2d_and_rmc_only_epochs_are_2d() -> None:
    asm = FixAssembler(rollover_floor=FLOOR)
    feed(asm, [with_checksum("GPRMC,120000,A,4221.3871,N,01322.0800,E,000.0,000.0,150305,,")])
    fix = asm.current()
    assert fix is not None
    assert fix.mode == "2d"
    feed(
        asm,
        [
            with_checksum("GPGGA,120000,4221.3871,N,01322.0800,E,1,05,3.1,746.1,M,44.2,M,,"),
            with_checksum("GPGSA,A,2,01,03,,14,,,,,,,,,3.1,3.1,"),
        ],
    )
    fix = asm.current()
    assert fix is not None
    assert fix.mode == "2d"
    assert fix.alt_m is None


def test_gga_time_takes_the_date_from_rmc_and_rolls_over_midnight() -> None:
    asm = FixAssembler(rollover_floor=FLOOR)
    feed(
        asm,
        [
            with_checksum("GPRMC,235959,A,4221.3871,N,01322.0800,E,0,0,311224,,"),
            with_checksum("GPGGA,000000,4221.3871,N,01322.0800,E,1,05,3.1,746.1,M,44.2,M,,"),
        ],
    )
    fix = asm.current()
    assert fix is not None
    assert fix.time == dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def test_week_rollover_date_is_corrected() -> None:
    asm = FixAssembler(rollover_floor=dt.date(2019, 1, 1))
    feed(asm, ["$GPRMC,000231.42,A,4829.0005,N,00022.0016,E,0.16,212.28,220899,,,A*59"])
    fix = asm.current()
    assert fix is not None
    assert fix.time is not None
    assert fix.time.date() == dt.date(1999, 8, 22) + dt.timedelta(weeks=1024)
    assert asm.stats["rollover_corrected"] == 1


def test_bad_lines_are_counted_and_lose_nothing() -> None:
    asm = FixAssembler(rollover_floor=FLOOR)
    feed(asm, EPOCH_1[:2])
    asm.feed(EPOCH_1[2][:-2] + "00")  # bad checksum
    asm.feed(EPOCH_1[2][:-3])  # no checksum
    asm.feed(with_checksum("GPGGA,garbage"))  # malformed
    asm.feed("")  # blank: not even a line
    feed(asm, EPOCH_1[2:])
    assert asm.stats["bad_checksum"] == 1
    assert asm.stats["no_checksum"] == 1
    assert asm.stats["malformed"] == 1
    assert asm.stats["sentences_ok"] == 5
    fix = asm.current()
    assert fix is not None
    assert fix.mode == "3d"


def test_latest_prefers_the_last_position_and_ages_it() -> None:
    now = [0.0]
    asm = FixAssembler(rollover_floor=FLOOR, clock=lambda: now[0])
    assert asm.latest() is None
    feed(asm, EPOCH_1, 5.0)
    # the receiver loses the fix: later epochs say V
    asm.feed(with_checksum("GNRMC,000942.00,V,,,,,,,100117,,,N"), 6.0)
    asm.feed(with_checksum("GNRMC,000943.00,V,,,,,,,100117,,,N"), 7.0)
    now[0] = 9.0
    fix = asm.latest()
    assert fix is not None
    assert fix.mode == "3d"
    assert fix.age_s == pytest.approx(4.0)
    assert gps_state(fix, is_receiving=True, max_age_s=5) == "fix_3d"
    assert gps_state(fix, is_receiving=True, max_age_s=2) == "stale"
    assert gps_state(None, is_receiving=True, max_age_s=2) == "no_fix"
    assert gps_state(None, is_receiving=False, max_age_s=2) == "no_receiver"


def test_alert_time_uses_a_fresh_fix_else_the_system_clock() -> None:
    asm = FixAssembler(rollover_floor=FLOOR)
    feed(asm, EPOCH_1, 0.0)
    fix = asm.latest(0.25)
    assert fix is not None
    when, src = alert_time(fix, now_wall_s=1e9, max_age_s=2.0)
    assert src == "gps"
    assert format_utc(when) == "2017-01-10T00:09:41.250Z"
    old = asm.latest(10.0)
    when2, src2 = alert_time(old, now_wall_s=1e9, max_age_s=2.0)
    assert src2 == "system"
    assert when2 == dt.datetime.fromtimestamp(1e9, tz=dt.UTC)
    assert alert_time(None, now_wall_s=0.0, max_age_s=2.0)[1] == "system"


# --- property: a corrupted sentence never moves the fix ------------------------------------

_GOOD = [*EPOCH_1, NEXT]


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(
    idx=st.integers(0, len(_GOOD) - 1),
    pos=st.integers(1, 70),
    ch=st.characters(min_codepoint=32, max_codepoint=126),
)
def test_a_sentence_with_a_corrupted_byte_never_makes_a_fix(idx: int, pos: int, ch: str) -> None:
    line = _GOOD[idx]
    p = min(pos, len(line) - 4)  # inside the body, before '*hh'
    bad = line[:p] + ch + line[p + 1 :]
    asm = FixAssembler(rollover_floor=FLOOR)
    asm.feed(bad)
    if bad == line or nmea.checksum(bad[1:-3]) == int(bad[-2:], 16):
        return  # not a corruption the checksum can see (same char, or a colliding change)
    assert asm.current() is None
    assert asm.latest() is None
    assert asm.stats["bad_checksum"] + asm.stats["malformed"] + asm.stats["no_checksum"] == 1
