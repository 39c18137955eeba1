"""``LiteRTClassifier.score_batch``: one ``invoke()`` for all ROIs where the model allows it,
with scores equal to scoring the ROIs one by one (and to the pre-batching code)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.adapters.classifier import (
    BATCH_CACHE,
    BATCH_SIZES,
    LiteRTClassifier,
    _runtime,
    batch_chunks,
)
from edge.core.errors import ModelError
from edge.core.model_spec import load_spec
from edge.core.preprocess import dequantise
from models.synth.render import render_crop

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO / "models" / "phone_in_hand" / "phone_in_hand.tflite"
STATIC_DELEGATE_ERROR = (
    "Attempting to use a delegate that only supports static-sized tensors with a graph that "
    "has dynamic-sized tensors."
)


@pytest.fixture(scope="module")
def default_clf() -> Any:
    with LiteRTClassifier.open(DEFAULT_MODEL, threads=1) as clf:
        yield clf


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    """Driver-window crops of varying size, with and without a phone."""
    return [render_crop(21, i, phone=i % 2 == 0)[0] for i in range(10)]


def legacy_scores(clf: LiteRTClassifier, tensors: list[np.ndarray]) -> list[float]:
    """What the classifier computed before batching: set_tensor / invoke / get_tensor, then
    dequantise, the sidecar's activation, and the positive labels' sum, per ROI, on a fresh
    interpreter."""
    interpreter_cls, _, _ = _runtime()
    it = interpreter_cls(model_path=str(clf.model_path), num_threads=1)
    it.allocate_tensors()
    i_in = it.get_input_details()[0]["index"]
    out = it.get_output_details()[clf.spec.output_index]
    scale, zero = out["quantization"]
    pos = list(clf.spec.positive_indices)
    res = []
    for t in tensors:
        it.set_tensor(i_in, t)
        it.invoke()
        o = dequantise(it.get_tensor(out["index"]), float(scale), int(zero)).reshape(-1)
        if clf.spec.activation == "softmax":
            e = np.exp(o - o.max())
            o = e / e.sum()
        elif clf.spec.activation == "sigmoid":
            o = 1.0 / (1.0 + np.exp(-o))
        res.append(float(np.clip(o[pos].sum(), 0.0, 1.0)))
    return res


def test_default_model_batches_and_matches_one_by_one(
    default_clf: LiteRTClassifier, crops: list[np.ndarray]
) -> None:
    clf = default_clf
    assert clf.batching
    tensors = [clf.preprocess(c) for c in crops]
    batch = clf.score_batch(tensors)
    single = [clf.score_batch([t])[0] for t in tensors]
    legacy = legacy_scores(clf, tensors)
    assert len(batch) == len(crops)
    np.testing.assert_allclose(batch, single, rtol=0, atol=1e-6)
    np.testing.assert_allclose(batch, legacy, rtol=0, atol=1e-6)
    assert max(batch) - min(batch) > 0.2  # the crops differ, so equal scores mean something
    assert [clf.score(c) for c in crops[:3]] == pytest.approx(batch[:3], abs=1e-6)


def test_every_round_size_uses_the_few_fixed_batch_interpreters(
    default_clf: LiteRTClassifier, crops: list[np.ndarray]
) -> None:
    # Several cameras' rounds come in every size: each is split into batches of 16, 8, 4 or 2
    # (and single crops), so only those interpreters are ever built, once each, and reused.
    clf = default_clf
    tensors = [clf.preprocess(c) for c in crops]
    while len(tensors) < 40:
        tensors += tensors
    single = [clf.score_batch([t])[0] for t in tensors]
    built: dict[int, Any] = {}
    for n in [2, 3, 2, 3, 5, 2, 1, 12, 7, 33, 24, 2]:
        got = clf.score_batch(tensors[:n])
        np.testing.assert_allclose(got, single[:n], rtol=0, atol=1e-6)
        for size, it in clf._batch_its.items():
            assert built.setdefault(size, it) is it  # built once, then reused
    assert set(built) == set(BATCH_SIZES)
    assert len(built) <= BATCH_CACHE
    assert batch_chunks(12) == [8, 4]
    assert batch_chunks(7) == [4, 2, 1]
    assert batch_chunks(33) == [16, 16, 1]
    assert sum(batch_chunks(29)) == 29


def test_a_tensor_of_the_wrong_shape_or_type_is_refused(
    default_clf: LiteRTClassifier, crops: list[np.ndarray]
) -> None:
    clf = default_clf
    good = clf.preprocess(crops[0])
    before = clf.score_batch([good])
    with pytest.raises(ModelError, match=r"must be \[1, 160, 160, 3\] uint8, got \[1, 1, 1, 3\]"):
        clf.score_batch([good, good[:, :1, :1, :]])
    with pytest.raises(ModelError, match="float32"):
        clf.score_batch([good.astype(np.float32)])
    with pytest.raises(ModelError, match="preprocess"):
        clf.invoke(good[0])
    assert clf.score_batch([good]) == before  # nothing was left half-written


class StaticShapeInterpreter:
    """A real interpreter behind a delegate that, like the Edge TPU's, takes only the shape
    the model was compiled for: a resize is recorded, and ``allocate_tensors`` after it fails
    the way TFLite fails a static-size delegate on a resized graph."""

    def __init__(self, model: Path, *, signature: list[int] | None = None) -> None:
        interpreter_cls, _, _ = _runtime()
        self._it = interpreter_cls(model_path=str(model))
        self._it.allocate_tensors()
        self.signature = signature
        self.resized: list[list[int]] = []
        self.invokes = 0

    def get_input_details(self) -> list[dict[str, Any]]:
        d = self._it.get_input_details()
        if self.signature is not None:
            d[0]["shape_signature"] = np.array(self.signature)
        return d  # type: ignore[no-any-return]

    def get_output_details(self) -> list[dict[str, Any]]:
        return self._it.get_output_details()  # type: ignore[no-any-return]

    def resize_tensor_input(self, index: int, shape: list[int], strict: bool = False) -> None:
        self.resized.append(list(shape))

    def allocate_tensors(self) -> None:
        if self.resized:
            raise RuntimeError(STATIC_DELEGATE_ERROR)
        self._it.allocate_tensors()

    def tensor(self, index: int) -> Any:
        return self._it.tensor(index)

    def get_tensor(self, index: int) -> np.ndarray:
        return self._it.get_tensor(index)  # type: ignore[no-any-return]

    def invoke(self) -> None:
        self.invokes += 1
        self._it.invoke()


def static_classifier(
    model: Path, *, accelerator: str, signature: list[int] | None
) -> tuple[LiteRTClassifier, StaticShapeInterpreter, list[StaticShapeInterpreter]]:
    main = StaticShapeInterpreter(model, signature=signature)
    built: list[StaticShapeInterpreter] = []

    def factory() -> StaticShapeInterpreter:
        built.append(StaticShapeInterpreter(model, signature=signature))
        return built[-1]

    clf = LiteRTClassifier(
        main,
        load_spec(model.with_suffix(".json")),
        model_path=model,
        sha256="x",
        accelerator=accelerator,
        runtime="test",
        interpreter_factory=factory,
    )
    return clf, main, built


def grey_tensors(clf: LiteRTClassifier) -> list[np.ndarray]:
    return [clf.preprocess(np.full((40, 50, 3), v, np.uint8)) for v in (20, 120, 140, 230)]


def test_edgetpu_scores_one_by_one_and_never_resizes(brightness_model: Path) -> None:
    clf, main, built = static_classifier(
        brightness_model, accelerator="edgetpu", signature=[-1, 32, 32, 3]
    )
    assert not clf.batching
    scores = clf.score_batch(grey_tensors(clf))
    assert main.invokes == 4
    assert built == []
    assert main.resized == []
    assert scores[0] < 0.05 < scores[1] < scores[2] < 0.95 < scores[3]


def test_cpu_model_whose_delegate_refuses_a_batch_falls_back_once(
    brightness_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clf, main, built = static_classifier(
        brightness_model, accelerator="cpu", signature=[-1, 32, 32, 3]
    )
    assert clf.batching
    tensors = grey_tensors(clf)
    with caplog.at_level(logging.WARNING, logger="edge.adapters.classifier"):
        first = clf.score_batch(tensors)
    assert "one by one" in caplog.text
    assert "static-sized" in caplog.text
    assert not clf.batching
    assert len(built) == 1
    assert built[0].resized == [[4, 32, 32, 3]]
    assert main.invokes == 4
    assert built[0].invokes == 0
    assert clf.score_batch(tensors) == first  # no second attempt, same scores
    assert len(built) == 1
    assert main.invokes == 8
    with LiteRTClassifier.open(brightness_model) as real:
        np.testing.assert_allclose(first, real.score_batch(tensors), rtol=0, atol=1e-6)


def test_model_with_a_fixed_batch_axis_is_not_resized(brightness_model: Path) -> None:
    clf, main, built = static_classifier(
        brightness_model, accelerator="cpu", signature=[1, 32, 32, 3]
    )
    assert not clf.batching
    assert len(clf.score_batch(grey_tensors(clf))) == 4
    assert built == []
    assert main.invokes == 4
