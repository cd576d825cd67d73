"""Data governance: one decision point, Cedar policies, runtime constraints (brief section 6).

`decide(job, candidates) -> Decision` is pure: the clock and every fact come in
through `JobFacts`; the policy set is an immutable `PolicyEngine`.
"""

from aitb.governance.engine import PolicyEngine, decide
from aitb.governance.model import (
    Candidate,
    DatasetFacts,
    Decision,
    GrantFacts,
    JobFacts,
    Reason,
    RuntimeConstraints,
    Verdict,
    candidates_of,
)
from aitb.governance.policies import PolicyDoc, PolicyError, compile_added

__all__ = [
    "Candidate",
    "DatasetFacts",
    "Decision",
    "GrantFacts",
    "JobFacts",
    "PolicyDoc",
    "PolicyEngine",
    "PolicyError",
    "Reason",
    "RuntimeConstraints",
    "Verdict",
    "candidates_of",
    "compile_added",
    "decide",
]
