"""Lift and splat (nfldm_sdk.fields.lift_splat): depth bins, per-bin occupancy by hand, frustum geometry, mean pooling,
and splat -> render consistency."""
import math

import pytest
import torch

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.fields.lift_splat import depth_bins, frustum_points, lift, lift_splat, splat, splat_batched
from nfldm_sdk.rendering.api import render_field

torch.set_num_threads(min(2, torch.get_num_threads()))

F64 = torch.float64


def along_x(eye=(0.0, 0.0, 0.0), width=1, height=1, hfov=60.0, dtype=F64) -> Cameras:
    """Camera at `eye` looking along world +x (OpenCV x = world -y, y = world -z, z = world +x)."""
    m = torch.eye(4, dtype=dtype)
    m[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]], dtype=dtype)
    m[:3, 3] = torch.tensor(eye, dtype=dtype)
    return Cameras.from_fov(hfov, width, height, m)


def test_depth_bins_linear_and_log():
    b = depth_bins(1.0, 5.0, 4)
    assert torch.allclose(b.centres, torch.tensor([1.5, 2.5, 3.5, 4.5])) and torch.allclose(b.deltas, torch.ones(4))
    centres, deltas = b                                                 # unpacks as (centres, deltas)
    assert torch.equal(centres, b.centres) and len(b) == 2
    lg = depth_bins(1.0, 16.0, 4, "log", dtype=F64)                     # edges 1, 2, 4, 8, 16
    assert torch.allclose(lg.centres, torch.tensor([1.5, 3.0, 6.0, 12.0], dtype=F64))
    assert torch.allclose(lg.deltas, torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=F64))
    assert torch.allclose(lg.edges, torch.tensor([1.0, 2, 4, 8, 16], dtype=F64))
    with pytest.raises(ValueError, match="near > 0"):
        depth_bins(0.0, 10.0, 4, "log")
    with pytest.raises(ValueError, match="far > near"):
        depth_bins(5.0, 1.0, 4)
    with pytest.raises(ValueError, match="spacing"):
        depth_bins(1.0, 5.0, 4, "cubic")


def test_lift_one_pixel_by_hand():
    # σ = (1, 2, 0.5) per metre in bins of width δ = (1, 1, 2) m: optical depths τ = (1, 2, 1).
    # O_0 = 1 − e^{−1}             = 0.632121
    # O_1 = e^{−1} (1 − e^{−2})    = 0.318092
    # O_2 = e^{−3} (1 − e^{−1})    = 0.031471
    # Σ O = 1 − e^{−4}             = 0.981684 ≤ 1
    sigma = torch.tensor([1.0, 2.0, 0.5], dtype=F64).reshape(1, 3, 1, 1)
    phi = torch.tensor([2.0, -1.0], dtype=F64).reshape(1, 2, 1, 1)
    fr = lift(sigma, phi, torch.tensor([1.0, 1.0, 2.0], dtype=F64))
    expect = torch.tensor([1 - math.exp(-1), math.exp(-1) * (1 - math.exp(-2)), math.exp(-3) * (1 - math.exp(-1))], dtype=F64)
    assert fr.occupancy.shape == (1, 3, 1, 1) and fr.features.shape == (1, 3, 1, 1, 3)
    torch.testing.assert_close(fr.occupancy[0, :, 0, 0], expect)
    assert fr.occupancy.sum().item() == pytest.approx(1 - math.exp(-4))
    # entries: [O·φ, σ]
    torch.testing.assert_close(fr.features[0, :, 0, 0, :2], expect[:, None] * torch.tensor([2.0, -1.0], dtype=F64))
    torch.testing.assert_close(fr.features[0, :, 0, 0, 2], sigma.flatten())
    # ray-length deltas: z_per_t = 0.5 doubles every δ, i.e. τ = (2, 4, 2): O_0 = 1 − e^{−2}
    fr2 = lift(sigma, phi, torch.tensor([1.0, 1.0, 2.0], dtype=F64), z_per_t=torch.full((1, 1, 1), 0.5, dtype=F64))
    assert fr2.occupancy[0, 0, 0, 0].item() == pytest.approx(1 - math.exp(-2))
    # activations
    fr3 = lift(torch.log(sigma), phi, torch.tensor([1.0, 1.0, 2.0], dtype=F64), density_activation="exp")
    torch.testing.assert_close(fr3.occupancy, fr.occupancy)


def test_lift_occupancy_bounded_and_shapes():
    g = torch.Generator().manual_seed(0)
    sigma = 3.0 * torch.rand(2, 16, 3, 4, generator=g)
    bins = depth_bins(0.5, 40.0, 16, "log")
    fr = lift(sigma, torch.randn(2, 5, 3, 4, generator=g), bins)
    assert fr.features.shape == (2, 16, 3, 4, 6)
    assert (fr.occupancy >= 0).all()
    total = fr.occupancy.sum(1)
    assert (total <= 1 + 1e-6).all()
    torch.testing.assert_close(total, 1 - torch.exp(-(sigma * bins.deltas[:, None, None]).sum(1)))
    with pytest.raises(ValueError, match="depth channels"):
        lift(sigma, torch.randn(2, 5, 3, 4), depth_bins(0.5, 40.0, 8))
    with pytest.raises(ValueError, match="feats"):
        lift(sigma, torch.randn(2, 5, 3, 5), bins)


def test_frustum_points_geometry():
    # 1x1 camera at (1, 2, 3) looking along +x: its only pixel centre is the principal point, so bin z sits at
    # (1 + z, 2, 3).
    bins = depth_bins(1.0, 5.0, 4, dtype=F64)
    pts = frustum_points(along_x(eye=(1.0, 2.0, 3.0)), bins)
    assert pts.shape == (4, 1, 1, 3)
    torch.testing.assert_close(pts[:, 0, 0], torch.tensor([[2.5, 2, 3], [3.5, 2, 3], [4.5, 2, 3], [5.5, 2, 3]], dtype=F64))
    # Batched cameras at another resolution: every point projects back to its pixel centre at its bin's depth.
    cams = Cameras.stack([along_x(width=5, height=3), along_x(eye=(0.0, 1.0, 0.0), width=5, height=3, hfov=90.0)])
    pts = frustum_points(cams, bins.centres)                           # bins given as centres work too
    assert pts.shape == (2, 4, 3, 5, 3)
    uv, z = cams.world_to_pixels(pts.reshape(2, -1, 3))
    uv_expect = cams.pixel_centers().reshape(1, 1, 15, 2).expand(2, 4, 15, 2).reshape(2, -1, 2)
    torch.testing.assert_close(uv, uv_expect)
    torch.testing.assert_close(z, bins.centres.reshape(1, 4, 1).expand(2, 4, 15).reshape(2, -1))


def test_splat_one_pixel_lands_in_expected_voxel():
    # Box x ∈ [0, 4], y, z ∈ [−1.5, 1.5], 1 m voxels (grid Z,Y,X = 3,3,4). A 1x1 camera at the origin looking
    # along +x, bins centred at x = 0.5 .. 3.5: bin d lands in voxel (k=1, j=1, i=d). Only bin 2 has density.
    bins = depth_bins(0.0, 4.0, 4, dtype=F64)
    sigma = torch.tensor([0.0, 0.0, 3.0, 0.0], dtype=F64).reshape(1, 4, 1, 1)
    phi = torch.tensor([1.0, 2.0], dtype=F64).reshape(1, 2, 1, 1)
    fr = lift(sigma, phi, bins)
    pts = frustum_points(along_x(), bins)                              # [4, 1, 1, 3]
    field = splat(pts, fr.features[0], torch.tensor([[0.0, -1.5, -1.5], [4.0, 1.5, 1.5]], dtype=F64), (3, 3, 4))
    assert field.density.shape == (3, 3, 4) and field.features.shape == (2, 3, 3, 4)
    o2 = 1 - math.exp(-3.0)                                            # O of bin 2 (nothing in front of it)
    expect_d = torch.zeros(3, 3, 4, dtype=F64)
    expect_d[1, 1, 2] = 3.0
    torch.testing.assert_close(field.density, expect_d)
    torch.testing.assert_close(field.features[:, 1, 1, 2], o2 * torch.tensor([1.0, 2.0], dtype=F64))
    assert field.features.abs().sum().item() == pytest.approx(o2 * 3.0)   # nothing anywhere else


def test_splat_mean_pooling_and_dropping():
    bounds = torch.tensor([[0.0, 0.0, 0.0], [2.0, 2.0, 2.0]], dtype=F64)  # 1 m voxels, grid (2, 2, 2)
    pts = torch.tensor([[0.2, 0.3, 0.4],      # voxel (k0, j0, i0)
                        [0.9, 0.1, 0.5],      # same voxel: the two average (from two views, say)
                        [1.5, 0.5, 1.5],      # voxel (k1, j0, i1), alone
                        [-0.1, 0.5, 0.5],     # outside (x < min): dropped
                        [2.0, 0.5, 0.5],      # on the max face: outside (half-open voxels)
                        [math.nan, 0.5, 0.5]], dtype=F64)
    vals = torch.tensor([[1.0, 10.0], [3.0, 30.0], [5.0, 50.0], [100.0, 100.0], [100.0, 100.0], [100.0, 100.0]], dtype=F64)
    field = splat(pts, vals, bounds, (2, 2, 2))                        # C = 1 feature + density
    assert field.features[0, 0, 0, 0].item() == 2.0 and field.density[0, 0, 0].item() == 20.0   # mean, not sum
    assert field.features[0, 1, 0, 1].item() == 5.0 and field.density[1, 0, 1].item() == 50.0
    assert field.density.sum().item() == 70.0 and field.features.sum().item() == 7.0           # the rest is empty (0)


def test_splat_batched_keeps_scenes_apart_and_is_differentiable():
    bounds = torch.tensor([[[0.0, 0, 0], [2.0, 2, 2]], [[10.0, 0, 0], [12.0, 2, 2]]], dtype=F64)  # per scene
    pts = torch.tensor([[[0.5, 0.5, 0.5], [10.5, 0.5, 0.5]],          # scene 0: second point is outside its box
                        [[10.5, 0.5, 0.5], [0.5, 0.5, 0.5]]], dtype=F64)  # scene 1: first inside, second outside
    vals = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]], dtype=F64, requires_grad=True)
    field = splat_batched(pts, vals, bounds, (2, 2, 2))
    assert field.batch_size == 2 and field.density.shape == (2, 2, 2, 2) and torch.equal(field.bounds, bounds)
    assert field.density[0, 0, 0, 0].item() == 2.0 and field.density[1, 0, 0, 0].item() == 6.0
    assert field.density.sum().item() == 8.0
    field.features.sum().backward()
    torch.testing.assert_close(vals.grad, torch.tensor([[[1.0, 0], [0, 0]], [[1.0, 0], [0, 0]]], dtype=F64))
    # batch_index may be a prefix of the points' leading shape (one scene per view)
    f2 = splat(pts, vals.detach(), bounds, (2, 2, 2), batch_index=torch.tensor([0, 1]), batch_size=2)
    assert torch.equal(f2.density, field.density)
    with pytest.raises(ValueError, match="prefix"):
        splat(pts, vals.detach(), bounds, (2, 2, 2), batch_index=torch.tensor([0, 1, 1]))


def test_splat_then_render_sees_the_blob_at_its_depth():
    # lift_splat of one view whose only density is in bin 5 (centre x = 5.5, voxel i = 5 covering [5, 6]), then
    # rendering from the same camera: the surface appears inside that voxel's front half — between the previous
    # voxel centre (4.5 m, where trilinear interpolation starts the ramp) and the blob's centre (5.5 m).
    bins = depth_bins(0.0, 8.0, 8, dtype=F64)
    cams = Cameras.stack([along_x(width=1, height=1)]).reshape(1, 1)     # [B=1, V=1]
    density = torch.zeros(1, 1, 8, 1, 1, dtype=F64)
    density[0, 0, 5] = 500.0
    feats = torch.tensor([0.5, -1.0, 2.0], dtype=F64).reshape(1, 1, 3, 1, 1)
    bounds = torch.tensor([[0.0, -1.5, -1.5], [8.0, 1.5, 1.5]], dtype=F64)
    field = lift_splat(cams, density, feats, bins, bounds, (3, 3, 8))
    assert field.batch_size == 1 and field.num_channels == 3
    assert field.density[0, 1, 1, 5].item() == 500.0 and field.density.sum().item() == 500.0
    out = render_field(field, Cameras.from_fov(30.0, 3, 3, cams.cam_to_world.reshape(1, 4, 4)).reshape(1, 1), n_samples=400)
    centre = (0, 0, 1, 1)
    assert out.alpha[centre].item() > 0.99
    assert 4.5 <= out.depth[centre].item() <= 5.5
    # The only nonzero features are O·φ in the blob's voxel; features ramp up with the density (both trilinear),
    # so the pixel sees a positive multiple of φ (small: the ray stops early in the ramp), and nothing else.
    f = out.features[0, 0, :, 1, 1]
    phi = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    scale = (f @ phi) / (phi @ phi)
    assert scale > 0.01
    torch.testing.assert_close(f, scale * phi, atol=1e-12, rtol=0)


def test_lift_splat_matches_the_four_steps_and_checks_cameras():
    g = torch.Generator().manual_seed(1)
    B, V, D, C, h, w = 2, 3, 6, 4, 3, 4
    density = torch.rand(B, V, D, h, w, generator=g)
    feats = torch.randn(B, V, C, h, w, generator=g)
    mats = torch.eye(4).repeat(B, V, 1, 1)
    mats[..., :3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    mats[..., 0, 3] = torch.arange(B * V, dtype=torch.float32).reshape(B, V) * 0.5
    cams = Cameras.from_fov(90.0, 4 * w, 4 * h, mats)                  # image resolution: resized inside
    bins = depth_bins(0.5, 10.0, D)
    bounds = torch.tensor([[0.0, -5.0, -5.0], [12.0, 5.0, 5.0]])
    field = lift_splat(cams, density, feats, bins, bounds, (4, 8, 12))
    small = cams.resized(w, h)
    fr = lift(density.reshape(B * V, D, h, w), feats.reshape(B * V, C, h, w), bins)
    manual = splat(frustum_points(small, bins), fr.features.reshape(B, V, D, h, w, C + 1), bounds, (4, 8, 12),
                   batch_index=torch.arange(B), batch_size=B)
    assert torch.equal(field.density, manual.density) and torch.equal(field.features, manual.features)
    assert field.density.sum() > 0
    with pytest.raises(ValueError, match="batch shape"):
        lift_splat(cams.reshape(-1), density, feats, bins, bounds, (4, 8, 12))
