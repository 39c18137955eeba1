"""The vehicle tracker: pairing, coasting, lifecycle, counts. Pure, synthetic boxes.

Scenes run detections at 5 Hz (every 0.2 s) and frames at 30 fps in between, as the unit does.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.core.tracker import (
    Detected,
    Tracker,
    TrackerParams,
    TrackError,
    TrackState,
    assign,
)
from edge.core.vehicle import Box, iou

DT_DET = 0.2


def moving(x0: float, y0: float, w: float, h: float, vx: float, t: float, vy: float = 0.0) -> Box:
    """A box of ``w x h`` that was at ``(x0, y0)`` at t=0, moving at ``(vx, vy)`` px/s."""
    x = x0 + vx * t
    y = y0 + vy * t
    return (x, y, x + w, y + h)


def car_a(t: float) -> Box:  # left to right
    return moving(100, 300, 200, 120, 400, t)


def car_b(t: float) -> Box:  # right to left, a little nearer (larger, lower)
    return moving(1690, 310, 220, 132, -400, t)


def centre_x(box: Box) -> float:
    return (box[0] + box[2]) / 2


def test_iou() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)


def brute_force_cost(cost: list[list[float]]) -> float:
    n, m = len(cost), len(cost[0])
    if n <= m:
        return min(
            sum(cost[i][p[i]] for i in range(n)) for p in itertools.permutations(range(m), n)
        )
    return min(sum(cost[p[j]][j] for j in range(m)) for p in itertools.permutations(range(n), m))


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 5).flatmap(
        lambda n: st.integers(1, 5).flatmap(
            lambda m: st.lists(
                st.lists(st.floats(0, 1, allow_nan=False), min_size=m, max_size=m),
                min_size=n,
                max_size=n,
            )
        )
    )
)
def test_assign_is_optimal(cost: list[list[float]]) -> None:
    pairs = assign(cost)
    assert len(pairs) == min(len(cost), len(cost[0]))
    assert len({i for i, _ in pairs}) == len(pairs)
    assert len({j for _, j in pairs}) == len(pairs)
    assert sum(cost[i][j] for i, j in pairs) == pytest.approx(brute_force_cost(cost))


def test_assign_finds_the_pairing_greedy_by_iou_misses() -> None:
    # Track 0 overlaps detection 0 most (0.9), but track 1 overlaps only detection 0 (0.85).
    # Greedy takes (0, 0) and leaves track 1 unpaired; optimal pairs both.
    overlaps = [[0.9, 0.8], [0.85, 0.0]]
    cost = [[1 - o for o in row] for row in overlaps]
    assert assign(cost) == [(0, 1), (1, 0)]
    assert assign([]) == []
    assert assign([[0.5], [0.1], [0.3]]) == [(1, 0)]  # more rows than columns


def run_scene(
    tracker: Tracker,
    boxes_at: Sequence[Callable[[float], Box | None]],
    t_end: float,
    *,
    fps: float = 30.0,
) -> tuple[dict[int, list[TrackState]], list[TrackState]]:
    """Frames at ``fps``; on every 6th frame (5 Hz) the detections ``boxes_at`` gives.

    ``boxes_at`` holds callables ``t -> Box | None`` (None: not detected then).
    Returns every state seen per track id, and the ended tracks.
    """
    seen: dict[int, list[TrackState]] = {}
    ended: list[TrackState] = []
    n = round(t_end * fps)
    for i in range(n + 1):
        t = i / fps
        if i % 6 == 0:
            dets = [Detected(b, 0.9) for f in boxes_at if (b := f(t)) is not None]
            up = tracker.update(t, dets)
            states = up.tracks
            ended += up.ended
        else:
            states = tracker.predict(t)
        for s in states:
            seen.setdefault(s.track_id, []).append(s)
    return seen, ended


def test_two_cars_crossing_paths_keep_their_ids() -> None:
    tracker = Tracker(TrackerParams(min_hits=3, max_missed=3))
    seen, ended = run_scene(tracker, [car_a, car_b], 3.0)
    assert ended == []
    assert sorted(seen) == [1, 2]
    # the boxes overlap at the crossing (t = 2.0 s): it is a real test of association
    assert iou(car_a(2.0), car_b(2.0)) > 0.6
    for tid, true in ((1, car_a), (2, car_b)):
        for s in seen[tid]:
            if s.hits < 2:
                continue  # no velocity before the second detection
            assert abs(centre_x(s.box) - centre_x(true(s.t_s))) < 5, (tid, s.t_s)
    assert seen[1][-1].heading_x == 1
    assert seen[2][-1].heading_x == -1


def test_crossing_with_the_far_car_hidden_coasts_and_reassociates() -> None:
    def a_hidden_at_crossing(t: float) -> Box | None:
        return None if 1.8 <= t <= 2.4 else car_a(t)  # 4 rounds hidden behind car b

    tracker = Tracker(TrackerParams(min_hits=3, max_missed=4))
    seen, ended = run_scene(tracker, [a_hidden_at_crossing, car_b], 3.0)
    assert ended == []
    assert sorted(seen) == [1, 2]
    hidden = [s for s in seen[1] if 1.8 <= s.t_s <= 2.4]
    assert hidden
    assert all(s.is_coasting for s in hidden)
    for s in seen[1]:  # coasting on prediction, it stays on the car it followed
        if s.hits < 2:
            continue
        assert abs(centre_x(s.box) - centre_x(car_a(s.t_s))) < 5
    assert seen[1][-1].missed == 0
    assert not seen[1][-1].is_coasting


def test_a_missed_detection_coasts_and_reassociates() -> None:
    def flaky(t: float) -> Box | None:
        return None if 1.0 <= t <= 1.4 else moving(200, 400, 180, 110, 250, t, vy=20)

    tracker = Tracker(TrackerParams(min_hits=3, max_missed=3))
    seen, ended = run_scene(tracker, [flaky], 2.0)
    assert ended == []
    assert list(seen) == [1]
    gap = [s for s in seen[1] if 1.0 <= s.t_s <= 1.4]
    assert max(s.missed for s in gap) == 3
    for s in gap:  # the prediction tracks the car through the gap
        truth = moving(200, 400, 180, 110, 250, s.t_s, vy=20)
        assert iou(s.box, truth) > 0.95
    assert seen[1][-1].hits == 8  # 11 rounds in 0..2 s, 3 missed


def test_a_vehicle_leaving_and_a_new_one_entering() -> None:
    def leaves(t: float) -> Box | None:
        return car_a(t) if t < 1.0 else None

    def enters(t: float) -> Box | None:
        return moving(900, 500, 200, 120, -300, t - 1.5) if t >= 1.5 else None

    tracker = Tracker(TrackerParams(min_hits=3, max_missed=3))
    seen, ended = run_scene(tracker, [leaves, enters], 3.0)
    assert sorted(seen) == [1, 2]
    assert [e.track_id for e in ended] == [1]
    assert ended[0].is_confirmed
    assert ended[0].t_s == pytest.approx(1.6)  # the 4th round without it (max_missed 3)
    assert seen[2][0].t_first_s == pytest.approx(1.6)  # the first round it was detected in
    c = tracker.counts(3.0)
    assert (c.started_total, c.ended_total, c.live) == (2, 1, 1)
    assert tracker.finish(3.1)[0].track_id == 2
    assert tracker.counts(3.1).ended_total == 2


def test_a_track_ends_when_its_prediction_leaves_the_frame() -> None:
    def exits_right(t: float) -> Box | None:
        box = moving(1300, 300, 200, 120, 300, t)
        return box if box[2] <= 1920 else None  # the detector stops when it is cut off

    tracker = Tracker(TrackerParams(max_missed=10), frame_wh=(1920, 1080))
    _, ended = run_scene(tracker, [exits_right], 3.0)
    assert [e.track_id for e in ended] == [1]
    assert ended[0].is_confirmed
    assert ended[0].box[0] >= 1920
    assert ended[0].t_s == pytest.approx(2.2)  # wholly outside; 10 rounds would be 3.6 s


def test_a_false_single_frame_detection_is_never_confirmed() -> None:
    def ghost(t: float) -> Box | None:
        return (1200.0, 100.0, 1300.0, 160.0) if abs(t - 0.6) < 1e-9 else None

    tracker = Tracker(TrackerParams(min_hits=3, max_missed=3))
    starts: list[int] = []
    ended: list[TrackState] = []
    for k in range(10):
        t = k * DT_DET
        dets = [Detected(b, 0.6) for f in (car_a, ghost) if (b := f(t)) is not None]
        up = tracker.update(t, dets)
        starts += [s.track_id for s in up.started]
        ended += up.ended
    assert starts == [1]
    assert [(e.track_id, e.is_confirmed) for e in ended] == [(2, False)]
    assert tracker.counts(2.0).started_total == 1
    assert tracker.counts(2.0).ended_total == 0  # the ghost is not a vehicle pass


def test_ids_are_monotonic_and_never_reused() -> None:
    tracker = Tracker(TrackerParams(min_hits=1, max_missed=0))
    ids = []
    for k in range(6):  # a different car every round, each far from the last
        box = (100.0 + 300 * k, 100.0, 250.0 + 300 * k, 200.0)
        up = tracker.update(k * DT_DET, [Detected(box, 0.9)])
        ids += [s.track_id for s in up.started]
    assert ids == [1, 2, 3, 4, 5, 6]


def test_predict_moves_every_box_between_detections() -> None:
    tracker = Tracker(TrackerParams(min_hits=1))
    for k in range(3):
        tracker.update(k * DT_DET, [Detected(car_a(k * DT_DET), 0.9)])
    for t in (0.45, 0.5, 0.55):
        (s,) = tracker.predict(t)
        assert s.is_coasting
        assert s.box == pytest.approx(car_a(t), abs=1e-6)
    assert tracker.tracks[0].box == pytest.approx(car_a(0.55), abs=1e-6)


def test_heading_is_kept_while_the_car_waits_at_the_line() -> None:
    tracker = Tracker(TrackerParams(min_hits=1))
    box = car_b(0.0)
    for k in range(3):
        tracker.update(k * DT_DET, [Detected(car_b(k * DT_DET), 0.9)])
        box = car_b(k * DT_DET)
    for k in range(3, 12):  # stopped
        up = tracker.update(k * DT_DET, [Detected(box, 0.9)])
    (s,) = up.tracks
    assert abs(s.velocity[0]) < 5
    assert s.heading_x == -1


def test_label_by_majority_vote_ties_go_to_the_latest() -> None:
    tracker = Tracker(TrackerParams(min_hits=1))
    labels = ["van", "car", "car", "van", "car"]
    expected = ["van", "car", "car", "van", "car"]  # ties (after 2 and 4): the latest
    got = []
    for k, lab in enumerate(labels):
        up = tracker.update(k * DT_DET, [Detected(car_a(k * DT_DET), 0.9, lab)])
        got.append(up.tracks[0].label)
    assert got == expected


def test_counts_per_minute_for_the_heartbeat() -> None:
    tracker = Tracker(TrackerParams(min_hits=1, max_missed=0))
    t = 0.0
    for k in range(5):  # five cars, one every 20 s, each seen for one round and gone the next
        t = k * 20.0
        tracker.update(t, [Detected((100.0, 100.0, 200.0, 200.0), 0.9)])
        tracker.update(t + 0.2, [])
        if k == 2:
            assert tracker.counts(t + 0.2).started_per_min is None  # not a minute yet
    c = tracker.counts(t + 0.2)
    assert c.started_total == 5
    assert c.ended_total == 5
    assert c.started_per_min == 3  # the ones at 40, 60, 80 s are within the last minute
    assert c.ended_per_min == 3
    assert c.live == 0
    assert tracker.counts(t + 200).started_per_min == 0
    assert c.heartbeat() == {"tracks_per_min": 3, "active": 0}


@pytest.mark.parametrize(
    ("box", "match"),
    [
        ((10.0, 10.0, 5.0, 20.0), "x1 > x0"),
        ((10.0, 10.0, 20.0, float("nan")), "finite"),
        ((10.0, 10.0, 20.0), "4 finite numbers"),
    ],
)
def test_a_bad_detection_is_refused_and_changes_nothing(box: tuple[float, ...], match: str) -> None:
    tracker = Tracker(TrackerParams(min_hits=1))
    tracker.update(0.0, [Detected(car_a(0.0), 0.9)])
    before = tracker.tracks
    with pytest.raises(TrackError, match=match):
        tracker.update(0.2, [Detected(car_a(0.2), 0.9), Detected(box, 0.9)])  # type: ignore[arg-type]
    assert tracker.tracks == before


def test_time_must_not_run_backwards() -> None:
    tracker = Tracker()
    tracker.update(1.0, [])
    with pytest.raises(TrackError, match="backwards"):
        tracker.predict(0.5)
    with pytest.raises(TrackError, match="min_hits"):
        TrackerParams(min_hits=0)
    with pytest.raises(ValueError, match="iou_min"):
        TrackerParams(iou_min=0.0)


def noisy_run(seed: int, loss: float, jitter_px: float) -> bool:
    """Three cars in two lanes and both directions for 4 s, boxes jittered, ``loss`` of the
    detections lost at random. True when each car had exactly one confirmed track, that
    track only ever took that car's detections, and no confirmed track ended."""
    rng = np.random.default_rng(seed)
    cars: list[Callable[[float], Box]] = [
        lambda t: moving(0, 300, 240, 140, 350, t),
        lambda t: moving(700, 320, 200, 120, 150, t),  # slower, same way: overtaken
        lambda t: moving(1800, 600, 260, 160, -300, t),  # the other lane, the other way
    ]
    tracker = Tracker(TrackerParams(min_hits=3, max_missed=3), frame_wh=(1920, 1080))
    owner: dict[int, set[int]] = {}
    for k in range(int(4.0 / DT_DET)):
        t = k * DT_DET
        dets = []
        for f in cars:
            if rng.random() < loss:
                continue
            x0, y0, x1, y1 = (v + float(rng.normal(0, jitter_px)) for v in f(t))
            dets.append(Detected((x0, y0, x1, y1), 0.8))
        up = tracker.update(t, dets)
        if any(e.is_confirmed for e in up.ended):
            return False
        for s in up.confirmed:
            if not s.is_coasting:  # whose detection did the track take?
                c = max(range(3), key=lambda c: iou(s.box, cars[c](t)))
                owner.setdefault(s.track_id, set()).add(c)
    return sorted(map(sorted, owner.values())) == [[0], [1], [2]]


def test_noisy_boxes_and_lost_detections_do_not_split_or_swap_tracks() -> None:
    cars = [
        lambda t: moving(0, 300, 240, 140, 350, t),
        lambda t: moving(700, 320, 200, 120, 150, t),
    ]
    assert iou(cars[0](3.4), cars[1](3.4)) > 0.6  # the overtake is a real test
    assert all(noisy_run(seed, loss=0.1, jitter_px=3.0) for seed in range(30))
    # At 20 % loss a car is sometimes missed 4 rounds running in the overtake (max_missed 3:
    # its track ends), and once the overtaken car's track then takes its box (IoU alone cannot
    # tell overlapping cars apart): measured 38 of these 40 runs clean (seeds 32 and 39 not).
    assert sum(noisy_run(seed, loss=0.2, jitter_px=3.0) for seed in range(40)) >= 36


def best_pairing(overlaps: list[list[float]], iou_min: float) -> tuple[int, float]:
    """By brute force: the most pairs at or above ``iou_min``, then the highest total IoU."""
    n, m = len(overlaps), len(overlaps[0])
    best = (0, 0.0)
    for k in range(min(n, m) + 1):
        for rows in itertools.combinations(range(n), k):
            for cols in itertools.permutations(range(m), k):
                os_ = [overlaps[r][c] for r, c in zip(rows, cols, strict=True)]
                if all(o >= iou_min for o in os_):
                    best = max(best, (k, sum(os_)), key=lambda b: (b[0], round(b[1], 9)))
    return best


boxes_st = st.tuples(
    st.integers(0, 300), st.integers(0, 300), st.integers(20, 120), st.integers(20, 120)
).map(lambda b: (float(b[0]), float(b[1]), float(b[0] + b[2]), float(b[1] + b[3])))


@settings(max_examples=40, deadline=None)
@given(st.lists(boxes_st, min_size=1, max_size=5), st.lists(boxes_st, min_size=1, max_size=5))
def test_pairing_by_groups_is_the_optimal_pairing(tracks: list[Box], dets: list[Box]) -> None:
    iou_min = TrackerParams().iou_min
    pairs = Tracker()._pair(tracks, dets)
    assert len(set(pairs.values())) == len(pairs)
    overlaps = [[iou(t, d) for d in dets] for t in tracks]
    assert all(overlaps[t][d] >= iou_min for t, d in pairs.items())
    n, total = best_pairing(overlaps, iou_min)
    assert len(pairs) == n
    assert sum(overlaps[t][d] for t, d in pairs.items()) == pytest.approx(total)


def test_a_receding_car_coasting_for_long_never_turns_inside_out() -> None:
    # Shrinking fast (a car pulling away), then lost: its prediction keeps a real box.
    tr = Tracker(TrackerParams(min_hits=1, max_missed=1000))
    for i in range(4):
        s = 40.0 * i
        tr.update(
            i * 0.2, [Detected((100.0 + s / 2, 100.0 + s / 2, 300.0 - s / 2, 200.0 - s / 4), 0.9)]
        )
    for k in range(1, 50):
        (state,) = tr.predict(0.6 + k * 0.2)
        x0, y0, x1, y1 = state.box
        assert x1 - x0 >= 0.25 * 80.0 - 1e-9
        assert y1 - y0 > 0
