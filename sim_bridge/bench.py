"""Capture throughput of the procedural backend, with the raw raycaster measured in the same run as a baseline.

`run_capture_bench()` builds a town, drives an episode and times `step()` (everything a capture does per tick:
traffic, one primary cast for all cameras, the cars' cast, one shadow query, shading). In the same process
and on the same rays it times the bare `RaycastingScene.cast_rays` call, so the two figures are comparable on a
shared or throttled machine.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass

import numpy as np

from sim_bridge.rig import DEFAULT_RIG, Rig

# Open3D and the procedural backend are imported by the functions that use them (start-up time: the machine line
# of other benchmarks and `sim_bridge --help` need neither).


@dataclass
class CaptureBenchResult:
    """Throughput of one bench run.

    Attributes:
        town, weather, rig: what was rendered. cameras, width, height: the rig's size.
        frames: ticks timed. seconds: wall time of those ticks, s.
        frames_per_s: ticks (all cameras) per second. camera_frames_per_s: frames_per_s × cameras.
        rays_per_s: raw `cast_rays` throughput on the same primary rays against the whole static town in one
            scene (the baseline), rays/s.
        pipeline_rays_per_s: primary rays per second of the whole capture (cameras × pixels × frames_per_s).
        raycast_s, cars_s, shadow_s, shade_s, other_s: time per tick (s) in ray generation + the primary cast,
            the moving cars (scene build, cast, shadows), static shadow rays, shading, and the rest (traffic, poses).
            Wall-clock times, summed over the renderer's camera groups (one group for usual rigs).
        build_s: time to build the town (layout, meshes, BVH), s.
        triangles: static triangles in the town.
        machine: CPU / core count / load / library versions.
    """

    town: str
    weather: str
    rig: str
    cameras: int
    width: int
    height: int
    frames: int
    seconds: float
    frames_per_s: float
    camera_frames_per_s: float
    rays_per_s: float
    pipeline_rays_per_s: float
    raycast_s: float
    cars_s: float
    shadow_s: float
    shade_s: float
    other_s: float
    build_s: float
    triangles: int
    machine: str

    def to_dict(self) -> dict:
        return asdict(self)


def cpu_name() -> str:
    """The CPU's model name (``model name`` of /proc/cpuinfo; `platform.processor()` or the machine type where
    there is none)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def load_average() -> float | None:
    """The 1-minute load average of the machine, or None where the OS does not report one."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def machine_description() -> str:
    """One line: CPU model, cores, 1-minute load average, Python / numpy / Open3D versions."""
    load = load_average()
    import open3d as o3d

    return (f"{cpu_name()}, {os.cpu_count()} cores, load {'n/a' if load is None else f'{load:.2f}'}, Python "
            f"{platform.python_version()}, numpy {np.__version__}, open3d {o3d.__version__}")


def run_capture_bench(town: str = "Town03", width: int = 256, height: int = 256, frames: int = 30,
                      rig: str = DEFAULT_RIG, weather: str = "ClearNoon", seed: int = 0,
                      baseline_repeats: int = 5) -> CaptureBenchResult:
    """Time `frames` procedural capture ticks of `rig` at `width`×`height` in `town`, plus the raw raycaster.

    One warm-up tick is rendered first (not timed). The baseline casts the last tick's primary rays
    `baseline_repeats` times with one plain `cast_rays` call on the whole static town in one scene (no outer-terrain
    split, no shading) and keeps the fastest run.
    """
    import open3d as o3d

    from sim_bridge.backends.base import EpisodeSpec
    from sim_bridge.backends.procedural import ProceduralBackend
    from sim_bridge.backends.procedural.scenes import make_scene

    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    r = Rig.resolve(rig, width, height)
    with ProceduralBackend(town, weather, r, seed=seed) as backend:
        t0 = time.perf_counter()
        backend.start_episode(EpisodeSpec(0, seed))
        build_s = time.perf_counter() - t0
        last = backend.step()
        parts = {"raycast": 0.0, "cars": 0.0, "shadow": 0.0, "shade": 0.0}
        t0 = time.perf_counter()
        for _ in range(frames):
            last = backend.step()
            for k in parts:
                parts[k] += backend.last_render.timing[k]
        seconds = time.perf_counter() - t0
        rays = o3d.core.Tensor(backend.renderer.rays.world(last.cam_to_world)[0])
        whole_town = make_scene(backend.mesh)  # every static triangle in one scene: the plain way to cast a town
        whole_town.cast_rays(rays)             # builds its BVH (not timed)
        best = np.inf
        for _ in range(max(1, baseline_repeats)):
            t1 = time.perf_counter()
            whole_town.cast_rays(rays)
            best = min(best, time.perf_counter() - t1)
        triangles = backend.mesh.n_triangles
    fps = frames / seconds
    n_rays = len(r) * width * height
    per = {k: v / frames for k, v in parts.items()}
    return CaptureBenchResult(
        town=town, weather=weather, rig=rig, cameras=len(r), width=width, height=height, frames=frames,
        seconds=seconds, frames_per_s=fps, camera_frames_per_s=fps * len(r), rays_per_s=n_rays / best,
        pipeline_rays_per_s=n_rays * fps, raycast_s=per["raycast"], cars_s=per["cars"], shadow_s=per["shadow"], shade_s=per["shade"],
        other_s=max(seconds / frames - sum(per.values()), 0.0), build_s=build_s, triangles=triangles,
        machine=machine_description())


def format_capture_bench(res: CaptureBenchResult) -> str:
    """A short human-readable report of a `CaptureBenchResult`."""
    tick = res.seconds / res.frames
    return "\n".join([
        f"procedural capture bench: {res.town} {res.weather}, rig {res.rig!r} ({res.cameras} cameras) at "
        f"{res.width}x{res.height}, {res.frames} ticks",
        f"  camera frames/s : {res.camera_frames_per_s:8.1f}   ({res.frames_per_s:.2f} ticks/s, {tick * 1e3:.1f} ms/tick)",
        f"  pipeline rays/s : {res.pipeline_rays_per_s / 1e6:8.2f} M (primary rays through the whole capture)",
        f"  raycaster alone : {res.rays_per_s / 1e6:8.2f} M rays/s (same rays, same run — the baseline)",
        f"  per tick (wall time of each stage)\n"
        f"                  : raycast {res.raycast_s * 1e3:.1f} ms, cars {res.cars_s * 1e3:.1f} ms, "
        f"shadows {res.shadow_s * 1e3:.1f} ms, "
        f"shading {res.shade_s * 1e3:.1f} ms, other {res.other_s * 1e3:.1f} ms",
        f"  town build      : {res.build_s:.2f} s ({res.triangles} triangles)",
        f"  machine         : {res.machine}",
    ])
