"""Vehicles that drive the road network: lane keeping on the right, turns at junctions, speed along the lane.

A vehicle follows a `Route`: a dense path (0.5 m spacing, world metres) made of lane centre lines (traffic keeps
right) joined through junctions by cubic Bézier connectors, extended on demand by choosing the next road at
each junction with the vehicle's own seeded generator. Its longitudinal state is (s, v): arc length along the
route (m) and speed (m/s); each tick v moves towards the largest speed that respects the lane's speed, the
curvature ahead (lateral acceleration limit) and the gap to a vehicle ahead in the same lane, within
acceleration limits. Heading is the direction of the path over a 3 m window (smooth through polyline joints).

Everything is a pure function of the episode seed and the tick count: replaying k ticks gives the same state.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim_bridge.backends.procedural.layout import TownLayout
from sim_bridge.backends.procedural.roads import RoadGeometry, arclength, lane_polyline

STEP = 0.5
"""route sampling, m."""
A_LAT = 2.2
"""lateral acceleration limit in curves, m/s²."""
A_ACC, A_BRAKE = 1.6, 4.0
"""acceleration / braking limits, m/s²."""
HEADING_WINDOW = 1.5
"""half-window (m) of the centred difference that defines the heading."""
CAR_GAP = 7.0
"""bumper-to-centre distance kept to a leader when stopped, m."""
JUNCTION_PATIENCE = 6.0
"""seconds a vehicle waits for a held junction before it enters anyway."""


def resample(points: np.ndarray, step: float = STEP) -> np.ndarray:
    """Polyline `[P,2]` resampled at `step` m (first point kept, last point appended)."""
    s = arclength(points)
    n = max(2, int(math.floor(s[-1] / step)) + 1)
    q = np.linspace(0.0, step * (n - 1), n)
    if s[-1] - q[-1] > 1e-6:
        q = np.append(q, s[-1])
    return np.stack([np.interp(q, s, points[:, 0]), np.interp(q, s, points[:, 1])], axis=1)


def _bezier(p0, d0, p1, d1) -> np.ndarray:
    L = float(np.linalg.norm(p1 - p0))
    k = 0.38 * L
    c0, c1 = p0 + d0 * k, p1 - d1 * k
    t = np.linspace(0.0, 1.0, max(3, int(L / 0.25)))[:, None]
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * c0 + 3 * (1 - t) * t**2 * c1 + t**3 * p1


@dataclass(frozen=True)
class LaneRef:
    """A lane: `edge` index, `forward` (a -> b), `lane` (0 = next to the centre line)."""

    edge: int
    forward: bool
    lane: int


class RoadNet:
    """Lane centre lines and junction connectivity of a town (shared by all vehicles)."""

    def __init__(self, layout: TownLayout, roads: RoadGeometry):
        self.layout = layout
        self.roads = roads
        self._lanes: dict[LaneRef, np.ndarray] = {}
        self.out: dict[int, list[tuple[int, bool]]] = {i: [] for i in range(len(layout.nodes))}
        for k, e in enumerate(layout.edges):
            self.out[e.a].append((k, True))
            self.out[e.b].append((k, False))
        lengths = np.array([e.length for e in layout.edges])
        self.edge_weights = lengths / lengths.sum()

    def lane(self, ref: LaneRef) -> np.ndarray:
        """Dense centre line `[P,2]` of a lane, in the travel direction (cached)."""
        if ref not in self._lanes:
            e = self.layout.edges[ref.edge]
            self._lanes[ref] = resample(lane_polyline(self.roads.centre[ref.edge], e, ref.lane, ref.forward))
        return self._lanes[ref]

    def arrival(self, ref: LaneRef) -> int:
        e = self.layout.edges[ref.edge]
        return e.b if ref.forward else e.a

    def speed(self, ref: LaneRef) -> float:
        return self.layout.edges[ref.edge].style.speed


class Route:
    """A vehicle's path: dense points `pts [N,2]` with arc length `s [N]` and speed limits `vmax [N]` (m/s).

    Args:
        net: the town's lanes.
        start: the first lane; `s0` m along it is where the vehicle starts (route s = 0 there).
        rng: the vehicle's generator (junction choices).
        rightmost: always take the outer (right-hand) lane of each new road (the ego), else keep the lane index.
    """

    def __init__(self, net: RoadNet, start: LaneRef, s0: float, rng: np.random.Generator, rightmost: bool):
        self.net, self.rng, self.rightmost = net, rng, rightmost
        self.lane = start
        pts = net.lane(start)
        k = min(int(s0 / STEP), len(pts) - 2)
        self.pts = pts[k:]
        self.vmax = np.full(len(self.pts), net.speed(start))
        self.s = arclength(self.pts)
        self.refs = [(0.0, start)]  # (route s where a lane starts, lane)
        self.junctions: list[tuple[float, float, int]] = []  # (s entering, s leaving, node) of each connector
        self._apply_curvature(0)

    def _choose(self) -> LaneRef:
        node = self.net.arrival(self.lane)
        cur_dir = self.pts[-1] - self.pts[-3]
        cur_dir /= np.linalg.norm(cur_dir)
        options, turns = [], []
        for edge, forward in self.net.out[node]:
            if edge == self.lane.edge and forward != self.lane.forward and len(self.net.out[node]) > 1:
                continue  # no U-turns unless it is a dead end
            e = self.net.layout.edges[edge]
            lanes = e.style.lanes
            lane = lanes - 1 if self.rightmost else min(self.lane.lane, lanes - 1)
            ref = LaneRef(edge, forward, lane)
            first = self.net.lane(ref)
            d = first[min(4, len(first) - 1)] - first[0]
            d /= np.linalg.norm(d)
            turn = math.degrees(math.acos(float(np.clip(d @ cur_dir, -1, 1))))
            options.append(ref)
            turns.append(turn)
        turns = np.array(turns)
        ok = turns < 135.0
        if ok.any():
            options = [o for o, k in zip(options, ok) if k]
            turns = turns[ok]
        # Prefer going straight a little; highways keep to the highway (small turns) strongly.
        w = 1.0 + 1.5 * (turns < 30.0)
        if self.net.layout.edges[self.lane.edge].style.guard_rail:
            w = w + 6.0 * (turns < 30.0)
        return options[int(self.rng.choice(len(options), p=w / w.sum()))]

    def extend(self) -> None:
        """Append a junction connector and the next lane."""
        nxt = self._choose()
        lane_pts = self.net.lane(nxt)
        p0, p1 = self.pts[-1], lane_pts[0]
        d0 = self.pts[-1] - self.pts[-3]
        d1 = lane_pts[2] - lane_pts[0]
        conn = resample(_bezier(p0, d0 / np.linalg.norm(d0), p1, d1 / np.linalg.norm(d1)))
        v_conn = min(self.net.speed(self.lane), self.net.speed(nxt))
        new = np.concatenate([conn[1:], lane_pts[1:]])
        vm = np.concatenate([np.full(len(conn) - 1, v_conn), np.full(len(lane_pts) - 1, self.net.speed(nxt))])
        s_new = self.s[-1] + np.cumsum(np.linalg.norm(np.diff(np.concatenate([self.pts[-1:], new]), axis=0), axis=1))
        self.refs.append((float(self.s[-1] + arclength(conn)[-1]), nxt))
        self.junctions.append((float(self.s[-1]), float(self.s[-1] + arclength(conn)[-1]), self.net.arrival(self.lane)))
        self.pts = np.concatenate([self.pts, new])
        self.vmax = np.concatenate([self.vmax, vm])
        self.s = np.concatenate([self.s, s_new])
        self.lane = nxt
        self._apply_curvature(len(self.pts) - len(new) - 8)

    def _apply_curvature(self, start: int) -> None:
        """Cap `vmax` from `start` on by sqrt(A_LAT / curvature)."""
        start = max(start, 0)
        h = self._heading_at_index(np.arange(start, len(self.pts)))
        dh = np.abs((np.diff(h) + math.pi) % (2 * math.pi) - math.pi)
        kappa = np.concatenate([dh / STEP, [0.0]])
        # Curvature from the 3 m heading window is smeared; a small max-filter keeps the cap over the whole turn.
        kappa = np.maximum.reduce([np.roll(kappa, r) for r in range(-4, 5)])
        cap = np.sqrt(A_LAT / np.maximum(kappa, 1e-6))
        self.vmax[start:] = np.minimum(self.vmax[start:], np.maximum(cap, 2.5))

    def next_junction(self, s: float) -> tuple[float, float, int] | None:
        """The first junction connector (s_in, s_out, node) not yet left at arc length s."""
        self.ensure(s + 60.0)
        for j in self.junctions:
            if j[1] > s:
                return j
        return None

    def ensure(self, s_needed: float) -> None:
        while self.s[-1] < s_needed:
            self.extend()

    def _heading_at_index(self, idx: np.ndarray) -> np.ndarray:
        w = int(round(HEADING_WINDOW / STEP))
        a = np.clip(idx - w, 0, len(self.pts) - 1)
        b = np.clip(idx + w, 0, len(self.pts) - 1)
        d = self.pts[b] - self.pts[a]
        return np.arctan2(d[:, 1], d[:, 0])

    def pose(self, s: float) -> tuple[float, float, float]:
        """(x, y, yaw) at route arc length s: position interpolated on the path, yaw from the 3 m window."""
        self.ensure(s + HEADING_WINDOW + 1.0)
        x = float(np.interp(s, self.s, self.pts[:, 0]))
        y = float(np.interp(s, self.s, self.pts[:, 1]))
        xa, ya = np.interp(s - HEADING_WINDOW, self.s, self.pts[:, 0]), np.interp(s - HEADING_WINDOW, self.s, self.pts[:, 1])
        xb, yb = np.interp(s + HEADING_WINDOW, self.s, self.pts[:, 0]), np.interp(s + HEADING_WINDOW, self.s, self.pts[:, 1])
        return x, y, math.atan2(yb - ya, xb - xa)

    def allowed_speed(self, s: float, v: float) -> float:
        """Largest speed at s from which every limit ahead can be met braking at A_BRAKE."""
        horizon = v * v / (2 * A_BRAKE) + 10.0
        self.ensure(s + horizon + 5.0)
        i0, i1 = np.searchsorted(self.s, [s, s + horizon])
        ahead = slice(i0, max(i1, i0 + 1))
        dist = np.maximum(self.s[ahead] - s, 0.0)
        return float(np.min(np.sqrt(self.vmax[ahead] ** 2 + 2 * A_BRAKE * dist)))


@dataclass
class Vehicle:
    """A driving vehicle: its `route`, arc length `s` (m), speed `v` (m/s), look (`colour` sRGB, `variant`)."""

    route: Route
    s: float
    v: float
    colour: tuple = (200, 200, 200)
    variant: int = 0
    holding: tuple | None = None
    """the junction (s_in, s_out, node) this vehicle has reserved."""
    waited: float = 0.0
    """seconds spent waiting at the current junction."""

    def pose(self) -> tuple[float, float, float]:
        return self.route.pose(self.s)


class Traffic:
    """The ego (index 0) and other cars; `tick(dt)` advances them all.

    Args:
        net: the town's lanes.
        seed: episode seed (spawn points, routes, colours).
        n_cars: number of other moving cars.
    """

    def __init__(self, net: RoadNet, seed: int, n_cars: int, colours: tuple):
        self.net = net
        rng = np.random.default_rng([int(seed), 101])
        self.vehicles: list[Vehicle] = []
        taken: list[np.ndarray] = []
        ego_ref, ego_s = self._spawn(rng, rightmost=True, taken=taken)
        ego_route = Route(net, ego_ref, ego_s, np.random.default_rng([int(seed), 0]), rightmost=True)
        self.vehicles.append(Vehicle(ego_route, 0.0, 0.0))
        taken.append(np.array(ego_route.pose(0.0)[:2]))
        for i in range(n_cars):
            ref, s0 = self._spawn(rng, rightmost=False, taken=taken)
            route = Route(net, ref, s0, np.random.default_rng([int(seed), 1 + i]), rightmost=False)
            taken.append(np.array(route.pose(0.0)[:2]))
            colour = colours[int(rng.integers(len(colours)))]
            self.vehicles.append(Vehicle(route, 0.0, 0.0, colour, int(rng.integers(3))))
        # Start every vehicle at a cruising speed so the first frames already look like a drive.
        for veh in self.vehicles:
            veh.v = min(veh.route.allowed_speed(0.0, 20.0), float(veh.route.vmax[0])) * 0.9
        self.ticks = 0
        self.held: dict[int, dict[int, np.ndarray]] = {}  # junction node -> {vehicle index: its path through it}

    def _spawn(self, rng, rightmost: bool, taken: list) -> tuple[LaneRef, float]:
        for _ in range(200):
            edge = int(rng.choice(len(self.net.layout.edges), p=self.net.edge_weights))
            e = self.net.layout.edges[edge]
            forward = bool(rng.integers(2))
            lane = e.style.lanes - 1 if rightmost else int(rng.integers(e.style.lanes))
            ref = LaneRef(edge, forward, lane)
            pts = self.net.lane(ref)
            L = len(pts) * STEP
            s0 = float(rng.uniform(0.15, 0.7) * L)
            p = pts[min(int(s0 / STEP), len(pts) - 1)]
            if all(np.linalg.norm(p - q) > 15.0 for q in taken):
                return ref, s0
        return ref, s0

    def poses(self) -> np.ndarray:
        """`[n,3]` (x, y, yaw) of all vehicles, ego first."""
        return np.array([v.pose() for v in self.vehicles])

    def tick(self, dt: float) -> None:
        """Advance all vehicles by dt seconds.

        Speeds respect, in this order: the route's limits ahead, the gap to a vehicle ahead in the same lane
        (previous poses), and junction reservations — a vehicle enters a junction only when no other vehicle
        holds it (first come, lower index first within a tick; after `JUNCTION_PATIENCE` s of waiting it goes
        anyway, so no cycle of waits can stall the ego).
        """
        P = self.poses()
        n = len(P)
        h = np.stack([np.cos(P[:, 2]), np.sin(P[:, 2])], 1)
        rel = P[None, :, :2] - P[:, None, :2]  # [i, j] = p_j - p_i
        lon = (rel * h[:, None, :]).sum(-1)
        lat = rel[..., 1] * h[:, None, 0] - rel[..., 0] * h[:, None, 1]
        same = (h @ h.T) > 0.5
        ahead = same & (lon > 0.1) & (np.abs(lat) < 1.7) & ~np.eye(n, dtype=bool)
        gap = np.where(ahead, lon, np.inf).min(axis=1)
        for i, veh in enumerate(self.vehicles):
            v_allow = veh.route.allowed_speed(veh.s, veh.v)
            if np.isfinite(gap[i]):
                v_allow = min(v_allow, math.sqrt(max(0.0, 2 * A_BRAKE * 0.5 * (gap[i] - CAR_GAP))))
            v_allow = min(v_allow, self._junction_limit(i, veh, dt))
            dv = float(np.clip(v_allow - veh.v, -A_BRAKE * dt, A_ACC * dt))
            veh.v = max(0.0, veh.v + dv)
            veh.s += veh.v * dt
        self.ticks += 1

    def _junction_limit(self, i: int, veh: "Vehicle", dt: float) -> float:
        """Speed cap from junction reservations for vehicle i (and bookkeeping of what it holds).

        Several vehicles may hold one junction when their paths through it stay apart (> `CLEARANCE` m) or
        start from the same lane (they queue by car following).
        """
        if veh.holding is not None and veh.s > veh.holding[1]:
            self._release(i, veh.holding[2])
            veh.holding = None
        j = veh.route.next_junction(veh.s)
        if j is None:
            return math.inf
        s_in, s_out, node = j
        reach = veh.v * veh.v / (2 * A_BRAKE) + 6.0
        if s_in - veh.s > reach:
            return math.inf
        holders = self.held.setdefault(node, {})
        if i in holders:
            return math.inf
        path = veh.route.pts[np.searchsorted(veh.route.s, s_in):np.searchsorted(veh.route.s, s_out) + 1]
        clash = [k for k, other in holders.items() if _paths_conflict(path, other)]
        if not clash or veh.waited > JUNCTION_PATIENCE:
            holders[i] = path
            veh.holding = j
            veh.waited = 0.0
            return math.inf
        veh.waited += dt
        return math.sqrt(max(0.0, 2 * A_BRAKE * (s_in - 1.5 - veh.s)))

    def _release(self, i: int, node: int) -> None:
        self.held.get(node, {}).pop(i, None)


CLEARANCE = 3.0
"""minimum distance (m) between two paths through a junction for them to be used at the same time."""


def _paths_conflict(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two junction paths `[P,2]`, `[Q,2]` come closer than CLEARANCE (same-entry paths queue instead)."""
    if np.linalg.norm(a[0] - b[0]) < 1.0:
        return False
    d2 = ((a[::2, None, :] - b[None, ::2, :]) ** 2).sum(-1)
    return bool(d2.min() < CLEARANCE * CLEARANCE)
