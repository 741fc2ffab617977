"""Camera models of rig cameras (numpy): how a camera-frame direction becomes a pixel and back.

The twin of `nfldm_sdk.cameras.projection` (the two packages may not import each other; the same names, formulas
and limits). Every model keeps ``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` (pixels, centres at integer + 0.5) and
maps a camera-frame point ``p = (x, y, z)`` (OpenCV axes) to normalised coordinates ``m``, then to the pixel
``(u, v, 1) = K (m, 1)``. With ``θ`` the angle off the optical axis and ``r = sqrt(x² + y²)``:

* ``pinhole`` — ``m = (x, y) / z``.
* ``equidistant`` — ``|m| = θ`` (pixel radius ``f·θ``), no coefficients.
* ``opencv_fisheye`` — OpenCV's ``cv::fisheye``: ``|m| = θ_d = θ (1 + k1 θ² + k2 θ⁴ + k3 θ⁶ + k4 θ⁸)``.

Fisheye ``m = θ_d · (x, y) / r``. Depth stays planar z, so a camera must see less than 90° off axis at every image
corner (field of view < 180°), with ``θ_d(θ)`` increasing up to there (`distortion_problem`).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["CAMERA_MODELS", "distortion_problem", "fisheye_distort", "fisheye_theta_limit", "fisheye_undistort",
           "project_normalized", "unproject_normalized"]

#: The camera model names (the same list as `nfldm_sdk.cameras.projection.CAMERA_MODELS`).
CAMERA_MODELS = ("pinhole", "equidistant", "opencv_fisheye")
_LIMIT_SAMPLES = 901          # 0.1° steps up to 90° (as the SDK)
_NEWTON_ITERS = 40


def _poly(theta: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t2 = theta * theta
    k1, k2, k3, k4 = (float(v) for v in k)
    inner = 1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))
    deriv = 1.0 + t2 * (3.0 * k1 + t2 * (5.0 * k2 + t2 * (7.0 * k3 + t2 * 9.0 * k4)))
    return theta * inner, deriv


def fisheye_distort(theta: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``θ_d = θ (1 + k1 θ² + k2 θ⁴ + k3 θ⁶ + k4 θ⁸)`` for angles ``θ [...]`` (radians) and one camera's ``k [4]``."""
    return _poly(np.asarray(theta, dtype=np.float64), k)[0]


def fisheye_theta_limit(k: np.ndarray) -> float:
    """The largest angle (radians, ≤ π/2) up to which ``θ_d(θ)`` of ``k [4]`` keeps increasing (0.1° grid,
    rounded down)."""
    theta = np.linspace(0.0, math.pi / 2, _LIMIT_SAMPLES)
    bad = np.flatnonzero(_poly(theta, k)[1] <= 0)
    return float(theta[bad[0] - 1]) if len(bad) else math.pi / 2


def fisheye_undistort(theta_d: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``θ [...]`` with ``fisheye_distort(θ, k) = θ_d`` for ``θ_d [...] ≥ 0`` (bracketed Newton on
    ``[0, fisheye_theta_limit(k)]``, float64); NaN where ``θ_d`` lies beyond the model's range."""
    td = np.asarray(theta_d, dtype=np.float64)
    hi = fisheye_theta_limit(k)
    reachable = td <= fisheye_distort(hi, k)
    lo, top = np.zeros_like(td), np.full_like(td, hi)
    theta = np.minimum(td, top)
    for _ in range(_NEWTON_ITERS if np.any(k) else 0):             # all zero (equidistant): θ = θ_d exactly
        f, df = _poly(theta, k)
        f = f - td
        above = f > 0
        top = np.where(above, theta, top)
        lo = np.where(above, lo, theta)
        step = theta - f / np.maximum(df, 1e-12)
        theta = np.where((step >= lo) & (step <= top), step, 0.5 * (lo + top))
    return np.where(reachable, theta, np.nan)


def unproject_normalized(m: np.ndarray, model: str, k: np.ndarray) -> np.ndarray:
    """Camera-frame directions ``[P, 3]`` with z = 1 (a point at planar depth z is z · this) from normalised
    coordinates ``m [P, 2]`` (``K^-1 (u, v, 1)``) of one camera of `model` and coefficients ``k [4]``; NaN where a
    fisheye pixel would see 90° or more off axis."""
    m = np.asarray(m, dtype=np.float64)
    if model == "pinhole":
        xy = m
    else:
        theta_d = np.hypot(m[:, 0], m[:, 1])
        theta = fisheye_undistort(theta_d, k)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.where(theta_d > 0, np.tan(theta) / np.where(theta_d > 0, theta_d, 1.0), 1.0)
        scale = np.where(theta < math.pi / 2, scale, np.nan)
        xy = m * scale[:, None]
    return np.concatenate([xy, np.ones((len(xy), 1))], axis=1)


def project_normalized(p_cam: np.ndarray, model: str, k: np.ndarray) -> np.ndarray:
    """Normalised coordinates ``[..., 2]`` (pixel = ``K (m, 1)``) of camera-frame points ``p_cam [..., 3]`` for one
    camera of `model` and ``k [4]``: ``(x, y) / z`` for a pinhole (meaningless for ``z ≤ 0``), ``θ_d(θ) (x, y) / r``
    for a fisheye (the optical axis maps to 0)."""
    p = np.asarray(p_cam, dtype=np.float64)
    xy, z = p[..., :2], p[..., 2:3]
    if model == "pinhole":
        return xy / z
    r = np.hypot(xy[..., :1], xy[..., 1:])
    theta_d = fisheye_distort(np.arctan2(r, z), k)
    return np.where(r > 0, xy * theta_d / np.where(r > 0, r, 1.0), 0.0)


def distortion_problem(model: str, k: np.ndarray, K: np.ndarray, width: int, height: int) -> str | None:
    """Why a camera of `model`, coefficients ``k [4]`` and intrinsics ``K [3,3]`` at ``width`` × ``height`` pixels
    cannot be used (None when it can): an unknown model, non-finite coefficients, coefficients on a model without
    them, or a fisheye image corner 90° or more off axis / past where ``θ_d(θ)`` stops increasing."""
    if not isinstance(model, str) or model not in CAMERA_MODELS:
        return f"unknown camera model {model!r}: choose one of {', '.join(CAMERA_MODELS)}"
    k = np.asarray(k, dtype=np.float64)
    if k.shape != (4,) or not np.isfinite(k).all():
        return f"distortion must be 4 finite coefficients (k1, k2, k3, k4), got {k.tolist()}"
    if model != "opencv_fisheye" and k.any():
        return (f"a {model} camera takes no distortion coefficients, got {k.tolist()}: set model 'opencv_fisheye' "
                "or give zeros")
    if model == "pinhole":
        return None
    corners = np.array([[0.0, 0.0, 1.0], [width, 0.0, 1.0], [0.0, height, 1.0], [width, height, 1.0]])
    m = corners @ np.linalg.inv(np.asarray(K, dtype=np.float64)).T
    theta_d_max = float(np.hypot(m[:, 0], m[:, 1]).max())
    limit = fisheye_theta_limit(k)
    reach = float(fisheye_distort(limit, k))
    if theta_d_max < reach:
        return None
    if limit < math.pi / 2 - 1e-9:
        why = (f"its distortion {k.tolist()} stops increasing at θ = {math.degrees(limit):.1f}° (θ_d = {reach:.4g}), "
               f"before the image corner (θ_d = {theta_d_max:.4g})")
    else:
        why = (f"its farthest image corner lies at normalised radius θ_d = {theta_d_max:.4g}, beyond θ_d(90°) = "
               f"{reach:.4g}")
    return (f"the {model} camera sees 90° or more off its optical axis: {why}. Depth is planar z, so the field of "
            "view must stay below 180° (every image corner < 90° off axis): raise the focal lengths in K, shrink the "
            "image or fix the coefficients")
