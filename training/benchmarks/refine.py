"""Benchmark: seconds of SDS refinement per scene (`nfldm_sdk.guidance.sds.refine_scene`) with prior guidance.

    python -m nfldm_training.benchmarks.refine [--sizes tiny small] [--steps 20] [--views 2] [--device cpu] [--threads N]

Random fields and a randomly initialised decoder and prior (the time does not depend on the weights), of the
stage-1 and stage-4 sizes of a preset of the table (`nfldm_training.configs.presets.PRESETS`, `refine_sizes`):

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
from nfldm_sdk.guidance.prior import PriorGuidance
from nfldm_sdk.guidance.sds import RefineConfig, refine_scene
from nfldm_sdk.models.prior_unet import PriorConfig, PriorUNet
from nfldm_sdk.models.scene_ae import SceneAEConfig, SceneAutoEncoder
from nfldm_training.configs.presets import PRESETS

__all__ = ["refine_sizes", "bench", "main"]


def refine_sizes(size: str) -> tuple[SceneAEConfig, PriorConfig]:
    """The decoder and prior configs the benchmark builds for preset `size` (``PRESETS[size].scene_ae`` and
    ``PRESETS[size].prior.prior``); KeyError listing the presets for an unknown one."""
    if size not in PRESETS:
        raise KeyError(f"unknown preset {size!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[size].scene_ae, PRESETS[size].prior.prior


def bench(size: str, steps: int, views: int, device: str, seed: int = 0) -> dict:
    """Time `refine_scene` of one random scene of preset `size` for `steps` steps (after one warm-up step).

    Returns:
        ``{"size", "steps", "views", "seconds", "per_step", "per_500", "skipped"}``: wall seconds of the timed
        steps, seconds per step, seconds extrapolated to 500 steps, and the steps skipped as non-finite.
    """
    torch.manual_seed(seed)
    ae_cfg, prior_cfg = refine_sizes(size)
    decoder = SceneAutoEncoder(ae_cfg).to(device).eval()
    guidance = PriorGuidance(PriorUNet(prior_cfg)).to(device)
    g = torch.Generator().manual_seed(seed)
    Z, Y, X = ae_cfg.grid_shape
    field = VoxelField(torch.rand(Z, Y, X, generator=g) * 0.2, torch.randn(ae_cfg.feature_channels, Z, Y, X, generator=g),
                       torch.tensor(ae_cfg.bounds)).to(device)
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
    """Command line of ``python -m nfldm_training.benchmarks.refine``: run the refinement benchmark and print its table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=list(PRESETS))
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
