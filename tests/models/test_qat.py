"""Quantisation-aware training layers (``models.qat``): in training they round as the int8
export does and pass the gradient straight through; in inference they are the plain layers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="TensorFlow (the 'train' extra) is not installed")

import keras
import tensorflow as tf

from edge.core.preprocess import InputSpec
from models import data as mdata
from models import export, train
from models.qat import (
    QuantConv2D,
    QuantDepthwiseConv2D,
    QuantReLU6,
    fake_quant_kernel,
    rounded_scores,
)
from models.synth.render import render_crop

DEFAULT = Path(__file__).resolve().parents[2] / "models/phone_in_hand/phone_in_hand.tflite"


def _kernel(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = rng.normal(0, 0.3, shape).astype(np.float32)
    k[..., 0] *= 10.0  # channels of very different size: each keeps its own scale
    return k


def test_a_kernel_is_rounded_per_channel_to_the_int8_grid() -> None:
    k = _kernel((3, 3, 4, 5))
    q = np.asarray(fake_quant_kernel(tf.constant(k), 3))
    for c in range(k.shape[3]):
        peak = np.abs(k[..., c]).max()
        steps = q[..., c] / (peak / 127)
        # Every weight is a whole number of the channel's own step, at most 127 of them, and
        # the largest keeps its value (the converter's symmetric per-channel int8).
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
        assert np.abs(steps).max() == pytest.approx(127, abs=1e-3)
        assert np.abs(q[..., c] - k[..., c]).max() <= peak / 127 / 2 + 1e-6
    assert not np.allclose(q, k)


def test_rounding_passes_the_gradient_straight_through() -> None:
    k = tf.Variable(_kernel((3, 3, 2, 1)))
    weights = tf.constant(np.random.default_rng(1).normal(size=(3, 3, 2, 1)).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(fake_quant_kernel(k, 2) * weights)
    np.testing.assert_allclose(tape.gradient(loss, k).numpy(), weights.numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    ("quant", "plain", "shape", "axis"),
    [
        (
            lambda: QuantConv2D(5, 3, padding="same"),
            lambda: keras.layers.Conv2D(5, 3, padding="same"),
            (3, 3, 4, 5),
            3,
        ),
        (
            lambda: QuantDepthwiseConv2D(3, padding="same"),
            lambda: keras.layers.DepthwiseConv2D(3, padding="same"),
            (3, 3, 4, 1),
            2,
        ),
    ],
    ids=["conv", "depthwise"],
)
def test_a_convolution_rounds_its_kernel_in_training_only(
    quant: Any, plain: Any, shape: tuple[int, ...], axis: int
) -> None:
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 6, (2, 9, 9, 4)).astype(np.float32)
    q, p = quant(), plain()
    q.build(x.shape)
    p.build(x.shape)
    k, b = _kernel(shape, 3), rng.normal(size=shape[3] * shape[2] if axis == 2 else shape[3])
    b = b.astype(np.float32)
    q.set_weights([k, b])
    p.set_weights([k, b])
    np.testing.assert_allclose(q(x, training=False), p(x), rtol=1e-5, atol=1e-5)
    p.set_weights([np.asarray(fake_quant_kernel(tf.constant(k), axis)), b])
    np.testing.assert_allclose(q(x, training=True), p(x), rtol=1e-5, atol=1e-4)
    assert not np.allclose(q(x, training=True), q(x, training=False), atol=1e-4)


def test_an_activation_rounds_to_the_uint8_steps_of_relu6_in_training_only() -> None:
    rng = np.random.default_rng(2)
    act = QuantReLU6()
    a = rng.uniform(0, 6, (100,)).astype(np.float32)
    np.testing.assert_array_equal(act(a, training=False), a)
    steps = np.asarray(act(a, training=True)) / (6 / 255)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
    assert np.abs(np.asarray(act(a, training=True)) - a).max() <= 6 / 255 / 2 + 1e-6


@pytest.mark.slow
def test_a_qat_rebuild_scores_as_the_plain_one_and_survives_a_keras_round_trip(
    tmp_path: Path,
) -> None:
    prov = json.loads(DEFAULT.with_suffix(".json").read_text())["provenance"]
    x = mdata.to_tensors(
        [render_crop(12, i)[0] for i in range(16)], InputSpec(width=160, height=160)
    )
    plain = train.rebuild_float(DEFAULT, prov)
    qat = train.rebuild_float(DEFAULT, prov, qat=True)
    assert isinstance(qat.get_layer("mnv1_dw_1"), QuantDepthwiseConv2D)
    assert sum(layer.name.startswith("mnv1_aq_") for layer in qat.layers) == 27
    np.testing.assert_allclose(qat.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-5)
    path = tmp_path / "m.keras"
    qat.save(path)
    again = keras.models.load_model(path, compile=False)
    assert isinstance(again.get_layer("mnv1_conv_0"), QuantConv2D)
    np.testing.assert_allclose(again.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-5)
    # The int8 export is the plain network's: the rounding layers leave no op behind.
    out = export.export_int8(qat, x, tmp_path / "q.tflite")
    assert export.check_full_int8(out) == []
    # The network as trained (rounding on) is the reference the int8 file is checked against
    # after a --qat run; the switch holds only inside ``rounded_scores``.
    floats = plain.predict(x, verbose=0)[:, 1]
    ref = rounded_scores(again, x)
    assert 1e-4 < np.abs(ref - floats).mean() < 0.05
    np.testing.assert_allclose(np.asarray(again(x, training=False))[:, 1], floats, atol=1e-5)
