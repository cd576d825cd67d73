"""What the decision point reads and what it answers. Pure data: no I/O, no clock."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime

from aitb.domain.models import Classification, Dataset, Residency
from aitb.domain.testbed import Federation


@dataclass(frozen=True)
class DatasetFacts:
    name: str
    partner: str
    classification: Classification = Classification.INTERNAL
    home_node: str = ""
    residency: Residency = Residency.NONE
    retention_days: int = 365
    purposes: tuple[str, ...] = ()  # empty: any purpose

    @classmethod
    def of(cls, ds: Dataset, purposes: Iterable[str] = ()) -> DatasetFacts:
        return cls(ds.name, ds.partner, Classification(ds.classification), ds.home_node,
                   Residency(ds.residency), ds.retention_days, tuple(sorted(purposes)))


@dataclass(frozen=True)
class GrantFacts:
    purpose: str
    expires_at: datetime


@dataclass(frozen=True)
class JobFacts:
    """Everything governance looks at for one job (the input of `decide`)."""

    project: str
    partner: str
    submitter: str
    now: datetime
    datasets: tuple[DatasetFacts, ...] = ()
    grants: Mapping[str, GrantFacts] = field(default_factory=dict)  # dataset -> the project's grant
    requested_nodes: frozenset[str] = frozenset()
    purpose: str | None = None  # the job's stated purpose, if any
    job_id: str = ""
    priority: int = 0
    gpus: int = 0

    @property
    def level(self) -> int:
        return max((d.classification.rank for d in self.datasets), default=0)

    @property
    def classification(self) -> Classification:
        return list(Classification)[self.level]

    def digest(self) -> str:
        """sha256 of the canonical input, written to the audit entry of the decision."""
        body = [
            self.project, self.partner, self.submitter, self.now.isoformat(), self.job_id, self.priority,
            self.gpus, self.purpose, sorted(self.requested_nodes),
            [[d.name, d.partner, d.classification.value, d.home_node, d.residency.value, d.retention_days,
              list(d.purposes)] for d in self.datasets],
            [[k, g.purpose, g.expires_at.isoformat()] for k, g in sorted(self.grants.items())],
        ]
        raw = json.dumps(body, separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class Candidate:
    """One place a job could run: a pool of a cluster at a node, with its cluster's trust facts
    (`backend`, `owners` from `connection.partners`, `shared_trusted`) for the tenancy rule."""

    node: str
    cluster: str
    pool: str
    secure: bool = False
    gpu_type: str | None = None
    backend: str = ""
    owners: tuple[str, ...] = ()  # sorted; empty: a shared cluster
    shared_trusted: bool = False

    @property
    def key(self) -> str:
        return f"{self.cluster}/{self.pool}"

    def trust_attrs(self) -> dict:
        """The Cedar attributes of the cluster's trust facts (`owners` as Partner entities)."""
        return {"backend": self.backend, "shared_trusted": self.shared_trusted,
                "owners": [{"__entity": {"type": "Partner", "id": p}} for p in self.owners]}


def candidates_of(federation: Federation) -> list[Candidate]:
    return [
        Candidate(node.name, cluster.name, pool.name, pool.secure, pool.gpu_type, cluster.backend,
                  tuple(sorted(cluster.owner_partners)), cluster.shared_trusted)
        for node, cluster in federation.clusters()
        for pool in cluster.pools
    ]


@dataclass(frozen=True)
class Reason:
    policy: str  # the Cedar policy id that decided
    message: str  # a sentence a person understands

    def __str__(self) -> str:
        return f"{self.message} [{self.policy}]"


@dataclass(frozen=True)
class Verdict:
    candidate: Candidate
    allowed: bool
    reasons: tuple[Reason, ...]  # the forbids that fired (denied) or the permits (allowed)


@dataclass(frozen=True)
class RuntimeConstraints:
    """What a job must run under wherever it runs."""

    egress: bool = True  # may the job reach the network
    installs: bool = True  # may its runtime env install packages (pip, conda, uv)
    secure_pool: bool = False  # must it run on a pool labelled secure: true
    classification: str = Classification.PUBLIC.value  # what its artifacts carry

    def strictest(self, other: RuntimeConstraints) -> RuntimeConstraints:
        level = max(Classification(self.classification).rank, Classification(other.classification).rank)
        return RuntimeConstraints(
            egress=self.egress and other.egress,
            installs=self.installs and other.installs,
            secure_pool=self.secure_pool or other.secure_pool,
            classification=list(Classification)[level].value,
        )


@dataclass(frozen=True)
class Decision:
    """allow/deny per candidate, why, and the runtime constraints, under one policy-set version."""

    version: str
    input_digest: str
    verdicts: tuple[Verdict, ...]
    job_reasons: tuple[Reason, ...] = ()  # denials that hold everywhere (grants, purposes)
    node_constraints: Mapping[str, RuntimeConstraints] = field(default_factory=dict)
    classification: str = Classification.PUBLIC.value
    # what summary() derives from the verdicts, computed once: the copies the engine's cache
    # hands out (same verdicts, another input digest) share it
    _derived: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def base_constraints(self) -> RuntimeConstraints:
        """What the data's classification alone requires (section 6 of the brief)."""
        secure = Classification(self.classification).needs_secure_pool
        return RuntimeConstraints(not secure, not secure, secure, self.classification)

    @property
    def allowed(self) -> bool:
        return any(v.allowed for v in self.verdicts)

    @property
    def allowed_nodes(self) -> frozenset[str]:
        return frozenset(v.candidate.node for v in self.verdicts if v.allowed)

    @property
    def allowed_pools(self) -> frozenset[str]:
        return frozenset(v.candidate.key for v in self.verdicts if v.allowed)

    def verdict(self, cluster: str, pool: str) -> Verdict | None:
        return next((v for v in self.verdicts if v.candidate.cluster == cluster
                     and v.candidate.pool == pool), None)

    def allows(self, cluster: str, pool: str) -> bool:
        v = self.verdict(cluster, pool)
        return bool(v and v.allowed)

    @property
    def constraints(self) -> RuntimeConstraints:
        """The strictest constraints over the nodes the job may run at."""
        out = self.base_constraints
        for node in self.allowed_nodes:
            out = out.strictest(self.node_constraints.get(node, out))
        return out

    def constraints_at(self, node: str) -> RuntimeConstraints:
        return self.node_constraints.get(node, self.constraints)

    def denial_reasons(self) -> list[Reason]:
        """Every distinct reason a candidate was denied, job-wide ones first."""
        seen: dict[tuple[str, str], Reason] = {}
        for r in self.job_reasons:
            seen.setdefault((r.policy, r.message), r)
        for v in self.verdicts:
            if not v.allowed:
                for r in v.reasons:
                    seen.setdefault((r.policy, r.message), r)
        return list(seen.values())

    def explain(self) -> list[str]:
        """Why the job may not run, one line per deciding policy (for a 403 and a person)."""
        lines = [str(r) for r in self.job_reasons]
        by_policy: dict[str, list[Reason]] = {}
        for v in self.verdicts:
            if not v.allowed:
                for r in v.reasons:
                    if r not in self.job_reasons:
                        by_policy.setdefault(r.policy, []).append(r)
        for policy, reasons in by_policy.items():
            more = len({r.message for r in reasons}) - 1
            lines.append(f"{reasons[0].message}" + (f" (and {more} more like it)" if more > 0 else "")
                         + f" [{policy}]")
        return lines

    def to_dict(self) -> dict:
        return {
            "allowed": self.allowed,
            "policy_version": self.version,
            "input_digest": self.input_digest,
            "classification": self.classification,
            "constraints": asdict(self.constraints),
            "job_reasons": [asdict(r) for r in self.job_reasons],
            "candidates": [
                {"node": v.candidate.node, "cluster": v.candidate.cluster, "pool": v.candidate.pool,
                 "allowed": v.allowed, "reasons": [asdict(r) for r in v.reasons]}
                for v in self.verdicts
            ],
        }

    def summary(self) -> dict:
        """Compact form for audit entries and job records."""
        derived = self._derived.get("summary")
        if derived is None:
            derived = self._derived["summary"] = {
                "allowed": self.allowed,
                "allowed_nodes": sorted(self.allowed_nodes),
                "allowed_pools": sorted(self.allowed_pools),
                "constraints": asdict(self.constraints),
                "reasons": self.explain(),
            }
        # a copy (callers may change it): flat lists and one dict of scalars
        return {"policy_version": self.version, "input_digest": self.input_digest,
                **{k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
                   for k, v in derived.items()}}
