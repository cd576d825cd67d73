"""CLI pieces that need no server: profiles, precedence, parsing, exit codes."""

from __future__ import annotations

import os
import socket
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from aitb.cli.commands.queue import quota_rows
from aitb.cli.config import CliConfig, Profile, load_config, resolve_target, save_config
from aitb.cli.errors import ConfigError
from aitb.cli.main import main
from aitb.cli.output import fmt_duration, fmt_gang
from aitb.cli.spec import (
    SpecError,
    SubmitOptions,
    build_job_body,
    load_project_file,
    parse_duration,
    parse_expiry,
    parse_memory,
    parse_resource_list,
)


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cfg" / "config.toml"
    monkeypatch.setenv("AITB_CLI_CONFIG", str(path))
    monkeypatch.delenv("AITB_URL", raising=False)
    monkeypatch.delenv("AITB_TOKEN", raising=False)
    return path


# ---------------------------------------------------------------- config


def test_config_roundtrip_is_private_and_survives_odd_characters(cfg: Path) -> None:
    config = CliConfig(
        profiles={"default": Profile("http://a:1", 'to"k\\en'), "prod eu": Profile("https://b", None)},
        active="prod eu",
    )
    save_config(config)
    assert stat.S_IMODE(os.stat(cfg).st_mode) == 0o600
    assert load_config() == config


def test_broken_config_is_a_usage_error(cfg: Path) -> None:
    cfg.parent.mkdir(parents=True)
    cfg.write_text("active = [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read the CLI config"):
        load_config()


def test_precedence_flags_then_profile_then_env_then_active() -> None:
    config = CliConfig(
        profiles={"a": Profile("http://a", "ta"), "b": Profile("http://b", "tb")}, active="a"
    )
    env = {"AITB_URL": "http://env", "AITB_TOKEN": "tenv"}
    assert resolve_target(config, env={}) == resolve_target(config, "a", env={})
    assert resolve_target(config, env={}).token == "ta"
    assert (resolve_target(config, env=env).url, resolve_target(config, env=env).token) == ("http://env", "tenv")
    assert resolve_target(config, "b", env=env).url == "http://b"
    t = resolve_target(config, "b", url="http://flag", token="tflag", env=env)
    assert (t.url, t.token) == ("http://flag", "tflag")
    with pytest.raises(ConfigError, match="no profile named 'zzz'"):
        resolve_target(config, "zzz", env={})


def test_active_token_never_goes_to_another_server() -> None:
    config = CliConfig(profiles={"a": Profile("http://a", "secret")}, active="a")
    target = resolve_target(config, env={"AITB_URL": "http://elsewhere"})
    assert target.url == "http://elsewhere" and target.token is None
    assert resolve_target(config, env={"AITB_TOKEN": "t2"}).token == "t2"


# ---------------------------------------------------------------- parsing


def test_resource_lists_memory_and_durations() -> None:
    assert parse_resource_list("cpu=8, gpu=2,gpu:a100=1,memory=512Mi") == {
        "cpu": 8.0, "gpu": 2.0, "gpu:a100": 1.0, "memory_gib": 0.5,
    }  # fmt: skip
    assert parse_resource_list("") == {}
    for bad in ("cpu", "cpu=lots", "=3", "cpu=-1"):
        with pytest.raises(SpecError):
            parse_resource_list(bad)
    assert [parse_memory(v) for v in ("16", "16Gi", "1024Mi", "1TiB", 4)] == [16, 16, 1, 1024, 4]
    assert [parse_duration(v) for v in ("3600", "90m", "2h30m", "1d", "1w", 5)] == [3600, 5400, 9000, 86400, 604800, 5]
    for bad in ("soon", "10x", "", "h"):
        with pytest.raises(SpecError):
            parse_duration(bad)


def test_expiry_from_date_datetime_or_duration() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_expiry("2027-06-30", now) == "2027-06-30T23:59:59+00:00"
    assert parse_expiry("2027-06-30T12:00:00+02:00", now) == "2027-06-30T10:00:00+00:00"
    assert parse_expiry("90d", now) == "2026-04-01T00:00:00+00:00"
    with pytest.raises(SpecError, match="neither a date"):
        parse_expiry("next tuesday", now)


def test_job_body_options_override_aitb_yaml(tmp_path: Path) -> None:
    (tmp_path / "aitb.yaml").write_text(
        "project: vision\nentrypoint: [python, train.py, --lr, '0.1 0.2']\n"
        "resources: {cpu: 4, memory_gib: 8, gpu: 1, gpu_type: a100|h100}\n"
        "workers: {replicas: 2, cpu: 2, memory_gib: 4, gpu: 1}\n"
        "datasets: [imagenet]\nenv: {A: '1'}\nmax_runtime: 2h\n"
    )
    file = load_project_file(tmp_path)
    body = build_job_body(SubmitOptions(cpu=8, env=["B=2"], priority=5, retries=1), file)
    assert body == {
        "project": "vision",
        "entrypoint": "python train.py --lr '0.1 0.2'",
        "resources": {"cpu": 8, "memory_gib": 8.0, "gpu": 1.0, "gpu_type": ["a100", "h100"]},
        "workers": {"replicas": 2, "cpu": 2.0, "memory_gib": 4.0, "gpu": 1.0, "gpu_type": ["a100", "h100"]},
        "datasets": ["imagenet"],
        "priority": 5,
        "max_runtime_s": 7200,
        "env": {"A": "1", "B": "2"},
        "max_retries": 1,
    }
    minimal = build_job_body(SubmitOptions(project="p", entrypoint=["echo hi"]))
    assert minimal == {"project": "p", "entrypoint": "echo hi", "resources": {"cpu": 1.0, "memory_gib": 2.0, "gpu": 0.0}}


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (SubmitOptions(entrypoint=["x"]), "no project"),
        (SubmitOptions(project="p"), "no entrypoint"),
        (SubmitOptions(project="p", entrypoint=["x"], env=["1BAD=x"]), "KEY=VALUE"),
        (SubmitOptions(project="p", entrypoint=["x"], worker_cpu=2), "need --workers"),
    ],
)
def test_job_body_rejects_incomplete_input(opts: SubmitOptions, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        build_job_body(opts)


def test_unknown_aitb_yaml_key_is_named(tmp_path: Path) -> None:
    (tmp_path / "aitb.yaml").write_text("project: p\nresource: {cpu: 2}\n")
    with pytest.raises(SpecError, match="unknown keys resource"):
        load_project_file(tmp_path)


def test_quota_rows_compute_borrowed_per_resource() -> None:
    rows = quota_rows(
        [{"project": "p", "node": "lund", "nominal": {"cpu": 8, "gpu": 2}, "borrowing_limit": {"gpu": 2}, "used": {"cpu": 4, "gpu": 3, "memory_gib": 10}}]
    )
    by_res = {r["resource"]: r for r in rows}
    assert [r["resource"] for r in rows] == ["cpu", "memory_gib", "gpu"]
    # memory_gib is not named by the quota: not limited, so nothing of it counts as borrowed
    assert (by_res["gpu"]["borrowed"], by_res["cpu"]["borrowed"], by_res["memory_gib"]["borrowed"]) == (1, 0, 0)
    assert by_res["memory_gib"]["nominal"] is None
    assert by_res["cpu"]["borrowing_limit"] is None and by_res["gpu"]["borrowing_limit"] == 2


def test_output_formatting() -> None:
    assert [fmt_duration(s) for s in (5, 125, 3600 * 3 + 300, 86400 * 2 + 3600 * 4)] == ["5s", "2m05s", "3h05m", "2d04h"]
    job = {"resources": {"cpu": 2, "memory_gib": 4, "gpu": 0.5, "gpu_type": ["a100"]}, "workers": {"replicas": 3, "cpu": 1, "memory_gib": 2, "gpu": 0}}
    assert fmt_gang(job) == "2 cpu, 4 GiB, 0.5 gpu (a100) + 3× 1 cpu, 2 GiB"


# ---------------------------------------------------------------- commands without a server


def test_usage_errors_exit_2(cfg: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["--url", "http://127.0.0.1:9", "submit", str(tmp_path), "-p", "x"])
    assert r.exit_code == 2 and "no entrypoint" in r.output
    r = runner.invoke(main, ["jobs"])
    assert r.exit_code == 2 and "aitb login" in r.output
    r = runner.invoke(main, ["jobs", "--state", "BOGUS", "--url", "http://x"])
    assert r.exit_code == 2
    r = runner.invoke(main, ["--profile", "nope", "jobs"])
    assert r.exit_code == 2 and "no profile named 'nope'" in r.output


def test_unreachable_server_exits_3_naming_the_url(cfg: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connection refused
        r = CliRunner().invoke(main, ["--url", f"http://127.0.0.1:{port}", "jobs"])
    assert r.exit_code == 3
    assert f"http://127.0.0.1:{port}" in r.output and r.output.count("\n") == 1


def test_profiles_use_and_listing(cfg: Path) -> None:
    save_config(CliConfig(profiles={"a": Profile("http://a", "t"), "b": Profile("http://b")}, active="a"))
    runner = CliRunner()
    assert runner.invoke(main, ["profiles", "use", "b"]).exit_code == 0
    assert load_config().active == "b"
    r = runner.invoke(main, ["-o", "json", "profiles"])
    import json

    assert json.loads(r.output) == [
        {"name": "a", "url": "http://a", "active": False, "token": True},
        {"name": "b", "url": "http://b", "active": True, "token": False},
    ]
    r = runner.invoke(main, ["logout"])
    assert r.exit_code == 0 and set(load_config().profiles) == {"a"} and load_config().active is None


def test_entrypoint_after_double_dash_is_not_parsed_as_options(cfg: Path, tmp_path: Path) -> None:
    """`--cpu` after `--` belongs to the user's program; an unreachable server proves parsing passed."""
    r = CliRunner().invoke(
        main, ["--url", "http://127.0.0.1:9", "submit", str(tmp_path), "-p", "x", "--no-code", "--", "python", "t.py", "--cpu", "oops"]
    )
    assert r.exit_code == 3, r.output


def test_cli_start_up_imports_no_heavy_library() -> None:
    """`aitb` must start fast: mlflow alone costs ~2.4 s to import."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from aitb.cli.main import COMMANDS, main\n"
        "import importlib\n"
        "for spec in set(COMMANDS.values()):\n"
        "    importlib.import_module('aitb.cli.commands.' + spec.split(':')[0])\n"
        "import aitb.cli.spec, aitb.packaging\n"
        "heavy = sorted(m for m in ('mlflow', 'ray', 'fastapi', 'sqlalchemy', 'pydantic') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_error_line_names_each_field_error_once() -> None:
    """The server's 422 detail already spells its field errors out: the CLI does not repeat them."""
    import httpx

    from aitb.cli.client import error_message

    request = httpx.Request("POST", "http://x/v1/jobs")
    same = httpx.Response(422, request=request, json={
        "detail": "invalid request: query.from: too short",
        "errors": [{"loc": "query.from", "msg": "too short"}]})
    assert error_message(same) == "422 Unprocessable Entity: invalid request: query.from: too short"
    other = httpx.Response(422, request=request, json={
        "detail": "invalid request", "errors": [{"loc": "body.cpu", "msg": "must be > 0"}]})
    assert error_message(other).endswith("invalid request (body.cpu: must be > 0)")
