"""The labelling queue (issues 18 and 19): crops grouped into sessions by what their names say,
a time range labelled in one action after a preview, labels and bulk labels over the JSON
routes the page's script uses, undo, and the export that says when there is nothing to export.
Crops go in through the real ingest path into SQLite; pages through FastAPI."""

from __future__ import annotations

import io
import itertools
import re
import time
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from controlroom import db, labelling, users
from controlroom.config import Config, parse_config
from controlroom.ingest import Ingest, Message
from controlroom.labelling import Batch, LabellingError
from controlroom.web import create_app
from edge.common.signing import generate_key
from edge.core import messages as m
from tests.controlroom.conftest import Unit, jpeg_bytes, pg_database, raw_pub_b64
from tests.controlroom.test_web import HTML, PASSWORD, csrf_of, login

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

T0 = float(int(time.time()) - 7200)  # a calibration run two hours ago, on a whole second
JSON = {"Accept": "application/json"}


def local_input(t: float) -> str:
    """``t`` as the page's ``datetime-local`` fields show it."""
    return datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%dT%H:%M:%S")


SEEDS = itertools.count(300)


def put_crops(ingest: Ingest, unit: str, names: list[str]) -> None:
    """Store crops as a unit sends them (each a different JPEG: ingest keeps one per hash)."""
    ingest.process(
        [
            Message(f"phonewatch/{unit}/collect/{n}", jpeg_bytes(next(SEEDS)), time.time())
            for n in names
        ]
    )


def cal(t: float, roi: str = "lane1", run_s: float = T0) -> str:
    return m.sample_name("calibration", roi, t, 0.5, "1.2.0", run_ms=int(run_s * 1000))


def state(engine: Engine, unit: str = "unit-a") -> dict[str, tuple[str | None, str | None]]:
    """Each of ``unit``'s crops' name -> (label, labelled_by)."""
    with engine.connect() as conn:
        return {
            r.name: (r.label, r.labelled_by)
            for r in conn.execute(
                sa.select(db.labels.c.name, db.labels.c.label, db.labels.c.labelled_by).where(
                    db.labels.c.unit == unit
                )
            )
        }


def ids_by_name(engine: Engine) -> dict[str, int]:
    """unit-a's crops' ids by name."""
    lb = db.labels
    with engine.connect() as conn:
        q = sa.select(lb.c.name, lb.c.id).where(lb.c.unit == "unit-a")
        return {r.name: r.id for r in conn.execute(q)}


# -- the logic, without the web -----------------------------------------------------------------


def test_a_crops_name_says_its_kind_roi_and_time() -> None:
    f = labelling.facts_of(1, "u", cal(T0 + 3.25, "lane2"), received_at=T0 + 99)
    assert (f.kind, f.roi, f.t, f.run_ms) == ("calibration", "lane2", T0 + 3.25, int(T0 * 1000))
    f = labelling.facts_of(2, "u", m.collect_name("lane1", T0 + 1.5), received_at=T0 + 99)
    assert (f.kind, f.roi, f.t) == ("collect", "lane1", T0 + 1.5)
    f = labelling.facts_of(3, "u", m.sample_name("uncertain", "l", T0, 0.49, "1"), T0 + 9)
    assert (f.kind, f.roi, f.score) == ("uncertain", "l", 0.49)
    f = labelling.facts_of(4, "u", "odd name", received_at=T0 + 9)  # arrival time, no ROI
    assert (f.kind, f.roi, f.t) == ("collect", None, T0 + 9)


def test_sessions_group_a_run_a_sampler_day_and_one_collect_request() -> None:
    names = [
        cal(T0 + 1),
        cal(T0 + 2, "lane2"),
        cal(T0 + 900, run_s=T0 + 800),  # a second run
        m.collect_name("lane1", T0 + 10),
        m.collect_name("lane2", T0 + 10),
        m.collect_name("lane1", T0 + 10 + labelling.COLLECT_GAP_S + 1),  # another request
        m.sample_name("random", "lane1", T0 + 5, 0.1, "1"),
    ]
    crops = [labelling.facts_of(i, "u", n, T0) for i, n in enumerate(names)]
    crops.append(labelling.facts_of(99, "v", cal(T0 + 1), T0))  # same run start, other unit
    got = [
        (s.kind, s.unit, len(s.crops)) for s in labelling.sessions(sorted(crops, key=lambda c: c.t))
    ]
    assert got == [
        ("calibration", "u", 2),
        ("calibration", "v", 1),
        ("random", "u", 1),
        ("collect", "u", 2),
        ("collect", "u", 1),
        ("calibration", "u", 1),
    ]
    first = labelling.sessions(crops)[0]
    assert first.per_roi == {"lane1": 1, "lane2": 1}
    assert (first.start, first.end) == (T0 + 1, T0 + 2)


def test_a_range_from_after_to_or_a_forged_batch_is_refused() -> None:
    with pytest.raises(LabellingError, match="is after To"):
        labelling.TimeRange("u", T0 + 10, T0).check()
    with pytest.raises(LabellingError, match="choose a unit"):
        labelling.TimeRange("", T0, T0 + 1).check()
    with pytest.raises(LabellingError, match="not a labelling action"):
        Batch.parse("alice", "nan")
    assert Batch.parse("alice", Batch("alice", T0 + 0.123456).token).at == T0 + 0.123456


def check_label_range_and_undo(engine: Engine) -> None:
    """label_crops, TimeRange, undo and recent_actions straight on a database."""
    names = [cal(T0 + i) for i in range(4)] + [m.collect_name("lane1", T0 + 2)]
    with engine.begin() as conn:
        for i, n in enumerate(names):
            conn.execute(
                db.labels.insert().values(
                    unit="u1", name=n, sha256=f"{i:064x}", jpeg=b"x", received_at=T0 + 50
                )
            )
    with engine.begin() as conn:
        rng = labelling.TimeRange("u1", T0 + 1, T0 + 2, "lane1", labelling.newest_id(conn))
        crops = rng.crops(conn)
        assert [c.t for c in crops] == [T0 + 1, T0 + 2, T0 + 2]  # a calibration and a collect crop
        batch, done = labelling.label_crops(conn, crops, "phone", user="alice", now=T0 + 60)
        labelling.audit_label(conn, action="label_range", batch=batch, detail="3", remote=None)
        late = labelling.label_crops(conn, crops, "no_phone", user="bob", now=T0 + 61)[1]
    assert (sorted(done), late) == (sorted(c.id for c in crops), [])  # labelled already
    with engine.connect() as conn:
        rows = {
            r.id: (r.label, r.roi, r.taken_at)
            for r in conn.execute(sa.select(db.labels).where(db.labels.c.label.is_not(None)))
        }
        assert rows == {c.id: ("phone", "lane1", c.t) for c in crops}  # provenance written
        recent = labelling.recent_actions(conn, "alice", now=T0 + 70)
        assert [(r.batch, r.left) for r in recent] == [(batch, 3)]
    with pytest.raises(LabellingError, match="can no longer be undone"), engine.begin() as conn:
        labelling.undo(conn, batch, now=T0 + 60 + labelling.UNDO_WINDOW_S + 1)
    with engine.begin() as conn:
        assert labelling.undo(conn, Batch("bob", batch.at), now=T0 + 70) == []
        assert sorted(labelling.undo(conn, batch, now=T0 + 70)) == sorted(done)
        assert len(labelling.queued(conn, unit="u1")) == 5


def test_label_a_range_and_undo_it_on_sqlite(engine: Engine) -> None:
    check_label_range_and_undo(engine)


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Engine]:
    with pg_database(postgres_url) as url:
        e = db.make_engine(url)
        try:
            db.migrate(e)
            yield e
        finally:
            e.dispose()


@pytest.mark.slow
def test_label_a_range_and_undo_it_on_postgres(pg: Engine) -> None:
    check_label_range_and_undo(pg)


# -- the web ------------------------------------------------------------------------------------


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return parse_config({"web": {"tile_url": "", "live_poll_s": 0.05}}, base_dir=tmp_path)


@pytest.fixture
def ingest(engine: Engine, unit_a: Unit) -> Ingest:
    users.add_user(engine, "alice", PASSWORD)
    users.add_user(engine, "bob", PASSWORD)
    return Ingest(engine)


@pytest.fixture
def client(cfg: Config, engine: Engine, ingest: Ingest) -> Iterator[Any]:
    with TestClient(create_app(cfg, engine)) as c:
        yield c


@pytest.mark.slow
def test_a_time_range_is_previewed_labelled_audited_and_undone(
    client: Any, ingest: Ingest, engine: Engine
) -> None:
    """The operator staged drivers with phones from T0+60 to T0+120 on unit-a lane1: they see
    how many crops that is, label them all phone in one action, and can undo it."""
    inside = [cal(T0 + 60 + i * 10) for i in range(7)]  # 60 .. 120, both ends included
    lane2 = [cal(T0 + 90, "lane2")]
    outside = [cal(T0 + 59), cal(T0 + 121)]
    put_crops(ingest, "unit-a", inside + lane2 + outside)
    db.upsert_unit(engine, "unit-b", raw_pub_b64(generate_key()), "0" * 16)
    ingest.reload_keys()
    put_crops(ingest, "unit-b", [cal(T0 + 90)])
    token = login(client)
    already = ids_by_name(engine)[inside[0]]
    r = client.post("/labels/api/label", data={"id": already, "label": "no_phone", "csrf": token})
    assert r.json()["labelled"] == [already]

    q = {
        "unit": "unit-a",
        "roi": "lane1",
        "from": local_input(T0 + 60),
        "to": local_input(T0 + 120),
    }
    page = client.get("/labels", params=q).text
    assert '<strong id="range-count">6</strong>' in page  # the one labelled already is left out
    assert "unit-a lane1" in page
    upto = int(re.search(r'name="upto" value="(\d+)"', page).group(1))  # type: ignore[union-attr]

    # a crop of the range arriving after the preview is not labelled blind
    put_crops(ingest, "unit-a", [cal(T0 + 100.5)])
    r = client.post(
        "/labels/range",
        data={**q, "label": "phone", "upto": upto, "expect": 6, "csrf": token},
        follow_redirects=False,
    )
    assert r.status_code == 303
    s = state(engine)
    assert [s[n] for n in inside] == [("no_phone", "alice")] + [("phone", "alice")] * 6
    assert [s[n][0] for n in [*lane2, *outside, cal(T0 + 100.5)]] == [None] * 4
    with engine.connect() as conn:
        assert (
            conn.execute(
                sa.select(db.labels.c.label).where(db.labels.c.unit == "unit-b")
            ).scalar_one()
            is None
        )
    with engine.connect() as conn:
        audit = conn.execute(
            sa.select(db.audit.c.action, db.audit.c.target, db.audit.c.detail).where(
                db.audit.c.action == "label_range"
            )
        ).one()
    assert audit.detail.startswith("6 crops from unit-a lane1 ")
    assert audit.detail.endswith(" as phone")

    # it is listed under "Your recent labelling" with an undo; bob cannot undo alice's
    page = client.get("/labels").text
    batch = audit.target.removeprefix("labels@")
    assert f'name="batch" value="{batch}"' in page
    assert "Undo (6 crops)" in page
    with TestClient(client.app) as other:
        bob = login(other, "bob")
        r = other.post("/labels/api/undo", data={"batch": batch, "csrf": bob})
        assert r.status_code == 409
    r = client.post("/labels/undo", data={"batch": batch, "csrf": token}, follow_redirects=False)
    assert r.status_code == 303
    s = state(engine)
    assert [s[n] for n in inside] == [("no_phone", "alice")] + [(None, None)] * 6
    # undoing twice says so, as a page for a browser
    r = client.post("/labels/undo", data={"batch": batch, "csrf": token}, headers=HTML)
    assert r.status_code == 409
    assert "text/html" in r.headers["content-type"]
    assert "Nothing to undo: that labelling was undone already" in r.text


@pytest.mark.slow
def test_range_mistakes_are_explained_and_change_nothing(
    client: Any, ingest: Ingest, engine: Engine
) -> None:
    put_crops(ingest, "unit-a", [cal(T0 + 60)])
    token = login(client)
    bad = {"unit": "unit-a", "roi": "", "from": local_input(T0 + 120), "to": local_input(T0)}
    page = client.get("/labels", params=bad).text
    assert 'id="range-error"' in page
    assert "is after To" in page
    empty = {"unit": "unit-a", "roi": "", "from": local_input(T0), "to": local_input(T0 + 30)}
    assert 'id="range-none"' in client.get("/labels", params=empty).text
    r = client.post(
        "/labels/range", data={**empty, "label": "phone", "upto": 999, "csrf": token}, headers=HTML
    )
    assert r.status_code == 404
    assert "nothing was labelled" in r.text
    ok = {"unit": "unit-a", "roi": "", "from": local_input(T0), "to": local_input(T0 + 90)}
    r = client.post(
        "/labels/range", data={**ok, "label": "skip", "upto": 999, "csrf": token}, headers=HTML
    )
    assert r.status_code == 400  # a range is phone or no_phone only
    r = client.post("/labels/range", data={**ok, "label": "phone", "upto": 999}, headers=HTML)
    assert r.status_code == 403  # no CSRF token
    assert list(state(engine).values()) == [(None, None)]


@pytest.mark.slow
def test_the_queue_shows_sessions_and_labels_over_json_with_undo(
    client: Any, ingest: Ingest, engine: Engine
) -> None:
    run = [cal(T0 + i) for i in range(3)]
    collected = [m.collect_name(r, T0 + 1000) for r in ("lane1", "lane2")]
    put_crops(ingest, "unit-a", run + collected)
    token = login(client)
    page = client.get("/labels").text
    heads = re.findall(r'<h3 class="session-head">([^<]+)', page)
    assert [h.split(" · ")[:2] for h in heads] == [
        ["Calibration run", "unit-a"],
        ["Collected crops", "unit-a"],
    ]
    assert "(lane1 1, lane2 1: N per ROI)" in page
    assert 'id="label-count" data-n="5"' in page
    ids = ids_by_name(engine)

    # one crop, then a bulk selection: JSON back, with the batch undo takes
    r = client.post("/labels/api/label", data={"id": ids[run[0]], "label": "phone", "csrf": token})
    assert r.status_code == 200
    one = r.json()
    assert (one["labelled"], one["not_queued"], one["label"]) == ([ids[run[0]]], [], "phone")
    r = client.post(
        "/labels/api/label",
        data={"id": [ids[run[0]], ids[run[1]], ids[run[2]]], "label": "no_phone", "csrf": token},
    )
    bulk = r.json()
    assert (bulk["labelled"], bulk["not_queued"]) == ([ids[run[1]], ids[run[2]]], [ids[run[0]]])
    s = state(engine)
    assert [s[n][0] for n in run] == ["phone", "no_phone", "no_phone"]
    r = client.post("/labels/api/undo", data={"batch": bulk["batch"], "csrf": token})
    assert sorted(r.json()["undone"]) == [ids[run[1]], ids[run[2]]]
    s = state(engine)
    assert [s[n][0] for n in run] == ["phone", None, None]

    # errors are JSON for the script, and change nothing
    for data, status in (
        ({"id": ids[run[1]], "label": "cat"}, 400),
        ({"label": "phone"}, 400),
        ({"id": 10**9, "label": "phone"}, 404),
    ):
        r = client.post("/labels/api/label", data={**data, "csrf": token}, headers=JSON)
        assert r.status_code == status, r.text
        assert isinstance(r.json()["detail"], str)
    r = client.post("/labels/api/label", data={"id": ids[run[1]], "label": "phone"}, headers=JSON)
    assert r.status_code == 403
    assert [state(engine)[n][0] for n in run] == ["phone", None, None]
    with engine.connect() as conn:
        actions = [
            r.action
            for r in conn.execute(
                sa.select(db.audit.c.action).where(db.audit.c.action.startswith("label"))
            )
        ]
    assert actions == ["label", "label_bulk", "label_undo"]


@pytest.mark.slow
def test_export_with_nothing_labelled_says_so(client: Any, ingest: Ingest, engine: Engine) -> None:
    put_crops(ingest, "unit-a", [cal(T0)])
    token = login(client)
    page = client.get("/labels").text
    assert 'id="export-none"' in page
    assert "/labels/export.zip" not in page
    r = client.get("/labels/export.zip", headers=HTML)
    assert r.status_code == 404
    assert "text/html" in r.headers["content-type"]
    assert "Nothing to export: no collected crop is labelled" in r.text
    client.post(
        "/labels/api/label",
        data={"id": ids_by_name(engine)[cal(T0)], "label": "phone", "csrf": token},
    )
    assert "Export the 1 labelled collected crops" in client.get("/labels").text
    with zipfile.ZipFile(io.BytesIO(client.get("/labels/export.zip").content)) as z:
        assert [n.split("/")[0] for n in z.namelist()] == ["phone"]
    assert csrf_of(client.get("/labels").text) == token


@pytest.mark.slow
def test_a_long_queue_shows_the_oldest_and_one_session_on_request(
    client: Any, ingest: Ingest, engine: Engine
) -> None:
    names = [cal(T0 + i) for i in range(100)] + [
        m.collect_name("lane1", T0 + 5000 + i) for i in range(25)
    ]
    with engine.begin() as conn:
        conn.execute(
            db.labels.insert(),
            [
                {
                    "unit": "unit-a",
                    "name": n,
                    "sha256": f"{i:064x}",
                    "jpeg": b"x",
                    "received_at": T0,
                }
                for i, n in enumerate(names)
            ],
        )
    login(client)
    page = client.get("/labels").text
    assert page.count('<figure class="crop"') == 120
    assert "Showing the oldest 120 of 125" in page
    keys = re.findall(r'<a href="/labels\?session=([^"#]+)#label-queue">Show</a>', page)
    assert len(keys) == 2
    page = client.get(f"/labels?session={keys[1]}").text
    assert page.count('<figure class="crop"') == 25
    assert "Showing one session." in page
    assert f'id="crop-{ids_by_name(engine)[names[-1]]}"' in page
