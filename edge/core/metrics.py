"""Binary-classifier metrics in pure numpy: the model toolchain and ``phonewatch eval`` use them.

Convention everywhere: a crop is flagged when ``score >= threshold`` (as the decider does);
``labels`` are 1 (driver holds a phone) or 0. The operating metric is recall at a fixed
false-positive rate (the share of phone-free drivers flagged), because a unit sees far more
innocent drivers than offenders and every flag costs a reviewer's time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

FPR_POINTS = (0.01, 0.05, 0.10)
"""False-positive rates at which recall is reported."""


def _check(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1 or y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be 1-D and the same length")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y.astype(bool), s


@dataclass(frozen=True, slots=True)
class Confusion:
    """Counts at one threshold."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def fpr(self) -> float:
        return self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def accuracy(self) -> float:
        n = self.tp + self.fp + self.tn + self.fn
        return (self.tp + self.tn) / n if n else 0.0

    def as_dict(self) -> dict[str, int]:
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}


def confusion(labels: Any, scores: Any, threshold: float) -> Confusion:
    y, s = _check(labels, scores)
    flagged = s >= threshold
    return Confusion(
        tp=int((flagged & y).sum()),
        fp=int((flagged & ~y).sum()),
        tn=int((~flagged & ~y).sum()),
        fn=int((~flagged & y).sum()),
    )


def by_condition(
    labels: Any, scores: Any, threshold: float, conditions: dict[str, list[str]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Counts and rates at ``threshold`` within each group of images that share a condition.

    ``conditions`` maps a condition (e.g. ``lighting``) to one value per image (``day``, ...).
    Each group reports ``n``, ``positives``, ``negatives``, ``tp``, ``fp``, and ``recall`` / ``fpr``
    (``None`` where the group holds no images of that class).
    """
    y, s = _check(labels, scores)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, values in conditions.items():
        if len(values) != y.size:
            raise ValueError(f"condition {name!r} has {len(values)} values for {y.size} images")
        col = np.asarray(values, dtype=object)
        groups: dict[str, dict[str, Any]] = {}
        for value in sorted(set(values)):
            m = col == value
            c = confusion(y[m], s[m], threshold)
            pos, neg = c.tp + c.fn, c.fp + c.tn
            groups[value] = {
                "n": pos + neg,
                "positives": pos,
                "negatives": neg,
                "tp": c.tp,
                "fp": c.fp,
                "recall": c.recall if pos else None,
                "fpr": c.fpr if neg else None,
            }
        out[name] = groups
    return out


def roc_curve(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), thresholds descending from ``+inf`` (nothing flagged) to the
    lowest score (everything flagged); one point per distinct score."""
    y, s = _check(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # Last index of each run of equal scores: the curve moves only between distinct scores.
    distinct = (
        np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
        if s.size
        else np.zeros(0, np.intp)
    )
    tps = np.cumsum(y_sorted)[distinct]
    fps = (distinct + 1) - tps
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    tpr = np.r_[0.0, tps / n_pos] if n_pos else np.r_[0.0, np.zeros(distinct.size)]
    fpr = np.r_[0.0, fps / n_neg] if n_neg else np.r_[0.0, np.zeros(distinct.size)]
    thresholds = np.r_[np.inf, s_sorted[distinct]]
    return fpr, tpr, thresholds


def pr_curve(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) with thresholds descending (one point per distinct score)."""
    y, s = _check(labels, scores)
    _, tpr, thr = roc_curve(y, s)
    thr = thr[1:]
    flagged = np.array([(s >= t).sum() for t in thr], dtype=np.float64) if thr.size else np.zeros(0)
    tp = tpr[1:] * int(y.sum())
    precision = np.divide(tp, flagged, out=np.zeros_like(tp), where=flagged > 0)
    return precision, tpr[1:], thr


def roc_auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve: P(a random phone crop outscores a random phone-free one),
    ties counting half. ``nan`` when one class is absent."""
    y, s = _check(labels, scores)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    # Mann-Whitney U with mid-ranks for ties.
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, np.float64)
    s_sorted = s[order]
    i = 0
    while i < s.size:
        j = i
        while j + 1 < s.size and s_sorted[j + 1] == s_sorted[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def threshold_for_fpr(labels: Any, scores: Any, target_fpr: float) -> float:
    """The lowest threshold whose false-positive rate on these data is at most ``target_fpr``.

    With ``k = floor(target_fpr * negatives)`` false alarms allowed, this is just above the
    ``k+1``-th highest phone-free score (so at most ``k`` negatives reach it).
    """
    if not 0.0 <= target_fpr <= 1.0:
        raise ValueError(f"target_fpr must be 0..1, got {target_fpr}")
    y, s = _check(labels, scores)
    neg = np.sort(s[~y])[::-1]
    if neg.size == 0:
        raise ValueError("need at least one phone-free (label 0) example to set a threshold")
    k = math.floor(target_fpr * neg.size + 1e-9)
    if k >= neg.size:
        return float(s.min())  # every negative may be flagged: flag everything
    return float(np.nextafter(neg[k], np.inf))


def recall_at_fpr(labels: Any, scores: Any, target_fpr: float) -> float:
    """The best recall reachable with a false-positive rate at most ``target_fpr``."""
    fpr, tpr, _ = roc_curve(labels, scores)
    ok = fpr <= target_fpr + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def summary(labels: Any, scores: Any, threshold: float) -> dict[str, Any]:
    """Every number ``phonewatch eval`` reports, as a JSON-ready dict."""
    y, s = _check(labels, scores)
    c = confusion(y, s, threshold)
    auc = roc_auc(y, s)
    return {
        "n": int(y.size),
        "positives": int(y.sum()),
        "negatives": int((~y).sum()),
        "threshold": float(threshold),
        "precision": c.precision,
        "recall": c.recall,
        "f1": c.f1,
        "fpr": c.fpr,
        "accuracy": c.accuracy,
        "roc_auc": None if math.isnan(auc) else auc,
        "recall_at_fpr": {f"{p:g}": recall_at_fpr(y, s, p) for p in FPR_POINTS},
        "confusion": c.as_dict(),
    }
