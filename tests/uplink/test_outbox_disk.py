"""The outbox on a full disk (a real, small tmpfs): acknowledgements are still recorded, every
alert is kept (its evidence goes first), and evidence stays within the disk's free space."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from edge.adapters.outbox import Outbox
from tests.adapters.small_fs import fill_disk, small_tmpfs

MB = 1024 * 1024


def payload(seq: int) -> bytes:
    return b'{"alert_id":"u-%d","seq":%d}' % (seq, seq) + b" " * 1500


def test_acknowledgements_are_recorded_on_a_full_disk(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "fs", 8 * MB) as fs:
        db = fs / "outbox.sqlite"
        with Outbox(db, first_seq=1, reserve_bytes=MB) as ob:
            for _ in range(20):
                ob.add(payload, evidence=os.urandom(150_000))
        fill_disk(fs)
        with Outbox(db, reserve_bytes=MB) as ob:  # a restart: the WAL is made afresh
            assert ob.depth() == 20
            assert ob.ack([(s, p) for s in range(1, 21) for p in ("alert", "evidence")]) == 20
            assert ob.depth() == 0
            assert ob.problem is not None
            assert "disk full" in ob.problem
            # the pages the acknowledgements freed take the next alert and its evidence
            seq = ob.add(payload, evidence=os.urandom(150_000))
            assert [i.seq for i in ob.pending()] == [seq]
        (fs / "filler").unlink()
        with Outbox(db, reserve_bytes=MB) as ob:  # room again: the spare is back, all clear
            assert (fs / "outbox.sqlite.spare").stat().st_size == MB
            assert ob.problem is None


def test_every_alert_is_kept_while_the_disk_fills(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "fs", 12 * MB) as fs:
        db = fs / "outbox.sqlite"
        # the quota (512 MiB) is far above the disk: evidence must follow the free space
        with Outbox(db, first_seq=1, reserve_bytes=MB, fsync=False) as ob:
            seqs = [ob.add(payload, evidence=os.urandom(150_000)) for _ in range(60)]
            items = ob.pending(limit=1000)
            assert [i.seq for i in items] == seqs  # all 60 alerts
            st = ob.stats()
            assert st["alerts_pruned"] == 0
            assert st["evidence_pruned"] > 0
            kept = [i.seq for i in items if i.evidence is not None]
            assert kept
            assert kept == seqs[-len(kept) :]  # the newest evidence is kept
            assert shutil.disk_usage(fs).free >= MB - 600_000  # the reserve held (~ a WAL)
            # and the disk filled by someone else: still an alert for every hit
            fill_disk(fs)
            more = [ob.add(payload, evidence=os.urandom(150_000)) for _ in range(5)]
            assert [i.seq for i in ob.pending(limit=1000)] == seqs + more
            assert ob.stats()["alerts_pruned"] == 0
