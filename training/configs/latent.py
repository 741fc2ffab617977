"""Stage-2 presets: the latent auto-encoder's sizes and training settings, by name (tiny / small / paper).

The values live in the one preset table (``nfldm_training.configs.presets.PRESETS``, sections ``latent_ae`` and
``latent_ae_train``); this module defines the training section's dataclass, and `LATENT_PRESETS` /
`get_latent_preset` give a stage-2 view of the table.

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

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from nfldm_sdk.models.latent_ae import LatentAEConfig
from nfldm_sdk.persistence import config_from_dict, config_to_dict, nfldm_version
from nfldm_training.errors import TrainingInputNotFound


@dataclass
class LatentAETrainConfig:
    """Stage-2 training settings (`nfldm_training.modules.latent_ae`, `nfldm_training.data.latent_scenes`).

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
    """Voxel reconstruction ‖V − V̂‖ of the features (and of the density when `density_loss` is None): ``"l1"``
    (mean absolute error) or ``"l2"`` (mean squared error)."""
    density_loss: str | None = "l2"
    """``"l1"`` or ``"l2"`` for the density part of the voxel loss (None: `voxel_loss`). L2 of ``log(σ + ε)``: the
    rare surface voxels are off by several units of log density while the LAE has not found them, and the square
    makes them count (overfitting two scenes: 75 % of their mean σ recovered in 600 steps, L1 0 %)."""
    density_weight: float = 1.0
    """Weight of the density part of the voxel loss (σ in 1/m)."""
    density_log_eps: float = 1e-3
    """ε (1/m): the voxel loss compares densities as ``log(σ + ε)``; 0 compares σ itself. Why log space (a loss on σ
    left the LAE decoding fog): `nfldm_training.modules.latent_ae`."""
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
    `nfldm_training.data.capture_windows.SceneWindowDataset`)."""
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


def get_latent_preset(name: str, overrides: Mapping[str, Any] | None = None) -> LatentPreset:
    """A copy of `LATENT_PRESETS[name]` with dotted `overrides` (``{"latent_ae_train.max_steps": 10}``) applied.

    Raises ``KeyError`` listing the presets for an unknown name, or naming the section's fields for an unknown key.
    """
    from nfldm_training.configs.presets import PRESETS, apply_overrides

    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    p = PRESETS[name]
    section = LatentPreset(name=p.name, description=p.description, latent_ae=p.latent_ae, latent_ae_train=p.latent_ae_train)
    return apply_overrides(copy.deepcopy(section), overrides)


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
        raise TrainingInputNotFound(f"{path} not found: expected the resolved preset JSON of a latent-ae run")
    return config_from_dict(LatentPreset, json.loads(path.read_text()))


def __getattr__(name):
    # `LATENT_PRESETS` is a read-only view of the one preset table (nfldm_training.configs.presets.PRESETS), built on first
    # use: this module defines the section's dataclasses, which the table module imports.
    if name == "LATENT_PRESETS":
        from nfldm_training.configs.presets import PRESETS

        return {n: LatentPreset(name=p.name, description=p.description, latent_ae=p.latent_ae,
                             latent_ae_train=p.latent_ae_train) for n, p in PRESETS.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
