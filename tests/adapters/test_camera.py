"""Frame sources on real files: OpenCV, paced replay, image folders."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.adapters.camera import FolderSource, OpenCvSource, ReplaySource
from edge.core.errors import CameraError
from edge.core.frame import Frame
from edge.core.ports import FrameSource


def read_all(src: FrameSource) -> list[Frame]:
    out = []
    src.open()
    try:
        while (f := src.read()) is not None:
            out.append(f)
    finally:
        src.close()
    return out


def test_opencv_file_reads_every_frame_in_order(make_video: Callable[..., Path]) -> None:
    path = make_video([10, 60, 110, 160, 210])
    frames = read_all(OpenCvSource(str(path)))
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    levels = [int(f.image.mean()) for f in frames]
    assert all(abs(a - b) <= 3 for a, b in zip(levels, [10, 60, 110, 160, 210], strict=True))
    assert frames[0].image.shape == (120, 160, 3)
    assert frames[0].image.dtype == np.uint8
    assert frames[0].size == (160, 120)


def test_replay_is_paced_at_the_files_frame_rate(make_video: Callable[..., Path]) -> None:
    path = make_video([100] * 10, fps=20.0)
    src = ReplaySource(path)
    t0 = time.monotonic()
    frames = read_all(src)
    elapsed = time.monotonic() - t0
    assert len(frames) == 10
    assert src.fps == pytest.approx(20.0)
    assert elapsed >= 9 / 20 * 0.9  # 10 frames at 20 fps: ~0.45 s, never faster
    assert src.is_live
    fast = ReplaySource(path, speed=0.0)
    assert not fast.is_live
    assert len(read_all(fast)) == 10


def test_replay_loops(make_video: Callable[..., Path]) -> None:
    src = ReplaySource(make_video([50, 150], fps=50.0), loop=True, speed=0.0)
    src.open()
    frames = [src.read() for _ in range(5)]
    idx = [f.index if f is not None else None for f in frames]
    src.close()
    assert idx == [0, 1, 2, 3, 4]


def test_folder_source_in_name_order_skips_unreadable(tmp_path: Path) -> None:
    for name, level in (("b.png", 200), ("a.jpg", 50), ("c.bmp", 120)):
        cv2.imwrite(str(tmp_path / name), np.full((8, 8, 3), level, np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    frames = read_all(FolderSource(tmp_path))
    assert [f.source.rsplit("/", 1)[1] for f in frames] == ["a.jpg", "b.png", "c.bmp"]


@pytest.mark.parametrize(
    "make",
    [
        lambda p: ReplaySource(p / "missing.mp4"),
        lambda p: OpenCvSource(str(p / "missing.mp4")),
        lambda p: FolderSource(p / "nothing"),
    ],
)
def test_missing_inputs_raise_camera_error(
    tmp_path: Path, make: Callable[[Path], FrameSource]
) -> None:
    with pytest.raises(CameraError, match="does not exist"):
        make(tmp_path).open()


def test_unreadable_video_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 200)
    with pytest.raises(CameraError, match=r"bad\.mp4"):
        ReplaySource(bad).open()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CameraError, match="holds no images"):
        FolderSource(empty).open()


def test_real_traffic_clip(shared_data: Path) -> None:
    src = ReplaySource(shared_data / "video" / "car-detection.mp4", speed=0.0)
    src.open()
    try:
        assert src.fps == pytest.approx(12.5, rel=0.01)
        f = src.read()
        assert f is not None
        assert f.size == (768, 432)
    finally:
        src.close()
