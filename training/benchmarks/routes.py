"""Route generation speed: metres of route outpainted per minute (`nfldm bench`'s ``route`` row).

`run_route_bench` generates a route along a straight drive (`nfldm_sdk.routes.outpaint.generate_route`: boxes at
the default spacing, each next scene outpainted from its predecessor, feathered) and times it. The baseline, timed
in the same run, is the same number of independent scenes (`SceneGenerator.generate`, one call per scene as the route
makes them): ``ratio = baseline seconds / route seconds`` says what outpainting and feathering cost (1 = nothing).

    python -m nfldm_training.benchmarks.routes --model assets/models/default --length 200 --steps 50
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from nfldm_sdk.cameras.trajectory import Trajectory
from nfldm_sdk.pipelines.generator import SceneGenerator
from nfldm_sdk.routes.outpaint import generate_route
from nfldm_training.benchmarks.sampling import bench_generator

__all__ = ["RouteBenchResult", "run_route_bench", "main"]


@dataclass(frozen=True)
class RouteBenchResult:
    """One route timing: ``scenes`` scenes over ``length_m`` metres in ``seconds``; the same count of independent
    scenes in ``baseline_seconds``."""

    source: str
    length_m: float
    scenes: int
    steps: int
    seconds: float
    baseline_seconds: float

    @property
    def metres_per_minute(self) -> float:
        """Route metres generated per minute."""
        return self.length_m / self.seconds * 60.0

    @property
    def ratio(self) -> float:
        """Independent scenes' time ÷ the route's (> 1: the route is faster than its scenes alone)."""
        return self.baseline_seconds / self.seconds


def run_route_bench(bundle_or_preset: str | Path | SceneGenerator = "tiny", length_m: float = 100.0,
                    steps: int = 10, device: str | torch.device = "cpu") -> RouteBenchResult:
    """Time a route of `length_m` metres along a straight drive and its baseline (module docstring).

    Args:
        bundle_or_preset: a bundle folder, a preset name (random weights; the timing does not depend on them) or a
            generator.
        length_m: the drive's length, metres.
        steps: denoising steps per level.
        device: torch device.
    """
    device = torch.device(device)
    gen, source = bench_generator(bundle_or_preset, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    drive = Trajectory.straight(length_m=float(length_m))
    generate_route(gen, Trajectory.straight(length_m=1.0), seed=0, steps=1)          # warm-up (allocator, kernels)
    sync()
    t0 = time.perf_counter()
    route = generate_route(gen, drive, seed=0, steps=int(steps))
    sync()
    seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    for k in range(len(route)):
        gen.generate(1, seed=k, steps=int(steps))
    sync()
    baseline = time.perf_counter() - t0
    return RouteBenchResult(source=source, length_m=float(route.plan.length_m), scenes=len(route), steps=int(steps),
                            seconds=seconds, baseline_seconds=baseline)


def main(argv: list[str] | None = None) -> RouteBenchResult:
    """``python -m nfldm_training.benchmarks.routes``: print one route timing."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", help="bundle folder or preset name (random weights)")
    ap.add_argument("--length", type=float, default=100.0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    r = run_route_bench(a.model, a.length, a.steps, a.device)
    print(f"{r.source}: {r.scenes} scenes over {r.length_m:.0f} m in {r.seconds:.1f} s = {r.metres_per_minute:.0f} "
          f"m/min ({r.steps} steps/level); {r.scenes} independent scenes: {r.baseline_seconds:.1f} s "
          f"(ratio {r.ratio:.2f})")
    return r


if __name__ == "__main__":
    main()
