"""Run aitb jobs on a Kubernetes cluster through the KubeRay operator: one RayJob per attempt,
in the project's namespace (docs/kubernetes.md).

`dispatch` applies the project's bundle (once per change), then the job's checkpoint
claim (once per job: every attempt mounts the same one), the attempt's Secret and RayJob;
re-dispatching an attempt that exists is a no-op. `status` reads the watch's cache
(or the API when the cache is not in sync) and never writes. `stop` deletes the RayJob
(its Ray cluster, pods and Secret go with it; the checkpoint claim stays for the next
attempt). `sweep_checkpoints` deletes the claims of finished jobs. `logs` asks the head's
dashboard through the API server's service proxy, else reads the head pod's log.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from aitb.clusters.base import (
    BackendJobStatus,
    BackendState,
    BackendUnavailable,
    DispatchRejected,
    DispatchRequest,
)
from aitb.clusters.kuberay import names
from aitb.clusters.kuberay.api import (
    BY_KIND,
    NAMESPACES,
    PODS,
    PVCS,
    RAYJOBS,
    SECRETS,
    Kube,
    KubeError,
)
from aitb.clusters.kuberay.bundle import ProjectSpec, project_bundle
from aitb.clusters.kuberay.manifests import (
    CHECKPOINT_VOLUME,
    AttemptMeta,
    attempt_objects,
    checkpoint_claim,
)
from aitb.clusters.kuberay.options import ClusterOptions
from aitb.clusters.kuberay.watch import RayJobWatch, attempt_of
from aitb.tracking.runner import CREDENTIALS_ENV, read_credentials

log = logging.getLogger("aitb.kuberay")


def credentials_in_env(req: DispatchRequest) -> DispatchRequest:
    """The runner's credentials file is written for jobs that share the control plane's
    disk (plain Ray). Pods do not: its variables travel in the attempt's Secret instead,
    with every other job variable (never inline in the RayJob)."""
    path = req.env.get(CREDENTIALS_ENV)
    if not path:
        return req
    env = {k: v for k, v in req.env.items() if k != CREDENTIALS_ENV}
    try:
        env.update(read_credentials(path))
    except OSError as exc:  # revoked meanwhile: the job runs without MLflow credentials
        log.warning("runner credentials of %s not readable: %s", req.job_id, exc)
    return dataclasses.replace(req, env=env)
DASHBOARD_PORT = 8265
#: every checkpoint claim aitb made on a cluster (found again after a restart by this)
CHECKPOINT_SELECTOR = f"{names.MANAGED_SELECTOR},{names.LABEL_COMPONENT}={CHECKPOINT_VOLUME}"


class PackageUrls:
    """What the backend needs from the control plane to let a pod fetch a code package."""

    def url(self, digest: str) -> str:  # pragma: no cover - protocol
        raise NotImplementedError


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def to_status(obj: Mapping[str, Any] | None) -> BackendJobStatus:
    """A RayJob's status as the backend protocol says it (pure).

    `jobStatus` is Ray's view of the driver; `jobDeploymentStatus` is KubeRay's view of the
    whole RayJob (it fails a job whose cluster never came up, or that ran past
    `activeDeadlineSeconds`, without a jobStatus).
    """
    if obj is None:
        return BackendJobStatus(BackendState.UNKNOWN, "no such RayJob")
    status = obj.get("status") or {}
    deployment = status.get("jobDeploymentStatus") or ""
    job_status = status.get("jobStatus") or ""
    reason = status.get("reason") or ""
    message = status.get("message") or ""
    start, end = _time(status.get("startTime")), _time(status.get("endTime"))
    deleting = bool((obj.get("metadata") or {}).get("deletionTimestamp"))
    text = f"{reason}: {message}" if reason and message else (message or reason)
    if job_status == "SUCCEEDED":
        return BackendJobStatus(BackendState.SUCCEEDED, text or "succeeded", start, end, 0)
    if job_status == "FAILED":
        return BackendJobStatus(BackendState.FAILED, text or "the job failed", start, end)
    if job_status == "STOPPED":
        return BackendJobStatus(BackendState.STOPPED, text or "stopped", start, end)
    if deployment in ("Failed", "ValidationFailed", "Complete"):
        if reason == "DeadlineExceeded":
            text = f"exceeded its max_runtime_s (activeDeadlineSeconds) and was stopped; {message}"
        return BackendJobStatus(BackendState.FAILED, text or f"RayJob {deployment.lower()}", start, end)
    if deployment == "Running" and job_status == "RUNNING":
        return BackendJobStatus(BackendState.RUNNING, "stopping" if deleting else "running", start)
    return BackendJobStatus(BackendState.PENDING, "stopping" if deleting else (deployment or "created"), start)


class KubeRayBackend:
    def __init__(self, options: ClusterOptions, kube: Kube | None = None,
                 package_urls: PackageUrls | None = None, config_file: str | None = None):
        self.options = options
        self.package_urls = package_urls
        self._config_file = config_file
        self._kube = kube
        self._lock = threading.Lock()
        self._watch: RayJobWatch | None = None
        self._wakes: list[Callable[[], None]] = []
        self._bundles: dict[str, str] = {}  # project -> hash of the bundle last applied
        self._namespaces: dict[str, str] = {}  # attempt id -> namespace (dispatched here)
        self._secrets_done: set[str] = set()
        self._deleted: set[str] = set()  # attempts whose RayJob this process deleted (stop)
        self._claims: dict[str, str] = {}  # job id -> namespace of its checkpoint claim
        self._claims_listed_at: float | None = None  # monotonic time of the last full listing
        self.bundle_writes = 0

    # -- connection ---------------------------------------------------------------------------
    @property
    def kube(self) -> Kube:
        with self._lock:
            if self._kube is None:
                self._kube = Kube.connect(self.options.context, self.options.name,
                                          self.options.request_timeout_s, self._config_file)
            return self._kube

    @property
    def watch(self) -> RayJobWatch:
        kube = self.kube
        with self._lock:
            if self._watch is None:
                self._watch = RayJobWatch(kube, self.options.watch_timeout_s, on_event=self._on_event)
                for wake in self._wakes:
                    self._watch.subscribe(wake)
                self._watch.start()
            return self._watch

    def subscribe(self, wake: Callable[[], None]) -> None:
        self._wakes.append(wake)
        if self._watch is not None:
            self._watch.subscribe(wake)
        try:
            self.watch  # noqa: B018 - start watching now, so the first events are not missed
        except BackendUnavailable as exc:
            log.warning("cluster %s: %s", self.options.name, exc)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.stop()

    # -- dispatch -----------------------------------------------------------------------------
    def _meta(self, req: DispatchRequest) -> AttemptMeta:
        ctx = req.context
        if ctx is None:
            raise DispatchRejected(f"{req.job_id}: the KubeRay backend needs the job's context "
                                   "(project, partner, node)")
        # governance's runtime constraints, where the request carries them (egress, secure pool)
        constraints = getattr(req, "constraints", None)
        no_egress = ctx.no_egress or (constraints is not None and not constraints.egress)
        secure = ctx.no_egress or (constraints is not None and bool(constraints.secure_pool))
        return AttemptMeta(attempt_id=req.job_id, job_id=ctx.job_id, attempt=ctx.attempt,
                           project=ctx.project, partner=ctx.partner, node=ctx.node,
                           cluster=self.options.name, package=ctx.package, no_egress=no_egress,
                           secure_pool=secure)

    def dispatch(self, req: DispatchRequest) -> None:
        meta = self._meta(req)
        ctx = req.context
        assert ctx is not None
        self.ensure_project(ProjectSpec(ctx.project, ctx.partner, ctx.quota_limits))
        namespace = names.project_namespace(meta.project, self.options.namespace)
        if self.kube.get(RAYJOBS, namespace, names.rayjob_name(req.job_id)) is not None:
            self._namespaces[req.job_id] = namespace
            return  # this attempt is on the cluster already: never a second run
        req = credentials_in_env(req)
        self.ensure_checkpoints(meta)
        url = None
        if meta.package:
            if self.package_urls is None:
                raise DispatchRejected(
                    f"job {meta.job_id} has code, but the control plane has no public URL for pods "
                    "to fetch it from (set AITB_SERVER__PUBLIC_URL)")
            url = self.package_urls.url(meta.package)
        secret, rayjob = attempt_objects(req, meta, self.options, url)
        kube = self.kube
        try:
            kube.create(SECRETS, secret)
        except KubeError as exc:
            if exc.status != 409:
                raise DispatchRejected(f"cluster {self.options.name} refused the job's Secret: {exc}") from exc
            # left by a dispatch that failed before its RayJob: replace it (a fresh package URL)
            kube.delete(SECRETS, namespace, secret["metadata"]["name"])
            kube.create(SECRETS, secret)
        try:
            created = kube.create(RAYJOBS, rayjob)
        except KubeError as exc:
            if exc.status == 409:
                return  # created by a concurrent dispatch of the same attempt
            kube.delete(SECRETS, namespace, secret["metadata"]["name"])
            raise DispatchRejected(f"cluster {self.options.name} refused the RayJob: {exc}") from exc
        self._namespaces[req.job_id] = namespace
        owner = {"apiVersion": "ray.io/v1", "kind": "RayJob", "name": created["metadata"]["name"],
                 "uid": created["metadata"]["uid"], "blockOwnerDeletion": False}
        try:  # the Secret goes when the RayJob goes
            kube.merge_patch(SECRETS, namespace, secret["metadata"]["name"],
                             {"metadata": {"ownerReferences": [owner]}})
        except (KubeError, BackendUnavailable) as exc:
            log.warning("attempt %s: Secret not owned by its RayJob (%s); stop deletes it", req.job_id, exc)

    # -- the job's checkpoint volume -----------------------------------------------------------
    #: how often the claims on the cluster are listed again (orphans of a restarted control
    #: plane, claims made by another replica before a leadership change)
    CLAIM_RELIST_S = 600.0

    def ensure_checkpoints(self, meta: AttemptMeta) -> None:
        """Create the job's checkpoint claim unless it exists (one POST; 409 is success), so
        the first attempt makes it and every later attempt finds the same one, data and all."""
        claim = checkpoint_claim(meta, self.options)
        if claim is None:
            return
        namespace = claim["metadata"]["namespace"]
        try:
            self.kube.create(PVCS, claim)
        except KubeError as exc:
            if exc.status != 409:
                raise DispatchRejected(
                    f"cluster {self.options.name} refused the job's checkpoint volume: {exc}") from exc
        with self._lock:
            self._claims[meta.job_id] = namespace

    def _list_claims(self) -> None:
        """Every checkpoint claim aitb has on the cluster, namespace by namespace (the chart
        grants `list` on claims inside project namespaces only). Only this backend's project
        namespaces: another federation's (another prefix) jobs are not in this store."""
        found: dict[str, str] = {}
        for ns in self.kube.list(NAMESPACES, None, names.MANAGED_SELECTOR).get("items", []):
            namespace = ns["metadata"]["name"]
            project = (ns["metadata"].get("labels") or {}).get(names.LABEL_PROJECT)
            if project is None or namespace != names.project_namespace(project, self.options.namespace):
                continue
            for claim in self.kube.list(PVCS, namespace, CHECKPOINT_SELECTOR).get("items", []):
                job = (claim["metadata"].get("labels") or {}).get(names.LABEL_JOB)
                if job:
                    found[job] = namespace
        with self._lock:
            self._claims.update(found)
            self._claims_listed_at = time.monotonic()

    def sweep_checkpoints(self, finished: Callable[[Collection[str]], Collection[str]]) -> int:
        """Delete the checkpoint claims of jobs that will not run again; returns how many.

        `finished(job_ids)` names those of the given jobs that are over (SUCCEEDED, FAILED for
        good, CANCELLED, REJECTED) or unknown to the store (purged). Claims this process made
        are checked every call without a request to the cluster; the cluster is listed again
        every `CLAIM_RELIST_S` (and on the first call), which finds what an earlier control
        plane left. A preempted or retried job is not finished: its claim stays. Deleting a
        claim that is gone already is fine (404)."""
        if not self.options.checkpoints.enabled and self._claims_listed_at is not None and not self._claims:
            return 0
        if self._claims_listed_at is None or time.monotonic() - self._claims_listed_at >= self.CLAIM_RELIST_S:
            self._list_claims()
        with self._lock:
            claims = dict(self._claims)
        if not claims:
            return 0
        swept = 0
        for job in sorted(set(finished(list(claims))) & set(claims)):
            if self.kube.delete(PVCS, claims[job], names.checkpoint_claim_name(job)):
                swept += 1
            with self._lock:
                self._claims.pop(job, None)
        return swept

    # -- reads (no side effects) --------------------------------------------------------------
    def _read(self, attempt_id: str) -> dict[str, Any] | None:
        synced, obj = self.watch.get(attempt_id)
        if synced and obj is not None:
            return obj
        # not in the cache: not synced, or created a moment ago; ask the API server
        namespace = self._namespaces.get(attempt_id)
        name = names.rayjob_name(attempt_id)
        if namespace:
            return self.kube.get(RAYJOBS, namespace, name)
        found = self.kube.list(RAYJOBS, None, f"{names.LABEL_ATTEMPT}={name}").get("items", [])
        return found[0] if found else None

    def status(self, job_id: str) -> BackendJobStatus:
        obj = self._read(job_id)
        if obj is None and job_id in self._deleted:
            # its RayJob is gone because `stop` deleted it: stopped, not lost
            return BackendJobStatus(BackendState.STOPPED, "stopped: its RayJob was deleted by aitb")
        return to_status(obj)

    def list_jobs(self) -> dict[str, BackendJobStatus]:
        watch = self.watch
        if watch.synced:
            objects = watch.snapshot()
        else:
            items = self.kube.list(RAYJOBS, None, names.MANAGED_SELECTOR).get("items", [])
            objects = {attempt_of(o): o for o in items}
        return {key: to_status(obj) for key, obj in objects.items()}

    def logs(self, job_id: str) -> str:
        obj = self._read(job_id)
        if obj is None:
            return ""
        namespace = obj["metadata"]["namespace"]
        cluster = (obj.get("status") or {}).get("rayClusterName")
        if not cluster:
            return ""
        ray_job = (obj.get("spec") or {}).get("jobId") or job_id
        try:
            answer = self.kube.service_proxy(namespace, f"{cluster}-head-svc", DASHBOARD_PORT,
                                             f"api/jobs/{ray_job}/logs")
            return str((answer or {}).get("logs", ""))
        except (KubeError, BackendUnavailable) as exc:
            log.debug("dashboard of %s unreachable (%s); reading the head pod's log", job_id, exc)
        heads = self.kube.list(PODS, namespace, f"ray.io/cluster={cluster},ray.io/node-type=head")
        for pod in heads.get("items", []):
            try:
                return self.kube.pod_log(namespace, pod["metadata"]["name"])
            except KubeError:
                continue
        return ""

    def tail_logs(self, job_id: str) -> Iterator[str]:
        yield self.logs(job_id)

    # -- control ------------------------------------------------------------------------------
    def stop(self, job_id: str) -> bool:
        """Delete the attempt's RayJob (KubeRay tears its Ray cluster down; the Secret is
        garbage-collected with it). The job's checkpoint claim stays: a preempted job resumes
        from it. True when it was still active."""
        obj = self._read(job_id)
        if obj is None:
            return False
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        active = not to_status(obj).state.terminal
        deleted = self.kube.delete(RAYJOBS, namespace, name)
        self._deleted.add(job_id)
        self.kube.delete(SECRETS, namespace, names.env_secret_name(job_id))
        if self._watch is not None:
            with self._watch._lock:
                self._watch.cache.pop(job_id, None)
        return deleted and active

    def _on_event(self, attempt_id: str, obj: dict[str, Any] | None) -> None:
        """Housekeeping on the watch thread: the credentials in an attempt's Secret do not
        outlive the attempt (its pods are done with them once the job is terminal)."""
        if obj is None or attempt_id in self._secrets_done or not to_status(obj).state.terminal:
            return
        try:
            self.kube.delete(SECRETS, obj["metadata"]["namespace"], names.env_secret_name(attempt_id))
            self._secrets_done.add(attempt_id)
        except (KubeError, BackendUnavailable) as exc:
            log.debug("could not delete the Secret of %s yet: %s", attempt_id, exc)

    # -- the per-project bundle ----------------------------------------------------------------
    def ensure_project(self, spec: ProjectSpec) -> int:
        """Apply the project's bundle unless this process applied the same one already;
        returns the number of objects written."""
        objects = project_bundle(spec, self.options)
        digest = hashlib.sha256("".join(
            o["metadata"]["annotations"][names.ANNOTATION_SPEC_HASH] for o in objects).encode()).hexdigest()
        if self._bundles.get(spec.project) == digest:
            return 0
        writes = apply_objects(self.kube, objects)
        self._bundles[spec.project] = digest
        self.bundle_writes += writes
        return writes

    def sweep_finished(self, now: datetime | None = None) -> int:
        """Delete RayJobs that finished more than `keep_finished_s` ago (the reconciler has long
        recorded their end); returns how many. Reads the watch's cache, so it costs nothing
        while there is nothing to delete."""
        watch = self.watch
        if not watch.synced:
            return 0
        now = now or datetime.now(UTC)
        swept = 0
        for obj in watch.snapshot().values():
            status = to_status(obj)
            if not status.state.terminal or status.end_time is None:
                continue
            if (now - status.end_time).total_seconds() < self.options.keep_finished_s:
                continue
            if self.kube.delete(RAYJOBS, obj["metadata"]["namespace"], obj["metadata"]["name"]):
                swept += 1
        return swept

    def remove_project(self, project: str) -> int:
        """Delete the project's namespaces here (found by their owner labels); everything in
        them goes too. Returns how many were deleted."""
        selector = f"{names.MANAGED_SELECTOR},{names.LABEL_PROJECT}={project}"
        namespaces = self.kube.list(NAMESPACES, None, selector).get("items", [])
        for namespace in namespaces:
            self.kube.delete(NAMESPACES, None, namespace["metadata"]["name"])
        gone = {namespace["metadata"]["name"] for namespace in namespaces}
        with self._lock:  # their checkpoint claims went with them
            self._claims = {job: ns for job, ns in self._claims.items() if ns not in gone}
        self._bundles.pop(project, None)
        return len(namespaces)

    def sync_projects(self, projects: Mapping[str, ProjectSpec]) -> int:
        """Keep the bundles of projects that have a namespace here in step (quota changes)."""
        listing = self.kube.list(NAMESPACES, None, names.MANAGED_SELECTOR)
        present = {(ns["metadata"].get("labels") or {}).get(names.LABEL_PROJECT)
                   for ns in listing.get("items", [])}
        return sum(self.ensure_project(spec) for project, spec in projects.items() if project in present)


def update_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch that makes `current` what aitb wants, leaving alone what others
    (the API server, admins) added: labels and annotations are merged, each top-level field
    aitb writes is replaced (keys aitb dropped inside it are removed), the rest untouched.
    The resourceVersion makes it a compare-and-set: a concurrent writer gets a 409."""

    def diff(have: Any, want: Any) -> Any:
        if isinstance(have, dict) and isinstance(want, dict):
            out = {k: diff(have.get(k), v) for k, v in want.items()}
            out.update({k: None for k in have if k not in want})
            return out
        return want

    meta = desired["metadata"]
    patch: dict[str, Any] = {"metadata": {
        "resourceVersion": current["metadata"]["resourceVersion"],
        "labels": dict(meta.get("labels", {})), "annotations": dict(meta.get("annotations", {}))}}
    for key, value in desired.items():
        if key not in ("apiVersion", "kind", "metadata", "status"):
            patch[key] = diff(current.get(key), value)
    return patch


def apply_objects(kube: Kube, objects: list[dict[str, Any]]) -> int:
    """Create what is missing, patch what differs from what aitb wants (by spec hash),
    leave the rest alone; returns the number of writes. Idempotent. Only get, create and
    patch are used (the Helm chart grants no `update` on namespaces and role bindings)."""
    writes = 0
    for desired in objects:
        res = BY_KIND[desired["kind"]]
        meta = desired["metadata"]
        for _ in range(3):  # a conflicting writer: read again and retry
            current = kube.get(res, meta.get("namespace"), meta["name"])
            try:
                if current is None:
                    kube.create(res, desired)
                    writes += 1
                    break
                want = meta["annotations"][names.ANNOTATION_SPEC_HASH]
                have = (current["metadata"].get("annotations") or {}).get(names.ANNOTATION_SPEC_HASH)
                if want == have:
                    break
                kube.merge_patch(res, meta.get("namespace"), meta["name"], update_patch(current, desired))
                writes += 1
                break
            except KubeError as exc:
                if exc.status != 409:
                    raise DispatchRejected(f"cluster refused {desired['kind']} {meta['name']}: {exc}") from exc
    return writes
