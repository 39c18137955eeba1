"""The phonewatch command line, in process and (for exit behaviour) as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.app.cli import main

REPO = Path(__file__).resolve().parents[2]


def unit_config(tmp_path: Path, video: Path, model: Path, **extra: str) -> Path:
    text = f"""
[unit]
id = "cli-test"
data_dir = "{tmp_path / 'unit'}"
[camera]
type = "replay"
path = "{video}"
[[rois]]
id = "left"
rect = [0.05, 0.1, 0.45, 0.9]
margin = 0.0
[[rois]]
id = "right"
polygon = [[0.55, 0.1], [0.95, 0.1], [0.95, 0.9], [0.55, 0.9]]
margin = 0.0
[model]
path = "{model}"
accelerator = "{extra.get('accelerator', 'cpu')}"
[decider]
window = 5
min_frames = 3
cooldown_s = 0
"""
    p = tmp_path / "unit.toml"
    p.write_text(text)
    return p


def test_check_all_ok(tmp_path: Path, make_video, brightness_model: Path,  # type: ignore[no-untyped-def]
                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg = unit_config(tmp_path, make_video([100] * 3), brightness_model)
    assert main(["check", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    for name in ("config", "model", "accelerator", "camera", "rois", "disk", "gps", "broker"):
        assert f"OK   {name}" in out
    assert "160x120" in out


def test_check_reports_each_failure_and_exits_1(tmp_path: Path, brightness_model: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    cfg = unit_config(tmp_path, tmp_path / "gone.mp4", brightness_model, accelerator="edgetpu")
    assert main(["check", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "FAIL model" in out and "edgetpu" in out
    assert "FAIL camera" in out and "does not exist" in out
    assert "OK   disk" in out


def test_check_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "bad.toml"
    p.write_text('[unit]\nid = "x"\ncolour = 1\n')
    assert main(["check", "--config", str(p)]) == 1
    assert "FAIL config" in capsys.readouterr().out


def test_classify_prints_json_lines(tmp_path: Path, brightness_model: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    cv2.imwrite(str(tmp_path / "dark.png"), np.full((40, 40, 3), 10, np.uint8))
    cv2.imwrite(str(tmp_path / "bright.png"), np.full((40, 40, 3), 250, np.uint8))
    (tmp_path / "junk.png").write_bytes(b"junk")
    rc = main(["classify", "--model", str(brightness_model), str(tmp_path / "dark.png"),
               str(tmp_path / "bright.png"), str(tmp_path / "junk.png")])
    assert rc == 1  # one unreadable image
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["label"] == "no_phone" and rows[0]["is_phone"] is False
    assert rows[1]["label"] == "phone" and rows[1]["score"] > 0.95
    assert rows[2]["error"] == "not a readable image"


def test_roi_preview_draws_rois_and_scores(tmp_path: Path, make_video,  # type: ignore[no-untyped-def]
                                           brightness_model: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    video = make_video([240] * 3, box=(0.05, 0.1, 0.45, 0.9), size=(320, 240))
    cfg = unit_config(tmp_path, video, brightness_model)
    out = tmp_path / "roi.png"
    assert main(["roi-preview", "--config", str(cfg), "--out", str(out), "--skip", "1"]) == 0
    img = cv2.imread(str(out))
    assert img.shape == (240, 320, 3)
    text = capsys.readouterr().out
    left = float(text.split("left: score ")[1].split()[0])
    right = float(text.split("right: score ")[1].split()[0])
    assert left > 0.9 and right < 0.1
    # the ROI outlines are drawn: red (hot) on the left, green on the right
    assert (img[:, :, 2] > 200).sum() > 100 and (img[:, :, 1] > 150).sum() > 100


def test_run_offline_scores_against_truth(tmp_path: Path, make_video,  # type: ignore[no-untyped-def]
                                          brightness_model: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    levels = [20] * 10 + [240] * 10 + [20] * 10
    video = make_video(levels, box=(0.05, 0.1, 0.45, 0.9))
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"fps": 25, "frames": 30, "rois": {}, "events": [
        {"roi": "left", "start_frame": 10, "end_frame": 19, "phone": True},
        {"roi": "right", "start_frame": 0, "end_frame": 29, "phone": True},
    ]}))
    cfg = unit_config(tmp_path, video, brightness_model)
    assert main(["run", "--config", str(cfg), "--offline", "--truth", str(truth)]) == 0
    out = capsys.readouterr().out
    assert "frames processed" in out
    assert "found 1, missed 1; false alerts 0" in out
    lines = (tmp_path / "unit" / "alerts.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["roi_id"] == "left"


@pytest.mark.slow
def test_expected_failures_print_one_line_not_a_traceback(tmp_path: Path,
                                                          brightness_model: Path) -> None:
    cfg = unit_config(tmp_path, tmp_path / "missing.mp4", brightness_model)
    r = subprocess.run([sys.executable, "-m", "edge.app.cli", "run", "--config", str(cfg)],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "missing.mp4 does not exist" in r.stderr
    r = subprocess.run([sys.executable, "-m", "edge.app.cli", "run", "--config",
                        str(tmp_path / "nope.toml")], capture_output=True, text=True, cwd=REPO,
                       timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "not found" in r.stderr


@pytest.mark.slow
def test_help_teaches() -> None:
    r = subprocess.run([sys.executable, "-m", "edge.app.cli", "--help"], capture_output=True,
                       text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0
    for cmd in ("run", "check", "classify", "roi-preview", "demo"):
        assert cmd in r.stdout
