"""Offering a signed model package, and promoting the model in shadow, from the unit's page:
a real Mosquitto (the receiver's own connection sends), real SQLite, FastAPI's TestClient, a
plain paho client subscribed to the unit's commands and chunks, packages built from the real
TFLite test model."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import re
import tarfile
import time
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controlroom import db, users
from controlroom.cli import MODEL_KEY_NAME
from controlroom.config import Config, parse_config
from controlroom.receiver import CommandPublisher, Receiver
from controlroom.web import create_app
from controlroom.web import models as web_models
from edge.app.local_broker import LocalBroker, free_port
from edge.common import model_package as mp
from edge.common.signing import Ed25519PrivateKey, generate_key, load_private_key, write_key_pair
from edge.core.errors import ConfigError
from tests.controlroom.conftest import Unit, mqtt_cfg, raw_pub_b64, status_and_heartbeat
from tests.controlroom.test_commands import Listener
from tests.controlroom.test_web import PASSWORD, audit_actions, csrf_of, login

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
]

DATA = Path(__file__).resolve().parents[1] / "data"
UNIT_TOPICS = "phonewatch/unit-a/#"


def build(key: Ed25519PrivateKey) -> bytes:
    return mp.build_package(
        DATA / "brightness_int8.tflite", DATA / "brightness_int8.json", None, key
    )


@pytest.fixture(autouse=True)
def _quick_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """Log-ins are not what these tests are about: argon2id with its smallest cost keeps each
    test's log-in to milliseconds (the hash and its check are still real)."""
    from argon2 import PasswordHasher

    monkeypatch.setattr(users, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


@pytest.fixture
def model_key(tmp_path: Path) -> Ed25519PrivateKey:
    """The control room's model-signing key pair, as ``controlroom model-key generate``
    writes it (``keys/controlroom-model.sign.key`` and ``.sign.pub``)."""
    private, _, _ = write_key_pair(MODEL_KEY_NAME, tmp_path / "keys")
    return load_private_key(private)


@pytest.fixture
def cfg(tmp_path: Path, model_key: Ed25519PrivateKey) -> Config:
    return parse_config(
        {
            "web": {"tile_url": ""},
            "models": {
                "offer_users": ["alice"],
                "trusted_keys": [f"keys/{MODEL_KEY_NAME}.sign.pub"],  # relative to the config
            },
        },
        base_dir=tmp_path,
    )


@pytest.fixture
def client(cfg: Config, engine: Engine, receiver: Receiver) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    users.add_user(engine, "alice", PASSWORD)
    with TestClient(create_app(cfg, engine, stats=receiver.stats, commander=receiver)) as c:
        yield c


@pytest.fixture
def listener(broker: LocalBroker) -> Iterator[Listener]:
    li = Listener(broker, UNIT_TOPICS)
    yield li
    li.close()


def offer(
    c: Any, token: str | None, blob: bytes, mode: str = "shadow", unit: str = "unit-a"
) -> Any:
    data = {"mode": mode} if token is None else {"mode": mode, "csrf": token}
    return c.post(
        f"/units/{unit}/model/offer",
        data=data,
        files={"package": ("candidate.pwpkg", blob, "application/octet-stream")},
        follow_redirects=False,
    )


def flash_text(html: str) -> str:
    found = re.findall(r'<p class="flash[^"]*"[^>]*>(.*?)</p>', html, re.S)
    assert found, "no message on the page"
    return " ".join(re.sub(r"\s+", " ", unescape(f)) for f in found)


def rollout_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(db.rollouts)))


def stored_packages(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(db.model_packages)).scalar() or 0
        )


def nothing_sent(listener: Listener) -> bool:
    """True when nothing reached the unit's topics: a marker published now is the next
    message. Every offer is acknowledged by the broker before the page answers, so anything
    the dashboard sent is already ahead of the marker."""
    listener.client.publish("phonewatch/unit-a/cmd/test-marker", b"marker", qos=1)
    return bool(listener.one().topic == "phonewatch/unit-a/cmd/test-marker")


def received(listener: Listener, n: int) -> list[mqtt.MQTTMessage]:
    return [listener.one() for _ in range(n)]


def test_a_listed_user_offers_a_package_and_the_command_and_chunks_reach_the_broker(
    client: Any, engine: Engine, listener: Listener, model_key: Ed25519PrivateKey
) -> None:
    token = login(client)
    page = client.get("/units/unit-a").text
    assert 'id="offer-form"' in page
    assert re.search(r'name="mode" value="shadow" checked', page), "shadow is not preselected"
    assert "None from this control room." in page

    blob = build(model_key)
    sha = hashlib.sha256(blob).hexdigest()
    r = offer(client, token, blob)
    assert r.status_code == 303
    assert r.headers["location"] == "/units/unit-a"

    cmd = listener.one()
    assert cmd.topic == "phonewatch/unit-a/cmd/model_offer"
    body = json.loads(cmd.payload)
    assert (body["package_sha256"], body["mode"], body["size"]) == (sha, "shadow", len(blob))
    chunks = received(listener, body["chunk_count"])
    assert {m.topic for m in chunks} == {
        f"phonewatch/unit-a/model/chunk/{sha}/{i}" for i in range(body["chunk_count"])
    }
    by_index = {int(m.topic.rsplit("/", 1)[1]): bytes(m.payload) for m in chunks}
    assert b"".join(by_index[i] for i in sorted(by_index)) == blob

    (row,) = rollout_rows(engine)
    assert (row.unit, row.package_sha256, row.mode, row.state, row.offered_by) == (
        "unit-a",
        sha,
        "shadow",
        "offered",
        "alice",
    )
    assert ("alice", "model_offer", "unit-a") in audit_actions(engine)
    page = client.get("/units/unit-a").text
    assert f"Offered brightness-int8 test-1 ({sha[:12]}) as shadow to unit-a" in flash_text(page)
    assert re.search(rf'class="rollout-row" data-sha256="{sha}" data-state="offered"', page)

    # The same package again, live this time: one row, now live.
    assert offer(client, token, blob, mode="live").status_code == 303
    assert json.loads(listener.one().payload)["mode"] == "live"
    assert [(r.mode, r.state) for r in rollout_rows(engine)] == [("live", "offered")]


def test_an_offer_the_broker_drops_is_said_not_sent_and_its_row_says_so(
    client: Any, engine: Engine, model_key: Ed25519PrivateKey
) -> None:
    """unit-b has never connected: no session subscribes to its commands, so the broker
    drops the offer (no matching subscribers) and the page says so."""
    db.upsert_unit(engine, "unit-b", raw_pub_b64(generate_key()), "0" * 16)
    token = login(client)
    blob = build(model_key)
    assert offer(client, token, blob, unit="unit-b").status_code == 303
    text = flash_text(client.get("/units/unit-b").text)
    assert text.startswith("Package brightness-int8 test-1")
    assert "NOT sent to unit-b: the broker has no subscriber on phonewatch/unit-b/cmd/" in text
    assert [(r.unit, r.state) for r in rollout_rows(engine)] == [("unit-b", "unsent")]
    assert ("alice", "model_offer_unsent", "unit-b") in audit_actions(engine)


def test_a_user_not_listed_sees_the_section_read_only_and_is_refused_with_403(
    client: Any, engine: Engine, listener: Listener, model_key: Ed25519PrivateKey
) -> None:
    users.add_user(engine, "bob", PASSWORD)
    token = login(client, "bob")
    page = client.get("/units/unit-a").text
    assert 'id="offer-form"' not in page
    found = re.search(r'<p class="muted" id="offer-readonly">(.*?)</p>', page, re.S)
    assert found
    assert "[models] offer_users" in found.group(1)

    r = offer(client, token, build(model_key))
    assert r.status_code == 403
    assert "[models] offer_users" in r.json()["detail"]
    r = client.post(
        "/units/unit-a/model/promote",
        data={"csrf": token, "package_sha256": "a" * 64},
        follow_redirects=False,
    )
    assert r.status_code == 403
    assert nothing_sent(listener)
    assert rollout_rows(engine) == []
    assert stored_packages(engine) == 0
    actions = audit_actions(engine)
    assert ("bob", "model_offer_refused", "unit-a") in actions
    assert ("bob", "model_promote_refused", "unit-a") in actions


def _tampered_signature(blob: bytes) -> bytes:
    """The same package with a different (well-formed) signature by the right key id."""
    members = mp.read_members(blob)
    members[mp.SIGNATURE] = base64.b64encode(bytes(64))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in (mp.MANIFEST, mp.SIGNATURE, mp.MODEL, mp.SIDECAR):
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            tar.addfile(info, io.BytesIO(members[name]))
    return buf.getvalue()


def test_bad_packages_are_refused_on_the_page_before_anything_is_recorded_or_sent(
    client: Any,
    engine: Engine,
    listener: Listener,
    model_key: Ed25519PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = login(client)
    good = build(model_key)
    cases = [
        (b"this is not a tar archive at all" * 40, "not a model package, or truncated"),
        (good[: len(good) // 2], "truncated"),
        (build(generate_key()), "not by the control room's model-signing key"),
        (_tampered_signature(good), "bad signature: manifest.sig does not verify"),
        (b"", "no package file was chosen"),
    ]
    for blob, why in cases:
        r = offer(client, token, blob)
        assert r.status_code == 303, why
        text = flash_text(client.get("/units/unit-a").text)
        assert text.startswith("Package NOT offered to unit-a:"), text
        assert why in text, (why, text)

    r = offer(client, token, good, mode="sideways")
    assert r.status_code == 303
    assert "mode must be shadow or live" in flash_text(client.get("/units/unit-a").text)

    # Over the size limit (lowered here so the test stays small): a file just over it is
    # refused by its size, a form declaring far more is refused before it is read.
    monkeypatch.setattr(web_models, "PACKAGE_MAX_BYTES", len(good) - 1)
    assert offer(client, token, good).status_code == 303
    assert f"larger than {len(good) - 1} bytes" in flash_text(client.get("/units/unit-a").text)
    monkeypatch.setattr(web_models, "PACKAGE_MAX_BYTES", 1024)
    r = offer(client, token, good + bytes(web_models.FORM_OVERHEAD_BYTES))
    assert r.status_code == 413
    assert "a package may be at most 1024 bytes" in r.json()["detail"]

    assert nothing_sent(listener)
    assert rollout_rows(engine) == []
    assert stored_packages(engine) == 0
    refused = [a for a in audit_actions(engine) if a[1] == "model_offer_refused"]
    assert len(refused) == len(cases) + 3
    assert {a[0] for a in refused} == {"alice"}


def test_a_post_without_the_csrf_token_or_for_an_unknown_unit_sends_nothing(
    client: Any, engine: Engine, listener: Listener, model_key: Ed25519PrivateKey
) -> None:
    token = login(client)
    blob = build(model_key)
    r = offer(client, None, blob)
    assert r.status_code == 403
    assert "CSRF" in r.json()["detail"]
    r = offer(client, "wrong-" + token, blob)
    assert r.status_code == 403
    r = offer(client, token, blob, unit="unit-zz")
    assert r.status_code == 404
    assert "no registered unit 'unit-zz'" in r.json()["detail"]
    assert nothing_sent(listener)
    assert rollout_rows(engine) == []
    assert stored_packages(engine) == 0
    assert ("alice", "model_offer_refused", "unit-zz") in audit_actions(engine)


def test_without_a_broker_connection_the_page_says_so_and_records_no_offer(
    cfg: Config, engine: Engine, unit_a: Unit, model_key: Ed25519PrivateKey
) -> None:
    from fastapi.testclient import TestClient

    users.add_user(engine, "alice", PASSWORD)
    down = CommandPublisher(cfg.mqtt.model_copy(update={"port": free_port()}))  # never started
    app = create_app(cfg, engine, commander=down)
    texts = []
    with TestClient(app) as c:
        token = login(c)
        for commander in (down, None):  # connection lost; a dashboard without one
            app.state.web = dataclasses.replace(app.state.web, commander=commander)
            assert offer(c, token, build(model_key)).status_code == 303
            texts.append(flash_text(c.get("/units/unit-a").text))
    assert texts == [
        f"Package NOT offered to unit-a: cannot reach the broker localhost:{cfg.mqtt.port}; "
        "nothing was offered",
        "Package NOT offered to unit-a: this dashboard has no MQTT connection; nothing was offered",
    ]
    assert rollout_rows(engine) == []
    assert stored_packages(engine) == 0


def _report_shadow(engine: Engine, sha: str) -> None:
    """unit-a's heartbeat says ``sha`` runs in shadow."""
    now = time.time()
    _, hb = status_and_heartbeat("unit-a", now)
    hb["model"] = {
        "live": {"name": "phone-in-hand", "version": "1.0.0", "sha256": "c" * 64},
        "previous": None,
        "state": "shadow",
        "shadow": {"name": "brightness-int8", "version": "test-1", "sha256": sha},
    }
    with engine.begin() as conn:
        conn.execute(
            db.units.update()
            .where(db.units.c.unit_id == "unit-a")
            .values(heartbeat=json.dumps(hb), heartbeat_received_at=now, status_state="online")
        )


def test_promote_is_offered_only_for_a_shadow_model_whose_package_the_room_holds(
    client: Any, engine: Engine, listener: Listener, model_key: Ed25519PrivateKey
) -> None:
    token = login(client)
    _report_shadow(engine, "d" * 64)  # not offered from here
    page = client.get("/units/unit-a").text
    assert 'id="promote-form"' not in page
    assert 'id="promote-none"' in page
    r = client.post(
        "/units/unit-a/model/promote",
        data={"csrf": token, "package_sha256": "d" * 64},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert "Promotion NOT sent to unit-a" in flash_text(client.get("/units/unit-a").text)
    assert nothing_sent(listener)

    blob = build(model_key)
    sha = hashlib.sha256(blob).hexdigest()
    assert offer(client, token, blob).status_code == 303
    n = json.loads(listener.one().payload)["chunk_count"]
    received(listener, n)
    _report_shadow(engine, sha)
    page = client.get("/units/unit-a").text
    assert 'id="promote-form"' in page
    assert "Promote test-1 to live" in page
    r = client.post(
        "/units/unit-a/model/promote",
        data={"csrf": csrf_of(page), "package_sha256": sha},
        follow_redirects=False,
    )
    assert r.status_code == 303
    cmd = listener.one()
    assert cmd.topic == "phonewatch/unit-a/cmd/model_promote"
    assert json.loads(cmd.payload)["package_sha256"] == sha
    assert f"Promote test-1 ({sha[:12]}) to live sent to unit-a" in flash_text(
        client.get("/units/unit-a").text
    )
    assert ("alice", "model_promote", "unit-a") in audit_actions(engine)


def test_models_config_is_strict_and_a_missing_key_file_stops_the_dashboard(
    tmp_path: Path, engine: Engine
) -> None:
    with pytest.raises(ConfigError, match="offer_user"):
        parse_config({"models": {"offer_user": ["alice"]}}, base_dir=tmp_path)
    cfg = parse_config({"models": {"trusted_keys": ["keys/none.pub"]}}, base_dir=tmp_path)
    assert cfg.models.trusted_keys == [tmp_path / "keys" / "none.pub"]
    with pytest.raises(ConfigError, match=r"models\.trusted_keys: .*none\.pub"):
        create_app(cfg, engine)


def test_without_a_signing_key_every_package_is_refused_naming_the_setting(
    tmp_path: Path, engine: Engine, unit_a: Unit, broker: LocalBroker
) -> None:
    from fastapi.testclient import TestClient

    cfg = parse_config(
        {"web": {"tile_url": ""}, "models": {"offer_users": ["alice"]}}, base_dir=tmp_path
    )
    users.add_user(engine, "alice", PASSWORD)
    pub = CommandPublisher(mqtt_cfg(broker)).start()
    try:
        assert pub.wait_ready(10)
        with TestClient(create_app(cfg, engine, commander=pub)) as c:
            token = login(c)
            assert 'id="offer-no-keys"' in c.get("/units/unit-a").text
            assert offer(c, token, build(generate_key())).status_code == 303
            text = flash_text(c.get("/units/unit-a").text)
    finally:
        pub.close()
    assert "set [models] trusted_keys" in text
    assert rollout_rows(engine) == []
