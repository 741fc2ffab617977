"""Sampling speed benchmark: seconds to generate one scene (g → c → f sampling loops + LAE decode), per sampler and
step count.

Models: a model bundle, or — with a preset name — randomly initialised models of that preset's sizes (the time
does not depend on the weights). Rendering is not included (see `nfldm_sdk.benchmarks.render`).

Run::

    python -m nfldm_training.benchmarks.sampling --preset tiny                  # CPU
    python -m nfldm_training.benchmarks.sampling --preset small --steps 10 25
    python -m nfldm_training.benchmarks.sampling --bundle assets/models/small --device cuda --batch 4
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from nfldm_sdk.pipelines.generator import SceneGenerator
from nfldm_training.configs.ldm import random_generator

__all__ = ["SamplingTiming", "SamplingBenchResult", "run_sampling_bench", "format_sampling_bench", "bench_generator",
           "main"]


@dataclass(frozen=True)
class SamplingTiming:
    """One row: a sampler at a step count."""

    sampler: str
    steps: int
    seconds_per_scene: float
    """Wall time of one `SceneGenerator.generate` call divided by the scenes it made (best of `repeats`)."""
    seconds_per_batch: float
    """Wall time of one call of `batch` scenes (best of `repeats`)."""


@dataclass(frozen=True)
class SamplingBenchResult:
    """Figures of one benchmark run."""

    source: str
    """``preset <name> (random weights)`` or the bundle path."""
    device: str
    """Device name, e.g. ``cpu (2 threads)`` or the CUDA device name."""
    batch: int
    """Scenes per generate call."""
    parameters: dict
    """Parameters per part (``denoiser_g``, ``denoiser_c``, ``denoiser_f``, ``latent_ae``)."""
    latent_shapes: dict
    """Per-scene shapes of g, c, f."""
    timings: tuple[SamplingTiming, ...]


def _generator_for_preset(name: str, device: str | torch.device) -> SceneGenerator:
    """Randomly initialised models of preset `name` (timings do not depend on the weights)."""
    return random_generator(name, seed=0).to(device)


def bench_generator(bundle_or_preset: str | Path | SceneGenerator,
                    device: torch.device) -> tuple[SceneGenerator, str]:
    """``(generator on device, its description)`` of a bundle folder, a preset name (random weights: timings do not
    depend on them) or a generator."""
    if isinstance(bundle_or_preset, SceneGenerator):
        return bundle_or_preset.to(device), "generator"
    if Path(str(bundle_or_preset)).is_dir():
        return SceneGenerator.from_pretrained(bundle_or_preset, device=device), str(bundle_or_preset)
    return _generator_for_preset(str(bundle_or_preset), device), f"preset {bundle_or_preset} (random weights)"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def run_sampling_bench(bundle_or_preset: str | Path | SceneGenerator = "tiny",
                       samplers: Sequence[str] = ("ddim", "dpmsolver++", "ddpm"), steps: Sequence[int] = (10, 25, 50),
                       batch: int = 1, device: str | torch.device = "cpu", repeats: int = 1) -> SamplingBenchResult:
    """Time `SceneGenerator.generate` for each sampler × step count.

    Args:
        bundle_or_preset: a bundle folder, a preset name (``tiny``, ``small``, ``paper``: random weights) or a generator.
        samplers, steps: the grid to time.
        batch: scenes per call.
        device: torch device.
        repeats: timed calls per cell (the best is kept) after one untimed warm-up call per sampler.
    """
    device = torch.device(device)
    gen, source = bench_generator(bundle_or_preset, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = []
    for sampler in samplers:
        gen.generate(batch, seed=0, steps=2, sampler=sampler, batch_size=batch)  # warm-up (allocator, kernels)
        for n in steps:
            best = float("inf")
            for r in range(max(1, int(repeats))):
                sync()
                t0 = time.perf_counter()
                gen.generate(batch, seed=r, steps=n, sampler=sampler, batch_size=batch)
                sync()
                best = min(best, time.perf_counter() - t0)
            rows.append(SamplingTiming(sampler=sampler, steps=int(n), seconds_per_scene=best / batch, seconds_per_batch=best))
    params = {f"denoiser_{k}": sum(p.numel() for p in m.parameters()) for k, m in gen.denoisers.items()}
    params["latent_ae"] = sum(p.numel() for p in gen.latent_ae.parameters())
    shapes = {k: tuple(m.latent_shape) for k, m in gen.denoisers.items()}
    return SamplingBenchResult(source=source, device=_device_name(device), batch=int(batch), parameters=params,
                               latent_shapes=shapes, timings=tuple(rows))


def format_sampling_bench(r: SamplingBenchResult) -> str:
    """A plain-text table of `r`."""
    lines = [f"sampling benchmark — {r.source} on {r.device}, batch {r.batch}",
             "latents: " + ", ".join(f"{k} {list(v)}" for k, v in r.latent_shapes.items()),
             "parameters: " + ", ".join(f"{k} {v:,}" for k, v in r.parameters.items()),
             f"{'sampler':<12} {'steps':>5} {'s/scene':>10} {'s/batch':>10}"]
    lines += [f"{t.sampler:<12} {t.steps:>5} {t.seconds_per_scene:>10.3f} {t.seconds_per_batch:>10.3f}" for t in r.timings]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> SamplingBenchResult:
    """Command line of ``python -m nfldm_training.benchmarks.sampling``: run the sampling benchmark, print its table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--bundle", help="Model bundle folder.")
    src.add_argument("--preset", default="tiny", help="Preset of randomly initialised models (tiny, small, paper).")
    p.add_argument("--samplers", nargs="+", default=["ddim", "dpmsolver++", "ddpm"])
    p.add_argument("--steps", nargs="+", type=int, default=[10, 25, 50])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=1)
    a = p.parse_args(argv)
    r = run_sampling_bench(a.bundle or a.preset, a.samplers, a.steps, a.batch, a.device, a.repeats)
    print(format_sampling_bench(r))
    return r


if __name__ == "__main__":
    main()
