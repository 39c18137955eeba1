"""The vehicle stage of a pipeline: detect vehicles at their own rate, track them on every
frame, score each tracked vehicle's driver's window, decide once per vehicle pass.

It runs on the pipeline's own threads plus one of its own:

* **prep thread** (:meth:`VehicleStage.regions`, every frame): hands the frame to the detector
  when a detection is due, takes the detector's newest result if there is one and pairs it
  with the tracks (``Tracker.update``), else moves every track to the frame's time
  (``Tracker.predict``), and returns the driver's window of each *confirmed* track: the crops
  the classifier scores. Tracking costs well under a millisecond a frame (docs/vehicles.md).
* **detector thread**: runs ``detect()`` on the newest frame handed to it (a live unit: the
  classifier never waits for it). Its boxes are paired with the tracks on the first frame
  after they are ready, at that frame's time, so they lag by the detector's run time (about
  two frames at 30 fps here); the tracker's IoU pairing absorbs that at vehicle speeds.
  A ``lossless`` run (a file) detects in line instead, on exactly every due frame, so a run
  is repeatable and its ground-truth score does not depend on the machine's load.
* **inference thread** (:meth:`VehicleStage.decide`): feeds the window scores to the
  per-vehicle decider, which releases at most one alert per vehicle pass, with its best frame.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edge.app.stats import Series
from edge.core.errors import RoiError
from edge.core.frame import Frame
from edge.core.rejoin import PassMemory, RejoinParams, Sighting
from edge.core.roi import Roi
from edge.core.track_decider import TrackDecider, TrackDecisionParams, TrackFrame, TrackHit
from edge.core.tracker import Tracker, TrackerParams, TrackState
from edge.core.vehicle import Box, VehicleBox
from edge.core.window import WindowSpec

log = logging.getLogger(__name__)


class Detector(Protocol):
    def detect(self, image_bgr: np.ndarray) -> list[VehicleBox]: ...


@dataclass(frozen=True, slots=True)
class Region:
    """One confirmed track on one frame: what the classifier scores and the decider needs."""

    pass_id: int
    """The vehicle pass: the id of the pass's first track (a rejoined track keeps it)."""
    track: TrackState
    window: tuple[int, int, int, int]
    """The driver's window, ``(x0, y0, x1, y1)`` pixels of the inference image."""
    sharpness: float


@dataclass(slots=True)
class Vehicles:
    """A frame's confirmed tracks (their windows are what the classifier scores, in order)
    and the tracks that ended on it (their passes close)."""

    regions: list[Region]
    ended: list[int]

    def __iter__(self) -> Iterator[Region]:
        return iter(self.regions)


class VehicleStage:
    """Detector + tracker + window geometry + per-vehicle decisions for one camera."""

    def __init__(
        self,
        detector: Detector,
        *,
        every_s: float,
        window: WindowSpec,
        tracker: TrackerParams | None = None,
        decision: TrackDecisionParams | None = None,
        zones: Sequence[Roi] = (),
        lossless: bool = False,
        rejoin: RejoinParams | None = None,
    ) -> None:
        self.detector = detector
        self.every_s = every_s
        self.window = window
        self._tracker_params = tracker or TrackerParams()
        self.tracker = Tracker(self._tracker_params)
        """Made again with the frame size on the first frame (tracks that leave it end)."""
        self.decider: TrackDecider[Frame] = TrackDecider(decision, zones=zones)
        self.lossless = lossless
        self._frame_wh: tuple[int, int] | None = None
        self._last_due_s: float | None = None
        self._last_t_s: float | None = None
        self._cond = threading.Condition()
        self._todo: Frame | None = None
        self._result: list[VehicleBox] | None = None
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._pass_of: dict[int, int] = {}
        """Track id -> its pass's id (its own, or the ended pass it continues)."""
        self._rejoin_params = rejoin or RejoinParams()
        self._held = PassMemory(self._rejoin_params)
        """Ended passes that may still go on (``edge.core.rejoin``)."""
        self._seen: dict[int, Sighting] = {}
        """Track id -> its last detection (box, time, velocity, heading, colour)."""
        self.rejoined = 0
        self.window_errors = 0
        self.windows_hidden = 0
        """Track-frames not scored because no driver's window is in view (``is_in_view``)."""
        self.windows_small = 0
        """Track-frames not scored because the window is too small to show a phone."""
        self.detections = 0
        self.detect_errors = 0
        self.detect_ms = Series(maxlen=500)

    # -- prep thread --------------------------------------------------------------------------
    def regions(self, frame: Frame) -> Vehicles:
        """Track to this frame and return the confirmed tracks' windows (see the module)."""
        img = frame.inference_image
        h, w = img.shape[:2]
        if self._frame_wh is None:
            self._frame_wh = (w, h)
            self.tracker = Tracker(self._tracker_params, frame_wh=(w, h))
            self._held = PassMemory(
                self._rejoin_params, frame_wh=(w, h), axis_px=self.window.axis_px(w)
            )
        t = frame.t_mono_s
        if self._last_t_s is not None and t < self._last_t_s:
            t = self._last_t_s  # a file looped, or a camera's clock stepped: never backwards
        self._last_t_s = t
        # (a millisecond's slack: 5 frames at 25 fps are 0.2 s, give or take a rounding)
        due = self._last_due_s is None or t - self._last_due_s >= self.every_s - 1e-3
        found: list[VehicleBox] | None = None
        if self.lossless:
            if due:
                self._last_due_s = t
                found = self._detect(img)
        else:
            if due and self._submit(frame):
                self._last_due_s = t
            found = self._take_result()
        ended: list[int] = []
        if found is not None:
            up = self.tracker.update(t, found)
            tracks = up.confirmed
            self._sightings(img, up.tracks, t)
            for s in up.ended:
                ended += self._end(s, t)
        else:
            tracks = [s for s in self.tracker.predict(t) if s.is_confirmed]
        ended += self._held.expire(t)  # held long enough: these passes are over
        out = []
        for s in tracks:
            if not self.window.is_in_view(s.box, (w, h)):
                self.windows_hidden += 1  # straight ahead, seen from behind: not scored
                continue
            try:
                win = self.window.legible_box(s.box, (w, h), s.heading_x)
                if win is None:
                    self.windows_small += 1  # too far to show a phone: not scored yet
                    continue
            except RoiError as e:  # that vehicle is skipped on this frame, never the frame
                self.window_errors += 1
                log.debug("track %d: no window on this frame: %s", s.track_id, e)
                continue
            out.append(Region(self._pass_for(s, t), s, win, _sharpness(img, win)))
        return Vehicles(out, ended)

    def _sightings(self, img: np.ndarray, tracks: Sequence[TrackState], t: float) -> None:
        """Remember where each track was detected on this frame, and its colour there."""
        for s in tracks:
            if not s.is_coasting:
                self._seen[s.track_id] = Sighting(
                    s.box, t, s.velocity, s.heading_x, _colour(img, s.box)
                )

    def _end(self, s: TrackState, t: float) -> list[int]:
        """A track ended: hold its pass (it may go on), or say it is over at once."""
        seen = self._seen.pop(s.track_id, None)
        pid = self._pass_of.pop(s.track_id, None)
        if pid is None:  # never scored (tentative, or never in view): no pass to close
            return []
        if seen is not None and self._held.hold(pid, seen, t, s.box):
            return []
        return [pid]  # its vehicle left the frame: the pass is over

    def _pass_for(self, s: TrackState, t: float) -> int:
        """The pass a confirmed track belongs to: its own, or an ended pass it continues."""
        pid = self._pass_of.get(s.track_id)
        if pid is not None:
            return pid
        seen = self._seen.get(s.track_id) or Sighting(s.box, t, s.velocity, s.heading_x)
        held = self._held.claim(Sighting(seen.box, t, seen.velocity, s.heading_x, seen.colour))
        pid = s.track_id if held is None else held
        self.rejoined += held is not None
        self._pass_of[s.track_id] = pid
        return pid

    def _detect(self, img: np.ndarray) -> list[VehicleBox] | None:
        t0 = time.perf_counter()
        try:
            found = self.detector.detect(img)
        except Exception:  # the tracks coast on; the next due frame tries again
            self.detect_errors += 1
            log.exception("vehicle detection failed")
            return None
        self.detections += 1
        self.detect_ms.add((time.perf_counter() - t0) * 1e3)
        return found

    def _submit(self, frame: Frame) -> bool:
        with self._cond:
            if self._busy or self._closed:
                return False
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._detect_loop, name="pw-vehicles", daemon=True
                )
                self._thread.start()
            self._todo = frame
            self._busy = True
            self._cond.notify_all()
            return True

    def _take_result(self) -> list[VehicleBox] | None:
        with self._cond:
            found, self._result = self._result, None
            return found

    def _detect_loop(self) -> None:
        while True:
            with self._cond:
                while self._todo is None and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                frame, self._todo = self._todo, None
            assert frame is not None
            found = self._detect(frame.inference_image)
            with self._cond:
                if found is not None:
                    self._result = found
                self._busy = False

    # -- inference thread ---------------------------------------------------------------------
    def decide(
        self, frame: Frame, prepared: Vehicles, scores: Sequence[float]
    ) -> list[TrackHit[Frame]]:
        """This frame's window scores to the per-vehicle decider: the alerts released now."""
        scored = [
            TrackFrame(
                r.pass_id,
                float(s),
                r.track.box,
                tuple(float(v) for v in r.window),  # type: ignore[arg-type]
                frame,
                sharpness=r.sharpness,
                label=r.track.label,
                is_lost=r.track.missed > 0,
            )
            for r, s in zip(prepared, scores, strict=True)
        ]
        return self.decider.update(
            frame.t_mono_s, scored, ended=prepared.ended, frame_wh=self._frame_wh
        )

    def finish(self) -> list[TrackHit[Frame]]:
        """The run ends: every track ends, every held alert is released."""
        t = self._last_t_s if self._last_t_s is not None else 0.0
        ended = [self._pass_of.pop(s.track_id, s.track_id) for s in self.tracker.finish(t)]
        ended += self._held.drop_all()
        self._seen.clear()
        return self.decider.update(t, [], ended=ended, frame_wh=self._frame_wh) + (
            self.decider.drain(t)
        )

    # -- reporting, lifecycle -----------------------------------------------------------------
    def heartbeat(self) -> dict[str, Any]:
        """``tracks_per_min`` (None for the first minute) and ``active`` confirmed tracks."""
        now = self._last_t_s if self._last_t_s is not None else 0.0
        return self.tracker.counts(now).heartbeat()

    def stats(self) -> dict[str, Any]:
        p50 = self.detect_ms.percentile(50)
        return {
            "vehicle_detections": self.detections,
            "vehicle_detect_errors": self.detect_errors,
            "vehicle_detect_ms_p50": None if p50 is None else round(p50, 2),
            "vehicle_tracks_live": self.decider.live,
            "vehicle_tracks_rejoined": self.rejoined,
            "vehicle_windows_hidden": self.windows_hidden,
            "vehicle_windows_small": self.windows_small,
        }

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5.0)


def _colour(img: np.ndarray, box: Box) -> tuple[float, float, float] | None:
    """Mean colour of the middle half of ``box`` (every 4th pixel: a cue, not a measure), or
    None when that is empty or the image is not colour."""
    if img.ndim != 3:
        return None
    h, w = img.shape[:2]
    x0, y0, x1, y1 = box
    qx, qy = (x1 - x0) / 4.0, (y1 - y0) / 4.0
    a, b = max(int(x0 + qx), 0), min(int(x1 - qx) + 1, w)
    c, d = max(int(y0 + qy), 0), min(int(y1 - qy) + 1, h)
    if b <= a or d <= c:
        return None
    m = img[c:d:4, a:b:4].reshape(-1, img.shape[2]).mean(axis=0)
    return float(m[0]), float(m[1]), float(m[2])


def _sharpness(img: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Variance of a 4-neighbour Laplacian on the window's grey levels (numpy; higher is
    sharper): it breaks ties between equally scored frames of one pass."""
    x0, y0, x1, y1 = box
    g = img[y0:y1, x0:x1]
    if g.ndim == 3:
        g = g.mean(axis=2)
    g = g.astype(np.float32)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())
