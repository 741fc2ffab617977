"""Diffusion training shared by stage 3 (`nfldm_training.modules.ldm`) and the SDS prior (`nfldm_training.modules.prior`).

The loss (docs/method.md, stage 3, v-prediction): ``x_0`` = the clean (normalised) data, ``ε ~ N(0, I)``,
``t ~ U{0, …, T-1}``, ``x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε`` (``scheduler.add_noise``), target
``v = √ᾱ_t ε − √(1-ᾱ_t) x_0`` (``scheduler.get_velocity``), loss ``w_t · ‖ψ(x_t, t, cond) − v‖²`` averaged over
elements and samples. ``w_t = 1`` by default (``weighting="none"``: plain v-MSE, which is the x_0-loss weighted by
``SNR_t + 1``); ``"min_snr"`` uses ``min(SNR_t, γ) / (SNR_t + 1)`` (Min-SNR-γ for v-prediction).

EMA: an exponential moving average of the weights (``torch.optim.swa_utils.AveragedModel``; decay
``min(ema_decay, (1+n)/(10+n))`` after n updates, `ema_multi_avg_fn`) is kept as a submodule of
`EMADenoiserModule`, so it is checkpointed and resumed with the rest; validation runs on it and it is what the
stages save. The EMA copy is frozen, so DDP ignores it; FSDP would shard the model but not its EMA copy.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from diffusers import DDPMScheduler
from lightning.pytorch import LightningModule
from torch.optim.swa_utils import AveragedModel

from nfldm_sdk.models.noise_schedule import NoiseSchedule, training_scheduler
from nfldm_training.runs.trainer import adamw_with_warmup

__all__ = ["LOSS_WEIGHTINGS", "v_prediction_loss", "ema_multi_avg_fn", "EMADenoiserModule"]

LOSS_WEIGHTINGS = ("none", "min_snr")


def v_prediction_loss(denoiser: torch.nn.Module, x0: torch.Tensor, cond: tuple[torch.Tensor, ...], scheduler: DDPMScheduler,
                      *, weighting: str = "none", snr_gamma: float = 5.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """The v-prediction diffusion loss of one batch (module docstring).

    Args:
        denoiser: called as ``denoiser(x_t, t, *cond)``.
        x0: ``[B, ...]`` clean data (stage 3: normalised latents; the prior: images in [-1, 1]).
        cond: what the denoiser reads after ``x_t, t`` (stage 3: the clean normalised upper-level latents ``()``,
            ``(g,)`` or ``(g, c)``; the prior: ``(class labels [B],)``).
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


class EMADenoiserModule(LightningModule):
    """A denoiser trained with `v_prediction_loss` whose EMA copy is validated and saved (module docstring).

    Subclasses pass the network's constructor, the training config and the noise schedule, and implement
    `inputs` (a batch -> ``(x0, cond)``); `loss` can be overridden to weight the loss.

    One training step: ``loss(model, *inputs(batch, train=True))``, logged as ``train/loss``, then an EMA update.
    Validation: ``loss(ema_model, *inputs(batch, train=False))`` with fixed noise and timesteps per batch (a
    generator seeded ``seed · 7919 + batch_idx``), so the validation losses of different steps are comparable;
    logged as ``val/loss``, averaged over the epoch weighted by batch size (and across ranks).

    Args:
        build_model: returns the network to train (called once, after the schedule is checked).
        train_config: reads ``ema_decay``, ``seed`` and the optimiser's ``lr``, ``weight_decay``, ``warmup_steps``.
        schedule: the forward process; must be ``v_prediction``.
        name: what trains, in the error for another prediction type ("stage 3", "the prior").
    """

    def __init__(self, build_model: Callable[[], torch.nn.Module], train_config: Any, schedule: NoiseSchedule,
                 name: str):
        super().__init__()
        if schedule.prediction_type != "v_prediction":
            raise ValueError(f"{name} trains with v-prediction; the schedule says {schedule.prediction_type!r}")
        self.cfg = train_config
        self.model = build_model()
        # The EMA copy is a submodule (checkpointed, moved with the module) that the optimiser and DDP never touch.
        self.ema = AveragedModel(self.model, multi_avg_fn=ema_multi_avg_fn(train_config.ema_decay), use_buffers=False)
        self.ema.requires_grad_(False)
        self.noise = training_scheduler(schedule)

    @property
    def ema_model(self) -> torch.nn.Module:
        """The EMA denoiser (what gets saved)."""
        return self.ema.module

    def inputs(self, batch: Any, train: bool) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """``(x0 [B, ...], cond)`` of a batch: the clean data and the conditions the denoiser reads after ``x_t, t``;
        `train` is True in training steps (where a subclass may drop conditions)."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, x0: torch.Tensor, cond: tuple[torch.Tensor, ...],
             generator: torch.Generator | None = None) -> torch.Tensor:
        """`v_prediction_loss` of `model` on one batch (unweighted; a subclass may weight it)."""
        return v_prediction_loss(model, x0, cond, self.noise, generator=generator)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """The v-prediction loss of the trained (non-EMA) weights on one batch; logged as ``train/loss``."""
        x0, cond = self.inputs(batch, train=True)
        loss = self.loss(self.model, x0, cond)
        self.log("train/loss", loss, batch_size=x0.shape[0], prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """One EMA update of the saved weights after every optimisation step."""
        self.ema.update_parameters(self.model)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """The loss of the EMA weights (the ones saved) with noise seeded per batch, so every validation draws the
        same noise and figures compare across steps; logged as ``val/loss``."""
        x0, cond = self.inputs(batch, train=False)
        g = torch.Generator().manual_seed(int(self.cfg.seed) * 7919 + batch_idx)
        loss = self.loss(self.ema_model, x0, cond, generator=g)
        self.log("val/loss", loss, batch_size=x0.shape[0], on_epoch=True, sync_dist=True)

    def configure_optimizers(self):
        """AdamW with the linear warm-up of the stage's training config (`adamw_with_warmup`)."""
        return adamw_with_warmup(self.model.parameters(), self.cfg)
