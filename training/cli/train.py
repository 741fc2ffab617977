"""`nfldm train ...` and `nfldm encode-voxels`: plugged into the `nfldm` CLI through the ``nfldm.commands`` entry points.

    nfldm train scene-ae --data data/town03.zarr --preset small --out runs/ae
    nfldm encode-voxels --model runs/ae --data data/town03.zarr --out runs/ae/voxels.zarr

``--data`` takes one or more capture stores: repeat it (``--data a.zarr --data b.zarr``) or list them after it
(``--data a.zarr b.zarr``).
"""
from __future__ import annotations

from pathlib import Path

import click

from nfldm_sdk.cli.names import default_device
from nfldm_training.cli.common import (capture_stores, collect_overrides, parse_devices, progress_option,
                                       resolve_run_preset, run_model_dir, stage_options, store_options)
from nfldm_training.cli.critic import train_critic
from nfldm_training.cli.latent import train_latent_ae
from nfldm_training.cli.ldm import train_ldm
from nfldm_training.cli.prior import train_prior


@click.group(name="train")
def train():
    """Train the stages of NF-LDM on capture stores (PyTorch Lightning)."""


@train.command("scene-ae")
@store_options("Capture store(s) (zarr path or fsspec URL)")
@stage_options("Model and training sizes (training/configs/presets.py).",
               "Override the preset's scene windows per step (per device).",
               set_help="Override any preset setting, e.g. --set scene_ae_train.lr=5e-4 --set scene_ae.feature_channels=16.")
@click.option("--init-from", "init_from", default=None, type=click.Path(exists=True, file_okay=False),
              help="Start from this trained stage 1 (run, model folder or a bundle's scene_ae) of the preset's "
                   "architecture: a fine-tune; --max-steps counts its own steps.")
@click.option("--latent-ae", "latent_ae", default=None, type=click.Path(exists=True, file_okay=False),
              help="A frozen LAE of this stage 1's fields: validation also reports PSNR through it, and with "
                   "--set scene_ae_train.lae_input_fraction=P the decoder also learns its reconstructions.")
@click.pass_context
def scene_ae(ctx, data, more_stores, preset, out, max_steps, batch_size, seed, workers, settings, accelerator, devices,
             strategy, num_nodes, resume, progress, init_from, latent_ae):
    """Stage 1: train the scene auto-encoder (images -> voxel field -> images).

    Writes OUT/model (load with SceneAutoEncoder.from_pretrained), OUT/config.json (resolved preset),
    OUT/metrics.json (validation PSNR and depth AbsRel before and after training), OUT/checkpoints and
    OUT/val_images.

    Fine-tune the decoder of a trained model alone (its fields, and every stage trained on them, stay valid):
    --init-from BUNDLE/scene_ae --latent-ae BUNDLE/latent_ae --set scene_ae_train.trainable=decoder
    --set scene_ae_train.lae_input_fraction=0.5 --set scene_ae_train.lr_schedule=cosine. Add and train a label
    decoder alone (camera labels at the image resolution): --set scene_ae.label_decoder_widths=[64,32,24]
    --set scene_ae_train.trainable=labels --set scene_ae_train.semantic_balance=0.5.
    """
    # start-up time: the preset table and the training module import torch and Lightning
    from nfldm_training.configs.presets import get_preset
    from nfldm_training.errors import TrainingError
    from nfldm_training.modules.scene_ae import train_scene_ae
    from nfldm_training.runs.trainer import run_writer_log

    stores = capture_stores(data, more_stores)
    overrides = collect_overrides(settings, "scene_ae_train", max_steps=max_steps, batch_size=batch_size, seed=seed,
                                  num_workers=workers)
    run = Path(out)
    resolved = resolve_run_preset(ctx, run, preset, overrides, resume, stage="scene-ae", get=get_preset)
    try:
        result = train_scene_ae(stores, resolved, run, resume=resume, accelerator=accelerator, devices=parse_devices(devices),
                                strategy=strategy, num_nodes=num_nodes, progress=progress, log=click.echo,
                                init_from=init_from, latent_ae=latent_ae)
    except (FileNotFoundError, TrainingError) as e:
        raise click.ClickException(str(e))
    run_writer_log(click.echo)(f"model: {result.model_dir}  ({result.global_step} steps, {result.seconds:.0f} s)")


@click.command("encode-voxels")
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, file_okay=False),
              help="A run directory of `nfldm train scene-ae` (or its model/ folder).")
@store_options("Capture store(s) to encode")
@click.option("--out", "out", required=True, type=click.Path(), help="Voxel store to write (zarr v3, e.g. voxels.zarr).")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Scene windows encoded at once.")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True,
              help="Storage dtype of the grids.")
@click.option("--window", type=int, default=None, help="Frames per scene (default: the run's training window).")
@click.option("--stride", type=int, default=None, help="Frames between scene starts (default: the run's stride).")
@click.option("--device", default=None, help="Torch device (default: cuda when available, else cpu).")
@click.option("--overwrite", is_flag=True, help="Replace an existing store at OUT instead of resuming it.")
@progress_option()
def encode_voxels(model_path, data, more_stores, out, batch_size, dtype, window, stride, device, overwrite, progress):
    """Encode every scene window of the capture stores into voxel fields (stage-2 training data).

    Resumable: rerunning continues after the last scene written (same model and data), --overwrite starts over.
    """
    # start-up time: the model, the preset table and the store writer import torch
    from nfldm_sdk.models.scene_ae import SceneAutoEncoder
    from nfldm_training.configs.run_config import RUN_CONFIG_NAME, load_run_config
    from nfldm_training.encoding.voxels import encode_voxels as run_encode

    stores = capture_stores(data, more_stores)
    path = Path(model_path)
    model_dir = run_model_dir(path, "scene-ae", "model")
    run_config = model_dir.parent / RUN_CONFIG_NAME  # the run's resolved preset, when the model sits in a run directory
    train_cfg = None
    if run_config.is_file():
        try:
            train_cfg = load_run_config(run_config, "scene-ae").section.scene_ae_train
        except (ValueError, TypeError, KeyError):  # not a stage-1 run config: fall back to --window/--stride
            train_cfg = None
    if train_cfg is None and window is None:
        raise click.UsageError(f"{path} has no run config.json beside the model: pass --window (and --stride)")
    try:
        model = SceneAutoEncoder.from_pretrained(model_dir)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e))
    device = device or default_device()
    try:
        result = run_encode(model, stores, out, window=window or train_cfg.window,
                            stride=stride or (train_cfg.stride if train_cfg else 1),
                            cameras=train_cfg.cameras if train_cfg else None, batch_size=batch_size, dtype=dtype,
                            device=device, overwrite=overwrite, progress=progress, log=click.echo)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e))
    click.echo(f"{result.path}: {result.scenes} scenes ({result.written_now} written now, {result.seconds:.1f} s)")


# The other stages' training commands live in their own modules; they join the one `nfldm train` group here.
train.add_command(train_latent_ae)
train.add_command(train_ldm)
train.add_command(train_prior)
train.add_command(train_critic)
