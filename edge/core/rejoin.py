"""Rejoining a vehicle pass the detector lost for a few seconds. Pure: stdlib only.

The tracker ends a track that misses ``max_missed`` detection rounds in a row. On a patrol car
the detector finds a far or partly hidden vehicle on only some rounds, so one vehicle's pass
can break into several tracks seconds apart, and each would alert again. :class:`PassMemory`
keeps each ended pass for ``hold_s`` with its last *sighting* (the last detected box, when,
its velocity, heading and colour), and a new confirmed track continues a held pass when it is
where that vehicle can be by now:

* **where**: its box overlaps the held box moved on at its last velocity (``iou_min``, the
  short-gap rule), or its centre lies within a distance that grows with the time since the
  sighting, ``(drift_base + drift_per_s * dt)`` box sizes (``sqrt(w * h)`` of the sighting),
  of either the last seen centre (the vehicle slowed or the velocity was noise, common on a
  small box) or the centre moved on at the last velocity (it kept going);
* **size**: ``sqrt(area)`` within a ratio ``1 + growth_base + growth_per_s * dt`` of the
  sighting's or of the box moved on at its velocity (a car we close on grows, one that pulls
  away shrinks; a van is not a hatchback);
* **heading**: not the opposite way across the frame (when both are known);
* **lane side** (a dash camera, ``axis_px``): not from one side of the straight-ahead column to
  the other: vehicles ahead keep to their lanes, and image motion carried on for seconds
  would take a car pulling away across the horizon. (A lane change while lost is then a
  second pass: a repeat alert, never a driver missed.)
* **colour**: the mean colour of the middle of the box within ``colour_max`` (Euclidean, on
  0..255 channels) of the sighting's, when both are known: the cue that keeps a *second*
  car that takes the first one's place from being swallowed by its pass.

A pass whose vehicle left the frame (its last box mostly outside) is never held: whatever
comes in next is another vehicle. When several held passes fit, the nearest wins (the smaller
of its distance over the allowed distance and ``1 - IoU``); a held pass is claimed at most
once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge.core.errors import PhonewatchError
from edge.core.vehicle import Box, iou

Colour = tuple[float, float, float]


class RejoinError(PhonewatchError, ValueError):
    """A rejoin setting or sighting is malformed."""


@dataclass(frozen=True, slots=True)
class Sighting:
    """A vehicle as last detected."""

    box: Box
    t_s: float
    velocity: Box = (0.0, 0.0, 0.0, 0.0)
    """Per-coordinate velocity of the box, pixels per second (the tracker's)."""
    heading_x: int = 0
    colour: Colour | None = None
    """Mean colour of the middle of the box (any fixed channel order), or None."""

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.box
        if not all(math.isfinite(v) for v in (*self.box, *self.velocity, self.t_s)):
            raise RejoinError(f"sighting must be finite, got {self.box!r} at {self.t_s!r}")
        if not (x1 > x0 and y1 > y0):
            raise RejoinError(f"sighting box needs x1 > x0 and y1 > y0, got {self.box!r}")

    @property
    def size(self) -> float:
        return _size(self.box)

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2.0, (y0 + y1) / 2.0

    def moved(self, dt: float) -> Box:
        """The box ``dt`` seconds on at the last velocity (size kept at least a quarter)."""
        (x0, y0, x1, y1), (v0, v1, v2, v3) = self.box, self.velocity
        w, h = x1 - x0, y1 - y0
        cx = (x0 + x1) / 2.0 + (v0 + v2) / 2.0 * dt
        cy = (y0 + y1) / 2.0 + (v1 + v3) / 2.0 * dt
        pw = max(w + (v2 - v0) * dt, w / 4.0, 1.0)
        ph = max(h + (v3 - v1) * dt, h / 4.0, 1.0)
        return cx - pw / 2.0, cy - ph / 2.0, cx + pw / 2.0, cy + ph / 2.0


@dataclass(frozen=True, slots=True)
class RejoinParams:
    hold_s: float = 5.0
    """How long an ended pass may still go on."""
    iou_min: float = 0.3
    """Overlap with the held box moved on at its velocity that rejoins at once."""
    extrapolate_max_s: float = 1.0
    """The last velocity is carried on for at most this long: a vehicle's motion in the image
    is not steady for longer (one that pulls away slows towards the horizon and never
    crosses it); beyond it only the allowed distance grows."""
    drift_base: float = 0.5
    """Allowed distance of the centres, in box sizes, right after the sighting."""
    drift_per_s: float = 0.3
    """... and its growth per second since the sighting."""
    growth_base: float = 0.25
    """Allowed size ratio above 1 right after the sighting."""
    growth_per_s: float = 0.25
    """... and its growth per second since the sighting."""
    colour_max: float = 30.0
    """Largest colour distance (0..255 channels) for the same vehicle."""

    def __post_init__(self) -> None:
        for name in (
            "hold_s",
            "extrapolate_max_s",
            "drift_base",
            "drift_per_s",
            "growth_base",
            "growth_per_s",
        ):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise RejoinError(f"{name} must be a number >= 0, got {v}")
        if not 0.0 < self.iou_min <= 1.0:
            raise RejoinError(f"iou_min must be within (0, 1], got {self.iou_min}")
        if not (math.isfinite(self.colour_max) and self.colour_max > 0):
            raise RejoinError(f"colour_max must be a number > 0, got {self.colour_max}")


class PassMemory:
    """Ended passes held for ``hold_s``; see the module docstring."""

    def __init__(
        self,
        params: RejoinParams | None = None,
        *,
        frame_wh: tuple[int, int] | None = None,
        axis_px: float | None = None,
    ) -> None:
        self.params = params or RejoinParams()
        self.frame_wh = frame_wh
        self.axis_px = axis_px
        """A dash camera's straight-ahead column (pixels), or None (a roadside camera)."""
        self._held: dict[int, tuple[Sighting, float]] = {}

    def __contains__(self, pass_id: int) -> bool:
        return pass_id in self._held

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, pass_id: int, last: Sighting, t_end_s: float, end_box: Box) -> bool:
        """Keep an ended pass; False (not held: its vehicle left) when ``end_box``, where the
        track was when it ended, lies mostly outside the frame."""
        if self.frame_wh is not None and _inside_share(end_box, self.frame_wh) < 0.5:
            return False
        self._held[pass_id] = (last, t_end_s)
        return True

    def expire(self, now_s: float) -> list[int]:
        """The held passes whose time is up (they are over), forgotten now."""
        out = [p for p, (_, t_end) in self._held.items() if now_s - t_end >= self.params.hold_s]
        for p in out:
            del self._held[p]
        return out

    def drop_all(self) -> list[int]:
        """Every held pass (the end of a run), forgotten."""
        out = list(self._held)
        self._held.clear()
        return out

    def claim(self, new: Sighting) -> int | None:
        """The held pass that ``new`` (a just-confirmed track, at ``new.t_s``) continues, or
        None; a claimed pass is no longer held."""
        best: tuple[float, int] | None = None
        for pass_id, (last, t_end) in self._held.items():
            if new.t_s - t_end >= self.params.hold_s:
                continue
            d = self.distance(last, new)
            if d is not None and (best is None or d < best[0]):
                best = (d, pass_id)
        if best is None:
            return None
        del self._held[best[1]]
        return best[1]

    def distance(self, last: Sighting, new: Sighting) -> float | None:
        """How far ``new`` is from where ``last``'s vehicle can be, as a share of the allowed
        distance (0 fits perfectly, below 1 fits), or None when it cannot be that vehicle."""
        p = self.params
        dt = max(0.0, new.t_s - last.t_s)
        if last.heading_x * new.heading_x < 0:
            return None
        if (
            self.axis_px is not None
            and _side(last.box, self.axis_px) * _side(new.box, self.axis_px) < 0
        ):
            return None
        is_other_colour = (
            last.colour is not None
            and new.colour is not None
            and math.dist(last.colour, new.colour) > p.colour_max
        )
        if is_other_colour:
            return None
        moved = last.moved(min(dt, p.extrapolate_max_s))
        ratio = min(_ratio(new.size, last.size), _ratio(new.size, _size(moved)))
        if ratio > 1.0 + p.growth_base + p.growth_per_s * dt:
            return None
        allowed = last.size * (p.drift_base + p.drift_per_s * dt)
        cx, cy = (moved[0] + moved[2]) / 2.0, (moved[1] + moved[3]) / 2.0
        off = min(math.dist(new.centre, last.centre), math.dist(new.centre, (cx, cy)))
        d = off / allowed if allowed > 0 else math.inf
        overlap = iou(new.box, moved)
        if overlap >= p.iou_min:
            return min(d, 1.0 - overlap)
        return d if d <= 1.0 else None


def _side(box: Box, axis_px: float) -> int:
    """-1 wholly left of the column, +1 wholly right, 0 across it."""
    return -1 if box[2] <= axis_px else 1 if box[0] >= axis_px else 0


def _size(box: Box) -> float:
    return math.sqrt((box[2] - box[0]) * (box[3] - box[1]))


def _ratio(a: float, b: float) -> float:
    return max(a / b, b / a)


def _inside_share(box: Box, frame_wh: tuple[int, int]) -> float:
    x0, y0, x1, y1 = box
    w, h = frame_wh
    area = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    if area <= 0:
        return 0.0
    ix = max(0.0, min(x1, w) - max(x0, 0.0))
    iy = max(0.0, min(y1, h) - max(y0, 0.0))
    return ix * iy / area
