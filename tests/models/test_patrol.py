"""The patrol and junction scenes (truth per vehicle) and the per-vehicle alert scorer."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.app.vehicle_truth import Alert, alerts_from, score, table
from models.synth import patrol
from models.synth.render import POSITIVE_POSES

SMALL = (640, 360)


def _clip(scene: str, seed: int, seconds: float = 12.0, fps: float = 1.5) -> list[Any]:
    return list(patrol.frames(scene, seed=seed, seconds=seconds, fps=fps, size=SMALL))


@pytest.fixture(scope="module")
def clips() -> dict[str, list[Any]]:
    return {scene: _clip(scene, 3, fps=1.0) for scene in patrol.SCENES}


@functools.cache
def _built(scene: str, seed: int) -> tuple[list[patrol.Vehicle], np.ndarray, patrol.Camera]:
    return patrol.build(scene, seed, 12.0, SMALL)


def _background(scene: str, seed: int, index: int, fps: float) -> np.ndarray:
    _, bg, cam = _built(scene, seed)
    bg = bg.copy()
    if scene == "patrol":
        patrol._patrol_dashes(bg, cam, index / fps)
    return bg


@pytest.mark.slow
@pytest.mark.parametrize("scene", patrol.SCENES)
def test_each_vehicle_box_holds_vehicle_pixels_and_the_rest_is_background(
    scene: str, clips: dict[str, list[Any]]
) -> None:
    checked = 0
    for index, (img, rows) in enumerate(clips[scene]):
        changed = cv2.absdiff(img, _background(scene, 3, index, 1.0)).max(axis=2) > 30
        outside = np.ones(changed.shape, bool)
        for row in rows.values():
            x0, y0, x1, y1 = (round(v) for v in row["box"])
            assert 0 <= x0 < x1 <= SMALL[0]
            assert 0 <= y0 < y1 <= SMALL[1]
            outside[y0:y1, x0:x1] = False
            if row["visible"] >= 0.95 and (x1 - x0) * (y1 - y0) >= 100:
                # A vehicle fills much of its box (the rest: road seen past its shape).
                assert changed[y0:y1, x0:x1].mean() > 0.4, (scene, index, row)
                checked += 1
        # Outside every vehicle box the frame is the background (plus sensor noise).
        assert changed[outside].mean() < 0.002, (scene, index)
    assert checked >= 8


@pytest.mark.parametrize("scene", patrol.SCENES)
def test_the_window_box_sits_inside_the_vehicle_box(
    scene: str, clips: dict[str, list[Any]]
) -> None:
    windows = 0
    for _, rows in clips[scene]:
        for row in rows.values():
            b = row["box"]
            for key in ("window", "side_window"):
                w = row[key]
                if w is None:
                    continue
                # The window may poke out by the glass's anti-aliased edge, no more.
                assert w[0] >= b[0] - 2
                assert w[1] >= b[1] - 2
                assert w[2] <= b[2] + 2
                assert w[3] <= b[3] + 2
                windows += 1
            if scene == "junction":
                assert row["side_window"] == row["window"]
            elif row["side_window"] is not None:
                # The side window is part of the patrol view's driver window.
                w, sw = row["window"], row["side_window"]
                assert w[0] <= sw[0]
                assert w[2] >= sw[2]
    assert windows >= 8


def test_junction_driver_window_shows_that_vehicles_driver(clips: dict[str, list[Any]]) -> None:
    # The window box is where the driver picture is: the crop matches that vehicle's driver
    # picture far better than another vehicle's.
    vehicles, _, _ = _built("junction", 3)
    by_id = {v.id: v for v in vehicles}
    compared = 0
    for img, rows in clips["junction"]:
        for vid, row in rows.items():
            if row["window"] is None or row.get("window_visible", 0) < 1 or row["visible"] < 1:
                continue
            x0, y0, x1, y1 = (round(v) for v in row["window"])
            if x0 <= 0 or x1 >= SMALL[0]:
                continue
            crop = cv2.cvtColor(img[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY).astype(np.float64)

            def corr(veh: patrol.Vehicle, crop: np.ndarray = crop) -> float:
                pic = patrol._driver_picture(3, veh.id, veh.pose, 1)
                if veh.heading < 0:
                    pic = pic[:, ::-1]
                pic = cv2.resize(pic, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_AREA)
                g = cv2.cvtColor(pic, cv2.COLOR_BGR2GRAY).astype(np.float64)
                return float(np.corrcoef(g.ravel(), crop.ravel())[0, 1])

            own = corr(by_id[vid])
            other = max(corr(v) for v in vehicles if v.id != vid)
            assert own > 0.6, (vid, own)
            assert own > other + 0.2, (vid, own, other)
            compared += 1
    assert compared >= 3


@pytest.mark.slow
def test_phone_flags_follow_the_drawn_pose_and_both_kinds_appear() -> None:
    for scene in patrol.SCENES:
        vehicles, _, _ = patrol.build(scene, 7, 40.0, SMALL)
        phones = [v.phone for v in vehicles]
        assert 0 < sum(phones) < len(phones), scene
        for v in vehicles:
            assert (v.pose in POSITIVE_POSES) is v.phone
        assert {v.view for v in vehicles} == ({"rear", "front"} if scene == "patrol" else {"side"})


@pytest.mark.slow
def test_truth_lists_every_vehicle_pass_and_the_clip() -> None:
    truth = patrol.render("patrol", seed=3, seconds=12.0, fps=1.5, size=SMALL)
    assert truth["synthetic"] is True
    assert truth["frames"] == 18
    assert (truth["width"], truth["height"]) == SMALL
    ids = [v["id"] for v in truth["vehicles"]]
    assert sorted(p["vehicle"] for p in truth["passes"]) == sorted(ids)
    for v in truth["vehicles"]:
        frames = [r["frame"] for r in v["frames"]]
        assert frames == sorted(frames)
        assert (v["first_frame"], v["last_frame"]) == (frames[0], frames[-1])
        assert v["drive_side"] == "right"
        assert v["view"] in ("rear", "front")
    # Nearer vehicles hide farther ones somewhere in the clip.
    assert any(r["visible"] < 0.9 for v in truth["vehicles"] for r in v["frames"])


def test_same_seed_same_clip_and_another_seed_another() -> None:
    a = _clip("junction", 5, seconds=8.0, fps=1.0)
    b = _clip("junction", 5, seconds=8.0, fps=1.0)
    c = _clip("junction", 6, seconds=8.0, fps=1.0)
    assert len(a) == len(b) == 8
    for (ia, ta), (ib, tb) in zip(a, b, strict=True):
        assert np.array_equal(ia, ib)
        assert ta == tb
    assert any(not np.array_equal(ia, ic) for (ia, _), (ic, _) in zip(a, c, strict=True))


def test_cli_writes_a_video_and_truth(tmp_path: Path) -> None:
    out = tmp_path / "clip"
    assert (
        patrol.main(
            [
                "--scene",
                "junction",
                "--seed",
                "2",
                "--out",
                str(out),
                "--seconds",
                "2",
                "--fps",
                "5",
                "--width",
                "320",
            ]
        )
        == 0
    )
    truth = json.loads((out / "truth.json").read_text(encoding="utf-8"))
    cap = cv2.VideoCapture(str(out / "junction.mp4"))
    try:
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        ok, img = cap.read()
    finally:
        cap.release()
    assert ok
    assert img.shape == (180, 320, 3)
    assert n == truth["frames"] == 10
    with pytest.raises(SystemExit):
        patrol.main(["--scene", "motorway", "--out", str(out)])


# ---------------------------------------------------------------- the scorer


def _veh(
    vid: int, phone: bool, frames: range, box: Sequence[float], window: Sequence[float]
) -> Any:
    rows = [{"frame": f, "box": box, "window": window, "visible": 1.0} for f in frames]
    return {"id": vid, "phone": phone, "frames": rows}


# A (phone) frames 0-9 on the left; B (no phone) frames 5-14 on the right; C (phone) 20-29,
# where A was.
A_BOX, A_WIN = [0, 0, 100, 60], [50, 5, 80, 30]
B_BOX, B_WIN = [200, 0, 300, 60], [250, 5, 280, 30]
TRUTH = {
    "vehicles": [
        _veh(0, True, range(10), A_BOX, A_WIN),
        _veh(1, False, range(5, 15), B_BOX, B_WIN),
        _veh(2, True, range(20, 30), A_BOX, A_WIN),
    ],
    "passes": [
        {"vehicle": 0, "start_frame": 0, "end_frame": 9, "phone": True},
        {"vehicle": 1, "start_frame": 5, "end_frame": 14, "phone": False},
        {"vehicle": 2, "start_frame": 20, "end_frame": 29, "phone": True},
    ],
}


def _alert(frame: int, box: Sequence[float], track: int | None = None) -> Alert:
    return Alert(frame, (box[0], box[1], box[2], box[3]), track)


def test_one_alert_per_phone_driver_is_all_found() -> None:
    s = score(TRUTH, [_alert(3, A_WIN, 7), _alert(25, A_BOX, 9)])
    assert (s.found, s.missed, s.false_alerts, s.repeats) == (2, 0, 0, 0)
    assert s.matched == (0, 2)
    assert [p.track_ids for p in s.passes] == [(7,), (), (9,)]


def test_no_alert_for_a_phone_driver_is_missed() -> None:
    s = score(TRUTH, [_alert(3, A_WIN)])
    assert (s.found, s.missed, s.false_alerts, s.repeats) == (1, 1, 0, 0)
    assert [p.outcome for p in s.passes] == ["found", "-", "missed"]


def test_a_second_alert_on_one_pass_is_a_repeat() -> None:
    s = score(TRUTH, [_alert(8, A_WIN, 2), _alert(2, A_WIN, 1), _alert(22, A_WIN)])
    assert (s.found, s.missed, s.false_alerts, s.repeats) == (2, 0, 0, 1)
    assert s.passes[0].alerts == (1, 0)  # frame order
    assert s.passes[0].outcome == "found +1 repeat"


def test_an_alert_on_a_driver_without_a_phone_is_false() -> None:
    s = score(TRUTH, [_alert(3, A_WIN), _alert(25, A_WIN), _alert(7, B_WIN), _alert(9, B_BOX)])
    assert (s.found, s.false_no_phone, s.false_no_vehicle, s.repeats) == (2, 1, 0, 1)


def test_an_alert_where_no_driver_window_is_is_false() -> None:
    # Empty road; and A's place at frame 15, when A has gone and C not yet come.
    s = score(TRUTH, [_alert(3, [120, 0, 180, 50]), _alert(15, A_WIN)])
    assert (s.found, s.missed, s.false_no_phone, s.false_no_vehicle) == (0, 2, 0, 2)
    assert s.matched == (None, None)


def test_an_alert_over_two_windows_goes_to_the_one_it_fits() -> None:
    # Frame 6: A and B both there; a box over B's window that just touches A's belongs to B.
    s = score(TRUTH, [_alert(6, [79, 5, 282, 31])])
    assert s.matched == (1,)
    s = score(TRUTH, [_alert(6, [48, 4, 82, 31])])
    assert s.matched == (0,)


def test_alerts_from_records_by_time_or_frame_and_bad_ones_named() -> None:
    got = alerts_from(
        [{"t_s": 1.0, "box": A_WIN}, {"frame": 25, "window": A_WIN, "track_id": 4}], 5.0
    )
    assert got == [_alert(5, A_WIN), _alert(25, A_WIN, 4)]
    with pytest.raises(ValueError, match="alert 0: needs 'frame' or 't_s'"):
        alerts_from([{"box": A_WIN}], 5.0)
    with pytest.raises(ValueError, match="alert 1: .*x1 > x0"):
        alerts_from([{"frame": 1, "box": A_WIN}, {"frame": 1, "box": [5, 5, 4, 9]}], 5.0)
    with pytest.raises(ValueError, match="four numbers"):
        alerts_from([{"frame": 1, "box": [1, 2, 3]}], 5.0)
    with pytest.raises(ValueError, match="alert 0: could not convert"):
        alerts_from([{"frame": 1, "box": [1, 2, "x", 4]}], 5.0)
    with pytest.raises(ValueError, match="alert 0: alert frame must be >= 0"):
        alerts_from([{"frame": -1, "box": A_WIN}], 5.0)


def test_table_prints_the_counts_and_each_phone_or_alerted_pass() -> None:
    text = table(score(TRUTH, [_alert(3, A_WIN, 7), _alert(4, A_WIN, 8), _alert(9, B_WIN)]))
    assert "| found                    | 1 |" in text
    assert "| missed                   | 1 |" in text
    assert "| repeats                  | 1 |" in text
    assert "| false alerts: no phone   | 1 |" in text
    assert "found +1 repeat" in text
    assert "7,8" in text


def test_alerts_at_each_phone_drivers_window_score_perfectly_on_a_rendered_clip() -> None:
    truth = patrol.render("junction", seed=3, seconds=12.0, fps=1.5, size=SMALL)
    alerts = []
    for v in truth["vehicles"]:
        rows = [r for r in v["frames"] if r["window"] is not None and r["visible"] == 1.0]
        if v["phone"] and rows:
            r = rows[len(rows) // 2]
            alerts.append(Alert(r["frame"], tuple(r["window"])))
    s = score(truth, alerts)
    assert s.found == len(alerts) >= 1
    assert (s.false_alerts, s.repeats) == (0, 0)
    assert s.missed == sum(p["phone"] for p in truth["passes"]) - len(alerts)


# ---------------------------------------------------------------- the real detector

VEHICLE_CLASSES = {2, 5, 7}
"""COCO car, bus, truck (0-based indices of coco_labels.txt)."""


def _iou(a: Any, b: Any) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


@pytest.mark.slow
@pytest.mark.parametrize(("scene", "rate_min"), [("patrol", 0.6), ("junction", 0.8)])
def test_coco_detector_finds_most_vehicles(shared_data: Path, scene: str, rate_min: float) -> None:
    from ai_edge_litert.interpreter import Interpreter

    model = shared_data / "models" / "coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.tflite"
    interp = Interpreter(str(model), num_threads=2)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    outs = interp.get_output_details()
    seen = hits = 0
    for img, rows in patrol.frames(scene, seed=7, seconds=40.0, fps=0.5):
        x = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (300, 300))
        interp.set_tensor(inp["index"], x[None])
        interp.invoke()
        boxes, classes, scores, count = (interp.get_tensor(o["index"]) for o in outs)
        h, w = img.shape[:2]
        dets = [
            (boxes[0, i, 1] * w, boxes[0, i, 0] * h, boxes[0, i, 3] * w, boxes[0, i, 2] * h)
            for i in range(int(count[0]))
            if scores[0, i] >= 0.3 and int(classes[0, i]) in VEHICLE_CLASSES
        ]
        for row in rows.values():
            x0, y0, x1, y1 = row["box"]
            # Whole vehicles at least 80 px tall (the detector's input is 300x300).
            if y1 - y0 < 80 or row["visible"] < 0.8 or x0 <= 0 or x1 >= w - 1:
                continue
            seen += 1
            hits += any(_iou(row["box"], d) >= 0.4 for d in dets)
    assert seen >= 10
    assert hits / seen >= rate_min, (hits, seen)
