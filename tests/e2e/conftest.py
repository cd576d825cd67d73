"""A real platform for end-to-end tests: one Ray head, the API server with its control loops,
optionally an MLflow server; all on free ports, all stopped by PID afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aitb.local.ray_cluster import LocalRayCluster, RayHeadSpec, start_ray_head
from tests.support.platform import Platform, e2e_cluster, start_platform
from tests.support.processes import stop_process


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory) -> Iterator[LocalRayCluster]:
    head = start_ray_head(RayHeadSpec.from_cluster(e2e_cluster()), tmp_path_factory.mktemp("ray"))
    yield head
    head.stop()
    head.remove_temp_dir()


@pytest.fixture(scope="module")
def platform_(tmp_path_factory, ray_head) -> Iterator[Platform]:
    p = start_platform(tmp_path_factory.mktemp("platform"), ray_head)
    yield p
    stop_process(p.api.process)
