"""The same storage on a real PostgreSQL (initdb + pg_ctl in a temp dir, psycopg 3): versioned
migrations, alerts stored once through a real receiver, rejects, review and retention."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controlroom import db, retention, users
from controlroom.config import RetentionConfig
from controlroom.ingest import Ingest, Message
from controlroom.receiver import Receiver
from edge.app.local_broker import LocalBroker
from edge.common.signing import generate_key
from tests.controlroom.conftest import Publisher, Unit, mqtt_cfg, pg_database, raw_pub_b64
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Engine]:
    """A fresh schema per test: a new database in the session's cluster."""
    with pg_database(postgres_url) as url:
        engine = db.make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def test_migrations_on_postgres(pg: Engine) -> None:
    assert db.migrate(pg, target=1) == 1
    assert "labels" not in sa.inspect(pg).get_table_names()
    assert db.migrate(pg) == db.LATEST_VERSION
    assert db.migrate(pg) == db.LATEST_VERSION
    assert {"alerts", "evidence", "units", "users", "audit", "labels", "schema_version"} <= set(
        sa.inspect(pg).get_table_names()
    )


def test_receiver_stores_once_on_postgres(
    pg: Engine, broker: LocalBroker, publisher: Publisher
) -> None:
    db.migrate(pg)
    unit = Unit("unit-pg", generate_key())
    db.upsert_unit(pg, unit.unit_id, raw_pub_b64(unit.key), "0" * 16)
    r = Receiver(mqtt_cfg(broker), pg).start()
    try:
        assert r.wait_ready(10)
        sent = [unit.alert() for _ in range(50)]
        for payload, jpeg in sent + sent[:10]:  # ten redelivered
            aid = json.loads(payload)["alert_id"]
            publisher.publish("phonewatch/unit-pg/alert", payload, wait=False)
            publisher.publish(f"phonewatch/unit-pg/evidence/{aid}", jpeg, wait=False)
        forged = Unit("unit-pg", generate_key()).alert(seq=99)[0]
        publisher.publish("phonewatch/unit-pg/alert", forged)
        assert wait_until(
            lambda: r.stats().get("evidence_stored") == 50 and r.stats().get("duplicates") == 20,
            timeout_s=20,
        )
        assert wait_until(lambda: r.stats()["rejected"].get("bad_signature") == 1)
    finally:
        r.close()
    with pg.connect() as conn:
        seqs = sorted(x[0] for x in conn.execute(sa.select(db.alerts.c.seq)))
    assert seqs == list(range(1, 51))


def test_review_and_retention_on_postgres(pg: Engine) -> None:
    db.migrate(pg)
    unit = Unit("unit-pg", generate_key())
    db.upsert_unit(pg, unit.unit_id, raw_pub_b64(unit.key), "0" * 16)
    users.add_user(pg, "alice", "long enough password")
    assert users.check_password(pg, "alice", "long enough password")
    ingest = Ingest(pg)
    payload, jpeg = unit.alert()
    now = time.time()
    ingest.process(
        [
            Message("phonewatch/unit-pg/alert", payload, now),
            Message("phonewatch/unit-pg/evidence/unit-pg-1", jpeg, now),
        ]
    )
    with pg.begin() as conn:
        conn.execute(
            db.alerts.update().values(status="rejected", reviewed_by="alice", reviewed_at=now)
        )
    out = retention.sweep(pg, RetentionConfig(), now=now + 3601)
    assert out["rejected_evidence"] == 1
    with pg.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(db.evidence)).scalar() == 0
