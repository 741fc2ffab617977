"""`nfldm edit`: regenerate a saved scene inside a bird's-eye box, keeping the rest of its field.

    nfldm edit out/scene_000000 --model BUNDLE --box 8 -8 24 8 --out out/scene_000000_edited [--bev map.png]

Encodes the scene's field with the bundle's LAE, resamples the coarse and fine latents inside the box by masked
diffusion (`nfldm_sdk.pipelines.editing.edit_scene`), optionally under a new BEV map (a BEV-conditioned bundle), and
writes the edited scene (``field.safetensors`` + ``scene.json`` + ``preview.png``) to ``--out``. Every voxel column
outside the box keeps its value.
"""
from __future__ import annotations

from pathlib import Path

import click

from nfldm_sdk.cli.names import DEVICE_DEFAULT_HELP, SAMPLER_NAMES, default_device
from nfldm_sdk.cli.output_path import check_output, staged_output

__all__ = ["edit"]


@click.command("edit")
@click.argument("scene", type=click.Path(exists=True, file_okay=False))
@click.option("--model", "model", required=True, type=click.Path(exists=True, file_okay=False),
              help="The model bundle that generated the scene.")
@click.option("--box", nargs=4, type=float, required=True, metavar="X0 Y0 X1 Y1",
              help="The region to regenerate: two corners in metres in the scene frame (x forward, y left).")
@click.option("--bev", "bev", type=click.Path(exists=True, dir_okay=False), default=None,
              help="BEV map (map.png or map.npy with its map.json) to regenerate under (a BEV-conditioned bundle).")
@click.option("--guidance-scale", type=float, default=1.0, show_default=True, help="Classifier-free guidance with --bev.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Seed of the edit's noise.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Denoising steps per level (default: the bundle's).")
@click.option("--sampler", type=click.Choice(list(SAMPLER_NAMES)), default=None, help="Sampler (default: the bundle's).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the edited scene.")
@click.option("--overwrite", is_flag=True, help="Replace a scene already at --out.")
@click.option("--device", default=default_device, show_default=DEVICE_DEFAULT_HELP, help="torch device.")
def edit(scene, model, box, bev, guidance_scale, seed, steps, sampler, out, overwrite, device):
    """Regenerate SCENE inside --box with its bundle (masked diffusion of c and f); the rest of the field is kept."""
    # start-up time: these import torch, so only a running command loads them (`--help` stays fast)
    from nfldm_sdk.labels.bev_map import BEVMap
    from nfldm_sdk.pipelines.generate_args import GenerateArgumentError
    from nfldm_sdk.pipelines.generator import SceneGenerator
    from nfldm_sdk.pipelines.scene import NeuralScene
    from nfldm_sdk.viz.previews import save_preview

    out = Path(out)
    check_output(out, overwrite, marker="scene.json", file_suffixes=())
    bev_map = BEVMap.load(bev) if bev is not None else None
    gen = SceneGenerator.from_pretrained(model, device=device)
    raw = NeuralScene.load(scene, decoder=gen.scene_ae)
    try:
        edited = gen.edit(raw, tuple(box), bev=bev_map, seed=seed, steps=steps, sampler=sampler,
                          guidance_scale=guidance_scale)
    except GenerateArgumentError as e:
        raise click.UsageError(str(e))
    with staged_output(out) as tmp:
        edited.save(tmp)
        save_preview(edited, tmp / "preview.png")
    click.echo(f"edited {scene} inside x ∈ [{min(box[0], box[2])}, {max(box[0], box[2])}], "
               f"y ∈ [{min(box[1], box[3])}, {max(box[1], box[3])}] m -> {out}")
