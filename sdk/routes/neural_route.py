"""`NeuralRoute`: a chain of generated scenes along a drive, with their scene-to-world transforms, as one object.

A route holds K `NeuralScene` s (each field in its own scene frame), the `RoutePlan` that placed them (scene-to-world
transforms and seam planes, `nfldm_sdk.routes.placement`), the drive they were generated along (a world-frame
`Trajectory`) and, when generation was conditioned, the route's world-frame `BEVMap`. The world frame is the
trajectory's (x, y metres on the ground, z up).

Folder layout (`save` / `load`; `generate_route` writes it scene by scene, so a long route can be resumed)::

    ROUTE/route.json          format "nfldm.route" v1: the plan, the generation settings, the scene folders,
                              complete (false while generation is under way)
    ROUTE/trajectory.json     the drive (`Trajectory.save`)
    ROUTE/map.npy + map.json  the route map (only when generation was conditioned)
    ROUTE/scenes/0000/ ...    one `NeuralScene.save` folder per scene, plus latents.safetensors (its normalised
                              g, c, f: the known part of the next scene when generation resumes)
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from nfldm_sdk.cameras.trajectory import Trajectory, rigid_inverse
from nfldm_sdk.labels.bev_map import UNOBSERVED, BEVMap
from nfldm_sdk.pipelines.scene import NeuralScene
from nfldm_sdk.routes.composite import in_cells
from nfldm_sdk.routes.placement import RouteError, RoutePlan
from nfldm_sdk.routes.sensors import RouteScenes, render_route_trajectory, route_world

if TYPE_CHECKING:
    from nfldm_sdk.pipelines.generator import SceneGenerator

__all__ = ["NeuralRoute", "RouteWriter", "ROUTE_FORMAT", "ROUTE_FORMAT_VERSION", "cell_contains"]

ROUTE_FORMAT = "nfldm.route"
ROUTE_FORMAT_VERSION = 1
_LATENTS = "latents.safetensors"


def cell_contains(plan: RoutePlan, k: int, bounds, points: np.ndarray) -> np.ndarray:
    """Whether world `points` ``[..., 3]`` lie in scene k's cell: inside its box (scene frame, `bounds`
    ``((xmin, ymin, zmin), (xmax, ymax, zmax))``), on the far side of seam k−1 and the near side of seam k.

    Returns ``[...]`` bool. The cells of a plan are disjoint; their union covers the route's boxes along it.
    """
    p = np.asarray(points, dtype=np.float64)
    inv = rigid_inverse(plan.scene_to_world[k])
    local = p @ inv[:3, :3].T + inv[:3, 3]
    lo, hi = np.asarray(bounds[0], np.float64), np.asarray(bounds[1], np.float64)
    box = ((local >= lo) & (local <= hi)).all(-1)
    return box & in_cells(torch.as_tensor(p), k, plan.seam_points, plan.seam_normals).numpy()


@dataclass(eq=False)
class NeuralRoute:
    """K generated scenes along a drive (module docstring).

    Attributes:
        scenes: the scenes, in route order (fields in their own scene frames, the bundle's stage-1 decoder).
        plan: their placement (`RoutePlan`: ``scene_to_world [K, 4, 4]``, seams).
        trajectory: the drive they were generated along, world frame.
        bev: the world-frame route map generation was conditioned on (None: unconditional).
        settings: how they were generated (seed, steps, sampler, guidance_scale, bundle_hash, conditioned, feather).
    """

    scenes: list[NeuralScene]
    plan: RoutePlan
    trajectory: Trajectory
    bev: BEVMap | None = None
    settings: dict = field(default_factory=dict)

    def __post_init__(self):
        if len(self.scenes) != len(self.plan):
            raise RouteError(f"the route has {len(self.scenes)} scenes but its plan places {len(self.plan)}: "
                             "generation stopped early — rerun generate_route with the same out= to finish it")

    def __len__(self) -> int:
        return len(self.scenes)

    def __repr__(self) -> str:
        return (f"NeuralRoute({len(self)} scenes, {self.plan.length_m:.0f} m, overlap {self.plan.overlap_m:g} m, "
                f"seed {self.settings.get('seed')})")

    @property
    def scene_to_world(self) -> np.ndarray:
        """``[K, 4, 4]`` float64 scene frame → world."""
        return self.plan.scene_to_world

    @property
    def bounds(self):
        """The scenes' voxel box ``((xmin, ymin, zmin), (xmax, ymax, zmax))`` metres, scene frame."""
        b = self.scenes[0].field.bounds.detach().cpu().double().numpy()
        return tuple(map(tuple, b.tolist()))

    # ------------------------------------------------------------------------------------------ sensors
    def scenes_for_rendering(self, mode: str = "composite") -> RouteScenes:
        """The route as the renderers take it (`nfldm_sdk.routes.sensors.RouteScenes`): each point is shown by the
        scene whose cell holds it, cells composited front to back along each ray (``mode="nearest"``: each camera
        sees only the scene it stands in — the baseline that jumps at seams)."""
        return RouteScenes.from_scenes(self.scenes, self.plan.scene_to_world, self.plan.seam_points,
                                       self.plan.seam_normals, mode=mode)

    def sensor_renderer(self, batch_size: int = 12, device=None):
        """The batched renderer the sensors use (`render_trajectory`, `SensorWorld`): any camera along the route."""
        return self.scenes_for_rendering().sensor_renderer(batch_size=batch_size, device=device)

    def render(self, cameras, *, batch_size: int = 12, with_range: bool = False, device=None):
        """Render world-frame `cameras` (`Cameras` of any batch shape) across the route: `SceneImages`."""
        return self.scenes_for_rendering().render(cameras, batch_size=batch_size, with_range=with_range, device=device)

    def render_trajectory(self, trajectory: Trajectory, rig, *, batch_size: int = 12, with_range: bool = False,
                          device=None, progress: bool = False, mode: str = "composite", check_overlap: bool = True):
        """Render `rig` along a world-frame `trajectory`, lazily: per tick ``[Frame] * N`` (world poses), across the
        seams without a jump (`nfldm_sdk.routes.sensors.render_route_trajectory`)."""
        return render_route_trajectory(self.scenes, self.plan.scene_to_world, self.plan.seam_points,
                                       self.plan.seam_normals, trajectory, rig, batch_size=batch_size,
                                       with_range=with_range, device=device, progress=progress, mode=mode,
                                       check_overlap=check_overlap)

    def render_lidar(self, trajectory: Trajectory | None, spec, *, n_samples: int | None = None,
                     hit_alpha: float | None = None, device=None):
        """Scan a LiDAR (`LidarSpec`, preset name or JSON file) along a world-frame `trajectory` (None: the route's
        own drive) across the whole route, lazily: one `LidarScan` per tick (`nfldm_sdk.routes.lidar`)."""
        kw = {} if hit_alpha is None else {"hit_alpha": hit_alpha}
        return self.scenes_for_rendering().render_lidar(trajectory if trajectory is not None else self.trajectory,
                                                        spec, n_samples=n_samples, device=device, **kw)

    def world(self, trajectory: Trajectory | None = None, **kwargs):
        """A CARLA-like `SensorWorld` driving `trajectory` (default: the route's own drive) through the route
        (cameras and LiDAR): `nfldm_sdk.routes.sensors.route_world`."""
        return route_world(self.scenes, self.plan.scene_to_world, self.plan.seam_points, self.plan.seam_normals,
                           trajectory if trajectory is not None else self.trajectory, **kwargs)

    # ------------------------------------------------------------------------------------------ labels
    def world_bev(self, bounds=None, grid_yx=None) -> BEVMap:
        """The route's bird's-eye labels in the world frame: each cell takes the label of the scene whose cell holds
        its centre (`NeuralScene.bev`, nearest column); `UNOBSERVED` outside every cell.

        Args:
            bounds, grid_yx: the world box ``((xmin, ymin), (xmax, ymax))`` metres and its ``(Y, X)`` cells (e.g. a
                route map's, to compare with it); default: the boxes' extent at the scenes' column size.
        Returns:
            a world-frame `BEVMap`.
        """
        sb = self.bounds
        (xmin, ymin, _), (xmax, ymax, _) = sb
        Yg, Xg = self.scenes[0].field.density.shape[-2:]
        dx, dy = (xmax - xmin) / Xg, (ymax - ymin) / Yg
        if bounds is None:
            corners = np.array([[x, y, 0.0, 1.0] for x in (xmin, xmax) for y in (ymin, ymax)])
            pts = np.concatenate([corners @ m.T for m in self.scene_to_world])[:, :2]
            lo, hi = np.floor(pts.min(0)), np.ceil(pts.max(0))
            bounds = ((float(lo[0]), float(lo[1])), (float(hi[0]), float(hi[1])))
            grid_yx = (int(round((hi[1] - lo[1]) / dy)), int(round((hi[0] - lo[0]) / dx)))
        elif grid_yx is None:
            raise RouteError("world_bev(bounds=...) needs grid_yx=(Y, X) too")
        (wx0, wy0), (wx1, wy1) = bounds
        Y, X = grid_yx
        gx, gy = np.meshgrid(wx0 + (np.arange(X) + 0.5) * (wx1 - wx0) / X, wy0 + (np.arange(Y) + 0.5) * (wy1 - wy0) / Y)
        tags = np.full((Y, X), UNOBSERVED, dtype=np.uint8)
        for k, scene in enumerate(self.scenes):
            zmid = float(self.scene_to_world[k][2, 3]) + 0.5 * (sb[0][2] + sb[1][2])
            pts = np.stack([gx, gy, np.full_like(gx, zmid)], -1)                     # [Y, X, 3] world
            inside = cell_contains(self.plan, k, sb, pts)
            if not inside.any():
                continue
            inv = rigid_inverse(self.scene_to_world[k])
            local = pts[inside] @ inv[:3, :3].T + inv[:3, 3]
            ix = np.clip(np.floor((local[:, 0] - xmin) / dx).astype(np.int64), 0, Xg - 1)
            iy = np.clip(np.floor((local[:, 1] - ymin) / dy).astype(np.int64), 0, Yg - 1)
            tags[inside] = scene.bev()[iy, ix]
        return BEVMap(tags, bounds=bounds, name=f"route of {len(self)} scenes", source="NeuralRoute.world_bev")

    def layout_miou(self, route_map: BEVMap | None = None) -> float:
        """mIoU (road, sidewalk, building, vegetation) of `world_bev` against the route map (default: the one the
        route was conditioned on), over the cells both observe."""
        route_map = route_map or self.bev
        if route_map is None:
            raise RouteError("this route was generated without a map: pass route_map=BEVMap.load(...) to compare with")
        return self.world_bev(route_map.bounds, route_map.grid_yx).miou(route_map)

    # ------------------------------------------------------------------------------------------ geometry
    def to_mesh(self, level: float | None = None, *, colors: str = "auto", device=None):
        """One `open3d.geometry.TriangleMesh` of the whole route in the world frame: each scene's marching-cubes
        mesh (`NeuralScene.to_mesh`) cut to its cell (triangles whose centroid lies in it) and moved to the world."""
        import open3d as o3d  # start-up time: Open3D only when a mesh is built

        out = o3d.geometry.TriangleMesh()
        for k, scene in enumerate(self.scenes):
            mesh = scene.to_mesh(level, colors=colors, device=device)
            v, t = np.asarray(mesh.vertices), np.asarray(mesh.triangles)
            if len(t):
                world = v @ self.scene_to_world[k][:3, :3].T + self.scene_to_world[k][:3, 3]
                centroids = world[t].mean(1)
                mesh.remove_triangles_by_mask(~cell_contains(self.plan, k, self.bounds, centroids))
                mesh.remove_unreferenced_vertices()
                mesh.transform(self.scene_to_world[k])
            out += mesh
        return out

    def to_point_cloud(self, *, color_by: str = "rgb", device=None):
        """One coloured `open3d.geometry.PointCloud` of the route in the world frame: each scene's RGB-D points
        (`NeuralScene.to_point_cloud`, its default overview views) kept inside its cell and moved to the world."""
        import open3d as o3d  # start-up time: Open3D only when a cloud is built

        out = o3d.geometry.PointCloud()
        for k, scene in enumerate(self.scenes):
            cloud = scene.to_point_cloud(color_by=color_by, device=device)
            pts = np.asarray(cloud.points)
            if len(pts):
                world = pts @ self.scene_to_world[k][:3, :3].T + self.scene_to_world[k][:3, 3]
                keep = np.flatnonzero(cell_contains(self.plan, k, self.bounds, world))
                cloud = cloud.select_by_index(keep.tolist())
                cloud.transform(self.scene_to_world[k])
            out += cloud
        return out

    # ------------------------------------------------------------------------------------------ files
    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the route folder (module docstring). Refuses a folder that holds something else unless
        `overwrite` (then only the route's own files are replaced)."""
        writer = RouteWriter.open(path, self.plan, self.trajectory, self.settings, self.bev, overwrite=overwrite,
                                  fresh=True)
        for k, scene in enumerate(self.scenes):
            writer.add(k, scene, None)
        writer.finish()
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, decoder=None, device=None) -> "NeuralRoute":
        """Read a route folder written by `save` or `generate_route`.

        Args:
            decoder: None, a `SceneAutoEncoder` or the bundle path that generated the route (`NeuralScene.load`).
            device: where to put the fields.
        Raises:
            `RouteError`: not a route folder, another format version, or generation not finished.
        """
        meta = _read_meta(Path(path))
        if not meta.get("complete"):
            raise RouteError(f"{path}: route generation did not finish ({len(meta['scenes'])} of "
                             f"{len(meta['plan']['scene_to_world'])} scenes): rerun `nfldm generate-route` with the "
                             "same arguments and --out to resume it")
        if isinstance(decoder, (str, Path)):
            from nfldm_sdk.models.bundle import load_part, read_manifest  # start-up time: only with a bundle path

            manifest = read_manifest(decoder)
            if manifest.bundle_hash != meta["settings"].get("bundle_hash"):
                raise RouteError(f"route {path} was generated by bundle {str(meta['settings'].get('bundle_hash'))[:12]}…, "
                                 f"but {decoder} is {manifest.bundle_hash[:12]}…: pass the bundle that generated it")
            decoder = load_part(decoder, "scene_ae", manifest, device=device or "cpu")
        scenes = [NeuralScene.load(Path(path) / s, decoder=decoder, device=device) for s in meta["scenes"]]
        bev = BEVMap.load(Path(path) / meta["map"]) if meta.get("map") else None
        return cls(scenes, RoutePlan.from_json(meta["plan"]), Trajectory.load(Path(path) / "trajectory.json"), bev,
                   dict(meta["settings"]))


def _read_meta(path: Path) -> dict:
    f = path / "route.json"
    if not f.is_file():
        raise RouteError(f"{f} not found: {path} is not a route folder (make one with `nfldm generate-route`)")
    try:
        meta = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise RouteError(f"{f} is not JSON ({e}): generate the route again") from e
    if meta.get("format") != ROUTE_FORMAT or int(meta.get("format_version", 0)) != ROUTE_FORMAT_VERSION:
        raise RouteError(f"{f}: format {meta.get('format')!r} version {meta.get('format_version')!r}, expected "
                         f"{ROUTE_FORMAT!r} version {ROUTE_FORMAT_VERSION}: generate the route again with this nfldm")
    return meta


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)                                   # a crash never leaves a half-written route.json


class RouteWriter:
    """Writes a route folder scene by scene and resumes a partial one (`generate_route`'s ``out=``)."""

    def __init__(self, path: Path, meta: dict):
        self.path, self.meta = path, meta

    @classmethod
    def open(cls, path, plan: RoutePlan, trajectory: Trajectory, settings: dict, bev: BEVMap | None, *,
             overwrite: bool = False, fresh: bool = False) -> "RouteWriter":
        """Open `path` for the route `plan` with `settings`: resume it when it holds part of the same route (unless
        `fresh`), start it when it is new or empty, replace a route there only with `overwrite`, and refuse a folder
        holding anything else — all before anything is written."""
        path = Path(path)
        meta = {"format": ROUTE_FORMAT, "format_version": ROUTE_FORMAT_VERSION, "plan": plan.to_json(),
                "settings": dict(settings), "trajectory": "trajectory.json", "map": "map.npy" if bev is not None else None,
                "scenes": [], "complete": False}
        if (path / "route.json").is_file():
            old = _read_meta(path)
            same = (not fresh and old["settings"] == meta["settings"] and old.get("map") == meta["map"]
                    and len(old["plan"]["scene_to_world"]) == len(plan)
                    and np.allclose(old["plan"]["scene_to_world"], plan.scene_to_world, atol=1e-9))
            if same:
                return cls(path, old)                                   # resume after its last written scene
            if not overwrite:
                raise RouteError(f"{path} already holds a route (another trajectory, seed, settings or bundle): pass "
                                 "overwrite=True (--overwrite) to replace it, or choose another folder")
        elif path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise RouteError(f"{path} exists and is not a route folder: choose a new or empty folder")
        for own in ("scenes", "route.json", "trajectory.json", "map.npy", "map.json"):
            p = path / own
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
        path.mkdir(parents=True, exist_ok=True)
        trajectory.save(path / "trajectory.json")
        if bev is not None:
            bev.save(path / "map.npy")
        _write_json_atomic(path / "route.json", meta)
        return cls(path, meta)

    def load_done(self, gen: "SceneGenerator") -> tuple[list[NeuralScene], dict[str, torch.Tensor] | None]:
        """The scenes already written (with the generator's decoder) and the last one's normalised latents."""
        from safetensors.torch import load_file  # start-up time: only when resuming

        scenes = [NeuralScene.load(self.path / s, decoder=gen.scene_ae, device=gen.device) for s in self.meta["scenes"]]
        if not scenes:
            return [], None
        last = self.path / self.meta["scenes"][-1] / _LATENTS
        if not last.is_file():
            raise RouteError(f"{last} is missing, so generation cannot continue after that scene: pass "
                             "overwrite=True (--overwrite) to generate the route again")
        latents = {k: v.to(gen.device) for k, v in load_file(str(last)).items()}
        return scenes, latents

    def add(self, k: int, scene: NeuralScene, latents: dict[str, torch.Tensor] | None) -> None:
        """Write scene `k` (and its normalised latents) and record it in route.json."""
        from safetensors.torch import save_file  # start-up time: only when writing

        rel = f"scenes/{k:04d}"
        scene.save(self.path / rel)
        if latents is not None:
            save_file({lv: v.detach().float().cpu().contiguous() for lv, v in latents.items()},
                      str(self.path / rel / _LATENTS))
        self.meta["scenes"] = [*self.meta["scenes"][:k], rel]
        _write_json_atomic(self.path / "route.json", self.meta)

    def finish(self) -> None:
        """Mark the route complete."""
        self.meta["complete"] = True
        _write_json_atomic(self.path / "route.json", self.meta)
