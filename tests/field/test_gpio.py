"""FieldIo against gpiozero's MockFactory: the actual pin state sequences, pins from the pin map."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from gpiozero import GPIOZeroError
from gpiozero.pins.mock import MockFactory, MockPin

from edge.adapters.gpio import LED_PATTERNS, MARK_ACK_FLASHES, FieldIo
from edge.adapters.gpio_config import GpioConfig, load_pin_map
from edge.core.errors import ConfigError, GpioError, PhonewatchError
from tests.waiting import wait_until

from .conftest import ManualClock

PIN_MAP = load_pin_map()


def _pi_gpio(signal: str) -> int:
    pi = PIN_MAP.signals[signal].pi
    assert pi is not None, f"{signal} has no Pi end in the pin map"
    return pi.gpio


LED_PIN = _pi_gpio("status_led")
BUZZER_PIN = _pi_gpio("buzzer")
BUTTON_PIN = _pi_gpio("button")
IGNITION_PIN = _pi_gpio("ignition")

FAST = {
    "pattern_scale": 0.2,
    "hit_flash_s": 0.03,
    "hit_beep_s": 0.03,
    "bounce_s": None,
    "long_press_s": 0.25,
    "shutdown_delay_s": 0.2,
}


def make(
    factory: MockFactory,
    *,
    mode: str = "patrol",
    clock: ManualClock | None = None,
    ignition_on: bool = True,
    **overrides: object,
) -> FieldIo:
    if ignition_on:
        factory.pin(IGNITION_PIN).drive_high()
    cfg = GpioConfig.model_validate({**FAST, **overrides})
    return FieldIo.from_config(cfg, mode=mode, pin_factory=factory, clock=clock)


def values(pin: MockPin) -> list[bool]:
    return [s.state for s in pin.states]


def test_pins_come_from_the_pin_map() -> None:
    assert (LED_PIN, BUZZER_PIN, BUTTON_PIN, IGNITION_PIN) == (17, 27, 22, 23)


def test_starts_blinking_then_steady_on_when_running(
    factory: MockFactory, clock: ManualClock
) -> None:
    io = make(factory, clock=clock)
    led = factory.pin(LED_PIN)
    step_s = LED_PATTERNS["starting"][0] * 0.2  # FAST's pattern_scale
    try:
        assert io.status == "starting"
        clock.advance(2 * step_s)
        assert values(led)[:4] == [False, True, False, True]
        io.set_status("running")
        assert led.state is True
        n = len(led.states)
        clock.advance(60.0)
        assert led.state is True
        assert len(led.states) == n  # steady: no more edges
    finally:
        io.close()
    assert led.state is False


@pytest.mark.slow
@pytest.mark.parametrize("state", ["no_gps", "broker_offline", "degraded"])
def test_status_pattern_pulse_train(factory: MockFactory, state: str) -> None:
    io = make(factory, pattern_scale=0.5)  # long pauses stand out even on a loaded machine
    led = factory.pin(LED_PIN)
    pattern = LED_PATTERNS[state]
    try:
        io.set_status("running")
        assert wait_until(lambda: led.state, timeout_s=5)
        io.set_status(state)
        assert wait_until(lambda: not led.state, timeout_s=5)
        led.clear_states()  # states[0] is now "off", the start of a cycle
        n_edges = 2 * len(pattern) + 1
        assert wait_until(lambda: len(led.states) > n_edges, timeout_s=10)
    finally:
        io.close()
    states = led.states[: n_edges + 1]
    assert [s.state for s in states] == [i % 2 == 1 for i in range(len(states))]
    # states[0] starts step 1 (the first "off"); PinState.timestamp of states[k] is how long
    # step k-1 lasted, so states[2:] time steps 2, 3, ... (step 1 began before clear_states).
    durations = [s.timestamp for s in states[2:]][: len(pattern)]
    cycle = pattern[2:] + pattern[:2]
    longest = max(range(len(cycle)), key=lambda k: cycle[k])
    if cycle[longest] > 2 * min(cycle):
        # The long pause is where the pattern puts it, and clearly longer than every flash.
        assert max(range(len(durations)), key=lambda k: durations[k]) == longest
    assert all(d > 0 for d in durations)


def test_unknown_status_is_refused(factory: MockFactory) -> None:
    with make(factory) as io, pytest.raises(ValueError, match="no_gps"):
        io.set_status("happy")


def test_hit_in_patrol_beeps_and_flashes_then_resumes(
    factory: MockFactory, clock: ManualClock
) -> None:
    io = make(factory, clock=clock, hit_beeps=2, hit_flashes=3)
    led, buzzer = factory.pin(LED_PIN), factory.pin(BUZZER_PIN)
    try:
        io.set_status("running")
        assert led.state is True
        led.clear_states()
        io.on_hit("lane1")
        assert buzzer.state is True
        assert led.state is False  # at once
        clock.advance(0.03)  # hit_beep_s, hit_flash_s
        assert buzzer.state is False
        assert led.state is True
        clock.advance(1.0)
        # off, then 3 flashes, then back to steady on for "running"
        assert values(led) == [True] + [False, True] * 3 + [False, True]
        buzzer.assert_states([False, True, False, True, False])
    finally:
        io.close()
    buzzer.assert_states([False, True, False, True, False])
    assert values(led)[:8] == [True] + [False, True] * 3 + [False]


def test_hit_at_a_junction_is_silent(factory: MockFactory, clock: ManualClock) -> None:
    io = make(factory, mode="junction", clock=clock)
    buzzer = factory.pin(BUZZER_PIN)
    try:
        io.on_hit("lane1")
        clock.advance(1.0)
    finally:
        io.close()
    buzzer.assert_states([False])


def test_buzzer_can_be_left_unfitted(factory: MockFactory, clock: ManualClock) -> None:
    io = make(factory, buzzer=False, clock=clock)
    try:
        io.on_hit("lane1")
        clock.advance(1.0)
        assert factory.pin(BUZZER_PIN).function == "input"  # never claimed
    finally:
        io.close()


def test_short_press_mutes_and_unmutes(factory: MockFactory, clock: ManualClock) -> None:
    io = make(factory, clock=clock, mute_s=600.0)
    button, buzzer = factory.pin(BUTTON_PIN), factory.pin(BUZZER_PIN)
    try:
        assert button.state is True  # pulled up, not pressed
        button.drive_low()
        button.drive_high()
        assert wait_until(lambda: io.is_muted, timeout_s=5)
        io.on_hit("lane1")
        clock.advance(0.15)
        buzzer.assert_states([False])
        clock.advance(599 - 0.15)
        assert io.is_muted
        button.drive_low()
        button.drive_high()
        assert wait_until(lambda: not io.is_muted, timeout_s=5)
        io.on_hit("lane1")
        clock.advance(1.0)
        assert len(buzzer.states) >= 5
        assert io.take_mark() is False  # short presses never mark
    finally:
        io.close()


def test_control_room_mute_expires(factory: MockFactory, clock: ManualClock) -> None:
    io = make(factory, clock=clock)
    buzzer = factory.pin(BUZZER_PIN)
    try:
        io.mute(30.0)
        io.on_hit("lane1")
        clock.advance(29.9)
        assert io.is_muted
        clock.advance(0.2)
        assert not io.is_muted
        io.mute(30.0)
        io.mute(0)
        assert not io.is_muted
        io.on_hit("lane2")
        clock.advance(1.0)
        assert len(buzzer.states) >= 5
    finally:
        io.close()
    buzzer.assert_states([False, True, False, True, False])


def test_a_mute_silences_a_beep_under_way(factory: MockFactory, clock: ManualClock) -> None:
    io = make(factory, clock=clock, hit_beeps=3)
    buzzer = factory.pin(BUZZER_PIN)
    try:
        io.on_hit("lane1")
        assert buzzer.state is True
        io.mute(60.0)
        clock.advance(1.0)
        buzzer.assert_states([False, True, False])  # no more beeps once muted
    finally:
        io.close()


def test_close_cancels_a_pending_shutdown_and_the_led_steps(
    factory: MockFactory, clock: ManualClock
) -> None:
    io = make(factory, clock=clock, shutdown_delay_s=5.0)
    calls: list[int] = []
    io.on_shutdown_request = lambda: calls.append(1)
    factory.pin(IGNITION_PIN).drive_low()
    assert clock.pending()  # the shutdown delay and the LED pattern's next step
    io.close()
    assert clock.pending() == []
    clock.advance(10.0)
    assert calls == []


def test_long_press_marks_the_next_alert_once(factory: MockFactory) -> None:
    io = make(factory)
    button, led = factory.pin(BUTTON_PIN), factory.pin(LED_PIN)
    try:
        io.set_status("running")
        assert wait_until(lambda: led.state, timeout_s=5)
        led.clear_states()
        button.drive_low()
        # acknowledged
        assert wait_until(lambda: len(led.states) >= 2 * MARK_ACK_FLASHES + 2, timeout_s=5)
        button.drive_high()
        assert io.take_mark() is True
        assert io.take_mark() is False
        assert not io.is_muted  # the release after a hold is not a short press
    finally:
        io.close()
    assert values(led)[: 2 * MARK_ACK_FLASHES + 2] == [True] + [False, True] * MARK_ACK_FLASHES + [
        False
    ]


def test_ignition_off_for_the_delay_requests_shutdown_once(
    factory: MockFactory, clock: ManualClock
) -> None:
    io = make(factory, clock=clock, shutdown_delay_s=0.2)
    ign = factory.pin(IGNITION_PIN)
    calls: list[float] = []
    io.on_shutdown_request = lambda: calls.append(clock.monotonic())
    try:
        assert io.ignition_on is True
        t0 = clock.monotonic()
        ign.drive_low()
        clock.advance(0.19)
        assert calls == []
        clock.advance(0.01)
        assert len(calls) == 1
        assert calls[0] - t0 >= 0.19
        ign.drive_high()
        ign.drive_low()
        clock.advance(0.4)
        assert len(calls) == 1
    finally:
        io.close()


def test_ignition_back_on_cancels_shutdown(factory: MockFactory, clock: ManualClock) -> None:
    io = make(factory, clock=clock, shutdown_delay_s=0.6)
    ign = factory.pin(IGNITION_PIN)
    calls: list[int] = []
    io.on_shutdown_request = lambda: calls.append(1)
    try:
        for _ in range(3):  # a flickering ignition (cranking) never shuts the unit down
            ign.drive_low()
            clock.advance(0.05)
            ign.drive_high()
        clock.advance(0.8)  # longer than the delay: a timer left running would have fired
        assert calls == []
    finally:
        io.close()


def test_ignition_off_at_start_counts_too(factory: MockFactory, clock: ManualClock) -> None:
    factory.pin(IGNITION_PIN).drive_low()
    called = threading.Event()
    io = make(factory, clock=clock, ignition_on=False, shutdown_delay_s=0.05)
    try:
        clock.advance(0.2)  # the request comes before anyone listens ...
        io.on_shutdown_request = called.set
        assert called.is_set()  # ... and is delivered when the handler is set
    finally:
        io.close()


def test_ignition_sense_off_claims_no_pin(factory: MockFactory) -> None:
    io = make(factory, ignition_sense=False)
    try:
        assert io.ignition_on is None
    finally:
        io.close()


def test_close_is_idempotent_and_releases_the_pins(factory: MockFactory) -> None:
    io = make(factory)
    io.close()
    io.close()
    io.on_hit("lane1")  # after close: ignored, no error
    io.mute(60)  # a late control-room command: no error either
    assert io.is_muted
    assert io.ignition_on is None
    assert io.take_mark() is False
    again = make(factory)  # the pins are free again
    again.close()


def test_pin_already_in_use_is_a_gpio_error(factory: MockFactory) -> None:
    from gpiozero import LED

    squatter = LED(LED_PIN, pin_factory=factory)
    try:
        with pytest.raises(GpioError, match="GPIO") as exc:
            make(factory)
        assert isinstance(exc.value, PhonewatchError)
        assert isinstance(exc.value, OSError)
    finally:
        squatter.close()
    make(factory).close()  # nothing was left claimed by the failed attempt


def test_missing_signal_in_pin_map_names_it(factory: MockFactory, tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "hardware" / "pinmap.toml").read_text()
    cut = text.replace("[signals.button]", "[signals.button_unused]")
    p = tmp_path / "pins.toml"
    p.write_text(cut)
    cfg = GpioConfig(pin_map=p)
    with pytest.raises(ConfigError, match=r"signals\.button\.pi"):
        FieldIo.from_config(cfg, mode="patrol", pin_factory=factory)


def test_bad_mode_is_refused(factory: MockFactory) -> None:
    with pytest.raises(ValueError, match="patrol"):
        FieldIo.from_config(GpioConfig(), mode="rally", pin_factory=factory)


@pytest.mark.filterwarnings("ignore::gpiozero.PinFactoryFallback")
def test_no_gpio_hardware_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpiozero import Device

    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    monkeypatch.setattr(Device, "pin_factory", None)
    try:
        Device._default_pin_factory().close()
        pytest.skip("a real GPIO pin factory is available here (a Pi)")
    except GPIOZeroError:
        pass
    with pytest.raises(GpioError, match="not on a Pi"):
        FieldIo.from_config(GpioConfig(), mode="patrol")
