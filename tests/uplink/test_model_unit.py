"""The composed unit with ``[models] trusted_keys``: its uplink takes a package offered over a
real Mosquitto, and the unit is handed the installed package (``Unit.on_model_package``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from controlroom.rollout import chunk_topic, make_offer
from edge.app.compose import Unit
from edge.app.config import load_config
from edge.app.local_broker import LocalBroker
from edge.common import model_package as mp
from edge.common.signing import generate_key, save_public_key
from edge.core.errors import ConfigError
from tests.uplink.conftest import UNIT_A, connect_client
from tests.uplink.test_unit_commands import CMD, write_config
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("need_mosquitto")]

DATA = Path(__file__).resolve().parents[1] / "data"
MODELS = '[models]\ntrusted_keys = ["keys/model.pub"]\n'


def test_a_unit_with_a_pinned_key_takes_an_offered_package(
    tmp_path: Path, broker: LocalBroker, make_video: Callable[..., Path]
) -> None:
    key = generate_key()
    save_public_key(key.public_key(), tmp_path / "keys" / "model.pub")  # relative to the config
    cfg_path = write_config(tmp_path / "unit.toml", broker, make_video([50] * 4), extra=MODELS)
    cfg = load_config(cfg_path)
    assert cfg.models.trusted_keys == [tmp_path / "keys" / "model.pub"]
    blob = mp.build_package(
        DATA / "brightness_int8.tflite", DATA / "brightness_int8.json", None, key
    )
    offer = make_offer(blob, mode="shadow", chunk_size=1024)
    with Unit(cfg, config_path=cfg_path) as unit:
        assert unit.model_receiver is not None
        assert unit.model_receiver.models_dir == cfg.unit.data_dir / "models"
        cr = connect_client(broker, "cr-model-offer")
        cr.loop_start()
        try:
            assert wait_until(cr.is_connected, 10)
            rx = unit.model_receiver

            def offered() -> bool:  # again until the unit's subscription is in place
                cr.publish(CMD + "model_offer", json.dumps(offer.body), qos=1).wait_for_publish(5)
                return bool(wait_until(lambda: rx.stats()["offers"] > 0, 0.5))

            assert wait_until(offered, 10)

            def delivered() -> bool:  # again until the chunk subscription is in place too
                for i, c in enumerate(offer.chunks):
                    topic = chunk_topic("phonewatch", UNIT_A, offer.sha256, i)
                    cr.publish(topic, c, qos=1).wait_for_publish(5)
                return bool(wait_until(lambda: rx.stats()["packages_installed"] == 1, 2.0))

            assert wait_until(delivered, 30)
        finally:
            cr.loop_stop()
            cr.disconnect()
        # handed to the model manager, which runs it in shadow beside the live model
        models = unit.models
        assert models is not None
        assert wait_until(lambda: (models.heartbeat() or {}).get("shadow") is not None, 10)
        beat = models.heartbeat()
        assert beat is not None
        shadow = beat["shadow"]
        assert (shadow["name"], shadow["version"]) == ("brightness-int8", "test-1")
        installed = [p for p in (cfg.unit.data_dir / "models").iterdir() if p.name != "incoming"]
        assert [p.name for p in installed if p.is_dir()] == [f"test-1-{offer.sha256[:12]}"]


def test_a_missing_trusted_key_is_a_config_error_naming_it(
    tmp_path: Path, broker: LocalBroker, make_video: Callable[..., Path]
) -> None:
    cfg_path = write_config(tmp_path / "unit.toml", broker, make_video([50] * 4), extra=MODELS)
    unit = Unit(load_config(cfg_path), config_path=cfg_path)
    with pytest.raises(ConfigError, match=r"models.trusted_keys: .*model.pub"):
        unit.__enter__()


class RecordingChunks:
    """A model receiver that records what the uplink routes to it."""

    def __init__(self) -> None:
        self.chunks: list[tuple[str, int, bytes]] = []
        self.connects = 0

    def offer(self, body: dict[str, object]) -> None:
        pass

    def chunk(self, package_sha256: str, index: int, payload: bytes) -> None:
        self.chunks.append((package_sha256, index, payload))

    def connected(self) -> None:
        self.connects += 1


def test_chunks_reach_a_receiver_attached_while_the_uplink_is_still_connecting(
    tmp_path: Path, broker: LocalBroker
) -> None:
    """``attach_models`` during ``_on_connect`` (paho connected, the uplink's own flag not yet
    set, its subscription list already made without the chunk topic): the chunk topic must
    still be subscribed. It used to be subscribed by neither, and no package ever arrived."""
    from edge.app.compose import build_uplink
    from tests.uplink.test_mqtt import sink_config

    up = build_uplink(sink_config(broker), unit_id=UNIT_A, data_dir=tmp_path / UNIT_A)
    cr = connect_client(broker, "cr-chunks")
    cr.loop_start()
    try:
        assert up.wait_connected(10)
        up._connected.clear()  # that window: _on_connect has subscribed, not yet flagged
        rx = RecordingChunks()
        up.attach_models(rx)
        up._connected.set()
        assert wait_until(cr.is_connected, 10)
        topic = chunk_topic("phonewatch", UNIT_A, "ab" * 32, 0)

        def delivered() -> bool:  # again until the SUBSCRIBE is in place
            cr.publish(topic, b"chunk-0", qos=1).wait_for_publish(5)
            return bool(wait_until(lambda: rx.chunks, 0.5))

        assert wait_until(delivered, 10)
        assert rx.chunks[0] == ("ab" * 32, 0, b"chunk-0")
        assert rx.connects == 1
    finally:
        cr.loop_stop()
        cr.disconnect()
        up.close(drain_timeout_s=0)
