"""The stage-1 semantic head: a thin `nn.Module` over `nfldm_sdk.labels.semantic_field` (the maths lives there).

One linear map from the feature channels C of ``V_feat`` to logits of the K−1 solid classes of a `SemanticClasses`
set (sky is the background: a ray that leaves the field renders it). Because it reads the feature grid, the
latent auto-encoder and the denoisers need no extra channels: a field decoded from latents has labels too.
"""
from __future__ import annotations

import torch
from torch import nn

from nfldm_sdk.errors import NfldmError
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.labels.classes import SemanticClasses
from nfldm_sdk.labels.semantic_field import field_bev, semantic_probabilities, voxel_labels

__all__ = ["SEMANTICS_UNAVAILABLE", "SemanticHead", "SemanticsUnavailableError", "require_semantic_head"]

#: The one message every "give me labels" request on a head-less model answers with (`require_semantic_head`).
SEMANTICS_UNAVAILABLE = ("semantics are unavailable: this model has no semantic head (stage 1 trained without "
                         "semantic_classes); retrain stage 1 with a current preset")


class SemanticsUnavailableError(NfldmError, RuntimeError):
    """Labels were asked of a model without a semantic head; the message is `SEMANTICS_UNAVAILABLE`."""


class SemanticHead(nn.Module):
    """Logits ``W f + b`` of the solid classes of `classes` from features ``f [C]`` (module docstring).

    Args:
        feature_channels: C.
        classes: the class set (its order is the probability axis of `probabilities`).
    """

    def __init__(self, feature_channels: int, classes: SemanticClasses):
        super().__init__()
        self.classes = classes
        self.linear = nn.Linear(feature_channels, classes.num_classes - 1)

    def probabilities(self, features: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """Rendered features ``[..., C, h, w]`` and opacity ``[..., h, w]`` -> class probabilities ``[..., K, h, w]``."""
        w, b = self.linear.weight, self.linear.bias
        return semantic_probabilities(features, alpha, w.to(features.dtype), b.to(features.dtype),
                                      self.classes.sky_index)

    @torch.no_grad()
    def voxel_labels(self, field: VoxelField) -> torch.Tensor:
        """CARLA tags of every voxel ``[B?, Z, Y, X]`` uint8 (`UNOBSERVED` = empty)."""
        return voxel_labels(field, self.linear.weight, self.linear.bias, self.classes)

    @torch.no_grad()
    def bev(self, field: VoxelField) -> torch.Tensor:
        """Bird's-eye map ``[B?, Y, X]`` uint8 of CARLA tags (`UNOBSERVED` where a top-down ray meets nothing)."""
        return field_bev(field, self.linear.weight, self.linear.bias, self.classes)


def require_semantic_head(head: SemanticHead | None) -> SemanticHead:
    """``head`` itself, or `SemanticsUnavailableError` when it is None (the one place that error is raised)."""
    if head is None:
        raise SemanticsUnavailableError(SEMANTICS_UNAVAILABLE)
    return head
