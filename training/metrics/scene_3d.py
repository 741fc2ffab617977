"""Generation metrics of `nfldm eval`: point-set distances and distribution statistics of 3D scenes.

All functions are plain PyTorch/numpy, deterministic, and have worked examples in tests/training/test_eval.py.

* `chamfer_matrix` — pairwise Chamfer distance between two lists of point sets (vectorised ``torch.cdist``).
* `mmd_cov_1nna` — the shape-generation metrics of Achlioptas et al. 2018 / Yang et al. 2019 (PointFlow) on a
  distance matrix: minimum matching distance (MMD), coverage (COV) and 1-nearest-neighbour accuracy (1-NNA).
* `bev_stats` — bird's-eye-view occupancy and height statistics of a point set in the voxel box.
* `histogram_distances` — total variation and Wasserstein-1 between two histograms over the same bins.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


# ------------------------------------------------------------------------------------------------ Chamfer
def chamfer_matrix(a: Sequence[torch.Tensor] | torch.Tensor, b: Sequence[torch.Tensor] | torch.Tensor,
                   max_elements: int = 1 << 25) -> torch.Tensor:
    """Pairwise Chamfer distance ``CD(A, B) = mean_a min_b ‖a − b‖ + mean_b min_a ‖a − b‖`` (metres, not squared).

    Why not squared: the figure then reads in metres (a scene shifted by 1 m everywhere has CD ≈ 2 m). Distances are
    computed directly, not through the matrix-product expansion, so a set has exactly 0 distance to itself.

    Args:
        a: ``[n, P, 3]`` (or a list of n ``[P, 3]`` sets of equal P) points.
        b: ``[m, Q, 3]`` points.
        max_elements: bound on the ``pairs × P × Q`` distances held at once (memory).
    Returns:
        ``[n, m]`` float32 Chamfer distances.
    """
    a = torch.stack(list(a)) if not torch.is_tensor(a) else a
    b = torch.stack(list(b)) if not torch.is_tensor(b) else b
    if a.ndim != 3 or b.ndim != 3 or a.shape[-1] != 3 or b.shape[-1] != 3:
        raise ValueError(f"point sets must be [n, P, 3] and [m, Q, 3], got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.float(), b.float()
    n, m, P, Q = a.shape[0], b.shape[0], a.shape[1], b.shape[1]
    ii, jj = torch.meshgrid(torch.arange(n), torch.arange(m), indexing="ij")
    ii, jj = ii.flatten(), jj.flatten()                                       # [n*m] pair indices
    out = torch.empty(n * m)
    step = max(1, max_elements // max(P * Q, 1))
    for s in range(0, n * m, step):
        d = torch.cdist(a[ii[s:s + step]], b[jj[s:s + step]],
                        compute_mode="donot_use_mm_for_euclid_dist")          # [k, P, Q]
        out[s:s + step] = d.min(2).values.mean(1) + d.min(1).values.mean(1)
    return out.view(n, m)


@dataclass
class SetMetrics:
    """MMD / COV / 1-NNA of a generated set against a reference set (Chamfer distance).

    Attributes:
        mmd: mean over reference sets of the distance to the nearest generated set (metres; lower is better).
        cov: fraction of reference sets that are the nearest reference of at least one generated set (higher is
            better, 1 = every reference scene is matched).
        nna: leave-one-out 1-nearest-neighbour accuracy of telling generated from reference in the union
            (0.5 is ideal: indistinguishable; 1 = separable; below 0.5 = generated sets copy reference ones).
        num_generated, num_reference: set sizes.
    """

    mmd: float
    cov: float
    nna: float
    num_generated: int
    num_reference: int


def mmd_cov_1nna(d_gr: torch.Tensor, d_gg: torch.Tensor, d_rr: torch.Tensor) -> SetMetrics:
    """MMD, COV and 1-NNA from distance matrices (PointFlow's definitions).

    1-NNA ties (nearest same-set and nearest other-set at exactly the same distance) count half: the classifier
    cannot decide, so its expected accuracy is 0.5. E.g. sets whose scenes are all identical give 1-NNA 0.5.

    Args:
        d_gr: ``[n, m]`` generated-to-reference distances.
        d_gg: ``[n, n]`` generated-to-generated distances.
        d_rr: ``[m, m]`` reference-to-reference distances.
    """
    n, m = d_gr.shape
    if d_gg.shape != (n, n) or d_rr.shape != (m, m):
        raise ValueError(f"distance matrices do not fit: d_gr {tuple(d_gr.shape)}, d_gg {tuple(d_gg.shape)}, d_rr {tuple(d_rr.shape)}")
    if n < 2 or m < 2:
        raise ValueError(f"1-NNA needs at least 2 generated and 2 reference sets, got {n} and {m}")
    d_gr, d_gg, d_rr = d_gr.double(), d_gg.double(), d_rr.double()
    mmd = d_gr.min(0).values.mean()
    cov = d_gr.argmin(1).unique().numel() / m
    inf = torch.tensor(float("inf"), dtype=torch.float64)
    same_g = torch.where(torch.eye(n, dtype=torch.bool), inf, d_gg).min(1).values   # nearest other generated
    other_g = d_gr.min(1).values                                                      # nearest reference
    same_r = torch.where(torch.eye(m, dtype=torch.bool), inf, d_rr).min(1).values
    other_r = d_gr.min(0).values
    def score(same, other):
        return torch.where(same < other, 1.0, torch.where(same == other, 0.5, 0.0))
    nna = torch.cat([score(same_g, other_g), score(same_r, other_r)]).mean()
    return SetMetrics(mmd=float(mmd), cov=float(cov), nna=float(nna), num_generated=n, num_reference=m)


def subsample_points(points: torch.Tensor, num: int, generator: torch.Generator) -> torch.Tensor:
    """`num` points of ``points [P, 3]`` drawn uniformly (without replacement when P ≥ num, with it otherwise).

    Raises ``ValueError`` for an empty set (a scene with no surface in the box has no point set to compare).
    """
    p = points.shape[0]
    if p == 0:
        raise ValueError("empty point set: the scene shows no surface inside the box")
    idx = torch.randperm(p, generator=generator)[:num] if p >= num else torch.randint(p, (num,), generator=generator)
    return points[idx]


# ------------------------------------------------------------------------------------------------ BEV statistics
@dataclass
class BEVStats:
    """Bird's-eye-view statistics of one point set in the voxel box.

    Attributes:
        occupied_fraction: fraction of observed ground cells (cells holding any point) that hold a point at least
            `structure_height` above the ground (buildings, vehicles, poles, vegetation).
        observed_fraction: fraction of all ground cells of the box holding any point.
        height_hist: ``[bins]`` normalised histogram of point heights z over the box's z range.
    """

    occupied_fraction: float
    observed_fraction: float
    height_hist: np.ndarray


def bev_stats(points: torch.Tensor, bounds: torch.Tensor, cell: float = 1.0, structure_height: float = 0.5,
              height_bins: int = 16) -> BEVStats:
    """BEV occupancy and height statistics of ``points [P, 3]`` (scene frame, metres) inside ``bounds [2, 3]``.

    Worked example: four points at (0.5, 0.5, 0), (0.5, 0.5, 2), (1.5, 0.5, 0), (2.5, 0.5, 0.1) in a
    3 m × 1 m box with 1 m cells: 3 observed cells, one of them holds a point ≥ 0.5 m → occupied 1/3, observed 1.
    """
    b = bounds.to(points)
    inside = ((points >= b[0]) & (points <= b[1])).all(-1)
    p = points[inside]
    nx = max(1, int(round(float(b[1, 0] - b[0, 0]) / cell)))
    ny = max(1, int(round(float(b[1, 1] - b[0, 1]) / cell)))
    ix = ((p[:, 0] - b[0, 0]) / cell).long().clamp(0, nx - 1)
    iy = ((p[:, 1] - b[0, 1]) / cell).long().clamp(0, ny - 1)
    flat = iy * nx + ix
    observed = torch.zeros(nx * ny, dtype=torch.bool)
    observed[flat] = True
    tall = torch.zeros(nx * ny, dtype=torch.bool)
    tall[flat[p[:, 2] >= structure_height]] = True
    n_obs = int(observed.sum())
    hist = torch.histc(p[:, 2].float(), bins=height_bins, min=float(b[0, 2]), max=float(b[1, 2])).double()
    hist = (hist / hist.sum().clamp_min(1)).numpy()
    return BEVStats(occupied_fraction=float(tall.sum()) / max(n_obs, 1), observed_fraction=n_obs / (nx * ny),
                    height_hist=hist)


# ------------------------------------------------------------------------------------------------ histograms
@dataclass
class HistDistances:
    """Distances between two normalised histograms over the same bins.

    Attributes:
        tv: total variation ``½ Σ |p − q|`` in [0, 1].
        w1: Wasserstein-1 ``Σ |CDF_p − CDF_q| × bin width`` in the bins' unit (metres for depth).
    """

    tv: float
    w1: float


def histogram_distances(p: np.ndarray, q: np.ndarray, bin_width: float) -> HistDistances:
    """TV and W1 between histograms `p`, `q` ``[bins]`` (normalised here; equal-width bins of `bin_width`).

    Worked example: all mass in bin 0 vs all in bin 3, width 2 m → TV 1, W1 = 3 bins × 2 m = 6 m.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"histograms have different bins: {p.shape} vs {q.shape}")
    p = p / max(p.sum(), 1e-300)
    q = q / max(q.sum(), 1e-300)
    return HistDistances(tv=0.5 * float(np.abs(p - q).sum()),
                         w1=float(np.abs(np.cumsum(p) - np.cumsum(q))[:-1].sum() * bin_width))


def depth_histogram(depth: torch.Tensor, near: float, far: float, bins: int) -> np.ndarray:
    """Counts of planar depth values in ``bins`` equal bins over ``[near, far]``; no hit (``inf``) and depths beyond
    `far` go to the last bin (the far plane, as in `depth_abs_rel`), depths below `near` to the first.

    Args:
        depth: ``[...]`` metres.
    Returns:
        ``[bins]`` float64 counts.
    """
    d = torch.where(torch.isfinite(depth), depth, torch.full_like(depth, far)).float().clamp(near, far)
    return torch.histc(d.flatten(), bins=bins, min=near, max=far).double().numpy()
