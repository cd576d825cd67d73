"""CPU time of one governance decision with and without the baseline's tenancy rules for plain
Ray (docs/governance.md): 6 nodes x 5 `ray` clusters (one shared_trusted, four owned by one
partner each) x 4 pools; 300 jobs of distinct priority, so the decision cache never answers.

    .venv/bin/python bench/governance_tenancy.py with|without

CPU time (process_time), so a busy machine changes the figures little."""
import sys
import time
from datetime import UTC, datetime

from aitb.domain.models import Classification
from aitb.domain.testbed import parse_testbed
from aitb.governance import DatasetFacts, JobFacts, candidates_of, policies
from aitb.governance import engine as eng

strip = sys.argv[1:] == ["without"]
if strip:
    text = policies.baseline_text()
    cut = text.index("// Tenancy of plain Ray")
    policies.baseline_text.cache_clear(); policies.baseline.cache_clear()
    policies.baseline_text = lambda: text[:cut]
pools = [{"name": f"p{i}", "hosts": 2, "cpu": 8, "memory_gib": 16, **({"labels": {"secure": True}} if i % 2 else {})} for i in range(4)]
nodes = []
for n in range(6):
    nodes.append({"name": f"n{n}", "clusters": [
        {"name": f"c{n}-{k}", "backend": "ray", "connection": ({"partners": [f"pa{k}"]} if k else {"shared_trusted": True}), "pools": pools}
        for k in range(5)]})
fed = parse_testbed({"federation": "b", "nodes": nodes})
cands = candidates_of(fed)
e = eng.PolicyEngine()
assert e.cacheable
now = datetime.now(UTC)
jobs = [JobFacts(f"proj{i%7}", f"pa{i%5}", "u", now, (DatasetFacts(f"d{i%3}", f"pa{i%5}", list(Classification)[i % 4]),), job_id=str(i), priority=i)  # priority varies: no cache hits
        for i in range(300)]
e.decide(jobs[0], cands)
t = time.process_time()
for j in jobs: e.decide(j, cands)
print("without" if strip else "with", len(cands), "candidates:", round((time.process_time() - t) / len(jobs) * 1000, 2), "ms CPU per decision")
