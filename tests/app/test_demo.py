"""`phonewatch demo` end to end: clip, unit, local Mosquitto, control room, ground truth."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.app.cli import main
from edge.app.cli_unit import DEMO_MODEL as DEFAULT_MODEL
from edge.app.demo import load_truth, score_hits
from edge.app.local_broker import find_mosquitto


def test_score_hits_counts_found_missed_false_and_repeats() -> None:
    truth = {"events": [
        {"roi": "lane1", "start_frame": 10, "end_frame": 50, "phone": True},
        {"roi": "lane2", "start_frame": 10, "end_frame": 50, "phone": False},
        {"roi": "lane2", "start_frame": 60, "end_frame": 90, "phone": True},
    ]}
    sc = score_hits([("lane1", 20), ("lane1", 45), ("lane2", 30), ("lane1", 70)], truth)
    assert (sc.found, sc.missed, sc.false, sc.duplicate) == (1, 1, 2, 1)
    assert sc.recall == 0.5 and sc.precision == pytest.approx(1 / 3)
    assert score_hits([("lane2", 95)], truth, slack_frames=5).found == 1


@pytest.mark.slow
@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
def test_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not DEFAULT_MODEL.is_file():
        pytest.fail(f"the default model {DEFAULT_MODEL} is missing")
    assert main(["demo", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    out = captured.out
    truth = load_truth(tmp_path / "junction.truth.json")
    frames = truth["frames"]
    assert f"{frames}/{frames} frames" in captured.err  # every frame of the clip was scored
    assert "ground truth:" in out
    # Every alert the unit raised reached the broker, verified, and the control room stored it.
    n = out.count("  hit ")
    assert f"{n} alert(s) received, {n} signature(s) verified, {n} evidence image(s) matched" in out
    if "dashboard database:" in out:
        assert f"dashboard database: {n} alert(s) verified and stored" in out
    alerts = (tmp_path / "unit" / "outbox.sqlite")
    assert alerts.is_file()
