"""Driver-window geometry: each view, both drive sides, both travel directions, the frame."""

from __future__ import annotations

import math

import pytest

from edge.core.errors import RoiError
from edge.core.window import (
    MIN_WINDOW_SIDE_PX,
    SIDE_ALONG,
    DriveSide,
    PixelBox,
    View,
    WindowSpec,
    window_box,
)

FRAME = (1920, 1080)
CAR = (600.0, 400.0, 1000.0, 600.0)  # 400 x 200 px
CAR_CX = 800.0


def centre_x(b: PixelBox) -> float:
    return (b[0] + b[2]) / 2


def mirrored(b: PixelBox) -> PixelBox:
    """``b`` mirrored about the car's vertical centre line."""
    return (round(2 * CAR_CX - b[2]), b[1], round(2 * CAR_CX - b[0]), b[3])


@pytest.mark.parametrize("view", ["side", "front", "rear"])
@pytest.mark.parametrize("drive_side", ["right", "left"])
@pytest.mark.parametrize("heading_x", [1, -1])
def test_the_window_is_in_the_upper_part_of_the_vehicle(
    view: View, drive_side: DriveSide, heading_x: int
) -> None:
    b = window_box(CAR, view=view, drive_side=drive_side, frame_wh=FRAME, heading_x=heading_x)
    x0, y0, x1, y1 = b
    assert CAR[0] <= x0 < x1 <= CAR[2]
    assert y0 == CAR[1]  # from the roof line
    assert y1 <= CAR[1] + 0.65 * (CAR[3] - CAR[1])  # never the wheels or the bumper
    assert (x1 - x0) <= 0.65 * (CAR[2] - CAR[0])  # a part of the car, not all of it


@pytest.mark.parametrize("drive_side", ["right", "left"])
def test_side_view_window_is_at_the_front_which_is_the_way_the_car_moves(
    drive_side: DriveSide,
) -> None:
    right = window_box(CAR, view="side", drive_side=drive_side, frame_wh=FRAME, heading_x=1)
    left = window_box(CAR, view="side", drive_side=drive_side, frame_wh=FRAME, heading_x=-1)
    assert centre_x(right) > CAR_CX  # moving right: the front is on the right
    assert centre_x(left) < CAR_CX
    assert left == mirrored(right)
    assert right == (600 + int(SIDE_ALONG[0] * 400), 400, 600 + round(SIDE_ALONG[1] * 400), 510)


def test_side_view_drive_side_does_not_move_the_window_along_the_car() -> None:
    # seen from the far side the driver is behind the near front window, at the same place
    for heading in (1, -1):
        rhd = window_box(CAR, view="side", drive_side="right", frame_wh=FRAME, heading_x=heading)
        lhd = window_box(CAR, view="side", drive_side="left", frame_wh=FRAME, heading_x=heading)
        assert rhd == lhd


def test_side_view_without_a_heading_takes_the_whole_upper_band() -> None:
    b = window_box(CAR, view="side", drive_side="right", frame_wh=FRAME, heading_x=0)
    assert (b[0], b[2]) == (600, 1000)
    assert b[3] < 600


@pytest.mark.parametrize("heading_x", [1, -1, 0])
def test_front_view_the_driver_of_a_right_hand_drive_car_is_on_the_image_left(
    heading_x: int,
) -> None:
    rhd = window_box(CAR, view="front", drive_side="right", frame_wh=FRAME, heading_x=heading_x)
    lhd = window_box(CAR, view="front", drive_side="left", frame_wh=FRAME, heading_x=heading_x)
    assert rhd[0] == 600  # oncoming: the car's right is the image's left
    assert centre_x(rhd) < CAR_CX
    assert lhd[2] == 1000
    assert centre_x(lhd) > CAR_CX
    assert lhd == mirrored(rhd)


@pytest.mark.parametrize("heading_x", [1, -1, 0])
def test_rear_view_the_driver_of_a_right_hand_drive_car_is_on_the_image_right(
    heading_x: int,
) -> None:
    rhd = window_box(CAR, view="rear", drive_side="right", frame_wh=FRAME, heading_x=heading_x)
    lhd = window_box(CAR, view="rear", drive_side="left", frame_wh=FRAME, heading_x=heading_x)
    assert rhd[2] == 1000  # from behind: the car's right is the image's right
    assert centre_x(rhd) > CAR_CX
    assert lhd[0] == 600
    assert lhd == mirrored(rhd)


def test_the_window_is_clipped_to_the_frame() -> None:
    half_out = (1700.0, -50.0, 2100.0, 150.0)  # cut off at the top right
    b = window_box(half_out, view="side", drive_side="right", frame_wh=FRAME, heading_x=1)
    assert b == (1812, 0, 1920, 60)  # x0: 1700 + 0.28 * 400; y1: -50 + 0.55 * 200


def test_a_tiny_window_is_grown_to_the_minimum_inside_the_frame() -> None:
    far = (500.0, 300.0, 520.0, 310.0)  # a car 20 px long
    b = window_box(far, view="front", drive_side="right", frame_wh=FRAME)
    assert (b[2] - b[0], b[3] - b[1]) == (MIN_WINDOW_SIDE_PX, MIN_WINDOW_SIDE_PX)
    assert b[0] <= 500 + 0.58 * 20 / 2 <= b[2]  # still about the small window
    corner = (1910.0, 1075.0, 1925.0, 1085.0)
    b = window_box(corner, view="rear", drive_side="left", frame_wh=FRAME, min_side_px=48)
    assert b == (1920 - 48, 1080 - 48, 1920, 1080)
    tiny_frame = window_box(far, view="side", drive_side="right", frame_wh=(16, 8))
    assert tiny_frame == (0, 0, 16, 8)  # never larger than the frame


def test_window_spec_checks_its_settings() -> None:
    spec = WindowSpec(view="rear", drive_side="left")
    assert spec.box(CAR, FRAME) == window_box(CAR, view="rear", drive_side="left", frame_wh=FRAME)
    with pytest.raises(RoiError, match="view"):
        WindowSpec(view="top")  # type: ignore[arg-type]
    with pytest.raises(RoiError, match="drive_side"):
        WindowSpec(drive_side="centre")  # type: ignore[arg-type]
    with pytest.raises(RoiError, match="min_side_px"):
        WindowSpec(min_side_px=0)


@pytest.mark.parametrize(
    ("box", "match"),
    [((10.0, 10.0, 5.0, 20.0), "x1 > x0"), ((0.0, 0.0, float("inf"), 1.0), "finite")],
)
def test_a_bad_vehicle_box_is_refused(box: tuple[float, float, float, float], match: str) -> None:
    with pytest.raises(RoiError, match=match):
        window_box(box, view="side", drive_side="right", frame_wh=FRAME)


# The shared roadside frame video/traffic_frames/0001.bmp (256 x 256, traffic moving right to
# left), looked at zoomed in: the dark saloon's box (bumper to bumper, roof to tyres), its front
# door glass, and the person seen through it. Pixels, drawn by eye.
SALOON: tuple[float, float, float, float] = (53.0, 151.0, 122.0, 195.0)
SALOON_FRONT_DOOR_GLASS = (89, 159, 99, 170)
SALOON_PERSON = (92, 167)


def test_side_window_on_a_real_roadside_frame_holds_the_front_door_glass() -> None:
    b = window_box(
        SALOON, view="side", drive_side="left", frame_wh=(256, 256), heading_x=-1, min_side_px=8
    )
    gx0, gy0, gx1, gy1 = SALOON_FRONT_DOOR_GLASS
    assert b[0] <= gx0 < gx1 <= b[2]
    assert b[1] <= gy0 < gy1 <= b[3]
    px, py = SALOON_PERSON
    assert b[0] <= px < b[2]
    assert b[1] <= py < b[3]
    assert b[2] < SALOON[2] - 10  # the rear door and the boot stay out
    assert b[3] < SALOON[3] - 15  # so do the wheels


@pytest.mark.parametrize(
    ("box", "in_view"),
    [
        ((860.0, 500.0, 1060.0, 640.0), False),  # straight ahead: spans the middle column
        ((700.0, 500.0, 959.0, 640.0), True),  # wholly left of it: its right side shows
        ((961.0, 500.0, 1200.0, 640.0), True),  # wholly right of it
        ((0.0, 300.0, 960.0, 1000.0), True),  # alongside, up to the column
    ],
)
def test_rear_view_a_window_is_in_view_only_off_the_straight_ahead_column(
    box: tuple[float, float, float, float], in_view: bool
) -> None:
    assert WindowSpec(view="rear").is_in_view(box, FRAME) is in_view


@pytest.mark.parametrize("view", ["front", "side"])
def test_front_and_side_views_always_have_a_window_in_view(view: View) -> None:
    assert WindowSpec(view=view).is_in_view((860.0, 500.0, 1060.0, 640.0), FRAME)


def test_the_straight_ahead_column_is_a_setting() -> None:
    ahead_of_a_yawed_camera = (1100.0, 500.0, 1300.0, 640.0)
    assert WindowSpec(view="rear").is_in_view(ahead_of_a_yawed_camera, FRAME)
    assert not WindowSpec(view="rear", axis_x=0.6).is_in_view(ahead_of_a_yawed_camera, FRAME)
    with pytest.raises(RoiError, match="axis_x"):
        WindowSpec(view="rear", axis_x=1.5)
    with pytest.raises(RoiError, match="vehicle box"):
        WindowSpec(view="rear").is_in_view((10.0, 0.0, 5.0, 10.0), FRAME)


def test_a_window_too_small_to_show_a_phone_is_not_legible() -> None:
    # Rear view, right-hand drive: the window is 0.62 of the box's width, 0.55 of its height.
    spec = WindowSpec(view="rear", drive_side="right", legible_min_px=32)
    far_van = (900.0, 300.0, 970.0, 360.0)  # 70 x 60: window 43.4 x 33 -> legible
    farther = (900.0, 300.0, 950.0, 345.0)  # 50 x 45: window 31 x 24.75 -> not
    assert spec.is_legible(far_van, FRAME)
    assert not spec.is_legible(farther, FRAME)
    # the stage's one call: the window when legible, else None
    assert spec.legible_box(far_van, FRAME) == spec.box(far_van, FRAME)
    assert spec.legible_box(farther, FRAME) is None
    # what is scored is still grown to min_side_px; legibility looks at it before that
    assert spec.box(farther, FRAME) == (918, 296, 950, 328)
    # 0 (the default) scores every window, however small
    assert WindowSpec(view="rear").is_legible((900.0, 300.0, 904.0, 303.0), FRAME)


def test_legibility_counts_only_the_window_inside_the_frame() -> None:
    # A car alongside, moving right, its back cut off by the left edge: its window (0.28..0.76
    # of its length from the back, x -232..56) shows 56 px; in full view it is 288 x 110.
    spec = WindowSpec(view="side", legible_min_px=100)
    assert not spec.is_legible((-400.0, 200.0, 200.0, 400.0), FRAME, heading_x=1)
    assert spec.is_legible((100.0, 200.0, 700.0, 400.0), FRAME, heading_x=1)


def test_legible_min_px_must_not_be_negative() -> None:
    with pytest.raises(RoiError, match="legible_min_px"):
        WindowSpec(legible_min_px=-1)


# ---- the rear view's side glass, on vehicles projected through a pinhole camera ----------
#
# The camera here is written out independently of the module: a world point (x right of the
# camera's line, y up from the road, z ahead) lands at (w/2 + f x / z, horizon + f (h - y) / z).
# A car is a 1.8 x 1.45 x 4.6 m block; its front side glass is 1.8..2.7 m behind its front,
# 0.95..1.35 m above the road. The box is what a detector would draw: the visible back face and
# near side, clipped to the frame.

CAM_W, CAM_H = 1280, 720
Quad = tuple[float, float, float, float]
HORIZON = 0.42
HFOV = 66.0
LENS_M = 1.3
REAR = WindowSpec(view="rear", horizon_y=HORIZON, hfov_deg=HFOV, camera_height_m=LENS_M)


def _focal() -> float:
    return (CAM_W / 2) / math.tan(math.radians(HFOV) / 2)


def _project(x: float, y: float, z: float) -> tuple[float, float]:
    f = _focal()
    return CAM_W / 2 + f * x / z, HORIZON * CAM_H + f * (LENS_M - y) / z


def _clipped_bbox(pts: list[tuple[float, float]]) -> Quad:
    inside = [(x, y) for x, y in pts if 0 <= x <= CAM_W]
    xs, ys = [p[0] for p in inside], [p[1] for p in inside]
    return max(min(xs), 0.0), max(min(ys), 0.0), min(max(xs), CAM_W), min(max(ys), CAM_H)


def _car(side_m: float, back_z: float) -> tuple[Quad, Quad]:
    """(box, glass) of a car whose near side is ``side_m`` off the camera's line (negative:
    on the left) and whose back is ``back_z`` ahead."""
    width, height, length = 1.8, 1.45, 4.6
    far = side_m + (width if side_m > 0 else -width)
    zs = [back_z + length * k / 400 for k in range(401)]
    pts = [_project(side_m, y, z) for z in zs for y in (0.0, height) if z > 0.3]
    if back_z > 0.3:  # the back face
        pts += [_project(x, y, back_z) for x in (side_m, far) for y in (0.0, height)]
    front = back_z + length
    glass = [_project(side_m, y, z) for z in (front - 2.7, front - 1.8) for y in (0.95, 1.35)]
    return _clipped_bbox(pts), _clipped_bbox(glass)


def _area(b: Quad) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _iou(a: PixelBox, b: Quad) -> float:
    inter = _covered(a, b) * _area(b)
    return inter / (_area(a) + _area(b) - inter)


def _covered(window: PixelBox, glass: Quad) -> float:
    ix = max(0.0, min(window[2], glass[2]) - max(window[0], glass[0]))
    iy = max(0.0, min(window[3], glass[3]) - max(window[1], glass[1]))
    return ix * iy / _area(glass)


@pytest.mark.parametrize("side_m", [-2.7, 2.7], ids=["on the left", "on the right"])
@pytest.mark.parametrize(
    "back_z", [9.0, 2.6], ids=["ahead, back in view", "alongside, back off the frame"]
)
def test_rear_view_window_is_the_side_glass_of_a_vehicle_off_the_axis(
    side_m: float, back_z: float
) -> None:
    box, glass = _car(side_m, back_z)
    off_frame = box[0] <= 1 or box[2] >= CAM_W - 1
    assert off_frame is (back_z < 5), "the scene is not the one the test means"
    window = REAR.box(box, (CAM_W, CAM_H))
    assert _covered(window, glass) >= 0.8
    assert _area(window) <= 3.0 * _area(glass)
    # the fixed share of the box it replaces is mostly door, wing and wheel arch (or misses
    # the glass): it matches the glass far worse
    fixed = window_box(box, view="rear", drive_side="right", frame_wh=(CAM_W, CAM_H))
    assert _iou(fixed, glass) < 0.6 * _iou(window, glass)


def test_rear_view_a_vehicle_nearly_straight_ahead_falls_back_to_the_rear_screen() -> None:
    box, _ = _car(0.15, 12.0)  # in our lane, a little right of the line: the side is edge-on
    assert box[0] > CAM_W / 2  # off the column, so it is scored
    assert REAR.side_glass(box, (CAM_W, CAM_H)) is None
    fixed = window_box(box, view="rear", drive_side="right", frame_wh=(CAM_W, CAM_H))
    assert REAR.box(box, (CAM_W, CAM_H)) == fixed


def test_side_glass_needs_a_road_point_to_scale_by() -> None:
    box, _ = _car(-2.7, 9.0)
    assert REAR.side_glass(box, (CAM_W, CAM_H)) is not None
    cut = (box[0], box[1], box[2], float(CAM_H))  # its wheels below the frame
    assert REAR.side_glass(cut, (CAM_W, CAM_H)) is None
    above = (box[0], 100.0, box[2], HORIZON * CAM_H - 10)  # not standing on the road
    assert REAR.side_glass(above, (CAM_W, CAM_H)) is None
    # other views keep their fixed share
    assert WindowSpec(view="front").side_glass(box, (CAM_W, CAM_H)) is None


def test_the_side_glass_follows_the_mount_settings() -> None:
    box, glass = _car(-2.7, 9.0)
    wrong_lens = WindowSpec(view="rear", horizon_y=HORIZON, hfov_deg=102.0, camera_height_m=LENS_M)
    assert _covered(REAR.box(box, (CAM_W, CAM_H)), glass) >= 0.8
    assert _covered(wrong_lens.box(box, (CAM_W, CAM_H)), glass) < 0.8


@pytest.mark.parametrize(
    ("setting", "value"),
    [("horizon_y", 1.5), ("horizon_y", float("nan")), ("hfov_deg", 5.0), ("camera_height_m", 0.0)],
)
def test_rear_mount_settings_are_checked(setting: str, value: float) -> None:
    with pytest.raises(RoiError, match=setting):
        WindowSpec(view="rear", **{setting: value})  # type: ignore[arg-type]
