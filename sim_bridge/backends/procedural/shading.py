"""Vectorised shading of ray hits, the readable numpy reference of the compiled shader (`shade_kernel`): sun and
sky light (`lighting`), cast shadows, fog, wet roads, night.

Inputs are flat per-ray arrays (R rays): hit points, unit ray directions, hit normals, per-triangle attributes
gathered by primitive id. Colours are linear RGB until `to_srgb8`. Procedural surface detail (lane markings,
crosswalks, windows, paving, foliage and grass variation) is computed here from world hit coordinates and the
per-triangle parameters of `materials`, so there are no textures and no per-pixel Python; the lookup tables
(noise, road markings, tone curve) are those of `shading_tables`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim_bridge import semantics as sem
from sim_bridge.backends.procedural import materials as M
from sim_bridge.backends.procedural.lighting import LampMap, Lighting
from sim_bridge.backends.procedural.shading_tables import (
    LUT_N,
    LUT_RES,
    MK_DASH_CENTRE,
    MK_DASH_LANE,
    MK_PARKING,
    MK_TRACK,
    MK_WHITE,
    MK_YELLOW,
    NOISE,
    TEX_N,
    TONE_LUT,
    TONE_N,
    TONE_SCALE,
    marking_lut,
)

_F32 = np.float32


def noise2(x: np.ndarray, y: np.ndarray, cell: float) -> np.ndarray:
    """Smooth tileable noise in [-1, 1] at world position (x, y) m, one texel per `cell` m (bilinear)."""
    u = x * _F32(1.0 / cell)
    v = y * _F32(1.0 / cell)
    fu = np.floor(u)
    fv = np.floor(v)
    i0 = fu.astype(np.int32)
    j0 = fv.astype(np.int32)
    a = u - fu
    b = v - fv
    i1 = (i0 + 1) & (TEX_N - 1)
    j1 = (j0 + 1) & (TEX_N - 1)
    i0 &= TEX_N - 1
    j0 &= TEX_N - 1
    i0 *= TEX_N
    i1 *= TEX_N
    n00 = np.take(NOISE, i0 + j0)
    n10 = np.take(NOISE, i1 + j0)
    n01 = np.take(NOISE, i0 + j1)
    n11 = np.take(NOISE, i1 + j1)
    top = n00 + (n10 - n00) * a
    return top + ((n01 + (n11 - n01) * a) - top) * b


def grain(x: np.ndarray, y: np.ndarray, cell: float) -> np.ndarray:
    """Blocky fine noise in [-1, 1] (nearest texel; for detail smaller than a pixel's footprint)."""
    i = (x * _F32(1.0 / cell)).astype(np.int32) & (TEX_N - 1)
    j = (y * _F32(1.0 / cell)).astype(np.int32) & (TEX_N - 1)
    return np.take(NOISE, i * TEX_N + j)


def glow_powers(mu):
    """(mu^8, mu^64) of the sun's cosine `mu` (float32 array or scalar) by repeated squaring, in this order of
    roundings; `shade_kernel` compiles this same function for its sky, so both shaders round alike."""
    mu8 = mu * mu
    mu8 *= mu8
    mu8 *= mu8
    mu64 = mu8 * mu8
    mu64 *= mu64
    mu64 *= mu64
    return mu8, mu64


def sky(dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, L: Lighting, clouds: bool = True) -> np.ndarray:
    """Sky radiance, planar `[3,R]`, for unit directions (dx, dy, dz) `[R]` each (gradient, sun glow, disc, clouds)."""
    dz = np.clip(dz, -1.0, 1.0)
    t = np.sqrt(np.maximum(dz, 0.0))
    sd = L.sun_dir
    mu = np.clip(dx * sd[0] + dy * sd[1] + dz * sd[2], 0.0, 1.0)
    mu8, mu64 = glow_powers(mu)
    g = 0.6 * mu8 + mu64
    col = np.empty((3, len(dz)), _F32)
    for c in range(3):
        col[c] = L.horizon[c] + (L.zenith[c] - L.horizon[c]) * t + L.glow[c] * g
    if L.sun_rgb.max() > 0:
        disc = np.flatnonzero(mu > 0.9995)
        col[:, disc] += (L.sun_rgb * 6.0)[:, None]
    if clouds and L.cloud > 0.02:
        # Cloud layer: the direction projected on a plane (unit height) and looked up in the noise texture.
        up = 1.0 / np.maximum(dz, 0.04)
        px, py = dx * up, dy * up
        n = noise2(px, py, 0.09) + 0.45 * noise2(px + 3.7, py - 1.3, 0.03)
        cover = np.clip((n * 0.6 + 0.5 - (1.0 - L.cloud)) * 3.0, 0.0, 1.0) * np.clip(dz * 8.0, 0.0, 1.0)
        cloud_col = L.horizon * 1.05 + L.glow * 0.3 + L.sun_rgb * 0.05
        for c in range(3):
            col[c] += (cloud_col[c] - col[c]) * cover
    return col


def hash01(*ints: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random floats in [0, 1) from integer arrays (window lights)."""
    h = np.zeros(np.shape(ints[0]), dtype=np.uint32)
    for k, v in enumerate(ints):
        h = (h ^ (np.asarray(v).astype(np.int64).astype(np.uint32) * np.uint32(0x9E3779B1 + 2 * k))) * np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
    h = h * np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return (h >> np.uint32(8)).astype(_F32) / _F32(1 << 24)


@dataclass
class SurfaceHits:
    """Hits to shade, structure-of-arrays (R = number of hit rays; all float32 unless noted).

    Attributes:
        x, y, z: `[R]` hit point, m. dx, dy, dz: `[R]` unit ray direction. nx, ny, nz: `[R]` unit normal facing
        the ray. dist: `[R]` hit distance, m. prim: `[R]` int64 triangle id into the tables.
        material, tag: `[R]` uint8 (tag is updated for road lines). albedo: planar `[3,R]` linear RGB (modified
            in place).
        params_t: the per-triangle parameter table transposed, `[8,T]` (columns gathered on demand by `prim`).
    """

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    dz: np.ndarray
    nx: np.ndarray
    ny: np.ndarray
    nz: np.ndarray
    dist: np.ndarray
    prim: np.ndarray
    material: np.ndarray
    tag: np.ndarray
    albedo: np.ndarray
    params_t: np.ndarray

    def cols(self, idx: np.ndarray, which) -> list[np.ndarray]:
        """Parameter columns `which` of hits `idx`, each `[k]` contiguous."""
        p = np.take(self.prim, idx)
        return [np.take(self.params_t[c], p) for c in which]


def _sel(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return np.take(a, idx, axis=0)


def _scale(planar: np.ndarray, idx: np.ndarray, f) -> None:
    """planar[:, idx] *= f (f scalar or `[k]`), channel by channel (contiguous, fast)."""
    for c in range(3):
        planar[c, idx] = np.take(planar[c], idx) * f


def _paint(planar: np.ndarray, idx: np.ndarray, rgb) -> None:
    """planar[:, idx] = rgb."""
    for c in range(3):
        planar[c, idx] = rgb[c]


def surface_detail(h: SurfaceHits, road_styles: np.ndarray, buildings: np.ndarray, L: Lighting):
    """Apply procedural detail to `h.albedo` / `h.tag` / normals in place, material by material.

    Returns (emissions: list of (hit indices `[k]`, linear radiance `[3]` or `[3,k]`) to add, specular strength
    `[R]` 0..1 of sky reflections).
    """
    emis: list = []
    spec = np.zeros(len(h.x), _F32)
    mat = h.material
    order = np.argsort(mat, kind="stable")
    bounds = np.searchsorted(mat[order], np.arange(M.N_MATERIALS + 1))

    def of(m):  # hit indices with material m, via one sort instead of one scan per material
        return order[bounds[m]:bounds[m + 1]]

    _roads(h, of(M.ROAD), road_styles, spec, L)
    _asphalt(h, of(M.ASPHALT), spec, L)
    _sidewalks(h, of(M.SIDEWALK), spec, L)
    _facades(h, of(M.FACADE), buildings, spec, emis, L)
    _foliage(h, of(M.FOLIAGE))
    _ground(h, of(M.GRASS), forest=False)
    _ground(h, of(M.HILL), forest=True)
    spec[of(M.GLASS)] = 0.5
    spec[of(M.PAINT)] = 0.12
    spec[of(M.WATER)] = 0.7
    spec[of(M.METAL)] = 0.1
    if L.night:
        emis.append((of(M.LAMP), np.array([2.5, 2.3, 1.8], _F32)))
        emis.append((of(M.TAILLIGHT), np.array([0.8, 0.05, 0.03], _F32)))
    return emis, spec


def _roads(h: SurfaceHits, idx, road_styles, spec, L: Lighting) -> None:
    """Lane markings, crosswalks, asphalt grain (ROAD hits `idx`), from each triangle's road frame."""
    if not len(idx):
        return
    lut = marking_lut(road_styles)
    ax, ay, ux, uy, s0, length, style = h.cols(idx, range(7))
    xi, yi = _sel(h.x, idx), _sel(h.y, idx)
    rx = xi - ax
    ry = yi - ay
    s = s0 + rx * ux + ry * uy                    # along the edge, m
    a = np.abs(ux * ry - uy * rx)                 # |lateral offset| from the centre line, m
    si = style.astype(np.int32)
    cls = np.take(lut, si * LUT_N + np.minimum((a * _F32(1 / LUT_RES)).astype(np.int32), LUT_N - 1))
    white = cls == MK_WHITE
    yellow = cls == MK_YELLOW
    k = np.flatnonzero(cls == MK_DASH_LANE)
    white[k[np.mod(s[k] + 2.0, 10.0) < 4.0]] = True
    k = np.flatnonzero(cls == MK_DASH_CENTRE)
    white[k[np.mod(s[k], 9.0) < 3.0]] = True
    k = np.flatnonzero(cls == MK_PARKING)
    white[k[np.abs(np.mod(s[k] - 4.9, 6.2) - 3.1) < 0.07]] = True
    # Crosswalks (zebra) in the last 4 m before each junction (inside the driving lanes).
    end_d = np.minimum(s, length - s)
    k = np.flatnonzero((end_d > 0.8) & (end_d < 4.2))
    if len(k):
        st = np.take(road_styles, si[k], axis=0)
        zebra = (st[:, 6] > 0) & (a[k] < st[:, 2] + st[:, 0] * st[:, 1]) & (np.mod(a[k], 1.2) < 0.6)
        white[k[zebra]] = True
    f = 1.0 + 0.09 * noise2(xi, yi, 3.0) + 0.05 * grain(xi, yi, 0.25)
    f[cls == MK_TRACK] *= 0.92
    _scale(h.albedo, idx, f)
    _paint(h.albedo, idx[white], (0.62, 0.62, 0.6))
    _paint(h.albedo, idx[yellow], (0.55, 0.38, 0.05))
    line = white | yellow
    h.tag[idx[line]] = sem.ROADLINE
    if L.wet > 0:
        spec[idx] = 0.02 + L.wet * (0.35 - 0.25 * line)
    _puddles(h, idx, xi, yi, spec, L)


def _asphalt(h: SurfaceHits, idx, spec, L: Lighting) -> None:
    """Junction asphalt: grain only."""
    if not len(idx):
        return
    xi, yi = _sel(h.x, idx), _sel(h.y, idx)
    _scale(h.albedo, idx, 1.0 + 0.09 * noise2(xi, yi, 3.0) + 0.05 * grain(xi, yi, 0.25))
    if L.wet > 0:
        spec[idx] = 0.02 + 0.35 * L.wet
    _puddles(h, idx, xi, yi, spec, L)


def _puddles(h: SurfaceHits, idx, xi, yi, spec, L: Lighting) -> None:
    """Puddles (CARLA's precipitation_deposits): dark, mirror-like patches on the asphalt."""
    if L.puddles <= 0:
        return
    k = np.flatnonzero(noise2(xi + 17.0, yi - 5.0, 1.6) > 0.75 - 0.6 * L.puddles)
    _scale(h.albedo, idx[k], _F32(0.45))
    spec[idx[k]] = 0.85


def _sidewalks(h: SurfaceHits, idx, spec, L: Lighting) -> None:
    """Paving slabs of 1.2 m with darker joints."""
    if not len(idx):
        return
    fx = np.mod(_sel(h.x, idx), 1.2)
    fy = np.mod(_sel(h.y, idx), 1.2)
    joint = (np.minimum(fx, 1.2 - fx) < 0.035) | (np.minimum(fy, 1.2 - fy) < 0.035)
    _scale(h.albedo, idx[joint], _F32(0.75))
    if L.wet > 0:
        spec[idx] = 0.15 * L.wet


def _facades(h: SurfaceHits, idx, buildings, spec, emis, L: Lighting) -> None:
    """Windows (punched, curtain wall, shop fronts), floor bands, plinths; lit windows at night."""
    if not len(idx):
        return
    ox, oy, tx, ty, wall_len, _, bidf = h.cols(idx, range(7))
    bid = bidf.astype(np.int64)
    # Per-column gathers from the (small) transposed table: far cheaper than gathering whole rows and transposing.
    bt = np.ascontiguousarray(buildings.T)
    fh, sp, ww, wh, gh, kind, height = (np.take(bt[c], bid) for c in (0, 1, 2, 3, 4, 5, 7))
    u = (_sel(h.x, idx) - ox) * tx + (_sel(h.y, idx) - oy) * ty
    ncol = np.floor(wall_len / sp)
    uu = (u - (wall_len - ncol * sp) * 0.5) / sp
    col = np.floor(uu)
    fu = np.abs(uu - col - 0.5)
    zz = _sel(h.z, idx)
    zr = (zz - gh) / fh
    floor = np.floor(zr)
    fz = zr - floor
    body = (col >= 0) & (col < ncol) & (zz < height - 0.8)
    curtain = kind == 1
    upper = body & (zz > gh + 0.3)
    hole = upper & ~curtain
    punched = hole & (fu < ww * 0.5) & (fz > 0.28) & (fz < 0.28 + wh)
    frame = hole & (fu < ww * 0.5 + 0.06) & (fz > 0.24) & (fz < 0.32 + wh) & ~punched
    glass_c = upper & curtain & (fu < 0.46) & (fz > 0.14)
    shop = (zz < gh * 0.85) & (zz > 0.15) & body & (fu < 0.44)
    # Floor bands, a darker plinth and window reveals give facades some structure.
    f = 1.0 - 0.12 * ((fz < 0.08) & (zz > gh)) - 0.18 * (zz < 0.6) - 0.45 * frame
    _scale(h.albedo, idx, f)
    _paint(h.albedo, idx[punched | shop], (0.035, 0.04, 0.05))
    _paint(h.albedo, idx[glass_c], (0.05, 0.08, 0.1))
    glass = punched | shop | glass_c
    spec[idx[glass]] = 0.55
    if L.night:
        lit = np.flatnonzero(glass & (hash01(bid, col, floor) < np.where(shop, 0.8, 0.38)))
        warm = np.array([1.0, 0.78, 0.45], _F32) * 0.28
        emis.append((idx[lit], warm[:, None] * (0.6 + 0.8 * hash01(col[lit], floor[lit] + 7))[None]))


def _foliage(h: SurfaceHits, idx) -> None:
    """Smooth analytic crown normals (ellipsoid or cone) with leafy jitter, and colour variation."""
    if not len(idx):
        return
    cx, cy, cz, irx, iry, irz, kind, k = h.cols(idx, range(8))
    xi, yi, zi = _sel(h.x, idx), _sel(h.y, idx), _sel(h.z, idx)
    gx, gy = xi - cx, yi - cy
    cone = kind == 2
    # Smooth crown normals: ellipsoid gradient, or the cone's (radial, k·|radial|); plus leafy jitter.
    gz = np.where(cone, np.sqrt(gx * gx + gy * gy) * k, (zi - cz) * irz)
    gx = np.where(cone, gx, gx * irx)
    gy = np.where(cone, gy, gy * iry)
    j = 0.5 * np.sqrt(gx * gx + gy * gy + gz * gz)
    gx += j * grain(xi + zi, yi, 0.35)
    gy += j * grain(yi - zi, xi, 0.35)
    gz += j * grain(zi + xi, yi + zi, 0.35)
    inv = 1.0 / np.sqrt(gx * gx + gy * gy + gz * gz + 1e-12)
    h.nx[idx] = gx * inv
    h.ny[idx] = gy * inv
    h.nz[idx] = gz * inv
    _scale(h.albedo, idx, 0.9 + 0.15 * noise2(xi + zi, yi - zi, 0.6))


def _ground(h: SurfaceHits, idx, forest: bool) -> None:
    """Grass colour variation; on the hills (`forest`) darker forested patches."""
    if not len(idx):
        return
    xi, yi = _sel(h.x, idx), _sel(h.y, idx)
    v = 0.85 + 0.18 * noise2(xi, yi, 9.0) + 0.08 * grain(xi, yi, 0.3)
    if forest:
        woods = noise2(xi, yi, 40.0) > 0.05
        for c, k in enumerate((0.45, 0.6, 0.4)):
            h.albedo[c, idx] *= np.where(woods, _F32(k), _F32(1.0)) * v
    else:
        _scale(h.albedo, idx, v)


def shade(h: SurfaceHits, sun_lit: np.ndarray, emis: list, spec: np.ndarray, L: Lighting,
          headlight: tuple[np.ndarray, np.ndarray] | None = None, lamps: LampMap | None = None) -> np.ndarray:
    """Linear radiance, planar `[3,R]`, of hits: sun (× `sun_lit [R]` 0/1) + sky ambient + emission + sky
    reflections + fog.

    `headlight`: (position [3], forward [3]) of the ego's headlights; `lamps`: street-lamp light on the ground;
    both are used at night only.
    """
    sd = L.sun_dir
    # Fog transmittance folds into the per-pixel light weights (1D) instead of one more pass over the colours.
    fog = np.exp(np.maximum(h.dist - _F32(L.fog_start), 0.0) * _F32(-L.fog_beta))
    # Ambient: more from the sky above than from the ground; a little occlusion near the ground on walls.
    amb = (0.6 + 0.4 * h.nz) * fog
    wall = np.flatnonzero(np.abs(h.nz) < 0.5)
    amb[wall] *= 0.7 + 0.3 * np.clip(np.take(h.z, wall) * _F32(1 / 3.0), 0.0, 1.0)
    has_sun = L.sun_rgb.max() > 0
    if has_sun:
        ndl = np.maximum(h.nx * sd[0] + h.ny * sd[1] + h.nz * sd[2], 0.0) * sun_lit * fog
    if L.wet > 0:
        road = np.flatnonzero(h.tag == sem.ROAD)
        amb[road] *= _F32(1.0 - 0.45 * L.wet)
        if has_sun:
            ndl[road] *= _F32(1.0 - 0.45 * L.wet)
    head = None
    if headlight is not None and L.night:
        hp, hf = headlight
        vx, vy, vz = h.x - hp[0], h.y - hp[1], h.z - hp[2]
        dd = np.sqrt(vx * vx + vy * vy + vz * vz) + 1e-3
        cone = np.clip(((vx * hf[0] + vy * hf[1] + vz * hf[2]) / dd - 0.82) / 0.12, 0.0, 1.0)
        facing = np.clip(-(h.nx * vx + h.ny * vy + h.nz * vz) / dd, 0.0, 1.0)
        head = 18.0 * cone * facing / (dd * dd + 4.0) * fog
    if lamps is not None and L.night:
        # Street lamps light upward-facing surfaces near the ground (roads, sidewalks, car roofs).
        low = np.flatnonzero((h.z < 2.5) & (h.nz > 0.3))
        pool = np.zeros(len(fog), _F32)
        pool[low] = lamps.sample(np.take(h.x, low), np.take(h.y, low)) * np.take(h.nz, low) * np.take(fog, low)
        head = pool if head is None else head + pool
    haze = 1.0 - fog
    col = np.empty((3, len(fog)), _F32)
    for c in range(3):
        light = amb * L.ambient[c]
        if has_sun:
            light += ndl * L.sun_rgb[c]
        if head is not None:
            light += head * (1.0, 0.95, 0.85)[c]
        col[c] = h.albedo[c] * light + haze * L.fog_rgb[c]
    for idx, e in emis:
        f = np.take(fog, idx)
        for c in range(3):
            col[c, idx] += e[c] * f
    s_idx = np.flatnonzero(spec > 0.03)
    if len(s_idx):
        dx, dy, dz = _sel(h.dx, s_idx), _sel(h.dy, s_idx), _sel(h.dz, s_idx)
        nx, ny, nz = _sel(h.nx, s_idx), _sel(h.ny, s_idx), _sel(h.nz, s_idx)
        dn = dx * nx + dy * ny + dz * nz
        c1 = 1.0 - np.clip(-dn, 0.0, 1.0)
        c2 = c1 * c1
        ss = _sel(spec, s_idx)
        fres = (ss * (0.25 + 0.75 * c2 * c2 * c1) + 0.04 * (ss > 0.3)) * np.take(fog, s_idx)
        dn += dn
        refl = sky(dx - dn * nx, dy - dn * ny, dz - dn * nz, L, clouds=False)
        for c in range(3):
            col[c, s_idx] += refl[c] * fres
    return col


def to_srgb8(col: np.ndarray, exposure: float, out: np.ndarray) -> np.ndarray:
    """Planar linear radiance `[3,R]` -> sRGB uint8 written into `out [R,3]` (a soft shoulder 1 - exp(-k x) and
    the sRGB curve, both in one lookup table indexed by sqrt(k x))."""
    for c in range(3):
        q = np.sqrt(np.maximum(col[c] * _F32(exposure), 0.0))
        q *= _F32(TONE_SCALE)
        np.minimum(q, _F32(TONE_N - 1), out=q)
        out[:, c] = np.take(TONE_LUT, q.astype(np.int32))
    return out
