"""A thin typed layer over the official `kubernetes` client: one code path for every kind
aitb writes (its ApiClient does config, auth, TLS and the HTTP), JSON dicts in and out,
and failures sorted into "the cluster is unreachable" and "the cluster said no"."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aitb.clusters.base import BackendUnavailable


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)
SECRETS = Resource("", "v1", "secrets")
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts")
RESOURCE_QUOTAS = Resource("", "v1", "resourcequotas")
LIMIT_RANGES = Resource("", "v1", "limitranges")
PODS = Resource("", "v1", "pods")
PVCS = Resource("", "v1", "persistentvolumeclaims")
SERVICES = Resource("", "v1", "services")
NETWORK_POLICIES = Resource("networking.k8s.io", "v1", "networkpolicies")
ROLE_BINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings")
RAYJOBS = Resource("ray.io", "v1", "rayjobs")

BY_KIND = {
    "Namespace": NAMESPACES, "Secret": SECRETS, "ServiceAccount": SERVICE_ACCOUNTS,
    "ResourceQuota": RESOURCE_QUOTAS, "LimitRange": LIMIT_RANGES, "Pod": PODS, "Service": SERVICES,
    "PersistentVolumeClaim": PVCS,
    "NetworkPolicy": NETWORK_POLICIES, "RoleBinding": ROLE_BINDINGS, "RayJob": RAYJOBS,
}


class KubeError(Exception):
    """The API server answered with an error status (4xx)."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


class Kube:
    """One cluster's API, reached through a `kubernetes.client.ApiClient`."""

    def __init__(self, api_client: Any, name: str = "", timeout_s: float = 10.0):
        self.client = api_client
        self.name = name
        self.timeout_s = timeout_s

    @classmethod
    def connect(cls, context: str | None, name: str = "", timeout_s: float = 10.0,
                config_file: str | None = None) -> Kube:
        """A client for a kubeconfig context, or the in-cluster service account when no
        context is given or no kubeconfig exists inside a pod (the control plane running in
        the cluster it drives, as the Helm chart does without `kubernetes.kubeconfigSecret`)."""
        import os

        from kubernetes import client, config

        kubeconfig = config_file or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        in_pod = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        try:
            if context is None or (in_pod and not os.path.exists(kubeconfig.split(os.pathsep)[0])):
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                api_client = client.ApiClient(configuration)
            else:
                api_client = config.new_client_from_config(config_file=config_file, context=context)
        except Exception as exc:  # no such context, unreadable kubeconfig, not in a cluster
            raise BackendUnavailable(f"cluster {name}: cannot configure a Kubernetes client: {exc}") from exc
        return cls(api_client, name, timeout_s)

    # -- the one request path --------------------------------------------------------------------
    def request(self, method: str, path: str, query: dict[str, Any] | None = None,
                body: Any = None, content_type: str = "application/json", raw: bool = False) -> Any:
        from kubernetes.client.exceptions import ApiException

        query_params = [(k, v) for k, v in (query or {}).items() if v is not None]
        headers = {"Accept": "application/json" if not raw else "*/*"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            params = self.client.param_serialize(
                method=method, resource_path=path, query_params=query_params, header_params=headers,
                body=body, auth_settings=["BearerToken"])
            response = self.client.call_api(*params, _request_timeout=self.timeout_s)
            data = response.read()
        except ApiException as exc:
            raise self._error(exc.status or 0, exc.reason or "", exc.body) from exc
        except Exception as exc:  # connection refused, DNS, TLS, timeouts
            raise BackendUnavailable(f"cluster {self.name}: {method} {path}: {exc}") from exc
        if not 200 <= response.status < 300:
            raise self._error(response.status, response.reason or "", data)
        if raw:
            return data.decode(errors="replace") if isinstance(data, bytes) else str(data)
        return json.loads(data) if data else None

    def _error(self, status: int, reason: str, body: Any) -> Exception:
        message = ""
        try:
            message = json.loads(body).get("message", "")
        except Exception:
            message = (body.decode(errors="replace") if isinstance(body, bytes) else str(body or ""))[:300]
        if status == 0 or status >= 500 or status == 429:
            return BackendUnavailable(f"cluster {self.name}: {status} {reason}: {message}")
        if status in (401, 403):  # misconfigured credentials: not the job's fault, keep retrying
            return BackendUnavailable(f"cluster {self.name}: {status} {reason}: {message}")
        return KubeError(status, reason, message)

    # -- verbs -----------------------------------------------------------------------------------
    def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", res.path(namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, res: Resource, namespace: str | None = None, selector: str | None = None
             ) -> dict[str, Any]:
        return self.request("GET", res.path(namespace), {"labelSelector": selector})

    def create(self, res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", res.path(obj["metadata"].get("namespace")),
                            {"fieldValidation": "Strict"}, obj)

    def replace(self, res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return self.request("PUT", res.path(meta.get("namespace"), meta["name"]),
                            {"fieldValidation": "Strict"}, obj)

    def merge_patch(self, res: Resource, namespace: str | None, name: str, patch: dict[str, Any]
                    ) -> dict[str, Any]:
        return self.request("PATCH", res.path(namespace, name), {"fieldValidation": "Strict"}, patch,
                            content_type="application/merge-patch+json")

    def delete(self, res: Resource, namespace: str | None, name: str) -> bool:
        """True when the object existed; dependents go with it (background propagation)."""
        try:
            self.request("DELETE", res.path(namespace, name), {"propagationPolicy": "Background"})
            return True
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise

    def pod_log(self, namespace: str, pod: str, tail_lines: int | None = None) -> str:
        return self.request("GET", PODS.path(namespace, pod, "log"), {"tailLines": tail_lines}, raw=True)

    def service_proxy(self, namespace: str, service: str, port: str | int, path: str) -> Any:
        return self.request("GET", f"{SERVICES.path(namespace, f'{service}:{port}', 'proxy')}/{path}")

    def watch(self, res: Resource, selector: str, resource_version: str, timeout_s: int
              ) -> Iterator[dict[str, Any]]:
        """Events of `res` in every namespace after `resource_version`, for `timeout_s`.

        Raises KubeError(410) when that version is too old (relist), BackendUnavailable when
        the stream fails; ends normally when the server closes it (resume from the last
        version seen).
        """
        from kubernetes import client, watch
        from kubernetes.client.exceptions import ApiException

        api = client.CustomObjectsApi(self.client)
        stream = watch.Watch()
        try:
            yield from stream.stream(
                api.list_cluster_custom_object, res.group, res.version, res.plural,
                label_selector=selector, resource_version=resource_version, timeout_seconds=timeout_s,
                allow_watch_bookmarks=True, _request_timeout=(self.timeout_s, timeout_s + 30))
        except ApiException as exc:
            raise self._error(exc.status or 0, exc.reason or "", exc.body or json.dumps(
                {"message": exc.reason})) from exc
        except Exception as exc:
            raise BackendUnavailable(f"cluster {self.name}: watch {res.plural}: {exc}") from exc
        finally:
            stream.stop()
