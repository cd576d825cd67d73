"""`aitb dataset`, `aitb grant`, `aitb policy add/list/show/test` against the real API server."""

from __future__ import annotations

import json
import uuid

from click.testing import CliRunner

from aitb.cli.main import main as cli


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def run(env: dict, token: str, *args: str, code: int = 0):
    result = CliRunner().invoke(cli, list(args), env={**env, "AITB_TOKEN": token}, catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def test_people_manage_data_and_policies_and_dry_run_a_job(api_server, tmp_path):
    s = api_server
    env = {"AITB_URL": s.url, "AITB_CLI_CONFIG": str(tmp_path / "cli.toml")}
    owner, project = uid("owner"), uid("proj")
    owner_admin = s.make_user(uid("oa"), partner=owner, roles=(f"partner-admin:{owner}",))
    researcher = s.make_user(uid("r"), partner=uid("user"), project=project)
    ds = uid("cohort")
    run(env, owner_admin, "dataset", "create", ds, "--partner", owner, "--classification", "confidential",
        "--home-node", "goteborg", "--residency", "strict", "--purpose", "research", "--purpose", "teaching")
    listed = json.loads(run(env, owner_admin, "-o", "json", "dataset", "list").output)
    assert next(d for d in listed if d["name"] == ds)["purposes"] == ["research", "teaching"]
    bad = run(env, owner_admin, "grant", "set", ds, project, "--purpose", "sales", "--expires", "30d", code=1)
    assert "research" in bad.output
    run(env, owner_admin, "grant", "set", ds, project, "--purpose", "research", "--expires", "30d")

    job = tmp_path / "job.json"
    job.write_text(json.dumps({"project": project, "entrypoint": "python train.py", "datasets": [ds],
                               "resources": {"cpu": 1, "memory_gib": 1}}))
    # local.yaml has no secure pool at goteborg: confidential + strict there is refused everywhere
    out = run(env, researcher, "policy", "test", str(job), code=1).output
    assert "REFUSED everywhere" in out and "baseline.secure-pool" in out and "baseline.residency-strict" in out
    # and goteborg's Ray cluster is shared: confidential data never runs there, per pool
    assert "baseline.ray-shared-confidential" in out
    assert "egress denied" in out

    policy = tmp_path / "p.cedar"
    policy.write_text('@reason("{dataset_partner} data never leaves goteborg")\n'
                      'forbid (principal, action == Action::"egress", resource);\n')
    name = uid("offline")
    out = run(env, owner_admin, "policy", "add", name, str(policy), "--scope", f"partner:{owner}",
              "--description", "offline").output
    assert "revision 1" in out
    assert name in run(env, researcher, "policy", "list").output
    assert "forbid" in run(env, researcher, "policy", "show", name).output
    policy.write_text('permit (principal, action, resource);')
    refused = run(env, owner_admin, "policy", "add", uid("open"), str(policy), "--scope", f"partner:{owner}",
                  code=1)
    assert "only forbid" in refused.output
    run(env, owner_admin, "grant", "revoke", ds, project)
    data = json.loads(run(env, researcher, "-o", "json", "policy", "test", str(job), code=1).output)
    assert any(r["policy"] == "baseline.grant-required" for r in data["job_reasons"])


def test_audit_list_filters_from_the_cli(api_server, tmp_path):
    env = {"AITB_URL": api_server.url, "AITB_CLI_CONFIG": str(tmp_path / "cli.toml")}
    out = run(env, api_server.admin_token, "-o", "json", "admin", "audit", "list", "--action", "user.",
              "--limit", "1000").output
    entries = json.loads(out)
    assert entries and all(e["action"].startswith("user.") for e in entries)
