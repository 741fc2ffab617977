"""Frustum checks: can a camera see any of the scene box between the decoder's near and far planes?

Before rendering, the sensors check every camera against the scene box (`check_overlap`), so a trajectory that
leaves the scene, or is not in its frame, is an error naming the camera and tick instead of empty frames.
"""
from __future__ import annotations

from typing import Sequence

import torch

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.errors import NfldmError
from nfldm_sdk.rendering.api import clip_rays_to_box

__all__ = ["NoOverlapError", "frustum_overlap", "check_overlap"]


class NoOverlapError(NfldmError, ValueError):
    """A camera's view frustum does not meet the scene box: it would render nothing."""


def frustum_overlap(cameras: Cameras, bounds: torch.Tensor, near: float, far: float, grid: int = 9) -> torch.Tensor:
    """Which cameras can see any of an axis-aligned box between planar depths `near` and `far`.

    A coarse, conservative-in-practice test: a camera overlaps when one of ``grid × grid`` rays spread over its
    image (borders included) meets the box within ``[near, far]``, or when a box corner projects into the image
    within ``[near, far]`` (rays and projections of the cameras' own models, fisheye included). (A sliver of box slipping between the coarse rays without a corner inside the image
    can be missed; for a scene box seen by a road-level camera that does not happen.)

    Args:
        cameras: any batch shape ``[...]``.
        bounds: ``[2, 3]`` box min/max, metres.
        near, far: planar depth range, metres.
        grid: rays per image side.
    Returns:
        ``[...]`` bool.
    """
    cams = cameras.flatten().to(dtype=torch.float64, device="cpu")                     # [V]
    bounds = torch.as_tensor(bounds, dtype=torch.float64).reshape(2, 3)
    W, H = cams.width, cams.height
    v, u = torch.meshgrid(torch.linspace(0, H, grid, dtype=torch.float64),
                          torch.linspace(0, W, grid, dtype=torch.float64), indexing="ij")
    uv = torch.stack([u, v], -1).reshape(-1, 2)                                         # [G, 2]
    d_cam = cams.pixels_to_camera(uv)                                                   # [V, G, 3], z = 1 (any model)
    R, t = cams.cam_to_world[:, :3, :3], cams.cam_to_world[:, :3, 3]                    # [V,3,3], [V,3]
    d = d_cam @ R.transpose(-1, -2)                                                     # [V, G, 3] (z_cam = 1 per unit)
    o = t[:, None].expand_as(d)
    # With camera-z = 1 per unit of t, the ray parameter IS planar depth: clip to [near, far] directly.
    _, _, hit = clip_rays_to_box(o, d, bounds[0], bounds[1], float(near), float(far))  # [V, G]
    lo, hi = bounds[0].tolist(), bounds[1].tolist()
    corners = torch.tensor([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])],
                           dtype=torch.float64)                                         # [8, 3]
    uv, z = cams.world_to_pixels(corners)                                               # [V, 8, 2], [V, 8]
    inside = (z >= near) & (z <= far) & (uv[..., 0] >= 0) & (uv[..., 0] <= W) & (uv[..., 1] >= 0) & (uv[..., 1] <= H)
    return (hit.any(-1) | inside.any(-1)).reshape(cameras.batch_shape)


def check_overlap(cameras: Cameras, bounds: torch.Tensor, near: float, far: float,
                  labels: Sequence[str] | None = None) -> None:
    """Raise `NoOverlapError` naming the cameras (``labels[i]`` for flattened camera i) that cannot see the box."""
    ok = frustum_overlap(cameras, bounds, near, far).reshape(-1)
    if bool(ok.all()):
        return
    bad = torch.nonzero(~ok).reshape(-1).tolist()
    names = [labels[i] if labels is not None else f"camera {i}" for i in bad]
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    b = torch.as_tensor(bounds).reshape(2, 3).tolist()
    raise NoOverlapError(
        f"{len(bad)} camera view(s) cannot see any of the scene box x {b[0][0]:.1f}…{b[1][0]:.1f}, "
        f"y {b[0][1]:.1f}…{b[1][1]:.1f}, z {b[0][2]:.1f}…{b[1][2]:.1f} m (scene frame) within depth {near:g}…{far:g} m: "
        f"{shown}. The trajectory probably leaves the scene or is not in its frame: start it inside the box (e.g. "
        "Trajectory.anchored(i) for a capture episode), shorten it, or pass check_overlap=False to render empty frames")

