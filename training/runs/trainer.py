"""The Lightning run-directory plumbing shared by the training stages (scene-ae, latent-ae, ldm, prior).

Every stage's run directory has the same training-state layout::

    RUN/checkpoints/             Lightning checkpoints; ``last.ckpt`` is what a resume continues
    RUN/logs/version_N/metrics.csv  training curves (CSVLogger), one version per start: a resume keeps the old ones
    RUN/metrics.json             validation figures; the untrained model's are measured once and kept across resumes

    RUN/config.json              the resolved preset of the stage, in the one schema of every stage
                                 (`nfldm_training.configs.run_config`; written at the start, a resume reads it back)
    RUN/model/                   the trained network (save_pretrained; `nfldm_sdk.persistence.resolve_model_dir`
                                 turns ``RUN`` or ``RUN/model`` into this folder)

and the same protocol: `start_run` finds ``last.ckpt`` (resume) or clears stale checkpoints (fresh run) and
writes ``config.json`` (the stage passes a writer calling `save_run_config` with its stage name and section); build the `Trainer` (`make_trainer`); validate the untrained model unless a resumed run
kept its figures (`kept_untrained`); fit and always leave ``last.ckpt`` resumable (`fit_resumable`);
`finish_run` saves ``model/`` and ``metrics.json``. What differs between the stages (the module, the data, the
figures, Trainer flags such as ``inference_mode``) stays in each stage's ``train_*`` function.

Under DDP every rank runs the stage's ``train_*`` function. Only one process writes the run directory: every
write goes through `on_run_writer` (global rank 0), so that ranks neither delete each other's checkpoints nor
write the same file at once.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

from nfldm_training.configs.base import TrainConfig
from nfldm_training.configs.run_config import RUN_CONFIG_NAME

METRICS_NAME = "metrics.json"
MODEL_DIR = "model"


def is_run_writer() -> bool:
    """Whether this process writes the run directory: global rank 0.

    Before the `Trainer` exists the rank is known only from the launcher's environment: Lightning reads
    ``RANK``/``LOCAL_RANK``/``SLURM_PROCID`` into ``rank_zero_only.rank`` at import (and the Trainer sets it to
    the global rank); ``NODE_RANK`` tells the first process of the other machines of a multi-node run, which
    start with local rank 0, apart from the global rank 0.
    """
    return rank_zero_only.rank == 0 and int(os.environ.get("NODE_RANK", "0") or 0) == 0


def on_run_writer(write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any | None:
    """``write(*args, **kwargs)`` on the process that writes the run directory (`is_run_writer`); None, without
    calling it, on every other rank. Every write into a run directory goes through here."""
    return write(*args, **kwargs) if is_run_writer() else None


def run_writer_log(log: Callable[[str], None]) -> Callable[[str], None]:
    """`log` on the process that writes the run directory (`is_run_writer`), a no-op on every other DDP rank: each
    rank runs the whole stage function, and without this every line of a run would be printed once per process."""
    return lambda message: on_run_writer(log, message)


def model_dir(run_dir: str | Path) -> Path:
    """``RUN/model``: where a stage saves its trained network."""
    return Path(run_dir) / MODEL_DIR


def start_run(run_dir: str | Path, resume: bool, write_config: Callable[[Path], Any]) -> str | None:
    """Open a run directory: the checkpoint to continue from (`find_resume_checkpoint`), then, on the writing
    rank only, clear stale checkpoints when there is none (a fresh run), create the folder and write the resolved
    config with ``write_config(RUN/config.json)`` (the stages pass
    ``lambda path: save_run_config(path, stage, preset_name, section, ...)``).

    Returns:
        the checkpoint a resume continues from, or None (fresh run).
    """
    run_dir = Path(run_dir)
    resumed_from = find_resume_checkpoint(run_dir, resume)

    def prepare() -> None:
        if resumed_from is None:
            clear_checkpoints(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run_dir / RUN_CONFIG_NAME)

    on_run_writer(prepare)
    return resumed_from


def finish_run(run_dir: str | Path, model: Any, metrics: dict) -> Path:
    """Save the trained `model` (``save_pretrained``) to ``RUN/model`` and `metrics` to ``RUN/metrics.json``, on
    the writing rank only; returns ``RUN/model`` on every rank."""
    folder = model_dir(run_dir)

    def write() -> None:
        model.save_pretrained(folder)
        write_metrics(run_dir, metrics)

    on_run_writer(write)
    return folder


def last_checkpoint(run_dir: str | Path) -> Path:
    """``RUN/checkpoints/last.ckpt``: the checkpoint a resume continues (it may not exist yet)."""
    return Path(run_dir) / "checkpoints" / "last.ckpt"


def find_resume_checkpoint(run_dir: str | Path, resume: bool = True) -> str | None:
    """The checkpoint to continue from when `resume`: the newest of ``RUN/checkpoints/last.ckpt`` and the
    ``last-v*.ckpt`` that older runs wrote when resuming beside an existing ``last.ckpt``; None if there is none."""
    last = last_checkpoint(run_dir)
    found = [p for p in [last, *last.parent.glob("last-v*.ckpt")] if p.is_file()]
    return str(max(found, key=lambda p: p.stat().st_mtime_ns)) if resume and found else None


def clear_checkpoints(run_dir: str | Path) -> None:
    """Delete ``RUN/checkpoints/*.ckpt``: a fresh run must not mix with another run's checkpoints (the stages
    call it through `start_run`, on one rank)."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    if ckpt_dir.exists():
        for old in ckpt_dir.glob("*.ckpt"):
            old.unlink()


def lr_factor(step: int, train_cfg: TrainConfig) -> float:
    """The learning-rate multiplier at optimisation step `step` (0-based): ``min(1, (step + 1) / warmup_steps)``
    during the warm-up, then 1 (``lr_schedule="constant"``) or half a cosine from 1 at the warm-up's end down to
    ``min_lr_fraction`` at ``max_steps`` (``"cosine"``; held there after it)."""
    warm = max(0, int(train_cfg.warmup_steps))
    if warm and step < warm:
        return min(1.0, (step + 1) / warm)
    if train_cfg.lr_schedule == "constant":   # the values are checked once, by TrainConfig
        return 1.0
    floor = float(train_cfg.min_lr_fraction)
    span = max(1, int(train_cfg.max_steps) - warm)
    progress = min(1.0, (step - warm) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def adamw_with_warmup(params: Iterable[torch.nn.Parameter], train_cfg: TrainConfig) -> dict:
    """AdamW (``train_cfg.lr``, ``train_cfg.weight_decay``) with the learning-rate schedule `lr_factor` (a linear
    warm-up over ``train_cfg.warmup_steps`` optimisation steps, then constant or cosine-decayed,
    ``train_cfg.lr_schedule``), in the form `LightningModule.configure_optimizers` returns (the scheduler steps per
    optimisation step; its state is in the checkpoints, so a resumed run continues the schedule)."""
    opt = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, train_cfg))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def make_trainer(run_dir: str | Path, train_cfg: Any, *, accelerator: str = "auto", devices: Any = "auto",
                 strategy: Any = "auto", num_nodes: int = 1, has_val: bool, progress: bool = True,
                 val_batches: float | None = None, extra_callbacks: Iterable[Callback] = (),
                 **trainer_kwargs: Any) -> Trainer:
    """A `Trainer` writing checkpoints and CSV logs into `run_dir`, with the stage's step-based schedule.

    Args:
        run_dir: the run directory.
        train_cfg: the stage's training config; reads ``precision, max_steps, val_interval, log_every, grad_clip``.
            Checkpoints (and validation, when `has_val`) every ``val_interval`` optimisation steps, keeping the
            latest (``step{N}.ckpt``) and ``last.ckpt``.
        accelerator, devices, strategy, num_nodes: Lightning's, unchanged.
        has_val: whether there is a validation split; without one validation is switched off.
        progress: show the progress bar.
        val_batches: validation batches per validation (None or 0: all).
        extra_callbacks: callbacks added after the checkpoint callback.
        **trainer_kwargs: further `Trainer` arguments (a stage's own flags, e.g. ``inference_mode=False``).
    """
    run_dir = Path(run_dir)
    tc = train_cfg
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="step{step:07d}", auto_insert_metric_name=False,
                                 every_n_train_steps=max(1, int(tc.val_interval)), save_top_k=1, save_last=True,
                                 # a resumed run overwrites last.ckpt (not last-v1.ckpt, which resume would not see)
                                 enable_version_counter=False)
    return Trainer(
        accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes, precision=tc.precision,
        max_steps=int(tc.max_steps), max_epochs=-1, val_check_interval=int(tc.val_interval) if has_val else None,
        check_val_every_n_epoch=None if has_val else 1, limit_val_batches=(val_batches or 1.0) if has_val else 0,
        num_sanity_val_steps=0, log_every_n_steps=max(1, int(tc.log_every)),
        gradient_clip_val=float(tc.grad_clip) or None, callbacks=[checkpoint, *extra_callbacks],
        # logs/version_N per start: a fixed version would make CSVLogger delete the earlier metrics.csv on resume
        logger=CSVLogger(run_dir, name="logs"), default_root_dir=run_dir,
        enable_progress_bar=progress, enable_model_summary=False, **trainer_kwargs)


def read_metrics(run_dir: str | Path) -> dict:
    """``RUN/metrics.json`` as written by an earlier start of the run, or {} when there is none."""
    path = Path(run_dir) / METRICS_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def kept_untrained(run_dir: str | Path, key: str, resumed_from: str | None) -> Any | None:
    """The untrained model's figures (``metrics.json[key]``) kept from an earlier start when the run resumes;
    None when they must be measured (fresh run, or none recorded)."""
    if not resumed_from:
        return None
    return read_metrics(run_dir).get(key)


def fit_resumable(trainer: Trainer, module: LightningModule, run_dir: str | Path, resumed_from: str | None,
                  log: Callable[[str], None], **fit_kwargs: Any) -> None:
    """``trainer.fit`` from `resumed_from` (None: from scratch), then save ``RUN/checkpoints/last.ckpt`` whatever
    the checkpoint cadence, so the final state is always resumable. `fit_kwargs`: the data (datamodule or loaders)."""
    if resumed_from:
        log(f"resuming from {resumed_from}")
    trainer.fit(module, ckpt_path=resumed_from, **fit_kwargs)
    trainer.save_checkpoint(last_checkpoint(run_dir))


def fit_with_val_metrics(trainer: Trainer, module: LightningModule, datamodule: Any, run_dir: str | Path,
                         resumed_from: str | None, log: Callable[[str], None], *, has_val: bool,
                         measure: Callable[[list[dict], int], Any], metrics_type: type,
                         describe_untrained: Callable[[Any], str], describe_final: Callable[[Any], str],
                         last_measured: Callable[[], Any] | None = None) -> tuple[Any, Any]:
    """For the stages scored by a metrics record (the two auto-encoders): measure the untrained model (or keep the
    record of an earlier start when resuming: ``metrics.json["untrained"]``), `fit_resumable`, then the final model.

    Args:
        measure: ``(trainer.validate results, step) -> record`` (None when nothing was measured).
        metrics_type: the record's dataclass, rebuilt from the kept ``untrained`` dict on resume.
        describe_untrained / describe_final: the log line of each record.
        last_measured: the record of the validation that ran inside ``fit`` (reused when it is of the last step).
    Returns:
        ``(untrained, final)`` records; both None without validation data.
    """
    untrained = final = None
    if has_val:
        kept = kept_untrained(run_dir, "untrained", resumed_from)
        if kept is not None:
            untrained = metrics_type(**kept)
        else:
            untrained = measure(trainer.validate(module, datamodule=datamodule, verbose=False), 0)
            log(describe_untrained(untrained))
    fit_resumable(trainer, module, run_dir, resumed_from, log, datamodule=datamodule)
    if has_val:
        final = last_measured() if last_measured is not None else None
        if final is None or final.step != trainer.global_step:  # no validation ran at the last step: run one
            final = measure(trainer.validate(module, datamodule=datamodule, verbose=False), trainer.global_step)
    if final:
        log(describe_final(final))
    return untrained, final


def fit_with_val_loss(trainer: Trainer, module: LightningModule, run_dir: str | Path, resumed_from: str | None,
                      log: Callable[[str], None], *, has_val: bool, validate_kwargs: dict, fit_kwargs: dict,
                      key: str = "val_loss_untrained") -> tuple[float | None, float | None]:
    """For the stages scored by one validation loss (diffusion denoisers, the SDS prior): measure the untrained
    model's ``val/loss`` (or keep the figure of an earlier start when resuming), `fit_resumable`, then measure the
    final ``val/loss``.

    Args:
        validate_kwargs: the data of ``trainer.validate`` (``datamodule=`` or ``dataloaders=``).
        fit_kwargs: the data of ``trainer.fit`` (``datamodule=`` or ``train_dataloaders=``/``val_dataloaders=``).
        key: the ``metrics.json`` entry that holds the untrained loss.
    Returns:
        ``(untrained, final)`` validation losses; both None without validation data.
    """
    untrained = final = None
    if has_val:
        kept = kept_untrained(run_dir, key, resumed_from)
        if kept is not None:
            untrained = float(kept)
        else:
            untrained = float(trainer.validate(module, verbose=False, **validate_kwargs)[0]["val/loss"])
            log(f"untrained: val loss {untrained:.4f}")
    fit_resumable(trainer, module, run_dir, resumed_from, log, **fit_kwargs)
    if has_val:
        final = float(trainer.validate(module, verbose=False, **validate_kwargs)[0]["val/loss"])
        log(f"step {trainer.global_step}: val loss (EMA) {final:.4f}")
    return untrained, final


def write_metrics(run_dir: str | Path, metrics: dict) -> Path:
    """Write `metrics` to ``RUN/metrics.json`` (indented JSON; NaN allowed) and return the path (every rank
    calling it writes: the stages call it through `finish_run`)."""
    path = Path(run_dir) / METRICS_NAME
    path.write_text(json.dumps(metrics, indent=2, allow_nan=True) + "\n")
    return path
