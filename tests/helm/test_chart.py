"""The Helm chart: lints, renders for default and production-like values, and every rendered
object is valid Kubernetes (kubernetes-validate, strict) — offline, with helm-python-sdk."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed (dev extra)")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "aitb"
PRODUCTION = yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())
KUBE_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# Kinds outside Kubernetes itself, checked by shape here: prometheus-operator's ServiceMonitor.
FOREIGN_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


class StrictLoader(yaml.SafeLoader):
    """Refuses duplicate keys, as `kubectl apply` does."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        duplicates = {k for k in keys if keys.count(k) > 1}
        if duplicates:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate keys {duplicates}", node.start_mark)
        return super().construct_mapping(node, deep=deep)


def render(values: dict | None = None) -> list[dict]:
    chart = helm.Chart.load(str(CHART))
    out = chart.render(values, name="aitb", namespace="aitb-system", is_install=True)
    objects = []
    for path, text in sorted(out.items()):
        if not path.endswith(".yaml"):
            continue
        for doc in yaml.load_all(text, Loader=StrictLoader):
            if doc:
                doc["_template"] = path
                objects.append(doc)
    return objects


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def env_of(deployment: dict) -> dict[str, dict]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container.get("env", [])}


@pytest.fixture(scope="module", params=["default", "production"])
def rendered(request) -> list[dict]:
    return render(None if request.param == "default" else PRODUCTION)


@pytest.mark.parametrize("values", [None, PRODUCTION], ids=["default", "production"])
def test_lint_is_clean(values):
    report = helm.lint(str(CHART), values, strict=True, kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    # strict lint turns warnings into errors; the one info ("icon is recommended") is allowed
    assert problems == [], problems


def test_every_object_is_valid_kubernetes(rendered):
    assert len(rendered) >= 10
    for obj in rendered:
        template = obj.pop("_template")
        if (obj["apiVersion"], obj["kind"]) in FOREIGN_KINDS:
            assert obj["spec"]["endpoints"] and obj["spec"]["selector"], template
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{template}: {obj['kind']} {obj['metadata']['name']} on {version}: {exc.message}")


def test_validation_bites_on_a_wrong_field():
    deployment = by_kind(render(), "Deployment")["aitb-api"]
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # typo of resources
    deployment.pop("_template")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)


@pytest.mark.parametrize("values", [None, PRODUCTION], ids=["default", "production"])
def test_exactly_one_active_scheduler_by_design(values):
    objects = render(values)
    deployments = by_kind(objects, "Deployment")
    enabled = {name: env_of(d)["AITB_SCHEDULER__ENABLED"]["value"] for name, d in deployments.items()
               if "AITB_SCHEDULER__ENABLED" in env_of(d)}
    # the API replicas never run control loops; one Deployment does, and its replicas elect a
    # leader through PostgreSQL's advisory lock (never SQLite, whose lease is single-host)
    assert enabled == {"aitb-api": "false", "aitb-scheduler": "true"}
    for name in enabled:
        ref = env_of(deployments[name])["AITB_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert ref["key"] == "database-url"
    secrets = by_kind(objects, "Secret")
    if values is None:
        assert secrets["aitb-database"]["stringData"]["database-url"].startswith("postgresql://")


def test_no_database_no_render():
    with pytest.raises(helm.HelmError, match="needs PostgreSQL"):
        render({"postgresql": {"bundled": {"enabled": False}}})
    with pytest.raises(helm.HelmError, match="choose one database"):
        render({"database": {"url": "postgresql://a@b/c"}})


def test_values_schema_refuses_bad_values():
    for bad in ({"api": {"replicas": 0}}, {"api": {"replica": 2}}, {"database": {"url": "sqlite:///x.db"}},
                {"auth": {"bootstrapAdminToken": "short"}}):
        with pytest.raises(helm.HelmError):
            render(bad)


def test_existing_secrets_are_referenced_not_rendered():
    objects = render(PRODUCTION)
    assert by_kind(objects, "Secret") == {}
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for d in by_kind(objects, "Deployment").values()
        for c in d["spec"]["template"]["spec"]["containers"] + d["spec"]["template"]["spec"].get("initContainers", [])
        for e in c.get("env", []) if "valueFrom" in e
    }
    assert refs == {"aitb-database", "aitb-auth"}


def test_pods_run_as_non_root_read_only(rendered):
    workloads = [o for o in rendered if o["kind"] in ("Deployment", "StatefulSet")]
    assert workloads
    for w in workloads:
        spec = w["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, w["metadata"]["name"]
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
            if w["kind"] == "Deployment":
                assert sc["readOnlyRootFilesystem"] is True
            assert c.get("resources", {}).get("limits"), (w["metadata"]["name"], c["name"])


def test_the_grafana_dashboard_ships_in_a_config_map():
    maps = by_kind(render(PRODUCTION), "ConfigMap")
    dashboard = json.loads(maps["aitb-grafana-dashboard"]["data"]["aitb-dashboard.json"])
    assert dashboard == json.loads((CHART / "files" / "aitb-dashboard.json").read_text())
    assert maps["aitb-grafana-dashboard"]["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_network_policies_deny_by_default(rendered):
    policies = by_kind(rendered, "NetworkPolicy")
    deny = policies["aitb-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny


def documented_cluster_rules() -> set[tuple]:
    """The table under 'Cluster-wide RBAC' in docs/helm.md."""
    text = (ROOT / "docs" / "helm.md").read_text()
    section = text.split("## Cluster-wide RBAC", 1)[1].split("\n## ", 1)[0]
    rows = set()
    for line in section.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("API group", "") or set(cells[0]) <= {"-", " "}:
            continue
        group = "" if cells[0] == "core" else cells[0]
        names = tuple(sorted(n.strip() for n in cells[3].split(",") if n.strip() and n.strip() != "—"))
        for resource in cells[1].split(","):
            rows.add((group, resource.strip(), tuple(sorted(v.strip() for v in cells[2].split(","))), names))
    return rows


def test_cluster_wide_rbac_is_exactly_what_the_docs_list():
    objects = render(PRODUCTION)
    roles = by_kind(objects, "ClusterRole")
    bound = {b["roleRef"]["name"] for b in by_kind(objects, "ClusterRoleBinding").values()}
    granted = set()
    for name in bound:
        for rule in roles[name]["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    names = tuple(sorted(rule.get("resourceNames", [])))
                    names = tuple(re.sub(r"^aitb-", "<release>-", n) for n in names)
                    granted.add((group, resource, tuple(sorted(rule["verbs"])), names))
    assert granted == documented_cluster_rules()
    # the per-project role is never bound cluster-wide; no wildcard anywhere
    assert "aitb-project" not in bound
    for role in roles.values():
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]


def test_dockerfile_runs_the_wheel_as_non_root():
    text = (ROOT / "Dockerfile").read_text()
    user = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert "pip wheel" in text and "--no-index --find-links /wheels aitb" in text
    assert re.search(r"^FROM python:3\.11-slim\s*$", text, re.M)


def test_every_aitb_setting_the_chart_sets_exists():
    """Settings ignore unknown AITB_* variables, so a typo in the chart would pass silently."""
    from aitb.settings import Settings

    names = {e["name"] for d in by_kind(render(PRODUCTION), "Deployment").values()
             for c in d["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])
             if e["name"].startswith("AITB_")}
    assert len(names) >= 10
    for name in names:
        model, path = Settings, name.removeprefix("AITB_").lower().split("__")
        for part in path:
            assert part in model.model_fields, f"{name}: no setting {part!r}"
            model = model.model_fields[part].annotation


#: RBAC verbs as the HTTP methods the Kubernetes client sends for them
VERB_METHODS = {"get": "GET", "list": "GET", "watch": "GET", "create": "POST", "patch": "PATCH",
                "update": "PUT", "delete": "DELETE"}


def test_the_chart_grants_exactly_the_table_the_backend_is_checked_against():
    """tests/kube runs full job cycles (checkpoint volumes included) and checks every request
    against CHART_ALLOWS; this checks that table is the chart's rules (cluster-wide plus the
    project role), so the chart and the backend cannot drift apart."""
    from tests.kube.test_backend import CHART_ALLOWS

    roles = by_kind(render(PRODUCTION), "ClusterRole")
    granted: dict[str, set[str]] = {}
    for name in ("aitb-control-plane", "aitb-project"):
        for rule in roles[name]["rules"]:
            for resource in rule["resources"]:
                methods = {VERB_METHODS[v] for v in rule["verbs"] if v in VERB_METHODS}
                if methods:  # `bind` on the project role is no request the backend makes
                    granted.setdefault(resource.split("/")[0], set()).update(methods)
    assert granted == CHART_ALLOWS
    claims = [r for r in roles["aitb-project"]["rules"] if "persistentvolumeclaims" in r["resources"]]
    assert len(claims) == 1 and sorted(claims[0]["verbs"]) == ["create", "delete", "get", "list"]
    assert not any("persistentvolumeclaims" in r["resources"] for r in roles["aitb-control-plane"]["rules"]), \
        "checkpoint volumes are granted inside project namespaces only"
