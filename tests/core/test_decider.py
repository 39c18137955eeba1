from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.core.decider import Decider, DeciderParams, Hit, RoiDecider


def feed(
    d: RoiDecider[int], scores: list[float], *, t0: float = 0.0, dt: float = 0.1
) -> list[Hit[int]]:
    hits = []
    for i, s in enumerate(scores):
        h = d.update(s, t0 + i * dt, i)
        if h is not None:
            hits.append(h)
    return hits


P = DeciderParams(window=5, min_frames=3, score_on=0.7, score_off=0.3, cooldown_s=5.0)


def test_needs_min_frames_of_window() -> None:
    d = RoiDecider[int]("lane1", P)
    assert feed(d, [0.9, 0.1, 0.9, 0.1, 0.1, 0.1]) == []
    d = RoiDecider[int]("lane1", P)
    hits = feed(d, [0.9, 0.1, 0.8, 0.95, 0.2])
    assert len(hits) == 1
    h = hits[0]
    assert h.roi_id == "lane1"
    assert h.frames_over == 3
    assert h.window == 5
    assert h.score == 0.95
    assert h.best == 3  # the best frame travels with the hit
    assert h.t_mono_s == pytest.approx(0.3)


def test_one_driver_holding_a_phone_gives_one_alert() -> None:
    d = RoiDecider[int]("lane1", P)
    assert len(feed(d, [0.9] * 200)) == 1  # 20 s of phone, cooldown 5 s: latched, no repeat


def test_hysteresis_scores_between_off_and_on_keep_it_latched() -> None:
    d = RoiDecider[int](
        "r", DeciderParams(window=3, min_frames=2, score_on=0.7, score_off=0.3, cooldown_s=0.0)
    )
    scores = [0.9, 0.9] + [0.5] * 20 + [0.9, 0.9]
    assert len(feed(d, scores)) == 1  # 0.5 never drops below score_off: same driver
    d = RoiDecider[int](
        "r", DeciderParams(window=3, min_frames=2, score_on=0.7, score_off=0.3, cooldown_s=0.0)
    )
    scores = [0.9, 0.9] + [0.1] * 3 + [0.9, 0.9]
    assert len(feed(d, scores)) == 2  # phone down for a full window, then up again


def test_cooldown_blocks_a_second_hit_too_soon() -> None:
    params = DeciderParams(window=2, min_frames=2, score_on=0.7, score_off=0.3, cooldown_s=5.0)
    d = RoiDecider[int]("r", params)
    scores = [0.9, 0.9, 0.1, 0.1, 0.9, 0.9]  # re-armed after 0.4 s but cooldown is 5 s
    assert len(feed(d, scores, dt=0.1)) == 1
    d = RoiDecider[int]("r", params)
    assert len(feed(d, scores, dt=2.0)) == 2  # 8 s later: allowed


def test_rois_are_independent() -> None:
    d: Decider[int] = Decider(["a", "b"], P)
    hits = []
    for i in range(5):
        hits += d.update({"a": 0.9, "b": 0.1}, i * 0.1, {"a": i, "b": i})
    assert [h.roi_id for h in hits] == ["a"]
    assert d["a"].is_latched
    assert not d["b"].is_latched


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (dict(window=0), "window must be"),
        (dict(min_frames=6), "min_frames must be within"),
        (dict(score_on=0.2, score_off=0.5), "score_off <= score_on"),
        (dict(cooldown_s=-1), "cooldown_s must be"),
    ],
)
def test_params_validated(bad: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DeciderParams(**{**dict(window=5, min_frames=3), **bad})


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), max_size=120), st.integers(1, 8), st.data())
def test_never_hits_without_enough_frames_over_threshold(
    scores: list[float], window: int, data: st.DataObject
) -> None:
    min_frames = data.draw(st.integers(1, window))
    p = DeciderParams(
        window=window, min_frames=min_frames, score_on=0.6, score_off=0.3, cooldown_s=1.0
    )
    d = RoiDecider[int]("r", p)
    last_hit_t = None
    for i, s in enumerate(scores):
        t = i * 0.1
        h = d.update(s, t, i)
        if h is not None:
            recent = scores[max(0, i - window + 1) : i + 1]
            assert sum(x >= 0.6 for x in recent) >= min_frames
            assert h.score == max(recent)
            assert last_hit_t is None or t - last_hit_t >= 1.0
            last_hit_t = t
