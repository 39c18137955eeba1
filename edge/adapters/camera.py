"""Frame sources behind the ``FrameSource`` port.

* :class:`OpenCvSource` -- a device index, an RTSP/HTTP URL, or a video file read as fast as it
  decodes (offline processing);
* :class:`ReplaySource` -- a video file paced at its own frame rate, so it behaves like a camera;
* :class:`FolderSource` -- a folder of images in name order;
* :class:`PicameraSource` -- the Raspberry Pi camera (picamera2, imported lazily): the ``main``
  stream is the evidence image, the ``lores`` stream the inference image, both copied out of
  ``captured_request()`` before the request is released.

Every source returns frozen :class:`~edge.core.frame.Frame` objects with BGR ``uint8`` arrays.
``read()`` returns ``None`` at the end of a file; a live stream that fails raises
:class:`CameraError` and the pipeline reopens it with backoff.

**Time.** A live camera stamps each frame with the clocks at capture. A file source (a replay,
a video file through OpenCV, an image folder) runs on *video time* instead, however fast it is
read: frame ``i`` is ``i / fps`` after the file's start (:class:`FileTime`), so the decider's
window and cooldown, clip windows and alert times see the recording's own timing, whether a
30 s clip is processed in 6 s or in 60 s. ``t_mono_s`` is the monotonic clock at the first
open plus the video time; ``t_wall_s`` is the file's start plus the video time, where the start
is derived from the file: a video's modification time minus its duration (a recorder closes the
file at the end of the recording), an image folder's first image's modification time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge.adapters.camera_config import (
    CameraConfig,
    FolderCameraConfig,
    OpenCvCameraConfig,
    PicameraConfig,
    ReplayCameraConfig,
)
from edge.core.errors import CameraError
from edge.core.frame import Frame
from edge.core.ports import FrameSource

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

DEFAULT_FILE_FPS = 25.0
"""The frame rate of a video file that does not say."""
DEFAULT_FOLDER_FPS = 10.0
"""The frame rate of an image folder whose config gives none (``camera.fps = 0``)."""


def _cv2() -> Any:
    import cv2

    return cv2


class _Counter:
    def __init__(self) -> None:
        self._n = 0

    def next(self) -> int:
        n = self._n
        self._n += 1
        return n


class FileTime:
    """Video time for a file source: frame ``index`` is ``index / fps`` seconds in.

    Anchored once, at the first open (a reopened or looping file goes on from there, so time
    never runs backwards): ``t_mono_s`` = the monotonic clock then + video time, ``t_wall_s`` =
    the file's start (``start_wall_s``) + video time.
    """

    def __init__(self) -> None:
        self.fps: float | None = None
        self.mono0_s: float | None = None
        self.start_wall_s: float | None = None

    def anchor(self, *, fps: float, start_wall_s: float) -> None:
        self.fps = fps
        if self.mono0_s is None:
            self.mono0_s = time.monotonic()
            self.start_wall_s = start_wall_s

    def stamp(self, index: int) -> tuple[float, float]:
        """``(t_mono_s, t_wall_s)`` of frame ``index``."""
        if self.fps is None or self.mono0_s is None or self.start_wall_s is None:
            raise CameraError("file time used before the file was opened")
        t = index / self.fps
        return self.mono0_s + t, self.start_wall_s + t


def video_start_wall_s(path: Path, *, frames: int | None, fps: float) -> float:
    """When the recording in ``path`` started: its modification time minus its duration."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = time.time()
    return mtime - (frames / fps if frames else 0.0)


class _CaptureBase:
    """What the two ``cv2.VideoCapture`` sources share: the capture, framing, closing."""

    name: str
    _cap: Any
    _count: _Counter
    _file_time: FileTime | None = None
    """Set while reading a file: frames are stamped with video time."""

    def _frame(self, img: np.ndarray) -> Frame:
        index = self._count.next()
        if self._file_time is not None:
            t_mono, t_wall = self._file_time.stamp(index)
        else:
            t_mono, t_wall = time.monotonic(), time.time()
        return Frame(index=index, t_mono_s=t_mono, t_wall_s=t_wall, image=img, source=self.name)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class OpenCvSource(_CaptureBase):
    """OpenCV ``VideoCapture`` on a device index, a stream URL or a file (unpaced)."""

    def __init__(
        self,
        device: int | str,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
    ) -> None:
        self.device = device
        self.name = f"opencv:{device}"
        self._want = (width, height, fps)
        self._cap: Any = None
        self._count = _Counter()
        self._fps: float | None = None

    @classmethod
    def from_config(cls, cfg: OpenCvCameraConfig, *, speed: float | None = None) -> OpenCvSource:
        """A file is read as fast as it decodes whatever ``speed`` says."""
        return cls(cfg.device, width=cfg.width, height=cfg.height, fps=cfg.fps)

    @property
    def is_live(self) -> bool:
        if isinstance(self.device, int):
            return True
        return "://" in self.device or self.device.startswith("/dev/")

    @property
    def fps(self) -> float | None:
        return self._fps

    def open(self) -> None:
        cv2 = _cv2()
        if isinstance(self.device, str) and not self.is_live and not Path(self.device).is_file():
            raise CameraError(f"video file {self.device} does not exist")
        cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            cap.release()
            raise CameraError(
                f"cannot open {self.name} (no such device, unreachable stream, "
                "or a file OpenCV cannot decode)"
            )
        w, h, f = self._want
        if w:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, w)
        if h:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, h)
        if f:
            cap.set(cv2.CAP_PROP_FPS, f)
        rate = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._fps = rate if 0 < rate < 1000 else None
        if not self.is_live:  # a video file: run on its own time
            fps = self._fps or DEFAULT_FILE_FPS
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            if self._file_time is None:
                self._file_time = FileTime()
            self._file_time.anchor(
                fps=fps,
                start_wall_s=video_start_wall_s(
                    Path(str(self.device)), frames=n if n > 0 else None, fps=fps
                ),
            )
        self._cap = cap

    def read(self) -> Frame | None:
        if self._cap is None:
            raise CameraError(f"{self.name} is not open")
        ok, img = self._cap.read()
        if not ok or img is None:
            if self.is_live:
                raise CameraError(f"{self.name} stopped delivering frames")
            return None
        return self._frame(img)


class ReplaySource(_CaptureBase):
    """A video file paced at its own frame rate (``speed`` x real time; 0 = unpaced)."""

    def __init__(self, path: Path | str, *, loop: bool = False, speed: float = 1.0) -> None:
        self.path = Path(path)
        self.name = f"replay:{self.path.name}"
        self.loop = loop
        self.speed = speed
        self._cap: Any = None
        self._fps: float | None = None
        self._count = _Counter()
        self._t0: float | None = None
        self._n_since_t0 = 0
        self.frame_count: int | None = None

    @classmethod
    def from_config(cls, cfg: ReplayCameraConfig, *, speed: float | None = None) -> ReplaySource:
        """``speed`` (offline runs: 0) overrides the config's pace."""
        return cls(cfg.path, loop=cfg.loop, speed=cfg.speed if speed is None else speed)

    @property
    def is_live(self) -> bool:
        return self.speed > 0

    @property
    def fps(self) -> float | None:
        return self._fps

    def open(self) -> None:
        cv2 = _cv2()
        if not self.path.is_file():
            raise CameraError(f"video file {self.path} does not exist")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"cannot decode video file {self.path}")
        ok, _ = cap.read()
        if not ok:
            cap.release()
            raise CameraError(f"video file {self.path} has no readable frames")
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        rate = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._fps = rate if 0 < rate < 1000 else DEFAULT_FILE_FPS
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = n if n > 0 else None
        if self._file_time is None:
            self._file_time = FileTime()
        self._file_time.anchor(
            fps=self._fps,
            start_wall_s=video_start_wall_s(self.path, frames=self.frame_count, fps=self._fps),
        )
        self._cap = cap
        self._t0 = None

    def read(self) -> Frame | None:
        if self._cap is None:
            raise CameraError(f"{self.name} is not open")
        ok, img = self._cap.read()
        if not ok or img is None:
            if not self.loop:
                return None
            self._cap.set(_cv2().CAP_PROP_POS_FRAMES, 0)
            ok, img = self._cap.read()
            if not ok or img is None:
                raise CameraError(f"{self.name}: cannot rewind")
        if self.speed > 0 and self._fps:
            now = time.monotonic()
            if self._t0 is None:
                self._t0, self._n_since_t0 = now, 0
            due = self._t0 + self._n_since_t0 / (self._fps * self.speed)
            if due > now:
                time.sleep(due - now)
            elif now - due > 1.0:  # far behind (a pause): re-anchor instead of bursting
                self._t0, self._n_since_t0 = now, 0
            self._n_since_t0 += 1
        return self._frame(img)


class FolderSource:
    """Images from a folder, in name order (optionally paced at ``fps``).

    The images are ``1 / time_fps`` seconds apart in video time (``time_fps`` defaults to the
    pace ``fps``, else :data:`DEFAULT_FOLDER_FPS`), from the first image's modification time.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        fps: float = 0.0,
        loop: bool = False,
        time_fps: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = f"folder:{self.path.name}"
        self._rate = fps
        self._time_fps = time_fps or fps or DEFAULT_FOLDER_FPS
        self.loop = loop
        self._files: list[Path] = []
        self._i = 0
        self._count = _Counter()
        self._next_due: float | None = None
        self._file_time = FileTime()

    @classmethod
    def from_config(cls, cfg: FolderCameraConfig, *, speed: float | None = None) -> FolderSource:
        """Any ``speed`` (an offline run) reads the images unpaced (on the same video time)."""
        return cls(
            cfg.path, fps=cfg.fps if speed is None else 0.0, loop=cfg.loop, time_fps=cfg.fps or None
        )

    @property
    def is_live(self) -> bool:
        return self._rate > 0

    @property
    def fps(self) -> float | None:
        """The rate of the frames' video time (what a clip of them is played at)."""
        return self._time_fps

    def open(self) -> None:
        if not self.path.is_dir():
            raise CameraError(f"image folder {self.path} does not exist")
        self._files = sorted(
            p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not self._files:
            kinds = ", ".join(IMAGE_SUFFIXES)
            raise CameraError(f"image folder {self.path} holds no images ({kinds})")
        self._i = 0
        self._file_time.anchor(
            fps=self._time_fps,
            start_wall_s=video_start_wall_s(self._files[0], frames=None, fps=self._time_fps),
        )

    def read(self) -> Frame | None:
        cv2 = _cv2()
        while True:
            if self._i >= len(self._files):
                if not self.loop:
                    return None
                self._i = 0
            path = self._files[self._i]
            self._i += 1
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                log.warning("skipping %s: not a readable image", path)
                continue
            break
        if self._rate > 0:
            now = time.monotonic()
            if self._next_due is not None and self._next_due > now:
                time.sleep(self._next_due - now)
            self._next_due = max(now, self._next_due or now) + 1.0 / self._rate
        index = self._count.next()
        t_mono, t_wall = self._file_time.stamp(index)
        return Frame(
            index=index,
            t_mono_s=t_mono,
            t_wall_s=t_wall,
            image=img,
            source=f"{self.name}/{path.name}",
        )

    def close(self) -> None:
        self._files = []


class PicameraSource:  # pragma: no cover - runs on a Raspberry Pi only
    """The Pi camera via picamera2: ``main`` (evidence) + ``lores`` (inference) streams."""

    def __init__(
        self,
        *,
        camera_num: int = 0,
        main_size: tuple[int, int] = (1920, 1080),
        lores_size: tuple[int, int] = (640, 360),
        fps: float = 30.0,
    ) -> None:
        self.name = f"picamera2:{camera_num}"
        self.camera_num = camera_num
        self.main_size = main_size
        self.lores_size = lores_size
        self._fps = fps
        self._cam: Any = None
        self._count = _Counter()

    @classmethod
    def from_config(cls, cfg: PicameraConfig, *, speed: float | None = None) -> PicameraSource:
        return cls(
            camera_num=cfg.camera_num,
            main_size=cfg.main_size,
            lores_size=cfg.lores_size,
            fps=cfg.fps,
        )

    @property
    def is_live(self) -> bool:
        return True

    @property
    def fps(self) -> float | None:
        return self._fps

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as e:
            raise CameraError(
                "picamera2 is not installed: on Raspberry Pi OS run 'sudo apt install "
                "python3-picamera2' and make the venv with --system-site-packages"
            ) from e
        try:
            cam = Picamera2(self.camera_num)
            frame_us = int(1_000_000 / self._fps)
            config = cam.create_video_configuration(
                main={"size": self.main_size, "format": "RGB888"},  # BGR byte order in memory
                lores={"size": self.lores_size, "format": "YUV420"},
                controls={"FrameDurationLimits": (frame_us, frame_us)},
                buffer_count=6,
            )
            cam.configure(config)
            cam.start()
        except Exception as e:  # picamera2 raises RuntimeError/IndexError/... for no camera
            raise CameraError(f"cannot start the Pi camera {self.camera_num}: {e}") from e
        self._cam = cam

    def read(self) -> Frame | None:
        cv2 = _cv2()
        if self._cam is None:
            raise CameraError(f"{self.name} is not open")
        try:
            with self._cam.captured_request() as req:
                main = np.array(req.make_array("main"), copy=True)
                yuv = req.make_array("lores")
                lores = cv2.cvtColor(yuv, cv2.COLOR_YUV420p2BGR)  # a new array: a copy
        except Exception as e:
            raise CameraError(f"{self.name} stopped delivering frames: {e}") from e
        # One monotonic clock for the whole pipeline (SensorTimestamp is CLOCK_BOOTTIME).
        return Frame(
            index=self._count.next(),
            t_mono_s=time.monotonic(),
            t_wall_s=time.time(),
            image=main,
            lores=lores,
            source=self.name,
        )

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
                self._cam.close()
            finally:
                self._cam = None


_SOURCES: dict[type[Any], Callable[..., FrameSource]] = {
    OpenCvCameraConfig: OpenCvSource.from_config,
    ReplayCameraConfig: ReplaySource.from_config,
    FolderCameraConfig: FolderSource.from_config,
    PicameraConfig: PicameraSource.from_config,
}
"""Each backend's config model and the source built from it (the ``type`` key ties them)."""


def source_from_config(cfg: CameraConfig, *, speed: float | None = None) -> FrameSource:
    """The source for ``[camera]``; ``speed`` overrides a paced file's pace (0: unpaced)."""
    return _SOURCES[type(cfg)](cfg, speed=speed)
