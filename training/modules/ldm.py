"""Lightning training of one level of the hierarchical latent diffusion, and the run `nfldm train ldm` performs.

One step (docs/method.md, stage 3): the v-prediction loss of `nfldm_training.modules.diffusion` with ``x_0`` = the
normalised latent of the level, weighted by ``loss_weighting`` (``"none"``: plain v-MSE; ``"min_snr"``: Min-SNR-γ
with γ = ``snr_gamma``). The conditions are the **ground-truth** clean upper levels of the same scene (g for c;
g and c for f), so the three levels train independently and in parallel.

Conditional training (the denoiser's ``bev_condition``): every sample also reads the BEV map of its captured window
(the latent store's ``bev``); in training steps a fraction ``cond_dropout`` of the samples gets the null tokens
instead (``bev_drop``), so the saved network is the conditional and the unconditional model of classifier-free
guidance at once; validation is conditional. ψ_g with ``trajectory_in_g`` models ``[g, τ]``: the store's
trajectory, normalised with the mean/std over the store (recorded in the config), flattened and concatenated to g.
A latent store without the conditioning arrays is refused for either (`LatentStore.require_conditioning`).

The EMA of the weights (`EMADenoiserModule`) is validated and **it is what gets saved** (``RUN/model``).
Strategies: one device or DDP; FSDP would shard the model but not its EMA copy and is not supported.

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
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from lightning.pytorch import seed_everything

from nfldm_sdk.models.denoisers import DENOISER_CLASSES
from nfldm_sdk.persistence import config_to_dict, nfldm_version
from nfldm_sdk.models.noise_schedule import NoiseSchedule
from nfldm_training.configs.ldm import with_latent_shapes
from nfldm_training.configs.run_config import save_run_config
from nfldm_training.configs.sections import LDMPreset, LDMTrainConfig
from nfldm_training.data.latent_levels import LEVEL_CONDITIONS, LatentLevelDataModule
from nfldm_training.modules.diffusion import EMADenoiserModule, v_prediction_loss
from nfldm_training.runs.result import RunResult
from nfldm_training.runs.trainer import finish_run, fit_with_val_loss, make_trainer, on_run_writer, start_run, run_writer_log

__all__ = ["LDMLightningModule", "LDMTrainResult", "train_ldm", "RUN_INFO"]


class LDMLightningModule(EMADenoiserModule):
    """Trains one denoiser (ψ_g, ψ_c or ψ_f) with v-prediction and keeps its EMA (module docstring).

    Args:
        level: ``"g"``, ``"c"`` or ``"f"``.
        denoiser_config: the level's config (latent shapes filled in, `with_latent_shapes`).
        train_config: optimiser, EMA, loss weighting.
        schedule: the forward process.
    Batches are ``{"g": [B, G], "c": [B, 4, Zc, Yc, Xc], "f": [B, 4, Y, X]}`` (the levels the denoiser reads,
    normalised), plus ``"bev" [B, Y, X]`` uint8 and ``"trajectory" [B, K, 3]`` for conditional training.
    """

    def __init__(self, level: str, denoiser_config: Any, train_config: LDMTrainConfig, schedule: NoiseSchedule):
        if level not in DENOISER_CLASSES:
            raise ValueError(f"unknown level {level!r}: choose g, c or f")
        super().__init__(lambda: DENOISER_CLASSES[level](denoiser_config), train_config, schedule, "stage 3")
        self.level, self.schedule = level, schedule

    def inputs(self, batch: dict[str, torch.Tensor], train: bool) -> tuple[torch.Tensor, tuple]:
        """The level's latents and the upper levels it is conditioned on (``cond_levels``); for a BEV-conditioned
        denoiser a trailing ``(bev [B, Y, X] uint8, bev_drop [B] bool)`` pair (drops only when `train`); with
        ``trajectory_in_g`` x0 is ``[g, τ]`` ``[B, G + 3K]`` (module docstring)."""
        cfg = self.model.config
        x0 = batch[self.level]
        if self.level == "g" and getattr(cfg, "trajectory_in_g", False):
            tau = batch["trajectory"].to(x0)
            mean = torch.as_tensor(cfg.trajectory_mean, dtype=x0.dtype, device=x0.device)
            std = torch.as_tensor(cfg.trajectory_std, dtype=x0.dtype, device=x0.device).clamp_min(1e-3)
            x0 = torch.cat([x0, ((tau - mean) / std).flatten(1)], 1)
        cond: tuple = tuple(batch[k] for k in self.model.cond_levels)
        if getattr(self.model, "conditional", False):
            B = x0.shape[0]
            drop = (torch.rand(B, device=x0.device) < float(cfg.cond_dropout)) if train else torch.zeros(
                B, dtype=torch.bool, device=x0.device)
            cond = (*cond, _BEVInput(batch["bev"], drop))
        return x0, cond

    def loss(self, model: torch.nn.Module, x0: torch.Tensor, cond: tuple,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """`v_prediction_loss` weighted by ``loss_weighting`` / ``snr_gamma`` (a trailing BEV input of `inputs` is
        passed as ``bev=``/``bev_drop=``)."""
        if cond and isinstance(cond[-1], _BEVInput):
            model = functools.partial(model, bev=cond[-1].bev, bev_drop=cond[-1].drop)
            cond = cond[:-1]
        return v_prediction_loss(model, x0, cond, self.noise, weighting=self.cfg.loss_weighting,
                                 snr_gamma=self.cfg.snr_gamma, generator=generator)


@dataclass
class _BEVInput:
    """The BEV condition of one batch: ``bev [B, Y, X]`` uint8 CARLA tags, ``drop [B]`` bool (null tokens there)."""

    bev: torch.Tensor
    drop: torch.Tensor


# ------------------------------------------------------------------------------------------------ the run
@dataclass
class LDMTrainResult(RunResult):
    """Outcome of `train_ldm`: the `RunResult` fields (``model_dir`` holds the EMA denoiser; load it with
    ``DENOISER_CLASSES[level].from_pretrained``) and

    Attributes:
        level: the level trained.
        val_loss_untrained, val_loss: validation loss (EMA weights) before and after training (None without a
            validation split).
    """

    level: str
    val_loss_untrained: float | None
    val_loss: float | None


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
    log = run_writer_log(log)
    start = time.perf_counter()
    if level not in LEVEL_CONDITIONS:
        raise ValueError(f"unknown level {level!r}: choose g, c or f")
    run_dir = Path(run_dir)
    tc = ldm.train_config(level)
    seed_everything(int(tc.seed), workers=True, verbose=False)
    dcfg = ldm.denoiser_config(level)
    extras = (("bev",) if dcfg.bev_condition else ()) + (
        ("trajectory",) if level == "g" and getattr(dcfg, "trajectory_in_g", False) else ())
    data = LatentLevelDataModule(latents, level, tc.batch_size, tc.val_fraction, tc.num_workers, tc.seed, extras=extras)
    store = data.store
    cond_sizes = {}
    if store.has_conditioning:
        cond_sizes = {"bev_grid_yx": store.bev_grid_yx, "trajectory_frames": store.trajectory_frames}
        if "trajectory" in extras:
            cond_sizes["trajectory_stats"] = store.trajectory_stats()
    ldm = with_latent_shapes(ldm, store.g_dim, store.c_shape, store.f_shape, **cond_sizes)
    resumed_from = start_run(run_dir, resume, lambda path: save_run_config(path, "ldm", preset_name, ldm, level=level))
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
