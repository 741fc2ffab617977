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

**BEV-map conditioning** (``bev_condition=True``; off by default, and then a denoiser has exactly the parameters
and outputs it had without it): each denoiser also reads ``bev [B, Y, X]`` uint8 CARLA tags through its own
`nfldm_sdk.models.bev_condition.BEVEncoder` (tokens ``[B, T, D]``). ψ_c and ψ_f attend to the tokens by
cross-attention after the residual blocks of the levels ``bev_attention_levels`` (default: every level but the
first, the full resolution) on the way down and up, and in the middle; ψ_g adds a projection of the tokens' mean
to its time embedding. ``bev_drop [B]`` True (or ``bev=None``) gives a sample the learned null tokens instead: the
unconditional model of classifier-free guidance. The call is ``denoiser(x_t, t, *cond, bev=..., bev_drop=...)``.
With ``bev_spatial`` (ψ_c, ψ_f) the map's class fractions at the latent's resolution
(`nfldm_sdk.models.bev_condition.bev_class_fractions`, ``BEV_CHANNELS`` channels, zeros when dropped) are also
concatenated to the U-Net's input: the spatially aligned path that tells each latent cell what the map holds under
it, which cross-attention from translation-equivariant features cannot.

**Trajectory in g** (ψ_g, ``trajectory_in_g=True``): ψ_g models ``[g, τ]`` jointly, τ the ego trajectory of the
scene's window (``trajectory_frames`` poses ``(x, y, yaw)`` in the scene frame, metres and radians) normalised with
``trajectory_mean`` / ``trajectory_std`` and flattened: ``sample_shape = (g_dim + 3·trajectory_frames,)`` (``latent_shape`` stays g's ``(g_dim,)``;
`split_g_trajectory` splits a sample).
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

from nfldm_sdk.models.bev_condition import (BEV_CHANNELS, BEVCrossAttention, BEVEncoder, bev_class_fractions,
                                            check_bev_tags)
from nfldm_sdk.models.layout import fold_z, unfold_z
from nfldm_sdk.persistence import PretrainedMixin

__all__ = ["GDenoiserConfig", "GDenoiser", "UNetDenoiserConfig", "CDenoiserConfig", "CDenoiser", "FDenoiserConfig",
           "FDenoiser", "DENOISER_CLASSES", "ConditionalUNet2D", "split_g_trajectory"]


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
    bev_condition: bool = False
    """Condition on a BEV map (the tokens' mean added to the time embedding; module docstring)."""
    bev_grid_yx: tuple[int, int] = (64, 64)
    """``(Y, X)`` of the BEV maps (the voxel grid's; filled in from the latent store)."""
    bev_token_dim: int = 64
    """D, the width of the BEV tokens."""
    bev_token_grid: int = 16
    """The token grid's longer side (at most; ``T`` ≤ 16×16 = 256 tokens)."""
    cond_dropout: float = 0.1
    """Fraction of training samples whose BEV map is replaced by the null tokens (training only)."""
    trajectory_in_g: bool = False
    """Model ``[g, τ]`` jointly, τ the window's normalised ego trajectory (module docstring)."""
    trajectory_frames: int = 3
    """K, poses in τ (the window's frames; filled in from the latent store)."""
    trajectory_mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Mean of ``(x, y, yaw)`` (metres, radians) over the training trajectories."""
    trajectory_std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Std of ``(x, y, yaw)`` over the training trajectories (floored at 1e-3 where used)."""

    def __post_init__(self):
        if min(self.g_dim, self.width, self.num_blocks, self.time_channels, self.trajectory_frames) < 1:
            raise ValueError(f"GDenoiserConfig sizes must be positive, got {self}")
        _check_bev("GDenoiserConfig", self)


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
        w, n = config.width, self.sample_shape[0]
        self.time = TimeEmbedding(config.time_channels, w)
        self.inp = nn.Linear(n, w)
        self.blocks = nn.ModuleList(_ResidualMLPBlock(w, w, config.dropout) for _ in range(config.num_blocks))
        self.out = nn.Sequential(nn.LayerNorm(w), nn.SiLU(), nn.Linear(w, n))
        if config.bev_condition:
            self.bev = BEVEncoder(config.bev_grid_yx, config.bev_token_dim, config.bev_token_grid)
            self.bev_proj = nn.Linear(config.bev_token_dim, w)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of the latent g without the batch: ``(G,)``."""
        return (self.config.g_dim,)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sampled vector without the batch: ``(G,)``, ``(G + 3K,)`` with ``trajectory_in_g``."""
        return (self.config.g_dim + (3 * self.config.trajectory_frames if self.config.trajectory_in_g else 0),)

    @property
    def conditional(self) -> bool:
        """Whether the denoiser reads a BEV map."""
        return bool(self.config.bev_condition)

    def forward(self, g_t: torch.Tensor, t: torch.Tensor, *, bev: torch.Tensor | None = None,
                bev_drop: torch.Tensor | None = None) -> torch.Tensor:
        """``g_t [B, G]`` (``[B, G + 3K]`` with ``trajectory_in_g``), ``t [B]``, optional ``bev [B, Y, X]`` uint8 and
        ``bev_drop [B]`` bool (module docstring) -> ``v`` shaped like ``g_t``."""
        t_emb = self.time(t.expand(g_t.shape[0]), g_t.dtype)                          # [B, W]
        if self.config.bev_condition:
            t_emb = t_emb + self.bev_proj(self.bev(bev, bev_drop, g_t.shape[0], g_t.dtype).mean(1))
        elif bev is not None:
            raise ValueError("this ψ_g is not BEV-conditioned (bev_condition=False): pass bev=None")
        emb = F.silu(t_emb)
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
    ``H`` and ``W`` must be divisible by ``2^(L-1)``. With ``token_dim`` set, cross-attention to tokens
    ``[B, T, token_dim]`` (`BEVCrossAttention`) follows the residual blocks of the levels in `cross_levels` (down
    and up) and the middle's first residual block; without it the network has no such modules.
    """

    def __init__(self, in_channels: int, out_channels: int, widths: tuple[int, ...], blocks: int, embed_dim: int,
                 groups: int, mid_attention: bool, attention_head_dim: int, dropout: float,
                 token_dim: int | None = None, cross_levels: tuple[int, ...] = ()):
        super().__init__()
        self.cross = token_dim is not None
        cross_levels = set(cross_levels) if self.cross else set()

        def xattn(i: int) -> nn.Module:
            return BEVCrossAttention(widths[i], token_dim, groups, attention_head_dim) if i in cross_levels else nn.Identity()

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
        if self.cross:
            self.down_xattn = nn.ModuleList(xattn(i) for i in range(L))
            self.mid_xattn = BEVCrossAttention(ch, token_dim, groups, attention_head_dim)
            self.up_xattn = nn.ModuleList(xattn(i) for i in reversed(range(L)))
        self.up_blocks, self.upsamplers = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(L)):  # deepest first; the skip of level i has widths[i] channels
            w = widths[i]
            self.up_blocks.append(nn.ModuleList(res((ch + w) if b == 0 else w, w) for b in range(blocks)))
            self.upsamplers.append(Upsample2D(w, use_conv=True, out_channels=widths[i - 1]) if i > 0 else nn.Identity())
            ch = widths[i - 1] if i > 0 else w
        self.norm_out = nn.GroupNorm(groups, widths[0], eps=1e-6)
        self.conv_out = nn.Conv2d(widths[0], out_channels, 3, padding=1)
        self.levels = L

    def forward(self, x: torch.Tensor, emb: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, in, H, W]``, ``emb [B, E]``, ``tokens [B, T, D]`` (only with ``token_dim``) -> ``[B, out, H, W]``."""
        f = 2 ** (self.levels - 1)
        if x.shape[-2] % f or x.shape[-1] % f:
            raise ValueError(f"U-Net input {tuple(x.shape[-2:])} must be divisible by 2^(levels-1) = {f}")
        if self.cross != (tokens is not None):
            raise ValueError("tokens are required exactly when the U-Net has cross-attention (token_dim set)")
        h = self.conv_in(x)                                                          # [B, w0, H, W]
        skips = []
        for i, (blocks, down) in enumerate(zip(self.down_blocks, self.downsamplers)):
            for block in blocks:
                h = block(h, emb)
            if self.cross and not isinstance(self.down_xattn[i], nn.Identity):
                h = self.down_xattn[i](h, tokens)
            skips.append(h)                                                          # [B, w_i, H/2^i, W/2^i]
            h = down(h)
        h = self.mid1(h, emb)
        if self.cross:
            h = self.mid_xattn(h, tokens)
        if self.mid_attn is not None:
            h = self.mid_attn(h)
        h = self.mid2(h, emb)
        for i, (blocks, up) in enumerate(zip(self.up_blocks, self.upsamplers)):
            h = torch.cat([h, skips.pop()], dim=1)                                   # [B, ch + w_i, ...]
            for block in blocks:
                h = block(h, emb)
            if self.cross and not isinstance(self.up_xattn[i], nn.Identity):
                h = self.up_xattn[i](h, tokens)
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


def _check_bev(name: str, cfg) -> None:
    if not cfg.bev_condition:
        return
    if min(cfg.bev_token_dim, cfg.bev_token_grid, *cfg.bev_grid_yx) < 1 or len(cfg.bev_grid_yx) != 2:
        raise ValueError(f"{name}: bev_token_dim, bev_token_grid and bev_grid_yx (Y, X) must be positive")
    if not 0.0 <= cfg.cond_dropout < 1.0:
        raise ValueError(f"{name}: cond_dropout must be in [0, 1), got {cfg.cond_dropout}")
    if getattr(cfg, "bev_spatial", False):
        (Y, X), (H, W) = cfg.bev_grid_yx, cfg.latent_shape[-2:]
        if not ((Y % H == 0 and X % W == 0) or (H % Y == 0 and W % X == 0)):
            raise ValueError(f"{name}: bev_spatial needs the map grid {tuple(cfg.bev_grid_yx)} and the latent's "
                             f"{(H, W)} to be multiples of one another")
    if hasattr(cfg, "widths"):
        levels = _cross_levels(cfg)
        bad = [i for i in levels if not 0 <= i < len(cfg.widths)]
        if bad:
            raise ValueError(f"{name}: bev_attention_levels {bad} are not U-Net levels 0..{len(cfg.widths) - 1}")
        heads = [cfg.widths[i] for i in (*levels, len(cfg.widths) - 1) if cfg.widths[i] % min(cfg.widths[i], cfg.attention_head_dim)]
        if heads:
            raise ValueError(f"{name}: attention_head_dim {cfg.attention_head_dim} must divide the attended widths {heads}")


def _cross_levels(cfg) -> tuple[int, ...]:
    return tuple(range(1, len(cfg.widths))) if cfg.bev_attention_levels is None else tuple(cfg.bev_attention_levels)


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
    bev_condition: bool = False
    """Condition on a BEV map by cross-attention (module docstring)."""
    bev_grid_yx: tuple[int, int] = (64, 64)
    """``(Y, X)`` of the BEV maps (the voxel grid's; filled in from the latent store)."""
    bev_token_dim: int = 64
    """D, the width of the BEV tokens."""
    bev_token_grid: int = 16
    """The token grid's longer side (at most; ``T`` ≤ 16×16 = 256 tokens)."""
    bev_attention_levels: tuple[int, ...] | None = None
    """U-Net levels with cross-attention after their residual blocks (None: all but level 0); always the middle."""
    cond_dropout: float = 0.1
    """Fraction of training samples whose BEV map is replaced by the null tokens (training only)."""
    bev_spatial: bool = False
    """With ``bev_condition``: also concatenate the map's class fractions at the latent's resolution to the input."""

    def _unet(self, in_channels: int, out_channels: int) -> ConditionalUNet2D:
        if self.bev_condition and self.bev_spatial:
            in_channels += BEV_CHANNELS
        return ConditionalUNet2D(in_channels, out_channels, self.widths, self.blocks_per_level, self.embed_dim,
                                 self.norm_groups, self.mid_attention, self.attention_head_dim, self.dropout,
                                 self.bev_token_dim if self.bev_condition else None,
                                 _cross_levels(self) if self.bev_condition else ())


class _BEVUNetDenoiser(nn.Module):
    """What ψ_c and ψ_f share: the optional BEV encoder and its tokens."""

    config: UNetDenoiserConfig

    def _init_bev(self) -> None:
        if self.config.bev_condition:
            self.bev = BEVEncoder(self.config.bev_grid_yx, self.config.bev_token_dim, self.config.bev_token_grid)

    @property
    def conditional(self) -> bool:
        """Whether the denoiser reads a BEV map."""
        return bool(self.config.bev_condition)

    def _tokens(self, bev: torch.Tensor | None, bev_drop: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        if self.config.bev_condition:
            return self.bev(bev, bev_drop, x.shape[0], x.dtype)                      # [B, T, D]
        if bev is not None:
            raise ValueError(f"this ψ_{self.level} is not BEV-conditioned (bev_condition=False): pass bev=None")
        return None

    def _with_map(self, h: torch.Tensor, bev: torch.Tensor | None, bev_drop: torch.Tensor | None) -> torch.Tensor:
        """``h [B, C, H, W]`` -> ``[B, C + BEV_CHANNELS, H, W]`` with ``bev_spatial`` (the map's class fractions
        at ``(H, W)``), else ``h``."""
        if not (self.config.bev_condition and self.config.bev_spatial):
            return h
        if bev is not None:
            check_bev_tags(bev, self.config.bev_grid_yx, h.shape[0])
        frac = bev_class_fractions(bev, bev_drop, h.shape[0], tuple(h.shape[-2:]), h.dtype, h.device)
        return torch.cat([h, frac], dim=1)


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
        _check_bev("CDenoiserConfig", self)


class CDenoiser(_BEVUNetDenoiser, PretrainedMixin):
    """ψ_c(c_t, g_0, t) -> v ``[B, C, Zc, Yc, Xc]`` (see the module docstring)."""

    config_class = CDenoiserConfig
    level: ClassVar[str] = "c"
    cond_levels: ClassVar[tuple[str, ...]] = ("g",)

    def __init__(self, config: CDenoiserConfig):
        super().__init__()
        self.config = config
        C, Z = config.latent_shape[:2]
        self.cond = CondEmbedding(config.time_channels, config.g_dim, config.embed_dim)
        self.unet = config._unet(C * Z, C * Z)
        self._init_bev()

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """``(C, Zc, Yc, Xc)``."""
        return tuple(self.config.latent_shape)

    def forward(self, c_t: torch.Tensor, t: torch.Tensor, g0: torch.Tensor, *, bev: torch.Tensor | None = None,
                bev_drop: torch.Tensor | None = None) -> torch.Tensor:
        """``c_t [B, C, Zc, Yc, Xc]``, ``t [B]``, ``g0 [B, G]`` (clean, normalised), optional ``bev [B, Y, X]`` uint8
        and ``bev_drop [B]`` bool (module docstring) -> ``v [B, C, Zc, Yc, Xc]``."""
        if tuple(c_t.shape[1:]) != self.latent_shape:
            raise ValueError(f"ψ_c expects c of shape [B, {', '.join(map(str, self.latent_shape))}], got {tuple(c_t.shape)}")
        emb = self.cond(t.expand(c_t.shape[0]), g0)                                  # [B, E]
        tokens = self._tokens(bev, bev_drop, c_t)
        v = self.unet(self._with_map(fold_z(c_t), bev, bev_drop), emb, tokens)      # [B, C·Zc, Yc, Xc]
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
        _check_bev("FDenoiserConfig", self)


class FDenoiser(_BEVUNetDenoiser, PretrainedMixin):
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
        self.unet = config._unet(C + Cc * Zc, C)
        self._init_bev()

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """``(C, Y, X)``."""
        return tuple(self.config.latent_shape)

    def forward(self, f_t: torch.Tensor, t: torch.Tensor, g0: torch.Tensor, c0: torch.Tensor, *,
                bev: torch.Tensor | None = None, bev_drop: torch.Tensor | None = None) -> torch.Tensor:
        """``f_t [B, C, Y, X]``, ``t [B]``, ``g0 [B, G]``, ``c0 [B, Cc, Zc, Yc, Xc]`` (clean, normalised), optional
        ``bev [B, Y, X]`` uint8 and ``bev_drop [B]`` bool (module docstring) -> ``v [B, C, Y, X]``."""
        if tuple(f_t.shape[1:]) != self.latent_shape or tuple(c0.shape[1:]) != tuple(self.config.c_shape):
            raise ValueError(f"ψ_f expects f [B, {', '.join(map(str, self.latent_shape))}] and c "
                             f"[B, {', '.join(map(str, self.config.c_shape))}], got {tuple(f_t.shape)} and {tuple(c0.shape)}")
        emb = self.cond(t.expand(f_t.shape[0]), g0)                                  # [B, E]
        c_up = F.interpolate(fold_z(c0), size=f_t.shape[-2:], mode="bilinear",       # [B, Cc·Zc, Y, X]
                             align_corners=False)
        tokens = self._tokens(bev, bev_drop, f_t)
        return self.unet(self._with_map(torch.cat([f_t, c_up], dim=1), bev, bev_drop), emb, tokens)   # [B, C, Y, X]


#: Denoiser class of each level.
DENOISER_CLASSES: dict[str, type[nn.Module]] = {"g": GDenoiser, "c": CDenoiser, "f": FDenoiser}


def split_g_trajectory(config: GDenoiserConfig, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Split a sample of ψ_g into ``(g [B, G], trajectory [B, K, 3] | None)``; the trajectory is de-normalised to
    ``(x, y, yaw)`` in the scene frame (metres, radians), None without ``trajectory_in_g``."""
    G = config.g_dim
    if not config.trajectory_in_g:
        return x, None
    tau = x[:, G:].reshape(x.shape[0], config.trajectory_frames, 3)
    mean = torch.as_tensor(config.trajectory_mean, dtype=x.dtype, device=x.device)
    std = torch.as_tensor(config.trajectory_std, dtype=x.dtype, device=x.device).clamp_min(1e-3)
    return x[:, :G], tau * std + mean
