"""The vehicle detector on LiteRT: an SSD-postprocess or YOLO-style TFLite model -> vehicle boxes.

The interpreter is built once, with the runtime loader, Edge TPU twin rule and load-error
messages of the classifier (``edge.adapters.classifier``). Quantisation parameters come from
the model's tensors; the rest (input size and normalisation, resize mode, output kind, labels,
vehicle classes, thresholds) from the detector sidecar (``edge.core.detection_spec``).

A frame is resized with the house preprocessing (``preprocess_quantised``: the same area
sampling the classifier uses) either by stretching it to the input size (each axis scaled on its
own) or by letterboxing it (aspect kept, grey padding); boxes come back in frame pixels either
way (``Placement`` in ``edge.core.vehicle``).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from edge.adapters.classifier import (
    check_input_shape,
    checked_sha256,
    file_sha256,
    load_interpreter,
)
from edge.core.detection_spec import DetectorSpec, load_detector_spec
from edge.core.errors import ModelError
from edge.core.preprocess import InputSpec, dequantise, preprocess_quantised, to_layout
from edge.core.vehicle import (
    Candidates,
    Placement,
    VehicleBox,
    decode_raw,
    decode_ssd,
    select,
)

log = logging.getLogger(__name__)

LETTERBOX_GREY = 114
"""Pixel value (0..255) of a letterbox's padding, as YOLO's exporters use."""


class LiteRTDetector:
    """A TFLite vehicle detector (see module doc). Use :meth:`open`."""

    def __init__(
        self,
        interpreter: Any,
        spec: DetectorSpec,
        *,
        model_path: Path,
        sha256: str,
        accelerator: str,
        runtime: str,
    ) -> None:
        self._it = interpreter
        self.spec = spec
        self.model_path = model_path
        self.sha256 = sha256
        self.accelerator = accelerator
        self.runtime = runtime
        self.name = spec.name
        self.version = spec.version
        inp = interpreter.get_input_details()
        self._outs = interpreter.get_output_details()
        if len(inp) != 1:
            raise ModelError(f"{model_path}: expected one input tensor, found {len(inp)}")
        self._in = inp[0]
        self._check_input()
        self._raw_transposed = self._check_outputs()
        self._in_scale = float(self._in["quantization"][0])
        self._in_zero = int(self._in["quantization"][1])
        self._in_dtype = np.dtype(self._in["dtype"])
        self._vehicle_ids = spec.vehicle_ids
        grey = np.full((2, 2, 3), LETTERBOX_GREY, dtype=np.uint8)
        self._pad = self._prepare(grey, spec.input)[0, 0]
        self._closed = False

    @classmethod
    def open(
        cls,
        model_path: Path | str,
        sidecar_path: Path | str | None = None,
        threads: int = 2,
        *,
        accelerator: str = "cpu",
    ) -> LiteRTDetector:
        """Build the detector. ``sidecar_path`` defaults to ``x.json`` beside ``x.tflite``;
        pass it when the model lives elsewhere (the shared COCO SSD, whose sidecar is in
        ``models/vehicle/``). ``accelerator``: ``cpu``, ``edgetpu`` or ``auto``."""
        model_path = Path(model_path)
        spec_path = (
            Path(sidecar_path) if sidecar_path is not None else model_path.with_suffix(".json")
        )
        if not model_path.is_file():
            raise ModelError(f"detector model file {model_path} does not exist")
        spec = load_detector_spec(spec_path)
        sha = checked_sha256(model_path, spec_path, spec.sha256, accelerator)
        m = load_interpreter(model_path, accelerator, threads, what="detector")
        sha = sha if m.path == model_path else file_sha256(m.path)
        return cls(
            m.interpreter,
            spec,
            model_path=m.path,
            sha256=sha,
            accelerator=m.accelerator,
            runtime=m.runtime,
        )

    # -- checks -------------------------------------------------------------------------------
    def _check_input(self) -> None:
        check_input_shape(
            self.model_path, self._in["shape"], self.spec.input, "the detector sidecar"
        )

    def _check_outputs(self) -> bool:
        """Refuse outputs that do not fit the sidecar's ``output`` kind; for ``raw``, say
        whether the anchors are on the last axis (``[1, 4 + C, N]``)."""
        shapes = [tuple(int(x) for x in o["shape"]) for o in self._outs]
        if self.spec.output == "ssd":
            ok = (
                len(shapes) == 4
                and len(shapes[0]) == 3
                and shapes[0][2] == 4
                and shapes[1] == shapes[0][:2]
                and shapes[2] == shapes[0][:2]
                and int(np.prod(shapes[3])) == 1
            )
            if not ok:
                raise ModelError(
                    f"{self.model_path}: the sidecar says output 'ssd' (four outputs: boxes "
                    f"[1, N, 4], classes [1, N], scores [1, N], count [1]) but the model has "
                    f"{len(shapes)} output(s) shaped {[list(s) for s in shapes]}"
                )
            return False
        width = 4 + len(self.spec.labels)
        if len(shapes) != 1 or len(shapes[0]) != 3 or width not in shapes[0][1:]:
            raise ModelError(
                f"{self.model_path}: the sidecar says output 'raw' (one output [1, N, {width}] "
                f"or [1, {width}, N]: 4 box values + {len(self.spec.labels)} labels) but the "
                f"model has {len(shapes)} output(s) shaped {[list(s) for s in shapes]}"
            )
        # [1, 4 + C, N] is what Ultralytics exports; when N == 4 + C, that layout is assumed.
        return shapes[0][1] == width

    # -- inference ----------------------------------------------------------------------------
    def _prepare(self, img_bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
        return preprocess_quantised(img_bgr, spec, self._in_scale, self._in_zero, self._in_dtype)

    def placement(self, frame_width: int, frame_height: int) -> Placement:
        model_wh = (self.spec.input.width, self.spec.input.height)
        if self.spec.resize == "letterbox":
            return Placement.letterbox((frame_width, frame_height), model_wh)
        return Placement.stretch((frame_width, frame_height), model_wh)

    def preprocess(self, image_bgr: np.ndarray) -> tuple[np.ndarray, Placement]:
        """A BGR frame -> (the model's input tensor, where the frame sits in it)."""
        if image_bgr.ndim != 3 or image_bgr.shape[0] == 0 or image_bgr.shape[1] == 0:
            raise ValueError(f"detect() needs an H x W x 3 image, got shape {image_bgr.shape}")
        h, w = image_bgr.shape[:2]
        place = self.placement(w, h)
        s = self.spec.input
        if self.spec.resize == "stretch":
            x = self._prepare(image_bgr, s)
        else:
            cx, cy, cw, ch = place.content()
            x = np.empty((s.height, s.width, s.channels), dtype=self._in_dtype)
            x[...] = self._pad
            x[cy : cy + ch, cx : cx + cw] = self._prepare(
                image_bgr, dataclasses.replace(s, width=cw, height=ch)
            )
        return to_layout(x[None], s.layout), place

    def invoke(self, tensor: np.ndarray) -> list[np.ndarray]:
        """Run the model on one prepared tensor; the outputs, dequantised, in model order."""
        self._it.set_tensor(self._in["index"], tensor)
        self._it.invoke()
        return [
            dequantise(
                self._it.get_tensor(o["index"]),
                float(o["quantization"][0]),
                int(o["quantization"][1]),
            )
            for o in self._outs
        ]

    def decode(self, outputs: list[np.ndarray]) -> Candidates:
        """The model's outputs -> candidate boxes (normalised to the model input)."""
        spec = self.spec
        if spec.output == "ssd":
            return decode_ssd(*outputs[:4])
        out = outputs[0][0]
        if self._raw_transposed:
            out = out.T
        return decode_raw(out, len(spec.labels), self._vehicle_ids, spec.score_min, spec.nms_iou)

    def detect(self, image_bgr: np.ndarray) -> list[VehicleBox]:
        """The vehicles on one BGR frame, best score first, boxes in frame pixels."""
        tensor, place = self.preprocess(image_bgr)
        cand = self.decode(self.invoke(tensor))
        spec = self.spec
        return select(cand, spec.labels, self._vehicle_ids, spec.score_min, spec.nms_iou, place)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._it = None

    def __enter__(self) -> LiteRTDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
