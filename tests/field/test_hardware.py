"""The one pin map: validation, and the generated table, SVG and Pico pins kept in step with it."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.adapters.gpio_config import PI_HEADER_GPIO, PICO_PIN_GP, load_pin_map, parse_pin_map
from edge.core.errors import ConfigError

from .conftest import REPO

sys.path.insert(0, str(REPO / "hardware"))
import gen_wiring

PIN_MAP_TEXT = (REPO / "hardware" / "pinmap.toml").read_text()


def test_generated_files_are_up_to_date() -> None:
    r = subprocess.run(
        [sys.executable, str(REPO / "hardware" / "gen_wiring.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr


def test_check_notices_a_stale_file(tmp_path: Path) -> None:
    edited = tmp_path / "pinmap.toml"
    edited.write_text(PIN_MAP_TEXT.replace('revision = "', 'revision = "X', 1))
    assert gen_wiring.main(["--check", "--pin-map", str(edited)]) == 1


def test_svg_is_well_formed_and_shows_every_signal_and_pin() -> None:
    pm = load_pin_map()
    svg = (REPO / "hardware" / "wiring.svg").read_text()
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    text = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    for name, s in pm.signals.items():
        assert name in text
        if s.pi:
            assert f"pin {s.pi.pin} · GPIO{s.pi.gpio}" in text
        if s.pico:
            assert f"GP{s.pico.gp} · pin {s.pico.pin}" in text
    # A Pi-Pico link is drawn as one line between the two boxes.
    lines = list(root.iter("{http://www.w3.org/2000/svg}line"))
    links = [s for s in pm.signals.values() if s.pi and s.pico]
    assert sum(1 for ln in lines if ln.get("x1") == "300" and ln.get("x2") == "900") == len(links)


def test_table_has_a_row_per_signal() -> None:
    pm = load_pin_map()
    table = (REPO / "hardware" / "wiring.md").read_text()
    for name, s in pm.signals.items():
        row = next(ln for ln in table.splitlines() if ln.startswith(f"| `{name}` |"))
        if s.pi:
            assert f"| GPIO{s.pi.gpio} | {s.pi.pin} |" in row
        if s.pico:
            assert f"| GP{s.pico.gp} | {s.pico.pin} |" in row


def test_header_tables_are_complete() -> None:
    assert sorted(PI_HEADER_GPIO.values()) == list(range(28))  # GPIO0..27 once each
    assert sorted(PICO_PIN_GP.values()) == [*range(23), 26, 27, 28]


def _data() -> dict[str, Any]:
    import tomllib

    return tomllib.loads(PIN_MAP_TEXT)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d["signals"]["buzzer"]["pi"].update(pin=12), r"signals\.buzzer\.pi.*GPIO18"),
        (lambda d: d["signals"]["buzzer"]["pi"].update(gpio=17, pin=11), "GPIO17 used by both"),
        (lambda d: d["signals"]["ir_strobe"]["pico"].update(pin=3), "Pico pin 3 is GND"),
        (lambda d: d["signals"]["button"].update(active_high=True), "active low"),
        (lambda d: d["signals"]["ignition"]["pico"].update(dir="in"), "one end 'in'"),
        (lambda d: d["signals"]["status_led"].update(colour="green"), "unknown key"),
        (lambda d: d["signals"]["status_led"]["pi"].update(pin=1), "header pin 1 is 3V3"),
    ],
)
def test_pin_map_mistakes_are_named(edit: Callable[[dict[str, Any]], object], match: str) -> None:
    d = _data()
    edit(d)
    with pytest.raises(ConfigError, match=match):
        parse_pin_map(d, source="pinmap.toml")


def test_missing_or_broken_pin_map_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pin map not found"):
        load_pin_map(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("title = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_pin_map(bad)
