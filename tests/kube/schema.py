"""Validation of Kubernetes objects the way an API server does it.

KubeRay kinds against the openAPIV3Schema of the CRDs in `shared/schemas/kuberay/`
(jsonschema for types and enums, plus the structural-schema rule that a field the schema
does not declare is unknown: rejected under `fieldValidation=Strict`); built-in kinds with
`kubernetes-validate` in strict mode (additional properties refused).
"""

from __future__ import annotations

import os
import pickle
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[2]
KUBERNETES_VERSION = "1.33"
CRD_FILES = {"RayJob": "ray.io_rayjobs.yaml", "RayCluster": "ray.io_rayclusters.yaml"}
OBJECT_META = {
    "name", "generateName", "namespace", "labels", "annotations", "uid", "resourceVersion",
    "generation", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
    "ownerReferences", "finalizers", "managedFields", "selfLink",
}


class SchemaInvalid(ValueError):
    """The object breaks its schema (a type, an enum, a required field)."""


class UnknownFields(ValueError):
    """The object has fields its schema does not declare."""

    def __init__(self, paths: list[str]):
        super().__init__("unknown field(s): " + ", ".join(paths))
        self.paths = paths


def schema_dir() -> Path | None:
    candidates = [os.environ.get("AITB_KUBERAY_SCHEMAS", ""), str(REPO.parent / "shared/schemas/kuberay"),
                  "/work/shared/schemas/kuberay"]
    for candidate in candidates:
        if candidate and (Path(candidate) / CRD_FILES["RayJob"]).exists():
            return Path(candidate)
    return None


@lru_cache(maxsize=4)
def crd_schema(kind: str) -> dict[str, Any]:
    directory = schema_dir()
    if directory is None:
        raise FileNotFoundError("KubeRay CRD schemas not found (set AITB_KUBERAY_SCHEMAS)")
    source = directory / CRD_FILES[kind]
    cache = Path(os.environ.get("TMPDIR", "/tmp")) / f"aitb-crd-{kind}-{source.stat().st_mtime_ns}.pickle"
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    crd = yaml.load(source.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = version["schema"]["openAPIV3Schema"]
    try:
        cache.write_bytes(pickle.dumps(schema))
    except OSError:
        pass
    return schema


@lru_cache(maxsize=4)
def _validator(kind: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(crd_schema(kind))


def unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Paths of fields the structural schema does not declare (what pruning would drop)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    out: list[str] = []
    if isinstance(obj, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if path.endswith("metadata") and props is None:
            return [f"{path}.{k}" for k in obj if k not in OBJECT_META]
        for key, value in obj.items():
            here = f"{path}.{key}" if path else key
            if props is not None and key in props:
                out += unknown_fields(value, props[key], here)
            elif isinstance(extra, dict):
                out += unknown_fields(value, extra, here)
            elif props is not None or extra is False:
                out.append(here)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(obj):
            out += unknown_fields(item, schema["items"], f"{path}[{index}]")
    return out


def validate(obj: dict[str, Any], strict: bool = True) -> None:
    """Raise SchemaInvalid / UnknownFields when `obj` would not pass the API server."""
    kind = obj.get("kind")
    if kind in CRD_FILES:
        errors = sorted(_validator(kind).iter_errors(obj), key=lambda e: list(e.path))
        if errors:
            first = errors[0]
            where = ".".join(str(p) for p in first.path) or "(top)"
            raise SchemaInvalid(f"{kind} {where}: {first.message}")
        if strict:
            unknown = unknown_fields(obj, crd_schema(kind))
            if unknown:
                raise UnknownFields(unknown)
        return
    errors = sorted(_builtin_validator(obj["apiVersion"], kind, strict).iter_errors(obj),
                    key=lambda e: list(e.path))
    if errors:
        message = errors[0].message
        if "Additional properties" in message:
            raise UnknownFields([message])
        where = ".".join(str(p) for p in errors[0].path) or "(top)"
        raise SchemaInvalid(f"{kind} {where}: {message}")


@lru_cache(maxsize=64)
def _builtin_validator(api_version: str, kind: str, strict: bool) -> jsonschema.Draft202012Validator:
    """kubernetes-validate's schema for a built-in kind, loaded once (its `validate` reloads
    the schema files on every call, ~15 ms)."""
    import re

    from kubernetes_validate import utils
    from referencing import Registry, Resource

    version = [v for v in utils.all_versions()
               if utils.major_minor(v) <= utils.major_minor(KUBERNETES_VERSION)][-1]
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    directory = f"v{version}-local" + ("-strict" if strict else "")
    schema = utils.schema_contents(f"kubernetes-json-schema/{directory}/{kind.lower()}-{group}.json",
                                   KUBERNETES_VERSION)
    definitions = utils.schema_contents(f"kubernetes-json-schema/{directory}/_definitions.json",
                                        KUBERNETES_VERSION)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)
