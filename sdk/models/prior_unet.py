"""The offline SDS guidance prior's network (docs/method.md, stage 4): a small class-conditional pixel-space
diffusion U-Net (`PriorUNet`) and its config (`PriorConfig`).

It is trained by ``nfldm train prior`` (`nfldm_training.modules.prior`) on captured images (class "dataset") and on
renders of generated scenes (class "artifact"), with condition dropout to the "null" class, and guides score
distillation through `nfldm_sdk.guidance.prior.PriorGuidance`. Saved as ``config.json`` + ``model.safetensors``
(`nfldm_sdk.persistence.PretrainedMixin`), it can ship as a model bundle's optional ``prior/`` part.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import UNet2DModel
from torch import nn

from nfldm_sdk.persistence import PretrainedMixin
from nfldm_sdk.models.noise_schedule import NoiseSchedule

__all__ = ["PriorConfig", "PriorUNet", "PRIOR_CLASSES"]

#: Class labels of `PriorUNet`.
PRIOR_CLASSES = {"null": 0, "dataset": 1, "artifact": 2}


@dataclass
class PriorConfig:
    """Configuration of `PriorUNet` (sizes by preset in ``nfldm_training.configs.presets``)."""

    image_size: tuple[int, int] = (32, 32)
    """``(H, W)`` the prior models; images are resized to it. Divisible by ``2^(len(block_out_channels)−1)``."""
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    """Channels of the U-Net's resolution levels (diffusers ``UNet2DModel``)."""
    down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D")
    """diffusers down blocks, one per level (``"AttnDownBlock2D"`` adds self-attention)."""
    up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    """diffusers up blocks, one per level, mirroring `down_block_types`."""
    layers_per_block: int = 1
    """ResNet layers per block."""
    attention_head_dim: int = 16
    """Channels per attention head."""
    norm_num_groups: int = 8
    """GroupNorm groups (divides every entry of `block_out_channels`)."""
    schedule: NoiseSchedule = field(default_factory=NoiseSchedule)
    """The forward process the prior is trained with (default: T = 1000, cosine, **v-prediction**, like stage 3;
    `nfldm_sdk.guidance.prior.PriorGuidance` converts its v to ε)."""

    def __post_init__(self):
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(f"need one down and one up block type per entry of block_out_channels ({n}), got "
                             f"{len(self.down_block_types)} and {len(self.up_block_types)}")
        f = 2 ** (n - 1)
        if self.image_size[0] % f or self.image_size[1] % f:
            raise ValueError(f"image_size {self.image_size} must be divisible by {f} (2^(levels-1))")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"norm_num_groups {self.norm_num_groups} must divide every entry of block_out_channels "
                             f"{self.block_out_channels}")


class PriorUNet(nn.Module, PretrainedMixin):
    """Class-conditional pixel-space diffusion U-Net: ``(x_t [B,3,H,W] in [-1,1] units, t [B], class [B]) ->``
    prediction ``[B,3,H,W]`` of the config's ``schedule.prediction_type``.

    Classes (`PRIOR_CLASSES`): 0 = null (condition dropout), 1 = dataset (captured images), 2 = artifact (renders of
    generated scenes). A thin wrapper around diffusers' ``UNet2DModel`` (class embedding added to the time
    embedding, ``num_class_embeds = 3``) so that it saves as ``config.json`` + ``model.safetensors`` like every
    nfldm network and can be a bundle part.
    """

    config_class = PriorConfig

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = config
        self.unet = UNet2DModel(
            sample_size=tuple(config.image_size), in_channels=3, out_channels=3,
            block_out_channels=tuple(config.block_out_channels), down_block_types=tuple(config.down_block_types),
            up_block_types=tuple(config.up_block_types), layers_per_block=config.layers_per_block,
            attention_head_dim=config.attention_head_dim, norm_num_groups=config.norm_num_groups,
            num_class_embeds=len(PRIOR_CLASSES))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        """``x_t [B, 3, H, W]``, ``t [B]`` int64 timesteps, ``class_labels [B]`` (`PRIOR_CLASSES`) -> ``[B, 3, H, W]``."""
        return self.unet(x_t, t, class_labels=class_labels.long()).sample
