"""What stands in a town besides roads: buildings, trees, street furniture and parked cars (deterministic).

`plan_town(layout, roads)` fills lots along every road with buildings (footprints checked against a 1 m
occupancy raster so nothing overlaps roads, sidewalks or each other), plants street and yard trees, puts lamps
along sidewalks, signs and traffic lights at junctions and parks cars in parking strips. All positions are
world metres (z up); yaw is the counter-clockwise angle of the object's local x axis from world +x (radians).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sim_bridge.backends.procedural.layout import TownLayout
from sim_bridge.backends.procedural.roads import RoadGeometry, arclength, point_at, rot90

# Facade kinds (the shader's window patterns).
FACADE_PUNCHED, FACADE_CURTAIN, FACADE_HOUSE = 0, 1, 2


@dataclass
class Building:
    """A building: a box footprint (+ optional tower on top, + optional gable roof).

    Attributes:
        centre: `[2]` footprint centre, m. yaw: rad, local x runs along the street.
        width, depth: footprint along local x / y, m. height: wall height, m (ground at z=0).
        floor_h: storey height, m. colour, roof_colour: sRGB 0..255.
        roof: "flat" | "gable"; roof_h: gable height, m.
        facade: FACADE_* kind; win_spacing: m between window centres; win_w, win_h: window size as fractions of
        spacing / storey; ground_h: shop-front storey height (0: none).
        tower: (width, depth, height) of a narrower block on the roof, or None.
    """

    centre: np.ndarray
    yaw: float
    width: float
    depth: float
    height: float
    floor_h: float
    colour: tuple
    roof: str
    roof_colour: tuple
    roof_h: float
    facade: int
    win_spacing: float
    win_w: float
    win_h: float
    ground_h: float
    tower: tuple | None = None


@dataclass
class Tree:
    """A tree at `pos [2]`: trunk height/radius, crown radius/height (m), `conifer`, crown colour sRGB."""

    pos: np.ndarray
    trunk_h: float
    trunk_r: float
    crown_r: float
    crown_h: float
    conifer: bool
    colour: tuple


@dataclass
class Prop:
    """Street furniture: kind "lamp" | "sign" | "light" | "gantry"; `pos [2]`, `yaw` (rad, the side it faces /
    the arm points to), `variant` (sign type / size), `height` m."""

    kind: str
    pos: np.ndarray
    yaw: float
    variant: int = 0
    height: float = 7.0


@dataclass
class ParkedCar:
    """A parked car at `pos [2]` with `yaw` (rad), `colour` sRGB and body `variant` (0 sedan, 1 hatch, 2 van)."""

    pos: np.ndarray
    yaw: float
    colour: tuple
    variant: int


@dataclass
class TownPlan:
    """Everything placed in a town (see module doc)."""

    layout: TownLayout
    roads: RoadGeometry
    buildings: list[Building] = field(default_factory=list)
    trees: list[Tree] = field(default_factory=list)
    props: list[Prop] = field(default_factory=list)
    parked: list[ParkedCar] = field(default_factory=list)
    bounds: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    """(xmin, ymin, xmax, ymax) of the flat town ground, m."""


CAR_COLOURS = ((200, 200, 205), (30, 30, 35), (160, 20, 25), (20, 50, 120), (120, 125, 130), (235, 235, 230),
               (60, 90, 60), (180, 140, 40), (90, 20, 30), (40, 110, 160))


class Occupancy:
    """A boolean raster over the town (1 m cells) of taken ground, for overlap checks while placing."""

    def __init__(self, bounds, res: float = 1.0):
        self.x0, self.y0 = bounds[0], bounds[1]
        self.res = res
        self.nx = int(math.ceil((bounds[2] - bounds[0]) / res)) + 1
        self.ny = int(math.ceil((bounds[3] - bounds[1]) / res)) + 1
        self.grid = np.zeros((self.nx, self.ny), dtype=bool)

    def _cells(self, pts: np.ndarray):
        i = np.floor((pts[:, 0] - self.x0) / self.res).astype(int)
        j = np.floor((pts[:, 1] - self.y0) / self.res).astype(int)
        inside = (i >= 0) & (i < self.nx) & (j >= 0) & (j < self.ny)
        return i, j, inside

    def mark_band(self, p0, p1, radius: float) -> None:
        """Mark cells whose centre is within `radius` m of segment p0-p1."""
        lo = np.minimum(p0, p1) - radius
        hi = np.maximum(p0, p1) + radius
        i0, j0 = max(0, int((lo[0] - self.x0) / self.res)), max(0, int((lo[1] - self.y0) / self.res))
        i1, j1 = min(self.nx, int((hi[0] - self.x0) / self.res) + 2), min(self.ny, int((hi[1] - self.y0) / self.res) + 2)
        if i1 <= i0 or j1 <= j0:
            return
        xs = self.x0 + (np.arange(i0, i1) + 0.5) * self.res
        ys = self.y0 + (np.arange(j0, j1) + 0.5) * self.res
        px, py = np.meshgrid(xs, ys, indexing="ij")
        d = p1 - p0
        L2 = max(float(d @ d), 1e-9)
        t = np.clip(((px - p0[0]) * d[0] + (py - p0[1]) * d[1]) / L2, 0, 1)
        dist2 = (px - p0[0] - t * d[0]) ** 2 + (py - p0[1] - t * d[1]) ** 2
        self.grid[i0:i1, j0:j1] |= dist2 <= radius * radius

    def mark_disc(self, c, r: float) -> None:
        self.mark_band(np.asarray(c, float), np.asarray(c, float), r)

    def rect_points(self, c, yaw: float, w: float, d: float, margin: float = 0.0) -> np.ndarray:
        """Sample points `[K,2]` covering a rotated rectangle (0.5 m spacing)."""
        nu = max(2, int(math.ceil((w + 2 * margin) / 0.5)) + 1)
        nv = max(2, int(math.ceil((d + 2 * margin) / 0.5)) + 1)
        u, v = np.meshgrid(np.linspace(-w / 2 - margin, w / 2 + margin, nu), np.linspace(-d / 2 - margin, d / 2 + margin, nv))
        cy, sy = math.cos(yaw), math.sin(yaw)
        return np.stack([c[0] + cy * u.ravel() - sy * v.ravel(), c[1] + sy * u.ravel() + cy * v.ravel()], axis=1)

    def free(self, pts: np.ndarray) -> bool:
        """True when every point lies inside the raster on a free cell."""
        i, j, inside = self._cells(pts)
        return bool(inside.all() and not self.grid[i, j].any())

    def mark(self, pts: np.ndarray) -> None:
        i, j, inside = self._cells(pts)
        self.grid[i[inside], j[inside]] = True


def _tangent_at(points: np.ndarray, s: float) -> np.ndarray:
    sl = arclength(points)
    k = int(np.clip(np.searchsorted(sl, s) - 1, 0, len(points) - 2))
    u = points[k + 1] - points[k]
    return u / np.linalg.norm(u)


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def plan_town(layout: TownLayout, roads: RoadGeometry, seed: int = 0) -> TownPlan:
    """Place buildings, trees, props and parked cars for `layout` (deterministic in `seed`)."""
    rng = np.random.default_rng([int(seed), 7, len(layout.edges)])
    st = layout.style
    x0, y0, x1, y1 = layout.extent
    pad = 45.0
    bounds = (x0 - pad, y0 - pad, x1 + pad, y1 + pad)
    plan = TownPlan(layout, roads, bounds=bounds)
    occ = Occupancy(bounds)
    # Roads (carriageway + sidewalk + a little) and junction areas are taken.
    for e, c in zip(layout.edges, roads.centre):
        r = e.style.half_width + max(e.style.sidewalk, 1.0) + 0.3
        for p, q in zip(e.points[:-1], e.points[1:]):
            occ.mark_band(p, q, r)
    for j in roads.junctions:
        for p in j.polygon:
            occ.mark_band(j.centre, p, 1.5)
        for cn in j.corners:
            for p in cn.polygon:
                occ.mark_band(j.centre, p, 1.0)
    if st.water_north is not None:
        occ.grid[:, max(0, int((st.water_north - occ.y0) / occ.res)):] = True
    for c, r in layout.islands:
        occ.mark_disc(c, r + 0.5)

    _place_props(plan, occ, rng)
    _place_parked(plan, rng)
    _place_buildings(plan, occ, rng)
    _place_trees(plan, occ, rng)
    return plan


def _place_props(plan: TownPlan, occ: Occupancy, rng) -> None:
    layout, roads = plan.layout, plan.roads
    st = layout.style
    # Lamps along each edge, alternating sides, arm over the road.
    for e, c in zip(layout.edges, roads.centre):
        if not e.style.lamps or st.lamp_spacing <= 0:
            continue
        L = float(arclength(c)[-1])
        spacing = st.lamp_spacing * (2.0 if e.style.guard_rail else 1.0)
        n = int(L // spacing)
        for k in range(n):
            s = (k + 0.5) * L / max(n, 1)
            side = 1.0 if k % 2 == 0 else -1.0
            u = _tangent_at(c, s)
            nrm = rot90(u) * side
            lat = e.style.half_width + (0.5 if e.style.sidewalk > 0 else 1.6)
            pos = point_at(c, s) + nrm * lat
            plan.props.append(Prop("lamp", pos, math.atan2(-nrm[1], -nrm[0]), 0, 8.0 if e.style.guard_rail else 7.0))
            occ.mark_disc(pos, 1.0)
    # Signs at the approach of every junction (right-hand side), traffic lights at 4-way city junctions.
    deg = layout.degree()
    for k, (e, c) in enumerate(zip(layout.edges, roads.centre)):
        for at_end in (True, False):
            node = e.b if at_end else e.a
            if deg[node] < 3:
                continue
            pts = c if at_end else c[::-1]  # travelling towards the node
            L = float(arclength(pts)[-1])
            u = _tangent_at(pts, L - 0.5)
            right = -rot90(u)
            lat = e.style.half_width + (0.6 if e.style.sidewalk > 0 else 1.8)
            pos = point_at(pts, L - 2.0) + right * lat
            if e.style.lanes >= 2 and deg[node] >= 4 and e.style.sidewalk > 0:
                plan.props.append(Prop("light", pos, math.atan2(-right[1], -right[0]), 0, 6.0))
            elif rng.random() < 0.8:
                plan.props.append(Prop("sign", pos, math.atan2(-u[1], -u[0]), int(rng.integers(4)), 2.6))
            occ.mark_disc(pos, 0.8)
    # Big direction signs along highways.
    for e, c in zip(layout.edges, roads.centre):
        if not e.style.guard_rail:
            continue
        L = float(arclength(c)[-1])
        for s in np.arange(120.0, L - 60.0, 260.0):
            u = _tangent_at(c, s)
            pos = point_at(c, s) - rot90(u) * (e.style.half_width + 2.5)
            plan.props.append(Prop("gantry", pos, math.atan2(-u[1], -u[0]), 4, 6.0))


def _place_parked(plan: TownPlan, rng) -> None:
    layout, roads = plan.layout, plan.roads
    st = layout.style
    for e, c in zip(layout.edges, roads.centre):
        if e.style.parking <= 0 or st.parked_cars <= 0:
            continue
        L = float(arclength(c)[-1])
        lat = e.style.median + e.style.lanes * e.style.lane_width + e.style.parking / 2
        for side in (1.0, -1.0):
            for s in np.arange(8.0, L - 8.0, 6.2):
                if rng.random() >= st.parked_cars:
                    continue
                u = _tangent_at(c, s)
                pos = point_at(c, s) + rot90(u) * lat * side
                yaw = math.atan2(u[1], u[0]) if side < 0 else math.atan2(-u[1], -u[0])
                plan.parked.append(ParkedCar(pos, yaw + rng.uniform(-0.03, 0.03), _pick(rng, CAR_COLOURS), int(rng.integers(3))))


def _place_buildings(plan: TownPlan, occ: Occupancy, rng) -> None:
    layout, roads = plan.layout, plan.roads
    st = layout.style
    centre_xy = np.array([(layout.extent[0] + layout.extent[2]) / 2, (layout.extent[1] + layout.extent[3]) / 2])
    for e, c in zip(layout.edges, roads.centre):
        L = float(arclength(c)[-1])
        highway = e.style.guard_rail
        fill = st.fill * (0.4 if highway else 1.0)
        for side in (1.0, -1.0):
            s = float(rng.uniform(0.0, 3.0))
            while s < L - 4.0:
                w = float(rng.uniform(*st.frontage))
                d = float(rng.uniform(*st.depth))
                setback = float(rng.uniform(*st.setback)) + (14.0 if highway else 0.0)
                gap = float(rng.uniform(*st.gap))
                sm = min(s + w / 2, L)
                u = _tangent_at(c, sm)
                nrm = rot90(u) * side
                front = e.style.half_width + max(e.style.sidewalk, 1.0) + 1.0 + setback
                placed = False
                if rng.random() < fill:
                    for shrink in (1.0, 0.7, 0.5):
                        dd = d * shrink
                        ctr = point_at(c, sm) + nrm * (front + dd / 2)
                        yaw = math.atan2(u[1], u[0])
                        pts = occ.rect_points(ctr, yaw, w, dd, margin=0.3)
                        if occ.free(pts):
                            occ.mark(pts)
                            plan.buildings.append(_make_building(ctr, yaw, w, dd, st, rng, centre_xy))
                            placed = True
                            break
                s += (w + gap) if placed else 3.0


def _make_building(ctr, yaw, w, d, st, rng, centre_xy) -> Building:
    floors = int(rng.integers(st.floors[0], st.floors[1] + 1))
    if st.downtown > 0:
        fall = math.exp(-(np.linalg.norm(ctr - centre_xy) / st.downtown_radius) ** 2)
        floors += int(round(st.downtown * st.floors[1] * fall * rng.uniform(0.2, 1.0)))
    fh = st.floor_height * rng.uniform(0.95, 1.05)
    height = floors * fh + rng.uniform(0.3, 1.2)  # parapet / plinth
    gable = rng.random() < st.pitched_roof and floors <= 3
    r = rng.random()
    if gable:
        facade = FACADE_HOUSE
    elif r < st.curtain_glass and floors >= 4:
        facade = FACADE_CURTAIN
    else:
        facade = FACADE_PUNCHED
    colour = _pick(rng, st.palette)
    jitter = rng.uniform(-12, 12, 3)
    colour = tuple(int(np.clip(v + j, 0, 255)) for v, j in zip(colour, jitter))
    tower = None
    if floors >= 10 and rng.random() < 0.6 and min(w, d) > 14:
        tower = (w * rng.uniform(0.55, 0.8), d * rng.uniform(0.55, 0.8), floors * fh * rng.uniform(0.3, 0.7))
    ground_h = fh * 1.3 if (facade != FACADE_HOUSE and floors >= 3 and rng.random() < 0.6) else 0.0
    return Building(
        centre=np.asarray(ctr, float), yaw=float(yaw), width=float(w), depth=float(d), height=float(height),
        floor_h=float(fh), colour=colour, roof="gable" if gable else "flat", roof_colour=_pick(rng, st.roof_palette),
        roof_h=float(min(w, d) * rng.uniform(0.25, 0.4)), facade=facade,
        win_spacing=float(rng.uniform(2.4, 3.6) if facade != FACADE_CURTAIN else rng.uniform(1.4, 1.9)),
        win_w=float(rng.uniform(0.4, 0.62)), win_h=float(rng.uniform(0.45, 0.6)), ground_h=float(ground_h), tower=tower)


def _make_tree(pos, rng, conifer: bool, scale: float = 1.0) -> Tree:
    if conifer:
        h = rng.uniform(7.0, 14.0) * scale
        return Tree(np.asarray(pos, float), h * 0.25, rng.uniform(0.15, 0.25), rng.uniform(1.6, 2.6) * scale, h * 0.8, True,
                    tuple(int(v) for v in rng.integers((25, 60, 30), (45, 90, 50))))
    crown = rng.uniform(2.0, 3.6) * scale
    return Tree(np.asarray(pos, float), rng.uniform(2.2, 3.5) * scale, rng.uniform(0.15, 0.3), crown, crown * rng.uniform(1.3, 1.8),
                False, tuple(int(v) for v in rng.integers((45, 85, 25), (90, 140, 55))))


def _place_trees(plan: TownPlan, occ: Occupancy, rng) -> None:
    layout, roads = plan.layout, plan.roads
    st = layout.style
    props = np.array([p.pos for p in plan.props]) if plan.props else np.zeros((0, 2))
    # Street trees in wide sidewalks.
    if st.street_tree_spacing > 0:
        for e, c in zip(layout.edges, roads.centre):
            if e.style.sidewalk < 2.4:
                continue
            L = float(arclength(c)[-1])
            for side in (1.0, -1.0):
                for s in np.arange(6.0 + rng.uniform(0, 3), L - 6.0, st.street_tree_spacing):
                    u = _tangent_at(c, s)
                    pos = point_at(c, s) + rot90(u) * side * (e.style.half_width + e.style.sidewalk * 0.62)
                    if len(props) and np.min(np.linalg.norm(props - pos, axis=1)) < 3.0:
                        continue
                    plan.trees.append(_make_tree(pos, rng, False, 0.8))
    # Country-road verges: trees in loose rows.
    for e, c in zip(layout.edges, roads.centre):
        if e.style.sidewalk > 0 or e.style.guard_rail:
            continue
        L = float(arclength(c)[-1])
        for side in (1.0, -1.0):
            s = rng.uniform(0, 10)
            while s < L:
                u = _tangent_at(c, s)
                pos = point_at(c, s) + rot90(u) * side * (e.style.half_width + rng.uniform(3.0, 8.0))
                t = _make_tree(pos, rng, rng.random() < st.conifer)
                if occ.free(occ.rect_points(pos, 0.0, 1.0, 1.0)):
                    plan.trees.append(t)
                    occ.mark_disc(pos, 1.5)
                s += rng.uniform(8.0, 30.0)
    # Yard / park trees on free land, plus roundabout islands.
    x0, y0, x1, y1 = plan.bounds
    n = int(st.yard_trees * (x1 - x0) * (y1 - y0) / 1e4)
    for _ in range(n):
        pos = np.array([rng.uniform(x0 + 3, x1 - 3), rng.uniform(y0 + 3, y1 - 3)])
        t = _make_tree(pos, rng, rng.random() < st.conifer)
        r = max(1.0, t.crown_r * 0.6)
        if occ.free(occ.rect_points(pos, 0.0, 2 * r, 2 * r)):
            plan.trees.append(t)
            occ.mark_disc(pos, r)
    for c, R in layout.islands:
        for k in range(6):
            a = 2 * math.pi * k / 6 + rng.uniform(-0.2, 0.2)
            plan.trees.append(_make_tree(np.asarray(c) + (R * 0.62) * np.array([math.cos(a), math.sin(a)]), rng, False, 0.9))
        plan.props.append(Prop("monument", np.asarray(c, float), 0.0, 0, 9.0))
