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
LABEL_BG_BGR = (32, 32, 32)
"""The box behind each label and the legend, so text reads on any picture."""
LABEL_FG_BGR = (255, 255, 255)
VANISH_BGR = (0, 220, 255)
"""The rear view's straight-ahead column and horizon row (they should meet where the road
vanishes)."""

_FONT_SCALE = 0.6
_PAD = 4


def legend_lines(threshold: float) -> list[str]:
    """What the colours mean (drawn in the picture and printed by ``roi-preview``)."""
    return [
        f"red: region scoring >= {threshold:.2f} (phone)",
        f"green: region scoring < {threshold:.2f}",
        "cyan: crop the model sees (region + margin)",
    ]


def draw_rois(
    img: np.ndarray,
    rois: Sequence[Roi],
    scores: Mapping[str, float],
    threshold: float,
    *,
    legend: bool = True,
) -> np.ndarray:
    """A copy of ``img`` (BGR) with each region outlined, its crop box, ``id score`` once on
    a dark box, and (``legend``) a key to the colours in the bottom-left corner.

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
        _label(out, label, x0, y0, colour)
    if legend:
        _legend(out, threshold)
    return out


def draw_vanishing_point(img: np.ndarray, axis_x: float, horizon_y: float) -> np.ndarray:
    """A copy of ``img`` with the ``rear`` view's straight-ahead column (``axis_x``) and horizon
    row (``horizon_y``), shares of the frame, drawn and labelled: an installer checks that they
    cross where the road vanishes (docs/vehicles.md, "The rear view's side glass")."""
    import cv2

    out = img.copy()
    h, w = out.shape[:2]
    x = min(max(round(axis_x * w), 0), w - 1)
    y = min(max(round(horizon_y * h), 0), h - 1)
    cv2.line(out, (x, 0), (x, h - 1), VANISH_BGR, 1)
    cv2.line(out, (0, y), (w - 1, y), VANISH_BGR, 1)
    _label(out, f"straight ahead (axis_x {axis_x:.2f})", min(x + 4, w - 1), 0, VANISH_BGR)
    _label(out, f"horizon (horizon_y {horizon_y:.2f})", 0, y, VANISH_BGR)
    return out


def _text_size(text: str) -> tuple[int, int, int]:
    import cv2

    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, _FONT_SCALE, 1)
    return tw, th, base


def _label(out: np.ndarray, text: str, x: int, y_top: int, colour: tuple[int, int, int]) -> None:
    """``text`` once, in ``colour`` on a dark box just above ``(x, y_top)`` (below it when
    there is no room above), kept inside the picture."""
    import cv2

    h, w = out.shape[:2]
    tw, th, base = _text_size(text)
    bw, bh = tw + 2 * _PAD, th + base + 2 * _PAD
    bx = min(max(0, x), max(0, w - bw))
    by = y_top - bh if y_top - bh >= 0 else min(y_top, max(0, h - bh))
    cv2.rectangle(out, (bx, by), (bx + bw - 1, by + bh - 1), LABEL_BG_BGR, cv2.FILLED)
    cv2.putText(
        out,
        text,
        (bx + _PAD, by + _PAD + th),
        cv2.FONT_HERSHEY_SIMPLEX,
        _FONT_SCALE,
        colour,
        1,
        cv2.LINE_AA,
    )


def _legend(out: np.ndarray, threshold: float) -> None:
    import cv2

    h, w = out.shape[:2]
    rows = [
        (HOT_BGR, legend_lines(threshold)[0]),
        (COLD_BGR, legend_lines(threshold)[1]),
        (CROP_BGR, legend_lines(threshold)[2]),
    ]
    sizes = [_text_size(t) for _, t in rows]
    line_h = max(th + base for _, th, base in sizes) + _PAD
    swatch = line_h - _PAD
    bw = swatch + 3 * _PAD + max(tw for tw, _, _ in sizes)
    bh = len(rows) * line_h + _PAD
    if bw > w or bh > h:  # too small a picture for a key: leave it out
        return
    x0, y0 = 0, h - bh
    cv2.rectangle(out, (x0, y0), (x0 + bw - 1, h - 1), LABEL_BG_BGR, cv2.FILLED)
    for i, ((colour, text), (_, th, _)) in enumerate(zip(rows, sizes, strict=True)):
        top = y0 + _PAD + i * line_h
        cv2.rectangle(out, (x0 + _PAD, top), (x0 + _PAD + swatch - 1, top + swatch - 1), colour, 2)
        cv2.putText(
            out,
            text,
            (x0 + 2 * _PAD + swatch + _PAD, top + th),
            cv2.FONT_HERSHEY_SIMPLEX,
            _FONT_SCALE,
            LABEL_FG_BGR,
            1,
            cv2.LINE_AA,
        )
