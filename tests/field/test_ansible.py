"""deploy/ansible: syntax-check, ansible-lint (production profile), and the unit config it
writes, rendered by real Ansible and loaded by the real config loader."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from edge.adapters.gpio_config import load_pin_map
from edge.app.config import load_config

from .conftest import REPO

ANSIBLE_DIR = REPO / "deploy" / "ansible"
BIN = Path(sys.executable).parent
yaml = pytest.importorskip("yaml")  # comes with ansible-core


def _tool(name: str) -> str | None:
    local = BIN / name
    return str(local) if local.exists() else shutil.which(name)


def _found(name: str) -> str:
    path = _tool(name)
    assert path is not None, f"{name}: the test's skipif should have skipped it"
    return path


def _env() -> dict[str, str]:
    env = {
        **os.environ,
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": "/tmp/.ansible-tmp",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("ANSIBLE_CONFIG", None)
    return env


@pytest.mark.slow
@pytest.mark.skipif(_tool("ansible-playbook") is None, reason="ansible-core not installed")
def test_playbook_syntax_check() -> None:
    r = subprocess.run(
        [_found("ansible-playbook"), "--syntax-check", "-i", "inventory.example.yml", "site.yml"],
        cwd=ANSIBLE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.skipif(_tool("ansible-lint") is None, reason="ansible-lint not installed")
def test_ansible_lint_production_profile() -> None:
    r = subprocess.run(
        [_found("ansible-lint"), "--offline", "--nocolor"],
        cwd=ANSIBLE_DIR,
        capture_output=True,
        text=True,
        timeout=240,
        env=_env(),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Profile 'production' was required, and it passed" in r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.skipif(_tool("ansible") is None, reason="ansible-core not installed")
def test_rendered_unit_config_loads(tmp_path: Path) -> None:
    mode = "patrol"
    dest = tmp_path / "unit.toml"
    extra = {
        "phonewatch_mode": mode,
        "phonewatch_unit_id": f"{mode}-0042",
        "phonewatch_rois": [
            {"id": "lane1", "rect": [0.1, 0.3, 0.45, 0.7]},
            {"id": "lane2", "rect": [0.55, 0.3, 0.9, 0.7]},
        ],
        "phonewatch_pi_model": "Raspberry Pi 5 Model B Rev 1.0",  # the playbook reads it
        "ansible_python_interpreter": sys.executable,
    }
    r = subprocess.run(
        [
            _found("ansible"),
            "localhost",
            "-c",
            "local",
            "-i",
            "localhost,",
            "-m",
            "ansible.builtin.template",
            "-a",
            f"src={ANSIBLE_DIR / 'templates' / 'unit.toml.j2'} dest={dest}",
            "-e",
            f"@{ANSIBLE_DIR / 'group_vars' / 'all.yml'}",
            "-e",
            json.dumps(extra),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = load_config(dest)  # the real loader: unknown keys or bad values would fail here
    assert cfg.unit.id == f"{mode}-0042"
    assert cfg.unit.mode == mode
    assert [roi.id for roi in cfg.first_camera.rois] == ["lane1", "lane2"]
    assert cfg.gpio is not None
    assert cfg.gpio.ignition_sense is (mode == "patrol")
    assert (cfg.vehicles is not None) is (mode == "patrol")  # patrol cars track vehicles
    assert str(cfg.gpio.pin_map) == "/etc/phonewatch/pinmap.toml"
    assert cfg.sink.type == "mqtt"


def test_playbook_promises() -> None:
    plays = yaml.safe_load((ANSIBLE_DIR / "site.yml").read_text())
    tasks = {t["name"]: t for t in plays[1]["tasks"]}
    defaults = yaml.safe_load((ANSIBLE_DIR / "group_vars" / "all.yml").read_text())
    assert "python3-picamera2" in defaults["phonewatch_apt_packages"]
    assert "chrony" in defaults["phonewatch_apt_packages"]
    pip = tasks["Install phonewatch into /opt/phonewatch/venv (with system site packages)"]
    assert pip["ansible.builtin.pip"]["virtualenv_site_packages"] is True
    user = tasks["Create the service user (camera, GPIO and serial groups only)"]
    assert user["ansible.builtin.user"]["groups"] == ["video", "gpio", "dialout"]
    uart_lines = tasks["Enable the UARTs and the PPS input in config.txt"]["loop"]
    assert uart_lines == "{{ phonewatch_config_txt }}"  # per board: test_board_values
    assert defaults["phonewatch_pi_boards"]["5"]["config_txt"][:2] == [
        "dtparam=uart0=on",
        "dtoverlay=uart2-pi5",
    ]
    assert "board model" in " ".join(tasks)  # read from /proc/device-tree/model
    pm = load_pin_map()
    pps = pm.signals["gnss_pps"].pi
    assert pps is not None
    assert defaults["phonewatch_pps_gpio"] == pps.gpio  # same as the pin map
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert defaults["phonewatch_version"] == version  # the wheel name the playbook expects
    unit = (REPO / "deploy" / "systemd" / "phonewatch.service").read_text()
    assert "/opt/phonewatch/venv/bin/phonewatch run --config /etc/phonewatch/unit.toml" in unit


def _render(expr: str, extra: dict[str, object]) -> object:
    """``expr`` templated by real Ansible with group_vars/all.yml and ``extra`` (extra vars)."""
    r = subprocess.run(
        [
            _tool("ansible"),  # type: ignore[list-item]
            "localhost",
            "-c",
            "local",
            "-i",
            "localhost,",
            "-m",
            "ansible.builtin.debug",
            "-a",
            "msg={{ " + expr + " | to_json }}",
            "-e",
            f"@{ANSIBLE_DIR / 'group_vars' / 'all.yml'}",
            "-e",
            json.dumps({"ansible_python_interpreter": sys.executable, **extra}),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    body = r.stdout[r.stdout.index("{") :]
    msg = json.loads(body)["msg"]
    return json.loads(msg) if isinstance(msg, str) else msg  # Ansible may hand back native


BOARDS = [
    # (/proc/device-tree/model, board, config.txt overlays, GNSS port, supervisor port)
    (
        "Raspberry Pi 5 Model B Rev 1.0",
        "5",
        ["dtparam=uart0=on", "dtoverlay=uart2-pi5"],
        "/dev/ttyAMA0",
        "/dev/ttyAMA2",
    ),
    (
        "Raspberry Pi 4 Model B Rev 1.5",
        "4",
        ["dtoverlay=disable-bt", "dtoverlay=uart3"],
        "/dev/ttyAMA0",
        "/dev/ttyAMA1",
    ),
    (
        "Raspberry Pi Compute Module 4 Rev 1.1",
        "4",
        ["dtoverlay=disable-bt", "dtoverlay=uart3"],
        "/dev/ttyAMA0",
        "/dev/ttyAMA1",
    ),
]


@pytest.mark.slow
@pytest.mark.skipif(_tool("ansible") is None, reason="ansible-core not installed")
@pytest.mark.parametrize(
    ("model", "board", "overlays", "gnss", "supervisor"),
    BOARDS,
    ids=[b[1] + ":" + b[0].split(" Rev")[0] for b in BOARDS],
)
def test_board_values(
    model: str, board: str, overlays: list[str], gnss: str, supervisor: str
) -> None:
    got = _render(
        "{'board': phonewatch_pi_board, 'txt': phonewatch_config_txt, "
        "'gnss': phonewatch_gnss_port, 'sup': phonewatch_supervisor_port}",
        {"phonewatch_pi_model": model},
    )
    assert got == {
        "board": board,
        "gnss": gnss,
        "sup": supervisor,
        "txt": [
            "enable_uart=1",
            *overlays,
            *(["usb_max_current_enable=1"] if board == "5" else []),
            "dtoverlay=pps-gpio,gpiopin=18",
        ],
    }


@pytest.mark.slow
@pytest.mark.skipif(_tool("ansible") is None, reason="ansible-core not installed")
def test_other_boards_are_refused() -> None:
    got = _render(
        "phonewatch_pi_board in phonewatch_pi_boards",
        {"phonewatch_pi_model": "Raspberry Pi 3 Model B Plus Rev 1.3"},
    )
    assert got is False


@pytest.mark.slow
@pytest.mark.skipif(_tool("ansible") is None, reason="ansible-core not installed")
def test_pi4_unit_config_and_gpsd_use_the_pi4_ports(tmp_path: Path) -> None:
    extra = {
        "phonewatch_pi_model": "Raspberry Pi 4 Model B Rev 1.5",
        "phonewatch_unit_id": "junction-0004",
        "ansible_python_interpreter": sys.executable,
    }
    for src in ("unit.toml.j2", "gpsd.j2"):
        r = subprocess.run(
            [
                _tool("ansible"),  # type: ignore[list-item]
                "localhost",
                "-c",
                "local",
                "-i",
                "localhost,",
                "-m",
                "ansible.builtin.template",
                "-a",
                f"src={ANSIBLE_DIR / 'templates' / src} dest={tmp_path / src[:-3]}",
                "-e",
                f"@{ANSIBLE_DIR / 'group_vars' / 'all.yml'}",
                "-e",
                json.dumps(extra),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=_env(),
        )
        assert r.returncode == 0, r.stdout + r.stderr
    cfg = load_config(tmp_path / "unit.toml")
    assert cfg.gpio is not None
    assert cfg.gpio.supervisor_port == "/dev/ttyAMA1"
    assert 'DEVICES="/dev/ttyAMA0 /dev/pps0"' in (tmp_path / "gpsd").read_text()
    sink = cfg.sink
    assert sink.type == "mqtt"
    assert [p.name for p in (sink.cert_file, sink.key_file, sink.signing_key)] == [  # type: ignore[union-attr]
        "junction-0004.crt",
        "junction-0004.key",
        "junction-0004.sign.key",
    ]
