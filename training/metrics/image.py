"""Stage-1 evaluation metrics: PSNR of reconstructed images, depth AbsRel on valid pixels.

Both are returned per image (so a validation loop can average over images, not over batches of different
sizes) and have an exact worked example in tests/training/test_losses_metrics.py.
"""
from __future__ import annotations

import torch

from nfldm_training.metrics.masks import depth_mask


def psnr(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, for images in [0, 1] (peak = 1).

    ``PSNR = -10 log10(MSE)``; e.g. a uniform error of 0.1 gives MSE 0.01 and 20 dB.

    Args:
        pred, target: ``[..., 3, H, W]`` in [0, 1] (pred is clamped to [0, 1]).
    Returns:
        ``[...]`` dB.
    """
    if pred.shape != target.shape:
        raise ValueError(f"image shapes differ: prediction {tuple(pred.shape)} vs target {tuple(target.shape)}")
    mse = (pred.clamp(0, 1) - target).square().flatten(-3).mean(-1)
    return -10.0 * torch.log10(mse + eps)


def depth_abs_rel(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, near: float, far: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute relative depth error ``|ρ̂ − ρ| / ρ`` summed per image over usable pixels.

    Usable pixels: `valid` and within ``[near, far]`` (see `nfldm_training.metrics.masks.depth_mask`; pass
    `box_depth_mask` as `valid` to count only surfaces inside the voxel box). A predicted ``inf`` (no hit) counts
    as `far`.

    Args:
        pred, target: ``[..., H, W]`` planar depth, metres.
        valid: ``[..., H, W]`` bool.
    Returns:
        ``(sum [...], count [...])``: the sum of AbsRel over usable pixels and their number, per image, so
        callers can pool pixels over a whole validation set (``sum.sum() / count.sum()``).
    """
    mask = depth_mask(target, valid, near, far)
    pred = torch.where(torch.isfinite(pred), pred, torch.full_like(pred, far))  # a no-hit render counts as the far plane
    rel = torch.where(mask, (pred - target).abs() / torch.where(mask, target, torch.ones_like(target)), torch.zeros_like(pred))
    return rel.flatten(-2).sum(-1), mask.flatten(-2).sum(-1)
