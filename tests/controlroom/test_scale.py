"""Two receiver processes (``phonewatch controlroom receive``) on one MQTT 5 shared subscription
store each of 10,000 signed alerts exactly once, with QoS 1 duplicates mixed in."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from controlroom import db
from edge.app.local_broker import LocalBroker
from edge.common.signing import generate_key
from tests.controlroom.conftest import Publisher, Unit, pg_database, raw_pub_b64
from tests.waiting import wait_until

N_ALERTS = 10_000
N_UNITS = 10
N_DUPLICATES = 500

pytestmark = pytest.mark.slow


def start_receiver(cfg: Path, client_id: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.app.cli",
            "controlroom",
            "receive",
            "--config",
            str(cfg),
            "--client-id",
            client_id,
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[2],
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _says(log: Path, text: str) -> bool:
    return text in log.read_text()


def final_stats(log: Path) -> dict[str, Any]:
    for line in reversed(log.read_text().splitlines()):
        if line.startswith("receiver stats: "):
            stats: dict[str, Any] = json.loads(line[len("receiver stats: ") :])
            return stats
    raise AssertionError(f"no stats in {log}:\n{log.read_text()[-2000:]}")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cr.sqlite'}"
        return
    with pg_database(request.getfixturevalue("postgres_url"), prefix="scale") as url:
        yield url


def test_two_receivers_store_10000_alerts_exactly_once(
    tmp_path: Path, broker: LocalBroker, publisher: Publisher, db_url: str
) -> None:
    cfg = tmp_path / "cr.toml"
    cfg.write_text(
        f'[database]\nurl = "{db_url}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        f'share_group = "scale{uuid.uuid4().hex[:6]}"\n'
    )
    engine = db.make_engine(db_url)
    db.migrate(engine)
    units = [Unit(f"unit-{i:02d}", generate_key()) for i in range(N_UNITS)]
    for u in units:
        db.upsert_unit(engine, u.unit_id, raw_pub_b64(u.key), "0" * 16)
    # Signed up front (as the units would), alerts only: evidence is covered elsewhere.
    payloads = [
        (u.unit_id, u.alert(jpeg=b"\xff\xd8\xff\xe0 tiny \xff\xd9")[0])
        for _ in range(N_ALERTS // N_UNITS)
        for u in units
    ]

    logs = [tmp_path / "r1.log", tmp_path / "r2.log"]
    ids = [f"cr-scale-{uuid.uuid4().hex[:6]}-{i}" for i in (1, 2)]
    procs = [start_receiver(cfg, ids[0], logs[0]), start_receiver(cfg, ids[1], logs[1])]
    try:
        for log in logs:
            assert wait_until(functools.partial(_says, log, "receiving from"), 60), log.read_text()
        t0 = time.monotonic()
        infos = [
            publisher.publish(f"phonewatch/{unit}/alert", p, wait=False)
            for unit, p in payloads + payloads[:N_DUPLICATES]
        ]
        for info in infos:
            info.wait_for_publish(60)

        def stored() -> int:
            with engine.connect() as conn:
                return int(
                    conn.execute(sa.select(sa.func.count()).select_from(db.alerts)).scalar() or 0
                )

        assert wait_until(lambda: stored() >= N_ALERTS, timeout_s=120, step_s=0.25), stored()
        elapsed_s = time.monotonic() - t0
    finally:
        for p in procs:
            stop(p)
    stats = [final_stats(log) for log in logs]
    with engine.connect() as conn:
        n, distinct = conn.execute(
            sa.select(sa.func.count(), sa.func.count(sa.distinct(db.alerts.c.alert_id)))
        ).one()
        per_unit: dict[str, int] = dict(
            conn.execute(
                sa.select(db.alerts.c.unit, sa.func.count()).group_by(db.alerts.c.unit)
            ).all()
        )
    engine.dispose()
    assert n == distinct == N_ALERTS
    assert set(per_unit.values()) == {N_ALERTS // N_UNITS}
    stored_by = [int(s.get("stored", 0)) for s in stats]
    assert sum(stored_by) == N_ALERTS
    assert all(s > N_ALERTS // 10 for s in stored_by), f"load not shared: {stored_by}"
    received = sum(int(s.get("received", 0)) for s in stats)
    assert received >= N_ALERTS + N_DUPLICATES
    assert all(s["rejected_total"] == 0 for s in stats), stats
    print(
        f"\n{N_ALERTS} alerts (+{N_DUPLICATES} duplicates) stored by two receivers "
        f"{stored_by} in {elapsed_s:.1f} s"
    )
