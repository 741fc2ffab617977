"""The preset names ``--preset`` offers, without importing the preset table (which imports torch).

``nfldm train ... --help`` and argument errors must not import torch (seconds of start-up);
`tests/project/test_cli_startup.py` checks that `PRESET_NAMES` equals the keys of every stage's view of the one preset
table (`nfldm_training.configs.presets.PRESETS`, `LATENT_PRESETS`, `LDM_PRESETS`, `PRIOR_PRESETS`, `CRITIC_PRESETS`).
"""
from __future__ import annotations

__all__ = ["PRESET_NAMES"]

#: Keys of `nfldm_training.configs.presets.PRESETS`, in its order (smallest first).
PRESET_NAMES = ("tiny", "default", "small", "paper")
