"""Lightning training of the stage-1 scene auto-encoder, and the run that `nfldm train scene-ae` performs.

`SceneAELightningModule` — one step: encode the window's input views into a voxel field, render it at the target
views, ``loss = image_weight · ‖i − î‖ + depth_weight · ‖ρ − ρ̂‖ + semantic_weight · CE(p̂, tags)
+ occupancy_weight · CE(O, bin of ρ) + opacity_weight · BCE(α, surface in box)`` (depth only where the captured
surface lies in the voxel box, see `nfldm_training.metrics.masks.box_depth_mask`; the semantic cross-entropy on every
pixel, sky included, for models with a semantic head; the occupancy loss on the input views' frusta, the opacity
loss on the targets, `nfldm_training.modules.losses`). ``render_views`` renders a random subset of the targets.
``trainable="decoder"`` / ``"labels"`` fine-tune the image decoder (image loss) / the label decoder (semantic
cross-entropy) of a trained stage 1 on its frozen fields. Validation on held-out episodes: PSNR
of every view's reconstruction, depth AbsRel pooled over usable pixels and the semantic mIoU (argmax of the rendered
class distribution against the captured classes), plus a PNG grid (ground truth, reconstruction, both depths)
written to ``<run>/val_images/`` at every validation.

`train_scene_ae` — the whole run in a run directory::

    RUN/config.json          resolved preset (written first; a resume reads it back)
    RUN/checkpoints/         Lightning checkpoints (training state; ``last.ckpt`` is what a resume continues)
    RUN/model/               the trained SceneAutoEncoder (save_pretrained: config.json + model.safetensors)
    RUN/metrics.json         validation PSNR / AbsRel of the untrained and of the trained model
    RUN/logs/version_N/      training curves (CSVLogger metrics.csv; one version per start, a resume keeps the old)
    RUN/val_images/*.png     validation grids

Multi-GPU / multi-node runs use Lightning's own strategies (``devices``, ``strategy``, ``num_nodes``).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import imageio.v3 as iio
import numpy as np
import torch
from lightning.pytorch import LightningModule, seed_everything
from torchmetrics import MeanMetric, SumMetric

from nfldm_sdk.models.latent_ae import LatentAutoEncoder
from nfldm_sdk.models.scene_ae import SceneAEConfig, SceneAutoEncoder
from nfldm_sdk.persistence import resolve_model_dir
from nfldm_sdk.rendering.api import HIT_ALPHA
from nfldm_training.configs.run_config import save_run_config
from nfldm_training.configs.sections import Preset, SceneAETrainConfig
from nfldm_training.data.capture_windows import SceneBatch, SceneDataModule, split_views
from nfldm_training.errors import TrainingError
from nfldm_training.metrics.image import depth_abs_rel, psnr
from nfldm_training.metrics.masks import box_depth_mask, empty_ray_mask
from nfldm_training.metrics.semantic import ConfusionMatrix, mean_iou
from nfldm_training.modules.losses import (depth_loss, frustum_depth_target, image_loss, occupancy_loss, opacity_loss,
                                           semantic_loss)
from nfldm_training.runs.init_weights import init_state_dict
from nfldm_training.runs.result import RunResult
from nfldm_training.runs.trainer import (adamw_with_warmup, finish_run, fit_with_val_metrics, make_trainer,
                                         on_run_writer, start_run, run_writer_log)


@dataclass
class ValMetrics:
    """Validation figures of a scene auto-encoder.

    Attributes:
        psnr: mean PSNR (dB) over all validation views.
        abs_rel: depth AbsRel pooled over all usable pixels (captured surface inside the voxel box).
        step: optimisation step at which they were measured.
        miou: semantic mIoU over the classes present in the validation captures (None without a semantic head).
        sky_empty: fraction of the captured sky pixels (no hit) rendered with no hit at the SDK's
            `nfldm_sdk.rendering.api.HIT_ALPHA` (opacity below 0.5); None when the validation saw no sky.
        psnr_lae: mean PSNR (dB) of the renders of the fields' LAE reconstructions V̂ (None without a latent
            auto-encoder in the run).
    """

    psnr: float
    abs_rel: float
    step: int
    miou: float | None = None
    sky_empty: float | None = None
    psnr_lae: float | None = None


class SceneAELightningModule(LightningModule):
    """Trains a `SceneAutoEncoder` (see the module docstring).

    Args:
        model_config: the model to build.
        train_config: losses, optimiser, view hold-out, seed.
        image_dir: folder for the validation PNG grids (None: no images).
    """

    def __init__(self, model_config: SceneAEConfig, train_config: SceneAETrainConfig, image_dir: str | Path | None = None,
                 latent_ae: LatentAutoEncoder | None = None):
        super().__init__()
        self.model = SceneAutoEncoder(model_config)
        self.cfg = train_config
        self.trainable = train_config.trainable
        if self.trainable == "decoder":
            # the field (and the labels rendered from it) must stay what the later stages were trained on
            self.model.encoder.requires_grad_(False)
            if self.model.semantic_head is not None:
                self.model.semantic_head.requires_grad_(False)
            if self.model.label_decoder is not None:
                self.model.label_decoder.requires_grad_(False)
        elif self.trainable == "labels":
            if self.model.label_decoder is None:
                raise TrainingError(_NEEDS_LABEL_DECODER)
            self.model.requires_grad_(False)
            self.model.label_decoder.requires_grad_(True)
        self.latent_ae = latent_ae.requires_grad_(False).eval() if latent_ae is not None else None
        """The frozen LAE whose reconstructions V̂ the decoder also learns (``lae_input_fraction``) and through
        which validation also reports PSNR (``val/psnr_lae``); None without one."""
        self.val_psnr_lae = MeanMetric()
        self.image_dir = Path(image_dir) if image_dir is not None else None
        self.val_psnr = MeanMetric()
        self.val_abs_rel_sum = SumMetric()
        self.val_abs_rel_count = SumMetric()
        self.val_sky_empty = SumMetric()
        self.val_sky_count = SumMetric()
        classes = self.model.config.classes
        self.num_classes = 0 if classes is None else classes.num_classes
        self.val_confusion = ConfusionMatrix(classes.num_classes) if classes is not None else None
        # CARLA tag -> class index on the batch's device (a buffer, so it moves with the module)
        self.register_buffer("tag_to_class", torch.as_tensor(classes.tag_to_class if classes is not None
                                                             else np.full(256, -1)), persistent=False)
        self.last_val: ValMetrics | None = None
        """Figures of the latest validation."""

    # ---------------------------------------------------------------------------------------------- steps
    def _losses(self, batch: SceneBatch, inputs: torch.Tensor, targets: torch.Tensor):
        mc = self.model.config
        cams = batch.cameras()                                                     # [B, V]
        out = self.model(batch.images[:, inputs], cams[:, inputs], cams[:, targets])
        t_cams = cams[:, targets]
        gt_rgb, gt_depth = batch.images[:, targets], batch.depth[:, targets]       # [B, T, 3, H, W], [B, T, H, W]
        usable = box_depth_mask(gt_depth, batch.valid[:, targets], t_cams, self.model.bounds, mc.near, mc.far)
        l_img = image_loss(out.render.rgb, gt_rgb, self.cfg.image_loss, self.cfg.ssim_weight)
        l_depth = depth_loss(out.render.depth, gt_depth, usable, mc.near, mc.far, self.cfg.depth_loss)
        gt_class = self.tag_to_class[batch.semantic[:, targets].long()]           # [B, T, H, W], -1 = ignored
        l_sem = (semantic_loss(out.render.semantic, gt_class, self.cfg.semantic_balance) if out.render.semantic is not None
                 else l_img.new_zeros(()))
        return out, usable, l_img, l_depth, l_sem, gt_class

    def _geometry_losses(self, batch: SceneBatch, out, inputs: torch.Tensor, targets: torch.Tensor, usable: torch.Tensor):
        """The dense-depth geometry losses: frustum occupancy of the input views, rendered opacity of the targets."""
        mc = self.model.config
        zero = out.render.alpha.new_zeros(())
        l_occ = l_opa = zero
        if self.cfg.occupancy_weight > 0 and out.occupancy is not None:
            edges = torch.cat([self.model.bin_centres - 0.5 * self.model.bin_deltas,
                               self.model.bin_centres[-1:] + 0.5 * self.model.bin_deltas[-1:]])
            target, weight = frustum_depth_target(batch.depth[:, inputs], edges, mc.downsample)
            l_occ = occupancy_loss(out.occupancy, target, weight)
        if self.cfg.opacity_weight > 0:
            cams = batch.cameras()[:, targets]
            empty = empty_ray_mask(batch.depth[:, targets], batch.valid[:, targets], cams, self.model.bounds, mc.near)
            l_opa = opacity_loss(out.render.alpha, usable, empty & ~usable)
        return l_occ, l_opa

    def train(self, mode: bool = True):
        """Lightning switches every child to train mode at fit start; a frozen LAE stays in eval mode."""
        super().train(mode)
        if self.latent_ae is not None:
            self.latent_ae.eval()
        return self

    def _frozen_render(self, batch: SceneBatch, inputs: torch.Tensor, targets: torch.Tensor, g: torch.Generator):
        """The frozen encoder's field (or, for ``lae_input_fraction`` of the scenes, its LAE reconstruction) rendered
        at the target views without gradients: ``(RenderOutput [B, T, ...], target cameras [B, T])``."""
        cams = batch.cameras()
        with torch.no_grad():
            field = self.model.encode(batch.images[:, inputs], cams[:, inputs])
            if self.latent_ae is not None and self.cfg.lae_input_fraction > 0:
                pick = torch.rand(batch.batch_size, generator=g) < self.cfg.lae_input_fraction
                if bool(pick.any()):
                    field = field.where(pick, self.latent_ae.decode(self.latent_ae.encode(field)))
            t_cams = cams[:, targets]
            return self.model.render_features(field, t_cams), t_cams

    def _decoder_step(self, batch: SceneBatch, inputs: torch.Tensor, targets: torch.Tensor,
                      g: torch.Generator) -> torch.Tensor:
        """``trainable="decoder"``: the frozen field rendered (`_frozen_render`), then the image decoder trained on
        the image loss alone."""
        rendered, t_cams = self._frozen_render(batch, inputs, targets, g)
        out = self.model.decode_rendered(rendered, int(t_cams.height), int(t_cams.width))
        l_img = image_loss(out.rgb, batch.images[:, targets], self.cfg.image_loss, self.cfg.ssim_weight)
        self.log_dict({"train/loss": l_img, "train/image": l_img}, batch_size=batch.batch_size, prog_bar=True)
        return l_img

    def _labels_step(self, batch: SceneBatch, inputs: torch.Tensor, targets: torch.Tensor,
                     g: torch.Generator) -> torch.Tensor:
        """``trainable="labels"``: the frozen field rendered (`_frozen_render`), then the label decoder trained on
        the (class-balanced, ``semantic_balance``) semantic cross-entropy alone; the image decoder does not run."""
        rendered, t_cams = self._frozen_render(batch, inputs, targets, g)
        C, h, w = rendered.features.shape[-3:]
        probs = self.model.label_probabilities(rendered.features.reshape(-1, C, h, w), rendered.alpha.reshape(-1, h, w),
                                               int(t_cams.height), int(t_cams.width))
        gt_class = self.tag_to_class[batch.semantic[:, targets].long()].flatten(0, 1)   # [B·T, H, W]
        l_sem = semantic_loss(probs, gt_class, self.cfg.semantic_balance)
        self.log_dict({"train/loss": l_sem, "train/semantic": l_sem}, batch_size=batch.batch_size, prog_bar=True)
        return l_sem

    def training_step(self, batch: SceneBatch, batch_idx: int) -> torch.Tensor:
        # The hold-out draw depends only on the seed and the step, so a resumed run draws what the original would.
        g = torch.Generator().manual_seed(int(self.cfg.seed) * 1_000_003 + int(self.global_step))
        inputs, targets = split_views(batch.num_views, self.cfg.target_holdout, g)
        if self.cfg.render_views is not None and 0 < self.cfg.render_views < len(targets):
            targets = targets[torch.randperm(len(targets), generator=g)[: self.cfg.render_views]].sort().values
        dev = batch.images.device
        inputs, targets = inputs.to(dev), targets.to(dev)
        if self.trainable == "decoder":
            return self._decoder_step(batch, inputs, targets, g)
        if self.trainable == "labels":
            return self._labels_step(batch, inputs, targets, g)
        out, usable, l_img, l_depth, l_sem, _ = self._losses(batch, inputs, targets)
        l_occ, l_opa = self._geometry_losses(batch, out, inputs, targets, usable)
        loss = (self.cfg.image_weight * l_img + self.cfg.depth_weight * l_depth + self.cfg.semantic_weight * l_sem
                + self.cfg.occupancy_weight * l_occ + self.cfg.opacity_weight * l_opa)
        logs = {"train/loss": loss, "train/image": l_img, "train/depth": l_depth}
        if self.val_confusion is not None:
            logs["train/semantic"] = l_sem
        if self.cfg.occupancy_weight > 0:
            logs["train/occupancy"] = l_occ
        if self.cfg.opacity_weight > 0:
            logs["train/opacity"] = l_opa
        self.log_dict(logs, batch_size=batch.batch_size, prog_bar=True)
        return loss

    def validation_step(self, batch: SceneBatch, batch_idx: int) -> None:
        mc = self.model.config
        views = torch.arange(batch.num_views, device=batch.images.device)
        out, usable, _, _, _, gt_class = self._losses(batch, views, views)
        self.val_psnr.update(psnr(out.render.rgb, batch.images).flatten())
        if self.latent_ae is not None:
            rec = self.latent_ae.decode(self.latent_ae.encode(out.field))
            self.val_psnr_lae.update(psnr(self.model.decode(rec, batch.cameras()).rgb, batch.images).flatten())
        if self.val_confusion is not None:
            self.val_confusion.update(out.render.semantic.argmax(-3), gt_class)
        s, n = depth_abs_rel(out.render.depth, batch.depth, usable, mc.near, mc.far)
        self.val_abs_rel_sum.update(s.sum())
        self.val_abs_rel_count.update(n.sum().to(s.dtype))
        sky = ~torch.isfinite(batch.depth)
        self.val_sky_empty.update((sky & (out.render.alpha < HIT_ALPHA)).sum().float())
        self.val_sky_count.update(sky.sum().float())
        if batch_idx == 0 and self.image_dir is not None and not self.trainer.sanity_checking:
            path = self.image_dir / f"val_step{int(self.global_step):06d}.png"
            on_run_writer(save_val_grid, path, batch.images[0], out.render.rgb[0], batch.depth[0], out.render.depth[0], mc.far)

    def on_validation_epoch_end(self) -> None:
        count = self.val_abs_rel_count.compute()
        abs_rel = self.val_abs_rel_sum.compute() / count.clamp_min(1.0)
        if float(count) == 0:
            abs_rel = torch.full_like(abs_rel, float("nan"))
        value = self.val_psnr.compute()  # torchmetrics' compute() already reduces over DDP ranks
        logs = {"val/psnr": value, "val/abs_rel": abs_rel}
        sky_count = float(self.val_sky_count.compute())
        sky_empty = float(self.val_sky_empty.compute()) / sky_count if sky_count > 0 else None
        if sky_empty is not None:
            logs["val/sky_empty"] = torch.tensor(sky_empty)
        psnr_lae = None
        if self.latent_ae is not None:
            psnr_lae = float(self.val_psnr_lae.compute())
            logs["val/psnr_lae"] = torch.tensor(psnr_lae)
            self.val_psnr_lae.reset()
        miou = None
        if self.val_confusion is not None:
            miou = mean_iou(self.val_confusion.compute())
            logs["val/miou"] = torch.tensor(miou)
            self.val_confusion.reset()
        self.log_dict(logs)
        self.last_val = ValMetrics(psnr=float(value), abs_rel=float(abs_rel), step=int(self.global_step), miou=miou,
                                   sky_empty=sky_empty, psnr_lae=psnr_lae)
        for m in (self.val_psnr, self.val_abs_rel_sum, self.val_abs_rel_count, self.val_sky_empty, self.val_sky_count):
            m.reset()

    def on_fit_start(self) -> None:
        if self.cfg.channels_last:
            for net in (self.model.encoder, self.model.decoder):
                net.to(memory_format=torch.channels_last)

    def on_fit_end(self) -> None:
        # back to the standard layout: safetensors stores contiguous tensors only
        for net in (self.model.encoder, self.model.decoder):
            net.to(memory_format=torch.contiguous_format)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the frozen LAE is not part of this run's state: it has its own files and is passed again on a resume
        for key in [k for k in checkpoint["state_dict"] if k.startswith("latent_ae.")]:
            del checkpoint["state_dict"][key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.latent_ae is not None:
            checkpoint["state_dict"].update({f"latent_ae.{k}": v for k, v in self.latent_ae.state_dict().items()})

    def configure_optimizers(self):
        return adamw_with_warmup([p for p in self.model.parameters() if p.requires_grad], self.cfg)


# ------------------------------------------------------------------------------------------------ images
def _depth_to_gray(depth: torch.Tensor, far: float) -> torch.Tensor:
    """``[V, H, W]`` metres -> ``[V, 3, H, W]`` in [0, 1], inverse depth (near bright); no hit black."""
    inv = torch.where(torch.isfinite(depth), 1.0 / depth.clamp_min(1.0), torch.zeros_like(depth))
    g = (inv.clamp(1.0 / far, 1.0) - 1.0 / far) / (1.0 - 1.0 / far)
    g = torch.where(torch.isfinite(depth), g, torch.zeros_like(g))
    return g[:, None].expand(-1, 3, -1, -1)


def save_val_grid(path: Path, gt_rgb: torch.Tensor, rgb: torch.Tensor, gt_depth: torch.Tensor, depth: torch.Tensor,
                  far: float) -> Path:
    """Write a PNG grid, one column per view: rows = captured RGB, reconstruction, captured depth, rendered depth.

    Args: ``gt_rgb, rgb [V, 3, H, W]`` in [0, 1]; ``gt_depth, depth [V, H, W]`` metres; `far` scales the depth rows.
    """
    rows = [gt_rgb, rgb.clamp(0, 1), _depth_to_gray(gt_depth, far), _depth_to_gray(depth, far)]
    grid = torch.cat([torch.cat(list(r.detach().float().cpu()), dim=-1) for r in rows], dim=-2)  # [3, 4H, V*W]
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, (grid.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8))
    return path


# ------------------------------------------------------------------------------------------------ the run
@dataclass
class TrainResult(RunResult):
    """Outcome of `train_scene_ae`: the `RunResult` fields (load ``model_dir`` with
    ``SceneAutoEncoder.from_pretrained``) and

    Attributes:
        untrained: validation figures of the untrained model (None without a validation split).
        final: validation figures after training (None without a validation split).
    """

    untrained: ValMetrics | None
    final: ValMetrics | None


def _describe(m: ValMetrics) -> str:
    text = f"PSNR {m.psnr:.2f} dB, depth AbsRel {m.abs_rel:.3f}"
    if m.miou is not None:
        text += f", semantic mIoU {m.miou:.3f}"
    if m.psnr_lae is not None:
        text += f", through the LAE PSNR {m.psnr_lae:.2f} dB"
    return text if m.sky_empty is None else f"{text}, sky empty {100 * m.sky_empty:.1f}%"


def _val_metrics(results: list[dict], step: int) -> ValMetrics | None:
    if not results or "val/psnr" not in results[0]:
        return None
    r = results[0]
    miou = float(r["val/miou"]) if "val/miou" in r else None
    sky_empty = float(r["val/sky_empty"]) if "val/sky_empty" in r else None
    psnr_lae = float(r["val/psnr_lae"]) if "val/psnr_lae" in r else None
    return ValMetrics(psnr=float(r["val/psnr"]), abs_rel=float(r["val/abs_rel"]), step=int(step), miou=miou,
                      sky_empty=sky_empty, psnr_lae=psnr_lae)


def _frozen_latent_ae(latent_ae: str | Path, config: SceneAEConfig) -> LatentAutoEncoder:
    """The LAE at `latent_ae`, checked to read fields of the stage-1 architecture `config`."""
    try:
        lae = LatentAutoEncoder.from_pretrained(resolve_model_dir(latent_ae))
    except FileNotFoundError as e:
        raise TrainingError(f"--latent-ae {latent_ae}: no saved latent auto-encoder there ({e}); pass a latent-ae "
                            "run directory, its model folder, or a bundle's latent_ae folder") from None
    if (tuple(lae.config.grid_shape), lae.config.feature_channels) != (tuple(config.grid_shape), config.feature_channels):
        raise TrainingError(f"--latent-ae {latent_ae}: it reads {tuple(lae.config.grid_shape)} grids of "
                            f"{lae.config.feature_channels} channels, this stage 1 writes {tuple(config.grid_shape)} of "
                            f"{config.feature_channels}: pass the LAE trained on this stage 1's fields")
    return lae


#: Why ``trainable="labels"`` cannot run on a stage 1 without a label decoder, and the fix.
_NEEDS_LABEL_DECODER = ("scene_ae_train.trainable='labels' trains the label decoder: set scene_ae.label_decoder_widths "
                        "(e.g. --set scene_ae.label_decoder_widths=[64,32,24])")


def _check_label_decoder_source(state: dict[str, torch.Tensor], config: SceneAEConfig, init_from) -> bool:
    """Whether the `init_from` weights `state` lack the label decoder of `config` (a new one starts at zero); a
    `TrainingError` when they hold one of other widths (compared with a model built from `config`)."""
    expected = SceneAutoEncoder(config).state_dict()
    missing = [k for k in expected if k not in state]
    other = [k for k, v in state.items() if k not in expected or v.shape != expected[k].shape]
    if other or any(not k.startswith("label_decoder.") for k in missing):
        raise TrainingError(f"--init-from {init_from}: its label decoder differs from "
                            f"scene_ae.label_decoder_widths={list(config.label_decoder_widths)} ({(other or missing)[:3]}): "
                            "set the widths it was trained with")
    return bool(missing)


def train_scene_ae(stores: Sequence[str], preset: Preset, run_dir: str | Path, *, resume: bool = True,
                   accelerator: str = "auto", devices: Any = "auto", strategy: Any = "auto", num_nodes: int = 1,
                   progress: bool = True, log: Callable[[str], None] = print, trainer_kwargs: dict | None = None,
                   init_from: str | Path | None = None, latent_ae: str | Path | None = None) -> TrainResult:
    """Train stage 1 on `stores` with the resolved `preset`, writing the run directory (module docstring).

    With ``resume`` and an existing ``run_dir/checkpoints/last.ckpt``, training continues from it (up to
    ``preset.scene_ae_train.max_steps`` steps in total); otherwise it starts from scratch (or from `init_from`) and
    overwrites the checkpoints. Validation figures of the untrained (or initial) model are measured once, before
    training, and kept in ``metrics.json`` across resumes.

    Args:
        init_from: a trained stage 1 (run directory, model folder, or a bundle's ``scene_ae``) of the preset's
            architecture whose weights start this run (fine-tuning; ``max_steps`` counts this run's steps). Needed
            by ``scene_ae_train.trainable="decoder"``, which trains its image decoder alone, and ``"labels"``, which
            trains its label decoder alone (a new one, zero-initialised, when the source has none).
        latent_ae: a trained LAE of this stage 1's fields, frozen: validation also reports the PSNR of renders
            through it, and ``lae_input_fraction`` of the training fields are its reconstructions.
    Raises:
        `TrainingError` before anything is written when `init_from` or `latent_ae` does not fit,
        ``trainable="decoder"`` or ``"labels"`` comes without `init_from`, ``"labels"`` without
        ``scene_ae.label_decoder_widths``, or ``"all"`` with them.
    """
    log = run_writer_log(log)
    start = time.perf_counter()
    run_dir = Path(run_dir)
    tc = preset.scene_ae_train
    if tc.trainable != "all" and init_from is None:
        raise TrainingError(f"scene_ae_train.trainable={tc.trainable!r} fine-tunes a decoder of a trained stage 1: pass "
                            "--init-from MODEL (its encoder, and so its fields, stay frozen)")
    if tc.trainable == "labels" and not preset.scene_ae.label_decoder_widths:
        raise TrainingError(_NEEDS_LABEL_DECODER)
    if tc.trainable == "all" and preset.scene_ae.label_decoder_widths:
        raise TrainingError("the label decoder is trained on a trained stage 1 (its fields frozen): train stage 1 "
                            "without scene_ae.label_decoder_widths, then fine-tune it with --init-from MODEL --set "
                            "scene_ae_train.trainable=labels")
    if tc.lae_input_fraction > 0 and latent_ae is None:
        raise TrainingError("scene_ae_train.lae_input_fraction > 0 needs the LAE whose reconstructions to decode: pass "
                            "--latent-ae LAE")
    init_state = None
    if init_from is not None:
        # a label-decoder fine-tune may start from a stage 1 without one: the architectures agree but for it
        comparable = ((lambda c: dataclasses.replace(c, label_decoder_widths=())) if tc.trainable == "labels"
                      else (lambda c: c))
        init_state = init_state_dict(SceneAutoEncoder, init_from, preset.scene_ae, what="scene auto-encoder",
                                     folder_hint="a scene-ae run directory, its model folder, or a bundle's scene_ae "
                                                 "folder", comparable=comparable)
        new_label_decoder = _check_label_decoder_source(init_state, preset.scene_ae, init_from)
    lae = _frozen_latent_ae(latent_ae, preset.scene_ae) if latent_ae is not None else None
    resumed_from = start_run(run_dir, resume, lambda path: save_run_config(path, "scene-ae", preset.name, preset))

    seed_everything(int(tc.seed), workers=True, verbose=False)
    module = SceneAELightningModule(preset.scene_ae, tc, image_dir=run_dir / "val_images", latent_ae=lae)
    if init_state is not None and resumed_from is None:
        module.model.load_state_dict(init_state, strict=not new_label_decoder)
        alone = {"decoder": " (training the decoder alone)",
                 "labels": " (training the label decoder alone" + (", a new one)" if new_label_decoder else ")")}
        log(f"weights from {init_from}" + alone.get(tc.trainable, ""))
    data = SceneDataModule(stores, preset.scene_ae.image_size, tc)
    data.setup()
    has_val = len(data.val_set) > 0
    if not has_val:
        log("no validation windows (a store needs 2+ episodes or enough frames): training without validation")
    log(f"scene auto-encoder: {sum(p.numel() for p in module.parameters()):,} parameters; "
        f"{len(data.train_set)} train / {len(data.val_set)} val windows of {data.train_set.num_views} views")

    trainer = make_trainer(
        run_dir, tc, accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes,
        has_val=has_val, progress=progress, val_batches=tc.val_batches, deterministic=False,
        inference_mode=False,  # no_grad instead: metric states reset under inference_mode could not be updated later
        **(trainer_kwargs or {}))

    untrained, final = fit_with_val_metrics(
        trainer, module, data, run_dir, resumed_from, log, has_val=has_val, measure=_val_metrics,
        metrics_type=ValMetrics, last_measured=lambda: module.last_val,
        describe_untrained=lambda m: f"untrained: {_describe(m)}",
        describe_final=lambda m: f"step {trainer.global_step}: {_describe(m)}")

    metrics = {"untrained": asdict(untrained) if untrained else None, "final": asdict(final) if final else None,
               "global_step": int(trainer.global_step), "stores": [str(s) for s in stores], "preset": preset.name,
               "train_windows": len(data.train_set), "val_windows": len(data.val_set)}
    model_dir = finish_run(run_dir, module.model, metrics)
    return TrainResult(run_dir=run_dir, model_dir=model_dir, untrained=untrained, final=final,
                       global_step=int(trainer.global_step), resumed_from=resumed_from,
                       seconds=time.perf_counter() - start)
