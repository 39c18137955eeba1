"""The MQTT side of the control room: one paho client (MQTT 5) feeding :class:`Ingest`.

* Alerts, evidence and heartbeats come through a shared subscription
  (``$share/<group>/<root>/+/alert`` ...), so several receivers split the load. The retained
  status topic is subscribed normally by every receiver (brokers never send retained messages
  on shared subscriptions); the status update is idempotent.
* Manual acknowledgement: a QoS 1 message is PUBACKed only after the transaction that stored
  it has committed. If the database fails, the batch is kept and retried; if the receiver dies,
  the broker redelivers (persistent session). Either way nothing is lost, and the
  ``(unit, seq)`` key keeps it stored once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy.engine import Engine

from controlroom.config import MqttConfig
from controlroom.ingest import Ingest, Message, StoredAlert

log = logging.getLogger(__name__)

_RETRY_S = 1.0


class Receiver:
    def __init__(self, cfg: MqttConfig, engine: Engine, *,
                 on_stored: Callable[[list[StoredAlert]], None] | None = None) -> None:
        self.cfg = cfg
        self.ingest = Ingest(engine, topic_root=cfg.topic_root,
                             alert_max_bytes=cfg.alert_max_bytes,
                             evidence_max_bytes=cfg.evidence_max_bytes, on_stored=on_stored)
        self._queue: queue.Queue[tuple[Message, int, int]] = queue.Queue(maxsize=cfg.queue_max)
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._started = False
        self._closed = False
        self.db_errors = 0
        self.connects = 0
        self.subscriptions_refused = 0
        self._client = self._make_client()
        self._worker = threading.Thread(target=self._worker_main, name="controlroom-ingest",
                                        daemon=True)

    def topics(self) -> list[tuple[str, int]]:
        root, group = self.cfg.topic_root, self.cfg.share_group
        shared = [f"{root}/+/alert", f"{root}/+/evidence/+", f"{root}/+/heartbeat",
                  f"{root}/+/collect/+"]
        return [(f"$share/{group}/{t}", 1) for t in shared] + [(f"{root}/+/status", 1)]

    def _make_client(self) -> mqtt.Client:
        cfg = self.cfg
        client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                             client_id=cfg.client_id, protocol=mqtt.MQTTv5)
        if cfg.ca_file is not None:
            client.tls_set(ca_certs=str(cfg.ca_file),
                           certfile=str(cfg.cert_file) if cfg.cert_file else None,
                           keyfile=str(cfg.key_file) if cfg.key_file else None)
        if cfg.username:
            client.username_pw_set(cfg.username,
                                   cfg.password.get_secret_value() if cfg.password else None)
        client.manual_ack_set(True)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    # ------------------------------------------------------------------ paho callbacks

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the receiver: %s", reason_code)
            return
        self.connects += 1
        self._connected.set()
        client.subscribe(self.topics())
        log.info("receiver %s connected to %s:%d (session present: %s)", self.cfg.client_id,
                 self.cfg.host, self.cfg.port, flags.session_present)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        if self._connected.is_set() and not self._stop.is_set():
            log.warning("receiver disconnected (%s); reconnecting", reason_code)
        self._connected.clear()
        self._subscribed.clear()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: list[ReasonCode], properties: Properties | None) -> None:
        bad = [(t, rc) for (t, _), rc in zip(self.topics(), reason_codes, strict=False)
               if rc.is_failure]
        for t, rc in bad:
            log.error("subscription to %s refused: %s", t, rc)
        self.subscriptions_refused = len(bad)
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        item = Message(msg.topic, bytes(msg.payload), time.time())
        # Blocks the network thread while the queue is full: back-pressure to the broker.
        while not self._stop.is_set():
            try:
                self._queue.put((item, msg.mid, msg.qos), timeout=0.5)
                return
            except queue.Full:
                continue

    # ------------------------------------------------------------------ worker

    def _worker_main(self) -> None:
        pending: list[tuple[Message, int, int]] = []
        while not self._stop.is_set():
            if not pending:
                try:
                    pending.append(self._queue.get(timeout=0.2))
                except queue.Empty:
                    continue
            while len(pending) < self.cfg.batch_max:
                try:
                    pending.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self.ingest.process([p[0] for p in pending])
            except sa.exc.SQLAlchemyError as e:
                self.db_errors += 1
                log.error("database error; %d message(s) kept unacknowledged, retrying in "
                          "%.0f s: %s", len(pending), _RETRY_S, e)
                self._stop.wait(_RETRY_S)
                continue
            except Exception:  # a bug must not stop the receiver; the batch is dropped
                log.exception("could not process %d message(s); dropped", len(pending))
            for _, mid, qos in pending:
                if qos > 0:
                    self._client.ack(mid, qos)
            pending = []

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Receiver:
        if self._started:
            return self
        self._started = True
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        props.ReceiveMaximum = min(65535, max(20, self.cfg.batch_max * 2))
        self.ingest.reload_keys()
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s,
                                   clean_start=False, properties=props)
        self._client.loop_start()
        self._worker.start()
        return self

    def wait_ready(self, timeout_s: float = 10.0) -> bool:
        """True once connected and subscribed."""
        return self._subscribed.wait(timeout_s)

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    def backlog(self) -> int:
        return self._queue.qsize()

    def stats(self) -> dict[str, Any]:
        out = self.ingest.stats()
        out.update(connected=self.is_connected, backlog=self.backlog(),
                   db_errors=self.db_errors, connects=self.connects,
                   subscriptions_refused=self.subscriptions_refused)
        return out

    def close(self, *, drain_timeout_s: float = 5.0) -> None:
        """Store what was received (best effort within the timeout), then disconnect."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            deadline = time.monotonic() + drain_timeout_s
            while not self._queue.empty() and time.monotonic() < deadline:
                time.sleep(0.02)
            self._stop.set()
            self._worker.join(timeout=drain_timeout_s)
            self._client.disconnect()
            self._client.loop_stop()
