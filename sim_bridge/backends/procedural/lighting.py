"""The light of a weather preset: sun, sky, fog and wetness (`Lighting`), its packed form for the compiled
shader (`light_vector`), and the street lamps' light on the ground at night (`LampMap`).

Sun direction from `WeatherParams`: azimuth φ (degrees, counter-clockwise from world +x; CARLA's "-1 = map
default" maps to `DEFAULT_SUN_AZIMUTH_DEG`) and altitude θ: l = (cos θ cos φ, cos θ sin φ, sin θ). Radiance is
linear RGB; 1 ≈ a white surface in full sun at exposure 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim_bridge.weather import DEFAULT_SUN_AZIMUTH_DEG, WeatherParams

_F32 = np.float32


def _lerp(a, b, t):
    return np.asarray(a, _F32) + (np.asarray(b, _F32) - np.asarray(a, _F32)) * _F32(t)


def _smooth(e0: float, e1: float, x: float) -> float:
    t = min(max((x - e0) / (e1 - e0), 0.0), 1.0)
    return t * t * (3 - 2 * t)


@dataclass(frozen=True)
class Lighting:
    """Light of a weather preset (linear RGB radiance units; 1 ≈ a white surface in full sun at exposure 1).

    Attributes:
        sun_dir: `[3]` unit vector towards the sun (world).
        sun_rgb: `[3]` direct sun light (0 at night).
        zenith, horizon: `[3]` sky colours straight up and at the horizon.
        glow: `[3]` extra sky colour around the sun (sunsets).
        ambient: `[3]` sky light on an upward-facing surface.
        fog_rgb: `[3]` colour of the fog / haze.
        fog_beta: extinction, 1/m. fog_start: m before fog starts.
        cloud: cloud cover 0..1. wet: road wetness 0..1. puddles: 0..1. rain: 0..1.
        night: the sun is below the horizon (lamps, lit windows and headlights are on).
        exposure: camera exposure multiplier.
    """

    sun_dir: np.ndarray
    sun_rgb: np.ndarray
    zenith: np.ndarray
    horizon: np.ndarray
    glow: np.ndarray
    ambient: np.ndarray
    fog_rgb: np.ndarray
    fog_beta: float
    fog_start: float
    cloud: float
    wet: float
    puddles: float
    rain: float
    night: bool
    exposure: float


def lighting_from_weather(w: WeatherParams) -> Lighting:
    """Sun, sky, fog and wetness of a weather preset."""
    az = math.radians(w.sun_azimuth_angle if w.sun_azimuth_angle >= 0 else DEFAULT_SUN_AZIMUTH_DEG)
    alt_deg = float(w.sun_altitude_angle)
    alt = math.radians(alt_deg)
    sun_dir = np.array([math.cos(alt) * math.cos(az), math.cos(alt) * math.sin(az), math.sin(alt)], _F32)
    cloud = min(max(w.cloudiness / 100.0, 0.0), 1.0)
    rain = min(max(w.precipitation / 100.0, 0.0), 1.0)
    day = _smooth(-4.0, 10.0, alt_deg)           # 0 at night, 1 by 10° altitude
    low = 1.0 - _smooth(8.0, 40.0, alt_deg)      # 1 at sunset, 0 at noon
    sun_col = _lerp((1.0, 0.97, 0.92), (1.0, 0.55, 0.28), low)
    direct = 3.1 * day * (1.0 - 0.88 * cloud ** 1.5) * (1.0 - 0.5 * rain)
    zenith = _lerp((0.16, 0.33, 0.78), (0.17, 0.24, 0.48), low)
    horizon = _lerp((0.62, 0.74, 0.90), (0.95, 0.62, 0.38), low)
    glow = _lerp((0.25, 0.22, 0.18), (1.1, 0.5, 0.2), low) * _F32(1.0 - 0.8 * cloud)
    grey = _F32(0.62 - 0.25 * rain - 0.15 * low) * np.array([0.95, 0.97, 1.0], _F32)
    zenith = _lerp(zenith, grey * 0.9, cloud * 0.9)
    horizon = _lerp(horizon, grey, cloud * 0.85)
    night_z, night_h = np.array([0.004, 0.007, 0.018], _F32), np.array([0.025, 0.025, 0.035], _F32)
    zenith = _lerp(night_z, zenith, day)
    horizon = _lerp(night_h, horizon, day)
    glow = glow * _F32(day)
    ambient = (0.55 * zenith + 0.45 * horizon) * _F32(0.75 + 0.5 * cloud)
    ambient = ambient + _F32(1 - day) * np.array([0.02, 0.018, 0.015], _F32)  # city glow at night
    haze = 0.0012 + 0.00025 * w.fog_density + 0.006 * rain + (0.02 if w.dust_storm > 0 else 0.0)
    fog_rgb = horizon * _F32(0.95)
    if w.dust_storm > 0:
        fog_rgb = np.array([0.55, 0.42, 0.28], _F32) * _F32(max(day, 0.1))
    return Lighting(
        sun_dir=sun_dir, sun_rgb=(sun_col * _F32(direct)).astype(_F32), zenith=zenith.astype(_F32),
        horizon=horizon.astype(_F32), glow=glow.astype(_F32), ambient=ambient.astype(_F32), fog_rgb=fog_rgb.astype(_F32),
        fog_beta=float(haze), fog_start=float(min(w.fog_distance, 60.0)), cloud=cloud,
        wet=float(min(1.0, max(w.wetness, w.precipitation_deposits, 70.0 * rain) / 100.0)),
        puddles=float(min(1.0, w.precipitation_deposits / 100.0)), rain=rain, night=alt_deg < 0.0,
        exposure=1.0 if day > 0.5 else 2.2)


# ------------------------------------------------------------------------------------------- lighting vector
# `Lighting` packed into one float64 vector (one kernel argument instead of twenty). Values numpy uses as float32
# are stored exactly (float32 -> float64 is lossless) and cast back in the kernels, which freeze these offsets into
# their compiled code (see `shade_kernel` on numba's cache).
LV_SUN_DIR, LV_SUN_RGB, LV_ZENITH, LV_HORIZON, LV_GLOW, LV_AMBIENT, LV_FOG_RGB = 0, 3, 6, 9, 12, 15, 18
LV_CLOUD_RGB, LV_SUN_DISC = 21, 24          # cloud colour; sun disc radiance (6 · sun_rgb), both float32 in numpy
LV_FOG_START, LV_NEG_FOG_BETA = 27, 28
LV_CLOUD, LV_CLOUD_OFF = 29, 30             # cover 0..1; 1 - cover (the threshold of the cloud noise)
LV_WET, LV_WET_DIM = 31, 32                 # wetness; 1 - 0.45 wet (light on a wet road)
LV_PUDDLES, LV_PUDDLE_TH = 33, 34           # puddle amount; noise threshold 0.75 - 0.6 puddles
LV_EXPOSURE, LV_HAS_SUN, LV_NIGHT = 35, 36, 37
LV_ASPHALT_SPEC, LV_SIDEWALK_SPEC = 38, 39  # 0.02 + 0.35 wet; 0.15 wet
LV_SIZE = 40


def light_vector(L: Lighting) -> np.ndarray:
    """`Lighting` -> `[LV_SIZE]` float64 (layout: the `LV_*` offsets), with the derived terms numpy computes
    (cloud colour, sun disc, thresholds) evaluated here exactly as `shading` does."""
    v = np.zeros(LV_SIZE, np.float64)
    for off, arr in ((LV_SUN_DIR, L.sun_dir), (LV_SUN_RGB, L.sun_rgb), (LV_ZENITH, L.zenith), (LV_HORIZON, L.horizon),
                     (LV_GLOW, L.glow), (LV_AMBIENT, L.ambient), (LV_FOG_RGB, L.fog_rgb),
                     (LV_CLOUD_RGB, L.horizon * 1.05 + L.glow * 0.3 + L.sun_rgb * 0.05),
                     (LV_SUN_DISC, L.sun_rgb * 6.0)):
        a = np.asarray(arr)
        if a.dtype != np.float32:
            raise TypeError(f"Lighting arrays must be float32 (as lighting_from_weather makes them), got {a.dtype}")
        v[off:off + 3] = a
    v[LV_FOG_START] = L.fog_start
    v[LV_NEG_FOG_BETA] = -L.fog_beta
    v[LV_CLOUD] = L.cloud
    v[LV_CLOUD_OFF] = 1.0 - L.cloud
    v[LV_WET] = L.wet
    v[LV_WET_DIM] = 1.0 - 0.45 * L.wet
    v[LV_PUDDLES] = L.puddles
    v[LV_PUDDLE_TH] = 0.75 - 0.6 * L.puddles
    v[LV_EXPOSURE] = L.exposure
    v[LV_HAS_SUN] = 1.0 if L.sun_rgb.max() > 0 else 0.0
    v[LV_NIGHT] = 1.0 if L.night else 0.0
    v[LV_ASPHALT_SPEC] = 0.02 + 0.35 * L.wet
    v[LV_SIDEWALK_SPEC] = 0.15 * L.wet
    return v


class LampMap:
    """Ground irradiance of the street lamps at night, precomputed on a 0.5 m raster and sampled bilinearly.

    Args:
        bounds: (xmin, ymin, xmax, ymax) of the raster, m.
        lamps: `[K,3]` lamp-head positions, m.
        intensity: radiant intensity of one lamp (linear units × m²).
    """

    CELL = 0.5
    REACH = 25.0

    def __init__(self, bounds, lamps: np.ndarray, intensity: float = 14.0):
        x0, y0, x1, y1 = bounds
        self.x0, self.y0 = float(x0), float(y0)
        self.nx = int(math.ceil((x1 - x0) / self.CELL)) + 2
        self.ny = int(math.ceil((y1 - y0) / self.CELL)) + 2
        grid = np.zeros((self.nx, self.ny), np.float32)
        r = int(self.REACH / self.CELL)
        for lx, ly, lz in lamps:
            i0 = int((lx - self.x0) / self.CELL)
            j0 = int((ly - self.y0) / self.CELL)
            ii = np.clip(np.arange(i0 - r, i0 + r + 1), 0, self.nx - 1)
            jj = np.clip(np.arange(j0 - r, j0 + r + 1), 0, self.ny - 1)
            dx = (self.x0 + ii * self.CELL - lx)[:, None]
            dy = (self.y0 + jj * self.CELL - ly)[None, :]
            d2 = dx * dx + dy * dy + lz * lz
            # Point light above the ground: E = I cos(θ) / d² = I h / d³.
            grid[np.ix_(ii, jj)] += (intensity * lz / (d2 * np.sqrt(d2))).astype(np.float32)
        self.grid = grid.ravel()

    def sample(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Irradiance `[R]` at ground positions (x, y) `[R]` (0 outside the raster)."""
        u = (x - self.x0) * _F32(1 / self.CELL)
        v = (y - self.y0) * _F32(1 / self.CELL)
        inside = (u >= 0) & (v >= 0) & (u < self.nx - 1) & (v < self.ny - 1)
        u = np.where(inside, u, 0)
        v = np.where(inside, v, 0)
        i = u.astype(np.int32)
        j = v.astype(np.int32)
        a = u - i
        b = v - j
        k = i * self.ny + j
        g = self.grid
        top = np.take(g, k) * (1 - a) + np.take(g, k + self.ny) * a
        bot = np.take(g, k + 1) * (1 - a) + np.take(g, k + self.ny + 1) * a
        return np.where(inside, top * (1 - b) + bot * b, 0.0).astype(_F32)
