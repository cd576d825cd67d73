"""``aitb sim``: capacity planning (``fill``) and trace replay (``replay``) offline.

Imports of the scheduler happen inside the commands so ``aitb --help`` stays fast.
"""

from __future__ import annotations

import json

import click

from aitb.cli.context import AppContext, output_option, pass_app


@click.group()
def sim() -> None:
    """Simulate placement and scheduling without any cluster."""


@sim.command()
@click.option("--hosts", "hosts_csv", required=True, type=click.Path(exists=True, dir_okay=False),
              help="CSV: name,cpu,memory_gib,gpus,gpu_type")
@click.option("--requests", "requests_csv", required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="CSV: name,cpu,memory_gib,gpu,gpu_types (types |-separated, empty for any)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--to", "to", type=click.FloatRange(min=0.01, max=10), default=1.0, show_default=True,
              help="stop when arrived GPU demand reaches this times the GPU capacity")
@click.option("--in-order", is_flag=True, help="place each request once in file order")
@click.option("--placement", type=click.Choice(["ours", "best-fit", "random"]), default="ours",
              show_default=True, help="placement strategy (baselines for comparison)")
@output_option
@pass_app
def fill(app: AppContext, hosts_csv: str, requests_csv: str, seed: int, to: float, in_order: bool,
         placement: str) -> None:
    """Fill the hosts with requests: percent of GPUs allocated per percent of demand arrived."""
    from aitb.scheduler.sim.fill import fill as run_fill
    from aitb.scheduler.sim.fill import read_hosts, read_requests

    try:
        result = run_fill(read_hosts(hosts_csv), read_requests(requests_csv), seed=seed, to=to,
                          in_order=in_order, placement=placement)
    except (KeyError, ValueError) as exc:
        raise click.ClickException(f"bad input: {exc}") from None
    if app.json:
        click.echo(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"fill ({placement}, {result['gpu_capacity']} GPUs)")
    table.add_column("arrived %", justify="right")
    table.add_column("allocated %", justify="right")
    for point in result["curve"]:
        if point["arrived_pct"] % 10 == 0 or point is result["curve"][-1]:
            table.add_row(str(point["arrived_pct"]), f"{point['allocated_pct']:.1f}")
    console = Console()
    console.print(table)
    console.print(f"requests {result['requests']}, placed {result['placed']}, failed "
                  f"{result['failed']} ({result['failed_gpu_demand']} GPUs of demand)")


@sim.command()
@click.option("--testbed", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--trace", "trace_csv", required=True, type=click.Path(exists=True, dir_okay=False),
              help="CSV: job,submit_s,duration_s,partner,project,replicas,cpu,memory_gib,gpu"
                   "[,gpu_types,priority,node,checkpoint_s,restart_s,max_runtime_s]")
@click.option("--quotas", "quotas_csv", type=click.Path(exists=True, dir_okay=False),
              help="CSV: project,node,resource,nominal,borrowing_limit (default: equal shares)")
@click.option("--weights", "weights_csv", type=click.Path(exists=True, dir_okay=False),
              help="CSV: partner,weight (default: equal)")
@click.option("--policy", type=click.Choice(["ours", "fifo", "quota-only", "kueue-fair", "all"]),
              default="ours", show_default=True,
              help="kueue-fair: the reference (Kueue fair sharing, LessThanOrEqualToFinalShare)")
@click.option("--until", "until_s", type=click.FloatRange(min=0),
              help="end the replay at this virtual time (unfinished jobs are reported)")
@click.option("--interval", "interval_s", type=click.FloatRange(min=0), default=1.0,
              show_default=True, help="scheduling interval in virtual seconds")
@output_option
@pass_app
def replay(app: AppContext, testbed: str, trace_csv: str, quotas_csv: str | None,
           weights_csv: str | None, policy: str, until_s: float | None, interval_s: float) -> None:
    """Replay a job trace in virtual time through the real scheduler core."""
    from aitb.domain.testbed import TestbedError, load_testbed
    from aitb.scheduler.sim import replay as rp

    try:
        federation = load_testbed(testbed)
        trace = rp.read_trace(trace_csv)
        quotas = rp.read_quotas(quotas_csv) if quotas_csv else None
        weights = rp.read_weights(weights_csv) if weights_csv else None
    except (TestbedError, KeyError, ValueError) as exc:
        raise click.ClickException(f"bad input: {exc}") from None
    names = ["ours", "fifo", "quota-only", "kueue-fair"] if policy == "all" else [policy]
    results = [rp.replay(federation, trace, policy=n, quotas=quotas, weights=weights,
                         interval_s=interval_s, until_s=until_s) for n in names]
    if app.json:
        if policy == "all":
            click.echo(json.dumps({"summaries": [r["summary"] for r in results],
                                   "runs": {n: r for n, r in zip(names, results, strict=True)}}))
        else:
            click.echo(json.dumps(results[0]))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"replay of {len(trace)} jobs")
    table.add_column("metric")
    for r in results:
        table.add_column(r["summary"]["policy"], justify="right")
    for key in results[0]["summary"]:
        if key != "policy":
            table.add_row(key, *(str(r["summary"][key]) for r in results))
    Console().print(table)
