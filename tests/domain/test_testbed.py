"""Testbed files: the shipped ones load; broken ones name the file, the place and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from aitb.domain.testbed import TestbedError, load_testbed
from aitb.settings import resolve_testbed_path

REPO = Path(__file__).resolve().parents[2]


def test_shipped_testbeds_load():
    local = load_testbed(REPO / "testbeds/local.yaml")
    assert [n.name for n in local.nodes] == ["stockholm", "goteborg"]
    sweden = load_testbed(REPO / "testbeds/sweden.yaml")
    assert {n.name for n in sweden.nodes} == {"stockholm", "goteborg", "orebro", "lund", "lulea", "linkoping"}
    assert any(p.secure for _, c in sweden.clusters() for p in c.pools)


def test_default_testbed_is_found_outside_the_repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = resolve_testbed_path("testbeds/local.yaml")
    assert path.is_file() and load_testbed(path).federation == "local"


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("federation: x\nnodes: [}", ["line 2", "invalid YAML"]),
        ("- just a list", ["expected a mapping"]),
        ("federation: x\nnodes:\n  - name: Stockholm\n    clusters: []\n",
         ["nodes[0](Stockholm).name", "pattern"]),
        ("federation: x\nnodes:\n  - name: lund\n    clusters:\n      - name: c1\n        backend: slurm\n"
         "        pools: [{name: p, hosts: 1, cpu: 1, memory_gib: 1}]\n",
         ["nodes[0](lund).clusters[0](c1).backend", "'kuberay', 'ray' or 'sim'"]),
        ("federation: x\nnodes:\n  - name: lund\n    clusters:\n      - name: c1\n        backend: ray\n"
         "        pools: [{name: p, hosts: 1, cpu: 1, memory_gib: 1, gpus: 2}]\n",
         ["pools[0](p)", "gpu_type is required"]),
        ("federation: x\nnodes:\n  - name: lund\n    clusters:\n      - name: c1\n        backend: ray\n"
         "        pools: [{name: p, hosts: 1, cpu: 1, memory_gib: 1, colour: red}]\n",
         ["pools[0](p).colour", "Extra inputs"]),
        ("federation: x\nnodes:\n  - name: lund\n    clusters: [{name: c1, backend: sim, pools: [{name: p, hosts: 1, cpu: 1, memory_gib: 1}]}]\n"
         "  - name: lund\n    clusters: [{name: c2, backend: sim, pools: [{name: p, hosts: 1, cpu: 1, memory_gib: 1}]}]\n",
         ["duplicate node name 'lund'"]),
    ],
)
def test_invalid_testbeds_are_explained(tmp_path, text, fragments):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TestbedError) as err:
        load_testbed(path)
    message = str(err.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
