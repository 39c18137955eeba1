"""Control-room storage: SQLAlchemy 2 Core on SQLite (default, a file) or PostgreSQL (psycopg 3).

Schema changes are versioned migrations (:data:`MIGRATIONS`), applied in order by
:func:`migrate` and recorded in ``schema_version``; every process calls it at start and it is a
no-op when the database is current.

Each alert is stored once: ``alerts`` is unique on ``(unit, seq)`` and rows are inserted with
``ON CONFLICT DO NOTHING ... RETURNING``, so QoS 1 duplicates and several receivers sharing the
load never make a second row. Purging (retention) keeps a content-free tombstone with the
``(unit, seq)`` so an old alert replayed later is still recognised and dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from controlroom.errors import ControlRoomError

log = logging.getLogger(__name__)

metadata = sa.MetaData()

schema_version = sa.Table(
    "schema_version",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("applied_at", sa.Float, nullable=False),
)

units = sa.Table(
    "units",
    metadata,
    sa.Column("unit_id", sa.String(64), primary_key=True),
    sa.Column("public_key", sa.String(64), nullable=False),  # base64 of the raw 32 bytes
    sa.Column("key_id", sa.String(16), nullable=False),
    sa.Column("added_at", sa.Float, nullable=False),
    sa.Column("status_state", sa.String(16)),
    sa.Column("status_time", sa.String(40)),
    sa.Column("status_reason", sa.String(256)),
    sa.Column("software", sa.String(64)),
    sa.Column("status_received_at", sa.Float),
    sa.Column("heartbeat", sa.Text),  # the last heartbeat JSON
    sa.Column("heartbeat_received_at", sa.Float),
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("unit", sa.String(64), nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("alert_id", sa.String(90), nullable=False, unique=True),
    sa.Column("time", sa.String(40)),
    sa.Column("time_s", sa.Float),
    sa.Column("time_source", sa.String(16)),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("score", sa.Float),
    sa.Column("roi", sa.String(32)),
    sa.Column("model", sa.String(200)),
    sa.Column("lat", sa.Float),
    sa.Column("lon", sa.Float),
    sa.Column("fix_mode", sa.String(8)),
    sa.Column("fix_age_s", sa.Float),
    sa.Column("frame_sha256", sa.String(64)),
    sa.Column("frame_bytes", sa.Integer),
    sa.Column("payload", sa.Text),  # the alert exactly as received (canonical JSON)
    sa.Column("payload_sha256", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, server_default="new"),
    sa.Column("reviewed_by", sa.String(64)),
    sa.Column("reviewed_at", sa.Float),
    sa.Column("review_note", sa.Text),
    sa.Column("evidence_deleted_at", sa.Float),
    sa.Column("purged_at", sa.Float),
    # Migration 11: which camera saw it and the tracked vehicle, from the signed alert's
    # optional ``camera`` and ``vehicle`` (None for single-camera, fixed-ROI units).
    sa.Column("camera", sa.String(32)),
    sa.Column("vehicle_track_id", sa.BigInteger),
    sa.Column("vehicle_label", sa.String(32)),
    sa.Column("vehicle_box", sa.String(64)),  # "x,y,w,h" in the evidence frame's pixels
    sa.Column("vehicle_frames", sa.Integer),
    sa.UniqueConstraint("unit", "seq", name="uq_alerts_unit_seq"),
    sa.Index("ix_alerts_received", "received_at"),
    sa.Index("ix_alerts_status", "status", "received_at"),
    sa.Index("ix_alerts_camera", "camera", "unit"),
)

ALERT_V11_COLUMNS = (
    "camera",
    "vehicle_track_id",
    "vehicle_label",
    "vehicle_box",
    "vehicle_frames",
)
"""The alert columns migration 11 added."""


def _image_table(name: str, unique: str, *extra: sa.Index) -> sa.Table:
    """A JPEG that belongs to an alert (by ``alert_id``), stored once per content."""
    return sa.Table(
        name,
        metadata,
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("alert_id", sa.String(90), nullable=False),
        sa.Column("unit", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("jpeg", sa.LargeBinary, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.UniqueConstraint("alert_id", "sha256", name=unique),
        *extra,
    )


evidence = _image_table(
    "evidence",
    "uq_evidence_alert_sha",
    sa.Index("ix_evidence_unit_received", "unit", "received_at"),  # the orphan cap, migration 6
)

crops = _image_table("crops", "uq_crops_alert_sha")
"""The driver-window crop of an alert (its SHA-256 and size are in the signed alert): what the
reviewer looks at first, and a labelled example once the alert is reviewed (migration 7)."""

clips = _image_table(
    "clips",
    "uq_clips_alert_sha",
    sa.Index("ix_clips_unit_received", "unit", "received_at"),  # the orphan cap
)
"""The short video clip of an alert (WebM VP8, or Motion-JPEG AVI from an older unit; its
SHA-256, size and type are in the signed alert), migration 10. The ``jpeg`` column holds the
clip's bytes: the table shares :func:`_image_table`'s shape so ingest stores it like a crop."""

users = sa.Table(
    "users",
    metadata,
    sa.Column("username", sa.String(64), primary_key=True),
    sa.Column("password_hash", sa.String(256), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("target", sa.String(128)),
    sa.Column("detail", sa.Text),
    sa.Column("remote", sa.String(64)),
    sa.Index("ix_audit_at", "at"),
)

labels = sa.Table(
    "labels",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("unit", sa.String(64), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("jpeg", sa.LargeBinary, nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("label", sa.String(16)),  # None (queued), "phone", "no_phone", "skip"
    sa.Column("labelled_by", sa.String(64)),
    sa.Column("labelled_at", sa.Float),
    # Provenance (migration 8). source "collect": a crop the unit sent after a collect
    # command, labelled by hand on /labels (roi and time are in its name). source "review":
    # an alert's crop, labelled by its review (confirmed = phone, rejected = no_phone), with
    # the signed alert's roi, time and model, and the review as labelled_by / labelled_at.
    sa.Column("source", sa.String(16), nullable=False, server_default="collect"),
    sa.Column("alert_id", sa.String(90)),
    sa.Column("roi", sa.String(32)),
    sa.Column("taken_at", sa.Float),
    sa.Column("model_name", sa.String(128)),
    sa.Column("model_version", sa.String(64)),
    sa.Column("score", sa.Float),
    sa.UniqueConstraint("unit", "sha256", name="uq_labels_unit_sha"),
    sa.Index("ix_labels_alert", "alert_id"),
)

snapshots = sa.Table(
    "snapshots",
    metadata,  # the newest snapshot JPEG of each unit (answer to cmd/snapshot)
    sa.Column("unit", sa.String(64), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size_bytes", sa.Integer, nullable=False),
    sa.Column("jpeg", sa.LargeBinary, nullable=False),
    sa.Column("received_at", sa.Float, nullable=False),
    sa.Column("request_id", sa.String(64)),  # the snapshot command it answers, if the unit said
)

web_sessions = sa.Table(
    "web_sessions",
    metadata,  # dashboard log-ins (controlroom/users.py); a row per session
    sa.Column("sid_sha256", sa.String(64), primary_key=True),  # SHA-256 of the cookie's id
    sa.Column("username", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("remote", sa.String(64)),
    sa.Index("ix_web_sessions_username", "username"),
)

# -- datasets (migration 8; controlroom/datasets.py) -------------------------------------------

datasets = sa.Table(
    "datasets",
    metadata,  # one immutable, content-addressed dataset version per row
    sa.Column("id", sa.String(64), primary_key=True),  # SHA-256 of its (sha256, label, split)
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String(64), nullable=False),
    sa.Column("note", sa.Text),
    sa.Column("examples", sa.Integer, nullable=False),
    sa.Column("manifest", sa.Text, nullable=False),  # MANIFEST.json as exported
)

dataset_examples = sa.Table(
    "dataset_examples",
    metadata,  # the rows of each version, provenance as it was then
    sa.Column("dataset_id", sa.String(64), primary_key=True),
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("label", sa.String(16), nullable=False),
    sa.Column("split", sa.String(16), nullable=False),
    sa.Column("unit", sa.String(64), nullable=False),
    sa.Column("day", sa.String(10), nullable=False),
    sa.Column("roi", sa.String(32)),
    sa.Column("taken_at", sa.Float),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("alert_id", sa.String(90)),
    sa.Column("labelled_by", sa.String(64)),
    sa.Column("labelled_at", sa.Float),
    sa.Column("model_name", sa.String(128)),
    sa.Column("model_version", sa.String(64)),
    sa.Column("score", sa.Float),
)

example_blobs = sa.Table(
    "example_blobs",
    metadata,  # each example's JPEG once, by SHA-256; never changed
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("jpeg", sa.LargeBinary, nullable=False),
    sa.Column("stored_at", sa.Float, nullable=False),
)

# -- model rollout (migration 9; controlroom/rollout.py) ---------------------------------------

model_packages = sa.Table(
    "model_packages",
    metadata,  # each signed package offered to a unit, once, by the SHA-256 of its bytes
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("key_id", sa.String(16), nullable=False),
    sa.Column("size_bytes", sa.Integer, nullable=False),
    sa.Column("stored_at", sa.Float, nullable=False),
    sa.Column("blob", sa.LargeBinary, nullable=False),  # kept so a receiver can resend chunks
)

rollouts = sa.Table(
    "rollouts",
    metadata,  # one package offered to one unit: its latest state as the unit reported it
    sa.Column("unit", sa.String(64), primary_key=True),
    sa.Column("package_sha256", sa.String(64), primary_key=True),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("mode", sa.String(8), nullable=False),
    sa.Column("chunk_size", sa.Integer, nullable=False),
    sa.Column("chunk_count", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # offered, or the unit's last event
    sa.Column("detail", sa.Text),
    sa.Column("have", sa.Integer),
    sa.Column("chunks_resent", sa.Integer, nullable=False, server_default="0"),
    sa.Column("offered_by", sa.String(64), nullable=False),
    sa.Column("offered_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Index("ix_rollouts_updated", "unit", "updated_at"),
)


def _v1(conn: Connection) -> None:
    for t in (units, alerts, evidence, users, audit):
        t.create(conn, checkfirst=True)


def _v2(conn: Connection) -> None:
    labels.create(conn, checkfirst=True)


def _v3(conn: Connection) -> None:
    snapshots.create(conn, checkfirst=True)


def _v4(conn: Connection) -> None:
    # A database made at version 3 has the table without the column; one made from scratch
    # got it from the current table definition in _v3.
    if "request_id" not in {c["name"] for c in sa.inspect(conn).get_columns("snapshots")}:
        conn.execute(sa.text("ALTER TABLE snapshots ADD COLUMN request_id VARCHAR(64)"))


def _v5(conn: Connection) -> None:
    web_sessions.create(conn, checkfirst=True)


def _v6(conn: Connection) -> None:
    # Made by _v1 already on a database created from the current table definition.
    next(ix for ix in evidence.indexes if ix.name == "ix_evidence_unit_received").create(
        conn, checkfirst=True
    )


def _v7(conn: Connection) -> None:
    crops.create(conn, checkfirst=True)


def _v8(conn: Connection) -> None:
    # A database made before version 8 has labels without the provenance columns; one made
    # from scratch got them (and the index) from the current table definition in _v2.
    have = {c["name"] for c in sa.inspect(conn).get_columns("labels")}
    for col in labels.columns:
        if col.name not in have:
            default = " NOT NULL DEFAULT 'collect'" if col.name == "source" else ""
            ddl = col.type.compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE labels ADD COLUMN {col.name} {ddl}{default}"))
    next(ix for ix in labels.indexes if ix.name == "ix_labels_alert").create(conn, checkfirst=True)
    for t in (datasets, dataset_examples, example_blobs):
        t.create(conn, checkfirst=True)


def _v9(conn: Connection) -> None:
    for t in (model_packages, rollouts):
        t.create(conn, checkfirst=True)


def _v10(conn: Connection) -> None:
    clips.create(conn, checkfirst=True)


def _v11(conn: Connection) -> None:
    # A database made before version 11 has alerts without the camera and vehicle columns;
    # one made from scratch got them (and the index) from the current table in _v1. Older
    # alerts carry neither field, so there is nothing to fill in.
    have = {c["name"] for c in sa.inspect(conn).get_columns("alerts")}
    for name in ALERT_V11_COLUMNS:
        if name not in have:
            ddl = alerts.c[name].type.compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE alerts ADD COLUMN {name} {ddl}"))
    next(ix for ix in alerts.indexes if ix.name == "ix_alerts_camera").create(conn, checkfirst=True)


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "units, alerts, evidence, users, audit", _v1),
    (2, "labelling queue", _v2),
    (3, "newest snapshot per unit", _v3),
    (4, "snapshot request id", _v4),
    (5, "dashboard sessions", _v5),
    (6, "evidence index by unit (orphan evidence cap)", _v6),
    (7, "driver-window crops", _v7),
    (8, "labelled examples with provenance; dataset versions", _v8),
    (9, "model packages and rollouts", _v9),
    (10, "alert video clips", _v10),
    (11, "camera id and tracked vehicle on alerts", _v11),
]
LATEST_VERSION = MIGRATIONS[-1][0]


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and FULL sync (a commit is on
    disk before the receiver acknowledges the alert to the broker)."""
    try:
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": 30})

            @sa.event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _rec: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.close()

            return engine
        return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
    except (sa.exc.ArgumentError, ImportError) as e:
        raise ControlRoomError(f"database.url: {e}") from None


def current_version(conn: Connection) -> int:
    if not sa.inspect(conn).has_table("schema_version"):
        return 0
    return int(conn.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0)


def migrate(engine: Engine, *, target: int | None = None, attempts: int = 3) -> int:
    """Apply pending migrations in order, each in its own transaction; returns the version.
    Processes starting together may race on SQLite (PostgreSQL takes an advisory lock): the
    loser sees "already exists" and tries again, by then finding the work done."""
    for attempt in range(attempts):
        try:
            return _migrate(engine, LATEST_VERSION if target is None else target)
        except ControlRoomError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def _migrate(engine: Engine, target: int) -> int:
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(727274)"))
            schema_version.create(conn, checkfirst=True)
        for version, what, fn in MIGRATIONS:
            if version > target:
                break
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(727274)"))
                if current_version(conn) >= version:
                    continue
                fn(conn)
                conn.execute(
                    _insert_ignore(conn, schema_version, ["version"]),
                    [{"version": version, "applied_at": time.time()}],
                )
                log.info("database migrated to version %d (%s)", version, what)
        with engine.connect() as conn:
            return current_version(conn)
    except sa.exc.OperationalError as e:
        raise ControlRoomError(f"database {engine.url.render_as_string()}: {e.orig or e}") from None


def _insert_ignore(conn: Connection, table: sa.Table, keys: Sequence[str]) -> Any:
    dialect = conn.dialect.name
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(keys))
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(keys))
    raise ControlRoomError(f"unsupported database {dialect!r}: use SQLite or PostgreSQL")


def insert_ignore_returning(
    conn: Connection,
    table: sa.Table,
    keys: Sequence[str],
    rows: list[dict[str, Any]],
    returning: sa.Column[Any],
) -> set[Any]:
    """Insert ``rows``, skipping those that clash on ``keys``; the ``returning`` values of
    the rows that were actually inserted."""
    if not rows:
        return set()
    stmt = _insert_ignore(conn, table, keys).returning(returning)
    return {r[0] for r in conn.execute(stmt, rows)}


def upsert_snapshots(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Keep the newest snapshot of each unit: insert, or replace an older one."""
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise ControlRoomError(f"unsupported database {dialect!r}: use SQLite or PostgreSQL")
    ins = sqlite.insert(snapshots) if dialect == "sqlite" else postgresql.insert(snapshots)
    stmt = ins.on_conflict_do_update(
        index_elements=["unit"],
        set_={
            c: ins.excluded[c]
            for c in ("sha256", "size_bytes", "jpeg", "received_at", "request_id")
        },
        where=ins.excluded.received_at >= snapshots.c.received_at,
    )
    conn.execute(stmt, rows)


def cap_orphan_evidence(
    conn: Connection,
    unit: str,
    *,
    max_count: int,
    max_bytes: int,
    table: sa.Table = evidence,
) -> tuple[int, int]:
    """Delete ``unit``'s oldest evidence (or rows of another :func:`_image_table`, such as
    ``clips``) whose alert is not stored (orphans) beyond the newest ``max_count`` rows and
    ``max_bytes`` bytes; returns (rows, bytes) deleted. The delete checks again that no alert
    arrived meanwhile (another receiver may have just stored it)."""
    known = sa.select(alerts.c.alert_id).where(alerts.c.alert_id == table.c.alert_id).exists()
    rows = conn.execute(
        sa.select(table.c.id, sa.func.length(table.c.jpeg))
        .where(table.c.unit == unit, ~known)
        .order_by(table.c.received_at.desc(), table.c.id.desc())
    ).all()
    kept = kept_bytes = 0
    drop: list[int] = []
    for row_id, size in rows:
        size = int(size or 0)
        if not drop and kept < max_count and kept_bytes + size <= max_bytes:
            kept += 1
            kept_bytes += size
        else:  # this one and every older one
            drop.append(row_id)
    deleted = deleted_bytes = 0
    for chunk in chunks(drop, 500):
        for (size,) in conn.execute(
            table.delete()
            .where(table.c.id.in_(chunk), ~known)
            .returning(sa.func.length(table.c.jpeg))
        ):
            deleted += 1
            deleted_bytes += int(size or 0)
    return deleted, deleted_bytes


@dataclass(frozen=True)
class UnitKey:
    unit_id: str
    public_key: str
    key_id: str


def unit_keys(engine: Engine) -> dict[str, UnitKey]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(units.c.unit_id, units.c.public_key, units.c.key_id))
        return {r.unit_id: UnitKey(r.unit_id, r.public_key, r.key_id) for r in rows}


def unit_known(conn: Connection, unit_id: str) -> bool:
    """Whether ``unit_id`` is registered (``controlroom add-unit``)."""
    q = sa.select(units.c.unit_id).where(units.c.unit_id == unit_id)
    return conn.execute(q).first() is not None


def upsert_unit(engine: Engine, unit_id: str, public_key_b64: str, key_id: str) -> bool:
    """Register a unit or replace its key; True when it was new."""
    with engine.begin() as conn:
        exists = (
            conn.execute(sa.select(units.c.unit_id).where(units.c.unit_id == unit_id)).first()
            is not None
        )
        if exists:
            conn.execute(
                units.update()
                .where(units.c.unit_id == unit_id)
                .values(public_key=public_key_b64, key_id=key_id)
            )
        else:
            conn.execute(
                units.insert().values(
                    unit_id=unit_id, public_key=public_key_b64, key_id=key_id, added_at=time.time()
                )
            )
        return not exists


def record_audit(
    conn: Connection,
    *,
    username: str,
    action: str,
    target: str | None = None,
    detail: str | None = None,
    remote: str | None = None,
) -> None:
    conn.execute(
        audit.insert().values(
            at=time.time(),
            username=username,
            action=action,
            target=target,
            detail=detail,
            remote=remote,
        )
    )


def chunks(items: Sequence[Any], n: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
