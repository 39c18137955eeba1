"""The composed unit: systemd readiness and frame-gated watchdog, through a real socket."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.app.compose import Unit
from edge.app.config import Config, parse_config
from edge.core.frame import Frame
from tests.waiting import wait_until


def unit_cfg(tmp_path: Path, video: Path, model: Path, *, loop: bool = True) -> Config:
    return parse_config(
        {
            "unit": {"id": "sd-test", "data_dir": str(tmp_path / "unit")},
            "camera": {"type": "replay", "path": str(video), "loop": loop, "speed": 1.0},
            "rois": [{"id": "a", "rect": [0.1, 0.1, 0.5, 0.9]}],
            "model": {"path": str(model), "accelerator": "cpu"},
            "stats": {"log_interval_s": 0.5},
        }
    )


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # 0.4 s: pet every 0.2 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    got: list[str] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            try:
                got.extend(sock.recv(4096).decode().split("\n"))
            except TimeoutError:
                continue

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    yield got
    stop.set()
    t.join(2)
    sock.close()


@pytest.mark.slow
def test_ready_then_watchdog_while_frames_flow_then_stopping(
    tmp_path: Path,
    make_video: Callable[..., Path],
    brightness_model: Path,
    notify_socket: list[str],
) -> None:
    video = make_video([90] * 20, fps=25.0)
    with Unit(unit_cfg(tmp_path, video, brightness_model)) as unit:
        snap = unit.run(max_s=1.5)
    assert snap["frames_processed"] > 10
    # the listener thread may still be reading the last datagrams
    wait_until(lambda: "STOPPING=1" in notify_socket and notify_socket.count("WATCHDOG=1") >= 3, 5)
    assert "READY=1" in notify_socket
    assert notify_socket.count("WATCHDOG=1") >= 3
    assert "STOPPING=1" in notify_socket
    assert notify_socket.index("READY=1") < notify_socket.index("WATCHDOG=1")


@pytest.mark.slow
def test_no_frames_no_watchdog(
    tmp_path: Path,
    make_video: Callable[..., Path],
    brightness_model: Path,
    notify_socket: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    video = make_video([90] * 20, fps=25.0)
    with Unit(unit_cfg(tmp_path, video, brightness_model)) as unit:
        assert unit.pipeline is not None

        stopping = unit.pipeline.stop_event

        def stuck(frame: Frame, tensors: list[np.ndarray], prep_ms: float, *rest: object) -> None:
            stopping.wait(10)  # the interpreter hangs (until shutdown): no frame gets through

        monkeypatch.setattr(unit.pipeline, "_process", stuck)
        unit.run(max_s=1.5)
    # datagrams arrive in order: once the last one (STOPPING) is read, any pet would have been
    wait_until(lambda: "STOPPING=1" in notify_socket, 5)
    assert "READY=1" in notify_socket
    assert "WATCHDOG=1" not in notify_socket  # systemd would restart the unit


def patrol_cfg(tmp_path: Path, video: Path, model: Path, **gpio: object) -> Config:
    return parse_config(
        {
            "unit": {"id": "patrol-test", "mode": "patrol", "data_dir": str(tmp_path / "unit")},
            "camera": {"type": "replay", "path": str(video), "speed": 1.0},
            "rois": [{"id": "windscreen", "rect": [0.1, 0.1, 0.5, 0.9], "margin": 0.0}],
            "model": {"path": str(model), "accelerator": "cpu"},
            "decider": {"window": 4, "min_frames": 3, "cooldown_s": 0},
            "gpio": {"pattern_scale": 0.05, **gpio},
        }
    )


@pytest.fixture
def mock_pins(monkeypatch: pytest.MonkeyPatch) -> Iterator[MockFactory]:
    """gpiozero's own MockFactory, chosen the way a unit chooses a pin factory: by env var."""
    from gpiozero import Device

    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    Device.pin_factory = MockFactory()
    yield Device.pin_factory
    Device.pin_factory.reset()
    Device.pin_factory = None


@pytest.mark.slow
def test_patrol_hit_sounds_the_buzzer_on_the_mapped_pin(
    tmp_path: Path, make_video: Callable[..., Path], brightness_model: Path, mock_pins: MockFactory
) -> None:
    video = make_video([20] * 5 + [240] * 10 + [20] * 10, box=(0.1, 0.1, 0.5, 0.9), fps=25.0)
    buzzer = mock_pins.pin(27)  # hardware/pinmap.toml: signals.buzzer
    with Unit(patrol_cfg(tmp_path, video, brightness_model)) as unit:
        assert unit.field_io is not None
        assert unit.field_io.status in ("starting", "running")
        snap = unit.run(max_s=5)
    assert snap["hits"] == 1
    # MockPin keeps every state change: the buzzer went high, then low again.
    states = [bool(s.state) for s in buzzer.states]
    assert True in states
    assert states[-1] is False


def test_ignition_off_ends_the_run_and_requests_power_off(
    tmp_path: Path, make_video: Callable[..., Path], brightness_model: Path, mock_pins: MockFactory
) -> None:
    video = make_video([60] * 10, fps=25.0)
    ignition = mock_pins.pin(23)  # signals.ignition
    ignition.drive_high()
    cfg = patrol_cfg(tmp_path, video, brightness_model, shutdown_delay_s=0.2)
    assert cfg.camera is not None
    cfg = cfg.model_copy(update={"camera": cfg.camera.model_copy(update={"loop": True})})
    import time

    with Unit(cfg) as unit:
        threading.Timer(0.5, ignition.drive_low).start()
        t0 = time.monotonic()
        unit.run(max_s=10)
        assert time.monotonic() - t0 < 5  # stopped by the ignition, not by max_s
        assert unit.shutdown_requested.is_set()


def test_one_alert_id_on_disk_in_the_log_and_on_the_wire(
    tmp_path: Path, make_video: Callable[..., Path], brightness_model: Path
) -> None:
    """The id the dashboard shows (<unit>-<seq>) names the evidence on the unit too, and a
    JSON-lines sink records the same id, sequence number, time and GPS state as the uplink
    would (the app stamps them on the detection, not the uplink)."""
    import json

    from edge.adapters.sinks import MemorySink

    video = make_video([20] * 10 + [240] * 12 + [20] * 10, box=(0.1, 0.2, 0.4, 0.8))
    cfg = parse_config(
        {
            "unit": {"id": "jn-0001", "data_dir": str(tmp_path / "unit")},
            "camera": {"type": "replay", "path": str(video), "speed": 0.0},
            "rois": [{"id": "left", "rect": [0.1, 0.2, 0.4, 0.8]}],
            "model": {"path": str(brightness_model), "accelerator": "cpu"},
            "decider": {"window": 6, "min_frames": 3, "cooldown_s": 0},
        }
    )
    seen = MemorySink()
    with Unit(cfg, lossless=True, extra_sink=seen) as unit:
        unit.run()
    assert len(seen.detections) == 1
    det = seen.detections[0]
    assert det.seq is not None
    assert det.alert_id == f"jn-0001-{det.seq}"
    folder = Path(det.evidence.frame_path).parent
    assert folder.name.endswith("_" + det.alert_id)  # find it on the unit by that id
    line = json.loads((tmp_path / "unit" / "alerts.jsonl").read_text().splitlines()[0])
    assert line["alert_id"] == det.alert_id
    assert line["seq"] == det.seq
    assert line["time_source"] == "system"
    assert line["time_utc"].endswith("Z")
    assert line["extra"] == {"mode": "junction"}
    # numbers never go backwards: a second run continues above the first
    seen2 = MemorySink()
    with Unit(cfg, lossless=True, extra_sink=seen2) as unit:
        unit.run()
    assert seen2.detections[0].seq is not None
    assert seen2.detections[0].seq > det.seq
