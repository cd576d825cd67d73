"""The trust rule of plain Ray, enforced: governance's baseline agrees with `tenancy_refusal`,
the scheduler never places a job on a Ray cluster that refuses it (its pending reason says
why), and a job no cluster could ever take is 403 at submission, REJECTED and audited.

The placement test drives clusters declared `backend: ray` with SimBackend: what is checked
is the decision and the placement (the same code for either backend), not Ray itself; the
e2e governance test runs the same rule on a real Ray cluster."""

from __future__ import annotations

import itertools
import time
import uuid
from datetime import UTC, datetime

import pytest
import yaml

from aitb.clusters.sim_backend import SimBackend
from aitb.control.governance import GovernanceGate
from aitb.control.reconciler import Reconciler
from aitb.control.scheduling import SchedulingCycle
from aitb.domain.lifecycle import JobState
from aitb.domain.models import Classification, JobSpec
from aitb.domain.resources import GangSpec, ReplicaSpec
from aitb.domain.testbed import parse_testbed, tenancy_refusal
from aitb.governance import DatasetFacts, JobFacts, candidates_of, decide
from aitb.scheduler import Policy
from aitb.services import jobs as job_service
from aitb.services.authz import PLATFORM_ADMIN, Principal
from aitb.services.tracking_events import TrackingEvents
from aitb.store import jobs as job_store
from aitb.store.db import Database
from aitb.store.tables import PartnerRow, ProjectRow, QuotaRow
from tests.support.api import in_process_api

OPEN = {"name": "cpu", "hosts": 1, "cpu": 4, "memory_gib": 8}
SECURE = {"name": "secure", "hosts": 1, "cpu": 4, "memory_gib": 8, "labels": {"secure": True}}


def _testbed(*clusters: tuple[str, str, str, dict]) -> dict:
    """(node, cluster, backend, connection) each with an open and a secure pool."""
    return {"federation": "t", "nodes": [
        {"name": node, "clusters": [{"name": name, "backend": backend, "connection": conn,
                                     "pools": [OPEN, SECURE]}]}
        for node, name, backend, conn in clusters]}  # fmt: skip


# -- the decision agrees with the domain rule -------------------------------------------------

CONNECTIONS = [{"partners": ["volvo"]}, {"partners": ["volvo", "scania"]}, {"shared_trusted": True},
               {"shared_trusted": False}, {}]


def test_the_baseline_rule_is_the_domain_rule() -> None:
    """Every backend x trust marking x partner x classification: governance allows a cluster
    exactly when `tenancy_refusal` has nothing against it, and names the rule when not."""
    clusters = [(f"n{i}", f"c{i}", backend, conn)
                for i, (backend, conn) in enumerate(itertools.product(("ray", "kuberay", "sim"), CONNECTIONS))]
    fed = parse_testbed(_testbed(*clusters))
    candidates = candidates_of(fed)
    now = datetime.now(UTC)
    checked = 0
    for partner, level in itertools.product(("volvo", "scania", "astra"), list(Classification)):
        job = JobFacts("p", partner, "u", now, (DatasetFacts("d", partner, level),))
        decision = decide(job, candidates)
        for _, cluster in fed.clusters():
            refusal = tenancy_refusal(cluster, partner, level.value)
            for verdict in (v for v in decision.verdicts if v.candidate.cluster == cluster.name):
                tenancy = [r for r in verdict.reasons if r.policy.startswith("baseline.ray-")]
                assert bool(tenancy) == (refusal is not None), (cluster, partner, level, verdict)
                if refusal is not None:
                    assert not verdict.allowed and refusal in {r.message for r in tenancy}
                checked += 1
    assert checked == 3 * 4 * len(clusters) * 2


# -- the scheduler ----------------------------------------------------------------------------

FED = parse_testbed(_testbed(
    ("stockholm", "sthlm-ray", "ray", {"partners": ["volvo"]}),
    ("goteborg", "gbg-ray", "ray", {"shared_trusted": True}),
))
ADMIN = Principal(name="root", roles=frozenset({PLATFORM_ADMIN}))


@pytest.fixture
def db(database_url):
    database = Database(database_url)
    with database.session() as s:
        s.add_all([PartnerRow(name="volvo", weight=1), PartnerRow(name="scania", weight=1)])
        s.flush()
        s.add_all([ProjectRow(name="v1", partner="volvo"), ProjectRow(name="s1", partner="scania")])
        s.flush()
        # both projects may use stockholm's capacity; only scania's has none at goteborg
        s.add_all([QuotaRow(project="v1", node="stockholm", nominal={"cpu": 16, "memory_gib": 64}),
                   QuotaRow(project="s1", node="stockholm", nominal={"cpu": 16, "memory_gib": 64})])
    yield database
    database.dispose()


def _scheduler(db: Database, tmp_path, fed=FED) -> SchedulingCycle:
    """The control plane's scheduling cycle and governance gate; every cluster a SimBackend."""
    clock = lambda: float(int(time.time()))  # noqa: E731
    events = TrackingEvents(tracking=True)
    sims = {c.name: SimBackend(clock, start_delay_s=1) for _, c in fed.clusters()}
    gate = GovernanceGate(db, fed, events)
    reconciler = Reconciler(db, fed, sims, events, tmp_path, env_for=lambda job: {}, clock=clock)
    reconciler.governance = gate
    return SchedulingCycle(db, fed, events, Policy(), clock=clock, on_preempt=reconciler.stop_now,
                           governance=gate)


def _submit(db: Database, project: str, fed=FED, **kw) -> str:
    spec = JobSpec(project=project, entrypoint="train", gang=GangSpec(head=ReplicaSpec(cpu=1, memory_gib=1)), **kw)
    with db.session() as s:
        return job_service.submit(s, ADMIN, fed, spec, TrackingEvents(tracking=True)).id


def _job(db: Database, job_id: str):
    with db.session() as s:
        return job_store.get_job(s, job_id)


def test_a_partners_job_is_never_placed_on_a_ray_cluster_of_another_partner(db, tmp_path) -> None:
    scheduler = _scheduler(db, tmp_path)
    theirs = _submit(db, "s1")  # scania: stockholm has room and quota, but its Ray cluster is volvo's
    ours = _submit(db, "v1")
    for _ in range(3):
        scheduler.run_once()
    waiting, placed = _job(db, theirs), _job(db, ours)
    assert placed.state == JobState.ADMITTED and placed.cluster == "sthlm-ray"
    assert waiting.state == JobState.QUEUED and waiting.cluster is None
    assert "governance allows goteborg" in waiting.pending_reason
    assert "ray cluster sthlm-ray belongs to volvo" in waiting.pending_reason, waiting.pending_reason
    # given room at the shared cluster, it runs there
    with db.session() as s:
        s.add(QuotaRow(project="s1", node="goteborg", nominal={"cpu": 4, "memory_gib": 8}))
    scheduler.run_once()
    moved = _job(db, theirs)
    assert moved.state == JobState.ADMITTED and moved.cluster == "gbg-ray"


def test_a_job_pinned_to_another_partners_ray_cluster_is_rejected_at_submission(db) -> None:
    job_id = _submit(db, "s1", nodes=["stockholm"])
    job = _job(db, job_id)
    assert job.state == JobState.REJECTED
    assert any("ray cluster sthlm-ray belongs to volvo [baseline.ray-owned]" in r for r in job.reasons), job.reasons


# -- the API: 403, REJECTED, audited; admitted where the partner owns the cluster ----------------


def _api(tmp_path, clusters):
    path = tmp_path / "testbed.yaml"
    path.write_text(yaml.safe_dump(_testbed(*clusters)))
    return in_process_api(tmp_path, testbed=str(path))


def _world(api, classification: str) -> dict:
    s = uuid.uuid4().hex[:6]
    partner, project = f"lab-{s}", f"proj-{s}"
    token = api.make_user(f"res-{s}", partner=partner, project=project)
    with api.client() as c:
        r = c.post("/v1/datasets", json={"name": f"ds-{s}", "partner": partner, "classification": classification,
                                         "home_node": "stockholm", "residency": "none", "retention_days": 30})
        assert r.status_code == 201, r.text
    return {"token": token, "partner": partner, "project": project, "dataset": f"ds-{s}"}


def _body(w: dict, **extra) -> dict:
    return {"project": w["project"], "entrypoint": "echo hi", "resources": {"cpu": 1, "memory_gib": 1},
            "datasets": [w["dataset"]], **extra}


def test_confidential_data_on_an_all_shared_federation_is_403_rejected_and_audited(tmp_path) -> None:
    api = _api(tmp_path, [("stockholm", "sthlm-ray", "ray", {"shared_trusted": True}),
                          ("goteborg", "gbg-ray", "ray", {"shared_trusted": True})])
    try:
        w = _world(api, "confidential")
        with api.client(w["token"]) as c:
            r = c.post("/v1/jobs", json=_body(w))
            assert r.status_code == 403, r.text
            answer = r.json()
            assert answer["state"] == "REJECTED"
            assert "confidential data never runs on a shared ray cluster" in answer["detail"]
            assert "baseline.ray-shared-confidential" in answer["detail"]
            job = c.get(f"/v1/jobs/{answer['job']}").json()
            assert job["state"] == "REJECTED"
            assert any("baseline.ray-shared-confidential" in x for x in job["reasons"])
            # the same job with internal data would run: it is the data, not the job
            assert c.post("/v1/policies/test", json={**_body(w), "datasets": []}).json()["allowed"] is True
        with api.client() as c:
            (entry,) = c.get("/v1/audit", params={"target": f"job/{answer['job']}"}).json()
        assert entry["action"] == "job.reject" and entry["detail"]["result"] == "denied"
        assert any("baseline.ray-shared-confidential" in x for x in entry["detail"]["reasons"])
    finally:
        api.close()


def test_confidential_job_is_admitted_where_its_partner_owns_the_ray_cluster(tmp_path) -> None:
    partner = f"lab-{uuid.uuid4().hex[:6]}"
    api = _api(tmp_path, [("stockholm", "sthlm-ray", "ray", {"partners": [partner]}),
                          ("goteborg", "gbg-ray", "ray", {"shared_trusted": True})])
    try:
        w = _world(api, "confidential")
        # _world made its own partner; this one is the owner's
        s = uuid.uuid4().hex[:6]
        owner_token = api.make_user(f"own-{s}", partner=partner, project=f"own-{s}")
        with api.client() as c:
            c.post("/v1/datasets", json={"name": f"cds-{s}", "partner": partner, "classification": "confidential",
                                         "home_node": "stockholm", "residency": "none", "retention_days": 30}
                   ).raise_for_status()
        owned = {"project": f"own-{s}", "dataset": f"cds-{s}"}
        with api.client(owner_token) as c:
            r = c.post("/v1/jobs", json=_body(owned))
            assert r.status_code == 201, r.text
            assert r.json()["state"] == "QUEUED"
            d = c.post("/v1/policies/test", json=_body(owned)).json()
        allowed = {(x["cluster"], x["pool"]) for x in d["candidates"] if x["allowed"]}
        assert allowed == {("sthlm-ray", "secure")}
        gbg = [x for x in d["candidates"] if x["cluster"] == "gbg-ray"]
        assert gbg and all("baseline.ray-shared-confidential" in {r["policy"] for r in x["reasons"]} for x in gbg)
        # another partner's confidential job has nowhere to go: stockholm is not theirs, goteborg is shared
        with api.client(w["token"]) as c:
            r = c.post("/v1/jobs", json=_body(w))
        assert r.status_code == 403, r.text
        assert f"ray cluster sthlm-ray belongs to {partner}" in r.json()["detail"]
    finally:
        api.close()


def test_a_closed_ray_cluster_does_not_starve_the_job_of_the_other_clusters_at_its_node(database_url, tmp_path):
    """stockholm has volvo's Ray cluster and a sim cluster: scania's jobs go to the sim one (the
    scheduler is told which clusters are open, not only which nodes), never to volvo's."""
    fed = parse_testbed({"federation": "t", "nodes": [{"name": "stockholm", "clusters": [
        {"name": "sthlm-ray", "backend": "ray", "connection": {"partners": ["volvo"]}, "pools": [OPEN]},
        {"name": "sthlm-sim", "backend": "sim", "pools": [dict(OPEN, name="cpu2")]}]}]})  # fmt: skip
    database = Database(database_url)
    try:
        with database.session() as s:
            s.add_all([PartnerRow(name="volvo", weight=1), PartnerRow(name="scania", weight=1)])
            s.flush()
            s.add(ProjectRow(name="s1", partner="scania"))
            s.flush()
            s.add(QuotaRow(project="s1", node="stockholm", nominal={"cpu": 16, "memory_gib": 64}))
        scheduler = _scheduler(database, tmp_path, fed)
        ids = [_submit(database, "s1", fed) for _ in range(5)]  # 4 fit the sim cluster's pool
        for _ in range(2):
            scheduler.run_once()
        jobs = [_job(database, i) for i in ids]
        assert [j.cluster for j in jobs if j.state == JobState.ADMITTED] == ["sthlm-sim"] * 4
        (left,) = [j for j in jobs if j.state == JobState.QUEUED]
        assert "ray cluster sthlm-ray belongs to volvo" in left.pending_reason, left.pending_reason
        assert "no room at stockholm" in left.pending_reason
    finally:
        database.dispose()


def test_every_demo_job_is_allowed_on_the_embedded_default(tmp_path) -> None:
    """`aitb demo`'s tenants on testbeds/local.yaml: each of its jobs may run somewhere, and the
    one on the confidential dataset only on the secure pool of stockholm's cluster, its partner's."""
    import io

    from rich.console import Console

    from aitb.cli.commands import demo

    api = in_process_api(tmp_path)
    try:
        with api.client() as admin:
            token = demo._setup_tenants(admin, Console(file=io.StringIO()))
        with api.client(token) as user:
            for job in demo.JOBS:
                body = {"project": job.project, "name": job.name, "entrypoint": job.entrypoint,
                        "resources": {"cpu": 1, "memory_gib": 1}, "datasets": list(job.datasets),
                        "nodes": list(job.nodes)}
                d = user.post("/v1/policies/test", json=body).json()
                assert d["allowed"], (job.name, d)
                if job.datasets:
                    assert {(x["cluster"], x["pool"]) for x in d["candidates"] if x["allowed"]} == {
                        ("sthlm-local", "gpu")}
                    gbg = [x for x in d["candidates"] if x["cluster"] == "gbg-local"]
                    assert all("baseline.ray-shared-confidential" in {r["policy"] for r in x["reasons"]}
                               for x in gbg)
    finally:
        api.close()
