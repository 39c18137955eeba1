from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.core.errors import ModelError
from edge.core.model_spec import label_matches, load_spec, parse_spec

GOOD = {
    "schema": 1,
    "name": "m",
    "version": "1.0",
    "file": "m.tflite",
    "input": {
        "width": 96,
        "height": 96,
        "layout": "NHWC",
        "colour": "RGB",
        "mean": [127.5] * 3,
        "std": [127.5] * 3,
    },
    "output": {"activation": "softmax"},
    "labels": ["no_phone", "phone"],
    "positive_labels": ["phone"],
    "threshold": 0.6,
}


def test_good_sidecar_round_trips() -> None:
    spec = parse_spec(GOOD)
    assert spec.positive_indices == (1,)
    assert spec.input.width == 96
    assert spec.activation == "softmax"
    again = parse_spec(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda d: d.update(colour="RGB"), "'colour'"),
        (lambda d: d.pop("threshold"), "'threshold'"),
        (lambda d: d.update(threshold=1.5), "'threshold'"),
        (lambda d: d["input"].update(layout="HWC"), "input.layout"),
        (lambda d: d["input"].update(width=0), "input.width"),
        (lambda d: d["input"].update(mean=[1, 2]), "input.mean"),
        (lambda d: d["input"].update(extra=1), "'extra'"),
        (lambda d: d.update(positive_labels=["cat"]), "cat"),
        (lambda d: d.update(sha256="xyz"), "sha256"),
        (lambda d: d["output"].update(activation="relu"), "output.activation"),
        (lambda d: d.update(schema=2), "'schema'"),
    ],
)
def test_bad_sidecars_name_the_key(mutate: Callable[[dict[str, Any]], object], key: str) -> None:
    d = json.loads(json.dumps(GOOD))
    mutate(d)
    with pytest.raises(ModelError, match=key.replace(".", r"\.")):
        parse_spec(d)


def test_labels_file_with_offset_and_synonyms(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("tench\ncellular telephone, cellular phone, cellphone\n")
    d = {k: v for k, v in GOOD.items() if k != "labels"}
    d.update(labels_file="labels.txt", label_offset=1, positive_labels=["cellphone"])
    (tmp_path / "m.json").write_text(json.dumps(d))
    spec = load_spec(tmp_path / "m.json")
    assert spec.labels[0] == "__background__"
    assert spec.positive_indices == (2,)
    assert label_matches("cellular telephone, cellular phone", "cellular phone")
    assert not label_matches("pay-phone, pay-station", "phone")


def test_missing_and_broken_sidecar_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="missing"):
        load_spec(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_spec(tmp_path / "bad.json")


def _without(key: str) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        del d[key]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(extra=1, other=2), "sidecar: unknown key(s) 'extra', 'other'"),
        (_without("schema"), "sidecar: missing required key 'schema'"),
        (lambda d: d.update(schema="1"), "sidecar: 'schema' is '1'; this version reads 1"),
        (_without("name"), "sidecar: missing required key 'name'"),
        (_without("version"), "sidecar: missing required key 'version'"),
        (_without("file"), "sidecar: missing required key 'file'"),
        (
            lambda d: d.update(sha256="AB" * 32),
            "sidecar: 'sha256' must be 64 lower-case hex digits",
        ),
        (lambda d: d.update(sha256=7), "sidecar: 'sha256' must be 64 lower-case hex digits"),
        (_without("input"), "sidecar: missing required key 'input'"),
        (lambda d: d.update(input=[]), "sidecar: 'input' must be an object"),
        (lambda d: d["input"].update(x=1), "sidecar: input: unknown key(s) 'x'"),
        (
            lambda d: d["input"].update(layout="HWC"),
            "sidecar: 'input.layout' must be NHWC or NCHW, got 'HWC'",
        ),
        (
            lambda d: d["input"].update(colour="RGBA"),
            "sidecar: 'input.colour' must be RGB, BGR or GRAY, got 'RGBA'",
        ),
        (
            lambda d: d["input"].update(colour="GRAY"),
            "sidecar: 'input.mean' must be a list of 1 numbers",
        ),
        (
            lambda d: d["input"].update(mean=(1, 2, 3)),
            "sidecar: 'input.mean' must be a list of 3 numbers",
        ),
        (
            lambda d: d["input"].update(mean=[1, True, 3]),
            "sidecar: 'input.mean' must be a number, got True",
        ),
        (
            lambda d: d["input"].update(mean=[1, 2e6, 3]),
            "sidecar: 'input.mean' = 2000000.0 is outside -1000000.0..1000000.0",
        ),
        (
            lambda d: d["input"].update(std=[1, 0, 1]),
            "sidecar: 'input.std' = 0 is outside 1e-09..1000000.0",
        ),
        (
            lambda d: d["input"].update(std=[1, 1]),
            "sidecar: 'input.std' must be a list of 3 numbers",
        ),
        (lambda d: d["input"].pop("width"), "sidecar: input: missing required key 'width'"),
        (
            lambda d: d["input"].update(width=96.0),
            "sidecar: 'input.width' must be an integer, got 96.0",
        ),
        (
            lambda d: d["input"].update(height=4097),
            "sidecar: 'input.height' = 4097 is outside 8..4096",
        ),
        (lambda d: d.update(output=None), "sidecar: 'output' must be an object"),
        (lambda d: d["output"].update(bias=0), "sidecar: output: unknown key(s) 'bias'"),
        (
            lambda d: d["output"].update(activation="relu"),
            "sidecar: 'output.activation' must be none, softmax or sigmoid, got 'relu'",
        ),
        (lambda d: d["output"].update(index=17), "sidecar: 'output.index' = 17 is outside 0..16"),
        (
            lambda d: d.update(labels_file="l.txt"),
            "sidecar: give 'labels' or 'labels_file', not both",
        ),
        (_without("labels"), "sidecar: missing required key 'labels' (or 'labels_file')"),
        (lambda d: d.update(labels=["a", 1]), "sidecar: 'labels' must be a list of strings"),
        (lambda d: d.update(labels=[]), "sidecar: 'labels' is empty"),
        (_without("positive_labels"), "sidecar: missing required key 'positive_labels'"),
        (
            lambda d: d.update(positive_labels=[]),
            "sidecar: 'positive_labels' must be a non-empty list",
        ),
        (
            lambda d: d.update(positive_labels=["phone", "cat", "dog"]),
            "sidecar: positive label(s) ['cat', 'dog'] are not among the labels",
        ),
        (_without("threshold"), "sidecar: missing required key 'threshold'"),
        (lambda d: d.update(threshold="0.5"), "sidecar: 'threshold' must be a number, got '0.5'"),
        (lambda d: d.update(threshold=-0.1), "sidecar: 'threshold' = -0.1 is outside 0.0..1.0"),
        (lambda d: d.update(provenance=[]), "sidecar: 'provenance' must be an object"),
        (lambda d: d.update(metrics="good"), "sidecar: 'metrics' must be an object"),
    ],
)
def test_bad_sidecar_messages(mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    d = json.loads(json.dumps(GOOD))
    mutate(d)
    with pytest.raises(ModelError) as info:
        parse_spec(d)
    assert str(info.value) == message


def test_every_check_runs_in_order_and_names_the_sidecar() -> None:
    with pytest.raises(ModelError) as info:
        parse_spec([], where="x.json")
    assert str(info.value) == "x.json: must be a JSON object"
    d = json.loads(json.dumps(GOOD))
    d["input"]["layout"] = "HWC"
    d["threshold"] = 2  # both wrong: the input is checked first
    with pytest.raises(ModelError, match=r"^x\.json: 'input\.layout'"):
        parse_spec(d, where="x.json")


def test_labels_file_errors_and_negative_offset(tmp_path: Path) -> None:
    d = {k: v for k, v in GOOD.items() if k != "labels"}
    d["labels_file"] = "labels.txt"
    with pytest.raises(ModelError, match=r"^sidecar: 'labels_file' .*labels\.txt cannot be read"):
        parse_spec(d, base_dir=tmp_path)
    (tmp_path / "labels.txt").write_text("background\n\nno_phone\n2: phone\n")
    spec = parse_spec({**d, "label_offset": -1}, base_dir=tmp_path)
    assert spec.labels == ("no_phone", "phone")
    assert parse_spec(d, base_dir=tmp_path).labels == ("background", "no_phone", "phone")
    with pytest.raises(ModelError) as info:
        parse_spec({**d, "label_offset": 17}, base_dir=tmp_path)
    assert str(info.value) == "sidecar: 'label_offset' = 17 is outside -16..16"
    (tmp_path / "labels.txt").write_text("a\n")
    with pytest.raises(ModelError) as info:
        parse_spec({**d, "label_offset": -1}, base_dir=tmp_path)
    assert str(info.value) == "sidecar: 'labels' is empty"


def test_defaults_fill_an_omitted_output_and_normalisation() -> None:
    d = json.loads(json.dumps(GOOD))
    del d["output"], d["input"]["mean"], d["input"]["std"], d["input"]["layout"]
    d["input"]["colour"] = "GRAY"
    spec = parse_spec(d)
    assert (spec.activation, spec.output_index) == ("none", 0)
    assert spec.input.mean == (127.5,)
    assert spec.input.std == (127.5,)
    assert spec.input.layout == "NHWC"
    assert spec.sha256 is None
