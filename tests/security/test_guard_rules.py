"""`aitb.tracking.guard.decide` without a server: the rules as a table."""

from __future__ import annotations

import pytest

from aitb.tracking.guard import decide

REFUSED_TO_TENANTS = [
    ("GET", "/api/2.0/mlflow/users/list"),
    ("GET", "/ajax-api/2.0/mlflow/users/list"),
    ("GET", "/api/2.0/mlflow/users/get"),
    ("POST", "/api/2.0/mlflow/users/create"),
    ("PATCH", "/api/2.0/mlflow/users/update-password"),
    ("GET", "/api/3.0/mlflow/users/permissions/list"),
    ("POST", "/api/3.0/mlflow/users/permissions/grant"),
    ("GET", "/api/3.0/mlflow/roles/list"),
    ("POST", "/ajax-api/3.0/mlflow/roles/create"),
    ("POST", "/api/2.0/mlflow/experiments/permissions/create"),
    ("POST", "/api/2.0/mlflow/experiments/create"),
    ("POST", "/ajax-api/2.0/mlflow/experiments/create"),
    ("POST", "/api/2.0/mlflow/experiments/update"),
    ("POST", "/api/2.0/mlflow/experiments/delete"),
    ("POST", "/api/2.0/mlflow/experiments/restore"),
    ("GET", "/ajax-api/3.0/mlflow/assistant/config"),
    ("PUT", "/ajax-api/3.0/mlflow/assistant/config"),
    ("GET", "/api/2.0/mlflow/webhooks"),
    ("POST", "/api/2.0/mlflow/webhooks/abc/test"),
    ("GET", "/ajax-api/3.0/mlflow/gateway/secrets/list"),
    ("POST", "/gateway/openai/v1/chat/completions"),
    ("POST", "/ajax-api/2.0/mlflow/gateway-proxy"),
    ("GET", "/ajax-api/2.0/mlflow/gateway-proxy/other"),
    ("GET", "/ajax-api/3.0/jobs/123"),
    ("POST", "/ajax-api/3.0/mlflow/demo/generate"),
    ("POST", "/api/3.0/mlflow/datasets/d-1/add-experiments"),
    ("PUT", "/api/3.0/mlflow/scorers/online-config"),
    ("GET", "//api/2.0/mlflow//users/list"),
]
OPEN_TO_TENANTS = [  # MLflow's own per-resource checks still apply
    ("GET", "/api/2.0/mlflow/users/current"),
    ("GET", "/ajax-api/3.0/mlflow/users/current/permissions"),
    ("POST", "/api/2.0/mlflow/experiments/search"),
    ("GET", "/api/2.0/mlflow/experiments/get"),
    ("POST", "/api/2.0/mlflow/runs/create"),
    ("POST", "/api/2.0/mlflow/runs/log-batch"),
    ("GET", "/get-artifact"),
    ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/x.txt"),
    ("POST", "/graphql"),
    ("POST", "/api/2.0/mlflow/registered-models/create"),
    ("POST", "/v1/traces"),
]


@pytest.mark.parametrize(("method", "path"), REFUSED_TO_TENANTS)
def test_refused_to_tenants_open_to_the_platform(method: str, path: str) -> None:
    refusal = decide(method, path, lambda: {}, is_admin=False)
    assert refusal is not None and refusal.status == 403
    assert decide(method, path, lambda: {}, is_admin=True) is None


@pytest.mark.parametrize(("method", "path"), OPEN_TO_TENANTS)
def test_left_to_mlflow(method: str, path: str) -> None:
    assert decide(method, path, lambda: {"key": "note"}, is_admin=False) is None


def test_artifact_location_is_never_client_chosen() -> None:
    for location in ("file:///etc", "/tmp/x", "s3://b/x", "mlflow-artifacts:/../../x"):
        refusal = decide("POST", "/api/2.0/mlflow/experiments/create",
                         lambda loc=location: {"name": "n", "artifact_location": loc}, is_admin=True)  # fmt: skip
        assert refusal is not None and refusal.status == 400
    assert decide("POST", "/api/2.0/mlflow/experiments/create", lambda: {"name": "n"}, is_admin=True) is None


def test_platform_tags_are_the_platforms() -> None:
    route = "/api/2.0/mlflow/experiments/set-experiment-tag"
    assert decide("POST", route, lambda: {"key": "aitb.seal"}, is_admin=False).status == 403
    assert decide("POST", route, lambda: {"key": "mlflow.note.content"}, is_admin=False) is None
    assert decide("POST", route, lambda: {"key": "aitb.seal"}, is_admin=True) is None


def test_the_uis_gateway_listing_is_answered_empty_for_tenants() -> None:
    refusal = decide("GET", "/ajax-api/2.0/mlflow/gateway-proxy", None, is_admin=False)
    assert refusal is not None and refusal.status == 200 and refusal.empty == {"endpoints": []}
    assert decide("POST", "/ajax-api/2.0/mlflow/gateway-proxy", None, is_admin=False).status == 403
