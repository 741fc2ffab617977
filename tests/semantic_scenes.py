"""Hand-made labelled scenes for the tests of labels on the user-facing paths (sensors, scenes, exports, CLI).

The grid is test_sensors': 1 m voxels over x ∈ [−8, 24], y ∈ [−8, 8], z ∈ [−1, 5] m, decoded by a tiny randomly
initialised `SceneAutoEncoder` (C = 4 feature channels, downsample 2) whose semantic head is set by hand
(`hand_head`): feature channel 0 votes road, channel 1 building, channel 2 vegetation — so a field's labels are
known from its features, whatever the random decoder's colours.

* `slab_field` — two labelled slabs: the ground z ∈ [−1, 0] (road) and a wall x ∈ [12, 14] across the whole box,
  z ∈ [0, 3] (building), σ = 20 /m; sky above the wall and beside it.
* `layout_field` — a BEV layout: road ground, a 4 × 4 m building block at x ∈ [8, 12), y ∈ [2, 6) (asymmetric in
  y, so a flipped or transposed map fails) 3 m tall, and an empty strip x ∈ [−8, −7) with no ground.
"""
from __future__ import annotations

import numpy as np
import torch

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.labels.classes import DEFAULT_CLASSES
from nfldm_sdk.models.scene_ae import SceneAEConfig, SceneAutoEncoder

C = DEFAULT_CLASSES
ROAD, BUILDING, VEGETATION, SKY_TAG = 1, 3, 9, 11
BOUNDS = ((-8.0, -8.0, -1.0), (24.0, 8.0, 5.0))
GRID = (6, 16, 32)                                        # (Z, Y, X): 1 m voxels
SIGMA = 20.0
WALL_X = 12.0                                             # the wall's face towards the ego, metres
RULES = {0: ROAD, 1: BUILDING, 2: VEGETATION}             # feature channel -> the class it votes for


def tiny_config(semantic: bool = True, **kw) -> SceneAEConfig:
    """test_sensors' tiny stage-1 config, with the default class set when `semantic`."""
    base = dict(image_size=(32, 32), downsample=2, depth_bins=8, near=0.5, far=40.0, feature_channels=4,
                grid_shape=GRID, bounds=BOUNDS, render_samples=64, encoder_widths=(8, 8), decoder_widths=(8, 8),
                semantic_classes=C.to_config() if semantic else ())
    return SceneAEConfig(**{**base, **kw})


def hand_head(model: SceneAutoEncoder, rules: dict[int, int] = RULES, scale: float = 50.0) -> SceneAutoEncoder:
    """Set `model`'s semantic head so feature channel ``c`` votes (logit ``scale · f_c``) for the class of tag
    ``rules[c]``; other weights and the bias are zero. Returns `model`."""
    solid = [k for k in range(C.num_classes) if k != C.sky_index]
    head = model.semantic_head.linear
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        for ch, tag in rules.items():
            head.weight[solid.index(int(C.from_tags(np.array([tag]))[0])), ch] = scale
    return model


def semantic_decoder(seed: int = 0) -> SceneAutoEncoder:
    """The tiny decoder (random weights, `seed`) with the hand-set head, in eval mode."""
    torch.manual_seed(seed)
    return hand_head(SceneAutoEncoder(tiny_config()).eval())


def headless_decoder(seed: int = 0) -> SceneAutoEncoder:
    """The same tiny decoder without a semantic head (a bundle trained before the head existed)."""
    torch.manual_seed(seed)
    return SceneAutoEncoder(tiny_config(semantic=False)).eval()


def slab_field(air_channel: int | None = None) -> VoxelField:
    """The road ground slab and the building wall (module docstring). `air_channel`: also give the empty voxels
    feature 2 on that channel (features of empty space carry no meaning: labels must not depend on them)."""
    Z, Y, X = GRID
    density = torch.zeros(Z, Y, X)
    features = torch.zeros(4, Z, Y, X)
    if air_channel is not None:
        features[air_channel] = 2.0
    density[0] = SIGMA                                    # z ∈ [-1, 0]
    features[:, 0] = torch.tensor([1.0, 0.0, 0.0, 0.0])[:, None, None]
    wall = (slice(1, 4), slice(None), slice(20, 22))      # z ∈ [0, 3], x ∈ [12, 14]
    density[wall] = SIGMA
    features[(slice(None), *wall)] = torch.tensor([0.0, 1.0, 0.0, 0.0])[:, None, None, None]
    return VoxelField(density, features, torch.tensor(BOUNDS))


def layout_field() -> VoxelField:
    """The BEV layout (module docstring)."""
    Z, Y, X = GRID
    density = torch.zeros(Z, Y, X)
    features = torch.zeros(4, Z, Y, X)
    density[0] = SIGMA
    features[0, 0] = 1.0
    block = (slice(1, 4), slice(10, 14), slice(16, 20))   # z ∈ [0, 3], y ∈ [2, 6), x ∈ [8, 12)
    density[block] = SIGMA
    features[(slice(None), *block)] = torch.tensor([0.0, 1.0, 0.0, 0.0])[:, None, None, None]
    density[:, :, 0] = 0.0                                # x ∈ [-8, -7): nothing at all
    return VoxelField(density, features, torch.tensor(BOUNDS))


def layout_bev() -> np.ndarray:
    """``[Y, X]`` uint8: the BEV `layout_field` must give (rows = y index, columns = x index)."""
    bev = np.full(GRID[1:], ROAD, np.uint8)
    bev[10:14, 16:20] = BUILDING
    bev[:, 0] = 255
    return bev


def on_wall(points: np.ndarray) -> np.ndarray:
    """``[...]`` bool: surface points ``[..., 3]`` (metres) of `slab_field` that lie on the wall rather than the
    ground. Density is trilinear between voxel centres, so a slab's rendered surface sits up to half a voxel in
    front of its voxel faces: ground hits at z ≈ 0.2–0.5 m, wall hits at x ≈ 11.5–12 m."""
    return (points[..., 0] > WALL_X - 1.0) & (points[..., 2] > 0.5)


def expected_labels(frame) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel of a `Frame` of `slab_field`, the tag its back-projected surface point implies (sky for no hit,
    building on the wall, road on the ground) and a mask of pixels away from class boundaries (all 8 neighbours
    imply the same tag: the labels are rendered at half resolution and upsampled bilinearly)."""
    H, W = frame.depth.shape
    v, u = np.mgrid[0:H, 0:W] + 0.5
    with np.errstate(invalid="ignore"):
        rays = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(frame.K).T
        p = (rays * frame.depth[..., None]) @ frame.cam_to_world[:3, :3].T + frame.cam_to_world[:3, 3]
    tags = np.full((H, W), SKY_TAG, np.uint8)
    hit = np.isfinite(frame.depth)
    tags[hit] = ROAD
    tags[hit & on_wall(p)] = BUILDING
    pad = np.pad(tags, 1, mode="edge")
    same = np.ones((H, W), bool)
    for dy in range(3):
        for dx in range(3):
            same &= pad[dy:dy + H, dx:dx + W] == tags
    return tags, same


def write_test_bundle(root, scene_ae: SceneAutoEncoder):
    """A model bundle at ``root/bundle`` around `scene_ae` with tiny random other parts; returns its path."""
    from nfldm_sdk.models.bundle import write_bundle
    from nfldm_sdk.models.denoisers import (CDenoiser, CDenoiserConfig, FDenoiser, FDenoiserConfig, GDenoiser,
                                            GDenoiserConfig)
    from nfldm_sdk.models.latent_ae import LatentAEConfig, LatentAutoEncoder, LatentStats
    from nfldm_sdk.models.noise_schedule import NoiseSchedule

    torch.manual_seed(0)
    lcfg = LatentAEConfig.for_scene_ae(scene_ae.config, g_dim=8, coarse_codebook_size=8, fine_codebook_size=8,
                                       g_encoder_widths=(8,), c_encoder_widths=(8, 8, 8), f_encoder_width=8,
                                       f_encoder_blocks=1, decoder_widths=(8, 8, 8))
    den = {"g": GDenoiser(GDenoiserConfig(g_dim=8, width=16, num_blocks=1, time_channels=8)),
           "c": CDenoiser(CDenoiserConfig(latent_shape=lcfg.c_shape, g_dim=8, widths=(8, 8), norm_groups=4,
                                          embed_dim=16, time_channels=8)),
           "f": FDenoiser(FDenoiserConfig(latent_shape=lcfg.f_shape, c_shape=lcfg.c_shape, g_dim=8, widths=(8, 8),
                                          norm_groups=4, embed_dim=16, time_channels=8))}
    return write_bundle(root / "bundle", scene_ae=scene_ae, latent_ae=LatentAutoEncoder(lcfg), denoisers=den,
                        latent_stats=LatentStats(), noise_schedule=NoiseSchedule(), preset="tiny")
