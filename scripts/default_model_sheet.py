"""The picture test of the default model: captured | stage-1 reconstruction | generated, at the same rig.

    python scripts/default_model_sheet.py BUNDLE STORE... --out docs/images/default_model_sheet.png [--rows 4]

One row per held-out window (spread over the stores' episodes; pass stores the model never saw): the anchor frame's
cameras as captured, their stage-1 reconstruction (encode the window, render at the same cameras), and a generated
scene (seed ``--seed + row``) rendered at the same cameras in its own scene frame. Renders use the SDK's user-facing
rule (`NeuralScene.render`: no hit below opacity 0.5). ``--cameras`` picks which rig cameras to show (indices).
"""
from __future__ import annotations

import argparse

import imageio.v3 as iio
import numpy as np
import torch

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.pipelines.generator import SceneGenerator
from nfldm_sdk.rendering.api import HIT_ALPHA
from nfldm_training.data.capture_windows import SceneWindowDataset, collate_windows
from nfldm_training.evaluation.semantic import spread_indices


def _tiles(images: torch.Tensor) -> np.ndarray:
    """``[V, 3, H, W]`` in [0, 1] -> ``[H, V·W, 3]`` uint8."""
    x = (images.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    return np.concatenate(list(x), axis=1)


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, build the sheet and write it."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("stores", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cameras", default="0,1,2", help="rig camera indices to show, comma-separated")
    ap.add_argument("--gap", type=int, default=6, help="white pixels between the three blocks")
    args = ap.parse_args(argv)
    gen = SceneGenerator.from_pretrained(args.bundle)
    ae = gen.scene_ae
    data = SceneWindowDataset(args.stores, 2, image_size=ae.config.image_size, split="all")
    cams_shown = [int(c) for c in args.cameras.split(",")]
    scenes = gen.generate(args.rows, seed=args.seed)
    rows = []
    for r, index in enumerate(spread_indices(len(data), args.rows)):
        batch = collate_windows([data[index]])
        n = batch.images.shape[1] // 2                                   # views of the anchor frame (frame-major)
        views = torch.tensor([(batch.images.shape[1] // n - 1) // 2 * n + c for c in cams_shown])
        cams = batch.cameras()
        with torch.no_grad():
            recon = ae.decode(ae.encode(batch.images, cams), cams[:, views], min_hit_alpha=HIT_ALPHA).rgb[0]
            field = VoxelField.stack([scenes[r].field.to(dtype=torch.float32)])
            generated = ae.decode(field, cams[:, views], min_hit_alpha=HIT_ALPHA).rgb[0]
        blocks = [_tiles(batch.images[0, views]), _tiles(recon), _tiles(generated)]
        gap = np.full((blocks[0].shape[0], args.gap, 3), 255, np.uint8)
        rows.append(np.concatenate([blocks[0], gap, blocks[1], gap, blocks[2]], axis=1))
        rows.append(np.full((args.gap, rows[-1].shape[1], 3), 255, np.uint8))
    sheet = np.concatenate(rows[:-1], axis=0)
    iio.imwrite(args.out, sheet)
    print(f"wrote {args.out}: {sheet.shape[1]}x{sheet.shape[0]} (captured | stage-1 reconstruction | generated)")


if __name__ == "__main__":
    main()
