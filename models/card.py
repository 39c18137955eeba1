"""Generate ``MODEL_CARD.md`` from a model's sidecar and a ``phonewatch eval --out`` folder.

    python -m models.card --model models/phone_in_hand/phone_in_hand.tflite \\
        --eval /tmp/eval --bench-ms 1.1 --bench-machine "..." > models/phone_in_hand/MODEL_CARD.md

Every number in the card comes from those files; the prose around them is fixed text about
data sources, the domain gap, limits and retraining.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.core.model_spec import load_spec, sidecar_path
from models.train import HARD_POOL


def _f(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _arch_text(prov: dict[str, Any]) -> str:
    arch, weights = prov.get("arch"), str(prov.get("weights"))
    if arch == "mobilenetv1":
        text = (
            f"MobileNet-V1 (width {prov.get('alpha')}, {prov.get('input_size')} px) whose "
            f"backbone was initialised with ImageNet weights read from `{Path(weights).name}` "
            "(Google, Apache-2.0; `models/pretrained.py`), because Keras cannot download "
            "ImageNet weights on the build machine; new two-way head, then fine-tuned end to "
            "end on real + synthetic crops."
        )
        if prov.get("batchnorm"):
            text += (
                " For fine-tuning a batch-norm layer follows each convolution (set to the "
                "identity at the start, so training begins from the ImageNet network; the "
                "converter folds them back into the convolutions)"
            )
            noise = float(prov.get("act_noise") or 0.0)
            if prov.get("qat"):
                text += (
                    ", and the last stage was trained quantisation-aware: each kernel and "
                    "activation rounded in training as the int8 export rounds them "
                    "(`models/qat.py`)."
                )
            elif noise > 0:
                text += (
                    f", and Gaussian noise (std {noise:g}) after each activation, in training "
                    "only, stands in for int8 rounding."
                )
            else:
                text += "."
        return text
    return (
        f"{arch} (width {prov.get('alpha')}, {prov.get('input_size')} px), initialisation: "
        f"{weights}."
    )


def _f1_balanced(recall: float, fpr: float) -> float:
    """F1 on a test set with as many positives as negatives, at this recall and FPR."""
    precision = recall / (recall + fpr) if recall + fpr > 0 else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def _metric_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    c = m["confusion"]
    return [
        ("images (phone / no phone)", f"{m['n']} ({m['positives']} / {m['negatives']})"),
        ("ROC-AUC", _f(m["roc_auc"])),
        ("recall @ 1 % FPR", _f(m["recall_at_fpr"]["0.01"])),
        ("recall @ 5 % FPR", _f(m["recall_at_fpr"]["0.05"])),
        ("recall @ 10 % FPR", _f(m["recall_at_fpr"]["0.1"])),
        ("precision @ threshold", _f(m["precision"])),
        ("recall @ threshold", _f(m["recall"])),
        ("F1 @ threshold", _f(m["f1"])),
        ("FPR @ threshold", _f(m["fpr"])),
        ("confusion tp / fp / tn / fn", f"{c['tp']} / {c['fp']} / {c['tn']} / {c['fn']}"),
    ]


def _table(headers: list[str], columns: list[list[tuple[str, str]]]) -> list[str]:
    lines = ["| | " + " | ".join(headers) + " |", "|---|" + "---|" * len(headers)]
    for i, (label, _) in enumerate(columns[0]):
        lines.append(f"| {label} | " + " | ".join(col[i][1] for col in columns) + " |")
    return lines


def _teacher_lines(prov: dict[str, Any]) -> list[str]:
    """What a distilled stage learned from, with each teacher's own training commands."""
    teachers = [t for t in prov.get("teachers", []) if isinstance(t, dict)]
    if not teachers:
        return []
    lines = [
        f"In the stages with `--teacher`, each synthetic crop's target was "
        f"{float(prov.get('distill', 0.5)):.0%} the mean P(phone) of earlier models "
        "(knowledge distillation; int8 models, each read at its own input size) and the "
        "rest its label. The teachers, and the commands that made them:",
        "",
    ]
    for t in teachers:
        lines.append(
            f"- `{t.get('name')}` (stage {t.get('stage')}; {t.get('input_size')} px; "
            f"SHA-256 `{str(t.get('sha256'))[:16]}...`):"
        )
        lines += ["", "  ```"] + [f"  {st}" for st in t.get("stages", [])] + ["  ```", ""]
    return lines


def _condition_table(by: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Rows of phone drivers found and phone-free drivers flagged, per condition value."""
    lines = ["| condition | phone found (recall) | phone-free flagged (FPR) |", "|---|---|---|"]
    for cond, groups in by.items():
        for value, g in groups.items():
            found = f"{g['tp']} of {g['positives']} ({g['recall']:.3f})" if g["positives"] else "-"
            flagged = f"{g['fp']} of {g['negatives']} ({g['fpr']:.3f})" if g["negatives"] else "-"
            lines.append(f"| {cond}: {value} | {found} | {flagged} |")
    return lines


def _night_vs_day(data: dict[str, dict[str, Any]]) -> str:
    """A sentence comparing IR night with day on the first data set that records lighting."""
    for d, m in data.items():
        light = (m.get("by_condition") or {}).get("lighting", {})
        night, day = light.get("ir_night"), light.get("day")
        if (
            night
            and day
            and night["positives"]
            and night["negatives"]
            and day["positives"]
            and day["negatives"]
        ):
            return (
                f" On {d} at the threshold, IR night: recall {night['recall']:.3f}, FPR "
                f"{night['fpr']:.3f} ({night['n']} crops); day: recall {day['recall']:.3f}, "
                f"FPR {day['fpr']:.3f} ({day['n']} crops)."
            )
    return ""


def site_stage(prov: dict[str, Any], model_file: str) -> str | None:
    """One ``models.train`` command that continues the shipped model with a site folder added:
    its last training stage (not an export-only one) with ``--init`` on the shipped ``.tflite``
    and the final stage's ``--target-fpr``. None where the model cannot be continued from its
    ``.tflite`` (only MobileNet-V1 can be rebuilt) or no stage continued an earlier one."""
    stages = [str(st) for st in prov.get("stages", [])]
    trained = [st for st in stages if " --epochs 0 " not in f"{st} "]
    if prov.get("arch") != "mobilenetv1" or not trained or "--init " not in trained[-1]:
        return None
    cmd = re.sub(r"--out \S+", "--out SITE", trained[-1])
    cmd = re.sub(r"--init \S+", f"--init models/phone_in_hand/{model_file}", cmd)
    cmd = re.sub(r" --(size|teacher|distill) \S+", "", cmd)
    final = re.search(r"--target-fpr (\S+)", stages[-1])
    if final:
        cmd = re.sub(r"--target-fpr \S+", f"--target-fpr {final.group(1)}", cmd)
    return f"nice -n 10 {cmd} --real site/train"


def _target_lines(
    ours: dict[str, Any],
    met: dict[str, Any],
    prov: dict[str, Any],
    *,
    size_kb: float,
    bench_ms: float | None,
    domains: dict[str, str],
) -> list[str]:
    """The card's "Against the targets" table and what would close the gaps."""
    lines = ["### Against the targets", "", "| target | reached |", "|---|---|"]
    for d, m in ours["data"].items():
        if m["positives"] and m["negatives"]:
            r5 = m["recall_at_fpr"]["0.05"]
            lines.append(
                f"| recall >= 0.90 at FPR <= 5 % on {d} | {r5:.3f} "
                f"({'met' if r5 >= 0.9 else 'not met'}) |"
            )
        elif m["negatives"]:
            lines.append(
                f"| phone-free photos from other sources ({d}) flagged | "
                f"{m['confusion']['fp']} of {m['negatives']} at the threshold |"
            )
    syn = [m for d, m in ours["data"].items() if domains.get(d, "").startswith("synthetic, seed")]
    if syn:
        f1 = syn[0]["f1"]
        lines.append(
            f"| F1 >= 0.97 on held-out synthetic | {f1:.3f} "
            f"({'met' if f1 >= 0.97 else 'not met'}) |"
        )
    lines.append(f"| <= 1 MB | {size_kb:.0f} KB (met) |")
    if bench_ms is not None:
        lines.append(
            f"| <= 2 ms per crop on this CPU | {bench_ms:.2f} ms invoke "
            f"({'met' if bench_ms <= 2 else 'not met'}) |"
        )
    target_fpr = float(met.get("validation", {}).get("target_fpr", 0.05))
    if syn and syn[0]["f1"] < 0.97 and target_fpr > 0:
        # Balanced classes: precision = recall / (recall + FPR). Find the recall F1 0.97 needs.
        need = next(
            (r / 1000 for r in range(900, 1001) if _f1_balanced(r / 1000, target_fpr) >= 0.97), None
        )
        lines += [
            "",
            f"F1 is read at the shipped threshold, set for {target_fpr:.0%} FPR on "
            "validation: on a balanced test set that caps precision near "
            f"{1 / (1 + target_fpr):.2f}, so F1 >= 0.97 there needs recall of "
            + (f"at least {need:.2f}." if need is not None else "more than 1."),
        ]
    lines += [
        "",
        "What would close the gaps: real crops from the unit's own viewpoint (outside, "
        "through glass, day and IR night) from many cars and drivers - the unit's "
        "`collect` command gathers them; "
        + ("a larger input (160 px) or " if int(prov.get("input_size") or 0) < 160 else "")
        + "a wider backbone once a Pi 5 / Edge TPU budget allows; longer training on "
        "more synthetic crops.",
        "",
    ]
    return lines


def _export_lines(met: dict[str, Any], *, bench_ms: float | None, bench_machine: str) -> list[str]:
    """int8 / float parity and speed, the first lines of "Export and speed"."""
    lines: list[str] = []
    par = met.get("int8_float_parity", {})
    if par:
        agree = ", ".join(f"{v:.4f} at threshold {k}" for k, v in par["agreement"].items())
        mop = par.get("matched_operating_point", {})
        lines.append(
            f"- int8 vs float decisions on {par['n']} validation crops: agreement "
            f"**{mop.get('agreement', float('nan')):.4f}** at matched operating points "
            f"(each model's threshold for {mop.get('target_fpr', 0.05):.0%} FPR); raw "
            f"{agree}; mean |dP| {par['mean_abs_diff']:.4f}."
        )
        if par.get("required", 0.99) < 0.99:
            lines.append(
                f"- **Short of the 99 % parity target**: the export gate was lowered to "
                f"{par['required']:.1%} for this model. Post-training quantisation "
                f"moves P(phone) by {par['mean_abs_diff']:.2f} on average, and "
                "validation crops that score near the threshold change side. "
                "Quantisation-aware training is the fix; not done yet."
            )
    if bench_ms is not None:
        lines.append(
            f"- Inference {bench_ms:.2f} ms per crop (median, `bench/model.py`, "
            f"{bench_machine}). On a Raspberry Pi 5 expect roughly "
            f"{bench_ms:.1f}-{bench_ms * 1.5:.1f} ms: an estimate from published Pi 4 / "
            "Pi 5 figures, not a measurement (docs/performance.md shows how it was "
            "made); the Edge TPU twin well under 1 ms plus USB transfer."
        )
    return lines


def render(
    model: Path,
    eval_doc: dict[str, Any],
    *,
    bench_ms: float | None,
    bench_machine: str,
    domains: dict[str, str],
) -> str:
    spec = load_spec(sidecar_path(model))
    prov, met = spec.provenance, spec.metrics
    size_kb = model.stat().st_size / 1024
    ours = eval_doc["models"][0]
    quick = site_stage(prov, model.name)
    n_stages = max(1, len(prov.get("stages", [])))
    lines = [
        f"# Model card: {spec.name} {spec.version}",
        "",
        "*Generated by `python -m models.card` from the sidecar and `phonewatch eval` output "
        "(`make model-card` rebuilds the held-out sets and does both: `models/heldout.py`); "
        "do not edit by hand.*",
        "",
        "## What it does",
        "",
        "Input: one driver-window crop (BGR, any size; resized by `edge.core.preprocess` to "
        f"{spec.input.width}x{spec.input.height} {spec.input.colour}). Output: P(the driver is "
        "holding a phone). Full-integer int8 TFLite (uint8 in/out, every op quantised), "
        f"{size_kb:.0f} KB, {_arch_text(prov)}",
        "",
        f"Operating threshold **{spec.threshold:.4f}**, chosen for "
        f"{met.get('validation', {}).get('target_fpr', 0.05):.0%} false-positive rate on the "
        "validation split (never on test data). SHA-256 `" + (spec.sha256 or "") + "`.",
        "",
        "## Training data",
        "",
        "| source | what | licence |",
        "|---|---|---|",
        '| kmitl `train/` (Roboflow Universe "cv-driver-distraction" by kmitlapkdtii, v6) | '
        f"{prov.get('real_train_images')} train + {prov.get('real_validation_images')} validation "
        "images (5 augmented variants per source frame; validation = whole runs of neighbouring "
        "source frames) | CC BY 4.0 |",
        f"| synthetic (`models/synth`, seed {prov.get('synthetic_train', {}).get('seed')}) | "
        f"{prov.get('synthetic_train', {}).get('count')} rendered driver-window crops: phone at "
        "the ear (either hand), low (texting), over the wheel; hard negatives: hands on the "
        "wheel, hand at the face, drinking, eating, phone in a dashboard cradle, passenger, "
        "empty seat; day / dusk / IR night, glare, blur, noise, JPEG, occlusion | project's own "
        "(Apache-2.0) |",
        "",
        f"Training-data fingerprint (SHA-256 over labels, names and bytes): "
        f"`{prov.get('training_data_sha256')}`. Trained {prov.get('trained_utc')}, "
        f"{prov.get('total_epochs', prov.get('epochs'))} epochs on 2 shared CPU cores "
        f"(TensorFlow {prov.get('tensorflow')}, seed {prov.get('seed')}).",
        "",
        *(
            ["Made by (each `--init` continues the stage before):", "", "```"]
            + [f"nice -n 10 {st}" for st in prov.get("stages", [])]
            + ["```", ""]
            if prov.get("stages")
            else []
        ),
        *(
            [
                "A stage with `--epochs 0` trains nothing: it exports the weights of the stage "
                "before again, with the threshold chosen for its `--target-fpr`.",
                "",
            ]
            if any(" --epochs 0 " in st for st in prov.get("stages", []))
            else []
        ),
        "Augmentation (real crops): random resized crops, flips, rotation, exposure / contrast / "
        "colour jitter, greyscale (as under IR), blur, noise, JPEG, random erasing and "
        "replacement of a border strip by a rendered background - all aimed at the shortcut "
        "the kmitl set invites (two cars, two drivers).",
        *(
            [
                f"In the stages with `--partial-view`, {float(prov['partial_view']):.0%} of "
                "phone-free crops (real and synthetic) were also slid 30-70 % out of the crop, "
                "bodywork and a pillar in the rest, as a junction ROI sees a car rolling in; phone "
                "crops are never slid, since that could push the phone out of view."
            ]
            if prov.get("partial_view")
            else []
        ),
        *(
            [
                f"In the stages with `--hard-share`, {float(prov['hard_share']):.0%} of each "
                "epoch's synthetic crops were the ones the model then got most wrong (the highest "
                f"loss in a random pool {HARD_POOL} times as large); the rest were drawn at random."
            ]
            if prov.get("hard_share")
            else []
        ),
        *_teacher_lines(prov),
        "",
        "## Results",
        "",
        "Recall at a fixed false-positive rate is the operating metric: a unit sees far more "
        "phone-free drivers than offenders, and every false flag costs a reviewer's time.",
        "",
    ]
    lines += _target_lines(ours, met, prov, size_kb=size_kb, bench_ms=bench_ms, domains=domains)
    val = met.get("validation", {})
    val_cols = [(k, val[k]) for k in ("real", "synthetic") if k in val]
    if val_cols:
        lines += ["### Validation (int8 model, what the threshold was chosen on)", ""]
        lines += _table(
            [f"{k} validation" for k, _ in val_cols], [_metric_rows(v) for _, v in val_cols]
        )
        lines.append("")
    datasets = list(ours["data"])
    lines += ["### Test sets (never used for training, tuning or the threshold)", ""]
    lines += _table(
        [f"{d} ({domains.get(d, 'real')})" for d in datasets],
        [_metric_rows(ours["data"][d]) for d in datasets],
    )
    if any(domains.get(d, "real").startswith("synthetic") for d in datasets):
        lines += [
            "",
            "The synthetic sets are drawn by the renderer as committed: in its crops "
            "labelled *phone* the phone is always visible (a scene where glare, a pillar "
            "or the dark hid it is drawn again with the same pose; "
            "`models/synth/render.py`).",
        ]
    for d in datasets:
        by = ours["data"][d].get("by_condition")
        if by:
            lines += [
                "",
                f"**{d} by condition** (from its `index.csv`, at the threshold; the "
                "groups are small, so one crop moves a rate by several points):",
                "",
            ]
            lines += _condition_table(by)
    lines += [
        "",
        "### Against the generic models a user could otherwise reach for",
        "",
        "The ImageNet classifiers' *cellular telephone* class as P(phone) (their own "
        "sidecars; threshold-free metrics are the fair comparison):",
        "",
    ]
    names = [m["name"] for m in eval_doc["models"]]
    for d in datasets:
        lines += [f"**{d}** ({domains.get(d, 'real')})", ""]
        cols = []
        for m in eval_doc["models"]:
            r = _metric_rows(m["data"][d])
            cols.append([r[1], r[2], r[3], r[4]])
        lines += _table(names, cols)
        lines.append("")
    lines += [
        "Curves: `phonewatch eval ... --out DIR` writes ROC and PR PNGs for each data set.",
        "",
        "### Export and speed",
        "",
    ]
    lines += _export_lines(met, bench_ms=bench_ms, bench_machine=bench_machine)
    lines += [
        "- Edge TPU: `edgetpu_compiler -s phone_in_hand.tflite` makes "
        "`phone_in_hand_edgetpu.tflite` (all ops are Edge TPU ops). The compiler is not "
        "available on this build machine, so the twin is not committed.",
        "",
        "## Known domain gap and limits",
        "",
        "- **Viewpoint.** The real training photos are in-cabin (A-pillar camera, right-hand-drive "
        "cars, two vehicles, few drivers, daylight). The unit looks in from outside, through "
        "glass. Synthetic crops cover that view only as flat cartoons; expect lower recall on "
        "real roadside crops than on either test set above until site data is added.",
        "- **Night / IR.** Only synthetic IR-like crops; no real infrared photos were available."
        + _night_vs_day(ours["data"]),
        "- **Glare and reflections** hide hands; such crops score low (a miss, not a false flag).",
        "- **Passengers** holding a phone can raise the score if they are inside the ROI: keep "
        "ROIs tight on the driver's window.",
        "- **Hands-free cradles** on the dashboard or windscreen are synthetic hard negatives "
        "only; a phone mounted near the driver's face may still be flagged.",
        "- The kmitl test split has 56 frames from the same two cars as training: neighbouring "
        "video frames look alike, so its numbers overstate performance on new cars and drivers.",
        *(
            [
                "- **Cars entering or leaving the ROI.** A half-seen driver was trained as *no "
                "phone* (the slid crops above), so a phone driver rolling in is found once the car "
                "stops, not before; the decider's several-frames rule filters the short spikes "
                "left. No real footage of cars rolling in was available to check this."
            ]
            if prov.get("partial_view")
            else [
                "- **Cars entering or leaving the ROI.** Training crops show the whole driver; a "
                "driver half in view while the car rolls in can score high (the demo clip shows "
                "this at the start of a stop). The decider's several-frames rule filters short "
                "spikes; training with `--partial-view` is the fix."
            ]
        ),
        "- **Other scenes.** The model has only seen driver windows and in-cabin views. "
        "Photographs of people elsewhere (a group photo, someone exercising with hands "
        "clasped at the chest: the phone-free photos from other sources above) can score above "
        "the threshold; keep ROIs on the driver's window.",
        "- Every alert goes to a human reviewer; the score is evidence, not proof.",
        "",
        "## Retraining on site data",
        "",
        "1. Collect driver-window crops at the site: the control room's Units page sends a "
        "unit a `collect` command, its crops land in the labelling queue (`/labels`), and the "
        "export is a ZIP of `phone/` and `no_phone/`. Keep whole sessions (one day, one site) "
        "together and hold some out as `site/test`; put the rest in `site/train`.",
        *(
            [
                "2. Continue this model with the site folder added: its last training stage "
                "again, starting from the shipped `.tflite` "
                "(the float network is rebuilt from it):",
                "",
                "   ```",
                f"   {quick}",
                "   ```",
                "",
                "   Or retrain from the start: the same stages with the site folder added (with "
                "`--arch mobilenetv2 --weights imagenet` instead where the internet is reachable):",
            ]
            if quick
            else [
                "2. Retrain: the same stages with the site folder added (with `--arch mobilenetv2 "
                "--weights imagenet` instead where the internet is reachable):"
            ]
        ),
        "",
        "   ```",
        *[f"   nice -n 10 {st} --real site/train" for st in prov.get("stages", [])],
        "   ```",
        "",
        f"3. `phonewatch eval --model {'SITE' if quick else 'STAGE' + str(n_stages)}"
        "/phone_in_hand.tflite --data site/test "
        "--compare models/phone_in_hand/phone_in_hand.tflite --out eval/` and keep the model "
        "only if recall at the target FPR improves on data it has never seen.",
        "4. `python -m models.card ...` to regenerate this card; `edgetpu_compiler` for a Coral.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m models.card",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--eval", type=Path, required=True, help="a phonewatch eval --out folder")
    ap.add_argument("--bench-ms", type=float)
    ap.add_argument("--bench-machine", default="")
    ap.add_argument(
        "--domain",
        action="append",
        default=[],
        metavar="DATASET=DOMAIN",
        help="label a data set's domain, e.g. synth/test=synthetic",
    )
    ap.add_argument("--out", type=Path, help="write here (default: stdout)")
    a = ap.parse_args(argv)
    doc = json.loads((a.eval / "metrics.json").read_text(encoding="utf-8"))
    domains = dict(d.split("=", 1) for d in a.domain)
    text = render(a.model, doc, bench_ms=a.bench_ms, bench_machine=a.bench_machine, domains=domains)
    if a.out:
        a.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
