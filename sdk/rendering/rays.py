"""The ray batch every renderer works on: from a field and its cameras to rays in grid coordinates, and back.

Every implementation of `nfldm_sdk.rendering.api.render_field` (model: that module's docstring) starts with
`prepare_rays` — one ray per pixel of every camera, clipped to the field's box and to ``[near, far]``, in the
normalised coordinates of ``grid_sample`` (box = ``[-1, 1]^3``) — marches ``n_samples`` samples per ray
(`sample_t`, `sample_points`, `sample_grid`), and ends with `finish_render`, which turns the per-ray sums back into
images (`RenderOutput`) with the no-hit convention of `HIT_ALPHA`.

Layout of a `RayBatch`: ``B`` fields (1 for an unbatched field), ``R = N·H·W`` rays per field (the ``N`` cameras of
that field, each row-major over its pixels).

Example::

    b = prepare_rays(field, cams, n_samples=64)                  # RayBatch, rays [B, R]
    t, pts = sample_points(b, slice(None), 64)                   # [B, R, 64], [B, R, 64, 3]
    sigma = sample_grid(b.density, pts)[:, 0]                    # [B, R, 64]
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.fields.voxel_field import VoxelField

__all__ = ["HIT_ALPHA", "RayBatch", "RenderOutput", "clip_rays_to_box", "finish_render", "prepare_rays",
           "sample_grid", "sample_points", "sample_t"]

#: The hit threshold: a ray whose opacity ``alpha = 1 − T_final`` stays below it met nothing (depth ``inf``).
#: 0.5 = half the ray's light absorbed, i.e. its median termination point lies inside the box. Used as the default
#: by every renderer (`render_field` and all its implementations, the sensors, `NeuralScene.render`, exports,
#: point clouds), so ``isfinite(depth) == (alpha >= HIT_ALPHA)`` at the render's resolution.
HIT_ALPHA = 0.5


@dataclass(eq=False)
class RenderOutput:
    """What a render returns. Leading shape ``[...]`` = the cameras' batch shape (``[B, ...]`` for a batched field).

    Attributes:
        features: ``[..., C, H, W]`` composited features ``Σ w_i f_i`` (no background added).
        depth: ``[..., H, W]`` planar z-depth in metres, ``Σ w_i z_i / alpha``; ``no_hit_depth`` (default ``inf``)
            where ``alpha < min_hit_alpha`` (default `HIT_ALPHA`).
        alpha: ``[..., H, W]`` opacity ``1 − T_final`` in [0, 1].
    """

    features: torch.Tensor
    depth: torch.Tensor
    alpha: torch.Tensor


def clip_rays_to_box(origins: torch.Tensor, directions: torch.Tensor, box_min: torch.Tensor, box_max: torch.Tensor,
                     t_min: torch.Tensor | float = 0.0, t_max: torch.Tensor | float = math.inf
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab-method intersection of rays with an axis-aligned box, intersected with ``[t_min, t_max]``.

    Args:
        origins, directions: ``[..., 3]`` (directions need not be unit; ``t`` is in their units).
        box_min, box_max: ``[..., 3]`` broadcastable to ``origins``.
        t_min, t_max: ``[...]`` or scalars, the allowed ray-parameter range.
    Returns:
        ``t0 [...]``, ``t1 [...]`` (both 0 where the ray misses) and ``hit [...]`` (``t1 > t0``).
    """
    inv = 1.0 / directions                                            # ±inf on axes the ray is parallel to
    ta, tb = (box_min - origins) * inv, (box_max - origins) * inv     # [..., 3] (NaN only where parallel: masked)
    parallel = directions == 0
    inside = (origins >= box_min) & (origins <= box_max)
    inf = torch.full_like(ta, math.inf)
    # A ray parallel to a slab is inside it for all t, or never.
    t_lo = torch.where(parallel, torch.where(inside, -inf, inf), torch.minimum(ta, tb))
    t_hi = torch.where(parallel, torch.where(inside, inf, -inf), torch.maximum(ta, tb))
    t0 = torch.clamp(t_lo.amax(dim=-1), min=t_min) if not torch.is_tensor(t_min) else torch.maximum(t_lo.amax(-1), t_min)
    t1 = torch.clamp(t_hi.amin(dim=-1), max=t_max) if not torch.is_tensor(t_max) else torch.minimum(t_hi.amin(-1), t_max)
    hit = t1 > t0
    zero = torch.zeros_like(t0)
    return torch.where(hit, t0, zero), torch.where(hit, t1, zero), hit


@dataclass(eq=False)
class RayBatch:
    """Rays and grids of one render in the renderers' layout: ``B`` fields, ``R`` rays per field (all ``N`` cameras'
    pixels, row-major), ``S`` samples per ray. Built by `prepare_rays`; read by every implementation.

    Attributes:
        density: ``[B, 1, Z, Y, X]`` σ per metre.
        features: ``[B, C, Z, Y, X]``.
        o_n: ``[B, R, 3]`` ray origins in normalised grid coordinates (box = ``[-1, 1]^3``, (x, y, z) order).
        d_n: ``[B, R, 3]`` unit world directions scaled to normalised coordinates (per metre of ray).
        z_per_t: ``[B, R]`` planar depth per metre of ray.
        t0: ``[B, R]`` clipped segment start, metres of ray (0 for rays that miss).
        delta: ``[B, R]`` sample spacing, metres of ray; 0 for rays that miss.
        jitter: ``[B, R, S]`` sample offsets in [0, 1) (stratified sampling), or None (midpoints).
        out_lead: the leading output shape (the cameras' batch shape).
        n_cams: cameras per field ``N`` (``R = N·H·W``).
        height, width: image size in pixels.
    """

    density: torch.Tensor
    features: torch.Tensor
    o_n: torch.Tensor
    d_n: torch.Tensor
    z_per_t: torch.Tensor
    t0: torch.Tensor
    delta: torch.Tensor
    jitter: torch.Tensor | None
    out_lead: tuple[int, ...]
    n_cams: int
    height: int
    width: int


def prepare_rays(field: VoxelField, cameras: Cameras, n_samples: int, near: float = 0.0, far: float | None = None,
                 stratified: bool = False, generator: torch.Generator | None = None) -> RayBatch:
    """One ray per pixel of ``cameras`` (``Cameras.rays``: any camera model), clipped to the field's box and to
    planar depths ``[near, far]`` (metres).

    Args:
        field: unbatched or batched (``B`` scenes) `VoxelField`.
        cameras: any batch shape for an unbatched field, ``[B, ...]`` for a batched one (moved to the field's device
            and dtype).
        n_samples: samples per ray ``S`` (sets ``delta = (t1 − t0) / S``).
        near, far: planar-depth range in metres (``far=None``: up to the box exit).
        stratified, generator: draw ``jitter [B, R, S]`` uniform in [0, 1) from ``generator`` (one draw per call).
    Returns:
        The `RayBatch` (see its attributes for the shapes).
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if far is not None and far <= near:
        raise ValueError(f"far ({far}) must exceed near ({near})")
    cameras = cameras.to(device=field.device, dtype=field.dtype)
    H, W = cameras.height, cameras.width
    if field.is_batched:
        B = field.batch_size
        if not cameras.batch_shape or cameras.batch_shape[0] != B:
            raise ValueError(f"a batched field of {B} scenes needs cameras of batch shape [B={B}, ...], got "
                             f"{tuple(cameras.batch_shape)}: give each scene its cameras, e.g. Cameras.stack([cams] * {B}) for shared ones")
        out_lead = tuple(cameras.batch_shape)
        cams = cameras.reshape(B, -1)                                         # [B, N]
        density, features, bounds = field.density[:, None], field.features, field.bounds  # [B,1,Z,Y,X] [B,C,..] [B,2,3]
    else:
        B = 1
        out_lead = tuple(cameras.batch_shape)
        cams = cameras.reshape(1, -1)                                         # [1, N]
        density, features, bounds = field.density[None, None], field.features[None], field.bounds[None]
    N = cams.batch_shape[1]
    rays = cams.rays()                                                        # [B, N, H, W, ...]
    o = rays.origins.reshape(B, -1, 3)                                        # [B, R, 3]
    d = rays.directions.reshape(B, -1, 3)                                     # [B, R, 3]
    zpt = rays.z_per_t.reshape(B, -1)                                         # [B, R]
    lo, hi = bounds[:, None, 0], bounds[:, None, 1]                           # [B, 1, 3] each
    t_far = (far / zpt) if far is not None else math.inf
    t0, t1, _ = clip_rays_to_box(o, d, lo, hi, near / zpt, t_far)             # [B, R] each
    scale = 2.0 / (hi - lo)                                                   # [B, 1, 3]
    jitter = None
    if stratified:
        jitter = torch.rand(B, o.shape[1], n_samples, generator=generator, device=o.device, dtype=o.dtype)
    return RayBatch(density=density, features=features, o_n=(o - lo) * scale - 1.0, d_n=d * scale, z_per_t=zpt,
                    t0=t0, delta=(t1 - t0) / n_samples, jitter=jitter, out_lead=out_lead, n_cams=N, height=H, width=W)


def sample_t(t0: torch.Tensor, delta: torch.Tensor, n_samples: int, jitter: torch.Tensor | None) -> torch.Tensor:
    """Sample ray distances ``[..., S]`` (metres): ``t0 + (i + 0.5) δ``, or ``t0 + (i + u_i) δ`` with ``jitter``.

    Args:
        t0, delta: ``[...]`` segment start and sample spacing, metres of ray.
        n_samples: ``S``.
        jitter: ``[..., S]`` offsets ``u_i`` in [0, 1), or None for midpoints.
    """
    offs = torch.arange(n_samples, device=t0.device, dtype=t0.dtype)          # [S]
    offs = offs + (0.5 if jitter is None else jitter)                         # [S] or [..., S]
    return torch.addcmul(t0[..., None], offs, delta[..., None])


def sample_points(b: RayBatch, rays: slice, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray distances ``t [B, r, S]`` (metres) and normalised positions ``pts [B, r, S, 3]`` of the samples of the
    rays ``rays`` (a slice of the ``R`` axis; ``slice(None)`` for all)."""
    t = sample_t(b.t0[:, rays], b.delta[:, rays], n_samples, None if b.jitter is None else b.jitter[:, rays])
    return t, torch.addcmul(b.o_n[:, rays, None, :], t[..., None], b.d_n[:, rays, None, :])


def sample_grid(grid: torch.Tensor, pts_n: torch.Tensor) -> torch.Tensor:
    """Trilinear lookup as the model defines it (``grid_sample``, ``align_corners=False``, border padding).

    Args:
        grid: ``[B, C, Z, Y, X]``.
        pts_n: ``[B, R, S, 3]`` normalised (x, y, z) positions (box = ``[-1, 1]^3``).
    Returns:
        ``[B, C, R, S]``.
    """
    return F.grid_sample(grid, pts_n[:, None], mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0]


def finish_render(b: RayBatch, feats: torch.Tensor, depth_num: torch.Tensor, alpha: torch.Tensor,
                  min_hit_alpha: float = HIT_ALPHA, no_hit_depth: float = math.inf) -> RenderOutput:
    """Per-ray sums -> images: normalised depth with the no-hit convention, output shapes of the cameras.

    Args:
        b: the batch the sums belong to.
        feats: ``[B, C, R]`` composited features ``Σ w f``.
        depth_num: ``[B, R]`` ``Σ w z`` (planar depth, metres).
        alpha: ``[B, R]`` opacity.
        min_hit_alpha, no_hit_depth: rays with ``alpha < min_hit_alpha`` get depth ``no_hit_depth``.
    Returns:
        `RenderOutput` with leading shape ``b.out_lead``.
    """
    C = feats.shape[1]
    hit = alpha >= min_hit_alpha
    depth = torch.where(hit, depth_num / alpha.clamp_min(min_hit_alpha), torch.full_like(alpha, no_hit_depth))
    H, W, lead = b.height, b.width, b.out_lead
    feats = feats.reshape(-1, C, b.n_cams, H, W).transpose(1, 2)             # [B, N, C, H, W]
    return RenderOutput(features=feats.reshape(*lead, C, H, W), depth=depth.reshape(*lead, H, W),
                        alpha=alpha.reshape(*lead, H, W))
