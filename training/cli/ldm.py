"""`nfldm train ldm` and `nfldm export-bundle` (click commands: ``train ldm`` in the ``train`` group of
`nfldm_training.cli.train`, ``export-bundle`` an ``nfldm.commands`` entry point).

    nfldm train ldm --level g --latents runs/latents.zarr --preset small --out runs/ldm_g    # the three levels are
    nfldm train ldm --level c --latents runs/latents.zarr --preset small --out runs/ldm_c    # independent processes:
    nfldm train ldm --level f --latents runs/latents.zarr --preset small --out runs/ldm_f    # run them in parallel
    nfldm export-bundle --scene-ae runs/ae --latent-ae runs/lae --ldm-g runs/ldm_g --ldm-c runs/ldm_c \\
        --ldm-f runs/ldm_f --out assets/models/small [--half] [--prior runs/prior]

``--prior RUN`` adds the SDS guidance prior of ``nfldm train prior`` as the bundle's optional ``prior/`` part
(`nfldm_sdk.guidance.prior.add_prior_to_bundle`; float16 too with ``--half``), where ``nfldm refine`` and
``SceneGenerator.generate(refine=True)`` find it.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from nfldm_training.cli.common import given, parse_devices, parse_set, resumed_run_config, run_model_dir, stage_options

__all__ = ["train_ldm", "export_bundle"]


@click.command("ldm")
@click.option("--level", type=click.Choice(["g", "c", "f"]), required=True,
              help="Which denoiser: g (global), c (coarse, conditioned on g), f (fine, conditioned on g and c).")
@click.option("--latents", required=True, type=click.Path(), help="Latent store written by `nfldm encode-latents`.")
@stage_options("Denoiser sizes and training settings.", "Override the preset's scenes per step (per device).",
               strategy_help="Lightning strategy: auto, ddp, ...",
               set_help="Override any stage-3 setting, e.g. --set denoiser_c.bev_condition=true --set train_c.lr=2e-4.")
@click.pass_context
def train_ldm(ctx, level, latents, preset, out, max_steps, batch_size, seed, workers, settings, accelerator, devices,
              strategy, num_nodes, resume, progress):
    """Train one denoiser of the hierarchical latent diffusion (v-prediction, EMA weights saved to OUT/model)."""
    # start-up time: the preset table and the training module import torch and Lightning
    from nfldm_training.modules.ldm import train_ldm as run
    from nfldm_training.runs.trainer import run_writer_log
    from nfldm_training.configs.ldm import get_ldm_preset

    if "://" not in latents and not Path(latents).exists():
        raise click.BadParameter(f"{latents} does not exist: write it with `nfldm encode-latents`", param_hint="--latents")

    # a resumed run continues with its saved config; the shortcut options below still override it
    saved = resumed_run_config(ctx, Path(out), preset, resume, "ldm")
    if saved is None:
        ldm = get_ldm_preset(preset)
    else:
        preset, ldm, saved_level = saved.preset, saved.section, saved.extra["level"]
        if saved_level != level:
            raise click.UsageError(f"{out} trains level {saved_level!r}; resume it with --level {saved_level}, or "
                                   "start over with --no-resume")
    if settings:
        from nfldm_training.configs.presets import apply_overrides

        try:
            ldm = apply_overrides(ldm, parse_set(settings))
        except (KeyError, TypeError, ValueError) as e:
            raise click.BadParameter(str(e), param_hint="--set")
    overrides = given(max_steps=max_steps, batch_size=batch_size, seed=seed, num_workers=workers)
    if overrides:
        ldm = dataclasses.replace(ldm, **{f"train_{level}": dataclasses.replace(ldm.train_config(level), **overrides)})
    result = run(latents, level, ldm, out, preset_name=preset, resume=resume, accelerator=accelerator,
                 devices=parse_devices(devices), strategy=strategy, num_nodes=num_nodes, progress=progress,
                 log=click.echo)
    run_writer_log(click.echo)(f"ψ_{level}: {result.global_step} steps in {result.seconds:.0f} s; EMA model in {result.model_dir}")


def _run_info(path: str | Path, level: str) -> dict:
    """``RUN/ldm_run.json`` of the `nfldm train ldm --level <level>` run at `path` (the run or its model folder),
    with the level and preset of the run's ``config.json`` (`nfldm_training.configs.run_config`)."""
    # start-up time: the stage-3 module and the run-config reader import torch
    from nfldm_training.configs.run_config import RUN_CONFIG_NAME, load_run_config
    from nfldm_training.errors import TrainingError, TrainingInputNotFound
    from nfldm_training.modules.ldm import RUN_INFO

    p = Path(path)
    run = run_model_dir(p, f"ldm-{level}").parent  # RUN/ldm_run.json and RUN/config.json beside RUN/model
    if not (run / RUN_INFO).is_file():
        raise click.BadParameter(f"{p} has no {RUN_INFO}: pass the run directory of `nfldm train ldm --level {level}`",
                                 param_hint=f"--ldm-{level}")
    try:
        saved = load_run_config(run / RUN_CONFIG_NAME, "ldm")
    except (TrainingError, TrainingInputNotFound) as e:
        raise click.BadParameter(str(e), param_hint=f"--ldm-{level}") from e
    trained = saved.extra["level"]
    if trained != level:
        raise click.BadParameter(f"{p} trained level {trained!r}, not {level!r}: pass the run of "
                                 f"`nfldm train ldm --level {level}`", param_hint=f"--ldm-{level}")
    return {**json.loads((run / RUN_INFO).read_text()), "level": trained, "preset": saved.preset}


@click.command("export-bundle")
@click.option("--scene-ae", "scene_ae", required=True, type=click.Path(exists=True), help="Run directory of `nfldm train scene-ae`.")
@click.option("--latent-ae", "latent_ae", required=True, type=click.Path(exists=True), help="Run directory of `nfldm train latent-ae`.")
@click.option("--ldm-g", "ldm_g", required=True, type=click.Path(exists=True), help="Run directory of `nfldm train ldm --level g`.")
@click.option("--ldm-c", "ldm_c", required=True, type=click.Path(exists=True), help="Run directory of `nfldm train ldm --level c`.")
@click.option("--ldm-f", "ldm_f", required=True, type=click.Path(exists=True), help="Run directory of `nfldm train ldm --level f`.")
@click.option("--out", required=True, type=click.Path(), help="Bundle folder to write.")
@click.option("--prior", "prior", type=click.Path(exists=True, file_okay=False), default=None,
              help="Run directory (or its model/) of `nfldm train prior`: added as the optional prior/ part.")
@click.option("--half", is_flag=True, help="Store weights as float16 (half the size; loaded back as float32).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
def export_bundle(scene_ae, latent_ae, ldm_g, ldm_c, ldm_f, out, prior, half, overwrite):
    """Assemble a model bundle (what `SceneGenerator.from_pretrained` loads) from the runs of the three stages."""
    # start-up time: the bundle writer and the model classes import torch
    from nfldm_sdk.models.bundle import BundleError, write_bundle
    from nfldm_sdk.persistence import config_from_dict, config_to_dict, load_pretrained
    from nfldm_sdk.models.latent_ae import LatentStats
    from nfldm_sdk.models.noise_schedule import SamplerDefaults
    from nfldm_sdk.models.noise_schedule import NoiseSchedule

    prior_dir = _prior_model_dir(prior) if prior else None      # checked before anything is written
    runs = {"g": ldm_g, "c": ldm_c, "f": ldm_f}
    infos = {k: _run_info(v, k) for k, v in runs.items()}
    for key, what in (("training_data_hash", "latent stores"), ("latent_stats", "latent statistics"),
                      ("noise_schedule", "noise schedules")):
        values = {k: json.dumps(i[key], sort_keys=True) for k, i in infos.items()}
        if len(set(values.values())) != 1:
            raise click.UsageError(f"the three denoisers were trained with different {what} "
                                   f"({', '.join(f'{k}: {v[:40]}' for k, v in values.items())}): train all three levels "
                                   "on the same `nfldm encode-latents` store")
    info = infos["g"]
    models = {"scene_ae": load_pretrained(run_model_dir(scene_ae, "scene-ae")),
              "latent_ae": load_pretrained(run_model_dir(latent_ae, "latent-ae")),
              **{k: load_pretrained(run_model_dir(v, f"ldm-{k}")) for k, v in runs.items()}}
    stats = config_from_dict(LatentStats, info["latent_stats"])
    lae_stats = getattr(models["latent_ae"].config, "latent_stats", None)
    if lae_stats is not None and config_to_dict(lae_stats) != config_to_dict(stats):
        click.echo("note: the LAE's config carries other latent statistics than the ones the denoisers were trained "
                   "with; the bundle uses the denoisers' (they define the latent space the samples live in)")
    presets = {i.get("preset", "custom") for i in infos.values()}
    try:
        path = write_bundle(
            out, scene_ae=models["scene_ae"], latent_ae=models["latent_ae"],
            denoisers={k: models[k] for k in ("g", "c", "f")}, latent_stats=stats,
            noise_schedule=NoiseSchedule.from_dict(info["noise_schedule"]),
            sampler_defaults=SamplerDefaults(**info["sampler_defaults"]),
            preset=presets.pop() if len(presets) == 1 else "custom", training_data_hash=info["training_data_hash"],
            training_data={"latent_store": info["latents"], "num_scenes": info.get("num_scenes"),
                           "runs": {"scene_ae": str(scene_ae), "latent_ae": str(latent_ae), **{f"ldm_{k}": str(v) for k, v in runs.items()}}},
            half=half, overwrite=overwrite)
    except (BundleError, FileExistsError) as e:
        raise click.ClickException(str(e)) from e
    if prior_dir is not None:
        from nfldm_sdk.guidance.prior import add_prior_to_bundle

        add_prior_to_bundle(path, prior_dir, half=half)
    manifest = json.loads((path / "manifest.json").read_text())
    extra = " with the SDS prior (prior/)" if prior_dir is not None else ""
    click.echo(f"bundle {path} ({manifest['preset']}){extra}, hash {manifest['bundle_hash'][:16]}…")


def _prior_model_dir(path: str | Path) -> Path:
    """The model folder of the `nfldm train prior` run at `path` (the run or its model/), checked to hold a
    `PriorUNet`; a bad one is a usage error of ``--prior``."""
    # start-up time: the prior's network imports torch and diffusers
    from nfldm_sdk.models.prior_unet import PriorUNet
    from nfldm_sdk.persistence import resolve_model_dir

    try:
        folder = resolve_model_dir(path)
        PriorUNet.load_config(folder)
    except (FileNotFoundError, ValueError) as e:
        raise click.BadParameter(f"{e} (pass the --out folder of `nfldm train prior`)", param_hint="--prior") from e
    return folder


@click.command("replace-decoder")
@click.option("--bundle", "bundle", required=True, type=click.Path(exists=True, file_okay=False),
              help="The source bundle (left as it is).")
@click.option("--scene-ae", "scene_ae", required=True, type=click.Path(exists=True, file_okay=False),
              help="A decoder-only fine-tune of the bundle's stage 1 (`nfldm train scene-ae --init-from "
                   "BUNDLE/scene_ae --set scene_ae_train.trainable=decoder` or `=labels`): its run or model folder.")
@click.option("--out", required=True, type=click.Path(), help="The new bundle folder.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out.")
def replace_decoder(bundle, scene_ae, out, overwrite):
    """Write a copy of a bundle whose stage 1 has the fine-tuned decoders (the fields, the LAE and the denoisers are
    unchanged: the stage 1 must equal the bundle's outside its image and label decoders, which is checked; a label
    decoder the bundle lacks may be added)."""
    # start-up time: the bundle reader imports torch
    from nfldm_sdk.models.bundle import BundleError, read_manifest
    from nfldm_sdk.models.bundle_decoder import replace_scene_decoder

    try:
        path = replace_scene_decoder(bundle, scene_ae, out, overwrite=overwrite)
    except BundleError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"bundle {path}, hash {read_manifest(path).bundle_hash[:16]}… (stage-1 decoder from {scene_ae})")
