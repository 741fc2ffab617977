"""The dense-depth geometry supervision of stage 1: the frustum depth target (known votes), the occupancy and opacity
losses (known values and their minima), the empty-ray mask (sky, surfaces outside / inside the box, a camera outside
the box), and a training step that uses them with a subset of rendered target views."""
import math

import pytest
import torch

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_training.metrics.masks import box_depth_mask, empty_ray_mask
from nfldm_training.modules.losses import frustum_depth_target, occupancy_loss, opacity_loss

INF = math.inf


def test_frustum_depth_target_counts_the_votes_of_each_block():
    edges = torch.tensor([1.0, 2.0, 3.0, 4.0])                                  # D = 3 bins
    depth = torch.tensor([[1.5, 2.5, 3.99, 9.0],
                          [INF, 0.5, 4.0, 1.0]])                                 # [2, 4] -> blocks of 2×2
    target, weight = frustum_depth_target(depth, edges, 2)
    assert target.shape == (4, 1, 2) and weight.shape == (1, 2)
    # block 0: 1.5 -> bin 0, 2.5 -> bin 1, inf -> escape, 0.5 (nearer than the first edge) does not vote
    assert weight[0, 0] == pytest.approx(0.75)
    assert target[:, 0, 0].tolist() == pytest.approx([1 / 3, 1 / 3, 0.0, 1 / 3])
    # block 1: 3.99 -> bin 2, 9.0 and 4.0 (at/after the far edge) -> escape, 1.0 (on the first edge) -> bin 0
    assert weight[0, 1] == pytest.approx(1.0)
    assert target[:, 0, 1].tolist() == pytest.approx([0.25, 0.0, 0.25, 0.5])
    with pytest.raises(ValueError, match="divisible"):
        frustum_depth_target(depth[:, :3], edges, 2)


def test_occupancy_loss_known_values_and_minimum():
    target = torch.zeros(4, 1, 1)
    target[1] = 1.0                                                             # the surface is in bin 1
    weight = torch.ones(1, 1)
    uniform = torch.full((3, 1, 1), 0.25)                                       # escape gets 0.25 too
    assert float(occupancy_loss(uniform, target, weight)) == pytest.approx(math.log(4.0), rel=1e-5)
    exact = torch.zeros(3, 1, 1)
    exact[1] = 1.0
    assert float(occupancy_loss(exact, target, weight)) == pytest.approx(0.0, abs=1e-5)
    sky = torch.zeros(4, 1, 1)
    sky[3] = 1.0                                                                # escape: nothing along the ray
    assert float(occupancy_loss(torch.zeros(3, 1, 1), sky, weight)) == pytest.approx(0.0, abs=1e-5)
    assert float(occupancy_loss(uniform, sky, weight)) == pytest.approx(math.log(4.0), rel=1e-5)
    # gradient: more occupancy in the surface's bin lowers the loss
    occ = uniform.clone().requires_grad_(True)
    occupancy_loss(occ, target, weight).backward()
    assert occ.grad[1, 0, 0] < occ.grad[0, 0, 0]
    assert float(occupancy_loss(uniform, target, torch.zeros(1, 1))) == 0.0


def test_opacity_loss_known_values():
    alpha = torch.tensor([0.5, 0.9, 0.1, 0.7])
    opaque = torch.tensor([True, True, False, False])
    empty = torch.tensor([False, False, True, False])
    expected = (-math.log(0.5) - math.log(0.9) - math.log(0.9)) / 3
    assert float(opacity_loss(alpha, opaque, empty)) == pytest.approx(expected, rel=1e-5)
    none = torch.zeros(4, dtype=torch.bool)
    assert float(opacity_loss(alpha, none, none)) == 0.0


def _forward_camera(x: float = 0.0) -> Cameras:
    """A 4×4 camera at (x, 0, 1.5) looking along +x (OpenCV axes: z forward = scene x, x right = scene −y)."""
    K = torch.tensor([[20.0, 0.0, 2.0], [0.0, 20.0, 2.0], [0.0, 0.0, 1.0]])  # narrow: ±2 m at 20 m
    c2w = torch.eye(4)
    c2w[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    c2w[:3, 3] = torch.tensor([x, 0.0, 1.5])
    return Cameras(K[None], c2w[None], 4, 4)


def test_empty_ray_mask_sky_outside_and_inside_the_box():
    bounds = torch.tensor([[-16.0, -32.0, -2.0], [48.0, 32.0, 6.0]])
    depth = torch.full((1, 4, 4), 20.0)                                          # a wall 20 m ahead: inside
    depth[0, 0, 0] = INF                                                         # sky
    depth[0, 1, 1] = 55.0                                                        # beyond the box's far face (x = 48)
    valid = torch.isfinite(depth)
    cams = _forward_camera()
    empty = empty_ray_mask(depth, valid, cams, bounds, near=1.0)
    usable = box_depth_mask(depth, valid, cams, bounds, 1.0, 60.0)
    assert bool(empty[0, 0, 0]) and bool(empty[0, 1, 1])
    assert int(empty.sum()) == 2
    assert not bool((empty & usable).any()) and int(usable.sum()) == 14
    outside = _forward_camera(x=-30.0)                                           # camera behind the box
    assert not bool(empty_ray_mask(depth, valid, outside, bounds, near=1.0).any())


def test_training_step_with_geometry_losses_and_rendered_subset(tiny_capture):
    from nfldm_training.configs.presets import get_preset
    from nfldm_training.data.capture_windows import SceneWindowDataset, collate_windows
    from nfldm_training.modules.scene_ae import SceneAELightningModule

    torch.manual_seed(0)
    preset = get_preset("tiny", {"scene_ae_train.occupancy_weight": 1.0, "scene_ae_train.opacity_weight": 1.0,
                                 "scene_ae_train.render_views": 3})
    module = SceneAELightningModule(preset.scene_ae, preset.scene_ae_train)
    ds = SceneWindowDataset([tiny_capture], window=2, image_size=preset.scene_ae.image_size, split="train")
    batch = collate_windows([ds[0]])
    seen = {}
    real_decode = module.model.decode

    def decode(field, cameras, **kw):
        seen["targets"] = tuple(cameras.batch_shape)
        return real_decode(field, cameras, **kw)

    module.model.decode = decode
    module.log_dict = lambda logs, **kw: seen.setdefault("logs", logs)
    loss = module.training_step(batch, 0)
    assert seen["targets"] == (1, 3)                                             # 3 of the 12 views rendered
    logs = seen["logs"]
    assert float(logs["train/occupancy"]) > 0 and float(logs["train/opacity"]) > 0
    loss.backward()
    density_head = module.model.encoder.head[-1].weight.grad[: preset.scene_ae.depth_bins]
    assert density_head.abs().sum() > 0
