"""Inference time per crop of the default phone-in-hand model (and the ImageNet baselines).

    .venv/bin/python bench/model.py [--model M] [--runs 300]

Prints a table: median and p90 milliseconds for preprocessing (resize, colour, normalise,
quantise), ``invoke()`` alone, and the two together, on this machine's CPU with 1 and 2
threads. Crops are rendered driver-window crops of a typical ROI size (160x120).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from _common import REPO, machine

from edge.adapters.classifier import LiteRTClassifier
from edge.app.stats import grid
from models.synth.render import render_crop

DEFAULT_MODEL = REPO / "models" / "phone_in_hand" / "phone_in_hand.tflite"


def bench(
    model: Path, sidecar: Path | None, threads: int, crops: list[np.ndarray], runs: int
) -> dict[str, float]:
    with LiteRTClassifier.open(model, sidecar=sidecar, threads=threads) as clf:
        for c in crops[:20]:  # warm-up
            clf.score(c)
        pre, inv = [], []
        for i in range(runs):
            c = crops[i % len(crops)]
            t0 = time.perf_counter()
            x = clf.preprocess(c)
            t1 = time.perf_counter()
            clf.invoke(x)
            t2 = time.perf_counter()
            pre.append(t1 - t0)
            inv.append(t2 - t1)
    p, v = np.array(pre) * 1e3, np.array(inv) * 1e3
    tot = p + v
    return {
        "pre_med": float(np.median(p)),
        "inv_med": float(np.median(v)),
        "inv_p90": float(np.percentile(v, 90)),
        "tot_med": float(np.median(tot)),
        "tot_p90": float(np.percentile(tot, 90)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument(
        "--baselines",
        type=Path,
        default=None,
        help="folder of ImageNet sidecars written by 'phonewatch sidecar' to compare",
    )
    a = ap.parse_args()
    crops = [render_crop(99, i, size=(160, 120))[0] for i in range(50)]
    rows: list[tuple[str, int, dict[str, float]]] = []
    models: list[tuple[str, Path, Path | None]] = [(a.model.name, a.model, None)]
    if a.baselines is not None:
        shared = Path(os.environ.get("PHONEWATCH_SHARED_DATA", REPO.parent / "shared" / "data"))
        for sc in sorted(a.baselines.glob("*.json")):
            m = shared / "models" / (sc.stem + ".tflite")
            if m.is_file():
                models.append((m.name, m, sc))
    for name, m, sc in models:
        for threads in (1, 2):
            rows.append((name, threads, bench(m, sc, threads, crops, a.runs)))
    print(
        grid(
            [
                (
                    name,
                    str(threads),
                    *(
                        f"{r[k]:.3f}"
                        for k in ("pre_med", "inv_med", "inv_p90", "tot_med", "tot_p90")
                    ),
                )
                for name, threads, r in rows
            ],
            header=("model", "thr", "pre ms", "invoke ms", "inv p90", "total ms", "tot p90"),
            title=f"machine: {machine()} (shared); {a.runs} crops of 160x120 each",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
