"""How well consecutive scenes of a route agree at their seams, in numbers (`seam_consistency`) and in a picture
(`seam_strip`).

`seam_consistency` places a camera rig at every seam point, facing along the route (forward, along the seam normal,
and backward), and measures two things, each against a baseline of the same kind:

* **the two neighbours agree** — the rig rendered from scene j alone and from scene j+1 alone, each restricted to the
  space both boxes hold (voxels outside either box masked out, `nfldm_sdk.routes.composite.box_overlap_mask`: beyond
  it one of the two has nothing to show; with ``reach_m``, each box ends at the reach, where the route stops using
  its scene), cameras moved into each scene's frame
  (`nfldm_sdk.routes.composite.render_one_scene`, at `HIT_ALPHA`). Baseline: scene j (restricted the same way) at the
  seam point against the rig ``shift_m`` (default 1 m) further along — how much the views change when the car moves
  one metre;
* **driving across the seam shows no jump** — the composited route (`RouteScenes`, what the sensors render) at
  ``shift_m / 2`` before the seam against ``shift_m / 2`` after it. Baseline: the same 1 m step of the composited
  route ``drive_offset_m`` (default 20 m) before the seam, inside scene j's cell.

Each comparison gives

* **PSNR** (dB) of the uint8 RGB images, over every pixel of every view: ``10 log10(255² / MSE)``;
* **depth AbsRel**: ``mean |d_b − d_a| / d_a`` over the pixels whose depth is finite in both (planar metres);
* **label agreement**: the fraction of pixels with the same CARLA tag (sky included), with a semantic head.

A seam whose figures reach their baseline's is as visible as a metre of driving.

`seam_strip` writes a PNG of consecutive frames of one camera driving across a seam (the composited render, RGB on
top, inverse depth and labels below; optionally the ``"nearest"`` baseline under it), through
`nfldm_sdk.viz.export.tile_frames`.

Example::

    report = seam_consistency(scenes, scene_to_world, seam_points, seam_normals, CameraRig.preset("capture", 64, 64))
    print(report.mean.psnr_db, report.mean.baseline_psnr_db)
    seam_strip(scenes, scene_to_world, seam_points, seam_normals, "seam0.png", seam=0)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import imageio.v3 as iio
import numpy as np
import torch

from nfldm_sdk.cameras.rig import CameraRig, CameraSpec
from nfldm_sdk.cameras.trajectory import Trajectory
from nfldm_sdk.rendering.api import HIT_ALPHA
from nfldm_sdk.routes.composite import box_overlap_mask, masked_field, render_one_scene
from nfldm_sdk.routes.placement import RouteError
from nfldm_sdk.routes.sensors import RouteScenes
from nfldm_sdk.sensors.renderer import decoder_on
from nfldm_sdk.sensors.trajectory_render import render_trajectory
from nfldm_sdk.sensors.views import SceneImages, images_from_render
from nfldm_sdk.viz.export import tile_frames

__all__ = ["SeamFigures", "SeamConsistency", "seam_pose", "seam_consistency", "seam_strip", "image_agreement"]


@dataclass(frozen=True)
class SeamFigures:
    """The figures of one seam (or their mean), module docstring: scene j vs scene j+1 over their shared space and
    its 1 m baseline; the composited route across the seam and its 1 m baseline inside a cell. PSNR in dB (``inf``
    for identical images), AbsRel unitless (``nan`` without a pixel finite in both), label agreement in [0, 1]
    (None without a semantic head)."""

    psnr_db: float
    depth_absrel: float
    label_agreement: float | None
    baseline_psnr_db: float
    baseline_depth_absrel: float
    baseline_label_agreement: float | None
    crossing_psnr_db: float
    crossing_depth_absrel: float
    crossing_label_agreement: float | None
    drive_psnr_db: float
    drive_depth_absrel: float
    drive_label_agreement: float | None


@dataclass(frozen=True)
class SeamConsistency:
    """What `seam_consistency` returns: ``seams[j]`` for seam j (between scenes j and j+1), their ``mean``, the
    baseline's ``shift_m`` (metres) and the views per render (``views`` = rig cameras × 2 directions)."""

    seams: tuple[SeamFigures, ...]
    mean: SeamFigures
    shift_m: float
    views: int

    def to_dict(self) -> dict:
        """Plain JSON-able dict: ``{"seams": [...], "mean": {...}, "shift_m": ..., "views": ...}``."""
        return {"seams": [asdict(s) for s in self.seams], "mean": asdict(self.mean), "shift_m": self.shift_m,
                "views": self.views}


def seam_pose(point, normal, *, backward: bool = False, shift_m: float = 0.0) -> np.ndarray:
    """``[4, 4]`` float64 ego -> world pose at a seam: origin `point` (world, metres) moved `shift_m` along the
    heading, heading (ego +x) the horizontal part of `normal` (reversed with `backward`), z up."""
    n = np.asarray(normal, dtype=np.float64).reshape(3).copy()
    n[2] = 0.0
    if np.linalg.norm(n) < 1e-9:
        raise RouteError(f"seam normal {np.asarray(normal).tolist()} has no horizontal part: seams are vertical planes")
    x = n / np.linalg.norm(n) * (-1.0 if backward else 1.0)
    z = np.array([0.0, 0.0, 1.0])
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2] = x, np.cross(z, x), z
    m[:3, 3] = np.asarray(point, dtype=np.float64).reshape(3) + shift_m * x
    return m


def image_agreement(a: SceneImages, b: SceneImages) -> tuple[float, float, float | None]:
    """``(psnr_db, depth_absrel, label_agreement)`` of two renders of the same views (module docstring; `a` is the
    reference of AbsRel)."""
    x, y = a.rgb.double(), b.rgb.double()
    mse = float(((x - y) ** 2).mean())
    psnr = math.inf if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)
    both = torch.isfinite(a.depth) & torch.isfinite(b.depth)
    absrel = float(((b.depth[both] - a.depth[both]).abs() / a.depth[both]).mean()) if bool(both.any()) else math.nan
    labels = None
    if a.semantic is not None and b.semantic is not None:
        labels = float((a.semantic == b.semantic).double().mean())
    return psnr, absrel, labels


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    finite = [v for v in vals if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


@torch.no_grad()
def seam_consistency(scenes: Sequence, scene_to_world, seam_points, seam_normals, rig: CameraRig, *,
                     decoder: torch.nn.Module | None = None, shift_m: float = 1.0, drive_offset_m: float = 20.0,
                     reach_m: float | None = None, device: torch.device | str | None = None) -> SeamConsistency:
    """Seam-consistency figures of a route (module docstring).

    Args:
        scenes, scene_to_world, seam_points, seam_normals, decoder: the route
            (`nfldm_sdk.routes.sensors.RouteScenes.from_scenes`; a `RouteScenes` is taken as it is), K ≥ 2 scenes.
        rig: the cameras placed at each seam point (ego frame: x forward, y left, z up), facing forward and backward.
        shift_m: the baselines' step along the heading (and the crossing's), metres.
        drive_offset_m: how far before each seam the drive baseline's step is taken, metres (inside scene j's cell).
        reach_m: how far ahead of its anchor each scene is trusted (the route plan's ``reach_m``): the shared space
            of the neighbours' figure ends there in both boxes (None: at the boxes' fronts).
        device: render device (None: the decoder's).
    Returns:
        `SeamConsistency` (per seam and mean `SeamFigures`).
    """
    route = RouteScenes.from_scenes(scenes, scene_to_world, seam_points, seam_normals, decoder=decoder)
    if len(route) < 2:
        raise RouteError("a route of one scene has no seams to measure")
    dec, dev = decoder_on(route.decoder, device)
    head = getattr(dec, "semantic_head", None)
    fields = [f.to(device=dev, dtype=torch.float32) for f in route.fields]
    bounds = [f.bounds.detach().double().cpu().numpy() for f in fields]
    if reach_m is not None:                             # what each scene holds: its box up to its reach
        bounds = [np.concatenate([b[:1], [[min(b[1, 0], float(reach_m)), b[1, 1], b[1, 2]]]]) for b in bounds]
    s2w = route.scene_to_world

    def views(field, k: int, poses: np.ndarray) -> SceneImages:
        cams = rig.cameras(poses, device=dev).flatten()                               # [2N]
        out = render_one_scene(field, dec, s2w[k], cams, min_hit_alpha=HIT_ALPHA)
        return images_from_render(out, cams, head)

    def composite(poses: np.ndarray) -> SceneImages:
        return route.render(rig.cameras(poses).flatten(), device=dev)

    def both_ways(p, n, shift: float) -> np.ndarray:                                  # [2, 4, 4]
        return np.stack([seam_pose(p, n, shift_m=shift), seam_pose(p, n, backward=True, shift_m=-shift)])

    figures = []
    for j, (p, n) in enumerate(zip(route.seam_points, route.seam_normals)):
        a = masked_field(fields[j], box_overlap_mask(fields[j], s2w[j], bounds[j + 1], s2w[j + 1])
                         * box_overlap_mask(fields[j], s2w[j], bounds[j], s2w[j]))
        b = masked_field(fields[j + 1], box_overlap_mask(fields[j + 1], s2w[j + 1], bounds[j], s2w[j])
                         * box_overlap_mask(fields[j + 1], s2w[j + 1], bounds[j + 1], s2w[j + 1]))
        here = views(a, j, both_ways(p, n, 0.0))
        seam = image_agreement(here, views(b, j + 1, both_ways(p, n, 0.0)))
        base = image_agreement(here, views(a, j, both_ways(p, n, shift_m)))
        crossing = image_agreement(composite(both_ways(p, n, -shift_m / 2)), composite(both_ways(p, n, shift_m / 2)))
        back = -float(drive_offset_m)
        drive = image_agreement(composite(both_ways(p, n, back - shift_m / 2)),
                                composite(both_ways(p, n, back + shift_m / 2)))
        figures.append(SeamFigures(*seam, *base, *crossing, *drive))
    mean = SeamFigures(*(_mean([getattr(f, name) for f in figures]) for name in SeamFigures.__dataclass_fields__))
    return SeamConsistency(tuple(figures), mean, float(shift_m), 2 * len(rig))


def seam_strip(scenes: Sequence, scene_to_world, seam_points, seam_normals, path: str | Path, *, seam: int = 0,
               camera: CameraSpec | None = None, frames: int = 8, span_m: float = 8.0,
               decoder: torch.nn.Module | None = None, modes: Sequence[str] = ("composite",), with_depth: bool = True,
               with_semantic: bool | None = None, device: torch.device | str | None = None) -> Path:
    """Write a PNG strip of `frames` consecutive frames of one camera driving across seam `seam`.

    The ego drives straight along the seam normal from ``span_m / 2`` before the seam point to ``span_m / 2`` after
    it (frames equally spaced, 10 Hz timestamps); each mode of `modes` (``"composite"``, ``"nearest"``) is one band,
    top to bottom: RGB frames left to right, then (`with_depth`) inverse depth, then (`with_semantic`, default: when
    the decoder has a semantic head) labels in CARLA's palette (`nfldm_sdk.viz.export.tile_frames`).

    Args:
        scenes, scene_to_world, seam_points, seam_normals, decoder: the route (`RouteScenes.from_scenes`).
        path: the PNG to write (its folder is created).
        camera: the camera (ego mount); default the ``front`` preset at the decoder's training image size.
        device: render device (None: the decoder's).
    Returns:
        `path`.
    """
    route = RouteScenes.from_scenes(scenes, scene_to_world, seam_points, seam_normals, decoder=decoder)
    if not 0 <= seam < len(route.seam_points):
        raise RouteError(f"seam {seam} does not exist: the route of {len(route)} scenes has seams 0…{len(route) - 2}")
    if frames < 2 or not span_m > 0:
        raise ValueError(f"need frames >= 2 and span_m > 0, got frames={frames}, span_m={span_m}")
    if camera is None:
        h, w = getattr(route.decoder.config, "image_size", (256, 256))
        camera = CameraRig.preset("front", w, h)[0]
    p, n = route.seam_points[seam], route.seam_normals[seam]
    poses = np.stack([seam_pose(p, n, shift_m=s) for s in np.linspace(-span_m / 2, span_m / 2, frames)])
    traj = Trajectory.from_poses(poses, rate_hz=10.0)
    if with_semantic is None:
        with_semantic = getattr(route.decoder, "semantic_head", None) is not None
    bands = []
    for mode in modes:
        moded = RouteScenes(route.fields, route.decoder, route.scene_to_world, route.seam_points, route.seam_normals,
                            route.seed, route.bundle_hash, route.scene_id, mode)
        ticks = render_trajectory(moded, traj, CameraRig((camera,)), device=device, check_overlap=False)
        bands.append(tile_frames([t[0] for t in ticks], columns=frames, with_depth=with_depth,
                                 with_semantic=with_semantic))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.concatenate(bands, axis=0))
    return path
