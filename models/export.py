"""Full-integer int8 TFLite export, the float/int8 parity check, and the sidecar JSON.

The exported model takes ``uint8`` input and gives ``uint8`` output, every op is quantised
(``TFLITE_BUILTINS_INT8`` only), and the ops are ones the Edge TPU compiler accepts (conv,
depthwise conv, add, mean, fully connected, softmax). The Edge TPU twin is made off-line::

    edgetpu_compiler -s -o models/phone_in_hand models/phone_in_hand/phone_in_hand.tflite
    # -> models/phone_in_hand/phone_in_hand_edgetpu.tflite (the unit loads it with
    #    accelerator = "edgetpu" or "auto")

``edgetpu_compiler`` runs on x86-64 Debian/Ubuntu only (Coral's apt repository) and is not
installed on the build machine here, so no ``_edgetpu`` twin is committed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.core.model_spec import ModelSpec, parse_spec
from edge.core.preprocess import InputSpec, dequantise, quantise

log = logging.getLogger(__name__)

EDGETPU_OPS = {
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "ADD",
    "MEAN",
    "AVERAGE_POOL_2D",
    "FULLY_CONNECTED",
    "SOFTMAX",
    "QUANTIZE",
    "DEQUANTIZE",
    "RESHAPE",
    "MAX_POOL_2D",
    "CONCATENATION",
    "PAD",
    "RELU",
    "RELU6",
    "LOGISTIC",
    "MUL",
    "SUB",
}
"""Operators the Edge TPU compiler maps (a subset of its documented list that small CNNs use)."""
PARITY_MIN = 0.99


def export_int8(model: Any, representative: np.ndarray, out_path: Path) -> Path:
    """Convert a Keras model to a full-integer TFLite file (uint8 in and out).

    ``representative`` is a batch of preprocessed float inputs (NHWC) that covers the data
    (both classes, every domain): it sets the activation ranges.
    """
    import tensorflow as tf

    def rep() -> Any:
        for i in range(representative.shape[0]):
            yield [representative[i : i + 1].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = rep
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    # Keras prints the exported signature (~50 "TensorSpec" lines) on stdout, burying a
    # training run's result: kept for a debug log instead.
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        data = converter.convert()
    log.debug("converter said: %s", printed.getvalue())
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(data)
    log.info("wrote %s (%d bytes)", out_path, len(data))
    return out_path


def interpreter(path: Path, *, plain: bool = False) -> Any:
    """A LiteRT interpreter; ``plain`` skips the default XNNPACK delegate (to list raw ops)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kw: dict[str, Any] = {}
    if plain:
        kw["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(model_path=str(path), num_threads=2, **kw)
    it.allocate_tensors()
    return it


def model_ops(path: Path) -> list[str]:
    """Operator names used by a TFLite model."""
    it = interpreter(path, plain=True)
    return sorted({d["op_name"] for d in it._get_ops_details()})


def check_full_int8(path: Path) -> list[str]:
    """Problems that would stop the model being full-integer / Edge TPU-ready (empty = fine)."""
    it = interpreter(path, plain=True)
    problems = []
    for d in it.get_input_details() + it.get_output_details():
        if np.dtype(d["dtype"]) not in (np.dtype(np.uint8), np.dtype(np.int8)):
            problems.append(f"tensor {d['name']!r} is {np.dtype(d['dtype']).name}, not (u)int8")
    for op in it._get_ops_details():
        if op["op_name"] not in EDGETPU_OPS:
            problems.append(f"operator {op['op_name']} is not one the Edge TPU compiler maps")
        if any(np.dtype(t).kind == "f" for t in op.get("operand_types", [])):
            problems.append(f"operator {op['op_name']} has a float input")
    return problems


def tflite_scores(path: Path, tensors: np.ndarray, *, positive_index: int = 1) -> np.ndarray:
    """P(phone) from a TFLite model for preprocessed float inputs (NHWC), softmax in-graph."""
    it = interpreter(path)
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    in_scale, in_zero = float(inp["quantization"][0]), int(inp["quantization"][1])
    out_scale, out_zero = float(out["quantization"][0]), int(out["quantization"][1])
    scores = np.empty(tensors.shape[0], np.float64)
    for i in range(tensors.shape[0]):
        q = quantise(tensors[i : i + 1], in_scale, in_zero, np.dtype(inp["dtype"]))
        it.set_tensor(inp["index"], q)
        it.invoke()
        p = dequantise(it.get_tensor(out["index"]), out_scale, out_zero).reshape(-1)
        scores[i] = float(p[positive_index])
    return scores


def parity(
    float_scores: np.ndarray, int8_scores: np.ndarray, thresholds: Sequence[float]
) -> dict[str, Any]:
    """How often the int8 model makes the float model's decision, at each threshold."""
    d: dict[str, Any] = {
        "n": int(float_scores.size),
        "mean_abs_diff": float(np.abs(float_scores - int8_scores).mean()),
        "max_abs_diff": float(np.abs(float_scores - int8_scores).max()),
    }
    d["agreement"] = {
        f"{t:.4f}": float(((float_scores >= t) == (int8_scores >= t)).mean()) for t in thresholds
    }
    return d


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_sidecar(
    model_path: Path,
    *,
    spec_in: InputSpec,
    labels: Sequence[str],
    positive: Sequence[str],
    threshold: float,
    name: str,
    version: str,
    description: str,
    provenance: dict[str, Any],
    metrics: dict[str, Any],
) -> ModelSpec:
    """Write ``<model>.json`` beside the model (validated with the unit's own parser)."""
    spec = ModelSpec(
        name=name,
        version=version,
        file=model_path.name,
        sha256=file_sha256(model_path),
        input=spec_in,
        activation="none",
        output_index=0,
        labels=tuple(labels),
        positive_labels=tuple(positive),
        threshold=round(float(threshold), 6),
        provenance=provenance,
        metrics=metrics,
        description=description,
    )
    d = spec.to_dict()
    parsed = parse_spec(json.loads(json.dumps(d)), where=str(model_path.with_suffix(".json")))
    model_path.with_suffix(".json").write_text(json.dumps(d, indent=1) + "\n", encoding="utf-8")
    return parsed
