"""The built-in simulator's LiDAR: a `LidarSpec`'s beams ray-cast against the scenes the cameras are rendered from.

`LidarCaster` casts the beams of one scan (one instant, no motion distortion over a rotation) from the sensor pose
against the renderer's Open3D scenes: the town (`Renderer.scene`), the outer terrain (`Renderer.outer`, every beam:
exact, no culling needed at LiDAR ray counts) and the tick's moving cars (a cars-only scene posed like the one the
cameras see), merged by nearest hit. The beam directions are unit vectors, so Open3D's hit parameter is the range
in metres along the beam from the sensor origin; the tag is the hit triangle's CARLA tag from the renderer's
per-triangle tables (the same table the camera's semantic image reads). Embree answers each ray independently of
the others, so a scan is a deterministic function of (town, sensor pose, car poses), like the camera images.
"""
from __future__ import annotations

import numpy as np
import open3d as o3d

from sim_bridge.backends.procedural.render import Renderer
from sim_bridge.backends.procedural.scenes import commit_scene, rays_tensor
from sim_bridge.lidar import NO_RETURN_TAG, LidarSpec

__all__ = ["LidarCaster"]


class LidarCaster:
    """Ray-casts a LiDAR against a `Renderer`'s scenes.

    Args:
        renderer: the renderer of the cameras (its town, outer terrain, fleet and per-triangle tags are used).
        spec: the LiDAR (beam tables: `LidarSpec.directions`).

    Attributes:
        directions: ``[C*A, 3]`` float64 unit beam directions in the sensor frame (x forward, y left, z up),
            row-major over the range image.
    """

    def __init__(self, renderer: Renderer, spec: LidarSpec):
        self.renderer = renderer
        self.spec = spec
        self.directions = np.ascontiguousarray(spec.directions().reshape(-1, 3))

    def rays(self, lidar_to_world: np.ndarray) -> np.ndarray:
        """``[C*A, 6]`` float32 world rays (origin, unit direction) of the sensor at `lidar_to_world [4,4]`."""
        m = np.asarray(lidar_to_world, dtype=np.float64)
        d = self.directions @ m[:3, :3].T
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        rays = np.empty((len(d), 6), np.float32)
        rays[:, :3] = m[:3, 3]
        rays[:, 3:] = d
        return rays

    def scan(self, lidar_to_world: np.ndarray, car_poses: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One scan from the sensor pose `lidar_to_world [4,4]` (float64, sensor -> world).

        Args:
            lidar_to_world: the sensor's pose.
            car_poses: ``[K, 3]`` (x, y, yaw) of the renderer's fleet this tick (None: no moving cars).
        Returns:
            ``(range [C, A] float32`` metres along the beam from the sensor origin, ``inf`` where nothing lies
            within ``range_m``; ``tag [C, A] uint8`` CARLA tags, `NO_RETURN_TAG` (0) where no return``)``.
        """
        r = self.renderer
        rays = self.rays(lidar_to_world)
        t_hit, pid, _ = r.cast_primary(rays)
        t_hit = np.array(t_hit, np.float32)
        pid = np.array(pid, np.int64)
        if r.outer is not None:
            out = r.outer.cast_rays(rays_tensor(rays), nthreads=r.embree_threads)
            self._merge(t_hit, pid, out, r.n_inner)
        if r.fleet is not None and car_poses is not None and len(car_poses):
            cars = o3d.t.geometry.RaycastingScene()
            cars.add_triangles(o3d.core.Tensor(r.fleet.vertices(car_poses)), o3d.core.Tensor(r.fleet.mesh.triangles))
            commit_scene(cars)
            self._merge(t_hit, pid, cars.cast_rays(rays_tensor(rays), nthreads=r.embree_threads),
                        r.static.n_triangles)
        hit = t_hit <= np.float32(self.spec.range_m)                        # inf (a miss) compares False
        rng = np.where(hit, t_hit, np.float32(np.inf)).astype(np.float32)
        tag = np.full(len(rng), NO_RETURN_TAG, np.uint8)
        tag[hit] = np.take(r.tables.tag, pid[hit])
        shape = self.spec.range_image_shape
        return rng.reshape(shape), tag.reshape(shape)

    @staticmethod
    def _merge(t_hit: np.ndarray, pid: np.ndarray, result: dict, offset: int) -> None:
        """Keep the nearer of (`t_hit`, `pid`) and another scene's cast `result` (its primitive ids + `offset`)."""
        tc = result["t_hit"].numpy()
        better = np.flatnonzero(tc < t_hit)
        t_hit[better] = tc[better]
        pid[better] = result["primitive_ids"].numpy()[better].astype(np.int64) + offset
