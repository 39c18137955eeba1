"""Issue 17: evidence whose alert has not arrived (orphans) is capped per unit, in JPEGs and in
bytes; the oldest go first, counted and logged. On SQLite and on PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controlroom import db
from controlroom.config import MqttConfig
from controlroom.ingest import Ingest, Message
from edge.common.signing import generate_key
from tests.controlroom.conftest import Unit, pg_database, raw_pub_b64

pytestmark = pytest.mark.slow  # over a second a test (make check skips it)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = db.make_engine(f"sqlite:///{tmp_path / 'cr.sqlite'}")
        db.migrate(engine)
        yield engine
        engine.dispose()
        return
    with pg_database(request.getfixturevalue("postgres_url")) as url:
        engine = db.make_engine(url)
        db.migrate(engine)
        try:
            yield engine
        finally:
            engine.dispose()


@pytest.fixture
def units(store: Engine) -> dict[str, Unit]:
    out = {}
    for name in ("unit-a", "unit-b"):
        u = Unit(name, generate_key())
        db.upsert_unit(store, name, raw_pub_b64(u.key), "0" * 16)
        out[name] = u
    return out


def jpeg(i: int, size: int = 1000) -> bytes:
    head = b"\xff\xd8\xff\xe0" + i.to_bytes(4, "big")
    return head + bytes(size - len(head) - 2) + b"\xff\xd9"


def evidence(unit: str, seq: int, at: float, size: int = 1000) -> Message:
    return Message(f"phonewatch/{unit}/evidence/{unit}-{seq}", jpeg(seq, size), at)


def orphans(engine: Engine) -> dict[str, list[str]]:
    known = (
        sa.select(db.alerts.c.alert_id)
        .where(db.alerts.c.alert_id == db.evidence.c.alert_id)
        .exists()
    )
    out: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for unit, aid in conn.execute(
            sa.select(db.evidence.c.unit, db.evidence.c.alert_id)
            .where(~known)
            .order_by(db.evidence.c.received_at)
        ):
            out.setdefault(unit, []).append(aid)
    return out


def test_orphans_over_the_count_cap_drop_the_oldest_of_that_unit_only(
    store: Engine, units: dict[str, Unit], caplog: pytest.LogCaptureFixture
) -> None:
    ingest = Ingest(store, orphan_evidence_max_count=3)
    ingest.process([evidence("unit-b", 1, 1000.0)])
    for seq in range(1, 6):  # one batch each, as they would trickle in
        ingest.process([evidence("unit-a", seq, 1000.0 + seq)])
    with caplog.at_level(logging.WARNING, logger="controlroom.ingest"):
        ingest.process([evidence("unit-a", 6, 1010.0), evidence("unit-a", 7, 1011.0)])
    assert orphans(store) == {
        "unit-a": ["unit-a-5", "unit-a-6", "unit-a-7"],
        "unit-b": ["unit-b-1"],
    }
    stats = ingest.stats()
    assert stats["evidence_stored"] == 8, stats
    assert stats["orphans_dropped"] == 4, stats
    assert stats["orphan_bytes_dropped"] == 4 * 1000
    assert "unit unit-a: deleted its 2 oldest evidence JPEG(s) (2000 bytes)" in caplog.text


def test_orphans_over_the_byte_cap_drop_the_oldest(store: Engine, units: dict[str, Unit]) -> None:
    ingest = Ingest(store, orphan_evidence_max_bytes=25_000)
    ingest.process([evidence("unit-a", seq, 1000.0 + seq, size=10_000) for seq in range(1, 4)])
    assert orphans(store) == {"unit-a": ["unit-a-2", "unit-a-3"]}
    ingest.process([evidence("unit-a", 4, 1004.0, size=3_000)])  # 23,000 bytes: all kept
    assert orphans(store) == {"unit-a": ["unit-a-2", "unit-a-3", "unit-a-4"]}
    ingest.process([evidence("unit-a", 5, 1005.0, size=20_000)])
    assert orphans(store) == {"unit-a": ["unit-a-4", "unit-a-5"]}
    assert ingest.stats()["orphans_dropped"] == 3
    assert ingest.stats()["orphan_bytes_dropped"] == 30_000


def test_evidence_with_its_alert_is_never_counted_or_dropped(
    store: Engine, units: dict[str, Unit]
) -> None:
    """Only orphans count: a unit's matched evidence stays whatever its number, and an orphan
    whose alert arrives stops counting."""
    ingest = Ingest(store, orphan_evidence_max_count=2)
    u = units["unit-a"]
    sent = [u.alert(jpeg=jpeg(seq)) for seq in range(1, 6)]
    for seq, (payload, image) in enumerate(sent, start=1):
        ingest.process(
            [
                Message("phonewatch/unit-a/alert", payload, 1000.0 + seq),
                Message(f"phonewatch/unit-a/evidence/unit-a-{seq}", image, 1000.0 + seq),
            ]
        )
    ingest.process([evidence("unit-a", 10, 1010.0), evidence("unit-a", 11, 1011.0)])
    late, late_jpeg = u.alert(seq=12, jpeg=jpeg(12))
    ingest.process([Message("phonewatch/unit-a/evidence/unit-a-12", late_jpeg, 1012.0)])
    assert orphans(store) == {"unit-a": ["unit-a-11", "unit-a-12"]}
    ingest.process([Message("phonewatch/unit-a/alert", late, 1013.0)])  # 12 is matched now
    ingest.process([evidence("unit-a", 13, 1014.0)])
    assert orphans(store) == {"unit-a": ["unit-a-11", "unit-a-13"]}
    with store.connect() as conn:
        matched = conn.execute(
            sa.select(sa.func.count())
            .select_from(db.evidence)
            .where(db.evidence.c.alert_id.in_([f"unit-a-{s}" for s in (1, 2, 3, 4, 5, 12)]))
        ).scalar()
    assert matched == 6
    assert ingest.stats()["orphans_dropped"] == 1  # unit-a-10


def test_orphan_caps_come_from_the_config(tmp_path: Path) -> None:
    from controlroom.receiver import Receiver

    assert MqttConfig().orphan_evidence_max_count == 200
    assert MqttConfig().orphan_evidence_max_mb == 256
    engine = db.make_engine(f"sqlite:///{tmp_path / 'cr.sqlite'}")
    cfg = MqttConfig(orphan_evidence_max_count=7, orphan_evidence_max_mb=3)
    r = Receiver(cfg, engine)  # not started: nothing connects
    assert (r.ingest.orphan_evidence_max_count, r.ingest.orphan_evidence_max_bytes) == (
        7,
        3 * 1024 * 1024,
    )
    engine.dispose()


def test_a_version_4_database_gains_the_evidence_unit_index(store: Engine) -> None:
    """The cap looks up a unit's evidence by (unit, received_at): migration 6 adds the index to
    a database made before it (one made now has it from the table definition already)."""
    with store.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_evidence_unit_received"))
        conn.execute(db.schema_version.delete().where(db.schema_version.c.version >= 6))
    assert "ix_evidence_unit_received" not in {
        ix["name"] for ix in sa.inspect(store).get_indexes("evidence")
    }
    assert db.migrate(store) == db.LATEST_VERSION
    assert "ix_evidence_unit_received" in {
        ix["name"] for ix in sa.inspect(store).get_indexes("evidence")
    }
