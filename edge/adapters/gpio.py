"""Field I/O on the Pi's GPIO header with gpiozero: status LED, buzzer, mute/mark button, ignition.

Pins come from the one pin map (``hardware/pinmap.toml``); the pin factory is injected like
gpiozero's own devices (``pin_factory=``), so tests drive it with gpiozero's ``MockFactory``.

- ``set_status(state)`` plays the LED pattern of that state until the next state.
- ``on_hit(roi_id)``: in patrol mode, unless muted, beep the buzzer and flash the LED, then the
  status pattern resumes.
- The button: a short press mutes the hit signals for ``mute_s`` (or unmutes when muted); a long
  press (``long_press_s``) marks "officer saw it", which ``take_mark()`` hands out once.
- Ignition: when the (Pico-debounced) ignition line has been off for ``shutdown_delay_s``,
  ``on_shutdown_request()`` is called once; the ignition coming back first cancels it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from gpiozero import LED, BadPinFactory, Button, Buzzer, DigitalInputDevice, GPIOZeroError

from edge.adapters.gpio_config import GpioConfig, PinMap
from edge.core.errors import GpioError
from edge.core.ports import Clock, Scheduled, SystemClock

log = logging.getLogger(__name__)

STATUSES = ("starting", "running", "degraded", "no_gps", "broker_offline")

LED_PATTERNS: dict[str, tuple[float, ...]] = {
    # Alternating on / off durations (s), starting with "on", repeated; () = steady on.
    "starting": (0.5, 0.5),  # slow even blink
    "running": (),  # steady on
    "degraded": (0.1, 0.1),  # fast blink
    "no_gps": (0.1, 0.2, 0.1, 1.2),  # double blink
    "broker_offline": (0.1, 0.2, 0.1, 0.2, 0.1, 1.2),  # triple blink
}
MARK_ACK_FLASHES = 2
"""The LED flashes twice when a long press has marked the next alert."""


class FieldIo:
    """The unit's lights, buzzer, button and ignition sense. Thread-safe; ``close()`` idempotent."""

    def __init__(
        self,
        pin_map: PinMap,
        cfg: GpioConfig,
        *,
        mode: str,
        pin_factory: Any = None,
        clock: Clock | None = None,
    ) -> None:
        if mode not in ("junction", "patrol"):
            raise ValueError(f"mode must be 'junction' or 'patrol', not {mode!r}")
        self._cfg = cfg
        self._mode = mode
        self._clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._status = "starting"
        self._flash_pending = 0
        self._muted_until = 0.0
        self._mark = False
        self._held = False
        # The LED and the buzzer play "steps" (value, seconds) scheduled on the clock; a new
        # sequence bumps the generation so a step already due from the old one does nothing.
        self._led_steps: Sequence[tuple[bool, float | None]] = ()
        self._led_i = 0
        self._led_is_flashing = False
        self._led_gen = 0
        self._led_next: Scheduled | None = None
        self._beeps_left = 0
        self._beep_gen = 0
        self._beep_next: Scheduled | None = None
        self._shutdown_timer: Scheduled | None = None
        self._shutdown_requested = False
        self._closed = False
        self._on_shutdown_request: Callable[[], None] | None = None
        self._shutdown_pending = False
        self._devices: list[Any] = []

        source = str(cfg.pin_map) if cfg.pin_map else "hardware/pinmap.toml"
        try:
            sig, end = pin_map.pi_signal("status_led", source=source)
            self._led = LED(
                end.gpio, active_high=sig.active_high, initial_value=False, pin_factory=pin_factory
            )
            self._devices.append(self._led)
            self._buzzer: Buzzer | None = None
            if cfg.buzzer:
                sig, end = pin_map.pi_signal("buzzer", source=source)
                self._buzzer = Buzzer(
                    end.gpio,
                    active_high=sig.active_high,
                    initial_value=False,
                    pin_factory=pin_factory,
                )
                self._devices.append(self._buzzer)
            sig, end = pin_map.pi_signal("button", source=source)
            self._button = Button(
                end.gpio,
                **_input_kwargs(sig.pull, sig.active_high),
                bounce_time=cfg.bounce_s or None,
                hold_time=cfg.long_press_s,
                pin_factory=pin_factory,
            )
            self._devices.append(self._button)
            self._ignition: DigitalInputDevice | None = None
            if cfg.ignition_sense:
                sig, end = pin_map.pi_signal("ignition", source=source)
                self._ignition = DigitalInputDevice(
                    end.gpio, **_input_kwargs(sig.pull, sig.active_high), pin_factory=pin_factory
                )
                self._devices.append(self._ignition)
        except GPIOZeroError as e:
            self._close_devices()
            hint = ""
            if isinstance(e, BadPinFactory):
                hint = " (not on a Pi? leave [gpio] out, or set GPIOZERO_PIN_FACTORY=mock)"
            raise GpioError(f"GPIO: cannot claim the unit's pins ({source}): {e}{hint}") from e
        except Exception:
            self._close_devices()
            raise

        self._button.when_pressed = self._on_pressed
        self._button.when_held = self._on_held
        self._button.when_released = self._on_released
        if self._ignition is not None:
            self._ignition.when_activated = self._on_ignition_on
            self._ignition.when_deactivated = self._on_ignition_off
            if not self._ignition.is_active:
                log.warning(
                    "ignition is off at start; shutting down in %.0f s unless it comes on",
                    cfg.shutdown_delay_s,
                )
                self._on_ignition_off()
        with self._lock:
            self._play_led()

    @classmethod
    def from_config(
        cls, cfg: GpioConfig, *, mode: str, pin_factory: Any = None, clock: Clock | None = None
    ) -> FieldIo:
        return cls(cfg.load_pin_map(), cfg, mode=mode, pin_factory=pin_factory, clock=clock)

    # -- status LED -------------------------------------------------------------------------

    @property
    def status(self) -> str:
        return self._status

    def set_status(self, state: str) -> None:
        if state not in LED_PATTERNS:
            raise ValueError(f"unknown status {state!r}; one of {', '.join(STATUSES)}")
        with self._lock:
            if state == self._status:
                return
            log.info("status %s -> %s", self._status, state)
            self._status = state
            if not self._led_is_flashing:  # a flash plays to its end, then the new pattern
                self._play_led()

    def _flash(self, n: int) -> None:
        if n <= 0:
            return
        with self._lock:
            self._flash_pending = max(self._flash_pending, n)
            if not self._led_is_flashing:
                self._play_led()

    def _play_led(self) -> None:
        """Start what the LED shows now (lock held): pending flashes, else the status pattern."""
        if self._closed:
            return
        self._led_gen += 1
        if self._led_next is not None:
            self._led_next.cancel()
            self._led_next = None
        if self._flash_pending:
            # A hit or a mark: off, then n flashes; played to the end (it is short).
            f = self._cfg.hit_flash_s
            n, self._flash_pending = self._flash_pending, 0
            self._led_steps = [(False, f)] + [(True, f), (False, f)] * n
            self._led_is_flashing = True
        else:
            pattern = LED_PATTERNS[self._status]
            scale = self._cfg.pattern_scale
            self._led_steps = (
                [(i % 2 == 0, d * scale) for i, d in enumerate(pattern)]
                if pattern
                else [(True, None)]
            )  # None: hold (steady on)
            self._led_is_flashing = False
        self._led_i = 0
        self._led_step(self._led_gen)

    def _led_step(self, gen: int) -> None:
        with self._lock:
            if gen != self._led_gen or self._closed:
                return  # superseded by a newer sequence
            if self._led_i == len(self._led_steps):
                if self._led_is_flashing:
                    self._play_led()  # the pattern resumes (or the next flashes play)
                    return
                self._led_i = 0  # patterns repeat
            value, duration_s = self._led_steps[self._led_i]
            self._led_i += 1
            try:
                self._led.value = 1 if value else 0
            except GPIOZeroError as e:  # closed under us during shutdown
                log.debug("status LED: %s", e)
                return
            if duration_s is not None:
                self._led_next = self._clock.call_later(duration_s, lambda: self._led_step(gen))

    # -- hits, mute and mark ----------------------------------------------------------------

    def on_hit(self, roi_id: str) -> None:
        if self._mode != "patrol" or self._closed:
            return
        if self.is_muted:
            log.debug("hit in %s: signals muted", roi_id)
            return
        if self._buzzer is not None:
            with self._lock:
                self._beep_gen += 1
                self._beeps_left = self._cfg.hit_beeps
                self._beep_step(self._beep_gen, on=True)
        self._flash(self._cfg.hit_flashes)

    def _beep_step(self, gen: int, *, on: bool) -> None:
        """``hit_beeps`` beeps of ``hit_beep_s`` on, ``hit_beep_s`` off, on the clock."""
        with self._lock:
            if gen != self._beep_gen or self._closed or self._buzzer is None:
                return
            if self._beep_next is not None:
                self._beep_next.cancel()
                self._beep_next = None
            if on and self._beeps_left <= 0:
                return
            try:
                if on:
                    self._beeps_left -= 1
                    self._buzzer.on()
                else:
                    self._buzzer.off()
            except GPIOZeroError as e:  # closed under us during shutdown
                log.debug("buzzer: %s", e)
                return
            self._beep_next = self._clock.call_later(
                self._cfg.hit_beep_s, lambda: self._beep_step(gen, on=not on)
            )

    def _stop_beeping(self) -> None:
        with self._lock:
            self._beep_gen += 1
            self._beeps_left = 0
            if self._beep_next is not None:
                self._beep_next.cancel()
                self._beep_next = None

    def mute(self, duration_s: float) -> None:
        """Silence hit signals for ``duration_s`` seconds; 0 (or less) unmutes."""
        with self._lock:
            if duration_s <= 0:
                self._muted_until = 0.0
            else:
                self._muted_until = self._clock.monotonic() + duration_s
        if duration_s > 0 and self._buzzer is not None and not self._closed:
            self._stop_beeping()
            try:
                self._buzzer.off()
            except GPIOZeroError as e:
                log.debug("buzzer: %s", e)
        log.info("hit signals %s", f"muted for {duration_s:.0f} s" if duration_s > 0 else "on")

    @property
    def is_muted(self) -> bool:
        return self._clock.monotonic() < self._muted_until

    def take_mark(self) -> bool:
        """True once after a long press: "officer saw it" goes with the next alert."""
        with self._lock:
            mark, self._mark = self._mark, False
        return mark

    def _on_pressed(self) -> None:
        with self._lock:
            self._held = False

    def _on_held(self) -> None:
        with self._lock:
            self._held = True
            self._mark = True
        log.info("button held: the next alert is marked 'officer saw it'")
        self._flash(MARK_ACK_FLASHES)

    def _on_released(self) -> None:
        with self._lock:
            was_held = self._held
            self._held = False
        if was_held:
            return
        self.mute(0.0 if self.is_muted else self._cfg.mute_s)

    # -- ignition ---------------------------------------------------------------------------

    @property
    def on_shutdown_request(self) -> Callable[[], None] | None:
        """Called once when the ignition has been off for ``shutdown_delay_s``. A request that
        came before a handler was set is delivered when one is set."""
        return self._on_shutdown_request

    @on_shutdown_request.setter
    def on_shutdown_request(self, callback: Callable[[], None] | None) -> None:
        with self._lock:
            self._on_shutdown_request = callback
            deliver = callback is not None and self._shutdown_pending
            if deliver:
                self._shutdown_pending = False
        if deliver and callback is not None:
            callback()

    @property
    def ignition_on(self) -> bool | None:
        if self._ignition is None or self._closed:
            return None
        return bool(self._ignition.is_active)

    def _on_ignition_off(self) -> None:
        with self._lock:
            if self._closed or self._shutdown_timer is not None or self._shutdown_requested:
                return
            self._shutdown_timer = self._clock.call_later(
                self._cfg.shutdown_delay_s, self._ignition_timeout
            )
        log.info(
            "ignition off: clean shutdown in %.0f s unless it comes back",
            self._cfg.shutdown_delay_s,
        )

    def _on_ignition_on(self) -> None:
        with self._lock:
            timer, self._shutdown_timer = self._shutdown_timer, None
        if timer is not None:
            timer.cancel()
            log.info("ignition back on: shutdown cancelled")

    def _ignition_timeout(self) -> None:
        with self._lock:
            self._shutdown_timer = None
            if self._closed or self._shutdown_requested:
                return
            if self._ignition is not None and self._ignition.is_active:
                return
            self._shutdown_requested = True
            callback = self._on_shutdown_request
            if callback is None:
                self._shutdown_pending = True  # delivered when a handler is set
        log.warning(
            "ignition off for %.0f s: requesting a clean shutdown", self._cfg.shutdown_delay_s
        )
        if callback is not None:
            callback()

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            timer, self._shutdown_timer = self._shutdown_timer, None
            for step in (self._led_next, self._beep_next):
                if step is not None:
                    step.cancel()
            self._led_next = self._beep_next = None
            self._led_gen += 1
            self._beep_gen += 1
            if timer is not None:
                timer.cancel()
            try:
                self._led.off()
                if self._buzzer is not None:
                    self._buzzer.off()
            except GPIOZeroError as e:  # pragma: no cover - hardware-specific
                log.debug("switching off: %s", e)
        self._close_devices()

    def _close_devices(self) -> None:
        for dev in reversed(self._devices):
            try:
                dev.close()
            except GPIOZeroError as e:  # pragma: no cover - hardware-specific
                log.warning("closing %s: %s", dev, e)
        self._devices.clear()

    def __enter__(self) -> FieldIo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _input_kwargs(pull: str, active_high: bool) -> dict[str, Any]:
    """gpiozero's input arguments for a pin-map pull / polarity."""
    if pull == "up":
        return {"pull_up": True}
    if pull == "down":
        return {"pull_up": False}
    return {"pull_up": None, "active_state": active_high}
