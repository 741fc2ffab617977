"""Benchmark: stage-1 training speed of a preset, in optimisation steps per second, for a wall-clock budget.

    python -m nfldm_training.benchmarks.train_steps --data STORE --preset small --seconds 120 --out RUN --json train.json

Runs the real stage-1 run, `nfldm_training.modules.scene_ae.train_scene_ae` (data module, Lightning trainer, run
directory), from scratch on one device, with validation cut to one batch before and after training and none in
between, and a callback (`StepTimer`) that notes the end of every optimisation step and stops training once
``seconds`` have passed since the first step began (or at ``max_steps``). Steps per second are counted after
``warmup`` steps (the first steps pay for kernel compilation, autotuning and the allocator), over the steps that
follow; with too few steps, over all of them.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from lightning.pytorch import Callback

from nfldm_training.configs.presets import get_preset
from nfldm_training.modules.scene_ae import train_scene_ae

__all__ = ["StepTimer", "TrainStepsResult", "run_train_steps_bench", "format_train_steps", "main"]


class StepTimer(Callback):
    """Notes the time (s, `time.perf_counter`) and loss of every optimisation step; stops training after
    `seconds` of steps.

    Args:
        seconds: training time after which ``trainer.should_stop`` is set (checked at the end of each step).
    """

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = float(seconds)
        self.start: float | None = None
        self.ends: list[float] = []
        self.losses: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        """The clock starts when the first step is about to begin (after data set-up and the untrained validation)."""
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Note the step's end and loss; ask the trainer to stop once `seconds` have passed."""
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))  # float() waits for the device: the time below is the step's end
        self.ends.append(time.perf_counter())
        if self.ends[-1] - self.start >= self.seconds:
            trainer.should_stop = True

    def used_warmup(self, warmup: int) -> int:
        """The warm-up steps `steps_per_s` leaves out: `warmup`, or 0 when fewer than ``warmup + 2`` steps ran."""
        return int(warmup) if len(self.ends) >= warmup + 2 else 0

    def steps_per_s(self, warmup: int) -> float:
        """Steps per second between the end of step `warmup` and the end of the last step; with fewer than
        ``warmup + 2`` steps, over all steps from the start of training (NaN without a step)."""
        if self.used_warmup(warmup):
            return (len(self.ends) - 1 - warmup) / (self.ends[-1] - self.ends[warmup])
        return len(self.ends) / (self.ends[-1] - self.start) if self.ends else float("nan")


@dataclass
class TrainStepsResult:
    """Figures of one `run_train_steps_bench` run.

    Attributes:
        stage, preset, device, precision: what trained where (device: the CUDA card's name or the CPU line).
        batch_size: scene windows per step; views: images per window; image_size: ``(H, W)`` px.
        steps: optimisation steps done; warmup: steps left out of `steps_per_s` (0 when too few steps ran).
        steps_per_s: optimisation steps per second after the warm-up.
        images_per_s: ``steps_per_s × batch_size × views`` (camera images per second through the auto-encoder).
        train_seconds: time from the first step's start to the last step's end.
        total_seconds: the whole call (data set-up, both validations and the model's save included).
        first_loss, last_loss: training loss of the first and of the last step.
        peak_cuda_mb: peak CUDA memory allocated, MiB (None on CPU).
        run_dir: the run directory written.
    """

    stage: str
    preset: str
    device: str
    precision: str
    batch_size: int
    views: int
    image_size: tuple[int, int]
    steps: int
    warmup: int
    steps_per_s: float
    images_per_s: float
    train_seconds: float
    total_seconds: float
    first_loss: float
    last_loss: float
    peak_cuda_mb: float | None
    run_dir: str


def _device_name(accelerator: str) -> str:
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def run_train_steps_bench(stores: Sequence[str], run_dir: str | Path, preset: str = "small", *, seconds: float = 120.0,
                          max_steps: int | None = None, warmup: int = 3, accelerator: str = "auto",
                          overrides: dict[str, Any] | None = None,
                          log: Callable[[str], None] = print) -> TrainStepsResult:
    """Train stage 1 of `preset` on `stores` into `run_dir` (from scratch) for `seconds` of steps and time it.

    Args:
        stores: capture stores (the preset's image size is read from them by resizing, as training does).
        run_dir: run directory (overwritten: the run never resumes).
        preset: preset name (`nfldm_training.configs.presets.PRESETS`).
        seconds: training time budget, from the first step; max_steps: step cap (None: the preset's).
        warmup: first steps left out of the steps/s figure.
        accelerator: Lightning's (``"auto"``: the GPU when there is one).
        overrides: further dotted preset overrides (``{"scene_ae_train.batch_size": 2}``).
    """
    start = time.perf_counter()
    cfg = get_preset(preset).scene_ae_train
    steps_cap = int(max_steps or cfg.max_steps)
    resolved = get_preset(preset, {"scene_ae_train.max_steps": steps_cap, "scene_ae_train.val_interval": steps_cap,
                                   "scene_ae_train.val_batches": 1, **(overrides or {})})
    timer = StepTimer(seconds)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    train_scene_ae(list(stores), resolved, run_dir, resume=False, accelerator=accelerator, devices=1, progress=False,
                   log=log, trainer_kwargs={"extra_callbacks": [timer]})
    if not timer.ends:
        raise RuntimeError(f"no training step ran in {run_dir} (see the log above)")
    tc, mc = resolved.scene_ae_train, resolved.scene_ae
    cameras = len(tc.cameras) if tc.cameras else _rig_cameras(stores[0])
    sps = timer.steps_per_s(warmup)
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return TrainStepsResult(stage="scene-ae", preset=preset, device=_device_name(accelerator), precision=tc.precision,
                            batch_size=int(tc.batch_size), views=int(tc.window) * cameras,
                            image_size=tuple(mc.image_size), steps=len(timer.ends), warmup=timer.used_warmup(warmup),
                            steps_per_s=sps, images_per_s=sps * tc.batch_size * tc.window * cameras,
                            train_seconds=timer.ends[-1] - timer.start, total_seconds=time.perf_counter() - start,
                            first_loss=timer.losses[0], last_loss=timer.losses[-1], peak_cuda_mb=peak,
                            run_dir=str(run_dir))


def _rig_cameras(store: str) -> int:
    import sim_bridge  # start-up time: the store reader loads zarr

    return len(sim_bridge.open_store(store).rig.names)


def format_train_steps(r: TrainStepsResult) -> str:
    """Human-readable summary of a `TrainStepsResult`."""
    H, W = r.image_size
    mem = f", peak CUDA memory {r.peak_cuda_mb:.0f} MiB" if r.peak_cuda_mb is not None else ""
    return (f"{r.stage} training, preset {r.preset}, on {r.device} ({r.precision}): batch {r.batch_size} x {r.views} "
            f"views at {W}x{H}\n  {r.steps} steps in {r.train_seconds:.1f} s: {r.steps_per_s:.3g} steps/s after "
            f"{r.warmup} warm-up steps ({r.images_per_s:.4g} images/s); loss {r.first_loss:.4f} -> {r.last_loss:.4f}"
            f"{mem}; whole call {r.total_seconds:.1f} s")


def main(argv: list[str] | None = None) -> TrainStepsResult:
    """``python -m nfldm_training.benchmarks.train_steps --data STORE ... --out RUN [--json FILE]``"""
    p = argparse.ArgumentParser(prog="python -m nfldm_training.benchmarks.train_steps", description=__doc__.split("\n")[0])
    p.add_argument("--data", nargs="+", required=True, help="capture store(s)")
    p.add_argument("--out", required=True, type=Path, help="run directory (overwritten)")
    p.add_argument("--preset", default="small", help="preset name (tiny, small, paper)")
    p.add_argument("--seconds", type=float, default=120.0, help="training time budget from the first step, s")
    p.add_argument("--max-steps", type=int, default=None, help="step cap (default: the preset's)")
    p.add_argument("--warmup", type=int, default=3, help="first steps left out of steps/s")
    p.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, gpu, cpu")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="preset override, e.g. --set scene_ae_train.batch_size=2 (value parsed as JSON when it can be)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    a = p.parse_args(argv)
    overrides = {}
    for item in a.settings:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set {item!r}: expected KEY=VALUE, e.g. scene_ae_train.batch_size=2")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    r = run_train_steps_bench(a.data, a.out, a.preset, seconds=a.seconds, max_steps=a.max_steps, warmup=a.warmup,
                              accelerator=a.accelerator, overrides=overrides)
    print(format_train_steps(r))
    if a.json is not None:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(asdict(r), indent=2) + "\n")
    return r


if __name__ == "__main__":
    main()
