"""The frame that flows through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One camera frame, copied out of the source (never a live buffer).

    ``image`` is the full-resolution BGR ``uint8`` array kept as evidence. ``lores`` is an
    optional smaller BGR image of the same field of view for inference (picamera2's ``lores``
    stream); when it is ``None`` inference crops come from ``image``. ROIs are fractions of the
    frame, so they apply to either.
    """

    index: int
    t_mono_s: float
    """Capture time on the monotonic clock (intervals, decisions)."""
    t_wall_s: float
    """Capture time on the system wall clock, seconds since the Unix epoch (payloads)."""
    image: np.ndarray
    lores: np.ndarray | None = None
    source: str = field(default="")

    @property
    def inference_image(self) -> np.ndarray:
        return self.image if self.lores is None else self.lores

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the evidence image."""
        return int(self.image.shape[1]), int(self.image.shape[0])
