"""Quota accounting per project per node: nominal, borrowing, and the limit check.

Usage beyond ``nominal`` is borrowed. A resource a quota does not mention is
not limited. A project without a quota at a node may not run there unless the
policy says quotas are optional.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aitb.domain.models import Quota
from aitb.scheduler.snapshot import RunningJob

EPS = 1e-9
INF = float("inf")
_EMPTY: Mapping[str, float] = {}  # no usage yet (never written)


@dataclass(frozen=True, slots=True)
class QuotaCheck:
    ok: bool
    borrowing: bool = False
    within_nominal: bool = True
    problem: str = ""  # why not ok, for pending reasons


#: the two answers that carry no text, shared (a check is immutable): most checks are one
WITHIN = QuotaCheck(True)
BORROWS = QuotaCheck(True, borrowing=True, within_nominal=False)


class QuotaLedger:
    """Usage per (project, node) plus the limits; changed as the cycle admits and preempts."""

    def __init__(
        self,
        quotas: Mapping[tuple[str, str], Quota],
        running: Iterable[RunningJob],
        *,
        borrowing: bool = True,
        require_quota: bool = True,
    ) -> None:
        self.nominal: dict[tuple[str, str], dict[str, float]] = {}
        self.limit: dict[tuple[str, str], dict[str, float]] = {}
        for key, q in quotas.items():
            keys = set(q.nominal) | set(q.borrowing_limit)
            self.nominal[key] = {r: q.nominal.get(r, 0.0) for r in keys}
            self.limit[key] = {
                r: q.nominal.get(r, 0.0) + (q.borrowing_limit.get(r, 0.0) if borrowing else 0.0)
                for r in keys
            }
        # per (project, node): resource -> (limit + EPS, nominal + EPS), what _check compares
        self._bounds = {
            key: {r: (cap + EPS, self.nominal[key][r] + EPS) for r, cap in limit.items()}
            for key, limit in self.limit.items()
        }
        self.require_quota = require_quota
        self.lendable: dict[str, dict[str, float]] = {}  # node -> sum of nominal quotas
        for (_, node), nominal in self.nominal.items():
            pool = self.lendable.setdefault(node, {})
            for r, v in nominal.items():
                pool[r] = pool.get(r, 0.0) + v
        self._typed: dict[tuple[str, str], bool] = {}
        #: whether any quota has a ``gpu:<type>`` entry (else ``limits_types`` is always False)
        self.any_typed = any(r.startswith("gpu:") for limit in self.limit.values() for r in limit)
        # check() results per project, per node, by demand mapping (kept, and compared by
        # identity): a cycle asks the same question for every job of a shape, and the answer
        # changes only when add() changes that project's usage at that node; a hot caller may
        # read it before calling check (a hit: ``memos[project][node][id(demand)][0] is demand``)
        self.memos: dict[str, dict[str, dict[int, tuple[Mapping[str, float], QuotaCheck]]]] = {}
        self.usage: dict[tuple[str, str], dict[str, float]] = {}
        for job in running:
            self.add(job.project, job.node, job.usage)

    def add(self, project: str, node: str, usage: Mapping[str, float], sign: float = 1.0) -> None:
        at = self.memos.get(project)
        if at is not None:
            at.pop(node, None)
        held = self.usage.setdefault((project, node), {})
        for r, v in usage.items():
            held[r] = held.get(r, 0.0) + sign * v

    def has_quota(self, project: str, node: str) -> bool:
        return (project, node) in self.limit or not self.require_quota

    def check(self, project: str, node: str, demand: Mapping[str, float]) -> QuotaCheck:
        """Whether ``demand`` fits the project's quota at ``node`` now (memoised until the
        next ``add`` there; callers do not mutate the demand mappings they pass)."""
        key = (project, node)
        at = self.memos.get(project)
        if at is None:
            at = self.memos[project] = {}
        memo = at.get(node)
        if memo is None:
            memo = at[node] = {}
        else:
            hit = memo.get(id(demand))
            if hit is not None and hit[0] is demand:
                return hit[1]
        result = self._check(key, demand)
        memo[id(demand)] = (demand, result)
        return result

    def _check(self, key: tuple[str, str], demand: Mapping[str, float]) -> QuotaCheck:
        project, node = key
        limit = self.limit.get(key)
        if limit is None:
            if self.require_quota:
                return QuotaCheck(False, problem=f"project {project} has no quota at {node}")
            return WITHIN
        bounds = self._bounds[key]
        held = self.usage.get(key, _EMPTY)
        borrowing = False
        for r, v in demand.items():
            bound = bounds.get(r)
            if bound is None:
                continue
            after = held.get(r, 0.0) + v
            if after > bound[0]:
                cap = limit[r]
                over = "nominal quota" if cap <= bound[1] else "borrowing limit"
                return QuotaCheck(
                    False,
                    within_nominal=False,
                    problem=f"over {over} at {node} ({r}: {held.get(r, 0.0):g} used"
                    f" + {v:g} asked > {cap:g})",
                )
            if after > bound[1]:
                borrowing = True
        return BORROWS if borrowing else WITHIN

    def limits_types(self, project: str, node: str) -> bool:
        """Whether the quota has any ``gpu:<type>`` entry (else type checks can be skipped)."""
        key = (project, node)
        typed = self._typed.get(key)
        if typed is None:
            limit = self.limit.get(key)
            typed = self._typed[key] = bool(limit) and any(r.startswith("gpu:") for r in limit)
        return typed

    def share(self, project: str, node: str, weight: float = 1.0) -> float:
        """Kueue's fair-sharing share: the largest fraction of the node's lendable capacity
        (sum of nominal quotas) the project uses above its nominal, divided by its weight."""
        nominal = self.nominal.get((project, node))
        if nominal is None:
            return 0.0
        held = self.usage.get((project, node), {})
        lendable = self.lendable.get(node, {})
        top = 0.0
        for r, v in nominal.items():
            total = lendable.get(r, 0.0)
            if total > 0:
                top = max(top, (held.get(r, 0.0) - v) / total)
        return top / weight if weight > 0 else float("inf")

    def borrows(self, project: str, node: str) -> bool:
        """True while the project uses more than its nominal quota of something at ``node``."""
        nominal = self.nominal.get((project, node))
        if nominal is None:
            return False
        held = self.usage.get((project, node), {})
        return any(held.get(r, 0.0) > v + EPS for r, v in nominal.items())
