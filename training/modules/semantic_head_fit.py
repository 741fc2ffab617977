"""Give a trained stage 1 a semantic head without retraining it: fit the linear head on its frozen feature field.

Stage 1 normally learns its semantic head jointly with the field (`nfldm_training.modules.scene_ae`, the semantic
cross-entropy). A model trained without one — every bundle made before the head existed — can still get labels:
the head reads only the feature grid ``V_feat``, so with the encoder frozen the latent auto-encoder and the
denoisers stay valid and only the head's ``(K−1)·(C+1)`` weights are learned. `fit_semantic_head` encodes the
training windows once, renders their feature maps and opacities at the target views (no gradient through the
model), and fits the head by Adam over random batches of those views on the same loss as joint training (`semantic_loss` on
`semantic_probabilities`, sky included). The geometry is frozen, so sky that the field renders opaque stays
labelled as a solid class: a jointly trained head (which also empties the sky) does better; the figures say how
much (`HeadFit.val_miou` vs a jointly trained model's).

Validation: the held-out episodes (`held_out_episodes`, the split of every stage), labels by the user-facing rule
(render at `HIT_ALPHA`, `labels_from_probabilities`), mIoU over the classes present and the majority-class baseline.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from nfldm_sdk.labels.classes import DEFAULT_CLASSES, SemanticClasses
from nfldm_sdk.labels.semantic_field import labels_from_probabilities
from nfldm_sdk.models.scene_ae import SceneAutoEncoder
from nfldm_sdk.models.semantic_head import SemanticHead
from nfldm_sdk.rendering.api import HIT_ALPHA, render_field
from nfldm_training.data.capture_windows import SceneWindowDataset, collate_windows
from nfldm_training.metrics.semantic import confusion_matrix, majority_baseline_miou, mean_iou, per_class_iou
from nfldm_training.modules.losses import semantic_loss

__all__ = ["HeadFit", "fit_semantic_head", "with_semantic_head"]


@dataclass
class HeadFit:
    """Outcome of `fit_semantic_head`.

    Attributes:
        model: the stage 1 with its fitted head (a copy; the input model is unchanged).
        train_windows, val_windows: windows used.
        train_loss: final training cross-entropy (nats per pixel).
        val_miou: held-out mIoU (classes present), user-facing label rule; None without held-out windows.
        val_majority_miou: the majority-class baseline on the same pixels.
        val_class_iou: class name -> IoU (classes present in the held-out captures).
    """

    model: SceneAutoEncoder
    train_windows: int
    val_windows: int
    train_loss: float
    val_miou: float | None
    val_majority_miou: float | None
    val_class_iou: dict


def with_semantic_head(model: SceneAutoEncoder, classes: SemanticClasses = DEFAULT_CLASSES) -> SceneAutoEncoder:
    """A copy of `model` whose config names `classes` and which has a fresh (zero-initialised) `SemanticHead`."""
    config = dataclasses.replace(model.config, semantic_classes=classes.to_config())
    out = SceneAutoEncoder(config)
    missing, unexpected = out.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not k.startswith("semantic_head.") for k in missing):
        raise ValueError(f"cannot copy the model's weights: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        out.semantic_head.linear.weight.zero_()
        out.semantic_head.linear.bias.zero_()
    return out


@torch.no_grad()
def _render_maps(model: SceneAutoEncoder, dataset: SceneWindowDataset):
    """Feature maps ``[N, C, h, w]``, opacities ``[N, h, w]`` and captured tags ``[N, H, W]`` of every view of every
    window (each window's views are the encoder inputs and the targets)."""
    cfg = model.config
    h, w = cfg.feature_size
    feats, alphas, tags = [], [], []
    for i in range(len(dataset)):
        batch = collate_windows([dataset[i]])
        cams = batch.cameras()
        field = model.encode(batch.images, cams)
        out = render_field(field, cams.resized(w, h), n_samples=cfg.render_samples, near=cfg.near, far=cfg.far)
        feats.append(out.features[0])
        alphas.append(out.alpha[0])
        tags.append(batch.semantic[0])
    return torch.cat(feats), torch.cat(alphas), torch.cat(tags)


def _probs(head: SemanticHead, feats: torch.Tensor, alpha: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(head.probabilities(feats, alpha), size=size, mode="bilinear", align_corners=False)


def fit_semantic_head(model: SceneAutoEncoder, stores: Sequence[str], *, classes: SemanticClasses = DEFAULT_CLASSES,
                      window: int = 2, val_fraction: float = 0.25, steps: int = 400, lr: float = 0.05,
                      batch_views: int = 64, seed: int = 0, log: Callable[[str], None] = print) -> HeadFit:
    """Fit a semantic head on `model`'s frozen field over the training episodes of `stores` (module docstring).

    Args:
        model: a trained stage 1 (with or without a head; an existing head is replaced).
        stores: capture stores; the episode split is `held_out_episodes`' with `val_fraction`, as in training.
        classes: the class set of the new head.
        window: frames per scene window.
        steps, lr, batch_views: Adam steps, learning rate and views per step (drawn at random from all training
            views, whose feature maps are rendered once).
        seed: seeds the draw of views.
    """
    torch.manual_seed(seed)
    model = with_semantic_head(model.cpu().eval(), classes)
    size = model.config.image_size
    train = SceneWindowDataset(stores, window, image_size=size, split="train", val_fraction=val_fraction)
    val = SceneWindowDataset(stores, window, image_size=size, split="val", val_fraction=val_fraction)
    log(f"semantic head: encoding {len(train)} training windows")
    feats, alpha, tags = _render_maps(model, train)
    target = torch.as_tensor(classes.tag_to_class)[tags.long()]
    head = model.semantic_head
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    loss = torch.zeros(())
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        views = torch.randint(0, feats.shape[0], (min(batch_views, feats.shape[0]),), generator=g)
        opt.zero_grad()
        loss = semantic_loss(_probs(head, feats[views], alpha[views], size), target[views])
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"semantic head: step {step}, cross-entropy {float(loss.detach()):.4f}")
    head.requires_grad_(False)
    val_miou = majority = None
    class_iou: dict = {}
    if len(val):
        cm = torch.zeros(classes.num_classes, classes.num_classes, dtype=torch.float64)
        lut = torch.as_tensor(classes.tag_to_class)
        with torch.no_grad():
            for i in range(len(val)):
                batch = collate_windows([val[i]])
                cams = batch.cameras()
                out = model.decode(model.encode(batch.images, cams), cams, min_hit_alpha=HIT_ALPHA)
                pred_tags, _ = labels_from_probabilities(out.semantic, torch.isfinite(out.depth), classes)
                cm += confusion_matrix(lut[pred_tags.long()], lut[batch.semantic.long()], classes.num_classes)
        val_miou, majority = mean_iou(cm), majority_baseline_miou(cm)
        class_iou = {n: float(v) for n, v in zip(classes.names, per_class_iou(cm)) if v == v}
        log(f"semantic head: held-out mIoU {val_miou:.3f} (majority-class baseline {majority:.3f}) over "
            f"{len(val)} windows")
    return HeadFit(model=model, train_windows=len(train), val_windows=len(val), train_loss=float(loss.detach()),
                   val_miou=val_miou, val_majority_miou=majority, val_class_iou=class_iou)
