"""Small factories for scheduler snapshots (hosts, gangs, jobs, quotas)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aitb.domain.models import Placement, Quota
from aitb.domain.resources import GangSpec, GpuRequest, ReplicaSpec
from aitb.scheduler.snapshot import Host, PendingJob, RunningJob, Snapshot, subtract_running


def pool(node: str, cluster: str, name: str, n: int, *, cpu: float = 32, mem: float = 256,
         gpus: int = 0, gpu_type: str | None = None, labels: Mapping | None = None) -> list[Host]:
    return [
        Host(f"{cluster}/{name}/{i}", node, cluster, name, cpu, mem, cpu, mem,
             gpu_type if gpus else None, (1.0,) * gpus, dict(labels or {}))
        for i in range(n)
    ]


def gang(gpu: float = 0, cpu: float = 1, mem: float = 1, types: Iterable[str] = (),
         workers: int = 0, worker_gpu: float | None = None) -> GangSpec:
    head = ReplicaSpec(cpu=cpu, memory_gib=mem, gpu=GpuRequest(count=gpu, types=frozenset(types)))
    worker = None
    if workers:
        wg = gpu if worker_gpu is None else worker_gpu
        worker = ReplicaSpec(cpu=cpu, memory_gib=mem, gpu=GpuRequest(count=wg, types=frozenset(types)))
    return GangSpec(head=head, worker=worker, workers=workers)


def pending(id: str, project: str, g: GangSpec, *, partner: str | None = None, prio: int = 0,
            t: float = 0.0, nodes: Iterable[str] | None = None, labels: Mapping | None = None,
            note: str = "", reservation: tuple[str, ...] = ()) -> PendingJob:
    return PendingJob(id, project, partner or f"{project}-org", prio, t, g,
                      frozenset(nodes) if nodes is not None else None, dict(labels or {}), note,
                      reservation)


def running(id: str, project: str, g: GangSpec, hosts: list[str], devices: list[list[int]], *,
            partner: str | None = None, borrowing: bool = False, prio: int = 0,
            started: float = 0.0, gpu_type: str | None = None) -> RunningJob:
    node, cluster = _where(hosts[0])
    return RunningJob(id, project, partner or f"{project}-org", node, cluster, prio, started, g,
                      Placement(node=node, cluster=cluster, hosts=hosts, gpu_devices=devices,
                                borrowing=borrowing), gpu_type)


def _where(host_id: str) -> tuple[str, str]:
    cluster = host_id.split("/")[0]
    return cluster.split("-")[0], cluster


def quota(project: str, node: str, nominal: Mapping, borrow: Mapping | None = None) -> Quota:
    return Quota(project=project, node=node, nominal=dict(nominal), borrowing_limit=dict(borrow or {}))


def snapshot(hosts: list[Host], quotas: Iterable[Quota] = (), run: Iterable[RunningJob] = (),
             queue: Iterable[PendingJob] = (), weights: Mapping | None = None) -> Snapshot:
    run = list(run)
    return Snapshot(subtract_running(hosts, run), {(q.project, q.node): q for q in quotas}, run,
                    list(queue), dict(weights or {}))
