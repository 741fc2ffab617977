"""Small 2D CNN building blocks shared by the networks: the image encoder and decoder of the scene auto-encoder, and the vector-conditioned
blocks of the latent auto-encoder (`CondGroupNorm`, `CondResBlock`).

All blocks take and return ``[N, C, H, W]`` float tensors. GroupNorm (not BatchNorm) so that results do not
depend on the batch composition: a view's encoding is the same whatever else is in the batch, which the
voxel-encoding tool and the tests rely on.
"""
from __future__ import annotations

import torch
from torch import nn


def group_norm(channels: int, max_groups: int = 8) -> nn.GroupNorm:
    """GroupNorm with the largest group count ≤ `max_groups` that divides `channels`."""
    groups = max(g for g in range(1, max_groups + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class ResBlock(nn.Module):
    """Pre-activation residual block: ``x + conv(silu(gn(conv(silu(gn(x))))))``, 1×1 skip when channels change.

    ``[N, c_in, H, W] -> [N, c_out, H, W]``.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1 = group_norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = group_norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = self.conv2(self.act(self.norm2(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Halve the resolution with a stride-2 3×3 convolution: ``[N, c_in, H, W] -> [N, c_out, H/2, W/2]``."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution (nearest, then 3×3 conv; avoids transposed-conv checkerboards).

    ``[N, c_in, H, W] -> [N, c_out, 2H, 2W]``.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


def upsampling_layers(c_in: int, widths: tuple[int, ...], blocks_per_stage: int, c_out: int) -> list[nn.Module]:
    """The layers of a 2D upsampling decoder ``[N, c_in, h, w] -> [N, c_out, h·2^(S−1), w·2^(S−1)]`` (S =
    ``len(widths)`` stages): a 3×3 stem to ``widths[0]``, then per stage a 2× `Upsample` (from the second on) and
    `blocks_per_stage` `ResBlock`s, then GroupNorm, SiLU and a 3×3 convolution to `c_out` (no output activation)."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, widths[0], 3, padding=1)]
    for i, w in enumerate(widths):
        if i > 0:
            layers.append(Upsample(widths[i - 1], w))
        layers.extend(ResBlock(w, w) for _ in range(blocks_per_stage))
    return layers + [group_norm(widths[-1]), nn.SiLU(), nn.Conv2d(widths[-1], c_out, 3, padding=1)]


class CondGroupNorm(nn.Module):
    """Group normalisation whose per-channel scale and shift are predicted from a condition vector.

    ``y = GN(x) · (1 + scale(cond)) + shift(cond)`` with ``[scale, shift] = Linear(cond)``; the linear layer starts
    at zero, so an untrained block is a plain (affine-free) GroupNorm.

    Shapes: ``x [B, C, H, W]``, ``cond [B, cond_dim]`` -> ``[B, C, H, W]``.
    """

    def __init__(self, channels: int, cond_dim: int, max_groups: int = 8):
        super().__init__()
        gn = group_norm(channels, max_groups)
        self.norm = nn.GroupNorm(gn.num_groups, channels, affine=False)
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.proj(cond)[:, :, None, None].chunk(2, dim=1)       # [B, C, 1, 1] each
        return self.norm(x) * (1.0 + scale) + shift


class CondResBlock(nn.Module):
    """`ResBlock` with both normalisations conditioned on a vector (`CondGroupNorm`).

    ``x [B, c_in, H, W]``, ``cond [B, cond_dim]`` -> ``[B, c_out, H, W]``.
    """

    def __init__(self, c_in: int, c_out: int, cond_dim: int):
        super().__init__()
        self.norm1 = CondGroupNorm(c_in, cond_dim)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = CondGroupNorm(c_out, cond_dim)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x, cond)))
        h = self.conv2(self.act(self.norm2(h, cond)))
        return self.skip(x) + h
