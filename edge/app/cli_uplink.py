"""``phonewatch keys ...`` and ``phonewatch uplink ...``: unit keys and the alert uplink.

* ``keys generate --unit ID [--out DIR]`` makes the unit's Ed25519 pair (``ID.key``, ``ID.pub``);
* ``keys verify --pub FILE ALERT.json`` checks a received alert's signature;
* ``uplink broker [--tls --unit ID ...]`` runs a local Mosquitto (as the tests do) until Ctrl-C;
* ``uplink demo`` starts a local Mosquitto, sends signed alerts with evidence through the
  outbox, receives them as the control room would, verifies them and prints a summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edge.core.errors import MessageError, SignatureError

log = logging.getLogger(__name__)


def add_parsers(sub: Any) -> None:
    keys = sub.add_parser("keys", help="unit signing keys (Ed25519)")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    gen = ksub.add_parser("generate", help="make a unit's key pair: ID.key (secret) and ID.pub")
    gen.add_argument("--unit", required=True, help="unit id (letters, digits, '-', '_')")
    gen.add_argument("--out", type=Path, default=Path("var/keys"),
                     help="folder for the key files (default: var/keys)")
    gen.set_defaults(func=_cmd_keys_generate)
    ver = ksub.add_parser("verify", help="check the signature of a received alert (JSON file)")
    ver.add_argument("--pub", type=Path, required=True, help="the unit's public key (ID.pub)")
    ver.add_argument("alert", type=Path, help="alert JSON as received")
    ver.add_argument("--evidence", type=Path, help="evidence JPEG to check against the alert")
    ver.set_defaults(func=_cmd_keys_verify)

    up = sub.add_parser("uplink", help="alert uplink tools (local broker, demo)")
    usub = up.add_subparsers(dest="uplink_command", metavar="ACTION", required=True)
    br = usub.add_parser("broker", help="run a local Mosquitto until Ctrl-C")
    br.add_argument("--tls", action="store_true",
                    help="production config: TLS, client certificates, per-unit ACL")
    br.add_argument("--unit", action="append", default=[],
                    help="make a client certificate for this unit (repeatable)")
    br.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    br.set_defaults(func=_cmd_broker)
    demo = usub.add_parser("demo", help="carry signed alerts through a local Mosquitto")
    demo.add_argument("--alerts", type=int, default=5, help="how many alerts (default 5)")
    demo.add_argument("--tls", action="store_true", help="use TLS + client certificates + ACL")
    demo.set_defaults(func=_cmd_demo)


def _cmd_keys_generate(args: argparse.Namespace) -> int:
    from edge.adapters.signing import write_key_pair
    from edge.core.messages import Topics

    Topics("phonewatch", args.unit)  # validates the unit id
    key, pub, kid = write_key_pair(args.unit, args.out)
    print(f"unit {args.unit}: key id {kid}")
    print(f"  secret key  {key}  (keep on the unit; sink.signing_key)")
    print(f"  public key  {pub}  (give to the control room)")
    return 0


def _cmd_keys_verify(args: argparse.Namespace) -> int:
    from edge.adapters.signing import load_public_key, verify_alert, verify_evidence
    from edge.core.messages import ALERT_SCHEMA, decode, validate

    pub = load_public_key(args.pub)
    try:
        alert = decode(args.alert.read_bytes())
    except OSError as e:
        raise MessageError(f"cannot read {args.alert}: {e.strerror}") from None
    validate(alert, ALERT_SCHEMA)
    if not verify_alert(alert, pub):
        raise SignatureError(f"{args.alert}: signature does NOT verify with {args.pub}")
    print(f"{alert['alert_id']}: signature OK")
    if args.evidence is not None:
        if not verify_evidence(alert, args.evidence.read_bytes()):
            raise SignatureError(f"{args.evidence}: is not the evidence this alert names")
        print(f"{args.evidence}: evidence matches (SHA-256 and size)")
    return 0


def _cmd_broker(args: argparse.Namespace) -> int:
    from edge.app.local_broker import LocalBroker

    with LocalBroker(tls=args.tls, units=args.unit, port=args.port) as broker:
        print(f"mosquitto on {broker.host}:{broker.port} ({'TLS+ACL' if args.tls else 'plain'})")
        print(f"  config {broker.conf_path}")
        if args.tls:
            print(f"  certificates in {broker.certs_dir} (ca.crt, <unit>.crt/.key, controlroom)")
        print("Ctrl-C stops it.")
        try:
            while broker.is_running:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """A self-contained round trip: unit -> outbox -> Mosquitto -> control-room subscriber."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edge.adapters.mqtt import build_mqtt_sink
    from edge.adapters.signing import load_public_key, verify_alert, verify_evidence
    from edge.app.config_uplink import MqttSinkConfig
    from edge.app.local_broker import LocalBroker
    from edge.core.ports import Detection, EvidenceRecord

    unit = "demo-unit"
    n = max(1, min(args.alerts, 10000))
    with tempfile.TemporaryDirectory(prefix="pw-uplink-demo-") as tmp, \
            LocalBroker(tls=args.tls, units=[unit]) as broker:
        data = Path(tmp)
        alerts: dict[str, dict[str, Any]] = {}
        evidence: dict[str, bytes] = {}
        got_all = threading.Event()
        t_sent: dict[str, float] = {}
        latency_ms: list[float] = []

        def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            if msg.topic.endswith("/alert"):
                a = json.loads(msg.payload)
                alerts[a["alert_id"]] = a
                if a["alert_id"] in t_sent:
                    latency_ms.append((time.perf_counter() - t_sent[a["alert_id"]]) * 1e3)
            elif "/evidence/" in msg.topic:
                evidence[msg.topic.rsplit("/", 1)[1]] = msg.payload
            if len(alerts) >= n and len(evidence) >= n:
                got_all.set()

        sub = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                          client_id="controlroom-demo", protocol=mqtt.MQTTv5)
        if args.tls:
            c = broker.client_certs("controlroom")
            sub.tls_set(str(c["ca_file"]), str(c["cert_file"]), str(c["key_file"]))
        sub.on_message = on_message
        sub.connect("localhost" if args.tls else broker.host, broker.port)
        sub.subscribe(f"{broker.root}/+/alert", qos=1)
        sub.subscribe(f"{broker.root}/+/evidence/+", qos=1)
        sub.loop_start()

        cfg = MqttSinkConfig(**broker.sink_settings(unit), signing_key_autogenerate=True)
        uplink = build_mqtt_sink(cfg, unit_id=unit, data_dir=data, gps=None, stats=None,
                                 on_command=None)
        try:
            uplink.wait_connected(10.0)
            for i in range(n):
                jpeg = b"\xff\xd8\xff\xe0" + f"demo evidence {i}".encode() * 200 + b"\xff\xd9"
                path = data / f"ev{i}.jpg"
                path.write_bytes(jpeg)
                sha = hashlib.sha256(jpeg).hexdigest()
                ev = EvidenceRecord(f"local-{i}", str(path), sha, len(jpeg), str(path), sha,
                                    len(jpeg))
                det = Detection(f"local-{i}", "lane1", 0.91, 6, 8, 100 * i, time.time(),
                                time.monotonic(), "demo-model", "0", "0" * 64, 0.7, ev)
                seq = uplink.outbox.next_seq
                t_sent[f"{unit}-{seq}"] = time.perf_counter()
                uplink.send(det)
            ok = got_all.wait(30.0)
        finally:
            uplink.close()
            sub.loop_stop()
            sub.disconnect()
        pub = load_public_key(data / "keys" / f"{unit}.pub")
        verified = sum(verify_alert(a, pub) for a in alerts.values())
        ev_ok = sum(verify_evidence(a, evidence.get(aid, b"")) for aid, a in alerts.items())
        lat = sorted(latency_ms)
        p50 = lat[len(lat) // 2] if lat else float("nan")
        print(f"uplink demo via mosquitto on {broker.host}:{broker.port} "
              f"({'TLS+ACL' if args.tls else 'plain'})")
        print(f"  alerts sent {n}, received {len(alerts)}, signatures verified {verified}, "
              f"evidence matched {ev_ok}; send->receive p50 {p50:.1f} ms")
        print(f"  watch a real broker: mosquitto_sub -h HOST -p {broker.port} -t "
              f"'{broker.root}/+/alert' -v")
        return 0 if ok and verified == n and ev_ok == n else 1
