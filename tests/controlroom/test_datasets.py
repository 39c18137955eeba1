"""Site learning in the control room (issue 18): every review is a labelled example with its
provenance, undo takes it back; dataset versions are content-addressed, split by unit-day,
exported as an image folder that re-hashes to its id and that ``phonewatch eval`` reads; the
reviewers' precision per unit and per model with its Wilson interval."""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from controlroom import datasets, db, users
from controlroom.config import Config, parse_config
from controlroom.errors import ControlRoomError
from controlroom.ingest import Ingest, Message
from controlroom.web import create_app
from edge.app.cli import main
from edge.app.cli_models import list_images, read_conditions
from edge.common.signing import generate_key
from tests.controlroom.conftest import Unit, jpeg_bytes, pg_database, raw_pub_b64
from tests.controlroom.test_web import PASSWORD, login

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
]
REPO = Path(__file__).resolve().parents[2]
BRIGHTNESS = REPO / "tests" / "data" / "brightness_int8.tflite"
DAY_S = 86400.0
T0 = 1_777_000_000.0  # 2026-04-24, mid-morning UTC


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return parse_config({"web": {"tile_url": "", "live_poll_s": 0.05}}, base_dir=tmp_path)


@pytest.fixture
def ingest(engine: Engine, unit_a: Unit) -> Ingest:
    users.add_user(engine, "alice", PASSWORD)
    return Ingest(engine)


@pytest.fixture
def client(cfg: Config, engine: Engine, ingest: Ingest) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    with TestClient(create_app(cfg, engine)) as c:
        yield c


def put(
    ingest: Ingest, unit: Unit, *, crop: bool = True, t: float = T0, score: float = 0.93
) -> tuple[str, bytes]:
    """An alert (taken at ``t``) with its evidence and, unless ``crop`` is False, its crop."""
    payload, jpeg = unit.alert(t_wall_s=t, score=score, fix=None)  # time = t (no GPS)
    aid = json.loads(payload)["alert_id"]
    seq = int(aid.rsplit("-", 1)[1])
    topic = f"phonewatch/{unit.unit_id}"
    msgs = [
        Message(f"{topic}/alert", payload, time.time()),
        Message(f"{topic}/evidence/{aid}", jpeg, time.time()),
    ]
    if crop:
        msgs.append(Message(f"{topic}/crop/{aid}", Unit.crop(seq), time.time()))
    ingest.process(msgs)
    return aid, Unit.crop(seq)


def review_labels(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {
            r.alert_id: r
            for r in conn.execute(sa.select(db.labels).where(db.labels.c.source == "review"))
        }


def confirm(client: Any, token: str, aid: str) -> None:
    r = client.post(
        f"/alerts/{aid}/review",
        data={"action": "confirm", "sure": "yes", "csrf": token},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text


def reject(client: Any, token: str, aid: str) -> None:
    r = client.post(
        f"/alerts/{aid}/review", data={"action": "reject", "csrf": token}, follow_redirects=False
    )
    assert r.status_code == 303, r.text


def add_collected(
    engine: Engine, unit: str, t: float, label: str, seed: int, roi: str = "lane2"
) -> str:
    """A crop collected at ``t`` and labelled by hand on /labels; its SHA-256."""
    jpeg = jpeg_bytes(seed, size_px=(24, 16))
    sha = hashlib.sha256(jpeg).hexdigest()
    with engine.begin() as conn:
        conn.execute(
            db.labels.insert().values(
                unit=unit,
                name=f"{roi}-{int(t * 1000)}",
                sha256=sha,
                jpeg=jpeg,
                received_at=t + 3.0,
                label=label,
                labelled_by="bob",
                labelled_at=t + 60,
            )
        )
    return sha


# ---------------------------------------------------------------- reviews are labels


def test_a_review_is_a_labelled_example_with_its_provenance(
    client: Any, ingest: Ingest, unit_a: Unit, engine: Engine
) -> None:
    yes, crop_yes = put(ingest, unit_a, score=0.91)
    no, crop_no = put(ingest, unit_a, score=0.74)
    token = login(client)
    confirm(client, token, yes)
    reject(client, token, no)
    labels = review_labels(engine)
    with engine.connect() as conn:
        reviewed = {r.alert_id: r for r in conn.execute(sa.select(db.alerts))}
    assert set(labels) == {yes, no}
    got = labels[yes]
    assert (got.label, got.unit, got.roi, got.source) == ("phone", "unit-a", "lane1", "review")
    assert (got.model_name, got.model_version, got.score) == ("phone-cls", "1.2.0", 0.91)
    assert got.taken_at == pytest.approx(T0, abs=1e-3)  # the signed alert's time
    assert (got.labelled_by, got.labelled_at) == ("alice", reviewed[yes].reviewed_at)
    assert bytes(got.jpeg) == crop_yes
    assert got.sha256 == hashlib.sha256(crop_yes).hexdigest()
    assert (labels[no].label, labels[no].score, bytes(labels[no].jpeg)) == (
        "no_phone",
        0.74,
        crop_no,
    )
    # bulk reject labels too
    a3, _ = put(ingest, unit_a)
    assert client.post("/queue/reject", data={"alert_id": a3, "csrf": token}).status_code == 200
    assert review_labels(engine)[a3].label == "no_phone"
    # the Labels page counts them; its ZIP of hand-labelled collected crops leaves them out
    page = client.get("/labels").text
    assert '<span id="review-labels">1 phone, 2 no phone</span>' in page
    # (with no collected crop labelled, the export says so instead of an empty ZIP)
    r = client.get("/labels/export.zip")
    assert (r.status_code, r.headers["content-type"]) == (404, "application/json")
    assert "nothing to export" in r.json()["detail"]


def test_undo_of_a_review_takes_its_label_back(
    client: Any, ingest: Ingest, unit_a: Unit, engine: Engine
) -> None:
    a1, _ = put(ingest, unit_a)
    a2, _ = put(ingest, unit_a)
    token = login(client)
    confirm(client, token, a1)
    assert set(review_labels(engine)) == {a1}
    r = client.post("/review/undo", data={"alert_id": a1, "csrf": token}, follow_redirects=False)
    assert r.status_code == 303
    assert review_labels(engine) == {}
    # decided again the other way: the label follows the new decision
    reject(client, token, a1)
    assert review_labels(engine)[a1].label == "no_phone"
    # a bulk decision's undo takes every label back
    client.post("/queue/reject", data={"alert_id": [a2], "csrf": token})
    assert set(review_labels(engine)) == {a1, a2}
    client.post("/review/undo", data={"alert_id": [a1, a2], "csrf": token})
    assert review_labels(engine) == {}


def test_a_crop_arriving_after_the_review_is_labelled_when_a_dataset_is_made(
    client: Any, ingest: Ingest, unit_a: Unit, engine: Engine
) -> None:
    aid, crop = put(ingest, unit_a, crop=False)
    confirm(client, login(client), aid)
    assert review_labels(engine) == {}  # nothing to label yet: the unit keeps the crop
    ingest.process([Message(f"phonewatch/unit-a/crop/{aid}", crop, time.time())])
    made = datasets.create_dataset(engine, user="alice")
    assert made.manifest["examples"] == 1
    assert review_labels(engine)[aid].label == "phone"


# ---------------------------------------------------------------- dataset versions


def independent_id(rows: list[tuple[str, str, str]]) -> str:
    """The id rule written out again, not calling the module."""
    text = "".join(f"{s},{lab},{sp}\n" for s, lab, sp in sorted(rows))
    return hashlib.sha256(text.encode()).hexdigest()


def stored_rows(engine: Engine, did: str) -> list[tuple[str, str, str]]:
    de = db.dataset_examples
    with engine.connect() as conn:
        return [
            (r.sha256, r.label, r.split)
            for r in conn.execute(sa.select(de).where(de.c.dataset_id == did))
        ]


def test_dataset_id_is_content_addressed_and_the_same_when_nothing_changed(
    engine: Engine, tmp_path: Path
) -> None:
    with pytest.raises(ControlRoomError, match="no labelled examples"):
        datasets.create_dataset(engine, user="alice")
    shas = [
        add_collected(engine, "unit-a", T0 + i * 3600, "phone" if i % 2 else "no_phone", i)
        for i in range(6)
    ]
    first = datasets.create_dataset(engine, user="alice", note="first")
    assert first.new
    rows = stored_rows(engine, first.id)
    assert sorted(s for s, _, _ in rows) == sorted(shas)
    assert first.id == independent_id(rows)
    again = datasets.create_dataset(engine, user="bob", note="again")
    assert (again.id, again.new, again.manifest["note"]) == (first.id, False, "first")
    # the same examples in another database, labelled in another order: the same id
    other = db.make_engine(f"sqlite:///{tmp_path / 'other.sqlite'}")
    db.migrate(other)
    for i in reversed(range(6)):
        add_collected(other, "unit-a", T0 + i * 3600, "phone" if i % 2 else "no_phone", i)
    assert datasets.create_dataset(other, user="carol").id == first.id
    other.dispose()
    # one more example, or one label changed, or a skip: a new id / the same id
    add_collected(engine, "unit-a", T0, "skip", 99)
    assert datasets.create_dataset(engine, user="alice").id == first.id
    with engine.begin() as conn:
        conn.execute(db.labels.update().where(db.labels.c.sha256 == shas[0]).values(label="phone"))
    changed = datasets.create_dataset(engine, user="alice")
    assert changed.new
    assert changed.id != first.id
    assert stored_rows(engine, first.id) == rows  # the old version is untouched


def test_a_crop_labelled_both_ways_is_left_out(engine: Engine) -> None:
    sha = add_collected(engine, "unit-a", T0, "phone", 1)
    add_collected(engine, "unit-b", T0, "no_phone", 1)  # the same JPEG from another unit
    add_collected(engine, "unit-a", T0, "phone", 2)
    made = datasets.create_dataset(engine, user="alice")
    assert made.manifest["left_out_conflicting_labels"] == 1
    assert sha not in {s for s, _, _ in stored_rows(engine, made.id)}


def test_the_split_never_splits_a_unit_day(engine: Engine) -> None:
    units = [f"unit-{c}" for c in "abcdefgh"]
    seed = 0
    for day in range(10):
        for u in units:
            for hour in (0.5, 11, 23.5):  # one unit-day spans the whole UTC day
                seed += 1
                t = 1_777_075_200.0 + day * DAY_S + hour * 3600  # 2026-04-25 00:00 UTC + ...
                add_collected(engine, u, t, "phone" if seed % 3 else "no_phone", seed)
    made = datasets.create_dataset(engine, user="alice")
    de = db.dataset_examples
    with engine.connect() as conn:
        rows = list(
            conn.execute(
                sa.select(de.c.unit, de.c.day, de.c.split).where(de.c.dataset_id == made.id)
            )
        )
    assert len(rows) == 240
    sides: dict[tuple[str, str], set[str]] = {}
    for unit, ymd, split in rows:
        sides.setdefault((unit, ymd), set()).add(split)
    assert len(sides) == 80
    assert all(len(s) == 1 for s in sides.values()), "a unit-day on both sides"
    heldout = sum(1 for s in sides.values() if s == {"heldout"})
    assert 8 <= heldout <= 24  # about 20 % of 80 unit-days
    assert made.manifest["unit_days"] == {"heldout": heldout, "train": 80 - heldout}
    # the side is a function of unit and day alone: it never moves as data grows
    for (unit, ymd), (split,) in sides.items():
        assert datasets.split_of(unit, ymd) == split


# ---------------------------------------------------------------- export


@pytest.fixture
def made(client: Any, ingest: Ingest, unit_a: Unit, engine: Engine) -> datasets.Created:
    """A version with reviews (two units-days of unit-a) and hand-labelled collected crops
    on enough unit-days that both splits hold both labels."""
    token = login(client)
    for day in range(2):
        aid, _ = put(ingest, unit_a, t=T0 + day * DAY_S)
        confirm(client, token, aid)
        aid, _ = put(ingest, unit_a, t=T0 + day * DAY_S + 60, score=0.72)
        reject(client, token, aid)
    seed = 0
    for day in range(12):
        for u in ("unit-b", "unit-c"):
            for label in ("phone", "no_phone"):
                seed += 1
                add_collected(engine, u, T0 + day * DAY_S, label, seed)
    m = datasets.create_dataset(engine, user="alice")
    c = m.manifest["counts"]
    assert (
        min(
            c["train"]["phone"],
            c["train"]["no_phone"],
            c["heldout"]["phone"],
            c["heldout"]["no_phone"],
        )
        > 0
    )
    return m


def test_export_writes_images_index_and_manifest_and_rehashes_to_the_id(
    made: datasets.Created, engine: Engine, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    manifest = datasets.export_dataset(engine, made.id[:10], out)
    assert manifest["id"] == made.id
    index = list(csv.DictReader((out / "index.csv").open(encoding="utf-8")))
    required = {
        "path",
        "label",
        "split",
        "unit",
        "roi",
        "time",
        "source",
        "reviewer",
        "model_version",
        "score",
    }
    assert required <= set(index[0])
    assert len(index) == made.manifest["examples"] == 52
    images = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert images == sorted(r["path"] for r in index)
    # re-hash the folder from scratch: file content, label and split of each row
    rows = []
    for r in index:
        sha = hashlib.sha256((out / r["path"]).read_bytes()).hexdigest()
        assert r["path"] == f"{r['split']}/{r['label']}/{sha}.jpg"
        rows.append((sha, r["label"], r["split"]))
    assert independent_id(rows) == made.id
    assert datasets.rehash_export(out) == made.id
    doc = json.loads((out / "MANIFEST.json").read_text(encoding="utf-8"))
    assert doc["id"] == made.id
    assert doc["created"].startswith("20")
    counted: dict[str, dict[str, int]] = {"train": {}, "heldout": {}}
    for r in index:
        counted[r["split"]][r["label"]] = counted[r["split"]].get(r["label"], 0) + 1
    assert doc["counts"] == counted
    assert "unit-day" in doc["split_rule"]
    assert "SHA-256" in doc["id_rule"]
    # provenance of a review row, and of a collected one
    review = next(r for r in index if r["source"] == "review" and r["label"] == "no_phone")
    assert (
        review["unit"],
        review["roi"],
        review["reviewer"],
        review["model_name"],
        review["model_version"],
        float(review["score"]),
    ) == ("unit-a", "lane1", "alice", "phone-cls", "1.2.0", 0.72)
    assert review["time"].startswith("2026-04-2")
    assert review["alert_id"].startswith("unit-a-")
    collected = next(r for r in index if r["source"] == "collect")
    assert (collected["roi"], collected["reviewer"], collected["model_version"]) == (
        "lane2",
        "bob",
        "",
    )
    # a unit-day never on both sides of the export either
    sides: dict[str, set[str]] = {}
    for r in index:
        sides.setdefault(f"{r['unit']}/{r['day']}", set()).add(r["split"])
    assert all(len(s) == 1 for s in sides.values())


def test_the_site_trainer_reads_the_export_as_it_is(
    made: datasets.Created, engine: Engine, tmp_path: Path
) -> None:
    """The hop from the control room to training: ``models.site train --dataset DIR`` reads
    the export folder itself (index.csv, paths, labels, unit-day sessions, the held-out
    split), with no conversion step between them."""
    from models.site_data import read_dataset

    out = tmp_path / "export"
    datasets.export_dataset(engine, made.id, out)
    rows = read_dataset(out)
    assert len(rows) == made.manifest["examples"]
    assert {r.split for r in rows} <= {"train", "test"}
    index = {r["path"]: r for r in csv.DictReader((out / "index.csv").open(encoding="utf-8"))}
    for row in rows:
        rec = index[row.rel]
        assert row.label == (1 if rec["label"] == "phone" else 0)
        assert row.split == ("test" if rec["split"] == "heldout" else "train")
        assert row.session == f"{rec['unit']}/{rec['day']}"


def test_evals_reader_and_eval_itself_accept_the_export(
    made: datasets.Created, engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    datasets.export_dataset(engine, made.id, out)
    index = list(csv.DictReader((out / "index.csv").open(encoding="utf-8")))
    for split in datasets.SPLITS:
        folder = out / split
        items = list_images(folder)
        files = [p.relative_to(folder).as_posix() for p, _ in items]
        labels = [lab for _, lab in items]
        assert len(items) == sum(r["split"] == split for r in index)
        conditions = read_conditions(folder, files, labels)
        assert {"unit", "day", "roi", "source", "model_version"} <= set(conditions)
        want = {f"{r['label']}/{r['sha256']}.jpg": r["unit"] for r in index if r["split"] == split}
        assert conditions["unit"] == [want[f] for f in files]
    code = main(
        [
            "eval",
            "--model",
            str(BRIGHTNESS),
            "--data",
            str(out / "heldout"),
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "by unit" in text
    n = sum(r["split"] == "heldout" for r in index)
    doc = json.loads((tmp_path / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert next(iter(doc["models"][0]["data"].values()))["n"] == n


def test_models_data_groups_the_export_by_unit_day(
    made: datasets.Created, engine: Engine, tmp_path: Path
) -> None:
    from models.data import list_folder

    out = tmp_path / "export"
    datasets.export_dataset(engine, made.id, out)
    samples = list_folder(out / "train")
    index = {
        Path(r["path"]).name: r for r in csv.DictReader((out / "index.csv").open(encoding="utf-8"))
    }
    assert {s.group for s in samples} == {
        f"{index[s.path.name]['unit']}/{index[s.path.name]['day']}" for s in samples
    }
    assert len({s.group for s in samples}) < len(samples)


def test_export_refuses_a_non_empty_folder_and_an_unknown_id(
    made: datasets.Created, engine: Engine, tmp_path: Path
) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ControlRoomError, match="refusing to overwrite"):
        datasets.export_dataset(engine, made.id, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    datasets.export_dataset(engine, made.id, empty)  # an empty folder is fine
    assert (empty / "MANIFEST.json").is_file()
    with pytest.raises(ControlRoomError, match="no dataset version"):
        datasets.export_dataset(engine, "0" * 12, tmp_path / "x")
    with pytest.raises(ControlRoomError, match="8 hex digits"):
        datasets.export_dataset(engine, "abc", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_cli_create_export_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "controlroom.toml"
    cfg.write_text('[database]\nurl = "sqlite:///cr.sqlite"\n')
    assert main(["controlroom", "dataset", "create", "--config", str(cfg)]) == 1
    assert "no labelled examples" in capsys.readouterr().err
    engine = db.make_engine(f"sqlite:///{tmp_path / 'cr.sqlite'}")
    for i in range(4):
        add_collected(engine, f"unit-{i}", T0, "phone" if i % 2 else "no_phone", i)
    engine.dispose()
    assert main(["controlroom", "dataset", "create", "--config", str(cfg), "--note", "n1"]) == 0
    text = capsys.readouterr().out
    did = text.split("created dataset ")[1].split()[0]
    assert len(did) == 64
    assert main(["controlroom", "dataset", "create", "--config", str(cfg)]) == 0
    assert f"unchanged, already dataset {did}" in capsys.readouterr().out
    out = tmp_path / "ds"
    assert (
        main(
            ["controlroom", "dataset", "export", did[:12], "--out", str(out), "--config", str(cfg)]
        )
        == 0
    )
    assert datasets.rehash_export(out) == did
    assert (
        main(["controlroom", "dataset", "export", did, "--out", str(out), "--config", str(cfg)])
        == 1
    )
    assert "refusing to overwrite" in capsys.readouterr().err
    assert main(["controlroom", "dataset", "list", "--config", str(cfg)]) == 0
    assert did in capsys.readouterr().out


# ---------------------------------------------------------------- the Labels page


def test_labels_page_creates_a_version_and_shows_precision_with_its_interval(
    client: Any, ingest: Ingest, unit_a: Unit, engine: Engine
) -> None:
    token = login(client)
    page = client.get("/labels").text
    assert "No reviewed alerts yet." in page
    r = client.post("/labels/datasets", data={"csrf": token})
    assert "no labelled examples yet" in r.text
    assert client.post("/labels/datasets", data={"csrf": "wrong"}).status_code == 403
    aids = [put(ingest, unit_a)[0] for _ in range(10)]
    for aid in aids[:8]:
        confirm(client, token, aid)
    for aid in aids[8:]:
        reject(client, token, aid)
    r = client.post("/labels/datasets", data={"csrf": token, "note": "week 17"})
    with engine.connect() as conn:
        did = conn.execute(sa.select(db.datasets.c.id)).scalar_one()
    assert f"Created dataset {did[:12]}" in r.text
    assert (
        client.post("/labels/datasets", data={"csrf": token}).text.count(
            f"Nothing changed since dataset {did[:12]}"
        )
        == 1
    )
    page = client.get("/labels").text
    table = page[page.index('id="dataset-versions"') :]
    assert f'<code title="{did}">{did[:12]}</code>' in table
    assert "week 17" in table
    # 8 of 10 confirmed: precision 0.80, Wilson 95 % interval 0.49-0.94
    for tid, key in (("precision-unit", "unit-a"), ("precision-model", "phone-cls 1.2.0")):
        t = page[page.index(f'id="{tid}"') :]
        t = t[: t.index("</table>")]
        assert f'<td data-label="{"Unit" if tid.endswith("unit") else "Model"}">{key}</td>' in t
        assert '<td data-label="Precision">0.80</td>' in t
        assert '<td data-label="95 % interval">0.49–0.94</td>' in t
    assert [a for (a,) in _audit(engine, "dataset_create")] == ["alice"]


def _audit(engine: Engine, action: str) -> list[tuple[str]]:
    with engine.connect() as conn:
        return [
            (r.username,)
            for r in conn.execute(sa.select(db.audit).where(db.audit.c.action == action))
        ]


def test_wilson_interval() -> None:
    lo, hi = datasets.wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4)
    assert hi == pytest.approx(0.9433, abs=1e-4)
    assert datasets.wilson(0, 0) == (0.0, 1.0)
    lo, hi = datasets.wilson(0, 20)
    assert lo == 0.0
    assert hi == pytest.approx(0.1611, abs=1e-4)
    lo, hi = datasets.wilson(50, 50)
    assert lo == pytest.approx(0.9287, abs=1e-4)
    assert hi == 1.0


# ---------------------------------------------------------------- migration, PostgreSQL


def test_a_version_7_database_gains_provenance_and_keeps_its_labels(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'v7.sqlite'}")
    assert db.migrate(engine, target=1) == 1
    with engine.begin() as conn:  # the labels table exactly as versions 2-7 made it
        conn.execute(
            sa.text(
                "CREATE TABLE labels (id INTEGER PRIMARY KEY AUTOINCREMENT, unit VARCHAR(64) NOT "
                "NULL, name VARCHAR(128) NOT NULL, sha256 VARCHAR(64) NOT NULL, jpeg BLOB NOT NULL,"
                " received_at FLOAT NOT NULL, label VARCHAR(16), labelled_by VARCHAR(64), "
                "labelled_at FLOAT, CONSTRAINT uq_labels_unit_sha UNIQUE (unit, sha256))"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO labels (unit, name, sha256, jpeg, received_at, label,"
                " labelled_by, labelled_at) VALUES ('unit-a', 'lane1-1777000000000'"
                ", 'ab', x'ffd8', 5.0, 'phone', 'bob', 6.0)"
            )
        )
        conn.execute(
            db.schema_version.insert(), [{"version": v, "applied_at": 1.0} for v in range(2, 8)]
        )
    for fn in (db._v3, db._v5, db._v7):  # the other tables of versions 3-7
        with engine.begin() as conn:
            fn(conn)
    assert db.migrate(engine) == db.LATEST_VERSION == 11
    with engine.connect() as conn:
        row = conn.execute(sa.select(db.labels)).one()
        examples, _ = datasets.current_examples(conn)
    assert (row.source, row.alert_id, row.label) == ("collect", None, "phone")
    assert [(e.roi, e.taken_at, e.day) for e in examples] == [
        ("lane1", 1_777_000_000.0, "2026-04-24")
    ]
    engine.dispose()


@pytest.mark.slow
def test_review_labels_and_datasets_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    with pg_database(postgres_url) as url:
        pg = db.make_engine(url)
        try:
            db.migrate(pg)
            unit = Unit("unit-pg", generate_key())
            db.upsert_unit(pg, unit.unit_id, raw_pub_b64(unit.key), "0" * 16)
            ingest = Ingest(pg)
            aids = [put(ingest, unit, t=T0 + i * DAY_S)[0] for i in range(6)]
            now = time.time()
            with pg.begin() as conn:
                for i, aid in enumerate(aids):
                    conn.execute(
                        db.alerts.update()
                        .where(db.alerts.c.alert_id == aid)
                        .values(
                            status="confirmed" if i % 2 else "rejected",
                            reviewed_by="alice",
                            reviewed_at=now,
                        )
                    )
                    assert datasets.label_review(conn, aid)
                assert not datasets.label_review(conn, aids[0])  # once
                conn.execute(
                    db.alerts.update()
                    .where(db.alerts.c.alert_id == aids[0])
                    .values(status="new", reviewed_by=None, reviewed_at=None)
                )
                assert datasets.unlabel_review(conn, aids[0]) == 1  # as undo does
            for i in range(4):
                add_collected(pg, "unit-b", T0 + i * DAY_S, "phone", 50 + i)
            made = datasets.create_dataset(pg, user="alice")
            assert made.manifest["examples"] == 5 + 4
            assert datasets.create_dataset(pg, user="alice").id == made.id
            out = tmp_path / "pg-export"
            datasets.export_dataset(pg, made.id, out)
            assert datasets.rehash_export(out) == made.id
            with pg.connect() as conn:
                per_unit = datasets.precision_by(conn, "unit")
            assert [(p.key, p.confirmed, p.rejected) for p in per_unit] == [("unit-pg", 3, 2)]
        finally:
            pg.dispose()
