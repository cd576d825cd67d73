"""A private PostgreSQL server for fault tests: its own data directory and free port, started and
stopped with pg_ctl as the `postgres` OS user — never the machine's shared server."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.processes import free_port


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@dataclass
class PrivatePostgres:
    data: Path
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/aitb"

    def _ctl(self, *args: str) -> None:
        subprocess.run(_as_postgres([_bin("pg_ctl") or "pg_ctl", "-D", str(self.data), *args]),
                       check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._ctl("-l", str(self.log), "-o", f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1",
                  "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@pytest.fixture
def private_pg():
    initdb = _bin("initdb")
    if initdb is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not installed")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("runuser missing: cannot start PostgreSQL as the postgres user")
    root = Path(tempfile.mkdtemp(prefix="aitb-pg-"))
    os.chmod(root, 0o777)
    pg = PrivatePostgres(data=root / "data", port=free_port(), log=root / "pg.log")
    made = subprocess.run(_as_postgres([initdb, "-D", str(pg.data), "-A", "trust", "-U", "postgres"]),
                          capture_output=True, text=True, timeout=120)
    if made.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"initdb failed: {made.stderr.strip()[:300]}")
    pg.start()
    subprocess.run(_as_postgres([_bin("createdb") or "createdb", "-h", "127.0.0.1", "-p", str(pg.port),
                                 "-U", "postgres", "aitb"]), check=True, capture_output=True, timeout=60)
    try:
        yield pg
    finally:
        if pg.running():
            try:
                pg.stop("immediate")
            except subprocess.SubprocessError:
                pass
        time.sleep(0.2)
        shutil.rmtree(root, ignore_errors=True)
