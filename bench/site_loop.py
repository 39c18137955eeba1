"""The site-learning loop's real hops, for ``bench/flywheel.py`` (and its end-to-end test).

A rendered site (``models.synth.site``) becomes the traffic that real units watch:

* **watch**: each site unit is a real ``phonewatch`` unit (``edge.app.compose.Unit`` through
  ``run_unit``, offline, so lossless) reading its own folder of frames, one driver's window a
  frame (the rendered crop; its ROI is the whole frame, turned by the unit's
  ``rotate_deg`` when the site is installed upright), frames ``FRAME_S`` apart in video time
  so a session's drivers spread over the unit's days. ``[sampling]`` picks crops, random ones
  and ones scored near the threshold, with per-day budgets, and publishes them through a real
  Mosquitto to a real control room (SQLite), which queues them for labelling;
* **review**: the reviewers, simulated: every queued crop is labelled from the renderer's truth
  for the frame it came from (found by unit and frame time) with ``controlroom.labelling``;
* **dataset**: ``controlroom.datasets`` snapshots every label as a content-hashed version,
  split by unit-day into train and held-out, and exports it (``index.csv``), as
  ``controlroom dataset create`` / ``export`` do;
* **roll out**: a promoted candidate is packaged and signed with the control room's
  model-signing key, offered to every unit in shadow over MQTT (hashed chunks), then live;
  each unit runs paced on its next frames meanwhile (``phonewatch run`` in its own process),
  verifies the package against its pinned key, scores it in shadow, swaps it in and keeps it
  through probation; the next watch starts each unit on the model it kept.

Training and the gate are ``models.site`` (``flywheel.py`` calls them between the hops).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repository on sys.path)
import cv2
import numpy as np

from edge.core.roi import Roi
from models import site_data as sd

FRAME_S = 3600.0
"""Video time between two frames: 24 drivers a unit-day, so budgets per day mean something."""
START = datetime(2026, 10, 1, tzinfo=UTC).timestamp()
"""Video time of each unit's first frame."""
REVIEWER = "reviewer-sim"
DAY_S = 86400.0


@dataclass(frozen=True)
class Sampling:
    """The units' ``[sampling]`` table (edge/app/config.py ``SamplingConfig``)."""

    random_per_day: int = 6
    uncertain_per_day: int = 6
    band: float = 0.2

    def table(self) -> dict[str, Any]:
        return {
            "enabled": True,
            "random_per_day": self.random_per_day,
            "uncertain_per_day": self.uncertain_per_day,
            "band": self.band,
            "min_interval_s": 0.0,
        }


@dataclass
class SiteUnit:
    id: str
    rotate_deg: float
    home: Path
    next_t: float = START
    frames: dict[int, sd.SiteRow] = field(default_factory=dict)
    """Wall time of each frame it watched (ms) -> the site crop shown."""

    @property
    def data_dir(self) -> Path:
        return self.home / "data"


def frame_image(row: sd.SiteRow) -> np.ndarray:
    """The frame a unit sees for ``row``: the crop as rendered (a camera framing just the
    window; sizes differ, as the renderer's do, and the ROI is the whole frame). Scaling
    it to one size first would change its aspect, and the roll the ROI turns back."""
    img = cv2.imread(str(row.path), cv2.IMREAD_COLOR)
    if img is None:
        raise RuntimeError(f"cannot read {row.path}")
    return img


def unit_crops(rows: Sequence[sd.SiteRow], rotate: Mapping[str, float]) -> Iterator[np.ndarray]:
    """What each unit's classifier scores for these rows, in order: the frame through its ROI
    (the whole frame, turned by the unit's ``rotate_deg`` in ``rotate``, else 0)."""
    rois: dict[str, Roi] = {}
    for r in rows:
        if r.unit not in rois:
            deg = rotate.get(r.unit, 0.0)
            rois[r.unit] = Roi.rect("window", 0.0, 0.0, 1.0, 1.0, margin=0.0, rotate_deg=deg)
        yield np.ascontiguousarray(rois[r.unit].crop(frame_image(r)))


def score_crops(model: Path, crops: Iterable[np.ndarray]) -> np.ndarray:
    from edge.adapters.classifier import LiteRTClassifier

    with LiteRTClassifier.open(model) as clf:
        return np.array([clf.score(c) for c in crops])


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str | Path):
        return json.dumps(str(v))
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML for {type(v).__name__}")


def _toml_table(lines: list[str], name: str, t: Mapping[str, Any], header: str) -> None:
    lines.append(header)
    nested = [(k, v) for k, v in t.items() if isinstance(v, Mapping)]
    lines += [f"{k} = {_toml_value(v)}" for k, v in t.items() if not isinstance(v, Mapping)]
    for k, v in nested:
        _toml_table(lines, f"{name}.{k}", v, f"[{name}.{k}]")
    lines.append("")


def to_toml(doc: Mapping[str, Any]) -> str:
    """A config as TOML: tables of scalars, lists of scalars and arrays of tables only."""
    lines: list[str] = []
    for name, t in doc.items():
        for item in t if isinstance(t, list) else [t]:
            _toml_table(lines, name, item, f"[[{name}]]" if isinstance(t, list) else f"[{name}]")
    return "\n".join(lines)


class SiteLoop:
    """The site's units, the broker and the control room, for as long as the ``with`` lasts."""

    def __init__(
        self,
        work: Path,
        units: Mapping[str, float],
        *,
        model: Path,
        sampling: Sampling | None = None,
        probation_s: float = 3.0,
    ) -> None:
        """``units``: unit id -> its ROI's ``rotate_deg``; ``model``: what they start on."""
        self.work = work
        self.model = model
        self.sampling = sampling or Sampling()
        self.probation_s = probation_s
        self.units = {u: SiteUnit(u, deg, work / "units" / u) for u, deg in units.items()}
        self._stack = contextlib.ExitStack()
        self.broker: Any = None
        self.room: Any = None
        self.model_key: Path = work / "keys" / "controlroom-model.sign.key"
        self.model_pub: Path = work / "keys" / "controlroom-model.sign.pub"

    def __enter__(self) -> SiteLoop:
        from controlroom.demo import demo_control_room
        from edge.app.local_broker import LocalBroker
        from edge.common.signing import public_key_name, write_key_pair

        try:
            self.broker = self._stack.enter_context(LocalBroker())
            keys = self.work / "keys"
            if not self.model_key.is_file():
                write_key_pair("controlroom-model", keys)
            for u in self.units:
                if not (keys / public_key_name(u)).is_file():
                    write_key_pair(u, keys)
            self.room = demo_control_room(
                self.work / "controlroom",
                mqtt_host=self.broker.host,
                mqtt_port=self.broker.port,
                unit_keys={u: keys / public_key_name(u) for u in self.units},
            )
            self._stack.callback(self.room.close)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    # -- configs -------------------------------------------------------------------------------
    def config(
        self, unit: SiteUnit, frames: Path, *, live_fps: float | None = None
    ) -> dict[str, Any]:
        """The unit's config: its folder of frames (offline on video time, or paced at
        ``live_fps``, looping), the whole frame as its ROI, sampling, the pinned model key."""
        from edge.common.signing import signing_key_name

        camera: dict[str, Any] = {"type": "folder", "path": str(frames), "fps": 1.0 / FRAME_S}
        if live_fps is not None:
            camera = {"type": "folder", "path": str(frames), "fps": live_fps, "loop": True}
        return {
            "unit": {"id": unit.id, "mode": "junction", "data_dir": str(unit.data_dir)},
            "camera": camera,
            "rois": [
                {
                    "id": "window",
                    "rect": [0.0, 0.0, 1.0, 1.0],
                    "margin": 0.0,
                    "rotate_deg": unit.rotate_deg,
                }
            ],
            "model": {"path": str(self.model), "accelerator": "cpu"},
            "sink": {
                **self.broker.sink_settings(unit.id),
                "signing_key": str(self.work / "keys" / signing_key_name(unit.id)),
                "receipt_timeout_s": 5.0,
                "heartbeat_interval_s": 1.0,
            },
            # a live run here only carries a rollout: its samples would be unlabelled noise
            "sampling": self.sampling.table() if live_fps is None else {"enabled": False},
            "models": {
                "trusted_keys": [str(self.model_pub)],
                "probation_s": self.probation_s,
                "probation_frames": 10,
            },
            "stats": {"log_interval_s": 600},
        }

    def _write_frames(
        self, unit: SiteUnit, rows: Sequence[sd.SiteRow], folder: Path, *, record: bool = True
    ) -> None:
        """The frames of ``rows`` in ``folder``, the first one's mtime the unit's next frame
        time (a folder's video time starts there); ``record``: remember which crop each frame
        time showed, and move the unit's clock on (each watch starts on a new UTC day, so the
        sampler's budget for it is whole)."""
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        start = math.ceil(unit.next_t / DAY_S) * DAY_S if record else unit.next_t
        for i, r in enumerate(rows):
            cv2.imwrite(str(folder / f"{i:06d}.png"), frame_image(r))
            if record:
                unit.frames[round((start + i * FRAME_S) * 1000)] = r
        first = folder / f"{0:06d}.png"
        os.utime(first, (start, start))
        if record:
            unit.next_t = start + len(rows) * FRAME_S

    # -- watch ---------------------------------------------------------------------------------
    def watch(self, name: str, rows: Sequence[sd.SiteRow]) -> dict[str, int]:
        """Each unit watches its share of ``rows`` (in time order) offline; returns the frames
        each watched. Its samples reach the control room's labelling queue."""
        from edge.app.cli_unit import run_unit
        from edge.app.config import parse_config

        by_unit: dict[str, list[sd.SiteRow]] = {u: [] for u in self.units}
        for r in sorted(rows, key=lambda r: (r.day, r.time, r.rel)):
            by_unit[r.unit].append(r)
        watched: dict[str, int] = {}
        for uid, unit_rows in by_unit.items():
            if not unit_rows:
                continue
            unit = self.units[uid]
            folder = unit.home / name / "frames"
            self._write_frames(unit, unit_rows, folder)
            cfg = parse_config(self.config(unit, folder), source=f"site unit {uid}")
            result = run_unit(cfg, offline=True)
            if result.get("exit_code", 0) != 0:
                raise RuntimeError(f"unit {uid} failed: {result.get('error')}")
            watched[uid] = len(unit_rows)
        return watched

    def queued(self) -> int:
        from controlroom import labelling

        with self.room.engine.begin() as conn:
            return len(labelling.queued(conn))

    def wait_for_crops(
        self, *, at_least: int = 0, settle_s: float = 3.0, timeout_s: float = 60.0
    ) -> int:
        """Wait until the queue holds ``at_least`` crops and has stopped growing for
        ``settle_s`` (the receiver has stored what was sent); returns its length."""
        deadline = time.monotonic() + timeout_s
        n, since = self.queued(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            m = self.queued()
            if m != n:
                n, since = m, time.monotonic()
            elif n >= at_least and time.monotonic() - since >= settle_s:
                break
        return n

    # -- review --------------------------------------------------------------------------------
    def truth_of(self, unit: str, t: float) -> sd.SiteRow | None:
        u = self.units.get(unit)
        if u is None:
            return None
        ms = round(t * 1000)
        for k in (ms, ms - 1, ms + 1):  # names carry integer milliseconds
            if k in u.frames:
                return u.frames[k]
        return None

    def review(self) -> Counter[str]:
        """Label every queued crop from the truth of the frame it came from; a crop no frame
        explains is skipped (counted)."""
        from controlroom import labelling

        out: Counter[str] = Counter()
        with self.room.engine.begin() as conn:
            crops = labelling.queued(conn)
            groups: dict[str, list[Any]] = {"phone": [], "no_phone": [], "skip": []}
            for c in crops:
                row = self.truth_of(c.unit, c.t)
                label = "skip" if row is None else "phone" if row.label else "no_phone"
                groups[label].append(c)
                out[f"{label}:{c.kind}"] += 1
            for label, group in groups.items():
                if group:
                    labelling.label_crops(conn, group, label, user=REVIEWER)
        return out

    # -- dataset -------------------------------------------------------------------------------
    def dataset(self, dest: Path) -> tuple[str, dict[str, Any]]:
        """A new dataset version of every label, exported to ``dest``: (id, manifest)."""
        from controlroom import datasets

        created = datasets.create_dataset(self.room.engine, user=REVIEWER)
        manifest = datasets.export_dataset(self.room.engine, created.id, dest, user=REVIEWER)
        return created.id, manifest

    # -- roll out ------------------------------------------------------------------------------
    def package(self, model: Path, out: Path) -> bytes:
        from edge.common import model_package as mp
        from edge.common.signing import load_private_key

        card = model.parent / "CARD.md"
        blob = mp.build_package(
            model,
            model.with_suffix(".json"),
            card if card.is_file() else None,
            load_private_key(self.model_key),
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(blob)
        return blob

    def heartbeat(self, unit: str) -> dict[str, Any]:
        import sqlalchemy as sa

        from controlroom import db

        with self.room.engine.begin() as conn:
            hb = conn.execute(
                sa.select(db.units.c.heartbeat).where(db.units.c.unit_id == unit)
            ).scalar()
        return json.loads(hb) if hb else {}

    def rollout_state(self, unit: str, sha: str) -> str | None:
        import sqlalchemy as sa

        from controlroom import db

        with self.room.engine.begin() as conn:
            state = conn.execute(
                sa.select(db.rollouts.c.state).where(
                    (db.rollouts.c.unit == unit) & (db.rollouts.c.package_sha256 == sha)
                )
            ).scalar()
        return None if state is None else str(state)

    @contextlib.contextmanager
    def running(
        self, name: str, rows: Mapping[str, Sequence[sd.SiteRow]], fps: float
    ) -> Iterator[None]:
        """Every unit running live (its own process, paced at ``fps``, looping) on its
        ``rows``; stopped (SIGINT, as Ctrl-C) at the end."""
        exe = Path(sys.executable).parent / "phonewatch"
        procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        started = time.time()
        try:
            for uid, unit in self.units.items():
                folder = unit.home / name / "frames"
                self._write_frames(unit, rows[uid], folder, record=False)
                cfg = unit.home / name / "unit.toml"
                cfg.write_text(to_toml(self.config(unit, folder, live_fps=fps)), encoding="utf-8")
                log = (unit.home / name / "unit.log").open("wb")
                procs.append(
                    (
                        uid,
                        subprocess.Popen(
                            [str(exe), "run", "--config", str(cfg)], stdout=log, stderr=log
                        ),
                    )
                )
                log.close()
            deadline = time.monotonic() + 60
            for uid, p in procs:  # a heartbeat: connected, subscribed, the model receiver on
                while not self.heartbeat_since(uid, started):
                    if p.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"unit {uid} did not come up (see its unit.log)")
                    time.sleep(0.2)
            yield
        finally:
            for _, p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            for uid, p in procs:
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                    raise RuntimeError(f"unit {uid} did not stop") from None

    def heartbeat_since(self, unit: str, wall: float) -> bool:
        import sqlalchemy as sa

        from controlroom import db

        with self.room.engine.begin() as conn:
            at = conn.execute(
                sa.select(db.units.c.heartbeat_received_at).where(db.units.c.unit_id == unit)
            ).scalar()
        return at is not None and at >= wall

    def roll_out(
        self,
        model: Path,
        rows: Mapping[str, Sequence[sd.SiteRow]],
        *,
        name: str,
        fps: float = 8.0,
        shadow_frames: int = 40,
        timeout_s: float = 180.0,
    ) -> dict[str, dict[str, Any]]:
        """Package ``model``, offer it to every unit in shadow, let it score
        ``shadow_frames`` frames there, then offer it live and wait until each unit has kept
        it through probation; each unit runs ``rows[unit]`` meanwhile. Returns per unit the
        shadow's figures; raises if a unit refuses, rolls back or times out."""
        blob = self.package(model, self.work / "packages" / f"{name}.pwpkg")
        version = json.loads(model.with_suffix(".json").read_text(encoding="utf-8"))["version"]
        with self.running(name, rows, fps):
            shas = self._offer_all(blob, "shadow")
            self._wait_states(shas, {"shadow_started"}, timeout_s)
            out = {uid: self._shadow_after(uid, shadow_frames, timeout_s) for uid in self.units}
            self._offer_all(blob, "live")
            for uid in self.units:
                self._wait_live(uid, shas[uid], version, timeout_s)
        return out

    def _offer_all(self, blob: bytes, mode: str) -> dict[str, str]:
        from controlroom import rollout

        shas = {}
        for uid in self.units:
            offer, sent = rollout.offer_package(
                self.room.engine, self.room.receiver, unit=uid, blob=blob, mode=mode, user="bench"
            )
            if not sent.ok:
                raise RuntimeError(f"{mode} offer to {uid} not sent: {sent.detail}")
            shas[uid] = offer.sha256
        return shas

    def _shadow_after(self, uid: str, frames: int, timeout_s: float) -> dict[str, Any]:
        """The shadow's figures in ``uid``'s heartbeat once it has scored ``frames``."""
        deadline = time.monotonic() + timeout_s
        while True:
            shadow = (self.heartbeat(uid).get("model") or {}).get("shadow") or {}
            if (shadow.get("frames") or 0) >= frames:
                return {
                    "agreement": shadow.get("agreement"),
                    "shadow_frames": shadow.get("frames"),
                    "would_alert": shadow.get("would_alert"),
                    "version": shadow.get("version"),
                }
            if time.monotonic() > deadline:
                raise RuntimeError(f"unit {uid}: the shadow scored {shadow.get('frames')} frames")
            time.sleep(0.3)

    def _wait_live(self, uid: str, sha: str, version: str, timeout_s: float) -> None:
        """Until ``uid``'s heartbeat says live (probation over) on ``version``."""
        deadline = time.monotonic() + timeout_s
        while True:
            m = self.heartbeat(uid).get("model") or {}
            if m.get("state") == "live" and (m.get("live") or {}).get("version") == version:
                return
            state = self.rollout_state(uid, sha)
            if state in {"rolled_back", "load_failed", "refused"}:
                raise RuntimeError(f"unit {uid}: {state}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"unit {uid} still {m.get('state')} ({state}), not on {version}")
            time.sleep(0.3)

    def _wait_states(self, shas: Mapping[str, str], want: set[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        bad = {"refused", "rolled_back", "load_failed", "unsent"}
        for uid, sha in shas.items():
            while (state := self.rollout_state(uid, sha)) not in want:
                if state in bad:
                    raise RuntimeError(f"unit {uid}: rollout {state}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"unit {uid}: rollout still {state}, waiting for {want}")
                time.sleep(0.2)
