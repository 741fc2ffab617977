"""`nfldm train-all`: every training stage in order, resumable, then the model bundle — one command::

    nfldm train-all --data data/town01.zarr data/town03.zarr --preset small --out runs/small
    nfldm train-all --data data/*.zarr --preset tiny --budget cpu --out runs/default --bundle assets/models/default

Stages (each one resumes or is skipped when its output is complete, so rerunning after a crash continues):

1. ``OUT/scene_ae``   — `train_scene_ae` (stage 1);
2. ``OUT/voxels.zarr`` — `encode_voxels` of every window of the stores with the stage-1 model;
3. ``OUT/latent_ae``  — `train_latent_ae` (stage 2, against the frozen stage-1 renderer);
4. ``OUT/latents.zarr`` — `encode_latents` (and the latent statistics);
5. ``OUT/ldm_g``, ``OUT/ldm_c``, ``OUT/ldm_f`` — `train_ldm` per level (stage 3);
6. ``OUT/critic``     — `train_critic`, the perception critic of ``nfldm eval`` (``--no-critic`` skips it);
7. the bundle (``--bundle``, default ``OUT/bundle``) — ``nfldm export-bundle`` (``--half`` by default), plus the
   critic as its optional ``critic/`` part;
8. ``OUT/prior``      — `train_prior`, the SDS prior of ``nfldm refine`` (trained on captured images and renders of
   the new bundle's scenes; ``--no-prior`` skips it), added to the bundle as its optional ``prior/`` part.

``--budget gpu`` trains with the preset's step counts; ``--budget cpu`` with the `CPU_BUDGET` step counts (for a
machine without a GPU: a blurry tiny model in about 30 minutes on two idle cores), except for the `CPU_RECIPES`
presets, whose own step counts are a CPU budget (``--preset default``: the shipped default model, every stage within
4 hours on 2 cores, see assets/models/default/MODEL_CARD.md). Stage 4 (SDS refinement) needs no
training. ``OUT/train_all.json`` records the stages' step counts and wall times.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import click

from nfldm_sdk.cli.names import default_device
from nfldm_training.cli.common import capture_stores, progress_option, store_options
from nfldm_training.cli.ldm import export_bundle

#: Step overrides of ``--budget cpu`` (everything else is the preset's): the tiny architecture trains in ~30 min on
#: 2 idle CPU cores (stage 1 ~18, LAE ~10, denoisers ~3; 2-4x that when the cores are shared). Stage 1 gets 4000
#: steps because its held-out PSNR rises until then and only then are its fields opaque enough for generated scenes
#: with surfaces; the LAE needs as many steps on fields that sharp; the denoisers' validation loss no longer falls
#: well before their step counts on the default data. The held-out figures per step count are in
#: assets/models/default/MODEL_CARD.md.
CPU_BUDGET: dict[str, dict] = {
    "scene_ae": {"scene_ae_train.max_steps": 4000, "scene_ae_train.stride": 2, "scene_ae_train.val_interval": 200,
                 "scene_ae_train.val_batches": 4, "scene_ae_train.num_workers": 0, "scene_ae_train.precision": "32-true"},
    "latent_ae": {"latent_ae_train.max_steps": 4000, "latent_ae_train.val_interval": 500, "latent_ae_train.val_batches": 4,
                  "latent_ae_train.num_workers": 0, "latent_ae_train.precision": "32-true"},
    "ldm": {f"train_{k}.{f}": v for k in "gcf" for f, v in
            (("max_steps", {"g": 5000, "c": 4000, "f": 4000}[k]), ("val_interval", 400), ("num_workers", 0),
             ("precision", "32-true"))},
    # the critic (tiny widths, 64x64): ~3 min on 2 shared CPU cores; on a 2-episode capture its held-out mIoU
    # plateaus at ~0.48 from 250 steps (0.47, 0.48, 0.48 at 250/500/1000), larger stores keep gaining longer
    "critic": {"train.max_steps": 1000, "train.val_interval": 250, "train.num_workers": 0,
               "train.precision": "32-true"},
    # the SDS prior: the tiny preset's own counts (a few minutes); the key exists so a budget can set them
    "prior": {},
}


#: Presets whose own step counts are already a CPU budget (the shipped default model's recipe: every stage on 2 CPU
#: cores within 4 hours, assets/models/default/MODEL_CARD.md): ``--budget cpu`` leaves them as they are.
CPU_RECIPES = ("default",)


def _budget_overrides(name: str, budget: str) -> dict[str, dict]:
    """The overrides per stage that `budget` applies to preset `name` (none for ``gpu`` and for `CPU_RECIPES`)."""
    if budget not in ("cpu", "gpu"):
        raise click.BadParameter(f"{budget!r}: use cpu or gpu", param_hint="--budget")
    return CPU_BUDGET if budget == "cpu" and name not in CPU_RECIPES else {}


def stage_presets(name: str, budget: str):
    """The stage-1, stage-2 and stage-3 presets of `name` with the `budget`'s overrides (views of the one preset
    table, `nfldm_training.configs.presets`, per stage)."""
    # start-up time: the preset tables import torch
    from nfldm_training.configs.presets import apply_overrides, get_preset
    from nfldm_training.configs.latent import get_latent_preset
    from nfldm_training.configs.ldm import get_ldm_preset

    b = _budget_overrides(name, budget)
    return (get_preset(name, b.get("scene_ae", {})), get_latent_preset(name, b.get("latent_ae", {})),
            apply_overrides(get_ldm_preset(name), b.get("ldm", {})))


def critic_preset(name: str, budget: str):
    """The critic's preset of `name` with the `budget`'s overrides (``CPU_BUDGET["critic"]`` for ``cpu``)."""
    # start-up time: the preset tables import torch
    from nfldm_training.configs.critic import get_critic_preset

    return get_critic_preset(name, _budget_overrides(name, budget).get("critic", {}))


def prior_preset(name: str, budget: str):
    """The SDS prior's preset of `name` with the `budget`'s overrides (``CPU_BUDGET["prior"]`` for ``cpu``)."""
    from nfldm_training.configs.prior import get_prior_preset  # start-up time: torch

    return get_prior_preset(name, _budget_overrides(name, budget).get("prior", {}))


@click.command("train-all")
@store_options("Capture store(s)")
@click.option("--preset", default="small", show_default=True,
              help="Preset of every stage (tiny, default, small, paper; default: the shipped model's CPU recipe).")
@click.option("--budget", type=click.Choice(["gpu", "cpu"]), default="gpu", show_default=True,
              help="gpu: the preset's step counts; cpu: the reduced CPU_BUDGET step counts (training/cli/train_all.py).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder of the stage runs.")
@click.option("--bundle", "bundle", default=None, type=click.Path(file_okay=False),
              help="Where to write the model bundle (default OUT/bundle); an existing bundle is replaced.")
@click.option("--half/--no-half", default=True, show_default=True, help="Store the bundle's weights as float16.")
@click.option("--critic/--no-critic", "with_critic", default=True, show_default=True,
              help="Train the perception critic of `nfldm eval` and add it to the bundle as its critic/ part.")
@click.option("--prior/--no-prior", "with_prior", default=True, show_default=True,
              help="Train the SDS prior of `nfldm refine` and add it to the bundle as its prior/ part.")
@click.option("--accelerator", default="auto", show_default=True, help="Lightning accelerator: auto, cpu, gpu.")
@click.option("--device", default=None, help="Torch device of the encode steps (default: cuda when available).")
@progress_option("Show progress bars.")
def train_all(data, more_stores, preset, budget, out, bundle, half, with_critic, with_prior, accelerator, device,
              progress):
    """Train stages 1–3 and the perception critic in order on the capture stores (resumable), then export the model
    bundle."""
    # start-up time: the models, the stages' training modules and the store writers import torch and Lightning
    from nfldm_sdk.models.critic import add_critic_to_bundle
    from nfldm_sdk.models.latent_ae import LatentAutoEncoder
    from nfldm_sdk.models.scene_ae import SceneAutoEncoder
    from nfldm_training.benchmarks.bench import machine_line
    from nfldm_training.encoding.latents import encode_latents
    from nfldm_training.encoding.voxels import encode_voxels
    from nfldm_sdk.guidance.prior import add_prior_to_bundle
    from nfldm_training.modules.critic import train_critic
    from nfldm_training.modules.prior import train_prior
    from nfldm_training.modules.latent_ae import train_latent_ae
    from nfldm_training.modules.ldm import train_ldm
    from nfldm_training.modules.scene_ae import train_scene_ae

    stores = capture_stores(data, more_stores)
    try:
        p1, p2, p3 = stage_presets(preset, budget)
        pc = critic_preset(preset, budget) if with_critic else None
        pp = prior_preset(preset, budget) if with_prior else None
    except KeyError as e:
        raise click.UsageError(str(e.args[0] if e.args else e))
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    device = device or default_device()
    record_path = run / "train_all.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    record.update(preset=preset, budget=budget, stores=stores, machine=machine_line(device))
    record.setdefault("stages", {})

    def done(stage: str, t0: float, **info) -> None:
        prev = record["stages"].get(stage, {}).get("seconds", 0.0)
        record["stages"][stage] = {**info, "seconds": round(prev + time.perf_counter() - t0, 1)}
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        click.echo(f"[train-all] {stage}: done ({record['stages'][stage]['seconds']:.0f} s in total)")

    click.echo(f"[train-all] {len(stores)} store(s), preset {preset}, budget {budget}, runs in {run}")
    t0 = time.perf_counter()
    r1 = train_scene_ae(stores, p1, run / "scene_ae", resume=True, accelerator=accelerator, progress=progress, log=click.echo)
    done("scene_ae", t0, steps=r1.global_step, val=r1.final.__dict__ if r1.final else None)

    t0 = time.perf_counter()
    model = SceneAutoEncoder.from_pretrained(r1.model_dir)
    tc = p1.scene_ae_train
    ev = encode_voxels(model, stores, run / "voxels.zarr", window=tc.window, stride=tc.stride, cameras=tc.cameras,
                       device=device, progress=progress, log=click.echo)
    done("encode_voxels", t0, scenes=ev.scenes)

    t0 = time.perf_counter()
    r2 = train_latent_ae(run / "voxels.zarr", run / "scene_ae", p2, run / "latent_ae", stores, resume=True,
                         accelerator=accelerator, progress=progress, log=click.echo)
    done("latent_ae", t0, steps=r2.global_step)

    t0 = time.perf_counter()
    lae = LatentAutoEncoder.from_pretrained(r2.model_dir)
    el = encode_latents(lae, run / "voxels.zarr", run / "latents.zarr", model_dir=r2.model_dir, device=device,
                        progress=progress, log=click.echo)
    done("encode_latents", t0, scenes=el.scenes)

    for level in "gcf":
        t0 = time.perf_counter()
        r3 = train_ldm(run / "latents.zarr", level, p3, run / f"ldm_{level}", preset_name=preset, resume=True,
                       accelerator=accelerator, progress=progress, log=click.echo)
        done(f"ldm_{level}", t0, steps=r3.global_step, val_loss=r3.val_loss)

    rc = None
    if pc is not None:
        t0 = time.perf_counter()
        rc = train_critic(stores, pc, run / "critic", preset_name=preset, resume=True, accelerator=accelerator,
                          progress=progress, log=click.echo)
        done("critic", t0, steps=rc.global_step, val=rc.final.__dict__ if rc.final else None)

    target = Path(bundle) if bundle else run / "bundle"
    click.get_current_context().invoke(
        export_bundle, scene_ae=str(run / "scene_ae"), latent_ae=str(run / "latent_ae"), ldm_g=str(run / "ldm_g"),
        ldm_c=str(run / "ldm_c"), ldm_f=str(run / "ldm_f"), out=str(target), half=half, overwrite=True)
    if rc is not None:
        add_critic_to_bundle(target, rc.model_dir)
        click.echo(f"[train-all] added the critic to {target} as critic/")
    if pp is not None:
        t0 = time.perf_counter()
        rp = train_prior(stores, pp, run / "prior", bundle=target, preset_name=preset, resume=True,
                         accelerator=accelerator, render_device=device, progress=progress, log=click.echo)
        done("prior", t0, steps=rp.global_step)
        add_prior_to_bundle(target, rp.model_dir, half=half)
        click.echo(f"[train-all] added the SDS prior to {target} as prior/")
    record["bundle"] = str(target)
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    total = sum(s["seconds"] for s in record["stages"].values())
    click.echo(f"[train-all] bundle {target} ({total / 60:.1f} min of training and encoding in total)")
