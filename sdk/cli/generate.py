"""`nfldm generate`: sample scenes from a model bundle and write each one with a preview image.

    nfldm generate --model assets/models/small --num 8 --seed 0 --out out/scenes [--steps 25 --sampler dpmsolver++]

Writes ``OUT/scene_<seed>/`` per scene, each as soon as its batch is sampled (`SceneGenerator.generate_iter`: memory
stays bounded whatever ``--num``): ``field.safetensors`` + ``scene.json`` (`NeuralScene.save`) and ``preview.png``
(`nfldm_sdk.viz.previews.save_preview`) — four views from the scene origin at 1.6 m height looking front (+x), left
(+y), back and right, RGB on the top row and inverse depth (near = bright, no hit = black) below.

``--bev map.png|map.npy`` (a `nfldm_sdk.labels.bev_map.BEVMap` file with its ``map.json`` sidecar) conditions every
scene on one layout (a BEV-conditioned bundle only), with classifier-free guidance ``--guidance-scale``.
"""
from __future__ import annotations

from pathlib import Path

import click

from nfldm_sdk.cli.names import DEVICE_DEFAULT_HELP, SAMPLER_NAMES, default_device
from nfldm_sdk.cli.output_path import check_output, staged_output

#: The file every scene folder holds (`NeuralScene.save`); `--overwrite` replaces only folders that have it.
SCENE_MARKER = "scene.json"


def scene_folder_name(seed: int) -> str:
    """The folder `nfldm generate` writes the scene of `seed` to, inside ``--out``: ``scene_<seed, 6 digits>``."""
    return f"scene_{int(seed):06d}"

__all__ = ["generate"]


@click.command("generate")
@click.option("--model", "model", required=True, type=click.Path(exists=True, file_okay=False),
              help="Model bundle folder (`nfldm export-bundle`).")
@click.option("--num", "num", type=click.IntRange(min=1), default=1, show_default=True, help="Scenes to generate.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the first scene; scene i uses seed + i.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the scenes.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Denoising steps per level (default: the bundle's).")
@click.option("--sampler", type=click.Choice(list(SAMPLER_NAMES)), default=None, help="Sampler (default: the bundle's).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Scenes sampled together (default min(--num, 8); does not change the scenes).")
@click.option("--device", default=default_device, show_default=DEVICE_DEFAULT_HELP, help="torch device.")
@click.option("--preview/--no-preview", default=True, show_default=True, help="Write preview.png of each scene.")
@click.option("--overwrite", is_flag=True, help="Replace scene folders of the same seeds already in OUT.")
@click.option("--bev", "bev", type=click.Path(exists=True, dir_okay=False), default=None,
              help="BEV map (map.png or map.npy with its map.json) to condition every scene on (a BEV-conditioned bundle).")
@click.option("--guidance-scale", type=float, default=1.0, show_default=True,
              help="Classifier-free guidance scale with --bev (1 = the conditional model, > 1 follows the map more).")
def generate(model, num, seed, out, steps, sampler, batch_size, device, preview, overwrite, bev, guidance_scale):
    """Generate scenes with a model bundle; writes OUT/scene_<seed>/ (field, scene.json, preview.png) per scene.

    A scene folder of the same seed already in OUT is refused before anything is sampled unless --overwrite is given
    (which replaces only scene folders); each scene is written beside its folder and moved into place once complete."""
    # start-up time: these import torch, so only a running command loads them (`--help` stays fast)
    from nfldm_sdk.pipelines.generator import SceneGenerator
    from nfldm_sdk.viz.previews import save_preview

    out = Path(out)
    for i in range(num):                     # before the bundle loads: a refusal costs nothing and writes nothing
        check_output(out / scene_folder_name(seed + i), overwrite, marker=SCENE_MARKER, file_suffixes=())
    bev_map = None
    if bev is not None:
        from nfldm_sdk.labels.bev_map import BEVMap

        bev_map = BEVMap.load(bev)
    gen = SceneGenerator.from_pretrained(model, device=device)
    count, how = 0, ""
    for scene in gen.generate_iter(num, seed=seed, steps=steps, sampler=sampler, batch_size=batch_size, progress=True,
                                   bev=bev_map, guidance_scale=guidance_scale):
        folder = out / scene_folder_name(scene.seed)
        with staged_output(folder) as tmp:
            scene.save(tmp)
            if preview:
                save_preview(scene, tmp / "preview.png")
        count, how = count + 1, f"{scene.sampler}, {scene.steps} steps"
        del scene                            # written: drop it, so that only the batch being sampled is held
    click.echo(f"{count} scene(s) in {out} (bundle {gen.bundle_hash[:12]}…, {how})")
