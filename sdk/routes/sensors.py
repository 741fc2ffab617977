"""Sensors over a route: the trajectory sensors and the CARLA-like `SensorWorld` driving through a chain of scenes.

`RouteScenes` is a route as the sensors see it — the K fields, the shared stage-1 decoder, the transforms and seams
(`nfldm_sdk.routes.composite`) and provenance — and makes its own renderer (``sensor_renderer``, the hook of
`nfldm_sdk.sensors.renderer.renderer_for`): a `RouteRenderer` decodes batches of world cameras through
`nfldm_sdk.routes.composite.render_route` and quantises them as every sensor does
(`nfldm_sdk.sensors.views.images_from_render`). So `render_trajectory`, `render_trajectory_batched` and
`SensorWorld` take a `RouteScenes` where they take a scene, with the trajectory in the route's world frame, and give
the same `Frame` metadata (poses in the world frame; seed, bundle hash and scene id of the route). The overlap check
is against the union of the boxes (a camera must see some scene). A route world has cameras only (no LiDAR).

`render_route_trajectory` and `route_world` are the plain-argument forms (a list of scenes, the transforms, the
seams), for containers that hold a route in their own way.

Example::

    for frames in render_route_trajectory(scenes, scene_to_world, seam_points, seam_normals, traj, rig):
        stack_under_test.feed(frames)                       # [Frame] * N per tick, world-frame poses
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.cameras.rig import CameraRig
from nfldm_sdk.cameras.trajectory import Trajectory, rigid_inverse
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.rendering.api import HIT_ALPHA
from nfldm_sdk.routes.composite import (ROUTE_MODES, cameras_in_frame, cell_density_masks, check_route, masked_field,
                                        render_route)
from nfldm_sdk.routes.lidar import route_lidar_scan
from nfldm_sdk.routes.placement import RouteError
from nfldm_sdk.sensors.frames import Frame, scene_id_of
from nfldm_sdk.sensors.frustum import NoOverlapError, frustum_overlap
from nfldm_sdk.sensors.lidar import LidarScan, lidar_samples
from nfldm_sdk.sensors.lidar_spec import LidarSpec
from nfldm_sdk.sensors.renderer import DEFAULT_BATCH_SIZE, ChunkedRenderer
from nfldm_sdk.sensors.trajectory_render import render_trajectory
from nfldm_sdk.sensors.views import SceneImages, images_from_render
from nfldm_sdk.sensors.world import SensorWorld

__all__ = ["RouteScenes", "RouteRenderer", "route_identifier", "render_route_trajectory", "route_world"]


def route_identifier(scenes: Sequence, count: int | None = None) -> str:
    """A route's id from its first scene's (`nfldm_sdk.sensors.frames.scene_id_of`): ``"<first id>-route<K>"``, or
    ``""`` when the first scene has none (a bare field)."""
    first = scene_id_of(scenes[0]) if scenes else ""
    return f"{first}-route{len(scenes) if count is None else count}" if first else ""


def _unpack(scene, decoder):
    """``(field, decoder, seed, bundle_hash)`` of a `NeuralScene`-like object, a ``(field, decoder)`` pair or a field."""
    if isinstance(scene, VoxelField):
        return scene, decoder, None, ""
    if isinstance(scene, tuple) and len(scene) == 2:
        return scene[0], scene[1] if decoder is None else decoder, None, ""
    if hasattr(scene, "field"):
        dec = decoder if decoder is not None else getattr(scene, "decoder", None)
        return scene.field, dec, getattr(scene, "seed", None), str(getattr(scene, "bundle_hash", "") or "")
    raise TypeError(f"a route scene is a NeuralScene, a (field, decoder) pair or a VoxelField, got {type(scene).__name__}")


@dataclass(eq=False)
class RouteScenes:
    """A route as the sensors render it (module docstring).

    Attributes:
        fields: K unbatched `VoxelField`, each in its scene frame (x forward, y left, z up, metres).
        decoder: the shared stage-1 `SceneAutoEncoder`.
        scene_to_world: ``[K, 4, 4]`` float64 rigid scene -> world transforms.
        seam_points, seam_normals: ``[K−1, 3]`` float64 world seam points and unit normals (scene j -> j+1).
        seed: the first scene's seed (None when unknown); bundle_hash: the scenes' bundle ("" when unknown).
        scene_id: the route's id in frame metadata (default `route_identifier`).
        mode: ``"composite"`` (the exact render of the union of the cells) or ``"nearest"`` (the baseline).
    """

    fields: list[VoxelField]
    decoder: torch.nn.Module
    scene_to_world: np.ndarray
    seam_points: np.ndarray
    seam_normals: np.ndarray
    seed: int | None = None
    bundle_hash: str = ""
    scene_id: str = ""
    mode: str = "composite"
    _lidar_fields: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self):
        self.fields = list(self.fields)
        self.scene_to_world, self.seam_points, self.seam_normals = check_route(
            self.scene_to_world, self.seam_points, self.seam_normals, len(self.fields))
        if self.mode not in ROUTE_MODES:
            raise RouteError(f"mode must be one of {ROUTE_MODES}, got {self.mode!r}")
        if self.decoder is None:
            raise RouteError("the route has no decoder: load its scenes with their bundle or pass decoder=")
        cfg = self.decoder.config
        for k, f in enumerate(self.fields):
            if f.is_batched:
                raise RouteError(f"scene {k}'s field is batched: a route takes one unbatched field per scene")
            if (f.grid_shape, f.num_channels) != (tuple(cfg.grid_shape), int(cfg.feature_channels)):
                raise RouteError(f"the decoder expects grid {tuple(cfg.grid_shape)} with C={cfg.feature_channels}, "
                                 f"scene {k} has {f.grid_shape} with C={f.num_channels}: use the bundle that generated "
                                 "the route")

    @classmethod
    def from_scenes(cls, scenes: Sequence, scene_to_world, seam_points, seam_normals, *,
                    decoder: torch.nn.Module | None = None, mode: str = "composite",
                    scene_id: str | None = None) -> "RouteScenes":
        """A route from its scenes: `NeuralScene` objects (or anything with ``.field``, ``.decoder``, ``.seed``,
        ``.bundle_hash``), ``(field, decoder)`` pairs or bare `VoxelField` (then ``decoder=`` is needed). The decoder
        is `decoder`, else the first scene's; scenes of different bundles are refused. ``scene_id`` defaults to
        `route_identifier`."""
        if isinstance(scenes, RouteScenes):
            return scenes
        parts = [_unpack(s, decoder) for s in scenes]
        if not parts:
            raise RouteError("a route needs at least one scene")
        hashes = {p[3] for p in parts if p[3]}
        if len(hashes) > 1:
            raise RouteError(f"the route's scenes come from {len(hashes)} bundles ({', '.join(sorted(h[:12] for h in hashes))}): "
                             "one stage-1 decoder renders a route, generate its scenes with one bundle")
        dec = next((p[1] for p in parts if p[1] is not None), None)
        return cls([p[0] for p in parts], dec, scene_to_world, seam_points, seam_normals, seed=parts[0][2],
                   bundle_hash=next(iter(hashes), ""), mode=mode,
                   scene_id=route_identifier(list(scenes)) if scene_id is None else scene_id)

    def __len__(self) -> int:
        return len(self.fields)

    @property
    def device(self) -> torch.device:
        """The decoder's device."""
        return next(self.decoder.parameters()).device

    def sensor_renderer(self, batch_size: int = DEFAULT_BATCH_SIZE,
                        device: torch.device | str | None = None) -> "RouteRenderer":
        """The sensors' renderer of this route (`nfldm_sdk.sensors.renderer.renderer_for` calls it)."""
        return RouteRenderer(self, batch_size, device)

    def lidar_samples(self, max_range: float) -> int:
        """Samples per LiDAR beam (`nfldm_sdk.sensors.lidar.lidar_samples` of the scenes' common grid)."""
        return lidar_samples(self.fields[0], max_range)

    def lidar_scan(self, spec: LidarSpec, ego_to_world: np.ndarray, lidar_to_ego: np.ndarray | None = None, *,
                   n_samples: int | None = None, hit_alpha: float = HIT_ALPHA, head=None, frame: int = 0,
                   timestamp: float = 0.0, device: torch.device | str | None = None) -> LidarScan:
        """One LiDAR scan from a world ego pose over the whole route (`nfldm_sdk.routes.lidar.route_lidar_scan`;
        ``head`` labels the returns, default the decoder's semantic head). What `SensorWorld`'s LiDAR calls."""
        spec = LidarSpec.resolve(spec)
        dev = torch.device(device) if device is not None else self.device
        key = str(dev)
        if key not in self._lidar_fields:      # the cells' densities, once per device
            masks = cell_density_masks(self.fields, self.scene_to_world, self.seam_points, self.seam_normals)
            self._lidar_fields[key] = [masked_field(f, m).to(device=dev, dtype=torch.float32)
                                       for f, m in zip(self.fields, masks)]
        head = getattr(self.decoder, "semantic_head", None) if head is None else head
        samples = self.lidar_samples(spec.range_m) if n_samples is None else int(n_samples)
        return route_lidar_scan(self._lidar_fields[key], self.scene_to_world, spec, ego_to_world, lidar_to_ego,
                                n_samples=samples, hit_alpha=hit_alpha, head=head, frame=frame, timestamp=timestamp,
                                scene_id=self.scene_id)

    def render_lidar(self, trajectory: Trajectory, spec: LidarSpec | str, *, n_samples: int | None = None,
                     hit_alpha: float = HIT_ALPHA, device: torch.device | str | None = None) -> Iterator[LidarScan]:
        """Scan `spec` along a world-frame `trajectory`: one `LidarScan` per tick (as
        `nfldm_sdk.sensors.lidar.render_lidar` does for one scene)."""
        spec = LidarSpec.resolve(spec)
        for t in range(len(trajectory)):
            yield self.lidar_scan(spec, trajectory.ego_to_world[t], n_samples=n_samples, hit_alpha=hit_alpha,
                                  frame=t, timestamp=float(trajectory.timestamps[t]), device=device)

    @torch.no_grad()
    def render(self, cameras: Cameras, *, batch_size: int = DEFAULT_BATCH_SIZE, with_range: bool = False,
               device: torch.device | str | None = None) -> SceneImages:
        """Views of world cameras of any batch shape (flattened ``[N]``) as `SceneImages` (rgb uint8 ``[N, H, W, 3]``,
        depth/alpha float32 ``[N, H, W]``, labels with a semantic head), rendered ``batch_size`` at a time."""
        return self.sensor_renderer(batch_size, device).render(cameras, with_range)


class RouteRenderer(ChunkedRenderer):
    """The `nfldm_sdk.sensors.renderer.ViewRenderer` of a route: batches of world cameras through `render_route`
    (the route's mode) at `HIT_ALPHA`, the batch halved on out-of-memory.

    Args:
        route: the `RouteScenes`; batch_size: views per decoder call; device: render device (None: the decoder's).
    Attributes:
        fields: the fields as float32 on `device`; masks: their `cell_density_masks` (computed once).
    """

    def __init__(self, route: RouteScenes, batch_size: int, device: torch.device | str | None):
        super().__init__(route, batch_size, device)
        self.fields = [f.to(device=self.device, dtype=torch.float32) for f in route.fields]
        self.masks = cell_density_masks(self.fields, route.scene_to_world, route.seam_points, route.seam_normals)

    def check(self, cams: Cameras, labels: Sequence[str] | None) -> None:
        """Raise `NoOverlapError` naming the cameras that see none of the route's boxes within near/far."""
        r = self.scene
        flat = cams.flatten().to(device="cpu", dtype=torch.float64)
        ok = torch.zeros(flat.batch_shape[0], dtype=torch.bool)
        for f, s2w in zip(r.fields, r.scene_to_world):
            ok |= frustum_overlap(cameras_in_frame(flat, rigid_inverse(s2w)), f.bounds.detach().cpu(), self.near,
                                  self.far)
        if bool(ok.all()):
            return
        bad = torch.nonzero(~ok).reshape(-1).tolist()
        names = [labels[i] if labels is not None else f"camera {i}" for i in bad]
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        raise NoOverlapError(f"{len(bad)} camera view(s) cannot see any of the route's {len(r)} scene boxes within "
                             f"depth {self.near:g}…{self.far:g} m: {shown}. The trajectory probably leaves the route or "
                             "is not in its world frame; shorten it, or pass check_overlap=False to render empty frames")

    def render_chunk(self, cams: Cameras, with_range: bool) -> SceneImages:
        """`render_route` of flattened world cameras ``[n]`` (float32, on `device`), quantised."""
        r = self.scene
        with torch.no_grad():
            out = render_route(self.fields, self.decoder, r.scene_to_world, r.seam_points, r.seam_normals, cams,
                               mode=r.mode, masks=self.masks, min_hit_alpha=HIT_ALPHA)
        return images_from_render(out, cams, getattr(self.decoder, "semantic_head", None), with_range=with_range)


def render_route_trajectory(scenes: Sequence, scene_to_world, seam_points, seam_normals, trajectory: Trajectory,
                            rig: CameraRig, *, batch_size: int = DEFAULT_BATCH_SIZE, with_range: bool = False,
                            device: torch.device | str | None = None, progress: bool = False,
                            mode: str = "composite", check_overlap: bool = True,
                            decoder: torch.nn.Module | None = None,
                            scene_id: str | None = None) -> Iterator[list[Frame]]:
    """`nfldm_sdk.sensors.trajectory_render.render_trajectory` through a route: per tick ``[Frame] * N`` in rig order,
    the same metadata (``ego_to_world`` the trajectory's world-frame pose, ``cam_to_ego`` the mount, ``cam_to_world``
    their product, K, model, distortion, timestamp, the route's seed, bundle hash and id).

    Args:
        scenes, scene_to_world, seam_points, seam_normals, decoder, mode, scene_id: the route
            (`RouteScenes.from_scenes`; a `RouteScenes` is taken as it is).
        trajectory: ``T`` ego poses in the world frame; rig: ``N`` cameras.
        batch_size, with_range, device, progress, check_overlap: as in ``render_trajectory`` (the overlap check is
            against the union of the scene boxes).
    """
    route = RouteScenes.from_scenes(scenes, scene_to_world, seam_points, seam_normals, decoder=decoder, mode=mode,
                                    scene_id=scene_id)
    return render_trajectory(route, trajectory, rig, batch_size=batch_size, with_range=with_range, device=device,
                             check_overlap=check_overlap, progress=progress)


def route_world(scenes: Sequence, scene_to_world, seam_points, seam_normals, trajectory: Trajectory, *,
                decoder: torch.nn.Module | None = None, mode: str = "composite", scene_id: str | None = None,
                **world_kwargs) -> SensorWorld:
    """A `SensorWorld` driving `trajectory` (world frame) through a route (`RouteScenes.from_scenes` of the first
    arguments); `world_kwargs` as `SensorWorld`'s (``rate_hz``, ``rig``, ``batch_size``, ``device``,
    ``check_overlap``, ``with_range``)."""
    route = RouteScenes.from_scenes(scenes, scene_to_world, seam_points, seam_normals, decoder=decoder, mode=mode,
                                    scene_id=scene_id)
    return SensorWorld(route, trajectory, **world_kwargs)
