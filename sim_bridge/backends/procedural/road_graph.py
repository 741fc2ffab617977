"""Road graphs of the procedural towns: the road cross-section (`RoadStyle`), the edge (`Edge`), and the drawing
tools the town generators of `layout` use (`RoadGraph`, curves, grids, pruning to T-junctions).

A road graph lies in the world's ground plane (right-handed, z up, metres): nodes are junctions (degree >= 3) or
bends (degree 2), and each edge is a polyline `[P,2]` from its first node to its second. Every random draw comes
from the `np.random.Generator` the caller passes, in a fixed order, so the same generator state draws the same
graph.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: Centre-line marking codes (the road shader reads them through `RoadStyle.centre_code`).
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
        """The `CENTRE_*` code of `centre_line`."""
        return _CENTRE_CODES[self.centre_line]

    def lane_offset(self, k: int) -> float:
        """Lateral distance (m) of the centre of lane k (0 = next to the centre line) from the road centre."""
        return self.median + (k + 0.5) * self.lane_width


@dataclass
class Edge:
    """A two-way road from node `a` to node `b` along `points [P,2]` (m; points[0] = node a, points[-1] = node b)."""

    a: int
    b: int
    points: np.ndarray
    style: RoadStyle

    @property
    def length(self) -> float:
        """Length of the polyline, m."""
        return float(np.linalg.norm(np.diff(self.points, axis=0), axis=1).sum())


class RoadGraph:
    """Accumulates nodes (`[2]` float64 positions, m) and edges while a generator draws a town."""

    def __init__(self):
        self.nodes: list[np.ndarray] = []
        self.edges: list[Edge] = []

    def node(self, p) -> int:
        """Add a node at `p` (x, y) m; returns its id."""
        self.nodes.append(np.asarray(p, dtype=float))
        return len(self.nodes) - 1

    def edge(self, a: int, b: int, style: RoadStyle, points: np.ndarray | None = None) -> None:
        """Add a road from node `a` to node `b` along `points [P,2]` (default: the straight segment); its end
        points are set to the nodes' positions."""
        pa, pb = self.nodes[a], self.nodes[b]
        if points is None:
            points = np.stack([pa, pb])
        points = np.asarray(points, dtype=float).copy()
        points[0], points[-1] = pa, pb
        self.edges.append(Edge(a, b, points, style))

    def extent(self, pad: float = 0.0) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) m of all edge points, grown by `pad` m."""
        allp = np.concatenate([e.points for e in self.edges])
        lo, hi = allp.min(0) - pad, allp.max(0) + pad
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


# ----------------------------------------------------------------------------------------------- curves


def arc(c, r: float, a0: float, a1: float, step: float = 4.0) -> np.ndarray:
    """Points `[P,2]` on a circle arc from angle a0 to a1 (radians, any sign of a1-a0), about `step` m apart."""
    n = max(2, int(math.ceil(abs(a1 - a0) * r / step)) + 1)
    a = np.linspace(a0, a1, n)
    return np.asarray(c, float) + r * np.stack([np.cos(a), np.sin(a)], axis=1)


def bezier(p0, d0, p1, d1, step: float = 4.0, k: float = 0.4) -> np.ndarray:
    """Cubic Bézier `[P,2]` leaving p0 along unit d0 and arriving at p1 along unit d1 (control arms k·chord)."""
    p0, p1, d0, d1 = (np.asarray(v, float) for v in (p0, p1, d0, d1))
    L = float(np.linalg.norm(p1 - p0))
    c0, c1 = p0 + d0 * k * L, p1 - d1 * k * L
    n = max(2, int(math.ceil(L / step)) + 1)
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * c0 + 3 * (1 - t) * t**2 * c1 + t**3 * p1


def wiggle(p0, p1, amp: float, rng: np.random.Generator, step: float = 5.0) -> np.ndarray:
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


def rounded_rect(x0, y0, x1, y1, r, step=4.0) -> np.ndarray:
    """Closed CCW polyline `[P,2]` (m) of a rectangle with corner radius r (first point on the bottom side)."""
    segs = [
        np.array([[x0 + r, y0], [x1 - r, y0]]),
        arc((x1 - r, y0 + r), r, -math.pi / 2, 0.0, step),
        np.array([[x1, y0 + r], [x1, y1 - r]]),
        arc((x1 - r, y1 - r), r, 0.0, math.pi / 2, step),
        np.array([[x1 - r, y1], [x0 + r, y1]]),
        arc((x0 + r, y1 - r), r, math.pi / 2, math.pi, step),
        np.array([[x0, y1 - r], [x0, y0 + r]]),
        arc((x0 + r, y0 + r), r, math.pi, 1.5 * math.pi, step),
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


def nearest_index(pts: np.ndarray, p) -> int:
    """Index of the point of `pts [P,2]` nearest to `p` (x, y)."""
    return int(np.argmin(np.linalg.norm(pts - np.asarray(p, float), axis=1)))


def closed_loop(graph: RoadGraph, pts: np.ndarray, split_at: list[int], style: RoadStyle) -> list[int]:
    """Add a closed polyline `pts [P,2]` (first point not repeated) as edges between nodes at indices `split_at`.

    Returns the node ids in loop order.
    """
    split_at = sorted(split_at)
    ids = [graph.node(pts[i]) for i in split_at]
    P = len(pts)
    for k, i0 in enumerate(split_at):
        i1 = split_at[(k + 1) % len(split_at)]
        idx = list(range(i0, i1 + 1)) if i1 > i0 else list(range(i0, P)) + list(range(0, i1 + 1))
        graph.edge(ids[k], ids[(k + 1) % len(ids)], style, pts[idx])
    return ids


# ----------------------------------------------------------------------------------------------- grids


def grid_nodes(graph: RoadGraph, xs, ys, jitter: float, rng) -> np.ndarray:
    """Add a grid of nodes at (xs[i] + jitter, ys[j] + jitter) (a uniform draw in ±`jitter` m per coordinate,
    drawn even when `jitter` is 0); returns node ids `[len(xs), len(ys)]`."""
    ids = np.zeros((len(xs), len(ys)), dtype=int)
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            ids[i, j] = graph.node((x + rng.uniform(-jitter, jitter), y + rng.uniform(-jitter, jitter)))
    return ids


def grid_pairs(ids: np.ndarray) -> list[tuple[int, int, str]]:
    """Horizontal ('x') and vertical ('y') neighbour pairs `(a, b, axis)` of a node grid `ids [nx, ny]`."""
    nx, ny = ids.shape
    pairs = [(ids[i, j], ids[i + 1, j], "x") for i in range(nx - 1) for j in range(ny)]
    pairs += [(ids[i, j], ids[i, j + 1], "y") for i in range(nx) for j in range(ny - 1)]
    return pairs


def connected(n_nodes: int, pairs: list[tuple[int, int]]) -> bool:
    """True when the nodes used by the edges `pairs` form one connected graph (False for no edges)."""
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


def prune_to_t_junctions(pairs, n_nodes: int, rng, min_degree: int = 3, keep: set | None = None):
    """Remove edges between 4-way junctions so that most junctions become T-junctions (Town01's character).

    Keeps the graph connected and every node at degree >= `min_degree` unless it started lower; the edges
    `(a, b)` in `keep` stay. Returns the remaining `(a, b, axis)` pairs in their order.
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
            if connected(n_nodes, rest):
                removed.add(k)
                deg[a] -= 1
                deg[b] -= 1
    return [p for m, p in enumerate(pairs) if m not in removed]
