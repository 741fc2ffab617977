"""Parity and speed of the compiled shader (`shade_kernel`) against its numpy reference (`shading`).

`tick_hits(backend)` captures what a `Renderer` had before shading one tick (per camera group); `reference_srgb8`
and `kernel_srgb8` shade such a capture with either path (tests/sim_bridge/test_shade_kernel.py compares them); `bench` times
both on the same Town03 tick:

    python -m sim_bridge.backends.procedural.shade_bench [--weather ClearNoon HardRainNight ...]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time
from dataclasses import dataclass

import numpy as np

from sim_bridge import semantics as sem
from sim_bridge.backends.base import EpisodeSpec
from sim_bridge.backends.procedural import materials as M
from sim_bridge.backends.procedural import shading
from sim_bridge.backends.procedural.compiled_shading import (
    dense_emissions,
    gather_hits,
    shade_srgb8,
    shadow_rays,
    sky_srgb8,
    surface_detail,
)
from sim_bridge.backends.procedural.lighting import LampMap, Lighting, light_vector
from sim_bridge.backends.procedural.shading import SurfaceHits
from sim_bridge.backends.procedural.simulator import ProceduralBackend
from sim_bridge.rig import Rig

_F32 = np.float32


@dataclass(eq=False)
class TickHits:
    """One tick's ray casts, ready to shade (what `Renderer.render_group` has before `surface_detail`), for all
    cameras as one group.

    Attributes:
        hits: the `SurfaceHits` before surface detail (copy it before shading: both paths edit it in place).
        sun_lit: `[R]` float32 0/1. hi: `[R]` int64 hit pixels. mi: `[M]` int64 sky pixels. P: pixels.
        t_hit: `[P]` float32. dirs: [dx, dy, dz] `[P]` float32. inv_norm: `[P]` float32.
        lighting, headlight, lamps: the light of the tick. road_styles, buildings: the town's tables.
        hits_args: the arguments the renderer passed to `Renderer.hits` (origins, dirs, hi, t_hit, pid, nrm, N,
            norm, inv_norm). tables, albedo_t: the renderer's `MeshData` tables and `[3,T]` albedo table.
        rendered_rgb, rendered_semantic: `[P,3]`, `[P]` uint8, what the renderer made of this group.
    """

    hits: SurfaceHits
    sun_lit: np.ndarray
    hi: np.ndarray
    mi: np.ndarray
    P: int
    t_hit: np.ndarray
    dirs: list
    inv_norm: np.ndarray
    lighting: Lighting
    headlight: tuple | None
    lamps: LampMap | None
    road_styles: np.ndarray
    buildings: np.ndarray
    hits_args: tuple = ()
    tables: object = None
    albedo_t: np.ndarray | None = None
    rendered_rgb: np.ndarray | None = None
    rendered_semantic: np.ndarray | None = None

    def fresh_hits(self) -> SurfaceHits:
        """A copy of `hits` whose in-place-edited arrays (albedo, tag, normals) are new."""
        h = copy.copy(self.hits)
        for k in ("tag", "albedo", "nx", "ny", "nz"):
            setattr(h, k, getattr(self.hits, k).copy())
        return h


def tick_hits(backend) -> list[TickHits]:
    """Render the next frame of a started `ProceduralBackend` (`step()`, its camera groups one after the other)
    and keep, per camera group, what its `Renderer` had before shading: the hits from `Renderer.hits` (copied
    before surface detail edits them) and the sun visibility from `Renderer.shadows` (both methods wrapped for
    this one call). Returns one `TickHits` per group of `Renderer.groups`."""
    rd = backend.renderer
    got: list = []
    hits_fn, shadows_fn = rd.hits, rd.shadows

    def hits(*args, **kw):
        h = hits_fn(*args, **kw)
        c = copy.copy(h)
        for k in ("tag", "albedo", "nx", "ny", "nz"):
            setattr(c, k, getattr(h, k).copy())
        got.append([c, None, args])
        return h

    def shadows(*args, **kw):
        out = shadows_fn(*args, **kw)
        got[-1][1] = out[0].copy()
        return out

    rd.hits, rd.shadows = hits, shadows
    try:
        frame = backend.step()
    finally:
        del rd.hits, rd.shadows
    if len(got) != len(rd.groups):
        raise RuntimeError(f"captured {len(got)} camera groups, expected {len(rd.groups)}: Renderer.render_group no "
                           "longer calls hits / shadows once per group; update tick_hits")
    L = backend.lighting
    head = None
    if L.night:  # as ProceduralBackend.step
        fwd = frame.ego_to_world[:3, 0]
        head = ((frame.ego_to_world[:3, 3] + fwd * 2.3 + np.array([0, 0, 0.7])).astype(_F32), fwd.astype(_F32))
    out = []
    HW = rd.rays.H * rd.rays.W
    for cams, (h, lit, args) in zip(rd.groups, got):
        g = slice(cams.start, cams.stop)
        t_hit = np.ascontiguousarray(frame.depth[g].reshape(-1))
        _, _, dirs = rd.rays.world(frame.cam_to_world, cams)
        out.append(TickHits(h, lit, np.flatnonzero(t_hit < np.inf), np.flatnonzero(t_hit == np.inf), len(t_hit),
                            t_hit, dirs, rd.rays.inv_norm[cams.start * HW:cams.stop * HW], L, head, backend.lamps,
                            rd.tables.road_styles, rd.tables.buildings, args, rd.tables, rd.albedo_t,
                            frame.rgb[g].reshape(-1, 3), frame.semantic[g].reshape(-1)))
    return out


def reference_srgb8(t: TickHits, h: SurfaceHits | None = None):
    """The numpy path (`shading`) on `t`: (rgb `[P,3]` uint8, hits after detail, spec `[R]`, emis `[3,R]`,
    semantic `[P]` uint8)."""
    h = t.fresh_hits() if h is None else h
    emis, spec = shading.surface_detail(h, t.road_styles, t.buildings, t.lighting)
    col = shading.shade(h, t.sun_lit, emis, spec, t.lighting, t.headlight, t.lamps)
    lin = np.empty((3, t.P), _F32)
    lin[:, t.hi] = col
    if len(t.mi):
        lin[:, t.mi] = shading.sky(*(np.take(d, t.mi) * np.take(t.inv_norm, t.mi) for d in t.dirs), t.lighting)
    rgb = shading.to_srgb8(lin, t.lighting.exposure, np.empty((t.P, 3), np.uint8))
    semantic = np.full(t.P, sem.SKY, np.uint8)
    semantic[t.hi] = h.tag
    return rgb, h, spec, dense_emissions(emis, len(h.x)), semantic


def kernel_srgb8(t: TickHits, h: SurfaceHits | None = None):
    """The compiled path on `t`: (rgb `[P,3]` uint8, hits after detail, spec `[R]`, emis `[3,R]`, semantic `[P]`)."""
    h = t.fresh_hits() if h is None else h
    lv = light_vector(t.lighting)
    spec, emis = surface_detail(h, t.road_styles, t.buildings, t.lighting, lv)
    rgb = np.empty((t.P, 3), np.uint8)
    semantic = np.empty(t.P, np.uint8)
    shade_srgb8(h, t.sun_lit, spec, emis, t.lighting, t.headlight, t.lamps, rgb, t.hi, semantic, lv)
    sky_srgb8(t.dirs, t.inv_norm, t.mi, t.lighting, rgb, semantic, lv)
    return rgb, h, spec, emis, semantic


def _numpy_tick(rd, t: TickHits, _h=None):
    """The renderer's numpy path of one group after the ray casts: `hits`, surface detail, the shadow rays'
    numpy lines (the occlusion query itself is left out: it is the same in both paths), shade, compose."""
    h = rd.hits(*t.hits_args)
    emis, spec = shading.surface_detail(h, t.road_styles, t.buildings, t.lighting)
    sd = t.lighting.sun_dir
    facing = (h.nx * sd[0] + h.ny * sd[1] + h.nz * sd[2]) > 0.0
    fi = np.flatnonzero(facing)
    srays = np.empty((len(fi), 6), _F32)
    lift = np.where(np.take(h.material, fi) == M.FOLIAGE, _F32(1.2), _F32(0.0))
    for c, n in enumerate((h.x, h.y, h.z)):
        srays[:, c] = np.take(n, fi) + np.take((h.nx, h.ny, h.nz)[c], fi) * _F32(0.03) + lift * sd[c]
    srays[:, 3:] = sd
    col = shading.shade(h, t.sun_lit, emis, spec, t.lighting, t.headlight, t.lamps)
    _, dirs, hi, t_hit, _, _, _, _, inv_norm = t.hits_args
    return rd.compose(dirs, t_hit, hi, col, h.tag, t.lighting, inv_norm)


def _kernel_tick(rd, t: TickHits, _h=None):
    """The same work as `_numpy_tick` with the kernels D, A, E, B, C."""
    origins, dirs, hi, t_hit, pid, nrm, N, norm, inv_norm = t.hits_args
    h = gather_hits(origins, dirs, hi, t_hit, pid, nrm, len(t_hit) // N, norm, inv_norm, t.tables,
                    t.hits.params_t, t.albedo_t)
    lv = light_vector(t.lighting)
    spec, emis = surface_detail(h, t.road_styles, t.buildings, t.lighting, lv)
    shadow_rays(h, t.lighting.sun_dir)
    rgb = np.empty((t.P, 3), np.uint8)
    semantic = np.empty(t.P, np.uint8)
    shade_srgb8(h, t.sun_lit, spec, emis, t.lighting, t.headlight, t.lamps, rgb, hi, semantic, lv)
    sky_srgb8(dirs, inv_norm, np.flatnonzero(t_hit == np.inf), t.lighting, rgb, semantic, lv)
    return rgb, semantic


def bench(town: str = "Town03", weather: str = "ClearNoon", size: int = 256, repeats: int = 7, seed: int = 0) -> dict:
    """CPU time (time.process_time, median of `repeats`) of the numpy and the compiled paths on the same ray casts
    of one 6-camera tick (`size`×`size`, capture rig; the renderer's camera groups one after the other).

    Two comparisons: "shade" — surface detail + shade + sky + tone map of given hits (`reference_srgb8` vs
    `kernel_srgb8`); "tick" — everything between the ray casts of `Renderer.render_group` (hit gathering,
    surface detail, the shadow rays' construction, shade, compose) except the Open3D queries themselves.

    Returns a dict of ms per tick, the ratios, hits, pixels and the largest image difference (uint8 levels).
    """
    with ProceduralBackend(town, weather, Rig.resolve("capture", size, size), seed=seed) as b:
        b.start_episode(EpisodeSpec(0, 11))
        rd = b.renderer
        groups = tick_hits(b)

    def timed(fn, arg):
        for t in groups:
            fn(arg(t), t, t.fresh_hits())  # warm-up (and compile)
        ts = []
        for _ in range(repeats):
            hs = [t.fresh_hits() for t in groups]  # the copies are not timed
            t0 = time.process_time()
            for t, h in zip(groups, hs):
                fn(arg(t), t, h)
            ts.append(time.process_time() - t0)
        return 1e3 * float(np.median(ts))

    def first(t):
        return t

    s_np = timed(lambda t, _, h: reference_srgb8(t, h), first)
    s_k = timed(lambda t, _, h: kernel_srgb8(t, h), first)
    t_np = timed(_numpy_tick, lambda t: rd)
    t_k = timed(_kernel_tick, lambda t: rd)
    diff = max(int(np.abs(_numpy_tick(rd, t)[0].astype(int) - _kernel_tick(rd, t)[0].astype(int)).max()) for t in groups)
    return {"town": town, "weather": weather, "size": size, "groups": len(groups),
            "hits": sum(len(t.hi) for t in groups), "pixels": sum(t.P for t in groups),
            "shade_numpy_ms": round(s_np, 2), "shade_kernel_ms": round(s_k, 2), "shade_speedup": round(s_np / s_k, 2),
            "tick_numpy_ms": round(t_np, 2), "tick_kernel_ms": round(t_k, 2), "tick_speedup": round(t_np / t_k, 2),
            "max_level_diff": diff}


def _main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Time the numpy and the compiled shading of one tick (single thread).")
    ap.add_argument("--town", default="Town03")
    ap.add_argument("--weather", nargs="+", default=["ClearNoon"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core: CPU time is one thread's work
    for w in args.weather:
        print(json.dumps(bench(args.town, w, args.size, args.repeats)))


if __name__ == "__main__":
    _main()
