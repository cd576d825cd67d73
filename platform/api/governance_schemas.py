"""Wire schemas of governance: policies, decisions (dry runs and refusals), audit export."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from aitb.api.schemas import In, Out


class PolicyIn(In):
    scope: str = Field(pattern=r"^(node|partner):[a-z0-9][a-z0-9._-]{0,62}$",
                       examples=["node:lund", "partner:region-skane"],
                       description="whose policy: a node (its admins) or a partner (for its own data)")
    text: str = Field(min_length=1, max_length=100_000,
                      description="Cedar; only `forbid` statements (added policies only make things stricter)")
    description: str = Field(default="", max_length=2000)


class PolicyOut(Out):
    name: str
    scope: str
    revision: int
    text: str | None = None
    description: str = ""
    deleted: bool = False
    created_by: str | None = None
    created_at: datetime | None = None


class BaselineRuleOut(Out):
    name: str
    effect: str
    reason: str


class PolicySetOut(Out):
    version: str
    baseline: list[BaselineRuleOut]
    policies: list[PolicyOut]


class PolicyHistoryOut(Out):
    name: str
    current: PolicyOut
    revisions: list[PolicyOut]


class ReasonOut(Out):
    policy: str
    message: str


class CandidateOut(Out):
    node: str
    cluster: str
    pool: str
    allowed: bool
    reasons: list[ReasonOut]


class ConstraintsOut(Out):
    egress: bool
    installs: bool
    secure_pool: bool
    classification: str


class DecisionOut(Out):
    allowed: bool
    policy_version: str
    input_digest: str
    classification: str
    constraints: ConstraintsOut
    job_reasons: list[ReasonOut]
    candidates: list[CandidateOut]
    explanation: list[str] = Field(default_factory=list, description="why not, one line per deciding policy")


class RejectedOut(Out):
    """A submission governance refused: 403, and the job is recorded as REJECTED."""

    detail: str
    job: str
    state: str = "REJECTED"
    reasons: list[str]
    policy_version: str | None = None


class AuditEntryOut(Out):
    seq: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]
    node: str | None = None
    partner: str | None = None
    prev_hash: str
    hash: str


class PurgeItemOut(Out):
    job: str
    project: str
    datasets: list[str]
    ended_at: datetime
    due_at: datetime
    artifacts: list[str]
    purged: bool = False
