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
    "AlertSink", "Classifier", "Clock", "Detection", "EvidenceRecord", "FrameSource",
    "ManualClock", "Scheduled", "Scheduler", "SystemClock",
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


@dataclass(frozen=True, slots=True)
class Detection:
    """A confirmed hit with its evidence, ready for an ``AlertSink``.

    The uplink turns this into a signed alert (adding unit id, sequence number, GPS fix).
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


class AlertSink(Protocol):
    def send(self, detection: Detection) -> None: ...
    def close(self) -> None: ...
