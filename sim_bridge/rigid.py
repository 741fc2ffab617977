"""The rigid-transform check shared by rigs (`cam_to_ego`) and capture stores (`cam_to_world`, `ego_to_world`)."""
from __future__ import annotations

import numpy as np

#: Tolerance of the rigid-transform check (CARLA hands over float32-precision rotations).
RIGID_ATOL = 1e-4


def rigid_problems(mats: np.ndarray, atol: float = RIGID_ATOL) -> np.ndarray:
    """Per-matrix reason why `[...,4,4]` matrices are not finite rigid transforms.

    Returns an object array of shape `mats.shape[:-2]` with "" for a good matrix, else a short reason
    of the form "what (detail)": non-finite values; last row not [0 0 0 1]; rotation not orthonormal; det != +1.
    """
    mats = np.asarray(mats, dtype=np.float64)
    out = np.full(mats.shape[:-2], "", dtype=object)
    if mats.size == 0:
        return out
    finite = np.isfinite(mats).all(axis=(-2, -1))
    safe = np.where(finite[..., None, None], mats, np.eye(4))
    R = safe[..., :3, :3]
    ortho_err = np.abs(np.swapaxes(R, -1, -2) @ R - np.eye(3)).max(axis=(-2, -1))
    det = np.linalg.det(R)
    row_err = np.abs(safe[..., 3, :] - np.array([0.0, 0.0, 0.0, 1.0])).max(axis=-1)
    for idx in np.ndindex(out.shape):
        if not finite[idx]:
            out[idx] = "non-finite values (NaN or inf)"
        elif row_err[idx] > atol:
            out[idx] = f"last row is not [0, 0, 0, 1] (found {np.round(safe[idx][3], 4).tolist()})"
        elif ortho_err[idx] > atol:
            out[idx] = f"rotation is not orthonormal (max |R^T R - I| = {ortho_err[idx]:.3g})"
        elif abs(det[idx] - 1.0) > atol:
            out[idx] = f"rotation determinant is not +1 (det {det[idx]:.4g})"
    return out
