"""File sources run on video time: the decider, its cooldown, clip windows and alert times see
the recording's own timing however fast the file is read (issue 20)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.adapters.camera import FolderSource, OpenCvSource, ReplaySource
from edge.app.cli import main


def _config(
    tmp_path: Path, video: Path, model: Path, *, cooldown_s: float, clip_s: float = 0.0
) -> Path:
    p = tmp_path / "unit.toml"
    p.write_text(f"""
[unit]
id = "file-time"
data_dir = "{tmp_path / "unit"}"
[camera]
type = "replay"
path = "{video}"
[[rois]]
id = "left"
rect = [0.05, 0.1, 0.45, 0.9]
margin = 0.0
[model]
path = "{model}"
accelerator = "cpu"
[decider]
window = 5
min_frames = 3
cooldown_s = {cooldown_s}
[evidence]
clip_before_s = {clip_s}
clip_after_s = {clip_s}
""")
    return p


def test_offline_run_keeps_the_cooldown_on_video_time(
    tmp_path: Path,
    make_video: Callable[..., Path],
    brightness_model: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 80 s of video at 1 fps, read in far less than 30 s: two drivers 45 s apart in one lane
    # are two alerts with a 30 s cooldown (on the wall clock of the run they were one).
    levels = [20] * 80
    for i in (*range(5, 16), *range(50, 61)):
        levels[i] = 240
    video = make_video(levels, fps=1.0, box=(0.05, 0.1, 0.45, 0.9))
    start = video.stat().st_mtime - 80  # the file was closed at the end of the recording
    cfg = _config(tmp_path, video, brightness_model, cooldown_s=30, clip_s=3)
    assert main(["run", "--config", str(cfg), "--offline"]) == 0
    capsys.readouterr()
    alerts = [
        json.loads(line) for line in (tmp_path / "unit" / "alerts.jsonl").read_text().splitlines()
    ]
    assert [a["roi_id"] for a in alerts] == ["left", "left"]
    first, second = alerts
    assert 5 <= first["frame_index"] <= 15
    assert 50 <= second["frame_index"] <= 60
    # alert time = the file's start + the frame's video time
    for a in alerts:
        assert a["t_wall_s"] == pytest.approx(start + a["frame_index"], abs=1e-3)
    # the clip holds the frames from 3 s before to 3 s after the best frame, on video time
    cap = cv2.VideoCapture(first["evidence"]["clip_path"])
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    assert n == 7


def test_replay_frames_are_on_video_time_and_go_on_when_looping(
    make_video: Callable[..., Path],
) -> None:
    video = make_video([50, 150, 250], fps=4.0)
    start = video.stat().st_mtime - 3 / 4.0
    src = ReplaySource(video, loop=True, speed=0.0)
    src.open()
    try:
        frames = [src.read() for _ in range(7)]
    finally:
        src.close()
    assert all(f is not None for f in frames)
    mono = [f.t_mono_s for f in frames if f is not None]
    wall = [f.t_wall_s for f in frames if f is not None]
    assert [round(t - mono[0], 6) for t in mono] == [i / 4.0 for i in range(7)]
    assert wall[0] == pytest.approx(start, abs=1e-3)
    assert [round(t - wall[0], 6) for t in wall] == [i / 4.0 for i in range(7)]


def test_opencv_file_frames_are_on_video_time(make_video: Callable[..., Path]) -> None:
    video = make_video([50, 150, 250, 100], fps=8.0)
    src = OpenCvSource(str(video))
    src.open()
    try:
        frames = [src.read() for _ in range(4)]
    finally:
        src.close()
    wall = [f.t_wall_s for f in frames if f is not None]
    assert wall[0] == pytest.approx(video.stat().st_mtime - 4 / 8.0, abs=1e-3)
    assert [round(t - wall[0], 6) for t in wall] == [0.0, 0.125, 0.25, 0.375]


def test_folder_frames_are_1_over_fps_apart_from_the_first_image(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        cv2.imwrite(str(tmp_path / name), np.full((8, 8, 3), 100, np.uint8))
    os.utime(tmp_path / "a.png", (1_700_000_000.0, 1_700_000_000.0))
    src = FolderSource(tmp_path)  # no fps given: 10 frames a second of video time
    src.open()
    try:
        frames = [src.read() for _ in range(3)]
    finally:
        src.close()
    wall = [f.t_wall_s for f in frames if f is not None]
    assert wall == pytest.approx([1_700_000_000.0, 1_700_000_000.1, 1_700_000_000.2])
    paced = FolderSource(tmp_path, fps=0.0, time_fps=2.0)  # an offline read of fps = 2
    paced.open()
    try:
        got = [paced.read() for _ in range(2)]
    finally:
        paced.close()
    assert [f.t_wall_s for f in got if f is not None] == pytest.approx(
        [1_700_000_000.0, 1_700_000_000.5]
    )


def test_the_same_file_run_twice_keeps_both_runs_evidence(
    tmp_path: Path,
    make_video: Callable[..., Path],
    brightness_model: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Video time repeats when a file is run again into the same data_dir: the second run's
    # evidence must not overwrite the first's (its alert still names those files).
    video = make_video([20] * 5 + [240] * 8 + [20] * 5, box=(0.05, 0.1, 0.45, 0.9))
    cfg = _config(tmp_path, video, brightness_model, cooldown_s=0)
    for _ in range(2):
        assert main(["run", "--config", str(cfg), "--offline"]) == 0
    capsys.readouterr()
    alerts = [
        json.loads(line) for line in (tmp_path / "unit" / "alerts.jsonl").read_text().splitlines()
    ]
    assert len(alerts) == 2
    assert alerts[0]["alert_id"] != alerts[1]["alert_id"]
    paths = [a["evidence"]["frame_path"] for a in alerts]
    assert paths[0] != paths[1]
    assert all(Path(p).is_file() for p in paths)
