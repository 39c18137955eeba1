"""The site-learning loop (issue 18), measured on this machine.

    .venv/bin/python bench/flywheel.py [--work DIR] [--quick] [--cycles 100,250,500,1000]
        [--upright] [--epochs N] [--lr X] [--site-repeat N] [--simulated]

1. renders a new site (``models.synth.site``, ``gantry_tint``): whole sessions held out as the
   test split (never shown to a unit), the other sessions the traffic the units watch;
2. per cycle, with the real parts (``site_loop.py``): the site's units (real ``phonewatch``
   units, offline on their own frames, ``[sampling]`` on) watch the next sessions until the
   cycle's label total is about reached; their crops go through Mosquitto into a control room,
   the reviewers (the renderer's truth) label the queue, a dataset version is made and
   exported; ``models.site train`` continues the *deployed* model on it and ``models.site
   gate`` judges the candidate on the export's held-out unit-days; a promoted candidate is
   signed and rolled out to every unit (shadow, live, probation), and the next cycle's units
   start on it;
3. prints per cycle the labels, the frames watched, the candidate's recall on the control
   room's held-out unit-days, the gate's decision, the shadow's agreement, the deployed
   model's recall at 5 % FPR on the renderer's held-out sessions (Wilson 95 % interval) and
   how long each step took.

With ``--upright`` each unit's ROI gets the ``rotate_deg`` an installer reads off
``roi-preview`` (minus the mount's roll, to the degree); "before" is then the shipped model on
the installed site (the figure on the site as rendered is printed too).

``--simulated`` is the earlier shortcut: labels drawn straight from the rendered pool (half at
random, half nearest the deployed model's threshold; ``labels_arrive``), no unit, broker or
control room; with ``--upright`` the crops are turned before anything sees them.

The last line is ``site recall at 5% FPR: before X, after Y (N labels)``: the deployed
model's recall before the first cycle and after the last, N the labels the finally deployed
model was trained on. These are synthetic figures: they show that the loop works and how far
labels go on a synthetic shift, not field accuracy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import site_loop
from _common import REPO, machine

from edge.app.stats import grid
from edge.core import metrics
from models import site as msite
from models import site_data as sd
from models.synth import site as synth_site

LabelSource = Callable[[Sequence[sd.SiteRow], Path, int, np.random.Generator], list[sd.SiteRow]]
"""``(unlabelled pool, deployed model, how many, rng) -> newly labelled crops``."""


def score(model: Path, rows: Sequence[sd.SiteRow]) -> np.ndarray:
    """P(phone) of ``model`` for each crop, as the unit computes it."""
    from edge.adapters.classifier import LiteRTClassifier
    from models.data import load_image

    with LiteRTClassifier.open(model) as clf:
        return np.array([clf.score(load_image(r.path)) for r in rows])


def labels_arrive(
    pool: Sequence[sd.SiteRow],
    deployed: Path,
    n: int,
    rng: np.random.Generator,
    *,
    uncertain_share: float = 0.5,
) -> list[sd.SiteRow]:
    """The unit's sampler and the reviewers, simulated: ``n`` crops of ``pool``, half drawn at
    random (so the labelled set keeps the site's mix), half the crops whose score under the
    deployed model is nearest its threshold (what it is least sure of); the label is the
    renderer's ground truth (a reviewer's, in the field)."""
    import json

    n = min(n, len(pool))
    if n <= 0:
        return []
    thr = float(json.loads(deployed.with_suffix(".json").read_text(encoding="utf-8"))["threshold"])
    s = score(deployed, pool)
    n_unc = round(n * uncertain_share)
    band = np.argsort(np.abs(s - thr), kind="stable")[:n_unc]
    rest = np.setdiff1d(np.arange(len(pool)), band)
    rand = rng.choice(rest, n - band.size, replace=False)
    return [pool[int(i)] for i in np.concatenate([band, rand])]


def write_export(rows: Sequence[sd.SiteRow], dest: Path) -> Path:
    """``rows`` as a dataset export at ``dest`` (images linked, not copied), the format the
    control room exports and ``models.site`` reads."""
    for sub in ("phone", "no_phone"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    out = []
    for r in rows:
        rel = f"{'phone' if r.label else 'no_phone'}/{r.path.name}"
        link = dest / rel
        if not link.exists():
            link.symlink_to(r.path.resolve())
        out.append(
            {
                "path": rel,
                "file": rel,
                "label": "phone" if r.label else "no_phone",
                "phone": str(r.label),
                "unit": r.unit,
                "roi": r.roi,
                "time": r.time,
                "source": r.source,
                "reviewer": "simulated",
                "split": r.split,
                "session": r.session,
                "day": r.day,
                "pose": r.extra.get("pose", ""),
                "lighting": r.extra.get("lighting", ""),
            }
        )
    synth_site.write_index(dest, out)
    return dest


def recall_ci(y: np.ndarray, s: np.ndarray, fpr: float = msite.TARGET_FPR) -> str:
    k, n = msite.recall_at_fpr_counts(y, s, fpr)
    lo, hi = msite.wilson(k, n)
    return f"{k / n:.2f} [{lo:.2f}-{hi:.2f}]"


@dataclass
class Plan:
    cycles: list[int]
    sessions: int
    per_session: int
    test_share: float
    train: msite.TrainOptions


def unit_rotation(unit: str, seed: int) -> float:
    """The ``rotate_deg`` an installer sets for ``unit`` (``<site>-u<n>``): the driver upright
    in ``roi-preview``'s crop, i.e. minus the camera's roll, to the nearest degree."""
    site_name, _, n = unit.rpartition("-u")
    mount = synth_site.unit_mount(synth_site.SITES[site_name], seed, int(n))
    return float(-round(mount.roll))


def install_upright(world: Path, out: Path, seed: int) -> Path:
    """``world`` as its units score it once installed (see the module docstring): each crop
    turned by its unit's ``rotate_deg`` through ``Roi.crop``. Kept in ``out`` and reused."""
    if (out / "index.csv").is_file():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    rows = sd.read_dataset(world)
    turn = {u: unit_rotation(u, seed) for u in sorted({r.unit for r in rows})}
    for r, crop in zip(rows, site_loop.unit_crops(rows, turn), strict=True):
        dest = tmp / r.rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dest), crop)
    shutil.copy2(world / "index.csv", tmp / "index.csv")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    turns = ", ".join(f"{u} {deg:g}" for u, deg in turn.items())
    print(f"installed upright: rotate_deg per unit {turns}", flush=True)
    return out


def plans(quick: bool) -> Plan:
    if quick:
        return Plan(
            cycles=[40, 100],
            sessions=16,
            per_session=16,
            test_share=0.35,
            train=msite.TrainOptions(epochs=1, synthetic=200, epoch_synthetic=100, site_repeat=2),
        )
    return Plan(
        cycles=[100, 250, 500, 1000],
        # the units label about 0.45 of the frames they watch: 1,000 labels need ~2,300
        sessions=100,
        per_session=30,
        test_share=0.17,
        train=msite.TrainOptions(epochs=3, synthetic=2000, epoch_synthetic=300, site_repeat=2),
    )


def render_world(world: Path, plan: Plan, seed: int) -> None:
    """The site, rendered once into ``world`` (kept and reused)."""
    if not (world / "index.csv").is_file():
        shutil.rmtree(world, ignore_errors=True)
        synth_site.render_site(
            world,
            seed=seed,
            sessions=plan.sessions,
            per_session=plan.per_session,
            test_share=plan.test_share,
        )


def run(
    work: Path,
    plan: Plan,
    *,
    seed: int = 0,
    source: LabelSource = labels_arrive,
    deployed: Path = msite.DEFAULT_DEPLOYED,
    upright: bool = False,
) -> tuple[float, float, int]:
    t_all = time.monotonic()
    print(
        f"machine: {machine()}; {plan.cycles} labels; {plan.sessions} sessions of "
        f"{plan.per_session} crops",
        flush=True,
    )
    world = work / "world"
    t0 = time.monotonic()
    render_world(world, plan, seed)
    if upright:
        raw_test = sd.split(sd.read_dataset(world), "test")
        y_raw, s_raw = np.array([r.label for r in raw_test]), score(deployed, raw_test)
        print(
            f"deployed {deployed.name} on the site as rendered (no rotate_deg): held-out "
            f"recall @ 5% FPR {recall_ci(y_raw, s_raw)} "
            f"(ROC-AUC {metrics.roc_auc(y_raw, s_raw):.3f})",
            flush=True,
        )
        world = install_upright(world, work / "world-upright", seed)
    rows = sd.read_dataset(world)
    test = sd.split(rows, "test")
    pool = sd.split(rows, "train")
    print(
        f"site rendered in {time.monotonic() - t0:.0f} s: {len(pool)} crops in the pool "
        f"({len({r.session for r in pool})} sessions), {len(test)} held out "
        f"({len({r.session for r in test})} sessions)",
        flush=True,
    )
    t0 = time.monotonic()
    standing = msite.standing_sets(work / "cache")
    print(
        f"standing sets ready in {time.monotonic() - t0:.0f} s: "
        f"{', '.join(str(p) for p in standing)}",
        flush=True,
    )
    y_test = np.array([r.label for r in test])
    s0 = score(deployed, test)
    before = metrics.recall_at_fpr(y_test, s0, msite.TARGET_FPR)
    print(
        f"deployed {deployed.name}: site held-out recall @ 5% FPR "
        f"{recall_ci(y_test, s0)} (ROC-AUC {metrics.roc_auc(y_test, s0):.3f})",
        flush=True,
    )
    rng = np.random.default_rng(seed)
    labelled: list[sd.SiteRow] = []
    deployed_labels = 0
    table: list[tuple[str, ...]] = []
    current = deployed
    after = before
    for k, total in enumerate(plan.cycles, start=1):
        t0 = time.monotonic()
        have = {r.rel for r in labelled}
        fresh = source([r for r in pool if r.rel not in have], current, total - len(labelled), rng)
        labelled += fresh
        export = write_export(labelled + test, work / f"cycle{k}" / "dataset")
        t_label = time.monotonic() - t0
        t0 = time.monotonic()
        cand_dir = work / f"cycle{k}" / "candidate"
        shutil.rmtree(cand_dir, ignore_errors=True)
        try:
            cand = msite.train_candidate(export, current, cand_dir, plan.train)
        except (RuntimeError, sd.DatasetError) as e:  # e.g. the parity gate
            print(f"cycle {k}: no candidate: {e}", flush=True)
            table.append(
                (
                    str(k),
                    str(len(labelled)),
                    "-",
                    "no candidate",
                    recall_ci(y_test, score(current, test)),
                    f"{t_label:.0f}",
                    f"{time.monotonic() - t0:.0f}",
                    "-",
                )
            )
            continue
        t_train = time.monotonic() - t0
        t0 = time.monotonic()
        res = msite.gate(cand, current, export, standing=standing, n_boot=1000)
        t_gate = time.monotonic() - t0
        print(msite.format_gate(res), flush=True)
        if res.promote:
            current = cand
            deployed_labels = len(labelled)
        s = score(current, test)
        after = metrics.recall_at_fpr(y_test, s, msite.TARGET_FPR)
        c = res.site["candidate"]
        table.append(
            (
                str(k),
                str(len(labelled)),
                f"{c['recall']:.2f} [{c['wilson95'][0]:.2f}-{c['wilson95'][1]:.2f}]",
                "promote" if res.promote else "refuse",
                recall_ci(y_test, s),
                f"{t_label:.0f}",
                f"{t_train:.0f}",
                f"{t_gate:.0f}",
            )
        )
        print(
            grid(
                table,
                header=(
                    "cycle",
                    "labels",
                    "candidate recall",
                    "gate",
                    "deployed recall @5% FPR",
                    "label s",
                    "train s",
                    "gate s",
                ),
                title=f"after cycle {k}",
            ),
            flush=True,
        )
    print(
        grid(
            table,
            header=(
                "cycle",
                "labels",
                "candidate recall",
                "gate",
                "deployed recall @5% FPR",
                "label s",
                "train s",
                "gate s",
            ),
            title=f"site flywheel ({(time.monotonic() - t_all) / 60:.1f} min in all; "
            "recall on the held-out site sessions, Wilson 95%)",
        )
    )
    print(
        f"site recall at 5% FPR: before {before:.2f}, after {after:.2f} ({deployed_labels} labels)"
    )
    return before, after, deployed_labels


REAL_HEADER = (
    "cycle",
    "labels",
    "frames watched",
    "candidate recall (CR held-out)",
    "gate",
    "shadow agreement",
    "deployed recall @5% FPR",
    "watch s",
    "train s",
    "gate s",
    "rollout s",
)


def _cycle_rows(
    pool: Sequence[sd.SiteRow], start: int, n_frames: int
) -> tuple[list[sd.SiteRow], int]:
    """Whole sessions of ``pool`` (in session order) from ``start`` until ``n_frames``
    frames are covered; returns them and the next start."""
    sessions: dict[str, list[sd.SiteRow]] = {}
    for r in pool:
        sessions.setdefault(r.session, []).append(r)
    names = sorted(sessions)
    out: list[sd.SiteRow] = []
    i = start
    while i < len(names) and len(out) < n_frames:
        out += sessions[names[i]]
        i += 1
    return out, i


def run_real(
    work: Path,
    plan: Plan,
    *,
    seed: int = 0,
    deployed: Path = msite.DEFAULT_DEPLOYED,
    upright: bool = False,
    sampling: site_loop.Sampling | None = None,
) -> tuple[float, float, int]:
    """The loop with its real parts (``site_loop``): units watch the site and sample, the
    control room queues, reviewers (the renderer's truth) label, a dataset version is
    exported, ``models.site`` trains and gates, a promoted candidate is signed, offered in
    shadow, then live, and kept through probation by every unit."""
    t_all = time.monotonic()
    print(
        f"machine: {machine()}; {plan.cycles} labels; {plan.sessions} sessions of "
        f"{plan.per_session} crops; real units, Mosquitto, control room",
        flush=True,
    )
    world = work / "world"
    render_world(world, plan, seed)
    rows = sd.read_dataset(world)
    test, pool = sd.split(rows, "test"), sd.split(rows, "train")
    units = sorted({r.unit for r in rows})
    rotate = {u: unit_rotation(u, seed) if upright else 0.0 for u in units}
    print(
        f"site: {len(pool)} crops the units will watch ({len({r.session for r in pool})} "
        f"sessions), {len(test)} held out ({len({r.session for r in test})} sessions, never "
        f"shown to a unit); ROI rotate_deg per unit: "
        + ", ".join(f"{u} {d:g}" for u, d in rotate.items()),
        flush=True,
    )
    standing = msite.standing_sets(work / "cache")
    y_test = np.array([r.label for r in test])
    test_crops = list(site_loop.unit_crops(test, rotate))
    if upright:
        s_raw = site_loop.score_crops(deployed, site_loop.unit_crops(test, {}))
        print(
            f"deployed {deployed.name} without rotate_deg: held-out recall @ 5% FPR "
            f"{recall_ci(y_test, s_raw)} (ROC-AUC {metrics.roc_auc(y_test, s_raw):.3f})",
            flush=True,
        )
    s0 = site_loop.score_crops(deployed, test_crops)
    before = after = metrics.recall_at_fpr(y_test, s0, msite.TARGET_FPR)
    print(
        f"deployed {deployed.name} as the units score it: held-out recall @ 5% FPR "
        f"{recall_ci(y_test, s0)} (ROC-AUC {metrics.roc_auc(y_test, s0):.3f})",
        flush=True,
    )
    table: list[tuple[str, ...]] = []

    def unpromoted(
        row: list[str], what: str, model: Path, t_watch: float, times: tuple[str, str]
    ) -> tuple[str, ...]:
        """A cycle's table row when nothing was judged (no candidate, or the gate could not)."""
        deployed_recall = recall_ci(y_test, site_loop.score_crops(model, test_crops))
        return (*row, "-", what, "-", deployed_recall, f"{t_watch:.0f}", *times, "-")

    current, deployed_labels, labels, next_session, per_frame = deployed, 0, 0, 0, 0.45
    shutil.rmtree(work / "loop", ignore_errors=True)
    with site_loop.SiteLoop(work / "loop", rotate, model=deployed, sampling=sampling) as loop:
        for k, total in enumerate(plan.cycles, start=1):
            t0 = time.monotonic()
            watched: list[sd.SiteRow] = []
            while labels < total * 0.95 and next_session < len({r.session for r in pool}):
                more, next_session = _cycle_rows(
                    pool, next_session, max(1, round((total - labels) / per_frame))
                )
                loop.watch(f"cycle{k}-{next_session}", more)
                watched += more
                loop.wait_for_crops()
                got = loop.review()
                labels += sum(v for key, v in got.items() if not key.startswith("skip"))
                per_frame = max(
                    0.1, labels / max(1, sum(len(u.frames) for u in loop.units.values()))
                )
            t_watch = time.monotonic() - t0
            export = work / "loop" / f"cycle{k}" / "dataset"
            shutil.rmtree(export, ignore_errors=True)
            did, manifest = loop.dataset(export)
            counts = manifest["counts"]
            n_labels = sum(sum(c.values()) for c in counts.values())
            print(
                f"cycle {k}: dataset {did[:12]}: {counts} ({n_labels} labels; "
                f"{len(watched)} frames watched this cycle)",
                flush=True,
            )
            t0 = time.monotonic()
            cand_dir = work / "loop" / f"cycle{k}" / "candidate"
            shutil.rmtree(cand_dir, ignore_errors=True)
            row: list[str] = [str(k), str(n_labels), str(len(watched))]
            try:
                cand = msite.train_candidate(export, current, cand_dir, plan.train)
            except (RuntimeError, sd.DatasetError) as e:
                print(f"cycle {k}: no candidate: {e}", flush=True)
                no_change = (f"{time.monotonic() - t0:.0f}", "-")
                table.append(unpromoted(row, "no candidate", current, t_watch, no_change))
                continue
            t_train = time.monotonic() - t0
            t0 = time.monotonic()
            try:
                res = msite.gate(cand, current, export, standing=standing, n_boot=1000)
            except sd.DatasetError as e:  # e.g. too few held-out unit-days yet: refused
                print(f"cycle {k}: the gate cannot judge it: {e}", flush=True)
                no_change = (f"{t_train:.0f}", f"{time.monotonic() - t0:.0f}")
                table.append(unpromoted(row, "cannot judge", current, t_watch, no_change))
                continue
            t_gate = time.monotonic() - t0
            print(msite.format_gate(res), flush=True)
            agreement, t_roll = "-", "-"
            if res.promote:
                t0 = time.monotonic()
                recent = {u: [r for r in watched if r.unit == u][-40:] or pool[:40] for u in rotate}
                report = loop.roll_out(cand, recent, name=f"cycle{k}-rollout")
                agree = [v["agreement"] for v in report.values() if v["agreement"] is not None]
                agreement = f"{min(agree):.3f}-{max(agree):.3f}" if agree else "-"
                t_roll = f"{time.monotonic() - t0:.0f}"
                current, deployed_labels = cand, n_labels
            s = site_loop.score_crops(current, test_crops)
            after = metrics.recall_at_fpr(y_test, s, msite.TARGET_FPR)
            c = res.site.get("candidate") or {}
            cand_recall = (
                f"{c['recall']:.2f} [{c['wilson95'][0]:.2f}-{c['wilson95'][1]:.2f}]" if c else "-"
            )
            table.append(
                (
                    *row,
                    cand_recall,
                    "promote" if res.promote else "refuse",
                    agreement,
                    recall_ci(y_test, s),
                    f"{t_watch:.0f}",
                    f"{t_train:.0f}",
                    f"{t_gate:.0f}",
                    t_roll,
                )
            )
            print(grid(table, header=REAL_HEADER, title=f"after cycle {k}"), flush=True)
    print(
        grid(
            table,
            header=REAL_HEADER,
            title=f"site flywheel, real parts ({(time.monotonic() - t_all) / 60:.1f} min in all; "
            "deployed recall on the held-out site sessions, Wilson 95%)",
        )
    )
    print(
        f"site recall at 5% FPR: before {before:.2f}, after {after:.2f} ({deployed_labels} labels)"
    )
    return before, after, deployed_labels


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--work",
        type=Path,
        default=REPO / "var" / "flywheel",
        help="working folder (the rendered site is kept and reused)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a small site, two short cycles: checks the loop in minutes",
    )
    ap.add_argument("--cycles", help="labels after each cycle, e.g. 100,250,500,1000")
    ap.add_argument("--epochs", type=int, help="training epochs per cycle")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--upright",
        action="store_true",
        help="install the site first: each unit's ROI turned upright (rotate_deg)",
    )
    ap.add_argument(
        "--simulated",
        action="store_true",
        help="labels drawn straight from the rendered pool (no unit, broker or control room)",
    )
    ap.add_argument("--lr", type=float, help="learning rate per cycle")
    ap.add_argument("--site-repeat", type=int, help="augmented copies of each site crop per epoch")
    a = ap.parse_args(argv)
    plan = plans(a.quick)
    if a.cycles:
        plan.cycles = [int(v) for v in a.cycles.split(",")]
    if a.epochs:
        plan.train.epochs = a.epochs
    if a.lr:
        plan.train.lr = a.lr
    if a.site_repeat:
        plan.train.site_repeat = a.site_repeat
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    plan.train.cache = a.work / "cache"
    if a.simulated:
        run(a.work, plan, seed=a.seed, upright=a.upright)
    else:
        run_real(a.work, plan, seed=a.seed, upright=a.upright)
    return 0


if __name__ == "__main__":
    sys.exit(main())
