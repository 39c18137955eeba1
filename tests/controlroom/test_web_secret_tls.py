"""The dashboard's session secret (length, creation, a clear error where it cannot be written),
Secure cookies and HSTS over TLS, and the systemd unit with the example config."""

from __future__ import annotations

import configparser
import os
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine

from controlroom import users
from controlroom.app import ControlRoom
from controlroom.config import Config, load_config, parse_config
from controlroom.errors import ControlRoomError
from controlroom.web import create_app, load_secret
from edge.app.cli import main
from tests.controlroom.test_web import PASSWORD, login

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return parse_config({"web": {"live_poll_s": 0.05}}, base_dir=tmp_path)


@pytest.fixture
def operators(engine: Engine) -> None:
    users.add_user(engine, "alice", PASSWORD)


# ---------------------------------------------------------------- the signing secret


@pytest.mark.parametrize("content", [b"", b"\n", b"short secret\n", b"x" * 31 + b"\n"])
def test_an_empty_or_short_secret_is_refused(
    tmp_path: Path, engine: Engine, content: bytes
) -> None:
    path = tmp_path / "controlroom.secret"
    path.write_bytes(content)
    cfg = parse_config({"web": {"secret_key_file": str(path)}}, base_dir=tmp_path)
    with pytest.raises(ControlRoomError, match="at least 32 bytes") as e:
        create_app(cfg, engine)
    assert str(path) in str(e.value)
    assert "\n" not in str(e.value)
    path.write_bytes(b"y" * 32 + b"\n")
    assert load_secret(path) == "y" * 32


def test_a_missing_secret_is_written_whole_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "state" / "controlroom.secret"
    secret = load_secret(path)
    assert len(secret) >= 32
    assert path.read_text().strip() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["controlroom.secret"]  # no temporary file left
    assert load_secret(path) == secret


def test_an_unwritable_secret_path_is_a_one_line_error(
    tmp_path: Path, broker: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """As under systemd's ProtectSystem=strict with a path outside the state directory
    (/sys refuses file creation even to root)."""
    with pytest.raises(ControlRoomError, match="cannot create web.secret_key_file /sys/"):
        load_secret(Path("/sys/controlroom.secret"))
    cfg = tmp_path / "cr.toml"
    cfg.write_text(
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        '[web]\nport = 0\nsecret_key_file = "/sys/controlroom.secret"\n'
    )
    assert main(["controlroom", "serve", "--no-receiver", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("phonewatch: error: cannot create web.secret_key_file /sys/")
    assert "\n" not in err
    assert "Traceback" not in err


# ---------------------------------------------------------------- TLS


def test_over_https_the_cookie_is_secure_and_hsts_is_sent(
    cfg: Config, engine: Engine, operators: None
) -> None:
    from fastapi.testclient import TestClient

    with TestClient(create_app(cfg, engine), base_url="https://dash.example") as c:
        r = c.get("/login")
        assert "secure" in r.headers["set-cookie"].lower()
        assert r.headers["strict-transport-security"].startswith("max-age=")
        login(c)
        assert c.get("/").status_code == 200
    with TestClient(create_app(cfg, engine)) as c:  # plain http (tests, a local demo)
        r = c.get("/login")
        assert "secure" not in r.headers["set-cookie"].lower()
        assert "strict-transport-security" not in r.headers
    # the real server behind a TLS proxy on this host that says X-Forwarded-Proto: https
    room = ControlRoom(cfg, receiver=False, retention=False, engine=engine).start()
    try:
        r = httpx.get(room.url + "login", headers={"X-Forwarded-Proto": "https"}, timeout=10)
        assert "secure" in r.headers["set-cookie"].lower()
        assert "strict-transport-security" in r.headers
        assert "strict-transport-security" not in httpx.get(room.url + "login").headers
    finally:
        room.close()
    forced = cfg.model_copy(update={"web": cfg.web.model_copy(update={"https_only": True})})
    with TestClient(create_app(forced, engine)) as c:  # TLS ends at a proxy that does not say
        r = c.get("/login")
        assert "secure" in r.headers["set-cookie"].lower()
        assert "strict-transport-security" in r.headers


# ---------------------------------------------------------------- systemd unit, example config


class CaseKeepingParser(configparser.ConfigParser):
    """systemd keys are case-sensitive (``UMask``): keep them as written."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def test_service_and_example_config_keep_state_in_the_state_directory() -> None:
    unit = CaseKeepingParser(strict=False, interpolation=None)
    unit.read(REPO / "deploy" / "controlroom" / "phonewatch-controlroom.service")
    svc = unit["Service"]
    assert svc["UMask"] == "0077"
    assert svc["ProtectSystem"] == "strict"
    state = Path("/var/lib") / svc["StateDirectory"]
    cfg = load_config(REPO / "deploy" / "controlroom" / "controlroom.toml")
    assert cfg.web.secret_key_file.parent == state
    assert cfg.database.url == f"sqlite:///{state}/controlroom.sqlite"
