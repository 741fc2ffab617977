"""Stage-4 prior sections of the preset table: `PRIOR_PRESETS` by preset name.

The values live in the one preset table (``nfldm_training.configs.presets.PRESETS``, section ``prior``); this module
defines the section's dataclasses, and `PRIOR_PRESETS` / `get_prior_preset` give a stage-4 view of the table.

The prior is our offline stand-in for the paper's CLIP-conditioned latent diffusion model: a small class-conditional
pixel-space U-Net (`nfldm_sdk.guidance.guidance.PriorUNet`) trained on captured images (class "dataset") and on renders of
generated scenes (class "artifact"), with condition dropout to the null class. Sizes (ours):

* ``tiny`` — CI on CPU: 32×32 images, U-Net (16, 32), a few dozen steps.
* ``small`` — the shipped default: 64×64 images, U-Net (64, 128, 256) with attention at the two coarse levels,
  20k steps (~20 min on one GPU), artifacts from 256 generated scenes × 8 views.
* ``paper`` — 128×128 images, U-Net (128, 256, 256, 512), 2 layers per block, 100k steps, 1024 scenes × 8 views.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

from nfldm_sdk.guidance.guidance import PriorConfig
from nfldm_sdk.persistence import config_from_dict, config_to_dict, nfldm_version

__all__ = ["PriorTrainConfig", "PriorPreset", "PRIOR_PRESETS", "get_prior_preset", "save_prior_preset", "load_prior_preset"]


@dataclass
class PriorTrainConfig:
    """Training of the prior (`nfldm_training.modules.prior`)."""

    batch_size: int = 32
    """Images per optimisation step (per device)."""
    lr: float = 2e-4
    """AdamW learning rate (constant after a linear warm-up)."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_steps: int = 2000
    """Optimisation steps (total, across resumes)."""
    ema_decay: float = 0.999
    """Decay of the EMA of the weights (what gets saved); warms up as ``min(decay, (1+n)/(10+n))``."""
    cond_dropout: float = 0.1
    """Fraction of training images whose class is replaced by the null class (classifier-free guidance needs the
    unconditional model)."""
    artifact_fraction: float = 0.5
    """Expected fraction of each batch drawn from the artifact images (balanced sampling with replacement: there are
    usually far fewer renders than captured images)."""
    artifact_scenes: int = 16
    """Scenes generated from the bundle whose renders are the artifact images."""
    artifact_views: int = 8
    """Views rendered per generated scene, from the SDS camera distribution (`nfldm_sdk.guidance.sds.sample_sds_cameras`)."""
    generate_steps: int = 25
    """Sampler steps per level when generating those scenes."""
    frame_stride: int = 1
    """Use every k-th captured frame (consecutive frames are nearly identical)."""
    val_fraction: float = 0.05
    """Fraction of each class's images held out for the validation loss (every k-th image)."""
    val_interval: int = 500
    """Optimisation steps between validations."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (0 disables)."""
    num_workers: int = 0
    """DataLoader worker processes."""
    precision: str = "32-true"
    """Lightning precision."""
    seed: int = 0
    """Seed of weights, data order, noise, timesteps, condition dropout and the generated artifact scenes."""
    log_every: int = 10
    """Steps between training-loss log rows."""

    def __post_init__(self):
        if not (0.0 <= self.cond_dropout < 1.0):
            raise ValueError(f"cond_dropout must be in [0, 1), got {self.cond_dropout}")
        if not (0.0 <= self.artifact_fraction <= 1.0):
            raise ValueError(f"artifact_fraction must be in [0, 1], got {self.artifact_fraction}")


@dataclass
class PriorPreset:
    """Stage 4: the prior network and its training."""

    prior: PriorConfig = field(default_factory=PriorConfig)
    """The U-Net (image size, channels, noise schedule: v-prediction)."""
    train: PriorTrainConfig = field(default_factory=PriorTrainConfig)
    """Its training."""


def get_prior_preset(name: str) -> PriorPreset:
    """A copy of ``PRIOR_PRESETS[name]`` (KeyError listing the names for an unknown one)."""
    from nfldm_training.configs.presets import PRESETS

    if name not in PRESETS:
        raise KeyError(f"unknown prior preset {name!r}: choose one of {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name].prior)


def save_prior_preset(preset: PriorPreset, path: str | Path, name: str = "custom") -> Path:
    """Write the resolved preset as JSON (``{"preset": name, "prior": ..., "train": ..., "_nfldm_version"}``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"preset": name, **config_to_dict(preset), "_nfldm_version": nfldm_version()}, indent=2) + "\n")
    return path


def load_prior_preset(path: str | Path) -> tuple[str, PriorPreset]:
    """Read a preset written by `save_prior_preset`: ``(name, preset)``."""
    data = json.loads(Path(path).read_text())
    name = str(data.pop("preset", "custom"))
    return name, config_from_dict(PriorPreset, data)


def __getattr__(name):
    # `PRIOR_PRESETS` is a read-only view of the one preset table (nfldm_training.configs.presets.PRESETS), built on first
    # use: this module defines the section's dataclasses, which the table module imports.
    if name == "PRIOR_PRESETS":
        from nfldm_training.configs.presets import PRESETS

        return {n: p.prior for n, p in PRESETS.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
