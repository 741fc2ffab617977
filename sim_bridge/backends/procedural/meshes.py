"""Triangle meshes of a planned town (static scene) and of cars (per-tick dynamic scene).

Everything is built with numpy into one `MeshData`: vertices `[V,3]` float32 (world metres, z up), triangles
`[T,3]` uint32 and per-triangle attributes (semantic tag, material, linear albedo, shader params; see
`materials`). Heights: road surface z = 0 (the ego's ground), sidewalks z = KERB_H, terrain z = GROUND_Z just
below the road so that no two differently-shaded surfaces are coplanar.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim_bridge import semantics as sem
from sim_bridge.backends.procedural import materials as M
from sim_bridge.backends.procedural.placement import Building, Prop, TownPlan, Tree
from sim_bridge.backends.procedural.roads import arclength, offset_polyline

KERB_H = 0.15
"""sidewalk height above the road, m."""
GROUND_Z = -0.02
"""terrain height, m (a hair below the road)."""
WATER_Z = -0.8
"""water surface height, m."""
TERRAIN_RADIUS = 1400.0
"""half-size of the terrain square around the town, m."""


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
        return int(len(self.triangles))


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


def _icosphere() -> tuple[np.ndarray, np.ndarray]:
    """Unit icosphere subdivided once: 42 vertices, 80 triangles."""
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


_ICO_V, _ICO_F = _icosphere()


# ------------------------------------------------------------------------------------------------ cars


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


# ------------------------------------------------------------------------------------------------ town pieces


def _add_roads(mb: MeshBuilder, plan: TownPlan) -> None:
    layout, roads = plan.layout, plan.roads
    styles: dict = {}
    for e, c in zip(layout.edges, roads.centre):
        s = e.style
        if s not in styles:
            styles[s] = len(mb.road_styles)
            mb.road_styles.append([s.lanes, s.lane_width, s.median, s.parking, s.shoulder, s.centre_code,
                                   float(s.crosswalks), s.half_width])
        sid = styles[s]
        h = s.half_width
        left, right = offset_polyline(c, h), offset_polyline(c, -h)
        V, F = ribbon(left, right, 0.0)
        seg = np.diff(c, axis=0)
        slen = np.linalg.norm(seg, axis=1)
        u = seg / slen[:, None]
        s0 = arclength(c)[:-1]
        prm = np.column_stack([c[:-1], u, s0, np.full(len(u), s0[-1] + slen[-1]), np.full(len(u), sid), np.zeros(len(u))])
        mb.add(V, F, sem.ROAD, M.ROAD, (70, 70, 72), np.repeat(prm, 2, axis=0))
        if s.sidewalk > 0:
            for side in (1.0, -1.0):
                inner, outer = offset_polyline(c, side * h), offset_polyline(c, side * (h + s.sidewalk))
                V, F = ribbon(inner, outer, KERB_H)
                mb.add(V, F, sem.SIDEWALK, M.SIDEWALK, (150, 148, 142))
                V, F = wall(inner, 0.0, KERB_H)
                mb.add(V, F, sem.SIDEWALK, M.KERB, (170, 168, 160))
                V, F = wall(outer, GROUND_Z, KERB_H)
                mb.add(V, F, sem.SIDEWALK, M.KERB, (170, 168, 160))
        if s.centre_line == "barrier":
            for side in (1.0, -1.0):
                V, F = wall(offset_polyline(c, side * 0.3), 0.0, 0.85)
                mb.add(V, F, sem.GUARD_RAIL, M.CONCRETE, (175, 172, 165))
            V, F = ribbon(offset_polyline(c, 0.3), offset_polyline(c, -0.3), 0.85)
            mb.add(V, F, sem.GUARD_RAIL, M.CONCRETE, (175, 172, 165))
        if s.guard_rail:
            for side in (1.0, -1.0):
                line = offset_polyline(c, side * (h + 0.4))
                V, F = wall(line, 0.45, 0.8)
                mb.add(V, F, sem.GUARD_RAIL, M.METAL, (150, 152, 155))
                L = float(arclength(line)[-1])
                sl = arclength(line)
                for sp in np.arange(1.0, L - 1.0, 4.0):
                    p = np.array([np.interp(sp, sl, line[:, 0]), np.interp(sp, sl, line[:, 1])])
                    V, F = box(p, 0.0, 0.12, 0.12, 0.0, 0.75)
                    mb.add(V, F, sem.GUARD_RAIL, M.METAL, (110, 110, 112))
    for j in roads.junctions:
        V, F = fan(j.polygon, j.centre, 0.0)
        mb.add(V, F, sem.ROAD, M.ASPHALT, (70, 70, 72))
        for cn in j.corners:
            V, F = fan_open(cn.polygon, cn.fan, KERB_H)
            mb.add(V, F, sem.SIDEWALK, M.SIDEWALK, (150, 148, 142))
            V, F = wall(cn.kerb, 0.0, KERB_H)
            mb.add(V, F, sem.SIDEWALK, M.KERB, (170, 168, 160))
            V, F = wall(cn.back, GROUND_Z, KERB_H)
            mb.add(V, F, sem.SIDEWALK, M.KERB, (170, 168, 160))


def _add_building(mb: MeshBuilder, b: Building, bid: int, rng) -> None:
    top = b.height + (b.tower[2] if b.tower is not None else 0.0)
    mb.buildings.append([b.floor_h, b.win_spacing, b.win_w, b.win_h, b.ground_h, b.facade, float(rng.integers(1 << 20)), top])
    blocks = [(b.width, b.depth, GROUND_Z, b.height)]
    if b.tower is not None:
        tw, td, th = b.tower
        blocks.append((tw, td, b.height, b.height + th))
    for w, d, z0, z1 in blocks:
        corners = rect(b.centre, b.yaw, w, d)
        for k in range(4):
            p, q = corners[k], corners[(k + 1) % 4]
            L = float(np.linalg.norm(q - p))
            t = (q - p) / L
            V, F = wall(np.stack([p, q]), z0, z1)
            mb.add(V, F, sem.BUILDING, M.FACADE, b.colour, [p[0], p[1], t[0], t[1], L, 0.0, bid, 0.0])
        if b.roof == "gable":
            # Ridge along the longer side; gable triangles continue the facade.
            c = corners
            if w >= d:
                a0, a1, b0, b1 = c[0], c[1], c[3], c[2]
            else:
                a0, a1, b0, b1 = c[1], c[2], c[0], c[3]
            r0, r1 = (a0 + b0) / 2, (a1 + b1) / 2
            zr = z1 + b.roof_h
            ov = 0.35  # eaves overhang
            out_a, out_b = (a0 - b0) / np.linalg.norm(a0 - b0) * ov, (b0 - a0) / np.linalg.norm(b0 - a0) * ov
            V = np.array([[*(a0 + out_a), z1 - 0.15], [*(a1 + out_a), z1 - 0.15], [*r1, zr], [*r0, zr],
                          [*(b0 + out_b), z1 - 0.15], [*(b1 + out_b), z1 - 0.15]])
            F = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 2], [4, 2, 3]])
            mb.add(V, F, sem.BUILDING, M.ROOF, b.roof_colour)
            for pa, pb, rr in ((a0, b0, r0), (a1, b1, r1)):
                V = np.array([[*pa, z1], [*pb, z1], [*rr, zr]])
                mb.add(V, np.array([[0, 1, 2]]), sem.BUILDING, M.FACADE, b.colour)
        else:
            V, F = fan_open(corners, 0, z1)
            mb.add(V, F, sem.BUILDING, M.FLATROOF, (105, 105, 108))


def _add_tree(mb: MeshBuilder, t: Tree, rng) -> None:
    V, F = prism(ngon(t.pos, t.trunk_r, 6, rng.uniform(0, 1)), GROUND_Z, t.trunk_h + t.crown_h * 0.3, top=False)
    mb.add(V, F, sem.VEGETATION, M.BARK, (85, 65, 50))
    if t.conifer:
        n = 8
        parts = [(t.trunk_h, t.trunk_h + t.crown_h * 0.6, t.crown_r), (t.trunk_h + t.crown_h * 0.35, t.trunk_h + t.crown_h, t.crown_r * 0.7)]
        for z0, z1, r in parts:
            base = ngon(t.pos, r, n, rng.uniform(0, 1))
            V = np.concatenate([np.column_stack([base, np.full(n, z0)]), [[t.pos[0], t.pos[1], z1]], [[t.pos[0], t.pos[1], z0]]])
            k = np.arange(n)
            F = np.concatenate([np.stack([k, (k + 1) % n, np.full(n, n)], 1), np.stack([k, (k + 1) % n, np.full(n, n + 1)], 1)])
            # Smooth cone normal in the shader: (radial, r/h · |radial|).
            mb.add(V, F, sem.VEGETATION, M.FOLIAGE, t.colour, [t.pos[0], t.pos[1], z0, 0.0, 0.0, 0.0, 2.0, r / (z1 - z0)])
    else:
        jitter = 1.0 + rng.uniform(-0.18, 0.18, (len(_ICO_V), 1))
        radii = np.array([t.crown_r, t.crown_r, t.crown_h / 2])
        c = np.array([t.pos[0], t.pos[1], t.trunk_h + t.crown_h / 2])
        V = _ICO_V * jitter * radii + c
        # Smooth ellipsoid normal in the shader: gradient (p - c) / r².
        mb.add(V, _ICO_F, sem.VEGETATION, M.FOLIAGE, t.colour, [c[0], c[1], c[2], *(1.0 / radii**2), 1.0, 0.0])


_SIGN_SRGB = {0: (180, 20, 25), 1: (230, 230, 230), 2: (235, 235, 235), 3: (30, 70, 160), 4: (20, 110, 60)}


def _add_prop(mb: MeshBuilder, p: Prop) -> None:
    cy, sy = math.cos(p.yaw), math.sin(p.yaw)
    fwd = np.array([cy, sy])
    if p.kind == "lamp":
        V, F = prism(ngon(p.pos, 0.09, 6), KERB_H, p.height, top=False)
        mb.add(V, F, sem.POLE, M.METAL, (90, 92, 95))
        arm_end = p.pos + fwd * 1.8
        mid = (p.pos + arm_end) / 2
        V, F = box(mid, p.yaw, 1.8, 0.1, p.height - 0.1, p.height)
        mb.add(V, F, sem.POLE, M.METAL, (90, 92, 95))
        V, F = box(arm_end, p.yaw, 0.6, 0.3, p.height - 0.25, p.height - 0.05)
        mb.add(V, F, sem.POLE, M.LAMP, (200, 200, 190))
    elif p.kind == "sign":
        V, F = prism(ngon(p.pos, 0.045, 4, math.pi / 4), KERB_H, p.height, top=True)
        mb.add(V, F, sem.POLE, M.METAL, (140, 140, 145))
        side = np.array([-sy, cy])
        plate = ngon((0, 0), 0.38, 8, math.pi / 8)
        # Plate: an octagon in the plane spanned by `side` and z, facing `fwd`, a few cm thick.
        Vp = []
        for off in (0.03, 0.07):
            base = p.pos + fwd * off
            Vp.append(np.column_stack([base[0] + side[0] * plate[:, 0], base[1] + side[1] * plate[:, 0], p.height - 0.1 + plate[:, 1]]))
        Vp = np.concatenate(Vp)
        k = np.arange(8)
        F = np.concatenate([np.stack([np.zeros(6, int), k[1:-1], k[2:]], 1), 8 + np.stack([np.zeros(6, int), k[2:], k[1:-1]], 1),
                            np.stack([k, (k + 1) % 8, 8 + k], 1), np.stack([(k + 1) % 8, 8 + (k + 1) % 8, 8 + k], 1)])
        mb.add(Vp, F, sem.TRAFFIC_SIGN, M.SIGN, _SIGN_SRGB[p.variant])
    elif p.kind == "gantry":
        side = np.array([-sy, cy])
        for o in (-1.8, 1.8):
            V, F = prism(ngon(p.pos + side * o, 0.1, 6), GROUND_Z, p.height, top=False)
            mb.add(V, F, sem.POLE, M.METAL, (120, 122, 125))
        V, F = box(p.pos + fwd * 0.15, p.yaw, 0.08, 4.4, p.height - 2.2, p.height + 0.2)
        mb.add(V, F, sem.TRAFFIC_SIGN, M.SIGN, _SIGN_SRGB[4])
    elif p.kind == "light":
        V, F = prism(ngon(p.pos, 0.1, 6), KERB_H, p.height, top=True)
        mb.add(V, F, sem.POLE, M.METAL, (60, 62, 65))
        arm_end = p.pos + fwd * 4.5
        V, F = box((p.pos + arm_end) / 2, p.yaw, 4.5, 0.12, p.height - 0.15, p.height)
        mb.add(V, F, sem.POLE, M.METAL, (60, 62, 65))
        V, F = box(arm_end, p.yaw, 0.35, 0.35, p.height - 1.1, p.height - 0.15)
        mb.add(V, F, sem.TRAFFIC_LIGHT, M.METAL, (40, 40, 35))
    elif p.kind == "monument":
        V, F = prism(ngon(p.pos, 3.0, 8), GROUND_Z, 1.2)
        mb.add(V, F, sem.STATIC, M.CONCRETE, (190, 185, 175))
        V, F = prism(ngon(p.pos, 0.9, 4, math.pi / 4), 1.2, p.height)
        mb.add(V, F, sem.STATIC, M.CONCRETE, (200, 195, 185))


def _hash_noise(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Smooth deterministic noise in [-1, 1] from a few seeded sines (for hill heights)."""
    rng = np.random.default_rng(seed)
    out = np.zeros_like(x)
    for k in range(5):
        f = rng.uniform(0.002, 0.008) * (1.6**k)
        a = rng.uniform(0, 2 * math.pi)
        out += np.sin(f * (x * math.cos(a) + y * math.sin(a)) + rng.uniform(0, 2 * math.pi)) / (1.5**k)
    return out / 2.2


def land_rect(plan: TownPlan) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the flat land under the town, m: the town's bounds cut at the shore. Everything outside
    it (hills, water) is terrain beyond the town, which the renderer keeps in a separate scene."""
    x0, y0, x1, y1 = plan.bounds
    water = plan.layout.style.water_north
    return x0, y0, x1, (min(y1, water) if water is not None else y1)


def _add_terrain(mb: MeshBuilder, plan: TownPlan) -> None:
    st = plan.layout.style
    x0, y0, x1, land_y1 = land_rect(plan)
    y1 = plan.bounds[3]
    water = st.water_north
    # Flat land under the town (one quad), hills around it on a grid with the land rectangle as a hole.
    V = np.array([[x0, y0, GROUND_Z], [x1, y0, GROUND_Z], [x1, land_y1, GROUND_Z], [x0, land_y1, GROUND_Z]])
    mb.add(V, np.array([[0, 1, 2], [0, 2, 3]]), sem.TERRAIN, M.GRASS, st.ground)
    R = TERRAIN_RADIUS
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    xs = np.unique(np.concatenate([np.arange(cx - R, cx + R + 1, 60.0), [x0, x1]]))
    ys = np.unique(np.concatenate([np.arange(cy - R, cy + R + 1, 60.0), [y0, land_y1]]))
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    dx = np.maximum(np.maximum(x0 - gx, gx - x1), 0)
    dy = np.maximum(np.maximum(y0 - gy, gy - land_y1), 0)
    dist = np.hypot(dx, dy)
    ramp = np.clip(dist / 380.0, 0, 1)
    ramp = ramp * ramp * (3 - 2 * ramp)
    z = GROUND_Z + st.hills * ramp * (0.65 + 0.45 * _hash_noise(gx, gy, plan.layout.seed + 11))
    if water is not None:
        beyond = gy > land_y1 + 1e-6
        far = np.clip((gy - land_y1 - 450.0) / 300.0, 0, 1)
        z = np.where(beyond, -3.0 + (st.hills + 3.0) * far * (0.7 + 0.3 * _hash_noise(gx, gy, 5)), z)
    nx, ny = len(xs), len(ys)
    Vg = np.column_stack([gx.ravel(), gy.ravel(), z.ravel()])
    i, j = np.meshgrid(np.arange(nx - 1), np.arange(ny - 1), indexing="ij")
    mx, my = (xs[:-1] + xs[1:])[:, None] / 2, (ys[:-1] + ys[1:])[None, :] / 2
    outside = ~((mx > x0) & (mx < x1) & (my > y0) & (my < land_y1))
    i, j = i[outside], j[outside]
    a, b, c, d = i * ny + j, (i + 1) * ny + j, (i + 1) * ny + j + 1, i * ny + j + 1
    F = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    mb.add(Vg, F, sem.TERRAIN, M.HILL, st.ground)
    if water is not None:
        V = np.array([[cx - R, land_y1, WATER_Z], [cx + R, land_y1, WATER_Z], [cx + R, cy + R, WATER_Z], [cx - R, cy + R, WATER_Z]])
        mb.add(V, np.array([[0, 1, 2], [0, 2, 3]]), sem.WATER, M.WATER, (30, 55, 70))
        V, F = wall(np.array([[x0, land_y1], [x1, land_y1]]), WATER_Z - 0.5, GROUND_Z)
        mb.add(V, F, sem.WALL, M.CONCRETE, (150, 145, 135))


def build_static_mesh(plan: TownPlan, seed: int = 0) -> MeshData:
    """All static geometry of a planned town (roads, sidewalks, buildings, trees, props, parked cars, terrain)."""
    rng = np.random.default_rng([int(seed), 3])
    mb = MeshBuilder()
    _add_roads(mb, plan)
    for bid, b in enumerate(plan.buildings):
        _add_building(mb, b, bid, rng)
    for t in plan.trees:
        _add_tree(mb, t, rng)
    for p in plan.props:
        _add_prop(mb, p)
    if plan.parked:
        add_cars(mb, np.array([[c.pos[0], c.pos[1], c.yaw] for c in plan.parked]), [c.colour for c in plan.parked],
                 [c.variant for c in plan.parked])
    _add_terrain(mb, plan)
    return mb.build()
