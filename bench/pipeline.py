"""Pipeline benchmark: does the unit keep up with a 1080p 30 fps camera?

Prints one table (and writes it to var/bench/pipeline.txt):

* raw interpreter fps on the exact crops the pipeline makes (each frame's ROIs scored with
  ``score_batch``, as the pipeline does: one ``invoke()`` per frame on a model that batches),
  and the pipeline's unpaced fps on the same frames held in memory, as a ratio
  measured in the same run (target >= 0.95);
* per-frame overhead excluding ``invoke()`` (crop, preprocess, quantise, decide), median
  (target <= 2 ms at 1080p);
* a 1080p 30 fps file replayed at real time: dropped frames (target 0);
* resident memory over a long real-time replay (target <= 250 MB, not growing).

Usage:  .venv/bin/python bench/pipeline.py [--model M] [--realtime-s 20] [--memory-s 300]

``--compare-threads 1 2 [--runs 5]`` prints only the in-memory comparison (issue 21): raw
interpreter vs pipeline, per thread count, the settings interleaved run by run on the same
frames, with ``invoke()`` per ROI inside and outside the pipeline, medians over the runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from _common import REPO, machine, read_frames, rss_mb

from edge.adapters.camera import ReplaySource
from edge.adapters.classifier import LiteRTClassifier
from edge.adapters.evidence import EvidenceStore
from edge.adapters.sinks import MemorySink
from edge.app.demo import load_truth
from edge.app.pipeline import Pipeline
from edge.app.stats import table
from edge.core.decider import DeciderParams
from edge.core.frame import Frame
from edge.core.roi import Roi

DEFAULT_MODEL = REPO / "models" / "phone_in_hand" / "phone_in_hand.tflite"


class MemorySource:
    """Pre-decoded frames served as fast as asked: a camera with no decode cost."""

    name = "memory"
    is_live = False
    fps = 30.0

    def __init__(self, images: list[np.ndarray], repeat: int) -> None:
        self.images, self.repeat, self.i = images, repeat, 0

    def open(self) -> None:
        self.i = 0

    def read(self) -> Frame | None:
        if self.i >= len(self.images) * self.repeat:
            return None
        img = self.images[self.i % len(self.images)]
        f = Frame(self.i, time.monotonic(), time.time(), img, source=self.name)
        self.i += 1
        return f

    def close(self) -> None:
        pass


def make_1080p_clip(work: Path, seconds: float) -> tuple[Path, list[Roi]]:
    """The demo junction scene, scaled to 1920x1080 at 30 fps."""
    import subprocess

    demo = work / "demo"
    if not (demo / "junction.mp4").is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "models.synth.demo_clip",
                "--out",
                str(demo),
                "--seconds",
                str(max(seconds, 10)),
                "--fps",
                "30",
            ],
            check=True,
            cwd=REPO,
        )
    truth = load_truth(demo / "junction.truth.json")
    rois = [
        Roi.rect(rid, x0, y0, x1, y1, margin=0.1)
        for rid, (x0, y0, x1, y1) in sorted(truth["rois"].items())
    ]
    out = work / "junction_1080p30.mp4"
    if not out.is_file():
        cap = cv2.VideoCapture(str(demo / "junction.mp4"))
        w = cv2.VideoWriter(str(out), cv2.VideoWriter.fourcc(*"mp4v"), 30.0, (1920, 1080))
        n = 0
        while n < seconds * 30:
            ok, img = cap.read()
            if not ok:
                break
            w.write(cv2.resize(img, (1920, 1080), interpolation=cv2.INTER_LINEAR))
            n += 1
        w.release()
    return out, rois


def build(source, clf, rois, work: Path, *, lossless: bool) -> Pipeline:  # type: ignore[no-untyped-def]
    return Pipeline(
        source=source,
        classifier=clf,
        rois=rois,
        decider=DeciderParams(
            window=8,
            min_frames=5,
            score_on=clf.threshold,
            score_off=clf.threshold * 0.6,
            cooldown_s=10,
        ),
        evidence=EvidenceStore(work / "evidence", quota_bytes=200_000_000),
        sink=MemorySink(),
        unit_id="bench",
        lossless=lossless,
    )


def memory_run(
    clip: Path, rois: list[Roi], clf: LiteRTClassifier, work: Path, seconds: float
) -> int:
    import json

    p = build(ReplaySource(clip, speed=1.0, loop=True), clf, rois, work, lossless=False)
    samples: list[tuple[float, float]] = []
    p.start()
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        time.sleep(min(10.0, seconds / 10))
        samples.append((time.monotonic() - t0, rss_mb()))
    p.stop()
    print(json.dumps({"samples": samples, "dropped": p.snapshot()["dropped_frames"]}))
    return 0


def rss_trace(samples: list[list[float]]) -> str:
    """RSS at each fifth of a run, so growth (or its absence) can be seen, not just summed."""
    end = samples[-1][0]
    picks = []
    for k in range(1, 6):
        t = end * k / 5
        picks.append(min(samples, key=lambda s: abs(s[0] - t))[1])
    return " ".join(f"{m:.0f}" for m in picks)


class TimedClassifier:
    """A classifier whose ``score_batch`` calls are timed: wall and CPU time of the calling
    thread. With one XNNPACK thread ``invoke()`` runs on the caller, so CPU is the work done
    and wall minus CPU is waiting (for the GIL after ``invoke()`` returns, or for a core)."""

    def __init__(self, inner: LiteRTClassifier) -> None:
        self.inner = inner
        self.wall_s: list[float] = []
        self.cpu_s: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def score_batch(self, tensors: list[np.ndarray]) -> list[float]:
        c0 = time.thread_time()
        t0 = time.perf_counter()
        out = self.inner.score_batch(tensors)
        self.wall_s.append(time.perf_counter() - t0)
        self.cpu_s.append(time.thread_time() - c0)
        return out

    def per_roi_ms(self, rois: int) -> tuple[float, float]:
        """Median wall and CPU ms per ROI of the calls so far."""
        return (
            statistics.median(self.wall_s) * 1e3 / rois,
            statistics.median(self.cpu_s) * 1e3 / rois,
        )


def raw_pass(clf: LiteRTClassifier, frames: list[list[np.ndarray]]) -> tuple[float, float, float]:
    """The interpreter in a tight loop, scoring each frame's ROI tensors as the pipeline does
    (``score_batch``): (frames per second, median wall and CPU ms per ROI of one call)."""
    timed = TimedClassifier(clf)
    t0 = time.perf_counter()
    for ts in frames:
        timed.score_batch(ts)
    fps = len(frames) / (time.perf_counter() - t0)
    return fps, *timed.per_roi_ms(len(frames[0]))


def pipeline_pass(
    clf: LiteRTClassifier | TimedClassifier, images: list[np.ndarray], rois: list[Roi]
) -> dict[str, Any]:
    """The pipeline, unpaced and lossless, on frames held in memory: its snapshot."""
    p = build(MemorySource(images, repeat=2), clf, rois, Path(tempfile.mkdtemp()), lossless=True)
    p.start()
    p.wait()
    return p.snapshot()


def compare_threads(
    args: argparse.Namespace, images: list[np.ndarray], rois: list[Roi]
) -> list[tuple[str, str]]:
    """Raw vs pipeline for each thread count, interleaved run by run (issue 21)."""
    clfs = {
        n: LiteRTClassifier.open(args.model, accelerator="cpu", threads=n)
        for n in args.compare_threads
    }
    got: dict[tuple[int, str], list[float]] = {}
    for _ in range(args.runs):
        for n, clf in clfs.items():
            frames = [[clf.preprocess(r.crop(img), r.mask(img)) for r in rois] for img in images]
            clf.score_batch(frames[0])  # warm (builds the batch interpreter)
            raw_fps, raw_roi_ms, raw_cpu_ms = raw_pass(clf, frames)
            timed = TimedClassifier(clf)
            s = pipeline_pass(timed, images, rois)
            pipe_roi_ms, pipe_cpu_ms = timed.per_roi_ms(len(rois))
            pipe_fps = s["frames_processed"] / s["elapsed_s"]
            for key, v in (
                ("raw fps", raw_fps),
                ("pipe fps", pipe_fps),
                ("ratio", pipe_fps / raw_fps),
                ("raw roi ms", raw_roi_ms),
                ("raw cpu ms", raw_cpu_ms),
                ("pipe roi ms", pipe_roi_ms),
                ("pipe cpu ms", pipe_cpu_ms),
                ("invoke ratio", pipe_roi_ms / raw_roi_ms),
                ("cpu ratio", pipe_cpu_ms / raw_cpu_ms),
                ("pipe wait ms", pipe_roi_ms - pipe_cpu_ms),
                ("raw wait ms", raw_roi_ms - raw_cpu_ms),
                ("overhead", s["overhead_ms_p50"]),
            ):
                got.setdefault((n, key), []).append(v)
    for clf in clfs.values():
        clf.close()

    def row(label: str, key: str, fmt: str) -> tuple[str, str]:
        cells = []
        for n in clfs:
            v = got[(n, key)]
            cells.append(f"{n}t: {statistics.median(v):{fmt}} ({min(v):{fmt}}-{max(v):{fmt}})")
        return label, "   ".join(cells)

    batching = getattr(next(iter(clfs.values())), "batching", False)
    return [
        ("machine", machine()),
        ("model", f"{args.model.name}, {len(rois)} ROIs/frame, one invoke per frame: {batching}"),
        ("runs (median (min-max))", str(args.runs)),
        ("load average at the end", " ".join(Path("/proc/loadavg").read_text().split()[:3])),
        row("raw interpreter, same frames (frames/s)", "raw fps", ".0f"),
        row("pipeline, unpaced, same frames (frames/s)", "pipe fps", ".0f"),
        row("pipeline / raw (target >= 0.95)", "ratio", ".3f"),
        row("invoke ms per ROI p50, raw", "raw roi ms", ".3f"),
        row("invoke ms per ROI p50, in the pipeline", "pipe roi ms", ".3f"),
        row("in the pipeline / raw (target <= 1.2)", "invoke ratio", ".2f"),
        row("CPU ms per ROI of the calling thread, raw", "raw cpu ms", ".3f"),
        row("CPU ms per ROI of the calling thread, pipeline", "pipe cpu ms", ".3f"),
        row("CPU in the pipeline / raw", "cpu ratio", ".2f"),
        row("wall - CPU per ROI (waiting), raw", "raw wait ms", ".3f"),
        row("wall - CPU per ROI (waiting), pipeline", "pipe wait ms", ".3f"),
        row("overhead ms/frame excl. invoke, p50", "overhead", ".2f"),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--frames", type=int, default=120, help="frames held in memory")
    ap.add_argument("--realtime-s", type=float, default=20.0)
    ap.add_argument("--memory-s", type=float, default=300.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory-only", type=float, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--compare-threads", type=int, nargs="+", default=None)
    ap.add_argument("--runs", type=int, default=5, help="runs for --compare-threads")
    args = ap.parse_args()
    work = REPO / "var" / "bench"
    work.mkdir(parents=True, exist_ok=True)
    clip, rois = make_1080p_clip(work, max(args.realtime_s, args.frames / 30))
    clf = LiteRTClassifier.open(args.model, accelerator="cpu", threads=args.threads)
    if args.memory_only is not None:
        return memory_run(clip, rois, clf, work, args.memory_only)

    # Frames in memory, and the exact tensors the pipeline will feed.
    images = read_frames(clip, args.frames)
    if args.compare_threads:
        text = table(compare_threads(args, images, rois), title="raw interpreter vs pipeline")
        print(text)
        (work / "pipeline_threads.txt").write_text(text + "\n")
        return 0
    frames = [[clf.preprocess(r.crop(img), r.mask(img)) for r in rois] for img in images]

    # 1. Raw interpreter on the same crops, scored per frame as the pipeline does (median of 3).
    for ts in frames[:10]:
        clf.score_batch(ts)
    raw = statistics.median(raw_pass(clf, frames)[0] for _ in range(3))

    # 2. The pipeline, unpaced, on the same frames (median of 3 runs).
    pipe_fps, overhead = [], []
    for _ in range(3):
        s = pipeline_pass(clf, images, rois)
        # Throughput from the first to the last processed frame (excludes thread start-up).
        pipe_fps.append(s["frames_processed"] / s["elapsed_s"])
        overhead.append(s["overhead_ms_p50"])
    pipe = statistics.median(pipe_fps)

    # 3. Real time: a 1080p30 file replayed at its frame rate.
    p = build(ReplaySource(clip, speed=1.0, loop=True), clf, rois, work, lossless=False)
    p.start()
    time.sleep(args.realtime_s)
    p.stop()
    rt = p.snapshot()

    # 4. Memory over a long real-time replay, in a fresh process (this one holds the frames).
    import json
    import subprocess

    mem = json.loads(
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--model",
                str(args.model),
                "--threads",
                str(args.threads),
                "--memory-only",
                str(args.memory_s),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    samples = mem["samples"]
    mem_dropped = mem["dropped"]
    half = [m for t, m in samples if t >= args.memory_s / 2] or [samples[-1][1]]
    first_half = [m for t, m in samples if t < args.memory_s / 2] or [samples[0][1]]
    growth = max(half) - max(first_half)

    rows = [
        ("machine", machine()),
        (
            "model",
            f"{clf.name} {clf.version} ({clf.spec.input.width}x{clf.spec.input.height}, "
            f"{args.model.stat().st_size / 1e6:.2f} MB, {args.threads} threads)",
        ),
        ("ROIs per frame", f"{len(rois)} (1920x1080 frames)"),
        ("raw interpreter fps (score_batch per frame)", f"{raw:.1f}"),
        ("pipeline fps, unpaced, same frames", f"{pipe:.1f}"),
        ("pipeline / raw (target >= 0.95)", f"{pipe / raw:.3f}"),
        ("overhead ms/frame excl. invoke, median (<= 2)", f"{statistics.median(overhead):.2f}"),
        (
            "invoke ms per frame p50 / p99 (real time)",
            f"{rt['invoke_ms_p50']:.2f} / {rt['invoke_ms_p99']:.2f}",
        ),
        (
            f"real time {args.realtime_s:.0f} s @30 fps: frames in/out",
            f"{rt['frames_captured']} / {rt['frames_processed']}",
        ),
        ("real time: dropped frames (target 0)", str(rt["dropped_frames"])),
        (f"RSS after {args.memory_s:.0f} s, MB (<= 250)", f"{samples[-1][1]:.0f}"),
        ("RSS growth, 2nd half vs 1st half, MB", f"{growth:+.1f}"),
        ("RSS trace, MB (at 1/5 ... 5/5 of the run)", rss_trace(samples)),
        ("dropped during the memory run", str(mem_dropped)),
    ]
    text = table(rows, title="phonewatch pipeline benchmark")
    print(text)
    (work / "pipeline.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
