"""The pure NMEA parser: checksums, every sentence type, units, empty fields, bad input."""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.core import nmea
from edge.core.errors import NmeaChecksumError, NmeaError, PhonewatchError


def test_checksum_of_a_real_sentence() -> None:
    line = "$GNRMC,000941.00,A,4404.13387,N,12118.85628,W,0.029,,100117,,,A*7D"
    assert nmea.checksum(line[1:-3]) == 0x7D
    assert nmea.with_checksum(line[1:-3]) == line


def test_rmc_valid_with_units_and_hemispheres() -> None:
    r = nmea.parse_sentence(
        nmea.with_checksum(
            "GPRMC,235724.02,A,4808.9978,S,01135.0800,W,010.0,123.4,060419,003.0,E,A"
        )
    )
    assert isinstance(r, nmea.Rmc)
    assert r.is_valid
    assert r.talker == "GP"
    assert r.lat == pytest.approx(-(48 + 8.9978 / 60), abs=1e-12)
    assert r.lon == pytest.approx(-(11 + 35.08 / 60), abs=1e-12)
    assert r.speed_mps == pytest.approx(10 * 1852 / 3600)
    assert r.track_deg == 123.4
    assert r.date == dt.date(2019, 4, 6)
    assert r.time == nmea.TimeOfDay(23, 57, 24, 20_000)


def test_rmc_status_v_and_faa_n_are_not_valid() -> None:
    r = nmea.parse_sentence("$GPRMC,,V,,,,,,,,,,N*53")
    assert isinstance(r, nmea.Rmc)
    assert not r.is_valid
    assert r.lat is None
    assert r.time is None
    r2 = nmea.parse_sentence(
        nmea.with_checksum("GNRMC,120000.00,A,4404.1,N,12118.8,W,0.0,,100117,,,N")
    )
    assert isinstance(r2, nmea.Rmc)
    assert not r2.is_valid


def test_gga_fields_quality_altitude_geoid() -> None:
    r = nmea.parse_sentence(
        "$GNGGA,000941.00,4404.13387,N,12118.85628,W,1,12,1.01,1144.8,M,-21.4,M,,*4D"
    )
    assert isinstance(r, nmea.Gga)
    assert (r.quality, r.sats, r.hdop, r.alt_m, r.geoid_sep_m) == (1, 12, 1.01, 1144.8, -21.4)
    assert r.lat == pytest.approx(44.068897833, abs=1e-9)
    assert r.lon == pytest.approx(-121.314271333, abs=1e-9)
    empty = nmea.parse_sentence(nmea.with_checksum("GPGGA,012530.562,,,,,0,00,,,M,,M,,"))
    assert isinstance(empty, nmea.Gga)
    assert empty.quality == 0
    assert empty.lat is None


def test_gsa_dops_and_prns() -> None:
    r = nmea.parse_sentence("$GNGSA,A,3,23,09,16,07,26,03,27,22,,,,,1.71,1.01,1.38*1B")
    assert isinstance(r, nmea.Gsa)
    assert r.mode == 3
    assert r.prns == (23, 9, 16, 7, 26, 3, 27, 22)
    assert (r.pdop, r.hdop, r.vdop) == (1.71, 1.01, 1.38)


def test_vtg_gll_zda_gns() -> None:
    vtg = nmea.parse_sentence("$GPVTG,279.46,T,,,1.73,N,3.20,K,A*7A")
    assert isinstance(vtg, nmea.Vtg)
    assert vtg.track_deg == 279.46
    assert vtg.speed_mps == pytest.approx(1.73 * 1852 / 3600)
    gll = nmea.parse_sentence("$GNGLL,4404.13387,N,12118.85628,W,000941.00,A,A*69")
    assert isinstance(gll, nmea.Gll)
    assert gll.is_valid
    assert gll.time == nmea.TimeOfDay(0, 9, 41, 0)
    zda = nmea.parse_sentence("$GNZDA,000941.00,10,01,2017,00,00*70")
    assert isinstance(zda, nmea.Zda)
    assert zda.date == dt.date(2017, 1, 10)
    gns = nmea.parse_sentence(
        nmea.with_checksum("GNGNS,053233.438,3114.8821,N,12135.2428,E,ANNA,07,1.2,167.2,8.3,,0000")
    )
    assert isinstance(gns, nmea.Gns)
    assert gns.is_valid
    assert gns.alt_m == 167.2
    gns_n = nmea.parse_sentence(nmea.with_checksum("GNGNS,053233.438,,,,,NNNN,00,,,,,"))
    assert isinstance(gns_n, nmea.Gns)
    assert not gns_n.is_valid


@pytest.mark.parametrize("talker", ["GP", "GN", "GL", "GA", "GB", "BD", "GQ"])
def test_every_talker(talker: str) -> None:
    r = nmea.parse_sentence(
        nmea.with_checksum(f"{talker}GLL,5155.55359,N,00434.65730,E,085515.00,A,A")
    )
    assert isinstance(r, nmea.Gll)
    assert r.talker == talker


def test_unused_and_proprietary_sentences_are_none() -> None:
    assert (
        nmea.parse_sentence("$GPGSV,3,3,12,24,58,220,,26,17,054,,29,20,063,,30,60,311,44*78")
        is None
    )
    assert nmea.parse_sentence(nmea.with_checksum("PGRME,19.9,M,50.0,M,53.8,M")) is None


def test_bad_and_missing_checksum() -> None:
    good = "$GNZDA,000941.00,10,01,2017,00,00*70"
    with pytest.raises(NmeaChecksumError) as e:
        nmea.parse_sentence(good[:-2] + "71")
    assert isinstance(e.value, PhonewatchError)
    assert isinstance(e.value, ValueError)
    with pytest.raises(NmeaChecksumError):
        nmea.parse_sentence(good[:-3])
    assert isinstance(nmea.parse_sentence(good[:-3], allow_no_checksum=True), nmea.Zda)


@pytest.mark.parametrize(
    "body",
    [
        "GPGGA,000941.00,9104.1,N,00000.0,E,1,08,1.0,1.0,M,0,M,,",  # latitude > 90
        "GPGGA,000941.00,4404.1,N,18100.0,E,1,08,1.0,1.0,M,0,M,,",  # longitude > 180
        "GPGGA,000941.00,4460.1,N,00000.0,E,1,08,1.0,1.0,M,0,M,,",  # 60 minutes
        "GPGGA,000941.00,4404.1,X,00000.0,E,1,08,1.0,1.0,M,0,M,,",  # hemisphere
        "GPGGA,250941.00,4404.1,N,00000.0,E,1,08,1.0,1.0,M,0,M,,",  # hour 25
        "GPGGA,000941.00,4404.1,N,,E,1,08,1.0,1.0,M,0,M,,",  # half a position
        "GPRMC,000231.099,A,4829.0005,N,00022.0015,E,0.15,212.28,2208-1,,,A",  # Telit "-1" year
        "GPRMC,000231.099,A,4829.0005,N,00022.0015,E,0.15,212.28,310299,,,A",  # 31 February
        "GPGGA,000941.00,4404.1,N",  # truncated
        "GPGGA,000941.00,4404.1,N,00000.0,E,1,08,x.0,1.0,M,0,M,,",  # not a number
    ],
)
def test_malformed_sentences_are_rejected(body: str) -> None:
    with pytest.raises(NmeaError):
        nmea.parse_sentence(nmea.with_checksum(body))


def test_two_digit_years_and_leap_second() -> None:
    assert nmea.parse_ddmmyy("220899") == dt.date(1999, 8, 22)
    assert nmea.parse_ddmmyy("060419") == dt.date(2019, 4, 6)
    assert nmea.parse_time("235960.5") == nmea.TimeOfDay(23, 59, 60, 500_000)


def test_overflowed_line_keeps_the_last_sentence() -> None:
    r = nmea.parse_sentence("$GPGGA,030130$GPGLL,2638.1728,N,08011.3893,W,030131.000,A,A*41")
    assert isinstance(r, nmea.Gll)
    assert r.lat == pytest.approx(26 + 38.1728 / 60)


# --- property tests: nothing crashes, nothing leaves the globe, no fix from a bad checksum ----

_SAMPLES = [
    "GNRMC,000941.00,A,4404.13387,N,12118.85628,W,0.029,,100117,,,A",
    "GNGGA,000941.00,4404.13387,N,12118.85628,W,1,12,1.01,1144.8,M,-21.4,M,,",
    "GNGSA,A,3,23,09,16,07,26,03,27,22,,,,,1.71,1.01,1.38",
    "GPVTG,279.46,T,,,1.73,N,3.20,K,A",
    "GNGLL,4404.13387,N,12118.85628,W,000941.00,A,A",
    "GNZDA,000941.00,10,01,2017,00,00",
    "GNGNS,053233.438,3114.8821,N,12135.2428,E,ANNA,07,1.2,167.2,8.3,,0000",
]
_ALPHABET = st.sampled_from([*"0123456789.,-+NSEWAVMTKN*$ \x00\xff", "", ",,", "99999"])


def _check_record(r: object) -> None:
    lat, lon = getattr(r, "lat", None), getattr(r, "lon", None)
    assert lat is None or -90.0 <= lat <= 90.0
    assert lon is None or -180.0 <= lon <= 180.0
    speed = getattr(r, "speed_mps", None)
    assert speed is None or speed >= 0


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(
    base=st.sampled_from(_SAMPLES),
    pos=st.integers(0, 90),
    junk=st.lists(_ALPHABET, max_size=4),
    fix_checksum=st.booleans(),
)
def test_mutated_sentences_never_crash_or_leave_the_globe(
    base: str, pos: int, junk: list[str], fix_checksum: bool
) -> None:
    p = min(pos, len(base))
    body = base[:p] + "".join(junk) + base[p + len(junk) :]
    line = nmea.with_checksum(body) if fix_checksum else f"${body}*{nmea.checksum(base):02X}"
    try:
        r = nmea.parse_sentence(line)
    except NmeaError:
        return
    _check_record(r)
    if not fix_checksum and body != base and nmea.checksum(body) != nmea.checksum(base):
        pytest.fail(f"accepted a sentence with a wrong checksum: {line!r}")


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120) | st.binary(max_size=120))
def test_random_input_never_crashes(data: str | bytes) -> None:
    for candidate in (data, "$" + data if isinstance(data, str) else b"$" + data):
        with contextlib.suppress(NmeaError):
            _check_record(nmea.parse_sentence(candidate))
