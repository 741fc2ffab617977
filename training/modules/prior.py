"""Training of the offline SDS prior (`nfldm_sdk.models.prior_unet.PriorUNet`) and the run `nfldm train prior` performs.

Data (`nfldm_training.data.prior_images`: two classes, images resized to the prior's size, bilinear + antialiased):

* class 1 "dataset": every ``frame_stride``-th frame of every camera of every episode of the capture stores;
* class 2 "artifact": renders of raw generated scenes — ``artifact_scenes`` scenes sampled from the model bundle
  (seeds ``seed, seed+1, …``), each rendered from ``artifact_views`` cameras of the SDS camera distribution (so the
  prior sees the views refinement will show it) — plus the image files of ``--artifacts DIR`` (png/jpg). They are
  rendered once and kept in ``RUN/artifacts.safetensors`` (uint8), which a resumed run reuses.

Batches mix the classes with expected artifact share ``artifact_fraction`` (weighted sampling with replacement).
One step (v-prediction, `nfldm_training.modules.diffusion.v_prediction_loss`): ``x_0 = 2·image − 1``, the class
label is replaced by the null class 0 with probability ``cond_dropout``, ``t ~ U{0…T−1}``, loss
``‖ψ(x_t, t, class) − v‖²``. The EMA of the weights is validated and saved, as in stage 3 (`EMADenoiserModule`).

The run directory::

    RUN/config.json           the resolved prior preset (+ its name)
    RUN/prior_run.json        stores, bundle, artifact sources, image counts
    RUN/artifacts.safetensors the artifact images (uint8 [M, 3, H, W]) — rendered once, reused on resume
    RUN/checkpoints/          Lightning checkpoints (``last.ckpt`` is what a resume continues)
    RUN/model/                the EMA prior (config.json + model.safetensors; `PriorGuidance.from_pretrained`)
    RUN/metrics.json          validation loss before and after training, steps
    RUN/logs/version_N/       training curves (metrics.csv; one version per start, a resume keeps the old)
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from lightning.pytorch import seed_everything
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from nfldm_sdk.models.prior_unet import PRIOR_CLASSES, PriorUNet
from nfldm_sdk.persistence import nfldm_version
from nfldm_training.configs.run_config import save_run_config
from nfldm_training.configs.sections import PriorPreset
from nfldm_training.data.prior_images import (CaptureImageDataset, LabelledImages, interleaved_split, read_image_folder,
                                              render_artifact_images)
from nfldm_training.errors import TrainingError
from nfldm_training.modules.diffusion import EMADenoiserModule
from nfldm_training.runs.result import RunResult
from nfldm_training.runs.trainer import finish_run, fit_with_val_loss, make_trainer, on_run_writer, start_run, run_writer_log

__all__ = ["PriorLightningModule", "PriorTrainResult", "train_prior", "RUN_INFO", "ARTIFACTS_NAME"]

RUN_INFO = "prior_run.json"
ARTIFACTS_NAME = "artifacts.safetensors"


# ============================================================================================ Lightning
class PriorLightningModule(EMADenoiserModule):
    """Trains `PriorUNet` with v-prediction and condition dropout; keeps its EMA (module docstring).

    Batches are ``(images uint8 [B, 3, H, W], labels int64 [B])``.
    """

    def __init__(self, preset: PriorPreset):
        super().__init__(lambda: PriorUNet(preset.prior), preset.train, preset.prior.schedule, "the prior")
        self.preset = preset

    def inputs(self, batch, train: bool) -> tuple[torch.Tensor, tuple[torch.Tensor]]:
        """``(x0 = images / 127.5 − 1 [B, 3, H, W], (labels,))``; in training the labels are replaced by the null
        class with probability ``cond_dropout``."""
        images, labels = batch
        if train:
            drop = torch.rand(labels.shape, device=labels.device) < float(self.cfg.cond_dropout)
            labels = torch.where(drop, torch.full_like(labels, PRIOR_CLASSES["null"]), labels)
        return images.float() / 127.5 - 1.0, (labels,)                              # uint8 -> [-1, 1]


# ============================================================================================ the run
@dataclass
class PriorTrainResult(RunResult):
    """Outcome of `train_prior`: the `RunResult` fields (``model_dir`` holds the EMA prior) and

    Attributes:
        num_dataset_images, num_artifact_images: images of each class (train + val).
        val_loss_untrained, val_loss: validation loss (EMA) before and after training (None without a split).
    """

    num_dataset_images: int
    num_artifact_images: int
    val_loss_untrained: float | None
    val_loss: float | None


def _artifact_images(run_dir: Path, preset: PriorPreset, bundle: str | Path | None, artifacts: str | Path | None,
                     device: str, log: Callable[[str], None], progress: bool) -> torch.Tensor:
    """Load ``RUN/artifacts.safetensors`` when a previous call of this run wrote it, else render/read and write it."""
    path = run_dir / ARTIFACTS_NAME
    source = {"bundle": str(bundle) if bundle else None, "artifacts": str(artifacts) if artifacts else None}
    if path.is_file():
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("source", "{}"))
        if meta == source:
            log(f"reusing the artifact images of {path}")
            return load_file(str(path))["images"]
    size, tc = tuple(preset.prior.image_size), preset.train
    parts = []
    if bundle:
        log(f"rendering {tc.artifact_scenes} generated scenes × {tc.artifact_views} views of {bundle} (artifact class)")
        parts.append(render_artifact_images(bundle, tc.artifact_scenes, tc.artifact_views, size, steps=tc.generate_steps,
                                            seed=tc.seed, device=device, progress=progress))
    if artifacts:
        parts.append(read_image_folder(artifacts, size))
    if not parts:
        raise TrainingError("no artifact images: pass --bundle BUNDLE (renders of generated scenes) and/or --artifacts DIR")
    images = torch.cat(parts).contiguous()
    # Every rank renders the same images (same seeds); one writes them, whole or not at all (written beside, then
    # renamed), so that a rank of an externally launched run never reads a half-written file.
    on_run_writer(_save_images, images, path, source)
    return images


def _save_images(images: torch.Tensor, path: Path, source: dict) -> None:
    """Write `images` to `path` with its `source` as metadata, whole or not at all (beside it, then renamed)."""
    partial = path.with_name(path.name + ".partial")
    save_file({"images": images}, str(partial), metadata={"source": json.dumps(source)})
    os.replace(partial, path)


def train_prior(stores: Sequence[str], preset: PriorPreset, run_dir: str | Path, *, bundle: str | Path | None = None,
                artifacts: str | Path | None = None, preset_name: str = "custom", resume: bool = True,
                accelerator: str = "auto", devices: Any = "auto", strategy: Any = "auto", num_nodes: int = 1,
                render_device: str | None = None, progress: bool = True, log: Callable[[str], None] = print,
                trainer_kwargs: dict | None = None) -> PriorTrainResult:
    """Train the prior on captured images and artifact images, writing the run directory (module docstring).

    With `resume` and ``RUN/checkpoints/last.ckpt``, training continues from it up to ``max_steps`` in total.
    `render_device` renders the artifact scenes (default: cuda when available).
    """
    log = run_writer_log(log)
    start = time.perf_counter()
    run_dir = Path(run_dir)
    tc = preset.train
    resumed_from = start_run(run_dir, resume, lambda path: save_run_config(path, "prior", preset_name, preset))
    seed_everything(int(tc.seed), workers=True, verbose=False)

    render_device = render_device or ("cuda" if torch.cuda.is_available() else "cpu")
    art = _artifact_images(run_dir, preset, bundle, artifacts, render_device, log, progress)
    captured = CaptureImageDataset(stores, preset.prior.image_size, tc.frame_stride)
    if len(captured) == 0:
        raise TrainingError(f"the capture stores {list(stores)} hold no committed frames")
    d_train, d_val = interleaved_split(len(captured), tc.val_fraction)
    a_train, a_val = interleaved_split(len(art), tc.val_fraction)
    c_data, c_art = PRIOR_CLASSES["dataset"], PRIOR_CLASSES["artifact"]
    train_set = LabelledImages([(captured, c_data, d_train), (art, c_art, a_train)])
    val_set = LabelledImages([(captured, c_data, d_val), (art, c_art, a_val)])
    on_run_writer((run_dir / RUN_INFO).write_text, json.dumps({
        "preset": preset_name, "stores": [str(s) for s in stores], "bundle": str(bundle) if bundle else None,
        "artifacts": str(artifacts) if artifacts else None, "dataset_images": len(captured), "artifact_images": len(art),
        "classes": PRIOR_CLASSES, "nfldm_version": nfldm_version()}, indent=2) + "\n")

    # Balanced sampling: artifact items together get `artifact_fraction` of the probability mass.
    f = float(tc.artifact_fraction)
    weights = torch.tensor([(1.0 - f) / len(d_train)] * len(d_train) + [f / len(a_train)] * len(a_train), dtype=torch.float64)
    sampler = torch.utils.data.WeightedRandomSampler(weights, num_samples=max(len(train_set), int(tc.batch_size)),
                                                     replacement=True, generator=torch.Generator().manual_seed(int(tc.seed)))
    loader = torch.utils.data.DataLoader(train_set, batch_size=int(tc.batch_size), sampler=sampler, drop_last=True,
                                         num_workers=int(tc.num_workers), persistent_workers=int(tc.num_workers) > 0)
    has_val = len(val_set) > 0
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=int(tc.batch_size), shuffle=False,
                                             num_workers=int(tc.num_workers)) if has_val else None

    module = PriorLightningModule(preset)
    log(f"prior: {sum(p.numel() for p in module.model.parameters()):,} parameters at {tuple(preset.prior.image_size)}; "
        f"{len(d_train)}+{len(a_train)} train / {len(d_val)}+{len(a_val)} val images (dataset+artifact)")
    trainer = make_trainer(run_dir, tc, accelerator=accelerator, devices=devices, strategy=strategy,
                           num_nodes=num_nodes, has_val=has_val, progress=progress, **(trainer_kwargs or {}))

    untrained, final = fit_with_val_loss(trainer, module, run_dir, resumed_from, log, has_val=has_val,
                                         validate_kwargs={"dataloaders": val_loader},
                                         fit_kwargs={"train_dataloaders": loader, "val_dataloaders": val_loader})
    model_dir = finish_run(run_dir, module.ema_model, {"val_loss_untrained": untrained, "val_loss": final,
                                                       "global_step": int(trainer.global_step)})
    return PriorTrainResult(run_dir=run_dir, model_dir=model_dir, num_dataset_images=len(captured),
                            num_artifact_images=len(art), val_loss_untrained=untrained, val_loss=final,
                            global_step=int(trainer.global_step), resumed_from=resumed_from,
                            seconds=time.perf_counter() - start)
