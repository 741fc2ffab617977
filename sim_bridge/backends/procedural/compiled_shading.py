"""The host side of the compiled shader: one function per `shade_kernel` kernel, with the reference's arguments.

Each function checks the arrays the kernel edits in place (C-contiguous, the dtype `Renderer.hits` makes),
allocates the outputs and calls the kernel; in the order `Renderer.render_group` needs them (R hits, P pixels of
the camera group):

* `gather_hits(origins, dirs, hi, t_hit, pid, nrm, pix_per_cam, norm, inv_norm, tables, params_t, albedo_t)` —
  kernel D, the twin of the numpy path of `Renderer.hits`: the `SurfaceHits` of the rays `hi` (bit-identical).
* `surface_detail(h, road_styles, buildings, L) -> (spec [R], emis [3,R])` — kernel A, the twin of
  `shading.surface_detail`: albedo, road-line tags, foliage normals edited in place; returns the specular strength
  and the emitted radiance (dense, 0 where nothing glows) instead of a list of emissions.
* `shadow_rays(h, sun_dir) -> (facing [R], fi [S], srays [S,6])` — kernel E, the numpy lines of
  `Renderer.shadows` before its Open3D occlusion query (bit-identical).
* `shade_srgb8(h, sun_lit, spec, emis, L, headlight, lamps, out, rows, semantic)` — kernel B, the twin of
  `shading.shade` followed by `shading.to_srgb8`: writes sRGB uint8 straight into `out[rows]` (and the tags into
  `semantic[rows]`).
* `sky_srgb8(dirs, inv_norm, rows, L, out, semantic)` — kernel C, the twin of `shading.sky` (with clouds) +
  `to_srgb8` for the rays that hit nothing (and sem.SKY into `semantic[rows]`).
"""
from __future__ import annotations

import numpy as np

from sim_bridge.backends.procedural import shade_kernel as K
from sim_bridge.backends.procedural.lighting import LampMap, Lighting, light_vector
from sim_bridge.backends.procedural.shading import SurfaceHits
from sim_bridge.backends.procedural.shading_tables import NOISE, TONE_LUT, marking_lut

_F32 = np.float32


def _need(a: np.ndarray, dtype, name: str) -> np.ndarray:
    """`a` itself when it is C-contiguous of `dtype` (arrays the kernels edit in place must be), else an error."""
    if not (isinstance(a, np.ndarray) and a.dtype == dtype and a.flags.c_contiguous):
        got = f"{a.dtype}, contiguous={a.flags.c_contiguous}" if isinstance(a, np.ndarray) else type(a).__name__
        raise TypeError(f"{name} must be a C-contiguous {np.dtype(dtype)} array (got {got}); build the hits with "
                        "Renderer.hits or convert with np.ascontiguousarray(..., dtype)")
    return a


def _c(a, dtype) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype)


def surface_detail(h: SurfaceHits, road_styles: np.ndarray, buildings: np.ndarray, L: Lighting,
                   lv: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Kernel A, the compiled twin of `shading.surface_detail`: edits `h.albedo [3,R]`, `h.tag [R]` (road lines)
    and the foliage normals `h.nx/ny/nz` in place.

    Args:
        h: the hits (float32 / int64 prim / uint8 material and tag, C-contiguous, as `Renderer.hits` makes them).
        road_styles: `[S,8]` float32, buildings: `[B,8]` float32 — the town's tables (`MeshData`).
        L: the lighting; `lv`: its `light_vector(L)` when the caller already has it.

    Returns:
        (spec `[R]` float32 specular strength 0..1, emis `[3,R]` float32 emitted linear radiance — the dense
        form of the reference's list of emissions; 0 where nothing glows).
    """
    lv = light_vector(L) if lv is None else lv
    R = len(h.x)
    spec = np.zeros(R, _F32)
    emis = np.zeros((3, R), _F32)
    if R == 0:
        return spec, emis
    K.detail_kernel(*(_need(getattr(h, k), _F32, f"h.{k}") for k in ("x", "y", "z", "nx", "ny", "nz")),
                   _need(h.prim, np.int64, "h.prim"), _need(h.material, np.uint8, "h.material"),
                   _need(h.tag, np.uint8, "h.tag"), _need(h.albedo, _F32, "h.albedo"), _need(h.params_t, _F32, "h.params_t"),
                   marking_lut(road_styles), _c(road_styles, _F32), _c(buildings, _F32), NOISE, lv, spec, emis)
    return spec, emis


def shade_srgb8(h: SurfaceHits, sun_lit: np.ndarray, spec: np.ndarray, emis: np.ndarray, L: Lighting,
                headlight: tuple[np.ndarray, np.ndarray] | None, lamps: LampMap | None, out: np.ndarray,
                rows: np.ndarray, semantic: np.ndarray | None = None, lv: np.ndarray | None = None) -> np.ndarray:
    """Kernel B, the compiled twin of `shading.shade` + `shading.to_srgb8`: shade the hits and write their sRGB
    bytes into `out[rows]` (and their tags into `semantic[rows]`).

    Args:
        h: the hits after `surface_detail` (R of them).
        sun_lit: `[R]` float32 0/1, the sun reaches the hit (`Renderer.shadows`).
        spec, emis: `[R]`, `[3,R]` float32 from `surface_detail`.
        L: the lighting. headlight: (position `[3]`, forward `[3]`, float32 as `ProceduralBackend.step` makes
            them) of the ego's headlights or None; lamps: the street-lamp raster or None (both used at night only,
            as in the reference).
        out: `[P,3]` uint8 image rows (all pixels of the cameras, row-major), written at `rows`.
        rows: `[R]` int64, the pixel of each hit (the `hi` of `Renderer.render_group`).
        semantic: `[P]` uint8 or None: receives `h.tag` at `rows` (the hit half of `Renderer.compose`'s labels).
        lv: `light_vector(L)` when the caller already has it.

    Returns:
        `out`.
    """
    lv = light_vector(L) if lv is None else lv
    if len(h.x) == 0:
        return out
    use_head = headlight is not None and L.night
    hp, hf = (headlight if use_head else (np.zeros(3), np.zeros(3)))
    use_lamps = lamps is not None and L.night
    grid = lamps.grid if use_lamps else np.zeros(4, _F32)
    gx0, gy0 = (_F32(lamps.x0), _F32(lamps.y0)) if use_lamps else (_F32(0), _F32(0))
    gnx, gny = (lamps.nx, lamps.ny) if use_lamps else (2, 2)
    sem_out = _need(semantic, np.uint8, "semantic") if semantic is not None else np.zeros(1, np.uint8)
    K.shade_hits_kernel(*(_need(getattr(h, k), _F32, f"h.{k}") for k in ("x", "y", "z", "dx", "dy", "dz", "nx", "ny", "nz", "dist")),
                  _need(h.tag, np.uint8, "h.tag"), _need(h.albedo, _F32, "h.albedo"), _c(sun_lit, _F32), _c(spec, _F32),
                  _c(emis, _F32), lv, NOISE, TONE_LUT, use_head, _c(hp, _F32), _c(hf, _F32), use_lamps,
                  _c(grid, _F32), gx0, gy0, int(gnx), int(gny), _need(out, np.uint8, "out"), _c(rows, np.int64),
                  sem_out, semantic is not None)
    return out


def sky_srgb8(dirs: list[np.ndarray], inv_norm: np.ndarray, rows: np.ndarray, L: Lighting, out: np.ndarray,
              semantic: np.ndarray | None = None, lv: np.ndarray | None = None) -> np.ndarray:
    """Kernel C: sky radiance (`shading.sky` with clouds) + `to_srgb8` of the rays `rows` (the misses), into
    `out[rows]` (and sem.SKY into `semantic[rows]`).

    Args:
        dirs: [dx, dy, dz], each `[P]` float32, the rays' directions (any length; `inv_norm` makes them unit).
        inv_norm: `[P]` float32, 1 / |direction|.
        rows: `[M]` int64 rays to fill. L: the lighting. out: `[P,3]` uint8. semantic: `[P]` uint8 or None.
        lv: `light_vector(L)` when the caller already has it.
    """
    lv = light_vector(L) if lv is None else lv
    if len(rows):
        sem_out = _need(semantic, np.uint8, "semantic") if semantic is not None else np.zeros(1, np.uint8)
        K.sky_kernel(*(_need(d, _F32, "dirs[i]") for d in dirs), _need(inv_norm, _F32, "inv_norm"), _c(rows, np.int64),
                    lv, NOISE, TONE_LUT, _need(out, np.uint8, "out"), sem_out, semantic is not None)
    return out


def gather_hits(origins: np.ndarray, dirs: list[np.ndarray], hi: np.ndarray, t_hit: np.ndarray, pid: np.ndarray,
                nrm: np.ndarray, pix_per_cam: int, norm: np.ndarray, inv_norm: np.ndarray, tables,
                params_t: np.ndarray, albedo_t: np.ndarray) -> SurfaceHits:
    """Kernel D, the compiled twin of `Renderer.hits`: hit points, unit directions, camera-facing normals and
    the gathered per-triangle attributes of the rays `hi`, in one pass.

    Args:
        origins: `[N,3]` float32 camera centres; dirs: [dx, dy, dz] `[P]` float32 ray components (camera-z 1),
            P = N · pix_per_cam; hi: `[R]` int64 hit rays; t_hit: `[P]` float32; pid: `[P]` uint32 triangle ids;
            nrm: `[P,3]` float32 triangle normals (as cast); norm, inv_norm: `[P]` float32 |direction| and inverse.
        tables: the renderer's `MeshData` tables (`material`, `tag` `[T]` uint8).
        params_t: `[8,T]` float32, albedo_t: `[3,T]` float32 — the renderer's transposed tables.

    Returns:
        the `SurfaceHits` of the R rays (equal to what `Renderer.hits` returns).
    """
    R = len(hi)
    f = [np.empty(R, _F32) for _ in range(10)]
    prim = np.empty(R, np.int64)
    material = np.empty(R, np.uint8)
    tag = np.empty(R, np.uint8)
    albedo = np.empty((3, R), _F32)
    if R:
        K.hits_kernel(_c(origins, _F32), *(_need(d, _F32, "dirs[i]") for d in dirs), _c(hi, np.int64),
                     _need(t_hit, _F32, "t_hit"), _need(pid, np.uint32, "pid"), _need(nrm, _F32, "nrm"),
                     int(pix_per_cam), _need(norm, _F32, "norm"), _need(inv_norm, _F32, "inv_norm"),
                     _need(tables.material, np.uint8, "tables.material"), _need(tables.tag, np.uint8, "tables.tag"),
                     _need(albedo_t, _F32, "albedo_t"), *f, prim, material, tag, albedo)
    x, y, z, dx, dy, dz, nx, ny, nz, dist = f
    return SurfaceHits(x=x, y=y, z=z, dx=dx, dy=dy, dz=dz, nx=nx, ny=ny, nz=nz, dist=dist, prim=prim,
                       material=material, tag=tag, albedo=albedo, params_t=params_t)


def shadow_rays(h: SurfaceHits, sun_dir: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kernel E, the numpy lines of `Renderer.shadows` before its occlusion query: which hits face the sun, and a
    ray towards the sun from each (3 cm off the surface; foliage 1.2 m further towards the sun).

    Args:
        h: the hits after `surface_detail` (foliage normals final). sun_dir: `[3]` float32 unit vector.

    Returns:
        (facing `[R]` bool, fi `[S]` int64 the facing hits, srays `[S,6]` float32 origin + direction for Open3D).
    """
    R = len(h.x)
    facing = np.empty(R, np.bool_)
    fi = np.empty(R, np.int64)
    srays = np.empty((R, 6), _F32)
    S = 0
    if R:
        S = K.shadow_rays_kernel(*(_need(getattr(h, k), _F32, f"h.{k}") for k in ("x", "y", "z", "nx", "ny", "nz")),
                                _need(h.material, np.uint8, "h.material"), _c(sun_dir, _F32), facing, fi, srays)
    return facing, fi[:S], srays[:S]


def dense_emissions(emis: list, R: int) -> np.ndarray:
    """The reference's list of emissions (hit indices, `[3]` or `[3,k]`) as a dense `[3,R]` float32 array."""
    out = np.zeros((3, R), _F32)
    for idx, e in emis:
        out[:, idx] = e[:, None] if np.ndim(e) == 1 else e
    return out
