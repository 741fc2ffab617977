"""Coloured point clouds: rendered RGB-D of a scene, or a capture episode's RGB-D frames, back-projected.

Everything is in the scene (or capture world) frame: right-handed, z up, metres.

* `rgbd_to_points` / `rgbd_to_labelled_points` — the back-projection itself, the latter keeping each point's
  semantic tag (the label of the pixel it came from). Every camera model back-projects through its own rays
  (`Cameras.pixels_to_world`: pinhole ``K^-1``, fisheye the model's inverse projection), so pass the camera
  ``model``/``distortion`` (or the views' `Cameras`) for fisheye depth maps — K alone is a pinhole;
* `frame_points` — the points of rendered `Frame` s, each with its own K, camera model and pose;
* `depth_edges` — the pixels along depth discontinuities ("flying pixels"), dropped from rendered clouds;
* `scene_points` — a scene's points, colours and labels from renders (default views
  `nfldm_sdk.cameras.builders.mesh_color_cameras`) as `ScenePoints`; `scene_to_point_cloud` the same as Open3D;
* `capture_to_point_cloud` — a capture episode's frames fused into one cloud (camera models from its rig);
* `voxel_down_sample` — labelled points thinned to one per voxel (mean position and colour, majority label).

Clouds can be coloured by appearance (``color_by="rgb"``) or by semantic class (``color_by="class"``: CARLA's
CityScapes palette, `nfldm_sdk.labels.classes.CARLA_PALETTE`). Open3D's PointCloud has no label field: the labels
travel in `ScenePoints` and into PLY files (`nfldm_sdk.viz.ply`).

    cloud = scene_to_point_cloud(scene)                              # open3d PointCloud with colours
    pts = scene_points(scene)                                        # points [P,3], colors [P,3], labels [P] uint8
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nfldm_sdk.cameras.builders import mesh_color_cameras
from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.labels.classes import colorize_tags
from nfldm_sdk.models.semantic_head import require_semantic_head
from nfldm_sdk.rendering.api import HIT_ALPHA
from nfldm_sdk.sensors.renderer import render_views, resolve_scene

__all__ = ["rgbd_to_points", "rgbd_to_labelled_points", "frame_points", "depth_edges", "ScenePoints", "scene_points",
           "scene_to_point_cloud", "capture_to_point_cloud", "voxel_down_sample", "COLOR_BY"]

#: ``color_by`` choices: appearance, or semantic class in CARLA's palette.
COLOR_BY = ("rgb", "class")


@dataclass(eq=False)
class ScenePoints:
    """A point cloud with optional per-point labels (host numpy arrays, scene frame: x forward, y left, z up).

    Attributes:
        points: ``[P, 3]`` float64 positions, metres.
        colors: ``[P, 3]`` float64 RGB in [0, 1] (the rendered/captured appearance).
        labels: ``[P]`` uint8 CARLA semantic tag of the pixel each point came from, or None without labels.
    """

    points: np.ndarray
    colors: np.ndarray
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.points)

    def class_colors(self) -> np.ndarray:
        """``[P, 3]`` float64 in [0, 1]: each point's label in `nfldm_sdk.labels.classes.CARLA_PALETTE`."""
        if self.labels is None:
            raise ValueError("these points carry no labels: render them with a semantic model (or use color_by='rgb')")
        return colorize_tags(self.labels).astype(np.float64) / 255.0

    def to_open3d(self, color_by: str = "rgb"):
        """An ``open3d.geometry.PointCloud`` coloured by appearance (``"rgb"``) or class (``"class"``); Open3D keeps
        no labels."""
        return _point_cloud(self.points, _colors(self, color_by), None)


def _colors(pts: ScenePoints, color_by: str) -> np.ndarray:
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {COLOR_BY}, got {color_by!r}")
    return pts.class_colors() if color_by == "class" else pts.colors


def _view_cameras(K, cam_to_world, V: int, H: int, W: int, model, distortion) -> Cameras:
    """``Cameras [V]`` float64 of the views: `K` itself when it is a `Cameras` (any batch shape, flattened), else
    built from ``K`` ``[V,3,3]``/``[3,3]``, ``cam_to_world [V,4,4]``, `model` (one name or V names) and `distortion`
    (``[V,4]``/``[4]``; None: zeros) — validated there (`Cameras`)."""
    if isinstance(K, Cameras):
        cams = K.reshape(1) if not K.batch_shape else K.flatten()
        if cams.batch_shape[0] != V or (cams.width, cams.height) != (W, H):
            raise ValueError(f"the cameras are {cams.batch_shape[0]} of {cams.width}x{cams.height}, the depth maps "
                             f"{V} of {W}x{H}: pass one camera per depth map, of its size")
        return cams.to(device="cpu", dtype=torch.float64)
    if cam_to_world is None:
        raise ValueError("cam_to_world is needed unless K is a Cameras object")
    Kv = torch.as_tensor(np.broadcast_to(np.asarray(K, dtype=np.float64), (V, 3, 3)).copy())
    c2w = torch.as_tensor(np.asarray(cam_to_world, dtype=np.float64).reshape(V, 4, 4).copy())
    names = model if isinstance(model, str) else list(model)
    if names == "pinhole" and distortion is None:
        return Cameras(Kv, c2w, W, H)
    dist = torch.as_tensor(np.broadcast_to(np.zeros(4) if distortion is None
                                           else np.asarray(distortion, dtype=np.float64), (V, 4)).copy())
    return Cameras(Kv, c2w, W, H, model=names, distortion=dist)


def _backproject(depth: np.ndarray, K, cam_to_world: np.ndarray | None, mask: np.ndarray | None, stride: int,
                 model="pinhole", distortion=None) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """World points ``[P, 3]`` of the kept pixels and their ``(view, row, column)`` indices (`rgbd_to_points`)."""
    depth = np.asarray(depth, dtype=np.float64)
    V, H, W = depth.shape
    cams = _view_cameras(K, cam_to_world, V, H, W, model, distortion)
    s = max(1, int(stride))
    rows, cols = np.arange(0, H, s), np.arange(0, W, s)
    d = depth[:, rows][:, :, cols]                                                   # [V, h, w]
    keep = np.isfinite(d) & (d > 0)
    if mask is not None:
        keep &= np.asarray(mask)[:, rows][:, :, cols]
    r, c = np.meshgrid(rows + 0.5, cols + 0.5, indexing="ij")                         # [h, w] pixel centres
    uv = np.stack([c, r], -1)                                                         # [h, w, 2] (u = column)
    ri, ci = np.meshgrid(rows, cols, indexing="ij")                                   # [h, w] pixel indices
    pts, idx = [], []
    for v in range(V):
        k = keep[v]
        if not k.any():
            continue
        p = cams[v].pixels_to_world(torch.from_numpy(uv[k]), torch.from_numpy(d[v][k])).numpy()   # [p, 3]
        ok = np.isfinite(p).all(-1)                  # a fisheye pixel beyond 90° off axis has no ray (NaN)
        pts.append(p[ok])
        idx.append(np.stack([np.full(int(ok.sum()), v), ri[k][ok], ci[k][ok]]))
    if not pts:
        empty = np.zeros(0, np.int64)
        return np.zeros((0, 3)), (empty, empty, empty)
    v_i, r_i, c_i = np.concatenate(idx, axis=1)
    return np.concatenate(pts), (v_i, r_i, c_i)


def rgbd_to_points(rgb: np.ndarray, depth: np.ndarray, K, cam_to_world: np.ndarray | None = None,
                   mask: np.ndarray | None = None, stride: int = 1, *, model="pinhole",
                   distortion: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Back-project RGB-D images to coloured world points, for every camera model.

    Args:
        rgb: ``[V, H, W, 3]`` uint8; depth: ``[V, H, W]`` planar metres (non-finite = no point).
        K: ``[V, 3, 3]`` (or ``[3, 3]``) intrinsics, or the views' `Cameras` (V of them, any batch shape; they
            carry pose, model and distortion, and `cam_to_world`, `model`, `distortion` are then ignored).
        cam_to_world: ``[V, 4, 4]`` OpenCV camera -> world (needed unless `K` is a `Cameras`).
        mask: ``[V, H, W]`` bool, extra pixels to keep (default all).
        stride: keep every `stride`-th pixel along each image axis.
        model: the camera model, one name or V names (``"pinhole"``, ``"equidistant"``, ``"opencv_fisheye"``;
            `nfldm_sdk.cameras.projection`); distortion: ``[V, 4]`` or ``[4]`` (k1..k4) of ``opencv_fisheye``.
    Returns:
        points ``[P, 3]`` float64 metres and colours ``[P, 3]`` float64 in [0, 1]. Pixel ``(c, r)`` (column, row)
        at planar depth z is the camera point ``z · d`` with ``d`` its ray direction scaled to unit z
        (`Cameras.pixels_to_world`): ``K^-1 (c + 0.5, r + 0.5, 1)`` for a pinhole, the model's inverse projection
        for a fisheye.
    """
    pts, (v, r, c) = _backproject(depth, K, cam_to_world, mask, stride, model, distortion)
    return pts, np.asarray(rgb)[v, r, c].astype(np.float64) / 255.0


def rgbd_to_labelled_points(rgb: np.ndarray, depth: np.ndarray, tags: np.ndarray, K,
                            cam_to_world: np.ndarray | None = None, mask: np.ndarray | None = None, stride: int = 1, *,
                            model="pinhole", distortion: np.ndarray | None = None) -> ScenePoints:
    """`rgbd_to_points` keeping each point's label: `tags` ``[V, H, W]`` uint8 (CARLA tags of the pixels) ->
    `ScenePoints` whose ``labels [P]`` are the tags of the pixels the points came from (same order as the points)."""
    pts, (v, r, c) = _backproject(depth, K, cam_to_world, mask, stride, model, distortion)
    return ScenePoints(pts, np.asarray(rgb)[v, r, c].astype(np.float64) / 255.0,
                       np.asarray(tags, dtype=np.uint8)[v, r, c])


def frame_points(frames, stride: int = 1, mask_alpha: float | None = None) -> ScenePoints:
    """Points of rendered `Frame` s (one list, e.g. a tick of `render_trajectory`), back-projected with each frame's
    own ``K``, ``camera_model``, ``distortion`` and ``cam_to_world``; labels when every frame has them. Pixels with
    ``alpha < mask_alpha`` are dropped when `mask_alpha` is given (default: every finite depth)."""
    frames = list(frames)
    if not frames:
        raise ValueError("no frames to back-project")
    labelled = all(f.semantic is not None for f in frames)
    parts = []
    for f in frames:
        mask = None if mask_alpha is None else (f.alpha >= mask_alpha)[None]
        args = (f.rgb[None], f.depth[None])
        kw = dict(model=f.camera_model, distortion=f.distortion)
        if labelled:
            parts.append(rgbd_to_labelled_points(*args, f.semantic[None], f.K, f.cam_to_world[None], mask, stride, **kw))
        else:
            parts.append(ScenePoints(*rgbd_to_points(*args, f.K, f.cam_to_world[None], mask, stride, **kw)))
    return ScenePoints(np.concatenate([p.points for p in parts]), np.concatenate([p.colors for p in parts]),
                       np.concatenate([p.labels for p in parts]) if labelled else None)


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


def scene_points(scene, cameras: Cameras | None = None, *, decoder=None, min_alpha: float = HIT_ALPHA,
                 max_depth_jump: float | None = 0.1, stride: int = 1, voxel_size: float | None = None,
                 batch_size: int = 12, device: torch.device | str | None = None) -> ScenePoints:
    """Points of a scene from rendered RGB-D, back-projected into the scene frame: every pixel with finite depth and
    ``alpha >= min_alpha``, minus the depth edges (`depth_edges` with `max_depth_jump`; None keeps them) — the
    decoder upsamples depth bilinearly, so pixels along silhouettes blend near and far depths into points floating
    in between. With a semantic head each point keeps the rendered label of its pixel.

    Args:
        scene: a `NeuralScene` (or `VoxelField` with `decoder`).
        cameras: any batch shape (default: `mesh_color_cameras` at the decoder's training image size).
        min_alpha: opacity threshold (default `nfldm_sdk.rendering.api.HIT_ALPHA`, the threshold below which rendered
            depth is already ``inf``; a larger value keeps only more opaque pixels); max_depth_jump: relative depth
            step that marks an edge pixel.
        stride: keep every `stride`-th pixel; voxel_size: optional voxel down-sampling (metres, `voxel_down_sample`).
    Returns:
        `ScenePoints` (points and colours; labels ``[P]`` uint8 CARLA tags, or None without a semantic head).
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
    rgb = out.rgb[0].cpu().numpy()
    if out.semantic is None:                 # the cameras carry pose, model and distortion (fisheye views too)
        pts = ScenePoints(*rgbd_to_points(rgb, depth, cams, None, keep, stride))
    else:
        pts = rgbd_to_labelled_points(rgb, depth, out.semantic[0].cpu().numpy(), cams, None, keep, stride)
    return voxel_down_sample(pts, voxel_size) if voxel_size else pts


def scene_to_point_cloud(scene, cameras: Cameras | None = None, *, decoder=None, min_alpha: float = HIT_ALPHA,
                         max_depth_jump: float | None = 0.1, stride: int = 1, voxel_size: float | None = None,
                         batch_size: int = 12, device: torch.device | str | None = None, color_by: str = "rgb"):
    """`scene_points` as an ``open3d.geometry.PointCloud`` coloured by appearance (``color_by="rgb"``) or by
    semantic class in CARLA's palette (``"class"``; `SemanticsUnavailableError` without a semantic head). Open3D's
    cloud has no labels: use `scene_points` (or `nfldm_sdk.viz.export.export_points`) to keep them."""
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {COLOR_BY}, got {color_by!r}")
    src = resolve_scene(scene, decoder)
    if color_by == "class":
        require_semantic_head(getattr(src.decoder, "semantic_head", None))
    if voxel_size and color_by == "rgb":      # Open3D's own down-sampling: the cloud is unlabelled anyway
        pts = scene_points(src, cameras, min_alpha=min_alpha, max_depth_jump=max_depth_jump, stride=stride,
                           batch_size=batch_size, device=device)
        return _point_cloud(pts.points, pts.colors, voxel_size)
    pts = scene_points(src, cameras, min_alpha=min_alpha, max_depth_jump=max_depth_jump, stride=stride,
                       voxel_size=voxel_size, batch_size=batch_size, device=device)
    return pts.to_open3d(color_by)


def voxel_down_sample(pts: ScenePoints, voxel_size: float) -> ScenePoints:
    """One point per occupied voxel of edge `voxel_size` metres (voxels aligned to the origin): the mean position
    and colour of its points and their most frequent label (ties: the smallest tag). Output ordered by voxel."""
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0 metres, got {voxel_size}")
    if len(pts) == 0:
        return pts
    keys = np.floor(pts.points / float(voxel_size)).astype(np.int64)                # [P, 3]
    _, group = np.unique(keys, axis=0, return_inverse=True)
    group = group.reshape(-1)
    n = int(group.max()) + 1
    count = np.bincount(group, minlength=n).astype(np.float64)[:, None]
    mean = lambda x: np.stack([np.bincount(group, x[:, i], n) for i in range(x.shape[1])], -1) / count  # noqa: E731
    labels = None
    if pts.labels is not None:
        pair, votes = np.unique(group * 256 + pts.labels.astype(np.int64), return_counts=True)
        g, tag = pair // 256, pair % 256
        order = np.lexsort((tag, -votes, g))                                         # per group: most votes first
        first = order[np.r_[True, g[order][1:] != g[order][:-1]]]
        labels = np.zeros(n, np.uint8)
        labels[g[first]] = tag[first]
    return ScenePoints(mean(pts.points), mean(pts.colors), labels)


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


def _rig_distortion(rig) -> np.ndarray | None:
    """``[N, 4]`` float64 coefficients of a rig: ``rig.distortion()`` (an SDK `CameraRig`), else its cameras'
    ``distortion`` (a capture store's rig; None = zeros), else None."""
    d = getattr(rig, "distortion", None)
    if callable(d):
        return np.asarray(d(), dtype=np.float64)
    cams = getattr(rig, "cameras", None)
    if not cams:
        return None
    return np.stack([np.zeros(4) if getattr(c, "distortion", None) is None
                     else np.asarray(c.distortion, dtype=np.float64) for c in cams])


def capture_to_point_cloud(episode, frames=None, cameras=None, *, stride: int = 4, K: np.ndarray | None = None,
                           max_depth: float | None = None, voxel_size: float | None = None, color_by: str = "rgb",
                           rig=None, model=None, distortion: np.ndarray | None = None):
    """Fuse a capture episode's RGB-D frames into one coloured point cloud in the capture's world frame.

    Args:
        episode: duck-typed capture episode: ``rgb [T,N,H,W,3]`` uint8, ``depth [T,N,H,W]`` planar metres,
            ``cam_to_world [T,N,4,4]`` (e.g. ``sim_bridge.open_store(p).episode(0)``; lazily indexed arrays work),
            and for ``color_by="class"`` ``semantic [T,N,H,W]`` uint8 CARLA tags.
        frames: frame indices (list, slice or int; default all).
        cameras: camera indices (default all).
        stride: keep every `stride`-th pixel along each image axis.
        K: ``[N,3,3]`` or ``[3,3]`` intrinsics; default ``episode.K``, ``rig.K()`` or ``episode.rig.K()`` (a
            capture store keeps the rig at the store level: pass ``rig=store.rig`` or ``K=store.rig.K()``).
        max_depth: drop points farther than this (metres).
        voxel_size: voxel down-sampling of the fused cloud (metres).
        color_by: ``"rgb"`` (the captured colours) or ``"class"`` (the captured tags in CARLA's palette).
        rig: the capture's rig (anything with ``K()``, ``models()``, ``distortion()``, e.g. ``store.rig``): the
            default of `K`, `model` and `distortion`.
        model: camera model name, or N names (default ``rig.models()`` / ``episode.rig.models()``, else pinhole);
            distortion: ``[N,4]`` or ``[4]`` (default ``rig.distortion()``, else zeros). Fisheye captures need them:
            back-projecting a fisheye depth map with its K alone misplaces every point off the optical axis.
    Returns:
        ``open3d.geometry.PointCloud`` with colours.
    """
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {COLOR_BY}, got {color_by!r}")
    if color_by == "class" and not hasattr(episode, "semantic"):
        raise TypeError(f"{type(episode).__name__} has no .semantic: color_by='class' needs the captured tags")
    for attr in ("rgb", "depth", "cam_to_world"):
        if not hasattr(episode, attr):
            raise TypeError(f"{type(episode).__name__} has no .{attr}: capture_to_point_cloud needs a capture episode "
                            "(rgb, depth, cam_to_world arrays), e.g. sim_bridge.open_store(p).episode(0)")
    rig = rig if rig is not None else getattr(episode, "rig", None)
    if K is None:
        K = getattr(episode, "K", None)
        if K is None and rig is not None:
            K = rig.K()
        if K is None:
            raise ValueError("the episode carries no intrinsics: pass K= (e.g. K=store.rig.K()), or rig=store.rig "
                             "for the intrinsics and camera models")
    K = np.asarray(K, dtype=np.float64)
    if model is None:
        model = list(rig.models()) if rig is not None and hasattr(rig, "models") else "pinhole"
    if distortion is None and rig is not None:
        distortion = _rig_distortion(rig)
    c2w_all = np.asarray(episode.cam_to_world, dtype=np.float64)                      # [T, N, 4, 4]
    T, N = c2w_all.shape[:2]
    ts, ns = _select(T, frames, "frames"), _select(N, cameras, "cameras")
    KN = np.broadcast_to(K, (N, 3, 3))[ns]                                             # [n, 3, 3]
    models = [model] * len(ns) if isinstance(model, str) else [list(model)[i] for i in ns]
    dist = None if distortion is None else np.broadcast_to(np.asarray(distortion, dtype=np.float64), (N, 4))[ns]
    kw = dict(model=models, distortion=dist)
    pts, cols = [], []
    for t in ts:
        rgb = np.asarray(episode.rgb[t])[ns]                                           # [n, H, W, 3]
        depth = np.asarray(episode.depth[t])[ns]                                       # [n, H, W]
        mask = None if max_depth is None else depth <= max_depth
        if color_by == "class":
            lp = rgbd_to_labelled_points(rgb, depth, np.asarray(episode.semantic[t])[ns], KN, c2w_all[t, ns], mask,
                                         stride, **kw)
            p, c = lp.points, lp.class_colors()
        else:
            p, c = rgbd_to_points(rgb, depth, KN, c2w_all[t, ns], mask, stride, **kw)
        pts.append(p)
        cols.append(c)
    return _point_cloud(np.concatenate(pts), np.concatenate(cols), voxel_size)
