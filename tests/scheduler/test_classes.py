"""Equivalence classes are only a shortcut: with and without them the decisions are the same."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_properties import scenarios

from aitb.scheduler import Decisions, PendingJob, decide


def _outcome(d: Decisions) -> tuple:
    return (
        [(a.job_id, a.hosts, a.gpu_devices, a.borrowing) for a in d.admissions],
        [(p.job_id, p.beneficiary) for p in d.preemptions],
        [(w.job_id, w.position) for w in d.waiting.values()],
        d.reservations,
    )


def _copies(job: PendingJob, n: int) -> list[PendingJob]:
    """Same shape, constraints, project and priority: one equivalence class."""
    return [PendingJob(f"{job.id}c{k}", job.project, job.partner, job.priority,
                       job.submitted_at + 0.5 + k / 10, job.gang, job.nodes, job.pool_labels)
            for k in range(n)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(0, 4))
def test_class_caches_change_no_decision(scenario, copies: int) -> None:
    _, snap, policy = scenario
    snap = replace(snap, pending=[c for j in snap.pending for c in [j, *_copies(j, copies)]])
    fast = decide(snap, lambda: 100.0, policy)
    slow = decide(snap, lambda: 100.0, policy, classes=False)
    for part, a, b in zip(("admissions", "preemptions", "waiting", "reservations"),
                          _outcome(fast), _outcome(slow), strict=True):
        assert a == b, part
