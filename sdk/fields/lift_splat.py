"""Lift and splat: per-image density/feature frusta pooled into one voxel field (docs/method.md, stage 1, steps 2-3).

The Lift-Splat-Shoot structure in four steps, each a function with the shape of every tensor in its docstring:

1. **frustum** — ``depth_bins``: D planar-depth bins (centres and widths δ) shared by every pixel.
2. **geometry** — ``frustum_points``: the world position of every (view, bin, row, column) frustum entry,
   ``pixels_to_world(pixel centre, z = bin centre)`` (the camera's model: a fisheye pixel's ray bends, its bins
   stay planar depths).
3. **lift** — ``lift``: the encoder's D density channels σ ≥ 0 and C feature channels φ become per-bin
   occupancy ``O(d) = exp(−Σ_{j<d} σ_j δ_j) · (1 − exp(−σ_d δ_d))`` and frustum entries ``F(d) = [O(d)·φ, σ_d]``.
   Unlike LSS's softmax over depth, Σ_d O(d) = 1 − exp(−Σ σδ) ≤ 1: a pixel may see nothing (sky).
4. **voxel pooling** — ``splat``: every entry inside the box is assigned to the voxel containing it and each
   voxel takes the MEAN of its entries (NF-LDM averages where LSS sums): ``features = mean(O·φ)``,
   ``density = mean(σ)``. Voxels no entry reaches stay 0 (empty space). Vectorised scatter, no Python loop
   over points; batched over scenes with a batch index.

``lift_splat`` runs 1-4 for a batch of scenes (the encoder CNN — the "forward"/"shoot" part — lives in the model).

Choices where the paper is silent: bins are planar z-depths (the project's depth convention), spaced linearly or
log-uniformly between ``near`` and ``far``; δ_d is the bin width (edge to edge) in planar depth, or, with
``z_per_t`` given to ``lift``, the ray length through the bin (δ / z_per_t, what the renderer integrates).
Voxels are half-open: a point exactly on the box's max face is outside.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.fields.voxel_field import VoxelField

__all__ = ["DepthBins", "Frustum", "depth_bins", "lift", "frustum_points", "splat", "splat_batched", "lift_splat"]

_ACTIVATIONS = {None: lambda x: x, "none": lambda x: x, "relu": F.relu, "softplus": F.softplus, "exp": torch.exp}


class DepthBins(NamedTuple):
    """Planar-depth bins shared by every pixel; unpacks as ``centres, deltas = depth_bins(...)``.

    Attributes:
        centres: ``[D]`` bin centres, metres (planar z-depth); frustum points sit here.
        deltas: ``[D]`` bin widths δ_d = edges[d+1] − edges[d], metres (the bins tile ``[near, far]``).
    """

    centres: torch.Tensor
    deltas: torch.Tensor

    @property
    def edges(self) -> torch.Tensor:
        """``[D+1]`` bin edges, ``near`` to ``far``."""
        lower = self.centres - 0.5 * self.deltas
        return torch.cat([lower, (self.centres[-1:] + 0.5 * self.deltas[-1:])])


@dataclass(eq=False)
class Frustum:
    """Lifted frustum entries of N images.

    Attributes:
        occupancy: ``[N, D, h, w]`` O(d), the chance that the pixel's ray stops in bin d (Σ_d ≤ 1).
        features: ``[N, D, h, w, C+1]`` entries ``[O·φ, σ]``: C occupancy-weighted features, then the density.
    """

    occupancy: torch.Tensor
    features: torch.Tensor


# ---------------------------------------------------------------------------------------------------- 1. frustum
def depth_bins(near: float, far: float, D: int, spacing: str = "linear", *, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> DepthBins:
    """``D`` planar-depth bins between ``near`` and ``far`` metres.

    ``spacing="linear"``: equal widths; ``"log"``: edges geometric between near and far (finer bins close to the
    camera, where pixels cover less space), needs ``near > 0``. Centres are the bin midpoints.
    """
    if D < 1 or not (far > near >= 0.0):
        raise ValueError(f"depth_bins needs D >= 1 and far > near >= 0, got D={D}, near={near}, far={far}")
    if spacing == "linear":
        edges = torch.linspace(near, far, D + 1, dtype=torch.float64)
    elif spacing == "log":
        if near <= 0.0:
            raise ValueError(f"log-spaced bins need near > 0 (got {near}); pass e.g. near=0.5")
        edges = torch.logspace(math.log10(near), math.log10(far), D + 1, dtype=torch.float64)
    else:
        raise ValueError(f"spacing must be 'linear' or 'log', got {spacing!r}")
    centres, deltas = 0.5 * (edges[1:] + edges[:-1]), edges[1:] - edges[:-1]
    return DepthBins(centres.to(dtype=dtype, device=device), deltas.to(dtype=dtype, device=device))


# ---------------------------------------------------------------------------------------------------- 2. geometry
def frustum_points(cameras: Cameras, bins: DepthBins | torch.Tensor) -> torch.Tensor:
    """World position of every frustum entry.

    Args:
        cameras: batch shape ``[...]`` at the FEATURE-MAP resolution (``cameras.resized(w, h)``).
        bins: ``D`` depth bins, or their centres ``[D]`` (planar depths, metres).
    Returns:
        ``[..., D, h, w, 3]`` world points (x, y, z) metres: pixel centre (i+0.5, j+0.5) back-projected to planar
        depth = bin centre.
    """
    h, w = cameras.height, cameras.width
    centres = bins.centres if isinstance(bins, DepthBins) else torch.as_tensor(bins)
    z = centres.to(device=cameras.device, dtype=cameras.dtype)               # [D]
    D = z.shape[0]
    if not cameras.is_pinhole:
        # One unprojection per pixel (the fisheye inverse is iterative), then scaled to every bin's planar depth.
        d = cameras.camera_directions()                                      # [..., h, w, 3], z = 1
        p_cam = d[..., None, :, :, :] * z[:, None, None, None]               # [..., D, h, w, 3]
        R, t = cameras.cam_to_world[..., :3, :3], cameras.cam_to_world[..., :3, 3]
        return torch.einsum("...ij,...dhwj->...dhwi", R, p_cam) + t[..., None, None, None, :]
    uv = cameras.pixel_centers().reshape(1, h * w, 2).expand(D, -1, -1)      # [D, h·w, 2]
    zz = z[:, None].expand(D, h * w)                                          # [D, h·w]
    cams = cameras.reshape(*cameras.batch_shape, 1)                          # [..., 1] broadcasts over D
    pts = cams.pixels_to_world(uv.reshape(D, h * w, 2), zz)                  # [..., D, h·w, 3]
    return pts.reshape(*cameras.batch_shape, D, h, w, 3)                     # [..., D, h, w, 3]


# ---------------------------------------------------------------------------------------------------- 3. lift
def lift(density: torch.Tensor, feats: torch.Tensor, bins: DepthBins | torch.Tensor, *, z_per_t: torch.Tensor | None = None,
         density_activation: str | None = None) -> Frustum:
    """Per-bin occupancy and frustum entries from an image encoder's output.

    Args:
        density: ``[N, D, h, w]`` densities σ ≥ 0 per metre (or raw logits with ``density_activation``).
        feats: ``[N, C, h, w]`` per-pixel features φ.
        bins: the ``D`` depth bins, or their widths δ ``[D]`` (metres).
        z_per_t: optional ``[N, h, w]`` (``Cameras.rays().z_per_t``) to use ray length δ/z_per_t per bin instead
            of the planar bin width, so σ means the same as in the renderer.
        density_activation: ``None``/``"none"`` (already σ), ``"relu"``, ``"softplus"`` or ``"exp"``.
    Returns:
        `Frustum`: ``occupancy [N, D, h, w]`` and ``features [N, D, h, w, C+1]`` = ``[O·φ, σ]``.
    """
    if density_activation not in _ACTIVATIONS:
        raise ValueError(f"density_activation must be one of {list(_ACTIVATIONS)}, got {density_activation!r}")
    N, D, h, w = density.shape
    if feats.dim() != 4 or feats.shape[0] != N or feats.shape[2:] != (h, w):
        raise ValueError(f"feats must be [N={N}, C, h={h}, w={w}], got {tuple(feats.shape)}")
    deltas = bins.deltas if isinstance(bins, DepthBins) else torch.as_tensor(bins)
    if deltas.shape != (D,):
        raise ValueError(f"density has {D} depth channels but the bin widths have shape {tuple(deltas.shape)}")
    sigma = _ACTIVATIONS[density_activation](density)                         # [N, D, h, w]
    delta = deltas.to(sigma)[None, :, None, None]                             # [1, D, 1, 1]
    if z_per_t is not None:
        delta = delta / z_per_t.to(sigma)[:, None]                            # [N, D, h, w] ray length per bin
    tau = sigma * delta                                                       # [N, D, h, w] optical depth per bin
    acc = torch.cumsum(tau, dim=1)                                            # [N, D, h, w] inclusive
    occ = torch.exp(-(acc - tau)) * -torch.expm1(-tau)                        # [N, D, h, w] T_d · (1 − e^{−τ_d})
    phi = feats.permute(0, 2, 3, 1)[:, None]                                  # [N, 1, h, w, C]
    entries = torch.cat([occ[..., None] * phi, sigma[..., None]], dim=-1)    # [N, D, h, w, C+1]
    return Frustum(occupancy=occ, features=entries)


# ---------------------------------------------------------------------------------------------------- 4. splat
def splat(points: torch.Tensor, values: torch.Tensor, bounds: torch.Tensor, grid_shape: tuple[int, int, int], *,
          batch_index: torch.Tensor | None = None, batch_size: int | None = None) -> VoxelField:
    """Mean-pool frustum entries into voxels.

    Args:
        points: ``[..., 3]`` world points (x, y, z), metres (e.g. ``[N, D, h, w, 3]`` or ``[P, 3]``).
        values: ``[..., C+1]`` entries with the same leading shape: C feature channels then the density
            (``Frustum.features``).
        bounds: ``[2, 3]`` box min/max, or ``[B, 2, 3]`` per scene with ``batch_index``.
        grid_shape: ``(Z, Y, X)`` voxels.
        batch_index: optional integer scene of each point, for a batched field: the points' leading shape or a
            prefix of it (e.g. ``[N]`` views for points ``[N, D, h, w, 3]``), broadcast over the rest.
        batch_size: number of scenes B with ``batch_index`` (default: ``bounds.shape[0]`` or max index + 1).
    Returns:
        `VoxelField` (batched ``[B, ...]`` iff ``batch_index`` is given): ``density = mean σ``,
        ``features = mean O·φ`` per voxel; voxels without entries are 0; points outside the box are dropped.
        Differentiable w.r.t. ``values``.
    """
    if points.shape[-1] != 3 or values.shape[:-1] != points.shape[:-1]:
        raise ValueError(f"points [..., 3] and values [..., C+1] need one leading shape, got {tuple(points.shape)} "
                         f"and {tuple(values.shape)}")
    Z, Y, X = (int(s) for s in grid_shape)
    V = Z * Y * X
    pts = points.reshape(-1, 3)                                               # [P, 3]
    vals = values.reshape(-1, values.shape[-1])                               # [P, C+1]
    bounds = torch.as_tensor(bounds, dtype=pts.dtype, device=pts.device)
    if batch_index is None:
        if bounds.shape != (2, 3):
            raise ValueError(f"bounds must be [2, 3] without batch_index, got {tuple(bounds.shape)}")
        B, scene = 1, torch.zeros(pts.shape[0], dtype=torch.long, device=pts.device)
        box = bounds[None]                                                    # [1, 2, 3]
    else:
        lead = points.shape[:-1]
        bi = torch.as_tensor(batch_index, device=pts.device)
        if bi.shape != lead[:bi.dim()]:
            raise ValueError(f"batch_index {tuple(bi.shape)} must be the points' leading shape {tuple(lead)} or a prefix of it")
        scene = bi.reshape(*bi.shape, *([1] * (len(lead) - bi.dim()))).expand(lead).reshape(-1).long()  # [P]
        B = batch_size or (bounds.shape[0] if bounds.dim() == 3 else int(scene.max().item()) + 1)
        box = bounds.expand(B, 2, 3) if bounds.dim() == 2 else bounds         # [B, 2, 3]
        if box.shape != (B, 2, 3):
            raise ValueError(f"bounds must be [2, 3] or [B={B}, 2, 3], got {tuple(bounds.shape)}")
    lo, hi = box[scene, 0], box[scene, 1]                                     # [P, 3] each
    counts_xyz = torch.tensor([X, Y, Z], dtype=pts.dtype, device=pts.device)
    ijk = torch.floor((pts - lo) / (hi - lo) * counts_xyz)                    # [P, 3] voxel (i, j, k) as float
    inside = ((ijk >= 0) & (ijk < counts_xyz)).all(dim=-1) & torch.isfinite(pts).all(dim=-1)  # [P]
    ijk = ijk[inside].long()                                                  # [P_in, 3]
    flat = ((scene[inside] * Z + ijk[:, 2]) * Y + ijk[:, 1]) * X + ijk[:, 0]  # [P_in] row in [B·Z·Y·X]
    sums = vals.new_zeros(B * V, vals.shape[-1]).index_add(0, flat, vals[inside])       # [B·V, C+1]
    counts = torch.zeros(B * V, dtype=vals.dtype, device=vals.device).index_add_(
        0, flat, torch.ones_like(flat, dtype=vals.dtype))                     # [B·V]
    mean = sums / counts.clamp_min(1.0)[:, None]                              # [B·V, C+1]; empty voxels 0
    grid = mean.reshape(B, Z, Y, X, -1)                                       # [B, Z, Y, X, C+1]
    density = grid[..., -1]                                                   # [B, Z, Y, X]
    features = grid[..., :-1].permute(0, 4, 1, 2, 3)                          # [B, C, Z, Y, X]
    if batch_index is None:
        return VoxelField(density[0].contiguous(), features[0].contiguous(), bounds)
    return VoxelField(density.contiguous(), features.contiguous(), box)


def splat_batched(points: torch.Tensor, values: torch.Tensor, bounds: torch.Tensor,
                  grid_shape: tuple[int, int, int]) -> VoxelField:
    """``splat`` for ``B`` scenes: ``points [B, ..., 3]``, ``values [B, ..., C+1]``, ``bounds [2,3]`` or ``[B,2,3]``
    -> a batched `VoxelField` of B scenes (each scene pools only its own points)."""
    B = points.shape[0]
    return splat(points, values, bounds, grid_shape, batch_index=torch.arange(B, device=points.device), batch_size=B)


# ---------------------------------------------------------------------------------------------------- all four
def lift_splat(cameras: Cameras, density: torch.Tensor, feats: torch.Tensor, bins: DepthBins, bounds: torch.Tensor,
               grid_shape: tuple[int, int, int], *, density_activation: str | None = None,
               ray_length_deltas: bool = False, return_occupancy: bool = False
               ) -> VoxelField | tuple[VoxelField, torch.Tensor]:
    """Encoder outputs of B scenes × V views -> one batched `VoxelField` (steps 1-4 of the module docstring).

    Args:
        cameras: ``[B, V]`` cameras; resized here to the feature-map size ``(w, h)`` if needed.
        density: ``[B, V, D, h, w]`` densities (see ``lift``); feats: ``[B, V, C, h, w]``.
        bins: D depth bins; bounds: ``[2, 3]`` or ``[B, 2, 3]``; grid_shape: ``(Z, Y, X)``.
        density_activation: passed to ``lift``.
        ray_length_deltas: use ray length through each bin (``z_per_t``) as δ instead of the planar bin width.
        return_occupancy: also return the per-bin occupancy O(d) ``[B, V, D, h, w]`` (what a depth-supervised
            training compares with the captured depth; ``1 − Σ_d O(d)`` is the chance the ray leaves the frustum).
    Returns:
        Batched `VoxelField` ``[B]`` with C feature channels; with ``return_occupancy``, ``(field, occupancy)``.
    """
    B, V, D, h, w = density.shape
    if tuple(cameras.batch_shape) != (B, V):
        raise ValueError(f"cameras must have batch shape [B={B}, V={V}] to match density, got {tuple(cameras.batch_shape)}")
    if (cameras.width, cameras.height) != (w, h):
        cameras = cameras.resized(w, h)
    cameras = cameras.to(device=density.device, dtype=density.dtype)
    z_per_t = cameras.rays().z_per_t.reshape(B * V, h, w) if ray_length_deltas else None       # [B·V, h, w]
    frustum = lift(density.reshape(B * V, D, h, w), feats.reshape(B * V, -1, h, w), bins,        # [B·V, D, h, w, C+1]
                   z_per_t=z_per_t, density_activation=density_activation)
    points = frustum_points(cameras, bins)                                                       # [B, V, D, h, w, 3]
    values = frustum.features.reshape(B, V, D, h, w, -1)                                         # [B, V, D, h, w, C+1]
    field = splat_batched(points, values, bounds, grid_shape)
    if return_occupancy:
        return field, frustum.occupancy.reshape(B, V, D, h, w)
    return field
