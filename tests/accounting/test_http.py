"""The accounting API in-process over a store filled by the sim workload: role visibility,
input errors, /metrics parsed with the Prometheus parser, and the Grafana dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from aitb.api.app import create_app
from aitb.api.deps import AppState
from aitb.services.accounts import hash_token
from aitb.settings import Settings
from aitb.store.tables import UserRow
from tests.accounting.workload import FEDERATION, add_users, finished_store

REPO = Path(__file__).resolve().parents[2]
PERIOD = {"from": "2026-11-01T00:00:00Z", "to": "2027-01-01T00:00:00Z"}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("acct")
    db = finished_store(tmp)
    add_users(db)
    with db.session() as s:
        for name, roles in (("root", ["platform-admin"]), ("dave", ["partner-admin:volvo"]),
                            ("erin", ["node-admin:orebro"]), ("frank", [])):
            s.add(UserRow(name=name, roles=roles, token_hash=hash_token(f"tok-{name}")))
    settings = Settings(data_dir=tmp, scheduler={"enabled": False})
    app = create_app(settings, AppState(settings=settings, db=db, federation=FEDERATION))
    with TestClient(app) as client:
        yield client


def get(api, user: str | None, path: str, **params):
    headers = {"Authorization": f"Bearer tok-{user}"} if user else {}
    return api.get(path, params=params, headers=headers)


@pytest.mark.parametrize(("user", "partners", "nodes"), [
    ("root", {"volvo", "saab"}, {"lund", "orebro"}),
    ("dave", {"volvo"}, {"lund"}),  # partner admin: their partner only
    ("erin", {"saab"}, {"orebro"}),  # node admin: usage at their node only
    ("alice", {"volvo"}, {"lund"}),  # researcher: their project only
    ("bob", {"saab"}, {"lund", "orebro"}),
    ("frank", set(), set()),  # no role, no project: nothing
])
def test_usage_is_scoped_to_the_caller(api, user, partners, nodes):
    r = get(api, user, "/v1/usage", group_by="partner,node", step="month", **PERIOD)
    assert r.status_code == 200, r.text
    rows = r.json()["rows"]
    assert {row["partner"] for row in rows} == partners
    assert {row["node"] for row in rows} == nodes
    body = r.json()
    assert body["from"] == "2026-11-01T00:00:00Z" and body["grain"] == "month"
    if user == "erin":
        assert body["totals"]["gpu_hours"] == 0 and body["totals"]["cpu_hours"] == pytest.approx(8 / 6)
    if user == "dave":
        assert body["totals"]["gpu_hours"] == 5.0 and body["totals"]["preemptions"] == 1


def test_usage_input_errors_and_auth(api):
    assert get(api, None, "/v1/usage").status_code == 401
    for params, word in (({"group_by": "job"}, "group_by"), ({"step": "fortnight"}, "step"),
                         ({"from": "2026-12-01T00:00:00Z", "to": "2026-11-01T00:00:00Z"}, "before"),
                         ({"from": "yesterday"}, "from")):
        r = get(api, "root", "/v1/usage", **params)
        assert r.status_code == 422, (params, r.text)
        assert word in r.json()["detail"], r.json()


def test_fairshare_shows_partners_and_scoped_projects(api):
    body = get(api, "root", "/v1/fairshare").json()
    partners = {p["partner"]: p for p in body["partners"]}
    assert partners["volvo"]["entitlement"] == 0.25 and partners["saab"]["entitlement"] == 0.75
    assert {p["project"] for p in partners["saab"]["projects"]} == {"owner"}
    assert body["capacity"] == {"cpu": 24.0, "memory_gib": 128.0, "gpu": 4.0}
    # volvo used more (5 GPU-h vs 4, later): a larger usage share and a lower factor
    assert partners["volvo"]["usage_share"] > partners["saab"]["usage_share"]
    assert partners["volvo"]["fairshare_factor"] < partners["saab"]["fairshare_factor"]
    alice = {p["partner"]: p for p in get(api, "alice", "/v1/fairshare").json()["partners"]}
    assert [p["project"] for p in alice["volvo"]["projects"]] == ["borrower"]
    assert alice["saab"]["projects"] == []
    erin = {p["partner"]: p for p in get(api, "erin", "/v1/fairshare").json()["partners"]}  # node admin
    assert set(erin) == {"volvo", "saab"} and erin["volvo"]["projects"] == erin["saab"]["projects"] == []


def test_capacity_per_node_and_pool(api):
    body = get(api, "erin", "/v1/capacity").json()
    nodes = {n["node"]: n for n in body["nodes"]}
    pool = nodes["lund"]["clusters"][0]["pools"][0]
    assert pool["capacity"] == {"cpu": 8.0, "memory_gib": 64.0, "gpu": 4.0}
    assert pool["allocated"] == {"cpu": 0.0, "memory_gib": 0.0, "gpu": 0.0} and pool["idle"]["gpu"] == 4.0
    assert nodes["orebro"]["pending"]["jobs"] == 0 and body["pending_any_node"]["jobs"] == 0


def scrape(api) -> dict:
    text = api.get("/metrics").text
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(families, name, **labels):
    for family in families.values():
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise AssertionError(f"no sample {name} {labels}")


def test_metrics_scraped_and_parsed(api):
    fam = scrape(api)
    assert sample(fam, "aitb_pool_capacity_gpus", node="lund", pool="gpu", gpu_type="a100") == 4
    assert sample(fam, "aitb_pool_capacity_memory_bytes", node="orebro") == 64 * 2**30
    assert sample(fam, "aitb_pool_idle_cpus", node="orebro") == 16
    lund = {"partner": "volvo", "project": "borrower", "node": "lund"}
    assert sample(fam, "aitb_project_admissions_total", **lund) == 2
    assert sample(fam, "aitb_project_preemptions_total", **lund) == 1
    assert sample(fam, "aitb_project_queue_wait_seconds_bucket", le="900.0", **lund) == 1
    assert sample(fam, "aitb_project_queue_wait_seconds_bucket", le="3600.0", **lund) == 2
    assert sample(fam, "aitb_project_queue_wait_seconds_sum", **lund) == 3600
    assert sample(fam, "aitb_project_queue_wait_seconds_count", **lund) == 2
    assert sample(fam, "aitb_project_quota_nominal_gpus", gpu_type="any", **lund) == 0
    assert sample(fam, "aitb_project_quota_borrowing_limit_gpus", gpu_type="any", **lund) == 4
    assert sample(fam, "aitb_usage_gpu_seconds_total", category="borrowed", **lund) == 4 * 3600
    assert sample(fam, "aitb_usage_gpu_seconds_total", category="preempted", **lund) == 1 * 3600
    assert fam["aitb_project_admissions"].type == "counter"
    assert fam["aitb_project_queue_wait_seconds"].type == "histogram"
    # bounded labels: no job or attempt ids anywhere
    for family in fam.values():
        for s in family.samples:
            assert not any(v.startswith("j-") for v in s.labels.values()), s


def test_dashboard_references_only_metrics_that_exist(api):
    dashboard = json.loads((REPO / "deploy/grafana/aitb-dashboard.json").read_text())
    exposed = {s.name for f in scrape(api).values() for s in f.samples}
    exposed |= {f.name for f in scrape(api).values()}
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    names = {m for e in exprs for m in re.findall(r"\baitb_[a-z0-9_]+", e)}
    assert len(names) >= 15
    missing = sorted(names - exposed)
    assert not missing, f"dashboard uses metrics /metrics does not expose: {missing}"
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"] if "datasource" in p)


def test_the_helm_chart_ships_this_dashboard():
    """The chart reads files/aitb-dashboard.json (Helm cannot reach outside the chart); the
    dashboard in deploy/grafana is a link to it, so there is one copy."""
    chart = REPO / "helm/aitb/files/aitb-dashboard.json"
    assert (REPO / "deploy/grafana/aitb-dashboard.json").resolve() == chart.resolve()
    assert json.loads(chart.read_text())["panels"]
