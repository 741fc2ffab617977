"""Compiled (numba) per-hit shading: the same images as the numpy reference `shading`, in a few loops.

`shading` stays the readable reference; the kernels here reproduce its formulas hit by hit so that a tick costs a
few passes over memory instead of ~400 numpy calls with their gathers and temporaries. All kernels are
`@njit(nogil=True, cache=True)`, and the per-hit ones `parallel=True` (their hits split over numba's threads; every
hit is independent, so the bytes do not depend on the thread count). They may be called from several Python
threads at once (OpenMP threading layer). The machine code is cached in `__pycache__` (gitignored), so only the
first run on a machine compiles (10–15 s on 2 cores; well under a second to load after).

The kernels and the scalar helpers they inline live in this one file because numba's cache checks only the file
of a cached function: what the kernels compile in from other modules — the constants of `shading_tables`,
`materials` and `semantics`, the `LV_*` offsets and `LampMap.CELL` of `lighting`, `shading.glow_powers` — does not
make them compile again when it changes (after editing those, delete
``sim_bridge/backends/procedural/__pycache__/shade_kernel.*``). The kernels are called
through `compiled_shading` (argument checks, output arrays), in the order `Renderer.render_group` needs them:
kernel D (`hits_kernel`: the hits' points, directions, normals and attributes), A (`detail_kernel`: surface
detail), E (`shadow_rays_kernel`: the rays towards the sun), B (`shade_hits_kernel`: shade + tone map of the hits)
and C (`sky_kernel`: the sky of the misses).

Precision: numpy computes in float32 wherever its operands are float32 (NEP 50: a Python float next to a float32
array is float32) and in float64 where a bool or int array meets a Python float (e.g. `0.04 * (spec > 0.3)`,
facade shading factors, the lamp raster's bilinear weights). The kernels follow the same choice term by term —
every constant is wrapped in `f32(...)` where numpy would round it to float32, and the operation order is the
reference's — so the images agree to the last bit except where `exp` differs by an ulp between numpy's SIMD
implementation and libm's `expf` (a handful of pixels per 256×256 tick, off by one level;
`tests/sim_bridge/test_shade_kernel.py` bounds it).

`python -m sim_bridge.backends.procedural.shade_bench` times both paths on the same Town03 tick.
"""
from __future__ import annotations

import os

import numba
import numpy as np

from sim_bridge import semantics as sem
from sim_bridge.backends.procedural import materials as M
from sim_bridge.backends.procedural.lighting import (
    LV_AMBIENT,
    LV_ASPHALT_SPEC,
    LV_CLOUD,
    LV_CLOUD_OFF,
    LV_CLOUD_RGB,
    LV_EXPOSURE,
    LV_FOG_RGB,
    LV_FOG_START,
    LV_GLOW,
    LV_HAS_SUN,
    LV_HORIZON,
    LV_NEG_FOG_BETA,
    LV_NIGHT,
    LV_PUDDLE_TH,
    LV_PUDDLES,
    LV_SIDEWALK_SPEC,
    LV_SUN_DIR,
    LV_SUN_DISC,
    LV_SUN_RGB,
    LV_WET,
    LV_WET_DIM,
    LV_ZENITH,
    LampMap,
)
from sim_bridge.backends.procedural.shading import glow_powers
from sim_bridge.backends.procedural.shading_tables import (LUT_N, LUT_RES, MK_DASH_CENTRE, MK_DASH_LANE, MK_PARKING,
                                                           MK_TRACK, MK_WHITE, MK_YELLOW, TEX_N, TONE_N, TONE_SCALE)

f32 = np.float32
# error_model="numpy": a float division by zero gives inf/nan as in numpy instead of a Python exception (and no
# zero test before every division).
_JIT = {"nogil": True, "cache": True, "fastmath": False, "error_model": "numpy"}
# The per-hit kernels split their hits over numba's threads (every hit is independent, so the bytes do not depend
# on the thread count); Open3D holds the GIL while it casts, so this is where the second core helps.
_PJIT = {**_JIT, "parallel": True}
if "NUMBA_THREADING_LAYER" not in os.environ:
    # OpenMP first: it tolerates kernels launched from several Python threads at once (numba's own "workqueue"
    # layer, the last resort, does not); libgomp is a system package of the setup.
    numba.config.THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]
# Idle OpenMP threads sleep instead of spinning: between kernels the cores belong to Open3D's ray casts (TBB).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_MASK = TEX_N - 1
_U32 = 0xFFFFFFFF
_LAMP_INV_CELL = 1.0 / LampMap.CELL

# Material / tag ids as module constants (numba freezes globals at compile time).
_ASPHALT, _ROAD, _SIDEWALK, _FACADE, _FOLIAGE = M.ASPHALT, M.ROAD, M.SIDEWALK, M.FACADE, M.FOLIAGE
_GRASS, _HILL, _GLASS, _PAINT, _WATER, _METAL = M.GRASS, M.HILL, M.GLASS, M.PAINT, M.WATER, M.METAL
_LAMP, _TAILLIGHT = M.LAMP, M.TAILLIGHT
_TAG_ROAD, _TAG_ROADLINE, _TAG_SKY = sem.ROAD, sem.ROADLINE, sem.SKY

# ------------------------------------------------------------------------------------------- scalar helpers


@numba.njit(inline="always", **_JIT)
def _noise2(tex, x, y, inv_cell):
    """`shading.noise2` at one point: bilinear texel lookup, float32 throughout (inv_cell = f32(1 / cell))."""
    u = x * inv_cell
    v = y * inv_cell
    fu = np.floor(u)
    fv = np.floor(v)
    i0 = np.int64(fu)
    j0 = np.int64(fv)
    a = u - fu
    b = v - fv
    i1 = ((i0 + 1) & _MASK) * TEX_N
    j1 = (j0 + 1) & _MASK
    i0 = (i0 & _MASK) * TEX_N
    j0 = j0 & _MASK
    n00 = tex[i0 + j0]
    n10 = tex[i1 + j0]
    n01 = tex[i0 + j1]
    n11 = tex[i1 + j1]
    top = n00 + (n10 - n00) * a
    return top + ((n01 + (n11 - n01) * a) - top) * b


@numba.njit(inline="always", **_JIT)
def _grain(tex, x, y, inv_cell):
    """`shading.grain` at one point (nearest texel; the float -> int cast truncates towards zero as astype does)."""
    i = np.int64(x * inv_cell) & _MASK
    j = np.int64(y * inv_cell) & _MASK
    return tex[i * TEX_N + j]


@numba.njit(inline="always", **_JIT)
def _mod(a, b):
    """np.mod of float32 scalars, b > 0: the exact a - n·b in float64 (n < 2^29 keeps it exact), then one
    rounding to float32 — the same value as numpy's fmodf plus its float32 sign fix-up (fmod is exact, and the
    fix-up r + b is one correctly rounded addition), without a libm call per hit."""
    a64 = np.float64(a)
    b64 = np.float64(b)
    r = a64 - np.floor(a64 / b64) * b64
    if r < 0:  # the quotient was rounded up across an integer
        r += b64
    elif r >= b64:
        r -= b64
    return f32(r)


@numba.njit(inline="always", **_JIT)
def _clip01(x):
    if x < f32(0.0):
        return f32(0.0)
    if x > f32(1.0):
        return f32(1.0)
    return x


@numba.njit(inline="always", **_JIT)
def _scale3(albedo, i, f):
    """albedo[:, i] *= f, in the precision of `f` (float32, or float64 as numpy's bool-times-float factors)."""
    for c in range(3):
        albedo[c, i] = albedo[c, i] * f


@numba.njit(inline="always", **_JIT)
def _paint3(albedo, i, r, g, b):
    """albedo[:, i] = (r, g, b)."""
    albedo[0, i] = r
    albedo[1, i] = g
    albedo[2, i] = b


# The sun glow's powers, compiled from the reference's own function (the same roundings in both shaders).
_glow_powers = numba.njit(inline="always", **_JIT)(glow_powers)


@numba.njit(inline="always", **_JIT)
def _mix32(h, v, k):
    """One round of `shading.hash01` in uint32 arithmetic, carried in int64 and masked to 32 bits."""
    m = ((v & _U32) * (0x9E3779B1 + 2 * k)) & _U32
    h = ((h ^ m) * 0x85EBCA6B) & _U32
    return h ^ (h >> 13)


@numba.njit(inline="always", **_JIT)
def _fin32(h):
    h = (h * 0xC2B2AE35) & _U32
    h = h ^ (h >> 16)
    return f32(h >> 8) / f32(1 << 24)


@numba.njit(inline="always", **_JIT)
def _hash3(a, b, c):
    """`shading.hash01(a, b, c)` of int64 scalars, float32 in [0, 1)."""
    return _fin32(_mix32(_mix32(_mix32(np.int64(0), a, 0), b, 1), c, 2))


@numba.njit(inline="always", **_JIT)
def _hash2(a, b):
    """`shading.hash01(a, b)` of int64 scalars, float32 in [0, 1)."""
    return _fin32(_mix32(_mix32(np.int64(0), a, 0), b, 1))


@numba.njit(inline="always", **_JIT)
def _sky_consts(lv):
    """The sky's constants as a float32 tuple (held in registers by the loops; an array would be re-read per hit):
    sun dir (0-2), horizon (3-5), zenith - horizon (6-8), glow (9-11), sun disc (12-14), cloud colour (15-17),
    1 - cloud cover (18), sun up (19: 1/0), clouds on (20: 1/0)."""
    return (f32(lv[LV_SUN_DIR]), f32(lv[LV_SUN_DIR + 1]), f32(lv[LV_SUN_DIR + 2]),
            f32(lv[LV_HORIZON]), f32(lv[LV_HORIZON + 1]), f32(lv[LV_HORIZON + 2]),
            f32(lv[LV_ZENITH]) - f32(lv[LV_HORIZON]), f32(lv[LV_ZENITH + 1]) - f32(lv[LV_HORIZON + 1]),
            f32(lv[LV_ZENITH + 2]) - f32(lv[LV_HORIZON + 2]),
            f32(lv[LV_GLOW]), f32(lv[LV_GLOW + 1]), f32(lv[LV_GLOW + 2]),
            f32(lv[LV_SUN_DISC]), f32(lv[LV_SUN_DISC + 1]), f32(lv[LV_SUN_DISC + 2]),
            f32(lv[LV_CLOUD_RGB]), f32(lv[LV_CLOUD_RGB + 1]), f32(lv[LV_CLOUD_RGB + 2]),
            f32(lv[LV_CLOUD_OFF]), f32(1.0 if lv[LV_HAS_SUN] > 0 else 0.0), f32(1.0 if lv[LV_CLOUD] > 0.02 else 0.0))


@numba.njit(inline="always", **_JIT)
def _sky(dx, dy, dz, k, tex, clouds):
    """`shading.sky` for one float32 direction: (r, g, b) float32 linear radiance; `k` = `_sky_consts(lv)`."""
    dz = min(max(dz, f32(-1.0)), f32(1.0))
    t = np.sqrt(max(dz, f32(0.0)))
    mu = _clip01(dx * k[0] + dy * k[1] + dz * k[2])
    mu8, mu64 = _glow_powers(mu)
    g = f32(0.6) * mu8 + mu64
    c0 = k[3] + k[6] * t + k[9] * g
    c1 = k[4] + k[7] * t + k[10] * g
    c2 = k[5] + k[8] * t + k[11] * g
    if k[19] > 0 and mu > f32(0.9995):
        c0 += k[12]
        c1 += k[13]
        c2 += k[14]
    if clouds and k[20] > 0:
        # Cloud layer: the direction projected on a plane (unit height) and looked up in the noise texture.
        up = f32(1.0) / max(dz, f32(0.04))
        px = dx * up
        py = dy * up
        n = _noise2(tex, px, py, f32(1.0 / 0.09)) + f32(0.45) * _noise2(tex, px + f32(3.7), py - f32(1.3), f32(1.0 / 0.03))
        cover = _clip01((n * f32(0.6) + f32(0.5) - k[18]) * f32(3.0)) * _clip01(dz * f32(8.0))
        c0 += (k[15] - c0) * cover
        c1 += (k[16] - c1) * cover
        c2 += (k[17] - c2) * cover
    return c0, c1, c2


@numba.njit(inline="always", **_JIT)
def _tone(x, expo, lut):
    """`shading.to_srgb8` of one float32 channel value."""
    q = np.sqrt(max(x * expo, f32(0.0))) * f32(TONE_SCALE)
    q = min(q, f32(TONE_N - 1))
    return lut[np.int64(q)]


# ------------------------------------------------------------------------------------------- kernel A


@numba.njit(**_PJIT)
def detail_kernel(x, y, z, nx, ny, nz, prim, material, tag, albedo, params_t, lut, road_styles, buildings,
                   tex, lv, spec, emis):
    """Kernel A: `shading.surface_detail` hit by hit (see `compiled_shading.surface_detail` for the arguments)."""
    wet = lv[LV_WET]
    puddles = lv[LV_PUDDLES] > 0
    puddle_th = f32(lv[LV_PUDDLE_TH])
    night = lv[LV_NIGHT] > 0
    for i in numba.prange(x.shape[0]):
        m = material[i]
        p = prim[i]
        xi = x[i]
        yi = y[i]
        if m == _ROAD or m == _ASPHALT:
            f = f32(1.0) + f32(0.09) * _noise2(tex, xi, yi, f32(1.0 / 3.0)) + f32(0.05) * _grain(tex, xi, yi, f32(1.0 / 0.25))
            if m == _ROAD:
                # Lane markings, crosswalks and wheel tracks from the triangle's road frame.
                ax = params_t[0, p]
                ay = params_t[1, p]
                ux = params_t[2, p]
                uy = params_t[3, p]
                rx = xi - ax
                ry = yi - ay
                s = params_t[4, p] + rx * ux + ry * uy
                a = abs(ux * ry - uy * rx)
                si = np.int64(params_t[6, p])
                cls = lut[si * LUT_N + min(np.int64(a * f32(1.0 / LUT_RES)), LUT_N - 1)]
                white = cls == MK_WHITE
                yellow = cls == MK_YELLOW
                if cls == MK_DASH_LANE:
                    white = _mod(s + f32(2.0), f32(10.0)) < f32(4.0)
                elif cls == MK_DASH_CENTRE:
                    white = _mod(s, f32(9.0)) < f32(3.0)
                elif cls == MK_PARKING:
                    white = abs(_mod(s - f32(4.9), f32(6.2)) - f32(3.1)) < f32(0.07)
                # Crosswalks (zebra) in the last 4 m before each junction (inside the driving lanes).
                end_d = min(s, params_t[5, p] - s)
                if (end_d > f32(0.8) and end_d < f32(4.2) and road_styles[si, 6] > 0
                        and a < road_styles[si, 2] + road_styles[si, 0] * road_styles[si, 1] and _mod(a, f32(1.2)) < f32(0.6)):
                    white = True
                if cls == MK_TRACK:
                    f *= f32(0.92)
                _scale3(albedo, i, f)
                if white:
                    _paint3(albedo, i, f32(0.62), f32(0.62), f32(0.6))
                if yellow:
                    _paint3(albedo, i, f32(0.55), f32(0.38), f32(0.05))
                line = white or yellow
                if line:
                    tag[i] = _TAG_ROADLINE
                if wet > 0:
                    spec[i] = 0.02 + wet * (0.35 - 0.25 * (1.0 if line else 0.0))  # float64, as numpy
            else:
                _scale3(albedo, i, f)
                if wet > 0:
                    spec[i] = lv[LV_ASPHALT_SPEC]
            if puddles and _noise2(tex, xi + f32(17.0), yi - f32(5.0), f32(1.0 / 1.6)) > puddle_th:
                _scale3(albedo, i, f32(0.45))
                spec[i] = 0.85
        elif m == _SIDEWALK:
            fx = _mod(xi, f32(1.2))
            fy = _mod(yi, f32(1.2))
            if min(fx, f32(1.2) - fx) < f32(0.035) or min(fy, f32(1.2) - fy) < f32(0.035):
                _scale3(albedo, i, f32(0.75))
            if wet > 0:
                spec[i] = lv[LV_SIDEWALK_SPEC]
        elif m == _FACADE:
            ox = params_t[0, p]
            oy = params_t[1, p]
            tx = params_t[2, p]
            ty = params_t[3, p]
            wall_len = params_t[4, p]
            bid = np.int64(params_t[6, p])
            fh = buildings[bid, 0]
            sp = buildings[bid, 1]
            ww = buildings[bid, 2]
            wh = buildings[bid, 3]
            gh = buildings[bid, 4]
            curtain = buildings[bid, 5] == 1
            height = buildings[bid, 7]
            zi = z[i]
            u = (xi - ox) * tx + (yi - oy) * ty
            ncol = np.floor(wall_len / sp)
            uu = (u - (wall_len - ncol * sp) * f32(0.5)) / sp
            col = np.floor(uu)
            fu = abs(uu - col - f32(0.5))
            zr = (zi - gh) / fh
            fl = np.floor(zr)
            fz = zr - fl
            body = col >= 0 and col < ncol and zi < height - f32(0.8)
            upper = body and zi > gh + f32(0.3)
            hole = upper and not curtain
            punched = hole and fu < ww * f32(0.5) and fz > f32(0.28) and fz < f32(0.28) + wh
            frame = (hole and fu < ww * f32(0.5) + f32(0.06) and fz > f32(0.24) and fz < f32(0.32) + wh
                     and not punched)
            glass_c = upper and curtain and fu < f32(0.46) and fz > f32(0.14)
            shop = zi < gh * f32(0.85) and zi > f32(0.15) and body and fu < f32(0.44)
            # Floor bands, plinth and window reveals: bool × Python float is float64 in numpy, so here too.
            fd = (1.0 - 0.12 * (1.0 if (fz < f32(0.08) and zi > gh) else 0.0) - 0.18 * (1.0 if zi < f32(0.6) else 0.0)
                  - 0.45 * (1.0 if frame else 0.0))
            _scale3(albedo, i, fd)  # float64 factor: float64 product, as numpy
            if punched or shop:
                _paint3(albedo, i, f32(0.035), f32(0.04), f32(0.05))
            if glass_c:
                _paint3(albedo, i, f32(0.05), f32(0.08), f32(0.1))
            if punched or shop or glass_c:
                spec[i] = 0.55
                if night:
                    ci = np.int64(col)
                    fi = np.int64(fl)
                    if np.float64(_hash3(bid, ci, fi)) < (0.8 if shop else 0.38):
                        w = f32(0.6) + f32(0.8) * _hash2(ci, np.int64(fl + f32(7.0)))
                        emis[0, i] = f32(f32(1.0) * f32(0.28)) * w
                        emis[1, i] = f32(f32(0.78) * f32(0.28)) * w
                        emis[2, i] = f32(f32(0.45) * f32(0.28)) * w
        elif m == _FOLIAGE:
            # Smooth analytic crown normals (ellipsoid gradient or cone) with leafy jitter.
            zi = z[i]
            gx = xi - params_t[0, p]
            gy = yi - params_t[1, p]
            if params_t[6, p] == 2:
                gz = np.sqrt(gx * gx + gy * gy) * params_t[7, p]
            else:
                gz = (zi - params_t[2, p]) * params_t[5, p]
                gx = gx * params_t[3, p]
                gy = gy * params_t[4, p]
            j = f32(0.5) * np.sqrt(gx * gx + gy * gy + gz * gz)
            gx += j * _grain(tex, xi + zi, yi, f32(1.0 / 0.35))
            gy += j * _grain(tex, yi - zi, xi, f32(1.0 / 0.35))
            gz += j * _grain(tex, zi + xi, yi + zi, f32(1.0 / 0.35))
            inv = f32(1.0) / np.sqrt(gx * gx + gy * gy + gz * gz + f32(1e-12))
            nx[i] = gx * inv
            ny[i] = gy * inv
            nz[i] = gz * inv
            v = f32(0.9) + f32(0.15) * _noise2(tex, xi + zi, yi - zi, f32(1.0 / 0.6))
            _scale3(albedo, i, v)
        elif m == _GRASS or m == _HILL:
            v = f32(0.85) + f32(0.18) * _noise2(tex, xi, yi, f32(1.0 / 9.0)) + f32(0.08) * _grain(tex, xi, yi, f32(1.0 / 0.3))
            if m == _HILL:
                # Darker forested patches: numpy multiplies the albedo by (k · v), in that order.
                if _noise2(tex, xi, yi, f32(1.0 / 40.0)) > f32(0.05):
                    albedo[0, i] = albedo[0, i] * (f32(0.45) * v)
                    albedo[1, i] = albedo[1, i] * (f32(0.6) * v)
                    albedo[2, i] = albedo[2, i] * (f32(0.4) * v)
                else:
                    _scale3(albedo, i, f32(1.0) * v)
            else:
                _scale3(albedo, i, v)
        elif m == _GLASS:
            spec[i] = 0.5
        elif m == _PAINT:
            spec[i] = 0.12
        elif m == _WATER:
            spec[i] = 0.7
        elif m == _METAL:
            spec[i] = 0.1
        elif m == _LAMP and night:
            emis[0, i] = f32(2.5)
            emis[1, i] = f32(2.3)
            emis[2, i] = f32(1.8)
        elif m == _TAILLIGHT and night:
            emis[0, i] = f32(0.8)
            emis[1, i] = f32(0.05)
            emis[2, i] = f32(0.03)


# ------------------------------------------------------------------------------------------- kernel B


@numba.njit(inline="always", **_JIT)
def _lamp_sample(grid, gx0, gy0, gnx, gny, x, y):
    """`LampMap.sample` at one point: float32 raster coordinates, float64 bilinear weights (as numpy's
    float32 - int32 promotes), float32 result."""
    u = (x - gx0) * f32(_LAMP_INV_CELL)
    v = (y - gy0) * f32(_LAMP_INV_CELL)
    if not (u >= 0 and v >= 0 and u < f32(gnx - 1) and v < f32(gny - 1)):
        return f32(0.0)
    i = np.int64(u)
    j = np.int64(v)
    a = np.float64(u) - np.float64(i)
    b = np.float64(v) - np.float64(j)
    k = i * gny + j
    top = np.float64(grid[k]) * (1 - a) + np.float64(grid[k + gny]) * a
    bot = np.float64(grid[k + 1]) * (1 - a) + np.float64(grid[k + gny + 1]) * a
    return f32(top * (1 - b) + bot * b)


@numba.njit(**_PJIT)
def shade_hits_kernel(x, y, z, dx, dy, dz, nx, ny, nz, dist, tag, albedo, sun_lit, spec, emis, lv, tex, tone,
                  use_head, head_pos, head_fwd, use_lamps, grid, gx0, gy0, gnx, gny, out, rows, semantic, write_sem):
    """Kernel B: `shading.shade` hit by hit, then `shading.to_srgb8`, written to `out[rows[i]]` (and the tag to
    `semantic[rows[i]]` when `write_sem`)."""
    sk = _sky_consts(lv)
    fog_start = f32(lv[LV_FOG_START])
    neg_beta = f32(lv[LV_NEG_FOG_BETA])
    sdx, sdy, sdz = sk[0], sk[1], sk[2]
    has_sun = lv[LV_HAS_SUN] > 0
    wet = lv[LV_WET] > 0
    wet_dim = f32(lv[LV_WET_DIM])
    expo = f32(lv[LV_EXPOSURE])
    a0, a1, a2 = f32(lv[LV_AMBIENT]), f32(lv[LV_AMBIENT + 1]), f32(lv[LV_AMBIENT + 2])
    s0, s1, s2 = f32(lv[LV_SUN_RGB]), f32(lv[LV_SUN_RGB + 1]), f32(lv[LV_SUN_RGB + 2])
    q0, q1, q2 = f32(lv[LV_FOG_RGB]), f32(lv[LV_FOG_RGB + 1]), f32(lv[LV_FOG_RGB + 2])
    hpx, hpy, hpz = head_pos[0], head_pos[1], head_pos[2]
    hfx, hfy, hfz = head_fwd[0], head_fwd[1], head_fwd[2]
    any_head = use_head or use_lamps
    night = lv[LV_NIGHT] > 0
    R = x.shape[0]
    lin = np.empty(3 * R, np.float32)  # linear radiance, hit-major
    for i in numba.prange(R):
        nxi = nx[i]
        nyi = ny[i]
        nzi = nz[i]
        zi = z[i]
        fog = np.exp(max(dist[i] - fog_start, f32(0.0)) * neg_beta)
        # Ambient: more from the sky above than from the ground; a little occlusion near the ground on walls.
        amb = (f32(0.6) + f32(0.4) * nzi) * fog
        if abs(nzi) < f32(0.5):
            amb *= f32(0.7) + f32(0.3) * _clip01(zi * f32(1.0 / 3.0))
        ndl = f32(0.0)
        if has_sun:
            ndl = max(nxi * sdx + nyi * sdy + nzi * sdz, f32(0.0)) * sun_lit[i] * fog
        if wet and tag[i] == _TAG_ROAD:
            amb *= wet_dim
            ndl *= wet_dim
        head = f32(0.0)
        if use_head:
            vx = x[i] - hpx
            vy = y[i] - hpy
            vz = zi - hpz
            dd = np.sqrt(vx * vx + vy * vy + vz * vz) + f32(1e-3)
            cone = _clip01(((vx * hfx + vy * hfy + vz * hfz) / dd - f32(0.82)) / f32(0.12))
            if cone > 0:  # else head = 0 exactly (cone is a factor)
                facing = _clip01(-(nxi * vx + nyi * vy + nzi * vz) / dd)
                head = f32(18.0) * cone * facing / (dd * dd + f32(4.0)) * fog
        if use_lamps and zi < f32(2.5) and nzi > f32(0.3):
            # Street lamps light upward-facing surfaces near the ground (roads, sidewalks, car roofs).
            head = head + _lamp_sample(grid, gx0, gy0, gnx, gny, x[i], y[i]) * nzi * fog
        haze = f32(1.0) - fog
        l0 = amb * a0
        l1 = amb * a1
        l2 = amb * a2
        if has_sun:
            l0 += ndl * s0
            l1 += ndl * s1
            l2 += ndl * s2
        if any_head:
            l0 += head
            l1 += head * f32(0.95)
            l2 += head * f32(0.85)
        c0 = albedo[0, i] * l0 + haze * q0
        c1 = albedo[1, i] * l1 + haze * q1
        c2 = albedo[2, i] * l2 + haze * q2
        if night:  # emission (lamps, tail lights, windows) only glows at night; emis is not read by day
            c0 += emis[0, i] * fog
            c1 += emis[1, i] * fog
            c2 += emis[2, i] * fog
        ss = spec[i]
        if ss > f32(0.03):
            # Sky reflection with Schlick-like Fresnel; numpy's `0.04 * (ss > 0.3)` makes this sum float64.
            dxi = dx[i]
            dyi = dy[i]
            dzi = dz[i]
            dn = dxi * nxi + dyi * nyi + dzi * nzi
            e1 = f32(1.0) - _clip01(-dn)
            e2 = e1 * e1
            fres = (np.float64(ss * (f32(0.25) + f32(0.75) * e2 * e2 * e1)) + (0.04 if ss > f32(0.3) else 0.0)) * np.float64(fog)
            dn += dn
            r0, r1, r2 = _sky(dxi - dn * nxi, dyi - dn * nyi, dzi - dn * nzi, sk, tex, False)
            c0 = f32(np.float64(c0) + np.float64(r0) * fres)
            c1 = f32(np.float64(c1) + np.float64(r1) * fres)
            c2 = f32(np.float64(c2) + np.float64(r2) * fres)
        lin[3 * i] = c0
        lin[3 * i + 1] = c1
        lin[3 * i + 2] = c2
    # Tone map in two more passes: a branch-free one that the compiler vectorises (the square roots dominate
    # it), then the table lookups and the scattered stores into the image rows.
    idx = np.empty(3 * R, np.int32)
    scale = f32(TONE_SCALE)
    top = f32(TONE_N - 1)
    for j in numba.prange(3 * R):
        idx[j] = np.int32(min(np.sqrt(max(lin[j] * expo, f32(0.0))) * scale, top))
    for i in numba.prange(R):
        r = rows[i]
        out[r, 0] = tone[idx[3 * i]]
        out[r, 1] = tone[idx[3 * i + 1]]
        out[r, 2] = tone[idx[3 * i + 2]]
        if write_sem:
            semantic[r] = tag[i]


# ------------------------------------------------------------------------------------------- kernel C


@numba.njit(**_PJIT)
def sky_kernel(dx, dy, dz, inv_norm, rows, lv, tex, tone, out, semantic, write_sem):
    """Kernel C: the sky (with clouds) of the rays `rows` and its tone map, written to `out[rows[i]]` (and
    sem.SKY to `semantic[rows[i]]` when `write_sem`)."""
    sk = _sky_consts(lv)
    expo = f32(lv[LV_EXPOSURE])
    for i in numba.prange(rows.shape[0]):
        r = rows[i]
        s = inv_norm[r]
        c0, c1, c2 = _sky(dx[r] * s, dy[r] * s, dz[r] * s, sk, tex, True)
        out[r, 0] = _tone(c0, expo, tone)
        out[r, 1] = _tone(c1, expo, tone)
        out[r, 2] = _tone(c2, expo, tone)
        if write_sem:
            semantic[r] = _TAG_SKY


# ------------------------------------------------------------------------------------------- kernels D, E


@numba.njit(**_PJIT)
def hits_kernel(origins, rdx, rdy, rdz, hi, t_hit, pid, nrm, pix_per_cam, norm, inv_norm, material_t, tag_t,
                 albedo_t, x, y, z, dx, dy, dz, nx, ny, nz, dist, prim, material, tag, albedo):
    """Kernel D: `Renderer.hits` (float32 throughout, as numpy). A few passes with a handful of arrays each:
    one pass writing all 14 outputs is slower (too many memory streams at once)."""
    R = hi.shape[0]
    for i in numba.prange(R):
        k = hi[i]
        n = k // pix_per_cam
        th = t_hit[k]
        x[i] = rdx[k] * th + origins[n, 0]
        y[i] = rdy[k] * th + origins[n, 1]
        z[i] = rdz[k] * th + origins[n, 2]
        dist[i] = th * norm[k]
    for i in numba.prange(R):
        k = hi[i]
        s = inv_norm[k]
        dx[i] = rdx[k] * s
        dy[i] = rdy[k] * s
        dz[i] = rdz[k] * s
    for i in numba.prange(R):
        k = hi[i]
        a = nrm[k, 0]
        b = nrm[k, 1]
        c = nrm[k, 2]
        if a * rdx[k] + b * rdy[k] + c * rdz[k] > 0:  # make normals face the camera
            a = -a
            b = -b
            c = -c
        nx[i] = a
        ny[i] = b
        nz[i] = c
    for i in numba.prange(R):
        p = np.int64(pid[hi[i]])
        prim[i] = p
        material[i] = material_t[p]
        tag[i] = tag_t[p]
    for i in numba.prange(R):
        for c in range(3):
            albedo[c, i] = albedo_t[c, prim[i]]


@numba.njit(**_JIT)
def shadow_rays_kernel(x, y, z, nx, ny, nz, material, sd, facing, fi, srays):
    """Kernel E: the sun-facing hits and their shadow rays (the numpy lines of `Renderer.shadows`); returns S."""
    sdx, sdy, sdz = sd[0], sd[1], sd[2]
    S = 0
    for i in range(x.shape[0]):
        a = nx[i]
        b = ny[i]
        c = nz[i]
        f = a * sdx + b * sdy + c * sdz > f32(0.0)
        facing[i] = f
        if f:
            # Start 3 cm off the surface; crowns (smooth normals over coarse facets) 1.2 m towards the sun.
            lift = f32(1.2) if material[i] == _FOLIAGE else f32(0.0)
            srays[S, 0] = x[i] + a * f32(0.03) + lift * sdx
            srays[S, 1] = y[i] + b * f32(0.03) + lift * sdy
            srays[S, 2] = z[i] + c * f32(0.03) + lift * sdz
            srays[S, 3] = sdx
            srays[S, 4] = sdy
            srays[S, 5] = sdz
            fi[S] = i
            S += 1
    return S
