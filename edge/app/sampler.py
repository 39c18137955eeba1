"""Crops for the labelling queue that nobody asked for: the background sampler, and the
``calibrate`` command's window. See docs/uplink.md ("Sampling").

``collect`` (edge/app/remote.py) gives crops when an operator asks; labelling only those
estimates precision at best. To estimate recall and the false-positive rate the control room
also needs crops chosen without looking at the score, and, to improve the model where it is
unsure, crops scored near the threshold. So, with ``[sampling] enabled``, the unit publishes:

* **random** crops: ``random_per_day`` instants drawn uniformly over each UTC day (the ones
  still owed when the unit starts are drawn over what is left of the day); at each, the next
  frame's crop of an ROI chosen uniformly at random;
* **uncertain** crops: a frame whose score in some ROI lies within ``band`` of the decider's
  ``score_on`` gives that ROI's crop (the score nearest the threshold when several do), up to
  ``uncertain_per_day``;

each kind at least ``min_interval_s`` apart. The day's counts are kept in
``<data_dir>/sampler.json`` (written after each published sample, atomically), so a restart
does not reset the budget. A crop that could not be published gives its budget back.

``calibrate`` (a command) records every ROI crop of frames at most ``max_fps`` a second for
``duration_s``, so an operator can label a whole time range (staged drivers passing with a
phone). Its crops are not budgeted; their names share the run's start time.

On a unit with a vehicle stage (``windows``), the regions are each frame's vehicles' driver's
windows, handed over with the frame as ``Roi``s named ``vehicle-<track id>``: a random instant
takes a window chosen uniformly among the frame's (a frame with no vehicle in view takes
nothing, and the instant waits for the next that has one), the uncertain crop is the window
scored nearest the threshold, and a calibration run records every window of its frames.

Best effort and behind alerts, like ``collect``: the inference thread only compares times and
scores and hands a reference to the (immutable) frame to a one-slot queue; cropping, JPEG
encoding and publishing happen on the sampler's ``pw-sample`` thread. A sample due while that
thread is busy, or while a hit is being recorded (``hold``), is not taken (``sample_busy``)
and is taken from a later frame; nothing is taken while the broker is away (a random instant
that passes then is lost, ``sample_dropped``). Crops never go to the outbox.

Background samples run on the frame's own times (monotonic for the intervals, wall for the UTC
day and the random instants), so a file replayed on video time samples its recording's days as
a live camera would have; the ``calibrate`` window runs on the unit's
:class:`~edge.core.clock.Clock` (a command starts it now). Names carry the frame's wall time.
``lossless`` (an offline run of a file, like the pipeline's) waits for the worker instead of
skipping a due sample as busy, so a replay samples the same crops however fast it is read.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from edge.adapters.evidence import encode_jpeg
from edge.app.config import SamplingConfig
from edge.app.remote import MediaUplink, choose_rois
from edge.core import messages as m
from edge.core.clock import Clock, Scheduled, SystemClock
from edge.core.errors import EvidenceError, MessageError
from edge.core.frame import Frame
from edge.core.roi import Roi

log = logging.getLogger(__name__)

DAY_S = 86400
CALIBRATE_DEFAULT_MAX_FPS = 2.0
LOSSLESS_CONNECT_WAIT_S = 30.0
"""An offline run reads its file at once; its first due sample waits this long for the broker
(the uplink connects while the first frames are read) before samples are skipped as offline."""
BUDGETED = ("random", "uncertain")
"""The reasons with a per-day budget; ``calibration`` crops are asked for, not budgeted."""


class SampleUplink(MediaUplink, Protocol):
    """What the sampler needs of the uplink: best-effort crops, and whether it is connected."""

    @property
    def is_connected(self) -> bool: ...

    def wait_connected(self, timeout_s: float) -> bool: ...


def utc_day(t_wall_s: float) -> int:
    """Days since the Unix epoch, in UTC."""
    return int(t_wall_s // DAY_S)


def day_text(day: int) -> str:
    return datetime.fromtimestamp(day * DAY_S, UTC).date().isoformat()


@dataclass(frozen=True, slots=True)
class CalibrationJob:
    """One ``calibrate`` command, resolved against this unit's ROIs."""

    request_id: str | None
    duration_s: float
    max_fps: float
    rois: tuple[Roi, ...]

    @classmethod
    def from_command(cls, body: Mapping[str, Any], rois: Sequence[Roi]) -> CalibrationJob:
        """From a payload already checked against ``command.v1.json``."""
        return cls(
            request_id=body.get("request_id"),
            duration_s=float(body["duration_s"]),
            max_fps=float(body.get("max_fps", CALIBRATE_DEFAULT_MAX_FPS)),
            rois=choose_rois("calibrate", body, rois),
        )


@dataclass(slots=True)
class _Run:
    job: CalibrationJob
    end_mono_s: float
    run_ms: int
    """The run's start, wall clock in ms: in every crop's name, so the control room can group
    one run's crops (a labelled time range)."""
    last_mono_s: dict[str | None, float] = field(default_factory=dict)
    """When each camera's frame last gave the run its crops (the rate cap is per camera)."""
    published: int = 0
    dropped: int = 0
    timer: Scheduled | None = None


@dataclass(frozen=True, slots=True)
class _Pick:
    roi: Roi
    score: float
    reason: str


@dataclass(frozen=True, slots=True)
class _Sample:
    frame: Frame
    picks: tuple[_Pick, ...]
    day: int
    run: _Run | None


def load_day_counts(path: Path, day: int) -> dict[str, int]:
    """The counts ``path`` holds for ``day``; zeros for another day or an unreadable file."""
    counts = dict.fromkeys(BUDGETED, 0)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return counts
    except (OSError, ValueError) as e:
        log.warning("sampling: %s unreadable (%s); today's budget starts afresh", path, e)
        return counts
    if not isinstance(doc, dict) or doc.get("day") != day_text(day):
        return counts
    for reason in BUDGETED:
        v = doc.get(reason)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            counts[reason] = v
    return counts


def save_day_counts(path: Path, day: int, counts: Mapping[str, int]) -> None:
    """Write the day's counts atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps({"day": day_text(day), **{r: counts[r] for r in BUDGETED}}))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Sampler:
    """Samples ROI crops in the background and for ``calibrate``; publishes them on
    ``<root>/<unit>/collect/<name>`` with :func:`edge.core.messages.sample_name` names.

    ``on_frame`` is called by the inference thread; ``calibrate`` by the command thread.
    """

    def __init__(
        self,
        *,
        uplink: SampleUplink,
        rois: Sequence[Roi],
        cfg: SamplingConfig,
        windows: bool = False,
        threshold: float,
        model_version: str,
        state_path: Path,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        jpeg_quality: int = 90,
        hold: Callable[[], bool] | None = None,
        lossless: bool = False,
    ) -> None:
        self.uplink = uplink
        self.rois = tuple(rois)
        self.windows = windows
        """A vehicle stage's unit: the regions are each frame's vehicle windows (they come with
        the frame), not ``rois`` (zones, if any); a calibration run records all of them."""
        self.cfg = cfg
        self.threshold = threshold
        self.model_version = model_version
        self.state_path = state_path
        self.jpeg_quality = jpeg_quality
        self._clock: Clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self._hold = hold
        """True while an alert is being recorded: samples wait behind it."""
        self.lossless = lossless
        self._connect_waited = False
        on = cfg.enabled
        self.budget = {
            "random": cfg.random_per_day if on else 0,
            "uncertain": cfg.uncertain_per_day if on else 0,
        }
        self.band = (threshold - cfg.band, threshold + cfg.band)
        self._lock = threading.Lock()
        self._last = dict.fromkeys(BUDGETED, -math.inf)
        self._run: _Run | None = None
        self._queue: queue.Queue[_Sample | None] = queue.Queue(maxsize=1)
        self._pending = 0
        self._counts = {
            "sample_calibration": 0,
            "sample_dropped": 0,
            "sample_busy": 0,
            "sample_errors": 0,
        }
        self._closed = False
        now_wall = self._clock.wall()
        today = utc_day(now_wall)
        self._day = today
        self._used = load_day_counts(state_path, today)
        """Crops taken on ``_day`` per reason (published, or on their way)."""
        self._random_left_to_draw = 0
        self._next_random_wall_s = math.inf
        self._start_day(today, self._used, now_wall)
        if on:
            log.info(
                "sampling: %d random and %d uncertain (scores %.3f..%.3f) crops a day, "
                "each kind at least %.0f s apart; already today: %s",
                self.budget["random"],
                self.budget["uncertain"],
                *self.band,
                cfg.min_interval_s,
                self._used,
            )
        self._thread = threading.Thread(target=self._work, name="pw-sample", daemon=True)
        self._thread.start()

    # -- the day's budget (inference thread) ---------------------------------------------------
    def _start_day(self, day: int, used: dict[str, int], now_wall: float) -> None:
        self._day = day
        self._used = used
        self._random_left_to_draw = max(0, self.budget["random"] - used["random"])
        self._draw_random(max(now_wall, float(day * DAY_S)))

    def _draw_random(self, from_s: float) -> None:
        """The next random instant: the earliest of the day's remaining ones, which are
        uniform over [from_s, end of day) (drawn one at a time, as order statistics)."""
        k = self._random_left_to_draw
        if k <= 0:
            self._next_random_wall_s = math.inf
            return
        end = float((self._day + 1) * DAY_S)
        self._next_random_wall_s = from_s + (end - from_s) * (1.0 - self._rng.random() ** (1 / k))

    def _consume_random(self) -> None:
        self._random_left_to_draw -= 1
        self._draw_random(self._next_random_wall_s)

    def _left(self, reason: str) -> int:
        return self.budget[reason] - self._used[reason]

    # -- the inference thread ------------------------------------------------------------------
    def on_frame(
        self,
        frame: Frame,
        scores: Mapping[str, float],
        regions: Mapping[str, Roi] | None = None,
        camera: str | None = None,
    ) -> None:
        """Inference thread, every frame: comparisons, and a hand-off when a sample is due.
        Never waits (beyond a lock held for a few assignments), unless ``lossless``.
        ``regions``: the frame's scored regions by id (its ROIs, or with ``windows`` its
        vehicles' windows; ``rois`` when not given). ``camera``: which of several cameras the
        frame is from (a calibration run's rate cap is per camera)."""
        rois = self.rois if regions is None else tuple(regions.values())
        now, wall = frame.t_mono_s, frame.t_wall_s
        if utc_day(wall) != self._day:
            day = utc_day(wall)
            with self._lock:  # the state file's counts, if they are that day's
                self._start_day(day, load_day_counts(self.state_path, day), wall)
        run = self._run
        picks: list[_Pick] = []
        cal_now = self._clock.monotonic()
        if run is not None:
            picks += self._calibration_picks(run, scores, cal_now, rois, camera)
        picks += self._background_picks(scores, now, wall, rois)
        if picks:
            self._hand_over(frame, picks, run, now, cal_now, camera)

    def _calibration_picks(
        self,
        run: _Run,
        scores: Mapping[str, float],
        now: float,
        rois: Sequence[Roi],
        camera: str | None,
    ) -> list[_Pick]:
        if now >= run.end_mono_s:
            self._end_run(run)
            return []
        if now - run.last_mono_s.get(camera, -math.inf) < 1.0 / run.job.max_fps:
            return []
        chosen = rois if self.windows else run.job.rois  # every vehicle in view, or as asked
        return [_Pick(r, scores[r.id], "calibration") for r in chosen if r.id in scores]

    def _background_picks(
        self, scores: Mapping[str, float], now: float, wall: float, rois: Sequence[Roi]
    ) -> list[_Pick]:
        picks: list[_Pick] = []
        gap = self.cfg.min_interval_s
        if (
            rois  # (no vehicle in view: the random instant waits for the next that has one)
            and wall >= self._next_random_wall_s
            and now - self._last["random"] >= gap
            and self._left("random") > 0
        ):
            roi = rois[self._rng.randrange(len(rois))]
            if roi.id in scores:
                picks.append(_Pick(roi, scores[roi.id], "random"))
        if self._left("uncertain") > 0 and now - self._last["uncertain"] >= gap:
            lo, hi = self.band
            near = [
                (abs(s - self.threshold), i)
                for i, r in enumerate(rois)
                if lo <= (s := scores.get(r.id, math.nan)) <= hi
            ]
            if near:
                roi = rois[min(near)[1]]
                picks.append(_Pick(roi, scores[roi.id], "uncertain"))
        return picks

    def _hand_over(
        self,
        frame: Frame,
        picks: list[_Pick],
        run: _Run | None,
        now: float,
        cal_now: float,
        camera: str | None,
    ) -> None:
        """``now``: the frame's monotonic time (background intervals); ``cal_now``: the
        clock's (the calibration window's rate)."""
        if not self.uplink.is_connected and not self._waited_for_broker():
            # nothing is taken; a random instant is lost
            self._skip_offline(picks, run, cal_now, camera)
            return
        if not self.lossless and self._hold is not None and self._hold():
            self._counts["sample_busy"] += 1
            return
        sample = _Sample(frame, tuple(picks), self._day, run)
        with self._lock:
            if not self.lossless:
                try:
                    self._queue.put_nowait(sample)
                except queue.Full:
                    self._counts["sample_busy"] += 1
                    return
            self._pending += 1
            for p in picks:
                if p.reason == "calibration":
                    assert run is not None
                    run.last_mono_s[camera] = cal_now
                    continue
                self._last[p.reason] = now
                self._used[p.reason] += 1
                if p.reason == "random":
                    self._consume_random()
        if self.lossless:  # an offline run: wait for the worker (never while holding the lock)
            self._put_waiting(sample)

    def _waited_for_broker(self) -> bool:
        """Lossless only, and once: wait for the broker the uplink is connecting to."""
        if not self.lossless or self._connect_waited:
            return False
        self._connect_waited = True
        return self.uplink.wait_connected(LOSSLESS_CONNECT_WAIT_S)

    def _put_waiting(self, sample: _Sample) -> None:
        while True:
            try:
                self._queue.put(sample, timeout=1.0)
                return
            except queue.Full:
                if not self._thread.is_alive():  # closed under us: nobody will take it
                    with self._lock:
                        self._pending -= 1
                    self._counts["sample_busy"] += 1
                    return

    def _skip_offline(
        self, picks: list[_Pick], run: _Run | None, cal_now: float, camera: str | None
    ) -> None:
        reasons = {p.reason for p in picks}
        if "random" in reasons:
            self._counts["sample_dropped"] += 1
            self._consume_random()
        if "calibration" in reasons and run is not None:
            self._counts["sample_dropped"] += 1
            run.dropped += 1
            run.last_mono_s[camera] = cal_now

    # -- calibration (the command thread) ------------------------------------------------------
    def calibrate(self, job: CalibrationJob) -> None:
        """Start a calibration window now, replacing a running one; ``duration_s`` 0 ends it."""
        rid = job.request_id or "-"
        run = None
        if job.duration_s > 0:
            run = _Run(
                job, self._clock.monotonic() + job.duration_s, int(self._clock.wall() * 1000)
            )
        with self._lock:
            old, self._run = self._run, run
        if old is not None:
            self._end_run(old, why="replaced" if run is not None else "ended by command")
        if run is None:
            return
        run.timer = self._clock.call_at(run.end_mono_s, lambda: self._end_run(run))
        log.info(
            "calibrate %s: run cal%d, every crop of %s for %.0f s, at most %.1f frame(s)/s",
            rid,
            run.run_ms,
            "every vehicle's window" if self.windows else ", ".join(r.id for r in job.rois),
            job.duration_s,
            job.max_fps,
        )

    def _end_run(self, run: _Run, *, why: str = "done") -> None:
        with self._lock:
            if self._run is run:
                self._run = None
            elif why == "done":
                return  # already ended (replaced, or by a frame before the timer)
        if run.timer is not None:
            run.timer.cancel()
        log.info(
            "calibrate %s %s: run cal%d, %d crop(s) published, %d dropped",
            run.job.request_id or "-",
            why,
            run.run_ms,
            run.published,
            run.dropped,
        )

    @property
    def calibrating(self) -> bool:
        run = self._run
        return run is not None and self._clock.monotonic() < run.end_mono_s

    # -- the worker ----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._publish(item)
            except Exception:  # log, count, keep serving later samples
                self._counts["sample_errors"] += 1
                log.exception("sampling: frame %d not published", item.frame.index)
            finally:
                with self._lock:
                    self._pending -= 1

    def _publish(self, item: _Sample) -> None:
        budgeted = False
        for pick in item.picks:
            ok = self._publish_one(item, pick)
            if pick.reason == "calibration":
                if item.run is not None:
                    item.run.published += int(ok)
                    item.run.dropped += int(not ok)
                self._counts["sample_calibration"] += int(ok)
            elif ok:
                budgeted = True
            else:
                with self._lock:  # the budget goes back
                    if item.day == self._day:
                        self._used[pick.reason] -= 1
        if budgeted:
            with self._lock:
                day, used = self._day, dict(self._used)
            try:
                save_day_counts(self.state_path, day, used)
            except OSError as e:
                self._counts["sample_errors"] += 1
                log.warning("sampling: cannot save today's counts to %s: %s", self.state_path, e)

    def _publish_one(self, item: _Sample, pick: _Pick) -> bool:
        frame = item.frame
        try:
            name = m.sample_name(
                pick.reason,
                pick.roi.id,
                frame.t_wall_s,
                pick.score,
                self.model_version,
                run_ms=item.run.run_ms if item.run is not None else None,
            )
            jpeg = encode_jpeg(pick.roi.crop(frame.image), self.jpeg_quality)
        except (EvidenceError, MessageError) as e:
            self._counts["sample_errors"] += 1
            log.warning("sampling: crop %s of frame %d skipped: %s", pick.roi.id, frame.index, e)
            return False
        if self.uplink.publish_collect(name, jpeg):
            return True
        self._counts["sample_dropped"] += 1
        return False

    # -- reporting and lifecycle ---------------------------------------------------------------
    @property
    def is_settled(self) -> bool:
        """Every sample taken so far is through the worker (published, dropped or failed)."""
        with self._lock:
            return self._pending == 0

    def stats(self) -> dict[str, Any]:
        """The heartbeat's ``sample_*`` figures: taken today and budget left per reason,
        calibration crops published, samples dropped (broker away, backlog), samples skipped
        (``sample_busy``: worker busy or an alert being recorded), errors."""
        out: dict[str, Any] = dict(self._counts)
        today = self.lossless or utc_day(self._clock.wall()) == self._day  # a replay's day
        for reason in BUDGETED:
            used = self._used[reason] if today else 0
            out[f"sample_{reason}_today"] = used
            out[f"sample_{reason}_left"] = max(0, self.budget[reason] - used)
        out["sample_calibrating"] = self.calibrating
        return out

    def close(self) -> None:
        """Stop the worker; a sample being published is finished first. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            run, self._run = self._run, None
        if run is not None and run.timer is not None:
            run.timer.cancel()
        while True:  # make room for the stop marker (the worker takes one item at a time)
            try:
                self._queue.put(None, timeout=0.5)
                break
            except queue.Full:
                if not self._thread.is_alive():
                    break
        self._thread.join(timeout=5.0)
