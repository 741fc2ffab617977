"""Semantic figures: confusion matrices, per-class IoU and mIoU over the classes present.

Conventions: class indices are those of a `nfldm_sdk.labels.classes.SemanticClasses` set; a negative target means
"not labelled" and is not counted. A class is *present* when the targets contain it; mIoU averages the IoU of the
present classes only (a class absent from the targets has no defined IoU), so a majority-class baseline scores
``frequency of the majority class / (number of present classes)`` at best.
"""
from __future__ import annotations

import torch
from torchmetrics import Metric

__all__ = ["ConfusionMatrix", "confusion_matrix", "majority_baseline_miou", "mean_iou", "per_class_iou"]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[K, K]`` float64 counts, rows = target class, columns = predicted class.

    Args:
        pred: ``[...]`` int predicted classes in ``[0, K)``.
        target: ``[...]`` int target classes; negative = ignored.
        num_classes: K.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} shapes differ")
    keep = target >= 0
    idx = target[keep].long() * num_classes + pred[keep].long().clamp(0, num_classes - 1)
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes).double()


def per_class_iou(confusion: torch.Tensor) -> torch.Tensor:
    """``[K]`` IoU per class from a confusion matrix (``nan`` for classes absent from the targets)."""
    tp = confusion.diagonal()
    gt, pr = confusion.sum(1), confusion.sum(0)
    iou = tp / (gt + pr - tp).clamp_min(1e-12)
    return torch.where(gt > 0, iou, torch.full_like(iou, float("nan")))


def mean_iou(confusion: torch.Tensor) -> float:
    """Mean IoU over the classes present in the targets (``nan`` if none is)."""
    iou = per_class_iou(confusion)
    present = ~torch.isnan(iou)
    return float(iou[present].mean()) if bool(present.any()) else float("nan")


def majority_baseline_miou(confusion: torch.Tensor) -> float:
    """mIoU of predicting the most frequent target class everywhere, for the targets of ``confusion``."""
    gt = confusion.sum(1)
    k = int(gt.argmax())
    baseline = torch.zeros_like(confusion)
    baseline[:, k] = gt
    return mean_iou(baseline)


class ConfusionMatrix(Metric):
    """A `torchmetrics.Metric` accumulating `confusion_matrix` counts (summed over DDP ranks)."""

    full_state_update = False

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = int(num_classes)
        self.add_state("matrix", default=torch.zeros(num_classes, num_classes, dtype=torch.float64),
                       dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Count ``pred`` / ``target`` class indices of the same shape (negative targets ignored)."""
        self.matrix += confusion_matrix(pred, target, self.num_classes).to(self.matrix.device)

    def compute(self) -> torch.Tensor:
        """The ``[K, K]`` counts (rows target, columns prediction)."""
        return self.matrix
