"""The detector sidecar: a JSON file that says how to feed a vehicle detector and read it.

Example (``models/vehicle/coco_ssd_mobilenet_v1.json``, abridged)::

    {
      "schema": 1,
      "kind": "detector",
      "name": "coco-ssd-mobilenet-v1",
      "version": "2018-06-29",
      "file": "coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.tflite",
      "sha256": "61d5...",
      "input": {"width": 300, "height": 300, "colour": "RGB",
                "mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5]},
      "resize": "stretch",
      "output": "ssd",
      "labels": ["person", "bicycle", "car", ...],
      "vehicle_classes": ["car", "truck", "bus"],
      "score_min": 0.5,
      "nms_iou": 0.6
    }

Keys:

* ``input``: the same object as the classifier's sidecar (``edge.core.model_spec``): size,
  layout, colour order, per-channel mean and std on 0..255 pixels.
* ``resize``: ``stretch`` (the whole frame squeezed to the input size, each axis on its own:
  what the TF Object Detection API's SSDs were trained on) or ``letterbox`` (aspect kept, the
  short side padded with grey 114: what YOLO exports expect). Default ``stretch``.
* ``output``: ``ssd`` (a ``TFLite_Detection_PostProcess`` head: four outputs) or ``raw``
  (one YOLO-style output ``[1, N, 4 + C]`` or ``[1, 4 + C, N]``; see ``edge.core.vehicle``).
* ``labels`` inline, or ``labels_file`` (relative to the sidecar) with ``label_offset``,
  exactly as in the classifier's sidecar. Label ``i`` names the model's class id ``i``.
* ``vehicle_classes``: the labels that count as vehicles (default ``car``, ``truck``,
  ``bus``: COCO has no "van"; vans come out as car or truck). Each must be among the labels.
* ``score_min`` (0..1, default 0.5) and ``nms_iou`` (0..1, default 0.5): detections below
  ``score_min`` are dropped; of two vehicle boxes overlapping by more than ``nms_iou`` only
  the higher-scoring one is kept.
* ``file`` and ``sha256`` (optional): the model file's name and hash; the hash is checked.
* ``description``, ``provenance``: free text and a free-form object.

Validation is pure and names the key and the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from edge.core.errors import ModelError
from edge.core.model_spec import (
    SCHEMA_VERSION,
    _int,
    _need,
    _number,
    _parse_input,
    _parse_labels,
    _parse_sha256,
    _unknown,
    positive_indices,
    read_sidecar,
)
from edge.core.preprocess import InputSpec

OutputKind = Literal["ssd", "raw"]
ResizeMode = Literal["stretch", "letterbox"]

DEFAULT_VEHICLE_CLASSES = ("car", "truck", "bus")
"""COCO's vehicle classes with an enclosed cab. Motorcycles are left out by default: their
riders have no driver's window for the classifier to look through; a sidecar may add them."""

_TOP_KEYS = {
    "schema",
    "kind",
    "name",
    "version",
    "file",
    "sha256",
    "input",
    "resize",
    "output",
    "labels",
    "labels_file",
    "label_offset",
    "vehicle_classes",
    "score_min",
    "nms_iou",
    "description",
    "provenance",
}


@dataclass(frozen=True, slots=True)
class DetectorSpec:
    name: str
    version: str
    file: str | None
    sha256: str | None
    input: InputSpec
    resize: ResizeMode
    output: OutputKind
    labels: tuple[str, ...]
    vehicle_classes: tuple[str, ...]
    score_min: float
    nms_iou: float
    description: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def vehicle_ids(self) -> tuple[int, ...]:
        """The class ids (label indices) that count as vehicles."""
        return positive_indices(self.labels, self.vehicle_classes)


def _choice(
    d: dict[str, Any], key: str, allowed: tuple[str, ...], default: str | None, where: str
) -> str:
    v = d.get(key, default) if default is not None else _need(d, key, where)
    if v not in allowed:
        raise ModelError(f"{where}: {key!r} must be one of {', '.join(allowed)}, got {v!r}")
    return str(v)


def _text(d: dict[str, Any], key: str, where: str, *, required: bool) -> str | None:
    if key not in d and not required:
        return None
    v = _need(d, key, where)
    if not isinstance(v, str) or not v.strip():
        raise ModelError(f"{where}: {key!r} must be a non-empty string, got {v!r}")
    return v


def _vehicle_classes(d: dict[str, Any], labels: tuple[str, ...], where: str) -> tuple[str, ...]:
    given = d.get("vehicle_classes", list(DEFAULT_VEHICLE_CLASSES))
    if not isinstance(given, list) or not given or not all(isinstance(x, str) for x in given):
        raise ModelError(f"{where}: 'vehicle_classes' must be a non-empty list of strings")
    missing = [c for c in given if not positive_indices(labels, [c])]
    if missing:
        raise ModelError(f"{where}: vehicle class(es) {missing} are not among the labels")
    return tuple(given)


def parse_detector_spec(
    d: Any, *, where: str = "detector sidecar", base_dir: Path | None = None
) -> DetectorSpec:
    """Validate a decoded detector sidecar; ``where`` names it in errors."""
    if not isinstance(d, dict):
        raise ModelError(f"{where}: must be a JSON object")
    _unknown(d, _TOP_KEYS, where)
    schema = _need(d, "schema", where)
    if schema != SCHEMA_VERSION:
        raise ModelError(f"{where}: 'schema' is {schema!r}; this version reads {SCHEMA_VERSION}")
    _choice(d, "kind", ("detector",), "detector", where)
    labels = tuple(_parse_labels(d, where, base_dir))
    if "label_offset" in d and "labels_file" not in d:
        raise ModelError(f"{where}: 'label_offset' only applies with 'labels_file'")
    if "label_offset" in d:
        _int(d["label_offset"], "label_offset", where, -16, 16)
    if "provenance" in d and not isinstance(d["provenance"], dict):
        raise ModelError(f"{where}: 'provenance' must be an object")
    return DetectorSpec(
        name=str(_text(d, "name", where, required=True)),
        version=str(_text(d, "version", where, required=True)),
        file=_text(d, "file", where, required=False),
        sha256=_parse_sha256(d.get("sha256"), where),
        input=_parse_input(_need(d, "input", where), where),
        resize=cast(ResizeMode, _choice(d, "resize", ("stretch", "letterbox"), "stretch", where)),
        output=cast(OutputKind, _choice(d, "output", ("ssd", "raw"), None, where)),
        labels=labels,
        vehicle_classes=_vehicle_classes(d, labels, where),
        score_min=_number(d.get("score_min", 0.5), "score_min", where, 0.0, 1.0),
        nms_iou=_number(d.get("nms_iou", 0.5), "nms_iou", where, 0.0, 1.0),
        description=str(d.get("description", "")),
        provenance=dict(d.get("provenance", {})),
    )


def load_detector_spec(path: Path) -> DetectorSpec:
    """Read and validate a detector sidecar file."""
    data = read_sidecar(path, "detector")
    return parse_detector_spec(data, where=f"detector sidecar {path}", base_dir=path.parent)
