"""A stand-in for MicroPython's ``machine`` module (Pin, UART, WDT) and ``time`` ticks, so the
Pico supervisor runs under CPython. Pins record every level they take; inputs are driven with
``drive()``, which fires a registered IRQ on the matching edge, like the RP2040 does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar


class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8

    registry: ClassVar[dict[int, Pin]] = {}
    external: ClassVar[dict[int, int]] = {}
    """Levels driven from outside the chip, by GP number (kept across re-creation)."""

    def __init__(
        self, id: int, mode: int = -1, pull: int = -1, *, value: int | None = None
    ) -> None:
        self.id = id
        self.mode = mode
        self.pull = pull
        self._v = 1 if pull == Pin.PULL_UP else 0
        if value is not None:
            self._v = int(bool(value))
        if mode == Pin.IN and id in Pin.external:
            self._v = Pin.external[id]
        self.history = [self._v]
        self._irq: tuple[int, Callable[[Pin], Any]] | None = None
        Pin.registry[id] = self

    @classmethod
    def reset(cls) -> None:
        cls.registry.clear()
        cls.external.clear()

    def value(self, v: int | bool | None = None) -> int | None:
        if v is None:
            return self._v
        if self.mode == Pin.IN:
            raise OSError(f"GP{self.id} is an input")
        self._set(int(bool(v)))
        return None

    def on(self) -> None:
        self.value(1)

    def off(self) -> None:
        self.value(0)

    def irq(
        self,
        handler: Callable[[Pin], Any] | None = None,
        trigger: int = IRQ_RISING,
        hard: bool = False,
    ) -> None:
        self._irq = (trigger, handler) if handler is not None else None

    def _set(self, v: int) -> None:
        if v != self._v:
            self._v = v
            self.history.append(v)

    def drive(self, v: int) -> None:
        """Test helper: something outside drives this input."""
        old = self._v
        Pin.external[self.id] = int(bool(v))
        self._set(int(bool(v)))
        if self._irq is not None and old != self._v:
            trigger, handler = self._irq
            rising = self._v and trigger & Pin.IRQ_RISING
            falling = not self._v and trigger & Pin.IRQ_FALLING
            if rising or falling:
                handler(self)


class UART:
    def __init__(
        self, id: int, baudrate: int = 9600, tx: Pin | None = None, rx: Pin | None = None, **kw: Any
    ) -> None:
        self.id = id
        self.baudrate = baudrate
        self.tx_pin = tx
        self.rx_pin = rx
        self.rx = bytearray()
        self.tx = bytearray()

    def any(self) -> int:
        return len(self.rx)

    def read(self, n: int | None = None) -> bytes | None:
        if not self.rx:
            return None
        n = len(self.rx) if n is None else n
        data = bytes(self.rx[:n])
        del self.rx[:n]
        return data

    def write(self, data: bytes) -> int:
        self.tx += data
        return len(data)

    def take_lines(self) -> list[bytes]:
        lines = [ln + b"\n" for ln in bytes(self.tx).split(b"\n") if ln]
        self.tx.clear()
        return lines


class WDT:
    def __init__(self, id: int = 0, timeout: int = 5000) -> None:
        self.timeout = timeout
        self.feeds = 0

    def feed(self) -> None:
        self.feeds += 1


class FakeTime:
    """MicroPython's tick functions on a hand-moved clock."""

    def __init__(self) -> None:
        self.us = 1_000_000

    def ticks_ms(self) -> int:
        return self.us // 1000

    def ticks_us(self) -> int:
        return self.us

    @staticmethod
    def ticks_diff(a: int, b: int) -> int:
        return a - b

    def sleep_us(self, n: int) -> None:
        self.us += n

    def sleep_ms(self, n: int) -> None:
        self.us += n * 1000

    def advance_s(self, s: float) -> None:
        self.us += int(s * 1e6)
