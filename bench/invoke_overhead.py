"""Why is ``invoke()`` slower inside the pipeline than in a tight loop? One cause at a time.

Prints one table (and writes it to var/bench/invoke_overhead.txt). Every figure is the median,
over ``--reps`` rounds, of the median time per call (microseconds per ROI) of ``--calls``
calls, wall time and, in brackets, CPU time of the calling thread, on the default model with
the exact tensors the pipeline makes from 1080p frames with 2 ROIs. Each round runs every
experiment once (round-robin), so a slow spell of the shared machine hits them alike. Compare
rows within one run, and read the CPU figures when the load average is high: a call longer
than a scheduler slice then waits for a core, which inflates its wall time.

Experiments (the letters match issue 21's list):

* **b** glue: ``invoke()`` alone vs ``set_tensor`` + ``invoke`` + ``get_tensor`` + dequantise
  (+ softmax and score) per ROI, vs the classifier's ``score_batch``.
* **a** GIL: the same loop while a second Python thread crops and preprocesses non-stop, at
  several ``sys.setswitchinterval`` values; and while a thread runs pure Python (worst case).
* **c** XNNPACK threads: 1 vs 2 interpreter threads, with the other core idle, busy in C code
  that releases the GIL (OpenCV blur), or busy preprocessing.
* **d** batching: one ``invoke()`` on a [N, h, w, c] batch vs N invokes, per ROI.
* **e** cache: the same tensor every call vs cycling through every crop's tensor, and a
  crop + preprocess of a 1080p frame followed by the old path, in the same thread, against
  the two timed apart.

Usage:  .venv/bin/python bench/invoke_overhead.py [--calls 400] [--reps 5] [--frames 120]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import cv2
import numpy as np
from _common import REPO, machine, read_frames
from pipeline import DEFAULT_MODEL, make_1080p_clip

from edge.adapters.classifier import LiteRTClassifier
from edge.app.stats import table
from edge.core.preprocess import dequantise
from edge.core.roi import Roi


def per_call_us(fn: Callable[[int], object], calls: int) -> tuple[float, float]:
    """Median wall time and median CPU time of the calling thread of ``fn(i)`` over ``calls``
    calls, in microseconds. Wall minus CPU is time spent waiting: for the GIL, for a core
    (other processes), or for XNNPACK's worker threads."""
    wall, cpu = [], []
    for i in range(calls):
        c0 = time.thread_time()
        t0 = time.perf_counter()
        fn(i)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return statistics.median(wall) * 1e6, statistics.median(cpu) * 1e6


@contextmanager
def busy(work: Callable[[], object] | None) -> Iterator[None]:
    """Run ``work`` over and over on a second thread while the block runs."""
    if work is None:
        yield
        return
    stop = threading.Event()
    started = threading.Event()

    def loop() -> None:
        started.set()
        while not stop.is_set():
            work()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    started.wait()
    try:
        yield
    finally:
        stop.set()
        t.join()


@contextmanager
def switchinterval(s: float) -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(s)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def legacy_score(clf: LiteRTClassifier) -> Callable[[np.ndarray], float]:
    """The classifier's per-ROI path before issue 21 (set/get copies, per-call glue)."""
    it, i_in, i_out = clf._it, clf._in["index"], clf._out["index"]
    scale, zero = clf._out_scale, clf._out_zero

    def score(t: np.ndarray) -> float:
        it.set_tensor(i_in, t)
        it.invoke()
        raw = it.get_tensor(i_out)
        p = clf.probabilities(dequantise(raw, scale, zero).reshape(-1))
        s = float(p[clf._pos].sum())
        return 0.0 if s < 0.0 else 1.0 if s > 1.0 else s

    return score


Timings = dict[str, float]


def load_avg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def load(args: argparse.Namespace, work: Path) -> tuple[list[np.ndarray], list[Roi]]:
    clip, rois = make_1080p_clip(work, args.frames / 30)
    images = read_frames(clip, args.frames)
    return images, rois


def prep_for(
    clf: LiteRTClassifier, rois: list[Roi], images: list[np.ndarray]
) -> Callable[[], object]:
    """Crop + preprocess every ROI of the next frame: the prep thread's work for one frame."""
    k = [0]

    def prep() -> None:
        img = images[k[0] % len(images)]
        k[0] += 1
        for r in rois:
            clf.preprocess(r.crop(img), r.mask(img))

    return prep


def spin() -> None:
    """Pure Python: holds the GIL until the interpreter forces a switch."""
    x = 0
    for i in range(20000):
        x += i


Experiment = tuple[str, Callable[[], AbstractContextManager[object]], Callable[[int], object], int]
"""(key, context to run it in, call, ROIs per call)."""


def experiments(
    clf: LiteRTClassifier,
    tensors: list[np.ndarray],
    prep: Callable[[], object],
    blur: Callable[[], object],
) -> list[Experiment]:
    """Every experiment for one interpreter (one thread count)."""
    n = len(tensors)
    it = clf._it
    old = legacy_score(clf)

    def bare(i: int) -> None:
        it.invoke()

    def glue(i: int) -> float:
        return old(tensors[i % n])

    def batch_of(b: int) -> Callable[[int], list[float]]:
        return lambda i: clf.score_batch([tensors[(b * i + j) % n] for j in range(b)])

    def prep_then_glue(i: int) -> float:  # (e): the prep is timed too; subtract "prep alone"
        prep()
        return old(tensors[i % n])

    quiet: Callable[[], AbstractContextManager[object]] = nullcontext
    exps: list[Experiment] = [
        ("bare", quiet, bare, 1),
        ("legacy", quiet, glue, 1),
        ("new1", quiet, batch_of(1), 1),
        ("same tensor", quiet, lambda i: old(tensors[0]), 1),
        ("prep alone", quiet, lambda i: prep(), 1),
        ("prep+legacy", quiet, prep_then_glue, 1),
    ]
    for label, work_fn in (("blur", blur), ("prep", prep), ("spin", spin)):
        exps.append((f"bare+{label}", functools.partial(busy, work_fn), bare, 1))
        exps.append((f"legacy+{label}", functools.partial(busy, work_fn), glue, 1))
    for si in SWITCH_INTERVALS[1:]:
        exps.append((f"legacy+prep si{si}", functools.partial(both, si, prep), glue, 1))
        exps.append((f"legacy+spin si{si}", functools.partial(both, si, spin), glue, 1))
    exps += [(f"batch{b}", quiet, batch_of(b), b) for b in BATCHES]
    exps.append(("batch2+prep", functools.partial(busy, prep), batch_of(2), 2))
    clf.score_batch(tensors[:2])  # builds the batch-2 interpreter
    it2 = clf._batch_its[2]

    def bare2(i: int) -> None:
        it2.invoke()

    exps.append(("bare2", quiet, bare2, 2))
    for label, work_fn in (("blur", blur), ("prep", prep)):
        exps.append((f"bare2+{label}", functools.partial(busy, work_fn), bare2, 2))
    for si in SWITCH_INTERVALS[1:]:
        exps.append((f"batch2+prep si{si}", functools.partial(both, si, prep), batch_of(2), 2))
    return exps


@contextmanager
def both(si: float, work: Callable[[], object]) -> Iterator[None]:
    with switchinterval(si), busy(work):
        yield


def run_interleaved(
    settings: dict[int, list[Experiment]], calls: int, reps: int
) -> dict[int, Timings]:
    """Round-robin: each round runs every experiment of every setting once, so the shared
    machine's slow spells hit all of them alike; the result is the median over rounds of
    each round's median time per ROI."""
    samples: dict[tuple[int, str], list[float]] = {}
    for _ in range(reps):
        for threads, exps in settings.items():
            for key, ctx, fn, rois in exps:
                fn(0)
                with ctx():
                    wall, cpu = per_call_us(fn, max(calls // rois, 20))
                samples.setdefault((threads, key), []).append(wall / rois)
                samples.setdefault((threads, key + " cpu"), []).append(cpu / rois)
    out: dict[int, Timings] = {}
    for (threads, key), v in samples.items():
        out.setdefault(threads, {})[key] = statistics.median(v)
    return out


SWITCH_INTERVALS = (0.005, 0.001, 0.0005, 0.0002)
BATCHES = (1, 2, 4, 8, 16)


def rows_for(by_threads: dict[int, Timings]) -> list[tuple[str, str]]:
    def r(key: str) -> str:
        one, two = by_threads[1], by_threads[2]
        return (
            f"{one[key]:.0f} ({one[key + ' cpu']:.0f}) / {two[key]:.0f} ({two[key + ' cpu']:.0f})"
        )

    rows = [
        ("(b) invoke() alone, input set once", r("bare")),
        ("(b) set + invoke + get + dequantise + score (old path)", r("legacy")),
        ("(b) score_batch of 1 (this code)", r("new1")),
        ("(c) invoke() alone, other thread in C (GIL free)", r("bare+blur")),
        ("(c) invoke() alone, other thread preprocessing", r("bare+prep")),
        ("(a) old path, other thread preprocessing (5 ms switch)", r("legacy+prep")),
        ("(a) old path, other thread pure Python (5 ms switch)", r("legacy+spin")),
    ]
    for si in SWITCH_INTERVALS[1:]:
        ms = f"{si * 1e3:g} ms"
        rows.append((f"(a) old path + prep thread, switchinterval {ms}", r(f"legacy+prep si{si}")))
        rows.append(
            (f"(a) old path + Python thread, switchinterval {ms}", r(f"legacy+spin si{si}"))
        )
    rows += [(f"(d) score_batch of {b}, per ROI", r(f"batch{b}")) for b in BATCHES]
    rows += [
        ("(d) score_batch of 2 per ROI, other thread preprocessing", r("batch2+prep")),
        ("(d) invoke() alone on the batch-2 interpreter, per ROI", r("bare2")),
        ("(d) the same, other thread in C (GIL free)", r("bare2+blur")),
        ("(d) the same, other thread preprocessing", r("bare2+prep")),
        *[
            (
                f"(a) (d) score_batch of 2 + prep thread, switch {si * 1e3:g} ms",
                r(f"batch2+prep si{si}"),
            )
            for si in SWITCH_INTERVALS[1:]
        ],
        ("(e) old path, same tensor every call", r("same tensor")),
        ("(e) old path, cycling through every crop's tensor", r("legacy")),
        ("(e) crop + preprocess of 2 ROIs alone (per call)", r("prep alone")),
        ("(e) crop + preprocess, then old path (same thread)", r("prep+legacy")),
    ]
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    work = REPO / "var" / "bench"
    work.mkdir(parents=True, exist_ok=True)
    images, rois = load(args, work)
    sizes = ", ".join(f"{r.crop(images[0]).shape[1]}x{r.crop(images[0]).shape[0]}" for r in rois)
    cv2.setNumThreads(1)
    blur_src = images[0]

    def blur() -> None:  # C code that releases the GIL for about a millisecond
        cv2.GaussianBlur(blur_src, (15, 15), 0)

    load0 = load_avg()
    settings: dict[int, list[Experiment]] = {}
    clfs = []
    for threads in (1, 2):
        clf = LiteRTClassifier.open(args.model, accelerator="cpu", threads=threads)
        clfs.append(clf)
        tensors = [clf.preprocess(r.crop(img), r.mask(img)) for img in images for r in rois]
        settings[threads] = experiments(clf, tensors, prep_for(clf, rois, images), blur)
    by_threads = run_interleaved(settings, args.calls, args.reps)
    for clf in clfs:
        clf.close()
    rows = [
        (
            "us per ROI, median of medians: wall (CPU of the calling thread)",
            "1 / 2 XNNPACK threads",
        ),
        ("load average at start / end", f"{load0} / {load_avg()}"),
        ("machine", machine()),
        ("ROI crop sizes in a 1080p frame", sizes),
        ("default switchinterval", f"{sys.getswitchinterval() * 1e3:g} ms"),
        *rows_for(by_threads),
    ]
    text = table(rows, title="phonewatch invoke() overhead")
    print(text)
    (work / "invoke_overhead.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
