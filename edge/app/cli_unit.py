"""Unit subcommands: run, check, classify, roi-preview, demo."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.app.config import Config, load_config
from edge.core.errors import CameraError, PhonewatchError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_MODEL = REPO_ROOT / "models" / "phone_in_hand" / "phone_in_hand.tflite"


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "run", help="run the unit: camera -> classifier -> alerts",
        description="Run the unit until the camera ends (a file), Ctrl-C, SIGTERM or an "
        "ignition shutdown. Stats are logged periodically and printed as a table on exit.",
    )
    p.add_argument("--config", "-c", required=True, type=Path, help="unit config (TOML)")
    p.add_argument("--offline", action="store_true",
                   help="process a file source frame by frame as fast as possible (no drops), "
                   "with a progress bar")
    p.add_argument("--max-seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--truth", type=Path, default=None,
                   help="ground-truth JSON of the clip: score hits found / missed / false")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "check", help="check a unit's config, model, camera, disk, GPS and broker",
        description="One line per check, OK or FAIL with the reason. Exit status 1 on any FAIL.",
    )
    p.add_argument("--config", "-c", required=True, type=Path, help="unit config (TOML)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "classify", help="score images with a model (one JSON line per image)",
        description="Prints {path, score, label, is_phone} per image: score is P(phone) from the "
        "sidecar's positive labels, label the model's top label.",
    )
    p.add_argument("--model", "-m", required=True, type=Path, help=".tflite model")
    p.add_argument("--sidecar", type=Path, default=None, help="sidecar JSON if not <model>.json")
    p.add_argument("--accelerator", choices=["auto", "cpu", "edgetpu"], default="cpu")
    p.add_argument("images", nargs="+", type=Path, help="image files")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser(
        "roi-preview", help="draw the ROIs and current scores on a camera frame",
        description="Grabs a frame from the configured camera, draws each driver-window region "
        "(and the margin crop) with its score, and writes a PNG so an installer can check "
        "the aim by eye.",
    )
    p.add_argument("--config", "-c", required=True, type=Path, help="unit config (TOML)")
    p.add_argument("--out", "-o", required=True, type=Path, help="PNG to write")
    p.add_argument("--skip", type=int, default=0, help="frames to skip first (file sources)")
    p.set_defaults(func=cmd_roi_preview)

    p = sub.add_parser(
        "demo", help="render the demo clip and run the unit on it end to end",
        description="Makes the synthetic junction clip (if missing), starts a local Mosquitto "
        "when the MQTT uplink is available, runs the unit on the clip with the default model and "
        "prints a summary: frames, fps, hits, and hits found / missed / false.",
    )
    p.add_argument("--out", type=Path, default=REPO_ROOT / "var" / "demo",
                   help="working folder (clip, evidence, alerts)")
    p.add_argument("--seed", type=int, default=7, help="seed of the demo clip")
    p.add_argument("--realtime", action="store_true",
                   help="replay at the clip's frame rate (drops possible) instead of offline")
    p.add_argument("--model", type=Path, default=DEMO_MODEL,
                   help="model to run (default: the shipped phone-in-hand model)")
    p.add_argument("--serve", action="store_true",
                   help="keep the control-room dashboard running afterwards (Ctrl-C stops it)")
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
                sys.stderr.write(f"\r[{bar:<30}] {n}/{self.total} frames  {snap['fps']:.1f} fps"
                                 f"  hits {snap['hits']} ")
                sys.stderr.flush()
            elif decile != self._last_decile:
                self._last_decile = decile
                sys.stderr.write(f"{decile * 10:3d}% {n}/{self.total} frames, "
                                 f"{snap['fps']:.1f} fps, hits {snap['hits']}\n")

    def done(self) -> None:
        if self.tty and self.total:
            sys.stderr.write("\n")


def _install_signal_stop(stop: threading.Event) -> None:
    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_unit(cfg: Config, *, offline: bool, max_s: float | None = None,
             truth: Path | None = None, extra_sink: Any | None = None,
             config_path: Path | None = None) -> dict[str, Any]:
    """Run the unit; ``result["exit_code"]`` is the status to exit with (EXIT_RELOAD after a
    valid ``reload`` command, which re-reads ``config_path``)."""
    from edge.adapters.camera import ReplaySource
    from edge.adapters.sinks import MemorySink
    from edge.app.compose import Unit
    from edge.app.demo import load_truth, score_hits

    memory = MemorySink()
    sinks: Any = memory
    if extra_sink is not None:
        from edge.adapters.sinks import TeeSink

        sinks = TeeSink(memory, extra_sink)
    truth_data = load_truth(truth) if truth is not None else None
    stop = threading.Event()
    _install_signal_stop(stop)
    with Unit(cfg, lossless=offline, speed=0.0 if offline else None, extra_sink=sinks,
              config_path=config_path) as unit:
        assert unit.pipeline is not None
        total = None
        src = unit.pipeline.source
        if isinstance(src, ReplaySource):
            total = src.frame_count
        progress = Progress(total) if offline else None
        snap = unit.run(stop=stop, max_s=max_s, progress=progress)
        if progress is not None:
            progress.done()
        print(unit.pipeline.summary_table())
        ignition_off = unit.shutdown_requested.is_set()
    if ignition_off:  # everything above is closed and flushed: now power off
        unit.shutdown_if_requested()
    result: dict[str, Any] = {"stats": snap, "detections": memory.detections,
                              "exit_code": unit.exit_code}
    for d in memory.detections:
        print(f"  hit {d.alert_id}: roi {d.roi_id} frame {d.frame_index} score {d.score:.3f} "
              f"({d.frames_over}/{d.window} frames) -> {d.evidence.frame_path}")
    if truth_data is not None:
        fps = float(truth_data.get("fps") or 25.0)
        sc = score_hits([(d.roi_id, d.frame_index) for d in memory.detections], truth_data,
                        slack_frames=int(fps))
        result["score"] = sc
        print(f"ground truth: {sc.phone_events} drivers with a phone -> found {sc.found}, "
              f"missed {sc.missed}; false alerts {sc.false}; repeats {sc.duplicate} "
              f"(recall {sc.recall:.2f}, precision {sc.precision:.2f})")
    return result


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    result = run_unit(cfg, offline=args.offline, max_s=args.max_seconds, truth=args.truth,
                      config_path=args.config)
    if result["exit_code"]:
        print(f"phonewatch: stopped to restart on a reloaded {args.config} "
              f"(exit status {result['exit_code']})", file=sys.stderr)
    return int(result["exit_code"])


# -- check -----------------------------------------------------------------------------------
def run_checks(cfg: Config) -> list[tuple[str, bool, str]]:
    from edge.app.compose import (
        Paths,
        build_classifier,
        build_rois,
        build_source,
        disk_free_bytes,
    )

    results: list[tuple[str, bool, str]] = []

    def check(name: str, fn: Any) -> Any:
        try:
            ok, detail, value = fn()
        except PhonewatchError as e:
            ok, detail, value = False, str(e), None
        except Exception as e:  # a check must report, never crash the report
            ok, detail, value = False, f"{type(e).__name__}: {e}", None
        results.append((name, ok, detail))
        return value

    def model() -> tuple[bool, str, Any]:
        clf = build_classifier(cfg)
        return True, (f"{clf.name} {clf.version} sha256 {clf.sha256[:12]} "
                      f"({clf.spec.input.width}x{clf.spec.input.height} {clf.spec.input.colour}, "
                      f"threshold {clf.threshold:.2f})"), clf

    clf = check("model", model)

    def accel() -> tuple[bool, str, Any]:
        if clf is None:
            return False, "no model loaded", None
        want = cfg.model.accelerator
        if clf.accelerator == "edgetpu":
            return True, "Edge TPU (Coral)", None
        if want == "auto":
            return True, "CPU (auto: no Edge TPU found)", None
        return True, "CPU", None

    check("accelerator", accel)

    def camera() -> tuple[bool, str, Any]:
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

    frame = check("camera", camera)

    def rois() -> tuple[bool, str, Any]:
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

    check("rois", rois)

    def disk() -> tuple[bool, str, Any]:
        d = Paths.of(cfg).evidence_dir
        d.mkdir(parents=True, exist_ok=True)
        probe = d / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
        free = disk_free_bytes(d)
        quota = cfg.evidence.quota_mb * 1e6
        ok = free >= min(quota, 200e6)
        return ok, (f"{d} writable, {free / 1e9:.1f} GB free, quota {quota / 1e9:.2f} GB"
                    + ("" if ok else " (less free space than needed)")), None

    check("disk", disk)

    if cfg.gps is not None:
        def gps() -> tuple[bool, str, Any]:
            from edge.adapters.gps import check_gps

            ok, detail = check_gps(cfg.gps, timeout_s=5.0)  # type: ignore[arg-type]
            return ok, detail, None

        check("gps", gps)
    else:
        results.append(("gps", True, "not configured (alerts carry no position)"))

    if cfg.sink.type == "mqtt":
        def broker() -> tuple[bool, str, Any]:
            from edge.adapters.mqtt import check_broker

            ok, detail = check_broker(cfg.sink, unit_id=cfg.unit.id, timeout_s=5.0)
            return ok, detail, None

        check("broker", broker)
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
    with LiteRTClassifier.open(args.model, sidecar=args.sidecar,
                               accelerator=args.accelerator) as clf:
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
            print(json.dumps({"path": str(path), "score": round(score, 4),
                              "label": clf.spec.labels[top],
                              "is_phone": score >= clf.threshold}))
    return 1 if failed else 0


# -- roi-preview -----------------------------------------------------------------------------
def draw_preview(img: np.ndarray, cfg: Config, scores: dict[str, float],
                 threshold: float) -> np.ndarray:
    from edge.app.compose import build_rois
    from edge.app.overlay import draw_rois

    return draw_rois(img, build_rois(cfg), scores, threshold)


def cmd_roi_preview(args: argparse.Namespace) -> int:
    import cv2

    from edge.app.compose import build_classifier, build_rois, build_source

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
        with build_classifier(cfg) as clf:
            threshold = clf.threshold
            for r in build_rois(cfg):
                img = frame.inference_image
                scores[r.id] = clf.score(r.crop(img), r.mask(img))
    except PhonewatchError as e:
        print(f"warning: no scores drawn: {e}", file=sys.stderr)
    out = draw_preview(frame.image, cfg, scores, threshold)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), out):
        raise CameraError(f"cannot write {args.out}")
    for rid, s in scores.items():
        print(f"{rid}: score {s:.3f}")
    print(f"wrote {args.out} ({frame.size[0]}x{frame.size[1]})")
    return 0


# -- demo ------------------------------------------------------------------------------------


def make_demo_clip(out: Path, seed: int) -> tuple[Path, Path]:
    video, truth = out / "junction.mp4", out / "junction.truth.json"
    if video.is_file() and truth.is_file():
        return video, truth
    out.mkdir(parents=True, exist_ok=True)
    print(f"rendering the demo clip into {out} ...", flush=True)
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    subprocess.run([sys.executable, "-m", "models.synth.demo_clip", "--out", str(out),
                    "--seed", str(seed)], check=True, cwd=REPO_ROOT, env=env)
    return video, truth


def demo_config(out: Path, video: Path, truth: dict[str, Any], *, realtime: bool,
                sink: dict[str, Any] | None = None, model: Path = DEMO_MODEL) -> Config:
    from edge.app.config import parse_config

    data: dict[str, Any] = {
        "unit": {"id": "demo-junction", "mode": "junction", "data_dir": str(out / "unit")},
        "camera": {"type": "replay", "path": str(video), "speed": 1.0 if realtime else 0.0},
        "rois": [{"id": rid, "rect": list(box), "margin": 0.1}
                 for rid, box in sorted(truth["rois"].items())],
        "model": {"path": str(model), "accelerator": "auto"},
        "decider": {"window": 8, "min_frames": 5, "cooldown_s": 0.0},
        "evidence": {"quota_mb": 200},
        "stats": {"log_interval_s": 10},
    }
    if sink is not None:
        data["sink"] = sink
    return parse_config(data, source="demo config")


def cmd_demo(args: argparse.Namespace) -> int:
    import shutil

    from edge.app.demo import load_truth
    from edge.app.local_broker import AlertWatcher, LocalBroker, find_mosquitto
    from edge.common.signing import write_key_pair

    out: Path = args.out
    video, truth_path = make_demo_clip(out, args.seed)
    truth = load_truth(truth_path)
    unit_id = "demo-junction"
    for fresh in ("unit", "controlroom"):  # each demo starts from a fresh unit and control room
        shutil.rmtree(out / fresh, ignore_errors=True)
    print(f"demo: {video.name} ({truth.get('frames')} frames at {truth.get('fps')} fps), "
          f"model {args.model}, ROIs {', '.join(sorted(truth['rois']))}")
    if find_mosquitto() is None:
        print("demo: mosquitto is not installed (make bootstrap installs it); alerts go to "
              f"{out / 'unit' / 'alerts.jsonl'} instead")
        cfg = demo_config(out, video, truth, realtime=args.realtime, model=args.model)
        run_unit(cfg, offline=not args.realtime, truth=truth_path)
        return 0
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(LocalBroker())
        watcher = stack.enter_context(AlertWatcher(broker, client_id="demo-watcher"))
        keys = out / "unit" / "keys"
        write_key_pair(unit_id, keys)  # the control room must know the key before any alert
        room = None
        if importlib.util.find_spec("fastapi") is not None:
            from controlroom.demo import DEMO_PASSWORD, DEMO_USER, demo_control_room

            room = demo_control_room(out / "controlroom", mqtt_host=broker.host,
                                     mqtt_port=broker.port,
                                     unit_keys={unit_id: keys / f"{unit_id}.pub"})
            stack.callback(room.close)
            print(f"demo: control room dashboard at {room.url} "
                  f"(log in as {DEMO_USER} / {DEMO_PASSWORD})")
        sink = {**broker.sink_settings(unit_id), "signing_key": str(keys / f"{unit_id}.key")}
        cfg = demo_config(out, video, truth, realtime=args.realtime, sink=sink,
                          model=args.model)
        print(f"demo: alerts go through a local Mosquitto on {broker.host}:{broker.port}; "
              f"watch them live with:\n  mosquitto_sub -h {broker.host} -p {broker.port} "
              f"-t '{broker.root}/+/alert' -v")
        result = run_unit(cfg, offline=not args.realtime, truth=truth_path)
        n = len(result["detections"])
        print(watcher.summary(pub_key=keys / f"{unit_id}.pub", expected=n, wait_s=15))
        if room is not None:
            deadline = time.monotonic() + 15
            while room.stats().get("stored", 0) < n and time.monotonic() < deadline:
                time.sleep(0.1)
            st = room.stats()
            print(f"dashboard database: {st.get('stored', 0)} alert(s) verified and stored, "
                  f"{st.get('evidence_stored', 0)} evidence image(s), "
                  f"{st.get('rejected_total', 0)} rejected")
            if args.serve:
                print(f"demo: review them at {room.url} — Ctrl-C to stop")
                with contextlib.suppress(KeyboardInterrupt):
                    room.wait()
    return 0
