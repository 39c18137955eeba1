"""``phonewatch gps`` end to end (through the real CLI entry point) and the [gps] table."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from edge.adapters.gps_config import GpsConfig, gpsd_address
from edge.app.cli import main
from edge.app.cli_gps import JSON_FIELDS
from tests.gps.nmea_gen import drive, epoch

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)


def write_log(path: Path, lines: list[str]) -> Path:
    path.write_text("# comment\n" + "\n".join(lines) + "\n")
    return path


def test_gps_json_lines_from_a_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(
        tmp_path / "d.nmea", drive(T0, 4) + epoch(T0 + dt.timedelta(seconds=4), 0, 0, valid=False)
    )
    assert main(["gps", "--source", f"replay:{log}", "--fast", "--json"]) == 0
    out, err = capsys.readouterr()
    rows = [json.loads(x) for x in out.splitlines()]
    assert len(rows) == 5
    assert all(tuple(r) == JSON_FIELDS for r in rows)
    assert rows[0]["time"] == "2026-03-01T12:00:00.000Z"
    assert rows[0]["mode"] == "3d"
    assert rows[0]["lat"] == pytest.approx(51.5, abs=1e-6)
    assert rows[0]["sats"] == 9
    assert rows[-1]["mode"] == "none"
    assert rows[-1]["lat"] is None
    assert rows[-1]["lon"] is None
    assert "5 fixes printed" in err
    assert "bad_checksum 0" in err


def test_gps_count_and_text_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(tmp_path / "d.nmea", drive(T0, 6))
    assert main(["gps", "--source", f"replay:{log}", "--fast", "--count", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2
    assert out[0].startswith("2026-03-01T12:00:00.000Z")
    assert " 3d " in out[0]


def test_gps_bad_source_is_an_error_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gps", "--source", "nonsense"]) == 1
    assert "not a serial device" in capsys.readouterr().err
    assert main(["gps", "--source", "replay:/nonexistent/x.nmea"]) == 1
    assert "replay file not found" in capsys.readouterr().err


def test_gps_no_receiver_times_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gps", "--source", str(tmp_path / "ttyNONE"), "--timeout-s", "0.5"]) == 1
    err = capsys.readouterr().err
    assert "no fix epoch in 0.5 s" in err
    assert "no_receiver" in err
    assert "ttyNONE" in err


def test_gps_config_rejects_typos_and_nonsense() -> None:
    with pytest.raises(ValidationError, match="baudrate"):
        GpsConfig.model_validate({"source": "/dev/serial0", "baudrate": 9600})
    with pytest.raises(ValidationError, match="baud"):
        GpsConfig(source="/dev/serial0", baud=12)
    with pytest.raises(ValidationError, match="port"):
        GpsConfig(source="gpsd://localhost:99999")
    with pytest.raises(ValidationError, match="reconnect_min_s"):
        GpsConfig(source="loop://", reconnect_min_s=10, reconnect_max_s=5)
    with pytest.raises(ValidationError, match="needs a file"):
        GpsConfig(source="replay:")
    assert gpsd_address("gpsd://") == ("localhost", 2947)
    assert gpsd_address("gpsd://10.0.0.2:3000") == ("10.0.0.2", 3000)
    for field in GpsConfig.model_fields.values():
        assert field.description
