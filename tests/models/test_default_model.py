"""The committed default model: size, sidecar validity, full-int8, and that it sees phones."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from edge.adapters.classifier import LiteRTClassifier
from edge.core import metrics
from edge.core.model_spec import load_spec
from models import export
from models.synth.render import render_crop

MODEL_DIR = Path(__file__).resolve().parents[2] / "models" / "phone_in_hand"
MODEL = MODEL_DIR / "phone_in_hand.tflite"


def test_default_model_is_small_and_its_sidecar_is_valid() -> None:
    assert MODEL.stat().st_size <= 1024 * 1024
    spec = load_spec(MODEL.with_suffix(".json"))
    assert spec.file == MODEL.name
    assert spec.sha256 == hashlib.sha256(MODEL.read_bytes()).hexdigest()
    assert spec.labels == ("no_phone", "phone") and spec.positive_labels == ("phone",)
    assert 0.0 < spec.threshold < 1.0
    assert len(spec.provenance["training_data_sha256"]) == 64
    # The threshold keeps within the target false-positive rate on validation, the target is in
    # the operating range (FPR <= 5 %), and description and last stage state it.
    val = spec.metrics["validation"]
    assert 0.0 < val["target_fpr"] <= 0.05
    assert val["all"]["fpr"] <= val["target_fpr"]
    assert f"{val['target_fpr']:.0%} false-positive rate" in spec.description
    assert f"--target-fpr {val['target_fpr']:g}" in spec.provenance["stages"][-1]
    par = spec.metrics["int8_float_parity"]
    # The export gate: the int8 model makes the float model's decision on >= 99 % of crops.
    assert par["required"] == 0.99
    assert par["matched_operating_point"]["agreement"] >= 0.99
    assert (MODEL_DIR / "MODEL_CARD.md").read_text(encoding="utf-8").startswith("# Model card")


def test_default_model_is_full_integer_with_edge_tpu_ops() -> None:
    assert export.check_full_int8(MODEL) == []


@pytest.mark.slow
def test_default_model_separates_held_out_synthetic_crops() -> None:
    # Seed 7 is the held-out synthetic test seed (training used 1000, validation 1001).
    crops = [render_crop(7, i, phone=(i % 2 == 0)) for i in range(60)]
    with LiteRTClassifier.open(MODEL) as clf:
        scores = np.array([clf.score(img) for img, _ in crops])
        assert clf.spec.input.width == clf.spec.input.height
    labels = np.array([int(m.phone) for _, m in crops])
    assert metrics.roc_auc(labels, scores) > 0.9  # 0.997 on the 600-crop held-out set
