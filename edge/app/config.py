"""The unit's configuration: one TOML file, validated by typed models.

Every field has a description and bounds; unknown keys are rejected. ``load_config`` turns any
problem into a :class:`ConfigError` whose message names the key (``camera.fps: ...``).
Relative paths in the file are resolved against the file's own folder.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from edge.adapters.camera_config import CameraConfig
from edge.adapters.gpio_config import GpioConfig
from edge.adapters.gps_config import GpsConfig
from edge.adapters.mqtt_config import MqttSinkConfig
from edge.adapters.sinks import JsonlSinkConfig
from edge.common.config import (
    StrictModel,
    Table,
    format_errors,
    resolve_path_list,
    resolve_paths,
)
from edge.core.decider import DeciderParams
from edge.core.errors import ConfigError, RoiError
from edge.core.roi import Roi


class UnitConfig(StrictModel):
    id: str = Field(
        description="Unit id: letters, digits, '-' and '_' (used in topics and alert ids).",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
    )
    mode: Literal["junction", "patrol"] = Field(
        "junction", description="'junction' (fixed pole camera) or 'patrol' (dash camera)."
    )
    data_dir: Path = Field(
        Path("var/unit"), description="Where the unit keeps evidence, outbox and state."
    )
    disk_reserve_mb: float = Field(
        64.0,
        description="Disk space evidence and the outbox always leave free: past it the "
        "oldest evidence (receipted first) is pruned; alerts are always kept.",
        ge=0,
        le=1e6,
    )


class RoiConfig(StrictModel):
    id: str = Field(
        description="Name of the region (e.g. 'lane1'); unique.",
        min_length=1,
        max_length=32,
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
    rotate_deg: float = Field(
        0.0,
        description="Turn the crop upright: degrees counter-clockwise (rect only). A camera "
        "with a roll, or looking down from a gantry, sees drivers tilted; 'phonewatch "
        "roi-preview' writes each crop as the classifier sees it, to check.",
        ge=-90,
        le=90,
    )

    @model_validator(mode="after")
    def _one_shape(self) -> RoiConfig:
        if (self.rect is None) == (self.polygon is None):
            raise ValueError("give exactly one of 'rect' or 'polygon'")
        if self.polygon is not None and self.rotate_deg:
            raise ValueError(
                "rotate_deg is for 'rect'; draw the polygon around the tilted window instead"
            )
        try:
            self.to_roi()
        except RoiError as e:
            raise ValueError(str(e)) from e
        return self

    def to_roi(self) -> Roi:
        if self.rect is not None:
            return Roi.rect(self.id, *self.rect, margin=self.margin, rotate_deg=self.rotate_deg)
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


class VehiclesConfig(StrictModel):
    """The vehicle stage (docs/vehicles.md): detect and track each vehicle, score its driver's
    window, decide once per vehicle pass. The regions ([[rois]]), if any, become zones that
    limit where tracks count."""

    model: Path = Field(description="The vehicle detector (.tflite, e.g. COCO SSD MobileNet).")
    sidecar: Path | None = Field(
        None,
        description="The detector's sidecar JSON if not next to the model (<model>.json); "
        "models/vehicle/coco_ssd_mobilenet_v1.json describes the COCO SSD.",
    )
    accelerator: Literal["auto", "cpu", "edgetpu"] = Field(
        "auto", description="As [model] accelerator, for the detector's *_edgetpu.tflite twin."
    )
    threads: int = Field(1, description="CPU threads for the detector.", ge=1, le=16)
    every_s: float = Field(
        0.2,
        description="Seconds between detections (tracking carries the boxes between them, so "
        "every frame is still scored).",
        gt=0,
        le=10,
    )
    view: Literal["side", "front", "rear"] = Field(
        "side",
        description="How vehicles face the camera: 'side' (a junction beside the road), "
        "'front' (oncoming, from a dash), 'rear' (three-quarter from behind).",
    )
    drive_side: Literal["right", "left"] = Field(
        "right",
        description="Where the driver sits: 'right' (UK, Ireland, Australia, Japan ...) or "
        "'left' (most of Europe, the Americas).",
    )
    min_window_px: int = Field(
        32, description="Smallest driver's-window crop (px); smaller ones are grown.", ge=8
    )
    legible_min_px: int = Field(
        0,
        description="Driver's windows smaller than this on either side (as placed on the "
        "vehicle, before growing to min_window_px) are too small to show a phone and are not "
        "scored; 0 scores every window.",
        ge=0,
        le=1000,
    )
    min_hits: int = Field(3, description="Detections that confirm a track.", ge=1, le=100)
    max_missed: int = Field(
        3, description="Detection rounds a track may miss before it ends.", ge=0, le=100
    )
    iou_min: float = Field(
        0.2, description="Least overlap to pair a track with a detection.", gt=0, le=1
    )
    best_frame_wait_s: float = Field(
        2.0,
        description="How long a confirmed vehicle's alert waits for a better frame (it goes "
        "sooner when the vehicle leaves).",
        ge=0,
        le=30,
    )
    lost_frames_count: bool = Field(
        True,
        description="Whether frames where a vehicle's box is a guess (its track missed its "
        "latest detection round) count towards N-of-M; false: only frames after a detection "
        "that found it can confirm an alert.",
    )
    rejoin_s: float = Field(
        5.0,
        description="How long a vehicle the detector lost may still be found again as the same "
        "vehicle pass (where its motion allows, its size and colour alike): no second alert.",
        ge=0,
        le=30,
    )
    axis_x: float = Field(
        0.5,
        description="Rear view: where straight ahead is, as a share of the frame width (0.5 for "
        "a camera aimed along the car). A vehicle whose box spans it shows only its back and "
        "is not scored.",
        ge=0,
        le=1,
    )
    horizon_y: float = Field(
        0.5,
        description="Rear view: the row where the road vanishes, as a share of the frame height "
        "(0.5 for a level camera; read it off a frame once mounted). With axis_x, hfov_deg and "
        "camera_height_m it places a passing vehicle's side glass.",
        ge=0,
        le=1,
    )
    hfov_deg: float = Field(
        66.0,
        description="Rear view: the lens's horizontal field of view in degrees (66 for the "
        "Raspberry Pi Camera Module 3, 102 for its wide version).",
        ge=10,
        le=170,
    )
    camera_height_m: float = Field(
        1.3, description="Rear view: the camera's height above the road, metres.", ge=0.2, le=5
    )


class DeciderConfig(StrictModel):
    window: int = Field(
        8, description="Frames considered per decision (M of N-of-M).", ge=1, le=300
    )
    min_frames: int = Field(
        4, description="Frames in the window at or above score_on for a hit (N).", ge=1, le=300
    )
    score_on: float | None = Field(
        None,
        description="Score that counts a frame as 'phone'; default: the model threshold.",
        ge=0,
        le=1,
    )
    score_off: float | None = Field(
        None,
        description="All scores must fall below this before the region can fire again; "
        "default: 0.6 x score_on.",
        ge=0,
        le=1,
    )
    cooldown_s: float = Field(
        10.0, description="Least time between two hits in one region (s).", ge=0, le=3600
    )

    @model_validator(mode="after")
    def _check(self) -> DeciderConfig:
        if self.min_frames > self.window:
            raise ValueError("min_frames must not exceed window")
        if (
            self.score_on is not None
            and self.score_off is not None
            and self.score_off > self.score_on
        ):
            raise ValueError("score_off must not exceed score_on")
        return self

    def params(self, model_threshold: float) -> DeciderParams:
        on = self.score_on if self.score_on is not None else model_threshold
        off = self.score_off if self.score_off is not None else 0.6 * on
        return DeciderParams(
            window=self.window,
            min_frames=self.min_frames,
            score_on=on,
            score_off=min(off, on),
            cooldown_s=self.cooldown_s,
        )


class EvidenceConfig(StrictModel):
    dir: Path | None = Field(None, description="Evidence folder; default <unit.data_dir>/evidence.")
    quota_mb: float = Field(
        1024.0, description="Disk quota for evidence; the oldest is pruned first.", gt=0, le=1e7
    )
    jpeg_quality: int = Field(92, description="JPEG quality of evidence images.", ge=50, le=100)
    clip_before_s: float = Field(
        0.0, description="Seconds of video kept before a hit (0 = no clip).", ge=0, le=30
    )
    clip_after_s: float = Field(0.0, description="Seconds of video kept after a hit.", ge=0, le=30)
    clip_width: int = Field(
        640, description="Width the clip frames are scaled to (keeps memory small).", ge=64, le=3840
    )


SinkConfig = Annotated[JsonlSinkConfig | MqttSinkConfig, Field(discriminator="type")]


class StatsConfig(StrictModel):
    log_interval_s: float = Field(
        30.0, description="How often rates and percentiles are logged.", gt=0, le=3600
    )


class SamplingConfig(StrictModel):
    """Background sampling of ROI crops for the labelling queue (edge/app/sampler.py)."""

    enabled: bool = Field(
        False,
        description="Sample crops without a command: random ones (for recall and the "
        "false-positive rate) and ones scored near the threshold. Needs [sink] type = 'mqtt'.",
    )
    random_per_day: int = Field(
        50,
        description="Random crops per UTC day, spread uniformly over the day.",
        ge=0,
        le=10000,
    )
    uncertain_per_day: int = Field(
        50,
        description="Crops per UTC day scoring within 'band' of the decider's score_on.",
        ge=0,
        le=10000,
    )
    band: float = Field(
        0.1, description="Half-width of the uncertainty band around score_on.", ge=0, le=0.5
    )
    min_interval_s: float = Field(
        60.0,
        description="Least time between two samples of one kind (random, uncertain) (s).",
        ge=0,
        le=86400,
    )


class ModelsConfig(StrictModel):
    """Model packages delivered over MQTT (docs/rollout.md); off until a key is pinned."""

    trusted_keys: list[Path] = Field(
        default_factory=list,
        description="PEM public keys of the control room's model-signing key(s) "
        "('controlroom model-key generate'); a package signed by any other key is refused. "
        "Empty: this unit takes no model packages. Needs [sink] type = 'mqtt'.",
        max_length=8,
    )
    dir: Path | None = Field(
        None, description="Where packages are received and installed; default <data_dir>/models."
    )
    probation_s: float = Field(
        120.0,
        description="After a swap, how long the new model is watched (invoke errors, frame "
        "rate) and rolled back on its own if it does worse.",
        ge=0,
        le=86400,
    )
    probation_frames: int = Field(
        100, description="Least frames the new model scores before probation can end.", ge=0
    )

    @classmethod
    def resolve_extra_paths(cls, table: Table, base: Path) -> None:
        resolve_path_list(table, "trusted_keys", base)


def _unique_rois(v: list[RoiConfig]) -> list[RoiConfig]:
    ids = [r.id for r in v]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"roi ids must be unique; repeated: {dup}")
    return v


class CameraEntry(StrictModel):
    """One of several cameras on a unit (``[[cameras]]``): its own source and regions."""

    id: str = Field(
        description="Camera id: letters, digits, '-' and '_' (on its alerts, the heartbeat "
        "and the dashboard), e.g. 'north' or 'forward'.",
        min_length=1,
        max_length=32,
        pattern=r"^[A-Za-z0-9_-]+$",
    )
    source: CameraConfig = Field(description="The frame source, chosen by 'type'.")
    rois: list[RoiConfig] = Field(
        description="Driver-window regions in this camera's view.",
        min_length=1,
        max_length=16,
    )

    @field_validator("rois")
    @classmethod
    def _unique(cls, v: list[RoiConfig]) -> list[RoiConfig]:
        return _unique_rois(v)


@dataclass(frozen=True, slots=True)
class CameraSetup:
    """A camera as the unit runs it, whichever way the config gave it: ``id`` is None for the
    single ``[camera]`` of a one-camera unit (its alerts carry no camera id, as always)."""

    id: str | None
    source: CameraConfig
    rois: list[RoiConfig]

    @property
    def name(self) -> str:
        return self.id or "camera"


MAX_CAMERAS = 16


class Config(StrictModel):
    unit: UnitConfig = Field(description="Who this unit is.")
    camera: CameraConfig | None = Field(
        None,
        description="The frame source, chosen by 'type' (one camera; several: [[cameras]]).",
    )
    rois: list[RoiConfig] | None = Field(
        None,
        description="Driver-window regions, one per lane or windscreen (with [camera]).",
        min_length=1,
        max_length=16,
    )
    cameras: list[CameraEntry] | None = Field(
        None,
        description="Several cameras, each with its own id, source and regions, sharing "
        "one inference stage (instead of [camera] and [[rois]]).",
        min_length=1,
        max_length=MAX_CAMERAS,
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
    sampling: SamplingConfig = Field(
        default_factory=SamplingConfig, description="Crops sampled for labelling, unasked."
    )
    models: ModelsConfig = Field(
        default_factory=ModelsConfig, description="Signed model packages from the control room."
    )
    vehicles: VehiclesConfig | None = Field(
        None, description="Detect and track vehicles instead of scoring fixed regions."
    )

    @field_validator("rois")
    @classmethod
    def _unique(cls, v: list[RoiConfig] | None) -> list[RoiConfig] | None:
        return None if v is None else _unique_rois(v)

    @model_validator(mode="after")
    def _one_camera_form(self) -> Config:
        if self.cameras is not None:
            if self.camera is not None or self.rois is not None:
                raise ValueError(
                    "give either [camera] with [[rois]] (one camera) or [[cameras]] "
                    "(several, each with its own source and rois), not both"
                )
            ids = [c.id for c in self.cameras]
            dup = sorted({i for i in ids if ids.count(i) > 1})
            if dup:
                raise ValueError(f"camera ids must be unique; repeated: {dup}")
            if self.vehicles is not None:
                raise ValueError(
                    "[vehicles] runs on a one-camera unit today: use [camera] (and [[rois]] "
                    "as zones, if any) instead of [[cameras]]"
                )
        elif self.camera is None or (self.rois is None and self.vehicles is None):
            missing = " and ".join(
                k
                for k, v in (("[camera]", self.camera), ("[[rois]]", self.rois))
                if v is None and (k == "[camera]" or self.vehicles is None)
            )
            raise ValueError(f"no camera: add {missing} (or [[cameras]] for several)")
        return self

    @property
    def camera_setups(self) -> list[CameraSetup]:
        """Every camera the unit runs, in config order."""
        if self.cameras is not None:
            return [CameraSetup(c.id, c.source, c.rois) for c in self.cameras]
        assert self.camera is not None
        return [CameraSetup(None, self.camera, self.rois or [])]

    @property
    def first_camera(self) -> CameraSetup:
        return self.camera_setups[0]


def parse_config(data: Table, *, source: str = "config", base_dir: Path | None = None) -> Config:
    """Validate a parsed TOML table; relative paths are taken from ``base_dir`` if given."""
    if base_dir is not None:
        data = resolve_paths(Config, data, base_dir)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_errors(e, source, Config)) from None


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
