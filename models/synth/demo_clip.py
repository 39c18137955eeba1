"""The demo clip: a fixed junction camera; cars in two lanes arrive, stop at a line and leave.

Some drivers hold a phone, others do something that looks alike (hands at the face, drinking,
a phone in a dashboard cradle ...). Writes ``junction.mp4`` and ``junction.truth.json``::

    python -m models.synth.demo_clip --out DIR [--seed N] [--seconds S] [--fps F]

The camera never moves, so the ROIs (where a stopped car's driver window sits, as fractions
of the frame) are the same for every seed; only the traffic and the drivers change.
An event is one car whose driver window covers at least half of a lane's ROI, from its first
to its last such frame (inclusive); ``phone`` says whether that driver holds a phone.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.synth.render import NEGATIVE_POSES, POSITIVE_POSES, render_scene

log = logging.getLogger(__name__)

WIDTH, HEIGHT = 1280, 720
STOP_X = 0.78 * WIDTH
"""Where a stopped car's front bumper sits (pixels)."""
COVER_MIN = 0.5
"""Share of the ROI a driver window must cover for the car to count as 'in the ROI'."""


@dataclass(frozen=True, slots=True)
class Lane:
    name: str
    baseline_y: float
    """Ground line under the wheels (pixels)."""
    scale: float


LANES = (Lane("lane1", 0.88 * HEIGHT, 1.0), Lane("lane2", 0.55 * HEIGHT, 0.75))

# Driver window relative to the car's front bumper x and ground y, in car units (x scale).
_WIN = (-235.0, -225.0, -105.0, -135.0)
_CAR_LEN = 420.0


def window_box(lane: Lane, front_x: float) -> tuple[float, float, float, float]:
    s = lane.scale
    return (
        front_x + _WIN[0] * s,
        lane.baseline_y + _WIN[1] * s,
        front_x + _WIN[2] * s,
        lane.baseline_y + _WIN[3] * s,
    )


def roi_fractions() -> dict[str, list[float]]:
    """Each lane's ROI: the stopped car's driver window, as fractions of the frame."""
    out = {}
    for lane in LANES:
        x0, y0, x1, y1 = window_box(lane, STOP_X)
        out[lane.name] = [
            round(x0 / WIDTH, 4),
            round(y0 / HEIGHT, 4),
            round(x1 / WIDTH, 4),
            round(y1 / HEIGHT, 4),
        ]
    return out


@dataclass(frozen=True, slots=True)
class Car:
    lane: Lane
    arrive_s: float
    """Time the car enters the frame."""
    approach_s: float
    dwell_s: float
    leave_s: float
    pose: str
    phone: bool
    colour: tuple[int, int, int]
    window: np.ndarray
    """The driver-window picture (BGR), rendered once at the window's pixel size."""

    def front_x(self, t_s: float) -> float:
        start = -20.0
        u = t_s - self.arrive_s
        if u < 0:
            return -1e9
        if u < self.approach_s:  # decelerate to the stop line (ease-out)
            k = u / self.approach_s
            return start + (STOP_X - start) * (1 - (1 - k) ** 2)
        u -= self.approach_s
        if u < self.dwell_s:
            return STOP_X
        u -= self.dwell_s
        k = u / self.leave_s  # accelerate away
        travel = WIDTH + _CAR_LEN * self.lane.scale + 40 - STOP_X
        return STOP_X + travel * k * k

    def gone_s(self) -> float:
        return self.arrive_s + self.approach_s + self.dwell_s + self.leave_s


def _schedule(seed: int, seconds: float) -> list[Car]:
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 7])
    plans: list[tuple[Lane, float, float, float, float]] = []
    for li, lane in enumerate(LANES):
        t = 0.3 + 1.2 * li + rng.uniform(0, 0.6)
        while True:
            approach = rng.uniform(2.0, 2.8)
            dwell = rng.uniform(2.5, 4.0)
            leave = rng.uniform(2.0, 2.6)
            if t + approach + dwell + leave > seconds:
                break
            plans.append((lane, t, approach, dwell, leave))
            t += approach + dwell + rng.uniform(0.8, 2.0)  # next car follows the last one out
    # Half the drivers hold a phone (at least one of each), in a seeded order.
    n = len(plans)
    n_phone = max(1, min(n - 1, n // 2)) if n > 1 else n
    phone_flags = np.zeros(n, bool)
    phone_flags[rng.permutation(n)[:n_phone]] = True
    negatives = [p for p in NEGATIVE_POSES if p not in ("empty_seat",)]
    cars = []
    for i, ((lane, t, approach, dwell, leave), phone) in enumerate(
        zip(plans, phone_flags, strict=True)
    ):
        poses = POSITIVE_POSES if phone else negatives
        pose = poses[int(rng.integers(len(poses)))]
        x0, y0, x1, y1 = window_box(lane, STOP_X)
        size = (round(x1 - x0), round(y1 - y0))
        scene_rng = np.random.default_rng([seed & 0xFFFFFFFF, 11, i])
        window = render_scene(scene_rng, pose, "day", face=1, frame=False)
        window = cv2.resize(window, size, interpolation=cv2.INTER_AREA)
        colour = tuple(int(c) for c in rng.integers(30, 230, 3))
        cars.append(
            Car(
                lane,
                t,
                approach,
                dwell,
                leave,
                pose,
                bool(phone),
                (colour[0], colour[1], colour[2]),
                window,
            )
        )
    return cars


def _background(seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 3])
    img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    sky = np.linspace(0, 1, int(0.33 * HEIGHT))[:, None, None]
    img[: sky.shape[0]] = (
        np.array([230, 200, 170]) * (1 - sky) + np.array([245, 235, 225]) * sky
    ).astype(np.uint8)
    for _ in range(14):  # buildings
        x = rng.uniform(0, WIDTH)
        w = rng.uniform(60, 180)
        top = rng.uniform(0.08, 0.25) * HEIGHT
        c = tuple(int(v) for v in rng.integers(90, 200, 3))
        cv2.rectangle(img, (int(x), int(top)), (int(x + w), int(0.33 * HEIGHT)), c, -1)
    cv2.rectangle(img, (0, int(0.33 * HEIGHT)), (WIDTH, int(0.38 * HEIGHT)), (170, 175, 180), -1)
    cv2.rectangle(img, (0, int(0.38 * HEIGHT)), (WIDTH, int(0.96 * HEIGHT)), (85, 88, 90), -1)
    cv2.rectangle(img, (0, int(0.96 * HEIGHT)), (WIDTH, HEIGHT), (170, 175, 180), -1)
    for x in range(0, WIDTH, 90):  # lane divider
        cv2.line(img, (x, int(0.64 * HEIGHT)), (x + 45, int(0.64 * HEIGHT)), (230, 230, 230), 4)
    sx = int(STOP_X + 20)  # stop line
    cv2.line(img, (sx, int(0.40 * HEIGHT)), (sx, int(0.95 * HEIGHT)), (240, 240, 240), 8)
    px = int(0.86 * WIDTH)  # traffic light pole
    cv2.line(img, (px, int(0.05 * HEIGHT)), (px, int(0.36 * HEIGHT)), (50, 50, 50), 8)
    cv2.rectangle(
        img, (px - 16, int(0.05 * HEIGHT)), (px + 16, int(0.16 * HEIGHT)), (30, 30, 30), -1
    )
    cv2.circle(img, (px, int(0.08 * HEIGHT)), 9, (40, 40, 220), -1)
    return img


def _draw_car(img: np.ndarray, car: Car, front_x: float) -> None:
    lane, s, yb = car.lane, car.lane.scale, car.lane.baseline_y

    def p(dx: float, dy: float) -> tuple[int, int]:
        return round(front_x + dx * s), round(yb + dy * s)

    body = car.colour
    dark = tuple(int(c * 0.6) for c in body)
    cabin = np.array([p(-385, -130), p(-335, -240), p(-140, -240), p(-70, -130)], np.int32)
    cv2.fillConvexPoly(img, cabin, dark, cv2.LINE_AA)
    cv2.rectangle(img, p(-_CAR_LEN, -135), p(0, -25), body, -1, cv2.LINE_AA)
    for wx in (-85, -330):
        cv2.circle(img, p(wx, -32), round(34 * s), (20, 20, 20), -1, cv2.LINE_AA)
        cv2.circle(img, p(wx, -32), round(16 * s), (150, 150, 150), -1, cv2.LINE_AA)
    # Rear side window (empty back seat), then the driver's window with the driver in it.
    cv2.rectangle(img, p(-340, -225), p(-250, -135), (70, 60, 55), -1)
    x0, y0, x1, y1 = (round(v) for v in window_box(lane, front_x))
    h, w = car.window.shape[:2]
    x1, y1 = x0 + w, y0 + h
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, WIDTH), min(y1, HEIGHT)
    if cx1 > cx0 and cy1 > cy0:
        img[cy0:cy1, cx0:cx1] = car.window[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    # Slanted front edge of the window (A-pillar) and the door line.
    cv2.fillConvexPoly(
        img,
        np.array(
            [p(-125, -225), p(-100, -225), p(-100, -135), p(-70, -135), p(-70, -240)], np.int32
        ),
        dark,
        cv2.LINE_AA,
    )
    cv2.line(img, p(-245, -225), p(-245, -30), tuple(int(c * 0.45) for c in body), 2)


def _cover(box: tuple[float, float, float, float], roi: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(box[2], roi[2]) - max(box[0], roi[0]))
    iy = max(0.0, min(box[3], roi[3]) - max(box[1], roi[1]))
    area = (roi[2] - roi[0]) * (roi[3] - roi[1])
    return ix * iy / area


def frames(seed: int, seconds: float, fps: float) -> tuple[Iterator[np.ndarray], dict[str, Any]]:
    """(frame iterator, ground truth dict) for a clip; the truth is complete before iterating."""
    cars = _schedule(seed, seconds)
    n_frames = round(seconds * fps)
    rois_px = {lane.name: window_box(lane, STOP_X) for lane in LANES}
    events = []
    for car in cars:
        covered = [
            i
            for i in range(n_frames)
            if _cover(window_box(car.lane, car.front_x(i / fps)), rois_px[car.lane.name])
            >= COVER_MIN
        ]
        if covered:
            events.append(
                {
                    "roi": car.lane.name,
                    "start_frame": covered[0],
                    "end_frame": covered[-1],
                    "phone": car.phone,
                }
            )
    events.sort(key=lambda e: (e["start_frame"], e["roi"]))
    truth: dict[str, Any] = {
        "video": "junction.mp4",
        "fps": float(fps),
        "frames": n_frames,
        "width": WIDTH,
        "height": HEIGHT,
        "rois": roi_fractions(),
        "events": events,
    }

    def gen() -> Iterator[np.ndarray]:
        bg = _background(seed)
        rng = np.random.default_rng([seed & 0xFFFFFFFF, 5])
        noise = [rng.normal(0, 2.5, bg.shape).astype(np.float32) for _ in range(6)]
        for i in range(n_frames):
            t = i / fps
            img = bg.copy()
            # Far lane first so the near lane's cars are drawn over it.
            for lane in sorted(LANES, key=lambda ln: ln.baseline_y):
                for car in cars:
                    if car.lane is lane and car.arrive_s <= t <= car.gone_s():
                        _draw_car(img, car, car.front_x(t))
            yield np.clip(img + noise[i % len(noise)], 0, 255).astype(np.uint8)

    return gen(), truth


def write_clip(
    out_dir: Path, *, seed: int = 0, seconds: float = 30.0, fps: float = 25.0
) -> dict[str, Any]:
    """Write ``junction.mp4`` and ``junction.truth.json`` into ``out_dir``; returns the truth."""
    out_dir.mkdir(parents=True, exist_ok=True)
    it, truth = frames(seed, seconds, fps)
    video = out_dir / truth["video"]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), fps, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise OSError(f"cannot write {video}: OpenCV has no mp4v encoder here")
    try:
        for img in it:
            writer.write(img)
    finally:
        writer.release()
    (out_dir / "junction.truth.json").write_text(
        json.dumps(truth, indent=1) + "\n", encoding="utf-8"
    )
    log.info("wrote %s (%d frames, %d events)", video, truth["frames"], len(truth["events"]))
    return truth


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m models.synth.demo_clip",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=30.0, help="clip length (default 30)")
    ap.add_argument("--fps", type=float, default=25.0, help="frame rate (default 25)")
    args = ap.parse_args(argv)
    if not 1.0 <= args.seconds <= 600.0 or not 1.0 <= args.fps <= 120.0:
        ap.error("--seconds must be 1..600 and --fps 1..120")
    truth = write_clip(args.out, seed=args.seed, seconds=args.seconds, fps=args.fps)
    n_phone = sum(e["phone"] for e in truth["events"])
    print(
        f"{args.out / truth['video']}: {truth['frames']} frames at {truth['fps']} fps, "
        f"{len(truth['events'])} events ({n_phone} with a phone)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
