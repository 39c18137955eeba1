"""Per-vehicle decisions: one alert per pass, the best frame, the wait, zones; and the whole
vehicle stage (tracker -> window -> decider) on a synthetic crossing."""

from __future__ import annotations

import pytest

from edge.core.decider import DeciderParams
from edge.core.roi import Roi
from edge.core.track_decider import (
    NO_ZONE,
    TrackDecider,
    TrackDecisionError,
    TrackDecisionParams,
    TrackFrame,
    TrackHit,
)
from edge.core.tracker import Detected, Tracker, TrackerParams
from edge.core.vehicle import Box
from edge.core.window import SIDE_ALONG, WindowSpec

FPS = 30.0
N_OF_M = DeciderParams(window=5, min_frames=3, score_on=0.7, score_off=0.3, cooldown_s=5.0)
CAR: Box = (600.0, 400.0, 1000.0, 600.0)
WIN: Box = (752.0, 400.0, 928.0, 524.0)
FRAME = (1920, 1080)


def params(wait_s: float = 1.0, **kw: object) -> TrackDecisionParams:
    return TrackDecisionParams(decider=N_OF_M, best_frame_wait_s=wait_s, **kw)  # type: ignore[arg-type]


def tf(
    tid: int, score: float, i: int, *, win: Box = WIN, sharp: float = 0.0, car: Box = CAR
) -> TrackFrame[int]:
    return TrackFrame(tid, score, car, win, item=i, sharpness=sharp, label="car")


def feed(
    d: TrackDecider[int], tid: int, scores: list[float], *, start: int = 0
) -> list[TrackHit[int]]:
    hits = []
    for k, s in enumerate(scores):
        i = start + k
        hits += d.update(i / FPS, [tf(tid, s, i)], frame_wh=FRAME)
    return hits


def test_one_alert_per_vehicle_however_long_the_phone_is_held() -> None:
    d: TrackDecider[int] = TrackDecider(params(wait_s=1.0))
    hits = feed(d, 7, [0.9] * int(30 * FPS))  # 30 s on the phone, cooldown 5 s
    assert len(hits) == 1
    h = hits[0]
    assert (h.track_id, h.roi_id, h.label) == (7, NO_ZONE, "car")
    assert (h.frames_over, h.window) == (3, 5)
    assert h.t_mono_s == pytest.approx(2 / FPS)  # confirmed on the 3rd frame
    assert h.released_by == "wait"
    assert h.t_release_s == pytest.approx(h.t_mono_s + 1.0)
    assert h.frames == 33  # frames 0..32: confirmed on frame 2, released 30 frames later
    assert (h.vehicle_box, h.window_box) == (CAR, WIN)
    assert d.update(31.0, [], ended=[7]) == []  # the end of the pass raises nothing more
    assert d.live == 0


def test_no_alert_for_a_track_that_never_reaches_n_of_m() -> None:
    d: TrackDecider[int] = TrackDecider(params())
    scores = [0.9, 0.1, 0.1, 0.9, 0.1] * 20  # at most 2 of any 5 frames
    assert feed(d, 3, scores) == []
    assert d.update(5.0, [], ended=[3]) == []
    assert d.drain(5.0) == []


def test_the_evidence_is_the_best_frame_score_then_window_size_then_sharpness() -> None:
    d: TrackDecider[int] = TrackDecider(params(wait_s=10.0))
    small: Box = (752.0, 400.0, 852.0, 480.0)
    frames = [
        tf(1, 0.9, 0, win=small, sharp=100.0),
        tf(1, 0.95, 1, win=small, sharp=1.0),
        tf(1, 0.95, 2, win=WIN, sharp=1.0),  # same score, larger window: better
        tf(1, 0.95, 3, win=WIN, sharp=5.0),  # same score and window, sharper: best
        tf(1, 0.95, 4, win=WIN, sharp=5.0),  # a full tie: the earlier frame stays
        tf(1, 0.8, 5, win=WIN, sharp=50.0),
    ]
    for f in frames:
        assert d.update(f.item / FPS, [f]) == []
    (h,) = d.update(1.0, [], ended=[1])
    assert h.best == 3
    assert (h.score, h.window_box, h.sharpness) == (0.95, WIN, 5.0)
    assert h.released_by == "ended"


def test_a_frame_of_a_lost_track_is_evidence_only_when_there_is_no_other() -> None:
    # A track carried on a guess after a missed detection may have drifted onto another car,
    # whose driver's window then scores high: that frame still counts, but is not evidence.
    d: TrackDecider[int] = TrackDecider(params(wait_s=10.0))
    seen = [TrackFrame(1, s, CAR, WIN, item=i) for i, s in enumerate([0.8, 0.85, 0.8])]
    lost = [TrackFrame(1, 0.99, CAR, WIN, item=3 + i, is_lost=True) for i in range(3)]
    for f in seen + lost:
        assert d.update(f.item / FPS, [f]) == []
    (h,) = d.update(1.0, [], ended=[1])
    assert (h.best, h.score) == (1, 0.85)
    d2: TrackDecider[int] = TrackDecider(params(wait_s=10.0))
    for f in lost:
        assert d2.update(f.item / FPS, [f]) == []
    (h2,) = d2.update(1.0, [], ended=[1])
    assert (h2.best, h2.score) == (3, 0.99)  # lost frames confirm, and are all there is


def test_frames_of_a_lost_track_can_be_kept_from_confirming_a_pass() -> None:
    # Two detected frames over the threshold, then three on a guessed box (the track missed a
    # detection round) also over it: by default 3 of 5 confirm; with lost_frames_count off
    # the guesses count neither way, and the pass confirms only on a third detected frame.
    def frames() -> list[TrackFrame[int]]:
        out = [TrackFrame(1, 0.9, CAR, WIN, item=i) for i in range(2)]
        out += [TrackFrame(1, 0.95, CAR, WIN, item=2 + i, is_lost=True) for i in range(3)]
        return out

    d: TrackDecider[int] = TrackDecider(params(wait_s=0.0))
    hits = [h for f in frames() for h in d.update(f.item / FPS, [f])]
    assert [h.t_mono_s * FPS for h in hits] == pytest.approx([2.0])
    strict: TrackDecider[int] = TrackDecider(params(wait_s=0.0, lost_frames_count=False))
    assert [h for f in frames() for h in strict.update(f.item / FPS, [f])] == []
    assert strict.update(1.0, [], ended=[1]) == []  # the pass ends unconfirmed: no alert
    again: TrackDecider[int] = TrackDecider(params(wait_s=0.0, lost_frames_count=False))
    seq = [*frames(), TrackFrame(1, 0.8, CAR, WIN, item=5)]
    hits = [h for f in seq for h in again.update(f.item / FPS, [f])]
    assert len(hits) == 1
    assert (hits[0].best, hits[0].frames_over) == (0, 3)  # a detected frame is the evidence


def test_a_better_frame_within_the_wait_becomes_the_evidence_later_ones_do_not() -> None:
    d: TrackDecider[int] = TrackDecider(params(wait_s=0.5))
    scores = [0.8, 0.8, 0.8] + [0.85] * 5 + [0.99] + [0.8] * 10 + [1.0] * 30
    hits = feed(d, 2, scores)
    assert len(hits) == 1
    h = hits[0]
    assert h.best == 8  # the 0.99 at frame 8 came 0.2 s after confirmation (frame 2)
    assert h.score == 0.99
    assert h.t_release_s == pytest.approx(17 / FPS)  # frame 2 + 0.5 s (15 frames)


def test_the_track_ending_before_the_wait_releases_the_alert_at_once() -> None:
    d: TrackDecider[int] = TrackDecider(params(wait_s=5.0))
    assert feed(d, 4, [0.9, 0.9, 0.9, 0.95]) == []
    (h,) = d.update(0.2, [], ended=[4])
    assert (h.track_id, h.best, h.released_by, h.t_release_s) == (4, 3, "ended", 0.2)


def test_with_no_wait_the_alert_goes_on_the_confirming_frame() -> None:
    d: TrackDecider[int] = TrackDecider(params(wait_s=0.0))
    hits = feed(d, 5, [0.2, 0.9, 0.9, 0.9, 0.99, 0.99])
    # confirmed on frame 3; the best so far is frame 1 (0.9, the earliest of a tie)
    assert [(h.best, h.t_mono_s, h.t_release_s) for h in hits] == [(1, 3 / FPS, 3 / FPS)]


def test_drain_releases_what_is_held_at_the_end_of_a_run() -> None:
    d: TrackDecider[int] = TrackDecider(params(wait_s=60.0))
    assert feed(d, 9, [0.9] * 4) == []
    (h,) = d.drain(1.0)
    assert (h.track_id, h.released_by) == (9, "drain")
    assert d.live == 0
    assert d.drain(2.0) == []


def test_tracks_are_decided_independently_each_once() -> None:
    d: TrackDecider[int] = TrackDecider(params(wait_s=0.0))
    hits: list[TrackHit[int]] = []
    for i in range(60):
        frames = [tf(1, 0.9, i), tf(2, 0.1 if i < 30 else 0.9, i), tf(3, 0.1, i)]
        hits += d.update(i / FPS, frames)
    assert [(h.track_id, h.best) for h in hits] == [(1, 0), (2, 30)]  # ties: the earliest


LANE = Roi.rect("lane1", 0.0, 0.5, 0.5, 1.0)
LANE2 = Roi.polygon("lane2", [(0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.5, 1.0)])


def test_zones_only_frames_inside_count_and_the_alert_names_the_zone() -> None:
    d: TrackDecider[int] = TrackDecider(params(wait_s=0.0), zones=[LANE, LANE2])
    outside: Box = (600.0, 100.0, 1000.0, 300.0)  # bottom centre (800, 300): above both lanes
    inside: Box = (1200.0, 700.0, 1600.0, 900.0)  # bottom centre (1400, 900): lane2
    frames = [tf(1, 0.9, i, car=outside) for i in range(10)]
    frames += [tf(1, 0.9, 10, car=inside), tf(1, 0.9, 11, car=inside)]
    frames += [tf(1, 0.9, 12, car=outside)]
    frames += [tf(1, 0.8, 13, car=inside)]
    hits = []
    for f in frames:
        hits += d.update(f.item / FPS, [f], frame_wh=FRAME)
    assert [(h.best, h.roi_id) for h in hits] == [(10, "lane2")]  # on the 3rd frame inside
    assert hits[0].frames == 3
    assert hits[0].t_mono_s == pytest.approx(13 / FPS)
    assert d.zone_of((100.0, 600.0, 300.0, 700.0), FRAME) == "lane1"


def test_the_zone_anchor_is_the_bottom_centre_or_the_centre() -> None:
    straddling: Box = (100.0, 300.0, 300.0, 800.0)  # centre y 550 inside lane1, bottom 800 too
    above: Box = (100.0, 100.0, 300.0, 500.0)  # bottom 500: above the lane (y >= 540)
    bottom = TrackDecider[int](params(zone_anchor="bottom_centre"), zones=[LANE])
    centre = TrackDecider[int](params(zone_anchor="centre"), zones=[LANE])
    tall: Box = (100.0, 200.0, 300.0, 700.0)  # centre y 450 outside, bottom 700 inside
    assert bottom.zone_of(tall, FRAME) == "lane1"
    assert centre.zone_of(tall, FRAME) is None
    assert bottom.zone_of(straddling, FRAME) == centre.zone_of(straddling, FRAME) == "lane1"
    assert bottom.zone_of(above, FRAME) is None


def test_bad_input_is_refused_and_changes_nothing() -> None:
    d: TrackDecider[int] = TrackDecider(params(wait_s=0.0))
    assert feed(d, 1, [0.9, 0.9]) == []
    with pytest.raises(TrackDecisionError, match="score"):
        d.update(1.0, [tf(1, 0.9, 2), tf(1, 1.5, 3)])
    with pytest.raises(TrackDecisionError, match="window_box"):
        d.update(1.0, [tf(1, 0.9, 2, win=(10.0, 10.0, 5.0, 20.0))])
    (h,) = d.update(1.0, [tf(1, 0.9, 4)])  # the refused frames never counted
    assert h.best == 0
    zoned: TrackDecider[int] = TrackDecider(params(), zones=[LANE])
    with pytest.raises(TrackDecisionError, match="frame_wh"):
        zoned.update(0.0, [tf(1, 0.9, 0)])
    with pytest.raises(TrackDecisionError, match="best_frame_wait_s"):
        params(wait_s=-1.0)


def test_the_vehicle_stage_alerts_once_for_the_phone_driver_in_a_crossing() -> None:
    """Tracker -> driver's window -> per-track decisions, detections at 5 Hz, two cars
    crossing; only car A's driver is on the phone (scores as a classifier would give)."""

    def car_a(t: float) -> Box:
        x = 100 + 400 * t
        return (x, 300.0, x + 200, 420.0)

    def car_b(t: float) -> Box:
        x = 1690 - 400 * t
        return (x, 310.0, x + 220, 442.0)

    tracker = Tracker(TrackerParams(min_hits=3, max_missed=3), frame_wh=FRAME)
    spec = WindowSpec(view="side", drive_side="right")
    d: TrackDecider[int] = TrackDecider(params(wait_s=1.0))
    hits: list[TrackHit[int]] = []
    phone_track = None
    for i in range(int(5.0 * FPS)):
        t = i / FPS
        ended: list[int] = []
        if i % 6 == 0:
            up = tracker.update(t, [Detected(car_a(t), 0.8), Detected(car_b(t), 0.7)])
            states, ended = up.confirmed, [s.track_id for s in up.ended]
        else:
            states = [s for s in tracker.predict(t) if s.is_confirmed]
        frames = []
        for s in states:
            win = spec.box(s.box, FRAME, s.heading_x)
            is_a = abs((s.box[0] + s.box[2]) / 2 - (car_a(t)[0] + 100)) < 20
            phone_track = s.track_id if is_a else phone_track
            frames.append(TrackFrame(s.track_id, 0.9 if is_a else 0.05, s.box, win, i))
        hits += d.update(t, frames, ended=ended, frame_wh=FRAME)
    hits += d.update(5.0, [], ended=[s.track_id for s in tracker.finish(5.0)])
    assert phone_track == 1
    assert [h.track_id for h in hits] == [1]
    (h,) = hits
    assert h.released_by == "wait"
    a = car_a(h.best / FPS)
    assert h.vehicle_box == pytest.approx(a, abs=2.0)
    lo, hi = SIDE_ALONG  # moving right: measured from the left (back) edge
    assert a[0] + lo * 200 - 2 <= h.window_box[0] < h.window_box[2] <= a[0] + hi * 200 + 2
