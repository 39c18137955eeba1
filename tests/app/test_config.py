from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge.adapters.camera_config import ReplayCameraConfig
from edge.app.compose import Paths
from edge.app.config import load_config, parse_config
from edge.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """
[unit]
id = "u1"
[camera]
type = "replay"
path = "clip.mp4"
[[rois]]
id = "lane1"
rect = [0.1, 0.2, 0.4, 0.6]
[model]
path = "m.tflite"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "unit.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("name", ["junction.toml", "patrol.toml"])
def test_shipped_examples_are_valid(name: str) -> None:
    cfg = load_config(REPO / "deploy" / "config" / name)
    assert cfg.unit.mode == name.removesuffix(".toml")
    assert cfg.model.path.name == "phone_in_hand.tflite"
    assert cfg.model.path.is_absolute()
    assert all(r.to_roi() for r in cfg.first_camera.rois)
    if name == "patrol.toml":  # a patrol car tracks vehicles; its sidecar ships in the repo
        from edge.core.detection_spec import load_detector_spec

        assert cfg.vehicles is not None
        assert cfg.vehicles.view == "rear"
        assert (cfg.vehicles.legible_min_px, cfg.vehicles.lost_frames_count) == (32, False)
        v = cfg.vehicles
        assert (v.horizon_y, v.hfov_deg, v.camera_height_m) == (0.42, 66.0, 1.3)
        sidecar = REPO / "models" / "vehicle" / cfg.vehicles.model.name
        spec = load_detector_spec(sidecar.parent / "coco_ssd_mobilenet_v1.json")
        assert spec.file == cfg.vehicles.model.name


def test_minimal_config_gets_defaults_and_resolves_paths(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL))
    assert isinstance(cfg.camera, ReplayCameraConfig)
    assert cfg.camera.path == tmp_path / "clip.mp4"
    assert cfg.model.accelerator == "auto"
    p = cfg.decider.params(model_threshold=0.8)
    assert p.score_on == 0.8
    assert p.score_off == pytest.approx(0.48)
    assert cfg.sink.type == "jsonl"
    assert Paths.of(cfg).evidence_dir == cfg.unit.data_dir / "evidence"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (MINIMAL.replace('id = "u1"', 'id = "u1"\nmood = "x"'), "unit.mood: unknown key"),
        (MINIMAL + "\n[decider]\nwindwo = 3\n", "decider.windwo: unknown key"),
        (
            MINIMAL.replace("rect = [0.1, 0.2, 0.4, 0.6]", "rect = [0.1, 0.2, 1.4, 0.6]"),
            "rois.0: .*outside the frame",
        ),
        (MINIMAL.replace('type = "replay"', 'type = "webcam"'), "camera"),
        (MINIMAL.replace('path = "clip.mp4"', 'path = "clip.mp4"\nspeed = -1'), "camera.*speed"),
        (MINIMAL + "\n[decider]\nwindow = 3\nmin_frames = 5\n", "decider: .*min_frames"),
        (
            MINIMAL.replace(
                '[model]\npath = "m.tflite"', '[model]\npath = "m.tflite"\naccelerator = "tpu"'
            ),
            "model.accelerator",
        ),
        (MINIMAL.replace('id = "u1"', 'id = "u 1"'), "unit.id"),
        (MINIMAL.replace('[unit]\nid = "u1"\n', ""), "unit: required key is missing"),
        (MINIMAL + '\n[[rois]]\nid = "lane1"\nrect = [0.5, 0.2, 0.9, 0.6]\n', "unique"),
        (
            MINIMAL.replace(
                "rect = [0.1, 0.2, 0.4, 0.6]",
                "rect = [0.1, 0.2, 0.4, 0.6]\npolygon = [[0.1, 0.1], [0.2, 0.1], [0.2, 0.2]]",
            ),
            "exactly one",
        ),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(write(tmp_path, text))


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "none.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[unit\nid="))


def test_every_field_is_described_and_numbers_are_bounded() -> None:
    from pydantic import BaseModel

    from edge.app import config as c

    seen: set[type] = set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for name, f in model.model_fields.items():
            assert f.description, f"{model.__name__}.{name} has no description"
            ann = f.annotation
            for sub in (*getattr(ann, "__args__", ()), ann):
                if isinstance(sub, type) and issubclass(sub, BaseModel):
                    walk(sub)
                for subsub in getattr(sub, "__args__", ()):
                    if isinstance(subsub, type) and issubclass(subsub, BaseModel):
                        walk(subsub)
            if ann in (int, float) and name not in ("index",):
                assert f.metadata, f"{model.__name__}.{name} has no bounds"

    walk(c.Config)
    from edge.adapters.camera_config import ReplayCameraConfig

    assert c.DeciderConfig in seen
    assert ReplayCameraConfig in seen


def test_parse_config_without_a_file() -> None:
    cfg = parse_config(
        {
            "unit": {"id": "x"},
            "camera": {"type": "folder", "path": "/tmp"},
            "rois": [{"id": "a", "polygon": [[0, 0], [1, 0], [1, 1]]}],
            "model": {"path": "/m.tflite"},
        }
    )
    assert cfg.first_camera.rois[0].to_roi().is_polygon


def test_a_rect_roi_can_be_turned_upright_a_polygon_cannot() -> None:
    base: dict[str, Any] = {
        "unit": {"id": "x"},
        "camera": {"type": "folder", "path": "/tmp"},
        "model": {"path": "/m.tflite"},
    }
    cfg = parse_config({**base, "rois": [{"id": "a", "rect": [0, 0, 0.5, 0.5], "rotate_deg": -24}]})
    assert cfg.first_camera.rois[0].to_roi().rotate_deg == -24.0
    poly = {"id": "p", "polygon": [[0, 0], [1, 0], [1, 1]], "rotate_deg": 10}
    with pytest.raises(ConfigError, match=r"rois.0: .*rotate_deg is for 'rect'"):
        parse_config({**base, "rois": [poly]})
    with pytest.raises(ConfigError, match="rotate_deg"):
        parse_config({**base, "rois": [{"id": "a", "rect": [0, 0, 0.5, 0.5], "rotate_deg": 200}]})
