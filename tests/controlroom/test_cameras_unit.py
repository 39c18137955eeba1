"""A unit with two cameras, end to end: files -> shared inference -> signed alerts with their
camera ids -> Mosquitto -> the control room's receiver -> SQLite; and its heartbeat's cameras."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controlroom import db
from edge.app.cli_unit import run_unit
from edge.app.compose import Unit
from edge.app.config import parse_config
from edge.app.local_broker import LocalBroker
from tests.app.test_cameras import image_folder
from tests.app.test_pipeline import RIGHT
from tests.controlroom.test_delivery import FAST_RECEIPTS, UNIT, receiver_for, register

pytestmark = pytest.mark.slow  # (the conftest skips the lot without Mosquitto)


def two_camera_config(
    tmp_path: Path, north: Path, south: Path, model: Path, sink: dict[str, Any]
) -> dict[str, Any]:
    rois = [
        {"id": "left", "rect": [0.05, 0.1, 0.45, 0.9], "margin": 0.0},
        {"id": "right", "rect": [0.55, 0.1, 0.95, 0.9], "margin": 0.0},
    ]
    return {
        "unit": {"id": UNIT, "data_dir": str(tmp_path / "unit")},
        "model": {"path": str(model), "threshold": 0.7},
        "decider": {"window": 5, "min_frames": 3, "cooldown_s": 0},
        "sink": sink,
        "cameras": [
            {"id": "north", "source": {"type": "replay", "path": str(north)}, "rois": rois},
            {"id": "south", "source": {"type": "folder", "path": str(south)}, "rois": rois},
        ],
    }


def test_alerts_reach_the_control_room_with_their_camera_ids(
    tmp_path: Path,
    engine: Engine,
    make_video: Callable[..., Path],
    brightness_model: Path,
) -> None:
    register(engine, tmp_path / "unit")
    north = make_video([20] * 10 + [240] * 12 + [20] * 10, box=(0.1, 0.2, 0.4, 0.8))
    south = image_folder(tmp_path / "south", [20] * 5 + [240] * 12 + [20] * 5, RIGHT)
    with LocalBroker() as broker:
        receiver = receiver_for(broker, engine)
        try:
            sink = {**broker.sink_settings(UNIT), **FAST_RECEIPTS}
            cfg = parse_config(two_camera_config(tmp_path, north, south, brightness_model, sink))
            result = run_unit(cfg, offline=True)  # waits until the control room receipted
        finally:
            receiver.close()
    assert result["exit_code"] == 0
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(db.alerts.c.camera, db.alerts.c.roi).where(db.alerts.c.unit == UNIT)
        ).all()
    assert sorted(tuple(r) for r in rows) == [("north", "left"), ("south", "right")]


def test_the_heartbeat_names_each_camera(
    tmp_path: Path, make_video: Callable[..., Path], brightness_model: Path
) -> None:
    north = make_video([20] * 10, box=(0.1, 0.2, 0.4, 0.8))
    south = image_folder(tmp_path / "south", [20] * 5, RIGHT)
    sink = {"type": "jsonl", "path": str(tmp_path / "alerts.jsonl")}
    cfg = parse_config(two_camera_config(tmp_path, north, south, brightness_model, sink))
    with Unit(cfg, lossless=True, speed=0.0) as unit:
        unit.run()
        cams = unit._heartbeat_cameras()
        assert unit._heartbeat_vehicles() is None
    assert cams is not None
    assert set(cams) == {"north", "south"}
    assert cams["north"]["dropped"] == 0
    assert cams["south"]["last_error"] is None
    assert cams["north"]["status"] in ("running", "stopped")
