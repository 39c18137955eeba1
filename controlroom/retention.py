"""Retention: delete what the configuration says must not be kept.

* evidence of a rejected alert, ``rejected_evidence_s`` after the review (default one hour);
* a confirmed alert, ``confirmed_days`` after the review: evidence deleted and the alert's content
  wiped, leaving a tombstone (unit, seq, status ``purged``) so a replay is still recognised;
* an alert nobody reviewed, ``unreviewed_days`` after it arrived (same tombstone);
* evidence whose alert never arrived, ``orphan_evidence_s`` after it arrived;
* labelling crops (the ``labels`` table) that are not evidence of an offence: collected,
  sampled and calibration crops, labelled or not, and rejected alerts' crops kept as hard
  negatives, ``label_crops_days`` after they arrived; a confirmed alert's crop kept as a
  ``phone`` example goes with the alert, ``confirmed_days`` after the review. A crop that a
  dataset version holds is kept (with the version) until no version holds it;
* a dataset version's stored JPEG (``example_blobs``) once no version holds it (a version was
  deleted); the labelled crop itself then follows the rule above.

"Evidence" is the frame, the crop and the video clip alike: they are deleted together.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from controlroom import db
from controlroom.config import RetentionConfig

log = logging.getLogger(__name__)

_DAY_S = 86400.0


def sweep(engine: Engine, cfg: RetentionConfig, *, now: float | None = None) -> dict[str, int]:
    now = time.time() if now is None else now
    a, e, c, v = db.alerts, db.evidence, db.crops, db.clips
    out = {
        "rejected_evidence": 0,
        "confirmed_purged": 0,
        "unreviewed_purged": 0,
        "orphan_evidence": 0,
        "label_crops": 0,
        "dataset_blobs": 0,
    }
    with engine.begin() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                sa.select(a.c.alert_id).where(
                    a.c.status == "rejected",
                    a.c.evidence_deleted_at.is_(None),
                    a.c.reviewed_at <= now - cfg.rejected_evidence_s,
                )
            )
        ]
        for chunk in db.chunks(ids, 500):
            conn.execute(e.delete().where(e.c.alert_id.in_(chunk)))
            conn.execute(c.delete().where(c.c.alert_id.in_(chunk)))
            conn.execute(v.delete().where(v.c.alert_id.in_(chunk)))
            conn.execute(a.update().where(a.c.alert_id.in_(chunk)).values(evidence_deleted_at=now))
        out["rejected_evidence"] = len(ids)
        for key, cond in (
            (
                "confirmed_purged",
                sa.and_(
                    a.c.status == "confirmed", a.c.reviewed_at <= now - cfg.confirmed_days * _DAY_S
                ),
            ),
            (
                "unreviewed_purged",
                sa.and_(a.c.status == "new", a.c.received_at <= now - cfg.unreviewed_days * _DAY_S),
            ),
        ):
            ids = [r[0] for r in conn.execute(sa.select(a.c.alert_id).where(cond))]
            for chunk in db.chunks(ids, 500):
                conn.execute(e.delete().where(e.c.alert_id.in_(chunk)))
                conn.execute(c.delete().where(c.c.alert_id.in_(chunk)))
                conn.execute(v.delete().where(v.c.alert_id.in_(chunk)))
                conn.execute(
                    a.update()
                    .where(a.c.alert_id.in_(chunk))
                    .values(
                        status="purged",
                        purged_at=now,
                        evidence_deleted_at=now,
                        payload=None,
                        lat=None,
                        lon=None,
                        fix_mode=None,
                        fix_age_s=None,
                        review_note=None,
                        roi=None,
                        score=None,
                        model=None,
                    )
                )
            out[key] = len(ids)
        known = sa.select(a.c.alert_id).where(a.c.alert_id == e.c.alert_id).exists()
        res = conn.execute(e.delete().where(e.c.received_at <= now - cfg.orphan_evidence_s, ~known))
        out["orphan_evidence"] = int(res.rowcount or 0)
        crop_known = sa.select(a.c.alert_id).where(a.c.alert_id == c.c.alert_id).exists()
        conn.execute(c.delete().where(c.c.received_at <= now - cfg.orphan_evidence_s, ~crop_known))
        clip_known = sa.select(a.c.alert_id).where(a.c.alert_id == v.c.alert_id).exists()
        conn.execute(v.delete().where(v.c.received_at <= now - cfg.orphan_evidence_s, ~clip_known))
        out["label_crops"], out["dataset_blobs"] = _sweep_label_crops(conn, cfg, now)
        if any(out.values()):
            db.record_audit(
                conn,
                username="system",
                action="retention",
                detail=", ".join(f"{k}={v}" for k, v in out.items() if v),
            )
    if any(out.values()):
        log.info("retention: %s", out)
    return out


def alert_due(row: Any, cfg: RetentionConfig) -> tuple[str, float] | None:
    """What retention will next delete of an alert (``row`` from ``db.alerts``), and when
    (epoch seconds, by the rules of :func:`sweep`); None if nothing is due."""
    if row.status == "rejected" and row.evidence_deleted_at is None and row.reviewed_at:
        return "evidence", float(row.reviewed_at) + cfg.rejected_evidence_s
    if row.status == "confirmed" and row.reviewed_at:
        return "alert", float(row.reviewed_at) + cfg.confirmed_days * _DAY_S
    if row.status == "new":
        return "alert", float(row.received_at) + cfg.unreviewed_days * _DAY_S
    return None


def _sweep_label_crops(conn: Connection, cfg: RetentionConfig, now: float) -> tuple[int, int]:
    """Delete labelling crops past their time that no dataset version holds, then the dataset
    JPEGs no version holds; returns (crops, JPEGs) deleted."""
    lb, de, b = db.labels, db.dataset_examples, db.example_blobs
    in_dataset = sa.select(de.c.sha256).where(de.c.sha256 == lb.c.sha256).exists()
    confirmed = sa.and_(lb.c.source == "review", lb.c.label == "phone")
    due = sa.or_(
        sa.and_(~confirmed, lb.c.received_at <= now - cfg.label_crops_days * _DAY_S),
        sa.and_(
            confirmed,
            sa.func.coalesce(lb.c.labelled_at, lb.c.received_at)
            <= now - cfg.confirmed_days * _DAY_S,
        ),
    )
    crops = conn.execute(lb.delete().where(due, ~in_dataset)).rowcount or 0
    held = sa.select(de.c.sha256).where(de.c.sha256 == b.c.sha256).exists()
    blobs = conn.execute(b.delete().where(~held)).rowcount or 0
    return int(crops), int(blobs)


def label_crops_due(
    conn: Connection, cfg: RetentionConfig, *, now: float | None = None, within_s: float
) -> tuple[int, float | None]:
    """How many labelling crops (not held by a dataset version) retention will delete within
    ``within_s`` from now, and when the first of them goes (None when none)."""
    now = time.time() if now is None else now
    lb, de = db.labels, db.dataset_examples
    in_dataset = sa.select(de.c.sha256).where(de.c.sha256 == lb.c.sha256).exists()
    confirmed = sa.and_(lb.c.source == "review", lb.c.label == "phone")
    goes = sa.case(
        (
            confirmed,
            sa.func.coalesce(lb.c.labelled_at, lb.c.received_at) + cfg.confirmed_days * _DAY_S,
        ),
        else_=lb.c.received_at + cfg.label_crops_days * _DAY_S,
    )
    n, first = conn.execute(
        sa.select(sa.func.count(), sa.func.min(goes)).where(~in_dataset, goes <= now + within_s)
    ).one()
    return int(n or 0), None if first is None else max(float(first), now)


class Sweeper:
    """Runs :func:`sweep` every ``sweep_interval_s`` on a thread."""

    def __init__(self, engine: Engine, cfg: RetentionConfig) -> None:
        self.engine = engine
        self.cfg = cfg
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._main, name="controlroom-retention", daemon=True
        )
        self.last: dict[str, Any] = {}

    def _main(self) -> None:
        while not self._stop.is_set():
            try:
                self.last = sweep(self.engine, self.cfg)
            except sa.exc.SQLAlchemyError as e:
                log.error("retention sweep failed (will retry): %s", e)
            self._stop.wait(self.cfg.sweep_interval_s)

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
