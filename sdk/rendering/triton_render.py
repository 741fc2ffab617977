"""Fused Triton volume rendering: `render_field(..., implementation="triton")`, forward and backward.

The model is `nfldm_sdk.rendering.api`'s (its module docstring): midpoint (or stratified) samples over the box-clipped
segment, ``grid_sample(align_corners=False, padding_mode="border")`` trilinear interpolation, ``α_i = 1 − e^{−σ_i δ}``,
``w_i = T_i α_i``, ``features = Σ w_i f_i``, ``depth_num = Σ w_i z_i``, ``alpha = 1 − T_final``. The PyTorch
reference (`render_field_reference`) is the oracle of every test here.

Kernel design (one launch per render, one per backward; nothing per sample is ever written to memory):

* **Programs.** One program marches ``BLOCK_R`` rays (32: one warp on a GPU) of one field, all at once, each ray
  at its own sample index. A loop step interpolates density at every active ray's current sample (8 corner
  loads), composites, and reads the ``C`` feature channels (8 corner rows of the channels-last grid) only where
  the sample's weight is nonzero. Accumulation is fp32. The loop ends when every ray of the block is done.
* **Grid storage.** Features channels-last ``[B, Z, Y, X, C]`` in ``grid_dtype`` (default float16: one 64-byte
  row per voxel for C = 32); density ``[B, Z, Y, X]`` in float32 (one channel of 1+C, but its rounding enters
  the transmittance of every later sample: float16's 2^-11 relative rounding of σ would change T = e^{−τ} by up to
  ~5e-4·τ relative, 2e-3 behind an optical depth of 4).
  Float16 storage needs ``|features| < 65504``; use ``grid_dtype=torch.bfloat16`` or ``torch.float32`` otherwise.
* **Early ray termination.** A ray stops after the sample that takes its transmittance below ``early_stop``
  (default ``EARLY_STOP = 1e-4``). What it drops is bounded by that transmittance: ``|Δfeatures| ≤ T·max|f|``,
  ``|Δalpha| ≤ T`` and ``|Δdepth_num| ≤ T·z_far``, so ``1e-4`` keeps features and alpha within 1e-4·max|f|
  absolute, and the normalised depth of a pixel with ``alpha ≈ 1`` within ``1e-4·z_far/depth`` relative (2e-3 up
  to ``z_far = 20·depth``). ``alpha`` is the truncated ``Σ w_i`` (= 1 − T at the stop; summed rather than
  subtracted so that faint rays keep their relative precision). ``early_stop=0`` marches every sample.
* **Empty-space skipping (exact).** A coarse occupancy grid (`occupancy_grid`, cells of ``cell = 4`` voxels per
  axis) marks a cell occupied when ANY voxel that a trilinear sample inside it can read is nonzero (a max-pool of
  ``σ ≠ 0`` over the cell's voxels plus one more per axis: the upper corner of its last voxel). A sample in an
  unoccupied cell has all 8 corners at σ = 0, so σ = 0, w = 0 and T unchanged — bit for bit what marching it
  would give. Skipping jumps from the current sample to the first sample that may lie outside the cell (the
  ray's exit from the cell's box, pulled in by ``1e-3`` voxel against rounding); sample positions stay those of
  the model (whole samples are jumped, never re-spaced), and every sample visited after a jump is tested again.
  The grid is cached per density tensor and rebuilt when the density changes (`_GridCache`).
* **Backward** re-marches each ray with the saved per-ray outputs (no per-sample tensors). With
  ``c_i = g_F·f_i + g_D z_i`` and ``P_i = Σ_{j≤i} w_j c_j``, ``L = g_F·F + g_D·D`` (``F``, ``D`` the saved
  outputs): ``∂L/∂τ_i = T_{i+1} c_i − (L − P_i) + g_A T_final`` (``τ_i = σ_i δ``), scattered as ``δ ∂L/∂τ_i`` to
  the 8 density corners, and ``∂L/∂f_i = w_i g_F`` to the 8 feature corners (fp32 atomic adds). The march stops
  where the forward stopped (same arithmetic, same transmittance), so the gradient is that of the truncated
  forward. (In the kernel depth enters with ``z_i − z̄``, ``z̄ = D / A``, and ``g_D z̄`` joins the alpha term: the
  same gradient with far less cancellation in ``L − P_i`` for faint pixels, whose ``g_D ∝ 1/alpha`` is large.) Empty samples DO carry a density gradient (``−δ(L − P_i) + …`` ≠ 0 at σ = 0), so the backward skips
  nothing when density needs a gradient; with density frozen only ``w_i > 0`` samples matter and it skips
  exactly as the forward does.
* **No gradient to cameras or bounds** (the ray geometry is an input): `render_field_triton` refuses rays that
  require grad; use ``implementation="dense"`` there.

Triton's interpreter: ``TRITON_INTERPRET=1`` runs these kernels on CPU tensors (slowly: for tests). Triton reads
the variable when a kernel is decorated, i.e. when this module is first imported, so set it before (the test
suite's conftest sets it on machines without CUDA). Whether this process got compiled or interpreted kernels:
`INTERPRETED`.

Example::

    out = render_field(field.to("cuda"), cams, n_samples=128, implementation="triton")   # as render_field
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.rendering.api import HIT_ALPHA, RenderOutput, _Batch, _finish, _prepare

__all__ = ["EARLY_STOP", "INTERPRETED", "OCCUPANCY_CELL", "check_device", "clear_cache", "compile_report",
           "occupancy_grid", "render_batch_triton", "render_field_triton"]

EARLY_STOP = 1e-4
"""Default transmittance below which a ray stops (error bound: module docstring)."""
OCCUPANCY_CELL = 4
"""Default occupancy-grid cell size, voxels per axis."""
BLOCK_RAYS = 32
"""Rays per program on a GPU (one warp: one ray per thread)."""
INTERPRETER_BLOCK_RAYS = 256
"""Rays per program under the interpreter, whose cost is per operation: wide blocks run ~5× faster there."""

# Constants inside the kernels are literals (Triton reads no plain Python globals there):
#   1e30: "no bound" for the cell faces at the grid's ends (finite: avoids inf − inf);
#   1e-3: voxels a jump stops inside a cell's face (the rounding of a sample position is ~1e-5 voxel);
#   1e-2: optical depth below which 1 − e^{−τ} comes from its series (no cancellation; Triton has no expm1).


# ====================================================================== kernels


@triton.jit
def _ray_setup(o_ptr, d_ptr, t0_ptr, dl_ptr, zpt_ptr, b, R, rays, rmask, hx, hy, hz):
    """Per-ray start ``U0`` and step ``dU`` (per unit of the sample coordinate s) in voxel-index space, of the rays
    ``rays`` of field ``b`` (the per-ray arrays are ``[B, R(, 3)]``; ``b`` is int64, so big batches index safely)."""
    o_ptr += b * R * 3
    d_ptr += b * R * 3
    t0_ptr += b * R
    dl_ptr += b * R
    zpt_ptr += b * R
    t0 = tl.load(t0_ptr + rays, mask=rmask, other=0.0)
    dl = tl.load(dl_ptr + rays, mask=rmask, other=0.0)
    zpt = tl.load(zpt_ptr + rays, mask=rmask, other=0.0)
    ox = tl.load(o_ptr + rays * 3, mask=rmask, other=0.0)
    oy = tl.load(o_ptr + rays * 3 + 1, mask=rmask, other=0.0)
    oz = tl.load(o_ptr + rays * 3 + 2, mask=rmask, other=0.0)
    dx = tl.load(d_ptr + rays * 3, mask=rmask, other=0.0)
    dy = tl.load(d_ptr + rays * 3 + 1, mask=rmask, other=0.0)
    dz = tl.load(d_ptr + rays * 3 + 2, mask=rmask, other=0.0)
    # grid_sample(align_corners=False): u = ((p + 1) · size − 1) / 2 with p = o + (t0 + s δ) d
    u0x = (ox + t0 * dx + 1.0) * hx - 0.5
    u0y = (oy + t0 * dy + 1.0) * hy - 0.5
    u0z = (oz + t0 * dz + 1.0) * hz - 0.5
    return u0x, u0y, u0z, dx * dl * hx, dy * dl * hy, dz * dl * hz, t0, dl, zpt


@triton.jit
def _axis(u0, du, s, size_m1, lo_max):
    """Border-clamped position along one axis -> lower corner index (int32) and fraction (grid_sample's)."""
    u = tl.minimum(tl.maximum(u0 + s * du, 0.0), size_m1)
    i0 = tl.minimum(tl.floor(u), lo_max)
    return i0.to(tl.int32), u - i0


@triton.jit
def _corner(k: tl.constexpr, base, fx, fy, fz, sx, sy, sz):
    """Row offset and trilinear weight of corner ``k`` (bits: x, y, z) of the cell at ``base``."""
    if k & 1:
        wx = fx
        base = base + sx
    else:
        wx = 1.0 - fx
    if k & 2:
        wy = fy
        base = base + sy
    else:
        wy = 1.0 - fy
    if k & 4:
        wz = fz
        base = base + sz
    else:
        wz = 1.0 - fz
    return base, wx * wy * wz


@triton.jit
def _alpha(tau):
    """``(1 − e^{−τ}, e^{−τ})``; the series for |τ| < 1e-2 keeps the relative precision of faint media."""
    e = tl.exp(-tau)
    series = tau * (1.0 - tau * (0.5 - tau * (0.16666666666666666 - tau * 0.041666666666666664)))
    return tl.where(tl.abs(tau) < 1e-2, series, 1.0 - e), e


@triton.jit
def _jump(i, s_now, active, empty, u0x, u0y, u0z, dux, duy, duz, ix, iy, iz, XCL, YCL, ZCL, n_samples,
          CELL: tl.constexpr, JMAX: tl.constexpr):
    """Next sample index of rays whose current sample lies in an unoccupied cell: the first sample that may be
    outside the cell. Cell c spans raw u ∈ [cK, cK + K) per axis (unbounded below for c = 0 and above for the last
    cell, where border clamping maps everything); the exit is pulled in by 1e-3 voxel."""
    nxt = i + 1
    cx = ix // CELL
    cy = iy // CELL
    cz = iz // CELL
    ex = _exit(u0x, dux, cx, XCL, CELL)
    ey = _exit(u0y, duy, cy, YCL, CELL)
    ez = _exit(u0z, duz, cz, ZCL, CELL)
    s_exit = tl.minimum(tl.minimum(tl.minimum(ex, ey), ez), n_samples + 1.0)
    s_exit = tl.maximum(s_exit, s_now)
    # samples j < ceil(s_exit − JMAX) have s_j ≤ j + JMAX < s_exit: inside the cell, hence empty
    far = tl.ceil(s_exit - JMAX).to(tl.int32)
    return tl.where(active & empty, tl.maximum(nxt, far), nxt)


@triton.jit
def _exit(u0, du, c, c_last, CELL: tl.constexpr):
    """Sample coordinate s at which the ray leaves cell ``c`` along one axis (a huge value if never)."""
    lo = tl.where(c > 0, (c * CELL).to(tl.float32) + 1e-3, -1e30)
    hi = tl.where(c < c_last, ((c + 1) * CELL).to(tl.float32) - 1e-3, 1e30)
    safe = tl.where(du == 0.0, 1.0, du)
    return tl.where(du > 0.0, (hi - u0) / safe, tl.where(du < 0.0, (lo - u0) / safe, 1e30))


@triton.jit
def _channels(C, NCH: tl.constexpr, VEC: tl.constexpr):
    """Channel indices ``[NCH, 1, VEC]`` and their mask. Channels are tiled ``[NCH, rays, VEC]`` with VEC·itemsize =
    16 bytes, so each load is one 16-byte vector per ray and a ray's channels stay in its own thread: per-ray
    scalars (weights) multiply them without crossing lanes."""
    ch = tl.arange(0, NCH)[:, None, None] * VEC + tl.arange(0, VEC)[None, None, :]
    return ch, ch < C


@triton.jit
def _dot_channels(a, b):
    """``Σ_c a·b`` over the channel tile ``[NCH, BLOCK_R, VEC]`` -> ``[BLOCK_R]``."""
    return tl.sum(tl.sum(a * b, axis=2), axis=0)


@triton.jit
def _sample(i, active, rays, jit_ptr, occ_ptr, dens_ptr, u0x, u0y, u0z, dux, duy, duz, Y, X, YC, XC,
            sx, sy, sz, xm1, ym1, zm1, xlo, ylo, zlo, n_samples,
            BLOCK_R: tl.constexpr, CELL: tl.constexpr, SKIP: tl.constexpr, HAS_JITTER: tl.constexpr):
    """Sample ``i`` of each active ray (shared by forward and backward, so both march the same samples): its
    coordinate ``s``, voxel corners and fractions, row ``base``, whether it is ``live`` (active and, with
    skipping, in an occupied cell), whether its cell is ``occupied`` (= active without skipping) and its ``sigma``."""
    if HAS_JITTER:
        s = i.to(tl.float32) + tl.load(jit_ptr + rays * n_samples + i, mask=active, other=0.5)
    else:
        s = i.to(tl.float32) + 0.5
    ix, fx = _axis(u0x, dux, s, xm1, xlo)
    iy, fy = _axis(u0y, duy, s, ym1, ylo)
    iz, fz = _axis(u0z, duz, s, zm1, zlo)
    base = (iz * Y + iy) * X + ix
    occupied = active
    if SKIP:
        cell = ((iz // CELL) * YC + iy // CELL) * XC + ix // CELL
        occupied = tl.load(occ_ptr + cell, mask=active, other=0) != 0
    live = active & occupied
    sigma = tl.zeros([BLOCK_R], tl.float32)
    for k in tl.static_range(8):
        off, cw = _corner(k, base, fx, fy, fz, sx, sy, sz)
        sigma += cw * tl.load(dens_ptr + off, mask=live, other=0.0)
    return s, ix, iy, iz, fx, fy, fz, base, live, occupied, sigma


@triton.jit
def _forward_kernel(dens_ptr, feat_ptr, occ_ptr, o_ptr, d_ptr, t0_ptr, dl_ptr, zpt_ptr, jit_ptr,
                    out_f_ptr, out_d_ptr, out_a_ptr,
                    R, C, Y, X, YC, XC, XCL, YCL, ZCL, sx, sy, sz, hx, hy, hz, xm1, ym1, zm1, xlo, ylo, zlo,
                    n_samples, t_stop,
                    ZYX, ZYXC, OCC_N,
                    BLOCK_R: tl.constexpr, NCH: tl.constexpr, VEC: tl.constexpr, CELL: tl.constexpr,
                    SKIP: tl.constexpr, HAS_JITTER: tl.constexpr):
    """Composite ``BLOCK_R`` rays of field ``program_id(1)``: features ``[B,C,R]``, ``Σ w z [B,R]``, alpha ``[B,R]``."""
    b = tl.program_id(1).to(tl.int64)
    rays = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rays < R
    ch, cmask = _channels(C, NCH, VEC)
    # per-field base pointers in int64 (a batch may exceed 2^31 elements; offsets inside one field may not)
    dens_ptr += b * ZYX
    feat_ptr += b * ZYXC
    occ_ptr += b * OCC_N
    jit_ptr += b * R * n_samples
    u0x, u0y, u0z, dux, duy, duz, t0, dl, zpt = _ray_setup(o_ptr, d_ptr, t0_ptr, dl_ptr, zpt_ptr, b, R, rays, rmask,
                                                           hx, hy, hz)
    i = tl.zeros([BLOCK_R], tl.int32)
    T = tl.full([BLOCK_R], 1.0, tl.float32)
    acc = tl.zeros([NCH, BLOCK_R, VEC], tl.float32)
    dacc = tl.zeros([BLOCK_R], tl.float32)
    aacc = tl.zeros([BLOCK_R], tl.float32)           # alpha = Σ w = 1 − T, summed: keeps faint rays' precision
    active = rmask & (dl > 0.0)                      # rays that miss the box have δ = 0: nothing to march
    while tl.max(active.to(tl.int32), axis=0) > 0:
        s, ix, iy, iz, fx, fy, fz, base, live, occupied, sigma = _sample(
            i, active, rays, jit_ptr, occ_ptr, dens_ptr, u0x, u0y, u0z, dux, duy, duz, Y, X, YC, XC,
            sx, sy, sz, xm1, ym1, zm1, xlo, ylo, zlo, n_samples, BLOCK_R, CELL, SKIP, HAS_JITTER)
        a, e = _alpha(sigma * dl)
        w = T * a
        fmask = (live & (w != 0.0))[None, :, None] & cmask
        for k in tl.static_range(8):
            off, cw = _corner(k, base, fx, fy, fz, sx, sy, sz)
            row = tl.load(feat_ptr + off[None, :, None] * C + ch, mask=fmask, other=0.0).to(tl.float32)
            acc += (w * cw)[None, :, None] * row
        dacc += w * ((t0 + s * dl) * zpt)
        aacc += w
        T = T * e
        if SKIP:
            i = _jump(i, s, active, ~occupied, u0x, u0y, u0z, dux, duy, duz, ix, iy, iz, XCL, YCL, ZCL,
                      n_samples, CELL, 1.0 if HAS_JITTER else 0.5)
        else:
            i = i + 1
        active = active & (i < n_samples) & (T >= t_stop)
    out = b * R + rays
    tl.store(out_f_ptr + (b * C + ch) * R + rays[None, :, None], acc, mask=rmask[None, :, None] & cmask)
    tl.store(out_d_ptr + out, dacc, mask=rmask)
    tl.store(out_a_ptr + out, aacc, mask=rmask)


@triton.jit
def _backward_kernel(dens_ptr, feat_ptr, occ_ptr, o_ptr, d_ptr, t0_ptr, dl_ptr, zpt_ptr, jit_ptr,
                     f_ptr, dn_ptr, a_ptr, gf_ptr, gd_ptr, ga_ptr, dd_ptr, df_ptr,
                     R, C, Y, X, YC, XC, XCL, YCL, ZCL, sx, sy, sz, hx, hy, hz, xm1, ym1, zm1, xlo, ylo, zlo,
                     n_samples, t_stop,
                     ZYX, ZYXC, OCC_N,
                     BLOCK_R: tl.constexpr, NCH: tl.constexpr, VEC: tl.constexpr, CELL: tl.constexpr,
                     SKIP: tl.constexpr, HAS_JITTER: tl.constexpr, NEED_DSIGMA: tl.constexpr,
                     NEED_DFEAT: tl.constexpr):
    """Gradients of ``L = g_F·F + g_D·D + g_A·A`` (upstream ``g_*``) w.r.t. density ``dd [B,Z,Y,X]`` and features
    ``df [B,Z,Y,X,C]`` (fp32, accumulated atomically), re-marching the forward's samples."""
    b = tl.program_id(1).to(tl.int64)
    rays = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rays < R
    ch, cmask = _channels(C, NCH, VEC)
    dens_ptr += b * ZYX
    feat_ptr += b * ZYXC
    dd_ptr += b * ZYX
    df_ptr += b * ZYXC
    occ_ptr += b * OCC_N
    jit_ptr += b * R * n_samples
    u0x, u0y, u0z, dux, duy, duz, t0, dl, zpt = _ray_setup(o_ptr, d_ptr, t0_ptr, dl_ptr, zpt_ptr, b, R, rays, rmask,
                                                           hx, hy, hz)
    out = b * R + rays
    fmask2 = rmask[None, :, None] & cmask
    fofs = (b * C + ch) * R + rays[None, :, None]
    g_f = tl.load(gf_ptr + fofs, mask=fmask2, other=0.0)                         # [NCH, BLOCK_R, VEC]
    g_d = tl.load(gd_ptr + out, mask=rmask, other=0.0)
    depth_num = tl.load(dn_ptr + out, mask=rmask, other=0.0)
    alpha = tl.load(a_ptr + out, mask=rmask, other=0.0)
    # Depth enters as g_D Σ w z = g_D z̄ alpha + g_D Σ w (z − z̄) with z̄ = depth_num / alpha: the first part
    # differentiates like alpha (no suffix sum), the second has small per-sample values, so L − P_i cancels far
    # less than with raw z (g_D is large for faint pixels: depth is normalised by alpha).
    z_bar = tl.where(alpha > 0.0, depth_num / tl.where(alpha > 0.0, alpha, 1.0), 0.0)
    total = _dot_channels(g_f, tl.load(f_ptr + fofs, mask=fmask2, other=0.0)) \
        + g_d * (depth_num - z_bar * alpha)                                     # L without the alpha-like terms
    alpha_term = (tl.load(ga_ptr + out, mask=rmask, other=0.0) + g_d * z_bar) * (1.0 - alpha)
    i = tl.zeros([BLOCK_R], tl.int32)
    T = tl.full([BLOCK_R], 1.0, tl.float32)
    prefix = tl.zeros([BLOCK_R], tl.float32)
    active = rmask & (dl > 0.0)
    while tl.max(active.to(tl.int32), axis=0) > 0:
        s, ix, iy, iz, fx, fy, fz, base, live, occupied, sigma = _sample(
            i, active, rays, jit_ptr, occ_ptr, dens_ptr, u0x, u0y, u0z, dux, duy, duz, Y, X, YC, XC,
            sx, sy, sz, xm1, ym1, zm1, xlo, ylo, zlo, n_samples, BLOCK_R, CELL, SKIP, HAS_JITTER)
        a, e = _alpha(sigma * dl)
        w = T * a
        T_next = T * e
        if NEED_DSIGMA:
            # c_i = g_F · f_i + g_D z_i needs the features at EVERY sample (empty ones included)
            fmask = live[None, :, None] & cmask
            f_dot = tl.zeros([BLOCK_R], tl.float32)
            for k in tl.static_range(8):
                off, cw = _corner(k, base, fx, fy, fz, sx, sy, sz)
                row = tl.load(feat_ptr + off[None, :, None] * C + ch, mask=fmask, other=0.0).to(tl.float32)
                f_dot += cw * _dot_channels(row, g_f)
            c = f_dot + g_d * ((t0 + s * dl) * zpt - z_bar)
            prefix += w * c
            dsigma = (T_next * c - (total - prefix) + alpha_term) * dl
            for k in tl.static_range(8):
                off, cw = _corner(k, base, fx, fy, fz, sx, sy, sz)
                tl.atomic_add(dd_ptr + off, cw * dsigma, mask=live)
        if NEED_DFEAT:
            gmask = (live & (w != 0.0))[None, :, None] & cmask
            for k in tl.static_range(8):
                off, cw = _corner(k, base, fx, fy, fz, sx, sy, sz)
                tl.atomic_add(df_ptr + off[None, :, None] * C + ch, (w * cw)[None, :, None] * g_f, mask=gmask)
        T = T_next
        if SKIP:
            i = _jump(i, s, active, ~occupied, u0x, u0y, u0z, dux, duy, duz, ix, iy, iz, XCL, YCL, ZCL,
                      n_samples, CELL, 1.0 if HAS_JITTER else 0.5)
        else:
            i = i + 1
        active = active & (i < n_samples) & (T >= t_stop)


INTERPRETED = not isinstance(_forward_kernel, triton.runtime.JITFunction)
"""True when this process's kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1`` at import)."""


# ====================================================================== grids: storage, occupancy, cache


def occupancy_grid(density: torch.Tensor, cell: int = OCCUPANCY_CELL) -> torch.Tensor:
    """Coarse occupancy of a density grid for exact empty-space skipping.

    Args:
        density: ``[B, Z, Y, X]`` (any float dtype).
        cell: voxels per cell along each axis.
    Returns:
        ``uint8 [B, ZC, YC, XC]`` with ``NC = max(N − 2, 0) // cell + 1`` (the cells of the trilinear lower-corner
        index ``min(floor(u), N − 2)``). Cell ``c`` is 1 when any voxel ``cK … cK + K`` (clipped to the grid) per axis
        is nonzero or NaN: every voxel a sample whose lower corner lies in the cell can read.
    """
    if cell < 1:
        raise ValueError(f"occupancy cell must be >= 1 voxel, got {cell}")
    Z, Y, X = density.shape[1:]
    nc = [max(n - 2, 0) // cell + 1 for n in (Z, Y, X)]                    # cells per axis (z, y, x)
    occ = (density != 0).to(torch.float16 if density.is_cuda else torch.float32)[:, None]   # [B, 1, Z, Y, X]
    # pad each axis to NC·K + 1 voxels so that window c = [cK, cK + K] exists for every cell (zeros: no voxel)
    pad = [p for n, c in zip((X, Y, Z), nc[::-1]) for p in (0, c * cell + 1 - n)]
    occ = F.max_pool3d(F.pad(occ, pad), kernel_size=cell + 1, stride=cell)  # [B, 1, ZC, YC, XC]
    return occ[:, 0].to(torch.uint8).contiguous()


@dataclass(eq=False)
class _Grid:
    """A field in the kernels' layout (see the module docstring)."""

    density: torch.Tensor            # [B, Z, Y, X] float32, contiguous
    features: torch.Tensor           # [B, Z, Y, X, C] grid_dtype, contiguous (channels-last)
    occupancy: torch.Tensor | None   # [B, ZC, YC, XC] uint8, or None without skipping
    cell: int


class _GridCache:
    """Derived grids (float32 density, channels-last features, occupancy) cached per SOURCE tensor.

    An entry is keyed on the source's data pointer, shape, strides, dtype and ``_version`` (bumped by every
    in-place change: an optimizer step, ``copy_``, ``+=``), and lives only as long as the source's root tensor
    (held by weak reference, so the cache never keeps a field alive and a freed address cannot alias a live
    entry). Not cacheable, hence rebuilt every call: inference-mode tensors (no version counter). Changes made
    through ``.data`` bypass the version counter: call `clear_cache` after those."""

    def __init__(self, max_entries: int = 8):
        self.max_entries = max_entries
        self.entries: list[tuple[weakref.ref, tuple, torch.Tensor]] = []
        self.builds = 0                                   # derived tensors built as new memory (tests count them)

    @staticmethod
    def _key(t: torch.Tensor, tag: tuple) -> tuple | None:
        if t.is_inference():
            return None
        return (tag, t.device, t.dtype, t.data_ptr(), tuple(t.shape), t.stride(), t._version)

    def get(self, source: torch.Tensor, tag: tuple, build) -> torch.Tensor:
        """The derived tensor ``build(source)`` for ``tag``, from the cache when ``source`` is unchanged."""
        key = self._key(source, tag)
        root = source._base if source._base is not None else source
        self.entries = [e for e in self.entries if e[0]() is not None]       # drop entries of freed tensors
        if key is not None:
            for ref, k, value in self.entries:
                if k == key and ref() is root:
                    return value
        value = build(source)
        if value.untyped_storage().data_ptr() == source.untyped_storage().data_ptr():
            return value          # a view of the source (already in the kernels' layout): free, and never cached
        self.builds += 1          # (a cached view would hold its source alive: see the weak reference above)
        if key is not None:
            self.entries = [e for e in self.entries if not (e[0]() is root and e[1][0] == tag)][-(self.max_entries - 1):]
            self.entries.append((weakref.ref(root), key, value))
        return value

    def clear(self) -> None:
        self.entries = []


_CACHE = _GridCache()


def clear_cache() -> None:
    """Forget every cached kernel-layout grid (needed only after changing a field through ``.data``)."""
    _CACHE.clear()


def _grid_for(density: torch.Tensor, features: torch.Tensor, grid_dtype: torch.dtype, skip: bool, cell: int) -> _Grid:
    """``density [B,1,Z,Y,X]``, ``features [B,C,Z,Y,X]`` -> the kernels' `_Grid` (cached, see `_GridCache`)."""
    B, _, Z, Y, X = features.shape
    dens = _CACHE.get(density, ("density",), lambda d: d.detach().reshape(B, Z, Y, X).to(torch.float32).contiguous())
    feats = _CACHE.get(features, ("features", grid_dtype),
                       lambda f: f.detach().permute(0, 2, 3, 4, 1).to(grid_dtype).contiguous())
    occ = _CACHE.get(density, ("occupancy", cell), lambda d: occupancy_grid(d.detach().reshape(B, Z, Y, X), cell)) \
        if skip else None
    return _Grid(dens, feats, occ, cell)


# ====================================================================== launches


@dataclass(eq=False)
class _Rays:
    """Per-ray inputs of the kernels, float32 contiguous."""

    o_n: torch.Tensor        # [B, R, 3]
    d_n: torch.Tensor        # [B, R, 3]
    t0: torch.Tensor         # [B, R]
    delta: torch.Tensor      # [B, R]
    z_per_t: torch.Tensor    # [B, R]
    jitter: torch.Tensor | None  # [B, R, S] or None


@dataclass(frozen=True)
class _Options:
    n_samples: int
    early_stop: float
    skip: bool
    block_rays: int


def _shape_args(grid: _Grid, R: int, opts: _Options) -> tuple:
    """The scalar arguments both kernels share (sizes, strides, clamps, occupancy extents)."""
    Z, Y, X, C = grid.features.shape[1:]
    if Z * Y * X * C >= 2**31:
        raise ValueError(f"one field of {Z}x{Y}x{X} voxels x {C} channels exceeds the kernels' int32 offsets: "
                         "render fewer channels at a time or use implementation='dense'")
    occ = grid.occupancy
    ZC, YC, XC = occ.shape[1:] if occ is not None else (1, 1, 1)
    return (R, C, Y, X, YC, XC, XC - 1, YC - 1, ZC - 1,
            1 if X > 1 else 0, X if Y > 1 else 0, X * Y if Z > 1 else 0,     # +1 step along x, y, z (0: 1 voxel)
            X / 2.0, Y / 2.0, Z / 2.0, X - 1.0, Y - 1.0, Z - 1.0,
            float(max(X - 2, 0)), float(max(Y - 2, 0)), float(max(Z - 2, 0)),
            opts.n_samples, float(opts.early_stop), Z * Y * X, Z * Y * X * C, ZC * YC * XC)


def _launch_config(grid: _Grid, R: int, opts: _Options, has_jitter: bool) -> tuple[tuple[int, int], dict]:
    """Launch grid ``(ray blocks, B)`` and the compile-time parameters of both kernels."""
    B, C = grid.features.shape[0], grid.features.shape[-1]
    vec = min(16 // grid.features.element_size(), triton.next_power_of_2(C))   # 16-byte vectors
    meta = {"BLOCK_R": opts.block_rays, "NCH": triton.next_power_of_2(triton.cdiv(C, vec)), "VEC": vec,
            "CELL": grid.cell, "SKIP": grid.occupancy is not None, "HAS_JITTER": has_jitter}
    if not INTERPRETED:
        meta["num_warps"] = max(1, opts.block_rays // 32)                   # one ray per thread
    return (triton.cdiv(R, opts.block_rays), B), meta


def _common_args(grid: _Grid, rays: _Rays) -> tuple:
    """Leading pointer arguments of both kernels (unused pointers stand in where there is no occupancy/jitter)."""
    occ = grid.occupancy if grid.occupancy is not None else grid.density
    jit = rays.jitter if rays.jitter is not None else rays.t0
    return (grid.density, grid.features, occ, rays.o_n, rays.d_n, rays.t0, rays.delta, rays.z_per_t, jit)


def _forward_call(grid: _Grid, rays: _Rays, opts: _Options):
    """``(launch grid, args, meta, outputs)`` of one forward launch; outputs ``feats [B,C,R]``, ``depth_num [B,R]``,
    ``alpha [B,R]`` (float32, every element written by the kernel)."""
    B, R = rays.t0.shape
    C = grid.features.shape[-1]
    dev = rays.t0.device
    outs = (torch.empty(B, C, R, device=dev, dtype=torch.float32), torch.empty(B, R, device=dev, dtype=torch.float32),
            torch.empty(B, R, device=dev, dtype=torch.float32))
    launch, meta = _launch_config(grid, R, opts, rays.jitter is not None)
    return launch, (*_common_args(grid, rays), *outs, *_shape_args(grid, R, opts)), meta, outs


def _backward_call(grid: _Grid, rays: _Rays, opts: _Options, saved: tuple, grads: tuple, need_dsigma: bool,
                   need_dfeat: bool):
    """``(launch grid, args, meta, (d density [B,Z,Y,X] | None, d features [B,Z,Y,X,C] | None))`` of one backward
    launch (fp32 gradient buffers, zero-filled, accumulated atomically)."""
    R = rays.t0.shape[1]
    dev = rays.t0.device
    dd = torch.zeros(grid.density.shape, device=dev, dtype=torch.float32) if need_dsigma else None
    df = torch.zeros(grid.features.shape, device=dev, dtype=torch.float32) if need_dfeat else None
    # Density frozen: only samples with w > 0 matter, and skipping is exact for them. Otherwise every sample
    # carries a density gradient: no skipping.
    if grid.occupancy is not None and need_dsigma:
        grid = _Grid(grid.density, grid.features, None, grid.cell)
    launch, meta = _launch_config(grid, R, opts, rays.jitter is not None)
    meta.update(NEED_DSIGMA=need_dsigma, NEED_DFEAT=need_dfeat)
    bufs = (grid.density if dd is None else dd, grid.density if df is None else df)   # stand-ins when unused
    args = (*_common_args(grid, rays), *saved, *grads, *bufs, *_shape_args(grid, R, opts))
    return launch, args, meta, (dd, df)


class _TritonRender(torch.autograd.Function):
    """``density [B,1,Z,Y,X]``, ``features [B,C,Z,Y,X]`` -> ``feats [B,C,R]``, ``depth_num [B,R]``, ``alpha [B,R]``
    (float32), differentiable w.r.t. density and features."""

    @staticmethod
    def forward(ctx, density, features, rays: _Rays, opts: _Options, grid_dtype: torch.dtype, cell: int):
        grid = _grid_for(density, features, grid_dtype, opts.skip, cell)
        launch, args, meta, (feats, depth_num, alpha) = _forward_call(grid, rays, opts)
        _forward_kernel[launch](*args, **meta)
        # The inputs are saved only for autograd's version check (an in-place change of the field before
        # backward is an error, as for any saved tensor); the kernels read the kernel-layout grid.
        ctx.grid, ctx.rays, ctx.opts = grid, rays, opts
        ctx.shapes = (density.shape, density.dtype, features.shape, features.dtype)
        ctx.save_for_backward(density, features, feats, depth_num, alpha)
        return feats, depth_num, alpha

    @staticmethod
    def backward(ctx, g_feats, g_depth_num, g_alpha):
        need_dsigma, need_dfeat = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        _, _, feats, depth_num, alpha = ctx.saved_tensors                      # (version-checked inputs first)
        grads = tuple(torch.zeros_like(ref) if g is None else g.to(torch.float32).contiguous()
                      for g, ref in ((g_feats, feats), (g_depth_num, depth_num), (g_alpha, alpha)))
        launch, args, meta, (dd, df) = _backward_call(ctx.grid, ctx.rays, ctx.opts, (feats, depth_num, alpha), grads,
                                                      need_dsigma, need_dfeat)
        _backward_kernel[launch](*args, **meta)
        d_shape, d_dtype, _, f_dtype = ctx.shapes
        d_density = dd.reshape(d_shape).to(d_dtype) if dd is not None else None
        d_features = df.permute(0, 4, 1, 2, 3).to(f_dtype) if df is not None else None        # -> [B, C, Z, Y, X]
        return d_density, d_features, None, None, None, None


# ====================================================================== entry points


def check_device(device: torch.device) -> None:
    """Raise a ValueError naming the fix when the kernels cannot run on ``device`` in this process."""
    if device.type == "cuda" or (device.type == "cpu" and INTERPRETED):
        return
    if device.type == "cpu":
        raise ValueError("implementation='triton' on CPU tensors needs Triton's interpreter: set TRITON_INTERPRET=1 "
                         "before nfldm_sdk.rendering.triton_render is first imported (slow: for tests), or render on CUDA, or "
                         "use implementation='auto'")
    raise ValueError(f"implementation='triton' runs on CUDA tensors, got device {device}: use implementation='auto'")


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32).contiguous()


def render_batch_triton(b: _Batch, n_samples: int, *, grid_dtype: torch.dtype = torch.float16,
                        skip_empty: bool = True, early_stop: float = EARLY_STOP, cell: int = OCCUPANCY_CELL,
                        block_rays: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernels on a prepared `_Batch` -> ``feats [B,C,R]``, ``depth_num [B,R]``, ``alpha [B,R]`` (float32;
    differentiable w.r.t. ``b.density`` and ``b.features``). Options: `render_field_triton`."""
    check_device(b.o_n.device)
    if not 0.0 <= early_stop < 1.0:
        raise ValueError(f"early_stop is a transmittance threshold in [0, 1), got {early_stop}")
    if block_rays is None:
        block_rays = INTERPRETER_BLOCK_RAYS if INTERPRETED else BLOCK_RAYS
    if block_rays < 1 or block_rays & (block_rays - 1):
        raise ValueError(f"block_rays must be a power of two, got {block_rays}")
    if grid_dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"grid_dtype must be torch.float16, torch.bfloat16 or torch.float32, got {grid_dtype}")
    geometry = (b.o_n, b.d_n, b.t0, b.delta, b.z_per_t)
    if torch.is_grad_enabled() and any(t.requires_grad for t in geometry):
        raise ValueError("implementation='triton' has no gradient w.r.t. cameras or the field's bounds (they "
                         "require grad here): use implementation='dense'")
    rays = _Rays(*(_f32(t) for t in geometry), None if b.jitter is None else _f32(b.jitter))
    opts = _Options(n_samples=int(n_samples), early_stop=float(early_stop), skip=bool(skip_empty),
                    block_rays=int(block_rays))
    return _TritonRender.apply(b.density, b.features, rays, opts, grid_dtype, int(cell))


def render_field_triton(field: VoxelField, cameras: Cameras, n_samples: int = 128, near: float = 0.0,
                        far: float | None = None, *, stratified: bool = False,
                        generator: torch.Generator | None = None, min_hit_alpha: float = HIT_ALPHA,
                        no_hit_depth: float = math.inf, grid_dtype: torch.dtype | None = None,
                        skip_empty: bool = True, early_stop: float = EARLY_STOP, cell: int = OCCUPANCY_CELL,
                        block_rays: int | None = None) -> RenderOutput:
    """`render_field` with the fused kernels (model and arguments: `nfldm_sdk.rendering.api.render_field`).

    Args:
        grid_dtype: storage dtype of the feature grid (default float16; density is always stored float32).
        skip_empty: skip samples in empty coarse cells (exact; the module docstring says why).
        early_stop: stop a ray once its transmittance falls below this (0: never; error bound: module docstring).
        cell: occupancy-grid cell size, voxels per axis.
        block_rays: rays per program, a power of two (default: `BLOCK_RAYS` = 32, one warp, on a GPU;
            `INTERPRETER_BLOCK_RAYS` under the interpreter).
    Returns:
        `RenderOutput` in the field's dtype; differentiable w.r.t. density and features (not cameras or bounds).
    """
    check_device(field.device)
    b = _prepare(field, cameras, n_samples, near, far, stratified, generator)
    feats, depth_num, alpha = render_batch_triton(b, n_samples, grid_dtype=grid_dtype or torch.float16,
                                                  skip_empty=skip_empty, early_stop=early_stop, cell=cell,
                                                  block_rays=block_rays)
    dt = field.dtype
    return _finish(b, feats.to(dt), depth_num.to(dt), alpha.to(dt), min_hit_alpha, no_hit_depth)


# ====================================================================== compiling without a GPU


def _empty(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor of ``shape`` backed by one element (argument stand-in for compiling: no memory)."""
    return torch.empty((), dtype=dtype).expand(*shape)


def compile_report(arch: int = 90, *, channels: int = 32, grid_shape: tuple[int, int, int] = (32, 128, 128),
                   grid_dtype: torch.dtype = torch.float16, n_rays: int = 65536, n_samples: int = 128
                   ) -> list[dict]:
    """Compile every kernel variant for an NVIDIA GPU of compute capability ``arch`` (90: H100) WITHOUT a GPU,
    specialised as a real launch at these sizes would be, and report its resources.

    Checks what the interpreter cannot: that the kernels pass Triton's compiler (CI runs it in a subprocess with
    ``TRITON_INTERPRET=0``). Needs compiled kernels (`INTERPRETED` False) and Triton's bundled ``ptxas``.

    Returns:
        One dict per variant: ``kernel``, ``variant`` (its flags), ``registers`` and ``spill_bytes`` (per thread,
        from ``ptxas``), ``shared_bytes``.
    """
    import re

    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend, GPUTarget
    from triton.compiler import ASTSource

    if INTERPRETED:
        raise RuntimeError("compile_report needs compiled kernels: run it in a process without TRITON_INTERPRET=1")
    Z, Y, X = grid_shape
    C = channels
    occ = occupancy_grid(torch.zeros(1, Z, Y, X), OCCUPANCY_CELL)
    grid = _Grid(_empty((1, Z, Y, X)), _empty((1, Z, Y, X, C), grid_dtype), occ, OCCUPANCY_CELL)
    rays = _Rays(_empty((1, n_rays, 3)), _empty((1, n_rays, 3)), *(_empty((1, n_rays)) for _ in range(3)), None)
    jittered = _Rays(rays.o_n, rays.d_n, rays.t0, rays.delta, rays.z_per_t, _empty((1, n_rays, n_samples)))
    opts = _Options(n_samples, EARLY_STOP, True, BLOCK_RAYS)
    nosk = _Grid(grid.density, grid.features, None, grid.cell)
    per_ray = tuple(_empty(s) for s in ((1, C, n_rays), (1, n_rays), (1, n_rays)))
    calls = [(_forward_kernel, _forward_call(g, r, opts)[:3]) for g in (grid, nosk) for r in (rays, jittered)]
    calls += [(_backward_kernel, _backward_call(grid, rays, opts, per_ray, per_ray, ds, dfe)[:3])
              for ds, dfe in ((True, True), (True, False), (False, True))]
    report = []
    for fn, (_, args, meta) in calls:
        meta = dict(meta)
        num_warps = meta.pop("num_warps")
        signature, constexprs, attrs = {}, dict(meta), {}
        names = [n for n in fn.arg_names if n not in meta]
        for name, value in zip(names, args):
            kind, spec = native_specialize_impl(BaseBackend, value, False, True, True)
            if kind == "constexpr":                                            # ints equal to 1
                constexprs[name] = value
            if spec == "D":
                attrs[(fn.arg_names.index(name),)] = [["tt.divisibility", 16]]
            signature[name] = kind
        for name in meta:
            signature[name] = "constexpr"
        kernel = triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32),
                                options={"num_warps": num_warps})
        info = _ptxas_info(kernel.asm["ptx"], arch) or ""
        regs, spill = re.search(r"Used (\d+) registers", info), re.search(r"(\d+) bytes spill stores", info)
        report.append({"kernel": fn.__name__, "variant": meta, "registers": int(regs.group(1)) if regs else None,
                       "spill_bytes": int(spill.group(1)) if spill else None, "shared_bytes": kernel.metadata.shared})
    return report


def _ptxas_info(ptx: str, arch: int) -> str | None:
    """``ptxas -v`` output for a PTX module (registers, spills), or None without Triton's ptxas."""
    import subprocess
    import tempfile
    from pathlib import Path

    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not ptxas.exists():
        return None
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "k.ptx"
        src.write_text(ptx)
        r = subprocess.run([str(ptxas), "-v", f"--gpu-name=sm_{arch}{'a' if arch >= 90 else ''}", str(src), "-o",
                            str(Path(d) / "k.cubin")], capture_output=True, text=True, check=False)
        return r.stdout + r.stderr
