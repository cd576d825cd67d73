"""The package layout the brief asks for: `platform/` installs as `aitb` without shadowing the
standard library's `platform`, and a built wheel carries every sub-package and data file."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_stdlib_platform_is_not_shadowed_in_the_repo_root():
    code = "import platform, sys; assert platform.__file__.startswith(sys.base_prefix), platform.__file__"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_wheel_contains_every_package_and_the_shipped_testbeds(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True,
    )
    wheel = next(tmp_path.glob("aitb-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "platform/__init__.py" not in names and "aitb/__init__.py" not in names
    # every directory with Python modules in the source tree is in the wheel
    for source_root, package in ((REPO / "platform", "aitb"), (REPO / "cli", "aitb/cli")):
        for module in source_root.rglob("*.py"):
            if "__pycache__" in module.parts:
                continue
            rel = module.relative_to(source_root).as_posix()
            assert f"{package}/{rel}" in names, f"{package}/{rel} missing from the wheel"
    for data in ("aitb/testbeds/local.yaml", "aitb/testbeds/sweden.yaml",
                 "aitb/testbeds/examples/train_cpu/train.py", "aitb/store/migrations/script.py.mako",
                 "aitb/governance/baseline.cedar", "aitb/governance/schema.cedarschema"):
        assert data in names, data
