"""The test API server behaves as the real one where the backend relies on it, checked with
the official client's own typed APIs (not aitb's wrapper)."""

from __future__ import annotations

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

RAYJOB = {
    "apiVersion": "ray.io/v1", "kind": "RayJob",
    "metadata": {"name": "rj", "labels": {"team": "a", "tier": "gpu"}},
    "spec": {"entrypoint": "sleep 100", "rayClusterSpec": {"headGroupSpec": {
        "rayStartParams": {}, "template": {"spec": {"containers": [{"name": "ray-head", "image": "ray"}]}}}}},
}


@pytest.fixture
def apis(kubeconfig, kube_server):
    kube_server.controller.pause()
    api_client = config.new_client_from_config(config_file=kubeconfig, context="lund-k8s")
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}})
    return core, custom


def test_label_selectors_filter_lists(apis):
    core, _ = apis
    for name, labels in (("a", {"team": "x", "tier": "cpu"}), ("b", {"team": "y"}), ("c", {"tier": "gpu"})):
        core.create_namespaced_service_account("ns", {"apiVersion": "v1", "kind": "ServiceAccount",
                                                      "metadata": {"name": name, "labels": labels}})

    def names(selector):
        return sorted(sa.metadata.name for sa in core.list_namespaced_service_account("ns", label_selector=selector).items)

    assert names("team=x") == ["a"]
    assert names("team!=x") == ["b", "c"]
    assert names("team in (x,y)") == ["a", "b"]
    assert names("team notin (x),tier") == ["c"]
    assert names("!team") == ["c"]
    assert names("team,tier=cpu") == ["a"]


def test_stale_writes_conflict_and_status_is_a_subresource(apis):
    _, custom = apis
    created = custom.create_namespaced_custom_object("ray.io", "v1", "ns", "rayjobs", RAYJOB)
    rv = created["metadata"]["resourceVersion"]
    # the status subresource changes status only
    status = {**created, "status": {"jobDeploymentStatus": "Running"}, "spec": {**created["spec"], "entrypoint": "x"}}
    after = custom.replace_namespaced_custom_object_status("ray.io", "v1", "ns", "rayjobs", "rj", status)
    assert after["status"]["jobDeploymentStatus"] == "Running" and after["spec"]["entrypoint"] == "sleep 100"
    # a write on the old version is refused
    stale = {**created, "spec": {**created["spec"], "entrypoint": "sleep 1"}}
    stale["metadata"]["resourceVersion"] = rv
    with pytest.raises(ApiException) as conflict:
        custom.replace_namespaced_custom_object("ray.io", "v1", "ns", "rayjobs", "rj", stale)
    assert conflict.value.status == 409
    # the main resource ignores status, and bumps generation on a spec change
    fresh = custom.get_namespaced_custom_object("ray.io", "v1", "ns", "rayjobs", "rj")
    fresh["spec"]["entrypoint"] = "sleep 2"
    fresh["status"] = {"jobDeploymentStatus": "Complete"}
    replaced = custom.replace_namespaced_custom_object("ray.io", "v1", "ns", "rayjobs", "rj", fresh)
    assert replaced["spec"]["entrypoint"] == "sleep 2" and replaced["status"]["jobDeploymentStatus"] == "Running"
    assert replaced["metadata"]["generation"] == 2
    with pytest.raises(ApiException) as exists:
        custom.create_namespaced_custom_object("ray.io", "v1", "ns", "rayjobs", RAYJOB)
    assert exists.value.status == 409


def test_strict_field_validation_and_schema_errors(apis):
    core, custom = apis
    bad = {**RAYJOB, "spec": {**RAYJOB["spec"], "entrypointt": "x"}}
    with pytest.raises(ApiException) as unknown:
        custom.create_namespaced_custom_object("ray.io", "v1", "ns", "rayjobs", bad, field_validation="Strict")
    assert unknown.value.status == 400 and "entrypointt" in unknown.value.body
    wrong = {**RAYJOB, "spec": {**RAYJOB["spec"], "backoffLimit": "zero"}}
    with pytest.raises(ApiException) as invalid:
        custom.create_namespaced_custom_object("ray.io", "v1", "ns", "rayjobs", wrong)
    assert invalid.value.status == 422
    with pytest.raises(ApiException) as missing:
        core.create_namespaced_service_account("nowhere", {"apiVersion": "v1", "kind": "ServiceAccount",
                                                           "metadata": {"name": "x"}})
    assert missing.value.status == 404 and "nowhere" in missing.value.body


def test_watch_resumes_from_a_version_and_answers_410_once_it_is_compacted(apis, kube_server):
    _, custom = apis
    start = custom.list_cluster_custom_object("ray.io", "v1", "rayjobs")["metadata"]["resourceVersion"]
    custom.create_namespaced_custom_object("ray.io", "v1", "ns", "rayjobs", RAYJOB)
    custom.delete_namespaced_custom_object("ray.io", "v1", "ns", "rayjobs", "rj")
    events = [(e["type"], e["object"]["metadata"]["name"]) for e in watch.Watch().stream(
        custom.list_cluster_custom_object, "ray.io", "v1", "rayjobs", resource_version=start, timeout_seconds=1)]
    assert events == [("ADDED", "rj"), ("DELETED", "rj")]
    kube_server.compact()
    with pytest.raises(ApiException) as gone:
        list(watch.Watch().stream(custom.list_cluster_custom_object, "ray.io", "v1", "rayjobs",
                                  resource_version=start, timeout_seconds=1))
    assert gone.value.status == 410


def test_deleting_an_owner_collects_its_dependents(apis, kube_server):
    core, custom = apis
    owner = custom.create_namespaced_custom_object("ray.io", "v1", "ns", "rayjobs", RAYJOB)
    ref = {"apiVersion": "ray.io/v1", "kind": "RayJob", "name": "rj", "uid": owner["metadata"]["uid"]}
    core.create_namespaced_secret("ns", {"apiVersion": "v1", "kind": "Secret",
                                         "metadata": {"name": "s", "ownerReferences": [ref]},
                                         "stringData": {"K": "v"}})
    assert core.read_namespaced_secret("s", "ns").data == {"K": "dg=="}  # stringData is stored as data
    custom.delete_namespaced_custom_object("ray.io", "v1", "ns", "rayjobs", "rj")
    assert core.list_namespaced_secret("ns").items == []
