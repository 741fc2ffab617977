"""Stage-1 losses: image reconstruction and depth on valid pixels (docs/method.md, stage 1, step 5).

Functional: tensors in, a scalar out. Shapes use ``...`` for any leading batch/view axes.
"""
from __future__ import annotations

import torch


def image_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Mean per-pixel image reconstruction error.

    Args:
        pred, target: ``[..., 3, H, W]`` images in [0, 1].
        kind: ``"l1"`` (mean absolute error) or ``"l2"`` (mean squared error).
    Returns:
        scalar tensor.
    """
    if pred.shape != target.shape:
        raise ValueError(f"image shapes differ: prediction {tuple(pred.shape)} vs target {tuple(target.shape)}")
    diff = pred - target
    if kind == "l1":
        return diff.abs().mean()
    if kind == "l2":
        return diff.square().mean()
    raise ValueError(f"unknown image loss {kind!r}: use 'l1' or 'l2'")


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


def depth_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, near: float, far: float,
               kind: str = "l1") -> torch.Tensor:
    """L1 depth error on valid pixels inside the box's depth range.

    Args:
        pred: ``[..., H, W]`` rendered planar depth, metres.
        target: ``[..., H, W]`` captured planar depth, metres (``inf`` = no hit).
        valid: ``[..., H, W]`` bool, pixels to supervise (the capture's valid mask, or `box_depth_mask`);
            pixels where `pred` is ``inf`` (the render met nothing) carry no gradient and are skipped.
        near, far: supervised depth range, metres (pixels outside it are ignored; see `depth_mask`).
        kind: ``"l1"`` on depth in metres, or ``"inverse"``: L1 on inverse depth scaled by `near`
            (``near/ρ``, in [near/far, 1]), which weights near surfaces more and keeps the loss O(1).
    Returns:
        scalar tensor; 0 (still attached to `pred`) when no pixel is usable.
    """
    if pred.shape != target.shape or target.shape != valid.shape:
        raise ValueError(f"depth shapes differ: prediction {tuple(pred.shape)}, target {tuple(target.shape)}, valid {tuple(valid.shape)}")
    mask = depth_mask(target, valid, near, far) & torch.isfinite(pred)
    if not bool(mask.any()):
        return torch.where(torch.isfinite(pred), pred, torch.zeros_like(pred)).sum() * 0.0
    p, t = pred[mask], target[mask]
    if kind == "l1":
        return (p - t).abs().mean()
    if kind == "inverse":
        return (near / p.clamp_min(1e-3) - near / t).abs().mean()
    raise ValueError(f"unknown depth loss {kind!r}: use 'l1' or 'inverse'")
