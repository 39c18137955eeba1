"""The unit's configuration: one TOML file, validated by typed models.

Every field has a description and bounds; unknown keys are rejected. ``load_config`` turns any
problem into a :class:`ConfigError` whose message names the key (``camera.fps: ...``).
Relative paths in the file are resolved against the file's own folder.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from edge.app.config_base import StrictModel
from edge.app.config_field import GpioConfig
from edge.app.config_gps import GpsConfig
from edge.app.config_uplink import MqttSinkConfig
from edge.core.decider import DeciderParams
from edge.core.errors import ConfigError, RoiError
from edge.core.roi import Roi


class UnitConfig(StrictModel):
    id: str = Field(
        description="Unit id: letters, digits, '-' and '_' (used in topics and alert ids).",
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
    )
    mode: Literal["junction", "patrol"] = Field(
        "junction", description="'junction' (fixed pole camera) or 'patrol' (dash camera)."
    )
    data_dir: Path = Field(
        Path("var/unit"), description="Where the unit keeps evidence, outbox and state."
    )


class _CameraBase(StrictModel):
    reconnect_min_s: float = Field(
        1.0, description="First wait before reopening a lost stream.", gt=0, le=60
    )
    reconnect_max_s: float = Field(
        30.0, description="Longest wait between reopen attempts (backoff doubles).", gt=0, le=600
    )


class OpenCvCameraConfig(_CameraBase):
    type: Literal["opencv"] = Field(description="OpenCV VideoCapture: a device, a URL or a file.")
    device: int | str = Field(
        description="Device index (0), RTSP/HTTP URL, or a video file (read as fast as it "
        "decodes)."
    )
    width: int | None = Field(None, description="Requested capture width (px).", ge=16, le=8192)
    height: int | None = Field(None, description="Requested capture height (px).", ge=16, le=8192)
    fps: float | None = Field(None, description="Requested capture rate.", gt=0, le=240)


class ReplayCameraConfig(_CameraBase):
    type: Literal["replay"] = Field(description="A video file paced at its own frame rate.")
    path: Path = Field(description="Video file (anything OpenCV/FFmpeg decodes).")
    loop: bool = Field(False, description="Start again at the end instead of stopping.")
    speed: float = Field(
        1.0, description="Playback speed; 1 = real time, 0 = as fast as possible.", ge=0, le=100
    )


class FolderCameraConfig(_CameraBase):
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


class RoiConfig(StrictModel):
    id: str = Field(
        description="Name of the region (e.g. 'lane1'); unique.", min_length=1, max_length=32,
        pattern=r"^[A-Za-z0-9_-]+$",
    )
    rect: tuple[float, float, float, float] | None = Field(
        None, description="Rectangle [x0, y0, x1, y1] as fractions (0..1) of the frame."
    )
    polygon: list[tuple[float, float]] | None = Field(
        None, description="Polygon [[x, y], ...] as fractions of the frame (at least 3 points)."
    )
    margin: float = Field(
        0.1, description="Extra context around the region, as a fraction of its size.", ge=0, le=1
    )

    @model_validator(mode="after")
    def _one_shape(self) -> RoiConfig:
        if (self.rect is None) == (self.polygon is None):
            raise ValueError("give exactly one of 'rect' or 'polygon'")
        try:
            self.to_roi()
        except RoiError as e:
            raise ValueError(str(e)) from e
        return self

    def to_roi(self) -> Roi:
        if self.rect is not None:
            return Roi.rect(self.id, *self.rect, margin=self.margin)
        assert self.polygon is not None
        return Roi.polygon(self.id, self.polygon, margin=self.margin)


class ModelConfig(StrictModel):
    path: Path = Field(description="The .tflite model; its sidecar .json must sit next to it.")
    sidecar: Path | None = Field(
        None, description="Sidecar JSON if not next to the model (<model>.json)."
    )
    accelerator: Literal["auto", "cpu", "edgetpu"] = Field(
        "auto",
        description="'edgetpu' needs a Coral and the *_edgetpu.tflite twin; 'auto' uses it when "
        "present and otherwise runs on the CPU (and says so); 'cpu' never tries.",
    )
    threads: int = Field(2, description="CPU threads for the interpreter.", ge=1, le=16)
    threshold: float | None = Field(
        None, description="Override the sidecar's score threshold (0..1).", ge=0, le=1
    )


class DeciderConfig(StrictModel):
    window: int = Field(
        8, description="Frames considered per decision (M of N-of-M).", ge=1, le=300
    )
    min_frames: int = Field(
        4, description="Frames in the window at or above score_on for a hit (N).", ge=1, le=300
    )
    score_on: float | None = Field(
        None, description="Score that counts a frame as 'phone'; default: the model threshold.",
        ge=0, le=1,
    )
    score_off: float | None = Field(
        None, description="All scores must fall below this before the region can fire again; "
        "default: 0.6 x score_on.", ge=0, le=1,
    )
    cooldown_s: float = Field(
        10.0, description="Least time between two hits in one region (s).", ge=0, le=3600
    )

    @model_validator(mode="after")
    def _check(self) -> DeciderConfig:
        if self.min_frames > self.window:
            raise ValueError("min_frames must not exceed window")
        if (self.score_on is not None and self.score_off is not None
                and self.score_off > self.score_on):
            raise ValueError("score_off must not exceed score_on")
        return self

    def params(self, model_threshold: float) -> DeciderParams:
        on = self.score_on if self.score_on is not None else model_threshold
        off = self.score_off if self.score_off is not None else 0.6 * on
        return DeciderParams(window=self.window, min_frames=self.min_frames, score_on=on,
                             score_off=min(off, on), cooldown_s=self.cooldown_s)


class EvidenceConfig(StrictModel):
    dir: Path | None = Field(None, description="Evidence folder; default <unit.data_dir>/evidence.")
    quota_mb: float = Field(
        1024.0, description="Disk quota for evidence; the oldest is pruned first.", gt=0, le=1e7
    )
    jpeg_quality: int = Field(92, description="JPEG quality of evidence images.", ge=50, le=100)
    clip_before_s: float = Field(
        0.0, description="Seconds of video kept before a hit (0 = no clip).", ge=0, le=30
    )
    clip_after_s: float = Field(
        0.0, description="Seconds of video kept after a hit.", ge=0, le=30
    )
    clip_width: int = Field(
        640, description="Width the clip frames are scaled to (keeps memory small).", ge=64, le=3840
    )


class JsonlSinkConfig(StrictModel):
    type: Literal["jsonl"] = Field(description="Append one JSON line per alert to a file.")
    path: Path | None = Field(None, description="File; default <unit.data_dir>/alerts.jsonl.")


SinkConfig = Annotated[JsonlSinkConfig | MqttSinkConfig, Field(discriminator="type")]


class StatsConfig(StrictModel):
    log_interval_s: float = Field(
        30.0, description="How often rates and percentiles are logged.", gt=0, le=3600
    )


class Config(StrictModel):
    unit: UnitConfig = Field(description="Who this unit is.")
    camera: CameraConfig = Field(description="The frame source, chosen by 'type'.")
    rois: list[RoiConfig] = Field(
        description="Driver-window regions, one per lane or windscreen.", min_length=1,
        max_length=16,
    )
    model: ModelConfig = Field(description="The phone-in-hand classifier.")
    decider: DeciderConfig = Field(default_factory=DeciderConfig, description="Hit rules.")
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig, description="Evidence.")
    sink: SinkConfig = Field(
        default_factory=lambda: JsonlSinkConfig(type="jsonl"), description="Where alerts go."
    )
    gps: GpsConfig | None = Field(None, description="GPS receiver; none = alerts carry no fix.")
    gpio: GpioConfig | None = Field(None, description="Status LED, buzzer, buttons, ignition.")
    stats: StatsConfig = Field(default_factory=StatsConfig, description="Periodic statistics.")

    @field_validator("rois")
    @classmethod
    def _unique(cls, v: list[RoiConfig]) -> list[RoiConfig]:
        ids = [r.id for r in v]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"roi ids must be unique; repeated: {dup}")
        return v

    @property
    def evidence_dir(self) -> Path:
        return self.evidence.dir or self.unit.data_dir / "evidence"


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not (isinstance(p, str) and p in _UNION_TAGS))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see the example configs)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"  {loc or '(top level)'}: {msg}")
    return "\n".join(lines)


_UNION_TAGS = {"opencv", "replay", "folder", "picamera2", "jsonl", "mqtt"}


def _resolve_paths(data: dict, base: Path) -> None:
    """Make relative paths in the file relative to the file's folder."""

    def fix(table: dict, key: str) -> None:
        v = table.get(key)
        if isinstance(v, str) and v and not v.startswith(("rtsp:", "http:", "https:")):
            p = Path(v).expanduser()
            table[key] = str(p if p.is_absolute() else (base / p))

    for section, keys in {
        "unit": ["data_dir"], "camera": ["path"], "model": ["path", "sidecar"],
        "evidence": ["dir"], "gpio": ["pin_map"],
        "sink": ["path", "ca_file", "cert_file", "key_file", "password_file", "outbox_path",
                 "signing_key"],
    }.items():
        table = data.get(section)
        if isinstance(table, dict):
            for k in keys:
                fix(table, k)
    cam = data.get("camera")
    if isinstance(cam, dict) and cam.get("type") == "opencv" and isinstance(cam.get("device"), str):
        dev = cam["device"]
        if "://" not in dev and not dev.startswith("/dev/"):
            fix(cam, "device")
    gps = data.get("gps")
    if isinstance(gps, dict):
        src = gps.get("source")
        if isinstance(src, str) and src.startswith("replay:"):
            p = Path(src[len("replay:"):]).expanduser()
            gps["source"] = "replay:" + str(p if p.is_absolute() else base / p)


def parse_config(data: dict, *, source: str = "config", base_dir: Path | None = None) -> Config:
    if base_dir is not None:
        _resolve_paths(data, base_dir)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def load_config(path: Path | str) -> Config:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config: {e.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    return parse_config(data, source=str(p), base_dir=p.resolve().parent)
