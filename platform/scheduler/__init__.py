"""The scheduling core: a pure function from a snapshot to decisions (brief section 5)."""

from aitb.scheduler.core import decide
from aitb.scheduler.decisions import Admission, Decisions, Preemption, Waiting, queue_view
from aitb.scheduler.policy import FIFO, OURS, POLICIES, QUOTA_ONLY, Policy
from aitb.scheduler.snapshot import (
    Host,
    PendingJob,
    RunningJob,
    Snapshot,
    governance_constraints,
    snapshot_from_federation,
)

__all__ = [
    "FIFO",
    "OURS",
    "POLICIES",
    "QUOTA_ONLY",
    "Admission",
    "Decisions",
    "Host",
    "PendingJob",
    "Policy",
    "Preemption",
    "RunningJob",
    "Snapshot",
    "Waiting",
    "decide",
    "governance_constraints",
    "queue_view",
    "snapshot_from_federation",
]
