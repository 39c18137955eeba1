"""Control-room fixtures: a real Mosquitto, SQLite files (and PostgreSQL when installed),
signed alerts built with the unit's own message builder and signing helpers, real JPEGs."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from controlroom import db
from controlroom.config import MqttConfig
from controlroom.receiver import Receiver
from edge.app.local_broker import LocalBroker, find_mosquitto, free_port
from edge.common.signing import Ed25519PrivateKey, generate_key, sign_alert
from edge.core import messages as m
from edge.core.ports import Detection, EvidenceRecord, VehicleInfo
from tests.waiting import wait_until

FIX = {
    "time": "2026-05-01T10:20:30.5Z",
    "lat": 51.5007,
    "lon": -0.1246,
    "alt_m": 12.0,
    "speed_mps": 13.4,
    "track_deg": 91.5,
    "mode": "3d",
    "quality": 1,
    "hdop": 0.9,
    "sats": 9,
    "age_s": 0.3,
}


def status_and_heartbeat(unit: str, now: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """A unit's ``online`` status and a typical heartbeat, as the unit builds them."""
    hb = m.build_heartbeat(
        unit,
        t_wall_s=now,
        uptime_s=5.0,
        pipeline={"fps": 14.5, "dropped_frames": 7},
        outbox_depth=3,
        evidence_pruned=0,
        alerts_pruned=0,
        gps_state="3d-fix",
        cpu_temp_c=48.5,
    )
    return m.build_status(unit, "online", t_wall_s=now, software="0.1.0"), hb


def jpeg_bytes(seed: int = 0, size_px: tuple[int, int] = (64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (size_px[1], size_px[0], 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return bytes(buf.tobytes())


def raw_pub_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def pub_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass
class Unit:
    """A registered (or not) unit with its key: makes signed alerts like the real uplink."""

    unit_id: str
    key: Ed25519PrivateKey
    seq: itertools.count[int] = field(init=False, default_factory=lambda: itertools.count(1))

    @staticmethod
    def crop(seq: int) -> bytes:
        """The driver-window crop JPEG of alert ``seq`` (its hash is in the signed alert)."""
        return jpeg_bytes(10_000 + seq, size_px=(32, 24))

    def alert(
        self,
        *,
        seq: int | None = None,
        jpeg: bytes | None = None,
        fix: dict[str, Any] | None = FIX,
        score: float = 0.93,
        t_wall_s: float | None = None,
        sign: bool = True,
        roi_box: tuple[int, int, int, int] | None = None,
        clip: bytes | None = None,
        clip_type: str = "video/webm",
        camera: str | None = None,
        vehicle: VehicleInfo | None = None,
        frame_size: tuple[int, int] | None = None,
    ) -> tuple[bytes, bytes]:
        """(alert payload, evidence JPEG)."""
        seq = next(self.seq) if seq is None else seq
        jpeg = jpeg if jpeg is not None else jpeg_bytes(seq)
        crop = self.crop(seq)
        ev = EvidenceRecord(
            alert_id=f"local-{seq}",
            frame_path="/nonexistent/frame.jpg",
            frame_sha256=hashlib.sha256(jpeg).hexdigest(),
            frame_bytes=len(jpeg),
            crop_path="/nonexistent/crop.jpg",
            crop_sha256=hashlib.sha256(crop).hexdigest(),
            crop_bytes=len(crop),
            clip_sha256=None if clip is None else hashlib.sha256(clip).hexdigest(),
            clip_bytes=None if clip is None else len(clip),
            clip_type=None if clip is None else clip_type,
        )
        det = Detection(
            alert_id=f"local-{seq}",
            roi_id="lane1",
            score=score,
            frames_over=5,
            window=8,
            frame_index=10 * seq,
            t_wall_s=time.time() if t_wall_s is None else t_wall_s,
            t_mono_s=time.monotonic(),
            model_name="phone-cls",
            model_version="1.2.0",
            model_sha256="ab" * 32,
            threshold=0.7,
            evidence=ev,
            roi_box=roi_box,
            camera_id=camera,
            vehicle=vehicle,
            frame_size=frame_size,
        )
        det = m.stamp_detection(det, fix=fix, gps_state="fix", max_fix_age_s=2.0)
        alert = m.build_alert(det, unit=self.unit_id, seq=seq)
        if sign:
            alert = sign_alert(alert, self.key)
        return m.encode(alert), jpeg


@pytest.fixture(scope="session", autouse=True)
def _need_mosquitto() -> None:
    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed ('make bootstrap' installs it)")


@pytest.fixture(scope="module")
def broker() -> Iterator[LocalBroker]:
    with LocalBroker() as b:
        yield b


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = db.make_engine(f"sqlite:///{tmp_path / 'cr.sqlite'}")
    db.migrate(e)
    yield e
    e.dispose()


@pytest.fixture
def unit_a(engine: Engine) -> Unit:
    u = Unit("unit-a", generate_key())
    db.upsert_unit(engine, u.unit_id, raw_pub_b64(u.key), "0" * 16)
    return u


def mqtt_cfg(broker: LocalBroker, **kw: Any) -> MqttConfig:
    settings: dict[str, Any] = {
        "host": broker.host,
        "port": broker.port,
        "client_id": f"cr-{uuid.uuid4().hex[:8]}",
        "share_group": f"g{uuid.uuid4().hex[:6]}",
    }
    settings.update(kw)
    return MqttConfig(**settings)


@pytest.fixture
def receiver(broker: LocalBroker, engine: Engine, unit_a: Unit) -> Iterator[Receiver]:
    """A receiver on its own share group; unit A is registered before it starts."""
    r = Receiver(mqtt_cfg(broker), engine).start()
    assert r.wait_ready(10), "receiver did not subscribe"
    yield r
    r.close()


class Publisher:
    def __init__(self, broker: LocalBroker, client_id: str = "test-pub") -> None:
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"{client_id}-{uuid.uuid4().hex[:6]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        wait: bool = True,
        user_properties: Sequence[tuple[str, str]] = (),
    ) -> mqtt.MQTTMessageInfo:
        props = None
        if user_properties:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho: untyped
            props.UserProperty = list(user_properties)
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if wait:
            info.wait_for_publish(10)
        return info

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(broker: LocalBroker) -> Iterator[Publisher]:
    p = Publisher(broker)
    yield p
    p.close()


# ---------------------------------------------------------------- PostgreSQL


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throw-away PostgreSQL cluster (initdb + pg_ctl) in a temp dir on a free port.

    The cluster lives in a directory of its own under the system temp dir, not under pytest's
    ``pytest-of-<user>``: every pytest session that starts (another run on the same machine)
    chmods that folder to 0700, and when we run as root the server runs as ``postgres``, which
    then cannot reach its data directory: the next checkpoint PANICs, the server restarts and
    fails, and whatever runs next sees "server closed the connection unexpectedly"."""
    if os.environ.get("PHONEWATCH_PG_URL"):
        yield os.environ["PHONEWATCH_PG_URL"]
        return
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (Debian package 'postgresql')")
    base = Path(tempfile.mkdtemp(prefix="phonewatch-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL")
        run_as = ["runuser", "-u", "postgres", "--"]
        os.chmod(base, 0o777)
        shutil.chown(sock, "postgres")
        for p in base.parents:
            if p == Path("/"):
                break
            os.chmod(p, os.stat(p).st_mode | 0o011)
    port = free_port()
    try:
        subprocess.run(
            [
                *run_as,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "pw",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
        )
        opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [
                *run_as,
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                opts,
                "-w",
                "-l",
                str(base / "pg.log"),
                "start",
            ],
            check=True,
            capture_output=True,
        )
        try:
            subprocess.run(
                [
                    str(bindir.parent / "bin" / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    "pw",
                    "phonewatch",
                ],
                check=True,
                capture_output=True,
            )
            yield f"postgresql+psycopg://pw@127.0.0.1:{port}/phonewatch"
        finally:
            subprocess.run(
                [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True,
                check=False,
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _drop_pg_database(admin: Engine, name: str) -> bool:
    """One attempt, on a new connection: end the database's sessions, then drop it."""
    try:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        return True
    except sa.exc.OperationalError:  # the connection was lost: a fresh one next time
        return False


@contextlib.contextmanager
def pg_database(base_url: str, prefix: str = "t") -> Iterator[str]:
    """A new, empty database in the cluster of ``base_url``; its URL. Dropped afterwards even
    if sessions are still connected to it or a server connection was lost meanwhile: every
    statement runs on a connection of its own (no pool to hand back a dead one), and a drop
    that fails on a lost connection is tried again (IF EXISTS: it may have gone through)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        try:
            yield base_url.rsplit("/", 1)[0] + "/" + name
        finally:
            assert wait_until(lambda: _drop_pg_database(admin, name), timeout_s=60, step_s=0.2), (
                f"could not drop database {name}"
            )
    finally:
        admin.dispose()


# ---------------------------------------------------------------- a real browser

CHROMIUM = os.environ.get("PHONEWATCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Debian's chromium, driven by Playwright (no browser download); the background-networking
flags keep it from calling out of a closed network."""


@pytest.fixture
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no chromium at {CHROMIUM} (Debian package 'chromium')")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()
