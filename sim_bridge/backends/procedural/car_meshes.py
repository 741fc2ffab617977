"""Car meshes: three body models (`CAR_MODELS`), parked cars added to the static town (`add_cars`) and the moving
cars of an episode (`CarFleet`, re-posed every tick)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim_bridge import semantics as sem
from sim_bridge.backends.procedural import materials as M
from sim_bridge.backends.procedural.meshes import MeshBuilder, box


@dataclass(frozen=True)
class CarModel:
    """A car body in its local frame (x forward, y left, z up, origin on the ground at the centre):
    vertices `[n,3]`, triangles `[m,3]`, per-triangle material `[m]`; `length`, `width` m."""

    vertices: np.ndarray
    triangles: np.ndarray
    material: np.ndarray
    length: float
    width: float


def _frustum(x0, x1, y, z0, xt0, xt1, yt, z1):
    """Cabin: bottom rect x∈[x0,x1], |y|<=y at z0; top rect x∈[xt0,xt1], |y|<=yt at z1. Sides + top."""
    V = np.array([[x0, -y, z0], [x1, -y, z0], [x1, y, z0], [x0, y, z0],
                  [xt0, -yt, z1], [xt1, -yt, z1], [xt1, yt, z1], [xt0, yt, z1]], float)
    F = np.array([[0, 1, 5], [0, 5, 4], [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7],
                  [4, 5, 6], [4, 6, 7]])
    mat = np.array([M.GLASS] * 8 + [M.PAINT] * 2)
    return V, F, mat


def _car_model(variant: int) -> CarModel:
    L, W, zb, zt, cab = {0: (4.5, 1.82, 0.32, 0.95, (-1.35, 1.0, -0.9, 0.4, 1.45)),
                         1: (3.9, 1.75, 0.32, 0.95, (-1.65, 0.7, -1.55, 0.15, 1.5)),
                         2: (4.9, 1.95, 0.38, 1.15, (-2.4, 1.35, -2.4, 1.05, 2.05))}[variant]
    parts_V, parts_F, parts_M = [], [], []

    def put(V, F, mat):
        parts_F.append(F + sum(len(v) for v in parts_V))
        parts_V.append(V)
        parts_M.append(np.broadcast_to(mat, (len(F),)))

    V, F = box((0, 0), 0.0, L, W, zb, zt)
    put(V, F, M.PAINT)
    x0, x1, xt0, xt1, z1 = cab
    V, F, mat = _frustum(x0, x1, W / 2 - 0.06, zt, xt0, xt1, W / 2 - 0.18, z1)
    put(V, F, mat)
    for sx in (-1, 1):
        for sy in (-1, 1):
            V, F = box((sx * (L / 2 - 0.85), sy * (W / 2 - 0.16)), 0.0, 0.66, 0.3, 0.0, 0.66)
            put(V, F, M.TYRE)
        # Lights: small quads just off the front / back faces.
        xf = sx * (L / 2 + 0.01)
        for sy in (-1, 1):
            yc = sy * (W / 2 - 0.3)
            V = np.array([[xf, yc - 0.16, zt - 0.25], [xf, yc + 0.16, zt - 0.25], [xf, yc + 0.16, zt - 0.1], [xf, yc - 0.16, zt - 0.1]])
            put(V, np.array([[0, 1, 2], [0, 2, 3]]), M.LAMP if sx > 0 else M.TAILLIGHT)
    return CarModel(np.concatenate(parts_V), np.concatenate(parts_F), np.concatenate(parts_M).astype(np.uint8), L, W)


CAR_MODELS = tuple(_car_model(v) for v in range(3))

_MAT_SRGB = {M.GLASS: (25, 30, 38), M.TYRE: (22, 22, 22), M.LAMP: (235, 235, 220), M.TAILLIGHT: (150, 10, 10)}


def add_cars(mb: MeshBuilder, poses: np.ndarray, colours, variants) -> None:
    """Add cars at `poses [K,3]` = (x, y, yaw rad) with sRGB `colours` and model `variants` (tag CAR)."""
    for (x, y, yaw), col, var in zip(poses, colours, variants):
        cm = CAR_MODELS[int(var)]
        cy, sy = math.cos(yaw), math.sin(yaw)
        R = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
        V = cm.vertices @ R.T + np.array([x, y, 0.0])
        alb = np.array([_MAT_SRGB.get(int(m), col) for m in cm.material], float)
        mb.add(V, cm.triangles, sem.CAR, cm.material, alb)


class CarFleet:
    """The moving cars of an episode: fixed topology and attributes, vertices re-posed every tick.

    Args:
        colours: sRGB paint colour per car. variants: body model per car (`CAR_MODELS`).

    Attributes:
        mesh: `MeshData` of all cars at the origin (its tables are reused every tick).
        owner: `[V]` car index of each vertex. local: `[V,3]` vertices in the owner's frame (x fwd, y left, z up).
        half_extent: `[K,2]` half length / half width (m) of each car's footprint.
    """

    HEIGHT = 2.1

    def __init__(self, colours, variants):
        mb = MeshBuilder()
        owner = []
        for k, (col, var) in enumerate(zip(colours, variants)):
            cm = CAR_MODELS[int(var)]
            alb = np.array([_MAT_SRGB.get(int(m), col) for m in cm.material], float)
            mb.add(cm.vertices, cm.triangles, sem.CAR, cm.material, alb)
            owner.append(np.full(len(cm.vertices), k))
        self.mesh = mb.build()
        self.local = self.mesh.vertices.astype(np.float64)
        self.owner = np.concatenate(owner)
        self.half_extent = np.array([[CAR_MODELS[int(v)].length / 2, CAR_MODELS[int(v)].width / 2] for v in variants])

    def __len__(self) -> int:
        return len(self.half_extent)

    def vertices(self, poses: np.ndarray) -> np.ndarray:
        """World vertices `[V,3]` float32 for car poses `[K,3]` = (x, y, yaw rad)."""
        c, s = np.cos(poses[self.owner, 2]), np.sin(poses[self.owner, 2])
        lx, ly = self.local[:, 0], self.local[:, 1]
        out = np.empty((len(self.local), 3), np.float32)
        out[:, 0] = poses[self.owner, 0] + c * lx - s * ly
        out[:, 1] = poses[self.owner, 1] + s * lx + c * ly
        out[:, 2] = self.local[:, 2]
        return out

    def boxes(self, poses: np.ndarray, pad: float = 0.1) -> np.ndarray:
        """World corners `[K,8,3]` of the cars' bounding boxes (padded by `pad` m)."""
        sx = np.array([-1, -1, -1, -1, 1, 1, 1, 1], float)
        sy = np.array([-1, -1, 1, 1, -1, -1, 1, 1], float)
        z = np.array([0, 1, 0, 1, 0, 1, 0, 1], float) * self.HEIGHT
        lx = sx[None] * (self.half_extent[:, :1] + pad)
        ly = sy[None] * (self.half_extent[:, 1:] + pad)
        c, s = np.cos(poses[:, 2:3]), np.sin(poses[:, 2:3])
        return np.stack([poses[:, 0:1] + c * lx - s * ly, poses[:, 1:2] + s * lx + c * ly, np.broadcast_to(z, lx.shape)], axis=-1)
