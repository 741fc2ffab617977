"""Open3D `RaycastingScene` helpers of the procedural renderer: scenes from a `MeshData` (or a slice of its
triangles), the triangles outside a rectangle, reordering triangles, building a scene's BVH, rays as tensors.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import open3d as o3d

from sim_bridge.backends.procedural.meshes import MeshData


def make_scene(mesh: MeshData, triangles: slice = slice(None)) -> o3d.t.geometry.RaycastingScene:
    """A RaycastingScene holding the `triangles` of `mesh` (one geometry; primitive ids count from the slice start)."""
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(mesh.vertices)),
                        o3d.core.Tensor(np.ascontiguousarray(mesh.triangles[triangles])))
    return scene


def outside_rect(mesh: MeshData, rect: tuple[float, float, float, float]) -> np.ndarray:
    """`[T]` bool: triangles of `mesh` lying entirely in a closed half-plane outside the open rectangle
    `rect` = (x0, y0, x1, y1) (x ≤ x0, x ≥ x1, y ≤ y0 or y ≥ y1), so no point of them is inside it."""
    x0, y0, x1, y1 = rect
    p = mesh.vertices[mesh.triangles]                                       # [T,3,3]
    px, py = p[..., 0], p[..., 1]
    return (px.max(1) <= x0) | (px.min(1) >= x1) | (py.max(1) <= y0) | (py.min(1) >= y1)


def reorder_triangles(mesh: MeshData, order: np.ndarray) -> MeshData:
    """`mesh` with its triangles (and their per-triangle attributes) in `order` `[T]`; vertices are shared."""
    return dataclasses.replace(mesh, triangles=mesh.triangles[order], tag=mesh.tag[order], material=mesh.material[order],
                               albedo=mesh.albedo[order], params=mesh.params[order])


def commit_scene(scene: o3d.t.geometry.RaycastingScene) -> None:
    """Build `scene`'s BVH now (Open3D does it lazily on the first query, which is not safe to trigger from two
    threads at once) by casting one ray."""
    scene.test_occlusions(o3d.core.Tensor(np.array([[0, 0, 0, 0, 0, 1]], np.float32)))


def rays_tensor(rays: np.ndarray) -> o3d.core.Tensor:
    """`rays [R,6]` float32 as an Open3D tensor sharing their memory (no 10-MB copy per query; the array outlives
    the query, which is synchronous)."""
    return o3d.core.Tensor.from_numpy(np.ascontiguousarray(rays))
