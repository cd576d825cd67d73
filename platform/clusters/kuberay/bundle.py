"""The per-project bundle: what a project's namespace on a cluster holds besides its jobs.

Built by pure functions (golden-tested, schema-validated) and applied idempotently: each
object carries a hash of what aitb wants it to be, so a second apply with the same input
reads and writes nothing it does not have to, and a quota change rewrites only the
ResourceQuota. Everything carries the owner labels, so removing a project is one delete
of its namespace (found by label).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aitb.clusters.kuberay import names
from aitb.clusters.kuberay.manifests import (
    SUBMITTER_CPU_CORES,
    SUBMITTER_MEMORY_GIB,
    canonical,
    cpu_quantity,
    gpu_devices,
    memory_quantity,
)
from aitb.clusters.kuberay.options import ClusterOptions, EgressTarget

#: Ray's ports inside a job's cluster are many (GCS, raylet, object manager, workers, the
#: dashboard and its agent); in-namespace traffic is allowed on all of them.
DASHBOARD_PORT = 8265
PSS_LEVEL = "restricted"


@dataclass(frozen=True)
class ProjectSpec:
    project: str
    partner: str
    #: nominal + borrowing limit per resource at the cluster's node (None: no quota set)
    limits: Mapping[str, float] | None = field(default=None, hash=False)


def owner_labels(spec: ProjectSpec) -> dict[str, str]:
    return {names.MANAGED_BY: names.MANAGER, names.LABEL_MANAGED: "true",
            names.LABEL_PROJECT: spec.project, names.LABEL_PARTNER: spec.partner}


def _meta(name: str, spec: ProjectSpec, namespace: str | None, extra: dict[str, str] | None = None
          ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {**owner_labels(spec), **(extra or {})}}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def namespace_object(spec: ProjectSpec, namespace: str) -> dict[str, Any]:
    pss = {f"pod-security.kubernetes.io/{mode}": PSS_LEVEL for mode in ("enforce", "audit", "warn")}
    pss.update({f"pod-security.kubernetes.io/{mode}-version": "latest"
                for mode in ("enforce", "audit", "warn")})
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(namespace, spec, None, pss)}


def resource_quota(spec: ProjectSpec, namespace: str, opts: ClusterOptions) -> dict[str, Any] | None:
    """The project's quota at this node (nominal + borrowing limit), plus the KubeRay
    submitter pods' small fixed share for `submitters_per_project` running jobs.

    `gpu` maps to `requests.nvidia.com/gpu` (rounded up: Kubernetes counts whole units);
    per-type quotas (`gpu:<type>`) have no Kubernetes equivalent and stay aitb's to enforce.
    """
    if spec.limits is None:
        return None
    room = opts.submitters_per_project
    hard: dict[str, str] = {}
    if "cpu" in spec.limits:
        amount = cpu_quantity(spec.limits["cpu"] + room * SUBMITTER_CPU_CORES)
        hard["requests.cpu"] = hard["limits.cpu"] = amount
    if "memory_gib" in spec.limits:
        amount = memory_quantity(spec.limits["memory_gib"] + room * SUBMITTER_MEMORY_GIB)
        hard["requests.memory"] = hard["limits.memory"] = amount
    if "gpu" in spec.limits:
        hard[f"requests.{names.GPU_RESOURCE}"] = str(
            gpu_devices(math.ceil(round(spec.limits["gpu"], 6)), opts.gpu_slices)
            if spec.limits["gpu"] else 0)
    return {"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": _meta("aitb-quota", spec, namespace), "spec": {"hard": hard}}


def limit_range(spec: ProjectSpec, namespace: str) -> dict[str, Any]:
    """Defaults for any container that states no resources (aitb's always do)."""
    return {"apiVersion": "v1", "kind": "LimitRange", "metadata": _meta("aitb-defaults", spec, namespace),
            "spec": {"limits": [{"type": "Container",
                                 "default": {"cpu": "500m", "memory": "512Mi"},
                                 "defaultRequest": {"cpu": "500m", "memory": "512Mi"}}]}}


def service_account(spec: ProjectSpec, namespace: str) -> dict[str, Any]:
    """The identity job pods run as: bound to no Role, and its token is never mounted."""
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": _meta(names.RUNNER_SERVICE_ACCOUNT, spec, namespace),
            "automountServiceAccountToken": False}


def role_binding(spec: ProjectSpec, namespace: str, opts: ClusterOptions) -> dict[str, Any] | None:
    """Binds the control plane's project role inside this namespace only (the Helm chart's
    `<release>-project` ClusterRole): everything aitb does in a project namespace, it may
    do there alone."""
    role = opts.project_role
    if role is None:
        return None
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": _meta("aitb-control-plane", spec, namespace),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role.cluster_role},
            "subjects": [dict(s) for s in role.subjects]}


def _policy(name: str, spec: ProjectSpec, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _meta(name, spec, namespace), "spec": body}


def _egress_to(target: EgressTarget) -> list[dict[str, Any]]:
    peers = target.peers()
    return [{"to": peers, "ports": [{"protocol": "TCP", "port": target.port}]}] if peers else []


def network_policies(spec: ProjectSpec, namespace: str, opts: ClusterOptions) -> list[dict[str, Any]]:
    """Default deny both ways; then DNS, Ray inside the namespace, the operator reaching the
    dashboard, MLflow and the control plane; open egress only for pods not labelled
    `aitb.io/egress=denied` (jobs on confidential or sensitive data)."""
    everything: dict[str, Any] = {}
    same_namespace = [{"podSelector": {}}]
    policies = [
        _policy("aitb-default-deny", spec, namespace,
                {"podSelector": everything, "policyTypes": ["Ingress", "Egress"]}),
        _policy("aitb-allow-dns", spec, namespace, {
            "podSelector": everything, "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}),
        _policy("aitb-allow-ray", spec, namespace, {
            "podSelector": everything, "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": same_namespace}], "egress": [{"to": same_namespace}]}),
        _policy("aitb-allow-operator", spec, namespace, {
            "podSelector": {"matchLabels": {names.LABEL_COMPONENT: "head"}},
            "policyTypes": ["Ingress"],
            # the operator follows each job through its head's dashboard, and so may a
            # control plane running in this cluster (driver logs)
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": opts.operator_namespace}}},
                *([{"namespaceSelector": {"matchLabels": {
                    "kubernetes.io/metadata.name": opts.control_plane.namespace}}}]
                  if opts.control_plane.namespace else [])],
                "ports": [{"protocol": "TCP", "port": DASHBOARD_PORT}]}]}),
    ]
    platform = _egress_to(opts.mlflow) + _egress_to(opts.control_plane)
    if platform:
        policies.append(_policy("aitb-allow-platform", spec, namespace, {
            "podSelector": everything, "policyTypes": ["Egress"], "egress": platform}))
    policies.append(_policy("aitb-allow-internet", spec, namespace, {
        "podSelector": {"matchExpressions": [{"key": names.LABEL_EGRESS, "operator": "NotIn",
                                              "values": [names.EGRESS_DENIED]}]},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]}]}))
    return policies


def project_bundle(spec: ProjectSpec, opts: ClusterOptions) -> list[dict[str, Any]]:
    """Every object of a project's namespace, the Namespace first; each with its spec hash."""
    namespace = names.project_namespace(spec.project, opts.namespace)
    objects = [namespace_object(spec, namespace)]
    binding = role_binding(spec, namespace, opts)
    if binding is not None:  # before anything else in the namespace: it grants the rest
        objects.append(binding)
    objects += [service_account(spec, namespace), limit_range(spec, namespace)]
    quota = resource_quota(spec, namespace, opts)
    if quota is not None:
        objects.append(quota)
    objects += network_policies(spec, namespace, opts)
    for obj in objects:
        obj["metadata"].setdefault("annotations", {})[names.ANNOTATION_SPEC_HASH] = spec_hash(obj)
    return objects


def spec_hash(obj: Mapping[str, Any]) -> str:
    """Hash of an object as aitb writes it (without the hash annotation itself)."""
    meta = {k: v for k, v in obj["metadata"].items() if k != "annotations"}
    annotations = {k: v for k, v in obj["metadata"].get("annotations", {}).items()
                   if k != names.ANNOTATION_SPEC_HASH}
    body = {**obj, "metadata": {**meta, "annotations": annotations}}
    return hashlib.sha256(canonical(body).encode()).hexdigest()[:16]
