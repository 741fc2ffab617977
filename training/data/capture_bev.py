"""Bird's-eye label maps of captured scene windows: the capture's side of `NeuralScene.bev`.

A window's captured depth is back-projected into the scene frame (the ego frame at the window's anchor, the frame its
stage-1 field lives in), each point keeps the CARLA tag of its pixel, and `nfldm_sdk.labels.semantic_field.points_bev`
labels every ``(y, x)`` cell of the voxel grid (the fine latent f's resolution) with the class of the highest point
that falls in it — the surface a top-down ray would meet first — or `UNOBSERVED` where none falls. Captured and
generated scenes are thereby compared in one form: ``[Y, X]`` uint8 representative CARLA tags.
"""
from __future__ import annotations

import torch

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.labels.classes import SemanticClasses
from nfldm_sdk.labels.semantic_field import points_bev
from nfldm_training.data.capture_windows import SceneWindow

__all__ = ["backproject", "window_bev"]


def backproject(depth: torch.Tensor, mask: torch.Tensor, cameras: Cameras) -> torch.Tensor:
    """Scene-frame points of the pixels in `mask`.

    Args:
        depth: ``[V, H, W]`` planar depth, metres.
        mask: ``[V, H, W]`` bool, pixels to keep (finite depth).
        cameras: `Cameras` of batch shape ``[V]`` at ``H×W`` (``cam_to_world`` = camera -> scene).
    Returns:
        ``[P, 3]`` points, metres (P = ``mask.sum()``, in ``mask``'s row-major order).
    """
    rays = cameras.rays()                                                       # [V, H, W, 3]
    t = torch.where(mask, depth, torch.zeros_like(depth)) / rays.z_per_t       # ray distance
    p = rays.origins + rays.directions * t[..., None]
    return p[mask]


def window_bev(window: SceneWindow, bounds: torch.Tensor, grid_yx: tuple[int, int], classes: SemanticClasses
               ) -> torch.Tensor:
    """``[Y, X]`` uint8 bird's-eye map of CARLA tags of one captured window (module docstring).

    Args:
        window: a `SceneWindow` (its depth, semantic tags, intrinsics and camera -> scene poses; load it at the
            capture's own size for the densest map).
        bounds: ``[2, 3]`` the voxel box in the scene frame, metres (``SceneAEConfig.bounds_tensor()``).
        grid_yx: ``(Y, X)`` cells, the voxel grid's (``grid_shape[1:]``).
        classes: the class set the map is written in.
    """
    V, H, W = window.depth.shape
    cams = Cameras(window.K.double(), window.cam_to_scene.double(), W, H)
    mask = torch.isfinite(window.depth)
    points = backproject(window.depth.double(), mask, cams)                    # [P, 3]
    return points_bev(points, window.semantic[mask], bounds, grid_yx, classes)
