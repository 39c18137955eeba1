"""Checking and storing what units send: alerts, evidence JPEGs, crops, video clips, status
and heartbeats.

:class:`Ingest` takes a batch of raw MQTT messages, checks each one (topic, size, JSON, schema,
registered unit, Ed25519 signature, evidence / crop / clip hash, JPEG or video container) and
stores the good ones in one transaction. Anything bad is counted under a reason, logged
(rate-limited) and dropped; it never raises for a bad message. Database errors do raise, so
the caller can keep the batch unacknowledged and try again: nothing is lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.engine import Engine

from controlroom import crypto, db, fastcheck
from edge.core import messages as m
from edge.core.errors import MessageError, SignatureError

log = logging.getLogger(__name__)

REPLAY_AFTER_S = 600.0
"""A duplicate of an alert first stored longer ago than this (or purged) counts as a replay,
not a QoS 1 redelivery."""

REJECT_REASONS = (
    "bad_topic",
    "oversized",
    "not_json",
    "schema",
    "unknown_unit",
    "topic_mismatch",
    "bad_signature",
    "seq_conflict",
    "replay",
    "not_jpeg",
    "evidence_mismatch",
    "evidence_late",
    "crop_mismatch",
    "not_video",
    "clip_mismatch",
)


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    received_at: float  # wall clock, seconds since the epoch
    user_properties: tuple[tuple[str, str], ...] = ()
    """MQTT v5 user properties (a snapshot's ``request_id``); untrusted like the payload."""


_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def request_id_of(msg: Message) -> str | None:
    """The ``request_id`` user property if it is a plain token of at most 64 characters."""
    for key, value in msg.user_properties:
        if key == "request_id" and isinstance(value, str) and _REQUEST_ID.fullmatch(value):
            return value
    return None


@dataclass(frozen=True)
class StoredAlert:
    alert_id: str
    unit: str
    seq: int
    time_s: float | None
    received_at: float


class _RateLimitedLog:
    """At most ``per_minute`` warnings per reason per minute; the rest are only counted."""

    def __init__(self, per_minute: int = 10) -> None:
        self.per_minute = per_minute
        self._window: dict[str, tuple[float, int]] = {}

    def warn(self, reason: str, fmt: str, *args: Any, prefix: str = "rejected") -> None:
        now = time.monotonic()
        start, n = self._window.get(reason, (now, 0))
        if now - start > 60.0:
            start, n = now, 0
        n += 1
        self._window[reason] = (start, n)
        if n <= self.per_minute:
            log.warning(prefix + " (%s): " + fmt, reason, *args)
        elif n == self.per_minute + 1:
            log.warning(prefix + " (%s): more this minute, only counted", reason)


def _crop_problem(alert: dict[str, Any], jpeg: bytes) -> str | None:
    ev = alert.get("evidence") or {}
    if ev.get("crop_sha256") != hashlib.sha256(jpeg).hexdigest() or ev.get("crop_bytes") != len(
        jpeg
    ):
        return "the crop is not the one in the signed alert"
    return None


@dataclass(frozen=True)
class _ImageKind:
    """What differs between storing an alert's evidence frame and its crop."""

    name: str
    table: sa.Table
    problem: Callable[[dict[str, Any], bytes], str | None]
    mismatch_reason: str
    late_reason: str | None
    stored_count: str


_EVIDENCE = _ImageKind(
    "evidence",
    db.evidence,
    crypto.evidence_problem,
    "evidence_mismatch",
    "evidence_late",
    "evidence_stored",
)
_CROP = _ImageKind("crop", db.crops, _crop_problem, "crop_mismatch", None, "crops_stored")
# A clip is no image, but it is stored, checked and receipted exactly like a crop (the table's
# ``jpeg`` column holds the video's bytes).
_CLIP = _ImageKind("clip", db.clips, crypto.clip_problem, "clip_mismatch", None, "clips_stored")


class Receipts:
    """Per unit, the sequence numbers whose alert / evidence / crop / clip the control room
    holds."""

    def __init__(self) -> None:
        self.by_unit: dict[str, tuple[set[int], set[int], set[int], set[int]]] = {}
        """unit -> (alerts, evidence, crops, clips) by sequence number."""

    def _of(self, unit: str) -> tuple[set[int], set[int], set[int], set[int]]:
        return self.by_unit.setdefault(unit, (set(), set(), set(), set()))

    def alert(self, unit: str, seq: int) -> None:
        self._of(unit)[0].add(int(seq))

    def evidence(self, unit: str, alert_id: str) -> None:
        _, _, tail = alert_id.rpartition("-")
        if tail.isdigit():
            self._of(unit)[1].add(int(tail))

    def crop(self, unit: str, alert_id: str) -> None:
        _, _, tail = alert_id.rpartition("-")
        if tail.isdigit():
            self._of(unit)[2].add(int(tail))

    def clip(self, unit: str, alert_id: str) -> None:
        _, _, tail = alert_id.rpartition("-")
        if tail.isdigit():
            self._of(unit)[3].add(int(tail))

    def merge(self, other: Receipts) -> None:
        for unit, parts in other.by_unit.items():
            for mine, theirs in zip(self._of(unit), parts, strict=True):
                mine.update(theirs)

    def __bool__(self) -> bool:
        return bool(self.by_unit)


class _Pending:
    """What :meth:`Ingest.process` has checked in one batch and will store, by kind."""

    def __init__(self) -> None:
        self.alert_rows: list[dict[str, Any]] = []
        self.seen: set[str] = set()
        """Alert ids already in ``alert_rows``."""
        self.evidence_msgs: list[tuple[Message, str, str]] = []
        self.crop_msgs: list[tuple[Message, str, str]] = []
        self.clip_msgs: list[tuple[Message, str, str]] = []
        self.statuses: dict[str, tuple[dict[str, Any], float]] = {}
        self.heartbeats: dict[str, tuple[dict[str, Any], float]] = {}
        self.collects: list[tuple[Message, str, str]] = []
        self.snapshots: dict[str, Message] = {}


class Ingest:
    def __init__(
        self,
        engine: Engine,
        *,
        topic_root: str = "phonewatch",
        alert_max_bytes: int = 16 * 1024,
        evidence_max_bytes: int = 8 * 1024 * 1024,
        snapshot_max_bytes: int = 2 * 1024 * 1024,
        clip_max_bytes: int = 8 * 1024 * 1024,
        key_refresh_s: float = 5.0,
        on_stored: Callable[[list[StoredAlert]], None] | None = None,
        orphan_evidence_max_count: int = 200,
        orphan_evidence_max_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.engine = engine
        self.prefix = topic_root.rstrip("/") + "/"
        self.alert_max_bytes = alert_max_bytes
        self.evidence_max_bytes = evidence_max_bytes
        self.snapshot_max_bytes = snapshot_max_bytes
        self.clip_max_bytes = clip_max_bytes
        self.orphan_evidence_max_count = orphan_evidence_max_count
        self.orphan_evidence_max_bytes = orphan_evidence_max_bytes
        self.key_refresh_s = key_refresh_s
        self.on_stored = on_stored
        self.counts: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._key_ids: dict[str, str] = {}
        self._keys_loaded_mono = -1e9
        self._lock = threading.Lock()
        self._receipts = Receipts()
        self._rlog = _RateLimitedLog()

    # ------------------------------------------------------------------ keys

    def _key_for(self, unit: str) -> Ed25519PublicKey | None:
        key = self._keys.get(unit)
        if key is None and time.monotonic() - self._keys_loaded_mono > self.key_refresh_s:
            self.reload_keys()
            key = self._keys.get(unit)
        return key

    def reload_keys(self) -> None:
        keys: dict[str, Ed25519PublicKey] = {}
        for unit, uk in db.unit_keys(self.engine).items():
            try:
                keys[unit] = crypto.parse_public_key(uk.public_key)
            except SignatureError as e:
                log.error("unit %s: registered key unusable: %s", unit, e)
        self._key_ids = {unit: crypto.key_id(key) for unit, key in keys.items()}
        self._keys = keys
        self._keys_loaded_mono = time.monotonic()

    # ------------------------------------------------------------------ parsing

    def _reject(self, reason: str, topic: str, detail: str) -> None:
        with self._lock:
            self.rejected[reason] += 1
        self._rlog.warn(reason, "%s: %s", topic[:160], detail[:300])

    def _split(self, topic: str) -> tuple[str, str, str | None] | None:
        """``<root>/<unit>/<kind>[/<alert_id>]`` -> (unit, kind, alert_id)."""
        if not topic.startswith(self.prefix):
            return None
        parts = topic[len(self.prefix) :].split("/")
        if len(parts) == 2 and parts[1] in ("alert", "status", "heartbeat", "snapshot"):
            return parts[0], parts[1], None
        if len(parts) == 3 and parts[1] in ("evidence", "crop", "clip", "collect"):
            return parts[0], parts[1], parts[2]
        return None

    def _check_alert(self, msg: Message, unit: str) -> dict[str, Any] | None:
        if len(msg.payload) > self.alert_max_bytes:
            self._reject("oversized", msg.topic, f"{len(msg.payload)} bytes")
            return None
        try:
            alert = m.decode(msg.payload, max_bytes=self.alert_max_bytes)
        except MessageError as e:
            self._reject("not_json", msg.topic, str(e))
            return None
        errors = fastcheck.schema_errors(alert, m.ALERT_SCHEMA) or m.alert_problems(alert)
        if errors:
            self._reject("schema", msg.topic, "; ".join(errors[:3]))
            return None
        if alert["unit"] != unit or alert["alert_id"] != m.alert_id(unit, alert["seq"]):
            self._reject(
                "topic_mismatch",
                msg.topic,
                f"alert {alert['alert_id']} of {alert['unit']} on {unit}'s topic",
            )
            return None
        key = self._key_for(unit)
        if key is None:
            self._reject(
                "unknown_unit",
                msg.topic,
                f"unit {unit} is not registered ('phonewatch controlroom add-unit')",
            )
            return None
        problem = crypto.signature_problem(
            alert, key, payload=msg.payload, expected_key_id=self._key_ids.get(unit)
        )
        if problem is not None:
            self._reject("bad_signature", msg.topic, f"{alert['alert_id']}: {problem}")
            return None
        return alert

    # ------------------------------------------------------------------ storing

    def process(self, batch: Sequence[Message]) -> list[StoredAlert]:
        """Check and store one batch in one transaction; returns the alerts newly stored."""
        pending = _Pending()
        for msg in batch:
            with self._lock:
                self.counts["received"] += 1
            where = self._split(msg.topic)
            if where is None:
                self._reject("bad_topic", msg.topic, "not a unit topic")
                continue
            unit, kind, sub = where
            if kind == "alert":
                self._take_alert(pending, msg, unit)
            elif kind == "clip" and sub is not None:
                self._take_clip(pending, msg, unit, sub)
            elif kind in ("evidence", "crop", "collect", "snapshot"):
                self._take_binary(pending, msg, unit, kind, sub)
            else:
                doc = self._check_doc(msg, unit, kind)
                if doc is not None:
                    (pending.statuses if kind == "status" else pending.heartbeats)[unit] = (
                        doc,
                        msg.received_at,
                    )
        stored = self._store(
            pending.alert_rows,
            pending.evidence_msgs,
            pending.statuses,
            pending.heartbeats,
            pending.collects,
            pending.snapshots,
            pending.crop_msgs,
            pending.clip_msgs,
        )
        if stored and self.on_stored is not None:
            self.on_stored(stored)
        return stored

    def _take_alert(self, pending: _Pending, msg: Message, unit: str) -> None:
        """A checked alert joins the batch once; a repeat within the batch is a duplicate."""
        alert = self._check_alert(msg, unit)
        if alert is None:
            return
        if alert["alert_id"] in pending.seen:
            with self._lock:
                self.counts["duplicates"] += 1
            return
        pending.seen.add(alert["alert_id"])
        pending.alert_rows.append(_alert_row(alert, msg))

    def _take_binary(
        self, pending: _Pending, msg: Message, unit: str, kind: str, sub: str | None
    ) -> None:
        """An evidence, crop, collect or snapshot JPEG: checked, then queued for storing (only
        the newest snapshot of a batch per unit is kept)."""
        limit = self.snapshot_max_bytes if kind == "snapshot" else self.evidence_max_bytes
        if len(msg.payload) > limit:
            self._reject("oversized", msg.topic, f"{len(msg.payload)} bytes of {kind}")
        elif not crypto.is_jpeg(msg.payload):
            self._reject("not_jpeg", msg.topic, f"{len(msg.payload)} bytes that are not a JPEG")
        elif self._key_for(unit) is None:
            self._reject("unknown_unit", msg.topic, f"unit {unit} is not registered")
        elif kind == "snapshot":
            old = pending.snapshots.get(unit)
            if old is None or msg.received_at >= old.received_at:
                pending.snapshots[unit] = msg
        elif kind == "evidence" and sub is not None:
            pending.evidence_msgs.append((msg, unit, sub))
        elif kind == "crop" and sub is not None:
            pending.crop_msgs.append((msg, unit, sub))
        elif sub is not None:
            pending.collects.append((msg, unit, sub))

    def _take_clip(self, pending: _Pending, msg: Message, unit: str, alert_id: str) -> None:
        """A video clip of an alert: size and container checked here, its hash against the
        signed alert when it is stored (:meth:`_store_images`)."""
        if len(msg.payload) > self.clip_max_bytes:
            self._reject(
                "oversized",
                msg.topic,
                f"{len(msg.payload)} bytes of clip; the limit is {self.clip_max_bytes}",
            )
        elif crypto.video_type(msg.payload) is None:
            self._reject(
                "not_video",
                msg.topic,
                f"{len(msg.payload)} bytes that are neither WebM/Matroska nor AVI",
            )
        elif self._key_for(unit) is None:
            self._reject("unknown_unit", msg.topic, f"unit {unit} is not registered")
        else:
            pending.clip_msgs.append((msg, unit, alert_id))

    def _check_doc(self, msg: Message, unit: str, kind: str) -> dict[str, Any] | None:
        schema = m.STATUS_SCHEMA if kind == "status" else m.HEARTBEAT_SCHEMA
        try:
            doc = m.decode(msg.payload, max_bytes=self.alert_max_bytes)
        except MessageError as e:
            self._reject("oversized" if "exceeds" in str(e) else "not_json", msg.topic, str(e))
            return None
        errors = fastcheck.schema_errors(doc, schema)
        if errors:
            self._reject("schema", msg.topic, "; ".join(errors[:3]))
            return None
        if doc["unit"] != unit:
            self._reject("topic_mismatch", msg.topic, f"{kind} of {doc['unit']} on {unit}'s topic")
            return None
        if self._key_for(unit) is None:
            self._reject("unknown_unit", msg.topic, f"unit {unit} is not registered")
            return None
        return doc

    def _store(
        self,
        alert_rows: list[dict[str, Any]],
        evidence_msgs: list[tuple[Message, str, str]],
        statuses: dict[str, tuple[dict[str, Any], float]],
        heartbeats: dict[str, tuple[dict[str, Any], float]],
        collects: list[tuple[Message, str, str]],
        snapshots: dict[str, Message] | None = None,
        crop_msgs: list[tuple[Message, str, str]] | None = None,
        clip_msgs: list[tuple[Message, str, str]] | None = None,
    ) -> list[StoredAlert]:
        stored: list[StoredAlert] = []
        counts: Counter[str] = Counter()
        receipts = Receipts()
        with self.engine.begin() as conn:
            if alert_rows:
                new_ids = db.insert_ignore_returning(
                    conn, db.alerts, ["unit", "seq"], alert_rows, db.alerts.c.alert_id
                )
                for r in alert_rows:
                    if r["alert_id"] in new_ids:
                        receipts.alert(r["unit"], r["seq"])
                dups = [r for r in alert_rows if r["alert_id"] not in new_ids]
                if dups:
                    self._classify_duplicates(conn, dups, counts, receipts)
                stored = [
                    StoredAlert(r["alert_id"], r["unit"], r["seq"], r["time_s"], r["received_at"])
                    for r in alert_rows
                    if r["alert_id"] in new_ids
                ]
                counts["stored"] += len(stored)
            if evidence_msgs:
                self._store_evidence(conn, evidence_msgs, counts, receipts)
            if crop_msgs:
                self._store_crops(conn, crop_msgs, counts, receipts)
            if clip_msgs:
                self._store_clips(conn, clip_msgs, counts, receipts)
            for unit, (doc, at) in statuses.items():
                conn.execute(
                    db.units.update()
                    .where(db.units.c.unit_id == unit)
                    .values(
                        status_state=doc["state"],
                        status_time=doc["time"],
                        status_reason=doc.get("reason"),
                        software=doc["software"],
                        status_received_at=at,
                    )
                )
                counts["status_updates"] += 1
            for unit, (doc, at) in heartbeats.items():
                conn.execute(
                    db.units.update()
                    .where(db.units.c.unit_id == unit)
                    .values(heartbeat=json.dumps(doc), heartbeat_received_at=at)
                )
                counts["heartbeats"] += 1
            if collects:
                rows = [
                    {
                        "unit": unit,
                        "name": name[:128],
                        "sha256": hashlib.sha256(msg.payload).hexdigest(),
                        "jpeg": msg.payload,
                        "received_at": msg.received_at,
                    }
                    for msg, unit, name in collects
                ]
                added = db.insert_ignore_returning(
                    conn, db.labels, ["unit", "sha256"], rows, db.labels.c.id
                )
                counts["crops_queued"] += len(added)
            if snapshots:
                db.upsert_snapshots(
                    conn,
                    [
                        {
                            "unit": unit,
                            "jpeg": msg.payload,
                            "sha256": hashlib.sha256(msg.payload).hexdigest(),
                            "size_bytes": len(msg.payload),
                            "received_at": msg.received_at,
                            "request_id": request_id_of(msg),
                        }
                        for unit, msg in snapshots.items()
                    ],
                )
                counts["snapshots"] += len(snapshots)
        with self._lock:
            self.counts.update(counts)
            self._receipts.merge(receipts)  # committed: now the units may forget these
        return stored

    def take_receipts(self) -> Receipts:
        """What the transactions since the last call committed, per unit: the receiver
        publishes them as receipts (``<root>/<unit>/ack``) so the units may forget them."""
        with self._lock:
            out, self._receipts = self._receipts, Receipts()
        return out

    def _classify_duplicates(
        self,
        conn: sa.Connection,
        dups: list[dict[str, Any]],
        counts: Counter[str],
        receipts: Receipts,
    ) -> None:
        ids = [r["alert_id"] for r in dups]
        existing = {
            row.alert_id: row
            for row in conn.execute(
                sa.select(
                    db.alerts.c.alert_id,
                    db.alerts.c.payload_sha256,
                    db.alerts.c.received_at,
                    db.alerts.c.purged_at,
                ).where(db.alerts.c.alert_id.in_(ids))
            )
        }
        for r in dups:
            old = existing.get(r["alert_id"])
            if old is None:  # same (unit, seq) under another alert_id cannot pass the checks
                counts["duplicates"] += 1
            elif old.payload_sha256 != r["payload_sha256"]:
                self._reject(
                    "seq_conflict",
                    r["alert_id"],
                    "a different signed alert with this (unit, seq) is already stored; "
                    "kept the first",
                )
            elif old.purged_at is not None or r["received_at"] - old.received_at > REPLAY_AFTER_S:
                # The same signed alert: held (or purged by retention), so receipted again --
                # the unit resends until a receipt reaches it.
                self._reject("replay", r["alert_id"], "alert was stored before (or purged)")
                receipts.alert(r["unit"], r["seq"])
            else:
                counts["duplicates"] += 1
                receipts.alert(r["unit"], r["seq"])

    def _store_evidence(
        self,
        conn: sa.Connection,
        msgs: list[tuple[Message, str, str]],
        counts: Counter[str],
        receipts: Receipts,
    ) -> None:
        added = self._store_images(conn, msgs, _EVIDENCE, counts, receipts.evidence)
        if added:
            for unit in added:
                self._cap_orphans(conn, unit, counts)

    def _store_crops(
        self,
        conn: sa.Connection,
        msgs: list[tuple[Message, str, str]],
        counts: Counter[str],
        receipts: Receipts,
    ) -> None:
        self._store_images(conn, msgs, _CROP, counts, receipts.crop)

    def _store_clips(
        self,
        conn: sa.Connection,
        msgs: list[tuple[Message, str, str]],
        counts: Counter[str],
        receipts: Receipts,
    ) -> None:
        for unit in self._store_images(conn, msgs, _CLIP, counts, receipts.clip):
            self._cap_orphans(conn, unit, counts, db.clips)

    def _store_images(
        self,
        conn: sa.Connection,
        msgs: list[tuple[Message, str, str]],
        kind: _ImageKind,
        counts: Counter[str],
        receipt: Callable[[str, str], None],
    ) -> set[str]:
        """Evidence frames, driver-window crops or video clips of alerts: each checked against
        the signed alert's hash and size when the alert is here, kept for the alert that will come
        otherwise, receipted once stored (or once retention deleted it on purpose). Returns
        the units that gained orphans (images whose alert has not arrived)."""
        ids = list({a for _, _, a in msgs})
        known = {
            row.alert_id: row
            for row in conn.execute(
                sa.select(
                    db.alerts.c.alert_id,
                    db.alerts.c.payload,
                    db.alerts.c.unit,
                    db.alerts.c.evidence_deleted_at,
                ).where(db.alerts.c.alert_id.in_(ids))
            )
        }
        rows: list[dict[str, Any]] = []
        for msg, unit, aid in msgs:
            row = known.get(aid)
            if row is not None:
                if row.unit != unit:
                    self._reject("topic_mismatch", msg.topic, f"{kind.name} for {aid} from {unit}")
                    continue
                if row.evidence_deleted_at is not None or row.payload is None:
                    if kind.late_reason:
                        self._reject(
                            kind.late_reason, msg.topic, f"{kind.name} of {aid} was deleted"
                        )
                    receipt(unit, aid)  # deleted on purpose: the unit may forget it
                    continue
                problem = kind.problem(json.loads(row.payload), msg.payload)
                if problem is not None:
                    self._reject(kind.mismatch_reason, msg.topic, f"{aid}: {problem}")
                    continue
            elif not aid.startswith(unit + "-"):
                self._reject("topic_mismatch", msg.topic, f"{kind.name} id {aid} is not {unit}'s")
                continue
            rows.append(
                {
                    "alert_id": aid,
                    "unit": unit,
                    "sha256": hashlib.sha256(msg.payload).hexdigest(),
                    "jpeg": msg.payload,
                    "received_at": msg.received_at,
                }
            )
            receipt(unit, aid)  # stored now, or already (a duplicate)
        added = db.insert_ignore_returning(
            conn, kind.table, ["alert_id", "sha256"], rows, kind.table.c.id
        )
        counts[kind.stored_count] += len(added)
        counts["duplicates"] += len(rows) - len(added)
        return {r["unit"] for r in rows if r["alert_id"] not in known} if added else set()

    def _cap_orphans(
        self, conn: sa.Connection, unit: str, counts: Counter[str], table: sa.Table = db.evidence
    ) -> None:
        """Keep at most the newest ``orphan_evidence_max_count`` / ``_bytes`` of a unit's
        evidence (or, with ``table=db.clips``, its clips: a separate allowance) whose alert
        has not arrived (retention deletes the rest after a day anyway)."""
        n, n_bytes = db.cap_orphan_evidence(
            conn,
            unit,
            max_count=self.orphan_evidence_max_count,
            max_bytes=self.orphan_evidence_max_bytes,
            table=table,
        )
        if n:
            counts["orphans_dropped"] += n
            counts["orphan_bytes_dropped"] += n_bytes
            self._rlog.warn(
                "orphan_cap",
                "unit %s: deleted its %d oldest %s "
                "(%d bytes) with no alert: over %d of them or %d bytes",
                unit,
                n,
                "evidence JPEG(s)" if table is db.evidence else f"{table.name} file(s)",
                n_bytes,
                self.orphan_evidence_max_count,
                self.orphan_evidence_max_bytes,
                prefix="dropped",
            )

    def stats(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = dict(self.counts)
            out["rejected"] = dict(self.rejected)
            out["rejected_total"] = sum(self.rejected.values())
        return out


def _alert_row(alert: dict[str, Any], msg: Message) -> dict[str, Any]:
    fix = alert.get("fix") or {}
    model = alert["model"]
    vehicle = alert.get("vehicle") or {}
    box = vehicle.get("box")
    try:
        time_s: float | None = m.parse_utc_iso(alert["time"])
    except MessageError:
        time_s = None
    return {
        "unit": alert["unit"],
        "seq": alert["seq"],
        "alert_id": alert["alert_id"],
        "time": alert["time"],
        "time_s": time_s,
        "time_source": alert["time_source"],
        "received_at": msg.received_at,
        "score": float(alert["score"]),
        "roi": alert["roi"],
        "model": f"{model['name']} {model['version']}"[:200],
        "lat": fix.get("lat"),
        "lon": fix.get("lon"),
        "fix_mode": fix.get("mode"),
        "fix_age_s": fix.get("age_s"),
        "frame_sha256": alert["evidence"]["frame_sha256"],
        "frame_bytes": alert["evidence"]["frame_bytes"],
        "camera": alert.get("camera"),
        "vehicle_track_id": vehicle.get("track_id"),
        "vehicle_label": vehicle.get("label"),
        "vehicle_box": ",".join(str(v) for v in box) if box else None,
        "vehicle_frames": vehicle.get("frames"),
        "payload": msg.payload.decode("utf-8"),
        # Ed25519 is deterministic: one key signs one content into one signature, so the
        # signature identifies the content (cheaper than re-encoding the alert).
        "payload_sha256": hashlib.sha256(alert["signature"]["value"].encode()).hexdigest(),
        "status": "new",
    }
