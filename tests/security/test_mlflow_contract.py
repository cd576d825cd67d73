"""The tenancy contract of the MLflow server, route by route and role by role.

Every route below is called by every role against partner A's and partner B's resources (both
directions), and each answer is checked against what the role may do there:

| role | on A's project | on B's project |
|---|---|---|
| `a_user` (researcher) | EDIT | nothing |
| `a_viewer` (viewer) | READ | nothing |
| `a_runner` (one job attempt) | EDIT | nothing |
| `b_user` (researcher) | nothing | EDIT |
| anonymous | 401 | 401 |

A registered model is its creator's (`a_user` / `b_user`: MANAGE), nobody else's. Kinds:
`read` (200 when allowed, else refused), `write` (EDIT), `manage` (MANAGE: nobody holds it
on a project experiment, so everyone is refused), `search` (200 for everyone, the other
side's item absent), `admin` (refused to every tenant), `self` (every logged-in user).
The table of outcomes is written to the test's tmp dir as `route_table.md`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.security.conftest import World

pytestmark = pytest.mark.mlflow

ROLES = ("a_user", "a_viewer", "a_runner", "b_user", "anonymous")
RANK = {None: 0, "READ": 1, "EDIT": 3, "MANAGE": 4}
A2, A3 = "/api/2.0/mlflow", "/api/3.0/mlflow"
X2, X3 = "/ajax-api/2.0/mlflow", "/ajax-api/3.0/mlflow"


def permission(role: str, side: str, resource: str) -> str | None:
    """What `role` holds on `side`'s `resource` by the platform's rules."""
    if resource == "registered_model":
        return "MANAGE" if role == f"{side}_user" else None
    grants = {("a_user", "a"): "EDIT", ("a_viewer", "a"): "READ", ("a_runner", "a"): "EDIT",
              ("b_user", "b"): "EDIT"}  # fmt: skip
    return grants.get((role, side))


@dataclass(frozen=True)
class Route:
    name: str
    kind: str  # read | write | manage | search | admin | self
    build: Callable[[World, str], dict[str, Any]]  # side -> httpx.request kwargs
    resource: str = "experiment"
    sees: Callable[[Any, World, str], bool] | None = None  # search: is the side's item listed?
    #: an answer other than 200 that counts as "ok" for an allowed caller (an MLflow
    #: limitation unrelated to access, named in `note`)
    ok_status: int | None = None


def _u() -> str:
    return uuid.uuid4().hex[:8]


def _get(url: str, **params: Any) -> dict[str, Any]:
    return {"method": "GET", "url": url, "params": params}


def _post(path: str, body: Any) -> dict[str, Any]:
    return {"method": "POST", "url": path, "json": body}


def _ids(items: list[dict], key: str) -> set[str]:
    return {str(i.get(key)) for i in items}


S = lambda w, s: w.sides[s]  # noqa: E731


ROUTES: list[Route] = [
    # experiments
    Route("experiments/get", "read", lambda w, s: _get(f"{A2}/experiments/get", experiment_id=S(w, s).experiment_id)),
    Route("experiments/get-by-name", "read", lambda w, s: _get(f"{A2}/experiments/get-by-name", experiment_name=f"{S(w, s).partner}/proj")),
    Route("experiments/search", "search", lambda w, s: _post(f"{A2}/experiments/search", {"max_results": 1000}),
          sees=lambda r, w, s: S(w, s).experiment_id in _ids(r.get("experiments", []), "experiment_id")),
    Route("ajax experiments/search", "search", lambda w, s: _post(f"{X2}/experiments/search", {"max_results": 1000}),
          sees=lambda r, w, s: S(w, s).experiment_id in _ids(r.get("experiments", []), "experiment_id")),
    Route("experiments/set-experiment-tag", "write", lambda w, s: _post(f"{A2}/experiments/set-experiment-tag", {"experiment_id": S(w, s).experiment_id, "key": "note", "value": _u()})),
    Route("experiments/set-experiment-tag aitb.*", "admin", lambda w, s: _post(f"{A2}/experiments/set-experiment-tag", {"experiment_id": S(w, s).experiment_id, "key": "aitb.seal", "value": "forged"})),
    Route("experiments/create", "admin", lambda w, s: _post(f"{A2}/experiments/create", {"name": f"{S(w, s).partner}/new-{_u()}"})),
    Route("experiments/update (rename)", "admin", lambda w, s: _post(f"{A2}/experiments/update", {"experiment_id": S(w, s).experiment_id, "new_name": f"x-{_u()}"})),
    Route("experiments/delete", "admin", lambda w, s: _post(f"{A2}/experiments/delete", {"experiment_id": S(w, s).experiment_id})),
    Route("experiments/search-datasets", "search", lambda w, s: _post(f"{X2}/experiments/search-datasets", {"experiment_ids": [S(w, s).experiment_id]}),
          sees=lambda r, w, s: any(d.get("name") == f"inputs-{S(w, s).partner}" for d in r.get("dataset_summaries", []))),
    # runs
    Route("runs/get", "read", lambda w, s: _get(f"{A2}/runs/get", run_id=S(w, s).run_id)),
    Route("runs/search", "search", lambda w, s: _post(f"{A2}/runs/search", {"experiment_ids": [S(w, s).experiment_id]}),
          sees=lambda r, w, s: S(w, s).run_id in {x["info"]["run_id"] for x in r.get("runs", [])}),
    Route("runs/create", "write", lambda w, s: _post(f"{A2}/runs/create", {"experiment_id": S(w, s).experiment_id})),
    Route("runs/set-tag", "write", lambda w, s: _post(f"{A2}/runs/set-tag", {"run_id": S(w, s).run_id, "key": "note", "value": _u()})),
    Route("runs/log-metric", "write", lambda w, s: _post(f"{A2}/runs/log-metric", {"run_id": S(w, s).run_id, "key": "acc", "value": 0.9, "timestamp": 1, "step": 0})),
    Route("runs/log-parameter", "write", lambda w, s: _post(f"{A2}/runs/log-parameter", {"run_id": S(w, s).run_id, "key": f"p{_u()}", "value": "1"})),
    Route("runs/log-batch", "write", lambda w, s: _post(f"{A2}/runs/log-batch", {"run_id": S(w, s).run_id, "metrics": [{"key": "acc", "value": 1.0, "timestamp": 2, "step": 1}]})),
    Route("runs/update", "write", lambda w, s: _post(f"{A2}/runs/update", {"run_id": S(w, s).run_id, "run_name": f"r-{_u()}"})),
    Route("runs/delete", "manage", lambda w, s: _post(f"{A2}/runs/delete", {"run_id": S(w, s).run_id})),
    # metrics
    Route("metrics/get-history", "read", lambda w, s: _get(f"{A2}/metrics/get-history", run_id=S(w, s).run_id, metric_key="loss")),
    Route("metrics/get-history-bulk-interval", "read", lambda w, s: _get(f"{X2}/metrics/get-history-bulk-interval", run_ids=S(w, s).run_id, metric_key="loss", max_results=10)),
    # artifacts
    Route("artifacts/list", "read", lambda w, s: _get(f"{A2}/artifacts/list", run_id=S(w, s).run_id)),
    Route("get-artifact", "read", lambda w, s: _get("/get-artifact", run_id=S(w, s).run_id, path="out.txt")),
    Route("mlflow-artifacts download", "read", lambda w, s: _get(f"/api/2.0/mlflow-artifacts/artifacts/{S(w, s).experiment_id}/{S(w, s).run_id}/artifacts/out.txt")),
    Route("mlflow-artifacts upload", "write", lambda w, s: {"method": "PUT", "url": f"/api/2.0/mlflow-artifacts/artifacts/{S(w, s).experiment_id}/{S(w, s).run_id}/artifacts/up-{_u()}.txt", "content": b"x"}),
    # logged models
    Route("logged-models/get", "read", lambda w, s: _get(f"{A2}/logged-models/{S(w, s).model_id}")),
    Route("logged-models/search", "search", lambda w, s: _post(f"{A2}/logged-models/search", {"experiment_ids": [S(w, s).experiment_id]}),
          sees=lambda r, w, s: S(w, s).model_id in {m["info"]["model_id"] for m in r.get("models", [])}),
    Route("logged-models/create", "write", lambda w, s: _post(f"{A2}/logged-models", {"experiment_id": S(w, s).experiment_id, "name": f"m{_u()}"})),
    # registered models and versions
    Route("registered-models/get", "read", lambda w, s: _get(f"{A2}/registered-models/get", name=S(w, s).registered_model), resource="registered_model"),
    Route("registered-models/search", "search", lambda w, s: _get(f"{A2}/registered-models/search", max_results=1000), resource="registered_model",
          sees=lambda r, w, s: S(w, s).registered_model in _ids(r.get("registered_models", []), "name")),
    Route("registered-models/set-tag", "write", lambda w, s: _post(f"{A2}/registered-models/set-tag", {"name": S(w, s).registered_model, "key": "k", "value": _u()}), resource="registered_model"),
    Route("model-versions/get", "read", lambda w, s: _get(f"{A2}/model-versions/get", name=S(w, s).registered_model, version="1"), resource="registered_model"),
    # MLflow cannot resolve an mlflow-artifacts: model source inside the server (500 for the
    # model's owner); what matters here is that everyone else is refused.
    Route("model-versions/get-artifact", "read", lambda w, s: _get("/model-versions/get-artifact", name=S(w, s).registered_model, version="1", path="out.txt"), resource="registered_model", ok_status=500),
    Route("registered-models/permissions grant", "admin", lambda w, s: _post(f"{A3}/users/permissions/grant", {"username": w.accounts["b_user"].username, "resource_type": "registered_model", "resource_id": S(w, s).registered_model, "permission": "READ"}), resource="registered_model"),
    # traces
    Route("traces/get (v3)", "read", lambda w, s: _get(f"{A3}/traces/{S(w, s).trace_id}")),
    Route("traces/search (v2)", "search", lambda w, s: _get(f"{A2}/traces", experiment_ids=S(w, s).experiment_id),
          sees=lambda r, w, s: S(w, s).trace_id in {t.get("request_id") for t in r.get("traces", [])}),
    Route("traces/set-tag (v3)", "write", lambda w, s: {"method": "PATCH", "url": f"{A3}/traces/{S(w, s).trace_id}/tags", "json": {"key": "k", "value": _u()}}),
    # GenAI datasets
    Route("datasets/get", "read", lambda w, s: _get(f"{A3}/datasets/{S(w, s).dataset_id}")),
    Route("datasets/search", "search", lambda w, s: _post(f"{A3}/datasets/search", {"experiment_ids": [S(w, s).experiment_id]}),
          sees=lambda r, w, s: S(w, s).dataset_id in _ids(r.get("datasets", []), "dataset_id")),
    Route("datasets/add-experiments", "admin", lambda w, s: _post(f"{A3}/datasets/{S(w, s).dataset_id}/add-experiments", {"experiment_ids": [S(w, s).experiment_id]})),
    # GraphQL
    Route("graphql mlflowGetRun", "search", lambda w, s: _post("/graphql", {"query": "query q($id: String) { mlflowGetRun(input: {runId: $id}) { run { info { runId } } } }", "variables": {"id": S(w, s).run_id}}),
          sees=lambda r, w, s: ((((r.get("data") or {}).get("mlflowGetRun") or {}).get("run") or {}).get("info") or {}).get("runId") == S(w, s).run_id),
    Route("graphql mlflowSearchRuns", "search", lambda w, s: _post("/graphql", {"query": "query q($e: [String]) { mlflowSearchRuns(input: {experimentIds: $e}) { runs { info { runId } } } }", "variables": {"e": [S(w, s).experiment_id]}}),
          sees=lambda r, w, s: S(w, s).run_id in {x["info"]["runId"] for x in ((((r.get("data") or {}).get("mlflowSearchRuns") or {}).get("runs")) or [])}),
    # users, roles, grants
    Route("users/current", "self", lambda w, s: _get(f"{A2}/users/current")),
    Route("users/list", "admin", lambda w, s: _get(f"{A2}/users/list")),
    Route("ajax users/list", "admin", lambda w, s: _get(f"{X2}/users/list")),
    Route("users/get (another user)", "admin", lambda w, s: _get(f"{A2}/users/get", username=w.accounts[f"{s}_user"].username)),
    Route("users/create", "admin", lambda w, s: _post(f"{A2}/users/create", {"username": f"u{_u()}", "password": "long-enough-pw-123"})),
    Route("users/permissions/list", "admin", lambda w, s: _get(f"{A3}/users/permissions/list", username=w.accounts[f"{s}_user"].username)),
    Route("users/permissions/grant experiment", "admin", lambda w, s: _post(f"{A3}/users/permissions/grant", {"username": w.accounts["b_user"].username, "resource_type": "experiment", "resource_id": S(w, s).experiment_id, "permission": "READ"})),
    Route("roles/list", "admin", lambda w, s: _get(f"{A3}/roles/list")),
    Route("ajax roles/list", "admin", lambda w, s: _get(f"{X3}/roles/list")),
    # server settings
    Route("assistant config read", "admin", lambda w, s: _get(f"{X3}/assistant/config")),
    Route("assistant config write", "admin", lambda w, s: {"method": "PUT", "url": f"{X3}/assistant/config", "json": {}}),
    Route("webhooks/list", "admin", lambda w, s: _get(f"{A2}/webhooks")),
    Route("gateway secrets/list", "admin", lambda w, s: _get(f"{X3}/gateway/secrets/list")),
    Route("gateway endpoints/list", "admin", lambda w, s: _get(f"{A3}/gateway/endpoints/list")),
]


def expected(route: Route, role: str, side: str) -> str:
    """`ok`, `refused` (401/403), `listed` or `hidden` (search: absent from the answer, or
    the whole request refused when it names the other side's experiment)."""
    if role == "anonymous":
        return "refused"
    held = RANK[permission(role, side, route.resource)]
    if route.kind == "admin":
        return "refused"
    if route.kind == "self":
        return "ok"
    if route.kind == "search":
        return "listed" if held >= RANK["READ"] else "hidden"
    need = {"read": "READ", "write": "EDIT", "manage": "MANAGE"}[route.kind]
    return "ok" if held >= RANK[need] else "refused"


def observed(response: httpx.Response, route: Route, world: World, side: str, role: str) -> str:
    if role == "anonymous":
        return "refused" if response.status_code == 401 else f"HTTP {response.status_code}"
    if response.status_code == 403:
        return "hidden" if route.kind == "search" else "refused"
    if route.ok_status and response.status_code == route.ok_status:
        return "ok"
    if response.status_code != 200:
        return f"HTTP {response.status_code}: {response.text[:120]}"
    if route.kind == "search":
        assert route.sees is not None
        body = response.json()
        return "listed" if route.sees(body, world, side) else "hidden"
    return "ok"


def call(world: World, role: str, request: dict[str, Any]) -> httpx.Response:
    account = world.accounts[role]
    auth = (account.username, account.password) if account else None
    request = dict(request)
    url = world.url + request.pop("url")
    return httpx.request(url=url, auth=auth, timeout=30, **request)


def test_every_route_by_every_role_both_directions(world: World, tmp_path) -> None:
    rows, wrong = [], []
    for route in ROUTES:
        for side in ("a", "b"):
            cells = []
            for role in ROLES:
                want = expected(route, role, side)
                got = observed(call(world, role, route.build(world, side)), route, world, side, role)
                cells.append(got if got == want else f"**{got}** (want {want})")
                if got != want:
                    wrong.append(f"{route.name} on {side}'s by {role}: got {got}, want {want}")
            rows.append(f"| {route.name} | {route.kind} | {side.upper()} | " + " | ".join(cells) + " |")
    table = "\n".join([
        "| route | kind | resource of | " + " | ".join(ROLES) + " |",
        "|---|---|---|" + "---|" * len(ROLES),
        *rows,
    ])
    (tmp_path / "route_table.md").write_text(table + "\n")
    print(table)
    assert not wrong, "\n".join(wrong)
    assert len(rows) == 2 * len(ROUTES) >= 100


def test_the_other_sides_secrets_never_appear_in_any_answer(world: World) -> None:
    """No answer to A's people contains B's artifact text, and vice versa (a body-level check
    on top of the status codes: a 200 with the other side's data would fail here)."""
    for route in ROUTES:
        for role, other in (("a_user", "b"), ("a_viewer", "b"), ("a_runner", "b"), ("b_user", "a")):
            response = call(world, role, route.build(world, other))
            body = response.text
            assert f"secret of {world.sides[other].partner}" not in body, (route.name, role)
            if route.kind != "search" and response.status_code == 200 and route.kind != "self":
                pytest.fail(f"{route.name}: {role} got 200 on {other}'s resource: {body[:200]}")


def test_no_tenant_holds_manage_on_a_project_experiment(world: World) -> None:
    grants = world.access.inventory()
    for side in world.sides.values():
        held = grants.get(side.experiment_id, {})
        assert held, "members should hold grants"
        assert "MANAGE" not in held.values(), held
    assert "*" not in grants
    assert json.dumps(grants)  # the inventory itself is plain data
