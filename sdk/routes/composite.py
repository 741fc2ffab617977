"""Rendering a route of scenes as one world: the exact volume render of the union of the scenes' cells.

A route is K generated scenes, each an unbatched `VoxelField` in its own scene frame (box ``field.bounds``), placed
in one world frame by rigid ``scene_to_world [K, 4, 4]`` (float64, scene frame -> world frame), and K−1 seam planes
between consecutive scenes: seam j has a world point ``seam_points[j]`` ``(3,)`` and a unit world normal
``seam_normals[j]`` ``(3,)`` pointing from scene j towards scene j+1 (metres). The **cell** of scene k is its box ∩
``{p: (p − o_{k−1})·n_{k−1} ≥ 0}`` (k > 0) ∩ ``{p: (p − o_k)·n_k < 0}`` (k < K−1): convex, disjoint, their union
covers the route (the placement guarantees it).

The world's field is the union of the cells: scene k contributes only its cell. `cell_density_masks` zeroes the
density of every voxel whose centre lies outside the cell, so the masked fields partition space; trilinear
interpolation then makes a one-voxel soft boundary at a seam, whose two sides sum to the full density where the
neighbours agree there (they were generated to agree over the overlap). Because transmittance multiplies,
rendering the union is compositing the per-cell renders front to back along each ray (`render_route`): with the
cells in the order the ray enters them (`ray_cell_entry`), per-cell features ``F_k``, opacity ``α_k`` and normalised
depth ``D_k`` (`nfldm_sdk.rendering.api`'s model),

    P_k = Π_{j before k} (1 − α_j),    features = Σ_k P_k F_k,    alpha = Σ_k P_k α_k = 1 − Π_k (1 − α_k),
    depth = Σ_k P_k α_k D_k / alpha   (inf where alpha < min_hit_alpha),

exact for cells that a ray crosses one after the other (the soft boundary layer of a seam is the one place two cells
overlap; there alpha stays exact and only the order of the two thin layers' features is approximate). The
composite goes through the stage-1 decoder's `SceneAutoEncoder.decode_rendered` exactly like one scene's render, so
a route of one scene renders exactly as `SceneAutoEncoder.decode` does. ``mode="nearest"`` is the baseline without
compositing: each camera sees only the scene whose cell contains it (a jump at every seam).

Each scene renders at the decoder's feature resolution ``(H/f, W/f)`` from the camera moved into its scene frame
(`cameras_in_frame`), with the decoder's ``render_samples``, ``near`` and ``far``; only scenes whose cell a ray of a
camera enters within ``far`` are rendered for that camera (with far = 60 m and scenes every 16 m, about six).

Example::

    out = render_route(fields, decoder, scene_to_world, seam_points, seam_normals, world_cameras)   # SceneRender [R]
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.cameras.trajectory import check_rigid, rigid_inverse
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.models.scene_ae import SceneRender
from nfldm_sdk.rendering.api import HIT_ALPHA, RenderOutput, clip_rays_to_box, render_field
from nfldm_sdk.routes.placement import RouteError

__all__ = ["ROUTE_MODES", "check_route", "cameras_in_frame", "cell_density_masks", "masked_field", "voxel_centres_world",
           "box_overlap_mask",
           "in_cells", "containing_cell", "ray_cell_entry", "render_route", "render_one_scene"]

#: ``render_route``'s modes: the exact composite of the cells, or each camera rendered by the scene it is in.
ROUTE_MODES = ("composite", "nearest")


def check_route(scene_to_world, seam_points, seam_normals, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated route geometry as float64 numpy arrays.

    Args:
        scene_to_world: ``[K, 4, 4]`` rigid scene -> world transforms (numpy or torch).
        seam_points, seam_normals: ``[K−1, 3]`` world points and normals (metres; normals rescaled to unit length).
        count: K, the number of scenes.
    Returns:
        ``(scene_to_world [K,4,4], seam_points [K−1,3], seam_normals [K−1,3])``.
    Raises:
        `RouteError` on a wrong count or shape or a zero/non-finite normal; `TrajectoryError` on a non-rigid transform.
    """
    def arr(x) -> np.ndarray:
        return np.asarray(x.detach().cpu() if torch.is_tensor(x) else x, dtype=np.float64)

    s2w, pts, nrm = arr(scene_to_world), arr(seam_points).reshape(-1, 3), arr(seam_normals).reshape(-1, 3)
    if count < 1:
        raise RouteError("a route needs at least one scene")
    if s2w.shape != (count, 4, 4):
        raise RouteError(f"scene_to_world must be [K={count}, 4, 4] (one transform per scene), got {s2w.shape}")
    s2w = check_rigid(s2w, "scene_to_world")
    if pts.shape != (count - 1, 3) or nrm.shape != (count - 1, 3):
        raise RouteError(f"{count} scenes need {count - 1} seams: seam_points and seam_normals [{count - 1}, 3], got "
                         f"{pts.shape} and {nrm.shape}")
    norm = np.linalg.norm(nrm, axis=-1)
    if not (np.isfinite(pts).all() and np.isfinite(norm).all() and (norm > 1e-9).all()):
        raise RouteError("seam points must be finite and seam normals finite and non-zero (unit vectors from scene j "
                         "towards scene j+1)")
    return s2w, pts, nrm / norm[:, None]


def cameras_in_frame(cameras: Cameras, world_to_frame) -> Cameras:
    """The same cameras with ``cam_to_world`` re-expressed in another frame: ``world_to_frame @ cam_to_world``
    (composed in float64, cast back to the cameras' dtype); intrinsics, size, models and distortion kept.

    Args:
        cameras: any batch shape, ``cam_to_world`` camera -> world.
        world_to_frame: ``[4, 4]`` rigid world -> frame (numpy or torch), e.g. a scene's ``rigid_inverse(scene_to_world)``.
    """
    m = torch.as_tensor(np.asarray(world_to_frame, dtype=np.float64), device=cameras.device)
    c2f = (m @ cameras.cam_to_world.to(torch.float64)).to(cameras.dtype)
    extra = {} if cameras.is_pinhole else {
        "model": cameras.model if cameras.model != "mixed" else cameras.model_names(), "distortion": cameras.distortion}
    return Cameras(cameras.K, c2f, cameras.width, cameras.height, **extra)


def _seam_side(points: torch.Tensor, point: np.ndarray, normal: np.ndarray) -> torch.Tensor:
    """``(p − o)·n`` of world points ``[..., 3]`` (float64), metres on the side of scene j+1 when positive."""
    o = torch.as_tensor(point, dtype=torch.float64, device=points.device)
    n = torch.as_tensor(normal, dtype=torch.float64, device=points.device)
    return (points - o) @ n


def in_cells(points: torch.Tensor, k: int, seam_points: np.ndarray, seam_normals: np.ndarray) -> torch.Tensor:
    """``[...]`` bool: world points ``[..., 3]`` on scene k's side of both its seams (the box test left out):
    ``(p − o_{k−1})·n_{k−1} ≥ 0`` for k > 0 and ``(p − o_k)·n_k < 0`` for k < K−1 (``K − 1 = len(seam_points)``)."""
    p = points.to(torch.float64)
    ok = torch.ones(p.shape[:-1], dtype=torch.bool, device=p.device)
    if k > 0:
        ok &= _seam_side(p, seam_points[k - 1], seam_normals[k - 1]) >= 0
    if k < len(seam_points):
        ok &= _seam_side(p, seam_points[k], seam_normals[k]) < 0
    return ok


def _to_scene(points: torch.Tensor, scene_to_world: np.ndarray) -> torch.Tensor:
    """World points ``[..., 3]`` in the scene frame of ``scene_to_world [4,4]`` (float64)."""
    m = torch.as_tensor(scene_to_world, dtype=torch.float64, device=points.device)
    return (points.to(torch.float64) - m[:3, 3]) @ m[:3, :3]                   # R^T (p − t), row vectors


def containing_cell(points: torch.Tensor, bounds: torch.Tensor, scene_to_world, seam_points,
                    seam_normals) -> torch.Tensor:
    """``[...]`` int64: the scene whose cell holds each world point ``[..., 3]`` (metres), −1 for none.

    Args:
        bounds: ``[K, 2, 3]`` the scenes' boxes in their scene frames (``field.bounds`` stacked).
        scene_to_world, seam_points, seam_normals: the route (`check_route`).
    """
    s2w, pts, nrm = check_route(scene_to_world, seam_points, seam_normals, len(bounds))
    out = torch.full(points.shape[:-1], -1, dtype=torch.int64, device=points.device)
    b = torch.as_tensor(bounds, dtype=torch.float64, device=points.device)
    for k in range(len(b)):
        q = _to_scene(points, s2w[k])
        inside = ((q >= b[k, 0]) & (q <= b[k, 1])).all(-1) & in_cells(points, k, pts, nrm)
        out = torch.where(inside & (out < 0), torch.full_like(out, k), out)
    return out


def cell_density_masks(fields: Sequence[VoxelField], scene_to_world, seam_points, seam_normals) -> list[torch.Tensor]:
    """Per scene, the ``[Z, Y, X]`` mask (1 inside, 0 outside; the field's dtype and device) of the voxels whose
    centres lie in its cell: multiplied into the densities, the fields partition space (module docstring).

    Args:
        fields: K unbatched `VoxelField`, each in its scene frame.
        scene_to_world, seam_points, seam_normals: the route (`check_route`).
    """
    s2w, pts, nrm = check_route(scene_to_world, seam_points, seam_normals, len(fields))
    masks = []
    for k, f in enumerate(fields):
        if f.is_batched:
            raise RouteError(f"scene {k}'s field is batched ({f.batch_size} scenes): a route takes one field per scene")
        masks.append(in_cells(voxel_centres_world(f, s2w[k]), k, pts, nrm).to(f.dtype))
    return masks


def voxel_centres_world(field: VoxelField, scene_to_world) -> torch.Tensor:
    """``[Z, Y, X, 3]`` float64 world positions (metres) of an unbatched field's voxel centres, its scene frame placed
    by ``scene_to_world [4, 4]``."""
    Z, Y, X = field.grid_shape
    lo = field.bounds[0].to(torch.float64)
    vs = (field.bounds[1].to(torch.float64) - lo) / torch.tensor([X, Y, Z], dtype=torch.float64, device=lo.device)
    k_, j_, i_ = torch.meshgrid(*(torch.arange(n, dtype=torch.float64, device=lo.device) + 0.5 for n in (Z, Y, X)),
                                indexing="ij")
    centres = lo + torch.stack([i_, j_, k_], -1) * vs                                # [Z, Y, X, 3] scene frame
    m = torch.as_tensor(np.asarray(scene_to_world, dtype=np.float64), device=lo.device)
    return centres @ m[:3, :3].T + m[:3, 3]


def box_overlap_mask(field: VoxelField, scene_to_world, other_bounds, other_to_world) -> torch.Tensor:
    """``[Z, Y, X]`` mask (the field's dtype) of the voxels of `field` (placed by `scene_to_world`) whose centres lie
    inside another scene's box `other_bounds` ``[2, 3]`` (its frame placed by `other_to_world`): the part of space
    both scenes hold."""
    world = voxel_centres_world(field, scene_to_world)
    m = torch.as_tensor(np.asarray(other_to_world, dtype=np.float64), device=world.device)
    local = (world - m[:3, 3]) @ m[:3, :3]                                           # R^T (p − t): the other frame
    b = torch.as_tensor(other_bounds, dtype=torch.float64, device=world.device)
    return ((local >= b[0]) & (local <= b[1])).all(-1).to(field.dtype)


def masked_field(field: VoxelField, mask: torch.Tensor) -> VoxelField:
    """`field` with its density multiplied by ``mask [Z, Y, X]`` (features and bounds shared, not copied)."""
    return VoxelField(field.density * mask.to(field.density), field.features, field.bounds)


def _halfspace(lower: torch.Tensor, upper: torch.Tensor, o: torch.Tensor, d: torch.Tensor, point: np.ndarray,
               normal: np.ndarray, positive: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip ray intervals ``(lower, upper)`` to ``s(t) = (o + t d − point)·normal ≥ 0`` (`positive`) or ``< 0``."""
    n = torch.as_tensor(normal, dtype=torch.float64, device=o.device)
    a = d @ n                                                                         # ds/dt
    b = _seam_side(o, point, normal)                                                  # s(0)
    root = -b / torch.where(a == 0, torch.ones_like(a), a)
    rising = a > 0 if positive else a < 0                                             # the kept side is t > root
    falling = a < 0 if positive else a > 0
    lower = torch.where(rising, torch.maximum(lower, root), lower)
    upper = torch.where(falling, torch.minimum(upper, root), upper)
    never = (a == 0) & ((b < 0) if positive else (b >= 0))                            # parallel, on the wrong side
    return lower, torch.where(never, torch.full_like(upper, -math.inf), upper)


def ray_cell_entry(origins: torch.Tensor, directions: torch.Tensor, bounds: torch.Tensor, scene_to_world,
                   seam_points, seam_normals, *, t_min: torch.Tensor | float = 0.0,
                   t_max: torch.Tensor | float = math.inf, scenes: Sequence[int] | None = None) -> torch.Tensor:
    """Where each ray enters each scene's cell: the box slabs (in the scene frame) and the seam half-spaces (in the
    world frame) clipped to ``[t_min, t_max]``.

    Args:
        origins, directions: ``[..., 3]`` world rays (directions need not be unit; ``t`` is in their units, metres
            for unit directions).
        bounds: ``[K, 2, 3]`` the scenes' boxes in their scene frames, metres.
        scene_to_world, seam_points, seam_normals: the route (`check_route`).
        t_min, t_max: ``[...]`` or scalars, the ray-parameter range (e.g. ``near / z_per_t`` and ``far / z_per_t``).
        scenes: the scene indices to report (default all K).
    Returns:
        ``[S, ...]`` float64 entry parameter per reported scene (``t_min`` for a ray that starts inside the cell),
        ``+inf`` where the ray misses the cell within the range.
    """
    s2w, pts, nrm = check_route(scene_to_world, seam_points, seam_normals, len(bounds))
    o, d = origins.to(torch.float64), directions.to(torch.float64)
    b = torch.as_tensor(bounds, dtype=torch.float64, device=o.device)
    t_min = t_min.to(torch.float64) if torch.is_tensor(t_min) else float(t_min)
    t_max = t_max.to(torch.float64) if torch.is_tensor(t_max) else float(t_max)
    out = []
    for k in (range(len(b)) if scenes is None else scenes):
        m = torch.as_tensor(s2w[k], dtype=torch.float64, device=o.device)
        t0, t1, hit = clip_rays_to_box((o - m[:3, 3]) @ m[:3, :3], d @ m[:3, :3], b[k, 0], b[k, 1], t_min, t_max)
        lower = torch.where(hit, t0, torch.full_like(t0, math.inf))
        upper = torch.where(hit, t1, torch.full_like(t1, -math.inf))
        if k > 0:
            lower, upper = _halfspace(lower, upper, o, d, pts[k - 1], nrm[k - 1], positive=True)
        if k < len(pts):
            lower, upper = _halfspace(lower, upper, o, d, pts[k], nrm[k], positive=False)
        out.append(torch.where(upper > lower, lower, torch.full_like(lower, math.inf)))
    return torch.stack(out) if out else o.new_zeros((0, *o.shape[:-1]))


def _candidates(centres: torch.Tensor, bounds: torch.Tensor, s2w: np.ndarray, reach: float) -> list[int]:
    """Scenes whose box lies within `reach` metres of any camera centre ``[R, 3]`` (world)."""
    out = []
    for k in range(len(bounds)):
        q = _to_scene(centres, s2w[k])                                               # [R, 3]
        b = bounds[k].to(torch.float64)
        gap = torch.maximum(b[0] - q, q - b[1]).clamp_min(0).norm(dim=-1)            # [R] distance to the box
        if bool((gap <= reach).any()):
            out.append(k)
    return out


def _nearest_scene(centres: torch.Tensor, bounds: torch.Tensor, s2w: np.ndarray) -> torch.Tensor:
    """``[R]`` int64: the scene whose box is nearest to each camera centre (for cameras outside every cell)."""
    gaps = []
    for k in range(len(bounds)):
        q = _to_scene(centres, s2w[k])
        b = bounds[k].to(torch.float64)
        gaps.append(torch.maximum(b[0] - q, q - b[1]).clamp_min(0).norm(dim=-1))
    return torch.stack(gaps).argmin(0)


def render_one_scene(field: VoxelField, decoder: torch.nn.Module, scene_to_world, cameras: Cameras, *,
                     min_hit_alpha: float = HIT_ALPHA) -> SceneRender:
    """One scene of a route (its full, unmasked field) seen from world cameras: `SceneAutoEncoder.decode` of the
    cameras moved into the scene frame (`cameras_in_frame` with ``rigid_inverse(scene_to_world)``).

    Args:
        field: the scene's unbatched `VoxelField`; decoder: the route's `SceneAutoEncoder` (same device).
        scene_to_world: ``[4, 4]`` the scene's transform; cameras: world cameras of any batch shape (flattened ``[R]``).
    Returns:
        `SceneRender` without a scene axis: rgb ``[R, 3, H, W]``, depth/alpha ``[R, H, W]``, semantic or None.
    """
    w2s = rigid_inverse(check_rigid(np.asarray(scene_to_world, dtype=np.float64).reshape(4, 4), "scene_to_world"))
    cams = cameras_in_frame(cameras.flatten().to(device=field.device, dtype=field.dtype), w2s)
    return decoder.decode(field, cams, min_hit_alpha=min_hit_alpha)


def render_route(fields: Sequence[VoxelField], decoder: torch.nn.Module, scene_to_world, seam_points, seam_normals,
                 cameras: Cameras, *, mode: str = "composite", masks: Sequence[torch.Tensor] | None = None,
                 min_hit_alpha: float = HIT_ALPHA, n_samples: int | None = None,
                 implementation: str = "auto") -> SceneRender:
    """Render a route from world cameras: the composite of the cells (module docstring) or, ``mode="nearest"``,
    each camera from the one scene whose cell contains it (the nearest box when none does).

    Args:
        fields: K unbatched `VoxelField` (scene frames) on one device; decoder: their `SceneAutoEncoder` there.
        scene_to_world, seam_points, seam_normals: the route (`check_route`).
        cameras: world cameras of any batch shape (flattened ``[R]``) at the output size ``H×W`` (multiples of the
            decoder's downsample f).
        mode: one of `ROUTE_MODES`.
        masks: `cell_density_masks` of the route, when already computed (the sensors compute them once).
        min_hit_alpha: hit threshold of the output (default `HIT_ALPHA`, the user-facing one).
        n_samples: samples per ray per scene (default the decoder's ``render_samples``); implementation: of
            `render_field`.
    Returns:
        `SceneRender` without a scene axis: rgb ``[R, 3, H, W]`` in [0, 1], depth ``[R, H, W]`` planar metres (``inf``
        below ``min_hit_alpha``), alpha ``[R, H, W]``, features ``[R, C, H/f, W/f]`` (the composited feature image),
        semantic ``[R, K_classes, H, W]`` or None. One scene and no seams give exactly `SceneAutoEncoder.decode`.
    """
    if mode not in ROUTE_MODES:
        raise RouteError(f"mode must be one of {ROUTE_MODES}, got {mode!r}")
    s2w, pts, nrm = check_route(scene_to_world, seam_points, seam_normals, len(fields))
    cfg = decoder.config
    f, near, far = int(cfg.downsample), float(cfg.near), float(cfg.far)
    n_samples = int(n_samples or cfg.render_samples)
    H, W = int(cameras.height), int(cameras.width)
    if H % f or W % f:
        raise ValueError(f"camera size {W}x{H} must be divisible by the decoder's downsample {f}")
    dev, dt = fields[0].device, fields[0].dtype
    small = cameras.flatten().to(device=dev, dtype=dt).resized(W // f, H // f)          # [R] at (h, w)
    R, h, w, C = small.batch_shape[0], H // f, W // f, fields[0].num_channels
    bounds = torch.stack([fl.bounds.to(device=dev, dtype=torch.float64) for fl in fields])   # [K, 2, 3]
    w2s = [rigid_inverse(m) for m in s2w]
    centres = small.centers.to(torch.float64)                                          # [R, 3] world
    if mode == "nearest":
        owner = containing_cell(centres, bounds, s2w, pts, nrm)
        owner = torch.where(owner < 0, _nearest_scene(centres, bounds, s2w), owner)
        feats = small.K.new_zeros(R, C, h, w)
        alpha = small.K.new_zeros(R, h, w)
        depth = torch.full_like(alpha, math.inf)
        for k in owner.unique().tolist():
            idx = torch.nonzero(owner == k).reshape(-1)
            out = render_field(fields[k], cameras_in_frame(small[idx], w2s[k]), n_samples, near, far, implementation,
                               min_hit_alpha=min_hit_alpha)
            feats[idx], alpha[idx], depth[idx] = out.features, out.alpha, out.depth
        return decoder.decode_rendered(RenderOutput(feats, depth, alpha), H, W, min_hit_alpha=min_hit_alpha)
    if masks is None:
        masks = cell_density_masks(fields, s2w, pts, nrm)
    rays = small.rays()                                                                # [R, h, w, ...]
    cand = _candidates(centres, bounds, s2w, far / float(rays.z_per_t.min()))
    entry = ray_cell_entry(rays.origins, rays.directions, bounds, s2w, pts, nrm, t_min=near / rays.z_per_t,
                           t_max=far / rays.z_per_t, scenes=cand)                      # [S, R, h, w] float64
    alphas, feat_list, depths, keys = [], [], [], []
    for i, k in enumerate(cand):
        idx = torch.nonzero(torch.isfinite(entry[i]).reshape(R, -1).any(-1)).reshape(-1)   # cameras that see cell k
        if idx.numel() == 0:
            continue
        # min_hit_alpha=0: the raw normalised depth Σwz/α of every ray that meets any density (0/0 = NaN at α = 0)
        out = render_field(masked_field(fields[k], masks[k]), cameras_in_frame(small[idx], w2s[k]), n_samples, near,
                           far, implementation, min_hit_alpha=0.0)
        a = small.K.new_zeros(R, h, w)
        a[idx] = out.alpha
        fk = small.K.new_zeros(R, C, h, w)
        fk[idx] = out.features
        dk = small.K.new_zeros(R, h, w)
        dk[idx] = torch.where(out.alpha > 0, out.depth, torch.zeros_like(out.depth))
        alphas.append(a)
        feat_list.append(fk)
        depths.append(dk)
        keys.append(entry[i])
    if not alphas:                                                                     # nothing in reach: sky
        out = RenderOutput(small.K.new_zeros(R, C, h, w), small.K.new_full((R, h, w), math.inf), small.K.new_zeros(R, h, w))
        return decoder.decode_rendered(out, H, W, min_hit_alpha=min_hit_alpha)
    order = torch.argsort(torch.stack(keys), dim=0, stable=True)                      # [S, R, h, w] front to back
    a = torch.stack(alphas).gather(0, order)
    d = torch.stack(depths).gather(0, order)
    fs = torch.stack(feat_list).gather(0, order[:, :, None].expand(-1, -1, C, -1, -1))  # [S, R, C, h, w]
    trans = torch.cumprod(1.0 - a, dim=0)
    P = torch.cat([torch.ones_like(trans[:1]), trans[:-1]])                           # light reaching cell k
    weight = P * a                                                                     # [S, R, h, w]
    alpha = weight.sum(0)                                                              # = 1 − Π(1 − α_k)
    feats = (P[:, :, None] * fs).sum(0)                                                # [R, C, h, w]
    # Σ (P_k α_k / alpha) D_k: with one cell the weight is α/α = 1 exactly, so a lone scene keeps its depth bitwise.
    share = torch.where(alpha > 0, weight / torch.where(alpha > 0, alpha, torch.ones_like(alpha)), torch.zeros_like(weight))
    depth = (share * d).sum(0)
    depth = torch.where((alpha >= min_hit_alpha) & (alpha > 0), depth, torch.full_like(depth, math.inf))
    return decoder.decode_rendered(RenderOutput(feats, depth, alpha), H, W, min_hit_alpha=min_hit_alpha)
