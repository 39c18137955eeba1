"""MqttUplink against a real Mosquitto (plain listener): round trip, GPS, heartbeat, status,
commands, outages, restarts and crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.adapters.mqtt import MqttUplink, build_mqtt_sink, read_cpu_temp_c
from edge.adapters.signing import load_public_key, verify_alert, verify_evidence
from edge.app.config_uplink import MqttSinkConfig
from edge.app.local_broker import LocalBroker
from edge.core import messages as m
from edge.core.ports import Detection
from tests.uplink.conftest import (
    UNIT_A,
    FakeFix,
    SettableGps,
    Subscriber,
    connect_client,
    fix_dict,
    subscribe,
)
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("need_mosquitto")]

REPO = Path(__file__).resolve().parents[2]


def sink_config(broker: LocalBroker, unit: str = UNIT_A, **over: Any) -> MqttSinkConfig:
    settings: dict[str, Any] = {**broker.sink_settings(unit), "signing_key_autogenerate": True,
                                "reconnect_min_s": 0.2, "reconnect_max_s": 1.0,
                                "heartbeat_interval_s": 3600, "keepalive_s": 5}
    settings.update(over)
    return MqttSinkConfig(**settings)


@pytest.fixture()
def uplinks(tmp_path: Path) -> Iterator[Callable[..., MqttUplink]]:
    made: list[MqttUplink] = []

    def make(broker: LocalBroker, unit: str = UNIT_A, *, gps: object | None = None,
             stats: Callable[[], dict[str, Any]] | None = None,
             on_command: Callable[[str, dict[str, Any]], None] | None = None,
             **over: Any) -> MqttUplink:
        up = build_mqtt_sink(sink_config(broker, unit, **over), unit_id=unit,
                             data_dir=tmp_path / unit, gps=gps, stats=stats,
                             on_command=on_command)
        made.append(up)
        return up

    yield make
    for up in made:
        up.close(drain_timeout_s=0)


def public_key(tmp_path: Path, unit: str = UNIT_A) -> Any:
    return load_public_key(tmp_path / unit / "keys" / f"{unit}.pub")


def seqs_in_order(sub: Subscriber) -> list[int]:
    """Alert sequence numbers as received, after de-duplication on (unit, seq)."""
    seen: set[tuple[str, int]] = set()
    out: list[int] = []
    for a in sub.alerts():
        if (a["unit"], a["seq"]) not in seen:
            seen.add((a["unit"], a["seq"]))
            out.append(a["seq"])
    return out


def test_round_trip_alert_and_evidence_signed_and_verified(
        broker: LocalBroker, tmp_path: Path, uplinks: Callable[..., MqttUplink],
        make_detection: Callable[..., Detection]) -> None:
    sub = subscribe(broker, certs_for=None)
    up = uplinks(broker)
    assert up.wait_connected(10)
    dets = [make_detection(roi_id=f"lane{i}") for i in range(3)]
    for d in dets:
        up.send(d)
    assert sub.wait(lambda ms: len([r for r in ms if "/evidence/" in r.topic]) >= 3
                    and len([r for r in ms if r.topic.endswith("/alert")]) >= 3)
    pub = public_key(tmp_path)
    alerts = sub.alerts()
    evidence = sub.evidence()
    s0 = alerts[0]["seq"]
    assert [a["alert_id"] for a in alerts] == [f"unit-a-{s0 + i}" for i in range(3)]
    for a, d in zip(alerts, dets, strict=True):
        assert m.schema_errors(a, m.ALERT_SCHEMA) == []
        assert verify_alert(a, pub)
        assert a["roi"] == d.roi_id and a["fix"] is None and a["time_source"] == "system"
        assert evidence[a["alert_id"]] == Path(d.evidence.frame_path).read_bytes()
        assert verify_evidence(a, evidence[a["alert_id"]])
    status = [json.loads(r.payload) for r in sub.on("/unit-a/status")]
    assert status and status[0]["state"] == "online"
    assert m.schema_errors(status[0], m.STATUS_SCHEMA) == []
    assert up.wait_drained(5) and up.stats()["inflight"] == 0
    sub.close()


def test_online_status_is_retained_and_offline_on_close(
        broker: LocalBroker, uplinks: Callable[..., MqttUplink]) -> None:
    up = uplinks(broker)
    assert up.wait_connected(10)
    late = subscribe(broker, certs_for=None, topics=("phonewatch/+/status",))
    assert late.wait(lambda ms: any(r.retain for r in ms))
    assert json.loads(late.messages[0].payload)["state"] == "online"
    up.close()
    assert late.wait(lambda ms: any(json.loads(r.payload)["state"] == "offline" for r in ms))
    offline = json.loads(late.messages[-1].payload)
    assert offline["reason"] == "stopped" and m.schema_errors(offline, m.STATUS_SCHEMA) == []
    late.close()


def test_alert_reads_the_gps_fix_when_built_never_waits(
        broker: LocalBroker, uplinks: Callable[..., MqttUplink],
        make_detection: Callable[..., Detection]) -> None:
    gps = SettableGps()
    sub = subscribe(broker, certs_for=None, topics=("phonewatch/+/alert",))
    up = uplinks(broker, gps=gps)
    gps.fix, gps.state = FakeFix(fix_dict(age_s=0.2)), "3d"
    up.send(make_detection())
    gps.fix, gps.state = FakeFix(fix_dict(age_s=45.0)), "stale"
    up.send(make_detection())
    gps.fix, gps.state = None, "no-fix"
    up.send(make_detection())

    def broken() -> None:
        raise RuntimeError("serial port gone")

    gps.latest = broken  # type: ignore[method-assign]
    up.send(make_detection())
    assert sub.wait_alerts(4)
    a1, a2, a3, a4 = sub.alerts()
    assert a1["time_source"] == "gps" and a1["fix"]["lat"] == 51.5007 and a1["gps_state"] == "3d"
    assert a2["time_source"] == "system" and a2["fix"]["age_s"] == 45.0
    assert a3["fix"] is None and a3["gps_state"] == "no-fix"
    assert a4["fix"] is None and a4["gps_state"] == "error"
    sub.close()


def test_heartbeat_carries_pipeline_outbox_gps_and_temperature(
        broker: LocalBroker, uplinks: Callable[..., MqttUplink]) -> None:
    gps = SettableGps()
    gps.state, gps.fix = "3d", FakeFix(fix_dict(age_s=0.5))
    calls = {"n": 0}

    def stats() -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("stats broke once")
        return {"fps": 29.5, "dropped_frames": 12, "invoke_ms_p50": 7.5, "invoke_ms_p99": 11.0,
                "frames": 900}

    sub = subscribe(broker, certs_for=None, topics=("phonewatch/+/heartbeat",))
    uplinks(broker, gps=gps, stats=stats, heartbeat_interval_s=1)
    assert sub.wait(lambda ms: len(ms) >= 3, timeout_s=10)
    beats = [json.loads(r.payload) for r in sub.messages]
    for hb in beats:
        assert m.schema_errors(hb, m.HEARTBEAT_SCHEMA) == []
        assert hb["outbox_depth"] == 0 and hb["gps_state"] == "3d"
        assert hb["fix"]["lat"] == 51.5007 and hb["fix"]["age_s"] == 0.5
        assert hb["cpu_temp_c"] == pytest.approx(read_cpu_temp_c(), abs=15) \
            if read_cpu_temp_c() is not None else hb["cpu_temp_c"] is None
    assert beats[0]["fps"] == 29.5 and beats[0]["dropped_frames"] == 12
    assert beats[0]["pipeline"] == {"frames": 900}
    assert beats[1]["fps"] is None  # stats() failed: heartbeat still sent
    sub.close()


def test_cpu_temperature_from_sysfs(tmp_path: Path) -> None:
    p = tmp_path / "temp"
    p.write_text("48312\n")
    assert read_cpu_temp_c(p) == 48.3
    assert read_cpu_temp_c(tmp_path / "absent") is None
    p.write_text("garbage")
    assert read_cpu_temp_c(p) is None


def test_commands_validated_bad_ones_rejected_unit_keeps_running(
        broker: LocalBroker, uplinks: Callable[..., MqttUplink],
        make_detection: Callable[..., Detection]) -> None:
    got: list[tuple[str, dict[str, Any]]] = []
    done = threading.Event()

    def on_command(name: str, body: dict[str, Any]) -> None:
        got.append((name, body))
        if name == "reload":
            done.set()
        if name == "snapshot":
            raise RuntimeError("handler bug")  # must not take the uplink down

    cr = connect_client(broker, "controlroom-cmd")
    cr.loop_start()
    base = "phonewatch/unit-a/cmd/"
    # a retained command would replay on every reconnect: refused when it arrives as retained
    cr.publish(base + "mute", b'{"duration_s": 5}', qos=1, retain=True).wait_for_publish(5)
    up = uplinks(broker, on_command=on_command, command_max_bytes=1024)
    assert up.wait_connected(10)
    # The broker sends the retained command once it has the unit's subscription: from then on
    # every command below is routed to the unit (before it, a first connect can miss them).
    wait_until(lambda: up.stats()["commands_rejected"] >= 1, 10)
    assert up.stats()["commands_rejected"] == 1
    bad = [("reboot", b"{}"), ("mute", b"{}"), ("mute", b'{"duration_s": "x"}'),
           ("mute", b"not json"), ("mute", b'{"duration_s": 1e999}'),
           ("snapshot", b'{"reason": "' + b"A" * 5000 + b'"}'), ("snapshot", b"\x00" * 2000),
           ("mute", b'{"duration_s": 5, "shell": "rm -rf /"}')]
    for name, payload in bad:
        cr.publish(base + name, payload, qos=1).wait_for_publish(5)
    for name, payload in [("snapshot", b""), ("mute", b'{"duration_s": 60}'), ("reload", b"{}")]:
        cr.publish(base + name, payload, qos=1).wait_for_publish(5)
    assert done.wait(10)
    assert got == [("snapshot", {}), ("mute", {"duration_s": 60}), ("reload", {})]
    st = up.stats()
    assert st["commands_rejected"] == len(bad) + 1 and st["commands_accepted"] == 3
    assert up.is_connected
    sub = subscribe(broker, certs_for=None, topics=("phonewatch/+/alert",))
    up.send(make_detection())
    assert sub.wait_alerts(1)
    cr.loop_stop()
    cr.disconnect()
    sub.close()


def test_missing_or_altered_evidence_still_sends_the_alert(
        broker: LocalBroker, uplinks: Callable[..., MqttUplink],
        make_detection: Callable[..., Detection]) -> None:
    sub = subscribe(broker, certs_for=None)
    up = uplinks(broker)
    gone, altered, fine = make_detection(), make_detection(), make_detection()
    Path(gone.evidence.frame_path).unlink()
    Path(altered.evidence.frame_path).write_bytes(b"\xff\xd8 not the same image")
    for d in (gone, altered, fine):
        up.send(d)
    assert sub.wait_alerts(3)
    assert up.wait_drained(5)
    third = sub.alerts()[2]["alert_id"]  # the one whose evidence is intact
    # the broker acknowledges before it forwards: wait for the one JPEG that should come
    assert sub.wait(lambda ms: any(r.topic.endswith(f"/evidence/{third}") for r in ms))
    assert list(sub.evidence()) == [third]
    assert up.stats()["evidence_missing"] == 2
    sub.close()


def test_username_password_and_connected_only_on_success(
        tmp_path: Path, uplinks: Callable[..., MqttUplink],
        make_detection: Callable[..., Detection]) -> None:
    with LocalBroker(passwords={UNIT_A: "right", "unit-b": "other"}) as b:
        bad = uplinks(b, "unit-b", username="unit-b", password="wrong")
        good = uplinks(b, UNIT_A, username=UNIT_A, password="right")
        assert good.wait_connected(10)
        bad.send(make_detection())
        time.sleep(1.5)  # several refused CONNACKs
        st = bad.stats()
        assert not bad.is_connected and st["connects"] == 0 and st["connect_failures"] >= 1
        assert st["outbox_depth"] == 1  # kept, not lost


def test_unit_restart_resends_what_was_never_acknowledged(
        tmp_path: Path, uplinks: Callable[..., MqttUplink],
        make_detection: Callable[..., Detection]) -> None:
    b = LocalBroker()  # not started yet: the unit raises alerts with no broker at all
    try:
        first = uplinks(b)
        for _ in range(5):
            first.send(make_detection())
        assert not first.is_connected
        first.close()
        b.start()
        sub = subscribe(b, certs_for=None, topics=("phonewatch/+/alert",))
        second = uplinks(b)
        second.send(make_detection())
        assert sub.wait_alerts(6)
        got = seqs_in_order(sub)
        assert got == list(range(got[0], got[0] + 6))
        assert second.wait_drained(5)
        sub.close()
    finally:
        b.close()


def test_broker_restart_with_persistence_loses_nothing(
        broker: LocalBroker, tmp_path: Path, uplinks: Callable[..., MqttUplink],
        make_detection: Callable[..., Detection]) -> None:
    # the control room has a persistent session and is offline while alerts arrive
    cr = subscribe(broker, certs_for=None, client_id="cr-persistent", persistent=True,
                   topics=("phonewatch/+/alert",))
    cr.close()
    up = uplinks(broker)
    for _ in range(10):
        up.send(make_detection())
    assert up.wait_drained(10)  # the broker holds them for the control room
    broker.restart()  # SIGTERM: mosquitto saves its persistence file
    for _ in range(5):
        up.send(make_detection())  # raised across the restart
    cr2 = subscribe(broker, certs_for=None, client_id="cr-persistent", persistent=True,
                    topics=("phonewatch/+/alert",))
    assert cr2.wait_alerts(15, timeout_s=20), seqs_in_order(cr2)
    got = seqs_in_order(cr2)
    assert got == list(range(got[0], got[0] + 15))
    pub = public_key(tmp_path)
    assert all(verify_alert(a, pub) for a in cr2.alerts())
    cr2.close()


@pytest.mark.slow
def test_broker_down_60_s_while_100_alerts_are_raised(
        broker: LocalBroker, tmp_path: Path, uplinks: Callable[..., MqttUplink],
        make_detection: Callable[..., Detection]) -> None:
    cr = subscribe(broker, certs_for=None, client_id="cr-outage", persistent=True,
                   topics=("phonewatch/+/alert", "phonewatch/+/evidence/+"))
    up = uplinks(broker, reconnect_max_s=2.0)
    assert up.wait_connected(10)
    up.send(make_detection())
    assert cr.wait_alerts(1)
    broker.stop()
    t_down = time.monotonic()
    for _ in range(100):
        up.send(make_detection())
        time.sleep(0.45)  # raised across the outage
    assert up.outbox.depth() == 100
    time.sleep(max(0.0, 60.0 - (time.monotonic() - t_down)))
    broker.start()
    assert cr.wait_alerts(101, timeout_s=60), f"got {len(seqs_in_order(cr))}"
    got = seqs_in_order(cr)
    assert got == list(range(got[0], got[0] + 101))  # all, in order, once after de-dup
    assert up.wait_drained(20)
    assert cr.wait(lambda ms: len({r.topic for r in ms if "/evidence/" in r.topic}) == 101, 20)
    pub = public_key(tmp_path)
    assert all(verify_alert(a, pub) for a in cr.alerts())
    cr.close()


CHILD = textwrap.dedent("""
    import hashlib, json, sys, time
    from pathlib import Path
    from edge.adapters.mqtt import build_mqtt_sink
    from edge.app.config_uplink import MqttSinkConfig
    from edge.core.ports import Detection, EvidenceRecord

    cfg = MqttSinkConfig(**json.loads(sys.argv[1]))
    data = Path(sys.argv[2])
    mode = sys.argv[3]
    up = build_mqtt_sink(cfg, unit_id="unit-a", data_dir=data, gps=None, stats=None,
                         on_command=None)
    if mode == "drain":
        up.wait_connected(10)
        ok = up.wait_drained(30)
        up.close()
        sys.exit(0 if ok else 3)
    up.wait_connected(10)
    for i in range(100000):
        jpeg = b"\\xff\\xd8" + (b"%d " % i) * 3000
        p = data / f"ev{i}.jpg"
        p.write_bytes(jpeg)
        h = hashlib.sha256(jpeg).hexdigest()
        ev = EvidenceRecord(str(i), str(p), h, len(jpeg), str(p), h, len(jpeg))
        up.send(Detection(str(i), "lane1", 0.9, 5, 8, i, time.time(), time.monotonic(),
                          "m", "1", "0" * 64, 0.7, ev))
        print(i + 1, flush=True)
        time.sleep(0.002)
""")


def test_kill_9_mid_publish_then_restart_loses_nothing(
        broker: LocalBroker, tmp_path: Path) -> None:
    cr = subscribe(broker, certs_for=None, client_id="cr-kill", persistent=True,
                   topics=("phonewatch/+/alert", "phonewatch/+/evidence/+",
                           "phonewatch/+/status"))
    data = tmp_path / "unit"
    data.mkdir()
    cfg = {**sink_config(broker).model_dump(mode="json", exclude_none=True)}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg), str(data), "raise"],
                             stdout=subprocess.PIPE, cwd=REPO, env=env)
    assert child.stdout is not None
    assert cr.wait_alerts(30, timeout_s=30)  # publishing is well under way
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    committed = [int(x) for x in child.stdout.read().split()]
    assert committed, "child reported no committed alert"
    # the broker sees the socket close and publishes the Last Will
    assert cr.wait(lambda ms: any(r.topic.endswith("/status")
                                  and json.loads(r.payload)["state"] == "offline"
                                  for r in ms), timeout_s=10)
    restarted = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg), str(data),
                                "drain"], cwd=REPO, env=env, timeout=60, check=False)
    assert restarted.returncode == 0
    top = max(committed)  # the child prints how many alerts the outbox had committed
    assert cr.wait_alerts(top, timeout_s=20)
    got = seqs_in_order(cr)
    # every committed alert arrived, in order, and nothing beyond what the outbox numbered
    assert got[:top] == list(range(got[0], got[0] + top))
    assert got == list(range(got[0], got[0] + len(got)))
    assert cr.wait(lambda ms: len({r.topic for r in ms if "/evidence/" in r.topic}) >= top, 20)
    pub = load_public_key(data / "keys" / "unit-a.pub")
    assert all(verify_alert(a, pub) for a in cr.alerts())
    cr.close()

