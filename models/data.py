"""Training data: image folders in, grouped splits, a fingerprint, augmentation (no TensorFlow).

An image folder is ``DIR/phone/*`` and ``DIR/no_phone/*`` (png / jpg / bmp), so a force can
retrain on its own site crops. If ``DIR/labels.csv`` exists with ``path`` and ``source_frame``
columns (as in the kmitl set), images from one source frame form one *group*; otherwise each
file is its own group. Splits never put one group on both sides, and hold out runs of
neighbouring groups, so near-identical video frames do not leak into validation.
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.core.preprocess import InputSpec, preprocess
from models.synth.render import render_scene

log = logging.getLogger(__name__)

LABELS = ("no_phone", "phone")
"""Class order of every model trained here (index 1 = phone)."""
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
LOAD_MAX_SIDE = 224
"""Real images are shrunk to at most this many pixels a side on load (cheaper augmentation)."""


@dataclass(frozen=True, slots=True)
class Sample:
    path: Path
    label: int
    """1 = phone, 0 = no phone."""
    group: str
    """Images sharing a group (one source frame / session) always go to the same split."""
    domain: str
    """Where it comes from (the folder name, or ``synthetic``): metrics are reported per domain."""


def list_folder(root: Path, *, domain: str | None = None) -> list[Sample]:
    """All images under ``root/phone`` and ``root/no_phone`` (sorted, so runs repeat)."""
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist")
    groups: dict[str, str] = {}
    labels_csv = (
        root.parent / "labels.csv" if not (root / "labels.csv").exists() else root / "labels.csv"
    )
    if labels_csv.is_file():
        with labels_csv.open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if "path" in row and "source_frame" in row:
                    groups[Path(row["path"]).name] = row["source_frame"]
    samples = []
    for label, name in enumerate(LABELS):
        folder = root / name
        if not folder.is_dir():
            raise FileNotFoundError(f"data folder {root} has no {name}/ subfolder")
        for p in sorted(folder.iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(Sample(p, label, groups.get(p.name, p.stem), domain or root.name))
    if not samples:
        raise FileNotFoundError(f"data folder {root} holds no images")
    return samples


def fingerprint(samples: Iterable[Sample], extra: str = "") -> str:
    """SHA-256 over each file's label, name and content (the training-data fingerprint)."""
    h = hashlib.sha256(extra.encode())
    for s in sorted(samples, key=lambda s: (s.domain, s.path.name)):
        h.update(f"{s.label}:{s.domain}:{s.path.name}:".encode())
        h.update(hashlib.sha256(s.path.read_bytes()).digest())
    return h.hexdigest()


def split_groups(
    samples: Sequence[Sample], *, val_share: float, seed: int, run: int = 4
) -> tuple[list[Sample], list[Sample]]:
    """(train, validation): whole groups, held out in runs of ``run`` neighbouring groups."""
    groups = sorted({s.group for s in samples})
    blocks = [groups[i : i + run] for i in range(0, len(groups), run)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(blocks))
    val_groups: set[str] = set()
    want = val_share * len(samples)
    counts: dict[str, int] = {}
    for s in samples:
        counts[s.group] = counts.get(s.group, 0) + 1
    n = 0
    for b in order:
        if n >= want:
            break
        val_groups.update(blocks[b])
        n += sum(counts[g] for g in blocks[b])
    train = [s for s in samples if s.group not in val_groups]
    val = [s for s in samples if s.group in val_groups]
    return train, val


def load_image(path: Path, max_side: int = LOAD_MAX_SIDE) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path} is not a readable image")
    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1.0:
        img = cv2.resize(
            img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
    return np.asarray(img, np.uint8)


def to_tensors(crops: Sequence[np.ndarray], spec: InputSpec) -> np.ndarray:
    """Crops -> an NHWC float32 batch through the unit's own :func:`preprocess`."""
    out = np.empty((len(crops), spec.height, spec.width, spec.channels), np.float32)
    for i, c in enumerate(crops):
        out[i] = preprocess(c, spec)
    return out


# -- augmentation ------------------------------------------------------------------------------


def _random_resized_crop(img: np.ndarray, rng: np.random.Generator, area_min: float) -> np.ndarray:
    h, w = img.shape[:2]
    area = rng.uniform(area_min, 1.0) * h * w
    aspect = np.exp(rng.uniform(np.log(0.75), np.log(1.33)))
    cw = int(min(w, round(np.sqrt(area * aspect))))
    ch = int(min(h, round(np.sqrt(area / aspect))))
    x = int(rng.integers(0, w - cw + 1))
    y = int(rng.integers(0, h - ch + 1))
    return img[y : y + ch, x : x + cw]


def _background_patch(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Replace a strip at one side with a synthetic background (breaks background shortcuts)."""
    h, w = img.shape[:2]
    bg = render_scene(rng, "empty_seat", "day", size=(w, h), frame=False)
    frac = rng.uniform(0.12, 0.3)
    out = img.copy()
    side = int(rng.integers(4))
    if side == 0:
        n = max(1, round(frac * w))
        out[:, :n] = bg[:, :n]
    elif side == 1:
        n = max(1, round(frac * w))
        out[:, w - n :] = bg[:, w - n :]
    elif side == 2:
        n = max(1, round(frac * h))
        out[:n] = bg[:n]
    else:
        n = max(1, round(frac * h))
        out[h - n :] = bg[h - n :]
    return out


def partial_view(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``img`` as a fixed ROI sees it while the car rolls in or out: the window scene slid
    sideways by 30-70 % of the crop, the rest of the crop the car's pillar and bodywork.

    For phone-free crops only (a slide can push a phone out of view, so it would make the
    label of a phone crop wrong). Trained as *no phone*, these teach the network what the
    junction ROI shows between stopped cars, where a half-seen driver with a hand near the
    face or the wheel was flagged (the demo clip).
    """
    h, w = img.shape[:2]
    gone = min(w - 1, max(1, round(rng.uniform(0.3, 0.7) * w)))  # columns that left the crop
    body = rng.integers(20, 236, 3).astype(np.float32)
    if float(np.abs(img.astype(np.int16) - img.mean(axis=2, keepdims=True)).mean()) < 3:
        body[:] = body.mean()  # a greyscale (infrared) crop: grey bodywork
    out = np.empty(img.shape, np.float32)
    out[:] = body * rng.uniform(0.85, 1.0)
    if rng.random() < 0.6:  # door line: the panel below it in shade
        out[round(h * rng.uniform(0.55, 0.9)) :] = body * rng.uniform(0.4, 0.7)
    pillar = max(1, round(w * rng.uniform(0.05, 0.15)))
    dark = rng.uniform(10, 60)  # black trim
    if rng.random() < 0.5:  # entering: the front of the window is in, the car's front beside it
        out[:, : w - gone] = img[:, gone:]
        out[:, w - gone : w - gone + pillar] = dark
    else:  # leaving: the back of the window is still in, the rear of the car beside it
        out[:, gone:] = img[:, : w - gone]
        out[:, max(0, gone - pillar) : gone] = dark
    return np.clip(out, 0, 255).astype(np.uint8)


def augment(img: np.ndarray, rng: np.random.Generator, *, strong: bool = True) -> np.ndarray:
    """A random, label-preserving variant of a BGR ``uint8`` crop.

    Geometry (crop, flip, rotation), photometry (exposure, contrast, colour cast, greyscale
    as under infrared), sensor effects (blur, noise, JPEG) and, when ``strong``, random erasing
    and background replacement at the borders so the network cannot key on one car's interior.
    """
    out = _random_resized_crop(img, rng, 0.6 if strong else 0.8)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    h, w = out.shape[:2]
    if rng.random() < 0.5:
        m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-12, 12), 1.0)
        out = cv2.warpAffine(np.ascontiguousarray(out), m, (w, h), borderMode=cv2.BORDER_REFLECT)
    out = np.ascontiguousarray(out)
    if strong and rng.random() < 0.3:
        out = _background_patch(out, rng)
    f = out.astype(np.float32)
    f = (f - 128.0) * rng.uniform(0.7, 1.3) + 128.0 + rng.uniform(-40, 40)
    f *= rng.uniform(0.85, 1.15, 3)[None, None, :]
    if rng.random() < 0.2:
        g = f @ np.array([0.114, 0.587, 0.299], np.float32)
        f = np.repeat(g[:, :, None], 3, axis=2)
    f = np.clip(f, 0, 255)
    if rng.random() < 0.3:
        gamma = rng.uniform(0.6, 1.6)
        f = 255.0 * np.power(f / 255.0, gamma)
    if strong and rng.random() < 0.5:
        for _ in range(int(rng.integers(1, 4))):
            eh = max(1, round(h * rng.uniform(0.1, 0.3)))
            ew = max(1, round(w * rng.uniform(0.1, 0.3)))
            y, x = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
            f[y : y + eh, x : x + ew] = (
                rng.uniform(0, 255, (1, 1, 3))
                if rng.random() < 0.5
                else rng.uniform(0, 255, (eh, ew, 3))
            )
    out = f.astype(np.uint8)
    if rng.random() < 0.25:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.8))
    if rng.random() < 0.4:
        noise = rng.normal(0, rng.uniform(2, 10), out.shape)
        out = np.clip(out + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 90))])
        dec = cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else None
        if dec is not None:
            out = dec
    return np.asarray(out, np.uint8)
