"""The MQTT side of the control room: one paho client (MQTT 5) feeding :class:`Ingest`.

* Alerts, evidence and heartbeats come through a shared subscription
  (``$share/<group>/<root>/+/alert`` ...), so several receivers split the load. The retained
  status topic is subscribed normally by every receiver (brokers never send retained messages
  on shared subscriptions); the status update is idempotent.
* Manual acknowledgement: a QoS 1 message is PUBACKed only after the transaction that stored
  it has committed. If the database fails, the batch is kept and retried; if the receiver dies,
  the broker redelivers (persistent session). Either way nothing is lost, and the
  ``(unit, seq)`` key keeps it stored once.
* Commands to units (:meth:`Receiver.publish_command`) go out on the same connection, QoS 1,
  not retained; a dashboard without a receiver uses a :class:`CommandPublisher` of its own.
* Model rollout (``controlroom/rollout.py``): the units' ``model/status`` events come through
  the shared subscription too; the worker records them (audit log, ``rollouts``) in their own
  transaction and sends again the package chunks a unit reports missing.
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy.engine import Engine

from controlroom import commands, rollout
from controlroom.config import MqttConfig
from controlroom.ingest import Ingest, Message, StoredAlert
from edge.common.mqtt_tls import configure_client
from edge.core import messages as m

log = logging.getLogger(__name__)

_RETRY_S = 1.0
RECEIPT_MAX_ITEMS = 5000
"""Sequence numbers per list in one receipt (the schema allows 10,000)."""
PUBACK_TIMEOUT_S = 5.0
NO_MATCHING_SUBSCRIBERS = 0x10
"""MQTT 5 PUBACK reason code: accepted, but no subscription matched, so the message is gone."""


def _configure(client: mqtt.Client, cfg: MqttConfig) -> None:
    """TLS and credentials from the control-room config (the same for every client)."""
    configure_client(
        client,
        section="mqtt",
        ca_file=cfg.ca_file,
        cert_file=cfg.cert_file,
        key_file=cfg.key_file,
        username=cfg.username,
        password=cfg.password.get_secret_value() if cfg.password else None,
    )


_MB = 1024 * 1024
_BATCH_SHARE = 4
"""One database transaction takes at most 1/_BATCH_SHARE of the byte budget (and at least one
message)."""


def _size(topic: str, payload: bytes) -> int:
    """What a received message is charged against the byte budget."""
    return len(payload) + len(topic)


class _Budget:
    """Messages (and their bytes) received and not yet stored and acknowledged.

    paho's network thread :meth:`take` s a message's share before queueing it and waits while
    that would go over either bound; the worker :meth:`give` s it back once the batch is
    stored and PUBACKed (or dropped). A message larger than the whole byte budget is let in
    when nothing else is held, so it cannot wait forever.
    """

    def __init__(self, *, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._cond = threading.Condition()
        self.count = 0
        self.bytes = 0
        self.peak_bytes = 0
        self.waits = 0
        self.wait_s = 0.0

    def _fits(self, n_bytes: int) -> bool:
        return self.count == 0 or (
            self.count < self.max_count and self.bytes + n_bytes <= self.max_bytes
        )

    def take(self, n_bytes: int, stop: threading.Event) -> None:
        with self._cond:
            if not self._fits(n_bytes) and not stop.is_set():
                self.waits += 1
                t0 = time.monotonic()
                while not self._fits(n_bytes) and not stop.is_set():
                    self._cond.wait(0.5)
                self.wait_s += time.monotonic() - t0
            self.count += 1
            self.bytes += n_bytes
            self.peak_bytes = max(self.peak_bytes, self.bytes)

    def give(self, n_bytes: int, n_messages: int) -> None:
        with self._cond:
            self.count -= n_messages
            self.bytes -= n_bytes
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "queued_messages": self.count,
                "queued_bytes": self.bytes,
                "queued_bytes_peak": self.peak_bytes,
                "queue_max_bytes": self.max_bytes,
                "flow_paused": self.waits,
                "flow_paused_s": round(self.wait_s, 3),
            }


class _Acks:
    """PUBACKs of our own publishes, by message id, for a caller waiting on one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._done: dict[int, ReasonCode] = {}

    def on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self._done[mid] = reason_code
            while len(self._done) > 1000:  # acks nobody waited for (timed out): forget them
                del self._done[next(iter(self._done))]
            self._cond.notify_all()

    def wait(self, mid: int, timeout_s: float) -> ReasonCode | None:
        with self._cond:
            self._cond.wait_for(lambda: mid in self._done, timeout=timeout_s)
            return self._done.pop(mid, None)


CHUNK_WINDOW = 256
"""Chunks published before waiting for their PUBACKs (``_Acks`` remembers 1000)."""


def publish_chunks(
    client: mqtt.Client,
    acks: _Acks,
    cfg: MqttConfig,
    *,
    connected: bool,
    unit: str,
    package_sha256: str,
    chunks: Sequence[tuple[int, bytes]],
    timeout_s: float | None = None,
) -> commands.Sent:
    """Publish model package chunks (QoS 1, not retained) and wait for every PUBACK (within
    ``timeout_s``; by default 30 s plus 0.5 s a chunk)."""
    if timeout_s is None:
        timeout_s = 30.0 + 0.5 * len(chunks)
    if not connected:
        return commands.Sent(
            False, f"not connected to the broker {cfg.host}:{cfg.port}; no chunk was sent"
        )
    deadline = time.monotonic() + timeout_s
    for start in range(0, len(chunks), CHUNK_WINDOW):
        mids: list[tuple[int, int]] = []
        for index, data in chunks[start : start + CHUNK_WINDOW]:
            topic = rollout.chunk_topic(cfg.topic_root, unit, package_sha256, index)
            info = client.publish(topic, data, qos=1, retain=False)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                return commands.Sent(False, f"chunk {index} not sent: {mqtt.error_string(info.rc)}")
            mids.append((index, info.mid))
        for index, mid in mids:
            rc = acks.wait(mid, max(0.0, deadline - time.monotonic()))
            if rc is None:
                return commands.Sent(
                    False, f"the broker did not acknowledge chunk {index} within {timeout_s:.0f} s"
                )
            if rc.is_failure:
                return commands.Sent(
                    False,
                    f"the broker refused chunk {index}: {rc} (does the ACL let the control room "
                    f"write {cfg.topic_root}/+/model/chunk/#?)",
                )
    return commands.Sent(True, f"{len(chunks)} chunk(s) published")


def publish_command(
    client: mqtt.Client,
    acks: _Acks,
    cfg: MqttConfig,
    *,
    connected: bool,
    unit: str,
    name: str,
    body: dict[str, Any],
    timeout_s: float = PUBACK_TIMEOUT_S,
) -> commands.Sent:
    """Publish one command (QoS 1, not retained) and wait for the broker's PUBACK."""
    if not connected:
        return commands.Sent(
            False, f"not connected to the broker {cfg.host}:{cfg.port}; nothing was sent"
        )
    topic = commands.topic(cfg.topic_root, unit, name)
    info = client.publish(
        topic, json.dumps(body, separators=(",", ":"), sort_keys=True), qos=1, retain=False
    )
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        return commands.Sent(False, f"not sent: {mqtt.error_string(info.rc)}")
    rc = acks.wait(info.mid, timeout_s)
    if rc is None:
        return commands.Sent(
            False,
            f"handed to the MQTT client, but the broker did not "
            f"acknowledge it within {timeout_s:.0f} s; it may still be "
            "delivered",
        )
    if rc.is_failure:
        return commands.Sent(False, f"the broker refused it: {rc}")
    if rc.value == NO_MATCHING_SUBSCRIBERS:
        # The broker accepted it and dropped it: no session is subscribed to the unit's
        # commands (the unit has never connected, or was away longer than its session expiry).
        # A unit that is merely offline keeps its session, and the broker queues for it.
        return commands.Sent(
            False,
            f"the broker has no subscriber on {topic}: the unit has "
            "not connected since it was set up or since its session expired, "
            "so nothing will reach it; send again once it shows online",
        )
    return commands.Sent(True, f"published on {topic}")


class _Publishes:
    """Commands and model chunks to units, on the client's own connection (the receiver's,
    or a :class:`CommandPublisher`'s)."""

    cfg: MqttConfig
    _client: mqtt.Client
    _acks: _Acks
    _connected: threading.Event

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    def publish_command(self, unit: str, name: str, body: dict[str, Any]) -> commands.Sent:
        """Send a command to a unit."""
        return publish_command(
            self._client,
            self._acks,
            self.cfg,
            connected=self.is_connected,
            unit=unit,
            name=name,
            body=body,
        )

    def publish_chunks(
        self, unit: str, package_sha256: str, chunks: Sequence[tuple[int, bytes]]
    ) -> commands.Sent:
        """Send model package chunks to a unit."""
        return publish_chunks(
            self._client,
            self._acks,
            self.cfg,
            connected=self.is_connected,
            unit=unit,
            package_sha256=package_sha256,
            chunks=chunks,
        )


class Receiver(_Publishes):
    def __init__(
        self,
        cfg: MqttConfig,
        engine: Engine,
        *,
        on_stored: Callable[[list[StoredAlert]], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.ingest = Ingest(
            engine,
            topic_root=cfg.topic_root,
            alert_max_bytes=cfg.alert_max_bytes,
            evidence_max_bytes=cfg.evidence_max_bytes,
            snapshot_max_bytes=cfg.snapshot_max_bytes,
            clip_max_bytes=cfg.clip_max_mb * _MB,
            on_stored=on_stored,
            orphan_evidence_max_count=cfg.orphan_evidence_max_count,
            orphan_evidence_max_bytes=cfg.orphan_evidence_max_mb * _MB,
        )
        # SimpleQueue (C, no task accounting): the cheapest hand-off from paho's network thread
        # to the worker; its bounds are kept by _on_message (see _Budget).
        self._queue: queue.SimpleQueue[tuple[Message, int, int]] = queue.SimpleQueue()
        self._budget = _Budget(max_count=cfg.queue_max, max_bytes=cfg.queue_max_mb * _MB)
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._started = False
        self._closed = False
        self.db_errors = 0
        self.receipts_sent = 0
        self.connects = 0
        self.subscriptions_refused = 0
        self.model_status_rejected = 0
        self.chunks_resent = 0
        self._acks = _Acks()
        self._client = self._make_client()
        self._worker = threading.Thread(
            target=self._worker_main, name="controlroom-ingest", daemon=True
        )

    def topics(self) -> list[tuple[str, int]]:
        root, group = self.cfg.topic_root, self.cfg.share_group
        shared = [
            f"{root}/+/alert",
            f"{root}/+/evidence/+",
            f"{root}/+/crop/+",
            f"{root}/+/clip/+",
            f"{root}/+/heartbeat",
            f"{root}/+/collect/+",
            f"{root}/+/snapshot",
            f"{root}/+/model/status",
        ]
        return [(f"$share/{group}/{t}", 1) for t in shared] + [(f"{root}/+/status", 1)]

    def _make_client(self) -> mqtt.Client:
        cfg = self.cfg
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=mqtt.MQTTv5,
        )
        _configure(client, cfg)
        client.manual_ack_set(True)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._acks.on_publish
        return client

    # ------------------------------------------------------------------ paho callbacks

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the receiver: %s", reason_code)
            return
        self.connects += 1
        self._connected.set()
        client.subscribe(self.topics())
        log.info(
            "receiver %s connected to %s:%d (session present: %s)",
            self.cfg.client_id,
            self.cfg.host,
            self.cfg.port,
            flags.session_present,
        )

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connected.is_set() and not self._stop.is_set():
            log.warning("receiver disconnected (%s); reconnecting", reason_code)
        self._connected.clear()
        self._subscribed.clear()

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        bad = [
            (t, rc)
            for (t, _), rc in zip(self.topics(), reason_codes, strict=False)
            if rc.is_failure
        ]
        for t, rc in bad:
            log.error("subscription to %s refused: %s", t, rc)
        self.subscriptions_refused = len(bad)
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # Blocks the network thread while the budget is full: back-pressure to the broker. paho
        # stops reading the socket, and the broker stops sending once ReceiveMaximum messages
        # are unacknowledged; what it has not sent stays queued there.
        payload = bytes(msg.payload)
        self._budget.take(_size(msg.topic, payload), self._stop)
        user = tuple(
            (str(k), str(v)) for k, v in (getattr(msg.properties, "UserProperty", None) or ())[:8]
        )
        self._queue.put((Message(msg.topic, payload, time.time(), user), msg.mid, msg.qos))

    # ------------------------------------------------------------------ worker

    def _worker_main(self) -> None:
        pending: list[tuple[Message, int, int]] = []
        while not self._stop.is_set():
            if not pending:
                try:
                    pending.append(self._queue.get(timeout=0.2))
                except queue.Empty:
                    continue
            # A quarter of the byte budget at most per transaction: the database driver copies
            # the batch it writes, so memory stays near the budget, not twice it.
            batch_bytes = sum(_size(p[0].topic, p[0].payload) for p in pending)
            while (
                len(pending) < self.cfg.batch_max
                and batch_bytes < self._budget.max_bytes // _BATCH_SHARE
            ):
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                pending.append(item)
                batch_bytes += _size(item[0].topic, item[0].payload)
            try:
                self._process(pending)
            except sa.exc.SQLAlchemyError as e:
                self.db_errors += 1
                log.error(
                    "database error; %d message(s) kept unacknowledged, retrying in %.0f s: %s",
                    len(pending),
                    _RETRY_S,
                    e,
                )
                self._stop.wait(_RETRY_S)
                continue
            except Exception:  # a bug must not stop the receiver; the batch is dropped
                log.exception("could not process %d message(s); dropped", len(pending))
            self._send_receipts()
            for _, mid, qos in pending:
                if qos > 0:
                    self._client.ack(mid, qos)
            self._budget.give(
                sum(_size(msg.topic, msg.payload) for msg, _, _ in pending), len(pending)
            )
            pending = []

    def _process(self, pending: list[tuple[Message, int, int]]) -> None:
        """Store a batch: model events (``controlroom/rollout.py``) apart, the rest through
        :class:`Ingest`; then send the chunks units reported missing."""
        root = self.cfg.topic_root
        statuses = [
            (msg.topic, msg.payload, msg.received_at)
            for msg, _, _ in pending
            if rollout.status_unit(msg.topic, root) is not None
        ]
        rest = [msg for msg, _, _ in pending if rollout.status_unit(msg.topic, root) is None]
        resends: list[rollout.Resend] = []
        if statuses:
            resends, rejected = rollout.process_statuses(self.ingest.engine, statuses, root=root)
            self.model_status_rejected += rejected
        if rest:
            self.ingest.process(rest)
        for r in resends:  # best effort: a chunk lost now is reported missing again
            for index, data in r.chunks:
                topic = rollout.chunk_topic(root, r.unit, r.package_sha256, index)
                info = self._client.publish(topic, data, qos=1, retain=False)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    self.chunks_resent += 1
            log.info(
                "model package %s: sent %d missing chunk(s) again to %s",
                r.package_sha256[:12],
                len(r.chunks),
                r.unit,
            )

    def _send_receipts(self) -> None:
        """Tell each unit what is now committed (only the control room may, by the ACL): the
        unit keeps an alert and its evidence until this receipt reaches it, resending
        meanwhile, so a receipt lost here only costs a duplicate, never an alert."""
        receipts = self.ingest.take_receipts()
        for unit, (alerts, evidence, crops, clips) in receipts.by_unit.items():
            a, e, c, v = sorted(alerts), sorted(evidence), sorted(crops), sorted(clips)
            for i in range(0, max(len(a), len(e), len(c), len(v)), RECEIPT_MAX_ITEMS):
                doc = m.build_receipt(
                    unit,
                    alerts=a[i : i + RECEIPT_MAX_ITEMS],
                    evidence=e[i : i + RECEIPT_MAX_ITEMS],
                    crops=c[i : i + RECEIPT_MAX_ITEMS],
                    clips=v[i : i + RECEIPT_MAX_ITEMS],
                    t_wall_s=time.time(),
                )
                topic = m.Topics(self.cfg.topic_root, unit).ack
                info = self._client.publish(topic, m.encode(doc), qos=1, retain=False)
                if info.rc == mqtt.MQTT_ERR_SUCCESS:
                    self.receipts_sent += 1
                else:  # not connected: the unit will send these again and be receipted then
                    log.debug("receipt for %s not sent now: %s", unit, mqtt.error_string(info.rc))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Receiver:
        if self._started:
            return self
        self._started = True
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        props.ReceiveMaximum = min(65535, max(20, self.cfg.batch_max * 2))
        self.ingest.reload_keys()
        self._client.connect_async(
            self.cfg.host,
            self.cfg.port,
            keepalive=self.cfg.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()
        self._worker.start()
        return self

    def wait_ready(self, timeout_s: float = 10.0) -> bool:
        """True once connected and subscribed."""
        return self._subscribed.wait(timeout_s)

    def backlog(self) -> int:
        return self._queue.qsize()

    def stats(self) -> dict[str, Any]:
        out = self.ingest.stats()
        out.update(
            connected=self.is_connected,
            backlog=self.backlog(),
            db_errors=self.db_errors,
            connects=self.connects,
            subscriptions_refused=self.subscriptions_refused,
            receipts_sent=self.receipts_sent,
            model_status_rejected=self.model_status_rejected,
            chunks_resent=self.chunks_resent,
        )
        out.update(self._budget.stats())
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
            self._budget.wake()
            self._worker.join(timeout=drain_timeout_s)
            self._client.disconnect()
            self._client.loop_stop()


class CommandPublisher(_Publishes):
    """A small MQTT client that only publishes commands: for a dashboard run without a
    receiver (``serve --no-receiver``). Clean session, a client id of its own."""

    def __init__(self, cfg: MqttConfig) -> None:
        self.cfg = cfg
        self._acks = _Acks()
        self._connected = threading.Event()
        self._started = self._closed = False
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"{cfg.client_id[:50]}-cmd-{secrets.token_hex(3)}",
            protocol=mqtt.MQTTv5,
        )
        _configure(self._client, cfg)
        self._client.reconnect_delay_set(1, 30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._acks.on_publish

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.warning("broker refused the command publisher: %s", reason_code)
            return
        self._connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected.clear()

    def start(self) -> CommandPublisher:
        if not self._started:
            self._started = True
            self._client.connect_async(
                self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s, clean_start=True
            )
            self._client.loop_start()
        return self

    def wait_ready(self, timeout_s: float = 10.0) -> bool:
        return self._connected.wait(timeout_s)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
