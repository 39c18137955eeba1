"""The durable alert outbox: SQLite in WAL mode, one row per alert, on the unit's disk.

An alert (its signed JSON and a copy of its evidence JPEG) is committed, with fsync, before
anything is sent; each part is deleted only after the control room receipts it; rows are handed
out in sequence order. The per-unit sequence number lives in the same database and, reserved
ahead, in a sequence file beside it, so it survives restarts, ``kill -9``, power loss and the
loss, replacement or corruption of the database, and is never reused.

A quota and the disk's free space (less a reserve) bound the evidence: the oldest evidence images
are dropped first, alerts only when the quota has no evidence left to drop, and every drop is
logged and counted (``stats()``). A spare file is given up when the disk is full, so
acknowledgements and alerts can still be recorded.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edge.core.errors import OutboxError
from edge.core.ports import Clock, SystemClock

log = logging.getLogger(__name__)

Part = Literal["alert", "evidence", "crop", "clip"]

# evidence_state: 'pending' (kept, not yet acknowledged), 'acked', 'none' (there was none),
# 'missing' (the file could not be read when the alert was raised), 'pruned' (dropped by quota)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    seq INTEGER PRIMARY KEY,
    alert_id TEXT NOT NULL,
    created_wall_s REAL NOT NULL,
    payload BLOB NOT NULL,
    alert_acked INTEGER NOT NULL DEFAULT 0,
    evidence BLOB,
    evidence_state TEXT NOT NULL,
    frame_sha256 TEXT,
    crop BLOB,
    crop_state TEXT NOT NULL DEFAULT 'none',
    clip BLOB,
    clip_state TEXT NOT NULL DEFAULT 'none'
);
CREATE TABLE IF NOT EXISTS notes (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('evidence_pruned', 0);
INSERT OR IGNORE INTO meta (key, value) VALUES ('alerts_pruned', 0);
INSERT OR IGNORE INTO meta (key, value) VALUES ('clips_pruned', 0);
"""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One alert still owed to the broker."""

    seq: int
    alert_id: str
    payload: bytes
    evidence: bytes | None
    """Evidence JPEG still to send, or None (sent, none, missing or pruned)."""
    alert_acked: bool
    crop: bytes | None = None
    """The driver-window crop JPEG still to send, or None."""
    clip: bytes | None = None
    """The clip still to send, or None (sent, none, or dropped for room: clips go first)."""


SEQ_FLOOR_MIN = 1_735_689_600_000
"""2025-01-01T00:00:00Z in milliseconds: the lowest first sequence number a new outbox takes, even
when the clock has not been set yet (a Pi without a real-time clock boots in the past)."""

SEQ_RESERVE_BLOCK = 1000
"""Sequence numbers are reserved in the sequence file this many at a time, so the file is
rewritten (two fsyncs) once per this many alerts, not once per alert."""

SEQ_FILE_SUFFIX = ".seq"
"""The sequence file sits beside the outbox: ``outbox.sqlite.seq``."""

SPARE_FILE_SUFFIX = ".spare"
"""The spare file (zeros) sits beside the outbox: ``outbox.sqlite.spare``."""

DEFAULT_RESERVE_BYTES = 64 * 1024 * 1024
"""Disk space left free for the system (logs, the SQLite journal, other evidence): evidence is
dropped rather than eat into it. 64 MiB is about 1/250 of a 16 GB card."""

DEFAULT_SPARE_BYTES = 1024 * 1024
"""Size of the spare file. Measured (SQLite 3.40, 4 KiB pages, 150 kB evidence, 1.5 kB
alerts, secure_delete FAST): acknowledging 1 / 20 / 100 alerts with their evidence grows the
WAL by 29 kB / 62 kB / 239 kB, and an alert without evidence by 8 kB. With secure_delete ON
(this SQLite's default) the same 100 took 15 MB, as every freed evidence page was rewritten."""


def first_seq_for_new_outbox(now_wall_s: float | None = None) -> int:
    """The clock's floor for the first sequence number of a *new* outbox: the current Unix time
    in milliseconds (never below :data:`SEQ_FLOOR_MIN`).

    This is the last line of defence, for when the outbox *and* its sequence file are gone
    (storage replaced). It keeps the new numbers above every number used before as long as the
    clock is right and the unit averaged under 1,000 alerts per second since its first outbox
    was made; an outbox commit takes milliseconds and the decider's cooldown keeps a unit far
    below that. A clock that is behind is covered only by the sequence file.
    """
    now = time.time() if now_wall_s is None else now_wall_s
    return max(SEQ_FLOOR_MIN, int(now * 1000))


_WAL_TXN_BYTES = 512 * 1024
"""Allowance for the transaction that pushes the WAL past its checkpoint size."""


class _Corrupt(Exception):
    """The outbox file is damaged (not a database, malformed, or fails its integrity check)."""


_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


class Outbox:
    """Durable, ordered, quota-bounded alert store. Thread-safe (one connection, one lock).

    Sequence numbers never go backwards, whatever happens to the file. Three sources are read
    at open and the highest wins: the outbox's own counter, the *sequence file* beside it
    (``<path>.seq``, rewritten atomically with a reservation ahead of the numbers used, so
    every number ever handed out is below the number it holds), and, for a new outbox, the
    clock in milliseconds (:func:`first_seq_for_new_outbox`). An outbox older than its sequence
    file (restored from a copy) jumps to the file's number.

    A damaged outbox does not stop the unit: it is renamed to
    ``<path>.corrupt-<UTC time>`` (with its ``-wal`` and ``-shm``), a fresh one continues the
    sequence, and :attr:`problem` says so until the kept file is taken away.
    """

    @property
    def problem(self) -> str | None:
        """Why the outbox is degraded, or None: it was corrupt and was replaced (until the kept
        file is taken away), or the disk is full (until the spare file could be restored)."""
        parts = [p for p in (self._corrupt_problem, self._disk_problem) if p]
        return "; ".join(parts) if parts else None

    def __init__(
        self,
        path: Path,
        *,
        quota_bytes: int = 512 * 1024 * 1024,
        fsync: bool = True,
        first_seq: int | None = None,
        clock: Clock | None = None,
        seq_path: Path | None = None,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
        spare_bytes: int = DEFAULT_SPARE_BYTES,
    ) -> None:
        """``first_seq`` numbers a new outbox (default :func:`first_seq_for_new_outbox`), but
        never below the sequence file; an existing outbox keeps its own counter. ``clock``
        (wall time) gives the new-outbox floor and the time in a corrupt file's new name.
        ``seq_path`` overrides where the sequence file lives (default ``<path>.seq``).
        ``reserve_bytes`` of the disk are left free: evidence is dropped rather than eat into
        them (alerts are not). ``spare_bytes`` are held in ``<path>.spare`` and given up when
        the disk is full, so acknowledgements and alerts can still be recorded (0: none)."""
        if quota_bytes < 64 * 1024:
            raise OutboxError(f"outbox quota of {quota_bytes} bytes is too small (min 64 KiB)")
        if first_seq is not None and first_seq < 1:
            raise OutboxError(f"first_seq must be >= 1, got {first_seq}")
        self.path = Path(path)
        self.seq_path = (
            Path(seq_path)
            if seq_path is not None
            else self.path.with_name(self.path.name + SEQ_FILE_SUFFIX)
        )
        self.quota_bytes = int(quota_bytes)
        self.spare_path = self.path.with_name(self.path.name + SPARE_FILE_SUFFIX)
        self.reserve_bytes = max(0, int(reserve_bytes))
        self.spare_bytes = max(0, int(spare_bytes))
        self._corrupt_problem: str | None = None
        self._disk_problem: str | None = None
        self._spare_missing = False
        self._fsync = fsync
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._open(first_seq)
            except (sqlite3.Error, OSError) as e:
                # A full disk: SQLite cannot even size its -shm file. Give up the spare file.
                if not (_is_full(e) and self._release_spare()):
                    raise
                self._open(first_seq)
        except _Corrupt as e:
            raise OutboxError(f"cannot open outbox {self.path}: {e}") from None
        except (sqlite3.Error, OSError) as e:
            raise OutboxError(f"cannot open outbox {self.path}: {e}") from None
        log.info(
            "outbox %s: %d alert(s) pending, next seq %d", self.path, self.depth(), self.next_seq
        )

    def _open(self, first_seq: int | None) -> None:
        try:
            self._db = self._connect()
            salvaged = 0
        except _Corrupt as e:
            salvaged = self._set_aside(str(e))
            self._db = self._connect()
        try:
            self._init_seq(first_seq, salvaged)
            self._load_problem()
            self._recount()
            self._restore_spare()
        except BaseException:
            self._db.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if self._fsync else 'NORMAL'}")
            # Freed evidence pages are not rewritten with zeros: that doubled the journal space
            # an acknowledgement needs, and on a full disk it could not be recorded at all.
            db.execute("PRAGMA secure_delete=FAST")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise _Corrupt(f"integrity check: {check}")
            db.executescript(_SCHEMA)
            _migrate(db)
        except sqlite3.DatabaseError as e:
            db.close()
            if getattr(e, "sqlite_errorcode", None) in _CORRUPT_CODES:
                raise _Corrupt(str(e)) from None
            raise
        except BaseException:
            db.close()
            raise
        return db

    # ------------------------------------------------------------------ sequence numbers

    def _init_seq(self, first_seq: int | None, salvaged: int) -> None:
        """Take the highest of the outbox's counter, the sequence file and (new outbox) the
        clock; make the file and the outbox agree on a reservation above it."""
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        file_r = self._read_seq_file()
        if "next_seq" in meta:
            nxt = int(meta["next_seq"])
            db_r = int(meta.get("seq_reserved", nxt))
            if file_r > db_r:
                # The file reserved numbers this outbox never saw: it is an older copy (restored,
                # or reverted by the card), or a crash came between the file and the commit.
                log.warning(
                    "outbox %s is behind its sequence file %s (restored from a copy, "
                    "or replaced?): numbering continues at %d, not %d",
                    self.path,
                    self.seq_path,
                    max(nxt, file_r),
                    nxt,
                )
                nxt = max(nxt, file_r)
        else:
            start = (
                first_seq if first_seq is not None else first_seq_for_new_outbox(self._clock.wall())
            )
            nxt = max(start, file_r, salvaged)
            db_r = 0
        reserved = max(file_r, db_r)
        if nxt >= reserved:
            reserved = nxt + SEQ_RESERVE_BLOCK
        if reserved != file_r:
            self._write_seq_file(reserved)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('next_seq', ?)", (nxt,)
            )
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('seq_reserved', ?)", (reserved,)
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._reserved = reserved
        self._pending_reserved = reserved

    def _read_seq_file(self) -> int:
        """The number in the sequence file; 0 if there is none or it cannot be read."""
        try:
            text = self.seq_path.read_bytes()
        except FileNotFoundError:
            return 0
        except OSError as e:
            log.warning("outbox sequence file %s cannot be read (%s); ignored", self.seq_path, e)
            return 0
        try:
            value = int(text.decode("ascii").strip())
            if value < 1:
                raise ValueError(value)
        except (UnicodeDecodeError, ValueError):
            log.warning(
                "outbox sequence file %s is garbled (%r); ignored and rewritten",
                self.seq_path,
                text[:40],
            )
            return 0
        return value

    def _write_seq_file(self, value: int) -> None:
        """Atomically: a temporary file, fsync, rename, fsync the folder."""
        _write_file_atomic(self.seq_path, b"%d\n" % value, fsync=self._fsync)

    # ------------------------------------------------------------------ damage

    def _set_aside(self, reason: str) -> int:
        """Rename the damaged outbox (and its -wal, -shm) out of the way; return the highest
        next sequence number that could still be read from it (0 if none)."""
        salvaged = _salvage_next_seq(self.path)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock.wall()))
        kept = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while kept.exists():
            kept = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                os.replace(src, f"{kept}{suffix}")
        _fsync_dir(self.path.parent)
        self._problem_reason = reason
        self._problem_kept = kept
        return salvaged

    def _load_problem(self) -> None:
        """Record a replacement made just now; report one made earlier while its kept file is
        still there, so a restart does not hide it."""
        kept: Path | None = getattr(self, "_problem_kept", None)
        if kept is not None:
            self._corrupt_problem = (
                f"outbox was corrupt ({self._problem_reason}); kept as {kept.name}; its "
                f"unsent alerts are not sent; started fresh at seq {self._next_seq_locked()}"
            )
            log.error("%s", self._corrupt_problem)
            self._db.execute(
                "INSERT OR REPLACE INTO notes (key, value) VALUES ('problem', ?), "
                "('problem_file', ?)",
                (self._corrupt_problem, kept.name),
            )
            return
        notes = dict(self._db.execute("SELECT key, value FROM notes").fetchall())
        if "problem" not in notes:
            return
        if (self.path.parent / str(notes.get("problem_file", ""))).exists():
            self._corrupt_problem = str(notes["problem"])
            log.warning("outbox %s still degraded: %s", self.path, self._corrupt_problem)
        else:
            self._db.execute("DELETE FROM notes WHERE key IN ('problem', 'problem_file')")

    # ------------------------------------------------------------------ writing

    def reserve(self) -> int:
        """Take the next sequence number now, for an alert :meth:`add` commits later with
        ``seq=``: the app names the alert (and its evidence folder) by it before the alert
        exists. A number reserved and never added is a gap, never a reuse."""
        with self._lock:
            self._check_open()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    seq = self._next_seq_locked()
                    self._advance_locked(seq)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
            except (sqlite3.Error, OSError) as e:
                raise OutboxError(f"outbox {self.path}: cannot reserve a number: {e}") from None
            self._reserved = max(self._reserved, self._pending_reserved)
            return seq

    def add(
        self,
        make_payload: Callable[[int], bytes],
        *,
        evidence: bytes | None,
        evidence_state: str | None = None,
        created_wall_s: float | None = None,
        seq: int | None = None,
        crop: bytes | None = None,
        clip: bytes | None = None,
    ) -> int:
        """Commit an alert (fsync) and return its sequence number: ``seq`` if it was taken
        with :meth:`reserve`, else the next one. ``make_payload(seq)`` runs inside the
        transaction, so a failure there (or a crash) leaves no trace and no gap.

        On a full disk the alert is still kept: its evidence is dropped (counted), and if even
        the alert alone does not fit, the spare file is given up for it."""
        state = evidence_state or ("pending" if evidence is not None else "none")
        created = time.time() if created_wall_s is None else created_wall_s
        with self._lock:
            self._check_open()
            try:
                try:
                    return self._add_locked(
                        make_payload, evidence, state, created, seq=seq, crop=crop, clip=clip
                    )
                except sqlite3.Error as e:
                    if not _is_full(e):
                        raise
                    if evidence is not None:
                        log.warning(
                            "outbox %s: disk full; the new alert goes without its "
                            "evidence (%d bytes)",
                            self.path,
                            len(evidence),
                        )
                        with contextlib.suppress(sqlite3.Error):
                            return self._add_locked(
                                make_payload, None, "pruned", created, count_pruned=True, seq=seq
                            )
                    if not self._release_spare():
                        raise
                    return self._add_locked(
                        make_payload,
                        None,
                        "pruned" if evidence is not None else state,
                        created,
                        count_pruned=evidence is not None,
                        seq=seq,
                    )
            except (sqlite3.Error, OSError) as e:
                raise OutboxError(f"outbox {self.path}: cannot commit alert: {e}") from None

    def _add_locked(
        self,
        make_payload: Callable[[int], bytes],
        evidence: bytes | None,
        state: str,
        created: float,
        *,
        count_pruned: bool = False,
        seq: int | None = None,
        crop: bytes | None = None,
        clip: bytes | None = None,
    ) -> int:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            reserved_seq = seq
            if seq is None:
                seq = self._next_seq_locked()
            elif seq >= self._next_seq_locked():
                raise OutboxError(f"outbox {self.path}: seq {seq} was never reserved")
            payload = make_payload(seq)
            ev = evidence
            if count_pruned:
                self._bump("evidence_pruned")
            if ev is not None:
                # Evidence may use the quota, or the disk's free space above the reserve,
                # whichever is less; only the quota ever costs an alert.
                disk = self._disk_budget()
                budget = self.quota_bytes if disk is None else min(self.quota_bytes, disk)
                need = len(payload) + len(ev)
                self._make_room(need, seq, quota=budget, alerts_too=False)
                if self._used_bytes + need > budget:
                    log.warning(
                        "outbox %s: evidence of alert seq %d not kept (%d bytes; %s)",
                        self.path,
                        seq,
                        len(ev),
                        "quota" if budget == self.quota_bytes else "disk nearly full",
                    )
                    self._bump("evidence_pruned")
                    ev, state = None, "pruned"
            self._make_room(
                len(payload) + (len(ev) if ev else 0), seq, quota=self.quota_bytes, alerts_too=True
            )
            if clip is not None:
                clip = self._room_for_clip(len(payload) + (len(ev) if ev else 0), clip, seq)
            self._db.execute(
                "INSERT INTO alerts (seq, alert_id, created_wall_s, payload, evidence, "
                "evidence_state, frame_sha256, crop, crop_state, clip, clip_state) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    seq,
                    _alert_id_of(payload, seq),
                    created,
                    payload,
                    ev,
                    state,
                    _frame_sha256_of(payload),
                    crop,
                    "pending" if crop is not None else "none",
                    clip,
                    "pending" if clip is not None else "none",
                ),
            )
            if reserved_seq is None:
                self._advance_locked(seq)
            self._db.execute("COMMIT")
            self._reserved = max(self._reserved, self._pending_reserved)
        except BaseException:
            self._rollback()
            self._recount()
            raise
        self._used_bytes += sum(len(b) for b in (payload, ev, crop, clip) if b)
        return seq

    def _room_for_clip(self, need: int, clip: bytes, seq: int) -> bytes | None:
        """Inside a transaction: ``clip`` if it fits the quota and the disk beside the new
        alert (``need`` bytes), after dropping older unsent clips; else None (counted). A clip
        is the first thing to go: it is best effort, the frame and the alert are the evidence."""
        disk = self._disk_budget()
        budget = self.quota_bytes if disk is None else min(self.quota_bytes, disk)
        rows = self._db.execute(
            "SELECT seq, LENGTH(clip) FROM alerts WHERE clip_state = 'pending' ORDER BY seq"
        ).fetchall()
        if self._used_bytes - sum(int(r[1] or 0) for r in rows) + need + len(clip) > budget:
            rows = []  # it would not fit even alone: keep the older clips, drop this one
        for old_seq, size in rows:
            if self._used_bytes + need + len(clip) <= budget:
                break
            self._db.execute(
                "UPDATE alerts SET clip = NULL, clip_state = 'pruned' WHERE seq = ?", (old_seq,)
            )
            self._used_bytes -= int(size or 0)
            self._bump("clips_pruned")
            log.warning("outbox: dropped the unsent clip of alert seq %d for room", old_seq)
        if self._used_bytes + need + len(clip) <= budget:
            return clip
        self._bump("clips_pruned")
        log.warning("outbox: the clip of alert seq %d (%d bytes) does not fit", seq, len(clip))
        return None

    def _advance_locked(self, seq: int) -> None:
        """Inside a transaction: ``seq`` is used; the next is ``seq + 1``. The sequence file is
        written first when the reservation runs out: it must always be above any used seq."""
        self._db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq + 1,))
        reserved = self._reserved
        if seq >= reserved:
            reserved = seq + SEQ_RESERVE_BLOCK
            self._write_seq_file(reserved)
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'seq_reserved'", (reserved,))
        self._pending_reserved = reserved

    def _make_room(self, need: int, seq: int, *, quota: int, alerts_too: bool) -> None:
        """Inside a transaction: drop oldest evidence, then (if allowed) oldest alerts, until
        ``need`` more bytes fit in ``quota``."""
        if self._used_bytes + need <= quota:
            return
        rows = self._db.execute(
            "SELECT seq, LENGTH(evidence) FROM alerts WHERE evidence IS NOT NULL ORDER BY seq"
        ).fetchall()
        for old_seq, size in rows:
            if self._used_bytes + need <= quota:
                return
            self._db.execute(
                "UPDATE alerts SET evidence = NULL, evidence_state = 'pruned' WHERE seq = ?",
                (old_seq,),
            )
            self._used_bytes -= int(size)
            self._bump("evidence_pruned")
            row = self._db.execute(
                "SELECT LENGTH(payload) FROM alerts WHERE seq = ? AND alert_acked = 1", (old_seq,)
            ).fetchone()
            if row is not None:  # the alert itself was already delivered: nothing left to send
                self._db.execute("DELETE FROM alerts WHERE seq = ?", (old_seq,))
                self._used_bytes -= int(row[0])
            log.warning(
                "outbox quota (%d bytes): dropped the unsent evidence of alert seq %d "
                "to keep alert seq %d",
                quota,
                old_seq,
                seq,
            )
        if not alerts_too:
            return
        rows = self._db.execute("SELECT seq, LENGTH(payload) FROM alerts ORDER BY seq").fetchall()
        for old_seq, size in rows:
            if self._used_bytes + need <= quota:
                return
            self._db.execute("DELETE FROM alerts WHERE seq = ?", (old_seq,))
            self._used_bytes -= int(size)
            self._bump("alerts_pruned")
            log.error(
                "outbox quota (%d bytes) exhausted with no evidence left to drop: "
                "DROPPED unsent alert seq %d",
                quota,
                old_seq,
            )

    def _bump(self, key: str) -> None:
        self._db.execute("UPDATE meta SET value = value + 1 WHERE key = ?", (key,))

    def _recount(self) -> None:
        row = self._db.execute(
            "SELECT COALESCE(SUM(LENGTH(payload)), 0) + COALESCE(SUM(LENGTH(evidence)), 0) "
            "+ COALESCE(SUM(LENGTH(crop)), 0) + COALESCE(SUM(LENGTH(clip)), 0) FROM alerts"
        ).fetchone()
        self._used_bytes = int(row[0])

    def _rollback(self) -> None:
        """SQLite rolls back by itself on some errors (a full disk): then there is none to do."""
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

    def ack(self, parts: Iterable[tuple[int, Part]]) -> int:
        """Record the control room's receipts; rows with nothing left to send are deleted.
        Unknown sequence numbers (already deleted or pruned) are ignored. Returns rows deleted.

        Works on a full disk: deletes need only a little journal space (``secure_delete`` is
        FAST, so freed evidence pages are not rewritten), and if even that is missing the
        spare file beside the outbox is given up for it."""
        parts = list(parts)
        if not parts:
            return 0
        with self._lock:
            self._check_open()
            try:
                try:
                    done = self._ack_locked(parts)
                except sqlite3.Error as e:
                    if not (_is_full(e) and self._release_spare()):
                        raise
                    done = self._ack_locked(parts)
            except sqlite3.Error as e:
                raise OutboxError(
                    f"outbox {self.path}: cannot record acknowledgement: {e}"
                ) from None
            if self._spare_missing:
                self._restore_spare()
            return done

    def _ack_locked(self, parts: list[tuple[int, Part]]) -> int:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            freed = 0
            seqs = set()
            for seq, part in parts:
                seqs.add(seq)
                if part == "alert":
                    self._db.execute("UPDATE alerts SET alert_acked = 1 WHERE seq = ?", (seq,))
                elif part in ("crop", "clip"):
                    row = self._db.execute(
                        f"SELECT LENGTH({part}) FROM alerts WHERE seq = ? "
                        f"AND {part}_state = 'pending'",
                        (seq,),
                    ).fetchone()
                    if row is not None:
                        freed += int(row[0] or 0)
                        self._db.execute(
                            f"UPDATE alerts SET {part} = NULL, {part}_state = 'acked' "
                            "WHERE seq = ?",
                            (seq,),
                        )
                else:
                    row = self._db.execute(
                        "SELECT LENGTH(evidence) FROM alerts WHERE seq = ? "
                        "AND evidence_state = 'pending'",
                        (seq,),
                    ).fetchone()
                    if row is not None:
                        freed += int(row[0] or 0)
                        self._db.execute(
                            "UPDATE alerts SET evidence = NULL, evidence_state = 'acked' "
                            "WHERE seq = ?",
                            (seq,),
                        )
            done = 0
            for seq in seqs:
                row = self._db.execute(
                    "SELECT LENGTH(payload) FROM alerts WHERE seq = ? AND alert_acked = 1 "
                    "AND evidence_state != 'pending' AND crop_state != 'pending' "
                    "AND clip_state != 'pending'",
                    (seq,),
                ).fetchone()
                if row is not None:
                    freed += int(row[0])
                    self._db.execute("DELETE FROM alerts WHERE seq = ?", (seq,))
                    done += 1
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._used_bytes -= freed
        return done

    # ------------------------------------------------------------------ disk space

    def _disk_budget(self) -> int | None:
        """How many bytes of alerts and evidence the outbox may hold on this disk, leaving the
        reserve free (None if the disk cannot be asked).

        The space the outbox may occupy is what it occupies now (database and WAL files) plus
        the disk's free space, less the reserve. Of that, the WAL needs up to
        ``wal_autocheckpoint`` pages plus one transaction before it is checkpointed and reused,
        and the database file needs its pages: content plus about 1/16 for page and row
        overhead (measured: 2-3 % with 150 kB evidence)."""
        try:
            free = shutil.disk_usage(self.path.parent).free
            sizes = [
                os.stat(f"{self.path}{sfx}").st_size if os.path.exists(f"{self.path}{sfx}") else 0
                for sfx in ("", "-wal")
            ]
        except OSError:
            return None
        page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        wal_max = (
            int(self._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) * page_size
            + _WAL_TXN_BYTES
        )
        space = free + sum(sizes) - self.reserve_bytes - wal_max
        return max(0, space * 16 // 17)

    def _release_spare(self) -> bool:
        """Delete the spare file so SQLite has room to record; False if there was none."""
        try:
            size = self.spare_path.stat().st_size
            self.spare_path.unlink()
        except FileNotFoundError:
            return False
        except OSError as e:
            log.error("outbox %s: disk full and the spare file cannot be removed: %s", self.path, e)
            return False
        self._spare_missing = True
        self._disk_problem = (
            f"disk full: gave up the outbox's {size}-byte spare file to keep "
            "recording alerts and acknowledgements"
        )
        log.error("outbox %s: %s", self.path, self._disk_problem)
        return True

    def _restore_spare(self) -> None:
        """(Re)create the spare file if the disk has room for it above the reserve."""
        if self.spare_bytes <= 0:
            self._spare_missing = False
            return
        try:
            if self.spare_path.exists() and self.spare_path.stat().st_size >= self.spare_bytes:
                self._spare_missing = False
                self._disk_problem = None
                return
            if shutil.disk_usage(self.path.parent).free < self.spare_bytes + self.reserve_bytes:
                self._spare_missing = True
                return
            _write_file_atomic(self.spare_path, bytes(self.spare_bytes), fsync=self._fsync)
        except OSError as e:
            log.warning(
                "outbox %s: cannot make the spare file %s: %s", self.path, self.spare_path, e
            )
            self._spare_missing = True
            return
        if self._spare_missing:
            log.warning("outbox %s: disk has room again; spare file restored", self.path)
        self._spare_missing = False
        self._disk_problem = None

    # ------------------------------------------------------------------ reading

    def pending(self, *, after_seq: int = 0, limit: int = 100) -> list[OutboxItem]:
        """Alerts with something left to send, oldest first, with ``seq > after_seq``."""
        with self._lock:
            self._check_open()
            try:
                rows = self._db.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM alerts WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit),
                ).fetchall()
            except sqlite3.Error as e:
                raise OutboxError(f"outbox {self.path}: cannot read: {e}") from None
        return [_item(r) for r in rows]

    def get(self, seq: int) -> OutboxItem | None:
        """The alert ``seq`` if something of it is still owed, else None."""
        with self._lock:
            self._check_open()
            try:
                row = self._db.execute(
                    f"SELECT {_ITEM_COLUMNS} FROM alerts WHERE seq = ?", (seq,)
                ).fetchone()
            except sqlite3.Error as e:
                raise OutboxError(f"outbox {self.path}: cannot read: {e}") from None
        return None if row is None else _item(row)

    def owes_frame(self, frame_sha256: str) -> bool:
        """Is an alert whose evidence frame has this SHA-256 still owed to the broker (alert or
        evidence not yet acknowledged)? For the evidence store: keep what is still owed."""
        with self._lock:
            self._check_open()
            try:
                row = self._db.execute(
                    "SELECT 1 FROM alerts WHERE frame_sha256 = ? LIMIT 1", (frame_sha256,)
                ).fetchone()
            except sqlite3.Error as e:
                raise OutboxError(f"outbox {self.path}: cannot read: {e}") from None
        return row is not None

    def depth(self) -> int:
        """Alerts committed and not yet fully acknowledged."""
        with self._lock:
            self._check_open()
            return int(self._db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])

    @property
    def next_seq(self) -> int:
        with self._lock:
            self._check_open()
            return self._next_seq_locked()

    def _next_seq_locked(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0])

    def stats(self) -> dict[str, int]:
        with self._lock:
            self._check_open()
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            depth = int(self._db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])
            return {
                "depth": depth,
                "used_bytes": self._used_bytes,
                "quota_bytes": self.quota_bytes,
                "next_seq": int(meta["next_seq"]),
                "evidence_pruned": int(meta["evidence_pruned"]),
                "alerts_pruned": int(meta["alerts_pruned"]),
                "clips_pruned": int(meta.get("clips_pruned", 0)),
            }

    # ------------------------------------------------------------------ lifecycle

    def _check_open(self) -> None:
        if self._closed:
            raise OutboxError(f"outbox {self.path} is closed")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._db.close()
            except sqlite3.Error as e:  # pragma: no cover - close of a broken database
                log.warning("outbox %s: close failed: %s", self.path, e)

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _alert_id_of(payload: bytes, seq: int) -> str:
    """The alert id is inside the signed JSON; the column is only for people reading the DB."""
    marker = b'"alert_id":"'
    i = payload.find(marker)
    if i < 0:
        return str(seq)
    j = payload.find(b'"', i + len(marker))
    return payload[i + len(marker) : j].decode("utf-8", "replace") if j > 0 else str(seq)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file_atomic(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """A crash leaves the old content or the new, never a mix: temporary file, fsync, rename,
    fsync of the folder (so the rename itself is durable)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if fsync:
        _fsync_dir(path.parent)


def _salvage_next_seq(path: Path) -> int:
    """Best effort: the next sequence number a damaged outbox would have used (0 if unreadable).
    Read-only and ``immutable``, so the damaged file and its WAL are not touched."""
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1", uri=True)
    except sqlite3.Error:
        return 0
    best = 0
    try:
        for sql in (
            "SELECT MAX(value) FROM meta WHERE key IN ('next_seq', 'seq_reserved')",
            "SELECT MAX(seq) + 1 FROM alerts",
        ):
            with contextlib.suppress(sqlite3.Error, TypeError, ValueError):
                best = max(best, int(db.execute(sql).fetchone()[0]))
    finally:
        db.close()
    return best


_FULL_CODES = frozenset(
    {
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_IOERR_SHMSIZE,
        sqlite3.SQLITE_IOERR_WRITE,
        sqlite3.SQLITE_IOERR_TRUNCATE,
    }
)


def _is_full(e: BaseException) -> bool:
    """A full disk, as SQLite or the OS reports it (SQLite cannot size its -shm file on a
    full disk and says "disk I/O error")."""
    if isinstance(e, OSError):
        return e.errno == errno.ENOSPC
    return getattr(e, "sqlite_errorcode", None) in _FULL_CODES


def _frame_sha256_of(payload: bytes) -> str | None:
    """The evidence frame's SHA-256 named in the signed alert (None if there is none)."""
    try:
        doc = json.loads(payload)
        sha = doc["evidence"]["frame_sha256"]
    except (ValueError, KeyError, TypeError):
        return None
    return sha if isinstance(sha, str) else None


_ITEM_COLUMNS = (
    "seq, alert_id, payload, CASE WHEN evidence_state = 'pending' THEN evidence END, "
    "alert_acked, CASE WHEN crop_state = 'pending' THEN crop END, "
    "CASE WHEN clip_state = 'pending' THEN clip END"
)


def _item(row: tuple[Any, ...]) -> OutboxItem:
    seq, alert_id, payload, evidence, acked, crop, clip = row
    return OutboxItem(
        int(seq),
        str(alert_id),
        bytes(payload),
        None if evidence is None else bytes(evidence),
        bool(acked),
        None if crop is None else bytes(crop),
        None if clip is None else bytes(clip),
    )


def _migrate(db: sqlite3.Connection) -> None:
    """Bring an outbox made by an older version up to date (idempotent)."""
    cols = {str(r[1]) for r in db.execute("PRAGMA table_info(alerts)").fetchall()}
    if "frame_sha256" not in cols:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("ALTER TABLE alerts ADD COLUMN frame_sha256 TEXT")
            for seq, payload in db.execute("SELECT seq, payload FROM alerts").fetchall():
                db.execute(
                    "UPDATE alerts SET frame_sha256 = ? WHERE seq = ?",
                    (_frame_sha256_of(bytes(payload)), seq),
                )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    if "crop" not in cols:
        db.execute("ALTER TABLE alerts ADD COLUMN crop BLOB")
        db.execute("ALTER TABLE alerts ADD COLUMN crop_state TEXT NOT NULL DEFAULT 'none'")
    if "clip" not in cols:
        db.execute("ALTER TABLE alerts ADD COLUMN clip BLOB")
        db.execute("ALTER TABLE alerts ADD COLUMN clip_state TEXT NOT NULL DEFAULT 'none'")
    db.execute("CREATE INDEX IF NOT EXISTS alerts_frame_sha256 ON alerts (frame_sha256)")
