"""`phonewatch controlroom serve / receive` as an operator first tries them (issue 20)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.app.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "controlroom" / "controlroom.toml"

pytest.importorskip("sqlalchemy")


@pytest.mark.slow
def test_receive_without_a_receiver_refuses_instead_of_sitting_silently(tmp_path: Path) -> None:
    cfg = tmp_path / "cr.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "cr.sqlite"}"\n')
    # a subprocess: before the fix it sat there forever, doing nothing
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge.app.cli",
            "controlroom",
            "receive",
            "--no-receiver",
            "--config",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert r.returncode == 1
    assert r.stderr.startswith(
        "phonewatch: error: nothing to run: 'controlroom receive' is a receiver only"
    )
    assert "controlroom serve --no-receiver" in r.stderr
    assert "Traceback" not in r.stderr


def test_serve_without_receiver_and_web_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "cr.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "cr.sqlite"}"\n')
    assert main(["controlroom", "serve", "--no-receiver", "--no-web", "--config", str(cfg)]) == 1
    assert "nothing to run" in capsys.readouterr().err


@pytest.mark.skipif(
    Path("/var/lib/phonewatch-controlroom").exists(),
    reason="this host has the control room's state directory",
)
def test_serve_with_the_example_config_names_the_missing_folder(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["controlroom", "serve", "--config", str(EXAMPLE)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "Traceback" not in err
    assert err.startswith(
        "phonewatch: error: database.url sqlite:////var/lib/"
        "phonewatch-controlroom/controlroom.sqlite: the folder "
        "/var/lib/phonewatch-controlroom does not exist"
    )


def test_an_unforeseen_os_error_is_one_line_naming_the_file() -> None:
    # The backstop for any OSError a command did not foresee (the example config's TLS files
    # once ended in a FileNotFoundError traceback naming no file): main() prints this line.
    from edge.app.cli import explain

    assert (
        explain(FileNotFoundError(2, "No such file or directory", "/etc/pw/ca.crt"))
        == "/etc/pw/ca.crt: No such file or directory"
    )
    assert (
        explain(OSError(18, "Invalid cross-device link", "/a", None, "/b"))
        == "/a -> /b: Invalid cross-device link"
    )
    assert explain(OSError("disk on fire")) == "OSError: disk on fire"
