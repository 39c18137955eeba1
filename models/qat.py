"""Quantisation-aware fine-tuning of the MobileNet-V1 classifier (``models.train --qat``).

The unit runs the full-int8 export, not the float network, and the export rounds two things:
each convolution's weights (int8, symmetric, one scale per output channel) and each
activation (uint8-like, one scale per tensor). Measured on a site candidate that the export
check stopped (``docs/model.md``): the weights' rounding alone moved P(phone) by 0.019 on
average, the activations' by 0.012, the real int8 file by 0.025, and site recall at 5 % FPR fell
from 0.78 (float) to 0.75 (int8). A few hundred site crops at a small learning rate move the
weights off the int8 grid in directions the rounding then undoes.

Here, in training only, the forward pass uses the rounded values that the export will use, and
the gradient passes the rounding straight through (the straight-through estimator):

- ``QuantConv2D`` / ``QuantDepthwiseConv2D`` round the kernel per output channel to 255
  levels, as the converter does. Per-channel symmetric rounding commutes with a per-channel
  scale, so rounding the kernel before a batch-norm layer gives the same levels as rounding
  the folded kernel the converter sees.
- ``QuantReLU6`` rounds the ReLU6 output to 256 levels of ``0..6``, the range the converter
  calibrates for these layers (every ReLU6 in the shipped network reaches 6).

In inference (evaluation, ``predict``, the converter) every layer is the plain float one, so
the float model and the export are built exactly as without ``--qat``. TensorFlow's own
``tfmot`` does this too, but it does not support Keras 3.

Importing this module registers the layers, which ``keras.models.load_model`` needs to read a
``.keras`` file trained with them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np
from keras import ops

WEIGHT_LEVELS = 127
"""Symmetric int8 weights: -127..127 times the channel's scale (the converter's range)."""
ACT_MAX = 6.0
ACT_STEPS = 255

_ROUND_IN_INFERENCE = [False]


def _rounds(training: bool | None) -> bool:
    return bool(training) or _ROUND_IN_INFERENCE[0]


@contextmanager
def rounding_in_inference() -> Iterator[None]:
    """Within this block, eager inference calls round too: the network as it was trained,
    batch norm on its moving statistics, which is what the int8 export should reproduce."""
    _ROUND_IN_INFERENCE[0] = True
    try:
        yield
    finally:
        _ROUND_IN_INFERENCE[0] = False


def rounded_scores(
    model: Any, x: np.ndarray, *, positive_index: int = 1, batch: int = 128
) -> np.ndarray:
    """P(positive) of ``model`` on ``x`` as trained with rounding (eager, so the rounding
    switch is read on every call; ``predict`` would reuse a graph traced without it)."""
    out = []
    with rounding_in_inference():
        for i in range(0, len(x), batch):
            p = model(x[i : i + batch], training=False)
            out.append(np.asarray(p)[:, positive_index])
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def fake_quant_kernel(kernel: Any, channel_axis: int) -> Any:
    """``kernel`` rounded per channel along ``channel_axis`` to the int8 grid, with the
    identity's gradient."""
    axes = tuple(i for i in range(len(kernel.shape)) if i != channel_axis)
    peak = ops.max(ops.abs(kernel), axis=axes, keepdims=True)
    scale = ops.where(peak > 0, peak / WEIGHT_LEVELS, ops.ones_like(peak))
    rounded = ops.round(kernel / scale) * scale
    return kernel + ops.stop_gradient(rounded - kernel)


def _add_bias(layer: Any, outputs: Any) -> Any:
    if not layer.use_bias:
        return outputs
    return ops.add(outputs, ops.reshape(layer.bias, (1, 1, 1, -1)))


@keras.saving.register_keras_serializable(package="phonewatch")
class QuantConv2D(keras.layers.Conv2D):  # type: ignore[misc]
    """A ``Conv2D`` (channels last, no activation) whose kernel is int8-rounded in training."""

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        kernel = fake_quant_kernel(self.kernel, 3) if _rounds(training) else self.kernel
        return _add_bias(self, self.convolution_op(inputs, kernel))


@keras.saving.register_keras_serializable(package="phonewatch")
class QuantDepthwiseConv2D(keras.layers.DepthwiseConv2D):  # type: ignore[misc]
    """A ``DepthwiseConv2D`` (channels last, multiplier 1, no activation) whose kernel is
    int8-rounded per channel in training."""

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        kernel = fake_quant_kernel(self.kernel, 2) if _rounds(training) else self.kernel
        outputs = ops.depthwise_conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        return _add_bias(self, outputs)


@keras.saving.register_keras_serializable(package="phonewatch")
class QuantReLU6(keras.layers.Layer):  # type: ignore[misc]
    """In training, rounds its input (a ReLU6 output) to the 256 levels of ``0..6``."""

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not _rounds(training):
            return inputs
        step = ACT_MAX / ACT_STEPS
        rounded = ops.round(ops.clip(inputs, 0.0, ACT_MAX) / step) * step
        return inputs + ops.stop_gradient(rounded - inputs)
