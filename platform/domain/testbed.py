"""Federation description (nodes -> clusters -> pools), loaded from hand-written YAML."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SLUG = r"^[a-z][a-z0-9-]{0,62}$"
_SLUG = re.compile(SLUG)
KNOWN_NODES = ("stockholm", "goteborg", "orebro", "lund", "lulea", "linkoping")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Pool(_Strict):
    name: str = Field(pattern=SLUG)
    hosts: int = Field(ge=0, le=100_000)
    cpu: float = Field(gt=0, description="CPUs per host")
    memory_gib: float = Field(gt=0, description="memory per host, GiB")
    gpus: int = Field(default=0, ge=0, le=64, description="GPUs per host")
    gpu_type: str | None = None
    labels: dict[str, str | bool | int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _gpu_type_with_gpus(self) -> Pool:
        if self.gpus and not self.gpu_type:
            raise ValueError("gpu_type is required when gpus > 0")
        if not self.gpus and self.gpu_type:
            raise ValueError("gpu_type given but gpus is 0")
        return self

    @property
    def secure(self) -> bool:
        value = self.labels.get("secure", False)
        return value is True or str(value).lower() == "true"

    def capacity(self) -> dict[str, float]:
        cap = {"cpu": self.cpu * self.hosts, "memory_gib": self.memory_gib * self.hosts}
        if self.gpus:
            cap["gpu"] = float(self.gpus * self.hosts)
            cap[f"gpu:{self.gpu_type}"] = float(self.gpus * self.hosts)
        return cap


#: Classifications that never go to a cluster shared between partners.
CONFIDENTIAL_LEVELS = frozenset({"confidential", "sensitive"})


class Cluster(_Strict):
    name: str = Field(pattern=SLUG)
    backend: Literal["kuberay", "ray", "sim"]
    connection: dict[str, Any] = Field(default_factory=dict)
    pools: list[Pool] = Field(min_length=1)

    @field_validator("pools")
    @classmethod
    def _unique_pools(cls, pools: list[Pool]) -> list[Pool]:
        _unique([p.name for p in pools], "pool")
        return pools

    @model_validator(mode="after")
    def _trust_fields(self) -> Cluster:
        partners = self.connection.get("partners")
        trusted = self.connection.get("shared_trusted")
        if partners is not None:
            if not isinstance(partners, list) or not partners or not all(
                isinstance(p, str) and _SLUG.match(p) for p in partners
            ):
                raise ValueError("connection.partners must be a non-empty list of partner names")
        if trusted is not None and not isinstance(trusted, bool):
            raise ValueError("connection.shared_trusted must be true or false")
        if partners is not None and trusted:
            raise ValueError("give connection.partners or connection.shared_trusted, not both")
        return self

    @property
    def owner_partners(self) -> frozenset[str]:
        """The partners a `ray` cluster belongs to (`connection.partners`); empty: shared."""
        return frozenset(self.connection.get("partners") or ())

    @property
    def shared_trusted(self) -> bool:
        return self.connection.get("shared_trusted") is True


def tenancy_refusal(cluster: Cluster, partner: str, classification: str | None) -> str | None:
    """Why a job of `partner` using data of `classification` may not run on `cluster`, or None.

    A plain `ray` cluster is one trust domain (Ray is no multi-tenant security boundary: jobs
    on it can read each other's environment and files). It either belongs to some partners
    (`connection.partners: [..]`; only their jobs run there) or is shared; a shared one must
    be marked `connection.shared_trusted: true` by its admin to take jobs of several partners,
    and never takes confidential or sensitive data. KubeRay gives each job its own Ray cluster
    in its project's namespace, and `sim` runs nothing, so neither is restricted here.
    """
    if cluster.backend != "ray":
        return None
    owners = cluster.owner_partners
    if owners:
        if partner not in owners:
            return f"ray cluster {cluster.name} belongs to {', '.join(sorted(owners))}"
        return None
    if not cluster.shared_trusted:
        return (f"ray cluster {cluster.name} is shared but not marked shared_trusted "
                "(connection.partners or connection.shared_trusted)")  # fmt: skip
    if classification in CONFIDENTIAL_LEVELS:
        return f"{classification} data never runs on a shared ray cluster ({cluster.name})"
    return None


class Node(_Strict):
    name: str = Field(pattern=SLUG)
    display_name: str | None = None
    clusters: list[Cluster] = Field(min_length=1)


class Federation(_Strict):
    federation: str = Field(pattern=SLUG)
    nodes: list[Node] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Federation:
        _unique([n.name for n in self.nodes], "node")
        _unique([c.name for n in self.nodes for c in n.clusters], "cluster")
        return self

    def node(self, name: str) -> Node | None:
        return next((n for n in self.nodes if n.name == name), None)

    def cluster(self, name: str) -> tuple[Node, Cluster] | None:
        for node in self.nodes:
            for cluster in node.clusters:
                if cluster.name == name:
                    return node, cluster
        return None

    def clusters(self) -> list[tuple[Node, Cluster]]:
        return [(n, c) for n in self.nodes for c in n.clusters]

    def pool_of_host(self, host_id: str) -> Pool | None:
        """The pool of a scheduler host id ``<cluster>/<pool>/<index>``."""
        cluster_name, pool_name = host_pool(host_id)
        found = self.cluster(cluster_name)
        if found is None:
            return None
        return next((p for p in found[1].pools if p.name == pool_name), None)


def host_pool(host_id: str) -> tuple[str, str]:
    """(cluster, pool) of a scheduler host id ``<cluster>/<pool>/<index>``."""
    cluster, _, rest = host_id.partition("/")
    return cluster, rest.partition("/")[0]


def _unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"duplicate {what} name {name!r}")
        seen.add(name)


class TestbedError(ValueError):
    """A testbed file that cannot be used; the message names file, place and problem."""

    __test__ = False  # not a pytest test class, despite the name


def _location(loc: tuple[Any, ...], data: Any) -> str:
    """Render a pydantic error location with names instead of bare indices."""
    parts: list[str] = []
    cursor = data
    for item in loc:
        if isinstance(item, int) and isinstance(cursor, list):
            element = cursor[item] if item < len(cursor) else None
            name = element.get("name") if isinstance(element, dict) else None
            parts[-1] = f"{parts[-1]}[{item}]" + (f"({name})" if name else "")
            cursor = element
        else:
            parts.append(str(item))
            cursor = cursor.get(item) if isinstance(cursor, dict) else None
    return ".".join(parts) or "(top level)"


def parse_testbed(data: Any, source: str = "<testbed>") -> Federation:
    if not isinstance(data, dict):
        raise TestbedError(f"{source}: expected a mapping with 'federation' and 'nodes'")
    try:
        return Federation.model_validate(data)
    except ValidationError as exc:
        lines = [
            f"{source}: {_location(err['loc'], data)}: {err['msg']}" for err in exc.errors()
        ]
        raise TestbedError("\n".join(lines)) from None


def load_testbed(path: str | Path) -> Federation:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise TestbedError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TestbedError(f"{path}:{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_testbed(data, str(path))
