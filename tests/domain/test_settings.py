"""Settings: contract names from the environment, nested groups, and a TOML file underneath."""

from __future__ import annotations

from pathlib import Path

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
