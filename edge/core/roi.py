"""Driver-window regions of interest (ROIs): geometry in frame fractions, pure numpy.

An ROI is a rectangle ``[x0, y0, x1, y1]`` or a polygon ``[[x, y], ...]``, both as fractions
(0..1) of the frame width and height, so the same ROI applies to the evidence stream and a
smaller inference stream. The crop is the ROI's bounding box grown by ``margin`` (a fraction of
the box's own size) and clipped to the frame; for polygons, pixels outside the polygon are
turned grey (at the model's resolution) so the classifier only sees the window.

A rectangle may be turned upright (``rotate_deg``): a camera mounted with a roll, or high on a
gantry looking down at an angle, sees drivers tilted, and a model trained on upright drivers
misses them. The crop is then turned by that angle about its centre (counter-clockwise for a
positive angle, as the image is shown; the corners take the nearest edge pixel), so the
classifier, the evidence crop, and every crop sent for labelling are the same upright image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edge.core.errors import RoiError

Point = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Roi:
    """One driver-window region, in frame fractions."""

    id: str
    points: tuple[Point, ...]
    """Polygon vertices (a rectangle is stored as its four corners)."""
    margin: float = 0.1
    is_polygon: bool = False
    rotate_deg: float = 0.0
    """Turn the crop by this many degrees (counter-clockwise as shown) to make the driver
    upright; rectangles only."""
    _turn_cache: dict[tuple[int, int], np.ndarray] = field(
        default_factory=dict, compare=False, repr=False
    )
    _mask_cache: dict[tuple[int, int, int, int], np.ndarray] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def rect(
        cls,
        id: str,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        margin: float = 0.1,
        rotate_deg: float = 0.0,
    ) -> Roi:
        if not (x1 > x0 and y1 > y0):
            raise RoiError(
                f"roi {id!r}: rectangle needs x1 > x0 and y1 > y0, got {[x0, y0, x1, y1]}"
            )
        pts = ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
        roi = cls(id=id, points=pts, margin=margin, is_polygon=False, rotate_deg=rotate_deg)
        roi.validate()
        return roi

    @classmethod
    def polygon(cls, id: str, points: list[Point] | tuple[Point, ...], margin: float = 0.1) -> Roi:
        if len(points) < 3:
            raise RoiError(f"roi {id!r}: a polygon needs at least 3 points, got {len(points)}")
        roi = cls(
            id=id,
            points=tuple((float(x), float(y)) for x, y in points),
            margin=margin,
            is_polygon=True,
        )
        roi.validate()
        if polygon_area(roi.points) <= 0:
            raise RoiError(f"roi {id!r}: polygon has no area")
        return roi

    def validate(self) -> None:
        for x, y in self.points:
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise RoiError(
                    f"roi {self.id!r}: point ({x}, {y}) lies outside the frame "
                    "(coordinates are fractions of width and height, 0..1)"
                )
        if not 0.0 <= self.margin <= 1.0:
            raise RoiError(f"roi {self.id!r}: margin {self.margin} must be within 0..1")
        if not -90.0 <= self.rotate_deg <= 90.0:
            raise RoiError(f"roi {self.id!r}: rotate_deg {self.rotate_deg} must be within -90..90")
        if self.rotate_deg and self.is_polygon:
            raise RoiError(
                f"roi {self.id!r}: rotate_deg is for rectangles; draw the polygon around the "
                "tilted window instead"
            )

    def bbox(self) -> tuple[float, float, float, float]:
        xs = [p[0] for p in self.points]
        ys = [p[1] for p in self.points]
        return min(xs), min(ys), max(xs), max(ys)

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Pixel box ``(x0, y0, x1, y1)`` of the crop in a ``width x height`` image."""
        x0, y0, x1, y1 = self.bbox()
        mx = (x1 - x0) * self.margin
        my = (y1 - y0) * self.margin
        eps = 1e-6  # fractions like 0.1 + 0.2 must not round a whole pixel outwards
        px0 = int(np.floor(max(0.0, x0 - mx) * width + eps))
        py0 = int(np.floor(max(0.0, y0 - my) * height + eps))
        px1 = int(np.ceil(min(1.0, x1 + mx) * width - eps))
        py1 = int(np.ceil(min(1.0, y1 + my) * height - eps))
        px1 = max(px1, px0 + 1)
        py1 = max(py1, py0 + 1)
        return px0, py0, min(px1, width), min(py1, height)

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The ROI's crop box in ``image``: a view, no copy (see :meth:`mask` for polygons);
        with ``rotate_deg``, a new array turned upright (same size)."""
        h, w = image.shape[:2]
        x0, y0, x1, y1 = self.crop_box(w, h)
        box = image[y0:y1, x0:x1]
        if not self.rotate_deg:
            return box
        key = (h, w)
        flat = self._turn_cache.get(key)
        if flat is None:  # indices into the whole frame, flattened: one take per crop
            rows, cols = turn_index(y1 - y0, x1 - x0, self.rotate_deg)
            flat = self._turn_cache[key] = ((rows + y0) * w + (cols + x0)).ravel()
        if image.ndim == 3 and image.flags.c_contiguous:
            pixels = image.reshape(h * w, image.shape[2])
        elif image.ndim == 2 and image.flags.c_contiguous:
            pixels = image.reshape(h * w)
        else:
            pixels = np.ascontiguousarray(image).reshape(h * w, *image.shape[2:])
        turned: np.ndarray = pixels.take(flat, axis=0).reshape(box.shape)
        return turned

    def mask(self, image: np.ndarray) -> np.ndarray | None:
        """For a polygon, a boolean mask of the crop (True inside); ``None`` for rectangles.

        The mask is cached per frame size; :func:`edge.core.preprocess.preprocess` applies it
        at the model's resolution, which costs far less than masking a 1080p crop.
        """
        if not self.is_polygon:
            return None
        h, w = image.shape[:2]
        return self._mask(w, h, self.crop_box(w, h))

    def _mask(self, w: int, h: int, box: tuple[int, int, int, int]) -> np.ndarray:
        key = (w, h, box[0], box[1])
        m = self._mask_cache.get(key)
        if m is None:
            x0, y0, x1, y1 = box
            ys, xs = np.mgrid[y0:y1, x0:x1]
            poly = np.array([(px * w, py * h) for px, py in self.points])
            m = points_in_polygon(xs + 0.5, ys + 0.5, poly)
            self._mask_cache[key] = m
        return m


def polygon_area(points: tuple[Point, ...]) -> float:
    """Absolute area by the shoelace formula (fractions squared)."""
    xs = np.array([p[0] for p in points])
    ys = np.array([p[1] for p in points])
    return float(abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2.0)


def points_in_polygon(xs: np.ndarray, ys: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule test of many points against one polygon (``poly``: N x 2, pixels)."""
    inside = np.zeros(xs.shape, dtype=bool)
    n = len(poly)
    for i in range(n):
        xa, ya = poly[i]
        xb, yb = poly[(i + 1) % n]
        crosses = (ya > ys) != (yb > ys)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = (xb - xa) * (ys - ya) / (yb - ya) + xa
        inside ^= crosses & (xs < x_at)
    return inside


def turn_index(h: int, w: int, deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices that turn an ``h x w`` image by ``deg`` degrees about its centre
    (counter-clockwise as shown, the same sense as OpenCV's ``getRotationMatrix2D``), nearest
    pixel, edges repeated: ``img[rows, cols]`` is the turned image."""
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = xs - cx, ys - cy
    src_x = c * dx - s * dy + cx
    src_y = s * dx + c * dy + cy
    cols = np.clip(np.rint(src_x), 0, w - 1).astype(np.intp)
    rows = np.clip(np.rint(src_y), 0, h - 1).astype(np.intp)
    return rows, cols
