"""The layering rules of docs/architecture.md, checked on the source: every import statement
(top-level or inside a function) of every module, read with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IO_LAYERS = ("aitb.store", "aitb.api", "aitb.control", "aitb.clusters", "aitb.tracking", "aitb.local",
             "aitb.services", "aitb.settings", "aitb.osutil")
IO_LIBRARIES = ("sqlalchemy", "fastapi", "starlette", "httpx", "ray", "mlflow", "requests", "kubernetes",
                "subprocess", "socket")
SERVER_SIDE = ("aitb.api", "aitb.services", "aitb.store", "aitb.control", "aitb.clusters", "aitb.tracking")
CONTROL_INTERNALS = ("aitb.control",)
#: the one place the API starts a control plane (by import inside the app's lifespan)
CONTROL_WIRING = {("platform/api/app.py", "aitb.control.plane")}


def _module_of(path: Path) -> str:
    rel = path.relative_to(REPO)
    if rel.parts[0] == "cli":
        return ".".join(("aitb", *rel.with_suffix("").parts))
    return ".".join(("aitb", *rel.relative_to("platform").with_suffix("").parts))


def imports(path: Path, module: str | None = None) -> list[str]:
    """Every module ``path`` (the module ``module``) imports, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    module = module or _module_of(path)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                found.append(f"{base}.{node.module}" if node.module else base)
            else:
                found.append(node.module or "")
    return found


def _sources(*roots: str) -> list[Path]:
    return sorted(p for root in roots for p in (REPO / root).rglob("*.py") if "__pycache__" not in p.parts)


def _violations(paths: list[Path], banned: tuple[str, ...], allowed: set[tuple[str, str]] = frozenset()):
    out = []
    for path in paths:
        rel = path.relative_to(REPO).as_posix()
        for name in imports(path):
            if any(name == b or name.startswith(b + ".") for b in banned) and (rel, name) not in allowed:
                out.append(f"{rel} imports {name}")
    return out


def test_domain_and_scheduler_do_no_io():
    paths = _sources("platform/domain", "platform/scheduler")
    assert len(paths) > 10
    assert _violations(paths, IO_LAYERS + IO_LIBRARIES) == []


def test_the_api_does_not_reach_into_the_control_plane():
    assert _violations(_sources("platform/api"), CONTROL_INTERNALS, CONTROL_WIRING) == []


def test_services_and_store_do_not_import_the_api_or_the_control_plane():
    paths = _sources("platform/services", "platform/store")
    assert _violations(paths, ("aitb.api", "aitb.control")) == []


def test_services_control_and_api_read_tables_only_through_repositories():
    """Issue 7: rows stay in `aitb.store`; the layers above get domain models from its repositories."""
    paths = _sources("platform/services", "platform/control", "platform/api")
    assert len(paths) > 20
    assert _violations(paths, ("aitb.store.tables",)) == []


def test_the_cli_imports_nothing_of_the_server_side():
    paths = _sources("cli")
    assert len(paths) > 10
    assert _violations(paths, SERVER_SIDE + ("sqlalchemy", "fastapi", "ray")) == []


@pytest.mark.parametrize(("source", "seen"), [
    ("from aitb.store import jobs\n", "aitb.store"),
    ("def f():\n    import sqlalchemy.orm\n", "sqlalchemy.orm"),
    ("from ..store.jobs import get_job\n", "aitb.store.jobs"),
    ("from ..store.tables import JobRow\n", "aitb.store.tables"),
    ("from . import lifecycle\n", "aitb.domain"),
])
def test_the_checker_sees_each_kind_of_import(tmp_path, source, seen):
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    assert seen in imports(probe, module="aitb.domain.probe")
