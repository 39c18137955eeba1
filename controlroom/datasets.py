"""Labelled examples and dataset versions (issue 18, "site learning").

**One place for labelled examples: the ``labels`` table.** Two sources write to it:

* ``collect``: crops a unit sent after a ``collect`` command, labelled by hand on ``/labels``
  (their ROI and time come from the crop's name, ``<roi>-<ms>``);
* ``review``: every reviewed alert whose crop arrived (the one its signed ``crop_sha256``
  names). A confirmation makes it a ``phone`` example, a rejection a ``no_phone`` hard
  negative, with the signed alert's ROI, time, model and score, and the review as
  ``labelled_by`` / ``labelled_at``. :func:`label_review` is called by the review routes;
  :func:`unlabel_review` by undo; :func:`sync_review_labels` catches up the reviews whose crop
  arrived after the decision (and reviews made before migration 8).

The review label holds its own copy of the crop: retention deletes a rejected alert's crop
an hour after the review, and a hard negative has to outlive that.

**Dataset versions** are immutable and content-addressed. :func:`create_dataset` snapshots
every current ``phone`` / ``no_phone`` example; its id is the SHA-256 over its sorted
``"<sha256>,<label>,<split>\\n"`` rows (:func:`dataset_id`), so creating again with nothing
changed gives the same id. The split is by unit-day (:func:`split_of`): all of one unit's
examples of one UTC day go to the same side, chosen by a hash of unit and day, so one driver,
one light and one camera angle never sit on both sides and a unit-day never changes side from
one version to the next. :func:`export_dataset` writes the image folder.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from controlroom import db
from controlroom.errors import ControlRoomError

LABELS = ("phone", "no_phone")
SPLITS = ("train", "heldout")
HELDOUT_SHARE = 0.2
SPLIT_RULE = (
    "split by unit-day: every example of one unit on one UTC day goes to the same split; "
    "heldout when the first 16 hex digits of SHA-256('<unit>/<YYYY-MM-DD>'), as an integer, "
    "are below 0.2 * 2**64 (about 20 % of unit-days), else train"
)
ID_RULE = (
    "SHA-256 over the UTF-8 lines '<sha256>,<label>,<split>\\n' of every example, "
    "sorted; <sha256> is the SHA-256 of the JPEG"
)
INDEX_COLUMNS = (
    "path",
    "sha256",
    "label",
    "split",
    "unit",
    "day",
    "roi",
    "time",
    "source",
    "reviewer",
    "reviewed_at",
    "model_name",
    "model_version",
    "score",
    "alert_id",
)
EVAL_COLUMNS = ("file", "phone", "unit", "day", "roi", "source", "model_version")
"""Each split folder's own ``index.csv``, as ``phonewatch eval`` reads it: ``file`` relative
to the folder, ``phone`` 1 / 0, and the columns it reports results by (no per-image ones)."""

_COLLECT_NAME = re.compile(r"^(?P<roi>[A-Za-z0-9_-]{1,32})-(?P<ms>[0-9]{1,16})$")
_l = db.labels


# -- review labels ------------------------------------------------------------------------------


def label_review(conn: Connection, alert_id: str) -> bool:
    """Make a reviewed alert's crop a labelled example (``phone`` if confirmed, ``no_phone``
    if rejected); False when there is nothing to label: the alert is not reviewed, its crop
    has not arrived, or the same crop is already labelled for that unit."""
    a = db.alerts
    row = conn.execute(sa.select(a).where(a.c.alert_id == alert_id)).first()
    if row is None or row.status not in ("confirmed", "rejected") or not row.payload:
        return False
    alert = json.loads(row.payload)
    want = (alert.get("evidence") or {}).get("crop_sha256")
    crop = (
        conn.execute(
            sa.select(db.crops.c.jpeg, db.crops.c.received_at)
            .where(db.crops.c.alert_id == alert_id, db.crops.c.sha256 == want)
            .limit(1)
        ).first()
        if want
        else None
    )
    if crop is None:
        return False
    model = alert.get("model") or {}
    added = db.insert_ignore_returning(
        conn,
        _l,
        ["unit", "sha256"],
        [
            {
                "unit": row.unit,
                "name": alert_id[:128],
                "sha256": want,
                "jpeg": bytes(crop.jpeg),
                "received_at": crop.received_at,
                "label": "phone" if row.status == "confirmed" else "no_phone",
                "labelled_by": row.reviewed_by,
                "labelled_at": row.reviewed_at,
                "source": "review",
                "alert_id": alert_id,
                "roi": row.roi,
                "taken_at": row.time_s,
                "model_name": str(model.get("name", ""))[:128] or None,
                "model_version": str(model.get("version", ""))[:64] or None,
                "score": row.score,
            }
        ],
        _l.c.id,
    )
    return bool(added)


def unlabel_review(conn: Connection, alert_id: str) -> int:
    """Undo of a review: its label goes too. Returns the rows deleted."""
    res = conn.execute(_l.delete().where(_l.c.alert_id == alert_id, _l.c.source == "review"))
    return int(res.rowcount or 0)


def sync_review_labels(conn: Connection) -> int:
    """Label every reviewed alert whose crop is stored but which has no review label yet
    (the crop came after the decision, or the review predates migration 8); the count."""
    a, c = db.alerts, db.crops
    labelled = (
        sa.select(_l.c.id).where(_l.c.alert_id == a.c.alert_id, _l.c.source == "review").exists()
    )
    has_crop = sa.select(c.c.id).where(c.c.alert_id == a.c.alert_id).exists()
    ids = [
        r[0]
        for r in conn.execute(
            sa.select(a.c.alert_id).where(
                a.c.status.in_(("confirmed", "rejected")), has_crop, ~labelled
            )
        )
    ]
    return sum(label_review(conn, aid) for aid in ids)


# -- examples and the split ---------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    sha256: str
    label: str
    split: str
    unit: str
    day: str
    roi: str | None
    taken_at: float | None
    source: str
    alert_id: str | None
    labelled_by: str | None
    labelled_at: float | None
    model_name: str | None
    model_version: str | None
    score: float | None


def utc_day(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")


def split_of(unit: str, day: str) -> str:
    """``heldout`` or ``train`` for all of ``unit``'s examples of ``day`` (see SPLIT_RULE)."""
    h = int(hashlib.sha256(f"{unit}/{day}".encode()).hexdigest()[:16], 16)
    return "heldout" if h < HELDOUT_SHARE * 2**64 else "train"


def dataset_id(rows: Iterable[tuple[str, str, str]]) -> str:
    """The id of a dataset of ``(sha256, label, split)`` rows (see ID_RULE)."""
    h = hashlib.sha256()
    for sha, label, split in sorted(rows):
        h.update(f"{sha},{label},{split}\n".encode())
    return h.hexdigest()


def _roi_and_time(r: Any) -> tuple[str | None, float]:
    if r.source == "review":
        return r.roi, r.taken_at if r.taken_at is not None else r.received_at
    m = _COLLECT_NAME.match(r.name or "")
    if m is None:  # a sampled or calibration crop: the queue wrote its ROI and time when labelled
        return r.roi, r.taken_at if r.taken_at is not None else r.received_at
    return m["roi"], int(m["ms"]) / 1000.0


def current_examples(conn: Connection) -> tuple[list[Example], int]:
    """Every labelled example (``phone`` / ``no_phone``; not ``skip`` or queued), one per
    JPEG: a crop labelled more than once counts once (the earliest label) when the labels
    agree, and not at all when they disagree. Returns (examples, crops left out as
    conflicting)."""
    rows = conn.execute(
        sa.select(
            _l.c.unit,
            _l.c.name,
            _l.c.sha256,
            _l.c.received_at,
            _l.c.label,
            _l.c.labelled_by,
            _l.c.labelled_at,
            _l.c.source,
            _l.c.alert_id,
            _l.c.roi,
            _l.c.taken_at,
            _l.c.model_name,
            _l.c.model_version,
            _l.c.score,
        )
        .where(_l.c.label.in_(LABELS))
        .order_by(_l.c.labelled_at, _l.c.id)
    )
    first: dict[str, Example] = {}
    conflicts: set[str] = set()
    for r in rows:
        if r.sha256 in first:
            if first[r.sha256].label != r.label:
                conflicts.add(r.sha256)
            continue
        roi, t = _roi_and_time(r)
        day = utc_day(t)
        first[r.sha256] = Example(
            sha256=r.sha256,
            label=r.label,
            split=split_of(r.unit, day),
            unit=r.unit,
            day=day,
            roi=roi,
            taken_at=t,
            source=r.source,
            alert_id=r.alert_id,
            labelled_by=r.labelled_by,
            labelled_at=r.labelled_at,
            model_name=r.model_name,
            model_version=r.model_version,
            score=r.score,
        )
    examples = [e for s, e in sorted(first.items()) if s not in conflicts]
    return examples, len(conflicts)


# -- dataset versions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Created:
    id: str
    new: bool
    """False when a version with exactly these rows existed already (it is returned)."""
    manifest: dict[str, Any]


def _counts(examples: Iterable[Example]) -> dict[str, dict[str, int]]:
    out = {s: dict.fromkeys(LABELS, 0) for s in SPLITS}
    for e in examples:
        out[e.split][e.label] += 1
    return out


def create_dataset(engine: Engine, *, user: str, note: str | None = None) -> Created:
    """Snapshot every current labelled example into a dataset version (one transaction)."""
    with engine.begin() as conn:
        synced = sync_review_labels(conn)
        examples, conflicts = current_examples(conn)
        if not examples:
            raise ControlRoomError(
                "no labelled examples yet: review alerts whose crop arrived, "
                "or label collected crops on /labels"
            )
        did = dataset_id((e.sha256, e.label, e.split) for e in examples)
        old = conn.execute(
            sa.select(db.datasets.c.manifest).where(db.datasets.c.id == did)
        ).scalar()
        if old is not None:
            return Created(did, False, json.loads(old))
        now = time.time()
        unit_days = {
            s: sorted({f"{e.unit}/{e.day}" for e in examples if e.split == s}) for s in SPLITS
        }
        manifest = {
            "id": did,
            "created": datetime.fromtimestamp(now, UTC).isoformat(),
            "created_by": user,
            "note": note or None,
            "examples": len(examples),
            "counts": _counts(examples),
            "unit_days": {s: len(v) for s, v in unit_days.items()},
            "heldout_unit_days": unit_days["heldout"],
            "left_out_conflicting_labels": conflicts,
            "split_rule": SPLIT_RULE,
            "id_rule": ID_RULE,
            "label_rule": "source review: confirmed alert = phone, rejected = no_phone; "
            "source collect: labelled by hand on /labels (skip left out)",
        }
        conn.execute(
            db.datasets.insert().values(
                id=did,
                created_at=now,
                created_by=user,
                note=note or None,
                examples=len(examples),
                manifest=json.dumps(manifest, sort_keys=True),
            )
        )
        conn.execute(
            db.dataset_examples.insert(), [{"dataset_id": did, **asdict(e)} for e in examples]
        )
        _store_blobs(conn, [e.sha256 for e in examples], now)
        db.record_audit(
            conn,
            username=user,
            action="dataset_create",
            target=did[:32],
            detail=f"{len(examples)} examples; {synced} late review labels added"
            + (f"; {note[:500]}" if note else ""),
        )
    return Created(did, True, manifest)


def _store_blobs(conn: Connection, shas: list[str], now: float) -> None:
    """Copy each example's JPEG into ``example_blobs`` (once per SHA-256), so a version
    exports the same bytes whatever happens to its labels later."""
    b = db.example_blobs
    for chunk in db.chunks(shas, 200):
        have = set(conn.execute(sa.select(b.c.sha256).where(b.c.sha256.in_(chunk))).scalars())
        want = [s for s in chunk if s not in have]
        if not want:
            continue
        rows: dict[str, dict[str, Any]] = {}
        for sha, jpeg in conn.execute(
            sa.select(_l.c.sha256, _l.c.jpeg).where(_l.c.sha256.in_(want))
        ):
            rows.setdefault(sha, {"sha256": sha, "jpeg": bytes(jpeg), "stored_at": now})
        db.insert_ignore_returning(conn, b, ["sha256"], list(rows.values()), b.c.sha256)


def list_datasets(conn: Connection, limit: int = 20) -> list[dict[str, Any]]:
    d = db.datasets
    return [
        {**json.loads(r.manifest), "created_at": r.created_at}
        for r in conn.execute(
            sa.select(d.c.manifest, d.c.created_at).order_by(d.c.created_at.desc()).limit(limit)
        )
    ]


def delete_dataset(engine: Engine, ident: str, *, user: str, remote: str | None = None) -> str:
    """Delete dataset version ``ident`` (an id or a unique prefix): its row and its examples,
    audited. Its JPEGs are personal data like the crops they came from: retention deletes
    each one that no other version holds at its next sweep, and each labelled crop it was
    holding is then deleted once it is past ``retention.label_crops_days`` (or, for a confirmed
    alert's crop, ``confirmed_days``). Returns the full id."""
    with engine.begin() as conn:
        did = resolve_id(conn, ident)
        n = conn.execute(
            db.dataset_examples.delete().where(db.dataset_examples.c.dataset_id == did)
        ).rowcount
        conn.execute(db.datasets.delete().where(db.datasets.c.id == did))
        db.record_audit(
            conn,
            username=user,
            action="dataset_delete",
            target=did[:32],
            detail=f"{int(n or 0)} examples; their crops now follow the retention rule",
            remote=remote,
        )
    return did


def resolve_id(conn: Connection, prefix: str) -> str:
    """The full id of the one dataset version whose id starts with ``prefix`` (>= 8 hex)."""
    if not re.fullmatch(r"[0-9a-f]{8,64}", prefix):
        raise ControlRoomError(f"dataset id {prefix[:70]!r}: give at least 8 hex digits")
    ids = list(
        conn.execute(
            sa.select(db.datasets.c.id)
            .where(db.datasets.c.id.startswith(prefix, autoescape=True))
            .limit(2)
        ).scalars()
    )
    if len(ids) != 1:
        raise ControlRoomError(
            f"no dataset version {prefix}"
            if not ids
            else f"dataset id {prefix} is ambiguous: give more digits"
        )
    return str(ids[0])


# -- export -------------------------------------------------------------------------------------


def _iso(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _index_row(r: Any, path: str) -> dict[str, str]:
    return {
        "path": path,
        "sha256": r.sha256,
        "label": r.label,
        "split": r.split,
        "unit": r.unit,
        "day": r.day,
        "roi": r.roi or "",
        "time": _iso(r.taken_at),
        "source": r.source,
        "reviewer": r.labelled_by or "",
        "reviewed_at": _iso(r.labelled_at),
        "model_name": r.model_name or "",
        "model_version": r.model_version or "",
        "score": "" if r.score is None else repr(float(r.score)),
        "alert_id": r.alert_id or "",
    }


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def export_dataset(engine: Engine, ident: str, out: Path, *, user: str = "cli") -> dict[str, Any]:
    """Write dataset version ``ident`` (an id or a unique prefix of one) as an image folder:
    ``out/<split>/<label>/<sha256>.jpg``, ``out/index.csv`` (one row per image, with its
    provenance), ``out/<split>/index.csv`` (what ``phonewatch eval --data out/<split>``
    reads), ``out/labels.csv`` (unit-day groups, as ``models/data.py`` reads them) and
    ``out/MANIFEST.json``. Refuses a non-empty ``out``; writes into a temporary sibling
    folder first, so a failed export leaves nothing half-written. Returns the manifest."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ControlRoomError(
            f"{out} exists and is not an empty folder: refusing to overwrite it; give a new folder"
        )
    with engine.begin() as conn:
        did = resolve_id(conn, ident)
        manifest = json.loads(
            conn.execute(
                sa.select(db.datasets.c.manifest).where(db.datasets.c.id == did)
            ).scalar_one()
        )
        de, b = db.dataset_examples, db.example_blobs
        rows = list(
            conn.execute(
                sa.select(de, b.c.jpeg)
                .join(b, b.c.sha256 == de.c.sha256, isouter=True)
                .where(de.c.dataset_id == did)
                .order_by(de.c.split, de.c.label, de.c.sha256)
            )
        )
        tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _write_folder(tmp, rows, manifest)
            if out.exists():
                out.rmdir()
            tmp.rename(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        db.record_audit(
            conn,
            username=user,
            action="dataset_export",
            target=did[:32],
            detail=f"{len(rows)} examples to {str(out)[:200]}",
        )
    return dict(manifest)


def _write_folder(tmp: Path, rows: list[Any], manifest: dict[str, Any]) -> None:
    index: list[dict[str, str]] = []
    per_split: dict[str, list[dict[str, str]]] = {s: [] for s in SPLITS}
    for r in rows:
        jpeg = bytes(r.jpeg) if r.jpeg is not None else b""
        if hashlib.sha256(jpeg).hexdigest() != r.sha256:
            raise ControlRoomError(
                f"dataset {r.dataset_id[:16]}: the stored JPEG of "
                f"{r.sha256} is missing or does not match its SHA-256"
            )
        rel = f"{r.label}/{r.sha256}.jpg"
        (tmp / r.split / r.label).mkdir(parents=True, exist_ok=True)
        (tmp / r.split / rel).write_bytes(jpeg)
        row = _index_row(r, f"{r.split}/{rel}")
        index.append(row)
        per_split[r.split].append({**row, "file": rel, "phone": "1" if r.label == "phone" else "0"})
    _write_csv(tmp / "index.csv", INDEX_COLUMNS, index)
    for split, srows in per_split.items():
        for label in LABELS:  # eval wants both class folders, even when one is empty
            (tmp / split / label).mkdir(parents=True, exist_ok=True)
        _write_csv(tmp / split / "index.csv", EVAL_COLUMNS, srows)
    _write_csv(
        tmp / "labels.csv",
        ("path", "source_frame"),
        [{"path": r["path"], "source_frame": f"{r['unit']}/{r['day']}"} for r in index],
    )
    (tmp / "MANIFEST.json").write_text(
        json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )


def rehash_export(folder: Path) -> str:
    """The dataset id recomputed from an exported folder: each image's SHA-256 (checked
    against its name) with the label and split of its ``index.csv`` row."""
    rows = []
    with (folder / "index.csv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            sha = hashlib.sha256((folder / row["path"]).read_bytes()).hexdigest()
            if row["path"] != f"{row['split']}/{row['label']}/{sha}.jpg":
                raise ControlRoomError(f"{row['path']}: content does not match its name")
            rows.append((sha, row["label"], row["split"]))
    return dataset_id(rows)


# -- live quality -------------------------------------------------------------------------------


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95 % for z = 1.96) for ``k`` successes in ``n``; (0, 1) at n=0."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z / d * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Precision:
    key: str
    confirmed: int
    rejected: int

    @property
    def reviewed(self) -> int:
        return self.confirmed + self.rejected

    @property
    def precision(self) -> float | None:
        return self.confirmed / self.reviewed if self.reviewed else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.confirmed, self.reviewed)


def precision_by(conn: Connection, column: str) -> list[Precision]:
    """Reviewers' verdicts per ``unit`` or per ``model`` (name and version as the alert
    signed them): confirmed / (confirmed + rejected), over the alerts not yet purged."""
    a = db.alerts
    col = {"unit": a.c.unit, "model": a.c.model}[column]
    q = (
        sa.select(col, a.c.status, sa.func.count())
        .where(a.c.status.in_(("confirmed", "rejected")))
        .group_by(col, a.c.status)
    )
    got: dict[str, dict[str, int]] = {}
    for key, status, n in conn.execute(q):
        got.setdefault(str(key or "unknown"), {})[status] = int(n)
    return [
        Precision(k, v.get("confirmed", 0), v.get("rejected", 0)) for k, v in sorted(got.items())
    ]
