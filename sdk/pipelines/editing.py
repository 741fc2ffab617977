"""Editing a scene through its latents: regenerate the coarse and fine latents inside a bird's-eye region.

`edit_scene` (also `SceneGenerator.edit`) follows the paper's editing through c: the scene's field is encoded by the
LAE (g, c, f), then c and f are sampled again by masked diffusion — outside the region the known latents are
re-noised to each step's level and written back (`nfldm_sdk.pipelines.sampling.sample_level` with ``known`` /
``keep``), inside the region they are sampled in agreement with their surroundings, optionally under a new BEV map
for a conditional bundle — and decoded. g stays the scene's. Finally the decoded field is written into the original
field only inside the region's columns, so every voxel outside the region keeps its value exactly.

Regions are ``[Y, X]`` bool masks over the voxel grid's columns (`nfldm_sdk.labels.bev_map.BEVMap.region_mask`) or
boxes ``(x0, y0, x1, y1)`` metres in the scene frame.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.models.latent_ae import Latents
from nfldm_sdk.pipelines.generate_args import GenerateArgumentError, check_bev_args, check_int
from nfldm_sdk.pipelines.sampling import denormalize_level, normalize_level, sample_level
from nfldm_sdk.pipelines.scene import NeuralScene

if TYPE_CHECKING:  # the generator imports this module
    from nfldm_sdk.pipelines.generator import SceneGenerator

__all__ = ["region_from_box", "edit_scene"]


def region_from_box(box: Sequence[float], bounds, grid_yx: tuple[int, int]) -> torch.Tensor:
    """``[Y, X]`` bool: the grid columns whose centres lie inside ``box = (x0, y0, x1, y1)`` metres (scene frame).

    Args:
        box: two corners in any order, metres.
        bounds: the voxel box ``((xmin, ymin, zmin), (xmax, ymax, zmax))`` metres.
        grid_yx: ``(Y, X)`` columns.
    """
    if len(box) != 4:
        raise GenerateArgumentError(f"box must be (x0, y0, x1, y1) metres, got {tuple(box)}")
    x0, x1 = sorted((float(box[0]), float(box[2])))
    y0, y1 = sorted((float(box[1]), float(box[3])))
    (xmin, ymin, _), (xmax, ymax, _) = bounds
    Y, X = grid_yx
    xs = xmin + (torch.arange(X, dtype=torch.float64) + 0.5) * (xmax - xmin) / X
    ys = ymin + (torch.arange(Y, dtype=torch.float64) + 0.5) * (ymax - ymin) / Y
    return ((ys >= y0) & (ys <= y1))[:, None] & ((xs >= x0) & (xs <= x1))[None, :]


def _region(region, bounds, grid_yx: tuple[int, int]) -> torch.Tensor:
    if isinstance(region, (tuple, list)) and len(region) == 4 and not hasattr(region[0], "__len__"):
        mask = region_from_box(region, bounds, grid_yx)
    else:
        mask = torch.as_tensor(region)
        if mask.dtype != torch.bool or tuple(mask.shape) != tuple(grid_yx):
            raise GenerateArgumentError(f"region must be a box (x0, y0, x1, y1) in metres or a bool mask of the grid's "
                                        f"columns {tuple(grid_yx)} (BEVMap.region_mask), got "
                                        f"{tuple(mask.shape)} {mask.dtype}")
    if not bool(mask.any()):
        raise GenerateArgumentError("the edit region covers no grid column: give a box inside the scene's box "
                                    f"x ∈ [{bounds[0][0]}, {bounds[1][0]}], y ∈ [{bounds[0][1]}, {bounds[1][1]}] m")
    return mask


def _coarse_mask(region: torch.Tensor, coarse_yx: tuple[int, int]) -> torch.Tensor:
    """The coarse cells any of whose columns lie in the region (so the coarse latent there may change)."""
    pooled = F.adaptive_max_pool2d(region[None, None].float(), coarse_yx)[0, 0]
    return pooled > 0


@torch.no_grad()
def edit_scene(gen: "SceneGenerator", scene: NeuralScene, region, *, bev=None, seed: int = 0, steps: int | None = None,
               sampler: str | None = None, guidance_scale: float = 1.0) -> NeuralScene:
    """Regenerate `scene` inside a bird's-eye `region` (module docstring); the input scene is unchanged.

    Args:
        gen: the `SceneGenerator` of the bundle that made the scene (its LAE encodes it, its denoisers resample).
        scene: a `NeuralScene` whose field has the bundle's grid.
        region: a box ``(x0, y0, x1, y1)`` metres in the scene frame, or a ``[Y, X]`` bool mask of grid columns.
        bev: for a conditional bundle, the map to generate under (a `BEVMap` or ``[Y, X]`` tags; e.g. the scene's own
            `BEVMap.from_scene(scene)` painted inside the region); None: unconditional.
        seed: seed of the noise (an integer >= 0).
        steps, sampler: denoising steps per level and sampler (None: the bundle's).
        guidance_scale: classifier-free guidance scale with `bev`.
    Returns:
        a new `NeuralScene`: the field equals `scene.field` on every column outside the region.
    Raises:
        `GenerateArgumentError` naming a bad region, seed or map, before anything is sampled.
    """
    seed = check_int("seed", seed, 0)
    cfg = gen.latent_ae.config
    Z, Y, X = cfg.grid_shape
    field = scene.field.to(device=gen.device, dtype=torch.float32)
    if tuple(field.density.shape) != (Z, Y, X):
        raise GenerateArgumentError(f"the scene's grid {tuple(field.density.shape)} is not the bundle's {(Z, Y, X)}: "
                                    "edit a scene with the bundle that generated it")
    mask = _region(region, cfg.bounds, (Y, X)).to(gen.device)                     # [Y, X] True = regenerate
    condition = check_bev_args(bev, guidance_scale, 1, conditional=gen.conditional, grid_yx=gen.bev_grid_yx,
                               bounds=cfg.bounds)
    steps = gen.sampler_defaults.steps if steps is None else check_int("steps", steps, 1)
    sampler = sampler or gen.sampler_defaults.sampler
    latents = gen.latent_ae.encode(VoxelField.stack([field]))
    known = {k: normalize_level(gen.latent_stats, k, getattr(latents, k)) for k in ("g", "c", "f")}
    keep = {"c": ~_coarse_mask(mask, tuple(cfg.coarse_grid[1:])), "f": ~mask}     # [Yc, Xc], [Y, X]
    gens = [torch.Generator("cpu").manual_seed(seed)]
    sampled = {"g": known["g"]}
    for level in ("c", "f"):
        denoiser = gen.denoisers[level]
        cond = tuple(sampled[k] for k in denoiser.cond_levels)
        kw = ({"condition": condition, "guidance_scale": guidance_scale}
              if getattr(denoiser, "conditional", False) else {})
        sampled[level] = sample_level(denoiser, known[level].shape, cond, gen.noise_schedule.scheduler(sampler), steps,
                                      gens, known=known[level], keep=keep[level], **kw)
    new = gen.latent_ae.decode(Latents(**{k: denormalize_level(gen.latent_stats, k, v) for k, v in sampled.items()}),
                               snap_to_codebook=gen.sampler_defaults.snap_to_codebook)[0]
    density = torch.where(mask, new.density, field.density)                       # [Z, Y, X]
    features = torch.where(mask, new.features, field.features)                    # [C, Z, Y, X]
    return NeuralScene(field=VoxelField(density, features, field.bounds.clone()), seed=scene.seed,
                       bundle_hash=scene.bundle_hash, decoder=scene.decoder, sampler=sampler, steps=steps,
                       trajectory=scene.trajectory, refinements=scene.refinements)
