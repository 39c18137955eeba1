"""The Pi camera through picamera2: runs on a Raspberry Pi with a camera only (marker ``pi``)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.adapters.camera import PicameraSource

pytestmark = pytest.mark.pi


def test_main_and_lores_streams_are_copied_out_per_frame() -> None:
    src = PicameraSource(main_size=(1280, 720), lores_size=(320, 180), fps=30)
    src.open()
    try:
        frames = [src.read() for _ in range(10)]
    finally:
        src.close()
    assert all(f is not None for f in frames)
    f0, f9 = frames[0], frames[9]
    assert f0 is not None
    assert f9 is not None
    assert f0.image.shape == (720, 1280, 3)
    assert f0.image.dtype == np.uint8
    assert f0.lores is not None
    assert f0.lores.shape == (180, 320, 3)
    assert not np.shares_memory(f0.image, f9.image)  # copies, not recycled buffers
    assert [f.index for f in frames if f] == list(range(10))
    assert f9.t_mono_s > f0.t_mono_s
