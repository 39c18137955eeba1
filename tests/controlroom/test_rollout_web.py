"""The Units page shows each unit's models (from its heartbeat's ``model`` object, when it sends
one) and its latest rollout as the unit reported it."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from controlroom import db, rollout, users
from controlroom.config import Config, parse_config
from controlroom.ingest import Ingest, Message
from controlroom.web import create_app
from edge.common import model_package as mp
from edge.common.signing import generate_key
from edge.core import messages as m
from tests.controlroom.conftest import Unit, status_and_heartbeat

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
]

DATA = Path(__file__).resolve().parents[1] / "data"
PASSWORD = "correct horse battery"


@pytest.fixture
def client(tmp_path: Path, engine: Engine, unit_a: Unit) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    users.add_user(engine, "alice", PASSWORD)
    cfg: Config = parse_config({"web": {"tile_url": ""}}, base_dir=tmp_path)
    with TestClient(create_app(cfg, engine)) as c:
        token = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text)
        assert token
        r = c.post(
            "/login",
            data={"username": "alice", "password": PASSWORD, "csrf": token.group(1), "next": "/"},
            follow_redirects=False,
        )
        assert r.status_code == 303
        yield c


def card(client: Any) -> str:
    html = client.get("/units").text
    found = re.search(r'<p class="model" id="model-unit-a">(.*?)</p>', html, re.S)
    assert found, "no model line on unit A's card"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", found.group(1)))


def status(unit: str, sha: str, event: str, **kw: Any) -> tuple[str, bytes, float]:
    doc = m.build_model_status(
        unit, t_wall_s=time.time(), package_sha256=sha, version="test-1", event=event, **kw
    )
    return f"phonewatch/{unit}/model/status", m.encode(doc), time.time()


def test_units_page_shows_the_live_model_shadow_and_rollout_state(
    client: Any, engine: Engine
) -> None:
    now = time.time()
    st, hb = status_and_heartbeat("unit-a", now)
    Ingest(engine).process(
        [
            Message("phonewatch/unit-a/status", m.encode(st), now),
            Message("phonewatch/unit-a/heartbeat", m.encode(hb), now),
        ]
    )
    assert card(client) == "Model not reported"  # an older unit: no model object

    blob = mp.build_package(
        DATA / "brightness_int8.tflite", DATA / "brightness_int8.json", None, generate_key()
    )
    offer = rollout.make_offer(blob, mode="shadow", chunk_size=1024)
    rollout.record_offer(engine, unit="unit-a", blob=blob, offer=offer, user="alice")
    assert "rollout test-1 (shadow): offered" in card(client)

    n = len(offer.chunks)
    rollout.process_statuses(
        engine, [status("unit-a", offer.sha256, "receiving", have=2)], root="phonewatch"
    )
    assert f"rollout test-1 (shadow): receiving (2/{n} chunks)" in card(client)

    hb["model"] = {
        "live": {"name": "phone-in-hand", "version": "1.0.0", "sha256": "a" * 64},
        "previous": None,
        "state": "shadow",
        "shadow": {"name": "brightness-int8", "version": "test-1", "agreement": 0.9731},
    }
    with engine.begin() as conn:
        conn.execute(
            db.units.update()
            .where(db.units.c.unit_id == "unit-a")
            .values(heartbeat=json.dumps(hb), heartbeat_received_at=time.time())
        )
    rollout.process_statuses(
        engine,
        [
            status("unit-a", offer.sha256, "installed"),
            status("unit-a", offer.sha256, "shadow_started"),
        ],
        root="phonewatch",
    )
    line = card(client)
    assert line.startswith("Model phone-in-hand 1.0.0 (shadow) · shadow test-1, agreement 97.3 %")
    assert "rollout test-1 (shadow): in shadow" in line

    rollout.process_statuses(
        engine,
        [status("unit-a", offer.sha256, "load_failed", detail="input shape 1x96x96x3")],
        root="phonewatch",
    )
    assert "failed to load: input shape 1x96x96x3" in card(client)
