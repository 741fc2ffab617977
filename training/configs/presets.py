"""The ONE preset table: model sizes and training settings of every stage, by name.

* ``tiny``  — CI on CPU: every stage runs in seconds on 64×64 captures.
* ``default`` — the shipped default model: 128×128 images, 16×64×64 voxels (1 m × 1 m × 0.5 m), every stage
  trainable on 2 CPU cores within 4 hours (``nfldm train-all --preset default``).
* ``small`` — the default model, trainable in about 20 minutes on one GPU (128×128 images, 16×64×64 voxels).
* ``paper`` — the paper's sizes (docs/method.md, "Presets"): a 128×128×32 voxel grid, i.e.
  ``grid_shape (Z, Y, X) = (32, 128, 128)``.

A `Preset` is nested dataclasses, one section per stage (``scene_ae`` + ``scene_ae_train`` for stage 1, ``latent_ae`` +
``latent_ae_train`` for stage 2, ``ldm`` for stage 3, ``prior`` for stage 4, ``critic`` for the perception critic of
``nfldm eval``; the types are in
`nfldm_training.configs.sections`). `get_preset` returns a copy with overrides applied (dotted keys, e.g.
``{"scene_ae_train.max_steps": 10}``). The stages' views of this table are `nfldm_training.configs.latent`,
`nfldm_training.configs.ldm`, `nfldm_training.configs.prior` and `nfldm_training.configs.critic`; a run's resolved section is written to and read from
``RUN/config.json`` by `nfldm_training.configs.run_config`.

The voxel box (all presets): ``x ∈ [−16, 48], y ∈ [−32, 32], z ∈ [−2, 6]`` metres in the scene frame (the ego
frame at the window's anchor frame: x forward, y left, z up, origin on the ground). Why: a driving scene is seen
mostly ahead, so the box reaches 48 m forward and 16 m back (the rear cameras and the frames before the anchor
still see that far); ±32 m sideways covers the road, sidewalks and building fronts of a town block; 2 m below the
ground allows for slopes and 6 m above it covers cars, poles and the lower storeys, which is what the rig's
cameras (1.6 m high, horizontal) see within the box. The paper's 128×128×32 grid then has 0.5 m × 0.5 m × 0.25 m
voxels.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any, Mapping, TypeVar

from nfldm_sdk.labels.classes import DEFAULT_CLASSES
from nfldm_sdk.models.critic import CriticConfig
from nfldm_sdk.models.prior_unet import PriorConfig
from nfldm_sdk.models.denoisers import CDenoiserConfig, FDenoiserConfig, GDenoiserConfig
from nfldm_sdk.models.latent_ae import LatentAEConfig
from nfldm_sdk.models.scene_ae import SceneAEConfig
from nfldm_sdk.persistence import config_from_dict, config_to_dict
from nfldm_sdk.models.noise_schedule import SamplerDefaults
from nfldm_sdk.models.noise_schedule import NoiseSchedule
from nfldm_training.configs.sections import (CriticPreset, CriticTrainConfig, LatentAETrainConfig, LDMPreset,
                                             LDMTrainConfig, Preset, PriorPreset, PriorTrainConfig, SceneAETrainConfig)

__all__ = ["DRIVING_BOX", "PRESETS", "apply_overrides", "copy_with_overrides", "get_preset"]

T = TypeVar("T")

#: The default voxel box, ((xmin, ymin, zmin), (xmax, ymax, zmax)) metres in the scene frame (see module docstring).
DRIVING_BOX = ((-16.0, -32.0, -2.0), (48.0, 32.0, 6.0))


# Stage-1 models first: the stage-2 grid, channels and box follow them.
_TINY_SCENE_AE = SceneAEConfig(image_size=(64, 64), downsample=4, depth_bins=16, near=1.0, far=60.0, feature_channels=8,
                               grid_shape=(8, 32, 32), bounds=DRIVING_BOX, render_samples=32,
                               encoder_widths=(16, 32, 32), decoder_widths=(32, 32, 16), blocks_per_stage=1,
                               semantic_classes=DEFAULT_CLASSES.to_config())

_SMALL_SCENE_AE = SceneAEConfig(image_size=(128, 128), downsample=4, depth_bins=32, near=1.0, far=60.0, feature_channels=16,
                               grid_shape=(16, 64, 64), bounds=DRIVING_BOX, render_samples=64,
                               encoder_widths=(32, 64, 128), decoder_widths=(128, 64, 32), blocks_per_stage=2,
                               semantic_classes=DEFAULT_CLASSES.to_config())

_PAPER_SCENE_AE = SceneAEConfig(image_size=(256, 256), downsample=4, depth_bins=64, near=1.0, far=60.0, feature_channels=32,
                               grid_shape=(32, 128, 128), bounds=DRIVING_BOX, render_samples=128,
                               encoder_widths=(64, 128, 256), decoder_widths=(256, 128, 64), blocks_per_stage=2,
                               semantic_classes=DEFAULT_CLASSES.to_config())

# The shipped default model's stage 1 (CPU-trainable): 128×128 images, 1 m × 1 m × 0.5 m voxels. Log-spaced depth
# bins: a bin is ~0.4 m wide at 5 m and ~3 m at 40 m, about the footprint of a feature pixel there; the encoder
# runs on every input view, so it stays narrow, the decoder (on the rendered targets only) is wider.
_DEFAULT_SCENE_AE = SceneAEConfig(image_size=(128, 128), downsample=4, depth_bins=48, bin_spacing="log", near=1.0,
                                  far=60.0, feature_channels=16, grid_shape=(16, 64, 64), bounds=DRIVING_BOX,
                                  render_samples=64, encoder_widths=(16, 32, 64), decoder_widths=(96, 48, 24),
                                  blocks_per_stage=1, semantic_classes=DEFAULT_CLASSES.to_config())


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        description="CI on CPU: seconds per stage (64x64 images, 8x32x32 voxels)",
        scene_ae=_TINY_SCENE_AE,
        # L2 image loss: the fastest PSNR gain within a CPU test's budget (measured on the tiny capture:
        # validation PSNR +2.4 to +3.2 dB after 100 steps over 3 seeds, against +1.4 to +2.2 dB after 60 steps).
        scene_ae_train=SceneAETrainConfig(window=2, stride=1, batch_size=2, lr=3e-3, max_steps=100, val_interval=50,
                                          image_loss="l2", depth_weight=0.02, log_every=5, cache_windows=True),
        latent_ae=LatentAEConfig.for_scene_ae(_TINY_SCENE_AE, g_dim=16, coarse_downsample_xy=4, coarse_downsample_z=2,
                                 coarse_codebook_size=64, fine_codebook_size=64, dead_code_steps=20, kl_weight=1e-5,
                                 g_encoder_widths=(16, 32, 32), c_encoder_widths=(16, 32, 32), f_encoder_width=16,
                                 f_encoder_blocks=1, decoder_widths=(32, 32, 16), blocks_per_stage=1),
        latent_ae_train=LatentAETrainConfig(batch_size=2, lr=2e-3, max_steps=60, val_interval=30, render_views=4,
                                            log_every=5),
        ldm=LDMPreset(
            denoiser_g=GDenoiserConfig(width=64, num_blocks=2, time_channels=32),
            denoiser_c=CDenoiserConfig(widths=(16, 32), blocks_per_level=1, norm_groups=4, embed_dim=64, time_channels=32),
            denoiser_f=FDenoiserConfig(widths=(16, 32), blocks_per_level=1, norm_groups=4, embed_dim=64, time_channels=32),
            schedule=NoiseSchedule(num_train_timesteps=1000),
            train_g=LDMTrainConfig(batch_size=8, lr=1e-3, max_steps=200, ema_decay=0.99, val_interval=100, log_every=10),
            train_c=LDMTrainConfig(batch_size=4, lr=1e-3, max_steps=200, ema_decay=0.99, val_interval=100, log_every=10),
            train_f=LDMTrainConfig(batch_size=4, lr=1e-3, max_steps=200, ema_decay=0.99, val_interval=100, log_every=10),
            sampler=SamplerDefaults(sampler="ddim", steps=50),
        ),
        prior=PriorPreset(
            prior=PriorConfig(image_size=(32, 32), block_out_channels=(16, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                              up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1, attention_head_dim=8,
                              norm_num_groups=8, schedule=NoiseSchedule(num_train_timesteps=1000)),
            train=PriorTrainConfig(batch_size=8, lr=1e-3, max_steps=40, ema_decay=0.99, artifact_scenes=2, artifact_views=4,
                                   generate_steps=4, frame_stride=2, val_fraction=0.1, val_interval=20, log_every=5),
        ),
        # measured on the tiny capture (2 episodes, one held out): held-out mIoU 0.47 after 300 steps (0.40-0.47 over
        # 3 seeds after 120), against 0.03 for the majority class
        critic=CriticPreset(
            critic=CriticConfig(image_size=(64, 64), widths=(16, 32, 32), blocks_per_stage=1,
                                classes=DEFAULT_CLASSES.to_config()),
            train=CriticTrainConfig(batch_size=16, lr=3e-3, max_steps=300, val_interval=100, log_every=10,
                                    cache_views=True),
        ),
    ),
    "default": Preset(
        name="default",
        description="the shipped default model, trainable on 2 CPU cores in <= 4 h (128x128 images, 16x64x64 voxels)",
        scene_ae=_DEFAULT_SCENE_AE,
        # geometry from the dense captured depth (occupancy + opacity losses) and 4 of the 12 views rendered per
        # step: the render and the decoder are most of a CPU step (measured: scripts/profile_stage1.py). Step
        # counts: every stage within ~1.5 h on 2 CPU cores, so that the whole recipe runs inside one working
        # session (measured, cores otherwise idle: stage 1 ~2.2 s/step, encoding the voxels 10 min, the LAE
        # ~1.1 s/step, ψ_g / ψ_c / ψ_f ~0.07 / 0.1 / 0.24 s/step)
        scene_ae_train=SceneAETrainConfig(window=2, stride=2, batch_size=2, lr=2e-3, warmup_steps=100, max_steps=1200,
                                          val_interval=400, val_batches=8, val_fraction=0.07, image_loss="l2",
                                          depth_weight=0.02, semantic_weight=0.02, occupancy_weight=0.05,
                                          opacity_weight=0.05, render_views=4, channels_last=True, log_every=10),
        latent_ae=LatentAEConfig.for_scene_ae(_DEFAULT_SCENE_AE, g_dim=32, coarse_downsample_xy=4, coarse_downsample_z=2,
                                 coarse_codebook_size=256, fine_codebook_size=256, dead_code_steps=50, kl_weight=1e-5,
                                 g_encoder_widths=(32, 64, 64, 128), c_encoder_widths=(32, 64, 64), f_encoder_width=32,
                                 f_encoder_blocks=2, decoder_widths=(64, 64, 32), blocks_per_stage=1),
        # the label losses: without them the LAE decoded sidewalks, terrain and vegetation as road and building
        # (BEV cells kept: sidewalk 14 %, terrain 20 %, vegetation 0 %; road 87 %, building 94 %)
        latent_ae_train=LatentAETrainConfig(batch_size=2, lr=1e-3, warmup_steps=100, max_steps=800, val_interval=400,
                                            val_batches=8, val_fraction=0.07, render_views=4, log_every=10,
                                            voxel_label_weight=0.1, bev_label_weight=0.3),
        ldm=LDMPreset(
            # conditional on the capture window's BEV map (cross-attention, 10 % condition dropout: one model for
            # conditional and unconditional sampling); ψ_c and ψ_f also read the map's class fractions concatenated
            # to their input (bev_spatial: cross-attention alone left the layout at the unconditional level);
            # ψ_g also samples the window's ego trajectory with g
            denoiser_g=GDenoiserConfig(width=128, num_blocks=3, time_channels=64, bev_condition=True, bev_token_dim=64,
                                       trajectory_in_g=True),
            denoiser_c=CDenoiserConfig(widths=(32, 64), blocks_per_level=1, norm_groups=8, embed_dim=128, time_channels=64,
                                       bev_condition=True, bev_token_dim=64, bev_spatial=True),
            denoiser_f=FDenoiserConfig(widths=(32, 64, 64), blocks_per_level=1, norm_groups=8, embed_dim=128,
                                       time_channels=64, bev_condition=True, bev_token_dim=64, bev_spatial=True),
            schedule=NoiseSchedule(num_train_timesteps=1000),
            train_g=LDMTrainConfig(batch_size=16, lr=1e-3, warmup_steps=100, max_steps=3000, ema_decay=0.995,
                                   val_interval=1000, val_fraction=0.07, log_every=20),
            train_c=LDMTrainConfig(batch_size=8, lr=5e-4, warmup_steps=100, max_steps=6000, ema_decay=0.995,
                                   val_interval=1500, val_fraction=0.07, log_every=20),
            train_f=LDMTrainConfig(batch_size=4, lr=5e-4, warmup_steps=100, max_steps=4000, ema_decay=0.995,
                                   val_interval=1000, val_fraction=0.07, log_every=20),
            sampler=SamplerDefaults(sampler="ddim", steps=50),
        ),
        prior=PriorPreset(
            prior=PriorConfig(image_size=(64, 64), block_out_channels=(32, 64, 64),
                              down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                              up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), layers_per_block=1,
                              attention_head_dim=16, norm_num_groups=16, schedule=NoiseSchedule(num_train_timesteps=1000)),
            train=PriorTrainConfig(batch_size=16, lr=5e-4, warmup_steps=100, max_steps=300, ema_decay=0.995,
                                   artifact_scenes=8, artifact_views=6, generate_steps=10, frame_stride=2,
                                   val_fraction=0.07, val_interval=500, log_every=20),
        ),
        critic=CriticPreset(
            critic=CriticConfig(image_size=(128, 128), widths=(16, 32, 64, 64), blocks_per_stage=1,
                                classes=DEFAULT_CLASSES.to_config()),
            train=CriticTrainConfig(batch_size=16, lr=2e-3, warmup_steps=50, max_steps=300, val_interval=150,
                                    val_batches=8, frame_stride=2, val_fraction=0.07, log_every=10),
        ),
    ),
    "small": Preset(
        name="small",
        description="default model, ~20 min on one GPU (128x128 images, 16x64x64 voxels)",
        scene_ae=_SMALL_SCENE_AE,
        scene_ae_train=SceneAETrainConfig(window=3, stride=1, batch_size=4, lr=1e-3, warmup_steps=200, max_steps=6000,
                                          val_interval=500, val_batches=20, num_workers=4, precision="bf16-mixed"),
        latent_ae=LatentAEConfig.for_scene_ae(_SMALL_SCENE_AE, g_dim=64, coarse_downsample_xy=4, coarse_downsample_z=2,
                                 coarse_codebook_size=256, fine_codebook_size=256, dead_code_steps=100, kl_weight=1e-5,
                                 g_encoder_widths=(64, 128, 128, 256), c_encoder_widths=(64, 128, 128),
                                 f_encoder_width=64, f_encoder_blocks=2, decoder_widths=(128, 128, 64),
                                 blocks_per_stage=2),
        latent_ae_train=LatentAETrainConfig(batch_size=4, lr=5e-4, warmup_steps=200, max_steps=6000, val_interval=500,
                                            val_batches=20, render_views=6, num_workers=4, precision="bf16-mixed"),
        ldm=LDMPreset(
            denoiser_g=GDenoiserConfig(width=512, num_blocks=4, time_channels=128),
            denoiser_c=CDenoiserConfig(widths=(64, 128, 128), blocks_per_level=2, mid_attention=True, attention_head_dim=32,
                                       norm_groups=32, embed_dim=256, time_channels=128),
            denoiser_f=FDenoiserConfig(widths=(64, 128, 128), blocks_per_level=2, mid_attention=True, attention_head_dim=32,
                                       norm_groups=32, embed_dim=256, time_channels=128),
            schedule=NoiseSchedule(num_train_timesteps=1000),
            train_g=LDMTrainConfig(batch_size=256, lr=3e-4, warmup_steps=200, max_steps=20_000, ema_decay=0.999,
                                   val_interval=1000, num_workers=2, precision="32-true"),
            train_c=LDMTrainConfig(batch_size=32, lr=2e-4, warmup_steps=500, max_steps=20_000, ema_decay=0.999,
                                   val_interval=1000, num_workers=4, precision="bf16-mixed"),
            train_f=LDMTrainConfig(batch_size=32, lr=2e-4, warmup_steps=500, max_steps=20_000, ema_decay=0.999,
                                   val_interval=1000, num_workers=4, precision="bf16-mixed"),
            sampler=SamplerDefaults(sampler="ddim", steps=50),
        ),
        prior=PriorPreset(
            prior=PriorConfig(image_size=(64, 64), block_out_channels=(64, 128, 256),
                              down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                              up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"), layers_per_block=2,
                              attention_head_dim=32, norm_num_groups=32, schedule=NoiseSchedule(num_train_timesteps=1000)),
            train=PriorTrainConfig(batch_size=64, lr=2e-4, warmup_steps=500, max_steps=20_000, ema_decay=0.999,
                                   artifact_scenes=256, artifact_views=8, generate_steps=25, frame_stride=2,
                                   val_interval=1000, num_workers=4, precision="bf16-mixed"),
        ),
        critic=CriticPreset(
            critic=CriticConfig(image_size=(128, 128), widths=(32, 64, 128, 128), blocks_per_stage=2,
                                classes=DEFAULT_CLASSES.to_config()),
            train=CriticTrainConfig(batch_size=32, lr=1e-3, warmup_steps=200, max_steps=6000, val_interval=500,
                                    val_batches=20, frame_stride=2, num_workers=4, precision="bf16-mixed"),
        ),
    ),
    "paper": Preset(
        name="paper",
        description="the paper's sizes: 128x128x32 voxel grid (Z,Y,X)=(32,128,128), 256x256 images",
        scene_ae=_PAPER_SCENE_AE,
        scene_ae_train=SceneAETrainConfig(window=4, stride=1, batch_size=2, lr=5e-4, warmup_steps=1000, max_steps=100_000,
                                          val_interval=2000, val_batches=50, num_workers=8, precision="bf16-mixed"),
        latent_ae=LatentAEConfig.for_scene_ae(_PAPER_SCENE_AE, g_dim=128, coarse_channels=4, coarse_downsample_xy=4,
                                 coarse_downsample_z=2, fine_channels=4, coarse_codebook_size=1024,
                                 fine_codebook_size=1024, dead_code_steps=200, kl_weight=1e-5,
                                 g_encoder_widths=(128, 256, 256, 512, 512), c_encoder_widths=(128, 256, 256),
                                 f_encoder_width=128, f_encoder_blocks=2, decoder_widths=(256, 256, 128),
                                 blocks_per_stage=2),
        latent_ae_train=LatentAETrainConfig(batch_size=2, lr=2e-4, warmup_steps=1000, max_steps=100_000,
                                            val_interval=2000, val_batches=50, render_views=4, num_workers=8,
                                            precision="bf16-mixed"),
        ldm=LDMPreset(
            denoiser_g=GDenoiserConfig(width=1024, num_blocks=6, time_channels=256),
            denoiser_c=CDenoiserConfig(widths=(128, 256, 512), blocks_per_level=2, mid_attention=True, attention_head_dim=64,
                                       norm_groups=32, embed_dim=512, time_channels=256),
            denoiser_f=FDenoiserConfig(widths=(128, 256, 256, 512), blocks_per_level=2, mid_attention=True,
                                       attention_head_dim=64, norm_groups=32, embed_dim=512, time_channels=256),
            schedule=NoiseSchedule(num_train_timesteps=1000),
            train_g=LDMTrainConfig(batch_size=512, lr=2e-4, warmup_steps=1000, max_steps=200_000, ema_decay=0.9999,
                                   val_interval=5000, num_workers=4),
            train_c=LDMTrainConfig(batch_size=64, lr=1e-4, warmup_steps=2000, max_steps=400_000, ema_decay=0.9999,
                                   val_interval=5000, num_workers=8, precision="bf16-mixed"),
            train_f=LDMTrainConfig(batch_size=32, lr=1e-4, warmup_steps=2000, max_steps=400_000, ema_decay=0.9999,
                                   val_interval=5000, num_workers=8, precision="bf16-mixed"),
            sampler=SamplerDefaults(sampler="ddim", steps=50),
        ),
        prior=PriorPreset(
            prior=PriorConfig(image_size=(128, 128), block_out_channels=(128, 256, 256, 512),
                              down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                              up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), layers_per_block=2,
                              attention_head_dim=64, norm_num_groups=32, schedule=NoiseSchedule(num_train_timesteps=1000)),
            train=PriorTrainConfig(batch_size=64, lr=1e-4, warmup_steps=2000, max_steps=100_000, ema_decay=0.9999,
                                   artifact_scenes=1024, artifact_views=8, generate_steps=50, frame_stride=1,
                                   val_interval=5000, num_workers=8, precision="bf16-mixed"),
        ),
        critic=CriticPreset(
            critic=CriticConfig(image_size=(256, 256), widths=(32, 64, 128, 256, 256), blocks_per_stage=2,
                                classes=DEFAULT_CLASSES.to_config()),
            train=CriticTrainConfig(batch_size=32, lr=5e-4, warmup_steps=500, max_steps=20_000, val_interval=2000,
                                    val_batches=50, num_workers=8, precision="bf16-mixed"),
        ),
    ),
}


def _apply_override(obj: Any, key: str, value: Any, full_key: str) -> Any:
    """A copy of dataclass `obj` with the dotted `key` set to `value` (validated by rebuilding the dataclass)."""
    head, _, rest = key.partition(".")
    names = {f.name for f in dataclasses.fields(obj)}
    if head not in names:
        raise KeyError(f"unknown preset setting {full_key!r}: {type(obj).__name__} has {sorted(names)}")
    if rest:
        inner = getattr(obj, head)
        if not dataclasses.is_dataclass(inner):
            raise KeyError(f"preset setting {full_key!r}: {head!r} is not a section")
        value = _apply_override(inner, rest, value, full_key)
    elif dataclasses.is_dataclass(getattr(obj, head)) and isinstance(value, Mapping):
        value = config_from_dict(type(getattr(obj, head)), {**config_to_dict(getattr(obj, head)), **value})
    else:
        # Round-trip through JSON types so that lists become tuples where the field says tuple.
        value = config_from_dict(type(obj), {**config_to_dict(obj), head: json.loads(json.dumps(value))}).__dict__[head]
    return dataclasses.replace(obj, **{head: value})


def apply_overrides(preset: T, overrides: Mapping[str, Any] | None) -> T:
    """A copy of `preset` (a `Preset` or any section dataclass of one: `LatentPreset`, `LDMPreset`, ...) with
    dotted-key `overrides` applied (``{"scene_ae_train.max_steps": 10}``); every value is validated by rebuilding its
    config dataclass. Raises ``KeyError`` naming the section's fields for an unknown key."""
    for key, value in (overrides or {}).items():
        preset = _apply_override(preset, key, value, key)
    return preset


def copy_with_overrides(table: Mapping[str, T], name: str, overrides: Mapping[str, Any] | None = None,
                        what: str = "preset") -> T:
    """A deep copy of ``table[name]`` (the whole preset or one stage's view of it) with dotted `overrides` applied.

    Raises ``KeyError`` listing the names for an unknown `name` (`what` names the kind in the message), and naming
    the section's fields for an unknown key.
    """
    if name not in table:
        raise KeyError(f"unknown {what} {name!r}: choose one of {', '.join(table)}")
    return apply_overrides(copy.deepcopy(table[name]), overrides)


def get_preset(name: str, overrides: Mapping[str, Any] | None = None) -> Preset:
    """A copy of preset `name` with `overrides` (dotted keys, e.g. ``{"scene_ae_train.max_steps": 10}``) applied.

    Raises ``KeyError`` listing the presets for an unknown name, and naming the section's fields for an unknown key.
    """
    return copy_with_overrides(PRESETS, name, overrides)
