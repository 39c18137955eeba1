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

``rear`` (three-quarter from behind, from a dash): the driver's side of the rear screen and the
side glass beyond it. The car faces away, so its right is the image's right: a right-hand-drive
car's driver is on the image's *right*.

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
        if self.legible_min_px <= 0:
            return True
        x0, y0, x1, y1 = window_box(
            vehicle,
            view=self.view,
            drive_side=self.drive_side,
            frame_wh=frame_wh,
            heading_x=heading_x,
            min_side_px=1,
        )
        return min(x1 - x0, y1 - y0) >= self.legible_min_px

    def box(self, vehicle: Box, frame_wh: tuple[int, int], heading_x: int = 0) -> PixelBox:
        """The driver's window of ``vehicle`` in a ``frame_wh`` frame (see the module doc)."""
        return window_box(
            vehicle,
            view=self.view,
            drive_side=self.drive_side,
            frame_wh=frame_wh,
            heading_x=heading_x,
            min_side_px=self.min_side_px,
        )


def window_box(
    vehicle: Box,
    *,
    view: View,
    drive_side: DriveSide,
    frame_wh: tuple[int, int],
    heading_x: int = 0,
    min_side_px: int = MIN_WINDOW_SIDE_PX,
) -> PixelBox:
    """The driver's window of ``vehicle``, in frame pixels (see the module docstring)."""
    x0, y0, x1, y1 = _checked(vehicle)
    across, down = _fractions(view, drive_side, heading_x)
    w, h = x1 - x0, y1 - y0
    wx0, wx1 = x0 + across[0] * w, x0 + across[1] * w
    wy0, wy1 = y0 + down[0] * h, y0 + down[1] * h
    return _fit((wx0, wy0, wx1, wy1), frame_wh, min_side_px)


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
