"""``phonewatch controlroom model-key / model ...`` as an operator runs them, against a real
Mosquitto, a serving receiver and a unit with the new key pinned."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from controlroom.receiver import Receiver
from edge.app.cli import main
from edge.app.local_broker import LocalBroker
from edge.common.signing import load_private_key
from tests.controlroom.conftest import Unit
from tests.controlroom.test_rollout import start_unit
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[1] / "data"


def test_key_package_offer_status_from_the_command_line(
    tmp_path: Path,
    broker: LocalBroker,
    engine: Engine,
    receiver: Receiver,
    unit_a: Unit,
    capsys: pytest.CaptureFixture[str],
) -> None:
    keys, pkg = tmp_path / "keys", tmp_path / "b.pwpkg"
    assert main(["controlroom", "model-key", "generate", "--out", str(keys)]) == 0
    assert "trusted_keys" in capsys.readouterr().out
    assert main(["controlroom", "model-key", "generate", "--out", str(keys)]) == 1
    assert "already exists" in capsys.readouterr().err
    priv = keys / "controlroom-model.sign.key"
    package = [
        "controlroom",
        "model",
        "package",
        "--model",
        str(DATA / "brightness_int8.tflite"),
        "--key",
        str(priv),
        "--out",
        str(pkg),
    ]
    assert main(package) == 0
    assert "brightness-int8 test-1" in capsys.readouterr().out
    assert main(package) == 1
    assert "refusing to overwrite a package" in capsys.readouterr().err

    cfg = tmp_path / "cr.toml"
    cfg.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "cr.sqlite"}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nclient_id = "cr-cli"\n'
    )
    offer = ["controlroom", "model", "offer", "--config", str(cfg), "--package", str(pkg)]
    assert main([*offer, "--unit", "nobody", "--mode", "live"]) == 1
    assert "unit 'nobody' is not registered" in capsys.readouterr().err

    unit = start_unit(broker, tmp_path / "unit-a", load_private_key(priv))
    try:
        assert wait_until(lambda: main([*offer, "--unit", "unit-a", "--mode", "live"]) == 0, 10)
        out = capsys.readouterr().out
        assert "brightness-int8 test-1" in out
        assert "to unit-a as live" in out
        assert wait_until(lambda: unit.packages, 10)
        assert unit.packages[0][0].version == "test-1"

        def shown() -> str:
            assert main(["controlroom", "model", "status", "--config", str(cfg)]) == 0
            return capsys.readouterr().out

        assert wait_until(lambda: "live  installed" in shown(), 10)
    finally:
        unit.close()
