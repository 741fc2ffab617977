"""Generated LiDAR: march a scene's density field along the beams of a `LidarSpec` and return where the beam's
opacity reaches the hit threshold.

The opacity model is the renderer's (`nfldm_sdk.rendering.reference`): each beam is clipped to the field's box and
to ``[0, range_m]``, ``S`` samples at the midpoints of equal steps ``δ`` read σ trilinearly (`sample_grid`, the
field's normalised coordinates), ``α_i = 1 − exp(−σ_i δ)`` and the transmittance before sample ``i`` is
``T_i = Π_{j<i} (1 − α_j)``. The **range** is the distance along the beam where the accumulated opacity ``1 − T``
first reaches ``hit_alpha`` (default `HIT_ALPHA` = 0.5, the cameras' hit threshold, so a LiDAR return and a finite
camera depth mean the same thing): with σ constant over the crossing sample, ``1 − T_i·exp(−σ_i δ s) = hit_alpha``
gives the fraction ``s = ln(T_i / (1 − hit_alpha)) / (σ_i δ)`` of that step, and ``range = t_i + s·δ`` with
``t_i`` the step's start. A beam whose opacity stays below the threshold within the box and ``range_m`` has no
return (``inf`` in the range image, no point). For a uniform medium of density σ starting at distance ``d0`` the
range is ``d0 + ln(1 / (1 − hit_alpha)) / σ`` (``d0 + ln 2 / σ`` at 0.5).

A scan is one instant: every beam of a rotation is fired from the pose of its tick (no motion distortion over the
``1 / rotation_frequency_hz`` of a real rotation). Intensity is a placeholder (1.0 for every return); semantic
labels are not produced yet.

Example::

    spec = LidarSpec.preset("nuscenes32")
    for scan in render_lidar(scene, Trajectory.straight(length_m=20, speed_mps=10, rate_hz=10), spec):
        scan.points            # [N, 4] float32: x, y, z (sensor frame, m), intensity
        scan.ranges            # [32, 2171] float32 range image, inf = no return
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from nfldm_sdk.cameras.trajectory import Trajectory
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.rendering.rays import HIT_ALPHA, clip_rays_to_box, sample_grid, sample_t
from nfldm_sdk.sensors.lidar_spec import LidarError, LidarSpec

__all__ = ["LidarScan", "march_lidar_rays", "render_lidar", "lidar_samples",
           "MAX_SAMPLES_PER_CHUNK"]

#: Samples (rays × samples per ray) marched at once: bounds memory at about 40 bytes per sample (≈ 80 MB).
MAX_SAMPLES_PER_CHUNK = 1 << 21


@dataclass(eq=False)
class LidarScan:
    """One LiDAR scan (one rotation, one instant).

    Attributes:
        points: ``[N, 4]`` float32 returns: x, y, z in the sensor frame (x forward, y left, z up, metres) and
            intensity (a placeholder: 1.0 for every return). Row-major over the range image (channel by channel,
            from the highest beam; within a channel by azimuth), beams without a return left out.
        ranges: ``[channels, A]`` float32 range image, metres along the beam (``inf`` = no return); row ``c`` is
            beam ``spec.elevations_deg()[c]``, column ``a`` azimuth ``spec.azimuths_deg()[a]``.
        frame: the trajectory tick.
        timestamp: seconds (the trajectory's).
        sensor_to_world: ``[4,4]`` float64 sensor frame -> scene frame (``ego_to_world @ lidar_to_ego``).
        spec_name: the `LidarSpec`'s name.
    """

    points: np.ndarray
    ranges: np.ndarray
    frame: int
    timestamp: float
    sensor_to_world: np.ndarray
    spec_name: str

    def points_world(self) -> np.ndarray:
        """``[N, 3]`` float64 return positions in the scene frame, metres."""
        p = self.points[:, :3].astype(np.float64)
        return p @ self.sensor_to_world[:3, :3].T + self.sensor_to_world[:3, 3]

    def __repr__(self) -> str:
        return (f"LidarScan({self.spec_name!r}, frame={self.frame}, t={self.timestamp:.3f} s, "
                f"{len(self.points)} of {self.ranges.size} beams returned)")


def lidar_samples(field: VoxelField, max_range: float) -> int:
    """Samples per beam so that the step is at most half the smallest voxel edge over the longest possible segment
    (the box diagonal or `max_range`, whichever is shorter)."""
    box = (field.bounds[..., 1, :] - field.bounds[..., 0, :]).double()
    longest = min(float(max_range), float(torch.linalg.vector_norm(box, dim=-1).max()))
    half_voxel = 0.5 * float(field.voxel_size.double().min())
    return max(1, math.ceil(longest / half_voxel))


@torch.no_grad()
def march_lidar_rays(field: VoxelField, origins: torch.Tensor, directions: torch.Tensor, *, max_range: float,
                     n_samples: int, hit_alpha: float = HIT_ALPHA,
                     max_samples_per_chunk: int = MAX_SAMPLES_PER_CHUNK) -> torch.Tensor:
    """Ranges of beams through an unbatched field: where the accumulated opacity first reaches `hit_alpha`.

    The reference implementation (model: this module's docstring); chunked over beams, no gradients, on the field's
    device and in its dtype.

    Args:
        field: unbatched `VoxelField` (σ per metre) in the frame of the beams.
        origins: ``[R, 3]`` beam origins, metres.
        directions: ``[R, 3]`` beam directions (normalised here).
        max_range: metres; beams are marched over ``[0, max_range]`` ∩ the box.
        n_samples: samples per beam ``S`` (the step is the clipped segment / S; see `lidar_samples`).
        hit_alpha: the opacity that counts as a return, in (0, 1).
        max_samples_per_chunk: beams × samples marched at once (memory bound).
    Returns:
        ``[R]`` float32 ranges, metres along the beam; ``inf`` where the opacity never reaches `hit_alpha`.
    """
    if field.is_batched:
        raise LidarError(f"march_lidar_rays takes one scene, got a batched field of {field.batch_size}: index it "
                         "(field[i])")
    if not 0.0 < hit_alpha < 1.0:
        raise LidarError(f"hit_alpha must lie in (0, 1), got {hit_alpha}")
    if n_samples < 1 or not max_range > 0:
        raise LidarError(f"n_samples must be >= 1 and max_range > 0, got {n_samples} and {max_range}")
    dev, dt = field.device, field.dtype
    o = torch.as_tensor(origins, device=dev, dtype=dt).reshape(-1, 3)
    d = torch.as_tensor(directions, device=dev, dtype=dt).reshape(-1, 3)
    if o.shape != d.shape:
        raise LidarError(f"origins {tuple(o.shape)} and directions {tuple(d.shape)} must both be [R, 3]")
    d = d / torch.linalg.vector_norm(d, dim=-1, keepdim=True)
    lo, hi = field.bounds[0], field.bounds[1]                                 # [3] each
    scale = 2.0 / (hi - lo)                                                   # metres -> normalised coordinates
    density = field.density[None, None]                                       # [1, 1, Z, Y, X]
    log_keep = math.log(1.0 - hit_alpha)                                      # ln(1 − hit_alpha) < 0
    out = torch.full((o.shape[0],), math.inf, device=dev, dtype=torch.float32)
    step = max(1, int(max_samples_per_chunk) // n_samples)
    for start in range(0, o.shape[0], step):
        oc, dc = o[start:start + step], d[start:start + step]                 # [r, 3]
        t0, t1, hit = clip_rays_to_box(oc, dc, lo, hi, 0.0, float(max_range))  # [r] each
        delta = (t1 - t0) / n_samples                                         # [r]; 0 where the beam misses
        t = sample_t(t0, delta, n_samples, None)                              # [r, S] sample midpoints
        pts = torch.addcmul(((oc - lo) * scale - 1.0)[:, None, :], t[..., None], (dc * scale)[:, None, :])
        sigma = sample_grid(density, pts[None])[0, 0]                         # [r, S]
        alpha = 1.0 - torch.exp(-sigma * delta[:, None])                      # [r, S]
        ones = torch.ones_like(alpha[:, :1])
        T = torch.cumprod(torch.cat([ones, 1.0 - alpha], dim=-1), dim=-1)     # [r, S+1]; T[:, i] = Π_{j<i}
        crossed = T[:, 1:] <= 1.0 - hit_alpha                                 # opacity after sample i ≥ hit_alpha
        any_hit = crossed.any(dim=-1) & hit                                   # [r]
        i = crossed.to(torch.uint8).argmax(dim=-1, keepdim=True)              # [r, 1] first crossing sample
        T_prev = T.gather(-1, i)[:, 0]                                        # [r] transmittance before it
        sig = sigma.gather(-1, i)[:, 0]                                       # [r] its density (> 0 where crossed)
        # Inside the crossing step: T_prev·exp(−σ·x) = 1 − hit_alpha  ->  x = ln(T_prev / (1 − hit_alpha)) / σ.
        x = (torch.log(T_prev.clamp_min(1e-30)) - log_keep) / sig.clamp_min(1e-30)
        x = torch.minimum(x.clamp_min(0.0), delta)
        rng = t0 + i[:, 0].to(dt) * delta + x
        out[start:start + step] = torch.where(any_hit, rng.float(), out[start:start + step])
    return out


def _scene_field(scene) -> VoxelField:
    """The unbatched `VoxelField` of a `NeuralScene` (duck-typed: ``.field``) or of a field itself."""
    field = scene if isinstance(scene, VoxelField) else getattr(scene, "field", None)
    if not isinstance(field, VoxelField):
        raise TypeError(f"expected a NeuralScene or a VoxelField, got {type(scene).__name__}")
    if field.is_batched:
        raise LidarError(f"render_lidar renders one scene at a time, got a batched field of {field.batch_size}: "
                         "index it (field[i])")
    return field


def render_lidar(scene_or_field, trajectory: Trajectory, spec: LidarSpec | str, *, n_samples: int | None = None,
                 hit_alpha: float = HIT_ALPHA, device: torch.device | str | None = None) -> Iterator[LidarScan]:
    """Scan `spec` along `trajectory`, lazily: one `LidarScan` per tick.

    The sensor pose at tick ``t`` is ``trajectory.ego_to_world[t] @ spec.lidar_to_ego`` (the cameras' rule,
    `nfldm_sdk.sensors.trajectory_render.rig_cameras`); the scan is one instant at that pose (no motion distortion).

    Args:
        scene_or_field: a `NeuralScene` or an unbatched `VoxelField` (no decoder needed); the trajectory is in its
            scene frame.
        trajectory: ``T`` ego poses (ego x forward, y left, z up).
        spec: a `LidarSpec`, a preset name or a LiDAR JSON file (`LidarSpec.resolve`).
        n_samples: samples per beam (default `lidar_samples`: steps of at most half a voxel).
        hit_alpha: the opacity that counts as a return (default `HIT_ALPHA`, the cameras' threshold).
        device: where to march (default: the field's device); the field is copied there as float32.
    Yields:
        per tick ``t = 0..T-1`` a `LidarScan` (host numpy arrays).
    """
    spec = LidarSpec.resolve(spec)
    field = _scene_field(scene_or_field).to(device=device, dtype=torch.float32)
    if not isinstance(trajectory, Trajectory):
        raise TypeError(f"trajectory must be a Trajectory, got {type(trajectory).__name__}")
    samples = lidar_samples(field, spec.range_m) if n_samples is None else int(n_samples)
    if samples < 1:
        raise LidarError(f"n_samples must be >= 1, got {n_samples}")
    return _iter_scans(field, trajectory, spec, samples, float(hit_alpha))


def _iter_scans(field: VoxelField, trajectory: Trajectory, spec: LidarSpec, n_samples: int,
                hit_alpha: float) -> Iterator[LidarScan]:
    # A generator separate from render_lidar so the argument checks run at call time.
    dirs = spec.directions()                                                  # [C, A, 3] float64, sensor frame
    flat = dirs.reshape(-1, 3)
    for t in range(len(trajectory)):
        s2w = trajectory.ego_to_world[t] @ spec.lidar_to_ego                  # [4, 4] float64
        world_dirs = flat @ s2w[:3, :3].T                                     # [R, 3]
        origins = np.broadcast_to(s2w[:3, 3], world_dirs.shape)
        ranges = march_lidar_rays(field, torch.from_numpy(np.ascontiguousarray(origins)),
                                  torch.from_numpy(world_dirs), max_range=spec.range_m, n_samples=n_samples,
                                  hit_alpha=hit_alpha).cpu().numpy()          # [R] float32
        ok = np.isfinite(ranges)
        xyz = (flat[ok] * ranges[ok, None].astype(np.float64)).astype(np.float32)
        points = np.concatenate([xyz, np.ones((len(xyz), 1), dtype=np.float32)], axis=1)
        yield LidarScan(points=points, ranges=ranges.reshape(dirs.shape[:2]), frame=t,
                        timestamp=float(trajectory.timestamps[t]), sensor_to_world=s2w, spec_name=spec.name)
