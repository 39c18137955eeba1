"""Vehicle boxes and the pure half of a detector: decoding outputs, mapping boxes, NMS.

``Box`` is the common currency for vehicles on a frame: ``(x0, y0, x1, y1)`` in frame pixels
as floats, ``x0 <= x1`` and ``y0 <= y1``. A detector gives ``VehicleBox`` (a box, its score and
its label); the tracker carries ``Box`` values between detections.

Two detector output kinds are decoded here (``edge.core.detection_spec`` names them):

* ``ssd``: a ``TFLite_Detection_PostProcess`` head, already decoded and suppressed per class
  by the model: boxes ``[1, N, 4]`` (``ymin, xmin, ymax, xmax``, normalised to the model
  input), classes ``[1, N]``, scores ``[1, N]``, count ``[1]``.
* ``raw``: a YOLO-style single output ``[1, N, 4 + C]`` (or ``[1, 4 + C, N]``): per anchor
  ``cx, cy, w, h`` normalised to the model input, then one score per class. Each anchor's
  score is its best score among the vehicle classes, then non-maximum suppression runs here.

After either, the boxes of the vehicle classes at or above ``score_min`` go through one more,
class-agnostic NMS: a van that the model calls both "car" and "truck" is one vehicle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Box = tuple[float, float, float, float]
"""``(x0, y0, x1, y1)`` in frame pixels."""


@dataclass(frozen=True, slots=True)
class VehicleBox:
    """One detected vehicle: where it is on the frame, how sure the detector is, and what."""

    box: Box
    score: float
    label: str

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where the frame sits in the model's input: ``model = frame * scale + pad`` per axis.

    A plain (stretching) resize has a different scale per axis and no padding; a letterbox
    keeps the aspect ratio (one scale) and pads the short side equally on both ends.
    """

    frame_width: int
    frame_height: int
    model_width: int
    model_height: int
    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    @classmethod
    def stretch(cls, frame_wh: tuple[int, int], model_wh: tuple[int, int]) -> Placement:
        (fw, fh), (mw, mh) = frame_wh, model_wh
        return cls(fw, fh, mw, mh, mw / fw, mh / fh, 0.0, 0.0)

    @classmethod
    def letterbox(cls, frame_wh: tuple[int, int], model_wh: tuple[int, int]) -> Placement:
        """The frame scaled to fit inside the model input and centred; see :meth:`content`."""
        (fw, fh), (mw, mh) = frame_wh, model_wh
        s = min(mw / fw, mh / fh)
        cw, ch = content_size(fw, fh, s, mw, mh)
        return cls(fw, fh, mw, mh, cw / fw, ch / fh, (mw - cw) // 2, (mh - ch) // 2)

    def content(self) -> tuple[int, int, int, int]:
        """``(x, y, width, height)`` of the resized frame inside the model input."""
        cw = round(self.frame_width * self.scale_x)
        ch = round(self.frame_height * self.scale_y)
        return int(self.pad_x), int(self.pad_y), cw, ch

    def to_frame(self, xyxy_norm: np.ndarray) -> np.ndarray:
        """``[K, 4]`` boxes ``x0, y0, x1, y1`` normalised to the model input -> frame pixels,
        clipped to the frame."""
        out = np.empty_like(xyxy_norm, dtype=np.float64)
        out[:, 0::2] = (xyxy_norm[:, 0::2] * self.model_width - self.pad_x) / self.scale_x
        out[:, 1::2] = (xyxy_norm[:, 1::2] * self.model_height - self.pad_y) / self.scale_y
        np.clip(out[:, 0::2], 0.0, float(self.frame_width), out=out[:, 0::2])
        np.clip(out[:, 1::2], 0.0, float(self.frame_height), out=out[:, 1::2])
        return out


def content_size(fw: int, fh: int, s: float, mw: int, mh: int) -> tuple[int, int]:
    """The letterboxed frame's size in the model input (at least 1 pixel, at most the input)."""
    return min(mw, max(1, round(fw * s))), min(mh, max(1, round(fh * s)))


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when either is empty)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms(boxes: np.ndarray, scores: np.ndarray, iou_max: float) -> list[int]:
    """Greedy non-maximum suppression: indices kept, best score first. A box is dropped when
    its IoU with a kept, higher-scoring box is above ``iou_max``. Ties keep the lower index."""
    order = np.argsort(-scores, kind="stable")
    x0, y0, x1, y1 = (boxes[:, i].astype(np.float64) for i in range(4))
    area = np.maximum(x1 - x0, 0.0) * np.maximum(y1 - y0, 0.0)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest])
        ih = np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest])
        inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
        union = area[i] + area[rest] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            overlap = np.where(union > 0, inter / union, 0.0)
        order = rest[overlap <= iou_max]
    return keep


@dataclass(frozen=True, slots=True)
class Candidates:
    """Decoded detections before the final filter: boxes ``x0, y0, x1, y1`` normalised to the
    model input, with a score and a class id each."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray


def decode_ssd(
    boxes: np.ndarray, classes: np.ndarray, scores: np.ndarray, count: np.ndarray
) -> Candidates:
    """The four outputs of ``TFLite_Detection_PostProcess`` -> candidates (first ``count``)."""
    n = int(np.asarray(count).reshape(-1)[0])
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = max(0, min(n, b.shape[0]))
    yx = b[:n]
    return Candidates(
        boxes=yx[:, [1, 0, 3, 2]],
        scores=np.asarray(scores, dtype=np.float64).reshape(-1)[:n],
        class_ids=np.rint(np.asarray(classes, dtype=np.float64).reshape(-1)[:n]).astype(np.intp),
    )


def decode_raw(
    out: np.ndarray, n_classes: int, wanted: Sequence[int], score_min: float, iou_max: float
) -> Candidates:
    """A YOLO-style ``[N, 4 + C]`` array (already dequantised, anchors on rows) -> candidates.

    Each anchor is scored by its best class among ``wanted``; anchors below ``score_min`` are
    dropped, then greedy NMS (``iou_max``) runs across them, class-agnostic."""
    if out.ndim != 2 or out.shape[1] != 4 + n_classes:
        raise ValueError(f"raw output must be [N, {4 + n_classes}], got {list(out.shape)}")
    cls_scores = out[:, 4:][:, list(wanted)]
    if cls_scores.shape[1] == 0:
        empty = np.zeros((0, 4))
        return Candidates(empty, np.zeros(0), np.zeros(0, dtype=np.intp))
    best = np.argmax(cls_scores, axis=1)
    score = cls_scores[np.arange(out.shape[0]), best]
    sel = score >= score_min
    cx, cy, w, h = (out[sel, i].astype(np.float64) for i in range(4))
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    ids = np.asarray(wanted, dtype=np.intp)[best[sel]]
    keep = nms(xyxy, score[sel], iou_max)
    return Candidates(xyxy[keep], score[sel][keep].astype(np.float64), ids[keep])


def select(
    cand: Candidates,
    labels: Sequence[str],
    wanted: Sequence[int],
    score_min: float,
    iou_max: float,
    place: Placement,
) -> list[VehicleBox]:
    """Keep the wanted classes at or above ``score_min``, map them to frame pixels, drop
    cross-class duplicates (class-agnostic NMS) and return them best first. Boxes left with
    no area after clipping to the frame are dropped."""
    ok = np.isin(cand.class_ids, np.asarray(wanted, dtype=np.intp)) & (cand.scores >= score_min)
    if not ok.any():
        return []
    px = place.to_frame(cand.boxes[ok])
    scores = cand.scores[ok]
    ids = cand.class_ids[ok]
    real = (px[:, 2] > px[:, 0]) & (px[:, 3] > px[:, 1])
    px, scores, ids = px[real], scores[real], ids[real]
    out: list[VehicleBox] = []
    for i in nms(px, scores, iou_max):
        x0, y0, x1, y1 = (float(v) for v in px[i])
        out.append(VehicleBox((x0, y0, x1, y1), float(scores[i]), labels[int(ids[i])]))
    return out
