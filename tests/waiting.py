"""Waiting for something another thread or process does (a broker delivery, a database commit,
a supervisor restart), without sleeping a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(pred: Callable[[], T], timeout_s: float = 10.0, step_s: float = 0.01) -> T:
    """Call ``pred`` until it returns something true or ``timeout_s`` passes; returns its last
    value (so ``assert wait_until(...)`` fails with what it saw last)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step_s)
