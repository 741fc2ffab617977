"""Ego trajectories: timestamped ``ego_to_world`` poses, interpolated (linear translation, quaternion slerp).

Conventions (project-wide): world right-handed, z up, metres; ego frame x forward, y left, z up, origin on the
ground below the vehicle centre. ``ego_to_world [T,4,4]`` float64 maps ego coordinates to the world — for a
generated scene the "world" is the scene frame (the ego frame at the scene's anchor time), so a trajectory that
starts at the identity starts where the scene was anchored. Timestamps are seconds, strictly increasing.

Example::

    traj = Trajectory.straight(length_m=20.0, speed_mps=10.0, rate_hz=10.0)      # 21 poses over 2 s
    traj = Trajectory.arc(radius_m=15.0, angle_deg=90.0, speed_mps=5.0, rate_hz=10.0)   # a left turn
    poses = traj.at([0.05, 0.15])                                                   # [2,4,4] interpolated
    traj.save("traj.json"); same = Trajectory.load("traj.json")

A capture episode drives in its simulator's world frame; `Trajectory.from_episode(ep).anchored(0)` re-expresses
it in the ego frame of its first frame, the frame a scene generated around that spot lives in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from nfldm_sdk.cameras.json_files import read_json_file, write_json_file
from nfldm_sdk.errors import NfldmError

__all__ = ["Trajectory", "TrajectoryError", "rigid_problem", "check_rigid", "rigid_inverse", "matrix_to_quaternion",
           "quaternion_to_matrix", "slerp", "yaw_pose", "TRAJECTORY_FORMAT", "TRAJECTORY_FORMAT_VERSION"]

TRAJECTORY_FORMAT = "nfldm.trajectory"
TRAJECTORY_FORMAT_VERSION = 1
#: Tolerance of the rigid-transform check (the capture store's; CARLA hands over float32-precision rotations).
RIGID_ATOL = 1e-4
_CONVENTIONS = ("timestamps [T] seconds, strictly increasing; ego_to_world [T,4,4] float64 rigid, ego x forward, "
                "y left, z up, world right-handed z up, metres")


class TrajectoryError(NfldmError, ValueError):
    """A trajectory is malformed (non-monotonic time, non-rigid pose, time out of range); the message says which
    sample and the fix."""


# ============================================================================================ rigid transforms
def rigid_problem(m: np.ndarray, atol: float = RIGID_ATOL) -> str:
    """Why ``m [4,4]`` is not a finite rigid transform ("" when it is): non-finite, last row, orthonormality, det."""
    m = np.asarray(m, dtype=np.float64)
    if m.shape != (4, 4):
        return f"shape {m.shape} is not (4, 4)"
    if not np.isfinite(m).all():
        return "non-finite values (NaN or inf)"
    if np.abs(m[3] - [0.0, 0.0, 0.0, 1.0]).max() > atol:
        return f"last row is {np.round(m[3], 4).tolist()}, not [0, 0, 0, 1]"
    R = m[:3, :3]
    err = np.abs(R.T @ R - np.eye(3)).max()
    if err > atol:
        return f"rotation is not orthonormal (max |R^T R - I| = {err:.3g}; a scaled or sheared matrix?)"
    if abs(np.linalg.det(R) - 1.0) > atol:
        return f"rotation determinant is {np.linalg.det(R):.4g}, not +1 (a reflection: mixed-up handedness?)"
    return ""


def check_rigid(mats: np.ndarray, what: str, atol: float = RIGID_ATOL) -> np.ndarray:
    """``mats [...,4,4]`` as float64 after checking every matrix is rigid; raises `TrajectoryError` naming the first
    bad index of `what` (e.g. ``"ego_to_world"``)."""
    mats = np.asarray(mats, dtype=np.float64)
    if mats.ndim < 2 or mats.shape[-2:] != (4, 4):
        raise TrajectoryError(f"{what} must be [...,4,4] matrices, got shape {mats.shape}")
    for idx in np.ndindex(mats.shape[:-2]):
        why = rigid_problem(mats[idx], atol)
        if why:
            raise TrajectoryError(f"{what}{list(idx)} is not a rigid transform: {why}. Poses must be rotation + "
                                  "translation (orthonormalise rotations, e.g. via quaternions, before passing them)")
    return mats


def rigid_inverse(m: np.ndarray) -> np.ndarray:
    """Inverse ``[R^T, -R^T t]`` of rigid ``m [...,4,4]``."""
    m = np.asarray(m, dtype=np.float64)
    out = np.zeros_like(m)
    Rt = np.swapaxes(m[..., :3, :3], -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -(Rt @ m[..., :3, 3, None])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def yaw_pose(x: float, y: float, yaw_rad: float, z: float = 0.0) -> np.ndarray:
    """``ego_to_world [4,4]`` of an ego at ``(x, y, z)`` heading ``yaw_rad`` (counter-clockwise from +x, seen from
    above: positive = left)."""
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    m = np.eye(4)
    m[:2, :2] = [[c, -s], [s, c]]
    m[:3, 3] = (x, y, z)
    return m


# ============================================================================================ quaternions
def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Unit quaternions ``[..., 4]`` as ``(w, x, y, z)`` with ``w >= 0`` of rotations ``R [..., 3, 3]``.

    Shepperd's method: take the largest of ``(w, x, y, z)`` from the diagonal (never a small, noisy square root),
    the others from the off-diagonal sums/differences."""
    R = np.asarray(R, dtype=np.float64)
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    tr = m00 + m11 + m22
    cands = np.stack([1.0 + tr, 1.0 + m00 - m11 - m22, 1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22], -1)  # 4·q_i²
    k = np.argmax(cands, axis=-1)                                                   # [...] largest component
    s = np.sqrt(np.take_along_axis(cands, k[..., None], -1)[..., 0]) * 2.0          # [...] = 4·|q_k|
    d = (R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1])  # 4·w·(x, y, z)
    p = (R[..., 0, 1] + R[..., 1, 0], R[..., 0, 2] + R[..., 2, 0], R[..., 1, 2] + R[..., 2, 1])  # 4·(xy, xz, yz)
    q = np.stack([
        np.stack([s / 4, d[0] / s, d[1] / s, d[2] / s], -1),     # k = 0: w largest
        np.stack([d[0] / s, s / 4, p[0] / s, p[1] / s], -1),     # k = 1: x largest
        np.stack([d[1] / s, p[0] / s, s / 4, p[2] / s], -1),     # k = 2: y largest
        np.stack([d[2] / s, p[1] / s, p[2] / s, s / 4], -1),     # k = 3: z largest
    ], -2)                                                        # [..., 4 cases, 4]
    q = np.take_along_axis(q, k[..., None, None], -2)[..., 0, :]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotations ``[..., 3, 3]`` of quaternions ``q [..., 4]`` = ``(w, x, y, z)`` (normalised first)."""
    q = np.asarray(q, dtype=np.float64)
    w, x, y, z = np.moveaxis(q / np.linalg.norm(q, axis=-1, keepdims=True), -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def slerp(q0: np.ndarray, q1: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Spherical linear interpolation ``[..., 4]`` from ``q0`` to ``q1`` (``[..., 4]``) at fractions ``u [...]``.

    ``q`` and ``−q`` are the same rotation: ``q1`` is flipped onto ``q0``'s hemisphere first, so the path is the short
    one (< 180°). Nearly equal quaternions fall back to normalised linear interpolation (sin θ → 0)."""
    q0, q1 = np.asarray(q0, dtype=np.float64), np.asarray(q1, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)
    dot = np.clip(np.abs(dot), -1.0, 1.0)
    theta = np.arccos(dot)
    sin = np.sin(theta)
    small = sin < 1e-9
    safe = np.where(small, 1.0, sin)
    a = np.where(small, 1.0 - u, np.sin((1.0 - u) * theta) / safe)
    b = np.where(small, u, np.sin(u * theta) / safe)
    q = a * q0 + b * q1
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


# ============================================================================================ the trajectory
def _uniform_times(duration: float, rate_hz: float) -> np.ndarray:
    """``[0, 1/rate, 2/rate, …]`` up to `duration` (the end included when it falls on a sample, up to 1e-9 s)."""
    if not (rate_hz > 0 and math.isfinite(rate_hz)):
        raise TrajectoryError(f"rate_hz must be a positive number, got {rate_hz}")
    n = int(math.floor(duration * rate_hz + 1e-9)) + 1
    return np.arange(n, dtype=np.float64) / rate_hz


def _check_motion(speed_mps: float, rate_hz: float) -> None:
    if not (speed_mps > 0 and math.isfinite(speed_mps)):
        raise TrajectoryError(f"speed_mps must be positive, got {speed_mps}")
    if not (rate_hz > 0 and math.isfinite(rate_hz)):
        raise TrajectoryError(f"rate_hz must be positive, got {rate_hz}")


def _start(start: np.ndarray | None) -> np.ndarray:
    return np.eye(4) if start is None else check_rigid(np.asarray(start, dtype=np.float64).reshape(4, 4), "start")


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class Trajectory:
    """Timestamped ego poses (see the module docstring for the conventions).

    Attributes:
        timestamps: ``[T]`` float64 seconds, strictly increasing.
        ego_to_world: ``[T,4,4]`` float64 rigid transforms, ego -> world (scene frame for a generated scene).

    Both are read-only numpy arrays (the object is immutable; every method returns a new one).
    """

    timestamps: np.ndarray
    ego_to_world: np.ndarray

    def __post_init__(self):
        t = np.array(self.timestamps, dtype=np.float64).reshape(-1)
        if t.size == 0:
            raise TrajectoryError("a trajectory needs at least one pose")
        if not np.isfinite(t).all():
            raise TrajectoryError(f"timestamps must be finite, found {t[~np.isfinite(t)][:3].tolist()}")
        dt = np.diff(t)
        if (dt <= 0).any():
            i = int(np.argmax(dt <= 0))
            raise TrajectoryError(f"timestamps must be strictly increasing: timestamps[{i}] = {t[i]} s is followed by "
                                  f"timestamps[{i + 1}] = {t[i + 1]} s. Sort the poses by time and drop duplicates")
        m = np.array(self.ego_to_world, dtype=np.float64)
        if m.ndim != 3 or m.shape[1:] != (4, 4):
            raise TrajectoryError(f"ego_to_world must be [T,4,4], got shape {m.shape}")
        if len(m) != len(t):
            raise TrajectoryError(f"{len(t)} timestamps but {len(m)} poses: give one timestamp per pose")
        m = check_rigid(m, "ego_to_world")
        t.setflags(write=False)
        m.setflags(write=False)
        object.__setattr__(self, "timestamps", t)
        object.__setattr__(self, "ego_to_world", m)

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def duration(self) -> float:
        """Seconds from the first to the last pose."""
        return float(self.timestamps[-1] - self.timestamps[0])

    @property
    def positions(self) -> np.ndarray:
        """``[T,3]`` ego origins in the world, metres."""
        return self.ego_to_world[:, :3, 3]

    @property
    def rate_hz(self) -> float | None:
        """Median sample rate (Hz); None for a single pose."""
        return None if len(self) < 2 else float(1.0 / np.median(np.diff(self.timestamps)))

    @property
    def path_length(self) -> float:
        """Length of the polyline through the positions, metres."""
        return float(np.linalg.norm(np.diff(self.positions, axis=0), axis=-1).sum())

    def __repr__(self) -> str:
        rate = f"{self.rate_hz:.3g} Hz" if self.rate_hz else "single pose"
        return (f"Trajectory({len(self)} poses, {self.timestamps[0]:.3f}–{self.timestamps[-1]:.3f} s, {rate}, "
                f"path {self.path_length:.2f} m)")

    # ------------------------------------------------------------------ interpolation
    def at(self, times: float | Sequence[float] | np.ndarray) -> np.ndarray:
        """Poses ``[K,4,4]`` at `times` ``[K]`` seconds (a scalar gives ``[1,4,4]``).

        Translation is interpolated linearly, rotation by quaternion slerp (short path), between the two enclosing
        samples; exact at the samples. Raises `TrajectoryError` for times outside ``[t_0, t_{T-1}]`` (beyond 1 µs).
        """
        q_t = np.atleast_1d(np.asarray(times, dtype=np.float64))
        t = self.timestamps
        eps = 1e-6
        if q_t.size and (q_t.min() < t[0] - eps or q_t.max() > t[-1] + eps or not np.isfinite(q_t).all()):
            raise TrajectoryError(f"times {q_t.min():.6g}…{q_t.max():.6g} s fall outside the trajectory's "
                                  f"{t[0]:.6g}…{t[-1]:.6g} s: the trajectory does not extrapolate; clip the times or "
                                  "build a longer trajectory")
        q_t = np.clip(q_t, t[0], t[-1])
        if len(self) == 1:
            return np.repeat(self.ego_to_world[:1], len(q_t), axis=0)
        i = np.clip(np.searchsorted(t, q_t, side="right") - 1, 0, len(t) - 2)    # [K] left sample
        u = (q_t - t[i]) / (t[i + 1] - t[i])                                        # [K] in [0, 1]
        m0, m1 = self.ego_to_world[i], self.ego_to_world[i + 1]                     # [K,4,4]
        out = np.zeros((len(q_t), 4, 4))
        out[:, :3, 3] = (1.0 - u)[:, None] * m0[:, :3, 3] + u[:, None] * m1[:, :3, 3]
        q = slerp(matrix_to_quaternion(m0[:, :3, :3]), matrix_to_quaternion(m1[:, :3, :3]), u)
        out[:, :3, :3] = quaternion_to_matrix(q)
        out[:, 3, 3] = 1.0
        # Exact at the knots (slerp/quaternion round trips differ from the input in the last bits).
        at_knot = np.isclose(u, 0.0, atol=1e-12)
        out[at_knot] = m0[at_knot]
        at_next = np.isclose(u, 1.0, atol=1e-12)
        out[at_next] = m1[at_next]
        return out

    def resample(self, rate_hz: float) -> "Trajectory":
        """The trajectory sampled every ``1/rate_hz`` s from its first timestamp up to its last (interpolated with
        `at`; the last sample is the last whole step, so the end is kept only when the duration is a multiple)."""
        times = self.timestamps[0] + _uniform_times(self.duration, rate_hz)
        return Trajectory(times, self.at(times))

    def anchored(self, index: int = 0) -> "Trajectory":
        """The same motion expressed in the ego frame of sample `index` (that pose becomes the identity): the frame
        a scene anchored at that moment lives in. Timestamps are kept."""
        inv = rigid_inverse(self.ego_to_world[index])
        return Trajectory(self.timestamps, inv @ self.ego_to_world)

    def transformed(self, world_to_new: np.ndarray) -> "Trajectory":
        """All poses mapped by a rigid ``[4,4]`` (``world_to_new @ ego_to_world``)."""
        m = check_rigid(np.asarray(world_to_new, dtype=np.float64).reshape(4, 4), "world_to_new")
        return Trajectory(self.timestamps, m @ self.ego_to_world)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_poses(cls, ego_to_world: np.ndarray, timestamps: Sequence[float] | np.ndarray | None = None,
                   rate_hz: float = 10.0) -> "Trajectory":
        """Poses ``[T,4,4]`` at `timestamps` ``[T]`` seconds, or at ``i / rate_hz`` when no timestamps are given."""
        m = np.asarray(ego_to_world, dtype=np.float64)
        if timestamps is None:
            if not rate_hz > 0:
                raise TrajectoryError(f"rate_hz must be positive, got {rate_hz}")
            timestamps = np.arange(len(m), dtype=np.float64) / rate_hz
        return cls(np.asarray(timestamps, dtype=np.float64), m)

    @classmethod
    def from_episode(cls, episode) -> "Trajectory":
        """The ego path of a capture episode (duck-typed: ``.timestamp [T]`` seconds and ``.ego_to_world [T,4,4]``,
        e.g. ``sim_bridge.open_store(path).episode(0)``), in the capture's world frame — use ``.anchored(i)`` to
        put it in the ego frame of frame i."""
        for attr in ("timestamp", "ego_to_world"):
            if not hasattr(episode, attr):
                raise TypeError(f"{type(episode).__name__} has no .{attr}: from_episode needs a capture episode "
                                "(.timestamp [T] s, .ego_to_world [T,4,4]), e.g. sim_bridge.open_store(p).episode(0)")
        return cls(np.asarray(episode.timestamp, dtype=np.float64), np.asarray(episode.ego_to_world, dtype=np.float64))

    @classmethod
    def straight(cls, length_m: float, speed_mps: float = 10.0, rate_hz: float = 10.0,
                 start: np.ndarray | None = None) -> "Trajectory":
        """Drive `length_m` metres straight ahead (ego +x of `start`, default the identity) at constant speed,
        sampled at `rate_hz` from t = 0."""
        _check_motion(speed_mps, rate_hz)
        if not length_m > 0:
            raise TrajectoryError(f"length_m must be positive, got {length_m}")
        t = _uniform_times(length_m / speed_mps, rate_hz)
        local = np.stack([yaw_pose(speed_mps * ti, 0.0, 0.0) for ti in t])
        return cls(t, _start(start) @ local)

    @classmethod
    def arc(cls, radius_m: float, angle_deg: float, speed_mps: float = 10.0, rate_hz: float = 10.0,
            start: np.ndarray | None = None) -> "Trajectory":
        """Drive a circular arc of `radius_m` turning by `angle_deg` (positive = left turn, negative = right) at
        constant speed; the heading follows the tangent. Starts at `start` (default identity) heading its +x.

        Geometry (left turn, centre ``(0, r)``): after heading change θ the ego is at ``(r sin θ, r (1 − cos θ))``
        with yaw θ; a right turn mirrors y."""
        _check_motion(speed_mps, rate_hz)
        if not radius_m > 0 or angle_deg == 0 or not math.isfinite(angle_deg):
            raise TrajectoryError(f"need radius_m > 0 and a non-zero finite angle_deg, got {radius_m}, {angle_deg}")
        total = math.radians(abs(angle_deg))
        sign = 1.0 if angle_deg > 0 else -1.0
        t = _uniform_times(radius_m * total / speed_mps, rate_hz)
        theta = speed_mps * t / radius_m                                            # [T] heading change, rad
        local = np.stack([yaw_pose(radius_m * math.sin(a), sign * radius_m * (1.0 - math.cos(a)), sign * a)
                          for a in theta])
        return cls(t, _start(start) @ local)

    @classmethod
    def lane_change(cls, offset_m: float, distance_m: float, speed_mps: float = 10.0, rate_hz: float = 10.0,
                    start: np.ndarray | None = None) -> "Trajectory":
        """Change lanes: move `offset_m` sideways (positive = left) over `distance_m` metres of forward travel.

        The lateral offset follows the quintic smootherstep ``y(x) = offset · (10s³ − 15s⁴ + 6s⁵)``, ``s = x /
        distance``: zero heading and curvature at both ends. The heading follows the path tangent ``atan(dy/dx)``
        and the speed is constant along the path (arc length), sampled at `rate_hz`."""
        _check_motion(speed_mps, rate_hz)
        if not distance_m > 0 or not math.isfinite(offset_m):
            raise TrajectoryError(f"need distance_m > 0 and a finite offset_m, got {distance_m}, {offset_m}")
        x = np.linspace(0.0, distance_m, 20001)                                     # dense path parameter
        s = x / distance_m
        y = offset_m * (10 * s**3 - 15 * s**4 + 6 * s**5)
        dy = offset_m * (30 * s**2 - 60 * s**3 + 30 * s**4) / distance_m           # dy/dx
        seg = np.sqrt(np.diff(x) ** 2 + np.diff(y) ** 2)
        arc = np.concatenate([[0.0], np.cumsum(seg)])                               # arc length along the path
        t = _uniform_times(arc[-1] / speed_mps, rate_hz)
        xs = np.interp(speed_mps * t, arc, x)                                       # forward position at each time
        ss = xs / distance_m
        ys = offset_m * (10 * ss**3 - 15 * ss**4 + 6 * ss**5)
        yaw = np.arctan(np.interp(xs, x, dy))
        local = np.stack([yaw_pose(a, b, c) for a, b, c in zip(xs, ys, yaw)])
        return cls(t, _start(start) @ local)

    @classmethod
    def stationary(cls, duration_s: float, rate_hz: float = 10.0, pose: np.ndarray | None = None) -> "Trajectory":
        """The ego standing still at `pose` (default identity) for `duration_s` seconds."""
        t = _uniform_times(duration_s, rate_hz)
        return cls(t, np.repeat(_start(pose)[None], len(t), axis=0))

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> dict:
        """JSON-ready ``{format, format_version, conventions, timestamps [T], ego_to_world [T][4][4]}``."""
        return {"format": TRAJECTORY_FORMAT, "format_version": TRAJECTORY_FORMAT_VERSION, "conventions": _CONVENTIONS,
                "timestamps": self.timestamps.tolist(), "ego_to_world": self.ego_to_world.tolist()}

    @classmethod
    def from_json(cls, data: dict, where: str = "trajectory") -> "Trajectory":
        """Inverse of `to_json` (checks the format tag and version)."""
        if not isinstance(data, dict) or data.get("format") != TRAJECTORY_FORMAT:
            raise TrajectoryError(f"{where} is not an nfldm trajectory (format {TRAJECTORY_FORMAT!r} expected, found "
                                  f"{data.get('format') if isinstance(data, dict) else type(data).__name__!r}): write "
                                  "one with Trajectory.save")
        if int(data.get("format_version", -1)) > TRAJECTORY_FORMAT_VERSION:
            raise TrajectoryError(f"{where} is trajectory format {data['format_version']}, this nfldm reads up to "
                                  f"{TRAJECTORY_FORMAT_VERSION}: upgrade nfldm")
        missing = {"timestamps", "ego_to_world"} - set(data)
        if missing:
            raise TrajectoryError(f"{where} lacks {sorted(missing)}")
        return cls(np.asarray(data["timestamps"], dtype=np.float64), np.asarray(data["ego_to_world"], dtype=np.float64))

    def save(self, path: str | Path) -> Path:
        """Write `to_json` to `path` (JSON; float64 values round-trip exactly)."""
        return write_json_file(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Trajectory":
        """Read a file written by `save`."""
        data = read_json_file(path, "trajectory", "write one with Trajectory.save or use a built-in trajectory "
                              "(straight, arc, lane_change)", TrajectoryError)
        return cls.from_json(data, where=str(Path(path)))
