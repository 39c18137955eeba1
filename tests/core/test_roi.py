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
