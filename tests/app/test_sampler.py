"""The background sampler and the ``calibrate`` window: budgets by UTC day (persisted), the
uncertainty band, uniform random sampling, never waiting on the inference thread, the
calibration window by the clock; then the composed unit through a real Mosquitto."""

from __future__ import annotations

import functools
import itertools
import json
import math
import random
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.app.config import Config, SamplingConfig, parse_config
from edge.app.sampler import DAY_S, CalibrationJob, Sampler, day_text, utc_day
from edge.core import messages as m
from edge.core.clock import ManualClock
from edge.core.errors import ConfigError, MessageError
from edge.core.frame import Frame
from edge.core.roi import Roi
from tests.waiting import wait_until

ROIS = (Roi.rect("lane1", 0.1, 0.1, 0.4, 0.9), Roi.rect("lane_2", 0.5, 0.2, 0.9, 0.8))
THRESHOLD = 0.5
DAY0 = 19_700  # a UTC day (2023-12-09), so a test can start at a known time of day


class RecordingUplink:
    """Records what would be published. ``online`` False is a broker that is away; ``gate``
    holds the worker inside ``publish_collect`` until it is set."""

    def __init__(self, *, online: bool = True, gate: threading.Event | None = None) -> None:
        self.online = online
        self.gate = gate
        self.names: list[str] = []
        self.jpegs: list[bytes] = []
        self.entered = threading.Event()
        self.waited_for_broker = 0

    @property
    def is_connected(self) -> bool:
        return self.online

    def wait_connected(self, timeout_s: float) -> bool:
        self.waited_for_broker += 1
        return wait_until(lambda: self.online, timeout_s)

    def publish_collect(self, name: str, jpeg: bytes) -> bool:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        self.names.append(name)
        self.jpegs.append(jpeg)
        return True

    def publish_snapshot(self, jpeg: bytes, *, request_id: str | None = None) -> bool:
        return self.online

    def parsed(self) -> list[m.SampleName]:
        out = [m.parse_sample_name(n) for n in self.names]
        assert all(p is not None for p in out), self.names
        return [p for p in out if p is not None]


def clock_at(day: int = DAY0, second_of_day: float = 0.0) -> ManualClock:
    """A ManualClock whose wall time is ``second_of_day`` into UTC ``day``."""
    return ManualClock(1000.0, wall_offset_s=day * DAY_S + second_of_day - 1000.0)


def make(
    tmp_path: Path,
    clock: ManualClock,
    uplink: RecordingUplink | None = None,
    *,
    seed: int = 7,
    hold: Callable[[], bool] | None = None,
    windows: bool = False,
    rois: tuple[Roi, ...] = ROIS,
    **cfg: Any,
) -> tuple[Sampler, RecordingUplink]:
    up = uplink or RecordingUplink()
    settings: dict[str, Any] = {
        "enabled": True,
        "random_per_day": 0,
        "uncertain_per_day": 0,
        "band": 0.1,
        "min_interval_s": 0.0,
        **cfg,
    }
    s = Sampler(
        uplink=up,
        rois=rois,
        windows=windows,
        cfg=SamplingConfig(**settings),
        threshold=THRESHOLD,
        model_version="1.2.0-rc1",
        state_path=tmp_path / "sampler.json",
        clock=clock,
        rng=random.Random(seed),
        jpeg_quality=80,
        hold=hold,
    )
    return s, up


@pytest.fixture
def samplers() -> Iterator[list[Sampler]]:
    made: list[Sampler] = []
    yield made
    for s in made:
        s.close()


_IMAGE = np.full((120, 160, 3), 90, np.uint8)


def frame_at(clock: ManualClock, i: int) -> Frame:
    return Frame(index=i, t_mono_s=clock.monotonic(), t_wall_s=clock.wall(), image=_IMAGE)


def feed(
    s: Sampler, clock: ManualClock, scores: Iterable[Mapping[str, float]], *, step_s: float = 1.0
) -> None:
    """One frame per score map, ``step_s`` apart, letting the worker finish each sample (so
    none is skipped as busy)."""
    for i, sc in enumerate(scores):
        s.on_frame(frame_at(clock, i), sc)
        assert wait_until(lambda: s.is_settled, 5), s.stats()
        clock.advance(step_s)


def both(score: float) -> dict[str, float]:
    return {"lane1": score, "lane_2": score}


# -- names ------------------------------------------------------------------------------------
def test_sample_names_carry_their_provenance_and_parse_back() -> None:
    name = m.sample_name("uncertain", "lane_2", 1_764_126_187.1234, 0.73456, "1.2.0-rc1")
    assert name == "unc-1764126187123-7346-1_2_0_rc1-lane_2"
    assert m.parse_sample_name(name) == m.SampleName(
        reason="uncertain",
        t_wall_ms=1_764_126_187_123,
        score=0.7346,
        model="1_2_0_rc1",
        roi="lane_2",
    )
    cal = m.sample_name("calibration", "a-b", 1.5, 1.0, "v", run_ms=1234)
    assert cal == "cal1234-1500-10000-v-a-b"
    parsed = m.parse_sample_name(cal)
    assert parsed is not None
    assert (parsed.reason, parsed.run_ms, parsed.roi, parsed.score) == (
        "calibration",
        1234,
        "a-b",
        1.0,
    )
    assert m.sample_name("random", "r", 2.0, -0.5, "") == "rnd-2000-0-_-r"
    assert m.parse_sample_name(m.collect_name("lane1", 1.7e9)) is None  # a collect crop
    assert m.parse_sample_name("unc-1-99999-v-r") is None  # score over 1
    topic = m.Topics("phonewatch", "u1").collect(cal)
    assert topic == "phonewatch/u1/collect/" + cal


@pytest.mark.parametrize(
    ("reason", "kwargs"),
    [
        ("maybe", {}),
        ("calibration", {}),
        ("random", {"score": math.nan}),
        ("random", {"roi": "x" * 120}),
    ],
)
def test_sample_name_refuses(reason: str, kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"roi": "lane1", "score": 0.5, **kwargs}
    with pytest.raises(MessageError):
        m.sample_name(reason, args["roi"], 1.0, args["score"], "1")


# -- budget -----------------------------------------------------------------------------------
def test_uncertain_budget_per_day_is_respected_and_survives_a_restart(
    tmp_path: Path, samplers: list[Sampler]
) -> None:
    clock = clock_at(second_of_day=3600)
    s, up = make(tmp_path, clock, uncertain_per_day=3)
    samplers.append(s)
    feed(s, clock, [both(0.5)] * 10)
    assert len(up.names) == 3
    st = s.stats()
    assert st["sample_uncertain_today"] == 3
    assert st["sample_uncertain_left"] == 0
    saved = json.loads((tmp_path / "sampler.json").read_text())
    assert saved == {"day": day_text(DAY0), "random": 0, "uncertain": 3}
    s.close()

    # a restart the same day: the budget is spent
    again, up2 = make(tmp_path, clock, uncertain_per_day=3)
    samplers.append(again)
    assert again.stats()["sample_uncertain_left"] == 0
    feed(again, clock, [both(0.5)] * 5)
    assert up2.names == []

    # the next UTC day has a new budget
    clock.advance(DAY_S)
    assert utc_day(clock.wall()) == DAY0 + 1
    assert again.stats()["sample_uncertain_left"] == 3
    feed(again, clock, [both(0.5)] * 5)
    assert len(up2.names) == 3
    saved = json.loads((tmp_path / "sampler.json").read_text())
    assert saved == {"day": day_text(DAY0 + 1), "random": 0, "uncertain": 3}


def test_a_state_file_of_another_day_or_garbage_starts_the_day_afresh(
    tmp_path: Path, samplers: list[Sampler]
) -> None:
    state = tmp_path / "sampler.json"
    state.write_text(json.dumps({"day": day_text(DAY0 - 1), "random": 9, "uncertain": 9}))
    s, _ = make(tmp_path, clock_at(), uncertain_per_day=5, random_per_day=5)
    samplers.append(s)
    assert (s.stats()["sample_uncertain_left"], s.stats()["sample_random_left"]) == (5, 5)
    state.write_text("{not json")
    t, _ = make(tmp_path, clock_at(), uncertain_per_day=5)
    samplers.append(t)
    assert t.stats()["sample_uncertain_left"] == 5


def test_min_interval_spaces_samples_of_one_kind(tmp_path: Path, samplers: list[Sampler]) -> None:
    clock = clock_at()
    s, up = make(tmp_path, clock, uncertain_per_day=100, min_interval_s=10.0)
    samplers.append(s)
    feed(s, clock, [both(0.5)] * 35)  # one frame a second
    times = [p.t_wall_ms for p in up.parsed()]
    assert len(times) == 4
    assert all(b - a >= 10_000 for a, b in itertools.pairwise(times))


def test_disabled_sampler_takes_nothing_by_itself(tmp_path: Path, samplers: list[Sampler]) -> None:
    clock = clock_at()
    s, up = make(tmp_path, clock, enabled=False, uncertain_per_day=100, random_per_day=100)
    samplers.append(s)
    feed(s, clock, [both(0.5)] * 20, step_s=3600)
    assert up.names == []
    assert s.stats()["sample_random_left"] == 0


# -- the uncertainty band ---------------------------------------------------------------------
@pytest.mark.slow
def test_uncertainty_band_selects_only_in_band_scores(
    tmp_path: Path, samplers: list[Sampler]
) -> None:
    clock = clock_at()
    s, up = make(tmp_path, clock, uncertain_per_day=1000, band=0.1)
    samplers.append(s)
    rng = random.Random(3)
    frames = [{"lane1": rng.random(), "lane_2": rng.random()} for _ in range(300)]
    feed(s, clock, frames)
    got = up.parsed()
    assert got
    assert all(p.reason == "uncertain" for p in got)
    assert all(0.4 - 1e-4 <= p.score <= 0.6 + 1e-4 for p in got), [p.score for p in got]
    expected = []  # at most one crop a frame: the ROI scored nearest the threshold
    for sc in frames:
        near = [(abs(v - THRESHOLD), rid) for rid, v in sc.items() if 0.4 <= v <= 0.6]
        if near:
            rid = min(near)[1]
            expected.append((rid, round(sc[rid] * 10000) / 10000))
    assert [(p.roi, p.score) for p in got] == expected


# -- random sampling --------------------------------------------------------------------------
def run_random_day(data_dir: Path, seed: int) -> list[m.SampleName]:
    clock = clock_at()
    s, up = make(data_dir, clock, seed=seed, random_per_day=200)
    try:
        feed(s, clock, [both(0.05)] * 1440, step_s=60.0)  # a frame a minute for a day
        return up.parsed()
    finally:
        s.close()


@pytest.mark.slow
def test_random_samples_are_bounded_uniform_over_the_day_and_rois(tmp_path: Path) -> None:
    got = run_random_day(tmp_path / "a", seed=11)
    assert all(p.reason == "random" for p in got)
    assert 190 <= len(got) <= 200  # bounded by the budget; nearly all of it is used
    start_ms = DAY0 * DAY_S * 1000
    hours = Counter(int((p.t_wall_ms - start_ms) // 3_600_000) // 6 for p in got)
    assert sorted(hours) == [0, 1, 2, 3]
    assert all(30 <= n <= 70 for n in hours.values()), hours  # 50 expected per quarter
    rois = Counter(p.roi for p in got)
    assert all(70 <= n <= 130 for n in rois.values()), rois  # 100 expected per ROI
    assert all(p.score == 0.05 for p in got)  # chosen without regard to the score
    # deterministic with a seeded generator
    again = run_random_day(tmp_path / "b", seed=11)
    assert [(p.t_wall_ms, p.roi) for p in again] == [(p.t_wall_ms, p.roi) for p in got]


def test_random_budget_owed_after_a_restart_is_spread_over_the_rest_of_the_day(
    tmp_path: Path, samplers: list[Sampler]
) -> None:
    (tmp_path / "sampler.json").write_text(
        json.dumps({"day": day_text(DAY0), "random": 40, "uncertain": 0})
    )
    clock = clock_at(second_of_day=DAY_S / 2)  # restarted at noon with 40 of 100 used
    s, up = make(tmp_path, clock, random_per_day=100)
    samplers.append(s)
    assert s.stats()["sample_random_left"] == 60
    feed(s, clock, [both(0.05)] * 720, step_s=60.0)  # the afternoon
    assert 55 <= len(up.names) <= 60
    saved = json.loads((tmp_path / "sampler.json").read_text())  # the clock is past midnight
    assert saved == {"day": day_text(DAY0), "random": 40 + len(up.names), "uncertain": 0}


# -- never waits, always behind alerts --------------------------------------------------------
def test_a_busy_sampler_skips_and_counts_and_inference_goes_on(
    tmp_path: Path, samplers: list[Sampler]
) -> None:
    clock = clock_at()
    gate = threading.Event()
    s, up = make(tmp_path, clock, RecordingUplink(gate=gate), uncertain_per_day=100)
    samplers.append(s)
    s.on_frame(frame_at(clock, 0), both(0.5))
    assert up.entered.wait(5)  # the worker is inside publish_collect, held by the gate
    for i in range(1, 21):  # the inference thread goes on: none of these calls waits
        clock.advance(1.0)
        s.on_frame(frame_at(clock, i), both(0.5))
    st = s.stats()
    assert st["sample_busy"] == 19  # frame 1 waits in the one-slot queue; 2..20 are skipped
    assert st["sample_uncertain_today"] == 2
    gate.set()
    assert wait_until(lambda: s.is_settled, 5)
    assert len(up.names) == 2


def test_a_lossless_sampler_waits_for_the_worker_and_skips_nothing(
    tmp_path: Path, samplers: list[Sampler]
) -> None:
    """An offline run: the same frames as the busy test above, but every due sample is taken
    (the inference thread waits), so a replay samples the same crops however fast it reads."""
    clock = clock_at()
    gate = threading.Event()
    s, up = make(tmp_path, clock, RecordingUplink(gate=gate), uncertain_per_day=100)
    s.lossless = True
    samplers.append(s)
    done = threading.Event()

    def infer() -> None:
        for i in range(21):
            s.on_frame(frame_at(clock, i), both(0.5))
            clock.advance(1.0)
        done.set()

    t = threading.Thread(target=infer, daemon=True)
    t.start()
    assert up.entered.wait(5)
    assert not done.wait(0.2)  # held: the third due sample waits for the gated worker
    gate.set()
    assert done.wait(10)
    t.join(5)
    assert wait_until(lambda: s.is_settled, 5)
    st = s.stats()
    assert st["sample_busy"] == 0
    assert st["sample_uncertain_today"] == 21
    assert len(up.names) == 21


def test_a_lossless_sampler_waits_once_for_the_broker_it_is_connecting_to(
    tmp_path: Path, samplers: list[Sampler]
) -> None:
    """An offline run reads its first frames while the uplink is still connecting: its first
    due sample waits for the broker instead of being skipped (a short file was all gone
    before the connection was up, and sampled nothing)."""
    clock = clock_at()
    up = RecordingUplink(online=False)
    s, _ = make(tmp_path, clock, up, uncertain_per_day=5)
    s.lossless = True
    samplers.append(s)
    threading.Timer(0.3, lambda: setattr(up, "online", True)).start()
    feed(s, clock, [both(0.5)] * 5)
    assert len(up.names) == 5
    assert up.waited_for_broker == 1
    up.online = False  # gone later: samples are skipped as offline, without waiting again
    feed(s, clock, [both(0.5)] * 3)
    assert len(up.names) == 5
    assert up.waited_for_broker == 1


def test_a_replay_samples_on_its_own_days_not_the_clocks(
    tmp_path: Path, samplers: list[Sampler]
) -> None:
    """Frames carrying video time from three days ago, read while the clock says today: the
    random instants fall on the recording's day and the names carry the frames' times."""
    clock = clock_at(DAY0 + 3, second_of_day=600.0)
    s, up = make(tmp_path, clock, random_per_day=6)
    samplers.append(s)
    t0 = (DAY0 * DAY_S) + 3600.0  # the recording: one frame every 10 minutes for a day
    for i in range(144):
        t = t0 + 600.0 * i
        s.on_frame(Frame(index=i, t_mono_s=t, t_wall_s=t, image=_IMAGE), both(0.05))
        assert wait_until(lambda: s.is_settled, 5)
    got = up.parsed()
    assert 5 <= len(got) <= 6
    days = {int(p.t_wall_ms // 1000 // DAY_S) for p in got}
    assert days <= {DAY0, DAY0 + 1}  # the recording's days, not the clock's
    assert DAY0 in days


def test_samples_wait_behind_alerts_and_for_the_broker(
    tmp_path: Path, samplers: list[Sampler]
) -> None:
    clock = clock_at()
    alert_pending = True
    s, up = make(
        tmp_path, clock, hold=lambda: alert_pending, uncertain_per_day=10, random_per_day=1000
    )
    samplers.append(s)
    feed(s, clock, [both(0.5)] * 5, step_s=30.0)
    assert up.names == []
    assert s.stats()["sample_busy"] == 5
    alert_pending = False
    up.online = False  # the broker is away: nothing is taken, random instants are lost
    feed(s, clock, [both(0.5)] * 5, step_s=30.0)
    st = s.stats()
    assert up.names == []
    assert st["sample_dropped"] >= 1
    assert st["sample_uncertain_today"] == 0
    up.online = True
    feed(s, clock, [both(0.5)] * 1)
    assert {p.reason for p in up.parsed()} >= {"uncertain"}


def test_a_crop_the_uplink_drops_gives_its_budget_back(
    tmp_path: Path, samplers: list[Sampler]
) -> None:
    class Refusing(RecordingUplink):
        def publish_collect(self, name: str, jpeg: bytes) -> bool:
            return False  # connected, but the backlog is full

    clock = clock_at()
    s, _ = make(tmp_path, clock, Refusing(), uncertain_per_day=2)
    samplers.append(s)
    feed(s, clock, [both(0.5)] * 4)
    st = s.stats()
    assert st["sample_dropped"] == 4
    assert st["sample_uncertain_left"] == 2


# -- calibration ------------------------------------------------------------------------------
def cal_job(duration_s: float, max_fps: float = 2.0, **body: Any) -> CalibrationJob:
    return CalibrationJob.from_command({"duration_s": duration_s, "max_fps": max_fps, **body}, ROIS)


def test_calibration_window_starts_and_stops_by_the_clock_and_caps_the_rate(
    tmp_path: Path, samplers: list[Sampler]
) -> None:
    clock = clock_at()
    s, up = make(tmp_path, clock)  # no background budget: only the window
    samplers.append(s)
    feed(s, clock, [both(0.1)] * 10, step_s=0.1)
    assert up.names == []  # before the window
    start_ms = int(clock.wall() * 1000)
    s.calibrate(cal_job(10.0, max_fps=2.0, request_id="site-1"))
    assert s.calibrating
    feed(s, clock, [both(0.1)] * 150, step_s=0.1)  # 15 s at 10 fps
    assert not s.calibrating
    got = up.parsed()
    assert all(p.reason == "calibration" and p.run_ms == start_ms for p in got)
    frames = sorted({p.t_wall_ms for p in got})
    assert 18 <= len(frames) <= 21  # 10 s at most 2 a second (the first at once)
    assert all(b - a >= 500 - 1 for a, b in itertools.pairwise(frames))
    assert frames[-1] < start_ms + 10_000  # nothing after the window
    assert Counter(p.roi for p in got) == {"lane1": len(frames), "lane_2": len(frames)}
    assert s.stats()["sample_calibration"] == len(got)


# -- a vehicle stage's unit: the regions are each frame's vehicle windows ----------------------
def windows_of(frame_i: int) -> dict[str, Roi]:
    """Vehicles come and go: none on even tenths, one or two otherwise, moving."""
    if (frame_i // 10) % 2 == 0:
        return {}
    x = 0.05 + 0.01 * (frame_i % 10)
    out = {"vehicle-3": Roi.rect("vehicle-3", x, 0.2, x + 0.25, 0.5, margin=0.0)}
    if frame_i % 3:
        out["vehicle-4"] = Roi.rect("vehicle-4", 0.6, 0.3, 0.9, 0.7, margin=0.0)
    return out


def feed_windows(
    s: Sampler, clock: ManualClock, n: int, score: Callable[[int, str], float], step_s: float
) -> None:
    for i in range(n):
        regions = windows_of(i)
        s.on_frame(frame_at(clock, i), {k: score(i, k) for k in regions}, regions)
        assert wait_until(lambda: s.is_settled, 5), s.stats()
        clock.advance(step_s)


def test_a_vehicle_units_sampler_takes_the_uncertain_window_of_each_frame(
    tmp_path: Path, samplers: list[Sampler]
) -> None:
    clock = clock_at()
    # the unit's zones (here none) are not what is sampled: the frame's windows are
    s, up = make(tmp_path, clock, uncertain_per_day=1000, band=0.1, windows=True, rois=())
    samplers.append(s)
    rng = random.Random(5)
    scores: dict[tuple[int, str], float] = {}

    def score(i: int, key: str) -> float:
        return scores.setdefault((i, key), rng.random())

    feed_windows(s, clock, 200, score, step_s=1.0)
    got = up.parsed()
    assert got
    assert all(p.reason == "uncertain" for p in got)
    expected = []
    for i in range(200):
        near = [
            (abs(scores[(i, k)] - THRESHOLD), k)
            for k in windows_of(i)
            if 0.4 <= scores[(i, k)] <= 0.6
        ]
        if near:
            k = min(near)[1]
            expected.append((k, round(scores[(i, k)] * 10000) / 10000))
    assert [(p.roi, p.score) for p in got] == expected
    # each crop is that frame's window of that vehicle (160 x 120 frames)
    by_t = {round(clock.wall() * 1000) - (200 - i) * 1000: i for i in range(200)}
    for p, jpeg in zip(got, up.jpegs, strict=True):
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None
        roi = windows_of(by_t[p.t_wall_ms])[p.roi]
        assert img.shape == roi.crop(_IMAGE).shape


@pytest.mark.slow
def test_a_vehicle_units_random_instant_waits_for_a_vehicle_in_view(
    tmp_path: Path, samplers: list[Sampler]
) -> None:
    clock = clock_at()
    s, up = make(tmp_path, clock, random_per_day=1000, windows=True, rois=())
    samplers.append(s)
    feed_windows(s, clock, 200, lambda i, k: 0.05, step_s=60.0)
    got = up.parsed()
    assert len(got) >= 50
    start_ms = round(clock.wall() * 1000) - 200 * 60_000
    for p in got:
        i = (p.t_wall_ms - start_ms) // 60_000
        assert p.roi in windows_of(i)  # taken on a frame that had that vehicle in view
    assert {p.roi for p in got} == {"vehicle-3", "vehicle-4"}


def test_a_vehicle_units_calibration_run_records_every_window(
    tmp_path: Path, samplers: list[Sampler]
) -> None:
    clock = clock_at()
    s, up = make(tmp_path, clock, windows=True, rois=())
    samplers.append(s)
    job = CalibrationJob.from_command({"duration_s": 10.0, "max_fps": 100.0}, ())
    s.calibrate(job)
    feed_windows(s, clock, 60, lambda i, k: 0.2, step_s=0.1)  # 6 s: all inside the run
    got = up.parsed()
    assert all(p.reason == "calibration" for p in got)
    want = sorted((i, k) for i in range(60) for k in windows_of(i))
    start_ms = round(clock.wall() * 1000) - 6000
    seen = sorted(((p.t_wall_ms - start_ms + 50) // 100, p.roi) for p in got)
    assert seen == want


def test_the_window_ends_by_the_clock_without_frames_and_can_be_replaced_or_cut(
    tmp_path: Path, samplers: list[Sampler]
) -> None:
    clock = clock_at()
    s, up = make(tmp_path, clock)
    samplers.append(s)
    s.calibrate(cal_job(5.0))
    clock.advance(5.0)  # its timer fires on the clock
    assert not s.calibrating
    assert not s.stats()["sample_calibrating"]
    s.calibrate(cal_job(100.0, rois=["lane_2", "nope"]))
    first_run = int(clock.wall() * 1000)
    feed(s, clock, [both(0.1)] * 2)
    clock.advance(1.0)
    s.calibrate(cal_job(100.0, max_fps=0.1))  # replaces the running one
    feed(s, clock, [both(0.1)] * 2)
    got = up.parsed()
    assert [(p.roi, p.run_ms) for p in got[:2]] == [("lane_2", first_run)] * 2
    assert len({p.run_ms for p in got}) == 2
    s.calibrate(cal_job(0))  # duration 0 ends it
    assert not s.calibrating
    n = len(up.names)
    feed(s, clock, [both(0.1)] * 30, step_s=1.0)
    assert len(up.names) == n


# -- config and commands ----------------------------------------------------------------------
BASE: dict[str, Any] = {
    "unit": {"id": "x"},
    "camera": {"type": "folder", "path": "/tmp"},
    "rois": [{"id": "a", "rect": [0.1, 0.1, 0.5, 0.5]}],
    "model": {"path": "/m.tflite"},
}


def config_with(sampling: dict[str, Any]) -> Config:
    return parse_config({**BASE, "sampling": sampling})


def test_sampling_config_defaults_off() -> None:
    cfg = parse_config(BASE)
    assert cfg.sampling.enabled is False
    assert config_with({"enabled": True, "band": 0.05}).sampling.band == 0.05


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"enabeld": True}, r"sampling\.enabeld: unknown key"),
        ({"band": 0.9}, r"sampling\.band"),
        ({"band": -0.1}, r"sampling\.band"),
        ({"random_per_day": -1}, r"sampling\.random_per_day"),
        ({"uncertain_per_day": 10**6}, r"sampling\.uncertain_per_day"),
        ({"uncertain_per_day": 1.5}, r"sampling\.uncertain_per_day"),
        ({"min_interval_s": 10**6}, r"sampling\.min_interval_s"),
        ({"enabled": "often"}, r"sampling\.enabled"),
    ],
)
def test_bad_sampling_config_names_the_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        config_with(table)


TOPICS = m.Topics("phonewatch", "u1")


def parse(payload: bytes) -> dict[str, Any]:
    name, body = m.parse_command(TOPICS.cmd("calibrate"), payload, topics=TOPICS)
    assert name == "calibrate"
    return body


def test_calibrate_command_is_accepted() -> None:
    body = parse(b'{"request_id": "site-1", "duration_s": 600, "max_fps": 1.5, "rois": ["a"]}')
    job = CalibrationJob.from_command(body, ROIS)
    assert (job.duration_s, job.max_fps, [r.id for r in job.rois]) == (
        600,
        1.5,
        ["lane1", "lane_2"],
    )
    assert CalibrationJob.from_command(parse(b'{"duration_s": 60}'), ROIS).max_fps == 2.0


@pytest.mark.parametrize(
    "payload",
    [
        b'{"duration_s": 1000000000}',
        b'{"duration_s": 1e9}',
        b'{"duration_s": -1}',
        b'{"duration_s": "60"}',
        b'{"duration_s": true}',
        b'{"duration_s": null}',
        b'{"duration_s": NaN}',
        b'{"duration_s": Infinity}',
        b"{}",
        b"",
        b'{"duration_s": 60, "max_fps": 100}',
        b'{"duration_s": 60, "max_fps": 0}',
        b'{"duration_s": 60, "max_fps": "fast"}',
        b'{"duration_s": 60, "rois": "lane1"}',
        b'{"duration_s": 60, "rois": [1, 2]}',
        b'{"duration_s": 60, "rois": ["x"], "all": 1}',
        b'{"duration_s": 60, "request_id": "' + b"r" * 65 + b'"}',
        b"[60]",
        b'"60"',
        b'{"duration_s": 60, "rois": [' + b",".join([b'"a"'] * 17) + b"]}",
    ],
)
def test_hostile_calibrate_commands_are_rejected(payload: bytes) -> None:
    with pytest.raises(MessageError, match="calibrate|JSON|json|object|not allowed"):
        parse(payload)


def test_calibrate_is_a_known_command() -> None:
    assert "calibrate" in m.COMMANDS
    schema = m.load_schema(m.COMMAND_SCHEMA)
    assert schema["$defs"]["calibrate"]["properties"]["duration_s"]["maximum"] == 3600


def test_state_file_day_matches_utc() -> None:
    assert day_text(DAY0) == "2023-12-09"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", day_text(utc_day(1.7e9)))


# -- the composed unit through a real Mosquitto -----------------------------------------------
SAMPLING = """
[sampling]
enabled = true
random_per_day = 0
uncertain_per_day = 4
band = 0.5
min_interval_s = 0
"""


@pytest.mark.slow
def test_unit_publishes_sampled_and_calibration_crops_with_provenance(
    tmp_path: Path, make_video: Callable[..., Path]
) -> None:
    import cv2

    from edge.app.compose import Unit
    from edge.app.config import load_config
    from edge.app.local_broker import LocalBroker, find_mosquitto
    from tests.uplink.conftest import UNIT_A, connect_client, subscribe
    from tests.uplink.test_unit_commands import ROIS as UNIT_ROIS
    from tests.uplink.test_unit_commands import crop_shape, write_config

    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed ('make bootstrap' installs it)")
    with LocalBroker() as broker:
        sub = subscribe(broker, certs_for=None, topics=(f"phonewatch/{UNIT_A}/collect/+",))
        video = make_video([40, 60, 80, 100] * 5, fps=20.0)
        cfg_path = write_config(tmp_path / "unit.toml", broker, video, extra=SAMPLING)
        stop = threading.Event()
        with Unit(load_config(cfg_path), config_path=cfg_path) as unit:
            runner = threading.Thread(target=lambda: unit.run(stop=stop, max_s=120), daemon=True)
            runner.start()
            try:
                sampler = unit.sampler
                assert sampler is not None
                # the background sampler: every score is in the band, the budget is 4
                assert sub.wait(lambda ms: len(ms) >= 4, 20), [r.topic for r in sub.messages]
                assert wait_until(lambda: sampler.is_settled, 10)
                hb = unit.heartbeat_stats()
                assert (hb["sample_uncertain_today"], hb["sample_uncertain_left"]) == (4, 0)
                saved = json.loads((tmp_path / "unit" / "sampler.json").read_text())
                assert saved["uncertain"] == 4

                # a calibration run, asked for by the control room; a hostile one is refused
                cr = connect_client(broker, "controlroom-commander")
                cr.loop_start()
                for body in (
                    b'{"duration_s": 1000000000}',
                    b'{"duration_s": "2"}',
                    b'{"duration_s": 1.5, "max_fps": 4, "request_id": "site-1"}',
                ):
                    cr.publish(f"phonewatch/{UNIT_A}/cmd/calibrate", body, qos=1).wait_for_publish(
                        5
                    )
                assert wait_until(lambda: sampler.stats()["sample_calibration"] >= 2, 20)
                assert wait_until(lambda: not sampler.calibrating and sampler.is_settled, 20)
                n_cal = sampler.stats()["sample_calibration"]
                assert sub.wait(lambda ms: len(ms) >= 4 + n_cal, 20)
                assert unit.uplink is not None
                assert unit.uplink.stats()["commands_rejected"] == 2
                assert runner.is_alive()
                cr.loop_stop()
                cr.disconnect()
            finally:
                stop.set()
                runner.join(15)
        sub.close()

    got = list(sub.messages)
    assert len(got) == 4 + n_cal  # nothing beyond the budget and the window
    parsed: list[m.SampleName] = []
    for r in got:
        assert not r.retain
        mt = re.fullmatch(r"phonewatch/([^/]+)/collect/([^/]+)", r.topic)
        assert mt is not None, r.topic
        unit_id, name = mt.groups()
        assert unit_id == UNIT_A  # the unit: the topic's (the ACL vouches for it)
        p = m.parse_sample_name(name)
        assert p is not None, name
        parsed.append(p)
        assert p.model == "test_1"  # the sidecar's version "test-1"
        assert 0.0 <= p.score <= 1.0
        img = cv2.imdecode(np.frombuffer(r.payload, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None
        assert img.shape == crop_shape(p.roi, 160, 120)
    assert Counter(p.reason for p in parsed) == {"uncertain": 4, "calibration": n_cal}
    cal = [p for p in parsed if p.reason == "calibration"]
    assert len({p.run_ms for p in cal}) == 1  # one run: one group for the labelling queue
    frames = sorted({p.t_wall_ms for p in cal})
    assert Counter(p.roi for p in cal) == dict.fromkeys(UNIT_ROIS, len(frames))
    assert all(b - a >= 240 for a, b in itertools.pairwise(frames))  # at most 4 a second


def calibrated_past(sampler: Sampler, n: int) -> bool:
    return bool(sampler.stats()["sample_calibration"] > n)


def run_unit_sampling(
    tmp_path: Path, video: Path, *, cameras: str | None, calibrations: list[bytes]
) -> list[m.SampleName]:
    """A unit (``SAMPLING``; ``cameras`` if given) through a real Mosquitto: its 4 uncertain
    crops, then each ``calibrate`` command in turn, run to its end. Every crop's name."""
    from edge.app.compose import Unit
    from edge.app.config import load_config
    from edge.app.local_broker import LocalBroker, find_mosquitto
    from tests.uplink.conftest import UNIT_A, connect_client, subscribe
    from tests.uplink.test_unit_commands import write_config

    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed ('make bootstrap' installs it)")
    with LocalBroker() as broker:
        sub = subscribe(broker, certs_for=None, topics=(f"phonewatch/{UNIT_A}/collect/+",))
        cfg_path = write_config(
            tmp_path / "unit.toml", broker, video, extra=SAMPLING, cameras=cameras
        )
        stop = threading.Event()
        with Unit(load_config(cfg_path), config_path=cfg_path) as unit:
            runner = threading.Thread(target=lambda: unit.run(stop=stop, max_s=120), daemon=True)
            runner.start()
            cr = connect_client(broker, "controlroom-commander")
            cr.loop_start()
            try:
                sampler = unit.sampler
                assert sampler is not None
                assert sub.wait(lambda ms: len(ms) >= 4, 20), [r.topic for r in sub.messages]
                for body in calibrations:
                    before = sampler.stats()["sample_calibration"]
                    topic = f"phonewatch/{UNIT_A}/cmd/calibrate"
                    cr.publish(topic, body, qos=1).wait_for_publish(5)
                    assert wait_until(functools.partial(calibrated_past, sampler, before), 20)
                    assert wait_until(lambda: not sampler.calibrating and sampler.is_settled, 20)
                n = 4 + sampler.stats()["sample_calibration"]
                assert sub.wait(lambda ms: len(ms) >= n, 20)
            finally:
                cr.loop_stop()
                cr.disconnect()
                stop.set()
                runner.join(15)
        sub.close()
    names = [r.topic.rsplit("/", 1)[1] for r in sub.messages]
    parsed = [m.parse_sample_name(n) for n in names]
    assert all(p is not None for p in parsed), names
    return [p for p in parsed if p is not None]


@pytest.mark.slow
def test_a_unit_with_several_cameras_samples_each_with_the_camera_in_the_name(
    tmp_path: Path, make_video: Callable[..., Path]
) -> None:
    video = make_video([40, 60, 80, 100] * 5, fps=20.0)
    cameras = "".join(
        f'[[cameras]]\nid = "{cam}"\n[cameras.source]\ntype = "replay"\npath = "{video}"\n'
        f"loop = true\nspeed = 1.0\n"
        f'[[cameras.rois]]\nid = "lane1"\nrect = [{x0}, 0.1, {x0 + 0.4}, 0.9]\n'
        for cam, x0 in (("north", 0.05), ("south", 0.5))
    )
    runs = [
        b'{"duration_s": 2, "max_fps": 4, "rois": ["south-lane1"]}',
        b'{"duration_s": 2, "max_fps": 4}',
    ]
    parsed = run_unit_sampling(tmp_path, video, cameras=cameras, calibrations=runs)
    assert {p.roi for p in parsed} <= {"north-lane1", "south-lane1"}
    starts = sorted({p.run_ms for p in parsed if p.run_ms is not None})
    assert len(starts) == 2
    first = Counter(p.roi for p in parsed if p.run_ms == starts[0])
    assert set(first) == {"south-lane1"}  # as the command asked
    second = Counter(p.roi for p in parsed if p.run_ms == starts[1])
    assert set(second) == {"north-lane1", "south-lane1"}  # every camera's crops
    assert all(k <= 9 for k in second.values()), second  # at most 4 a second, over 2 s


def test_a_calibration_run_caps_each_cameras_rate_on_its_own(
    tmp_path: Path, samplers: list[Sampler]
) -> None:
    north = Roi.rect("north-lane1", 0.1, 0.1, 0.4, 0.9)
    south = Roi.rect("south-lane1", 0.5, 0.2, 0.9, 0.8)
    clock = clock_at()
    s, up = make(tmp_path, clock, rois=(north, south))
    samplers.append(s)
    s.calibrate(CalibrationJob.from_command({"duration_s": 10.0, "max_fps": 2.0}, (north, south)))
    for i in range(100):  # 5 s: the two cameras' frames interleaved, 20 a second in all
        cam, roi = ("north", north) if i % 2 == 0 else ("south", south)
        s.on_frame(frame_at(clock, i), {roi.id: 0.1}, {roi.id: roi}, cam)
        assert wait_until(lambda: s.is_settled, 5), s.stats()
        clock.advance(0.05)
    got = Counter(p.roi for p in up.parsed())
    assert set(got) == {"north-lane1", "south-lane1"}
    assert all(9 <= n <= 10 for n in got.values()), got  # 2 a second each, not 2 in all
