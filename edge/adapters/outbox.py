"""The durable alert outbox: SQLite in WAL mode, one row per alert, on the unit's disk.

An alert (its signed JSON and a copy of its evidence JPEG) is committed, with fsync, before
anything is sent; each part is deleted only after the broker acknowledges it; rows are handed
out in sequence order. The per-unit sequence number lives in the same database, so it survives
restarts, ``kill -9`` and power loss, and is never reused.

A disk quota bounds the database: the oldest evidence images are dropped first, alerts only when
no evidence is left to drop, and every drop is logged and counted (``stats()``).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge.core.errors import OutboxError

log = logging.getLogger(__name__)

Part = Literal["alert", "evidence"]

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
    evidence_state TEXT NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('evidence_pruned', 0);
INSERT OR IGNORE INTO meta (key, value) VALUES ('alerts_pruned', 0);
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


SEQ_FLOOR_MIN = 1_735_689_600
"""2025-01-01T00:00:00Z in seconds: the lowest first sequence number a new outbox takes, even
when the clock has not been set yet (a Pi without a real-time clock boots in the past)."""


def first_seq_for_new_outbox(now_wall_s: float | None = None) -> int:
    """The first sequence number of a *new* outbox: the current Unix time in seconds.

    The counter lives in the outbox, so a unit whose storage is replaced starts a new one. Had
    it restarted at 1, the control room would see ``(unit, seq)`` pairs it already holds and
    refuse the new alerts as conflicts. Starting at the clock instead puts the new numbers
    above every number the old outbox can have used, as long as the old one averaged under one
    alert per second over its life (a unit's cooldown keeps it far below that). Afterwards the
    counter only ever goes up by one per alert; the clock is never read again.
    """
    now = time.time() if now_wall_s is None else now_wall_s
    return max(SEQ_FLOOR_MIN, int(now))


class Outbox:
    """Durable, ordered, quota-bounded alert store. Thread-safe (one connection, one lock)."""

    def __init__(self, path: Path, *, quota_bytes: int = 512 * 1024 * 1024,
                 fsync: bool = True, first_seq: int | None = None) -> None:
        """``first_seq`` numbers a new outbox (default :func:`first_seq_for_new_outbox`); an
        existing outbox keeps its own counter."""
        if quota_bytes < 64 * 1024:
            raise OutboxError(f"outbox quota of {quota_bytes} bytes is too small (min 64 KiB)")
        start = first_seq if first_seq is not None else first_seq_for_new_outbox()
        if start < 1:
            raise OutboxError(f"first_seq must be >= 1, got {start}")
        self.path = Path(path)
        self.quota_bytes = int(quota_bytes)
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                       timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('next_seq', ?)",
                             (start,))
            check = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {check}")
            row = self._db.execute(
                "SELECT COALESCE(SUM(LENGTH(payload)), 0) + COALESCE(SUM(LENGTH(evidence)), 0) "
                "FROM alerts").fetchone()
            self._used_bytes = int(row[0])
        except (sqlite3.Error, OSError) as e:
            raise OutboxError(f"cannot open outbox {self.path}: {e}") from None
        log.info("outbox %s: %d alert(s) pending, next seq %d", self.path, self.depth(),
                 self.next_seq)

    # ------------------------------------------------------------------ writing

    def add(self, make_payload: Callable[[int], bytes], *, evidence: bytes | None,
            evidence_state: str | None = None, created_wall_s: float | None = None) -> int:
        """Allocate the next sequence number, build the payload for it, commit (fsync) and
        return the number. ``make_payload(seq)`` runs inside the transaction, so a failure
        there (or a crash) leaves no trace and no gap."""
        state = evidence_state or ("pending" if evidence is not None else "none")
        created = time.time() if created_wall_s is None else created_wall_s
        with self._lock:
            self._check_open()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    seq = int(self._db.execute(
                        "SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0])
                    payload = make_payload(seq)
                    ev = evidence
                    if ev is not None:
                        self._make_room(len(payload) + len(ev), seq, alerts_too=False)
                    if ev is not None and self._used_bytes + len(payload) + len(ev) \
                            > self.quota_bytes:
                        log.warning("outbox quota: evidence of alert seq %d not kept (%d bytes)",
                                    seq, len(ev))
                        self._bump("evidence_pruned")
                        ev, state = None, "pruned"
                    self._make_room(len(payload) + (len(ev) if ev else 0), seq, alerts_too=True)
                    self._db.execute(
                        "INSERT INTO alerts (seq, alert_id, created_wall_s, payload, evidence, "
                        "evidence_state) VALUES (?, ?, ?, ?, ?, ?)",
                        (seq, _alert_id_of(payload, seq), created, payload, ev, state))
                    self._db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'",
                                     (seq + 1,))
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    self._recount()
                    raise
            except sqlite3.Error as e:
                raise OutboxError(f"outbox {self.path}: cannot commit alert: {e}") from None
            self._used_bytes += len(payload) + (len(ev) if ev else 0)
            return seq

    def _make_room(self, need: int, seq: int, *, alerts_too: bool) -> None:
        """Inside a transaction: drop oldest evidence, then (if allowed) oldest alerts, until
        ``need`` more bytes fit in the quota."""
        if self._used_bytes + need <= self.quota_bytes:
            return
        rows = self._db.execute(
            "SELECT seq, LENGTH(evidence) FROM alerts WHERE evidence IS NOT NULL ORDER BY seq"
        ).fetchall()
        for old_seq, size in rows:
            if self._used_bytes + need <= self.quota_bytes:
                return
            self._db.execute(
                "UPDATE alerts SET evidence = NULL, evidence_state = 'pruned' WHERE seq = ?",
                (old_seq,))
            self._used_bytes -= int(size)
            self._bump("evidence_pruned")
            row = self._db.execute("SELECT LENGTH(payload) FROM alerts WHERE seq = ? "
                                   "AND alert_acked = 1", (old_seq,)).fetchone()
            if row is not None:  # the alert itself was already delivered: nothing left to send
                self._db.execute("DELETE FROM alerts WHERE seq = ?", (old_seq,))
                self._used_bytes -= int(row[0])
            log.warning("outbox quota (%d bytes): dropped the unsent evidence of alert seq %d "
                        "to keep alert seq %d", self.quota_bytes, old_seq, seq)
        if not alerts_too:
            return
        rows = self._db.execute("SELECT seq, LENGTH(payload) FROM alerts ORDER BY seq").fetchall()
        for old_seq, size in rows:
            if self._used_bytes + need <= self.quota_bytes:
                return
            self._db.execute("DELETE FROM alerts WHERE seq = ?", (old_seq,))
            self._used_bytes -= int(size)
            self._bump("alerts_pruned")
            log.error("outbox quota (%d bytes) exhausted with no evidence left to drop: "
                      "DROPPED unsent alert seq %d", self.quota_bytes, old_seq)

    def _bump(self, key: str) -> None:
        self._db.execute("UPDATE meta SET value = value + 1 WHERE key = ?", (key,))

    def _recount(self) -> None:
        row = self._db.execute(
            "SELECT COALESCE(SUM(LENGTH(payload)), 0) + COALESCE(SUM(LENGTH(evidence)), 0) "
            "FROM alerts").fetchone()
        self._used_bytes = int(row[0])

    def ack(self, parts: Iterable[tuple[int, Part]]) -> int:
        """Record broker acknowledgements; rows with nothing left to send are deleted.
        Unknown sequence numbers (already deleted or pruned) are ignored. Returns rows deleted."""
        parts = list(parts)
        if not parts:
            return 0
        with self._lock:
            self._check_open()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                freed = 0
                seqs = set()
                for seq, part in parts:
                    seqs.add(seq)
                    if part == "alert":
                        self._db.execute("UPDATE alerts SET alert_acked = 1 WHERE seq = ?",
                                         (seq,))
                    else:
                        row = self._db.execute(
                            "SELECT LENGTH(evidence) FROM alerts WHERE seq = ? "
                            "AND evidence_state = 'pending'", (seq,)).fetchone()
                        if row is not None:
                            freed += int(row[0] or 0)
                            self._db.execute(
                                "UPDATE alerts SET evidence = NULL, evidence_state = 'acked' "
                                "WHERE seq = ?", (seq,))
                done = 0
                for seq in seqs:
                    row = self._db.execute(
                        "SELECT LENGTH(payload) FROM alerts WHERE seq = ? AND alert_acked = 1 "
                        "AND evidence_state != 'pending'", (seq,)).fetchone()
                    if row is not None:
                        freed += int(row[0])
                        self._db.execute("DELETE FROM alerts WHERE seq = ?", (seq,))
                        done += 1
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise OutboxError(f"outbox {self.path}: cannot record acknowledgement: {e}") \
                    from None
            self._used_bytes -= freed
            return done

    # ------------------------------------------------------------------ reading

    def pending(self, *, after_seq: int = 0, limit: int = 100) -> list[OutboxItem]:
        """Alerts with something left to send, oldest first, with ``seq > after_seq``."""
        with self._lock:
            self._check_open()
            try:
                rows = self._db.execute(
                    "SELECT seq, alert_id, payload, "
                    "CASE WHEN evidence_state = 'pending' THEN evidence END, alert_acked "
                    "FROM alerts WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit)).fetchall()
            except sqlite3.Error as e:
                raise OutboxError(f"outbox {self.path}: cannot read: {e}") from None
        return [OutboxItem(int(s), str(a), bytes(p), None if e is None else bytes(e), bool(k))
                for s, a, p, e, k in rows]

    def depth(self) -> int:
        """Alerts committed and not yet fully acknowledged."""
        with self._lock:
            self._check_open()
            return int(self._db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])

    @property
    def next_seq(self) -> int:
        with self._lock:
            self._check_open()
            return int(self._db.execute(
                "SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0])

    def stats(self) -> dict[str, int]:
        with self._lock:
            self._check_open()
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            depth = int(self._db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0])
            return {"depth": depth, "used_bytes": self._used_bytes,
                    "quota_bytes": self.quota_bytes, "next_seq": int(meta["next_seq"]),
                    "evidence_pruned": int(meta["evidence_pruned"]),
                    "alerts_pruned": int(meta["alerts_pruned"])}

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
    return payload[i + len(marker):j].decode("utf-8", "replace") if j > 0 else str(seq)
