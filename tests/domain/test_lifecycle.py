"""The job state machine over the full from x to matrix."""

from __future__ import annotations

import itertools

import pytest

from aitb.domain.lifecycle import IllegalTransition, JobState, check_transition

S = JobState
ALLOWED = {
    (S.QUEUED, S.ADMITTED), (S.QUEUED, S.REJECTED), (S.QUEUED, S.CANCELLED),
    (S.ADMITTED, S.RUNNING), (S.ADMITTED, S.PREEMPTED), (S.ADMITTED, S.CANCELLED), (S.ADMITTED, S.FAILED),
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
