"""Stage 2 of NF-LDM: the latent voxel auto-encoder (LAE), voxel field V <-> latents (g, c, f).

docs/method.md, stage 2. A scene's `VoxelField` (density ``[Z,Y,X]`` + features ``[C,Z,Y,X]``) is compressed into

* **g** ``[g_dim]`` — a global vector, regularised with a small KL penalty (reparameterisation);
* **c** ``[4, Zc, Yc, Xc]`` — a coarse 3D latent, vector-quantised (the grid downsampled by
  ``coarse_downsample_xy`` in X/Y and ``coarse_downsample_z`` in Z);
* **f** ``[4, Y, X]`` — a fine bird's-eye-view latent at the grid's X/Y resolution, vector-quantised with its own
  codebook.

Every CNN is **2D**: the vertical axis Z is folded into channels. The encoder input is
``concat(log1p(density), features)`` ``[B, 1+C, Z, Y, X]`` -> ``[B, (1+C)·Z, Y, X]`` (channel-major: channel
``k·Z + z`` is quantity k at height z). ``log1p`` on the density input is our choice: σ spans orders of magnitude
(empty space ≈ 0, surfaces ≫ 1 per metre) and the log keeps the input range O(1); the output stays σ itself
(softplus), and training compares ``log(σ + ε)`` (``nfldm_training.modules.latent_ae``: a loss on σ leaves the
softplus without gradient where surfaces should grow).

* encoder g: 2D CNN (a 2× downsample per stage) + global average pooling -> ``(mean, logvar)`` ``[B, g_dim]``;
* encoder c: 2D CNN downsampling X/Y by ``coarse_downsample_xy`` -> ``[B, 4·Zc, Yc, Xc]`` -> ``[B, 4, Zc, Yc, Xc]``;
* encoder f: 2D CNN at full X/Y resolution -> ``[B, 4, Y, X]``;
* decoder: c with Zc folded into channels ``[B, 4·Zc, Yc, Xc]`` -> residual blocks whose group normalisation
  is **conditioned on g** (per-channel scale and shift predicted from g, `nfldm_sdk.models.blocks.CondGroupNorm`) -> upsampling to the
  grid's X/Y -> **concatenate f** -> more conditioned blocks -> ``[B, (1+C)·Z, Y, X]`` -> density
  ``softplus(·) ≥ 0`` and features -> `VoxelField` over ``config.bounds``.

Quantisation: `nfldm_sdk.models.vq.VectorQuantizer` (EMA codebooks, straight-through gradients, dead-code
revival); the vectors quantised are the 4 channels of each c voxel and each f pixel.

Latent normalisation for diffusion: `LatentStats` (written by ``nfldm encode-latents`` into ``config.json``):
g uses one scalar mean and std over all dims and scenes, c and f a mean and std per channel (see `LatentStats`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.models.blocks import CondGroupNorm, CondResBlock, Downsample, ResBlock, Upsample, group_norm
from nfldm_sdk.models.layout import fold_z, unfold_z
from nfldm_sdk.models.vq import VectorQuantizer
from nfldm_sdk.persistence import PretrainedMixin

__all__ = ["LEVELS", "LatentAEConfig", "LatentStats", "Latents", "LatentAEOutput", "LatentAutoEncoder"]

#: The levels of the latent hierarchy (global g, coarse c, fine f), in sampling order.
LEVELS = ("g", "c", "f")


# ------------------------------------------------------------------------------------------------ config
@dataclass
class LatentStats:
    """Normalisation statistics of the latents over a data set (population mean/std, ddof = 0).

    Why scalar for g: g's dims are exchangeable to every network that reads it (linear layers) and the KL term
    already puts them on one scale; dims that the KL collapsed to the prior are near-constant over the data, and
    a per-dim std would blow their noise up to unit variance. c and f get a mean/std per channel (over scenes and
    all voxels/pixels), the usual latent-diffusion normalisation.
    """

    g_mean: float = 0.0
    """Mean of g over all scenes and dims."""
    g_std: float = 1.0
    """Standard deviation of g over all scenes and dims."""
    c_mean: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    """Per-channel mean of c over scenes and voxels, ``[coarse_channels]``."""
    c_std: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    """Per-channel standard deviation of c, ``[coarse_channels]``."""
    f_mean: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    """Per-channel mean of f over scenes and pixels, ``[fine_channels]``."""
    f_std: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    """Per-channel standard deviation of f, ``[fine_channels]``."""
    num_scenes: int = 0
    """Scenes the statistics were computed over."""
    std_floor: float = 1e-6
    """`normalize` divides by ``max(std, std_floor)``, so a constant latent does not divide by zero."""

    def _tensors(self, ref: torch.Tensor, ndim_c: int, ndim_f: int):
        kw = dict(device=ref.device, dtype=ref.dtype)
        cm = torch.tensor(self.c_mean, **kw).reshape(1, -1, *([1] * ndim_c))
        cs = torch.tensor(self.c_std, **kw).clamp_min(self.std_floor).reshape(1, -1, *([1] * ndim_c))
        fm = torch.tensor(self.f_mean, **kw).reshape(1, -1, *([1] * ndim_f))
        fs = torch.tensor(self.f_std, **kw).clamp_min(self.std_floor).reshape(1, -1, *([1] * ndim_f))
        return cm, cs, fm, fs

    def normalize(self, latents: "Latents") -> "Latents":
        """``(x − mean) / max(std, std_floor)`` per level (g scalar, c and f per channel)."""
        cm, cs, fm, fs = self._tensors(latents.c, latents.c.dim() - 2, latents.f.dim() - 2)
        gs = max(self.g_std, self.std_floor)
        return Latents(g=(latents.g - self.g_mean) / gs, c=(latents.c - cm) / cs, f=(latents.f - fm) / fs)

    def denormalize(self, latents: "Latents") -> "Latents":
        """Inverse of `normalize`: ``x · max(std, std_floor) + mean``."""
        cm, cs, fm, fs = self._tensors(latents.c, latents.c.dim() - 2, latents.f.dim() - 2)
        gs = max(self.g_std, self.std_floor)
        return Latents(g=latents.g * gs + self.g_mean, c=latents.c * cs + cm, f=latents.f * fs + fm)


@dataclass
class LatentAEConfig:
    """Configuration of `LatentAutoEncoder` (preset sizes: ``nfldm_training.configs.presets``).

    The paper's sizes: grid ``(Z, Y, X) = (32, 128, 128)``, g 128, c ``[4, 16, 32, 32]`` (X/Y downsampled 4×, Z 2×),
    f ``[4, 128, 128]``.
    """

    grid_shape: tuple[int, int, int] = (8, 32, 32)
    """Voxel grid ``(Z, Y, X)`` of the stage-1 fields (Z vertical); Y and X divisible by `coarse_downsample_xy`,
    Z by `coarse_downsample_z`."""
    feature_channels: int = 8
    """C, feature channels of the fields; the LAE sees ``1 + C`` channels (density first) per voxel."""
    bounds: tuple[tuple[float, float, float], tuple[float, float, float]] = ((-16.0, -32.0, -2.0), (48.0, 32.0, 6.0))
    """The voxel box ``((xmin, ymin, zmin), (xmax, ymax, zmax))``, metres in the scene frame — the stage-1 model's
    box; decoded fields get it, and `LatentAutoEncoder.forward` checks inputs against it."""
    g_dim: int = 16
    """Dimension of the global latent g (paper: 128)."""
    coarse_channels: int = 4
    """Channels of c, also the length of its codebook vectors (paper: 4)."""
    coarse_downsample_xy: int = 4
    """X/Y downsampling of c relative to the grid (a power of 2; paper: 4)."""
    coarse_downsample_z: int = 2
    """Z downsampling of c relative to the grid (paper: 2, 32 -> 16)."""
    fine_channels: int = 4
    """Channels of the bird's-eye-view latent f (at the grid's X/Y resolution), also its codebook vector length."""
    coarse_codebook_size: int = 64
    """Codes in c's codebook."""
    fine_codebook_size: int = 64
    """Codes in f's codebook."""
    codebook_update: str = "ema"
    """``"ema"`` (codebooks follow an EMA of their assigned vectors) or ``"loss"`` (trained by the codebook loss);
    see `nfldm_sdk.models.vq`."""
    ema_decay: float = 0.99
    """EMA decay of the codebooks (``codebook_update="ema"``)."""
    commitment_beta: float = 0.25
    """β, the weight of the commitment term ``‖z − sg(z_q)‖²`` inside each VQ loss."""
    dead_code_steps: int = 50
    """A code unused for this many consecutive training steps is re-initialised from a random encoder output."""
    kl_weight: float = 1e-5
    """Weight of g's KL term in the training loss (the KL is summed over g's dims, averaged over scenes)."""
    g_encoder_widths: tuple[int, ...] = (32, 64, 64)
    """Channels of encoder g's stages: the first at full X/Y resolution, each further one after a 2× downsample."""
    c_encoder_widths: tuple[int, ...] = (32, 64, 64)
    """Channels of encoder c's stages; ``len = log2(coarse_downsample_xy) + 1`` (a 2× downsample between stages)."""
    f_encoder_width: int = 32
    """Channels of encoder f (full X/Y resolution throughout)."""
    f_encoder_blocks: int = 2
    """Residual blocks of encoder f."""
    decoder_widths: tuple[int, ...] = (64, 64, 32)
    """Channels of the decoder's stages from c's resolution up to the grid's X/Y (a 2× upsample between stages);
    ``len = log2(coarse_downsample_xy) + 1``. f is concatenated after the last stage."""
    blocks_per_stage: int = 1
    """Residual blocks per encoder/decoder stage (and after the f concatenation)."""
    latent_stats: LatentStats | None = None
    """Normalisation statistics of the latents over the training data (written by ``nfldm encode-latents``);
    None until computed."""

    def __post_init__(self):
        Z, Y, X = self.grid_shape
        dxy, dz = self.coarse_downsample_xy, self.coarse_downsample_z
        if dxy < 1 or dxy & (dxy - 1):
            raise ValueError(f"coarse_downsample_xy must be a power of 2, got {dxy}")
        if dz < 1 or Z % dz:
            raise ValueError(f"grid Z = {Z} must be divisible by coarse_downsample_z = {dz}")
        if Y % dxy or X % dxy:
            raise ValueError(f"grid (Y, X) = ({Y}, {X}) must be divisible by coarse_downsample_xy = {dxy}")
        levels = int(math.log2(dxy)) + 1
        for name in ("c_encoder_widths", "decoder_widths"):
            if len(getattr(self, name)) != levels:
                raise ValueError(f"{name} needs log2(coarse_downsample_xy)+1 = {levels} entries, got {getattr(self, name)}")
        if not self.g_encoder_widths:
            raise ValueError("g_encoder_widths needs at least one stage")
        if self.codebook_update not in ("ema", "loss"):
            raise ValueError(f"codebook_update must be 'ema' or 'loss', got {self.codebook_update!r}")
        lo, hi = self.bounds
        if len(lo) != 3 or len(hi) != 3 or any(a >= b for a, b in zip(lo, hi)):
            raise ValueError(f"bounds must be ((xmin, ymin, zmin), (xmax, ymax, zmax)) with min < max, got {self.bounds}")

    @classmethod
    def for_scene_ae(cls, scene_ae_config, **overrides) -> "LatentAEConfig":
        """A config whose grid, channels and box are those of a stage-1 ``SceneAEConfig`` (other fields from
        `overrides` or the defaults)."""
        return cls(**{**overrides, "grid_shape": tuple(scene_ae_config.grid_shape),
                      "feature_channels": int(scene_ae_config.feature_channels),
                      "bounds": tuple(tuple(float(v) for v in r) for r in scene_ae_config.bounds)})

    @property
    def in_channels(self) -> int:
        """``(1 + C) · Z``: channels of the Z-folded voxel grid the 2D CNNs see."""
        return (1 + self.feature_channels) * self.grid_shape[0]

    @property
    def coarse_grid(self) -> tuple[int, int, int]:
        """``(Zc, Yc, Xc)`` of c."""
        Z, Y, X = self.grid_shape
        return Z // self.coarse_downsample_z, Y // self.coarse_downsample_xy, X // self.coarse_downsample_xy

    @property
    def g_shape(self) -> tuple[int]:
        """Per-scene shape of g: ``(g_dim,)``."""
        return (self.g_dim,)

    @property
    def c_shape(self) -> tuple[int, int, int, int]:
        """Per-scene shape of c: ``(coarse_channels, Zc, Yc, Xc)``."""
        return (self.coarse_channels, *self.coarse_grid)

    @property
    def f_shape(self) -> tuple[int, int, int]:
        """Per-scene shape of f: ``(fine_channels, Y, X)``."""
        return (self.fine_channels, self.grid_shape[1], self.grid_shape[2])

    def bounds_tensor(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """`bounds` as ``[2, 3]`` (row 0 min, row 1 max), metres."""
        return torch.tensor(self.bounds, device=device, dtype=dtype)


# ------------------------------------------------------------------------------------------------ typed values
@dataclass(eq=False)
class Latents:
    """The three latents of B scenes.

    Attributes:
        g: ``[B, g_dim]`` global latent.
        c: ``[B, coarse_channels, Zc, Yc, Xc]`` coarse latent (codebook vectors when quantised).
        f: ``[B, fine_channels, Y, X]`` fine bird's-eye-view latent (codebook vectors when quantised).
    """

    g: torch.Tensor
    c: torch.Tensor
    f: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.g.shape[0]

    def to(self, device=None, dtype=None) -> "Latents":
        return Latents(*(t.to(device=device, dtype=dtype) for t in (self.g, self.c, self.f)))

    def detach(self) -> "Latents":
        return Latents(self.g.detach(), self.c.detach(), self.f.detach())


@dataclass(eq=False)
class LatentAEOutput:
    """What `LatentAutoEncoder.forward` returns.

    Attributes:
        field: the reconstruction V̂ (density ``[B,Z,Y,X]`` ≥ 0, features ``[B,C,Z,Y,X]``, bounds ``[B,2,3]``).
        latents: the latents it was decoded from (g sampled or the mean; c, f quantised with straight-through
            gradients).
        kl: scalar, ``KL(q(g|V) ‖ N(0, I))`` summed over g's dims, averaged over scenes (unweighted).
        vq_loss_c, vq_loss_f: scalars, the VQ losses (``β · commitment``, plus the codebook term with
            ``codebook_update="loss"``).
        usage_c, usage_f: scalars in [0, 1], fraction of each codebook used by this batch.
        perplexity_c, perplexity_f: scalars in [1, K], perplexity of this batch's code histograms.
        indices_c: ``[B, Zc, Yc, Xc]`` int64 code of every c vector; indices_f: ``[B, Y, X]`` likewise for f.
        g_mean, g_logvar: ``[B, g_dim]`` the posterior of g.
    """

    field: VoxelField
    latents: Latents
    kl: torch.Tensor
    vq_loss_c: torch.Tensor
    vq_loss_f: torch.Tensor
    usage_c: torch.Tensor
    usage_f: torch.Tensor
    perplexity_c: torch.Tensor
    perplexity_f: torch.Tensor
    indices_c: torch.Tensor
    indices_f: torch.Tensor
    g_mean: torch.Tensor
    g_logvar: torch.Tensor


def _stages(c_in: int, widths: tuple[int, ...], blocks: int, resample: type) -> nn.Sequential:
    """Stem conv to ``widths[0]`` then per stage: (`resample` between stages) + `blocks` ResBlocks."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, widths[0], 3, padding=1)]
    for i, w in enumerate(widths):
        if i > 0:
            layers.append(resample(widths[i - 1], w))
        layers.extend(ResBlock(w, w) for _ in range(blocks))
    return nn.Sequential(*layers)


class GlobalEncoder(nn.Module):
    """Encoder g: ``[B, (1+C)·Z, Y, X] -> (mean, logvar)`` ``[B, g_dim]`` each (2D CNN + global average pool)."""

    def __init__(self, config: LatentAEConfig):
        super().__init__()
        w = config.g_encoder_widths
        self.body = _stages(config.in_channels, w, config.blocks_per_stage, Downsample)
        self.norm = group_norm(w[-1])
        self.head = nn.Linear(w[-1], 2 * config.g_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.silu(self.norm(self.body(x))).mean(dim=(2, 3))                   # [B, w]
        mean, logvar = self.head(h).chunk(2, dim=1)                               # [B, g_dim] each
        return mean, logvar.clamp(-30.0, 20.0)                                    # keep exp(logvar) finite


class CoarseEncoder(nn.Module):
    """Encoder c: ``[B, (1+C)·Z, Y, X] -> [B, coarse_channels, Zc, Yc, Xc]`` (pre-quantisation)."""

    def __init__(self, config: LatentAEConfig):
        super().__init__()
        w = config.c_encoder_widths
        self.channels = config.coarse_channels
        self.body = _stages(config.in_channels, w, config.blocks_per_stage, Downsample)
        self.head = nn.Sequential(group_norm(w[-1]), nn.SiLU(), nn.Conv2d(w[-1], config.coarse_channels * config.coarse_grid[0], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return unfold_z(self.head(self.body(x)), self.channels)                 # [B, 4·Zc, Yc, Xc] -> [B, 4, Zc, Yc, Xc]


class FineEncoder(nn.Module):
    """Encoder f: ``[B, (1+C)·Z, Y, X] -> [B, fine_channels, Y, X]`` (pre-quantisation, full X/Y resolution)."""

    def __init__(self, config: LatentAEConfig):
        super().__init__()
        w = config.f_encoder_width
        self.body = _stages(config.in_channels, (w,), config.f_encoder_blocks, Downsample)
        self.head = nn.Sequential(group_norm(w), nn.SiLU(), nn.Conv2d(w, config.fine_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class LatentDecoder(nn.Module):
    """Decoder: ``(g [B, g_dim], c [B, 4, Zc, Yc, Xc], f [B, 4, Y, X]) -> [B, 1+C, Z, Y, X]`` raw (pre-softplus)
    channels; group normalisation conditioned on g throughout, f concatenated at full X/Y resolution."""

    def __init__(self, config: LatentAEConfig):
        super().__init__()
        w, g, n = config.decoder_widths, config.g_dim, config.blocks_per_stage
        self.out_channels = 1 + config.feature_channels
        self.conv_in = nn.Conv2d(config.coarse_channels * config.coarse_grid[0], w[0], 3, padding=1)
        self.stages = nn.ModuleList()
        for i, wi in enumerate(w):
            stage = nn.ModuleList([Upsample(w[i - 1], wi)] if i > 0 else [])
            stage.extend(CondResBlock(wi, wi, g) for _ in range(n))
            self.stages.append(stage)
        self.fuse = nn.Conv2d(w[-1] + config.fine_channels, w[-1], 3, padding=1)
        self.fine_blocks = nn.ModuleList(CondResBlock(w[-1], w[-1], g) for _ in range(n))
        self.norm_out = CondGroupNorm(w[-1], g)
        self.conv_out = nn.Conv2d(w[-1], config.in_channels, 3, padding=1)

    def forward(self, g: torch.Tensor, c: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(fold_z(c))                                               # [B, w0, Yc, Xc]
        for stage in self.stages:
            for layer in stage:
                h = layer(h, g) if isinstance(layer, CondResBlock) else layer(h)  # ... -> [B, w_last, Y, X]
        h = self.fuse(torch.cat([h, f], dim=1))                                   # f joins at full X/Y resolution
        for block in self.fine_blocks:
            h = block(h, g)
        out = self.conv_out(F.silu(self.norm_out(h, g)))                          # [B, (1+C)·Z, Y, X]
        return unfold_z(out, self.out_channels)                                   # [B, 1+C, Z, Y, X]


# ------------------------------------------------------------------------------------------------ the model
class LatentAutoEncoder(nn.Module, PretrainedMixin):
    """Voxel field <-> latents (g, c, f). See the module docstring.

    Example::

        lae = LatentAutoEncoder(LatentAEConfig(grid_shape=(8, 32, 32), feature_channels=8))
        out = lae(field)                    # training: out.field, out.kl, out.vq_loss_c, ...
        z = lae.encode(field)               # deterministic, quantised: z.g [B,16], z.c [B,4,4,8,8], z.f [B,4,32,32]
        same = lae.decode(z)                # VoxelField, density [B,8,32,32], features [B,8,8,32,32]
    """

    config_class = LatentAEConfig

    def __init__(self, config: LatentAEConfig):
        super().__init__()
        self.config = config
        self.encoder_g = GlobalEncoder(config)
        self.encoder_c = CoarseEncoder(config)
        self.encoder_f = FineEncoder(config)
        vq = dict(beta=config.commitment_beta, update=config.codebook_update, decay=config.ema_decay,
                  dead_code_steps=config.dead_code_steps)
        self.vq_c = VectorQuantizer(config.coarse_codebook_size, config.coarse_channels, **vq)
        self.vq_f = VectorQuantizer(config.fine_codebook_size, config.fine_channels, **vq)
        self.decoder = LatentDecoder(config)
        self.register_buffer("bounds", config.bounds_tensor(), persistent=False)

    # ---------------------------------------------------------------------------------------------- plumbing
    def _check_field(self, field: VoxelField) -> None:
        cfg = self.config
        if not field.is_batched:
            raise ValueError("LatentAutoEncoder needs a batched VoxelField ([B,Z,Y,X]); wrap one scene with VoxelField.stack([field])")
        if tuple(field.grid_shape) != tuple(cfg.grid_shape) or field.num_channels != cfg.feature_channels:
            raise ValueError(f"field has grid {field.grid_shape} and C={field.num_channels}, but this LAE was built for grid "
                             f"{tuple(cfg.grid_shape)} and C={cfg.feature_channels}: encode the voxels with the matching stage-1 model")
        if not torch.allclose(field.bounds.to(self.bounds), self.bounds.expand_as(field.bounds), atol=1e-4):
            raise ValueError(f"field bounds {field.bounds[0].tolist()} differ from the LAE's box {list(cfg.bounds)}: the LAE "
                             "decodes into its own box, so train it on fields of that box")

    @staticmethod
    def voxel_input(field: VoxelField) -> torch.Tensor:
        """The encoders' input: ``concat(log1p(density), features)`` folded, ``[B, (1+C)·Z, Y, X]``."""
        x = torch.cat([torch.log1p(field.density.clamp_min(0.0)).unsqueeze(1), field.features], dim=1)  # [B, 1+C, Z, Y, X]
        return fold_z(x)

    def _encode_raw(self, field: VoxelField):
        self._check_field(field)
        x = self.voxel_input(field)
        mean, logvar = self.encoder_g(x)
        return mean, logvar, self.encoder_c(x), self.encoder_f(x)

    # ---------------------------------------------------------------------------------------------- public API
    def encode(self, field: VoxelField) -> Latents:
        """Deterministic, quantised latents of B fields: g = the posterior mean, c and f = nearest codes.

        Never changes the codebooks (whatever the train/eval mode). Gradients reach the encoders through the
        straight-through estimator.

        Args:
            field: batched `VoxelField` (grid and channels of the config, box = ``config.bounds``).
        Returns:
            `Latents` (g ``[B, g_dim]``, c ``[B, 4, Zc, Yc, Xc]``, f ``[B, 4, Y, X]``).
        """
        mean, _, c, f = self._encode_raw(field)
        c_q = c + (self.vq_c.quantize(c.detach()) - c).detach()
        f_q = f + (self.vq_f.quantize(f.detach()) - f).detach()
        return Latents(g=mean, c=c_q, f=f_q)

    def decode(self, latents: Latents, snap_to_codebook: bool = False) -> VoxelField:
        """Decode latents into voxel fields over ``config.bounds``.

        Args:
            latents: g ``[B, g_dim]``, c ``[B, 4, Zc, Yc, Xc]``, f ``[B, 4, Y, X]`` (un-normalised: apply
                ``LatentStats.denormalize`` to diffusion outputs first).
            snap_to_codebook: replace c and f by their nearest codes first (e.g. for continuous diffusion samples);
                the value then equals the decode of quantised latents, with straight-through gradients.
        Returns:
            batched float32 `VoxelField`: density ``[B, Z, Y, X]`` = softplus(·) ≥ 0 (1/m), features ``[B, C, Z, Y, X]``.
        """
        cfg = self.config
        B = latents.g.shape[0]
        for name, t, shape in (("g", latents.g, cfg.g_shape), ("c", latents.c, cfg.c_shape), ("f", latents.f, cfg.f_shape)):
            if tuple(t.shape[1:]) != tuple(shape) or t.shape[0] != B:
                raise ValueError(f"latent {name} must be [B, {', '.join(map(str, shape))}] with B={B}, got {tuple(t.shape)}")
        c, f = latents.c, latents.f
        if snap_to_codebook:
            c = c + (self.vq_c.quantize(c.detach()) - c).detach()
            f = f + (self.vq_f.quantize(f.detach()) - f).detach()
        # float32 out even under autocast: the field is the renderer's input and is compared against stored fields
        raw = self.decoder(latents.g, c, f).float()                               # [B, 1+C, Z, Y, X]
        density = F.softplus(raw[:, 0])
        return VoxelField(density, raw[:, 1:], self.bounds.to(density.dtype).expand(B, 2, 3))

    def forward(self, field: VoxelField, sample_g: bool = True, generator: torch.Generator | None = None) -> LatentAEOutput:
        """Encode (g sampled with the reparameterisation trick when `sample_g`, else its mean), quantise c and f
        (training mode: EMA codebook update and dead-code revival), decode.

        Args:
            field: batched `VoxelField` matching the config.
            sample_g: draw ``g = mean + exp(logvar/2) · ε`` (training) instead of ``g = mean``.
            generator: torch generator for ε (None: the global RNG).
        Returns:
            `LatentAEOutput`.
        """
        mean, logvar, c, f = self._encode_raw(field)
        if sample_g:
            eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            g = mean + torch.exp(0.5 * logvar) * eps
        else:
            g = mean
        kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).sum(1).mean()
        qc, qf = self.vq_c(c), self.vq_f(f)
        latents = Latents(g=g, c=qc.z_q, f=qf.z_q)
        return LatentAEOutput(field=self.decode(latents), latents=latents, kl=kl, vq_loss_c=qc.loss, vq_loss_f=qf.loss,
                              usage_c=qc.usage, usage_f=qf.usage, perplexity_c=qc.perplexity, perplexity_f=qf.perplexity,
                              indices_c=qc.indices, indices_f=qf.indices, g_mean=mean, g_logvar=logvar)
