"""The labelling queue's logic, apart from the web: what a queued crop is (its kind, ROI and
time, read from its name), the sessions it groups into, labelling crops one at a time, in bulk
or by time range, and undoing a labelling action.

Crops reach the queue on ``<root>/<unit>/collect/<name>`` (``controlroom/ingest.py`` stores
them in ``labels`` with ``source = collect``). The name says what the crop is:

* ``<roi>-<ms>``: a crop the unit sent after a ``collect`` command (``messages.collect_name``);
* ``rnd-<ms>-…`` / ``unc-<ms>-…``: the background sampler's random and uncertain crops;
* ``cal<run ms>-<ms>-…``: every crop of a ``calibrate`` run, whose crops share the run's start
  (``messages.sample_name``);

anything else counts as collected at its arrival time, with no ROI.

**Sessions.** The queue is shown by session, not by raw name: one calibration run (unit and
run start), one unit's random or uncertain samples of one local day, or one unit's collected
crops with no gap longer than :data:`COLLECT_GAP_S` (one ``collect`` request, normally).

**Batches.** Every labelling action (one crop, a bulk selection, a time range) stamps the crops
it labels with the same ``labelled_at``; with ``labelled_by`` that pair identifies the action
(:class:`Batch`), so undo needs no extra table: it puts back in the queue the crops that still
carry that pair. Only queued crops (``label IS NULL``, ``source = collect``) are labelled here;
a review's label is never touched.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from controlroom import db
from edge.core.messages import parse_sample_name

CHOICES = ("phone", "no_phone", "skip")
"""What a queued crop can be labelled; ``skip`` takes it out of the queue and out of datasets."""
RANGE_CHOICES = ("phone", "no_phone")
COLLECT_GAP_S = 600.0
"""Collected crops of one unit further apart than this are separate sessions."""
UNDO_WINDOW_S = 3600.0
"""A labeller may undo their own labelling action (one crop, bulk or a range) this long after."""
MAX_BULK = 500
"""At most this many crops in one bulk label (a time range has no limit)."""
KINDS = {
    "calibration": "Calibration run",
    "random": "Random samples",
    "uncertain": "Uncertain samples",
    "collect": "Collected crops",
}

_COLLECT_NAME = re.compile(r"^(?P<roi>[A-Za-z0-9_-]{1,32})-(?P<ms>[0-9]{1,16})$")
_l = db.labels


class LabellingError(ValueError):
    """A labelling request that cannot be done; the message says why (shown to the operator)."""


@dataclass(frozen=True)
class CropFacts:
    """A queued crop: what it is and when and where it was taken."""

    id: int
    unit: str
    kind: str  # a key of KINDS
    roi: str | None
    t: float  # the frame's wall time (epoch s), or the arrival time when the name has none
    score: float | None = None
    run_ms: int | None = None


def facts_of(row_id: int, unit: str, name: str, received_at: float) -> CropFacts:
    """What a crop's name says (see the module docstring)."""
    s = parse_sample_name(name or "")
    if s is not None:
        return CropFacts(row_id, unit, s.reason, s.roi, s.t_wall_ms / 1000.0, s.score, s.run_ms)
    m = _COLLECT_NAME.match(name or "")
    if m is not None:
        return CropFacts(row_id, unit, "collect", m["roi"], int(m["ms"]) / 1000.0)
    return CropFacts(row_id, unit, "collect", None, received_at)


def queued(
    conn: Connection, *, unit: str | None = None, upto_id: int | None = None
) -> list[CropFacts]:
    """Every crop waiting for a label (optionally of one unit, or not newer than ``upto_id``),
    in time order. Reads names only, never the JPEGs."""
    q = sa.select(_l.c.id, _l.c.unit, _l.c.name, _l.c.received_at).where(
        _l.c.label.is_(None), _l.c.source == "collect"
    )
    if unit is not None:
        q = q.where(_l.c.unit == unit)
    if upto_id is not None:
        q = q.where(_l.c.id <= upto_id)
    out = [facts_of(r.id, r.unit, r.name, r.received_at) for r in conn.execute(q)]
    out.sort(key=lambda c: (c.t, c.id))
    return out


# -- sessions -----------------------------------------------------------------------------------


def local_day(t: float) -> str:
    return datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d")


@dataclass
class Session:
    """A group of queued crops shown under one heading."""

    key: str
    kind: str
    unit: str
    crops: list[CropFacts] = field(default_factory=list)

    @property
    def start(self) -> float:
        return self.crops[0].t

    @property
    def end(self) -> float:
        return self.crops[-1].t

    @property
    def title(self) -> str:
        return KINDS[self.kind]

    @property
    def per_roi(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.crops:
            out[c.roi or "?"] = out.get(c.roi or "?", 0) + 1
        return dict(sorted(out.items()))


def _session_key(c: CropFacts, collect_start: float | None) -> str:
    if c.kind == "calibration":
        return f"cal:{c.unit}:{c.run_ms}"
    if c.kind in ("random", "uncertain"):
        return f"{c.kind[:3]}:{c.unit}:{local_day(c.t)}"
    return f"col:{c.unit}:{int((collect_start or c.t) * 1000)}"


def sessions(crops: Iterable[CropFacts]) -> list[Session]:
    """The queued crops (in time order) grouped into sessions, oldest session first."""
    out: dict[str, Session] = {}
    last_collect: dict[str, tuple[float, float]] = {}  # unit -> (session start, last crop)
    for c in crops:
        start = None
        if c.kind == "collect":
            prev = last_collect.get(c.unit)
            start = prev[0] if prev is not None and c.t - prev[1] <= COLLECT_GAP_S else c.t
            last_collect[c.unit] = (start, c.t)
        key = _session_key(c, start)
        s = out.get(key)
        if s is None:
            s = out[key] = Session(key, c.kind, c.unit)
        s.crops.append(c)
    return sorted(out.values(), key=lambda s: (s.start, s.key))


# -- labelling ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One labelling action: the crops ``by`` labelled at ``at`` (see the module docstring)."""

    by: str
    at: float

    @property
    def token(self) -> str:
        """``at`` as text that parses back to the same float (``repr`` round-trips)."""
        return repr(self.at)

    @staticmethod
    def parse(by: str, token: str) -> Batch:
        try:
            at = float(token)
        except ValueError:
            raise LabellingError(f"{token[:40]!r} is not a labelling action") from None
        if not 0 < at < 1e11:
            raise LabellingError(f"{token[:40]!r} is not a labelling action")
        return Batch(by, at)


def check_label(label: str, choices: Sequence[str] = CHOICES) -> str:
    if label not in choices:
        raise LabellingError(f"label must be one of {', '.join(choices)}, not {label[:20]!r}")
    return label


def label_crops(
    conn: Connection, crops: Sequence[CropFacts], label: str, *, user: str, now: float | None = None
) -> tuple[Batch, list[int]]:
    """Label the given crops that are still queued (someone else may have labelled some
    meanwhile; those are left as they are). The crop's ROI and time from its name are written
    too (its provenance in datasets). Returns the batch and the ids it labelled."""
    check_label(label)
    batch = Batch(user, time.time() if now is None else now)
    done: list[int] = []
    for chunk in db.chunks(list(crops), 500):
        ids = [c.id for c in chunk]
        open_ids = set(
            conn.execute(
                sa.select(_l.c.id).where(
                    _l.c.id.in_(ids), _l.c.label.is_(None), _l.c.source == "collect"
                )
            ).scalars()
        )
        rows = [{"b_id": c.id, "b_roi": c.roi, "b_t": c.t} for c in chunk if c.id in open_ids]
        if not rows:
            continue
        conn.execute(
            _l.update()
            .where(_l.c.id == sa.bindparam("b_id"), _l.c.label.is_(None))
            .values(
                label=label,
                labelled_by=user,
                labelled_at=batch.at,
                roi=sa.bindparam("b_roi"),
                taken_at=sa.bindparam("b_t"),
            ),
            rows,
        )
        done.extend(r["b_id"] for r in rows)
    return batch, done


def crops_by_id(conn: Connection, ids: Sequence[int]) -> list[CropFacts]:
    """The crops with these ids (any state); unknown ids are left out."""
    out: list[CropFacts] = []
    for chunk in db.chunks(list(ids), 500):
        for r in conn.execute(
            sa.select(_l.c.id, _l.c.unit, _l.c.name, _l.c.received_at, _l.c.source).where(
                _l.c.id.in_(chunk)
            )
        ):
            if r.source == "collect":
                out.append(facts_of(r.id, r.unit, r.name, r.received_at))
    return out


@dataclass(frozen=True)
class TimeRange:
    """Every queued crop of ``unit`` (and ``roi``, if given) taken from ``t_from`` to ``t_to``
    (both included), among the crops stored when the range was previewed (``upto_id``)."""

    unit: str
    t_from: float
    t_to: float
    roi: str | None = None
    upto_id: int | None = None

    def check(self) -> TimeRange:
        if not self.unit:
            raise LabellingError("choose a unit")
        if self.t_from > self.t_to:
            raise LabellingError(
                f"From ({_clock(self.t_from)}) is after To ({_clock(self.t_to)}): no crop can match"
            )
        return self

    def crops(self, conn: Connection) -> list[CropFacts]:
        return [
            c
            for c in queued(conn, unit=self.unit, upto_id=self.upto_id)
            if self.t_from <= c.t <= self.t_to and (not self.roi or c.roi == self.roi)
        ]

    def describe(self) -> str:
        """e.g. ``junction-0001 lane1 2026-12-07 10:02:00–10:07:00 CET``."""
        a, b = _clock(self.t_from), _clock(self.t_to)
        if a[:10] == b[:10]:
            b = b[11:]
        return f"{self.unit}{' ' + self.roi if self.roi else ''} {a.rsplit(' ', 1)[0]}–{b}"


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def newest_id(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.max(_l.c.id))).scalar() or 0)


def rois_of(crops: Iterable[CropFacts]) -> dict[str, list[str]]:
    """Each unit among ``crops`` (the queue), and the ROIs its crops name."""
    out: dict[str, set[str]] = {}
    for c in crops:
        out.setdefault(c.unit, set())
        if c.roi:
            out[c.unit].add(c.roi)
    return {u: sorted(r) for u, r in sorted(out.items())}


# -- undo ---------------------------------------------------------------------------------------


def batch_ids(conn: Connection, batch: Batch) -> list[int]:
    """The crops that still carry this action's label."""
    return list(
        conn.execute(
            sa.select(_l.c.id).where(
                _l.c.labelled_by == batch.by,
                _l.c.labelled_at == batch.at,
                _l.c.source == "collect",
                _l.c.label.is_not(None),
            )
        ).scalars()
    )


def undo(conn: Connection, batch: Batch, *, now: float | None = None) -> list[int]:
    """Put the crops of ``batch`` back in the queue; only its own labeller, within
    :data:`UNDO_WINDOW_S`. Returns the ids put back (none when it was undone already)."""
    now = time.time() if now is None else now
    if now - batch.at > UNDO_WINDOW_S:
        raise LabellingError(
            f"that labelling is more than {UNDO_WINDOW_S / 60:.0f} minutes old and can no "
            "longer be undone; label the crops again instead"
        )
    ids = batch_ids(conn, batch)
    for chunk in db.chunks(ids, 500):
        conn.execute(
            _l.update()
            .where(_l.c.id.in_(chunk))
            .values(label=None, labelled_by=None, labelled_at=None)
        )
    return ids


@dataclass(frozen=True)
class RecentAction:
    """A labelling action the operator may still undo (shown on /labels)."""

    batch: Batch
    what: str
    left: int  # crops that still carry its label


def recent_actions(conn: Connection, user: str, *, now: float | None = None) -> list[RecentAction]:
    """``user``'s labelling actions of the undo window that still have labelled crops, newest
    first (from the audit log, whose target is ``labels@<batch>``)."""
    now = time.time() if now is None else now
    a = db.audit
    out: list[RecentAction] = []
    for r in conn.execute(
        sa.select(a.c.target, a.c.detail)
        .where(
            a.c.username == user,
            a.c.action.in_(("label", "label_bulk", "label_range")),
            a.c.at >= now - UNDO_WINDOW_S,
            a.c.target.startswith("labels@"),
        )
        .order_by(a.c.id.desc())
        .limit(20)
    ):
        try:
            batch = Batch.parse(user, str(r.target).removeprefix("labels@"))
        except LabellingError:
            continue
        left = len(batch_ids(conn, batch))
        if left:
            out.append(RecentAction(batch, str(r.detail or ""), left))
    return out


def audit_label(
    conn: Connection, *, action: str, batch: Batch, detail: str, remote: str | None
) -> None:
    db.record_audit(
        conn,
        username=batch.by,
        action=action,
        target=f"labels@{batch.token}",
        detail=detail[:2000],
        remote=remote,
    )


def summary(ids: Sequence[int], label: str) -> str:
    """``3 crops as phone (ids 4, 5, 9)``, the id list cut after 20."""
    shown = ", ".join(str(i) for i in list(ids)[:20]) + (" …" if len(ids) > 20 else "")
    return f"{len(ids)} crop{'s' if len(ids) != 1 else ''} as {label} (ids {shown})"


def as_dict(c: CropFacts) -> dict[str, Any]:
    return {"id": c.id, "unit": c.unit, "kind": c.kind, "roi": c.roi, "t": c.t, "score": c.score}
