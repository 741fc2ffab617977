"""Stage-3 view of the preset table (hierarchical latent diffusion): `LDM_PRESETS` by preset name.

The values live in the one preset table (``nfldm_training.configs.presets.PRESETS``, section ``ldm``);
`LDM_PRESETS` / `get_ldm_preset` give them as `LDMPreset`s (the section types are in
`nfldm_training.configs.sections`).

The denoisers' latent shapes are NOT preset values: they follow from the LAE the latents come from. The
configs hold the network sizes; `with_latent_shapes` fills in ``g_dim`` / ``latent_shape`` / ``c_shape``
from the LAE's config (bench, tests) or from the arrays of the latent store (`nfldm train ldm`).

Sizes (ours; the paper gives none for stage 3):

* ``tiny`` — CI on CPU: a few hundred thousand parameters per level, 200 steps.
* ``small`` — the shipped default: g MLP 512×4, U-Nets (64, 128, 128) with mid attention; ~20k steps per level
  on one GPU (the three levels train in parallel).
* ``paper`` — for the paper's latents (g 128, c [4, 16, 32, 32], f [4, 128, 128]): g MLP 1024×6, U-Nets of
  (128, 256, 512) for c and (128, 256, 256, 512) for f.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch

from nfldm_sdk.models.denoisers import CDenoiser, FDenoiser, GDenoiser
from nfldm_sdk.models.latent_ae import LatentAutoEncoder, LatentStats
from nfldm_sdk.models.scene_ae import SceneAutoEncoder
from nfldm_sdk.pipelines.generator import SceneGenerator
from nfldm_training.configs.presets import PRESETS, copy_with_overrides
from nfldm_training.configs.sections import LDMPreset

__all__ = ["LDM_PRESETS", "get_ldm_preset", "with_latent_shapes", "random_generator"]

#: The stage-3 view of `PRESETS`, by preset name (the table's own objects: copy before changing).
LDM_PRESETS: dict[str, LDMPreset] = {name: p.ldm for name, p in PRESETS.items()}


def get_ldm_preset(name: str, overrides: Mapping[str, Any] | None = None) -> LDMPreset:
    """A copy of ``LDM_PRESETS[name]`` with dotted `overrides` (``{"train_g.max_steps": 10}``) applied.

    Raises ``KeyError`` listing the names for an unknown one, or naming the section's fields for an unknown key.
    """
    return copy_with_overrides(LDM_PRESETS, name, overrides)


def with_latent_shapes(ldm: LDMPreset, g_dim: int, c_shape: tuple[int, int, int, int], f_shape: tuple[int, int, int],
                       *, bev_grid_yx: tuple[int, int] | None = None, trajectory_frames: int | None = None,
                       trajectory_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None) -> LDMPreset:
    """A copy of `ldm` whose denoisers are sized for latents g ``[g_dim]``, c ``c_shape = (C, Zc, Yc, Xc)`` and f
    ``f_shape = (C, Y, X)`` (raises the configs' own errors when the U-Nets do not fit the spatial sizes).

    The conditioning sizes of a latent store with ``bev``/``trajectory`` are filled in too when given: the maps'
    ``bev_grid_yx`` (every denoiser), ψ_g's ``trajectory_frames`` and ``trajectory_mean``/``trajectory_std``
    (`trajectory_stats` = ``(mean, std)`` of ``(x, y, yaw)``)."""
    c_shape, f_shape = tuple(int(v) for v in c_shape), tuple(int(v) for v in f_shape)
    extra: dict = {} if bev_grid_yx is None else {"bev_grid_yx": tuple(int(v) for v in bev_grid_yx)}
    g_extra = dict(extra)
    if trajectory_frames is not None:
        g_extra["trajectory_frames"] = int(trajectory_frames)
    if trajectory_stats is not None:
        g_extra["trajectory_mean"] = tuple(float(v) for v in trajectory_stats[0])
        g_extra["trajectory_std"] = tuple(float(v) for v in trajectory_stats[1])
    return dataclasses.replace(
        ldm,
        denoiser_g=dataclasses.replace(ldm.denoiser_g, g_dim=int(g_dim), **g_extra),
        denoiser_c=dataclasses.replace(ldm.denoiser_c, g_dim=int(g_dim), latent_shape=c_shape, **extra),
        denoiser_f=dataclasses.replace(ldm.denoiser_f, g_dim=int(g_dim), latent_shape=f_shape, c_shape=c_shape, **extra))


def random_generator(name: str, seed: int = 0, overrides: Mapping[str, Any] | None = None) -> SceneGenerator:
    """A `SceneGenerator` of randomly initialised models of preset `name` (stage 1, 2 and 3 sizes), seeded.

    For benchmarks and tests: the sampling time does not depend on the weights. Latent statistics are the identity
    (mean 0, std 1). `overrides` are dotted stage-3 keys (``{"denoiser_c.bev_condition": True}``); BEV maps are
    sized to the voxel grid's Y×X.
    """
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    torch.manual_seed(seed)  # module initialisation draws from the global RNG
    scene_cfg = PRESETS[name].scene_ae
    lae_cfg = PRESETS[name].latent_ae  # built from the same stage-1 preset's grid, channels and box
    ldm = with_latent_shapes(get_ldm_preset(name, overrides), lae_cfg.g_dim, lae_cfg.c_shape, lae_cfg.f_shape,
                             bev_grid_yx=tuple(scene_cfg.grid_shape[1:]))
    denoisers = {"g": GDenoiser(ldm.denoiser_g), "c": CDenoiser(ldm.denoiser_c), "f": FDenoiser(ldm.denoiser_f)}
    return SceneGenerator(SceneAutoEncoder(scene_cfg), LatentAutoEncoder(lae_cfg), denoisers, LatentStats(),
                          ldm.schedule, ldm.sampler, bundle_hash=f"random-{name}-{seed}")
