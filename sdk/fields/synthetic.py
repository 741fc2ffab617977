"""Synthetic voxel fields for tests, benchmarks and demos: seeded, analytic scenes with the paper's grid layout.

* `driving_like_field` — a driving scene's occupancy pattern: mostly empty air, a ground slab, car-sized and
  building-sized boxes (σ piecewise constant, features one random vector per object plus a little texture). The
  sparse case the renderers' empty-space skipping and sparse feature reads are built for.
* `soft_noisy_field` — the same scene blurred, made translucent and hazy: what a field looks like early in training
  or after SDS; few cells stay exactly empty.

Both span x, y ∈ [−25.6, 25.6] m and z ∈ [−2.0, 10.8] m (the scene frame: right-handed, z up, metres), 0.4 m voxels
at the default 128×128×32 grid, and are bit-for-bit reproducible from ``seed`` (CPU generator) on any device.

Example::

    field = driving_like_field((32, 128, 128), 32, seed=0)    # density [32,128,128], features [32,32,128,128]
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nfldm_sdk.fields.voxel_field import VoxelField

__all__ = ["driving_like_field", "soft_noisy_field"]


def driving_like_field(grid: tuple[int, int, int] = (32, 128, 128), channels: int = 32, *, seed: int = 0,
                       dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> VoxelField:
    """A seeded driving-like `VoxelField`: air (σ = 0), a 0.4 m ground slab (σ = 30/m) and boxes (σ = 20/m):
    ~16 cars (4.4×2×1.6 m) around the centre and ~10 buildings (8-14 m) near the edges. Features are smooth
    per-object random vectors. The box spans x, y ∈ [−25.6, 25.6] m and z ∈ [−2.0, 10.8] m (0.4 m voxels at
    the paper's 128×128×32).

    Args:
        grid: voxels ``(Z, Y, X)``.
        channels: feature channels ``C``.
        seed: seeds the CPU generator of the layout, the palette and the texture.
        dtype, device: of the returned field (built on CPU, then moved).
    Returns:
        Unbatched `VoxelField`: ``density [Z, Y, X]`` (1/m), ``features [C, Z, Y, X]``, ``bounds [2, 3]`` (m).
    """
    g = torch.Generator().manual_seed(seed)
    Z, Y, X = grid
    lo, hi = (-25.6, -25.6, -2.0), (25.6, 25.6, 10.8)
    # Voxel-centre coordinates per axis (broadcast, never a [Z,Y,X,3] tensor): keeps the build at ~2× the field.
    x, y, z = (torch.linspace(a, b, n + 1, dtype=torch.float64)[:-1] + (b - a) / (2 * n) for a, b, n in zip(lo, hi, (X, Y, Z)))
    x, y, z = x[None, None, :], y[None, :, None], z[:, None, None]            # [1,1,X], [1,Y,1], [Z,1,1]
    density = torch.zeros(Z, Y, X, dtype=dtype)
    obj = torch.zeros(Z, Y, X, dtype=torch.long)                              # object id per voxel, 0 = air
    ground = ((z > -0.4) & (z < 0.0)).expand(Z, Y, X)
    density[ground], obj[ground] = 30.0, 1
    boxes = []
    for _ in range(16):  # cars on a ring of lanes, kept off the rig at the centre
        r = 5.0 + 12.0 * torch.rand((), generator=g).item()
        a = 2 * math.pi * torch.rand((), generator=g).item()
        boxes.append((r * math.cos(a), r * math.sin(a), 4.4, 2.0, 1.6))
    for _ in range(10):  # buildings near the edges
        a = 2 * math.pi * torch.rand((), generator=g).item()
        s = 8.0 + 6.0 * torch.rand((), generator=g).item()
        boxes.append((20.0 * math.cos(a), 20.0 * math.sin(a), s, s, 6.0 + 4.0 * torch.rand((), generator=g).item()))
    for i, (cx, cy, sx, sy, sz) in enumerate(boxes):
        m = ((x - cx).abs() < sx / 2) & ((y - cy).abs() < sy / 2) & (z >= 0.0) & (z < sz)   # [Z, Y, X]
        density[m], obj[m] = 20.0, i + 2
    palette = torch.randn(len(boxes) + 2, channels, generator=g).to(dtype)   # one feature vector per object
    palette[0] = 0.0                                                          # air
    features = palette[obj].permute(3, 0, 1, 2).contiguous()                  # [C, Z, Y, X]
    # A little per-voxel texture so features are not piecewise constant.
    features += 0.1 * torch.randn(features.shape, generator=g).to(dtype) * (obj > 0)
    bounds = torch.tensor([lo, hi], dtype=dtype)
    return VoxelField(density, features, bounds).to(device=device)


def soft_noisy_field(grid: tuple[int, int, int] = (32, 128, 128), channels: int = 32, *, seed: int = 0,
                     dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> VoxelField:
    """The driving-like scene made soft and noisy (what a field early in training or after SDS looks like):
    density box-blurred over 3×3×3 voxels and scaled by 1/4 (σ ≤ 7.5/m: translucent edges), plus haze
    ``|N(0, 0.3)|``/m in a random 30% of the voxels — few coarse cells stay exactly empty, so skipping helps less.

    Arguments and shapes as `driving_like_field` (same ``seed`` gives the same layout and features; the haze draws
    from a generator seeded ``seed + 1``)."""
    base = driving_like_field(grid, channels, seed=seed, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed + 1)
    soft = 0.25 * F.avg_pool3d(base.density[None, None], 3, stride=1, padding=1, count_include_pad=False)[0, 0]
    haze = (torch.rand(soft.shape, generator=g) < 0.3) * torch.randn(soft.shape, generator=g).abs() * 0.3
    return VoxelField((soft + haze).to(dtype), base.features.to(dtype), base.bounds.to(dtype)).to(device=device)
