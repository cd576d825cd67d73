"""The data directory's disk fills up during a package upload: a clear 507, and no half-written
package — neither a file nor a row — left behind. The packages directory is a 1 MiB tmpfs
(needs permission to mount; skipped otherwise)."""

from __future__ import annotations

import io
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.support.api import start_api_server
from tests.support.processes import stop_process


def zip_of(size: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("train.py", "print('hi')\n")
        zf.writestr("weights.bin", os.urandom(size))
    return buf.getvalue()


@pytest.fixture
def small_disk(tmp_path: Path):
    packages = tmp_path / "data" / "packages"
    packages.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(packages)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield tmp_path / "data"
    finally:
        subprocess.run(["umount", "-l", str(packages)], check=False)


def test_full_disk_is_a_507_and_leaves_nothing(small_disk: Path):
    server = start_api_server(small_disk)
    try:
        big, small = zip_of(2 * 1024 * 1024), zip_of(10 * 1024)
        with server.client() as c:
            r = c.post("/v1/packages", content=big, headers={"Content-Type": "application/zip"})
            assert r.status_code == 507, r.text
            assert "disk is full" in r.json()["detail"]
            assert list((small_disk / "packages").iterdir()) == []  # no .tmp, no .zip
            import hashlib

            digest = "sha256:" + hashlib.sha256(big).hexdigest()
            assert c.head(f"/v1/packages/{digest}").status_code == 404
            # the server keeps working, and what fits is stored
            ok = c.post("/v1/packages", content=small, headers={"Content-Type": "application/zip"})
            assert ok.status_code == 201, ok.text
            assert c.head(f"/v1/packages/{ok.json()['digest']}").status_code == 200
    finally:
        stop_process(server.process)
