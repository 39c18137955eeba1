"""What the dashboard shows of an evidence frame: everything outside the driver's region blurred.

An evidence frame shows passengers, pedestrians and other drivers as well as the driver the
alert is about. The dashboard and its thumbnails show a *redacted* copy: the region the unit
scored (the alert's ``roi_box``, the crop's box in the frame's pixels) stays sharp and the rest
of the frame is blurred beyond recognition, faces and number plates included. An alert without
a box (a unit older than the box) is blurred whole; its crop, shown beside, is the driver's
window. The original stays as it arrived, hashed and covered by the unit's signature, in the
court bundle and behind ``/alerts/<id>/original.jpg`` for the users named in
``[privacy] original_viewers``; every view and export of it is audited.

The alert's video clip is redacted the same way, frame by frame (:func:`redact_clip`): the box
is scaled from the evidence frame's size to the clip's, and the result is re-encoded as WebM
VP8, which every browser plays (whatever container the unit sent).

Blurring the whole outside, not only what a face or person detector finds, is deliberate: a
detector misses (profile faces, people behind glass, at night), and a miss here is a stranger's
face on an operator's screen.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np

QUALITY = 85
_SMALL = 24
"""Width, in pixels, the outside is shrunk to before it is blown up again: at 1080p one cell
is 80 pixels across, wider than a face at any distance the camera sees one."""


def redact(img: np.ndarray, box: list[float] | None) -> np.ndarray:
    """``img`` with everything outside ``box`` (``[x, y, w, h]`` pixels) blurred; a new array.

    The outside is shrunk to a few dozen pixels across and smoothed back up: cheap at 1080p and
    not reversible (the detail is gone, not hidden under a filter one could invert)."""
    h, w = img.shape[:2]
    small_w = max(1, min(_SMALL, w))
    small_h = max(1, round(h * small_w / w))
    small = cv2.resize(img, (small_w, small_h), interpolation=cv2.INTER_AREA)
    out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if box is not None:
        x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
        x1, y1 = min(w, int(box[0] + box[2])), min(h, int(box[1] + box[3]))
        if x1 > x0 and y1 > y0:
            out[y0:y1, x0:x1] = img[y0:y1, x0:x1]
    return out


def redact_jpeg(jpeg: bytes, box: list[float] | None) -> bytes | None:
    """The redacted JPEG of ``jpeg`` (see :func:`redact`); None if it does not decode."""
    img = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return None
    ok, out = cv2.imencode(".jpg", redact(img, box), [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
    return bytes(out.tobytes()) if ok else None


CLIP_FPS_DEFAULT = 10.0
"""Frame rate of a redacted clip whose original does not say its own."""


def jpeg_size(jpeg: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG, None if it does not decode."""
    img = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_GRAYSCALE)
    return None if img is None else (int(img.shape[1]), int(img.shape[0]))


def scale_box(
    box: list[float] | None, src: tuple[int, int] | None, dst: tuple[int, int]
) -> list[float] | None:
    """``box`` (``[x, y, w, h]`` in an image of size ``src``) in an image of size ``dst``;
    None (blur everything) if either the box or the source size is unknown."""
    if box is None or src is None or src[0] <= 0 or src[1] <= 0:
        return None
    sx, sy = dst[0] / src[0], dst[1] / src[1]
    return [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]


def redact_clip(
    clip: bytes, box: list[float] | None, frame_size: tuple[int, int] | None
) -> bytes | None:
    """The clip with every frame redacted (see :func:`redact`) as WebM VP8; None if it does not
    decode. ``box`` is in the pixels of the evidence frame, whose size is ``frame_size``
    (the clip is usually smaller); without either, every frame is blurred whole."""
    with tempfile.TemporaryDirectory(prefix="phonewatch-clip-") as d:
        src, dst = Path(d) / "in", Path(d) / "out.webm"
        src.write_bytes(clip)
        cap = cv2.VideoCapture(str(src))
        writer: cv2.VideoWriter | None = None
        scaled: list[float] | None = None
        try:
            fps = cap.get(cv2.CAP_PROP_FPS)
            fps = fps if 0 < fps <= 120 else CLIP_FPS_DEFAULT
            while True:
                ok, img = cap.read()
                if not ok or img is None:
                    break
                h, w = img.shape[:2]
                if writer is None:
                    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter.fourcc(*"VP80"), fps, (w, h))
                    scaled = scale_box(box, frame_size, (w, h))
                writer.write(redact(img, scaled))
        finally:
            cap.release()
            if writer is not None:
                writer.release()
        if writer is None or not dst.exists():
            return None
        return dst.read_bytes()
