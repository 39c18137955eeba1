"""Train the phone-in-hand classifier, export it full-int8 and write its sidecar.

    nice -n 10 python -m models.train --out var/phone_in_hand \\
        --real ../shared/data/datasets/kmitl/train --synthetic 6000 --epochs 22

Needs a new (or empty) ``--out``, unless ``--force``. The sidecar names the model ``--name``
(default ``phone-in-hand``) and ``--version`` (default ``<UTC date>-<data fingerprint>``).

Needs the ``train`` extra (TensorFlow/Keras: ``pip install -e '.[train]'``); the unit never
imports this module.
Data: any number of real image folders (``phone/``, ``no_phone/``; a ``labels.csv`` with
``source_frame`` groups frames) plus synthetic crops rendered in-process. Validation is carved
out of each real folder by whole groups (runs of neighbouring source frames) and from a
synthetic seed never used for training. Never pass a test split here: the threshold is chosen
on validation, for ``--target-fpr``.
Every crop goes through ``edge.core.preprocess.preprocess``, the function the unit uses.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib
import json
import logging
import math
import os
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge.core import metrics
from edge.core.errors import PhonewatchError
from edge.core.preprocess import InputSpec
from models import data as mdata
from models import export
from models.synth.render import render_crop

log = logging.getLogger("models.train")

INSTALL_TRAIN = "pip install -e '.[train]' (or, with the Makefile: make bootstrap EXTRAS=dev,train)"
"""How to install the ``train`` extra (TensorFlow, which brings Keras)."""


class TrainExtraMissing(PhonewatchError, ImportError):
    """TensorFlow/Keras, the ``train`` extra, is not installed (or does not import)."""


def require_train_extra(what: str = "python -m models.train") -> None:
    """Raise ``TrainExtraMissing`` naming the missing module and how to install it, unless
    TensorFlow and Keras import. The unit and ``phonewatch eval`` never need them."""
    for module in ("tensorflow", "keras"):
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise TrainExtraMissing(
                f"{what} needs TensorFlow/Keras (the 'train' extra), and {module} does not "
                f"import ({e}). Install it with: {INSTALL_TRAIN}"
            ) from None


SYNTH_TRAIN_SEED = 1000
"""Synthetic seeds: training uses ``seed + SYNTH_TRAIN_SEED``, validation ``+ 1``; the held-out
synthetic test set (``models/phone_in_hand/MODEL_CARD.md``) uses seed 7 and other seeds < 1000."""


@dataclass
class TrainConfig:
    out: Path
    real: list[Path]
    synthetic: int = 6000
    epoch_synthetic: int = 1800
    """Synthetic crops drawn (without replacement) for each epoch."""
    size: int = 96
    alpha: float = 0.35
    arch: str = "mobilenetv2"
    weights: str = "none"
    epochs: int = 22
    batch: int = 32
    lr: float = 3e-3
    seed: int = 0
    val_share: float = 0.2
    real_repeat: int = 2
    target_fpr: float = 0.05
    name: str = "phone-in-hand"
    version: str | None = None
    """None: ``default_version`` (the UTC date and the training data's fingerprint), so a
    retrained model never carries its parent's version."""
    threads: int = 2
    parity_min: float = 0.99
    """Least share of validation crops on which the int8 model must decide as the float one."""
    batchnorm: bool = False
    """mobilenetv1: a batch-norm layer after each convolution (starts as the identity)."""
    act_noise: float = 0.0
    """mobilenetv1: training-only Gaussian noise after each ReLU6 (int8 rounding stand-in)."""
    qat: bool = False
    """mobilenetv1: quantisation-aware training: in training, each convolution's kernel and
    each ReLU6 output is rounded as the int8 export rounds it (``models.qat``). A choice of
    this run: a continued model takes it from here, not from its sidecar."""
    init: Path | None = None
    """A model from an earlier run to continue training from: its ``.keras``, or its int8
    ``.tflite`` (the float network is rebuilt from the dequantised weights, ``rebuild_float``)."""
    resize: int | None = None
    """With ``init``: continue at this input size instead of the model's (the weights carry
    over unchanged: the networks are convolutional up to a global average pool)."""
    cache: Path | None = None
    """Folder to keep rendered synthetic crops between runs (rendering takes minutes)."""
    partial_view: float = 0.0
    """Share of phone-free training crops shown part-way out of view (``data.partial_view``)."""
    hard_share: float = 0.0
    """Share of each epoch's synthetic crops chosen as the ones the model currently gets most
    wrong (``_pick_synthetic``); the rest are drawn at random."""
    teachers: list[Path] = field(default_factory=list)
    """Earlier int8 models (each with its sidecar) whose mean P(phone) on each synthetic
    training crop goes into that crop's target (knowledge distillation)."""
    distill: float = 0.5
    """With ``teachers``: the teachers' share of a synthetic crop's target (the label has the
    rest)."""
    site_train: list[mdata.Sample] = field(default_factory=list)
    """A force's own crops to train on, already split by session (``models.site``)."""
    site_val: list[mdata.Sample] = field(default_factory=list)
    """The force's validation crops (whole sessions held out of ``site_train``). With them the
    threshold is set on these alone (``target_fpr`` at the site), and the int8 representative
    set includes site crops."""
    site_repeat: int = 3
    """Augmented copies of each site crop per epoch."""
    site_record: dict[str, Any] = field(default_factory=dict)
    """Goes into the sidecar's provenance as ``site`` (dataset fingerprint, sessions, ...)."""
    stage_command: str | None = None
    """The command recorded for this stage (default: the ``models.train`` one)."""
    verbose: int = 0
    """Keras ``fit`` verbosity (1: a progress bar per epoch)."""
    parity_by: str = "decisions"
    """The export gate: ``decisions`` (agreement at matched operating points >= parity_min)
    or ``metrics`` (per validation domain, int8 no worse than float; ``_metric_parity``)."""


def build_model(
    arch: str,
    size: int,
    alpha: float,
    weights: str,
    *,
    batchnorm: bool = False,
    act_noise: float = 0.0,
    qat: bool = False,
) -> Any:
    import keras

    inp = keras.Input((size, size, 3), name="image")
    if arch == "mobilenetv2":
        base = keras.applications.MobileNetV2(
            input_tensor=inp,
            alpha=alpha,
            include_top=False,
            pooling="avg",
            weights=None if weights == "none" else weights,
        )
        # Keras ships BatchNorm momentum 0.999 (for long ImageNet runs); on a short run from
        # scratch the moving statistics would still be near their initial values at the end.
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
        x = base.output
        x = keras.layers.Dropout(0.2)(x)
    elif arch == "mobilenetv1":
        # ImageNet weights read from a quantised MobileNet-V1 TFLite classifier (no download).
        from models.pretrained import mobilenet_v1_backbone

        if weights in ("none", "imagenet"):
            raise ValueError("arch mobilenetv1 needs --weights PATH to a MobileNet-V1 .tflite")
        x = mobilenet_v1_backbone(
            Path(weights), inp, batchnorm=batchnorm, act_noise=act_noise, quant_aware=qat
        )
        x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dropout(0.2)(x)
    elif arch == "tiny":  # for tests: seconds to train, same export path
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu6")(inp)
        x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
        x = keras.layers.Conv2D(16, 1, strides=2, activation="relu6")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
    else:
        raise ValueError(f"unknown arch {arch!r} (mobilenetv2 or tiny)")
    out = keras.layers.Dense(2, activation="softmax", name="p")(x)
    return keras.Model(inp, out, name=f"phone_in_hand_{arch}")


def _shared(path: Path | str) -> str:
    """A path under the shared data folder as the project names it (``../shared/data/...``)."""
    parts = str(path).split("shared/data/", 1)
    return f"../shared/data/{parts[1]}" if len(parts) == 2 else str(path)


def command_line(cfg: TrainConfig, *, out: str = "OUT", init: str | None = None) -> str:
    """The ``models.train`` command that repeats this run (``init`` names the earlier stage's
    ``.keras``; shared data paths are written as ``../shared/data/...``)."""
    parts = ["python -m models.train", f"--out {out}"]
    if cfg.name != TrainConfig.name:  # it names the files the next stage continues from
        parts.append(f"--name {cfg.name}")
    parts += [f"--real {_shared(r)}" for r in cfg.real]
    parts += [f"--synthetic {cfg.synthetic}", f"--epoch-synthetic {cfg.epoch_synthetic}"]
    if cfg.init is None:
        parts += [f"--arch {cfg.arch}", f"--alpha {cfg.alpha}", f"--size {cfg.size}"]
        if cfg.weights != "none":
            parts.append(f"--weights {_shared(cfg.weights)}")
        if cfg.batchnorm:
            parts.append("--batchnorm")
        if cfg.act_noise:
            parts.append(f"--act-noise {cfg.act_noise:g}")
    else:
        parts.append(f"--init {init or cfg.init}")
        if cfg.resize is not None:
            parts.append(f"--size {cfg.resize}")
    if cfg.qat:
        parts.append("--qat")
    if cfg.partial_view:
        parts.append(f"--partial-view {cfg.partial_view:g}")
    if cfg.hard_share:
        parts.append(f"--hard-share {cfg.hard_share:g}")
    if cfg.teachers:
        parts += [f"--teacher TEACHER{k + 1}" for k in range(len(cfg.teachers))]
        parts.append(f"--distill {cfg.distill:g}")
    parts += [
        f"--lr {cfg.lr:g}",
        f"--epochs {cfg.epochs}",
        f"--batch {cfg.batch}",
        f"--real-repeat {cfg.real_repeat}",
        f"--seed {cfg.seed}",
        f"--target-fpr {cfg.target_fpr:g}",
    ]
    return " ".join(parts)


def rebuild_float(tflite: Path, prov: dict[str, Any], *, qat: bool = False) -> Any:
    """The float Keras network of an int8 MobileNet-V1 classifier that this module exported:
    convolutions and head from the dequantised weights (``models.pretrained``), with the batch
    norm and activation noise of its training (``prov``, its sidecar's provenance) added back.
    Batch-norm layers start untrained: call ``identity_batchnorm`` before training. With
    ``qat`` the layers round as the int8 export does, in training (``models.qat``)."""
    from models.pretrained import input_size, read_head

    if prov.get("arch") != "mobilenetv1":
        raise ValueError(
            f"{tflite}: only MobileNet-V1 models (arch mobilenetv1 in the sidecar) "
            "can be rebuilt from a .tflite; continue from the run's .keras instead"
        )
    model = build_model(
        "mobilenetv1",
        input_size(tflite),
        float(prov.get("alpha", 0.25)),
        str(tflite),
        batchnorm=bool(prov.get("batchnorm")),
        act_noise=float(prov.get("act_noise", 0.0)),
        qat=qat,
    )
    model.get_layer("p").set_weights(list(read_head(tflite)))
    return model


def _init_sidecar(init: Path | None) -> dict[str, Any]:
    """The sidecar beside the model (``.keras`` or ``.tflite``) a run continues (empty if
    none)."""
    side = init.with_suffix(".json") if init is not None else None
    if side is None or not side.is_file():
        return {}
    doc = json.loads(side.read_text(encoding="utf-8"))
    return doc if isinstance(doc, dict) else {}


def _init_provenance(init: Path | None) -> dict[str, Any]:
    """The provenance in the sidecar beside the model (``.keras`` or ``.tflite``) a run
    continues (empty if none)."""
    prov = _init_sidecar(init).get("provenance", {})
    return prov if isinstance(prov, dict) else {}


def default_version(data_fp: str, now: dt.datetime, parent_version: str | None = None) -> str:
    """A new model's version: ``<UTC date>-<first 8 hex of its training-data fingerprint>``,
    with the time of day added when that is the version of the model it continues (a second
    run on the same data the same day, e.g. an export at another ``--target-fpr``)."""
    version = f"{now:%Y%m%d}-{data_fp[:8]}"
    if version == parent_version:
        version = f"{now:%Y%m%d}T{now:%H%M%S}-{data_fp[:8]}"
    return version


MIN_VAL_POSITIVES = 10
"""Fewest phone crops in a validation set that can check a threshold's recall at all."""


def negatives_needed(target_fpr: float) -> int:
    """Fewest phone-free validation crops one of which is within ``target_fpr``
    (``1 / target_fpr``; at a target of 0, where none may be flagged, ``MIN_VAL_POSITIVES``)."""
    if target_fpr <= 0:
        return MIN_VAL_POSITIVES
    return math.ceil(1.0 / target_fpr - 1e-9)


def validation_shortfall(n_pos: int, n_neg: int, target_fpr: float) -> str | None:
    """Why ``n_pos`` phone and ``n_neg`` phone-free validation crops are too few to set a
    threshold for ``target_fpr`` (None when they are enough): one phone-free crop must be
    within the target (``negatives_needed``), and recall needs ``MIN_VAL_POSITIVES``."""
    need_neg = negatives_needed(target_fpr)
    if n_neg >= need_neg and n_pos >= MIN_VAL_POSITIVES:
        return None
    step = f"one phone-free crop is {1 / n_neg:.0%} FPR" if n_neg else "no phone-free crop"
    return (
        f"{n_pos} phone and {n_neg} phone-free validation crops are too few to set a "
        f"threshold for {target_fpr:.0%} FPR ({step}): need at least {need_neg} phone-free "
        f"and {MIN_VAL_POSITIVES} phone crops"
    )


THRESHOLD_DRIFT = 0.1
"""A new threshold this far (absolute) from the parent model's, or more than twice or less
than half of it, is reported: the score scale moved, and the unit's decisions with it."""


def threshold_drift(new: float, parent: float | None) -> str | None:
    """Why ``new`` is far from the ``parent`` model's threshold (None if it is not)."""
    if parent is None or not math.isfinite(parent) or parent <= 0:
        return None
    if abs(new - parent) <= THRESHOLD_DRIFT and 0.5 <= new / parent <= 2.0:
        return None
    return (
        f"the new threshold {new:.3f} is far from the parent model's {parent:.3f}: its scores "
        "mean something else now; compare both with 'phonewatch eval --model NEW "
        "--compare PARENT' before deploying"
    )


def _continued(cfg: TrainConfig, size: int, prov: dict[str, Any]) -> TrainConfig:
    """``cfg`` for a run that continues ``cfg.init``: the input size is the model's (``size``)
    unless ``cfg.resize`` asks for another, and arch, width, weights, batch norm and activation
    noise are those its sidecar (``prov``) records."""
    return replace(
        cfg,
        size=cfg.resize or size,
        arch=prov.get("arch", cfg.arch),
        alpha=prov.get("alpha", cfg.alpha),
        weights=prov.get("weights", cfg.weights),
        batchnorm=bool(prov.get("batchnorm", cfg.batchnorm)),
        act_noise=float(prov.get("act_noise", cfg.act_noise)),
    )


def _teachers(cfg: TrainConfig, prov: dict[str, Any]) -> list[dict[str, Any]]:
    """The teachers of every stage so far: those recorded in ``prov`` (the model continued),
    then this run's, each with its SHA-256 and the stages that made it (from its sidecar), so
    ``--teacher TEACHERk`` in a stage command can be traced and repeated."""
    from edge.adapters.classifier import file_sha256

    out = [dict(t) for t in prov.get("teachers", []) if isinstance(t, dict)]
    stage = len(_stages(cfg, prov))
    for k, t in enumerate(cfg.teachers):
        tprov = _init_provenance(t)
        out.append(
            {
                "stage": stage,
                "name": f"TEACHER{k + 1}",
                "file": t.name,
                "sha256": file_sha256(t),
                "stages": tprov.get("stages", []),
                "input_size": tprov.get("input_size"),
            }
        )
    return out


def _stages(cfg: TrainConfig, prov: dict[str, Any]) -> list[str]:
    """The commands that made this model, earliest first: an ``--init`` run continues the
    stages recorded in ``prov``, the provenance of the ``.keras`` it starts from."""
    earlier: list[str] = []
    if cfg.init is not None:
        earlier = [str(x) for x in prov.get("stages", [])]
        if not earlier:
            earlier = [f"(an earlier run that wrote {cfg.init})"]
    n = len(earlier) + 1
    init = f"STAGE{n - 1}/{cfg.init.name}" if cfg.init is not None else None
    return [*earlier, cfg.stage_command or command_line(cfg, out=f"STAGE{n}", init=init)]


def renderer_id() -> str:
    """Short SHA-256 of the renderer's source: rendered crops depend on it as much as on the
    seed, so it keys the crop cache and goes into the training-data fingerprint."""
    import models.synth.render as render_module

    return hashlib.sha256(Path(render_module.__file__).read_bytes()).hexdigest()[:12]


def _cache_file(cache: Path, seed: int, count: str | int, rid: str) -> Path:
    """Where the first ``count`` crops of ``seed`` from renderer ``rid`` are kept (``count``
    may be ``"*"`` for a glob)."""
    return cache / f"synth_{seed}_{count}_{rid}.pkl"


def _cached_prefix(
    cache: Path, seed: int, count: int, rid: str
) -> tuple[list[np.ndarray], list[int]]:
    """The crops ``0..n-1`` (n <= ``count``, as many as there are) of ``seed`` already in
    ``cache`` from the renderer ``rid``: crop ``i`` is a pure function of (seed, i), so a set of
    another size shares its first crops and only the rest need rendering."""
    best: tuple[int, int, Path] | None = None  # (usable crops, -file size, file)
    for f in cache.glob(_cache_file(cache, seed, "*", rid).name):
        n = f.name.split("_")[2]
        if n.isdigit():
            key = (min(int(n), count), -int(n), f)
            best = key if best is None or key[:2] > best[:2] else best
    if best is None or best[0] == 0:
        return [], []
    with best[2].open("rb") as fh:
        crops_c, labels_c = pickle.load(fh)
    return list(crops_c)[:count], [int(v) for v in labels_c][:count]


def _render_synth(
    seed: int, count: int, cache: Path | None = None
) -> tuple[list[np.ndarray], np.ndarray]:
    # Keyed by the renderer too: a changed renderer must not reuse crops drawn by the old.
    rid = renderer_id()
    cache_file = None if cache is None else _cache_file(cache, seed, count, rid)
    crops: list[np.ndarray] = []
    labels: list[int] = []
    if cache is not None:
        crops, labels = _cached_prefix(cache, seed, count, rid)
        if len(crops) == count:
            return crops, np.asarray(labels, np.int64)
    for i in range(len(crops), count):
        img, meta = render_crop(seed, i, phone=(i % 2 == 0))
        crops.append(img)
        labels.append(int(meta.phone))
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        part = cache_file.with_suffix(".part")  # a run stopped mid-write leaves no bad cache
        with part.open("wb") as fh:
            pickle.dump((crops, labels), fh)
        part.replace(cache_file)
    return crops, np.array(labels, np.int64)


def _resized(model: Any, size: int) -> Any:
    """``model`` rebuilt for ``size`` x ``size`` inputs with the same layers and weights."""
    import keras

    out = keras.models.clone_model(model, input_tensors=keras.Input((size, size, 3), name="image"))
    out.set_weights(model.get_weights())
    return out


def _slide_negatives(
    items: list[tuple[np.ndarray, int, bool]], rng: np.random.Generator, share: float
) -> list[tuple[np.ndarray, int, bool]]:
    """``items`` (crop, label, strong) with about ``share`` of the phone-free crops replaced by
    a partial view of themselves; phone crops are never touched."""
    if share <= 0:
        return items
    return [
        (mdata.partial_view(c, rng), y, strong)
        if y == 0 and rng.random() < share
        else (c, y, strong)
        for c, y, strong in items
    ]


HARD_POOL = 3
"""With ``--hard-share``, the hardest crops are picked from a random pool this many times
their number."""


def _pick_synthetic(
    n_pool: int,
    n_synth: int,
    rng: np.random.Generator,
    hard_share: float = 0.0,
    loss_of: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Indices of one epoch's ``n_synth`` synthetic crops (of ``n_pool``), none twice.

    Without ``hard_share`` they are a random draw. With it, that share are the crops with the
    highest ``loss_of`` (the current model's loss on the plain crops) among a random candidate
    pool ``HARD_POOL`` times their number, disjoint from the random part: training dwells on
    what the model still gets wrong (small, glared, infrared crops) without dropping the rest.
    """
    order = rng.permutation(n_pool)
    n_hard = round(min(n_synth, n_pool) * hard_share) if loss_of is not None else 0
    uniform = order[: n_synth - n_hard]
    if n_hard <= 0 or loss_of is None:
        return uniform
    cand = order[n_synth - n_hard : n_synth - n_hard + HARD_POOL * n_hard]
    loss = np.asarray(loss_of(cand), np.float64)
    if loss.shape != cand.shape:
        raise ValueError(f"loss_of gave {loss.shape} values for {cand.size} crops")
    hard = cand[np.argsort(-loss, kind="stable")[:n_hard]]
    return np.concatenate([uniform, hard])


def _epoch_arrays(
    real: list[np.ndarray],
    real_y: np.ndarray,
    synth: list[np.ndarray],
    synth_y: np.ndarray,
    spec: InputSpec,
    rng: np.random.Generator,
    repeat: int,
    pick: np.ndarray,
    partial: float = 0.0,
    synth_target: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One epoch's augmented, shuffled tensors, labels and targets (P(phone) to learn: the
    label, or for synthetic crops ``synth_target`` when distilling)."""
    target = synth_y.astype(np.float32) if synth_target is None else synth_target
    items = [(c, int(y), True) for c, y in zip(real, real_y, strict=True)] * repeat
    items += [(synth[i], int(synth_y[i]), False) for i in pick]
    targets = [float(y) for y in real_y] * repeat + [float(target[i]) for i in pick]
    items = _slide_negatives(items, rng, partial)
    order = rng.permutation(len(items))
    crops = [mdata.augment(items[i][0], rng, strong=items[i][2]) for i in order]
    y = np.array([items[i][1] for i in order], np.int64)
    t = np.array([targets[i] for i in order], np.float32)
    return mdata.to_tensors(crops, spec), y, t


AUC_TOLERANCE = 0.01
"""With ``parity_by="metrics"``: how much lower the int8 model's validation ROC-AUC may be (or
one phone / phone-free pair's share of it, ``1 / (phones * phone-free)``, if more: on a few
dozen validation crops one pair changing order moves ROC-AUC by more than 0.01)."""
RECALL_TOLERANCE = 0.02
"""... and its recall at the target FPR (or one phone crop, if more): recall at a fixed FPR
on a few hundred crops moves by about this much when one phone-free crop changes places."""


def _metric_parity(
    y: np.ndarray, domain: np.ndarray, float_p: np.ndarray, int8_p: np.ndarray, fpr: float
) -> dict[str, dict[str, Any]]:
    """Per validation domain: float and int8 ROC-AUC and recall at ``fpr``, and what is worse
    in int8 beyond ``AUC_TOLERANCE`` / ``RECALL_TOLERANCE``."""
    out: dict[str, dict[str, Any]] = {}
    for d in sorted(set(domain.tolist())):
        m = domain == d
        yy = y[m]
        if yy.min() == yy.max():
            continue
        fa, ia = metrics.roc_auc(yy, float_p[m]), metrics.roc_auc(yy, int8_p[m])
        fr, ir = (
            metrics.recall_at_fpr(yy, float_p[m], fpr),
            metrics.recall_at_fpr(yy, int8_p[m], fpr),
        )
        worse = []
        n_pos = int(yy.sum())
        if ia < fa - max(AUC_TOLERANCE, 1.0 / (n_pos * (yy.size - n_pos))) - 1e-9:
            worse.append(f"ROC-AUC {ia:.3f} vs {fa:.3f}")
        if ir < fr - max(RECALL_TOLERANCE, 1.0 / max(1, n_pos)) - 1e-9:
            worse.append(f"recall at {fpr:.0%} FPR {ir:.3f} vs {fr:.3f}")
        out[str(d)] = {
            "n": int(m.sum()),
            "auc_float": fa,
            "auc_int8": ia,
            "recall_float": fr,
            "recall_int8": ir,
            "worse": worse,
        }
    return out


def _parity_gate(
    cfg: TrainConfig,
    par: dict[str, Any],
    agree: float,
    y: np.ndarray,
    domain: np.ndarray,
    float_p: np.ndarray,
    int8_p: np.ndarray,
) -> None:
    """Refuse an export whose int8 model does not decide like its float model."""
    if cfg.parity_by == "metrics":
        # Decision agreement counts the crops that lie within the int8 noise of the threshold:
        # many where the model is unsure (a new site), few where it is sure. What must not
        # happen is that int8 does worse: per validation domain, its ROC-AUC and its recall
        # at the target FPR must be no lower than the float model's (beyond a tolerance).
        par["metrics_by_domain"] = _metric_parity(y, domain, float_p, int8_p, cfg.target_fpr)
        worse = [f"{d}: {w}" for d, m in par["metrics_by_domain"].items() for w in m["worse"]]
        par["mode"] = "metrics"
        if worse:
            raise RuntimeError(
                "the int8 model does worse than the float model on validation: " + "; ".join(worse)
            )
    elif agree < cfg.parity_min:
        raise RuntimeError(
            f"int8 model agrees with the float model on only {agree:.2%} "
            f"of validation crops (need {cfg.parity_min:.1%})"
        )


def _scores(model: Any, x: np.ndarray, *, qat: bool) -> np.ndarray:
    """P(phone) of the Keras ``model`` on ``x``: with ``qat`` as trained, rounding on."""
    if qat:
        from models.qat import rounded_scores

        return rounded_scores(model, x)
    return np.asarray(model.predict(x, batch_size=256, verbose=0)[:, 1], np.float64)


def teacher_scores(
    teachers: Sequence[Path], crops: list[np.ndarray], chunk: int = 2000
) -> np.ndarray:
    """Mean P(phone) of ``teachers`` (TFLite models, each read with its own sidecar's input
    size and positive label) on ``crops``, scored in chunks to bound memory."""
    from edge.core.model_spec import load_spec, sidecar_path

    total = np.zeros(len(crops), np.float64)
    for t in teachers:
        spec = load_spec(sidecar_path(t))
        for i in range(0, len(crops), chunk):
            x = mdata.to_tensors(crops[i : i + chunk], spec.input)
            total[i : i + chunk] += export.tflite_scores(
                t, x, positive_index=spec.positive_indices[0]
            )
    return total / max(1, len(teachers))


def _load_init(cfg: TrainConfig, init_prov: dict[str, Any]) -> tuple[TrainConfig, Any]:
    """The model ``cfg.init`` names (None without one), and ``cfg`` as that continued run
    keeps it: its input size and (for the record) the architecture settings its sidecar
    states."""
    if cfg.init is None:
        return cfg, None
    import keras

    if cfg.init.suffix == ".tflite":
        init_model = rebuild_float(cfg.init, init_prov, qat=cfg.qat)
    else:
        import models.qat  # noqa: F401  (registers the layers a --qat run's .keras holds)

        init_model = keras.models.load_model(cfg.init)
        if cfg.qat and not any(layer.name.startswith("mnv1_aq_") for layer in init_model.layers):
            raise ValueError(
                f"{cfg.init}: --qat continues a .tflite (rebuilt with rounding layers) or a "
                ".keras trained with --qat; this .keras was trained without it"
            )
    init_size = int(init_model.input_shape[1])
    cfg = _continued(cfg, init_size, init_prov)
    if cfg.size != init_size:
        init_model = _resized(init_model, cfg.size)
    return cfg, init_model


def _split_real(
    cfg: TrainConfig,
) -> tuple[list[mdata.Sample], list[mdata.Sample], list[str]]:
    """The real training and validation samples of every ``cfg.real`` folder (validation:
    whole groups, ``cfg.val_share`` of each folder), and a warning for each folder whose
    validation part is too small to set a threshold (``validation_shortfall``)."""
    real_train: list[mdata.Sample] = []
    real_val: list[mdata.Sample] = []
    warnings: list[str] = []
    for folder in cfg.real:
        samples = mdata.list_folder(folder, domain=folder.parent.name + "/" + folder.name)
        tr, va = mdata.split_groups(samples, val_share=cfg.val_share, seed=cfg.seed)
        log.info(
            "%s: %d train, %d validation (%d groups held out)",
            folder,
            len(tr),
            len(va),
            len({s.group for s in va}),
        )
        small = _small_split(cfg, folder, len(tr), va)
        if small is not None:
            warnings.append(small)
            log.warning("%s", small)
        real_train += tr
        real_val += va
    return real_train, real_val, warnings


def _small_split(
    cfg: TrainConfig, folder: Path, n_train: int, val: list[mdata.Sample]
) -> str | None:
    """Why ``folder``'s validation part ``val`` is too small to set a threshold, with the
    folder size that would do (None if it is not; none is held out at ``--val-share 0``)."""
    n_pos = sum(s.label for s in val)
    short = validation_shortfall(n_pos, len(val) - n_pos, cfg.target_fpr)
    if short is None or cfg.val_share <= 0:
        return None
    need = math.ceil((negatives_needed(cfg.target_fpr) + MIN_VAL_POSITIVES) / cfg.val_share)
    return (
        f"{folder}: split {n_train} train, {len(val)} validation: {short} (about {need} "
        f"images in the folder at --val-share {cfg.val_share:g})"
    )


def _versioned(cfg: TrainConfig, data_fp: str, parent: dict[str, Any]) -> tuple[TrainConfig, str]:
    """``cfg`` with its version set (``default_version`` unless given), and that version."""
    if cfg.version is not None:
        return cfg, cfg.version
    version = default_version(data_fp, dt.datetime.now(dt.UTC), parent.get("version"))
    log.info("model %s %s", cfg.name, version)
    return replace(cfg, version=version), version


def _threshold_warnings(cfg: TrainConfig, y: np.ndarray, threshold: float) -> list[str]:
    """What is doubtful about the threshold just set on validation labels ``y``: too few
    crops to set it, or far from the threshold of the model the run continues."""
    out = []
    n_pos = int(y.sum())
    short = validation_shortfall(n_pos, int(y.size) - n_pos, cfg.target_fpr)
    if short is not None:
        out.append(f"threshold {threshold:.3f} is a guess: {short}")
    parent = _init_sidecar(cfg.init).get("threshold")
    drift = threshold_drift(threshold, float(parent) if parent is not None else None)
    if drift is not None:
        out.append(f"{drift} (--init {cfg.init})")
    return out


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train, export and write the sidecar into ``cfg.out``; returns the training record."""
    t_start = time.monotonic()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    require_train_extra()
    import keras
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already ran in this process: its thread pools stay
        log.info("TensorFlow is already initialised; --threads %d not applied", cfg.threads)
    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    init_prov = _init_provenance(cfg.init)
    parent = _init_sidecar(cfg.init)
    from_tflite = cfg.init is not None and cfg.init.suffix == ".tflite"
    cfg, init_model = _load_init(cfg, init_prov)
    spec = InputSpec(
        width=cfg.size,
        height=cfg.size,
        layout="NHWC",
        colour="RGB",
        mean=(127.5, 127.5, 127.5),
        std=(127.5, 127.5, 127.5),
    )

    # -- data ---------------------------------------------------------------------------------
    real_train, real_val, warnings = _split_real(cfg)
    real_tr_img = [mdata.load_image(s.path) for s in real_train]
    real_tr_y = np.array([s.label for s in real_train], np.int64)
    real_va_img = [mdata.load_image(s.path) for s in real_val]
    real_va_y = np.array([s.label for s in real_val], np.int64)
    site_tr_img = [mdata.load_image(s.path) for s in cfg.site_train]
    site_tr_y = np.array([s.label for s in cfg.site_train], np.int64)
    site_va_img = [mdata.load_image(s.path) for s in cfg.site_val]
    site_va_y = np.array([s.label for s in cfg.site_val], np.int64)
    log.info("rendering %d synthetic training crops ...", cfg.synthetic)
    syn_tr, syn_tr_y = _render_synth(cfg.seed + SYNTH_TRAIN_SEED, cfg.synthetic, cfg.cache)
    n_syn_val = max(40, cfg.synthetic // 8) if cfg.synthetic else 0
    syn_va, syn_va_y = _render_synth(cfg.seed + SYNTH_TRAIN_SEED + 1, n_syn_val, cfg.cache)
    val_x = mdata.to_tensors(real_va_img + site_va_img + syn_va, spec)
    val_y = np.concatenate([real_va_y, site_va_y, syn_va_y])
    val_domain = np.array(
        ["real"] * len(real_va_img) + ["site"] * len(site_va_img) + ["synthetic"] * len(syn_va)
    )
    # Site crops train like real ones, each ``site_repeat`` times per epoch.
    fit_img = real_tr_img * cfg.real_repeat + site_tr_img * cfg.site_repeat
    fit_y = np.concatenate(
        [np.zeros(0, np.int64), *[real_tr_y] * cfg.real_repeat, *[site_tr_y] * cfg.site_repeat]
    )
    synth_target = None
    if cfg.teachers:
        log.info("scoring the synthetic training crops with %d teacher(s) ...", len(cfg.teachers))
        soft = teacher_scores(cfg.teachers, syn_tr)
        synth_target = (cfg.distill * soft + (1 - cfg.distill) * syn_tr_y).astype(np.float32)
        log.info(
            "teachers agree with the labels on %.4f of the synthetic training crops",
            float(((soft >= 0.5) == (syn_tr_y == 1)).mean()),
        )
    data_fp = mdata.fingerprint(
        real_train + real_val + cfg.site_train + cfg.site_val,
        extra=f"synthetic:{cfg.seed + SYNTH_TRAIN_SEED}:{cfg.synthetic}:renderer:{renderer_id()}",
    )
    log.info("data ready in %.0f s; fingerprint %s", time.monotonic() - t_start, data_fp[:16])
    cfg, version = _versioned(cfg, data_fp, parent)

    # -- model --------------------------------------------------------------------------------
    if init_model is not None:
        model = init_model
        log.info("continuing from %s (%d px input)", cfg.init, cfg.size)
    else:
        model = build_model(
            cfg.arch,
            cfg.size,
            cfg.alpha,
            cfg.weights,
            batchnorm=cfg.batchnorm,
            act_noise=cfg.act_noise,
            qat=cfg.qat,
        )
    # New batch-norm layers (a fresh backbone, or one rebuilt from a .tflite, whose batch norm
    # the converter folded away) start as the identity: training starts from the weights read.
    if cfg.batchnorm and (cfg.init is None or from_tflite):
        from models.pretrained import identity_batchnorm

        pick = rng.permutation(len(syn_tr))[:128]
        sample = mdata.to_tensors(
            [syn_tr[i] for i in pick] + real_tr_img[::8] + site_tr_img[::8], spec
        )
        n_bn = identity_batchnorm(model, sample)
        log.info("%d batch-norm layers start as the identity (%d sample crops)", n_bn, len(sample))
    n_synth_epoch = min(len(syn_tr), cfg.epoch_synthetic)
    n_per_epoch = len(fit_img) + n_synth_epoch
    steps = max(1, cfg.epochs * (n_per_epoch // cfg.batch))
    schedule = keras.optimizers.schedules.CosineDecay(cfg.lr, steps, alpha=0.05)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.05),
        metrics=["accuracy"],
        # Keras's "auto" compiles the step with XLA. On this CPU (AMD EPYC, 2 cores) that
        # took 35-75 s longer to start and 3.4x as long a step (3.6 s vs 1.06 s, batch 32,
        # 160 px MobileNet-V1, interleaved runs): plain TensorFlow graphs are faster here.
        jit_compile=False,
    )

    def synth_loss(idx: np.ndarray) -> np.ndarray:
        p = model.predict(
            mdata.to_tensors([syn_tr[i] for i in idx], spec), batch_size=256, verbose=0
        )
        loss: np.ndarray = -np.log(np.clip(p[np.arange(idx.size), syn_tr_y[idx]], 1e-7, 1.0))
        return loss

    history = []
    for epoch in range(cfg.epochs):
        t0 = time.monotonic()
        pick = _pick_synthetic(
            len(syn_tr), n_synth_epoch, rng, cfg.hard_share, synth_loss if cfg.hard_share else None
        )
        x, y, target = _epoch_arrays(
            fit_img, fit_y, syn_tr, syn_tr_y, spec, rng, 1, pick, cfg.partial_view, synth_target
        )
        # Class balance: weight each class by the inverse of its share this epoch.
        share = np.bincount(y, minlength=2) / y.size
        weights = (0.5 / np.maximum(share, 1e-6))[y]
        t_aug = time.monotonic() - t0
        h = model.fit(
            x,
            np.stack([1 - target, target], axis=1),
            sample_weight=weights,
            batch_size=cfg.batch,
            epochs=1,
            verbose=cfg.verbose,
        )
        p = _scores(model, val_x, qat=cfg.qat)
        auc = metrics.roc_auc(val_y, p)
        real_dom = "site" if (val_domain == "site").any() else "real"
        real_auc = (
            metrics.roc_auc(val_y[val_domain == real_dom], p[val_domain == real_dom])
            if (val_domain == real_dom).any()
            else float("nan")
        )
        rec = {
            "epoch": epoch + 1,
            "loss": float(h.history["loss"][-1]),
            "val_auc": auc,
            "val_real_auc": real_auc,
            "val_recall_at_5pct_fpr": metrics.recall_at_fpr(val_y, p, 0.05),
        }
        history.append(rec)
        print(
            f"epoch {epoch + 1:2d}/{cfg.epochs}  loss {rec['loss']:.4f}  val AUC {auc:.4f} "
            f"({real_dom} {real_auc:.4f})  recall@5%FPR {rec['val_recall_at_5pct_fpr']:.3f}  "
            f"[{t_aug:.0f} s data, {time.monotonic() - t0:.0f} s total]",
            flush=True,
        )

    # -- export -------------------------------------------------------------------------------
    cfg.out.mkdir(parents=True, exist_ok=True)
    stem = cfg.name.replace("-", "_")
    model.save(cfg.out / f"{stem}.keras")
    # Representative data for the activation ranges: plain training crops of both domains
    # (augmented ones widen the ranges with extremes and cost int8 resolution).
    rep_idx = rng.permutation(len(syn_tr))[:300]
    rep_real = real_tr_img[:: max(1, len(real_tr_img) // 100)]
    # Site crops too: the site's activation ranges (dark tinted glass, glare) must be covered,
    # or the int8 model reads them with ranges set on other domains (``models.site``).
    rep_site = site_tr_img[:: max(1, len(site_tr_img) // 300)]
    rep_crops = [syn_tr[i] for i in rep_idx] + rep_real + rep_site
    rep = mdata.to_tensors(rep_crops, spec)
    tfl = export.export_int8(model, rep, cfg.out / f"{stem}.tflite")
    problems = export.check_full_int8(tfl)
    if problems:
        raise RuntimeError("export is not full-integer: " + "; ".join(problems))
    # The reference the int8 file must match: the float network, or with --qat the network as
    # it was trained (rounding on). A --qat network is trained for its rounded weights; its
    # unrounded float scores are a model nobody trained (docs/model.md).
    float_p = _scores(model, val_x, qat=cfg.qat)
    int8_p = export.tflite_scores(tfl, val_x)
    # With site validation crops the operating point is the site's: threshold set on them only.
    thr_m = val_domain == "site" if cfg.site_val else np.ones(val_y.size, bool)
    threshold = metrics.threshold_for_fpr(val_y[thr_m], int8_p[thr_m], cfg.target_fpr)
    warnings += _threshold_warnings(cfg, val_y[thr_m], threshold)
    # Parity: the int8 model must make the float model's decisions. Both are compared at the
    # same operating point (each model's threshold for the target FPR on validation), which is
    # how the shipped threshold is set; raw agreement at fixed thresholds is reported too.
    float_thr = metrics.threshold_for_fpr(val_y[thr_m], float_p[thr_m], cfg.target_fpr)
    par = export.parity(float_p, int8_p, [0.5, threshold])
    agree = float(((float_p >= float_thr) == (int8_p >= threshold)).mean())
    par["matched_operating_point"] = {
        "target_fpr": cfg.target_fpr,
        "float_threshold": float_thr,
        "int8_threshold": threshold,
        "agreement": agree,
    }
    print(
        f"int8/float agreement {agree:.4f} at matched {cfg.target_fpr:.0%}-FPR operating points "
        f"on {val_y.size} validation crops (raw: {par['agreement']}, mean |dp| "
        f"{par['mean_abs_diff']:.4f})",
        flush=True,
    )
    decided = (float_p >= float_thr) == (int8_p >= threshold)
    par["by_domain"] = {
        str(d): float(decided[val_domain == d].mean()) for d in sorted(set(val_domain.tolist()))
    }
    par["required"] = cfg.parity_min
    par["reference"] = "float network, rounding as trained (--qat)" if cfg.qat else "float network"
    _parity_gate(cfg, par, agree, val_y, val_domain, float_p, int8_p)

    val_metrics: dict[str, Any] = {"target_fpr": cfg.target_fpr}
    for dom in ("real", "site", "synthetic"):
        m = val_domain == dom
        if m.any() and 0 < val_y[m].sum() < m.sum():
            val_metrics[dom] = metrics.summary(val_y[m], int8_p[m], threshold)
    val_metrics["all"] = metrics.summary(val_y, int8_p, threshold)
    import keras as _k

    total_epochs = cfg.epochs + int(init_prov.get("total_epochs", init_prov.get("epochs", 0)))
    provenance = {
        "trained_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "training_data_sha256": data_fp,
        "real_data": [str(p) for p in cfg.real],
        "real_train_images": len(real_train),
        "real_validation_images": len(real_val),
        "synthetic_train": {
            "seed": cfg.seed + SYNTH_TRAIN_SEED,
            "count": cfg.synthetic,
            "per_epoch": n_synth_epoch,
        },
        "synthetic_validation": {"seed": cfg.seed + SYNTH_TRAIN_SEED + 1, "count": n_syn_val},
        "arch": cfg.arch,
        "input_size": cfg.size,
        "alpha": cfg.alpha,
        "weights": cfg.weights,
        "batchnorm": cfg.batchnorm,
        "act_noise": cfg.act_noise,
        "qat": cfg.qat,
        "partial_view": cfg.partial_view,
        "hard_share": cfg.hard_share,
        "epochs": cfg.epochs,
        "teachers": _teachers(cfg, init_prov),
        "distill": cfg.distill if cfg.teachers else float(init_prov.get("distill", 0.0)),
        "batch": cfg.batch,
        "lr": cfg.lr,
        "seed": cfg.seed,
        "real_repeat": cfg.real_repeat,
        "tensorflow": tf.__version__,
        "keras": _k.__version__,
        "continued_from": str(cfg.init) if cfg.init else None,
        "stages": _stages(cfg, init_prov),
        "total_epochs": total_epochs,
        "train_seconds": round(time.monotonic() - t_start, 1),
        # an export-only run (--epochs 0) keeps the curve of the training that made its weights
        "history": history if cfg.epochs else init_prov.get("history", []),
    }
    if cfg.site_train or cfg.site_record:
        provenance["site"] = {
            **cfg.site_record,
            "train_crops": len(cfg.site_train),
            "validation_crops": len(cfg.site_val),
            "repeat": cfg.site_repeat,
        }
    spec_out = export.write_sidecar(
        tfl,
        spec_in=spec,
        labels=mdata.LABELS,
        positive=["phone"],
        threshold=threshold,
        name=cfg.name,
        version=version,
        description=(
            f"P(driver holds a phone) from a driver-window crop; threshold set for "
            f"{cfg.target_fpr:.0%} false-positive rate on validation"
        ),
        provenance=provenance,
        metrics={"validation": val_metrics, "int8_float_parity": par},
    )
    print(
        f"wrote {tfl} ({tfl.stat().st_size} bytes) and its sidecar; threshold "
        f"{spec_out.threshold:.4f}",
        flush=True,
    )
    for w in warnings:  # again, after the training output: none is buried under it
        log.warning("check: %s", w)
    return {
        "model": str(tfl),
        "name": cfg.name,
        "version": version,
        "threshold": threshold,
        "parity": par,
        "validation": val_metrics,
        "warnings": warnings,
    }


def _input_problem(a: argparse.Namespace) -> str | None:
    """What is wrong with the model (``--init``), data (``--real``) and shares a run is
    given."""
    if not 0.0 <= a.val_share < 1.0:
        return f"--val-share {a.val_share:g}: give the share of each folder held out, 0 to <1"
    if not 0.0 <= a.target_fpr < 1.0:
        return f"--target-fpr {a.target_fpr:g}: give a false-positive rate, 0 to <1 (0.05: 5 %)"
    if a.init is not None:
        if not a.init.is_file() or a.init.suffix not in (".keras", ".tflite"):
            return f"--init {a.init} needs to be a .keras or .tflite file from a run"
        if a.init.suffix == ".tflite" and not a.init.with_suffix(".json").is_file():
            return (
                f"--init {a.init}: a .tflite is continued from with its sidecar .json "
                "beside it (it says how the model was trained)"
            )
    if not a.real and a.synthetic < 20:
        return "no data: give --real folders and/or --synthetic N"
    for r in a.real:
        if r.name == "test" or "test" in r.parts[-1:]:
            return f"{r} looks like a test split: test data is for evaluation only"
    return None


def out_problem(out: Path, *, force: bool) -> str | None:
    """Why a run must not write into ``out`` (None if it may): a file, or a folder with
    something in it, unless ``force`` (``models.site train`` never overwrites either)."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file, not a folder"
    if out.is_dir() and any(out.iterdir()) and not force:
        return (
            f"--out {out} is not empty: a run would overwrite the model there; give a new "
            "folder, or add --force to overwrite it"
        )
    return None


def name_problem(init: Path | None, name: str, version: str | None) -> str | None:
    """Why ``--name``/``--version`` must not be used (None if they may): they are those of
    the model the run continues, and the two could not be told apart."""
    parent = _init_sidecar(init)
    if version is not None and (parent.get("name"), parent.get("version")) == (name, version):
        return (
            f"--name {name} --version {version} are those of the model --init continues "
            f"({init}): give the new model a version of its own (or leave --version out)"
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m models.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument(
        "--real",
        type=Path,
        action="append",
        default=[],
        help="real image folder (phone/, no_phone/); repeatable",
    )
    ap.add_argument("--synthetic", type=int, default=6000, help="synthetic training crops")
    ap.add_argument(
        "--epoch-synthetic",
        type=int,
        default=1800,
        help="synthetic crops used in each epoch (drawn from --synthetic)",
    )
    ap.add_argument(
        "--size",
        type=int,
        help="input width = height (px; default 96, or with --init the model's: "
        "a different size continues the same weights at that size)",
    )
    ap.add_argument("--alpha", type=float, default=0.35, help="MobileNetV2 width multiplier")
    ap.add_argument("--arch", choices=["mobilenetv2", "mobilenetv1", "tiny"], default="mobilenetv2")
    ap.add_argument(
        "--weights",
        default="none",
        help="none, imagenet (MobileNetV2; Keras downloads it, needs the internet) "
        "or, with --arch mobilenetv1, a quantised MobileNet-V1 ImageNet .tflite "
        "whose weights initialise the backbone",
    )
    ap.add_argument(
        "--batchnorm",
        action="store_true",
        help="mobilenetv1: add batch norm after each convolution (trains faster at "
        "a larger --lr; folded into the convolutions at export)",
    )
    ap.add_argument(
        "--act-noise",
        type=float,
        default=0.0,
        help="mobilenetv1: std of training-only noise after each ReLU6, standing in "
        "for int8 rounding (0.0068 = one uint8 step of 0..6); helps int8/float parity",
    )
    ap.add_argument(
        "--qat",
        action="store_true",
        help="mobilenetv1: quantisation-aware training: round each kernel and activation in "
        "training as the int8 export will (models/qat.py); helps int8/float parity",
    )
    ap.add_argument(
        "--partial-view",
        type=float,
        default=0.0,
        help="share of phone-free training crops shown slid part-way out of view, "
        "as a fixed ROI sees a car rolling in or out (0..1)",
    )
    ap.add_argument(
        "--hard-share",
        type=float,
        default=0.0,
        help="share of each epoch's synthetic crops picked as those the model "
        f"currently gets most wrong (of a random pool {HARD_POOL} times as large; "
        "0..0.5)",
    )
    ap.add_argument(
        "--teacher",
        type=Path,
        action="append",
        default=[],
        help="an earlier .tflite model (with its sidecar) to learn from: the "
        "teachers' mean P(phone) goes into each synthetic crop's target; repeatable",
    )
    ap.add_argument(
        "--distill",
        type=float,
        default=0.5,
        help="with --teacher: the teachers' share of a synthetic crop's target "
        "(0..1; the label has the rest)",
    )
    ap.add_argument(
        "--epochs",
        type=int,
        default=22,
        help="0 with --init: no training, export again (e.g. for another "
        "--target-fpr, on the same validation set when --synthetic and --real "
        "are the same)",
    )
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-share", type=float, default=0.2)
    ap.add_argument(
        "--real-repeat", type=int, default=2, help="augmented copies of each real image per epoch"
    )
    ap.add_argument(
        "--target-fpr",
        type=float,
        default=0.05,
        help="false-positive rate the threshold is chosen for (on validation)",
    )
    ap.add_argument(
        "--name",
        default="phone-in-hand",
        help="model name in the sidecar, alerts and eval tables; also the file stem "
        "(phone-in-hand: phone_in_hand.tflite)",
    )
    ap.add_argument(
        "--version",
        help="model version in the sidecar (default: <UTC date>-<first 8 hex of the "
        "training-data fingerprint>, new for every run on other data or another day)",
    )
    ap.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty --out (its files of the same names are overwritten)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, help="keep rendered synthetic crops here between runs")
    ap.add_argument(
        "--init",
        type=Path,
        help="continue training a model from a run: its .keras, or its int8 .tflite "
        "(MobileNet-V1, with its sidecar; the float network is rebuilt from it)",
    )
    ap.add_argument(
        "--parity-min",
        type=float,
        default=export.PARITY_MIN,
        help="least int8/float decision agreement on validation (default 0.99); "
        "a lower value is recorded in the sidecar",
    )
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    size = a.size if a.size is not None else 96
    if (
        a.synthetic < 0
        or a.epochs < 0
        or not 32 <= size <= 512
        or not 0 <= a.partial_view <= 1
        or not 0 <= a.hard_share <= 0.5
        or not 0 <= a.distill <= 1
    ):
        ap.error(
            "need --synthetic >= 0, --epochs >= 0, 32 <= --size <= 512, "
            "0 <= --partial-view <= 1, 0 <= --hard-share <= 0.5 and 0 <= --distill <= 1"
        )
    for t in a.teacher:
        if not t.is_file() or not t.with_suffix(".json").is_file():
            ap.error(f"teacher {t} needs to be a .tflite file with its sidecar .json beside it")
    if a.epochs == 0 and a.init is None:
        ap.error("--epochs 0 (export only) needs --init")
    problem = (
        _input_problem(a)
        or out_problem(a.out, force=a.force)
        or name_problem(a.init, a.name, a.version)
    )
    if problem:
        ap.error(problem)
    cfg = TrainConfig(
        out=a.out,
        real=a.real,
        synthetic=a.synthetic,
        size=size,
        alpha=a.alpha,
        arch=a.arch,
        weights=a.weights,
        epochs=a.epochs,
        batch=a.batch,
        lr=a.lr,
        seed=a.seed,
        val_share=a.val_share,
        real_repeat=a.real_repeat,
        target_fpr=a.target_fpr,
        name=a.name,
        version=a.version,
        threads=a.threads,
        epoch_synthetic=a.epoch_synthetic,
        cache=a.cache,
        init=a.init,
        parity_min=a.parity_min,
        batchnorm=a.batchnorm,
        act_noise=a.act_noise,
        qat=a.qat,
        resize=a.size if a.init else None,
        partial_view=a.partial_view,
        hard_share=a.hard_share,
        teachers=a.teacher,
        distill=a.distill,
    )
    try:
        record = train(cfg)
    except TrainExtraMissing as e:
        print(f"models.train: {e}", file=sys.stderr)
        return 2
    print(json.dumps({k: record[k] for k in ("model", "threshold", "name", "version")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
