"""Shared fixtures for the field tests: gpiozero's own MockFactory, a hand-set clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

REPO = Path(__file__).resolve().parents[2]


class ManualClock:
    def __init__(self, t_s: float = 1000.0) -> None:
        self.t_s = t_s

    def monotonic(self) -> float:
        return self.t_s

    def wall(self) -> float:
        return 1.7e9 + self.t_s


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def wait_for(cond: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return cond()
