"""One real MLflow server (basic-auth app) shared by the tracking tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aitb.tracking.server import ManagedMlflow
from tests.support.mlflow import launch


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedMlflow]:
    server = launch(tmp_path_factory.mktemp("mlflow-shared"))
    yield server
    server.stop()
