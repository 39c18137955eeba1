"""Evidence on disk: the full frame and the ROI crop as JPEG (and optionally a short clip),
each with its SHA-256, under a disk quota pruned oldest-first.

Layout: ``<root>/<evidence id>/frame.jpg, crop.jpg, clip.avi`` where the id starts with the UTC
time of the best frame, so name order is age order. Every file is written to a temporary name,
flushed and fsync'd, then renamed into place: a power cut leaves either the whole file or none.
Pruning is logged (never silent) and never touches the evidence being written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge.core.errors import EvidenceError
from edge.core.ports import EvidenceRecord

log = logging.getLogger(__name__)


def evidence_id(t_wall_s: float, roi_id: str) -> str:
    stamp = datetime.fromtimestamp(t_wall_s, tz=UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3]
    return f"{stamp}Z_{roi_id}"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a crash leaves the old state or the new, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise EvidenceError(f"cannot encode a {img.shape} image as JPEG")
    return bytes(buf)


class EvidenceStore:
    def __init__(self, root: Path | str, *, quota_bytes: int, jpeg_quality: int = 92) -> None:
        self.root = Path(root)
        self.quota_bytes = int(quota_bytes)
        self.jpeg_quality = jpeg_quality
        self.pruned_count = 0
        self._lock = threading.Lock()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EvidenceError(f"cannot create evidence folder {self.root}: {e.strerror}") from e
        self._clean_partial()

    def _clean_partial(self) -> None:
        # Leftover temporary files from a power cut mid-write: the renamed files are whole.
        for tmp in self.root.glob("*/.*.tmp"):
            log.warning("removing partial evidence file %s (interrupted write)", tmp)
            tmp.unlink(missing_ok=True)

    def save(self, *, alert_id: str, ev_id: str, frame: np.ndarray, crop: np.ndarray,
             clip: Sequence[np.ndarray] | None = None, clip_fps: float = 10.0) -> EvidenceRecord:
        folder = self.root / ev_id
        try:
            folder.mkdir(parents=True, exist_ok=True)
            frame_jpg = encode_jpeg(frame, self.jpeg_quality)
            crop_jpg = encode_jpeg(crop, self.jpeg_quality)
            write_atomic(folder / "frame.jpg", frame_jpg)
            write_atomic(folder / "crop.jpg", crop_jpg)
            clip_path: Path | None = None
            clip_sha: str | None = None
            if clip:
                clip_path = folder / "clip.avi"
                clip_sha = self._write_clip(clip_path, clip, clip_fps)
        except OSError as e:
            raise EvidenceError(f"cannot write evidence {folder}: {e}") from e
        rec = EvidenceRecord(
            alert_id=alert_id,
            frame_path=str(folder / "frame.jpg"),
            frame_sha256=hashlib.sha256(frame_jpg).hexdigest(),
            frame_bytes=len(frame_jpg),
            crop_path=str(folder / "crop.jpg"),
            crop_sha256=hashlib.sha256(crop_jpg).hexdigest(),
            crop_bytes=len(crop_jpg),
            clip_path=str(clip_path) if clip_path else None,
            clip_sha256=clip_sha,
            frame_jpeg=frame_jpg,
        )
        self.prune(keep=folder)
        return rec

    def _write_clip(self, path: Path, frames: Sequence[np.ndarray], fps: float) -> str:
        import cv2

        tmp = path.with_name(f".{path.name}.tmp.avi")
        h, w = frames[0].shape[:2]
        writer: Any = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
        if not writer.isOpened():
            raise EvidenceError(f"cannot open a video writer for {path}")
        try:
            for f in frames:
                if f.shape[:2] != (h, w):
                    f = cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
                writer.write(f)
        finally:
            writer.release()
        data = tmp.read_bytes()
        tmp.unlink()
        write_atomic(path, data)
        return hashlib.sha256(data).hexdigest()

    def usage_bytes(self) -> int:
        total = 0
        for p in self.root.rglob("*"):
            if p.is_file():
                total += p.stat().st_size
        return total

    def prune(self, *, keep: Path | None = None) -> list[Path]:
        """Delete the oldest evidence folders until the store is within its quota."""
        removed: list[Path] = []
        with self._lock:
            folders = sorted(p for p in self.root.iterdir() if p.is_dir())
            sizes = {p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in folders}
            total = sum(sizes.values())
            for p in folders:
                if total <= self.quota_bytes:
                    break
                if keep is not None and p == keep:
                    continue
                shutil.rmtree(p, ignore_errors=True)
                total -= sizes[p]
                removed.append(p)
        if removed:
            self.pruned_count += len(removed)
            log.warning("evidence quota %.1f MB reached: pruned %d oldest (%s ... %s)",
                        self.quota_bytes / 1e6, len(removed), removed[0].name, removed[-1].name)
        return removed
