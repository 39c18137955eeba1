"""The production broker config (TLS, client certificates, per-unit ACL) with a real Mosquitto."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.adapters.mqtt import MqttUplink
from edge.adapters.mqtt_config import MqttSinkConfig
from edge.app.compose import build_uplink
from edge.app.local_broker import CERT_SCRIPT, LocalBroker
from edge.common.signing import generate_key, load_public_key, sign_alert, verify_alert
from edge.core import messages as m
from edge.core.ports import Detection
from tests.uplink.conftest import UNIT_A, UNIT_B, connect_client, subscribe
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("need_mosquitto")]


@pytest.fixture
def uplink_a(tls_broker: LocalBroker, tmp_path: Path) -> Iterator[MqttUplink]:
    cfg = MqttSinkConfig(
        **tls_broker.sink_settings(UNIT_A),
        signing_key_autogenerate=True,
        reconnect_min_s=0.2,
        reconnect_max_s=1.0,
        heartbeat_interval_s=3600,
    )
    up = build_uplink(cfg, unit_id=UNIT_A, data_dir=tmp_path / UNIT_A, on_command=None)
    yield up
    up.close(drain_timeout_s=0)


def _connects(broker: LocalBroker, **tls: Any) -> bool:
    """Whether a client with these TLS settings gets a successful CONNACK within 3 s."""
    ok, done = threading.Event(), threading.Event()
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2, client_id="probe", protocol=mqtt.MQTTv5
    )
    c.tls_set(**tls)

    def on_connect(cl: mqtt.Client, u: Any, f: Any, rc: Any, p: Any) -> None:
        if not rc.is_failure:
            ok.set()
        done.set()

    c.on_connect = on_connect
    c.on_disconnect = lambda *a: done.set()
    c.on_connect_fail = lambda *a: done.set()
    try:
        c.connect("localhost", broker.port, keepalive=5)
    except (ssl.SSLError, OSError):
        return False
    c.loop_start()
    try:
        done.wait(5)
        return ok.is_set()
    finally:
        c.loop_stop()
        c.disconnect()


def test_tls_round_trip_verified(
    tls_broker: LocalBroker,
    uplink_a: MqttUplink,
    tmp_path: Path,
    make_detection: Callable[..., Detection],
) -> None:
    cr = subscribe(tls_broker, client_id="cr-tls")
    assert uplink_a.wait_connected(10)
    det = make_detection()
    uplink_a.send(det)
    assert cr.wait_alerts(1)
    assert cr.wait(lambda ms: any("/evidence/" in r.topic for r in ms))
    alert = cr.alerts()[0]
    assert verify_alert(alert, load_public_key(tmp_path / UNIT_A / "keys" / f"{UNIT_A}.sign.pub"))
    assert cr.evidence()[alert["alert_id"]] == Path(det.evidence.frame_path).read_bytes()
    cr.close()


def test_client_without_valid_certificate_is_refused(
    tls_broker: LocalBroker, tmp_path: Path
) -> None:
    files = tls_broker.client_certs(UNIT_A)
    ca = str(files["ca_file"])
    assert _connects(
        tls_broker, ca_certs=ca, certfile=str(files["cert_file"]), keyfile=str(files["key_file"])
    )  # the control case
    assert not _connects(tls_broker, ca_certs=ca)  # no client certificate
    rogue = tmp_path / "rogue"
    for step in (["ca", str(rogue)], ["client", str(rogue), UNIT_A]):
        subprocess.run(["bash", str(CERT_SCRIPT), *step], check=True, capture_output=True)
    assert not _connects(
        tls_broker,
        ca_certs=ca,
        certfile=str(rogue / f"{UNIT_A}.crt"),
        keyfile=str(rogue / f"{UNIT_A}.key"),
    )  # right name, wrong CA
    # and plain MQTT on the TLS port gets nowhere
    plain = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    got = threading.Event()
    plain.on_connect = lambda *a: got.set()
    try:
        plain.connect("127.0.0.1", tls_broker.port, keepalive=5)
        plain.loop_start()
        assert not got.wait(2)
    except OSError:
        pass
    finally:
        plain.loop_stop()


def test_unit_a_cannot_publish_under_unit_b(tls_broker: LocalBroker) -> None:
    cr = subscribe(tls_broker, client_id="cr-acl")
    a = connect_client(tls_broker, "acl-probe-a", certs_for=UNIT_A)
    codes: dict[int, Any] = {}
    a.on_publish = lambda cl, u, mid, rc, p: codes.__setitem__(mid, rc)
    a.loop_start()
    assert wait_until(a.is_connected, 10)
    denied = [
        a.publish(f"phonewatch/{UNIT_B}/{t}", b'{"forged": true}', qos=1)
        for t in (
            "alert",
            "status",
            "heartbeat",
            "evidence/unit-b-1",
            "collect/lane1-1700000000000",
            "snapshot",
        )
    ]
    denied.append(a.publish("phonewatch/unit-b/cmd/mute", b'{"duration_s": 5}', qos=1))
    denied.append(a.publish(f"phonewatch/{UNIT_A}/cmd/mute", b'{"duration_s": 5}', qos=1))
    denied.append(a.publish(f"phonewatch/{UNIT_A}/collect/a/b", b"\xff\xd8", qos=1))
    denied.append(a.publish(f"phonewatch/{UNIT_A}/snapshot/x", b"\xff\xd8", qos=1))
    own = [
        a.publish(f"phonewatch/{UNIT_A}/{t}", b"\xff\xd8\xff\xd9", qos=1)
        for t in ("collect/lane1-1700000000000", "snapshot")
    ]
    allowed = a.publish(f"phonewatch/{UNIT_A}/alert", b'{"sentinel": true}', qos=1)
    allowed.wait_for_publish(5)
    for info in denied + own:
        info.wait_for_publish(5)
    # The broker refuses a denied publish as it reads it (the PUBACK says so) and handles a
    # client's packets in order: once the sentinel, published last, is here, anything it let
    # through before it is here too.
    assert cr.wait(
        lambda ms: (
            {
                f"phonewatch/{UNIT_A}/alert",
                f"phonewatch/{UNIT_A}/collect/lane1-1700000000000",
                f"phonewatch/{UNIT_A}/snapshot",
            }
            <= {r.topic for r in ms}
        )
    )
    topics = {r.topic for r in cr.messages}
    assert not any(t.startswith(f"phonewatch/{UNIT_B}/") for t in topics), topics
    assert not any("/cmd/" in t for t in topics), topics
    assert all(codes[i.mid].is_failure for i in denied)  # MQTT 5: PUBACK "not authorized"
    assert not codes[allowed.mid].is_failure
    assert not any(codes[i.mid].is_failure for i in own)  # its own crops and snapshot
    assert {
        f"phonewatch/{UNIT_A}/collect/lane1-1700000000000",
        f"phonewatch/{UNIT_A}/snapshot",
    } <= topics
    a.loop_stop()
    a.disconnect()
    cr.close()


def test_unit_reads_only_its_own_commands(tls_broker: LocalBroker) -> None:
    got: list[str] = []
    a = connect_client(tls_broker, "acl-reader-a", certs_for=UNIT_A)
    a.on_message = lambda cl, u, msg: got.append(msg.topic)
    subacks: list[Any] = []
    a.on_subscribe = lambda cl, u, mid, rcs, p: subacks.append(rcs)
    a.loop_start()
    a.subscribe("phonewatch/+/cmd/+", qos=1)
    a.subscribe("phonewatch/#", qos=1)
    assert wait_until(lambda: len(subacks) >= 2, 5)
    assert len(subacks) == 2
    cr = connect_client(tls_broker, "cr-commander", certs_for="controlroom")
    cr.loop_start()
    assert wait_until(cr.is_connected, 10)
    cr.publish(f"phonewatch/{UNIT_B}/cmd/mute", b'{"duration_s": 5}', qos=1).wait_for_publish(5)
    cr.publish(f"phonewatch/{UNIT_B}/alert", b"{}", qos=1).wait_for_publish(5)
    cr.publish(f"phonewatch/{UNIT_A}/cmd/reload", b"{}", qos=1).wait_for_publish(5)
    # the broker forwards one client's publishes in order: once the last one is here, unit B's
    # (published before it) would be here too
    wait_until(lambda: f"phonewatch/{UNIT_A}/cmd/reload" in got, 5)
    # (two overlapping subscriptions may deliver it twice; nothing of unit B's may come)
    assert set(got) == {f"phonewatch/{UNIT_A}/cmd/reload"}
    for c in (a, cr):
        c.loop_stop()
        c.disconnect()


def test_model_chunks_reach_only_their_unit_and_status_comes_only_from_it(
    tls_broker: LocalBroker,
) -> None:
    """Model rollout topics: only the control room writes chunks, a unit reads only its own
    and reports only on its own model/status."""
    got: list[str] = []
    a = connect_client(tls_broker, "acl-model-a", certs_for=UNIT_A)
    a.on_message = lambda cl, u, msg: got.append(msg.topic)
    subacks: list[Any] = []
    a.on_subscribe = lambda cl, u, mid, rcs, p: subacks.append(rcs)
    a.loop_start()
    a.subscribe("phonewatch/+/model/chunk/#", qos=1)
    assert wait_until(lambda: subacks, 5)
    cr_sub = subscribe(tls_broker, client_id="cr-model", topics=("phonewatch/+/model/#",))
    cr = connect_client(tls_broker, "cr-chunker", certs_for="controlroom")
    cr.loop_start()
    assert wait_until(cr.is_connected, 10)
    sha = "ab" * 32
    # unit A forges a chunk for itself and reports for unit B: both refused by the ACL
    a.publish(f"phonewatch/{UNIT_A}/model/chunk/{sha}/0", b"forged", qos=1).wait_for_publish(5)
    a.publish(f"phonewatch/{UNIT_B}/model/status", b"{}", qos=1).wait_for_publish(5)
    cr.publish(f"phonewatch/{UNIT_B}/model/chunk/{sha}/0", b"b", qos=1).wait_for_publish(5)
    cr.publish(f"phonewatch/{UNIT_A}/model/chunk/{sha}/1", b"a", qos=1).wait_for_publish(5)
    a.publish(f"phonewatch/{UNIT_A}/model/status", b"{}", qos=1).wait_for_publish(5)
    # each client's publishes arrive in order: once the last ones are here, the earlier would be
    assert wait_until(lambda: f"phonewatch/{UNIT_A}/model/chunk/{sha}/1" in got, 5)
    assert cr_sub.wait(lambda ms: any(r.topic.endswith(f"{UNIT_A}/model/status") for r in ms))
    assert set(got) == {f"phonewatch/{UNIT_A}/model/chunk/{sha}/1"}
    assert {r.topic for r in cr_sub.messages} == {
        f"phonewatch/{UNIT_B}/model/chunk/{sha}/0",
        f"phonewatch/{UNIT_A}/model/chunk/{sha}/1",
        f"phonewatch/{UNIT_A}/model/status",
    }
    cr_sub.close()
    for c in (a, cr):
        c.loop_stop()
        c.disconnect()


def test_uplink_publishes_crops_and_snapshots_only_under_its_own_id(
    tls_broker: LocalBroker, uplink_a: MqttUplink, tmp_path: Path
) -> None:
    cr = subscribe(tls_broker, client_id="cr-media")
    assert uplink_a.wait_connected(10)
    assert uplink_a.publish_collect("lane1-1700000000123", b"\xff\xd8crop\xff\xd9")
    assert uplink_a.publish_snapshot(b"\xff\xd8snap\xff\xd9")
    assert cr.wait(
        lambda ms: (
            {r.topic for r in ms}
            >= {f"phonewatch/{UNIT_A}/collect/lane1-1700000000123", f"phonewatch/{UNIT_A}/snapshot"}
        )
    )
    assert not any(
        r.retain for r in cr.messages if "/collect/" in r.topic or r.topic.endswith("/snapshot")
    )
    # unit A's certificate configured as unit B: the ACL refuses (PUBACK failure), counted
    cfg = MqttSinkConfig(
        **tls_broker.sink_settings(UNIT_A), signing_key_autogenerate=True, heartbeat_interval_s=3600
    )
    imp = build_uplink(
        cfg.model_copy(update={"client_id": "impostor-media"}),
        unit_id=UNIT_B,
        data_dir=tmp_path / "impostor",
        on_command=None,
    )
    try:
        assert imp.wait_connected(10)
        assert imp.publish_collect("lane1-1", b"\xff\xd8\xff\xd9")
        assert imp.publish_snapshot(b"\xff\xd8\xff\xd9")
        wait_until(lambda: imp.stats()["snapshot_refused"] and imp.stats()["collect_refused"], 5)
        st = imp.stats()
        assert st["collect_refused"] == 1
        assert st["snapshot_refused"] == 1
    finally:
        imp.close(drain_timeout_s=0)
    # A marker published after the broker refused the impostor's (PUBACKs seen above): once it
    # is here, anything the broker had let through before it would be here too.
    assert uplink_a.publish_collect("lane1-1700000000999", b"\xff\xd8marker\xff\xd9")
    assert cr.wait(lambda ms: any(r.topic.endswith("/collect/lane1-1700000000999") for r in ms))
    assert not any(r.topic.startswith(f"phonewatch/{UNIT_B}/") for r in cr.messages)
    cr.close()


def test_unit_claiming_another_id_is_refused_and_keeps_its_alert(
    tls_broker: LocalBroker, tmp_path: Path, make_detection: Callable[..., Detection]
) -> None:
    # unit A's certificate, configured as unit B: the broker refuses every publish (PUBACK 0x87)
    cfg = MqttSinkConfig(
        **tls_broker.sink_settings(UNIT_A), signing_key_autogenerate=True, heartbeat_interval_s=3600
    )
    up = build_uplink(
        cfg.model_copy(update={"client_id": "impostor"}),
        unit_id=UNIT_B,
        data_dir=tmp_path / "impostor",
        on_command=None,
    )
    try:
        assert up.wait_connected(10)
        up.send(make_detection())
        wait_until(lambda: up.stats()["refused"], 5)
        st = up.stats()
        assert st["refused"] >= 1
        assert st["outbox_depth"] == 1  # refused, never deleted
    finally:
        up.close(drain_timeout_s=0)


def test_alert_forged_with_another_key_fails_verification(
    tls_broker: LocalBroker,
    tmp_path: Path,
    uplink_a: MqttUplink,
    make_detection: Callable[..., Detection],
) -> None:
    cr = subscribe(tls_broker, client_id="cr-forgery")
    assert uplink_a.wait_connected(10)
    uplink_a.send(make_detection())
    assert cr.wait_alerts(1)
    genuine = cr.alerts()[0]
    # unit B (a valid certificate) publishes, on its own topic, an alert claiming to be unit A's
    forged = sign_alert({**genuine, "seq": 99, "alert_id": f"{UNIT_A}-99"}, generate_key())
    b = connect_client(tls_broker, "forger-b", certs_for=UNIT_B)
    b.loop_start()
    assert wait_until(b.is_connected, 10)
    b.publish(f"phonewatch/{UNIT_B}/alert", m.encode(forged), qos=1).wait_for_publish(5)
    assert cr.wait_alerts(2)
    pub_a = load_public_key(tmp_path / UNIT_A / "keys" / f"{UNIT_A}.sign.pub")
    received = {a["seq"]: a for a in cr.alerts()}
    assert verify_alert(received[genuine["seq"]], pub_a)
    assert not verify_alert(received[99], pub_a)
    assert m.schema_errors(received[99], m.ALERT_SCHEMA) == []  # well-formed, still refused
    assert json.loads(m.encode(received[99]))["unit"] == UNIT_A
    b.loop_stop()
    b.disconnect()
    cr.close()
