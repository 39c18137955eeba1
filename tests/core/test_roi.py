from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from edge.core.errors import RoiError
from edge.core.roi import Roi, points_in_polygon


def test_rect_crop_with_margin_is_a_view_clipped_to_the_frame() -> None:
    img = np.zeros((100, 200, 3), np.uint8)
    r = Roi.rect("lane1", 0.1, 0.2, 0.5, 0.6, margin=0.25)
    # box 0.1..0.5 x 0.2..0.6; margin 25 % of its 0.4 x 0.4 size -> 0.0..0.6 x 0.1..0.7
    assert r.crop_box(200, 100) == (0, 10, 120, 70)
    crop = r.crop(img)
    assert crop.shape == (60, 120, 3)
    assert np.shares_memory(crop, img)
    assert r.mask(img) is None
    edge = Roi.rect("edge", 0.0, 0.0, 0.2, 0.2, margin=0.5)
    assert edge.crop_box(200, 100) == (0, 0, 60, 30)


def test_polygon_mask_marks_inside_pixels() -> None:
    img = np.zeros((100, 100, 3), np.uint8)
    tri = Roi.polygon("t", [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)], margin=0.0)
    m = tri.mask(img)
    assert m is not None
    assert m.shape == (100, 100)
    assert m[5, 5]
    assert not m[95, 95]
    assert abs(m.mean() - 0.5) < 0.02
    assert tri.mask(img) is m  # cached per frame size


@pytest.mark.parametrize(
    "make",
    [
        lambda: Roi.rect("a", 0.5, 0.2, 0.4, 0.6),
        lambda: Roi.rect("a", 0.1, 0.2, 1.3, 0.6),
        lambda: Roi.polygon("a", [(0.1, 0.1), (0.2, 0.2)]),
        lambda: Roi.polygon("a", [(0.1, 0.1), (0.2, 0.2), (0.3, 0.3)]),
        lambda: Roi.polygon("a", [(0.1, 0.1), (-0.2, 0.2), (0.3, 0.9)]),
        lambda: Roi.rect("a", 0.1, 0.2, 0.3, 0.4, margin=2.0),
    ],
)
def test_bad_rois_are_refused_with_the_roi_named(make: Callable[[], Roi]) -> None:
    with pytest.raises(RoiError, match="'a'"):
        make()


def test_points_in_polygon_square() -> None:
    sq = np.array([[1, 1], [3, 1], [3, 3], [1, 3]], float)
    xs = np.array([2.0, 0.5, 2.9, 3.5])
    ys = np.array([2.0, 2.0, 1.1, 2.0])
    assert points_in_polygon(xs, ys, sq).tolist() == [True, False, True, False]


@pytest.mark.parametrize("deg", [22.4, -27.1, 90.0, 0.5])
def test_a_turned_crop_is_opencvs_rotation_of_the_box(deg: float) -> None:
    import cv2

    rng = np.random.default_rng(3)
    frame = rng.integers(0, 255, (240, 320, 3), np.uint8)
    r = Roi.rect("lane1", 0.1, 0.2, 0.6, 0.7, margin=0.1, rotate_deg=deg)
    plain = Roi.rect("lane1", 0.1, 0.2, 0.6, 0.7, margin=0.1).crop(frame)
    turned = r.crop(frame)
    assert turned.shape == plain.shape
    assert not np.shares_memory(turned, frame)
    h, w = plain.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), deg, 1.0)
    ref = cv2.warpAffine(
        np.ascontiguousarray(plain),
        m,
        (w, h),
        flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_REPLICATE,
    )
    # the same nearest pixel as OpenCV's, but for rounding ties at a few pixels
    assert (turned != ref).any(axis=2).mean() < 0.002
    assert np.array_equal(r.crop(frame), turned)  # the cached indices give the same
    # a frame that is not contiguous (a view) is turned the same
    wide = np.zeros((240, 640, 3), np.uint8)
    wide[:, ::2] = frame
    assert np.array_equal(r.crop(wide[:, ::2]), turned)


def test_a_turn_undoes_a_camera_roll() -> None:
    import cv2

    # an upright bar, seen by a camera rolled 25 degrees, is upright again after the turn
    upright = np.zeros((200, 200, 3), np.uint8)
    upright[40:160, 95:105] = 255
    seen = cv2.warpAffine(upright, cv2.getRotationMatrix2D((99.5, 99.5), 25.0, 1.0), (200, 200))
    r = Roi.rect("w", 0.0, 0.0, 1.0, 1.0, margin=0.0, rotate_deg=-25.0)
    back = r.crop(seen)[:, :, 0] > 127
    cols = np.nonzero(back.any(axis=0))[0]
    assert cols.max() - cols.min() <= 14  # a vertical bar again, about 10 px wide
    rows = np.nonzero(back.any(axis=1))[0]
    assert rows.max() - rows.min() >= 110


def test_rotate_is_bounded_and_for_rectangles_only() -> None:
    with pytest.raises(RoiError, match="'a'.*rotate_deg"):
        Roi.rect("a", 0.1, 0.1, 0.5, 0.5, rotate_deg=120.0)
    with pytest.raises(RoiError, match="rotate_deg is for rectangles"):
        Roi(
            id="a", points=((0.1, 0.1), (0.5, 0.1), (0.3, 0.5)), is_polygon=True, rotate_deg=10.0
        ).validate()
