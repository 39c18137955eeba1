"""Every real capture in ../shared/data/nmea through our parser, against gpsd's own output.

For every TPV gpsd printed we compare our fix as it stood after the same sentence: mode, time,
latitude/longitude within 1e-6 deg, speed and track where gpsd reports them. Each difference
must have one of the documented, checked reasons in ``gpsd_chk`` (where we differ on purpose).
Sentences gpsd dropped (not echoed in the .chk) must be dropped by us too.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pytest

from edge.core import nmea
from edge.core.errors import NmeaError
from tests.gps.gpsd_chk import REASONS, classify, compare, walk

FLOOR = dt.date(1990, 1, 1)  # the captures go back to 2005; see test_week_rollover_* for 2019
KNOWN_UNEXPLAINED = {
    # triton400 prints GLL before GGA; gpsd raises this GLL-only moment to 3D from the previous
    # cycle's GGA while our previous epoch was still 2D at that point. One report of 1,703.
    ("triton400.log.chk", 23, "mode"),
}


@pytest.mark.slow
def test_every_gpsd_position_report_matches_or_says_why(nmea_dir: Path) -> None:
    logs = sorted(nmea_dir.glob("*.log.chk"))
    assert len(logs) == 36
    total = agree = 0
    reasons: Counter[str] = Counter()
    unexplained: list[str] = []
    for chk in logs:
        reports, _ = walk(chk, rollover_floor=FLOOR)
        for r in reports:
            total += 1
            diffs = compare(r)
            agree += not diffs
            for key, text in diffs.items():
                if key in ("lat", "lon"):
                    unexplained.append(f"{chk.name}:{r.line_no} {key} {text}")
                    continue
                why = classify(r, key)
                if why is None and (chk.name, r.line_no, key) not in KNOWN_UNEXPLAINED:
                    unexplained.append(f"{chk.name}:{r.line_no} {key} {text} {r.sentence}")
                reasons[why or "known"] += 1
    print(
        f"\n{total} gpsd TPV reports, {agree} agree exactly; differences by reason: {dict(reasons)}"
    )
    assert total > 1500
    assert set(reasons) <= {*REASONS, "known"}
    assert not unexplained, "\n".join(unexplained[:20])
    assert agree / total > 0.75


def test_sentences_gpsd_drops_we_drop(nmea_dir: Path) -> None:
    kept_by_us: list[str] = []
    dropped = 0
    for log in sorted(nmea_dir.glob("*.log")):
        chk = log.with_name(log.name + ".chk")
        echoed = {x for x in chk.read_bytes().decode("latin-1").splitlines() if x[:1] in "$!"}
        for raw in log.read_bytes().decode("latin-1").splitlines():
            if not raw.strip() or raw.startswith("#") or raw in echoed:
                continue
            if raw.rfind("$") > 0 and raw[raw.rfind("$") :] in echoed:
                continue  # junk or a cut-off sentence before '$': gpsd and we keep what follows
            dropped += 1
            try:
                record = nmea.parse_sentence(raw)
            except NmeaError:
                continue
            if record is not None:
                kept_by_us.append(f"{log.name}: {raw!r}")
    assert dropped >= 75
    assert not kept_by_us, kept_by_us


def test_sentences_gpsd_accepts_we_accept(nmea_dir: Path) -> None:
    rejected: list[str] = []
    for chk in sorted(nmea_dir.glob("*.log.chk")):
        for raw in chk.read_bytes().decode("latin-1").splitlines():
            if raw.startswith("$"):
                try:
                    nmea.parse_sentence(raw)
                except NmeaError as e:
                    rejected.append(f"{chk.name}: {raw} ({e})")
    # On purpose: the Telit HE910 RMC with date "2208-1" (year -1). gpsd keeps the position and
    # drops the date; a sentence with a corrupt field is not trusted for its position either.
    assert rejected == [
        "april6_2019.log.chk: $GPRMC,000231.099,A,4829.0005,N,00022.0015,E,0.15,212.28,2208-1,"
        ",,A*73 (date: malformed '2208-1')"
    ]


def test_week_rollover_capture_is_moved_to_2019(nmea_dir: Path) -> None:
    reports, asm = walk(nmea_dir / "april6_2019.log.chk", rollover_floor=dt.date(2019, 1, 1))
    last = reports[-1]
    # gpsd prints 1999-08-22 (the receiver's rolled-over date); we correct it by 1024 weeks
    assert last.tpv["time"].startswith("1999-08-22")
    assert last.ours is not None
    assert last.ours.time is not None
    assert last.ours.time.date() == dt.date(2019, 4, 7)
    assert asm.stats["rollover_corrected"] == 1


@pytest.mark.parametrize("name", ["firefly-II.log", "com-1289.log", "isync.log"])
def test_bad_checksums_in_real_logs_are_counted(nmea_dir: Path, name: str) -> None:
    from edge.core.gps import FixAssembler

    asm = FixAssembler(rollover_floor=FLOOR)
    for raw in (nmea_dir / name).read_bytes().decode("latin-1").splitlines():
        if not raw.startswith("#"):
            asm.feed(raw)
    assert asm.stats["bad_checksum"] + asm.stats["malformed"] >= 1
    assert asm.stats["fixes"] >= 1
