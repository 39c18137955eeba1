"""The dashboard: log-in, CSRF, audit, filters, alert page, review, retention, bundles, units,
labelling. Alerts go in through the real ingest path (checks + SQLite), pages through FastAPI."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controlroom import db, retention, users
from controlroom.app import ControlRoom
from controlroom.config import Config, parse_config
from controlroom.ingest import Ingest, Message
from controlroom.web import create_app
from edge.core import messages as m
from tests.controlroom.conftest import Unit, jpeg_bytes, status_and_heartbeat

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
]

PASSWORD = "correct horse battery"
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return parse_config(
        {"web": {"tile_url": "", "live_poll_s": 0.05}, "privacy": {"original_viewers": ["alice"]}},
        base_dir=tmp_path,
    )


@pytest.fixture
def ingest(engine: Engine, unit_a: Unit) -> Ingest:
    users.add_user(engine, "alice", PASSWORD)
    users.add_user(engine, "bob", PASSWORD)
    return Ingest(engine)


def put(ingest: Ingest, unit: Unit, **kw: Any) -> tuple[str, bytes]:
    payload, jpeg = unit.alert(**kw)
    aid = json.loads(payload)["alert_id"]
    t = f"phonewatch/{unit.unit_id}"
    ingest.process(
        [
            Message(f"{t}/alert", payload, time.time()),
            Message(f"{t}/evidence/{aid}", jpeg, time.time()),
        ]
    )
    return aid, jpeg


@pytest.fixture
def client(cfg: Config, engine: Engine, ingest: Ingest) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(create_app(cfg, engine)) as c:
        yield c


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "page has no CSRF token"
    return found.group(1)


def login(c: Any, user: str = "alice", password: str = PASSWORD) -> str:
    token = csrf_of(c.get("/login").text)
    r = c.post(
        "/login",
        data={"username": user, "password": password, "csrf": token, "next": "/"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    return csrf_of(c.get("/").text)


def audit_actions(engine: Engine) -> list[tuple[str, str, str | None]]:
    with engine.connect() as conn:
        return [
            (r.username, r.action, r.target)
            for r in conn.execute(sa.select(db.audit).order_by(db.audit.c.id))
        ]


def test_every_page_needs_a_login(client: Any, ingest: Ingest, unit_a: Unit) -> None:
    aid, _ = put(ingest, unit_a)
    for path in (
        "/",
        "/units",
        "/audit",
        "/labels",
        f"/alerts/{aid}",
        f"/alerts/{aid}/evidence.jpg",
        f"/alerts/{aid}/bundle.zip",
    ):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/login"), path
    assert client.get("/events", follow_redirects=False).status_code == 401
    r = client.post(
        f"/alerts/{aid}/review", data={"action": "confirm", "csrf": "x"}, follow_redirects=False
    )
    assert r.status_code == 401
    assert client.get("/healthz").json() == {"ok": True, "schema_version": db.LATEST_VERSION}


def test_wrong_password_unknown_user_and_csrf(client: Any, engine: Engine) -> None:
    token = csrf_of(client.get("/login").text)
    for user, pw in (("alice", "wrong password!"), ("mallory", PASSWORD)):
        r = client.post("/login", data={"username": user, "password": pw, "csrf": token})
        assert r.status_code == 401
        assert "Wrong user name or password" in r.text
    r = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert r.status_code == 403  # no CSRF token
    assert client.get("/", follow_redirects=False).status_code == 303
    login(client)
    assert client.get("/").status_code == 200
    assert [a[:2] for a in audit_actions(engine)][-3:] == [
        ("alice", "login_failed"),
        ("mallory", "login_failed"),
        ("alice", "login"),
    ]


def test_review_needs_csrf_and_is_audited(
    client: Any, ingest: Ingest, unit_a: Unit, engine: Engine
) -> None:
    aid, _ = put(ingest, unit_a)
    token = login(client)
    r = client.post(f"/alerts/{aid}/review", data={"action": "confirm", "csrf": "forged"})
    assert r.status_code == 403
    r = client.post(f"/alerts/{aid}/review", data={"action": "confirm", "note": "clear view"})
    assert r.status_code == 403
    with engine.connect() as conn:
        assert conn.execute(sa.select(db.alerts.c.status)).scalar() == "new"
    # confirming starts a prosecution: without the second step (sure=yes) nothing changes
    r = client.post(
        f"/alerts/{aid}/review",
        data={"action": "confirm", "note": "clear view", "csrf": token},
        follow_redirects=False,
    )
    assert r.status_code == 400
    assert "sure=yes" in r.json()["detail"]
    r = client.post(
        f"/alerts/{aid}/review",
        data={"action": "confirm", "note": "clear view", "csrf": token},
        headers=HTML,
        follow_redirects=False,
    )
    assert r.status_code == 200
    assert "Confirming starts a prosecution" in r.text
    assert 'id="confirm-step" hidden' not in r.text
    assert 'value="clear view"' in r.text
    with engine.connect() as conn:
        assert conn.execute(sa.select(db.alerts.c.status)).scalar() == "new"
    r = client.post(
        f"/alerts/{aid}/review",
        data={"action": "confirm", "note": "clear view", "sure": "yes", "csrf": token},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/queue"  # nothing left
    r = client.post(f"/alerts/{aid}/review", data={"action": "reject", "csrf": token})
    assert r.status_code == 409
    assert "already confirmed" in r.text
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.alerts)).one()
    assert (row.status, row.reviewed_by, row.review_note) == ("confirmed", "alice", "clear view")
    assert ("alice", "confirmed", aid) in audit_actions(engine)
    page = client.get(f"/alerts/{aid}").text
    assert "Confirmed by alice" in page
    assert "clear view" in page
    assert 'id="bundle"' in page


def test_logout_needs_csrf_and_ends_the_session(client: Any) -> None:
    token = login(client)
    assert client.post("/logout", data={"csrf": "nope"}).status_code == 403
    assert client.post("/logout", data={"csrf": token}, follow_redirects=False).status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 303


def test_alert_page_shows_evidence_position_and_fix(
    client: Any, ingest: Ingest, unit_a: Unit
) -> None:
    aid, jpeg = put(ingest, unit_a, score=0.875)
    no_fix, _ = put(ingest, unit_a, fix=None)
    login(client)
    page = client.get(f"/alerts/{aid}").text
    assert "51.500700, -0.124600" in page  # the plain coordinate readout
    assert "Fix 3d, quality 1, HDOP 0.9, 9 satellites, age 0.3 s" in page
    assert "phone-cls 1.2.0" in page
    assert "source: gps" in page
    assert re.search(
        r'<dd id="score"><span title="exactly 0.875; threshold exactly 0.7">0.88'
        r"</span> \(threshold 0.70;",
        page,
    )
    # no tile server configured: no empty map, a note saying how, links to map apps
    assert 'src="/static/leaflet/leaflet.js"' not in page
    assert 'id="map"' not in page
    assert 'id="no-tiles"' in page
    assert 'href="geo:51.500700,-0.124600"' in page
    r = client.get(f"/alerts/{aid}/evidence.jpg")
    assert r.status_code == 200
    assert r.content != jpeg  # blurred for the screen (tests/controlroom/test_privacy.py)
    assert r.headers["content-type"] == "image/jpeg"
    assert client.get(f"/alerts/{aid}/original.jpg").content == jpeg
    assert client.get("/static/leaflet/leaflet.js").status_code == 200
    page = client.get(f"/alerts/{no_fix}").text
    assert "No position: the unit had no GPS fix" in page
    assert 'id="map"' not in page
    assert client.get("/alerts/unit-a-999").status_code == 404


def test_filters_by_unit_status_and_time(
    client: Any, ingest: Ingest, unit_a: Unit, engine: Engine
) -> None:
    from edge.common.signing import generate_key
    from tests.controlroom.conftest import raw_pub_b64

    unit_b = Unit("unit-b", generate_key())
    db.upsert_unit(engine, "unit-b", raw_pub_b64(unit_b.key), "0" * 16)
    ingest.reload_keys()
    old, _ = put(ingest, unit_a, t_wall_s=1_700_000_000.0, fix=None)  # 2023-11-14T22:13:20Z
    new_a, _ = put(ingest, unit_a)
    new_b, _ = put(ingest, unit_b)
    token = login(client)
    client.post(f"/alerts/{new_a}/review", data={"action": "reject", "csrf": token})

    def ids(**params: str) -> set[str]:
        html = client.get("/", params=params).text
        return set(re.findall(r'<a href="/alerts/([^"]+)">', html))

    assert ids() == {old, new_a, new_b}
    assert ids(unit="unit-b") == {new_b}
    assert ids(status="rejected") == {new_a}
    assert ids(status="new", unit="unit-a") == {old}
    assert ids(until="2024-01-01T00:00") == {old}
    assert ids(since="2024-01-01T00:00") == {new_a, new_b}
    assert client.get("/", params={"since": "yesterday"}).status_code == 400


def test_retention_deletes_rejected_evidence_after_an_hour(
    client: Any, ingest: Ingest, unit_a: Unit, engine: Engine, cfg: Config
) -> None:
    rejected, _ = put(ingest, unit_a)
    confirmed, _ = put(ingest, unit_a)
    token = login(client)
    client.post(f"/alerts/{rejected}/review", data={"action": "reject", "csrf": token})
    client.post(
        f"/alerts/{confirmed}/review", data={"action": "confirm", "sure": "yes", "csrf": token}
    )
    now = time.time()
    assert retention.sweep(engine, cfg.retention, now=now + 3500)["rejected_evidence"] == 0
    assert client.get(f"/alerts/{rejected}/evidence.jpg").status_code == 200
    out = retention.sweep(engine, cfg.retention, now=now + 3601)
    assert out["rejected_evidence"] == 1
    assert out["confirmed_purged"] == 0
    assert client.get(f"/alerts/{rejected}/evidence.jpg").status_code == 404
    assert "deleted by retention" in client.get(f"/alerts/{rejected}").text
    assert client.get(f"/alerts/{confirmed}/evidence.jpg").status_code == 200
    # confirmed alerts are kept for confirmed_days, then only a tombstone remains
    out = retention.sweep(engine, cfg.retention, now=now + 366 * 86400)
    assert out["confirmed_purged"] == 1
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.alerts).where(db.alerts.c.alert_id == confirmed)).one()
        n_evidence = conn.execute(sa.select(sa.func.count()).select_from(db.evidence)).scalar()
    assert row.status == "purged"
    assert row.payload is None
    assert row.lat is None
    assert n_evidence == 0
    assert ("system", "retention", None) in audit_actions(engine)


def test_bundle_only_for_confirmed_and_it_verifies(
    client: Any, ingest: Ingest, unit_a: Unit, engine: Engine, tmp_path: Path
) -> None:
    from controlroom.bundle import verify_bundle

    aid, jpeg = put(ingest, unit_a)
    token = login(client)
    assert client.get(f"/alerts/{aid}/bundle.zip").status_code == 409
    client.post(f"/alerts/{aid}/review", data={"action": "confirm", "sure": "yes", "csrf": token})
    r = client.get(f"/alerts/{aid}/bundle.zip")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/zip"
    path = tmp_path / "b.zip"
    path.write_bytes(r.content)
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert sorted(z.namelist()) == sorted(
            [
                "alert.json",
                "signature.txt",
                "evidence.jpg",
                "unit_public_key.pem",
                "review.json",
                "VERIFY.txt",
            ]
        )
        assert z.read("evidence.jpg") == jpeg
        assert json.loads(z.read("review.json"))["reviewed_by"] == "alice"
    result = verify_bundle(path)
    assert result.ok, result.report()
    assert ("alice", "export", aid) in audit_actions(engine)


def test_units_page_shows_health_in_words(client: Any, ingest: Ingest) -> None:
    now = time.time()
    st, hb = status_and_heartbeat("unit-a", now)
    ingest.process(
        [
            Message("phonewatch/unit-a/status", m.encode(st), now),
            Message("phonewatch/unit-a/heartbeat", m.encode(hb), now),
        ]
    )
    login(client)
    html = client.get("/units").text
    card = re.search(
        r'<article class="unit-card health-(\w+)" id="unit-unit-a".*?</article>', html, re.S
    )
    assert card
    assert card.group(1) == "online"
    facts = dict(re.findall(r"<dt>(.*?)</dt><dd[^>]*>(.*?)</dd>", card.group(0)))
    assert re.fullmatch(r"\d+ s ago \(\d{4}-.*\)", facts.pop("Last heartbeat"))
    assert facts == {
        "Frame rate": "14.5 frames/s",
        "Dropped frames": "7 since start",
        "Outbox": "3 alerts waiting to be sent",
        "GPS": "3D fix",
        "CPU temperature": "48.5 °C",
    }
    assert "Working normally" in card.group(0)
    off = m.build_status(
        "unit-a", "offline", t_wall_s=now, software="0.1.0", reason="connection lost"
    )
    ingest.process([Message("phonewatch/unit-a/status", m.encode(off), now)])
    html = client.get("/units").text
    assert 'class="unit-card health-offline" id="unit-unit-a"' in html
    assert "It said it went offline (connection lost)" in html
    # a hot unit with a backlog and no GPS is degraded, and the page says why
    hot = m.build_heartbeat(
        "unit-a",
        t_wall_s=now,
        uptime_s=9.0,
        pipeline={"fps": 14.0, "dropped_frames": 0},
        outbox_depth=40,
        evidence_pruned=0,
        alerts_pruned=0,
        gps_state="no_fix",
        cpu_temp_c=83.0,
    )
    ingest.process(
        [
            Message("phonewatch/unit-a/status", m.encode(st), now),
            Message("phonewatch/unit-a/heartbeat", m.encode(hot), now),
        ]
    )
    html = client.get("/units/unit-a").text
    assert 'id="health">degraded<' in html
    assert "40 alerts waiting to be sent; GPS: no fix (receiver working); CPU at 83 °C" in html
    assert '<dd class="bad">83.0 °C (hot)</dd>' in html


def test_labelling_queue_and_export(client: Any, ingest: Ingest, engine: Engine) -> None:
    crops = [jpeg_bytes(200 + i) for i in range(3)]
    ingest.process(
        [Message(f"phonewatch/unit-a/collect/c{i}", c, time.time()) for i, c in enumerate(crops)]
    )
    token = login(client)
    html = client.get("/labels").text
    ids = re.findall(r'<form method="post" action="/labels/(\d+)">', html)
    assert len(ids) == 3
    assert client.get(f"/labels/{ids[0]}.jpg").content == crops[0]
    for label_id, label in zip(ids, ("phone", "no_phone", "skip"), strict=True):
        r = client.post(
            f"/labels/{label_id}", data={"label": label, "csrf": token}, follow_redirects=False
        )
        assert r.status_code == 303
    assert client.post(f"/labels/{ids[0]}", data={"label": "cat", "csrf": token}).status_code == 400
    r = client.get("/labels/export.zip")
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        names = sorted(z.namelist())
    assert [n.split("/")[0] for n in names] == ["no_phone", "phone"]


def test_live_list_pushes_new_alerts_over_sse(
    cfg: Config, engine: Engine, ingest: Ingest, unit_a: Unit
) -> None:
    """A real server: the event stream delivers an alert stored after the stream opened (once
    its first event, the unreviewed count, has arrived: no sleeping)."""
    room = ControlRoom(cfg, receiver=False, retention=False, engine=engine).start()
    try:
        with httpx.Client(base_url=room.url.rstrip("/"), timeout=10) as c:
            token = csrf_of(c.get("/login").text)
            c.post("/login", data={"username": "alice", "password": PASSWORD, "csrf": token})
            got: list[dict[str, Any]] = []
            counts: list[int] = []
            with c.stream("GET", "/events", params={"after": 0}) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/event-stream")
                event = ""
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "count":
                        counts.append(int(line[6:]))
                        if len(counts) == 1:  # the stream is polling: store an alert now
                            put(ingest, unit_a)
                    elif line.startswith("data: ") and event == "alert":
                        got.append(json.loads(line[6:]))
                        break
        assert got[0]["alert_id"] == "unit-a-1"
        assert got[0]["status"] == "new"
        assert counts[0] == 0  # the unreviewed count comes first, then with each change
    finally:
        room.close()


def test_security_headers_and_no_open_redirect(client: Any) -> None:
    r = client.get("/login")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert "<script>" not in client.get("/login").text  # no inline script for CSP to allow
    token = csrf_of(r.text)
    for evil in ("//evil.example/", "/\\evil.example", "https://evil.example/"):
        r = client.post(
            "/login",
            data={"username": "alice", "password": PASSWORD, "csrf": token, "next": evil},
            follow_redirects=False,
        )
        assert r.status_code == 303, evil
        assert r.headers["location"] == "/", evil
        token = csrf_of(client.get("/login").text)
    r = client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf": token, "next": "/units"},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/units"


def test_tile_host_is_allowed_by_the_policy() -> None:
    from controlroom.web import content_security_policy

    csp = content_security_policy("https://{s}.tiles.example/{z}/{x}/{y}.png")
    assert "img-src 'self' data: https://*.tiles.example;" in csp
    assert "img-src 'self' data:;" in content_security_policy("")


def test_a_disabled_user_is_logged_out(client: Any, engine: Engine) -> None:
    login(client)
    assert client.get("/").status_code == 200
    with engine.begin() as conn:
        conn.execute(
            db.users.update().where(db.users.c.username == "alice").values(is_active=False)
        )
    assert client.get("/", follow_redirects=False).status_code == 303
    r = client.post(
        "/login",
        data={
            "username": "alice",
            "password": PASSWORD,
            "csrf": csrf_of(client.get("/login").text),
        },
    )
    assert r.status_code == 401


def test_every_route_needs_a_login_and_every_change_a_csrf_token(client: Any) -> None:
    """Both checks are router dependencies, so a new route cannot forget them: every route
    but the log-in form and /healthz refuses a visitor, every POST a missing token."""
    public = {("get", "/login"), ("post", "/login"), ("get", "/healthz")}
    spec = client.app.openapi()["paths"]
    routes = [
        (method, re.sub(r"\{[a-z_]+\}", "1", path))
        for path, ops in spec.items()
        for method in ops
        if (method, path) not in public
    ]
    assert len(routes) >= 15
    for method, path in routes:
        r = client.request(method.upper(), path, follow_redirects=False)
        assert r.status_code in (303, 401), (method, path, r.status_code)
    login(client)
    posts = [path for method, path in routes if method != "get"]
    assert len(posts) >= 4
    for path in posts:
        assert client.post(path, data={"action": "confirm", "label": "phone"}).status_code == 403, (
            path
        )
