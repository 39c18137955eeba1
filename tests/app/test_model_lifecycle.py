"""The on-unit model lifecycle with real TFLite models and a real pipeline on video files:
shadow, hot swap, probation and rollback, state across restarts, the heartbeat's ``model``."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from edge.adapters.camera import ReplaySource
from edge.adapters.classifier import LiteRTClassifier
from edge.adapters.evidence import EvidenceStore
from edge.adapters.sinks import MemorySink
from edge.app.model_lifecycle import (
    RESTART_IN_PROBATION,
    LifecycleState,
    ModelManager,
    ModelRef,
    ProbationRules,
    read_state,
    status_doc,
    write_state,
)
from edge.app.pipeline import Pipeline
from edge.core import messages as m
from edge.core.decider import DeciderParams
from edge.core.errors import MessageError
from edge.core.frame import Frame
from edge.core.ports import Classifier, FrameSource
from edge.core.roi import Roi
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
INT8 = DATA / "brightness_int8.tflite"
FLOAT = DATA / "brightness_float.tflite"
PHONE = REPO / "models" / "phone_in_hand" / "phone_in_hand.tflite"
LEFT = (0.05, 0.1, 0.45, 0.9)
RIGHT = (0.55, 0.1, 0.95, 0.9)

Event = tuple[str, str, str, "str | None"]


@dataclass(frozen=True)
class Pkg:
    """What the delivery side hands over (``InstalledPackage``'s attributes)."""

    dir: Path
    tflite: Path
    sidecar: Path
    name: str
    version: str
    sha256: str


def make_pkg(
    tmp_path: Path, model: Path, *, name: str, version: str, threshold: float | None = None
) -> Pkg:
    """An installed package: the model file and its sidecar, renamed, with a new threshold."""
    d = tmp_path / "models" / f"{name}-{version}"
    d.mkdir(parents=True)
    tflite = d / "model.tflite"
    shutil.copyfile(model, tflite)
    side = json.loads(model.with_suffix(".json").read_text(encoding="utf-8"))
    side.update(name=name, version=version, file=tflite.name)
    if threshold is not None:
        side["threshold"] = threshold
    sidecar = d / "model.json"
    sidecar.write_text(json.dumps(side), encoding="utf-8")
    sha = hashlib.sha256(f"package {name} {version}".encode()).hexdigest()
    return Pkg(d, tflite, sidecar, name, version, sha)


def params(threshold: float) -> DeciderParams:
    return DeciderParams(
        window=5, min_frames=3, score_on=threshold, score_off=0.6 * threshold, cooldown_s=0.0
    )


def open_model(tflite: Path, sidecar: Path | None) -> Classifier:
    return LiteRTClassifier.open(tflite, sidecar=sidecar, threads=1)


def manager(
    tmp_path: Path,
    events: list[Event],
    *,
    open_package: Callable[[Path, Path | None], Classifier] = open_model,
    open_shadow: Callable[[Path, Path | None], Classifier] | None = None,
    rules: ProbationRules | None = None,
    clock: Callable[[], float] | None = None,
    on_swap: Callable[[Classifier, DeciderParams], None] | None = None,
) -> ModelManager:
    return ModelManager(
        models_dir=tmp_path / "models",
        open_config=lambda: LiteRTClassifier.open(INT8, threads=1),
        open_package=open_package,
        open_shadow=open_shadow,
        decider_params=params,
        report=lambda *e: events.append(e),
        rules=rules,
        clock=clock or time.monotonic,
        on_swap=on_swap,
    )


def pipeline(
    tmp_path: Path,
    source: FrameSource,
    mgr: ModelManager,
    *,
    sink: MemorySink | None = None,
    on_frame: Callable[[Frame, dict[str, float], Mapping[str, Roi]], None] | None = None,
) -> Pipeline:
    clf = mgr.open_live()
    p = Pipeline(
        source=source,
        classifier=clf,
        evidence=EvidenceStore(tmp_path / "ev", quota_bytes=10**9),
        rois=[Roi.rect("left", *LEFT, margin=0.0), Roi.rect("right", *RIGHT, margin=0.0)],
        decider=params(clf.threshold),
        sink=sink or MemorySink(),
        unit_id="t1",
        lossless=True,
        on_frame=on_frame,
        shadow=mgr.on_scored,
    )
    mgr.attach(p)
    return p


class GatedSource:
    """A real replay source that holds frame ``gate_at`` back until :meth:`release`."""

    def __init__(self, inner: ReplaySource, gate_at: int) -> None:
        self.inner, self.gate_at = inner, gate_at
        self.name = inner.name
        self._open = threading.Event()

    def release(self) -> None:
        self._open.set()

    def open(self) -> None:
        self.inner.open()

    def read(self) -> Frame | None:
        frame = self.inner.read()
        if frame is not None and frame.index >= self.gate_at:
            self._open.wait(20)
        return frame

    def close(self) -> None:
        self._open.set()
        self.inner.close()

    @property
    def fps(self) -> float | None:
        return self.inner.fps

    @property
    def is_live(self) -> bool:
        return False


class Wrapped:
    """A real classifier with a hook on ``score_batch`` (slow, or failing)."""

    def __init__(self, inner: Classifier, before: Callable[[], None]) -> None:
        self.inner, self.before = inner, before
        self.name, self.version, self.sha256 = inner.name, inner.version, inner.sha256
        self.threshold, self.accelerator = inner.threshold, inner.accelerator
        self.closed = False

    def preprocess(self, crop_bgr: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        return self.inner.preprocess(crop_bgr, mask)

    def score_batch(self, tensors: Sequence[np.ndarray]) -> list[float]:
        self.before()
        return self.inner.score_batch(tensors)

    def score(self, crop_bgr: np.ndarray, mask: np.ndarray | None = None) -> float:
        return self.score_batch([self.preprocess(crop_bgr, mask)])[0]

    def close(self) -> None:
        self.closed = True
        self.inner.close()


def _wait(ev: threading.Event) -> None:
    ev.wait(20)


def _set_at(ev: threading.Event, now: bool) -> None:
    if now:
        ev.set()


def names(events: list[Event]) -> list[str]:
    return [e[0] for e in events]


# -- shadow -----------------------------------------------------------------------------------
def test_a_slow_shadow_never_holds_the_live_pipeline_back(
    tmp_path: Path, make_video: Callable[..., Path]
) -> None:
    n = 40
    released = threading.Event()
    shadows: list[Wrapped] = []

    def slow_shadow(tflite: Path, sidecar: Path | None) -> Classifier:
        # Scores nothing until the live pipeline has scored every frame.
        w = Wrapped(open_model(tflite, sidecar), lambda: _wait(released))
        shadows.append(w)
        return w

    def on_frame(frame: Frame, scores: dict[str, float], regions: Mapping[str, Roi]) -> None:
        if frame.index == n - 1:
            released.set()

    events: list[Event] = []
    mgr = manager(tmp_path, events, open_shadow=slow_shadow)
    video = make_video([20] * 10 + [240] * 20 + [20] * 10, box=LEFT)
    p = pipeline(tmp_path, ReplaySource(video, speed=0.0), mgr, on_frame=on_frame)
    assert mgr.on_package(make_pkg(tmp_path, FLOAT, name="cand", version="2"), "shadow")
    p.start()
    assert p.wait(30)
    shadow = mgr.shadow
    assert shadow is not None
    assert p.stats.processed == p.stats.captured == n  # every frame, none waited for the shadow
    assert p.stats.hits == 1
    assert wait_until(lambda: shadow.frames + shadow.skipped == n)
    assert shadow.skipped >= n - 3  # it sat on its first frame while the others went by
    assert shadow.live_alerts == 1
    assert mgr.state == "shadow"
    assert names(events) == ["shadow_started"]
    mgr.stop_shadow()
    assert shadows[0].closed
    assert names(events) == ["shadow_started", "shadow_stopped"]
    assert mgr.heartbeat() is not None
    mgr.close()


def test_shadow_counts_agreement_and_would_be_alerts_on_a_known_clip(
    tmp_path: Path, make_video: Callable[..., Path]
) -> None:
    # Left window: dark, then mid-grey (P ~ 0.8: live at 0.5 says phone, the candidate at 0.9
    # says not), then bright (both say phone), then dark. The right window stays dark.
    levels = [20] * 5 + [140] * 6 + [240] * 6 + [20] * 5
    events: list[Event] = []
    mgr = manager(tmp_path, events)

    def keep_step(frame: Frame, scores: dict[str, float], regions: Mapping[str, Roi]) -> None:
        # The test waits for the shadow on every frame, so it scores them all.
        shadow = mgr.shadow
        assert shadow is not None
        wait_until(lambda: shadow.frames + shadow.errors == frame.index + 1, timeout_s=10)

    sink = MemorySink()
    video = make_video(levels, box=LEFT)
    p = pipeline(tmp_path, ReplaySource(video, speed=0.0), mgr, sink=sink, on_frame=keep_step)
    pkg = make_pkg(tmp_path, FLOAT, name="cand", version="2", threshold=0.9)
    assert mgr.start_shadow(pkg)
    p.start()
    assert p.wait(30)
    shadow = mgr.shadow
    assert shadow is not None
    s = shadow.stats()
    assert (s["frames"], s["skipped"], s["errors"]) == (len(levels), 0, 0)
    assert s["threshold"] == 0.9
    assert s["agreement"] == round((2 * len(levels) - 6) / (2 * len(levels)), 4)
    assert s["would_alert"] == 1
    assert s["live_alerts"] == len(sink.detections) == 1
    assert sink.detections[0].frame_index < 11  # live alerted in the grey part
    (recent,) = s["recent"]
    assert recent["roi"] == "left"
    assert recent["score"] >= 0.9
    hb = mgr.heartbeat()
    assert hb is not None
    assert hb["state"] == "shadow"
    assert hb["shadow"]["sha256"] == pkg.sha256
    assert m.schema_errors(_heartbeat(hb), m.HEARTBEAT_SCHEMA) == []
    mgr.close()


def test_a_newer_shadow_replaces_the_older_one(tmp_path: Path) -> None:
    events: list[Event] = []
    mgr = manager(tmp_path, events)
    pipeline(tmp_path, ReplaySource(tmp_path / "unused.avi"), mgr)
    a = make_pkg(tmp_path, FLOAT, name="cand", version="2")
    b = make_pkg(tmp_path, FLOAT, name="cand", version="3")
    assert mgr.on_package(a, "shadow")
    assert mgr.on_package(b, "shadow")
    assert mgr.shadow is not None
    assert mgr.shadow.ref.version == "3"
    assert [(e[0], e[2]) for e in events] == [
        ("shadow_started", "2"),
        ("shadow_stopped", "2"),
        ("shadow_started", "3"),
    ]
    assert "replaced by 3" in str(events[1][3])
    mgr.close()


# -- swap -------------------------------------------------------------------------------------
def test_promote_swaps_between_frames_and_the_threshold_follows(
    tmp_path: Path, make_video: Callable[..., Path]
) -> None:
    n, gate = 40, 20
    seen: list[tuple[int, str]] = []
    reached = threading.Event()
    events: list[Event] = []
    mgr = manager(tmp_path, events)

    def on_frame(frame: Frame, scores: dict[str, float], regions: Mapping[str, Roi]) -> None:
        seen.append((frame.index, p.classifier.name))  # under the swap lock: the scorer
        if frame.index == gate - 5:
            reached.set()

    # Dark until well after the swap, then the left window bright: only the new model alerts.
    video = make_video([20] * 25 + [240] * 15, box=LEFT)
    source = GatedSource(ReplaySource(video, speed=0.0), gate_at=gate)
    sink = MemorySink()
    p = pipeline(tmp_path, source, mgr, sink=sink, on_frame=on_frame)
    assert p.params.score_on == 0.5
    p.start()
    assert reached.wait(20)
    pkg = make_pkg(tmp_path, FLOAT, name="brightness-v2", version="2", threshold=0.8)
    try:
        assert mgr.on_package(pkg, "live")
    finally:
        source.release()
    assert p.wait(30)
    assert sorted(i for i, _ in seen) == [i for i, _ in seen] == list(range(n))  # once each
    models = [name for _, name in seen]
    k = models.index("brightness-v2")
    assert gate - 5 < k <= gate
    assert models == ["brightness-int8"] * k + ["brightness-v2"] * (n - k)
    assert p.stats.stage_errors == p.snapshot()["dropped_frames"] == 0
    assert p.params.score_on == 0.8
    (det,) = sink.detections
    assert (det.model_name, det.model_version, det.threshold) == ("brightness-v2", "2", 0.8)
    assert det.model_sha256 == hashlib.sha256(FLOAT.read_bytes()).hexdigest()
    assert names(events) == ["promoted"]
    st = read_state(mgr.state_path)
    assert st is not None
    assert (st.state, st.live.sha256, st.previous and st.previous.dir) == (
        "probation",
        pkg.sha256,
        "config",
    )
    hb = mgr.heartbeat()
    assert hb is not None
    assert (hb["state"], hb["previous"], hb["live"]["version"]) == ("probation", "test-1", "2")
    mgr.close()


def test_tensors_prepared_for_the_old_model_are_prepared_again_for_the_new(
    tmp_path: Path,
) -> None:
    events: list[Event] = []
    mgr = manager(tmp_path, events)
    scored: list[str] = []
    p = pipeline(
        tmp_path,
        ReplaySource(tmp_path / "unused.avi"),
        mgr,
        on_frame=lambda f, s, r: scored.append(p.classifier.name),
    )
    old = p.classifier
    frame = Frame(0, 1.0, 1.7e9, np.full((120, 160, 3), 128, np.uint8))
    tensors = [old.preprocess(r.crop(frame.image), r.mask(frame.image)) for r in p.rois]
    phone = make_pkg(tmp_path, PHONE, name="phone-in-hand", version="7")
    assert mgr.on_package(phone, "live")
    assert p.classifier is not old
    p._process_current(frame, tensors, 0.0, old)  # 32x32 tensors; the phone model takes 160x160
    assert scored == ["phone-in-hand"]
    assert p.stats.processed == 1
    assert set(p.last_scores) == {"left", "right"}
    assert p.params.score_on == pytest.approx(p.classifier.threshold)
    assert p.params.score_on != 0.5
    mgr.close()


def test_a_candidate_that_fails_to_load_leaves_the_live_model(tmp_path: Path) -> None:
    events: list[Event] = []
    mgr = manager(tmp_path, events)
    p = pipeline(tmp_path, ReplaySource(tmp_path / "unused.avi"), mgr)
    live = p.classifier
    bad = make_pkg(tmp_path, FLOAT, name="broken", version="9")
    bad.tflite.write_bytes(b"not a model")
    assert not mgr.on_package(bad, "shadow")
    assert not mgr.on_package(bad, "live")
    assert not mgr.on_package(bad, "sideways")
    assert p.classifier is live
    assert mgr.shadow is None
    assert mgr.state == "live"
    assert names(events) == ["load_failed"] * 3
    assert "shadow not started" in str(events[0][3])
    assert "still on test-1" in str(events[1][3])
    assert "unknown mode" in str(events[2][3])
    assert not mgr.state_path.exists()  # nothing changed, nothing written
    mgr.close()


# -- probation and rollback -------------------------------------------------------------------
def test_invoke_failing_in_probation_rolls_back_to_the_previous_model(
    tmp_path: Path, make_video: Callable[..., Path]
) -> None:
    n, gate = 30, 10
    reached = threading.Event()
    failing: list[Wrapped] = []

    def fail() -> None:
        raise RuntimeError("invoke failed")

    def open_failing(tflite: Path, sidecar: Path | None) -> Classifier:
        w = Wrapped(open_model(tflite, sidecar), fail)
        failing.append(w)
        return w

    events: list[Event] = []
    mgr = manager(tmp_path, events, open_package=open_failing)
    video = make_video([20] * n)
    source = GatedSource(ReplaySource(video, speed=0.0), gate_at=gate)
    p = pipeline(
        tmp_path,
        source,
        mgr,
        on_frame=lambda f, s, r: _set_at(reached, f.index == gate - 1),
    )
    live = p.classifier
    p.start()
    assert reached.wait(20)
    try:
        assert mgr.on_package(make_pkg(tmp_path, FLOAT, name="bad", version="2"), "live")
    finally:
        source.release()
    assert p.wait(30)
    assert p.stats.stage_errors == n - gate  # every frame after the swap failed
    mgr.check()
    assert p.classifier is live
    assert failing[0].closed
    assert names(events) == ["promoted", "rolled_back"]
    assert events[1][2] == "2"
    assert f"{n - gate} frames failed" in str(events[1][3])
    st = read_state(mgr.state_path)
    assert st is not None
    assert (st.live.dir, st.state, st.previous) == ("config", "live", None)
    assert mgr.heartbeat() == {
        "live": {**ModelRef.of_config(live).brief(), "model_sha256": live.sha256},
        "previous": None,
        "state": "live",
        "shadow": None,
    }
    mgr.close()


def test_a_falling_frame_rate_in_probation_rolls_back(tmp_path: Path) -> None:
    events: list[Event] = []
    rules = ProbationRules(duration_s=60, frames=10, rate_window_s=10)
    now = [0.0]
    mgr = manager(tmp_path, events, rules=rules, clock=lambda: now[0])
    p = pipeline(tmp_path, ReplaySource(tmp_path / "unused.avi"), mgr)
    p._set_status("running")  # the figures below stand in for a running camera
    for t in range(11):  # 10 fps before the swap
        now[0], p.stats.processed = float(t), 10 * t
        mgr.check()
    assert mgr.on_package(make_pkg(tmp_path, FLOAT, name="slow", version="2"), "live")
    for dt in range(1, 10):  # 3 fps after it: not judged before a whole window has passed
        now[0], p.stats.processed = 10.0 + dt, 100 + 3 * dt
        mgr.check()
    assert names(events) == ["promoted"]
    now[0], p.stats.processed = 20.0, 130
    mgr.check()
    assert names(events) == ["promoted", "rolled_back"]
    assert "frame rate fell from 10.0 to 3.0 fps" in str(events[1][3])
    mgr.close()


def test_rollback_command_reopens_the_previous_model_after_probation(tmp_path: Path) -> None:
    events: list[Event] = []
    swaps: list[tuple[str, float]] = []
    mgr = manager(
        tmp_path,
        events,
        rules=ProbationRules(duration_s=0, frames=0),
        on_swap=lambda clf, dp: swaps.append((clf.version, dp.score_on)),
    )
    p = pipeline(tmp_path, ReplaySource(tmp_path / "unused.avi"), mgr)
    pkg = make_pkg(tmp_path, FLOAT, name="cand", version="2", threshold=0.7)
    assert mgr.on_package(pkg, "live")
    assert mgr.state == "probation"
    mgr.check()  # probation passed: the previous model is closed
    assert mgr.state == "live"
    assert mgr._previous_clf is None
    assert p.params.score_on == 0.7
    assert mgr.rollback("asked by the control room")
    assert p.classifier.name == "brightness-int8"
    assert p.params.score_on == 0.5
    assert names(events) == ["promoted", "rolled_back"]
    assert swaps == [("2", 0.7), ("test-1", 0.5)]  # the sampler follows each swap
    assert not mgr.rollback()  # nothing further back
    mgr.close()


# -- state across restarts --------------------------------------------------------------------
def test_state_file_round_trip_and_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "models" / "state.json"
    assert read_state(path) is None
    cfg = ModelRef("config", "brightness-int8", "test-1", "a" * 64)
    pkg = ModelRef("/m/p", "cand", "2", "b" * 64, "/m/p/model.tflite", "/m/p/model.json")
    st = LifecycleState(live=pkg, previous=cfg, state="probation")
    write_state(path, st)
    assert read_state(path) == st
    assert [f.name for f in path.parent.iterdir()] == ["state.json"]  # no temp file left
    for text, says in [
        ("{not json", "state.json"),
        ('{"live": {"dir": "config"}, "previous": null, "state": "live"}', "lacks"),
        (json.dumps({"live": {**_d(pkg), "tflite": None}, "state": "live"}), "no tflite"),
        (json.dumps({"live": {**_d(pkg), "version": 2}, "state": "live"}), "version must be"),
        (json.dumps({"live": _d(pkg), "previous": None, "state": "shadow"}), "live or prob"),
        (json.dumps({"live": _d(pkg), "previous": None, "state": "probation"}), "no previous"),
    ]:
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=says):
            read_state(path)


def test_restart_in_probation_starts_on_the_previous_model(tmp_path: Path) -> None:
    events: list[Event] = []
    first = manager(tmp_path, events)
    pipeline(tmp_path, ReplaySource(tmp_path / "unused.avi"), first)
    pkg = make_pkg(tmp_path, FLOAT, name="cand", version="2")
    assert first.on_package(pkg, "live")
    first.close()  # a power cut: the state file still says probation
    events.clear()
    second = manager(tmp_path, events)
    clf = second.open_live()
    assert clf.name == "brightness-int8"
    assert events == [("rolled_back", pkg.sha256, "2", f"{RESTART_IN_PROBATION}; back on test-1")]
    st = read_state(second.state_path)
    assert st is not None
    assert (st.live.dir, st.state, st.previous) == ("config", "live", None)
    second.close()


def test_a_restart_after_probation_starts_on_the_promoted_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[Event] = []
    first = manager(tmp_path, events, rules=ProbationRules(duration_s=0, frames=0))
    pipeline(tmp_path, ReplaySource(tmp_path / "unused.avi"), first)
    pkg = make_pkg(tmp_path, FLOAT, name="cand", version="2")
    assert first.on_package(pkg, "live")
    first.check()
    first.close()
    second = manager(tmp_path, events)
    clf = second.open_live()
    assert (clf.name, second.heartbeat()["previous"]) == ("cand", "test-1")  # type: ignore[index]
    second.close()
    # The package is gone: the config's model, said plainly.
    shutil.rmtree(pkg.dir)
    events.clear()
    third = manager(tmp_path, events)
    with caplog.at_level(logging.WARNING, "edge.app.model_lifecycle"):
        clf = third.open_live()
    assert clf.name == "brightness-int8"
    assert "starting on the config's model" in caplog.text
    assert names(events) == ["load_failed"]
    third.close()
    # An unreadable state file: the config's model too.
    third.state_path.write_text("garbage", encoding="utf-8")
    caplog.clear()
    fourth = manager(tmp_path, events)
    with caplog.at_level(logging.WARNING, "edge.app.model_lifecycle"):
        assert fourth.open_live().name == "brightness-int8"
    assert "model state unreadable" in caplog.text
    fourth.close()


# -- messages ---------------------------------------------------------------------------------
def _heartbeat(model: dict[str, Any] | None) -> dict[str, Any]:
    return m.build_heartbeat(
        "unit-a",
        t_wall_s=1.7e9,
        uptime_s=5.0,
        pipeline={"fps": 25.0},
        outbox_depth=0,
        evidence_pruned=0,
        alerts_pruned=0,
        gps_state=None,
        cpu_temp_c=None,
        model=model,
    )


def _d(ref: ModelRef) -> dict[str, Any]:
    return {
        "dir": ref.dir,
        "name": ref.name,
        "version": ref.version,
        "sha256": ref.sha256,
        "tflite": ref.tflite,
        "sidecar": ref.sidecar,
    }


def test_heartbeat_validates_with_and_without_the_model(tmp_path: Path) -> None:
    schema = m.load_schema(m.HEARTBEAT_SCHEMA)
    events: list[Event] = []
    mgr = manager(tmp_path, events)
    pipeline(tmp_path, ReplaySource(tmp_path / "unused.avi"), mgr)
    live_only = mgr.heartbeat()
    assert mgr.start_shadow(make_pkg(tmp_path, FLOAT, name="cand", version="2"))
    with_shadow = mgr.heartbeat()
    mgr.close()
    for model in (None, live_only, with_shadow):
        hb = _heartbeat(model)
        assert ("model" in hb) == (model is not None)
        assert m.schema_errors(hb, m.HEARTBEAT_SCHEMA) == []
        jsonschema.validate(hb, schema)
    assert with_shadow is not None
    assert with_shadow["shadow"]["agreement"] is None  # nothing compared yet
    bad = _heartbeat({**with_shadow, "state": "testing"})
    assert m.schema_errors(bad, m.HEARTBEAT_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_model_commands_are_checked_against_the_schema() -> None:
    topics = m.Topics("phonewatch", "unit-a")
    sha = "c" * 64
    name, body = m.parse_command(
        topics.cmd_prefix + "model_promote",
        json.dumps({"package_sha256": sha}).encode(),
        topics=topics,
    )
    assert (name, body) == ("model_promote", {"package_sha256": sha})
    assert m.parse_command(topics.cmd_prefix + "model_rollback", b"", topics=topics) == (
        "model_rollback",
        {},
    )
    assert m.parse_command(topics.cmd_prefix + "model_shadow_stop", b"{}", topics=topics)[0] == (
        "model_shadow_stop"
    )
    with pytest.raises(MessageError, match="model_promote"):
        m.parse_command(
            topics.cmd_prefix + "model_promote", b'{"package_sha256": "short"}', topics=topics
        )


def test_status_doc_says_what_happened() -> None:
    doc = status_doc("unit-a", "rolled_back", "d" * 64, "2", "x" * 2000)
    assert doc["schema"] == "phonewatch.model_status"
    assert (doc["v"], doc["unit"], doc["event"], doc["version"]) == (
        1,
        "unit-a",
        "rolled_back",
        "2",
    )
    assert len(doc["detail"]) == 1000
    assert "detail" not in status_doc("unit-a", "promoted", "d" * 64, "2", None)


# -- the composed unit ------------------------------------------------------------------------
def _unit_cfg(tmp_path: Path, video: Path) -> Any:
    from edge.app.config import parse_config

    return parse_config(
        {
            "unit": {"id": "lc-test", "data_dir": str(tmp_path / "unit")},
            "camera": {"type": "replay", "path": str(video), "loop": False, "speed": 0.0},
            "rois": [{"id": "a", "rect": list(LEFT)}],
            "model": {"path": str(INT8), "accelerator": "cpu"},
        }
    )


class StatusUplink:
    """Stands in for the uplink's ``publish_model_status`` (the delivery half adds it)."""

    def __init__(self) -> None:
        self.docs: list[dict[str, Any]] = []

    def publish_model_status(self, doc: dict[str, Any]) -> bool:
        self.docs.append(doc)
        return True


@pytest.mark.slow
def test_the_unit_starts_on_the_state_and_delegates_packages(
    tmp_path: Path, make_video: Callable[..., Path]
) -> None:
    from edge.app.compose import Unit

    video = make_video([20] * 10 + [240] * 10, box=LEFT)
    cfg = _unit_cfg(tmp_path, video)
    models_dir = tmp_path / "unit" / "models"
    pkg = make_pkg(tmp_path / "unit", FLOAT, name="cand", version="2", threshold=0.8)
    config_ref = ModelRef.of_config(LiteRTClassifier.open(INT8))
    # A power cut during probation of the package: the unit starts on the config's model.
    write_state(
        models_dir / "state.json",
        LifecycleState(live=ModelRef.of_package(pkg), previous=config_ref, state="probation"),
    )
    with Unit(cfg, lossless=True) as unit:
        assert unit.pipeline is not None
        assert unit.models is not None
        assert unit.pipeline.classifier.name == "brightness-int8"
        uplink = StatusUplink()
        unit.uplink = uplink  # type: ignore[assignment]
        hb = unit._heartbeat_model()  # sends what was kept while the uplink was not there
        assert [d["event"] for d in uplink.docs] == ["rolled_back"]
        assert uplink.docs[0]["package_sha256"] == pkg.sha256
        assert uplink.docs[0]["unit"] == "lc-test"
        assert hb is not None
        assert (hb["live"]["version"], hb["state"]) == ("test-1", "live")
        assert unit.on_model_package(pkg, "shadow")
        unit._on_command("model_promote", {"package_sha256": pkg.sha256})
        assert unit.pipeline.classifier.name == "cand"
        assert unit.pipeline.params.score_on == 0.8
        unit._on_command("model_rollback", {"reason": "test"})
        assert unit.pipeline.classifier.name == "brightness-int8"
        assert [d["event"] for d in uplink.docs] == [
            "rolled_back",
            "shadow_started",
            "shadow_stopped",
            "promoted",
            "rolled_back",
        ]
        for d in uplink.docs:
            assert set(d) <= {"schema", "v", "unit", "time", "package_sha256", "version"} | {
                "event",
                "detail",
            }
        snap = unit.run(max_s=20)
    assert snap["frames_processed"] == 20
    st = read_state(models_dir / "state.json")
    assert st is not None
    assert (st.live.dir, st.state) == ("config", "live")


@pytest.mark.slow
def test_promote_through_mosquitto_retunes_the_sampler_and_shows_in_the_heartbeat(
    tmp_path: Path, make_video: Callable[..., Path]
) -> None:
    from edge.app.compose import Unit
    from edge.app.config import load_config
    from edge.app.local_broker import LocalBroker, find_mosquitto
    from tests.uplink.conftest import UNIT_A, connect_client
    from tests.uplink.test_unit_commands import write_config

    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed ('make bootstrap' installs it)")
    with LocalBroker() as broker:
        video = make_video([40] * 20, fps=20.0)
        cfg_path = write_config(tmp_path / "unit.toml", broker, video)
        stop = threading.Event()
        with Unit(load_config(cfg_path), config_path=cfg_path) as unit:
            runner = threading.Thread(target=lambda: unit.run(stop=stop, max_s=60), daemon=True)
            runner.start()
            try:
                p, sampler, emitter = unit.pipeline, unit.sampler, unit.emitter
                assert p is not None
                assert sampler is not None
                assert emitter is not None
                assert (sampler.threshold, sampler.model_version) == (0.5, "test-1")
                pkg = make_pkg(tmp_path, FLOAT, name="cand", version="2", threshold=0.8)
                assert unit.on_model_package(pkg, "shadow")
                cr = connect_client(broker, "controlroom-commander")
                cr.loop_start()
                body = json.dumps({"package_sha256": pkg.sha256}).encode()
                cr.publish(f"phonewatch/{UNIT_A}/cmd/model_promote", body, qos=1).wait_for_publish(
                    5
                )
                assert wait_until(lambda: p.classifier.name == "cand", 20)
                # the swap is seen first; the promote then ends the shadow and reports
                assert wait_until(lambda: emitter.build()["model"]["shadow"] is None, 10)
                band = unit.cfg.sampling.band
                assert (sampler.threshold, sampler.model_version) == (0.8, "2")
                assert sampler.band == (0.8 - band, 0.8 + band)
                hb = emitter.build()
                assert m.schema_errors(hb, m.HEARTBEAT_SCHEMA) == []
                assert (hb["model"]["state"], hb["model"]["previous"]) == ("probation", "test-1")
                assert hb["model"]["live"]["sha256"] == pkg.sha256
                assert hb["model"]["shadow"] is None  # the promoted shadow has ended
                assert runner.is_alive()
                cr.loop_stop()
                cr.disconnect()
            finally:
                stop.set()
                runner.join(15)
