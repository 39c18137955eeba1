"""``Ingest.process`` on one mixed batch, without a broker: what each kind of message becomes
(stored, kept as the newest, counted as a duplicate, rejected under which reason)."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controlroom import db
from controlroom.ingest import Ingest, Message, StoredAlert
from edge.common.signing import generate_key
from edge.core import messages as m
from tests.controlroom.conftest import Unit, jpeg_bytes, status_and_heartbeat

T = "phonewatch/unit-a"


def test_one_mixed_batch_is_sorted_checked_and_stored(engine: Engine, unit_a: Unit) -> None:
    told: list[list[StoredAlert]] = []
    ingest = Ingest(
        engine, evidence_max_bytes=50_000, snapshot_max_bytes=60_000, on_stored=told.append
    )
    alert, image = unit_a.alert(seq=1)
    st, hb = status_and_heartbeat("unit-a", 1000.0)
    stranger = Unit("unit-x", generate_key())
    batch = [
        Message(f"{T}/alert", alert, 1.0),
        Message(f"{T}/alert", alert, 2.0),  # the same alert again in the batch: a duplicate
        Message(f"{T}/evidence/unit-a-1", image, 3.0),
        Message(f"{T}/snapshot", jpeg_bytes(2), 5.0),
        Message(f"{T}/snapshot", jpeg_bytes(3), 4.0),  # older than the one before: not kept
        Message(f"{T}/collect/lane1-1", jpeg_bytes(4), 6.0),
        Message(f"{T}/status", m.encode(st), 7.0),
        Message(f"{T}/heartbeat", m.encode(hb), 8.0),
        Message(f"{T}/evidence/unit-a-2", b"not a jpeg", 9.0),
        Message(f"{T}/evidence/unit-a-3", bytes(50_001), 10.0),
        Message("phonewatch/unit-x/collect/c", jpeg_bytes(5), 11.0),
        Message("phonewatch/unit-x/alert", stranger.alert(seq=1)[0], 12.0),
        Message(f"{T}/status", m.encode({**st, "unit": "unit-b"}), 13.0),
        Message(f"{T}/heartbeat", b"{", 14.0),
        Message(f"{T}/nonsense", b"{}", 15.0),
        Message("elsewhere/unit-a/alert", alert, 16.0),
    ]
    stored = ingest.process(batch)

    assert [(s.alert_id, s.received_at) for s in stored] == [("unit-a-1", 1.0)]
    assert told == [stored]
    stats = ingest.stats()
    assert stats["received"] == len(batch)
    assert stats["duplicates"] == 1
    assert stats["stored"] == 1
    assert stats["rejected"] == {
        "not_jpeg": 1,
        "oversized": 1,
        "unknown_unit": 2,
        "topic_mismatch": 1,
        "not_json": 1,
        "bad_topic": 2,
    }
    with engine.connect() as conn:
        snaps = conn.execute(sa.select(db.snapshots.c.unit, db.snapshots.c.jpeg)).all()
        assert snaps == [("unit-a", jpeg_bytes(2))]
        crops = conn.execute(sa.select(db.labels.c.unit, db.labels.c.name)).all()
        assert crops == [("unit-a", "lane1-1")]
        ev = conn.execute(sa.select(db.evidence.c.alert_id)).scalars().all()
        assert ev == ["unit-a-1"]
        row: Any = (
            conn.execute(sa.select(db.units).where(db.units.c.unit_id == "unit-a")).mappings().one()
        )
    assert row["status_state"] == "online"
    assert row["status_received_at"] == 7.0
    assert json.loads(row["heartbeat"]) == hb
    assert row["heartbeat_received_at"] == 8.0


def test_the_newest_snapshot_of_a_batch_wins_whatever_the_order(
    engine: Engine, unit_a: Unit
) -> None:
    ingest = Ingest(engine)
    ingest.process(
        [
            Message(f"{T}/snapshot", jpeg_bytes(1), 5.0),
            Message(f"{T}/snapshot", jpeg_bytes(2), 6.0),
            Message(f"{T}/snapshot", jpeg_bytes(3), 6.0),
        ]
    )  # a tie: the later one
    with engine.connect() as conn:
        assert conn.execute(sa.select(db.snapshots.c.jpeg)).scalars().all() == [jpeg_bytes(3)]
    assert ingest.stats()["snapshots"] == 1
