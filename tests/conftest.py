"""Shared fixtures: databases (SQLite always, PostgreSQL when configured) and API servers.
Helpers live in tests/support/."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest

from tests.support.api import ApiServer, InProcessApi, in_process_api, start_api_server
from tests.support.processes import stop_process

PG_URL = os.environ.get("AITB_TEST_DATABASE_URL", "")


# --- databases ------------------------------------------------------------------------


def _pg_admin_url() -> str:
    return PG_URL.replace("postgresql://", "postgresql+psycopg2://", 1)


@pytest.fixture
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database per test, dropped afterwards."""
    if not PG_URL.startswith("postgresql"):
        pytest.skip("PostgreSQL tests skipped: set AITB_TEST_DATABASE_URL=postgresql://... to run them")
    from sqlalchemy import create_engine, text

    name = f"aitb_t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # server configured but unreachable: say so, do not pass silently
        pytest.fail(f"AITB_TEST_DATABASE_URL is set but PostgreSQL is unusable: {exc}")
    base = PG_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> Iterator[str]:
    """Every store test runs on SQLite and, when configured, on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'aitb.db'}"
    else:
        yield request.getfixturevalue("pg_database_url")


# --- API servers ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def api_server(tmp_path_factory) -> Iterator[ApiServer]:
    """One API server (SQLite, no scheduler) shared by the API and CLI tests."""
    data_dir = tmp_path_factory.mktemp("api")
    server = start_api_server(data_dir)
    try:
        yield server
    finally:
        assert server.process is not None
        stop_process(server.process)
        shutil.rmtree(data_dir / "packages", ignore_errors=True)


@pytest.fixture(scope="session")
def api(tmp_path_factory) -> Iterator[InProcessApi]:
    """The same application in this process (SQLite, no scheduler), for the API tests."""
    server = in_process_api(tmp_path_factory.mktemp("api-inprocess"))
    try:
        yield server
    finally:
        server.close()
