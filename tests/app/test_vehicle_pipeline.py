"""The pipeline's vehicle stage end to end: a real (tiny) TFLite detector, the tracker, the
driver's window, the real brightness classifier and the per-vehicle decider on a video file."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.adapters.camera import ReplaySource
from edge.adapters.classifier import LiteRTClassifier
from edge.adapters.detector import LiteRTDetector
from edge.adapters.evidence import EvidenceStore
from edge.adapters.sinks import MemorySink
from edge.app.pipeline import Pipeline
from edge.app.vehicles import VehicleStage
from edge.core.decider import DeciderParams
from edge.core.frame import Frame
from edge.core.roi import Roi
from edge.core.track_decider import TrackDecisionParams
from edge.core.window import WindowSpec
from tests.conftest import TEST_DATA, write_video

W, H = 320, 240
# The test detector's fixed vehicles (tests/data/make_raw_detector.py), in this frame's pixels:
# a car, a truck and a car below-centre; a frame whose brightest pixel is white shows them.
CAR = (48.0, 96.0, 112.0, 144.0)
TRUCK = (176.0, 72.0, 272.0, 168.0)
SPEC = WindowSpec(view="front", drive_side="right")
PARAMS = DeciderParams(window=5, min_frames=3, score_on=0.7, score_off=0.3, cooldown_s=0.0)


def frames(spans: dict[str, list[tuple[int, int]]], n: int) -> list[np.ndarray]:
    """``spans['vehicles']``: frame ranges where the vehicles are there (a white patch);
    ``spans['phone']``: where the car's driver's window is bright (the brightness model's
    'phone'); ``spans['other_car']``: where the car is another, lighter one (its body grey
    100, not 20: the vehicle stage tells cars apart by colour when it rejoins a lost pass)."""
    x0, y0, x1, y1 = SPEC.box(CAR, (W, H))
    cx0, cy0, cx1, cy1 = (round(v) for v in CAR)
    out = []
    for i in range(n):
        img = np.full((H, W, 3), 20, np.uint8)
        if any(a <= i < b for a, b in spans.get("other_car", [])):
            img[cy0:cy1, cx0:cx1] = 100
        if any(a <= i < b for a, b in spans["vehicles"]):
            img[:20, :20] = 255  # white even at the detector's 32x32
        if any(a <= i < b for a, b in spans["phone"]):
            img[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2] = 235
        out.append(img)
    return out


def run(
    tmp_path: Path,
    brightness_model: Path,
    images: list[np.ndarray],
    on_frame: Callable[[Frame, dict[str, float], Mapping[str, Roi]], None] | None = None,
    **stage: Any,
) -> tuple[MemorySink, Pipeline]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    video = write_video(tmp_path / "road.avi", images, 25.0)
    detector = LiteRTDetector.open(TEST_DATA / "raw_detector_t_int8.tflite", threads=1)
    vehicles = VehicleStage(
        detector,
        every_s=0.2,  # every 5th frame at 25 fps
        window=SPEC,
        decision=TrackDecisionParams(decider=PARAMS, best_frame_wait_s=stage.pop("wait_s", 2.0)),
        lossless=True,
        **stage,
    )
    sink = MemorySink()
    p = Pipeline(
        source=ReplaySource(video, speed=0.0),
        classifier=LiteRTClassifier.open(brightness_model),
        rois=list(stage.get("zones", ())),
        decider=PARAMS,
        evidence=EvidenceStore(tmp_path / "ev", quota_bytes=10**9),
        sink=sink,
        unit_id="p1",
        lossless=True,
        vehicles=vehicles,
        on_frame=on_frame,
    )
    p.start()
    assert p.wait(60)
    vehicles.close()
    return sink, p


@pytest.mark.slow
def test_one_alert_per_vehicle_pass_with_the_drivers_window(
    tmp_path: Path, brightness_model: Path
) -> None:
    # The car is there for frames 0-59, its driver on the phone twice (15-30 and 40-55):
    # one pass, one alert. It leaves (60-109) and another (lighter) car comes to the same
    # place (110-159), phone at 120-135: a new pass, a second alert. The truck and the other
    # car never show a phone.
    images = frames(
        {
            "vehicles": [(0, 60), (110, 160)],
            "phone": [(15, 30), (40, 55), (120, 135)],
            "other_car": [(110, 160)],
        },
        160,
    )
    sink, p = run(tmp_path, brightness_model, images)
    assert p.snapshot()["frames_processed"] == 160
    dets = sorted(sink.detections, key=lambda d: d.frame_index)
    assert len(dets) == 2, [(d.frame_index, d.roi_id) for d in dets]
    first, second = dets
    assert 15 <= first.frame_index < 30
    assert 120 <= second.frame_index < 135
    assert first.roi_id == second.roi_id == "vehicle"
    x0, y0, x1, y1 = SPEC.box(CAR, (W, H))
    for d in dets:
        assert d.roi_box is not None
        bx, by, bw, bh = d.roi_box  # the driver's window it scored, in the evidence frame
        assert abs(bx - x0) <= 2
        assert abs(by - y0) <= 2
        assert abs(bw - (x1 - x0)) <= 3
        assert abs(bh - (y1 - y0)) <= 3
        assert d.score > 0.7
        assert Path(d.evidence.crop_path).is_file()
        assert d.frame_size == (W, H)
        assert d.vehicle is not None  # the tracked car, as (x, y, w, h) on the evidence frame
        assert d.vehicle.label == "car"
        assert d.vehicle.frames >= 3
        vx, vy, vw, vh = d.vehicle.box
        assert abs(vx - CAR[0]) <= 2
        assert abs(vy - CAR[1]) <= 2
        assert abs(vw - (CAR[2] - CAR[0])) <= 3
        assert abs(vh - (CAR[3] - CAR[1])) <= 3
    assert first.vehicle is not None
    assert second.vehicle is not None
    assert first.vehicle.track_id != second.vehicle.track_id  # two passes, two tracks
    assert p.vehicles is not None
    assert p.vehicles.detections == 32  # every 5th frame
    assert p.vehicles.tracker.counts(0).started_total == 6  # the 3 vehicles, twice


@pytest.mark.slow
def test_a_calibration_run_on_a_vehicle_unit_records_every_vehicles_window(
    tmp_path: Path, brightness_model: Path
) -> None:
    # A patrol unit's regions are its vehicles' windows: the sampler crops those, per frame.
    import random

    import cv2

    from edge.app.config import SamplingConfig
    from edge.app.sampler import CalibrationJob, Sampler
    from edge.core.clock import ManualClock
    from tests.app.test_sampler import RecordingUplink

    uplink = RecordingUplink()
    clock = ManualClock(100.0)  # the run's rate cap on its own clock: a second a frame here
    sampler = Sampler(
        uplink=uplink,
        rois=(),
        windows=True,
        cfg=SamplingConfig(enabled=False),  # no background budget: the calibration run only
        threshold=PARAMS.score_on,
        model_version="1.0.0",
        state_path=tmp_path / "sampler.json",
        clock=clock,
        rng=random.Random(1),
        lossless=True,
    )
    sampler.calibrate(CalibrationJob.from_command({"duration_s": 600, "max_fps": 2}, ()))
    scored: Counter[str] = Counter()

    def on_frame(frame: Frame, scores: dict[str, float], regions: Mapping[str, Roi]) -> None:
        assert set(regions) == set(scores)
        scored.update(list(regions))
        clock.advance(1.0)
        sampler.on_frame(frame, scores, regions)

    images = frames({"vehicles": [(0, 40)], "phone": [(15, 30)]}, 40)
    try:
        run(tmp_path, brightness_model, images, on_frame=on_frame)
        assert sampler.is_settled
    finally:
        sampler.close()
    got = uplink.parsed()
    assert {p.reason for p in got} == {"calibration"}
    assert Counter(p.roi for p in got) == scored  # every window of every frame
    assert len(scored) == 3  # the car, the truck and the other car, each its own track
    x0, y0, x1, y1 = SPEC.box(CAR, (W, H))
    sizes: Counter[tuple[int, ...]] = Counter()
    for jpeg in uplink.jpegs:
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None
        sizes[img.shape[:2]] += 1
    car_like = [hw for hw in sizes if abs(hw[0] - (y1 - y0)) <= 2 and abs(hw[1] - (x1 - x0)) <= 2]
    assert car_like, sizes  # the car's driver's window, as the classifier scored it


@pytest.mark.slow
def test_a_vehicle_lost_for_a_moment_is_not_alerted_on_twice(
    tmp_path: Path, brightness_model: Path
) -> None:
    # The detector loses every vehicle for 0.9 s (frames 60-84): their tracks end. Found again
    # where they would be, they continue their passes: the phone at 100-115 is the same
    # driver's, already alerted on at 15-30.
    images = frames({"vehicles": [(0, 60), (85, 140)], "phone": [(15, 30), (100, 115)]}, 140)
    sink, p = run(tmp_path, brightness_model, images)
    assert [d.frame_index < 30 for d in sink.detections] == [True]
    assert p.vehicles is not None
    assert p.vehicles.tracker.counts(0).started_total == 6  # the tracker did split them
    assert p.vehicles.rejoined == 3


@pytest.mark.slow
def test_zones_limit_where_a_vehicle_counts(tmp_path: Path, brightness_model: Path) -> None:
    images = frames({"vehicles": [(0, 60)], "phone": [(15, 30)]}, 60)
    # A zone around the truck only: the car's phone is not counted there.
    zone = Roi.rect("lane2", 0.5, 0.2, 0.9, 0.8, margin=0.0)
    sink, _ = run(tmp_path, brightness_model, images, zones=[zone])
    assert sink.detections == []
    # A zone holding the car's wheels: counted, and the alert names the zone.
    zone = Roi.rect("lane1", 0.1, 0.3, 0.4, 0.7, margin=0.0)
    sink, _ = run(tmp_path / "2", brightness_model, images, zones=[zone])
    assert [d.roi_id for d in sink.detections] == ["lane1"]


def test_a_failing_detector_lets_the_tracks_coast_and_counts_it(
    tmp_path: Path, brightness_model: Path
) -> None:
    class Broken:
        def detect(self, image_bgr: np.ndarray) -> list[Any]:
            raise RuntimeError("invoke failed")

    stage = VehicleStage(Broken(), every_s=0.0, window=SPEC, lossless=True)
    from edge.core.frame import Frame

    for i in range(3):
        got = stage.regions(Frame(i, i * 0.04, 0.0, np.zeros((H, W, 3), np.uint8)))
        assert got.regions == []
    assert stage.detect_errors == 3
    assert stage.stats()["vehicle_detect_errors"] == 3


@pytest.mark.slow
def test_phonewatch_run_with_a_vehicles_section(
    tmp_path: Path, brightness_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from edge.app.cli import main

    images = frames({"vehicles": [(0, 60)], "phone": [(15, 30)]}, 60)
    video = write_video(tmp_path / "road.avi", images, 25.0)
    cfg = tmp_path / "unit.toml"
    cfg.write_text(
        f'[unit]\nid = "patrol-7"\nmode = "patrol"\ndata_dir = "{tmp_path / "unit"}"\n'
        f'[camera]\ntype = "replay"\npath = "{video}"\n'
        f'[model]\npath = "{brightness_model}"\nthreshold = 0.7\n'
        "[decider]\nwindow = 5\nmin_frames = 3\n"
        f'[sink]\ntype = "jsonl"\npath = "{tmp_path / "alerts.jsonl"}"\n'
        f'[vehicles]\nmodel = "{TEST_DATA / "raw_detector_t_int8.tflite"}"\n'
        'view = "front"\ndrive_side = "right"\nbest_frame_wait_s = 0.5\n'
    )
    assert main(["run", "--config", str(cfg), "--offline"]) == 0
    assert "60/60 frames" in capsys.readouterr().err
    (rec,) = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert rec["roi_id"] == "vehicle"
    assert rec["vehicle"]["label"] == "car"
    assert 15 <= rec["frame_index"] < 30
    x0, y0, _, _ = SPEC.box(CAR, (W, H))
    bx, by, _, _ = rec["roi_box"]
    assert abs(bx - x0) <= 2
    assert abs(by - y0) <= 2


def vehicles_config(tmp_path: Path, brightness_model: Path, extra: str) -> str:
    return (
        f'[unit]\nid = "patrol-7"\ndata_dir = "{tmp_path / "unit"}"\n'
        f'[camera]\ntype = "replay"\npath = "{tmp_path / "road.avi"}"\n'
        f'[model]\npath = "{brightness_model}"\n'
        f'[vehicles]\nmodel = "{TEST_DATA / "raw_detector_t_int8.tflite"}"\nview = "rear"\n' + extra
    )


def test_the_vehicles_section_sets_legible_size_lost_frames_and_the_mount(
    tmp_path: Path, brightness_model: Path
) -> None:
    import tomllib

    from edge.app.compose import build_vehicle_stage
    from edge.app.config import parse_config
    from edge.core.errors import ConfigError

    text = vehicles_config(
        tmp_path,
        brightness_model,
        "legible_min_px = 32\nlost_frames_count = false\n"
        "horizon_y = 0.42\nhfov_deg = 102\ncamera_height_m = 1.6\n",
    )
    cfg = parse_config(tomllib.loads(text))
    stage = build_vehicle_stage(cfg, PARAMS, lossless=True)
    assert stage is not None
    assert stage.window.legible_min_px == 32
    w = stage.window
    assert (w.horizon_y, w.hfov_deg, w.camera_height_m) == (0.42, 102.0, 1.6)
    assert stage.decider.params.lost_frames_count is False
    stage.close()
    default = parse_config(tomllib.loads(vehicles_config(tmp_path, brightness_model, "")))
    assert default.vehicles is not None
    assert (default.vehicles.legible_min_px, default.vehicles.lost_frames_count) == (0, True)
    bad = vehicles_config(tmp_path, brightness_model, "legible_min_px = -4\n")
    with pytest.raises(ConfigError, match="legible_min_px"):
        parse_config(tomllib.loads(bad))
    bad = vehicles_config(tmp_path, brightness_model, "hfov_deg = 400\n")
    with pytest.raises(ConfigError, match="hfov_deg"):
        parse_config(tomllib.loads(bad))
