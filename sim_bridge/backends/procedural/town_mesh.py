"""The static mesh of a planned town: roads, sidewalks, buildings, trees, props, parked cars and the terrain.

Heights: road surface z = 0 (the ego's ground), sidewalks z = KERB_H, terrain z = GROUND_Z just below the road so
that no two differently-shaded surfaces are coplanar.
"""
from __future__ import annotations

import math

import numpy as np

from sim_bridge import semantics as sem
from sim_bridge.backends.procedural import materials as M
from sim_bridge.backends.procedural.car_meshes import add_cars
from sim_bridge.backends.procedural.meshes import (
    MeshBuilder,
    MeshData,
    box,
    fan,
    fan_open,
    icosphere,
    ngon,
    prism,
    rect,
    ribbon,
    wall,
)
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

_ICO_V, _ICO_F = icosphere()


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
