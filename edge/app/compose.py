"""The composition root: the only place that builds adapters from the config.

Everything a run needs is decided here: where each file lives (:class:`Paths`, the one place
path defaults are resolved), which camera and GPS backend to build (looked up by the config's
``type`` / source kind in the adapters' registries), the model's threshold, the outbox and the
signing key the uplink is handed. Adapters get plain values and built parts, never the app.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edge.adapters.camera import source_from_config
from edge.adapters.classifier import LiteRTClassifier
from edge.adapters.evidence import EvidenceStore
from edge.adapters.model_transfer import ModelReceiver, PackageFn
from edge.adapters.mqtt import MqttUplink
from edge.adapters.mqtt_config import MqttSinkConfig
from edge.adapters.outbox import Outbox
from edge.adapters.sinks import JsonlSink, TeeSink
from edge.app.config import CameraSetup, Config, load_config
from edge.app.heartbeat import StatsEmitter, stamp_position
from edge.app.hub import CameraGroup, InferenceHub
from edge.app.model_lifecycle import ModelManager, ModelPackage, ProbationRules, status_doc
from edge.app.pipeline import Pipeline
from edge.app.remote import CollectJob, Collector, render_snapshot
from edge.app.sampler import CalibrationJob, Sampler
from edge.app.vehicles import VehicleStage
from edge.common.signing import (
    Ed25519PrivateKey,
    load_private_key,
    load_public_key,
    signing_key_name,
    write_key_pair,
)
from edge.core.decider import DeciderParams
from edge.core.errors import ConfigError, PhonewatchError, SignatureError
from edge.core.frame import Frame
from edge.core.gps import GpsSource
from edge.core.ports import AlertNumbers, AlertSink, Classifier, Detection, FrameSource, Uplink
from edge.core.roi import Roi

log = logging.getLogger(__name__)

EXIT_RELOAD = 75
"""EX_TEMPFAIL (sysexits.h): the run ended to pick up a new config after a ``reload`` command.
``phonewatch run`` exits with it and systemd restarts the service on the new config
(``RestartForceExitStatus=75`` in deploy/systemd/phonewatch.service)."""

CommandFn = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Paths:
    """Where a unit keeps its files: every default under ``unit.data_dir`` is decided here."""

    data_dir: Path
    evidence_dir: Path
    alerts_jsonl: Path
    outbox: Path
    signing_key: Path
    sampler_state: Path
    """The background sampler's counts for the current UTC day (survive a restart)."""
    models_dir: Path
    """Installed model packages and ``state.json`` (which one is live)."""

    @classmethod
    def of(cls, cfg: Config) -> Paths:
        data = cfg.unit.data_dir
        sink = cfg.sink
        mqtt = sink if isinstance(sink, MqttSinkConfig) else None
        outbox, key = uplink_paths(mqtt, unit_id=cfg.unit.id, data_dir=data)
        jsonl = getattr(sink, "path", None) if mqtt is None else None
        return cls(
            data_dir=data,
            evidence_dir=cfg.evidence.dir or data / "evidence",
            alerts_jsonl=jsonl or data / "alerts.jsonl",
            outbox=outbox,
            signing_key=key,
            sampler_state=data / "sampler.json",
            models_dir=cfg.models.dir or data / "models",
        )


def uplink_paths(sink: MqttSinkConfig | None, *, unit_id: str, data_dir: Path) -> tuple[Path, Path]:
    """The outbox file and the signing key: as configured, else under ``data_dir``."""
    outbox = sink.outbox_path if sink is not None and sink.outbox_path else None
    key = sink.signing_key if sink is not None and sink.signing_key else None
    return (
        outbox or data_dir / "outbox.sqlite",
        key or data_dir / "keys" / signing_key_name(unit_id),
    )


def build_source(
    cfg: Config, *, speed: float | None = None, camera: CameraSetup | None = None
) -> FrameSource:
    """The source the camera's ``type`` names (the first camera unless ``camera`` says);
    ``speed`` overrides a paced file's pace."""
    return source_from_config((camera or cfg.first_camera).source, speed=speed)


def is_file_source(cfg: Config) -> bool:
    """Every camera reads a file (or folder): the run can end, and score every frame."""
    return all(c.source.is_file for c in cfg.camera_setups)


def build_classifier(cfg: Config) -> LiteRTClassifier:
    m_ = cfg.model
    return LiteRTClassifier.open(
        m_.path,
        sidecar=m_.sidecar,
        accelerator=m_.accelerator,
        threads=m_.threads,
        threshold=m_.threshold,
    )


def build_model_manager(
    cfg: Config,
    paths: Paths,
    *,
    report: Callable[[str, str, str, str | None], None],
    on_swap: Callable[[Classifier, DeciderParams], None] | None = None,
) -> ModelManager:
    """The model lifecycle: which model is live (``state.json``), shadow, swap, probation."""
    m_ = cfg.model

    def open_package(
        tflite: Path, sidecar: Path | None, threads: int = m_.threads
    ) -> LiteRTClassifier:
        return LiteRTClassifier.open(
            tflite,
            sidecar=sidecar,
            accelerator=m_.accelerator,
            threads=threads,
            threshold=m_.threshold,
        )

    return ModelManager(
        models_dir=paths.models_dir,
        open_config=lambda: build_classifier(cfg),
        open_package=open_package,
        open_shadow=lambda t, s: open_package(t, s, threads=1),  # behind the live model
        decider_params=cfg.decider.params,
        report=report,
        rules=ProbationRules(
            duration_s=cfg.models.probation_s,
            frames=cfg.models.probation_frames,
        ),
        on_swap=on_swap,
    )


def build_vehicle_stage(
    cfg: Config, params: DeciderParams, *, lossless: bool
) -> VehicleStage | None:
    """The vehicle stage ``[vehicles]`` asks for (detector opened here), else None; the
    regions are its zones, ``params`` ([decider] at the model's threshold) its N-of-M."""
    v = cfg.vehicles
    if v is None:
        return None
    from edge.adapters.detector import LiteRTDetector
    from edge.core.rejoin import RejoinParams
    from edge.core.track_decider import TrackDecisionParams
    from edge.core.tracker import TrackerParams
    from edge.core.window import WindowSpec

    detector = LiteRTDetector.open(v.model, v.sidecar, v.threads, accelerator=v.accelerator)
    return VehicleStage(
        detector,
        every_s=v.every_s,
        window=WindowSpec(
            view=v.view,
            drive_side=v.drive_side,
            min_side_px=v.min_window_px,
            axis_x=v.axis_x,
            legible_min_px=v.legible_min_px,
            horizon_y=v.horizon_y,
            hfov_deg=v.hfov_deg,
            camera_height_m=v.camera_height_m,
        ),
        rejoin=RejoinParams(hold_s=v.rejoin_s),
        tracker=TrackerParams(iou_min=v.iou_min, min_hits=v.min_hits, max_missed=v.max_missed),
        decision=TrackDecisionParams(
            decider=params,
            best_frame_wait_s=v.best_frame_wait_s,
            lost_frames_count=v.lost_frames_count,
        ),
        zones=build_rois(cfg),
        lossless=lossless,
    )


def sampling_names(cfg: Config) -> dict[str, dict[str, Roi]]:
    """Several cameras: each camera's ROIs by id, renamed ``<camera>-<roi>`` for the sampler
    (ids may repeat across cameras; a crop's name must tell them apart). One camera: none."""
    if cfg.cameras is None:
        return {}
    return {
        c.id: {r.id: replace(r, id=f"{c.id}-{r.id}") for r in build_rois(cfg, c)}
        for c in cfg.camera_setups
        if c.id is not None
    }


def build_rois(cfg: Config, camera: CameraSetup | None = None) -> list[Roi]:
    """The regions of ``camera`` (default: the first camera)."""
    return [r.to_roi() for r in (camera or cfg.first_camera).rois]


def build_evidence(cfg: Config, paths: Paths | None = None) -> EvidenceStore:
    e = cfg.evidence
    paths = paths or Paths.of(cfg)
    return EvidenceStore(
        paths.evidence_dir,
        quota_bytes=int(e.quota_mb * 1e6),
        jpeg_quality=e.jpeg_quality,
        reserve_bytes=int(cfg.unit.disk_reserve_mb * 1024 * 1024),
    )


def build_gps(cfg: Config) -> GpsSource | None:
    """The GPS source ``gps.source`` names (not started), or None without ``[gps]``."""
    if cfg.gps is None:
        return None
    from edge.adapters.gps import build_gps_source

    return build_gps_source(cfg.gps)


def signing_key_for(path: Path, *, unit_id: str, autogenerate: bool) -> Ed25519PrivateKey:
    """Load the unit's signing key, generating it first when allowed (demo and bench only)."""
    if not path.exists() and autogenerate:
        if path.name != signing_key_name(unit_id):
            raise SignatureError(
                f"sink.signing_key: {path} must be named "
                f"{signing_key_name(unit_id)} to be generated"
            )
        _, pub, kid = write_key_pair(unit_id, path.parent)
        log.warning(
            "generated signing key %s (key id %s); give %s to the control room", path, kid, pub
        )
    return load_private_key(path)


def build_uplink(
    cfg: MqttSinkConfig,
    *,
    unit_id: str,
    data_dir: Path,
    on_command: CommandFn | None = None,
    reserve_bytes: int = 64 * 1024 * 1024,
) -> MqttUplink:
    """Open the outbox, load the key and start the MQTT uplink (it connects in the
    background, never blocking on the broker)."""
    outbox_path, key_path = uplink_paths(cfg, unit_id=unit_id, data_dir=data_dir)
    key = signing_key_for(key_path, unit_id=unit_id, autogenerate=cfg.signing_key_autogenerate)
    outbox = Outbox(
        outbox_path,
        quota_bytes=int(cfg.outbox_quota_mb * 1024 * 1024),
        fsync=cfg.outbox_fsync,
        reserve_bytes=reserve_bytes,
    )
    if outbox.problem:
        log.error("outbox: %s", outbox.problem)
    try:
        return MqttUplink(
            cfg, unit_id=unit_id, outbox=outbox, signing_key=key, on_command=on_command
        ).start()
    except BaseException:
        outbox.close()
        raise


def build_sink(cfg: Config, *, on_command: CommandFn | None = None) -> AlertSink:
    """The alert sink ``[sink] type`` names: a JSON-lines file, or the MQTT uplink."""
    s = cfg.sink
    if isinstance(s, MqttSinkConfig):
        return build_uplink(
            s,
            unit_id=cfg.unit.id,
            data_dir=cfg.unit.data_dir,
            on_command=on_command,
            reserve_bytes=int(cfg.unit.disk_reserve_mb * 1024 * 1024),
        )
    return JsonlSink(Paths.of(cfg).alerts_jsonl)


def build_model_receiver(cfg: Config, uplink: MqttUplink, on_package: PackageFn) -> ModelReceiver:
    """The receiver of signed model packages ([models]), attached to the uplink and started."""
    try:
        keys = [load_public_key(p) for p in cfg.models.trusted_keys]
    except SignatureError as e:
        raise ConfigError(f"models.trusted_keys: {e}") from None
    models = ModelReceiver(
        cfg.models.dir or cfg.unit.data_dir / "models",
        keys,
        unit_id=cfg.unit.id,
        publish=uplink.publish_model_status,
        on_package=on_package,
    ).start()
    uplink.attach_models(models)
    return models


def check_reloadable(path: Path) -> Config:
    """Read and validate a config file for ``reload``: everything ``load_config`` checks, the
    ROIs' geometry, and that the model file is there (a restart into a config that cannot
    start would leave the unit down). Raises a PhonewatchError naming the key."""
    cfg = load_config(path)
    build_rois(cfg)
    for key in ("path", "sidecar"):
        p = getattr(cfg.model, key)
        if p is not None and not Path(p).is_file():
            raise ConfigError(f"{path}: model.{key}: file not found: {p}")
    return cfg


def disk_free_bytes(path: Path) -> int:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


class Unit:
    """The whole unit, built from a config: pipeline plus GPS, uplink, GPIO and systemd.

    Use as a context manager; everything built is closed in reverse order on exit.
    """

    def __init__(
        self,
        cfg: Config,
        *,
        lossless: bool = False,
        speed: float | None = None,
        extra_sink: AlertSink | None = None,
        config_path: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.paths = Paths.of(cfg)
        self.config_path = config_path
        """The file ``cfg`` came from: what the ``reload`` command re-reads."""
        self._stack = contextlib.ExitStack()
        self.lossless = lossless
        self.speed = speed
        self.extra_sink = extra_sink
        self.pipeline: Pipeline | None = None
        """The first (on most units the only) camera's pipeline: sampling, crop collection,
        snapshots and the shadow model follow this camera."""
        self.pipelines: list[Pipeline] = []
        self.vehicles: VehicleStage | None = None
        """The vehicle stage (``[vehicles]``), on the first camera."""
        self.group: CameraGroup | None = None
        """Several cameras (``[[cameras]]``) and their shared inference stage."""
        self.gps: GpsSource | None = None
        self.field_io: Any | None = None  # edge.adapters.gpio.FieldIo (gpiozero: imported lazily)
        self.notifier: Any | None = None
        self.watchdog: Any | None = None
        self.supervisor: Any | None = None
        self.sink: AlertSink | None = None
        self.uplink: Uplink | None = None
        """The MQTT uplink when ``[sink] type = "mqtt"``; None for a JSON-lines sink."""
        self.emitter: StatsEmitter | None = None
        self.problem: str | None = None
        """Why the unit is degraded though frames flow (e.g. its outbox was corrupt and set
        aside); carried in the heartbeat and the retained status until restart."""
        self.shutdown_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.collector: Collector | None = None
        self.sampler: Sampler | None = None
        self._sampled_as: dict[str, dict[str, Roi]] = {}
        """Several cameras: each camera's ROIs as the sampler names them, ``<camera>-<roi>``
        (ROI ids repeat across cameras; the crops' names must tell them apart)."""
        self.model_receiver: ModelReceiver | None = None
        self._alerts_done = 0
        self._latest: tuple[Frame, dict[str, float]] | None = None
        self.models: ModelManager | None = None
        self._model_events: list[dict[str, Any]] = []
        self._model_events_lock = threading.Lock()
        """Model events not yet published (the uplink was not up); sent with a heartbeat."""
        self._counts = {"snapshot_failed": 0, "reloads_refused": 0}
        """``snapshot_failed``: snapshots not made (no frame yet, drawing failed). The uplink
        counts the ones it published, dropped or had refused; the heartbeat carries both."""
        self._commands: dict[str, CommandFn] = {
            "mute": self._mute,
            "collect": self._collect,
            "snapshot": self._snapshot,
            "reload": self._reload,
            "calibrate": self._calibrate,
            "model_promote": self._model_promote,
            "model_rollback": self._model_rollback,
            "model_shadow_stop": self._model_shadow_stop,
        }
        """The control room's commands, by name (each already checked against the schema)."""

    def __enter__(self) -> Unit:
        try:
            self._build()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        runner = self.runner
        if runner is not None and not runner.stop_event.is_set():
            runner.stop()
        self._stack.close()

    @property
    def runner(self) -> Pipeline | CameraGroup | None:
        """What starts, stops and reports the unit's frames: the camera group on a unit with
        several cameras, else the one pipeline."""
        return self.group if self.group is not None else self.pipeline

    def _build(self) -> None:
        cfg = self.cfg
        self.paths.data_dir.mkdir(parents=True, exist_ok=True)
        from edge.app.systemd import FrameWatchdog, SystemdNotifier

        self.notifier = SystemdNotifier()
        self.watchdog = FrameWatchdog(self.notifier)
        if cfg.gpio is not None:
            self._build_field(cfg)
        self.models = models = build_model_manager(
            cfg, self.paths, report=self._report_model, on_swap=self._on_model_swap
        )
        self._stack.callback(models.close)  # the live (and any previous, shadow) classifier
        classifier = models.open_live()
        evidence = build_evidence(cfg, self.paths)
        self.gps = build_gps(cfg)
        if self.gps is not None:
            self.gps.start()
            self._stack.callback(self.gps.close)
        params = cfg.decider.params(classifier.threshold)
        rois = build_rois(cfg)  # the first camera's: what sampling and collection use
        sink = build_sink(cfg, on_command=self._on_command)
        self._stack.callback(sink.close)
        self.sink = sink
        if isinstance(sink, MqttUplink) and isinstance(cfg.sink, MqttSinkConfig):
            uplink: Uplink = sink
            self.uplink = uplink
            outbox = sink.outbox
            # Evidence whose alert the control room has receipted is pruned first.
            evidence.is_owed = lambda r: outbox.owes_frame(r.frame_sha256)
            self.problem = outbox.problem
            if self.problem:
                uplink.set_status("degraded", self.problem)
            if cfg.models.trusted_keys:
                self.model_receiver = build_model_receiver(cfg, sink, self.on_model_package)
                self._stack.callback(self.model_receiver.close)  # closed before the uplink
            self.collector = Collector(uplink=uplink, jpeg_quality=cfg.evidence.jpeg_quality)
            self._stack.callback(self.collector.close)  # closed before the uplink
            self._sampled_as = sampling_names(cfg)
            self.sampler = Sampler(
                uplink=uplink,
                rois=[r for named in self._sampled_as.values() for r in named.values()] or rois,
                windows=cfg.vehicles is not None,
                cfg=cfg.sampling,
                threshold=params.score_on,
                model_version=classifier.version,
                state_path=self.paths.sampler_state,
                jpeg_quality=cfg.evidence.jpeg_quality,
                hold=self._alerts_pending,
                lossless=self.lossless,
            )
            self._stack.callback(self.sampler.close)
            self.emitter = StatsEmitter(
                unit_id=cfg.unit.id,
                uplink=uplink,
                interval_s=cfg.sink.heartbeat_interval_s,
                pipeline_stats=self.heartbeat_stats,
                gps=self.gps,
                model=self._heartbeat_model,
                cameras=self._heartbeat_cameras,
                vehicles=self._heartbeat_vehicles,
            )
            self._stack.callback(self.emitter.close)  # stopped before the uplink closes
            self.emitter.start()
        elif cfg.models.trusted_keys:
            log.warning("[models] trusted_keys is set, but model packages come only over mqtt")
        numbers: AlertNumbers | None = (
            sink.outbox
            if isinstance(sink, MqttUplink)
            else sink
            if isinstance(sink, JsonlSink)
            else None
        )
        if self.extra_sink is not None:
            sink = TeeSink(sink, self.extra_sink)
        self.pipeline = self._build_pipelines(classifier, params, rois, evidence, sink, numbers)
        models.attach(self.pipeline)
        models.start()
        for p, cam in zip(self.pipelines, cfg.camera_setups, strict=True):
            if cam.source.is_file:
                # A missing or unreadable file fails here, clearly. A camera that is absent
                # at boot does not: the unit starts degraded and keeps trying.
                p.open_source()

    def _build_pipelines(
        self,
        classifier: Classifier,
        params: DeciderParams,
        rois: list[Roi],
        evidence: EvidenceStore,
        sink: AlertSink,
        numbers: AlertNumbers | None,
    ) -> Pipeline:
        """A pipeline per camera (sharing one inference hub when there are several); the
        vehicle stage, if any, on the first."""
        cfg = self.cfg
        models = self.models
        assert models is not None
        vehicles = build_vehicle_stage(cfg, params, lossless=self.lossless)
        if vehicles is not None:
            self._stack.callback(vehicles.close)
        self.vehicles = vehicles
        hub = InferenceHub(classifier) if cfg.cameras is not None else None
        for i, cam in enumerate(cfg.camera_setups):
            first = i == 0
            self.pipelines.append(
                Pipeline(
                    source=build_source(cfg, speed=self.speed, camera=cam),
                    classifier=classifier,
                    rois=rois if first else build_rois(cfg, cam),
                    decider=params,
                    evidence=evidence,
                    sink=sink,
                    unit_id=cfg.unit.id,
                    lossless=self.lossless,
                    reconnect_min_s=cam.source.reconnect_min_s,
                    reconnect_max_s=cam.source.reconnect_max_s,
                    clip_before_s=cfg.evidence.clip_before_s,
                    clip_after_s=cfg.evidence.clip_after_s,
                    clip_width=cfg.evidence.clip_width,
                    on_status=self._on_status if hub is None else self._on_camera_status,
                    on_hit=self._on_hit,
                    on_frame=functools.partial(self._on_frame, cam.id, first),
                    stamp=self.stamp,
                    numbers=numbers,
                    shadow=models.on_scored if first and vehicles is None else None,
                    camera_id=cam.id,
                    hub=hub,
                    vehicles=vehicles if first else None,
                )
            )
        if hub is not None:
            self.group = CameraGroup(hub)
        return self.pipelines[0]

    def _build_field(self, cfg: Config) -> None:
        from edge.adapters.gpio import FieldIo

        g = cfg.gpio
        assert g is not None
        self.field_io = FieldIo.from_config(g, mode=cfg.unit.mode)
        self.field_io.on_shutdown_request = self.shutdown_requested.set
        self._stack.callback(self.field_io.close)
        self.field_io.set_status("starting")
        if g.supervisor_port:
            from edge.adapters.supervisor import SupervisorLink

            self.supervisor = SupervisorLink(
                g.supervisor_port,
                baud=g.supervisor_baud,
                heartbeat_s=g.heartbeat_s,
                status_text=lambda: self.runner.status if self.runner else "starting",
            )
            self._stack.callback(self.supervisor.close)
            if g.strobe_on_us:
                self.supervisor.set_strobe(g.strobe_on_us, g.strobe_max_duty_pct)

    @property
    def exit_code(self) -> int:
        """The process exit status the run asks for: 0, or EXIT_RELOAD after a ``reload``."""
        return EXIT_RELOAD if self.reload_requested.is_set() else 0

    # -- hooks --------------------------------------------------------------------------------
    def heartbeat_stats(self) -> dict[str, Any]:
        """What the heartbeat carries under ``pipeline``: the pipeline's figures, the crop
        collector's, the unit's own counters and the uplink's media counters."""
        runner = self.runner
        out = runner.snapshot() if runner is not None else {}
        out.pop("cameras", None)  # each camera's figures go in the heartbeat's own ``cameras``
        if self.collector is not None:
            out.update(self.collector.stats())
        if self.sampler is not None:
            out.update(self.sampler.stats())
        if self.vehicles is not None:
            out.update(self.vehicles.stats())
        out.update(self._counts)
        if self.problem:
            out["status"] = "degraded"
            out["problem"] = self.problem
        if self.pipeline is not None:
            out["evidence_dropped"] = self.pipeline.evidence.dropped_count
        if self.uplink is not None:
            out.update({k: v for k, v in self.uplink.stats().items() if k.startswith("snapshot_")})
        return out

    def _heartbeat_cameras(self) -> dict[str, dict[str, Any]] | None:
        """Each camera's state on a unit with several (None on a one-camera unit)."""
        if self.group is None:
            return None
        out: dict[str, dict[str, Any]] = {}
        for p in self.group.pipelines:
            s = p.snapshot()
            out[str(p.camera_id)] = {
                "status": s["status"],
                "fps": s["fps"],
                "dropped": s["dropped_frames"],
                "last_error": p.stats.last_camera_error,
            }
        return out

    def _heartbeat_vehicles(self) -> dict[str, Any] | None:
        return self.vehicles.heartbeat() if self.vehicles is not None else None

    def on_model_package(self, pkg: ModelPackage, mode: str) -> bool:
        """A verified package installed on disk: run it in ``shadow`` or make it ``live``."""
        if self.models is None:
            log.warning("model package %s ignored: the unit is not built", pkg.version)
            return False
        return self.models.on_package(pkg, mode)

    def _report_model(self, event: str, sha256: str, version: str, detail: str | None) -> None:
        """The model manager's events, to the control room (``model/status``) when the uplink
        can publish them; kept (a few) and sent with the next heartbeat otherwise."""
        doc = status_doc(self.cfg.unit.id, event, sha256, version, detail)
        with self._model_events_lock:
            self._model_events = [*self._model_events, doc][-20:]
        self._send_model_events()

    def _send_model_events(self) -> None:
        publish = getattr(self.uplink, "publish_model_status", None)
        with self._model_events_lock:
            while publish is not None and self._model_events and publish(self._model_events[0]):
                self._model_events.pop(0)

    def _on_model_swap(self, clf: Classifier, params: DeciderParams) -> None:
        """The sampler's near-threshold band and version label follow the live model."""
        if self.sampler is not None:
            s = self.sampler
            s.threshold, s.model_version = params.score_on, clf.version
            s.band = (
                params.score_on - self.cfg.sampling.band,
                params.score_on + self.cfg.sampling.band,
            )

    def _heartbeat_model(self) -> dict[str, Any] | None:
        self._send_model_events()
        return self.models.heartbeat() if self.models is not None else None

    def stamp(self, det: Detection) -> Detection:
        """The pipeline's evidence thread, once per hit: attach what the app knows (GPS fix
        and state, the alert time by the one rule, the unit mode, an officer's mark), so every
        sink records the same alert."""
        extra: dict[str, Any] = {**det.extra, "mode": self.cfg.unit.mode}
        if self.field_io is not None and self.field_io.take_mark():
            extra["officer_marked"] = True
        max_age = self.cfg.gps.max_fix_age_s if self.cfg.gps is not None else 0.0
        return stamp_position(replace(det, extra=extra), self.gps, max_fix_age_s=max_age)

    def _on_status(self, status: str) -> None:
        if self.field_io is not None and status in ("running", "degraded"):
            self.field_io.set_status(status)
        if self.notifier is not None:
            self.notifier.status(f"phonewatch {status}")

    def _field_state(self) -> str:
        """What the status LED shows while frames flow: the most urgent problem first."""
        if self.uplink is not None and not self.uplink.is_connected:
            return "broker_offline"
        if self.gps is not None and self.gps.state in ("no_fix", "stale", "no_receiver"):
            return "no_gps"
        return "running"

    def shutdown_if_requested(self) -> bool:
        """After an ignition-off run: tell the Pico, then power off cleanly. True if so."""
        if not self.shutdown_requested.is_set():
            return False
        if self.supervisor is not None and self.cfg.gpio is not None:
            self.supervisor.announce_shutdown(self.cfg.gpio.halt_s)
        from edge.app.systemd import poweroff

        poweroff()
        return True

    def _sample(
        self,
        camera: str | None,
        frame: Frame,
        scores: dict[str, float],
        regions: Mapping[str, Roi],
    ) -> None:
        if self.sampler is None:
            return
        named = self._sampled_as.get(camera) if camera is not None else None
        if named is None:  # one camera (or a vehicle stage): the names are the regions' own
            self.sampler.on_frame(frame, scores, regions, camera)
            return
        self.sampler.on_frame(
            frame,
            {named[k].id: v for k, v in scores.items() if k in named},
            {named[k].id: named[k] for k in regions if k in named},
            camera,
        )

    def _on_frame(
        self,
        camera: str | None,
        first: bool,
        frame: Frame,
        scores: dict[str, float],
        regions: Mapping[str, Roi],
    ) -> None:
        """Inference thread, every frame of every camera: keep it cheap (references and
        comparisons only). Snapshots and ``collect`` follow the ``first`` camera only."""
        if self.watchdog is not None:
            self.watchdog.frame_seen()
        if first:
            self._latest = (frame, scores)
            if self.collector is not None:
                self.collector.on_frame(frame)
        self._sample(camera, frame, scores, regions)

    def _on_camera_status(self, status: str) -> None:
        """One camera of several changed state: the unit shows the group's."""
        if self.group is not None:
            self._on_status(self.group.status)

    def _on_hit(self, det: Detection) -> None:
        if self.field_io is not None:
            self.field_io.on_hit(det.roi_id)
        self._alerts_done += 1

    def _alerts_pending(self) -> bool:
        """A hit is being recorded or handed to the sink: sampled crops wait behind it."""
        # every hit ends in _on_hit, an evidence error or a sink error
        ended = sum(p.stats.evidence_errors + p.stats.sink_errors for p in self.pipelines)
        return sum(p.stats.hits for p in self.pipelines) > self._alerts_done + ended

    # -- commands (the uplink's command thread; payloads already checked) ---------------------
    def _on_command(self, name: str, payload: dict[str, Any]) -> None:
        log.info("command from the control room: %s %s", name, payload)
        handler = self._commands.get(name)
        if handler is None:
            log.warning("command %s has no handler on this unit", name)
            return
        handler(name, payload)

    def _mute(self, name: str, payload: dict[str, Any]) -> None:
        if self.field_io is None:
            log.info("mute ignored: this unit has no buzzer ([gpio] not configured)")
            return
        self.field_io.mute(float(payload.get("duration_s", 600)))

    def _collect(self, name: str, payload: dict[str, Any]) -> None:
        if self.collector is None or self.pipeline is None:
            log.warning("collect ignored: no uplink for crops or the unit is starting")
            return
        self.collector.start(CollectJob.from_command(payload, self.pipeline.rois))

    def _calibrate(self, name: str, payload: dict[str, Any]) -> None:
        if self.sampler is None or self.pipeline is None:
            log.warning("calibrate ignored: no uplink for crops or the unit is starting")
            return
        self.sampler.calibrate(CalibrationJob.from_command(payload, self.sampler.rois))

    def _snapshot(self, name: str, payload: dict[str, Any]) -> None:
        rid = payload.get("request_id") or "-"
        latest, p, uplink = self._latest, self.pipeline, self.uplink
        if latest is None or p is None or uplink is None:
            self._counts["snapshot_failed"] += 1
            log.warning("snapshot %s: no frame processed yet", rid)
            return
        frame, scores = latest
        try:
            jpeg = render_snapshot(frame.image, p.rois, scores, p.params.score_on)
        except PhonewatchError as e:
            self._counts["snapshot_failed"] += 1
            log.error("snapshot %s not made: %s", rid, e)
            return
        # The uplink counts it, published or dropped.
        if uplink.publish_snapshot(jpeg, request_id=payload.get("request_id")):
            log.info("snapshot %s: frame %d, %d bytes published", rid, frame.index, len(jpeg))
        else:
            log.warning("snapshot %s dropped: broker offline", rid)

    def _model_promote(self, name: str, payload: dict[str, Any]) -> None:
        if self.models is not None:
            self.models.promote(sha256=payload.get("package_sha256"))

    def _model_rollback(self, name: str, payload: dict[str, Any]) -> None:
        if self.models is not None:
            self.models.rollback(payload.get("reason") or "asked by the control room")

    def _model_shadow_stop(self, name: str, payload: dict[str, Any]) -> None:
        if self.models is not None:
            self.models.stop_shadow()

    def _reload(self, name: str, payload: dict[str, Any]) -> None:
        rid = payload.get("request_id") or "-"
        if self.config_path is None:
            self._counts["reloads_refused"] += 1
            log.warning("reload %s ignored: this unit was not started from a config file", rid)
            return
        try:
            check_reloadable(self.config_path)
        except PhonewatchError as e:
            self._counts["reloads_refused"] += 1
            log.error("reload %s refused; still running on the old config: %s", rid, e)
            return
        log.warning(
            "reload %s: %s is valid; stopping to restart on it (exit status %d)",
            rid,
            self.config_path,
            EXIT_RELOAD,
        )
        self.reload_requested.set()

    # -- running ------------------------------------------------------------------------------
    def run(
        self,
        *,
        stop: threading.Event | None = None,
        max_s: float | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Run until the source ends, ``stop`` is set, ignition shutdown, a valid ``reload``
        (then ``exit_code`` is EXIT_RELOAD), or ``max_s``."""
        p = self.runner
        assert p is not None
        stop = stop or threading.Event()
        p.start()
        if self.notifier is not None:
            self.notifier.ready()
        started = time.monotonic()
        last_log = started
        interval = self.cfg.stats.log_interval_s
        try:
            while not p.is_finished:
                if (
                    stop.wait(0.25)
                    or self.shutdown_requested.is_set()
                    or self.reload_requested.is_set()
                ):
                    break
                now = time.monotonic()
                if max_s is not None and now - started >= max_s:
                    break
                # Pet the watchdog only while frames flow: a stuck pipeline gets restarted.
                if self.watchdog is not None:
                    self.watchdog.tick()
                if self.field_io is not None and p.status == "running":
                    self.field_io.set_status(self._field_state())
                if progress is not None:
                    progress(p.snapshot())
                if now - last_log >= interval:
                    last_log = now
                    s = p.snapshot()
                    log.info(
                        "fps %.1f in / %.1f out, dropped %d, invoke ms p50 %s p99 %s, hits %d",
                        s["fps_in"],
                        s["fps"],
                        s["dropped_frames"],
                        s["invoke_ms_p50"],
                        s["invoke_ms_p99"],
                        s["hits"],
                    )
        finally:
            if self.notifier is not None:
                self.notifier.stopping()
            p.stop()
        if progress is not None:
            progress(p.snapshot())
        return p.snapshot()
