"""Settings: contract names from the environment, nested groups, and a TOML file underneath."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from aitb.settings import Settings


def test_environment_names_of_the_contract(monkeypatch, tmp_path):
    monkeypatch.setenv("AITB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("AITB_DATABASE_URL", "postgresql://u@db/aitb")
    monkeypatch.setenv("AITB_TESTBED", "testbeds/sweden.yaml")
    monkeypatch.setenv("AITB_BOOTSTRAP_ADMIN_TOKEN", "secret")
    monkeypatch.setenv("AITB_SERVER__PORT", "9000")
    s = Settings()
    assert s.data_dir == tmp_path and s.resolved_database_url == "postgresql://u@db/aitb"
    assert s.testbed_path().name == "sweden.yaml" and s.bootstrap_admin_token == "secret"
    assert s.server.port == 9000


def test_defaults_keep_everything_in_the_data_dir(monkeypatch, tmp_path):
    for name in ("AITB_DATABASE_URL", "AITB_TESTBED", "AITB_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AITB_DATA_DIR", str(tmp_path))
    s = Settings()
    assert s.resolved_database_url == f"sqlite:///{tmp_path / 'aitb.db'}"
    assert s.packages_dir == tmp_path / "packages"
    assert s.testbed_path().is_file()


def test_config_file_fills_what_the_environment_leaves_unset(monkeypatch, tmp_path: Path):
    config = tmp_path / "aitb.toml"
    config.write_text('testbed = "testbeds/sweden.yaml"\n[server]\nport = 7000\nworkers = 3\n')
    monkeypatch.setenv("AITB_CONFIG", str(config))
    monkeypatch.delenv("AITB_TESTBED", raising=False)
    monkeypatch.setenv("AITB_SERVER__PORT", "7100")  # the environment wins
    s = Settings()
    assert s.testbed == "testbeds/sweden.yaml"
    assert (s.server.port, s.server.workers) == (7100, 3)


def test_the_server_schedules_with_the_benchmarked_policy(monkeypatch, tmp_path):
    from aitb.api.deps import scheduler_policy
    from aitb.scheduler.policy import OURS, QUOTA_ONLY

    monkeypatch.setenv("AITB_DATA_DIR", str(tmp_path))
    policy = scheduler_policy(Settings())
    assert policy == dataclasses.replace(OURS, aging_threshold_s=1800.0)
    monkeypatch.setenv("AITB_SCHEDULER__POLICY", "quota-only")
    monkeypatch.setenv("AITB_SCHEDULER__MIN_RUNTIME_S", "0")
    monkeypatch.setenv("AITB_SCHEDULER__AGING_THRESHOLD_S", "60")
    assert scheduler_policy(Settings()) == dataclasses.replace(QUOTA_ONLY, aging_threshold_s=60.0, min_runtime_s=0.0)
    monkeypatch.setenv("AITB_SCHEDULER__POLICY", "round-robin")
    with pytest.raises(ValueError):
        Settings()
