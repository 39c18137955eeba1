"""``bench/flywheel.py --upright``: the site as its units score it once the installer has set
each ROI's ``rotate_deg`` (the crops turned by the unit's own ``Roi.crop``)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.core.roi import Roi
from models import site_data as sd
from models.synth import site as synth_site

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def flywheel(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    return importlib.import_module("flywheel")


@pytest.mark.slow
def test_installing_upright_turns_each_units_crops_by_minus_its_roll(
    tmp_path: Path, flywheel: Any
) -> None:
    world = tmp_path / "world"
    synth_site.render_site(world, sessions=4, per_session=3, test_share=0.5)
    rows = sd.read_dataset(world)
    site = synth_site.SITES["gantry_tint"]
    for r in rows:
        roll = synth_site.unit_mount(site, 0, int(r.unit.rpartition("-u")[2])).roll
        assert flywheel.unit_rotation(r.unit, 0) == -round(roll)
        assert 15 <= abs(roll) <= 28  # the site's rolls: enough to matter
    out = flywheel.install_upright(world, tmp_path / "upright", 0)
    turned = {r.rel: r for r in sd.read_dataset(out)}
    assert sorted(turned) == sorted(r.rel for r in rows)  # same crops, labels and splits
    for r in rows:
        img = cv2.imread(str(r.path))
        assert img is not None
        roi = Roi.rect("w", 0, 0, 1, 1, margin=0, rotate_deg=flywheel.unit_rotation(r.unit, 0))
        got = cv2.imread(str(turned[r.rel].path))
        assert got is not None
        assert (turned[r.rel].label, turned[r.rel].split) == (r.label, r.split)
        assert np.abs(got.astype(int) - roi.crop(img).astype(int)).mean() < 1.0  # PNG: exact
        assert not np.array_equal(got, img)
    # kept and reused: a second call does not render again
    stamp = (out / "index.csv").stat().st_mtime_ns
    assert flywheel.install_upright(world, tmp_path / "upright", 0) == out
    assert (out / "index.csv").stat().st_mtime_ns == stamp
