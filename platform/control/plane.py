"""The control plane inside `aitb server`: wires backends, scheduler, reconciler and tracking,
and runs them on a background thread while this process holds the scheduler leadership.

`ControlPlane` is the API's `ControlPort` (api/port.py) in a process that schedules."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

from sqlalchemy.orm import Session

from aitb.clusters.base import ChangeSource
from aitb.clusters.registry import backends_for, warn_undriven
from aitb.control.governance import GovernanceGate
from aitb.control.leader import LeaderElection
from aitb.control.reconciler import Reconciler
from aitb.control.scheduling import SchedulingCycle
from aitb.control.wake import WakeChannel
from aitb.domain.models import Job
from aitb.domain.testbed import Federation
from aitb.osutil import secret_file
from aitb.scheduler import Policy
from aitb.services import queue
from aitb.services.tracking_events import TrackingEvents
from aitb.settings import Settings
from aitb.store import jobs as job_store
from aitb.store.db import Database
from aitb.timeutil import utcnow

log = logging.getLogger("aitb.control")

#: How long dispatch waits for the job's MLflow run before starting without one.
RUN_WAIT = timedelta(seconds=20)


def warn_remote_ray(federation: Federation, secrets_dir: Path) -> None:
    """Say once, at start, which `ray` clusters are not on this machine: a per-attempt MLflow
    credentials file reaches their jobs only where `secrets_dir` is mounted at the same path
    (plain Ray has no other channel that other tenants cannot read; docs/tracking.md)."""
    for _, cluster in federation.clusters():
        address = str(cluster.connection.get("address") or "")
        host = urlparse(address if "://" in address else f"http://{address}").hostname
        if cluster.backend == "ray" and address and host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("cluster %s (%s) is not on this machine: its jobs get MLflow credentials only "
                        "if %s is on a filesystem its nodes mount at that path; otherwise they run "
                        "without (their log says so)", cluster.name, address, secrets_dir)


def runner_secret(settings: Settings) -> str:
    """The platform's tracking secret (seals the experiments it creates); made once, 0600."""
    return secret_file(settings.data_dir / "tracking-runner.secret", lambda: secrets.token_hex(32))


def checkpoint_dir(data_dir: Path, job_id: str) -> Path:
    """A job's checkpoint folder on the embedded platform: the same for every attempt, so it
    survives preemption and retries (``AITB_CHECKPOINT_DIR``)."""
    path = data_dir / "checkpoints" / job_id
    path.mkdir(parents=True, exist_ok=True)
    return path


class ControlPlane:
    def __init__(self, settings: Settings, db: Database, federation: Federation, events: TrackingEvents,
                 policy: Policy):
        self.settings = settings
        self.db = db
        self.federation = federation
        self.events = events
        # backends: one per driven cluster; each undriven one is warned about once, here
        backends = backends_for(federation, package_urls=self._package_urls(),
                                kube_defaults=settings.kubernetes.connection_defaults())
        warn_undriven(backends)
        self.backends = backends.driven
        self.leader = LeaderElection(db, lease_s=settings.scheduler.lease_s)
        self.reconciler = Reconciler(
            db, federation, self.backends, self.events, settings.data_dir,
            env_for=self.job_env, workdir_for=self.workdir,
        )
        self.governance = GovernanceGate(db, federation, self.events)
        self.reconciler.governance = self.governance  # dispatch re-checks
        self.scheduler = SchedulingCycle(
            db, federation, self.events, policy, on_preempt=self.reconciler.stop_now,
            undriven=backends.undriven, unavailable=self.reconciler.unavailable,
            governance=self.governance,
        )
        self.runners = None  # per-attempt MLflow credentials, set up with the outbox
        self.outbox = self._outbox() if settings.tracking.tracking_uri else None
        self.retention = self._retention()
        self._stop = threading.Event()
        self._wake_control = threading.Event()
        self._wake_tracking = threading.Event()
        self._threads: list[threading.Thread] = []
        self._wake_channel: WakeChannel | None = None  # opened by start()
        self._leading_before = False
        for backend in self.backends.values():
            if isinstance(backend, ChangeSource):  # e.g. KubeRay's watch: wake on every change
                backend.subscribe(self._wake_control.set)
        self._next_bundle_sync = 0.0

    # -- the API's port ---------------------------------------------------------------------
    @property
    def scheduler_role(self) -> str:
        return "leader" if self.leader.is_leader else "standby"

    def queue(self, session: Session, node: str | None = None) -> list[queue.QueueEntry]:
        """The queue as this leader's last cycle left it; the store's order before that."""
        last = self.scheduler.last
        if last is None or not self.leader.is_leader:
            return queue.current_order(session, self.federation, self.scheduler.policy, node=node,
                                       undriven=self.scheduler.undriven)
        return queue.from_decisions(last, self.scheduler.pending, node=node, notes=self.scheduler.notes)

    def read_log(self, job: Job, offset: int) -> tuple[bytes, int]:
        return self.reconciler.read_log(job, offset)

    def reset_mlflow_password(self, user: str) -> str | None:
        access = self.outbox.access if self.outbox is not None else None
        return access.reset_password(user) if access is not None else None

    def sync_tracking(self, repair: bool) -> dict | None:
        """`aitb admin tracking sync`: MLflow made to match the platform (docs/tracking.md)."""
        if self.outbox is None or self.outbox.access is None:
            return None
        from aitb.tracking.sync import sync_tracking

        return sync_tracking(self.outbox, repair).as_dict()

    def _package_urls(self):
        """Signed package URLs for pods on Kubernetes clusters (needs the public URL)."""
        public = self.settings.server.public_url
        if not public:
            return None
        from aitb.services.package_urls import PackageUrlSigner, signing_key

        key = signing_key(self.settings.packages_dir, self.settings.packages.url_signing_key)
        return PackageUrlSigner(key, public)

    def sync_bundles(self) -> None:
        """Keep each project's namespace on Kubernetes clusters in step with its quota."""
        from aitb.control.kube import sync_project_bundles

        sync_project_bundles(self.db, self.federation, self.backends)

    def _outbox(self):
        from aitb.tracking.credentials import MlflowAccount
        from aitb.tracking.outbox import OutboxProcessor
        from aitb.tracking.permissions import MlflowAccess
        from aitb.tracking.tracker import Tracker

        t = self.settings.tracking
        from aitb.tracking.runner import RunnerCredentials

        admin = MlflowAccount(t.admin_user, t.admin_password or "")
        access = MlflowAccess(t.tracking_uri, admin) if t.admin_password else None
        self.runners = RunnerCredentials(access, self.settings.data_dir / "secrets" / "mlflow-runners") if access else None
        if self.runners is not None:
            warn_remote_ray(self.federation, self.runners.secrets_dir)
        return OutboxProcessor(
            self.db.sessions,
            Tracker(t.tracking_uri, admin, seal_key=runner_secret(self.settings)),
            access=access,
            runners=self.runners,
            on_run_created=self._run_created,
        )

    def _retention(self):
        from aitb.services.retention import MlflowRunArtifacts, NoArtifacts, Retention

        t = self.settings.tracking
        artifacts = NoArtifacts()
        on_purged = None
        if t.tracking_uri:
            from aitb.tracking import outbox
            from aitb.tracking.credentials import MlflowAccount

            artifacts = MlflowRunArtifacts(t.tracking_uri, MlflowAccount(t.admin_user, t.admin_password or ""))

            def on_purged(session, job, tags):
                outbox.enqueue_tags(session, job.id, tags)
        return Retention(self.db, self.settings.data_dir, artifacts, on_purged)

    def _retention_loop(self) -> None:
        while not self._stop.wait(self.RETENTION_INTERVAL_S):
            if not self.leader.is_leader:
                continue
            try:
                self.retention.run_once()
            except Exception:
                log.exception("retention purge failed")

    def _run_created(self, job_id: str, experiment_id: str, run_id: str) -> None:
        with self.db.session() as session:
            job_store.update_fields(session, job_id, mlflow_experiment_id=experiment_id, mlflow_run_id=run_id)

    # -- what a dispatched job gets ---------------------------------------------------------
    def workdir(self, digest: str) -> Path:
        """The unpacked code package (unpacked once per digest, shared by its jobs)."""
        from aitb.packaging import extract_package
        from aitb.services.packages import package_path

        hexdigest = digest.split(":", 1)[1]
        target = self.settings.data_dir / "workdirs" / hexdigest
        if not target.exists():
            tmp = target.with_name(f"{hexdigest}.{secrets.token_hex(4)}.tmp")
            extract_package(package_path(self.settings.packages_dir, digest).read_bytes(), tmp)
            try:
                tmp.rename(target)
            except OSError:  # another thread won the race: its copy is identical
                pass
        return target

    def _checkpoints_on_this_machine(self, job: Job) -> bool:
        """KubeRay jobs get a volume instead (clusters/kuberay/manifests.py): no folder here."""
        found = self.federation.cluster(job.cluster) if job.cluster else None
        return found is None or found[1].backend != "kuberay"

    def job_env(self, job: Job) -> dict[str, str] | None:
        env = dict(job.spec.env)
        env.update({
            "AITB_JOB_ID": job.id,
            "AITB_PROJECT": job.project,
            "AITB_PARTNER": job.partner,
            "AITB_NODE": job.node or "",
            "AITB_CLUSTER": job.cluster or "",
            "AITB_ATTEMPT": str(job.attempts),
        })
        if self._checkpoints_on_this_machine(job):
            env["AITB_CHECKPOINT_DIR"] = str(checkpoint_dir(self.settings.data_dir, job.id))
        uri = self.settings.tracking.tracking_uri
        if not uri:
            return env
        if job.mlflow_run_id is None:
            admitted = job.admitted_at or utcnow()
            if utcnow() - admitted < RUN_WAIT:
                return None  # give the outbox a moment to create the run
            log.warning("job %s starts without its MLflow run (MLflow unreachable?)", job.id)
            return env
        env.update({
            "MLFLOW_TRACKING_URI": uri,
            "MLFLOW_RUN_ID": job.mlflow_run_id,
            "MLFLOW_EXPERIMENT_ID": job.mlflow_experiment_id or "",
        })
        if self.runners is not None and job.mlflow_experiment_id:
            # Per-attempt account; only the 0600 file's path travels (aitb.tracking.runner).
            from aitb.domain.models import Attempt
            from aitb.tracking.runner import CREDENTIALS_ENV

            attempt = Attempt.backend_id_for(job.id, job.attempts)
            try:
                env[CREDENTIALS_ENV] = str(self.runners.issue(attempt, job.mlflow_experiment_id))
            except Exception as exc:
                if utcnow() - (job.admitted_at or utcnow()) < RUN_WAIT:
                    return None  # MLflow busy or down: try again next tick
                log.warning("job %s starts without MLflow credentials: %s", job.id, exc)
        return env

    # -- the loops --------------------------------------------------------------------------
    # Two threads: scheduling + reconciling, and tracking delivery, so a slow MLflow never
    # delays a dispatch. Both sleep until woken (a submission, a cancel, a created run) or
    # their interval passes; while jobs wait to start the reconciler polls fast.
    HOT_INTERVAL_S = 0.1
    RETENTION_INTERVAL_S = 600.0  # how often finished jobs past their datasets' retention are purged
    BUNDLE_SYNC_S = 10.0
    PACE_FLOOR_S = 0.005  # cycles shorter than this need no pacing

    def wake(self) -> None:
        self._wake_local()
        channel = self._wake_channel
        if channel is not None and not self.leader.is_leader:
            channel.send()  # the leader is another worker of this server

    def _wake_local(self) -> None:
        self._wake_control.set()
        self._wake_tracking.set()

    def tick(self) -> bool:
        """One scheduling + reconciling pass; True while some job waits to start."""
        try:
            leading = self.leader.try_acquire()
        except Exception as exc:  # the database is gone: act on nothing until it is back
            self.leader.is_leader = self._leading_before = False
            log.warning("scheduler paused: cannot reach the database (%s)", type(exc).__name__)
            return False
        if not leading:
            self._leading_before = False
            return False
        if not self._leading_before and self._wake_channel is not None:
            self._wake_channel.publish()
        self._leading_before = True
        steps = [self.scheduler.run_once, self.reconciler.run_once]
        if time.monotonic() >= self._next_bundle_sync:
            self._next_bundle_sync = time.monotonic() + self.BUNDLE_SYNC_S
            steps.append(self.sync_bundles)
        for step in steps:
            try:
                step()
            except Exception:  # one failing step must not stop the other or the loop
                log.exception("control step %s failed", getattr(step, "__qualname__", step))
        return self.reconciler.hot

    def _control_loop(self) -> None:
        interval = self.settings.scheduler.interval_s
        while not self._stop.is_set():
            started = time.monotonic()
            hot = self.tick()
            took = time.monotonic() - started
            self._wake_control.wait(self.HOT_INTERVAL_S if hot else interval)
            self._wake_control.clear()
            # Pace: wait at least three times as long as the cycle took before the next one,
            # so a stream of submissions (each one a wake-up) coalesces into fewer cycles and
            # the loop, whose cycles grow with the queue, never takes more than about a
            # quarter of this process's time (the API keeps the rest).
            if took > self.PACE_FLOOR_S:
                self._stop.wait(min(3 * took, interval))

    def _tracking_loop(self) -> None:
        assert self.outbox is not None
        try:  # import mlflow and open the connection before the first job needs it
            self.outbox.tracker.ensure_ready()
        except Exception as exc:
            log.warning("MLflow not reachable yet (%s); tracking will catch up", exc)
        interval = self.settings.tracking.outbox_interval_s
        while not self._stop.is_set():
            delivered = 0
            if self.leader.is_leader:
                try:
                    delivered = self.outbox.run_once()
                except Exception:
                    log.exception("tracking delivery failed")
            if delivered:
                self._wake_control.set()  # a new run id may unblock a dispatch
            self._wake_tracking.wait(0.05 if delivered else interval)
            self._wake_tracking.clear()

    def start(self) -> None:
        self._wake_channel = WakeChannel(self.settings.data_dir / "control-wake.port", self._wake_local)
        self._threads = [threading.Thread(target=self._control_loop, name="aitb-control", daemon=True),
                         threading.Thread(target=self._retention_loop, name="aitb-retention", daemon=True)]
        if self.outbox is not None:
            self._threads.append(threading.Thread(target=self._tracking_loop, name="aitb-tracking", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake()
        for thread in self._threads:
            thread.join(timeout=10)
        for backend in self.backends.values():
            if isinstance(backend, ChangeSource):
                backend.close()
        try:
            self.leader.release()
        except Exception:
            pass
        if self._wake_channel is not None:
            self._wake_channel.close()
            self._wake_channel = None
