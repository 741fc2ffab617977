"""Ground-truth bird's-eye label maps of the built-in simulator's towns (`sim_bridge bev`).

`town_bev(town, x, y, yaw)` answers "what is the layout around an ego standing here?": the map of the voxel box
of a scene whose ego is at CARLA pose (x, y, yaw) in the town, in that scene's frame (the ego frame: x forward,
y left, z up; `sim_bridge.conventions`). The pose is CARLA's: x, y metres in UE4's left-handed world (y to the
right) and yaw degrees from +x towards +y (clockwise seen from above); ``carla_pose_to_ego_to_world`` turns it
into our right-handed ``ego_to_world``, exactly as `sim_bridge.conventions.carla_to_ego_to_world` does for a
`carla.Transform`, and `ego_to_world_to_carla_pose` reads a captured frame's pose back.

The map: ``[Y, X]`` uint8 CARLA tags; cell ``(iy, ix)`` covers ``x ∈ xmin + [ix, ix+1)·Δx``, ``y ∈ ymin +
[iy, iy+1)·Δy`` of the ego frame (row = y index from ``ymin``, column = x index from ``xmin``: the convention of
the SDK's BEV maps). A ray is cast straight down (the ego frame's −z) from far above the box (`RAY_TOP_M`) through
the cell's centre (or ``samples × samples`` points of the cell, the highest hit winning, as the highest captured
point labels a captured map), against the town's static triangles (roads, sidewalks, buildings, trees, props,
parked cars, terrain; Open3D `RaycastingScene`); the tag of the first triangle it meets labels the cell — the
surface seen from above, so a building taller than the box is building (its walls have no floor: a ray started
inside it would see the ground) — and 255 (unobserved) where it meets nothing at or above ``z_min``. Lane markings
are paint on road triangles, so they read as road (tag 1); the moving traffic of an episode is not part of the
town.

Files (`write_bev`): ``map.png`` (RGB in CARLA's CityScapes palette, white = 255; one pixel per cell drawn x right
and y up: pixel ``(r, c)`` = cell ``(Y − 1 − r, c)``) or ``map.npy`` (the array), each with a sidecar ``map.json``
holding the bounds — the format `nfldm_sdk.labels.bev_map.BEVMap.load` reads. `BEV_PALETTE` is the twin of
`nfldm_sdk.labels.classes.CARLA_PALETTE` (sim_bridge does not import the SDK; a test holds them equal).
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from sim_bridge import semantics as sem
from sim_bridge.conventions import UE_MIRROR, carla_to_ego_to_world
from sim_bridge.errors import SimBridgeError
from sim_bridge.towns import check_town

# Open3D, imageio and the procedural town load lazily, inside the functions that use them (start-up time: the
# `sim_bridge` CLI imports this module for `sim_bridge bev` only, but tests and scripts may import it early).

__all__ = ["BEV_BOX_XY", "BEV_GRID_YX", "BEV_PALETTE", "BEV_Z_MIN", "BEVError", "RAY_TOP_M", "TownBEV", "UNOBSERVED",
           "carla_pose_to_ego_to_world", "ego_to_world_to_carla_pose", "tag_fractions", "town_bev", "write_bev"]

#: "No label": a cell whose ray met nothing (not a CARLA tag).
UNOBSERVED = 255
#: The presets' voxel box in x/y, ``((xmin, ymin), (xmax, ymax))`` metres, and its floor (twins of the SDK's).
BEV_BOX_XY = ((-16.0, -32.0), (48.0, 32.0))
BEV_Z_MIN = -2.0
#: Height above the ego's ground the rays start from, metres (above everything a town holds).
RAY_TOP_M = 1000.0
#: Cells ``(Y, X)`` of the default preset's grid: 1 m cells.
BEV_GRID_YX = (64, 64)
#: CARLA's CityScapes palette by tag (``carla.ColorConverter.CityScapesPalette``), white for `UNOBSERVED`.
BEV_PALETTE = {
    0: (0, 0, 0), 1: (128, 64, 128), 2: (244, 35, 232), 3: (70, 70, 70), 4: (102, 102, 156), 5: (190, 153, 153),
    6: (153, 153, 153), 7: (250, 170, 30), 8: (220, 220, 0), 9: (107, 142, 35), 10: (152, 251, 152),
    11: (70, 130, 180), 12: (220, 20, 60), 13: (255, 0, 0), 14: (0, 0, 142), 15: (0, 0, 70), 16: (0, 60, 100),
    17: (0, 80, 100), 18: (0, 0, 230), 19: (119, 11, 32), 20: (110, 190, 160), 21: (170, 120, 50),
    22: (55, 90, 80), 23: (45, 60, 150), 24: (157, 234, 50), 25: (81, 0, 81), 26: (150, 100, 100),
    27: (230, 150, 140), 28: (180, 165, 180), UNOBSERVED: (255, 255, 255),
}
_PALETTE = np.zeros((256, 3), np.uint8)
for _tag, _rgb in BEV_PALETTE.items():
    _PALETTE[_tag] = _rgb
_PNG_LAYOUT = "x right, y up: pixel (row r, column c) = cell (Y-1-r, c); rgb = CARLA palette, white = unobserved"


class BEVError(SimBridgeError, ValueError):
    """A bad BEV request (town, box, grid, output path); the message names the problem and the fix."""


def carla_pose_to_ego_to_world(x: float, y: float, yaw_deg: float, z: float = 0.0) -> np.ndarray:
    """``[4, 4]`` ego -> world (right-handed) of a vehicle at CARLA location (x, y, z) metres with yaw `yaw_deg`
    degrees (pitch = roll = 0): `sim_bridge.conventions.carla_to_ego_to_world` of that transform."""
    t = SimpleNamespace(location=SimpleNamespace(x=float(x), y=float(y), z=float(z)),
                        rotation=SimpleNamespace(pitch=0.0, yaw=float(yaw_deg), roll=0.0))
    return carla_to_ego_to_world(t)


def ego_to_world_to_carla_pose(ego_to_world: np.ndarray) -> tuple[float, float, float]:
    """(x, y, yaw degrees) in CARLA's world of an ``ego_to_world [4, 4]`` (its heading; pitch and roll dropped):
    the inverse of `carla_pose_to_ego_to_world` (``T = S · ego_to_world · S``, yaw = atan2(T[1,0], T[0,0]))."""
    T = UE_MIRROR @ np.asarray(ego_to_world, np.float64) @ UE_MIRROR
    return float(T[0, 3]), float(T[1, 3]), math.degrees(math.atan2(T[1, 0], T[0, 0]))


def _check_request(grid_yx, box, z_min, samples) -> tuple[tuple[int, int], np.ndarray, float, int]:
    g = tuple(grid_yx)
    if len(g) != 2 or any(isinstance(v, bool) or int(v) != v or int(v) < 1 for v in g):
        raise BEVError(f"grid_yx must be two integers >= 1 (Y rows, X columns), got {grid_yx!r}")
    b = np.asarray(box, np.float64)
    if b.shape != (2, 2) or not np.isfinite(b).all() or not (b[1] > b[0]).all():
        raise BEVError(f"box must be ((xmin, ymin), (xmax, ymax)) metres with xmin < xmax and ymin < ymax, got {box!r}")
    if not (math.isfinite(float(z_min)) and float(z_min) < RAY_TOP_M):
        raise BEVError(f"z_min must be a finite height below {RAY_TOP_M:g} m, got {z_min!r}")
    if isinstance(samples, bool) or int(samples) != samples or not 1 <= int(samples) <= 16:
        raise BEVError(f"samples must be an integer in 1..16 (rays per cell side), got {samples!r}")
    return (int(g[0]), int(g[1])), b, float(z_min), int(samples)


class TownBEV:
    """Top-down ray caster of a static triangle set; `for_town` builds a procedural town's (once per town/seed).

    Args:
        vertices: ``[V, 3]`` world metres; triangles: ``[T, 3]`` vertex indices; tags: ``[T]`` uint8 CARLA tags.
        name: what the triangles are (kept in the maps' ``source``).
        extent: ``(x0, y0, x1, y1)`` world metres of the town's roads, or None.
    """

    def __init__(self, vertices: np.ndarray, triangles: np.ndarray, tags: np.ndarray, *, name: str = "mesh",
                 extent: tuple[float, float, float, float] | None = None):
        import open3d as o3d  # start-up time: Open3D loads only when a map is cast

        self.name, self.extent = name, extent
        self.tags = np.asarray(tags, np.uint8)
        self._o3d = o3d
        self._scene = o3d.t.geometry.RaycastingScene()
        self._scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(vertices, np.float32)),
                                  o3d.core.Tensor(np.ascontiguousarray(triangles, np.uint32)))

    @staticmethod
    @functools.lru_cache(maxsize=2)
    def for_town(town: str, seed: int = 0) -> "TownBEV":
        """The caster of procedural town `town` built with world seed `seed` (a capture store's ``seed``; the
        same town the backend renders). Cached: repeated maps of one town build it once."""
        try:
            check_town(town)
        except ValueError as e:
            raise BEVError(str(e)) from e
        # start-up time: the procedural town (numba, Open3D) loads only when a town map is asked for
        from sim_bridge.backends.procedural.layout import build_layout
        from sim_bridge.backends.procedural.placement import plan_town
        from sim_bridge.backends.procedural.roads import build_roads
        from sim_bridge.backends.procedural.town_mesh import build_static_mesh

        layout = build_layout(town, int(seed))
        mesh = build_static_mesh(plan_town(layout, build_roads(layout), int(seed)), int(seed))
        return TownBEV(mesh.vertices, mesh.triangles, mesh.tag, name=f"{town} seed {int(seed)}",
                       extent=tuple(float(v) for v in layout.extent))

    def at_ego(self, ego_to_world: np.ndarray, grid_yx=BEV_GRID_YX, box=BEV_BOX_XY, z_min: float = BEV_Z_MIN,
               samples: int = 1) -> np.ndarray:
        """``[Y, X]`` uint8 map (module docstring) of the box around an ego at ``ego_to_world [4, 4]``.

        Args:
            grid_yx: ``(Y, X)`` cells; box: ``((xmin, ymin), (xmax, ymax))`` metres in the ego frame; z_min: the
                lowest height (ego frame, metres) a hit may have; samples: rays per cell side (the highest hit
                labels the cell).
        """
        (Y, X), b, z0, s = _check_request(grid_yx, box, z_min, samples)
        m = np.asarray(ego_to_world, np.float64)
        if m.shape != (4, 4) or not np.isfinite(m).all():
            raise BEVError(f"ego_to_world must be a finite 4x4 matrix, got shape {m.shape}")
        off = (np.arange(s) + 0.5) / s
        xs = b[0, 0] + (np.arange(X)[:, None] + off).ravel() * (b[1, 0] - b[0, 0]) / X       # [X·s]
        ys = b[0, 1] + (np.arange(Y)[:, None] + off).ravel() * (b[1, 1] - b[0, 1]) / Y       # [Y·s]
        gy, gx = np.meshgrid(ys, xs, indexing="ij")                                         # [Y·s, X·s]
        top = np.stack([gx, gy, np.full_like(gx, RAY_TOP_M), np.ones_like(gx)], -1) @ m.T          # ego -> world
        down = np.broadcast_to(m[:3, :3] @ np.array([0.0, 0.0, -1.0]), gx.shape + (3,))
        rays = np.concatenate([top[..., :3], down], -1).reshape(-1, 6).astype(np.float32)
        hits = self._scene.cast_rays(self._o3d.core.Tensor(rays))
        t = hits["t_hit"].numpy().astype(np.float64)
        prim = hits["primitive_ids"].numpy().astype(np.int64)
        hit = np.isfinite(t) & (t <= RAY_TOP_M - z0)
        tag = np.where(hit, self.tags[np.where(hit, prim, 0)], UNOBSERVED).astype(np.uint8)
        t = np.where(hit, t, np.inf)
        # [Y·s, X·s] -> [Y, X, s·s]: the sub-rays of each cell; the first of the shortest ones (highest hit) wins
        cell = lambda a: a.reshape(Y, s, X, s).transpose(0, 2, 1, 3).reshape(Y, X, s * s)  # noqa: E731
        best = cell(t).argmin(-1)
        return np.take_along_axis(cell(tag), best[..., None], -1)[..., 0]

    def at(self, x: float, y: float, yaw_deg: float, grid_yx=BEV_GRID_YX, box=BEV_BOX_XY, z_min: float = BEV_Z_MIN,
           samples: int = 1, z: float = 0.0) -> np.ndarray:
        """`at_ego` of an ego at CARLA pose (x, y metres, yaw degrees; z metres)."""
        return self.at_ego(carla_pose_to_ego_to_world(x, y, yaw_deg, z), grid_yx, box, z_min, samples)


def town_bev(town: str, x: float, y: float, yaw: float, grid_yx=BEV_GRID_YX, box=BEV_BOX_XY, *,
             z_min: float = BEV_Z_MIN, seed: int = 0, samples: int = 1) -> np.ndarray:
    """``[Y, X]`` uint8 ground-truth map of procedural town `town` (world seed `seed`) around an ego at CARLA pose
    (`x`, `y` metres, `yaw` degrees): `TownBEV.for_town(town, seed).at(...)` (module docstring)."""
    return TownBEV.for_town(town, int(seed)).at(x, y, yaw, grid_yx, box, z_min, samples)


def tag_fractions(tags: np.ndarray) -> dict[int, float]:
    """``{tag: fraction of cells}`` of a map, most frequent first."""
    vals, counts = np.unique(np.asarray(tags), return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return {int(vals[i]): float(counts[i] / counts.sum()) for i in order}


def write_bev(path: str | Path, tags: np.ndarray, box=BEV_BOX_XY, *, name: str | None = None,
              source: str | None = None, extra: dict | None = None, overwrite: bool = False) -> Path:
    """Write a map ``tags [Y, X]`` (uint8 CARLA tags / 255) over `box` metres as ``path`` (``.png`` or ``.npy``)
    and its sidecar ``<stem>.json`` (module docstring); `extra` adds keys to the sidecar (e.g. the pose).

    Raises:
        BEVError: a bad suffix, shape or tag, or `path` (or its sidecar) exists and not `overwrite`.
    """
    path = Path(path)
    side = path.with_suffix(".json")
    if path.suffix.lower() not in (".png", ".npy"):
        raise BEVError(f"--out {path}: write the map as .png or .npy (a .json sidecar holds its bounds)")
    existing = [p for p in (path, side) if p.exists()]
    if existing and not overwrite:
        raise BEVError(f"{', '.join(map(str, existing))} exists: choose another --out or pass --overwrite")
    tags = np.asarray(tags)
    known = sorted(sem.TAG_NAMES) + [UNOBSERVED]
    if tags.ndim != 2 or tags.dtype != np.uint8 or not np.isin(tags, known).all():
        raise BEVError(f"a map is [Y, X] uint8 CARLA tags (0..28) or {UNOBSERVED}, got {tags.dtype} {tags.shape}")
    (x0, y0), (x1, y1) = np.asarray(box, np.float64).tolist()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".png":
        import imageio.v3 as iio  # start-up time: imageio (Pillow) only when a map is written

        iio.imwrite(path, _PALETTE[tags[::-1]])
    else:
        np.save(path, np.ascontiguousarray(tags))
    meta = {"format": "nfldm.bev_map", "format_version": 1, "bounds": [[x0, y0], [x1, y1]],
            "grid_yx": [int(tags.shape[0]), int(tags.shape[1])], "png_layout": _PNG_LAYOUT, "unobserved": UNOBSERVED,
            "unobserved_rgb": list(BEV_PALETTE[UNOBSERVED]), "name": name, "source": source, **(extra or {})}
    side.write_text(json.dumps(meta, indent=2) + "\n")
    return path
