"""The unit's stage threads: capture -> latest-frame slot -> inference + decider -> evidence.

* **capture** reads the camera and puts each frame into a one-frame slot. If inference has
  not taken the previous frame yet, that frame is *dropped* (counted): the unit keeps up with
  the road and never queues behind it. In ``lossless`` mode (offline processing of a file) the
  capture thread waits instead, so every frame is scored. A lost live stream is reopened with
  exponential backoff while the status says ``degraded``.
* **prep** crops every ROI from the frame's inference image and preprocesses it (one prepared
  frame may wait), so this overlaps with ``invoke()`` of the previous frame on another core;
* **inference** invokes the classifier and feeds the decider; hits go to a bounded queue.
* **evidence** encodes and writes the evidence (best frame, crop, optional clip), then hands a
  :class:`Detection` to the alert sink.

All stages stop on one shared ``Event``; shutdown drains in reverse order of start.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from edge.adapters.evidence import EvidenceStore, evidence_id
from edge.app.stats import Series, fmt_ms, table
from edge.core.decider import Decider, DeciderParams, Hit
from edge.core.errors import CameraError, PhonewatchError
from edge.core.frame import Frame
from edge.core.ports import (
    AlertNumbers,
    AlertSink,
    Classifier,
    Detection,
    FrameSource,
    VehicleInfo,
)
from edge.core.roi import Roi
from edge.core.track_decider import TrackHit

if TYPE_CHECKING:
    from edge.app.hub import InferenceHub
    from edge.app.vehicles import Vehicles, VehicleStage

log = logging.getLogger(__name__)

T = TypeVar("T")

ShadowHook = Callable[[Frame, dict[str, float], float, int], None]
"""Called on the inference thread after each frame is decided, with the frame, the live
model's score per ROI, the live ``score_on`` and how many hits the frame gave. It must return
at once (a model in shadow takes the frame through its own latest-frame slot)."""

_Prepared = tuple[Frame, list[np.ndarray], float, Classifier, "Vehicles | None"]
"""A frame, its ROI tensors, the time preparing them took, the classifier they were prepared
for, and (with a vehicle stage) the tracked vehicles whose windows the tensors are."""


def same_input(a: Classifier, b: Classifier) -> bool:
    """Whether a tensor prepared by ``a`` is exactly what ``b`` takes: the same input spec
    (size, layout, colour, normalisation) and the same quantisation and dtype. A classifier
    that does not say (no ``spec``) is taken to differ."""

    def key(c: Classifier) -> tuple[Any, ...] | None:
        spec = getattr(c, "spec", None)
        if spec is None:
            return None
        return (
            spec.input,
            getattr(c, "_in_scale", None),
            getattr(c, "_in_zero", None),
            getattr(c, "_in_dtype", None),
        )

    ka = key(a)
    return ka is not None and ka == key(b)


class LatestSlot(Generic[T]):
    """A one-item hand-off (a frame, or whatever a consumer takes the newest of). ``put``
    replaces an unconsumed item (a drop, counted) unless lossless."""

    def __init__(self, *, lossless: bool = False, bell: threading.Event | None = None) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False
        self.lossless = lossless
        self.dropped = 0
        self.bell = bell
        """Set on every put and on close: one consumer serving many slots waits on it."""

    def put(self, item: T, stop: threading.Event | None = None) -> None:
        """Hand ``item`` over; lossless, wait first until the last one was taken (or
        ``stop`` is set)."""
        with self._cond:
            if self.lossless:
                while self._item is not None and not (stop is not None and stop.is_set()):
                    self._cond.wait(0.1)
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify_all()
        if self.bell is not None:
            self.bell.set()

    def get(self, timeout_s: float) -> T | None:
        """The newest item, or ``None`` on timeout or when closed and empty."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout_s)
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def take(self) -> T | None:
        """The newest item if there is one, without waiting."""
        with self._cond:
            item, self._item = self._item, None
            if item is not None:
                self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self.bell is not None:
            self.bell.set()

    @property
    def is_drained(self) -> bool:
        with self._cond:
            return self._closed and self._item is None


ClipCallback = Callable[[list[np.ndarray]], None]


class ClipBuffer:
    """Small copies of recent frames for pre/post-hit clips (bounded by age).

    A clip whose end is still to come waits (:meth:`when_recorded`) until a frame at or past
    its end arrives: frame time, not a timer, says when the post-roll is complete, so a file
    read faster than real time and a slow one both get the whole clip.
    """

    def __init__(self, *, keep_s: float, width: int) -> None:
        self.keep_s = keep_s
        self.width = width
        self._frames: deque[tuple[float, np.ndarray]] = deque()
        self._lock = threading.Lock()
        self._waiting: list[tuple[float, float, ClipCallback]] = []
        self.latest_t_s: float | None = None
        self._latest_added_s = 0.0

    def add(self, frame: Frame) -> None:
        import cv2

        img = frame.image
        h, w = img.shape[:2]
        if w > self.width:
            img = cv2.resize(
                img, (self.width, max(1, h * self.width // w)), interpolation=cv2.INTER_AREA
            )
        else:
            img = img.copy()
        with self._lock:
            self._frames.append((frame.t_mono_s, img))
            while self._frames and frame.t_mono_s - self._frames[0][0] > self.keep_s:
                self._frames.popleft()
            self.latest_t_s = frame.t_mono_s
            self._latest_added_s = time.monotonic()
            done = self._take(lambda t1: t1 <= frame.t_mono_s)
        for on_clip, clip in done:
            on_clip(clip)

    def between(self, t0: float, t1: float) -> list[np.ndarray]:
        with self._lock:
            return self._between(t0, t1)

    def _between(self, t0: float, t1: float) -> list[np.ndarray]:
        return [img for t, img in self._frames if t0 <= t <= t1]

    def when_recorded(self, t0: float, t1: float, on_clip: ClipCallback) -> None:
        """Call ``on_clip(frames from t0 to t1)`` once a frame at or past ``t1`` is in (at once
        if one is). It runs on the thread that adds that frame: keep it short."""
        with self._lock:
            ready = self.latest_t_s is not None and self.latest_t_s >= t1
            if ready:
                clip = self._between(t0, t1)
            else:
                self._waiting.append((t0, t1, on_clip))
        if ready:
            on_clip(clip)

    def now_s(self) -> float:
        """Now on the frames' clock: the newest frame's time plus the real time since it came
        (a file's frames run on video time, ahead of or behind the monotonic clock)."""
        with self._lock:
            if self.latest_t_s is None:
                return time.monotonic()
            return self.latest_t_s + (time.monotonic() - self._latest_added_s)

    @property
    def first_waiting_end_s(self) -> float | None:
        with self._lock:
            return min((t1 for _, t1, _ in self._waiting), default=None)

    def finish(self, ended_by_s: float | None = None) -> None:
        """Hand out the waiting clips (ending by ``ended_by_s``, or all) with the frames there
        are: the source ended, the unit is stopping, or the camera stalled."""
        with self._lock:
            done = self._take(lambda t1: ended_by_s is None or t1 <= ended_by_s)
        for on_clip, clip in done:
            on_clip(clip)

    def _take(
        self, is_done: Callable[[float], bool]
    ) -> list[tuple[ClipCallback, list[np.ndarray]]]:
        done = [w for w in self._waiting if is_done(w[1])]
        if not done:
            return []
        self._waiting = [w for w in self._waiting if not is_done(w[1])]
        done.sort(key=lambda w: w[1])
        return [(on_clip, self._between(t0, t1)) for t0, t1, on_clip in done]


@dataclass
class PipelineStats:
    started_mono_s: float = field(default_factory=time.monotonic)
    captured: int = 0
    processed: int = 0
    hits: int = 0
    evidence_errors: int = 0
    sink_errors: int = 0
    camera_errors: int = 0
    stage_errors: int = 0
    reconnects: int = 0
    last_camera_error: str | None = None
    """The latest reason the camera failed to open or read (it is retried)."""
    capture_error: str | None = None
    """Why the capture stage gave up (an unexpected failure); None while it runs or after a
    source ended."""
    last_processed_mono_s: float | None = None
    invoke_ms: Series = field(default_factory=Series)
    prep_ms: Series = field(default_factory=Series)
    decide_ms: Series = field(default_factory=Series)
    overhead_ms: Series = field(default_factory=Series)
    evidence_ms: Series = field(default_factory=Series)


@dataclass(frozen=True, slots=True)
class _Pending:
    hit: Hit[Frame] | TrackHit[Frame]
    roi: Roi
    """The scored crop as a region of the frame (a vehicle's window: made for its best frame)."""
    clip: list[np.ndarray] | None = None
    """The hit's clip, once its post-roll is in (only when clips are kept)."""
    model: Classifier | None = None
    """The model that scored the hit (a swap may land before its evidence is saved)."""
    score_on: float | None = None
    """The threshold it was decided at."""


CLIP_STALL_S = 2.0
"""A clip still waiting for frames this long after its end is kept with what there is (a
stalled or unplugged camera must not hold an alert back)."""


class Pipeline:
    """Builds nothing itself: every part is passed in (the composition root builds them)."""

    def __init__(
        self,
        *,
        source: FrameSource,
        classifier: Classifier,
        rois: Sequence[Roi],
        decider: DeciderParams,
        evidence: EvidenceStore,
        sink: AlertSink,
        unit_id: str,
        lossless: bool = False,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 30.0,
        clip_before_s: float = 0.0,
        clip_after_s: float = 0.0,
        clip_width: int = 640,
        on_status: Callable[[str], None] | None = None,
        on_hit: Callable[[Detection], None] | None = None,
        on_frame: Callable[[Frame, dict[str, float], Mapping[str, Roi]], None] | None = None,
        stamp: Callable[[Detection], Detection] | None = None,
        numbers: AlertNumbers | None = None,
        shadow: ShadowHook | None = None,
        camera_id: str | None = None,
        hub: InferenceHub | None = None,
        vehicles: VehicleStage | None = None,
    ) -> None:
        self.vehicles = vehicles
        """Tracked vehicles' windows instead of the fixed ROIs (which become zones)."""
        self.camera_id = camera_id
        """The camera's id on a unit with several (on its alerts); None: the only camera."""
        self.hub = hub
        """The inference stage this camera shares with the unit's other cameras; None: this
        pipeline runs its own prep and inference threads."""
        self.source = source
        self.classifier = classifier
        self.rois = list(rois)
        self.params = decider
        self.decider: Decider[Frame] = Decider([r.id for r in self.rois], decider)
        self.evidence = evidence
        self.sink = sink
        self.unit_id = unit_id
        self.slot: LatestSlot[Frame] = LatestSlot(
            lossless=lossless, bell=hub.bell if hub is not None else None
        )
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.clip_before_s = clip_before_s
        self.clip_after_s = clip_after_s
        self.clips = (
            ClipBuffer(keep_s=clip_before_s + clip_after_s + 2.0, width=clip_width)
            if clip_before_s + clip_after_s > 0
            else None
        )
        self.on_status = on_status
        self.on_hit = on_hit
        self.on_frame = on_frame
        self.stamp = stamp
        self.numbers = numbers
        """Reserves each hit's sequence number before its evidence is saved (the outbox, or
        the JSON-lines sink's counter); None: ids from the frame time (benches, tests)."""
        """Adds what the app knows to each hit's detection (GPS fix, alert time, mode)."""
        self.shadow = shadow
        """A model in shadow mode sees every decided frame here (see :data:`ShadowHook`)."""
        self.stats = PipelineStats()
        self.stop_event = threading.Event()
        self._hits: queue.Queue[_Pending | None] = queue.Queue(maxsize=64)
        self._overflow: deque[_Pending] = deque()
        """Hits whose clip completed while the evidence queue was full."""
        self._prepared: queue.Queue[_Prepared | None] = queue.Queue(maxsize=1)
        self._swap_lock = threading.RLock()
        """Held while one frame is scored and decided: a swap waits for the frame in hand."""
        self._threads: list[threading.Thread] = []
        self._status = "starting"
        self._roi_by_id = {r.id: r for r in self.rois}
        self.last_scores: dict[str, float] = {}
        self._source_open = False
        self._fps_src: float | None = None
        if hub is not None:
            hub.attach(self)

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The camera's id, or its source's name on a one-camera unit (for logs)."""
        return self.camera_id or self.source.name

    @property
    def status(self) -> str:
        return self._status

    def _set_status(self, status: str) -> None:
        if status != self._status:
            log.info("status: %s -> %s", self._status, status)
            self._status = status
            if self.on_status is not None:
                self.on_status(status)

    def open_source(self) -> None:
        """Open the camera now so a bad source fails at start with a clear message."""
        self.source.open()
        self._source_open = True

    def start(self) -> None:
        if not self._source_open and not self.source.is_live:
            self.open_source()
        self.stats.started_mono_s = time.monotonic()
        stages: tuple[tuple[str, Callable[[], None]], ...] = (
            ("evidence", self._evidence_loop),
            ("inference", self._infer_loop),
            ("prep", self._prep_loop),
            ("capture", self._capture_loop),
        )
        if self.hub is not None:  # the hub crops, scores and decides this camera's frames
            stages = (stages[0], stages[3])
        cam = f"-{self.camera_id}" if self.camera_id else ""
        for name, target in stages:
            t = threading.Thread(target=target, name=f"pw-{name}{cam}", daemon=True)
            self._threads.append(t)
            t.start()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for the pipeline to finish (end of a file); True when it has."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for t in reversed(self._threads):  # capture first, evidence last
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            t.join(remaining)
            if t.is_alive():
                return False
        return True

    @property
    def is_finished(self) -> bool:
        return bool(self._threads) and not any(t.is_alive() for t in self._threads)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop all stages; evidence already queued is still written."""
        self.stop_event.set()
        self.slot.close()
        self.wait(timeout_s)
        self._set_status("stopped")

    # -- stages -------------------------------------------------------------------------------
    def _capture_loop(self) -> None:
        backoff = self.reconnect_min_s
        try:
            while not self.stop_event.is_set():
                try:
                    if not self._source_open:
                        self.source.open()
                        self._source_open = True
                        if self.stats.camera_errors:
                            self.stats.reconnects += 1
                            log.warning("camera %s is back", self.source.name)
                        backoff = self.reconnect_min_s
                    frame = self.source.read()
                except CameraError as e:
                    self.stats.camera_errors += 1
                    self.stats.last_camera_error = str(e)
                    self._set_status("degraded")
                    log.warning("camera problem (%s); retrying in %.1f s", e, backoff)
                    self._close_source()
                    self.stop_event.wait(backoff)
                    backoff = min(backoff * 2, self.reconnect_max_s)
                    continue
                if frame is None:
                    log.info(
                        "source %s ended after %d frames", self.source.name, self.stats.captured
                    )
                    break
                if self._status in ("starting", "degraded"):
                    self._set_status("running")
                self.stats.captured += 1
                if self.clips is not None:
                    self.clips.add(frame)
                self.slot.put(frame, self.stop_event)
        except Exception as e:
            log.exception("capture stage failed")
            self.stats.capture_error = f"{type(e).__name__}: {e}"
            self._set_status("degraded")
        finally:
            self._close_source()
            self.slot.close()

    def _close_source(self) -> None:
        if self._source_open:
            self._source_open = False
            try:
                self.source.close()
            except Exception:  # a dying camera may fail to close; it is being dropped anyway
                log.debug("closing the source failed", exc_info=True)

    def _prep_loop(self) -> None:
        """Crop + preprocess the newest frame while the interpreter runs the previous one."""
        try:
            while True:
                frame = self.slot.get(0.2)
                if frame is None:
                    if self.slot.is_drained:
                        break
                    continue
                t0 = time.perf_counter()
                clf = self.classifier  # one model for all of this frame's ROIs
                try:
                    vehicles = self.vehicles.regions(frame) if self.vehicles is not None else None
                    tensors = self._tensors(frame, clf, vehicles)
                except Exception:  # log, count, continue with the next frame
                    self.stats.stage_errors += 1
                    log.exception("preprocessing frame %d failed", frame.index)
                    continue
                prep_ms = (time.perf_counter() - t0) * 1e3
                self._put_prepared((frame, tensors, prep_ms, clf, vehicles))
        except Exception:
            log.exception("preprocessing stage failed")
            self._set_status("degraded")
        finally:
            self._put_prepared(None)

    def _tensors(
        self, frame: Frame, clf: Classifier, vehicles: Vehicles | None
    ) -> list[np.ndarray]:
        """The classifier's inputs: each ROI's crop, or each tracked vehicle's window."""
        img = frame.inference_image
        if vehicles is None:
            return [clf.preprocess(r.crop(img), r.mask(img)) for r in self.rois]
        return [
            clf.preprocess(img[y0:y1, x0:x1]) for x0, y0, x1, y1 in (v.window for v in vehicles)
        ]

    def _put_prepared(self, item: _Prepared | None) -> None:
        while True:
            try:
                self._prepared.put(item, timeout=0.2)
                return
            except queue.Full:
                if not self._infer_alive():
                    return

    def _infer_loop(self) -> None:
        try:
            while True:
                item = self._prepared.get()
                if item is None:
                    break
                try:
                    self._process_current(*item)
                except Exception:  # log, count, continue with the next frame
                    self.stats.stage_errors += 1
                    log.exception("inference on frame %d failed", item[0].index)
        except Exception:
            log.exception("inference stage failed")
            self._set_status("degraded")
        finally:
            if self.vehicles is not None:  # tracks end with the run: held alerts go now
                try:
                    for hit in self.vehicles.finish():
                        self._queue_vehicle_hit(hit)
                except Exception:
                    log.exception("closing the vehicle passes failed")
            self._hits.put(None)

    def _process_current(
        self,
        frame: Frame,
        tensors: list[np.ndarray],
        prep_ms: float,
        prepared_for: Classifier,
        vehicles: Vehicles | None = None,
    ) -> None:
        """Score and decide one frame with the classifier in place now. Tensors prepared for
        a model swapped out since are prepared again when the two models' inputs differ."""
        with self._swap_lock:
            if prepared_for is not self.classifier and not same_input(
                prepared_for, self.classifier
            ):
                t0 = time.perf_counter()
                tensors = self._tensors(frame, self.classifier, vehicles)
                prep_ms += (time.perf_counter() - t0) * 1e3
            self._process(frame, tensors, prep_ms, vehicles)

    def swap_classifier(
        self, new: Classifier, *, params: DeciderParams | None = None, timeout_s: float = 10.0
    ) -> Classifier:
        """Put ``new`` in place of the classifier between two frames and return the old one
        (still open: the caller closes it). The frame being scored finishes on the old model;
        the next one is scored by ``new``, none twice and none dropped. ``params`` (the
        decider's rules for the new model's threshold) replace the current ones; each ROI
        keeps its recent scores and its latch, so a driver already alerted on is not
        alerted on again because the model changed.

        Raises ``TimeoutError`` (nothing changed) if the frame in hand is not done within
        ``timeout_s`` (a hung interpreter). A camera sharing a hub swaps every camera's model
        at once (they share the one classifier)."""
        if self.hub is not None:
            return self.hub.swap_classifier(new, params=params, timeout_s=timeout_s)
        if not self._swap_lock.acquire(timeout=timeout_s):
            raise TimeoutError(
                f"model swap: the frame being scored did not finish within {timeout_s:g} s"
            )
        try:
            old = self.classifier
            self._put_classifier(new, params)
        finally:
            self._swap_lock.release()
        return old

    def _put_classifier(self, new: Classifier, params: DeciderParams | None) -> None:
        """The swap itself; the caller holds the lock that keeps frames out meanwhile."""
        self.classifier = new
        if params is not None and params != self.params:
            self._set_params(params)

    def _set_params(self, params: DeciderParams) -> None:
        if params.window == self.params.window:
            for r in self.rois:
                self.decider[r.id].params = params
        else:  # another window length: the per-ROI history no longer fits
            self.decider = Decider([r.id for r in self.rois], params)
        self.params = params

    def _process(
        self,
        frame: Frame,
        tensors: list[np.ndarray],
        prep_ms: float,
        vehicles: Vehicles | None = None,
    ) -> None:
        t1 = time.perf_counter()
        scores = self.classifier.score_batch(tensors)
        invoke_ms = (time.perf_counter() - t1) * 1e3
        if vehicles is not None:
            self._decide_vehicles(frame, vehicles, scores, prep_ms, invoke_ms)
        else:
            self._decide(frame, scores, prep_ms, invoke_ms)

    def _decide_vehicles(
        self,
        frame: Frame,
        vehicles: Vehicles,
        scores: Sequence[float],
        prep_ms: float,
        invoke_ms: float,
    ) -> None:
        """Each tracked vehicle's window score to the per-vehicle decider (one alert a pass)."""
        assert self.vehicles is not None
        t2 = time.perf_counter()
        hits = self.vehicles.decide(frame, vehicles, scores)
        t3 = time.perf_counter()
        for hit in hits:
            self._queue_vehicle_hit(hit)
        keys = [f"vehicle-{v.track.track_id}" for v in vehicles]
        by_vehicle = {k: float(s) for k, s in zip(keys, scores, strict=True)}
        self.last_scores = by_vehicle
        self._count_frame(prep_ms, invoke_ms, (t3 - t2) * 1e3)
        if self.on_frame is not None:
            img = frame.inference_image
            windows = {
                k: _window_roi(k, v.window, img) for k, v in zip(keys, vehicles, strict=True)
            }
            self.on_frame(frame, by_vehicle, windows)

    def _queue_vehicle_hit(self, hit: TrackHit[Frame]) -> None:
        roi = _window_roi(hit.roi_id, hit.window_box, hit.best.inference_image)
        self._queue_hit(_Pending(hit, roi, model=self.classifier, score_on=self.params.score_on))

    def _queue_hit(self, pending: _Pending) -> None:
        """A decided hit to the evidence stage: with clips, once its clip is recorded."""
        self.stats.hits += 1
        hit = pending.hit
        if self.clips is not None:
            # Ask for the clip now, while its first frames are still in the buffer: the
            # evidence stage may be busy encoding an earlier clip for seconds.
            t = hit.best.t_mono_s
            self.clips.when_recorded(
                t - self.clip_before_s,
                t + self.clip_after_s,
                functools.partial(self._clip_done, pending),
            )
            return
        try:
            self._hits.put_nowait(pending)
        except queue.Full:
            self.stats.evidence_errors += 1
            log.error("evidence queue full: hit in %s at frame %d lost", hit.roi_id, hit.best.index)

    def prepare(self, frame: Frame, clf: Classifier) -> list[np.ndarray]:
        """This camera's ROI tensors of ``frame`` for ``clf`` (what the hub batches)."""
        return self._tensors(frame, clf, None)

    def _decide(
        self, frame: Frame, scores: Sequence[float], prep_ms: float, invoke_ms: float
    ) -> None:
        """Feed one frame's ROI scores to the decider; hits go to the evidence stage."""
        t2 = time.perf_counter()
        by_roi = {r.id: s for r, s in zip(self.rois, scores, strict=True)}
        hits = self.decider.update(by_roi, frame.t_mono_s, {r.id: frame for r in self.rois})
        t3 = time.perf_counter()
        for hit in hits:
            self._queue_hit(
                _Pending(
                    hit,
                    self._roi_by_id[hit.roi_id],
                    model=self.classifier,
                    score_on=self.params.score_on,
                )
            )
        self.last_scores = by_roi
        if self.shadow is not None:
            self.shadow(frame, by_roi, self.params.score_on, len(hits))
        self._count_frame(prep_ms, invoke_ms, (t3 - t2) * 1e3)
        if self.on_frame is not None:
            self.on_frame(frame, by_roi, self._roi_by_id)

    def _count_frame(self, prep_ms: float, invoke_ms: float, decide_ms: float) -> None:
        st = self.stats
        st.processed += 1
        st.last_processed_mono_s = time.monotonic()
        st.prep_ms.add(prep_ms)
        st.invoke_ms.add(invoke_ms)
        st.decide_ms.add(decide_ms)
        st.overhead_ms.add(prep_ms + decide_ms)

    def _infer_alive(self) -> bool:
        return any(t.name.startswith("pw-inference") and t.is_alive() for t in self._threads)

    def end_inference(self) -> None:
        """The hub has scored this camera's last frame: the evidence stage may finish."""
        self._hits.put(None)

    def _clip_done(self, item: _Pending, clip: list[np.ndarray]) -> None:
        """A hit's clip is complete (on the thread that added its last frame): to evidence."""
        done = replace(item, clip=clip)
        try:
            self._hits.put_nowait(done)
        except queue.Full:
            self._overflow.append(done)

    def _evidence_loop(self) -> None:
        """Records hits in turn. With clips, a hit waits in the clip buffer (asked for when it
        was decided) until its post-roll is in, then comes through the queue complete."""
        overflow = self._overflow
        ended = False
        while True:
            while overflow:
                self._record_logged(overflow.popleft())
            try:
                if ended:
                    item = self._hits.get_nowait()
                else:
                    item = self._hits.get(timeout=self._clip_stall_wait_s())
            except queue.Empty:
                if ended:
                    break
                if self.clips is not None:  # a clip overdue: its frames are not coming
                    self.clips.finish(ended_by_s=self.clips.now_s() - CLIP_STALL_S)
                continue
            if item is None:  # the source ended or the unit stops: keep what there is
                ended = True
                if self.clips is not None:
                    self.clips.finish()
                continue
            self._record_logged(item)

    def _clip_stall_wait_s(self) -> float | None:
        if self.clips is None or (end := self.clips.first_waiting_end_s) is None:
            return None
        return max(0.0, end + CLIP_STALL_S - self.clips.now_s())

    def _record_logged(self, item: _Pending) -> None:
        try:
            self._record(item)
        except PhonewatchError as e:
            self.stats.evidence_errors += 1
            log.error("evidence for %s not recorded: %s", item.hit.roi_id, e)
        except Exception:
            self.stats.evidence_errors += 1
            log.exception("evidence for %s not recorded", item.hit.roi_id)

    def _record(self, item: _Pending) -> None:
        t0 = time.perf_counter()
        hit, frame = item.hit, item.hit.best
        clip = item.clip  # complete (or all there is) by now: see _evidence_loop
        seq = self.numbers.reserve() if self.numbers is not None else None
        # Folders sort by time (pruning takes the oldest first) and carry the alert id.
        where = f"{self.camera_id}-{hit.roi_id}" if self.camera_id else hit.roi_id
        base_id = evidence_id(frame.t_wall_s, where)
        if seq is not None:
            base_id = f"{base_id}_{self.unit_id}-{seq}"
        ev_id, n = base_id, 1
        while (self.evidence.root / ev_id).exists():  # a file run again: its video time repeats
            n += 1
            ev_id = f"{base_id}-{n}"
        alert_id = f"{self.unit_id}-{seq}" if seq is not None else f"{self.unit_id}-{ev_id}"
        rec = self.evidence.save(
            alert_id=alert_id,
            ev_id=ev_id,
            frame=frame.image,
            crop=item.roi.crop(frame.image),
            clip=clip,
            clip_fps=self._clip_fps(),
        )
        model = item.model or self.classifier
        det = Detection(
            alert_id=alert_id,
            roi_id=hit.roi_id,
            score=round(hit.score, 4),
            frames_over=hit.frames_over,
            window=hit.window,
            frame_index=frame.index,
            t_wall_s=frame.t_wall_s,
            t_mono_s=frame.t_mono_s,
            model_name=model.name,
            model_version=model.version,
            model_sha256=model.sha256,
            threshold=self.params.score_on if item.score_on is None else item.score_on,
            evidence=rec,
            seq=seq,
            roi_box=_pixel_box(item.roi, frame.image),
            camera_id=self.camera_id,
            vehicle=_vehicle_info(hit, frame),
            frame_size=frame.size,
        )
        if self.stamp is not None:
            det = self.stamp(det)
        self.stats.evidence_ms.add((time.perf_counter() - t0) * 1e3)
        try:
            self.sink.send(det)
        except Exception:
            self.stats.sink_errors += 1
            log.exception(
                "alert sink refused %s (evidence is on disk at %s)", alert_id, rec.frame_path
            )
            return
        if self.on_hit is not None:
            self.on_hit(det)

    def _clip_fps(self) -> float:
        return float(self.source.fps or 10.0)

    # -- reporting ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        st = self.stats
        elapsed = max(1e-9, time.monotonic() - st.started_mono_s)
        return {
            **({"camera": self.camera_id} if self.camera_id else {}),
            "status": self._status,
            "frames_captured": st.captured,
            "frames_processed": st.processed,
            "dropped_frames": self.slot.dropped,
            "fps_in": round(st.captured / elapsed, 2),
            "fps": round(st.processed / elapsed, 2),
            "invoke_ms_p50": st.invoke_ms.percentile(50),
            "invoke_ms_p99": st.invoke_ms.percentile(99),
            "prep_ms_p50": st.prep_ms.percentile(50),
            "decide_ms_p50": st.decide_ms.percentile(50),
            "overhead_ms_p50": st.overhead_ms.percentile(50),
            "evidence_ms_p50": st.evidence_ms.percentile(50),
            "hits": st.hits,
            "evidence_errors": st.evidence_errors,
            "sink_errors": st.sink_errors,
            "camera_errors": st.camera_errors,
            "stage_errors": st.stage_errors,
            "evidence_pruned": self.evidence.pruned_count,
            "elapsed_s": round(elapsed, 2),
        }

    def summary_table(self) -> str:
        s = self.snapshot()
        rows = [
            ("frames captured", str(s["frames_captured"])),
            ("frames processed", str(s["frames_processed"])),
            ("frames dropped", str(s["dropped_frames"])),
            ("fps in / out", f"{s['fps_in']:.1f} / {s['fps']:.1f}"),
            ("invoke ms p50 / p99", f"{fmt_ms(s['invoke_ms_p50'])} / {fmt_ms(s['invoke_ms_p99'])}"),
            ("crop+preprocess ms p50", fmt_ms(s["prep_ms_p50"])),
            ("decide ms p50", fmt_ms(s["decide_ms_p50"])),
            ("evidence ms p50", fmt_ms(s["evidence_ms_p50"])),
            ("hits", str(s["hits"])),
            ("camera errors", str(s["camera_errors"])),
            ("evidence / sink errors", f"{s['evidence_errors']} / {s['sink_errors']}"),
            ("elapsed s", f"{s['elapsed_s']:.1f}"),
        ]
        return table(rows, title=f"phonewatch {self.unit_id}: {self.source.name}")


def _vehicle_info(hit: Hit[Frame] | TrackHit[Frame], frame: Frame) -> VehicleInfo | None:
    """The tracked vehicle of a per-vehicle hit, its box scaled from the inference image
    (where it was tracked) to the evidence frame; None for a fixed-ROI hit."""
    if not isinstance(hit, TrackHit):
        return None
    th = hit
    ih, iw = frame.inference_image.shape[:2]
    w, h = frame.size
    sx, sy = w / iw, h / ih
    x0, y0, x1, y1 = th.vehicle_box
    x0, y0 = max(0.0, x0 * sx), max(0.0, y0 * sy)
    x1, y1 = min(float(w), x1 * sx), min(float(h), y1 * sy)
    return VehicleInfo(
        track_id=th.track_id,
        box=(round(x0), round(y0), max(1, round(x1 - x0)), max(1, round(y1 - y0))),
        label=th.label or "vehicle",
        frames=th.frames,
    )


def _window_roi(roi_id: str, window: Sequence[float], image: np.ndarray) -> Roi:
    """A vehicle's window (pixels of ``image``, the inference image) as a region: fractions of
    the frame, so it crops the full-size image too."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = window
    return Roi.rect(roi_id, x0 / w, y0 / h, x1 / w, y1 / h, margin=0.0)


def _pixel_box(roi: Roi, image: np.ndarray) -> tuple[int, int, int, int]:
    """``roi``'s crop in ``image`` as ``(x, y, width, height)`` pixels (what the alert carries)."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = roi.crop_box(w, h)
    return x0, y0, x1 - x0, y1 - y0
