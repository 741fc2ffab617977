"""Rendering speed benchmark: `render_field` against a naive per-sample PyTorch loop, in the same run.

Scene: a driving-like field — mostly empty air, a ground slab, some car-sized and building-sized boxes —
on the paper's 128×128×32 grid (0.4 m voxels, 51.2 m × 51.2 m × 12.8 m) with 1 density + 32 feature channels.
Cameras: a 6-camera 90° ring at 1.6 m height in the box centre (the capture rig's layout), cycled to ``batch``.

Baseline: ``render_naive_loop`` — one Python step per sample: ``grid_sample`` the packed ``[1+C]`` grid at
sample i of every ray, composite, repeat ``n_samples`` times. It uses the same rays, samples and box clipping,
so both renders must agree (``max_abs_diff`` in the result).

Run::

    python -m nfldm_sdk.bench_render                      # CPU: batch 2 for a quick run
    python -m nfldm_sdk.bench_render --threads 1 --dense  # steadier on a shared machine; also the dense path
    python -m nfldm_sdk.bench_render --device cuda --batch 12
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .cameras import Cameras
from .field import VoxelField
from .render import RenderOutput, _finish, _grid_sample, _prepare, _sample_points, _weights, render_field

__all__ = ["RenderBenchResult", "run_render_bench", "format_render_bench", "render_naive_loop",
           "driving_like_field", "ring_cameras", "main"]


@dataclass(frozen=True)
class RenderBenchResult:
    """Figures of one benchmark run."""

    device: str
    """Device name, e.g. ``cpu (2 threads)`` or the CUDA device name."""
    dtype: str
    size: int
    """Image width = height, pixels."""
    n_samples: int
    grid: tuple[int, int, int]
    """Voxel grid (Z, Y, X)."""
    channels: int
    """Feature channels C (the density is one more channel)."""
    batch: int
    """Images per render call."""
    implementation: str
    """The implementation ``render_field``'s ``"auto"`` chose (no grad: ``"sparse"``)."""
    fast_images_per_s: float
    naive_images_per_s: float
    speedup: float
    """fast / naive images per second."""
    dense_images_per_s: float | None
    """``implementation="dense"`` (training path) without grad, when asked for."""
    max_abs_diff: float
    """Largest |fast − naive| over features and alpha."""
    max_depth_rel_diff: float
    """Largest |fast − naive| / depth over hit pixels (inf if they disagree on which pixels hit)."""
    kept_sample_fraction: float
    """Share of samples with nonzero weight (the ones whose features the sparse path samples)."""
    peak_cuda_mb: float | None
    """Peak CUDA memory of the fast render, MiB (None on CPU)."""


def driving_like_field(grid: tuple[int, int, int] = (32, 128, 128), channels: int = 32, *, seed: int = 0,
                       dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> VoxelField:
    """A seeded driving-like `VoxelField`: air (σ = 0), a 0.4 m ground slab (σ = 30/m) and boxes (σ = 20/m):
    ~16 cars (4.4×2×1.6 m) around the centre and ~10 buildings (8-14 m) near the edges. Features are smooth
    per-object random vectors. The box spans x, y ∈ [−25.6, 25.6] m and z ∈ [−2.0, 10.8] m (0.4 m voxels at
    the paper's 128×128×32)."""
    g = torch.Generator().manual_seed(seed)
    Z, Y, X = grid
    lo, hi = (-25.6, -25.6, -2.0), (25.6, 25.6, 10.8)
    # Voxel-centre coordinates per axis (broadcast, never a [Z,Y,X,3] tensor): keeps the build at ~2× the field.
    x, y, z = (torch.linspace(a, b, n + 1, dtype=torch.float64)[:-1] + (b - a) / (2 * n) for a, b, n in zip(lo, hi, (X, Y, Z)))
    x, y, z = x[None, None, :], y[None, :, None], z[:, None, None]            # [1,1,X], [1,Y,1], [Z,1,1]
    density = torch.zeros(Z, Y, X, dtype=dtype)
    obj = torch.zeros(Z, Y, X, dtype=torch.long)                              # object id per voxel, 0 = air
    ground = ((z > -0.4) & (z < 0.0)).expand(Z, Y, X)
    density[ground], obj[ground] = 30.0, 1
    boxes = []
    for _ in range(16):  # cars on a ring of lanes, kept off the rig at the centre
        r = 5.0 + 12.0 * torch.rand((), generator=g).item()
        a = 2 * math.pi * torch.rand((), generator=g).item()
        boxes.append((r * math.cos(a), r * math.sin(a), 4.4, 2.0, 1.6))
    for _ in range(10):  # buildings near the edges
        a = 2 * math.pi * torch.rand((), generator=g).item()
        s = 8.0 + 6.0 * torch.rand((), generator=g).item()
        boxes.append((20.0 * math.cos(a), 20.0 * math.sin(a), s, s, 6.0 + 4.0 * torch.rand((), generator=g).item()))
    for i, (cx, cy, sx, sy, sz) in enumerate(boxes):
        m = ((x - cx).abs() < sx / 2) & ((y - cy).abs() < sy / 2) & (z >= 0.0) & (z < sz)   # [Z, Y, X]
        density[m], obj[m] = 20.0, i + 2
    palette = torch.randn(len(boxes) + 2, channels, generator=g).to(dtype)   # one feature vector per object
    palette[0] = 0.0                                                          # air
    features = palette[obj].permute(3, 0, 1, 2).contiguous()                  # [C, Z, Y, X]
    # A little per-voxel texture so features are not piecewise constant.
    features += 0.1 * torch.randn(features.shape, generator=g).to(dtype) * (obj > 0)
    bounds = torch.tensor([lo, hi], dtype=dtype)
    return VoxelField(density, features, bounds).to(device=device)


def ring_cameras(n: int, size: int, *, height: float = 1.6, hfov_deg: float = 90.0,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Cameras:
    """``n`` cameras ``[n]`` at (0, 0, ``height``) looking horizontally, yaw i·60° (a 6-camera ring, cycled)."""
    mats = []
    for i in range(n):
        yaw = math.radians(60.0 * (i % 6) + 7.0 * (i // 6))
        fwd = torch.tensor([math.cos(yaw), math.sin(yaw), 0.0], dtype=torch.float64)
        down = torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64)
        right = torch.linalg.cross(fwd, -down)  # OpenCV x = forward × up; then x × y(down) = z(forward)
        m = torch.eye(4, dtype=torch.float64)
        m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, down, fwd, torch.tensor([0.0, 0.0, height])
        mats.append(m)
    return Cameras.from_fov(hfov_deg, size, size, torch.stack(mats).to(device=device, dtype=dtype))


@torch.no_grad()
def render_naive_loop(field: VoxelField, cameras: Cameras, n_samples: int = 128, near: float = 0.0,
                      far: float | None = None) -> RenderOutput:
    """The naive baseline: a Python loop over samples, one ``grid_sample`` of the packed ``[1+C]`` grid and one
    compositing step per sample, all rays at once. Same model as `render_field` (unbatched field only)."""
    if field.is_batched:
        raise ValueError("render_naive_loop renders unbatched fields only")
    b = _prepare(field, cameras, n_samples, near, far, False, None)
    packed = field.packed()[None]                                             # [1, 1+C, Z, Y, X]
    T = torch.ones_like(b.t0)                                                 # [1, R] transmittance so far
    feats = torch.zeros(1, field.num_channels, b.t0.shape[1], dtype=b.t0.dtype, device=b.t0.device)  # [1, C, R]
    depth_num = torch.zeros_like(b.t0)
    for i in range(n_samples):
        t = b.t0 + (i + 0.5) * b.delta                                        # [1, R]
        p = b.o_n + t[..., None] * b.d_n                                      # [1, R, 3]
        s = F.grid_sample(packed, p[:, None, None], padding_mode="border", align_corners=False)[:, :, 0, 0]  # [1, 1+C, R]
        a = 1.0 - torch.exp(-s[:, 0] * b.delta)                               # [1, R]
        w = T * a
        feats += w[:, None] * s[:, 1:]
        depth_num += w * t * b.z_per_t
        T = T * (1.0 - a)
    return _finish(b, feats, depth_num, 1.0 - T, 1e-4, math.inf)


def _interleaved_times(fns: dict, device: torch.device, rounds: int, warmup: tuple[str, ...]) -> tuple[dict, dict]:
    """Median seconds per call of each function, timed in alternating rounds so that other processes' load on a
    shared machine hits all of them alike; also the last outputs."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for name in warmup:  # allocator / kernel warm-up
        fns[name]()
    sync()
    times, outs = {k: [] for k in fns}, {}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            outs[name] = fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}, outs


def run_render_bench(size: int = 256, n_samples: int = 128, grid: tuple[int, int, int] = (32, 128, 128),
                     channels: int = 32, batch: int | None = None, device: str = "cpu",
                     dtype: torch.dtype = torch.float32, *, seed: int = 0, rounds: int = 2, dense: bool = False,
                     threads: int | None = None) -> RenderBenchResult:
    """Time ``render_field`` (default ``"auto"``, under ``no_grad`` as sensors run) and ``render_naive_loop``
    on the same driving-like scene and cameras.

    Args:
        size: image width = height in pixels.
        n_samples: samples per ray.
        grid: voxel grid (Z, Y, X); channels: feature channels C.
        batch: images per call (default 2 on CPU for a quick run, 12 on CUDA).
        device: ``"cpu"`` or ``"cuda"``; dtype: float dtype of field and cameras.
        seed: scene seed; rounds: timed calls of each renderer (alternating; the median counts).
        dense: also time ``implementation="dense"`` (the differentiable training path) without grad.
        threads: CPU threads for the run (restored afterwards). On a machine shared with other busy processes
            ``threads=1`` gives steadier figures: every multi-threaded op otherwise waits for a descheduled thread.
    """
    if threads is not None:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return run_render_bench(size, n_samples, grid, channels, batch, device, dtype, seed=seed, rounds=rounds,
                                    dense=dense)
        finally:
            torch.set_num_threads(previous)
    dev = torch.device(device)
    batch = batch or (12 if dev.type == "cuda" else 2)
    field = driving_like_field(grid, channels, seed=seed, dtype=dtype, device=dev)
    cams = ring_cameras(batch, size, dtype=dtype, device=dev)
    with torch.no_grad():
        peak = None
        if dev.type == "cuda":
            render_field(field, cams, n_samples)
            torch.cuda.reset_peak_memory_stats(dev)
            render_field(field, cams, n_samples)
            peak = torch.cuda.max_memory_allocated(dev) / 2**20  # includes the field itself (~70 MiB)
        fns = {"fast": lambda: render_field(field, cams, n_samples),
               "naive": lambda: render_naive_loop(field, cams, n_samples)}
        if dense:
            fns["dense"] = lambda: render_field(field, cams, n_samples, implementation="dense")
        secs, outs = _interleaved_times(fns, dev, rounds, tuple(fns) if dev.type == "cuda" else ("fast",))
        t_fast, t_naive, fast, naive = secs["fast"], secs["naive"], outs["fast"], outs["naive"]
        # share of samples with nonzero weight (those whose features the sparse path reads), from one image
        b = _prepare(field, cams[:1], n_samples, 0.0, None, False, None)
        _, pts = _sample_points(b, slice(None), n_samples)                     # [1, R, S, 3]
        w, _ = _weights(_grid_sample(b.density, pts)[:, 0], b.delta)           # [1, R, S]
        kept = (w > 0).float().mean().item()
    diff = max((fast.features - naive.features).abs().max().item(), (fast.alpha - naive.alpha).abs().max().item())
    finite = torch.isfinite(fast.depth)
    if not torch.equal(finite, torch.isfinite(naive.depth)):
        depth_diff = math.inf                                                 # they disagree on which pixels hit
    else:
        depth_diff = ((fast.depth - naive.depth).abs() / fast.depth)[finite].max().item() if finite.any() else 0.0
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return RenderBenchResult(device=name, dtype=str(dtype).replace("torch.", ""), size=size, n_samples=n_samples,
                             grid=tuple(grid), channels=channels, batch=batch, implementation="sparse",
                             fast_images_per_s=batch / t_fast, naive_images_per_s=batch / t_naive,
                             speedup=t_naive / t_fast, dense_images_per_s=batch / secs["dense"] if dense else None,
                             max_abs_diff=diff, max_depth_rel_diff=depth_diff, kept_sample_fraction=kept,
                             peak_cuda_mb=peak)


def format_render_bench(r: RenderBenchResult) -> str:
    """Human-readable summary of a `RenderBenchResult`."""
    Z, Y, X = r.grid
    lines = [
        f"render bench on {r.device}, {r.dtype}: {r.size}x{r.size} px, {r.n_samples} samples/ray, "
        f"grid {X}x{Y}x{Z} (X×Y×Z) with 1+{r.channels} channels, {r.batch} images/call",
        f"  render_field ({r.implementation}): {r.fast_images_per_s:8.2f} images/s",
        f"  naive per-sample loop:   {r.naive_images_per_s:8.2f} images/s",
        f"  speed-up {r.speedup:.2f}x; fast vs naive: max |diff| {r.max_abs_diff:.1e} (features, alpha), "
        f"{r.max_depth_rel_diff:.1e} relative (depth)",
        f"  samples with nonzero weight: {100 * r.kept_sample_fraction:.1f}% (the only ones whose features sparse reads)",
    ]
    if r.dense_images_per_s is not None:
        lines.insert(3, f"  render_field (dense):    {r.dense_images_per_s:8.2f} images/s  (differentiable path, no grad)")
    if r.peak_cuda_mb is not None:
        lines.append(f"  peak CUDA memory (render_field): {r.peak_cuda_mb:.0f} MiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> RenderBenchResult:
    """``python -m nfldm_sdk.bench_render [--device cuda] [--batch N] ...``"""
    p = argparse.ArgumentParser(prog="python -m nfldm_sdk.bench_render", description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=256, help="image width = height, pixels")
    p.add_argument("--samples", type=int, default=128, help="samples per ray")
    p.add_argument("--grid", type=int, nargs=3, default=(32, 128, 128), metavar=("Z", "Y", "X"))
    p.add_argument("--channels", type=int, default=32, help="feature channels (density is one more)")
    p.add_argument("--batch", type=int, default=None, help="images per call (default: 2 on CPU, 12 on CUDA)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    p.add_argument("--rounds", type=int, default=2, help="timed calls of each renderer (median counts)")
    p.add_argument("--dense", action="store_true", help="also time the differentiable dense path")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (1 is steadiest on a shared machine)")
    a = p.parse_args(argv)
    r = run_render_bench(a.size, a.samples, tuple(a.grid), a.channels, a.batch, a.device, getattr(torch, a.dtype),
                         rounds=a.rounds, dense=a.dense, threads=a.threads)
    print(format_render_bench(r))
    return r


if __name__ == "__main__":
    main()
