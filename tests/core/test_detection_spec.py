"""The detector sidecar (edge.core.detection_spec) and the pure box helpers (edge.core.vehicle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.core.detection_spec import (
    DEFAULT_VEHICLE_CLASSES,
    load_detector_spec,
    parse_detector_spec,
)
from edge.core.errors import ModelError
from edge.core.vehicle import Candidates, Placement, decode_raw, decode_ssd, iou, nms, select
from tests.conftest import REPO_ROOT

COCO_SIDECAR = REPO_ROOT / "models" / "vehicle" / "coco_ssd_mobilenet_v1.json"

MINIMAL: dict[str, Any] = {
    "schema": 1,
    "name": "d",
    "version": "1",
    "input": {"width": 32, "height": 32},
    "output": "raw",
    "labels": ["person", "car", "truck", "bus"],
}


def spec(**over: Any) -> dict[str, Any]:
    d = dict(MINIMAL)
    d.update(over)
    return d


def test_minimal_sidecar_takes_the_defaults() -> None:
    s = parse_detector_spec(spec())
    assert s.resize == "stretch"
    assert s.vehicle_classes == DEFAULT_VEHICLE_CLASSES
    assert s.vehicle_ids == (1, 2, 3)
    assert (s.score_min, s.nms_iou) == (0.5, 0.5)
    assert s.file is None
    assert s.sha256 is None


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"threshold": 0.5}, r"unknown key\(s\) 'threshold'"),
        ({"score_min": "high"}, r"'score_min' must be a number, got 'high'"),
        ({"nms_iou": 1.5}, r"'nms_iou' = 1.5 is outside 0.0..1.0"),
        ({"output": "yolo"}, r"'output' must be one of ssd, raw, got 'yolo'"),
        ({"resize": "crop"}, r"'resize' must be one of stretch, letterbox, got 'crop'"),
        ({"kind": "classifier"}, r"'kind' must be one of detector"),
        ({"schema": 2}, r"'schema' is 2"),
        ({"name": ""}, r"'name' must be a non-empty string"),
        ({"vehicle_classes": ["car", "van"]}, r"vehicle class\(es\) \['van'\] are not among"),
        ({"vehicle_classes": "car"}, r"'vehicle_classes' must be a non-empty list of strings"),
        ({"label_offset": 1}, r"'label_offset' only applies with 'labels_file'"),
        ({"labels": [1, 2]}, r"'labels' must be a list of strings"),
        ({"input": {"width": 32, "height": 32, "size": 3}}, r"input: unknown key\(s\) 'size'"),
        ({"sha256": "abc"}, r"'sha256' must be 64 lower-case hex digits"),
        ({"provenance": "x"}, r"'provenance' must be an object"),
    ],
)
def test_sidecar_errors_name_the_key(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        parse_detector_spec(spec(**over), where="sidecar d.json")


@pytest.mark.parametrize("key", ["name", "version", "input", "output", "labels"])
def test_sidecar_missing_key_is_named(key: str) -> None:
    d = spec()
    del d[key]
    with pytest.raises(ModelError, match=f"'{key}'"):
        parse_detector_spec(d)


def test_sidecar_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"none\.json is missing"):
        load_detector_spec(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ModelError, match=r"bad\.json is not valid JSON"):
        load_detector_spec(bad)


def test_labels_file_is_relative_to_the_sidecar_with_its_offset(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("background\nperson\ncar\n")
    p = tmp_path / "d.json"
    d = spec(labels_file="labels.txt", label_offset=-1, vehicle_classes=["car"])
    del d["labels"]
    p.write_text(json.dumps(d))
    s = load_detector_spec(p)
    assert s.labels == ("person", "car")
    assert s.vehicle_ids == (1,)


def test_shipped_coco_sidecar_labels_match_the_shared_labels_file(shared_data: Path) -> None:
    """The inline labels are coco_labels.txt with label_offset 0: class id 2 is car."""
    s = load_detector_spec(COCO_SIDECAR)
    d = json.loads(COCO_SIDECAR.read_text())
    del d["labels"]
    d["labels_file"] = str(shared_data / "models" / "coco_labels.txt")
    d["label_offset"] = 0
    assert parse_detector_spec(d).labels == s.labels
    assert (s.labels[2], s.labels[5], s.labels[7]) == ("car", "bus", "truck")
    assert s.vehicle_ids == (2, 5, 7)
    assert s.output == "ssd"


# -- pure helpers -----------------------------------------------------------------------------
def test_iou() -> None:
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10]], float)
    scores = np.array([0.6, 0.9, 0.5, 0.6])
    assert nms(boxes, scores, 0.5) == [1, 2]
    assert nms(boxes, scores, 0.95) == [1, 0, 2]  # 0 and 3 are identical: IoU 1 > 0.95


def test_letterbox_and_stretch_map_back_to_frame_pixels() -> None:
    lb = Placement.letterbox((1920, 1080), (320, 320))
    assert lb.content() == (0, 70, 320, 180)
    back = lb.to_frame(np.array([[0.0, 70 / 320, 1.0, 250 / 320]]))
    assert np.allclose(back, [[0, 0, 1920, 1080]])
    st = Placement.stretch((1920, 1080), (300, 300))
    assert np.allclose(st.to_frame(np.array([[0.5, 0.5, 2.0, -1.0]])), [[960, 540, 1920, 0]])


def test_decode_ssd_swaps_to_xyxy_and_stops_at_count() -> None:
    boxes = np.array([[[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.6, 0.6], [0, 0, 1, 1]]])
    c = decode_ssd(boxes, np.array([[2.0, 7.0, 0.0]]), np.array([[0.9, 0.8, 0.7]]), np.array([2]))
    assert c.boxes.tolist() == [[0.2, 0.1, 0.4, 0.3], [0.5, 0.5, 0.6, 0.6]]
    assert c.class_ids.tolist() == [2, 7]


def test_decode_raw_rejects_a_wrong_width() -> None:
    with pytest.raises(ValueError, match=r"\[N, 7\]"):
        decode_raw(np.zeros((5, 6)), 3, [1], 0.5, 0.5)


def test_select_drops_boxes_with_no_area_on_the_frame() -> None:
    cand = Candidates(
        boxes=np.array([[1.1, 0.1, 1.3, 0.3], [0.1, 0.1, 0.3, 0.3]]),
        scores=np.array([0.9, 0.8]),
        class_ids=np.array([1, 1]),
    )
    place = Placement.stretch((100, 100), (10, 10))
    found = select(cand, ["person", "car"], [1], 0.5, 0.5, place)
    assert [v.box for v in found] == [pytest.approx((10.0, 10.0, 30.0, 30.0))]


def test_select_keeps_one_box_for_a_vehicle_called_car_and_truck() -> None:
    """The SSD head suppresses duplicates per class only; select() also does it across classes."""
    cand = Candidates(
        boxes=np.array([[0.1, 0.1, 0.5, 0.5], [0.11, 0.1, 0.5, 0.52], [0.6, 0.6, 0.9, 0.9]]),
        scores=np.array([0.7, 0.8, 0.6]),
        class_ids=np.array([1, 2, 1]),
    )
    place = Placement.stretch((100, 100), (10, 10))
    found = select(cand, ["person", "car", "truck"], [1, 2], 0.5, 0.6, place)
    assert [(v.label, v.score) for v in found] == [("truck", 0.8), ("car", 0.6)]
