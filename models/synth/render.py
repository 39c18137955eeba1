"""Synthetic driver-window crops, deterministic by seed (numpy + OpenCV drawing only).

A crop shows what a unit's ROI sees: a driver in profile behind a side window (or an
in-cabin view), a steering wheel in front, the far window behind, and the window frame around.
The driver holds a phone (``POSITIVE_POSES``) or does something that looks alike but is not
(``NEGATIVE_POSES``: hands on the wheel, a hand at the face, drinking, eating, a phone in a
dashboard cradle, a passenger, an empty seat). Scene conditions vary: skin tone, clothing,
hats, glasses, window frame, glare and reflections, day / dusk / infrared night, motion blur,
defocus, sensor noise, JPEG quality, pillar and mirror occlusion, scale and angle.

``render_crop(seed, index)`` is a pure function of its arguments: the same seed and index give
the same pixels on any machine with the same OpenCV build. A crop labelled "phone" always shows
its phone (at least ``MIN_PHONE_PIXELS`` visibly changed pixels; see ``render_crop``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

POSITIVE_POSES = ("phone_ear_left", "phone_ear_right", "phone_low", "phone_over_wheel")
NEGATIVE_POSES = (
    "hands_on_wheel",
    "one_hand_wheel",
    "hand_at_face",
    "drinking",
    "eating",
    "phone_in_cradle",
    "passenger",
    "empty_seat",
)
LIGHTING = ("day", "dusk", "ir_night")

BASE_W, BASE_H = 224, 168
"""Drawing canvas (pixels); the result is resized to the requested crop size."""

SKIN_BGR = (
    (60, 80, 110),
    (70, 100, 140),
    (90, 125, 170),
    (110, 150, 195),
    (135, 175, 220),
    (150, 190, 235),
    (45, 60, 85),
    (100, 135, 185),
)
HAIR_BGR = ((20, 20, 25), (30, 40, 60), (40, 70, 110), (90, 140, 190), (150, 150, 150))
PHONE_BGR = (
    (25, 25, 25),
    (40, 40, 45),
    (15, 15, 15),
    (200, 200, 205),
    (170, 175, 180),
    (60, 40, 150),
    (140, 90, 40),
    (40, 120, 40),
    (120, 110, 100),
)
CUP_BGR = ((235, 235, 235), (40, 40, 180), (60, 90, 130), (30, 140, 220), (200, 160, 60))
FOOD_BGR = ((60, 130, 190), (80, 170, 210), (40, 90, 150), (90, 200, 230))


@dataclass(frozen=True, slots=True)
class CropMeta:
    """What a rendered crop shows (the ground truth that goes with the pixels)."""

    phone: bool
    pose: str
    lighting: str
    seed: int
    index: int
    extras: dict[str, Any] = field(default_factory=dict)


def _rng(seed: int, index: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, index & 0xFFFFFFFF, salt])


def _col(c: tuple[int, ...] | np.ndarray) -> tuple[int, int, int]:
    return (int(c[0]), int(c[1]), int(c[2]))


def _jitter(rng: np.random.Generator, c: tuple[int, ...], amount: float) -> tuple[int, int, int]:
    v = np.asarray(c, np.float64) + rng.normal(0.0, amount, 3)
    return _col(np.clip(v, 0, 255))


def _pt(x: float, y: float) -> tuple[int, int]:
    return (round(x), round(y))


def _rot_rect(
    img: np.ndarray,
    cx: float,
    cy: float,
    w: float,
    h: float,
    angle_deg: float,
    colour: tuple[int, int, int],
    border: tuple[int, int, int] | None = None,
) -> None:
    box = cv2.boxPoints(((cx, cy), (w, h), angle_deg))
    poly = np.round(box).astype(np.int32)
    cv2.fillConvexPoly(img, poly, colour, cv2.LINE_AA)
    if border is not None:
        cv2.polylines(img, [poly], True, border, 1, cv2.LINE_AA)


@dataclass
class _Driver:
    """Geometry of one person in the canvas (pixels); ``face`` is +1 facing right, -1 left."""

    cx: float
    cy: float
    r: float
    face: int
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    cloth: tuple[int, int, int]

    @property
    def shoulder_near(self) -> tuple[float, float]:
        return self.cx + self.face * 0.2 * self.r, self.cy + 1.55 * self.r

    @property
    def ear(self) -> tuple[float, float]:
        return self.cx - self.face * 0.15 * self.r, self.cy + 0.05 * self.r

    @property
    def mouth(self) -> tuple[float, float]:
        return self.cx + self.face * 0.85 * self.r, self.cy + 0.45 * self.r


def _background(img: np.ndarray, rng: np.random.Generator, light: str) -> None:
    h, w = img.shape[:2]
    interior = _jitter(rng, (60, 60, 62) if rng.random() < 0.6 else (110, 125, 140), 18)
    img[:] = interior
    # The far-side window: sky, then buildings / trees / other cars.
    top = rng.uniform(0.0, 0.15) * h
    bottom = rng.uniform(0.45, 0.7) * h
    x0 = rng.uniform(-0.1, 0.2) * w
    x1 = rng.uniform(0.8, 1.1) * w
    sky_top = np.array(_jitter(rng, (235, 215, 190) if light == "day" else (150, 110, 90), 20))
    sky_bot = np.array(_jitter(rng, (250, 245, 240) if light == "day" else (110, 120, 160), 20))
    y0, y1 = max(0, int(top)), min(h, int(bottom))
    xa, xb = max(0, int(x0)), min(w, int(x1))
    if y1 > y0 and xb > xa:
        t = np.linspace(0.0, 1.0, y1 - y0)[:, None, None]
        img[y0:y1, xa:xb] = (sky_top * (1 - t) + sky_bot * t).astype(np.uint8)
        for _ in range(int(rng.integers(1, 6))):
            bw = rng.uniform(0.05, 0.3) * w
            bx = rng.uniform(xa, xb)
            by = rng.uniform(y0 + 0.2 * (y1 - y0), y1)
            c = _jitter(rng, (120, 130, 120), 50)
            if rng.random() < 0.5:
                cv2.rectangle(img, _pt(bx, by), _pt(bx + bw, y1), c, -1)
            else:
                cv2.ellipse(img, _pt(bx, by), _pt(bw / 2, bw / 3), 0, 0, 360, c, -1, cv2.LINE_AA)
    # B-pillar / seat belt line.
    px = rng.uniform(0.0, 1.0) * w
    cv2.line(
        img,
        _pt(px, 0),
        _pt(px + rng.uniform(-20, 20), h),
        _jitter(rng, (40, 40, 40), 10),
        int(rng.integers(3, 14)),
        cv2.LINE_AA,
    )


def _seat(img: np.ndarray, rng: np.random.Generator, d: _Driver, *, occupied: bool) -> None:
    seat = _jitter(rng, (35, 35, 38) if rng.random() < 0.6 else (60, 70, 130), 12)
    back_x = d.cx - d.face * 1.2 * d.r
    # Seat back and headrest, behind the driver.
    _rot_rect(img, back_x, d.cy + 2.6 * d.r, 1.5 * d.r, 4.0 * d.r, -d.face * 12, seat)
    hx = d.cx - d.face * (0.9 if occupied else 0.5) * d.r
    cv2.ellipse(
        img,
        _pt(hx, d.cy - 0.1 * d.r),
        _pt(0.55 * d.r, 0.75 * d.r),
        0,
        0,
        360,
        seat,
        -1,
        cv2.LINE_AA,
    )


def _wheel(img: np.ndarray, rng: np.random.Generator, d: _Driver) -> tuple[float, float, float]:
    """Steering wheel seen from the side: a tall narrow ellipse in front of the driver."""
    wx = d.cx + d.face * rng.uniform(1.6, 2.1) * d.r
    wy = d.cy + rng.uniform(2.0, 2.5) * d.r
    wr = rng.uniform(1.1, 1.4) * d.r
    c = _jitter(rng, (30, 30, 30), 8)
    cv2.ellipse(
        img,
        _pt(wx, wy),
        _pt(0.35 * wr, wr),
        d.face * rng.uniform(10, 30),
        0,
        360,
        c,
        max(2, round(0.22 * d.r)),
        cv2.LINE_AA,
    )
    # Dashboard below the wheel.
    cv2.rectangle(
        img,
        _pt(wx - d.face * 0.2 * d.r, wy + 0.6 * wr),
        _pt(wx + d.face * 6 * d.r, img.shape[0]),
        _jitter(rng, (45, 45, 48), 10),
        -1,
    )
    return wx, wy, wr


def _body(img: np.ndarray, rng: np.random.Generator, d: _Driver) -> None:
    # Torso, neck, head, hair, face details.
    _rot_rect(
        img,
        d.cx - d.face * 0.1 * d.r,
        d.cy + 3.0 * d.r,
        2.2 * d.r,
        3.4 * d.r,
        d.face * rng.uniform(0, 12),
        d.cloth,
    )
    cv2.ellipse(
        img,
        _pt(d.cx, d.cy + 2.9 * d.r),
        _pt(1.1 * d.r, 1.6 * d.r),
        0,
        180,
        360,
        d.cloth,
        -1,
        cv2.LINE_AA,
    )
    _rot_rect(img, d.cx, d.cy + 1.0 * d.r, 0.6 * d.r, 0.9 * d.r, 0, d.skin)
    cv2.ellipse(img, _pt(d.cx, d.cy), _pt(0.8 * d.r, d.r), 0, 0, 360, d.skin, -1, cv2.LINE_AA)
    # Nose on the facing side.
    nose = np.array(
        [
            _pt(d.cx + d.face * 0.75 * d.r, d.cy - 0.1 * d.r),
            _pt(d.cx + d.face * 0.98 * d.r, d.cy + 0.2 * d.r),
            _pt(d.cx + d.face * 0.7 * d.r, d.cy + 0.3 * d.r),
        ],
        np.int32,
    )
    cv2.fillConvexPoly(img, nose, d.skin, cv2.LINE_AA)
    # Hair (or a hat) on top and at the back.
    if rng.random() < 0.25:
        hat = _jitter(rng, (60, 60, 60), 60)
        cv2.ellipse(
            img,
            _pt(d.cx, d.cy - 0.35 * d.r),
            _pt(0.88 * d.r, 0.7 * d.r),
            0,
            180,
            360,
            hat,
            -1,
            cv2.LINE_AA,
        )
        cv2.line(
            img,
            _pt(d.cx, d.cy - 0.35 * d.r),
            _pt(d.cx + d.face * 1.35 * d.r, d.cy - 0.3 * d.r),
            hat,
            max(2, round(0.15 * d.r)),
            cv2.LINE_AA,
        )
    else:
        long = rng.random() < 0.35
        cv2.ellipse(
            img,
            _pt(d.cx - d.face * 0.1 * d.r, d.cy - 0.25 * d.r),
            _pt(0.85 * d.r, 0.8 * d.r),
            0,
            180 - 20 * d.face,
            360 - 20 * d.face,
            d.hair,
            -1,
            cv2.LINE_AA,
        )
        back = np.array(
            [
                _pt(d.cx - d.face * 0.85 * d.r, d.cy - 0.4 * d.r),
                _pt(d.cx - d.face * 0.2 * d.r, d.cy - 0.6 * d.r),
                _pt(d.cx - d.face * 0.3 * d.r, d.cy + (1.6 if long else 0.5) * d.r),
                _pt(d.cx - d.face * 0.85 * d.r, d.cy + (1.5 if long else 0.4) * d.r),
            ],
            np.int32,
        )
        cv2.fillConvexPoly(img, back, d.hair, cv2.LINE_AA)
    ex, ey = d.cx + d.face * 0.5 * d.r, d.cy - 0.15 * d.r
    cv2.circle(img, _pt(ex, ey), max(1, round(0.07 * d.r)), (20, 20, 20), -1, cv2.LINE_AA)
    if rng.random() < 0.3:  # glasses
        gc = _jitter(rng, (20, 20, 20), 20)
        cv2.ellipse(
            img,
            _pt(ex + d.face * 0.05 * d.r, ey),
            _pt(0.2 * d.r, 0.14 * d.r),
            0,
            0,
            360,
            gc,
            max(1, round(0.06 * d.r)),
            cv2.LINE_AA,
        )
        cv2.line(
            img,
            _pt(ex - d.face * 0.15 * d.r, ey),
            _pt(d.cx - d.face * 0.15 * d.r, ey),
            gc,
            max(1, round(0.05 * d.r)),
            cv2.LINE_AA,
        )
    # Ear.
    ex2, ey2 = d.ear
    cv2.ellipse(
        img,
        _pt(ex2, ey2),
        _pt(0.13 * d.r, 0.2 * d.r),
        0,
        0,
        360,
        _jitter(rng, d.skin, 6),
        -1,
        cv2.LINE_AA,
    )


def _arm(
    img: np.ndarray, d: _Driver, hand: tuple[float, float], *, near: bool, elbow_drop: float = 1.0
) -> None:
    sx, sy = d.shoulder_near
    if not near:
        sx -= d.face * 0.5 * d.r
    hx, hy = hand
    ex = (sx + hx) / 2 - d.face * 0.3 * d.r
    ey = max(sy, hy) + elbow_drop * d.r
    th = max(2, round(0.42 * d.r))
    cloth = d.cloth if near else _col(np.array(d.cloth) * 0.75)
    cv2.line(img, _pt(sx, sy), _pt(ex, ey), cloth, th, cv2.LINE_AA)
    cv2.line(img, _pt(ex, ey), _pt(hx, hy), cloth, th, cv2.LINE_AA)
    skin = d.skin if near else _col(np.array(d.skin) * 0.85)
    cv2.line(
        img,
        _pt((ex + 2 * hx) / 3, (ey + 2 * hy) / 3),
        _pt(hx, hy),
        skin,
        max(2, round(0.34 * d.r)),
        cv2.LINE_AA,
    )


def _hand(img: np.ndarray, d: _Driver, x: float, y: float, *, near: bool = True) -> None:
    skin = d.skin if near else _col(np.array(d.skin) * 0.85)
    cv2.ellipse(img, _pt(x, y), _pt(0.3 * d.r, 0.24 * d.r), 30, 0, 360, skin, -1, cv2.LINE_AA)


def _phone(
    img: np.ndarray,
    rng: np.random.Generator,
    d: _Driver,
    cx: float,
    cy: float,
    angle: float,
    *,
    screen: bool,
) -> None:
    colour = _jitter(rng, PHONE_BGR[int(rng.integers(len(PHONE_BGR)))], 8)
    length = rng.uniform(1.05, 1.45) * d.r
    width = length * rng.uniform(0.45, 0.55)
    edge = _col(np.clip(np.array(colour) * 0.5 + 10, 0, 255))
    _rot_rect(img, cx, cy, width, length, angle, colour, edge)
    if screen:
        glow = _jitter(rng, (235, 210, 170) if rng.random() < 0.6 else (240, 240, 240), 15)
        _rot_rect(img, cx, cy, width * 0.8, length * 0.85, angle, glow)
    elif rng.random() < 0.5:  # camera bump on the back
        a = math.radians(angle)
        bx = cx + math.sin(a) * 0.3 * length
        by = cy - math.cos(a) * 0.3 * length
        cv2.circle(img, _pt(bx, by), max(1, round(0.08 * length)), (10, 10, 10), -1, cv2.LINE_AA)


def _draw_person(
    img: np.ndarray, rng: np.random.Generator, d: _Driver, pose: str, *, phone_drawn: bool = True
) -> None:
    # A held phone left undrawn goes onto a scratch canvas: the same random draws, no pixels.
    held = img if phone_drawn else np.empty_like(img)
    wx, wy, wr = _wheel(img, rng, d)
    wheel_top = (wx - d.face * 0.15 * wr, wy - 0.85 * wr)
    wheel_front = (wx + d.face * 0.2 * wr, wy - 0.3 * wr)
    # Far arm first (behind the body), then the body, then the near arm.
    far_hand = (wheel_top[0] + d.face * 0.1 * d.r, wheel_top[1] + 0.2 * d.r)
    if pose == "phone_ear_right" or pose == "phone_ear_left":
        # The hand nearest the camera or the far one holds the phone at the ear.
        near_holds = pose == "phone_ear_left"
    else:
        near_holds = True
    if pose in ("phone_ear_left", "phone_ear_right") and not near_holds:
        _body(img, rng, d)
        ex, ey = d.ear
        _phone(
            held,
            rng,
            d,
            ex + d.face * 0.05 * d.r,
            ey - 0.05 * d.r,
            d.face * rng.uniform(-35, -5),
            screen=False,
        )
        _hand(img, d, ex + d.face * 0.1 * d.r, ey + 0.4 * d.r, near=True)
        near = (wheel_front[0], wheel_front[1])
        _arm(img, d, near, near=True, elbow_drop=0.3)
        _hand(img, d, *near)
        return
    _arm(img, d, far_hand, near=False, elbow_drop=0.6)
    _hand(img, d, *far_hand, near=False)
    _body(img, rng, d)
    ex, ey = d.ear
    mx, my = d.mouth
    if pose == "phone_ear_left":
        hand = (ex + d.face * 0.05 * d.r, ey + 0.35 * d.r)
        _arm(img, d, hand, near=True, elbow_drop=1.6)
        _phone(
            held,
            rng,
            d,
            ex + d.face * 0.1 * d.r,
            ey - 0.1 * d.r,
            d.face * rng.uniform(-35, -5),
            screen=False,
        )
        _hand(img, d, *hand)
    elif pose == "phone_low":
        hand = (d.cx + d.face * rng.uniform(0.9, 1.5) * d.r, d.cy + rng.uniform(2.0, 2.8) * d.r)
        _arm(img, d, hand, near=True, elbow_drop=0.3)
        _phone(
            held,
            rng,
            d,
            hand[0] + d.face * 0.1 * d.r,
            hand[1] - 0.35 * d.r,
            d.face * rng.uniform(20, 70),
            screen=rng.random() < 0.6,
        )
        _hand(img, d, *hand)
    elif pose == "phone_over_wheel":
        hand = (wheel_top[0] - d.face * 0.2 * d.r, wheel_top[1] - 0.1 * d.r)
        _arm(img, d, hand, near=True, elbow_drop=0.5)
        _phone(
            held,
            rng,
            d,
            hand[0],
            hand[1] - 0.45 * d.r,
            d.face * rng.uniform(-15, 15),
            screen=rng.random() < 0.5,
        )
        _hand(img, d, *hand)
    elif pose == "hands_on_wheel" or pose == "phone_in_cradle":
        _arm(img, d, wheel_front, near=True, elbow_drop=0.3)
        _hand(img, d, *wheel_front)
        if pose == "phone_in_cradle":
            px = wx + d.face * rng.uniform(0.8, 1.6) * d.r
            py = wy - rng.uniform(0.4, 1.0) * wr
            cv2.line(
                img,
                _pt(px, py),
                _pt(px + d.face * 0.3 * d.r, py + 0.9 * d.r),
                (30, 30, 30),
                max(1, round(0.12 * d.r)),
                cv2.LINE_AA,
            )
            _phone(
                img,
                rng,
                d,
                px,
                py,
                90 + rng.uniform(-10, 10) if rng.random() < 0.5 else 0,
                screen=rng.random() < 0.7,
            )
    elif pose == "one_hand_wheel":
        hand = (d.cx + d.face * 0.6 * d.r, d.cy + rng.uniform(2.8, 3.3) * d.r)
        _arm(img, d, hand, near=True, elbow_drop=0.2)
        _hand(img, d, *hand)
    elif pose == "hand_at_face":
        where = rng.integers(3)
        hand = (
            (ex + d.face * 0.1 * d.r, ey + 0.3 * d.r)
            if where == 0
            else (mx - d.face * 0.1 * d.r, my + 0.35 * d.r)
            if where == 1
            else (d.cx, d.cy - 0.7 * d.r)
        )
        _arm(img, d, hand, near=True, elbow_drop=1.5)
        _hand(img, d, *hand)
    elif pose == "drinking":
        hand = (mx + d.face * 0.3 * d.r, my + 0.3 * d.r)
        _arm(img, d, hand, near=True, elbow_drop=1.2)
        cup = _jitter(rng, CUP_BGR[int(rng.integers(len(CUP_BGR)))], 10)
        cw = rng.uniform(0.5, 0.7) * d.r
        _rot_rect(
            img,
            hand[0] + d.face * 0.2 * d.r,
            hand[1] - 0.2 * d.r,
            cw,
            1.1 * cw * 1.4,
            -d.face * rng.uniform(20, 50),
            cup,
            _col(np.array(cup) * 0.6),
        )
        _hand(img, d, *hand)
    elif pose == "eating":
        hand = (mx + d.face * 0.25 * d.r, my + 0.2 * d.r)
        _arm(img, d, hand, near=True, elbow_drop=1.2)
        food = _jitter(rng, FOOD_BGR[int(rng.integers(len(FOOD_BGR)))], 12)
        cv2.ellipse(
            img,
            _pt(hand[0] + d.face * 0.15 * d.r, hand[1] - 0.25 * d.r),
            _pt(0.45 * d.r, 0.3 * d.r),
            rng.uniform(0, 180),
            0,
            360,
            food,
            -1,
            cv2.LINE_AA,
        )
        _hand(img, d, *hand)
    else:
        raise ValueError(f"unknown pose {pose!r}")


def _window_frame(img: np.ndarray, rng: np.random.Generator) -> None:
    """Car body around the window: a polygon mask; the outside is paint, the edge a seal."""
    h, w = img.shape[:2]
    if rng.random() < 0.25:
        return  # crop entirely inside the glass
    m = rng.uniform(0.02, 0.12, 4) * np.array([w, h, w, h])
    slant = rng.uniform(0.0, 0.3) * w * (1 if rng.random() < 0.5 else -1)
    poly = np.array(
        [
            _pt(m[0] + max(slant, 0), m[1]),
            _pt(w - m[2] + min(slant, 0), m[1]),
            _pt(w - m[2], h - m[3]),
            _pt(m[0], h - m[3]),
        ],
        np.int32,
    )
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, poly, 255, cv2.LINE_AA)
    paint = np.array(_jitter(rng, tuple(int(x) for x in rng.integers(20, 230, 3)), 5), np.float32)
    a = (mask.astype(np.float32) / 255.0)[:, :, None]
    img[:] = (img * a + paint * (1 - a)).astype(np.uint8)
    cv2.polylines(img, [poly], True, (15, 15, 15), max(1, round(0.02 * h)), cv2.LINE_AA)


def _lighting(img: np.ndarray, rng: np.random.Generator, light: str) -> np.ndarray:
    f = img.astype(np.float32)
    if light == "dusk":
        f *= rng.uniform(0.35, 0.6)
        f[:, :, 0] *= 1.15
        f[:, :, 2] *= 0.9
    elif light == "ir_night":
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
        # Skin and fabric reflect near-IR: lift mid-tones; the far scene goes dark.
        grey = 255.0 * np.power(grey / 255.0, rng.uniform(0.6, 0.9))
        grey *= rng.uniform(0.7, 1.1)
        h, w = grey.shape
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
        vign = np.exp(-(((xx - cx) / w) ** 2 + ((yy - cy) / h) ** 2) * rng.uniform(0.5, 2.0))
        grey *= vign
        f = np.repeat(grey[:, :, None], 3, axis=2)
    else:
        f *= rng.uniform(0.75, 1.25)
        f += rng.uniform(-25, 25)
        f *= rng.uniform(0.85, 1.15, 3)[None, None, :]
    return np.clip(f, 0, 255).astype(np.uint8)


def _glass(img: np.ndarray, rng: np.random.Generator, light: str) -> None:
    """Glare and reflections on the window glass."""
    h, w = img.shape[:2]
    if rng.random() < 0.35:
        overlay = np.zeros_like(img)
        x0 = rng.uniform(-0.3, 1.0) * w
        width = rng.uniform(0.1, 0.5) * w
        poly = np.array(
            [_pt(x0, 0), _pt(x0 + width, 0), _pt(x0 + width - 0.5 * w, h), _pt(x0 - 0.5 * w, h)],
            np.int32,
        )
        cv2.fillConvexPoly(overlay, poly, (255, 255, 255))
        overlay = cv2.GaussianBlur(overlay, (0, 0), rng.uniform(3, 12))
        alpha = rng.uniform(0.15, 0.55 if light == "day" else 0.3)
        cv2.addWeighted(img, 1.0, overlay, alpha, 0.0, dst=img)
    if rng.random() < 0.3:
        small = rng.integers(0, 255, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
        refl: np.ndarray = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        refl = cv2.GaussianBlur(refl, (0, 0), 4)
        cv2.addWeighted(img, 1.0, refl, rng.uniform(0.05, 0.25), 0.0, dst=img)
    if rng.random() < 0.15 and light != "day":  # a headlight flare
        c = _pt(rng.uniform(0, w), rng.uniform(0, h))
        flare = np.zeros_like(img)
        cv2.circle(flare, c, round(rng.uniform(0.05, 0.2) * w), (255, 255, 255), -1)
        flare = cv2.GaussianBlur(flare, (0, 0), 10)
        cv2.add(img, flare, dst=img)


def _occlude(img: np.ndarray, rng: np.random.Generator) -> None:
    h, w = img.shape[:2]
    if rng.random() < 0.2:  # A-pillar at one side
        pw = rng.uniform(0.05, 0.2) * w
        left = rng.random() < 0.5
        x0 = 0.0 if left else w - pw
        slant = rng.uniform(-0.1, 0.1) * w
        poly = np.array(
            [_pt(x0, 0), _pt(x0 + pw, 0), _pt(x0 + pw + slant, h), _pt(x0 + slant, h)], np.int32
        )
        cv2.fillConvexPoly(img, poly, _jitter(rng, (30, 30, 30), 10), cv2.LINE_AA)
    if rng.random() < 0.12:  # wing mirror in a lower corner
        cx = rng.choice([0.05, 0.95]) * w
        cv2.ellipse(
            img,
            _pt(cx, rng.uniform(0.75, 0.95) * h),
            _pt(0.15 * w, 0.12 * h),
            0,
            0,
            360,
            _jitter(rng, (50, 50, 50), 30),
            -1,
            cv2.LINE_AA,
        )


def _degrade(img: np.ndarray, rng: np.random.Generator, light: str) -> np.ndarray:
    h, w = img.shape[:2]
    # Scale, angle and position of the ROI around the driver.
    ang = rng.uniform(-10, 10)
    scale = rng.uniform(0.8, 1.2)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), ang, scale)
    m[:, 2] += rng.uniform(-0.08, 0.08, 2) * np.array([w, h])
    img = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.3:  # motion blur (the car still creeping forward)
        k = int(rng.integers(3, 11))
        kern = np.zeros((k, k), np.float32)
        kern[k // 2, :] = 1.0 / k
        img = cv2.filter2D(img, -1, kern)
    if rng.random() < 0.3:  # defocus
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.6, 2.0))
    sigma = rng.uniform(1.0, 6.0) if light == "day" else rng.uniform(4.0, 14.0)
    noise = rng.normal(0.0, sigma, img.shape)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return img


def _jpeg(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    q = int(rng.integers(30, 96))
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
        return img
    out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return img if out is None else np.asarray(out, np.uint8)


def pose_for(seed: int, index: int, phone: bool | None = None) -> tuple[bool, str]:
    """(phone, pose) for item ``index``; half the items hold a phone unless ``phone`` says."""
    rng = _rng(seed, index, 1)
    if phone is None:
        phone = bool(rng.random() < 0.5)
    poses = POSITIVE_POSES if phone else NEGATIVE_POSES
    return phone, poses[int(rng.integers(len(poses)))]


def render_scene(
    rng: np.random.Generator,
    pose: str,
    light: str,
    *,
    size: tuple[int, int] = (BASE_W, BASE_H),
    face: int | None = None,
    frame: bool = True,
    phone_drawn: bool = True,
) -> np.ndarray:
    """Draw one clean window scene (no camera degradation) at ``size`` (w, h).

    ``phone_drawn=False`` leaves out a held phone (not a cradled one) but makes the same random
    draws, so everything else in the scene is pixel for pixel the same.
    """
    w, h = size
    img: np.ndarray = np.zeros((BASE_H, BASE_W, 3), np.uint8)
    _background(img, rng, light)
    f = face if face is not None else (1 if rng.random() < 0.5 else -1)
    r = rng.uniform(0.14, 0.2) * BASE_H
    d = _Driver(
        cx=BASE_W / 2 + rng.uniform(-0.15, 0.1) * BASE_W * f - f * 0.1 * BASE_W,
        cy=rng.uniform(0.25, 0.4) * BASE_H,
        r=r,
        face=f,
        skin=_jitter(rng, SKIN_BGR[int(rng.integers(len(SKIN_BGR)))], 6),
        hair=_jitter(rng, HAIR_BGR[int(rng.integers(len(HAIR_BGR)))], 8),
        cloth=_jitter(rng, tuple(int(x) for x in rng.integers(15, 240, 3)), 5),
    )
    if pose == "empty_seat":
        _seat(img, rng, d, occupied=False)
        _wheel(img, rng, d)
    elif pose == "passenger":
        # Someone in the far seat (smaller, behind); the driver's seat is empty or hands on wheel.
        p = _Driver(
            cx=d.cx - f * 1.8 * r,
            cy=d.cy + 0.1 * r,
            r=0.8 * r,
            face=f,
            skin=_jitter(rng, SKIN_BGR[int(rng.integers(len(SKIN_BGR)))], 6),
            hair=d.hair,
            cloth=_jitter(rng, (100, 100, 100), 60),
        )
        _body(img, rng, p)
        _seat(img, rng, d, occupied=True)
        _draw_person(img, rng, d, "hands_on_wheel")
    else:
        _seat(img, rng, d, occupied=True)
        _draw_person(img, rng, d, pose, phone_drawn=phone_drawn)
    _glass(img, rng, light)
    if frame:
        _window_frame(img, rng)
    img = _lighting(img, rng, light)
    if (w, h) != (BASE_W, BASE_H):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    return img


MIN_PHONE_PIXELS = 24
"""A phone crop must have at least this many pixels that the phone changes ..."""
MIN_PHONE_CONTRAST = 24
"""... by at least this much (0-255, in any channel) against the same crop without the phone."""
REDRAWS = 8


def _camera_view(
    seed: int,
    index: int,
    attempt: int,
    pose: str,
    size: tuple[int, int] | None,
    *,
    phone_drawn: bool = True,
) -> tuple[np.ndarray, str]:
    rng = _rng(seed, index, 2 if attempt == 0 else 100 + attempt)
    light = LIGHTING[int(rng.choice(3, p=[0.6, 0.2, 0.2]))]
    img = render_scene(rng, pose, light, phone_drawn=phone_drawn)
    _occlude(img, rng)
    img = _degrade(img, rng, light)
    if size is None:
        out_w = int(rng.integers(64, 225))
        size = (out_w, max(32, round(out_w * rng.uniform(0.6, 0.95))))
    img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return _jpeg(img, rng), light


def phone_pixels(with_phone: np.ndarray, without: np.ndarray) -> int:
    """How many pixels the phone visibly changes (``MIN_PHONE_CONTRAST`` or more)."""
    diff = cv2.absdiff(with_phone, without).max(axis=2)
    return int(np.count_nonzero(diff >= MIN_PHONE_CONTRAST))


def render_crop(
    seed: int, index: int, *, phone: bool | None = None, size: tuple[int, int] | None = None
) -> tuple[np.ndarray, CropMeta]:
    """One labelled, camera-degraded driver-window crop (BGR uint8) and what it shows.

    ``size`` (w, h) fixes the output size; by default it varies like real ROIs (64..224 px).

    A phone crop always shows its phone: the crop is rendered again without it (the same
    random draws), and where fewer than ``MIN_PHONE_PIXELS`` pixels differ visibly (glare, a
    pillar, the dark of an IR night, a tiny crop) the scene conditions are drawn afresh, up to
    ``REDRAWS`` times, keeping the pose. A hidden phone is not evidence and no model can see it;
    labelled "phone" it only teaches guessing from posture. ``extras`` records ``redraws`` and
    ``phone_pixels``; were no draw to show the phone, the last would be kept, its
    ``phone_pixels`` below the floor (of the 18,000 phone crops of training seed 1000, 470
    needed one redraw or two, none more).
    """
    is_phone, pose = pose_for(seed, index, phone)
    extras: dict[str, Any] = {}
    for attempt in range(REDRAWS):
        img, light = _camera_view(seed, index, attempt, pose, size)
        if not is_phone:
            break
        without, _ = _camera_view(seed, index, attempt, pose, size, phone_drawn=False)
        extras = {"redraws": attempt, "phone_pixels": phone_pixels(img, without)}
        if extras["phone_pixels"] >= MIN_PHONE_PIXELS:
            break
    return img, CropMeta(
        phone=is_phone, pose=pose, lighting=light, seed=seed, index=index, extras=extras
    )
