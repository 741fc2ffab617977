"""Stage-2 view of the preset table: the latent auto-encoder's sizes and training settings by name (tiny / small / paper).

The values live in the one preset table (``nfldm_training.configs.presets.PRESETS``, sections ``latent_ae`` and
``latent_ae_train``); `LATENT_PRESETS` / `get_latent_preset` give them as `LatentPreset`s (the section types are in
`nfldm_training.configs.sections`).

The grid, feature channels and box of each ``latent_ae`` config equal those of the stage-1 preset of the same
name (``PRESETS[name].scene_ae``); at training time they are taken from the actual stage-1 model
(`LatentAEConfig.for_scene_ae`), so a custom stage-1 grid works with any preset's widths.

Latent sizes per preset (grid ``(Z, Y, X)`` -> g, c ``[4, Zc, Yc, Xc]``, f ``[4, Y, X]``):

* ``tiny``  — (8, 32, 32), C 8 -> g 16, c [4, 4, 8, 8], f [4, 32, 32]; codebooks 64.
* ``small`` — (16, 64, 64), C 16 -> g 64, c [4, 8, 16, 16], f [4, 64, 64]; codebooks 256.
* ``paper`` — (32, 128, 128), C 32 -> g 128, c [4, 16, 32, 32], f [4, 128, 128] (docs/method.md); codebooks 1024
  (the paper does not give codebook sizes: 1024 four-dimensional codes is our choice).
"""
from __future__ import annotations

from typing import Any, Mapping

from nfldm_training.configs.presets import PRESETS, copy_with_overrides
from nfldm_training.configs.sections import LatentPreset

__all__ = ["LATENT_PRESETS", "get_latent_preset"]

#: The stage-2 view of `PRESETS`, by preset name (its sections are the table's own objects: copy before changing).
LATENT_PRESETS: dict[str, LatentPreset] = {name: p.latent_view() for name, p in PRESETS.items()}


def get_latent_preset(name: str, overrides: Mapping[str, Any] | None = None) -> LatentPreset:
    """A copy of `LATENT_PRESETS[name]` with dotted `overrides` (``{"latent_ae_train.max_steps": 10}``) applied.

    Raises ``KeyError`` listing the presets for an unknown name, or naming the section's fields for an unknown key.
    """
    return copy_with_overrides(LATENT_PRESETS, name, overrides)
