"""Vehicle stage benchmark: what does the detector cost per 1080p frame, and per second?

Prints one table (and writes it to var/bench/vehicles.txt). Each row is one stage timed on
the same 1080p frames: wall-clock ms per call (median and p90 over every call of every
pass) and CPU ms per call (process CPU time, all threads: the interpreter runs ``--threads``),
then the share of the whole machine's CPU that stage takes when it runs at each rate in
``--rates`` (e.g. the detector at 5 Hz while the camera delivers 30 fps):
``cpu_ms * rate / 1000 / cores``.

Stages: the resize + quantise into the model's input (``LiteRTDetector.preprocess``), the raw
interpreter ``invoke()`` on a prepared tensor, decode + filter + NMS, and ``detect()`` end to
end. The frames are ``car-detection.mp4`` from the shared data scaled up to 1920x1080 (the
clip is 768x432, 16:9), or grey noise when the shared data is absent; the detector's cost
does not depend on what the frame shows.

To add a stage (a tracker, the classifier on each track's window), time a callable with
:func:`measure` and pass the result to :func:`render` with the others.

Usage:  .venv/bin/python bench/vehicles.py [--model M --sidecar S] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from _common import REPO, machine

from edge.adapters.detector import LiteRTDetector
from edge.app.stats import grid, table

SHARED = Path(os.environ.get("PHONEWATCH_SHARED_DATA", REPO.parent / "shared" / "data"))
DEFAULT_MODEL = SHARED / "models" / "coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.tflite"
DEFAULT_SIDECAR = REPO / "models" / "vehicle" / "coco_ssd_mobilenet_v1.json"
SIZE_1080P = (1920, 1080)


@dataclass(frozen=True, slots=True)
class Timing:
    """One stage's cost per call: wall-clock and CPU milliseconds."""

    name: str
    wall_ms: list[float]
    cpu_ms: list[float]

    @property
    def wall_p50(self) -> float:
        return statistics.median(self.wall_ms)

    @property
    def wall_p90(self) -> float:
        return float(np.percentile(self.wall_ms, 90))

    @property
    def cpu_p50(self) -> float:
        return statistics.median(self.cpu_ms)

    def cpu_share(self, rate_hz: float, cores: int) -> float:
        """The fraction of all ``cores`` this stage keeps busy at ``rate_hz`` calls a second."""
        return self.cpu_p50 * rate_hz / 1000.0 / cores


def measure(
    name: str,
    fn: Callable[[Any], object],
    inputs: Sequence[Any],
    *,
    passes: int = 3,
    warmup: int = 5,
) -> Timing:
    """Time ``fn(x)`` for each ``x`` in ``inputs``, ``passes`` times over (after ``warmup``
    untimed calls); every call is one sample."""
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(passes):
        for x in inputs:
            c0, t0 = time.process_time(), time.perf_counter()
            fn(x)
            t1, c1 = time.perf_counter(), time.process_time()
            wall.append((t1 - t0) * 1000.0)
            cpu.append((c1 - c0) * 1000.0)
    return Timing(name, wall, cpu)


def render(
    timings: Sequence[Timing], rates: Sequence[float], cores: int, about: list[tuple[str, str]]
) -> str:
    """The benchmark's text: the ``about`` (name, value) table, then one row per stage."""
    head = ("stage", "wall ms p50", "wall ms p90", "CPU ms p50", *(f"CPU @{r:g} Hz" for r in rates))
    rows: list[tuple[str, ...]] = []
    for t in timings:
        shares = tuple(f"{100 * t.cpu_share(r, cores):.1f} %" for r in rates)
        rows.append((t.name, f"{t.wall_p50:.2f}", f"{t.wall_p90:.2f}", f"{t.cpu_p50:.2f}", *shares))
    about = [*about, ("CPU @ rate", f"CPU ms x rate / 1000 / {cores} cores")]
    return table(about, title="phonewatch vehicle stage benchmark") + "\n" + grid(rows, header=head)


def frames_1080p(n: int) -> tuple[list[np.ndarray], str]:
    """``n`` 1920x1080 BGR frames and where they came from: car-detection.mp4 (top-down, no
    vehicle COCO SSD recognises) interleaved with traffic_frames/ (two or three it does)."""
    clip = SHARED / "video" / "car-detection.mp4"
    traffic = sorted((SHARED / "video" / "traffic_frames").glob("*.bmp"))
    still = [img for img in (cv2.imread(str(p)) for p in traffic) if img is not None]
    out: list[np.ndarray] = []
    if clip.is_file() and still:
        cap = cv2.VideoCapture(str(clip))
        step = 0
        while len(out) < n:
            ok, img = cap.read()
            if not ok:
                break
            if step % 7 == 0:  # spread over the clip: empty road and cars both
                src = still[len(out) % len(still)] if len(out) % 2 else img
                out.append(cv2.resize(src, SIZE_1080P, interpolation=cv2.INTER_LINEAR))
            step += 1
        cap.release()
    if out:
        return out, f"{len(out)} frames of car-detection.mp4 and traffic_frames/, as 1920x1080"
    rng = np.random.default_rng(0)
    out = [rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8) for _ in range(n)]
    return out, f"{n} grey-noise 1920x1080 frames (shared data absent)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--sidecar", type=Path, default=DEFAULT_SIDECAR)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=30, help="1080p frames held in memory")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--rates", type=float, nargs="+", default=[5.0, 10.0, 30.0])
    args = ap.parse_args()
    if not args.model.is_file():
        print(f"detector model {args.model} is not present", file=sys.stderr)
        return 2
    images, source = frames_1080p(args.frames)
    cores = os.cpu_count() or 1
    with LiteRTDetector.open(args.model, args.sidecar, args.threads) as det:
        prepared = [det.preprocess(img) for img in images]
        tensors = [t for t, _ in prepared]
        outputs = [det.invoke(t) for t in tensors]
        places = [p for _, p in prepared]
        spec = det.spec

        def decode_select(i: int) -> object:
            from edge.core.vehicle import select

            cand = det.decode(outputs[i])
            ids = spec.vehicle_ids
            return select(cand, spec.labels, ids, spec.score_min, spec.nms_iou, places[i])

        kw = {"passes": args.passes}
        timings = [
            measure("resize + quantise 1080p -> input", det.preprocess, images, **kw),
            measure("raw invoke()", det.invoke, tensors, **kw),
            measure("decode + filter + NMS", decode_select, range(len(images)), **kw),
            measure("detect() end to end", det.detect, images, **kw),
        ]
        found = sum(len(det.detect(img)) for img in images)
        s = det.spec.input
        about = [
            ("machine", machine()),
            (
                "detector",
                f"{det.name} {det.version} ({s.width}x{s.height} {det.spec.resize}, "
                f"{args.model.stat().st_size / 1e6:.2f} MB, {det.accelerator}, "
                f"{args.threads} threads, {det.runtime})",
            ),
            ("frames", source),
            ("vehicles found on those frames", str(found)),
            ("load average at the end", f"{os.getloadavg()[0]:.1f}"),
        ]
    text = render(timings, args.rates, cores, about)
    print(text)
    work = REPO / "var" / "bench"
    work.mkdir(parents=True, exist_ok=True)
    (work / "vehicles.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
