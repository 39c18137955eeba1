"""``phonewatch keys ...`` and ``phonewatch uplink ...``: unit keys and the alert uplink.

* ``keys generate --unit ID [--out DIR]`` makes the unit's Ed25519 pair (``ID.sign.key``,
  ``ID.sign.pub``), named so it can share a folder with the unit's TLS pair from
  ``deploy/certs/make-certs.sh client DIR ID`` (``ID.key``, ``ID.crt``);
* ``keys verify --pub FILE ALERT.json`` checks a received alert's signature;
* ``uplink broker [--tls --unit ID ...]`` runs a local Mosquitto (as the tests do) until Ctrl-C;
* ``uplink demo`` starts a local Mosquitto, sends signed alerts with evidence through the
  outbox, receives them as the control room would, verifies them and prints a summary.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from edge.core.errors import MessageError, SignatureError

log = logging.getLogger(__name__)


def add_parsers(sub: Any) -> None:
    keys = sub.add_parser("keys", help="unit signing keys (Ed25519)")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    gen = ksub.add_parser(
        "generate", help="make a unit's signing pair: ID.sign.key (secret) and ID.sign.pub"
    )
    gen.add_argument("--unit", required=True, help="unit id (letters, digits, '-', '_')")
    gen.add_argument(
        "--out",
        type=Path,
        default=Path("var/keys"),
        help="folder for the key files (default: var/keys); may hold the "
        "unit's TLS ID.key and ID.crt already",
    )
    gen.set_defaults(func=_cmd_keys_generate)
    ver = ksub.add_parser("verify", help="check the signature of a received alert (JSON file)")
    ver.add_argument("--pub", type=Path, required=True, help="the unit's public key (ID.sign.pub)")
    ver.add_argument("alert", type=Path, help="alert JSON as received")
    ver.add_argument("--evidence", type=Path, help="evidence JPEG to check against the alert")
    ver.set_defaults(func=_cmd_keys_verify)

    up = sub.add_parser("uplink", help="alert uplink tools (local broker, demo)")
    usub = up.add_subparsers(dest="uplink_command", metavar="ACTION", required=True)
    br = usub.add_parser("broker", help="run a local Mosquitto until Ctrl-C")
    br.add_argument(
        "--tls",
        action="store_true",
        help="production config: TLS, client certificates, per-unit ACL",
    )
    br.add_argument(
        "--unit",
        action="append",
        default=[],
        help="make a client certificate for this unit (repeatable)",
    )
    br.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    br.set_defaults(func=_cmd_broker)
    demo = usub.add_parser("demo", help="carry signed alerts through a local Mosquitto")
    demo.add_argument("--alerts", type=int, default=5, help="how many alerts (default 5)")
    demo.add_argument("--tls", action="store_true", help="use TLS + client certificates + ACL")
    demo.set_defaults(func=_cmd_demo)


def _cmd_keys_generate(args: argparse.Namespace) -> int:
    from edge.common.signing import public_key_name, signing_key_name, write_key_pair
    from edge.core.messages import Topics

    Topics("phonewatch", args.unit)  # validates the unit id
    out: Path = args.out
    above = out
    while not above.exists() and above != above.parent:
        above = above.parent
    if above.exists() and not above.is_dir():
        raise SignatureError(
            f"--out {out}: {above} is a file, not a folder; give the folder "
            f"for {signing_key_name(args.unit)} and {public_key_name(args.unit)}"
        )
    key, pub, kid = write_key_pair(args.unit, out)
    print(f"unit {args.unit}: key id {kid}")
    print(f"  secret key  {key}  (keep on the unit; sink.signing_key)")
    print(f"  public key  {pub}  (give to the control room)")
    return 0


def _cmd_keys_verify(args: argparse.Namespace) -> int:
    from edge.common.signing import load_public_key, verify_alert, verify_evidence
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
    from edge.adapters.mqtt_config import MqttSinkConfig
    from edge.app.compose import build_uplink
    from edge.app.local_broker import AlertWatcher, LocalBroker
    from edge.common.signing import public_key_name
    from edge.core.ports import Detection, EvidenceRecord

    unit = "demo-unit"
    n = max(1, min(args.alerts, 10000))
    with (
        tempfile.TemporaryDirectory(prefix="pw-uplink-demo-") as tmp,
        LocalBroker(tls=args.tls, units=[unit]) as broker,
        AlertWatcher(broker) as watcher,
    ):
        data = Path(tmp)
        cfg = MqttSinkConfig(**broker.sink_settings(unit), signing_key_autogenerate=True)
        uplink = build_uplink(cfg, unit_id=unit, data_dir=data, on_command=None)
        t0 = time.perf_counter()
        try:
            uplink.wait_connected(10.0)
            for i in range(n):
                jpeg = b"\xff\xd8\xff\xe0" + f"demo evidence {i}".encode() * 200 + b"\xff\xd9"
                path = data / f"ev{i}.jpg"
                path.write_bytes(jpeg)
                sha = hashlib.sha256(jpeg).hexdigest()
                ev = EvidenceRecord(
                    f"local-{i}",
                    str(path),
                    sha,
                    len(jpeg),
                    str(path),
                    sha,
                    len(jpeg),
                    frame_jpeg=jpeg,
                )
                uplink.send(
                    Detection(
                        f"local-{i}",
                        "lane1",
                        0.91,
                        6,
                        8,
                        100 * i,
                        time.time(),
                        time.monotonic(),
                        "demo-model",
                        "0",
                        "0" * 64,
                        0.7,
                        ev,
                    )
                )
            watcher.wait_for(n, 30.0)
            elapsed_s = time.perf_counter() - t0
        finally:
            uplink.close()
        counts = watcher.check(data / "keys" / public_key_name(unit))
        print(f"uplink demo: {n} alert(s) from {unit} in {elapsed_s:.2f} s")
        print("  " + watcher.summary(pub_key=data / "keys" / public_key_name(unit)))
        print(
            f"  watch a real broker: mosquitto_sub -h HOST -p {broker.port} -t "
            f"'{broker.root}/+/alert' -v"
        )
        ok = counts["received"] == counts["verified"] == counts["evidence_ok"] == n
        return 0 if ok else 1
