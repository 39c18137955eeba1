"""Rates and percentiles for the periodic log and the exit table (no per-frame logging)."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class Series:
    """The last ``maxlen`` samples of one measurement (e.g. invoke ms)."""

    def __init__(self, maxlen: int = 2000) -> None:
        self._v: deque[float] = deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self.count = 0

    def add(self, value: float) -> None:
        with self._lock:
            self._v.append(value)
            self.count += 1

    def percentile(self, q: float) -> float | None:
        with self._lock:
            if not self._v:
                return None
            return float(np.percentile(np.fromiter(self._v, dtype=np.float64), q))


def fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def table(rows: list[tuple[str, str]], title: str = "") -> str:
    width = max((len(k) for k, _ in rows), default=0)
    vwidth = max((len(v) for _, v in rows), default=0)
    line = "+" + "-" * (width + 2) + "+" + "-" * (vwidth + 2) + "+"
    out = []
    if title:
        out.append(title)
    out.append(line)
    for k, v in rows:
        out.append(f"| {k.ljust(width)} | {v.rjust(vwidth)} |")
    out.append(line)
    return "\n".join(out)
