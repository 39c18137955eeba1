"""Render a labelled image folder of synthetic driver-window crops.

    python -m models.synth.render_dataset --out DIR --count N --seed S [--size WxH]

writes ``DIR/phone/*.png`` and ``DIR/no_phone/*.png`` (half each) and ``DIR/index.csv``
(file, phone, pose, lighting). The same seed and count give the same files, byte for byte.
Different seeds give disjoint sets, so use one seed for training and another for testing.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2

from models.synth.render import CropMeta, render_crop


def render_dataset(
    out_dir: Path, *, count: int, seed: int, size: tuple[int, int] | None = None
) -> list[tuple[Path, CropMeta]]:
    """Write ``count`` crops (alternating phone / no phone) under ``out_dir``."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    written: list[tuple[Path, CropMeta]] = []
    for label in ("phone", "no_phone"):
        (out_dir / label).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        img, meta = render_crop(seed, i, phone=(i % 2 == 0), size=size)
        path = out_dir / ("phone" if meta.phone else "no_phone") / f"s{seed}_{i:06d}.png"
        if not cv2.imwrite(str(path), img):
            raise OSError(f"cannot write {path}")
        written.append((path, meta))
    with (out_dir / "index.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "phone", "pose", "lighting"])
        for path, meta in written:
            w.writerow(
                [path.relative_to(out_dir).as_posix(), int(meta.phone), meta.pose, meta.lighting]
            )
    return written


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 128x96, not {text!r}") from None
    if not (16 <= w <= 1024 and 16 <= h <= 1024):
        raise argparse.ArgumentTypeError("size must be 16..1024 on each side")
    return w, h


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m models.synth.render_dataset",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--count", type=int, required=True, help="number of crops (half with a phone)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--size",
        type=_size,
        default=None,
        help="fixed crop size WxH (default: varied, like real ROIs)",
    )
    args = ap.parse_args(argv)
    if not 1 <= args.count <= 1_000_000:
        ap.error("--count must be 1..1000000")
    written = render_dataset(args.out, count=args.count, seed=args.seed, size=args.size)
    n_phone = sum(m.phone for _, m in written)
    print(f"{args.out}: {len(written)} crops ({n_phone} phone, {len(written) - n_phone} no_phone)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
