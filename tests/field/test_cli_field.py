"""The field subcommands through the real ``phonewatch`` CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.app.cli import main

from .test_supervisor import PicoOnPty, pico_on_pty  # noqa: F401  (fixture)


def test_pins_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pins"]) == 0
    out = capsys.readouterr().out
    assert "status_led" in out
    assert "GPIO17 pin 11 out" in out
    assert "GP6 pin 9 out" in out  # pi_power_en on the Pico


def test_pins_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["pins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["signals"]["button"]["pi"] == {"gpio": 22, "pin": 15, "dir": "in"}


def test_pins_missing_file_is_a_clean_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pins", "--pin-map", str(tmp_path / "nope.toml")]) == 1
    err = capsys.readouterr().err
    assert "nope.toml: pin map not found" in err
    assert "Traceback" not in err


def test_gpio_test_on_mock_pins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gpio-test", "--mock", "--step-s", "0.02", "--listen-s", "0.1"]) == 0
    out = capsys.readouterr().out
    for state in ("starting", "running", "degraded", "no_gps", "broker_offline"):
        assert f"status LED: {state}" in out
    assert "ignition: off" in out  # a MockFactory input floats low: ignition reads off
    assert out.rstrip().endswith("gpio-test done")


def test_supervisor_status_over_a_pty(
    pico_on_pty: PicoOnPty,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    pico, uart, _ = pico_on_pty
    assert main(["supervisor", "--port", uart.path, "--timeout-s", "5"]) == 0
    out = capsys.readouterr().out
    assert "supervisor firmware 1.0.0: state booting, ignition on, 0 power cycles" in out
    assert pico.last_hb_ms is None  # the tool never sends heartbeats


@pytest.mark.slow
def test_supervisor_strobe_refused_is_reported(
    pico_on_pty: PicoOnPty,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, uart, _ = pico_on_pty
    assert (
        main(["supervisor", "--port", uart.path, "strobe", "--on-us", "500", "--timeout-s", "1"])
        == 1
    )
    assert "did not accept the strobe setting (no strobe)" in capsys.readouterr().err
