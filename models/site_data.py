"""A force's site dataset: the control room's export folder, read and checked (no TensorFlow).

The export is an image folder with an ``index.csv``; each row is one labelled crop::

    path,label,unit,roi,time,source,reviewer,split[,session,day,file,phone,...]

``path`` is relative to the folder (``phone/x.jpg``), ``label`` is ``phone`` / ``no_phone``
(or 1 / 0), ``time`` is ISO 8601 (UTC), ``split`` is ``train`` or ``test`` (``val`` counts as
train: the trainer holds out its own validation sessions). Crops of one *session* (the
``session`` column; without one, a unit's day: ``unit`` plus the date of ``time``) share
camera, glass and light, so a session must never be on both sides of the split: the reader
refuses such a dataset. ``file`` and ``phone`` (what ``phonewatch eval`` reads from an
``index.csv``) are optional; where present they must agree with ``path`` and ``label``.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REQUIRED_COLUMNS = ("path", "label", "unit", "roi", "time", "source", "reviewer", "split")
LABEL_VALUES = {"phone": 1, "1": 1, "no_phone": 0, "0": 0}
TRAIN_SPLITS = ("train", "val", "validation")
TEST_SPLITS = ("test", "heldout")
"""``heldout`` is what the control room's dataset export calls its held-out split."""
GROUP_BY = ("session", "unit", "day")


class DatasetError(ValueError):
    """The dataset folder or its ``index.csv`` is missing, malformed or leaks a session."""


@dataclass(frozen=True, slots=True)
class SiteRow:
    """One labelled crop of the export."""

    path: Path
    """Absolute path of the image."""
    rel: str
    """``path`` as written in the index (relative to the dataset folder)."""
    label: int
    unit: str
    roi: str
    time: str
    source: str
    reviewer: str
    split: str
    """``train`` or ``test`` (``val`` / ``validation`` are read as ``train``)."""
    session: str
    day: str
    extra: dict[str, str] = field(default_factory=dict)

    def group(self, by: str = "session") -> str:
        """The key whole crops are split by: session, unit or day (a unit's day)."""
        if by == "session":
            return self.session
        if by == "unit":
            return self.unit
        if by == "day":
            return f"{self.unit}/{self.day}"
        raise ValueError(f"group_by must be one of {GROUP_BY}, not {by!r}")


def _day(time: str, where: str) -> str:
    try:
        return dt.datetime.fromisoformat(time.replace("Z", "+00:00")).date().isoformat()
    except ValueError:
        raise DatasetError(f"{where}: time {time!r} is not ISO 8601") from None


def _row(rec: dict[str, str], base: Path, where: str, *, check_files: bool) -> SiteRow:
    """One ``index.csv`` record, checked."""
    rel = (rec.get("path") or "").strip()
    if not rel:
        raise DatasetError(f"{where}: empty path")
    if Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise DatasetError(f"{where}: path {rel!r} leaves the dataset folder")
    path = base / rel
    if check_files and not path.is_file():
        raise DatasetError(f"{where}: {rel} does not exist")
    label_text = (rec.get("label") or "").strip().lower()
    if label_text not in LABEL_VALUES:
        raise DatasetError(f"{where}: label {rec.get('label')!r} is not phone or no_phone")
    label = LABEL_VALUES[label_text]
    if rec.get("phone") not in (None, "", str(label)):
        raise DatasetError(f"{where}: phone={rec['phone']} contradicts label {label_text}")
    if rec.get("file") not in (None, "", rel):
        raise DatasetError(f"{where}: file {rec['file']!r} is not path {rel!r}")
    split = (rec.get("split") or "").strip().lower()
    if split not in TRAIN_SPLITS + TEST_SPLITS:
        raise DatasetError(f"{where}: split {rec.get('split')!r} is not train or test")
    unit = (rec.get("unit") or "").strip()
    time = (rec.get("time") or "").strip()
    if not unit or not time:
        raise DatasetError(f"{where}: every crop needs its unit and time")
    day = (rec.get("day") or "").strip() or _day(time, where)
    session = (rec.get("session") or "").strip() or f"{unit}/{day}"
    extra = {
        k: v
        for k, v in rec.items()
        if k and k not in REQUIRED_COLUMNS and k not in ("session", "day")
    }
    return SiteRow(
        path=path,
        rel=rel,
        label=label,
        unit=unit,
        roi=(rec.get("roi") or "").strip(),
        time=time,
        source=(rec.get("source") or "").strip(),
        reviewer=(rec.get("reviewer") or "").strip(),
        split="test" if split in TEST_SPLITS else "train",
        session=session,
        day=day,
        extra=extra,
    )


def read_dataset(root: Path, *, check_files: bool = True) -> list[SiteRow]:
    """Every row of ``root/index.csv``, checked (see the module docstring), and the split
    checked for sessions on both sides (``check_leaks``)."""
    index = root / "index.csv"
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist")
    if not index.is_file():
        raise DatasetError(f"{root} has no index.csv (the export's list of labelled crops)")
    with index.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise DatasetError(
                f"{index} lacks column(s) {', '.join(missing)} (needs {','.join(REQUIRED_COLUMNS)})"
            )
        raw = list(reader)
    if not raw:
        raise DatasetError(f"{index} lists no crops")
    rows: list[SiteRow] = []
    seen: set[str] = set()
    base = root.resolve()
    for n, rec in enumerate(raw, start=2):
        row = _row(rec, base, f"{index}:{n}", check_files=check_files)
        if row.rel in seen:
            raise DatasetError(f"{index}:{n}: {row.rel} is listed twice")
        seen.add(row.rel)
        rows.append(row)
    check_leaks(rows)
    return rows


def check_leaks(rows: Iterable[SiteRow], by: str = "session") -> None:
    """Refuse a split that puts one session (unit, day) on both sides."""
    sides: dict[str, set[str]] = {}
    for row in rows:
        sides.setdefault(row.group(by), set()).add(row.split)
    both = sorted(g for g, s in sides.items() if len(s) > 1)
    if both:
        shown = ", ".join(both[:5]) + (f" and {len(both) - 5} more" if len(both) > 5 else "")
        raise DatasetError(
            f"{by} {shown} has crops in both the train and the test split: "
            f"the test crops would be near-copies of training crops; split "
            f"whole {by}s"
        )


def split(rows: Sequence[SiteRow], name: str) -> list[SiteRow]:
    return [r for r in rows if r.split == name]


def need_both_classes(rows: Sequence[SiteRow], what: str) -> None:
    n_pos = sum(r.label for r in rows)
    if n_pos == 0 or n_pos == len(rows):
        raise DatasetError(
            f"{what} needs crops of both classes (has {n_pos} phone, {len(rows) - n_pos} no_phone)"
        )


def fingerprint(rows: Iterable[SiteRow]) -> str:
    """SHA-256 over each crop's path, label, split, session and bytes: names a dataset."""
    h = hashlib.sha256(b"phonewatch-site-dataset-1")
    for r in sorted(rows, key=lambda r: r.rel):
        h.update(f"{r.rel}:{r.label}:{r.split}:{r.session}:".encode())
        h.update(hashlib.sha256(r.path.read_bytes()).digest())
    return h.hexdigest()


def eval_view(rows: Sequence[SiteRow], dest: Path) -> Path:
    """``dest`` as a ``phonewatch eval`` folder of ``rows``: ``phone/`` and ``no_phone/``
    (symbolic links, so no crop is copied) and an ``index.csv`` with ``file``, ``phone``,
    ``unit`` and, where the export has one, ``lighting``."""
    for sub in ("phone", "no_phone"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    with (dest / "index.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        extra = ["lighting"] if any("lighting" in r.extra for r in rows) else []
        w.writerow(["file", "phone", "unit", *extra])
        for k, r in enumerate(rows):
            name = f"{'phone' if r.label else 'no_phone'}/{k:05d}_{r.path.name}"
            link = dest / name
            if not link.exists():
                link.symlink_to(r.path)
            w.writerow([name, r.label, r.unit, *[r.extra.get(c, "") for c in extra]])
    return dest
