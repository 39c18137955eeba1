"""A synthetic *site*: crops as one force's units see them, unlike the default model's sources.

    python -m models.synth.site --site gantry_tint --out DIR [--sessions 40] [--per-session 40]
        [--seed 0] [--test-share 0.3] [--split-by session|unit|day]

writes ``DIR/phone/*.png``, ``DIR/no_phone/*.png`` and ``DIR/index.csv`` in the control room's
dataset export format (``models.site_data``): one row per crop with ``path``, ``label``,
``unit``, ``roi``, ``time``, ``source``, ``reviewer``, ``split``, and the provenance a split
needs (``session``, ``day``), plus ``file`` / ``phone`` so ``phonewatch eval`` reads the same
folder. ``split`` is assigned to whole sessions (or units, or days), never crop by crop: crops
of one session share the camera, the glass and the light, so a crop-by-crop split would test
on near-copies of training crops.

The site ``gantry_tint`` is a camera on an overhead gantry of a dual carriageway looking down
through tinted side windows: steep viewpoint (keystone, roll and a vertical squash that
differ per unit), dark tinted glass (45-70 % transmission, green-grey or bronze), the bright
outside world reflected in that glass (sky, lamp posts, gantry beams), low winter sun
(a warm wash and a hard streak) by day and an infrared flash by night, small far-away crops.
The default model never saw any of it. Everything is a pure function of (site, seed, crop
index), and a phone crop always shows its phone (``render.MIN_PHONE_PIXELS``, measured after
the glass), as in ``models.synth.render``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.synth import render as r

INDEX_COLUMNS = (
    "path",
    "file",
    "label",
    "phone",
    "unit",
    "roi",
    "time",
    "source",
    "reviewer",
    "split",
    "session",
    "day",
    "pose",
    "lighting",
)
"""The columns a rendered site's ``index.csv`` has (the export format's, then extras)."""


@dataclass(frozen=True, slots=True)
class Site:
    """A named domain: how its units' cameras, glass and light differ from the defaults."""

    name: str
    description: str
    units: int
    """Units (cameras) at the site; each has its own fixed mount (viewpoint)."""
    night_share: float
    """Share of sessions at night (infrared)."""
    tint: tuple[float, float]
    """Range of the window glass's light transmission (0..1)."""
    reflection: tuple[float, float]
    """Range of the strength of the outside world reflected in the glass."""
    keystone: tuple[float, float]
    """Range of the viewpoint's keystone (how much narrower the bottom of the window looks)."""
    roll: tuple[float, float]
    """Range of the camera roll (degrees, either sign)."""
    crop_px: tuple[int, int]
    """Range of the crop width in pixels (a far camera gives small crops)."""


SITES: dict[str, Site] = {
    "gantry_tint": Site(
        name="gantry_tint",
        description="overhead gantry camera looking down through tinted side windows; low "
        "winter sun and glass reflections by day, infrared flash by night",
        units=4,
        night_share=0.2,
        tint=(0.45, 0.7),
        reflection=(0.08, 0.2),
        keystone=(0.2, 0.35),
        roll=(15.0, 28.0),
        crop_px=(96, 176),
    ),
}

SALT_SESSION = 7001
SALT_CROP = 7002


@dataclass(frozen=True, slots=True)
class Session:
    """One unit's stint at one time: every crop in it shares these conditions."""

    site: str
    seed: int
    number: int
    unit: str
    day: str
    """``YYYY-MM-DD``."""
    start: dt.datetime
    night: bool
    tint: float
    tint_bgr: tuple[float, float, float]
    reflection: float
    sun_side: int
    """+1 or -1: from which side the low sun comes."""

    @property
    def name(self) -> str:
        return f"{self.unit}-{self.day}-{'n' if self.night else 'd'}{self.number:03d}"


@dataclass(frozen=True, slots=True)
class Mount:
    """A unit's camera mount: fixed for the unit, whatever the session."""

    keystone: float
    roll: float
    squash: float
    shift: float


def unit_mount(site: Site, seed: int, unit: int) -> Mount:
    rng = r._rng(seed, unit, SALT_SESSION - 1)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    return Mount(
        keystone=float(rng.uniform(*site.keystone)),
        roll=sign * float(rng.uniform(*site.roll)),
        squash=float(rng.uniform(0.75, 0.9)),
        shift=float(rng.uniform(-0.08, 0.08)),
    )


def session(site: Site, seed: int, number: int) -> Session:
    """Session ``number`` of the site: its unit, day, start time and conditions."""
    rng = r._rng(seed, number, SALT_SESSION)
    unit = int(rng.integers(site.units))
    day = dt.date(2027, 1, 4) + dt.timedelta(days=int(rng.integers(0, 28)))
    night = bool(rng.random() < site.night_share)
    hour = float(
        rng.uniform(19.0, 23.0)
        if night
        else (rng.uniform(7.5, 9.5) if rng.random() < 0.5 else rng.uniform(14.5, 16.5))
    )
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC) + dt.timedelta(hours=hour)
    green = rng.random() < 0.6
    tint_bgr = (0.95, 1.0, 0.8) if green else (0.6, 0.8, 1.0)
    return Session(
        site=site.name,
        seed=seed,
        number=number,
        unit=f"{site.name}-u{unit}",
        day=day.isoformat(),
        start=start,
        night=night,
        tint=float(rng.uniform(*site.tint)),
        tint_bgr=tint_bgr,
        reflection=float(rng.uniform(*site.reflection)),
        sun_side=1 if rng.random() < 0.5 else -1,
    )


def _reflection(h: int, w: int, rng: np.random.Generator, night: bool) -> np.ndarray:
    """The outside world as the glass mirrors it: sky, a gantry beam, lamp posts, a horizon."""
    img = np.empty((h, w, 3), np.float32)
    top = np.array((250, 235, 215) if not night else (40, 40, 50), np.float32)
    bottom = np.array((170, 170, 165) if not night else (20, 20, 25), np.float32)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img[:] = top * (1 - t) + bottom * t
    horizon = rng.uniform(0.4, 0.8) * h
    cv2.rectangle(img, (0, round(horizon)), (w, h), (90, 95, 95) if not night else (10, 10, 10), -1)
    for _ in range(int(rng.integers(2, 6))):  # lamp posts and sign poles
        x = rng.uniform(0, w)
        cv2.line(
            img,
            r._pt(x, 0),
            r._pt(x + rng.uniform(-30, 30), h),
            (60, 60, 60) if not night else (200, 200, 170),
            int(rng.integers(2, 7)),
            cv2.LINE_AA,
        )
    if rng.random() < 0.6:  # the gantry beam overhead
        y = rng.uniform(0.05, 0.35) * h
        cv2.line(
            img,
            r._pt(0, y),
            r._pt(w, y + rng.uniform(-20, 20)),
            (70, 70, 75),
            int(rng.integers(6, 16)),
            cv2.LINE_AA,
        )
    for _ in range(int(rng.integers(0, 4))):  # clouds / lit windows
        c = r._pt(rng.uniform(0, w), rng.uniform(0, horizon))
        cv2.ellipse(
            img,
            c,
            r._pt(rng.uniform(10, 50), rng.uniform(5, 15)),
            0,
            0,
            360,
            (255, 255, 255) if not night else (120, 160, 200),
            -1,
            cv2.LINE_AA,
        )
    return cv2.GaussianBlur(img, (0, 0), rng.uniform(1.5, 4.0))


def _glass(img: np.ndarray, rng: np.random.Generator, s: Session) -> np.ndarray:
    """The tinted pane: the cabin dimmed and coloured, the outside mirrored on top, the low sun
    (by day) or the infrared flash's hot spot (by night)."""
    h, w = img.shape[:2]
    f = img.astype(np.float32)
    tint = s.tint * rng.uniform(0.85, 1.15)
    if s.night:  # infrared passes tint better; the flash lights the near side
        f *= min(1.0, tint * 2.2)
    else:
        f *= tint * np.array(s.tint_bgr, np.float32)[None, None, :]
    refl = _reflection(h, w, rng, s.night)
    f += refl * s.reflection * rng.uniform(0.8, 1.2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if not s.night:
        # Low sun: a warm wash from one side and a hard diagonal streak across the glass.
        side = (xx / w) if s.sun_side > 0 else (1 - xx / w)
        f += (side**2)[:, :, None] * np.array((40, 110, 190), np.float32) * rng.uniform(0.3, 0.8)
        x0 = rng.uniform(-0.2, 1.0) * w
        width = rng.uniform(0.05, 0.2) * w
        d = np.abs((xx - x0) - 0.6 * (yy - h / 2) * s.sun_side)
        streak = np.clip(1.0 - d / width, 0.0, 1.0)
        f += streak[:, :, None] * np.array((200, 230, 255), np.float32) * rng.uniform(0.3, 0.7)
    else:
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        spot = np.exp(-(((xx - cx) / (0.25 * w)) ** 2 + ((yy - cy) / (0.25 * h)) ** 2))
        f += spot[:, :, None] * rng.uniform(60, 140)
        grey = f.mean(axis=2, keepdims=True)
        f = np.repeat(grey, 3, axis=2)
    return np.clip(f, 0, 255).astype(np.uint8)


def _viewpoint(img: np.ndarray, rng: np.random.Generator, m: Mount) -> np.ndarray:
    """The gantry's steep view: the window's bottom narrower than its top, squashed
    vertically, rolled; slight jitter per crop (the car is not always in the same place)."""
    h, w = img.shape[:2]
    k = m.keystone * rng.uniform(0.9, 1.1)
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    dst = np.array([[0, 0], [w, 0], [w * (1 - k / 2), h], [w * k / 2, h]], np.float32)
    dst[:, 1] *= m.squash
    dst[:, 1] += h * (1 - m.squash) / 2
    dst[:, 0] += m.shift * w
    pm = cv2.getPerspectiveTransform(src, dst)
    out = cv2.warpPerspective(img, pm, (w, h), borderMode=cv2.BORDER_REPLICATE)
    rot = cv2.getRotationMatrix2D(
        (w / 2, h / 2), m.roll + rng.uniform(-4, 4), rng.uniform(1.15, 1.35)
    )
    return np.asarray(cv2.warpAffine(out, rot, (w, h), borderMode=cv2.BORDER_REPLICATE), np.uint8)


def _view(
    site: Site, s: Session, index: int, attempt: int, pose: str, *, phone_drawn: bool = True
) -> np.ndarray:
    rng = r._rng(s.seed * 1000 + s.number, index, SALT_CROP + 97 * attempt)
    light = "ir_night" if s.night else "day"
    img = r.render_scene(rng, pose, light, frame=False, phone_drawn=phone_drawn)
    img = _glass(img, rng, s)
    r._window_frame(img, rng)
    unit = int(s.unit.rsplit("-u", 1)[1])
    img = _viewpoint(img, rng, unit_mount(site, s.seed, unit))
    img = r._degrade(img, rng, light)
    out_w = int(rng.integers(site.crop_px[0], site.crop_px[1] + 1))
    size = (out_w, max(32, round(out_w * rng.uniform(0.65, 0.9))))
    img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return r._jpeg(img, rng)


@dataclass(frozen=True, slots=True)
class SiteCrop:
    """A rendered site crop and its provenance."""

    image: np.ndarray
    phone: bool
    pose: str
    session: Session
    index: int
    time: dt.datetime
    roi: str
    extras: dict[str, Any]


def site_crop(site: Site, s: Session, index: int, *, phone: bool) -> SiteCrop:
    """Crop ``index`` of session ``s`` (a pure function of its arguments); a phone crop shows
    its phone, measured after the glass: otherwise the scene is drawn afresh, same pose."""
    _, pose = r.pose_for(s.seed * 1000 + s.number, index, phone)
    extras: dict[str, Any] = {}
    img = np.zeros((1, 1, 3), np.uint8)
    for attempt in range(r.REDRAWS):
        img = _view(site, s, index, attempt, pose)
        if not phone:
            break
        without = _view(site, s, index, attempt, pose, phone_drawn=False)
        extras = {"redraws": attempt, "phone_pixels": r.phone_pixels(img, without)}
        if extras["phone_pixels"] >= r.MIN_PHONE_PIXELS:
            break
    rng = r._rng(s.seed * 1000 + s.number, index, SALT_CROP - 1)
    when = s.start + dt.timedelta(seconds=int(index * 37 + rng.integers(0, 30)))
    return SiteCrop(
        image=img,
        phone=phone,
        pose=pose,
        session=s,
        index=index,
        time=when,
        roi=f"lane{int(rng.integers(1, 3))}",
        extras=extras,
    )


def _split_key(s: Session, by: str) -> str:
    return {"session": s.name, "unit": s.unit, "day": s.day}[by]


def assign_splits(
    sessions: Sequence[Session], *, test_share: float, seed: int, by: str = "session"
) -> dict[str, str]:
    """``{session name: "train" | "test"}``: whole sessions (or units, or days) go to test,
    about ``test_share`` of them, drawn by ``seed``."""
    keys = sorted({_split_key(s, by) for s in sessions})
    rng = np.random.default_rng([seed, 4242])
    n_test = max(1, round(test_share * len(keys))) if test_share > 0 else 0
    if n_test >= len(keys) and test_share < 1:
        n_test = len(keys) - 1
    test = {keys[i] for i in rng.permutation(len(keys))[:n_test]}
    return {s.name: ("test" if _split_key(s, by) in test else "train") for s in sessions}


def render_site(
    out: Path,
    *,
    site: str = "gantry_tint",
    seed: int = 0,
    sessions: int = 40,
    per_session: int = 40,
    test_share: float = 0.3,
    split_by: str = "session",
    first_session: int = 0,
) -> list[dict[str, str]]:
    """Render ``sessions`` sessions of ``per_session`` crops (half with a phone) into ``out``
    as an export-format dataset; returns the ``index.csv`` rows."""
    if site not in SITES:
        raise ValueError(f"unknown site {site!r} (known: {', '.join(sorted(SITES))})")
    if sessions < 1 or per_session < 2:
        raise ValueError("need at least one session of at least two crops")
    st = SITES[site]
    sess = [session(st, seed, n) for n in range(first_session, first_session + sessions)]
    splits = assign_splits(sess, test_share=test_share, seed=seed, by=split_by)
    for label in ("phone", "no_phone"):
        (out / label).mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    for s in sess:
        for i in range(per_session):
            c = site_crop(st, s, i, phone=i % 2 == 0)
            label = "phone" if c.phone else "no_phone"
            rel = f"{label}/{s.name}-{i:04d}.png"
            if not cv2.imwrite(str(out / rel), c.image):
                raise OSError(f"cannot write {out / rel}")
            rows.append(
                {
                    "path": rel,
                    "file": rel,
                    "label": label,
                    "phone": str(int(c.phone)),
                    "unit": s.unit,
                    "roi": c.roi,
                    "time": c.time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "source": f"synthetic:{site}:seed{seed}",
                    "reviewer": "renderer",
                    "split": splits[s.name],
                    "session": s.name,
                    "day": s.day,
                    "pose": c.pose,
                    "lighting": "ir_night" if s.night else "low_sun",
                }
            )
    write_index(out, rows)
    return rows


def write_index(out: Path, rows: Sequence[dict[str, str]]) -> Path:
    path = out / "index.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(INDEX_COLUMNS), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m models.synth.site",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--site", default="gantry_tint", choices=sorted(SITES))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sessions", type=int, default=40)
    ap.add_argument("--per-session", type=int, default=40)
    ap.add_argument(
        "--test-share",
        type=float,
        default=0.3,
        help="share of sessions (units, days) whose crops are split 'test'",
    )
    ap.add_argument("--split-by", choices=["session", "unit", "day"], default="session")
    a = ap.parse_args(argv)
    if not 0 <= a.test_share < 1 or a.sessions < 1 or a.per_session < 2:
        ap.error("need 0 <= --test-share < 1, --sessions >= 1, --per-session >= 2")
    if (a.out / "index.csv").exists():
        ap.error(f"{a.out} already holds a dataset (index.csv)")
    rows = render_site(
        a.out,
        site=a.site,
        seed=a.seed,
        sessions=a.sessions,
        per_session=a.per_session,
        test_share=a.test_share,
        split_by=a.split_by,
    )
    n_test = sum(row["split"] == "test" for row in rows)
    print(
        f"{a.out}: {len(rows)} crops of site {a.site} ({len(rows) - n_test} train, "
        f"{n_test} test; split by {a.split_by})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
