"""Camera models: how a camera-frame direction becomes a pixel and back, for `nfldm_sdk.cameras.pinhole.Cameras`.

Every model keeps ``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` (pixels, centres at integer + 0.5) and maps a
camera-frame point ``p = (x, y, z)`` (OpenCV axes: x right, y down, z forward) to *normalised* coordinates
``m = (mx, my)``, then to the pixel ``(u, v, 1) = K (mx, my, 1)``. With ``θ`` the angle between ``p`` and the optical
axis and ``r = sqrt(x² + y²)``:

* ``pinhole`` — ``m = (x, y) / z``, i.e. ``|m| = tan θ``.
* ``equidistant`` — the ideal fisheye ``|m| = θ`` (pixel radius ``f·θ``); no distortion coefficients.
* ``opencv_fisheye`` — OpenCV's ``cv::fisheye`` model: ``|m| = θ_d = θ (1 + k1 θ² + k2 θ⁴ + k3 θ⁶ + k4 θ⁸)``,
  coefficients ``distortion = (k1, k2, k3, k4)``; equidistant is the case k = 0.

For both fisheye models ``m = θ_d · (x, y) / r``. Unprojection inverts ``θ_d(θ)`` by a bracketed Newton iteration
(exact in one step for equidistant); gradients reach ``K`` and ``distortion`` through one final differentiable Newton
step (the implicit-function derivative).

Depth stays planar z along the optical axis for every model, so a camera may only see directions less than 90°
off its axis (field of view < 180°): `check_distortion` refuses cameras whose image corners reach 90°, and
distortion coefficients that make ``θ_d(θ)`` non-increasing before the image corner (no unique inverse).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from nfldm_sdk.errors import NfldmError

__all__ = ["CAMERA_MODELS", "CameraError", "PINHOLE", "EQUIDISTANT", "OPENCV_FISHEYE", "check_distortion",
           "fisheye_distort", "fisheye_theta_limit", "fisheye_undistort", "model_ids_from_names", "project_normalized",
           "unproject_normalized"]

#: The camera model names, indexed by model id (``Cameras.model_ids``).
CAMERA_MODELS = ("pinhole", "equidistant", "opencv_fisheye")
PINHOLE, EQUIDISTANT, OPENCV_FISHEYE = 0, 1, 2
#: θ samples used to find where ``θ_d(θ)`` stops increasing (`fisheye_theta_limit`): 0.1° steps up to 90°.
_LIMIT_SAMPLES = 901
_NEWTON_ITERS = 40


class CameraError(NfldmError, ValueError):
    """Cameras that cannot be rendered: non-finite or non-rigid ``cam_to_world``, intrinsics that are not a pinhole
    ``K`` with positive focal lengths, a non-positive image size, mismatched shapes, an unknown camera model or
    fisheye distortion that sees 90° or more off axis."""


def model_ids_from_names(model: str | Sequence, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """``[*shape]`` int64 CPU tensor of model ids (indices into `CAMERA_MODELS`) for one model name or a nested
    sequence of names broadcastable to ``shape`` (e.g. one name per camera of a ``[T, N]`` batch given as ``[N]``)."""
    def one(name) -> int:
        if not isinstance(name, str) or name not in CAMERA_MODELS:
            raise CameraError(f"unknown camera model {name!r}: choose one of {', '.join(CAMERA_MODELS)}")
        return CAMERA_MODELS.index(name)

    if isinstance(model, str):
        return torch.full((), one(model), dtype=torch.int64).expand(shape)

    def walk(x):
        return one(x) if isinstance(x, str) else [walk(v) for v in x]

    ids = torch.tensor(walk(model), dtype=torch.int64)
    try:
        return ids.expand(torch.broadcast_shapes(ids.shape, tuple(shape)))
    except RuntimeError as e:
        raise CameraError(f"camera models of shape {tuple(ids.shape)} do not broadcast to the batch shape "
                          f"{tuple(shape)}: give one name, or one per camera") from e


def _poly(theta: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``θ_d(θ)`` and ``dθ_d/dθ`` for ``θ [...]`` and coefficients ``k [..., 4]`` (broadcast)."""
    t2 = theta * theta
    k1, k2, k3, k4 = k.unbind(-1)
    inner = 1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))
    deriv = 1.0 + t2 * (3.0 * k1 + t2 * (5.0 * k2 + t2 * (7.0 * k3 + t2 * 9.0 * k4)))
    return theta * inner, deriv


def fisheye_distort(theta: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``θ_d = θ (1 + k1 θ² + k2 θ⁴ + k3 θ⁶ + k4 θ⁸)`` for ``θ [...]`` radians and ``k [..., 4]`` (broadcast);
    ``θ_d`` is the radius of the normalised image coordinates."""
    return _poly(theta, k)[0]


def _work_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64    # MPS has no float64


@torch.no_grad()
def fisheye_theta_limit(k: torch.Tensor) -> torch.Tensor:
    """``[...]`` the largest angle (radians, ≤ π/2) up to which ``θ_d(θ)`` of coefficients ``k [..., 4]`` keeps
    increasing (found on a 0.1° grid, rounded down): the range where the model has a unique inverse."""
    k = k.detach().to(_work_dtype(k.device))
    theta = torch.linspace(0.0, math.pi / 2, _LIMIT_SAMPLES, dtype=k.dtype, device=k.device)   # [S]
    _, deriv = _poly(theta, k[..., None, :])                                                   # [..., S]
    bad = (deriv <= 0).to(torch.int64)
    first = torch.where(bad.any(-1), bad.argmax(-1), torch.full_like(bad[..., 0], _LIMIT_SAMPLES))
    return theta[(first - 1).clamp(0, _LIMIT_SAMPLES - 1)]


def fisheye_undistort(theta_d: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``θ [...]`` (radians) with ``fisheye_distort(θ, k) = θ_d``, for ``θ_d [...] ≥ 0`` and ``k [..., 4]``
    (broadcast). Bracketed Newton on ``[0, fisheye_theta_limit(k)]`` in float64, then one differentiable Newton
    step so that gradients reach ``θ_d`` and ``k``. NaN where ``θ_d`` lies beyond the model's range (no direction
    less than 90° off axis)."""
    work = _work_dtype(theta_d.device)
    with torch.no_grad():
        td, kk = theta_d.detach().to(work), k.detach().to(work)
        hi = fisheye_theta_limit(kk)                                  # [...] of k: one search per camera
        shape = torch.broadcast_shapes(td.shape, hi.shape)
        td, hi = td.expand(shape), hi.expand(shape)                   # k stays per camera: broadcast in _poly
        reachable = td <= fisheye_distort(hi, kk)
        lo, top = torch.zeros_like(td), hi.clone()
        theta = torch.minimum(td, top)
        if bool(k.detach().any()):                                    # all zero (equidistant): θ = θ_d exactly
            for i in range(_NEWTON_ITERS):
                f, df = _poly(theta, kk)
                f = f - td
                if i % 4 == 3 and not bool((f.abs() > 1e-14 * (1.0 + td)).any()):
                    break                                             # converged (one host sync per 4 steps)
                above = f > 0
                top = torch.where(above, theta, top)
                lo = torch.where(above, lo, theta)
                step = theta - f / df.clamp_min(1e-12)
                theta = torch.where((step >= lo) & (step <= top), step, 0.5 * (lo + top))
        theta = torch.where(reachable, theta, torch.full_like(theta, math.nan))
    theta = theta.to(theta_d.dtype)
    f, df = _poly(theta, k.to(theta_d.dtype))
    return theta - (f - theta_d) / df


def unproject_normalized(m: torch.Tensor, model_ids: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Camera-frame ray directions ``[..., 3]`` with z = 1 (a point at planar depth z is z · this) from normalised
    coordinates ``m [..., 2]`` (``K^-1 (u, v, 1)``) of cameras of model ids ``model_ids [...]`` and coefficients
    ``k [..., 4]`` (both broadcast with ``m``'s leading shape). Pinhole: ``(mx, my, 1)``; fisheye: ``tan θ · m / θ_d``
    with ``θ = fisheye_undistort(|m|)``; NaN where the pixel sees 90° or more off axis."""
    ids = model_ids.to(m.device)
    fish = ids != PINHOLE                                                         # [...]
    r2 = (m * m).sum(-1)                                                          # [...]
    pos = r2 > 0
    theta_d = torch.sqrt(torch.where(pos & fish, r2, torch.ones_like(r2)))        # 1 where unused: no NaN gradients
    theta = fisheye_undistort(theta_d, k)
    safe = fish & (theta < math.pi / 2)
    scale = torch.where(safe & pos, torch.tan(torch.where(safe, theta, torch.zeros_like(theta))) / theta_d,
                        torch.ones_like(theta_d))
    scale = torch.where(fish & ~safe & pos, torch.full_like(scale, math.nan), scale)
    xy = torch.where(fish[..., None], m * scale[..., None], m)
    return torch.cat([xy, torch.ones_like(xy[..., :1])], -1)


def project_normalized(p_cam: torch.Tensor, model_ids: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Normalised coordinates ``m [..., 2]`` (pixel = ``K (m, 1)``) of camera-frame points ``p_cam [..., 3]`` for
    cameras of model ids ``model_ids [...]`` and coefficients ``k [..., 4]`` (broadcast). Pinhole: ``(x, y) / z``
    (meaningless for ``z ≤ 0``); fisheye: ``θ_d(θ) · (x, y) / r`` with ``θ = atan2(r, z)`` (defined behind the
    camera too; the optical axis maps to 0)."""
    ids = model_ids.to(p_cam.device)
    fish = (ids != PINHOLE)[..., None]                                            # [..., 1]
    xy, z = p_cam[..., :2], p_cam[..., 2:3]
    pin = xy / z
    r2 = (xy * xy).sum(-1, keepdim=True)                                          # [..., 1]
    pos = r2 > 0
    r = torch.sqrt(torch.where(pos, r2, torch.ones_like(r2)))
    theta = torch.atan2(r, z)
    theta_d = fisheye_distort(theta[..., 0], k)[..., None]
    fish_xy = torch.where(pos, xy * (theta_d / r), torch.zeros_like(xy))
    return torch.where(fish, fish_xy, pin)


@torch.no_grad()
def check_distortion(model_ids: torch.Tensor, distortion: torch.Tensor, K: torch.Tensor, width: int,
                     height: int) -> None:
    """Raise `CameraError` unless every camera of model ids ``model_ids [...]`` (CPU), coefficients
    ``distortion [..., 4]`` and (already checked) intrinsics ``K [..., 3, 3]`` is usable: finite coefficients, zero
    for ``pinhole`` and ``equidistant``; for the fisheye models the image corners ``(0, 0) … (width, height)`` must
    see less than 90° off axis with ``θ_d(θ)`` increasing up to there (field of view < 180°, unique inverse)."""
    if K.numel() == 0:
        return
    work = _work_dtype(K.device)
    k, Kw = distortion.detach().to(work), K.detach().to(work)
    ids = model_ids.to(k.device)
    finite = torch.isfinite(k).all(-1)
    zero_needed = (ids == PINHOLE) | (ids == EQUIDISTANT)
    nonzero = zero_needed & finite & (k != 0).any(-1)
    fish = ids != PINHOLE
    corners = torch.tensor([[0.0, 0.0, 1.0], [width, 0.0, 1.0], [0.0, height, 1.0], [width, height, 1.0]],
                           dtype=work, device=k.device)                               # [4, 3]
    m = corners @ torch.linalg.inv(Kw).transpose(-1, -2)                              # [..., 4, 3]
    theta_d_max = m[..., :2].norm(dim=-1).amax(-1)                                    # [...]
    k_safe = torch.where(finite[..., None], k, torch.zeros_like(k))
    limit = fisheye_theta_limit(k_safe)                                               # [...]
    reach = fisheye_distort(limit, k_safe)                                            # [...]
    too_wide = fish & finite & (theta_d_max >= reach)
    checks = torch.stack([~finite, nonzero, too_wide])
    failed = checks.reshape(3, -1).any(-1).tolist()
    if not any(failed):
        return
    kind = failed.index(True)
    bad = checks[kind]
    i = tuple(int(v) for v in torch.nonzero(bad)[0].tolist())
    where = "the camera" if not i else f"camera {i[0]}" if len(i) == 1 else f"camera {i}"
    name = CAMERA_MODELS[int(ids[i])]
    if kind == 0:
        raise CameraError(f"distortion of {where} holds NaN or inf: {k[i].tolist()}; give 4 finite coefficients "
                          "(k1, k2, k3, k4) for opencv_fisheye, zeros otherwise")
    if kind == 1:
        raise CameraError(f"{where} is a {name} camera but has distortion coefficients {k[i].tolist()}: only "
                          "opencv_fisheye takes (k1, k2, k3, k4); set model='opencv_fisheye' or pass zeros")
    if int(limit[i] * 1800 / math.pi + 0.5) < 900:
        why = (f"its distortion {k[i].tolist()} stops increasing at θ = {math.degrees(limit[i].item()):.1f}° "
               f"(θ_d = {reach[i].item():.4g}), before the image corner (θ_d = {theta_d_max[i].item():.4g})")
    else:
        why = (f"its farthest image corner lies at normalised radius θ_d = {theta_d_max[i].item():.4g}, beyond "
               f"θ_d(90°) = {reach[i].item():.4g}")
    raise CameraError(f"{where} ({name}) sees 90° or more off its optical axis: {why}. Depth is planar z, so a "
                      "camera's field of view must stay below 180° (every image corner < 90° off axis): raise the "
                      "focal lengths in K, crop the image, or fix the coefficients")
