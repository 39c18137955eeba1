"""``phonewatch eval`` and ``phonewatch sidecar`` with real TFLite models and real image files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.app import cli
from edge.app.cli_models import (
    _COLOURS,
    MARKER_RADIUS,
    PLOT,
    EvalDataError,
    evaluate,
    list_images,
    make_sidecar,
    text_boxes,
)
from edge.core.errors import ModelError
from edge.core.model_spec import load_spec

REPO = Path(__file__).resolve().parents[2]
BRIGHTNESS = REPO / "tests" / "data" / "brightness_int8.tflite"


def _folder(root: Path, phone_levels: list[int], none_levels: list[int]) -> Path:
    for name, levels in (("phone", phone_levels), ("no_phone", none_levels)):
        (root / name).mkdir(parents=True)
        for i, lv in enumerate(levels):
            img = np.full((40, 60, 3), lv, np.uint8)
            assert cv2.imwrite(str(root / name / f"{i:03d}.png"), img)
    return root


def test_eval_scores_every_image_and_reports_side_by_side(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The brightness model's P(phone) rises with brightness: bright "phone" images and dark
    # "no_phone" ones, except one dark phone image (a miss at any sane threshold).
    data = _folder(tmp_path / "site" / "crops", [230, 220, 210, 90], [70, 80, 100, 110, 20])
    out = tmp_path / "out"
    code = cli.main(
        [
            "eval",
            "--model",
            str(BRIGHTNESS),
            "--data",
            str(data),
            "--compare",
            f"{BRIGHTNESS}:{BRIGHTNESS.with_suffix('.json')}",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "site/crops" in text
    assert "recall @ 5% FPR" in text
    assert "ROC-AUC" in text
    assert text.count("brightness-int8 test-1") >= 2  # two columns
    doc = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    m = doc["models"][0]["data"]["site/crops"]
    assert (m["positives"], m["negatives"]) == (4, 5)
    assert m["confusion"] == {"tp": 3, "fp": 0, "tn": 5, "fn": 1}
    assert m["recall_at_fpr"]["0.01"] == pytest.approx(0.75)
    assert m["roc_auc"] == pytest.approx(18 / 20)  # 90 beats 70, 80, 20; not 100 or 110
    for png in ("site_crops_roc.png", "site_crops_pr.png"):
        img = cv2.imread(str(out / png))
        assert img is not None
        assert img.shape[0] > 100
    rows = list(csv.DictReader((out / "site_crops_scores.csv").open(encoding="utf-8")))
    assert len(rows) == 9
    # each score names its image: the dark phone image (90) is the miss
    # one model given twice: a column each, told apart by the file (and #k for the same file)
    twice = ["brightness-int8 test-1 (brightness_int8.tflite #1)"]
    twice.append("brightness-int8 test-1 (brightness_int8.tflite #2)")
    assert list(rows[0])[3:] == twice
    assert [m["name"] for m in doc["models"]] == twice
    by_file = {r["file"]: float(r[twice[0]]) for r in rows}
    assert set(by_file) == {f"phone/{i:03d}.png" for i in range(4)} | {
        f"no_phone/{i:03d}.png" for i in range(5)
    }
    assert min(by_file, key=lambda f: by_file[f]) == "no_phone/004.png"  # the darkest, 20
    assert by_file["phone/003.png"] < min(by_file[f"phone/{i:03d}.png"] for i in range(3))


def test_models_sharing_a_name_and_version_get_distinct_columns(tmp_path: Path) -> None:
    # a retrained model under its parent's name and version, in another folder
    for d in ("deployed", "retrained"):
        (tmp_path / d).mkdir()
        for src in (BRIGHTNESS, BRIGHTNESS.with_suffix(".json")):
            (tmp_path / d / src.name).write_bytes(src.read_bytes())
    data = _folder(tmp_path / "a" / "b", [200, 150], [100, 90])
    models: list[tuple[Path, Path | None]] = [
        (tmp_path / d / BRIGHTNESS.name, None) for d in ("deployed", "retrained")
    ]
    results, _ = evaluate(models, [data])
    assert [r.name for r in results] == [
        "brightness-int8 test-1 (deployed/brightness_int8.tflite)",
        "brightness-int8 test-1 (retrained/brightness_int8.tflite)",
    ]
    # a name used once is left as it is
    alone, _ = evaluate([(BRIGHTNESS, None)], [data])
    assert alone[0].name == "brightness-int8 test-1"


def _boxes_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_eval_plots_mark_the_operating_point_and_keep_labels_apart(tmp_path: Path) -> None:
    data = _folder(tmp_path / "site" / "crops", [230, 220, 210, 90], [70, 80, 100, 110, 20, 215])
    out = tmp_path / "out"
    assert (
        cli.main(["eval", "--model", str(BRIGHTNESS), "--data", str(data), "--out", str(out)]) == 0
    )
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["models"][0]
    at = m["data"]["site/crops"]
    assert at["threshold"] == pytest.approx(0.5)
    assert (at["recall"], at["fpr"], at["precision"]) == pytest.approx((0.75, 1 / 6, 0.75))
    colour = np.array(_COLOURS[0])
    yy, xx = np.mgrid[: PLOT.height, : PLOT.width]
    for png, point, title, xlabel, ylabel in (
        (
            "site_crops_roc.png",
            (at["fpr"], at["recall"]),
            "ROC - site/crops",
            "false-positive rate",
            "recall",
        ),
        (
            "site_crops_pr.png",
            (at["recall"], at["precision"]),
            "Precision-recall - site/crops",
            "recall",
            "precision",
        ),
    ):
        img = cv2.imread(str(out / png))
        assert img is not None
        assert img.shape == (PLOT.height, PLOT.width, 3)
        # a filled dot in the model's colour at its operating point: far more of that colour
        # than the 2 px curve through the point would leave in the disc
        cx, cy = PLOT.px(*point)
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= (MARKER_RADIUS - 2) ** 2
        same = (np.abs(img.astype(int) - colour).sum(axis=2) < 40) & disc
        assert same.sum() >= 0.8 * disc.sum()
        # the title and the axis labels are apart, outside the plot area, and drawn
        boxes = text_boxes(title, xlabel, ylabel)
        plot = (PLOT.left, PLOT.top, PLOT.width - PLOT.right, PLOT.height - PLOT.bottom)
        names = list(boxes)
        for i, a in enumerate(names):
            assert not _boxes_overlap(boxes[a], plot), a
            for b in names[i + 1 :]:
                assert not _boxes_overlap(boxes[a], boxes[b]), (a, b)
            x0, y0, x1, y1 = boxes[a]
            assert (img[y0:y1, x0:x1] < 100).all(axis=2).sum() > 20, a  # black text there
        # the y label reads upright: taller than wide
        x0, y0, x1, y1 = boxes["ylabel"]
        assert y1 - y0 > x1 - x0


def test_eval_matches_the_classifier_it_wraps(tmp_path: Path) -> None:
    from edge.adapters.classifier import LiteRTClassifier

    data = _folder(tmp_path / "a" / "b", [200, 150], [100, 90])
    results, labels = evaluate([(BRIGHTNESS, None)], [data])
    with LiteRTClassifier.open(BRIGHTNESS) as clf:
        direct = [clf.score(np.asarray(cv2.imread(str(p)))) for p, _ in list_images(data)]
    assert np.allclose(results[0].scores["a/b"], direct)
    assert labels["a/b"].tolist() == [0, 0, 1, 1]  # no_phone first, then phone


def _index(folder: Path, rows: list[tuple[str, int, str]]) -> None:
    with (folder / "index.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "phone", "lighting"])
        w.writerows(rows)


def test_eval_reports_each_condition_of_an_index(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Bright = day, dark = night: the dark phone image is the night miss; the bright phone-free
    # image (215) is flagged by day.
    data = _folder(tmp_path / "site" / "crops", [230, 220, 90], [215, 20, 30])
    _index(
        data,
        [
            ("phone/000.png", 1, "day"),
            ("phone/001.png", 1, "day"),
            ("phone/002.png", 1, "night"),
            ("no_phone/000.png", 0, "day"),
            ("no_phone/001.png", 0, "night"),
            ("no_phone/002.png", 0, "night"),
        ],
    )
    out = tmp_path / "out"
    assert (
        cli.main(["eval", "--model", str(BRIGHTNESS), "--data", str(data), "--out", str(out)]) == 0
    )
    text = capsys.readouterr().out
    assert "by lighting" in text
    assert "phone found 0/1 (recall 0.000)" in text
    doc = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    light = doc["models"][0]["data"]["site/crops"]["by_condition"]["lighting"]
    thr = doc["models"][0]["threshold"]
    scores = {
        r["file"]: float(r["brightness-int8 test-1"])
        for r in csv.DictReader((out / "site_crops_scores.csv").open(encoding="utf-8"))
    }
    assert scores["no_phone/000.png"] >= thr > scores["phone/002.png"]  # the premise
    assert (light["day"]["tp"], light["day"]["positives"], light["day"]["fp"]) == (2, 2, 1)
    assert (light["night"]["recall"], light["night"]["fpr"]) == (0.0, 0.0)
    # without an index there is no breakdown
    (data / "index.csv").unlink()
    assert "by_condition" not in evaluate([(BRIGHTNESS, None)], [data])[0][0].per_data["site/crops"]


def test_an_index_that_disagrees_with_the_folders_is_refused(tmp_path: Path) -> None:
    data = _folder(tmp_path / "d", [200], [50])
    _index(data, [("phone/000.png", 1, "day")])
    with pytest.raises(EvalDataError, match=r"no row for no_phone/000\.png"):
        evaluate([(BRIGHTNESS, None)], [data])
    _index(data, [("phone/000.png", 0, "day"), ("no_phone/000.png", 0, "day")])
    with pytest.raises(EvalDataError, match=r"phone=0 for phone/000\.png"):
        evaluate([(BRIGHTNESS, None)], [data])
    (data / "index.csv").write_text("name,pose\nphone/000.png,x\n", encoding="utf-8")
    with pytest.raises(EvalDataError, match="no 'file' column"):
        evaluate([(BRIGHTNESS, None)], [data])


def test_bad_folders_get_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["eval", "--model", str(BRIGHTNESS), "--data", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "x" / "phone").mkdir(parents=True)
    with pytest.raises(EvalDataError, match="no_phone"):
        list_images(tmp_path / "x")
    (tmp_path / "x" / "no_phone").mkdir()
    with pytest.raises(EvalDataError, match="no images"):
        list_images(tmp_path / "x")
    (tmp_path / "x" / "phone" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(EvalDataError, match=r"broken\.png"):
        evaluate([(BRIGHTNESS, None)], [tmp_path / "x"])


def test_sidecar_for_a_labelled_model(tmp_path: Path) -> None:
    d = make_sidecar(
        BRIGHTNESS,
        positive=["phone"],
        labels_file=None,
        labels=["no_phone", "phone"],
        label_offset=0,
        mean=[0, 0, 0],
        std=[255, 255, 255],
        activation="none",
        threshold=0.5,
        name="b",
    )
    assert d["input"]["width"] == 32
    assert d["input"]["layout"] == "NHWC"
    with pytest.raises(ModelError, match="outputs"):
        make_sidecar(
            BRIGHTNESS,
            positive=["phone"],
            labels_file=None,
            labels=["no_phone", "phone", "other"],
            label_offset=0,
            mean=None,
            std=None,
            activation="none",
            threshold=0.5,
            name=None,
        )
    with pytest.raises(ModelError, match="not among"):
        make_sidecar(
            BRIGHTNESS,
            positive=["cellular telephone"],
            labels_file=None,
            labels=["no_phone", "phone"],
            label_offset=0,
            mean=None,
            std=None,
            activation="none",
            threshold=0.5,
            name=None,
        )


def _imagenet_sidecars(models: Path, out: Path) -> dict[str, Path]:
    labels = str(models / "imagenet_labels.txt")
    made = {}
    for name in ("mobilenet_v1_0.25_128_quant", "mobilenet_v2_1.0_224_quant"):
        sc = out / f"{name}.json"
        assert (
            cli.main(
                [
                    "sidecar",
                    str(models / f"{name}.tflite"),
                    "--labels-file",
                    labels,
                    "--positive",
                    "cellular telephone",
                    "--out",
                    str(sc),
                ]
            )
            == 0
        )
        made[name] = sc
    sc = out / "nchw.json"
    assert (
        cli.main(
            [
                "sidecar",
                str(models / "mobilenet_v2_quantized_1x3x224x224.tflite"),
                "--labels-file",
                labels,
                "--label-offset",
                "-1",
                "--activation",
                "softmax",
                "--mean",
                "123.675",
                "116.28",
                "103.53",
                "--std",
                "58.395",
                "57.12",
                "57.375",
                "--positive",
                "cellular telephone",
                "--out",
                str(sc),
            ]
        )
        == 0
    )
    made["mobilenet_v2_quantized_1x3x224x224"] = sc
    return made


def test_imagenet_sidecars_read_real_models_right(shared_data: Path, tmp_path: Path) -> None:
    from edge.adapters.classifier import LiteRTClassifier

    models = shared_data / "models"
    sidecars = _imagenet_sidecars(models, tmp_path)
    assert load_spec(sidecars["mobilenet_v2_quantized_1x3x224x224"]).input.layout == "NCHW"
    photo = cv2.imread(str(shared_data / "images" / "coral_grace_hopper.bmp"))
    assert photo is not None
    for name, sc in sidecars.items():
        with LiteRTClassifier.open(models / f"{name}.tflite", sidecar=sc) as clf:
            label, _ = clf.top_label(photo)
            # Grace Hopper in uniform: every real ImageNet model says clothing, not a phone.
            assert any(k in label for k in ("uniform", "suit", "gown", "mortarboard")), name
            assert clf.score(photo) < 0.05


@pytest.mark.slow
def test_eval_kmitl_test_side_by_side(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = shared_data / "models"
    sidecars = _imagenet_sidecars(models, tmp_path)
    capsys.readouterr()
    name = "mobilenet_v1_0.25_128_quant"
    assert (
        cli.main(
            [
                "eval",
                "--model",
                str(models / f"{name}.tflite"),
                "--sidecar",
                str(sidecars[name]),
                "--data",
                str(shared_data / "datasets" / "kmitl" / "test"),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "kmitl/test" in text
    assert "56 (36 / 20)" in text
