"""Moving-vehicle scenes with ground truth per vehicle: a dash-camera patrol and a busy junction.

``patrol``: a dash camera on a patrol car on a two-carriageway road (drive side right, traffic
keeps left). Cars in the slow lane on the left are overtaken (they grow, pass alongside and
leave by the left edge); cars in the fast lane on the right overtake the patrol car (they come
from behind and shrink into the distance); a car ahead in the patrol car's lane approaches and
recedes; one car cuts across from the slow lane to the fast lane in front of it; oncoming cars
on the far carriageway grow fast and leave by the right edge. Nearer cars hide farther ones.
The view is ``rear`` for cars going the patrol car's way and ``front`` for oncoming ones.

``junction``: a fixed camera beside a junction (view ``side``): a near lane going right and a
far lane going left, cars of four sizes arriving alone or in pairs, stopping short of or past
the stop line, waiting, and leaving.

Some drivers hold a phone (on patrol, only those of cars seen side-on and close: the slow
and fast lanes and the car cutting across). The driver in the side window nearest the camera is a
``render.render_scene`` picture, so the phone classifier sees what it was trained on; the
rear window (``rear``) or windscreen (``front``) shows a head, and a phone at the ear.

Writes ``<scene>.mp4`` and ``truth.json`` (see ``docs/model.md``)::

    python -m models.synth.patrol --scene patrol|junction --seed 7 --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.synth.render import NEGATIVE_POSES, POSITIVE_POSES, SKIN_BGR, render_scene
from models.synth.vehicles import KINDS, Kind, Sprite, end_sprite, side_sprite

log = logging.getLogger(__name__)

SCENES = ("patrol", "junction")
WIDTH, HEIGHT = 1280, 720
DRIVE_SIDE = "right"
PHONE_SHARE = 0.4
Box = tuple[float, float, float, float]

# Dash camera (metres, pixels at WIDTH).
CAM_H_M = 1.3
FOCAL = 0.78
"""Focal length as a share of the frame width (about 65 degrees across)."""
HORIZON = 0.42
"""Where the horizon sits, as a share of the frame height."""
Z_NEAR_M = 0.4
Z_FAR_M = 110.0
EGO_MPS = 14.0
LANES_X = {"slow": -3.6, "ego": 0.0, "fast": 3.6, "oncoming": 8.0}
SIDE_SEEN_LANES = ("slow", "fast", "cut")
"""Patrol lanes whose cars pass close alongside, their driver's side window large in view."""
SPRITE_PPM = 110.0


@dataclass(frozen=True, slots=True)
class Camera:
    width: int
    height: int

    @property
    def f(self) -> float:
        return FOCAL * self.width

    def project(self, x_m: float, y_m: float, z_m: float) -> tuple[float, float]:
        """Screen point of a world point (x right, y up from the road, z ahead)."""
        z = max(z_m, 1e-3)
        return (
            self.width / 2 + self.f * x_m / z,
            HORIZON * self.height + self.f * (CAM_H_M - y_m) / z,
        )


@dataclass
class Vehicle:
    """One vehicle: what it looks like and where it is at time t."""

    id: int
    kind: Kind
    colour: tuple[int, int, int]
    phone: bool
    pose: str
    view: str
    """``rear``, ``front`` or ``side``."""
    place: Callable[[float], tuple[float, float] | None]
    """t -> (x, z) of its centre in metres (patrol) or (front x px, heading) (junction)."""
    lane: str
    heading: int = 1
    """Patrol: +1 going the patrol car's way, -1 oncoming. Junction: +1 going right, -1 left."""
    sprites: dict[str, Sprite] = field(default_factory=dict)


# ---------------------------------------------------------------- scheduling


def _driver_picture(seed: int, vid: int, pose: str, face: int) -> np.ndarray:
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 23, vid])
    return render_scene(rng, pose, "day", face=face, frame=False)


def _phone_flags(rng: np.random.Generator, n: int) -> list[bool]:
    n_phone = max(1, min(n - 1, round(n * PHONE_SHARE))) if n > 1 else n
    flags = np.zeros(n, bool)
    flags[rng.permutation(n)[:n_phone]] = True
    return [bool(v) for v in flags]


def _pose(rng: np.random.Generator, phone: bool) -> str:
    negatives = [p for p in NEGATIVE_POSES if p not in ("empty_seat", "passenger")]
    poses = POSITIVE_POSES if phone else negatives
    return str(poses[int(rng.integers(len(poses)))])


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    palette = (
        (40, 40, 170),
        (170, 110, 30),
        (220, 220, 222),
        (30, 30, 32),
        (140, 140, 145),
        (40, 110, 40),
        (60, 160, 220),
        (120, 60, 30),
        (200, 200, 60),
        (90, 70, 150),
    )
    c = palette[int(rng.integers(len(palette)))]
    j = rng.integers(-12, 13, 3)
    return (
        int(np.clip(c[0] + j[0], 0, 255)),
        int(np.clip(c[1] + j[1], 0, 255)),
        int(np.clip(c[2] + j[2], 0, 255)),
    )


def _linear(t0: float, z0: float, v: float, x: float) -> Callable[[float], tuple[float, float]]:
    return lambda t: (x, z0 + v * (t - t0))


def _patrol_plans(rng: np.random.Generator, seconds: float) -> list[tuple[str, int, Any]]:
    """(lane, heading, place function) for each vehicle of a patrol clip."""
    plans: list[tuple[str, int, Any]] = []
    # Overtaken in the slow lane: ahead, closing at 3-6 m/s.
    t = rng.uniform(-6.0, 0.0)
    while True:
        v = -rng.uniform(3.5, 6.0)
        if t + (60.0 - 4.0) / -v > seconds - 1.5:
            break  # it would not come alongside before the clip ends
        plans.append(("slow", 1, _linear(t, 60.0, v, LANES_X["slow"])))
        t += rng.uniform(6.0, 9.0)
    # Overtaking in the fast lane: from just behind, pulling away at 3-5 m/s.
    t = rng.uniform(1.0, 4.0)
    while t < seconds - 4:
        plans.append(("fast", 1, _linear(t, -6.0, rng.uniform(3.0, 5.0), LANES_X["fast"])))
        t += rng.uniform(8.0, 12.0)
    # Oncoming: the far carriageway, closing at about twice the patrol car's speed.
    t = rng.uniform(0.0, 2.0)
    while t < seconds - 2:
        plans.append(
            ("oncoming", -1, _linear(t, Z_FAR_M, -rng.uniform(24, 30), LANES_X["oncoming"]))
        )
        t += rng.uniform(3.0, 6.0)
    # The car ahead: 16-30 m, drifting nearer and farther.
    z_mid, amp, w, ph = 23.0, rng.uniform(5.0, 7.0), rng.uniform(0.15, 0.3), rng.uniform(0, 6.3)
    plans.append(("ego", 1, lambda t: (0.0, z_mid + amp * math.sin(w * t + ph))))
    # The car that cuts across, in front of the car ahead, from the slow lane to the fast one.
    t_cut = rng.uniform(0.35, 0.55) * seconds
    plans.append(("cut", 1, _cut_across(t_cut)))
    return plans


def _cut_across(t_cut: float) -> Callable[[float], tuple[float, float]]:
    x0, x1, dur = LANES_X["slow"], LANES_X["fast"], 3.0

    def place(t: float) -> tuple[float, float]:
        k = min(1.0, max(0.0, (t - t_cut) / dur))
        k = k * k * (3 - 2 * k)
        z = 13.0 + 1.2 * (t - t_cut) + (0.0 if t < t_cut + dur else 2.0 * (t - t_cut - dur))
        return (x0 + (x1 - x0) * k, z)

    return place


def _patrol_vehicles(seed: int, seconds: float) -> list[Vehicle]:
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 31])
    plans = _patrol_plans(rng, seconds)
    # Phones go only to drivers the camera sees side-on, large, for a while: the car ahead
    # shows only its rear and oncoming cars pass in a few frames.
    seen = [i for i, (lane, _, _) in enumerate(plans) if lane in SIDE_SEEN_LANES]
    flags = [False] * len(plans)
    for i, phone in zip(seen, _phone_flags(rng, len(seen)), strict=True):
        flags[i] = phone
    out = []
    for vid, ((lane, heading, place), phone) in enumerate(zip(plans, flags, strict=True)):
        kind = KINDS[str(rng.choice(["hatch", "saloon", "saloon", "suv", "van"]))]
        colour = _colour(rng)
        pose = _pose(rng, phone)
        skin = SKIN_BGR[int(rng.integers(len(SKIN_BGR)))]
        veh = Vehicle(
            vid, kind, colour, phone, pose, "rear" if heading > 0 else "front", place, lane, heading
        )
        driver = _driver_picture(seed, vid, pose, 1)
        veh.sprites["side"] = side_sprite(kind, colour, driver, SPRITE_PPM)
        # A car going our way shows its rear, its driver on the right (drive side right);
        # an oncoming one shows its front, its driver on our left.
        veh.sprites["end"] = end_sprite(
            kind,
            colour,
            SPRITE_PPM,
            is_front=heading < 0,
            driver_on_left=heading < 0,
            has_phone=phone,
            skin=skin,
        )
        out.append(veh)
    return out


# ---------------------------------------------------------------- junction

JUNCTION_LANES = {
    # name: (ground y as a share of the height, pixels per metre at WIDTH, heading, stop line x)
    "near": (0.90, 82.0, 1, 0.74),
    "far": (0.585, 64.0, -1, 0.30),
}


def _ease_path(
    arrive: float, approach: float, dwell: float, leave: float, u_stop: float, u_end: float
) -> Callable[[float], float | None]:
    """Travel distance (px, along the heading) of the front bumper at time t; None off screen."""
    start = -10.0

    def u(t: float) -> float | None:
        s = t - arrive
        if s < 0:
            return None
        if s < approach:
            k = s / approach
            return start + (u_stop - start) * (1 - (1 - k) ** 2)
        s -= approach
        if s < dwell:
            return u_stop
        s -= dwell
        k = s / leave
        return u_stop + (u_end - u_stop) * k * k

    return u


def _clear_of(
    ahead: Callable[[float], float | None] | None,
    ahead_len_px: float,
    behind: Callable[[float], float | None],
    t0: float,
    t1: float,
) -> bool:
    """Whether ``behind``'s front stays a car length behind ``ahead``'s rear from t0 to t1."""
    if ahead is None:
        return True
    for t in np.arange(t0, t1, 0.05):
        a, b = ahead(float(t)), behind(float(t))
        if a is not None and b is not None and b > a - ahead_len_px - 20:
            return False
    return True


def _lane_plans(
    rng: np.random.Generator, lane: str, first_s: float, seconds: float, width: int
) -> list[tuple[str, Kind, Callable[[float], float | None]]]:
    """Cars in one lane: alone or in pairs, each stopping near the line, waiting, leaving."""
    _, ppm0, _, stop = JUNCTION_LANES[lane]
    ppm = ppm0 * width / WIDTH
    plans: list[tuple[str, Kind, Callable[[float], float | None]]] = []
    last: tuple[Callable[[float], float | None], float] | None = None
    t = first_s
    while True:
        approach, dwell, leave = rng.uniform(2.0, 2.6), rng.uniform(2.0, 3.5), rng.uniform(1.8, 2.4)
        # Stop short of the line or past it, by up to a metre and a half.
        u_stop = stop * width + rng.uniform(-1.5, 1.2) * ppm
        u_end = width + 7.0 * ppm
        lead = KINDS[str(rng.choice(list(KINDS)))]
        while True:  # wait until the lane ahead is clear
            path = _ease_path(t, approach, dwell, leave, u_stop, u_end)
            if last is None or _clear_of(last[0], last[1], path, t, t + approach + dwell + leave):
                break
            t += 0.25
        if t + approach + dwell + leave + 1.0 > seconds:
            break
        plans.append((lane, lead, path))
        last = (path, lead.length_m * ppm)
        if rng.random() < 0.5:  # a second car queues behind the first, leaves after it
            gap_px = (lead.length_m + rng.uniform(0.8, 1.6)) * ppm
            kind = KINDS[str(rng.choice(list(KINDS)))]
            follower = _follow(path, rng.uniform(0.4, 0.9), gap_px)
            plans.append((lane, kind, follower))
            last = (follower, kind.length_m * ppm)
        t += approach + dwell + rng.uniform(0.6, 1.6)
    return plans


def _junction_vehicles(seed: int, seconds: float, width: int) -> list[Vehicle]:
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 41])
    scale = width / WIDTH
    plans = []
    for li, lane in enumerate(JUNCTION_LANES):
        plans += _lane_plans(rng, lane, 0.2 + 1.5 * li + rng.uniform(0, 0.5), seconds, width)
    flags = _phone_flags(rng, len(plans))
    out = []
    for vid, ((lane, kind, path), phone) in enumerate(zip(plans, flags, strict=True)):
        heading = JUNCTION_LANES[lane][2]
        pose = _pose(rng, phone)
        colour = _colour(rng)
        veh = Vehicle(
            vid,
            kind,
            colour,
            phone,
            pose,
            "side",
            _junction_place(path, heading, width),
            lane,
            heading,
        )
        ppm = JUNCTION_LANES[lane][1] * scale
        sp = side_sprite(kind, colour, _driver_picture(seed, vid, pose, 1), ppm)
        if heading < 0:
            x0, y0, x1, y1 = sp.window
            w = sp.bgr.shape[1]
            sp = Sprite(sp.bgr[:, ::-1].copy(), sp.alpha[:, ::-1].copy(), (w - x1, y0, w - x0, y1))
        veh.sprites["side"] = sp
        out.append(veh)
    return out


def _follow(
    path: Callable[[float], float | None], delay: float, gap_px: float
) -> Callable[[float], float | None]:
    def u(t: float) -> float | None:
        v = path(t - delay)
        return None if v is None else v - gap_px

    return u


def _junction_place(
    path: Callable[[float], float | None], heading: int, width: int
) -> Callable[[float], tuple[float, float] | None]:
    def place(t: float) -> tuple[float, float] | None:
        u = path(t)
        if u is None:
            return None
        return (u if heading > 0 else width - u, float(heading))

    return place


# ---------------------------------------------------------------- drawing


@dataclass
class _Drawn:
    """What one vehicle put on one frame."""

    box: Box
    window: Box | None
    own_px: int
    """Its own opaque pixels on the frame (before nearer vehicles were drawn)."""
    window_own_px: int
    side_window: Box | None = None
    """The front side window, where the driver picture is drawn (None when edge-on)."""


def _clip_box(b: Box, w: int, h: int) -> Box | None:
    x0, y0, x1, y1 = max(0.0, b[0]), max(0.0, b[1]), min(float(w), b[2]), min(float(h), b[3])
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return (x0, y0, x1, y1)


def _composite(
    img: np.ndarray,
    label: np.ndarray,
    vid: int,
    bgr: np.ndarray,
    alpha: np.ndarray,
    x0: int,
    y0: int,
) -> tuple[int, int, int, int] | None:
    """Blend a (warped or pasted) patch at (x0, y0); returns its opaque box on the frame."""
    h, w = alpha.shape
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(img.shape[1], x0 + w), min(img.shape[0], y0 + h)
    if fx1 <= fx0 or fy1 <= fy0:
        return None
    a8 = alpha[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    if not a8.any():
        return None
    a = a8[:, :, None].astype(np.float32) / 255.0
    src = bgr[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0].astype(np.float32)
    dst = img[fy0:fy1, fx0:fx1]
    dst[:] = (dst * (1 - a) + src * a).astype(np.uint8)
    solid = a8 >= 128
    label[fy0:fy1, fx0:fx1][solid] = vid + 1
    ys, xs = np.nonzero(solid)
    if len(xs) == 0:
        return None
    return (
        fx0 + int(xs.min()),
        fy0 + int(ys.min()),
        fx0 + int(xs.max()) + 1,
        fy0 + int(ys.max()) + 1,
    )


def _as_box(b: tuple[int, int, int, int] | None) -> Box | None:
    return None if b is None else (float(b[0]), float(b[1]), float(b[2]), float(b[3]))


def _union(a: Box | None, b: Box | None) -> Box | None:
    if a is None:
        return b
    if b is None:
        return a
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def _quad_box(pts: Sequence[tuple[float, float]]) -> Box:
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return (min(xs), min(ys), max(xs), max(ys))


def _side_geometry(
    veh: Vehicle, x_c: float, z_c: float
) -> tuple[float, Callable[[float], float]] | None:
    """(x of the visible side plane, along-length share -> z), or None when edge-on."""
    half = veh.kind.width_m / 2
    if abs(x_c) <= half + 0.05:
        return None
    x_face = x_c - math.copysign(half, x_c)
    length = veh.kind.length_m
    return x_face, lambda a: z_c + veh.heading * (a - 0.5) * length


def _draw_side_warped(
    img: np.ndarray, label: np.ndarray, cam: Camera, veh: Vehicle, x_c: float, z_c: float
) -> tuple[Box | None, Box | None]:
    geo = _side_geometry(veh, x_c, z_c)
    if geo is None:
        return None, None
    x_face, z_of = geo
    sp = veh.sprites["side"]
    h_px, w_px = sp.alpha.shape
    ppm = SPRITE_PPM
    # The part of the side ahead of the near plane: along-length shares [a0, a1].
    a_near = [a for a in np.linspace(0, 1, 41) if z_of(float(a)) >= Z_NEAR_M]
    if not a_near:
        return None, None
    a0, a1 = float(min(a_near)), float(max(a_near))
    top = (h_px - 1) / ppm

    def scr(a: float, y_m: float) -> tuple[float, float]:
        return cam.project(x_face, y_m, z_of(a))

    src = np.array(
        [
            [1 + a0 * (w_px - 2), 0],
            [1 + a1 * (w_px - 2), 0],
            [1 + a1 * (w_px - 2), h_px - 1],
            [1 + a0 * (w_px - 2), h_px - 1],
        ],
        np.float32,
    )
    dst_pts = [scr(a0, top), scr(a1, top), scr(a1, 0.0), scr(a0, 0.0)]
    bx0, by0, bx1, by1 = _quad_box(dst_pts)
    bx0, by0 = max(math.floor(bx0), 0), max(math.floor(by0), 0)
    bx1, by1 = min(math.ceil(bx1), cam.width), min(math.ceil(by1), cam.height)
    if bx1 <= bx0 or by1 <= by0:
        return None, None
    dst = np.array([(x - bx0, y - by0) for x, y in dst_pts], np.float32)
    m = cv2.getPerspectiveTransform(src, dst)
    size = (bx1 - bx0, by1 - by0)
    bgr = cv2.warpPerspective(sp.bgr, m, size, flags=cv2.INTER_LINEAR)
    alpha = cv2.warpPerspective(sp.alpha, m, size, flags=cv2.INTER_LINEAR)
    box = _composite(img, label, veh.id, bgr, alpha, bx0, by0)
    # The driver's window on the frame.
    wx0, wy0, wx1, wy1 = sp.window
    corners = [(wx0, wy0), (wx1, wy0), (wx1, wy1), (wx0, wy1)]
    pts = []
    for sx, sy in corners:
        a = min(max((sx - 1) / (w_px - 2), a0), a1)
        pts.append(scr(a, (h_px - 1 - sy) / ppm))
    window = _clip_box(_quad_box(pts), cam.width, cam.height)
    return _as_box(box), window


def _draw_end(
    img: np.ndarray, label: np.ndarray, cam: Camera, veh: Vehicle, x_c: float, z_c: float
) -> tuple[Box | None, Box | None]:
    z_end = z_c - veh.kind.length_m / 2
    if z_end < max(Z_NEAR_M, 1.5):
        return None, None
    sp = veh.sprites["end"]
    h_px, w_px = sp.alpha.shape
    half = veh.kind.width_m / 2
    x0, y0 = cam.project(x_c - half, (h_px - 1) / SPRITE_PPM, z_end)
    x1, y1 = cam.project(x_c + half, 0.0, z_end)
    w, h = round(x1 - x0), round(y1 - y0)
    if w < 2 or h < 2 or x1 < 0 or x0 > cam.width or y0 > cam.height:
        return None, None
    k = w / w_px
    bgr = cv2.resize(sp.bgr, (w, h), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    alpha = cv2.resize(sp.alpha, (w, h), interpolation=cv2.INTER_LINEAR)
    box = _composite(img, label, veh.id, bgr, alpha, round(x0), round(y0))
    # The driver's half of the glass.
    gx0, gy0, gx1, gy1 = sp.window
    mid = (gx0 + gx1) / 2
    hx0, hx1 = (gx0, mid) if (veh.heading < 0) else (mid, gx1)
    win = (x0 + hx0 * k, y0 + gy0 * h / h_px, x0 + hx1 * k, y0 + gy1 * h / h_px)
    return _as_box(box), _clip_box(win, cam.width, cam.height)


def _draw_patrol_vehicle(
    img: np.ndarray, label: np.ndarray, cam: Camera, veh: Vehicle, t: float
) -> _Drawn | None:
    place = veh.place(t)
    if place is None:
        return None
    x_c, z_c = place
    if z_c + veh.kind.length_m / 2 < Z_NEAR_M or z_c - veh.kind.length_m / 2 > Z_FAR_M:
        return None
    side_box, side_win = _draw_side_warped(img, label, cam, veh, x_c, z_c)
    end_box, end_win = _draw_end(img, label, cam, veh, x_c, z_c)
    box = _union(side_box, end_box)
    if box is None:
        return None
    return _Drawn(box, _union(side_win, end_win), 0, 0, side_win)


def _draw_junction_vehicle(
    img: np.ndarray, label: np.ndarray, veh: Vehicle, t: float, scale: float
) -> _Drawn | None:
    place = veh.place(t)
    if place is None:
        return None
    front_x, _ = place
    sp = veh.sprites["side"]
    h, w = sp.alpha.shape
    ground = JUNCTION_LANES[veh.lane][0] * HEIGHT * scale
    x0 = round(front_x - w) if veh.heading > 0 else round(front_x)
    y0 = round(ground - h)
    box = _composite(img, label, veh.id, sp.bgr, sp.alpha, x0, y0)
    if box is None:
        return None
    wx0, wy0, wx1, wy1 = sp.window
    win = _clip_box((x0 + wx0, y0 + wy0, x0 + wx1, y0 + wy1), img.shape[1], img.shape[0])
    return _Drawn((float(box[0]), float(box[1]), float(box[2]), float(box[3])), win, 0, 0, win)


# ---------------------------------------------------------------- backgrounds


def _patrol_background(cam: Camera, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 43])
    w, h = cam.width, cam.height
    hy = round(HORIZON * h)
    img = np.zeros((h, w, 3), np.uint8)
    k = np.linspace(0, 1, hy)[:, None, None]
    img[:hy] = (np.array([235, 205, 170]) * (1 - k) + np.array([245, 238, 230]) * k).astype(
        np.uint8
    )
    for _ in range(18):  # distant trees and buildings on the horizon
        x = rng.uniform(0, w)
        bw = rng.uniform(0.02, 0.08) * w
        top = hy - rng.uniform(0.02, 0.09) * h
        c = tuple(int(v) for v in rng.integers(70, 150, 3))
        cv2.rectangle(img, (int(x), int(top)), (int(x + bw), hy), c, -1)
    img[hy:] = (95, 120, 100)  # verges
    road = [cam.project(x, 0, z) for x, z in ((-6.0, 0.5), (13.0, 0.5), (13.0, 400), (-6.0, 400))]
    cv2.fillConvexPoly(img, np.array(road, np.int32), (88, 90, 92), cv2.LINE_AA)
    k2 = np.linspace(0, 1, h - hy)[:, None, None]
    img[hy:] = np.clip(img[hy:] * (0.92 + 0.12 * k2), 0, 255).astype(np.uint8)
    for x in (-5.4, 5.6, 6.2):  # edge line and the central reservation
        a, b = cam.project(x, 0, 0.8), cam.project(x, 0, 300)
        cv2.line(
            img,
            (round(a[0]), round(a[1])),
            (round(b[0]), round(b[1])),
            (225, 225, 225),
            3,
            cv2.LINE_AA,
        )
    return img


def _patrol_dashes(img: np.ndarray, cam: Camera, t: float) -> None:
    """Lane dashes sliding towards the camera as the patrol car drives."""
    period, dash = 12.0, 3.0
    shift = (EGO_MPS * t) % period
    for x in (-1.8, 1.8, 10.0):
        z = 1.0 - shift + period
        while z < 90:
            pts = [
                cam.project(x - 0.07, 0, z),
                cam.project(x + 0.07, 0, z),
                cam.project(x + 0.07, 0, z + dash),
                cam.project(x - 0.07, 0, z + dash),
            ]
            cv2.fillConvexPoly(img, np.array(pts, np.int32), (230, 230, 230), cv2.LINE_AA)
            z += period


def _junction_background(width: int, height: int, seed: int) -> np.ndarray:
    from models.synth.demo_clip import _background

    img = _background(seed)
    # Paint over the old stop line and draw one per lane: near lane (right), far lane (left).
    cv2.rectangle(img, (0, int(0.39 * HEIGHT)), (WIDTH, int(0.95 * HEIGHT)), (85, 88, 90), -1)
    for x in range(0, WIDTH, 90):
        cv2.line(img, (x, int(0.64 * HEIGHT)), (x + 45, int(0.64 * HEIGHT)), (230, 230, 230), 4)
    for _, (gy, _, heading, stop) in JUNCTION_LANES.items():
        sx = round(stop * WIDTH) + (20 if heading > 0 else -20)
        y0 = 0.66 if gy > 0.7 else 0.40
        y1 = 0.94 if gy > 0.7 else 0.63
        cv2.line(img, (sx, int(y0 * HEIGHT)), (sx, int(y1 * HEIGHT)), (240, 240, 240), 8)
    if (width, height) != (WIDTH, HEIGHT):
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return img


# ---------------------------------------------------------------- the clip


def _depth(veh: Vehicle, t: float) -> float:
    """Drawing order: farther first."""
    place = veh.place(t)
    if place is None:
        return -1.0
    if veh.view == "side":
        return 0.0 if veh.lane == "far" else 1.0
    return -place[1]


def _frame(
    scene: str,
    vehicles: Sequence[Vehicle],
    bg: np.ndarray,
    cam: Camera,
    t: float,
) -> tuple[np.ndarray, np.ndarray, dict[int, _Drawn]]:
    img = bg.copy()
    if scene == "patrol":
        _patrol_dashes(img, cam, t)
    label = np.zeros(img.shape[:2], np.int16)
    drawn: dict[int, _Drawn] = {}
    scale = cam.width / WIDTH
    for veh in sorted(vehicles, key=lambda v: _depth(v, t)):
        if scene == "patrol":
            d = _draw_patrol_vehicle(img, label, cam, veh, t)
        else:
            d = _draw_junction_vehicle(img, label, veh, t, scale)
        if d is not None:
            x0, y0, x1, y1 = (round(v) for v in d.box)
            d.own_px = int(np.count_nonzero(label[y0:y1, x0:x1] == veh.id + 1))
            if d.window is not None:
                wx0, wy0, wx1, wy1 = (round(v) for v in d.window)
                d.window_own_px = int(np.count_nonzero(label[wy0:wy1, wx0:wx1] == veh.id + 1))
            drawn[veh.id] = d
    return img, label, drawn


def _frame_truth(
    label: np.ndarray, drawn: dict[int, _Drawn], index: int
) -> dict[int, dict[str, Any]]:
    out = {}
    for vid, d in drawn.items():
        x0, y0, x1, y1 = (round(v) for v in d.box)
        seen = int(np.count_nonzero(label[y0:y1, x0:x1] == vid + 1))
        row: dict[str, Any] = {
            "frame": index,
            "box": [round(v, 1) for v in d.box],
            "window": None if d.window is None else [round(v, 1) for v in d.window],
            "side_window": None if d.side_window is None else [round(v, 1) for v in d.side_window],
            "visible": round(seen / max(1, d.own_px), 3),
        }
        if d.window is not None:
            wx0, wy0, wx1, wy1 = (round(v) for v in d.window)
            wseen = int(np.count_nonzero(label[wy0:wy1, wx0:wx1] == vid + 1))
            row["window_visible"] = round(wseen / max(1, d.window_own_px), 3)
        out[vid] = row
    return out


def build(
    scene: str, seed: int, seconds: float, size: tuple[int, int] = (WIDTH, HEIGHT)
) -> tuple[list[Vehicle], np.ndarray, Camera]:
    """The vehicles, the background and the camera of a clip."""
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {SCENES}, got {scene!r}")
    cam = Camera(*size)
    if scene == "patrol":
        return _patrol_vehicles(seed, seconds), _patrol_background(cam, seed), cam
    return _junction_vehicles(seed, seconds, size[0]), _junction_background(*size, seed), cam


def frames(
    scene: str,
    *,
    seed: int = 0,
    seconds: float = 40.0,
    fps: float = 20.0,
    size: tuple[int, int] = (WIDTH, HEIGHT),
) -> Iterator[tuple[np.ndarray, dict[int, dict[str, Any]]]]:
    """(frame, {vehicle id: that vehicle's truth row}) for each frame of a clip."""
    vehicles, bg, cam = build(scene, seed, seconds, size)
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 5])
    noise = [rng.normal(0, 2.5, bg.shape).astype(np.float32) for _ in range(4)]
    for i in range(round(seconds * fps)):
        img, label, drawn = _frame(scene, vehicles, bg, cam, i / fps)
        yield (
            np.clip(img + noise[i % len(noise)], 0, 255).astype(np.uint8),
            _frame_truth(label, drawn, i),
        )


def _truth(
    scene: str,
    vehicles: Sequence[Vehicle],
    rows: dict[int, list[dict[str, Any]]],
    *,
    seed: int,
    fps: float,
    n_frames: int,
    size: tuple[int, int],
    video: str,
) -> dict[str, Any]:
    out_vehicles = []
    passes = []
    for veh in vehicles:
        r = rows.get(veh.id, [])
        if not r:
            continue
        first, last = r[0]["frame"], r[-1]["frame"]
        out_vehicles.append(
            {
                "id": veh.id,
                "kind": veh.kind.name,
                "lane": veh.lane,
                "view": veh.view,
                "drive_side": DRIVE_SIDE,
                "heading": veh.heading,
                "phone": veh.phone,
                "pose": veh.pose,
                "first_frame": first,
                "last_frame": last,
                "frames": r,
            }
        )
        passes.append(
            {"vehicle": veh.id, "start_frame": first, "end_frame": last, "phone": veh.phone}
        )
    passes.sort(key=lambda p: (p["start_frame"], p["vehicle"]))
    return {
        "scene": scene,
        "seed": seed,
        "video": video,
        "fps": float(fps),
        "frames": n_frames,
        "width": size[0],
        "height": size[1],
        "synthetic": True,
        "vehicles": out_vehicles,
        "passes": passes,
    }


def render(
    scene: str,
    *,
    seed: int = 0,
    seconds: float = 40.0,
    fps: float = 20.0,
    size: tuple[int, int] = (WIDTH, HEIGHT),
    sink: Callable[[np.ndarray], object] | None = None,
) -> dict[str, Any]:
    """Render a clip, handing each frame to ``sink``; returns the truth (as ``truth.json``)."""
    vehicles, _, _ = build(scene, seed, seconds, size)
    rows: dict[int, list[dict[str, Any]]] = {}
    n = 0
    for img, truth in frames(scene, seed=seed, seconds=seconds, fps=fps, size=size):
        if sink is not None:
            sink(img)
        for vid, row in truth.items():
            rows.setdefault(vid, []).append(row)
        n += 1
    return _truth(
        scene, vehicles, rows, seed=seed, fps=fps, n_frames=n, size=size, video=f"{scene}.mp4"
    )


def write_clip(
    out_dir: Path,
    scene: str,
    *,
    seed: int = 0,
    seconds: float = 40.0,
    fps: float = 20.0,
    size: tuple[int, int] = (WIDTH, HEIGHT),
) -> dict[str, Any]:
    """Write ``<scene>.mp4`` and ``truth.json`` into ``out_dir``; returns the truth."""
    out_dir.mkdir(parents=True, exist_ok=True)
    video = out_dir / f"{scene}.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise OSError(f"cannot write {video}: OpenCV has no mp4v encoder here")
    try:
        truth = render(
            scene,
            seed=seed,
            seconds=seconds,
            fps=fps,
            size=size,
            sink=writer.write,
        )
    finally:
        writer.release()
    (out_dir / "truth.json").write_text(json.dumps(truth) + "\n", encoding="utf-8")
    log.info("wrote %s (%d frames, %d vehicles)", video, truth["frames"], len(truth["vehicles"]))
    return truth


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m models.synth.patrol",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--scene", choices=SCENES, required=True)
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=40.0, help="clip length (default 40)")
    ap.add_argument("--fps", type=float, default=20.0, help="frame rate (default 20)")
    ap.add_argument("--width", type=int, default=WIDTH, help="frame width; height keeps 16:9")
    args = ap.parse_args(argv)
    if not 1.0 <= args.seconds <= 600.0 or not 1.0 <= args.fps <= 120.0:
        ap.error("--seconds must be 1..600 and --fps 1..120")
    if not 320 <= args.width <= 3840:
        ap.error("--width must be 320..3840")
    size = (args.width, round(args.width * 9 / 16))
    truth = write_clip(
        args.out, args.scene, seed=args.seed, seconds=args.seconds, fps=args.fps, size=size
    )
    n_phone = sum(v["phone"] for v in truth["vehicles"])
    print(
        f"{args.out / truth['video']}: {truth['frames']} frames at {truth['fps']} fps, "
        f"{len(truth['vehicles'])} vehicles ({n_phone} drivers with a phone)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
