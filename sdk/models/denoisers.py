"""The three denoisers of the hierarchical latent diffusion (docs/method.md, stage 3).

``p(V, g, c, f) = p(V | g, c, f) · p(f | g, c) · p(c | g) · p(g)``; each factor but the first is a diffusion model
whose network predicts ``v`` (v-prediction) from the noisy latent ``x_t``, the timestep ``t`` and the clean,
normalised upper levels:

* `GDenoiser` ψ_g(g_t, t) — ``g [B, G]``: an MLP of residual (skip-connected) blocks; the timestep embedding is
  added inside every block.
* `CDenoiser` ψ_c(c_t, g_0, t) — ``c [B, 4, Zc, Yc, Xc]``: a 2D U-Net over ``(Yc, Xc)`` with the vertical axis
  folded into channels (``[B, 4·Zc, Yc, Xc]``, index ``channel·Zc + z``), as all of NF-LDM's CNNs. g enters
  through **conditional group normalisation** in every residual block: each GroupNorm's scale and shift are
  linear functions of ``emb = SiLU(TimestepEmbedding(t) + MLP(g_0))`` (diffusers ``ResnetBlockCondNorm2D`` with
  ``AdaGroupNorm``: ``GN(h) · (1 + scale(emb)) + shift(emb)``, both norms of the block).
* `FDenoiser` ψ_f(f_t, g_0, c_0, t) — ``f [B, 4, Y, X]``: the same U-Net over ``(Y, X)``; c (Z folded into
  channels) is bilinearly **interpolated** to f's resolution and **concatenated** to the input, g enters through
  conditional GN as in ψ_c.

Every denoiser is called as ``denoiser(x_t, t, *cond)`` (`nfldm_sdk.pipelines.sampling.sample_level`'s contract), returns a
tensor shaped like ``x_t``, and is a config dataclass + ``save_pretrained`` / ``from_pretrained``
(`nfldm_sdk.persistence`). The U-Net is ours, from diffusers building blocks (``ResnetBlockCondNorm2D``,
``Downsample2D``, ``Upsample2D``, ``Attention``, ``Timesteps``, ``TimestepEmbedding``), because diffusers'
``UNet2DModel`` only offers conditioning through the second norm of each block (``scale_shift``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from diffusers.models.downsampling import Downsample2D
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import ResnetBlockCondNorm2D
from diffusers.models.upsampling import Upsample2D
from torch import nn

from nfldm_sdk.models.layout import fold_z, unfold_z
from nfldm_sdk.persistence import PretrainedMixin

__all__ = ["GDenoiserConfig", "GDenoiser", "UNetDenoiserConfig", "CDenoiserConfig", "CDenoiser", "FDenoiserConfig",
           "FDenoiser", "DENOISER_CLASSES", "ConditionalUNet2D"]


# ============================================================================================ conditioning
class TimeEmbedding(nn.Module):
    """``t [B]`` (int or float timesteps) -> ``[B, embed_dim]``: sinusoidal features + a 2-layer MLP (diffusers)."""

    def __init__(self, time_channels: int, embed_dim: int):
        super().__init__()
        self.proj = Timesteps(time_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.mlp = TimestepEmbedding(time_channels, embed_dim)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.mlp(self.proj(t.reshape(-1)).to(dtype))


class CondEmbedding(nn.Module):
    """``(t [B], g [B, G]) -> emb [B, embed_dim] = SiLU(TimeEmbedding(t) + MLP(g))``: what conditional GN reads."""

    def __init__(self, time_channels: int, g_dim: int, embed_dim: int):
        super().__init__()
        self.time = TimeEmbedding(time_channels, embed_dim)
        self.g = nn.Sequential(nn.Linear(g_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, t: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return F.silu(self.time(t, g.dtype) + self.g(g))


# ============================================================================================ ψ_g
@dataclass
class GDenoiserConfig:
    """ψ_g(g_t, t): MLP with residual blocks over the global latent."""

    g_dim: int = 16
    """G, the size of the global latent g (from the LAE)."""
    width: int = 128
    """Hidden width of the residual blocks."""
    num_blocks: int = 3
    """Residual blocks (each: LayerNorm, Linear, + time embedding, SiLU, Linear, skip)."""
    time_channels: int = 64
    """Sinusoidal timestep features fed to the time MLP."""
    dropout: float = 0.0
    """Dropout inside the residual blocks (training only)."""

    def __post_init__(self):
        if min(self.g_dim, self.width, self.num_blocks, self.time_channels) < 1:
            raise ValueError(f"GDenoiserConfig sizes must be positive, got {self}")


class _ResidualMLPBlock(nn.Module):
    """``h + Linear(Dropout(SiLU(Linear(SiLU(LN(h))) + emb_proj(emb))))``, ``[B, W] -> [B, W]``."""

    def __init__(self, width: int, embed_dim: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.emb = nn.Linear(embed_dim, width)
        self.fc2 = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.fc1(F.silu(self.norm(h))) + self.emb(emb)
        return h + self.fc2(self.drop(F.silu(x)))


class GDenoiser(nn.Module, PretrainedMixin):
    """ψ_g(g_t, t) -> v ``[B, G]`` (see the module docstring)."""

    config_class = GDenoiserConfig
    level: ClassVar[str] = "g"
    cond_levels: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: GDenoiserConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.time = TimeEmbedding(config.time_channels, w)
        self.inp = nn.Linear(config.g_dim, w)
        self.blocks = nn.ModuleList(_ResidualMLPBlock(w, w, config.dropout) for _ in range(config.num_blocks))
        self.out = nn.Sequential(nn.LayerNorm(w), nn.SiLU(), nn.Linear(w, config.g_dim))

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one sample without the batch: ``(G,)``."""
        return (self.config.g_dim,)

    def forward(self, g_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``g_t [B, G]``, ``t [B]`` -> ``v [B, G]``."""
        emb = F.silu(self.time(t.expand(g_t.shape[0]), g_t.dtype))                 # [B, W]
        h = self.inp(g_t)                                                            # [B, W]
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)


# ============================================================================================ the U-Net
class ConditionalUNet2D(nn.Module):
    """A 2D U-Net whose every GroupNorm is conditional on an embedding: ``(x [B, in, H, W], emb [B, E]) -> [B, out, H, W]``.

    Levels ``i = 0 … L-1`` at resolution ``H / 2^i`` with ``widths[i]`` channels and ``blocks`` residual blocks
    (diffusers ``ResnetBlockCondNorm2D``, ``AdaGroupNorm`` on both norms); a skip connection per level
    (concatenated on the way up); the middle: residual block, optional self-attention, residual block.
    ``H`` and ``W`` must be divisible by ``2^(L-1)``.
    """

    def __init__(self, in_channels: int, out_channels: int, widths: tuple[int, ...], blocks: int, embed_dim: int,
                 groups: int, mid_attention: bool, attention_head_dim: int, dropout: float):
        super().__init__()

        def res(c_in: int, c_out: int) -> ResnetBlockCondNorm2D:
            return ResnetBlockCondNorm2D(in_channels=c_in, out_channels=c_out, temb_channels=embed_dim, groups=groups,
                                         dropout=dropout, time_embedding_norm="ada_group", eps=1e-6)

        L = len(widths)
        self.conv_in = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.down_blocks, self.downsamplers = nn.ModuleList(), nn.ModuleList()
        ch = widths[0]
        for i, w in enumerate(widths):
            self.down_blocks.append(nn.ModuleList(res(ch if b == 0 else w, w) for b in range(blocks)))
            ch = w
            self.downsamplers.append(Downsample2D(w, use_conv=True, out_channels=w) if i < L - 1 else nn.Identity())
        self.mid1 = res(ch, ch)
        self.mid_attn = (Attention(ch, heads=max(1, ch // attention_head_dim), dim_head=min(ch, attention_head_dim),
                                   eps=1e-6, norm_num_groups=groups, residual_connection=True, bias=True,
                                   upcast_softmax=True, _from_deprecated_attn_block=True)
                         if mid_attention else None)
        self.mid2 = res(ch, ch)
        self.up_blocks, self.upsamplers = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(L)):  # deepest first; the skip of level i has widths[i] channels
            w = widths[i]
            self.up_blocks.append(nn.ModuleList(res((ch + w) if b == 0 else w, w) for b in range(blocks)))
            self.upsamplers.append(Upsample2D(w, use_conv=True, out_channels=widths[i - 1]) if i > 0 else nn.Identity())
            ch = widths[i - 1] if i > 0 else w
        self.norm_out = nn.GroupNorm(groups, widths[0], eps=1e-6)
        self.conv_out = nn.Conv2d(widths[0], out_channels, 3, padding=1)
        self.levels = L

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        f = 2 ** (self.levels - 1)
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"U-Net input {tuple(x.shape[-2:])} must be divisible by 2^(levels-1) = {f}")
        h = self.conv_in(x)                                                          # [B, w0, H, W]
        skips = []
        for blocks, down in zip(self.down_blocks, self.downsamplers):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)                                                          # [B, w_i, H/2^i, W/2^i]
            h = down(h)
        h = self.mid1(h, emb)
        if self.mid_attn is not None:
            h = self.mid_attn(h)
        h = self.mid2(h, emb)
        for blocks, up in zip(self.up_blocks, self.upsamplers):
            h = torch.cat([h, skips.pop()], dim=1)                                   # [B, ch + w_i, ...]
            for block in blocks:
                h = block(h, emb)
            h = up(h)                                                                # [B, w_{i-1}, 2×]
        return self.conv_out(F.silu(self.norm_out(h)))


def _check_unet(name: str, widths: tuple[int, ...], groups: int, spatial: tuple[int, int], mid_attention: bool,
                attention_head_dim: int) -> None:
    if not widths or min(widths) < 1:
        raise ValueError(f"{name}: widths must be non-empty and positive, got {widths}")
    bad = [w for w in widths if w % groups]
    if bad:
        raise ValueError(f"{name}: every width must be divisible by norm_groups={groups}, {bad} are not")
    f = 2 ** (len(widths) - 1)
    if spatial[0] % f or spatial[1] % f:
        raise ValueError(f"{name}: the latent's spatial size {spatial} must be divisible by 2^(len(widths)-1) = {f}; "
                         "use fewer U-Net levels")
    if mid_attention and widths[-1] % min(widths[-1], attention_head_dim):
        raise ValueError(f"{name}: attention_head_dim {attention_head_dim} must divide widths[-1] = {widths[-1]}")


@dataclass
class UNetDenoiserConfig:
    """The fields ψ_c (`CDenoiserConfig`) and ψ_f (`FDenoiserConfig`) share: the latent's shape, the g that
    conditions it, and the `ConditionalUNet2D` over it."""

    latent_shape: tuple[int, ...] = ()
    """Shape of the modelled latent without the batch (each level's config gives its layout and default)."""
    g_dim: int = 16
    """G, the size of the global latent that conditions the level."""
    widths: tuple[int, ...] = (32, 64)
    """Channels of the U-Net's levels (level i at resolution / 2^i)."""
    blocks_per_level: int = 1
    """Residual blocks per level, on the way down and on the way up."""
    mid_attention: bool = False
    """Self-attention in the middle (lowest resolution) of the U-Net."""
    attention_head_dim: int = 32
    """Channels per attention head."""
    norm_groups: int = 8
    """Groups of every (conditional) GroupNorm; divides every width."""
    embed_dim: int = 128
    """Size of the conditioning embedding (timestep + g) that sets every GroupNorm's scale and shift."""
    time_channels: int = 64
    """Sinusoidal timestep features."""
    dropout: float = 0.0
    """Dropout inside the residual blocks (training only)."""


# ============================================================================================ ψ_c
@dataclass
class CDenoiserConfig(UNetDenoiserConfig):
    """ψ_c(c_t, g_0, t): U-Net over the coarse latent with Z folded into channels, g through conditional GN."""

    latent_shape: tuple[int, int, int, int] = (4, 4, 8, 8)
    """Shape of c without the batch, ``(C, Zc, Yc, Xc)`` (from the LAE; the paper's is (4, 16, 32, 32))."""

    def __post_init__(self):
        if len(self.latent_shape) != 4:
            raise ValueError(f"CDenoiserConfig.latent_shape must be (C, Zc, Yc, Xc), got {self.latent_shape}")
        _check_unet("CDenoiserConfig", self.widths, self.norm_groups, self.latent_shape[2:], self.mid_attention,
                    self.attention_head_dim)


class CDenoiser(nn.Module, PretrainedMixin):
    """ψ_c(c_t, g_0, t) -> v ``[B, C, Zc, Yc, Xc]`` (see the module docstring)."""

    config_class = CDenoiserConfig
    level: ClassVar[str] = "c"
    cond_levels: ClassVar[tuple[str, ...]] = ("g",)

    def __init__(self, config: CDenoiserConfig):
        super().__init__()
        self.config = config
        C, Z = config.latent_shape[:2]
        self.cond = CondEmbedding(config.time_channels, config.g_dim, config.embed_dim)
        self.unet = ConditionalUNet2D(C * Z, C * Z, config.widths, config.blocks_per_level, config.embed_dim,
                                      config.norm_groups, config.mid_attention, config.attention_head_dim, config.dropout)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """``(C, Zc, Yc, Xc)``."""
        return tuple(self.config.latent_shape)

    def forward(self, c_t: torch.Tensor, t: torch.Tensor, g0: torch.Tensor) -> torch.Tensor:
        """``c_t [B, C, Zc, Yc, Xc]``, ``t [B]``, ``g0 [B, G]`` (clean, normalised) -> ``v [B, C, Zc, Yc, Xc]``."""
        if tuple(c_t.shape[1:]) != self.latent_shape:
            raise ValueError(f"ψ_c expects c of shape [B, {', '.join(map(str, self.latent_shape))}], got {tuple(c_t.shape)}")
        emb = self.cond(t.expand(c_t.shape[0]), g0)                                  # [B, E]
        v = self.unet(fold_z(c_t), emb)                                              # [B, C·Zc, Yc, Xc]
        return unfold_z(v, self.config.latent_shape[0])


# ============================================================================================ ψ_f
@dataclass
class FDenoiserConfig(UNetDenoiserConfig):
    """ψ_f(f_t, g_0, c_0, t): U-Net over the fine BEV latent; c interpolated and concatenated, g through conditional GN."""

    latent_shape: tuple[int, int, int] = (4, 32, 32)
    """Shape of f without the batch, ``(C, Y, X)`` (from the LAE; the paper's is (4, 128, 128))."""
    c_shape: tuple[int, int, int, int] = (4, 4, 8, 8)
    """Shape of the conditioning coarse latent c, ``(C, Zc, Yc, Xc)``."""

    def __post_init__(self):
        if len(self.latent_shape) != 3 or len(self.c_shape) != 4:
            raise ValueError(f"FDenoiserConfig needs latent_shape (C, Y, X) and c_shape (C, Zc, Yc, Xc), got "
                             f"{self.latent_shape} and {self.c_shape}")
        _check_unet("FDenoiserConfig", self.widths, self.norm_groups, self.latent_shape[1:], self.mid_attention,
                    self.attention_head_dim)


class FDenoiser(nn.Module, PretrainedMixin):
    """ψ_f(f_t, g_0, c_0, t) -> v ``[B, C, Y, X]`` (see the module docstring)."""

    config_class = FDenoiserConfig
    level: ClassVar[str] = "f"
    cond_levels: ClassVar[tuple[str, ...]] = ("g", "c")

    def __init__(self, config: FDenoiserConfig):
        super().__init__()
        self.config = config
        C = config.latent_shape[0]
        Cc, Zc = config.c_shape[:2]
        self.cond = CondEmbedding(config.time_channels, config.g_dim, config.embed_dim)
        self.unet = ConditionalUNet2D(C + Cc * Zc, C, config.widths, config.blocks_per_level, config.embed_dim,
                                      config.norm_groups, config.mid_attention, config.attention_head_dim, config.dropout)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """``(C, Y, X)``."""
        return tuple(self.config.latent_shape)

    def forward(self, f_t: torch.Tensor, t: torch.Tensor, g0: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
        """``f_t [B, C, Y, X]``, ``t [B]``, ``g0 [B, G]``, ``c0 [B, Cc, Zc, Yc, Xc]`` (clean, normalised) -> ``v [B, C, Y, X]``."""
        if tuple(f_t.shape[1:]) != self.latent_shape or tuple(c0.shape[1:]) != tuple(self.config.c_shape):
            raise ValueError(f"ψ_f expects f [B, {', '.join(map(str, self.latent_shape))}] and c "
                             f"[B, {', '.join(map(str, self.config.c_shape))}], got {tuple(f_t.shape)} and {tuple(c0.shape)}")
        emb = self.cond(t.expand(f_t.shape[0]), g0)                                  # [B, E]
        c_up = F.interpolate(fold_z(c0), size=f_t.shape[-2:], mode="bilinear",       # [B, Cc·Zc, Y, X]
                             align_corners=False)
        return self.unet(torch.cat([f_t, c_up], dim=1), emb)                         # [B, C, Y, X]


#: Denoiser class of each level.
DENOISER_CLASSES: dict[str, type[nn.Module]] = {"g": GDenoiser, "c": CDenoiser, "f": FDenoiser}
