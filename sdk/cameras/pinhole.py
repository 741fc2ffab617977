"""Batched cameras (pinhole and fisheye) and their rays.

Conventions (project-wide, see docs/architecture):

* World: right-handed, z up, metres.
* Camera frame: OpenCV axes — x right, y down, z forward (the optical axis).
* ``K [3,3]`` intrinsics in pixels; pixel centres sit at integer + 0.5, so a centred camera has its principal
  point at ``(width/2, height/2)`` and pixel ``(i, j)`` (column, row) is the point ``(i+0.5, j+0.5)``.
* ``cam_to_world [4,4]`` is a rigid transform mapping camera coordinates to world coordinates (its inverse is
  taken as the rigid inverse ``[R^T, -R^T t]``; scaled or sheared matrices are not supported).
* Depth is planar z-depth (the camera-frame z coordinate), never ray length unless a name says so. This holds for
  the fisheye models too, whose cameras must therefore see less than 90° off axis (field of view < 180°).
* Camera models (`nfldm_sdk.cameras.projection`): ``pinhole`` (the default), ``equidistant`` fisheye (pixel radius
  ``f·θ``) and ``opencv_fisheye`` (``θ_d = θ (1 + k1 θ² + k2 θ⁴ + k3 θ⁶ + k4 θ⁸)``, OpenCV's ``cv::fisheye``); ``K``
  keeps (fx, fy, cx, cy) for all of them and ``distortion [..., 4]`` holds (k1, k2, k3, k4) (zeros unless
  ``opencv_fisheye``). One `Cameras` may mix models (e.g. a rig's cameras): ``model_ids [...]`` names each.

`Cameras` are validated once, when built from user values (``Cameras(...)``, `Cameras.from_fov`,
`Cameras.stack`): finite ``K`` and ``cam_to_world``, ``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` with
``fx, fy > 0``, a rigid ``cam_to_world`` (rotation orthonormal within `RIGID_TOL`, det +1, bottom row
``0 0 0 1``), a positive size and a known model with usable coefficients (`check_distortion`); anything else
raises `CameraError` naming the camera and the fix. Cameras derived from valid ones (indexing, `reshape`, `to`, `resized`) are not checked again.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from nfldm_sdk.cameras.projection import (CAMERA_MODELS, CameraError, check_distortion, fisheye_distort,
                                          model_ids_from_names, project_normalized, unproject_normalized)

__all__ = ["CAMERA_MODELS", "CameraError", "Cameras", "RIGID_TOL", "Rays", "check_camera_matrices",
           "intrinsics_from_fov"]

#: Rigidity tolerance of ``cam_to_world``: the largest allowed entry of ``|RᵀR − I|`` (and of the bottom row's
#: distance from ``0 0 0 1``). float32 poses composed of a few rigid transforms are rigid to ~1e-6, rotations typed
#: with 3-4 decimals to ~1e-4, and a pose built from a trajectory and a rig each rigid to 1e-4 (their own checks)
#: to ~2e-4; a 1 % scale or shear gives 0.02 and is refused.
RIGID_TOL = 1e-3


def intrinsics_from_fov(hfov_deg: float, width: int, height: int, *, dtype: torch.dtype = torch.float32,
                        device: torch.device | str | None = None, model: str = "pinhole",
                        distortion: Sequence[float] | None = None) -> torch.Tensor:
    """``K [3,3]`` (pixels) for horizontal field of view ``hfov_deg`` degrees, square pixels, principal point at the
    image centre ``(width/2, height/2)``: ``f = (width/2) / tan(hfov/2)`` for a pinhole, ``(width/2) / θ_d(hfov/2)``
    for the fisheye ``model`` s (``θ_d = θ`` for equidistant, OpenCV's polynomial of ``distortion`` (k1..k4) for
    opencv_fisheye). The one definition in ``nfldm_sdk`` (`nfldm_sdk.cameras.rig` builds its presets with it);
    ``sim_bridge.rig.intrinsics_from_fov`` has the same signature and values in numpy."""
    if not (0.0 < hfov_deg < 180.0):
        raise CameraError(f"hfov_deg must be in (0, 180) degrees, got {hfov_deg}")
    half = math.radians(hfov_deg) / 2.0
    if model == "pinhole":
        f = (width / 2.0) / math.tan(half)
    else:
        k = torch.zeros(4, dtype=torch.float64) if distortion is None else torch.as_tensor(distortion, dtype=torch.float64)
        model_ids_from_names(model, ())                                  # an unknown name is a CameraError
        f = (width / 2.0) / float(fisheye_distort(torch.tensor(half, dtype=torch.float64), k))
    return torch.tensor([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], dtype=dtype, device=device)


def _check_size(width, height) -> None:
    if int(width) <= 0 or int(height) <= 0:
        raise CameraError(f"image size must be positive, got {width}x{height}: give width and height in pixels (>= 1)")


def _first(bad: torch.Tensor) -> str:
    """``"camera 3"`` / ``"camera (0, 2)"`` for the first True entry of a ``[...]`` mask, plus how many are bad."""
    idx = [int(i) for i in torch.nonzero(bad)[0].tolist()]
    where = "the camera" if not idx else f"camera {idx[0]}" if len(idx) == 1 else f"camera {tuple(idx)}"
    n = int(bad.sum())
    return where + (f" (and {n - 1} more of batch shape {list(bad.shape)})" if n > 1 else "")


@torch.no_grad()
def check_camera_matrices(K: torch.Tensor, cam_to_world: torch.Tensor, tol: float = RIGID_TOL) -> None:
    """Raise `CameraError` unless every camera of ``K [..., 3, 3]`` (pixels) and ``cam_to_world [..., 4, 4]``
    (same batch shape ``[...]``) is usable: finite, ``K`` a pinhole matrix ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]``
    with ``fx, fy > 0``, ``cam_to_world`` rigid (``|RᵀR − I| ≤ tol`` entrywise, ``det R > 0``, bottom row
    ``0 0 0 1`` within `tol`). Vectorised: a few reductions over the batch, one host sync."""
    if K.numel() == 0:
        return                                                                        # an empty batch
    work = torch.float32 if K.device.type == "mps" else torch.float64    # MPS has no float64
    K, m = K.detach().to(work), cam_to_world.detach().to(work)
    K_finite = torch.isfinite(K).flatten(-2).all(-1)                                  # [...]
    m_finite = torch.isfinite(m).flatten(-2).all(-1)
    fx, fy = K[..., 0, 0], K[..., 1, 1]
    lower = torch.stack([K[..., 1, 0], K[..., 2, 0], K[..., 2, 1], K[..., 2, 2] - 1.0], -1).abs().amax(-1)
    R = m[..., :3, :3]
    eye = torch.eye(3, dtype=work, device=m.device)
    ortho = (R.transpose(-1, -2) @ R - eye).abs().flatten(-2).amax(-1)               # [...]
    bottom = (m[..., 3, :] - torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=work, device=m.device)).abs().amax(-1)
    det = torch.linalg.det(R)
    checks = torch.stack([~K_finite, ~m_finite, K_finite & ~((fx > 0) & (fy > 0)), K_finite & (lower > 1e-6),
                          m_finite & (bottom > tol), m_finite & (ortho > tol), m_finite & (ortho <= tol) & (det <= 0)])
    failed = checks.reshape(checks.shape[0], -1).any(-1).tolist()
    if not any(failed):
        return
    kind = failed.index(True)
    bad = checks[kind]
    i = tuple(int(v) for v in torch.nonzero(bad)[0].tolist())
    where = _first(bad)
    if kind == 0:
        raise CameraError(f"K of {where} holds NaN or inf: {K[i].tolist()}; give finite intrinsics in pixels "
                          "(e.g. intrinsics_from_fov(hfov_deg, width, height))")
    if kind == 1:
        raise CameraError(f"cam_to_world of {where} holds NaN or inf: {m[i].tolist()}; give finite poses (a NaN "
                          "often comes from normalising a zero vector, e.g. a look-at target equal to the eye)")
    if kind == 2:
        raise CameraError(f"K of {where} has focal lengths fx={fx[i].item():g}, fy={fy[i].item():g} px: both must be "
                          "> 0 (K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]; e.g. intrinsics_from_fov(hfov_deg, width, "
                          "height))")
    if kind == 3:
        raise CameraError(f"K of {where} is not a pinhole matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]]: its lower "
                          f"rows are {K[i][1:].tolist()}; set K[1,0] = K[2,0] = K[2,1] = 0 and K[2,2] = 1")
    if kind == 4:
        raise CameraError(f"cam_to_world of {where} has bottom row {m[i][3].tolist()}, not [0, 0, 0, 1]: give a "
                          "rigid 4x4 transform [R t; 0 0 0 1] (camera -> world)")
    if kind == 5:
        raise CameraError(f"cam_to_world of {where} is not rigid: its rotation part R has max |RᵀR − I| = "
                          f"{ortho[i].item():.3g} (tolerance {tol:g}); R must be a rotation (OpenCV camera axes "
                          "x right, y down, z forward as columns): remove any scale or shear, or re-orthonormalise R "
                          "(e.g. U Vᵀ of its SVD)")
    raise CameraError(f"cam_to_world of {where} is a reflection (det R = {det[i].item():.3g}, must be +1): the camera "
                      "axes must be right-handed (x right, y down, z forward = x × y); flip the sign of one axis")


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single truth value
class Rays:
    """Camera rays, one per pixel.

    Attributes:
        origins: ``[..., H, W, 3]`` world-space ray origins (the camera centre), metres.
        directions: ``[..., H, W, 3]`` unit world-space directions through the pixel centres.
        z_per_t: ``[..., H, W]`` planar depth gained per metre of ray (``directions · forward`` = cos θ > 0): a
            point at ray distance ``t`` has planar z-depth ``t * z_per_t``.
    """

    origins: torch.Tensor
    directions: torch.Tensor
    z_per_t: torch.Tensor


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single truth value
class Cameras:
    """Batched cameras: OpenCV axes (x right, y down, z forward), right-handed z-up world, metres.

    All cameras of one object share ``width`` × ``height``; ``K``, ``cam_to_world`` and ``distortion`` carry any
    batch shape ``[...]`` (e.g. ``[N]`` views or ``[B, V]`` scenes × views). A ``K [3,3]`` given with batched
    ``cam_to_world`` (or the reverse) is broadcast to the common batch shape. The object is immutable; every
    method returns a new one.

    Attributes:
        K: ``[..., 3, 3]`` intrinsics, pixels (principal point in the pixel-centre-at-+0.5 convention), for every
            model.
        cam_to_world: ``[..., 4, 4]`` rigid camera-to-world transforms.
        width, height: image size in pixels.
        model: the camera model shared by every camera (one of `CAMERA_MODELS`: ``"pinhole"``, ``"equidistant"``,
            ``"opencv_fisheye"``), or ``"mixed"``. Given as one name or a nested sequence of names that broadcasts
            to the batch shape (e.g. one per camera of a rig).
        distortion: ``[..., 4]`` fisheye coefficients (k1, k2, k3, k4), zeros unless ``opencv_fisheye`` (None:
            zeros).
        model_ids: ``[...]`` int64 model index per camera into `CAMERA_MODELS` (a CPU tensor: metadata like the
            image size; it stays on the CPU when the cameras move).

    Example::

        cams = Cameras.from_fov(90.0, 256, 256, torch.eye(4).expand(6, 4, 4))
        rays = cams.rays()            # origins/directions [6, 256, 256, 3]
        fish = Cameras(K, cam_to_world, 256, 256, model="opencv_fisheye", distortion=torch.tensor([0.1, 0, 0, 0]))
    """

    K: torch.Tensor
    cam_to_world: torch.Tensor
    width: int
    height: int
    model: str | Sequence = "pinhole"
    distortion: torch.Tensor | None = None

    def __post_init__(self):
        K, m = torch.as_tensor(self.K), torch.as_tensor(self.cam_to_world)
        if K.shape[-2:] != (3, 3) or m.shape[-2:] != (4, 4):
            raise CameraError(f"Cameras needs K [...,3,3] and cam_to_world [...,4,4], got {tuple(K.shape)} and {tuple(m.shape)}")
        _check_size(self.width, self.height)
        if not K.is_floating_point():
            K = K.float()
        if m.dtype != K.dtype:
            m = m.to(K.dtype)
        if m.device != K.device:
            raise CameraError(f"K is on {K.device} but cam_to_world on {m.device}: move both with .to(device)")
        dist = None if self.distortion is None else torch.as_tensor(self.distortion).to(device=K.device, dtype=K.dtype)
        if dist is not None and dist.shape[-1:] != (4,):
            raise CameraError(f"distortion must be [..., 4] coefficients (k1, k2, k3, k4), got {tuple(dist.shape)}")
        ids = model_ids_from_names(self.model, ())
        try:
            shape = torch.broadcast_shapes(K.shape[:-2], m.shape[:-2], ids.shape,
                                           () if dist is None else dist.shape[:-1])
        except RuntimeError as e:
            raise CameraError(f"batch shapes of K {tuple(K.shape[:-2])}, cam_to_world {tuple(m.shape[:-2])}, model "
                              f"{tuple(ids.shape)} and distortion {None if dist is None else tuple(dist.shape[:-1])} "
                              "do not broadcast") from e
        K, m, ids = K.expand(*shape, 3, 3), m.expand(*shape, 4, 4), ids.expand(shape)
        check_camera_matrices(K, m)
        pinhole = isinstance(self.model, str) and self.model == "pinhole"
        if dist is None:
            dist = torch.zeros(4, dtype=K.dtype, device=K.device)
        dist = dist.expand(*shape, 4)
        if self.distortion is not None or not pinhole:
            check_distortion(ids, dist, K, int(self.width), int(self.height))
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "cam_to_world", m)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "distortion", dist)
        object.__setattr__(self, "model_ids", ids)
        object.__setattr__(self, "model", "pinhole" if pinhole else _model_name(ids))

    @classmethod
    def _derived(cls, K: torch.Tensor, cam_to_world: torch.Tensor, width: int, height: int,
                 distortion: torch.Tensor, model_ids: torch.Tensor, model: str | None = None) -> "Cameras":
        """Cameras computed from valid ones (same batch shape, dtype and device for the matrices and coefficients,
        CPU ``model_ids`` of that batch shape): only the size is checked, so indexing and reshaping stay cheap (no
        device sync on a GPU). ``model`` is the shared name when known (else computed from ``model_ids``)."""
        _check_size(width, height)
        obj = object.__new__(cls)
        for name, value in (("K", K), ("cam_to_world", cam_to_world), ("width", int(width)), ("height", int(height)),
                            ("distortion", distortion), ("model_ids", model_ids),
                            ("model", model if model is not None else _model_name(model_ids))):
            object.__setattr__(obj, name, value)
        return obj

    def _ids(self, shape: torch.Size, make) -> tuple[torch.Tensor, str | None]:
        """Model ids of batch shape ``shape`` (``make(ids)`` for mixed cameras) and the shared name (None: mixed)."""
        if self.model != "mixed":
            return _SCALAR_IDS[self.model].expand(shape), self.model
        return make(self.model_ids), None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_fov(cls, hfov_deg: float, width: int, height: int, cam_to_world: torch.Tensor) -> "Cameras":
        """Pinhole cameras with horizontal field of view ``hfov_deg``, square pixels and a centred principal point.

        Args:
            hfov_deg: horizontal field of view in degrees, in (0, 180).
            width, height: image size in pixels.
            cam_to_world: ``[..., 4, 4]`` camera-to-world transforms (float dtype and device are kept).
        """
        m = torch.as_tensor(cam_to_world)
        if not m.is_floating_point():
            m = m.float()
        K = intrinsics_from_fov(hfov_deg, width, height, dtype=m.dtype, device=m.device)
        return cls(K, m, width, height)

    @classmethod
    def stack(cls, cameras: list["Cameras"] | tuple["Cameras", ...], dim: int = 0) -> "Cameras":
        """Stack cameras of equal image size and batch shape along a new batch dimension ``dim`` (models may
        differ)."""
        if not cameras:
            raise CameraError("Cameras.stack needs at least one Cameras object")
        sizes = {(c.width, c.height) for c in cameras}
        if len(sizes) != 1:
            raise CameraError(f"cannot stack cameras of different image sizes {sorted(sizes)}: resize them first with .resized()")
        ids = torch.stack([c.model_ids for c in cameras], dim)
        name = _model_name(ids)
        dist = None if name == "pinhole" else torch.stack([c.distortion for c in cameras], dim)   # pinhole: zeros
        return cls(torch.stack([c.K for c in cameras], dim), torch.stack([c.cam_to_world for c in cameras], dim),
                   cameras[0].width, cameras[0].height, model=name if name != "mixed" else _names_of(ids),
                   distortion=dist)

    # ------------------------------------------------------------------ batch handling
    @property
    def batch_shape(self) -> torch.Size:
        """The batch shape ``[...]`` shared by ``K`` and ``cam_to_world``."""
        return self.K.shape[:-2]

    @property
    def device(self) -> torch.device:
        """The device of ``K`` and ``cam_to_world`` (always the same one)."""
        return self.K.device

    @property
    def dtype(self) -> torch.dtype:
        """The float dtype of ``K`` and ``cam_to_world`` (always the same one)."""
        return self.K.dtype

    @property
    def is_pinhole(self) -> bool:
        """Every camera is a pinhole one (the fast path of rays and projections)."""
        return self.model == "pinhole"

    def model_names(self) -> list | str:
        """The model name of every camera: a nested list of the batch shape (a str for an unbatched camera)."""
        return _names_of(self.model_ids)

    def __len__(self) -> int:
        if not self.batch_shape:
            raise TypeError("a single (unbatched) camera has no len(); its batch_shape is ()")
        return self.batch_shape[0]

    def __getitem__(self, idx) -> "Cameras":
        """Index the batch dimensions (never the matrix dimensions), e.g. ``cams[0]``, ``cams[:, 1:3]``."""
        if not self.batch_shape:
            raise IndexError("cannot index a single (unbatched) camera")
        K, m = self.K[idx], self.cam_to_world[idx]
        if K.shape[-2:] != (3, 3):
            raise IndexError(f"index {idx!r} reaches into the matrix dimensions; index only the batch shape {tuple(self.batch_shape)}")
        ids, name = self._ids(K.shape[:-2], lambda ids: ids[_host_index(idx)])
        return Cameras._derived(K, m, self.width, self.height, self.distortion[idx], ids, name)

    def reshape(self, *shape: int) -> "Cameras":
        """Same cameras with batch shape ``shape`` (same number of cameras)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
            shape = tuple(shape[0])
        K = self.K.reshape(*shape, 3, 3)
        ids, name = self._ids(K.shape[:-2], lambda ids: ids.reshape(shape))
        return Cameras._derived(K, self.cam_to_world.reshape(*shape, 4, 4), self.width, self.height,
                                self.distortion.reshape(*shape, 4), ids, name)

    def flatten(self) -> "Cameras":
        """Same cameras with batch shape ``[N]`` (``N`` = product of the batch shape; a single camera gives N=1)."""
        return self.reshape(-1)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Cameras":
        """Move/cast the matrices and coefficients (``model_ids`` stay on the CPU)."""
        return Cameras._derived(self.K.to(device=device, dtype=dtype), self.cam_to_world.to(device=device, dtype=dtype),
                                self.width, self.height, self.distortion.to(device=device, dtype=dtype),
                                self.model_ids, self.model)

    def resized(self, width: int, height: int) -> "Cameras":
        """The same cameras rendered at ``width`` × ``height``: ``K`` rows scaled by the size ratios, so the field
        of view and the pixel-centre-at-+0.5 convention are kept (a centred camera stays centred); the fisheye
        coefficients act on normalised coordinates and are kept."""
        sx, sy = width / self.width, height / self.height
        scale = torch.tensor([sx, sy, 1.0], dtype=self.dtype, device=self.device)
        return Cameras._derived(self.K * scale[:, None], self.cam_to_world, width, height, self.distortion,
                                self.model_ids, self.model)

    # ------------------------------------------------------------------ geometry
    @property
    def world_to_cam(self) -> torch.Tensor:
        """``[..., 4, 4]`` rigid inverse of ``cam_to_world``."""
        R, t = self.cam_to_world[..., :3, :3], self.cam_to_world[..., :3, 3]
        Rt = R.transpose(-1, -2)
        out = torch.zeros_like(self.cam_to_world)
        out[..., :3, :3] = Rt
        out[..., :3, 3] = -(Rt @ t[..., None])[..., 0]
        out[..., 3, 3] = 1.0
        return out

    @property
    def centers(self) -> torch.Tensor:
        """``[..., 3]`` camera centres in world coordinates, metres."""
        return self.cam_to_world[..., :3, 3]

    def pixel_centers(self) -> torch.Tensor:
        """``[H, W, 2]`` pixel-centre coordinates ``(u, v) = (i + 0.5, j + 0.5)`` in pixels."""
        v, u = torch.meshgrid(torch.arange(self.height, device=self.device, dtype=self.dtype) + 0.5,
                              torch.arange(self.width, device=self.device, dtype=self.dtype) + 0.5, indexing="ij")
        return torch.stack([u, v], dim=-1)

    def camera_directions(self) -> torch.Tensor:
        """``[..., H, W, 3]`` camera-frame ray directions through the pixel centres with z = 1 (a pixel at planar
        depth z sees the camera point ``z ·`` this; its norm is the ray length per metre of depth, ``1 / cos θ``).
        Pinhole: ``K^-1 (u, v, 1)``; fisheye: `nfldm_sdk.cameras.projection.unproject_normalized`."""
        uv = self.pixel_centers()                                           # [H, W, 2]
        uv1 = torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)         # [H, W, 3]
        K_inv = torch.linalg.inv(self.K)                                    # [..., 3, 3]
        d_cam = torch.einsum("...ij,hwj->...hwi", K_inv, uv1)               # [..., H, W, 3], z = 1
        if self.is_pinhole:
            return d_cam
        return unproject_normalized(d_cam[..., :2], self.model_ids[..., None, None], self.distortion[..., None, None, :])

    def rays(self) -> Rays:
        """One ray per pixel centre.

        Returns:
            ``Rays`` with ``origins`` and unit ``directions`` ``[..., H, W, 3]`` (world) and ``z_per_t [..., H, W]``.
            For the camera-frame direction ``d_cam`` of `camera_directions` (z = 1; ``K^-1 (u, v, 1)`` for a
            pinhole), the unit direction's z component is ``1 / |d_cam|`` (= cos θ) — that is ``z_per_t``.
        """
        d_cam = self.camera_directions()                                    # [..., H, W, 3], z = 1
        norm = d_cam.norm(dim=-1)                                           # [..., H, W]
        R = self.cam_to_world[..., :3, :3]                                  # [..., 3, 3]
        d_world = torch.einsum("...ij,...hwj->...hwi", R, d_cam / norm[..., None])  # [..., H, W, 3]
        origins = self.centers[..., None, None, :].expand_as(d_world)      # [..., H, W, 3]
        return Rays(origins=origins, directions=d_world, z_per_t=d_cam[..., 2] / norm)

    def world_to_pixels(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project world points into every camera.

        Args:
            points: ``[..., P, 3]`` world points, metres; the leading shape broadcasts with the batch shape.
        Returns:
            ``uv [..., P, 2]`` pixel coordinates (pixel centres at +0.5) and ``z [..., P]`` planar depth in metres.
            Points behind the camera have ``z <= 0`` and meaningless ``uv`` (check ``z > 0``).
        """
        w2c = self.world_to_cam                                             # [..., 4, 4]
        p_cam = (points @ w2c[..., :3, :3].transpose(-1, -2)) + w2c[..., None, :3, 3]  # [..., P, 3]
        z = p_cam[..., 2]
        if not self.is_pinhole:
            m = project_normalized(p_cam, self.model_ids[..., None], self.distortion[..., None, :])  # [..., P, 2]
            p_cam = torch.cat([m, torch.ones_like(m[..., :1])], -1) * z[..., None]
        uvw = p_cam @ self.K.transpose(-1, -2)                              # [..., P, 3]
        return uvw[..., :2] / z[..., None], z

    def pixels_to_camera(self, uv: torch.Tensor) -> torch.Tensor:
        """``[..., P, 3]`` camera-frame ray directions with z = 1 through pixels ``uv [..., P, 2]`` (pixel centres
        at +0.5; the leading shape broadcasts with the batch shape). A fisheye pixel that would see 90° or more
        off axis (outside the image) gives NaN."""
        uv1 = torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)         # [..., P, 3]
        K_inv = torch.linalg.inv(self.K)                                    # [..., 3, 3]
        d = uv1 @ K_inv.transpose(-1, -2)                                   # [..., P, 3], z = 1
        if self.is_pinhole:
            return d
        return unproject_normalized(d[..., :2], self.model_ids[..., None], self.distortion[..., None, :])

    def pixels_to_world(self, uv: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Back-project pixels at planar depths (inverse of ``world_to_pixels``).

        Args:
            uv: ``[..., P, 2]`` pixel coordinates (pixel centres at +0.5).
            z: ``[..., P]`` planar depth in metres.
        Returns:
            ``[..., P, 3]`` world points, metres.
        """
        p_cam = self.pixels_to_camera(uv) * z[..., None]                   # [..., P, 3], camera frame
        R, t = self.cam_to_world[..., :3, :3], self.cam_to_world[..., :3, 3]
        return p_cam @ R.transpose(-1, -2) + t[..., None, :]


#: One 0-d CPU id tensor per model, expanded to the batch shape of uniform cameras (no allocation per index).
_SCALAR_IDS = {name: torch.tensor(i, dtype=torch.int64) for i, name in enumerate(CAMERA_MODELS)}


def _model_name(ids: torch.Tensor) -> str:
    """The model name shared by the CPU ``model_ids`` (``"pinhole"`` for none), or ``"mixed"``."""
    if ids.numel() == 0:
        return "pinhole"
    lo, hi = int(ids.min()), int(ids.max())
    return CAMERA_MODELS[lo] if lo == hi else "mixed"


def _names_of(ids: torch.Tensor) -> list | str:
    """Nested list (or a str for a 0-d tensor) of the model names of CPU ``model_ids``."""
    def walk(x):
        return CAMERA_MODELS[x] if isinstance(x, int) else [walk(v) for v in x]
    return walk(ids.tolist())


def _host_index(idx):
    """``idx`` with any tensor in it moved to the CPU (to index the CPU ``model_ids``)."""
    if torch.is_tensor(idx):
        return idx.cpu()
    if isinstance(idx, tuple):
        return tuple(_host_index(i) for i in idx)
    return idx
