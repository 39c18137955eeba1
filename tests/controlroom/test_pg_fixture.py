"""The throw-away PostgreSQL cluster survives what other pytest sessions on the machine do, and
dropping a test database works whatever happened to the connections meanwhile (issue 17 item 6:
the scale test once failed in teardown with "server closed the connection unexpectedly")."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from controlroom import db
from tests.controlroom.conftest import pg_database

pytestmark = pytest.mark.slow  # over a second a test (make check skips it)


def _scalar(url: str, sql: str) -> object:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            result = conn.execute(sa.text(sql))
            return result.scalar() if result.returns_rows else None
    finally:
        engine.dispose()


def test_cluster_survives_another_pytest_session_starting(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Each pytest session that starts chmods ``pytest-of-<user>`` to 0700. When the cluster
    lived below it and ran as ``postgres`` (tests run as root), the next checkpoint PANICked
    on pg_control and the server went down mid-test."""
    if os.environ.get("PHONEWATCH_PG_URL"):
        pytest.skip("an external PostgreSQL")
    data = Path(str(_scalar(postgres_url, "SHOW data_directory")))
    user_root = tmp_path_factory.getbasetemp().parent  # pytest-of-<user>
    assert user_root not in data.parents, data
    mode = stat.S_IMODE(user_root.stat().st_mode)
    os.chmod(user_root, mode & ~0o077)  # what a new pytest session does to it
    _scalar(postgres_url, "CHECKPOINT")  # the checkpointer opens global/pg_control
    assert _scalar(postgres_url, "SELECT 1") == 1


def test_database_is_dropped_after_its_connections_were_cut(postgres_url: str) -> None:
    """Sessions still open on the test database, and every other connection to the server
    terminated (as a server restart would): the drop still goes through."""
    with pg_database(postgres_url) as url:
        engine = db.make_engine(url)
        db.migrate(engine)
        held = engine.connect()  # left open on purpose
        held.execute(sa.text("SELECT 1"))
        _scalar(
            postgres_url,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
            "AND datname = current_database()",
        )
        name = url.rsplit("/", 1)[1]
    try:
        assert (
            _scalar(postgres_url, f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == 0
        )
    finally:
        held.invalidate()
        engine.dispose()
