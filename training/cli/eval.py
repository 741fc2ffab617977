"""`nfldm eval`: reconstruction and generation figures of a model bundle on held-out captured scenes::

    nfldm eval --model assets/models/default --data data/town01.zarr data/town03.zarr --num-scenes 16 --out eval/
    nfldm eval --model BUNDLE --data STORE --inception-weights pt_inception-2015-12-05-6726825d.pth --out eval/
    nfldm eval --model BUNDLE --data STORE --critic runs/critic --out eval/
    nfldm eval --conditional --model BUNDLE --data STORE --guidance-scales 1,2,3 --num-maps 16 --out eval/

Writes ``OUT/eval.json`` and ``OUT/eval.md`` (see `nfldm_training.evaluation.evaluate` for what is measured and how);
with ``--conditional`` instead ``OUT/eval_conditional.json`` and ``OUT/eval_conditional.md``: layout fidelity under
held-out BEV maps, editing and sampling time of a BEV-conditioned bundle (`nfldm_training.evaluation.conditional`).
"""
from __future__ import annotations

from pathlib import Path

import click

from nfldm_sdk.cli.names import default_device
from nfldm_training.cli.common import capture_stores, run_model_dir, store_options


def _guidance_scales(ctx, param, value: str) -> tuple[float, ...]:
    """``"1,2,3"`` -> ``(1.0, 2.0, 3.0)`` (finite numbers, at least one)."""
    try:
        scales = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        scales = ()
    if not scales or any(s != s or s in (float("inf"), float("-inf")) for s in scales):
        raise click.BadParameter(f"{value!r} is not a comma-separated list of finite numbers, e.g. 1,2,3")
    return scales


@click.command("eval")
@click.option("--model", "model", default=None, type=click.Path(file_okay=False),
              help="Model bundle folder (default: the shipped default model, as SceneGenerator.from_pretrained()).")
@store_options("Capture store(s) whose held-out split is the reference")
@click.option("--num-scenes", type=click.IntRange(2), default=16, show_default=True,
              help="Generated scenes (and at most as many held-out reference windows).")
@click.option("--window", type=click.IntRange(1), default=2, show_default=True,
              help="Frames per held-out window (use the stage-1 training window).")
@click.option("--val-fraction", type=float, default=0.2, show_default=True,
              help="Held-out fraction of each store's episodes (the training split rule).")
@click.option("--max-recon-windows", type=int, default=32, show_default=True,
              help="Held-out windows of the reconstruction figures (0 = all).")
@click.option("--points", "points", type=click.IntRange(16), default=2048, show_default=True,
              help="Points per scene of the Chamfer-based MMD/COV/1-NNA.")
@click.option("--steps", type=int, default=None, help="Denoising steps per level (default: the bundle's).")
@click.option("--sampler", default=None, help="ddim, dpmsolver++ or ddpm (default: the bundle's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated scenes and point draws.")
@click.option("--inception-weights", type=click.Path(dir_okay=False), default=None,
              help="The standard FID Inception weights (pt_inception-2015-12-05-6726825d.pth, pytorch-fid's); "
                   "without them FID/KID are not computed.")
@click.option("--critic", "critic", type=click.Path(exists=True, file_okay=False), default=None,
              help="Perception critic for the label-agreement and critic Fréchet distance figures: a run of `nfldm "
                   "train critic` or its model/ folder (default: the bundle's critic/ part, if it has one).")
@click.option("--conditional", is_flag=True,
              help="Evaluate BEV-conditioned generation instead: layout IoU of scenes generated under held-out maps "
                   "(guidance sweep, unconditional chance, stage-1 ceiling), editing, seconds per scene; writes "
                   "eval_conditional.json/.md. Uses --window, --val-fraction, --steps, --sampler, --seed only.")
@click.option("--guidance-scales", "guidance_scales", default="1,2,3", show_default=True, callback=_guidance_scales,
              help="With --conditional: the classifier-free guidance scales of the sweep, comma-separated.")
@click.option("--num-maps", type=click.IntRange(1), default=16, show_default=True,
              help="With --conditional: held-out windows (BEV maps) the figures are over.")
@click.option("--edit/--no-edit", "edit", default=True, show_default=True,
              help="With --conditional: measure editing (a 16 m x 16 m box ahead of the ego under a repainted map).")
@click.option("--device", default=None, help="Torch device (default: cuda when available, else cpu).")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for eval.json and eval.md (eval_conditional.json/.md with --conditional).")
def eval_command(model, data, more_stores, num_scenes, window, val_fraction, max_recon_windows, points, steps, sampler,
                 seed, inception_weights, critic, conditional, guidance_scales, num_maps, edit, device, out):
    """Evaluate a model bundle: stage-1 and LAE reconstruction (PSNR, SSIM, depth AbsRel) on held-out windows, and
    generation against held-out captured scenes (MMD/COV/1-NNA with Chamfer distance, BEV occupancy and height
    statistics, depth histograms; FID/KID with the standard Inception weights only), and the semantic figures (the
    semantic field's mIoU against captured tags; with a perception critic, label agreement and the critic Fréchet
    distance). With --conditional: the layout fidelity, editing and sampling time of a BEV-conditioned bundle."""
    if conditional:
        return _conditional(model, capture_stores(data, more_stores), window, val_fraction, steps, sampler, seed,
                            guidance_scales, num_maps, edit, device, out)
    # start-up time: the bundle loader and the evaluation import torch
    from nfldm_sdk.models.bundle import BundleError, default_model_path
    from nfldm_training.evaluation.evaluate import EvalConfig, evaluate, report_markdown, write_report

    stores = capture_stores(data, more_stores)
    if inception_weights is not None:
        if not Path(inception_weights).is_file():
            raise click.BadParameter(f"{inception_weights} does not exist", param_hint="--inception-weights")
    if critic is not None:
        critic = str(run_model_dir(critic, "critic"))   # a folder without a saved critic fails here, before the work
    cfg = EvalConfig(num_scenes=num_scenes, window=window, val_fraction=val_fraction,
                     max_recon_windows=max_recon_windows or None, points_per_scene=points, steps=steps, sampler=sampler,
                     seed=seed, inception_weights=inception_weights, critic=critic)
    device = device or default_device()
    try:
        report = evaluate(model or default_model_path(), stores, cfg, device=device, log=click.echo)
    except (BundleError, FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    j, m = write_report(report, out)
    click.echo(report_markdown(report))
    click.echo(f"wrote {j} and {m}")


def _conditional(model, stores, window, val_fraction, steps, sampler, seed, guidance_scales, num_maps, edit, device, out):
    """`nfldm eval --conditional`: load the bundle, refuse an unconditional one before any work, measure, write."""
    # start-up time: the bundle loader and the evaluation import torch
    from nfldm_sdk.errors import NfldmError
    from nfldm_sdk.models.bundle import default_model_path
    from nfldm_sdk.pipelines.generator import SceneGenerator
    from nfldm_training.evaluation.conditional import (ConditionalConfig, conditional_markdown, evaluate_conditional,
                                                       require_conditional, write_conditional_report)

    path = model or default_model_path()
    device = device or default_device()
    cfg = ConditionalConfig(num_maps=num_maps, guidance_scales=guidance_scales, window=window, val_fraction=val_fraction,
                            steps=steps, sampler=sampler, seed=seed, edit=edit)
    try:
        gen = SceneGenerator.from_pretrained(path, device=device)
        require_conditional(gen, f"bundle {path}")
        report = evaluate_conditional(gen, stores, cfg, device=device, progress=True, log=click.echo)
    except (NfldmError, FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    report.bundle = str(path)
    j, m = write_conditional_report(report, out)
    click.echo(conditional_markdown(report))
    click.echo(f"wrote {j} and {m}")
