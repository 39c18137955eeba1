"""Training-data helpers: grouped splits, fingerprints, augmentation (no TensorFlow)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.core.preprocess import InputSpec
from models import data as mdata
from models.synth.render import render_crop
from models.synth.render_dataset import render_dataset


@pytest.mark.slow
def test_split_never_shares_a_group(tmp_path: Path) -> None:
    render_dataset(tmp_path / "d", count=40, seed=2, size=(40, 30))
    samples = mdata.list_folder(tmp_path / "d")
    # Fake "source frames": 4 images per group.
    samples = [
        mdata.Sample(s.path, s.label, f"g{i // 4:02d}", s.domain) for i, s in enumerate(samples)
    ]
    train, val = mdata.split_groups(samples, val_share=0.25, seed=0, run=2)
    assert {s.group for s in train}.isdisjoint({s.group for s in val})
    assert len(train) + len(val) == 40
    assert 8 <= len(val) <= 16


def test_kmitl_groups_come_from_labels_csv(shared_data: Path) -> None:
    root = shared_data / "datasets" / "kmitl" / "train"
    samples = mdata.list_folder(root)
    assert len(samples) == 730
    with (root.parent / "labels.csv").open(encoding="utf-8") as f:
        frames = {Path(r["path"]).name: r["source_frame"] for r in csv.DictReader(f)}
    assert all(s.group == frames[s.path.name] for s in samples)
    train, val = mdata.split_groups(samples, val_share=0.2, seed=0)
    assert {s.group for s in train}.isdisjoint({s.group for s in val})
    assert {s.label for s in val} == {0, 1}


def test_fingerprint_follows_content(tmp_path: Path) -> None:
    render_dataset(tmp_path / "d", count=6, seed=1, size=(32, 32))
    samples = mdata.list_folder(tmp_path / "d")
    fp = mdata.fingerprint(samples)
    assert fp == mdata.fingerprint(list(reversed(samples)))
    samples[0].path.write_bytes(samples[1].path.read_bytes())
    assert mdata.fingerprint(samples) != fp


def test_bad_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mdata.list_folder(tmp_path / "none")
    (tmp_path / "x" / "phone").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no_phone"):
        mdata.list_folder(tmp_path / "x")
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"bad\.png"):
        mdata.load_image(tmp_path / "bad.png")


def test_augment_is_seeded_and_feeds_the_shared_preprocess() -> None:
    img = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    a = mdata.augment(img, np.random.default_rng(5))
    b = mdata.augment(img, np.random.default_rng(5))
    assert np.array_equal(a, b)
    assert a.dtype == np.uint8
    assert a.ndim == 3
    outs = {mdata.augment(img, np.random.default_rng(s)).tobytes() for s in range(8)}
    assert len(outs) == 8
    spec = InputSpec(width=48, height=48)
    x = mdata.to_tensors([a, img], spec)
    assert x.shape == (2, 48, 48, 3)
    assert x.dtype == np.float32
    assert x.min() >= -1.0001
    assert x.max() <= 1.0001


@pytest.mark.slow
def test_partial_view_slides_the_scene_out_of_the_crop() -> None:
    img, _ = render_crop(7, 1)
    w = img.shape[1]
    seen = set()
    for k in range(40):
        out = mdata.partial_view(img, np.random.default_rng(k))
        assert out.shape == img.shape
        assert out.dtype == np.uint8
        # some leading or trailing block of columns is the scene, slid sideways
        entering = next((g for g in range(1, w) if (out[:, : w - g] == img[:, g:]).all()), None)
        leaving = next((g for g in range(1, w) if (out[:, g:] == img[:, : w - g]).all()), None)
        gone = entering if entering is not None else leaving
        assert gone is not None
        assert 0.3 * w - 1 <= gone <= 0.7 * w + 1
        seen.add(entering is not None)
    assert seen == {True, False}  # both directions
    grey = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    out = mdata.partial_view(grey, np.random.default_rng(0))
    assert (out[..., 0] == out[..., 1]).all()
    assert (out[..., 1] == out[..., 2]).all()


def test_only_phone_free_crops_are_slid() -> None:
    from models import train

    crops = [render_crop(7, i)[0] for i in range(6)]
    items = [(c, int(i % 2 == 0), False) for i, c in enumerate(crops)]
    out = train._slide_negatives(items, np.random.default_rng(0), 1.0)
    for (c, y, _), (o, y2, _) in zip(items, out, strict=True):
        assert y == y2
        assert (o is c) == (y == 1)  # every phone-free crop replaced, no phone crop touched
    assert train._slide_negatives(items, np.random.default_rng(0), 0.0) == items
