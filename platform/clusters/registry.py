"""Build one backend per cluster of a testbed, from its `backend` and `connection` fields.

A cluster whose backend this version cannot drive (not implemented, or its `connection`
lacks what the backend needs) is *not driven*: it is reported with the reason, the
scheduler places nothing there, and `GET /v1/testbeds` says so. Backend constructors
must not connect (Ray's client is made lazily), so building one is also the check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aitb.clusters.base import Backend
from aitb.domain.testbed import Cluster, Federation

log = logging.getLogger("aitb.clusters")


class BackendNotSupported(NotImplementedError):
    """The testbed names a backend this version cannot drive yet."""


class BackendConfigError(ValueError):
    """A cluster's `connection` lacks what its backend needs."""


def backend_for(cluster: Cluster, clock: Callable[[], float] = time.time,
                package_urls: Any = None, kube_defaults: dict[str, Any] | None = None) -> Backend:
    """`kube_defaults`: settings every kuberay cluster gets unless its `connection` says
    otherwise (the control plane's project role, from the settings)."""
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
            options = ClusterOptions.from_cluster(cluster, defaults=kube_defaults)
        except ValidationError as exc:
            raise BackendConfigError(f"cluster {cluster.name}: connection: {exc}") from None
        return KubeRayBackend(options, package_urls=package_urls)
    raise BackendNotSupported(
        f"cluster {cluster.name}: backend {cluster.backend!r} is not yet supported "
        "(use backend ray with connection.address, or sim)"
    )


def not_driven_reason(cluster: Cluster) -> str | None:
    """Why aitb cannot drive this cluster, or None when it can."""
    try:
        backend_for(cluster)
    except (BackendNotSupported, BackendConfigError) as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class Backends:
    """The backend of every driven cluster, and why each other cluster is not driven."""

    driven: dict[str, Backend] = field(default_factory=dict)
    undriven: dict[str, str] = field(default_factory=dict)  # cluster -> reason


def backends_for(federation: Federation, clock: Callable[[], float] = time.time,
                 package_urls: Any = None, kube_defaults: dict[str, Any] | None = None) -> Backends:
    out = Backends()
    for _, cluster in federation.clusters():
        try:
            out.driven[cluster.name] = backend_for(cluster, clock, package_urls, kube_defaults)
        except (BackendNotSupported, BackendConfigError) as exc:
            out.undriven[cluster.name] = str(exc)
    return out


def warn_undriven(backends: Backends) -> None:
    """One warning per cluster that is not driven (the control plane says it once, at start)."""
    for cluster, why in backends.undriven.items():
        log.warning("cluster %s is not driven, no job will be placed there: %s", cluster, why)
