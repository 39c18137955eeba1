"""Model rollout, the control room's side: offer a signed package to a unit in hashed chunks,
record what the unit says became of it, and send again the chunks it reports missing.

``controlroom model offer`` (:func:`make_offer`, :func:`record_offer`, :func:`send_offer`)
stores the package and a ``rollouts`` row, publishes the ``model_offer`` command and then every
chunk on ``<root>/<unit>/model/chunk/<package_sha256>/<index>`` (QoS 1, not retained). The
serving control room's receiver takes the unit's ``<root>/<unit>/model/status`` events
(:func:`process_statuses`): each goes into the audit log and the rollout's row, and a
``receiving`` event that lists ``missing`` chunks of a rollout still under way gets exactly
those chunks again, cut from the stored package. So a transfer resumes after the CLI has
exited, the unit has restarted or the link has dropped. docs/rollout.md has the whole story.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from controlroom import commands, db
from controlroom.errors import ControlRoomError
from edge.common import model_package as mp
from edge.core import messages as m
from edge.core.errors import MessageError

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 64 * 1024
CHUNK_SIZE_MIN, CHUNK_SIZE_MAX = 1024, 1024 * 1024
CHUNK_COUNT_MAX = 4096
MODES = ("shadow", "live")
ACTIVE_STATES = ("offered", "receiving")
"""Rollout states in which the receiver answers a ``missing`` report with chunks."""
STATUS_MAX_BYTES = 64 * 1024


class RolloutError(ControlRoomError, ValueError):
    """A package cannot be offered (bad file, mode, chunk size, or an unknown unit)."""


@dataclass(frozen=True)
class Offer:
    """A ``model_offer`` command's body and the chunks it describes."""

    body: dict[str, Any]
    chunks: list[bytes]

    @property
    def sha256(self) -> str:
        return str(self.body["package_sha256"])


def split(blob: bytes, chunk_size: int) -> list[bytes]:
    return [blob[i : i + chunk_size] for i in range(0, len(blob), chunk_size)]


def make_offer(blob: bytes, *, mode: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Offer:
    """The offer for a package file (its manifest read for name and version; the unit
    verifies the signature)."""
    if mode not in MODES:
        raise RolloutError(f"mode must be shadow or live, not {mode!r}")
    if not CHUNK_SIZE_MIN <= chunk_size <= CHUNK_SIZE_MAX:
        raise RolloutError(f"chunk size must be {CHUNK_SIZE_MIN} to {CHUNK_SIZE_MAX} bytes")
    if not 0 < len(blob) <= mp.MAX_BYTES:
        raise RolloutError(f"a package must be 1 to {mp.MAX_BYTES} bytes, not {len(blob)}")
    if math.ceil(len(blob) / chunk_size) > CHUNK_COUNT_MAX:
        raise RolloutError(
            f"{len(blob)} bytes in chunks of {chunk_size} is over {CHUNK_COUNT_MAX} chunks; "
            "use a larger --chunk-size"
        )
    try:
        manifest = mp.inspect_package(blob)
    except mp.ModelPackageError as e:
        raise RolloutError(str(e)) from None
    chunks = split(blob, chunk_size)
    body = {
        "request_id": commands.request_id(),
        "package_sha256": hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
        "chunk_size": chunk_size,
        "chunk_count": len(chunks),
        "chunks": [hashlib.sha256(c).hexdigest() for c in chunks],
        "version": str(manifest["version"])[:64],
        "name": str(manifest["name"])[:128],
        "mode": mode,
    }
    return Offer(body, chunks)


def record_offer(engine: Engine, *, unit: str, blob: bytes, offer: Offer, user: str) -> None:
    """Keep the package (for resends) and mark the rollout ``offered``, audited."""
    b, now = offer.body, time.time()
    manifest = mp.inspect_package(blob)
    with engine.begin() as conn:
        if not db.unit_known(conn, unit):
            raise RolloutError(f"unit {unit!r} is not registered ('controlroom add-unit')")
        db.insert_ignore_returning(
            conn,
            db.model_packages,
            ["sha256"],
            [
                {
                    "sha256": offer.sha256,
                    "name": b["name"],
                    "version": b["version"],
                    "key_id": str(manifest["key_id"])[:16],
                    "size_bytes": len(blob),
                    "stored_at": now,
                    "blob": blob,
                }
            ],
            db.model_packages.c.sha256,
        )
        row = {
            "version": b["version"],
            "mode": b["mode"],
            "chunk_size": b["chunk_size"],
            "chunk_count": b["chunk_count"],
            "state": "offered",
            "detail": None,
            "have": None,
            "offered_by": user,
            "offered_at": now,
            "updated_at": now,
        }
        key = (db.rollouts.c.unit == unit) & (db.rollouts.c.package_sha256 == offer.sha256)
        if conn.execute(db.rollouts.update().where(key).values(**row)).rowcount == 0:
            conn.execute(db.rollouts.insert().values(unit=unit, package_sha256=offer.sha256, **row))
        db.record_audit(
            conn,
            username=user,
            action="model_offer",
            target=unit,
            detail=f"{b['name']} {b['version']} ({offer.sha256[:12]}) as {b['mode']}, "
            f"{b['size']} bytes in {b['chunk_count']} chunk(s)",
        )


def mark_unsent(engine: Engine, *, unit: str, package_sha256: str, why: str) -> None:
    """The offer never left: say so in its row rather than leave it ``offered``."""
    key = (db.rollouts.c.unit == unit) & (db.rollouts.c.package_sha256 == package_sha256)
    with engine.begin() as conn:
        conn.execute(
            db.rollouts.update()
            .where(key)
            .values(state="unsent", detail=why[:1000], updated_at=time.time())
        )


class ChunkSender(Protocol):
    """The control room's MQTT connection (``Receiver`` or ``CommandPublisher``)."""

    def publish_command(self, unit: str, name: str, body: dict[str, Any]) -> commands.Sent: ...

    def publish_chunks(
        self, unit: str, package_sha256: str, chunks: Sequence[tuple[int, bytes]]
    ) -> commands.Sent: ...


def send_offer(
    sender: ChunkSender, unit: str, offer: Offer, *, indices: Sequence[int] | None = None
) -> commands.Sent:
    """Publish the offer, then the chunks (all, or ``indices``), each acknowledged by the
    broker."""
    sent = sender.publish_command(unit, "model_offer", offer.body)
    if not sent.ok:
        return sent
    wanted = range(len(offer.chunks)) if indices is None else indices
    return sender.publish_chunks(unit, offer.sha256, [(i, offer.chunks[i]) for i in wanted])


def offer_package(
    engine: Engine,
    sender: ChunkSender,
    *,
    unit: str,
    blob: bytes,
    mode: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    user: str,
) -> tuple[Offer, commands.Sent]:
    """Record and send an offer (``controlroom model offer``): the row says ``unsent`` with
    the reason when the broker did not take it all."""
    offer = make_offer(blob, mode=mode, chunk_size=chunk_size)
    record_offer(engine, unit=unit, blob=blob, offer=offer, user=user)
    sent = send_offer(sender, unit, offer)
    if not sent.ok:
        mark_unsent(engine, unit=unit, package_sha256=offer.sha256, why=sent.detail)
    return offer, sent


def chunk_topic(root: str, unit: str, package_sha256: str, index: int) -> str:
    return f"{root.rstrip('/')}/{unit}/model/chunk/{package_sha256}/{index}"


# ----------------------------------------------------------------------- the unit's events


@dataclass(frozen=True)
class Resend:
    unit: str
    package_sha256: str
    chunks: list[tuple[int, bytes]]


def status_unit(topic: str, root: str) -> str | None:
    """The unit of a ``<root>/<unit>/model/status`` topic, else None."""
    prefix = root.rstrip("/") + "/"
    if not topic.startswith(prefix) or not topic.endswith("/model/status"):
        return None
    unit = topic[len(prefix) : -len("/model/status")]
    return unit if unit and "/" not in unit else None


def check_status(unit: str, payload: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """``(doc, None)`` for a sound ``model_status.v1`` from ``unit``, else ``(None, why)``."""
    try:
        doc = m.decode(payload, max_bytes=STATUS_MAX_BYTES)
    except MessageError as e:
        return None, str(e)
    errors = m.schema_errors(doc, m.MODEL_STATUS_SCHEMA)
    if errors:
        return None, "; ".join(errors[:3])
    if doc["unit"] != unit:
        return None, f"status of {doc['unit']} on {unit}'s topic"
    return doc, None


def process_statuses(
    engine: Engine, items: Sequence[tuple[str, bytes, float]], *, root: str
) -> tuple[list[Resend], int]:
    """Record a batch of ``(topic, payload, received_at)`` model events in one transaction;
    returns the chunks to send again and how many messages were rejected."""
    resends: list[Resend] = []
    rejected = 0
    with engine.begin() as conn:
        known = {r.unit_id for r in conn.execute(sa.select(db.units.c.unit_id))}
        for topic, payload, at in items:
            unit = status_unit(topic, root)
            doc: dict[str, Any] | None
            why: str | None
            if unit is None or unit not in known:
                doc, why = None, "no registered unit on this topic"
            else:
                doc, why = check_status(unit, payload)
            if unit is None or doc is None:
                rejected += 1
                log.warning("model status on %s rejected: %s", topic[:160], why)
                continue
            resend = record_status(conn, unit, doc, at)
            if resend is not None:
                resends.append(resend)
    return resends, rejected


def record_status(conn: Connection, unit: str, doc: dict[str, Any], at: float) -> Resend | None:
    """Audit one event and update its rollout; the chunks to send again, if it asks for any."""
    sha, event = doc["package_sha256"], doc["event"]
    missing: list[int] = doc.get("missing") or []
    words = [f"{doc['version']} ({sha[:12]})"]
    if "have" in doc:
        words.append(f"has {doc['have']} chunk(s)")
    if missing:
        words.append(f"missing {len(missing)}")
    if doc.get("detail"):
        words.append(str(doc["detail"]))
    db.record_audit(
        conn, username=unit, action=f"model_{event}", target=unit, detail="; ".join(words)
    )
    key = (db.rollouts.c.unit == unit) & (db.rollouts.c.package_sha256 == sha)
    row = conn.execute(sa.select(db.rollouts).where(key)).first()
    if row is None:
        return None  # not offered from this database: recorded in the audit log only
    resend: list[tuple[int, bytes]] = []
    if event == "receiving" and missing and row.state in ACTIVE_STATES:
        blob = conn.execute(
            sa.select(db.model_packages.c.blob).where(db.model_packages.c.sha256 == sha)
        ).scalar()
        if blob is not None:
            chunks = split(bytes(blob), row.chunk_size)
            resend = [(i, chunks[i]) for i in sorted(set(missing)) if i < len(chunks)]
    conn.execute(
        db.rollouts.update()
        .where(key)
        .values(
            state=event,
            detail=doc.get("detail"),
            have=doc.get("have", row.have),
            chunks_resent=row.chunks_resent + len(resend),
            updated_at=at,
        )
    )
    return Resend(unit, sha, resend) if resend else None


# ------------------------------------------------------------------------------- reading


def list_rollouts(conn: Connection, *, unit: str | None = None, limit: int = 200) -> list[Any]:
    q = sa.select(db.rollouts).order_by(db.rollouts.c.updated_at.desc()).limit(limit)
    if unit is not None:
        q = q.where(db.rollouts.c.unit == unit)
    return list(conn.execute(q))


def latest_by_unit(conn: Connection) -> dict[str, Any]:
    """Each unit's most recently updated rollout row."""
    out: dict[str, Any] = {}
    for r in conn.execute(sa.select(db.rollouts).order_by(db.rollouts.c.updated_at)):
        out[r.unit] = r
    return out
