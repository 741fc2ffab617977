"""Stage-2 commands: `nfldm train latent-ae` and `nfldm encode-latents` (click; ``train latent-ae`` is a
command of the ``train`` group in `nfldm_training.cli.train`, ``encode-latents`` an ``nfldm.commands`` entry point)::

    nfldm train latent-ae --voxels runs/ae/voxels.zarr --scene-ae runs/ae --data data/town03.zarr --preset small --out runs/lae
    nfldm train latent-ae ... --init-from assets/models/default/latent_ae --out runs/lae_ft   # fine-tune
    nfldm encode-latents --model runs/lae --voxels runs/ae/voxels.zarr --out runs/lae/latents.zarr
"""
from __future__ import annotations

from pathlib import Path

import click

from nfldm_sdk.cli.names import default_device
from nfldm_training.cli.common import (capture_stores, collect_overrides, parse_devices, progress_option,
                                       resolve_run_preset, stage_options, store_options)


@click.command("latent-ae")
@click.option("--voxels", required=True, type=click.Path(exists=True, file_okay=False),
              help="Voxel store written by `nfldm encode-voxels`.")
@click.option("--scene-ae", "scene_ae", required=True, type=click.Path(exists=True, file_okay=False),
              help="The stage-1 run directory (or its model/ folder) that encoded the voxels; its renderer is frozen.")
@store_options("Capture store(s) the voxels were encoded from, in the same order (default: the paths recorded in "
               "the voxel store)")
@click.option("--init-from", "init_from", default=None, type=click.Path(exists=True, file_okay=False),
              help="Start from this trained LAE's weights and codebooks (a latent-ae run, its model/ folder, or a "
                   "bundle's latent_ae): fine-tuning, same architecture; --max-steps counts the new steps.")
@stage_options("Model and training sizes (the preset table, training/configs/presets.py).",
               "Override the preset's scenes per step (per device).",
               set_help="Override any preset setting, e.g. --set latent_ae_train.lr=5e-4 --set latent_ae.g_dim=64.")
@click.pass_context
def train_latent_ae(ctx, voxels, scene_ae, data, more_stores, init_from, preset, out, max_steps, batch_size, seed,
                    workers, settings, accelerator, devices, strategy, num_nodes, resume, progress):
    """Stage 2: train the latent voxel auto-encoder (voxel field -> g, c, f -> voxel field).

    Writes OUT/model (load with LatentAutoEncoder.from_pretrained), OUT/config.json (resolved preset),
    OUT/metrics.json (voxel errors, PSNR of renders, codebook usage before and after training), OUT/checkpoints
    and OUT/val_images.
    """
    # start-up time: the preset table and the training module import torch and Lightning
    from nfldm_training.modules.latent_ae import train_latent_ae as run_train
    from nfldm_training.configs.latent import get_latent_preset
    from nfldm_training.runs.trainer import run_writer_log

    stores = capture_stores(data, more_stores, required=False)
    overrides = collect_overrides(settings, "latent_ae_train", max_steps=max_steps, batch_size=batch_size, seed=seed,
                                  num_workers=workers)
    run = Path(out)
    resolved = resolve_run_preset(ctx, run, preset, overrides, resume, stage="latent-ae", get=get_latent_preset)
    try:
        result = run_train(voxels, scene_ae, resolved, run, stores, resume=resume, accelerator=accelerator,
                           devices=parse_devices(devices), strategy=strategy, num_nodes=num_nodes, progress=progress,
                           log=click.echo, init_from=init_from)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e))
    run_writer_log(click.echo)(f"model: {result.model_dir}  ({result.global_step} steps, {result.seconds:.0f} s)")


@click.command("encode-latents")
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, file_okay=False),
              help="A run directory of `nfldm train latent-ae` (or its model/ folder); gets latent_stats in its config.json.")
@click.option("--voxels", required=True, type=click.Path(exists=True, file_okay=False),
              help="Voxel store written by `nfldm encode-voxels`.")
@click.option("--out", "out", required=True, type=click.Path(), help="Latent store to write (zarr v3, e.g. latents.zarr).")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Scenes encoded at once.")
@click.option("--device", default=None, help="Torch device (default: cuda when available, else cpu).")
@click.option("--overwrite", is_flag=True, help="Replace an existing store at OUT instead of resuming it.")
@progress_option()
def encode_latents(model_path, voxels, out, batch_size, device, overwrite, progress):
    """Encode every scene of a voxel store into its latents g, c, f (stage-3 training data).

    Also computes the latent normalisation statistics over all scenes (g: one mean/std; c, f: per channel),
    stored in the latent store's root attrs and in the model's config.json (latent_stats). Resumable.
    """
    # start-up time: the model and the store writer import torch
    from nfldm_sdk.models.latent_ae import LatentAutoEncoder
    from nfldm_sdk.persistence import resolve_model_dir
    from nfldm_training.encoding.latents import encode_latents as run_encode

    try:
        model_dir = resolve_model_dir(model_path)
        model = LatentAutoEncoder.from_pretrained(model_dir)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e))
    device = device or default_device()
    try:
        result = run_encode(model, voxels, out, model_dir=model_dir, batch_size=batch_size, device=device,
                            overwrite=overwrite, progress=progress, log=click.echo)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e))
    s = result.stats
    click.echo(f"{result.path}: {result.scenes} scenes ({result.written_now} encoded now, {result.seconds:.1f} s); "
               f"g mean {s.g_mean:.3g} std {s.g_std:.3g}; stats written to {result.model_config_path}")
