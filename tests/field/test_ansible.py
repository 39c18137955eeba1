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
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": "/tmp/.ansible-tmp",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("ANSIBLE_CONFIG", None)
    return env


@pytest.mark.slow
@pytest.mark.skipif(_tool("ansible-playbook") is None, reason="ansible-core not installed")
def test_playbook_syntax_check() -> None:
    r = subprocess.run(
        [_found("ansible-playbook"), "--syntax-check", "-i", "inventory.example.yml", "site.yml"],
        cwd=ANSIBLE_DIR, capture_output=True, text=True, timeout=120, env=_env(),
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.skipif(_tool("ansible-lint") is None, reason="ansible-lint not installed")
def test_ansible_lint_production_profile() -> None:
    r = subprocess.run([_found("ansible-lint"), "--offline", "--nocolor"],
                       cwd=ANSIBLE_DIR, capture_output=True, text=True, timeout=240, env=_env())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Profile 'production' was required, and it passed" in r.stdout + r.stderr


@pytest.mark.slow
@pytest.mark.skipif(_tool("ansible") is None, reason="ansible-core not installed")
def test_rendered_unit_config_loads(tmp_path: Path) -> None:
    mode = "patrol"
    dest = tmp_path / "unit.toml"
    extra = {"phonewatch_mode": mode, "phonewatch_unit_id": f"{mode}-0042",
             "phonewatch_rois": [{"id": "lane1", "rect": [0.1, 0.3, 0.45, 0.7]},
                                 {"id": "lane2", "rect": [0.55, 0.3, 0.9, 0.7]}],
             "ansible_python_interpreter": sys.executable}
    r = subprocess.run(
        [_found("ansible"), "localhost", "-c", "local", "-i", "localhost,",
         "-m", "ansible.builtin.template",
         "-a", f"src={ANSIBLE_DIR / 'templates' / 'unit.toml.j2'} dest={dest}",
         "-e", f"@{ANSIBLE_DIR / 'group_vars' / 'all.yml'}", "-e", json.dumps(extra)],
        capture_output=True, text=True, timeout=120, env=_env(),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    cfg = load_config(dest)  # the real loader: unknown keys or bad values would fail here
    assert cfg.unit.id == f"{mode}-0042"
    assert cfg.unit.mode == mode
    assert [roi.id for roi in cfg.rois] == ["lane1", "lane2"]
    assert cfg.gpio is not None
    assert cfg.gpio.ignition_sense is (mode == "patrol")
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
    assert "dtparam=uart0=on" in uart_lines
    assert "dtoverlay=uart2-pi5" in uart_lines
    pm = load_pin_map()
    pps = pm.signals["gnss_pps"].pi
    assert pps is not None
    assert defaults["phonewatch_pps_gpio"] == pps.gpio  # same as the pin map
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert defaults["phonewatch_version"] == version  # the wheel name the playbook expects
    unit = (REPO / "deploy" / "systemd" / "phonewatch.service").read_text()
    assert "/opt/phonewatch/venv/bin/phonewatch run --config /etc/phonewatch/unit.toml" in unit
