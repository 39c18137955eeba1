"""The composition root: the only place that builds adapters from the config."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.adapters.camera import FolderSource, OpenCvSource, PicameraSource, ReplaySource
from edge.adapters.classifier import LiteRTClassifier
from edge.adapters.evidence import EvidenceStore
from edge.adapters.sinks import JsonlSink
from edge.app.config import (
    Config,
    FolderCameraConfig,
    JsonlSinkConfig,
    OpenCvCameraConfig,
    PicameraConfig,
    ReplayCameraConfig,
    load_config,
)
from edge.app.pipeline import Pipeline
from edge.app.remote import CollectJob, Collector, render_snapshot
from edge.core.errors import ConfigError, PhonewatchError
from edge.core.ports import AlertSink, FrameSource
from edge.core.roi import Roi

log = logging.getLogger(__name__)

EXIT_RELOAD = 75
"""EX_TEMPFAIL (sysexits.h): the run ended to pick up a new config after a ``reload`` command.
``phonewatch run`` exits with it and systemd restarts the service on the new config
(``RestartForceExitStatus=75`` in deploy/systemd/phonewatch.service)."""


def build_source(cfg: Config, *, speed: float | None = None) -> FrameSource:
    cam = cfg.camera
    if isinstance(cam, ReplayCameraConfig):
        return ReplaySource(cam.path, loop=cam.loop, speed=cam.speed if speed is None else speed)
    if isinstance(cam, OpenCvCameraConfig):
        return OpenCvSource(cam.device, width=cam.width, height=cam.height, fps=cam.fps)
    if isinstance(cam, FolderCameraConfig):
        return FolderSource(cam.path, fps=cam.fps if speed is None else 0.0, loop=cam.loop)
    if isinstance(cam, PicameraConfig):
        return PicameraSource(camera_num=cam.camera_num, main_size=cam.main_size,
                              lores_size=cam.lores_size, fps=cam.fps)
    raise ConfigError(f"camera.type {cam.type!r} is not supported")  # pragma: no cover


def is_file_source(cfg: Config) -> bool:
    cam = cfg.camera
    if isinstance(cam, ReplayCameraConfig | FolderCameraConfig):
        return True
    if isinstance(cam, OpenCvCameraConfig) and isinstance(cam.device, str):
        return "://" not in cam.device and not cam.device.startswith("/dev/")
    return False


def build_classifier(cfg: Config) -> LiteRTClassifier:
    m = cfg.model
    clf = LiteRTClassifier.open(m.path, sidecar=m.sidecar, accelerator=m.accelerator,
                                threads=m.threads)
    if m.threshold is not None:
        clf.threshold = m.threshold
    return clf


def build_rois(cfg: Config) -> list[Roi]:
    return [r.to_roi() for r in cfg.rois]


def build_evidence(cfg: Config) -> EvidenceStore:
    e = cfg.evidence
    return EvidenceStore(cfg.evidence_dir, quota_bytes=int(e.quota_mb * 1e6),
                         jpeg_quality=e.jpeg_quality)


def module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def build_gps(cfg: Config) -> Any | None:
    if cfg.gps is None:
        return None
    from edge.adapters.gps import build_gps_source

    return build_gps_source(cfg.gps)


def build_sink(cfg: Config, *, gps: Any | None = None,
               stats: Callable[[], dict[str, Any]] | None = None,
               on_command: Callable[[str, dict[str, Any]], None] | None = None) -> AlertSink:
    s = cfg.sink
    if isinstance(s, JsonlSinkConfig):
        return JsonlSink(s.path or cfg.unit.data_dir / "alerts.jsonl")
    from edge.adapters.mqtt import build_mqtt_sink

    sink: AlertSink = build_mqtt_sink(s, unit_id=cfg.unit.id, data_dir=cfg.unit.data_dir,
                                      gps=gps, stats=stats, on_command=on_command)
    return sink


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

    def __init__(self, cfg: Config, *, lossless: bool = False, speed: float | None = None,
                 extra_sink: AlertSink | None = None, config_path: Path | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        """The file ``cfg`` came from: what the ``reload`` command re-reads."""
        self._stack = contextlib.ExitStack()
        self.lossless = lossless
        self.speed = speed
        self.extra_sink = extra_sink
        self.pipeline: Pipeline | None = None
        self.gps: Any | None = None
        self.field_io: Any | None = None
        self.notifier: Any | None = None
        self.watchdog: Any | None = None
        self.supervisor: Any | None = None
        self.sink: Any | None = None
        self.shutdown_requested = threading.Event()
        self.reload_requested = threading.Event()
        self.collector: Collector | None = None
        self._latest: tuple[Any, dict[str, float]] | None = None
        self._counts = {"snapshot_failed": 0, "reloads_refused": 0}
        """``snapshot_failed``: snapshots not made (no frame yet, drawing failed). The uplink
        counts the ones it published, dropped or had refused; the heartbeat carries both."""
        self._muted_until = 0.0

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
        if self.pipeline is not None and not self.pipeline.stop_event.is_set():
            self.pipeline.stop()
        self._stack.close()

    def _build(self) -> None:
        cfg = self.cfg
        cfg.unit.data_dir.mkdir(parents=True, exist_ok=True)
        if module_available("edge.app.systemd"):
            from edge.app.systemd import FrameWatchdog, SystemdNotifier

            self.notifier = SystemdNotifier()
            self.watchdog = FrameWatchdog(self.notifier)
        if cfg.gpio is not None:
            from edge.adapters.gpio import FieldIo

            self.field_io = FieldIo.from_config(cfg.gpio, mode=cfg.unit.mode)
            self.field_io.on_shutdown_request = self.shutdown_requested.set
            self._stack.callback(self.field_io.close)
            self.field_io.set_status("starting")
            g = cfg.gpio
            if g.supervisor_port:
                from edge.adapters.supervisor import SupervisorLink

                self.supervisor = SupervisorLink(
                    g.supervisor_port, baud=g.supervisor_baud, heartbeat_s=g.heartbeat_s,
                    status_text=lambda: self.pipeline.status if self.pipeline else "starting")
                self._stack.callback(self.supervisor.close)
                if g.strobe_on_us:
                    self.supervisor.set_strobe(g.strobe_on_us, g.strobe_max_duty_pct)
        classifier = build_classifier(cfg)
        self._stack.callback(classifier.close)
        source = build_source(cfg, speed=self.speed)
        evidence = build_evidence(cfg)
        self.gps = build_gps(cfg)
        if self.gps is not None:
            self.gps.start()
            self._stack.callback(self.gps.close)
        sink = build_sink(cfg, gps=self.gps, stats=self._heartbeat_stats,
                          on_command=self._on_command)
        self._stack.callback(sink.close)
        self.sink = sink
        if hasattr(sink, "publish_collect"):  # the MQTT uplink: crops and snapshots
            self.collector = Collector(uplink=sink,  # type: ignore[arg-type]
                                       jpeg_quality=cfg.evidence.jpeg_quality)
            self._stack.callback(self.collector.close)  # closed before the uplink
        if self.extra_sink is not None:
            from edge.adapters.sinks import TeeSink

            sink = TeeSink(sink, self.extra_sink)
        cam = cfg.camera
        self.pipeline = Pipeline(
            source=source, classifier=classifier, rois=build_rois(cfg),
            decider=cfg.decider.params(classifier.threshold), evidence=evidence, sink=sink,
            unit_id=cfg.unit.id, lossless=self.lossless,
            reconnect_min_s=cam.reconnect_min_s, reconnect_max_s=cam.reconnect_max_s,
            clip_before_s=cfg.evidence.clip_before_s, clip_after_s=cfg.evidence.clip_after_s,
            clip_width=cfg.evidence.clip_width, on_status=self._on_status, on_hit=self._on_hit,
            on_frame=self._on_frame, detection_extra=self._detection_extra,
        )
        if is_file_source(cfg):
            # A missing or unreadable file fails here, clearly. A camera that is absent at
            # boot does not: the unit starts degraded and keeps trying.
            self.pipeline.open_source()

    @property
    def exit_code(self) -> int:
        """The process exit status the run asks for: 0, or EXIT_RELOAD after a ``reload``."""
        return EXIT_RELOAD if self.reload_requested.is_set() else 0

    # -- hooks --------------------------------------------------------------------------------
    def _heartbeat_stats(self) -> dict[str, Any]:
        out = self.pipeline.snapshot() if self.pipeline is not None else {}
        if self.collector is not None:
            out.update(self.collector.stats())
        out.update(self._counts)
        media_stats = getattr(self.sink, "media_stats", None)  # the MQTT uplink
        if callable(media_stats):
            out.update({k: v for k, v in media_stats().items() if k.startswith("snapshot_")})
        return out

    def _on_status(self, status: str) -> None:
        if self.field_io is not None and status in ("running", "degraded"):
            self.field_io.set_status(status)
        if self.notifier is not None:
            self.notifier.status(f"phonewatch {status}")

    def _field_state(self) -> str:
        """What the status LED shows while frames flow: the most urgent problem first."""
        if getattr(self.sink, "is_connected", True) is False:  # the MQTT uplink says so
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

    def _on_frame(self, frame: Any, scores: dict[str, float]) -> None:
        """Inference thread, every frame: keep it cheap (references and comparisons only)."""
        if self.watchdog is not None:
            self.watchdog.frame_seen()
        self._latest = (frame, scores)
        if self.collector is not None:
            self.collector.on_frame(frame)

    def _on_hit(self, det: Any) -> None:
        if self.field_io is not None:
            self.field_io.on_hit(det.roi_id)

    def _detection_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"mode": self.cfg.unit.mode}
        if self.field_io is not None and self.field_io.take_mark():
            extra["officer_marked"] = True
        return extra

    def _on_command(self, name: str, payload: dict[str, Any]) -> None:
        """The uplink's command thread, with a payload already checked against the schema."""
        log.info("command from the control room: %s %s", name, payload)
        if name == "mute" and self.field_io is not None:
            self.field_io.mute(float(payload.get("duration_s", 600)))
        elif name == "collect":
            if self.collector is None or self.pipeline is None:
                log.warning("collect ignored: no uplink for crops or the unit is starting")
                return
            self.collector.start(CollectJob.from_command(payload, self.pipeline.rois))
        elif name == "snapshot":
            self._snapshot(payload)
        elif name == "reload":
            self._reload(payload)

    def _snapshot(self, payload: dict[str, Any]) -> None:
        rid = payload.get("request_id") or "-"
        latest, p, sink = self._latest, self.pipeline, self.sink
        if latest is None or p is None or sink is None or not hasattr(sink, "publish_snapshot"):
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
        if sink.publish_snapshot(jpeg, request_id=payload.get("request_id")):
            log.info("snapshot %s: frame %d, %d bytes published", rid, frame.index, len(jpeg))
        else:
            log.warning("snapshot %s dropped: broker offline", rid)

    def _reload(self, payload: dict[str, Any]) -> None:
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
        log.warning("reload %s: %s is valid; stopping to restart on it (exit status %d)", rid,
                    self.config_path, EXIT_RELOAD)
        self.reload_requested.set()

    # -- running ------------------------------------------------------------------------------
    def run(self, *, stop: threading.Event | None = None, max_s: float | None = None,
            progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Run until the source ends, ``stop`` is set, ignition shutdown, a valid ``reload``
        (then ``exit_code`` is EXIT_RELOAD), or ``max_s``."""
        assert self.pipeline is not None
        p = self.pipeline
        stop = stop or threading.Event()
        p.start()
        if self.notifier is not None:
            self.notifier.ready()
        started = time.monotonic()
        last_log = started
        interval = self.cfg.stats.log_interval_s
        try:
            while not p.is_finished:
                if (stop.wait(0.25) or self.shutdown_requested.is_set()
                        or self.reload_requested.is_set()):
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
                    log.info("fps %.1f in / %.1f out, dropped %d, invoke ms p50 %s p99 %s, "
                             "hits %d", s["fps_in"], s["fps"], s["dropped_frames"],
                             s["invoke_ms_p50"], s["invoke_ms_p99"], s["hits"])
        finally:
            if self.notifier is not None:
                self.notifier.stopping()
            p.stop()
        if progress is not None:
            progress(p.snapshot())
        return p.snapshot()
