"""The model sidecar: a JSON file next to each ``.tflite`` that says how to feed and read it.

Example (``phone_in_hand.json`` beside ``phone_in_hand.tflite``)::

    {
      "schema": 1,
      "name": "phone-in-hand",
      "version": "1.0.0",
      "file": "phone_in_hand.tflite",
      "sha256": "<sha-256 of the .tflite>",
      "input": {"width": 96, "height": 96, "layout": "NHWC", "colour": "RGB",
                "mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5]},
      "output": {"activation": "softmax"},
      "labels": ["no_phone", "phone"],
      "positive_labels": ["phone"],
      "threshold": 0.5
    }

``labels`` may instead be given as ``labels_file`` (one label per line, relative to the sidecar)
with an optional ``label_offset`` (ImageNet models often have a "background" class first).
``output.activation`` says what the raw outputs are: ``none`` (already probabilities),
``softmax`` (logits over the labels) or ``sigmoid`` (independent logits). ``provenance`` and
``metrics`` are free-form objects for training records. Validation is pure and names the key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.core.errors import ModelError
from edge.core.preprocess import InputSpec

SCHEMA_VERSION = 1
_TOP_KEYS = {
    "schema",
    "name",
    "version",
    "file",
    "sha256",
    "input",
    "output",
    "labels",
    "labels_file",
    "label_offset",
    "positive_labels",
    "threshold",
    "description",
    "provenance",
    "metrics",
}
_INPUT_KEYS = {"width", "height", "layout", "colour", "mean", "std"}
_OUTPUT_KEYS = {"activation", "index"}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    version: str
    file: str
    sha256: str | None
    input: InputSpec
    activation: str
    output_index: int
    labels: tuple[str, ...]
    positive_labels: tuple[str, ...]
    threshold: float
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def positive_indices(self) -> tuple[int, ...]:
        return positive_indices(self.labels, self.positive_labels)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "name": self.name,
            "version": self.version,
            "file": self.file,
            "sha256": self.sha256,
            "input": {
                "width": self.input.width,
                "height": self.input.height,
                "layout": self.input.layout,
                "colour": self.input.colour,
                "mean": list(self.input.mean),
                "std": list(self.input.std),
            },
            "output": {"activation": self.activation, "index": self.output_index},
            "labels": list(self.labels),
            "positive_labels": list(self.positive_labels),
            "threshold": self.threshold,
        }
        if self.description:
            d["description"] = self.description
        if self.provenance:
            d["provenance"] = self.provenance
        if self.metrics:
            d["metrics"] = self.metrics
        return d


def _need(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ModelError(f"{where}: missing required key {key!r}")
    return d[key]


def _unknown(d: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise ModelError(f"{where}: unknown key(s) {', '.join(map(repr, extra))}")


def _number(v: Any, key: str, where: str, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ModelError(f"{where}: {key!r} must be a number, got {v!r}")
    if not lo <= float(v) <= hi:
        raise ModelError(f"{where}: {key!r} = {v} is outside {lo}..{hi}")
    return float(v)


def _int(v: Any, key: str, where: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ModelError(f"{where}: {key!r} must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise ModelError(f"{where}: {key!r} = {v} is outside {lo}..{hi}")
    return v


def parse_spec(d: Any, *, where: str = "sidecar", base_dir: Path | None = None) -> ModelSpec:
    """Validate a decoded sidecar; ``where`` names it in errors. Reads ``labels_file`` if used."""
    if not isinstance(d, dict):
        raise ModelError(f"{where}: must be a JSON object")
    _unknown(d, _TOP_KEYS, where)
    schema = _need(d, "schema", where)
    if schema != SCHEMA_VERSION:
        raise ModelError(f"{where}: 'schema' is {schema!r}; this version reads {SCHEMA_VERSION}")
    name = str(_need(d, "name", where))
    version = str(_need(d, "version", where))
    file = str(_need(d, "file", where))
    sha = _parse_sha256(d.get("sha256"), where)
    spec_in = _parse_input(_need(d, "input", where), where)
    activation, out_index = _parse_output(d.get("output", {}), where)
    labels = _parse_labels(d, where, base_dir)
    positive = _parse_positive_labels(_need(d, "positive_labels", where), labels, where)
    threshold = _number(_need(d, "threshold", where), "threshold", where, 0.0, 1.0)
    for key in ("provenance", "metrics"):
        if key in d and not isinstance(d[key], dict):
            raise ModelError(f"{where}: {key!r} must be an object")
    return ModelSpec(
        name=name,
        version=version,
        file=file,
        sha256=sha,
        input=spec_in,
        activation=activation,
        output_index=out_index,
        labels=tuple(labels),
        positive_labels=tuple(str(p) for p in positive),
        threshold=threshold,
        provenance=dict(d.get("provenance", {})),
        metrics=dict(d.get("metrics", {})),
        description=str(d.get("description", "")),
    )


def _parse_sha256(sha: Any, where: str) -> str | None:
    if sha is not None and (
        not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)
    ):
        raise ModelError(f"{where}: 'sha256' must be 64 lower-case hex digits")
    return sha


def _parse_input(inp: Any, where: str) -> InputSpec:
    """The sidecar's ``input`` object: size, layout, colour order and normalisation."""
    if not isinstance(inp, dict):
        raise ModelError(f"{where}: 'input' must be an object")
    _unknown(inp, _INPUT_KEYS, f"{where}: input")
    layout = inp.get("layout", "NHWC")
    if layout not in ("NHWC", "NCHW"):
        raise ModelError(f"{where}: 'input.layout' must be NHWC or NCHW, got {layout!r}")
    colour = inp.get("colour", "RGB")
    if colour not in ("RGB", "BGR", "GRAY"):
        raise ModelError(f"{where}: 'input.colour' must be RGB, BGR or GRAY, got {colour!r}")
    channels = 1 if colour == "GRAY" else 3
    mean = _per_channel(inp.get("mean", [127.5] * channels), "mean", channels, where, -1e6)
    std = _per_channel(inp.get("std", [127.5] * channels), "std", channels, where, 1e-9)
    return InputSpec(
        width=_int(_need(inp, "width", f"{where}: input"), "input.width", where, 8, 4096),
        height=_int(_need(inp, "height", f"{where}: input"), "input.height", where, 8, 4096),
        layout=layout,
        colour=colour,
        mean=mean,
        std=std,
    )


def _per_channel(vals: Any, key: str, channels: int, where: str, lo: float) -> tuple[float, ...]:
    """``input.mean`` / ``input.std``: one number in ``lo..1e6`` per channel."""
    if not isinstance(vals, list) or len(vals) != channels:
        raise ModelError(f"{where}: 'input.{key}' must be a list of {channels} numbers")
    for v in vals:
        _number(v, f"input.{key}", where, lo, 1e6)
    return tuple(float(v) for v in vals)


def _parse_output(out: Any, where: str) -> tuple[str, int]:
    """The sidecar's ``output`` object: ``(activation, output index)``."""
    if not isinstance(out, dict):
        raise ModelError(f"{where}: 'output' must be an object")
    _unknown(out, _OUTPUT_KEYS, f"{where}: output")
    activation = out.get("activation", "none")
    if activation not in ("none", "softmax", "sigmoid"):
        raise ModelError(
            f"{where}: 'output.activation' must be none, softmax or sigmoid, got {activation!r}"
        )
    return activation, _int(out.get("index", 0), "output.index", where, 0, 16)


def _parse_labels(d: dict[str, Any], where: str, base_dir: Path | None) -> list[str]:
    """``labels`` as given, or read from ``labels_file`` (exactly one of them); not empty."""
    if "labels" in d and "labels_file" in d:
        raise ModelError(f"{where}: give 'labels' or 'labels_file', not both")
    labels: list[str]
    if "labels" in d:
        given = d["labels"]
        if not isinstance(given, list) or not all(isinstance(x, str) for x in given):
            raise ModelError(f"{where}: 'labels' must be a list of strings")
        labels = given
    elif "labels_file" in d:
        labels = _read_labels_file(d, where, base_dir)
    else:
        raise ModelError(f"{where}: missing required key 'labels' (or 'labels_file')")
    if len(labels) < 1:
        raise ModelError(f"{where}: 'labels' is empty")
    return labels


def _read_labels_file(d: dict[str, Any], where: str, base_dir: Path | None) -> list[str]:
    """The labels in ``labels_file`` (relative to ``base_dir``), shifted by ``label_offset``."""
    lf = Path(str(d["labels_file"]))
    if not lf.is_absolute() and base_dir is not None:
        lf = base_dir / lf
    try:
        lines = lf.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ModelError(f"{where}: 'labels_file' {lf} cannot be read: {e.strerror}") from e
    offset = _int(d.get("label_offset", 0), "label_offset", where, -16, 16)
    labels = [_strip_label(x) for x in lines if x.strip()]
    return ["__background__"] * offset + labels if offset > 0 else labels[-offset:]


def _parse_positive_labels(positive: Any, labels: Sequence[str], where: str) -> list[Any]:
    """``positive_labels``: a non-empty list, each matching one of ``labels``."""
    if not isinstance(positive, list) or not positive:
        raise ModelError(f"{where}: 'positive_labels' must be a non-empty list")
    missing = [p for p in positive if not positive_indices(labels, [p])]
    if missing:
        raise ModelError(f"{where}: positive label(s) {missing} are not among the labels")
    return positive


def label_matches(label: str, wanted: str) -> bool:
    """A label matches by its full text or one of its comma-separated synonyms (ImageNet:
    ``"cellular telephone, cellular phone, cellphone, cell, mobile phone"``)."""
    if label == wanted:
        return True
    return wanted in (s.strip() for s in label.split(","))


def positive_indices(labels: Sequence[str], positive: Sequence[str]) -> tuple[int, ...]:
    return tuple(i for i, lab in enumerate(labels) if any(label_matches(lab, p) for p in positive))


def _strip_label(line: str) -> str:
    # Accept "cellular telephone" and "487 cellular telephone" / "487: cellular telephone".
    s = line.strip()
    head, _, rest = s.partition(" ")
    if head.rstrip(":").isdigit() and rest:
        return rest.strip()
    return s


def sidecar_path(model_path: Path) -> Path:
    """The sidecar lives next to the model: ``x.tflite`` -> ``x.json``."""
    return model_path.with_suffix(".json")


def read_sidecar(path: Path, what: str = "model") -> Any:
    """A sidecar file's JSON; :class:`ModelError` says why not (``what``: model, detector)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise ModelError(f"{what} sidecar {path} is missing (every {what} needs one)") from e
    except OSError as e:
        raise ModelError(f"{what} sidecar {path} cannot be read: {e.strerror}") from e
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise ModelError(f"{what} sidecar {path} is not valid JSON: {e}") from e


def load_spec(path: Path) -> ModelSpec:
    return parse_spec(read_sidecar(path), where=f"sidecar {path}", base_dir=path.parent)
