"""Tensor layouts shared by the latent networks: the vertical axis of a voxel or coarse latent grid folded into
channels, so that 2D convolutions (stage 2's encoders and decoders, stage 3's ψ_c and ψ_f) run over ``(Y, X)``."""
from __future__ import annotations

import torch

__all__ = ["fold_z", "unfold_z"]


def fold_z(x: torch.Tensor) -> torch.Tensor:
    """``[B, K, Z, Y, X] -> [B, K·Z, Y, X]`` (channel ``k·Z + z``): the vertical axis into channels."""
    return x.flatten(1, 2)


def unfold_z(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Inverse of `fold_z`: ``[B, K·Z, Y, X] -> [B, K, Z, Y, X]`` with ``K = channels``."""
    return x.unflatten(1, (channels, x.shape[1] // channels))
