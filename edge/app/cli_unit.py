"""Unit subcommands: run, check, classify, roi-preview, demo."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.app.cli import UsageError, explain, quiet_tflite
from edge.app.config import Config, load_config
from edge.core.errors import CameraError, ConfigError, PhonewatchError

if TYPE_CHECKING:
    from edge.app.compose import Unit
    from edge.core.ports import Detection

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_MODEL = REPO_ROOT / "models" / "phone_in_hand" / "phone_in_hand.tflite"
DEMO_GPS = REPO_ROOT / "deploy" / "gps" / "demo-drive.nmea"
"""A synthetic drive (generated, not recorded), replayed so the demo's alerts have a position."""
DEFAULT_DEMO_OUT = REPO_ROOT / "var" / "demo"
DEMO_COOLDOWN_S = 5.0
"""The demo's decider cooldown: shorter than the gap between two cars in one lane of the clip."""


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run",
        help="run the unit: camera -> classifier -> alerts",
        description="Run the unit until the camera ends (a file), Ctrl-C, SIGTERM or an "
        "ignition shutdown. Stats are logged periodically and printed as a table on exit.",
    )
    p.add_argument("--config", "-c", required=True, type=Path, help="unit config (TOML)")
    p.add_argument(
        "--offline",
        action="store_true",
        help="process a file source frame by frame as fast as possible (no drops), "
        "with a progress bar",
    )
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    p.add_argument(
        "--truth",
        type=Path,
        default=None,
        help="ground-truth JSON of the clip: score hits found / missed / false",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "check",
        help="check a unit's config, model, camera, disk, GPS and broker",
        description="One line per check, OK or FAIL with the reason. Exit status 1 on any FAIL.",
    )
    p.add_argument("--config", "-c", required=True, type=Path, help="unit config (TOML)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "classify",
        help="score images with a model (one JSON line per image)",
        description="Prints {path, score, label, is_phone} per image: score is P(phone) from the "
        "sidecar's positive labels, label the model's top label.",
    )
    p.add_argument("--model", "-m", required=True, type=Path, help=".tflite model")
    p.add_argument("--sidecar", type=Path, default=None, help="sidecar JSON if not <model>.json")
    p.add_argument(
        "--accelerator",
        choices=["auto", "cpu", "edgetpu"],
        default="cpu",
        help="cpu (default); edgetpu: the MODEL_edgetpu.tflite twin on a Coral, "
        "or fail; auto: the Coral when there is one, else the CPU",
    )
    p.add_argument("images", nargs="+", type=Path, help="image files")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser(
        "roi-preview",
        help="draw the ROIs and current scores on a camera frame",
        description="Grabs a frame from the configured camera, draws each driver-window region "
        "(and the margin crop) with its score, and writes a PNG so an installer can check "
        "the aim by eye.",
    )
    p.add_argument("--config", "-c", required=True, type=Path, help="unit config (TOML)")
    p.add_argument(
        "--out", "-o", required=True, type=Path, help="image to write: .png, .jpg or .jpeg"
    )
    p.add_argument("--skip", type=int, default=0, help="frames to skip first (file sources)")
    p.set_defaults(func=cmd_roi_preview)

    p = sub.add_parser(
        "demo",
        help="render the demo clip and run the unit on it end to end",
        description="Makes the synthetic junction clip (if missing), starts a local Mosquitto "
        "when the MQTT uplink is available, runs the unit on the clip with the default model and "
        "prints a summary: frames, fps, hits, and hits found / missed / false.",
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_DEMO_OUT, help="working folder (clip, evidence, alerts)"
    )
    p.add_argument("--seed", type=int, default=7, help="seed of the demo clip")
    p.add_argument(
        "--realtime",
        action="store_true",
        help="replay at the clip's frame rate (drops possible) instead of offline",
    )
    p.add_argument(
        "--model",
        type=Path,
        default=DEMO_MODEL,
        help="model to run (default: the shipped phone-in-hand model)",
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help="keep the control-room dashboard running afterwards (Ctrl-C or SIGTERM "
        "stops it); its database, and so the reviews, is kept between runs in "
        "OUT/controlroom",
    )
    p.add_argument(
        "--no-vehicles",
        action="store_true",
        help="skip the second part: the vehicle stage on a junction of moving cars",
    )
    p.set_defaults(func=cmd_demo)


# -- run -------------------------------------------------------------------------------------
class Progress:
    """A one-line progress bar on stderr (a line every 10 % when not a terminal)."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.tty = sys.stderr.isatty()
        self._last_decile = -1
        self._last_draw = 0.0

    def __call__(self, snap: dict[str, Any]) -> None:
        n = snap["frames_processed"]
        now = time.monotonic()
        if self.total:
            frac = min(1.0, n / self.total)
            decile = int(frac * 10)
            if self.tty:
                if now - self._last_draw < 0.2 and n < self.total:
                    return
                self._last_draw = now
                bar = "#" * int(frac * 30)
                sys.stderr.write(
                    f"\r[{bar:<30}] {n}/{self.total} frames  {snap['fps']:.1f} fps"
                    f"  hits {snap['hits']} "
                )
                sys.stderr.flush()
            elif decile != self._last_decile:
                self._last_decile = decile
                sys.stderr.write(
                    f"{decile * 10:3d}% {n}/{self.total} frames, "
                    f"{snap['fps']:.1f} fps, hits {snap['hits']}\n"
                )

    def done(self) -> None:
        if self.tty and self.total:
            sys.stderr.write("\n")

    def clear_line(self) -> None:
        """Clear the bar so a line printed now does not land in the middle of it."""
        if self.tty and self.total:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` inside the block; the previous handlers come back after
    it (so a Ctrl-C after the run, e.g. in ``demo --serve``, interrupts as usual)."""

    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    with _signal_handlers(handler):
        yield


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """SIGTERM (as SIGINT already does) raises KeyboardInterrupt inside the block, so a
    ``kill`` unwinds the ``with`` blocks and stops what they started (a local Mosquitto)."""

    def handler(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    with _signal_handlers(handler):
        yield


@contextlib.contextmanager
def _signal_handlers(handler: Any) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are the main thread's; a run in another thread is stopped otherwise
        return
    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


class HitPrinter:
    """An alert sink that prints one line per hit as it happens."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress

    def send(self, d: Detection) -> None:
        if self.progress is not None:
            self.progress.clear_line()
        print(hit_line(d), flush=True)

    def close(self) -> None:
        pass


def hit_line(d: Detection) -> str:
    when = d.time_utc or ""
    return (
        f"  hit {d.alert_id}: roi {d.roi_id} frame {d.frame_index}"
        f"{' at ' + when if when else ''} score {d.score:.3f} "
        f"({d.frames_over}/{d.window} frames) -> {d.evidence.frame_path}"
    )


def check_data_dirs(cfg: Config) -> None:
    """Refuse, in one line, folders that are files (before anything is built)."""
    from edge.app.compose import Paths

    paths = Paths.of(cfg)
    for key, d in (("unit.data_dir", paths.data_dir), ("evidence.dir", paths.evidence_dir)):
        if d.exists() and not d.is_dir():
            raise ConfigError(f"{key}: {d} is a file, not a folder")
        parent = d
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"{key}: {d} cannot be made: {parent} is a file, not a folder")


def roi_mismatch(cfg: Config, truth: dict[str, Any], *, tolerance: float = 0.02) -> list[str]:
    """How the config's regions differ from the ones the ground truth was labelled in: the
    score compares hits by region id and frame, so other regions make it meaningless."""
    truth_rois = truth.get("rois") or {}
    if not isinstance(truth_rois, dict) or not truth_rois:
        return []
    ours = {r.id: r.to_roi().bbox() for r in cfg.first_camera.rois}
    out: list[str] = []
    only_truth = sorted(set(truth_rois) - set(ours))
    only_cfg = sorted(set(ours) - set(truth_rois))
    if only_truth:
        out.append(
            f"region(s) {', '.join(only_truth)} of the ground truth are not in the "
            "config: phones there cannot be found"
        )
    if only_cfg:
        out.append(
            f"region(s) {', '.join(only_cfg)} of the config are not in the ground truth: "
            "every hit there counts as false"
        )
    for rid in sorted(set(ours) & set(truth_rois)):
        try:
            theirs = tuple(float(v) for v in truth_rois[rid])
        except (TypeError, ValueError):
            continue
        mine = ours[rid]
        if (
            len(theirs) != 4
            or max(abs(a - b) for a, b in zip(mine, theirs, strict=True)) > tolerance
        ):
            out.append(
                f"region {rid}: the config has {_box(mine)}, the ground truth {_box(theirs)}"
            )
    return out


def _box(b: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in b) + "]"


def startup_line(unit: Any) -> str:
    """What the run uses, in one line: camera (fps), model, accelerator, where alerts go."""
    from edge.adapters.classifier import edgetpu_twin
    from edge.adapters.mqtt_config import MqttSinkConfig

    cfg: Config = unit.cfg
    clf = unit.pipeline.classifier

    def camera(p: Any) -> str:
        src = p.source
        fps = f"{src.fps:.1f} fps" if src.fps else "fps not known until it opens"
        return f"{p.camera_id}: {src.name} ({fps})" if p.camera_id else f"{src.name} ({fps})"

    cams = [camera(p) for p in unit.pipelines]
    what = f"camera {cams[0]}" if len(cams) == 1 else f"{len(cams)} cameras {', '.join(cams)}"
    accel = "Edge TPU (Coral)" if clf.accelerator == "edgetpu" else "CPU"
    if clf.accelerator != "edgetpu" and cfg.model.accelerator == "auto":
        twin = edgetpu_twin(Path(cfg.model.path))
        accel += (
            f" (auto: no {twin.name})"
            if not twin.is_file()
            else " (auto: the Edge TPU is not usable; -v says why)"
        )
    sink = cfg.sink
    if isinstance(sink, MqttSinkConfig):
        where = (
            f"MQTT broker {sink.host}:{sink.port}{' (TLS)' if sink.uses_tls else ''}, "
            f"outbox {unit.paths.outbox}"
        )
    else:
        where = f"{unit.paths.alerts_jsonl}"
    return (
        f"phonewatch {cfg.unit.id}: {what}, model {clf.name} "
        f"{clf.version} ({Path(clf.model_path).name}), accelerator {accel}, "
        f"alerts to {where}"
    )


def warn_truth_mismatch(cfg: Config, truth: Path | None, truth_data: dict[str, Any]) -> None:
    """Warn when the ground truth's regions are not the config's (the score would mislead)."""
    for problem in roi_mismatch(cfg, truth_data):
        print(f"warning: --truth {truth}: {problem}", file=sys.stderr)
    if roi_mismatch(cfg, truth_data):
        print(
            "warning: the score below matches hits to the ground truth by region name "
            "and frame, so with other regions it means little: for a true score, use "
            "the regions the ground truth gives ('rois' in it)",
            file=sys.stderr,
            flush=True,
        )


def run_unit(
    cfg: Config,
    *,
    offline: bool,
    max_s: float | None = None,
    truth: Path | None = None,
    extra_sink: Any | None = None,
    config_path: Path | None = None,
) -> dict[str, Any]:
    """Run the unit; ``result["exit_code"]`` is the status to exit with (EXIT_RELOAD after a
    valid ``reload`` command, which re-reads ``config_path``; 1 when the camera failed) and
    ``result["error"]`` says why when it is 1."""
    from edge.adapters.camera import ReplaySource
    from edge.adapters.sinks import MemorySink, TeeSink
    from edge.app.compose import Unit, is_file_source
    from edge.app.demo import load_truth, score_hits

    vehicle_truth = _load_vehicle_truth(truth)
    truth_data = load_truth(truth) if truth is not None and vehicle_truth is None else None
    if truth_data is not None:
        warn_truth_mismatch(cfg, truth, truth_data)
    check_data_dirs(cfg)
    memory = MemorySink()
    progress: Progress | None = None
    printer = HitPrinter()
    sinks: Any = TeeSink(memory, printer)
    if extra_sink is not None:
        sinks = TeeSink(memory, printer, extra_sink)
    stop = threading.Event()
    with contextlib.ExitStack() as stack:
        stack.enter_context(stop_on_signals(stop))
        with quiet_tflite():
            unit = stack.enter_context(
                Unit(
                    cfg,
                    lossless=offline,
                    speed=0.0 if offline else None,
                    extra_sink=sinks,
                    config_path=config_path,
                )
            )
        runner = unit.runner
        assert runner is not None
        print(startup_line(unit), flush=True)
        counts = [
            p.source.frame_count if isinstance(p.source, ReplaySource) else None
            for p in unit.pipelines
        ]
        total = None if None in counts else sum(c for c in counts if c is not None)
        progress = Progress(total) if offline else None
        printer.progress = progress
        snap = unit.run(stop=stop, max_s=max_s, progress=progress)
        if progress is not None:
            progress.done()
        if offline and not stop.is_set():
            _drain(unit)
        print(runner.summary_table())
        ignition_off = unit.shutdown_requested.is_set()
    if ignition_off:  # everything above is closed and flushed: now power off
        unit.shutdown_if_requested()
    result: dict[str, Any] = {
        "stats": snap,
        "detections": memory.detections,
        "exit_code": unit.exit_code,
        "error": None,
    }
    if not result["exit_code"]:  # not a reload (a restart on a new config may fix a camera)
        for p in unit.pipelines:
            error = _camera_failure(p, file_run=is_file_source(cfg), stopped=stop.is_set())
            if error is not None:
                result["exit_code"], result["error"] = 1, error
                break
    if vehicle_truth is not None:
        result["vehicle_score"] = _score_vehicles(vehicle_truth, memory.detections)
    if truth_data is not None:
        fps = float(truth_data.get("fps") or 25.0)
        sc = score_hits(
            [(d.roi_id, d.frame_index) for d in memory.detections],
            truth_data,
            slack_frames=int(fps),
        )
        result["score"] = sc
        print(
            f"ground truth: {sc.phone_events} drivers with a phone -> found {sc.found}, "
            f"missed {sc.missed}; false alerts {sc.false}; repeats {sc.duplicate} "
            f"(recall {sc.recall:.2f}, precision {sc.precision:.2f})"
        )
    return result


def _load_vehicle_truth(path: Path | None) -> dict[str, Any] | None:
    """A per-vehicle truth (``models.synth.patrol``'s ``truth.json``: ``vehicles`` and
    ``passes``), or None for anything else (the fixed-ROI truth ``load_truth`` reads)."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # load_truth says what is wrong with it
    if isinstance(data, dict) and isinstance(data.get("passes"), list) and "vehicles" in data:
        return data
    return None


def _score_vehicles(truth: dict[str, Any], detections: Sequence[Any]) -> Any:
    """Found / missed / false / repeats per vehicle pass, printed as a table."""
    from edge.app.vehicle_truth import alerts_from, score, table

    records = []
    for d in detections:
        if d.roi_box is None:
            continue
        x, y, w, h = d.roi_box
        records.append(
            {
                "frame": d.frame_index,
                "box": [x, y, x + w, y + h],
                "track_id": d.vehicle.track_id if d.vehicle is not None else None,
            }
        )
    sc = score(truth, alerts_from(records, float(truth.get("fps") or 25.0)))
    print(table(sc))
    print(
        f"ground truth per vehicle: {sc.found + sc.missed} drivers with a phone -> found "
        f"{sc.found}, missed {sc.missed}; false alerts {sc.false_alerts}; repeats {sc.repeats}"
    )
    return sc


def _camera_failure(p: Any, *, file_run: bool, stopped: bool) -> str | None:
    """Why the run counts as failed because of camera ``p``, or None."""
    stats = p.stats
    name = f"{p.camera_id} ({p.source.name})" if p.camera_id else p.source.name
    if stats.capture_error is not None:
        return f"camera {name} failed: {stats.capture_error}"
    if stats.captured == 0 and stats.last_camera_error is not None:
        return (
            f"camera {name} never delivered a frame "
            f"({stats.camera_errors} attempt(s)): {stats.last_camera_error}"
        )
    if stats.captured == 0 and not file_run and not stopped:
        return f"camera {name} delivered no frame"
    return None


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    result = run_unit(
        cfg, offline=args.offline, max_s=args.max_seconds, truth=args.truth, config_path=args.config
    )
    if result["error"]:
        print(f"phonewatch: error: {result['error']}", file=sys.stderr)
    elif result["exit_code"]:
        print(
            f"phonewatch: stopped to restart on a reloaded {args.config} "
            f"(exit status {result['exit_code']})",
            file=sys.stderr,
        )
    return int(result["exit_code"])


# -- check -----------------------------------------------------------------------------------
# Each check returns (ok, detail, value): the value (the loaded model, the first frame) feeds
# the checks after it.
CheckResult = tuple[bool, str, Any]


def _check_model(cfg: Config) -> CheckResult:
    from edge.app.compose import build_classifier

    with quiet_tflite():
        clf = build_classifier(cfg)
    return (
        True,
        (
            f"{clf.name} {clf.version} sha256 {clf.sha256[:12]} "
            f"({clf.spec.input.width}x{clf.spec.input.height} {clf.spec.input.colour}, "
            f"threshold {clf.threshold:.2f})"
        ),
        clf,
    )


def _check_accelerator(cfg: Config, clf: Any) -> CheckResult:
    if clf is None:
        return False, "no model loaded", None
    want = cfg.model.accelerator
    if clf.accelerator == "edgetpu":
        return True, "Edge TPU (Coral)", None
    if want == "auto":
        from edge.adapters.classifier import edgetpu_twin

        twin = edgetpu_twin(Path(cfg.model.path))
        why = (
            f"no {twin.name} next to the model"
            if not twin.is_file()
            else "the Edge TPU is not usable; -v says why"
        )
        return True, f"CPU (auto: {why})", None
    return True, "CPU", None


def _check_camera(cfg: Config) -> CheckResult:
    from edge.app.compose import build_source

    src = build_source(cfg, speed=0.0)
    src.open()
    try:
        frame = src.read()
    finally:
        src.close()
    if frame is None:
        raise CameraError(f"{src.name} delivered no frame")
    w, h = frame.size
    fps = f", {src.fps:.1f} fps" if src.fps else ""
    return True, f"{src.name}: {w}x{h}{fps}", frame


OFFLINE_DRAIN_S = 10.0
"""An offline run (a file) waits at the end for the control room to receipt what it sent,
clips included, as long as it receipts something at least once every this many seconds, or a
part it has not receipted is due to go again before ``OFFLINE_DRAIN_MAX_S`` runs out (the
control room answered this run, so a resend will likely land); what is left stays in the
outbox for the next run."""

OFFLINE_DRAIN_MAX_S = 120.0
"""The longest an offline run waits at its end, however the receipts trickle in."""


def _drain(unit: Unit) -> None:
    from edge.adapters.mqtt import MqttUplink

    up = unit.sink
    if not isinstance(up, MqttUplink):
        return
    deadline = time.monotonic() + OFFLINE_DRAIN_MAX_S
    acked, _ = up.drain_progress()
    heard = acked > 0
    while not up.wait_drained(OFFLINE_DRAIN_S):
        now_acked, resend_in = up.drain_progress()
        heard = heard or now_acked > 0
        progressed = now_acked > acked
        resend_soon = heard and resend_in is not None and resend_in < deadline - time.monotonic()
        if time.monotonic() >= deadline or not (progressed or resend_soon):
            print(
                f"{up.outbox.depth()} alert(s) not yet receipted by the control room: they "
                "stay in the outbox and go when the unit next runs",
                flush=True,
            )
            return
        acked = now_acked


def _check_rois(cfg: Config, frame: Any) -> CheckResult:
    from edge.app.compose import build_rois

    rs = build_rois(cfg)
    if frame is None:
        return True, f"{len(rs)} region(s) (not checked against a frame)", None
    img = frame.inference_image
    sizes = []
    for r in rs:
        crop = r.crop(img)
        if min(crop.shape[:2]) < 16:
            return False, f"roi {r.id!r} crops only {crop.shape[1]}x{crop.shape[0]} px", None
        sizes.append(f"{r.id} {crop.shape[1]}x{crop.shape[0]}")
    return True, ", ".join(sizes), None


def _check_disk(cfg: Config) -> CheckResult:
    from edge.app.compose import Paths, disk_free_bytes

    # A check changes nothing: it looks at the evidence folder, or at the nearest folder
    # above it that exists (where 'run' would make it), and never creates either.
    check_data_dirs(cfg)
    d = Paths.of(cfg).evidence_dir
    existing = d
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    writable = os.access(existing, os.W_OK | os.X_OK)
    if existing == d:
        where = f"{d} {'writable' if writable else 'NOT writable'}"
    else:
        where = (
            f"{d} does not exist yet; {existing} (the nearest folder above it) is "
            f"{'writable: run will create it' if writable else 'NOT writable'}"
        )
    free = disk_free_bytes(d)
    quota = cfg.evidence.quota_mb * 1e6
    ok = writable and free >= min(quota, 200e6)
    return (
        ok,
        (
            f"{where}, {free / 1e9:.1f} GB free, quota {quota / 1e9:.2f} GB"
            + ("" if free >= min(quota, 200e6) else " (less free space than needed)")
        ),
        None,
    )


def _check_gps(cfg: Config) -> CheckResult:
    from edge.adapters.gps import check_gps

    ok, detail = check_gps(cfg.gps, timeout_s=5.0)  # type: ignore[arg-type]
    return ok, detail, None


def _check_broker(cfg: Config) -> CheckResult:
    from edge.adapters.mqtt import check_broker

    ok, detail = check_broker(cfg.sink, unit_id=cfg.unit.id, timeout_s=5.0)
    return ok, detail, None


def run_checks(cfg: Config) -> list[tuple[str, bool, str]]:
    results: list[tuple[str, bool, str]] = []

    def check(name: str, fn: Callable[[], CheckResult]) -> Any:
        try:
            ok, detail, value = fn()
        except PhonewatchError as e:
            ok, detail, value = False, explain(e), None
        except Exception as e:  # a check must report, never crash the report
            ok, detail, value = False, f"{type(e).__name__}: {e}", None
        results.append((name, ok, detail))
        return value

    clf = check("model", lambda: _check_model(cfg))
    check("accelerator", lambda: _check_accelerator(cfg, clf))
    frame = check("camera", lambda: _check_camera(cfg))
    check("rois", lambda: _check_rois(cfg, frame))
    check("disk", lambda: _check_disk(cfg))
    if cfg.gps is not None:
        check("gps", lambda: _check_gps(cfg))
    else:
        results.append(("gps", True, "not configured (alerts carry no position)"))
    if cfg.sink.type == "mqtt":
        check("broker", lambda: _check_broker(cfg))
    else:
        results.append(("broker", True, f"not used (alerts go to {cfg.sink.type})"))
    if clf is not None:
        clf.close()
    return results


def cmd_check(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except PhonewatchError as e:
        print(f"FAIL config       {e}")
        return 1
    print(f"OK   config       {args.config} (unit {cfg.unit.id}, {cfg.unit.mode})")
    results = run_checks(cfg)
    for name, ok, detail in results:
        print(f"{'OK  ' if ok else 'FAIL'} {name:<12} {detail}")
    return 0 if all(ok for _, ok, _ in results) else 1


# -- classify --------------------------------------------------------------------------------
def cmd_classify(args: argparse.Namespace) -> int:
    import cv2

    from edge.adapters.classifier import LiteRTClassifier

    failed = 0
    with quiet_tflite():
        clf = LiteRTClassifier.open(args.model, sidecar=args.sidecar, accelerator=args.accelerator)
    with clf:
        for path in args.images:
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                print(json.dumps({"path": str(path), "error": "not a readable image"}))
                failed += 1
                continue
            t = clf.preprocess(img)
            probs = clf.probabilities(clf.invoke(t))
            score = float(np.clip(probs[list(clf.spec.positive_indices)].sum(), 0, 1))
            top = int(np.argmax(probs))
            print(
                json.dumps(
                    {
                        "path": str(path),
                        "score": round(score, 4),
                        "label": clf.spec.labels[top],
                        "is_phone": score >= clf.threshold,
                    }
                )
            )
    return 1 if failed else 0


# -- roi-preview -----------------------------------------------------------------------------
PREVIEW_SUFFIXES = (".png", ".jpg", ".jpeg")


def legend_text(threshold: float) -> str:
    from edge.app.overlay import legend_lines

    return "legend: " + "; ".join(legend_lines(threshold))


def draw_preview(
    img: np.ndarray, cfg: Config, scores: dict[str, float], threshold: float
) -> np.ndarray:
    from edge.app.compose import build_rois
    from edge.app.overlay import draw_rois, draw_vanishing_point

    v = cfg.vehicles
    if v is not None and v.view == "rear":
        img = draw_vanishing_point(img, v.axis_x, v.horizon_y)
    return draw_rois(img, build_rois(cfg), scores, threshold)


def cmd_roi_preview(args: argparse.Namespace) -> int:
    import cv2

    from edge.app.compose import build_classifier, build_rois, build_source

    out: Path = args.out
    if out.is_dir():
        raise UsageError(
            f"--out {out} is a folder; give an image file name, e.g. {out / 'roi.png'}"
        )
    if out.suffix.lower() not in PREVIEW_SUFFIXES:
        raise UsageError(
            f"--out {out}: write a {', '.join(PREVIEW_SUFFIXES)} image "
            f"(not {out.suffix or 'a name without an extension'})"
        )
    if out.parent.exists() and not out.parent.is_dir():
        raise UsageError(f"--out {out}: {out.parent} is a file, not a folder")
    cfg = load_config(args.config)
    src = build_source(cfg, speed=0.0)
    src.open()
    try:
        frame = None
        for _ in range(args.skip + 1):
            frame = src.read() or frame
    finally:
        src.close()
    if frame is None:
        raise CameraError(f"{src.name} delivered no frame")
    scores: dict[str, float] = {}
    threshold = 0.5
    try:
        with quiet_tflite():
            clf = build_classifier(cfg)
        with clf:
            threshold = clf.threshold
            for r in build_rois(cfg):
                img = frame.inference_image
                scores[r.id] = clf.score(r.crop(img), r.mask(img))
    except PhonewatchError as e:
        print(f"warning: no scores drawn: {e}", file=sys.stderr)
    img = draw_preview(frame.image, cfg, scores, threshold)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        ok = cv2.imwrite(str(out), img)
    except cv2.error as e:
        raise UsageError(f"cannot write {out}: {str(e).strip().splitlines()[-1]}") from None
    if not ok:
        raise UsageError(f"cannot write {out}")
    for rid, s in scores.items():
        print(f"{rid}: score {s:.3f}")
    print(f"wrote {out} ({frame.size[0]}x{frame.size[1]}); {legend_text(threshold)}")
    v = cfg.vehicles
    if v is not None and v.view == "rear":
        print(
            f"rear view: the yellow lines are straight ahead (axis_x {v.axis_x:.2f}) and the "
            f"horizon (horizon_y {v.horizon_y:.2f}); they should cross where the road vanishes, "
            "else set [vehicles] axis_x and horizon_y to that point"
        )
    _write_crops(cfg, frame.image, out)
    return 0


def _write_crops(cfg: Config, image: np.ndarray, out: Path) -> None:
    """Each crop as the classifier sees it (turned by ``rotate_deg``) beside ``out``: the
    driver should stand upright in it; if not, change the ROI's ``rotate_deg``."""
    import cv2

    from edge.app.compose import build_rois

    for r in build_rois(cfg):
        crop_out = out.with_name(f"{out.stem}-{r.id}{out.suffix}")
        if cv2.imwrite(str(crop_out), np.ascontiguousarray(r.crop(image))):
            turned = f", turned {r.rotate_deg:g} degrees" if r.rotate_deg else ""
            print(f"wrote {crop_out} (region {r.id} as the classifier sees it{turned})")


# -- demo ------------------------------------------------------------------------------------


def make_demo_clip(out: Path, seed: int) -> tuple[Path, Path]:
    video, truth = out / "junction.mp4", out / "junction.truth.json"
    if video.is_file() and truth.is_file():
        return video, truth
    out.mkdir(parents=True, exist_ok=True)
    print(f"rendering the demo clip into {out} ...", flush=True)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    subprocess.run(
        [sys.executable, "-m", "models.synth.demo_clip", "--out", str(out), "--seed", str(seed)],
        check=True,
        cwd=REPO_ROOT,
        env=env,
    )
    return video, truth


def demo_config(
    out: Path,
    video: Path,
    truth: dict[str, Any],
    *,
    realtime: bool,
    sink: dict[str, Any] | None = None,
    model: Path = DEMO_MODEL,
) -> Config:
    from edge.app.config import parse_config

    data: dict[str, Any] = {
        "unit": {"id": "demo-junction", "mode": "junction", "data_dir": str(out / "unit")},
        "camera": {"type": "replay", "path": str(video), "speed": 1.0 if realtime else 0.0},
        "rois": [
            {"id": rid, "rect": list(box), "margin": 0.1}
            for rid, box in sorted(truth["rois"].items())
        ],
        "model": {"path": str(model), "accelerator": "auto"},
        # Frames of a file are on the clip's own time however fast they are read, so the
        # cooldown is real: 5 s, as the clip's cars queue about 7 s apart in one lane.
        "decider": {"window": 8, "min_frames": 5, "cooldown_s": DEMO_COOLDOWN_S},
        # a short clip around each hit, so the dashboard has one to play
        "evidence": {"quota_mb": 200, "clip_before_s": 1.5, "clip_after_s": 1.5},
        "stats": {"log_interval_s": 10},
    }
    if sink is not None:
        data["sink"] = sink
    if DEMO_GPS.is_file():  # a position on the dashboard's map, as a unit with a receiver has
        data["gps"] = {"source": f"replay:{DEMO_GPS}", "replay_loop": True}
    return parse_config(data, source="demo config")


def cmd_demo(args: argparse.Namespace) -> int:
    """SIGTERM stops it as Ctrl-C does: the ``with`` blocks unwind and stop the local Mosquitto
    and the control room, whichever stage it is in."""
    with interrupt_on_signals():
        return _demo(args)


def fresh_demo_folders(out: Path, *, serve: bool) -> list[str]:
    """What a demo run wipes first: the unit always; the control room (its database, so the
    reviews) only without ``--serve``. With ``--serve`` the control room and the unit's key pair
    (which the control room knows) are kept, so reviews survive from one run to the next; a new
    outbox numbers its alerts from the clock, after the ones already stored."""
    keep_keys = serve and (out / "unit" / "keys").is_dir()
    kept = out / "unit-keys.kept"
    if keep_keys:
        shutil.rmtree(kept, ignore_errors=True)
        (out / "unit" / "keys").rename(kept)
    wiped = ["unit"] if serve else ["unit", "controlroom"]
    for name in wiped:
        shutil.rmtree(out / name, ignore_errors=True)
    if keep_keys:
        (out / "unit").mkdir(parents=True, exist_ok=True)
        kept.rename(out / "unit" / "keys")
    return wiped


def _vehicle_demo_inputs(out: Path, seed: int) -> tuple[Path, Path, Path] | None:
    """The moving-car clip, its truth and the vehicle detector; None (and why) without one."""
    from edge.app import demo_vehicles

    detector, where = demo_vehicles.find_detector()
    if detector is None:
        print(f"demo: the vehicle part is skipped: the vehicle detector {where}")
        return None
    video, truth = demo_vehicles.make_clip(out / "vehicles", seed)
    print(f"demo: vehicle detector {where}")
    return video, truth, detector


def _run_vehicle_demo(
    out: Path, inputs: tuple[Path, Path, Path], model: Path, broker: Any, room: Any
) -> None:
    """The second demo unit: the vehicle stage, scored per vehicle pass."""
    from edge.app import demo_vehicles
    from edge.common.signing import signing_key_name

    video, truth, detector = inputs
    data = out / "unit" / "vehicles"
    if broker is not None:
        sink: dict[str, Any] = {
            **broker.sink_settings(demo_vehicles.UNIT_ID),
            "signing_key": str(out / "unit" / "keys" / signing_key_name(demo_vehicles.UNIT_ID)),
            "receipt_timeout_s": 5.0,
        }
    else:
        sink = {"type": "jsonl", "path": str(data / "alerts.jsonl")}
    print(
        "demo: part 2, the vehicle stage: a side-on junction of moving cars (synthetic), "
        f"unit {demo_vehicles.UNIT_ID}, alerts one per vehicle pass"
    )
    before = room.stats().get("stored", 0) if room is not None else 0
    result = run_unit(
        demo_vehicles.config(data, video, detector, model, sink), offline=True, truth=truth
    )
    if room is not None:
        n = len(result["detections"])
        deadline = time.monotonic() + 15
        while room.stats().get("stored", 0) - before < n and time.monotonic() < deadline:
            time.sleep(0.1)
        print(
            f"dashboard database: {room.stats().get('stored', 0) - before} vehicle alert(s) "
            "verified and stored, each with its vehicle's box"
        )


def _demo(args: argparse.Namespace) -> int:
    from edge.app.demo import load_truth
    from edge.app.local_broker import AlertWatcher, LocalBroker, find_mosquitto
    from edge.common.signing import public_key_name, signing_key_name, write_key_pair

    out: Path = args.out
    video, truth_path = make_demo_clip(out, args.seed)
    truth = load_truth(truth_path)
    unit_id = "demo-junction"
    fresh_demo_folders(out, serve=args.serve)
    print(
        f"demo: {video.name} ({truth.get('frames')} frames at {truth.get('fps')} fps), "
        f"model {args.model}, ROIs {', '.join(sorted(truth['rois']))}"
    )
    vehicles = None if args.no_vehicles else _vehicle_demo_inputs(out, args.seed)
    if find_mosquitto() is None:
        print(
            "demo: mosquitto is not installed (make bootstrap installs it); alerts go to "
            f"{out / 'unit' / 'alerts.jsonl'} instead"
        )
        cfg = demo_config(out, video, truth, realtime=args.realtime, model=args.model)
        run_unit(cfg, offline=not args.realtime, truth=truth_path)
        if vehicles is not None:
            _run_vehicle_demo(out, vehicles, args.model, None, None)
        return 0
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(LocalBroker())
        watcher = stack.enter_context(AlertWatcher(broker, client_id="demo-watcher"))
        keys = out / "unit" / "keys"
        from edge.app import demo_vehicles

        for uid in (unit_id, demo_vehicles.UNIT_ID):
            if not (keys / signing_key_name(uid)).is_file():
                write_key_pair(uid, keys)  # the control room must know the key before any alert
        room = None
        if importlib.util.find_spec("fastapi") is not None:
            from controlroom.demo import DEMO_PASSWORD, DEMO_USER, demo_control_room

            room = demo_control_room(
                out / "controlroom",
                mqtt_host=broker.host,
                mqtt_port=broker.port,
                unit_keys={
                    uid: keys / public_key_name(uid) for uid in (unit_id, demo_vehicles.UNIT_ID)
                },
            )
            stack.callback(room.close)
            print(
                f"demo: control room dashboard at {room.url} "
                f"(log in as {DEMO_USER} / {DEMO_PASSWORD})"
                + ("" if args.serve else "; it stops when the demo ends (--serve keeps it)")
            )
        sink = {
            **broker.sink_settings(unit_id),
            "signing_key": str(keys / signing_key_name(unit_id)),
            # the control room is on this machine: a part it missed goes again in seconds
            "receipt_timeout_s": 5.0,
        }
        cfg = demo_config(out, video, truth, realtime=args.realtime, sink=sink, model=args.model)
        print(
            f"demo: alerts go through a local Mosquitto on {broker.host}:{broker.port}; "
            f"watch them live with:\n  mosquitto_sub -h {broker.host} -p {broker.port} "
            f"-t '{broker.root}/+/alert' -v"
        )
        before = room.stats().get("stored", 0) if room is not None else 0
        result = run_unit(cfg, offline=not args.realtime, truth=truth_path)
        n = len(result["detections"])
        print(watcher.summary(pub_key=keys / public_key_name(unit_id), expected=n, wait_s=15))
        if room is not None:
            deadline = time.monotonic() + 15
            while room.stats().get("stored", 0) - before < n and time.monotonic() < deadline:
                time.sleep(0.1)
            st = room.stats()
            print(
                f"dashboard database: {st.get('stored', 0) - before} alert(s) verified and "
                f"stored, {st.get('evidence_stored', 0)} evidence image(s), "
                f"{st.get('rejected_total', 0)} rejected"
            )
        if vehicles is not None:
            _run_vehicle_demo(out, vehicles, args.model, broker, room)
        if room is not None:
            if args.serve:
                with contextlib.suppress(KeyboardInterrupt):  # from the first line on
                    print(
                        f"demo: review them at {room.url} (log in as {DEMO_USER} / "
                        f"{DEMO_PASSWORD}); reviews are kept in {out / 'controlroom'} for "
                        "the next 'demo --serve'. Ctrl-C stops it.",
                        flush=True,
                    )
                    room.wait()
                print("demo: control room stopped", flush=True)
            else:
                print(
                    "demo: the dashboard stopped with the demo; to review the alerts, run "
                    f"'{Path(sys.executable).parent / 'phonewatch'} demo --serve"
                    f"{'' if out == DEFAULT_DEMO_OUT else f' --out {out}'}' (it keeps the "
                    "dashboard up until Ctrl-C, and its reviews from one run to the next)"
                )
    return 0
