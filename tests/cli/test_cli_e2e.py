"""The installed `aitb` command against a real API server (tests/conftest.py `api_server`)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from aitb.packaging import build_package

AITB = str(Path(sys.executable).with_name("aitb"))


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Cli:
    """Runs the installed command with its own config file and credentials."""

    def __init__(self, env: dict[str, str], config: Path, token: str | None = None) -> None:
        self.env = {**env, "AITB_CLI_CONFIG": str(config)}
        if token is not None:
            self.env["AITB_TOKEN"] = token

    def without_env_credentials(self) -> Cli:
        other = Cli(self.env, Path(self.env["AITB_CLI_CONFIG"]))
        other.env.pop("AITB_URL", None)
        other.env.pop("AITB_TOKEN", None)
        return other

    def run(self, *args: str, ok: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [AITB, *args], env=self.env, capture_output=True, text=True, timeout=60, input=stdin
        )
        if ok and proc.returncode != 0:
            raise AssertionError(f"aitb {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def json(self, *args: str) -> Any:
        proc = self.run("-o", "json", *args)
        return json.loads(proc.stdout)  # stdout must be exactly one JSON document


@pytest.fixture
def admin(api_server, tmp_path: Path) -> Cli:
    return Cli(api_server.env, tmp_path / "admin.toml")


@pytest.fixture
def team(api_server, tmp_path: Path) -> dict[str, Any]:
    """A partner, a project and a researcher in it, with fresh names."""
    partner, project, user = uid("p"), uid("proj"), uid("alice")
    token = api_server.make_user(user, partner=partner, project=project, role="researcher")
    cli = Cli(api_server.env, tmp_path / "alice.toml", token=token)
    return {"partner": partner, "project": project, "user": user, "token": token, "cli": cli}


def write_tree(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.py").write_text("print('training')\n")
    (root / ".gitignore").write_text("data/\n*.log\n")
    (root / ".aitbignore").write_text("secret.txt\n")
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "big.bin").write_bytes(b"\0" * 4096)
    (root / "run.log").write_text("old\n")
    (root / "secret.txt").write_text("s3cret\n")
    return root


def test_admin_flow_end_to_end(admin: Cli, api_server) -> None:
    partner, project, user, ds = uid("volvo"), uid("vision"), uid("bob"), uid("ds")
    assert admin.json("admin", "partner", "create", partner, "--weight", "2") == {"name": partner, "weight": 2.0}
    assert partner in admin.run("admin", "partner", "list").stdout

    created = admin.run("admin", "user", "create", user, "--partner", partner)
    token = created.stdout.strip()
    assert token and "\n" not in token and "shown only now" in created.stderr
    assert any(u["name"] == user for u in admin.json("admin", "user", "list"))

    admin.run("admin", "project", "create", project, "--partner", partner)
    admin.run("admin", "member", "set", project, user, "researcher")
    projects = {p["name"]: p for p in admin.json("admin", "project", "list")}
    assert projects[project]["members"] == [{"user": user, "role": "researcher"}]

    node = admin.json("admin", "testbeds")["nodes"][0]["name"]
    q = admin.json("admin", "quota", "set", project, node, "--nominal", "cpu=8,gpu=2", "--borrow", "cpu=4")
    assert (q["nominal"], q["borrowing_limit"]) == ({"cpu": 8.0, "gpu": 2.0}, {"cpu": 4.0})
    assert [x["node"] for x in admin.json("admin", "quota", "list", "--project", project)] == [node]
    rows = admin.json("quota", project)
    assert {r["resource"]: r["nominal"] for r in rows} == {"cpu": 8.0, "gpu": 2.0}
    assert all(r["borrowed"] == 0 for r in rows)

    admin.run("admin", "dataset", "create", ds, "--partner", partner, "--classification", "confidential",
              "--home-node", node, "--residency", "strict", "--retention-days", "30")
    assert any(d["name"] == ds for d in admin.json("admin", "dataset", "list"))
    other = uid("other")
    api_server.make_user(uid("carol"), partner=uid("q"), project=other)
    grant = admin.json("admin", "grant", "set", ds, other, "--purpose", "tumour study", "--expires", "90d")
    assert grant["project"] == other and grant["purpose"] == "tumour study"
    assert [g["project"] for g in admin.json("admin", "grant", "list", ds)] == [other]
    admin.run("admin", "grant", "revoke", ds, other)
    assert admin.json("admin", "grant", "list", ds) == []

    new_token = admin.run("admin", "user", "token", user).stdout.strip()
    assert new_token != token

    entries = admin.json("admin", "audit", "list", "--limit", "1000")
    assert entries and all({"seq", "hash", "prev_hash"} <= set(e) for e in entries)
    verify = admin.run("admin", "audit", "verify")
    assert "intact" in verify.stdout
    shown = admin.run("admin", "testbeds")
    assert node in shown.stdout and "CAPACITY" in shown.stdout
    # the test server's testbed has no Ray addresses filled in: no cluster is driven, and it says so
    cluster = admin.json("admin", "testbeds")["nodes"][0]["clusters"][0]
    assert cluster["driven"] is False and "connection.address" in cluster["not_driven_reason"]
    assert "not driven" in shown.stdout and f"cluster {cluster['name']} is not driven" in shown.stderr


def test_researcher_submits_a_directory_and_sees_the_job(team: dict[str, Any], api_server, tmp_path: Path) -> None:
    cli: Cli = team["cli"]
    tree = write_tree(tmp_path / "exp")
    first = cli.run("submit", str(tree), "--project", team["project"], "--name", "first",
                    "--cpu", "2", "--memory", "4Gi", "--env", "SEED=1", "--", "python", "train.py", "--epochs", "3")
    job_id = first.stdout.strip()
    assert job_id.startswith("j-") and "uploaded" in first.stderr
    assert "3 files" in first.stderr

    job = cli.json("status", job_id)
    expected = build_package(tree)
    assert job["code"] == expected.digest  # the same tree gives the same digest here and on the server
    stored = api_server.data_dir / "packages" / f"{expected.digest.split(':')[1]}.zip"
    with zipfile.ZipFile(stored) as zf:  # ignored files never left the machine
        assert sorted(zf.namelist()) == [".aitbignore", ".gitignore", "train.py"]
    assert job["entrypoint"] == "python train.py --epochs 3"
    assert (job["resources"]["cpu"], job["resources"]["memory_gib"], job["name"]) == (2, 4, "first")
    assert job["state"] == "QUEUED" and job["submitter"] == team["user"]

    again = cli.run("submit", str(tree), "-p", team["project"], "--", "python train.py")
    assert "already on the server" in again.stderr

    listed = cli.json("jobs", "--project", team["project"])
    assert [j["id"] for j in listed] == [again.stdout.strip(), job_id]  # newest first
    assert cli.json("jobs", "--project", team["project"], "--limit", "1")[0]["id"] == again.stdout.strip()
    assert len(cli.json("jobs", "--project", team["project"], "--all")) == 2
    table = cli.run("jobs", "--project", team["project"]).stdout
    assert job_id in table and "QUEUED" in table
    status = cli.run("status", job_id).stdout
    assert "QUEUED" in status and team["project"] in status

    queued = cli.json("queue", "--project", team["project"])
    assert {q["job"] for q in queued} == {job_id, again.stdout.strip()}
    assert sorted(q["position"] for q in queued) == sorted({q["position"] for q in queued})


def test_submit_json_prints_only_the_job(team: dict[str, Any], tmp_path: Path) -> None:
    cli: Cli = team["cli"]
    (tmp_path / "aitb.yaml").write_text(
        f"project: {team['project']}\nentrypoint: python -c 'print(1)'\nresources: {{cpu: 1, memory_gib: 1}}\n"
    )
    job = cli.json("submit", str(tmp_path))
    assert job["project"] == team["project"] and job["entrypoint"] == "python -c 'print(1)'"
    assert job["code"] == build_package(tmp_path).digest
    no_code = cli.json("submit", str(tmp_path), "--no-code")
    assert no_code["code"] is None


def test_cancel_then_logs_follow_ends(team: dict[str, Any], tmp_path: Path) -> None:
    cli: Cli = team["cli"]
    job_id = cli.run("submit", str(tmp_path), "-p", team["project"], "--no-code", "--", "sleep 60").stdout.strip()
    assert cli.json("cancel", job_id)["state"] == "CANCELLED"
    again = cli.run("cancel", job_id, ok=False)
    assert again.returncode == 1 and "409" in again.stderr
    follow = cli.run("logs", job_id, "-f")  # a finished job: follow returns at once
    assert follow.returncode == 0
    assert [j["id"] for j in cli.json("jobs", "-p", team["project"], "--state", "cancelled")] == [job_id]
    assert cli.json("jobs", "-p", team["project"], "--state", "RUNNING") == []
    events = cli.json("status", job_id)["events"]
    assert events[-1]["to_state"] == "CANCELLED"


def test_errors_are_one_line_with_the_server_detail(team: dict[str, Any], api_server, tmp_path: Path) -> None:
    cli: Cli = team["cli"]
    foreign = cli.run("submit", str(tmp_path), "-p", uid("notmine"), "--no-code", "--", "true", ok=False)
    assert foreign.returncode == 1
    assert foreign.stderr.startswith("Error: 40") and foreign.stderr.count("\n") == 1 and foreign.stdout == ""
    unknown = cli.run("status", "j-doesnotexist", ok=False)
    assert unknown.returncode == 1 and "404" in unknown.stderr and unknown.stderr.count("\n") == 1
    forbidden = cli.run("admin", "partner", "create", uid("x"), ok=False)
    assert forbidden.returncode == 1 and "403" in forbidden.stderr
    bad_token = Cli(api_server.env, tmp_path / "bad.toml", token="not-a-token").run("jobs", ok=False)
    assert bad_token.returncode == 1 and "401" in bad_token.stderr and "aitb login" in bad_token.stderr
    bad_quota = Cli(api_server.env, tmp_path / "a.toml").run(
        "admin", "quota", "set", team["project"], "stockholm", "--nominal", "cpu=lots", ok=False
    )
    assert bad_quota.returncode == 2 and "'lots' is not a number" in bad_quota.stderr
    invalid = Cli(api_server.env, tmp_path / "a.toml").run(
        "admin", "quota", "set", team["project"], "stockholm", "--nominal", "tpu=3", ok=False
    )
    assert invalid.returncode == 1 and "422" in invalid.stderr


def test_login_profiles_whoami_logout(team: dict[str, Any], api_server, tmp_path: Path) -> None:
    cli = Cli(api_server.env, tmp_path / "login.toml").without_env_credentials()
    assert cli.run("whoami", ok=False).returncode == 2

    refused = cli.run("login", api_server.url, "--token", "wrong", ok=False)
    assert refused.returncode == 1 and not (tmp_path / "login.toml").exists()

    out = cli.run("login", api_server.url, "--profile", "work", stdin=team["token"] + "\n")
    assert team["user"] in out.stdout
    assert (tmp_path / "login.toml").stat().st_mode & 0o777 == 0o600
    me = cli.json("whoami")
    assert me["name"] == team["user"] and me["profile"] == "work"
    assert {"project": team["project"], "role": "researcher"} in me["projects"]

    cli.run("login", api_server.url, "--token", api_server.admin_token, "--profile", "admin")
    assert cli.json("whoami")["name"] == "admin"
    profiles = {p["name"]: p for p in cli.json("profiles")}
    assert profiles["admin"]["active"] and not profiles["work"]["active"]
    assert cli.json("--profile", "work", "whoami")["name"] == team["user"]
    cli.run("profiles", "use", "work")
    assert cli.json("whoami")["name"] == team["user"]

    cli.run("logout")
    assert cli.run("whoami", ok=False).returncode == 2
    assert [p["name"] for p in cli.json("profiles")] == ["admin"]
