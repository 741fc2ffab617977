"""Culling for the moving cars: the pixels their boxes may cover, and the shadow rays that may pass near them.

The cars live in a small scene rebuilt every tick (`Renderer.render`); casting only the pixels and shadow rays
these conservative tests select gives the same hits as casting everything against it.
"""
from __future__ import annotations

import numba
import numpy as np

from sim_bridge.rig import Rig

_BOX_EDGES = np.array([(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)])
_NEAR = 0.05


def car_pixel_mask(boxes: np.ndarray, cam_to_world: np.ndarray, rig: Rig, cams: range | None = None,
                   dirs_cam: np.ndarray | None = None) -> np.ndarray:
    """`[n,H,W]` bool: pixels of the cameras `cams` (default: all) whose rays may hit one of the car boxes
    `[K,8,3]` (world corners); `cam_to_world [n,4,4]` are those cameras' poses.

    Each box is clipped at the camera's near plane (z = 5 cm) before projecting, so a car beside the camera
    only claims the part of the image it can cover. A pinhole camera marks the pixel rectangle around the projected
    box; a fisheye camera (straight edges bend in its image) marks the pixels whose ray `dirs_cam [N_rig,H*W,3]`
    (`CameraRays.dirs_cam`, camera z = 1, needed for fisheye rigs) falls in the rectangle the box covers on the
    z = 1 plane — the box's central projection is convex, so that rectangle holds every ray that can meet it.
    """
    cams = range(len(rig)) if cams is None else cams
    N, H, W = len(cams), rig.height, rig.width
    mask = np.zeros((N, H, W), bool)
    world_to_cam = np.linalg.inv(cam_to_world)
    for n, cam in enumerate(rig.cameras[cams.start:cams.stop]):
        pc = boxes @ world_to_cam[n, :3, :3].T + world_to_cam[n, :3, 3]  # [K,8,3]
        z = pc[..., 2]
        keep = (z > _NEAR).any(1)
        if not keep.any():
            continue
        pc, z = pc[keep], z[keep]
        a, b = pc[:, _BOX_EDGES[:, 0]], pc[:, _BOX_EDGES[:, 1]]  # [K,12,3]
        za, zb = a[..., 2], b[..., 2]
        cross = (za - _NEAR) * (zb - _NEAR) < 0
        t = np.where(cross, (_NEAR - za) / np.where(cross, zb - za, 1.0), 0.0)
        clip = a + (b - a) * t[..., None]
        pts = np.concatenate([pc, clip], axis=1)  # [K,20,3]
        valid = np.concatenate([z > _NEAR, cross], axis=1)
        if cam.model != "pinhole":
            if dirs_cam is None:
                raise ValueError("car_pixel_mask needs dirs_cam (CameraRays.dirs_cam) for a fisheye camera")
            mask[n] = _rays_in_rects(pts, valid, dirs_cam[cams.start + n]).reshape(H, W)
            continue
        K = np.asarray(cam.K)
        uv = pts[..., :2] / np.maximum(pts[..., 2:3], _NEAR) @ K[:2, :2].T + K[:2, 2]
        lo = np.floor(np.where(valid[..., None], uv, np.inf).min(1)).astype(int) - 1
        hi = np.ceil(np.where(valid[..., None], uv, -np.inf).max(1)).astype(int) + 1
        for (u0, v0), (u1, v1) in zip(lo, hi):
            u0, v0, u1, v1 = max(u0, 0), max(v0, 0), min(u1, W), min(v1, H)
            if u1 > u0 and v1 > v0:
                mask[n, v0:v1, u0:u1] = True
    return mask


def _rays_in_rects(pts: np.ndarray, valid: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """`[P]` bool: rays `dirs [P,3]` (camera z = 1) inside the z = 1 bounding rectangle of some box's points
    `pts [K,M,3]` (camera frame, those with `valid [K,M]` in front of the near plane), with a float32 margin."""
    q = pts[..., :2] / np.maximum(pts[..., 2:3], _NEAR)                     # [K,M,2] on the z = 1 plane
    lo = np.where(valid[..., None], q, np.inf).min(1)                       # [K,2]
    hi = np.where(valid[..., None], q, -np.inf).max(1)
    pad = 1e-5 * (1.0 + np.maximum(np.abs(lo), np.abs(hi)))
    lo, hi = lo - pad, hi + pad
    x, y = dirs[:, 0], dirs[:, 1]
    out = np.zeros(len(dirs), bool)
    for (x0, y0), (x1, y1) in zip(lo, hi):
        out |= (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    return out


class CarShadowGrid:
    """A conservative 2D raster of where the cars' shadows may fall (built once per tick, shared by the camera
    groups): `near(srays)` says which shadow rays need the cars' occlusion test.

    Args:
        car_poses: `[K,3]` (x, y, yaw) of the cars. sun_dir: `[3]` unit vector towards the sun.
        height: the cars' height, m. cell: raster cell, m.
    """

    def __init__(self, car_poses: np.ndarray, sun_dir: np.ndarray, height: float, cell: float = 2.0):
        self.height, self.cell = float(height), float(cell)
        reach = height / max(float(sun_dir[2]), 0.05) * float(np.hypot(sun_dir[0], sun_dir[1])) + 3.2
        self.x0, self.y0 = car_poses[:, 0].min() - reach, car_poses[:, 1].min() - reach
        self.nx = int((car_poses[:, 0].max() + reach - self.x0) / cell) + 2
        self.ny = int((car_poses[:, 1].max() + reach - self.y0) / cell) + 2
        self.grid = None
        if self.nx * self.ny > 4_000_000:  # cars spread over a huge area: `near` tests everything low enough
            return
        grid = np.zeros((self.nx, self.ny), bool)
        r = int(np.ceil(reach / cell)) + 1
        oi, oj = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1), indexing="ij")
        disc = (oi * oi + oj * oj) * cell * cell <= (reach + cell) ** 2
        oi, oj = oi[disc], oj[disc]
        ci = ((car_poses[:, 0] - self.x0) / cell).astype(int)
        cj = ((car_poses[:, 1] - self.y0) / cell).astype(int)
        gi = np.clip(ci[:, None] + oi[None], 0, self.nx - 1)
        gj = np.clip(cj[:, None] + oj[None], 0, self.ny - 1)
        grid[gi.ravel(), gj.ravel()] = True
        self.grid = grid

    def near(self, srays: np.ndarray) -> np.ndarray:
        """`[S]` bool: shadow rays `srays [S,6]` whose origin may lie in the shadow of a car."""
        if self.grid is None:
            return srays[:, 2] < self.height
        out = np.empty(len(srays), bool)
        _near_grid(srays, self.grid, self.x0, self.y0, 1.0 / self.cell, self.height, out)
        return out


@numba.njit(nogil=True, cache=True, parallel=True)
def _near_grid(srays, grid, x0, y0, inv_cell, height, out):  # pragma: no cover - compiled
    """out[k] = the origin of shadow ray k lies below `height` in a marked cell of `grid [nx, ny]`."""
    nx, ny = grid.shape
    for k in numba.prange(srays.shape[0]):
        fi = (srays[k, 0] - x0) * inv_cell
        fj = (srays[k, 1] - y0) * inv_cell
        ok = srays[k, 2] < height and fi >= 0 and fj >= 0 and fi < nx and fj < ny
        out[k] = ok and grid[int(fi), int(fj)]
