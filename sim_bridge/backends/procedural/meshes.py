"""Triangle meshes with per-triangle attributes (`MeshData`), their builder, and the primitive shapes the town and
car meshes are made of.

Everything is built with numpy into one `MeshData`: vertices `[V,3]` float32 (world metres, z up), triangles
`[T,3]` uint32 and per-triangle attributes (semantic tag, material, linear albedo, shader params; see
`materials`). The static town is built by `town_mesh`, the cars by `car_meshes`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim_bridge.backends.procedural import materials as M


@dataclass
class MeshData:
    """A triangle soup with per-triangle attributes.

    Attributes:
        vertices: `[V,3]` float32, world metres.
        triangles: `[T,3]` uint32 vertex indices.
        tag: `[T]` uint8 CARLA semantic tag.
        material: `[T]` uint8 material id (`materials`).
        albedo: `[T,3]` float32 linear RGB.
        params: `[T,8]` float32 material parameters.
        road_styles: `[S,8]` float32 rows (lanes, lane_width, median, parking, shoulder, centre_code, crosswalks,
            half_width) referenced by ROAD params.
        buildings: `[B,8]` float32 rows (floor_h, win_spacing, win_w, win_h, ground_h, facade_kind, hash, top_z)
            referenced by FACADE params.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    tag: np.ndarray
    material: np.ndarray
    albedo: np.ndarray
    params: np.ndarray
    road_styles: np.ndarray
    buildings: np.ndarray

    @property
    def n_triangles(self) -> int:
        """Number of triangles T."""
        return int(len(self.triangles))


def concat_tables(a: MeshData, b: MeshData) -> MeshData:
    """Per-triangle tables of `a` followed by `b` (vertices/triangles are `a`'s: they are not needed for shading)."""
    return MeshData(vertices=a.vertices, triangles=a.triangles, tag=np.concatenate([a.tag, b.tag]),
                    material=np.concatenate([a.material, b.material]), albedo=np.concatenate([a.albedo, b.albedo]),
                    params=np.concatenate([a.params, b.params]), road_styles=a.road_styles, buildings=a.buildings)


class MeshBuilder:
    """Accumulates triangle pieces and their attributes; `build()` concatenates them once."""

    def __init__(self):
        self._V: list[np.ndarray] = []
        self._F: list[np.ndarray] = []
        self._tag: list[np.ndarray] = []
        self._mat: list[np.ndarray] = []
        self._alb: list[np.ndarray] = []
        self._par: list[np.ndarray] = []
        self._nv = 0
        self.road_styles: list[list[float]] = []
        self.buildings: list[list[float]] = []

    def add(self, V: np.ndarray, F: np.ndarray, tag, material, albedo_srgb, params=None) -> None:
        """Add vertices `V [n,3]` (m) and triangles `F [m,3]` (local indices) with scalar or per-triangle
        `tag`, `material`, sRGB `albedo_srgb` (`[3]` or `[m,3]`) and `params` (`[8]` or `[m,8]`)."""
        m = len(F)
        if m == 0:
            return
        self._V.append(np.asarray(V, dtype=np.float64))
        self._F.append(np.asarray(F, dtype=np.int64) + self._nv)
        self._nv += len(V)
        self._tag.append(np.broadcast_to(np.asarray(tag, np.uint8), (m,)))
        self._mat.append(np.broadcast_to(np.asarray(material, np.uint8), (m,)))
        self._alb.append(np.broadcast_to(M.srgb_to_linear(albedo_srgb), (m, 3)))
        p = np.zeros(M.N_PARAMS, np.float32) if params is None else np.asarray(params, np.float32)
        self._par.append(np.broadcast_to(p, (m, M.N_PARAMS)))

    def build(self) -> MeshData:
        """All pieces added so far as one `MeshData` (road_styles / buildings: one zero row when empty)."""
        return MeshData(
            vertices=np.concatenate(self._V).astype(np.float32),
            triangles=np.concatenate(self._F).astype(np.uint32),
            tag=np.concatenate(self._tag).astype(np.uint8),
            material=np.concatenate(self._mat).astype(np.uint8),
            albedo=np.ascontiguousarray(np.concatenate(self._alb), dtype=np.float32),
            params=np.ascontiguousarray(np.concatenate(self._par), dtype=np.float32),
            road_styles=np.asarray(self.road_styles or [[0] * 8], np.float32),
            buildings=np.asarray(self.buildings or [[0] * 8], np.float32),
        )


# ------------------------------------------------------------------------------------------------ primitives


def ribbon(left: np.ndarray, right: np.ndarray, z) -> tuple[np.ndarray, np.ndarray]:
    """Flat strip between two polylines `[P,2]` at height z (scalar or `[P]`): 2(P-1) triangles, quad k = segment k."""
    P = len(left)
    zz = np.broadcast_to(np.asarray(z, float), (P,))
    V = np.concatenate([np.column_stack([left, zz]), np.column_stack([right, zz])])
    k = np.arange(P - 1)
    F = np.stack([np.stack([k, k + P, k + 1], 1), np.stack([k + 1, k + P, k + 1 + P], 1)], 1).reshape(-1, 3)
    return V, F


def wall(line: np.ndarray, z0, z1) -> tuple[np.ndarray, np.ndarray]:
    """Vertical strip along polyline `[P,2]` from z0 to z1: 2(P-1) triangles, quad k = segment k."""
    P = len(line)
    V = np.concatenate([np.column_stack([line, np.full(P, z0)]), np.column_stack([line, np.full(P, z1)])])
    k = np.arange(P - 1)
    F = np.stack([np.stack([k, k + 1, k + P], 1), np.stack([k + 1, k + 1 + P, k + P], 1)], 1).reshape(-1, 3)
    return V, F


def fan(poly: np.ndarray, centre: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed polygon `[K,2]` triangulated as a fan from `centre [2]` at height z (K triangles)."""
    K = len(poly)
    V = np.column_stack([np.concatenate([centre[None], poly]), np.full(K + 1, z)])
    k = np.arange(K)
    F = np.stack([np.zeros(K, int), 1 + k, 1 + (k + 1) % K], 1)
    return V, F


def fan_open(poly: np.ndarray, apex: int, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Polygon `[K,2]` triangulated as a fan from its own vertex `apex` (K-2 triangles)."""
    K = len(poly)
    V = np.column_stack([poly, np.full(K, z)])
    idx = [(apex + i) % K for i in range(K)]
    F = np.array([[idx[0], idx[i], idx[i + 1]] for i in range(1, K - 1)])
    return V, F


def prism(poly: np.ndarray, z0: float, z1: float, top: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Vertical prism over a convex polygon `[K,2]` (CCW): K side quads (+ a top fan)."""
    K = len(poly)
    V = np.concatenate([np.column_stack([poly, np.full(K, z0)]), np.column_stack([poly, np.full(K, z1)])])
    k = np.arange(K)
    k1 = (k + 1) % K
    F = np.stack([np.stack([k, k1, K + k], 1), np.stack([k1, K + k1, K + k], 1)], 1).reshape(-1, 3)
    if top:
        F = np.concatenate([F, np.stack([np.full(K - 2, K), K + k[1:-1], K + k[2:]], 1)])
    return V, F


def rect(c, yaw: float, w: float, d: float) -> np.ndarray:
    """Corners `[4,2]` (CCW) of a w×d rectangle centred at c, local x along yaw."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    u = np.array([[-w / 2, -d / 2], [w / 2, -d / 2], [w / 2, d / 2], [-w / 2, d / 2]])
    return np.asarray(c, float)[:2] + u @ np.array([[cy, sy], [-sy, cy]])


def box(c, yaw: float, w: float, d: float, z0: float, z1: float) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned-in-yaw box: 4 sides + top (10 triangles; the bottom is never seen)."""
    return prism(rect(c, yaw, w, d), z0, z1, top=True)


def ngon(c, r: float, n: int, phase: float = 0.0) -> np.ndarray:
    """Corners `[n, 2]` (metres, x/y) of a regular n-gon of circumradius `r` around centre `c` (x, y[, z]),
    the first corner at angle `phase` (radians, counter-clockwise from +x)."""
    a = phase + 2 * math.pi * np.arange(n) / n
    return np.asarray(c, float)[:2] + r * np.stack([np.cos(a), np.sin(a)], 1)


def icosphere() -> tuple[np.ndarray, np.ndarray]:
    """Unit icosphere subdivided once: vertices `[42,3]` float64, triangles `[80,3]`."""
    t = (1 + 5**0.5) / 2
    V = [(-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0), (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
         (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1)]
    F = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2), (10, 7, 6),
         (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7),
         (9, 8, 1)]
    V = [np.array(v, float) / np.linalg.norm(v) for v in V]
    mid: dict = {}

    def m(a, b):
        key = (min(a, b), max(a, b))
        if key not in mid:
            p = V[a] + V[b]
            V.append(p / np.linalg.norm(p))
            mid[key] = len(V) - 1
        return mid[key]

    F2 = []
    for a, b, c in F:
        ab, bc, ca = m(a, b), m(b, c), m(c, a)
        F2 += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
    return np.array(V), np.array(F2)
