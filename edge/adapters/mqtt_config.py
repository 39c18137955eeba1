"""Alert uplink configuration (``[sink]`` with ``type = "mqtt"``), beside the uplink.

Paths left empty default to files under ``unit.data_dir`` (decided in one place:
:class:`edge.app.compose.Paths`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from edge.common.config import StrictModel
from edge.core.errors import ConfigError


class MqttSinkConfig(StrictModel):
    type: Literal["mqtt"] = Field(description="Send alerts over MQTT through the durable outbox.")
    host: str = Field(
        "localhost", description="Broker host name or address.", min_length=1, max_length=253
    )
    port: int = Field(1883, description="Broker TCP port (8883 is usual for TLS).", ge=1, le=65535)
    topic_root: str = Field(
        "phonewatch",
        description="First topic level: <root>/<unit>/alert ...",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$",
    )
    client_id: str | None = Field(
        None,
        description="MQTT client id; default: the unit id (it keys the persistent session).",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
    )
    ca_file: Path | None = Field(
        None,
        description="CA certificate (PEM) that signed the broker's certificate; "
        "setting it turns TLS on.",
    )
    cert_file: Path | None = Field(
        None,
        description="This unit's client certificate (PEM); its CN must be the unit id.",
    )
    key_file: Path | None = Field(None, description="The client certificate's private key (PEM).")
    username: str | None = Field(
        None,
        description="Username when the broker uses passwords instead of certificates.",
        min_length=1,
        max_length=128,
    )
    password: SecretStr | None = Field(
        None,
        description="Password for 'username' (prefer password_file).",
        max_length=256,
    )
    password_file: Path | None = Field(
        None,
        description="File whose first line is the password for 'username'.",
    )
    keepalive_s: int = Field(
        30,
        description="MQTT keepalive; the broker publishes the Last Will after 1.5x this.",
        ge=5,
        le=3600,
    )
    reconnect_min_s: float = Field(
        1.0,
        description="First wait before reconnecting to the broker.",
        gt=0,
        le=60,
    )
    reconnect_max_s: float = Field(
        30.0,
        description="Longest wait between reconnect attempts (backoff doubles).",
        gt=0,
        le=600,
    )
    session_expiry_s: int = Field(
        7 * 24 * 3600,
        description="How long the broker keeps this unit's session (and queued "
        "commands) while it is away.",
        ge=0,
        le=30 * 24 * 3600,
    )
    max_inflight: int = Field(
        16,
        description="Messages sent and awaiting PUBACK at once.",
        ge=1,
        le=1000,
    )
    outbox_path: Path | None = Field(
        None,
        description="SQLite outbox file; default <unit.data_dir>/outbox.sqlite.",
    )
    outbox_quota_mb: float = Field(
        512.0,
        description="Disk quota of the outbox; evidence is pruned first, then the "
        "oldest alerts, each logged and counted.",
        ge=1,
        le=1e6,
    )
    outbox_fsync: bool = Field(
        True,
        description="fsync every committed alert (power-loss safe). Only turn off for tests.",
    )
    signing_key: Path | None = Field(
        None,
        description="Ed25519 private key (PEM) that signs alerts; default "
        "<unit.data_dir>/keys/<unit>.key ('phonewatch keys generate --unit ID').",
    )
    signing_key_autogenerate: bool = Field(
        False,
        description="Generate the signing key on first start if it is missing "
        "(demo and bench only; a fleet unit's key is provisioned).",
    )
    publish_evidence: bool = Field(
        True,
        description="Publish the evidence JPEG on <root>/<unit>/evidence/<alert_id>.",
    )
    evidence_max_mb: float = Field(
        8.0,
        description="Evidence images larger than this are not sent (the alert still is).",
        gt=0,
        le=256,
    )
    clip_max_mb: float = Field(
        4.0,
        description="Clips larger than this stay on the unit (0: no clip is sent). A clip goes "
        "on <root>/<unit>/clip/<alert_id> after the alert, frame and crop, best effort.",
        ge=0,
        le=64,
    )
    heartbeat_interval_s: float = Field(
        30.0,
        description="Seconds between heartbeats (QoS 0).",
        ge=1,
        le=3600,
    )
    receipt_timeout_s: float = Field(
        30.0,
        description="An alert or evidence image the control room has not receipted this "
        "long after it was sent is sent again (the wait doubles on each try).",
        gt=0,
        le=3600,
    )
    receipt_timeout_max_s: float = Field(
        600.0,
        description="Longest wait between two sends of one unreceipted alert.",
        gt=0,
        le=86400,
    )
    max_unreceipted: int = Field(
        1000,
        description="Alerts sent and awaiting the control room's receipt at once; newer "
        "ones wait in the outbox (bounds the duplicates a control-room outage can cause).",
        ge=1,
        le=100_000,
    )
    command_max_bytes: int = Field(
        4096,
        description="Commands larger than this are rejected unread.",
        ge=64,
        le=1 << 20,
    )

    @model_validator(mode="after")
    def _check(self) -> MqttSinkConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file, or neither")
        if self.cert_file is not None and self.ca_file is None:
            raise ValueError("a client certificate needs ca_file (TLS)")
        if (self.password is not None or self.password_file is not None) and not self.username:
            raise ValueError("a password needs a username")
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        if self.receipt_timeout_s > self.receipt_timeout_max_s:
            raise ValueError("receipt_timeout_s must not exceed receipt_timeout_max_s")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.ca_file is not None

    def resolved_password(self) -> str | None:
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is not None:
            try:
                return self.password_file.read_text(encoding="utf-8").splitlines()[0].strip()
            except (OSError, IndexError) as e:
                raise ConfigError(
                    f"sink.password_file: cannot read {self.password_file}: {e}"
                ) from None
        return None
