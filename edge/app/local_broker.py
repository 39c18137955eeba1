"""A real Mosquitto on a free local port, for the tests, the bench and ``make demo``.

``LocalBroker()`` writes a config into a temp folder and runs ``mosquitto -c`` on 127.0.0.1:

* plain: anonymous, no TLS, persistence on;
* ``tls=True``: the production config ``deploy/mosquitto/phonewatch.conf`` and ACL
  ``deploy/mosquitto/phonewatch.acl`` with only paths, port and logging rewritten, and
  certificates made by ``deploy/certs/make-certs.sh`` (a CA, the broker, each unit in ``units``,
  and ``controlroom``).

It waits until the port accepts connections and stops the broker on exit. ``stop()`` /
``start()`` keep port and persistence, so a test can take the broker away and bring it back.
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edge.core.errors import BrokerError, PhonewatchError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy"
PROD_CONF = DEPLOY_DIR / "mosquitto" / "phonewatch.conf"
PROD_ACL = DEPLOY_DIR / "mosquitto" / "phonewatch.acl"
CERT_SCRIPT = DEPLOY_DIR / "certs" / "make-certs.sh"
CONTROLROOM = "controlroom"


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary (Debian puts it in /usr/sbin, often not on PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for cand in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(cand, os.X_OK):
            return cand
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalBroker:
    host = "127.0.0.1"

    def __init__(
        self,
        *,
        tls: bool = False,
        units: Sequence[str] = (),
        root: str = "phonewatch",
        port: int | None = None,
        workdir: Path | None = None,
        passwords: Mapping[str, str] | None = None,
        start_timeout_s: float = 10.0,
        max_queued_messages: int = 100000,
    ) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise BrokerError(
                "mosquitto is not installed (Debian package 'mosquitto'; "
                "'make bootstrap' installs it)"
            )
        self.binary = binary
        self.tls = tls
        self.units = list(units)
        self.root = root
        self.passwords = dict(passwords or {})
        if self.passwords and tls:
            raise BrokerError("passwords are for the plain broker; TLS uses client certificates")
        self.port = port or free_port(self.host)
        self.start_timeout_s = start_timeout_s
        self.max_queued_messages = max_queued_messages
        """Per-session queue of the plain broker (deploy/mosquitto keeps 10,000); tests make it
        small to overflow it."""
        self._own_dir = workdir is None
        self.dir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="pw-mosquitto-"))
        self.certs_dir = self.dir / "certs"
        self.conf_path = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._prepared = False

    # ------------------------------------------------------------------ config

    def _prepare(self) -> None:
        if self._prepared:
            return
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        if self.tls:
            self._make_certs()
            acl = PROD_ACL.read_text().replace("phonewatch/", f"{self.root}/")
            (self.dir / "phonewatch.acl").write_text(acl)
            conf = self._rewrite_prod_conf(PROD_CONF.read_text())
        else:
            conf = "\n".join(
                [
                    "per_listener_settings false",
                    *self._password_lines(),
                    "persistence true",
                    f"persistence_location {self.dir / 'data'}/",
                    "autosave_interval 30",
                    f"max_queued_messages {self.max_queued_messages}",
                    f"listener {self.port} {self.host}",
                ]
            )
        conf += "\n" + "\n".join(
            [
                f"log_dest file {self.log_path}",
                "log_type error",
                "log_type warning",
                "log_type notice",
                "log_type information",
                "connection_messages true",
                f"user {getpass.getuser()}",
                "",
            ]
        )
        self.conf_path.write_text(conf)
        self._prepared = True

    def _password_lines(self) -> list[str]:
        if not self.passwords:
            return ["allow_anonymous true"]
        pw_file = self.dir / "passwords"
        pw_file.write_text("".join(f"{u}:{p}\n" for u, p in self.passwords.items()))
        pw_file.chmod(0o600)
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        res = subprocess.run(
            [tool, "-U", str(pw_file)], capture_output=True, text=True, check=False
        )
        if res.returncode != 0:
            raise BrokerError(f"mosquitto_passwd failed: {res.stderr.strip()}")
        return ["allow_anonymous false", f"password_file {pw_file}"]

    def _rewrite_prod_conf(self, text: str) -> str:
        out = []
        for line in text.splitlines():
            key = line.split(" ", 1)[0]
            if key in ("log_dest", "log_type", "connection_messages"):
                continue
            line = line.replace("/etc/mosquitto/certs/", f"{self.certs_dir}/")
            line = line.replace("/etc/mosquitto/phonewatch.acl", str(self.dir / "phonewatch.acl"))
            line = line.replace("/var/lib/mosquitto/", f"{self.dir / 'data'}/")
            if key == "listener":
                line = f"listener {self.port} {self.host}"
            out.append(line)
        return "\n".join(out) + "\n"

    def _make_certs(self) -> None:
        if not CERT_SCRIPT.exists():
            raise BrokerError(f"certificate script not found: {CERT_SCRIPT}")
        d = str(self.certs_dir)
        steps = [["ca", d], ["server", d, "localhost", self.host]]
        steps += [["client", d, name] for name in [*self.units, CONTROLROOM]]
        for step in steps:
            res = subprocess.run(
                ["bash", str(CERT_SCRIPT), *step], capture_output=True, text=True, check=False
            )
            if res.returncode != 0:
                raise BrokerError(f"make-certs.sh {step[0]} failed: {res.stderr.strip()}")

    def client_certs(self, name: str) -> dict[str, Path]:
        """``ca_file``, ``cert_file``, ``key_file`` for a unit (or ``controlroom``)."""
        if not self.tls:
            raise BrokerError("this broker has no TLS")
        cert = self.certs_dir / f"{name}.crt"
        if not cert.exists():
            raise BrokerError(f"no certificate for {name!r}; pass it in units=")
        return {
            "ca_file": self.certs_dir / "ca.crt",
            "cert_file": cert,
            "key_file": self.certs_dir / f"{name}.key",
        }

    def sink_settings(self, name: str) -> dict[str, Any]:
        """Keyword arguments for :class:`MqttSinkConfig` that reach this broker as ``name``."""
        out: dict[str, Any] = {
            "type": "mqtt",
            "host": "localhost" if self.tls else self.host,
            "port": self.port,
            "topic_root": self.root,
        }
        if self.tls:
            out.update(self.client_certs(name))
        return out

    # ------------------------------------------------------------------ process

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> LocalBroker:
        if self.is_running:
            return self
        self._prepare()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.host, self.port))
            except OSError as e:
                raise BrokerError(
                    f"cannot start mosquitto: port {self.port} is in use ({e.strerror})"
                ) from None
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                raise BrokerError(
                    f"mosquitto exited with {self._proc.returncode}: "
                    f"{err.strip()} {self.log_tail()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    if self._proc.poll() is not None:
                        continue  # someone else answered; ours died: reported above
                    log.info(
                        "mosquitto up on %s:%d (%s)",
                        self.host,
                        self.port,
                        "TLS+ACL" if self.tls else "plain",
                    )
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise BrokerError(
            f"mosquitto did not accept connections on port {self.port} within "
            f"{self.start_timeout_s} s. {self.log_tail()}"
        )

    def stop(self, *, kill: bool = False, timeout_s: float = 10.0) -> None:
        """Stop the broker: SIGTERM (it saves its persistence file) or SIGKILL."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        if proc.stderr:
            proc.stderr.close()

    def restart(self) -> LocalBroker:
        self.stop()
        return self.start()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class AlertWatcher:
    """A control-room stand-in for demos: subscribes to every unit's alerts and evidence on a
    :class:`LocalBroker`, then checks each alert against the schema, the unit's public key
    (read when asked, so a key generated by the unit at start-up is found) and its evidence.

    >>> with LocalBroker() as broker, AlertWatcher(broker) as watcher:   # doctest: +SKIP
    ...     run_the_unit(sink=broker.sink_settings("demo-junction"))
    ...     print(watcher.summary(pub_key=data_dir / "keys" / "demo-junction.sign.pub"))
    """

    def __init__(self, broker: LocalBroker, *, client_id: str = "controlroom-demo") -> None:
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.broker = broker
        self.alerts: dict[tuple[str, int], dict[str, Any]] = {}
        self.evidence: dict[str, bytes] = {}
        self.duplicates = 0
        self.malformed = 0
        self._lock = threading.Lock()
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        if broker.tls:
            c = broker.client_certs(CONTROLROOM)
            self._client.tls_set(str(c["ca_file"]), str(c["cert_file"]), str(c["key_file"]))
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *a: subscribed.set()
        self._client.connect("localhost" if broker.tls else broker.host, broker.port)
        self._client.subscribe([(f"{broker.root}/+/alert", 1), (f"{broker.root}/+/evidence/+", 1)])
        self._client.loop_start()
        if not subscribed.wait(10):
            self.close()
            raise BrokerError("alert watcher could not subscribe")

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        from edge.core.messages import decode

        with self._lock:
            if "/evidence/" in msg.topic:
                self.evidence[msg.topic.rsplit("/", 1)[1]] = bytes(msg.payload)
                return
            try:
                alert = decode(bytes(msg.payload))
                key = (str(alert["unit"]), int(alert["seq"]))
            except (PhonewatchError, KeyError, TypeError, ValueError):
                self.malformed += 1
                return
            if key in self.alerts:
                self.duplicates += 1  # QoS 1 may deliver twice: de-duplicate on (unit, seq)
            self.alerts[key] = alert

    def wait_for(self, n: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.alerts) >= n:
                    return True
            time.sleep(0.05)
        return False

    def check(self, pub_key: Path | None) -> dict[str, int]:
        """Counts: received, schema_ok, verified (None key: not checked), evidence_ok, ..."""
        from edge.common.signing import load_public_key, verify_alert, verify_evidence
        from edge.core.messages import ALERT_SCHEMA, schema_errors

        key = load_public_key(pub_key) if pub_key is not None and pub_key.exists() else None
        with self._lock:
            alerts = list(self.alerts.values())
            evidence = dict(self.evidence)
        return {
            "received": len(alerts),
            "schema_ok": sum(not schema_errors(a, ALERT_SCHEMA) for a in alerts),
            "verified": sum(verify_alert(a, key) for a in alerts) if key is not None else -1,
            "evidence_ok": sum(
                verify_evidence(a, evidence.get(str(a.get("alert_id")), b"")) for a in alerts
            ),
            "duplicates": self.duplicates,
            "malformed": self.malformed,
        }

    def summary(
        self, *, pub_key: Path | None, expected: int | None = None, wait_s: float = 5.0
    ) -> str:
        if expected:
            self.wait_for(expected, wait_s)
        c = self.check(pub_key)
        verified = "not checked (no key)" if c["verified"] < 0 else str(c["verified"])
        return (
            f"control room (mosquitto {self.broker.host}:{self.broker.port}): "
            f"{c['received']} alert(s) received, {verified} signature(s) verified, "
            f"{c['evidence_ok']} evidence image(s) matched, {c['schema_ok']} schema-valid, "
            f"{c['duplicates']} duplicate(s) dropped"
        )

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()

    def __enter__(self) -> AlertWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
