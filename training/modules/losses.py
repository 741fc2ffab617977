"""Stage-1 losses: image reconstruction, depth on valid pixels, semantics (docs/method.md, stage 1, step 5).

Functional: tensors in, a scalar out. Shapes use ``...`` for any leading batch/view axes. The pixels depth is
supervised on are those of `nfldm_training.metrics.masks` (`depth_mask`, `box_depth_mask`), the ones the depth metrics
count.
"""
from __future__ import annotations

import torch

from nfldm_training.metrics.image import ssim
from nfldm_training.metrics.masks import depth_mask
from nfldm_training.modules.label_losses import balanced_weights


def image_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "l1", ssim_weight: float = 0.0) -> torch.Tensor:
    """Mean per-pixel image reconstruction error, optionally blended with a structural (SSIM) term.

    ``(1 − w) · E + w · (1 − SSIM)`` with ``E`` the mean L1 or L2 error and ``w = ssim_weight`` (3D Gaussian
    splatting's image loss is L1 with w = 0.2). A per-pixel error alone is minimised by the mean of what a view could
    show, which is a blur; the SSIM term rewards local contrast and structure, so edges the field does encode (kerb
    and horizon lines in the default model's decoder fine-tune) are not averaged away.

    Args:
        pred, target: ``[..., 3, H, W]`` images in [0, 1] (the SSIM term needs H, W > 10).
        kind: ``"l1"`` (mean absolute error) or ``"l2"`` (mean squared error).
        ssim_weight: w in [0, 1]; 0 = the per-pixel error alone.
    Returns:
        scalar tensor.
    """
    if pred.shape != target.shape:
        raise ValueError(f"image shapes differ: prediction {tuple(pred.shape)} vs target {tuple(target.shape)}")
    if not 0.0 <= ssim_weight <= 1.0:
        raise ValueError(f"ssim_weight {ssim_weight} is outside [0, 1]")
    diff = pred - target
    if kind == "l1":
        err = diff.abs().mean()
    elif kind == "l2":
        err = diff.square().mean()
    else:
        raise ValueError(f"unknown image loss {kind!r}: use 'l1' or 'l2'")
    if ssim_weight == 0.0:
        return err
    structural = 1.0 - ssim(pred, target, compute_dtype=pred.dtype).mean()
    return (1.0 - ssim_weight) * err + ssim_weight * structural


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


def semantic_loss(probs: torch.Tensor, target: torch.Tensor, balance: float = 0.0) -> torch.Tensor:
    """Mean negative log-likelihood of the captured classes under the rendered class distribution.

    Args:
        probs: ``[..., K, H, W]`` class probabilities (`nfldm_sdk.labels.semantic_field.semantic_probabilities`).
        target: ``[..., H, W]`` int64 class indices; negative = not supervised.
        balance: class-balancing exponent: a class of ``n_k`` supervised pixels weighs ``n_k^(−balance)`` per pixel
            (`nfldm_training.modules.label_losses.balanced_weights`); 0 = the plain mean.
    Returns:
        scalar tensor; 0 (still attached to `probs`) when no pixel is supervised.
    """
    if probs.shape[:-3] + probs.shape[-2:] != target.shape:
        raise ValueError(f"semantic shapes differ: probabilities {tuple(probs.shape)} vs target {tuple(target.shape)}")
    mask = target >= 0
    if not bool(mask.any()):
        return probs.sum() * 0.0
    p = probs.gather(-3, target.clamp_min(0).unsqueeze(-3)).squeeze(-3)            # [..., H, W]
    nll = -torch.log(p[mask].clamp_min(1e-6))
    if balance == 0:
        return nll.mean()
    w = balanced_weights(target[mask], probs.shape[-3], balance)
    return (nll * w).sum() / w.sum()


def frustum_depth_target(depth: torch.Tensor, edges: torch.Tensor, downsample: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The captured depth as a distribution over a frustum's depth bins at the feature-map resolution.

    Each image pixel votes for the bin its planar depth falls in, or for "escape" (index D) when its ray meets
    nothing before the frustum's far edge (``inf`` = sky, or depth ≥ far); pixels nearer than the first edge do not
    vote. Votes are averaged over each ``downsample × downsample`` block, so a feature pixel on a silhouette gets a
    mixed target.

    Args:
        depth: ``[..., H, W]`` captured planar depth, metres (``inf`` = no hit); ``H, W`` divisible by `downsample`.
        edges: ``[D+1]`` bin edges, metres (`nfldm_sdk.fields.lift_splat.DepthBins.edges`).
        downsample: the feature downsample factor f.
    Returns:
        ``(target [..., D+1, H/f, W/f], weight [..., H/f, W/f])``: the distribution (sums to 1 where weight > 0) and
        the fraction of the block's pixels that voted.
    """
    D = edges.shape[0] - 1
    lead, (H, W) = depth.shape[:-2], depth.shape[-2:]
    f = int(downsample)
    if H % f or W % f:
        raise ValueError(f"depth {H}x{W} must be divisible by the downsample factor {f}")
    e = edges.to(depth)
    votes = depth >= e[0]                                                     # inf votes too (escape)
    index = torch.bucketize(depth.clamp_max(float(e[-1])), e[1:-1], right=True)  # [..., H, W] in 0..D-1
    index = torch.where(depth >= e[-1], torch.full_like(index, D), index)     # escape, inf included
    onehot = torch.nn.functional.one_hot(index.clamp(0, D), D + 1).to(depth.dtype) * votes[..., None]
    flat = onehot.reshape(-1, H, W, D + 1).permute(0, 3, 1, 2)                 # [N, D+1, H, W]
    pooled = torch.nn.functional.avg_pool2d(flat, f)                           # [N, D+1, h, w]
    weight = pooled.sum(1)                                                     # [N, h, w]
    target = pooled / weight.clamp_min(1e-12)[:, None]
    h, w = H // f, W // f
    return target.reshape(*lead, D + 1, h, w), weight.reshape(*lead, h, w)


def occupancy_loss(occupancy: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a frustum's ray-termination distribution against the captured depth's
    (`frustum_depth_target`): ``−Σ_d q_d log p_d`` with ``p = [O(0), …, O(D−1), 1 − Σ O]``, the last entry the
    chance the ray escapes (sky). Supervises every bin of the lift directly — empty before the surface, occupied at
    it, empty along sky rays — which the rendered-depth loss alone does not (it leaves fog that averages to the
    right depth).

    Args:
        occupancy: ``[..., D, h, w]`` per-bin occupancy (`SceneAEOutput.occupancy`), Σ_d ≤ 1.
        target: ``[..., D+1, h, w]``; weight: ``[..., h, w]`` (pixels with weight 0 are skipped).
    Returns:
        scalar tensor (weighted mean over feature pixels); 0 (still attached) when no pixel has weight.
    """
    if occupancy.shape[:-3] != target.shape[:-3] or occupancy.shape[-3] + 1 != target.shape[-3] \
            or occupancy.shape[-2:] != target.shape[-2:] or weight.shape != target.shape[:-3] + target.shape[-2:]:
        raise ValueError(f"occupancy {tuple(occupancy.shape)} needs target [..., D+1, h, w] and weight [..., h, w], "
                         f"got {tuple(target.shape)} and {tuple(weight.shape)}")
    escape = (1.0 - occupancy.sum(-3, keepdim=True)).clamp_min(0.0)
    p = torch.cat([occupancy, escape], dim=-3).float()
    ce = -(target.float() * torch.log(p.clamp_min(1e-6))).sum(-3)             # [..., h, w]
    w = weight.float()
    total = w.sum()
    if float(total) == 0.0:
        return occupancy.sum() * 0.0
    return (ce * w).sum() / total


def opacity_loss(alpha: torch.Tensor, opaque: torch.Tensor, empty: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the rendered opacity: 1 where the captured surface is inside the box, 0 where the
    ray crosses the box without meeting one (`nfldm_training.metrics.masks.box_depth_mask`, `empty_ray_mask`).
    Keeps sky and free space empty and surfaces solid, so no-hit rays render depth ``inf``.

    Args:
        alpha: ``[..., H, W]`` rendered opacity in [0, 1].
        opaque, empty: ``[..., H, W]`` bool masks (disjoint); other pixels are not supervised.
    Returns:
        scalar tensor, the mean over supervised pixels; 0 (still attached) when there are none.
    """
    if not (alpha.shape == opaque.shape == empty.shape):
        raise ValueError(f"opacity shapes differ: alpha {tuple(alpha.shape)}, opaque {tuple(opaque.shape)}, empty {tuple(empty.shape)}")
    a = alpha.float().clamp(1e-5, 1.0 - 1e-5)
    n = opaque.sum() + empty.sum()
    if int(n) == 0:
        return alpha.sum() * 0.0
    return (-(torch.log(a) * opaque).sum() - (torch.log1p(-a) * empty).sum()) / n
