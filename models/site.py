"""Site learning: turn a force's labelled crops into a candidate model, and gate it.

    python -m models.site train --dataset DIR --init models/phone_in_hand/phone_in_hand.tflite \\
        --out CANDIDATE
    python -m models.site gate --candidate CANDIDATE/phone_in_hand_site.tflite \\
        --deployed models/phone_in_hand/phone_in_hand.tflite --dataset DIR

``DIR`` is the control room's dataset export (``models.site_data``: images and an
``index.csv`` with ``path,label,unit,roi,time,source,reviewer,split``, split by whole session).

``train`` continues the deployed model (``models.train --init``: the float network is rebuilt
from the int8 ``.tflite``) on the ``train`` split: whole sessions of it are held out for
validation, the threshold is set there for the site's operating false-positive rate, and
synthetic crops (and the real kmitl ``train`` photos, where the shared data is present) are
replayed so the model does not forget what it knew. The int8 export's activation ranges are
calibrated on site crops too, and int8/float parity is measured on the site's validation
crops as well as the rest. It writes ``phone_in_hand_site.tflite``, its sidecar (name
``phone-in-hand-site``, version ``site-<dataset fingerprint>``) and ``CARD.md``; it never
overwrites an existing ``--out``. The ``test`` split is never read.

``gate`` scores both models with ``phonewatch eval``'s code on the site's ``test`` split and
on the standing test sets (synthetic seed 7; kmitl ``test`` where the shared data is present),
prints the eval tables, and promotes (exit 0) only if, at the site's operating FPR,

1. the candidate's recall on the held-out site crops beats the deployed model's: the 95 %
   lower bound of the paired difference (bootstrap over whole held-out sessions) is above 0;
2. at its own sidecar threshold the candidate does not flag clearly more (Wilson 95 % lower
   bound) of the held-out phone-free crops than twice the operating FPR, or than the deployed
   model flags at its threshold where that is more;
3. on every standing set its recall at that FPR is at most ``--margin`` below the deployed
   model's.

Otherwise it refuses (exit 1) and says why. These are synthetic or foreign figures unless the
dataset is the force's own: they do not state field accuracy.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.core import metrics
from models import data as mdata
from models import site_data as sd

log = logging.getLogger("models.site")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DEPLOYED = REPO / "models" / "phone_in_hand" / "phone_in_hand.tflite"
NAME = "phone-in-hand-site"
TARGET_FPR = 0.05
MARGIN = 0.05
STANDING_SYNTH_SEED = 7
STANDING_SYNTH_COUNT = 600


def shared_data() -> Path:
    """The shared data folder: ``$PHONEWATCH_SHARED_DATA``, else ``../shared/data``."""
    env = os.environ.get("PHONEWATCH_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


# -- train --------------------------------------------------------------------------------------


@dataclass
class TrainOptions:
    epochs: int = 6
    lr: float = 3e-4
    batch: int = 32
    synthetic: int = 2000
    """Synthetic crops replayed (rendered once, cached with ``cache``)."""
    epoch_synthetic: int = 600
    site_repeat: int = 3
    val_share: float = 0.2
    """Share of the train split's sessions held out for validation (threshold, parity)."""
    target_fpr: float = TARGET_FPR
    seed: int = 0
    real: list[Path] = field(default_factory=list)
    """Real folders replayed too (default: the shared kmitl ``train``, where present)."""
    cache: Path | None = None
    threads: int = 2
    verbose: int = 0
    parity_min: float = 0.99
    """Least int8/float decision agreement on validation, with ``parity_by="decisions"``."""
    parity_by: str = "metrics"
    """The export gate (``models.train.TrainConfig.parity_by``)."""
    replay_kmitl: bool = True
    """Without ``real``: replay the shared kmitl ``train`` photos, where present."""
    qat: bool = True
    """Quantisation-aware training (``models.qat``): without it the int8 export check stopped
    most site candidates (docs/model.md)."""


def _samples(rows: Sequence[sd.SiteRow]) -> list[mdata.Sample]:
    return [mdata.Sample(path=r.path, label=r.label, group=r.session, domain="site") for r in rows]


def split_validation(
    rows: Sequence[sd.SiteRow], *, val_share: float, seed: int
) -> tuple[list[mdata.Sample], list[mdata.Sample]]:
    """(train, validation) of the ``train`` split, whole sessions held out; validation needs
    both classes, else the threshold cannot be set."""
    train_rows = sd.split(rows, "train")
    sd.need_both_classes(train_rows, "the train split")
    tr, va = mdata.split_groups(_samples(train_rows), val_share=val_share, seed=seed, run=1)
    n_pos = sum(s.label for s in va)
    if not va or n_pos in (0, len(va)) or not tr:
        raise sd.DatasetError(
            f"holding out {val_share:.0%} of the train split's sessions for validation leaves "
            f"{len(tr)} training and {len(va)} validation crops ({n_pos} phone): label crops "
            "of both classes in more sessions"
        )
    return tr, va


def train_candidate(dataset: Path, init: Path, out: Path, opts: TrainOptions | None = None) -> Path:
    """Train a candidate from ``dataset``'s train split continuing ``init``; returns the
    ``.tflite`` (with its sidecar and ``CARD.md`` beside it)."""
    from models import train as mtrain

    o = opts or TrainOptions()
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty: a candidate is never overwritten")
    if not init.is_file() or not init.with_suffix(".json").is_file():
        raise FileNotFoundError(f"--init {init} needs to be a .tflite with its sidecar .json")
    rows = sd.read_dataset(dataset)
    tr, va = split_validation(rows, val_share=o.val_share, seed=o.seed)
    fp = sd.fingerprint(sd.split(rows, "train"))
    real = list(o.real)
    kmitl = shared_data() / "datasets" / "kmitl" / "train"
    if not real and o.replay_kmitl and kmitl.is_dir():
        real = [kmitl]
    record = {
        "dataset": str(dataset),
        "dataset_sha256": fp,
        "sessions_train": len({s.group for s in tr}),
        "sessions_validation": len({s.group for s in va}),
        "units": sorted({r.unit for r in rows if r.split == "train"}),
    }
    command = (
        f"python -m models.site train --dataset SITE[{fp[:12]}] --init "
        f"{init.name} --epochs {o.epochs} --lr {o.lr:g} --synthetic {o.synthetic} "
        f"--epoch-synthetic {o.epoch_synthetic} --site-repeat {o.site_repeat} "
        f"--target-fpr {o.target_fpr:g} --seed {o.seed}"
    )
    cfg = mtrain.TrainConfig(
        out=out,
        real=real,
        synthetic=o.synthetic,
        epoch_synthetic=o.epoch_synthetic,
        epochs=o.epochs,
        batch=o.batch,
        lr=o.lr,
        seed=o.seed,
        real_repeat=1,
        target_fpr=o.target_fpr,
        name=NAME,
        version=f"site-{fp[:12]}",
        threads=o.threads,
        init=init,
        cache=o.cache,
        site_train=tr,
        site_val=va,
        site_repeat=o.site_repeat,
        site_record=record,
        stage_command=command,
        verbose=o.verbose,
        parity_min=o.parity_min,
        parity_by=o.parity_by,
        qat=o.qat,
    )
    t0 = time.monotonic()
    result = mtrain.train(cfg)
    model = Path(result["model"])
    write_card(model, record, result, seconds=time.monotonic() - t0)
    return model


def write_card(
    model: Path, record: dict[str, Any], result: dict[str, Any], *, seconds: float
) -> Path:
    """A short card beside the candidate: what it was trained on and what validation says."""
    spec = json.loads(model.with_suffix(".json").read_text(encoding="utf-8"))
    val = result["validation"]
    par = result["parity"]
    site = val.get("site", {})
    lines = [
        f"# Candidate: {spec['name']} {spec['version']}",
        "",
        f"Continues `{spec['provenance'].get('continued_from')}` on the train split of the site "
        f"dataset `{record['dataset']}` (fingerprint `{record['dataset_sha256'][:16]}`; "
        f"units {', '.join(record['units'])}): {spec['provenance']['site']['train_crops']} "
        f"crops of {record['sessions_train']} sessions trained on, "
        f"{spec['provenance']['site']['validation_crops']} crops of "
        f"{record['sessions_validation']} other sessions held out for validation. Synthetic "
        f"crops and {', '.join(spec['provenance']['real_data']) or 'no real photos'} replayed. "
        f"{seconds / 60:.1f} min on this machine.",
        "",
        f"Threshold **{spec['threshold']:.4f}**, set for {val['target_fpr']:.0%} FPR on the "
        "site's validation sessions.",
        "",
        "| site validation | value |",
        "|---|---|",
    ]
    if site:
        lines += [
            f"| crops (phone / no phone) | {site['n']} ({site['positives']} / "
            f"{site['negatives']}) |",
            f"| ROC-AUC | {site['roc_auc']:.3f} |",
            f"| recall @ 5 % FPR | {site['recall_at_fpr']['0.05']:.3f} |",
            f"| recall / FPR @ threshold | {site['recall']:.3f} / {site['fpr']:.3f} |",
        ]
    mop = par["matched_operating_point"]
    lines += [
        "",
        f"int8/float decision agreement {mop['agreement']:.4f} on {par['n']} "
        f"validation crops at matched operating points (required {par['required']}); "
        "by domain: "
        + ", ".join(f"{k} {v:.4f}" for k, v in par["by_domain"].items())
        + f"; mean |dP| {par['mean_abs_diff']:.4f}.",
    ]
    for dom, m in par.get("metrics_by_domain", {}).items():
        lines.append(
            f"- {dom} validation ({m['n']} crops): ROC-AUC float {m['auc_float']:.3f}, "
            f"int8 {m['auc_int8']:.3f}; recall @ {val['target_fpr']:.0%} FPR float "
            f"{m['recall_float']:.3f}, int8 {m['recall_int8']:.3f}"
        )
    lines += [
        "",
        "Validation is not a test: judge the candidate with `python -m models.site gate`, "
        "on the held-out sessions and the standing test sets. Figures on synthetic sites "
        "say nothing about accuracy in the field.",
        "",
    ]
    card = model.parent / "CARD.md"
    card.write_text("\n".join(lines), encoding="utf-8")
    return card


# -- gate ---------------------------------------------------------------------------------------


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials (95 % by default)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def recall_at_fpr_counts(y: np.ndarray, s: np.ndarray, fpr: float) -> tuple[int, int]:
    """(phone crops found, phone crops) at the lowest threshold that keeps FPR <= ``fpr``."""
    thr = metrics.threshold_for_fpr(y, s, fpr)
    pos = y == 1
    return int((s[pos] >= thr).sum()), int(pos.sum())


def session_bootstrap(
    y: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    groups: np.ndarray,
    fpr: float,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """95 % percentile intervals of recall at ``fpr`` for scores ``a``, ``b`` and of ``a - b``
    (paired), resampling whole sessions with replacement: crops of one session are alike, so
    resampling crops would claim more certainty than the data holds."""
    rng = np.random.default_rng(seed)
    names = np.unique(groups)
    members = [np.flatnonzero(groups == g) for g in names]
    ra, rb = [], []
    for _ in range(n_boot):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(names), len(names))])
        yy = y[idx]
        if yy.min() == yy.max():
            continue
        ra.append(metrics.recall_at_fpr(yy, a[idx], fpr))
        rb.append(metrics.recall_at_fpr(yy, b[idx], fpr))
    if not ra:
        raise sd.DatasetError("no resample of the held-out sessions has both classes")
    va, vb = np.array(ra), np.array(rb)

    def ci(v: np.ndarray) -> tuple[float, float]:
        return float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))

    return {"candidate": ci(va), "deployed": ci(vb), "difference": ci(va - vb)}


@dataclass
class GateResult:
    promote: bool
    reasons: list[str]
    """Why it refuses (empty when it promotes)."""
    checks: list[str]
    """Every criterion, with the figures, as printed."""
    site: dict[str, Any]
    standing: dict[str, dict[str, Any]]
    report: str
    """The ``phonewatch eval`` tables."""

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "report"}


def standing_sets(cache: Path, *, synthetic_count: int = STANDING_SYNTH_COUNT) -> list[Path]:
    """The project's standing test sets: synthetic seed 7 (rendered once into ``cache``, keyed
    by the renderer's source) and the shared kmitl ``test`` split where present."""
    from models.synth.render_dataset import render_dataset
    from models.train import renderer_id

    folder = cache / f"standing-{renderer_id()}-{synthetic_count}" / "synthetic" / "test"
    if not (folder / "index.csv").is_file():
        tmp = folder.with_name("test.part")
        shutil.rmtree(tmp, ignore_errors=True)
        render_dataset(tmp, count=synthetic_count, seed=STANDING_SYNTH_SEED)
        tmp.replace(folder)
    out = [folder]
    kmitl = shared_data() / "datasets" / "kmitl" / "test"
    if kmitl.is_dir():
        out.append(kmitl)
    return out


def gate(
    candidate: Path,
    deployed: Path,
    dataset: Path,
    *,
    standing: Sequence[Path],
    target_fpr: float = TARGET_FPR,
    margin: float = MARGIN,
    n_boot: int = 2000,
    out: Path | None = None,
) -> GateResult:
    """Judge ``candidate`` against ``deployed`` (see the module docstring)."""
    from edge.app import cli_models

    rows = sd.read_dataset(dataset)
    test = sd.split(rows, "test")
    if not test:
        raise sd.DatasetError(f"{dataset} has no crops in the test split")
    sd.need_both_classes(test, "the held-out (test) split")
    n_sessions = len({r.session for r in test})
    if n_sessions < 2:
        raise sd.DatasetError(
            f"the held-out split has {n_sessions} session: a gate needs at "
            "least two to say anything beyond that one session"
        )
    with tempfile.TemporaryDirectory(prefix="site-gate-") as tmp:
        view = sd.eval_view(test, Path(tmp) / "site" / "heldout")
        results, labels = cli_models.evaluate(
            [(candidate, None), (deployed, None)], [view, *standing]
        )
        report = cli_models.report(results, labels)
        if out is not None:
            cli_models.write_outputs(results, labels, out)
    cand, dep = results
    name = "site/heldout"
    y = labels[name]
    sess = np.array([test[int(Path(f).name.split("_", 1)[0])].session for f in cand.files[name]])
    sc, sdp = cand.scores[name], dep.scores[name]
    checks: list[str] = []
    reasons: list[str] = []
    site: dict[str, Any] = {
        "crops": int(y.size),
        "phone": int(y.sum()),
        "sessions": n_sessions,
        "target_fpr": target_fpr,
    }
    for key, s in (("candidate", sc), ("deployed", sdp)):
        k, n = recall_at_fpr_counts(y, s, target_fpr)
        site[key] = {
            "recall": k / n,
            "found": k,
            "phone": n,
            "wilson95": wilson(k, n),
            "roc_auc": metrics.roc_auc(y, s),
        }
    boot = session_bootstrap(y, sc, sdp, sess, target_fpr, n_boot=n_boot)
    site["bootstrap95"] = boot
    c, d = site["candidate"], site["deployed"]
    lo, hi = boot["difference"]
    ok = lo > 0
    checks.append(
        f"[{'ok' if ok else 'FAIL'}] site held-out ({y.size} crops, {n_sessions} sessions) "
        f"recall @ {target_fpr:.0%} FPR: candidate {c['recall']:.3f} (Wilson 95% "
        f"{c['wilson95'][0]:.3f}-{c['wilson95'][1]:.3f}) vs deployed {d['recall']:.3f} "
        f"({d['wilson95'][0]:.3f}-{d['wilson95'][1]:.3f}); difference 95% CI "
        f"{lo:+.3f}..{hi:+.3f} (bootstrap over sessions) must be above 0"
    )
    if not ok:
        reasons.append(
            f"not better on the site's held-out sessions: recall difference "
            f"95% CI {lo:+.3f}..{hi:+.3f} includes or is below 0"
        )
    neg = y == 0
    fp = int((sc[neg] >= cand.threshold).sum())
    f_lo, f_hi = wilson(fp, int(neg.sum()))
    dep_fpr = float((sdp[neg] >= dep.threshold).mean())
    # What the unit does is flag at the sidecar threshold: its false alarms may not be clearly
    # above twice the operating FPR, unless the deployed model already flags more.
    bound = max(2 * target_fpr, dep_fpr)
    ok = f_lo <= bound
    site["candidate"]["at_threshold"] = {
        "threshold": cand.threshold,
        "fp": fp,
        "negatives": int(neg.sum()),
        "wilson95": (f_lo, f_hi),
        "recall": float((sc[~neg] >= cand.threshold).mean()),
    }
    site["deployed"]["at_threshold"] = {"threshold": dep.threshold, "fpr": dep_fpr}
    checks.append(
        f"[{'ok' if ok else 'FAIL'}] candidate at its threshold {cand.threshold:.4f} flags "
        f"{fp} of {int(neg.sum())} held-out phone-free crops (FPR {fp / max(1, neg.sum()):.3f}, "
        f"Wilson 95% {f_lo:.3f}-{f_hi:.3f}; deployed at its threshold {dep_fpr:.3f}); must not "
        f"be clearly above {bound:.3f} (twice the operating FPR, or the deployed model's if "
        "higher)"
    )
    if not ok:
        reasons.append(
            f"its threshold flags too many phone-free site crops (FPR "
            f"{fp / neg.sum():.3f}, 95% CI from {f_lo:.3f})"
        )
    standing_out: dict[str, dict[str, Any]] = {}
    for ds in labels:
        if ds == name:
            continue
        yy = labels[ds]
        if yy.min() == yy.max():
            checks.append(f"[--] {ds}: one class only, no recall to compare")
            continue
        rc = metrics.recall_at_fpr(yy, cand.scores[ds], target_fpr)
        rd = metrics.recall_at_fpr(yy, dep.scores[ds], target_fpr)
        ok = rc >= rd - margin - 1e-12
        standing_out[ds] = {"candidate": rc, "deployed": rd, "margin": margin}
        checks.append(
            f"[{'ok' if ok else 'FAIL'}] standing set {ds} ({yy.size} crops) recall "
            f"@ {target_fpr:.0%} FPR: candidate {rc:.3f} vs deployed {rd:.3f}; may "
            f"be at most {margin:.2f} lower"
        )
        if not ok:
            reasons.append(
                f"worse on the standing set {ds}: recall {rc:.3f} vs {rd:.3f} (margin {margin:.2f})"
            )
    res = GateResult(
        promote=not reasons,
        reasons=reasons,
        checks=checks,
        site=site,
        standing=standing_out,
        report=report,
    )
    if out is not None:
        (out / "gate.json").write_text(json.dumps(res.as_dict(), indent=1) + "\n", encoding="utf-8")
    return res


def format_gate(res: GateResult) -> str:
    verdict = (
        "GATE: PROMOTE: the candidate beats the deployed model on the site and holds on "
        "the standing sets"
        if res.promote
        else "GATE: REFUSE: " + "; ".join(res.reasons)
    )
    return "\n".join([res.report, "", *res.checks, "", verdict])


# -- command line -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m models.site",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a candidate from a site dataset export")
    t.add_argument("--dataset", type=Path, required=True, help="export folder with index.csv")
    t.add_argument(
        "--init",
        type=Path,
        default=DEFAULT_DEPLOYED,
        help="the deployed .tflite (with its sidecar) to continue",
    )
    t.add_argument("--out", type=Path, required=True, help="new folder for the candidate")
    d = TrainOptions()
    t.add_argument("--epochs", type=int, default=d.epochs)
    t.add_argument("--lr", type=float, default=d.lr)
    t.add_argument(
        "--synthetic",
        type=int,
        default=d.synthetic,
        help="synthetic crops replayed so the model keeps what it knew",
    )
    t.add_argument("--epoch-synthetic", type=int, default=d.epoch_synthetic)
    t.add_argument(
        "--site-repeat",
        type=int,
        default=d.site_repeat,
        help="augmented copies of each site crop per epoch",
    )
    t.add_argument("--val-share", type=float, default=d.val_share)
    t.add_argument(
        "--real",
        type=Path,
        action="append",
        default=[],
        help="real folders to replay (default: the shared kmitl train, if present)",
    )
    t.add_argument("--target-fpr", type=float, default=d.target_fpr)
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--cache", type=Path, help="keep rendered synthetic crops here")
    t.add_argument(
        "--no-qat",
        dest="qat",
        action="store_false",
        help="train without rounding as the int8 export does (models/qat.py; on by default)",
    )
    g = sub.add_parser("gate", help="promote (exit 0) or refuse (exit 1) a candidate")
    g.add_argument("--candidate", type=Path, required=True)
    g.add_argument("--deployed", type=Path, default=DEFAULT_DEPLOYED)
    g.add_argument("--dataset", type=Path, required=True)
    g.add_argument(
        "--standing",
        type=Path,
        action="append",
        default=[],
        help="a standing test folder (default: synthetic seed 7 and kmitl test)",
    )
    g.add_argument(
        "--margin",
        type=float,
        default=MARGIN,
        help="how much lower the candidate's recall on a standing set may be",
    )
    g.add_argument("--target-fpr", type=float, default=TARGET_FPR)
    g.add_argument(
        "--cache",
        type=Path,
        default=Path("var/site-cache"),
        help="where the standing synthetic set is rendered once",
    )
    g.add_argument("--out", type=Path, help="write metrics.json, curves and gate.json here")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if a.cmd == "train":
        if not 0 < a.target_fpr < 1 or a.epochs < 1 or not 0 < a.val_share < 1:
            ap.error("need 0 < --target-fpr < 1, --epochs >= 1 and 0 < --val-share < 1")
        opts = TrainOptions(
            epochs=a.epochs,
            lr=a.lr,
            synthetic=a.synthetic,
            epoch_synthetic=a.epoch_synthetic,
            site_repeat=a.site_repeat,
            val_share=a.val_share,
            target_fpr=a.target_fpr,
            seed=a.seed,
            real=a.real,
            cache=a.cache,
            qat=a.qat,
            verbose=1 if sys.stderr.isatty() else 0,
        )
        from models.train import TrainExtraMissing

        try:
            model = train_candidate(a.dataset, a.init, a.out, opts)
        except (sd.DatasetError, FileExistsError, FileNotFoundError, TrainExtraMissing) as e:
            print(f"models.site train: {e}", file=sys.stderr)
            return 2
        print(
            f"candidate {model} (sidecar {model.with_suffix('.json').name}, "
            f"{model.parent / 'CARD.md'})"
        )
        return 0
    try:
        standing = a.standing or standing_sets(a.cache)
        res = gate(
            a.candidate,
            a.deployed,
            a.dataset,
            standing=standing,
            target_fpr=a.target_fpr,
            margin=a.margin,
            out=a.out,
        )
    except sd.DatasetError as e:
        print(f"GATE: REFUSE: the dataset cannot judge a candidate: {e}")
        return 1
    print(format_gate(res))
    return 0 if res.promote else 1


if __name__ == "__main__":
    sys.exit(main())
