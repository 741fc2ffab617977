"""The perception critic's view of the preset table: its network and training by preset name (`CRITIC_PRESETS`).

The values live in the one preset table (``nfldm_training.configs.presets.PRESETS``, section ``critic``);
`CRITIC_PRESETS` / `get_critic_preset` give them as `CriticPreset` s (the section types are in
`nfldm_training.configs.sections`). The critic (`nfldm_sdk.models.critic.PerceptionCritic`) is a small segmentation
U-Net trained on the captured images and tags of the training episodes; ``nfldm eval`` uses it for the label
agreement of rendered RGB with the semantic field and for the critic Fréchet distance (CFD). Sizes:

* ``tiny`` — CI on CPU: 64×64 images, widths (16, 32, 32), 61k parameters, 300 steps (about a minute on 2 CPU cores).
* ``small`` — 128×128 images, widths (32, 64, 128, 128), two blocks per stage.
* ``paper`` — 256×256 images, widths (32, 64, 128, 256, 256), two blocks per stage.
"""
from __future__ import annotations

from typing import Any, Mapping

from nfldm_training.configs.presets import PRESETS, copy_with_overrides
from nfldm_training.configs.sections import CriticPreset

__all__ = ["CRITIC_PRESETS", "get_critic_preset"]

#: The critic's view of `PRESETS`, by preset name (the table's own objects: copy before changing).
CRITIC_PRESETS: dict[str, CriticPreset] = {name: p.critic for name, p in PRESETS.items()}


def get_critic_preset(name: str, overrides: Mapping[str, Any] | None = None) -> CriticPreset:
    """A copy of ``CRITIC_PRESETS[name]`` with dotted `overrides` (``{"train.max_steps": 10}``) applied.

    Raises ``KeyError`` listing the names for an unknown one, or naming the section's fields for an unknown key.
    """
    return copy_with_overrides(CRITIC_PRESETS, name, overrides, what="critic preset")
