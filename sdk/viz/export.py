"""Write scenes and sensor output to files other tools read: PLY meshes and point clouds, zarr voxels, PNG/NPY/JSON
frame folders and MP4 videos.

    export_mesh(scene, "scene.ply")                 # marching-cubes mesh with appearance colours (Open3D PLY)
    export_points(scene, "points.ply")              # coloured points from rendered RGB-D (+ a label per point)
    export_voxels(scene, "scene.zarr")              # zarr v3: density, features, bounds + attrs
    write_frames(render_trajectory(scene, traj, rig), "out/")        # PNG + depth/alpha NPY + frames.json
    write_frames(render_trajectory(scene, traj, rig), "drive.mp4")   # cameras tiled per frame

Frame folder layout (``write_frames(frames, DIR)``)::

    DIR/<camera>/<frame:06d>.png          RGB uint8
    DIR/<camera>/<frame:06d>_depth.npy    float32 [H, W] planar z-depth, metres, inf = no hit
    DIR/<camera>/<frame:06d>_alpha.npy    float32 [H, W] opacity in [0, 1]; depth is inf where alpha < HIT_ALPHA
    DIR/<camera>/<frame:06d>_range.npy    float32 ray length (only when rendered with_range)
    DIR/<camera>/<frame:06d>_semantic.png          RGB uint8: the labels in CARLA's CityScapes palette (for people)
    DIR/<camera>/<frame:06d>_semantic_tags.png     uint8 [H, W] single-channel, lossless: the CARLA tag per pixel
    DIR/<camera>/<frame:06d>_semantic_confidence.npy  float32 [H, W] probability of the chosen class
    DIR/frames.json                       one list: per camera image its `Frame.metadata` {frame, timestamp,
                                          timestamp_us, camera, scene_id, seed, bundle_hash, width, height, K,
                                          camera_model, distortion, cam_to_world, ego_to_world, cam_to_ego,
                                          hit_alpha, ...} with the images as paths relative to DIR: rgb, depth,
                                          alpha[, range][, semantic, semantic_tags, semantic_confidence]

The metadata is what a dataset sample carries (`nfldm_sdk.sensors.frames`, "Metadata"): ``timestamp`` in seconds and
``timestamp_us`` in integer microseconds, ``cam_to_world = ego_to_world @ cam_to_ego`` (4 × 4 lists, float64
round-tripped exactly by JSON), ``camera_model`` and ``distortion`` ([k1, k2, k3, k4], zeros for pinhole cameras) and
``scene_id`` (`nfldm_sdk.sensors.frames.scene_identifier`). ``hit_alpha`` is `nfldm_sdk.rendering.api.HIT_ALPHA`, the opacity a ray needs for a finite depth; alpha is saved beside
depth so a consumer can apply a stricter mask (``alpha >= 0.9``) or weight pixels by opacity. The three semantic
files exist only for models with a semantic head (``frames.json`` then says ``"semantic": null`` otherwise); the tag
image reads back exactly with ``imageio.v3.imread(path)`` (uint8 ``[H, W]``), and its sky pixels (tag 11) are exactly
the pixels whose depth is ``inf``.

Point clouds (`export_points`): with a semantic head every point carries the CARLA tag of the pixel it came from, in a
``uchar label`` property of the PLY (`nfldm_sdk.viz.ply`; Open3D still reads points and colours).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import imageio.v2 as iio2
import imageio.v3 as iio
import numpy as np
import zarr

from nfldm_sdk.errors import MissingExtraError
from nfldm_sdk.fields.voxel_field import FIELD_CONVENTIONS
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.labels.classes import colorize_tags
from nfldm_sdk.models.semantic_head import require_semantic_head
from nfldm_sdk.rendering.api import HIT_ALPHA
from nfldm_sdk.sensors.frames import Frame, FrameBatch
from nfldm_sdk.viz.mesh import field_to_mesh
from nfldm_sdk.viz.ply import write_points_ply
from nfldm_sdk.viz.points import COLOR_BY, scene_points

__all__ = ["export_mesh", "export_points", "export_voxels", "write_frames", "tile_frames", "WrittenFrames",
           "VOXEL_EXPORT_FORMAT", "VOXEL_EXPORT_FORMAT_VERSION", "VIDEO_SUFFIXES"]

VOXEL_EXPORT_FORMAT = "nfldm.voxel_export"
VOXEL_EXPORT_FORMAT_VERSION = 1
#: Output paths with these suffixes are written as videos by `write_frames`.
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi")


def _field(scene) -> VoxelField:
    field = scene if isinstance(scene, VoxelField) else getattr(scene, "field", None)
    if not isinstance(field, VoxelField) or field.is_batched:
        raise TypeError(f"expected a NeuralScene or an unbatched VoxelField, got {type(scene).__name__}")
    return field


def export_mesh(scene, path: str | Path, level: float | None = None, **mesh_kwargs) -> Path:
    """Write `field_to_mesh(scene, level, **mesh_kwargs)` as a binary PLY (vertex colours and normals included);
    returns the path. Coordinates are scene metres."""
    import open3d as o3d  # start-up time: open3d

    return _write_geometry(path, lambda: field_to_mesh(scene, level, **mesh_kwargs), o3d.io.write_triangle_mesh,
                           "the mesh", ".ply, .obj, .glb")


def export_points(scene, path: str | Path, cameras=None, color_by: str = "rgb", **cloud_kwargs) -> Path:
    """Write `scene_points(scene, cameras, **cloud_kwargs)` as a binary PLY: ``double x, y, z`` (scene metres),
    ``uchar red, green, blue`` (appearance, or the class palette with ``color_by="class"``) and, with a semantic
    head, ``uchar label`` (the CARLA tag of the pixel each point came from; `nfldm_sdk.viz.ply`). Open3D reads the
    file (points, colours); `nfldm_sdk.viz.ply.read_points_ply` reads the labels too. A ``.pcd`` path is written
    by Open3D without labels. Returns the path."""
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {COLOR_BY}, got {color_by!r}")
    path = Path(path)
    if path.suffix.lower() != ".ply":
        import open3d as o3d  # start-up time: open3d

        return _write_geometry(path, lambda: scene_points(scene, cameras, **cloud_kwargs).to_open3d(color_by),
                               o3d.io.write_point_cloud, "the point cloud", ".ply, .pcd")
    pts = scene_points(scene, cameras, **cloud_kwargs)
    if color_by == "class":
        pts = type(pts)(pts.points, pts.class_colors(), pts.labels)
    return write_points_ply(path, pts, comment="scene frame: x forward, y left, z up; metres"
                            + ("; label = CARLA semantic tag" if pts.labels is not None else ""))


def _write_geometry(path: str | Path, build: Callable[[], object], write: Callable[..., bool], what: str,
                    suffixes: str) -> Path:
    """Create `path`'s folder, then write ``build()`` there with the Open3D writer `write` (binary); `what` and
    `suffixes` name the geometry and the formats that writer supports in the error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not write(str(path), build(), write_ascii=False):
        raise OSError(f"Open3D could not write {what} to {path}: check the folder is writable and the suffix "
                      f"({suffixes}) is one Open3D writes")
    return path


def export_voxels(scene, path: str | Path, overwrite: bool = False) -> Path | str:
    """Write the scene's voxel field to a zarr v3 store (local path or fsspec URL).

    Arrays: ``density [Z,Y,X]``, ``features [C,Z,Y,X]`` (chunk = one channel), ``bounds [2,3]`` (x,y,z min/max,
    metres), in the field's dtype. Root attributes: ``format`` (``nfldm.voxel_export``), ``format_version``,
    ``conventions`` (VoxelField's), ``grid_shape``, ``num_channels``, ``voxel_size`` (x,y,z metres), ``seed`` and
    ``bundle_hash`` (when the scene has them). Returns the store's `Path` (or the URL as given).
    """
    field = _field(scene)
    path = str(path)
    if "://" not in path and Path(path).exists() and not overwrite:
        raise FileExistsError(f"{path} exists: choose another path or pass overwrite=True (--overwrite)")
    attrs = {"format": VOXEL_EXPORT_FORMAT, "format_version": VOXEL_EXPORT_FORMAT_VERSION,
             "conventions": FIELD_CONVENTIONS, "grid_shape": list(field.grid_shape), "num_channels": field.num_channels,
             "voxel_size": [float(v) for v in field.voxel_size.tolist()],
             "seed": None if getattr(scene, "seed", None) is None else int(scene.seed),
             "bundle_hash": str(getattr(scene, "bundle_hash", "") or "")}
    root = zarr.open_group(path, mode="w", zarr_format=3)
    Z, Y, X = field.grid_shape
    density = field.density.detach().cpu().numpy()
    features = field.features.detach().cpu().numpy()
    root.create_array("density", data=density, chunks=(Z, Y, X), dimension_names=("z", "y", "x"))
    root.create_array("features", data=features, chunks=(1, Z, Y, X), dimension_names=("c", "z", "y", "x"))
    root.create_array("bounds", data=field.bounds.detach().cpu().numpy(), chunks=(2, 3),
                      dimension_names=("minmax", "xyz"))
    root.attrs.update(attrs)        # attributes last: a store with a format tag is complete
    return Path(path) if "://" not in path else path


# ============================================================================================ frames
@dataclass(frozen=True)
class WrittenFrames:
    """What `write_frames` wrote."""

    path: Path
    """The folder or video file."""
    ticks: int
    """Ticks (video frames) written."""
    images: int
    """Camera images written (ticks × cameras)."""
    size: tuple[int, int]
    """``(width, height)`` of a video frame (tiled cameras) or of one camera image in a folder."""


def tile_frames(frames: list[Frame], columns: int | None = None, with_depth: bool = False,
                with_semantic: bool = False) -> np.ndarray:
    """One tick's camera images tiled row-major into ``[rows·H, cols·W, 3]`` uint8 (padded to even size for video
    encoders). ``columns`` defaults to 3 for up to 6 cameras, else ``ceil(sqrt(N))``. ``with_depth`` adds each
    camera's inverse depth (1 m white … far/no hit black) below the RGB grid, ``with_semantic`` its labels in
    CARLA's palette below that (frames without labels: `SemanticsUnavailableError`)."""
    N = len(frames)
    if N == 0:
        raise ValueError("no frames to tile")
    H, W = frames[0].height, frames[0].width
    if any((f.height, f.width) != (H, W) for f in frames):
        raise ValueError("all cameras of a tick must share one image size to be tiled")
    cols = columns or (min(N, 3) if N <= 6 else math.ceil(math.sqrt(N)))
    grid_rows = math.ceil(N / cols)
    blocks = [[f.rgb for f in frames]]
    if with_depth:
        block = []
        for f in frames:
            inv = np.where(np.isfinite(f.depth), 1.0 / np.maximum(f.depth, 1.0), 0.0)
            g = (np.clip(inv, 0, 1) * 255 + 0.5).astype(np.uint8)
            block.append(np.repeat(g[..., None], 3, -1))
        blocks.append(block)
    if with_semantic:
        if any(f.semantic is None for f in frames):
            require_semantic_head(None)
        blocks.append([colorize_tags(f.semantic) for f in frames])
    rows = grid_rows * len(blocks)
    canvas = np.zeros((rows * H + (rows * H) % 2, cols * W + (cols * W) % 2, 3), np.uint8)
    for b, block in enumerate(blocks):                    # RGB on top, then depth, then labels
        for j, img in enumerate(block):
            r, c = b * grid_rows + j // cols, j % cols
            canvas[r * H:(r + 1) * H, c * W:(c + 1) * W] = img
    return canvas


def _ticks(frames) -> Iterable[list[Frame]]:
    if isinstance(frames, FrameBatch):
        return frames.ticks()
    return frames


def write_frames(frames: Iterable[list[Frame]] | FrameBatch, out: str | Path, fps: float | None = None, *,
                 with_depth: bool = False, with_semantic: bool = False, columns: int | None = None,
                 quality: int = 8) -> WrittenFrames:
    """Write rendered frames to a folder or a video.

    Args:
        frames: an iterable of per-tick ``[Frame]`` lists (e.g. `render_trajectory`, consumed lazily — long drives
            never sit in memory) or a `FrameBatch`.
        out: a folder (layout in the module docstring) or a video file (``.mp4``/``.mov``/``.mkv``/``.avi``; cameras
            tiled per frame with `tile_frames`, H.264 through imageio-ffmpeg).
        fps: video frame rate (default: from the frames' timestamps, else 10).
        with_depth: videos only: add an inverse-depth row under the RGB tiles.
        with_semantic: videos only: add a row of labels in CARLA's palette (folders always get the semantic files
            when the frames carry labels).
        columns: videos only: tiles per row.
        quality: videos only: imageio-ffmpeg quality 0–10.
    Returns:
        `WrittenFrames`.
    """
    out = Path(out)
    it = iter(_ticks(frames))
    if out.suffix.lower() in VIDEO_SUFFIXES:
        return _write_video(it, out, fps, with_depth, with_semantic, columns, quality)
    out.mkdir(parents=True, exist_ok=True)
    meta: list[dict] = []
    ticks = images = 0
    size = (0, 0)
    for tick in it:
        for f in tick:
            cam_dir = out / f.camera
            cam_dir.mkdir(exist_ok=True)
            stem = f"{f.frame:06d}"
            iio.imwrite(cam_dir / f"{stem}.png", f.rgb)
            np.save(cam_dir / f"{stem}_depth.npy", f.depth.astype(np.float32))
            np.save(cam_dir / f"{stem}_alpha.npy", f.alpha.astype(np.float32))
            entry = f.metadata()
            entry["hit_alpha"] = HIT_ALPHA
            entry["rgb"] = f"{f.camera}/{stem}.png"
            entry["depth"] = f"{f.camera}/{stem}_depth.npy"
            entry["alpha"] = f"{f.camera}/{stem}_alpha.npy"
            if f.range is not None:
                np.save(cam_dir / f"{stem}_range.npy", f.range.astype(np.float32))
                entry["range"] = f"{f.camera}/{stem}_range.npy"
            if f.semantic is not None:
                iio.imwrite(cam_dir / f"{stem}_semantic.png", colorize_tags(f.semantic))
                iio.imwrite(cam_dir / f"{stem}_semantic_tags.png", np.ascontiguousarray(f.semantic, dtype=np.uint8))
                np.save(cam_dir / f"{stem}_semantic_confidence.npy", f.semantic_confidence.astype(np.float32))
                entry["semantic"] = f"{f.camera}/{stem}_semantic.png"
                entry["semantic_tags"] = f"{f.camera}/{stem}_semantic_tags.png"
                entry["semantic_confidence"] = f"{f.camera}/{stem}_semantic_confidence.npy"
            meta.append(entry)
            images += 1
            size = (f.width, f.height)
        ticks += 1
    (out / "frames.json").write_text(json.dumps(meta, indent=1) + "\n")
    return WrittenFrames(out, ticks, images, size)


def _write_video(it, out: Path, fps, with_depth, with_semantic, columns, quality) -> WrittenFrames:
    try:
        import imageio_ffmpeg  # noqa: F401  # optional dependency: imageio-ffmpeg (the `video` extra), imageio's mp4 backend
    except ImportError as e:
        raise MissingExtraError(f"writing {out.suffix} needs imageio-ffmpeg: pip install 'nfldm[video]' (or imageio-ffmpeg), "
                                "or write a frame folder instead") from e
    out.parent.mkdir(parents=True, exist_ok=True)
    first = next(it, None)
    if first is None:
        raise ValueError("no frames to write")
    second = next(it, None)
    if fps is None:
        fps = 10.0
        if second is not None and second[0].timestamp > first[0].timestamp:
            fps = 1.0 / (second[0].timestamp - first[0].timestamp)
    writer = iio2.get_writer(str(out), fps=float(fps), codec="libx264", quality=quality, macro_block_size=1,
                             pixelformat="yuv420p")
    ticks = 0
    size = (0, 0)
    images = 0
    try:
        for tick in (t for t in (first, second) if t is not None):
            img = tile_frames(tick, columns, with_depth, with_semantic)
            writer.append_data(img)
            ticks, images, size = ticks + 1, images + len(tick), (img.shape[1], img.shape[0])
        for tick in it:
            img = tile_frames(tick, columns, with_depth, with_semantic)
            writer.append_data(img)
            ticks, images = ticks + 1, images + len(tick)
    finally:
        writer.close()
    return WrittenFrames(out, ticks, images, size)
