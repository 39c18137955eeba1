from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def shared_data() -> Path:
    env = os.environ.get("PHONEWATCH_SHARED_DATA")
    return Path(env) if env else (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def nmea_dir() -> Path:
    d = shared_data() / "nmea"
    if not d.is_dir():
        pytest.skip(f"shared NMEA captures not found at {d}")
    return d
