"""Evidence on disk: the full frame and the ROI crop as JPEG (and optionally a short clip),
each with its SHA-256, under a disk quota pruned oldest-first.

Layout: ``<root>/<evidence id>/frame.jpg, crop.jpg, clip.webm`` where the id starts with the
UTC time of the best frame, so name order is age order. The clip is WebM (VP8), which every
browser plays, so the control room can show it as it is; where this OpenCV has no VP8 encoder
it is Motion-JPEG ``clip.avi`` (kept and sent the same way, offered for download). Every file
is written to a temporary name, flushed and fsync'd, then renamed into place: a power cut leaves
either the whole file or none.
Pruning is logged (never silent) and never touches the evidence being written.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edge.core.errors import EvidenceError
from edge.core.ports import EvidenceRecord

log = logging.getLogger(__name__)

CLIP_FORMATS = (("clip.webm", "VP80", "video/webm"), ("clip.avi", "MJPG", "video/x-msvideo"))
"""Clip containers in order of preference: (file name, OpenCV fourcc, media type)."""
_warned: set[str] = set()


def _warn_once(text: str) -> None:
    if text not in _warned:
        _warned.add(text)
        log.warning("%s", text)


def _encode_clip(tmp: Path, frames: Sequence[np.ndarray], fps: float, fourcc: str) -> bytes | None:
    """``frames`` encoded with ``fourcc`` into ``tmp``; the bytes, or None if this OpenCV
    cannot open such a writer. ``tmp`` is removed either way."""
    import cv2

    h, w = frames[0].shape[:2]
    writer: Any = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*fourcc), fps, (w, h))
    try:
        if not writer.isOpened():
            return None
        for f in frames:
            if f.shape[:2] != (h, w):
                f = cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
            writer.write(f)
        writer.release()
        data = tmp.read_bytes()
        return data or None
    finally:
        writer.release()
        tmp.unlink(missing_ok=True)


def evidence_id(t_wall_s: float, roi_id: str) -> str:
    stamp = datetime.fromtimestamp(t_wall_s, tz=UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3]
    return f"{stamp}Z_{roi_id}"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a crash leaves the old state or the new, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave half a file behind
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _tree_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root``. One ``stat`` a file, and a file gone by then
    counts as nothing: with several cameras, one camera's prune walks a folder while another
    camera renames its ``.record.json.tmp`` into place (a check-then-stat lost that alert's
    evidence)."""
    total = 0
    for f in root.rglob("*"):
        try:
            st = f.stat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode):
            total += st.st_size
    return total


def encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise EvidenceError(f"cannot encode a {img.shape} image as JPEG")
    return bytes(buf)


DEFAULT_RESERVE_BYTES = 64 * 1024 * 1024
"""Disk space the store leaves free for the system and the outbox (about 1/250 of a 16 GB
card): the effective quota is the smaller of ``quota_bytes`` and what the disk can hold."""

RECORD_NAME = "record.json"
"""Each evidence folder's :class:`EvidenceRecord` as JSON, for deciding what to prune."""


class EvidenceStore:
    """Evidence folders under ``root``, pruned oldest-first to stay within the quota *and* the
    disk's free space less ``reserve_bytes``.

    ``is_owed(record)`` (optional, also settable later as the ``is_owed`` attribute) says
    whether the alert of a folder is still owed to the control room; folders not owed go
    first, oldest first, then owed ones, oldest first. A folder whose record cannot be read
    counts as owed. For the MQTT outbox: ``is_owed=lambda r: outbox.owes_frame(r.frame_sha256)``.

    A hit whose evidence cannot be written for lack of space still gets its record back (the
    hashes are computed from the encoded images; the files are absent, ``dropped_count`` is
    raised and an ERROR logged), so its alert is still raised: the alert is tiny, evidence
    can go.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        quota_bytes: int,
        jpeg_quality: int = 92,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
        is_owed: Callable[[EvidenceRecord], bool] | None = None,
    ) -> None:
        self.root = Path(root)
        self.quota_bytes = int(quota_bytes)
        self.reserve_bytes = max(0, int(reserve_bytes))
        self.jpeg_quality = jpeg_quality
        self.is_owed = is_owed
        self.pruned_count = 0
        self.dropped_count = 0
        """Hits whose evidence could not be written at all (disk full with nothing to prune)."""
        self._lock = threading.Lock()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EvidenceError(f"cannot create evidence folder {self.root}: {e.strerror}") from e
        self._clean_partial()

    def _clean_partial(self) -> None:
        # Leftover temporary files from a power cut mid-write: the renamed files are whole.
        for tmp in self.root.glob("*/.*.tmp*"):
            log.warning("removing partial evidence file %s (interrupted write)", tmp)
            tmp.unlink(missing_ok=True)

    def save(
        self,
        *,
        alert_id: str,
        ev_id: str,
        frame: np.ndarray,
        crop: np.ndarray,
        clip: Sequence[np.ndarray] | None = None,
        clip_fps: float = 10.0,
    ) -> EvidenceRecord:
        folder = self.root / ev_id
        frame_jpg = encode_jpeg(frame, self.jpeg_quality)
        crop_jpg = encode_jpeg(crop, self.jpeg_quality)
        rec = EvidenceRecord(
            alert_id=alert_id,
            frame_path=str(folder / "frame.jpg"),
            frame_sha256=hashlib.sha256(frame_jpg).hexdigest(),
            frame_bytes=len(frame_jpg),
            crop_path=str(folder / "crop.jpg"),
            crop_sha256=hashlib.sha256(crop_jpg).hexdigest(),
            crop_bytes=len(crop_jpg),
            frame_jpeg=frame_jpg,
            crop_jpeg=crop_jpg,
        )
        # Room first: the images, the record, and a clip of about as many JPEG frames.
        need = len(frame_jpg) + len(crop_jpg) + 4096 + (len(clip) * len(frame_jpg) if clip else 0)
        self._prune(need=need, keep=folder)
        for attempt in (1, 2):
            try:
                rec = self._write(folder, rec, frame_jpg, crop_jpg, clip, clip_fps)
                break
            except OSError as e:
                self._remove_partial(folder)
                if e.errno != errno.ENOSPC:
                    raise EvidenceError(f"cannot write evidence {folder}: {e}") from e
                if attempt == 1 and self._prune(need=need, keep=folder, disk_full=True):
                    continue
                shutil.rmtree(folder, ignore_errors=True)
                self.dropped_count += 1
                log.error(
                    "disk full: evidence %s NOT kept (nothing left to prune); its alert "
                    "goes without it (%s)",
                    folder.name,
                    e.strerror,
                )
                return rec
        self.prune(keep=folder)
        return rec

    def _write(
        self,
        folder: Path,
        rec: EvidenceRecord,
        frame_jpg: bytes,
        crop_jpg: bytes,
        clip: Sequence[np.ndarray] | None,
        clip_fps: float,
    ) -> EvidenceRecord:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / "frame.jpg", frame_jpg)
        write_atomic(folder / "crop.jpg", crop_jpg)
        if clip:
            clip_path, data, media = self._write_clip(folder, clip, clip_fps)
            rec = dataclasses.replace(
                rec,
                clip_path=str(clip_path),
                clip_sha256=hashlib.sha256(data).hexdigest(),
                clip_bytes=len(data),
                clip_type=media,
                clip_data=data,
            )
        doc = dataclasses.asdict(rec)
        doc.pop("frame_jpeg", None)  # the bytes are frame.jpg and crop.jpg themselves
        doc.pop("crop_jpeg", None)
        doc.pop("clip_data", None)
        write_atomic(folder / RECORD_NAME, json.dumps(doc).encode())
        return rec

    @staticmethod
    def _remove_partial(folder: Path) -> None:
        for tmp in folder.glob(".*.tmp*"):
            tmp.unlink(missing_ok=True)

    def _write_clip(
        self, folder: Path, frames: Sequence[np.ndarray], fps: float
    ) -> tuple[Path, bytes, str]:
        """Encode ``frames``; returns (path, bytes, media type)."""
        for name, fourcc, media in CLIP_FORMATS:
            path = folder / name
            data = _encode_clip(path.with_name(f".{name}.tmp{path.suffix}"), frames, fps, fourcc)
            if data is not None:
                write_atomic(path, data)
                return path, data, media
            _warn_once(f"no {fourcc} video encoder in this OpenCV: clips fall back to the next")
        raise EvidenceError(f"cannot open a video writer for the clip in {folder}")

    def usage_bytes(self) -> int:
        return _tree_bytes(self.root)

    def prune(self, *, keep: Path | None = None) -> list[Path]:
        """Delete evidence folders until the store is within its quota and the disk keeps its
        reserve free: folders whose alert is no longer owed first, oldest first."""
        return self._prune(need=0, keep=keep)

    def _prune(self, *, need: int, keep: Path | None, disk_full: bool = False) -> list[Path]:
        removed: list[Path] = []
        with self._lock:
            folders = sorted(p for p in self.root.iterdir() if p.is_dir())
            sizes = {p: _tree_bytes(p) for p in folders}
            total = sum(sizes.values())
            budget = self.quota_bytes
            try:
                free = shutil.disk_usage(self.root).free
                budget = min(budget, total + free - self.reserve_bytes)
            except OSError as e:
                log.warning("cannot read the free space of %s: %s", self.root, e)
            if disk_full:  # the disk said no: whatever it claims, free what is needed
                budget = min(budget, total - need)
            if total + need <= budget:
                return removed
            candidates = [p for p in folders if p != keep]
            if self.is_owed is not None:
                owed = {p: self._owed(p) for p in candidates}
                candidates = [p for p in candidates if not owed[p]] + [
                    p for p in candidates if owed[p]
                ]
            for p in candidates:
                if total + need <= budget:
                    break
                shutil.rmtree(p, ignore_errors=True)
                total -= sizes[p]
                removed.append(p)
        if removed:
            self.pruned_count += len(removed)
            log.warning(
                "evidence quota %.1f MB (disk: %.1f MB usable) reached: pruned %d (%s ... %s)",
                self.quota_bytes / 1e6,
                max(0, budget) / 1e6,
                len(removed),
                removed[0].name,
                removed[-1].name,
            )
        return removed

    def _owed(self, folder: Path) -> bool:
        assert self.is_owed is not None
        try:
            rec = EvidenceRecord(**json.loads((folder / RECORD_NAME).read_bytes()))
        except (OSError, ValueError, TypeError):
            return True  # unknown: keep it as long as the others allow
        try:
            return bool(self.is_owed(rec))
        except Exception as e:  # the outbox is closed or broken: do not lose evidence over it
            log.warning("cannot tell whether evidence %s is still owed: %s", folder.name, e)
            return True
