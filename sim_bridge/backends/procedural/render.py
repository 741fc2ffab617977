"""Ray casting of a rig against the town (Open3D `RaycastingScene`, Embree on the CPU) and per-pixel shading.

Per tick: all cameras' primary rays (`camera_rays`) go into ONE `cast_rays` call on the static town; moving cars
live in a small second scene rebuilt per tick, cast only for the pixels covered by the cars' projected bounding
boxes (`car_culling`), and merged by nearest hit; one `test_occlusions` call (per scene) checks the sun for lit
hit points.

The terrain beyond the town (hills, water: thousands of large triangles in a ring around a hole) is kept out of the
town's scene: in one BVH its nodes overlap the whole town and cost every ray (~27% of the primary cast time on
Town03). It lives in an *outer* scene made of the triangles that lie entirely outside the town's land rectangle
(`inner_rect`). A camera inside the rectangle can only reach them after its ray leaves the rectangle, so the
outer scene is cast only for rays whose town hit lies outside the rectangle or that missed the town (mostly sky),
and a shadow ray is tested against it only if it could still be below the outer geometry's top where it leaves
the rectangle. Both are exact: the nearest hit and the sun test are those of the whole town in one scene.

Parallelism: Open3D's queries hold the GIL but spread their rays over all cores (TBB, `nthreads=0`), and the
compiled shading kernels (`shade_kernel`) split their hits over numba's threads, so every stage uses all cores and
the cameras are rendered as ONE group per tick (up to `_GROUP_PIXELS` pixels; bigger rigs in several groups, one
after the other): fewer, larger queries beat worker threads, which would only queue for the GIL. Every pixel's
computation is independent of the others, so the images are bit-identical whatever the grouping or thread count.
The capture process keeps freed memory for reuse (`keep_freed_memory`): the per-tick buffers of tens of MB would
otherwise be mapped and unmapped by glibc every tick, and their page faults cost ~5% of a tick.

The hit parameter `t_hit` of a ray is the planar z-depth of its pixel (the rays' camera-z component is 1, see
`camera_rays`).
"""
from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass, field

import numba
import numpy as np
import open3d as o3d

from sim_bridge import semantics as sem
from sim_bridge.backends.procedural import compiled_shading as cs
from sim_bridge.backends.procedural import materials as M
from sim_bridge.backends.procedural import shading
from sim_bridge.backends.procedural.camera_rays import CameraRays
from sim_bridge.backends.procedural.car_culling import CarShadowGrid, car_pixel_mask
from sim_bridge.backends.procedural.car_meshes import CarFleet
from sim_bridge.backends.procedural.lighting import LampMap, Lighting, light_vector
from sim_bridge.backends.procedural.meshes import MeshData, concat_tables
from sim_bridge.backends.procedural.scenes import commit_scene, make_scene, outside_rect, rays_tensor, reorder_triangles
from sim_bridge.rig import Rig

_F32 = np.float32


@numba.njit(nogil=True, cache=True)
def _outside_hits(t_hit, dx, dy, origins, P, x0, y0, x1, y1):  # pragma: no cover - compiled
    """Indices `[K]` of the rays (camera k owns rays [k·P, (k+1)·P)) whose hit point (origin + t·d, float32) is not
    strictly inside the rectangle (x0, y0, x1, y1): misses (t = inf, NaN for an axis-parallel ray) included; all
    rays of a camera standing outside it."""
    out = np.empty(len(t_hit), np.int64)
    K = 0
    for n in range(origins.shape[0]):
        ox, oy = origins[n, 0], origins[n, 1]
        cam_inside = x0 < ox < x1 and y0 < oy < y1
        for k in range(n * P, (n + 1) * P):
            if cam_inside:
                t = t_hit[k]
                hx = dx[k] * t + ox
                hy = dy[k] * t + oy
                if hx > x0 and hx < x1 and hy > y0 and hy < y1:
                    continue
            out[K] = k
            K += 1
    return out[:K]


@dataclass
class RenderOutput:
    """All cameras of one tick.

    Attributes:
        rgb: `[N,H,W,3]` uint8. depth: `[N,H,W]` float32 planar z-depth, m (inf: sky). semantic: `[N,H,W]` uint8.
        sun_lit: `[N,H,W]` bool, the pixel's surface faces the sun and the shadow ray reached it.
        sun_facing: `[N,H,W]` bool, the surface faces the sun (shadow rays were cast for these).
        timing: seconds spent in "raycast" (ray generation + the primary cast of the static scene), "cars" (the
            cars' scene: build, cast, shadow test), "shadow" (static shadow rays) and "shade" (everything else);
            wall-clock, summed over the camera groups.
    """

    rgb: np.ndarray
    depth: np.ndarray
    semantic: np.ndarray
    sun_lit: np.ndarray
    sun_facing: np.ndarray
    timing: dict = field(default_factory=dict)


SHADERS = ("compiled", "numpy")
_GROUP_PIXELS = 1 << 20  # pixels per camera group (1M rays: ~100 MB of per-ray buffers)


class Renderer:
    """Renders a rig against a static town mesh plus an episode's moving cars.

    Args:
        static: the town's `MeshData` (its RaycastingScene is built once, here).
        rig: the cameras.
        inner_rect: (x0, y0, x1, y1) of the town's land, m, or None. Triangles entirely outside it go into a
            separate outer scene (module docstring); `static` is then held with the town's triangles first
            (`self.static`, same triangles and attributes, reordered) so one primitive id indexes both.
        shader: ``"compiled"`` (default: the numba kernels of `shade_kernel`, one pass per hit) or ``"numpy"``
            (`shading`, the readable vectorised reference the kernels are tested against; ~3× the CPU time).

    Attributes:
        tables: the per-triangle tables shading reads (`static`'s, followed by the fleet's cars once set).
        params_t, albedo_t: `[8,T]` and `[3,T]` float32, `tables.params` and `tables.albedo` transposed (the
            shaders gather one column per hit).
        groups: the camera ranges rendered together (`render_group`), one for a usual rig.
    """

    def __init__(self, static: MeshData, rig: Rig, inner_rect: tuple[float, float, float, float] | None = None,
                 shader: str = "compiled"):
        if shader not in SHADERS:
            raise ValueError(f"shader must be one of {SHADERS}, got {shader!r}")
        self.shader = shader
        self.inner_rect = None
        self.outer = None
        self.n_inner = static.n_triangles
        if inner_rect is not None:
            out = outside_rect(static, inner_rect)
            if out.any() and not out.all():
                static = reorder_triangles(static, np.concatenate([np.flatnonzero(~out), np.flatnonzero(out)]))
                self.n_inner = int((~out).sum())
                self.inner_rect = tuple(float(v) for v in inner_rect)
                self.outer = make_scene(static, slice(self.n_inner, None))
                self.outer_top = float(static.vertices[static.triangles[self.n_inner:]][..., 2].max())
                commit_scene(self.outer)
        self.static = static
        self.scene = make_scene(static, slice(0, self.n_inner))
        self.rays = CameraRays(rig)
        self.rig = rig
        self.fleet: CarFleet | None = None
        self.tables = static
        self.params_t = np.ascontiguousarray(static.params.T)
        self.albedo_t = np.ascontiguousarray(static.albedo.T)
        # Camera groups: contiguous ranges of cameras of at most _GROUP_PIXELS pixels (all of a usual rig).
        per_group = max(1, _GROUP_PIXELS // (rig.width * rig.height))
        self.groups = [range(a, min(a + per_group, len(rig))) for a in range(0, len(rig), per_group)]
        # Embree threads per query (0: all cores).
        self.embree_threads = 0
        commit_scene(self.scene)
        keep_freed_memory()

    def set_fleet(self, fleet: CarFleet | None) -> None:
        """Use `fleet` for the moving cars (their attribute tables are appended to the static ones once)."""
        self.fleet = fleet if fleet is not None and len(fleet) else None
        self.tables = concat_tables(self.static, self.fleet.mesh) if self.fleet is not None else self.static
        self.params_t = np.ascontiguousarray(self.tables.params.T)
        self.albedo_t = np.ascontiguousarray(self.tables.albedo.T)

    def cast_primary(self, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The raw raycaster on the town's scene (without the outer terrain): (t_hit `[R]`, primitive ids `[R]`
        uint32, normals `[R,3]`)."""
        r = self.scene.cast_rays(rays_tensor(rays), nthreads=self.embree_threads)
        return r["t_hit"].numpy(), r["primitive_ids"].numpy(), r["primitive_normals"].numpy()

    def render(self, cam_to_world: np.ndarray, lighting: Lighting, car_poses: np.ndarray | None = None,
               headlight=None, lamps: LampMap | None = None) -> RenderOutput:
        """Render all cameras at poses `cam_to_world [N,4,4]` (float64, OpenCV camera -> world).

        `car_poses [K,3]` (x, y, yaw) of the fleet's cars; at night `headlight` (position [3], forward [3]) of the
        ego and the street `lamps`.
        """
        t0 = time.perf_counter()
        cars = None
        if self.fleet is not None and car_poses is not None:
            # The cars' scene is built once per tick and shared by the camera groups.
            car_scene = o3d.t.geometry.RaycastingScene()
            car_scene.add_triangles(o3d.core.Tensor(self.fleet.vertices(car_poses)), o3d.core.Tensor(self.fleet.mesh.triangles))
            commit_scene(car_scene)
            cars = (car_scene, self.fleet.boxes(car_poses), CarShadowGrid(car_poses, lighting.sun_dir, self.fleet.HEIGHT))
        t_cars = time.perf_counter() - t0
        args = (cam_to_world, lighting, cars, headlight, lamps)
        outs = [self.render_group(g, *args) for g in self.groups]
        timing = {k: sum(o.timing[k] for o in outs) for k in outs[0].timing}
        timing["cars"] += t_cars
        if len(outs) == 1:
            return RenderOutput(outs[0].rgb, outs[0].depth, outs[0].semantic, outs[0].sun_lit, outs[0].sun_facing, timing)
        return RenderOutput(*(np.concatenate([getattr(o, f) for o in outs]) for f in
                              ("rgb", "depth", "semantic", "sun_lit", "sun_facing")), timing)

    def render_group(self, cams: range, cam_to_world, lighting, cars, headlight, lamps) -> RenderOutput:
        """Render the cameras `cams` (a contiguous range) of the rig; `cars` = (scene, boxes, poses) or None."""
        N, H, W = len(cams), self.rig.height, self.rig.width
        P = H * W
        norm = self.rays.norm[cams.start * P:cams.stop * P]
        inv_norm = self.rays.inv_norm[cams.start * P:cams.stop * P]
        t0 = time.perf_counter()
        rays, origins, dirs = self.rays.world(cam_to_world, cams)
        t_hit, pid, nrm = self.cast_primary(rays)
        if self.outer is not None:
            self._cast_outer(rays, origins, dirs, t_hit, pid, nrm)
        t1 = time.perf_counter()
        car_scene, car_shadows = self._cast_cars(rays, cam_to_world[cams.start:cams.stop], cams, cars, t_hit, pid, nrm)
        t2 = time.perf_counter()
        hi, mi = _hits_and_misses(t_hit)
        h = self.hits(origins, dirs, hi, t_hit, pid, nrm, N, norm, inv_norm)
        compiled = self.shader == "compiled"
        if compiled:
            lv = light_vector(lighting)
            spec, emis = cs.surface_detail(h, self.tables.road_styles, self.tables.buildings, lighting, lv)
        else:
            emis, spec = shading.surface_detail(h, self.tables.road_styles, self.tables.buildings, lighting)
        t3 = time.perf_counter()
        lit, facing, t_car_shadow = self.shadows(h, lighting, car_scene, car_shadows)
        t4 = time.perf_counter()
        if compiled:
            rgb, semantic = np.empty((N * P, 3), np.uint8), np.empty(N * P, np.uint8)
            cs.shade_srgb8(h, lit, spec, emis, lighting, headlight, lamps, rgb, hi, semantic, lv)
            cs.sky_srgb8(dirs, inv_norm, mi, lighting, rgb, semantic, lv)
        else:
            col = shading.shade(h, lit, emis, spec, lighting, headlight, lamps)
            rgb, semantic = self.compose(dirs, t_hit, hi, col, h.tag, lighting, inv_norm)
        sun_lit, sun_facing = np.empty(N * H * W, bool), np.empty(N * H * W, bool)
        _scatter_sun_flags(hi, mi, lit, facing, sun_lit, sun_facing)
        t5 = time.perf_counter()
        return RenderOutput(rgb.reshape(N, H, W, 3), t_hit.reshape(N, H, W), semantic.reshape(N, H, W),
                            sun_lit.reshape(N, H, W), sun_facing.reshape(N, H, W),
                            {"raycast": t1 - t0, "cars": (t2 - t1) + t_car_shadow, "shadow": (t4 - t3) - t_car_shadow,
                             "shade": (t3 - t2) + (t5 - t4)})

    def _cast_outer(self, rays, origins, dirs, t_hit, pid, nrm) -> None:
        """Cast the rays that may reach the outer terrain (their town hit lies outside the land rectangle, they
        missed the town, or their camera stands outside it) against the outer scene; merge nearer hits into
        (t_hit, pid, nrm) in place (outer primitive ids follow the town's)."""
        sub = _outside_hits(t_hit, dirs[0], dirs[1], origins, self.rays.H * self.rays.W, *self.inner_rect)
        if not len(sub):
            return
        r = self.outer.cast_rays(rays_tensor(np.take(rays, sub, axis=0)), nthreads=self.embree_threads)
        tc = r["t_hit"].numpy()
        better = np.flatnonzero(tc < np.take(t_hit, sub))
        k = sub[better]
        t_hit[k] = tc[better]
        pid[k] = r["primitive_ids"].numpy()[better] + np.uint32(self.n_inner)
        nrm[k] = r["primitive_normals"].numpy()[better]

    def _cast_cars(self, rays, cam_to_world, cams, cars, t_hit, pid, nrm):
        """Cast the pixels of the cameras `cams` (poses `cam_to_world [n,4,4]`) the cars may cover against the
        tick's cars-only scene (`cars` = (scene, boxes, `CarShadowGrid`) or None); merge nearer hits into (t_hit,
        pid, nrm) in place (car triangle ids follow the static ones). Returns (the cars' scene, their shadow grid)
        or (None, None)."""
        if cars is None:
            return None, None
        car_scene, boxes, car_shadows = cars
        sub = np.flatnonzero(car_pixel_mask(boxes, cam_to_world, self.rig, cams, self.rays.dirs_cam).reshape(-1))
        if len(sub):
            rc = car_scene.cast_rays(rays_tensor(np.take(rays, sub, axis=0)), nthreads=self.embree_threads)
            tc = rc["t_hit"].numpy()
            better = np.flatnonzero(tc < np.take(t_hit, sub))
            k = sub[better]
            t_hit[k] = tc[better]
            pid[k] = rc["primitive_ids"].numpy()[better] + np.uint32(self.static.n_triangles)
            nrm[k] = rc["primitive_normals"].numpy()[better]
        return car_scene, car_shadows

    def hits(self, origins, dirs, hi, t_hit, pid, nrm, N, norm, inv_norm) -> shading.SurfaceHits:
        """Hit points, unit directions, viewer-facing normals and gathered attributes of the rays `hi`.

        `origins [N,3]` per camera, `dirs` the [dx, dy, dz] ray components `[P]` (camera-z 1), `nrm [P,3]`;
        `norm`, `inv_norm` `[P]` the rays' |direction| and its inverse.
        """
        if self.shader == "compiled":
            return cs.gather_hits(origins, dirs, hi, t_hit, pid, nrm, self.rays.H * self.rays.W, norm, inv_norm,
                                  self.tables, self.params_t, self.albedo_t)
        tb = self.tables
        th = np.take(t_hit, hi)
        ph = np.take(pid, hi).astype(np.int64)
        inv = np.take(inv_norm, hi)
        # Hits of each camera: `hi` is sorted, so split it at the camera boundaries (no integer division).
        bounds = np.concatenate([[0], np.searchsorted(hi, np.arange(1, N) * (self.rays.H * self.rays.W)), [len(hi)]])
        rx, ry, rz = (np.take(d, hi) for d in dirs)
        flat = nrm.reshape(-1)
        i3 = hi * 3
        nx, ny, nz = np.take(flat, i3), np.take(flat, i3 + 1), np.take(flat, i3 + 2)
        flip = np.flatnonzero(nx * rx + ny * ry + nz * rz > 0)  # make normals face the camera
        nx[flip] = -nx[flip]
        ny[flip] = -ny[flip]
        nz[flip] = -nz[flip]
        albedo = np.empty((3, len(hi)), _F32)
        for c in range(3):
            np.take(self.albedo_t[c], ph, out=albedo[c])
        # Hit points: r·t plus the camera origin added per camera segment (in place; no per-hit origin gather).
        pts = []
        for i, r in enumerate((rx, ry, rz)):
            p = r * th
            for n in range(N):
                p[bounds[n]:bounds[n + 1]] += origins[n, i]
            pts.append(p)
        return shading.SurfaceHits(
            x=pts[0], y=pts[1], z=pts[2], dx=rx * inv, dy=ry * inv, dz=rz * inv,
            nx=nx, ny=ny, nz=nz, dist=th * np.take(norm, hi), prim=ph, material=np.take(tb.material, ph), tag=np.take(tb.tag, ph),
            albedo=albedo, params_t=self.params_t)

    def shadows(self, h: shading.SurfaceHits, lighting: Lighting, car_scene, car_shadows: CarShadowGrid | None):
        """One occlusion query from sun-facing hit points towards the sun (cars: only points near a car).

        Returns (lit `[R]` float 0/1, facing `[R]` bool, seconds spent on the cars' part).
        """
        R = len(h.x)
        lit = np.zeros(R, _F32)
        facing = np.zeros(R, bool)
        sd = lighting.sun_dir
        if not lighting.sun_rgb.max() > 0:
            return lit, facing, 0.0
        if self.shader == "compiled":
            facing, fi, srays = cs.shadow_rays(h, sd)
        else:
            facing = (h.nx * sd[0] + h.ny * sd[1] + h.nz * sd[2]) > 0.0
            fi = np.flatnonzero(facing)
            srays = np.empty((len(fi), 6), _F32)
            # Start 3 cm off the surface; crowns shade with smooth normals over coarse facets, so their rays start
            # 1.2 m towards the sun to skip the crown's own facets.
            lift = np.where(np.take(h.material, fi) == M.FOLIAGE, _F32(1.2), _F32(0.0))
            srays[:, 0] = np.take(h.x, fi) + np.take(h.nx, fi) * _F32(0.03) + lift * sd[0]
            srays[:, 1] = np.take(h.y, fi) + np.take(h.ny, fi) * _F32(0.03) + lift * sd[1]
            srays[:, 2] = np.take(h.z, fi) + np.take(h.nz, fi) * _F32(0.03) + lift * sd[2]
            srays[:, 3:] = sd
        if not len(fi):
            return lit, facing, 0.0
        occ = self.scene.test_occlusions(rays_tensor(srays), nthreads=self.embree_threads).numpy()
        if self.outer is not None:
            self._occlude_outer(srays, sd, occ)
        t0 = time.perf_counter()
        if car_scene is not None:
            near = np.flatnonzero(car_shadows.near(srays))
            if len(near):
                occ[near] |= car_scene.test_occlusions(rays_tensor(np.take(srays, near, axis=0)),
                                                        nthreads=self.embree_threads).numpy()
        lit[fi] = ~occ
        return lit, facing, time.perf_counter() - t0

    def _occlude_outer(self, srays: np.ndarray, sd: np.ndarray, occ: np.ndarray) -> None:
        """Shadow rays `srays [S,6]` (all towards the sun `sd`) not yet occluded: test against the outer scene those
        that start outside the land rectangle or leave it below the outer geometry's top; `occ [S]` updated in place."""
        free = np.flatnonzero(~occ)
        if not len(free) or sd[2] <= 0:
            if len(free):
                occ[free] |= self.outer.test_occlusions(rays_tensor(np.take(srays, free, axis=0)),
                                                        nthreads=self.embree_threads).numpy()
            return
        x0, y0, x1, y1 = self.inner_rect
        ox, oy, oz = (np.take(srays[:, i], free) for i in range(3))
        inside = (ox > x0) & (ox < x1) & (oy > y0) & (oy < y1)
        # Ray parameter where the ray leaves the rectangle (the sun direction is the same for all rays).
        s_exit = np.full(len(free), np.inf, _F32)
        for o, d, lo, hi in ((ox, sd[0], x0, x1), (oy, sd[1], y0, y1)):
            if d != 0:
                np.minimum(s_exit, ((hi if d > 0 else lo) - o) * _F32(1.0 / d), out=s_exit)
        need = free[~inside | (oz + s_exit * sd[2] <= self.outer_top)]
        if len(need):
            occ[need] |= self.outer.test_occlusions(rays_tensor(np.take(srays, need, axis=0)),
                                                    nthreads=self.embree_threads).numpy()

    def compose(self, dirs, t_hit, hi, col, tags, lighting, inv_norm):
        """Images from shaded hits `col [3,R]` and the sky for the misses: (rgb `[P,3]` u8, semantic `[P]` u8)."""
        P = len(t_hit)
        rgb_lin = np.empty((3, P), _F32)
        for c in range(3):
            rgb_lin[c, hi] = col[c]
        mi = np.flatnonzero(t_hit == np.inf)
        if len(mi):
            inv_m = np.take(inv_norm, mi)
            sky = shading.sky(*(np.take(d, mi) * inv_m for d in dirs), lighting)
            for c in range(3):
                rgb_lin[c, mi] = sky[c]
        rgb = shading.to_srgb8(rgb_lin, lighting.exposure, np.empty((P, 3), np.uint8))
        semantic = np.full(P, sem.SKY, np.uint8)
        semantic[hi] = tags
        return rgb, semantic


@numba.njit(nogil=True, cache=True)
def _hits_and_misses(t_hit):  # pragma: no cover - compiled
    """Sorted indices of the rays that hit something (`t < inf`) and of all the others (misses)."""
    hi = np.empty(len(t_hit), np.int64)
    mi = np.empty(len(t_hit), np.int64)
    a = b = 0
    for k in range(len(t_hit)):
        if t_hit[k] < np.inf:
            hi[a] = k
            a += 1
        else:  # inf (Open3D's miss); a NaN would count as a miss too
            mi[b] = k
            b += 1
    return hi[:a], mi[:b]


@numba.njit(nogil=True, cache=True, parallel=True)
def _scatter_sun_flags(hi, mi, lit, facing, sun_lit, sun_facing):  # pragma: no cover - compiled
    """Per-pixel flags from per-hit ones: sun_lit[hi] = lit > 0, sun_facing[hi] = facing, False at the misses."""
    for i in numba.prange(len(hi)):
        sun_lit[hi[i]] = lit[i] > 0
        sun_facing[hi[i]] = facing[i]
    for i in numba.prange(len(mi)):
        sun_lit[mi[i]] = False
        sun_facing[mi[i]] = False


_MEMORY_KEPT = False


def keep_freed_memory() -> None:
    """Ask glibc (once per process) to keep freed memory for reuse instead of returning it to the OS: arrays up to
    256 MB come from the heap rather than fresh mappings, and the heap is trimmed only above 1 GB free. A capture
    allocates and frees tens of MB of per-ray buffers every tick (in numpy and in Open3D); without this each tick
    pays their page faults again. No effect (and no error) where glibc's `mallopt` is unavailable."""
    global _MEMORY_KEPT
    if _MEMORY_KEPT:
        return
    _MEMORY_KEPT = True
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    libc.mallopt(M_MMAP_THRESHOLD, 256 << 20)
    libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
