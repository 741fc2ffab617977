"""Per-pixel camera rays of a rig, in the camera frame once and in the world every tick.

Ray directions are `R_cw · d` with `d` the camera-frame direction of the pixel centre scaled to camera-z exactly
1 — `K⁻¹ (u + 0.5, v + 0.5, 1)ᵀ` for a pinhole camera, the unprojection of `sim_bridge.camera_models` for a
fisheye one (which sees less than 90° off axis, so every ray has z > 0) — so the hit parameter `t_hit` IS the
planar z-depth (metres) of the pixel, exactly consistent with K, the camera model and cam_to_world, and the rest of
the renderer needs no model. The Euclidean distance is `t_hit · |d|`.
"""
from __future__ import annotations

import numba
import numpy as np

from sim_bridge.camera_models import unproject_normalized
from sim_bridge.rig import Rig

_F32 = np.float32


class CameraRays:
    """Per-pixel camera-frame ray directions of a rig.

    Attributes:
        dirs_cam: `[N,H*W,3]` float64 camera-frame directions with camera z = 1 (K⁻¹ (u+0.5, v+0.5, 1) for a
            pinhole camera), row-major pixels.
        norm: `[N*H*W]` float32, |dirs_cam| (distance = depth · norm).
    """

    def __init__(self, rig: Rig):
        self.rig = rig
        self.N, self.H, self.W = len(rig), rig.height, rig.width
        dirs = []
        for cam in rig.cameras:
            Kinv = np.linalg.inv(np.asarray(cam.K, float))
            u, v = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
            pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=1)
            d = pix @ Kinv.T
            if cam.model != "pinhole":
                d = unproject_normalized(d[:, :2] / d[:, 2:3], cam.model, cam.distortion)
            d /= d[:, 2:3]  # exactly z = 1 even for a skewed K
            dirs.append(d)
        self.dirs_cam = np.stack(dirs)
        self._dx = self.dirs_cam[..., 0].astype(_F32)
        self._dy = self.dirs_cam[..., 1].astype(_F32)
        self.norm = np.linalg.norm(self.dirs_cam, axis=2).astype(_F32).reshape(-1)
        self.inv_norm = (1.0 / self.norm).astype(_F32)

    def world(self, cam_to_world: np.ndarray, cams: range | None = None) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Rays for camera poses `cam_to_world [N,4,4]` of the cameras `cams` (default: all; n = len(cams)).

        Returns (rays `[n*H*W,6]` float32 for Open3D: origin, direction with camera-z 1; origins `[n,3]` float32;
        the direction components [dx, dy, dz], each `[n*H*W]` float32 contiguous).
        """
        cams = range(self.N) if cams is None else cams
        N, P = len(cams), self.H * self.W
        rays = np.empty((N * P, 6), _F32)
        comps = np.empty((3, N * P), _F32)
        R = np.ascontiguousarray(cam_to_world[cams.start:cams.stop, :3, :3], dtype=_F32)
        o = np.ascontiguousarray(cam_to_world[cams.start:cams.stop, :3, 3], dtype=_F32)
        _world_rays(self._dx[cams.start:cams.stop], self._dy[cams.start:cams.stop], R, o, rays, comps)
        return rays, o, [comps[0], comps[1], comps[2]]


@numba.njit(nogil=True, cache=True, parallel=True)
def _world_rays(dx, dy, R, o, rays, comps):  # pragma: no cover - compiled
    """World rays of cameras with camera-frame directions (dx, dy, 1) `[N,P]`, rotations `R [N,3,3]` and origins
    `o [N,3]` (float32): `rays [N*P,6]` (origin, direction) and the direction components `comps [3,N*P]`.
    d_world = R (x, y, 1), in float32 as (x·R_i0 + y·R_i1) + R_i2 (no fused multiply-add: numba does not contract)."""
    N, P = dx.shape
    for k in numba.prange(N * P):
        n, p = k // P, k % P
        x, y = dx[n, p], dy[n, p]
        for i in range(3):
            d = x * R[n, i, 0] + y * R[n, i, 1] + R[n, i, 2]
            comps[i, k] = d
            rays[k, i] = o[n, i]
            rays[k, 3 + i] = d
