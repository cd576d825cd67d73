"""Bench only (bench/governance.py --api): the API with governance switched off at submission.

`create_app` patches `aitb.services.jobs.governance_check` to hand the job back unchanged
(no decision, no `job.submit` audit entry) and then builds the real app: exactly what the
in-process bench's "off" mode skips, nothing else. Never used outside the benchmark.
"""

from __future__ import annotations


def _no_governance(session, who, federation, job, events):
    return job


def create_app():
    from aitb.services import jobs

    jobs.governance_check = _no_governance
    from aitb.api.app import create_app as real_create_app

    return real_create_app()
