"""The job lifecycle of the brief (section 4) as declared rules: which transitions exist,
when a job goes back to the queue (retry, preemption), and how a backend attempt ends."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "QUEUED"
    ADMITTED = "ADMITTED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    PREEMPTED = "PREEMPTED"


S = JobState

# from-state -> the states it may move to. Anything else is refused.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    S.QUEUED: frozenset({S.ADMITTED, S.REJECTED, S.CANCELLED}),
    # ADMITTED -> FAILED: the backend refused the dispatch for good.
    # ADMITTED -> REJECTED: governance re-checked at dispatch (a grant expired or was revoked
    # while the job waited to start); the job never reached the backend.
    S.ADMITTED: frozenset({S.RUNNING, S.PREEMPTED, S.CANCELLED, S.FAILED, S.REJECTED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.PREEMPTED}),
    # PREEMPTED -> CANCELLED: a user cancels before the requeue happens.
    S.PREEMPTED: frozenset({S.QUEUED, S.CANCELLED}),
    # FAILED -> QUEUED only while retries remain: see REQUEUE_RULES.
    S.FAILED: frozenset({S.QUEUED}),
    S.SUCCEEDED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REJECTED: frozenset(),
}

#: States in which a job holds capacity on a cluster.
ACTIVE_STATES = frozenset({S.ADMITTED, S.RUNNING})
#: States from which nothing more happens (FAILED may still be retried).
TERMINAL_STATES = frozenset({S.SUCCEEDED, S.CANCELLED, S.REJECTED})
#: States a user may cancel from.
CANCELLABLE_STATES = frozenset({S.QUEUED, S.ADMITTED, S.RUNNING, S.PREEMPTED})


class IllegalTransition(ValueError):
    def __init__(self, current: JobState, target: JobState):
        super().__init__(f"a job cannot go from {current} to {target}")
        self.current = current
        self.target = target


def can_transition(current: JobState, target: JobState) -> bool:
    return target in TRANSITIONS[current]


def check_transition(current: JobState, target: JobState) -> None:
    if not can_transition(current, target):
        raise IllegalTransition(current, target)


@dataclass(frozen=True)
class Requeue:
    """A way back into the queue: from ``source`` to QUEUED, with the reason it waits under."""

    source: JobState
    pending_reason: str
    uses_retry: bool  # True: only while retries remain, and it spends one


#: The only ways back to QUEUED. The job's placement is dropped either way; its last
#: attempt keeps where it ran (see Attempt).
REQUEUE_RULES: dict[JobState, Requeue] = {
    S.FAILED: Requeue(S.FAILED, "waiting to retry", uses_retry=True),
    S.PREEMPTED: Requeue(S.PREEMPTED, "requeued after preemption", uses_retry=False),
}


def requeue_rule(state: JobState, retries_left: int) -> Requeue | None:
    """The rule that sends a job in ``state`` back to the queue now, or None: it stays."""
    rule = REQUEUE_RULES.get(state)
    if rule is None or (rule.uses_retry and retries_left <= 0):
        return None
    return rule


def is_finished(state: JobState, retries_left: int = 0) -> bool:
    """True when the job will not run again."""
    return state in TERMINAL_STATES or (state == S.FAILED and requeue_rule(state, retries_left) is None)


class AttemptOutcome(StrEnum):
    """How one backend attempt of a job ended."""

    SUCCEEDED = "SUCCEEDED"  # the backend ran it to exit code 0
    FAILED = "FAILED"  # the backend ran it and it failed
    STOPPED = "STOPPED"  # stopped: by aitb (cancel, preemption, max_runtime_s) or by hand
    LOST = "LOST"  # the backend no longer knows the attempt
    REJECTED = "REJECTED"  # the backend refused the dispatch for good
    WITHDRAWN = "WITHDRAWN"  # cancelled or preempted before the backend ever had it


#: The job state an attempt's end moves a still-active job to (the job was not cancelled
#: or preempted first: then the job has moved on already and only the attempt closes).
JOB_STATE_ON_ATTEMPT_END: dict[AttemptOutcome, JobState] = {
    AttemptOutcome.SUCCEEDED: S.SUCCEEDED,
    AttemptOutcome.FAILED: S.FAILED,
    AttemptOutcome.STOPPED: S.FAILED,
    AttemptOutcome.LOST: S.FAILED,
    AttemptOutcome.REJECTED: S.FAILED,
    AttemptOutcome.WITHDRAWN: S.FAILED,
}


# MLflow run status that mirrors each job state (brief section 7).
MLFLOW_STATUS: dict[JobState, str] = {
    S.QUEUED: "SCHEDULED",
    S.ADMITTED: "SCHEDULED",
    S.RUNNING: "RUNNING",
    S.SUCCEEDED: "FINISHED",
    S.FAILED: "FAILED",
    S.CANCELLED: "KILLED",
    S.PREEMPTED: "KILLED",
    S.REJECTED: "FAILED",
}
