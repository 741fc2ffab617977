"""Camera sets: the one place that builds the project's standard views as `Cameras`.

Conventions: scene frame right-handed, z up, metres (x forward, y left); OpenCV camera axes (x right, y down,
z forward); intrinsics from `nfldm_sdk.cameras.pinhole.intrinsics_from_fov` (horizontal field of view, square
pixels, centred principal point). Two pose builders underlie every set:

* `horizontal_cam_to_world` — level cameras (no pitch or roll) at a position, looking along a yaw;
* `look_at` — a camera at an eye point looking at a target.

The sets:

* `ring_cameras` — ``n`` level cameras at one point, yaw 60° apart (a 6-camera ring, each further lap turned by
  7°): the benchmarks' and tests' view of a synthetic scene;
* `preview_cameras` — four level views front/left/back/right (`PREVIEW_YAWS`): ``nfldm generate``'s preview;
* `mesh_color_cameras` — the capture rig at the scene origin plus oblique and top-down views of a box: mesh
  colouring (`nfldm_sdk.viz.mesh.field_to_mesh`);
* `sample_sds_cameras` — random level views over a ground square: the SDS refinement distribution
  (`nfldm_sdk.guidance.sds`).

A rig's cameras along a trajectory are the rig's own job (`nfldm_sdk.cameras.rig.CameraRig.cameras`).

Example::

    cams = ring_cameras(6, 256)                                     # [6], 90° views at 1.6 m height
    cams = sample_sds_cameras((2, 8), 64, 64, torch.Generator().manual_seed(0))   # [2, 8]
"""
from __future__ import annotations

import math

import numpy as np
import torch

from nfldm_sdk.cameras.pinhole import Cameras, intrinsics_from_fov
from nfldm_sdk.cameras.rig import CameraRig

__all__ = ["PREVIEW_YAWS", "horizontal_cam_to_world", "look_at", "mesh_color_cameras", "preview_cameras",
           "ring_cameras", "sample_sds_cameras"]

#: Preview view directions: (name, yaw in degrees about z; 0 = front = +x, 90 = left = +y).
PREVIEW_YAWS = (("front", 0.0), ("left", 90.0), ("back", 180.0), ("right", 270.0))


# ============================================================================================ poses
def horizontal_cam_to_world(position: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
    """``[..., 4, 4]`` cam_to_world of level cameras (OpenCV axes) at ``position [..., 3]`` (metres) looking along
    ``yaw [...]`` (radians about z; 0 = +x forward, π/2 = +y left): z_cam = ``(cos, sin, 0)``, y_cam = ``(0, 0, −1)``
    (down), x_cam = y_cam × z_cam (right). In ``yaw``'s dtype and device."""
    c, s = torch.cos(yaw), torch.sin(yaw)
    zero, one = torch.zeros_like(c), torch.ones_like(c)
    fwd = torch.stack([c, s, zero], -1)                                   # [..., 3]
    down = torch.stack([zero, zero, -one], -1)
    right = torch.linalg.cross(down, fwd)
    m = torch.zeros(*yaw.shape, 4, 4, dtype=yaw.dtype, device=yaw.device)
    m[..., :3, 0], m[..., :3, 1], m[..., :3, 2], m[..., :3, 3] = right, down, fwd, position
    m[..., 3, 3] = 1.0
    return m


def look_at(eye: np.ndarray, target: np.ndarray, up_hint: np.ndarray | None = None) -> np.ndarray:
    """OpenCV ``cam_to_world [4, 4]`` (float64) of a camera at ``eye [3]`` looking at ``target [3]`` (metres): image
    up towards +z, or towards ``up_hint [3]`` (e.g. for a camera looking straight down); a view along ±z without a
    hint takes +x as its hint."""
    z = target - eye
    z = z / np.linalg.norm(z)
    up = np.array([0.0, 0.0, 1.0]) if up_hint is None else up_hint
    x = np.cross(z, up)                                               # OpenCV x (right) = forward × up
    if np.linalg.norm(x) < 1e-6:
        x = np.cross(z, np.array([1.0, 0.0, 0.0]))
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)                                                # y (down) = z × x
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, eye
    return m


# ============================================================================================ camera sets
def ring_cameras(n: int, size: int, *, height: float = 1.6, hfov_deg: float = 90.0,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Cameras:
    """``n`` level cameras ``[n]`` of ``size`` × ``size`` pixels at ``(0, 0, height)`` (metres): yaw ``60°·(i mod 6)
    + 7°·(i div 6)`` (a 6-camera ring, each further lap turned by 7°), ``hfov_deg`` field of view."""
    yaw = torch.tensor([math.radians(60.0 * (i % 6) + 7.0 * (i // 6)) for i in range(n)], dtype=torch.float64)
    # the height is rounded to float32 first, so that float32 and float64 rings share one pose
    pos = torch.tensor([0.0, 0.0, height], dtype=torch.float32).to(torch.float64).expand(n, 3)
    return Cameras.from_fov(hfov_deg, size, size, horizontal_cam_to_world(pos, yaw).to(device=device, dtype=dtype))


def preview_cameras(width: int, height: int, *, eye_height: float = 1.6, hfov_deg: float = 90.0) -> Cameras:
    """Four level cameras ``[4]`` (float32) at ``(0, 0, eye_height)`` in the scene frame looking front, left, back and
    right (`PREVIEW_YAWS`), ``width`` × ``height`` pixels, ``hfov_deg`` field of view."""
    yaw = torch.tensor([math.radians(deg) for _, deg in PREVIEW_YAWS], dtype=torch.float64)
    pos = torch.tensor([0.0, 0.0, eye_height], dtype=torch.float64).expand(len(PREVIEW_YAWS), 3)
    return Cameras.from_fov(hfov_deg, width, height, horizontal_cam_to_world(pos, yaw).float())


def mesh_color_cameras(bounds: torch.Tensor, size: int = 128, eye_height: float = 1.6) -> Cameras:
    """Views ``[11]`` (float32, ``size`` × ``size`` pixels) that colour meshes of a scene with box ``bounds [2, 3]``
    (world (x, y, z) min and max, metres): the capture rig at the scene origin with its cameras ``eye_height``
    metres up (6; the road-level views the decoder was trained on), four oblique 75° views from above the middle
    of each box edge looking at the centre of the floor, and one 80° top-down view covering the box."""
    b = torch.as_tensor(bounds, dtype=torch.float64).reshape(2, 3)
    lo, hi = b[0].numpy(), b[1].numpy()
    c = (lo + hi) / 2
    ext = hi - lo
    rig = CameraRig.preset("capture", size, size)
    origin = np.eye(4)
    origin[2, 3] = eye_height - 1.6                                   # the rig is mounted 1.6 m above the ego origin
    mats = [m for m in origin @ rig.cam_to_ego()]
    Ks = [k for k in rig.K()]
    top = lo[2] + ext[2] + max(ext[0], ext[1]) * 0.35                 # above the box
    for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        eye = np.array([c[0] + dx * ext[0] / 2, c[1] + dy * ext[1] / 2, top])
        mats.append(look_at(eye, np.array([c[0], c[1], lo[2]])))
        Ks.append(intrinsics_from_fov(75.0, size, size, dtype=torch.float64).numpy())
    h = (max(ext[0], ext[1]) / 2) / math.tan(math.radians(40.0)) + hi[2]   # 80° view covering the box from above
    mats.append(look_at(np.array([c[0], c[1], h]), np.array([c[0], c[1], lo[2]]), up_hint=np.array([1.0, 0.0, 0.0])))
    Ks.append(intrinsics_from_fov(80.0, size, size, dtype=torch.float64).numpy())
    return Cameras(torch.tensor(np.stack(Ks), dtype=torch.float32), torch.tensor(np.stack(mats), dtype=torch.float32),
                   size, size)


def sample_sds_cameras(shape: tuple[int, ...], width: int, height: int, generator: torch.Generator, *,
                       area_m2: float = 6.0, eye_height: float = 1.6, hfov_deg: float = 90.0) -> Cameras:
    """SDS cameras of batch shape `shape`: ground position uniform in a ``√area × √area`` square centred on the
    scene origin, height `eye_height`, yaw uniform in [0, 2π), level (no pitch/roll), `hfov_deg` field of view.

    Draws ``[*shape, 2]`` positions then ``[*shape]`` yaws from the CPU `generator` (float64, then float32).
    """
    side = math.sqrt(float(area_m2))
    xy = (torch.rand(*shape, 2, generator=generator, dtype=torch.float64) - 0.5) * side
    yaw = torch.rand(*shape, generator=generator, dtype=torch.float64) * (2.0 * math.pi)
    pos = torch.cat([xy, torch.full((*shape, 1), float(eye_height), dtype=torch.float64)], -1)
    return Cameras.from_fov(hfov_deg, width, height, horizontal_cam_to_world(pos, yaw).float())
