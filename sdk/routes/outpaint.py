"""Route generation by outpainting: scenes along a drive, each sampled in agreement with the one before it.

`generate_route` places boxes along the trajectory (`nfldm_sdk.routes.placement.plan_route`), samples the first
scene as `SceneGenerator.generate` does (g, then c | g, then f | g, c), then each next scene by outpainting, as
InfiniCube, SemCity and the paper's panoramas do: the latents of the scene before it are moved into the new box's
frame (`nfldm_sdk.routes.transfer.transfer_columns`: bilinear over the bird's-eye columns, exact where the boxes'
cells line up, as on a straight route with the default 16 m spacing) and held fixed over the shared part — the
predecessor's columns up to its reach (`nfldm_sdk.routes.placement`), re-noised to each denoising step's level and
written back (`nfldm_sdk.pipelines.sampling.sample_level` with ``known``/``keep``) — while the rest of c
and f is sampled; g (the scene's global style) is the first scene's for the whole route. With a route map (a
world-frame `BEVMap`, e.g. ``sim_bridge route``'s), each box is conditioned on the map's part under it
(`nfldm_sdk.routes.transfer.map_for_box`). Each new scene's decoded field is then cross-faded into its predecessor's
over the overlap (`nfldm_sdk.routes.feather`), where the two decodes of the same latents still differ.

Determinism: scene k's noise comes from a CPU generator seeded ``seed + k``; the same bundle, trajectory, seed and
settings give the same route. Resumable: with ``out=``, each scene is written as soon as it is decoded (its field
and its normalised latents, `nfldm_sdk.routes.neural_route`), and a rerun with the same arguments continues after
the last written scene.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from nfldm_sdk.cameras.trajectory import Trajectory, rigid_inverse
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.labels.bev_map import BEVMap
from nfldm_sdk.models.denoisers import split_g_trajectory
from nfldm_sdk.models.latent_ae import Latents
from nfldm_sdk.pipelines.generate_args import check_bev_args, check_int
from nfldm_sdk.pipelines.sampling import denormalize_level, sample_level
from nfldm_sdk.pipelines.scene import NeuralScene
from nfldm_sdk.routes.neural_route import NeuralRoute, RouteWriter
from nfldm_sdk.routes.feather import feather_into_predecessor
from nfldm_sdk.routes.placement import DEFAULT_OVERLAP_M, RouteError, plan_route
from nfldm_sdk.routes.transfer import map_for_box, source_x, transfer_columns

if TYPE_CHECKING:
    from nfldm_sdk.pipelines.generator import SceneGenerator

__all__ = ["generate_route"]



def _known(prev: dict[str, torch.Tensor], dst_to_src: np.ndarray, bounds_xy, reach: float) -> tuple[dict, dict]:
    """Known (normalised) c and f of the next scene from the previous one's, and where they are known: the columns
    inside the previous grid that lie no farther than `reach` ahead of its anchor."""
    def trusted(grid_yx, inside):
        near = torch.as_tensor(source_x(bounds_xy, grid_yx, dst_to_src) <= reach + 1e-9, device=inside.device)
        return inside & near

    f_vals, f_in = transfer_columns(prev["f"][0], bounds_xy, dst_to_src)                  # [4, Y, X], [Y, X]
    c = prev["c"][0]                                                                        # [4, Zc, Yc, Xc]
    c_vals, c_in = transfer_columns(c.flatten(0, 1), bounds_xy, dst_to_src)
    keep = {"c": trusted(tuple(c.shape[-2:]), c_in), "f": trusted(tuple(prev["f"].shape[-2:]), f_in)}
    return {"c": c_vals.reshape(c.shape)[None], "f": f_vals[None]}, keep


@torch.no_grad()
def _sample_scene(gen: "SceneGenerator", seed: int, condition, guidance_scale: float, steps: int, sampler: str,
                  g: torch.Tensor | None, known: dict | None, keep: dict | None) -> dict[str, torch.Tensor]:
    """Normalised latents of one scene: g sampled unless given, c and f sampled (masked where `keep`)."""
    gens = [torch.Generator("cpu").manual_seed(seed)]
    sampled: dict[str, torch.Tensor] = {}
    for level in ("g", "c", "f"):
        denoiser = gen.denoisers[level]
        if level == "g" and g is not None:
            sampled["g"] = g
            continue
        cond = tuple(sampled[k] for k in denoiser.cond_levels)
        shape = (1, *getattr(denoiser, "sample_shape", denoiser.latent_shape))
        kw = ({"condition": condition, "guidance_scale": guidance_scale}
              if condition is not None and getattr(denoiser, "conditional", False) else {})
        if known is not None and level in known and bool(keep[level].any()):
            kw.update(known=known[level].to(gen.device), keep=keep[level].to(gen.device))
        sampled[level] = sample_level(denoiser, shape, cond, gen.noise_schedule.scheduler(sampler), steps, gens, **kw)
        if level == "g":
            sampled["g"], _ = split_g_trajectory(denoiser.config, sampled["g"])
    return sampled


def generate_route(gen: "SceneGenerator", trajectory: Trajectory, *, bev: BEVMap | None = None, seed: int = 0,
                   overlap_m: float = DEFAULT_OVERLAP_M, reach_m: float | None = None, steps: int | None = None,
                   sampler: str | None = None,
                   guidance_scale: float = 1.0, feather: bool = True, out: str | Path | None = None,
                   overwrite: bool = False, progress: bool = False) -> NeuralRoute:
    """Generate a route of scenes along `trajectory` by outpainting (module docstring).

    Args:
        gen: the `SceneGenerator` of a bundle.
        trajectory: the drive in the world frame (``ego_to_world``), at least two poses; its path length sets the
            number of scenes (`plan_route`).
        bev: optional route map, a `BEVMap` in world-frame metres covering the drive (a conditional bundle only);
            each scene is conditioned on its box's part (`map_for_box`; unobserved beyond the map).
        seed: seed of the first scene (scene k uses ``seed + k``), an integer >= 0.
        overlap_m: route consecutive scenes share and hold identical, metres (`plan_route`).
        reach_m: how far ahead of its anchor a scene is trusted (`plan_route`), metres; None: `nfldm_sdk.routes.placement.DEFAULT_REACH_M`
            or the box's front, whichever is nearer.
        steps, sampler: denoising steps per level and sampler (None: the bundle's defaults).
        guidance_scale: classifier-free guidance scale with `bev`.
        feather: cross-fade each new scene's field into its predecessor's over the overlap
            (`nfldm_sdk.routes.feather`); False keeps every scene's own decode.
        out: a route folder to write each scene into as it is made (`NeuralRoute.save`'s layout) and to resume
            from: a folder holding part of the same route continues after its last scene.
        overwrite: start `out` afresh even if it holds another route.
        progress: a progress bar over scenes.
    Returns:
        the `NeuralRoute` (scenes on the generator's device, decoder = the bundle's stage-1 model).
    Raises:
        `RouteError` / `GenerateArgumentError` naming a bad argument, before anything is sampled or written; a
        `RouteError` when `out` holds a different route (without `overwrite`).
    """
    seed = check_int("seed", seed, 0)
    steps = gen.sampler_defaults.steps if steps is None else check_int("steps", steps, 1)
    sampler = sampler or gen.sampler_defaults.sampler
    cfg = gen.latent_ae.config
    (xmin, ymin, _), (xmax, ymax, _) = cfg.bounds
    bounds_xy = ((float(xmin), float(ymin)), (float(xmax), float(ymax)))
    if bev is not None and not isinstance(bev, BEVMap):
        raise RouteError(f"bev must be a world-frame BEVMap covering the route (BEVMap.load('map.json') of "
                         f"`sim_bridge route`), got {type(bev).__name__}")
    check_bev_args(None, guidance_scale, 1, conditional=gen.conditional, grid_yx=gen.bev_grid_yx, bounds=cfg.bounds)
    plan = plan_route(trajectory, (xmin, xmax), overlap_m, box_y=(ymin, ymax), reach_m=reach_m)
    reach = plan.reach_m
    maps = None
    if bev is not None:
        maps = [check_bev_args(map_for_box(bev, plan.scene_to_world[k], bounds_xy, gen.bev_grid_yx or (1, 1)),
                               guidance_scale, 1, conditional=gen.conditional, grid_yx=gen.bev_grid_yx,
                               bounds=cfg.bounds) for k in range(len(plan))]
    settings = {"seed": seed, "steps": steps, "sampler": sampler, "guidance_scale": float(guidance_scale),
                "bundle_hash": gen.bundle_hash, "conditioned": bev is not None, "feather": bool(feather)}
    writer = None if out is None else RouteWriter.open(out, plan, trajectory, settings, bev, overwrite=overwrite)
    scenes: list[NeuralScene] = []
    latents: dict[str, torch.Tensor] | None = None
    if writer is not None:
        scenes, latents = writer.load_done(gen)
    bar = None
    if progress:
        from tqdm.auto import tqdm  # start-up time: tqdm only when a bar is asked for

        bar = tqdm(total=len(plan), initial=len(scenes), desc="route", unit="scene")
    try:
        for k in range(len(scenes), len(plan)):
            known = keep = None
            if latents is not None:
                dst_to_src = rigid_inverse(plan.scene_to_world[k - 1]) @ plan.scene_to_world[k]
                known, keep = _known(latents, dst_to_src, bounds_xy, reach)
            latents = _sample_scene(gen, seed + k, None if maps is None else maps[k], float(guidance_scale), steps,
                                    sampler, None if latents is None else latents["g"], known, keep)
            decoded = gen.latent_ae.decode(Latents(**{lv: denormalize_level(gen.latent_stats, lv, v)
                                                      for lv, v in latents.items()}),
                                           snap_to_codebook=gen.sampler_defaults.snap_to_codebook)[0]
            field = VoxelField(decoded.density.clone(), decoded.features.clone(), decoded.bounds.clone())
            if feather and k > 0:
                field = feather_into_predecessor(field, scenes[k - 1].field, bounds_xy, dst_to_src, reach=reach)
            scene = NeuralScene(field=field,
                                seed=seed + k, bundle_hash=gen.bundle_hash, decoder=gen.scene_ae, sampler=sampler,
                                steps=steps)
            scenes.append(scene)
            if writer is not None:
                writer.add(k, scene, latents)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    route = NeuralRoute(scenes=scenes, plan=plan, trajectory=trajectory, bev=bev, settings=settings)
    if writer is not None:
        writer.finish()
    return route

