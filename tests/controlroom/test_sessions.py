"""Dashboard sessions live on the server: log-out, a new password and ``disable-user`` end them
(a copied cookie and an open live stream too); the log-in throttle holds under concurrent
attempts against the real server and SQLite."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from controlroom import db, users
from controlroom.app import ControlRoom
from controlroom.config import Config, parse_config
from controlroom.web import create_app
from edge.app.cli import main
from tests.controlroom.test_web import PASSWORD, audit_actions, csrf_of, login

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
]


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return parse_config({"web": {"live_poll_s": 0.05}}, base_dir=tmp_path)


@pytest.fixture
def operators(engine: Engine) -> None:
    users.add_user(engine, "alice", PASSWORD)


@pytest.fixture
def client(cfg: Config, engine: Engine, operators: None) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(create_app(cfg, engine)) as c:
        yield c


def copy_of(client: Any) -> Any:
    """Another browser holding a copy of ``client``'s session cookie."""
    from fastapi.testclient import TestClient

    other = TestClient(client.app)
    other.cookies.set("phonewatch_session", client.cookies["phonewatch_session"])
    return other


# ---------------------------------------------------------------- revocable sessions


def test_logout_ends_the_session_for_a_copied_cookie_too(client: Any) -> None:
    token = login(client)
    thief = copy_of(client)
    assert thief.get("/", follow_redirects=False).status_code == 200
    assert client.post("/logout", data={"csrf": token}, follow_redirects=False).status_code == 303
    assert thief.get("/", follow_redirects=False).status_code == 303
    r = thief.post("/logout", data={"csrf": token}, follow_redirects=False)
    assert r.status_code == 401


def test_a_new_password_ends_every_session(client: Any, engine: Engine) -> None:
    login(client)
    users.add_user(engine, "alice", "a brand new password", replace=True)
    assert client.get("/", follow_redirects=False).status_code == 303
    login(client, password="a brand new password")
    assert client.get("/").status_code == 200


def test_disable_user_ends_sessions_for_good(
    client: Any, engine: Engine, cfg: Config, tmp_path: Path
) -> None:
    """Disabling and enabling again does not bring an old cookie back to life."""
    login(client)
    thief = copy_of(client)
    conf = tmp_path / "cr.toml"
    conf.write_text(f'[database]\nurl = "{engine.url.render_as_string()}"\n')
    assert main(["controlroom", "disable-user", "alice", "--config", str(conf)]) == 0
    assert main(["controlroom", "disable-user", "alice", "--enable", "--config", str(conf)]) == 0
    assert thief.get("/", follow_redirects=False).status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 303
    login(client)
    assert client.get("/").status_code == 200


def test_sessions_expire_on_the_server(client: Any, engine: Engine) -> None:
    login(client)
    with engine.begin() as conn:
        conn.execute(db.web_sessions.update().values(expires_at=time.time() - 1))
    assert client.get("/", follow_redirects=False).status_code == 303


def test_the_live_stream_stops_for_a_disabled_user(
    cfg: Config, engine: Engine, operators: None
) -> None:
    room = ControlRoom(cfg, receiver=False, retention=False, engine=engine).start()
    try:
        with httpx.Client(base_url=room.url.rstrip("/"), timeout=5) as c:
            token = csrf_of(c.get("/login").text)
            c.post("/login", data={"username": "alice", "password": PASSWORD, "csrf": token})
            lines: list[str] = []
            with c.stream("GET", "/events") as r:
                assert r.status_code == 200
                threading.Timer(0.3, users.set_active, (engine, "alice", False)).start()
                t0 = time.monotonic()
                for line in r.iter_lines():  # ends when the server closes the stream
                    lines.append(line)
            assert time.monotonic() - t0 < 3.0
            assert "event: logout" in lines
            assert c.get("/events").status_code == 401
    finally:
        room.close()


# ---------------------------------------------------------------- throttle under concurrency


def test_concurrent_wrong_passwords_are_throttled_too(
    cfg: Config, engine: Engine, operators: None
) -> None:
    """30 wrong passwords at once, against the real server and SQLite: only as many are
    checked as the limit allows (5), the rest are refused."""
    room = ControlRoom(cfg, receiver=False, retention=False, engine=engine).start()
    n = 30
    start = threading.Barrier(n)
    codes: list[int] = []
    try:

        def attempt() -> None:
            with httpx.Client(base_url=room.url.rstrip("/"), timeout=60) as c:
                token = csrf_of(c.get("/login").text)
                start.wait()
                r = c.post(
                    "/login",
                    data={"username": "alice", "password": "wrong password!", "csrf": token},
                )
                codes.append(r.status_code)

        threads = [threading.Thread(target=attempt) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        room.close()
    assert len(codes) == n
    assert codes.count(401) <= cfg.web.login_max_failures, sorted(codes)
    assert codes.count(429) == n - codes.count(401)
    acts = [a[1] for a in audit_actions(engine) if a[0] == "alice"]
    assert acts.count("login_failed") == codes.count(401)
    assert acts.count("login_throttled") == codes.count(429)
