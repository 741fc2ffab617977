"""`nfldm eval-lidar`: a bundle's generated LiDAR against the captured LiDAR of held-out windows::

    sim_bridge collect --backend procedural --town Town01 --episodes 4 --frames 24 --lidar nuscenes32 --out data/t01.zarr
    nfldm eval-lidar --model assets/models/default --data data/*.zarr --out eval_lidar/
    nfldm eval-lidar --model BUNDLE --data STORE --windows 8 --device cuda --out eval_lidar/

Writes ``OUT/lidar_eval.json`` and ``OUT/lidar_eval.md`` (what is measured, and on which beams:
`nfldm_training.evaluation.lidar`).
"""
from __future__ import annotations

import click

from nfldm_sdk.cli.names import default_device
from nfldm_training.cli.common import capture_stores, store_options


@click.command("eval-lidar")
@click.option("--model", "model", default=None, type=click.Path(file_okay=False),
              help="Model bundle folder (default: the shipped default model).")
@store_options("Capture store(s) collected with --lidar, whose held-out split is compared")
@click.option("--windows", type=click.IntRange(0), default=32, show_default=True,
              help="Held-out windows evaluated, spread evenly over the split (0 = all).")
@click.option("--window", type=click.IntRange(1), default=None,
              help="Frames per window (default: the bundle preset's stage-1 window; 2 for a custom preset).")
@click.option("--val-fraction", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=None,
              help="Held-out fraction of each store's episodes (default: the bundle preset's; 0.25 for a custom one).")
@click.option("--samples", type=click.IntRange(1), default=None,
              help="Marcher samples per beam (default: steps of at most half a voxel).")
@click.option("--hit-alpha", type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True), default=0.5,
              show_default=True, help="Opacity that counts as a generated return (the cameras' hit threshold).")
@click.option("--device", default=None, help="Torch device (default: cuda when available, else cpu).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for lidar_eval.json and .md.")
def eval_lidar(model, data, more_stores, windows, window, val_fraction, samples, hit_alpha, device, out):
    """Generated vs captured LiDAR: encode each held-out window with the bundle's stage 1, march the captured
    sensor's beams through the field and compare beam by beam with the captured scan (range AbsRel, Chamfer
    distance, drop-rate agreement, label agreement with a semantic head), and time the marcher."""
    # start-up time: the bundle loader and the evaluation import torch
    from nfldm_sdk.models.bundle import BundleError, default_model_path
    from nfldm_training.evaluation.lidar import LidarEvalConfig, evaluate_lidar, lidar_markdown, write_lidar_report

    stores = capture_stores(data, more_stores)
    cfg = LidarEvalConfig(window=window, val_fraction=val_fraction, max_windows=windows or None, n_samples=samples,
                          hit_alpha=hit_alpha)
    try:
        report = evaluate_lidar(model or default_model_path(), stores, cfg, device=device or default_device(),
                                log=click.echo)
    except (BundleError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    j, m = write_lidar_report(report, out)
    click.echo(lidar_markdown(report))
    click.echo(f"wrote {j} and {m}")
