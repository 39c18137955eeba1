from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.core.errors import ModelError
from edge.core.model_spec import label_matches, load_spec, parse_spec

GOOD = {
    "schema": 1, "name": "m", "version": "1.0", "file": "m.tflite",
    "input": {"width": 96, "height": 96, "layout": "NHWC", "colour": "RGB",
              "mean": [127.5] * 3, "std": [127.5] * 3},
    "output": {"activation": "softmax"},
    "labels": ["no_phone", "phone"], "positive_labels": ["phone"], "threshold": 0.6,
}


def test_good_sidecar_round_trips() -> None:
    spec = parse_spec(GOOD)
    assert spec.positive_indices == (1,)
    assert spec.input.width == 96 and spec.activation == "softmax"
    again = parse_spec(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


@pytest.mark.parametrize("mutate, key", [
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
])
def test_bad_sidecars_name_the_key(mutate, key) -> None:  # type: ignore[no-untyped-def]
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
