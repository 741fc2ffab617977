"""`nfldm train ...` and `nfldm encode-voxels`: plugged into the `nfldm` CLI through the ``nfldm.commands`` entry points.

    nfldm train scene-ae --data data/town03.zarr --preset small --out runs/ae
    nfldm encode-voxels --model runs/ae --data data/town03.zarr --out runs/ae/voxels.zarr

``--data`` takes one or more capture stores: repeat it (``--data a.zarr --data b.zarr``) or list them after it
(``--data a.zarr b.zarr``).
"""
from __future__ import annotations

from pathlib import Path

import click

from nfldm_training.cli.common import (collect_overrides, lightning_options, override_options, parse_devices,
                                       resolve_run_preset)
from nfldm_training.configs.names import PRESET_NAMES  # not presets.PRESETS: it imports torch (start-up time)


def _stores(data: tuple[str, ...], more: tuple[str, ...]) -> list[str]:
    """The capture stores of ``--data`` plus any listed after it; local paths must exist."""
    stores = [*data, *more]
    if not stores:
        raise click.UsageError("no capture store given: pass --data STORE [STORE ...]")
    for s in stores:
        if "://" not in s and not Path(s).exists():
            raise click.BadParameter(f"capture store {s} does not exist: collect one with `sim_bridge collect --out {s}`",
                                     param_hint="--data")
    return stores


@click.group(name="train")
def train():
    """Train the stages of NF-LDM on capture stores (PyTorch Lightning)."""


@train.command("scene-ae")
@click.option("--data", "data", multiple=True, metavar="STORE [STORE...]",
              help="Capture store(s) (zarr path or fsspec URL); repeat the option or list stores after it.")
@click.argument("more_stores", nargs=-1, metavar="[STORE...]")
@click.option("--preset", type=click.Choice(list(PRESET_NAMES)), default="small", show_default=True,
              help="Model and training sizes (training/configs/presets.py).")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@override_options("Override the preset's scene windows per step (per device).",
                  set_help="Override any preset setting, e.g. --set scene_ae_train.lr=5e-4 --set scene_ae.feature_channels=16.")
@lightning_options()
@click.option("--progress/--no-progress", default=True, help="Show the progress bar.")
@click.pass_context
def scene_ae(ctx, data, more_stores, preset, out, max_steps, batch_size, seed, workers, settings, accelerator, devices,
             strategy, num_nodes, resume, progress):
    """Stage 1: train the scene auto-encoder (images -> voxel field -> images).

    Writes OUT/model (load with SceneAutoEncoder.from_pretrained), OUT/config.json (resolved preset),
    OUT/metrics.json (validation PSNR and depth AbsRel before and after training), OUT/checkpoints and
    OUT/val_images.
    """
    from nfldm_training.configs.presets import get_preset, load_preset
    from nfldm_training.modules.scene_ae import train_scene_ae

    stores = _stores(data, more_stores)
    overrides = collect_overrides(settings, "scene_ae_train", max_steps=max_steps, batch_size=batch_size, seed=seed,
                                  num_workers=workers)
    run = Path(out)
    resolved = resolve_run_preset(ctx, run, preset, overrides, resume, load=load_preset, get=get_preset)
    try:
        result = train_scene_ae(stores, resolved, run, resume=resume, accelerator=accelerator, devices=parse_devices(devices),
                                strategy=strategy, num_nodes=num_nodes, progress=progress, log=click.echo)
    except FileNotFoundError as e:
        raise click.ClickException(str(e))
    click.echo(f"model: {result.model_dir}  ({result.global_step} steps, {result.seconds:.0f} s)")


@click.command("encode-voxels")
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, file_okay=False),
              help="A run directory of `nfldm train scene-ae` (or its model/ folder).")
@click.option("--data", "data", multiple=True, metavar="STORE [STORE...]",
              help="Capture store(s) to encode; repeat the option or list stores after it.")
@click.argument("more_stores", nargs=-1, metavar="[STORE...]")
@click.option("--out", "out", required=True, type=click.Path(), help="Voxel store to write (zarr v3, e.g. voxels.zarr).")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Scene windows encoded at once.")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True,
              help="Storage dtype of the grids.")
@click.option("--window", type=int, default=None, help="Frames per scene (default: the run's training window).")
@click.option("--stride", type=int, default=None, help="Frames between scene starts (default: the run's stride).")
@click.option("--device", default=None, help="Torch device (default: cuda when available, else cpu).")
@click.option("--overwrite", is_flag=True, help="Replace an existing store at OUT instead of resuming it.")
@click.option("--progress/--no-progress", default=True, help="Show the progress bar.")
def encode_voxels(model_path, data, more_stores, out, batch_size, dtype, window, stride, device, overwrite, progress):
    """Encode every scene window of the capture stores into voxel fields (stage-2 training data).

    Resumable: rerunning continues after the last scene written (same model and data), --overwrite starts over.
    """
    import torch

    from nfldm_sdk.models.scene_ae import SceneAutoEncoder
    from nfldm_sdk.persistence import resolve_model_dir
    from nfldm_training.configs.presets import load_preset
    from nfldm_training.stores.voxel_store import encode_voxels as run_encode

    stores = _stores(data, more_stores)
    path = Path(model_path)
    try:
        model_dir = resolve_model_dir(path)
    except FileNotFoundError as e:
        raise click.BadParameter(f"{e} (`nfldm train scene-ae`)", param_hint="--model") from e
    run_config = model_dir.parent / "config.json"  # the run's resolved preset, when the model sits in a run directory
    train_cfg = None
    if run_config.is_file():
        try:
            train_cfg = load_preset(run_config).scene_ae_train
        except (ValueError, TypeError, KeyError):  # not a run config: fall back to --window/--stride
            train_cfg = None
    if train_cfg is None and window is None:
        raise click.UsageError(f"{path} has no run config.json beside the model: pass --window (and --stride)")
    try:
        model = SceneAutoEncoder.from_pretrained(model_dir)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        result = run_encode(model, stores, out, window=window or train_cfg.window,
                            stride=stride or (train_cfg.stride if train_cfg else 1),
                            cameras=train_cfg.cameras if train_cfg else None, batch_size=batch_size, dtype=dtype,
                            device=device, overwrite=overwrite, progress=progress, log=click.echo)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e))
    click.echo(f"{result.path}: {result.scenes} scenes ({result.written_now} written now, {result.seconds:.1f} s)")


# The other stages' training commands live beside their modules; they join the one `nfldm train` group here.
# (They import this module's helpers only inside their callbacks, so there is no import cycle.)
from nfldm_training.cli.latent import train_latent_ae  # noqa: E402
from nfldm_training.cli.ldm import train_ldm  # noqa: E402
from nfldm_training.cli.prior import train_prior  # noqa: E402

train.add_command(train_latent_ae)
train.add_command(train_ldm)
train.add_command(train_prior)
