"""Fixtures: stateful Kubernetes API test servers and a kubeconfig pointing at them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kube.apiserver import KubeApiServer, write_kubeconfig
from tests.kube.schema import schema_dir


def pytest_collection_modifyitems(config, items):
    if schema_dir() is None:
        skip = pytest.mark.skip(reason="KubeRay CRD schemas not found (set AITB_KUBERAY_SCHEMAS)")
        for item in items:
            if "tests/kube/" in str(item.fspath) and "real_cluster" not in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture
def kube_server() -> Iterator[KubeApiServer]:
    server = KubeApiServer("lund-k8s").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kubeconfig(tmp_path, kube_server) -> str:
    return str(write_kubeconfig(tmp_path / "kubeconfig", {"lund-k8s": kube_server}))
