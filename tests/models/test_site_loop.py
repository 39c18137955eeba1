"""The site-learning loop's real hops on a tiny site (``bench/site_loop.py``, what
``bench/flywheel.py`` runs): real units watch the site's frames and sample crops, a real
Mosquitto carries them to a real control room (SQLite), reviewers label the queue, a dataset
version is exported, and a signed candidate goes to every unit in shadow, then live, through
probation, after which the units' samples name it. Training and the gate between these hops are
``tests/models/test_site.py::test_tiny_site_loop_every_hop``."""

from __future__ import annotations

import importlib
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from edge.core import messages as m
from models import site as msite
from models import site_data as sd
from models.synth import site as synth_site

REPO = Path(__file__).resolve().parents[2]
SHIPPED = msite.DEFAULT_DEPLOYED

pytestmark = pytest.mark.slow


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Any:
    from edge.app.local_broker import find_mosquitto

    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed ('make bootstrap' installs it)")
    pytest.importorskip("fastapi", reason="the control room's extra is not installed")
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    return importlib.import_module("site_loop"), importlib.import_module("flywheel")


def sample_names(loop: Any) -> list[tuple[str, m.SampleName]]:
    from controlroom import db

    with loop.room.engine.begin() as conn:
        rows = conn.execute(sa.select(db.labels.c.unit, db.labels.c.name)).all()
    out = []
    for unit, name in rows:
        parsed = m.parse_sample_name(name)
        assert parsed is not None, name
        out.append((unit, parsed))
    return out


def test_units_sample_reviewers_label_a_dataset_is_exported_and_a_candidate_rolls_out(
    tmp_path: Path, bench: Any
) -> None:
    site_loop, flywheel = bench
    world = tmp_path / "world"
    synth_site.render_site(world, sessions=8, per_session=6, test_share=0.25, seed=3)
    rows = sd.read_dataset(world)
    units = sorted({r.unit for r in sd.split(rows, "train")})[:2]
    pool = [r for r in sd.split(rows, "train") if r.unit in units]
    # one session of the first unit is kept for after the rollout: the control room stores a
    # crop once (per unit and SHA-256), so a watch of frames already sampled adds nothing
    later_session = max(r.session for r in pool if r.unit == units[0])
    later_rows = [r for r in pool if r.session == later_session]
    pool = [r for r in pool if r.session != later_session]
    rotate = {u: flywheel.unit_rotation(u, 3) for u in units}
    # a band this wide takes nearly every phone-free frame: each day's uncertain budget
    # fills, so every watch yields crops whatever the random instants
    sampling = site_loop.Sampling(random_per_day=3, uncertain_per_day=3, band=0.5)
    with site_loop.SiteLoop(tmp_path / "loop", rotate, model=SHIPPED, sampling=sampling) as loop:
        # watch: each unit reads its frames offline; its sampler's crops reach the queue
        watched = loop.watch("c1", pool)
        assert watched == dict(Counter(r.unit for r in pool))
        queued = loop.wait_for_crops(at_least=1, settle_s=1.0)
        names = sample_names(loop)
        assert queued == len(names) > 0
        per_day = Counter((u, n.reason, n.t_wall_ms // 86_400_000) for u, n in names)
        assert max(per_day.values()) <= 3  # the per-day budgets, on the frames' (video) days
        assert {n.reason for _, n in names} <= {"random", "uncertain"}
        assert {n.model for _, n in names} == {"1_0_0"}  # the shipped model took them
        for u, n in names:  # every crop is a frame its unit watched, at that frame's time
            assert loop.truth_of(u, n.t_wall_ms / 1000) is not None
        for _, n in names:
            if n.reason == "uncertain":
                assert abs(n.score - 0.453) <= 0.5 + 1e-3

        # review: every queued crop labelled from its frame's truth
        reviewed = loop.review()
        assert sum(reviewed.values()) == queued
        assert not any(k.startswith("skip") for k in reviewed)
        truth = Counter(loop.truth_of(u, n.t_wall_ms / 1000).label for u, n in names)
        assert loop.queued() == 0

        # dataset: a content-hashed version, split by unit-day, readable by models.site
        did, manifest = loop.dataset(tmp_path / "export")
        counts = manifest["counts"]
        assert sum(c["phone"] for c in counts.values()) == truth[1]
        assert sum(c["no_phone"] for c in counts.values()) == truth[0]
        exported = sd.read_dataset(tmp_path / "export")
        assert len(exported) == queued
        assert {r.unit for r in exported} <= set(units)
        assert did == loop.dataset(tmp_path / "export-again")[0]  # nothing new: same version

        # roll out: signed, shadow on every unit, then live through probation
        cand = tmp_path / "cand" / "phone_in_hand_site.tflite"
        cand.parent.mkdir()
        shutil.copy(SHIPPED, cand)
        spec = json.loads(SHIPPED.with_suffix(".json").read_text(encoding="utf-8"))
        spec["version"] = "site-tiny"
        cand.with_suffix(".json").write_text(json.dumps(spec), encoding="utf-8")
        recent = {u: [r for r in pool if r.unit == u][:8] for u in units}
        report = loop.roll_out(cand, recent, name="r1", shadow_frames=5, timeout_s=90)
        assert set(report) == set(units)
        for r in report.values():
            assert r["version"] == "site-tiny"
            assert r["shadow_frames"] >= 5
            assert r["agreement"] == 1.0  # the same network: every call the same
        for u in units:
            live = loop.heartbeat(u)["model"]["live"]
            assert live["version"] == "site-tiny"

        # the next watch starts each unit on the model it kept: its samples name it
        before = len(sample_names(loop))
        loop.watch("c2", later_rows)  # new drivers, on a new day (a whole budget)
        loop.wait_for_crops(at_least=1, settle_s=1.0)
        later = sample_names(loop)[before:]
        assert later
        assert {n.model for _, n in later} == {"site_tiny"}
