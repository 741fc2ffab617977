"""Feathering a new route scene into its predecessor over the overlap: the weights (0 on the new scene's outermost
columns, 1 beyond the overlap, monotone along the route), the exact blend, and a generated route whose neighbours
agree better over their shared space with it than without it."""
import numpy as np
import pytest
import torch

from nfldm_sdk.cameras.trajectory import Trajectory, rigid_inverse, yaw_pose
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.routes.feather import feather_into_predecessor, feather_weights
from nfldm_sdk.routes.outpaint import generate_route
from nfldm_sdk.routes.transfer import transfer_columns

pytestmark = pytest.mark.usefixtures("one_thread_module")
BOUNDS_XY = ((-16.0, -32.0), (48.0, 32.0))


def test_weights_ramp_from_the_predecessor_to_the_new_scene_across_the_overlap():
    w = feather_weights(BOUNDS_XY, (16, 16), yaw_pose(40.0, 0.0, 0.0))     # 4 m columns, the new box 40 m ahead
    assert w.shape == (16, 16) and w.min() >= 0 and w.max() <= 1
    # columns x = -14 … 6 m of the new box lie over the old one (its centres reach 46 m = 6 m here)
    np.testing.assert_array_equal(w[:, 6:], 1.0)
    np.testing.assert_array_equal(w[:, 0], 0.0)                           # the new box's outermost column
    row = w[8]
    np.testing.assert_allclose(w, np.broadcast_to(row, w.shape))             # straight: a ramp along x only
    np.testing.assert_allclose(row[:6], [0, 4 / 20, 8 / 20, 12 / 20, 16 / 20, 1], atol=1e-12)
    assert (np.diff(w, axis=1) >= -1e-12).all()                            # never falls along the route
    assert (feather_weights(BOUNDS_XY, (16, 16), yaw_pose(200.0, 0.0, 0.0)) == 1).all()   # no overlap


def test_the_blend_is_exact_and_leaves_the_rest_of_the_new_field_alone():
    Z, Y, X, C = 2, 16, 16, 3
    bounds = torch.tensor([[-16.0, -32.0, -2.0], [48.0, 32.0, 6.0]])
    gen = torch.Generator().manual_seed(0)
    prev = VoxelField(torch.rand(Z, Y, X, generator=gen), torch.randn(C, Z, Y, X, generator=gen), bounds)
    new = VoxelField(torch.rand(Z, Y, X, generator=gen), torch.randn(C, Z, Y, X, generator=gen), bounds)
    dst_to_src = rigid_inverse(yaw_pose(0.0, 0.0, 0.0)) @ yaw_pose(40.0, 0.0, 0.0)
    out = feather_into_predecessor(new, prev, BOUNDS_XY, dst_to_src)
    w = torch.as_tensor(feather_weights(BOUNDS_XY, (Y, X), dst_to_src), dtype=torch.float32)
    old_d, _ = transfer_columns(prev.density, BOUNDS_XY, dst_to_src)
    torch.testing.assert_close(out.density[..., :6], (w * new.density + (1 - w) * old_d)[..., :6])
    assert torch.equal(out.density[..., 6:], new.density[..., 6:]) and torch.equal(out.features[..., 6:], new.features[..., 6:])
    assert torch.equal(out.density[..., 0], prev.density[..., 10])        # w = 0: the predecessor's column exactly
    assert torch.equal(out.features[..., 0], prev.features[..., 10])
    with pytest.raises(ValueError, match="same grid"):
        feather_into_predecessor(new, VoxelField(prev.density[:1], prev.features[:, :1], bounds), BOUNDS_XY, dst_to_src)


def test_a_feathered_route_agrees_better_with_itself_over_the_overlaps(tiny_generator):
    traj = Trajectory.straight(length_m=130.0)
    plain = generate_route(tiny_generator, traj, seed=3, steps=2, feather=False)
    soft = generate_route(tiny_generator, traj, seed=3, steps=2)
    assert soft.settings["feather"] and not plain.settings["feather"]
    assert torch.equal(plain.scenes[0].field.density, soft.scenes[0].field.density)
    (xmin, ymin, _), (xmax, ymax, _) = tiny_generator.latent_ae.config.bounds
    bxy = ((float(xmin), float(ymin)), (float(xmax), float(ymax)))
    for k in range(1, len(soft)):
        dst_to_src = rigid_inverse(soft.plan.scene_to_world[k - 1]) @ soft.plan.scene_to_world[k]
        w = feather_weights(bxy, soft.scenes[k].field.density.shape[-2:], dst_to_src, soft.plan.reach_m)
        over = torch.as_tensor(w < 1)

        def gap(route):
            prev, _ = transfer_columns(route.scenes[k - 1].field.density, bxy, dst_to_src)
            return (route.scenes[k].field.density - prev).abs()[:, over].mean()

        assert gap(soft) < 0.9 * gap(plain)
        assert torch.equal(soft.scenes[k].field.density[:, ~over], plain.scenes[k].field.density[:, ~over])


def test_on_a_turn_the_weights_stay_in_range_and_reach_both_scenes():
    turn = yaw_pose(36.0, 8.0, 0.4)                                         # the next box 36 m on, turned 23°
    w = feather_weights(BOUNDS_XY, (32, 32), turn)
    assert 0 <= w.min() and w.max() <= 1 and (w == 0).any() and (w == 1).any() and ((w > 0) & (w < 1)).any()


def test_the_predecessor_counts_only_up_to_its_reach():
    w = feather_weights(BOUNDS_XY, (16, 16), yaw_pose(20.0, 0.0, 0.0), reach=24.0)   # columns at x = -14, -10, ...
    row = w[8]
    # old-frame x = new x + 20: the old grid's last trusted column is at 22 m (new x = 2), where the ramp reaches 1
    np.testing.assert_allclose(row[:5], [0, 4 / 16, 8 / 16, 12 / 16, 1.0], atol=1e-12)
    np.testing.assert_array_equal(row[5:], 1.0)
