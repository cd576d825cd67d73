"""The audit chain on SQLite and PostgreSQL: tampering (change, delete, reorder one row) is found by
the server's verify, by `aitb admin audit verify`, and by the standalone script of docs/audit.md run
on an export; concurrent writers never fork the chain."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text, update

from aitb.cli.auditfile import verify_lines
from aitb.cli.main import main as cli
from aitb.store import audit
from aitb.store.db import Database
from aitb.store.tables import AuditRow
from tests.support.api import start_api_server
from tests.support.processes import REPO, aitb_command, stop_process

DOC = REPO / "docs" / "audit.md"


def doc_script(tmp_path: Path) -> Path:
    """The verifier exactly as docs/audit.md prints it."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1
    assert len(blocks[0].strip().splitlines()) <= 20, "the doc promises a script of at most 20 lines"
    path = tmp_path / "verify_audit.py"
    path.write_text(blocks[0])
    return path


def run_doc_script(tmp_path: Path, export: Path) -> subprocess.CompletedProcess:
    # -I -S: no site-packages, no aitb: the script needs Python alone
    return subprocess.run([sys.executable, "-I", "-S", str(doc_script(tmp_path)), str(export)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def db(database_url):
    database = Database(database_url)
    yield database
    database.dispose()


def fill(db: Database, n: int = 6) -> None:
    for i in range(n):
        with db.session() as s:
            audit.append(s, "admin", "grant.set" if i % 2 else "quota.set", f"thing/{i}",
                         {"i": i, "nested": {"b": [1, 2], "a": "å"}}, partner="p")


def export(db: Database, path: Path) -> Path:
    with db.session() as s:
        path.write_text("".join(audit.export_lines(s)))
    return path


def reorder(s, a: int, b: int) -> None:
    s.execute(update(AuditRow).where(AuditRow.seq == a).values(seq=-1))
    s.execute(update(AuditRow).where(AuditRow.seq == b).values(seq=a))
    s.execute(update(AuditRow).where(AuditRow.seq == -1).values(seq=b))


TAMPER = {
    "change": (lambda s: s.execute(update(AuditRow).where(AuditRow.seq == 3).values(detail={"i": 99})), 3),
    "change-actor": (lambda s: s.execute(update(AuditRow).where(AuditRow.seq == 4).values(actor="mallory")), 4),
    "delete": (lambda s: s.execute(text("DELETE FROM audit_log WHERE seq = 3")), 4),
    "reorder": (lambda s: reorder(s, 2, 3), 2),
    "relink": (lambda s: s.execute(
        update(AuditRow).where(AuditRow.seq == 5).values(prev_hash="f" * 64)), 5),
}


def test_an_untouched_chain_verifies_everywhere(db, tmp_path):
    fill(db)
    with db.session() as s:
        assert audit.verify(s).ok
    path = export(db, tmp_path / "audit.jsonl")
    lines = path.read_text().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == [1, 2, 3, 4, 5, 6]
    assert all({"input_digest", "result", "policy_version"} <= set(json.loads(x)["detail"]) for x in lines)
    done = run_doc_script(tmp_path, path)
    assert done.returncode == 0, done.stderr
    assert "6 entries" in done.stdout
    assert verify_lines(lines).ok


@pytest.mark.parametrize("kind", list(TAMPER))
def test_tampering_is_found_and_the_first_broken_entry_named(db, tmp_path, kind):
    fill(db)
    tamper, first_bad = TAMPER[kind]
    with db.session() as s:
        tamper(s)
    with db.session() as s:
        server = audit.verify(s)
    assert not server.ok and server.first_bad_seq == first_bad, server
    path = export(db, tmp_path / "audit.jsonl")
    offline = verify_lines(path.read_text().splitlines())
    assert not offline.ok and offline.first_bad_seq == first_bad, offline
    done = run_doc_script(tmp_path, path)
    assert done.returncode != 0 and f"entry {first_bad}:" in done.stderr, done.stderr
    result = CliRunner().invoke(cli, ["admin", "audit", "verify", "--file", str(path)])
    assert result.exit_code != 0 and f"broken at entry {first_bad}" in result.output


@pytest.mark.postgres
def test_parallel_writers_on_postgresql_never_fork_the_chain(pg_database_url):
    db = Database(pg_database_url)
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def writer(w: int) -> None:
        try:
            start.wait()
            for i in range(25):
                with db.session() as s:
                    audit.append(s, f"writer{w}", "quota.set", f"quota/{w}/{i}", {"w": w, "i": i})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        with db.session() as s:
            result = audit.verify(s)
            seqs = [r.seq for r in s.query(AuditRow).order_by(AuditRow.seq)]
        assert result.ok and result.entries == 200
        assert seqs == list(range(1, 201))
    finally:
        db.dispose()


def test_cli_verify_through_the_server_names_the_broken_entry(tmp_path):
    server = start_api_server(tmp_path)
    try:
        env = server.env
        with server.client() as c:
            for i in range(4):
                c.post("/v1/partners", json={"name": f"p{i}"}).raise_for_status()
        ok = subprocess.run([*_aitb(), "admin", "audit", "verify"], env=env, capture_output=True, text=True)
        assert ok.returncode == 0 and "intact" in ok.stdout
        exported = subprocess.run([*_aitb(), "admin", "audit", "export", "-f", str(tmp_path / "a.jsonl")],
                                  env=env, capture_output=True, text=True)
        assert exported.returncode == 0, exported.stderr
        assert run_doc_script(tmp_path, tmp_path / "a.jsonl").returncode == 0
        db = Database(f"sqlite:///{tmp_path / 'aitb.db'}", migrate=False)
        with db.session() as s:
            s.execute(update(AuditRow).where(AuditRow.seq == 3).values(target="partner/someone-else"))
        db.dispose()
        broken = subprocess.run([*_aitb(), "admin", "audit", "verify"], env=env, capture_output=True, text=True)
        assert broken.returncode != 0 and "broken at entry 3" in broken.stderr + broken.stdout
    finally:
        stop_process(server.process)


def _aitb() -> list[str]:
    return aitb_command()
