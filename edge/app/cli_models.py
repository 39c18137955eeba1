"""``phonewatch eval`` and ``phonewatch sidecar``: judge classifiers on labelled image folders.

``eval`` scores every image of one or more folders (``phone/``, ``no_phone/``) with one or more
models (each named by its sidecar, so third-party classifiers work too), then prints and writes
precision, recall, F1, ROC-AUC, recall at 1 / 5 / 10 % false-positive rate and the confusion
matrix at each model's own threshold, side by side, plus PR and ROC curves as PNG.

``sidecar`` writes a sidecar for a third-party TFLite classifier (e.g. an ImageNet model whose
"cellular telephone" class is the positive label), reading the input size, layout and output
count from the model itself.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.core import metrics
from edge.core.errors import ModelError, PhonewatchError
from edge.core.model_spec import SCHEMA_VERSION, parse_spec, sidecar_path

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
CLASS_DIRS = (("no_phone", 0), ("phone", 1))


class EvalDataError(PhonewatchError, ValueError):
    """An evaluation folder is missing, empty or not laid out as phone/ and no_phone/."""


@dataclass
class ModelResult:
    name: str
    model: str
    threshold: float
    per_data: dict[str, dict[str, Any]] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)
    """The images behind ``scores``, in the same order (``phone/x.png``, relative to the folder)."""
    ms_per_crop: float = math.nan


def list_images(folder: Path) -> list[tuple[Path, int]]:
    """``(path, label)`` for every image under ``folder/phone`` and ``folder/no_phone``."""
    if not folder.is_dir():
        raise EvalDataError(f"evaluation folder {folder} does not exist")
    items: list[tuple[Path, int]] = []
    for name, label in CLASS_DIRS:
        sub = folder / name
        if not sub.is_dir():
            raise EvalDataError(f"evaluation folder {folder} has no {name}/ subfolder")
        items += [(p, label) for p in sorted(sub.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not items:
        raise EvalDataError(f"evaluation folder {folder} holds no images")
    return items


def read_conditions(folder: Path, files: list[str], labels: list[int]) -> dict[str, list[str]]:
    """Per-image conditions from ``folder/index.csv``, if the folder has one.

    The index has a ``file`` column (``phone/x.png``, relative to the folder), optionally a
    ``phone`` column (1 / 0, checked against the subfolder) and any others (e.g. ``pose``,
    ``lighting``, as ``models.synth.render_dataset`` writes); returns each other column's value
    for every entry of ``files``, in order. ``{}`` when there is no index.
    """
    index = folder / "index.csv"
    if not index.is_file():
        return {}
    with index.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = [c for c in (reader.fieldnames or []) if c not in ("file", "phone")]
        if "file" not in (reader.fieldnames or []):
            raise EvalDataError(f"{index} has no 'file' column")
        rows = {row["file"]: row for row in reader}
    out: dict[str, list[str]] = {c: [] for c in columns}
    for name, label in zip(files, labels, strict=True):
        row = rows.get(name)
        if row is None:
            raise EvalDataError(f"{index} has no row for {name}")
        if row.get("phone") not in (None, "", str(label)):
            raise EvalDataError(
                f"{index} says phone={row['phone']} for {name}, "
                f"but the image is in {name.split('/')[0]}/"
            )
        for c in columns:
            out[c].append(row.get(c) or "")
    return out


def _model_arg(text: str) -> tuple[Path, Path | None]:
    """``MODEL`` or ``MODEL:SIDECAR``."""
    model, sep, sidecar = text.partition(":")
    return Path(model), (Path(sidecar) if sep else None)


def _dataset_name(folder: Path) -> str:
    parts = folder.resolve().parts
    return "/".join(parts[-2:]) if len(parts) >= 2 else folder.name


# -- plotting (OpenCV only) -------------------------------------------------------------------

_COLOURS = (
    (200, 80, 20),
    (30, 30, 220),
    (30, 160, 30),
    (180, 30, 180),
    (0, 140, 255),
    (120, 120, 0),
    (90, 90, 90),
)


@dataclass(frozen=True)
class Curve:
    """One line of a plot, ``xs`` and ``ys`` in the unit square, and the model's operating
    point on it (``point``: at its sidecar threshold), marked with a dot labelled
    ``point_label``. A point with a coordinate that is not finite is left out."""

    label: str
    xs: np.ndarray
    ys: np.ndarray
    point: tuple[float, float] | None = None
    point_label: str = ""


Box = tuple[int, int, int, int]
"""``(x0, y0, x1, y1)`` in pixels, ``x1`` and ``y1`` excluded."""


@dataclass(frozen=True)
class PlotFrame:
    """The picture's size and the margins around the unit-square plot area."""

    width: int = 720
    height: int = 580
    left: int = 80
    right: int = 20
    top: int = 50
    bottom: int = 62

    @property
    def plot_size(self) -> tuple[int, int]:
        return self.width - self.left - self.right, self.height - self.top - self.bottom

    def px(self, x: float, y: float) -> tuple[int, int]:
        """The pixel of the plot point ``(x, y)``."""
        pw, ph = self.plot_size
        return self.left + round(x * pw), self.top + round((1.0 - y) * ph)


PLOT = PlotFrame()
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TITLE_SCALE, _LABEL_SCALE, _SMALL_SCALE = 0.6, 0.5, 0.45
MARKER_RADIUS = 7


def text_boxes(title: str, xlabel: str, ylabel: str, frame: PlotFrame = PLOT) -> dict[str, Box]:
    """Where ``draw_curves`` writes the title (above the plot area), the x label (under the
    tick values) and the y label (turned upright, left of the tick values)."""
    pw, ph = frame.plot_size
    (tw, th), tb = cv2.getTextSize(title, _FONT, _TITLE_SCALE, 1)
    (xw, xh), xb = cv2.getTextSize(xlabel, _FONT, _LABEL_SCALE, 1)
    (yw, yh), yb = cv2.getTextSize(ylabel, _FONT, _LABEL_SCALE, 1)
    x0 = frame.left + max(0, (pw - xw) // 2)
    y0 = frame.top + max(0, (ph - yw) // 2)
    return {
        "title": (frame.left, 14, frame.left + tw, 14 + th + tb),
        "xlabel": (x0, frame.height - 12 - xh - xb, x0 + xw, frame.height - 12),
        "ylabel": (10, y0, 10 + yh + yb, y0 + yw),
    }


def _put(img: np.ndarray, text: str, box: Box, scale: float, *, upright: bool = False) -> None:
    """``text`` in black filling ``box`` (``upright``: turned a quarter left, read bottom up)."""
    x0, y0, x1, y1 = box
    (_, th), _ = cv2.getTextSize(text, _FONT, scale, 1)
    if not upright:
        cv2.putText(img, text, (x0, y0 + th), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
        return
    flat = np.full((x1 - x0, y1 - y0, 3), 255, np.uint8)
    cv2.putText(flat, text, (0, th), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)
    turned = cv2.rotate(flat, cv2.ROTATE_90_COUNTERCLOCKWISE)
    np.minimum(img[y0:y1, x0:x1], turned, out=img[y0:y1, x0:x1])


def _mark(img: np.ndarray, curve: Curve, colour: tuple[int, int, int], frame: PlotFrame) -> bool:
    """Draw ``curve``'s operating point and its label inside the plot area; False if it has
    none."""
    if curve.point is None or not all(math.isfinite(v) for v in curve.point):
        return False
    cx, cy = frame.px(*curve.point)
    cv2.circle(img, (cx, cy), MARKER_RADIUS, colour, cv2.FILLED, cv2.LINE_AA)
    cv2.circle(img, (cx, cy), MARKER_RADIUS, (0, 0, 0), 1, cv2.LINE_AA)
    if curve.point_label:
        (tw, th), _ = cv2.getTextSize(curve.point_label, _FONT, _SMALL_SCALE, 1)
        pw, _ = frame.plot_size
        gap = MARKER_RADIUS + 4
        tx = cx + gap if cx + gap + tw <= frame.left + pw else cx - gap - tw
        ty = cy - gap if cy - gap - th >= frame.top else cy + gap + th
        cv2.rectangle(img, (tx - 2, ty - th - 3), (tx + tw + 2, ty + 4), (255, 255, 255), -1)
        cv2.putText(img, curve.point_label, (tx, ty), _FONT, _SMALL_SCALE, colour, 1, cv2.LINE_AA)
    return True


def _fit(text: str, max_px: int) -> str:
    """``text``, shortened in the middle (``...``) to at most ``max_px`` wide."""
    if cv2.getTextSize(text, _FONT, _SMALL_SCALE, 1)[0][0] <= max_px:
        return text
    keep = len(text)
    while keep > 8:
        keep -= 1
        cut = text[: keep // 2] + "..." + text[len(text) - (keep - keep // 2) :]
        if cv2.getTextSize(cut, _FONT, _SMALL_SCALE, 1)[0][0] <= max_px:
            return cut
    return text[:8]


def _legend(
    img: np.ndarray,
    entries: list[tuple[str, tuple[int, int, int], bool]],
    frame: PlotFrame,
    *,
    left: bool,
) -> None:
    """The key (``(label, colour, is_dot)`` per row) on a white box in the plot area's
    bottom-left (``left``) or bottom-right corner, as wide as its longest label needs."""
    pw, ph = frame.plot_size
    texts = [_fit(label, pw - 60) for label, _, _ in entries]
    width = 38 + max(cv2.getTextSize(t, _FONT, _SMALL_SCALE, 1)[0][0] for t in texts) + 8
    lx = frame.left + 8 if left else frame.left + pw - width - 4
    top = frame.top + ph - 8 - 22 * len(entries)
    cv2.rectangle(img, (lx - 4, top), (lx + width, top + 22 * len(entries) + 4), (255,) * 3, -1)
    cv2.rectangle(img, (lx - 4, top), (lx + width, top + 22 * len(entries) + 4), (200,) * 3, 1)
    for i, ((_, colour, dot), text) in enumerate(zip(entries, texts, strict=True)):
        ly = top + 20 + 22 * i
        if dot:
            cv2.circle(img, (lx + 15, ly - 5), MARKER_RADIUS - 2, colour, cv2.FILLED, cv2.LINE_AA)
        else:
            cv2.line(img, (lx, ly - 5), (lx + 30, ly - 5), colour, 3)
        cv2.putText(img, text, (lx + 38, ly), _FONT, _SMALL_SCALE, (0, 0, 0), 1, cv2.LINE_AA)


def draw_curves(
    curves: list[Curve],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    path: Path,
    diagonal: bool = False,
    legend_left: bool = False,
    frame: PlotFrame = PLOT,
) -> Path:
    """Line plot of ``curves`` in the unit square, each with its operating point marked,
    written as a PNG."""
    img = np.full((frame.height, frame.width, 3), 255, np.uint8)
    _, ph = frame.plot_size
    px = frame.px
    for i in range(6):
        v = i / 5
        cv2.line(img, px(v, 0), px(v, 1), (225, 225, 225), 1)
        cv2.line(img, px(0, v), px(1, v), (225, 225, 225), 1)
        tick = f"{v:.1f}"
        cv2.putText(
            img, tick, (px(v, 0)[0] - 12, frame.top + ph + 20), _FONT, _SMALL_SCALE, (0, 0, 0)
        )
        cv2.putText(img, tick, (frame.left - 34, px(0, v)[1] + 5), _FONT, _SMALL_SCALE, (0, 0, 0))
    cv2.rectangle(img, px(0, 1), px(1, 0), (0, 0, 0), 1)
    if diagonal:
        cv2.line(img, px(0, 0), px(1, 1), (170, 170, 170), 1, cv2.LINE_AA)
    entries: list[tuple[str, tuple[int, int, int], bool]] = []
    for i, c in enumerate(curves):
        colour = _COLOURS[i % len(_COLOURS)]
        pts = np.array([px(float(x), float(y)) for x, y in zip(c.xs, c.ys, strict=True)], np.int32)
        if len(pts) > 1:
            cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA)
        entries.append((c.label, colour, False))
    marked = [_mark(img, c, _COLOURS[i % len(_COLOURS)], frame) for i, c in enumerate(curves)]
    if any(marked):
        entries.append(("operating point (sidecar threshold)", (90, 90, 90), True))
    _legend(img, entries, frame, left=legend_left)
    boxes = text_boxes(title, xlabel, ylabel, frame)
    _put(img, title, boxes["title"], _TITLE_SCALE)
    _put(img, xlabel, boxes["xlabel"], _LABEL_SCALE)
    _put(img, ylabel, boxes["ylabel"], _LABEL_SCALE, upright=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"cannot write {path}")
    return path


# -- eval ---------------------------------------------------------------------------------------


def evaluate(
    models: list[tuple[Path, Path | None]], folders: list[Path], *, threads: int = 2
) -> tuple[list[ModelResult], dict[str, np.ndarray]]:
    """Score every folder with every model; returns per-model results and labels per folder."""
    from edge.adapters.classifier import LiteRTClassifier

    data: dict[str, list[tuple[Path, int]]] = {}
    folder_of: dict[str, Path] = {}
    for folder in folders:
        name = _dataset_name(folder)
        if name in data:
            raise EvalDataError(f"evaluation folder {folder} given twice")
        data[name] = list_images(folder)
        folder_of[name] = folder
    images: dict[str, list[np.ndarray]] = {}
    for name, items in data.items():
        loaded = []
        for path, _ in items:
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                raise EvalDataError(f"{path} is not a readable image")
            loaded.append(img)
        images[name] = loaded
    labels = {name: np.array([lab for _, lab in items], np.int64) for name, items in data.items()}
    files = {
        name: [p.relative_to(folder_of[name]).as_posix() for p, _ in items]
        for name, items in data.items()
    }
    conditions = {
        name: read_conditions(folder_of[name], files[name], [lab for _, lab in items])
        for name, items in data.items()
    }

    results = []
    for model_path, sidecar in models:
        with LiteRTClassifier.open(model_path, sidecar=sidecar, threads=threads) as clf:
            v = clf.spec.version
            res = ModelResult(
                name=clf.spec.name + ("" if v == "third-party" else f" {v}"),
                model=str(model_path),
                threshold=float(clf.spec.threshold),
            )
            total_s, total_n = 0.0, 0
            for name, imgs in images.items():
                t0 = time.perf_counter()
                scores = np.array([clf.score(img) for img in imgs], np.float64)
                total_s += time.perf_counter() - t0
                total_n += len(imgs)
                res.scores[name] = scores
                res.files[name] = files[name]
                res.per_data[name] = metrics.summary(labels[name], scores, res.threshold)
                if conditions[name]:
                    res.per_data[name]["by_condition"] = metrics.by_condition(
                        labels[name], scores, res.threshold, conditions[name]
                    )
            res.ms_per_crop = 1000.0 * total_s / max(1, total_n)
        results.append(res)
    for res, name in zip(results, distinct_names(results), strict=True):
        res.name = name
    return results, labels


def distinct_names(results: list[ModelResult]) -> list[str]:
    """Each result's name, told apart where two share one (a retrained model under its
    parent's name and version): ``name (file)``, with as many of the path's folders as it
    takes, and ``#k`` after a file given more than once."""
    names = [r.name for r in results]
    out = list(names)
    for name in set(names):
        idx = [i for i, n in enumerate(names) if n == name]
        if len(idx) < 2:
            continue
        paths = [Path(results[i].model).resolve().parts for i in idx]
        unique = list(dict.fromkeys(paths))
        depth = 1
        while depth < max(len(p) for p in unique) and len({p[-depth:] for p in unique}) < len(
            unique
        ):
            depth += 1
        tails = ["/".join(p[-depth:]) for p in paths]
        seen: dict[str, int] = {}
        for i, tail in zip(idx, tails, strict=True):
            seen[tail] = seen.get(tail, 0) + 1
            again = f" #{seen[tail]}" if tails.count(tail) > 1 else ""
            out[i] = f"{name} ({tail}{again})"
    return out


def _num(v: Any) -> float:
    """A metric as a float (``nan`` for none, e.g. precision with nothing flagged)."""
    return math.nan if v is None else float(v)


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def format_table(results: list[ModelResult], dataset: str) -> str:
    """The side-by-side table for one dataset (rows = metrics, columns = models)."""
    rows: list[tuple[str, list[str]]] = []
    first = results[0].per_data[dataset]
    rows.append(
        (
            "images (phone / none)",
            [f"{first['n']} ({first['positives']} / {first['negatives']})"] * len(results),
        )
    )
    for key, label in (("roc_auc", "ROC-AUC"),):
        rows.append((label, [_fmt(r.per_data[dataset][key]) for r in results]))
    for p in metrics.FPR_POINTS:
        rows.append(
            (
                f"recall @ {p:.0%} FPR",
                [_fmt(r.per_data[dataset]["recall_at_fpr"][f"{p:g}"]) for r in results],
            )
        )
    rows.append(("threshold (sidecar)", [_fmt(r.threshold) for r in results]))
    for key in ("precision", "recall", "f1", "fpr"):
        rows.append((f"  {key} @ threshold", [_fmt(r.per_data[dataset][key]) for r in results]))
    rows.append(
        (
            "  confusion tp/fp/tn/fn",
            [
                "/".join(str(r.per_data[dataset]["confusion"][k]) for k in ("tp", "fp", "tn", "fn"))
                for r in results
            ],
        )
    )
    rows.append(("ms per crop (CPU, incl. preprocess)", [f"{r.ms_per_crop:.2f}" for r in results]))
    head = [r.name for r in results]
    w0 = max(len(r[0]) for r in rows) + 2
    widths = [max(len(head[i]), *(len(r[1][i]) for r in rows)) + 2 for i in range(len(results))]
    lines = [
        f"== {dataset}",
        "".ljust(w0) + "".join(h.rjust(widths[i]) for i, h in enumerate(head)),
    ]
    for label, vals in rows:
        lines.append(label.ljust(w0) + "".join(v.rjust(widths[i]) for i, v in enumerate(vals)))
    return "\n".join(lines)


def format_conditions(result: ModelResult, dataset: str) -> str:
    """One model's recall and false-positive rate per condition of ``dataset`` (from its
    ``index.csv``), at the model's threshold; ``""`` when the folder has no index."""
    groups = result.per_data[dataset].get("by_condition") or {}
    lines = []
    for cond, values in groups.items():
        lines.append(f"-- {result.name} on {dataset}, by {cond} (threshold {result.threshold:.3f})")
        w = max(len(v) for v in values)
        for value, g in values.items():
            parts = []
            if g["positives"]:
                parts.append(f"phone found {g['tp']}/{g['positives']} (recall {g['recall']:.3f})")
            if g["negatives"]:
                parts.append(f"no-phone flagged {g['fp']}/{g['negatives']} (FPR {g['fpr']:.3f})")
            lines.append(f"  {value.ljust(w)}  " + "; ".join(parts))
    return "\n".join(lines)


def report(results: list[ModelResult], labels: dict[str, np.ndarray]) -> str:
    """What ``phonewatch eval`` prints: the side-by-side tables, then the first model's
    results per condition for the folders that have an ``index.csv``."""
    text = "\n\n".join(format_table(results, d) for d in labels)
    by = [t for t in (format_conditions(results[0], d) for d in labels) if t]
    return text + ("\n\n" + "\n\n".join(by) if by else "")


def eval_document(results: list[ModelResult]) -> dict[str, Any]:
    """The ``metrics.json`` document (what ``models.card`` reads)."""
    return {
        "models": [
            {
                "name": r.name,
                "model": r.model,
                "threshold": r.threshold,
                "ms_per_crop": r.ms_per_crop,
                "data": r.per_data,
            }
            for r in results
        ],
    }


def write_outputs(
    results: list[ModelResult], labels: dict[str, np.ndarray], out: Path
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    doc = eval_document(results)
    (out / "metrics.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    written.append(out / "metrics.json")
    for dataset, y in labels.items():
        slug = dataset.replace("/", "_")
        roc, pr = [], []
        for r in results:
            m = r.per_data[dataset]
            at = f"threshold {r.threshold:.3f}"
            fpr, tpr, _ = metrics.roc_curve(y, r.scores[dataset])
            roc.append(
                Curve(
                    f"{r.name} (AUC {_fmt(m['roc_auc'])})",
                    fpr,
                    tpr,
                    point=(_num(m["fpr"]), _num(m["recall"])),
                    point_label=at,
                )
            )
            prec, rec, _ = metrics.pr_curve(y, r.scores[dataset])
            pr.append(
                Curve(
                    r.name,
                    np.r_[0.0, rec],
                    np.r_[1.0, prec],
                    point=(_num(m["recall"]), _num(m["precision"])),
                    point_label=at,
                )
            )
        written.append(
            draw_curves(
                roc,
                title=f"ROC - {dataset}",
                xlabel="false-positive rate",
                ylabel="recall",
                path=out / f"{slug}_roc.png",
                diagonal=True,
            )
        )
        written.append(
            draw_curves(
                pr,
                title=f"Precision-recall - {dataset}",
                xlabel="recall",
                ylabel="precision",
                path=out / f"{slug}_pr.png",
                legend_left=True,  # PR curves run from top left to bottom right
            )
        )
        with (out / f"{slug}_scores.csv").open("w", newline="", encoding="utf-8") as f:
            wr = csv.writer(f)
            files = results[0].files.get(dataset) or [""] * len(y)
            wr.writerow(["index", "file", "label", *[r.name for r in results]])
            for i, lab in enumerate(y):
                wr.writerow(
                    [i, files[i], int(lab), *[f"{r.scores[dataset][i]:.6f}" for r in results]]
                )
        written.append(out / f"{slug}_scores.csv")
    return written


def cmd_eval(args: argparse.Namespace) -> int:
    models = [(Path(args.model), Path(args.sidecar) if args.sidecar else None)]
    models += [_model_arg(m) for m in args.compare]
    results, labels = evaluate(models, [Path(d) for d in args.data], threads=args.threads)
    print(report(results, labels))
    if args.out:
        written = write_outputs(results, labels, Path(args.out))
        print(f"\nwrote {len(written)} files to {args.out} (metrics.json, ROC and PR curves)")
    return 0


# -- sidecar ------------------------------------------------------------------------------------


def make_sidecar(
    model: Path,
    *,
    positive: list[str],
    labels_file: Path | None,
    labels: list[str] | None,
    label_offset: int,
    mean: list[float] | None,
    std: list[float] | None,
    activation: str,
    threshold: float,
    name: str | None,
    colour: str = "RGB",
) -> dict[str, Any]:
    """A validated sidecar dict for a third-party classifier, shapes read from the model."""
    from edge.adapters.classifier import _runtime, file_sha256

    interpreter_cls, _, _ = _runtime()
    if not model.is_file():
        raise ModelError(f"model file {model} does not exist")
    try:
        it = interpreter_cls(model_path=str(model))
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ModelError(f"{model} is not a loadable TFLite model: {e}") from None
    shape = [int(x) for x in it.get_input_details()[0]["shape"]]
    if len(shape) != 4:
        raise ModelError(f"{model}: input shape {shape} is not an image batch")
    nchw = shape[1] in (1, 3) and shape[3] not in (1, 3)
    c, h, w = (shape[1], shape[2], shape[3]) if nchw else (shape[3], shape[1], shape[2])
    if c == 1:
        colour = "GRAY"
    n = 1 if c == 1 else 3
    d: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "name": name or model.stem,
        "version": "third-party",
        "file": model.name,
        "sha256": file_sha256(model),
        "input": {
            "width": w,
            "height": h,
            "layout": "NCHW" if nchw else "NHWC",
            "colour": colour,
            "mean": (mean or [127.5] * n)[:n],
            "std": (std or [127.5] * n)[:n],
        },
        "output": {"activation": activation},
        "positive_labels": positive,
        "threshold": threshold,
        "description": f"third-party classifier {model.name}; positive labels {positive}",
    }
    if labels_file is not None:
        d["labels_file"] = str(labels_file.resolve())
        d["label_offset"] = label_offset
    elif labels is not None:
        d["labels"] = labels
    else:
        raise ModelError("give --labels-file or --labels")
    spec = parse_spec(d, where=f"sidecar for {model}")
    n_out = int(np.prod(it.get_output_details()[0]["shape"]))
    if n_out != len(spec.labels):
        raise ModelError(
            f"{model} has {n_out} outputs but the labels list {len(spec.labels)} "
            "(adjust --label-offset)"
        )
    return d


def cmd_sidecar(args: argparse.Namespace) -> int:
    model = Path(args.model)
    d = make_sidecar(
        model,
        positive=args.positive,
        labels_file=Path(args.labels_file) if args.labels_file else None,
        labels=args.labels,
        label_offset=args.label_offset,
        mean=args.mean,
        std=args.std,
        activation=args.activation,
        threshold=args.threshold,
        name=args.name,
        colour=args.colour,
    )
    out = Path(args.out) if args.out else sidecar_path(model)
    out.write_text(json.dumps(d, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate classifiers on labelled image folders (phone/, no_phone/)",
        description="Score image folders with one or more TFLite classifiers and report "
        "precision, recall, F1, ROC-AUC, recall at 1/5/10% FPR and the confusion matrix, "
        "side by side; --out also writes metrics.json, per-image scores and ROC / PR curves.",
    )
    p.add_argument("--model", required=True, help="the .tflite model to judge")
    p.add_argument("--sidecar", help="its sidecar JSON (default: MODEL with .json)")
    p.add_argument(
        "--data",
        required=True,
        action="append",
        help="image folder with phone/ and no_phone/ (repeatable)",
    )
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="MODEL[:SIDECAR]",
        help="another model to print side by side (repeatable)",
    )
    p.add_argument("--out", help="folder for metrics.json, scores and PNG curves")
    p.add_argument("--threads", type=int, default=2, help="CPU threads per interpreter (default 2)")
    p.set_defaults(func=cmd_eval)

    s = sub.add_parser(
        "sidecar",
        help="write a sidecar JSON for a third-party TFLite classifier",
        description="Read a classifier's input shape and output count and write a validated "
        "sidecar naming its positive label(s), e.g. an ImageNet model's 'cellular telephone'.",
    )
    s.add_argument("model", help="the .tflite model")
    s.add_argument(
        "--positive", action="append", required=True, help="label that means 'phone' (repeatable)"
    )
    s.add_argument("--labels-file", help="labels, one per line")
    s.add_argument("--labels", nargs="+", help="labels given inline instead")
    s.add_argument(
        "--label-offset",
        type=int,
        default=0,
        help="+1 if the model has a background class the file lacks; -1 if the "
        "file has one the model lacks",
    )
    s.add_argument("--mean", type=float, nargs="+", help="per-channel mean (0..255 scale)")
    s.add_argument("--std", type=float, nargs="+", help="per-channel std (0..255 scale)")
    s.add_argument(
        "--colour",
        choices=["RGB", "BGR", "GRAY"],
        default="RGB",
        help="channel order the model was trained on (default RGB; a one-channel "
        "input is GRAY whatever this says)",
    )
    s.add_argument(
        "--activation",
        choices=["none", "softmax", "sigmoid"],
        default="none",
        help="what turns the outputs into probabilities: none if the model ends in "
        "softmax already (default), softmax or sigmoid for raw logits",
    )
    s.add_argument(
        "--threshold",
        type=float,
        default=0.1,
        help="P(phone) at or above which a crop counts as phone (default 0.1; "
        "tune it with 'phonewatch eval')",
    )
    s.add_argument(
        "--name", help="model name in alerts and the model card (default: the model file's stem)"
    )
    s.add_argument("--out", help="where to write (default: MODEL with .json)")
    s.set_defaults(func=cmd_sidecar)
