"""Moving bird's-eye grids between the frames of a route's boxes.

* `transfer_columns` — a ``[C, Y, X]`` map of one box read in another box's frame (bilinear; exact where the grids
  line up): the known latents of outpainting and the predecessor's field of feathering.
* `map_for_box` — the part of a world-frame route map under one box.
* `cell_centres` — the column centres of a box's grid; `source_x` — where they land along another box's x.
"""
from __future__ import annotations

import numpy as np
import torch

from nfldm_sdk.labels.bev_map import UNOBSERVED, BEVMap

__all__ = ["cell_centres", "transfer_columns", "map_for_box", "source_x"]


def cell_centres(bounds_xy, grid_yx) -> tuple[np.ndarray, np.ndarray]:
    """Column centres ``(xs [X], ys [Y])`` float64 metres of a ``grid_yx`` grid over ``bounds_xy = ((xmin, ymin), (xmax, ymax))``."""
    (xmin, ymin), (xmax, ymax) = bounds_xy
    Y, X = grid_yx
    xs = xmin + (np.arange(X, dtype=np.float64) + 0.5) * (xmax - xmin) / X
    ys = ymin + (np.arange(Y, dtype=np.float64) + 0.5) * (ymax - ymin) / Y
    return xs, ys


def transfer_columns(src: torch.Tensor, bounds_xy, dst_to_src: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a bird's-eye latent map into another frame: the value under each destination column, and where known.

    Both maps cover the same box ``bounds_xy = ((xmin, ymin), (xmax, ymax))`` metres in their own frames, on the
    same grid; `dst_to_src` ``[4, 4]`` maps destination-frame points into the source frame. Each destination column
    centre is mapped into the source grid and read bilinearly (computed in float64 index space, so a column that lands
    exactly on a source column centre copies it bit for bit).

    Args:
        src: ``[C, Y, X]`` the source map (e.g. f, or c with its Z folded into C).
        bounds_xy: the box both grids span, metres.
        dst_to_src: ``[4, 4]`` float64 rigid transform, destination frame → source frame.
    Returns:
        ``values [C, Y, X]`` (zero where unknown) and ``inside [Y, X]`` bool: the columns whose centre lies inside the
        hull of the source's column centres (all four bilinear neighbours exist).
    """
    C, Y, X = src.shape
    xs, ys = cell_centres(bounds_xy, (Y, X))
    gx, gy = np.meshgrid(xs, ys)                                                   # [Y, X] each
    pts = np.stack([gx, gy, np.zeros_like(gx), np.ones_like(gx)], -1) @ np.asarray(dst_to_src, np.float64).T
    (xmin, ymin), (xmax, ymax) = bounds_xy
    fx = (pts[..., 0] - xmin) / ((xmax - xmin) / X) - 0.5                        # fractional source column index
    fy = (pts[..., 1] - ymin) / ((ymax - ymin) / Y) - 0.5
    eps = 1e-9
    inside = (fx >= -eps) & (fx <= X - 1 + eps) & (fy >= -eps) & (fy <= Y - 1 + eps)
    fx, fy = np.clip(fx, 0, X - 1), np.clip(fy, 0, Y - 1)
    x0, y0 = np.minimum(np.floor(fx), X - 2).astype(np.int64), np.minimum(np.floor(fy), Y - 2).astype(np.int64)
    wx, wy = fx - x0, fy - y0
    x0, y0 = np.clip(x0, 0, None), np.clip(y0, 0, None)
    flat = src.reshape(C, -1)

    def at(iy, ix):
        return flat[:, torch.as_tensor((iy * X + ix).reshape(-1), device=src.device)].reshape(C, Y, X)

    def w(a):
        return torch.as_tensor(a, dtype=src.dtype, device=src.device)

    x1, y1 = np.minimum(x0 + 1, X - 1), np.minimum(y0 + 1, Y - 1)
    values = (at(y0, x0) * w((1 - wy) * (1 - wx)) + at(y0, x1) * w((1 - wy) * wx)
              + at(y1, x0) * w(wy * (1 - wx)) + at(y1, x1) * w(wy * wx))
    # a column on a source centre has weights (1, 0, 0, 0): v·1 + w·0 + … is v bit for bit (IEEE), so it copies it
    inside_t = torch.as_tensor(inside, device=src.device)
    return torch.where(inside_t, values, torch.zeros_like(values)), inside_t


def map_for_box(route_map: BEVMap, scene_to_world: np.ndarray, bounds_xy, grid_yx) -> BEVMap:
    """The part of a world-frame route map under one box, resampled to the box's grid (nearest cell).

    Args:
        route_map: a `BEVMap` whose bounds are world-frame metres (e.g. ``sim_bridge route``'s ``map.json``).
        scene_to_world: ``[4, 4]`` the box's scene frame → world.
        bounds_xy: the box ``((xmin, ymin), (xmax, ymax))`` metres, scene frame.
        grid_yx: ``(Y, X)`` cells of the box's map (the bundle's `bev_grid_yx`).
    Returns:
        a `BEVMap` in the scene frame; `UNOBSERVED` where the box reaches beyond the route map.
    """
    xs, ys = cell_centres(bounds_xy, grid_yx)
    gx, gy = np.meshgrid(xs, ys)
    pts = np.stack([gx, gy, np.zeros_like(gx), np.ones_like(gx)], -1) @ np.asarray(scene_to_world, np.float64).T
    (wxmin, wymin), (wxmax, wymax) = route_map.bounds
    H, W = route_map.tags.shape
    ix = np.floor((pts[..., 0] - wxmin) / ((wxmax - wxmin) / W)).astype(np.int64)
    iy = np.floor((pts[..., 1] - wymin) / ((wymax - wymin) / H)).astype(np.int64)
    ok = (ix >= 0) & (ix < W) & (iy >= 0) & (iy < H)
    tags = np.full(grid_yx, UNOBSERVED, dtype=np.uint8)
    tags[ok] = route_map.tags[iy[ok], ix[ok]]
    return BEVMap(tags, bounds=bounds_xy, name=route_map.name, source=route_map.source)


def source_x(bounds_xy, grid_yx, dst_to_src: np.ndarray) -> np.ndarray:
    """``[Y, X]`` float64: the source-frame x (metres) of each destination column centre (``dst_to_src`` ``[4, 4]``)."""
    xs, ys = cell_centres(bounds_xy, grid_yx)
    gx, gy = np.meshgrid(xs, ys)
    m = np.asarray(dst_to_src, np.float64)
    return m[0, 0] * gx + m[0, 1] * gy + m[0, 3]
