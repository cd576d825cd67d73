"""Build one backend per cluster of a testbed, from its `backend` and `connection` fields."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aitb.clusters.base import Backend
from aitb.domain.testbed import Cluster, Federation


class BackendNotSupported(NotImplementedError):
    """The testbed names a backend this version cannot drive yet."""


class BackendConfigError(ValueError):
    """A cluster's `connection` lacks what its backend needs."""


def backend_for(cluster: Cluster, clock: Callable[[], float] = time.time,
                package_urls: Any = None) -> Backend:
    if cluster.backend == "ray":
        address = cluster.connection.get("address")
        if not address:
            raise BackendConfigError(
                f"cluster {cluster.name}: backend ray needs connection.address "
                "(the Ray dashboard URL, e.g. http://127.0.0.1:8265); `aitb up` fills it in"
            )
        from aitb.clusters.ray_backend import RayBackend

        strategy = str(cluster.connection.get("gang_strategy", "PACK"))
        return RayBackend(str(address), gang_strategy=strategy)
    if cluster.backend == "sim":
        from aitb.clusters.sim_backend import SimBackend

        return SimBackend(clock)
    if cluster.backend == "kuberay":
        from pydantic import ValidationError

        from aitb.clusters.kuberay.backend import KubeRayBackend
        from aitb.clusters.kuberay.options import ClusterOptions

        try:
            options = ClusterOptions.from_cluster(cluster)
        except ValidationError as exc:
            raise BackendConfigError(f"cluster {cluster.name}: connection: {exc}") from None
        return KubeRayBackend(options, package_urls=package_urls)
    raise BackendNotSupported(
        f"cluster {cluster.name}: backend {cluster.backend!r} is not yet supported "
        "(use backend ray with connection.address, or sim)"
    )


def backends_for(
    federation: Federation, clock: Callable[[], float] = time.time, package_urls: Any = None
) -> dict[str, Backend]:
    """Backends of every cluster that has one; clusters whose backend is unsupported are
    left out (the caller may still schedule onto them once support lands)."""
    out: dict[str, Backend] = {}
    for _, cluster in federation.clusters():
        try:
            out[cluster.name] = backend_for(cluster, clock, package_urls)
        except BackendNotSupported:
            continue
    return out
