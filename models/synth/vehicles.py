"""Vehicle pictures for the synthetic scenes: a side profile and an end face (rear or front).

Each picture is a sprite (BGR and an alpha mask) drawn once at ``ppm`` pixels per metre; the
scenes paste it (a side view) or warp it onto the vehicle's side plane (a dash camera). The
drawing has what an object detector keys on: a body with shading, glass, wheels with tyres
and rims, lights, bumpers, and a shadow on the road. The driver's side window holds a
driver picture from ``render.render_scene`` (so the phone classifier can see the phone).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

Rect = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class Kind:
    """The shape of one kind of vehicle, in metres and fractions of its length."""

    name: str
    length_m: float
    width_m: float
    height_m: float
    belt: float
    """Height of the window sill, as a share of ``height_m``."""
    cabin: tuple[float, float, float, float]
    """Greenhouse along the length: rear base, rear top, front top, front base (shares)."""
    nose_m: float
    """Height of the front end (bonnet) above the ground."""
    tail_m: float
    """Height of the rear end (boot) above the ground."""


KINDS = {
    "hatch": Kind("hatch", 4.0, 1.75, 1.48, 0.60, (0.04, 0.10, 0.60, 0.74), 0.88, 0.98),
    "saloon": Kind("saloon", 4.7, 1.80, 1.45, 0.60, (0.20, 0.30, 0.60, 0.74), 0.86, 0.92),
    "suv": Kind("suv", 4.8, 1.90, 1.75, 0.58, (0.05, 0.10, 0.64, 0.76), 1.10, 1.15),
    "van": Kind("van", 5.0, 1.95, 1.95, 0.52, (0.02, 0.04, 0.70, 0.82), 1.05, 1.85),
}
WHEEL_R_M = 0.33
DRIVER_WINDOW = (0.50, 0.70)
"""The driver's (front side) window along the length, as shares of the cabin's front half."""


def _grad_fill(
    img: np.ndarray,
    alpha: np.ndarray,
    poly: np.ndarray,
    top: tuple[float, float, float],
    bottom: tuple[float, float, float],
) -> None:
    """Fill ``poly`` with a vertical gradient from ``top`` to ``bottom`` (BGR)."""
    mask = np.zeros(alpha.shape, np.uint8)
    cv2.fillPoly(mask, [poly], 255, cv2.LINE_AA)
    y0, y1 = int(poly[:, 1].min()), int(poly[:, 1].max()) + 1
    y0, y1 = max(0, y0), min(img.shape[0], y1)
    if y1 <= y0:
        return
    k = np.linspace(0.0, 1.0, y1 - y0, dtype=np.float32)[:, None, None]
    col = np.asarray(top, np.float32) * (1 - k) + np.asarray(bottom, np.float32) * k
    band = img[y0:y1].astype(np.float32)
    a = mask[y0:y1, :, None].astype(np.float32) / 255.0
    img[y0:y1] = (band * (1 - a) + col * a).astype(np.uint8)
    np.maximum(alpha, mask, out=alpha)


def _scaled(c: tuple[int, int, int], k: float, add: float = 0.0) -> tuple[float, float, float]:
    return (
        float(min(255.0, c[0] * k + add)),
        float(min(255.0, c[1] * k + add)),
        float(min(255.0, c[2] * k + add)),
    )


def _glass(img: np.ndarray, poly: np.ndarray) -> None:
    """Tinted glass with a lighter band of sky reflected at the top."""
    dummy = np.zeros(img.shape[:2], np.uint8)
    _grad_fill(img, dummy, poly, (120, 105, 95), (45, 40, 38))


def _wheel(img: np.ndarray, alpha: np.ndarray, cx: float, cy: float, r: float) -> None:
    c = (round(cx), round(cy))
    cv2.circle(img, c, round(r * 1.12), (25, 25, 25), -1, cv2.LINE_AA)  # arch shadow
    cv2.circle(alpha, c, round(r * 1.12), 255, -1, cv2.LINE_AA)
    cv2.circle(img, c, round(r), (18, 18, 20), -1, cv2.LINE_AA)  # tyre
    cv2.circle(img, c, round(r * 0.62), (165, 168, 172), -1, cv2.LINE_AA)  # rim
    cv2.circle(img, c, round(r * 0.55), (120, 122, 126), -1, cv2.LINE_AA)
    for k in range(5):  # spokes
        a = k * 2 * np.pi / 5
        p = (round(cx + np.cos(a) * r * 0.55), round(cy + np.sin(a) * r * 0.55))
        cv2.line(img, c, p, (190, 192, 196), max(1, round(r * 0.12)), cv2.LINE_AA)
    cv2.circle(img, c, max(1, round(r * 0.15)), (70, 70, 72), -1, cv2.LINE_AA)


@dataclass(frozen=True, slots=True)
class Sprite:
    bgr: np.ndarray
    alpha: np.ndarray
    """0..255; 255 where the vehicle is opaque."""
    window: Rect
    """The driver's window in sprite pixels (x0, y0, x1, y1)."""


def side_sprite(kind: Kind, colour: tuple[int, int, int], driver: np.ndarray, ppm: float) -> Sprite:
    """The vehicle's side, front to the right, ground at the bottom edge.

    ``driver`` (BGR, any size) is resized into the front side window.
    """
    length, height = kind.length_m * ppm, kind.height_m * ppm
    w, h = round(length) + 2, round(height) + 2
    img = np.zeros((h, w, 3), np.uint8)
    alpha = np.zeros((h, w), np.uint8)
    g = h - 1.0  # ground

    def p(a: float, z_m: float) -> tuple[int, int]:
        return round(1 + a * length), round(g - z_m * ppm)

    belt_m = kind.belt * kind.height_m
    # Soft shadow on the road.
    shadow = np.zeros_like(alpha)
    cv2.ellipse(shadow, p(0.5, 0.02), (round(0.52 * length), round(0.05 * ppm)), 0, 0, 360, 140, -1)
    img[shadow > 0] = (20, 20, 22)
    alpha[:] = shadow
    rb, rt, ft, fb = kind.cabin
    lower = np.array(
        [
            p(0.0, 0.30),
            p(0.0, kind.tail_m - 0.1),
            p(0.03, kind.tail_m),
            p(rb, belt_m),
            p(fb, belt_m),
            p(0.97, kind.nose_m),
            p(1.0, kind.nose_m - 0.12),
            p(1.0, 0.30),
            p(0.97, 0.18),
            p(0.03, 0.18),
        ],
        np.int32,
    )
    if kind.name == "van":
        lower[1] = p(0.0, kind.tail_m)
        lower[2] = p(0.0, kind.tail_m)
    body_top = _scaled(colour, 1.25, 35)
    body_bot = _scaled(colour, 0.55)
    _grad_fill(img, alpha, lower, body_top, body_bot)
    # A light reflected along the shoulder, the sill in shadow.
    cv2.line(
        img,
        p(0.03, belt_m - 0.1),
        p(0.97, kind.nose_m - 0.06),
        _scaled(colour, 1.3, 60),
        max(1, round(0.04 * ppm)),
        cv2.LINE_AA,
    )
    cv2.line(img, p(0.05, 0.26), p(0.95, 0.26), _scaled(colour, 0.35), max(1, round(0.07 * ppm)))
    cabin = np.array(
        [p(rb, belt_m), p(rt, kind.height_m), p(ft, kind.height_m), p(fb, belt_m)], np.int32
    )
    _grad_fill(img, alpha, cabin, _scaled(colour, 1.1, 20), _scaled(colour, 0.8))
    # Glass: rear side window and the driver's window, split by the B pillar.
    inset = 0.06 * ppm
    top_m = kind.height_m - 0.07
    pillar = rt + (ft - rt) * 0.5
    rear_glass = np.array(
        [
            p(rb + 0.03, belt_m + 0.04),
            p(rt + 0.02, top_m),
            p(pillar - 0.015, top_m),
            p(pillar - 0.015, belt_m + 0.04),
        ],
        np.int32,
    )
    _glass(img, rear_glass)
    wx0, wx1 = p(pillar + 0.015, 0)[0], p(ft - 0.01, 0)[0]
    wy0, wy1 = p(0, top_m)[1], p(0, belt_m + 0.04)[1]
    win = cv2.resize(driver, (max(1, wx1 - wx0), max(1, wy1 - wy0)), interpolation=cv2.INTER_AREA)
    mask = np.zeros((h, w), np.uint8)
    front_glass = np.array(
        [(wx0, wy0), (wx1, wy0), p(fb - 0.015, belt_m + 0.04), (wx0, wy1)], np.int32
    )
    cv2.fillPoly(mask, [front_glass], 255, cv2.LINE_AA)
    region = img[wy0:wy1, wx0:wx1]
    m = mask[wy0:wy1, wx0:wx1, None].astype(np.float32) / 255.0
    tinted = win.astype(np.float32) * 0.85 + 12.0
    region[:] = (region * (1 - m) + tinted[: region.shape[0], : region.shape[1]] * m).astype(
        np.uint8
    )
    cv2.polylines(img, [front_glass, rear_glass], True, (25, 25, 25), max(1, round(inset / 3)))
    # Door lines, handles, mirror.
    dark = (int(colour[0] * 0.35), int(colour[1] * 0.35), int(colour[2] * 0.35))
    t = max(1, round(0.012 * ppm))
    for a in (pillar, fb - 0.005, rb + 0.02):
        cv2.line(img, p(a, belt_m), p(a, 0.25), dark, t, cv2.LINE_AA)
    for a in (pillar - 0.09, fb - 0.1):
        cv2.line(img, p(a, belt_m - 0.12), p(a + 0.05, belt_m - 0.12), dark, 2 * t, cv2.LINE_AA)
    cv2.ellipse(
        img,
        p(fb + 0.01, belt_m + 0.08),
        (round(0.09 * ppm), round(0.06 * ppm)),
        0,
        0,
        360,
        (30, 30, 30),
        -1,
        cv2.LINE_AA,
    )
    # Bumpers, lights, the sill in shadow.
    cv2.line(img, p(0.04, 0.22), p(0.96, 0.22), (30, 30, 32), max(2, round(0.06 * ppm)))
    cv2.rectangle(img, p(0.0, 0.45), p(0.05, 0.25), (40, 40, 45), -1)
    cv2.rectangle(img, p(0.95, 0.45), p(1.0, 0.25), (40, 40, 45), -1)
    cv2.ellipse(
        img,
        p(0.985, kind.nose_m - 0.2),
        (round(0.07 * ppm), round(0.05 * ppm)),
        0,
        0,
        360,
        (200, 235, 245),
        -1,
        cv2.LINE_AA,
    )
    cv2.rectangle(img, p(0.0, kind.tail_m - 0.12), p(0.02, kind.tail_m - 0.35), (30, 30, 200), -1)
    r = WHEEL_R_M * ppm
    for a in (0.17, 0.8):
        _wheel(img, alpha, 1 + a * length, g - r, r)
    return Sprite(img, alpha, (wx0, wy0, wx1, wy1))


def end_sprite(
    kind: Kind,
    colour: tuple[int, int, int],
    ppm: float,
    *,
    is_front: bool,
    driver_on_left: bool,
    has_phone: bool,
    skin: tuple[int, int, int],
) -> Sprite:
    """The vehicle's rear (``is_front=False``) or front as the camera faces it.

    ``driver_on_left``: the driver sits on the left of the picture. A head (and, with
    ``has_phone``, a hand holding a phone at the ear) shows through the glass.
    """
    width, height = kind.width_m * ppm, kind.height_m * ppm
    w, h = round(width) + 2, round(height) + 2
    img = np.zeros((h, w, 3), np.uint8)
    alpha = np.zeros((h, w), np.uint8)
    g = h - 1.0

    def p(u: float, z_m: float) -> tuple[int, int]:
        return round(1 + u * width), round(g - z_m * ppm)

    belt_m = kind.belt * kind.height_m
    end_m = min(kind.nose_m if is_front else kind.tail_m, belt_m)
    r = WHEEL_R_M * ppm
    under = np.array([p(0.02, 0.0), p(0.98, 0.0), p(0.98, 0.25), p(0.02, 0.25)], np.int32)
    cv2.fillConvexPoly(img, under, (22, 22, 24))  # the shadow under the car
    cv2.fillConvexPoly(alpha, under, 255)
    for u in (0.1, 0.9):  # tyres under the body
        cv2.rectangle(img, p(u - 0.07, 0.0), p(u + 0.07, 0.45), (18, 18, 20), -1)
        cv2.rectangle(alpha, p(u - 0.07, 0.0), p(u + 0.07, 0.45), 255, -1)
    top_end = belt_m
    lower = np.array(
        [
            p(0.05, 0.2),
            p(0.04, top_end - 0.08),
            p(0.08, top_end),
            p(0.92, top_end),
            p(0.96, top_end - 0.08),
            p(0.95, 0.2),
            p(0.92, 0.12),
            p(0.08, 0.12),
        ],
        np.int32,
    )
    _grad_fill(img, alpha, lower, _scaled(colour, 1.2, 30), _scaled(colour, 0.5))
    cabin = np.array(
        [
            p(0.08, top_end),
            p(0.15, kind.height_m - 0.04),
            p(0.2, kind.height_m),
            p(0.8, kind.height_m),
            p(0.85, kind.height_m - 0.04),
            p(0.92, top_end),
        ],
        np.int32,
    )
    _grad_fill(img, alpha, cabin, _scaled(colour, 1.1, 20), _scaled(colour, 0.8))
    # Rounded flanks: the body darkens towards its sides.
    prof = 1.0 - 0.35 * np.abs(np.linspace(-1.0, 1.0, w, dtype=np.float32)) ** 3
    img[:] = (img * prof[None, :, None]).astype(np.uint8)
    for u0, u1 in ((0.0, 0.09), (0.91, 1.0)):  # wing mirrors, the widest point
        mirror = np.array(
            [
                p(u0, top_end + 0.02),
                p(u1, top_end + 0.02),
                p(u1, top_end + 0.16),
                p(u0, top_end + 0.14),
            ],
            np.int32,
        )
        cv2.fillConvexPoly(img, mirror, _scaled(colour, 0.6), cv2.LINE_AA)
        cv2.fillConvexPoly(alpha, mirror, 255, cv2.LINE_AA)
    glass_top = kind.height_m - 0.06
    glass_bot = top_end + (0.05 if is_front else 0.1)
    glass = np.array(
        [p(0.12, glass_bot), p(0.2, glass_top), p(0.8, glass_top), p(0.88, glass_bot)], np.int32
    )
    _glass(img, glass)
    # The driver's head (and a phone) through the glass.
    hu = 0.3 if driver_on_left else 0.7
    hr = 0.11 * ppm
    head_c = p(hu, glass_bot + 0.28)
    cv2.ellipse(
        img,
        head_c,
        (round(hr * 0.85), round(hr)),
        0,
        0,
        360,
        _darker(skin, is_front),
        -1,
        cv2.LINE_AA,
    )
    cv2.ellipse(
        img,
        (head_c[0], round(head_c[1] + 2.2 * hr)),
        (round(2.2 * hr), round(hr)),
        0,
        180,
        360,
        (40, 40, 45),
        -1,
        cv2.LINE_AA,
    )
    if has_phone:
        side = -1 if driver_on_left else 1
        px = head_c[0] + side * round(hr * 1.05)
        cv2.rectangle(
            img,
            (px - round(hr * 0.25), head_c[1] - round(hr * 0.6)),
            (px + round(hr * 0.25), head_c[1] + round(hr * 0.5)),
            (20, 20, 20),
            -1,
        )
        cv2.ellipse(
            img,
            (px, head_c[1] + round(hr * 0.6)),
            (round(hr * 0.3), round(hr * 0.25)),
            0,
            0,
            360,
            _darker(skin, is_front),
            -1,
            cv2.LINE_AA,
        )
    if is_front:
        cv2.rectangle(img, p(0.3, end_m - 0.25), p(0.7, end_m - 0.5), (35, 35, 38), -1)  # grille
        for u0, u1 in ((0.08, 0.27), (0.73, 0.92)):
            cv2.rectangle(img, p(u0, end_m - 0.12), p(u1, end_m - 0.3), (215, 240, 250), -1)
    else:
        # Wide, low tail lights joined by a dark trim strip across the boot.
        cv2.rectangle(img, p(0.2, end_m - 0.1), p(0.8, end_m - 0.2), _scaled(colour, 0.4), -1)
        for u0, u1 in ((0.06, 0.26), (0.74, 0.94)):
            cv2.rectangle(img, p(u0, end_m - 0.08), p(u1, end_m - 0.22), (40, 40, 170), -1)
            cv2.rectangle(
                img, p(u0 + 0.02, end_m - 0.12), p(u1 - 0.02, end_m - 0.18), (70, 80, 215), -1
            )
    cv2.rectangle(
        img, p(0.38, 0.52), p(0.62, 0.38), (225, 230, 232) if is_front else (60, 210, 235), -1
    )  # number plate
    cv2.rectangle(img, p(0.05, 0.3), p(0.95, 0.16), (35, 35, 38), -1)  # bumper
    del r
    return Sprite(
        img, alpha, (p(0.08, 0)[0], p(0, glass_top)[1], p(0.92, 0)[0], p(0, glass_bot)[1])
    )


def _darker(c: tuple[int, int, int], lit: bool) -> tuple[int, int, int]:
    k = 0.8 if lit else 0.45
    return (int(c[0] * k), int(c[1] * k), int(c[2] * k))
