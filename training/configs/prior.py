"""Stage-4 view of the preset table: the SDS prior's sizes and training by preset name (`PRIOR_PRESETS`).

The values live in the one preset table (``nfldm_training.configs.presets.PRESETS``, section ``prior``);
`PRIOR_PRESETS` / `get_prior_preset` give them as `PriorPreset`s (the section types are in
`nfldm_training.configs.sections`).

The prior is our offline stand-in for the paper's CLIP-conditioned latent diffusion model: a small class-conditional
pixel-space U-Net (`nfldm_sdk.models.prior_unet.PriorUNet`) trained on captured images (class "dataset") and on renders of
generated scenes (class "artifact"), with condition dropout to the null class. Sizes (ours):

* ``tiny`` — CI on CPU: 32×32 images, U-Net (16, 32), a few dozen steps.
* ``small`` — the shipped default: 64×64 images, U-Net (64, 128, 256) with attention at the two coarse levels,
  20k steps (~20 min on one GPU), artifacts from 256 generated scenes × 8 views.
* ``paper`` — 128×128 images, U-Net (128, 256, 256, 512), 2 layers per block, 100k steps, 1024 scenes × 8 views.
"""
from __future__ import annotations

from typing import Any, Mapping

from nfldm_training.configs.presets import PRESETS, copy_with_overrides
from nfldm_training.configs.sections import PriorPreset

__all__ = ["PRIOR_PRESETS", "get_prior_preset"]

#: The stage-4 view of `PRESETS`, by preset name (the table's own objects: copy before changing).
PRIOR_PRESETS: dict[str, PriorPreset] = {name: p.prior for name, p in PRESETS.items()}


def get_prior_preset(name: str, overrides: Mapping[str, Any] | None = None) -> PriorPreset:
    """A copy of ``PRIOR_PRESETS[name]`` with dotted `overrides` (``{"train.max_steps": 10}``) applied.

    Raises ``KeyError`` listing the names for an unknown one, or naming the section's fields for an unknown key.
    """
    return copy_with_overrides(PRIOR_PRESETS, name, overrides, what="prior preset")
