"""The clock seam: the manual clock steps time deterministically, the system one really waits."""

from __future__ import annotations

import threading

import pytest

from edge.core import ports
from edge.core.clock import Clock, ManualClock, Scheduler, SystemClock
from tests.waiting import wait_until


def test_both_clocks_are_clocks_and_ports_still_names_them() -> None:
    assert isinstance(SystemClock(), Clock)
    assert isinstance(ManualClock(), Clock)
    assert ports.Clock is Clock
    assert ports.SystemClock is SystemClock


def test_manual_time_moves_only_when_advanced() -> None:
    clock = ManualClock(100.0, wall_offset_s=1.7e9)
    assert clock.monotonic() == 100.0
    assert clock.wall() == 1.7e9 + 100.0
    clock.advance(2.5)
    assert clock.monotonic() == 102.5
    with pytest.raises(ValueError, match="time does not go backwards"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="time does not go backwards"):
        clock.set(50.0)


def test_advance_fires_what_is_due_in_deadline_order_and_nothing_else() -> None:
    clock = ManualClock(0.0)
    fired: list[tuple[str, float]] = []

    def note(name: str) -> None:
        fired.append((name, clock.monotonic()))

    clock.call_later(3.0, lambda: note("c"))
    clock.call_later(1.0, lambda: note("a"))
    clock.call_at(2.0, lambda: note("b1"))
    clock.call_at(2.0, lambda: note("b2"))  # same deadline: scheduled later, runs later
    clock.advance(0.5)
    assert fired == []
    clock.advance(1.5)
    # each callback sees its own deadline as "now"
    assert fired == [("a", 1.0), ("b1", 2.0), ("b2", 2.0)]
    assert clock.monotonic() == 2.0
    clock.advance(10.0)
    assert fired[-1] == ("c", 3.0)
    assert clock.monotonic() == 12.0
    assert clock.pending() == []
    assert clock.next_deadline() is None


def test_callbacks_may_schedule_more_inside_the_same_step() -> None:
    clock = ManualClock(0.0)
    ticks: list[float] = []

    def tick() -> None:
        ticks.append(clock.monotonic())
        if len(ticks) < 10:
            clock.call_later(0.25, tick)

    clock.call_later(0.25, tick)
    clock.advance(1.0)
    assert ticks == [0.25, 0.5, 0.75, 1.0]
    clock.advance(10.0)
    assert len(ticks) == 10
    assert ticks[-1] == 2.5


def test_cancel_stops_a_callback_that_has_not_run() -> None:
    clock = ManualClock(0.0)
    fired: list[str] = []
    keep = clock.call_later(1.0, lambda: fired.append("keep"))
    drop = clock.call_later(1.0, lambda: fired.append("drop"))
    assert drop.cancel() is True
    assert drop.cancel() is False  # only once
    assert clock.pending() == [keep]
    clock.advance(1.0)
    assert fired == ["keep"]
    assert keep.cancel() is False  # already ran


def test_a_failing_callback_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(0.0)
    fired: list[int] = []

    def boom() -> None:
        raise RuntimeError("boom")

    clock.call_later(1.0, boom)
    clock.call_later(2.0, lambda: fired.append(2))
    clock.advance(3.0)
    assert fired == [2]
    assert "boom" in caplog.text


def test_manual_wait_returns_when_time_passes_or_the_event_is_set() -> None:
    clock = ManualClock(0.0)
    event = threading.Event()
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(clock.wait(event, 5.0)))
    waiter.start()
    clock.advance(4.9)
    waiter.join(0.05)
    assert waiter.is_alive()  # 4.9 s of clock time is not 5
    clock.advance(0.1)
    waiter.join(5)
    assert results == [False]

    waiter = threading.Thread(target=lambda: results.append(clock.wait(event, 5.0)))
    waiter.start()
    event.set()
    waiter.join(5)
    assert results == [False, True]
    assert clock.monotonic() == 5.0


def test_system_scheduler_runs_callbacks_in_deadline_order() -> None:
    scheduler = Scheduler()
    clock = SystemClock(scheduler)
    fired: list[str] = []
    try:
        now = clock.monotonic()
        clock.call_at(now + 0.06, lambda: fired.append("late"))
        clock.call_at(now + 0.03, lambda: fired.append("early"))
        dropped = clock.call_later(0.01, lambda: fired.append("cancelled"))
        assert dropped.cancel()
        assert wait_until(lambda: len(fired) == 2, timeout_s=5)
        assert fired == ["early", "late"]
    finally:
        scheduler.close()
    with pytest.raises(RuntimeError):
        scheduler.call_at(0.0, lambda: None)


def test_system_wait_is_the_event_wait() -> None:
    event = threading.Event()
    event.set()
    assert SystemClock().wait(event, 0.0) is True
    assert SystemClock().wait(threading.Event(), 0.0) is False
