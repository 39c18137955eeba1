"""The decider: turns per-frame scores into hits. A pure state machine; time is passed in.

Per ROI, a hit needs ``min_frames`` of the last ``window`` scores at or above ``score_on``.
After a hit the ROI is *latched*: no new hit until every score in the window has fallen below
``score_off`` (hysteresis: the driver put the phone down or drove away) **and** ``cooldown_s``
has passed since the hit. So one driver holding a phone through a red light is one alert.
Each hit carries the best-scoring frame seen in the window that confirmed it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DeciderParams:
    window: int = 8
    min_frames: int = 4
    score_on: float = 0.7
    score_off: float = 0.4
    cooldown_s: float = 10.0

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError("window must be >= 1")
        if not 1 <= self.min_frames <= self.window:
            raise ValueError("min_frames must be within 1..window")
        if not 0.0 <= self.score_off <= self.score_on <= 1.0:
            raise ValueError("need 0 <= score_off <= score_on <= 1")
        if self.cooldown_s < 0:
            raise ValueError("cooldown_s must be >= 0")


@dataclass(frozen=True, slots=True)
class Hit(Generic[T]):
    """A confirmed phone-in-hand for one ROI."""

    roi_id: str
    score: float
    """The best score in the confirming window."""
    frames_over: int
    """How many of the last ``window`` frames were at or above ``score_on``."""
    window: int
    t_mono_s: float
    """When the hit was confirmed (monotonic)."""
    best: T
    """What was passed with the best score (the frame and its crop, in the pipeline)."""


class RoiDecider(Generic[T]):
    def __init__(self, roi_id: str, params: DeciderParams) -> None:
        self.roi_id = roi_id
        self.params = params
        self._scores: deque[float] = deque(maxlen=params.window)
        self._items: deque[T] = deque(maxlen=params.window)
        self._latched = False
        self._last_hit_s: float | None = None

    @property
    def is_latched(self) -> bool:
        return self._latched

    def update(self, score: float, now_s: float, item: T) -> Hit[T] | None:
        p = self.params
        self._scores.append(score)
        self._items.append(item)
        if self._latched:
            if all(s < p.score_off for s in self._scores) and len(self._scores) == p.window:
                self._latched = False
            return None
        over = sum(1 for s in self._scores if s >= p.score_on)
        if over < p.min_frames:
            return None
        if self._last_hit_s is not None and now_s - self._last_hit_s < p.cooldown_s:
            return None
        best_i = max(range(len(self._scores)), key=self._scores.__getitem__)
        hit = Hit(
            roi_id=self.roi_id,
            score=self._scores[best_i],
            frames_over=over,
            window=p.window,
            t_mono_s=now_s,
            best=self._items[best_i],
        )
        self._latched = True
        self._last_hit_s = now_s
        return hit

    def reset(self) -> None:
        self._scores.clear()
        self._items.clear()
        self._latched = False


class Decider(Generic[T]):
    """One :class:`RoiDecider` per ROI."""

    def __init__(self, roi_ids: list[str], params: DeciderParams) -> None:
        self._by_roi = {r: RoiDecider[T](r, params) for r in roi_ids}

    def update(self, scores: dict[str, float], now_s: float, items: dict[str, T]) -> list[Hit[T]]:
        hits = []
        for roi_id, score in scores.items():
            hit = self._by_roi[roi_id].update(score, now_s, items[roi_id])
            if hit is not None:
                hits.append(hit)
        return hits

    def __getitem__(self, roi_id: str) -> RoiDecider[T]:
        return self._by_roi[roi_id]
