"""Per-vehicle decisions: one alert per vehicle pass, with the pass's best frame. Pure.

Each track gets its own :class:`edge.core.decider.RoiDecider` (the fixed-ROI rules, unchanged):
a track is *confirmed* when ``min_frames`` of its last ``window`` scored frames reach
``score_on``. After that the track never raises again, however long the driver holds the
phone: **one alert per vehicle pass**. A track that ends unconfirmed raises nothing.

When the alert goes: an officer wants it at once, but the best frame is what goes to court,
and the best frame may come after confirmation (the car comes nearer, turns its window to the
camera). So a confirmed pass is *held* for up to ``best_frame_wait_s`` while its frames are
still ranked, and released as soon as that time has passed **or** the track ends, whichever is
first; :meth:`TrackDecider.drain` releases what is held at the end of a run. With
``best_frame_wait_s = 0`` the alert goes on the confirming frame.

The evidence frame is the pass's best: first any frame whose track was not *lost* (a track
that missed its latest detection round is carried on a guess, and its window may show another
vehicle's driver), then the highest score, then (a tie, common with int8 scores) the larger
window box (a nearer, more legible driver), then the sharper frame (a number the caller
computes, e.g. the variance of the Laplacian; higher is sharper). On a full tie the earlier
frame stays. The alert carries the track id, the vehicle box and the window
box on that frame.

Zones (optional): ``Roi`` rectangles or polygons, in frame fractions as in ``[[roi]]``. A
track's frame counts only while its anchor point (the box's bottom centre, where the wheels
meet the road, or its centre) lies inside a zone; frames outside are skipped, neither for nor
against confirmation. The alert's ``roi_id`` is the zone of its best frame (``vehicle`` with
no zones).

Feed the decider only the tracker's *confirmed* tracks: a tentative track lives for a dozen
frames or so between detection rounds, enough for N-of-M on a false detection. Pass every
ended track id so its state is freed; ids must not be reused (the tracker never does).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

import numpy as np

from edge.core.decider import DeciderParams, Hit, RoiDecider
from edge.core.errors import PhonewatchError
from edge.core.roi import Roi, points_in_polygon
from edge.core.vehicle import Box

T = TypeVar("T")

Anchor = Literal["bottom_centre", "centre"]
Release = Literal["wait", "ended", "drain"]

NO_ZONE = "vehicle"
"""The ``roi_id`` of an alert when no zones are configured."""


class TrackDecisionError(PhonewatchError, ValueError):
    """Per-vehicle decision input is malformed (a bad score or box, zones without a frame)."""


@dataclass(frozen=True, slots=True)
class TrackDecisionParams:
    decider: DeciderParams = field(default_factory=DeciderParams)
    """N-of-M on the track's frames (``cooldown_s`` plays no part: one alert per pass)."""
    best_frame_wait_s: float = 2.0
    """How long a confirmed pass is held for a better frame before its alert goes (ends
    sooner when the track ends). 0: alert on the confirming frame."""
    zone_anchor: Anchor = "bottom_centre"
    """The point of the vehicle box that must lie inside a zone."""
    lost_frames_count: bool = True
    """Whether a frame of a *lost* track (``TrackFrame.is_lost``: its box a guess carried on
    from an older detection) counts towards N-of-M. False: only frames whose box comes from
    a detection round that found the vehicle can confirm a pass (a guess may have drifted
    onto another vehicle's driver, or off the vehicle); such frames still rank as evidence."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.best_frame_wait_s) and self.best_frame_wait_s >= 0):
            raise TrackDecisionError(
                f"best_frame_wait_s must be a number >= 0, got {self.best_frame_wait_s}"
            )
        if self.zone_anchor not in ("bottom_centre", "centre"):
            raise TrackDecisionError(
                f"zone_anchor must be bottom_centre or centre, got {self.zone_anchor!r}"
            )


@dataclass(frozen=True, slots=True)
class TrackFrame(Generic[T]):
    """One scored frame of one track."""

    track_id: int
    score: float
    """The classifier's P(phone in hand) on the window crop."""
    vehicle_box: Box
    window_box: Box
    item: T
    """What the alert needs of this frame (the ``Frame``, in the pipeline)."""
    sharpness: float = 0.0
    """Higher is sharper; only breaks ties of score and window size."""
    label: str = ""
    """The track's vehicle label (car, van ...), carried to the alert."""
    is_lost: bool = False
    """The track missed its latest detection round: its box is a guess carried on from an
    older detection and may no longer hold the vehicle. Such a frame still counts for the
    decision but is evidence only when the pass has no other frame."""


@dataclass(frozen=True, slots=True)
class TrackHit(Generic[T]):
    """One vehicle pass confirmed: the alert, with the pass's best frame.

    ``roi_id``, ``score``, ``frames_over``, ``window``, ``t_mono_s`` and ``best`` mean what
    they mean on :class:`edge.core.decider.Hit`, so the evidence path can take either.
    """

    roi_id: str
    """The zone of the best frame, or :data:`NO_ZONE`."""
    track_id: int
    score: float
    """The best frame's score."""
    frames_over: int
    window: int
    t_mono_s: float
    """When the pass was confirmed."""
    t_release_s: float
    """When the alert was let go (confirmation + at most ``best_frame_wait_s``)."""
    released_by: Release
    """``wait`` (the wait ran out), ``ended`` (the track ended first) or ``drain``."""
    best: T
    vehicle_box: Box
    window_box: Box
    sharpness: float
    label: str
    frames: int
    """The track's frames that counted (inside a zone), up to the release."""


class _Pass(Generic[T]):
    __slots__ = ("best", "best_zone", "decider", "frames", "hit", "is_sent")

    def __init__(self, track_id: int, params: DeciderParams) -> None:
        self.decider: RoiDecider[TrackFrame[T]] | None = RoiDecider(str(track_id), params)
        self.best: TrackFrame[T] | None = None
        self.best_zone = NO_ZONE
        self.hit: Hit[TrackFrame[T]] | None = None
        self.is_sent = False
        self.frames = 0


def rank(f: TrackFrame[T]) -> tuple[bool, float, float, float]:
    """The evidence order: a frame whose track is not lost, then score, then window area,
    then sharpness (higher is better)."""
    b = f.window_box
    return (not f.is_lost, f.score, (b[2] - b[0]) * (b[3] - b[1]), f.sharpness)


class TrackDecider(Generic[T]):
    """One decision per vehicle pass; see the module docstring."""

    def __init__(
        self, params: TrackDecisionParams | None = None, *, zones: Sequence[Roi] = ()
    ) -> None:
        self.params = params or TrackDecisionParams()
        self.zones = tuple(zones)
        self._passes: dict[int, _Pass[T]] = {}

    @property
    def live(self) -> int:
        """Tracks with state held (seen and not yet ended)."""
        return len(self._passes)

    def update(
        self,
        now_s: float,
        frames: Iterable[TrackFrame[T]],
        *,
        ended: Iterable[int] = (),
        frame_wh: tuple[int, int] | None = None,
    ) -> list[TrackHit[T]]:
        """Take this frame's scored tracks and the ids of tracks that ended; return the
        alerts released now (at most one per track over its life).

        ``frame_wh`` (pixels) is needed only with zones. Malformed input raises
        :class:`TrackDecisionError` before any state changes.
        """
        todo = [_checked(f) for f in frames]
        if self.zones and frame_wh is None:
            raise TrackDecisionError("zones are configured: update() needs frame_wh")
        for f in todo:
            self._take(f, now_s, frame_wh)
        out = [self._release(tid, p, now_s, "wait") for tid, p in self._due(now_s)]
        for tid in ended:
            p = self._passes.pop(tid, None)
            if p is not None and p.hit is not None and not p.is_sent:
                out.append(self._release(tid, p, now_s, "ended"))
        return out

    def drain(self, now_s: float) -> list[TrackHit[T]]:
        """Release every held alert and forget every pass (the end of a run)."""
        out = [
            self._release(tid, p, now_s, "drain")
            for tid, p in self._passes.items()
            if p.hit is not None and not p.is_sent
        ]
        self._passes.clear()
        return out

    def zone_of(self, box: Box, frame_wh: tuple[int, int]) -> str | None:
        """The first zone holding ``box``'s anchor point; ``NO_ZONE`` with no zones."""
        if not self.zones:
            return NO_ZONE
        w, h = frame_wh
        x = (box[0] + box[2]) / 2.0
        y = box[3] if self.params.zone_anchor == "bottom_centre" else (box[1] + box[3]) / 2.0
        px, py = np.array([x]), np.array([y])
        for z in self.zones:
            poly = np.array([(fx * w, fy * h) for fx, fy in z.points])
            if bool(points_in_polygon(px, py, poly)[0]):
                return z.id
        return None

    def _take(self, f: TrackFrame[T], now_s: float, frame_wh: tuple[int, int] | None) -> None:
        p = self._passes.get(f.track_id)
        if p is None:
            p = self._passes[f.track_id] = _Pass(f.track_id, self.params.decider)
        if p.is_sent:
            return
        zone = NO_ZONE if frame_wh is None else self.zone_of(f.vehicle_box, frame_wh)
        if zone is None:
            return  # outside every zone: this frame does not count
        p.frames += 1
        if p.best is None or rank(f) > rank(p.best):
            p.best, p.best_zone = f, zone
        if f.is_lost and not self.params.lost_frames_count:
            return  # a guessed box: neither for nor against confirmation
        if p.hit is None and p.decider is not None:
            p.hit = p.decider.update(f.score, now_s, f)

    def _due(self, now_s: float) -> list[tuple[int, _Pass[T]]]:
        wait = self.params.best_frame_wait_s
        return [
            (tid, p)
            for tid, p in self._passes.items()
            if p.hit is not None and not p.is_sent and now_s - p.hit.t_mono_s >= wait
        ]

    def _release(self, track_id: int, p: _Pass[T], now_s: float, why: Release) -> TrackHit[T]:
        hit, best = p.hit, p.best
        if hit is None or best is None:  # only confirmed passes reach here
            raise AssertionError(f"track {track_id} released unconfirmed")
        p.is_sent = True
        p.decider = None  # its frames are no longer needed; the pass stays until it ends
        return TrackHit(
            roi_id=p.best_zone,
            track_id=track_id,
            score=best.score,
            frames_over=hit.frames_over,
            window=hit.window,
            t_mono_s=hit.t_mono_s,
            t_release_s=now_s,
            released_by=why,
            best=best.item,
            vehicle_box=best.vehicle_box,
            window_box=best.window_box,
            sharpness=best.sharpness,
            label=best.label,
            frames=p.frames,
        )


def _checked(f: TrackFrame[T]) -> TrackFrame[T]:
    if not (math.isfinite(f.score) and 0.0 <= f.score <= 1.0):
        raise TrackDecisionError(f"track {f.track_id}: score must be within 0..1, got {f.score}")
    for name, b in (("vehicle_box", f.vehicle_box), ("window_box", f.window_box)):
        if len(b) != 4 or not all(math.isfinite(c) for c in b) or b[2] < b[0] or b[3] < b[1]:
            raise TrackDecisionError(f"track {f.track_id}: bad {name} {b!r}")
    if not math.isfinite(f.sharpness):
        raise TrackDecisionError(f"track {f.track_id}: sharpness must be finite")
    return f
