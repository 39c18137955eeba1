"""Invoke time of a reference model, to compare this machine with published figures.

The Pi 5 estimate in docs/performance.md comes from one published Raspberry Pi 5 figure for an
SSD MobileNet v1 detector (TensorFlow Lite, 300x300 input, 4 threads) set against the closest
model in ``../shared/data/models`` timed here. Prints a table: median and p90 ms of
``invoke()`` alone (random input, after warm-up) for 1 and 2 threads.

Usage:  .venv/bin/python bench/reference.py [--model M] [--runs 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _common import REPO, machine

from edge.app.stats import table

DEFAULT = (
    REPO.parent / "shared" / "data" / "models" / "coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.tflite"
)


def time_invoke(model: Path, threads: int, runs: int) -> tuple[float, float]:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - the tflite-runtime fallback, as the unit does
        from tflite_runtime.interpreter import Interpreter
    it = Interpreter(model_path=str(model), num_threads=threads)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    rng = np.random.default_rng(0)
    dtype = np.dtype(inp["dtype"])
    x = (
        rng.integers(0, 256, inp["shape"]).astype(dtype)
        if dtype.kind in "iu"
        else rng.random(inp["shape"], dtype=np.float32)
    )
    it.set_tensor(inp["index"], x)
    for _ in range(10):
        it.invoke()
    ms = []
    for _ in range(runs):
        t0 = time.perf_counter()
        it.invoke()
        ms.append((time.perf_counter() - t0) * 1e3)
    ms.sort()
    return statistics.median(ms), ms[int(0.9 * (len(ms) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=DEFAULT)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    if not args.model.is_file():
        print(
            f"reference model not found, skipped: {args.model} (pass --model; the shared "
            "data folder holds the default)",
            file=sys.stderr,
        )
        return 0
    rows = [("machine", machine()), ("model", args.model.name)]
    for threads in (1, 2):
        p50, p90 = time_invoke(args.model, threads, args.runs)
        rows.append((f"invoke ms, {threads} thread(s): median / p90", f"{p50:.2f} / {p90:.2f}"))
    print(table(rows, title="reference model invoke time"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
