"""Lookup tables shared by the numpy shader (`shading`) and its compiled twin (`shade_kernel`).

* the noise texture: a tileable `TEX_N`×`TEX_N` float32 texture in [-1, 1] (`NOISE`, flat, row i at i·TEX_N) —
  the source of every procedural variation (asphalt grain, grass, foliage, clouds, puddles);
* the road-marking profile: per road style, the marking class (`MK_*`) at each |lateral offset| in steps of
  `LUT_RES` m (`road_marking_lut`, cached per town by `marking_lut`);
* the tone curve: `TONE_LUT [TONE_N]` uint8, a soft shoulder 1 - exp(-k x) followed by the sRGB curve, indexed
  by `sqrt(k x) · TONE_SCALE`.

The kernels freeze the scalar constants here (`TEX_N`, `LUT_N`, `LUT_RES`, `MK_*`, `TONE_N`, `TONE_SCALE`) into
their compiled code; after changing one, clear their cache (see `shade_kernel`).
"""
from __future__ import annotations

import math

import numpy as np

from sim_bridge.backends.procedural.road_graph import CENTRE_BARRIER, CENTRE_DASHED_WHITE, CENTRE_DOUBLE_YELLOW

# ------------------------------------------------------------------------------------------- noise texture

TEX_N = 256
"""side of the noise texture, texels (a power of two: coordinates wrap with `& (TEX_N - 1)`)."""


def make_noise_texture() -> np.ndarray:
    """`[TEX_N*TEX_N]` float32 in [-1, 1]: a few integer-frequency waves on the torus (tileable), seeded, so
    every process builds the same texture."""
    rng = np.random.default_rng(12345)
    i, j = np.meshgrid(np.arange(TEX_N), np.arange(TEX_N), indexing="ij")
    tex = np.zeros((TEX_N, TEX_N))
    for k in range(24):
        fx, fy = rng.integers(-12, 13, 2)
        if fx == 0 and fy == 0:
            continue
        amp = 1.0 / math.hypot(fx, fy)
        tex += amp * np.sin(2 * math.pi * (fx * i + fy * j) / TEX_N + rng.uniform(0, 2 * math.pi))
    tex /= np.abs(tex).max()
    return tex.astype(np.float32).ravel()


NOISE = make_noise_texture()
"""the noise texture, `[TEX_N*TEX_N]` float32 (built once per process)."""

# ------------------------------------------------------------------------------------------- road markings

LUT_RES = 0.02
"""lateral resolution of the road-marking profile, m."""
LUT_N = 1200
"""entries per road style of the profile (24 m of half-width)."""
#: Marking classes of the profile.
MK_NONE, MK_WHITE, MK_YELLOW, MK_DASH_CENTRE, MK_DASH_LANE, MK_PARKING, MK_TRACK = 0, 1, 2, 3, 4, 5, 6


def road_marking_lut(road_styles: np.ndarray) -> np.ndarray:
    """`[S*LUT_N]` uint8 marking class of each style at |lateral offset| = (i + 0.5) · 2 cm (see MK_*).

    `road_styles` is `[S,8]` float32 (`MeshData.road_styles`). Dashes (MK_DASH_*) and parking ticks are resolved
    along the road by the shader; MK_TRACK marks the darker wheel tracks in the middle of each lane half.
    """
    out = np.zeros((len(road_styles), LUT_N), np.uint8)
    a = (np.arange(LUT_N) + 0.5) * LUT_RES
    for k, (lanes, lw, med, park, shoulder, centre, cross, hw) in enumerate(road_styles):
        c = np.zeros(LUT_N, np.uint8)
        outer = med + lanes * lw
        lane_pos = np.mod(a - med, lw) / lw
        c[(a > med) & (a < outer) & (np.abs(np.abs(lane_pos - 0.5) - 0.25) < 0.08)] = MK_TRACK
        c[(park > 0) & (a > outer + 0.2)] = MK_PARKING
        for j in range(1, int(lanes)):
            c[np.abs(a - med - j * lw) < 0.07] = MK_DASH_LANE
        if park > 0 or hw - outer > 0.5:
            c[np.abs(a - outer - 0.12) < 0.08] = MK_WHITE
        if centre == CENTRE_DOUBLE_YELLOW:
            c[np.abs(a - 0.16) < 0.065] = MK_YELLOW
        elif centre == CENTRE_DASHED_WHITE:
            c[a < 0.07] = MK_DASH_CENTRE
        elif centre == CENTRE_BARRIER:
            c[np.abs(a - (med - 0.25)) < 0.08] = MK_YELLOW
        out[k] = c
    return out.ravel()


_LUT_CACHE: dict = {}


def marking_lut(road_styles: np.ndarray) -> np.ndarray:
    """`road_marking_lut(road_styles)`, computed once per distinct table (`[S*LUT_N]` uint8; callers only read
    it)."""
    key = road_styles.tobytes()
    if key not in _LUT_CACHE:
        _LUT_CACHE[key] = road_marking_lut(road_styles)
    return _LUT_CACHE[key]


# ------------------------------------------------------------------------------------------- tone curve

TONE_N = 8192
"""entries of the tone table."""
TONE_SCALE = (TONE_N - 1) / 3.0
"""index scale of the tone table: it covers k·x in [0, 9] (sqrt in [0, 3]); brighter saturates anyway."""


def tone_lut() -> np.ndarray:
    """`[TONE_N]` uint8 sRGB level of the bin centres: 1 - exp(-k x), then the sRGB curve, rounded."""
    x = ((np.arange(TONE_N) + 0.5) / TONE_SCALE) ** 2   # k·x at the centre of each bin
    y = 1.0 - np.exp(-x)
    srgb = np.where(y <= 0.0031308, 12.92 * y, 1.055 * np.power(y, 1 / 2.4) - 0.055)
    return np.round(255.0 * np.clip(srgb, 0.0, 1.0)).astype(np.uint8)


TONE_LUT = tone_lut()
"""the tone table, `[TONE_N]` uint8 (adjacent entries differ by at most one level)."""
