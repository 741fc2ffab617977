"""Stage-3 (hierarchical latent diffusion) sections of the preset table: `LDM_PRESETS` by preset name.

The values live in the one preset table (``nfldm_training.configs.presets.PRESETS``, section ``ldm``); this module
defines the section's dataclasses, and `LDM_PRESETS` / `get_ldm_preset` give a stage-3 view of the table.

The denoisers' latent shapes are NOT preset values: they follow from the LAE the latents come from. The
configs below hold the network sizes; `with_latent_shapes` fills in ``g_dim`` / ``latent_shape`` / ``c_shape``
from the LAE's config (bench, tests) or from the arrays of the latent store (`nfldm train ldm`).

Sizes (ours; the paper gives none for stage 3):

* ``tiny`` — CI on CPU: a few hundred thousand parameters per level, 200 steps.
* ``small`` — the shipped default: g MLP 512×4, U-Nets (64, 128, 128) with mid attention; ~20k steps per level
  on one GPU (the three levels train in parallel).
* ``paper`` — for the paper's latents (g 128, c [4, 16, 32, 32], f [4, 128, 128]): g MLP 1024×6, U-Nets of
  (128, 256, 512) for c and (128, 256, 256, 512) for f.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from nfldm_sdk.models.denoisers import CDenoiserConfig, FDenoiserConfig, GDenoiserConfig
from nfldm_sdk.persistence import config_from_dict, config_to_dict, nfldm_version
from nfldm_sdk.pipelines.sampling import NoiseSchedule, SamplerDefaults

__all__ = ["LDMTrainConfig", "SamplerDefaults", "LDMPreset", "LDM_PRESETS", "with_latent_shapes", "get_ldm_preset",
           "random_generator"]


@dataclass
class LDMTrainConfig:
    """Training of one level's denoiser (`nfldm_training.modules.ldm`)."""

    batch_size: int = 32
    """Scenes per optimisation step (per device)."""
    lr: float = 2e-4
    """AdamW learning rate (constant after a linear warm-up)."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_steps: int = 1000
    """Optimisation steps."""
    ema_decay: float = 0.999
    """Decay of the exponential moving average of the weights (the EMA weights are what gets saved). The
    effective decay warms up as ``min(ema_decay, (1 + n) / (10 + n))`` after n updates, so short runs still
    move away from the initial weights."""
    loss_weighting: str = "none"
    """``"none"``: plain ``‖v̂ − v‖²`` (the usual v-prediction loss; on x_0 it is the weight ``SNR_t + 1``);
    ``"min_snr"``: Min-SNR-γ weighting for v-prediction (Hang et al. 2023), ``min(SNR_t, γ) / (SNR_t + 1)`` per
    sample, which caps the weight of nearly clean timesteps (but gives ~0 weight to the noisiest ones with a
    zero-terminal-SNR schedule). The paper's ``w(λ_t)`` is not given; plain v-MSE is our default."""
    snr_gamma: float = 5.0
    """γ of the Min-SNR weighting."""
    grad_clip: float = 1.0
    """Gradient-norm clipping (0 disables)."""
    val_fraction: float = 0.2
    """Fraction of each capture store's episodes held out (stage 1's rule and default fraction, so the denoisers never
    train on the episodes stage 1, the LAE and `nfldm eval` hold out); single-episode stores: every k-th scene."""
    val_interval: int = 200
    """Optimisation steps between validations."""
    num_workers: int = 0
    """DataLoader worker processes."""
    precision: str = "32-true"
    """Lightning precision (``"32-true"``, ``"bf16-mixed"``, ...)."""
    seed: int = 0
    """Seed of weights, data order, noise and timesteps."""
    log_every: int = 10
    """Steps between training-loss log rows."""


@dataclass
class LDMPreset:
    """Stage 3: the three denoisers, their noise schedule, their training and the sampler defaults."""

    denoiser_g: GDenoiserConfig = field(default_factory=GDenoiserConfig)
    """ψ_g network sizes (``g_dim`` is filled in from the latents)."""
    denoiser_c: CDenoiserConfig = field(default_factory=CDenoiserConfig)
    """ψ_c network sizes (``latent_shape``, ``g_dim`` filled in from the latents)."""
    denoiser_f: FDenoiserConfig = field(default_factory=FDenoiserConfig)
    """ψ_f network sizes (``latent_shape``, ``c_shape``, ``g_dim`` filled in from the latents)."""
    schedule: NoiseSchedule = field(default_factory=NoiseSchedule)
    """Forward process (T = 1000, cosine, v-prediction) shared by the three levels."""
    train_g: LDMTrainConfig = field(default_factory=LDMTrainConfig)
    """Training of ψ_g."""
    train_c: LDMTrainConfig = field(default_factory=LDMTrainConfig)
    """Training of ψ_c."""
    train_f: LDMTrainConfig = field(default_factory=LDMTrainConfig)
    """Training of ψ_f."""
    sampler: SamplerDefaults = field(default_factory=SamplerDefaults)
    """Sampler defaults written into model bundles."""

    def train_config(self, level: str) -> LDMTrainConfig:
        """The training section of `level` (``"g"``, ``"c"`` or ``"f"``)."""
        if level not in ("g", "c", "f"):
            raise KeyError(f"unknown level {level!r}: choose g, c or f")
        return getattr(self, f"train_{level}")

    def denoiser_config(self, level: str):
        """The denoiser config of `level`."""
        if level not in ("g", "c", "f"):
            raise KeyError(f"unknown level {level!r}: choose g, c or f")
        return getattr(self, f"denoiser_{level}")


def with_latent_shapes(ldm: LDMPreset, g_dim: int, c_shape: tuple[int, int, int, int], f_shape: tuple[int, int, int]) -> LDMPreset:
    """A copy of `ldm` whose denoisers are sized for latents g ``[g_dim]``, c ``c_shape = (C, Zc, Yc, Xc)`` and f
    ``f_shape = (C, Y, X)`` (raises the configs' own errors when the U-Nets do not fit the spatial sizes)."""
    c_shape, f_shape = tuple(int(v) for v in c_shape), tuple(int(v) for v in f_shape)
    return dataclasses.replace(
        ldm,
        denoiser_g=dataclasses.replace(ldm.denoiser_g, g_dim=int(g_dim)),
        denoiser_c=dataclasses.replace(ldm.denoiser_c, g_dim=int(g_dim), latent_shape=c_shape),
        denoiser_f=dataclasses.replace(ldm.denoiser_f, g_dim=int(g_dim), latent_shape=f_shape, c_shape=c_shape))


def save_ldm_preset(ldm: LDMPreset, path: str | Path, level: str, name: str = "custom") -> Path:
    """Write the resolved preset of a stage-3 run as JSON (``{"level", "preset": name, <LDMPreset fields>,
    "_nfldm_version"}``, the run's ``config.json``) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"level": level, "preset": name, **config_to_dict(ldm), "_nfldm_version": nfldm_version()},
                               indent=2) + "\n")
    return path


def load_ldm_preset(path: str | Path) -> tuple[str, str, LDMPreset]:
    """Read a config written by `save_ldm_preset`: ``(level, preset name, preset)``."""
    data = json.loads(Path(path).read_text())
    level, name = str(data.pop("level")), str(data.pop("preset", "custom"))
    return level, name, config_from_dict(LDMPreset, data)


def get_ldm_preset(name: str) -> LDMPreset:
    """A copy of ``LDM_PRESETS[name]`` (KeyError listing the names for an unknown one)."""
    import copy

    from nfldm_training.configs.presets import PRESETS

    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name].ldm)


def random_generator(name: str, seed: int = 0):
    """A `SceneGenerator` of randomly initialised models of preset `name` (stage 1, 2 and 3 sizes), seeded.

    For benchmarks and tests: the sampling time does not depend on the weights. Latent statistics are the identity
    (mean 0, std 1).
    """
    import torch

    from nfldm_sdk.pipelines.generator import SceneGenerator
    from nfldm_sdk.models.denoisers import CDenoiser, FDenoiser, GDenoiser
    from nfldm_sdk.models.latent_ae import LatentAutoEncoder, LatentStats
    from nfldm_sdk.models.scene_ae import SceneAutoEncoder
    from nfldm_training.configs.presets import PRESETS

    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    torch.manual_seed(seed)  # module initialisation draws from the global RNG
    scene_cfg = PRESETS[name].scene_ae
    lae_cfg = PRESETS[name].latent_ae  # built from the same stage-1 preset's grid, channels and box
    ldm = with_latent_shapes(get_ldm_preset(name), lae_cfg.g_dim, lae_cfg.c_shape, lae_cfg.f_shape)
    denoisers = {"g": GDenoiser(ldm.denoiser_g), "c": CDenoiser(ldm.denoiser_c), "f": FDenoiser(ldm.denoiser_f)}
    return SceneGenerator(SceneAutoEncoder(scene_cfg), LatentAutoEncoder(lae_cfg), denoisers, LatentStats(),
                          ldm.schedule, ldm.sampler, bundle_hash=f"random-{name}-{seed}")


def __getattr__(name):
    # `LDM_PRESETS` is a read-only view of the one preset table (nfldm_training.configs.presets.PRESETS), built on first
    # use: this module defines the section's dataclasses, which the table module imports.
    if name == "LDM_PRESETS":
        from nfldm_training.configs.presets import PRESETS

        return {n: p.ldm for n, p in PRESETS.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
