"""``phonewatch verify`` on good and tampered bundles, and the controlroom CLI commands
(add-unit, add-user, migrate, config errors) through the real ``phonewatch`` entry point."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from controlroom import bundle, db, users
from controlroom.config import load_config
from edge.app.cli import main
from edge.app.local_broker import LocalBroker, free_port
from edge.common.signing import generate_key, save_public_key
from tests.controlroom.conftest import Publisher, Unit, jpeg_bytes, pub_pem


def make_zip(unit: Unit, **overrides: bytes) -> bytes:
    payload, jpeg = unit.alert()
    data = bundle.make_bundle(
        alert_payload=payload,
        jpeg=jpeg,
        public_key_pem=pub_pem(unit.key),
        review={"reviewed_by": "alice", "reviewed_at": 1.7e9},
    )
    if not overrides:
        return data
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            if overrides.get(name) != b"<drop>":
                dst.writestr(name, overrides.get(name, src.read(name)))
    return out.getvalue()


@pytest.fixture
def unit() -> Unit:
    return Unit("unit-a", generate_key())


def run_verify(tmp_path: Path, data: bytes, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "bundle.zip"
    path.write_bytes(data)
    rc = main(["verify", str(path)])
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def test_verify_good_bundle_says_what_was_verified(
    tmp_path: Path, unit: Unit, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out = run_verify(tmp_path, make_zip(unit), capsys)
    assert rc == 0, out
    for check in (
        "alert format",
        "public key",
        "key id",
        "signature",
        "signature.txt",
        "evidence",
        "evidence is JPEG",
    ):
        assert f"PASS  {check}:" in out
    assert "FAIL" not in out
    assert "VERIFIED: alert unit-a-1 from unit unit-a" in out
    assert "NOT VERIFIED HERE: that this key belongs to unit unit-a" in out
    with zipfile.ZipFile(io.BytesIO(make_zip(unit))) as z:
        text = z.read("VERIFY.txt").decode()
    assert "phonewatch verify" in text
    assert "fingerprint" in text


def test_tampered_bundles_fail_and_name_the_check(
    tmp_path: Path, unit: Unit, capsys: pytest.CaptureFixture[str]
) -> None:
    with zipfile.ZipFile(io.BytesIO(make_zip(unit))) as z:
        alert = json.loads(z.read("alert.json"))
    higher = dict(alert, score=0.999)
    other = generate_key()
    cases = {
        "evidence": {"evidence.jpg": jpeg_bytes(1234)},
        "signature": {"alert.json": json.dumps(higher).encode()},
        "key id": {"unit_public_key.pem": pub_pem(other)},
        "signature.txt": {"signature.txt": b"AAAA\n"},
        "alert format": {"alert.json": b'{"schema": "phonewatch.alert"}'},
    }
    for failing, override in cases.items():
        rc, out = run_verify(tmp_path, make_zip(unit, **override), capsys)
        assert rc == 1, (failing, out)
        assert f"FAIL  {failing}:" in out, (failing, out)
        assert "NOT VERIFIED" in out
        assert "VERIFIED: alert" not in out


def test_unreadable_bundles_are_clear_errors(
    tmp_path: Path, unit: Unit, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out = run_verify(tmp_path, b"not a zip", capsys)
    assert rc == 1
    assert "is not a ZIP file" in out
    assert "Traceback" not in out
    rc, out = run_verify(tmp_path, make_zip(unit, **{"evidence.jpg": b"<drop>"}), capsys)
    assert rc == 1
    assert "bundle has no evidence.jpg" in out
    assert main(["verify", str(tmp_path / "missing.zip")]) == 1
    assert "no such file" in capsys.readouterr().err


def write_config(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "controlroom.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///cr.sqlite"\n{extra}')
    return cfg


@pytest.mark.slow
def test_add_unit_add_user_and_migrate(
    tmp_path: Path, unit: Unit, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(tmp_path)
    pub = tmp_path / "unit-a.pub"
    save_public_key(unit.key.public_key(), pub)
    assert (
        main(["controlroom", "add-unit", "unit-a", "--public-key", str(pub), "--config", str(cfg)])
        == 0
    )
    assert "registered unit unit-a: key id" in capsys.readouterr().out
    assert (tmp_path / "cr.sqlite").exists()  # relative to the config file
    other = generate_key()
    raw_b64 = __import__("base64").b64encode(other.public_key().public_bytes_raw()).decode()
    assert (
        main(["controlroom", "add-unit", "unit-a", "--public-key", raw_b64, "--config", str(cfg)])
        == 0
    )
    assert "re-keyed unit unit-a" in capsys.readouterr().out
    assert (
        main(
            ["controlroom", "add-unit", "unit-b", "--public-key", "not-a-key", "--config", str(cfg)]
        )
        == 1
    )
    assert "--public-key: not an Ed25519 public key" in capsys.readouterr().err
    pw = tmp_path / "pw"
    pw.write_text("a long enough password\n")
    assert (
        main(["controlroom", "add-user", "alice", "--password-file", str(pw), "--config", str(cfg)])
        == 0
    )
    assert (
        main(["controlroom", "add-user", "alice", "--password-file", str(pw), "--config", str(cfg)])
        == 1
    )
    assert "exists" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["controlroom", "add-user", "bob", "--config", str(cfg)]) == 1
    assert "password too short" in capsys.readouterr().err
    assert main(["controlroom", "migrate", "--config", str(cfg)]) == 0
    assert f"schema version {db.LATEST_VERSION}" in capsys.readouterr().out
    assert main(["controlroom", "disable-user", "alice", "--config", str(cfg)]) == 0
    assert main(["controlroom", "disable-user", "nobody", "--config", str(cfg)]) == 1
    assert "no user 'nobody'" in capsys.readouterr().err
    engine = db.make_engine(load_config(cfg).database.url)
    assert not users.check_password(engine, "alice", "a long enough password")  # disabled
    users.set_active(engine, "alice", True)
    assert users.check_password(engine, "alice", "a long enough password")
    assert not users.check_password(engine, "alice", "a long enough passwore")
    with engine.connect() as conn:
        key_b64 = conn.execute(sa.select(db.units.c.public_key)).scalar()
        actions = [r.action for r in conn.execute(sa.select(db.audit))]
    assert key_b64 == raw_b64
    assert actions == ["unit_add", "unit_rekey", "user_add", "user_disable", "user_enable"]
    engine.dispose()


def test_config_errors_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, "[mqtt]\nprot = 1883\n")
    assert main(["controlroom", "migrate", "--config", str(cfg)]) == 1
    assert "mqtt.prot" in capsys.readouterr().err
    cfg = write_config(tmp_path, "[retention]\nrejected_evidence_s = -1\n")
    assert main(["controlroom", "migrate", "--config", str(cfg)]) == 1
    assert "retention.rejected_evidence_s" in capsys.readouterr().err
    assert main(["controlroom", "migrate", "--config", str(tmp_path / "nope.toml")]) == 1
    assert "cannot read control-room config" in capsys.readouterr().err


def test_migrations_are_versioned_and_idempotent(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'm.sqlite'}")
    assert db.migrate(engine, target=1) == 1
    insp = sa.inspect(engine)
    assert "alerts" in insp.get_table_names()
    assert "labels" not in insp.get_table_names()
    assert db.migrate(engine) == db.LATEST_VERSION
    assert db.migrate(engine) == db.LATEST_VERSION
    with engine.connect() as conn:
        versions = [r[0] for r in conn.execute(sa.select(db.schema_version.c.version))]
    assert versions == [v for v, _, _ in db.MIGRATIONS]
    assert "labels" in sa.inspect(engine).get_table_names()
    engine.dispose()


def test_a_version_3_database_gains_the_snapshot_request_id_and_keeps_its_snapshot(
    tmp_path: Path,
) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'v3.sqlite'}")
    assert db.migrate(engine, target=2) == 2
    with engine.begin() as conn:  # the snapshots table exactly as version 3 made it
        conn.execute(
            sa.text(
                "CREATE TABLE snapshots (unit VARCHAR(64) PRIMARY KEY, sha256 "
                "VARCHAR(64) NOT NULL, size_bytes INTEGER NOT NULL, jpeg BLOB NOT "
                "NULL, received_at FLOAT NOT NULL)"
            )
        )
        conn.execute(sa.text("INSERT INTO snapshots VALUES ('unit-a', 'ab', 2, x'ffd8', 5.0)"))
        conn.execute(db.schema_version.insert(), [{"version": 3, "applied_at": 1.0}])
    assert db.migrate(engine) == db.LATEST_VERSION >= 4
    with engine.begin() as conn:
        row = conn.execute(sa.select(db.snapshots)).one()
        assert (row.unit, row.received_at, row.request_id) == ("unit-a", 5.0, None)
        db.upsert_snapshots(
            conn,
            [
                {
                    "unit": "unit-a",
                    "sha256": "cd",
                    "size_bytes": 2,
                    "jpeg": b"\xff\xd8",
                    "received_at": 6.0,
                    "request_id": "r1",
                }
            ],
        )
        assert conn.execute(sa.select(db.snapshots.c.request_id)).scalar() == "r1"
    engine.dispose()


def test_example_config_loads() -> None:
    cfg = load_config(
        Path(__file__).resolve().parents[2] / "deploy" / "controlroom" / "controlroom.toml"
    )
    assert cfg.retention.rejected_evidence_s == 3600
    assert cfg.retention.label_crops_days == 30
    assert cfg.mqtt.share_group == "controlroom"
    assert cfg.privacy.blur == "outside_roi"
    assert cfg.privacy.original_viewers == []


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_demo_control_room_receives_and_serves(
    tmp_path: Path, broker: LocalBroker, publisher: Publisher
) -> None:
    """What `make demo` uses: a unit key on disk, a control room on a free port."""
    import httpx

    from controlroom.demo import DEMO_PASSWORD, DEMO_USER, demo_control_room
    from tests.waiting import wait_until

    unit = Unit("demo-junction", generate_key())
    pub = tmp_path / "demo-junction.pub"
    save_public_key(unit.key.public_key(), pub)
    room = demo_control_room(
        tmp_path / "cr",
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        unit_keys={"demo-junction": pub},
    )
    try:
        publisher.publish("phonewatch/demo-junction/alert", unit.alert()[0])
        receiver = room.receiver
        assert receiver is not None
        assert wait_until(lambda: receiver.stats().get("stored") == 1)
        with httpx.Client(base_url=room.url.rstrip("/")) as c:
            html = c.get("/login").text
            token = html.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            c.post("/login", data={"username": DEMO_USER, "password": DEMO_PASSWORD, "csrf": token})
            assert "demo-junction-1" in c.get("/").text
    finally:
        room.close()


@pytest.mark.slow
def test_serve_prints_its_url_and_stops_cleanly(tmp_path: Path, broker: LocalBroker) -> None:
    """`phonewatch controlroom serve` as a process: dashboard URL on stdout, /healthz answers,
    SIGTERM stops it with exit status 0 and its receiver's counters."""
    import signal
    import subprocess
    import sys

    import httpx

    from tests.waiting import wait_until

    port = free_port()
    cfg = write_config(
        tmp_path,
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'client_id = "cr-serve"\n[web]\nport = {port}\n',
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge.app.cli", "controlroom", "serve", "--config", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )
    try:
        assert wait_until(lambda: "receiving from" in log.read_text(), timeout_s=30), (
            log.read_text()
        )
        assert f"dashboard at http://127.0.0.1:{port}/" in log.read_text()
        r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert r.json()["schema_version"] == db.LATEST_VERSION
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 303
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
    assert rc == 0, log.read_text()
    assert "receiver stats: {" in log.read_text()
