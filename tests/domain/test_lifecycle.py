"""The job state machine over the full from x to matrix, and the requeue (retry) rules."""

from __future__ import annotations

import itertools

import pytest

from aitb.domain.lifecycle import (
    JOB_STATE_ON_ATTEMPT_END,
    REQUEUE_RULES,
    TERMINAL_STATES,
    AttemptOutcome,
    IllegalTransition,
    JobState,
    can_transition,
    check_transition,
    is_finished,
    requeue_rule,
)

S = JobState
ALLOWED = {
    (S.QUEUED, S.ADMITTED), (S.QUEUED, S.REJECTED), (S.QUEUED, S.CANCELLED),
    (S.ADMITTED, S.RUNNING), (S.ADMITTED, S.PREEMPTED), (S.ADMITTED, S.CANCELLED), (S.ADMITTED, S.FAILED),
    (S.ADMITTED, S.REJECTED),
    (S.RUNNING, S.SUCCEEDED), (S.RUNNING, S.FAILED), (S.RUNNING, S.CANCELLED), (S.RUNNING, S.PREEMPTED),
    (S.PREEMPTED, S.QUEUED), (S.PREEMPTED, S.CANCELLED),
    (S.FAILED, S.QUEUED),
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(JobState, JobState)))
def test_transition_matrix(current, target):
    if (current, target) in ALLOWED:
        check_transition(current, target)
    else:
        with pytest.raises(IllegalTransition, match=f"from {current} to {target}"):
            check_transition(current, target)


# The ways back into the queue, over every state and a range of retries left:
# FAILED goes back while retries remain (spending one), PREEMPTED always, nothing else.
def expected_requeue(state: JobState, retries_left: int) -> tuple[str, bool] | None:
    if state == S.FAILED and retries_left > 0:
        return ("waiting to retry", True)
    if state == S.PREEMPTED:
        return ("requeued after preemption", False)
    return None


@pytest.mark.parametrize(("state", "retries_left"), list(itertools.product(JobState, [0, 1, 3])))
def test_requeue_rule_matrix(state, retries_left):
    rule = requeue_rule(state, retries_left)
    want = expected_requeue(state, retries_left)
    assert (None if rule is None else (rule.pending_reason, rule.uses_retry)) == want
    if rule is not None:
        assert rule.source == state and can_transition(state, S.QUEUED)
    # finished = will not run again: terminal, or failed with no retry left
    assert is_finished(state, retries_left) == (state in TERMINAL_STATES or (state == S.FAILED and rule is None))


def test_every_way_back_to_the_queue_is_a_requeue_rule():
    into_queue = {current for current, target in ALLOWED if target == S.QUEUED}
    assert into_queue == set(REQUEUE_RULES)


def test_every_attempt_outcome_ends_an_active_job_by_an_allowed_transition():
    for outcome in AttemptOutcome:
        target = JOB_STATE_ON_ATTEMPT_END[outcome]
        assert can_transition(S.RUNNING, target), outcome
