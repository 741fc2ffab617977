"""Training of the perception critic (`nfldm_sdk.models.critic.PerceptionCritic`) and the run `nfldm train critic`
performs.

Data (`nfldm_training.data.capture_views`): single captured views and their CARLA tags, of the **training episodes
only** (stage 1's episode split: `held_out_episodes` with ``val_fraction``), at the critic's image size. One step:
mirror each view left-right with probability ``flip`` (image and labels together; the draw is seeded by the seed
and the step, so a resumed run draws what the original would), then the per-pixel cross-entropy of the logits
against the captured tags mapped to the critic's classes (`SemanticClasses.tag_to_class`; `UNOBSERVED` ignored).
Validation on the held-out episodes: mIoU over the classes present (`nfldm_training.metrics.semantic`), the
majority-class baseline of the same pixels, pixel accuracy and per-class IoU.

`train_critic` — the run directory (the run protocol of `nfldm_training.runs.trainer`)::

    RUN/config.json          the resolved critic preset (stage "critic"; a resume reads it back)
    RUN/checkpoints/         Lightning checkpoints (``last.ckpt`` is what a resume continues)
    RUN/model/               the trained PerceptionCritic (config.json + model.safetensors)
    RUN/metrics.json         held-out figures of the untrained and of the trained critic, views per split
    RUN/logs/version_N/      training curves (metrics.csv; one version per start, a resume keeps the old)
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, seed_everything

from nfldm_sdk.models.critic import PerceptionCritic
from nfldm_training.configs.run_config import save_run_config
from nfldm_training.configs.sections import CriticPreset
from nfldm_training.data.capture_views import CaptureViewDataModule
from nfldm_training.metrics.semantic import ConfusionMatrix, majority_baseline_miou, mean_iou, per_class_iou
from nfldm_training.runs.result import RunResult
from nfldm_training.runs.trainer import (adamw_with_warmup, finish_run, fit_with_val_metrics, make_trainer,
                                         run_writer_log, start_run)

__all__ = ["CriticLightningModule", "CriticMetrics", "CriticTrainResult", "flip_views", "train_critic"]


@dataclass
class CriticMetrics:
    """Held-out figures of a critic (pixels of the validation views, classes of the critic's set).

    Attributes:
        miou: mIoU over the classes present in the captured tags.
        majority_miou: mIoU of predicting the most frequent class everywhere, same pixels (the chance level).
        pixel_accuracy: fraction of pixels whose class is right.
        class_iou: class name -> IoU, classes present only.
        step: optimisation step at which they were measured.
    """

    miou: float
    majority_miou: float
    pixel_accuracy: float
    class_iou: dict
    step: int


def flip_views(images: torch.Tensor, target: torch.Tensor, flip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror left-right the views where `flip` is set: ``images [B, 3, H, W]``, ``target [B, H, W]``,
    ``flip [B]`` bool -> the same shapes (labels move with their pixels)."""
    f = flip.to(images.device)
    return (torch.where(f[:, None, None, None], images.flip(-1), images),
            torch.where(f[:, None, None], target.flip(-1), target))


class CriticLightningModule(LightningModule):
    """Trains a `PerceptionCritic` (module docstring). Batches are ``(images [B, 3, H, W], tags [B, H, W] uint8)``."""

    def __init__(self, preset: CriticPreset):
        super().__init__()
        self.model = PerceptionCritic(preset.critic)
        self.cfg = preset.train
        classes = self.model.classes
        # CARLA tag -> class index on the batch's device (a buffer, so it moves with the module)
        self.register_buffer("tag_to_class", torch.as_tensor(classes.tag_to_class), persistent=False)
        self.val_confusion = ConfusionMatrix(classes.num_classes)
        self.last_val: CriticMetrics | None = None
        """Figures of the latest validation."""

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, tags = batch
        target = self.tag_to_class[tags.long()]                                      # [B, H, W], -1 = ignored
        g = torch.Generator().manual_seed(int(self.cfg.seed) * 1_000_003 + int(self.global_step))
        images, target = flip_views(images, target, torch.rand(images.shape[0], generator=g) < float(self.cfg.flip))
        logits = self.model(images)
        if bool((target >= 0).any()):
            loss = F.cross_entropy(logits, target, ignore_index=-1)
        else:
            loss = logits.sum() * 0.0
        self.log("train/loss", loss, batch_size=images.shape[0], prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, tags = batch
        self.val_confusion.update(self.model(images).argmax(1), self.tag_to_class[tags.long()])

    def on_validation_epoch_end(self) -> None:
        cm = self.val_confusion.compute()          # torchmetrics' compute() already sums over DDP ranks
        self.val_confusion.reset()
        miou, majority = mean_iou(cm), majority_baseline_miou(cm)
        accuracy = float(cm.diagonal().sum() / cm.sum().clamp_min(1.0))
        iou = per_class_iou(cm)
        class_iou = {n: float(v) for n, v in zip(self.model.classes.names, iou.tolist()) if v == v}
        self.log_dict({"val/miou": torch.tensor(miou), "val/majority_miou": torch.tensor(majority),
                       "val/pixel_accuracy": torch.tensor(accuracy)})
        self.last_val = CriticMetrics(miou=miou, majority_miou=majority, pixel_accuracy=accuracy, class_iou=class_iou,
                                      step=int(self.global_step))

    def configure_optimizers(self):
        return adamw_with_warmup(self.model.parameters(), self.cfg)


# ------------------------------------------------------------------------------------------------ the run
@dataclass
class CriticTrainResult(RunResult):
    """Outcome of `train_critic`: the `RunResult` fields (load ``model_dir`` with ``PerceptionCritic.from_pretrained``)
    and

    Attributes:
        untrained, final: held-out figures before and after training (None without held-out episodes).
        train_views, val_views: views of each split.
    """

    untrained: CriticMetrics | None
    final: CriticMetrics | None
    train_views: int
    val_views: int


def _describe(m: CriticMetrics) -> str:
    return (f"held-out mIoU {m.miou:.3f} (majority-class baseline {m.majority_miou:.3f}), "
            f"pixel accuracy {m.pixel_accuracy:.3f}")


def train_critic(stores: Sequence[str], preset: CriticPreset, run_dir: str | Path, *, preset_name: str = "custom",
                 resume: bool = True, accelerator: str = "auto", devices: Any = "auto", strategy: Any = "auto",
                 num_nodes: int = 1, progress: bool = True, log: Callable[[str], None] = print,
                 trainer_kwargs: dict | None = None) -> CriticTrainResult:
    """Train the critic on the training episodes of `stores`, writing the run directory (module docstring).

    With `resume` and ``RUN/checkpoints/last.ckpt``, training continues from it up to ``preset.train.max_steps``
    steps in total (a finished run returns at once); otherwise it starts from scratch. The untrained critic's
    held-out figures are measured once and kept in ``metrics.json`` across resumes.
    """
    log = run_writer_log(log)
    start = time.perf_counter()
    run_dir = Path(run_dir)
    tc = preset.train
    resumed_from = start_run(run_dir, resume, lambda path: save_run_config(path, "critic", preset_name, preset))

    seed_everything(int(tc.seed), workers=True, verbose=False)
    module = CriticLightningModule(preset)
    data = CaptureViewDataModule(stores, preset.critic.image_size, tc)
    data.setup()
    has_val = len(data.val_set) > 0
    if not has_val:
        log("no held-out views (a store needs 2+ episodes or enough frames): training the critic without validation")
    log(f"perception critic: {sum(p.numel() for p in module.model.parameters()):,} parameters; "
        f"{len(data.train_set)} train / {len(data.val_set)} held-out views at {tuple(preset.critic.image_size)}")
    trainer = make_trainer(
        run_dir, tc, accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes,
        has_val=has_val, progress=progress, val_batches=tc.val_batches,
        inference_mode=False,  # no_grad instead: metric states reset under inference_mode could not be updated later
        **(trainer_kwargs or {}))

    def measure(results: list[dict], step: int) -> CriticMetrics | None:
        if not results or module.last_val is None:
            return None
        return dataclasses.replace(module.last_val, step=int(step))

    untrained, final = fit_with_val_metrics(
        trainer, module, data, run_dir, resumed_from, log, has_val=has_val, measure=measure,
        metrics_type=CriticMetrics, last_measured=lambda: module.last_val,
        describe_untrained=lambda m: f"untrained critic: {_describe(m)}",
        describe_final=lambda m: f"step {trainer.global_step}: critic {_describe(m)}")

    metrics = {"untrained": asdict(untrained) if untrained else None, "final": asdict(final) if final else None,
               "global_step": int(trainer.global_step), "stores": [str(s) for s in stores], "preset": preset_name,
               "train_views": len(data.train_set), "val_views": len(data.val_set),
               "classes": list(module.model.classes.names)}
    model_dir = finish_run(run_dir, module.model, metrics)
    return CriticTrainResult(run_dir=run_dir, model_dir=model_dir, untrained=untrained, final=final,
                             train_views=len(data.train_set), val_views=len(data.val_set),
                             global_step=int(trainer.global_step), resumed_from=resumed_from,
                             seconds=time.perf_counter() - start)
