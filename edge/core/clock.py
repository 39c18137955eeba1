"""Time as a port: read it, wait on it, schedule on it (gpiozero's ``ticks`` idea, one seam).

Everything in the unit that depends on time passing (LED patterns, the buzzer, a mute, the
ignition shutdown delay, heartbeats) asks a :class:`Clock` instead of ``time``,
``threading.Timer`` or ``Event.wait(timeout)``, so a test can step time instead of sleeping:

- :class:`SystemClock` is the real one: ``time.monotonic()`` / ``time.time()``, and callbacks
  run by a :class:`Scheduler` on one daemon thread, in deadline order.
- :class:`ManualClock` stands still until ``advance(s)``, which runs every callback that falls
  due on the way, in deadline order, on the calling thread (so when ``advance`` returns,
  what it fired has happened), and wakes threads blocked in ``wait``.

Monotonic time is for intervals; ``wall()`` (seconds since the Unix epoch) only for payloads.
Callbacks should be short: one that blocks holds back every later one on the same clock.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

log = logging.getLogger(__name__)


class Scheduled:
    """A callback due at ``deadline_s`` on its clock's monotonic time; ``cancel()`` it."""

    __slots__ = ("_callback", "_lock", "_state", "deadline_s", "seq")

    def __init__(self, deadline_s: float, seq: int, callback: Callable[[], None]) -> None:
        self.deadline_s = deadline_s
        self.seq = seq
        self._callback = callback
        self._lock = threading.Lock()
        self._state = "pending"  # -> "running" -> "done", or -> "cancelled"

    def cancel(self) -> bool:
        """Stop it running; True when it had not started yet (so it never will)."""
        with self._lock:
            if self._state != "pending":
                return False
            self._state = "cancelled"
            return True

    @property
    def is_pending(self) -> bool:
        return self._state == "pending"

    def _run(self) -> None:
        with self._lock:
            if self._state != "pending":
                return
            self._state = "running"
        try:
            self._callback()
        except Exception:  # a failing callback must not stop the ones after it
            log.exception("scheduled callback %r failed", self._callback)
        finally:
            self._state = "done"

    def __lt__(self, other: Scheduled) -> bool:
        return (self.deadline_s, self.seq) < (other.deadline_s, other.seq)

    def __repr__(self) -> str:
        return f"Scheduled(deadline_s={self.deadline_s:.3f}, {self._state})"


@runtime_checkable
class Clock(Protocol):
    """Monotonic and wall time, waiting and scheduling on the same time."""

    def monotonic(self) -> float: ...
    def wall(self) -> float: ...

    def wait(self, event: threading.Event, timeout_s: float | None = None) -> bool:
        """Until ``event`` is set or ``timeout_s`` passes on this clock; ``event.is_set()``."""
        ...

    def call_at(self, deadline_s: float, callback: Callable[[], None]) -> Scheduled:
        """Run ``callback`` once ``monotonic()`` reaches ``deadline_s``."""
        ...

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Scheduled:
        """Run ``callback`` ``delay_s`` seconds from now."""
        ...


class Scheduler:
    """Runs callbacks at deadlines on ``now()``'s time, on one daemon thread started on first
    use. Same deadline: the one scheduled first runs first."""

    def __init__(
        self, now: Callable[[], float] = time.monotonic, *, name: str = "clock-scheduler"
    ) -> None:
        self._now = now
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[Scheduled] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def call_at(self, deadline_s: float, callback: Callable[[], None]) -> Scheduled:
        with self._cond:
            if self._closed:
                raise RuntimeError("scheduler is closed")
            entry = Scheduled(deadline_s, next(self._seq), callback)
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify()
        return entry

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    while self._heap and not self._heap[0].is_pending:
                        heapq.heappop(self._heap)  # cancelled
                    if self._heap:
                        wait_s = self._heap[0].deadline_s - self._now()
                        if wait_s <= 0:
                            entry = heapq.heappop(self._heap)
                            break
                        self._cond.wait(wait_s)
                    else:
                        self._cond.wait()
            entry._run()  # outside the lock: a callback may schedule more

    def close(self) -> None:
        """Drop what is pending and stop the thread (after a callback that is running)."""
        with self._cond:
            self._closed = True
            for entry in self._heap:
                entry.cancel()
            self._heap.clear()
            self._cond.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)


class SystemClock:
    """The real clock. Callbacks run on one shared scheduler thread (started on first use)."""

    _shared: Scheduler | None = None
    _shared_lock = threading.Lock()

    def __init__(self, scheduler: Scheduler | None = None) -> None:
        self._scheduler = scheduler

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def wait(self, event: threading.Event, timeout_s: float | None = None) -> bool:
        return event.wait(timeout_s)

    def call_at(self, deadline_s: float, callback: Callable[[], None]) -> Scheduled:
        return self._get_scheduler().call_at(deadline_s, callback)

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Scheduled:
        return self.call_at(time.monotonic() + delay_s, callback)

    def _get_scheduler(self) -> Scheduler:
        if self._scheduler is None:
            with SystemClock._shared_lock:
                if SystemClock._shared is None:
                    SystemClock._shared = Scheduler(time.monotonic)
                self._scheduler = SystemClock._shared
        return self._scheduler


class ManualClock:
    """A clock for tests: time moves only in :meth:`advance` (or :meth:`set`).

    ``advance(s)`` runs the callbacks that fall due, in deadline order, each with
    ``monotonic()`` reading its own deadline, on the calling thread; callbacks they schedule
    inside the step run in the same call. Threads in :meth:`wait` see the new time at once
    (a ``set()`` of their event is seen within a few milliseconds).
    """

    def __init__(self, t_s: float = 1000.0, *, wall_offset_s: float = 1.7e9) -> None:
        self._t_s = t_s
        self._wall_offset_s = wall_offset_s
        self._cond = threading.Condition()
        self._heap: list[Scheduled] = []
        self._seq = itertools.count()
        self._advancing = threading.RLock()  # one advance at a time (a callback may nest one)

    def monotonic(self) -> float:
        return self._t_s

    def wall(self) -> float:
        return self._wall_offset_s + self._t_s

    def wait(self, event: threading.Event, timeout_s: float | None = None) -> bool:
        if timeout_s is None:
            return event.wait()
        with self._cond:
            deadline_s = self._t_s + timeout_s
            while not event.is_set() and self._t_s < deadline_s:
                self._cond.wait(0.005)  # advance() notifies; the slice notices event.set()
        return event.is_set()

    def call_at(self, deadline_s: float, callback: Callable[[], None]) -> Scheduled:
        with self._cond:
            entry = Scheduled(deadline_s, next(self._seq), callback)
            heapq.heappush(self._heap, entry)
        return entry

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Scheduled:
        return self.call_at(self._t_s + delay_s, callback)

    def pending(self) -> list[Scheduled]:
        """What is scheduled and not cancelled, earliest first."""
        with self._cond:
            return sorted(e for e in self._heap if e.is_pending)

    def next_deadline(self) -> float | None:
        due = self.pending()
        return due[0].deadline_s if due else None

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self.set(self._t_s + seconds)

    def set(self, t_s: float) -> None:
        """Move time forward to ``t_s``, firing everything due on the way."""
        with self._advancing:
            if t_s < self._t_s:
                raise ValueError("time does not go backwards")
            while True:
                with self._cond:
                    while self._heap and not self._heap[0].is_pending:
                        heapq.heappop(self._heap)
                    if not self._heap or self._heap[0].deadline_s > t_s:
                        break
                    entry = heapq.heappop(self._heap)
                    self._t_s = max(self._t_s, entry.deadline_s)
                    self._cond.notify_all()
                entry._run()
            with self._cond:
                self._t_s = t_s
                self._cond.notify_all()
