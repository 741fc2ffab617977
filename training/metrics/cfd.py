"""The critic Fréchet distance (CFD): the Fréchet distance between Gaussians fitted to two sets of perception-critic
features (`nfldm_sdk.models.critic.PerceptionCritic.features`, the average-pooled bottleneck of a segmentation
network trained on captured images of the training episodes).

It is the FID formula on other features: the means and sample covariances (ddof 1) of the two sets go through the
project's one Fréchet distance, `nfldm_training.metrics.fid.frechet_distance`
(``‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½)``). The number is not an FID and is not comparable with published FIDs:
its features come from our small critic, not from the standard Inception network. Like FID it is biased upwards for
small sets, so compare CFDs of sets of equal sizes (``nfldm eval`` reports its ceiling — captured training-episode
images against captured held-out images — with the same counts).
"""
from __future__ import annotations

import numpy as np

from nfldm_training.errors import TrainingError
from nfldm_training.metrics.fid import feature_fid

__all__ = ["critic_frechet_distance"]


def critic_frechet_distance(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """CFD between two feature sets ``[N1, D]`` and ``[N2, D]`` (module docstring); 0 for identical sets, and
    ``‖Δμ‖²`` for a set and a copy shifted by ``Δμ``.

    Raises:
        `TrainingError`: a set has fewer than 2 rows (no covariance), or the feature sizes differ.
    """
    a, b = np.asarray(feats1, dtype=np.float64), np.asarray(feats2, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise TrainingError(f"critic features must be [N, D] of one D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise TrainingError(f"the critic Fréchet distance needs at least 2 images per set, got {len(a)} and {len(b)}")
    return feature_fid(a, b)
