"""`nfldm bench`: all benchmarks in one run, one table naming the machine (see `nfldm_training.benchmarks.bench`)::

    nfldm bench --quick                    # ~1 min on 2 CPU cores
    nfldm bench --device cuda --out bench.json
"""
from __future__ import annotations

import click


@click.command("bench")
@click.option("--quick", is_flag=True, help="Tiny sizes: about a minute on two CPU cores.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True, help="Torch device.")
@click.option("--only", multiple=True, type=click.Choice(["capture", "render", "sampling", "sensors", "lidar", "refine",
                                                           "route", "startup"]),
              help="Run only these benchmarks (repeatable).")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the figures as JSON here.")
def bench(quick, device, only, threads, out):
    """Run the capture, render, sampling, sensor, generated-LiDAR, refinement and start-up benchmarks; print one
    table."""
    # start-up time: the benchmarks import torch
    import torch

    from nfldm_training.benchmarks.bench import format_bench, run_bench, write_bench

    if threads:
        torch.set_num_threads(threads)
    try:
        report = run_bench(quick=quick, device=device, only=tuple(only) or None, log=click.echo)
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    click.echo(format_bench(report))
    if out:
        click.echo(f"wrote {write_bench(report, out)}")
