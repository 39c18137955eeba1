"""The MQTT uplink (paho-mqtt 2.x, ``CallbackAPIVersion.VERSION2``, MQTT 5): all MQTT lives here.

A transport, not an app: ``MqttUplink.send(detection)`` builds the alert from the detection as
the app stamped it (fix, GPS state and time are already on it), adds the unit's sequence number,
signs it, commits it with the evidence JPEG bytes the detection carries to the durable
:class:`Outbox` and returns. Heartbeats are built by the app (``edge.app.heartbeat``) and handed
to :meth:`MqttUplink.publish_heartbeat`.

Delivery is end to end. One sender thread hands outbox rows to paho in sequence order (at most
``max_inflight`` awaiting PUBACK, at most ``max_unreceipted`` awaiting the control room). A
broker's PUBACK is *not* delivery -- with no receiver subscribed (first start, a broker that
lost the control room's shared subscription, an expired session, a full queue) the broker
accepts a message and drops it (PUBACK 0x10 "no matching subscribers", or even 0x00). A part
is deleted from the outbox only when the control room's receipt on ``<root>/<unit>/ack`` says
it has committed it; a part not receipted within ``receipt_timeout_s`` is sent again, the wait
doubling up to ``receipt_timeout_max_s``, and sooner once a receipt shows the control room is
back. The receiver de-duplicates on ``(unit, seq)`` and receipts duplicates too.

Connection: TLS with a CA and a client certificate, or username/password; a persistent session
(clean start off, session expiry); reconnect with exponential backoff; "connected" only on a
CONNACK with a success reason code. A retained ``online`` status is published on connect, and
the same topic carries the ``offline`` Last Will. Commands from the control room are validated
against the committed schema before ``on_command`` ever sees them; bad ones are counted and
logged, and the unit keeps running.

Best effort, beside the outbox: :meth:`MqttUplink.publish_collect` (training crops) and
:meth:`MqttUplink.publish_snapshot` go out at QoS 1, not retained, only while connected and only
while few of them await a PUBACK; otherwise they are dropped and counted, never queued on disk.

Model rollout (docs/rollout.md): with a model receiver attached (:meth:`MqttUplink.attach_models`,
an :class:`edge.adapters.model_transfer.ModelReceiver`), the uplink also subscribes to
``<root>/<unit>/model/chunk/#`` and hands each chunk, and each ``model_offer`` command, to the
receiver's queue in arrival order; :meth:`MqttUplink.publish_model_status` carries the unit's
``model_status.v1`` events back (QoS 1, best effort).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge import __version__
from edge.adapters.mqtt_config import MqttSinkConfig
from edge.adapters.outbox import Outbox, Part
from edge.common.mqtt_tls import configure_client
from edge.common.signing import (
    Ed25519PrivateKey,
    sign_alert,
)
from edge.core import messages as m
from edge.core.errors import MessageError, OutboxError
from edge.core.ports import Detection

log = logging.getLogger(__name__)

NO_MATCHING_SUBSCRIBERS = 0x10
"""MQTT 5 PUBACK reason code: accepted, but no subscription matched, so nobody got it."""
Key = tuple[int, Part]
"""One part of one alert: ``(seq, "alert" | "evidence")``."""
_BEST_EFFORT_MAX_INFLIGHT = 8
"""Crops and snapshots awaiting PUBACK at once; beyond this they are dropped, so a slow link
never lets training data crowd out alerts."""

CommandFn = Callable[[str, dict[str, Any]], None]
MODEL_OFFER_MAX_BYTES = 400 * 1024
"""A ``model_offer`` carries a SHA-256 per chunk (up to 4096): it may exceed
``command_max_bytes``."""


class ModelChunks(Protocol):
    """Where model offers and chunks go (``ModelReceiver``); each call only queues."""

    def offer(self, body: dict[str, Any]) -> None: ...
    def chunk(self, package_sha256: str, index: int, payload: bytes) -> None: ...
    def connected(self) -> None: ...


class MqttUplink:
    """An ``AlertSink`` that delivers signed alerts through a durable outbox to an MQTT broker."""

    def __init__(
        self,
        cfg: MqttSinkConfig,
        *,
        unit_id: str,
        outbox: Outbox,
        signing_key: Ed25519PrivateKey,
        on_command: CommandFn | None = None,
    ) -> None:
        self.cfg = cfg
        self.unit_id = unit_id
        self.topics = m.Topics(cfg.topic_root, unit_id)
        self.outbox = outbox
        self._key = signing_key
        self._on_command = on_command
        self._models: ModelChunks | None = None
        self._status: tuple[str, str | None] = ("online", None)

        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._connected = threading.Event()
        self._closed = False
        self._started = False
        self._inflight: dict[int, Key] = {}  # mid -> part awaiting the broker's PUBACK
        self._awaiting: dict[Key, float] = {}  # part -> when to send it again (monotonic)
        self._attempts: dict[Key, int] = {}  # part -> times sent
        self._handed_upto = 0
        self._acks: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()  # (mid, reason)
        self._receipts: queue.SimpleQueue[list[Key]] = queue.SimpleQueue()
        self._commands: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue(maxsize=16)
        self._best_effort: dict[int, str] = {}  # mid -> kind ("collect" / "snapshot")
        self._counts = {
            "alerts_committed": 0,
            "published": 0,
            "acked": 0,
            "refused": 0,
            "retransmitted": 0,
            "no_subscribers": 0,
            "receipts": 0,
            "receipts_rejected": 0,
            "connects": 0,
            "connect_failures": 0,
            "heartbeats": 0,
            "heartbeats_dropped": 0,
            "commands_accepted": 0,
            "commands_rejected": 0,
            "evidence_missing": 0,
            "collect_published": 0,
            "collect_dropped": 0,
            "collect_refused": 0,
            "snapshot_published": 0,
            "snapshot_dropped": 0,
            "snapshot_refused": 0,
            "model_chunks": 0,
            "model_chunks_rejected": 0,
            "model_status_published": 0,
            "model_status_dropped": 0,
        }
        self._client = self._make_client()
        self._sender = threading.Thread(target=self._sender_main, name="uplink-sender", daemon=True)
        self._commander = threading.Thread(
            target=self._command_main, name="uplink-commands", daemon=True
        )

    # ------------------------------------------------------------------ paho setup

    def _make_client(self) -> mqtt.Client:
        cfg = self.cfg
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or self.unit_id,
            protocol=mqtt.MQTTv5,
        )
        _set_tls(client, cfg)
        offline = m.build_status(
            self.unit_id,
            "offline",
            t_wall_s=time.time(),
            software=__version__,
            reason="connection lost",
        )
        client.will_set(self.topics.status, m.encode(offline), qos=1, retain=True)
        client.reconnect_delay_set(cfg.reconnect_min_s, cfg.reconnect_max_s)  # type: ignore[arg-type]
        client.max_inflight_messages_set(cfg.max_inflight)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def start(self) -> MqttUplink:
        """Connect in the background (never blocks on the broker) and start the sender."""
        if self._started:
            return self
        self._started = True
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        self._client.connect_async(
            self.cfg.host,
            self.cfg.port,
            keepalive=self.cfg.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()
        self._sender.start()
        self._commander.start()
        log.info(
            "uplink %s -> %s:%d (%s), %d alert(s) waiting in the outbox",
            self.unit_id,
            self.cfg.host,
            self.cfg.port,
            "TLS" if self.cfg.uses_tls else "plain",
            self.outbox.depth(),
        )
        return self

    # ------------------------------------------------------------ paho callbacks (network thread)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._counts["connect_failures"] += 1
            log.warning("broker refused the connection: %s", reason_code)
            self._connected.clear()
            return
        self._counts["connects"] += 1
        subs = [(self.topics.cmd_filter, 1), (self.topics.ack, 1)]
        if self._models is not None:
            subs.append((self.topics.model_chunk_filter, 1))
        client.subscribe(subs)
        state, reason = self._status
        online = m.build_status(
            self.unit_id, state, t_wall_s=time.time(), software=__version__, reason=reason
        )
        client.publish(self.topics.status, m.encode(online), qos=1, retain=True)
        log.info(
            "connected to %s:%d (session present: %s)",
            self.cfg.host,
            self.cfg.port,
            flags.session_present,
        )
        with self._lock:  # a best-effort message lost with the old session must not hold a slot
            self._best_effort.clear()
        self._connected.set()
        self._wake.set()
        if self._models is not None:
            self._models.connected()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._counts["connect_failures"] += 1
        log.debug("connect to %s:%d failed; retrying with backoff", self.cfg.host, self.cfg.port)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._stop.is_set():
            log.warning(
                "disconnected from broker (%s); %d alert(s) wait in the outbox",
                reason_code,
                self._safe_depth(),
            )

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._acks.put((mid, reason_code.value))
        self._wake.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.topics.ack:
            self._on_receipt(msg)
            return
        if msg.topic.startswith(self.topics.model_chunk_prefix):
            self._on_model_chunk(msg)
            return
        if msg.retain:  # a retained command would replay on every reconnect
            self._counts["commands_rejected"] += 1
            log.warning(
                "rejected retained command on %s: commands must not be retained", msg.topic[:200]
            )
            return
        is_offer = msg.topic == self.topics.cmd("model_offer")
        try:
            name, body = m.parse_command(
                msg.topic,
                bytes(msg.payload),
                topics=self.topics,
                max_bytes=MODEL_OFFER_MAX_BYTES if is_offer else self.cfg.command_max_bytes,
            )
        except MessageError as e:
            self._counts["commands_rejected"] += 1
            log.warning("rejected command on %s: %s", msg.topic[:200], e)
            return
        if is_offer:
            self._on_model_offer(body)
            return
        try:
            self._commands.put_nowait((name, body))
            self._counts["commands_accepted"] += 1
        except queue.Full:
            self._counts["commands_rejected"] += 1
            log.warning("rejected command %s: too many commands waiting", name)

    def _on_model_offer(self, body: dict[str, Any]) -> None:
        if self._models is None:
            self._counts["commands_rejected"] += 1
            log.warning(
                "rejected model_offer: this unit takes no model packages ([models] "
                "trusted_keys is not set)"
            )
            return
        self._counts["commands_accepted"] += 1
        self._models.offer(body)

    def _on_model_chunk(self, msg: mqtt.MQTTMessage) -> None:
        """``<root>/<unit>/model/chunk/<package_sha256>/<index>``: queued for the receiver."""
        sha, _, index = msg.topic[len(self.topics.model_chunk_prefix) :].partition("/")
        if (
            self._models is None
            or msg.retain
            or len(sha) != 64
            or not index.isdigit()
            or len(index) > 5
        ):
            self._counts["model_chunks_rejected"] += 1
            log.warning("rejected model chunk on %s", msg.topic[:200])
            return
        self._counts["model_chunks"] += 1
        self._models.chunk(sha, int(index), bytes(msg.payload))

    def attach_models(self, models: ModelChunks) -> None:
        """Route model offers and chunks to ``models`` (subscribing to the chunk topic now if
        connected, else on connect)."""
        self._models = models
        # paho marks the client connected before it calls ``_on_connect``, which reads
        # ``_models`` before it sets ``_connected``: asking paho (not ``_connected``) after
        # setting ``_models`` means one of the two subscribes whatever the interleaving (both,
        # at worst: a repeated SUBSCRIBE is harmless). Asking ``_connected`` left a window in
        # which neither did, and the unit never got a chunk.
        if self._client.is_connected():
            self._client.subscribe(self.topics.model_chunk_filter, qos=1)
            models.connected()

    def publish_model_status(self, doc: dict[str, Any]) -> bool:
        """Publish a ``model_status.v1`` event on ``<root>/<unit>/model/status`` (QoS 1, not
        retained) if connected now; False if dropped or malformed."""
        try:
            m.validate(doc, m.MODEL_STATUS_SCHEMA)
        except MessageError as e:
            self._counts["model_status_dropped"] += 1
            log.error("model status not sent: %s", e)
            return False
        if self._closed or not self._connected.is_set():
            self._counts["model_status_dropped"] += 1
            return False
        info = self._client.publish(self.topics.model_status, m.encode(doc), qos=1, retain=False)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._counts["model_status_dropped"] += 1
            return False
        self._counts["model_status_published"] += 1
        return True

    def _on_receipt(self, msg: mqtt.MQTTMessage) -> None:
        try:
            keys = m.parse_receipt(msg.topic, bytes(msg.payload), topics=self.topics)
        except MessageError as e:
            self._counts["receipts_rejected"] += 1
            log.warning("rejected receipt on %s: %s", msg.topic[:200], e)
            return
        self._counts["receipts"] += 1
        self._receipts.put(keys)
        self._wake.set()

    # ------------------------------------------------------------------ AlertSink

    def send(self, detection: Detection) -> None:
        """Commit the alert for ``detection`` (with its evidence) to disk and return at once."""
        if self._closed:
            raise OutboxError("uplink is closed")
        evidence, ev_state = self._evidence_of(detection)
        crop = detection.evidence.crop_jpeg if self.cfg.publish_evidence else None
        if crop is not None and len(crop) > self.cfg.evidence_max_mb * 1024 * 1024:
            crop = None
        clip = detection.evidence.clip_data if self.cfg.publish_evidence else None
        if clip is not None and len(clip) > self.cfg.clip_max_mb * 1024 * 1024:
            log.info(
                "clip of %s (%d bytes) is over mqtt.clip_max_mb: it stays on the unit",
                detection.alert_id,
                len(clip),
            )
            clip = None

        def make_payload(seq: int) -> bytes:
            alert = m.build_alert(detection, unit=self.unit_id, seq=seq)
            signed = sign_alert(alert, self._key)
            m.validate(signed, m.ALERT_SCHEMA)
            return m.encode(signed)

        seq = self.outbox.add(
            make_payload,
            evidence=evidence,
            evidence_state=ev_state,
            created_wall_s=detection.t_wall_s,
            seq=detection.seq,
            crop=crop,
            clip=clip,
        )
        self._counts["alerts_committed"] += 1
        log.debug("alert %s committed", m.alert_id(self.unit_id, seq))
        self._wake.set()

    def _evidence_of(self, detection: Detection) -> tuple[bytes | None, str]:
        """The evidence JPEG to send, as the pipeline encoded it, and its outbox state."""
        if not self.cfg.publish_evidence:
            return None, "none"
        data = detection.evidence.frame_jpeg
        if data is None:
            self._counts["evidence_missing"] += 1
            log.warning(
                "alert for %s has no evidence bytes; it goes without them", detection.alert_id
            )
            return None, "missing"
        if len(data) > self.cfg.evidence_max_mb * 1024 * 1024:
            log.warning(
                "evidence of %s is %d bytes, over evidence_max_mb: not sent",
                detection.alert_id,
                len(data),
            )
            return None, "none"
        return data, "pending"

    # ------------------------------------------------------------------ sender thread

    def _sender_main(self) -> None:
        while not self._stop.is_set():
            try:
                self._collect_acks()
                self._collect_receipts()
                if self._connected.is_set():
                    self._resend_due()
                    self._hand_over()
            except (OutboxError, MessageError) as e:
                log.error("uplink sender: %s", e)
                self._stop.wait(1.0)
            except Exception:  # keep sending whatever happens to one message
                log.exception("uplink sender: unexpected error")
                self._stop.wait(1.0)
            self._wake.wait(timeout=self._next_wake_s())
            self._wake.clear()

    def _next_wake_s(self) -> float:
        with self._lock:
            due = min(self._awaiting.values(), default=None)
        if due is None:
            return 0.5
        return max(0.01, min(0.5, due - time.monotonic()))

    def _timeout_s(self, key: Key) -> float:
        tries = max(1, self._attempts.get(key, 1))
        return float(
            min(self.cfg.receipt_timeout_s * 2 ** (tries - 1), self.cfg.receipt_timeout_max_s)
        )

    def _collect_acks(self) -> None:
        """PUBACKs: a part the broker took now waits for the control room's receipt."""
        now = time.monotonic()
        while True:
            try:
                mid, reason = self._acks.get_nowait()
            except queue.Empty:
                break
            with self._lock:
                key = self._inflight.pop(mid, None)
                kind = self._best_effort.pop(mid, None) if key is None else None
            if kind is not None and reason >= 0x80:
                self._counts[f"{kind}_refused"] += 1
                log.warning(
                    "broker refused a %s message (check the ACL allows %s/<unit>/%s)",
                    kind,
                    self.topics.root,
                    "collect/+" if kind == "collect" else kind,
                )
            if key is None:
                continue  # status / heartbeat / crop / snapshot, or a duplicate
            seq, part = key
            if reason >= 0x80:
                self._counts["refused"] += 1
                log.error(
                    "broker refused %s of alert %s (reason %#x); keeping it, sending it "
                    "again in %.0f s",
                    part,
                    m.alert_id(self.unit_id, seq),
                    reason,
                    self._timeout_s(key),
                )
            elif reason == NO_MATCHING_SUBSCRIBERS:
                self._counts["no_subscribers"] += 1
                log.info(
                    "%s of alert %s reached no subscriber (no control room connected); "
                    "sending it again in %.0f s",
                    part,
                    m.alert_id(self.unit_id, seq),
                    self._timeout_s(key),
                )
            with self._lock:
                self._awaiting[key] = now + self._timeout_s(key)

    def _collect_receipts(self) -> None:
        """The control room has committed these parts: now, and only now, forget them."""
        done: list[Key] = []
        while True:
            try:
                done.extend(self._receipts.get_nowait())
            except queue.Empty:
                break
        if not done:
            return
        soon = time.monotonic() + min(1.0, self.cfg.receipt_timeout_s)
        with self._lock:
            for key in done:
                self._awaiting.pop(key, None)
                self._attempts.pop(key, None)
            # The control room is there: what it missed while away goes again soon.
            for key, due in self._awaiting.items():
                if self._attempts.get(key, 1) > 1 and due > soon:
                    self._awaiting[key] = soon
        self.outbox.ack(done)
        self._counts["acked"] += len(done)

    def _resend_due(self) -> None:
        """Parts the control room has not receipted in time go out again."""
        now = time.monotonic()
        with self._lock:
            free = self.cfg.max_inflight - len(self._inflight)
            due = sorted(k for k, t in self._awaiting.items() if t <= now)[: max(0, free)]
        for key in due:
            seq, part = key
            item = self.outbox.get(seq)
            payload = (
                None
                if item is None
                else (
                    item.payload
                    if part == "alert" and not item.alert_acked
                    else item.evidence
                    if part == "evidence"
                    else item.crop
                    if part == "crop"
                    else item.clip
                    if part == "clip"
                    else None
                )
            )
            if item is None or payload is None:  # receipted meanwhile, or pruned by the quota
                with self._lock:
                    self._awaiting.pop(key, None)
                    self._attempts.pop(key, None)
                continue
            topic = (
                self.topics.alert
                if part == "alert"
                else self.topics.crop(item.alert_id)
                if part == "crop"
                else self.topics.clip(item.alert_id)
                if part == "clip"
                else self.topics.evidence(item.alert_id)
            )
            if not self._publish_part(key, topic, payload):
                return
            self._counts["retransmitted"] += 1

    def _publish_part(self, key: Key, topic: str, payload: bytes) -> bool:
        with self._lock:  # hold the lock so a fast PUBACK finds its entry
            info = self._client.publish(topic, payload, qos=1)
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                log.warning(
                    "paho would not take %s of seq %d: %s",
                    key[1],
                    key[0],
                    mqtt.error_string(info.rc),
                )
                return False
            self._awaiting.pop(key, None)
            self._inflight[info.mid] = key
            self._attempts[key] = self._attempts.get(key, 0) + 1
        self._counts["published"] += 1
        return True

    def _hand_over(self) -> None:
        with self._lock:
            free = min(
                self.cfg.max_inflight - len(self._inflight),
                self.cfg.max_unreceipted - len(self._inflight) - len(self._awaiting),
            )
            after = self._handed_upto
        if free <= 0:
            return
        for item in self.outbox.pending(after_seq=after, limit=max(1, free // 2)):
            parts: list[tuple[Part, str, bytes]] = []
            if not item.alert_acked:
                parts.append(("alert", self.topics.alert, item.payload))
            if item.evidence is not None:
                parts.append(("evidence", self.topics.evidence(item.alert_id), item.evidence))
            if item.crop is not None:
                parts.append(("crop", self.topics.crop(item.alert_id), item.crop))
            if item.clip is not None:  # last: the biggest, and best effort
                parts.append(("clip", self.topics.clip(item.alert_id), item.clip))
            for part, topic, payload in parts:
                if not self._publish_part((item.seq, part), topic, payload):
                    return
            with self._lock:
                self._handed_upto = max(self._handed_upto, item.seq)

    def set_status(self, state: str, reason: str | None = None) -> None:
        """The retained status while connected: ``online``, or ``degraded`` with the reason
        (published now if connected, and on every reconnect)."""
        if (state, reason) == self._status:
            return
        self._status = (state, reason)
        if self._connected.is_set() and not self._closed:
            doc = m.build_status(
                self.unit_id, state, t_wall_s=time.time(), software=__version__, reason=reason
            )
            self._client.publish(self.topics.status, m.encode(doc), qos=1, retain=True)

    def publish_heartbeat(self, heartbeat: dict[str, Any]) -> bool:
        """Publish a heartbeat the app built (QoS 0) if connected now; False if dropped."""
        if self._closed or not self._connected.is_set():
            self._counts["heartbeats_dropped"] += 1
            return False
        self._client.publish(self.topics.heartbeat, m.encode(heartbeat), qos=0)
        self._counts["heartbeats"] += 1
        return True

    # ------------------------------------------------------------------ best effort

    def publish_collect(self, name: str, jpeg: bytes) -> bool:
        """Publish one training crop on ``<root>/<unit>/collect/<name>`` (QoS 1, not retained)
        if the broker is connected now; False (and counted as dropped) otherwise."""
        return self._publish_best_effort("collect", self.topics.collect(name), jpeg)

    def publish_snapshot(self, jpeg: bytes, *, request_id: str | None = None) -> bool:
        """Publish a snapshot JPEG on ``<root>/<unit>/snapshot``; False if dropped.

        ``request_id`` (from the snapshot command) goes with it as the MQTT v5 user property
        ``request_id``, so the control room can say which request the picture answers."""
        props = None
        if request_id:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.UserProperty = ("request_id", request_id)
        return self._publish_best_effort("snapshot", self.topics.snapshot, jpeg, props)

    def _publish_best_effort(
        self, kind: str, topic: str, payload: bytes, properties: Properties | None = None
    ) -> bool:
        if self._closed or not self._connected.is_set():
            self._counts[f"{kind}_dropped"] += 1
            return False
        with self._lock:  # hold the lock so a fast PUBACK finds its entry
            if len(self._best_effort) >= _BEST_EFFORT_MAX_INFLIGHT:
                self._counts[f"{kind}_dropped"] += 1
                return False
            info = self._client.publish(topic, payload, qos=1, retain=False, properties=properties)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                # paho keeps a QoS 1 message it could not send and resends it on reconnect;
                # that is fine for a crop that was nearly out, but it counts as not sent now.
                self._counts[f"{kind}_dropped"] += 1
                return False
            self._best_effort[info.mid] = kind
        self._counts[f"{kind}_published"] += 1
        return True

    # ------------------------------------------------------------------ commands thread

    def _command_main(self) -> None:
        while not self._stop.is_set():
            try:
                name, body = self._commands.get(timeout=0.5)
            except queue.Empty:
                continue
            if self._on_command is None:
                log.info("command %s ignored: nobody handles commands", name)
                continue
            try:
                self._on_command(name, body)
            except Exception:
                log.exception("command %s handler failed", name)

    # ------------------------------------------------------------------ state and lifecycle

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def wait_drained(self, timeout_s: float) -> bool:
        """Wait until the outbox is empty (every alert receipted by the control room); False
        on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.outbox.depth() == 0:
                return True
            time.sleep(0.02)
        return self.outbox.depth() == 0

    def drain_progress(self) -> tuple[int, float | None]:
        """Parts the control room has receipted so far, and seconds until the next
        unreceipted part goes again (None when nothing waits for a resend): what a run that
        is ending needs to tell "still arriving" from "nobody there"."""
        now = time.monotonic()
        with self._lock:
            due = min(self._awaiting.values(), default=None)
            acked = self._counts["acked"]
        return acked, None if due is None else max(0.0, due - now)

    def _safe_depth(self) -> int:
        try:
            return self.outbox.depth()
        except OutboxError:
            return -1

    def media_stats(self) -> dict[str, int]:
        """The crop and snapshot counters (``collect_*``, ``snapshot_*``), without touching the
        outbox: what the unit's heartbeat adds from the uplink."""
        return {k: v for k, v in self._counts.items() if k.startswith(("collect_", "snapshot_"))}

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self._counts)
        out["connected"] = self.is_connected
        with self._lock:
            out["inflight"] = len(self._inflight)
            out["awaiting_receipt"] = len(self._awaiting)
        out.update({f"outbox_{k}": v for k, v in self.outbox.stats().items()})
        return out

    def close(self, *, drain_timeout_s: float = 2.0) -> None:
        """Stop: give in-flight messages a moment to be acknowledged, publish ``offline``
        (retained), disconnect, close the outbox. Idempotent. Unsent alerts stay on disk."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            deadline = time.monotonic() + drain_timeout_s
            while self._connected.is_set() and time.monotonic() < deadline:
                with self._lock:
                    if not self._inflight:
                        break
                time.sleep(0.02)
            self._stop.set()
            self._wake.set()
            self._sender.join(timeout=5.0)
            self._commander.join(timeout=5.0)
            self._collect_acks()
            if self._connected.is_set():
                offline = m.build_status(
                    self.unit_id,
                    "offline",
                    t_wall_s=time.time(),
                    software=__version__,
                    reason="stopped",
                )
                info = self._client.publish(
                    self.topics.status, m.encode(offline), qos=1, retain=True
                )
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(timeout=1.0)
            self._client.disconnect()
            self._client.loop_stop()
        self.outbox.close()
        log.info("uplink %s closed", self.unit_id)

    def __enter__(self) -> MqttUplink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _set_tls(client: mqtt.Client, cfg: MqttSinkConfig) -> None:
    configure_client(
        client,
        section="sink",
        ca_file=cfg.ca_file,
        cert_file=cfg.cert_file,
        key_file=cfg.key_file,
        username=cfg.username,
        password=cfg.resolved_password() if cfg.username else None,
    )


def check_broker(cfg: object, *, unit_id: str, timeout_s: float = 5.0) -> tuple[bool, str]:
    """For ``phonewatch check``: can this unit reach and log in to its broker? Connects once
    with the configured TLS / credentials under a separate client id (so a running unit's
    session is left alone) and reports the CONNACK. ``cfg`` is the ``[sink]`` section (any sink
    type is accepted so callers need not narrow the union; only ``mqtt`` can pass)."""
    if not isinstance(cfg, MqttSinkConfig):
        return False, f"sink type {getattr(cfg, 'type', type(cfg).__name__)!r} has no broker"
    result: dict[str, str] = {}
    done = threading.Event()
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"{cfg.client_id or unit_id}-check",
        protocol=mqtt.MQTTv5,
    )

    def on_connect(c: mqtt.Client, u: Any, f: Any, rc: ReasonCode, p: Any) -> None:
        result["rc"] = str(rc)
        result["ok"] = "" if rc.is_failure else "yes"
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *a: done.set()
    where = f"{cfg.host}:{cfg.port} ({'TLS' if cfg.uses_tls else 'plain'})"
    try:
        _set_tls(client, cfg)
        client.connect(cfg.host, cfg.port, keepalive=max(5, int(timeout_s)))
    except (OSError, ValueError) as e:
        return False, f"{where}: cannot connect: {e}"
    client.loop_start()
    try:
        if not done.wait(timeout_s):
            return False, f"{where}: no CONNACK within {timeout_s:.0f} s"
        if result.get("ok"):
            return True, f"{where}: connected as {unit_id}"
        return False, f"{where}: refused: {result.get('rc', 'connection closed')}"
    finally:
        client.loop_stop()
        client.disconnect()
