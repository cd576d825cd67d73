"""A batch's tracking events: one run.create per job, in the jobs' order, in one INSERT,
carrying a sweep point's parameters — delivered like events enqueued one at a time."""

from __future__ import annotations

from datetime import timedelta

from aitb.domain.models import SweepPoint
from aitb.services.tracking_events import TrackingEvents
from aitb.store import outbox as outbox_store
from aitb.store.db import Database
from aitb.timeutil import utcnow
from tests.support.jobs import make_job


def test_created_many_enqueues_in_order_with_params(database_url):
    db = Database(database_url)
    jobs = []
    for i in range(5):
        job = make_job(partner="acme")
        spec = job.spec.model_copy(update={"datasets": [], "sweep": SweepPoint(id="s-1", index=i, params={"lr": str(i)})})
        jobs.append(job.model_copy(update={"spec": spec}))
    with db.session() as s:
        TrackingEvents(tracking=True).created_many(s, jobs)
        TrackingEvents(tracking=False).created_many(s, jobs)  # tracking off: nothing
    with db.session() as s:
        due = outbox_store.due(s, utcnow() + timedelta(seconds=1), 100)
    assert [e.job_id for e in due] == [j.id for j in jobs]
    assert {e.kind for e in due} == {"run.create"}
    assert [e.payload["run"]["params"] for e in due] == [{"lr": str(i)} for i in range(5)]
    assert {e.payload["run"]["sweep_id"] for e in due} == {"s-1"}
    db.dispose()
