"""What the `nfldm` commands' options list in ``--help``, without importing the modules that define it.

``nfldm --help``, ``nfldm <command> --help`` and argument errors must not import torch (seconds of start-up), so
option choices and defaults that live in torch-importing modules are named here; `tests/project/test_cli_startup.py`
checks that each tuple equals the table it mirrors (`nfldm_sdk.models.noise_schedule.SAMPLERS`, `nfldm_sdk.cameras.rig.RIG_PRESETS`).
"""
from __future__ import annotations

__all__ = ["SAMPLER_NAMES", "RIG_PRESET_NAMES", "DEVICE_DEFAULT_HELP", "default_device"]

#: ``--sampler`` choices: the keys of `nfldm_sdk.models.noise_schedule.SAMPLERS`, in its order.
SAMPLER_NAMES = ("ddpm", "ddim", "dpmsolver++")
#: ``--rig`` presets: the keys of `nfldm_sdk.cameras.rig.RIG_PRESETS`, in its order.
RIG_PRESET_NAMES = ("capture", "nuscenes", "front", "default", "ring6")
#: What ``--help`` shows as the default of ``--device`` options whose default is `default_device`.
DEVICE_DEFAULT_HELP = "cuda when available, else cpu"


def default_device() -> str:
    """``"cuda"`` when torch sees a GPU, else ``"cpu"``; a click option default (called when the command runs, so
    that ``--help`` does not import torch)."""
    import torch  # start-up time: torch, imported only when a command runs

    return "cuda" if torch.cuda.is_available() else "cpu"
