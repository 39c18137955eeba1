"""Preprocessing shared by training and inference: one function, used by both.

``preprocess(crop_bgr, spec)`` turns a BGR ``uint8`` crop into the float tensor the network
sees (``spec.height x spec.width x channels``, normalised). ``quantise`` then maps it onto the
model's integer input with the ``scale``/``zero_point`` read from the model itself.
The training scripts in ``models/`` call the same ``preprocess`` so the unit sees exactly
what the network was trained on.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np

Layout = Literal["NHWC", "NCHW"]
Colour = Literal["RGB", "BGR", "GRAY"]


@dataclass(frozen=True, slots=True)
class InputSpec:
    """What a network expects as input (from the model's sidecar)."""

    width: int
    height: int
    layout: Layout = "NHWC"
    colour: Colour = "RGB"
    mean: tuple[float, ...] = (127.5, 127.5, 127.5)
    """Subtracted from 0..255 pixel values, per channel (in ``colour`` order)."""
    std: tuple[float, ...] = (127.5, 127.5, 127.5)
    """Divides the result, per channel."""

    @property
    def channels(self) -> int:
        return 1 if self.colour == "GRAY" else 3


_SUBSAMPLES = 2
"""Samples per output pixel along each axis (so 4 per pixel): a cheap area average."""


def _sample_index(src: int, dst: int) -> np.ndarray:
    # Centres of ``dst * _SUBSAMPLES`` equal cells spanning ``src`` source pixels.
    n = dst * _SUBSAMPLES
    idx = ((np.arange(n, dtype=np.float64) + 0.5) * (src / n)).astype(np.intp)
    return np.minimum(idx, src - 1)


def resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an ``HxWxC`` (or ``HxW``) image to ``height x width``; returns ``float32``.

    Each output pixel is the mean of a 2x2 grid of source samples spread evenly over the
    area it covers: close to an area (box) filter when shrinking, close to nearest-neighbour
    when enlarging. Pure numpy and cheap at 1080p, so training and the unit agree exactly.
    """
    if img.ndim not in (2, 3) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"cannot resize an image of shape {img.shape}")
    if width <= 0 or height <= 0:
        raise ValueError(f"target size must be positive, got {width}x{height}")
    iy = _sample_index(img.shape[0], height)
    ix = _sample_index(img.shape[1], width)
    g = img.take(iy, axis=0).take(ix, axis=1).astype(np.float32)
    k = _SUBSAMPLES
    # Sum the k x k samples of each output pixel: rows first, then columns (contiguous adds).
    rows = g.reshape(height, k, width * k, *g.shape[2:])
    acc = rows[:, 0].copy()
    for dy in range(1, k):
        acc += rows[:, dy]
    cols = acc.reshape(height, width, k, *g.shape[2:])
    out = cols[:, :, 0].copy()
    for dx in range(1, k):
        out += cols[:, :, dx]
    out *= np.float32(1.0 / (k * k))
    return out


def to_colour(img_bgr: np.ndarray, colour: Colour) -> np.ndarray:
    """Convert a BGR (or single-channel) image to the network's colour order."""
    if img_bgr.ndim == 2:
        img_bgr = img_bgr[:, :, None]
    if img_bgr.shape[2] == 1:
        return img_bgr if colour == "GRAY" else np.repeat(img_bgr, 3, axis=2)
    if colour == "BGR":
        return img_bgr
    if colour == "RGB":
        return img_bgr[:, :, ::-1]
    # ITU-R BT.601 luma, the same weights OpenCV and PIL use.
    f = img_bgr.astype(np.float32, copy=False)
    grey: np.ndarray = f[:, :, 0] * 0.114 + f[:, :, 1] * 0.587 + f[:, :, 2] * 0.299
    return grey[:, :, None]


MASK_FILL = 128.0
"""Pixel value (0..255) that replaces what lies outside a polygon ROI."""


def preprocess(crop_bgr: np.ndarray, spec: InputSpec, mask: np.ndarray | None = None) -> np.ndarray:
    """BGR ``uint8`` crop -> normalised ``float32`` tensor ``H x W x C`` (one image, no batch).

    Steps, in order: resize to ``spec`` (:func:`resize`), convert colour order,
    subtract ``mean`` and divide by ``std`` per channel. The layout (NHWC/NCHW) and the batch
    axis are applied by :func:`to_layout` so training can batch many crops at once.
    ``mask`` (boolean, the crop's height x width, True = keep) greys out what lies outside a
    polygon ROI; it is resized with the same sampling, so edge pixels blend.
    """
    img = resize(crop_bgr, spec.width, spec.height)
    if mask is not None:
        if mask.shape[:2] != crop_bgr.shape[:2]:
            raise ValueError(f"mask {mask.shape[:2]} does not match the crop {crop_bgr.shape[:2]}")
        raw = mask.view(np.uint8) if mask.dtype == bool else mask
        keep = resize(raw, spec.width, spec.height)
        if img.ndim == 3:
            keep = keep[:, :, None]
        img = img * keep + np.float32(MASK_FILL) * (1.0 - keep)
    img = to_colour(img, spec.colour)
    mean = np.asarray(spec.mean[: spec.channels], dtype=np.float32)
    inv_std = np.float32(1.0) / np.asarray(spec.std[: spec.channels], dtype=np.float32)
    out: np.ndarray = np.subtract(img, mean, dtype=np.float32)  # makes the RGB view contiguous
    out *= inv_std
    return out


def to_layout(batch_nhwc: np.ndarray, layout: Layout) -> np.ndarray:
    """Re-order an ``NHWC`` batch for a model that wants ``layout``."""
    if layout == "NHWC":
        return batch_nhwc
    return np.ascontiguousarray(batch_nhwc.transpose(0, 3, 1, 2))


def quantise(x: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """Float tensor -> integer tensor with the model's own quantisation parameters.

    ``scale`` and ``zero_point`` must come from the model's input tensor; a float model
    (``scale == 0``) gets the float tensor back unchanged.
    """
    dt = np.dtype(dtype)
    if dt.kind == "f" or scale == 0:
        return x.astype(dt, copy=False)
    info = np.iinfo(dt)
    q = np.rint(x / scale) + zero_point
    out: np.ndarray = np.clip(q, info.min, info.max).astype(dt)
    return out


def dequantise(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Integer tensor -> float with the model's output quantisation parameters."""
    if q.dtype.kind == "f" or scale == 0:
        return q.astype(np.float32, copy=False)
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


@functools.lru_cache(maxsize=64)
def _sum_lut(
    spec: InputSpec, scale: float, zero_point: int, dtype_str: str
) -> tuple[np.ndarray, bool]:
    """``lut[c * 1021 + s]`` = the quantised input for channel ``c`` when the four samples of an
    output pixel sum to ``s`` (just ``lut[s]``, flagged ``False``, when all channels agree).
    Built with exactly the float operations of :func:`resize`, :func:`preprocess` and
    :func:`quantise`, so a lookup gives bit-identical results."""
    k2 = _SUBSAMPLES * _SUBSAMPLES
    sums = np.arange(255 * k2 + 1, dtype=np.float32)
    avg = sums * np.float32(1.0 / k2)  # what resize() returns for that sum
    mean = np.asarray(spec.mean[: spec.channels], dtype=np.float32)
    inv_std = np.float32(1.0) / np.asarray(spec.std[: spec.channels], dtype=np.float32)
    x = np.subtract(avg[:, None], mean, dtype=np.float32)
    x *= inv_std
    q = quantise(x, scale, zero_point, np.dtype(dtype_str))  # (sums, channels)
    if all(np.array_equal(q[:, 0], q[:, c]) for c in range(1, q.shape[1])):
        return np.ascontiguousarray(q[:, 0]), False  # one table serves every channel
    return np.ascontiguousarray(q.T).reshape(-1), True


def preprocess_quantised(
    crop_bgr: np.ndarray,
    spec: InputSpec,
    scale: float,
    zero_point: int,
    dtype: np.dtype,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """``quantise(preprocess(crop, spec, mask), scale, zero_point, dtype)``, faster.

    For an integer-input model and an RGB/BGR crop without a mask, the four samples of each
    output pixel are summed as integers and mapped through a per-channel lookup table built
    with the very same float operations, so the result is identical to the slow path (a test
    checks it) at a fraction of the cost. Anything else takes the slow path.

    The gather picks the samples in sub-sample-major order (all first samples of every output
    pixel, then all second ones), with the colour order folded into the column indices, so the
    four partial images are contiguous blocks and one take per axis does all the reordering.
    """
    dt = np.dtype(dtype)
    fast = (
        dt.kind in "iu"
        and scale != 0
        and mask is None
        and spec.colour in ("RGB", "BGR")
        and crop_bgr.ndim == 3
        and crop_bgr.shape[2] == 3
        and crop_bgr.dtype == np.uint8
        and crop_bgr.shape[0] > 0
        and crop_bgr.shape[1] > 0
        and crop_bgr.strides[1] == 3
        and crop_bgr.strides[2] == 1
    )
    if not fast:
        return quantise(preprocess(crop_bgr, spec, mask), scale, zero_point, dt)
    h, w, k = spec.height, spec.width, _SUBSAMPLES
    src_h, src_w = crop_bgr.shape[:2]
    rows, cols = _gather_index(src_h, src_w, h, w, spec.colour == "RGB")
    # (H, W*3) view of the crop: no copy, the pixel's three bytes are adjacent.
    flat = crop_bgr.reshape(src_h, src_w * 3)
    g = flat.take(rows, axis=0)  # (k*h, W*3), blocks of rows by sub-sample
    acc = g[:h].astype(np.uint16)
    for i in range(1, k):
        acc += g[i * h : (i + 1) * h]
    g2 = acc.take(cols, axis=1)  # (h, k*w*3), blocks of columns by sub-sample
    sums = g2[:, : w * 3].copy()
    for j in range(1, k):
        sums += g2[:, j * w * 3 : (j + 1) * w * 3]
    lut, per_channel = _sum_lut(spec, float(scale), int(zero_point), dt.str)
    if per_channel:
        sums += _column_offsets(w)
    return lut.take(sums).reshape(h, w, 3)


@functools.lru_cache(maxsize=256)
def _gather_index(
    src_h: int, src_w: int, h: int, w: int, rgb: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Row and (flattened, colour-ordered) column indices for :func:`preprocess_quantised`."""
    k = _SUBSAMPLES
    iy = _sample_index(src_h, h).reshape(h, k).T.reshape(-1)  # sub-sample-major
    ix = _sample_index(src_w, w).reshape(w, k).T.reshape(-1)
    channels = np.array([2, 1, 0] if rgb else [0, 1, 2], dtype=np.intp)
    cols = (ix[:, None] * 3 + channels[None, :]).reshape(-1)
    return iy, cols


@functools.lru_cache(maxsize=16)
def _column_offsets(w: int) -> np.ndarray:
    return np.tile(_CHANNEL_OFFSETS, w)


_CHANNEL_OFFSETS = np.arange(3, dtype=np.uint16) * (255 * _SUBSAMPLES * _SUBSAMPLES + 1)
