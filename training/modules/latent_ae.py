"""Lightning training of the stage-2 latent voxel auto-encoder, and the run that `nfldm train latent-ae` performs.

`LatentAELightningModule` — one step on B encoded scenes with their windows' captured views::

    loss = density_weight · ‖ℓ(σ) − ℓ(σ̂)‖ + feature_weight · ‖φ − φ̂‖    voxel reconstruction (L1 or L2, means)
         + image_weight · ‖i − r(V̂, κ)‖                                  through the FROZEN stage-1 decoder
         + kl_weight · KL(q(g|V) ‖ N(0, I)) + vq_loss_c + vq_loss_f      (kl_weight, β: the model config)
         + voxel_label_weight · CE_voxels + bev_label_weight · NLL_bev     labels of V kept (label_losses; 0 = off)

    ℓ(σ) = log(σ + ε), ε = density_log_eps (1/m); ε = 0 compares σ itself. The density part is L2
    (``density_loss``), the feature part ``voxel_loss`` (L1 by default).

Why the density is compared as L2 in log space: stage-1 fields are almost empty (on the default model's data 69 %
of the voxels have σ = 0, the 99th percentile is 0.23 /m, and about 13 voxels per scene are surfaces of 1–6 /m)
and the LAE's density is ``softplus(raw)``, whose gradient ``sigmoid(raw) ≈ σ̂`` vanishes once the empty majority
has pushed σ̂ towards 0. With a loss on σ itself (and through the image loss, which also reaches σ̂ through
softplus) the decoder cannot grow surfaces back: a tiny model trained that way decodes σ̂ ≤ 0.14 /m, 0.7 % of
the target density on σ > 1 /m voxels, and a low, even density elsewhere, so its renders are fog. In log space the
gradient on ``raw`` is ``∝ σ̂ / (σ̂ + ε)``, O(1) down to σ̂ ≈ ε, and the square weights a missed surface (off by
``log(σ/ε)`` ≈ 7) far above the many near-empty voxels; an L1 in log space still recovers 0 % of the surfaces
(it fits the conditional median, 0). On the default model's held-out scenes after 600 steps the log-L2 loss gives
a decoded σ on σ > 1 /m voxels of 62 % of the target (L1 on σ: 0 %), a mean σ of 0.0122 vs the target's
0.0126 /m, and renders of mean opacity 0.26 vs stage 1's 0.28.

``r`` is ``SceneAutoEncoder.decode`` with ``requires_grad=False`` on every weight and kept in eval mode; the
gradient of the image loss reaches the LAE through the rendered field V̂ only. The image targets ``i`` are the
window's captured images (``render_views`` of them per step, drawn with a generator seeded by seed and step).

Validation (g = posterior mean, codebooks untouched): voxel errors (mean absolute density and feature error),
PSNR of ``r(V̂)`` against ``r(V)`` (the LAE's own error as seen through the renderer), PSNR of ``r(V̂)`` and of
``r(V)`` against the captured images (the second is stage 1's ceiling), the fraction of each codebook used over
the whole validation set, and the BEV layout kept (mIoU of V̂'s bird's-eye labels against V's, `LayoutAgreement`).
A PNG grid (rows: r(V), r(V̂), their depths) per validation goes to ``<run>/val_images/``.

`train_latent_ae` — the whole run::

    RUN/config.json          resolved LatentPreset (grid/channels/box taken from the stage-1 model)
    RUN/checkpoints/         Lightning checkpoints (``last.ckpt`` is what a resume continues)
    RUN/model/               the trained LatentAutoEncoder (save_pretrained; ``nfldm encode-latents`` adds latent_stats)
    RUN/metrics.json         validation figures of the untrained and the trained model
    RUN/logs/version_N/      training curves (CSVLogger metrics.csv; one version per start, a resume keeps the old)
    RUN/val_images/*.png     validation grids
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from lightning.pytorch import LightningModule, seed_everything
from torchmetrics import MeanMetric, Metric

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.labels.bev_map import LAYOUT_CLASSES, bev_class_counts
from nfldm_sdk.labels.classes import SemanticClasses
from nfldm_sdk.models.latent_ae import LatentAEConfig, LatentAutoEncoder
from nfldm_sdk.models.scene_ae import SceneAutoEncoder
from nfldm_sdk.persistence import resolve_model_dir
from nfldm_training.configs.run_config import save_run_config
from nfldm_training.configs.sections import LatentAETrainConfig, LatentPreset
from nfldm_training.data.latent_scenes import LatentBatch, LatentDataModule
from nfldm_training.errors import TrainingError
from nfldm_training.metrics.image import psnr
from nfldm_training.modules.label_losses import bev_label_loss, voxel_label_loss
from nfldm_training.modules.losses import image_loss
from nfldm_training.modules.scene_ae import save_val_grid
from nfldm_training.runs.result import RunResult
from nfldm_training.runs.init_weights import init_state_dict
from nfldm_training.runs.trainer import (adamw_with_warmup, finish_run, fit_with_val_metrics, make_trainer,
                                         on_run_writer, start_run, run_writer_log)
from nfldm_training.stores.scene_store import weights_sha256
from nfldm_training.stores.voxel_store import VoxelStore


# ------------------------------------------------------------------------------------------------ losses
@dataclass
class VoxelErrors:
    """Voxel reconstruction errors (scalars): mean over voxels (and channels) of ``|x − x̂|`` or ``(x − x̂)²``."""

    density: torch.Tensor
    features: torch.Tensor


def density_space(density: torch.Tensor, log_eps: float = 0.0) -> torch.Tensor:
    """The density as the voxel loss compares it: ``log(σ + log_eps)`` when ``log_eps > 0``, else σ (same shape).

    Args:
        density: σ ≥ 0 (1/m), any shape.
        log_eps: ε (1/m) of the log, the density below which differences stop mattering; 0: σ unchanged.
    """
    if log_eps < 0:
        raise ValueError(f"density_log_eps must be ≥ 0 (0 = compare σ itself), got {log_eps}")
    return torch.log(density.clamp_min(0.0) + log_eps) if log_eps > 0 else density


def _mean_error(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if kind == "l1":
        return lambda a, b: (a - b).abs().mean()
    if kind == "l2":
        return lambda a, b: (a - b).square().mean()
    raise ValueError(f"unknown voxel loss {kind!r}: use 'l1' or 'l2'")


def voxel_errors(pred: VoxelField, target: VoxelField, kind: str = "l1", density_log_eps: float = 0.0,
                 density_kind: str | None = None) -> VoxelErrors:
    """Density and feature reconstruction errors of batched fields of one grid.

    Args:
        pred, target: `VoxelField` s, density ``[B,Z,Y,X]`` (1/m), features ``[B,C,Z,Y,X]``.
        kind: ``"l1"`` (mean absolute error) or ``"l2"`` (mean squared error) of the features (and of the density
            when `density_kind` is None).
        density_log_eps: compare densities as ``log(σ + ε)`` with this ε (1/m; `density_space`); 0: as σ.
        density_kind: ``"l1"`` or ``"l2"`` for the density; None: `kind`.
    """
    if pred.density.shape != target.density.shape or pred.features.shape != target.features.shape:
        raise ValueError(f"fields differ in shape: {pred} vs {target}")
    err_d, err_f = _mean_error(density_kind or kind), _mean_error(kind)
    return VoxelErrors(density=err_d(density_space(pred.density, density_log_eps), density_space(target.density, density_log_eps)),
                       features=err_f(pred.features, target.features))


class LayoutAgreement(Metric):
    """Pooled per-class intersection and union of two sets of BEV tag maps (`bev_class_counts`, summed over ranks);
    ``compute()`` = mIoU over the `LAYOUT_CLASSES` present (nan when none is)."""

    full_state_update = False

    def __init__(self, classes: SemanticClasses):
        super().__init__()
        self.classes = classes
        self.layout = [classes.names.index(n) for n in LAYOUT_CLASSES if n in classes.names]
        self.add_state("inter", default=torch.zeros(classes.num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("union", default=torch.zeros(classes.num_classes, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, predicted: torch.Tensor, target: torch.Tensor) -> None:
        """Add the cells of BEV tag maps ``[B, Y, X]`` uint8 (`predicted` of V̂, `target` of V)."""
        inter, union = bev_class_counts(predicted, target, self.classes)
        self.inter += torch.from_numpy(inter).to(self.inter)
        self.union += torch.from_numpy(union).to(self.union)

    def compute(self) -> torch.Tensor:
        """Scalar float64: the pooled mIoU over the layout classes present (nan when none is)."""
        inter, union = self.inter[self.layout], self.union[self.layout]
        present = union > 0
        if not bool(present.any()):
            return torch.tensor(float("nan"), dtype=torch.float64)
        return (inter[present] / union[present]).mean()


class CodeHistogram(Metric):
    """Counts of code indices over a whole evaluation (summed over ranks); ``compute()`` = fraction of codes used."""

    full_state_update = False

    def __init__(self, num_codes: int):
        super().__init__()
        self.num_codes = int(num_codes)
        self.add_state("counts", default=torch.zeros(self.num_codes), dist_reduce_fx="sum")

    def update(self, indices: torch.Tensor) -> None:
        self.counts += torch.bincount(indices.flatten(), minlength=self.num_codes).to(self.counts)

    def compute(self) -> torch.Tensor:
        return (self.counts > 0).float().mean()


# ------------------------------------------------------------------------------------------------ module
@dataclass
class LatentValMetrics:
    """Validation figures of a latent auto-encoder.

    Attributes:
        density_error: mean ``|σ − σ̂|`` (1/m) over validation voxels.
        feature_error: mean ``|φ − φ̂|`` over validation voxels and channels.
        psnr_render: PSNR (dB) of ``r(V̂)`` against ``r(V)``, mean over views.
        psnr_images: PSNR (dB) of ``r(V̂)`` against the captured images.
        psnr_stage1: PSNR (dB) of ``r(V)`` against the captured images (the stage-1 ceiling).
        usage_c, usage_f: fraction of each codebook used over the validation set.
        layout_miou: BEV layout kept: mIoU over `LAYOUT_CLASSES` (those present) of the bird's-eye labels of V̂
            against those of V, pooled over the validation set (nan without a stage-1 semantic head).
        step: optimisation step at which they were measured.
    """

    density_error: float
    feature_error: float
    psnr_render: float
    psnr_images: float
    psnr_stage1: float
    usage_c: float
    usage_f: float
    layout_miou: float
    step: int


class LatentAELightningModule(LightningModule):
    """Trains a `LatentAutoEncoder` against a frozen stage-1 `SceneAutoEncoder` (see the module docstring).

    Args:
        model_config: the LAE to build (grid, channels and box must be the scene auto-encoder's).
        train_config: losses, optimiser, rendered views, seed.
        scene_ae: the trained stage-1 model; frozen here (no gradients, eval mode) and used only to render.
        image_dir: folder for the validation PNG grids (None: no images).
    """

    def __init__(self, model_config: LatentAEConfig, train_config: LatentAETrainConfig, scene_ae: SceneAutoEncoder,
                 image_dir: str | Path | None = None):
        super().__init__()
        sc = scene_ae.config
        if (tuple(sc.grid_shape), int(sc.feature_channels)) != (tuple(model_config.grid_shape), int(model_config.feature_channels)):
            raise TrainingError(f"LAE grid {model_config.grid_shape} / C={model_config.feature_channels} differs from the scene "
                                f"auto-encoder's {sc.grid_shape} / C={sc.feature_channels}: build the config with "
                                "LatentAEConfig.for_scene_ae")
        self.model = LatentAutoEncoder(model_config)
        self.scene_ae = scene_ae.requires_grad_(False).eval()
        self.cfg = train_config
        self.image_dir = Path(image_dir) if image_dir is not None else None
        self.val_density = MeanMetric()
        self.val_features = MeanMetric()
        self.val_psnr_render = MeanMetric()
        self.val_psnr_images = MeanMetric()
        self.val_psnr_stage1 = MeanMetric()
        self.val_codes_c = CodeHistogram(model_config.coarse_codebook_size)
        self.val_codes_f = CodeHistogram(model_config.fine_codebook_size)
        head = scene_ae.semantic_head
        self.val_layout = LayoutAgreement(head.classes) if head is not None else None

    def train(self, mode: bool = True):
        """Lightning switches every child to train mode at fit start; the frozen renderer stays in eval mode."""
        super().train(mode)
        self.scene_ae.eval()
        return self

    # ---------------------------------------------------------------------------------------------- steps
    def _render_views(self, num_views: int) -> torch.Tensor:
        """Views rendered for this step's image loss: ``render_views`` drawn with a generator seeded by (seed, step),
        so a resumed run draws what the original would."""
        n = self.cfg.render_views
        if n is None or n >= num_views:
            return torch.arange(num_views)
        g = torch.Generator().manual_seed(int(self.cfg.seed) * 1_000_003 + int(self.global_step))
        return torch.randperm(num_views, generator=g)[: max(1, int(n))].sort().values

    def training_step(self, batch: LatentBatch, batch_idx: int) -> torch.Tensor:
        cfg, mc = self.cfg, self.model.config
        out = self.model(batch.field, sample_g=cfg.sample_g)
        err = voxel_errors(out.field, batch.field, cfg.voxel_loss, cfg.density_log_eps, cfg.density_loss)
        loss = (cfg.density_weight * err.density + cfg.feature_weight * err.features + mc.kl_weight * out.kl
                + out.vq_loss_c + out.vq_loss_f)
        logs = {"train/density": err.density, "train/features": err.features, "train/kl": out.kl,
                "train/vq_c": out.vq_loss_c, "train/vq_f": out.vq_loss_f, "train/usage_c": out.usage_c,
                "train/usage_f": out.usage_f, "train/perplexity_c": out.perplexity_c, "train/perplexity_f": out.perplexity_f}
        if cfg.image_weight > 0:
            views = self._render_views(batch.views.num_views).to(batch.scene.device)
            render = self.scene_ae.decode(out.field, batch.views.cameras()[:, views])
            l_img = image_loss(render.rgb, batch.views.images[:, views], cfg.image_loss)
            loss = loss + cfg.image_weight * l_img
            logs["train/image"] = l_img
        head = self.scene_ae.semantic_head
        if head is not None and cfg.voxel_label_weight > 0:
            l_vox = voxel_label_loss(out.field, batch.field, head.linear.weight, head.linear.bias,
                                     cfg.label_balance_power)
            loss = loss + cfg.voxel_label_weight * l_vox
            logs["train/voxel_labels"] = l_vox
        if head is not None and cfg.bev_label_weight > 0:
            l_bev = bev_label_loss(out.field, batch.field, head.linear.weight, head.linear.bias, head.classes,
                                   cfg.label_balance_power)
            loss = loss + cfg.bev_label_weight * l_bev
            logs["train/bev_labels"] = l_bev
        logs["train/loss"] = loss
        self.log_dict(logs, batch_size=batch.batch_size)
        self.log("loss", loss, batch_size=batch.batch_size, prog_bar=True, logger=False)
        return loss

    def validation_step(self, batch: LatentBatch, batch_idx: int) -> None:
        out = self.model(batch.field, sample_g=False)
        err = voxel_errors(out.field, batch.field, "l1")
        n_vox = float(batch.field.density.numel())
        self.val_density.update(err.density, weight=n_vox)
        self.val_features.update(err.features, weight=n_vox)
        self.val_codes_c.update(out.indices_c)
        self.val_codes_f.update(out.indices_f)
        cams = batch.views.cameras()
        r_hat = self.scene_ae.decode(out.field, cams)                                 # rgb [B, V, 3, H, W]
        r_ref = self.scene_ae.decode(batch.field, cams)
        self.val_psnr_render.update(psnr(r_hat.rgb, r_ref.rgb).flatten())
        self.val_psnr_images.update(psnr(r_hat.rgb, batch.views.images).flatten())
        self.val_psnr_stage1.update(psnr(r_ref.rgb, batch.views.images).flatten())
        if self.val_layout is not None:
            head = self.scene_ae.semantic_head
            self.val_layout.update(head.bev(out.field), head.bev(batch.field))
        if batch_idx == 0 and self.image_dir is not None and not self.trainer.sanity_checking:
            path = self.image_dir / f"val_step{int(self.global_step):06d}.png"
            on_run_writer(save_val_grid, path, r_ref.rgb[0], r_hat.rgb[0], r_ref.depth[0], r_hat.depth[0], self.scene_ae.config.far)

    def on_validation_epoch_end(self) -> None:
        metrics = {"val/density_error": self.val_density, "val/feature_error": self.val_features,
                   "val/psnr_render": self.val_psnr_render, "val/psnr_images": self.val_psnr_images,
                   "val/psnr_stage1": self.val_psnr_stage1, "val/usage_c": self.val_codes_c, "val/usage_f": self.val_codes_f}
        if self.val_layout is not None:
            metrics["val/layout_miou"] = self.val_layout
        self.log_dict({k: m.compute() for k, m in metrics.items()})
        for m in metrics.values():
            m.reset()

    def configure_optimizers(self):
        return adamw_with_warmup([p for p in self.model.parameters() if p.requires_grad], self.cfg)


# ------------------------------------------------------------------------------------------------ the run
@dataclass
class LatentTrainResult(RunResult):
    """Outcome of `train_latent_ae`: the `RunResult` fields (load ``model_dir`` with
    ``LatentAutoEncoder.from_pretrained``) and

    Attributes:
        untrained, final: validation figures before and after training (None without a validation split).
    """

    untrained: LatentValMetrics | None
    final: LatentValMetrics | None


def _val_metrics(results: list[dict], step: int) -> LatentValMetrics | None:
    if not results or "val/psnr_render" not in results[0]:
        return None
    r = results[0]
    names = [f.name for f in dataclasses.fields(LatentValMetrics) if f.name != "step"]
    return LatentValMetrics(**{n: float(r.get(f"val/{n}", math.nan)) for n in names}, step=int(step))


def train_latent_ae(voxels: str | Path, scene_ae: str | Path, preset: LatentPreset, run_dir: str | Path,
                    stores: Sequence[str] | None = None, *, resume: bool = True, accelerator: str = "auto",
                    devices: Any = "auto", strategy: Any = "auto", num_nodes: int = 1, progress: bool = True,
                    log: Callable[[str], None] = print, trainer_kwargs: dict | None = None,
                    init_from: str | Path | None = None) -> LatentTrainResult:
    """Train stage 2 on the voxel store `voxels` (with its capture stores) against the frozen stage-1 model.

    Args:
        voxels: an ``nfldm encode-voxels`` store.
        scene_ae: the stage-1 run directory or model folder — the model that encoded `voxels` (checked by the
            weights' SHA-256 recorded in the store).
        preset: the resolved `LatentPreset`; its grid, channels and box are replaced by the stage-1 model's.
        run_dir: run directory (module docstring).
        stores: capture stores in the voxel store's order (None: the paths recorded in it).
        resume: continue from ``run_dir/checkpoints/last.ckpt`` when it exists (up to ``max_steps`` in total).
        init_from: a trained LAE (run directory, model folder, or a bundle's ``latent_ae``) of the same architecture
            whose weights and codebooks start this run (fine-tuning; ``max_steps`` counts this run's steps). A
            resumed run continues from its checkpoint instead.
    """
    log = run_writer_log(log)
    start = time.perf_counter()
    run_dir = Path(run_dir)
    scene_model = SceneAutoEncoder.from_pretrained(resolve_model_dir(scene_ae))
    tc = preset.latent_ae_train
    if (tc.voxel_label_weight > 0 or tc.bev_label_weight > 0) and scene_model.semantic_head is None:
        raise TrainingError(f"latent_ae_train.voxel_label_weight / bev_label_weight need a stage-1 semantic head, and "
                            f"{scene_ae} has none: set both to 0, or train stage 1 with semantic_classes")
    vs = VoxelStore(voxels)
    recorded = vs.attrs.get("model", {}).get("weights_sha256")
    if recorded is not None and recorded != weights_sha256(scene_model):
        raise TrainingError(f"{voxels} was encoded by another stage-1 model than {scene_ae} (weights differ): pass the "
                            "--scene-ae that encode-voxels used, or re-encode the voxels with this one")
    resolved = LatentAEConfig.for_scene_ae(scene_model.config, **{f.name: getattr(preset.latent_ae, f.name)
                                                                  for f in dataclasses.fields(LatentAEConfig)})
    if (resolved.grid_shape, resolved.feature_channels) != (preset.latent_ae.grid_shape, preset.latent_ae.feature_channels):
        log(f"grid {resolved.grid_shape} and C={resolved.feature_channels} taken from the stage-1 model (preset "
            f"{preset.name!r} has {preset.latent_ae.grid_shape}, C={preset.latent_ae.feature_channels})")
    preset = dataclasses.replace(preset, latent_ae=resolved)
    tc = preset.latent_ae_train
    init_state = init_state_dict(
        LatentAutoEncoder, init_from, resolved, what="latent auto-encoder",
        folder_hint="a latent-ae run directory, its model folder, or a bundle's latent_ae folder",
        comparable=lambda c: dataclasses.replace(c, latent_stats=None)) if init_from is not None else None

    resumed_from = start_run(run_dir, resume, lambda path: save_run_config(path, "latent-ae", preset.name, preset))

    seed_everything(int(tc.seed), workers=True, verbose=False)
    module = LatentAELightningModule(resolved, tc, scene_model, image_dir=run_dir / "val_images")
    if init_state is not None and resumed_from is None:
        module.model.load_state_dict(init_state)
        log(f"weights and codebooks from {init_from}")
    data = LatentDataModule(voxels, stores, tc)
    data.setup()
    has_val = len(data.val_set) > 0
    if not has_val:
        log("no validation scenes (a capture store needs 2+ episodes or enough frames): training without validation")
    log(f"latent auto-encoder: {sum(p.numel() for p in module.model.parameters()):,} parameters; latents g {resolved.g_shape}, "
        f"c {resolved.c_shape}, f {resolved.f_shape}; {len(data.train_set)} train / {len(data.val_set)} val scenes")

    trainer = make_trainer(
        run_dir, tc, accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes,
        has_val=has_val, progress=progress, val_batches=tc.val_batches, deterministic=False,
        # no_grad instead of inference_mode for evaluation: metric states reset inside `trainer.validate` would
        # otherwise become inference tensors that the validation inside `fit` cannot update in place.
        inference_mode=False, **(trainer_kwargs or {}))

    untrained, final = fit_with_val_metrics(
        trainer, module, data, run_dir, resumed_from, log, has_val=has_val, measure=_val_metrics,
        metrics_type=LatentValMetrics,
        describe_untrained=lambda m: (f"untrained: density error {m.density_error:.4f}, PSNR vs r(V) "
                                      f"{m.psnr_render:.2f} dB"),
        describe_final=lambda m: (f"step {trainer.global_step}: density error {m.density_error:.4f}, feature error "
                                  f"{m.feature_error:.4f}, PSNR vs r(V) {m.psnr_render:.2f} dB, vs images "
                                  f"{m.psnr_images:.2f} dB (stage 1: {m.psnr_stage1:.2f} dB), codebook usage "
                                  f"c {m.usage_c:.2f} f {m.usage_f:.2f}, BEV layout kept (mIoU vs V) "
                                  f"{m.layout_miou:.3f}"))

    metrics = {"untrained": asdict(untrained) if untrained else None, "final": asdict(final) if final else None,
               "global_step": int(trainer.global_step), "voxels": str(voxels), "scene_ae": str(scene_ae),
               "stores": data.train_set.stores, "preset": preset.name,
               "train_scenes": len(data.train_set), "val_scenes": len(data.val_set)}
    model_dir = finish_run(run_dir, module.model, metrics)
    return LatentTrainResult(run_dir=run_dir, model_dir=model_dir, untrained=untrained, final=final,
                             global_step=int(trainer.global_step), resumed_from=resumed_from,
                             seconds=time.perf_counter() - start)
