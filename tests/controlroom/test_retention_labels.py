"""Retention of labelling crops (privacy): crops that are not evidence of an offence go
``label_crops_days`` after they arrived, a confirmed alert's crop goes with the alert, and a
crop a dataset version holds stays until the version is deleted. Real SQLite, real sweeps."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from controlroom import datasets, db, retention, users
from controlroom.config import Config, RetentionConfig, parse_config
from controlroom.web import create_app
from tests.controlroom.conftest import jpeg_bytes, pg_database
from tests.controlroom.test_web import HTML, PASSWORD, login

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

DAY = 86400.0
NOW = float(int(time.time()))
CFG = RetentionConfig(label_crops_days=30, confirmed_days=365)
SEEDS = itertools.count(900)


def add(engine: Engine, name: str, *, age_days: float, **kw: Any) -> str:
    """A stored crop that arrived ``age_days`` ago; its SHA-256 (the key datasets use)."""
    jpeg = jpeg_bytes(next(SEEDS))
    sha = f"{next(SEEDS):064x}"
    t = NOW - age_days * DAY
    row = {"unit": "unit-a", "name": name, "sha256": sha, "jpeg": jpeg, "received_at": t}
    with engine.begin() as conn:
        conn.execute(db.labels.insert().values(**{**row, **kw}))
    return sha


def names(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.select(db.labels.c.name)).scalars())


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Engine]:
    with pg_database(postgres_url) as url:
        e = db.make_engine(url)
        try:
            db.migrate(e)
            yield e
        finally:
            e.dispose()


def test_label_crops_go_after_their_days_unless_a_dataset_holds_them(engine: Engine) -> None:
    check_label_crop_retention(engine)


@pytest.mark.slow
def test_label_crop_retention_on_postgres(pg: Engine) -> None:
    check_label_crop_retention(pg)


def check_label_crop_retention(engine: Engine) -> None:
    add(engine, "queued-new", age_days=29)
    add(engine, "queued-old", age_days=31)
    add(engine, "skipped-old", age_days=31, label="skip", labelled_at=NOW - 30 * DAY)
    add(engine, "rejected-old", age_days=31, label="no_phone", source="review",
        labelled_at=NOW - 31 * DAY)  # fmt: skip
    # a confirmed alert's crop goes with the alert: a year after the review
    add(engine, "confirmed", age_days=300, label="phone", source="review",
        labelled_at=NOW - 300 * DAY)  # fmt: skip
    held = add(engine, "in-dataset", age_days=31, label="phone", labelled_at=NOW - 31 * DAY)
    made = datasets.create_dataset(engine, user="alice")
    assert made.manifest["examples"] == 3  # rejected-old, confirmed, in-dataset
    with engine.begin() as conn:  # only in-dataset stays in the version
        conn.execute(
            db.dataset_examples.delete().where(
                db.dataset_examples.c.dataset_id == made.id, db.dataset_examples.c.sha256 != held
            )
        )

    with engine.connect() as conn:
        assert retention.label_crops_due(conn, CFG, now=NOW, within_s=0) == (3, NOW)
        n, first = retention.label_crops_due(conn, CFG, now=NOW, within_s=2 * DAY)
        assert (n, first) == (4, NOW)
    out = retention.sweep(engine, CFG, now=NOW)
    assert (out["label_crops"], out["dataset_blobs"]) == (3, 2)  # 2 JPEGs no version holds
    assert names(engine) == {"queued-new", "confirmed", "in-dataset"}
    with engine.connect() as conn:
        audit = conn.execute(
            sa.select(db.audit.c.username, db.audit.c.detail).where(
                db.audit.c.action == "retention"
            )
        ).one()
    assert audit.username == "system"
    assert "label_crops=3" in audit.detail

    retention.sweep(engine, CFG, now=NOW + 66 * DAY)
    assert names(engine) == {"in-dataset"}  # the version still holds it
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(db.example_blobs)).scalar() == 1

    datasets.delete_dataset(engine, made.id[:12], user="alice")
    out = retention.sweep(engine, CFG, now=NOW + 66 * DAY)
    assert (out["label_crops"], out["dataset_blobs"]) == (1, 1)
    assert names(engine) == set()
    with engine.connect() as conn:
        acts = [
            (r.action, r.username, r.target)
            for r in conn.execute(sa.select(db.audit).order_by(db.audit.c.id))
        ]
    assert ("dataset_delete", "alice", made.id[:32]) in acts


def test_a_crop_past_its_time_in_no_dataset_is_kept_by_nothing_else(engine: Engine) -> None:
    """The boundary: exactly label_crops_days old goes; a second younger stays."""
    add(engine, "edge", age_days=30)
    add(engine, "young", age_days=30 - 1 / DAY)
    assert retention.sweep(engine, CFG, now=NOW)["label_crops"] == 1
    assert names(engine) == {"young"}


def test_the_retention_key_is_checked() -> None:
    assert RetentionConfig().label_crops_days == 30.0
    with pytest.raises(ValueError, match="label_crops_days"):
        RetentionConfig(label_crops_days=0)
    with pytest.raises(ValueError, match="label_crop_days"):
        parse_config({"retention": {"label_crop_days": 7}}, base_dir=Path("."))


@pytest.fixture
def client(tmp_path: Path, engine: Engine) -> Iterator[Any]:
    cfg: Config = parse_config(
        {"web": {"tile_url": ""}, "retention": {"label_crops_days": 14}}, base_dir=tmp_path
    )
    users.add_user(engine, "alice", PASSWORD)
    with TestClient(create_app(cfg, engine)) as c:
        yield c


@pytest.mark.slow
def test_the_page_says_how_long_and_deletes_a_version_only_when_sure(
    client: Any, engine: Engine
) -> None:
    add(engine, "soon", age_days=10)
    add(engine, "labelled", age_days=1, label="phone", labelled_at=NOW)
    made = datasets.create_dataset(engine, user="alice")
    token = login(client)
    page = client.get("/labels").text
    assert "<strong>14 days</strong> after they arrived" in page
    assert "1 crop will be deleted in the next 7 days" in page
    assert f'<option value="{made.id}">' in page
    r = client.post(
        "/labels/datasets/delete", data={"dataset_id": made.id, "csrf": token}, headers=HTML
    )
    assert r.status_code == 400
    assert "nothing was deleted" in r.text
    r = client.post(
        "/labels/datasets/delete",
        data={"dataset_id": "0" * 12, "sure": "yes", "csrf": token},
        headers=HTML,
    )
    assert r.status_code == 404
    with engine.connect() as conn:
        assert conn.execute(sa.select(db.datasets.c.id)).scalars().all() == [made.id]
    r = client.post(
        "/labels/datasets/delete",
        data={"dataset_id": made.id, "sure": "yes", "csrf": token},
        follow_redirects=False,
    )
    assert r.status_code == 303
    with engine.connect() as conn:
        assert conn.execute(sa.select(db.datasets.c.id)).scalars().all() == []
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(db.dataset_examples)).scalar() == 0
        )
    assert "No dataset version yet." in client.get("/labels").text
