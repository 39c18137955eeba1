"""Rejoining a lost vehicle's pass (edge/core/rejoin.py): where, how big, which way, what
colour, for how long; and never a vehicle that left the frame."""

from __future__ import annotations

import pytest

from edge.core.rejoin import PassMemory, RejoinError, RejoinParams, Sighting

FRAME = (1280, 720)
RED = (40.0, 40.0, 170.0)
WHITE = (220.0, 220.0, 222.0)
# A far car in the lane to our left, last seen at t = 5 s, closing slowly (growing, drifting left).
LAST = Sighting((540.0, 300.0, 584.0, 329.0), 5.0, (-12.0, -1.0, -8.0, 1.0), -1, RED)


def memory() -> PassMemory:
    m = PassMemory(frame_wh=FRAME)
    assert m.hold(7, LAST, 5.8, LAST.box)
    return m


def test_found_again_grown_and_drifted_after_four_seconds_it_continues_its_pass() -> None:
    # (the patrol scene's vehicle 1: 44 -> 79 px wide, its centre 47 px left, 4.6 s later)
    again = Sighting((486.0, 295.0, 565.0, 338.0), 9.6, heading_x=0, colour=(45.0, 38.0, 160.0))
    m = memory()
    assert m.claim(again) == 7
    assert 7 not in m  # claimed once
    assert m.claim(again) is None


@pytest.mark.parametrize(
    "other",
    [
        Sighting((486.0, 295.0, 565.0, 338.0), 9.6, colour=WHITE),  # another colour
        Sighting((440.0, 270.0, 640.0, 400.0), 9.6, colour=RED),  # far too big for 4.6 s
        Sighting((900.0, 295.0, 979.0, 338.0), 9.6, colour=RED),  # far off where it can be
        Sighting((486.0, 295.0, 565.0, 338.0), 9.6, heading_x=1, colour=RED),  # the other way
    ],
)
def test_a_different_vehicle_in_about_that_place_is_not_taken_for_it(other: Sighting) -> None:
    assert memory().claim(other) is None


def test_a_held_pass_is_over_after_hold_s() -> None:
    m = memory()
    assert m.expire(10.7) == []
    assert m.expire(10.8) == [7]
    assert m.claim(Sighting(LAST.box, 10.9, colour=RED)) is None


def test_a_short_gap_rejoins_on_overlap_with_the_moved_box() -> None:
    moved = LAST.moved(0.8)
    assert memory().claim(Sighting(moved, 5.8, colour=RED)) == 7


def test_a_vehicle_that_left_the_frame_is_not_held() -> None:
    m = PassMemory(frame_wh=FRAME)
    gone = (-120.0, 300.0, 40.0, 500.0)  # mostly past the left edge
    assert not m.hold(3, Sighting((0.0, 300.0, 160.0, 500.0), 1.0), 1.8, gone)
    assert len(m) == 0


def test_the_nearest_held_pass_wins() -> None:
    m = memory()
    other = Sighting((560.0, 300.0, 604.0, 329.0), 6.4, colour=RED)  # a second, nearer, car
    assert m.hold(8, other, 6.6, other.box)
    new = Sighting((558.0, 300.0, 603.0, 329.0), 7.0, colour=RED)
    d7, d8 = m.distance(LAST, new), m.distance(other, new)
    assert d7 is not None  # both fit ...
    assert d8 is not None
    assert d8 < d7  # ... 8 better
    assert m.claim(new) == 8
    assert m.drop_all() == [7]


def test_bad_settings_and_sightings_are_refused() -> None:
    with pytest.raises(RejoinError, match="hold_s"):
        RejoinParams(hold_s=-1.0)
    with pytest.raises(RejoinError, match="iou_min"):
        RejoinParams(iou_min=0.0)
    with pytest.raises(RejoinError, match="colour_max"):
        RejoinParams(colour_max=float("nan"))
    with pytest.raises(RejoinError, match="x1 > x0"):
        Sighting((10.0, 0.0, 5.0, 10.0), 0.0)
    with pytest.raises(RejoinError, match="finite"):
        Sighting((0.0, 0.0, 5.0, 10.0), float("nan"))


# A van in the fast lane pulling away on our right: it shrinks and slides towards the middle.
RECEDING = Sighting((746.0, 277.0, 909.0, 351.0), 18.0, (-40.0, 2.0, -70.0, -2.0), -1, WHITE)
# Four seconds later, a similar van on the LEFT of the middle column (the slow lane).
OTHER_SIDE = Sighting((525.0, 292.0, 581.0, 338.0), 22.0, heading_x=-1, colour=WHITE)


def test_a_dash_camera_vehicle_does_not_cross_the_straight_ahead_column() -> None:
    free = PassMemory(RejoinParams(extrapolate_max_s=4.0), frame_wh=FRAME)
    dash = PassMemory(RejoinParams(extrapolate_max_s=4.0), frame_wh=FRAME, axis_px=640.0)
    for m in (free, dash):
        assert m.hold(15, RECEDING, 18.8, RECEDING.box)
    assert free.claim(OTHER_SIDE) == 15  # image motion carried on for 4 s would allow it
    assert dash.claim(OTHER_SIDE) is None


def test_the_last_velocity_is_carried_on_for_a_second_only() -> None:
    # A car sliding across the view at 150 px/s, lost for 4 s: found where 4 s of that motion
    # would put it (600 px on), it is not taken for the same car; 1 s of it is carried on.
    sliding = Sighting((746.0, 277.0, 909.0, 351.0), 18.0, (-150.0, 0.0, -150.0, 0.0), -1, WHITE)
    there = Sighting(sliding.moved(4.0), 22.0, heading_x=-1, colour=WHITE)
    far_carry = PassMemory(RejoinParams(extrapolate_max_s=4.0), frame_wh=FRAME)
    default = PassMemory(frame_wh=FRAME)
    for m in (far_carry, default):
        assert m.hold(15, sliding, 18.8, sliding.box)
    assert far_carry.claim(there) == 15
    assert default.claim(there) is None
