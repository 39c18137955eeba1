"""Commands from the Units page to a real Mosquitto, snapshots from a unit back to the page, and
failed log-in throttling. Real broker, real SQLite, FastAPI's TestClient, a paho subscriber."""

from __future__ import annotations

import json
import queue
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy.engine import Engine

from controlroom import db, users
from controlroom.app import ControlRoom
from controlroom.config import Config, parse_config
from controlroom.receiver import CommandPublisher, Receiver
from controlroom.web import create_app
from edge.app.local_broker import LocalBroker
from edge.core import messages as m
from tests.controlroom.conftest import Publisher, Unit, jpeg_bytes, mqtt_cfg
from tests.controlroom.test_web import PASSWORD, audit_actions, csrf_of, login
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
]


class Listener:
    """A plain paho client subscribed to every unit's command topics."""

    def __init__(self, broker: LocalBroker, topic: str = "phonewatch/+/cmd/+") -> None:
        self.got: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.ready = False
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"listen-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_message = lambda c, u, msg: self.got.put(msg)
        self.client.on_subscribe = lambda *a: setattr(self, "ready", True)
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert wait_until(lambda: self.ready, 10)

    def one(self, timeout_s: float = 5.0) -> mqtt.MQTTMessage:
        return self.got.get(timeout=timeout_s)

    def nothing_more(self, wait_s: float = 0.5) -> bool:
        try:
            self.got.get(timeout=wait_s)
        except queue.Empty:
            return True
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def snapshot_detail(conn: sa.Connection) -> dict[str, Any]:
    """The audit detail of the (first) snapshot command."""
    raw = conn.execute(
        sa.select(db.audit.c.detail).where(db.audit.c.action == "cmd_snapshot")
    ).scalar()
    assert raw is not None
    detail: dict[str, Any] = json.loads(raw)
    return detail


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return parse_config({"web": {"tile_url": ""}}, base_dir=tmp_path)


@pytest.fixture
def operators(engine: Engine, unit_a: Unit) -> None:
    users.add_user(engine, "alice", PASSWORD)


@pytest.fixture
def client(cfg: Config, engine: Engine, operators: None, receiver: Receiver) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(create_app(cfg, engine, stats=receiver.stats, commander=receiver)) as c:
        yield c


@pytest.fixture
def listener(broker: LocalBroker) -> Iterator[Listener]:
    li = Listener(broker)
    yield li
    li.close()


def command_schema(name: str) -> dict[str, Any]:
    schema = m.load_schema(m.COMMAND_SCHEMA)
    if name not in schema["$defs"]:
        pytest.fail(f"edge/core/schemas/command.v1.json defines no {name!r} command yet")
    return {"$defs": schema["$defs"], "$ref": f"#/$defs/{name}"}


def test_each_command_form_publishes_exactly_its_json(
    client: Any, listener: Listener, engine: Engine
) -> None:
    token = login(client)
    page = client.get("/units").text
    for name in ("snapshot", "collect", "mute"):
        assert f'action="/units/unit-a/cmd/{name}"' in page

    r = client.post("/units/unit-a/cmd/snapshot", data={"csrf": token}, follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/units"
    msg = listener.one()
    body = json.loads(msg.payload)
    assert msg.topic == "phonewatch/unit-a/cmd/snapshot"
    assert msg.qos == 1
    assert not msg.retain
    assert set(body) == {"request_id", "reason"}
    assert body["reason"] == "requested by alice"
    assert re.fullmatch(r"[0-9a-f]{12}", body["request_id"])
    assert "Snapshot request sent to unit-a" in client.get("/units").text  # flash, once
    assert "Snapshot request sent" not in client.get("/units").text

    r = client.post(
        "/units/unit-a/cmd/collect", data={"csrf": token, "count": "25", "interval_s": "2"}
    )
    assert r.status_code == 200
    assert "Collect 25 crops sent to unit-a" in r.text
    msg = listener.one()
    collect = json.loads(msg.payload)
    assert msg.topic == "phonewatch/unit-a/cmd/collect"
    assert msg.qos == 1
    assert not msg.retain
    assert collect == {"request_id": collect["request_id"], "count": 25, "interval_s": 2}
    client.post(
        "/units/unit-a/cmd/collect", data={"csrf": token, "count": "500", "interval_s": "0.5"}
    )
    assert json.loads(listener.one().payload)["interval_s"] == 0.5

    bodies = {"snapshot": body, "collect": collect}
    for minutes, seconds in (("10", 600), ("0", 0), ("1440", 86400)):
        r = client.post(
            "/units/unit-a/cmd/mute",
            data={"csrf": token, "minutes": minutes, "back": "unit"},
            follow_redirects=False,
        )
        assert r.status_code == 303
        assert r.headers["location"] == "/units/unit-a"
        msg = listener.one()
        mute = json.loads(msg.payload)
        assert msg.topic == "phonewatch/unit-a/cmd/mute"
        assert msg.qos == 1
        assert not msg.retain
        assert mute == {"request_id": mute["request_id"], "duration_s": seconds}
        bodies["mute"] = mute
    assert listener.nothing_more()

    # The payloads follow the unit's committed command schema; snapshot and mute also pass
    # the unit's own command parser.
    topics = m.Topics("phonewatch", "unit-a")
    for name, b in bodies.items():
        jsonschema.validate(b, command_schema(name))
        if name in m.COMMANDS:
            assert m.parse_command(topics.cmd(name), json.dumps(b).encode(), topics=topics) == (
                name,
                b,
            )

    actions = [a for a in audit_actions(engine) if a[1].startswith("cmd_")]
    assert (
        actions
        == [("alice", "cmd_snapshot", "unit-a")]
        + [("alice", "cmd_collect", "unit-a")] * 2
        + [("alice", "cmd_mute", "unit-a")] * 3
    )
    with engine.connect() as conn:
        detail = snapshot_detail(conn)
    assert detail["sent"] is True
    assert detail["payload"] == body


def test_commands_refused_without_csrf_for_unknown_units_and_bad_input(
    client: Any, listener: Listener, engine: Engine
) -> None:
    token = login(client)
    for data in ({}, {"csrf": "forged"}):
        r = client.post("/units/unit-a/cmd/snapshot", data=data)
        assert r.status_code == 403
    r = client.post("/units/unit-x/cmd/snapshot", data={"csrf": token})
    assert r.status_code == 404
    assert "no registered unit" in r.text
    assert client.post("/units/unit-a/cmd/reboot", data={"csrf": token}).status_code == 404
    bad = [
        ("collect", {"count": "0"}),
        ("collect", {"count": "501"}),
        ("collect", {"count": "abc"}),
        ("collect", {"count": "2.5"}),
        ("collect", {"count": ""}),
        ("collect", {"count": "5", "interval_s": "0.1"}),
        ("collect", {"count": "5", "interval_s": "nan"}),
        ("collect", {"count": "5", "interval_s": "3601"}),
        ("mute", {"minutes": "-1"}),
        ("mute", {"minutes": "1441"}),
        ("mute", {"minutes": "ten"}),
    ]
    for name, data in bad:
        r = client.post(f"/units/unit-a/cmd/{name}", data={"csrf": token, **data})
        assert r.status_code == 400, (name, data, r.text)
        assert "must be" in r.json()["detail"], r.text
    assert listener.nothing_more(1.0)
    assert not [a for a in audit_actions(engine) if a[1].startswith("cmd_")]


def test_no_broker_connection_says_so_and_sends_nothing(
    cfg: Config, engine: Engine, operators: None, broker: LocalBroker, listener: Listener
) -> None:
    from fastapi.testclient import TestClient

    dead = CommandPublisher(mqtt_cfg(broker, port=1)).start()  # nothing listens on port 1
    try:
        with TestClient(create_app(cfg, engine, commander=dead)) as c:
            token = login(c)
            assert "Not connected to the broker" in c.get("/units").text
            r = c.post("/units/unit-a/cmd/snapshot", data={"csrf": token})
            assert r.status_code == 200
            assert "Snapshot request NOT sent to unit-a: not connected to the broker" in r.text
        assert listener.nothing_more(1.0)
        with engine.connect() as conn:
            detail = snapshot_detail(conn)
        assert detail["sent"] is False
    finally:
        dead.close()


def test_a_command_no_session_subscribes_to_is_reported_not_sent(
    client: Any, engine: Engine, broker: LocalBroker
) -> None:
    # A unit registered but never connected: no session on the broker subscribes to its
    # commands, so the broker drops the command (PUBACK "No matching subscribers").
    db.upsert_unit(engine, "unit-new", "B" * 43 + "=", "0" * 16)
    token = login(client)
    r = client.post("/units/unit-new/cmd/snapshot", data={"csrf": token})
    assert "Snapshot request NOT sent to unit-new: the broker has no subscriber" in r.text
    with engine.connect() as conn:
        detail = snapshot_detail(conn)
    assert detail["sent"] is False

    # Once the unit has connected with its persistent session (as MqttUplink does: clean
    # start off, a session expiry), a command sent while it is away is queued and delivered.
    got: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    subscribed = []

    def unit_session() -> mqtt.Client:
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="unit-new",
            protocol=mqtt.MQTTv5,
        )
        c.on_message = lambda cl, u, msg: got.put(msg)
        c.on_subscribe = lambda *a: subscribed.append(1)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: untyped
        props.SessionExpiryInterval = 3600
        c.connect(broker.host, broker.port, clean_start=False, properties=props)
        c.loop_start()
        return c

    unit = unit_session()
    unit.subscribe("phonewatch/unit-new/cmd/+", qos=1)
    assert wait_until(lambda: subscribed, 10)
    unit.disconnect()
    unit.loop_stop()
    r = client.post("/units/unit-new/cmd/mute", data={"csrf": token, "minutes": "5"})
    assert "Mute for 5 min sent to unit-new" in r.text
    unit = unit_session()
    try:
        msg = got.get(timeout=10)
        assert msg.topic == "phonewatch/unit-new/cmd/mute"
        assert json.loads(msg.payload)["duration_s"] == 300
    finally:
        unit.disconnect()
        unit.loop_stop()


def test_dashboard_without_receiver_publishes_on_its_own_connection(
    tmp_path: Path, broker: LocalBroker, listener: Listener
) -> None:
    cfg = parse_config(
        {
            "database": {"url": "sqlite:///cr.sqlite"},
            "mqtt": {"host": broker.host, "port": broker.port},
            "web": {"port": 0},
        },
        base_dir=tmp_path,
    )
    room = ControlRoom(cfg, receiver=False, retention=False)
    try:
        users.add_user(room.engine, "alice", PASSWORD)
        db.upsert_unit(room.engine, "unit-b", "A" * 43 + "=", "0" * 16)
        room.start()
        assert room.publisher is not None
        assert room.publisher.wait_ready(10)
        import httpx

        with httpx.Client(base_url=room.url.rstrip("/"), timeout=10) as c:
            token = login(c)
            r = c.post(
                "/units/unit-b/cmd/mute",
                data={"csrf": token, "minutes": "5"},
                follow_redirects=True,
            )
            assert "Mute for 5 min sent to unit-b" in r.text
        msg = listener.one()
        assert msg.topic == "phonewatch/unit-b/cmd/mute"
        assert json.loads(msg.payload)["duration_s"] == 300
    finally:
        room.close()


# ---------------------------------------------------------------- snapshots


def test_snapshot_from_a_unit_is_shown_and_bad_ones_are_counted(
    client: Any, receiver: Receiver, publisher: Publisher, engine: Engine
) -> None:
    login(client)
    assert client.get("/units/unit-a/snapshot.jpg").status_code == 404
    assert "No snapshot yet" in client.get("/units/unit-a").text
    first, second = jpeg_bytes(1, (320, 240)), jpeg_bytes(2, (320, 240))
    publisher.publish("phonewatch/unit-a/snapshot", first)
    assert wait_until(lambda: receiver.stats().get("snapshots", 0) >= 1)
    r = client.get("/units/unit-a/snapshot.jpg")
    assert r.status_code == 200
    assert r.content == first
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["cache-control"] == "no-store"
    assert "not tied to a request" in client.get("/units/unit-a").text
    publisher.publish(
        "phonewatch/unit-a/snapshot", second, user_properties=[("request_id", "3f2a9c01d4e5")]
    )
    assert wait_until(lambda: receiver.stats().get("snapshots", 0) >= 2)
    assert client.get("/units/unit-a/snapshot.jpg").content == second  # newest one kept
    assert '<code id="snapshot-request">3f2a9c01d4e5</code>' in client.get("/units/unit-a").text

    publisher.publish("phonewatch/unit-a/snapshot", b"GIF89a not a jpeg")
    publisher.publish(
        "phonewatch/unit-a/snapshot", b"\xff\xd8\xff" + bytes(3 * 1024 * 1024) + b"\xff\xd9"
    )
    publisher.publish("phonewatch/unit-z/snapshot", first)  # not registered
    assert wait_until(lambda: receiver.stats()["rejected_total"] >= 3)
    assert receiver.stats()["rejected"] == {"not_jpeg": 1, "oversized": 1, "unknown_unit": 1}
    assert client.get("/units/unit-a/snapshot.jpg").content == second
    assert client.get("/units/unit-z/snapshot.jpg").status_code == 404
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(db.snapshots)).scalar() == 1

    # A request id that is not a plain token is not stored (nor shown).
    publisher.publish(
        "phonewatch/unit-a/snapshot", first, user_properties=[("request_id", "<script>x</script>")]
    )
    assert wait_until(lambda: receiver.stats().get("snapshots", 0) >= 3)
    page = client.get("/units/unit-a").text
    assert "not tied to a request" in page
    assert "<script>x" not in page
    assert 'src="/units/unit-a/snapshot.jpg' in page
    assert "Taken 20" in page
    assert re.search(r'<a href="/units/unit-a">20\d\d-', client.get("/units").text)
    client.cookies.clear()
    r = client.get("/units/unit-a/snapshot.jpg", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/login")


# ---------------------------------------------------------------- log-in throttling


def test_failed_logins_are_throttled_per_user_and_audited(
    cfg: Config, engine: Engine, operators: None
) -> None:
    from fastapi.testclient import TestClient

    users.add_user(engine, "bob", PASSWORD)
    with TestClient(create_app(cfg, engine)) as c:
        token = csrf_of(c.get("/login").text)

        def attempt(user: str, password: str) -> Any:
            return c.post(
                "/login",
                data={"username": user, "password": password, "csrf": token, "next": "/"},
                follow_redirects=False,
            )

        # a success resets the count for that user name
        for _ in range(4):
            assert attempt("alice", "wrong password!").status_code == 401
        assert attempt("alice", PASSWORD).status_code == 303
        token = csrf_of(c.get("/login").text)
        for _ in range(5):
            assert attempt("alice", "wrong password!").status_code == 401
        r = attempt("alice", PASSWORD)  # the right password is refused too, for now
        assert r.status_code == 429
        assert "Too many failed log-ins" in r.text
        assert "Try again in 5 minutes" in r.text
        assert 290 < int(r.headers["retry-after"]) <= 301
        assert attempt("bob", PASSWORD).status_code == 303  # another name is not locked
        token = csrf_of(c.get("/login").text)
        for _ in range(5):  # unknown names are throttled the same way (no user enumeration)
            attempt("mallory", "guess guess guess")
        assert attempt("mallory", "guess guess guess").status_code == 429
    acts = [a[1] for a in audit_actions(engine) if a[0] == "alice"]
    assert acts == ["login_failed"] * 4 + ["login"] + ["login_failed"] * 5 + ["login_throttled"]

    # five minutes later the window has passed
    with engine.begin() as conn:
        conn.execute(db.audit.update().values(at=db.audit.c.at - 301))
    with TestClient(create_app(cfg, engine)) as c:
        assert login(c)


def test_failed_logins_are_throttled_per_address(
    tmp_path: Path, engine: Engine, operators: None
) -> None:
    from fastapi.testclient import TestClient

    cfg = parse_config({"web": {"login_max_failures_per_ip": 6}}, base_dir=tmp_path)
    with TestClient(create_app(cfg, engine)) as c:
        token = csrf_of(c.get("/login").text)
        for i in range(6):  # different names, one address
            r = c.post(
                "/login", data={"username": f"guess{i}", "password": "x" * 12, "csrf": token}
            )
            assert r.status_code == 401
        r = c.post("/login", data={"username": "alice", "password": PASSWORD, "csrf": token})
        assert r.status_code == 429
    assert audit_actions(engine)[-1][:2] == ("alice", "login_throttled")
    with engine.connect() as conn:
        assert (
            conn.execute(
                sa.select(db.audit.c.remote).where(db.audit.c.action == "login_throttled")
            ).scalar()
            == "testclient"
        )


def test_throttle_window_counts_only_recent_failures(engine: Engine) -> None:
    from controlroom.web import login_retry_after_s

    now = time.time()
    with engine.begin() as conn:
        for age in (400, 250, 200, 100, 50):
            conn.execute(
                db.audit.insert().values(
                    at=now - age, username="carol", action="login_failed", remote="10.0.0.9"
                )
            )
        kw: dict[str, Any] = {
            "username": "carol",
            "remote": "10.0.0.9",
            "now": now,
            "window_s": 300.0,
            "max_per_ip": 100,
        }
        assert login_retry_after_s(conn, max_per_user=5, **kw) == 0  # one is older than 300 s
        assert login_retry_after_s(conn, max_per_user=4, **kw) == pytest.approx(50)
