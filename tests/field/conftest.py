"""Shared fixtures for the field tests: gpiozero's own MockFactory, a hand-set clock."""

from __future__ import annotations

from collections.abc import Iterator
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
