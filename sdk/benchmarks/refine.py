"""Benchmark: seconds of SDS refinement per scene (`nfldm_sdk.guidance.sds.refine_scene`) with prior guidance.

    python -m nfldm_sdk.benchmarks.refine [--sizes tiny small] [--steps 20] [--views 2] [--device cpu] [--threads N]

Random fields and a randomly initialised decoder and prior (the time does not depend on the weights). The sizes
mirror the ``tiny`` / ``small`` presets of ``nfldm_training`` (the SDK cannot import the preset table):

* tiny: grid 8×32×32, C = 8, 64×64 renders (16×16 feature maps, 32 samples/ray), prior 32×32 U-Net (16, 32);
* small: grid 16×64×64, C = 16, 128×128 renders (32×32 feature maps, 64 samples/ray), prior 64×64 U-Net
  (64, 128, 256).

Prints one row per size: seconds per step and per scene for the requested steps (extrapolated to 500 steps).
"""
from __future__ import annotations

import argparse
import time

import torch

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.guidance.guidance import PriorConfig, PriorGuidance, PriorUNet
from nfldm_sdk.models.scene_ae import SceneAEConfig, SceneAutoEncoder
from nfldm_sdk.guidance.sds import RefineConfig, refine_scene

_BOX = ((-16.0, -32.0, -2.0), (48.0, 32.0, 6.0))
SIZES = {
    "tiny": (SceneAEConfig(image_size=(64, 64), downsample=4, depth_bins=16, feature_channels=8, grid_shape=(8, 32, 32),
                           bounds=_BOX, render_samples=32, encoder_widths=(16, 32, 32), decoder_widths=(32, 32, 16)),
             PriorConfig(image_size=(32, 32), block_out_channels=(16, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                         up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8, norm_num_groups=8)),
    "small": (SceneAEConfig(image_size=(128, 128), downsample=4, depth_bins=32, feature_channels=16, grid_shape=(16, 64, 64),
                            bounds=_BOX, render_samples=64, encoder_widths=(32, 64, 128), decoder_widths=(128, 64, 32),
                            blocks_per_stage=2),
              PriorConfig(image_size=(64, 64), block_out_channels=(64, 128, 256),
                          down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                          up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"), layers_per_block=2,
                          attention_head_dim=32, norm_num_groups=32)),
}


def bench(size: str, steps: int, views: int, device: str, seed: int = 0) -> dict:
    """Time `refine_scene` of one random scene of `size` for `steps` steps (after one warm-up step)."""
    torch.manual_seed(seed)
    ae_cfg, prior_cfg = SIZES[size]
    decoder = SceneAutoEncoder(ae_cfg).to(device).eval()
    guidance = PriorGuidance(PriorUNet(prior_cfg)).to(device)
    g = torch.Generator().manual_seed(seed)
    Z, Y, X = ae_cfg.grid_shape
    field = VoxelField(torch.rand(Z, Y, X, generator=g) * 0.2, torch.randn(ae_cfg.feature_channels, Z, Y, X, generator=g),
                       torch.tensor(_BOX)).to(device)
    cfg = RefineConfig(steps=1, views_per_step=views)
    refine_scene(field, decoder, guidance, cfg, progress=False)                      # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = refine_scene(field, decoder, guidance, RefineConfig(steps=steps, views_per_step=views), progress=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"size": size, "steps": steps, "views": views, "seconds": seconds, "per_step": seconds / steps,
            "per_500": 500 * seconds / steps, "skipped": result.nonfinite_steps}


def main(argv: list[str] | None = None) -> None:
    """Command line of ``python -m nfldm_sdk.benchmarks.refine``: run the refinement benchmark and print its table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=list(SIZES))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--views", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {args.device}, {torch.get_num_threads()} threads, {args.views} views/step")
    print(f"{'size':<6} {'steps':>5} {'s/step':>8} {'s/scene (N steps)':>18} {'s/scene (500)':>14}")
    for size in args.sizes:
        r = bench(size, args.steps, args.views, args.device)
        print(f"{r['size']:<6} {r['steps']:>5} {r['per_step']:>8.3f} {r['seconds']:>18.2f} {r['per_500']:>14.1f}")


if __name__ == "__main__":
    main()
