"""Camera backends' configuration (``[camera]``), one model per ``type``, beside the sources.

Each model's ``type`` literal is the key :data:`edge.adapters.camera.SOURCES` maps to the
source class that the composition root builds from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from edge.common.config import StrictModel, Table, resolve_path_text


class _CameraBase(StrictModel):
    @property
    def is_file(self) -> bool:
        """A file source: every frame is scored, and a missing file fails at start."""
        return False

    reconnect_min_s: float = Field(
        1.0, description="First wait before reopening a lost stream.", gt=0, le=60
    )
    reconnect_max_s: float = Field(
        30.0, description="Longest wait between reopen attempts (backoff doubles).", gt=0, le=600
    )


class OpenCvCameraConfig(_CameraBase):
    type: Literal["opencv"] = Field(description="OpenCV VideoCapture: a device, a URL or a file.")
    device: int | str = Field(
        description="Device index (0), RTSP/HTTP URL, or a video file (read as fast as it decodes)."
    )
    width: int | None = Field(None, description="Requested capture width (px).", ge=16, le=8192)
    height: int | None = Field(None, description="Requested capture height (px).", ge=16, le=8192)
    fps: float | None = Field(None, description="Requested capture rate.", gt=0, le=240)

    @property
    def is_file(self) -> bool:
        """A video file (not a device index, a /dev node or a URL)."""
        d = self.device
        return isinstance(d, str) and "://" not in d and not d.startswith("/dev/")

    @classmethod
    def resolve_extra_paths(cls, table: Table, base: Path) -> None:
        dev = table.get("device")
        if isinstance(dev, str) and not dev.startswith("/dev/"):
            table["device"] = resolve_path_text(dev, base)


class ReplayCameraConfig(_CameraBase):
    @property
    def is_file(self) -> bool:
        return True

    type: Literal["replay"] = Field(description="A video file paced at its own frame rate.")
    path: Path = Field(description="Video file (anything OpenCV/FFmpeg decodes).")
    loop: bool = Field(False, description="Start again at the end instead of stopping.")
    speed: float = Field(
        1.0, description="Playback speed; 1 = real time, 0 = as fast as possible.", ge=0, le=100
    )


class FolderCameraConfig(_CameraBase):
    @property
    def is_file(self) -> bool:
        return True

    type: Literal["folder"] = Field(description="A folder of images, in name order.")
    path: Path = Field(description="Folder holding .jpg/.jpeg/.png/.bmp images.")
    fps: float = Field(
        0.0, description="Frames per second to pace at; 0 = as fast as possible.", ge=0, le=240
    )
    loop: bool = Field(False, description="Start again at the end instead of stopping.")


class PicameraConfig(_CameraBase):
    type: Literal["picamera2"] = Field(description="Raspberry Pi camera through picamera2.")
    camera_num: int = Field(0, description="Which camera on the Pi.", ge=0, le=7)
    main_size: tuple[int, int] = Field(
        (1920, 1080), description="Evidence (main) stream size, width x height."
    )
    lores_size: tuple[int, int] = Field(
        (640, 360), description="Inference (lores) stream size, width x height."
    )
    fps: float = Field(30.0, description="Frame rate asked of the sensor.", gt=0, le=240)

    @field_validator("main_size", "lores_size")
    @classmethod
    def _size(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not (16 <= v[0] <= 8192 and 16 <= v[1] <= 8192):
            raise ValueError("width and height must be within 16..8192")
        return v


CameraConfig = Annotated[
    OpenCvCameraConfig | ReplayCameraConfig | FolderCameraConfig | PicameraConfig,
    Field(discriminator="type"),
]
