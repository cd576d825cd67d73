"""One small real Ray head for the backend tests, started on free ports and stopped by PID."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aitb.domain.testbed import Cluster, Pool
from aitb.local.ray_cluster import LocalRayCluster, RayHeadSpec, start_ray_head


def small_cluster(name: str = "test-ray") -> Cluster:
    return Cluster(
        name=name,
        backend="ray",
        pools=[
            Pool(name="cpu", hosts=1, cpu=4, memory_gib=4),
            Pool(name="gpu", hosts=1, cpu=2, memory_gib=2, gpus=1, gpu_type="t4"),
        ],
    )


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRayCluster]:
    base = tmp_path_factory.mktemp("ray")
    head = start_ray_head(RayHeadSpec.from_cluster(small_cluster()), base)
    yield head
    head.stop()
    head.remove_temp_dir()
