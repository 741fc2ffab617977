"""Stage-2 presets: the latent auto-encoder's sizes and training settings, by name (tiny / small / paper).

Kept apart from ``nfldm_training.presets`` only until the lead merges them into the one preset table: each
`LatentPreset` has exactly the two sections (``latent_ae``, ``latent_ae_train``) that ``Preset`` will gain, so the
merge is adding two fields to ``Preset`` and these values to ``PRESETS``.

The grid, feature channels and box of each ``latent_ae`` config equal those of the stage-1 preset of the same
name (``PRESETS[name].scene_ae``); at training time they are taken from the actual stage-1 model
(`LatentAEConfig.for_scene_ae`), so a custom stage-1 grid works with any preset's widths.

Latent sizes per preset (grid ``(Z, Y, X)`` -> g, c ``[4, Zc, Yc, Xc]``, f ``[4, Y, X]``):

* ``tiny``  — (8, 32, 32), C 8 -> g 16, c [4, 4, 8, 8], f [4, 32, 32]; codebooks 64.
* ``small`` — (16, 64, 64), C 16 -> g 64, c [4, 8, 16, 16], f [4, 64, 64]; codebooks 256.
* ``paper`` — (32, 128, 128), C 32 -> g 128, c [4, 16, 32, 32], f [4, 128, 128] (method.md); codebooks 1024
  (the paper does not give codebook sizes: 1024 four-dimensional codes is our choice).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from nfldm_sdk.models.latent_ae import LatentAEConfig
from nfldm_sdk.persistence import config_from_dict, config_to_dict, nfldm_version
from nfldm_training.presets import PRESETS, apply_overrides


@dataclass
class LatentAETrainConfig:
    """Stage-2 training settings (`nfldm_training.latent_ae_module`, `nfldm_training.latent_data`).

    Scene windows (frames, cameras, image size) are those the voxel store was encoded from (its root attrs); the
    KL weight and commitment β live in the model config (``latent_ae.kl_weight``, ``latent_ae.commitment_beta``).
    """

    batch_size: int = 2
    """Scenes per optimisation step (per device)."""
    lr: float = 1e-3
    """AdamW learning rate (constant after a linear warm-up)."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up steps."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    max_steps: int = 1000
    """Optimisation steps."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (0 disables)."""
    voxel_loss: str = "l1"
    """Voxel reconstruction ‖V − V̂‖: ``"l1"`` (mean absolute error) or ``"l2"`` (mean squared error)."""
    density_weight: float = 1.0
    """Weight of the density part of the voxel loss (σ in 1/m)."""
    feature_weight: float = 1.0
    """Weight of the feature part of the voxel loss."""
    image_loss: str = "l1"
    """Image reconstruction ‖i − r(V̂, κ)‖ through the frozen stage-1 decoder: ``"l1"`` or ``"l2"``."""
    image_weight: float = 1.0
    """Weight of the image loss (0 trains on voxels only; the renders are then skipped in training)."""
    render_views: int | None = None
    """Views per window rendered for the image loss, drawn at random each step with a seeded generator
    (None = all views of the window). Validation renders every view."""
    sample_g: bool = True
    """Sample g with the reparameterisation trick in training (False: use the posterior mean)."""
    val_fraction: float = 0.2
    """Fraction of each capture store's episodes held out for validation (the stage-1 split rule,
    `nfldm_training.data.SceneWindowDataset`)."""
    val_interval: int = 100
    """Optimisation steps between validations."""
    val_batches: int | None = None
    """Validation batches per validation (None = the whole validation split)."""
    num_workers: int = 0
    """DataLoader worker processes."""
    precision: str = "32-true"
    """Lightning precision (``"32-true"``, ``"bf16-mixed"``, ...)."""
    seed: int = 0
    """Seed of weights, data order, g's noise and the rendered-view draw."""
    log_every: int = 10
    """Steps between training-loss log rows."""


@dataclass
class LatentPreset:
    """A named stage-2 configuration: model and training sections (the sections ``Preset`` will gain)."""

    name: str = "custom"
    """Preset name (``tiny``, ``small``, ``paper``) or ``custom``."""
    description: str = ""
    """One line: what the preset is for."""
    latent_ae: LatentAEConfig = field(default_factory=LatentAEConfig)
    """Stage 2 model: the latent voxel auto-encoder."""
    latent_ae_train: LatentAETrainConfig = field(default_factory=LatentAETrainConfig)
    """Stage 2 training."""


def _grid_of(name: str) -> dict:
    """Grid, channels and box of the stage-1 preset `name`."""
    return dict(grid_shape=PRESETS[name].scene_ae.grid_shape, feature_channels=PRESETS[name].scene_ae.feature_channels,
                bounds=PRESETS[name].scene_ae.bounds)


LATENT_PRESETS: dict[str, LatentPreset] = {
    "tiny": LatentPreset(
        name="tiny",
        description="CI on CPU: seconds (grid 8x32x32 -> g 16, c 4x4x8x8, f 4x32x32)",
        latent_ae=LatentAEConfig(**_grid_of("tiny"), g_dim=16, coarse_downsample_xy=4, coarse_downsample_z=2,
                                 coarse_codebook_size=64, fine_codebook_size=64, dead_code_steps=20, kl_weight=1e-5,
                                 g_encoder_widths=(16, 32, 32), c_encoder_widths=(16, 32, 32), f_encoder_width=16,
                                 f_encoder_blocks=1, decoder_widths=(32, 32, 16), blocks_per_stage=1),
        latent_ae_train=LatentAETrainConfig(batch_size=2, lr=2e-3, max_steps=60, val_interval=30, render_views=4,
                                            log_every=5),
    ),
    "small": LatentPreset(
        name="small",
        description="default model, minutes on one GPU (grid 16x64x64 -> g 64, c 4x8x16x16, f 4x64x64)",
        latent_ae=LatentAEConfig(**_grid_of("small"), g_dim=64, coarse_downsample_xy=4, coarse_downsample_z=2,
                                 coarse_codebook_size=256, fine_codebook_size=256, dead_code_steps=100, kl_weight=1e-5,
                                 g_encoder_widths=(64, 128, 128, 256), c_encoder_widths=(64, 128, 128),
                                 f_encoder_width=64, f_encoder_blocks=2, decoder_widths=(128, 128, 64),
                                 blocks_per_stage=2),
        latent_ae_train=LatentAETrainConfig(batch_size=4, lr=5e-4, warmup_steps=200, max_steps=6000, val_interval=500,
                                            val_batches=20, render_views=6, num_workers=4, precision="bf16-mixed"),
    ),
    "paper": LatentPreset(
        name="paper",
        description="method.md's sizes: grid 32x128x128 -> g 128, c 4x16x32x32, f 4x128x128",
        latent_ae=LatentAEConfig(**_grid_of("paper"), g_dim=128, coarse_channels=4, coarse_downsample_xy=4,
                                 coarse_downsample_z=2, fine_channels=4, coarse_codebook_size=1024,
                                 fine_codebook_size=1024, dead_code_steps=200, kl_weight=1e-5,
                                 g_encoder_widths=(128, 256, 256, 512, 512), c_encoder_widths=(128, 256, 256),
                                 f_encoder_width=128, f_encoder_blocks=2, decoder_widths=(256, 256, 128),
                                 blocks_per_stage=2),
        latent_ae_train=LatentAETrainConfig(batch_size=2, lr=2e-4, warmup_steps=1000, max_steps=100_000,
                                            val_interval=2000, val_batches=50, render_views=4, num_workers=8,
                                            precision="bf16-mixed"),
    ),
}


def get_latent_preset(name: str, overrides: Mapping[str, Any] | None = None) -> LatentPreset:
    """A copy of `LATENT_PRESETS[name]` with dotted `overrides` (``{"latent_ae_train.max_steps": 10}``) applied.

    Raises ``KeyError`` listing the presets for an unknown name, or naming the section's fields for an unknown key.
    """
    if name not in LATENT_PRESETS:
        raise KeyError(f"unknown preset {name!r}: choose one of {', '.join(LATENT_PRESETS)}")
    return apply_overrides(copy.deepcopy(LATENT_PRESETS[name]), overrides)


def save_latent_preset(preset: LatentPreset, path: str | Path) -> Path:
    """Write the resolved preset as JSON to `path` (parents created), with the writing nfldm version."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**config_to_dict(preset), "_nfldm_version": nfldm_version()}, indent=2) + "\n")
    return path


def load_latent_preset(path: str | Path) -> LatentPreset:
    """Read a preset written by `save_latent_preset`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected the resolved preset JSON of a latent-ae run")
    return config_from_dict(LatentPreset, json.loads(path.read_text()))
