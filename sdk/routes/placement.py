"""Placing scene boxes along a drive: where each scene of a route sits and where its seams are.

A route of K scenes covers a trajectory (world frame) with boxes anchored along it. Box k is anchored at the
trajectory's pose at arc length ``s_k = k · spacing`` (``spacing = box length in x − overlap``): its scene frame is
that pose made level (x along the heading, z up, origin on the ground under the ego), exactly the frame a generated
scene lives in (the ego frame at the scene's anchor time), so the box ``x ∈ [xmin, xmax]`` reaches ``−xmin`` metres
behind the anchor and ``xmax`` ahead. Consecutive boxes overlap by `overlap` metres along the route (for a straight
route ``x ∈ [spacing + xmin, xmax]`` of box k), and there the next scene is outpainted from its predecessor.

Seams: seam j (between scenes j and j+1) is the vertical plane through the route's point in the middle of their
overlap (arc length ``s_j + (spacing + xmin + xmax) / 2``), normal to the heading there, pointing along the route.
Scene k's *cell* is its box on the near side of seam k and the far side of seam k−1; the cells partition the route
and a renderer shows each point from the scene whose cell holds it (`nfldm_sdk.routes.composite`).

K is the smallest count whose cells reach the trajectory's end: ``(K − 1) · spacing ≥ length − spacing``, so every
pose lies in the part ``[0, spacing)`` of some box ahead of its anchor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nfldm_sdk.cameras.trajectory import Trajectory
from nfldm_sdk.errors import NfldmError

__all__ = ["RouteError", "RoutePlan", "plan_route", "level_pose", "DEFAULT_OVERLAP_M"]

#: Default overlap of consecutive boxes along the route, metres (of the default model's 64 m boxes: 40 m spacing,
#: a multiple of the coarse latent's 4 m cells, so straight routes copy latents without resampling).
DEFAULT_OVERLAP_M = 24.0


class RouteError(NfldmError, ValueError):
    """A route cannot be planned, generated or loaded as asked; the message names the problem and the fix."""


def level_pose(ego_to_world: np.ndarray) -> np.ndarray:
    """``[4, 4]`` float64: `ego_to_world` with roll and pitch removed (same origin, yaw of its x axis, z up)."""
    m = np.asarray(ego_to_world, dtype=np.float64)
    yaw = math.atan2(m[1, 0], m[0, 0])
    c, s = math.cos(yaw), math.sin(yaw)
    out = np.eye(4)
    out[:2, :2] = [[c, -s], [s, c]]
    out[:3, 3] = m[:3, 3]
    return out


def _arc(positions: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(positions[:, :2], axis=0), axis=-1))])


def _point_at(positions: np.ndarray, arc: np.ndarray, s: float) -> np.ndarray:
    """The route's point ``[3]`` at arc length `s` (linear between poses; extrapolated along the end segments)."""
    i = int(np.clip(np.searchsorted(arc, s, side="right") - 1, 0, len(arc) - 2))
    seg = max(arc[i + 1] - arc[i], 1e-12)
    u = (s - arc[i]) / seg
    return positions[i] + u * (positions[i + 1] - positions[i])


def _heading_at(positions: np.ndarray, arc: np.ndarray, s: float, window: float = 2.0) -> np.ndarray:
    """Unit horizontal direction ``[3]`` of the route at arc length `s` (centred difference over ± `window` m)."""
    d = _point_at(positions, arc, min(s + window, arc[-1])) - _point_at(positions, arc, max(s - window, 0.0))
    d[2] = 0.0
    n = float(np.linalg.norm(d))
    if n < 1e-9:
        raise RouteError(f"the trajectory does not move around arc length {s:.1f} m: give a drive whose poses advance")
    return d / n


@dataclass(frozen=True)
class RoutePlan:
    """Where the scenes of a route sit (module docstring).

    Attributes:
        scene_to_world: ``[K, 4, 4]`` float64, scene frame k → world.
        anchors_m: ``[K]`` arc length of each box's anchor along the trajectory, metres.
        seam_points: ``[K−1, 3]`` world points of the seam planes (on the route), metres.
        seam_normals: ``[K−1, 3]`` unit horizontal normals, pointing from scene j to scene j+1.
        overlap_m, spacing_m: box overlap and anchor spacing along the route, metres.
        length_m: the trajectory's path length, metres.
    """

    scene_to_world: np.ndarray
    anchors_m: np.ndarray
    seam_points: np.ndarray
    seam_normals: np.ndarray
    overlap_m: float
    spacing_m: float
    length_m: float

    def __len__(self) -> int:
        return len(self.scene_to_world)

    def to_json(self) -> dict:
        """JSON-ready dict of the plan (float64 values round-trip exactly)."""
        return {"scene_to_world": self.scene_to_world.tolist(), "anchors_m": self.anchors_m.tolist(),
                "seam_points": self.seam_points.tolist(), "seam_normals": self.seam_normals.tolist(),
                "overlap_m": self.overlap_m, "spacing_m": self.spacing_m, "length_m": self.length_m}

    @classmethod
    def from_json(cls, d: dict) -> "RoutePlan":
        """Inverse of `to_json`."""
        return cls(np.asarray(d["scene_to_world"], np.float64).reshape(-1, 4, 4),
                   np.asarray(d["anchors_m"], np.float64).reshape(-1),
                   np.asarray(d["seam_points"], np.float64).reshape(-1, 3),
                   np.asarray(d["seam_normals"], np.float64).reshape(-1, 3),
                   float(d["overlap_m"]), float(d["spacing_m"]), float(d["length_m"]))


def plan_route(trajectory: Trajectory, box_x: tuple[float, float], overlap_m: float = DEFAULT_OVERLAP_M) -> RoutePlan:
    """Boxes along `trajectory` (world frame) for scenes whose boxes span ``box_x = (xmin, xmax)`` metres in x.

    Args:
        trajectory: the drive, ``ego_to_world`` in the world frame (at least two poses that move).
        box_x: the bundle's voxel box in x, scene frame (the default model's ``(-16, 48)``).
        overlap_m: overlap of consecutive boxes along the route, metres, in ``(0, xmax − xmin)``; the known part of
            each outpainted scene. At least ``xmax − xmin − xmax`` is needed so that a camera at a seam sees the
            next scene ahead of it; the default leaves 40 m between anchors.
    Returns:
        a `RoutePlan` (module docstring for the placement and the seams).
    Raises:
        `RouteError` naming a bad overlap or a trajectory that does not move.
    """
    xmin, xmax = float(box_x[0]), float(box_x[1])
    length_x = xmax - xmin
    overlap = float(overlap_m)
    if not (math.isfinite(overlap) and 0.0 < overlap < length_x):
        raise RouteError(f"overlap must be in (0, {length_x:g}) metres (the box is {length_x:g} m long in x), got "
                         f"{overlap_m!r}: the default is {DEFAULT_OVERLAP_M:g} m")
    spacing = length_x - overlap
    if spacing > xmax:
        raise RouteError(f"overlap {overlap:g} m leaves {spacing:g} m between anchors, more than the box reaches ahead "
                         f"({xmax:g} m): consecutive scenes would not share their seam; use overlap ≥ {length_x - xmax:g} m")
    positions = np.asarray(trajectory.positions, dtype=np.float64)
    if len(positions) < 2:
        raise RouteError("a route needs a trajectory of at least two poses")
    arc = _arc(positions)
    length = float(arc[-1])
    if length <= 0.0:
        raise RouteError("the trajectory does not move: give a drive whose poses advance")
    count = 1 + max(0, math.ceil((length - spacing) / spacing - 1e-9))
    anchors = np.arange(count, dtype=np.float64) * spacing
    poses = []
    for s in anchors:
        origin = _point_at(positions, arc, float(s))
        fwd = _heading_at(positions, arc, float(s))
        m = np.eye(4)
        m[:3, 0], m[:3, 1], m[:3, 3] = fwd, (-fwd[1], fwd[0], 0.0), origin
        poses.append(m)
    mid = (spacing + xmin + xmax) / 2.0               # seam, in the frame of the scene before it (a straight route)
    seam_points = np.array([_point_at(positions, arc, float(s + mid)) for s in anchors[:-1]]).reshape(-1, 3)
    seam_normals = np.array([_heading_at(positions, arc, float(s + mid)) for s in anchors[:-1]]).reshape(-1, 3)
    return RoutePlan(np.stack(poses), anchors, seam_points, seam_normals, overlap, spacing, length)
