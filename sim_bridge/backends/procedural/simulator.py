"""`ProceduralBackend`: the built-in simulator behind the `Backend` protocol of `sim_bridge.backends.base`.

The town (from (town, seed)) is built once — layout, meshes, BVH — and shared by all episodes of the backend;
an episode (from `EpisodeSpec.seed`) picks the ego's spawn lane and route and the traffic. Frame k of an episode
shows the world after k ticks of 1/fps s (`timestamp = k / fps`); `start_episode(start_frame=k)` replays k ticks
without rendering, so the next `step()` returns exactly the frame an uninterrupted run would have produced.
With a `LidarSpec` every frame also carries a LiDAR scan from ``ego_to_world @ lidar_to_ego``, ray-cast against the
same scenes as the cameras (`lidar_cast`).
"""
from __future__ import annotations

import math
import time

import numpy as np
import open3d as o3d

from sim_bridge.backends.base import EpisodeSpec, FrameData
from sim_bridge.backends.procedural.car_meshes import CarFleet
from sim_bridge.backends.procedural.driving import RoadNet, Traffic
from sim_bridge.backends.procedural.layout import build_layout
from sim_bridge.backends.procedural.lidar_cast import LidarCaster
from sim_bridge.backends.procedural.lighting import LampMap, lighting_from_weather
from sim_bridge.backends.procedural.meshes import MeshData
from sim_bridge.backends.procedural.placement import CAR_COLOURS, plan_town
from sim_bridge.backends.procedural.render import Renderer, RenderOutput
from sim_bridge.backends.procedural.roads import build_roads
from sim_bridge.backends.procedural.town_mesh import build_static_mesh, land_rect
from sim_bridge.lidar import LidarSpec
from sim_bridge.rig import Rig
from sim_bridge.towns import check_town
from sim_bridge.weather import WEATHER_PRESETS, check_weather

#: moving cars (besides the ego) per town.
TRAFFIC = {"Town01": 10, "Town02": 8, "Town03": 16, "Town04": 14, "Town05": 18, "Town06": 14, "Town07": 5, "Town10HD": 18}


def ego_to_world_matrix(x: float, y: float, yaw: float) -> np.ndarray:
    """`[4,4]` ego -> world for an ego at ground position (x, y) m heading `yaw` rad (CCW from world +x)."""
    c, s = math.cos(yaw), math.sin(yaw)
    m = np.eye(4)
    m[:2, :2] = [[c, -s], [s, c]]
    m[:2, 3] = (x, y)
    return m


class ProceduralBackend:
    """Procedural town simulator (Open3D raycasting on the CPU).

    Args:
        town: a CARLA town name (`sim_bridge.towns.TOWNS`).
        weather: a CARLA weather preset name (`sim_bridge.weather.WEATHER_PRESETS`).
        rig: the cameras on the ego.
        fps: ticks per second of simulated time.
        seed: world seed: the town's layout, buildings and trees (episodes add their own seed for routes/traffic).
        n_cars: moving cars besides the ego (default: `TRAFFIC[town]`).
        lidar: a LiDAR on the ego (None: cameras only); `step()` then fills `FrameData.lidar_range`,
            ``lidar_tag`` and ``lidar_to_world``.

    Attributes:
        build_seconds: time the town took to build (layout, meshes, BVH), s; 0 until the first episode.
        last_render: the `RenderOutput` of the last `step()` (timings, sun-lit masks), for benchmarks and tests.
    """

    name = "procedural"

    def __init__(self, town: str, weather: str, rig: Rig, fps: float = 10.0, seed: int = 0, n_cars: int | None = None,
                 lidar: LidarSpec | None = None):
        self.town = check_town(town)
        self.weather = check_weather(weather)
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.rig = rig
        self.fps = float(fps)
        self.seed = int(seed)
        self.n_cars = TRAFFIC[town] if n_cars is None else int(n_cars)
        self.lighting = lighting_from_weather(WEATHER_PRESETS[weather])
        self._cam_to_ego = rig.cam_to_ego()
        if lidar is not None and not isinstance(lidar, LidarSpec):
            raise TypeError(f"lidar must be a sim_bridge.lidar.LidarSpec (LidarSpec.resolve builds one), got "
                            f"{type(lidar).__name__}")
        self.lidar = lidar
        self._lidar_caster: LidarCaster | None = None
        self._world_built = False
        self._traffic: Traffic | None = None
        self._frame = 0
        self._closed = False
        self.build_seconds = 0.0
        self.last_render: RenderOutput | None = None

    # ------------------------------------------------------------------------------------------ world

    def _build_world(self) -> None:
        if self._world_built:
            return
        t0 = time.perf_counter()
        self.layout = build_layout(self.town, self.seed)
        self.roads = build_roads(self.layout)
        self.plan = plan_town(self.layout, self.roads, self.seed)
        self.mesh: MeshData = build_static_mesh(self.plan, self.seed)
        self.renderer = Renderer(self.mesh, self.rig, inner_rect=land_rect(self.plan))
        if self.lidar is not None:
            self._lidar_caster = LidarCaster(self.renderer, self.lidar)
        self.net = RoadNet(self.layout, self.roads)
        self.lamps = None
        if self.lighting.night:
            heads = [(p.pos[0] + 1.8 * math.cos(p.yaw), p.pos[1] + 1.8 * math.sin(p.yaw), p.height - 0.25)
                     for p in self.plan.props if p.kind == "lamp"]
            if heads:
                self.lamps = LampMap(self.plan.bounds, np.array(heads))
        # Build the BVH now (Open3D builds lazily on the first query) so that episode start pays it, not frame 0.
        self.renderer.scene.test_occlusions(o3d.core.Tensor(np.array([[0, 0, 1, 0, 0, 1]], np.float32)))
        self.build_seconds = time.perf_counter() - t0
        self._world_built = True

    def describe(self) -> dict:
        """Store metadata: backend, town, weather, seed, fps, traffic and the size of the built town."""
        self._build_world()
        x0, y0, x1, y1 = self.layout.extent
        return {
            "backend": self.name, "town": self.town, "weather": self.weather, "seed": self.seed, "fps": self.fps,
            "n_cars": self.n_cars, "weather_params": WEATHER_PRESETS[self.weather].to_dict(),
            "map": {"extent_m": [x0, y0, x1, y1], "junctions": int((self.layout.degree() >= 3).sum()),
                    "roads": len(self.layout.edges), "buildings": len(self.plan.buildings), "trees": len(self.plan.trees),
                    "triangles": self.mesh.n_triangles},
            "renderer": "open3d.t.geometry.RaycastingScene (Embree, CPU)",
        }

    # ------------------------------------------------------------------------------------------ episodes

    def start_episode(self, spec: EpisodeSpec) -> None:
        """Spawn the ego and traffic from `spec.seed`; replay `spec.start_frame` ticks without rendering.

        When `spec.resume_ego_to_world` is given it must equal the replayed ego pose of frame start_frame - 1
        (else the store was written by another town, seed or version, and resuming would corrupt it).
        """
        if self._closed:
            raise RuntimeError("backend is closed: create a new ProceduralBackend")
        if spec.start_frame < 0:
            raise ValueError(f"start_frame must be >= 0, got {spec.start_frame}")
        self._build_world()
        self._traffic = Traffic(self.net, spec.seed, self.n_cars, CAR_COLOURS)
        others = self._traffic.vehicles[1:]
        self.renderer.set_fleet(CarFleet([v.colour for v in others], [v.variant for v in others]) if others else None)
        dt = 1.0 / self.fps
        for _ in range(max(spec.start_frame - 1, 0)):
            self._traffic.tick(dt)
        if spec.start_frame > 0:
            if spec.resume_ego_to_world is not None:
                mine = ego_to_world_matrix(*self._traffic.vehicles[0].pose())
                err = float(np.abs(mine - np.asarray(spec.resume_ego_to_world)).max())
                if err > 1e-3:
                    raise ValueError(f"resume mismatch: the replayed ego pose of frame {spec.start_frame - 1} differs from the "
                                     f"stored one by {err:.3g}; the store was written with another town/seed/version — "
                                     "collect into a new store")
            self._traffic.tick(dt)
        self._frame = spec.start_frame

    def ego_pose(self) -> tuple[float, float, float]:
        """(x, y, yaw) of the ego for the frame the next `step()` returns."""
        if self._traffic is None:
            raise RuntimeError("call start_episode() first")
        return self._traffic.vehicles[0].pose()

    def step(self) -> FrameData:
        """Render the current frame for all cameras, then advance the world one tick."""
        if self._traffic is None:
            raise RuntimeError("call start_episode() before step()")
        poses = self._traffic.poses()
        ego = ego_to_world_matrix(*poses[0])
        cam_to_world = ego @ self._cam_to_ego
        head = None
        if self.lighting.night:
            fwd = ego[:3, 0]
            head = ((ego[:3, 3] + fwd * 2.3 + np.array([0, 0, 0.7])).astype(np.float32), fwd.astype(np.float32))
        cars = poses[1:] if len(poses) > 1 else None
        out = self.renderer.render(cam_to_world, self.lighting, cars, head, self.lamps)
        self.last_render = out
        frame = FrameData(rgb=out.rgb, depth=out.depth, semantic=out.semantic, cam_to_world=cam_to_world,
                          ego_to_world=ego, timestamp=self._frame / self.fps, frame=self._frame)
        if self._lidar_caster is not None:
            frame.lidar_to_world = ego @ self.lidar.lidar_to_ego
            frame.lidar_range, frame.lidar_tag = self._lidar_caster.scan(frame.lidar_to_world, cars)
        self._traffic.tick(1.0 / self.fps)
        self._frame += 1
        return frame

    def close(self) -> None:
        """Drop the episode and the ray-casting scenes (idempotent; `describe()` still answers)."""
        self._traffic = None
        self._closed = True
        if self._world_built:
            self.renderer = None
            self._lidar_caster = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
