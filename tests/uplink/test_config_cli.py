"""Uplink config (bounds, cross-field rules, errors naming the key), ``check_broker``, the
``phonewatch uplink demo`` command and the local broker helper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge.adapters.mqtt import check_broker
from edge.adapters.mqtt_config import MqttSinkConfig
from edge.app.cli import main as cli_main
from edge.app.compose import build_uplink
from edge.app.config import parse_config
from edge.app.local_broker import LocalBroker, free_port
from edge.core.errors import BrokerError, ConfigError, SignatureError
from tests.uplink.conftest import UNIT_A

pytestmark = pytest.mark.usefixtures("need_mosquitto")


def _config(sink: dict[str, Any]) -> dict[str, Any]:
    return {
        "unit": {"id": "unit-a"},
        "camera": {"type": "folder", "path": "/tmp"},
        "rois": [{"id": "lane1", "rect": [0, 0, 1, 1]}],
        "model": {"path": "m.tflite"},
        "sink": sink,
    }


def test_mqtt_sink_in_the_main_config() -> None:
    cfg = parse_config(
        _config(
            {
                "type": "mqtt",
                "host": "broker.local",
                "port": 8883,
                "ca_file": "/etc/pw/ca.crt",
                "cert_file": "/etc/pw/u.crt",
                "key_file": "/etc/pw/u.key",
                "heartbeat_interval_s": 10,
            }
        )
    )
    assert isinstance(cfg.sink, MqttSinkConfig)
    assert cfg.sink.uses_tls
    assert cfg.sink.topic_root == "phonewatch"
    assert cfg.sink.max_inflight == 16


@pytest.mark.parametrize(
    ("sink", "key"),
    [
        ({"type": "mqtt", "prot": 1883}, "sink.prot"),
        ({"type": "mqtt", "port": 0}, "sink.port"),
        ({"type": "mqtt", "keepalive_s": 1}, "sink.keepalive_s"),
        ({"type": "mqtt", "topic_root": "phone/#"}, "sink.topic_root"),
        ({"type": "mqtt", "outbox_quota_mb": 0}, "sink.outbox_quota_mb"),
        ({"type": "mqtt", "heartbeat_interval_s": 0.1}, "sink.heartbeat_interval_s"),
        ({"type": "mqtt", "command_max_bytes": 10}, "sink.command_max_bytes"),
    ],
)
def test_bad_values_name_the_key(sink: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config(_config(sink))


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"cert_file": "u.crt"}, "both cert_file and key_file"),
        ({"cert_file": "u.crt", "key_file": "u.key"}, "needs ca_file"),
        ({"password": "x"}, "needs a username"),
        ({"username": "u", "password": "x", "password_file": "p"}, "not both"),
        ({"reconnect_min_s": 10, "reconnect_max_s": 5}, "reconnect_min_s"),
    ],
)
def test_cross_field_rules(extra: dict[str, Any], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        MqttSinkConfig(type="mqtt", **extra)


def test_password_file_and_secret_not_printed(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    cfg = MqttSinkConfig(type="mqtt", username="u", password_file=tmp_path / "pw")
    assert cfg.resolved_password() == "s3cret"
    inline = MqttSinkConfig(type="mqtt", username="u", password="hunter2")
    assert "hunter2" not in repr(inline)
    assert inline.resolved_password() == "hunter2"
    missing = MqttSinkConfig(type="mqtt", username="u", password_file=tmp_path / "nope")
    with pytest.raises(ConfigError, match="password_file"):
        missing.resolved_password()


def test_missing_signing_key_refuses_to_start(tmp_path: Path) -> None:
    cfg = MqttSinkConfig(type="mqtt", port=free_port())
    with pytest.raises(SignatureError, match="keys generate"):
        build_uplink(cfg, unit_id=UNIT_A, data_dir=tmp_path, on_command=None)
    assert not (tmp_path / "outbox.sqlite").exists()


@pytest.mark.slow
def test_check_broker(tmp_path: Path) -> None:
    with LocalBroker(tls=True, units=[UNIT_A]) as b:
        ok, detail = check_broker(
            MqttSinkConfig(**b.sink_settings(UNIT_A)), unit_id=UNIT_A, timeout_s=5
        )
        assert ok, detail
        no_cert = MqttSinkConfig(
            type="mqtt", host="localhost", port=b.port, ca_file=b.certs_dir / "ca.crt"
        )
        ok, detail = check_broker(no_cert, unit_id=UNIT_A, timeout_s=3)
        assert not ok
    ok, detail = check_broker(
        MqttSinkConfig(type="mqtt", port=free_port()), unit_id=UNIT_A, timeout_s=2
    )
    assert not ok
    assert "cannot connect" in detail


def test_local_broker_reports_a_bad_start() -> None:
    with LocalBroker() as b, pytest.raises(BrokerError, match="mosquitto"):
        LocalBroker(port=b.port).start()  # port taken
    with pytest.raises(BrokerError, match="no TLS"):
        LocalBroker().client_certs("x")


@pytest.mark.slow
def test_cli_uplink_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["uplink", "demo", "--alerts", "3"]) == 0
    out = capsys.readouterr().out
    assert "3 alert(s) received, 3 signature(s) verified, 3 evidence image(s) matched" in out


def test_missing_tls_file_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    from edge.common.signing import write_key_pair

    write_key_pair(UNIT_A, tmp_path / "keys")
    ca = tmp_path / "ca.crt"
    ca.write_text("not a certificate")
    for cfg, key in [
        (MqttSinkConfig(type="mqtt", ca_file=tmp_path / "absent.crt"), "sink.ca_file"),
        (MqttSinkConfig(type="mqtt", ca_file=ca), "sink.ca_file"),
        (
            MqttSinkConfig(
                type="mqtt", ca_file=ca, cert_file=tmp_path / "u.crt", key_file=tmp_path / "u.key"
            ),
            "sink.cert_file",
        ),
    ]:
        with pytest.raises(ConfigError, match=key):
            build_uplink(cfg, unit_id=UNIT_A, data_dir=tmp_path, on_command=None)
    ok, detail = check_broker(
        MqttSinkConfig(type="mqtt", ca_file=tmp_path / "absent.crt"), unit_id=UNIT_A, timeout_s=1
    )
    assert not ok
    assert "sink.ca_file" in detail


@pytest.mark.slow
def test_composition_root_builds_the_mqtt_sink(tmp_path: Path) -> None:
    """The lead's composition root (edge.app.compose.build_sink) with a [sink] type = "mqtt"."""
    from edge.adapters.mqtt import MqttUplink
    from edge.app.compose import build_sink

    with LocalBroker() as b:
        data = _config({**b.sink_settings(UNIT_A), "signing_key_autogenerate": True})
        data["unit"]["data_dir"] = str(tmp_path / "unit")
        sink = build_sink(parse_config(data), on_command=None)
        try:
            assert isinstance(sink, MqttUplink)
            assert sink.wait_connected(10)
            assert (tmp_path / "unit" / "outbox.sqlite").exists()
            assert (tmp_path / "unit" / "keys" / f"{UNIT_A}.sign.pub").exists()
        finally:
            sink.close()


def test_check_broker_with_a_non_mqtt_sink() -> None:
    cfg = parse_config(_config({"type": "jsonl"}))
    ok, detail = check_broker(cfg.sink, unit_id=UNIT_A)
    assert not ok
    assert "jsonl" in detail
