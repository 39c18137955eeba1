"""The driver's window of a tracked vehicle: the crop the phone classifier scores. Pure.

The window is a fixed part of the vehicle's box, chosen by the view and the drive side, so it
follows the car wherever the tracker puts its box:

``side`` (a camera beside the road, e.g. at a junction; the car crosses the view)::

    moving right (heading_x = +1)           moving left (heading_x = -1)
    +------------------------------+        +------------------------------+
    |        [##############]      |        |       [##############]       |
    |        [#   window   #]   -> |        | <-    [#   window   #]       |
    |        [##############]      |        |       [##############]       |
    |  (o)                    (o)  |        |  (o)                    (o)  |
    +------------------------------+        +------------------------------+
    back    0.28          0.76   front      front  0.76          0.28   back

  The driver's window is the upper part of the front door, and the front is the way the car
  moves (the track's ``heading_x``). The drive side does not move it along the car: from the
  far side the driver is seen through the near front window, beside the front passenger, at
  the same place along the car. With no heading yet (a car that has not moved), the whole upper
  band of the side is the window.

``front`` (oncoming, from a dash): the driver's half of the windscreen. A right-hand-drive car
(driver on the car's right) facing the camera has its driver on the image's *left*.

``rear`` (three-quarter from behind, from a dash): the front side glass of the vehicle's near
side, placed by the camera's geometry (below); where that side is edge-on, the driver's side of
the rear screen and the side glass beyond it. The car faces away, so its right is the image's
right: a right-hand-drive car's driver is on the image's *right*.

**The rear view's side glass** (:meth:`WindowSpec.side_glass`). A vehicle ahead and off the
straight-ahead column shows its back and its near side, and the side runs from the back towards
the vanishing point, foreshortened. A fixed share of the box lands on door and wheel arch for a
vehicle alongside, so the glass is placed with a pinhole camera instead: the vanishing point
(``axis_x``, ``horizon_y``), the lens's horizontal field of view (``hfov_deg``) and the camera's
height (``camera_height_m``), all facts of the mount. The box's bottom edge is the vehicle's
nearest point on the road, which gives its scale (pixels per metre there); its outer edge then
gives how far the near side is from the camera's line (less a vehicle's width when the back is
in view; when the box runs off the frame's edge the back is not in view, and the near side is
taken as at most a next-lane vehicle's, :data:`NEXT_LANE_SIDE_M`). The box's inner edge is the
vehicle's front corner, and the glass is :data:`SIDE_GLASS_FROM_FRONT_M` behind it, in the
upper band of the box. The near side is the driver's for a vehicle on the driver's side of the
camera, else the driver is seen through the passenger's glass; the glass is the crop either
way.

``drive_side`` is where the driver sits: ``right`` for right-hand-drive cars (UK, IE, AU, NZ,
JP, IN, ZA ...), ``left`` for most of Europe and the Americas.

The result is in frame pixels (integers, ready to slice), clipped to the frame, and grown about
its centre to at least ``min_side_px`` a side (kept inside the frame).

**Is a driver's window in view at all?** (:meth:`WindowSpec.is_in_view`) In the ``rear`` view
the camera looks along the road, and straight ahead is one column of the image (``axis_x``, a
share of the frame width: the road's vanishing point, the middle for a camera aimed along the
car). A vehicle's side faces are planes along the road; the one nearer the camera is in view
only when it lies off the axis, and then it shows between the axis and the vehicle's back,
so the vehicle's box lies wholly on one side of the axis column. A box that spans the column
belongs to a vehicle straight ahead in our lane: only its back is in view, no side glass, and a
phone cannot be told from the rear screen. Such a vehicle is not scored. The ``front`` view
(a windscreen faces us wherever the car is) and the ``side`` view are always in view.

**Is it big enough to show a phone?** (:meth:`WindowSpec.is_legible`) A far vehicle's window
is a few pixels; growing the crop to ``min_side_px`` gives the classifier context around it
but no more detail, so a phone cannot be seen there and a score on it is noise. With
``legible_min_px`` set, a window smaller than that on either side (as placed, before it is
grown) is not scored; the vehicle is scored once it comes near enough.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

from edge.core.errors import RoiError
from edge.core.vehicle import Box

PixelBox = tuple[int, int, int, int]

View = Literal["side", "front", "rear"]
DriveSide = Literal["right", "left"]

# Fractions of the vehicle box: (across from the reference edge, down from the top).
# Side view: across is measured from the BACK of the car towards its front.
SIDE_ALONG = (0.28, 0.76)
"""Along a side view, from the back. Measured on the saloon in the shared
``video/traffic_frames/0001.bmp`` (a roadside view): front door glass 0.33..0.48 of the box's
length from the back, the driver's head at about 0.43, the windscreen 0.46..0.72. The span holds
the door glass with a margin behind it and reaches through the windscreen for a phone held up
in front of the face; a van's driver sits further forward (head about 0.75) and is at its edge."""
SIDE_HEIGHT = (0.0, 0.55)
"""From the roof line down past the door's waist line (the glass is about 0.18..0.43 of the
height on that saloon): a phone is held at the ear or above the wheel, so above the waist with
some margin; below is door panel and wheels, never evidence."""
SIDE_UNKNOWN_ALONG = (0.0, 1.0)
"""No heading yet: the front is not known, so the whole upper band."""

FRONT_ACROSS = (0.0, 0.58)
"""The driver's half of a windscreen seen head-on, from the driver's side edge: a little past
the middle, because a phone is often held towards the centre (on the mirror side)."""
FRONT_HEIGHT = (0.0, 0.58)
"""A front-on box is roof to bumper; the windscreen is about 0.12..0.5 of it, and the crop
reaches a little below for a phone held at the wheel."""

REAR_ACROSS = (0.0, 0.62)
"""The driver's side of the rear screen plus the side glass a three-quarter view shows, from
the driver's side edge."""
REAR_HEIGHT = (0.0, 0.55)
"""Roof to the rear screen's lower edge; the boot and bumper below are never evidence."""

REAR_AXIS_X = 0.5
"""Straight ahead for a dash camera aimed along the car: the middle column of the image."""
REAR_HORIZON_Y = 0.5
"""Where the road vanishes, as a share of the frame height: the middle row for a level camera."""
REAR_HFOV_DEG = 66.0
"""The horizontal field of view of the Raspberry Pi Camera Module 3's standard lens."""
REAR_CAMERA_HEIGHT_M = 1.3
"""A dash camera's height above the road in a saloon or estate patrol car."""

VEHICLE_WIDTH_M = 1.8
"""A car's width (most are 1.7-1.95 m): the back's share of a box whose back is in view."""
SIDE_GLASS_FROM_FRONT_M = (1.6, 2.9)
"""The front side glass along a car, in metres behind its front: the windscreen pillar's foot is
about 1.7 m behind the front bumper of a mid-size car and the B pillar about 2.8 m, so the span
holds the glass with a little margin both ways; the driver's head is near its middle."""
SIDE_GLASS_BAND = (0.04, 0.42)
"""From just under the roof line down to the waist (belt) line, as shares of the box's height
from its top: a saloon's side glass is about 0.05..0.40 of its height. The band is taken from the
box (its nearest, tallest part) rather than placed in depth, which the detector's loose box
bottom would make jumpy."""
NEXT_LANE_SIDE_M = 2.75
"""How far a vehicle in the next lane has its near side from the camera's line: a 3.65 m lane
less half a car's width. A box running off the frame's edge is that close or closer."""
SIDE_EDGE_ON_M = 0.3
"""A near side closer than this to the camera's line is edge-on (the vehicle is all but straight
ahead): there is no side glass to place, and the rear screen is the window."""
NEAR_PLANE_M = 0.5
"""Glass nearer the camera than this is taken at this depth (it is beside the camera, off the
frame, and the crop is clipped to the frame)."""

MIN_WINDOW_SIDE_PX = 32
"""A distant car's window may be a few pixels; below this the crop is grown about its centre,
so the classifier gets context around a tiny window rather than a degenerate 1-2 pixel array."""


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Where a unit's drivers sit in their vehicles' boxes (one per camera view)."""

    view: View = "side"
    drive_side: DriveSide = "right"
    min_side_px: int = MIN_WINDOW_SIDE_PX
    axis_x: float = REAR_AXIS_X
    """Rear view: where straight ahead is, as a share of the frame width (see the module)."""
    legible_min_px: int = 0
    """A window smaller than this on either side, before it is grown to ``min_side_px``, is
    too small to show a phone (:meth:`is_legible`); 0 scores every window."""
    horizon_y: float = REAR_HORIZON_Y
    """Rear view: where the road vanishes, as a share of the frame height (see the module)."""
    hfov_deg: float = REAR_HFOV_DEG
    """Rear view: the lens's horizontal field of view, degrees."""
    camera_height_m: float = REAR_CAMERA_HEIGHT_M
    """Rear view: the camera's height above the road, metres."""

    def __post_init__(self) -> None:
        if self.view not in get_args(View):
            raise RoiError(f"window view must be one of {get_args(View)}, got {self.view!r}")
        if self.drive_side not in get_args(DriveSide):
            raise RoiError(
                f"window drive_side must be one of {get_args(DriveSide)}, got {self.drive_side!r}"
            )
        if self.min_side_px < 1:
            raise RoiError(f"window min_side_px must be >= 1, got {self.min_side_px}")
        if not (math.isfinite(self.axis_x) and 0.0 <= self.axis_x <= 1.0):
            raise RoiError(f"window axis_x must be within 0..1, got {self.axis_x}")
        if self.legible_min_px < 0:
            raise RoiError(f"window legible_min_px must be >= 0, got {self.legible_min_px}")
        if not (math.isfinite(self.horizon_y) and 0.0 <= self.horizon_y <= 1.0):
            raise RoiError(f"window horizon_y must be within 0..1, got {self.horizon_y}")
        if not (math.isfinite(self.hfov_deg) and 10.0 <= self.hfov_deg <= 170.0):
            raise RoiError(f"window hfov_deg must be within 10..170, got {self.hfov_deg}")
        if not (math.isfinite(self.camera_height_m) and 0.2 <= self.camera_height_m <= 5.0):
            raise RoiError(
                f"window camera_height_m must be within 0.2..5, got {self.camera_height_m}"
            )

    def axis_px(self, frame_w: int) -> float | None:
        """The straight-ahead column in pixels in the ``rear`` view; None in the others."""
        return self.axis_x * frame_w if self.view == "rear" else None

    def is_in_view(self, vehicle: Box, frame_wh: tuple[int, int]) -> bool:
        """Whether ``vehicle`` shows a driver's window at all (see the module docstring):
        False only in the ``rear`` view for a box that spans the straight-ahead column."""
        x0, _, x1, _ = _checked(vehicle)
        axis = self.axis_px(frame_wh[0])
        return axis is None or not (x0 < axis < x1)

    def is_legible(self, vehicle: Box, frame_wh: tuple[int, int], heading_x: int = 0) -> bool:
        """Whether ``vehicle``'s driver's window, as the view places it and clipped to the
        frame but not grown, is at least ``legible_min_px`` on both sides (see the module)."""
        return self._legible(self._placed(vehicle, frame_wh, heading_x), frame_wh)

    def box(self, vehicle: Box, frame_wh: tuple[int, int], heading_x: int = 0) -> PixelBox:
        """The driver's window of ``vehicle`` in a ``frame_wh`` frame (see the module doc)."""
        return _fit(self._placed(vehicle, frame_wh, heading_x), frame_wh, self.min_side_px)

    def legible_box(
        self, vehicle: Box, frame_wh: tuple[int, int], heading_x: int = 0
    ) -> PixelBox | None:
        """:meth:`box`, or None where :meth:`is_legible` is False: the window placed once."""
        placed = self._placed(vehicle, frame_wh, heading_x)
        if not self._legible(placed, frame_wh):
            return None
        return _fit(placed, frame_wh, self.min_side_px)

    def side_glass(self, vehicle: Box, frame_wh: tuple[int, int]) -> Box | None:
        """Rear view: the near side's front glass of ``vehicle`` in frame pixels (not clipped),
        or None where there is none to place: another view, a box spanning the straight-ahead
        column, a side edge-on, a box not standing on the road below the horizon or cut by the
        frame's bottom (no road point to scale it by), or glass wholly outside the frame (see
        the module docstring)."""
        if self.view != "rear":
            return None
        x0, y0, x1, y1 = _checked(vehicle)
        fw, fh = frame_wh
        if fw < 1 or fh < 1:
            raise RoiError(f"frame size must be positive, got {frame_wh!r}")
        axis = self.axis_x * fw
        if x1 <= axis:
            sign, inner, outer, off_edge = -1.0, axis - x1, axis - x0, x0 <= 1.0
        elif x0 >= axis:
            sign, inner, outer, off_edge = 1.0, x0 - axis, x1 - axis, x1 >= fw - 1.0
        else:
            return None
        below = y1 - self.horizon_y * fh
        if inner <= 0.0 or below < 2.0 or y1 >= fh - 1.0:
            return None
        px_per_m = below / self.camera_height_m  # at the vehicle's nearest point on the road
        if off_edge:
            lateral = min(outer / px_per_m, NEXT_LANE_SIDE_M)
        else:
            lateral = outer / px_per_m - VEHICLE_WIDTH_M
        if lateral < SIDE_EDGE_ON_M:
            return None
        focal = (fw / 2.0) / math.tan(math.radians(self.hfov_deg) / 2.0)
        z_front = focal * lateral / inner
        xs = [
            axis + sign * lateral * focal / max(z_front - back, NEAR_PLANE_M)
            for back in SIDE_GLASS_FROM_FRONT_M
        ]
        gx0, gx1 = min(xs), max(xs)
        if min(gx1, fw) - max(gx0, 0.0) < 1.0:
            return None
        h = y1 - y0
        return gx0, y0 + SIDE_GLASS_BAND[0] * h, gx1, y0 + SIDE_GLASS_BAND[1] * h

    def _placed(self, vehicle: Box, frame_wh: tuple[int, int], heading_x: int) -> Box:
        """The window as the view places it: not clipped, not grown."""
        glass = self.side_glass(vehicle, frame_wh)
        if glass is not None:
            return glass
        return _share_of(vehicle, self.view, self.drive_side, heading_x)

    def _legible(self, placed: Box, frame_wh: tuple[int, int]) -> bool:
        if self.legible_min_px <= 0:
            return True
        x0, y0, x1, y1 = _fit(placed, frame_wh, 1)
        return min(x1 - x0, y1 - y0) >= self.legible_min_px


def window_box(
    vehicle: Box,
    *,
    view: View,
    drive_side: DriveSide,
    frame_wh: tuple[int, int],
    heading_x: int = 0,
    min_side_px: int = MIN_WINDOW_SIDE_PX,
) -> PixelBox:
    """The driver's window of ``vehicle`` as a fixed share of its box, in frame pixels (see the
    module docstring; :meth:`WindowSpec.box` places the ``rear`` view's side glass first)."""
    return _fit(_share_of(vehicle, view, drive_side, heading_x), frame_wh, min_side_px)


def _share_of(vehicle: Box, view: View, drive_side: DriveSide, heading_x: int) -> Box:
    """The view's fixed share of ``vehicle``'s box, not clipped."""
    x0, y0, x1, y1 = _checked(vehicle)
    across, down = _fractions(view, drive_side, heading_x)
    w, h = x1 - x0, y1 - y0
    return x0 + across[0] * w, y0 + down[0] * h, x0 + across[1] * w, y0 + down[1] * h


def _fractions(
    view: View, drive_side: DriveSide, heading_x: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(across, down) as fractions of the box from its left and top edges in the image."""
    if view == "side":
        if heading_x == 0:
            return SIDE_UNKNOWN_ALONG, SIDE_HEIGHT
        # measured from the back: moving right, the back is the left edge; else mirrored
        return (SIDE_ALONG if heading_x > 0 else _mirror(SIDE_ALONG)), SIDE_HEIGHT
    if view == "front":
        on_left = drive_side == "right"  # facing us, the car's right is our left
        return (FRONT_ACROSS if on_left else _mirror(FRONT_ACROSS)), FRONT_HEIGHT
    if view == "rear":
        on_left = drive_side == "left"  # facing away, the car's left is our left
        return (REAR_ACROSS if on_left else _mirror(REAR_ACROSS)), REAR_HEIGHT
    raise RoiError(f"window view must be one of {get_args(View)}, got {view!r}")


def _mirror(span: tuple[float, float]) -> tuple[float, float]:
    return 1.0 - span[1], 1.0 - span[0]


def _checked(box: Box) -> Box:
    if len(box) != 4 or not all(math.isfinite(c) for c in box):
        raise RoiError(f"vehicle box must be 4 finite numbers, got {box!r}")
    x0, y0, x1, y1 = (float(c) for c in box)
    if not (x1 > x0 and y1 > y0):
        raise RoiError(f"vehicle box needs x1 > x0 and y1 > y0, got {box!r}")
    return x0, y0, x1, y1


def _fit(box: Box, frame_wh: tuple[int, int], min_side_px: int) -> PixelBox:
    """Round outwards to pixels, clip to the frame, grow to ``min_side_px`` inside it."""
    fw, fh = frame_wh
    if fw < 1 or fh < 1:
        raise RoiError(f"frame size must be positive, got {frame_wh!r}")
    x0, x1 = _span(box[0], box[2], fw, min_side_px)
    y0, y1 = _span(box[1], box[3], fh, min_side_px)
    return x0, y0, x1, y1


def _span(lo: float, hi: float, size: int, min_len: int) -> tuple[int, int]:
    """One axis: ``[lo, hi)`` clipped to ``[0, size)``, at least ``min(min_len, size)`` long."""
    eps = 1e-6  # 0.55 * 200 is 110.00000000000001: no whole pixel outwards for that
    a = min(max(math.floor(lo + eps), 0), size)
    b = max(min(math.ceil(hi - eps), size), 0)
    need = min(min_len, size)
    if b - a >= need:
        return a, b
    centre = (min(max(lo, 0.0), size) + min(max(hi, 0.0), size)) / 2.0
    a = math.floor(centre - need / 2.0)
    a = min(max(a, 0), size - need)
    return a, a + need
