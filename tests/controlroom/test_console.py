"""The operator's console through FastAPI: error pages for browsers (JSON for API clients),
the review queue, thumbnails, undo, bulk reject, next/previous, the unreviewed count, unit
health in words, the map without tiles and the crop placeholder."""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controlroom import commands, db, users
from controlroom.config import Config, parse_config
from controlroom.ingest import Ingest, Message
from controlroom.web import create_app
from controlroom.web.deps import UNDO_WINDOW_S, fmt_time, iso_time
from tests.controlroom.conftest import Unit, jpeg_bytes
from tests.controlroom.test_web import HTML, PASSWORD, audit_actions, login, put

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
]
JSON = {"Accept": "application/json"}


class FakeSink:
    """A command sink whose broker always acknowledges (as it does for a unit that is offline
    but has a persistent session)."""

    is_connected = True

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def publish_command(self, unit: str, name: str, body: dict[str, Any]) -> commands.Sent:
        self.sent.append((unit, name, body))
        return commands.Sent(True, "acknowledged")


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return parse_config(
        {"web": {"tile_url": "", "live_poll_s": 0.05}, "privacy": {"original_viewers": ["alice"]}},
        base_dir=tmp_path,
    )


@pytest.fixture
def ingest(engine: Engine, unit_a: Unit) -> Ingest:
    users.add_user(engine, "alice", PASSWORD)
    return Ingest(engine)


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


@pytest.fixture
def client(cfg: Config, engine: Engine, ingest: Ingest, sink: FakeSink) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(create_app(cfg, engine, commander=sink)) as c:
        yield c


def status_of(engine: Engine, aid: str) -> str:
    with engine.connect() as conn:
        return str(
            conn.execute(sa.select(db.alerts.c.status).where(db.alerts.c.alert_id == aid)).scalar()
        )


def main_of(html: str) -> str:
    return html[html.index("<main>") : html.index("</main>")]


# ---------------------------------------------------------------- errors


def test_browser_errors_are_pages_and_api_errors_stay_json(
    client: Any, ingest: Ingest, unit_a: Unit
) -> None:
    aid, _ = put(ingest, unit_a)
    token = login(client)
    client.post(f"/alerts/{aid}/review", data={"action": "reject", "csrf": token})
    cases = [  # (method, path, data, status, words on the page)
        (
            "post",
            f"/alerts/{aid}/review",
            {"action": "reject", "csrf": token},
            409,
            f"alert {aid} is already rejected by alice at ",
        ),
        ("get", "/alerts/unit-a-999", None, 404, "no alert 'unit-a-999'"),
        ("get", "/?since=yesterday", None, 400, "From: 'yesterday' is not a date and time"),
        (
            "post",
            "/units/unit-a/cmd/collect",
            {"csrf": token, "count": "9999", "interval_s": "2"},
            400,
            "count must be",
        ),
        ("get", "/no/such/page", None, 404, "There is no page at /no/such/page."),
        ("get", "/labels/abc.jpg", None, 422, "label_id: "),
        (
            "post",
            f"/alerts/{aid}/review",
            {"action": "reject", "csrf": "forged"},
            403,
            "CSRF token missing or wrong",
        ),
    ]
    for method, path, data, status, words in cases:
        r = client.request(method.upper(), path, data=data, headers=HTML)
        assert r.status_code == status, (path, r.text[:300])
        assert r.headers["content-type"].startswith("text/html"), path
        page = html.unescape(r.text)
        assert words in page or words[:1].upper() + words[1:] in page, (path, main_of(r.text))
        assert '<a href="/queue" id="nav-queue"' in r.text, path  # the normal page, nav too
        assert 'id="back"' in r.text or 'id="filter-error"' in r.text
        assert '"detail"' not in r.text
        r = client.request(method.upper(), path, data=data, headers=JSON)
        detail = r.json()["detail"]  # FastAPI's JSON, unchanged
        assert r.status_code == status, (path, detail)
        assert (
            words in detail
            if (isinstance(detail, str) and status != 404) or path.startswith("/alerts")
            else detail
        ), (path, detail)
    # the double review points back to the alert
    r = client.post(f"/alerts/{aid}/review", data={"action": "reject", "csrf": token}, headers=HTML)
    assert f'<a class="button" id="back" href="/alerts/{aid}">Back to alert {aid}</a>' in r.text


def test_a_bad_filter_re_shows_the_list_and_says_what_is_wrong(
    client: Any, ingest: Ingest, unit_a: Unit
) -> None:
    put(ingest, unit_a)
    login(client)
    r = client.get(
        "/", params={"since": "2026-05-02T10:00", "until": "2026-05-01T10:00"}, headers=HTML
    )
    assert r.status_code == 400
    assert (
        "From (2026-05-02T10:00) is after To (2026-05-01T10:00): no alert can match. "
        "Swap them, or clear one."
    ) in r.text
    assert 'value="2026-05-02T10:00"' in r.text
    assert 'id="filters"' in r.text
    r = client.get("/", params={"since": "2026-05-02T10:00", "until": "2026-05-01T10:00"})
    assert r.status_code == 400
    assert "is after To" in r.json()["detail"]
    assert client.get("/events", params={"since": "x"}).status_code == 400


def test_a_form_post_after_the_session_ended_says_nothing_changed(
    client: Any, ingest: Ingest, unit_a: Unit, engine: Engine
) -> None:
    aid, _ = put(ingest, unit_a)
    token = login(client)
    with engine.begin() as conn:
        conn.execute(db.web_sessions.delete())
    r = client.post(
        f"/alerts/{aid}/review",
        data={"action": "reject", "csrf": token},
        headers={**HTML, "Referer": f"http://testserver/alerts/{aid}"},
    )
    assert r.status_code == 401
    assert "nothing was changed" in r.text
    assert f'href="/login?next=/alerts/{aid}"' in r.text
    assert status_of(engine, aid) == "new"


# ---------------------------------------------------------------- the queue


def test_queue_thumbnails_next_previous_and_count(
    client: Any, ingest: Ingest, unit_a: Unit, engine: Engine
) -> None:
    big = cv2.imencode(".jpg", np.full((480, 640, 3), 120, np.uint8))[1].tobytes()
    ids = [put(ingest, unit_a, jpeg=big if i == 0 else None)[0] for i in range(3)]
    login(client)
    html = client.get("/queue").text
    assert "<title>(3) Review queue — phonewatch</title>" in html
    assert re.findall(r'data-alert-id="([^"]+)"', html) == ids  # oldest first
    assert f'src="/alerts/{ids[0]}/thumb.jpg"' in html

    r = client.get(f"/alerts/{ids[0]}/thumb.jpg")
    img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert r.status_code == 200
    assert img is not None
    assert img.shape[:2] == (240, 320)
    assert r.headers["cache-control"] == "private, no-cache"
    st = client.app.state.web
    assert (st.thumbs.misses, st.thumbs.hits) == (1, 0)
    assert client.get(f"/alerts/{ids[0]}/thumb.jpg").content == r.content
    assert st.thumbs.hits == 1  # scaled once
    r304 = client.get(f"/alerts/{ids[0]}/thumb.jpg", headers={"If-None-Match": r.headers["etag"]})
    assert r304.status_code == 304
    assert r304.content == b""
    small = client.get(f"/alerts/{ids[1]}/thumb.jpg")  # 64 px wide: never enlarged
    gray = cv2.imdecode(np.frombuffer(small.content, np.uint8), 0)
    assert gray is not None
    assert gray.shape == (48, 64)

    page = client.get(f"/alerts/{ids[1]}").text
    assert f'id="prev" href="/alerts/{ids[0]}"' in page
    assert f'id="next" href="/alerts/{ids[2]}"' in page
    assert ">2 / 3<" in page
    first = client.get(f"/alerts/{ids[0]}?unit=unit-a").text
    assert 'id="prev"' not in first
    assert f'href="/alerts/{ids[1]}?unit=unit-a"' in first


def test_reject_moves_on_and_undo_is_real_and_audited(
    client: Any, ingest: Ingest, unit_a: Unit, engine: Engine
) -> None:
    a1, a2 = put(ingest, unit_a)[0], put(ingest, unit_a)[0]
    token = login(client)
    r = client.post(
        f"/alerts/{a1}/review",
        data={"action": "reject", "note": "no phone", "csrf": token},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == f"/alerts/{a2}"
    page = client.get(f"/alerts/{a2}").text
    assert 'id="undo-bar"' in page
    assert f'name="alert_id" value="{a1}"' in page
    assert "<title>(1) " in page
    r = client.post("/review/undo", data={"alert_id": a1, "csrf": token}, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == f"/alerts/{a1}"
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.alerts).where(db.alerts.c.alert_id == a1)).one()
        undo = conn.execute(
            sa.select(db.audit.c.detail).where(db.audit.c.action == "undo")
        ).scalar()
    assert (row.status, row.reviewed_by, row.reviewed_at, row.review_note) == (
        "new",
        None,
        None,
        None,
    )
    assert str(undo).startswith("rejected by alice undone ")
    assert [a[1:] for a in audit_actions(engine)][-2:] == [("rejected", a1), ("undo", a1)]
    assert "Undone: " in client.get(f"/alerts/{a1}").text
    # a second undo of the same decision: nothing to undo any more
    r = client.post("/review/undo", data={"alert_id": a1, "csrf": token}, headers=HTML)
    assert r.status_code == 409
    assert "Cannot undo" in r.text


def test_undo_only_own_decision_within_the_window_and_before_export(
    client: Any, ingest: Ingest, unit_a: Unit, engine: Engine
) -> None:
    late, bobs, exported = (put(ingest, unit_a)[0] for _ in range(3))
    token = login(client)
    for aid in (late, exported):
        client.post(
            f"/alerts/{aid}/review", data={"action": "confirm", "sure": "yes", "csrf": token}
        )
    with engine.begin() as conn:  # decided longer ago than the window (no waiting)
        conn.execute(
            db.alerts.update()
            .where(db.alerts.c.alert_id == late)
            .values(reviewed_at=time.time() - UNDO_WINDOW_S - 1)
        )
        conn.execute(
            db.alerts.update()
            .where(db.alerts.c.alert_id == bobs)
            .values(status="rejected", reviewed_by="bob", reviewed_at=time.time())
        )
    assert client.get(f"/alerts/{exported}/bundle.zip").status_code == 200
    for aid in (late, bobs, exported):
        r = client.post("/review/undo", data={"alert_id": aid, "csrf": token})
        assert r.status_code == 409, aid
    assert [status_of(engine, a) for a in (late, bobs, exported)] == [
        "confirmed",
        "rejected",
        "confirmed",
    ]
    assert "undo" not in [a[1] for a in audit_actions(engine)]


def test_bulk_reject_of_the_selected_and_its_undo(
    client: Any, ingest: Ingest, unit_a: Unit, engine: Engine
) -> None:
    ids = [put(ingest, unit_a)[0] for _ in range(4)]
    token = login(client)
    with engine.begin() as conn:  # someone else got to one first
        conn.execute(
            db.alerts.update()
            .where(db.alerts.c.alert_id == ids[2])
            .values(status="confirmed", reviewed_by="bob", reviewed_at=time.time())
        )
    r = client.post(
        "/queue/reject",
        data={"alert_id": ids[:3], "note": "empty road", "csrf": token},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/queue"
    assert [status_of(engine, a) for a in ids] == ["rejected", "rejected", "confirmed", "new"]
    html = client.get("/queue").text
    assert "Rejected 2 alerts (1 no longer new: reviewed meanwhile)." in html
    assert re.findall(r'data-alert-id="([^"]+)"', html) == [ids[3]]
    with engine.connect() as conn:
        notes = [
            r.detail
            for r in conn.execute(sa.select(db.audit).where(db.audit.c.action == "rejected"))
        ]
    assert notes == ["bulk reject of 3: empty road"] * 2
    r = client.post(
        "/review/undo", data={"alert_id": ids[:2], "csrf": token}, follow_redirects=False
    )
    assert r.headers["location"] == "/queue"
    assert [status_of(engine, a) for a in ids[:2]] == ["new", "new"]
    assert client.post("/queue/reject", data={"csrf": token}).status_code == 400


# ---------------------------------------------------------------- the alert page


def test_alert_page_time_threshold_map_links_and_crop_placeholder(
    client: Any, ingest: Ingest, unit_a: Unit
) -> None:
    t = 1_777_630_830.0  # 2026-05-01T10:20:30Z
    aid, _ = put(ingest, unit_a, t_wall_s=t)
    login(client)
    page = client.get(f"/alerts/{aid}").text
    assert fmt_time(t) in page
    assert f'title="{iso_time(t)}"' not in page
    assert re.search(
        rf'<time datetime="{iso_time(t)}" title="2026-05-01T10:20:30(\.\d+)?Z">'
        + re.escape(fmt_time(t)),
        page,
    )
    assert "threshold 0.70" in page
    assert "0.7)" not in page
    assert 'href="geo:51.500700,-0.124600"' in page
    assert "openstreetmap.org/?mlat=51.500700&amp;mlon=-0.124600" in page
    assert "No map is shown: no tile server is configured" in page
    assert "web.tile_url" in page
    assert 'id="roi-box"' not in page
    assert "data-box" not in page
    assert 'id="evidence"' in page
    assert 'id="crop"' not in page
    assert 'id="no-crop"' in page
    assert client.get(f"/alerts/{aid}/crop.jpg").status_code == 404
    assert 'id="confirm-step" hidden' in page
    assert 'id="actionbar"' in page


def test_the_crop_the_unit_sent_is_shown_beside_the_frame(
    client: Any, ingest: Ingest, unit_a: Unit
) -> None:
    aid, _ = put(ingest, unit_a)
    seq = int(aid.rsplit("-", 1)[1])
    ingest.process([Message(f"phonewatch/unit-a/crop/{aid}", Unit.crop(seq), time.time())])
    login(client)
    page = client.get(f"/alerts/{aid}").text
    assert 'id="crop"' in page
    assert 'id="no-crop"' not in page
    r = client.get(f"/alerts/{aid}/crop.jpg")
    assert r.status_code == 200
    assert r.content == Unit.crop(seq)


def test_every_time_on_every_page_has_one_format(client: Any, ingest: Ingest, unit_a: Unit) -> None:
    aid, _ = put(ingest, unit_a)
    put(ingest, unit_a)
    token = login(client)
    client.post(f"/alerts/{aid}/review", data={"action": "reject", "csrf": token})
    client.post("/units/unit-a/cmd/snapshot", data={"csrf": token})
    shape = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z][A-Za-z0-9+-]+"
    for path in ("/", "/queue", f"/alerts/{aid}", "/units/unit-a", "/audit"):
        main = main_of(client.get(path).text)
        times = re.findall(r"<time [^>]*>([^<]*)</time>", main)
        assert times, path
        assert all(re.fullmatch(shape, x) for x in times), (path, times)
        iso = re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", re.sub(r'"[^"]*"', "", main))
        assert iso is None, (path, iso)  # ISO only on hover (in attributes)


# ---------------------------------------------------------------- units


def test_units_page_says_queued_for_an_offline_unit_and_has_no_raw_values(
    client: Any, ingest: Ingest, sink: FakeSink
) -> None:
    token = login(client)
    r = client.post("/units/unit-a/cmd/snapshot", data={"csrf": token})
    assert sink.sent[0][:2] == ("unit-a", "snapshot")
    assert re.search(
        r"Snapshot request sent to unit-a \(request [0-9a-f]{12}\) and queued: "
        r"unit-a is offline \(Never heard from\), so the broker keeps it and "
        r"delivers it when the unit reconnects; the snapshot then appears on its "
        r"page\.",
        r.text,
    )
    client.post("/units/unit-a/cmd/collect", data={"csrf": token, "count": "25", "interval_s": "2"})
    html = client.get("/units/unit-a").text
    assert 'Collect 25 crops per ROI, one every 2 s — <span class="good">sent</span>' in html
    assert '"payload"' not in html
    assert "{&#34;" not in html
    assert "<label>Crops per ROI (1–500) <input" in html
    assert "<label>Minutes (0 unmutes) <input" in html
    audit = client.get("/audit").text
    assert "Take a snapshot" not in audit
    assert 'Snapshot — <span class="good">sent' in audit
    assert '"payload"' not in audit
    assert "&#34;payload&#34;" not in audit
    units = client.get("/units").text
    assert 'class="unit-card health-offline"' in units
    assert "0 online" in units


def test_receiver_counters_in_words() -> None:
    from controlroom.web.units import receiver_facts

    got = receiver_facts(
        {
            "received": 5,
            "stored": 3,
            "connected": True,
            "rejected": {},
            "rejected_total": 0,
            "backlog": 0,
        }
    )
    assert got == {
        "connected": True,
        "facts": [("Messages received", 5), ("Alerts stored", 3), ("Waiting to be stored", 0)],
        "rejected": [],
        "rejected_total": 0,
    }
    off = receiver_facts({"connected": False, "rejected": {"schema": 2}, "rejected_total": 2})
    assert off is not None
    assert off["rejected"] == [("schema", 2)]


def test_thumbnail_of_a_missing_frame_is_404(
    client: Any, ingest: Ingest, unit_a: Unit, engine: Engine
) -> None:
    payload, _ = unit_a.alert(jpeg=jpeg_bytes(3))
    from controlroom.ingest import Message

    ingest.process([Message("phonewatch/unit-a/alert", payload, time.time())])
    aid = json.loads(payload)["alert_id"]
    login(client)
    assert client.get(f"/alerts/{aid}/thumb.jpg").status_code == 404
    assert (
        "no frame yet" in client.get("/queue").text
        or f"/alerts/{aid}/thumb.jpg" in client.get("/queue").text
    )


def test_with_a_tile_server_the_map_is_shown(
    tmp_path: Path, engine: Engine, ingest: Ingest, unit_a: Unit
) -> None:
    from fastapi.testclient import TestClient

    cfg = parse_config(
        {
            "web": {
                "tile_url": "https://tiles.example/{z}/{x}/{y}.png",
                "tile_attribution": "© OpenStreetMap contributors",
            }
        },
        base_dir=tmp_path,
    )
    aid, _ = put(ingest, unit_a)
    with TestClient(create_app(cfg, engine)) as c:
        login(c)
        page = c.get(f"/alerts/{aid}").text
    assert 'data-tiles="https://tiles.example/{z}/{x}/{y}.png"' in page
    assert 'src="/static/leaflet/leaflet.js"' in page
    assert 'id="no-tiles"' not in page
    assert 'href="geo:51.500700,-0.124600"' in page


def test_roi_box_only_when_the_alert_carries_one() -> None:
    from controlroom.web.alerts import roi_box, threshold_text

    assert roi_box({"roi": "lane1"}) is None
    assert roi_box({"roi_box": [10, 20, 300, 200]}) == [10.0, 20.0, 300.0, 200.0]
    assert roi_box({"roi_box": [10, 20, 0, 200]}) is None
    assert roi_box({"roi_box": "10,20,30,40"}) is None
    assert roi_box(None) is None
    assert threshold_text(0.453125) == "0.45"
    assert threshold_text(None) == "—"
