"""Coloured point clouds: rendered RGB-D of a scene, or a capture episode's RGB-D frames, back-projected.

Everything is in the scene (or capture world) frame: right-handed, z up, metres.

* `rgbd_to_points` — the back-projection itself (numpy);
* `depth_edges` — the pixels along depth discontinuities ("flying pixels"), dropped from rendered clouds;
* `scene_to_point_cloud` — a scene's points from renders (default views `nfldm_sdk.cameras.builders.mesh_color_cameras`);
* `capture_to_point_cloud` — a capture episode's frames fused into one cloud.

    cloud = scene_to_point_cloud(scene)                              # open3d PointCloud with colours
"""
from __future__ import annotations

import numpy as np
import torch

from nfldm_sdk.cameras.builders import mesh_color_cameras
from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.rendering.api import HIT_ALPHA
from nfldm_sdk.sensors.renderer import render_views, resolve_scene

__all__ = ["rgbd_to_points", "depth_edges", "scene_to_point_cloud", "capture_to_point_cloud"]


def rgbd_to_points(rgb: np.ndarray, depth: np.ndarray, K: np.ndarray, cam_to_world: np.ndarray,
                   mask: np.ndarray | None = None, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Back-project RGB-D images to coloured world points.

    Args:
        rgb: ``[V, H, W, 3]`` uint8; depth: ``[V, H, W]`` planar metres (non-finite = no point).
        K: ``[V, 3, 3]`` (or ``[3, 3]``); cam_to_world: ``[V, 4, 4]`` OpenCV camera -> world.
        mask: ``[V, H, W]`` bool, extra pixels to keep (default all).
        stride: keep every `stride`-th pixel along each image axis.
    Returns:
        points ``[P, 3]`` float64 metres and colours ``[P, 3]`` float64 in [0, 1]. Pixel ``(c, r)`` (column, row)
        at planar depth z is the camera point ``z · K^-1 (c + 0.5, r + 0.5, 1)``.
    """
    rgb, depth = np.asarray(rgb), np.asarray(depth, dtype=np.float64)
    V, H, W = depth.shape
    K = np.broadcast_to(np.asarray(K, dtype=np.float64), (V, 3, 3))
    c2w = np.asarray(cam_to_world, dtype=np.float64).reshape(V, 4, 4)
    s = max(1, int(stride))
    rows, cols = np.arange(0, H, s), np.arange(0, W, s)
    d = depth[:, rows][:, :, cols]                                                   # [V, h, w]
    keep = np.isfinite(d) & (d > 0)
    if mask is not None:
        keep &= np.asarray(mask)[:, rows][:, :, cols]
    r, c = np.meshgrid(rows + 0.5, cols + 0.5, indexing="ij")                         # [h, w] pixel centres
    uv1 = np.stack([c, r, np.ones_like(c)], -1)                                       # [h, w, 3]
    pts, cols_out = [], []
    for v in range(V):
        k = keep[v]
        if not k.any():
            continue
        p_cam = (uv1[k] @ np.linalg.inv(K[v]).T) * d[v][k][:, None]                   # [p, 3]
        pts.append(p_cam @ c2w[v, :3, :3].T + c2w[v, :3, 3])
        cols_out.append(rgb[v][rows][:, cols][k].astype(np.float64) / 255.0)
    if not pts:
        return np.zeros((0, 3)), np.zeros((0, 3))
    return np.concatenate(pts), np.concatenate(cols_out)


def _point_cloud(points: np.ndarray, colors: np.ndarray, voxel_size: float | None):
    import open3d as o3d  # start-up time: open3d

    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    pc.colors = o3d.utility.Vector3dVector(colors)
    if voxel_size:
        pc = pc.voxel_down_sample(float(voxel_size))
    return pc


def depth_edges(depth: np.ndarray, max_jump: float) -> np.ndarray:
    """``[..., H, W]`` bool: pixels whose planar depth differs by more than ``max_jump`` × their depth from a 4-neighbour,
    or that border a no-hit (non-finite) pixel — where an upsampled depth map blends foreground and background
    ("flying pixels")."""
    d = np.asarray(depth, dtype=np.float64)
    pad = np.pad(d, [(0, 0)] * (d.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    edge = np.zeros(d.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
            nb = pad[..., dy:dy + d.shape[-2], dx:dx + d.shape[-1]]
            edge |= ~np.isfinite(nb) | (np.abs(nb - d) > max_jump * d)
    return edge & np.isfinite(d)


def scene_to_point_cloud(scene, cameras: Cameras | None = None, *, decoder=None, min_alpha: float = HIT_ALPHA,
                         max_depth_jump: float | None = 0.1, stride: int = 1, voxel_size: float | None = None,
                         batch_size: int = 12, device: torch.device | str | None = None):
    """Coloured points of a scene from rendered RGB-D, back-projected into the scene frame: every pixel with finite
    depth and ``alpha >= min_alpha``, minus the depth edges (`depth_edges` with `max_depth_jump`; None keeps them) —
    the decoder upsamples depth bilinearly, so pixels along silhouettes blend near and far depths into points
    floating in between.

    Args:
        scene: a `NeuralScene` (or `VoxelField` with `decoder`).
        cameras: any batch shape (default: `mesh_color_cameras` at the decoder's training image size).
        min_alpha: opacity threshold (default `nfldm_sdk.rendering.api.HIT_ALPHA`, the threshold below which rendered
            depth is already ``inf``; a larger value keeps only more opaque pixels); max_depth_jump: relative depth
            step that marks an edge pixel.
        stride: keep every `stride`-th pixel; voxel_size: optional voxel down-sampling (metres).
    Returns:
        ``open3d.geometry.PointCloud`` with colours.
    """
    src = resolve_scene(scene, decoder)
    if cameras is None:
        h, _ = getattr(src.decoder.config, "image_size", (128, 128))
        cameras = mesh_color_cameras(src.field.bounds.detach().cpu(), int(h))
    cams = cameras.flatten()
    out = render_views(src, cams.reshape(1, -1), batch_size=batch_size, device=device, check_overlap=False)
    alpha, depth = out.alpha[0].cpu().numpy(), out.depth[0].cpu().numpy()
    keep = alpha >= min_alpha
    if max_depth_jump is not None:
        keep &= ~depth_edges(depth, max_depth_jump)
    pts, cols = rgbd_to_points(out.rgb[0].cpu().numpy(), depth, out.K, out.cam_to_world[0], keep, stride)
    return _point_cloud(pts, cols, voxel_size)


def _select(n: int, which, what: str) -> list[int]:
    if which is None:
        return list(range(n))
    if isinstance(which, slice):
        return list(range(n))[which]
    if isinstance(which, (int, np.integer)):
        which = [int(which)]
    idx = [int(i) for i in which]
    bad = [i for i in idx if not -n <= i < n]
    if bad:
        raise IndexError(f"{what} {bad} out of range: there are {n}")
    return [i % n for i in idx]


def capture_to_point_cloud(episode, frames=None, cameras=None, *, stride: int = 4, K: np.ndarray | None = None,
                           max_depth: float | None = None, voxel_size: float | None = None):
    """Fuse a capture episode's RGB-D frames into one coloured point cloud in the capture's world frame.

    Args:
        episode: duck-typed capture episode: ``rgb [T,N,H,W,3]`` uint8, ``depth [T,N,H,W]`` planar metres,
            ``cam_to_world [T,N,4,4]`` (e.g. ``sim_bridge.open_store(p).episode(0)``; lazily indexed arrays work).
        frames: frame indices (list, slice or int; default all).
        cameras: camera indices (default all).
        stride: keep every `stride`-th pixel along each image axis.
        K: ``[N,3,3]`` or ``[3,3]`` intrinsics; default ``episode.K`` or ``episode.rig.K()`` when the episode has
            them (a capture store keeps the rig at the store level: pass ``K=store.rig.K()``).
        max_depth: drop points farther than this (metres).
        voxel_size: voxel down-sampling of the fused cloud (metres).
    Returns:
        ``open3d.geometry.PointCloud`` with colours.
    """
    for attr in ("rgb", "depth", "cam_to_world"):
        if not hasattr(episode, attr):
            raise TypeError(f"{type(episode).__name__} has no .{attr}: capture_to_point_cloud needs a capture episode "
                            "(rgb, depth, cam_to_world arrays), e.g. sim_bridge.open_store(p).episode(0)")
    if K is None:
        K = getattr(episode, "K", None)
        if K is None and hasattr(episode, "rig"):
            K = episode.rig.K()
        if K is None:
            raise ValueError("the episode carries no intrinsics: pass K= (e.g. K=store.rig.K())")
    K = np.asarray(K, dtype=np.float64)
    c2w_all = np.asarray(episode.cam_to_world, dtype=np.float64)                      # [T, N, 4, 4]
    T, N = c2w_all.shape[:2]
    ts, ns = _select(T, frames, "frames"), _select(N, cameras, "cameras")
    KN = np.broadcast_to(K, (N, 3, 3))[ns]                                             # [n, 3, 3]
    pts, cols = [], []
    for t in ts:
        rgb = np.asarray(episode.rgb[t])[ns]                                           # [n, H, W, 3]
        depth = np.asarray(episode.depth[t])[ns]                                       # [n, H, W]
        mask = None if max_depth is None else depth <= max_depth
        p, c = rgbd_to_points(rgb, depth, KN, c2w_all[t, ns], mask, stride)
        pts.append(p)
        cols.append(c)
    return _point_cloud(np.concatenate(pts), np.concatenate(cols), voxel_size)
