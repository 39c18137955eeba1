"""The LiteRT classifier against real models: the project's test models and, when present,
the third-party models in ../shared/data/models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.adapters.classifier import LiteRTClassifier, edgetpu_twin
from edge.core.errors import AcceleratorError, ModelError

IMAGENET_SIDECAR = {
    "schema": 1,
    "name": "imagenet",
    "version": "1",
    "input": {"width": 224, "height": 224, "layout": "NHWC", "colour": "RGB"},
    "output": {"activation": "none"},
    "positive_labels": ["cellular telephone"],
    "threshold": 0.2,
}


CLOTHES = ("uniform", "suit", "gown", "bow tie", "Windsor", "mortarboard")


def top5(clf: LiteRTClassifier, img: np.ndarray) -> list[str]:
    p = clf.probabilities(clf.invoke(clf.preprocess(img)))
    return [clf.spec.labels[i] for i in np.argsort(-p)[:5]]


def imagenet_sidecar(tmp: Path, models: Path, model: str, **over: object) -> Path:
    d = dict(IMAGENET_SIDECAR, file=model, labels_file=str(models / "imagenet_labels.txt"))
    d.update(over)
    p = tmp / (Path(model).stem + ".json")
    p.write_text(json.dumps(d))
    return p


@pytest.mark.parametrize("name", ["brightness_int8", "brightness_float"])
def test_score_follows_the_model(name: str, brightness_model: Path) -> None:
    path = brightness_model.with_name(f"{name}.tflite")
    with LiteRTClassifier.open(path) as clf:
        assert clf.accelerator == "cpu"
        dark = clf.score(np.full((60, 80, 3), 20, np.uint8))
        bright = clf.score(np.full((60, 80, 3), 230, np.uint8))
        assert dark < 0.05 < 0.95 < bright
        assert clf.threshold == 0.5
        assert clf.version == "test-1"
        # Quantisation comes from the model: the int8 twin's input is uint8 with its own scale.
        t = clf.preprocess(np.full((10, 10, 3), 255, np.uint8))
        assert t.shape == (1, 32, 32, 3)
        assert t.dtype == (np.uint8 if "int8" in name else np.float32)


def test_auto_falls_back_to_cpu_and_edgetpu_fails_clearly(
    brightness_model: Path, tmp_path: Path
) -> None:
    with LiteRTClassifier.open(brightness_model, accelerator="auto") as clf:
        assert clf.accelerator == "cpu"
    with pytest.raises(AcceleratorError, match="edgetpu"):
        LiteRTClassifier.open(brightness_model, accelerator="edgetpu")
    # With a twin present, the missing runtime is the reason given.
    for p in brightness_model.parent.glob("brightness_int8.*"):
        shutil.copy(p, tmp_path / p.name)
    shutil.copy(brightness_model, edgetpu_twin(tmp_path / brightness_model.name))
    with pytest.raises(AcceleratorError, match=r"libedgetpu\.so\.1"):
        LiteRTClassifier.open(tmp_path / brightness_model.name, accelerator="edgetpu")


def test_sidecar_problems_are_model_errors(brightness_model: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.tflite"
    shutil.copy(brightness_model, model)
    with pytest.raises(ModelError, match="sidecar .* is missing"):
        LiteRTClassifier.open(model)
    sc = json.loads(brightness_model.with_suffix(".json").read_text())
    sc["sha256"] = "0" * 64
    (tmp_path / "m.json").write_text(json.dumps(sc))
    with pytest.raises(ModelError, match="does not match its sidecar"):
        LiteRTClassifier.open(model)
    sc.pop("sha256")
    sc["input"]["width"] = 64
    (tmp_path / "m.json").write_text(json.dumps(sc))
    with pytest.raises(ModelError, match=r"input shape \[1, 32, 32, 3\]"):
        LiteRTClassifier.open(model)
    sc["input"]["width"] = 32
    sc["labels"] = ["a", "b", "phone"]
    (tmp_path / "m.json").write_text(json.dumps(sc))
    with pytest.raises(ModelError, match="2 outputs but the sidecar lists 3"):
        LiteRTClassifier.open(model)


def test_corrupt_and_missing_model_files(brightness_model: Path, tmp_path: Path) -> None:
    sc = json.loads(brightness_model.with_suffix(".json").read_text())
    sc.pop("sha256")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(brightness_model.read_bytes()[:300])  # truncated: a power cut mid-copy
    (tmp_path / "bad.json").write_text(json.dumps(sc))
    with pytest.raises(ModelError, match="not a loadable TFLite model"):
        LiteRTClassifier.open(bad)
    with pytest.raises(ModelError, match="does not exist"):
        LiteRTClassifier.open(tmp_path / "nope.tflite")


# -- third-party models (../shared/data/models) --------------------------------------------
@pytest.mark.parametrize(
    ("model", "size"),
    [
        ("mobilenet_v1_0.25_128_quant.tflite", 128),
        ("mobilenet_v1_0.5_160_quant.tflite", 160),
        ("mobilenet_v2_1.0_224_quant.tflite", 224),
    ],
)
def test_imagenet_uint8_nhwc_models(
    shared_data: Path, tmp_path: Path, model: str, size: int
) -> None:
    models = shared_data / "models"
    sc = imagenet_sidecar(
        tmp_path,
        models,
        model,
        input={"width": size, "height": size, "layout": "NHWC", "colour": "RGB"},
    )
    with LiteRTClassifier.open(models / model, sidecar=sc) as clf:
        assert len(clf.spec.labels) == 1001
        img = cv2.imread(str(shared_data / "images" / "coral_grace_hopper.bmp"))
        assert img is not None
        # Grace Hopper in uniform: a real ImageNet model sees clothes, not phones.
        assert any(w in lab for lab in top5(clf, img) for w in CLOTHES)
        assert clf.score(img) < 0.1


def test_int8_nchw_model_with_logits(shared_data: Path, tmp_path: Path) -> None:
    models = shared_data / "models"
    model = "mobilenet_v2_quantized_1x3x224x224.tflite"
    sc = imagenet_sidecar(
        tmp_path,
        models,
        model,
        label_offset=-1,
        output={"activation": "softmax"},
        input={
            "width": 224,
            "height": 224,
            "layout": "NCHW",
            "colour": "RGB",
            "mean": [123.675, 116.28, 103.53],
            "std": [58.395, 57.12, 57.375],
        },
    )
    with LiteRTClassifier.open(models / model, sidecar=sc) as clf:
        assert len(clf.spec.labels) == 1000
        t = clf.preprocess(np.zeros((50, 50, 3), np.uint8))
        assert t.shape == (1, 3, 224, 224)
        assert t.dtype == np.int8
        img = cv2.imread(str(shared_data / "images" / "coral_grace_hopper.bmp"))
        assert img is not None
        assert any(w in lab for lab in top5(clf, img) for w in CLOTHES)
        assert 0.0 <= clf.score(img) <= 1.0


@pytest.mark.parametrize(
    "twin",
    [
        "mobilenet_v1_0.25_128_quant_edgetpu.tflite",
        "mobilenet_v1_0.5_160_quant_edgetpu.tflite",
    ],
)
def test_edgetpu_twins_need_the_edge_tpu_on_cpu(
    shared_data: Path, tmp_path: Path, twin: str
) -> None:
    models = shared_data / "models"
    size = 128 if "128" in twin else 160
    sc = imagenet_sidecar(
        tmp_path,
        models,
        twin,
        input={"width": size, "height": size, "layout": "NHWC", "colour": "RGB"},
    )
    with pytest.raises(AcceleratorError, match="needs the Edge TPU"):
        LiteRTClassifier.open(models / twin, sidecar=sc, accelerator="cpu")


def test_auto_with_a_real_twin_but_no_runtime_runs_on_cpu(
    shared_data: Path, tmp_path: Path
) -> None:
    models = shared_data / "models"
    model = "mobilenet_v1_0.25_128_quant.tflite"
    sc = imagenet_sidecar(
        tmp_path,
        models,
        model,
        input={"width": 128, "height": 128, "layout": "NHWC", "colour": "RGB"},
    )
    assert edgetpu_twin(models / model).is_file()
    with LiteRTClassifier.open(models / model, sidecar=sc, accelerator="auto") as clf:
        assert clf.accelerator == "cpu"


def test_model_that_fails_at_allocation(shared_data: Path, tmp_path: Path) -> None:
    models = shared_data / "models"
    sc = imagenet_sidecar(tmp_path, models, "invalid_model_invoking_error.tflite")
    with pytest.raises(ModelError, match="cannot be loaded.*fake-op-double"):
        LiteRTClassifier.open(models / "invalid_model_invoking_error.tflite", sidecar=sc)


def test_detector_is_refused_as_a_classifier(shared_data: Path, tmp_path: Path) -> None:
    models = shared_data / "models"
    model = "ssd_mobilenet_v1_quant_no_metadata.tflite"
    sc = imagenet_sidecar(
        tmp_path,
        models,
        model,
        input={"width": 300, "height": 300, "layout": "NHWC", "colour": "RGB"},
    )
    with pytest.raises(ModelError, match="outputs but the sidecar lists"):
        LiteRTClassifier.open(models / model, sidecar=sc)
