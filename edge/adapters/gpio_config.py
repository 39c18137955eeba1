"""Field configuration: the ``[gpio]`` table and the one pin map (``hardware/pinmap.toml``).

The pin map is the single source of truth for every wire on the unit: the GPIO adapter reads
it, the wiring table and the SVG diagram in ``hardware/`` are generated from it, and so are the
Pico supervisor's pin constants (``firmware/supervisor/pins.py``). Pins are never literals in
code. ``load_pin_map`` validates it (GPIO numbers agree with the 40-pin header and the Pico's
pinout, no pin is used twice) and names the key on any error.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from edge.common.config import StrictModel
from edge.core.errors import ConfigError

REPO_PIN_MAP = Path(__file__).resolve().parents[2] / "hardware" / "pinmap.toml"
"""The pin map in a source checkout (editable install); deployed units name theirs in config."""

# Raspberry Pi 40-pin header: physical pin -> BCM GPIO (same on Pi 3, 4 and 5).
PI_HEADER_GPIO: dict[int, int] = {
    3: 2,
    5: 3,
    7: 4,
    8: 14,
    10: 15,
    11: 17,
    12: 18,
    13: 27,
    15: 22,
    16: 23,
    18: 24,
    19: 10,
    21: 9,
    22: 25,
    23: 11,
    24: 8,
    26: 7,
    27: 0,
    28: 1,
    29: 5,
    31: 6,
    32: 12,
    33: 13,
    35: 19,
    36: 16,
    37: 26,
    38: 20,
    40: 21,
}
PI_HEADER_POWER: dict[int, str] = {
    1: "3V3",
    17: "3V3",
    2: "5V",
    4: "5V",
    6: "GND",
    9: "GND",
    14: "GND",
    20: "GND",
    25: "GND",
    30: "GND",
    34: "GND",
    39: "GND",
}
# Raspberry Pi Pico (RP2040) board pin -> GPxx.
PICO_PIN_GP: dict[int, int] = {
    1: 0,
    2: 1,
    4: 2,
    5: 3,
    6: 4,
    7: 5,
    9: 6,
    10: 7,
    11: 8,
    12: 9,
    14: 10,
    15: 11,
    16: 12,
    17: 13,
    19: 14,
    20: 15,
    21: 16,
    22: 17,
    24: 18,
    25: 19,
    26: 20,
    27: 21,
    29: 22,
    31: 26,
    32: 27,
    34: 28,
}
PICO_POWER: dict[int, str] = {
    3: "GND",
    8: "GND",
    13: "GND",
    18: "GND",
    23: "GND",
    28: "GND",
    38: "GND",
    30: "RUN",
    33: "AGND",
    35: "ADC_VREF",
    36: "3V3(OUT)",
    37: "3V3_EN",
    39: "VSYS",
    40: "VBUS",
}


class PiEnd(StrictModel):
    gpio: int = Field(description="BCM GPIO number on the Pi.", ge=0, le=27)
    pin: int = Field(description="Physical pin on the 40-pin header.", ge=1, le=40)
    dir: Literal["in", "out"] = Field(description="Direction seen from the Pi.")

    @model_validator(mode="after")
    def _header(self) -> PiEnd:
        if PI_HEADER_GPIO.get(self.pin) != self.gpio:
            actual = PI_HEADER_GPIO.get(self.pin, PI_HEADER_POWER.get(self.pin, "?"))
            raise ValueError(f"header pin {self.pin} is {_pin_name(actual)}, not GPIO{self.gpio}")
        return self


class PicoEnd(StrictModel):
    gp: int = Field(description="GPxx number on the Pico.", ge=0, le=28)
    pin: int = Field(description="Board pin on the Pico (1..40).", ge=1, le=40)
    dir: Literal["in", "out"] = Field(description="Direction seen from the Pico.")

    @model_validator(mode="after")
    def _board(self) -> PicoEnd:
        if PICO_PIN_GP.get(self.pin) != self.gp:
            actual = PICO_PIN_GP.get(self.pin, PICO_POWER.get(self.pin, "?"))
            raise ValueError(f"Pico pin {self.pin} is {_pin_name(actual, 'GP')}, not GP{self.gp}")
        return self


def _pin_name(v: int | str, prefix: str = "GPIO") -> str:
    return f"{prefix}{v}" if isinstance(v, int) else v


class Signal(StrictModel):
    description: str = Field(description="What the signal does, for the wiring table.")
    to: str = Field("", description="What the wire goes to (part, resistor, connector).")
    pi: PiEnd | None = Field(None, description="The Pi end, if the signal reaches the Pi.")
    pico: PicoEnd | None = Field(None, description="The Pico end, if it reaches the Pico.")
    active_high: bool = Field(True, description="True: logic 1 means 'on' / 'pressed' / 'active'.")
    pull: Literal["up", "down", "none"] = Field(
        "none", description="Internal pull resistor for inputs."
    )

    @model_validator(mode="after")
    def _check(self) -> Signal:
        if self.pi is None and self.pico is None:
            raise ValueError("a signal needs a 'pi' end, a 'pico' end or both")
        if self.pull == "up" and self.active_high:
            raise ValueError("pull 'up' means the input is active low: set active_high = false")
        if self.pull == "down" and not self.active_high:
            raise ValueError("pull 'down' means the input is active high: set active_high = true")
        if self.pi is not None and self.pico is not None and self.pi.dir == self.pico.dir:
            raise ValueError("a Pi-Pico link needs one end 'in' and the other 'out'")
        return self


class PowerWire(StrictModel):
    source: str = Field(description="Where the wire starts (e.g. 'Buck 5V OUT').")
    dest: str = Field(description="Where it ends (e.g. 'Pi USB-C').")
    wire: str = Field("", description="Gauge, colour, fuse.")


class PinMap(StrictModel):
    title: str = Field(description="Name of the wiring (shown on the diagram).")
    revision: str = Field(description="Revision of the wiring; bump on every change.")
    signals: dict[str, Signal] = Field(description="Every logic signal, keyed by its name.")
    power: list[PowerWire] = Field(default_factory=list, description="Power and ground wiring.")

    @model_validator(mode="after")
    def _unique(self) -> PinMap:
        seen_pi: dict[int, str] = {}
        seen_pico: dict[int, str] = {}
        for name, s in self.signals.items():
            if s.pi is not None:
                if s.pi.gpio in seen_pi:
                    other = seen_pi[s.pi.gpio]
                    raise ValueError(f"GPIO{s.pi.gpio} used by both {other} and {name}")
                seen_pi[s.pi.gpio] = name
            if s.pico is not None:
                if s.pico.gp in seen_pico:
                    raise ValueError(
                        f"GP{s.pico.gp} used by both {seen_pico[s.pico.gp]} and {name}"
                    )
                seen_pico[s.pico.gp] = name
        return self

    def pi_signal(self, name: str, *, source: str = "pin map") -> tuple[Signal, PiEnd]:
        """The named signal's Pi end; a clear error when the map lacks it."""
        s = self.signals.get(name)
        if s is None or s.pi is None:
            raise ConfigError(f"{source}: signals.{name}.pi: required by the GPIO adapter, missing")
        return s, s.pi


def parse_pin_map(data: dict[str, Any], *, source: str = "pin map") -> PinMap:
    try:
        return PinMap.model_validate(data)
    except ValidationError as e:
        lines = [f"{source}: invalid pin map"]
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"  {loc or '(top level)'}: {msg}")
        raise ConfigError("\n".join(lines)) from None


def load_pin_map(path: Path | str | None = None) -> PinMap:
    """Read and validate a pin map; ``None`` means the one in the source checkout."""
    p = Path(path) if path is not None else REPO_PIN_MAP
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        hint = "" if path is not None else " (set gpio.pin_map in the config)"
        raise ConfigError(f"{p}: pin map not found{hint}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read pin map: {e.strerror}") from None
    return parse_pin_map(data, source=str(p))


class GpioConfig(StrictModel):
    pin_map: Path | None = Field(
        None, description="Pin map file; default: hardware/pinmap.toml shipped with phonewatch."
    )
    buzzer: bool = Field(True, description="Sound the buzzer on a hit (patrol mode only).")
    hit_beeps: int = Field(2, description="Beeps per hit.", ge=1, le=10)
    hit_beep_s: float = Field(
        0.15, description="Length of one beep and of the gap (s).", gt=0, le=2
    )
    hit_flashes: int = Field(3, description="Status LED flashes per hit.", ge=0, le=20)
    hit_flash_s: float = Field(
        0.1, description="Length of one LED flash and of the gap (s).", gt=0, le=2
    )
    mute_s: float = Field(
        900.0,
        description="How long a short press of the button mutes hit signals (s).",
        gt=0,
        le=86400,
    )
    long_press_s: float = Field(
        1.5, description="Hold the button this long to mark 'officer saw it' (s).", gt=0.2, le=10
    )
    bounce_s: float | None = Field(
        0.03, description="Debounce for the button (s); none = off.", ge=0, le=1
    )
    ignition_sense: bool = Field(
        True, description="Watch the ignition line and shut down cleanly when it goes off."
    )
    shutdown_delay_s: float = Field(
        120.0, description="Ignition off this long starts a clean shutdown (s).", ge=0, le=86400
    )
    pattern_scale: float = Field(
        1.0, description="Stretch (>1) or shrink (<1) every status LED timing.", gt=0, le=10
    )
    supervisor_port: str | None = Field(
        None,
        description="Serial port of the Pico power supervisor (e.g. /dev/ttyAMA2); "
        "none = no supervisor fitted.",
        min_length=1,
    )
    supervisor_baud: int = Field(
        115200, description="Baud rate of the supervisor link.", ge=9600, le=921600
    )
    heartbeat_s: float = Field(
        2.0, description="Heartbeat to the supervisor every this many seconds.", gt=0, le=30
    )
    halt_s: int = Field(
        20,
        description="After a clean shutdown, the supervisor cuts power this long after the "
        "last heartbeat (s).",
        ge=5,
        le=120,
    )
    strobe_on_us: int = Field(
        0,
        description="IR strobe pulse per frame (µs) asked of the supervisor; 0 = off.",
        ge=0,
        le=5000,
    )
    strobe_max_duty_pct: int = Field(
        25, description="Highest IR strobe duty cycle the supervisor may use (%).", ge=1, le=50
    )

    def load_pin_map(self) -> PinMap:
        return load_pin_map(self.pin_map)
