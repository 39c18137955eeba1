"""Control-room configuration (TOML): database, broker, web server, retention, privacy, models.

Strict like the unit's config: unknown keys are errors that name the key. Relative paths are
resolved against the config file's folder.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, model_validator

from edge.common.config import StrictModel as _Strict
from edge.common.config import (
    Table,
    format_errors,
    resolve_path_list,
    resolve_paths,
)
from edge.core.errors import ConfigError


class DatabaseConfig(_Strict):
    url: str = Field(
        "sqlite:///controlroom.sqlite",
        description="SQLAlchemy URL: sqlite:///path (default, a file) or "
        "postgresql+psycopg://user:pass@host:port/db.",
        min_length=9,
        max_length=1024,
    )


class MqttConfig(_Strict):
    host: str = Field("localhost", description="Broker host.", min_length=1, max_length=253)
    port: int = Field(1883, description="Broker TCP port (8883 for TLS).", ge=1, le=65535)
    topic_root: str = Field(
        "phonewatch",
        description="First topic level, as on the units.",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$",
    )
    share_group: str = Field(
        "controlroom",
        description="MQTT 5 shared-subscription group: receivers in one group "
        "split the alerts between them.",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
    )
    client_id: str = Field(
        "controlroom-1",
        description="MQTT client id of this receiver (unique per receiver; it "
        "keys the persistent session).",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_-]+$",
    )
    session_expiry_s: int = Field(
        7 * 24 * 3600,
        description="How long the broker queues alerts for this receiver while it is down.",
        ge=0,
        le=30 * 24 * 3600,
    )
    keepalive_s: int = Field(30, description="MQTT keepalive.", ge=5, le=3600)
    ca_file: Path | None = Field(None, description="CA certificate (PEM); turns TLS on.")
    cert_file: Path | None = Field(None, description="Client certificate (CN controlroom).")
    key_file: Path | None = Field(None, description="Client certificate key.")
    username: str | None = Field(
        None, description="Username (password brokers).", min_length=1, max_length=128
    )
    password: SecretStr | None = Field(None, description="Password for username.", max_length=256)
    alert_max_bytes: int = Field(
        16 * 1024, description="Alerts larger than this are rejected.", ge=1024, le=1 << 20
    )
    evidence_max_bytes: int = Field(
        8 * 1024 * 1024,
        description="Evidence JPEGs larger than this are rejected.",
        ge=1024,
        le=64 * 1024 * 1024,
    )
    clip_max_mb: int = Field(
        8,
        description="Evidence video clips (WebM or AVI) larger than this many megabytes are "
        "rejected; keep it below the broker's max_packet_size (16 MiB in deploy/mosquitto).",
        ge=1,
        le=16,
    )
    snapshot_max_bytes: int = Field(
        2 * 1024 * 1024,
        description="Snapshot JPEGs (a unit's "
        "answer to the snapshot command) larger than this are "
        "rejected.",
        ge=1024,
        le=64 * 1024 * 1024,
    )
    batch_max: int = Field(
        500, description="Most messages stored in one database transaction.", ge=1, le=10000
    )
    queue_max: int = Field(
        20000,
        description="Messages received and not yet stored; the "
        "receiver stops reading from the broker while it is full.",
        ge=10,
        le=1_000_000,
    )

    # Memory and storage bounds for large messages (issue 17): bytes, not only message counts.
    queue_max_mb: int = Field(
        256,
        description="Megabytes of messages received and not yet "
        "stored (payload and topic); the receiver stops reading from the "
        "broker while they are held. A single larger message is still "
        "taken when nothing else is held.",
        ge=1,
        le=65536,
    )
    orphan_evidence_max_count: int = Field(
        200,
        description="Most evidence JPEGs stored per "
        "unit whose alert has not arrived; beyond it the "
        "oldest are deleted (counted, logged).",
        ge=1,
        le=1_000_000,
    )
    orphan_evidence_max_mb: int = Field(
        256,
        description="Most megabytes of such evidence per unit; beyond it the oldest are deleted.",
        ge=1,
        le=1 << 20,
    )


class WebConfig(_Strict):
    host: str = Field("127.0.0.1", description="Address the dashboard listens on.")
    port: int = Field(8080, description="Dashboard TCP port (0: any free port).", ge=0, le=65535)
    secret_key_file: Path = Field(
        Path("controlroom.secret"),
        description="Signs session cookies; created (mode 0600) if missing.",
    )
    session_max_age_s: int = Field(
        12 * 3600, description="Log-in lifetime.", ge=60, le=30 * 24 * 3600
    )
    https_only: bool = Field(False, description="Mark the session cookie Secure (behind TLS).")
    tile_url: str = Field(
        "",
        description="Leaflet tile URL template, e.g. "
        "https://tile.example/{z}/{x}/{y}.png; empty: no tiles (the marker and "
        "the coordinate readout still work).",
        max_length=512,
    )
    tile_attribution: str = Field(
        "", description="Attribution shown for the tiles.", max_length=256
    )
    live_poll_s: float = Field(
        0.25, description="How often the live list checks for new alerts.", gt=0, le=5
    )
    page_size: int = Field(100, description="Alerts per list page.", ge=10, le=1000)
    login_max_failures: int = Field(
        5,
        description="Failed log-ins for one user name within "
        "login_window_s after which further attempts for that name "
        "are refused until the window has passed.",
        ge=1,
        le=1000,
    )
    login_max_failures_per_ip: int = Field(
        20,
        description="The same, per client address "
        "(higher: a control room often shares one address).",
        ge=1,
        le=10000,
    )
    login_window_s: float = Field(300.0, description="The failed log-in window.", ge=10, le=86400)
    offline_after_s: float = Field(
        180.0,
        description="A unit whose last heartbeat is older "
        "than this shows as offline, whatever its status says.",
        gt=0,
        le=86400,
    )


class RetentionConfig(_Strict):
    rejected_evidence_s: float = Field(
        3600.0,
        description="Evidence of a rejected alert is deleted this long after the review.",
        ge=0,
    )
    confirmed_days: float = Field(
        365.0,
        description="A confirmed alert (with its evidence) is kept this long after the review.",
        gt=0,
    )
    unreviewed_days: float = Field(
        30.0, description="An alert nobody reviewed is purged after this long.", gt=0
    )
    orphan_evidence_s: float = Field(
        24 * 3600.0,
        description="Evidence whose alert never arrived is deleted after this long.",
        gt=0,
    )
    label_crops_days: float = Field(
        30.0,
        description="Labelling crops that are not evidence of an offence (collected, sampled "
        "and calibration crops, rejected alerts' crops) are deleted this long after they "
        "arrived, labelled or not, unless a dataset version holds them.",
        gt=0,
    )
    sweep_interval_s: float = Field(60.0, description="How often retention runs.", gt=0)


class PrivacyConfig(_Strict):
    blur: Literal["outside_roi", "off"] = Field(
        "outside_roi",
        description="What the dashboard shows of an evidence frame: 'outside_roi' blurs all "
        "but the driver's region (alerts without a region box: the whole frame); 'off' shows "
        "the original to every user.",
    )
    original_viewers: list[str] = Field(
        default_factory=list,
        description="Users who may open the unblurred original and export the court bundle "
        "(every view and export is audited); with blur on, nobody else can.",
    )

    def may_see_original(self, user: str) -> bool:
        return self.blur == "off" or user in self.original_viewers


class ModelsConfig(_Strict):
    """Who may offer signed model packages from the dashboard, and the keys it checks them by
    (docs/rollout.md). The CLI (``controlroom model offer``) is not limited by these."""

    offer_users: list[str] = Field(
        default_factory=list,
        description="Users who may offer a signed model package to a unit, and promote its "
        "shadow model, from the unit's page (every offer and every refused attempt is "
        "audited); everyone else sees the Model section read-only.",
    )
    trusted_keys: list[Path] = Field(
        default_factory=list,
        description="PEM public key(s) of the control room's model-signing key "
        "('controlroom model-key generate' writes controlroom-model.sign.pub): the dashboard "
        "refuses a package whose signature does not verify with one of them. Empty: the "
        "dashboard offers no package.",
        max_length=8,
    )

    @classmethod
    def resolve_extra_paths(cls, table: Table, base: Path) -> None:
        resolve_path_list(table, "trusted_keys", base)

    def may_offer(self, user: str) -> bool:
        return user in self.offer_users


class Config(_Strict):
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)

    @model_validator(mode="after")
    def _tls_pairs(self) -> Config:
        m = self.mqtt
        if (m.cert_file is None) != (m.key_file is None):
            raise ValueError("mqtt.cert_file and mqtt.key_file go together")
        if m.cert_file is not None and m.ca_file is None:
            raise ValueError("mqtt.cert_file needs mqtt.ca_file")
        return self


def _defaults(data: Table, base: Path) -> Table:
    """The defaults that live beside the config file: the cookie secret and the SQLite file
    (a relative SQLite path in the URL is relative to the file's folder too)."""
    out = resolve_paths(Config, data, base)
    web = out.setdefault("web", {})
    if isinstance(web, dict) and "secret_key_file" not in web:
        web["secret_key_file"] = str(base / "controlroom.secret")
    db = out.setdefault("database", {})
    if isinstance(db, dict):
        url = db.get("url", "sqlite:///controlroom.sqlite")
        if (
            isinstance(url, str)
            and url.startswith("sqlite:///")
            and not url.startswith("sqlite:////")
            and url != "sqlite:///:memory:"
        ):
            db["url"] = "sqlite:///" + str(base / url[len("sqlite:///") :])
    return out


def parse_config(data: Table, *, base_dir: Path, source: str = "control-room config") -> Config:
    try:
        return Config.model_validate(_defaults(data, base_dir))
    except ValidationError as e:
        raise ConfigError(format_errors(e, source, Config)) from None


def load_config(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read control-room config {path}: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_config(data, base_dir=path.resolve().parent, source=str(path))
