"""The phonewatch command line, in process and (for exit behaviour) as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
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
data_dir = "{tmp_path / "unit"}"
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
accelerator = "{extra.get("accelerator", "cpu")}"
[decider]
window = 5
min_frames = 3
cooldown_s = 0
"""
    p = tmp_path / "unit.toml"
    p.write_text(text)
    return p


def test_check_all_ok(
    tmp_path: Path,
    make_video: Callable[..., Path],
    brightness_model: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = unit_config(tmp_path, make_video([100] * 3), brightness_model)
    assert main(["check", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    for name in ("config", "model", "accelerator", "camera", "rois", "disk", "gps", "broker"):
        assert f"OK   {name}" in out
    assert "160x120" in out


def test_check_reports_each_failure_and_exits_1(
    tmp_path: Path, brightness_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = unit_config(tmp_path, tmp_path / "gone.mp4", brightness_model, accelerator="edgetpu")
    assert main(["check", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "FAIL model" in out
    assert "edgetpu" in out
    assert "FAIL camera" in out
    assert "does not exist" in out
    assert "OK   disk" in out


def test_check_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "bad.toml"
    p.write_text('[unit]\nid = "x"\ncolour = 1\n')
    assert main(["check", "--config", str(p)]) == 1
    assert "FAIL config" in capsys.readouterr().out


def test_classify_prints_json_lines(
    tmp_path: Path, brightness_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cv2.imwrite(str(tmp_path / "dark.png"), np.full((40, 40, 3), 10, np.uint8))
    cv2.imwrite(str(tmp_path / "bright.png"), np.full((40, 40, 3), 250, np.uint8))
    (tmp_path / "junk.png").write_bytes(b"junk")
    rc = main(
        [
            "classify",
            "--model",
            str(brightness_model),
            str(tmp_path / "dark.png"),
            str(tmp_path / "bright.png"),
            str(tmp_path / "junk.png"),
        ]
    )
    assert rc == 1  # one unreadable image
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0]["label"] == "no_phone"
    assert rows[0]["is_phone"] is False
    assert rows[1]["label"] == "phone"
    assert rows[1]["score"] > 0.95
    assert rows[2]["error"] == "not a readable image"


def test_roi_preview_draws_rois_and_scores(
    tmp_path: Path,
    make_video: Callable[..., Path],
    brightness_model: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    video = make_video([240] * 3, box=(0.05, 0.1, 0.45, 0.9), size=(320, 240))
    cfg = unit_config(tmp_path, video, brightness_model)
    out = tmp_path / "roi.png"
    assert main(["roi-preview", "--config", str(cfg), "--out", str(out), "--skip", "1"]) == 0
    img = cv2.imread(str(out))
    assert img is not None
    assert img.shape == (240, 320, 3)
    text = capsys.readouterr().out
    left = float(text.split("left: score ")[1].split()[0])
    right = float(text.split("right: score ")[1].split()[0])
    assert left > 0.9
    assert right < 0.1
    # the ROI outlines are drawn: red (hot) on the left, green on the right
    assert (img[:, :, 2] > 200).sum() > 100
    assert (img[:, :, 1] > 150).sum() > 100
    # and each crop as the classifier sees it, beside the picture
    left_crop = cv2.imread(str(tmp_path / "roi-left.png"))
    assert left_crop is not None
    assert left_crop.mean() > 200  # the bright window
    assert "roi-left.png (region left as the classifier sees it)" in text


def test_run_offline_scores_against_truth(
    tmp_path: Path,
    make_video: Callable[..., Path],
    brightness_model: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    levels = [20] * 10 + [240] * 10 + [20] * 10
    video = make_video(levels, box=(0.05, 0.1, 0.45, 0.9))
    truth = tmp_path / "truth.json"
    truth.write_text(
        json.dumps(
            {
                "fps": 25,
                "frames": 30,
                "rois": {},
                "events": [
                    {"roi": "left", "start_frame": 10, "end_frame": 19, "phone": True},
                    {"roi": "right", "start_frame": 0, "end_frame": 29, "phone": True},
                ],
            }
        )
    )
    cfg = unit_config(tmp_path, video, brightness_model)
    assert main(["run", "--config", str(cfg), "--offline", "--truth", str(truth)]) == 0
    out = capsys.readouterr().out
    assert "frames processed" in out
    assert "found 1, missed 1; false alerts 0" in out
    lines = (tmp_path / "unit" / "alerts.jsonl").read_text().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["roi_id"] == "left"


@pytest.mark.slow
def test_expected_failures_print_one_line_not_a_traceback(
    tmp_path: Path, brightness_model: Path
) -> None:
    cfg = unit_config(tmp_path, tmp_path / "missing.mp4", brightness_model)
    r = subprocess.run(
        [sys.executable, "-m", "edge.app.cli", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "missing.mp4 does not exist" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "edge.app.cli", "run", "--config", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "not found" in r.stderr


@pytest.mark.slow
def test_help_teaches() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "edge.app.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert r.returncode == 0
    for cmd in ("run", "check", "classify", "roi-preview", "demo"):
        assert cmd in r.stdout


# -- issue 20 / 17.6: as a technician tries it -------------------------------------------------
def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.app.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env=env,
    )


@pytest.mark.slow
def test_run_exits_non_zero_when_the_camera_never_opens(
    tmp_path: Path, brightness_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # systemd's Restart=on-failure restarts only a run that fails: a camera that never gave a
    # frame is a failure, with a one-line reason.
    cfg = unit_config(tmp_path, tmp_path / "unused.mp4", brightness_model)
    text = cfg.read_text().replace(
        'type = "replay"\npath = "' + str(tmp_path / "unused.mp4") + '"',
        'type = "opencv"\ndevice = 97',
    )
    cfg.write_text(text)
    assert main(["run", "--config", str(cfg), "--max-seconds", "1"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("phonewatch: error:")]
    assert len(errors) == 1
    assert "camera opencv:97" in errors[0]
    assert "delivered" in errors[0]
    assert "Traceback" not in err


@pytest.mark.slow
def test_run_prints_a_startup_line_and_each_hit_as_it_happens(
    tmp_path: Path,
    make_video: Callable[..., Path],
    brightness_model: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    video = make_video([20] * 10 + [240] * 10 + [20] * 10, box=(0.05, 0.1, 0.45, 0.9))
    cfg = unit_config(tmp_path, video, brightness_model)
    assert main(["run", "--config", str(cfg)]) == 0  # a foreground run, not --offline
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("phonewatch cli-test: camera replay:clip.avi (25.0 fps), model ")
    assert "accelerator CPU" in first
    assert f"alerts to {tmp_path / 'unit' / 'alerts.jsonl'}" in first
    hits = [line for line in out.splitlines() if line.startswith("  hit ")]
    assert len(hits) == 1
    assert "roi left" in hits[0]
    assert out.index("  hit ") < out.index("frames captured")  # before the closing table


def test_check_creates_no_folders(
    tmp_path: Path,
    make_video: Callable[..., Path],
    brightness_model: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = unit_config(tmp_path, make_video([100] * 3), brightness_model)
    assert main(["check", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "unit").exists()
    disk = next(line for line in out.splitlines() if line.startswith("OK   disk"))
    assert "does not exist yet" in disk
    assert f"{tmp_path} (the nearest folder" in disk
    assert "writable" in disk


def test_truth_with_other_regions_warns(
    tmp_path: Path,
    make_video: Callable[..., Path],
    brightness_model: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    video = make_video([20] * 10, box=(0.05, 0.1, 0.45, 0.9))
    truth = tmp_path / "truth.json"
    truth.write_text(
        json.dumps(
            {
                "fps": 25,
                "frames": 10,
                "rois": {"left": [0.5, 0.5, 0.9, 0.9], "lane9": [0.1, 0.1, 0.2, 0.2]},
                "events": [],
            }
        )
    )
    cfg = unit_config(tmp_path, video, brightness_model)
    assert main(["run", "--config", str(cfg), "--offline", "--truth", str(truth)]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert any("region left" in w and "[0.500, 0.500, 0.900, 0.900]" in w for w in warnings)
    assert any("lane9" in w and "not in the config" in w for w in warnings)
    assert any("right" in w and "not in the ground truth" in w for w in warnings)


def test_truth_with_the_same_regions_does_not_warn(
    tmp_path: Path,
    make_video: Callable[..., Path],
    brightness_model: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    video = make_video([20] * 10, box=(0.05, 0.1, 0.45, 0.9))
    truth = tmp_path / "truth.json"
    truth.write_text(
        json.dumps(
            {
                "fps": 25,
                "frames": 10,
                "rois": {"left": [0.05, 0.1, 0.45, 0.9], "right": [0.55, 0.1, 0.95, 0.9]},
                "events": [],
            }
        )
    )
    cfg = unit_config(tmp_path, video, brightness_model)
    assert main(["run", "--config", str(cfg), "--offline", "--truth", str(truth)]) == 0
    assert "warning:" not in capsys.readouterr().err


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("phonewatch: error: "), err
    return lines[0]


def test_run_with_data_dir_a_file_is_one_line(
    tmp_path: Path,
    make_video: Callable[..., Path],
    brightness_model: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = unit_config(tmp_path, make_video([100] * 3), brightness_model)
    (tmp_path / "unit").write_text("not a folder")
    assert main(["run", "--config", str(cfg), "--offline"]) == 1
    line = _one_line_error(capsys)
    assert f"unit.data_dir: {tmp_path / 'unit'} is a file, not a folder" in line


def test_keys_generate_out_a_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "keys").write_text("a file")
    assert main(["keys", "generate", "--unit", "u1", "--out", str(tmp_path / "keys")]) == 1
    assert f"{tmp_path / 'keys'} is a file, not a folder" in _one_line_error(capsys)


def test_roi_preview_shows_the_rear_views_vanishing_point(
    tmp_path: Path,
    make_video: Callable[..., Path],
    brightness_model: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.conftest import TEST_DATA

    video = make_video([30] * 2, box=(0.05, 0.1, 0.45, 0.9), size=(320, 240))
    cfg = unit_config(tmp_path, video, brightness_model)
    with cfg.open("a") as f:
        f.write(
            f'[vehicles]\nmodel = "{TEST_DATA / "raw_detector_t_int8.tflite"}"\n'
            'view = "rear"\naxis_x = 0.6\nhorizon_y = 0.25\n'
        )
    out = tmp_path / "roi.png"
    assert main(["roi-preview", "--config", str(cfg), "--out", str(out)]) == 0
    img = cv2.imread(str(out))
    assert img is not None

    def yellow(px: np.ndarray) -> bool:
        b, g, r = (int(c) for c in px)
        return b < 60 and g > 180 and r > 220

    column, row = round(0.6 * 320), round(0.25 * 240)
    assert sum(yellow(img[y, column]) for y in range(240)) > 150  # the column, top to bottom
    assert sum(yellow(img[row, x]) for x in range(320)) > 150  # the row, side to side
    assert sum(yellow(img[200, x]) for x in range(320)) <= 3  # another row: only the column
    assert "axis_x 0.60" in capsys.readouterr().out
    # another view draws neither
    plain = unit_config(tmp_path, video, brightness_model)
    assert main(["roi-preview", "--config", str(plain), "--out", str(out)]) == 0
    img = cv2.imread(str(out))
    assert img is not None
    assert sum(yellow(img[y, column]) for y in range(240)) < 10


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("previews", "is a folder"),
        ("roi.xyz", "write a .png, .jpg, .jpeg image"),
        ("roi", "write a .png, .jpg, .jpeg image"),
    ],
)
def test_roi_preview_out_problems_are_one_line(
    tmp_path: Path,
    make_video: Callable[..., Path],
    brightness_model: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    says: str,
) -> None:
    cfg = unit_config(tmp_path, make_video([100] * 3), brightness_model)
    (tmp_path / "previews").mkdir()
    assert main(["roi-preview", "--config", str(cfg), "--out", str(tmp_path / name)]) == 1
    assert says in _one_line_error(capsys)


@pytest.mark.slow
def test_every_option_has_help_and_no_literal_percent() -> None:
    import argparse

    from edge.app.cli import build_parser

    missing: list[str] = []

    def walk(p: argparse.ArgumentParser, path: str) -> None:
        assert "%%" not in p.format_help(), path
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    walk(sp, f"{path} {name}")
            elif not isinstance(a, (argparse._HelpAction, argparse._VersionAction)) and not a.help:
                missing.append(f"{path} {'/'.join(a.option_strings) or a.dest}")

    walk(build_parser(), "phonewatch")
    assert missing == []
    r = _run_cli("eval", "--help")
    assert "1/5/10% FPR" in r.stdout.replace("\n", " ").replace("  ", " ")


def test_replay_camera_refuses_picamera_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "r.toml"
    p.write_text(
        '[unit]\nid = "x"\n[camera]\ntype = "replay"\npath = "a.mp4"\n'
        'main_size = [640, 480]\n[[rois]]\nid = "a"\nrect = [0, 0, 1, 1]\n'
        '[model]\npath = "m.tflite"\n'
    )
    assert main(["check", "--config", str(p)]) == 1
    assert "camera.main_size: not valid for type = 'replay'" in capsys.readouterr().out


def test_a_missing_sidecar_names_the_command_that_writes_one(
    tmp_path: Path, brightness_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    model = tmp_path / "third_party.tflite"
    shutil.copy(brightness_model, model)
    cv2.imwrite(str(tmp_path / "a.png"), np.full((40, 40, 3), 10, np.uint8))
    assert main(["classify", "--model", str(model), str(tmp_path / "a.png")]) == 1
    line = _one_line_error(capsys)
    assert "third_party.json is missing" in line
    assert "phonewatch sidecar" in line
    cfg = unit_config(tmp_path, tmp_path / "gone.mp4", model)
    assert main(["check", "--config", str(cfg)]) == 1
    fail = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("FAIL model"))
    assert "third_party.json is missing" in fail
    assert "phonewatch sidecar" in fail


@pytest.mark.slow
def test_commands_do_not_print_runtime_noise(tmp_path: Path, brightness_model: Path) -> None:
    # No Edge TPU on this host: 'auto' falls back to the CPU; that is INFO (-v), not a warning
    # on every command, and TFLite's XNNPACK line is not shown.
    cv2.imwrite(str(tmp_path / "a.png"), np.full((40, 40, 3), 10, np.uint8))
    r = _run_cli(
        "classify",
        "--accelerator",
        "auto",
        "--model",
        str(brightness_model),
        str(tmp_path / "a.png"),
    )
    assert r.returncode == 0
    assert json.loads(r.stdout)["label"] == "no_phone"
    assert r.stderr == ""
    r = _run_cli(
        "-v",
        "classify",
        "--accelerator",
        "auto",
        "--model",
        str(brightness_model),
        str(tmp_path / "a.png"),
    )
    assert r.stderr.count("Edge TPU not used") == 1
    assert "XNNPACK" not in r.stderr


def test_roi_labels_are_drawn_once_on_a_box_with_a_legend() -> None:
    from edge.app.overlay import COLD_BGR, HOT_BGR, LABEL_BG_BGR, draw_rois
    from edge.core.roi import Roi

    img = np.full((480, 640, 3), 255, np.uint8)
    roi = Roi.rect("lane1", 0.3, 0.3, 0.6, 0.6, margin=0.0)
    out = draw_rois(img, [roi], {"lane1": 0.11}, 0.5)
    x0, y0, _, _ = roi.crop_box(640, 480)
    # the label sits above the region: every pixel there is the label box, the label's colour
    # or a blend of the two (one rendering, no offset halo over the picture)
    patch = out[y0 - 18 : y0 - 2, x0 + 2 : x0 + 60].reshape(-1, 3).astype(float)
    bg, fg = np.array(LABEL_BG_BGR, float), np.array(COLD_BGR, float)
    d = fg - bg
    t = np.clip((patch - bg) @ d / (d @ d), 0, 1)
    off_line = np.linalg.norm(patch - (bg + t[:, None] * d), axis=1)
    assert off_line.max() < 40
    assert (t > 0.8).sum() > 20  # text is there
    # the legend: the bottom-left corner explains red, green and the crop box
    corner = out[400:, :200]
    assert (np.all(corner == LABEL_BG_BGR, axis=2)).sum() > 1000
    assert (np.all(corner == HOT_BGR, axis=2)).sum() > 10
    assert (np.all(corner == COLD_BGR, axis=2)).sum() > 10


@pytest.mark.slow
def test_eval_does_not_print_the_runtime_line(tmp_path: Path, brightness_model: Path) -> None:
    for label, level in (("phone", 240), ("no_phone", 10)):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(
                str(tmp_path / "data" / label / f"{i}.png"), np.full((40, 40, 3), level, np.uint8)
            )
    r = _run_cli("eval", "--model", str(brightness_model), "--data", str(tmp_path / "data"))
    assert r.returncode == 0, r.stderr
    assert "XNNPACK" not in r.stderr


def test_pins_names_every_board_and_uart_the_installer_supports(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # docs/field.md's board table (what deploy/ansible/site.yml sets up) against the pin map
    rows = [
        [c.strip(" `") for c in line.strip("|").split("|")]
        for line in (REPO / "docs" / "field.md").read_text(encoding="utf-8").splitlines()
        if line.startswith(("| Pi 4 ", "| Pi 5 "))
    ]
    boards = {r[0].split(" /")[0]: (r[2], r[3]) for r in rows}
    assert set(boards) == {"Pi 4", "Pi 5"}
    pin_map = REPO / "hardware" / "pinmap.toml"
    assert main(["pins", "--pin-map", str(pin_map)]) == 0
    text = capsys.readouterr().out
    title = text.splitlines()[0]
    assert "Raspberry Pi 4 or 5" in title
    by_signal = {line.split()[0]: line for line in text.splitlines()[2:]}
    for board, (gnss, supervisor) in boards.items():
        assert gnss in by_signal["gnss_rx"], board
        assert f"{board} " in by_signal["uart_pi_to_pico"]
        assert supervisor in by_signal["uart_pi_to_pico"], board
