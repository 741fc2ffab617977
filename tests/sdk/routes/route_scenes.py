"""Analytic routes for the route-rendering tests: one world function sampled on the voxel grids of several scene
boxes, so consecutive scenes agree exactly over their overlap (or, mirrored, do not).

The world: a ground slab (z < 0, σ = 20/m), buildings beside the road (8 m < |y| < 14 m, z < 4 m, where
sin(x/4) > 0; σ = 10/m) and a pole (x ∈ [38.5, 41.5], y ∈ [3.5, 6.5], z < 3 m; σ = 15/m); features smooth functions
of the world position. A scene box is x ∈ [−16, 48], y ∈ [−32, 32], z ∈ [−2, 6] m in its own frame on a (8, 32, 32)
grid (2 × 2 × 1 m voxels). The two-scene route: scene 1 is translated by 32 m along x (world box x ∈ [16, 80]), seam at
x = 32 m (a voxel face of both grids), normal +x.
"""
from __future__ import annotations

import numpy as np
import torch

from nfldm_sdk.cameras.trajectory import yaw_pose
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.labels.classes import DEFAULT_CLASSES
from nfldm_sdk.models.scene_ae import SceneAEConfig, SceneAutoEncoder

BOUNDS = ((-16.0, -32.0, -2.0), (48.0, 32.0, 6.0))
GRID = (8, 32, 32)
SIZE = 32                                     # test image size (the decoder's downsample is 2)
SHIFT = 32.0                                  # scene 1's offset along x, metres
SEAM_POINTS = np.array([[32.0, 0.0, 0.0]])
SEAM_NORMALS = np.array([[1.0, 0.0, 0.0]])
SCENE_TO_WORLD = np.stack([np.eye(4), yaw_pose(SHIFT, 0.0, 0.0)])


def route_decoder(seed: int = 0, render_samples: int = 128, semantic: bool = True) -> SceneAutoEncoder:
    """A tiny random stage-1 model for the route box (32×32 images, downsample 2, far 40 m)."""
    torch.manual_seed(seed)
    cfg = SceneAEConfig(image_size=(SIZE, SIZE), downsample=2, depth_bins=8, near=0.5, far=40.0, feature_channels=4,
                        grid_shape=GRID, bounds=BOUNDS, render_samples=render_samples, encoder_widths=(8, 8),
                        decoder_widths=(8, 8), semantic_classes=DEFAULT_CLASSES.to_config() if semantic else ())
    return SceneAutoEncoder(cfg).eval()


def world_field(x0: float, x1: float, nx: int, *, mirrored: bool = False, frame_x: float = 0.0) -> VoxelField:
    """The world function on the box x ∈ [x0, x1] (world), y, z of `BOUNDS`, ``nx`` voxels in x, expressed in a
    scene frame whose origin is at world x = `frame_x`. `mirrored` flips the world in y and negates the features (a
    scene that disagrees with its neighbour)."""
    lo = torch.tensor([x0, BOUNDS[0][1], BOUNDS[0][2]])
    hi = torch.tensor([x1, BOUNDS[1][1], BOUNDS[1][2]])
    Z, Y, X = GRID[0], GRID[1], nx
    vs = (hi - lo) / torch.tensor([X, Y, Z], dtype=torch.float32)
    k, j, i = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) + 0.5 for n in (Z, Y, X)), indexing="ij")
    x, y, z = lo[0] + i * vs[0], lo[1] + j * vs[1], lo[2] + k * vs[2]
    if mirrored:
        y = -y
    density = torch.where(z < 0, 20.0, 0.0)
    density = torch.where((y.abs() > 8) & (y.abs() < 14) & (z < 4) & (torch.sin(x * 0.25) > 0), 10.0, density)
    density = torch.where(((x - 40).abs() < 1.5) & ((y - 5).abs() < 1.5) & (z < 3), 15.0, density)
    features = torch.stack([torch.sin(0.3 * x + c) * torch.cos(0.2 * y + 2 * c) + 0.3 * z for c in range(4)])
    if mirrored:
        features = -features
    shift = torch.tensor([frame_x, 0.0, 0.0])
    return VoxelField(density, features, torch.stack([lo, hi]) - shift)


def two_scene_route(*, mirrored: bool = False) -> list[VoxelField]:
    """The fields of the two-scene route (module docstring); `mirrored` makes scene 1 disagree with scene 0."""
    return [world_field(-16.0, 48.0, 32), world_field(16.0, 80.0, 32, mirrored=mirrored, frame_x=SHIFT)]


def big_field() -> VoxelField:
    """The world function on the union of the two boxes (x ∈ [−16, 80], 48 voxels): the one-field reference."""
    return world_field(-16.0, 80.0, 48)
