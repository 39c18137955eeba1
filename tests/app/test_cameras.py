"""Several cameras on one unit: one shared, batched inference stage over real sources (video
files, an image folder) and a real model; fairness, stalls, a dead camera, the config."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.adapters.camera import FolderSource, ReplaySource
from edge.adapters.classifier import LiteRTClassifier
from edge.adapters.evidence import EvidenceStore
from edge.adapters.sinks import MemorySink
from edge.app.config import CameraSetup, parse_config
from edge.app.hub import CameraGroup, InferenceHub
from edge.app.pipeline import Pipeline
from edge.core.decider import DeciderParams
from edge.core.errors import ConfigError
from edge.core.frame import Frame
from edge.core.ports import FrameSource
from edge.core.roi import Roi
from tests.app.test_pipeline import LEFT, RIGHT, UnpluggableCamera
from tests.waiting import wait_until

PARAMS = DeciderParams(window=5, min_frames=3, score_on=0.7, score_off=0.3, cooldown_s=0.0)


@pytest.fixture
def group_of(
    tmp_path: Path, brightness_model: Path
) -> Iterator[Callable[..., tuple[CameraGroup, MemorySink]]]:
    """``group_of({"a": source, ...}, lossless=...)``: a hub, a pipeline per camera (ROIs
    left and right), one evidence store and one sink, as the unit builds them."""
    made: list[CameraGroup] = []

    def make(
        sources: dict[str, FrameSource], *, lossless: bool = True, **kw: Any
    ) -> tuple[CameraGroup, MemorySink]:
        hub = InferenceHub(LiteRTClassifier.open(brightness_model))
        sink = MemorySink()
        evidence = EvidenceStore(tmp_path / "ev", quota_bytes=10**9)
        for cam, src in sources.items():
            Pipeline(
                source=src,
                classifier=hub.classifier,
                rois=[Roi.rect("left", *LEFT, margin=0.0), Roi.rect("right", *RIGHT, margin=0.0)],
                decider=PARAMS,
                evidence=evidence,
                sink=sink,
                unit_id="t1",
                lossless=lossless,
                camera_id=cam,
                hub=hub,
                **kw,
            )
        group = CameraGroup(hub)
        made.append(group)
        return group, sink

    yield make
    for g in made:
        g.stop()


def image_folder(path: Path, levels: list[int], box: tuple[float, ...]) -> Path:
    path.mkdir()
    for i, lv in enumerate(levels):
        img = np.full((120, 160, 3), 20, np.uint8)
        x0, y0, x1, y1 = box
        img[int(y0 * 120) : int(y1 * 120), int(x0 * 160) : int(x1 * 160)] = lv
        assert cv2.imwrite(str(path / f"{i:04d}.png"), img)
    return path


@pytest.mark.slow
def test_two_cameras_are_scored_together_and_alert_with_their_ids(
    tmp_path: Path, make_video: Callable[..., Path], group_of: Callable[..., Any]
) -> None:
    # Camera "north" (a video file) sees a phone in its left window at frames 10-21; camera
    # "south" (an image folder) in its right window at frames 5-16.
    north = make_video([20] * 10 + [240] * 12 + [20] * 10, box=(0.1, 0.2, 0.4, 0.8))
    south = image_folder(tmp_path / "south", [20] * 5 + [240] * 12 + [20] * 5, RIGHT)
    group, sink = group_of({"north": ReplaySource(north, speed=0.0), "south": FolderSource(south)})
    group.open_sources()
    group.start()
    assert group.wait(30)
    snap = group.snapshot()
    assert snap["cameras"]["north"]["frames_processed"] == 32
    assert snap["cameras"]["south"]["frames_processed"] == 22
    assert snap["dropped_frames"] == 0  # lossless: every frame of both scored
    assert snap["frames_processed"] == 54
    hub = group.hub
    assert hub.rounds < 54  # frames of both cameras went through one invoke together
    assert hub.batch_crops.percentile(100) == 4  # 2 cameras x 2 ROIs
    got = sorted((d.camera_id, d.roi_id) for d in sink.detections)
    assert got == [("north", "left"), ("south", "right")]
    by_cam = {d.camera_id: d for d in sink.detections}
    assert 10 <= by_cam["north"].frame_index <= 21
    assert 5 <= by_cam["south"].frame_index <= 16
    # evidence folders say which camera (two cameras may both have a 'left')
    assert "north-left" in Path(by_cam["north"].evidence.frame_path).parent.name
    assert "south-right" in Path(by_cam["south"].evidence.frame_path).parent.name
    assert "south" in group.summary_table()


@pytest.mark.slow
def test_a_fast_camera_cannot_starve_a_slow_one(
    make_video: Callable[..., Path], group_of: Callable[..., Any]
) -> None:
    fast = make_video([100] * 400, fps=25.0, name="fast.avi")
    slow = make_video([100] * 12, fps=20.0, name="slow.avi")
    group, _ = group_of(
        {"fast": ReplaySource(fast, speed=0.0), "slow": ReplaySource(slow, speed=1.0)},
        lossless=False,
    )
    group.open_sources()
    group.start()
    assert group.wait(30)
    cams = group.snapshot()["cameras"]
    # The fast one is read unpaced: far more frames than inference takes, so it drops ...
    assert cams["fast"]["frames_captured"] == 400
    assert cams["fast"]["frames_processed"] + cams["fast"]["dropped_frames"] == 400
    # ... but every frame of the slow one is scored: a round takes one frame of each camera.
    assert cams["slow"]["frames_captured"] == 12
    assert cams["slow"]["dropped_frames"] == 0
    assert cams["slow"]["frames_processed"] == 12


class StallingCamera:
    """A live camera whose ``read`` hangs (a USB camera that stopped answering) after a few
    frames, until ``release`` is set; frames come from a real file."""

    def __init__(self, video: Path, frames_before_stall: int) -> None:
        self._inner = ReplaySource(video, speed=0.0)
        self.name = "stalling"
        self.release = threading.Event()
        self.stalled = threading.Event()
        self._left = frames_before_stall

    is_live = True
    fps = 25.0

    def open(self) -> None:
        self._inner.open()

    def read(self) -> Frame | None:
        if self._left == 0:
            self.stalled.set()
            self.release.wait(30)
        self._left -= 1
        return self._inner.read()

    def close(self) -> None:
        self._inner.close()


@pytest.mark.slow
def test_a_stalled_camera_holds_up_no_other(
    make_video: Callable[..., Path], group_of: Callable[..., Any]
) -> None:
    stuck = StallingCamera(make_video([100] * 10, name="stuck.avi"), frames_before_stall=3)
    other = make_video([100] * 40, name="other.avi")
    group, _ = group_of({"stuck": stuck, "other": ReplaySource(other, speed=0.0)})
    group.open_sources()
    group.start()
    try:
        assert stuck.stalled.wait(10)
        pipes = {p.camera_id: p for p in group.pipelines}
        # Lossless, so "other" is scored frame by frame while "stuck" hangs in read().
        assert wait_until(lambda: pipes["other"].stats.processed == 40, timeout_s=20)
        assert pipes["stuck"].stats.processed == 3
    finally:
        stuck.release.set()
    assert group.wait(20)
    assert pipes["stuck"].stats.processed == 10


@pytest.mark.slow
def test_a_dead_camera_is_retried_alone_and_named_while_the_others_run(
    make_video: Callable[..., Path], group_of: Callable[..., Any]
) -> None:
    dead = UnpluggableCamera(make_video([60] * 5, fps=100.0, name="dead.avi"))
    alive = ReplaySource(make_video([60] * 20, fps=50.0, name="alive.avi"), speed=1.0, loop=True)
    group, _ = group_of(
        {"door": dead, "road": alive}, lossless=False, reconnect_min_s=0.05, reconnect_max_s=0.2
    )
    group.start()
    pipes = {p.camera_id: p for p in group.pipelines}
    deadline = time.monotonic() + 20

    def left() -> float:
        return max(0.0, deadline - time.monotonic())

    assert wait_until(lambda: group.status == "running", left())
    dead.plugged.clear()
    assert wait_until(lambda: pipes["door"].status == "degraded", left())
    assert group.status == "degraded"
    assert wait_until(lambda: dead.opens >= 3, left())  # retried with its own backoff
    road_before = pipes["road"].stats.processed
    assert wait_until(lambda: pipes["road"].stats.processed > road_before + 10, left())
    cams = group.snapshot()["cameras"]
    assert cams["door"]["status"] == "degraded"
    assert cams["road"]["status"] == "running"
    assert cams["door"]["camera_errors"] >= 1
    dead.plugged.set()
    assert wait_until(lambda: group.status == "running", left())
    assert pipes["door"].stats.reconnects >= 1


@pytest.mark.slow
def test_a_model_swap_lands_on_every_camera_at_once(
    make_video: Callable[..., Path], group_of: Callable[..., Any], brightness_model: Path
) -> None:
    video = make_video([100] * 30, fps=50.0)
    group, _ = group_of(
        {c: ReplaySource(video, speed=1.0, loop=True) for c in ("a", "b")}, lossless=False
    )
    group.start()
    assert wait_until(lambda: group.hub.rounds >= 5, timeout_s=10)
    new = LiteRTClassifier.open(brightness_model)
    old = group.pipelines[1].swap_classifier(new)  # through any camera: the hub swaps all
    assert old is not new
    assert group.hub.classifier is new
    assert all(p.classifier is new for p in group.pipelines)
    rounds = group.hub.rounds
    assert wait_until(lambda: group.hub.rounds > rounds + 5, timeout_s=10)
    old.close()


# -- the config ------------------------------------------------------------------------------
def base(tmp_path: Path) -> dict[str, Any]:
    return {
        "unit": {"id": "j1", "data_dir": str(tmp_path)},
        "model": {"path": str(tmp_path / "m.tflite")},
    }


def cam(cid: str, path: str) -> dict[str, Any]:
    return {
        "id": cid,
        "source": {"type": "replay", "path": path},
        "rois": [{"id": "lane1", "rect": [0.1, 0.1, 0.5, 0.5]}],
    }


def test_one_camera_config_is_one_unnamed_camera(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            **base(tmp_path),
            "camera": {"type": "replay", "path": "x.mp4"},
            "rois": [{"id": "lane1", "rect": [0.1, 0.1, 0.5, 0.5]}],
        }
    )
    (only,) = cfg.camera_setups
    assert isinstance(only, CameraSetup)
    assert only.id is None  # its alerts carry no camera id, as before
    assert [r.id for r in only.rois] == ["lane1"]


def test_cameras_config_lists_each_camera_with_its_rois(tmp_path: Path) -> None:
    cfg = parse_config({**base(tmp_path), "cameras": [cam("north", "n.mp4"), cam("south", "s")]})
    assert [c.id for c in cfg.camera_setups] == ["north", "south"]
    assert cfg.first_camera.id == "north"


def test_cameras_from_toml_resolve_paths_against_the_file(tmp_path: Path) -> None:
    from edge.app.config import load_config

    p = tmp_path / "unit.toml"
    p.write_text(
        '[unit]\nid = "j1"\n[model]\npath = "m.tflite"\n'
        '[[cameras]]\nid = "north"\n[cameras.source]\ntype = "replay"\npath = "n.mp4"\n'
        '[[cameras.rois]]\nid = "lane1"\nrect = [0.1, 0.1, 0.5, 0.5]\n'
        '[[cameras]]\nid = "door"\n[cameras.source]\ntype = "folder"\npath = "frames"\n'
        '[[cameras.rois]]\nid = "lane1"\nrect = [0.5, 0.1, 0.9, 0.5]\n'
    )
    cfg = load_config(p)
    north, door = cfg.camera_setups
    assert getattr(north.source, "path", None) == tmp_path / "n.mp4"
    assert getattr(door.source, "path", None) == tmp_path / "frames"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "no camera: add [camera] and [[rois]]"),
        ({"camera": {"type": "replay", "path": "x.mp4"}}, "no camera: add [[rois]]"),
        (
            {"cameras": [cam("north", "n.mp4")], "camera": {"type": "replay", "path": "x.mp4"}},
            "not both",
        ),
        ({"cameras": [cam("north", "n.mp4"), cam("north", "m.mp4")]}, "repeated: ['north']"),
        ({"cameras": [{**cam("north", "n"), "fps": 30}]}, "cameras.0.fps"),
        ({"cameras": [{**cam("no rth", "n")}]}, "cameras.0.id"),
    ],
)
def test_bad_camera_configs_say_what_is_wrong(
    tmp_path: Path, extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=re_escape(message)):
        parse_config({**base(tmp_path), **extra})


def re_escape(s: str) -> str:
    import re

    return re.escape(s)


@pytest.mark.slow
def test_phonewatch_run_offline_with_two_cameras(
    tmp_path: Path,
    make_video: Callable[..., Path],
    brightness_model: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from edge.app.cli import main

    north = make_video([20] * 10 + [240] * 12 + [20] * 10, box=(0.1, 0.2, 0.4, 0.8))
    south = image_folder(tmp_path / "south", [20] * 5 + [240] * 12 + [20] * 5, RIGHT)
    rois = '[[cameras.rois]]\nid = "left"\nrect = [0.05, 0.1, 0.45, 0.9]\nmargin = 0.0\n'
    rois += '[[cameras.rois]]\nid = "right"\nrect = [0.55, 0.1, 0.95, 0.9]\nmargin = 0.0\n'
    cfg = tmp_path / "unit.toml"
    cfg.write_text(
        f'[unit]\nid = "j2"\ndata_dir = "{tmp_path / "unit"}"\n'
        f'[model]\npath = "{brightness_model}"\nthreshold = 0.7\n'
        "[decider]\nwindow = 5\nmin_frames = 3\ncooldown_s = 0\n"
        f'[sink]\ntype = "jsonl"\npath = "{tmp_path / "alerts.jsonl"}"\n'
        f'[[cameras]]\nid = "north"\n[cameras.source]\ntype = "replay"\npath = "{north}"\n{rois}'
        f'[[cameras]]\nid = "south"\n[cameras.source]\ntype = "folder"\npath = "{south}"\n{rois}'
    )
    assert main(["run", "--config", str(cfg), "--offline"]) == 0
    out = capsys.readouterr().out
    assert "2 cameras north: replay:" in out
    assert "south: folder:south" in out
    assert "54/54 frames" in out or "north (replay:" in out  # the summary names each camera
    lines = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert sorted((r["camera_id"], r["roi_id"]) for r in lines) == [
        ("north", "left"),
        ("south", "right"),
    ]
