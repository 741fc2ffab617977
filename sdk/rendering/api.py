"""Differentiable volume rendering of a `VoxelField` from `Cameras` (docs/method.md, stage 1 step 4, ``î = r(V, κ)``).

The model, shared by every implementation:

1. One ray per pixel centre (``Cameras.rays``). Each ray is clipped to the field's box with the slab method and to
   ``[near, far]`` (planar depths, converted per ray to ray distance ``t = z / z_per_t``). Rays that miss get
   zero weight everywhere.
2. ``n_samples`` samples uniformly spaced in ray distance over the clipped segment ``[t0, t1]``: the midpoints
   ``t_i = t0 + (i + 0.5) δ``, ``δ = (t1 - t0) / n_samples`` (with ``stratified=True``: ``t0 + (i + u_i) δ``,
   ``u_i ~ U[0,1)`` from ``generator``, one ``[B?, rays, n_samples]`` draw per call).
3. Density σ and features f are interpolated trilinearly at each sample (``grid_sample``, ``align_corners=False``,
   ``padding_mode="border"``): between voxel centres the field is the trilinear interpolant, in the outer
   half-voxel shell of the box it is held constant up to the box faces, and outside the box σ = 0 (rays are
   clipped). So a box-filling slab of σ seen through thickness L has transmittance exactly exp(−σL).
4. Compositing: ``α_i = 1 − exp(−σ_i δ)``, ``T_i = Π_{j<i} (1 − α_j) = exp(−Σ_{j<i} σ_j δ)``, ``w_i = T_i α_i``;
   ``features = Σ w_i f_i`` (no background colour), ``alpha = 1 − T_final = Σ w_i``.
5. Depth is planar z-depth, the *normalised* expected depth ``Σ w_i z_i / alpha`` (so a surface sits at its
   distance rather than being pulled towards 0 by the light that passes it). A ray *hits* when its opacity
   reaches ``min_hit_alpha``, by default `HIT_ALPHA` = 0.5: at least half of its light is absorbed inside the box,
   so the ray's termination distribution has its median there and the depth names a surface. Rays with
   ``alpha < min_hit_alpha`` (sky, faint fog) get ``no_hit_depth`` — ``inf`` by default, the project's no-hit
   convention (valid mask ``isfinite``). Every user-facing output uses `HIT_ALPHA` (this function, the sensors,
   `NeuralScene.render`, frame exports, point clouds); training passes its own smaller threshold (see
   `nfldm_sdk.models.scene_ae.TRAINING_MIN_HIT_ALPHA`). Training code comparing against ground-truth depth
   should mask with both depths' ``isfinite`` or pass a finite ``no_hit_depth`` (e.g. the far plane). Gradients
   never see the ``inf``.

Implementations (PyTorch ones run on any device; ``"triton"`` is the fused GPU kernel):

* ``render_field_reference`` — the oracle: every sample of every ray in one tensor, one ``grid_sample``,
  transmittance by ``cumprod``. Readable, memory-hungry (about ``rays × n_samples × (C+1) × 4`` bytes).
* ``"dense"`` — rays in chunks, density and features in one ``grid_sample`` of the packed ``[1+C]`` grid,
  transmittance by an exclusive ``cumsum`` of ``σδ``; differentiable w.r.t. density and features (autograd keeps
  every chunk's samples for backward, so chunking bounds memory only without grad). The training path.
* ``"sparse"`` — rays in chunks; a 1-channel density lookup at every sample gives the weights, then features are
  read only where ``w_i > skip_weight`` (air and occluded space cost one channel instead of C+1), composited by an
  ``embedding_bag`` over a channel-last copy of the feature grid (no ``[rays, S, C]`` tensor at all). With the
  default ``skip_weight=0`` the output equals the dense one up to float summation order. It is differentiable
  w.r.t. features but NOT density (∂w_i/∂σ_i ≠ 0 at skipped samples), so it refuses a density that needs grad.
  The sensor path: ~7-30× the naive per-sample loop on CPU (``python -m nfldm_sdk.benchmarks.render``).
* ``"triton"`` — the fused Triton kernels of `nfldm_sdk.rendering.triton_render`: clipping, marching, trilinear
  interpolation of density and all features, front-to-back compositing with early ray termination (rays stop
  once ``T < 1e-4``) and exact empty-space skipping over a coarse occupancy grid, in one pass per ray; a fused
  backward gives gradients to density and features (none to cameras or bounds). Features stored channels-last in
  ``grid_dtype`` (default float16, rounding them by ≤ 2^-11 ≈ 5e-4 relative; density float32), float32 arithmetic
  whatever the field's dtype; early termination drops ≤ 1e-4 of weight. CUDA tensors; CPU tensors only under
  Triton's interpreter (``TRITON_INTERPRET=1``, tests).
  ``chunk_rays`` and ``skip_weight`` do not apply (no per-sample memory; skipping is exact).
* ``"auto"`` (default) — ``"triton"`` for a float32/16 field on CUDA when Triton is installed (with or without
  gradients) unless cameras or bounds need a gradient; otherwise ``"sparse"`` unless the density needs a
  gradient, then ``"dense"``.

Example::

    cams = Cameras.from_fov(90.0, 64, 64, cam_to_world)           # [V]
    out = render_field(field, cams, n_samples=96)                 # features [V,C,64,64], depth/alpha [V,64,64]
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.fields.voxel_field import VoxelField

__all__ = ["HIT_ALPHA", "IMPLEMENTATIONS", "RenderOutput", "clip_rays_to_box", "render_field", "render_field_reference"]

IMPLEMENTATIONS = ("auto", "reference", "dense", "sparse", "triton")

#: The hit threshold: a ray whose opacity ``alpha = 1 − T_final`` stays below it met nothing (depth ``inf``).
#: 0.5 = half the ray's light absorbed, i.e. its median termination point lies inside the box. Used as the default
#: by every renderer (`render_field` and all its implementations, the sensors, `NeuralScene.render`, exports,
#: point clouds), so ``isfinite(depth) == (alpha >= HIT_ALPHA)`` at the render's resolution.
HIT_ALPHA = 0.5

# Working-set budget of one chunk when `chunk_rays` is None (bytes). ~256 MiB keeps a CPU render of a 256² image
# with 128 samples × 33 channels (1.1 GB of samples if done at once) at a few hundred MB peak.
_CHUNK_BYTES = {"cpu": 256 * 2**20, "cuda": 1024 * 2**20}


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


# ====================================================================== shared geometry


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
class _Batch:
    """Rays and grids in the internal layout: B fields, R rays per field (all cameras' pixels, row-major)."""

    density: torch.Tensor    # [B, 1, Z, Y, X]
    features: torch.Tensor   # [B, C, Z, Y, X]
    o_n: torch.Tensor        # [B, R, 3] ray origins in normalised grid coordinates (box = [-1, 1]^3)
    d_n: torch.Tensor        # [B, R, 3] unit world directions scaled to normalised coordinates
    z_per_t: torch.Tensor    # [B, R]
    t0: torch.Tensor         # [B, R] clipped segment start (ray distance, metres)
    delta: torch.Tensor      # [B, R] sample spacing (metres of ray); 0 for rays that miss
    jitter: torch.Tensor | None  # [B, R, S] sample offsets in [0, 1) or None (midpoints)
    out_lead: tuple[int, ...]    # leading output shape (the cameras' batch shape)
    n_cams: int                  # cameras per field (N), R = N * H * W
    height: int
    width: int


def _prepare(field: VoxelField, cameras: Cameras, n_samples: int, near: float, far: float | None,
             stratified: bool, generator: torch.Generator | None) -> _Batch:
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
    return _Batch(density=density, features=features, o_n=(o - lo) * scale - 1.0, d_n=d * scale, z_per_t=zpt,
                  t0=t0, delta=(t1 - t0) / n_samples, jitter=jitter, out_lead=out_lead, n_cams=N, height=H, width=W)


def _sample_t(t0: torch.Tensor, delta: torch.Tensor, n_samples: int, jitter: torch.Tensor | None) -> torch.Tensor:
    """Sample ray distances ``[..., S]`` from segment start ``t0 [...]`` and spacing ``delta [...]``."""
    offs = torch.arange(n_samples, device=t0.device, dtype=t0.dtype)          # [S]
    offs = offs + (0.5 if jitter is None else jitter)                         # [S] or [..., S]
    return torch.addcmul(t0[..., None], offs, delta[..., None])


def _finish(b: _Batch, feats: torch.Tensor, depth_num: torch.Tensor, alpha: torch.Tensor,
            min_hit_alpha: float, no_hit_depth: float) -> RenderOutput:
    """Internal ``feats [B,C,R]``, ``depth_num = Σ w z [B,R]``, ``alpha [B,R]`` -> output shapes."""
    C = feats.shape[1]
    hit = alpha >= min_hit_alpha
    depth = torch.where(hit, depth_num / alpha.clamp_min(min_hit_alpha), torch.full_like(alpha, no_hit_depth))
    H, W, lead = b.height, b.width, b.out_lead
    feats = feats.reshape(-1, C, b.n_cams, H, W).transpose(1, 2)             # [B, N, C, H, W]
    return RenderOutput(features=feats.reshape(*lead, C, H, W), depth=depth.reshape(*lead, H, W),
                        alpha=alpha.reshape(*lead, H, W))


def _grid_sample(grid: torch.Tensor, pts_n: torch.Tensor) -> torch.Tensor:
    """Trilinear lookup. ``grid [B,C,Z,Y,X]``, ``pts_n [B,R,S,3]`` normalised (x,y,z) -> ``[B,C,R,S]``."""
    return F.grid_sample(grid, pts_n[:, None], mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0]


# ====================================================================== reference


def render_field_reference(field: VoxelField, cameras: Cameras, n_samples: int = 128, near: float = 0.0,
                           far: float | None = None, *, stratified: bool = False,
                           generator: torch.Generator | None = None, min_hit_alpha: float = HIT_ALPHA,
                           no_hit_depth: float = math.inf) -> RenderOutput:
    """Plain-PyTorch oracle of `render_field` (see the module docstring for the model and the shapes).

    All ``rays × n_samples`` samples at once: positions, ONE ``grid_sample`` of the packed ``[1+C]`` grid,
    transmittance as a ``cumprod`` of ``1 − α``. Use it in tests and to check fast paths, not for big renders.
    """
    b = _prepare(field, cameras, n_samples, near, far, stratified, generator)
    t = _sample_t(b.t0, b.delta, n_samples, b.jitter)                          # [B, R, S] ray distances
    pts = b.o_n[:, :, None, :] + t[..., None] * b.d_n[:, :, None, :]          # [B, R, S, 3] normalised positions
    packed = torch.cat([b.density, b.features], dim=1)                        # [B, 1+C, Z, Y, X]
    samples = _grid_sample(packed, pts)                                       # [B, 1+C, R, S]
    sigma, f = samples[:, 0], samples[:, 1:]                                  # [B, R, S], [B, C, R, S]
    alpha_i = 1.0 - torch.exp(-sigma * b.delta[..., None])                    # [B, R, S]
    ones = torch.ones_like(alpha_i[..., :1])
    T = torch.cumprod(torch.cat([ones, 1.0 - alpha_i], dim=-1), dim=-1)       # [B, R, S+1]; T[..., i] = Π_{j<i}
    w = T[..., :-1] * alpha_i                                                 # [B, R, S]
    feats = (w[:, None] * f).sum(dim=-1)                                      # [B, C, R]
    z = t * b.z_per_t[..., None]                                              # [B, R, S] planar depth
    return _finish(b, feats, (w * z).sum(-1), 1.0 - T[..., -1], min_hit_alpha, no_hit_depth)


# ====================================================================== fast paths


def _weights(sigma: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``sigma [..., S]``, ``delta [...]`` -> weights ``w [..., S]`` and opacity ``alpha [...]``.

    Transmittance from an exclusive cumulative sum of optical depth (exp of a sum is better conditioned, and has
    a simpler backward, than a product of ``1 − α``)."""
    tau = sigma * delta[..., None]                                            # [..., S] optical depth per sample
    acc = torch.cumsum(tau, dim=-1)                                           # [..., S] inclusive
    T = torch.exp(tau - acc)                                                  # [..., S] exclusive: exp(−Σ_{j<i})
    w = T * -torch.expm1(-tau)                                                # [..., S]
    return w, -torch.expm1(-acc[..., -1])


def _trilinear_corners(pts_n: torch.Tensor, grid_shape: tuple[int, int, int], field_idx: torch.Tensor | None,
                       n_fields: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 voxels and trilinear weights of each point, exactly as ``grid_sample(align_corners=False,
    padding_mode="border")`` picks them.

    Args:
        pts_n: ``[K, 3]`` normalised (x, y, z) positions (box = [-1, 1]^3).
        grid_shape: ``(Z, Y, X)``.
        field_idx: ``[K]`` field of each point in a batch (rows of field b start at ``b·Z·Y·X``), or None.
        n_fields: B, the number of fields (sizes the index dtype).
    Returns:
        ``idx [K, 8]`` rows of the channel-last grid ``[B·Z·Y·X, C]`` (int32 when they fit) and weights ``cw [K, 8]``
        (sum 1).
    """
    Z, Y, X = grid_shape
    size = torch.tensor([X, Y, Z], dtype=pts_n.dtype, device=pts_n.device)       # [3] per (x, y, z)
    u = ((pts_n + 1.0) * size - 1.0) / 2.0                                       # [K, 3] voxel-index space
    u = torch.minimum(u.clamp_min(0.0), size - 1.0)                              # border padding
    i0 = torch.minimum(u.floor(), (size - 2.0).clamp_min(0.0))                   # [K, 3] lower corner
    fr = u - i0                                                                  # [K, 3] in [0, 1]
    # int32 row indices (embedding_bag accepts them) halve the largest per-sample buffers; fine below 2^31 rows
    itype = torch.int32 if n_fields * Z * Y * X < 2**31 else torch.long
    i0 = i0.to(itype)
    base = (i0[:, 2] * Y + i0[:, 1]) * X + i0[:, 0]                              # [K]
    if field_idx is not None:
        base = base + field_idx.to(itype) * (Z * Y * X)
    step = [1 if X > 1 else 0, X if Y > 1 else 0, X * Y if Z > 1 else 0]         # +1 along x, y, z (0 on 1-voxel axes)
    offs = torch.tensor([dz * step[2] + dy * step[1] + dx * step[0]
                         for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)], device=pts_n.device, dtype=itype)  # [8]
    w2 = torch.stack([1.0 - fr, fr], dim=-1)                                     # [K, 3, 2] (axis, lower/upper)
    cw = (w2[:, 2, :, None, None] * w2[:, 1, None, :, None] * w2[:, 0, None, None, :]).reshape(-1, 8)  # [K, 8] (z,y,x)
    return base[:, None] + offs, cw


def _channels_last(features: torch.Tensor) -> torch.Tensor:
    """``[B, C, Z, Y, X]`` -> ``[B·Z·Y·X, C]``: one contiguous row per voxel, the table ``embedding_bag`` reads."""
    # .contiguous(): for B=1 the reshape alone is a strided *view* (one channel-first stride per row), which
    # makes every row read hit C cache lines instead of one.
    return features.permute(0, 2, 3, 4, 1).contiguous().reshape(-1, features.shape[1])


def _chunk_size(chunk_rays: int | None, b: _Batch, n_samples: int, bytes_per_sample: int) -> int:
    """Rays per chunk: ``chunk_rays`` if given, else what fits the device's working-set budget (all B fields)."""
    if chunk_rays is not None:
        if chunk_rays < 1:
            raise ValueError(f"chunk_rays must be >= 1, got {chunk_rays}")
        return int(chunk_rays)
    budget = _CHUNK_BYTES.get(b.o_n.device.type, _CHUNK_BYTES["cpu"])
    per_ray = n_samples * bytes_per_sample * b.o_n.shape[0]
    return max(256, budget // per_ray)


def _sample_points(b: _Batch, sl: slice, n_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ray distances ``t [B,r,S]`` and normalised positions ``pts [B,r,S,3]`` of the samples of rays ``sl``."""
    t = _sample_t(b.t0[:, sl], b.delta[:, sl], n_samples, None if b.jitter is None else b.jitter[:, sl])  # [B, r, S]
    return t, torch.addcmul(b.o_n[:, sl, None, :], t[..., None], b.d_n[:, sl, None, :])  # [B, r, S, 3]


def _render_dense(b: _Batch, n_samples: int, chunk: int):
    """Chunks of rays; density and features in ONE ``grid_sample`` of the packed ``[1+C]`` grid (the interpolation
    weights are computed once for all channels; its backward is the fastest we measured on CPU)."""
    packed = torch.cat([b.density, b.features], dim=1)                        # [B, 1+C, Z, Y, X]
    feats, depth_num, alpha = [], [], []
    for s in range(0, b.o_n.shape[1], chunk):
        sl = slice(s, s + chunk)
        t, pts = _sample_points(b, sl, n_samples)                             # [B, r, S], [B, r, S, 3]
        samples = _grid_sample(packed, pts)                                   # [B, 1+C, r, S]
        w, a = _weights(samples[:, 0], b.delta[:, sl])                        # [B, r, S], [B, r]
        feats.append(torch.einsum("bcrs,brs->bcr", samples[:, 1:], w))        # [B, C, r]
        depth_num.append((w * t).sum(-1) * b.z_per_t[:, sl])                  # [B, r]  (z = t · z_per_t)
        alpha.append(a)
    return torch.cat(feats, -1), torch.cat(depth_num, -1), torch.cat(alpha, -1)


def _render_sparse(b: _Batch, n_samples: int, chunk: int, max_kept: int, skip_weight: float):
    """Chunks of rays; a 1-channel density lookup at every sample gives the weights, then features only at the
    samples with ``w > skip_weight``. Those are composited without materialising per-sample features:
    ``Σ_i w_i f_i = Σ_i Σ_corners w_i c_ik G[idx_ik]`` is an ``embedding_bag`` (sum, per-sample weights; one bag per
    ray) over the channel-last grid ``G`` — contiguous rows, ~50× faster than a C-channel ``grid_sample`` on CPU.
    Kept samples go in groups of at most ``max_kept`` (their corner buffers are the big ones), so a hazy field
    where every sample is kept stays within the memory budget too."""
    B, R = b.o_n.shape[:2]
    C = b.features.shape[1]
    table = _channels_last(b.features)                                        # [B·Z·Y·X, C]
    grid_shape = tuple(b.density.shape[-3:])
    feats, depth_num, alpha = [], [], []
    for s in range(0, R, chunk):
        sl = slice(s, min(s + chunk, R))
        t, pts = _sample_points(b, sl, n_samples)                             # [B, r, S], [B, r, S, 3]
        w, a = _weights(_grid_sample(b.density, pts)[:, 0], b.delta[:, sl])   # [B, r, S], [B, r]
        r = t.shape[1]
        keep_all = (w > skip_weight).reshape(-1).nonzero().squeeze(1)         # [K] flat (b, ray, sample), sorted
        pts_flat, w_flat = pts.reshape(-1, 3), w.reshape(-1)                  # [B·r·S, 3], [B·r·S]
        f = None
        for k in range(0, max(keep_all.shape[0], 1), max_kept):
            keep = keep_all[k:k + max_kept]                                   # [k]
            bag = keep // n_samples                                           # [k] flat (b, ray)
            idx, cw = _trilinear_corners(pts_flat[keep], grid_shape, bag // r, B)  # [k, 8] each
            psw = cw * w_flat[keep, None]                                     # [k, 8]
            counts = torch.bincount(bag, minlength=B * r) * 8                 # [B·r] entries per bag
            offsets = (torch.cumsum(counts, 0) - counts).to(idx.dtype)       # [B·r] bag starts
            part = F.embedding_bag(idx.reshape(-1), table, offsets, mode="sum", per_sample_weights=psw.reshape(-1))
            f = part if f is None else f + part                               # [B·r, C]
        feats.append(f.reshape(B, r, C).transpose(1, 2))                      # [B·r, C] -> [B, C, r]
        depth_num.append((w * t).sum(-1) * b.z_per_t[:, sl])                  # [B, r]
        alpha.append(a)
    return torch.cat(feats, -1), torch.cat(depth_num, -1), torch.cat(alpha, -1)


def _triton_preferred(field: VoxelField, cameras: Cameras) -> bool:
    """``"auto"``'s rule for the fused kernel: a float32/16 field on CUDA, compiled Triton kernels available, and no
    gradient wanted w.r.t. the ray geometry (the kernel gives none). Imports Triton only for CUDA fields."""
    if field.device.type != "cuda" or field.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in (cameras.K, cameras.cam_to_world, field.bounds)):
        return False
    try:
        import nfldm_sdk.rendering.triton_render as render_triton
    except ImportError:
        return False
    return not render_triton.INTERPRETED


def render_field(field: VoxelField, cameras: Cameras, n_samples: int = 128, near: float = 0.0,
                 far: float | None = None, implementation: str = "auto", chunk_rays: int | None = None, *,
                 stratified: bool = False, generator: torch.Generator | None = None, skip_weight: float = 0.0,
                 min_hit_alpha: float = HIT_ALPHA, no_hit_depth: float = math.inf,
                 grid_dtype: torch.dtype | None = None) -> RenderOutput:
    """Volume-render ``field`` from ``cameras`` (model, conventions and implementations: module docstring).

    Args:
        field: unbatched (``density [Z,Y,X]``) or batched (``[B,Z,Y,X]``) `VoxelField`.
        cameras: any batch shape ``[...]`` for an unbatched field; ``[B, ...]`` for a batched one. They are
            moved to the field's device and dtype.
        n_samples: samples per ray, uniform over the ray's segment inside the box.
        near, far: planar-depth range in metres (``far=None``: up to the box exit).
        implementation: ``"auto"``, ``"reference"``, ``"dense"``, ``"sparse"`` or ``"triton"``.
        chunk_rays: rays per chunk (all ``B`` fields at once); ``None`` sizes chunks to ~256 MiB (CPU) / 1 GiB (CUDA)
            of working set.
        stratified, generator: jitter samples inside their spacing (training); seeded by ``generator``.
        skip_weight: the sparse path samples features only where ``w_i > skip_weight``; 0 keeps it exact.
        min_hit_alpha, no_hit_depth: pixels with ``alpha < min_hit_alpha`` (default `HIT_ALPHA` = 0.5: less than half
            the ray's light absorbed) get depth ``no_hit_depth`` (default ``inf``).
        grid_dtype: the triton path's storage dtype of the feature grid (default float16; float32 for the
            closest match to the reference); other paths ignore it.
    Returns:
        `RenderOutput` with ``features [..., C, H, W]``, ``depth [..., H, W]`` (planar, metres), ``alpha [..., H, W]``.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    density_grad = torch.is_grad_enabled() and field.density.requires_grad
    if implementation == "auto":
        implementation = "triton" if _triton_preferred(field, cameras) else "dense" if density_grad else "sparse"
    if implementation == "triton":
        try:
            from nfldm_sdk.rendering.triton_render import render_field_triton
        except ImportError as e:
            raise ValueError(f"implementation='triton' needs the triton package ({e}): pip install triton, or use "
                             "implementation='auto'") from e
        return render_field_triton(field, cameras, n_samples, near, far, stratified=stratified, generator=generator,
                                   min_hit_alpha=min_hit_alpha, no_hit_depth=no_hit_depth, grid_dtype=grid_dtype)
    if implementation == "reference":
        return render_field_reference(field, cameras, n_samples, near, far, stratified=stratified,
                                      generator=generator, min_hit_alpha=min_hit_alpha, no_hit_depth=no_hit_depth)
    if implementation == "sparse" and density_grad:
        raise ValueError("implementation='sparse' skips feature samples of zero weight and so drops the density "
                         "gradient there; use implementation='dense' (or 'auto') when density requires grad")
    b = _prepare(field, cameras, n_samples, near, far, stratified, generator)
    item = field.density.element_size()
    if implementation == "dense":
        # per sample: the 1+C sampled values, their weighted product, positions, t, weights, temporaries
        chunk = _chunk_size(chunk_rays, b, n_samples, item * (2 * (field.num_channels + 1) + 10))
        feats, depth_num, alpha = _render_dense(b, n_samples, chunk)
    else:
        # Half the budget each (measured peaks): the march, ~24 values per sample (positions, t, σ, weights and
        # their temporaries), and the kept samples, ~320 B each (8 corner indices, corner and per-sample weights,
        # embedding_bag's own index buffer) — grouped, so a hazy field where every sample is kept fits too.
        chunk = _chunk_size(chunk_rays, b, n_samples, 2 * item * 24)
        max_kept = max(1024, _CHUNK_BYTES.get(field.device.type, _CHUNK_BYTES["cpu"]) // (2 * 320))
        feats, depth_num, alpha = _render_sparse(b, n_samples, chunk, max_kept, skip_weight)
    return _finish(b, feats, depth_num, alpha, min_hit_alpha, no_hit_depth)
