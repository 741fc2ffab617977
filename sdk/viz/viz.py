"""Open3D views of scenes and captures: meshes, point clouds, camera frustums, trajectories, windows/screenshots.

Everything is in the scene (or capture world) frame: right-handed, z up, metres.

* `field_to_mesh` — marching cubes on the density grid, coloured by the decoded appearance;
* `scene_to_point_cloud` — coloured points from rendered RGB-D (depth back-projected);
* `capture_to_point_cloud` — the same from a capture episode's RGB-D frames;
* `camera_frustum_lines`, `trajectory_lines` — LineSets for cameras and ego paths;
* `show` — an interactive window, or with ``screenshot=PATH`` an offscreen render to a PNG (EGL; works headless).

Mesh colours: the stage-1 decoder is a 2D CNN over rendered feature maps, so features cannot be decoded per
vertex. Instead the scene is rendered from a set of virtual cameras (`mesh_color_cameras`: the capture rig at the
scene origin, four oblique views from above the box edges and one top-down view), every vertex is projected into
every view, and it takes the colour of the nearest view that actually sees it: the vertex faces the camera (its
normal points towards the camera centre) and its planar depth agrees with the rendered depth at that pixel within
one voxel. Vertices no view sees are grey. Without a decoder vertices are
coloured by height.

Example::

    mesh = field_to_mesh(scene)                                      # coloured TriangleMesh, metres
    show([mesh, trajectory_lines(traj), camera_frustum_lines(rig.cameras(traj.ego_to_world[::5]))],
         screenshot="scene.png")
"""
from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from nfldm_sdk.errors import NfldmError
from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.rendering.api import HIT_ALPHA
from nfldm_sdk.cameras.rig import CameraRig

__all__ = ["field_to_mesh", "default_level", "mesh_color_cameras", "scene_to_point_cloud", "capture_to_point_cloud",
           "rgbd_to_points", "depth_edges", "scene_geometries", "show_scene", "camera_frustum_lines", "trajectory_lines", "box_lines", "show", "has_display",
           "ViewError", "VIEWS", "UNSEEN_GREY"]

#: Colour of mesh vertices that no colouring view sees.
UNSEEN_GREY = (0.6, 0.6, 0.6)

#: Named viewpoints for `show`: ``front`` (the direction from the look-at point towards the eye) and ``up``.
#: ``above_behind`` looks at the scene from behind the ego (−x) and above, the way a chase camera does.
VIEWS = {
    "above_behind": ((-1.0, 0.0, 0.9), (0.0, 0.0, 1.0)),
    "top": ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0)),
    "side": ((0.0, -1.0, 0.35), (0.0, 0.0, 1.0)),
    "front": ((1.0, 0.0, 0.6), (0.0, 0.0, 1.0)),
}


class ViewError(NfldmError, RuntimeError):
    """No window or offscreen context could be opened; the message says what to do."""


def _o3d():
    import open3d as o3d  # imported lazily: Open3D is heavy and not needed to render frames

    return o3d


def _field_of(scene_or_field) -> VoxelField:
    field = scene_or_field if isinstance(scene_or_field, VoxelField) else getattr(scene_or_field, "field", None)
    if not isinstance(field, VoxelField):
        raise TypeError(f"expected a NeuralScene or a VoxelField, got {type(scene_or_field).__name__}")
    if field.is_batched:
        raise ValueError(f"expected one scene, got a batched field of {field.batch_size}: index it (field[i])")
    return field


# ============================================================================================ meshes
def default_level(field: VoxelField) -> float:
    """The default iso-level (σ, 1/m) of `field_to_mesh`: ``ln 2 / voxel size`` — where one voxel of the field
    lets half the light through, a physical "surface" that does not depend on the scene's density scale."""
    return float(math.log(2.0) / field.voxel_size.mean())


def mesh_color_cameras(bounds: torch.Tensor, size: int = 128, eye_height: float = 1.6) -> Cameras:
    """Views ``[11]`` used to colour meshes: the capture rig at the scene origin (6; the road-level views the
    decoder was trained on), four oblique views from above the middle of each box edge looking at the centre, and
    one top-down view covering the box. ``size`` × ``size`` pixels."""
    b = torch.as_tensor(bounds, dtype=torch.float64).reshape(2, 3)
    lo, hi = b[0].numpy(), b[1].numpy()
    c = (lo + hi) / 2
    ext = hi - lo
    rig = CameraRig.preset("capture", size, size)
    origin = np.eye(4)
    origin[2, 3] = eye_height - 1.6                                   # the rig is mounted 1.6 m above the ego origin
    mats = [m for m in origin @ rig.cam_to_ego()]
    Ks = [k for k in rig.K()]
    top = lo[2] + ext[2] + max(ext[0], ext[1]) * 0.35                 # above the box
    for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        eye = np.array([c[0] + dx * ext[0] / 2, c[1] + dy * ext[1] / 2, top])
        mats.append(_look_at(eye, np.array([c[0], c[1], lo[2]])))
        Ks.append(_K(75.0, size))
    h = (max(ext[0], ext[1]) / 2) / math.tan(math.radians(40.0)) + hi[2]   # 80° view covering the box from above
    mats.append(_look_at(np.array([c[0], c[1], h]), np.array([c[0], c[1], lo[2]]), up_hint=np.array([1.0, 0.0, 0.0])))
    Ks.append(_K(80.0, size))
    return Cameras(torch.tensor(np.stack(Ks), dtype=torch.float32), torch.tensor(np.stack(mats), dtype=torch.float32),
                   size, size)


def _K(hfov_deg: float, size: int) -> np.ndarray:
    f = (size / 2) / math.tan(math.radians(hfov_deg) / 2)
    return np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])


def _look_at(eye: np.ndarray, target: np.ndarray, up_hint: np.ndarray | None = None) -> np.ndarray:
    """OpenCV ``cam_to_world [4,4]`` at `eye` looking at `target` (image up towards +z, or towards `up_hint` when
    looking straight down)."""
    z = target - eye
    z = z / np.linalg.norm(z)
    up = np.array([0.0, 0.0, 1.0]) if up_hint is None else up_hint
    x = np.cross(z, up)                                               # OpenCV x (right) = forward × up
    if np.linalg.norm(x) < 1e-6:
        x = np.cross(z, np.array([1.0, 0.0, 0.0]))
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)                                                # y (down) = z × x
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, eye
    return m


def _height_colors(v: np.ndarray) -> np.ndarray:
    """``[P, 3]`` colours from blue (low) through green to red (high) by z."""
    z = v[:, 2]
    s = (z - z.min()) / max(float(np.ptp(z)), 1e-9)
    return np.stack([np.clip(2 * s - 1, 0, 1), 1 - np.abs(2 * s - 1), np.clip(1 - 2 * s, 0, 1)], -1)


@torch.no_grad()
def _appearance_colors(verts: np.ndarray, normals: np.ndarray, field: VoxelField, scene, decoder, size: int | None,
                       batch_size: int, device) -> tuple[np.ndarray, np.ndarray]:
    """Colours ``[P, 3]`` in [0, 1] and a seen mask ``[P]`` from renders of `mesh_color_cameras` (module docstring)."""
    from nfldm_sdk.rendering.sizes import MAX_SIZE_RATIO, training_image_size
    from nfldm_sdk.sensors.sensors import render_views, resolve_scene

    src = resolve_scene(scene if not isinstance(scene, VoxelField) else field, decoder)
    if size is None:                    # the largest square the decoder renders without departing from its training
        trained = training_image_size(src.decoder)
        size = 128 if trained is None else int(MAX_SIZE_RATIO * min(trained))
    f = int(src.decoder.config.downsample)
    size = max(f, size - size % f)
    cams = mesh_color_cameras(field.bounds.detach().cpu(), size)                    # [V]
    out = render_views(src, cams.reshape(1, -1), batch_size=batch_size, device=device, check_overlap=False)
    rgb = out.rgb[0].cpu().numpy()                                                   # [V, H, W, 3]
    depth = out.depth[0].cpu().numpy()                                               # [V, H, W]
    uv, z = cams.to(dtype=torch.float64).world_to_pixels(torch.as_tensor(verts, dtype=torch.float64))  # [V,P,2], [V,P]
    uv, z = uv.numpy(), z.numpy()
    uv = np.where(np.isfinite(uv) & (z[..., None] > 1e-3), uv, -1.0)             # behind the camera: off-image
    col = np.floor(uv[..., 0]).astype(np.int64)
    row = np.floor(uv[..., 1]).astype(np.int64)
    inside = (z > 1e-3) & (col >= 0) & (col < size) & (row >= 0) & (row < size)
    colc, rowc = np.clip(col, 0, size - 1), np.clip(row, 0, size - 1)
    V = len(cams)
    d_at = depth[np.arange(V)[:, None], rowc, colc]                                  # [V, P] rendered depth there
    tol = float(field.voxel_size.max())
    centres = cams.centers.double().numpy()                                          # [V, 3]
    facing = np.einsum("pk,vpk->vp", normals, centres[:, None] - verts[None]) > 0    # [V, P] front faces only
    seen = inside & facing & np.isfinite(d_at) & (np.abs(d_at - z) < tol)           # [V, P]
    score = np.where(seen, z, np.inf)                                                # nearest view wins
    best = np.argmin(score, axis=0)                                                  # [P]
    any_seen = seen.any(axis=0)
    P = len(verts)
    colors = rgb[best, rowc[best, np.arange(P)], colc[best, np.arange(P)]].astype(np.float64) / 255.0
    colors[~any_seen] = UNSEEN_GREY
    return colors, any_seen


def field_to_mesh(scene_or_field, level: float | None = None, *, decoder=None, colors: str = "auto",
                  color_size: int | None = None, batch_size: int = 12, device: torch.device | str | None = None):
    """Iso-surface of the density grid as an Open3D ``TriangleMesh`` in scene metres.

    Marching cubes (``skimage.measure.marching_cubes``) runs on the voxel-centre samples of ``density`` padded by
    one zero voxel on every side, so surfaces close at the box faces (outside the box σ = 0, as the renderer sees
    it). Vertex ``(i, j, k)`` of the padded grid maps to ``min + (ijk − 0.5) · voxel_size`` (VoxelField's voxel-centre
    convention). A box of σ inside and 0 outside meshed at ``level = σ/2`` has its faces exactly on the voxel faces.

    Args:
        scene_or_field: a `NeuralScene` or an unbatched `VoxelField`.
        level: iso-level σ in 1/m (default `default_level`: ``ln 2 / voxel size``).
        decoder: a stage-1 decoder (default: the scene's) for appearance colours.
        colors: ``"auto"`` (appearance when a decoder is available, else height), ``"appearance"``, ``"height"``
            or ``"none"`` (see the module docstring for how appearance colours are found).
        color_size: image size of the colouring views (default: twice the decoder's training size, 128 for a
            64×64 model — the largest it supports, `nfldm_sdk.rendering.sizes`); batch_size, device: their rendering.
    Returns:
        ``open3d.geometry.TriangleMesh`` with vertex normals (pointing out of dense regions) and vertex colours.
    Raises:
        ValueError: the density never crosses `level` (an empty scene or a level above every density).
    """
    from skimage.measure import marching_cubes

    o3d = _o3d()
    field = _field_of(scene_or_field)
    level = default_level(field) if level is None else float(level)
    dens = field.density.detach().float().cpu().numpy()                               # [Z, Y, X]
    if not (min(float(dens.min()), 0.0) < level < float(dens.max())):                # padding adds zeros
        raise ValueError(f"the density ({dens.min():.3g}…{dens.max():.3g} /m) never crosses level {level:.3g}: the scene "
                         "is empty at that level; pass a lower level")
    vol = np.pad(dens, 1)                                                            # [Z+2, Y+2, X+2], zero outside
    verts_zyx, faces, _, _ = marching_cubes(vol, level=level)                          # vertices in (z, y, x) index space
    vs = field.voxel_size.detach().double().cpu().numpy()                              # [3] (x, y, z)
    lo = field.bounds[0].detach().double().cpu().numpy()
    verts = lo + (verts_zyx[:, ::-1].astype(np.float64) - 0.5) * vs                    # [P, 3] (x, y, z) metres
    # skimage winds the faces with normals towards higher values in its (z, y, x) index space; reordering the axes to
    # (x, y, z) is a mirror image, which turns them outward (towards lower density). tests/test_viz_export checks it.
    faces = faces.astype(np.int32)
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(verts), o3d.utility.Vector3iVector(faces))
    mesh.compute_vertex_normals()
    dec = decoder if decoder is not None else getattr(scene_or_field, "decoder", None)
    mode = colors
    if mode == "auto":
        mode = "appearance" if dec is not None else "height"
    if mode == "appearance":
        if dec is None:
            raise ValueError("appearance colours need a decoder: pass decoder= or a NeuralScene with one, or colors='height'")
        c, _ = _appearance_colors(verts, np.asarray(mesh.vertex_normals), field, scene_or_field, dec, color_size,
                                  batch_size, device)
        mesh.vertex_colors = o3d.utility.Vector3dVector(c)
    elif mode == "height":
        mesh.vertex_colors = o3d.utility.Vector3dVector(_height_colors(verts))
    elif mode != "none":
        raise ValueError(f"colors must be 'auto', 'appearance', 'height' or 'none', got {colors!r}")
    return mesh


# ============================================================================================ point clouds
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
    o3d = _o3d()
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
    from nfldm_sdk.sensors.sensors import render_views, resolve_scene

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


# ============================================================================================ line sets
def camera_frustum_lines(cameras: Cameras, scale: float = 1.0, color: Sequence[float] = (0.1, 0.3, 0.9)):
    """A LineSet drawing each camera as a pyramid: its centre joined to the four image corners at planar depth
    `scale` metres, plus the image rectangle. Cameras of any batch shape."""
    o3d = _o3d()
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
    o3d = _o3d()
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
    o3d = _o3d()
    b = np.asarray(torch.as_tensor(bounds).detach().cpu(), dtype=np.float64).reshape(2, 3)
    box = o3d.geometry.AxisAlignedBoundingBox(b[0], b[1])
    ls = o3d.geometry.LineSet.create_from_axis_aligned_bounding_box(box)
    ls.paint_uniform_color(np.asarray(color, dtype=np.float64))
    return ls


def scene_geometries(scene, trajectory=None, rig: CameraRig | None = None, *, geometry: str = "mesh",
                     level: float | None = None, frustum_every: int = 5, device: torch.device | str | None = None,
                     decoder=None) -> list:
    """What `show_scene` draws: the scene as a mesh (`field_to_mesh`) or points (`scene_to_point_cloud`), its box,
    and optionally the ego `trajectory` (drawn 1 m above the ground, where a mesh does not hide it; heading ticks)
    with the `rig`'s camera frustums (default: the capture rig) every `frustum_every` ticks — or the rig at the scene
    origin when there is no trajectory."""
    if geometry not in ("mesh", "points"):
        raise ValueError(f"geometry must be 'mesh' or 'points', got {geometry!r}")
    field = _field_of(scene)
    if geometry == "points":
        geoms = [scene_to_point_cloud(scene, decoder=decoder, device=device)]
    else:
        geoms = [field_to_mesh(scene, level, decoder=decoder, device=device)]
    geoms.append(box_lines(field.bounds))
    if trajectory is not None:
        geoms.append(trajectory_lines(trajectory, heading=1.0, lift=1.0))
        cam_rig = rig if rig is not None else CameraRig.preset("capture", 64, 64)
        e2w = np.asarray(getattr(trajectory, "ego_to_world", trajectory), dtype=np.float64).reshape(-1, 4, 4)
        geoms.append(camera_frustum_lines(cam_rig.cameras(e2w[::max(1, int(frustum_every))]), scale=1.0))
    elif rig is not None:
        geoms.append(camera_frustum_lines(rig.cameras(np.eye(4)), scale=1.0))
    return geoms


def show_scene(scene, trajectory=None, rig: CameraRig | None = None, *, geometry: str = "mesh",
               level: float | None = None, screenshot: str | Path | None = None, width: int = 1280, height: int = 720,
               view="above_behind", frustum_every: int = 5, device: torch.device | str | None = None,
               decoder=None) -> Path | None:
    """`show` the `scene_geometries` of a scene (mesh or points, box, optional trajectory and camera frustums) in a
    window, or offscreen into the PNG `screenshot` (then its path is returned; else None)."""
    geoms = scene_geometries(scene, trajectory, rig, geometry=geometry, level=level, frustum_every=frustum_every,
                             device=device, decoder=decoder)
    return show(geoms, screenshot, width=width, height=height, view=view)


# ============================================================================================ windows
def has_display() -> bool:
    """Whether an interactive window can open: X11/Wayland on Linux (``DISPLAY``/``WAYLAND_DISPLAY``); macOS and
    Windows always have one."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


@dataclass(frozen=True)
class _View:
    front: tuple[float, float, float]
    up: tuple[float, float, float]


def _resolve_view(view) -> _View:
    if isinstance(view, str):
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}: choose one of {', '.join(VIEWS)} or pass (front, up) vectors")
        return _View(*VIEWS[view])
    front, up = view
    return _View(tuple(front), tuple(up))


def _setup(vis, geometries, view, background, point_size, zoom) -> None:
    for g in geometries:
        vis.add_geometry(g)
    opt = vis.get_render_option()
    opt.background_color = np.asarray(background, dtype=np.float64)
    opt.point_size = float(point_size)
    opt.mesh_show_back_face = True
    opt.line_width = 2.0
    v = _resolve_view(view)
    bbox = geometries[0].get_axis_aligned_bounding_box()
    for g in geometries[1:]:
        bbox += g.get_axis_aligned_bounding_box()
    ctl = vis.get_view_control()
    ctl.set_lookat(bbox.get_center())
    ctl.set_front(np.asarray(v.front, dtype=np.float64) / np.linalg.norm(v.front))
    ctl.set_up(np.asarray(v.up, dtype=np.float64))
    ctl.set_zoom(float(zoom))


def show(geometries, screenshot: str | Path | None = None, *, width: int = 1280, height: int = 720,
         view="above_behind", background: Sequence[float] = (1.0, 1.0, 1.0), point_size: float = 2.0,
         zoom: float = 0.55, title: str = "nfldm") -> Path | None:
    """Show Open3D geometries in a window, or render them offscreen to a PNG.

    Args:
        geometries: one geometry or a list (meshes, point clouds, line sets).
        screenshot: write a ``width`` × ``height`` PNG here instead of opening a window (offscreen through EGL:
            works without a display), then return its path.
        view: a `VIEWS` name (default ``above_behind``: from behind the ego and above) or ``(front, up)`` vectors;
            the view looks at the centre of all geometries.
        background: RGB in [0, 1]; point_size: pixels; zoom: Open3D zoom (smaller = closer).
    Returns:
        the PNG path with `screenshot`, else None (after the window is closed).
    Raises:
        ViewError: no display for a window (use `screenshot`), or no offscreen context.
    """
    o3d = _o3d()
    geoms = list(geometries) if isinstance(geometries, (list, tuple)) else [geometries]
    if not geoms:
        raise ValueError("nothing to show: pass at least one geometry")
    if screenshot is None and not has_display():
        raise ViewError("no display is available for an interactive Open3D window (DISPLAY/WAYLAND_DISPLAY unset): "
                        "render offscreen with show(..., screenshot='view.png') (CLI: --screenshot view.png), or "
                        "forward a display (ssh -X)")
    vis = o3d.visualization.Visualizer()
    if not vis.create_window(window_name=title, width=int(width), height=int(height), visible=screenshot is None):
        raise ViewError("Open3D could not open a " + ("window" if screenshot is None else "offscreen (EGL) context") +
                        ": check the graphics drivers (headless rendering needs libEGL and Mesa: apt-get install "
                        "libegl1 libgl1)")
    try:
        _setup(vis, geoms, view, background, point_size, zoom)
        if screenshot is None:
            vis.run()
            return None
        vis.poll_events()
        vis.update_renderer()
        img = np.asarray(vis.capture_screen_float_buffer(do_render=True))             # [H, W, 3] float in [0, 1]
        if img.size == 0:
            raise ViewError("the offscreen render came back empty: Open3D's EGL context did not render")
        import imageio.v3 as iio

        path = Path(screenshot)
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
        return path
    finally:
        vis.destroy_window()
