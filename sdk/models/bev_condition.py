"""Bird's-eye-map conditioning of the stage-3 denoisers (docs/method.md, stage 3: the condition enters each ψ by
cross-attention).

* `BEVEncoder` — ``tags [B, Y, X]`` uint8 CARLA tags -> tokens ``[B, T, D]``: a one-hot of the class set
  (`DEFAULT_CLASSES`, tags grouped; `UNOBSERVED` is one more channel), strided 3×3 convolutions down to a
  ``token_grid × token_grid`` (or coarser) grid, a learned position embedding; ``T = Ty · Tx`` tokens. Samples whose
  condition is dropped (``drop [B]`` True, or ``tags=None`` for the whole batch) get the learned **null tokens**
  instead, so one network serves both the conditional and the unconditional model (classifier-free guidance,
  `nfldm_sdk.pipelines.sampling.sample_level`).
* `bev_class_fractions` — the same one-hot, area-pooled to a latent's ``(H, W)``: ``[B, K+1, H, W]`` class fractions
  that ψ_c / ψ_f with ``bev_spatial`` concatenate to their input (zeros for a dropped condition). Cross-attention
  alone cannot place the map: a convolutional query does not know where it is, so it can read *what* the map holds
  but not *where* (measured: conditional layout mIoU at the unconditional level); the aligned channels give it where.
* `BEVCrossAttention` — ``h [B, C, H, W]`` attends to the tokens (diffusers ``Attention`` with
  ``cross_attention_dim``; group norm in, residual out): what `ConditionalUNet2D` inserts after the residual blocks
  of the attended levels and in its middle.
* `check_bev_tags` — the input check every denoiser applies (shape, dtype).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
from diffusers.models.attention_processor import Attention
from torch import nn

from nfldm_sdk.labels.classes import DEFAULT_CLASSES, UNOBSERVED

__all__ = ["BEVEncoder", "BEVCrossAttention", "check_bev_tags", "bev_class_lut", "bev_class_fractions",
           "BEV_CHANNELS"]


def bev_class_lut() -> torch.Tensor:
    """``[256]`` int64: CARLA tag -> one-hot channel of `BEVEncoder` (the `DEFAULT_CLASSES` index; `UNOBSERVED` and
    tags of no class -> ``K``, the last channel)."""
    lut = np.asarray(DEFAULT_CLASSES.tag_to_class, dtype=np.int64).copy()
    K = DEFAULT_CLASSES.num_classes
    lut[lut < 0] = K
    lut[UNOBSERVED] = K
    return torch.from_numpy(lut)


#: Channels of `bev_class_fractions` (and of `BEVEncoder`'s one-hot): the classes plus "unobserved".
BEV_CHANNELS: int = DEFAULT_CLASSES.num_classes + 1


@functools.lru_cache(maxsize=None)
def _lut_on(device: str) -> torch.Tensor:
    """`bev_class_lut` on `device`, built once (every denoiser call of a conditional sampling reads it)."""
    return bev_class_lut().to(device)


def bev_class_fractions(tags: torch.Tensor | None, drop: torch.Tensor | None, batch: int, size: tuple[int, int],
                        dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """``tags [B, Y, X]`` uint8 CARLA tags -> ``[B, BEV_CHANNELS, H, W]`` class fractions at ``size = (H, W)``.

    The one-hot of `bev_class_lut` area-pooled (``Y, X`` multiples of ``H, W``) or, for a finer ``size``, nearest
    upsampled; each cell's fractions sum to 1. ``tags=None`` (the whole batch unconditional) or ``drop [B]`` True
    give zeros there, a value no map produces. Raises ``ValueError`` when ``(Y, X)`` and ``(H, W)`` are not
    multiples of one another.
    """
    H, W = int(size[0]), int(size[1])
    if tags is None:
        return torch.zeros(batch, BEV_CHANNELS, H, W, dtype=dtype, device=device)
    Y, X = tags.shape[-2:]
    lut = _lut_on(str(tags.device))
    onehot = nn.functional.one_hot(lut[tags.long()], BEV_CHANNELS).permute(0, 3, 1, 2).to(dtype)   # [B, K+1, Y, X]
    if (Y, X) == (H, W):
        frac = onehot
    elif Y % H == 0 and X % W == 0:
        frac = nn.functional.avg_pool2d(onehot, (Y // H, X // W))
    elif H % Y == 0 and W % X == 0:
        frac = nn.functional.interpolate(onehot, size=(H, W), mode="nearest")
    else:
        raise ValueError(f"a BEV map of {Y}x{X} cells cannot be pooled to a {H}x{W} latent: one must be a multiple "
                         "of the other")
    frac = frac.to(device)
    if drop is not None:
        frac = frac * (~drop.to(device)).to(dtype).reshape(-1, 1, 1, 1)
    return frac


def check_bev_tags(tags: torch.Tensor, grid_yx: tuple[int, int], batch: int) -> None:
    """Raise ``ValueError`` unless `tags` is ``[batch, Y, X]`` uint8 with ``(Y, X) = grid_yx``."""
    if tags.dtype != torch.uint8 or tags.dim() != 3 or tuple(tags.shape[1:]) != tuple(grid_yx) or tags.shape[0] != batch:
        raise ValueError(f"the BEV condition must be [B={batch}, {grid_yx[0]}, {grid_yx[1]}] uint8 CARLA tags (the voxel "
                         f"grid's Y×X), got {tuple(tags.shape)} {tags.dtype}")


class BEVEncoder(nn.Module):
    """``(tags [B, Y, X] uint8 | None, drop [B] bool | None) -> tokens [B, T, D]`` (module docstring).

    Args:
        grid_yx: ``(Y, X)`` of the maps (the voxel grid's).
        token_dim: D.
        token_grid: the token grid's longer side is at most this (stride-2 convolutions until it is).
    """

    def __init__(self, grid_yx: tuple[int, int], token_dim: int, token_grid: int = 16):
        super().__init__()
        self.grid_yx = (int(grid_yx[0]), int(grid_yx[1]))
        n_in = DEFAULT_CLASSES.num_classes + 1
        self.register_buffer("lut", bev_class_lut(), persistent=False)
        downs = max(0, math.ceil(math.log2(max(self.grid_yx) / max(1, int(token_grid)))))
        layers: list[nn.Module] = [nn.Conv2d(n_in, token_dim, 3, padding=1)]
        ty, tx = self.grid_yx
        for _ in range(downs):
            layers += [nn.SiLU(), nn.Conv2d(token_dim, token_dim, 3, stride=2, padding=1)]
            ty, tx = (ty + 1) // 2, (tx + 1) // 2
        layers += [nn.SiLU(), nn.Conv2d(token_dim, token_dim, 1)]
        self.net = nn.Sequential(*layers)
        self.token_yx = (ty, tx)
        self.pos = nn.Parameter(torch.randn(1, ty * tx, token_dim) * 0.02)
        self.null = nn.Parameter(torch.randn(1, ty * tx, token_dim) * 0.02)

    @property
    def num_tokens(self) -> int:
        """T = Ty · Tx."""
        return self.token_yx[0] * self.token_yx[1]

    def forward(self, tags: torch.Tensor | None, drop: torch.Tensor | None, batch: int,
                dtype: torch.dtype) -> torch.Tensor:
        """Tokens ``[batch, T, D]``: the map's, or the null tokens where ``drop`` is True (all of them for ``tags=None``)."""
        null = self.null.to(dtype).expand(batch, -1, -1)
        if tags is None:
            return null
        check_bev_tags(tags, self.grid_yx, batch)
        onehot = nn.functional.one_hot(self.lut[tags.long()], DEFAULT_CLASSES.num_classes + 1)   # [B, Y, X, K+1]
        x = self.net(onehot.permute(0, 3, 1, 2).to(dtype))                                       # [B, D, Ty, Tx]
        tokens = x.flatten(2).transpose(1, 2) + self.pos.to(dtype)                                # [B, T, D]
        if drop is None:
            return tokens
        return torch.where(drop.reshape(-1, 1, 1).to(tokens.device), null, tokens)


class BEVCrossAttention(nn.Module):
    """``(h [B, C, H, W], tokens [B, T, D]) -> [B, C, H, W]``: ``h + Attn(GN(h), tokens)`` (diffusers ``Attention``)."""

    def __init__(self, channels: int, token_dim: int, groups: int, head_dim: int):
        super().__init__()
        dim_head = min(channels, head_dim)
        self.attn = Attention(channels, cross_attention_dim=token_dim, heads=max(1, channels // dim_head),
                              dim_head=dim_head, norm_num_groups=groups, residual_connection=True, bias=True,
                              eps=1e-6, upcast_softmax=True)

    def forward(self, h: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.attn(h, encoder_hidden_states=tokens)
