"""Names and labels every object aitb creates on a Kubernetes cluster carries.

One place for the vocabulary, so the manifests, the watch's label selector, the bundle and
the clean-up of a removed project agree on it.
"""

from __future__ import annotations

import hashlib
import re

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "aitb"
PREFIX = "aitb.io/"
LABEL_JOB = PREFIX + "job"
LABEL_ATTEMPT = PREFIX + "attempt"
LABEL_PROJECT = PREFIX + "project"
LABEL_PARTNER = PREFIX + "partner"
LABEL_POOL = PREFIX + "pool"
LABEL_COMPONENT = PREFIX + "component"
#: pods of jobs that must not reach the internet carry `aitb.io/egress: denied`; the
#: project's NetworkPolicies allow wider egress only to pods without it
LABEL_EGRESS = PREFIX + "egress"
EGRESS_DENIED = "denied"
ANNOTATION_CLUSTER = PREFIX + "cluster"
ANNOTATION_NODE = PREFIX + "node"
ANNOTATION_ATTEMPT_NUMBER = PREFIX + "attempt-number"
#: a hash of what aitb wants an object to be; the bundle skips writes when it matches
ANNOTATION_SPEC_HASH = PREFIX + "spec-hash"

#: node labels and taints a pool's hosts carry (docs/kubernetes.md, "Pools and nodes")
NODE_LABEL_PREFIX = PREFIX
SECURE_TAINT_KEY = PREFIX + "secure"
GPU_RESOURCE = "nvidia.com/gpu"

#: every object aitb manages carries `aitb.io/managed=true` (the Helm chart's admission
#: policy lets the control plane touch only namespaces labelled so)
LABEL_MANAGED = PREFIX + "managed"
#: the label selector of everything aitb manages on a cluster
MANAGED_SELECTOR = f"{LABEL_MANAGED}=true"

RUNNER_SERVICE_ACCOUNT = "aitb-runner"
DEFAULT_NAMESPACE_PREFIX = "aitb"

_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def dns_label(text: str, limit: int = 63) -> str:
    """`text` as an RFC 1123 label: lowercase alphanumerics and '-', at most `limit`
    characters; a too-long or altered name gets a short hash so two names never collide."""
    clean = _NOT_DNS.sub("-", text.lower()).strip("-") or "x"
    if clean == text and len(clean) <= limit:
        return clean
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{clean[: limit - 9].rstrip('-')}-{digest}"


def project_namespace(project: str, prefix: str = DEFAULT_NAMESPACE_PREFIX) -> str:
    """The namespace of a project on a cluster: `<prefix>-<project>`."""
    return dns_label(f"{prefix}-{project}")


def rayjob_name(attempt_id: str) -> str:
    """The RayJob of an attempt is named after the attempt id (`<job>` or `<job>-<n>`)."""
    return dns_label(attempt_id, limit=47)  # KubeRay appends suffixes to derived names


def env_secret_name(attempt_id: str) -> str:
    return f"{rayjob_name(attempt_id)}-env"


def checkpoint_claim_name(job_id: str) -> str:
    """The job's checkpoint PersistentVolumeClaim: named after the job, not the attempt, so
    every attempt of the job (retries, re-admissions after preemption) mounts the same one."""
    return f"{rayjob_name(job_id)}-checkpoints"
