"""The site export check's rule (``models.train._metric_parity``): int8 may not do worse than
its reference per validation domain, beyond what the validation set can resolve."""

from __future__ import annotations

import numpy as np

from models.train import AUC_TOLERANCE, _metric_parity


def _out_of_order(y: np.ndarray, p: np.ndarray, pairs: int) -> np.ndarray:
    """``p`` (phone crops all above phone-free ones) with its lowest phone crop moved just
    below the ``pairs`` highest phone-free crops: exactly that many pairs out of order."""
    q = p.copy()
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    q[pos[np.argmin(p[pos])]] = np.sort(p[neg])[-pairs] - 0.01
    return q


def test_one_pair_out_of_order_on_a_small_validation_set_passes() -> None:
    # 6 phone and 9 phone-free crops: one pair is 1/54 = 0.019 of ROC-AUC, more than the 0.01
    # tolerance, and a single int8 rounding flip can cost it.
    y = np.array([1] * 6 + [0] * 9)
    ref = np.concatenate([np.linspace(0.6, 0.95, 6), np.linspace(0.05, 0.5, 9)])
    int8 = _out_of_order(y, ref, 1)
    out = _metric_parity(y, np.array(["site"] * y.size), ref, int8, 0.05)["site"]
    assert out["auc_float"] - out["auc_int8"] > AUC_TOLERANCE
    assert not [w for w in out["worse"] if "ROC-AUC" in w]


def test_a_real_loss_on_a_small_set_and_any_loss_on_a_large_one_is_refused() -> None:
    y = np.array([1] * 6 + [0] * 9)
    ref = np.concatenate([np.linspace(0.6, 0.95, 6), np.linspace(0.05, 0.5, 9)])
    two = _out_of_order(y, ref, 2)
    small = _metric_parity(y, np.array(["site"] * y.size), ref, two, 0.05)["site"]
    assert any("ROC-AUC" in w for w in small["worse"])
    # 100 + 200 crops: one pair is 0.00005; an AUC 0.01 lower is refused as before.
    rng = np.random.default_rng(0)
    yl = np.array([1] * 100 + [0] * 200)
    refl = np.where(yl == 1, rng.normal(0.7, 0.15, yl.size), rng.normal(0.4, 0.15, yl.size))
    worse = refl + np.where(yl == 1, rng.normal(0, 0.08, yl.size), 0.0)
    large = _metric_parity(yl, np.array(["site"] * yl.size), refl, worse, 0.05)["site"]
    assert large["auc_float"] - large["auc_int8"] > AUC_TOLERANCE
    assert any("ROC-AUC" in w for w in large["worse"])
