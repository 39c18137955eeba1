"""Metrics against brute-force definitions (hypothesis) and hand-worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.core import metrics

scores_st = st.lists(
    st.tuples(
        st.integers(0, 1),
        st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.7, 0.9, 1.0]) | st.floats(0, 1),
    ),
    min_size=2,
    max_size=60,
).filter(lambda xs: 0 < sum(y for y, _ in xs) < len(xs))


def _split(xs: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([y for y, _ in xs]), np.array([s for _, s in xs])


def test_hand_worked_example() -> None:
    y = [1, 1, 1, 0, 0, 0, 0, 1]
    s = [0.9, 0.8, 0.3, 0.7, 0.2, 0.1, 0.05, 0.6]
    c = metrics.confusion(y, s, 0.5)
    assert (c.tp, c.fp, c.tn, c.fn) == (3, 1, 3, 1)
    assert c.precision == pytest.approx(0.75)
    assert c.recall == pytest.approx(0.75)
    assert c.f1 == pytest.approx(0.75)
    assert c.fpr == pytest.approx(0.25)
    # 16 pos/neg pairs; the positive loses to 0.7 twice (0.3 and 0.6 vs 0.7): 14/16.
    assert metrics.roc_auc(y, s) == pytest.approx(14 / 16)
    assert metrics.recall_at_fpr(y, s, 0.0) == pytest.approx(0.5)
    assert metrics.recall_at_fpr(y, s, 0.25) == pytest.approx(1.0)
    t = metrics.threshold_for_fpr(y, s, 0.0)
    assert 0.7 < t < 0.7001
    assert metrics.confusion(y, s, t).fp == 0


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(scores_st)
def test_auc_equals_pairwise_probability(xs: list[tuple[int, float]]) -> None:
    y, s = _split(xs)
    pos, neg = s[y == 1], s[y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    assert metrics.roc_auc(y, s) == pytest.approx(wins / (pos.size * neg.size))


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(scores_st, st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.3, 1.0]))
def test_threshold_and_recall_at_fpr_match_brute_force(
    xs: list[tuple[int, float]], target: float
) -> None:
    y, s = _split(xs)
    t = metrics.threshold_for_fpr(y, s, target)
    c = metrics.confusion(y, s, t)
    assert c.fpr <= target + 1e-12
    # No lower candidate threshold (any observed score) also meets the target with more recall.
    best = max(
        metrics.confusion(y, s, cand).recall
        for cand in [*s, np.inf]
        if metrics.confusion(y, s, cand).fpr <= target + 1e-12
    )
    assert metrics.recall_at_fpr(y, s, target) == pytest.approx(best)
    assert c.recall == pytest.approx(best)


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(scores_st)
def test_curves_match_confusions(xs: list[tuple[int, float]]) -> None:
    y, s = _split(xs)
    fpr, tpr, thr = metrics.roc_curve(y, s)
    assert fpr[0] == 0
    assert tpr[0] == 0
    assert fpr[-1] == 1
    assert tpr[-1] == 1
    assert (np.diff(fpr) >= 0).all()
    assert (np.diff(tpr) >= 0).all()
    for f, r, t in zip(fpr[1:], tpr[1:], thr[1:], strict=True):
        c = metrics.confusion(y, s, t)
        assert (c.fpr, c.recall) == pytest.approx((f, r))
    prec, rec, pthr = metrics.pr_curve(y, s)
    for p, r, t in zip(prec, rec, pthr, strict=True):
        c = metrics.confusion(y, s, t)
        assert (c.precision, c.recall) == pytest.approx((p, r))


def test_summary_is_json_ready_and_complete() -> None:
    import json

    d = metrics.summary([0, 1, 1, 0], [0.2, 0.9, 0.4, 0.5], 0.45)
    json.dumps(d)
    assert set(d["recall_at_fpr"]) == {"0.01", "0.05", "0.1"}
    assert d["confusion"] == {"tp": 1, "fp": 1, "tn": 1, "fn": 1}
    assert d["roc_auc"] == pytest.approx(0.75)
    assert metrics.summary([1, 1], [0.2, 0.3], 0.5)["roc_auc"] is None
    assert math.isnan(metrics.roc_auc([0, 0], [0.1, 0.2]))


@pytest.mark.parametrize(
    ("labels", "scores", "match"),
    [
        ([0, 1], [0.1], "same length"),
        ([0, 2], [0.1, 0.2], "0 or 1"),
        ([0, 1], [0.1, float("nan")], "finite"),
    ],
)
def test_bad_input_is_rejected(labels: list[int], scores: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        metrics.roc_auc(labels, scores)


def test_threshold_needs_negatives_and_a_sane_target() -> None:
    with pytest.raises(ValueError, match="phone-free"):
        metrics.threshold_for_fpr([1, 1], [0.1, 0.2], 0.05)
    with pytest.raises(ValueError, match="target_fpr"):
        metrics.threshold_for_fpr([0, 1], [0.1, 0.2], 1.5)


def test_by_condition_counts_each_group_at_the_threshold() -> None:
    labels = [1, 1, 0, 0, 1, 0]
    scores = [0.9, 0.2, 0.6, 0.1, 0.7, 0.3]
    by = metrics.by_condition(
        labels, scores, 0.5, {"light": ["day", "night", "night", "day", "day", "day"]}
    )
    assert by["light"]["day"] == {
        "n": 4,
        "positives": 2,
        "negatives": 2,
        "tp": 2,
        "fp": 0,
        "recall": 1.0,
        "fpr": 0.0,
    }
    assert by["light"]["night"] == {
        "n": 2,
        "positives": 1,
        "negatives": 1,
        "tp": 0,
        "fp": 1,
        "recall": 0.0,
        "fpr": 1.0,
    }
    # a group with one class has no rate for the other
    pose = metrics.by_condition(labels, scores, 0.5, {"pose": ["a", "a", "b", "b", "a", "b"]})
    assert pose["pose"]["a"]["fpr"] is None
    assert pose["pose"]["b"]["recall"] is None
    with pytest.raises(ValueError, match="2 values for 6 images"):
        metrics.by_condition(labels, scores, 0.5, {"light": ["day", "day"]})
