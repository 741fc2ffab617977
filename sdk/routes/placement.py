"""Placing scene boxes along a drive: where each scene of a route sits and where its seams are.

A route of K scenes covers a trajectory (world frame) with boxes anchored along it. Box k is anchored at the
trajectory's pose at arc length ``s_k = k · spacing``: its scene frame is that pose made level (x along the heading,
z up, origin on the ground under the ego), exactly the frame a generated scene lives in (the ego frame at the
scene's anchor time), so the box ``x ∈ [xmin, xmax]`` reaches ``−xmin`` metres behind the anchor and ``xmax`` ahead.
A scene is trusted up to its *reach* ``x ≤ reach`` (default ``min(DEFAULT_REACH_M, xmax)``; the default model's scenes are dense only up
to ~12 m ahead, `DEFAULT_REACH_M`). Consecutive boxes share `overlap` metres of trusted
route (for a straight route ``x ∈ [spacing + xmin, reach]`` of box k, so ``spacing = reach − xmin − overlap``), and
there the next scene is outpainted from its predecessor.

Seams: seam j (between scenes j and j+1) is the vertical plane through the route's point in the middle of their
shared part (arc length ``s_j + (spacing + xmin + reach) / 2``), normal to the heading there, pointing along the route.
Scene k's *cell* is its box on the near side of seam k and the far side of seam k−1; the cells partition the route
and a renderer shows each point from the scene whose cell holds it (`nfldm_sdk.routes.composite`).

K is the smallest count whose cells reach the trajectory's end (the last anchor at or beyond
``length − min(spacing, reach)``).

Turns: with the box's lateral extent given (``box_y``), the spacing after anchor k shrinks, in ``spacing_step_m``
steps, until the drive from anchor k to seam k stays inside box k by ``overlap / 2`` before its reach (where a
straight route's seam sits) and by a quarter of the box's width at its sides. Otherwise, on a sharp turn the drive leaves
the box sideways before its seam, and a camera there looks at the edge of its own scene — the part a decoder renders
least well — instead of the next scene. A straight route keeps the full spacing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from nfldm_sdk.cameras.trajectory import Trajectory
from nfldm_sdk.errors import NfldmError

__all__ = ["RouteError", "RoutePlan", "plan_route", "level_pose", "DEFAULT_OVERLAP_M", "DEFAULT_REACH_M"]

#: Default overlap of consecutive boxes along the route, metres: with the default model's box (x from −16 m) and its
#: 12 m reach, a 16 m spacing — a multiple of the coarse latent's 4 m cells, so straight routes copy latents without
#: resampling.
DEFAULT_OVERLAP_M = 12.0

#: How far ahead of its anchor a generated scene is trusted, metres: the default model's scenes have a dense ground
#: from ~8 m behind the ego to ~12 m ahead and a thinning one beyond (measured: the fraction of columns near the
#: road with density > 1 /m at ground level falls from ~0.9 at 8–12 m to ~0.05 at 16–20 m; its training windows
#: observe the ground little farther ahead), so outpainting holds only the predecessor's part up to here and the
#: seams lie before it.
DEFAULT_REACH_M = 12.0


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
        reach_m: how far ahead of its anchor each scene is trusted, metres (None: the box's front).
    """

    scene_to_world: np.ndarray
    anchors_m: np.ndarray
    seam_points: np.ndarray
    seam_normals: np.ndarray
    overlap_m: float
    spacing_m: float
    length_m: float
    reach_m: float | None = None

    def __len__(self) -> int:
        return len(self.scene_to_world)

    def to_json(self) -> dict:
        """JSON-ready dict of the plan (float64 values round-trip exactly)."""
        return {"scene_to_world": self.scene_to_world.tolist(), "anchors_m": self.anchors_m.tolist(),
                "seam_points": self.seam_points.tolist(), "seam_normals": self.seam_normals.tolist(),
                "overlap_m": self.overlap_m, "spacing_m": self.spacing_m, "length_m": self.length_m,
                "reach_m": self.reach_m}

    @classmethod
    def from_json(cls, d: dict) -> "RoutePlan":
        """Inverse of `to_json`."""
        return cls(np.asarray(d["scene_to_world"], np.float64).reshape(-1, 4, 4),
                   np.asarray(d["anchors_m"], np.float64).reshape(-1),
                   np.asarray(d["seam_points"], np.float64).reshape(-1, 3),
                   np.asarray(d["seam_normals"], np.float64).reshape(-1, 3),
                   float(d["overlap_m"]), float(d["spacing_m"]), float(d["length_m"]),
                   None if d.get("reach_m") is None else float(d["reach_m"]))


def _fits(positions: np.ndarray, arc: np.ndarray, pose: np.ndarray, s0: float, s1: float,
          x_max: float, y_lo: float, y_hi: float) -> bool:
    """Whether the drive between arc lengths `s0` and `s1` stays in ``x ≤ x_max``, ``y_lo ≤ y ≤ y_hi`` of `pose`."""
    inner = positions[(arc > s0) & (arc < s1)]
    pts = np.concatenate([[_point_at(positions, arc, s0)], inner, [_point_at(positions, arc, s1)]])
    local = (pts - pose[:3, 3]) @ pose[:3, :3]                                    # world -> box frame (rotation^T)
    return bool((local[:, 0] <= x_max + 1e-9).all() and (local[:, 1] >= y_lo - 1e-9).all()
                and (local[:, 1] <= y_hi + 1e-9).all())


def _box_pose(positions: np.ndarray, arc: np.ndarray, s: float) -> np.ndarray:
    origin = _point_at(positions, arc, s)
    fwd = _heading_at(positions, arc, s)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 3] = fwd, (-fwd[1], fwd[0], 0.0), origin
    return m


def plan_route(trajectory: Trajectory, box_x: tuple[float, float], overlap_m: float = DEFAULT_OVERLAP_M,
               box_y: tuple[float, float] | None = None, spacing_step_m: float = 4.0,
               reach_m: float | None = None) -> RoutePlan:
    """Boxes along `trajectory` (world frame) for scenes whose boxes span ``box_x = (xmin, xmax)`` metres in x.

    Args:
        trajectory: the drive, ``ego_to_world`` in the world frame (at least two poses that move).
        box_x: the bundle's voxel box in x, scene frame (the default model's ``(-16, 48)``).
        overlap_m: trusted route consecutive boxes share on a straight route, metres, in ``(0, reach − xmin)``:
            the known part of each outpainted scene; ``spacing = reach − xmin − overlap`` must not exceed the
            box's front ``xmax`` (each next anchor lies in the box before it).
        box_y: the box in y, ``(ymin, ymax)`` metres: turns shorten the spacing (module docstring); None keeps
            the spacing everywhere.
        spacing_step_m: how much a turn shortens the spacing at a time, metres (the default model's coarse latent
            cell, so the latents of consecutive boxes still line up along x).
        reach_m: how far ahead of its anchor a scene is trusted, metres, in ``(0, xmax]`` (None: `DEFAULT_REACH_M`
            or ``xmax``, whichever is nearer).
    Returns:
        a `RoutePlan` (module docstring for the placement and the seams); ``spacing_m`` is the straight spacing.
    Raises:
        `RouteError` naming a bad overlap or a trajectory that does not move.
    """
    xmin, xmax = float(box_x[0]), float(box_x[1])
    reach = min(DEFAULT_REACH_M, xmax) if reach_m is None else float(reach_m)
    if not (math.isfinite(reach) and 0.0 < reach <= xmax):
        raise RouteError(f"reach must be in (0, {xmax:g}] metres (the box reaches {xmax:g} m ahead), got {reach_m!r}")
    length_x = reach - xmin
    overlap = float(overlap_m)
    if not (math.isfinite(overlap) and 0.0 < overlap < length_x):
        raise RouteError(f"overlap must be in (0, {length_x:g}) metres (the box is trusted over {length_x:g} m in x), "
                         f"got {overlap_m!r}: the default is {DEFAULT_OVERLAP_M:g} m")
    spacing = length_x - overlap
    if spacing > xmax:
        raise RouteError(f"overlap {overlap:g} m leaves {spacing:g} m between anchors, more than the box reaches ahead "
                         f"({xmax:g} m): each next anchor must lie in the box before it; use overlap ≥ {length_x - xmax:g} m")
    if not (math.isfinite(spacing_step_m) and spacing_step_m > 0):
        raise RouteError(f"spacing_step_m must be a positive number of metres, got {spacing_step_m!r}")
    positions = np.asarray(trajectory.positions, dtype=np.float64)
    if len(positions) < 2:
        raise RouteError("a route needs a trajectory of at least two poses")
    arc = _arc(positions)
    length = float(arc[-1])
    if length <= 0.0:
        raise RouteError("the trajectory does not move: give a drive whose poses advance")

    def seam_offset(step: float) -> float:            # seam, after the anchor before it (a straight route's middle)
        return (step + xmin + reach) / 2.0

    anchors, poses, seams = [0.0], [_box_pose(positions, arc, 0.0)], []
    while anchors[-1] < length - min(spacing, reach) - 1e-9:      # the last box trusts the drive's end
        s, pose = anchors[-1], poses[-1]
        step = spacing
        if box_y is not None:
            ymin, ymax = float(box_y[0]), float(box_y[1])
            margin_y = (ymax - ymin) / 4.0
            steps = [spacing - i * spacing_step_m for i in range(int(spacing / spacing_step_m) + 1)]
            steps = [v for v in steps if v > 1e-9] or [spacing]
            step = next((v for v in steps if _fits(positions, arc, pose, s, s + seam_offset(v), reach - overlap / 2,
                                                   ymin + margin_y, ymax - margin_y)), steps[-1])
        seams.append(s + seam_offset(step))
        anchors.append(s + step)
        poses.append(_box_pose(positions, arc, s + step))
    seam_points = np.array([_point_at(positions, arc, float(v)) for v in seams]).reshape(-1, 3)
    seam_normals = np.array([_heading_at(positions, arc, float(v)) for v in seams]).reshape(-1, 3)
    return RoutePlan(np.stack(poses), np.asarray(anchors, np.float64), seam_points, seam_normals, overlap, spacing,
                     length, reach)
