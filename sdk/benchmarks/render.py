"""Rendering speed benchmark: `render_field` against a naive per-sample PyTorch loop, in the same run.

Scene: `nfldm_sdk.fields.synthetic.driving_like_field` — mostly empty air, a ground slab, some car-sized and
building-sized boxes — on the paper's 128×128×32 grid (0.4 m voxels, 51.2 m × 51.2 m × 12.8 m) with 1 density + 32
feature channels. Cameras: `nfldm_sdk.cameras.builders.ring_cameras`, a 6-camera 90° ring at 1.6 m height in the box
centre (the capture rig's layout), cycled to ``batch``.

Baseline: ``render_naive_loop`` — one Python step per sample: ``grid_sample`` the packed ``[1+C]`` grid at
sample i of every ray, composite, repeat ``n_samples`` times. It uses the same rays, samples and box clipping,
so both renders must agree (``max_abs_diff`` in the result).

On CUDA the fused Triton kernel (``implementation="triton"``, what ``"auto"`` picks there) has its own section,
`run_triton_bench`: forward images/s and samples/s at batch 32 on the sparse driving-like scene and on a soft, noisy
one (`nfldm_sdk.fields.synthetic.soft_noisy_field`), with and without empty-space skipping; the naive PyTorch render (`render_field_reference`:
grid_sample at every sample, then cumprod) in the same run; the backward (density + features) against autograd
through that reference; relative error against the float32 reference; and the card's measured DRAM and L2
bandwidth with the fraction of them the kernel's estimated gathers reach. On CPU the section is skipped
(interpreter timings mean nothing).

Run::

    python -m nfldm_sdk.benchmarks.render                      # CPU: batch 2 for a quick run
    python -m nfldm_sdk.benchmarks.render --threads 1 --dense  # steadier on a shared machine; also the dense path
    python -m nfldm_sdk.benchmarks.render --device cuda --batch 12 --triton-batch 32 --json out/render_bench.json
    python -m nfldm_sdk.benchmarks.render --device cuda --check-targets   # PASS/FAIL per target (render_targets)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from nfldm_sdk.benchmarks.render_targets import check_triton_targets, format_targets
from nfldm_sdk.cameras.builders import ring_cameras
from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.fields.synthetic import driving_like_field, soft_noisy_field
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.rendering.api import render_field, render_field_reference, triton_preferred
from nfldm_sdk.rendering.rays import (
    HIT_ALPHA,
    RenderOutput,
    finish_render,
    prepare_rays,
    sample_grid,
    sample_points,
)
from nfldm_sdk.rendering.torch_paths import compositing_weights

__all__ = ["RenderBenchResult", "TritonBenchResult", "TritonTiming", "format_render_bench", "format_triton_bench",
           "main", "render_naive_loop", "run_render_bench", "run_triton_bench"]


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
    """The implementation ``render_field``'s ``"auto"`` chose (no grad: ``"sparse"``; ``"triton"`` on CUDA)."""
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


@torch.no_grad()
def render_naive_loop(field: VoxelField, cameras: Cameras, n_samples: int = 128, near: float = 0.0,
                      far: float | None = None) -> RenderOutput:
    """The naive baseline: a Python loop over samples, one ``grid_sample`` of the packed ``[1+C]`` grid and one
    compositing step per sample, all rays at once. Same model as `render_field` (unbatched field only)."""
    if field.is_batched:
        raise ValueError("render_naive_loop renders unbatched fields only")
    b = prepare_rays(field, cameras, n_samples, near, far, False, None)
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
    return finish_render(b, feats, depth_num, 1.0 - T, HIT_ALPHA, math.inf)


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
        b = prepare_rays(field, cams[:1], n_samples, 0.0, None, False, None)
        _, pts = sample_points(b, slice(None), n_samples)                     # [1, R, S, 3]
        w, _ = compositing_weights(sample_grid(b.density, pts)[:, 0], b.delta)  # [1, R, S]
        kept = (w > 0).float().mean().item()
    diff = max((fast.features - naive.features).abs().max().item(), (fast.alpha - naive.alpha).abs().max().item())
    finite = torch.isfinite(fast.depth)
    if not torch.equal(finite, torch.isfinite(naive.depth)):
        depth_diff = math.inf                                                 # they disagree on which pixels hit
    else:
        depth_diff = ((fast.depth - naive.depth).abs() / fast.depth)[finite].max().item() if finite.any() else 0.0
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    impl = "triton" if triton_preferred(field, cams) else "sparse"
    return RenderBenchResult(device=name, dtype=str(dtype).replace("torch.", ""), size=size, n_samples=n_samples,
                             grid=tuple(grid), channels=channels, batch=batch, implementation=impl,
                             fast_images_per_s=batch / t_fast, naive_images_per_s=batch / t_naive,
                             speedup=t_naive / t_fast, dense_images_per_s=batch / secs["dense"] if dense else None,
                             max_abs_diff=diff, max_depth_rel_diff=depth_diff, kept_sample_fraction=kept,
                             peak_cuda_mb=peak)


def format_render_bench(r: RenderBenchResult) -> str:
    """Human-readable summary of a `RenderBenchResult`."""
    Z, Y, X = r.grid
    lines = [
        (f"render bench on {r.device}, {r.dtype}: {r.size}x{r.size} px, {r.n_samples} samples/ray, "
         f"grid {X}x{Y}x{Z} (X×Y×Z) with 1+{r.channels} channels, {r.batch} images/call"),
        f"  render_field ({r.implementation}): {r.fast_images_per_s:8.2f} images/s",
        f"  naive per-sample loop:   {r.naive_images_per_s:8.2f} images/s",
        (f"  speed-up {r.speedup:.2f}x; fast vs naive: max |diff| {r.max_abs_diff:.1e} (features, alpha), "
         f"{r.max_depth_rel_diff:.1e} relative (depth)"),
        f"  samples with nonzero weight: {100 * r.kept_sample_fraction:.1f}% (the only ones whose features are read)",
    ]
    if r.dense_images_per_s is not None:
        lines.insert(3, f"  render_field (dense):    {r.dense_images_per_s:8.2f} images/s  (differentiable path, no grad)")
    if r.peak_cuda_mb is not None:
        lines.append(f"  peak CUDA memory (render_field): {r.peak_cuda_mb:.0f} MiB")
    return "\n".join(lines)


# ====================================================================== the fused Triton kernel (CUDA)


@dataclass(frozen=True)
class TritonTiming:
    """One forward configuration of the Triton bench."""

    scene: str
    """``"sparse"`` (`driving_like_field`) or ``"soft"`` (`soft_noisy_field`)."""
    skip: bool
    """Empty-space skipping on."""
    images_per_s: float
    samples_per_s: float
    """Nominal: images/s × pixels × ``n_samples`` (every model sample, marched or skipped)."""
    gathered_gb_per_s: float
    """Estimated bytes the kernel gathers per second (8 density corners of every visited sample, 8 feature rows
    of every sample with weight > 0), GB/s: traffic the L1/L2 serve, not DRAM traffic."""


@dataclass(frozen=True)
class TritonBenchResult:
    """Figures of `run_triton_bench` (one CUDA device, one run)."""

    device: str
    size: int
    n_samples: int
    grid: tuple[int, int, int]
    channels: int
    batch: int
    """Images per forward call."""
    grid_dtype: str
    forward: list[TritonTiming]
    naive_images_per_s: dict[str, float]
    """Per scene: `render_field_reference` (grid_sample at every sample, cumprod), in chunks of 2 images."""
    backward_batch: int
    backward_images_per_s: float
    """Triton backward alone (density and features need grad), sparse scene."""
    naive_backward_images_per_s: float
    """Autograd backward through `render_field_reference`, same scene, cameras and loss."""
    backward_speedup: float
    rel_error: dict[str, dict[str, float]]
    """Per scene: relative error of features, depth, alpha against the float32 reference (2 images)."""
    skip_exact: dict[str, bool]
    """Per scene: identical output with and without skipping."""
    dram_gb_per_s: float
    """Measured device-to-device copy bandwidth (read + write), GB/s."""
    l2_gb_per_s: float
    """Measured read bandwidth of an L2-resident buffer, GB/s."""


def _card_bandwidth(dev: torch.device) -> tuple[float, float]:
    """Measured DRAM (1 GiB copy, bytes read + written) and L2 (repeated sums of a 16 MiB buffer) GB/s (on CPU,
    for smoke tests: 64 MiB and 1 MiB)."""
    cuda = dev.type == "cuda"
    big = torch.empty(2**28 if cuda else 2**24, device=dev, dtype=torch.float32)
    out = torch.empty_like(big)
    small = torch.ones(2**22 if cuda else 2**18, device=dev, dtype=torch.float32)
    times, _ = _interleaved_times({"dram": lambda: out.copy_(big), "l2": lambda: [small.sum() for _ in range(50)]},
                                  dev, 5, ("dram", "l2"))
    return 2 * big.numel() * 4 / times["dram"] / 1e9, 50 * small.numel() * 4 / times["l2"] / 1e9


def _gathered_bytes_per_image(field: VoxelField, cams: Cameras, n_samples: int, feature_bytes: int, skip: bool,
                              early_stop: float, cell: int) -> float:
    """Estimated gathered bytes per image (mean over ``cams``): visited samples × 8 × 4 B of density, plus
    samples with weight > 0 × 8 corner rows × ``feature_bytes``. A sample counts as visited when it lies before
    the ray's stop and, with skipping, in an occupied cell (jumps land a sample early at most: ignored)."""
    from nfldm_sdk.rendering.triton_render import occupancy_grid  # optional dependency: triton

    total = 0.0
    for i in range(len(cams)):
        b = prepare_rays(field, cams[i:i + 1], n_samples, 0.0, None, False, None)
        _, pts = sample_points(b, slice(None), n_samples)                    # [1, R, S, 3]
        sigma = sample_grid(b.density, pts)[:, 0]                             # [1, R, S]
        w, _ = compositing_weights(sigma, b.delta)                            # [1, R, S]
        tau = torch.cumsum(sigma * b.delta[..., None], -1)                    # optical depth up to and with i
        # sample i is marched while the transmittance before it, exp(−tau_{i−1}), is still >= early_stop
        before = torch.cat([torch.ones_like(tau[..., :1], dtype=torch.bool), torch.exp(-tau[..., :-1]) >= early_stop], -1)
        before &= (b.delta > 0)[..., None]
        visited = before
        if skip:
            Z, Y, X = b.density.shape[-3:]
            occ = occupancy_grid(b.density[:, 0], cell)[0]                  # [ZC, YC, XC]
            size = torch.tensor([X, Y, Z], device=pts.device, dtype=pts.dtype)
            u = torch.minimum((((pts + 1.0) * size - 1.0) / 2.0).clamp_min(0.0), size - 1.0)
            i0 = torch.minimum(u.floor(), (size - 2.0).clamp_min(0.0)).long() // cell   # [1, R, S, 3] cells
            visited = before & (occ[i0[..., 2], i0[..., 1], i0[..., 0]] != 0)
        total += visited.sum().item() * 8 * 4 + (before & (w > 0)).sum().item() * 8 * feature_bytes
    return total / len(cams)


def run_triton_bench(size: int = 256, n_samples: int = 128, grid: tuple[int, int, int] = (32, 128, 128),
                     channels: int = 32, batch: int = 32, *, backward_batch: int = 4, rounds: int = 5, seed: int = 0,
                     grid_dtype: torch.dtype = torch.float16, device: str = "cuda") -> TritonBenchResult:
    """Time the fused kernel on the first CUDA device (see the module docstring for what is measured).

    Args:
        size, n_samples, grid, channels: as `run_render_bench` (the issue's 256², 128, 128×128×32, 32).
        batch: images per forward call; backward_batch: images per backward call (autograd through the
            reference keeps several GB per image at 256² × 128 samples).
        rounds: timed calls per configuration (median counts); seed: scene seed.
        grid_dtype: storage dtype of the feature grid.
        device: ``"cuda"``; ``"cpu"`` only under Triton's interpreter, to smoke-test this function (its timings
            mean nothing).
    """
    from nfldm_sdk.rendering.triton_render import (  # optional dependency: triton
        EARLY_STOP,
        INTERPRETED,
        OCCUPANCY_CELL,
        render_field_triton,
    )

    dev = torch.device(device)
    if dev.type == "cuda" and (not torch.cuda.is_available() or INTERPRETED):
        raise RuntimeError("run_triton_bench needs a CUDA device and compiled Triton kernels "
                           "(torch.cuda.is_available() is False, or TRITON_INTERPRET=1 is set)")
    if dev.type == "cpu" and not INTERPRETED:
        raise RuntimeError("run_triton_bench on CPU needs Triton's interpreter (TRITON_INTERPRET=1): smoke tests only")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    scenes = {"sparse": driving_like_field(grid, channels, seed=seed, device=dev),
              "soft": soft_noisy_field(grid, channels, seed=seed, device=dev)}
    cams = ring_cameras(batch, size, device=dev)
    pixels = size * size
    feature_bytes = channels * torch.empty((), dtype=grid_dtype).element_size()
    forward, naive, errors, exact = [], {}, {}, {}
    with torch.no_grad():
        for name, field in scenes.items():
            fns = {skip: (lambda f=field, s=skip: render_field_triton(f, cams, n_samples, grid_dtype=grid_dtype,
                                                                      skip_empty=s)) for skip in (True, False)}
            fns["naive"] = lambda f=field: [render_field_reference(f, cams[i:i + 2], n_samples)
                                            for i in range(0, batch, 2)]
            secs, outs = _interleaved_times(fns, dev, rounds, tuple(fns))
            naive[name] = batch / secs["naive"]
            exact[name] = all(torch.equal(getattr(outs[True], k), getattr(outs[False], k))
                              for k in ("features", "depth", "alpha"))
            for skip in (True, False):
                gathered = _gathered_bytes_per_image(field, cams[:2], n_samples, feature_bytes, skip, EARLY_STOP,
                                                     OCCUPANCY_CELL)
                ips = batch / secs[skip]
                forward.append(TritonTiming(name, skip, ips, ips * pixels * n_samples, ips * gathered / 1e9))
            ref = render_field_reference(field, cams[:2], n_samples)
            out = render_field_triton(field, cams[:2], n_samples, grid_dtype=grid_dtype)
            errors[name] = _rel_errors(out, ref)
    # Backward: density and features need grad (training, SDS); the loss touches features, depth and alpha.
    field = scenes["sparse"]
    bcams = cams[:backward_batch]

    def backward_fn(impl):
        def run():
            f = VoxelField(field.density.clone().requires_grad_(), field.features.clone().requires_grad_(),
                           field.bounds)
            if impl == "triton":
                out = render_field_triton(f, bcams, n_samples, grid_dtype=grid_dtype)
            else:
                out = render_field_reference(f, bcams, n_samples)
            loss = out.features.square().mean() + out.alpha.mean() + out.depth.nan_to_num(0.0, 0.0, 0.0).mean()
            sync()
            start = time.perf_counter()
            loss.backward()
            sync()
            return time.perf_counter() - start
        return run

    bw = {impl: statistics.median([backward_fn(impl)() for _ in range(rounds)]) for impl in ("triton", "naive")}
    dram, l2 = _card_bandwidth(dev)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu (Triton interpreter: timings meaningless)"
    return TritonBenchResult(device=name, size=size, n_samples=n_samples, grid=tuple(grid),
                             channels=channels, batch=batch, grid_dtype=str(grid_dtype).replace("torch.", ""),
                             forward=forward, naive_images_per_s=naive, backward_batch=backward_batch,
                             backward_images_per_s=backward_batch / bw["triton"],
                             naive_backward_images_per_s=backward_batch / bw["naive"],
                             backward_speedup=bw["naive"] / bw["triton"], rel_error=errors, skip_exact=exact,
                             dram_gb_per_s=dram, l2_gb_per_s=l2)


def _rel_errors(out: RenderOutput, ref: RenderOutput) -> dict[str, float]:
    """Features and alpha: max |diff| / max |ref|; depth: max |diff| / depth over pixels both call hits."""
    def err(a, b):
        return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12)).item()

    fin = torch.isfinite(out.depth) & torch.isfinite(ref.depth)
    depth = ((out.depth.double() - ref.depth.double()).abs() / ref.depth.double())[fin].max().item() if fin.any() else 0.0
    return {"features": err(out.features, ref.features), "depth": depth, "alpha": err(out.alpha, ref.alpha)}


def format_triton_bench(r: TritonBenchResult) -> str:
    """Human-readable summary of a `TritonBenchResult`."""
    Z, Y, X = r.grid
    lines = [(f"triton kernel on {r.device}: {r.size}x{r.size} px, {r.n_samples} samples/ray, grid {X}x{Y}x{Z} "
              f"with 1+{r.channels} channels ({r.grid_dtype} features), {r.batch} images/call"),
             f"  card: DRAM copy {r.dram_gb_per_s:.0f} GB/s, L2-resident reads {r.l2_gb_per_s:.0f} GB/s (measured)"]
    for t in r.forward:
        lines.append(f"  forward {t.scene:6s} skip={'on ' if t.skip else 'off'}: {t.images_per_s:9.1f} images/s, "
                     f"{t.samples_per_s / 1e9:7.1f} G samples/s, ~{t.gathered_gb_per_s:6.0f} GB/s gathered "
                     f"({100 * t.gathered_gb_per_s / r.l2_gb_per_s:.0f}% of L2, "
                     f"{100 * t.gathered_gb_per_s / r.dram_gb_per_s:.0f}% of DRAM)")
    for scene, ips in r.naive_images_per_s.items():
        best = max(t.images_per_s for t in r.forward if t.scene == scene)
        e = r.rel_error[scene]
        lines.append(f"  {scene}: naive PyTorch {ips:.1f} images/s -> {best / ips:.0f}x; rel. error features "
                     f"{e['features']:.1e}, depth {e['depth']:.1e}, alpha {e['alpha']:.1e}; skipping exact: "
                     f"{r.skip_exact[scene]}")
    lines.append(f"  backward (density + features, batch {r.backward_batch}): {r.backward_images_per_s:.1f} images/s "
                 f"vs autograd through the reference {r.naive_backward_images_per_s:.2f} -> {r.backward_speedup:.0f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> RenderBenchResult:
    """``python -m nfldm_sdk.benchmarks.render [--device cuda] [--batch N] ...``"""
    p = argparse.ArgumentParser(prog="python -m nfldm_sdk.benchmarks.render", description=__doc__.split("\n")[0])
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
    p.add_argument("--triton-batch", type=int, default=32, help="images per call of the Triton forward bench (CUDA)")
    p.add_argument("--triton-backward-batch", type=int, default=4, help="images per call of the backward bench")
    p.add_argument("--triton-rounds", type=int, default=5, help="timed calls per Triton configuration")
    p.add_argument("--grid-dtype", default="float16", choices=["float16", "bfloat16", "float32"],
                   help="feature storage dtype of the Triton kernel")
    p.add_argument("--no-triton", action="store_true", help="skip the Triton section on CUDA")
    p.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    p.add_argument("--check-targets", action="store_true",
                   help="print PASS/FAIL per target (nfldm_sdk.benchmarks.render_targets; also in the JSON); "
                        "exit 1 if one fails")
    a = p.parse_args(argv)
    r = run_render_bench(a.size, a.samples, tuple(a.grid), a.channels, a.batch, a.device, getattr(torch, a.dtype),
                         rounds=a.rounds, dense=a.dense, threads=a.threads)
    print(format_render_bench(r))
    triton_result, note, checks = None, None, None
    if a.no_triton:
        note = "skipped (--no-triton)"
    elif torch.device(a.device).type != "cuda":
        note = "skipped: the fused Triton kernel runs on CUDA (its CPU interpreter is for tests; timings meaningless)"
    else:
        triton_result = run_triton_bench(a.size, a.samples, tuple(a.grid), a.channels, a.triton_batch,
                                         backward_batch=a.triton_backward_batch, rounds=a.triton_rounds,
                                         grid_dtype=getattr(torch, a.grid_dtype))
        print(format_triton_bench(triton_result))
        if a.check_targets:
            checks = check_triton_targets(triton_result)
            print("targets:\n" + format_targets(checks))
    if note:
        print(f"triton kernel: {note}")
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"render": dataclasses.asdict(r), "triton": triton_result and
                                      dataclasses.asdict(triton_result), "triton_note": note,
                                      "targets": checks and [dataclasses.asdict(c) for c in checks]},
                                     indent=2, default=str))
    if checks and any(c.status == "FAIL" for c in checks):
        raise SystemExit(1)
    return r


if __name__ == "__main__":
    main()
