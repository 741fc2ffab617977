"""Deterministic road networks and block styles of the procedural towns, one per CARLA town name.

A town is a road graph (`road_graph`: nodes, edges with a `RoadStyle`) centred near the world origin, and a
`TownStyle` that says how blocks are filled (building sizes, roofs, trees, parked cars, hills). Five towns are
grids (`GRID_TOWNS`); Town03 (a roundabout centre), Town04 (a highway loop around a small grid) and Town06
(parallel highways) have their own generators. Everything is drawn from `np.random.default_rng` seeded by
(town, seed): same inputs, same layout.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np

from sim_bridge.backends.procedural.road_graph import (
    Edge,
    RoadGraph,
    RoadStyle,
    arc,
    bezier,
    closed_loop,
    grid_nodes,
    grid_pairs,
    nearest_index,
    prune_to_t_junctions,
    rounded_rect,
    wiggle,
)
from sim_bridge.towns import check_town


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


# ------------------------------------------------------------------------------------------- grid towns


@dataclass(frozen=True)
class GridTown:
    """A town drawn as a grid of junctions: node (i, j) at (i·dx - x_off, j·dy - y_off) m, moved by a uniform
    draw in ±`jitter` m per coordinate, joined to its grid neighbours by roads of one style."""

    nx: int
    """junctions along x."""
    ny: int
    """junctions along y."""
    dx: float
    """junction spacing along x, m."""
    dy: float
    """junction spacing along y, m."""
    x_off: float
    """x of the first column is -x_off, m."""
    y_off: float
    """y of the first row is -y_off, m."""
    jitter: float
    """largest random shift of a junction per coordinate, m."""
    road: RoadStyle
    """the style of every road."""
    t_junctions: int = 0
    """> 0: drop edges between 4-way junctions (`prune_to_t_junctions`) keeping every node at this degree or more."""
    wiggle: float = 0.0
    """> 0: roads are country roads with a lateral wiggle of this amplitude, m; 0: straight."""

    def xs(self) -> np.ndarray:
        """`[nx]` float64 column positions, m (before jitter)."""
        return np.arange(self.nx) * self.dx - self.x_off

    def ys(self) -> np.ndarray:
        """`[ny]` float64 row positions, m (before jitter)."""
        return np.arange(self.ny) * self.dy - self.y_off

    def draw(self, rng: np.random.Generator) -> RoadGraph:
        """The town's road graph (draws: the jitter, then the pruning order, then each road's wiggle)."""
        graph = RoadGraph()
        ids = grid_nodes(graph, self.xs(), self.ys(), self.jitter, rng)
        pairs = grid_pairs(ids)
        if self.t_junctions:
            pairs = prune_to_t_junctions(pairs, len(graph.nodes), rng, min_degree=self.t_junctions)
        for a, b, _ in pairs:
            points = wiggle(graph.nodes[a], graph.nodes[b], self.wiggle, rng) if self.wiggle else None
            graph.edge(a, b, self.road, points)
        return graph


#: The towns that are grids of junctions.
GRID_TOWNS = {
    "Town01": GridTown(5, 4, 88.0, 80.0, 176.0, 120.0, jitter=4.0, road=STREET, t_junctions=3),
    "Town02": GridTown(4, 4, 62.0, 58.0, 93.0, 87.0, jitter=2.0, road=RESIDENTIAL, t_junctions=3),
    "Town05": GridTown(5, 4, 92.0, 84.0, 184.0, 126.0, jitter=0.0, road=AVENUE),
    "Town07": GridTown(4, 3, 115.0, 105.0, 172.0, 105.0, jitter=18.0, road=COUNTRY, t_junctions=2, wiggle=9.0),
    "Town10HD": GridTown(4, 4, 82.0, 72.0, 123.0, 126.0, jitter=0.0, road=DOWNTOWN),
}


# ------------------------------------------------------------------------------------------- other towns


def _town03(rng) -> tuple[RoadGraph, list]:
    """A 5×5 grid whose centre junction is a roundabout-like ring; the middle row and column are avenues."""
    net = RoadGraph()
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
        net.edge(ring[a0], ring[angs[(k + 1) % 4]], ring_style, arc(c, R, a0, a1, 3.0))
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
    return net, [(c, R - ring_style.half_width - ring_style.sidewalk)]


def _town04(rng) -> tuple[RoadGraph, list]:
    """A highway loop around a small town grid, joined to it by two ramps (east and west) and two roads."""
    net = RoadGraph()
    loop = rounded_rect(-300.0, -190.0, 300.0, 190.0, 85.0, step=4.0)
    # Town grid in the middle of the loop, joined to the loop by two ramps (east and west) and a south road.
    xs = np.arange(4) * 70.0 - 105.0
    ys = np.arange(3) * 65.0 - 65.0
    ids = grid_nodes(net, xs, ys, 2.0, rng)
    for a, b, _ in grid_pairs(ids):
        net.edge(a, b, STREET)
    e_idx = nearest_index(loop, (300.0, 40.0))
    w_idx = nearest_index(loop, (-300.0, -40.0))
    s_idx = nearest_index(loop, (0.0, -190.0))
    n_idx = nearest_index(loop, (30.0, 190.0))
    lids = closed_loop(net, loop, [e_idx, w_idx, s_idx, n_idx], HIGHWAY)
    node_of = dict(zip(sorted([e_idx, w_idx, s_idx, n_idx]), lids))
    # Ramps: leave the town heading outward, merge into the loop at ~40 degrees.
    east, west = ids[-1, 1], ids[0, 1]
    pe, pw = net.nodes[node_of[e_idx]], net.nodes[node_of[w_idx]]
    ramp_e = bezier(net.nodes[east], (1, 0), pe, (math.sin(math.radians(40)), math.cos(math.radians(40))), k=0.45)
    net.edge(east, node_of[e_idx], RAMP, ramp_e)
    ramp_w = bezier(net.nodes[west], (-1, 0), pw, (-math.sin(math.radians(40)), -math.cos(math.radians(40))), k=0.45)
    net.edge(west, node_of[w_idx], RAMP, ramp_w)
    net.edge(ids[1, 0], node_of[s_idx], STREET, bezier(net.nodes[ids[1, 0]], (0, -1), net.nodes[node_of[s_idx]], (0, -1)))
    net.edge(ids[2, -1], node_of[n_idx], STREET, bezier(net.nodes[ids[2, -1]], (0, 1), net.nodes[node_of[n_idx]], (0, 1)))
    return net, []


def _town06(rng) -> tuple[RoadGraph, list]:
    """Two long parallel highways (one stretched loop) joined by three connectors."""
    net = RoadGraph()
    loop = rounded_rect(-520.0, -75.0, 520.0, 75.0, 74.0, step=4.0)
    cross_x = [-220.0, 60.0, 300.0]
    split = []
    for x in cross_x:
        split += [nearest_index(loop, (x, -75.0)), nearest_index(loop, (x, 75.0))]
    lids = closed_loop(net, loop, split, HIGHWAY)
    node_of = dict(zip(sorted(split), lids))
    connector = RoadStyle(lanes=1, lane_width=3.6, shoulder=1.0, sidewalk=0.0, speed=12.0, crosswalks=False)
    for x in cross_x:
        a, b = node_of[nearest_index(loop, (x, -75.0))], node_of[nearest_index(loop, (x, 75.0))]
        net.edge(a, b, connector)
    return net, []


#: The towns with their own generator: `fn(rng) -> (road graph, roundabout islands)`.
_GENERATORS = {"Town03": _town03, "Town04": _town04, "Town06": _town06}


# ------------------------------------------------------------------------------------------- block styles

#: How each town's blocks are filled.
TOWN_STYLES = {
    "Town01": TownStyle(
        floors=(2, 4), frontage=(10, 22), depth=(10, 18), setback=(0.0, 1.5), fill=0.8, pitched_roof=0.25,
        street_tree_spacing=0.0, yard_trees=6.0, conifer=0.15, hills=25.0,
        palette=((196, 178, 150), (170, 110, 85), (215, 205, 185), (160, 160, 150), (185, 150, 110))),
    "Town02": TownStyle(
        floors=(1, 2), floor_height=3.0, frontage=(9, 14), depth=(8, 12), setback=(3.0, 6.0), gap=(3.0, 8.0),
        fill=0.9, pitched_roof=0.9, street_tree_spacing=11.0, yard_trees=25.0, conifer=0.2, parked_cars=0.35,
        hills=20.0, lamp_spacing=28.0,
        palette=((235, 225, 205), (205, 185, 160), (180, 200, 210), (225, 200, 170), (200, 120, 95)),
        roof_palette=((140, 55, 45), (90, 85, 90), (160, 90, 55), (70, 70, 80))),
    "Town03": TownStyle(
        floors=(2, 7), frontage=(12, 28), depth=(12, 24), setback=(0.0, 1.0), gap=(0.0, 3.0), fill=0.9,
        pitched_roof=0.08, curtain_glass=0.15, downtown=1.2, downtown_radius=140.0, street_tree_spacing=14.0,
        yard_trees=5.0, parked_cars=0.35, hills=35.0,
        palette=((205, 195, 175), (160, 100, 80), (225, 220, 210), (140, 145, 150), (190, 170, 140),
                 (120, 125, 135))),
    "Town04": TownStyle(
        floors=(1, 3), frontage=(9, 18), depth=(9, 15), setback=(1.0, 4.0), gap=(2.0, 6.0), fill=0.75,
        pitched_roof=0.6, street_tree_spacing=0.0, yard_trees=8.0, conifer=0.6, hills=90.0,
        palette=((220, 210, 190), (180, 140, 100), (200, 200, 195), (150, 110, 80)),
        roof_palette=((110, 50, 40), (70, 70, 75), (130, 80, 50))),
    "Town05": TownStyle(
        floors=(3, 10), frontage=(14, 30), depth=(14, 26), setback=(0.0, 0.5), gap=(0.0, 2.0), fill=0.9,
        curtain_glass=0.3, street_tree_spacing=16.0, yard_trees=3.0, parked_cars=0.45, hills=40.0,
        palette=((210, 200, 185), (175, 120, 95), (150, 150, 160), (200, 205, 210), (120, 110, 100))),
    "Town06": TownStyle(
        floors=(1, 3), floor_height=4.5, frontage=(20, 45), depth=(15, 30), setback=(6.0, 15.0), gap=(15.0, 60.0),
        fill=0.5, street_tree_spacing=0.0, yard_trees=3.0, conifer=0.3, hills=60.0,
        palette=((200, 200, 200), (170, 175, 180), (190, 170, 140), (140, 150, 160))),
    "Town07": TownStyle(
        floors=(1, 2), floor_height=3.0, frontage=(8, 16), depth=(8, 14), setback=(4.0, 12.0), gap=(20.0, 60.0),
        fill=0.5, pitched_roof=0.95, street_tree_spacing=0.0, yard_trees=20.0, conifer=0.5, parked_cars=0.0,
        hills=70.0, lamp_spacing=0.0, ground=(110, 125, 60),
        palette=((150, 60, 50), (210, 200, 180), (120, 90, 70), (190, 180, 160)),
        roof_palette=((80, 70, 65), (110, 50, 40), (60, 60, 65))),
    "Town10HD": TownStyle(
        floors=(6, 16), floor_height=3.6, frontage=(16, 34), depth=(16, 28), setback=(0.0, 0.3), gap=(0.0, 1.0),
        fill=0.97, curtain_glass=0.45, downtown=1.5, downtown_radius=160.0, street_tree_spacing=12.0,
        yard_trees=2.0, parked_cars=0.3, hills=60.0,
        # The quay: beyond the last row of blocks, its road and sidewalk.
        water_north=float(GRID_TOWNS["Town10HD"].ys()[-1]) + DOWNTOWN.half_width + DOWNTOWN.sidewalk + 6.0,
        palette=((190, 185, 175), (150, 155, 165), (210, 205, 195), (110, 115, 125), (170, 130, 100),
                 (90, 100, 115))),
}


def build_layout(town: str, seed: int = 0) -> TownLayout:
    """The road network and block style of `town` drawn with `seed` (deterministic).

    Raises ValueError (listing the towns) for an unknown name.
    """
    check_town(town)
    # crc32 of the name: stable across processes (Python's hash() is salted).
    rng = np.random.default_rng([zlib.crc32(town.encode()), int(seed)])
    if town in GRID_TOWNS:
        net, islands = GRID_TOWNS[town].draw(rng), []
    else:
        net, islands = _GENERATORS[town](rng)
    layout = TownLayout(town, int(seed), np.stack(net.nodes), net.edges, net.extent(), TOWN_STYLES[town], islands)
    deg = layout.degree()
    if (deg == 1).any():
        raise AssertionError(f"{town}: layout has dead ends at nodes {np.flatnonzero(deg == 1).tolist()}")
    return layout
