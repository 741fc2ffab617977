"""Stage-1 losses and metrics on known values: PSNR, SSIM (against skimage) and the image loss with its SSIM term,
the depth loss and AbsRel on usable pixels only, and the mask of depth surfaces inside the scene box."""
import math

import numpy as np
import pytest
import torch

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_training.metrics.image import depth_abs_rel, psnr, ssim
from nfldm_training.metrics.masks import box_depth_mask
from nfldm_training.metrics.semantic import (ConfusionMatrix, confusion_matrix, majority_baseline_miou, mean_iou,
                                             per_class_iou)
from nfldm_training.modules.losses import depth_loss, image_loss, semantic_loss

pytestmark = pytest.mark.usefixtures("one_thread_module")


def test_psnr_and_image_loss_known_values():
    target = torch.full((2, 3, 3, 4, 4), 0.5)
    pred = target + 0.1                                    # uniform error 0.1: MSE 0.01 -> 20 dB
    assert torch.allclose(psnr(pred, target), torch.full((2, 3), 20.0), atol=1e-4)
    assert math.isclose(image_loss(pred, target, "l1").item(), 0.1, rel_tol=1e-5)
    assert math.isclose(image_loss(pred, target, "l2").item(), 0.01, rel_tol=1e-4)
    with pytest.raises(ValueError, match="l1"):
        image_loss(pred, target, "huber")


def test_ssim_matches_skimage():
    skm = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(6)
    x = torch.rand(2, 3, 32, 40, generator=g)
    y = (x + 0.1 * torch.randn(2, 3, 32, 40, generator=g)).clamp(0, 1)
    ours = ssim(y, x)
    for i in range(2):
        ref = skm.structural_similarity(y[i].permute(1, 2, 0).numpy().astype(np.float64),
                                        x[i].permute(1, 2, 0).numpy().astype(np.float64), data_range=1.0,
                                        channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert ours[i].item() == pytest.approx(ref, abs=1e-5)
    assert ssim(x, x).sub(1).abs().max().item() < 1e-6


def test_image_loss_ssim_term_blends_error_and_structure():
    g = torch.Generator().manual_seed(3)
    target = torch.rand(2, 3, 3, 24, 24, generator=g)
    pred = (target + 0.1 * torch.randn(target.shape, generator=g)).clamp(0, 1).requires_grad_(True)
    l1 = (pred - target).abs().mean()
    structural = 1.0 - ssim(pred.detach(), target).mean()           # the float64 metric
    assert 0.05 < structural.item() < 0.9                           # a real, non-trivial structural error
    loss = image_loss(pred, target, "l1", ssim_weight=0.2)
    assert loss.item() == pytest.approx(0.8 * l1.item() + 0.2 * structural.item(), abs=1e-5)
    loss.backward()
    assert pred.grad is not None and pred.grad.abs().sum().item() > 0
    assert image_loss(target, target, "l2", ssim_weight=0.5).item() == pytest.approx(0.0, abs=1e-6)
    assert image_loss(pred, target, "l1", ssim_weight=0.0).item() == pytest.approx(l1.item(), rel=1e-6)
    with pytest.raises(ValueError, match="ssim_weight"):
        image_loss(pred, target, "l1", ssim_weight=1.5)


def test_depth_loss_and_abs_rel_use_only_usable_pixels():
    target = torch.tensor([[2.0, 4.0, math.inf, 100.0]])    # the inf (sky) and the 100 m (beyond far) are ignored
    valid = torch.isfinite(target)
    pred = torch.tensor([[3.0, 3.0, 7.0, 1.0]])
    # usable: 2 m (error 1) and 4 m (error 1) -> L1 = 1; AbsRel = (1/2 + 1/4) over 2 pixels
    assert math.isclose(depth_loss(pred, target, valid, 1.0, 60.0, "l1").item(), 1.0, rel_tol=1e-6)
    # inverse: |1/3 - 1/2| and |1/3 - 1/4| (near = 1)
    assert math.isclose(depth_loss(pred, target, valid, 1.0, 60.0, "inverse").item(), (1 / 6 + 1 / 12) / 2, rel_tol=1e-5)
    s, n = depth_abs_rel(pred, target, valid, 1.0, 60.0)
    assert n.item() == 2 and math.isclose(s.item(), 0.75, rel_tol=1e-6)
    # a prediction of inf (no hit) carries no gradient and is skipped by the loss, counts as `far` in AbsRel
    pred_inf = torch.tensor([[math.inf, 3.0, 7.0, 1.0]], requires_grad=True)
    loss = depth_loss(pred_inf, target, valid, 1.0, 60.0)
    loss.backward()
    assert loss.item() == 1.0 and torch.isfinite(pred_inf.grad).all()
    s, n = depth_abs_rel(pred_inf.detach(), target, valid, 1.0, 60.0)
    assert math.isclose(s.item(), (60 - 2) / 2 + 0.25, rel_tol=1e-6)


def test_box_depth_mask_keeps_surfaces_inside_the_box():
    # A camera at the origin looking along scene +x (OpenCV z -> scene x): planar depth = x of the surface.
    c2s = torch.tensor([[0.0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]])
    cam = Cameras.from_fov(90.0, 2, 2, c2s)
    depth = torch.tensor([[5.0, 30.0], [math.inf, 9.0]])
    bounds = torch.tensor([[-10.0, -10.0, -10.0], [10.0, 10.0, 10.0]])
    mask = box_depth_mask(depth, torch.isfinite(depth), cam, bounds, 1.0, 60.0)
    assert mask.tolist() == [[True, False], [False, True]]  # 30 m is beyond x = 10; inf is no hit


# ------------------------------------------------------------------------------------------------ semantics
def test_semantic_loss_of_a_uniform_distribution_is_log_k_and_ignores_unlabelled_pixels():
    K = 5
    probs = torch.full((2, K, 3, 4), 1.0 / K, requires_grad=True)
    target = torch.randint(0, K, (2, 3, 4))
    target[0, 0, 0] = -1
    loss = semantic_loss(probs, target)
    assert float(loss) == pytest.approx(math.log(K), rel=1e-6)
    loss.backward()
    assert float(probs.grad[0, :, 0, 0].abs().sum()) == 0.0
    sure = torch.nn.functional.one_hot(target.clamp_min(0), K).permute(0, 3, 1, 2).float()
    assert float(semantic_loss(sure, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(semantic_loss(probs, torch.full_like(target, -1))) == 0.0
    with pytest.raises(ValueError, match="shapes"):
        semantic_loss(probs, target[:, :2])


def test_confusion_iou_and_majority_baseline_known_values():
    target = torch.tensor([0, 0, 0, 1, 1, 2, -1])
    pred = torch.tensor([0, 0, 1, 1, 1, 0, 2])
    cm = confusion_matrix(pred, target, 4)
    assert cm.tolist() == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    iou = per_class_iou(cm)
    assert iou[:3].tolist() == pytest.approx([2 / 4, 2 / 3, 0.0]) and math.isnan(float(iou[3]))
    assert mean_iou(cm) == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)
    assert majority_baseline_miou(cm) == pytest.approx((3 / 6) / 3)      # predict class 0 everywhere
    metric = ConfusionMatrix(4)
    metric.update(pred[:4], target[:4])
    metric.update(pred[4:], target[4:])
    assert torch.equal(metric.compute(), cm)
