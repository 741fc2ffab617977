"""Sensor throughput benchmark: frames/s of `render_trajectory` for the 6-camera capture rig (RGB + depth,
volume rendering and the stage-1 CNN decoder included, host numpy frames out).

Scene: `nfldm_sdk.fields.synthetic.driving_like_field` (ground, cars, buildings) on the decoder's grid with its feature
channels. Decoder: a randomly initialised `SceneAutoEncoder` of a preset's stage-1 sizes (`bench_decoder`:
``PRESETS[preset].scene_ae`` of `nfldm_training.configs.presets`, ``small`` by default; weights do not change the
cost), or the ``scene_ae`` of a model bundle with ``--model``. The ego drives straight through the scene at 10 m/s,
10 Hz.

Generated LiDAR (`run_lidar_bench`, the ``lidar`` row of `nfldm bench`): beams/s and points/s of
`nfldm_sdk.sensors.lidar.render_lidar` (a preset, ``nuscenes32`` by default) through the same scene along the same
trajectory; the same-run baseline is the camera render of that scene (`run_sensor_bench`, in pixels/s), so the ratio
``beams/s ÷ camera pixels/s`` says what one beam costs against one camera pixel (RGB + depth, decoder included).

Run::

    python -m nfldm_training.benchmarks.sensors                       # CPU, 256×256, 2 ticks × 6 cameras
    python -m nfldm_training.benchmarks.sensors --device cuda --ticks 20 --batch-size 24 [--preset tiny]
    python -m nfldm_training.benchmarks.sensors --lidar nuscenes32 --size 128   # LiDAR vs the cameras
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from dataclasses import dataclass

import torch

from nfldm_sdk.cameras.rig import CameraRig
from nfldm_sdk.cameras.trajectory import Trajectory
from nfldm_sdk.fields.synthetic import driving_like_field
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.models.scene_ae import SceneAutoEncoder
from nfldm_sdk.models.bundle import load_part
from nfldm_sdk.sensors.lidar import lidar_samples, render_lidar
from nfldm_sdk.sensors.lidar_spec import LidarSpec
from nfldm_sdk.sensors.renderer import RenderableScene
from nfldm_sdk.sensors.trajectory_render import render_trajectory
from nfldm_training.configs.presets import PRESETS

__all__ = ["SensorBenchResult", "LidarBenchResult", "run_sensor_bench", "run_lidar_bench", "format_sensor_bench",
           "format_lidar_bench", "bench_decoder", "main"]


@dataclass(frozen=True)
class SensorBenchResult:
    """Figures of one benchmark run."""

    device: str
    """Device name, e.g. ``cpu (2 threads)`` or the CUDA device name."""
    size: int
    """Image width = height, pixels."""
    cameras: int
    ticks: int
    batch_size: int
    """Views per decoder call."""
    grid: tuple[int, int, int]
    channels: int
    render_samples: int
    downsample: int
    frames_per_s: float
    """Camera images per second (median over rounds), RGB + depth, decoder included, to host numpy."""
    ticks_per_s: float
    """Ticks (all cameras) per second."""
    peak_cuda_mb: float | None
    """Peak CUDA memory, MiB (None on CPU)."""


@dataclass(frozen=True)
class LidarBenchResult:
    """Figures of one generated-LiDAR benchmark run (`run_lidar_bench`)."""

    device: str
    spec: str
    """The `LidarSpec`'s name."""
    beams_per_scan: int
    ticks: int
    samples_per_beam: int
    grid: tuple[int, int, int]
    beams_per_s: float
    """Beams marched per second (median over rounds), range images and points to host numpy."""
    points_per_s: float
    """Returns per second."""
    camera_pixels_per_s: float
    """Baseline, same run: camera pixels per second of `run_sensor_bench` on the same scene and trajectory."""
    camera: SensorBenchResult

    @property
    def ratio(self) -> float:
        """``beams_per_s / camera_pixels_per_s``."""
        return self.beams_per_s / self.camera_pixels_per_s


def bench_decoder(preset: str = "small", seed: int = 0, **sizes) -> SceneAutoEncoder:
    """A randomly initialised stage-1 model of preset `preset`'s sizes (``PRESETS[preset].scene_ae``), in eval mode.

    Args:
        preset: a preset of the table (``tiny``, ``small``, ``paper``).
        seed: seed of the initial weights.
        **sizes: `SceneAEConfig` fields replacing the preset's (``feature_channels``, ``grid_shape``,
            ``render_samples``, ``decoder_widths``, ...); given ``decoder_widths`` alone, the encoder takes them
            reversed, so the two stay of one length.
    Raises:
        KeyError: unknown preset. TypeError: a size that is no `SceneAEConfig` field.
    """
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    if "decoder_widths" in sizes and "encoder_widths" not in sizes:
        sizes["encoder_widths"] = tuple(reversed(sizes["decoder_widths"]))
    cfg = dataclasses.replace(PRESETS[preset].scene_ae, **sizes)
    torch.manual_seed(seed)
    return SceneAutoEncoder(cfg).eval()


def run_sensor_bench(size: int = 256, ticks: int = 2, batch_size: int = 12, device: str = "cpu", *,
                     decoder: SceneAutoEncoder | None = None, rounds: int = 2, seed: int = 0) -> SensorBenchResult:
    """Time `render_trajectory` over ``ticks`` ticks of the capture rig at ``size`` × ``size`` (first call = warm-up)."""
    dev = torch.device(device)
    dec = (decoder or bench_decoder()).to(dev).eval()
    cfg = dec.config
    field: VoxelField = driving_like_field(tuple(cfg.grid_shape), cfg.feature_channels, seed=seed, device=dev)
    scene = RenderableScene(field, dec, seed=seed, bundle_hash="bench")
    rig = CameraRig.preset("capture", size, size)
    traj = _straight(ticks)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def run() -> int:
        n = 0
        for frames in render_trajectory(scene, traj, rig, batch_size=batch_size, device=dev):
            n += len(frames)
        sync()
        return n

    run()                                                                    # warm-up (allocator, kernels)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        n = run()
        times.append(time.perf_counter() - start)
    t = statistics.median(times)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return SensorBenchResult(device=name, size=size, cameras=len(rig), ticks=len(traj), batch_size=batch_size,
                             grid=tuple(cfg.grid_shape), channels=cfg.feature_channels,
                             render_samples=cfg.render_samples, downsample=cfg.downsample, frames_per_s=n / t,
                             ticks_per_s=len(traj) / t, peak_cuda_mb=peak)


def _straight(ticks: int) -> Trajectory:
    """`ticks` ego poses driving straight along +x at 10 m/s, 10 Hz."""
    traj = Trajectory.straight(max(ticks - 1, 1) * 1.0, speed_mps=10.0, rate_hz=10.0)
    return Trajectory(traj.timestamps[:ticks], traj.ego_to_world[:ticks])


def run_lidar_bench(spec: str = "nuscenes32", ticks: int = 2, size: int = 128, batch_size: int = 12,
                    device: str = "cpu", *, decoder: SceneAutoEncoder | None = None, rounds: int = 2, seed: int = 0,
                    n_samples: int | None = None) -> LidarBenchResult:
    """Time `render_lidar` (`spec`: a preset or LiDAR JSON file) over ``ticks`` ticks of the sensor benchmark's scene
    and trajectory (first call = warm-up), and the camera render of the same scene (`run_sensor_bench` at ``size``)
    as the same-run baseline. `n_samples`: samples per beam (default `lidar_samples`, half-voxel steps)."""
    lidar = LidarSpec.resolve(spec)
    dev = torch.device(device)
    dec = (decoder or bench_decoder()).to(dev).eval()
    cfg = dec.config
    field = driving_like_field(tuple(cfg.grid_shape), cfg.feature_channels, seed=seed, device=dev)
    traj = _straight(ticks)
    samples = lidar_samples(field, lidar.range_m) if n_samples is None else int(n_samples)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def run() -> tuple[int, int]:
        beams = points = 0
        for scan in render_lidar(field, traj, lidar, n_samples=samples, device=dev):
            beams += scan.ranges.size
            points += len(scan.points)
        sync()
        return beams, points

    run()                                                                    # warm-up (allocator, kernels)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        beams, points = run()
        times.append(time.perf_counter() - start)
    t = statistics.median(times)
    camera = run_sensor_bench(size, ticks, batch_size, device, decoder=dec, rounds=rounds, seed=seed)
    return LidarBenchResult(device=camera.device, spec=lidar.name, beams_per_scan=lidar.rays_per_scan,
                            ticks=len(traj), samples_per_beam=samples, grid=tuple(cfg.grid_shape),
                            beams_per_s=beams / t, points_per_s=points / t,
                            camera_pixels_per_s=camera.frames_per_s * size * size, camera=camera)


def format_sensor_bench(r: SensorBenchResult) -> str:
    """Human-readable summary of a `SensorBenchResult`."""
    Z, Y, X = r.grid
    lines = [
        f"sensor bench on {r.device}: capture rig {r.cameras} cameras at {r.size}x{r.size}, {r.ticks} ticks, "
        f"{r.batch_size} views/decoder call",
        f"  field {X}x{Y}x{Z} (X×Y×Z) with {r.channels} channels, {r.render_samples} samples/ray, "
        f"render at 1/{r.downsample} resolution + CNN decoder",
        f"  {r.frames_per_s:8.2f} camera frames/s (RGB + depth to host numpy)   {r.ticks_per_s:6.2f} ticks/s",
    ]
    if r.peak_cuda_mb is not None:
        lines.append(f"  peak CUDA memory: {r.peak_cuda_mb:.0f} MiB")
    return "\n".join(lines)


def format_lidar_bench(r: LidarBenchResult) -> str:
    """Human-readable summary of a `LidarBenchResult` (its camera baseline first)."""
    Z, Y, X = r.grid
    return "\n".join([
        format_sensor_bench(r.camera),
        f"generated LiDAR {r.spec}: {r.beams_per_scan} beams/scan, {r.ticks} ticks, field {X}x{Y}x{Z}, "
        f"{r.samples_per_beam} samples/beam",
        f"  {r.beams_per_s / 1e6:8.3f} M beams/s   {r.points_per_s / 1e6:8.3f} M points/s   "
        f"{r.ratio:.3g}x the camera pixels/s of the same scene ({r.camera_pixels_per_s / 1e6:.3f} M/s)"])


def main(argv: list[str] | None = None) -> SensorBenchResult | LidarBenchResult:
    """``python -m nfldm_training.benchmarks.sensors [--device cuda] [--size 256] [--ticks 2] [--batch-size 12]
    [--preset P | --model B] [--lidar nuscenes32]``"""
    p = argparse.ArgumentParser(prog="python -m nfldm_training.benchmarks.sensors", description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=256, help="image width = height, pixels")
    p.add_argument("--ticks", type=int, default=2, help="trajectory ticks rendered per round")
    p.add_argument("--batch-size", type=int, default=12, help="views per decoder call")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--rounds", type=int, default=2, help="timed rounds (median counts)")
    p.add_argument("--preset", default="small", choices=list(PRESETS), help="stage-1 sizes of the random decoder")
    p.add_argument("--model", default=None, help="a model bundle (its scene_ae is benchmarked instead)")
    p.add_argument("--lidar", default=None, help="also time generated LiDAR (a preset or LiDAR JSON file) against "
                   "the cameras")
    a = p.parse_args(argv)
    decoder = load_part(a.model, "scene_ae", device=a.device) if a.model else bench_decoder(a.preset)
    if a.lidar:
        lr = run_lidar_bench(a.lidar, a.ticks, a.size, a.batch_size, a.device, decoder=decoder, rounds=a.rounds)
        print(format_lidar_bench(lr))
        return lr
    r = run_sensor_bench(a.size, a.ticks, a.batch_size, a.device, decoder=decoder, rounds=a.rounds)
    print(format_sensor_bench(r))
    return r


if __name__ == "__main__":
    main()
