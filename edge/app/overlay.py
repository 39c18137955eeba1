"""Drawing the ROIs and their scores on a frame: shared by ``roi-preview`` and the ``snapshot``
command, so an installer and the control room see the same picture."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edge.core.roi import Roi

HOT_BGR = (0, 0, 255)
"""Outline of a region whose score is at or over the threshold."""
COLD_BGR = (0, 200, 0)
CROP_BGR = (200, 200, 0)
"""The crop box (the region grown by its margin): what the classifier sees."""


def draw_rois(img: np.ndarray, rois: Sequence[Roi], scores: Mapping[str, float],
              threshold: float) -> np.ndarray:
    """A copy of ``img`` (BGR) with each region outlined, its crop box, and ``id score``.

    ROIs are fractions of the frame, so this works on a downscaled frame as well."""
    import cv2

    out = img.copy()
    h, w = out.shape[:2]
    for r in rois:
        score = scores.get(r.id)
        hot = score is not None and score >= threshold
        colour = HOT_BGR if hot else COLD_BGR
        pts = np.array([(int(x * w), int(y * h)) for x, y in r.points], dtype=np.int32)
        cv2.polylines(out, [pts], True, colour, 2)
        x0, y0, x1, y1 = r.crop_box(w, h)
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), CROP_BGR, 1)
        label = r.id if score is None else f"{r.id} {score:.2f}"
        at = (x0 + 4, max(y0 - 6, 14))
        cv2.putText(out, label, at, cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, label, at, cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 1, cv2.LINE_AA)
    return out
