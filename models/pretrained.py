"""ImageNet initialisation without the internet: rebuild a MobileNet-V1 backbone in Keras from
the weights of a quantised ImageNet TFLite classifier (e.g. Google's
``mobilenet_v1_0.25_128_quant.tflite``, Apache-2.0, in ``../shared/data/models``).

The TFLite model's batch norm is already folded into each convolution's weights and bias, so
the rebuilt backbone is a plain stack of convolutions with bias and ReLU6 (dequantised from
uint8 with each tensor's own scale and zero point). Everything before the average pool is kept;
the 1001-way ImageNet head is dropped. Input scaling matches the original (pixels to -1..1).

The same reader rebuilds the float network of an int8 MobileNet-V1 model that ``models.train``
exported (per-channel int8 weights, a two-way head kept by :func:`read_head`), so training can
continue from a shipped ``.tflite`` whose ``.keras`` is not at hand (``models.train --init``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from models.export import interpreter


def _dequant(it: Any, index: int) -> np.ndarray:
    """A constant tensor as float32: per-tensor (uint8 ImageNet models) or per-channel (the
    int8 models ``models.train`` exports) scale and zero point."""
    d = it._get_tensor_details(index, 0)
    q = np.asarray(it.get_tensor(index))
    qp = d.get("quantization_parameters", {})
    scales = np.asarray(qp.get("scales", []), np.float32)
    zeros = np.asarray(qp.get("zero_points", []), np.float32)
    if np.dtype(d["dtype"]).kind == "f" or scales.size == 0 or not scales.any():
        return np.asarray(q, np.float32)
    if scales.size > 1:  # one scale per slice along the quantised dimension
        shape = [1] * q.ndim
        shape[int(qp.get("quantized_dimension", 0))] = scales.size
        scales, zeros = scales.reshape(shape), zeros.reshape(shape)
    return ((q.astype(np.float32) - zeros) * scales).astype(np.float32)


def read_backbone(tflite: Path) -> list[dict[str, Any]]:
    """The conv / depthwise-conv layers up to the average pool: kind, stride, weights, bias."""
    it = interpreter(tflite, plain=True)
    layers: list[dict[str, Any]] = []
    for op in it._get_ops_details():
        name = op["op_name"]
        if name in ("AVERAGE_POOL_2D", "MEAN"):
            break
        if name == "QUANTIZE" and not layers:  # an int8 model's uint8 input conversion
            continue
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            raise ValueError(f"{tflite}: unexpected operator {name} in a MobileNet-V1 backbone")
        x_in, w_idx, b_idx = (int(i) for i in op["inputs"][:3])
        in_h = int(it._get_tensor_details(x_in, 0)["shape"][1])
        out_h = int(it._get_tensor_details(int(op["outputs"][0]), 0)["shape"][1])
        w = _dequant(it, w_idx)
        b = _dequant(it, b_idx)
        # conv: [out, kh, kw, in] -> [kh, kw, in, out]; depthwise: [1, kh, kw, c] -> [kh, kw, c, 1]
        kernel = w.transpose(1, 2, 3, 0) if name == "CONV_2D" else w[0][:, :, :, None]
        layers.append(
            {
                "kind": "conv" if name == "CONV_2D" else "dw",
                "stride": max(1, in_h // out_h),
                "kernel": kernel,
                "bias": b,
            }
        )
    if not layers:
        raise ValueError(f"{tflite}: no convolution layers found")
    return layers


def input_size(tflite: Path) -> int:
    """The input height (= width) of a square-input image model."""
    return int(interpreter(tflite, plain=True).get_input_details()[0]["shape"][1])


def read_head(tflite: Path) -> tuple[np.ndarray, np.ndarray]:
    """The fully connected layer after the pool as a Keras ``Dense`` kernel ``[in, out]`` and
    bias: the two-way head of a model ``models.train`` exported (ImageNet models have none)."""
    it = interpreter(tflite, plain=True)
    pooled = False
    for op in it._get_ops_details():
        if op["op_name"] in ("AVERAGE_POOL_2D", "MEAN"):
            pooled = True
        elif pooled and op["op_name"] == "FULLY_CONNECTED":
            w_idx, b_idx = (int(i) for i in op["inputs"][1:3])
            return _dequant(it, w_idx).T.copy(), _dequant(it, b_idx)
    raise ValueError(f"{tflite}: no fully connected layer after the pool")


def mobilenet_v1_backbone(
    tflite: Path,
    inp: Any,
    *,
    batchnorm: bool = False,
    act_noise: float = 0.0,
    quant_aware: bool = False,
) -> Any:
    """Keras tensors: the backbone applied to ``inp`` (NHWC, values -1..1), ImageNet weights.

    With ``batchnorm`` a BatchNormalization layer (``mnv1_bn_<i>``) follows each convolution.
    Fine-tuning the plain folded stack is slow (no normalisation, a small safe learning rate);
    with batch norm it tolerates a learning rate several times larger. Call
    :func:`identity_batchnorm` with sample inputs before training so the new layers start as
    the identity and the network starts as the ImageNet one; the TFLite converter folds them
    back into the convolutions at export.

    ``act_noise`` > 0 adds Gaussian noise of that standard deviation after each ReLU6, in
    training only: a stand-in for the rounding of int8 activations (one uint8 step of the
    0..6 range, 6/255, rounds with standard deviation 0.0068), so the network learns not to
    hang its decisions on differences finer than int8 keeps. The layers vanish at export.

    ``quant_aware`` trains on the int8 rounding itself instead (``models.qat``): each
    convolution's kernel and each ReLU6 output is rounded in training as the export will
    round it (``act_noise`` is then not used). In inference the layers are the plain ones.
    """
    import keras

    conv, depthwise = keras.layers.Conv2D, keras.layers.DepthwiseConv2D
    if quant_aware:
        from models.qat import QuantConv2D, QuantDepthwiseConv2D, QuantReLU6

        conv, depthwise = QuantConv2D, QuantDepthwiseConv2D

    x = inp
    for i, spec in enumerate(read_backbone(tflite)):
        k = spec["kernel"]
        if spec["kind"] == "conv":
            layer = conv(
                k.shape[3],
                k.shape[:2],
                strides=spec["stride"],
                padding="same",
                name=f"mnv1_conv_{i}",
            )
        else:
            layer = depthwise(
                k.shape[:2], strides=spec["stride"], padding="same", name=f"mnv1_dw_{i}"
            )
        x = layer(x)
        layer.set_weights([k, spec["bias"]])
        if batchnorm:
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"mnv1_bn_{i}")(x)
        x = keras.layers.ReLU(6.0, name=f"mnv1_relu_{i}")(x)
        if quant_aware:
            x = QuantReLU6(name=f"mnv1_aq_{i}")(x)
        elif act_noise > 0:
            x = keras.layers.GaussianNoise(act_noise, name=f"mnv1_qnoise_{i}")(x)
    return x


def identity_batchnorm(model: Any, sample: np.ndarray) -> int:
    """Set every ``mnv1_bn_<i>`` layer of ``model`` to pass its input through unchanged.

    Each layer's moving mean and variance become the statistics of its input on ``sample``
    (a batch of model inputs), and its scale and offset undo the normalisation, so the output
    is the input (to float rounding) in inference and, for batches like ``sample``, in
    training. Returns the number of layers set.
    """
    import keras

    bns = [layer for layer in model.layers if layer.name.startswith("mnv1_bn_")]
    if not bns:
        return 0
    # First every layer passes any input through exactly (scale sqrt(1 + eps) on statistics
    # 0 and 1), so one forward pass reads each layer's input as the original network computes
    # it; layer by layer, each with a probe model of its own, took over a minute on 282 crops.
    chans = [int(bn.gamma.shape[-1]) for bn in bns]
    for bn, c in zip(bns, chans, strict=True):
        zeros, ones = np.zeros(c, np.float32), np.ones(c, np.float32)
        bn.set_weights([np.full(c, np.sqrt(1.0 + bn.epsilon), np.float32), zeros, zeros, ones])
    probe = keras.Model(model.input, [bn.input for bn in bns])
    total = [np.zeros(c) for c in chans]
    square = [np.zeros(c) for c in chans]
    count = [0] * len(bns)
    for i in range(0, len(sample), 64):
        for k, act in enumerate(probe(sample[i : i + 64], training=False)):
            a = np.asarray(act, np.float64).reshape(-1, act.shape[-1])
            total[k] += a.sum(axis=0)
            square[k] += (a * a).sum(axis=0)
            count[k] += a.shape[0]
    for bn, t, sq, n in zip(bns, total, square, count, strict=True):
        mean = t / n
        var = np.maximum(sq / n - mean * mean, 0.0)
        gamma = np.sqrt(var + bn.epsilon)
        bn.set_weights(
            [
                gamma.astype(np.float32),
                mean.astype(np.float32),
                mean.astype(np.float32),
                var.astype(np.float32),
            ]
        )
    return len(bns)
