"""Shared fixtures for the field tests: gpiozero's own MockFactory, a hand-stepped clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from edge.core.clock import ManualClock

__all__ = ["REPO", "ManualClock", "clock", "factory"]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()
