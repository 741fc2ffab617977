"""The oracle of every renderer: the rendering model of `nfldm_sdk.rendering.api` written out plainly.

Every sample of every ray in one tensor, one ``grid_sample`` of the packed ``[1+C]`` grid, transmittance by
``cumprod``. Readable and memory-hungry (about ``rays × n_samples × (C+1) × 4`` bytes): the fast paths
(`nfldm_sdk.rendering.torch_paths`, `nfldm_sdk.rendering.triton_render`) are tested against it.
"""
from __future__ import annotations

import math

import torch

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.rendering.rays import HIT_ALPHA, RenderOutput, finish_render, prepare_rays, sample_grid, sample_t

__all__ = ["render_field_reference"]


def render_field_reference(field: VoxelField, cameras: Cameras, n_samples: int = 128, near: float = 0.0,
                           far: float | None = None, *, stratified: bool = False,
                           generator: torch.Generator | None = None, min_hit_alpha: float = HIT_ALPHA,
                           no_hit_depth: float = math.inf) -> RenderOutput:
    """Plain-PyTorch oracle of `render_field` (see `nfldm_sdk.rendering.api` for the model and the shapes).

    All ``rays × n_samples`` samples at once: positions, ONE ``grid_sample`` of the packed ``[1+C]`` grid,
    transmittance as a ``cumprod`` of ``1 − α``. Use it in tests and to check fast paths, not for big renders.
    """
    b = prepare_rays(field, cameras, n_samples, near, far, stratified, generator)
    t = sample_t(b.t0, b.delta, n_samples, b.jitter)                          # [B, R, S] ray distances
    pts = b.o_n[:, :, None, :] + t[..., None] * b.d_n[:, :, None, :]          # [B, R, S, 3] normalised positions
    packed = torch.cat([b.density, b.features], dim=1)                        # [B, 1+C, Z, Y, X]
    samples = sample_grid(packed, pts)                                        # [B, 1+C, R, S]
    sigma, f = samples[:, 0], samples[:, 1:]                                  # [B, R, S], [B, C, R, S]
    alpha_i = 1.0 - torch.exp(-sigma * b.delta[..., None])                    # [B, R, S]
    ones = torch.ones_like(alpha_i[..., :1])
    T = torch.cumprod(torch.cat([ones, 1.0 - alpha_i], dim=-1), dim=-1)       # [B, R, S+1]; T[..., i] = Π_{j<i}
    w = T[..., :-1] * alpha_i                                                 # [B, R, S]
    feats = (w[:, None] * f).sum(dim=-1)                                      # [B, C, R]
    z = t * b.z_per_t[..., None]                                              # [B, R, S] planar depth
    return finish_render(b, feats, (w * z).sum(-1), 1.0 - T[..., -1], min_hit_alpha, no_hit_depth)
