"""Batched pinhole cameras and their rays.

Conventions (project-wide, see docs/architecture):

* World: right-handed, z up, metres.
* Camera frame: OpenCV axes — x right, y down, z forward (the optical axis).
* ``K [3,3]`` intrinsics in pixels; pixel centres sit at integer + 0.5, so a centred camera has its principal
  point at ``(width/2, height/2)`` and pixel ``(i, j)`` (column, row) is the point ``(i+0.5, j+0.5)``.
* ``cam_to_world [4,4]`` is a rigid transform mapping camera coordinates to world coordinates (its inverse is
  taken as the rigid inverse ``[R^T, -R^T t]``; scaled or sheared matrices are not supported).
* Depth is planar z-depth (the camera-frame z coordinate), never ray length unless a name says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Cameras", "Rays", "intrinsics_from_fov"]


def intrinsics_from_fov(hfov_deg: float, width: int, height: int, *, dtype: torch.dtype = torch.float32,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """Pinhole ``K [3,3]`` (pixels) for horizontal field of view ``hfov_deg`` degrees, square pixels, principal
    point at the image centre ``(width/2, height/2)``: ``f = (width/2) / tan(hfov/2)``."""
    if not (0.0 < hfov_deg < 180.0):
        raise ValueError(f"hfov_deg must be in (0, 180) degrees, got {hfov_deg}")
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return torch.tensor([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], dtype=dtype, device=device)


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single truth value
class Rays:
    """Camera rays, one per pixel.

    Attributes:
        origins: ``[..., H, W, 3]`` world-space ray origins (the camera centre), metres.
        directions: ``[..., H, W, 3]`` unit world-space directions through the pixel centres.
        z_per_t: ``[..., H, W]`` planar depth gained per metre of ray (``directions · forward`` > 0): a point at
            ray distance ``t`` has planar z-depth ``t * z_per_t``.
    """

    origins: torch.Tensor
    directions: torch.Tensor
    z_per_t: torch.Tensor


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single truth value
class Cameras:
    """Batched pinhole cameras: OpenCV axes (x right, y down, z forward), right-handed z-up world, metres.

    All cameras of one object share ``width`` × ``height``; ``K`` and ``cam_to_world`` carry any batch shape
    ``[...]`` (e.g. ``[N]`` views or ``[B, V]`` scenes × views). A ``K [3,3]`` given with batched
    ``cam_to_world`` (or the reverse) is broadcast to the common batch shape. The object is immutable; every
    method returns a new one.

    Attributes:
        K: ``[..., 3, 3]`` intrinsics, pixels (principal point in the pixel-centre-at-+0.5 convention).
        cam_to_world: ``[..., 4, 4]`` rigid camera-to-world transforms.
        width, height: image size in pixels.

    Example::

        cams = Cameras.from_fov(90.0, 256, 256, torch.eye(4).expand(6, 4, 4))
        rays = cams.rays()            # origins/directions [6, 256, 256, 3]
    """

    K: torch.Tensor
    cam_to_world: torch.Tensor
    width: int
    height: int

    def __post_init__(self):
        K, m = torch.as_tensor(self.K), torch.as_tensor(self.cam_to_world)
        if K.shape[-2:] != (3, 3) or m.shape[-2:] != (4, 4):
            raise ValueError(f"Cameras needs K [...,3,3] and cam_to_world [...,4,4], got {tuple(K.shape)} and {tuple(m.shape)}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if not K.is_floating_point():
            K = K.float()
        if m.dtype != K.dtype:
            m = m.to(K.dtype)
        if m.device != K.device:
            raise ValueError(f"K is on {K.device} but cam_to_world on {m.device}: move both with .to(device)")
        try:
            shape = torch.broadcast_shapes(K.shape[:-2], m.shape[:-2])
        except RuntimeError as e:
            raise ValueError(f"batch shapes of K {tuple(K.shape[:-2])} and cam_to_world {tuple(m.shape[:-2])} "
                             "do not broadcast") from e
        object.__setattr__(self, "K", K.expand(*shape, 3, 3))
        object.__setattr__(self, "cam_to_world", m.expand(*shape, 4, 4))
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_fov(cls, hfov_deg: float, width: int, height: int, cam_to_world: torch.Tensor) -> "Cameras":
        """Cameras with horizontal field of view ``hfov_deg``, square pixels and a centred principal point.

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
        """Stack cameras of equal image size and batch shape along a new batch dimension ``dim``."""
        if not cameras:
            raise ValueError("Cameras.stack needs at least one Cameras object")
        sizes = {(c.width, c.height) for c in cameras}
        if len(sizes) != 1:
            raise ValueError(f"cannot stack cameras of different image sizes {sorted(sizes)}: resize them first with .resized()")
        return cls(torch.stack([c.K for c in cameras], dim), torch.stack([c.cam_to_world for c in cameras], dim),
                   cameras[0].width, cameras[0].height)

    # ------------------------------------------------------------------ batch handling
    @property
    def batch_shape(self) -> torch.Size:
        """The batch shape ``[...]`` shared by ``K`` and ``cam_to_world``."""
        return self.K.shape[:-2]

    @property
    def device(self) -> torch.device:
        return self.K.device

    @property
    def dtype(self) -> torch.dtype:
        return self.K.dtype

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
        return Cameras(K, m, self.width, self.height)

    def reshape(self, *shape: int) -> "Cameras":
        """Same cameras with batch shape ``shape`` (same number of cameras)."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
            shape = tuple(shape[0])
        return Cameras(self.K.reshape(*shape, 3, 3), self.cam_to_world.reshape(*shape, 4, 4), self.width, self.height)

    def flatten(self) -> "Cameras":
        """Same cameras with batch shape ``[N]`` (``N`` = product of the batch shape; a single camera gives N=1)."""
        return self.reshape(-1)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Cameras":
        """Move/cast both matrices."""
        return Cameras(self.K.to(device=device, dtype=dtype), self.cam_to_world.to(device=device, dtype=dtype),
                       self.width, self.height)

    def resized(self, width: int, height: int) -> "Cameras":
        """The same cameras rendered at ``width`` × ``height``: ``K`` rows scaled by the size ratios, so the field
        of view and the pixel-centre-at-+0.5 convention are kept (a centred camera stays centred)."""
        sx, sy = width / self.width, height / self.height
        scale = torch.tensor([sx, sy, 1.0], dtype=self.dtype, device=self.device)
        return Cameras(self.K * scale[:, None], self.cam_to_world, width, height)

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

    def rays(self) -> Rays:
        """One ray per pixel centre.

        Returns:
            ``Rays`` with ``origins`` and unit ``directions`` ``[..., H, W, 3]`` (world) and ``z_per_t [..., H, W]``.
            For the camera-frame direction ``d_cam = K^-1 (u, v, 1)`` (z = 1), the unit direction's z component is
            ``1 / |d_cam|`` — that is ``z_per_t``.
        """
        uv = self.pixel_centers()                                           # [H, W, 2]
        uv1 = torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)         # [H, W, 3]
        K_inv = torch.linalg.inv(self.K)                                    # [..., 3, 3]
        d_cam = torch.einsum("...ij,hwj->...hwi", K_inv, uv1)               # [..., H, W, 3], z = 1
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
        uvw = p_cam @ self.K.transpose(-1, -2)                              # [..., P, 3]
        return uvw[..., :2] / z[..., None], z

    def pixels_to_world(self, uv: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Back-project pixels at planar depths (inverse of ``world_to_pixels``).

        Args:
            uv: ``[..., P, 2]`` pixel coordinates (pixel centres at +0.5).
            z: ``[..., P]`` planar depth in metres.
        Returns:
            ``[..., P, 3]`` world points, metres.
        """
        uv1 = torch.cat([uv, torch.ones_like(uv[..., :1])], dim=-1)         # [..., P, 3]
        K_inv = torch.linalg.inv(self.K)                                    # [..., 3, 3]
        p_cam = (uv1 @ K_inv.transpose(-1, -2)) * z[..., None]              # [..., P, 3], camera frame
        R, t = self.cam_to_world[..., :3, :3], self.cam_to_world[..., :3, 3]
        return p_cam @ R.transpose(-1, -2) + t[..., None, :]
