"""Stage-1 evaluation metrics: PSNR and SSIM of reconstructed images, depth AbsRel on valid pixels.

All are returned per image (so a validation loop can average over images, not over batches of different
sizes) and have an exact worked example in tests/training/test_losses_metrics.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

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


def _gaussian_window(sigma: float, radius: int, dtype, device) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor, sigma: float = 1.5, data_range: float = 1.0,
         compute_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Structural similarity per image with a Gaussian window (Wang et al. 2004); differentiable.

    Matches ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1, channel_axis=...)``: window radius ``int(3.5 σ + 0.5)`` (skimage's
    truncate=3.5), K1 = 0.01, K2 = 0.03, mean over the pixels whose window lies fully inside the image and over
    channels.

    Args:
        pred, target: ``[..., C, H, W]`` in [0, data_range] (H, W > 2 × radius).
        compute_dtype: dtype of the window sums: float64 for the metric (skimage's precision), the images' own
            dtype for a training loss (`nfldm_training.modules.losses.image_loss`).
    Returns:
        ``[...]`` SSIM per image, in `pred`'s dtype.
    """
    if pred.shape != target.shape:
        raise ValueError(f"image shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    lead, (C, H, W) = pred.shape[:-3], pred.shape[-3:]
    radius = int(3.5 * sigma + 0.5)
    if H <= 2 * radius or W <= 2 * radius:
        raise ValueError(f"images of {H}x{W} are too small for an SSIM window of radius {radius}")
    x = pred.reshape(-1, 1, H, W).to(compute_dtype)
    y = target.reshape(-1, 1, H, W).to(compute_dtype)
    w = _gaussian_window(sigma, radius, x.dtype, x.device)
    def blur(t):  # separable Gaussian, 'valid' region only (skimage crops the border of width radius)
        t = F.conv2d(t, w.view(1, 1, 1, -1))
        return F.conv2d(t, w.view(1, 1, -1, 1))
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).view(*lead, C).mean(-1).to(pred.dtype)
