"""Label-preserving losses of the latent auto-encoder: the frozen stage-1 semantic head read on V and on V̂.

The voxel and image losses of stage 2 weigh every voxel and pixel alike, so the rare classes (vegetation canopies,
poles, vehicles) cost little when they are decoded as their neighbours; the shipped default model's LAE kept a BEV
layout mIoU of 0.141 of its stage-1 fields' 0.269 and lost vegetation entirely. These two terms make the labels of
the decoded field a target of their own, each with class-balanced weights (a class of ``n_k`` supervised elements in
the batch weighs ``n_k^(−power)``, so with ``power = 0.5`` a class 100× rarer counts 10× more per element):

* `voxel_label_loss` — on every voxel solid in V (its own opacity reaches `HIT_ALPHA`), the cross-entropy of the
  head's logits on φ̂ against the class the head gives φ (the features' part of the labels);
* `bev_label_loss` — on every grid column, the negative log-likelihood under V̂'s top-down class distribution
  (`nfldm_sdk.labels.semantic_field.field_bev_probabilities`) of V's top-down label, sky where V's column is empty
  (density and features together: what `NeuralScene.bev()` and the layout figures read).

Targets come from V under ``no_grad``; the head's weights are the frozen stage-1 model's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.labels.classes import SemanticClasses
from nfldm_sdk.labels.semantic_field import (class_indices_from_probabilities, field_bev_probabilities, solid_voxels,
                                             voxel_logits)
from nfldm_sdk.rendering.rays import HIT_ALPHA

__all__ = ["balanced_weights", "bev_label_loss", "voxel_label_loss"]


def balanced_weights(labels: torch.Tensor, num_classes: int, power: float = 0.5) -> torch.Tensor:
    """Per-element weights ``n_k^(−power)`` of integer `labels` ``[N]`` (``n_k``: how often class k occurs in
    `labels`), float ``[N]``; ``power = 0`` gives ones."""
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float32)
    return counts.clamp_min(1.0).pow(-float(power))[labels]


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (values * weights).sum() / weights.sum().clamp_min(1e-12)


def voxel_label_loss(pred: VoxelField, target: VoxelField, weight: torch.Tensor, bias: torch.Tensor,
                     power: float = 0.5) -> torch.Tensor:
    """Class-balanced cross-entropy of the head on V̂'s features against its labels of V, over V's solid voxels.

    Args:
        pred, target: batched fields of one grid (features ``[B, C, Z, Y, X]``, density ``[B, Z, Y, X]`` 1/m).
        weight, bias: the semantic head, ``[K−1, C]`` and ``[K−1]`` (solid classes).
        power: class-balancing exponent (module docstring).
    Returns:
        scalar; 0 (attached to `pred`) when V has no solid voxel.
    """
    with torch.no_grad():
        solid = solid_voxels(target)                                                   # [B, Z, Y, X]
        labels = voxel_logits(target, weight, bias).argmax(1)[solid]                   # [N]
    if labels.numel() == 0:
        return pred.features.sum() * 0.0
    logits = voxel_logits(pred, weight, bias).movedim(1, -1)[solid]                  # [N, K-1]
    ce = F.cross_entropy(logits.float(), labels, reduction="none")
    return _weighted_mean(ce, balanced_weights(labels, weight.shape[0], power))


def bev_label_loss(pred: VoxelField, target: VoxelField, weight: torch.Tensor, bias: torch.Tensor,
                   classes: SemanticClasses, power: float = 0.5) -> torch.Tensor:
    """Class-balanced NLL of V's top-down labels (sky where its column is empty) under V̂'s top-down distribution.

    Args:
        pred, target: batched fields of one grid.
        weight, bias: the semantic head; classes: its class set (K classes, sky included).
        power: class-balancing exponent (module docstring).
    Returns:
        scalar over the ``B × Y × X`` columns.
    """
    with torch.no_grad():
        p_t, alpha_t = field_bev_probabilities(target, weight, bias, classes)           # [B, K, Y, X], [B, Y, X]
        labels, _ = class_indices_from_probabilities(p_t, alpha_t >= HIT_ALPHA, classes.sky_index)   # [B, Y, X]
    p, _ = field_bev_probabilities(pred, weight, bias, classes)
    nll = -torch.log(p.gather(1, labels.unsqueeze(1)).squeeze(1).float().clamp_min(1e-6))   # [B, Y, X]
    flat = labels.reshape(-1)
    return _weighted_mean(nll.reshape(-1), balanced_weights(flat, classes.num_classes, power))
