"""Deterministic road networks and block styles of the procedural towns, one generator per CARLA town name.

A town is a planar road graph in the world's ground plane (right-handed, z up, metres; the town is centred
near the origin): nodes are junctions (degree >= 3) or bends (degree 2) — never dead ends — and each edge is a
polyline from its first node to its second. Every edge has a `RoadStyle` (lanes, widths, markings, speed);
the town has a `TownStyle` that says how blocks are filled (building sizes, roofs, trees, parked cars, hills).
Everything is drawn from `np.random.default_rng` seeded by (town, seed): same inputs, same layout.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np

from sim_bridge.towns import check_town

# Centre-line marking codes (used by the road shader through `RoadStyle.centre_code`).
CENTRE_NONE, CENTRE_DOUBLE_YELLOW, CENTRE_DASHED_WHITE, CENTRE_BARRIER = 0, 1, 2, 3
_CENTRE_CODES = {"none": CENTRE_NONE, "double_yellow": CENTRE_DOUBLE_YELLOW, "dashed_white": CENTRE_DASHED_WHITE,
                 "barrier": CENTRE_BARRIER}


@dataclass(frozen=True)
class RoadStyle:
    """Cross-section and rules of a two-way road (all widths in metres, measured from the centre line outwards).

    From the centre line: `median` (half-width of the central median), `lanes` driving lanes of `lane_width`,
    a `parking` strip, a paved `shoulder`; that is the carriageway (half-width `half_width`). Beyond it a raised
    `sidewalk` (0: grass verge instead).
    """

    lanes: int = 1
    """driving lanes per direction."""
    lane_width: float = 3.5
    """width of one driving lane, m."""
    median: float = 0.0
    """half-width of the central median, m (a concrete barrier stands on it when `centre_line == "barrier"`)."""
    parking: float = 0.0
    """width of the parking strip beyond the outer lane, m (parked cars stand there)."""
    shoulder: float = 0.0
    """paved shoulder beyond the outer lane, m (highways)."""
    sidewalk: float = 3.0
    """raised sidewalk width, m; 0 = none."""
    speed: float = 9.0
    """target speed of traffic, m/s."""
    centre_line: str = "double_yellow"
    """"double_yellow" | "dashed_white" | "none" | "barrier"."""
    crosswalks: bool = True
    """zebra crossings at both ends of the edge."""
    guard_rail: bool = False
    """guard rails along both outer edges (highways)."""
    lamps: bool = True
    """street lamps along the sidewalk / verge."""

    @property
    def half_width(self) -> float:
        """Half-width of the paved carriageway, m."""
        return self.median + self.lanes * self.lane_width + self.parking + self.shoulder

    @property
    def centre_code(self) -> int:
        return _CENTRE_CODES[self.centre_line]

    def lane_offset(self, k: int) -> float:
        """Lateral distance (m) of the centre of lane k (0 = next to the centre line) from the road centre."""
        return self.median + (k + 0.5) * self.lane_width


@dataclass(frozen=True)
class TownStyle:
    """How the blocks of a town are filled (ranges are inclusive [lo, hi] draws)."""

    floors: tuple[int, int] = (2, 4)
    """storeys of a building."""
    floor_height: float = 3.2
    """storey height, m."""
    frontage: tuple[float, float] = (10.0, 24.0)
    """building width along the street, m."""
    depth: tuple[float, float] = (10.0, 20.0)
    """building depth away from the street, m."""
    setback: tuple[float, float] = (0.0, 2.0)
    """gap between sidewalk and facade, m."""
    gap: tuple[float, float] = (0.0, 4.0)
    """gap between neighbouring buildings along the street, m."""
    fill: float = 0.85
    """probability that a lot gets a building."""
    pitched_roof: float = 0.0
    """probability of a gable roof (houses)."""
    curtain_glass: float = 0.0
    """probability of a glass curtain-wall facade (office towers)."""
    palette: tuple[tuple[int, int, int], ...] = ((200, 190, 170), (170, 120, 90), (220, 215, 200), (150, 150, 155))
    """facade colours, sRGB 0..255."""
    roof_palette: tuple[tuple[int, int, int], ...] = ((120, 60, 50), (90, 90, 95), (150, 80, 50))
    """gable-roof colours, sRGB."""
    downtown: float = 0.0
    """extra storeys (times `floors[1]`) near the town centre, falling off over `downtown_radius`."""
    downtown_radius: float = 150.0
    """m."""
    street_tree_spacing: float = 0.0
    """spacing of trees planted in the sidewalk, m (0: none)."""
    yard_trees: float = 4.0
    """trees per hectare of free land inside the town."""
    conifer: float = 0.1
    """fraction of conifers among trees."""
    parked_cars: float = 0.4
    """probability per parking slot of a parked car (only on roads with a parking strip)."""
    hills: float = 20.0
    """height of the hills around the town, m."""
    water_north: float | None = None
    """y (m) of a quay on the north side beyond which there is water (Town10HD), else None."""
    lamp_spacing: float = 30.0
    """street-lamp spacing, m."""
    ground: tuple[int, int, int] = (96, 120, 60)
    """terrain colour, sRGB."""


@dataclass
class Edge:
    """A two-way road from node `a` to node `b` along `points [P,2]` (m; points[0] = node a, points[-1] = node b)."""

    a: int
    b: int
    points: np.ndarray
    style: RoadStyle

    @property
    def length(self) -> float:
        return float(np.linalg.norm(np.diff(self.points, axis=0), axis=1).sum())


@dataclass
class TownLayout:
    """A town's road graph and block style.

    Attributes:
        name: CARLA town name.
        seed: seed the layout was drawn with.
        nodes: `[V,2]` float64 node positions, m.
        edges: roads (two-way).
        extent: (xmin, ymin, xmax, ymax) of the built-up area, m.
        style: how blocks are filled.
        islands: (centre [2], radius m) of roundabout islands (grass, trees, a monument).
    """

    name: str
    seed: int
    nodes: np.ndarray
    edges: list[Edge]
    extent: tuple[float, float, float, float]
    style: TownStyle
    islands: list[tuple[np.ndarray, float]] = field(default_factory=list)

    def degree(self) -> np.ndarray:
        """`[V]` int number of edge ends at each node."""
        deg = np.zeros(len(self.nodes), dtype=int)
        for e in self.edges:
            deg[e.a] += 1
            deg[e.b] += 1
        return deg


# ----------------------------------------------------------------------------------------------- helpers


def _rng(town: str, seed: int) -> np.random.Generator:
    # crc32 of the name: stable across processes (Python's hash() is salted).
    return np.random.default_rng([zlib.crc32(town.encode()), int(seed)])


class _Net:
    """Accumulates nodes and edges while a generator draws a town."""

    def __init__(self):
        self.nodes: list[np.ndarray] = []
        self.edges: list[Edge] = []

    def node(self, p) -> int:
        self.nodes.append(np.asarray(p, dtype=float))
        return len(self.nodes) - 1

    def edge(self, a: int, b: int, style: RoadStyle, points: np.ndarray | None = None) -> None:
        pa, pb = self.nodes[a], self.nodes[b]
        if points is None:
            points = np.stack([pa, pb])
        points = np.asarray(points, dtype=float).copy()
        points[0], points[-1] = pa, pb
        self.edges.append(Edge(a, b, points, style))


def _arc(c, r: float, a0: float, a1: float, step: float = 4.0) -> np.ndarray:
    """Points `[P,2]` on a circle arc from angle a0 to a1 (radians, any sign of a1-a0), about `step` m apart."""
    n = max(2, int(math.ceil(abs(a1 - a0) * r / step)) + 1)
    a = np.linspace(a0, a1, n)
    return np.asarray(c, float) + r * np.stack([np.cos(a), np.sin(a)], axis=1)


def _bezier(p0, d0, p1, d1, step: float = 4.0, k: float = 0.4) -> np.ndarray:
    """Cubic Bézier `[P,2]` leaving p0 along unit d0 and arriving at p1 along unit d1 (control arms k·chord)."""
    p0, p1, d0, d1 = (np.asarray(v, float) for v in (p0, p1, d0, d1))
    L = float(np.linalg.norm(p1 - p0))
    c0, c1 = p0 + d0 * k * L, p1 - d1 * k * L
    n = max(2, int(math.ceil(L / step)) + 1)
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * c0 + 3 * (1 - t) * t**2 * c1 + t**3 * p1


def _wiggle(p0, p1, amp: float, rng: np.random.Generator, step: float = 5.0) -> np.ndarray:
    """A country road `[P,2]` from p0 to p1 with a smooth lateral wiggle of amplitude `amp` m (zero at the ends)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    L = float(np.linalg.norm(p1 - p0))
    n = max(2, int(math.ceil(L / step)) + 1)
    t = np.linspace(0.0, 1.0, n)
    u = (p1 - p0) / L
    nrm = np.array([-u[1], u[0]])
    # One or two half-waves with a seeded phase; sin(pi t)^2 envelope keeps both ends straight into the junctions.
    waves = rng.integers(1, 3)
    off = amp * rng.uniform(0.5, 1.0) * np.sin(math.pi * waves * t + rng.uniform(0, 0.5)) * np.sin(math.pi * t) ** 2
    return p0 + t[:, None] * (p1 - p0) + off[:, None] * nrm


def _grid(net: _Net, xs, ys, jitter: float, rng) -> np.ndarray:
    """Add a grid of nodes at (xs[i] + jitter, ys[j] + jitter); returns node ids `[len(xs), len(ys)]`."""
    ids = np.zeros((len(xs), len(ys)), dtype=int)
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            ids[i, j] = net.node((x + rng.uniform(-jitter, jitter), y + rng.uniform(-jitter, jitter)))
    return ids


def _connected(n_nodes: int, pairs: list[tuple[int, int]]) -> bool:
    adj: dict[int, list[int]] = {i: [] for i in range(n_nodes)}
    for a, b in pairs:
        adj[a].append(b)
        adj[b].append(a)
    used = [i for i in adj if adj[i]]
    if not used:
        return False
    seen, stack = {used[0]}, [used[0]]
    while stack:
        for j in adj[stack.pop()]:
            if j not in seen:
                seen.add(j)
                stack.append(j)
    return len(seen) == len(used)


def _grid_pairs(ids: np.ndarray) -> list[tuple[int, int, str]]:
    """Horizontal ('x') and vertical ('y') neighbour pairs of a node grid."""
    nx, ny = ids.shape
    pairs = [(ids[i, j], ids[i + 1, j], "x") for i in range(nx - 1) for j in range(ny)]
    pairs += [(ids[i, j], ids[i, j + 1], "y") for i in range(nx) for j in range(ny - 1)]
    return pairs


def _prune_to_t_junctions(pairs, n_nodes: int, rng, min_degree: int = 3, keep: set | None = None):
    """Remove edges between 4-way junctions so that most junctions become T-junctions (Town01's character).

    Keeps the graph connected and every node at degree >= `min_degree` unless it started lower.
    """
    pairs = list(pairs)
    order = rng.permutation(len(pairs))
    deg = np.zeros(n_nodes, dtype=int)
    for a, b, _ in pairs:
        deg[a] += 1
        deg[b] += 1
    removed = set()
    for k in order:
        a, b, _ = pairs[k]
        if keep and (a, b) in keep:
            continue
        if deg[a] >= 4 and deg[b] >= 4 and deg[a] - 1 >= min_degree and deg[b] - 1 >= min_degree:
            rest = [(p, q) for m, (p, q, _) in enumerate(pairs) if m != k and m not in removed]
            if _connected(n_nodes, rest):
                removed.add(k)
                deg[a] -= 1
                deg[b] -= 1
    return [p for m, p in enumerate(pairs) if m not in removed]


def _closed_loop(net: _Net, pts: np.ndarray, split_at: list[int], style: RoadStyle) -> list[int]:
    """Add a closed polyline `pts [P,2]` (first point not repeated) as edges between nodes at indices `split_at`.

    Returns the node ids in loop order.
    """
    split_at = sorted(split_at)
    ids = [net.node(pts[i]) for i in split_at]
    P = len(pts)
    for k, i0 in enumerate(split_at):
        i1 = split_at[(k + 1) % len(split_at)]
        idx = list(range(i0, i1 + 1)) if i1 > i0 else list(range(i0, P)) + list(range(0, i1 + 1))
        net.edge(ids[k], ids[(k + 1) % len(ids)], style, pts[idx])
    return ids


def _rounded_rect(x0, y0, x1, y1, r, step=4.0) -> np.ndarray:
    """Closed CCW polyline `[P,2]` of a rectangle with corner radius r (first point on the bottom side)."""
    segs = [
        np.array([[x0 + r, y0], [x1 - r, y0]]),
        _arc((x1 - r, y0 + r), r, -math.pi / 2, 0.0, step),
        np.array([[x1, y0 + r], [x1, y1 - r]]),
        _arc((x1 - r, y1 - r), r, 0.0, math.pi / 2, step),
        np.array([[x1 - r, y1], [x0 + r, y1]]),
        _arc((x0 + r, y1 - r), r, math.pi / 2, math.pi, step),
        np.array([[x0, y1 - r], [x0, y0 + r]]),
        _arc((x0 + r, y0 + r), r, math.pi, 1.5 * math.pi, step),
    ]
    pts = []
    for s in segs:
        # Densify straights so that junction nodes can sit anywhere along them.
        for a, b in zip(s[:-1], s[1:]):
            n = max(1, int(math.ceil(np.linalg.norm(b - a) / 10.0)))
            t = np.linspace(0, 1, n, endpoint=False)[:, None]
            pts.append(a + t * (b - a))
    pts = np.concatenate(pts)
    keep = np.ones(len(pts), bool)
    keep[1:] = np.linalg.norm(np.diff(pts, axis=0), axis=1) > 1e-6
    return pts[keep]


def _nearest_index(pts: np.ndarray, p) -> int:
    return int(np.argmin(np.linalg.norm(pts - np.asarray(p, float), axis=1)))


def _extent(net: _Net, pad: float = 0.0):
    allp = np.concatenate([e.points for e in net.edges])
    lo, hi = allp.min(0) - pad, allp.max(0) + pad
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


# ------------------------------------------------------------------------------------------- road styles

STREET = RoadStyle(lanes=1, lane_width=3.5, sidewalk=3.0, speed=9.0)
RESIDENTIAL = RoadStyle(lanes=1, lane_width=3.2, parking=2.3, sidewalk=2.5, speed=8.0, centre_line="dashed_white")
AVENUE = RoadStyle(lanes=2, lane_width=3.4, parking=2.3, sidewalk=3.5, speed=11.0)
HIGHWAY = RoadStyle(lanes=3, lane_width=3.6, median=1.0, shoulder=2.5, sidewalk=0.0, speed=22.0,
                    centre_line="barrier", crosswalks=False, guard_rail=True, lamps=True)
RAMP = RoadStyle(lanes=1, lane_width=3.8, shoulder=1.5, sidewalk=0.0, speed=13.0, centre_line="double_yellow",
                 crosswalks=False, guard_rail=False)
COUNTRY = RoadStyle(lanes=1, lane_width=3.0, sidewalk=0.0, speed=10.0, centre_line="dashed_white",
                    crosswalks=False, lamps=False)
DOWNTOWN = RoadStyle(lanes=2, lane_width=3.4, parking=2.3, sidewalk=4.5, speed=10.0)


# ------------------------------------------------------------------------------------------- generators


def _town01(rng) -> tuple[_Net, TownStyle, list]:
    net = _Net()
    xs = np.arange(5) * 88.0 - 176.0
    ys = np.arange(4) * 80.0 - 120.0
    ids = _grid(net, xs, ys, 4.0, rng)
    pairs = _prune_to_t_junctions(_grid_pairs(ids), len(net.nodes), rng, min_degree=3)
    for a, b, _ in pairs:
        net.edge(a, b, STREET)
    style = TownStyle(floors=(2, 4), frontage=(10, 22), depth=(10, 18), setback=(0.0, 1.5), fill=0.8,
                      pitched_roof=0.25, street_tree_spacing=0.0, yard_trees=6.0, conifer=0.15, hills=25.0,
                      palette=((196, 178, 150), (170, 110, 85), (215, 205, 185), (160, 160, 150), (185, 150, 110)))
    return net, style, []


def _town02(rng) -> tuple[_Net, TownStyle, list]:
    net = _Net()
    xs = np.arange(4) * 62.0 - 93.0
    ys = np.arange(4) * 58.0 - 87.0
    ids = _grid(net, xs, ys, 2.0, rng)
    pairs = _prune_to_t_junctions(_grid_pairs(ids), len(net.nodes), rng, min_degree=3)
    for a, b, _ in pairs:
        net.edge(a, b, RESIDENTIAL)
    style = TownStyle(floors=(1, 2), floor_height=3.0, frontage=(9, 14), depth=(8, 12), setback=(3.0, 6.0),
                      gap=(3.0, 8.0), fill=0.9, pitched_roof=0.9, street_tree_spacing=11.0, yard_trees=25.0,
                      conifer=0.2, parked_cars=0.35, hills=20.0, lamp_spacing=28.0,
                      palette=((235, 225, 205), (205, 185, 160), (180, 200, 210), (225, 200, 170), (200, 120, 95)),
                      roof_palette=((140, 55, 45), (90, 85, 90), (160, 90, 55), (70, 70, 80)))
    return net, style, []


def _town03(rng) -> tuple[_Net, TownStyle, list]:
    net = _Net()
    xs = np.arange(5) * 78.0 - 156.0
    ys = np.arange(5) * 74.0 - 148.0
    ids = np.full((5, 5), -1, dtype=int)
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            if (i, j) != (2, 2):
                ids[i, j] = net.node((x + rng.uniform(-3, 3), y + rng.uniform(-3, 3)))
    # Roundabout-like centre: a ring of radius R with one node where each avenue meets it.
    R = 27.0
    c = np.array([xs[2], ys[2]])
    ring = {ang: net.node(c + R * np.array([math.cos(ang), math.sin(ang)])) for ang in (0.0, math.pi / 2, math.pi, 1.5 * math.pi)}
    ring_style = RoadStyle(lanes=1, lane_width=3.8, sidewalk=3.0, speed=7.0, centre_line="dashed_white", crosswalks=False)
    angs = sorted(ring)
    for k, a0 in enumerate(angs):
        a1 = angs[(k + 1) % 4] if k < 3 else 2 * math.pi
        net.edge(ring[a0], ring[angs[(k + 1) % 4]], ring_style, _arc(c, R, a0, a1, 3.0))
    avenue = 2  # the row and column through the centre are avenues
    for i in range(5):
        for j in range(5):
            for di, dj in ((1, 0), (0, 1)):
                i2, j2 = i + di, j + dj
                if i2 > 4 or j2 > 4:
                    continue
                a, b = int(ids[i, j]), int(ids[i2, j2])
                st = AVENUE if (dj == 0 and j == avenue) or (di == 0 and i == avenue) else STREET
                if a < 0 or b < 0:
                    # An avenue into the centre ends on the ring node facing it.
                    other = b if a < 0 else a
                    ang = math.atan2(*(net.nodes[other] - c)[::-1]) % (2 * math.pi)
                    near = min(ring, key=lambda q: abs(((q - ang + math.pi) % (2 * math.pi)) - math.pi))
                    net.edge(ring[near], other, AVENUE)
                else:
                    net.edge(a, b, st)
    style = TownStyle(floors=(2, 7), frontage=(12, 28), depth=(12, 24), setback=(0.0, 1.0), gap=(0.0, 3.0), fill=0.9,
                      pitched_roof=0.08, curtain_glass=0.15, downtown=1.2, downtown_radius=140.0,
                      street_tree_spacing=14.0, yard_trees=5.0, parked_cars=0.35, hills=35.0,
                      palette=((205, 195, 175), (160, 100, 80), (225, 220, 210), (140, 145, 150), (190, 170, 140),
                               (120, 125, 135)))
    return net, style, [(c, R - ring_style.half_width - ring_style.sidewalk)]


def _town04(rng) -> tuple[_Net, TownStyle, list]:
    net = _Net()
    loop = _rounded_rect(-300.0, -190.0, 300.0, 190.0, 85.0, step=4.0)
    # Town grid in the middle of the loop, joined to the loop by two ramps (east and west) and a south road.
    xs = np.arange(4) * 70.0 - 105.0
    ys = np.arange(3) * 65.0 - 65.0
    ids = _grid(net, xs, ys, 2.0, rng)
    for a, b, _ in _grid_pairs(ids):
        net.edge(a, b, STREET)
    e_idx = _nearest_index(loop, (300.0, 40.0))
    w_idx = _nearest_index(loop, (-300.0, -40.0))
    s_idx = _nearest_index(loop, (0.0, -190.0))
    n_idx = _nearest_index(loop, (30.0, 190.0))
    lids = _closed_loop(net, loop, [e_idx, w_idx, s_idx, n_idx], HIGHWAY)
    node_of = dict(zip(sorted([e_idx, w_idx, s_idx, n_idx]), lids))
    # Ramps: leave the town heading outward, merge into the loop at ~40 degrees.
    east, west = ids[-1, 1], ids[0, 1]
    pe, pw = net.nodes[node_of[e_idx]], net.nodes[node_of[w_idx]]
    ramp_e = _bezier(net.nodes[east], (1, 0), pe, (math.sin(math.radians(40)), math.cos(math.radians(40))), k=0.45)
    net.edge(east, node_of[e_idx], RAMP, ramp_e)
    ramp_w = _bezier(net.nodes[west], (-1, 0), pw, (-math.sin(math.radians(40)), -math.cos(math.radians(40))), k=0.45)
    net.edge(west, node_of[w_idx], RAMP, ramp_w)
    net.edge(ids[1, 0], node_of[s_idx], STREET, _bezier(net.nodes[ids[1, 0]], (0, -1), net.nodes[node_of[s_idx]], (0, -1)))
    net.edge(ids[2, -1], node_of[n_idx], STREET, _bezier(net.nodes[ids[2, -1]], (0, 1), net.nodes[node_of[n_idx]], (0, 1)))
    style = TownStyle(floors=(1, 3), frontage=(9, 18), depth=(9, 15), setback=(1.0, 4.0), gap=(2.0, 6.0), fill=0.75,
                      pitched_roof=0.6, street_tree_spacing=0.0, yard_trees=8.0, conifer=0.6, hills=90.0,
                      palette=((220, 210, 190), (180, 140, 100), (200, 200, 195), (150, 110, 80)),
                      roof_palette=((110, 50, 40), (70, 70, 75), (130, 80, 50)))
    return net, style, []


def _town05(rng) -> tuple[_Net, TownStyle, list]:
    net = _Net()
    xs = np.arange(5) * 92.0 - 184.0
    ys = np.arange(4) * 84.0 - 126.0
    ids = _grid(net, xs, ys, 0.0, rng)
    for a, b, kind in _grid_pairs(ids):
        net.edge(a, b, AVENUE)
    style = TownStyle(floors=(3, 10), frontage=(14, 30), depth=(14, 26), setback=(0.0, 0.5), gap=(0.0, 2.0), fill=0.9,
                      curtain_glass=0.3, street_tree_spacing=16.0, yard_trees=3.0, parked_cars=0.45, hills=40.0,
                      palette=((210, 200, 185), (175, 120, 95), (150, 150, 160), (200, 205, 210), (120, 110, 100)))
    return net, style, []


def _town06(rng) -> tuple[_Net, TownStyle, list]:
    net = _Net()
    loop = _rounded_rect(-520.0, -75.0, 520.0, 75.0, 74.0, step=4.0)
    cross_x = [-220.0, 60.0, 300.0]
    split = []
    for x in cross_x:
        split += [_nearest_index(loop, (x, -75.0)), _nearest_index(loop, (x, 75.0))]
    lids = _closed_loop(net, loop, split, HIGHWAY)
    node_of = dict(zip(sorted(split), lids))
    connector = RoadStyle(lanes=1, lane_width=3.6, shoulder=1.0, sidewalk=0.0, speed=12.0, crosswalks=False)
    for x in cross_x:
        a, b = node_of[_nearest_index(loop, (x, -75.0))], node_of[_nearest_index(loop, (x, 75.0))]
        net.edge(a, b, connector)
    style = TownStyle(floors=(1, 3), floor_height=4.5, frontage=(20, 45), depth=(15, 30), setback=(6.0, 15.0),
                      gap=(15.0, 60.0), fill=0.5, street_tree_spacing=0.0, yard_trees=3.0, conifer=0.3, hills=60.0,
                      palette=((200, 200, 200), (170, 175, 180), (190, 170, 140), (140, 150, 160)))
    return net, style, []


def _town07(rng) -> tuple[_Net, TownStyle, list]:
    net = _Net()
    xs = np.arange(4) * 115.0 - 172.0
    ys = np.arange(3) * 105.0 - 105.0
    ids = _grid(net, xs, ys, 18.0, rng)
    pairs = _prune_to_t_junctions(_grid_pairs(ids), len(net.nodes), rng, min_degree=2)
    for a, b, _ in pairs:
        net.edge(a, b, COUNTRY, _wiggle(net.nodes[a], net.nodes[b], 9.0, rng))
    style = TownStyle(floors=(1, 2), floor_height=3.0, frontage=(8, 16), depth=(8, 14), setback=(4.0, 12.0),
                      gap=(20.0, 60.0), fill=0.5, pitched_roof=0.95, street_tree_spacing=0.0, yard_trees=20.0,
                      conifer=0.5, parked_cars=0.0, hills=70.0, lamp_spacing=0.0, ground=(110, 125, 60),
                      palette=((150, 60, 50), (210, 200, 180), (120, 90, 70), (190, 180, 160)),
                      roof_palette=((80, 70, 65), (110, 50, 40), (60, 60, 65)))
    return net, style, []


def _town10hd(rng) -> tuple[_Net, TownStyle, list]:
    net = _Net()
    xs = np.arange(4) * 82.0 - 123.0
    ys = np.arange(4) * 72.0 - 126.0
    ids = _grid(net, xs, ys, 0.0, rng)
    for a, b, kind in _grid_pairs(ids):
        net.edge(a, b, DOWNTOWN)
    water_y = float(ys[-1]) + DOWNTOWN.half_width + DOWNTOWN.sidewalk + 6.0
    style = TownStyle(floors=(6, 16), floor_height=3.6, frontage=(16, 34), depth=(16, 28), setback=(0.0, 0.3),
                      gap=(0.0, 1.0), fill=0.97, curtain_glass=0.45, downtown=1.5, downtown_radius=160.0,
                      street_tree_spacing=12.0, yard_trees=2.0, parked_cars=0.3, hills=60.0, water_north=water_y,
                      palette=((190, 185, 175), (150, 155, 165), (210, 205, 195), (110, 115, 125), (170, 130, 100),
                               (90, 100, 115)))
    return net, style, []


_GENERATORS = {
    "Town01": _town01, "Town02": _town02, "Town03": _town03, "Town04": _town04,
    "Town05": _town05, "Town06": _town06, "Town07": _town07, "Town10HD": _town10hd,
}


def build_layout(town: str, seed: int = 0) -> TownLayout:
    """The road network and block style of `town` drawn with `seed` (deterministic).

    Raises ValueError (listing the towns) for an unknown name.
    """
    check_town(town)
    rng = _rng(town, seed)
    net, style, islands = _GENERATORS[town](rng)
    layout = TownLayout(town, int(seed), np.stack(net.nodes), net.edges, _extent(net), style, islands)
    deg = layout.degree()
    if (deg == 1).any():
        raise AssertionError(f"{town}: layout has dead ends at nodes {np.flatnonzero(deg == 1).tolist()}")
    return layout
