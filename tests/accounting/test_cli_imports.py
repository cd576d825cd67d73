"""The accounting CLI starts fast and stays client-side: no matplotlib until a plot is
drawn, no server-side module ever."""

from __future__ import annotations

import subprocess
import sys


def test_accounting_commands_import_no_plotting_and_no_server_code() -> None:
    code = (
        "import sys\n"
        "from aitb.cli.main import main\n"
        "import aitb.cli.commands.accounting, aitb.cli.report.html\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'numpy', 'sqlalchemy',"
        " 'fastapi', 'pydantic') or m.startswith(('aitb.store', 'aitb.services', 'aitb.api', 'aitb.domain',"
        " 'aitb.control')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_month_range_and_csv_rows() -> None:
    from aitb.cli.commands.accounting import capacity_rows, fairshare_rows, month_range

    assert month_range("2026-12") == ("2026-12-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00")
    share = {"partners": [{"partner": "volvo", "weight": 2, "entitlement": 0.5, "dominant_share": 0.1,
                           "usage": {"gpu_hours": 3.0, "cpu_hours": 1.0}, "usage_share": 0.25,
                           "fairshare_factor": 0.7, "projects": [
                               {"project": "p", "entitlement": 0.5, "dominant_share": 0.1,
                                "usage": {"gpu_hours": 3.0}, "usage_share": 0.25, "fairshare_factor": 0.7}]}]}
    assert [(r["partner"], r["project"], r["weight"]) for r in fairshare_rows(share)] == [
        ("volvo", None, 2), ("volvo", "p", None)]
    cap = {"nodes": [{"node": "lund", "pending": {"jobs": 2}, "clusters": [{"cluster": "c", "pools": [
        {"pool": "gpu", "gpu_type": "a100", "hosts": 1, "utilisation": 0.5,
         "capacity": {"gpu": 4}, "allocated": {"gpu": 2}, "idle": {"gpu": 2}}]}]}]}
    assert capacity_rows(cap) == [{"node": "lund", "cluster": "c", "pool": "gpu", "gpu_type": "a100", "hosts": 1,
                                   "utilisation": 0.5, "pending_jobs": 2, "gpu_capacity": 4, "gpu_allocated": 2,
                                   "gpu_idle": 2}]
