"""The LAE's label-preserving losses (known values, gradients, class balancing) and fine-tuning an LAE from a trained
one (`train_latent_ae(init_from=...)`, `nfldm train latent-ae --init-from`): the run starts exactly where the source
ended, a different architecture and label losses without a semantic head are refused before anything is written."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from click.testing import CliRunner

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.labels.classes import DEFAULT_CLASSES
from nfldm_sdk.labels.semantic_field import field_bev, field_bev_probabilities
from nfldm_training.modules.label_losses import balanced_weights, bev_label_loss, voxel_label_loss

pytestmark = pytest.mark.usefixtures("one_thread_module")

K = DEFAULT_CLASSES.num_classes
SKY = DEFAULT_CLASSES.sky_index


def _head(c: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """A head reading class j (solid order) off feature channel j with logit 10 · f_j."""
    w = torch.zeros(K - 1, c)
    for j in range(min(c, K - 1)):
        w[j, j] = 10.0
    return w, torch.zeros(K - 1)


def _field(density: torch.Tensor, features: torch.Tensor) -> VoxelField:
    """A batched field over a 1 m grid from density ``[B, Z, Y, X]`` and features ``[B, C, Z, Y, X]``."""
    b, z, y, x = density.shape
    bounds = torch.tensor([[0.0, 0.0, 0.0], [float(x), float(y), float(z)]]).expand(b, 2, 3).clone()
    return VoxelField(density=density, features=features, bounds=bounds)


def _one_hot_features(classes: torch.Tensor, c: int = 4) -> torch.Tensor:
    """``[B, Z, Y, X]`` solid-class indices -> features ``[B, C, Z, Y, X]`` with channel j = 1 where class j."""
    return torch.nn.functional.one_hot(classes, c).permute(0, 4, 1, 2, 3).float()


def test_balanced_weights_known_values():
    labels = torch.tensor([0, 0, 0, 0, 2])
    assert balanced_weights(labels, 3, 0.5).tolist() == pytest.approx([0.5, 0.5, 0.5, 0.5, 1.0])
    assert balanced_weights(labels, 3, 0.0).tolist() == [1.0] * 5


def test_voxel_label_loss_is_low_for_the_same_labels_and_high_for_others():
    density = torch.zeros(1, 2, 3, 3)
    density[0, 0] = 5.0                                                       # the bottom layer is solid
    classes = torch.zeros(1, 2, 3, 3, dtype=torch.long)
    classes[0, 0, :, 0] = 1
    w, b = _head()
    target = _field(density, _one_hot_features(classes))
    same = voxel_label_loss(_field(density, _one_hot_features(classes)), target, w, b)
    swapped = voxel_label_loss(_field(density, _one_hot_features(1 - classes)), target, w, b)
    # logits 10 vs 0 (and 0 for the other K−3 classes): CE = log(1 + (K−2) e^−10) when right, ≈ 10 when wrong
    assert float(same) == pytest.approx(math.log(1 + (K - 2) * math.exp(-10)), rel=1e-3)
    assert float(swapped) == pytest.approx(10 + math.log(1 + (K - 2) * math.exp(-10)), rel=1e-4)


def test_voxel_label_loss_balances_classes_and_ignores_empty_voxels():
    density = torch.zeros(1, 1, 1, 5)
    density[0, 0, 0, :4] = 5.0                                                # voxel 4 is empty: not supervised
    classes = torch.tensor([[[[0, 0, 0, 1, 1]]]])
    w, b = _head()
    target = _field(density, _one_hot_features(classes))
    pred_feats = _one_hot_features(classes)
    pred_feats[0, :, 0, 0, 3] = 0.0                                           # the one class-1 voxel: logits all 0
    pred_feats[0, :, 0, 0, 4] = 0.0                                           # the empty voxel: ignored
    loss = voxel_label_loss(_field(density, pred_feats.requires_grad_()), target, w, b, power=1.0)
    right, wrong = math.log(1 + (K - 2) * math.exp(-10)), math.log(K - 1)
    # power 1: each class weighs as much in total -> (mean over class 0 + mean over class 1) / 2
    assert float(loss) == pytest.approx((right + wrong) / 2, rel=1e-4)
    unbalanced = voxel_label_loss(_field(density, pred_feats), target, w, b, power=0.0)
    assert float(unbalanced) == pytest.approx((3 * right + wrong) / 4, rel=1e-4)
    loss.backward()
    empty = _field(torch.zeros(1, 1, 1, 5), pred_feats)
    assert float(voxel_label_loss(empty, _field(torch.zeros(1, 1, 1, 5), pred_feats), w, b)) == 0.0


def test_bev_label_loss_known_values_and_gradient_to_the_density():
    density = torch.zeros(1, 4, 2, 2)
    density[0, 1, 0, 0] = 50.0                                                # a surface in column (0, 0) only
    classes = torch.full((1, 4, 2, 2), 2)
    w, b = _head()
    target = _field(density, _one_hot_features(classes))
    tags = field_bev(target[0], w, b, DEFAULT_CLASSES)
    assert int(tags[0, 0]) == DEFAULT_CLASSES.representative_tags[2 + (2 >= SKY)]
    same = bev_label_loss(target, target, w, b, DEFAULT_CLASSES)
    assert float(same) < 1e-3
    # V̂ empty everywhere: the three sky columns are right (NLL 0), the surface column gets p = 0 -> −log(1e-6)
    pred_density = torch.zeros_like(density).requires_grad_()
    pred = _field(pred_density, _one_hot_features(classes))
    empty = bev_label_loss(pred, target, w, b, DEFAULT_CLASSES, power=0.0)
    assert float(empty) == pytest.approx(-math.log(1e-6) / 4, rel=1e-4)
    pred_density2 = torch.full_like(density, 0.1).requires_grad_()
    bev_label_loss(_field(pred_density2, _one_hot_features(classes)), target, w, b, DEFAULT_CLASSES).backward()
    assert pred_density2.grad[0, :, 0, 0].sum() < 0 < pred_density2.grad[0, :, 1, 1].sum()   # grow it there, clear it here
    probs, alpha = field_bev_probabilities(target, w, b, DEFAULT_CLASSES)
    assert probs.shape == (1, K, 2, 2) and torch.allclose(probs.sum(1), torch.ones(1, 2, 2))
    assert float(alpha[0, 0, 0]) == pytest.approx(1.0, abs=1e-6) and float(alpha[0, 1, 1]) == 0.0


def test_layout_agreement_pools_the_layout_classes_over_updates():
    from nfldm_sdk.labels.bev_map import bev_class_iou
    from nfldm_training.modules.latent_ae import LayoutAgreement

    road, side, building, tree, U = 1, 2, 3, 9, 255
    a1, b1 = torch.tensor([[road, road, side, U]]), torch.tensor([[road, side, side, road]])
    a2, b2 = torch.tensor([[building, tree]]), torch.tensor([[building, building]])
    m = LayoutAgreement(DEFAULT_CLASSES)
    m.update(a1, b1)
    m.update(a2, b2)
    # pooled: road 1/2, sidewalk 1/2, building 1/2, vegetation 0/1 -> mean 0.375 (the unobserved cell does not count)
    assert float(m.compute()) == pytest.approx(0.375)
    iou = bev_class_iou(torch.cat([a1.flatten(), a2.flatten()])[None], torch.cat([b1.flatten(), b2.flatten()])[None])
    assert iou[DEFAULT_CLASSES.names.index("road")] == pytest.approx(0.5)
    assert math.isnan(float(LayoutAgreement(DEFAULT_CLASSES).compute()))


# ============================================================================================ fine-tuning
@pytest.fixture(scope="module")
def lae_source(tmp_path_factory, tiny_capture, tiny_generator):
    """``(root, voxels, scene_ae_dir, preset, source_run)``: the tiny generator's stage-1 model saved, its voxels of
    the tiny capture, and a 2-step LAE run of the tiny preset on them."""
    from nfldm_sdk.cli.main import main
    from nfldm_training.configs.latent import get_latent_preset
    from nfldm_training.modules.latent_ae import train_latent_ae

    root = tmp_path_factory.mktemp("lae_labels")
    tiny_generator.scene_ae.save_pretrained(root / "scene_ae")
    res = CliRunner().invoke(main, ["encode-voxels", "--model", str(root / "scene_ae"), "--data", tiny_capture,
                                    "--out", str(root / "voxels.zarr"), "--window", "2", "--stride", "2", "--no-progress"])
    assert res.exit_code == 0, res.output
    preset = get_latent_preset("tiny")
    tc = dataclasses.replace(preset.latent_ae_train, max_steps=2, val_interval=1000, val_batches=1, render_views=2, log_every=1,
                             voxel_label_weight=0.1, bev_label_weight=0.1)
    preset = dataclasses.replace(preset, latent_ae_train=tc)
    source = train_latent_ae(root / "voxels.zarr", root / "scene_ae", preset, root / "source", progress=False,
                             log=lambda m: None, accelerator="cpu", devices=1)
    return root, preset, source


def test_label_losses_are_logged_in_training(lae_source):
    root, _, source = lae_source
    metrics = (next((source.run_dir / "logs").glob("version_*")) / "metrics.csv").read_text().splitlines()[0]
    assert "train/voxel_labels" in metrics and "train/bev_labels" in metrics and "val/layout_miou" in metrics


def test_fine_tuning_starts_where_the_source_ended(lae_source):
    from nfldm_training.modules.latent_ae import train_latent_ae

    root, preset, source = lae_source
    logs = []
    tuned = train_latent_ae(root / "voxels.zarr", root / "scene_ae", preset, root / "tuned", progress=False,
                            log=logs.append, accelerator="cpu", devices=1, init_from=source.run_dir)
    assert any("weights and codebooks from" in m for m in logs)
    src, new = (json.loads((r.run_dir / "metrics.json").read_text()) for r in (source, tuned))
    assert "layout_miou" in src["final"]     # nan here: the random stage-1 fields' BEV holds no layout class
    for name in ("density_error", "feature_error", "psnr_render", "usage_c", "usage_f", "layout_miou"):
        assert new["untrained"][name] == pytest.approx(src["final"][name], rel=1e-5, abs=1e-6, nan_ok=True), name
    assert tuned.global_step == 2


def test_fine_tuning_refuses_another_architecture_before_writing(lae_source):
    from nfldm_training.errors import TrainingError
    from nfldm_training.modules.latent_ae import train_latent_ae

    root, preset, source = lae_source
    other = dataclasses.replace(preset, latent_ae=dataclasses.replace(preset.latent_ae, g_dim=preset.latent_ae.g_dim * 2))
    with pytest.raises(TrainingError, match=r"architecture differs .*g_dim"):
        train_latent_ae(root / "voxels.zarr", root / "scene_ae", other, root / "other", progress=False,
                        log=lambda m: None, accelerator="cpu", devices=1, init_from=source.run_dir)
    assert not (root / "other").exists()


def test_label_losses_without_a_semantic_head_are_refused_before_writing(lae_source, tiny_generator):
    from nfldm_sdk.models.scene_ae import SceneAutoEncoder
    from nfldm_training.errors import TrainingError
    from nfldm_training.modules.latent_ae import train_latent_ae

    root, preset, _ = lae_source
    headless = SceneAutoEncoder(dataclasses.replace(tiny_generator.scene_ae.config, semantic_classes=()))
    headless.load_state_dict({k: v for k, v in tiny_generator.scene_ae.state_dict().items()
                              if not k.startswith("semantic_head.")})
    headless.save_pretrained(root / "headless")
    with pytest.raises(TrainingError, match="semantic head"):
        train_latent_ae(root / "voxels.zarr", root / "headless", preset, root / "headless_run", progress=False,
                        log=lambda m: None, accelerator="cpu", devices=1)
    assert not (root / "headless_run").exists()


def test_init_from_cli_names_a_missing_model(lae_source, tmp_path):
    from nfldm_sdk.cli.main import main

    root, _, _ = lae_source
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(main, ["train", "latent-ae", "--voxels", str(root / "voxels.zarr"), "--scene-ae",
                                    str(root / "scene_ae"), "--preset", "tiny", "--out", str(tmp_path / "run"),
                                    "--init-from", str(tmp_path / "empty"), "--no-progress"])
    assert res.exit_code != 0 and "no saved latent auto-encoder" in res.output
    assert not (tmp_path / "run").exists()
