"""Builds the tiny *real* TFLite models the unit tests use (needs the `train` extra).

``brightness_int8.tflite``: full-integer (uint8 in / uint8 out) model whose P(phone) rises
with the mean brightness of the crop -- a real interpreter, real quantisation, and a score a
test can steer by painting pixels. ``brightness_float.tflite``: the same, float I/O.
Run from the repo root:  .venv/bin/python tests/data/make_test_models.py
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SIZE = 32
GAIN = 12.0  # logit slope per unit of mean brightness (0..1)


def build() -> tuple[Any, Any]:
    """TensorFlow (imported here: only this script needs it) and the Keras model."""
    import tensorflow as tf

    inp = tf.keras.Input((SIZE, SIZE, 3))
    x = tf.keras.layers.GlobalAveragePooling2D()(inp)
    dense = tf.keras.layers.Dense(2, activation="softmax")
    out = dense(x)
    model = tf.keras.Model(inp, out)
    w = np.array([[-GAIN / 3, GAIN / 3]] * 3, dtype=np.float32)
    b = np.array([GAIN / 2, -GAIN / 2], dtype=np.float32)
    dense.set_weights([w, b])
    return tf, model


def sidecar(name: str, file: Path) -> dict[str, Any]:
    return {
        "schema": 1,
        "name": name,
        "version": "test-1",
        "file": file.name,
        "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
        "input": {
            "width": SIZE,
            "height": SIZE,
            "layout": "NHWC",
            "colour": "RGB",
            "mean": [0.0, 0.0, 0.0],
            "std": [255.0, 255.0, 255.0],
        },
        "output": {"activation": "none"},
        "labels": ["no_phone", "phone"],
        "positive_labels": ["phone"],
        "threshold": 0.5,
        "description": "Test model: P(phone) = sigmoid(12 * (mean brightness - 0.5)).",
    }


def main() -> None:
    tf, model = build()
    rng = np.random.default_rng(0)

    def representative() -> Iterator[list[np.ndarray]]:
        for _ in range(64):
            level = rng.uniform(0, 1)
            yield [np.clip(rng.normal(level, 0.1, (1, SIZE, SIZE, 3)), 0, 1).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    q = HERE / "brightness_int8.tflite"
    q.write_bytes(conv.convert())
    f = HERE / "brightness_float.tflite"
    f.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    for name, path in (("brightness-int8", q), ("brightness-float", f)):
        path.with_suffix(".json").write_text(json.dumps(sidecar(name, path), indent=2) + "\n")
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
