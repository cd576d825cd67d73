"""One real MLflow server (basic-auth app) shared by the tracking tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import sessionmaker

from aitb.store import tables  # noqa: F401  (registers every table: the outbox reads projects)
from aitb.store.base import Base
from aitb.store.db import make_engine
from aitb.tracking.server import ManagedMlflow
from tests.support.mlflow import launch, server_dir


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = server_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[ManagedMlflow]:
    path = server_dir()
    server = launch(path)
    yield server
    server.stop()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sessions(tmp_path):
    """Sessions on a SQLite database with the platform's tables (the outbox, projects...)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'aitb.db'}")
    Base.metadata.create_all(engine)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()
