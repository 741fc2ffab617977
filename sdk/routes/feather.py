"""Cross-fading a new route scene into the one before it over their overlap (feathering).

Outpainting holds the latents of the overlap fixed (`nfldm_sdk.routes.outpaint`), yet the two decodes of the same
latents differ there: the latent decoder sees different context beyond the overlap and pads at each box's edge, so
each scene's field is least reliable near its own box's edge — scene j at the overlap's far end, scene j+1 at the
near one. `feather_into_predecessor` replaces scene j+1's field over the overlap by

    w · field_{j+1} + (1 − w) · field_j (moved into j+1's frame, `nfldm_sdk.routes.transfer.transfer_columns`)

with the mosaic feathering weight ``w = d_new / (d_new + d_old)``: ``d_new`` the column's distance (metres) to the
nearer of scene j+1's front and back edges (of its grid of column centres; a box's x axis is the drive's heading
where it is anchored, `nfldm_sdk.routes.placement`), ``d_old`` to the nearer of scene j's back edge and its reach
(how far ahead a scene is trusted), measured in scene j's frame. ``w`` is 0 on scene j+1's back column (there it is scene j's field exactly), rises to 1 where the overlap
ends and is 1 beyond it — on a straight route a linear ramp along the drive — so the field is continuous across
both ends of the overlap, and each decode weighs most where it is reliable. (On a curve, scene j's side edge cuts
through the overlap; across it the weight steps to 1, by ``1 − w`` times the two decodes' difference.) Scene j is
left as it is, so a resumed route blends exactly as an uninterrupted one.
"""
from __future__ import annotations

import numpy as np
import torch

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.routes.transfer import cell_centres, transfer_columns

__all__ = ["feather_weights", "feather_into_predecessor"]


def _hull(bounds_xy, grid_yx) -> tuple[float, float, float, float]:
    """``(x0, x1, y0, y1)`` metres: the hull of the grid's column centres."""
    (xmin, ymin), (xmax, ymax) = bounds_xy
    Y, X = grid_yx
    hx, hy = 0.5 * (xmax - xmin) / X, 0.5 * (ymax - ymin) / Y
    return xmin + hx, xmax - hx, ymin + hy, ymax - hy


def feather_weights(bounds_xy, grid_yx: tuple[int, int], dst_to_src: np.ndarray,
                    reach: float | None = None) -> np.ndarray:
    """``[Y, X]`` float64 weight of the new (destination) scene's field at each column, in [0, 1] (module docstring).

    Args:
        bounds_xy: ``((xmin, ymin), (xmax, ymax))`` metres, the box both scenes span in their own frames.
        grid_yx: ``(Y, X)`` columns of the grid.
        dst_to_src: ``[4, 4]`` rigid transform, the new scene's frame → the previous scene's.
        reach: the previous scene is trusted up to this x (metres, its frame): its last column centre before it is
            the "front edge" that ``d_old`` is measured to (None: the grid's).
    Returns:
        1 on columns outside the previous scene's trusted grid, ``d_new / (d_new + d_old)`` inside it.
    """
    xs, ys = cell_centres(bounds_xy, grid_yx)
    gx, gy = np.meshgrid(xs, ys)                                                   # [Y, X] each
    pts = np.stack([gx, gy, np.zeros_like(gx), np.ones_like(gx)], -1) @ np.asarray(dst_to_src, np.float64).T
    x0, x1, y0, y1 = _hull(bounds_xy, grid_yx)
    eps = 1e-9
    trusted = xs[xs <= (x1 if reach is None else float(reach)) + eps]    # the previous grid's trusted columns
    x1_old = float(trusted.max()) if len(trusted) else x0 - 1.0           # (none: no column blends)
    px, py = pts[..., 0], pts[..., 1]
    inside = (px >= x0 - eps) & (px <= x1_old + eps) & (py >= y0 - eps) & (py <= y1 + eps)
    d_new = np.clip(np.minimum(gx - x0, x1 - gx), 0.0, None)
    d_old = np.clip(np.minimum(px - x0, x1_old - px), 0.0, None)
    total = d_new + d_old
    w = np.where(total > 0, d_new / np.where(total > 0, total, 1.0), 1.0)
    return np.where(inside, w, 1.0)


def feather_into_predecessor(new: VoxelField, prev: VoxelField, bounds_xy, dst_to_src: np.ndarray, *,
                             reach: float | None = None) -> VoxelField:
    """Scene j+1's field cross-faded into scene j's over their overlap (module docstring).

    Args:
        new: the new scene's field, ``density [Z, Y, X]``, ``features [C, Z, Y, X]`` (unbatched).
        prev: the previous scene's field on the same grid and box, in its own frame.
        bounds_xy: the box's ``((xmin, ymin), (xmax, ymax))`` metres.
        dst_to_src: ``[4, 4]`` the new scene's frame → the previous scene's.
        reach: the previous scene is trusted up to this x, metres (`feather_weights`).
    Returns:
        a new `VoxelField`; columns beyond the overlap are `new`'s bit for bit.
    """
    if new.density.dim() != 3 or tuple(new.density.shape) != tuple(prev.density.shape) \
            or tuple(new.features.shape) != tuple(prev.features.shape):
        raise ValueError(f"feathering needs two unbatched fields on the same grid, got density "
                         f"{tuple(new.density.shape)} and {tuple(prev.density.shape)}")
    Z, Y, X = new.density.shape
    C = new.features.shape[0]
    w = torch.as_tensor(feather_weights(bounds_xy, (Y, X), dst_to_src, reach), dtype=new.density.dtype,
                        device=new.density.device)
    blend = w < 1
    if not bool(blend.any()):
        return VoxelField(new.density.clone(), new.features.clone(), new.bounds.clone())
    old_d, _ = transfer_columns(prev.density.to(new.density), bounds_xy, dst_to_src)              # [Z, Y, X]
    old_f, _ = transfer_columns(prev.features.to(new.features).reshape(C * Z, Y, X), bounds_xy, dst_to_src)
    density = torch.where(blend, w * new.density + (1 - w) * old_d, new.density)
    features = torch.where(blend, w * new.features + (1 - w) * old_f.reshape(C, Z, Y, X), new.features)
    return VoxelField(density, features, new.bounds.clone())
