"""The `ray` cluster trust model (testbed fields and the constraint), and the tracking routes'
refusals — no MLflow or Ray needed."""

from __future__ import annotations

import uuid

import pytest

from aitb.domain.testbed import TestbedError, parse_testbed, tenancy_refusal
from tests.support.api import in_process_api

POOLS = [{"name": "cpu", "hosts": 1, "cpu": 2, "memory_gib": 4}]


def _cluster(backend: str = "ray", **connection):
    fed = parse_testbed({"federation": "t", "nodes": [{"name": "lund", "clusters": [
        {"name": "c1", "backend": backend, "connection": connection, "pools": POOLS}]}]})  # fmt: skip
    return fed.clusters()[0][1]


@pytest.mark.parametrize(
    ("connection", "partner", "classification", "allowed"),
    [
        ({"partners": ["volvo"]}, "volvo", "sensitive", True),  # its own cluster: anything
        ({"partners": ["volvo"]}, "scania", "public", False),  # someone else's cluster
        ({"partners": ["volvo", "scania"]}, "scania", "confidential", True),  # a consortium's
        ({"shared_trusted": True}, "scania", "internal", True),
        ({"shared_trusted": True}, "scania", None, True),
        ({"shared_trusted": True}, "scania", "confidential", False),  # never on a shared cluster
        ({"shared_trusted": True}, "scania", "sensitive", False),
        ({}, "volvo", "public", False),  # unmarked: its admin has not said whose it is
    ],
)
def test_ray_cluster_trust(connection, partner, classification, allowed) -> None:
    refusal = tenancy_refusal(_cluster(**connection), partner, classification)
    assert (refusal is None) is allowed, refusal


def test_kuberay_and_sim_are_not_restricted_by_it() -> None:
    for backend in ("sim", "kuberay"):
        assert tenancy_refusal(_cluster(backend), "volvo", "sensitive") is None


@pytest.mark.parametrize(
    "connection",
    [{"partners": []}, {"partners": "volvo"}, {"partners": ["Volvo AB"]}, {"shared_trusted": "yes"},
     {"partners": ["volvo"], "shared_trusted": True}],
)
def test_bad_trust_fields_are_refused(connection) -> None:
    with pytest.raises(TestbedError):
        _cluster(**connection)


def test_local_testbed_gives_stockholm_to_the_demo_partner_and_shares_goteborg() -> None:
    from aitb.cli.commands.demo import PARTNER
    from aitb.domain.testbed import load_testbed

    fed = load_testbed("testbeds/local.yaml")
    owned = {c.name: c.owner_partners for _, c in fed.clusters()}
    assert owned == {"sthlm-local": frozenset({PARTNER}), "gbg-local": frozenset()}
    assert fed.cluster("gbg-local")[1].shared_trusted  # type: ignore[index]
    # the demo's confidential job (strict residency at the first node) has a place to run
    assert tenancy_refusal(fed.cluster("sthlm-local")[1], PARTNER, "confidential") is None  # type: ignore[index]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    return in_process_api(tmp_path_factory.mktemp("routes"), tracking={"tracking_uri": "http://127.0.0.1:9"})


def test_tracking_sync_is_for_platform_admins_and_needs_a_control_plane(api) -> None:
    suffix = uuid.uuid4().hex[:6]
    token = api.make_user(f"r-{suffix}", partner=f"p-{suffix}", project=f"proj-{suffix}")
    with api.client(token) as c:
        assert c.post("/v1/admin/tracking/sync").status_code == 403
    with api.client() as c:
        r = c.post("/v1/admin/tracking/sync?dry_run=true")
        assert r.status_code == 409 and "not configured" in r.json()["detail"]
    with api.client("") as c:
        assert c.post("/v1/admin/tracking/sync").status_code == 401


def test_tracking_info_gives_the_run_page_address(api) -> None:
    suffix = uuid.uuid4().hex[:6]
    token = api.make_user(f"v-{suffix}", partner=f"p-{suffix}")
    with api.client(token) as c:
        info = c.get("/v1/tracking").json()
    assert info["tracking_uri"] == "http://127.0.0.1:9"
    assert info["run_url_template"].format(experiment_id="3", run_id="abc") == "http://127.0.0.1:9/#/experiments/3/runs/abc"


def test_a_ray_cluster_off_this_machine_is_warned_about_once_at_start(caplog) -> None:
    """Per-attempt MLflow credentials are a file on the control plane's disk: a remote Ray
    cluster's jobs read it only where that directory is mounted, and the operator is told."""
    import logging
    from pathlib import Path

    from aitb.control.plane import warn_remote_ray

    fed = parse_testbed({"federation": "t", "nodes": [{"name": "lund", "clusters": [
        {"name": "far", "backend": "ray", "connection": {"address": "http://10.0.0.5:8265", "partners": ["volvo"]},
         "pools": POOLS},
        {"name": "near", "backend": "ray", "connection": {"address": "http://127.0.0.1:8265",
                                                          "shared_trusted": True}, "pools": POOLS},
        {"name": "kube", "backend": "kuberay", "connection": {"namespace_prefix": "x"}, "pools": POOLS}]}]})  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="aitb.control"):
        warn_remote_ray(fed, Path("/srv/aitb/secrets/mlflow-runners"))
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "cluster far (http://10.0.0.5:8265)" in warned[0]
    assert "/srv/aitb/secrets/mlflow-runners" in warned[0]
