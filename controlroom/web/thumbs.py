"""Thumbnails of evidence frames for the review queue: the JPEG decoded at a reduced size,
scaled to :data:`WIDTH` pixels wide and re-encoded, kept in a small in-memory LRU cache keyed
by the frame's SHA-256 (so a frame is scaled once per dashboard process, whoever asks)."""

from __future__ import annotations

import threading
from collections import OrderedDict

import cv2
import numpy as np

WIDTH = 320
QUALITY = 70
CACHE_ITEMS = 2000  # about 15 KiB each: some 30 MiB at most


def scale_jpeg(jpeg: bytes, width: int = WIDTH) -> bytes | None:
    """``jpeg`` no wider than ``width`` (never enlarged); None if it does not decode."""
    buf = np.frombuffer(jpeg, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        return None
    h, w = img.shape[:2]
    if w > width:
        img = cv2.resize(img, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    ok, out = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
    return bytes(out.tobytes()) if ok else None


class ThumbCache:
    """Thread-safe LRU of thumbnails by frame SHA-256."""

    def __init__(self, max_items: int = CACHE_ITEMS) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, sha256: str) -> bytes | None:
        with self._lock:
            got = self._items.get(sha256)
            if got is None:
                self.misses += 1
            else:
                self.hits += 1
                self._items.move_to_end(sha256)
            return got

    def put(self, sha256: str, thumb: bytes) -> None:
        with self._lock:
            self._items[sha256] = thumb
            self._items.move_to_end(sha256)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
