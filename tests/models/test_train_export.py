"""A tiny real training run, full-int8 export and float/int8 parity (needs the train extra)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="TensorFlow (the 'train' extra) is not installed")

from edge.adapters.classifier import LiteRTClassifier
from edge.core.model_spec import load_spec
from edge.core.preprocess import InputSpec
from models import data as mdata
from models import export, train
from models.synth.render import render_crop

pytestmark = pytest.mark.slow


def _site_folder(root: Path, n: int) -> Path:
    """A force's own crops, reduced to something a tiny net learns in seconds: phone crops are
    bright, phone-free ones dark (both with texture)."""
    rng = np.random.default_rng(0)
    for label, level in (("phone", 190), ("no_phone", 60)):
        (root / label).mkdir(parents=True)
        for i in range(n):
            img = np.clip(rng.normal(level, 25, (60, 80, 3)), 0, 255).astype(np.uint8)
            assert cv2.imwrite(str(root / label / f"{label}_{i:03d}.png"), img)
    return root


def test_tiny_training_run_exports_a_loadable_full_int8_model(tmp_path: Path) -> None:
    site = _site_folder(tmp_path / "site", 30)
    cfg = train.TrainConfig(
        out=tmp_path / "out",
        real=[site],
        synthetic=0,
        epoch_synthetic=0,
        arch="tiny",
        size=32,
        epochs=4,
        batch=16,
        real_repeat=6,
        lr=1e-2,
        val_share=0.3,
        target_fpr=0.1,
        version="0.0.1-test",
        parity_min=0.9,
    )
    record = train.train(cfg)
    model = tmp_path / "out" / "phone_in_hand.tflite"
    assert Path(record["model"]) == model
    assert export.check_full_int8(model) == []
    spec = load_spec(model.with_suffix(".json"))
    assert spec.labels == ("no_phone", "phone")
    assert spec.positive_labels == ("phone",)
    assert (spec.input.width, spec.input.height) == (32, 32)
    assert spec.threshold == pytest.approx(record["threshold"], abs=1e-6)
    assert spec.provenance["training_data_sha256"] == mdata.fingerprint(
        mdata.list_folder(site, domain=f"{tmp_path.name}/site"),
        extra=f"synthetic:{train.SYNTH_TRAIN_SEED}:0:renderer:{train.renderer_id()}",
    )
    par = spec.metrics["int8_float_parity"]
    # ~18 validation crops: one flipped decision is 5.5 %; the parity of the export itself is
    # checked on 200 crops below.
    assert par["matched_operating_point"]["agreement"] >= 0.9 == par["required"]
    val = spec.metrics["validation"]["real"]
    assert val["roc_auc"] > 0.9  # it learned the (easy) task
    with LiteRTClassifier.open(model) as clf:  # checks the sidecar's sha256 too
        bright = clf.score(np.full((60, 80, 3), 200, np.uint8))
        dark = clf.score(np.full((60, 80, 3), 50, np.uint8))
        assert 0.0 <= dark < bright <= 1.0


def test_export_keeps_int8_decisions_equal_to_float(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import keras

    keras.utils.set_random_seed(1)
    model = train.build_model("tiny", 32, 0.35, "none")
    # Spread the untrained network's outputs so the decision depends on the input.
    dense = model.get_layer("p")
    w, b = dense.get_weights()
    dense.set_weights([w * 40.0, b])
    spec = InputSpec(width=32, height=32)
    rep = mdata.to_tensors([render_crop(11, i)[0] for i in range(100)], spec)
    val = mdata.to_tensors([render_crop(12, i)[0] for i in range(200)], spec)
    tfl = export.export_int8(model, rep, tmp_path / "m.tflite")
    assert "TensorSpec" not in capsys.readouterr().out  # the signature dump stays out
    assert export.check_full_int8(tfl) == []
    assert export.model_ops(tfl)
    assert "DELEGATE" not in export.model_ops(tfl)
    float_p = model.predict(val, verbose=0)[:, 1].astype(np.float64)
    int8_p = export.tflite_scores(tfl, val)
    assert float_p.std() > 0.05  # a real spread of scores, not a constant
    thr = float(np.median(float_p))
    par = export.parity(float_p, int8_p, [thr])
    assert par["mean_abs_diff"] < 0.03
    assert min(par["agreement"].values()) >= 0.97
    json.dumps(par)


def test_train_cli_refuses_a_test_split(tmp_path: Path) -> None:
    (tmp_path / "test").mkdir()
    with pytest.raises(SystemExit):
        train.main(["--out", str(tmp_path / "o"), "--real", str(tmp_path / "test")])


def test_imagenet_weights_from_a_quantised_tflite_reproduce_its_predictions(
    shared_data: Path,
) -> None:
    import cv2
    import keras

    from edge.core.preprocess import preprocess
    from models.pretrained import _dequant, mobilenet_v1_backbone

    tfl = shared_data / "models" / "mobilenet_v1_0.25_128_quant.tflite"
    inp = keras.Input((128, 128, 3))
    feats = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(mobilenet_v1_backbone(tfl, inp)))
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(
        model_path=str(tfl),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    it.allocate_tensors()
    head = [o for o in it._get_ops_details() if o["op_name"] == "CONV_2D"][-1]
    w = _dequant(it, int(head["inputs"][1]))[:, 0, 0, :]
    b = _dequant(it, int(head["inputs"][2]))
    inp_d, out_d = it.get_input_details()[0], it.get_output_details()[0]
    for name in ("coral_grace_hopper.bmp", "coral_squat.bmp", "coral_face.jpg"):
        img = cv2.imread(str(shared_data / "images" / name))
        x = preprocess(np.asarray(img), InputSpec(width=128, height=128))[None]
        ours = int(np.argmax(w @ feats.predict(x, verbose=0)[0] + b))
        it.set_tensor(inp_d["index"], np.clip(np.rint(x * 128) + 128, 0, 255).astype(np.uint8))
        it.invoke()
        top3 = np.argsort(-it.get_tensor(out_d["index"])[0].astype(int), kind="stable")[:3]
        assert ours in top3, name  # uint8 outputs tie; the rebuilt float net picks one of them


def test_batchnorm_starts_as_the_identity_and_noise_layers_vanish_at_export(
    shared_data: Path, tmp_path: Path
) -> None:
    import keras

    from models.pretrained import identity_batchnorm, mobilenet_v1_backbone

    tfl = shared_data / "models" / "mobilenet_v1_0.25_128_quant.tflite"
    spec = InputSpec(width=128, height=128)
    x = mdata.to_tensors([render_crop(3, i)[0] for i in range(24)], spec)
    inp = keras.Input((128, 128, 3))
    plain = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(mobilenet_v1_backbone(tfl, inp)))
    inp2 = keras.Input((128, 128, 3))
    feats = mobilenet_v1_backbone(tfl, inp2, batchnorm=True, act_noise=0.02)
    with_bn = keras.Model(inp2, keras.layers.GlobalAveragePooling2D()(feats))
    want = plain.predict(x, verbose=0)
    before = with_bn.predict(x, verbose=0)
    assert identity_batchnorm(with_bn, x) == 27
    after = with_bn.predict(x, verbose=0)
    # Default batch norm (variance 1, epsilon 1e-3) shrinks every layer a little; set as the
    # identity the network computes the ImageNet features again.
    assert np.abs(before - want).max() > 1e-3
    np.testing.assert_allclose(after, want, atol=2e-4)
    # Noise is for training only: two training-mode passes differ, and the export has no trace.
    noisy = [np.asarray(with_bn(x[:2], training=True)) for _ in range(2)]
    assert np.abs(noisy[0] - noisy[1]).max() > 0
    head = keras.layers.Dense(2, activation="softmax")(with_bn.output)
    out = export.export_int8(keras.Model(with_bn.input, head), x, tmp_path / "m.tflite")
    assert export.check_full_int8(out) == []
    assert "BATCH_NORM" not in " ".join(export.model_ops(out))


def test_a_continued_run_records_every_stage(tmp_path: Path) -> None:
    first = tmp_path / "s1"
    first.mkdir()
    (first / "m.json").write_text(
        json.dumps(
            {
                "provenance": {
                    "stages": ["python -m models.train --out STAGE1 --arch tiny"],
                    "total_epochs": 3,
                }
            }
        )
    )
    cfg = train.TrainConfig(
        out=tmp_path / "s2",
        real=[Path("/x/shared/data/datasets/k/train")],
        init=first / "m.keras",
        lr=3e-4,
        epochs=2,
    )
    stages = train._stages(cfg, train._init_provenance(cfg.init))
    assert stages[0] == "python -m models.train --out STAGE1 --arch tiny"
    assert stages[1].startswith(
        "python -m models.train --out STAGE2 --real ../shared/data/datasets/k/train "
    )
    assert "--init STAGE1/m.keras" in stages[1]
    assert "--lr 0.0003 --epochs 2" in stages[1]
    assert "--arch" not in stages[1]  # the architecture comes from the model it continues
    fresh = train.TrainConfig(
        out=tmp_path / "o",
        real=[],
        arch="mobilenetv1",
        batchnorm=True,
        weights="/w/shared/data/models/mnv1.tflite",
        act_noise=0.014,
        partial_view=0.15,
        hard_share=0.3,
    )
    (only,) = train._stages(fresh, {})
    assert (
        "--weights ../shared/data/models/mnv1.tflite --batchnorm --act-noise 0.014 "
        "--partial-view 0.15 --hard-share 0.3 " in only
    )


def test_a_continued_run_keeps_the_settings_of_the_model_it_starts_from(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text(
        json.dumps(
            {
                "provenance": {
                    "arch": "mobilenetv1",
                    "alpha": 0.25,
                    "weights": "/w/mnv1.tflite",
                    "batchnorm": True,
                    "act_noise": 0.014,
                }
            }
        )
    )
    cfg = train.TrainConfig(out=tmp_path / "o", real=[], init=tmp_path / "m.keras")
    # the defaults (mobilenetv2, 96 px) would not fit it
    got = train._continued(cfg, 128, train._init_provenance(cfg.init))
    assert (got.size, got.arch, got.alpha, got.weights, got.batchnorm, got.act_noise) == (
        128,
        "mobilenetv1",
        0.25,
        "/w/mnv1.tflite",
        True,
        0.014,
    )
    assert (got.lr, got.epochs) == (cfg.lr, cfg.epochs)  # the new stage's own schedule


def test_the_crop_cache_is_keyed_by_the_renderer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crops, _ = train._render_synth(5, 4, tmp_path)
    (cached,) = tmp_path.glob("synth_5_4_*.pkl")
    assert cached.name == f"synth_5_4_{train.renderer_id()}.pkl"
    again, _ = train._render_synth(5, 4, tmp_path)  # read back, same pixels
    assert all((a == b).all() for a, b in zip(crops, again, strict=True))
    monkeypatch.setattr(train, "renderer_id", lambda: "otherrender0")
    train._render_synth(5, 4, tmp_path)  # another renderer: drawn again, not read
    assert len(list(tmp_path.glob("synth_5_4_*.pkl"))) == 2


def test_a_larger_crop_set_renders_only_the_crops_the_cache_lacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    four, _ = train._render_synth(5, 4, tmp_path)
    drawn: list[int] = []

    def counting(seed: int, index: int, **kw: object) -> tuple[np.ndarray, object]:
        drawn.append(index)
        return render_crop(seed, index, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(train, "render_crop", counting)
    six, six_y = train._render_synth(5, 6, tmp_path)
    assert drawn == [4, 5]  # the first four came from the cache
    assert all((a == b).all() for a, b in zip(four, six[:4], strict=True))
    assert six_y.tolist() == [1, 0, 1, 0, 1, 0]
    three, three_y = train._render_synth(5, 3, tmp_path)  # a smaller set: nothing drawn
    assert drawn == [4, 5]
    assert len(three) == 3
    assert three_y.tolist() == [1, 0, 1]
    assert all((a == b).all() for a, b in zip(four[:3], three, strict=True))
    assert not list(tmp_path.glob("*.part"))


def test_a_continued_run_can_change_the_input_size(tmp_path: Path) -> None:
    site = _site_folder(tmp_path / "site", 12)
    common = {
        "real": [site],
        "synthetic": 0,
        "epoch_synthetic": 0,
        "batch": 16,
        "real_repeat": 2,
        "val_share": 0.3,
        "target_fpr": 0.1,
        "parity_min": 0.0,
    }
    train.train(train.TrainConfig(out=tmp_path / "s1", arch="tiny", size=32, epochs=1, **common))  # type: ignore[arg-type]
    argv = [
        "--out",
        str(tmp_path / "s2"),
        "--real",
        str(site),
        "--synthetic",
        "0",
        "--init",
        str(tmp_path / "s1" / "phone_in_hand.keras"),
        "--size",
        "48",
    ]
    cfg = train.TrainConfig(
        out=tmp_path / "s2",
        init=tmp_path / "s1" / "phone_in_hand.keras",
        resize=48,
        epochs=1,
        **common,  # type: ignore[arg-type]
    )
    assert "--size 48" in train.command_line(cfg)
    assert (
        train.main(
            [
                *argv,
                "--epochs",
                "1",
                "--epoch-synthetic",
                "0",
                "--batch",
                "16",
                "--val-share",
                "0.3",
                "--target-fpr",
                "0.1",
                "--parity-min",
                "0",
            ]
        )
        == 0
    )
    spec = load_spec(tmp_path / "s2" / "phone_in_hand.json")
    assert (spec.input.width, spec.input.height) == (48, 48)
    assert spec.provenance["input_size"] == 48
    assert spec.provenance["total_epochs"] == 2
    assert "--size 48" in spec.provenance["stages"][-1]
    with LiteRTClassifier.open(tmp_path / "s2" / "phone_in_hand.tflite") as clf:
        assert clf.score(np.full((60, 80, 3), 200, np.uint8)) >= 0.0


def test_resizing_a_model_keeps_its_weights() -> None:
    model = train.build_model("tiny", 32, 1.0, "none")
    bigger = train._resized(model, 56)
    assert bigger.input_shape == (None, 56, 56, 3)
    assert all(
        (a == b).all() for a, b in zip(model.get_weights(), bigger.get_weights(), strict=True)
    )


def test_zero_epochs_exports_the_same_weights_at_another_operating_point(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import keras

    site = _site_folder(tmp_path / "site", 20)
    common = [
        "--real",
        str(site),
        "--synthetic",
        "0",
        "--epoch-synthetic",
        "0",
        "--batch",
        "16",
        "--val-share",
        "0.4",
        "--parity-min",
        "0",
        "--seed",
        "3",
    ]
    with pytest.raises(SystemExit):  # nothing to export without a model
        train.main(["--out", str(tmp_path / "x"), *common, "--epochs", "0"])
    caplog.set_level(logging.WARNING, logger="models.train")
    assert (
        train.main(
            [
                "--out",
                str(tmp_path / "s1"),
                *common,
                "--arch",
                "tiny",
                "--size",
                "32",
                "--epochs",
                "2",
                "--lr",
                "0.01",
                "--target-fpr",
                "0.0",
            ]
        )
        == 0
    )
    first = load_spec(tmp_path / "s1" / "phone_in_hand.json")
    init = tmp_path / "s1" / "phone_in_hand.keras"
    # 8 + 8 validation crops cannot set a threshold: the end of the run says so
    assert "check: threshold" in caplog.text
    assert "too few to set a threshold for 0% FPR" in caplog.text
    assert (
        train.main(
            [
                "--out",
                str(tmp_path / "s2"),
                *common,
                "--init",
                str(init),
                "--epochs",
                "0",
                "--target-fpr",
                "0.5",
            ]
        )
        == 0
    )
    again = load_spec(tmp_path / "s2" / "phone_in_hand.json")
    # each export gets a version of its own: the date and the data's fingerprint, with the
    # time added here (same data, same day as the model it continues)
    fp = first.provenance["training_data_sha256"][:8]
    assert (first.name, again.name) == ("phone-in-hand", "phone-in-hand")
    assert re.fullmatch(rf"\d{{8}}-{fp}", first.version)
    assert re.fullmatch(rf"\d{{8}}(T\d{{6}})?-{fp}", again.version)
    assert again.version != first.version
    a, b = keras.models.load_model(init), keras.models.load_model(tmp_path / "s2" / init.name)
    assert all((u == v).all() for u, v in zip(a.get_weights(), b.get_weights(), strict=True))
    assert again.provenance["total_epochs"] == first.provenance["total_epochs"] == 2
    assert again.provenance["history"] == first.provenance["history"] != []
    assert "--epochs 0" in again.provenance["stages"][-1]
    assert "--target-fpr 0.5" in again.provenance["stages"][-1]
    val_first, val_again = first.metrics["validation"], again.metrics["validation"]
    assert (val_first["target_fpr"], val_again["target_fpr"]) == (0.0, 0.5)
    assert val_first["all"]["fpr"] == 0.0
    assert val_again["all"]["fpr"] <= 0.5
    # a higher false-positive target can only lower the threshold
    assert again.threshold <= first.threshold


def test_hard_share_adds_the_highest_loss_crops_of_a_random_pool() -> None:
    losses = np.random.default_rng(5).random(1000)
    plain = train._pick_synthetic(1000, 100, np.random.default_rng(9))
    # without --hard-share: a random draw without repeats (the draw earlier stages made)
    assert np.array_equal(plain, np.random.default_rng(9).permutation(1000)[:100])
    asked: list[np.ndarray] = []

    def loss_of(idx: np.ndarray) -> np.ndarray:
        asked.append(idx.copy())
        picked: np.ndarray = losses[idx]
        return picked

    got = train._pick_synthetic(1000, 100, np.random.default_rng(9), 0.3, loss_of)
    assert got.size == 100 == np.unique(got).size
    assert np.array_equal(got[:70], plain[:70])  # the random part is unchanged
    (pool,) = asked
    assert pool.size == 30 * train.HARD_POOL
    assert not set(pool) & set(got[:70])
    hard = got[70:]
    assert set(hard) <= set(pool)
    left = np.setdiff1d(pool, hard)
    assert losses[hard].min() >= losses[left].max()  # the 30 hardest of the pool
    assert losses[hard].mean() > losses[got[:70]].mean()
    with pytest.raises(ValueError, match="90 crops"):
        train._pick_synthetic(1000, 100, np.random.default_rng(9), 0.3, lambda i: i[:5] * 1.0)


def test_a_run_with_hard_share_scores_synthetic_crops_with_the_model_in_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pick = train._pick_synthetic
    scored: list[np.ndarray] = []

    def recording(
        n_pool: int,
        n_synth: int,
        rng: np.random.Generator,
        hard_share: float = 0.0,
        loss_of: object = None,
    ) -> np.ndarray:
        assert callable(loss_of)

        def spy(idx: np.ndarray) -> np.ndarray:
            out: np.ndarray = loss_of(idx)
            scored.append(out)
            return out

        return real_pick(n_pool, n_synth, rng, hard_share, spy)

    monkeypatch.setattr(train, "_pick_synthetic", recording)
    cfg = train.TrainConfig(
        out=tmp_path / "out",
        real=[],
        synthetic=60,
        epoch_synthetic=20,
        arch="tiny",
        size=32,
        epochs=2,
        batch=16,
        lr=1e-2,
        hard_share=0.5,
        target_fpr=0.1,
        parity_min=0.0,
    )
    train.train(cfg)
    assert len(scored) == 2  # once per epoch, on 10 hard crops' pool of 30
    assert all(
        s.shape == (10 * train.HARD_POOL,) and np.isfinite(s).all() and (s >= 0).all()
        for s in scored
    )
    spec = load_spec(tmp_path / "out" / "phone_in_hand.json")
    assert spec.provenance["hard_share"] == 0.5
    assert "--hard-share 0.5 " in spec.provenance["stages"][-1]


DEFAULT = Path(__file__).resolve().parents[2] / "models" / "phone_in_hand" / "phone_in_hand.tflite"
BRIGHTNESS = Path(__file__).resolve().parents[2] / "tests" / "data" / "brightness_int8.tflite"


def test_teacher_scores_are_the_mean_of_each_teachers_own_reading() -> None:
    # Two teachers with different input sizes and normalisation: each is read as its sidecar
    # says, as the unit's classifier reads it.
    crops = [render_crop(21, i)[0] for i in range(7)]
    got = train.teacher_scores([DEFAULT, BRIGHTNESS], crops, chunk=3)  # chunks of 3, 3, 1
    expect = np.zeros(len(crops))
    for model in (DEFAULT, BRIGHTNESS):
        with LiteRTClassifier.open(model) as clf:
            expect += np.array([clf.score(c) for c in crops])
    np.testing.assert_allclose(got, expect / 2, atol=1e-6)
    assert np.ptp(got) > 0.05  # the crops are told apart, not all one value


def test_distillation_targets_replace_synthetic_labels_only() -> None:
    spec = InputSpec(
        width=32, height=32, layout="NHWC", colour="RGB", mean=(127.5,) * 3, std=(127.5,) * 3
    )
    real = [render_crop(22, i)[0] for i in range(4)]
    real_y = np.array([1, 0, 1, 0])
    synth = [render_crop(23, i)[0] for i in range(6)]
    synth_y = np.array([1, 0, 1, 0, 1, 0])
    soft = np.array([0.9, 0.2, 0.6, 0.05, 0.75, 0.4], np.float32)
    pick = np.array([0, 2, 3, 5])
    args = (real, real_y, synth, synth_y, spec)
    x0, y0, t0 = train._epoch_arrays(*args, np.random.default_rng(5), 2, pick, 0.5)
    x1, y1, t1 = train._epoch_arrays(*args, np.random.default_rng(5), 2, pick, 0.5, soft)
    # Same crops, order and labels either way: only the targets differ.
    np.testing.assert_array_equal(x0, x1)
    np.testing.assert_array_equal(y0, y1)
    np.testing.assert_array_equal(t0, y0.astype(np.float32))
    assert sorted(t1.tolist()) == pytest.approx(
        sorted([1.0, 0.0, 1.0, 0.0] * 2 + [0.9, 0.6, 0.05, 0.4])
    )


def test_a_distilled_run_records_its_teachers(tmp_path: Path) -> None:
    cfg = train.TrainConfig(
        out=tmp_path / "out",
        real=[],
        synthetic=40,
        epoch_synthetic=40,
        arch="tiny",
        size=32,
        epochs=1,
        batch=16,
        lr=1e-2,
        teachers=[DEFAULT],
        distill=0.7,
        target_fpr=0.1,
        parity_min=0.0,
    )
    train.train(cfg)
    prov = load_spec(tmp_path / "out" / "phone_in_hand.json").provenance
    assert prov["distill"] == 0.7
    assert "--teacher TEACHER1 --distill 0.7 " in prov["stages"][-1]
    (teacher,) = prov["teachers"]
    assert teacher["name"] == "TEACHER1"
    assert teacher["stage"] == 1
    assert teacher["sha256"] == load_spec(DEFAULT.with_suffix(".json")).sha256
    assert teacher["stages"] == load_spec(DEFAULT.with_suffix(".json")).provenance["stages"]


def test_train_cli_refuses_bad_teachers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lone = tmp_path / "lone.tflite"
    lone.write_bytes(DEFAULT.read_bytes())
    for extra, msg in (
        (["--teacher", str(lone)], "sidecar"),
        (["--teacher", str(DEFAULT), "--distill", "1.5"], "--distill"),
    ):
        with pytest.raises(SystemExit):
            train.main(["--out", str(tmp_path / "o"), "--synthetic", "40", *extra])
        assert msg in capsys.readouterr().err


def test_the_float_network_is_rebuilt_from_a_shipped_int8_model() -> None:
    from models.pretrained import identity_batchnorm

    prov = json.loads(DEFAULT.with_suffix(".json").read_text())["provenance"]
    spec = InputSpec(width=160, height=160)
    x = mdata.to_tensors([render_crop(12, i)[0] for i in range(48)], spec)
    int8 = export.tflite_scores(DEFAULT, x)
    model = train.rebuild_float(DEFAULT, prov)
    assert model.input_shape == (None, 160, 160, 3)
    assert identity_batchnorm(model, x) == 27
    rebuilt = model.predict(x, verbose=0)[:, 1]
    # Per-channel int8 weights, dequantised, with the batch norm set to pass through: the float
    # network scores as the int8 one does (activations are not rounded, so not to the bit).
    assert np.abs(rebuilt - int8).mean() < 0.02
    assert ((rebuilt >= 0.5) == (int8 >= 0.5)).mean() >= 0.95
    with pytest.raises(ValueError, match="MobileNet-V1"):
        train.rebuild_float(DEFAULT, {**prov, "arch": "mobilenetv2"})


def test_a_run_continues_from_a_shipped_int8_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = tmp_path / "s5" / DEFAULT.name
    shipped.parent.mkdir()
    shipped.write_bytes(DEFAULT.read_bytes())
    shipped.with_suffix(".json").write_bytes(DEFAULT.with_suffix(".json").read_bytes())
    site = _site_folder(tmp_path / "site", 12)
    common = [
        "--real",
        str(site),
        "--synthetic",
        "40",
        "--epoch-synthetic",
        "16",
        "--batch",
        "16",
        "--val-share",
        "0.3",
        "--target-fpr",
        "0.1",
        "--parity-min",
        "0",
    ]
    lone = tmp_path / "lone.tflite"
    lone.write_bytes(DEFAULT.read_bytes())
    with pytest.raises(SystemExit):  # how it was trained is in the sidecar: needed
        train.main(["--out", str(tmp_path / "x"), *common, "--init", str(lone)])
    assert "sidecar" in capsys.readouterr().err
    assert (
        train.main(
            [
                "--out",
                str(tmp_path / "s6"),
                *common,
                "--init",
                str(shipped),
                "--epochs",
                "1",
                "--lr",
                "1e-7",
            ]
        )
        == 0
    )
    before = load_spec(shipped.with_suffix(".json"))
    after = load_spec(tmp_path / "s6" / "phone_in_hand.json")
    assert after.provenance["stages"][:-1] == before.provenance["stages"]
    assert f"--out STAGE{len(before.provenance['stages']) + 1} " in after.provenance["stages"][-1]
    assert (
        f"--init STAGE{len(before.provenance['stages'])}/phone_in_hand.tflite"
        in after.provenance["stages"][-1]
    )
    assert after.provenance["total_epochs"] == before.provenance["total_epochs"] + 1
    assert (after.input.width, after.provenance["arch"]) == (160, "mobilenetv1")
    # At a learning rate too small to move the weights, the re-exported model is the shipped one.
    x = mdata.to_tensors([render_crop(13, i)[0] for i in range(40)], InputSpec(160, 160))
    old, new = (
        export.tflite_scores(DEFAULT, x),
        export.tflite_scores(tmp_path / "s6" / "phone_in_hand.tflite", x),
    )
    assert np.abs(old - new).mean() < 0.03
    assert ((old >= 0.5) == (new >= 0.5)).mean() >= 0.9
