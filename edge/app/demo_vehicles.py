"""The demo's second part: the vehicle stage on a rendered junction with moving cars.

``phonewatch demo`` first runs the fixed-ROI junction clip; then, when the vehicle detector
can be had, a second unit (``demo-vehicles``) runs the vehicle stage on a synthetic junction
of moving cars (``models.synth.patrol --scene junction``) and is scored per vehicle pass
against that clip's truth. The detector (COCO SSD MobileNet v1, Apache-2.0) is not in the
repository: it is taken from ``PHONEWATCH_VEHICLE_DETECTOR``, the shared test data, or
``var/models/vehicle/``, else downloaded there from tensorflow/tflite-support at a pinned
commit and checked against the SHA-256 its sidecar names (as the playbook does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from edge.adapters.classifier import file_sha256
from edge.app.config import Config, parse_config

REPO_ROOT = Path(__file__).resolve().parents[2]
SIDECAR = REPO_ROOT / "models" / "vehicle" / "coco_ssd_mobilenet_v1.json"
CACHE = REPO_ROOT / "var" / "models" / "vehicle"
URL = (
    "https://raw.githubusercontent.com/tensorflow/tflite-support/"
    "dd3362ea685bb7ab1f7268c81ec567d3b720ae57/tensorflow_lite_support/cc/test/testdata/task/"
    "vision/coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.tflite"
)
UNIT_ID = "demo-vehicles"
SECONDS = 30.0


def find_detector(*, download: bool = True) -> tuple[Path | None, str]:
    """The detector's path and where it came from, or None and why not."""
    spec = json.loads(SIDECAR.read_text(encoding="utf-8"))
    name, sha = str(spec["file"]), str(spec["sha256"])
    places = []
    if env := os.environ.get("PHONEWATCH_VEHICLE_DETECTOR"):
        places.append(Path(env))
    shared = os.environ.get("PHONEWATCH_SHARED_DATA")
    places += [
        *([Path(shared) / "models" / name] if shared else []),
        REPO_ROOT.parent / "shared" / "data" / "models" / name,
        CACHE / name,
    ]
    for p in places:
        if p.is_file() and file_sha256(p) == sha:
            return p, str(p)
    if not download:
        return None, "not found (PHONEWATCH_VEHICLE_DETECTOR, the shared data, var/models)"
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / (name + ".part")
    try:
        with urllib.request.urlopen(URL, timeout=30) as r, tmp.open("wb") as f:
            f.write(r.read(64 * 1024 * 1024))
    except OSError as e:
        tmp.unlink(missing_ok=True)
        return None, f"could not download it ({e})"
    if file_sha256(tmp) != sha:
        tmp.unlink(missing_ok=True)
        return None, f"the download from {URL} does not match the sidecar's SHA-256"
    tmp.replace(CACHE / name)
    return CACHE / name, f"downloaded to {CACHE / name}"


def make_clip(out: Path, seed: int) -> tuple[Path, Path]:
    """The moving-car junction clip and its per-vehicle truth (rendered once, then kept)."""
    video, truth = out / "junction.mp4", out / "truth.json"
    if video.is_file() and truth.is_file():
        return video, truth
    out.mkdir(parents=True, exist_ok=True)
    print(f"rendering the moving-vehicle junction into {out} ...", flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "models.synth.patrol",
            "--scene",
            "junction",
            "--seed",
            str(seed),
            "--seconds",
            str(SECONDS),
            "--out",
            str(out),
        ],
        check=True,
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
    )
    return video, truth


def config(
    data_dir: Path, video: Path, detector: Path, model: Path, sink: dict[str, Any]
) -> Config:
    """The second demo unit: a side-on junction camera, right-hand drive, the vehicle stage."""
    return parse_config(
        {
            "unit": {"id": UNIT_ID, "mode": "junction", "data_dir": str(data_dir)},
            "camera": {"type": "replay", "path": str(video), "speed": 0.0},
            "model": {"path": str(model), "accelerator": "auto"},
            "decider": {"window": 6, "min_frames": 3},
            "vehicles": {
                "model": str(detector),
                "sidecar": str(SIDECAR),
                "view": "side",
                "drive_side": "right",
            },
            "evidence": {"quota_mb": 200},
            "stats": {"log_interval_s": 10},
            "sink": sink,
        },
        source="vehicle demo config",
    )
