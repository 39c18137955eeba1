"""What the dashboard shows of a frame: all but the driver's region blurred; the original
for the users who need it, every view audited (issue 19, "Privacy")."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controlroom import db, privacy, users
from controlroom.config import Config, parse_config
from controlroom.ingest import Ingest, Message
from controlroom.web import create_app
from tests.controlroom.conftest import Unit

PASSWORD = "correct horse battery"
W, H = 640, 360
BOX = (400, 60, 160, 200)  # x, y, w, h: the driver's window


def noise_jpeg(seed: int = 3) -> bytes:
    img = np.random.default_rng(seed).integers(0, 255, (H, W, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return bytes(buf.tobytes())


def decode(jpeg: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img.astype(np.int16)


def detail(img: np.ndarray) -> float:
    """Mean absolute difference between horizontal neighbours: high for a sharp noise image,
    near zero once it is blurred."""
    return float(np.abs(np.diff(img, axis=1)).mean())


def test_redact_keeps_the_region_and_blurs_everything_else() -> None:
    img = decode(noise_jpeg()).astype(np.uint8)
    out = privacy.redact(img, [float(v) for v in BOX])
    x, y, w, h = BOX
    assert np.array_equal(out[y : y + h, x : x + w], img[y : y + h, x : x + w])
    assert detail(img.astype(np.int16)) > 40
    assert detail(out[:, : x - 1].astype(np.int16)) < 3  # left of the box: no detail left
    assert detail(out[y + h + 1 :, :].astype(np.int16)) < 3  # below it
    whole = privacy.redact(img, None)  # no box: nothing stays sharp
    assert detail(whole.astype(np.int16)) < 3
    # a box reaching past the frame is clipped, not an error
    edge = privacy.redact(img, [600.0, 300.0, 500.0, 500.0])
    assert np.array_equal(edge[300:, 600:], img[300:, 600:])
    assert privacy.redact_jpeg(b"not a jpeg", None) is None


@pytest.fixture
def ingest(engine: Engine, unit_a: Unit) -> Ingest:
    users.add_user(engine, "alice", PASSWORD)  # evidence officer
    users.add_user(engine, "bob", PASSWORD)  # operator
    return Ingest(engine)


def make_client(tmp_path: Path, engine: Engine, **privacy_cfg: Any) -> Any:
    from fastapi.testclient import TestClient

    cfg: Config = parse_config({"web": {"tile_url": ""}, "privacy": privacy_cfg}, base_dir=tmp_path)
    return TestClient(create_app(cfg, engine))


@pytest.fixture
def client(tmp_path: Path, engine: Engine, ingest: Ingest) -> Iterator[Any]:
    with make_client(tmp_path, engine, original_viewers=["alice"]) as c:
        yield c


def put(ingest: Ingest, unit: Unit, jpeg: bytes, **kw: Any) -> str:
    payload, _ = unit.alert(jpeg=jpeg, **kw)
    aid = str(json.loads(payload)["alert_id"])
    t = f"phonewatch/{unit.unit_id}"
    ingest.process([Message(f"{t}/alert", payload, 0.0), Message(f"{t}/evidence/{aid}", jpeg, 0.0)])
    return aid


def login(c: Any, user: str) -> str:
    from tests.controlroom.test_web import login as web_login

    c.cookies.clear()  # one user after another on the same client
    return web_login(c, user, PASSWORD)


def audited(engine: Engine, action: str) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(db.audit.c.username, db.audit.c.target).where(db.audit.c.action == action)
        )
        return [(r.username, r.target) for r in rows]


@pytest.mark.slow
def test_the_screen_shows_only_the_driver_region_and_the_original_is_audited(
    client: Any, ingest: Ingest, unit_a: Unit, engine: Engine
) -> None:
    jpeg = noise_jpeg()
    aid = put(ingest, unit_a, jpeg, roi_box=BOX)
    token = login(client, "bob")
    page = client.get(f"/alerts/{aid}").text
    assert 'data-box="400.0,60.0,160.0,200.0"' in page
    assert "everything outside region lane1" in page
    assert 'id="original"' not in page
    shown = client.get(f"/alerts/{aid}/evidence.jpg")
    assert shown.status_code == 200
    sharp, blurred = decode(jpeg), decode(shown.content)
    x, y, w, h = BOX
    inside = np.abs(blurred[y : y + h, x : x + w] - sharp[y : y + h, x : x + w]).mean()
    assert inside < 12  # the driver's window: as sharp as a re-encoded JPEG
    assert detail(blurred[:, : x - 8]) < 5 < 40 < detail(sharp[:, : x - 8])
    thumb = decode(client.get(f"/alerts/{aid}/thumb.jpg").content)
    assert detail(thumb[:, : int(thumb.shape[1] * 0.55)]) < 5  # the queue's thumbnail too
    # an operator may not open the original nor export the court bundle that holds it
    assert client.get(f"/alerts/{aid}/original.jpg").status_code == 403
    client.post(f"/alerts/{aid}/review", data={"action": "confirm", "sure": "yes", "csrf": token})
    page = client.get(f"/alerts/{aid}").text
    assert 'id="no-bundle"' in page
    assert 'id="bundle"' not in page
    assert client.get(f"/alerts/{aid}/bundle.zip").status_code == 403
    assert audited(engine, "view_original") == []

    login(client, "alice")  # the evidence officer
    page = client.get(f"/alerts/{aid}").text
    assert f'href="/alerts/{aid}/original.jpg"' in page
    assert client.get(f"/alerts/{aid}/original.jpg").content == jpeg
    assert audited(engine, "view_original") == [("alice", aid)]
    r = client.get(f"/alerts/{aid}/bundle.zip")
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert z.read("evidence.jpg") == jpeg  # the court gets the frame the unit signed
    assert audited(engine, "export") == [("alice", aid)]


@pytest.mark.slow
def test_without_a_region_box_the_whole_frame_is_blurred_and_blur_can_be_off(
    tmp_path: Path, engine: Engine, ingest: Ingest, unit_a: Unit
) -> None:
    jpeg = noise_jpeg(5)
    aid = put(ingest, unit_a, jpeg)  # an older unit: the ROI id only
    with make_client(tmp_path, engine) as c:
        login(c, "alice")
        page = c.get(f"/alerts/{aid}").text
        assert "the whole frame (this unit sent no region box)" in page
        assert detail(decode(c.get(f"/alerts/{aid}/evidence.jpg").content)) < 5
        assert c.get(f"/alerts/{aid}/original.jpg").status_code == 403  # nobody named
    with make_client(tmp_path, engine, blur="off") as c:
        login(c, "bob")
        assert c.get(f"/alerts/{aid}/evidence.jpg").content == jpeg
        assert 'id="blur-note"' not in c.get(f"/alerts/{aid}").text


def test_privacy_config_is_strict(tmp_path: Path) -> None:
    from edge.core.errors import ConfigError

    with pytest.raises(ConfigError, match="blur"):
        parse_config({"privacy": {"blur": "faces"}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="viewers"):
        parse_config({"privacy": {"viewers": ["alice"]}}, base_dir=tmp_path)


@pytest.mark.slow
def test_the_alert_page_says_when_retention_deletes_it(
    client: Any, ingest: Ingest, unit_a: Unit, engine: Engine
) -> None:
    from controlroom.retention import alert_due
    from controlroom.web.deps import fmt_time

    aid = put(ingest, unit_a, noise_jpeg(), roi_box=BOX)
    token = login(client, "alice")
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.alerts).where(db.alerts.c.alert_id == aid)).one()
    page = client.get(f"/alerts/{aid}").text
    assert "if nobody reviews it, this alert and its evidence are purged" in page
    assert fmt_time(row.received_at + 30 * 86400.0) in page  # unreviewed_days (30)
    client.post(f"/alerts/{aid}/review", data={"action": "reject", "csrf": token})
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.alerts).where(db.alerts.c.alert_id == aid)).one()
    page = client.get(f"/alerts/{aid}").text
    assert "the frame, crop and clip of this rejected alert are deleted" in page
    assert fmt_time(row.reviewed_at + 3600.0) in page  # rejected_evidence_s (3600)
    cfg = parse_config({}, base_dir=Path(".")).retention
    gone = SimpleNamespace(**{**row._asdict(), "evidence_deleted_at": 1.0})
    assert alert_due(gone, cfg) is None  # already deleted: nothing more is due until a purge
    confirmed = SimpleNamespace(**{**row._asdict(), "status": "confirmed"})
    assert alert_due(confirmed, cfg) == ("alert", row.reviewed_at + 365 * 86400.0)
