"""Live quality on /labels: recall and FPR from labelled random samples, precision per week
(issue 18, "Live quality")."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controlroom import db, quality, users
from controlroom.config import parse_config
from controlroom.ingest import Ingest, Message
from controlroom.web import create_app
from edge.core.messages import sample_name
from tests.controlroom.conftest import Unit, jpeg_bytes

PASSWORD = "correct horse battery"
T0 = 1_796_000_000.0  # 2026-11-30, a Monday: week 2026-W49


def add_sample(
    engine: Engine,
    unit: str,
    i: int,
    *,
    score: float,
    label: str | None,
    reason: str = "random",
    version: str = "1.2.0",
) -> None:
    run = int(T0 * 1000) if reason == "calibration" else None
    name = sample_name(reason, "lane1", T0 + i, score, version, run_ms=run)
    with engine.begin() as conn:
        conn.execute(
            db.labels.insert().values(
                unit=unit,
                name=name,
                sha256=f"{i:064x}",
                jpeg=jpeg_bytes(i),
                received_at=T0,
                label=label,
                source="collect",
            )
        )


def put_alert(ingest: Ingest, unit: Unit) -> str:
    payload, jpeg = unit.alert()  # model phone-cls 1.2.0, threshold 0.7
    aid = str(json.loads(payload)["alert_id"])
    t = f"phonewatch/{unit.unit_id}"
    ingest.process([Message(f"{t}/alert", payload, 0.0), Message(f"{t}/evidence/{aid}", jpeg, 0.0)])
    return aid


def test_recall_and_fpr_come_from_labelled_random_samples_at_the_alert_threshold(
    engine: Engine, unit_a: Unit
) -> None:
    ingest = Ingest(engine)
    # phones: 3 of 4 at or over 0.7; phone-free: 1 of 10 over
    for i, sc in enumerate([0.9, 0.7, 0.75, 0.2]):
        add_sample(engine, "unit-a", i, score=sc, label="phone")
    for i, sc in enumerate([0.8] + [0.1] * 9):
        add_sample(engine, "unit-a", 100 + i, score=sc, label="no_phone")
    add_sample(engine, "unit-a", 200, score=0.99, label="phone", reason="uncertain")  # not random
    add_sample(engine, "unit-a", 201, score=0.01, label="phone", reason="calibration")
    add_sample(engine, "unit-a", 202, score=0.01, label=None)  # not labelled yet
    add_sample(engine, "unit-a", 203, score=0.01, label="skip")
    add_sample(engine, "unit-a", 300, score=0.9, label="phone", version="2.0")  # no alert yet
    with engine.connect() as conn:
        assert [e.threshold for e in quality.sample_estimates(conn)] == [None, None]
    put_alert(ingest, unit_a)
    with engine.connect() as conn:
        est = quality.sample_estimates(conn)
    assert [(e.unit, e.model, e.threshold) for e in est] == [
        ("unit-a", "1_2_0", 0.7),
        ("unit-a", "2_0", None),
    ]
    e = est[0]
    assert (e.recall.hits, e.recall.n, e.fpr.hits, e.fpr.n) == (3, 4, 1, 10)
    assert e.recall.value == 0.75
    lo, hi = e.recall.interval
    assert 0.2 < lo < 0.75 < hi < 1.0  # four crops: a wide interval, honestly
    assert est[1].recall.n == 0


def test_precision_per_week_and_its_chart(engine: Engine, unit_a: Unit) -> None:
    ingest = Ingest(engine)
    ids = [put_alert(ingest, unit_a) for _ in range(5)]
    week = 7 * 86400.0
    plan = [("confirmed", T0), ("rejected", T0), ("confirmed", T0 + week), ("confirmed", T0 + week)]
    with engine.begin() as conn:
        for aid, (status, at) in zip(ids, plan, strict=False):
            conn.execute(
                db.alerts.update()
                .where(db.alerts.c.alert_id == aid)
                .values(status=status, reviewed_at=at, reviewed_by="alice")
            )
    with engine.connect() as conn:
        weeks = quality.precision_by_week(conn)
    assert [(w.week, w.confirmed, w.rejected) for w in weeks] == [
        ("2026-W49", 1, 1),
        ("2026-W50", 2, 0),
    ]
    svg = quality.trend_svg(weeks)
    assert svg.count('<circle class="week"') == 2
    assert svg.count('<line class="ci"') == 2
    assert "2026-W49: 0.50 (1 confirmed, 1 rejected" in svg
    assert quality.trend_svg([]) == ""


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_the_labels_page_shows_live_quality(tmp_path: Path, engine: Engine, unit_a: Unit) -> None:
    from fastapi.testclient import TestClient

    from tests.controlroom.test_web import login as web_login

    users.add_user(engine, "alice", PASSWORD)
    ingest = Ingest(engine)
    aid = put_alert(ingest, unit_a)
    with engine.begin() as conn:
        conn.execute(
            db.alerts.update()
            .where(db.alerts.c.alert_id == aid)
            .values(status="confirmed", reviewed_at=time.time(), reviewed_by="alice")
        )
    add_sample(engine, "unit-a", 1, score=0.9, label="phone")
    add_sample(engine, "unit-a", 2, score=0.1, label="no_phone")
    cfg = parse_config({"web": {"tile_url": ""}}, base_dir=tmp_path)
    with TestClient(create_app(cfg, engine)) as c:
        web_login(c, "alice", PASSWORD)
        html: Any = c.get("/labels").text
    assert '<svg xmlns="http://www.w3.org/2000/svg" id="precision-trend"' in html
    assert 'id="sample-rates"' in html
    assert "1.00 (1/1)" in html  # recall
    assert "0.000 (0/1)" in html  # FPR
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(db.labels)).scalar() == 2
