"""Vehicle stage benchmark: the pure per-frame cost of tracking, windows and decisions.

Not the detector or the classifier (their ``invoke()`` is measured by the model and pipeline
benches): this is the Python the vehicle stage adds on every frame, so the budget can say how
much of a 33 ms frame (30 fps) it takes. ``N`` synthetic vehicles cross a 1920x1080 frame in
two lanes and both directions (they wrap round, so ``N`` stay in view), detections arrive on
every 6th frame (5 Hz at 30 fps) with a few pixels of noise, and each frame runs
``Tracker.update`` or ``Tracker.predict``, ``WindowSpec.box`` for every confirmed track and
``TrackDecider.update`` with a score per track. Prints per-frame CPU time of the thread
(``time.thread_time``, so other processes on a busy machine do not count) as percentiles and
as the mean share of a 30 fps frame.

Run: ``.venv/bin/python bench/vehicle_stage.py [--seconds 30] [--vehicles 1 5 10 20]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from _common import machine

from edge.app.stats import grid
from edge.core.track_decider import TrackDecider, TrackDecisionParams, TrackFrame
from edge.core.tracker import Detected, Tracker, TrackerParams
from edge.core.vehicle import Box
from edge.core.window import WindowSpec

FPS = 30.0
DETECT_EVERY = 6
FRAME = (1920, 1080)


def scene(n: int, rng: np.random.Generator) -> list[tuple[float, float, float, float, float]]:
    """Per vehicle: start x, y, width, height, speed (px/s; negative: right to left)."""
    out = []
    for i in range(n):
        w = float(rng.uniform(160, 320))
        lane = i % 2
        y = 380.0 + 220 * lane + float(rng.uniform(-20, 20))
        speed = float(rng.uniform(150, 450)) * (1 if lane == 0 else -1)
        out.append((float(rng.uniform(0, FRAME[0] - w)), y, w, w * 0.55, speed))
    return out


def box_at(v: tuple[float, float, float, float, float], t: float) -> Box:
    x0, y, w, h, speed = v
    span = FRAME[0] + w
    x = (x0 + speed * t + w) % span - w  # wrap round so the vehicle count stays n
    return (x, y, x + w, y + h)


def run(n: int, seconds: float, rng: np.random.Generator) -> list[float]:
    vehicles = scene(n, rng)
    tracker = Tracker(TrackerParams(), frame_wh=FRAME)
    spec = WindowSpec(view="side", drive_side="right")
    decider: TrackDecider[int] = TrackDecider(TrackDecisionParams())
    times = []
    for i in range(int(seconds * FPS)):
        t = i / FPS
        dets = None
        if i % DETECT_EVERY == 0:
            dets = []
            for v in vehicles:
                b = box_at(v, t)
                if b[0] >= 0 and b[2] <= FRAME[0]:
                    x0, y0, x1, y1 = (c + float(rng.normal(0, 2)) for c in b)
                    dets.append(Detected((x0, y0, x1, y1), 0.8))
        scores = rng.random(64)
        t0 = time.thread_time()
        ended: list[int] = []
        if dets is not None:
            up = tracker.update(t, dets)
            states, ended = up.confirmed, [s.track_id for s in up.ended]
        else:
            states = [s for s in tracker.predict(t) if s.is_confirmed]
        frames = [
            TrackFrame(
                s.track_id, float(scores[k % 64]), s.box, spec.box(s.box, FRAME, s.heading_x), i
            )
            for k, s in enumerate(states)
        ]
        decider.update(t, frames, ended=ended, frame_wh=FRAME)
        times.append(time.thread_time() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="simulated seconds per row")
    ap.add_argument("--vehicles", type=int, nargs="+", default=[1, 5, 10, 20])
    args = ap.parse_args()
    rng = np.random.default_rng(22)
    rows: list[tuple[str, ...]] = []
    for n in args.vehicles:
        ts = sorted(run(n, args.seconds, rng))
        p50 = statistics.median(ts) * 1e3
        p99 = ts[min(len(ts) - 1, int(0.99 * len(ts)))] * 1e3
        share = 100 * statistics.fmean(ts) / (1 / FPS)
        rows.append((str(n), f"{p50:.3f}", f"{p99:.3f}", f"{share:.2f} %"))
    print(f"vehicle stage, pure Python per frame ({machine()})")
    print(
        grid(
            rows,
            header=("vehicles", "p50 ms", "p99 ms", "mean share of a 30 fps frame"),
            title=f"{args.seconds:g} s at {FPS:g} fps, detections every {DETECT_EVERY} frames",
        )
    )


if __name__ == "__main__":
    main()
