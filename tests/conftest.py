"""Fixtures shared by every test folder: where the real third-party data lives, test models,
and small real video files made on the fly."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DATA = Path(__file__).resolve().parent / "data"
SHARED_DATA = Path(os.environ.get("PHONEWATCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real third-party models, NMEA, video); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def brightness_model() -> Path:
    """A real uint8 TFLite model whose P(phone) follows the crop's mean brightness."""
    return TEST_DATA / "brightness_int8.tflite"


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float) -> Path:
    import cv2

    frames = list(frames)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """``make_video(levels, fps=25, size=(160, 120), bright_box=None)``: a real MJPEG AVI whose
    frame i is grey at ``levels[i]``; ``bright_box`` (fractions) limits the level to a box."""

    def make(
        levels: list[int],
        *,
        fps: float = 25.0,
        size: tuple[int, int] = (160, 120),
        box: tuple[float, float, float, float] | None = None,
        name: str = "clip.avi",
    ) -> Path:
        w, h = size
        frames = []
        for lv in levels:
            if box is None:
                img = np.full((h, w, 3), lv, np.uint8)
            else:
                img = np.full((h, w, 3), 20, np.uint8)
                x0, y0, x1, y1 = box
                img[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)] = lv
            frames.append(img)
        return write_video(tmp_path / name, frames, fps)

    return make


def _on_a_pi() -> bool:
    try:
        return "Raspberry Pi" in Path("/proc/device-tree/model").read_text(errors="ignore")
    except OSError:
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``pi`` need the real camera / GPIO: they run on a Raspberry Pi only."""
    if _on_a_pi():
        return
    skip = pytest.mark.skip(reason="needs a Raspberry Pi (camera, GPIO)")
    for item in items:
        if "pi" in item.keywords:
            item.add_marker(skip)
