"""Stage-1 losses: image reconstruction, depth on valid pixels, semantics (docs/method.md, stage 1, step 5).

Functional: tensors in, a scalar out. Shapes use ``...`` for any leading batch/view axes. The pixels depth is
supervised on are those of `nfldm_training.metrics.masks` (`depth_mask`, `box_depth_mask`), the ones the depth metrics
count.
"""
from __future__ import annotations

import torch

from nfldm_training.metrics.masks import depth_mask


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


def semantic_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the captured classes under the rendered class distribution.

    Args:
        probs: ``[..., K, H, W]`` class probabilities (`nfldm_sdk.labels.semantic_field.semantic_probabilities`).
        target: ``[..., H, W]`` int64 class indices; negative = not supervised.
    Returns:
        scalar tensor; 0 (still attached to `probs`) when no pixel is supervised.
    """
    if probs.shape[:-3] + probs.shape[-2:] != target.shape:
        raise ValueError(f"semantic shapes differ: probabilities {tuple(probs.shape)} vs target {tuple(target.shape)}")
    mask = target >= 0
    if not bool(mask.any()):
        return probs.sum() * 0.0
    p = probs.gather(-3, target.clamp_min(0).unsqueeze(-3)).squeeze(-3)            # [..., H, W]
    return -torch.log(p[mask].clamp_min(1e-6)).mean()
