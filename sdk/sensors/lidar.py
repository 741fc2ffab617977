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
``1 / rotation_frequency_hz`` of a real rotation). Intensity is a placeholder (1.0 for every return).

Semantic labels (CARLA's ``sensor.lidar.ray_cast_semantic``): when the scene's decoder has a semantic head, every
return gets the CARLA tag of the semantic field at its return point (`lidar_point_tags`): the features there,
trilinearly interpolated with the densities as weights — ``f = trilinear(σ f) / trilinear(σ)`` — so the empty voxels
next to a surface (whose features carry no meaning, and which a camera ray's opacity weights ignore too) do not
blur the surface's class; then the head's logits ``W f + b`` over the solid classes and their argmax, written as the
class's representative tag. Head-less scenes (or a bare `VoxelField`) give ``LidarScan.tags = None``.

Example::

    spec = LidarSpec.preset("nuscenes32")
    for scan in render_lidar(scene, Trajectory.straight(length_m=20, speed_mps=10, rate_hz=10), spec):
        scan.points            # [N, 4] float32: x, y, z (sensor frame, m), intensity
        scan.ranges            # [32, 2171] float32 range image, inf = no return
        scan.tags              # [N] uint8 CARLA tags per point (None without a semantic head)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from nfldm_sdk.cameras.trajectory import Trajectory
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.models.semantic_head import SemanticHead
from nfldm_sdk.rendering.rays import HIT_ALPHA, clip_rays_to_box, sample_grid, sample_t
from nfldm_sdk.sensors.frames import scene_id_of, timestamp_us
from nfldm_sdk.sensors.lidar_spec import LidarError, LidarSpec

__all__ = ["LidarScan", "march_lidar_rays", "render_lidar", "lidar_scan", "lidar_samples", "lidar_point_tags",
           "assemble_scan",
           "MAX_SAMPLES_PER_CHUNK", "NO_RETURN_TAG"]

#: Tag of the range image's cells without a return (`LidarScan.tag_image`): CARLA's 0, "Unlabeled", as the capture
#: store's ``lidar_tag`` writes it.
NO_RETURN_TAG = 0

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
        tags: ``[N]`` uint8 CARLA semantic tag of each point (row-aligned with `points`; module docstring), or None
            when the scene has no semantic head.
        ego_to_world: ``[4,4]`` float64 ego pose at this tick; lidar_to_ego: ``[4,4]`` float64 sensor -> ego frame
            (``sensor_to_world == ego_to_world @ lidar_to_ego`` bitwise). None only for scans built without them.
        scene_id: the scene's identifier (`nfldm_sdk.sensors.frames.scene_identifier`; "" for a bare field).
    """

    points: np.ndarray
    ranges: np.ndarray
    frame: int
    timestamp: float
    sensor_to_world: np.ndarray
    spec_name: str
    tags: np.ndarray | None = None
    ego_to_world: np.ndarray | None = None
    lidar_to_ego: np.ndarray | None = None
    scene_id: str = ""

    @property
    def timestamp_us(self) -> int:
        """The timestamp in integer microseconds (`nfldm_sdk.sensors.frames.timestamp_us`)."""
        return timestamp_us(self.timestamp)

    def tag_image(self) -> np.ndarray | None:
        """``[channels, A]`` uint8 tags laid out like `ranges` (`NO_RETURN_TAG` where there is no return), or None
        without labels."""
        if self.tags is None:
            return None
        out = np.full(self.ranges.shape, NO_RETURN_TAG, np.uint8)
        out[np.isfinite(self.ranges)] = self.tags                    # points are row-major over the range image
        return out

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


@torch.no_grad()
def lidar_point_tags(field: VoxelField, points: torch.Tensor, head: SemanticHead) -> torch.Tensor:
    """CARLA tags of points of an unbatched field (module docstring: density-weighted trilinear features, the head's
    argmax over the solid classes).

    Args:
        field: unbatched `VoxelField` in the frame of `points`.
        points: ``[P, 3]`` positions (x, y, z), metres; points outside the box read the border voxels.
        head: the `SemanticHead` of the scene's decoder.
    Returns:
        ``[P]`` uint8 representative CARLA tags (never sky: a return is a surface).
    """
    dev = field.device
    lo, hi = field.bounds[0].float(), field.bounds[1].float()
    pts = (torch.as_tensor(points, device=dev, dtype=torch.float32).reshape(-1, 3) - lo) * (2.0 / (hi - lo)) - 1.0
    sigma = field.density.float()[None]                                      # [1, Z, Y, X]
    grid = torch.cat([sigma, sigma * field.features.float()])[None]          # [1, 1+C, Z, Y, X]
    s = sample_grid(grid, pts[None, :, None, :])[0, :, :, 0]                 # [1+C, P]
    plain = sample_grid(field.features.float()[None], pts[None, :, None, :])[0, :, :, 0]   # [C, P]
    feats = torch.where(s[:1] > 0, s[1:] / s[:1].clamp_min(1e-12), plain)    # no density nearby: plain trilinear
    w, b = head.linear.weight.float().to(dev), head.linear.bias.float().to(dev)
    k = (w @ feats + b[:, None]).argmax(dim=0)                                # [P] solid-class index
    k = k + (k >= head.classes.sky_index).to(k.dtype)                         # the full class order
    return torch.as_tensor(head.classes.representative_tags, device=dev)[k]


def _scene_head(scene, head: SemanticHead | None) -> SemanticHead | None:
    """`head`, else the semantic head of the scene's decoder (None for a bare field or a head-less decoder)."""
    if head is not None:
        return head
    return getattr(getattr(scene, "decoder", None), "semantic_head", None)


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
                 hit_alpha: float = HIT_ALPHA, device: torch.device | str | None = None,
                 semantic_head: SemanticHead | None = None) -> Iterator[LidarScan]:
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
        semantic_head: labels the returns (default: the scene decoder's head; none for a bare field or a head-less
            decoder: ``tags`` is then None).
    Yields:
        per tick ``t = 0..T-1`` a `LidarScan` (host numpy arrays; ``tags`` ``[N]`` uint8 with a head).
    """
    spec = LidarSpec.resolve(spec)
    field = _scene_field(scene_or_field).to(device=device, dtype=torch.float32)
    if not isinstance(trajectory, Trajectory):
        raise TypeError(f"trajectory must be a Trajectory, got {type(trajectory).__name__}")
    samples = lidar_samples(field, spec.range_m) if n_samples is None else int(n_samples)
    if samples < 1:
        raise LidarError(f"n_samples must be >= 1, got {n_samples}")
    head = _scene_head(scene_or_field, semantic_head)
    return _iter_scans(field, trajectory, spec, samples, float(hit_alpha), head, scene_id_of(scene_or_field))


@torch.no_grad()
def lidar_scan(field: VoxelField, spec: LidarSpec, ego_to_world: np.ndarray, lidar_to_ego: np.ndarray | None = None,
               *, n_samples: int, hit_alpha: float = HIT_ALPHA, head: SemanticHead | None = None, frame: int = 0,
               timestamp: float = 0.0, scene_id: str = "") -> LidarScan:
    """One scan of `spec` from one pose: the step `render_lidar` takes per tick (and `SensorWorld`'s LiDAR actors).

    Args:
        field: unbatched `VoxelField` in the scene frame (its device and dtype are the march's).
        spec: the `LidarSpec` (beam table; its ``lidar_to_ego`` unless `lidar_to_ego` is given).
        ego_to_world: ``[4,4]`` ego pose; the sensor pose is ``ego_to_world @ lidar_to_ego``.
        lidar_to_ego: ``[4,4]`` mount overriding ``spec.lidar_to_ego``.
        n_samples: samples per beam (`lidar_samples`); hit_alpha: the opacity of a return.
        head: labels the returns (None: ``tags`` is None).
        frame, timestamp, scene_id: copied into the scan.
    Returns:
        a `LidarScan` (host numpy arrays).
    """
    e2w = np.array(ego_to_world, dtype=np.float64)
    l2e = np.array(spec.lidar_to_ego if lidar_to_ego is None else lidar_to_ego, dtype=np.float64)
    s2w = e2w @ l2e                                                           # [4, 4] float64
    dirs = spec.directions()                                                  # [C, A, 3] float64, sensor frame
    flat = dirs.reshape(-1, 3)
    world_dirs = flat @ s2w[:3, :3].T                                         # [R, 3]
    origins = np.broadcast_to(s2w[:3, 3], world_dirs.shape)
    ranges = march_lidar_rays(field, torch.from_numpy(np.ascontiguousarray(origins)),
                              torch.from_numpy(world_dirs), max_range=spec.range_m, n_samples=n_samples,
                              hit_alpha=hit_alpha).cpu().numpy()              # [R] float32
    ok = np.isfinite(ranges)
    tags = None
    if head is not None:           # the return points in the scene frame, in float64 as the ranges were measured
        hits = origins[ok] + world_dirs[ok] * ranges[ok, None].astype(np.float64)
        tags = lidar_point_tags(field, torch.from_numpy(hits), head).cpu().numpy()
    return assemble_scan(spec, ranges, s2w, e2w, l2e, tags, frame=frame, timestamp=timestamp, scene_id=scene_id)


def assemble_scan(spec: LidarSpec, ranges: np.ndarray, sensor_to_world: np.ndarray, ego_to_world: np.ndarray,
                  lidar_to_ego: np.ndarray, tags: np.ndarray | None, *, frame: int = 0, timestamp: float = 0.0,
                  scene_id: str = "") -> LidarScan:
    """A `LidarScan` from the beam ranges of one scan.

    Args:
        spec: the `LidarSpec` whose beam table (``[C, A]`` directions) the ranges follow.
        ranges: ``[C·A]`` float32 ranges, metres along each beam, ``inf`` = no return.
        sensor_to_world, ego_to_world, lidar_to_ego: ``[4, 4]`` poses copied into the scan.
        tags: ``[N]`` uint8 CARLA tags of the finite returns in beam order, or None.
        frame, timestamp, scene_id: copied into the scan.
    Returns:
        the scan: points ``[N, 4]`` (x, y, z in the sensor frame, intensity 1), ranges ``[C, A]``.
    """
    dirs = spec.directions()                                                  # [C, A, 3] float64, sensor frame
    flat = dirs.reshape(-1, 3)
    ranges = np.asarray(ranges, dtype=np.float32).reshape(-1)
    ok = np.isfinite(ranges)
    xyz = (flat[ok] * ranges[ok, None].astype(np.float64)).astype(np.float32)
    points = np.concatenate([xyz, np.ones((len(xyz), 1), dtype=np.float32)], axis=1)
    return LidarScan(points=points, ranges=ranges.reshape(dirs.shape[:2]), frame=int(frame),
                     timestamp=float(timestamp), sensor_to_world=np.asarray(sensor_to_world, np.float64),
                     spec_name=spec.name, tags=tags, ego_to_world=np.asarray(ego_to_world, np.float64),
                     lidar_to_ego=np.asarray(lidar_to_ego, np.float64), scene_id=scene_id)


def _iter_scans(field: VoxelField, trajectory: Trajectory, spec: LidarSpec, n_samples: int,
                hit_alpha: float, head: SemanticHead | None, scene_id: str) -> Iterator[LidarScan]:
    # A generator separate from render_lidar so the argument checks run at call time.
    for t in range(len(trajectory)):
        yield lidar_scan(field, spec, trajectory.ego_to_world[t], n_samples=n_samples, hit_alpha=hit_alpha, head=head,
                         frame=t, timestamp=float(trajectory.timestamps[t]), scene_id=scene_id)
