"""Material ids of the procedural renderer and the per-triangle attribute layout.

Every triangle carries: a CARLA semantic `tag` (uint8), a `material` id (uint8, below), a linear-RGB `albedo [3]`
and 8 float `params` whose meaning depends on the material:

* ROAD (marked carriageway): (ax, ay, ux, uy, s0, length, style, 0) — segment start a, unit direction u,
  arc length s0 of a along the trimmed edge, the trimmed edge length, the road-style row (`MeshData.road_styles`).
* FACADE: (ox, oy, tx, ty, wall_length, base_z, building, 0) — wall start o, unit tangent t, wall length m,
  wall base height m, the building row (`MeshData.buildings`).
* FOLIAGE: (cx, cy, cz, 1/rx², 1/ry², 1/rz², 1, 0) for an ellipsoid crown centred at c with radii r, or
  (cx, cy, z0, 0, 0, 0, 2, k) for a cone on axis (cx, cy) with radius/height k — the shader uses the smooth
  analytic normal instead of the faceted triangle normal.
Other materials ignore params. The shader computes lane markings, crosswalks and windows from the hit point and
these parameters, so no texture images are needed.
"""
from __future__ import annotations

import numpy as np

ASPHALT = 0      # junction asphalt, no markings
ROAD = 1         # carriageway with markings (params: road frame)
SIDEWALK = 2     # paving slabs
KERB = 3         # kerb stones / sidewalk sides
GRASS = 4        # terrain in town
FACADE = 5       # building walls (params: facade frame)
ROOF = 6         # gable roofs (tiles)
FOLIAGE = 7      # tree crowns
BARK = 8         # trunks
METAL = 9        # poles, arms
SIGN = 10        # sign plates
PAINT = 11       # car paint
GLASS = 12       # car windows
TYRE = 13        # tyres
CONCRETE = 14    # barriers, monuments, flat roofs
WATER = 15       # water surface
LAMP = 16        # lamp heads / headlights (emissive at night)
HILL = 17        # terrain outside town
TAILLIGHT = 18   # red rear lights
FLATROOF = 19    # flat roof (gravel / membrane)

N_MATERIALS = 20
N_PARAMS = 8


def srgb_to_linear(c) -> np.ndarray:
    """sRGB 0..255 `[...,3]` -> linear 0..1 float32 (the renderer shades in linear light)."""
    c = np.asarray(c, dtype=np.float32) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)
