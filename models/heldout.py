"""The held-out evaluation behind the default model's card, as one command.

    python -m models.heldout --shared ../shared/data --work var/model-eval \\
        [--model models/phone_in_hand/phone_in_hand.tflite] \\
        [--card models/phone_in_hand/MODEL_CARD.md --bench-ms 1.43 --bench-machine "..."]

builds the test sets under ``WORK`` (none of them is ever used for training, tuning or the
threshold), scores them with the model and the generic ImageNet classifiers side by side
(``phonewatch eval``; output in ``WORK/eval``) and, with ``--card``, writes the model card:

- ``kmitl/test``: the real in-cabin test split, read in place from the shared data;
- ``synthetic/test``: 600 crops rendered with seed 7 (training uses seeds >= 1000), with an
  ``index.csv`` of pose and lighting, so the card can report each condition;
- ``demo_clip/crops``: five crops of the ROI during each car's stop in the demo clips of seeds
  0-2, read back from the encoded MP4 as the unit reads it;
- ``other_photos/negatives``: the shared data's photographs of people without a phone;
- the comparators: the shared ImageNet classifiers, their "cellular telephone" class as
  P(phone), with sidecars written by ``phonewatch sidecar``'s code.

Rendering is deterministic, so the same model gives the same card.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from edge.app import cli_models
from models import card
from models.synth.demo_clip import write_clip
from models.synth.render_dataset import render_dataset

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "models" / "phone_in_hand" / "phone_in_hand.tflite"

SYNTH_SEED = 7
SYNTH_COUNT = 600
DEMO_SEEDS = (0, 1, 2)
CROPS_PER_STOP = 5

DOMAINS = {
    "kmitl/test": "real, in-cabin, same 2 cars as training",
    "synthetic/test": f"synthetic, seed {SYNTH_SEED}, held out",
    "demo_clip/crops": f"synthetic demo clip ROIs, seeds {DEMO_SEEDS[0]}-{DEMO_SEEDS[-1]}",
    "other_photos/negatives": "real, other sources, no phone",
}


@dataclass(frozen=True, slots=True)
class Comparator:
    """A generic ImageNet classifier from the shared data, judged by one of its classes."""

    file: str
    name: str
    label_offset: int = 0
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    activation: str = "none"


COMPARATORS = (
    Comparator("mobilenet_v2_1.0_224_quant.tflite", "imagenet-mobilenet_v2_1.0_224_quant"),
    Comparator("mobilenet_v1_0.5_160_quant.tflite", "imagenet-mobilenet_v1_0.5_160_quant"),
    Comparator("mobilenet_v1_0.25_128_quant.tflite", "imagenet-mobilenet_v1_0.25_128_quant"),
    # The NCHW int8 MobileNetV2 has no background class and takes torchvision's normalisation.
    Comparator(
        "mobilenet_v2_quantized_1x3x224x224.tflite",
        "imagenet-mobilenet_v2_nchw_int8",
        label_offset=-1,
        mean=(123.675, 116.28, 103.53),
        std=(58.395, 57.12, 57.375),
        activation="softmax",
    ),
)
POSITIVE = "cellular telephone"


def _fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def build_synthetic(work: Path, *, count: int = SYNTH_COUNT, seed: int = SYNTH_SEED) -> Path:
    folder = _fresh(work / "synthetic" / "test")
    render_dataset(folder, count=count, seed=seed)
    return folder


def demo_crops(clip_dir: Path, out: Path, *, prefix: str, per_stop: int = CROPS_PER_STOP) -> int:
    """Cut ``per_stop`` evenly spaced crops of the ROI from each stop in ``clip_dir``'s clip."""
    truth = json.loads((clip_dir / "junction.truth.json").read_text(encoding="utf-8"))
    wanted: dict[int, list[tuple[int, dict[str, Any]]]] = {}
    for k, ev in enumerate(truth["events"]):
        span = ev["end_frame"] - ev["start_frame"]
        for j in range(per_stop):
            frame = ev["start_frame"] + (j + 1) * span // (per_stop + 1)
            wanted.setdefault(frame, []).append((k, ev))
    w, h = truth["width"], truth["height"]
    cap = cv2.VideoCapture(str(clip_dir / truth["video"]))
    written = 0
    try:
        for i in range(truth["frames"]):
            ok, frame = cap.read()
            if not ok:
                raise OSError(f"{clip_dir / truth['video']} ends at frame {i} of {truth['frames']}")
            for k, ev in wanted.get(i, []):
                x0, y0, x1, y1 = truth["rois"][ev["roi"]]
                crop = frame[round(y0 * h) : round(y1 * h), round(x0 * w) : round(x1 * w)]
                label = "phone" if ev["phone"] else "no_phone"
                path = out / label / f"{prefix}_e{k:02d}_f{i:04d}.png"
                if not cv2.imwrite(str(path), crop):
                    raise OSError(f"cannot write {path}")
                written += 1
    finally:
        cap.release()
    return written


def build_demo(work: Path, *, seeds: Sequence[int] = DEMO_SEEDS, seconds: float = 30.0) -> Path:
    folder = _fresh(work / "demo_clip" / "crops")
    for sub in ("phone", "no_phone"):
        (folder / sub).mkdir()
    for seed in seeds:
        clip = work / "demo_clip" / f"clip_seed{seed}"
        write_clip(clip, seed=seed, seconds=seconds)
        demo_crops(clip, folder, prefix=f"s{seed}")
    return folder


def build_other_photos(shared: Path, work: Path) -> Path:
    """The shared data's photographs of people, none holding a phone (``images/``)."""
    src = shared / "images"
    photos = sorted(p for p in src.iterdir() if p.suffix.lower() in cli_models.IMAGE_SUFFIXES)
    if not photos:
        raise FileNotFoundError(f"no photographs in {src}")
    folder = _fresh(work / "other_photos" / "negatives")
    (folder / "phone").mkdir()
    (folder / "no_phone").mkdir()
    for p in photos:  # linked, not copied: the shared data stays where it is
        (folder / "no_phone" / p.name).symlink_to(p.resolve())
    return folder


def comparator_sidecars(shared: Path, work: Path) -> list[tuple[Path, Path]]:
    """(model, sidecar) for every generic classifier present in the shared data."""
    models, out = shared / "models", _fresh(work / "sidecars")
    pairs = []
    for c in COMPARATORS:
        model = models / c.file
        if not model.is_file():
            log.warning("comparator %s is not in %s; left out", c.file, models)
            continue
        d = cli_models.make_sidecar(
            model,
            positive=[POSITIVE],
            labels_file=models / "imagenet_labels.txt",
            labels=None,
            label_offset=c.label_offset,
            mean=list(c.mean) if c.mean else None,
            std=list(c.std) if c.std else None,
            activation=c.activation,
            threshold=0.1,
            name=c.name,
        )
        side = out / model.with_suffix(".json").name
        side.write_text(json.dumps(d, indent=1) + "\n", encoding="utf-8")
        pairs.append((model, side))
    return pairs


def run(
    model: Path,
    shared: Path,
    work: Path,
    *,
    synth_count: int = SYNTH_COUNT,
    demo_seeds: Sequence[int] = DEMO_SEEDS,
    demo_seconds: float = 30.0,
    compare: bool = True,
) -> dict[str, Any]:
    """Build every set, score them, write ``WORK/eval``; returns the eval document."""
    kmitl = shared / "datasets" / "kmitl" / "test"
    folders = [
        kmitl,
        build_synthetic(work, count=synth_count),
        build_demo(work, seeds=demo_seeds, seconds=demo_seconds),
        build_other_photos(shared, work),
    ]
    models: list[tuple[Path, Path | None]] = [(model, None)]
    if compare:
        models += comparator_sidecars(shared, work)
    results, labels = cli_models.evaluate(models, folders)
    print(cli_models.report(results, labels))
    cli_models.write_outputs(results, labels, work / "eval")
    return cli_models.eval_document(results)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m models.heldout",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--shared", type=Path, required=True, help="the shared data folder")
    ap.add_argument(
        "--work",
        type=Path,
        required=True,
        help="folder for the rendered sets and the eval output (rebuilt)",
    )
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--card", type=Path, help="write the model card here")
    ap.add_argument(
        "--bench-ms", type=float, help="ms per invoke from bench/model.py (needed with --card)"
    )
    ap.add_argument("--bench-machine", default="", help="what machine measured --bench-ms")
    a = ap.parse_args(argv)
    if a.card and a.bench_ms is None:
        ap.error("--card needs --bench-ms (run bench/model.py)")
    if not (a.shared / "datasets" / "kmitl" / "test").is_dir():
        ap.error(f"{a.shared} has no datasets/kmitl/test")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    doc = run(a.model, a.shared, a.work)
    if a.card:
        a.card.write_text(
            card.render(
                a.model, doc, bench_ms=a.bench_ms, bench_machine=a.bench_machine, domains=DOMAINS
            ),
            encoding="utf-8",
        )
        print(f"wrote {a.card}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
