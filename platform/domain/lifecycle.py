"""The job lifecycle of the brief (section 4) as declared transition rules."""

from __future__ import annotations

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
    S.ADMITTED: frozenset({S.RUNNING, S.PREEMPTED, S.CANCELLED, S.FAILED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.PREEMPTED}),
    # PREEMPTED -> CANCELLED: a user cancels before the requeue happens.
    S.PREEMPTED: frozenset({S.QUEUED, S.CANCELLED}),
    # FAILED -> QUEUED only while retries remain (checked by the caller's guard).
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


def is_finished(state: JobState, retries_left: int = 0) -> bool:
    """True when the job will not run again."""
    return state in TERMINAL_STATES or (state == S.FAILED and retries_left <= 0)


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
