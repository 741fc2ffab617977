"""Open3D line sets: camera frustums, ego trajectories and boxes, in the scene (or capture world) frame, metres.

    show([mesh, trajectory_lines(traj), camera_frustum_lines(rig.cameras(traj.ego_to_world[::5]))])
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from nfldm_sdk.cameras.pinhole import Cameras

__all__ = ["camera_frustum_lines", "trajectory_lines", "box_lines"]


def camera_frustum_lines(cameras: Cameras, scale: float = 1.0, color: Sequence[float] = (0.1, 0.3, 0.9)):
    """A LineSet drawing each camera as a pyramid: its centre joined to the four image corners at planar depth
    `scale` metres, plus the image rectangle. Cameras of any batch shape."""
    import open3d as o3d  # start-up time: open3d

    cams = cameras.flatten().to(dtype=torch.float64, device="cpu")
    W, H = cams.width, cams.height
    corners_uv = torch.tensor([[0.0, 0.0], [W, 0.0], [W, H], [0.0, H]], dtype=torch.float64)   # [4, 2]
    V = len(cams)
    far = cams.pixels_to_world(corners_uv.expand(V, 4, 2), torch.full((V, 4), float(scale), dtype=torch.float64))
    pts = torch.cat([cams.centers[:, None], far], 1).reshape(-1, 3).numpy()          # [V*5, 3]
    base = np.arange(V)[:, None] * 5
    edges = np.array([[0, 1], [0, 2], [0, 3], [0, 4], [1, 2], [2, 3], [3, 4], [4, 1]])
    lines = (base[:, None, :] + edges[None]).reshape(-1, 2)
    ls = o3d.geometry.LineSet(o3d.utility.Vector3dVector(pts), o3d.utility.Vector2iVector(lines))
    ls.colors = o3d.utility.Vector3dVector(np.tile(np.asarray(color, dtype=np.float64), (len(lines), 1)))
    return ls


def trajectory_lines(ego_to_world, color: Sequence[float] = (0.9, 0.1, 0.1), heading: float = 0.0,
                     lift: float = 0.0):
    """A LineSet polyline through the ego positions of ``ego_to_world [T,4,4]`` (or a `Trajectory`); with
    ``heading > 0`` also a tick of that length (metres) along each pose's forward (+x) axis. ``lift`` raises the
    line along each pose's up (+z) axis (the ego origin is on the ground, where a mesh would hide the line)."""
    import open3d as o3d  # start-up time: open3d

    m = np.asarray(getattr(ego_to_world, "ego_to_world", ego_to_world), dtype=np.float64).reshape(-1, 4, 4)
    pos = m[:, :3, 3] + lift * m[:, :3, 2]
    T = len(pos)
    pts = [pos]
    lines = [np.stack([np.arange(T - 1), np.arange(1, T)], -1)] if T > 1 else []
    if heading > 0:
        pts.append(pos + heading * m[:, :3, 0])
        lines.append(np.stack([np.arange(T), T + np.arange(T)], -1))
    pts_all = np.concatenate(pts)
    lines_all = np.concatenate(lines).astype(np.int32) if lines else np.zeros((0, 2), np.int32)
    ls = o3d.geometry.LineSet(o3d.utility.Vector3dVector(pts_all), o3d.utility.Vector2iVector(lines_all))
    ls.colors = o3d.utility.Vector3dVector(np.tile(np.asarray(color, dtype=np.float64), (len(lines_all), 1)))
    return ls


def box_lines(bounds, color: Sequence[float] = (0.5, 0.5, 0.5)):
    """The 12 edges of an axis-aligned box ``[2, 3]`` (e.g. a scene's ``field.bounds``) as a LineSet."""
    import open3d as o3d  # start-up time: open3d

    b = np.asarray(torch.as_tensor(bounds).detach().cpu(), dtype=np.float64).reshape(2, 3)
    box = o3d.geometry.AxisAlignedBoundingBox(b[0], b[1])
    ls = o3d.geometry.LineSet.create_from_axis_aligned_bounding_box(box)
    ls.paint_uniform_color(np.asarray(color, dtype=np.float64))
    return ls
