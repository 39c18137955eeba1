"""The durable outbox: sequence numbers, order, acknowledgement, quota, crashes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edge.adapters.outbox import Outbox
from edge.core.clock import ManualClock
from edge.core.errors import OutboxError

REPO = Path(__file__).resolve().parents[2]


def payload(seq: int) -> bytes:
    return b'{"alert_id":"u-%d","seq":%d}' % (seq, seq)


def clock_at(wall_s: float) -> ManualClock:
    """A clock standing still at ``wall_s`` (monotonic time 0)."""
    return ManualClock(0.0, wall_offset_s=wall_s)


def test_sequence_persists_across_reopen_and_is_never_reused(tmp_path: Path) -> None:
    db = tmp_path / "o.sqlite"
    with Outbox(db, first_seq=1) as ob:
        assert [ob.add(payload, evidence=None) for _ in range(3)] == [1, 2, 3]
        ob.ack([(1, "alert"), (2, "alert"), (3, "alert")])
        assert ob.depth() == 0
    with Outbox(db, first_seq=500) as ob:  # an existing outbox keeps its own counter
        assert ob.next_seq == 4
        assert ob.add(payload, evidence=b"jpeg") == 4
        assert ob.pending()[0].alert_id == "u-4"


@pytest.mark.slow
def test_a_new_outbox_numbers_from_the_clock_so_a_replaced_one_is_never_reused(
    tmp_path: Path,
) -> None:
    from edge.adapters.outbox import SEQ_FLOOR_MIN, first_seq_for_new_outbox

    clock = clock_at(1_800_000_000.25)
    with Outbox(tmp_path / "first.sqlite", clock=clock) as ob:
        first = [ob.add(payload, evidence=None) for _ in range(3)]
    assert first == [1_800_000_000_250, 1_800_000_000_251, 1_800_000_000_252]
    # The storage is replaced (a new folder, no sequence file) 10 ms later: numbering resumes
    # above the old outbox's numbers, because it used fewer than one number per millisecond.
    clock.advance(0.01)
    with Outbox(tmp_path / "new" / "replacement.sqlite", clock=clock) as ob:
        assert ob.next_seq > first[-1]
        assert ob.add(payload, evidence=None) == ob.next_seq - 1
    assert first_seq_for_new_outbox(1_800_000_000.7) == 1_800_000_000_700
    # a clock that has not been set yet (a Pi without RTC boots in 1970) still starts high
    assert first_seq_for_new_outbox(0.0) == SEQ_FLOOR_MIN
    with pytest.raises(OutboxError, match="first_seq"):
        Outbox(tmp_path / "bad.sqlite", first_seq=0)


def test_pending_in_order_and_deleted_only_when_every_part_acked(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", first_seq=1) as ob:
        for i in range(5):
            ob.add(payload, evidence=b"E%d" % i)
        ob.add(payload, evidence=None)
        items = ob.pending()
        assert [i.seq for i in items] == [1, 2, 3, 4, 5, 6]
        assert items[0].evidence == b"E0"
        assert items[5].evidence is None
        assert [i.seq for i in ob.pending(after_seq=2, limit=2)] == [3, 4]
        assert ob.ack([(1, "alert")]) == 0  # evidence still owed
        assert ob.pending()[0].alert_acked
        assert ob.pending()[0].evidence == b"E0"
        assert ob.ack([(1, "evidence"), (6, "alert"), (99, "alert")]) == 2
        assert [i.seq for i in ob.pending()] == [2, 3, 4, 5]
        assert ob.ack([(2, "evidence")]) == 0  # alert part still owed
        pend = ob.pending()[0]
        assert pend.seq == 2
        assert not pend.alert_acked
        assert pend.evidence is None
        assert ob.ack([(2, "alert"), (2, "alert")]) == 1  # duplicate PUBACKs are harmless
        assert ob.depth() == 3


def test_failed_payload_builder_leaves_no_row_and_no_gap(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", first_seq=1) as ob:
        ob.add(payload, evidence=None)

        def broken(seq: int) -> bytes:
            raise ValueError("cannot sign")

        with pytest.raises(ValueError, match="cannot sign"):
            ob.add(broken, evidence=b"x" * 1000)
        assert ob.add(payload, evidence=None) == 2
        assert ob.depth() == 2
        assert ob.stats()["used_bytes"] == 2 * len(payload(1))


def test_quota_prunes_evidence_first_then_alerts_never_silently(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    quota = 64 * 1024
    ev = b"J" * 20_000
    with Outbox(tmp_path / "o.sqlite", quota_bytes=quota, first_seq=1) as ob:
        with caplog.at_level(logging.WARNING, logger="edge.adapters.outbox"):
            for _ in range(3):
                ob.add(payload, evidence=ev)
            assert ob.stats()["evidence_pruned"] == 0
            ob.add(payload, evidence=ev)  # 4 x 20 kB > 64 KiB
        st = ob.stats()
        assert st["evidence_pruned"] == 1
        assert st["alerts_pruned"] == 0
        assert st["used_bytes"] <= quota
        assert [i.evidence is None for i in ob.pending()] == [True, False, False, False]
        assert "dropped the unsent evidence of alert seq 1" in caplog.text

        # alerts alone overflowing the quota: every evidence goes first, then the oldest alerts
        caplog.clear()
        big = 9000

        def fat(seq: int) -> bytes:
            return payload(seq) + b" " * big

        with caplog.at_level(logging.WARNING, logger="edge.adapters.outbox"):
            for _ in range(8):
                ob.add(fat, evidence=None)
        st = ob.stats()
        assert st["evidence_pruned"] == 4
        assert st["alerts_pruned"] > 0
        assert st["used_bytes"] <= quota
        seqs = [i.seq for i in ob.pending()]
        assert seqs == sorted(seqs)
        assert seqs[-1] == 12  # the newest alerts are kept
        assert "DROPPED unsent alert seq 1" in caplog.text
    with Outbox(tmp_path / "o.sqlite", quota_bytes=quota) as ob:  # counters are persisted
        assert ob.stats()["alerts_pruned"] == st["alerts_pruned"]


def test_evidence_pruned_after_its_alert_was_delivered_frees_the_row(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", quota_bytes=64 * 1024, first_seq=1) as ob:
        ob.add(payload, evidence=b"J" * 40_000)
        ob.ack([(1, "alert")])
        ob.add(payload, evidence=b"K" * 40_000)
        assert [i.seq for i in ob.pending()] == [2]


def test_corrupt_file_is_replaced_and_said_so(tmp_path: Path) -> None:
    db = tmp_path / "o.sqlite"
    db.write_bytes(b"this is not a database" * 100)
    with Outbox(db) as ob:  # details in test_outbox_seq.py
        assert ob.problem is not None
        assert "corrupt" in ob.problem
    with pytest.raises(OutboxError, match="too small"):
        Outbox(tmp_path / "x.sqlite", quota_bytes=10)


def test_closed_outbox_refuses_and_close_is_idempotent(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.sqlite")
    ob.close()
    ob.close()
    with pytest.raises(OutboxError, match="closed"):
        ob.add(payload, evidence=None)


WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from edge.adapters.outbox import Outbox
    ob = Outbox(Path(sys.argv[1]))
    while True:
        seq = ob.add(lambda s: b'{"alert_id":"u-%d"}' % s, evidence=b"J" * 30000)
        print(seq, flush=True)
""")


def test_kill_9_while_writing_loses_no_committed_alert(tmp_path: Path) -> None:
    db = tmp_path / "o.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    reported: list[int] = []
    deadline = time.monotonic() + 30
    while len(reported) < 40 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        reported.append(int(line))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reported += [int(x) for x in proc.stdout.read().split()]
    assert len(reported) >= 40
    with Outbox(db) as ob:
        seqs = [i.seq for i in ob.pending(limit=100_000)]
        # every acknowledged-to-the-caller alert is there, numbered without gaps
        assert set(reported) <= set(seqs)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert all(i.evidence == b"J" * 30000 for i in ob.pending(limit=100_000))
        assert ob.next_seq == seqs[-1] + 1


def test_a_clip_is_sent_last_kept_until_receipted_and_dropped_first_for_room(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    quota = 64 * 1024
    with Outbox(tmp_path / "o.sqlite", quota_bytes=quota, first_seq=1) as ob:
        ob.add(payload, evidence=b"E1", crop=b"C1", clip=b"V" * 20_000)
        item = ob.pending()[0]
        assert (item.evidence, item.crop, item.clip) == (b"E1", b"C1", b"V" * 20_000)
        assert ob.ack([(1, "alert"), (1, "evidence"), (1, "crop")]) == 0  # the clip is owed
        assert ob.pending()[0].clip == b"V" * 20_000
        assert ob.ack([(1, "clip")]) == 1
        assert ob.stats()["used_bytes"] == 0
        # room: older unsent clips go before any evidence, and a clip that cannot fit is
        # dropped while its alert and frame are kept
        with caplog.at_level(logging.WARNING, logger="edge.adapters.outbox"):
            ob.add(payload, evidence=b"J" * 10_000, clip=b"V" * 30_000)  # seq 2
            ob.add(payload, evidence=b"J" * 10_000, clip=b"W" * 30_000)  # seq 3: 2's clip goes
            ob.add(payload, evidence=b"J" * 10_000, clip=b"X" * 70_000)  # seq 4: cannot fit
        st = ob.stats()
        assert st["clips_pruned"] == 2
        assert st["evidence_pruned"] == 0
        assert st["used_bytes"] <= quota
        assert [(i.seq, i.evidence is not None, i.clip) for i in ob.pending()] == [
            (2, True, None),
            (3, True, b"W" * 30_000),
            (4, True, None),
        ]
        assert "dropped the unsent clip of alert seq 2" in caplog.text
        assert "the clip of alert seq 4 (70000 bytes) does not fit" in caplog.text
    with Outbox(tmp_path / "o.sqlite", quota_bytes=quota) as ob:  # persisted, and counted
        assert ob.pending()[1].clip == b"W" * 30_000
        assert ob.stats()["clips_pruned"] == 2
        assert ob.stats()["used_bytes"] == st["used_bytes"]


def test_an_outbox_from_before_clips_is_brought_up_to_date(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.sqlite"
    with Outbox(path, first_seq=1) as ob:
        ob.add(payload, evidence=b"E", crop=b"C")
    db = sqlite3.connect(path)  # as an older unit left it: no clip columns
    db.execute("ALTER TABLE alerts DROP COLUMN clip_state")
    db.execute("ALTER TABLE alerts DROP COLUMN clip")
    db.execute("DELETE FROM meta WHERE key = 'clips_pruned'")
    db.commit()
    db.close()
    with Outbox(path) as ob:
        item = ob.pending()[0]
        assert (item.evidence, item.crop, item.clip) == (b"E", b"C", None)
        assert ob.ack([(1, "alert"), (1, "evidence"), (1, "crop")]) == 1
        ob.add(payload, evidence=None, clip=b"V")
        assert ob.pending()[0].clip == b"V"
        assert ob.stats()["clips_pruned"] == 0
