"""One real MLflow server (basic-auth app) shared by the tracking tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import sessionmaker

from aitb.store.base import Base
from aitb.store.db import make_engine
from aitb.store.outbox import OutboxRow
from aitb.tracking.server import ManagedMlflow
from tests.support.mlflow import launch


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedMlflow]:
    server = launch(tmp_path_factory.mktemp("mlflow-shared"))
    yield server
    server.stop()


@pytest.fixture
def sessions(tmp_path):
    """Sessions on a SQLite database holding only the tracking outbox."""
    engine = make_engine(f"sqlite:///{tmp_path / 'aitb.db'}")
    Base.metadata.create_all(engine, tables=[OutboxRow.__table__])
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()
