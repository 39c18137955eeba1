"""Several cameras, one inference stage: how many 1080p 30 fps cameras does this machine keep?

N synthetic cameras deliver raw 1080p frames from memory at 30 fps of wall-clock time (as
picamera2 hands over its buffers: no decode), each with the demo junction's 2 ROIs, all
sharing one :class:`edge.app.hub.InferenceHub` (the unit's ``[[cameras]]`` set-up). A camera
whose capture thread falls a frame interval behind misses the frame (a real sensor's buffer
would be overwritten): that counts as dropped, with the latest-frame slot's drops.

Prints, per N tried: frames in / scored / dropped, CPU share per camera (process CPU time per
camera, % of one core), frame-to-decision latency p50 / p99 (from the frame's arrival to its
ROI scores being decided); for one camera, the pipeline / raw interpreter ratio (unpaced, same
frames, median of 3). The search doubles N while nothing drops, then halves the gap. Its last
line is exactly ``cameras at 30 fps with 2 ROIs each, none dropped: N``.

Usage:  .venv/bin/python bench/cameras.py [--seconds 30] [--max 24] [--memory-s 600 --memory-n 8]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from _common import REPO, machine, read_frames, rss_mb
from pipeline import DEFAULT_MODEL, MemorySource, make_1080p_clip

from edge.adapters.classifier import LiteRTClassifier
from edge.adapters.evidence import EvidenceStore
from edge.adapters.sinks import MemorySink
from edge.app.hub import CameraGroup, InferenceHub
from edge.app.pipeline import Pipeline
from edge.app.stats import Series, grid, table
from edge.core.decider import DeciderParams
from edge.core.frame import Frame
from edge.core.roi import Roi

FPS = 30.0


class PacedMemoryCamera:
    """Raw frames from memory at ``fps`` of wall-clock time, like picamera2's buffers: a
    frame is due every ``1/fps`` s; one read more than an interval late has lost the frames
    in between (``missed``), as a sensor overwrites a buffer nobody took."""

    is_live = True

    def __init__(self, images: list[np.ndarray], name: str, *, fps: float = FPS) -> None:
        self.images = images
        self.name = name
        self.fps = fps
        self.missed = 0
        self._i = 0
        self._t0 = 0.0

    def open(self) -> None:
        self._t0 = time.monotonic()
        self._i = 0

    def read(self) -> Frame | None:
        due = self._t0 + self._i / self.fps
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        else:
            late = int((now - due) * self.fps)  # whole intervals behind: those frames are gone
            if late:
                self.missed += late
                self._i += late
                due = self._t0 + self._i / self.fps
        img = self.images[self._i % len(self.images)]
        f = Frame(self._i, due, time.time(), img, source=self.name)
        self._i += 1
        return f

    def close(self) -> None:
        pass


def params(clf: LiteRTClassifier) -> DeciderParams:
    return DeciderParams(
        window=8,
        min_frames=5,
        score_on=clf.threshold,
        score_off=clf.threshold * 0.6,
        cooldown_s=10,
    )


def trial(
    n: int,
    images: list[np.ndarray],
    rois: list[Roi],
    clf: LiteRTClassifier,
    seconds: float,
    *,
    rss_every_s: float = 0.0,
) -> dict[str, Any]:
    """N paced cameras for ``seconds``: counts, CPU share, latency (and RSS samples)."""
    hub = InferenceHub(clf)
    latency = [Series(maxlen=1_000_000)]  # replaced after the warm-up
    cams: list[PacedMemoryCamera] = []
    work = Path(tempfile.mkdtemp(prefix="pw-bench-cameras-"))
    evidence = EvidenceStore(work / "evidence", quota_bytes=500_000_000)

    def on_frame(frame: Frame, scores: dict[str, float], regions: Mapping[str, Roi]) -> None:
        latency[0].add((time.monotonic() - frame.t_mono_s) * 1e3)

    for i in range(n):
        cam = PacedMemoryCamera(images, f"cam{i}")
        cams.append(cam)
        Pipeline(
            source=cam,
            classifier=clf,
            rois=rois,
            decider=params(clf),
            evidence=evidence,
            sink=MemorySink(),
            unit_id="bench",
            on_frame=on_frame,
            camera_id=f"cam{i}",
            hub=hub,
        )
    group = CameraGroup(hub)
    warm_s = 2.0  # threads start and the first rounds settle; not counted
    rss: list[tuple[float, float]] = []
    group.start()
    time.sleep(warm_s)
    base = {
        p.camera_id: (p.stats.captured, p.stats.processed, p.slot.dropped) for p in hub.pipelines
    }
    missed0 = [c.missed for c in cams]
    latency[0] = Series(maxlen=1_000_000)
    cpu0, t0 = _cpu_s(), time.monotonic()
    while (elapsed := time.monotonic() - t0) < seconds:
        time.sleep(min(rss_every_s or seconds, seconds - elapsed))
        if rss_every_s:
            rss.append((time.monotonic() - t0, rss_mb()))
    cpu, wall = _cpu_s() - cpu0, time.monotonic() - t0
    snaps = {
        p.camera_id: (p.stats.captured, p.stats.processed, p.slot.dropped) for p in hub.pipelines
    }
    group.stop()
    captured = sum(snaps[k][0] - base[k][0] for k in snaps)
    processed = sum(snaps[k][1] - base[k][1] for k in snaps)
    slot_drops = sum(snaps[k][2] - base[k][2] for k in snaps)
    missed = sum(c.missed - m for c, m in zip(cams, missed0, strict=True))
    return {
        "n": n,
        "captured": captured,
        "processed": processed,
        "dropped": slot_drops + missed,
        "cpu_per_camera_pct": 100.0 * cpu / wall / n,
        "cpu_total_pct": 100.0 * cpu / wall,
        "lat_p50": latency[0].percentile(50) or float("nan"),
        "lat_p99": latency[0].percentile(99) or float("nan"),
        "crops_per_round": hub.batch_crops.percentile(50),
        "rss": rss,
    }


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one_camera_ratio(
    images: list[np.ndarray], rois: list[Roi], clf: LiteRTClassifier
) -> tuple[float, float, float, float]:
    """Unpaced, same frames: (raw fps, pipeline fps, raw invoke ms p50, pipeline invoke p50)."""
    tensors = [clf.preprocess(r.crop(img), r.mask(img)) for img in images for r in rois]
    for t in tensors[:10]:
        clf.invoke(t)
    raw_fps, raw_invoke = [], Series()
    for _ in range(3):
        t0 = time.perf_counter()
        for t in tensors:
            t1 = time.perf_counter()
            clf.invoke(t)
            raw_invoke.add((time.perf_counter() - t1) * 1e3)
        raw_fps.append(len(images) / (time.perf_counter() - t0))
    pipe_fps, pipe_invoke = [], []
    for _ in range(3):
        hub = InferenceHub(clf)
        p = Pipeline(
            source=MemorySource(images, repeat=2),
            classifier=clf,
            rois=rois,
            decider=params(clf),
            evidence=EvidenceStore(Path(tempfile.mkdtemp()) / "ev", quota_bytes=200_000_000),
            sink=MemorySink(),
            unit_id="bench",
            lossless=True,
            camera_id="cam0",
            hub=hub,
        )
        group = CameraGroup(hub)
        group.open_sources()
        group.start()
        group.wait()
        s = p.snapshot()
        pipe_fps.append(s["frames_processed"] / s["elapsed_s"])
        pipe_invoke.append(hub.invoke_ms.percentile(50) or 0.0)
    return (
        statistics.median(raw_fps),
        statistics.median(pipe_fps),
        (raw_invoke.percentile(50) or 0.0) * len(rois),  # one frame's invokes
        statistics.median(pipe_invoke),
    )


def search(try_n: Any, start: int, most: int) -> int:
    """Largest N in [0, most] for which ``try_n(N)`` is True (assumed monotone)."""
    good, bad = 0, most + 1
    n = start
    while n <= most and try_n(n):
        good, n = n, n * 2
    bad = min(bad, n) if n <= most else most + 1
    while bad - good > 1:
        mid = (good + bad) // 2
        if try_n(mid):
            good = mid
        else:
            bad = mid
    return good


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--seconds", type=float, default=30.0, help="each trial, after 2 s warm-up")
    ap.add_argument("--start", type=int, default=2, help="first N tried (then doubled)")
    ap.add_argument("--max", type=int, default=24, help="largest N tried")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=60, help="distinct frames held in memory")
    ap.add_argument("--memory-s", type=float, default=0.0, help="then RSS over this long")
    ap.add_argument("--memory-n", type=int, default=8)
    ap.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="sys.setswitchinterval for the run (s; Python's default is 0.005)",
    )
    args = ap.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    work = REPO / "var" / "bench"
    work.mkdir(parents=True, exist_ok=True)
    clip, rois = make_1080p_clip(work, max(10.0, args.frames / FPS))
    images = read_frames(clip, args.frames)
    clf = LiteRTClassifier.open(args.model, accelerator="cpu", threads=args.threads)

    raw, pipe, raw_inv, pipe_inv = one_camera_ratio(images, rois, clf)
    results: dict[int, dict[str, Any]] = {}

    def try_n(n: int) -> bool:
        r = trial(n, images, rois, clf, args.seconds)
        results[n] = r
        print(
            f"  N={n:2d}: {r['captured']} in, {r['processed']} scored, {r['dropped']} dropped, "
            f"latency p99 {r['lat_p99']:.1f} ms",
            file=sys.stderr,
            flush=True,
        )
        return bool(r["dropped"] == 0)

    best = search(try_n, max(1, args.start), args.max)
    rows: list[tuple[str, ...]] = [
        (
            str(n),
            str(r["captured"]),
            str(r["processed"]),
            str(r["dropped"]),
            f"{r['cpu_per_camera_pct']:.1f}",
            f"{r['cpu_total_pct']:.0f}",
            f"{r['lat_p50']:.1f} / {r['lat_p99']:.1f}",
            f"{r['crops_per_round'] or 0:.0f}",
        )
        for n, r in sorted(results.items())
    ]
    interval = 1000.0 / FPS
    head = [
        ("machine", machine()),
        ("model", f"{clf.name} {clf.version}, {args.threads} interpreter threads"),
        ("cameras", f"1920x1080 @ {FPS:.0f} fps from memory, {len(rois)} ROIs each"),
        ("trial", f"{args.seconds:.0f} s after 2 s warm-up"),
        ("GIL switch interval", f"{sys.getswitchinterval() * 1e3:.2f} ms"),
        ("one camera: raw interpreter fps (unpaced)", f"{raw:.1f}"),
        ("one camera: pipeline fps (hub, unpaced)", f"{pipe:.1f}"),
        ("one camera: pipeline / raw (target >= 0.95)", f"{pipe / raw:.3f}"),
        (
            "one camera: invoke ms per frame, pipeline vs raw",
            f"{pipe_inv:.2f} vs {raw_inv:.2f} ({pipe_inv / raw_inv:.2f}x, target <= 1.2x)",
        ),
        ("frame interval, ms", f"{interval:.1f} (latency target p99 <= {2 * interval:.1f} at N=8)"),
    ]
    text = (
        table(head, title="phonewatch cameras benchmark")
        + "\n"
        + grid(
            rows,
            header=(
                "N",
                "frames in",
                "scored",
                "dropped",
                "CPU %/camera",
                "CPU % total",
                "latency ms p50 / p99",
                "crops/round",
            ),
        )
    )
    if args.memory_s > 0:
        r = trial(args.memory_n, images, rois, clf, args.memory_s, rss_every_s=args.memory_s / 20)
        trace = " ".join(f"{m:.0f}" for _, m in r["rss"][3::4])
        first = max(m for t, m in r["rss"] if t < args.memory_s / 2)
        second = max(m for t, m in r["rss"] if t >= args.memory_s / 2)
        text += "\n" + table(
            [
                ("cameras", str(args.memory_n)),
                ("dropped", str(r["dropped"])),
                ("RSS trace, MB (every fifth)", trace),
                ("RSS growth, 2nd half vs 1st half, MB", f"{second - first:+.1f}"),
            ],
            title=f"memory over {args.memory_s:.0f} s",
        )
    text += f"\ncameras at 30 fps with 2 ROIs each, none dropped: {best}"
    print(text)
    (work / "cameras.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
