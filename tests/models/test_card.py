"""The model card generator: targets met / not met come from the numbers, and the retraining
recipe reproduces the committed model's own training settings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edge.core import metrics
from edge.core.model_spec import load_spec
from models import card

MODEL = Path(__file__).resolve().parents[2] / "models" / "phone_in_hand" / "phone_in_hand.tflite"


def _eval_doc(scores: dict[str, tuple[list[int], list[float]]]) -> dict[str, Any]:
    data = {name: metrics.summary(np.array(y), np.array(p), 0.5) for name, (y, p) in scores.items()}
    return {
        "models": [
            {
                "name": "ours",
                "model": str(MODEL),
                "threshold": 0.5,
                "ms_per_crop": 1.0,
                "data": data,
            }
        ]
    }


def _with_provenance(tmp_path: Path, name: str, **changes: object) -> Path:
    """A copy of the committed model whose sidecar has ``changes`` in its provenance (or, for
    ``target_fpr``, in its validation metrics)."""
    side = json.loads(MODEL.with_suffix(".json").read_text(encoding="utf-8"))
    for key, value in changes.items():
        if key == "target_fpr":
            side["metrics"]["validation"]["target_fpr"] = value
        else:
            side["provenance"][key] = value
    model = tmp_path / name / MODEL.name
    model.parent.mkdir()
    shutil.copy(MODEL, model)
    model.with_suffix(".json").write_text(json.dumps(side), encoding="utf-8")
    return model


def _card_with(tmp_path: Path, name: str, **changes: object) -> str:
    """The card of ``_with_provenance(tmp_path, name, **changes)`` for a two-photo evaluation
    and no speed figure."""
    doc = _eval_doc({"real/test": ([1, 0], [0.9, 0.1])})
    return card.render(
        _with_provenance(tmp_path, name, **changes),
        doc,
        bench_ms=None,
        bench_machine="",
        domains={},
    )


def test_card_says_met_or_not_met_from_the_numbers(tmp_path: Path) -> None:
    perfect = ([1, 1, 1, 0, 0, 0], [0.9, 0.8, 0.7, 0.1, 0.2, 0.3])
    poor = ([1, 1, 0, 0], [0.6, 0.1, 0.7, 0.2])
    doc = _eval_doc(
        {"real/test": perfect, "synth/test": poor, "others/neg": ([0, 0, 0], [0.9, 0.1, 0.2])}
    )
    text = card.render(
        _with_provenance(tmp_path, "m5", target_fpr=0.05),
        doc,
        bench_ms=0.9,
        bench_machine="test box",
        domains={"synth/test": "synthetic, seed 7, held out"},
    )
    assert "| recall >= 0.90 at FPR <= 5 % on real/test | 1.000 (met) |" in text
    assert "| recall >= 0.90 at FPR <= 5 % on synth/test | 0.000 (not met) |" in text
    assert "| F1 >= 0.97 on held-out synthetic | 0.500 (not met) |" in text
    assert "| phone-free photos from other sources (others/neg) flagged | 1 of 3 " in text
    assert "| <= 2 ms per crop on this CPU | 0.90 ms invoke (met) |" in text
    assert "test box" in text
    # At a 5 % FPR threshold, F1 0.97 on a balanced set needs recall 0.99 (precision <= 0.95).
    assert "F1 >= 0.97 there needs recall of at least 0.99." in text
    assert abs(card._f1_balanced(1.0, 0.05) - 2 * (1 / 1.05) / (1 / 1.05 + 1)) < 1e-12
    # At 3 %, recall 0.97 gives precision 0.97 and so F1 0.97 exactly.
    text3 = card.render(
        _with_provenance(tmp_path, "m3", target_fpr=0.03),
        doc,
        bench_ms=0.9,
        bench_machine="test box",
        domains={"synth/test": "synthetic, seed 7, held out"},
    )
    assert "set for 3% FPR on validation" in text3
    assert "F1 >= 0.97 there needs recall of at least 0.97." in text3


def test_card_retraining_recipe_is_the_model_own_stages_plus_site_data() -> None:
    prov = load_spec(MODEL.with_suffix(".json")).provenance
    doc = _eval_doc({"real/test": ([1, 0], [0.9, 0.1])})
    text = card.render(MODEL, doc, bench_ms=None, bench_machine="", domains={})
    recipe = [
        line.strip()
        for line in text.split("## Retraining on site data")[1].splitlines()
        if "python -m models.train" in line and "--out SITE " not in line
    ]
    assert recipe == [f"nice -n 10 {st} --real site/train" for st in prov["stages"]]
    assert all("../shared/data/" in r for r in recipe)  # shared data named as the repo sees it
    assert "- Inference" not in text  # no speed figure given, none claimed


def test_card_offers_one_stage_that_continues_the_shipped_model(tmp_path: Path) -> None:
    prov = load_spec(MODEL.with_suffix(".json")).provenance
    stages = prov["stages"]
    quick = card.site_stage(prov, MODEL.name)
    assert quick is not None
    assert quick.startswith("nice -n 10 python -m models.train --out SITE ")
    assert quick.endswith(" --real site/train")
    assert f" --init models/phone_in_hand/{MODEL.name} " in quick
    last_trained = [st for st in stages if " --epochs 0 " not in st][-1]
    assert last_trained.split("--lr ")[1].split(" --target-fpr")[0] in quick  # its schedule
    assert quick.split("--target-fpr ")[1].split()[0] == stages[-1].split("--target-fpr ")[1]
    assert " --epochs 0 " not in quick
    assert " --size " not in quick
    doc = _eval_doc({"real/test": ([1, 0], [0.9, 0.1])})
    text = card.render(MODEL, doc, bench_ms=None, bench_machine="", domains={})
    assert f"   {quick}" in text
    assert "--model SITE/phone_in_hand.tflite" in text
    # A network that cannot be rebuilt from its .tflite gets only the full recipe.
    assert card.site_stage({**prov, "arch": "mobilenetv2"}, MODEL.name) is None
    other = _card_with(tmp_path, "v2", arch="mobilenetv2")
    assert "--out SITE" not in other
    assert "2. Retrain: the same stages" in other
    assert f"--model STAGE{len(stages)}/phone_in_hand.tflite" in other


def test_card_says_whether_half_seen_drivers_were_trained_as_phone_free(tmp_path: Path) -> None:
    texts = {share: _card_with(tmp_path, f"m{share}", partial_view=share) for share in (0.0, 0.15)}
    assert "`--partial-view`, 15% of phone-free crops" in texts[0.15]
    assert "A half-seen driver was trained as *no phone*" in texts[0.15]
    assert "phone-free crops (real" not in texts[0.0]
    assert "training with `--partial-view` is the fix" in texts[0.0]


def test_card_says_when_training_dwelt_on_the_hardest_crops(tmp_path: Path) -> None:
    texts = {share: _card_with(tmp_path, f"h{share}", hard_share=share) for share in (0.0, 0.3)}
    assert "`--hard-share`, 30% of each epoch's synthetic crops" in texts[0.3]
    assert "pool 3 times as large" in texts[0.3]
    assert "--hard-share" not in texts[0.0]


def test_card_names_the_teachers_of_a_distilled_stage(tmp_path: Path) -> None:
    teacher = {
        "stage": 5,
        "name": "TEACHER1",
        "file": "t.tflite",
        "sha256": "ab" * 32,
        "input_size": 176,
        "stages": ["python -m models.train --out STAGE1 --x 1"],
    }
    texts = {n: _card_with(tmp_path, f"t{n}", teachers=[teacher] * n, distill=0.4) for n in (0, 1)}
    assert "`--teacher`, each synthetic crop's target was 40% the mean P(phone)" in texts[1]
    assert "- `TEACHER1` (stage 5; 176 px; SHA-256 `abababababababab...`)" in texts[1]
    assert "  python -m models.train --out STAGE1 --x 1" in texts[1]
    assert "--teacher" not in texts[0]


def test_card_explains_an_export_only_stage(tmp_path: Path) -> None:
    stages = [
        "python -m models.train --out STAGE1 --arch tiny --epochs 3 --target-fpr 0.05",
        "python -m models.train --out STAGE2 --init STAGE1/m.keras --epochs 0 --target-fpr 0.03",
    ]
    texts = [_card_with(tmp_path, f"s{n}", stages=stages[:n]) for n in (1, 2)]
    assert "`--epochs 0` trains nothing" not in texts[0]
    assert "`--epochs 0` trains nothing" in texts[1]
