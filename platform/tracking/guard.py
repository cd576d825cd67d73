"""What a tenant may ask of the MLflow server, decided inside the server before MLflow does.

MLflow's basic-auth app guards each resource (an experiment, a run, a model) by the caller's
grants, but leaves the server itself open to every logged-in user: anyone may create
experiments under any name (and becomes their MANAGE owner), list every user and every role,
grant permissions on what they own, point an experiment's artifacts at a server path, or
change server-wide settings. This module closes that.

Mechanism. The basic-auth app calls a configurable `authorization_function` on every
protected request, on its Flask routes and (through its request bridge) on its native
FastAPI routes, before any of its own checks. `aitb` sets it to `authenticate` below, which
first authenticates exactly as MLflow does (basic auth, same user store and cache) and then
applies `decide`: a short list of refusals for non-admin users. Everything it lets through
is still checked by MLflow's own per-resource validators, so this only ever narrows MLflow.
The server also runs with `MLFLOW_BASIC_AUTH_FAIL_CLOSED=true`, so a native route MLflow has
no validator for is refused rather than served. Running in the server process (rather than a
proxy in front of it) leaves no unguarded port to go around, and the UI keeps working
because it uses the same routes with the same credentials.

`decide` is a pure function of (method, path, JSON body, is_admin) so it is tested without
a server; the contract test in tests/security/ checks it against a real one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: The platform's own tags. Tenants may annotate, but not rewrite what the platform records.
PLATFORM_TAG_PREFIX = "aitb."


@dataclass(frozen=True)
class Refusal:
    status: int
    reason: str
    #: answer with this body instead of an error (status 200): for the UI's own listings
    empty: dict[str, Any] | None = None


_API = r"/(?:ajax-)?api/[23]\.0/mlflow"

#: Route families no tenant may use: (methods or None for all, path regex, reason).
_TENANT_DENIED: list[tuple[frozenset[str] | None, re.Pattern[str], str]] = [
    (None, re.compile(rf"{_API}/users/(?!current(?:/permissions)?$)"),
     "user accounts are managed by the platform"),
    (None, re.compile(rf"{_API}/roles/"), "roles and grants are managed by the platform"),
    (None, re.compile(rf"{_API}/(?:experiments|registered-models|scorers|gateway/[^/]+)/permissions/"),
     "grants are managed by the platform"),
    (None, re.compile(rf"{_API}/gateway(?:/|-proxy|$)"), "the AI gateway is an admin setting"),
    (None, re.compile(r"^/gateway/"), "the AI gateway is an admin setting"),
    (None, re.compile(rf"{_API}/webhooks"), "webhooks are an admin setting"),
    (None, re.compile(rf"{_API}/assistant"), "the assistant is an admin setting"),
    (None, re.compile(rf"{_API}/workspaces"), "workspaces are an admin setting"),
    (None, re.compile(r"/(?:ajax-)?api/3\.0/jobs"), "server jobs are an admin setting"),
    (None, re.compile(rf"{_API}/jobs"), "server jobs are an admin setting"),
    (None, re.compile(rf"{_API}/mcp-servers"), "MCP servers are an admin setting"),
    (None, re.compile(rf"{_API}/demo/"), "demo data creates experiments"),
    (None, re.compile(rf"{_API}/prompt-optimization/"), "runs models through the gateway"),
    (None, re.compile(rf"{_API}/(?:genai/evaluate|issues)/invoke"), "runs models through the gateway"),
    (None, re.compile(rf"{_API}/scorer/invoke"), "runs models through the gateway"),
    (None, re.compile(rf"{_API}/scorers/online-config$"), "online scoring is an admin setting"),
    # The experiment namespace is the platform's: it creates, renames, deletes, restores.
    (None, re.compile(rf"{_API}/experiments/(?:create|update|delete|restore)$"),
     "project experiments are created and managed by the platform"),
    (None, re.compile(rf"{_API}/datasets/[^/]+/(?:add|remove)-experiments$"),
     "datasets stay in the experiments they were logged to"),
]

#: Listings the UI asks for on every page: tenants get an empty answer instead of an error
#: toast (the routes stay closed: every other method and path there is refused).
_TENANT_EMPTY: list[tuple[str, re.Pattern[str], dict[str, Any]]] = [
    ("GET", re.compile(rf"{_API}/gateway-proxy$"), {"endpoints": []}),
]

_EXPERIMENT_CREATE = re.compile(rf"{_API}/experiments/create$")
_EXPERIMENT_TAG = re.compile(rf"{_API}/experiments/(?:set-experiment-tag|delete-experiment-tag)$")


def _normalize(path: str) -> str:
    return re.sub(r"/{2,}", "/", path)


def decide(method: str, path: str, body: Callable[[], Any] | None, is_admin: bool) -> Refusal | None:
    """None to let MLflow decide, else why the request is refused.

    `body` returns the parsed JSON body (or None); it is only called for the few routes
    whose answer depends on it.
    """
    path = _normalize(path)
    method = method.upper()
    if not is_admin:
        for only, pattern, answer in _TENANT_EMPTY:
            if method == only and pattern.search(path):
                return Refusal(200, "the AI gateway is an admin setting", empty=answer)
        for methods, pattern, reason in _TENANT_DENIED:
            if (methods is None or method in methods) and pattern.search(path):
                return Refusal(403, reason)
    if _EXPERIMENT_CREATE.search(path):
        data = body() if body else None
        location = (data or {}).get("artifact_location") if isinstance(data, dict) else None
        if location:
            # Even the platform may not choose: every experiment gets the server's default,
            # a folder of its own under the artifact root (mlflow-artifacts:/<id>).
            return Refusal(400, "artifact_location is chosen by the server (under its artifact root)")
    if is_admin:
        return None
    if _EXPERIMENT_TAG.search(path):
        data = body() if body else None
        key = str((data or {}).get("key", "")) if isinstance(data, dict) else ""
        if key.startswith(PLATFORM_TAG_PREFIX):
            return Refusal(403, f"tags {PLATFORM_TAG_PREFIX}* are the platform's")
    return None


# -- the MLflow side: runs inside the MLflow server process --------------------------------


def authenticate():  # pragma: no cover - exercised through a real server in tests/security
    """MLflow `authorization_function`: basic auth as MLflow does it, then `decide`."""
    from flask import g, make_response, request
    from mlflow.server import auth as mlflow_auth

    cached = getattr(g, "_aitb_guard", None)
    if cached is not None:
        return cached
    result = mlflow_auth.authenticate_request_basic_auth()
    if not hasattr(result, "username"):  # a 401 response
        return result
    try:
        is_admin = bool(mlflow_auth.store.get_user(result.username).is_admin)
    except Exception:  # deleted between authentication and lookup
        return mlflow_auth.make_basic_auth_response()

    def body() -> Any:
        data = request.get_json(silent=True)
        if data is None and request.data:
            try:
                data = json.loads(request.data)
            except ValueError:
                return None
        return data

    refusal = decide(request.method, request.path, body, is_admin)
    if refusal is not None and refusal.empty is not None:
        response = make_response(refusal.empty, 200)
        g._aitb_guard = response
        return response
    if refusal is not None:
        response = make_response(
            {"error_code": "PERMISSION_DENIED" if refusal.status == 403 else "INVALID_PARAMETER_VALUE",
             "message": f"aitb: {refusal.reason}"},
            refusal.status,
        )
        g._aitb_guard = response
        return response
    g._aitb_guard = result
    return result
