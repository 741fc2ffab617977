"""The `@triton.jit` kernels of the fused renderer: `forward_kernel` and `backward_kernel` and their helpers.

The design (programs of ``BLOCK_R`` rays, grid storage, early termination, exact empty-space skipping, the backward
by re-marching) and the error bounds are `nfldm_sdk.rendering.triton_render`'s module docstring; that module is
also the host side that lays out the grids, launches these kernels and wraps them in autograd.

Argument layout shared by both kernels (every per-ray array float32, contiguous):

* grids ``dens [B, Z, Y, X]`` float32, ``feat [B, Z, Y, X, C]`` channels-last in the storage dtype, ``occ
  [B, ZC, YC, XC]`` uint8 (read only with ``SKIP``);
* rays ``o, d [B, R, 3]`` (normalised grid coordinates), ``t0, dl, zpt [B, R]``, ``jit [B, R, S]`` (read only
  with ``HAS_JITTER``);
* launch grid ``(cdiv(R, BLOCK_R), B)``: axis 0 the ray blocks, axis 1 the field.

Constants inside the kernels are literals (Triton reads no plain Python globals there):

* 1e30: "no bound" for the cell faces at the grid's ends (finite: avoids inf − inf);
* 1e-3: voxels a jump stops inside a cell's face (the rounding of a sample position is ~1e-5 voxel);
* 1e-2: optical depth below which 1 − e^{−τ} comes from its series (no cancellation; Triton has no expm1).
"""
from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["backward_kernel", "forward_kernel"]


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
            sx, sy, sz, xm1, ym1, zm1, xlo, ylo, zlo, n_samples, T, dl,
            BLOCK_R: tl.constexpr, CELL: tl.constexpr, SKIP: tl.constexpr, HAS_JITTER: tl.constexpr):
    """Sample ``i`` of each active ray (shared by forward and backward, so both march the same samples): its
    coordinate ``s``, voxel corners and fractions, row ``base``, whether it is ``live`` (active and, with
    skipping, in an occupied cell), whether its cell is ``occupied`` (= active without skipping), its weight
    ``w = T·α`` for transmittance ``T`` before it and spacing ``dl``, and its ``e = e^{−σ δ}`` (``T`` after it
    is ``T·e``)."""
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
    a, e = _alpha(sigma * dl)
    return s, ix, iy, iz, fx, fy, fz, base, live, occupied, T * a, e


@triton.jit
def _program_setup(dens_ptr, feat_ptr, occ_ptr, o_ptr, d_ptr, t0_ptr, dl_ptr, zpt_ptr, jit_ptr, R, C, hx, hy, hz,
                   n_samples, ZYX, ZYXC, OCC_N, BLOCK_R: tl.constexpr, NCH: tl.constexpr, VEC: tl.constexpr):
    """What both kernels start with: this program's field ``b`` (``program_id(1)``, int64), its ``BLOCK_R`` rays
    and their mask, the channel tile, the grids' and jitter's base pointers of field ``b`` and the rays' setup
    (`_ray_setup`)."""
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
    return (b, rays, rmask, ch, cmask, dens_ptr, feat_ptr, occ_ptr, jit_ptr,
            u0x, u0y, u0z, dux, duy, duz, t0, dl, zpt)


@triton.jit
def _advance(i, s, active, occupied, T, u0x, u0y, u0z, dux, duy, duz, ix, iy, iz, XCL, YCL, ZCL, n_samples, t_stop,
             CELL: tl.constexpr, SKIP: tl.constexpr, HAS_JITTER: tl.constexpr):
    """The next sample index of every ray (a jump over an empty cell with ``SKIP``, else + 1) and which rays are
    still active: samples left and transmittance ``T`` not below ``t_stop``."""
    if SKIP:
        i = _jump(i, s, active, ~occupied, u0x, u0y, u0z, dux, duy, duz, ix, iy, iz, XCL, YCL, ZCL,
                  n_samples, CELL, 1.0 if HAS_JITTER else 0.5)
    else:
        i = i + 1
    return i, active & (i < n_samples) & (T >= t_stop)


@triton.jit
def forward_kernel(dens_ptr, feat_ptr, occ_ptr, o_ptr, d_ptr, t0_ptr, dl_ptr, zpt_ptr, jit_ptr,
                   out_f_ptr, out_d_ptr, out_a_ptr,
                   R, C, Y, X, YC, XC, XCL, YCL, ZCL, sx, sy, sz, hx, hy, hz, xm1, ym1, zm1, xlo, ylo, zlo,
                   n_samples, t_stop,
                   ZYX, ZYXC, OCC_N,
                   BLOCK_R: tl.constexpr, NCH: tl.constexpr, VEC: tl.constexpr, CELL: tl.constexpr,
                   SKIP: tl.constexpr, HAS_JITTER: tl.constexpr):
    """Composite ``BLOCK_R`` rays of field ``program_id(1)``: features ``[B,C,R]``, ``Σ w z [B,R]``, alpha ``[B,R]``."""
    (b, rays, rmask, ch, cmask, dens_ptr, feat_ptr, occ_ptr, jit_ptr, u0x, u0y, u0z, dux, duy, duz, t0, dl,
     zpt) = _program_setup(dens_ptr, feat_ptr, occ_ptr, o_ptr, d_ptr, t0_ptr, dl_ptr, zpt_ptr, jit_ptr, R, C, hx, hy,
                           hz, n_samples, ZYX, ZYXC, OCC_N, BLOCK_R, NCH, VEC)
    i = tl.zeros([BLOCK_R], tl.int32)
    T = tl.full([BLOCK_R], 1.0, tl.float32)
    acc = tl.zeros([NCH, BLOCK_R, VEC], tl.float32)
    dacc = tl.zeros([BLOCK_R], tl.float32)
    aacc = tl.zeros([BLOCK_R], tl.float32)           # alpha = Σ w = 1 − T, summed: keeps faint rays' precision
    active = rmask & (dl > 0.0)                      # rays that miss the box have δ = 0: nothing to march
    while tl.max(active.to(tl.int32), axis=0) > 0:
        s, ix, iy, iz, fx, fy, fz, base, live, occupied, w, e = _sample(
            i, active, rays, jit_ptr, occ_ptr, dens_ptr, u0x, u0y, u0z, dux, duy, duz, Y, X, YC, XC,
            sx, sy, sz, xm1, ym1, zm1, xlo, ylo, zlo, n_samples, T, dl, BLOCK_R, CELL, SKIP, HAS_JITTER)
        fmask = (live & (w != 0.0))[None, :, None] & cmask
        for k in tl.static_range(8):
            off, cw = _corner(k, base, fx, fy, fz, sx, sy, sz)
            row = tl.load(feat_ptr + off[None, :, None] * C + ch, mask=fmask, other=0.0).to(tl.float32)
            acc += (w * cw)[None, :, None] * row
        dacc += w * ((t0 + s * dl) * zpt)
        aacc += w
        T = T * e
        i, active = _advance(i, s, active, occupied, T, u0x, u0y, u0z, dux, duy, duz, ix, iy, iz, XCL, YCL, ZCL,
                             n_samples, t_stop, CELL, SKIP, HAS_JITTER)
    out = b * R + rays
    tl.store(out_f_ptr + (b * C + ch) * R + rays[None, :, None], acc, mask=rmask[None, :, None] & cmask)
    tl.store(out_d_ptr + out, dacc, mask=rmask)
    tl.store(out_a_ptr + out, aacc, mask=rmask)


@triton.jit
def backward_kernel(dens_ptr, feat_ptr, occ_ptr, o_ptr, d_ptr, t0_ptr, dl_ptr, zpt_ptr, jit_ptr,
                    f_ptr, dn_ptr, a_ptr, gf_ptr, gd_ptr, ga_ptr, dd_ptr, df_ptr,
                    R, C, Y, X, YC, XC, XCL, YCL, ZCL, sx, sy, sz, hx, hy, hz, xm1, ym1, zm1, xlo, ylo, zlo,
                    n_samples, t_stop,
                    ZYX, ZYXC, OCC_N,
                    BLOCK_R: tl.constexpr, NCH: tl.constexpr, VEC: tl.constexpr, CELL: tl.constexpr,
                    SKIP: tl.constexpr, HAS_JITTER: tl.constexpr, NEED_DSIGMA: tl.constexpr,
                    NEED_DFEAT: tl.constexpr):
    """Gradients of ``L = g_F·F + g_D·D + g_A·A`` (upstream ``g_*``) w.r.t. density ``dd [B,Z,Y,X]`` and features
    ``df [B,Z,Y,X,C]`` (fp32, accumulated atomically), re-marching the forward's samples."""
    (b, rays, rmask, ch, cmask, dens_ptr, feat_ptr, occ_ptr, jit_ptr, u0x, u0y, u0z, dux, duy, duz, t0, dl,
     zpt) = _program_setup(dens_ptr, feat_ptr, occ_ptr, o_ptr, d_ptr, t0_ptr, dl_ptr, zpt_ptr, jit_ptr, R, C, hx, hy,
                           hz, n_samples, ZYX, ZYXC, OCC_N, BLOCK_R, NCH, VEC)
    dd_ptr += b * ZYX
    df_ptr += b * ZYXC
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
        s, ix, iy, iz, fx, fy, fz, base, live, occupied, w, e = _sample(
            i, active, rays, jit_ptr, occ_ptr, dens_ptr, u0x, u0y, u0z, dux, duy, duz, Y, X, YC, XC,
            sx, sy, sz, xm1, ym1, zm1, xlo, ylo, zlo, n_samples, T, dl, BLOCK_R, CELL, SKIP, HAS_JITTER)
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
        i, active = _advance(i, s, active, occupied, T, u0x, u0y, u0z, dux, duy, duz, ix, iy, iz, XCL, YCL, ZCL,
                             n_samples, t_stop, CELL, SKIP, HAS_JITTER)

