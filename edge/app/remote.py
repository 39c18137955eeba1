"""What the unit publishes when the control room asks: ``collect`` (ROI crops as training data)
and ``snapshot`` (the newest frame with the ROIs drawn). See docs/uplink.md.

Neither is an alert: they bypass the durable outbox and go out best effort through a
:class:`MediaUplink` (the MQTT uplink), dropped and counted when the broker is away.

The inference thread only *samples*: :meth:`Collector.on_frame` compares two times and, when a
sample is due, hands a reference to the (immutable) frame to a one-slot queue. Cropping, JPEG
encoding and publishing happen on the collector's own thread. If that thread is still busy the
frame is skipped (counted as ``collect_busy``) and the sample is taken from a later frame, so
inference never waits.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edge.adapters.evidence import encode_jpeg
from edge.core import messages as m
from edge.core.errors import EvidenceError, MessageError
from edge.core.frame import Frame
from edge.core.roi import Roi

log = logging.getLogger(__name__)

COLLECT_DEFAULT_INTERVAL_S = 2.0
SNAPSHOT_MAX_WIDTH = 1280
"""A snapshot is downscaled to at most this many pixels wide."""
SNAPSHOT_MAX_BYTES = 2_000_000
"""A snapshot JPEG never exceeds this (2 MB); the quality is lowered until it fits."""
SNAPSHOT_QUALITIES = (85, 70, 55, 40, 25, 10)


class MediaUplink(Protocol):
    """The part of the MQTT uplink that carries best-effort media (``MqttUplink``)."""

    def publish_collect(self, name: str, jpeg: bytes) -> bool: ...

    def publish_snapshot(self, jpeg: bytes, *, request_id: str | None = None) -> bool: ...


@dataclass(frozen=True, slots=True)
class CollectJob:
    """One ``collect`` command, resolved against this unit's ROIs."""

    request_id: str | None
    count: int
    interval_s: float
    rois: tuple[Roi, ...]

    @classmethod
    def from_command(cls, body: Mapping[str, Any], rois: Sequence[Roi]) -> CollectJob:
        """From a payload already checked against ``command.v1.json``. Unknown ROI ids are
        logged and ignored; when none is left (or none was named) every ROI is collected."""
        return cls(
            request_id=body.get("request_id"),
            count=int(body["count"]),
            interval_s=float(body.get("interval_s", COLLECT_DEFAULT_INTERVAL_S)),
            rois=choose_rois("collect", body, rois),
        )


def choose_rois(command: str, body: Mapping[str, Any], rois: Sequence[Roi]) -> tuple[Roi, ...]:
    """The ROIs a command's ``rois`` names, in its order. Unknown ids are logged and ignored;
    when none is left (or none was named) every ROI."""
    wanted = list(dict.fromkeys(body.get("rois") or []))
    by_id = {r.id: r for r in rois}
    unknown = [rid for rid in wanted if rid not in by_id]
    if unknown:
        log.warning(
            "%s %s: unknown roi id(s) %s ignored; this unit has %s",
            command,
            body.get("request_id") or "-",
            ", ".join(map(repr, unknown)),
            ", ".join(by_id),
        )
    return tuple(by_id[rid] for rid in wanted if rid in by_id) or tuple(rois)


@dataclass(slots=True)
class _Progress:
    job: CollectJob
    remaining: int
    last_sample_mono_s: float = float("-inf")
    published: int = 0
    dropped: int = 0


class Collector:
    """Samples frames for the running ``collect`` job and publishes their ROI crops.

    ``start(job)`` replaces any running job. ``on_frame`` is called by the inference thread.
    """

    def __init__(self, *, uplink: MediaUplink, jpeg_quality: int = 90) -> None:
        self.uplink = uplink
        self.jpeg_quality = jpeg_quality
        self._lock = threading.Lock()
        self._progress: _Progress | None = None
        self._queue: queue.Queue[tuple[_Progress, Frame, bool] | None] = queue.Queue(maxsize=1)
        self._idle = threading.Event()
        self._idle.set()
        self._counts = {
            "collect_samples": 0,
            "collect_published": 0,
            "collect_dropped": 0,
            "collect_busy": 0,
            "collect_errors": 0,
        }
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="pw-collect", daemon=True)
        self._thread.start()

    def start(self, job: CollectJob) -> None:
        with self._lock:
            old = self._progress
            self._progress = _Progress(job, job.count)
            self._idle.clear()
        if old is not None and old.remaining > 0:
            log.info(
                "collect %s replaced after %d of %d samples",
                old.job.request_id or "-",
                old.job.count - old.remaining,
                old.job.count,
            )
        log.info(
            "collect %s: %d sample(s) of %s, at least %.1f s apart",
            job.request_id or "-",
            job.count,
            ", ".join(r.id for r in job.rois),
            job.interval_s,
        )

    def on_frame(self, frame: Frame) -> None:
        """Inference thread: hand the frame over if a sample is due. Never blocks."""
        p = self._progress
        if p is None or frame.t_mono_s - p.last_sample_mono_s < p.job.interval_s:
            return
        with self._lock:
            if self._progress is not p or p.remaining <= 0:
                return
            last = p.remaining == 1
            try:
                self._queue.put_nowait((p, frame, last))
            except queue.Full:
                self._counts["collect_busy"] += 1
                return
            p.remaining -= 1
            p.last_sample_mono_s = frame.t_mono_s
            self._counts["collect_samples"] += 1
            if last:
                self._progress = None

    @property
    def is_active(self) -> bool:
        return not self._idle.is_set()

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no job runs and every sample taken is published (or dropped)."""
        return self._idle.wait(timeout_s)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            p, frame, last = item
            try:
                self._publish(p, frame)
            except Exception:  # log, count, keep serving later samples
                self._counts["collect_errors"] += 1
                log.exception("collect: frame %d not published", frame.index)
            if last:
                log.info(
                    "collect %s done: %d crop(s) published, %d dropped",
                    p.job.request_id or "-",
                    p.published,
                    p.dropped,
                )
                with self._lock:
                    if self._progress is None:
                        self._idle.set()

    def _publish(self, p: _Progress, frame: Frame) -> None:
        for roi in p.job.rois:
            try:
                name = m.collect_name(roi.id, frame.t_wall_s)
                jpeg = encode_jpeg(roi.crop(frame.image), self.jpeg_quality)
            except (EvidenceError, MessageError) as e:
                self._counts["collect_errors"] += 1
                log.warning("collect: crop %s of frame %d skipped: %s", roi.id, frame.index, e)
                continue
            if self.uplink.publish_collect(name, jpeg):
                p.published += 1
                self._counts["collect_published"] += 1
            else:
                p.dropped += 1
                self._counts["collect_dropped"] += 1

    def stats(self) -> dict[str, Any]:
        return dict(self._counts)

    def close(self) -> None:
        """Stop the worker; a sample being published is finished first. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            self._progress = None
        while True:  # make room for the stop marker (the worker takes one item at a time)
            try:
                self._queue.put(None, timeout=0.5)
                break
            except queue.Full:
                if not self._thread.is_alive():
                    break
        self._thread.join(timeout=5.0)
        self._idle.set()


def render_snapshot(
    image: np.ndarray,
    rois: Sequence[Roi],
    scores: Mapping[str, float],
    threshold: float,
    *,
    max_width: int = SNAPSHOT_MAX_WIDTH,
    max_bytes: int = SNAPSHOT_MAX_BYTES,
) -> bytes:
    """The frame downscaled to ``max_width``, ROIs and scores drawn (as ``roi-preview``),
    as a JPEG of at most ``max_bytes`` (quality lowered step by step until it fits)."""
    import cv2

    from edge.app.overlay import draw_rois

    h, w = image.shape[:2]
    if w > max_width:
        image = cv2.resize(
            image, (max_width, max(1, round(h * max_width / w))), interpolation=cv2.INTER_AREA
        )
    drawn = draw_rois(image, rois, scores, threshold)
    size = 0
    for quality in SNAPSHOT_QUALITIES:
        jpeg = encode_jpeg(drawn, quality)
        if len(jpeg) <= max_bytes:
            return jpeg
        size = len(jpeg)
    raise EvidenceError(
        f"snapshot is {size} bytes even at JPEG quality {SNAPSHOT_QUALITIES[-1]}, over {max_bytes}"
    )
