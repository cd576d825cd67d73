"""One nested settings tree for the control plane.

Top-level names are part of the contract (``AITB_DATA_DIR``, ``AITB_DATABASE_URL``,
``AITB_TESTBED``, ``AITB_BOOTSTRAP_ADMIN_TOKEN``); nested groups take
``AITB_<GROUP>__<FIELD>`` (e.g. ``AITB_SERVER__PORT``). A TOML file named by
``AITB_CONFIG`` (default ``$AITB_DATA_DIR/config.toml``) fills what the
environment leaves unset.
"""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_TESTBED = "testbeds/local.yaml"


def default_workers() -> int:
    """One per CPU this process may run on, at most 4."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8600, ge=0, le=65535)
    #: uvicorn worker processes; unset: one per CPU, at most 4 (a worker runs Python on one
    #: core at a time; the control loop runs in one of them, chosen by leader election)
    workers: int | None = Field(default=None, ge=1, le=64)
    log_level: str = "info"
    #: the control plane's URL as job pods on Kubernetes clusters reach it (signed package
    #: downloads); None: jobs with code cannot run on kuberay clusters
    public_url: str | None = None
    # failed authentications a client may make per window before it gets 429 (per process)
    auth_max_failures: int = Field(default=10, ge=1)
    auth_window_s: float = Field(default=60.0, gt=0)
    # how long a valid token's caller is reused without reading the store (0: never); changes
    # committed by this process apply at once, those of other workers/replicas within this time
    auth_cache_s: float = Field(default=2.0, ge=0, le=60)


class PackageSettings(BaseModel):
    max_bytes: int = Field(default=100 * 1024 * 1024, gt=0)
    max_files: int = Field(default=20_000, gt=0)
    #: HMAC key (hex) of signed package URLs; None: one kept in the packages directory,
    #: which every API replica and the scheduler share
    url_signing_key: str | None = Field(default=None, min_length=32, pattern=r"^[0-9a-fA-F]+$")


class SchedulerSettings(BaseModel):
    enabled: bool = True
    interval_s: float = Field(default=0.5, gt=0)
    aging_threshold_s: float = Field(default=1800.0, ge=0)
    lease_s: float = Field(default=15.0, gt=0)
    #: the policy the server schedules with: ours (benchmarked in docs/scheduler.md), or one
    #: of the simulator's baselines (fifo, quota-only, kueue-fair)
    policy: Literal["ours", "fifo", "quota-only", "kueue-fair"] = "ours"
    #: a job runs this long before it may be preempted (Slurm's PreemptExemptTime);
    #: None: the policy's own (ours: 900 s)
    min_runtime_s: float | None = Field(default=None, ge=0)


class TrackingSettings(BaseModel):
    tracking_uri: str | None = None  # None: no MLflow tracking
    admin_user: str = "aitb-admin"
    admin_password: str | None = None
    outbox_interval_s: float = Field(default=1.0, gt=0)


class KubernetesSettings(BaseModel):
    """Defaults for every `kuberay` cluster (a cluster's `connection` overrides them). With
    the Helm chart: the `<release>-project` ClusterRole and the release's ServiceAccount, bound
    in each project namespace the control plane creates (docs/kubernetes.md)."""

    project_role: str | None = None
    service_account: str | None = None
    service_account_namespace: str | None = None

    def connection_defaults(self) -> dict[str, object]:
        if not (self.project_role and self.service_account and self.service_account_namespace):
            return {}
        subject = {"kind": "ServiceAccount", "name": self.service_account,
                   "namespace": self.service_account_namespace}
        return {"project_role": {"cluster_role": self.project_role, "subjects": [subject]}}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AITB_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Field(default_factory=lambda: Path.home() / ".aitb")
    database_url: str | None = None
    testbed: str = DEFAULT_TESTBED
    bootstrap_admin_token: str | None = None
    token_ttl_days: int = Field(default=365, ge=1)

    server: ServerSettings = ServerSettings()
    packages: PackageSettings = PackageSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    tracking: TrackingSettings = TrackingSettings()
    kubernetes: KubernetesSettings = KubernetesSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file_path())
        return (init_settings, env_settings, toml)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'aitb.db'}"

    @property
    def packages_dir(self) -> Path:
        return self.data_dir / "packages"

    def testbed_path(self) -> Path:
        return resolve_testbed_path(self.testbed)


def config_file_path() -> Path:
    explicit = os.environ.get("AITB_CONFIG")
    if explicit:
        return Path(explicit)
    data_dir = os.environ.get("AITB_DATA_DIR") or str(Path.home() / ".aitb")
    return Path(data_dir) / "config.toml"


def resolve_testbed_path(name: str) -> Path:
    """A path as given, else the testbed shipped inside the package (found after `pip install .`)."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    shipped = resources.files("aitb.testbeds") / Path(name).name
    if shipped.is_file():
        return Path(str(shipped))
    return path


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
