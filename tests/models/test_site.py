"""Site learning (issue 18): the site renderer, the dataset export reader, the gate and, slow,
one tiny turn of the whole loop (render -> index.csv -> train -> candidate -> gate)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from models import site as msite
from models import site_data as sd
from models.synth import render as r
from models.synth import site as synth_site
from models.synth.render_dataset import render_dataset

TEST_DATA = Path(__file__).resolve().parents[1] / "data"
BRIGHTNESS = TEST_DATA / "brightness_int8.tflite"
SHIPPED = msite.DEFAULT_DEPLOYED


def _rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "index.csv").open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _write_rows(folder: Path, rows: list[dict[str, str]]) -> None:
    with (folder / "index.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


# -- the site renderer ---------------------------------------------------------------------------


@pytest.mark.slow
def test_site_render_writes_an_export_split_by_whole_sessions(tmp_path: Path) -> None:
    rows = synth_site.render_site(tmp_path / "a", sessions=6, per_session=4, test_share=0.34)
    assert len(rows) == 24
    on_disk = _rows(tmp_path / "a")
    assert [row["path"] for row in on_disk] == [row["path"] for row in rows]
    for col in (*sd.REQUIRED_COLUMNS, "session", "day", "file", "phone"):
        assert all(row[col] for row in on_disk), col
    sides: dict[str, set[str]] = {}
    for row in on_disk:
        sides.setdefault(row["session"], set()).add(row["split"])
        assert row["path"].startswith("phone/" if row["label"] == "phone" else "no_phone/")
        assert row["time"].startswith(row["day"])
        assert row["session"].startswith(row["unit"])
    assert all(len(s) == 1 for s in sides.values())  # never crop by crop
    assert {row["split"] for row in on_disk} == {"train", "test"}
    parsed = sd.read_dataset(tmp_path / "a")
    assert len(parsed) == 24
    assert sum(p.label for p in parsed) == 12
    # Deterministic by seed, byte for byte; another seed, other crops.
    synth_site.render_site(tmp_path / "b", sessions=6, per_session=4, test_share=0.34)
    for row in rows:
        assert (tmp_path / "a" / row["path"]).read_bytes() == (
            tmp_path / "b" / row["path"]
        ).read_bytes()
    other = synth_site.render_site(tmp_path / "c", sessions=6, per_session=4, seed=1)
    assert (tmp_path / "c" / other[0]["path"]).read_bytes() != (
        tmp_path / "a" / rows[0]["path"]
    ).read_bytes()


def test_site_crops_keep_session_conditions_and_show_their_phone() -> None:
    site = synth_site.SITES["gantry_tint"]
    s = synth_site.session(site, 0, 3)
    assert s == synth_site.session(site, 0, 3)
    assert site.tint[0] <= s.tint <= site.tint[1]
    for i in range(0, 12, 2):
        c = synth_site.site_crop(site, s, i, phone=True)
        k = c.extras["redraws"]
        without = synth_site._view(site, s, i, k, c.pose, phone_drawn=False)
        assert c.extras["phone_pixels"] == r.phone_pixels(c.image, without) >= r.MIN_PHONE_PIXELS
        assert c.session == s
        assert c.time >= s.start
        w = c.image.shape[1]
        assert site.crop_px[0] <= w <= site.crop_px[1]


def test_split_by_unit_keeps_each_unit_on_one_side() -> None:
    site = synth_site.SITES["gantry_tint"]
    sess = [synth_site.session(site, 0, n) for n in range(30)]
    splits = synth_site.assign_splits(sess, test_share=0.3, seed=0, by="unit")
    by_unit: dict[str, set[str]] = {}
    for s in sess:
        by_unit.setdefault(s.unit, set()).add(splits[s.name])
    assert all(len(v) == 1 for v in by_unit.values())
    assert len(by_unit) > 1


# -- the export reader ---------------------------------------------------------------------------


@pytest.fixture
def small_site(tmp_path: Path) -> Path:
    out = tmp_path / "site"
    synth_site.render_site(out, sessions=6, per_session=4, test_share=0.34)
    return out


def test_reader_refuses_missing_or_invalid_index(small_site: Path) -> None:
    rows = _rows(small_site)
    (small_site / "index.csv").unlink()
    with pytest.raises(sd.DatasetError, match="no index.csv"):
        sd.read_dataset(small_site)
    _write_rows(small_site, [{k: v for k, v in row.items() if k != "split"} for row in rows])
    with pytest.raises(sd.DatasetError, match="lacks column.*split"):
        sd.read_dataset(small_site)
    bad = [dict(row) for row in rows]
    bad[2]["label"] = "maybe"
    _write_rows(small_site, bad)
    with pytest.raises(sd.DatasetError, match="index.csv:4: label 'maybe'"):
        sd.read_dataset(small_site)
    bad = [dict(row) for row in rows]
    bad[0]["path"] = "../elsewhere.png"
    _write_rows(small_site, bad)
    with pytest.raises(sd.DatasetError, match="leaves the dataset folder"):
        sd.read_dataset(small_site)
    bad = [dict(row) for row in rows]
    bad[1]["phone"] = "1" if bad[1]["label"] == "no_phone" else "0"
    _write_rows(small_site, bad)
    with pytest.raises(sd.DatasetError, match="contradicts label"):
        sd.read_dataset(small_site)
    _write_rows(small_site, rows)
    assert len(sd.read_dataset(small_site)) == len(rows)


def test_reader_refuses_a_session_in_both_splits(small_site: Path) -> None:
    rows = _rows(small_site)
    i = next(k for k, row in enumerate(rows) if row["split"] == "test")
    rows[i]["split"] = "train"  # one crop of a held-out session moved to training
    _write_rows(small_site, rows)
    with pytest.raises(sd.DatasetError, match=f"session {rows[i]['session']} has crops in both"):
        sd.read_dataset(small_site)


def test_without_a_session_column_a_units_day_is_the_session(small_site: Path) -> None:
    rows = _rows(small_site)
    for row in rows:
        del row["session"], row["day"]
    _write_rows(small_site, rows)
    parsed = sd.read_dataset(small_site)
    assert parsed[0].session == f"{rows[0]['unit']}/{rows[0]['time'][:10]}"


def test_phonewatch_eval_reads_the_export_folder(small_site: Path) -> None:
    from edge.app import cli_models

    results, labels = cli_models.evaluate([(SHIPPED, None)], [small_site])
    name = next(iter(labels))
    cond = results[0].per_data[name]["by_condition"]
    assert {"unit", "split", "session", "lighting"} <= set(cond)


# -- the gate -------------------------------------------------------------------------------------


def _bright_dark_site(root: Path, sessions: int = 6, per: int = 10) -> Path:
    """An export whose phone crops are bright and phone-free ones dark: the brightness test
    model reads it perfectly, the shipped phone model at chance."""
    rng = np.random.default_rng(1)
    rows = []
    for s in range(sessions):
        for i in range(per):
            label = "phone" if i % 2 == 0 else "no_phone"
            level = 185 if label == "phone" else 70
            img = np.clip(rng.normal(level, 20, (48, 64, 3)), 0, 255).astype(np.uint8)
            rel = f"{label}/s{s}_{i:02d}.png"
            (root / label).mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(root / rel), img)
            rows.append(
                {
                    "path": rel,
                    "label": label,
                    "unit": f"u{s % 2}",
                    "roi": "lane1",
                    "time": f"2027-01-{s + 4:02d}T08:00:{i:02d}Z",
                    "source": "test",
                    "reviewer": "tester",
                    "split": "test" if s >= sessions - 3 else "train",
                    "session": f"sess{s}",
                }
            )
    _write_rows(root, rows)
    return root


def _bright_dark_standing(root: Path) -> Path:
    _bright_dark_site(root, sessions=2, per=20)
    (root / "index.csv").unlink()
    return root


@pytest.mark.slow
def test_gate_promotes_a_candidate_better_on_the_site_and_as_good_on_standing_sets(
    tmp_path: Path,
) -> None:
    site = _bright_dark_site(tmp_path / "site")
    standing = _bright_dark_standing(tmp_path / "standing" / "bright")
    res = msite.gate(
        BRIGHTNESS, SHIPPED, site, standing=[standing], n_boot=300, out=tmp_path / "eval"
    )
    assert res.promote, res.reasons
    assert res.site["candidate"]["recall"] == 1.0 > res.site["deployed"]["recall"]
    lo, hi = res.site["candidate"]["wilson95"]
    assert lo < 1.0 == hi  # an interval, not one point
    assert res.site["bootstrap95"]["difference"][0] > 0
    assert "== site/heldout" in res.report
    assert "brightness-int8" in res.report
    assert (tmp_path / "eval" / "metrics.json").is_file()
    assert json.loads((tmp_path / "eval" / "gate.json").read_text())["promote"] is True
    assert (
        msite.main(
            [
                "gate",
                "--candidate",
                str(BRIGHTNESS),
                "--deployed",
                str(SHIPPED),
                "--dataset",
                str(site),
                "--standing",
                str(standing),
            ]
        )
        == 0
    )


@pytest.mark.slow
def test_gate_refuses_a_candidate_worse_on_the_site(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _bright_dark_site(tmp_path / "site")
    standing = _bright_dark_standing(tmp_path / "standing" / "bright")
    res = msite.gate(SHIPPED, BRIGHTNESS, site, standing=[standing], n_boot=300)
    assert not res.promote
    assert any("not better on the site" in why for why in res.reasons)
    code = msite.main(
        [
            "gate",
            "--candidate",
            str(SHIPPED),
            "--deployed",
            str(BRIGHTNESS),
            "--dataset",
            str(site),
            "--standing",
            str(standing),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "GATE: REFUSE: not better on the site" in out
    assert "recall @ 5% FPR" in out


@pytest.mark.slow
def test_gate_refuses_a_candidate_worse_on_a_standing_set(tmp_path: Path) -> None:
    site = _bright_dark_site(tmp_path / "site")
    synth = tmp_path / "standing" / "synthetic"
    render_dataset(synth, count=60, seed=7)  # the shipped model reads these; brightness cannot
    res = msite.gate(BRIGHTNESS, SHIPPED, site, standing=[synth], n_boot=300, margin=0.05)
    assert not res.promote
    assert [why for why in res.reasons if why.startswith("worse on the standing set")]
    assert not any("not better on the site" in why for why in res.reasons)
    # A margin as wide as the gap lets it through.
    gap = res.standing["standing/synthetic"]
    wide = msite.gate(
        BRIGHTNESS,
        SHIPPED,
        site,
        standing=[synth],
        n_boot=300,
        margin=gap["deployed"] - gap["candidate"] + 0.01,
    )
    assert wide.promote, wide.reasons


def test_gate_refuses_a_dataset_it_cannot_judge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = _bright_dark_site(tmp_path / "site")
    standing = _bright_dark_standing(tmp_path / "standing" / "bright")
    args = [
        "gate",
        "--candidate",
        str(BRIGHTNESS),
        "--deployed",
        str(SHIPPED),
        "--dataset",
        str(site),
        "--standing",
        str(standing),
    ]
    rows = _rows(site)
    leak = [dict(row) for row in rows]
    leak[0]["split"] = "test"  # one crop of training session sess0 into the test split
    _write_rows(site, leak)
    assert msite.main(args) == 1
    assert "sess0 has crops in both" in capsys.readouterr().out
    (site / "index.csv").unlink()
    assert msite.main(args) == 1
    assert "no index.csv" in capsys.readouterr().out
    _write_rows(site, [{**row, "split": "train"} for row in rows])
    assert msite.main(args) == 1
    assert "no crops in the test split" in capsys.readouterr().out


def test_wilson_interval() -> None:
    lo, hi = msite.wilson(90, 100)
    assert lo == pytest.approx(0.8256, abs=1e-3)
    assert hi == pytest.approx(0.9448, abs=1e-3)
    assert msite.wilson(0, 0) == (0.0, 1.0)


def test_train_never_overwrites_a_candidate(tmp_path: Path, small_site: Path) -> None:
    out = tmp_path / "cand"
    out.mkdir()
    (out / "phone_in_hand_site.tflite").write_bytes(b"earlier")
    with pytest.raises(FileExistsError, match="never overwritten"):
        msite.train_candidate(small_site, SHIPPED, out)
    assert (out / "phone_in_hand_site.tflite").read_bytes() == b"earlier"


# -- the whole loop, tiny --------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_site_loop_every_hop(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow", reason="TensorFlow (the 'train' extra) is not installed")
    from edge.core.model_spec import load_spec

    site = tmp_path / "site"
    synth_site.render_site(site, sessions=10, per_session=8, test_share=0.3)
    opts = msite.TrainOptions(
        epochs=1,
        synthetic=40,
        epoch_synthetic=20,
        site_repeat=1,
        real=[],
        replay_kmitl=False,
        cache=tmp_path / "cache",
    )
    cand = msite.train_candidate(site, SHIPPED, tmp_path / "cand", opts)
    spec = load_spec(cand.with_suffix(".json"))
    fp = sd.fingerprint(sd.split(sd.read_dataset(site), "train"))
    assert spec.name == "phone-in-hand-site"
    assert spec.version == f"site-{fp[:12]}"
    assert spec.provenance["site"]["dataset_sha256"] == fp
    assert spec.provenance["continued_from"] == str(SHIPPED)
    assert spec.provenance["stages"][-1].startswith("python -m models.site train")
    par = spec.metrics["int8_float_parity"]
    assert "site" in par["by_domain"]
    assert par["mode"] == "metrics"
    # Site candidates train quantisation-aware, and the int8 file is checked against the
    # network as it was trained (rounding on), not against its unrounded float scores.
    assert spec.provenance["qat"] is True
    assert "--qat" in par["reference"]
    site_par = par["metrics_by_domain"]["site"]
    assert site_par["worse"] == []
    assert site_par["auc_int8"] >= site_par["auc_float"] - 0.01
    assert spec.metrics["validation"]["site"]["n"] > 0
    assert "Candidate: phone-in-hand-site" in (cand.parent / "CARD.md").read_text()
    with pytest.raises(FileExistsError):
        msite.train_candidate(site, SHIPPED, tmp_path / "cand", opts)
    synth = tmp_path / "standing" / "synthetic"
    render_dataset(synth, count=40, seed=7)
    res = msite.gate(cand, SHIPPED, site, standing=[synth], n_boot=200)
    assert res.checks
    assert "== site/heldout" in res.report
    assert "phone-in-hand-site" in res.report
    assert res.promote == (not res.reasons)
