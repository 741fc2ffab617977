"""Training of the offline SDS prior (`nfldm_sdk.guidance.guidance.PriorUNet`) and the run `nfldm train prior` performs.

Data (two classes, images resized to the prior's size, bilinear + antialiased):

* class 1 "dataset": every ``frame_stride``-th frame of every camera of every episode of the capture stores
  (read lazily through `sim_bridge.store.reader.open_store`);
* class 2 "artifact": renders of raw generated scenes — ``artifact_scenes`` scenes sampled from the model bundle
  (seeds ``seed, seed+1, …``), each rendered from ``artifact_views`` cameras of the SDS camera distribution
  (`nfldm_sdk.guidance.sds.sample_sds_cameras`, so the prior sees the views refinement will show it) — plus the image files of
  ``--artifacts DIR`` (png/jpg). They are rendered once and kept in ``RUN/artifacts.safetensors`` (uint8), which a
  resumed run reuses.

Batches mix the classes with expected artifact share ``artifact_fraction`` (weighted sampling with replacement).
One step (v-prediction, `nfldm_training.modules.ldm.v_prediction_loss`): ``x_0 = 2·image − 1``, the class label is
replaced by the null class 0 with probability ``cond_dropout``, ``t ~ U{0…T−1}``, loss ``‖ψ(x_t, t, class) − v‖²``.
The EMA of the weights is validated and saved, as in stage 3.

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

import numpy as np
import torch
from lightning.pytorch import LightningModule, seed_everything
from torch.optim.swa_utils import AveragedModel

from nfldm_sdk.guidance.guidance import PRIOR_CLASSES, PriorUNet
from nfldm_sdk.persistence import nfldm_version
from nfldm_sdk.pipelines.sampling import training_scheduler
from nfldm_training.data.capture_windows import resize_images
from nfldm_training.modules.ldm import ema_multi_avg_fn, v_prediction_loss
from nfldm_training.configs.prior import PriorPreset, save_prior_preset
from nfldm_training.runs.trainer import (adamw_with_warmup, finish_run, fit_with_val_loss, make_trainer, on_run_writer,
                                    start_run)
from nfldm_training.errors import TrainingError, TrainingInputNotFound

__all__ = ["CaptureImageDataset", "render_artifact_images", "read_image_folder", "PriorLightningModule",
           "PriorTrainResult", "train_prior", "RUN_INFO", "ARTIFACTS_NAME"]

RUN_INFO = "prior_run.json"
ARTIFACTS_NAME = "artifacts.safetensors"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


# ============================================================================================ data
class CaptureImageDataset(torch.utils.data.Dataset):
    """Single captured images of capture stores: item ``i`` -> ``uint8 [3, H, W]`` at ``image_size``.

    Args:
        stores: capture store paths/URLs.
        image_size: ``(H, W)`` output size.
        frame_stride: every k-th committed frame of each episode.
    Items are ordered store, episode, frame, camera. Stores are opened lazily per process (picklable for workers).
    """

    def __init__(self, stores: Sequence[str], image_size: tuple[int, int], frame_stride: int = 1):
        from sim_bridge.store.reader import open_store

        self.stores, self.image_size = [str(s) for s in stores], tuple(int(v) for v in image_size)
        self.index: list[tuple[int, str, int, int]] = []
        for si, path in enumerate(self.stores):
            store = open_store(path)
            for ep in store:
                for t in range(0, ep.num_frames, max(1, int(frame_stride))):
                    self.index.extend((si, ep.name, t, n) for n in range(ep.num_cameras))
        self._open: dict[int, Any] = {}

    def __getstate__(self):
        return {**self.__dict__, "_open": {}}

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> torch.Tensor:
        from sim_bridge.store.reader import open_store

        si, name, t, n = self.index[i]
        if si not in self._open:
            self._open[si] = open_store(self.stores[si])
        rgb = self._open[si].episode(name).rgb[t, n]                                  # [H, W, 3] uint8
        return _to_uint8(resize_images(rgb[None], self.image_size))[0]               # [3, h, w]


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [0, 1] -> uint8 (round)."""
    return (x.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)


def read_image_folder(folder: str | Path, image_size: tuple[int, int]) -> torch.Tensor:
    """All png/jpg files of `folder` (sorted by name) as ``uint8 [M, 3, H, W]`` at ``image_size``."""
    import imageio.v3 as iio

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise TrainingInputNotFound(f"no {'/'.join(IMAGE_SUFFIXES)} images in {folder}")
    out = []
    for p in files:
        img = np.asarray(iio.imread(p))
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, -1)
        out.append(_to_uint8(resize_images(img[None, ..., :3], image_size))[0])
    return torch.stack(out)


def render_artifact_images(bundle: str | Path, num_scenes: int, views: int, image_size: tuple[int, int], *,
                           steps: int = 25, seed: int = 0, device: str | torch.device = "cpu",
                           progress: bool = False) -> torch.Tensor:
    """Renders of raw generated scenes: ``uint8 [num_scenes · views, 3, H, W]`` at ``image_size``.

    Scene i is generated with seed ``seed + i`` and rendered at the decoder's image size from `views` cameras of
    the SDS distribution (`sample_sds_cameras`, CPU generator seeded ``seed + i``), then resized.
    """
    from nfldm_sdk.pipelines.generator import SceneGenerator
    from nfldm_sdk.guidance.sds import sample_sds_cameras

    gen = SceneGenerator.from_pretrained(bundle, device=device)
    h, w = gen.scene_ae.config.image_size
    out = []
    for scene in gen.generate(int(num_scenes), seed=int(seed), steps=int(steps), progress=progress):
        cams = sample_sds_cameras((int(views),), w, h, torch.Generator().manual_seed(scene.seed))
        rgb = scene.render(cams).rgb.cpu().numpy()                                   # [V, h, w, 3] uint8
        out.append(_to_uint8(resize_images(rgb, image_size)))
    return torch.cat(out)


class _LabelledImages(torch.utils.data.Dataset):
    """(image uint8 [3,H,W], class) pairs from a list of (dataset, class, indices)."""

    def __init__(self, parts: Sequence[tuple[Any, int, Sequence[int]]]):
        self.items = [(d, c, i) for d, c, idx in parts for i in idx]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, int]:
        d, c, i = self.items[k]
        return d[i], c


def _split(n: int, val_fraction: float) -> tuple[list[int], list[int]]:
    """Every k-th index (k = round(1 / val_fraction)) is validation; none when that leaves no training item."""
    if val_fraction <= 0 or n < 2:
        return list(range(n)), []
    k = max(2, int(round(1.0 / val_fraction)))
    val = list(range(k - 1, n, k))
    return [i for i in range(n) if i % k != k - 1], val


# ============================================================================================ Lightning
class PriorLightningModule(LightningModule):
    """Trains `PriorUNet` with v-prediction and condition dropout; keeps its EMA (module docstring).

    Batches are ``(images uint8 [B, 3, H, W], labels int64 [B])``.
    """

    def __init__(self, preset: PriorPreset):
        super().__init__()
        if preset.prior.schedule.prediction_type != "v_prediction":
            raise ValueError(f"the prior trains with v-prediction; the schedule says {preset.prior.schedule.prediction_type!r}")
        self.preset, self.cfg = preset, preset.train
        self.model = PriorUNet(preset.prior)
        self.ema = AveragedModel(self.model, multi_avg_fn=ema_multi_avg_fn(self.cfg.ema_decay), use_buffers=False)
        self.ema.requires_grad_(False)
        self.noise = training_scheduler(preset.prior.schedule)

    @property
    def ema_model(self) -> PriorUNet:
        return self.ema.module

    @staticmethod
    def _x0(images: torch.Tensor) -> torch.Tensor:
        return images.float() / 127.5 - 1.0                                         # uint8 -> [-1, 1]

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        drop = torch.rand(labels.shape, device=labels.device) < float(self.cfg.cond_dropout)
        labels = torch.where(drop, torch.full_like(labels, PRIOR_CLASSES["null"]), labels)
        loss = v_prediction_loss(self.model, self._x0(images), (labels,), self.noise)
        self.log("train/loss", loss, batch_size=images.shape[0], prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.ema.update_parameters(self.model)

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        g = torch.Generator().manual_seed(int(self.cfg.seed) * 7919 + batch_idx)  # same noise every validation
        loss = v_prediction_loss(self.ema_model, self._x0(images), (labels,), self.noise, generator=g)
        self.log("val/loss", loss, batch_size=images.shape[0], on_epoch=True, sync_dist=True)

    def configure_optimizers(self):
        return adamw_with_warmup(self.model.parameters(), self.cfg)


# ============================================================================================ the run
@dataclass
class PriorTrainResult:
    """Outcome of `train_prior`.

    Attributes:
        run_dir: the run directory; model_dir: ``run_dir/model`` (the EMA prior).
        num_dataset_images, num_artifact_images: images of each class (train + val).
        val_loss_untrained, val_loss: validation loss (EMA) before and after training (None without a split).
        global_step: optimisation steps in total (including a resumed run's).
        resumed_from: the checkpoint continued from, or None.
        seconds: wall time of this call.
    """

    run_dir: Path
    model_dir: Path
    num_dataset_images: int
    num_artifact_images: int
    val_loss_untrained: float | None
    val_loss: float | None
    global_step: int
    resumed_from: str | None
    seconds: float


def _artifact_images(run_dir: Path, preset: PriorPreset, bundle: str | Path | None, artifacts: str | Path | None,
                     device: str, log: Callable[[str], None], progress: bool) -> torch.Tensor:
    """Load ``RUN/artifacts.safetensors`` when a previous call of this run wrote it, else render/read and write it."""
    from safetensors.torch import load_file

    path = run_dir / ARTIFACTS_NAME
    source = {"bundle": str(bundle) if bundle else None, "artifacts": str(artifacts) if artifacts else None}
    if path.is_file():
        from safetensors import safe_open

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
    from safetensors.torch import save_file

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
    start = time.perf_counter()
    run_dir = Path(run_dir)
    tc = preset.train
    resumed_from = start_run(run_dir, resume, lambda path: save_prior_preset(preset, path, preset_name))
    seed_everything(int(tc.seed), workers=True, verbose=False)

    render_device = render_device or ("cuda" if torch.cuda.is_available() else "cpu")
    art = _artifact_images(run_dir, preset, bundle, artifacts, render_device, log, progress)
    captured = CaptureImageDataset(stores, preset.prior.image_size, tc.frame_stride)
    if len(captured) == 0:
        raise TrainingError(f"the capture stores {list(stores)} hold no committed frames")
    d_train, d_val = _split(len(captured), tc.val_fraction)
    a_train, a_val = _split(len(art), tc.val_fraction)
    c_data, c_art = PRIOR_CLASSES["dataset"], PRIOR_CLASSES["artifact"]
    train_set = _LabelledImages([(captured, c_data, d_train), (art, c_art, a_train)])
    val_set = _LabelledImages([(captured, c_data, d_val), (art, c_art, a_val)])
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
