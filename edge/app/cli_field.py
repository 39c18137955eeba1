"""Field subcommands: ``phonewatch pins``, ``phonewatch gpio-test``, ``phonewatch supervisor``."""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from edge.adapters.gpio_config import GpioConfig, PinMap, load_pin_map
from edge.core.errors import ConfigError, SupervisorError

log = logging.getLogger(__name__)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "pins",
        help="print the pin map (what is wired where)",
        description="Print the one pin map: every signal, its Pi GPIO / header "
        "pin and its Pico GP / board pin.",
    )
    p.add_argument(
        "--pin-map",
        type=Path,
        default=None,
        help="pin map file (default: hardware/pinmap.toml of this checkout)",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="take the pin map named by this unit config's [gpio] table",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_pins)

    p = sub.add_parser(
        "gpio-test",
        help="walk the status LED, buzzer, button and ignition",
        description="Installer's check: shows every status LED pattern, beeps "
        "once, then reports button presses and the ignition line until the "
        "time is up. --mock runs on gpiozero's MockFactory (no Pi needed).",
    )
    p.add_argument("--config", type=Path, default=None, help="unit config (uses its [gpio])")
    p.add_argument("--pin-map", type=Path, default=None, help="pin map file")
    p.add_argument(
        "--mode",
        choices=["junction", "patrol"],
        default="patrol",
        help="patrol (default) beeps and flashes on a hit; junction does not",
    )
    p.add_argument("--step-s", type=float, default=3.0, help="seconds per LED pattern")
    p.add_argument(
        "--listen-s",
        type=float,
        default=10.0,
        help="seconds to report button and ignition after the patterns",
    )
    p.add_argument("--mock", action="store_true", help="gpiozero MockFactory instead of pins")
    p.set_defaults(func=cmd_gpio_test)

    p = sub.add_parser(
        "supervisor",
        help="talk to the Pico power supervisor",
        description="Query the Pico supervisor's status, or send it a command.",
    )
    p.add_argument("--port", default="/dev/ttyAMA2", help="supervisor serial port / URL")
    p.add_argument(
        "--baud",
        type=int,
        default=115200,
        help="serial speed (default 115200, as the Pico firmware)",
    )
    p.add_argument(
        "--timeout-s",
        type=float,
        default=3.0,
        help="how long to wait for the Pico's answer (default 3 s)",
    )
    p.add_argument(
        "action",
        choices=["status", "strobe"],
        nargs="?",
        default="status",
        help="status (default): print the Pico's state; strobe: set the IR strobe "
        "(--on-us, --max-duty-pct), then print the state",
    )
    p.add_argument(
        "--on-us", type=int, default=0, help="strobe: IR pulse per frame in microseconds (0 = off)"
    )
    p.add_argument(
        "--max-duty-pct",
        type=int,
        default=25,
        help="strobe: the most of the time the IR may be on, 1..50 %% (default 25)",
    )
    p.set_defaults(func=cmd_supervisor)


def _pin_map(args: argparse.Namespace) -> PinMap:
    if getattr(args, "config", None) is not None:
        from edge.app.config import load_config

        cfg = load_config(args.config)
        if cfg.gpio is None:
            raise ConfigError(f"{args.config}: has no [gpio] table")
        return cfg.gpio.load_pin_map()
    return load_pin_map(args.pin_map)


def cmd_pins(args: argparse.Namespace) -> int:
    pm = _pin_map(args)
    if args.json:
        print(json.dumps(pm.model_dump(mode="json"), indent=2))
        return 0
    print(f"{pm.title} — wiring revision {pm.revision}")
    print(f"{'signal':<18} {'Pi':<16} {'Pico':<14} description")
    for name, s in sorted(pm.signals.items(), key=lambda kv: (kv[1].pi is None, kv[0])):
        pi = f"GPIO{s.pi.gpio} pin {s.pi.pin} {s.pi.dir}" if s.pi else "-"
        pico = f"GP{s.pico.gp} pin {s.pico.pin} {s.pico.dir}" if s.pico else "-"
        print(f"{name:<18} {pi:<16} {pico:<14} {s.description}")
    return 0


def cmd_gpio_test(args: argparse.Namespace) -> int:
    from edge.adapters.gpio import STATUSES, FieldIo

    cfg = GpioConfig()
    if args.config is not None:
        from edge.app.config import load_config

        unit = load_config(args.config)
        cfg = unit.gpio or cfg
    if args.pin_map is not None:
        cfg = cfg.model_copy(update={"pin_map": args.pin_map})
    factory = None
    if args.mock:
        from gpiozero.pins.mock import MockFactory

        factory = MockFactory()
    io = FieldIo.from_config(cfg, mode=args.mode, pin_factory=factory)
    shutdown = threading.Event()
    io.on_shutdown_request = shutdown.set
    try:
        for state in STATUSES:
            print(f"status LED: {state}", flush=True)
            io.set_status(state)
            time.sleep(args.step_s)
        io.set_status("running")
        print("hit signal: buzzer and LED flash (patrol mode)", flush=True)
        io.on_hit("test")
        print(
            f"ignition: {_onoff(io.ignition_on)}; press the button (short = mute, "
            f"hold {cfg.long_press_s:.1f} s = mark) ...",
            flush=True,
        )
        deadline = time.monotonic() + args.listen_s
        muted, ignition = io.is_muted, io.ignition_on
        while time.monotonic() < deadline:
            if io.is_muted != muted:
                muted = io.is_muted
                print(f"button: {'muted' if muted else 'unmuted'}", flush=True)
            if io.take_mark():
                print("button: long press, next alert marked", flush=True)
            if io.ignition_on != ignition:
                ignition = io.ignition_on
                print(f"ignition: {_onoff(ignition)}", flush=True)
            if shutdown.is_set():
                print("ignition off for the delay: the unit would shut down now", flush=True)
                shutdown.clear()
            time.sleep(0.05)
    finally:
        io.close()
    print("gpio-test done")
    return 0


def _onoff(v: bool | None) -> str:
    return "not sensed" if v is None else ("on" if v else "off")


def cmd_supervisor(args: argparse.Namespace) -> int:
    from edge.adapters.supervisor import SupervisorLink

    # No heartbeats from this tool: the running service owns that job.
    with SupervisorLink(args.port, baud=args.baud, heartbeat_s=None) as link:
        if args.action == "strobe":
            link.set_strobe(args.on_us, args.max_duty_pct)
            if not link.wait_ack("IR", args.timeout_s):
                why = ", ".join(link.errors_from_pico) or "no answer"
                raise SupervisorError(
                    f"supervisor on {args.port} did not accept the strobe setting ({why})"
                )
            print(f"strobe: {args.on_us} µs per frame, at most {args.max_duty_pct} % duty")
        link.query()
        deadline = time.monotonic() + args.timeout_s
        while link.status is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if link.status is None:
            raise SupervisorError(
                f"no status from the supervisor on {args.port} within {args.timeout_s:.0f} s"
            )
        s = link.status
        print(
            f"supervisor firmware {s.firmware}: state {s.state}, ignition "
            f"{'on' if s.ignition_on else 'off'}, {s.resets} power cycles, up {s.uptime_s} s"
        )
    return 0
