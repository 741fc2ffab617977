"""Profile one stage-1 optimisation step of a preset on this machine: seconds per step with every target view
rendered vs the preset's ``render_views`` subset, with and without channels-last convolutions, and the operators
that dominate (torch.profiler).

    .venv/bin/python scripts/profile_stage1.py STORE [--preset default] [--steps 3] [--threads 2]

The step is the real training step of `nfldm_training.modules.scene_ae.SceneAELightningModule` (every loss of the
preset) with an AdamW update, on the first windows of the store at the preset's image size. Ratios are against the
"all targets, standard layout" step measured in the same run.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch


def _step_seconds(preset, batch, steps: int, render_views, channels_last: bool) -> float:
    from nfldm_training.modules.scene_ae import SceneAELightningModule

    tc = dataclasses.replace(preset.scene_ae_train, render_views=render_views, channels_last=channels_last)
    torch.manual_seed(0)
    module = SceneAELightningModule(preset.scene_ae, tc)
    module.log_dict = lambda *a, **k: None
    if channels_last:
        for net in (module.model.encoder, module.model.decoder):
            net.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(module.parameters(), tc.lr)

    def step():
        loss = module.training_step(batch, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up (allocations, oneDNN primitive cache)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps, step


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, measure the variants, print a table and the profile of the preset's own step."""
    from nfldm_training.configs.presets import get_preset
    from nfldm_training.data.capture_windows import SceneWindowDataset, collate_windows

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=12, help="operators listed in the profile")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    tc = preset.scene_ae_train
    ds = SceneWindowDataset([args.store], window=tc.window, image_size=preset.scene_ae.image_size, split="all")
    batch = collate_windows([ds[i] for i in range(tc.batch_size)])
    print(f"preset {args.preset}: batch {tc.batch_size} windows x {batch.num_views} views at "
          f"{preset.scene_ae.image_size}, {args.threads} threads")
    variants = [("all targets", None, False), (f"render_views={tc.render_views}", tc.render_views, False),
                (f"render_views={tc.render_views} + channels-last", tc.render_views, True)]
    base = None
    for name, rv, cl in variants:
        s, step = _step_seconds(preset, batch, args.steps, rv, cl)
        base = base or s
        print(f"  {name:40s} {s:7.3f} s/step  {1.0 / s:6.2f} steps/s  x{base / s:.2f} vs all targets")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
