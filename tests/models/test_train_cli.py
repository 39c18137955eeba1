"""``python -m models.train`` and ``models.site train`` on the command line: what they refuse,
what they warn about, and how a retrained model is named (issue 20)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from models import site as msite
from models import train
from models.synth import site as synth_site

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "phone_in_hand" / "phone_in_hand.tflite"
NO_TENSORFLOW = "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "


def _folder(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` bright phone crops and ``n`` dark phone-free ones, each its own group."""
    rng = np.random.default_rng(seed)
    for label, level in (("phone", 190), ("no_phone", 60)):
        (root / label).mkdir(parents=True)
        for i in range(n):
            img = np.clip(rng.normal(level, 25, (40, 56, 3)), 0, 255).astype(np.uint8)
            assert cv2.imwrite(str(root / label / f"{label}_{i:03d}.png"), img)
    return root


# -- the train extra ---------------------------------------------------------------------------


@pytest.mark.slow  # a fresh interpreter / a rendered site: about 1-2 s
def test_train_without_the_train_extra_says_how_to_install_it(tmp_path: Path) -> None:
    data = _folder(tmp_path / "site", 3)
    run = (
        NO_TENSORFLOW + "import runpy; sys.argv = ['models.train', '--out', sys.argv[1], "
        "'--real', sys.argv[2]]; runpy.run_module('models.train', run_name='__main__')"
    )
    r = subprocess.run(
        [sys.executable, "-c", run, str(tmp_path / "out"), str(data)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "models.train: python -m models.train needs TensorFlow/Keras" in r.stderr
    assert "pip install -e '.[train]'" in r.stderr
    assert "make bootstrap EXTRAS=dev,train" in r.stderr
    assert not (tmp_path / "out").exists()  # it stopped before writing anything


@pytest.mark.slow  # a fresh interpreter / a rendered site: about 1-2 s
def test_site_train_without_the_train_extra_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = tmp_path / "site"
    synth_site.render_site(dataset, sessions=6, per_session=4, test_share=0.34)
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    monkeypatch.setitem(sys.modules, "keras", None)
    argv = ["train", "--dataset", str(dataset), "--init", str(SHIPPED), "--out"]
    code = msite.main([*argv, str(tmp_path / "cand"), "--val-share", "0.4"])
    assert code == 2
    err = capsys.readouterr().err
    assert "needs TensorFlow/Keras (the 'train' extra)" in err
    assert "pip install -e '.[train]'" in err
    assert not (tmp_path / "cand").exists()


# -- --out, --name, --version ------------------------------------------------------------------


def test_train_refuses_a_non_empty_out_unless_forced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _folder(tmp_path / "site", 3)
    out = tmp_path / "run"
    out.mkdir()
    (out / "phone_in_hand.tflite").write_bytes(b"an earlier run")
    ran: list[train.TrainConfig] = []

    def fake_train(cfg: train.TrainConfig) -> dict[str, object]:
        ran.append(cfg)
        return {"model": "m", "threshold": 0.5, "name": cfg.name, "version": "v"}

    monkeypatch.setattr(train, "train", fake_train)
    args = ["--out", str(out), "--real", str(data)]
    with pytest.raises(SystemExit) as e:
        train.main(args)
    assert e.value.code == 2
    assert f"--out {out} is not empty" in capsys.readouterr().err
    assert not ran
    assert (out / "phone_in_hand.tflite").read_bytes() == b"an earlier run"
    assert train.main([*args, "--force", "--name", "phone-in-hand-b", "--version", "2.0"]) == 0
    assert [(c.out, c.name, c.version) for c in ran] == [(out, "phone-in-hand-b", "2.0")]
    (tmp_path / "empty").mkdir()  # an empty folder is as good as a new one
    assert train.main(["--out", str(tmp_path / "empty"), "--real", str(data)]) == 0
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit):
        train.main(["--out", str(tmp_path / "afile"), "--real", str(data), "--force"])
    assert "is a file, not a folder" in capsys.readouterr().err


def test_train_refuses_the_name_and_version_of_the_model_it_continues(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _folder(tmp_path / "site", 3)
    init = tmp_path / "parent" / "phone_in_hand.keras"
    init.parent.mkdir()
    init.write_bytes(b"keras")
    init.with_suffix(".json").write_text(
        json.dumps({"name": "phone-in-hand", "version": "1.0.0", "threshold": 0.45})
    )
    base = ["--out", str(tmp_path / "o"), "--real", str(data), "--init", str(init)]
    with pytest.raises(SystemExit):
        train.main([*base, "--version", "1.0.0"])
    assert "are those of the model --init continues" in capsys.readouterr().err
    assert train.name_problem(init, "phone-in-hand", "1.0.1") is None
    assert train.name_problem(init, "phone-in-hand-b", "1.0.0") is None
    assert train.name_problem(init, "phone-in-hand", None) is None  # a new one is derived


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--val-share", "1", "--val-share 1: give the share of each folder held out"),
        ("--val-share", "-0.1", "--val-share -0.1: give the share"),
        ("--target-fpr", "5", "--target-fpr 5: give a false-positive rate, 0 to <1"),
    ],
)
def test_train_refuses_shares_out_of_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, says: str
) -> None:
    data = _folder(tmp_path / "site", 3)
    with pytest.raises(SystemExit) as e:
        train.main(["--out", str(tmp_path / "o"), "--real", str(data), flag, value])
    assert e.value.code == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_default_version_is_the_date_and_the_data_never_the_parents() -> None:
    now = dt.datetime(2026, 12, 7, 8, 30, 5, tzinfo=dt.UTC)
    fp = "0123456789abcdef" * 4
    assert train.default_version(fp, now) == "20261207-01234567"
    assert train.default_version(fp, now, "1.0.0") == "20261207-01234567"
    # the same data the same day (e.g. an export at another --target-fpr): the time is added
    assert train.default_version(fp, now, "20261207-01234567") == "20261207T083005-01234567"


def test_the_recorded_command_keeps_a_name_of_its_own(tmp_path: Path) -> None:
    # the name sets the file names, so repeating the run needs it; the version is derived again
    named = train.TrainConfig(out=tmp_path, real=[], name="phone-in-hand-b", version="v1")
    assert "--name phone-in-hand-b" in train.command_line(named)
    assert "--version" not in train.command_line(named)
    assert "--name" not in train.command_line(train.TrainConfig(out=tmp_path, real=[]))


# -- warnings ----------------------------------------------------------------------------------


def test_a_tiny_folder_split_warns_that_validation_is_too_small(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = _folder(tmp_path / "site", 3)
    cfg = train.TrainConfig(out=tmp_path / "o", real=[data], val_share=0.2, target_fpr=0.05)
    with caplog.at_level(logging.WARNING, logger="models.train"):
        tr, va, warnings = train._split_real(cfg)
    (w,) = warnings
    assert f"split {len(tr)} train, {len(va)} validation" in w
    assert "too few to set a threshold for 5% FPR" in w
    assert "need at least 20 phone-free and 10 phone crops" in w
    assert "about 150 images in the folder at --val-share 0.2" in w
    assert w in caplog.text
    big = _folder(tmp_path / "big", 80, seed=1)
    _, va_big, none = train._split_real(
        train.TrainConfig(out=tmp_path / "o", real=[big], val_share=0.3)
    )
    assert none == []
    assert len(va_big) >= 30
    # --val-share 0 holds nothing out of the folder: nothing to warn about there
    _, va_none, quiet = train._split_real(
        train.TrainConfig(out=tmp_path / "o", real=[data], val_share=0.0)
    )
    assert va_none == []
    assert quiet == []


def test_validation_shortfall_names_what_is_needed() -> None:
    assert train.validation_shortfall(10, 20, 0.05) is None
    assert train.validation_shortfall(200, 200, 0.01) is None
    short = train.validation_shortfall(3, 1, 0.05)
    assert short is not None
    assert "3 phone and 1 phone-free validation crops" in short
    assert "one phone-free crop is 100% FPR" in short
    assert "need at least 20 phone-free and 10 phone crops" in short
    assert "no phone-free crop" in (train.validation_shortfall(4, 0, 0.05) or "")
    assert "need at least 100 phone-free" in (train.validation_shortfall(50, 50, 0.01) or "")
    assert train.validation_shortfall(9, 500, 0.05) is not None
    # a target of 0 (flag no phone-free crop): still needs some of each, and does not divide
    assert train.validation_shortfall(10, 10, 0.0) is None
    assert "need at least 10 phone-free" in (train.validation_shortfall(3, 2, 0.0) or "")


def test_a_threshold_far_from_the_parents_warns_with_both(tmp_path: Path) -> None:
    drift = train.threshold_drift(0.176, 0.453)
    assert drift is not None
    assert "0.176" in drift
    assert "0.453" in drift
    assert train.threshold_drift(0.44, 0.453) is None
    assert train.threshold_drift(0.05, 0.02) is not None  # 2.5 times: the scale moved
    assert train.threshold_drift(0.5, None) is None
    # wired to the parent's sidecar, beside the model the run continues
    init = tmp_path / "phone_in_hand.keras"
    init.with_suffix(".json").write_text(json.dumps({"threshold": 0.453}))
    cfg = train.TrainConfig(out=tmp_path / "o", real=[], init=init, target_fpr=0.05)
    y = np.array([1] * 30 + [0] * 60)
    (w,) = train._threshold_warnings(cfg, y, 0.176)
    assert "0.176" in w
    assert "0.453" in w
    assert str(init) in w
    assert train._threshold_warnings(cfg, y, 0.46) == []
    assert train._threshold_warnings(cfg, y[25:40], 0.46)  # 5 phone, 10 phone-free: a guess
