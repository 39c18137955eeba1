"""Model rollout end to end with a real Mosquitto: the control room offers a signed package in
hashed chunks, a unit's uplink and model receiver take it, and the control room records what
the unit made of it (audit log, ``rollouts``), resending only what the unit reports missing."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controlroom import db, rollout
from controlroom.receiver import Receiver
from edge.adapters.model_transfer import ModelReceiver
from edge.adapters.mqtt import MqttUplink
from edge.adapters.mqtt_config import MqttSinkConfig
from edge.app.compose import build_uplink
from edge.app.local_broker import LocalBroker
from edge.common import model_package as mp
from edge.common.signing import Ed25519PrivateKey, generate_key
from edge.core import messages as m
from tests.common.test_model_package import members, resign, tar_of
from tests.controlroom.conftest import Publisher, Unit
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "phone_in_hand"
DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return generate_key()


@pytest.fixture(scope="module")
def shipped(key: Ed25519PrivateKey) -> bytes:
    return mp.build_package(
        MODEL / "phone_in_hand.tflite", MODEL / "phone_in_hand.json", MODEL / "MODEL_CARD.md", key
    )


@pytest.fixture(scope="module")
def small(key: Ed25519PrivateKey) -> bytes:
    return mp.build_package(
        DATA / "brightness_int8.tflite", DATA / "brightness_int8.json", None, key
    )


@dataclass
class UnitSide:
    """Unit A's MQTT uplink with a model receiver attached, as compose.py wires them."""

    uplink: MqttUplink
    models: ModelReceiver
    packages: list[tuple[mp.InstalledPackage, str]] = field(default_factory=list)

    def close(self) -> None:
        self.models.close()
        self.uplink.close(drain_timeout_s=0)


def start_unit(broker: LocalBroker, data: Path, key: Ed25519PrivateKey, **kw: Any) -> UnitSide:
    cfg = MqttSinkConfig(
        **broker.sink_settings("unit-a"),
        signing_key_autogenerate=True,
        outbox_fsync=False,
        heartbeat_interval_s=3600,
    )
    up = build_uplink(cfg, unit_id="unit-a", data_dir=data, on_command=None)
    got: list[tuple[mp.InstalledPackage, str]] = []
    kw.setdefault("disk_reserve_bytes", 0)
    models = ModelReceiver(
        data / "models",
        [key.public_key()],
        unit_id="unit-a",
        publish=up.publish_model_status,
        on_package=lambda pkg, mode: got.append((pkg, mode)),
        **kw,
    ).start()
    up.attach_models(models)
    assert up.wait_connected(10)
    return UnitSide(up, models, got)


@pytest.fixture
def unit(broker: LocalBroker, tmp_path: Path, key: Ed25519PrivateKey) -> Iterator[UnitSide]:
    u = start_unit(broker, tmp_path / "unit-a", key)
    yield u
    u.close()


def offer_when_subscribed(
    engine: Engine, receiver: Receiver, blob: bytes, mode: str, **kw: Any
) -> rollout.Offer:
    """Offer once the unit's subscription is in place (until then the broker reports no
    subscriber and the offer is marked unsent)."""
    sent: list[rollout.Offer] = []

    def attempt() -> bool:
        offer, s = rollout.offer_package(
            engine, receiver, unit="unit-a", blob=blob, mode=mode, user="tester", **kw
        )
        if s.ok:
            sent.append(offer)
        return s.ok

    assert wait_until(attempt, 10)
    return sent[0]


def audit(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        q = sa.select(db.audit.c.action, db.audit.c.detail).order_by(db.audit.c.id)
        return [(r.action, r.detail or "") for r in conn.execute(q)]


def row(engine: Engine, sha: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.select(db.rollouts).where(db.rollouts.c.package_sha256 == sha)).one()


def test_an_offered_package_is_installed_and_the_control_room_sees_it(
    engine: Engine, receiver: Receiver, unit_a: Unit, unit: UnitSide, shipped: bytes
) -> None:
    offer = offer_when_subscribed(engine, receiver, shipped, "shadow")
    assert wait_until(lambda: unit.packages, 15)
    pkg, mode = unit.packages[0]
    assert mode == "shadow"
    assert (pkg.name, pkg.version, pkg.sha256) == ("phone-in-hand", "1.0.0", offer.sha256)
    assert pkg.tflite.read_bytes() == (MODEL / "phone_in_hand.tflite").read_bytes()
    assert wait_until(lambda: row(engine, offer.sha256).state == "installed", 10)
    r = row(engine, offer.sha256)
    assert (r.unit, r.version, r.mode, r.chunks_resent) == ("unit-a", "1.0.0", "shadow", 0)
    assert r.chunk_count == len(offer.chunks) >= 5
    actions = [a for a, _ in audit(engine)]
    assert actions[-4:] == ["model_offer", "model_receiving", "model_received", "model_installed"]
    assert unit.models.stats()["chunks_kept"] == len(offer.chunks)
    assert unit.uplink.stats()["model_status_published"] == 3
    with engine.connect() as conn:
        stored = conn.execute(sa.select(db.model_packages.c.blob)).scalar_one()
    assert hashlib.sha256(stored).hexdigest() == offer.sha256


def test_an_interrupted_transfer_resumes_with_only_the_missing_chunks(
    broker: LocalBroker,
    engine: Engine,
    receiver: Receiver,
    unit_a: Unit,
    tmp_path: Path,
    key: Ed25519PrivateKey,
    shipped: bytes,
) -> None:
    data = tmp_path / "unit-a"
    first = start_unit(broker, data, key)
    offer = rollout.make_offer(shipped, mode="live", chunk_size=16 * 1024)
    n, half = len(offer.chunks), len(offer.chunks) // 2
    rollout.record_offer(engine, unit="unit-a", blob=shipped, offer=offer, user="tester")
    # the control room goes away after half the chunks; then the unit is restarted
    assert wait_until(
        lambda: rollout.send_offer(receiver, "unit-a", offer, indices=range(half)).ok, 10
    )
    assert wait_until(lambda: first.models.stats()["chunks_kept"] == half, 10)
    first.close()
    assert receiver.stats()["chunks_resent"] == 0

    second = start_unit(broker, data, key, reconnect_grace_s=0.1)
    try:
        assert wait_until(lambda: second.packages, 15)
        assert second.packages[0][1] == "live"
        assert second.packages[0][0].sha256 == offer.sha256
        assert second.models.stats()["chunks_kept"] == n - half  # nothing kept twice
        assert second.models.stats()["chunks_duplicate"] == 0
        assert wait_until(lambda: row(engine, offer.sha256).state == "installed", 10)
        assert row(engine, offer.sha256).chunks_resent == n - half
        assert receiver.stats()["chunks_resent"] == n - half
        asked = [d for a, d in audit(engine) if a == "model_receiving" and "missing" in d]
        assert asked == [f"1.0.0 ({offer.sha256[:12]}); has {half} chunk(s); missing {n - half}"]
    finally:
        second.close()


def refusals(key: Ed25519PrivateKey, small: bytes) -> list[tuple[str, bytes, str]]:
    """(case, package, what the unit's refusal says): every refusal of the contract."""
    files = members(small)
    forged = dict(files)
    forged["manifest.sig"] = base64.b64encode(generate_key().sign(forged["manifest.json"]))
    tampered = dict(files)
    model = bytearray(tampered["model.tflite"])
    model[-1] ^= 1
    tampered["model.tflite"] = bytes(model)
    side = json.loads(dict(files)["model.json"])
    side["sha256"] = "0" * 64
    stranger = mp.build_package(
        DATA / "brightness_int8.tflite", DATA / "brightness_int8.json", None, generate_key()
    )
    return [
        ("bad signature", tar_of(list(forged.items())), "manifest.sig does not verify"),
        ("unpinned key", stranger, "not pinned on this unit"),
        ("wrong hash", tar_of(list(tampered.items())), "model.tflite: SHA-256 differs"),
        ("not TFLite", resign(files, key, **{"model.tflite": b"\x00" * 64}), "not a TFLite"),
        (
            "sidecar not matching",
            resign(files, key, **{"model.json": json.dumps(side).encode()}),
            "does not match the model",
        ),
    ]


def refused(engine: Engine, sha: str) -> str:
    """The detail of the audited refusal of package ``sha``, or ""."""
    return next((d for a, d in audit(engine) if a == "model_refused" and sha[:12] in d), "")


def test_every_refusal_reaches_the_control_room_with_its_reason(
    engine: Engine,
    receiver: Receiver,
    unit_a: Unit,
    unit: UnitSide,
    key: Ed25519PrivateKey,
    small: bytes,
) -> None:
    for case, blob, why in refusals(key, small):
        offer = offer_when_subscribed(engine, receiver, blob, "live", chunk_size=1024)
        sha = offer.sha256
        assert wait_until(functools.partial(refused, engine, sha), 10), case
        assert why in refused(engine, offer.sha256), case
        assert row(engine, offer.sha256).state == "refused", case
    # truncated inside its content (past it is only the tar's zero padding): the control room
    # will not offer it; sent anyway by hand, the unit refuses it too
    truncated = small[: len(small.rstrip(b"\0")) - 100]
    with pytest.raises(rollout.RolloutError, match="truncated"):
        rollout.make_offer(truncated, mode="live")
    chunks = rollout.split(truncated, 1024)
    body = dict(rollout.make_offer(small, mode="live", chunk_size=1024).body)
    body.update(
        package_sha256=hashlib.sha256(truncated).hexdigest(),
        size=len(truncated),
        chunk_count=len(chunks),
        chunks=[hashlib.sha256(c).hexdigest() for c in chunks],
    )
    sent = rollout.send_offer(receiver, "unit-a", rollout.Offer(body, chunks))
    assert sent.ok, sent.detail
    sha = body["package_sha256"]
    assert wait_until(lambda: refused(engine, sha), 10)
    assert "truncated" in refused(engine, sha)
    assert unit.packages == []
    assert unit.models.stats()["packages_refused"] == 6
    assert sorted(p.name for p in (unit.models.models_dir).iterdir()) == ["incoming"]


def test_bad_model_reports_and_offers_to_a_unit_without_keys_are_counted_and_dropped(
    broker: LocalBroker,
    engine: Engine,
    receiver: Receiver,
    unit_a: Unit,
    publisher: Publisher,
    tmp_path: Path,
    small: bytes,
) -> None:
    ok = m.build_model_status(
        "unit-a", t_wall_s=time.time(), package_sha256="c" * 64, version="9", event="installed"
    )
    publisher.publish("phonewatch/unit-a/model/status", b"{not json")
    publisher.publish("phonewatch/unit-a/model/status", m.encode(dict(ok, event="exploded")))
    publisher.publish("phonewatch/unit-b/model/status", m.encode(dict(ok, unit="unit-b")))
    publisher.publish("phonewatch/unit-a/model/status", m.encode(dict(ok, unit="unit-b")))
    publisher.publish("phonewatch/unit-a/model/status", m.encode(ok))
    assert wait_until(lambda: any(a == "model_installed" for a, _ in audit(engine)), 10)
    # (the four may be counted after the good one is stored: other topics, other order)
    assert wait_until(lambda: receiver.stats()["model_status_rejected"] == 4, 10)
    assert [a for a, _ in audit(engine) if a.startswith("model_")] == ["model_installed"]

    # a unit whose uplink has no model receiver ([models] not set) refuses the offer
    cfg = MqttSinkConfig(
        **broker.sink_settings("unit-a"), signing_key_autogenerate=True, heartbeat_interval_s=3600
    )
    up = build_uplink(cfg, unit_id="unit-a", data_dir=tmp_path / "bare", on_command=None)
    try:
        assert up.wait_connected(10)
        offer_when_subscribed(engine, receiver, small, "live")
        assert wait_until(lambda: up.stats()["commands_rejected"] == 1, 10)
        assert up.stats()["model_chunks"] == 0  # not subscribed to chunks at all
    finally:
        up.close(drain_timeout_s=0)
