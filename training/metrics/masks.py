"""Pixel masks of the depth supervision and the depth metrics: which captured depths a render of the voxel box can
reproduce (docs/method.md, stage 1, step 5). The stage-1 losses (`nfldm_training.modules.losses`), the image
metrics (`nfldm_training.metrics.image`) and `nfldm eval` count the same pixels through these.

Functional: tensors in, a bool tensor of the depth's shape out. Shapes use ``...`` for any leading batch/view axes.
"""
from __future__ import annotations

import torch

__all__ = ["depth_mask", "box_depth_mask", "empty_ray_mask"]


def depth_mask(depth: torch.Tensor, valid: torch.Tensor, near: float, far: float) -> torch.Tensor:
    """Pixels whose target depth is usable: valid (finite) and within ``[near, far]`` metres. Same shape as `depth`.

    Depths beyond `far` are not supervised: the voxel box cannot represent them, so asking the renderer for
    them would only teach it to smear density to the box's edge.
    """
    return valid & torch.isfinite(depth) & (depth >= near) & (depth <= far)


def box_depth_mask(depth: torch.Tensor, valid: torch.Tensor, cameras, bounds: torch.Tensor, near: float,
                   far: float) -> torch.Tensor:
    """Pixels whose captured surface lies inside the voxel box (and within ``[near, far]``): the only depths a
    render of the box can reproduce. Same shape as `depth`.

    Args:
        depth: ``[..., H, W]`` planar depth, metres (``inf`` = no hit).
        valid: ``[..., H, W]`` bool.
        cameras: ``nfldm_sdk.cameras.pinhole.Cameras`` of batch shape ``[...]`` at ``H×W`` (``cam_to_world`` = camera -> scene).
        bounds: ``[2, 3]`` box min/max (x, y, z) in the scene frame, metres.
    """
    mask = depth_mask(depth, valid, near, far)
    rays = cameras.rays()                                                    # [..., H, W, 3] origins/directions
    t = torch.where(mask, depth, torch.zeros_like(depth)) / rays.z_per_t     # ray distance of the surface
    p = rays.origins + rays.directions * t[..., None]                        # [..., H, W, 3] scene frame
    b = bounds.to(p)
    inside = ((p >= b[0]) & (p <= b[1])).all(-1)
    return mask & inside


def empty_ray_mask(depth: torch.Tensor, valid: torch.Tensor, cameras, bounds: torch.Tensor, near: float) -> torch.Tensor:
    """Pixels whose ray crosses the voxel box without meeting a surface: the camera is inside the box and the
    capture saw sky (no hit) or a surface outside the box, so a render of the box must stay transparent there.
    Same shape as `depth`; arguments as `box_depth_mask` (``valid`` marks finite captured depths).

    Why the camera must be inside: the box is convex, so a ray from inside leaves it once; the part of the ray
    inside the box then lies before the surface and is free space. Pixels closer than `near` are left out.
    """
    rays = cameras.rays()                                                    # [..., H, W, 3]
    b = bounds.to(rays.origins)
    cam_inside = ((rays.origins >= b[0]) & (rays.origins <= b[1])).all(-1)   # [..., H, W]
    sky = ~torch.isfinite(depth)
    finite = valid & torch.isfinite(depth) & (depth >= near)
    t = torch.where(finite, depth, torch.zeros_like(depth)) / rays.z_per_t
    p = rays.origins + rays.directions * t[..., None]
    outside = ~((p >= b[0]) & (p <= b[1])).all(-1)
    return cam_inside & (sky | (finite & outside))
