"""`nfldm train critic` (a click command of the ``train`` group, which `nfldm_training.cli.train` assembles)::

    nfldm train critic data/town01.zarr data/town03.zarr --preset small --out runs/critic [--bundle BUNDLE]

Trains the perception critic (`nfldm_training.modules.critic`): a small segmentation network on the captured images
and tags of the stores' training episodes (stage 1's episode split), validated on the held-out episodes.
``--bundle`` then copies it into ``BUNDLE/critic/`` (`nfldm_sdk.models.critic.add_critic_to_bundle`), where
``nfldm eval`` finds it.
"""
from __future__ import annotations

from pathlib import Path

import click

from nfldm_training.cli.common import (capture_stores, collect_overrides, parse_devices, resumed_run_config,
                                       stage_options, store_options)

__all__ = ["train_critic"]


@click.command("critic")
@store_options("Capture store(s) whose training episodes the critic learns from")
@stage_options("Critic size and training settings (the preset table's critic section, training/configs/presets.py).",
               "Override the preset's views per step (per device).",
               set_help="Override any critic preset setting, e.g. --set train.lr=1e-3 --set critic.widths=[16,32,32].",
               strategy_help="Lightning strategy: auto, ddp, ...",
               extra=(click.option("--bundle", type=click.Path(exists=True, file_okay=False), default=None,
                                   help="Model bundle to copy the trained critic into, as its critic/ part."),))
@click.pass_context
def train_critic(ctx, data, more_stores, preset, out, max_steps, batch_size, seed, workers, settings, accelerator,
                 devices, strategy, num_nodes, resume, bundle, progress):
    """Train the perception critic of `nfldm eval`: semantic segmentation of captured images (CARLA tags grouped into
    the preset's classes), for label agreement and the critic Fréchet distance (CFD).

    Writes OUT/model (PerceptionCritic.from_pretrained), OUT/config.json, OUT/metrics.json (held-out mIoU, the
    majority-class baseline and per-class IoU before and after training), OUT/checkpoints and OUT/logs.
    """
    # start-up time: the preset table, the training module and the bundle format import torch and Lightning
    from nfldm_training.configs.critic import get_critic_preset
    from nfldm_training.configs.presets import apply_overrides
    from nfldm_training.modules.critic import train_critic as run
    from nfldm_training.runs.trainer import is_run_writer, run_writer_log

    stores = capture_stores(data, more_stores)
    if bundle is not None and not (Path(bundle) / "manifest.json").is_file():
        raise click.BadParameter(f"{bundle} is not a model bundle (no manifest.json): pass the folder `nfldm "
                                 "export-bundle` wrote", param_hint="--bundle")
    overrides = collect_overrides(settings, "train", max_steps=max_steps, batch_size=batch_size, seed=seed,
                                  num_workers=workers)
    run_dir = Path(out)
    saved = resumed_run_config(ctx, run_dir, preset, resume, "critic")   # a resumed run keeps its preset and config
    name = saved.preset if saved else preset
    try:
        resolved = apply_overrides(saved.section if saved else get_critic_preset(preset), overrides)
    except (KeyError, ValueError, TypeError) as e:
        raise click.UsageError(str(e.args[0] if isinstance(e, KeyError) and e.args else e)) from e
    try:
        result = run(stores, resolved, run_dir, preset_name=name, resume=resume, accelerator=accelerator,
                     devices=parse_devices(devices), strategy=strategy, num_nodes=num_nodes, progress=progress,
                     log=click.echo)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    echo = run_writer_log(click.echo)
    final = result.final
    figures = (f"held-out mIoU {final.miou:.3f} (majority-class baseline {final.majority_miou:.3f})" if final
               else "no held-out episodes")
    echo(f"critic: {result.global_step} steps in {result.seconds:.0f} s, {figures}; model in {result.model_dir}")
    if bundle is not None and is_run_writer():   # one process writes the bundle part, not every DDP rank
        from nfldm_sdk.models.critic import add_critic_to_bundle  # start-up time: torch

        part = add_critic_to_bundle(bundle, result.model_dir)
        click.echo(f"added to {bundle} as {part.name}/")
