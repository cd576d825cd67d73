"""A stateful Kubernetes API server for tests, spoken to by the official `kubernetes` client
over real HTTP.

What it does as the real one does: create/get/list (label selectors)/replace/delete, JSON
merge patch, the status subresource, resourceVersion with 409 conflicts on stale writes,
watch with resume from a resourceVersion and `410 Gone` once that version has been
compacted away, bookmarks, strict field validation against the same schemas the golden
tests use (unknown fields refused), namespaces that must exist, owner-reference garbage
collection, pod logs and the service proxy to a Ray head's dashboard. A small simulated
KubeRay controller moves RayJobs through `jobDeploymentStatus` / `jobStatus`
(Initializing -> Running -> Complete | Failed) and tears their Ray cluster down.

Fault injection for tests: `drop_watches()`, `compact()`, `fail_next(n)`, `stop()`.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import itertools
import json
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.kube.schema import SchemaInvalid, UnknownFields, validate


@dataclass(frozen=True)
class Kind:
    kind: str
    namespaced: bool = True
    status: bool = False  # has a status subresource


GVR = tuple[str, str, str]
KINDS: dict[GVR, Kind] = {
    ("", "v1", "namespaces"): Kind("Namespace", namespaced=False, status=True),
    ("", "v1", "secrets"): Kind("Secret"),
    ("", "v1", "serviceaccounts"): Kind("ServiceAccount"),
    ("", "v1", "resourcequotas"): Kind("ResourceQuota", status=True),
    ("", "v1", "limitranges"): Kind("LimitRange"),
    ("", "v1", "pods"): Kind("Pod", status=True),
    ("", "v1", "services"): Kind("Service", status=True),
    ("", "v1", "persistentvolumeclaims"): Kind("PersistentVolumeClaim", status=True),
    ("networking.k8s.io", "v1", "networkpolicies"): Kind("NetworkPolicy"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"): Kind("RoleBinding"),
    ("ray.io", "v1", "rayjobs"): Kind("RayJob", status=True),
    ("ray.io", "v1", "rayclusters"): Kind("RayCluster", status=True),
}
NAMESPACES: GVR = ("", "v1", "namespaces")
RAYJOBS: GVR = ("ray.io", "v1", "rayjobs")
PODS: GVR = ("", "v1", "pods")
SERVICES: GVR = ("", "v1", "services")
PVCS: GVR = ("", "v1", "persistentvolumeclaims")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "code": self.code}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_version(gvr: GVR) -> str:
    return f"{gvr[0]}/{gvr[1]}" if gvr[0] else gvr[1]


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


# -- label selectors ------------------------------------------------------------------------
_REQ = re.compile(r"\s*([^,!=\s()]+)\s+(in|notin)\s+\(([^)]*)\)\s*|\s*([^,]+?)\s*(==|!=|=)\s*([^,]*?)\s*(?:,|$)")


def parse_selector(text: str | None) -> list[Callable[[dict[str, str]], bool]]:
    if not text:
        return []
    checks: list[Callable[[dict[str, str]], bool]] = []
    parts, depth, current = [], 0, ""
    for ch in text:  # split on commas outside parentheses
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    for raw in (p.strip() for p in parts if p.strip()):
        m = re.fullmatch(r"([^\s!=()]+)\s+(in|notin)\s+\(([^)]*)\)", raw)
        if m:
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                checks.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                checks.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
            continue
        m = re.fullmatch(r"([^\s!=]+)\s*(==|!=|=)\s*(\S*)", raw)
        if m:
            key, op, value = m.groups()
            if op == "!=":
                checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
            else:
                checks.append(lambda labels, k=key, v=value: labels.get(k) == v)
            continue
        if raw.startswith("!"):
            checks.append(lambda labels, k=raw[1:]: k not in labels)
        elif re.fullmatch(r"[^\s!=(),]+", raw):
            checks.append(lambda labels, k=raw: k in labels)
        else:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {raw!r}")
    return checks


def matches(obj: dict[str, Any], checks: list[Callable[[dict[str, str]], bool]]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(check(labels) for check in checks)


# -- the store --------------------------------------------------------------------------------
@dataclass
class Event:
    rv: int
    type: str
    gvr: GVR
    namespace: str
    obj: dict[str, Any]
    at: float = field(default_factory=time.monotonic)  # when it happened (benchmarks; system-wide clock)


class Store:
    """Objects, one resourceVersion counter and a bounded history of changes for watches."""

    def __init__(self, history: int = 10_000):
        self.lock = threading.RLock()
        self.objects: dict[tuple[GVR, str, str], dict[str, Any]] = {}
        self.rv = 0
        self.events: deque[Event] = deque()
        self.history = history
        self.compacted_rv = 0  # watches from a version below this get 410 Gone
        self.waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self.writes = 0  # every write (tests count them)

    # notification of streaming watches (they run on the server's event loop)
    def _notify(self) -> None:
        for loop, event in list(self.waiters):
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # loop closed
                pass

    def _record(self, type_: str, gvr: GVR, namespace: str, obj: dict[str, Any]) -> None:
        self.events.append(Event(self.rv, type_, gvr, namespace, copy.deepcopy(obj)))
        while len(self.events) > self.history:
            self.compacted_rv = self.events.popleft().rv
        self.writes += 1
        self._notify()

    def compact(self) -> None:
        """Forget the change history (etcd compaction): older watches get 410 Gone."""
        with self.lock:
            self.events.clear()
            self.compacted_rv = self.rv

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def get(self, gvr: GVR, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self.objects.get((gvr, namespace, name))
            if obj is None:
                raise ApiError(404, "NotFound", f'{gvr[2]} "{name}" not found')
            return copy.deepcopy(obj)

    def list(self, gvr: GVR, namespace: str | None, selector: str | None) -> tuple[list[dict], str]:
        checks = parse_selector(selector)
        with self.lock:
            items = [copy.deepcopy(o) for (g, ns, _), o in sorted(self.objects.items(), key=lambda kv: kv[0][1:])
                     if g == gvr and (namespace is None or ns == namespace) and matches(o, checks)]
            return items, str(self.rv)

    def _check_namespace(self, gvr: GVR, namespace: str) -> None:
        if KINDS[gvr].namespaced and (NAMESPACES, "", namespace) not in self.objects:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')

    def create(self, gvr: GVR, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            name = obj.get("metadata", {}).get("name")
            if not name:
                raise ApiError(422, "Invalid", "metadata.name: Required value")
            self._check_namespace(gvr, namespace)
            key = (gvr, namespace, name)
            if key in self.objects:
                raise ApiError(409, "AlreadyExists", f'{gvr[2]} "{name}" already exists')
            obj = copy.deepcopy(obj)
            meta = obj["metadata"]
            if KINDS[gvr].namespaced:
                meta["namespace"] = namespace
            meta.update(uid=str(uuid.uuid4()), resourceVersion=self._next_rv(),
                        creationTimestamp=now_iso(), generation=1)
            if KINDS[gvr].status:
                obj.pop("status", None)
            if gvr == NAMESPACES:
                obj["status"] = {"phase": "Active"}
                meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
            self.objects[key] = obj
            self._record("ADDED", gvr, namespace, obj)
            return copy.deepcopy(obj)

    def replace(self, gvr: GVR, namespace: str, name: str, obj: dict[str, Any], status: bool = False
                ) -> dict[str, Any]:
        with self.lock:
            current = self.objects.get((gvr, namespace, name))
            if current is None:
                raise ApiError(404, "NotFound", f'{gvr[2]} "{name}" not found')
            given = (obj.get("metadata") or {}).get("resourceVersion")
            if not given:
                raise ApiError(422, "Invalid", "metadata.resourceVersion: Invalid value: 0x0: "
                               "must be specified for an update")
            if given != current["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {gvr[2]} "{name}": '
                               "the object has been modified; please apply your changes to the "
                               "latest version and try again")
            return self._write(gvr, namespace, name, current, obj, status)

    def _write(self, gvr, namespace, name, current, obj, status: bool) -> dict[str, Any]:
        new = copy.deepcopy(current)
        if status:
            new["status"] = copy.deepcopy(obj.get("status", {}))
        else:
            if current.get("immutable") and (obj.get("data") != current.get("data")):
                raise ApiError(422, "Invalid", "field is immutable when `immutable` is set")
            keep = {k: current["metadata"][k] for k in ("uid", "creationTimestamp", "generation")
                    if k in current["metadata"]}
            new = copy.deepcopy(obj)
            new["metadata"].update(keep)
            new["metadata"]["namespace" if KINDS[gvr].namespaced else "name"] = (
                namespace if KINDS[gvr].namespaced else name)
            new["metadata"]["name"] = name
            if KINDS[gvr].status:
                if "status" in current:
                    new["status"] = current["status"]
                else:
                    new.pop("status", None)
            if new.get("spec") != current.get("spec"):
                new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        if new == current:
            return copy.deepcopy(current)  # a no-op write changes nothing, not even the version
        new["metadata"]["resourceVersion"] = self._next_rv()
        self.objects[(gvr, namespace, name)] = new
        self._record("MODIFIED", gvr, namespace, new)
        return copy.deepcopy(new)

    def patch(self, gvr: GVR, namespace: str, name: str, patch: dict[str, Any], status: bool,
              check: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        with self.lock:
            current = self.objects.get((gvr, namespace, name))
            if current is None:
                raise ApiError(404, "NotFound", f'{gvr[2]} "{name}" not found')
            given = (patch.get("metadata") or {}).get("resourceVersion")
            if given and given != current["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {gvr[2]} "{name}": '
                               "the object has been modified")
            if status:
                merged = merge_patch(current, {"status": patch.get("status", {})})
            else:
                merged = merge_patch(current, {k: v for k, v in patch.items() if k != "status"})
            check(merged)
            return self._write(gvr, namespace, name, current, merged, status)

    def delete(self, gvr: GVR, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            obj = self.objects.pop((gvr, namespace, name), None)
            if obj is None:
                raise ApiError(404, "NotFound", f'{gvr[2]} "{name}" not found')
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self._record("DELETED", gvr, namespace, obj)
            uid = obj["metadata"]["uid"]
            # garbage collection: dependents, and everything in a deleted namespace
            for (g, ns, n), other in list(self.objects.items()):
                owners = {ref.get("uid") for ref in other["metadata"].get("ownerReferences", [])}
                if uid in owners or (gvr == NAMESPACES and ns == name and KINDS[g].namespaced):
                    if (g, ns, n) in self.objects:
                        self.delete(g, ns, n)
            return obj

    def events_since(self, rv: int) -> list[Event]:
        with self.lock:
            if rv < self.compacted_rv:
                raise ApiError(410, "Expired", f"too old resource version: {rv} ({self.compacted_rv})")
            return [e for e in self.events if e.rv > rv]


# -- the simulated KubeRay controller ------------------------------------------------------------
_SLEEP = re.compile(r"sleep\s+(\d+(?:\.\d+)?)")
_EXIT = re.compile(r"exit\s+([1-9]\d*)")


@dataclass
class _Tracked:
    started: float
    running_at: float | None = None
    finished_at: float | None = None
    torn_down: bool = False


@dataclass
class Controller:
    """Moves RayJobs as KubeRay does. Auto mode: `sleep N` in the entrypoint succeeds after
    N seconds, `exit K` fails; otherwise a job runs until `finish()` says how it ended."""

    store: Store
    init_s: float = 0.05
    tick_s: float = 0.01
    outcomes: dict[tuple[str, str], str] = field(default_factory=dict)
    logs: dict[tuple[str, str], str] = field(default_factory=dict)
    tracked: dict[str, _Tracked] = field(default_factory=dict)
    paused: bool = False
    #: how the cluster's network reaches hosts named in URLs: host -> "127.0.0.1:port"
    network: dict[str, str] = field(default_factory=dict)
    fetched: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stepping = threading.Lock()

    def pause(self, paused: bool = True) -> None:
        """Stop (or resume) moving jobs; returns once no step is in progress."""
        with self._stepping:
            self.paused = paused

    def finish(self, namespace: str, name: str, outcome: str = "SUCCEEDED") -> None:
        self.outcomes[(namespace, name)] = outcome

    def _status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        try:
            self.store.patch(RAYJOBS, namespace, name, {"status": status}, status=True, check=lambda _o: None)
        except ApiError:
            pass  # deleted meanwhile

    def step(self) -> None:
        with self._stepping:
            if not self.paused:
                self._step()

    def _step(self) -> None:
        now = time.monotonic()
        jobs, _ = self.store.list(RAYJOBS, None, None)
        seen = set()
        for job in jobs:
            meta, spec, status = job["metadata"], job["spec"], job.get("status") or {}
            ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
            seen.add(uid)
            state = self.tracked.setdefault(uid, _Tracked(started=now))
            cluster = f"{name}-raycluster-{uid[:5]}"
            if not status.get("jobDeploymentStatus"):
                self._status(ns, name, {"jobDeploymentStatus": "Initializing", "jobId": spec.get("jobId", name),
                                        "rayClusterName": cluster, "startTime": now_iso()})
                self.logs[(ns, name)] = f"[head] ray cluster {cluster} starting\n"
                continue
            deployment = status["jobDeploymentStatus"]
            if deployment == "Initializing" and now - state.started >= self.init_s:
                missing = self._missing_claims(job)
                if missing:
                    # as kube-scheduler does: a pod whose claim does not exist in its own
                    # namespace stays Pending (the RayJob stays Initializing)
                    line = f"[scheduler] persistentvolumeclaim {missing!r} not found\n"
                    if line not in self.logs[(ns, name)]:
                        self.logs[(ns, name)] += line
                    continue
                problem = self._fetch_code(job)
                if problem:
                    self.logs[(ns, name)] += f"[submitter] {problem}\n"
                    self._status(ns, name, {"jobDeploymentStatus": "Failed", "reason": "SubmissionFailed",
                                            "message": problem, "endTime": now_iso()})
                    state.finished_at = now
                    continue
                self._start_cluster(job, cluster)
                state.running_at = now
                self.logs[(ns, name)] += f"[driver] job {spec.get('jobId')} running: {spec['entrypoint']}\n"
                self._status(ns, name, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING",
                                        "dashboardURL": f"{cluster}-head-svc.{ns}.svc:8265"})
            elif deployment == "Running" and state.running_at is not None:
                outcome = self._outcome(ns, name, spec, now - state.running_at)
                deadline = spec.get("activeDeadlineSeconds")
                if outcome is None and deadline and now - state.started > deadline:
                    self.logs[(ns, name)] += "[operator] activeDeadlineSeconds exceeded\n"
                    self._status(ns, name, {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded",
                                            "message": f"exceeded activeDeadlineSeconds={deadline}",
                                            "endTime": now_iso()})
                    state.finished_at = now
                elif outcome is not None:
                    self.logs[(ns, name)] += f"[driver] job {spec.get('jobId')} {outcome.lower()}\n"
                    self._status(ns, name, {
                        "jobDeploymentStatus": "Complete" if outcome == "SUCCEEDED" else "Failed",
                        "jobStatus": outcome, "endTime": now_iso(),
                        "reason": "" if outcome == "SUCCEEDED" else "AppFailed",
                        "message": "Job finished successfully." if outcome == "SUCCEEDED"
                        else "Job entrypoint command failed with exit code 1",
                        "succeeded": 1 if outcome == "SUCCEEDED" else 0,
                        "failed": 0 if outcome == "SUCCEEDED" else 1})
                    state.finished_at = now
            elif state.finished_at is not None and not state.torn_down and spec.get("shutdownAfterJobFinishes") \
                    and now - state.finished_at >= (spec.get("ttlSecondsAfterFinished") or 0):
                # KubeRay deletes the job's Ray cluster once the TTL has passed; the RayJob stays
                state.torn_down = True
                self._teardown(ns, cluster)
        for uid in set(self.tracked) - seen:
            del self.tracked[uid]

    def _missing_claims(self, job: dict[str, Any]) -> str | None:
        """The first claim a pod of the job mounts that its namespace does not have."""
        ns = job["metadata"]["namespace"]
        cluster = job["spec"]["rayClusterSpec"]
        templates = [cluster["headGroupSpec"]["template"]]
        templates += [group["template"] for group in cluster.get("workerGroupSpecs") or []]
        for template in templates:
            for volume in (template.get("spec") or {}).get("volumes") or []:
                claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
                if claim and (PVCS, ns, claim) not in self.store.objects:
                    return claim
        return None

    def _fetch_code(self, job: dict[str, Any]) -> str | None:
        """Run the submitter's `fetch-code` init container: GET the package URL from the
        attempt's Secret (as the pod would, through the cluster's network)."""
        import io
        import zipfile
        from urllib.parse import urlsplit, urlunsplit

        import httpx

        template = (job["spec"].get("submitterPodTemplate") or {}).get("spec") or {}
        init = [c for c in template.get("initContainers", []) if c.get("name") == "fetch-code"]
        if not init:
            return None
        ns = job["metadata"]["namespace"]
        ref = init[0]["env"][0]["valueFrom"]["secretKeyRef"]
        try:
            secret = self.store.get(("", "v1", "secrets"), ns, ref["name"])
        except ApiError:
            return f"fetch-code: secret {ref['name']} not found"
        url = base64.b64decode(secret["data"][ref["key"]]).decode()
        parts = urlsplit(url)
        target = urlunsplit(parts._replace(netloc=self.network.get(parts.hostname or "", parts.netloc)))
        try:
            answer = httpx.get(target, timeout=10)
        except httpx.HTTPError as exc:
            return f"fetch-code: {exc}"
        if answer.status_code != 200:
            return f"fetch-code: HTTP {answer.status_code} from the control plane"
        names = zipfile.ZipFile(io.BytesIO(answer.content)).namelist()
        self.fetched[(ns, job["metadata"]["name"])] = names
        self.logs[(ns, job["metadata"]["name"])] = (self.logs.get((ns, job["metadata"]["name"]), "")
                                                    + f"[submitter] fetched the code package: {', '.join(names)}\n")
        return None

    def _outcome(self, ns: str, name: str, spec: dict[str, Any], running_for: float) -> str | None:
        if (ns, name) in self.outcomes:
            return self.outcomes[(ns, name)]
        entrypoint = spec.get("entrypoint", "")
        if _EXIT.search(entrypoint):
            return "FAILED"
        sleep = _SLEEP.search(entrypoint)
        if sleep and running_for >= float(sleep.group(1)):
            return "SUCCEEDED"
        return None

    def _start_cluster(self, job: dict[str, Any], cluster: str) -> None:
        ns, uid = job["metadata"]["namespace"], job["metadata"]["uid"]
        owner = [{"apiVersion": "ray.io/v1", "kind": "RayJob", "name": job["metadata"]["name"], "uid": uid,
                  "controller": True}]
        head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
        labels = {**(head.get("metadata", {}).get("labels") or {}), "ray.io/cluster": cluster,
                  "ray.io/node-type": "head"}
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"{cluster}-head", "labels": labels, "ownerReferences": owner},
               "spec": head["spec"]}
        svc = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": f"{cluster}-head-svc", "labels": {"ray.io/cluster": cluster},
                            "ownerReferences": owner},
               "spec": {"selector": {"ray.io/cluster": cluster, "ray.io/node-type": "head"},
                        "ports": [{"name": "dashboard", "port": 8265}]}}
        for gvr, obj in ((PODS, pod), (SERVICES, svc)):
            try:
                self.store.create(gvr, ns, obj)
            except ApiError:
                pass

    def _teardown(self, ns: str, cluster: str) -> None:
        for gvr, name in ((PODS, f"{cluster}-head"), (SERVICES, f"{cluster}-head-svc")):
            try:
                self.store.delete(gvr, ns, name)
            except ApiError:
                pass

    def log_of(self, ns: str, cluster_or_job: str) -> str | None:
        for (n, name), text in self.logs.items():
            if n == ns and (cluster_or_job.startswith(name + "-raycluster-") or cluster_or_job == name):
                return text
        return None


# -- HTTP ----------------------------------------------------------------------------------------
def _route(path: str) -> tuple[GVR, str | None, str | None, str | None, str]:
    """(gvr, namespace, name, subresource, rest) of an API path."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
    namespace = None
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    elif rest[:1] == ["namespaces"]:
        gvr = (group, version, "namespaces")
        return gvr, None, rest[1] if len(rest) > 1 else None, None, ""
    if not rest:
        raise ApiError(404, "NotFound", f"no resource in {path}")
    plural, name = rest[0], rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    remainder = "/".join(rest[3:])
    gvr = (group, version, plural)
    if gvr not in KINDS:
        raise ApiError(404, "NotFound", f"the server could not find the requested resource ({plural})")
    return gvr, namespace, name, sub, remainder


class KubeApiServer:
    """The API server on a free port, served by uvicorn on a thread; `url` and `token` go
    into a kubeconfig (`kubeconfig()` writes one with a context per server)."""

    def __init__(self, name: str = "test", token: str | None = None, auto_controller: bool = True):
        self.name = name
        self.token = token or uuid.uuid4().hex
        self.store = Store()
        self.controller = Controller(self.store)
        self.auto_controller = auto_controller
        self.requests: list[tuple[str, str]] = []
        self._fail = 0
        self.hold_watches = False  # new watch requests wait (an outage the client cannot see)
        self._watch_generation = itertools.count()
        self._drop_before = -1
        self._watch_ids = itertools.count()
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._controller_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.app = Starlette(routes=[Route("/{path:path}", self._handle,
                                           methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, port: int = 0) -> KubeApiServer:
        import socket

        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        daemon=True, name=f"kube-api-{self.name}")
        self._thread.start()
        deadline = time.time() + 10
        while not self._server.started and time.time() < deadline:
            time.sleep(0.01)
        if self.auto_controller:
            self._stop.clear()
            self._controller_thread = threading.Thread(target=self._control, daemon=True)
            self._controller_thread.start()
        return self

    def _control(self) -> None:
        while not self._stop.is_set():
            self.controller.step()
            self._stop.wait(self.controller.tick_s)

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.should_exit = True
            self.drop_watches()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._controller_thread is not None:
            self._controller_thread.join(timeout=5)

    # -- fault injection --------------------------------------------------------------------------
    def drop_watches(self) -> None:
        """Cut every open watch stream (as a load balancer or an API server restart does)."""
        self._drop_before = next(self._watch_ids)
        self.store._notify()

    def compact(self) -> None:
        self.store.compact()

    def fail_next(self, count: int) -> None:
        """Answer the next `count` requests with 503 (an API server that is unavailable)."""
        self._fail = count

    # -- helpers for tests ------------------------------------------------------------------------
    def get(self, plural: str, namespace: str | None, name: str, group: str = "") -> dict[str, Any]:
        gvr = next(g for g in KINDS if g[2] == plural and (not group or g[0] == group))
        return self.store.get(gvr, namespace or "", name)

    def list(self, plural: str, namespace: str | None = None, selector: str | None = None) -> list[dict]:
        gvr = next(g for g in KINDS if g[2] == plural)
        return self.store.list(gvr, namespace, selector)[0]

    # -- the handler ------------------------------------------------------------------------------
    async def _handle(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        self.requests.append((request.method, path))
        try:
            if request.headers.get("authorization") != f"Bearer {self.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if path.startswith("/_test/"):
                return await self._test_hook(request, path)
            if self._fail > 0:
                self._fail -= 1
                raise ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request")
            return await self._dispatch(request, path)
        except ApiError as exc:
            return JSONResponse(exc.status(), status_code=exc.code)

    async def _dispatch(self, request: Request, path: str) -> Response:
        gvr, namespace, name, sub, rest = _route(path)
        q = request.query_params
        ns = namespace or ""
        method = request.method
        if sub == "log" and gvr == PODS and method == "GET":
            self.store.get(PODS, ns, name)
            text = self.controller.log_of(ns, name.rsplit("-head", 1)[0]) or ""
            return PlainTextResponse(text)
        if sub == "proxy" and gvr == SERVICES:
            service = name.split(":", 1)[0]
            obj = self.store.get(SERVICES, ns, service)
            cluster = obj["metadata"]["labels"]["ray.io/cluster"]
            found = re.fullmatch(r"api/jobs/([^/]+)/logs", rest)
            if not found:
                raise ApiError(404, "NotFound", f"dashboard path {rest}")
            text = self.controller.log_of(ns, cluster)
            if text is None:
                return JSONResponse({"detail": "job not found"}, status_code=404)
            return JSONResponse({"logs": text})
        if sub not in (None, "status"):
            raise ApiError(404, "NotFound", f"subresource {sub}")
        if method == "GET" and name is None:
            if q.get("watch") in ("true", "1"):
                return self._watch(gvr, namespace, q)
            items, rv = self.store.list(gvr, namespace, q.get("labelSelector"))
            return JSONResponse({"apiVersion": api_version(gvr), "kind": KINDS[gvr].kind + "List",
                                 "metadata": {"resourceVersion": rv}, "items": items})
        if method == "GET":
            return JSONResponse(self.store.get(gvr, ns, name))
        if method == "DELETE":
            if name is None:
                raise ApiError(405, "MethodNotAllowed", "collection delete not supported")
            return JSONResponse(self.store.delete(gvr, ns, name))
        body = await self._body(request)
        strict = q.get("fieldValidation", "Strict") == "Strict"
        if method == "POST":
            if name is not None:
                raise ApiError(405, "MethodNotAllowed", "POST to a named object")
            self._check(gvr, body, strict)
            body = self._normalise(gvr, body)
            return JSONResponse(self.store.create(gvr, ns, body), status_code=201)
        if method == "PUT":
            self._check(gvr, body, strict)
            body = self._normalise(gvr, body)
            return JSONResponse(self.store.replace(gvr, ns, name, body, status=sub == "status"))
        if method == "PATCH":
            ctype = request.headers.get("content-type", "").split(";")[0]
            if ctype != "application/merge-patch+json":
                raise ApiError(415, "UnsupportedMediaType", f"patch type {ctype} is not supported here")
            return JSONResponse(self.store.patch(gvr, ns, name, body, status=sub == "status",
                                                 check=lambda merged: self._check(gvr, merged, strict)))
        raise ApiError(405, "MethodNotAllowed", method)

    async def _test_hook(self, request: Request, path: str) -> Response:
        """Not Kubernetes: lets a benchmark in another process read event times and steer
        the controller."""
        if path == "/_test/events":
            with self.store.lock:
                events = [{"type": e.type, "plural": e.gvr[2], "namespace": e.namespace,
                           "name": e.obj["metadata"]["name"], "at": e.at,
                           "jobStatus": (e.obj.get("status") or {}).get("jobStatus")} for e in self.store.events]
            return JSONResponse(events)
        if path == "/_test/controller" and request.method == "POST":
            body = await self._body(request)
            for key in ("paused", "init_s"):
                if key in body:
                    setattr(self.controller, key, body[key])
            return JSONResponse({"paused": self.controller.paused, "init_s": self.controller.init_s})
        raise ApiError(404, "NotFound", path)

    async def _body(self, request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise ApiError(400, "BadRequest", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body must be an object")
        return body

    def _check(self, gvr: GVR, body: dict[str, Any], strict: bool) -> None:
        kind = KINDS[gvr]
        if body.get("kind") != kind.kind or body.get("apiVersion") != api_version(gvr):
            raise ApiError(400, "BadRequest", f"expected {api_version(gvr)} {kind.kind}, got "
                           f"{body.get('apiVersion')} {body.get('kind')}")
        probe = copy.deepcopy(body)
        meta = probe.get("metadata", {})
        for key in ("uid", "resourceVersion", "creationTimestamp", "generation"):
            meta.pop(key, None)
        if gvr == NAMESPACES:
            probe.pop("status", None)
        try:
            validate(probe, strict=strict)
        except UnknownFields as exc:
            raise ApiError(400, "BadRequest", f"strict decoding error: {exc}") from None
        except SchemaInvalid as exc:
            raise ApiError(422, "Invalid", str(exc)) from None

    @staticmethod
    def _normalise(gvr: GVR, body: dict[str, Any]) -> dict[str, Any]:
        if gvr == ("", "v1", "secrets") and "stringData" in body:
            data = dict(body.get("data") or {})
            for key, value in body.pop("stringData").items():
                data[key] = base64.b64encode(value.encode()).decode()
            body["data"] = data
        return body

    def _watch(self, gvr: GVR, namespace: str | None, q) -> Response:
        checks = parse_selector(q.get("labelSelector"))
        raw_rv = q.get("resourceVersion")
        timeout = float(q.get("timeoutSeconds") or 1800)
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        watch_id = next(self._watch_ids)
        store = self.store
        with store.lock:
            if raw_rv in (None, "", "0"):
                initial = [Event(int(o["metadata"]["resourceVersion"]), "ADDED", gvr, o["metadata"].get("namespace", ""), o)
                           for o in store.list(gvr, namespace, None)[0]]
                last = store.rv
            else:
                initial, last = [], int(raw_rv)

        def line(type_: str, obj: dict[str, Any]) -> bytes:
            return (json.dumps({"type": type_, "object": obj}) + "\n").encode()

        async def stream():
            nonlocal last
            loop = asyncio.get_running_loop()
            wake = asyncio.Event()
            store.waiters.append((loop, wake))
            deadline = time.monotonic() + timeout
            try:
                while self.hold_watches and not (self._server and self._server.should_exit):
                    await asyncio.sleep(0.01)
                for event in initial:
                    if matches(event.obj, checks):
                        yield line(event.type, event.obj)
                while True:
                    if watch_id < self._drop_before:
                        return  # cut without a goodbye, as a dropped connection
                    try:
                        events = store.events_since(last)
                    except ApiError as exc:
                        yield line("ERROR", exc.status())
                        return
                    for event in events:
                        last = event.rv
                        if event.gvr == gvr and (namespace is None or event.namespace == namespace) \
                                and matches(event.obj, checks):
                            yield line(event.type, event.obj)
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or (self._server is not None and self._server.should_exit):
                        if bookmarks:
                            yield line("BOOKMARK", {"kind": KINDS[gvr].kind, "apiVersion": api_version(gvr),
                                                    "metadata": {"resourceVersion": str(store.rv)}})
                        return
                    wake.clear()
                    try:
                        await asyncio.wait_for(wake.wait(), timeout=min(remaining, 1.0))
                    except TimeoutError:
                        pass
            finally:
                store.waiters.remove((loop, wake))

        return StreamingResponse(stream(), media_type="application/json")


def write_kubeconfig(path: Path, servers: dict[str, KubeApiServer]) -> Path:
    """A kubeconfig with one context per server, named after the key."""
    config = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": n, "cluster": {"server": s.url}} for n, s in servers.items()],
        "users": [{"name": f"{n}-user", "user": {"token": s.token}} for n, s in servers.items()],
        "contexts": [{"name": n, "context": {"cluster": n, "user": f"{n}-user"}} for n in servers],
        "current-context": next(iter(servers)),
    }
    path.write_text(yaml.safe_dump(config))
    return path


def main() -> None:
    """Serve on its own (a separate process for benchmarks): prints `{"port": ..}` once up."""
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", required=True)
    parser.add_argument("--name", default="test")
    args = parser.parse_args()
    server = KubeApiServer(args.name, token=args.token).start(args.port)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(json.dumps({"port": server.port}), flush=True)
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    server.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
