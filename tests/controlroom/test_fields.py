"""Camera id and tracked vehicle in the control room (issues 21 and 22): stored through a real
receiver and broker, hostile values refused with a reason, migration 11 on a version 10
database (SQLite and PostgreSQL), the alert list's camera column and filter, the alert page,
the court bundle and the Units page's per-camera status."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controlroom import db, users
from controlroom.config import Config, parse_config
from controlroom.ingest import Ingest, Message
from controlroom.receiver import Receiver
from controlroom.web import create_app
from edge.adapters.mqtt import MqttUplink
from edge.app.heartbeat import StatsEmitter
from edge.app.local_broker import LocalBroker
from edge.common.signing import generate_key, sign_alert
from edge.core import messages as m
from edge.core.ports import Detection, VehicleInfo
from tests.controlroom.conftest import (
    Publisher,
    Unit,
    pg_database,
    raw_pub_b64,
    status_and_heartbeat,
)
from tests.controlroom.test_delivery import UNIT, receiver_for, stored_seqs
from tests.controlroom.test_delivery import unit as unit  # the fixture
from tests.controlroom.test_web import PASSWORD, login, put
from tests.uplink.conftest import make_detection as make_detection
from tests.waiting import wait_until

CAR = VehicleInfo(track_id=42, box=(8, 6, 40, 30), label="car", frames=17)
FRAME = (64, 48)  # the test Unit's evidence JPEG size
FIELDS: dict[str, Any] = {"camera": "north", "vehicle": CAR, "frame_size": FRAME}


def _resigned(unit: Unit, payload: bytes, change: Any) -> bytes:
    """``payload`` changed by ``change(alert)`` and signed again with the unit's own key (so
    only the field is wrong, never the signature)."""
    alert = json.loads(payload)
    alert.pop("signature")
    change(alert)
    return m.encode(sign_alert(alert, unit.key))


def _columns(engine: Engine, aid: str) -> tuple[Any, ...]:
    a = db.alerts.c
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(
                a.camera, a.vehicle_track_id, a.vehicle_label, a.vehicle_box, a.vehicle_frames
            ).where(a.alert_id == aid)
        ).one()
    return tuple(row)


@pytest.mark.slow
def test_receiver_stores_camera_and_vehicle_and_refuses_hostile_ones(
    receiver: Receiver, publisher: Publisher, engine: Engine, unit_a: Unit
) -> None:
    topic = "phonewatch/unit-a/alert"
    new, _ = unit_a.alert(seq=1, **FIELDS)
    old, _ = unit_a.alert(seq=2)  # a single-camera, fixed-ROI unit, or an older one
    hostile = [
        _resigned(unit_a, unit_a.alert(seq=3, **FIELDS)[0], change)
        for change in (
            lambda a: a.__setitem__("camera", "c" * 33),  # overlong camera id
            lambda a: a["vehicle"].__setitem__("track_id", -4),  # negative track id
            lambda a: a["vehicle"].__setitem__("box", [40, 30, 40, 30]),  # out of the frame
            lambda a: a["vehicle"].__setitem__("label", "<img src=x>"),
        )
    ]
    for payload in (new, old, *hostile):
        publisher.publish(topic, payload)
    assert wait_until(lambda: receiver.stats().get("stored") == 2, timeout_s=10)
    assert wait_until(lambda: receiver.stats()["rejected"].get("schema") == 4, timeout_s=10)
    assert receiver.stats()["rejected_total"] == 4
    assert _columns(engine, "unit-a-1") == ("north", 42, "car", "8,6,40,30", 17)
    assert _columns(engine, "unit-a-2") == (None, None, None, None, None)
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(db.alerts.c.payload).where(db.alerts.c.alert_id == "unit-a-1")
        ).scalar_one()
        seqs = sorted(r[0] for r in conn.execute(sa.select(db.alerts.c.seq)))
    assert stored.encode() == new  # the signed alert exactly as it came
    assert seqs == [1, 2]  # a good alert 3 (fixed) is still welcome: nothing was stored for it


def _why(ingest: Ingest, unit: Unit, change: Any) -> list[str]:
    """Why ``ingest`` refused the unit's alert changed by ``change`` (and signed again)."""
    payload = _resigned(unit, unit.alert(seq=99, **FIELDS)[0], change)
    seen: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ingest, "_reject", lambda reason, topic, detail: seen.append(detail))
        assert ingest.process([Message("phonewatch/unit-a/alert", payload, time.time())]) == []
    return seen


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda a: a.__setitem__("camera", "c" * 33), "camera: does not match"),
        (lambda a: a["vehicle"].__setitem__("track_id", -1), "vehicle.track_id: must be >= 0"),
        (
            lambda a: a["vehicle"].__setitem__("box", [60, 0, 10, 10]),
            "vehicle.box: [60, 0, 10, 10] reaches outside the 64x48 evidence frame",
        ),
        (
            lambda a: a.__setitem__("roi_box", [0, 40, 10, 10]),
            "roi_box: [0, 40, 10, 10] reaches outside the 64x48 evidence frame",
        ),
    ],
)
def test_reject_reasons_name_the_field(engine: Engine, unit_a: Unit, change: Any, why: str) -> None:
    (said,) = _why(Ingest(engine), unit_a, change)
    assert said.startswith(why), said


# ---------------------------------------------------------------- migration 11


def _make_version_10(engine: Engine) -> None:
    """A database as version 10 made it: alerts without the camera and vehicle columns."""
    assert db.migrate(engine, target=10) == 10
    with engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_alerts_camera"))
        for name in db.ALERT_V11_COLUMNS:
            conn.execute(sa.text(f"ALTER TABLE alerts DROP COLUMN {name}"))
        conn.execute(
            sa.text(
                "INSERT INTO alerts (unit, seq, alert_id, received_at, payload_sha256, status)"
                " VALUES ('unit-a', 1, 'unit-a-1', 5.0, 'ab', 'new')"
            )
        )
    assert "camera" not in {c["name"] for c in sa.inspect(engine).get_columns("alerts")}


def _check_version_11(engine: Engine) -> None:
    assert db.migrate(engine) == db.LATEST_VERSION == 11
    assert db.migrate(engine) == 11  # again: nothing to do
    cols = {c["name"] for c in sa.inspect(engine).get_columns("alerts")}
    assert set(db.ALERT_V11_COLUMNS) <= cols
    assert "ix_alerts_camera" in {ix["name"] for ix in sa.inspect(engine).get_indexes("alerts")}
    with engine.connect() as conn:
        old = conn.execute(sa.select(db.alerts).where(db.alerts.c.alert_id == "unit-a-1")).one()
    assert (old.seq, old.camera, old.vehicle_track_id) == (1, None, None)


def test_a_version_10_database_gains_the_columns_and_keeps_its_alerts(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'v10.sqlite'}")
    try:
        _migrate_then_store(engine)
    finally:
        engine.dispose()


def _pub(unit: Unit) -> str:
    return raw_pub_b64(unit.key)


def _migrate_then_store(engine: Engine) -> None:
    """A version-10 database migrated to 11 keeps its alerts and stores the new fields."""
    _make_version_10(engine)
    _check_version_11(engine)
    unit = Unit("unit-a", generate_key())
    db.upsert_unit(engine, "unit-a", _pub(unit), "0" * 16)
    aid, _ = put(Ingest(engine), unit, seq=2, **FIELDS)
    assert _columns(engine, aid) == ("north", 42, "car", "8,6,40,30", 17)


@pytest.mark.slow
def test_migration_11_and_storage_on_postgres(postgres_url: str) -> None:
    with pg_database(postgres_url) as url:
        engine = db.make_engine(url)
        try:
            _migrate_then_store(engine)
        finally:
            engine.dispose()


# ---------------------------------------------------------------- the console


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return parse_config(
        {"web": {"tile_url": "", "live_poll_s": 0.05}, "privacy": {"original_viewers": ["alice"]}},
        base_dir=tmp_path,
    )


@pytest.fixture
def client(cfg: Config, engine: Engine, unit_a: Unit) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    users.add_user(engine, "alice", PASSWORD)
    with TestClient(create_app(cfg, engine)) as c:
        login(c)
        yield c


def _rows(html: str) -> list[str]:
    body = html[html.index("<tbody>") : html.index("</tbody>")]
    return [r for r in body.split("<tr")[1:] if "data-id" in r]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_list_shows_and_filters_by_camera(client: Any, engine: Engine, unit_a: Unit) -> None:
    ingest = Ingest(engine)
    plain, _ = put(ingest, unit_a)
    assert "Camera" not in client.get("/").text  # no camera anywhere: no column, no filter
    north, _ = put(ingest, unit_a, **FIELDS)
    side, _ = put(ingest, unit_a, camera="side-2")
    page = client.get("/").text
    assert 'id="camera-filter"' in page
    assert '<option value="north"' in page
    assert '<option value="side-2"' in page
    rows = _rows(page)
    assert len(rows) == 3
    by_id = {aid: next(r for r in rows if f">{aid}<" in r) for aid in (plain, north, side)}
    assert 'class="camera">north <span class="muted">#42 car</span>' in by_id[north]
    assert 'class="camera">side-2</td>' in by_id[side]
    assert 'class="camera">—</td>' in by_id[plain]
    only = _rows(client.get("/?camera=north").text)
    assert len(only) == 1
    assert north in only[0]
    bad = client.get("/?camera=no%20such/camera", headers={"Accept": "text/html"})
    assert bad.status_code == 400
    assert "Camera must be a camera id" in bad.text
    assert _rows(client.get("/?camera=east").text) == []


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_alert_page_names_the_camera_and_the_vehicle(
    client: Any, engine: Engine, unit_a: Unit
) -> None:
    ingest = Ingest(engine)
    aid, _ = put(ingest, unit_a, roi_box=(20, 10, 16, 12), **FIELDS)
    page = client.get(f"/alerts/{aid}").text
    assert 'camera <strong id="summary-camera">north</strong>' in page
    assert '<dd id="camera">north</dd>' in page
    assert 'data-box="20.0,10.0,16.0,12.0"' in page
    assert 'data-vehicle-box="8.0,6.0,40.0,30.0" data-vehicle-label="#42 car"' in page
    assert "car, track 42, seen in 17 frames before the alert; box 8, 6, 40, 30" in page
    plain, _ = put(ingest, unit_a)
    page = client.get(f"/alerts/{plain}").text
    assert "data-vehicle-box" not in page
    assert 'id="camera"' not in page


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_court_bundle_carries_the_signed_camera_and_vehicle(
    client: Any, engine: Engine, unit_a: Unit
) -> None:
    aid, _ = put(Ingest(engine), unit_a, **FIELDS)
    with engine.begin() as conn:
        conn.execute(
            db.alerts.update()
            .where(db.alerts.c.alert_id == aid)
            .values(status="confirmed", reviewed_by="alice", reviewed_at=time.time())
        )
        conn.execute(
            db.units.update().where(db.units.c.unit_id == "unit-a").values(public_key=_pub(unit_a))
        )
    r = client.get(f"/alerts/{aid}/bundle.zip")
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        alert = json.loads(z.read("alert.json"))
        verify = z.read("VERIFY.txt").decode()
    assert alert["camera"] == "north"
    assert alert["vehicle"] == {"track_id": 42, "box": [8, 6, 40, 30], "label": "car", "frames": 17}
    assert "seen by the unit's camera 'north'" in verify
    assert "vehicle car (track 42, seen in 17 frames)" in verify
    assert "x 8, y 6, width 40, height 30 pixels" in verify


def _beat(engine: Engine, unit: str, **parts: Any) -> None:
    now = time.time()
    st, hb = status_and_heartbeat(unit, now)
    hb = copy.deepcopy(hb)
    if "cameras" in parts:
        hb["cameras"] = m.heartbeat_cameras(parts["cameras"])
    if "vehicles" in parts:
        hb["vehicles"] = m.heartbeat_vehicles(parts["vehicles"])
    Ingest(engine).process(
        [
            Message(f"phonewatch/{unit}/status", m.encode(st), now),
            Message(f"phonewatch/{unit}/heartbeat", m.encode(hb), now),
        ]
    )


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_units_page_shows_each_camera_and_a_dead_one_degrades_the_unit(
    client: Any, engine: Engine, unit_a: Unit
) -> None:
    _beat(engine, "unit-a")
    page = client.get("/units").text
    assert "camera-status" not in page  # a single-camera unit: as before
    assert 'data-state="online"' in page
    cameras = {
        "north": {"status": "running", "fps": 29.9, "dropped": 0, "last_error": None},
        "side-2": {"status": "degraded", "fps": None, "dropped": 312, "last_error": "no frames"},
    }
    _beat(engine, "unit-a", cameras=cameras, vehicles={"tracks_per_min": 7.5, "active": 2})
    for path in ("/units", "/units/unit-a"):
        page = client.get(path).text
        assert '<tr class="camera-row" data-camera="north" data-status="running">' in page
        assert "<td>29.9 frames/s</td>" in page
        assert '<td class="bad">degraded</td><td>—</td><td>312</td><td>no frames</td>' in page
        assert "2 tracked now, 7.5 tracks/min" in page
        assert "Camera side-2 degraded: no frames" in page
    assert 'data-state="degraded"' in client.get("/units").text


# ---------------------------------------------------------------- end to end


@pytest.mark.slow
def test_the_units_own_uplink_carries_camera_vehicle_and_cameras_to_the_control_room(
    engine: Engine,
    unit: Callable[[LocalBroker], MqttUplink],
    make_detection: Callable[..., Detection],
) -> None:
    """Detection -> signed alert in the outbox -> MQTT -> receiver -> SQLite, and a heartbeat
    with per-camera figures onto the Units page's row."""
    with LocalBroker() as broker:
        r = receiver_for(broker, engine)
        up = unit(broker)
        try:
            assert up.wait_connected(10)
            seen = VehicleInfo(track_id=7, box=(4, 4, 30, 20), label="van", frames=12)
            up.send(
                dataclasses.replace(
                    make_detection(), camera_id="north", vehicle=seen, frame_size=FRAME
                )
            )
            up.send(make_detection())  # a single-camera detection, as before
            assert wait_until(lambda: len(stored_seqs(engine)) == 2, timeout_s=20)
            assert up.wait_drained(20)
            first, second = (f"{UNIT}-{s}" for s in stored_seqs(engine))
            assert _columns(engine, first) == ("north", 7, "van", "4,4,30,20", 12)
            assert _columns(engine, second) == (None, None, None, None, None)
            beat = StatsEmitter(
                unit_id=UNIT,
                uplink=up,
                interval_s=60,
                pipeline_stats=dict,
                cameras=lambda: {
                    "north": {"status": "running", "fps": 30.0, "dropped": 0, "last_error": None}
                },
            ).build()
            assert up.publish_heartbeat(beat)
            assert wait_until(lambda: _heartbeat_of(engine, UNIT).get("cameras"), timeout_s=10)
            assert _heartbeat_of(engine, UNIT)["cameras"]["north"]["status"] == "running"
        finally:
            r.close()


def _heartbeat_of(engine: Engine, unit_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        text = conn.execute(
            sa.select(db.units.c.heartbeat).where(db.units.c.unit_id == unit_id)
        ).scalar()
    return json.loads(text) if text else {}
