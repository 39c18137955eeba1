"""Sequence numbers never go backwards on a unit, whatever happens to the outbox file; a corrupt
outbox is kept aside and replaced, and the unit says so (issue 17, item 3)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from edge.adapters.outbox import SEQ_RESERVE_BLOCK, Outbox
from edge.core.clock import ManualClock


def payload(seq: int) -> bytes:
    return b'{"alert_id":"u-%d","seq":%d}' % (seq, seq)


def clock_at(wall_s: float) -> ManualClock:
    """A clock standing still at ``wall_s`` (monotonic time 0)."""
    return ManualClock(0.0, wall_offset_s=wall_s)


def remove_db(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


@pytest.mark.parametrize("fate", ["deleted", "zero-length", "older copy"])
def test_a_lost_or_replaced_outbox_never_numbers_below_what_was_used(
    tmp_path: Path, fate: str
) -> None:
    db = tmp_path / "outbox.sqlite"
    with Outbox(db) as ob:  # numbered from the real clock
        first = [ob.add(payload, evidence=None) for _ in range(3)]
    shutil.copy(db, tmp_path / "backup.sqlite")
    # a burst: more alerts than seconds have passed since the outbox was made (for the older
    # copy: past the reservation the copy knows of)
    n = 12 if fate != "older copy" else SEQ_RESERVE_BLOCK + 2
    with Outbox(db, fsync=fate != "older copy") as ob:
        used = first + [ob.add(payload, evidence=b"J") for _ in range(n)]
    remove_db(db)
    if fate == "zero-length":
        db.write_bytes(b"")
    elif fate == "older copy":
        shutil.copy(tmp_path / "backup.sqlite", db)
    with Outbox(db) as ob:
        assert ob.next_seq > max(used)
        assert ob.add(payload, evidence=None) > max(used)


def test_the_sequence_file_carries_numbers_past_a_clock_that_went_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "outbox.sqlite"
    with Outbox(db, clock=clock_at(1_900_000_000.0)) as ob:  # 2030
        used = [ob.add(payload, evidence=None) for _ in range(5)]
    assert used[0] == 1_900_000_000_000  # milliseconds since the epoch
    hwm = tmp_path / "outbox.sqlite.seq"
    assert int(hwm.read_text()) > max(used)
    assert sorted(os.listdir(tmp_path)) == [
        "outbox.sqlite",
        "outbox.sqlite.seq",
        "outbox.sqlite.spare",
    ]
    remove_db(db)
    # the outbox is gone and the clock is back in 2025 (no RTC, no NTP yet)
    with Outbox(db, clock=clock_at(1_750_000_000.0)) as ob:
        assert ob.add(payload, evidence=None) > max(used)
        reopened_at = ob.next_seq
    with Outbox(db, clock=clock_at(1_750_000_000.0)) as ob:  # an intact outbox counts on
        assert ob.next_seq == reopened_at
    # a garbled sequence file is ignored (logged) and rewritten; the outbox's counter stands
    hwm.write_bytes(b"\x00garbage")
    with (
        caplog.at_level(logging.WARNING, logger="edge.adapters.outbox"),
        Outbox(db, clock=clock_at(1_750_000_000.0)) as ob,
    ):
        assert ob.next_seq == reopened_at
    assert "sequence file" in caplog.text
    assert int(hwm.read_text()) > reopened_at


def test_reservations_are_extended_before_they_run_out(tmp_path: Path) -> None:
    db = tmp_path / "outbox.sqlite"
    with Outbox(db, first_seq=1, fsync=False) as ob:
        used = [ob.add(payload, evidence=None) for _ in range(SEQ_RESERVE_BLOCK + 5)]
    assert used == list(range(1, SEQ_RESERVE_BLOCK + 6))
    assert int((tmp_path / "outbox.sqlite.seq").read_text()) > max(used)
    remove_db(db)
    with Outbox(db, first_seq=1) as ob:
        assert ob.next_seq > max(used)


@pytest.mark.parametrize("damage", ["garbage header", "truncated"])
def test_a_corrupt_outbox_is_kept_aside_and_a_fresh_one_continues_the_sequence(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "outbox.sqlite"
    with Outbox(db, clock=clock_at(1_800_000_000.0)) as ob:
        used = [ob.add(payload, evidence=b"J" * 50_000) for _ in range(4)]
        assert ob.problem is None
    data = db.read_bytes()
    if damage == "garbage header":
        db.write_bytes(b"\xde\xad\xbe\xef" * 64 + data[256:])
    else:
        db.write_bytes(data[: len(data) // 3])
    with caplog.at_level(logging.ERROR, logger="edge.adapters.outbox"):
        ob = Outbox(db, clock=clock_at(1_700_000_000.0))  # and the clock went back, too
    with ob:
        assert ob.depth() == 0
        seq = ob.add(payload, evidence=None)
        assert seq > max(used)
        kept = sorted(p.name for p in tmp_path.glob("outbox.sqlite.corrupt-*"))
        assert kept
        assert kept[0].startswith("outbox.sqlite.corrupt-20231114T221320Z")
        assert ob.problem is not None
        assert "corrupt" in ob.problem
        assert kept[0] in ob.problem
        assert f"started fresh at seq {seq}" in ob.problem
        assert ob.problem in caplog.text
    # the reason stays visible across restarts while the kept file is there ...
    with Outbox(db) as ob:
        assert ob.problem is not None
        assert kept[0] in ob.problem
    # ... and clears once someone has taken the kept file away
    for name in kept:
        (tmp_path / name).unlink()
    with Outbox(db) as ob:
        assert ob.problem is None
