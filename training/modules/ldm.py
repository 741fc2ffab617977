"""Lightning training of one level of the hierarchical latent diffusion, and the run `nfldm train ldm` performs.

One step (docs/method.md, stage 3, v-prediction): ``x_0`` = the normalised latent of the level, ``ε ~ N(0, I)``,
``t ~ U{0, …, T-1}``, ``x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε`` (``scheduler.add_noise``), target
``v = √ᾱ_t ε − √(1-ᾱ_t) x_0`` (``scheduler.get_velocity``), loss ``w_t · ‖ψ(x_t, t, cond) − v‖²`` averaged over
elements and samples. ``w_t = 1`` by default (``loss_weighting="none"``: plain v-MSE, which is the x_0-loss
weighted by ``SNR_t + 1``); ``"min_snr"`` uses ``min(SNR_t, γ) / (SNR_t + 1)`` (Min-SNR-γ for v-prediction).
The conditions are the **ground-truth** clean upper levels of the same scene (g for c; g and c for f), so the
three levels train independently and in parallel.

EMA: an exponential moving average of the weights (``torch.optim.swa_utils.AveragedModel``; decay
``min(ema_decay, (1+n)/(10+n))`` after n updates) is kept as a submodule, so it is checkpointed and resumed with
the rest; validation runs on it and **it is what gets saved** (``RUN/model``). Strategies: one device or DDP
(the EMA copy is frozen, so DDP ignores it); FSDP would shard the model but not its EMA copy and is not supported.

The run directory::

    RUN/config.json       the resolved LDM preset (denoiser sizes with the store's latent shapes) + level
    RUN/ldm_run.json      level, preset name, latent store, training-data hash, latent stats, noise schedule, sampler
                          defaults: what `nfldm export-bundle` reads
    RUN/checkpoints/      Lightning checkpoints (``last.ckpt`` is what a resume continues)
    RUN/model/            the EMA denoiser (save_pretrained: config.json + model.safetensors)
    RUN/metrics.json      validation loss (EMA weights) before and after training, steps
    RUN/logs/version_N/   training curves (metrics.csv; one version per start, a resume keeps the old)
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from diffusers import DDPMScheduler
from lightning.pytorch import LightningModule, seed_everything
from torch.optim.swa_utils import AveragedModel

from nfldm_sdk.models.denoisers import DENOISER_CLASSES
from nfldm_sdk.persistence import config_to_dict, nfldm_version
from nfldm_sdk.pipelines.sampling import NoiseSchedule, training_scheduler
from nfldm_training.data.latent_levels import LEVEL_CONDITIONS, LatentLevelDataModule
from nfldm_training.configs.ldm import LDMPreset, LDMTrainConfig, save_ldm_preset, with_latent_shapes
from nfldm_training.runs.trainer import (adamw_with_warmup, finish_run, fit_with_val_loss, make_trainer, on_run_writer,
                                    start_run)

__all__ = ["v_prediction_loss", "ema_multi_avg_fn", "LDMLightningModule", "LDMTrainResult", "train_ldm", "LOSS_WEIGHTINGS"]

LOSS_WEIGHTINGS = ("none", "min_snr")


def v_prediction_loss(denoiser: torch.nn.Module, x0: torch.Tensor, cond: tuple[torch.Tensor, ...], scheduler: DDPMScheduler,
                      *, weighting: str = "none", snr_gamma: float = 5.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """The v-prediction diffusion loss of one batch (module docstring).

    Args:
        denoiser: called as ``denoiser(x_t, t, *cond)``.
        x0: ``[B, ...]`` clean normalised latents.
        cond: the clean normalised upper-level latents (``()``, ``(g,)`` or ``(g, c)``).
        scheduler: the training ``DDPMScheduler`` (``prediction_type="v_prediction"``).
        weighting: ``"none"`` or ``"min_snr"``.
        snr_gamma: γ of ``"min_snr"``.
        generator: draws ε and t (on its device, then moved); None uses the global RNG on ``x0``'s device.
    Returns:
        scalar loss.
    """
    if scheduler.config.prediction_type != "v_prediction":
        raise ValueError(f"v_prediction_loss needs a v_prediction scheduler, got {scheduler.config.prediction_type!r}")
    B, T = x0.shape[0], int(scheduler.config.num_train_timesteps)
    dev = generator.device if generator is not None else x0.device
    noise = torch.randn(x0.shape, generator=generator, device=dev, dtype=torch.float32).to(x0)      # ε  [B, ...]
    t = torch.randint(0, T, (B,), generator=generator, device=dev).to(x0.device)                    # [B]
    x_t = scheduler.add_noise(x0, noise, t)
    target = scheduler.get_velocity(x0, noise, t)                                                    # v  [B, ...]
    pred = denoiser(x_t, t, *cond)
    per_sample = (pred.float() - target.float()).square().flatten(1).mean(1)                        # [B]
    if weighting == "none":
        return per_sample.mean()
    if weighting == "min_snr":
        ac = scheduler.alphas_cumprod.to(x0.device)[t].float()
        snr = ac / (1.0 - ac)
        return (per_sample * snr.clamp(max=float(snr_gamma)) / (snr + 1.0)).mean()
    raise ValueError(f"unknown loss weighting {weighting!r}: choose one of {LOSS_WEIGHTINGS}")


def ema_multi_avg_fn(decay: float) -> Callable:
    """``multi_avg_fn`` for ``AveragedModel``: ``ema ← lerp(ema, θ, 1 − d)`` with ``d = min(decay, (1+n)/(10+n))``.

    The warm-up (n = updates so far) lets short runs move away from the initial weights."""
    @torch.no_grad()
    def update(ema_params: list[torch.Tensor], params: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        d = min(float(decay), (1.0 + n) / (10.0 + n))
        torch._foreach_lerp_(ema_params, params, 1.0 - d)

    return update


class LDMLightningModule(LightningModule):
    """Trains one denoiser (ψ_g, ψ_c or ψ_f) with v-prediction and keeps its EMA (module docstring).

    Args:
        level: ``"g"``, ``"c"`` or ``"f"``.
        denoiser_config: the level's config (latent shapes filled in, `with_latent_shapes`).
        train_config: optimiser, EMA, loss weighting.
        schedule: the forward process.
    Batches are ``{"g": [B, G], "c": [B, 4, Zc, Yc, Xc], "f": [B, 4, Y, X]}`` (the levels the denoiser reads,
    normalised).
    """

    def __init__(self, level: str, denoiser_config: Any, train_config: LDMTrainConfig, schedule: NoiseSchedule):
        super().__init__()
        if level not in DENOISER_CLASSES:
            raise ValueError(f"unknown level {level!r}: choose g, c or f")
        if schedule.prediction_type != "v_prediction":
            raise ValueError(f"stage 3 trains with v-prediction; the schedule says {schedule.prediction_type!r}")
        self.level, self.cfg, self.schedule = level, train_config, schedule
        self.model = DENOISER_CLASSES[level](denoiser_config)
        # The EMA copy is a submodule (checkpointed, moved with the module) that the optimiser and DDP never touch.
        self.ema = AveragedModel(self.model, multi_avg_fn=ema_multi_avg_fn(train_config.ema_decay), use_buffers=False)
        self.ema.requires_grad_(False)
        self.noise = training_scheduler(schedule)

    @property
    def ema_model(self) -> torch.nn.Module:
        """The EMA denoiser (what gets saved)."""
        return self.ema.module

    def _split(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        return batch[self.level], tuple(batch[k] for k in self.model.cond_levels)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x0, cond = self._split(batch)
        loss = v_prediction_loss(self.model, x0, cond, self.noise, weighting=self.cfg.loss_weighting,
                                 snr_gamma=self.cfg.snr_gamma)
        self.log("train/loss", loss, batch_size=x0.shape[0], prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.ema.update_parameters(self.model)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        x0, cond = self._split(batch)
        # Fixed noise and timesteps per batch: validation losses of different steps are comparable.
        g = torch.Generator().manual_seed(int(self.cfg.seed) * 7919 + batch_idx)
        loss = v_prediction_loss(self.ema_model, x0, cond, self.noise, weighting=self.cfg.loss_weighting,
                                 snr_gamma=self.cfg.snr_gamma, generator=g)
        # Lightning averages over the epoch weighted by batch size (and across ranks with sync_dist)
        self.log("val/loss", loss, batch_size=x0.shape[0], on_epoch=True, sync_dist=True)

    def configure_optimizers(self):
        return adamw_with_warmup(self.model.parameters(), self.cfg)


# ------------------------------------------------------------------------------------------------ the run
@dataclass
class LDMTrainResult:
    """Outcome of `train_ldm`.

    Attributes:
        run_dir: the run directory.
        model_dir: ``run_dir/model`` (the EMA denoiser; load with ``DENOISER_CLASSES[level].from_pretrained``).
        level: the level trained.
        val_loss_untrained, val_loss: validation loss (EMA weights) before and after training (None without a
            validation split).
        global_step: optimisation steps in total (including those of a resumed run).
        resumed_from: the checkpoint the run continued from, or None.
        seconds: wall time of this call.
    """

    run_dir: Path
    model_dir: Path
    level: str
    val_loss_untrained: float | None
    val_loss: float | None
    global_step: int
    resumed_from: str | None
    seconds: float


RUN_INFO = "ldm_run.json"


def train_ldm(latents: str | Path, level: str, ldm: LDMPreset, run_dir: str | Path, *, preset_name: str = "custom",
              resume: bool = True, accelerator: str = "auto", devices: Any = "auto", strategy: Any = "auto",
              num_nodes: int = 1, progress: bool = True, log: Callable[[str], None] = print,
              trainer_kwargs: dict | None = None) -> LDMTrainResult:
    """Train the denoiser of `level` on the latent store `latents`, writing the run directory (module docstring).

    The denoiser's latent shapes come from the store (`with_latent_shapes`); the latent statistics from its
    ``latent_stats`` attribute. With `resume` and ``RUN/checkpoints/last.ckpt``, training
    continues from it up to ``max_steps`` in total.
    """
    start = time.perf_counter()
    if level not in LEVEL_CONDITIONS:
        raise ValueError(f"unknown level {level!r}: choose g, c or f")
    run_dir = Path(run_dir)
    tc = ldm.train_config(level)
    seed_everything(int(tc.seed), workers=True, verbose=False)
    data = LatentLevelDataModule(latents, level, tc.batch_size, tc.val_fraction, tc.num_workers, tc.seed)
    store = data.store
    ldm = with_latent_shapes(ldm, store.g_dim, store.c_shape, store.f_shape)
    resumed_from = start_run(run_dir, resume, lambda path: save_ldm_preset(ldm, path, level, preset_name))
    info = {"level": level, "preset": preset_name, "latents": str(latents), "num_scenes": len(store),
            "training_data_hash": store.training_data_hash(), "latent_stats": config_to_dict(data.stats),
            "noise_schedule": ldm.schedule.to_dict(), "sampler_defaults": dataclasses.asdict(ldm.sampler),
            "nfldm_version": nfldm_version()}
    on_run_writer((run_dir / RUN_INFO).write_text, json.dumps(info, indent=2) + "\n")

    module = LDMLightningModule(level, ldm.denoiser_config(level), tc, ldm.schedule)
    data.setup()
    has_val = len(data.val_set) > 0
    log(f"ψ_{level}: {sum(p.numel() for p in module.model.parameters()):,} parameters; latent {store.shape(level)}; "
        f"{len(data.train_set)} train / {len(data.val_set)} val scenes")
    trainer = make_trainer(run_dir, tc, accelerator=accelerator, devices=devices, strategy=strategy,
                           num_nodes=num_nodes, has_val=has_val, progress=progress, **(trainer_kwargs or {}))

    untrained, final = fit_with_val_loss(trainer, module, run_dir, resumed_from, log, has_val=has_val,
                                         validate_kwargs={"datamodule": data}, fit_kwargs={"datamodule": data})

    model_dir = finish_run(run_dir, module.ema_model, {"level": level, "val_loss_untrained": untrained,
                                                       "val_loss": final, "global_step": int(trainer.global_step)})
    return LDMTrainResult(run_dir=run_dir, model_dir=model_dir, level=level, val_loss_untrained=untrained,
                          val_loss=final, global_step=int(trainer.global_step), resumed_from=resumed_from,
                          seconds=time.perf_counter() - start)
