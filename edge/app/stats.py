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


def grid(
    rows: list[tuple[str, ...]],
    header: tuple[str, ...] | None = None,
    title: str = "",
    align: str | None = None,
) -> str:
    """A boxed text table (the style of every table phonewatch and its benches print).

    ``rows`` are tuples of strings, all as long as ``header`` (a row set off by a rule, if
    given); ``align`` has one ``l`` or ``r`` per column (default: the first left, the rest
    right, for a name followed by numbers).
    """
    cells = ([header] if header is not None else []) + list(rows)
    n = max((len(c) for c in cells), default=0)
    if any(len(c) != n for c in cells):
        raise ValueError("every row needs the same number of columns")
    align = align or "l" + "r" * (n - 1)
    if len(align) != n or set(align) - {"l", "r"}:
        raise ValueError(f"align needs one 'l' or 'r' per column ({n}), got {align!r}")
    widths = [max(len(c[i]) for c in cells) for i in range(n)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def fmt(c: tuple[str, ...]) -> str:
        return (
            "| "
            + " | ".join(
                v.ljust(w) if a == "l" else v.rjust(w)
                for v, w, a in zip(c, widths, align, strict=True)
            )
            + " |"
        )

    out = [title] if title else []
    out.append(line)
    if header is not None:
        out += [fmt(header), line]
    out += [fmt(r) for r in rows]
    out.append(line)
    return "\n".join(out)


def table(rows: list[tuple[str, str]], title: str = "") -> str:
    """A two-column boxed table: a name and its value."""
    return grid(list(rows), title=title)
