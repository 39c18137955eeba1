"""Builds the tiny *real* YOLO-style detector the detector tests use (needs TensorFlow).

``raw_detector_int8.tflite``: int8 in / int8 out, input ``[1, 32, 32, 3]``, one output
``[1, 8, 7]`` = 8 anchors x (cx, cy, w, h, person, car, truck). Every output value is a fixed
constant (``ANCHORS`` below) times the brightest input value (0..1): a frame with any white
pixel gives exactly the constants (up to int8 rounding), a black frame gives zeros. So a test
knows what decode, the class filter and NMS must return.
``raw_detector_t_int8.tflite``: the same, transposed to ``[1, 7, 8]`` with anchors on the last
axis (``[1, 4 + C, N]``, the Ultralytics layout). Both are 32x32 so they stay a few KB.
Each gets a sidecar beside it: the first letterboxes frames (so a black frame still has the
grey padding, 114/255, as its brightest value), the second stretches them.

Run from the repo root:  .venv/bin/python tests/data/make_raw_detector.py
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
LABELS = ["person", "car", "truck"]

ANCHORS = np.array(
    [
        # cx    cy    w     h     person car   truck
        [0.25, 0.50, 0.20, 0.20, 0.00, 0.90, 0.10],  # 0 car: kept
        [0.26, 0.50, 0.20, 0.20, 0.00, 0.80, 0.00],  # 1 the same car, shifted: NMS drops it
        [0.25, 0.52, 0.20, 0.20, 0.00, 0.05, 0.70],  # 2 the same car called truck: NMS drops it
        [0.70, 0.50, 0.30, 0.40, 0.00, 0.20, 0.85],  # 3 truck: kept
        [0.50, 0.20, 0.10, 0.30, 0.95, 0.00, 0.00],  # 4 person: filtered out
        [0.85, 0.85, 0.10, 0.10, 0.00, 0.30, 0.00],  # 5 car below score_min 0.5: dropped
        [0.45, 0.80, 0.20, 0.20, 0.00, 0.60, 0.00],  # 6 car touching the truck: kept
        [0.10, 0.10, 0.05, 0.05, 0.00, 0.00, 0.00],  # 7 nothing
    ],
    dtype=np.float32,
)


def build(transposed: bool) -> tuple[Any, Any]:
    """TensorFlow (imported here: only this script needs it) and the Keras model."""
    import tensorflow as tf

    n, width = ANCHORS.shape
    inp = tf.keras.Input((SIZE, SIZE, 3))
    x = tf.keras.layers.GlobalMaxPooling2D()(inp)  # [1, 3]
    dense = tf.keras.layers.Dense(n * width, use_bias=False)
    # Each output = constant * max over the three channels' maxima: the weight sits on the
    # channel-wise maxima through a max over channels, so the graph keeps a real dependency
    # on the input (the converter cannot fold it away).
    m = tf.keras.layers.Lambda(lambda t: tf.reduce_max(t, axis=-1, keepdims=True))(x)  # [1, 1]
    y = dense(m)
    consts = ANCHORS.T if transposed else ANCHORS
    out = tf.keras.layers.Reshape(consts.shape)(y)
    model = tf.keras.Model(inp, out)
    dense.set_weights([consts.reshape(1, -1)])
    return tf, model


def sidecar(file: Path, *, resize: str) -> dict[str, Any]:
    return {
        "schema": 1,
        "kind": "detector",
        "name": "raw-test-detector",
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
        "resize": resize,
        "output": "raw",
        "labels": LABELS,
        "vehicle_classes": ["car", "truck"],
        "score_min": 0.5,
        "nms_iou": 0.5,
        "description": "Test detector: fixed anchors (make_raw_detector.ANCHORS) times the "
        "brightest input value.",
    }


def convert(tf: Any, model: Any) -> bytes:
    rng = np.random.default_rng(0)

    def representative() -> Iterator[list[np.ndarray]]:
        for i in range(32):
            img = rng.uniform(0, 1, (1, SIZE, SIZE, 3)).astype(np.float32)
            if i % 2:
                img[0, 0, 0, :] = 1.0  # a white pixel: the full output range
            yield [img]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    data: bytes = conv.convert()
    return data


def main() -> None:
    for transposed, name, resize in (
        (False, "raw_detector_int8", "letterbox"),
        (True, "raw_detector_t_int8", "stretch"),
    ):
        tf, model = build(transposed)
        path = HERE / f"{name}.tflite"
        path.write_bytes(convert(tf, model))
        spec = sidecar(path, resize=resize)
        (HERE / f"{name}.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
        print(f"{path.name}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
