"""Ports: the small interfaces adapters implement. Only the composition root builds adapters.

Each port has at least one fake that behaves like the real thing (a replayed file for a
camera, ``loop://`` or a replayed log for GPS, gpiozero's ``MockFactory`` for GPIO).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from edge.core.clock import Clock, ManualClock, Scheduled, Scheduler, SystemClock
from edge.core.frame import Frame

__all__ = [
    "AlertSink",
    "Classifier",
    "Clock",
    "Detection",
    "EvidenceRecord",
    "FrameSource",
    "ManualClock",
    "Scheduled",
    "Scheduler",
    "SystemClock",
    "VehicleInfo",
]


class FrameSource(Protocol):
    """A camera. ``read()`` blocks for the next frame; ``None`` means the source ended
    (end of a file); a lost live stream raises ``CameraError`` and may be reopened."""

    name: str

    def open(self) -> None: ...
    def read(self) -> Frame | None: ...
    def close(self) -> None: ...
    @property
    def fps(self) -> float | None: ...
    @property
    def is_live(self) -> bool: ...


class Classifier(Protocol):
    """Scores crops: ``P(driver holds a phone)`` per crop, in 0..1."""

    name: str
    version: str
    sha256: str
    threshold: float
    accelerator: str

    def preprocess(self, crop_bgr: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray: ...
    def score_batch(self, tensors: Sequence[np.ndarray]) -> list[float]: ...
    def score(self, crop_bgr: np.ndarray, mask: np.ndarray | None = None) -> float: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class EvidenceRecord:
    """What was kept on disk for one hit."""

    alert_id: str
    frame_path: str
    frame_sha256: str
    frame_bytes: int
    crop_path: str
    crop_sha256: str
    crop_bytes: int
    clip_path: str | None = None
    clip_sha256: str | None = None
    clip_bytes: int | None = None
    clip_type: str | None = None
    """The clip's media type: ``video/webm`` (VP8, plays in a browser) or ``video/x-msvideo``
    (Motion-JPEG AVI, where this OpenCV has no VP8 encoder)."""
    frame_jpeg: bytes | None = field(default=None, repr=False, compare=False)
    """The frame's JPEG bytes as written: the uplink sends these, nobody re-reads the file
    (None where a record is rebuilt from disk)."""
    crop_jpeg: bytes | None = field(default=None, repr=False, compare=False)
    """The driver-window crop's JPEG bytes as written (sent with the alert, like the frame)."""
    clip_data: bytes | None = field(default=None, repr=False, compare=False)
    """The clip's bytes as written (sent after the alert, frame and crop; best effort)."""


@dataclass(frozen=True, slots=True)
class VehicleInfo:
    """The tracked vehicle an alert is about (the vehicle stage, issue 22)."""

    track_id: int
    """The tracker's id for this vehicle pass (0 or more; unique on the unit while it runs)."""
    box: tuple[int, int, int, int]
    """The vehicle as ``(x, y, width, height)`` in the evidence frame's pixels."""
    label: str
    """What the detector called it: ``car``, ``truck``, ``bus``, ``van``..."""
    frames: int
    """Frames the track was seen in before the alert."""


@dataclass(frozen=True, slots=True)
class Detection:
    """A confirmed hit with its evidence, position and time, ready for any ``AlertSink``.

    The app stamps it (GPS fix read when the hit is recorded, the alert time by the one rule
    in :func:`edge.core.messages.alert_time`); the uplink only adds what the wire needs (the
    sequence number and the signature), so a JSON-lines sink records the same position.
    """

    alert_id: str
    roi_id: str
    score: float
    frames_over: int
    window: int
    frame_index: int
    t_wall_s: float
    """System wall-clock time of the best frame (seconds since the Unix epoch)."""
    t_mono_s: float
    model_name: str
    model_version: str
    model_sha256: str
    threshold: float
    evidence: EvidenceRecord
    extra: dict[str, Any] = field(default_factory=dict)
    fix: dict[str, Any] | None = None
    """The GPS fix as :func:`edge.core.messages.fix_dict` keeps it (with its age), or None."""
    gps_state: str | None = None
    """What the GPS source said when the hit was recorded; None: the unit has no GPS."""
    time_utc: str | None = None
    """The alert's UTC time (ISO 8601 ``Z``); None: from ``t_wall_s``."""
    time_source: str = "system"
    """``gps`` when ``time_utc`` came from a fresh fix, else ``system``."""
    roi_box: tuple[int, int, int, int] | None = None
    """The scored crop as ``(x, y, width, height)`` in the evidence frame's pixels, so the
    console can draw it; None: not known (the alert then carries only ``roi_id``)."""
    camera_id: str | None = None
    """The camera that saw it (``[[cameras]]`` id); None: the unit's only camera, as before
    (the alert then carries no ``camera``)."""
    vehicle: VehicleInfo | None = None
    """The tracked vehicle the hit belongs to; None: fixed-ROI mode (the scored window box
    stays in ``roi_box`` either way)."""
    frame_size: tuple[int, int] | None = None
    """The evidence frame's ``(width, height)`` in pixels, so the control room can tell a box
    outside the frame; None: not known."""
    seq: int | None = None
    """The unit's sequence number, reserved before the evidence was saved, so ``alert_id``
    (``<unit>-<seq>``) is the one id on the unit's disk, in its log and on the dashboard.
    None: the sink numbers the alert itself."""


class AlertNumbers(Protocol):
    """Hands out a unit's alert sequence numbers: durable, never reused, never backwards."""

    def reserve(self) -> int: ...


class Uplink(Protocol):
    """The link to the control room: alerts through a durable outbox, plus best-effort media
    and heartbeats. Commands arrive through the ``on_command`` callback it was built with."""

    def send(self, detection: Detection) -> None: ...
    def close(self) -> None: ...
    @property
    def is_connected(self) -> bool: ...
    def wait_connected(self, timeout_s: float) -> bool: ...
    def publish_heartbeat(self, heartbeat: dict[str, Any]) -> bool: ...
    def set_status(self, state: str, reason: str | None = None) -> None: ...
    def publish_collect(self, name: str, jpeg: bytes) -> bool: ...
    def publish_snapshot(self, jpeg: bytes, *, request_id: str | None = None) -> bool: ...
    def publish_model_status(self, doc: dict[str, Any]) -> bool: ...
    def stats(self) -> dict[str, Any]: ...


class AlertSink(Protocol):
    def send(self, detection: Detection) -> None: ...
    def close(self) -> None: ...
