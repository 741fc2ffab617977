"""Road geometry from a `TownLayout`: junction trims and polygons, trimmed edge polylines, offsets, lane lines.

All 2D, in the world ground plane (metres). Conventions: a polyline is `[P,2]`; the *left* of a direction u is
`rot90(u) = (-u_y, u_x)`; a lateral offset d > 0 is to the left of the polyline's direction. Traffic keeps right.

At each junction node the incident edge ends are sorted counter-clockwise. Consecutive ends (i, j) bound a
corner: sharp (< 150°) corners get an L-shaped sidewalk and an inner asphalt corner, near-straight ones
(150°..210°) a straight sidewalk link, reflex ones (> 210°) a wrapped outer corner. Each edge is cut back
(`trim`) far enough from the node for its sidewalks to clear the neighbours', and the junction polygon fills
the gap with plain asphalt.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim_bridge.backends.procedural.layout import TownLayout
from sim_bridge.backends.procedural.road_graph import Edge

_SHARP, _REFLEX = math.radians(150.0), math.radians(210.0)


def rot90(v: np.ndarray) -> np.ndarray:
    """Left normal of direction(s) `v [...,2]`."""
    return np.stack([-v[..., 1], v[..., 0]], axis=-1)


def arclength(points: np.ndarray) -> np.ndarray:
    """Cumulative arc length `[P]` (m) of a polyline `[P,2]`, starting at 0."""
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])


def cut_polyline(points: np.ndarray, s0: float, s1: float) -> np.ndarray:
    """The part of polyline `points [P,2]` between arc lengths s0 < s1 (m), `[Q,2]` with exact end points."""
    s = arclength(points)
    inner = points[(s > s0 + 1e-6) & (s < s1 - 1e-6)]
    ends = np.stack([np.interp(s0, s, points[:, 0]), np.interp(s0, s, points[:, 1])]), \
        np.stack([np.interp(s1, s, points[:, 0]), np.interp(s1, s, points[:, 1])])
    return np.concatenate([ends[0][None], inner, ends[1][None]])


def point_at(points: np.ndarray, s: np.ndarray | float) -> np.ndarray:
    """Points `[...,2]` at arc lengths `s` (m) along a polyline (clamped to its ends)."""
    sl = arclength(points)
    return np.stack([np.interp(s, sl, points[:, 0]), np.interp(s, sl, points[:, 1])], axis=-1)


def offset_polyline(points: np.ndarray, d: float | np.ndarray) -> np.ndarray:
    """Polyline `[P,2]` offset by `d` metres to the left (negative: right) with mitred joints.

    `d` may be a scalar or `[P]`. End points are offset along their segment's normal, interior points along the
    bisector, lengthened by 1/cos(half-angle) (capped) so that parallel segments stay exactly `d` apart.
    """
    seg = np.diff(points, axis=0)
    seg = seg / np.linalg.norm(seg, axis=1, keepdims=True)
    n = rot90(seg)
    nv = np.empty_like(points)
    nv[0], nv[-1] = n[0], n[-1]
    if len(points) > 2:
        bis = n[:-1] + n[1:]
        bis /= np.linalg.norm(bis, axis=1, keepdims=True)
        cos_half = np.clip((bis * n[1:]).sum(1), 0.5, 1.0)
        nv[1:-1] = bis / cos_half[:, None]
    return points + nv * np.asarray(d, dtype=float).reshape(-1, 1) if np.ndim(d) else points + nv * float(d)


def _line_intersect(p, u, q, w) -> np.ndarray | None:
    """Intersection of lines p + s u and q + t w (2D); None when (nearly) parallel."""
    den = u[0] * (-w[1]) - u[1] * (-w[0])
    if abs(den) < 1e-6:
        return None
    r = q - p
    s = (r[0] * (-w[1]) - r[1] * (-w[0])) / den
    return p + s * u


@dataclass
class EdgeEnd:
    """One end of an edge at a node: `edge` index, `at_start` (the node is edge.a), unit `direction [2]` leaving
    the node, `half_width` and `sidewalk` (m) of the road."""

    edge: int
    at_start: bool
    direction: np.ndarray
    half_width: float
    sidewalk: float


@dataclass
class Corner:
    """The sidewalk corner between end `i` (its left side) and the next end `j` CCW (its right side).

    `polygon [6,2]` = (P_in, A_in, A_out, P_out, B_out, B_in) for sharp and reflex corners (fan from index
    `fan`), `[4,2]` = (A_in, A_out, B_out, B_in) for a straight link. `kerb [K,2]`: the road-facing boundary
    polyline; `back [K,2]`: the block-facing one.
    """

    polygon: np.ndarray
    fan: int
    kerb: np.ndarray
    back: np.ndarray


@dataclass
class Junction:
    """A node's asphalt polygon `[K,2]` (CCW, star-shaped from `centre [2]`) and its sidewalk corners."""

    node: int
    centre: np.ndarray
    polygon: np.ndarray
    corners: list[Corner]


@dataclass
class RoadGeometry:
    """Trimmed roads and junctions of a layout.

    Attributes:
        trims: `[E,2]` metres cut from the start and the end of each edge's polyline.
        centre: per edge, the trimmed centre polyline `[P,2]` (from the a-side junction to the b-side one).
        junctions: per node with degree >= 2.
    """

    trims: np.ndarray
    centre: list[np.ndarray]
    junctions: list[Junction]


def _ends(layout: TownLayout) -> dict[int, list[EdgeEnd]]:
    ends: dict[int, list[EdgeEnd]] = {i: [] for i in range(len(layout.nodes))}
    for k, e in enumerate(layout.edges):
        for at_start, node, p0, p1 in ((True, e.a, e.points[0], e.points[1]), (False, e.b, e.points[-1], e.points[-2])):
            d = p1 - p0
            ends[node].append(EdgeEnd(k, at_start, d / np.linalg.norm(d), e.style.half_width, e.style.sidewalk))
    for node in ends:
        ends[node].sort(key=lambda en: math.atan2(en.direction[1], en.direction[0]))
    return ends


def _gap(ei: EdgeEnd, ej: EdgeEnd) -> float:
    """CCW angle from end i to end j, in (0, 2π]."""
    a = math.atan2(ej.direction[1], ej.direction[0]) - math.atan2(ei.direction[1], ei.direction[0])
    a %= 2 * math.pi
    return a if a > 1e-9 else 2 * math.pi


def _corner_points(v, ei: EdgeEnd, ej: EdgeEnd):
    """P_in (asphalt corner) and P_out (sidewalk corner) between i's left and j's right boundary lines."""
    ni, nj = rot90(ei.direction), rot90(ej.direction)
    p_in = _line_intersect(v + ni * ei.half_width, ei.direction, v - nj * ej.half_width, ej.direction)
    p_out = _line_intersect(v + ni * (ei.half_width + ei.sidewalk), ei.direction,
                            v - nj * (ej.half_width + ej.sidewalk), ej.direction)
    return p_in, p_out


def _end_frame(points: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """Point and unit direction of a polyline at arc length s."""
    sl = arclength(points)
    k = int(np.clip(np.searchsorted(sl, s) - 1, 0, len(points) - 2))
    u = points[k + 1] - points[k]
    return point_at(points, s), u / np.linalg.norm(u)


def build_roads(layout: TownLayout) -> RoadGeometry:
    """Trim every edge at its junctions and build the junction polygons and sidewalk corners."""
    ends = _ends(layout)
    E = len(layout.edges)
    trims = np.zeros((E, 2))
    # 1) trims: each end must reach past the sidewalk corner it shares with either neighbour.
    for node, lst in ends.items():
        v = layout.nodes[node]
        n = len(lst)
        if n == 0:
            continue
        need = np.array([max(0.6 * en.half_width, 1.0) for en in lst])
        for i in range(n):
            j = (i + 1) % n
            if n == 1:
                break
            g = _gap(lst[i], lst[j])
            if g < _SHARP:
                p_in, p_out = _corner_points(v, lst[i], lst[j])
                for k, en in ((i, lst[i]), (j, lst[j])):
                    for p in (p_in, p_out):
                        if p is not None:
                            need[k] = max(need[k], float(np.dot(p - v, en.direction)) + 1.0)
        for k, en in enumerate(lst):
            trims[en.edge, 0 if en.at_start else 1] = need[k]
    centre = []
    for k, e in enumerate(layout.edges):
        L = e.length
        t0, t1 = trims[k]
        if t0 + t1 > L - 2.0:
            raise AssertionError(f"{layout.name}: edge {k} ({L:.1f} m) too short for its junction trims {t0:.1f}+{t1:.1f}")
        centre.append(cut_polyline(e.points, t0, L - t1))
    # 2) junction polygons and corners from the actual trimmed ribbon ends (so pieces meet without gaps).
    junctions = []
    for node, lst in ends.items():
        if len(lst) < 2:
            continue
        v = layout.nodes[node]
        poly, corners = [], []
        side = []  # per end: (R_in, L_in, R_out, L_out) = right/left boundary points at the trim (seen leaving the node)
        for en in lst:
            c = centre[en.edge]
            if en.at_start:
                p, u = _end_frame(c, 0.0)
            else:
                p, u = _end_frame(c[::-1], 0.0)
            nrm = rot90(u)
            h, sw = en.half_width, en.sidewalk
            side.append((p - nrm * h, p + nrm * h, p - nrm * (h + sw), p + nrm * (h + sw)))
        n = len(lst)
        for i in range(n):
            j = (i + 1) % n
            R_i, L_i, _, Lo_i = side[i]
            R_j, _, Ro_j, _ = side[j]
            poly += [R_i, L_i]
            g = _gap(lst[i], lst[j])
            has_sw = lst[i].sidewalk > 0 or lst[j].sidewalk > 0
            if g < _SHARP or g > _REFLEX:
                p_in, p_out = _corner_points(v, lst[i], lst[j])
                if p_in is None or p_out is None:
                    continue
                poly.append(p_in)
                if has_sw:
                    hexa = np.stack([p_in, L_i, Lo_i, p_out, Ro_j, R_j])
                    corners.append(Corner(hexa, 3 if g < _SHARP else 0, np.stack([L_i, p_in, R_j]), np.stack([Lo_i, p_out, Ro_j])))
            elif has_sw:
                quad = np.stack([L_i, Lo_i, Ro_j, R_j])
                corners.append(Corner(quad, 0, np.stack([L_i, R_j]), np.stack([Lo_i, Ro_j])))
        junctions.append(Junction(node, v.copy(), np.stack(poly), corners))
    return RoadGeometry(trims, centre, junctions)


def lane_polyline(centre: np.ndarray, edge: Edge, lane: int, forward: bool) -> np.ndarray:
    """Centre line `[P,2]` of driving lane `lane` (0 = inner) of `edge`, ordered along the travel direction.

    `forward`: travelling from node a to node b (the lane lies right of the edge direction), else b to a.
    """
    pts = centre if forward else centre[::-1]
    return offset_polyline(pts, -edge.style.lane_offset(lane))
