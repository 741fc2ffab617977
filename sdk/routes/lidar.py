"""Generated LiDAR over a route: each beam marched through every scene's cell, the nearest return kept.

A route's world is the union of its scenes' cells (`nfldm_sdk.routes.composite`: every point belongs to the scene
whose cell holds it). `route_lidar_scan` moves the sensor into each scene's frame, marches the beams through that
scene's density masked to its cell (`nfldm_sdk.routes.composite.cell_density_masks`, the cameras' masks) with the
single-scene reference marcher (`nfldm_sdk.sensors.lidar.march_lidar_rays`), and keeps per beam the nearest return
over the scenes, labelled by the scene that returned it (`lidar_point_tags`). Ranges are frame-invariant (rigid
transforms), so the scan is the one a single field holding the whole route would give, up to one approximation:
each cell reaches the opacity `hit_alpha` on its own (a beam crossing a seam restarts its transmittance), where the
cameras' compositing carries it across. Scenes whose box lies farther than the sensor's range are skipped.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.models.semantic_head import SemanticHead
from nfldm_sdk.rendering.api import HIT_ALPHA
from nfldm_sdk.sensors.lidar import LidarScan, assemble_scan, lidar_point_tags, march_lidar_rays
from nfldm_sdk.sensors.lidar_spec import LidarSpec

__all__ = ["route_lidar_scan"]


def _box_distance(point: np.ndarray, bounds: np.ndarray) -> float:
    """Distance (metres) from a point to an axis-aligned box ``[2, 3]`` (0 inside)."""
    gap = np.maximum(np.maximum(bounds[0] - point, point - bounds[1]), 0.0)
    return float(np.linalg.norm(gap))


@torch.no_grad()
def route_lidar_scan(cell_fields: Sequence[VoxelField], scene_to_world: np.ndarray, spec: LidarSpec,
                     ego_to_world: np.ndarray, lidar_to_ego: np.ndarray | None = None, *, n_samples: int,
                     hit_alpha: float = HIT_ALPHA, head: SemanticHead | None = None, frame: int = 0,
                     timestamp: float = 0.0, scene_id: str = "") -> LidarScan:
    """One scan of `spec` from one world pose over a route (module docstring).

    Args:
        cell_fields: K unbatched `VoxelField`, scene k's field with its density masked to its cell (its device and
            dtype are the march's).
        scene_to_world: ``[K, 4, 4]`` float64 scene -> world transforms.
        spec: the `LidarSpec`; ego_to_world: ``[4, 4]`` world ego pose; lidar_to_ego: mount overriding the spec's.
        n_samples: samples per beam (`nfldm_sdk.sensors.lidar.lidar_samples` of one scene's field).
        hit_alpha: the opacity of a return; head: labels the returns (None: ``tags`` is None).
        frame, timestamp, scene_id: copied into the scan.
    Returns:
        a `LidarScan` whose ``sensor_to_world`` and ``ego_to_world`` are world-frame poses.
    """
    e2w = np.array(ego_to_world, dtype=np.float64)
    l2e = np.array(spec.lidar_to_ego if lidar_to_ego is None else lidar_to_ego, dtype=np.float64)
    s2w = e2w @ l2e
    flat = spec.directions().reshape(-1, 3)                                    # [R, 3] sensor frame
    best = np.full(len(flat), np.inf, dtype=np.float32)
    owner = np.full(len(flat), -1, dtype=np.int64)
    origins_scene: dict[int, np.ndarray] = {}
    dirs_scene: dict[int, np.ndarray] = {}
    for k, field in enumerate(cell_fields):
        to_scene = np.linalg.inv(np.asarray(scene_to_world[k], dtype=np.float64)) @ s2w    # sensor -> scene k
        bounds = field.bounds.detach().double().cpu().numpy()
        if _box_distance(to_scene[:3, 3], bounds) > spec.range_m:
            continue
        dirs = flat @ to_scene[:3, :3].T
        origins = np.ascontiguousarray(np.broadcast_to(to_scene[:3, 3], dirs.shape))
        ranges = march_lidar_rays(field, torch.from_numpy(origins), torch.from_numpy(dirs), max_range=spec.range_m,
                                  n_samples=n_samples, hit_alpha=hit_alpha).cpu().numpy()
        nearer = ranges < best
        best = np.where(nearer, ranges, best)
        owner = np.where(nearer, k, owner)
        origins_scene[k], dirs_scene[k] = origins, dirs
    tags = None
    ok = np.isfinite(best)
    if head is not None:
        tags = np.zeros(int(ok.sum()), dtype=np.uint8)
        hit_owner = owner[ok]
        for k in np.unique(hit_owner):
            rows = np.flatnonzero(ok)[hit_owner == k]
            hits = origins_scene[k][rows] + dirs_scene[k][rows] * best[rows, None].astype(np.float64)
            tags[hit_owner == k] = lidar_point_tags(cell_fields[k], torch.from_numpy(hits), head).cpu().numpy()
    return assemble_scan(spec, best, s2w, e2w, l2e, tags, frame=frame, timestamp=timestamp, scene_id=scene_id)
