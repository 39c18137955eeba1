"""Uplink fixtures: real Mosquitto brokers on free ports, a control-room subscriber, detections
with real JPEG evidence on disk, and a GPS source with a settable fix."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.app.local_broker import LocalBroker, find_mosquitto
from edge.core import messages as m
from edge.core.ports import Detection, EvidenceRecord

UNIT_A = "unit-a"
UNIT_B = "unit-b"


@pytest.fixture(scope="session")
def need_mosquitto() -> None:
    """Skip (not fail) where Mosquitto is not installed; modules that start brokers use it."""
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed ('make bootstrap' installs it)")


@pytest.fixture
def broker(need_mosquitto: None) -> Iterator[LocalBroker]:
    """A plain Mosquitto (anonymous, persistence on) for one test."""
    with LocalBroker() as b:
        yield b


@pytest.fixture(scope="module")
def tls_broker(need_mosquitto: None) -> Iterator[LocalBroker]:
    """The production config: TLS, client certificates, per-unit ACL; units A and B."""
    with LocalBroker(tls=True, units=[UNIT_A, UNIT_B]) as b:
        yield b


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    user_properties: tuple[tuple[str, str], ...] = ()


@dataclass
class Subscriber:
    """A control-room client that records every message it receives."""

    client: mqtt.Client
    messages: list[Received] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def wait(self, pred: Callable[[list[Received]], bool], timeout_s: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while not pred(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def on(self, suffix: str) -> list[Received]:
        with self.cond:
            return [r for r in self.messages if r.topic.endswith(suffix)]

    def alerts(self) -> list[dict[str, Any]]:
        return [json.loads(r.payload) for r in self.on("/alert")]

    def evidence(self) -> dict[str, bytes]:
        with self.cond:
            return {
                r.topic.rsplit("/", 1)[1]: r.payload
                for r in self.messages
                if "/evidence/" in r.topic
            }

    def wait_alerts(self, n: int, timeout_s: float = 10.0) -> bool:
        return self.wait(
            lambda ms: (
                len({json.loads(r.payload)["seq"] for r in ms if r.topic.endswith("/alert")}) >= n
            ),
            timeout_s,
        )

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def connect_client(
    broker: LocalBroker, client_id: str, *, certs_for: str | None = None, persistent: bool = False
) -> mqtt.Client:
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    if broker.tls and certs_for is not None:
        files = broker.client_certs(certs_for)
        c.tls_set(str(files["ca_file"]), str(files["cert_file"]), str(files["key_file"]))
    c.reconnect_delay_set(0.2, 1)  # type: ignore[arg-type]  # paho says int; seconds work as float
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: untyped
    if persistent:
        props.SessionExpiryInterval = 3600
    c.connect(
        "localhost" if broker.tls else broker.host,
        broker.port,
        keepalive=30,
        clean_start=not persistent,
        properties=props,
    )
    return c


def subscribe(
    broker: LocalBroker,
    *,
    client_id: str = "controlroom-test",
    topics: tuple[str, ...] = ("phonewatch/#",),
    persistent: bool = False,
    certs_for: str | None = "controlroom",
    receipts: bool = False,
) -> Subscriber:
    """A control-room stand-in for transport tests. With ``receipts`` it answers like the
    control room's receiver: a receipt on ``<root>/<unit>/ack`` for each alert, evidence image,
    crop and clip it receives (it also takes crops and clips, unrecorded, so the unit can forget
    them; the end-to-end tests use the real receiver instead)."""
    c = connect_client(broker, client_id, certs_for=certs_for, persistent=persistent)
    sub = Subscriber(c)
    subscribed = threading.Event()

    def receipt(client: mqtt.Client, topic: str, payload: bytes) -> None:
        parts = topic.split("/")  # <root...>/<unit>/alert or <root...>/<unit>/evidence/<id>
        alerts: list[int] = []
        evidence: list[int] = []
        crops: list[int] = []
        clips: list[int] = []
        try:
            if parts[-1] == "alert":
                unit, root = parts[-2], "/".join(parts[:-2])
                alerts.append(int(json.loads(payload)["seq"]))
            elif len(parts) >= 4 and parts[-2] in ("evidence", "crop", "clip"):
                unit, root = parts[-3], "/".join(parts[:-3])
                seq = int(parts[-1].rsplit("-", 1)[1])
                {"evidence": evidence, "crop": crops, "clip": clips}[parts[-2]].append(seq)
            else:
                return
        except (ValueError, KeyError, IndexError):
            return
        doc = m.build_receipt(
            unit, alerts=alerts, evidence=evidence, crops=crops, clips=clips, t_wall_s=time.time()
        )
        client.publish(f"{root}/{unit}/ack", m.encode(doc), qos=1)

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if any(mqtt.topic_matches_sub(t, msg.topic) for t in topics):
            with sub.cond:
                user = tuple(getattr(msg.properties, "UserProperty", None) or ())
                sub.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain), user))
                sub.cond.notify_all()
        if receipts:
            receipt(client, msg.topic, bytes(msg.payload))

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if not rc.is_failure:
            extra = ("phonewatch/+/crop/+", "phonewatch/+/clip/+")
            for t in (*topics, *extra) if receipts else topics:
                client.subscribe(t, qos=1)

    c.on_message = on_message
    c.on_connect = on_connect
    c.on_subscribe = lambda *a: subscribed.set()
    c.loop_start()
    assert subscribed.wait(10), "subscriber did not get SUBACK"
    return sub


@pytest.fixture
def make_detection(tmp_path: Path) -> Callable[..., Detection]:
    """Detections whose evidence frame is a real JPEG written to disk."""
    import cv2

    counter = iter(range(1, 1_000_000))
    rng = np.random.default_rng(7)

    def make(
        *,
        roi_id: str = "lane1",
        score: float = 0.93,
        t_wall_s: float | None = None,
        size_px: tuple[int, int] = (64, 48),
    ) -> Detection:
        i = next(counter)
        img = rng.integers(0, 255, (size_px[1], size_px[0], 3), dtype=np.uint8)
        ok, buf = cv2.imencode(".jpg", img)
        assert ok
        jpeg = buf.tobytes()
        frame = tmp_path / f"ev-{i}.jpg"
        frame.write_bytes(jpeg)
        ok, cbuf = cv2.imencode(".jpg", img[: size_px[1] // 2, : size_px[0] // 2])
        assert ok
        crop_jpeg = cbuf.tobytes()
        crop = tmp_path / f"ev-{i}-crop.jpg"
        crop.write_bytes(crop_jpeg)
        ev = EvidenceRecord(
            alert_id=f"local-{i}",
            frame_path=str(frame),
            frame_sha256=hashlib.sha256(jpeg).hexdigest(),
            frame_bytes=len(jpeg),
            crop_path=str(crop),
            crop_sha256=hashlib.sha256(crop.read_bytes()).hexdigest(),
            crop_bytes=crop.stat().st_size,
            frame_jpeg=jpeg,
            crop_jpeg=crop_jpeg,
        )
        return Detection(
            alert_id=f"local-{i}",
            roi_id=roi_id,
            score=score,
            frames_over=5,
            window=8,
            frame_index=10 * i,
            t_wall_s=time.time() if t_wall_s is None else t_wall_s,
            t_mono_s=time.monotonic(),
            model_name="phone-cls",
            model_version="1.2.0",
            model_sha256="ab" * 32,
            threshold=0.7,
            evidence=ev,
        )

    return make


@dataclass
class FakeFix:
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.data)


class SettableGps:
    """Stands in for the GPS adapter (another engineer's): ``latest()`` and ``state``."""

    def __init__(self) -> None:
        self.fix: FakeFix | None = None
        self.state = "no-fix"
        self.calls = 0

    def latest(self) -> FakeFix | None:
        self.calls += 1
        return self.fix


def fix_dict(
    *,
    age_s: float = 0.3,
    mode: str = "3d",
    time_iso: str = "2026-05-01T10:20:30.5Z",
    lat: float | None = 51.5007,
    lon: float | None = -0.1246,
) -> dict[str, Any]:
    return {
        "time": time_iso,
        "lat": lat,
        "lon": lon,
        "alt_m": 12.0,
        "speed_mps": 13.4,
        "track_deg": 91.5,
        "mode": mode,
        "quality": 1,
        "hdop": 0.9,
        "sats": 9,
        "age_s": age_s,
    }
