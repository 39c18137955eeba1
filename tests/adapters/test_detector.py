"""The LiteRT vehicle detector against real models: the committed raw-output (YOLO-style) test
detector, whose outputs are known constants, and, when present, the COCO SSD MobileNet v1 in
../shared/data/models on real traffic footage."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.adapters.detector import LiteRTDetector
from edge.core.errors import AcceleratorError, ModelError
from edge.core.vehicle import Box, Placement, VehicleBox, iou, select
from tests.conftest import REPO_ROOT, TEST_DATA

RAW = TEST_DATA / "raw_detector_int8.tflite"  # [1, 8, 7], letterbox
RAW_T = TEST_DATA / "raw_detector_t_int8.tflite"  # [1, 7, 8], stretch
COCO_MODEL = "coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.tflite"
COCO_SIDECAR = REPO_ROOT / "models" / "vehicle" / "coco_ssd_mobilenet_v1.json"

WHITE = np.full((480, 640, 3), 255, dtype=np.uint8)
"""Any white pixel makes the test detector output exactly its constants."""


def expected_boxes(place: Placement) -> list[tuple[Box, float, str]]:
    """What decode + class filter + NMS must leave of make_raw_detector.ANCHORS (worked out by
    hand there): anchors 0 (car 0.90), 3 (truck 0.85) and 6 (car 0.60), in frame pixels."""
    anchors = [
        ((0.25, 0.50, 0.20, 0.20), 0.90, "car"),
        ((0.70, 0.50, 0.30, 0.40), 0.85, "truck"),
        ((0.45, 0.80, 0.20, 0.20), 0.60, "car"),
    ]
    out = []
    for (cx, cy, w, h), score, label in anchors:
        x0 = ((cx - w / 2) * place.model_width - place.pad_x) / place.scale_x
        x1 = ((cx + w / 2) * place.model_width - place.pad_x) / place.scale_x
        y0 = ((cy - h / 2) * place.model_height - place.pad_y) / place.scale_y
        y1 = ((cy + h / 2) * place.model_height - place.pad_y) / place.scale_y
        box = (max(x0, 0.0), max(y0, 0.0), min(x1, 640.0), min(y1, 480.0))
        out.append((box, score, label))
    return out


def write_sidecar(src: Path, dst: Path, **over: Any) -> Path:
    d = json.loads(src.read_text())
    for k, v in over.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    dst.write_text(json.dumps(d))
    return dst


# -- the raw-output test detector -------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "pad_y"),
    [(RAW, 4.0), (RAW_T, 0.0)],
    ids=["anchors-first-letterbox", "anchors-last-stretch"],
)
def test_raw_decode_nms_and_class_filter(model: Path, pad_y: float) -> None:
    with LiteRTDetector.open(model) as det:
        assert det.spec.output == "raw"
        place = det.placement(640, 480)
        assert place.pad_y == pad_y  # 640x480 letterboxed into 32x32 is 32x24, 4 rows above
        found = det.detect(WHITE)
    want = expected_boxes(place)
    # The shifted car (anchor 1) and the same car called truck (anchor 2) are suppressed, the
    # person (4) is not a vehicle class, the faint car (5) is below score_min, nothing in 7.
    assert [v.label for v in found] == [w[2] for w in want]
    for v, (box, score, _) in zip(found, want, strict=True):
        assert v.score == pytest.approx(score, abs=0.01)
        assert np.allclose(v.box, box, atol=2.0), (v.box, box)


def test_raw_black_frame_finds_nothing() -> None:
    with LiteRTDetector.open(RAW_T) as det:
        assert det.detect(np.zeros((480, 640, 3), dtype=np.uint8)) == []


def test_raw_score_min_and_vehicle_classes_come_from_the_sidecar(tmp_path: Path) -> None:
    side = write_sidecar(
        RAW_T.with_suffix(".json"),
        tmp_path / "s.json",
        score_min=0.25,
        vehicle_classes=["car"],
    )
    with LiteRTDetector.open(RAW_T, side) as det:
        found = det.detect(WHITE)
    # cars only: 0.90 and 0.60 as before, the faint car (0.30) now passes; anchor 3 (truck 0.85,
    # car 0.20) has a car score below 0.25; the truck-called duplicate's car score is 0.05.
    assert [(v.label, round(v.score, 1)) for v in found] == [
        ("car", 0.9),
        ("car", 0.6),
        ("car", 0.3),
    ]


def test_int8_input_is_quantised_from_the_model() -> None:
    with LiteRTDetector.open(RAW) as det:
        tensor, _ = det.preprocess(WHITE)
    assert tensor.dtype == np.int8
    assert tensor.shape == (1, 32, 32, 3)
    assert int(tensor[0, 16, 16, 0]) == 127  # white: 1.0 / (1/255) - 128
    assert int(tensor[0, 0, 0, 0]) == round(114 / 255 * 255) - 128  # letterbox grey row


# -- refusals ---------------------------------------------------------------------------------
def test_refuses_a_corrupt_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"TFL3" + bytes(range(256)) * 4)
    side = write_sidecar(RAW.with_suffix(".json"), tmp_path / "bad.json", sha256=None)
    with pytest.raises(ModelError, match=r"bad\.tflite is not a loadable TFLite model"):
        LiteRTDetector.open(bad, side)


def test_refuses_a_missing_model_and_a_missing_sidecar(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        LiteRTDetector.open(tmp_path / "none.tflite")
    model = tmp_path / "m.tflite"
    shutil.copy(RAW, model)
    with pytest.raises(ModelError, match=r"m\.json is missing"):
        LiteRTDetector.open(model)


def test_refuses_a_changed_model(tmp_path: Path) -> None:
    model = tmp_path / "m.tflite"
    shutil.copy(RAW_T, model)
    with pytest.raises(ModelError, match="does not match its sidecar"):
        LiteRTDetector.open(model, RAW.with_suffix(".json"))


def test_refuses_a_raw_model_described_as_ssd(tmp_path: Path) -> None:
    side = write_sidecar(RAW.with_suffix(".json"), tmp_path / "s.json", output="ssd")
    with pytest.raises(ModelError, match=r"sidecar says output 'ssd'.*has 1 output\(s\)"):
        LiteRTDetector.open(RAW, side)


def test_refuses_raw_output_that_does_not_fit_the_labels(tmp_path: Path) -> None:
    labels = ["person", "car", "truck", "bus", "van"]  # 4 + 5 = 9 values per anchor: no axis
    side = write_sidecar(RAW.with_suffix(".json"), tmp_path / "s.json", labels=labels)
    with pytest.raises(ModelError, match=r"\[1, N, 9\].*shaped \[\[1, 8, 7\]\]"):
        LiteRTDetector.open(RAW, side)


def test_refuses_an_input_size_the_model_does_not_have(tmp_path: Path) -> None:
    d = json.loads(RAW.with_suffix(".json").read_text())
    side = write_sidecar(
        RAW.with_suffix(".json"), tmp_path / "s.json", input=dict(d["input"], width=64)
    )
    with pytest.raises(ModelError, match=r"input shape \[1, 32, 32, 3\] does not match"):
        LiteRTDetector.open(RAW, side)


def test_edgetpu_asked_for_without_a_twin() -> None:
    with pytest.raises(AcceleratorError, match="no Edge TPU model raw_detector_int8_edgetpu"):
        LiteRTDetector.open(RAW, accelerator="edgetpu")
    with LiteRTDetector.open(RAW, accelerator="auto") as det:
        assert det.accelerator == "cpu"


def test_refuses_a_picture_that_is_not_bgr() -> None:
    with LiteRTDetector.open(RAW) as det, pytest.raises(ValueError, match="H x W x 3"):
        det.detect(np.zeros((48, 64), dtype=np.uint8))


# -- the COCO SSD on real footage ---------------------------------------------------------------
@pytest.fixture(scope="module")
def coco(shared_data: Path) -> Iterator[LiteRTDetector]:
    model = shared_data / "models" / COCO_MODEL
    if not model.is_file():
        pytest.skip(f"{model} is not present")
    with LiteRTDetector.open(model, COCO_SIDECAR) as det:
        yield det


# What a person sees in traffic_frames/ (256x256, a roadside view of a highway, cars moving
# right to left): a dark saloon car on the left, a dark pickup truck at the right edge, and
# the front of a white car cut off by the bottom-right corner: 3 vehicles in each frame.
# Boxes (x0, y0, x1, y1) drawn by eye on the frames.
TRAFFIC_PERSON = {
    "0001.bmp": [(52.0, 150.0, 122.0, 196.0), (211.0, 145.0, 256.0, 191.0)],
    "0002.bmp": [(43.0, 150.0, 114.0, 196.0), (205.0, 145.0, 256.0, 190.0)],
    "0003.bmp": [(30.0, 149.0, 104.0, 198.0), (198.0, 144.0, 256.0, 190.0)],
}
TRAFFIC_COUNT = 3


@pytest.mark.parametrize("name", sorted(TRAFFIC_PERSON))
def test_coco_ssd_finds_the_cars_in_traffic_frames(
    coco: LiteRTDetector, shared_data: Path, name: str
) -> None:
    img = cv2.imread(str(shared_data / "video" / "traffic_frames" / name))
    assert img is not None
    found = coco.detect(img)
    assert abs(len(found) - TRAFFIC_COUNT) <= 1, found
    assert all(v.label in ("car", "truck", "bus") for v in found)
    for person in TRAFFIC_PERSON[name]:  # the saloon and the pickup, where a person sees them
        assert max(iou(v.box, person) for v in found) >= 0.6, (person, found)


def test_coco_ssd_class_filter_is_the_sidecars(
    coco: LiteRTDetector, shared_data: Path, tmp_path: Path
) -> None:
    """The same frame with "train" as the only vehicle class: the model's weak "train" over the
    motorway wall (the top half) comes through, and none of the cars does."""
    side = write_sidecar(COCO_SIDECAR, tmp_path / "s.json", vehicle_classes=["train"])
    side = write_sidecar(side, side, score_min=0.4)
    img = cv2.imread(str(shared_data / "video" / "traffic_frames" / "0001.bmp"))
    assert img is not None
    with LiteRTDetector.open(shared_data / "models" / COCO_MODEL, side) as det:
        found = det.detect(img)
    assert [v.label for v in found] == ["train"]
    assert found[0].box[3] < 140  # above the road


def car_detection_frames(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out: dict[int, np.ndarray] = {}
    i = 0
    try:
        while len(out) < len(wanted):
            ok, img = cap.read()
            if not ok:
                break
            if i in wanted:
                out[i] = img
            i += 1
    finally:
        cap.release()
    return out


@pytest.mark.slow
def test_coco_ssd_on_car_detection_mp4_top_down(coco: LiteRTDetector, shared_data: Path) -> None:
    """car-detection.mp4 (768x432) looks straight down on a car park. A person sees: frame 80,
    one white car (about x 270-437, y 71-332); frame 150, an empty road; frames 200 and 215, two
    cars each. COCO SSD MobileNet v1 was trained on cars seen from the side, front and back:
    from above it calls them "cell phone" or "suitcase", never a vehicle class. So this clip
    cannot count tracks with this detector (the dash and roadside views it is meant for work,
    see traffic_frames above). What it does show: the vehicle filter drops those labels, and
    the model's own box for the car in frame 80 maps back onto the car in frame pixels."""
    video = shared_data / "video" / "car-detection.mp4"
    if not video.is_file():
        pytest.skip(f"{video} is not present")
    frames = car_detection_frames(video, {80, 150, 200, 215})
    assert sorted(frames) == [80, 150, 200, 215]
    for i, img in frames.items():
        assert coco.detect(img) == [], i
    img = frames[80]
    tensor, place = coco.preprocess(img)
    cand = coco.decode(coco.invoke(tensor))
    phone = coco.spec.labels.index("cell phone")
    spec = coco.spec
    seen = select(cand, spec.labels, [phone], spec.score_min, spec.nms_iou, place)
    assert len(seen) == 1
    assert iou(seen[0].box, (270.0, 71.0, 437.0, 332.0)) >= 0.7, seen


def test_vehicle_box_sizes() -> None:
    v = VehicleBox((10.0, 20.0, 110.0, 70.0), 0.8, "car")
    assert (v.width, v.height) == (100.0, 50.0)
