"""Multi-object tracking of vehicle boxes: one id per vehicle pass. Pure: stdlib and numpy.

The detector runs a few times a second; the classifier runs on every frame. So the tracker has
two calls:

* :meth:`Tracker.update` on a frame with detections: every track is first predicted to the
  frame's time, then tracks and detections are paired by IoU with an optimal assignment
  (:func:`assign`, the Hungarian method; pairs below ``iou_min`` are never paired). A paired
  track takes the detection's box and refines its velocity; an unpaired detection starts a new
  tentative track; an unpaired track has *missed* one detection round and coasts on its
  prediction.
* :meth:`Tracker.predict` on a frame without detections: every track's box is moved by its
  constant velocity to the frame's time, so the driver's window follows the car between
  detections. Predicting changes no lifecycle state.

Lifecycle: a track is *tentative* until it has been paired with ``min_hits`` detections,
then *confirmed*. A tentative track survives ``max_missed_tentative`` rounds in a row without
a detection (default 1), so a one-off false detection is gone after two rounds and never
confirms; a confirmed track survives ``max_missed`` rounds in a row (occlusion, a missed
detection) and ends on the next one, or as soon as its predicted box has left the frame.
Every ended track, confirmed or not, is reported once in :attr:`TrackUpdate.ended` so the
caller can close the vehicle pass and free its state.
Track ids count up from 1 per :class:`Tracker` (per unit run) and are never reused.

The label (car, van, ...) is the majority of the detections' labels; a tie goes to the label
seen most recently. :meth:`Tracker.counts` gives confirmed tracks started and ended per
minute for the heartbeat.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edge.core.errors import PhonewatchError
from edge.core.vehicle import Box, iou

_INFEASIBLE = 1e6
"""Cost of a pair below ``iou_min``: larger than any sum of real costs (each at most 1), so
the assignment first pairs as many feasible pairs as it can; infeasible pairs are dropped."""


MIN_SCALE = 0.25
"""A coasting track's predicted box keeps at least this share of its last seen width and
height."""


class TrackError(PhonewatchError, ValueError):
    """A tracker input is malformed (a degenerate box, time running backwards)."""


class VehicleLike(Protocol):
    """One detection: what the detector's ``VehicleBox`` already has."""

    @property
    def box(self) -> Box: ...

    @property
    def score(self) -> float: ...

    @property
    def label(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Detected:
    """A plain detection (tests, replays); any object with ``box``, ``score``, ``label`` fits."""

    box: Box
    score: float
    label: str = "car"


@dataclass(frozen=True, slots=True)
class TrackerParams:
    iou_min: float = 0.2
    """Lowest IoU between a track's predicted box and a detection for them to be paired."""
    min_hits: int = 3
    """Detections a new track must be paired with to be confirmed."""
    max_missed: int = 3
    """Detection rounds in a row a confirmed track may go unpaired (coasting) before it ends."""
    max_missed_tentative: int = 1
    """The same for a tentative track: 0 drops it on its first miss (a one-off false
    detection goes at once, but so does a real car the detector missed once while its track
    was young, which then starts again and confirms later)."""
    velocity_smoothing: float = 0.5
    """Weight of the newest measured velocity (1: no smoothing, noisy boxes jitter the
    prediction; lower: slow to follow a car that brakes)."""
    heading_min_widths_per_s: float = 0.1
    """Horizontal speed, in box widths per second, above which the heading is updated; below
    it (a car waiting at the line) the last heading is kept."""

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_min <= 1.0:
            raise TrackError(f"iou_min must be within (0, 1], got {self.iou_min}")
        if self.min_hits < 1:
            raise TrackError(f"min_hits must be >= 1, got {self.min_hits}")
        if self.max_missed < 0:
            raise TrackError(f"max_missed must be >= 0, got {self.max_missed}")
        if self.max_missed_tentative < 0:
            raise TrackError(f"max_missed_tentative must be >= 0, got {self.max_missed_tentative}")
        if not 0.0 < self.velocity_smoothing <= 1.0:
            raise TrackError(
                f"velocity_smoothing must be within (0, 1], got {self.velocity_smoothing}"
            )
        if self.heading_min_widths_per_s < 0:
            raise TrackError("heading_min_widths_per_s must be >= 0")


@dataclass(frozen=True, slots=True)
class TrackState:
    """One track at one time, as the caller sees it."""

    track_id: int
    box: Box
    """The detection's box on a detection frame, else the prediction at ``t_s``."""
    t_s: float
    score: float
    """The last paired detection's score."""
    label: str
    """The majority of the paired detections' labels."""
    is_confirmed: bool
    is_coasting: bool
    """True when ``box`` is a prediction (no detection at ``t_s``)."""
    hits: int
    """Detections paired over the track's life."""
    missed: int
    """Detection rounds missed in a row."""
    velocity: Box
    """Per-coordinate velocity of the box, pixels per second."""
    heading_x: int
    """+1 moving right in the frame, -1 moving left, 0 not yet known."""
    t_first_s: float


@dataclass(frozen=True, slots=True)
class TrackUpdate:
    tracks: list[TrackState]
    """Every live track (tentative ones too; ``is_confirmed`` tells them apart)."""
    started: list[TrackState]
    """Tracks confirmed by this update."""
    ended: list[TrackState]
    """Tracks that ended by this update, each reported once, with its last state."""

    @property
    def confirmed(self) -> list[TrackState]:
        return [t for t in self.tracks if t.is_confirmed]


@dataclass(frozen=True, slots=True)
class TrackCounts:
    started_per_min: float | None
    """Confirmed tracks started in the last minute; None until a minute has passed since the
    tracker's first frame (a rate over less would mislead)."""
    ended_per_min: float | None
    """Confirmed tracks ended in the last minute; None likewise."""
    live: int
    """Confirmed tracks alive now."""
    started_total: int
    ended_total: int

    def heartbeat(self) -> dict[str, float | int | None]:
        """The heartbeat's ``vehicles`` figures: ``tracks_per_min`` and ``active``."""
        return {"tracks_per_min": self.started_per_min, "active": self.live}


@dataclass(slots=True)
class _Track:
    track_id: int
    box: Box
    """Box at ``t_box_s`` (the last detection, or the last prediction before it)."""
    t_box_s: float
    t_first_s: float
    score: float
    velocity: Box = (0.0, 0.0, 0.0, 0.0)
    hits: int = 1
    missed: int = 0
    is_confirmed: bool = False
    heading_x: int = 0
    votes: Counter[str] = field(default_factory=Counter)
    last_label: str = ""

    def at(self, t_s: float) -> Box:
        """The box moved on to ``t_s``: its centre at the centre's velocity, its size at the
        size's, never below :data:`MIN_SCALE` of the last seen size (a receding car coasting
        for long would otherwise shrink through zero and turn inside out)."""
        dt = t_s - self.t_box_s
        (x0, y0, x1, y1), (v0, v1, v2, v3) = self.box, self.velocity
        w, h = x1 - x0, y1 - y0
        cx = (x0 + x1) / 2 + (v0 + v2) / 2 * dt
        cy = (y0 + y1) / 2 + (v1 + v3) / 2 * dt
        pw = max(w + (v2 - v0) * dt, w * MIN_SCALE, 1.0)
        ph = max(h + (v3 - v1) * dt, h * MIN_SCALE, 1.0)
        return cx - pw / 2, cy - ph / 2, cx + pw / 2, cy + ph / 2

    def label(self) -> str:
        top = max(self.votes.values())
        if self.votes[self.last_label] == top:
            return self.last_label
        return next(lab for lab, n in self.votes.items() if n == top)

    def state(self, t_s: float, *, is_coasting: bool) -> TrackState:
        return TrackState(
            track_id=self.track_id,
            box=self.at(t_s),
            t_s=t_s,
            score=self.score,
            label=self.label(),
            is_confirmed=self.is_confirmed,
            is_coasting=is_coasting,
            hits=self.hits,
            missed=self.missed,
            velocity=self.velocity,
            heading_x=self.heading_x,
            t_first_s=self.t_first_s,
        )


def assign(cost: Sequence[Sequence[float]]) -> list[tuple[int, int]]:
    """The minimum-cost pairing of rows to columns (Hungarian method, O(n^2 m)).

    ``cost`` is ``n x m`` (either may be larger); every row is paired when ``n <= m``, else
    every column. Returns ``(row, col)`` pairs sorted by row.
    """
    n = len(cost)
    m = len(cost[0]) if n else 0
    if n == 0 or m == 0:
        return []
    if n > m:
        flipped = [[cost[i][j] for i in range(n)] for j in range(m)]
        return sorted((i, j) for j, i in _assign_rows(flipped))
    return sorted(_assign_rows([list(r) for r in cost]))


def _assign_rows(cost: list[list[float]]) -> list[tuple[int, int]]:
    """Hungarian method with potentials for ``n <= m`` (1-based internally)."""
    n, m = len(cost), len(cost[0])
    u = [0.0] * (n + 1)
    v = [0.0] * (m + 1)
    owner = [0] * (m + 1)  # owner[j]: the row paired with column j (0: none)
    for i in range(1, n + 1):
        _augment(cost, i, u, v, owner)
    return [(owner[j] - 1, j - 1) for j in range(1, m + 1) if owner[j]]


def _augment(
    cost: list[list[float]], row: int, u: list[float], v: list[float], owner: list[int]
) -> None:
    """Pair ``row`` by one shortest augmenting path, updating the potentials."""
    m = len(v) - 1
    owner[0] = row
    way = [0] * (m + 1)
    minv = [math.inf] * (m + 1)
    used = [False] * (m + 1)
    j0 = 0
    while owner[j0]:
        used[j0] = True
        i0 = owner[j0]
        delta, j1 = math.inf, 0
        for j in range(1, m + 1):
            if used[j]:
                continue
            cur = cost[i0 - 1][j - 1] - u[i0] - v[j]
            if cur < minv[j]:
                minv[j], way[j] = cur, j0
            if minv[j] < delta:
                delta, j1 = minv[j], j
        for j in range(m + 1):
            if used[j]:
                u[owner[j]] += delta
                v[j] -= delta
            else:
                minv[j] -= delta
        j0 = j1
    while j0:
        j1 = way[j0]
        owner[j0] = owner[j1]
        j0 = j1


class Tracker:
    """Tracks vehicle boxes across frames; see the module docstring for the rules.

    ``frame_wh`` (pixels), when given, ends a track as soon as its predicted box lies wholly
    outside the frame, instead of letting it coast off-screen for ``max_missed`` rounds.
    """

    COUNTS_WINDOW_S = 60.0

    def __init__(
        self, params: TrackerParams | None = None, *, frame_wh: tuple[int, int] | None = None
    ) -> None:
        self.params = params or TrackerParams()
        self._frame_wh = frame_wh
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._t_s: float | None = None
        self._t_first_s: float | None = None
        self._started_at: deque[float] = deque()
        self._ended_at: deque[float] = deque()
        self._started_total = 0
        self._ended_total = 0
        self._lock = threading.Lock()  # counts() runs on the heartbeat's thread

    @property
    def tracks(self) -> list[TrackState]:
        """Every live track at the time of the last call."""
        t = self._t_s if self._t_s is not None else 0.0
        return [tr.state(t, is_coasting=t > tr.t_box_s) for tr in self._tracks]

    def predict(self, t_s: float) -> list[TrackState]:
        """Every live track's box moved to ``t_s`` (a frame without detections)."""
        self._advance(t_s)
        return [tr.state(t_s, is_coasting=t_s > tr.t_box_s) for tr in self._tracks]

    def update(self, t_s: float, detections: Iterable[VehicleLike]) -> TrackUpdate:
        """Pair this frame's detections with the tracks predicted to ``t_s``.

        A malformed detection raises :class:`TrackError` before any state changes.
        """
        dets = [_checked(i, d) for i, d in enumerate(detections)]
        self._advance(t_s)
        predicted = [tr.at(t_s) for tr in self._tracks]
        pairs = self._pair(predicted, [d.box for d in dets])
        started: list[TrackState] = []
        for ti, di in pairs.items():
            if self._hit(self._tracks[ti], dets[di], t_s):
                started.append(self._tracks[ti].state(t_s, is_coasting=False))
        ended: list[TrackState] = []
        keep: list[_Track] = []
        for ti, tr in enumerate(self._tracks):
            if ti not in pairs:
                tr.missed += 1
                if self._is_over(tr, predicted[ti]):
                    ended.append(self._end(tr, t_s))
                    continue
            keep.append(tr)
        paired_dets = set(pairs.values())
        for di, d in enumerate(dets):
            if di not in paired_dets:
                tr = self._birth(d, t_s)
                keep.append(tr)
                if tr.is_confirmed:
                    started.append(tr.state(t_s, is_coasting=False))
        self._tracks = keep
        states = [tr.state(t_s, is_coasting=t_s > tr.t_box_s) for tr in keep]
        return TrackUpdate(tracks=states, started=started, ended=ended)

    def finish(self, t_s: float) -> list[TrackState]:
        """End every live track (the end of a run), so the caller closes every pass."""
        self._advance(t_s)
        ended = [self._end(tr, t_s) for tr in self._tracks]
        self._tracks = []
        return ended

    def counts(self, now_s: float) -> TrackCounts:
        """Confirmed tracks started and ended in the last minute, for the heartbeat. Safe to
        call from another thread (the heartbeat's) while the stage thread updates."""
        with self._lock:
            cut = now_s - self.COUNTS_WINDOW_S
            started = sum(1 for t in self._started_at if t > cut)
            ended = sum(1 for t in self._ended_at if t > cut)
            live = sum(1 for tr in self._tracks if tr.is_confirmed)
        is_full = self._t_first_s is not None and now_s - self._t_first_s >= self.COUNTS_WINDOW_S
        return TrackCounts(
            started_per_min=float(started) if is_full else None,
            ended_per_min=float(ended) if is_full else None,
            live=live,
            started_total=self._started_total,
            ended_total=self._ended_total,
        )

    def _advance(self, t_s: float) -> None:
        if not math.isfinite(t_s):
            raise TrackError(f"time must be a finite number of seconds, got {t_s}")
        if self._t_s is not None and t_s < self._t_s:
            raise TrackError(f"time ran backwards: {t_s} after {self._t_s}")
        if self._t_first_s is None:
            self._t_first_s = t_s
        self._t_s = t_s

    def _pair(self, predicted: list[Box], boxes: list[Box]) -> dict[int, int]:
        """Track index -> detection index, by optimal assignment on ``1 - IoU``.

        Only pairs at or above ``iou_min`` may be made, so the problem splits into groups of
        tracks and detections that overlap one another (usually one or two vehicles); each is
        solved apart, which gives the same pairing as solving the whole and costs far less.
        """
        if not predicted or not boxes:
            return {}
        iou_min = self.params.iou_min
        feasible: dict[int, dict[int, float]] = {}
        for ti, p in enumerate(predicted):
            for di, b in enumerate(boxes):
                o = iou(p, b)
                if o >= iou_min:
                    feasible.setdefault(ti, {})[di] = o
        pairs: dict[int, int] = {}
        for rows, cols in _groups(feasible):
            if len(rows) == 1 and len(cols) == 1:
                pairs[rows[0]] = cols[0]
                continue
            cost = [[1.0 - feasible[r].get(c, 1.0 - _INFEASIBLE) for c in cols] for r in rows]
            for i, j in assign(cost):
                if cols[j] in feasible[rows[i]]:
                    pairs[rows[i]] = cols[j]
        return pairs

    def _hit(self, tr: _Track, det: VehicleLike, t_s: float) -> bool:
        """Take a paired detection; True when this confirms the track."""
        p = self.params
        dt = t_s - tr.t_box_s
        if dt > 0:
            weight = 1.0 if tr.hits == 1 else p.velocity_smoothing
            tr.velocity = _blend(tr.velocity, det.box, tr.box, dt, weight)
        tr.box, tr.t_box_s, tr.score = det.box, t_s, float(det.score)
        tr.hits += 1
        tr.missed = 0
        tr.votes[det.label] += 1
        tr.last_label = det.label
        vx = (tr.velocity[0] + tr.velocity[2]) / 2.0
        width = det.box[2] - det.box[0]
        if vx and abs(vx) >= p.heading_min_widths_per_s * width:
            tr.heading_x = 1 if vx > 0 else -1
        if not tr.is_confirmed and tr.hits >= p.min_hits:
            tr.is_confirmed = True
            self._count_start(t_s)
            return True
        return False

    def _birth(self, det: VehicleLike, t_s: float) -> _Track:
        tr = _Track(
            track_id=self._next_id,
            box=det.box,
            t_box_s=t_s,
            t_first_s=t_s,
            score=float(det.score),
            votes=Counter({det.label: 1}),
            last_label=det.label,
        )
        self._next_id += 1
        if self.params.min_hits <= 1:
            tr.is_confirmed = True
            self._count_start(t_s)
        return tr

    def _is_over(self, tr: _Track, box: Box) -> bool:
        limit = self.params.max_missed if tr.is_confirmed else self.params.max_missed_tentative
        if tr.missed > limit:
            return True
        if self._frame_wh is None:
            return False
        w, h = self._frame_wh
        return box[2] <= 0 or box[3] <= 0 or box[0] >= w or box[1] >= h

    def _count_start(self, t_s: float) -> None:
        with self._lock:
            _append_recent(self._started_at, t_s, self.COUNTS_WINDOW_S)
            self._started_total += 1

    def _end(self, tr: _Track, t_s: float) -> TrackState:
        if tr.is_confirmed:
            with self._lock:
                _append_recent(self._ended_at, t_s, self.COUNTS_WINDOW_S)
                self._ended_total += 1
        return tr.state(t_s, is_coasting=t_s > tr.t_box_s)


def _groups(feasible: dict[int, dict[int, float]]) -> list[tuple[list[int], list[int]]]:
    """The connected groups of a bipartite graph (row -> {col: weight}), as sorted lists."""
    by_col: dict[int, list[int]] = {}
    for r, row in feasible.items():
        for c in row:
            by_col.setdefault(c, []).append(r)
    seen: set[int] = set()
    out = []
    for start in feasible:
        if start in seen:
            continue
        rows, cols, todo = {start}, set[int](), [start]
        seen.add(start)
        while todo:
            for c in feasible[todo.pop()]:
                if c in cols:
                    continue
                cols.add(c)
                for r in by_col[c]:
                    if r not in seen:
                        seen.add(r)
                        rows.add(r)
                        todo.append(r)
        out.append((sorted(rows), sorted(cols)))
    return out


def _append_recent(times: deque[float], t_s: float, keep_s: float) -> None:
    """Append ``t_s`` and drop the times older than ``keep_s`` before it."""
    times.append(t_s)
    while times and times[0] <= t_s - keep_s:
        times.popleft()


def _blend(old: Box, new_box: Box, prev_box: Box, dt: float, weight: float) -> Box:
    """``weight`` * the velocity measured from ``prev_box`` to ``new_box`` + the rest of ``old``."""
    v = [
        weight * (n - p) / dt + (1.0 - weight) * o
        for o, n, p in zip(old, new_box, prev_box, strict=True)
    ]
    return (v[0], v[1], v[2], v[3])


def _checked(index: int, det: VehicleLike) -> Detected:
    """The detection as plain floats (a detector may hand numpy scalars), or TrackError."""
    box = det.box
    if len(box) != 4 or not all(math.isfinite(c) for c in box):
        raise TrackError(f"detection {index}: box must be 4 finite numbers, got {box!r}")
    if not (box[2] > box[0] and box[3] > box[1]):
        raise TrackError(f"detection {index}: box needs x1 > x0 and y1 > y0, got {box!r}")
    if not math.isfinite(det.score):
        raise TrackError(f"detection {index}: score must be finite, got {det.score!r}")
    x0, y0, x1, y1 = (float(c) for c in box)
    return Detected(box=(x0, y0, x1, y1), score=float(det.score), label=str(det.label))
