"""`nfldm bench`: every benchmark of the project in one run, one table naming the machine.

Runs, in order (each with its own warm-up; sizes from `BENCH_SIZES`):

* **capture** — `sim_bridge.bench.run_capture_bench`: procedural capture, camera frames/s; same-run baseline:
  the raw raycaster on the same rays (ratio = pipeline rays/s ÷ raycaster rays/s, the share of time spent casting).
* **render** — `nfldm_sdk.benchmarks.render.run_render_bench`: volume rendering images/s; baseline: the naive
  per-sample loop on the same scene and cameras (ratio = speed-up).
* **sampling** — `nfldm_training.benchmarks.sampling.run_sampling_bench`: seconds per generated scene (random weights
  of the preset: the time does not depend on them); no baseline (other samplers of the run are listed).
* **sensors** — `nfldm_training.benchmarks.sensors.run_sensor_bench`: camera images/s of the capture rig along a trajectory
  (decoder included, to host memory); no baseline.
* **lidar** — `nfldm_training.benchmarks.sensors.run_lidar_bench`: generated LiDAR (``nuscenes32``) beams/s through
  the sensor benchmark's scene; baseline: the camera render of the same scene and trajectory in the same run, in
  pixels/s (ratio = beams/s ÷ camera pixels/s).
* **refine** — `nfldm_training.benchmarks.refine.bench` (SDS refinement seconds per step).
* **startup** — `nfldm_training.benchmarks.startup.run_startup_bench`: seconds until ``nfldm --help``, ``nfldm generate
  --help`` and an argument error return (fresh processes; the figure is the slowest); baseline: ``sim_bridge --help``
  in the same run (ratio = baseline ÷ figure).

``--quick`` uses the tiny sizes (about a minute on two CPU cores); the default uses the ``small`` sizes.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from sim_bridge.bench import cpu_name, load_average

from nfldm_training.errors import TrainingError

__all__ = ["BenchRow", "BenchReport", "BENCH_SIZES", "machine_line", "run_bench", "format_bench"]


def machine_line(device: str = "cpu") -> str:
    """One line naming the machine: CPU model, cores, torch threads; the GPU name when `device` is CUDA."""
    load = load_average()
    s = (f"{cpu_name()}, {os.cpu_count()} cores{'' if load is None else f', load {load:.2f}'}, "
         f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    if str(device).startswith("cuda") and torch.cuda.is_available():
        s += f", GPU {torch.cuda.get_device_name(torch.device(device))}"
    return s


@dataclass
class BenchRow:
    """One benchmark's headline figure.

    Attributes:
        name: benchmark (capture, render, sampling, sensors, lidar, refine, startup).
        setting: what was timed (sizes).
        value: the figure; unit: its unit.
        baseline: the same-run baseline figure in the same unit (None when the benchmark has none).
        baseline_name: what the baseline is.
        ratio: value ÷ baseline (for times: baseline ÷ value, so > 1 always means faster than the baseline).
        seconds: wall time of the benchmark.
        error: why the benchmark did not run (value is then NaN).
    """

    name: str
    setting: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    ratio: float | None = None
    seconds: float = 0.0
    error: str = ""


@dataclass
class BenchReport:
    """All rows of one `nfldm bench` run."""

    machine: str
    device: str
    quick: bool
    rows: list[BenchRow] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


#: Sizes per mode: ``quick`` (tiny, ~1 min on 2 CPU cores) and ``full`` (the small preset's sizes).
BENCH_SIZES: dict[str, dict] = {
    "quick": {
        "capture": dict(town="Town01", width=64, height=64, frames=3, baseline_repeats=2),
        "render": dict(size=64, n_samples=32, grid=(8, 32, 32), channels=8, batch=2, rounds=1),
        "sampling": dict(bundle_or_preset="tiny", samplers=("ddim",), steps=(10,), batch=1),
        "sensors": dict(size=64, ticks=2, batch_size=6, rounds=1, decoder=dict(preset="tiny")),
        "lidar": dict(spec="nuscenes32", ticks=1, size=64, batch_size=6, rounds=1, decoder=dict(preset="tiny")),
        "refine": dict(size="tiny", steps=2, views=1),
        "route": dict(bundle_or_preset="tiny", length_m=64.0, steps=4),
        "startup": dict(repeats=3),
    },
    "full": {
        "capture": dict(town="Town03", width=256, height=256, frames=10, baseline_repeats=3),
        "render": dict(size=128, n_samples=64, grid=(16, 64, 64), channels=16, rounds=2),
        "sampling": dict(bundle_or_preset="small", samplers=("ddim", "dpmsolver++"), steps=(25,), batch=1),
        "sensors": dict(size=128, ticks=2, batch_size=12, rounds=2, decoder=dict(preset="small")),
        "lidar": dict(spec="nuscenes32", ticks=2, size=128, batch_size=12, rounds=2, decoder=dict(preset="small")),
        "refine": dict(size="small", steps=5, views=2),
        "route": dict(bundle_or_preset="small", length_m=200.0, steps=25),
        "startup": dict(repeats=5),
    },
}


def _capture(cfg: dict, device: str) -> BenchRow:
    from sim_bridge.bench import run_capture_bench  # start-up time: loaded only when this benchmark runs

    r = run_capture_bench(**cfg)
    return BenchRow("capture", f"procedural {r.town}, {r.cameras} cams {r.width}x{r.height}, {r.frames} ticks (CPU)",
                    r.camera_frames_per_s, "camera frames/s", baseline=r.rays_per_s / 1e6,
                    baseline_name="raycaster alone (M rays/s)", ratio=r.pipeline_rays_per_s / r.rays_per_s)


def _render(cfg: dict, device: str) -> BenchRow:
    from nfldm_sdk.benchmarks.render import run_render_bench  # start-up time: loaded only when this benchmark runs

    r = run_render_bench(device=device, **cfg)
    return BenchRow("render", f"render_field ({r.implementation}) {r.size}px, {r.n_samples} samples, grid "
                    f"{'x'.join(map(str, r.grid))}, C {r.channels}", r.fast_images_per_s, "images/s",
                    baseline=r.naive_images_per_s, baseline_name="naive per-sample loop", ratio=r.speedup)


def _sampling(cfg: dict, device: str) -> BenchRow:
    from nfldm_training.benchmarks.sampling import run_sampling_bench  # start-up time: loaded only when this benchmark runs

    r = run_sampling_bench(device=device, **cfg)
    first = r.timings[0]
    others = ", ".join(f"{t.sampler} {t.steps}: {t.seconds_per_scene:.3g} s" for t in r.timings[1:])
    return BenchRow("sampling", f"{r.source}, {first.sampler} {first.steps} steps/level, batch {r.batch}"
                    + (f" (also {others})" if others else ""), first.seconds_per_scene, "s/scene")


def _sensors(cfg: dict, device: str) -> BenchRow:
    from nfldm_training.benchmarks.sensors import bench_decoder, run_sensor_bench  # start-up time: loaded only when this benchmark runs

    cfg = dict(cfg)
    dec = bench_decoder(**cfg.pop("decoder"))
    r = run_sensor_bench(device=device, decoder=dec, **cfg)
    return BenchRow("sensors", f"capture rig {r.cameras} cams {r.size}px, {r.ticks} ticks, grid "
                    f"{'x'.join(map(str, r.grid))}", r.frames_per_s, "images/s")


def _lidar(cfg: dict, device: str) -> BenchRow:
    from nfldm_training.benchmarks.sensors import bench_decoder, run_lidar_bench  # start-up time: loaded only when this benchmark runs

    cfg = dict(cfg)
    dec = bench_decoder(**cfg.pop("decoder"))
    r = run_lidar_bench(device=device, decoder=dec, **cfg)
    return BenchRow("lidar", f"render_lidar {r.spec} ({r.beams_per_scan} beams), {r.ticks} ticks, grid "
                    f"{'x'.join(map(str, r.grid))}, "
                    f"{r.samples_per_beam} samples/beam", r.beams_per_s / 1e6, "M beams/s",
                    baseline=r.camera_pixels_per_s / 1e6, baseline_name=f"camera render of the same scene "
                    f"({r.camera.cameras} cams {r.camera.size}px, M pixels/s)", ratio=r.ratio)


def _refine(cfg: dict, device: str) -> BenchRow:
    from nfldm_training.benchmarks.refine import bench  # start-up time: loaded only when this benchmark runs

    r = bench(cfg["size"], cfg["steps"], cfg["views"], device)
    return BenchRow("refine", f"SDS refine_scene, {r['size']} sizes, {r['views']} views/step, {r['steps']} steps",
                    float(r["per_step"]), "s/step")


def _route(cfg: dict, device: str) -> BenchRow:
    from nfldm_training.benchmarks.routes import run_route_bench  # start-up time: loaded only when this benchmark runs

    r = run_route_bench(device=device, **cfg)
    return BenchRow("route", f"generate_route, {r.source}, {r.scenes} scenes over {r.length_m:.0f} m, {r.steps} "
                    "steps/level", r.metres_per_minute, "m/min", baseline=r.baseline_seconds,
                    baseline_name="the same scenes generated independently (s)", ratio=r.ratio)


def _startup(cfg: dict, device: str) -> BenchRow:
    from nfldm_training.benchmarks.startup import run_startup_bench  # start-up time: loaded only when this benchmark runs

    r = run_startup_bench(**cfg)
    each = ", ".join(f"{label} {s:.2f}" for label, s in r.seconds.items())
    return BenchRow("startup", f"slowest of: {each} (s; median of {r.repeats} processes)", r.slowest, "s",
                    baseline=r.baseline_seconds, baseline_name="sim_bridge --help (s)",
                    ratio=r.baseline_seconds / r.slowest)


_BENCHES: dict[str, Callable[[dict, str], BenchRow]] = {
    "capture": _capture, "render": _render, "sampling": _sampling, "sensors": _sensors, "lidar": _lidar,
    "refine": _refine, "route": _route, "startup": _startup}


def run_bench(quick: bool = True, device: str = "cpu", only: tuple[str, ...] | None = None,
              sizes: dict | None = None, log: Callable[[str], None] = print) -> BenchReport:
    """Run the benchmarks (all, or `only` those named) and collect one row each.

    A benchmark that fails gives a row with its error (the others still run). `sizes` replaces `BENCH_SIZES`'s
    entry for the mode (tests use smaller ones).
    """
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError("--device cuda asked but torch.cuda.is_available() is False: use --device cpu")
    table = sizes or BENCH_SIZES["quick" if quick else "full"]
    names = [n for n in _BENCHES if only is None or n in only]
    unknown = set(only or ()) - set(_BENCHES)
    if unknown:
        raise TrainingError(f"unknown benchmark(s) {sorted(unknown)}: choose from {', '.join(_BENCHES)}")
    report = BenchReport(machine=machine_line(device), device=str(device), quick=quick)
    start = time.perf_counter()
    for name in names:
        log(f"[bench] {name} ...")
        t0 = time.perf_counter()
        try:
            row = _BENCHES[name](dict(table[name]), device)
        except Exception as e:  # one broken benchmark must not hide the others' figures
            row = BenchRow(name, "", float("nan"), "", error=f"{type(e).__name__}: {e}")
        row.seconds = time.perf_counter() - t0
        report.rows.append(row)
    report.seconds = time.perf_counter() - start
    return report


def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if v != v:  # NaN
        return "n/a"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"


def format_bench(r: BenchReport) -> str:
    """The report as one plain-text table headed by the machine line."""
    head = ("benchmark", "setting", "figure", "baseline (same run)", "ratio", "time")
    rows = []
    for x in r.rows:
        if x.error:
            rows.append((x.name, x.setting or "-", "n/a", x.error, "—", f"{x.seconds:.1f}s"))
            continue
        base = f"{_fmt(x.baseline)} {x.baseline_name}" if x.baseline is not None else "—"
        rows.append((x.name, x.setting, f"{_fmt(x.value)} {x.unit}", base,
                     f"{x.ratio:.2f}x" if x.ratio is not None else "—", f"{x.seconds:.1f}s"))
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [f"nfldm bench ({'quick' if r.quick else 'full'}, device {r.device}) on {r.machine}",
           line(head), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    out.append(f"total {r.seconds:.1f} s. Ratios: capture = pipeline ÷ raycaster rays/s (share of time in primary "
               "casts); render = fast ÷ naive; lidar = beams/s ÷ camera pixels/s of the same scene; startup = "
               "sim_bridge ÷ nfldm seconds.")
    return "\n".join(out)


def write_bench(r: BenchReport, path: str | Path) -> Path:
    """Write the report as JSON to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r.to_dict(), indent=2, default=float) + "\n")
    return path
