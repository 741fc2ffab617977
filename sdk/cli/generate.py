"""`nfldm generate`: sample scenes from a model bundle and write each one with a preview image.

    nfldm generate --model assets/models/small --num 8 --seed 0 --out out/scenes [--steps 25 --sampler dpmsolver++]

Writes ``OUT/scene_<seed>/`` per scene, each as soon as its batch is sampled (`SceneGenerator.generate_iter`: memory
stays bounded whatever ``--num``): ``field.safetensors`` + ``scene.json`` (`NeuralScene.save`) and ``preview.png`` — four views from the scene origin at 1.6 m height looking front (+x), left (+y), back and right,
RGB on the top row and inverse depth (near = bright, no hit = black) below.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import click

from nfldm_sdk.cli.names import DEVICE_DEFAULT_HELP, SAMPLER_NAMES, default_device

if TYPE_CHECKING:  # torch, numpy and the SDK modules are imported inside the functions: `--help` start-up time
    import numpy as np

    from nfldm_sdk.cameras.pinhole import Cameras
    from nfldm_sdk.pipelines.generator import NeuralScene

__all__ = ["generate", "preview_cameras", "preview_image", "save_preview"]

#: Preview view directions: yaw in degrees about z (0 = front = +x, 90 = left = +y).
PREVIEW_YAWS = (("front", 0.0), ("left", 90.0), ("back", 180.0), ("right", 270.0))


def preview_cameras(width: int, height: int, *, eye_height: float = 1.6, hfov_deg: float = 90.0) -> Cameras:
    """Four horizontal cameras ``[4]`` at ``(0, 0, eye_height)`` in the scene frame looking front/left/back/right.

    OpenCV axes: z (forward) = ``(cos yaw, sin yaw, 0)``, y (down) = ``(0, 0, -1)``, x (right) = y × z.
    """
    import torch

    from nfldm_sdk.cameras.pinhole import Cameras

    mats = []
    for _, yaw_deg in PREVIEW_YAWS:
        yaw = math.radians(yaw_deg)
        fwd = torch.tensor([math.cos(yaw), math.sin(yaw), 0.0], dtype=torch.float64)
        down = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64)
        right = torch.linalg.cross(down, fwd)               # x = y × z for a right-handed camera frame
        m = torch.eye(4, dtype=torch.float64)
        m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, down, fwd, torch.tensor([0.0, 0.0, eye_height], dtype=torch.float64)
        mats.append(m)
    return Cameras.from_fov(hfov_deg, width, height, torch.stack(mats).float())


def preview_image(scene: NeuralScene, width: int | None = None, height: int | None = None) -> np.ndarray:
    """``[2H, 4W, 3]`` uint8: the four preview views' RGB on top, inverse depth (1 m bright … far/none black) below.

    The view size defaults to the decoder's training image size."""
    import numpy as np
    import torch

    if scene.decoder is None:
        raise ValueError("the scene has no decoder to render the preview with")
    h0, w0 = scene.decoder.config.image_size
    images = scene.render(preview_cameras(width or w0, height or h0))
    rgb = images.rgb.cpu().numpy()                                                    # [4, H, W, 3]
    inv = torch.where(torch.isfinite(images.depth), 1.0 / images.depth.clamp_min(1.0), torch.zeros_like(images.depth))
    gray = (inv.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()             # [4, H, W]
    top = np.concatenate(list(rgb), axis=1)                                          # [H, 4W, 3]
    bottom = np.repeat(np.concatenate(list(gray), axis=1)[..., None], 3, axis=-1)    # [H, 4W, 3]
    return np.concatenate([top, bottom], axis=0)


def save_preview(scene: NeuralScene, path: str | Path) -> Path:
    """Write `preview_image` of `scene` as a PNG."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, preview_image(scene))
    return path


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
def generate(model, num, seed, out, steps, sampler, batch_size, device, preview):
    """Generate scenes with a model bundle; writes OUT/scene_<seed>/ (field, scene.json, preview.png) per scene."""
    from nfldm_sdk.pipelines.generator import SceneGenerator

    gen = SceneGenerator.from_pretrained(model, device=device)
    out = Path(out)
    count, how = 0, ""
    for scene in gen.generate_iter(num, seed=seed, steps=steps, sampler=sampler, batch_size=batch_size, progress=True):
        folder = scene.save(out / f"scene_{scene.seed:06d}")
        if preview:
            save_preview(scene, folder / "preview.png")
        count, how = count + 1, f"{scene.sampler}, {scene.steps} steps"
        del scene                            # written: drop it, so that only the batch being sampled is held
    click.echo(f"{count} scene(s) in {out} (bundle {gen.bundle_hash[:12]}…, {how})")
