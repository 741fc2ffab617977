"""Volume rendering (nfldm_sdk.rendering.api) and the voxel field (nfldm_sdk.fields.voxel_field): analytic renders with the expected
value worked out in comments, gradients, every fast path against the reference, persistence."""
import math

import pytest
import torch

from nfldm_sdk.benchmarks.render import format_render_bench, render_naive_loop, run_render_bench
from nfldm_sdk.cameras.builders import ring_cameras
from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.fields.synthetic import driving_like_field
from nfldm_sdk.fields.voxel_field import VoxelField
import nfldm_sdk.rendering.torch_paths as torch_paths
from nfldm_sdk.rendering.api import HIT_ALPHA, RenderOutput, clip_rays_to_box, render_field, render_field_reference

torch.set_num_threads(min(2, torch.get_num_threads()))

F64 = torch.float64


def looking_along_x(eye=(0.0, 0.0, 0.0), dtype=F64) -> torch.Tensor:
    """cam_to_world of a camera at `eye` looking along world +x (OpenCV x = world -y, y = world -z, z = world +x)."""
    m = torch.eye(4, dtype=dtype)
    m[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]], dtype=dtype)
    m[:3, 3] = torch.tensor(eye, dtype=dtype)
    return m


def slab_field(x_layers: slice, sigma: float, feature=(1.0, -2.0, 0.5), nx: int = 20, dtype=F64) -> VoxelField:
    """Box x ∈ [2, 4] (0.1 m voxels along x), y, z ∈ [-5, 5]; density `sigma` in the x voxel layers `x_layers`."""
    bounds = torch.tensor([[2.0, -5.0, -5.0], [4.0, 5.0, 5.0]], dtype=dtype)
    f = VoxelField.empty((4, 4, nx), len(feature), bounds, dtype=dtype)
    f.density[:, :, x_layers] = sigma
    f.features[:] = torch.tensor(feature, dtype=dtype)[:, None, None, None]
    return f


def random_field(shape=(3, 4, 5), C=2, seed=0, dtype=F64, batch=None, bounds=((-1.0, -1.5, -0.5), (2.0, 1.5, 1.0))):
    g = torch.Generator().manual_seed(seed)
    lead = () if batch is None else (batch,)
    density = 0.2 + 2.0 * torch.rand(*lead, *shape, generator=g, dtype=dtype)
    feats = torch.randn(*lead, C, *shape, generator=g, dtype=dtype)
    return VoxelField(density, feats, torch.tensor(bounds, dtype=dtype))


def cameras_around(n, seed=0, width=6, height=5, inside=False, dtype=F64) -> Cameras:
    """`n` cameras looking at the box centre region of `random_field`, from outside (or inside) the box."""
    g = torch.Generator().manual_seed(seed)
    mats = []
    for _ in range(n):
        target = torch.tensor([0.5, 0.0, 0.25], dtype=dtype) + 0.3 * torch.randn(3, generator=g, dtype=dtype)
        if inside:
            eye = torch.tensor([0.5, 0.0, 0.25], dtype=dtype) + 0.4 * (torch.rand(3, generator=g, dtype=dtype) - 0.5)
            target = eye + torch.randn(3, generator=g, dtype=dtype)
        else:
            d = torch.randn(3, generator=g, dtype=dtype)
            eye = target + 4.0 * d / d.norm()
        z = (target - eye) / (target - eye).norm()
        x = torch.linalg.cross(z, torch.tensor([0.0, 0.0, 1.0], dtype=dtype))
        x = x / x.norm()
        m = torch.eye(4, dtype=dtype)
        m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, torch.linalg.cross(z, x), z, eye
        mats.append(m)
    return Cameras.from_fov(60.0, width, height, torch.stack(mats))


def assert_same(a: RenderOutput, b: RenderOutput, atol: float):
    assert a.features.shape == b.features.shape and a.depth.shape == b.depth.shape and a.alpha.shape == b.alpha.shape
    torch.testing.assert_close(a.features, b.features, atol=atol, rtol=0)
    torch.testing.assert_close(a.alpha, b.alpha, atol=atol, rtol=0)
    assert torch.equal(torch.isfinite(a.depth), torch.isfinite(b.depth))
    fin = torch.isfinite(a.depth)
    torch.testing.assert_close(a.depth[fin], b.depth[fin], atol=atol * 10, rtol=0)


IMPLS = ["reference", "dense", "sparse"]


# ------------------------------------------------------------------------------------------------ analytic renders
@pytest.mark.parametrize("impl", IMPLS)
def test_slab_transmittance(impl):
    # A slab of σ = 2/m and thickness L = 0.6 m (x voxel layers 8..13, x ∈ [2.8, 3.4]) in an otherwise empty box,
    # seen head-on from the origin: a pixel whose ray makes angle θ with the slab normal crosses L / cos θ,
    # and cos θ = z_per_t. So alpha = 1 − exp(−σ L / z_per_t), features = alpha · f (no background),
    # e.g. 1 − e^{−1.2} = 0.6988 on the axis. Trilinear ramps keep ∫σ exactly; 400 samples make the quadrature ~1e-5.
    field = slab_field(slice(8, 14), 2.0)
    cams = Cameras.from_fov(40.0, 6, 4, looking_along_x())
    out = render_field(field, cams, n_samples=400, implementation=impl)
    expect = 1.0 - torch.exp(-2.0 * 0.6 / cams.rays().z_per_t)
    torch.testing.assert_close(out.alpha, expect, atol=1e-4, rtol=0)
    f = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    torch.testing.assert_close(out.features, expect[None] * f[:, None, None], atol=3e-4, rtol=0)
    assert out.features.shape == (3, 4, 6) and out.depth.shape == (4, 6) and out.alpha.shape == (4, 6)


def test_slab_filling_the_box_is_exact():
    # σ everywhere in the box: the field is held constant up to the box faces (border padding), so the ray crosses
    # exactly L = 2 m / cos θ of density 0.5: alpha = 1 − e^{−1/z_per_t} (on axis 1 − e^{−1} = 0.6321) for ANY
    # sample count — the integrand is constant.
    field = slab_field(slice(None), 0.5)
    cams = Cameras.from_fov(40.0, 5, 3, looking_along_x())
    for impl in IMPLS:
        out = render_field(field, cams, n_samples=7, implementation=impl)
        torch.testing.assert_close(out.alpha, 1.0 - torch.exp(-1.0 / cams.rays().z_per_t), atol=1e-12, rtol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_opaque_wall_planar_depth(impl):
    # σ = 2000/m in the box's first x layer, the face the camera sees is x = 2 (the box's min face: sharp there).
    # Planar depth of every pixel = 2 m, not the ray length 2 / z_per_t (up to 2.3 m at the corners of a 60° view).
    # With n samples over a segment of planar length 2 m the first sample sits half a spacing (1/n m) inside,
    # and it already takes α = 1 − e^{−2000·2/(n z)} ≈ 1, so depth ∈ [2, 2 + 2/n].
    field = slab_field(slice(0, 1), 2000.0)
    cams = Cameras.from_fov(60.0, 7, 5, looking_along_x())
    n = 200
    out = render_field(field, cams, n_samples=n, implementation=impl)
    assert torch.all(out.alpha > 0.999)
    assert torch.all(out.depth >= 2.0) and torch.all(out.depth <= 2.0 + 2.0 / n)
    ray_length = 2.0 / cams.rays().z_per_t
    assert (ray_length - out.depth).max() > 0.2                    # it really is planar depth
    # An interior wall (layers 10.., front face x = 3): trilinear interpolation ramps σ up over the half voxel in
    # front of the face, so the surface sits in [3 − 0.05, 3 + one sample spacing].
    out = render_field(slab_field(slice(10, None), 2000.0), cams, n_samples=n, implementation=impl)
    assert torch.all(out.depth >= 2.95) and torch.all(out.depth <= 3.0 + 2.0 / n)


@pytest.mark.parametrize("impl", IMPLS)
def test_depth_is_expected_depth_over_alpha(impl):
    # depth = Σ w_i z_i / alpha, normalised by alpha: a faint slab (σ = 0.01/m, alpha ≈ 0.006) is placed at its own
    # distance, not pulled towards 0, when the caller asks for depth down to that opacity (training does). For σ → 0
    # the weights follow the σ profile, whose mean is the slab centre x = 3.1 m (layers 8..13 span [2.8, 3.4]; the
    # trilinear ramps are symmetric); the axis pixel has cos θ = 1. By default (HIT_ALPHA) it is no hit: inf.
    cams = Cameras.from_fov(20.0, 3, 3, looking_along_x())
    field = slab_field(slice(8, 14), 0.01)
    faint = render_field(field, cams, n_samples=400, implementation=impl, min_hit_alpha=1e-4)
    assert faint.depth[1, 1].item() == pytest.approx(3.1, abs=2e-3)
    assert faint.alpha[1, 1].item() == pytest.approx(1.0 - math.exp(-0.01 * 0.6), rel=1e-3)
    assert torch.isinf(render_field(field, cams, n_samples=400, implementation=impl).depth).all()


def half_box_field(sigma_left: float, sigma_right: float, dtype=F64) -> VoxelField:
    """Box x ∈ [2, 6] (0.1 m voxels), y ∈ [−2, 2] (0.5 m), z ∈ [−2, 2]: seen from the origin along +x, the world
    y > 0 half is the image's left half (OpenCV x = world −y). Left half: σ = `sigma_left` everywhere; right half:
    an opaque slab of σ = `sigma_right` in x ∈ [4, 5], empty elsewhere."""
    bounds = torch.tensor([[2.0, -2.0, -2.0], [6.0, 2.0, 2.0]], dtype=dtype)
    f = VoxelField.empty((4, 8, 40), 2, bounds, dtype=dtype)
    f.density[:, 4:, :] = sigma_left                                  # y ∈ [0, 2]
    f.density[:, :4, 20:30] = sigma_right                             # y ∈ [−2, 0], x ∈ [4, 5]
    f.features[:] = 1.0
    return f


# Columns of the 8-wide test camera whose rays stay ≥ 0.25 m (half a y voxel) from y = 0 at x ≥ 4: clear of the
# trilinear blend between the halves. (40° hFOV: f = 4 / tan 20° = 10.99 px; column centre u = 2.5 is at
# |u − 4| / f · 4 m = 0.55 m.)
LEFT, RIGHT = slice(0, 3), slice(5, 8)


@pytest.mark.parametrize("impl", IMPLS)
def test_depth_is_inf_exactly_where_alpha_stays_below_the_hit_threshold(impl):
    cams = Cameras.from_fov(40.0, 8, 6, looking_along_x())
    n = 400
    # Half-empty box: rays through the empty half get alpha 0 and depth inf; rays meeting the slab its planar
    # depth 4 m (surface within half an x voxel of trilinear ramp before it, one sample spacing after).
    out = render_field(half_box_field(0.0, 2000.0), cams, n_samples=n, implementation=impl)
    assert torch.all(out.alpha[:, LEFT] == 0) and torch.isinf(out.depth[:, LEFT]).all()
    assert torch.all(out.alpha[:, RIGHT] > 0.999)
    assert torch.all(out.depth[:, RIGHT] >= 3.95) and torch.all(out.depth[:, RIGHT] <= 4.0 + 4.0 / n)
    # Faint fog in the left half: σ = 0.05 /m over the ~4 m of box gives alpha = 1 − e^{−0.2/z_per_t} ≈ 0.18-0.2,
    # well above the old 1e-4 but below HIT_ALPHA: still no hit (the sky must not read as a wall 5-15 m away).
    fog = render_field(half_box_field(0.05, 2000.0), cams, n_samples=n, implementation=impl)
    expect = 1.0 - torch.exp(-0.05 * 4.0 / cams.rays().z_per_t)
    torch.testing.assert_close(fog.alpha[:, LEFT], expect[:, LEFT], atol=1e-3, rtol=0)
    assert fog.alpha[:, LEFT].max() < HIT_ALPHA and torch.isinf(fog.depth[:, LEFT]).all()
    # Denser fog (σ = 0.5 /m: alpha ≈ 0.86 > HIT_ALPHA) is a hit, at its normalised expected depth: for a uniform
    # medium from x = 2 to 6 that is 2 + E[s | s < 4] with s ~ Exp(σ/z_per_t)-distributed planar distance; on axis
    # (z_per_t ≈ 1) 2 + 1/0.5 − 4 e^{−2}/(1 − e^{−2}) = 3.374 m.
    thick = render_field(half_box_field(0.5, 2000.0), cams, n_samples=n, implementation=impl)
    assert torch.all(thick.alpha[:, LEFT] > HIT_ALPHA) and torch.isfinite(thick.depth[:, LEFT]).all()
    zpt = cams.rays().z_per_t[:, LEFT]
    lam = 0.5 / zpt                                                   # per metre of planar depth
    mean = 2.0 + 1.0 / lam - 4.0 * torch.exp(-4.0 * lam) / (1.0 - torch.exp(-4.0 * lam))
    torch.testing.assert_close(thick.depth[:, LEFT], mean, atol=5e-3, rtol=0)
    # The contract, over a field whose alphas span the threshold: finite depth <=> alpha >= HIT_ALPHA.
    ramp = random_field(seed=3)
    ramp.density.mul_(0.3)
    out = render_field(ramp, cameras_around(4, width=12, height=10), n_samples=24, implementation=impl)
    hit = out.alpha >= HIT_ALPHA
    assert hit.any() and (~hit).any()
    assert torch.equal(torch.isfinite(out.depth), hit)


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_field_and_missed_box(impl):
    # Empty field: alpha 0, features 0, depth = no_hit_depth (inf by default, finite on request).
    field = VoxelField.empty((3, 4, 5), 2, torch.tensor([[0.0, 0, 0], [1.0, 1, 1]]))
    cams = cameras_around(2, dtype=torch.float32)
    out = render_field(field, cams, n_samples=8, implementation=impl)
    assert torch.all(out.alpha == 0) and torch.all(out.features == 0) and torch.all(torch.isinf(out.depth))
    out = render_field(field, cams, n_samples=8, implementation=impl, no_hit_depth=50.0)
    assert torch.all(out.depth == 50.0)
    # A dense field seen by a camera outside the box looking away from it: nothing.
    full = slab_field(slice(None), 5.0)
    away = Cameras.from_fov(60.0, 4, 4, looking_along_x(eye=(1.0, 0.0, 0.0)) @ torch.diag(torch.tensor([-1.0, 1, -1, 1], dtype=F64)))
    out = render_field(full, away, n_samples=8, implementation=impl)
    assert torch.all(out.alpha == 0) and torch.all(out.features == 0) and torch.all(torch.isinf(out.depth))
    # ... and the same camera turned round sees it.
    out = render_field(full, Cameras.from_fov(60.0, 4, 4, looking_along_x(eye=(1.0, 0.0, 0.0))), n_samples=8, implementation=impl)
    assert torch.all(out.alpha > 0.99)


def test_near_far_clip_in_planar_depth():
    # Density fills x ∈ [2, 4]; with near = 2.5, far = 3.0 (planar) every pixel integrates exactly 0.5 m of planar
    # depth, i.e. 0.5 / z_per_t of ray: alpha = 1 − e^{−σ 0.5 / z_per_t} (σ = 2: 0.63 on axis, above HIT_ALPHA).
    field = slab_field(slice(None), 2.0)
    cams = Cameras.from_fov(50.0, 5, 5, looking_along_x())
    out = render_field(field, cams, n_samples=16, near=2.5, far=3.0)
    torch.testing.assert_close(out.alpha, 1.0 - torch.exp(-1.0 / cams.rays().z_per_t), atol=1e-12, rtol=0)
    assert torch.all(out.depth > 2.5) and torch.all(out.depth < 3.0)
    with pytest.raises(ValueError, match="far"):
        render_field(field, cams, near=3.0, far=2.0)


def test_clip_rays_to_box_cases():
    o = torch.tensor([[-1.0, 0.5, 0.5], [0.5, 0.5, 0.5], [-1.0, 2.0, 0.5], [-1.0, 0.5, 0.5], [0.0, 0.5, 0.5]])
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    t0, t1, hit = clip_rays_to_box(o, d, torch.zeros(3), torch.ones(3))
    # outside → through: [1, 2]; inside going up: [0, 0.5]; parallel outside the y slab: miss; pointing away: miss;
    # starting on the min face: [0, 1]
    assert hit.tolist() == [True, True, False, False, True]
    assert torch.allclose(t0, torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0])) and torch.allclose(t1, torch.tensor([2.0, 0.5, 0.0, 0.0, 1.0]))


# ------------------------------------------------------------------------------------------------ batching
@pytest.mark.parametrize("impl", IMPLS)
def test_batched_field_equals_per_item(impl):
    field = random_field(batch=2, seed=1)
    cams = cameras_around(6, seed=2).reshape(2, 3)
    out = render_field(field, cams, n_samples=12, implementation=impl)
    assert out.features.shape == (2, 3, 2, 5, 6) and out.depth.shape == (2, 3, 5, 6)
    for b in range(2):
        one = render_field(field[b], cams[b], n_samples=12, implementation=impl)
        assert_same(RenderOutput(out.features[b], out.depth[b], out.alpha[b]), one, atol=1e-12)
    with pytest.raises(ValueError, match="batch shape"):
        render_field(field, cameras_around(3), implementation=impl)


def test_camera_batch_shapes():
    field = random_field()
    cams = cameras_around(6, seed=3)
    flat = render_field(field, cams, n_samples=8)
    grid = render_field(field, cams.reshape(2, 3), n_samples=8)
    single = render_field(field, cams[4], n_samples=8)
    assert grid.features.shape == (2, 3, 2, 5, 6) and single.features.shape == (2, 5, 6) and single.depth.shape == (5, 6)
    torch.testing.assert_close(grid.features.reshape(6, 2, 5, 6), flat.features)
    torch.testing.assert_close(single.features, flat.features[4])


# ------------------------------------------------------------------------------------------------ fast paths vs reference
CASES = [  # (field batch, camera batch shape, cameras inside the box)
    (None, (4,), False), (None, (2, 2), True), (None, (), False), (2, (2, 3), False), (2, (2, 1), True)]


@pytest.mark.parametrize("batch,cam_shape,inside", CASES)
@pytest.mark.parametrize("dtype,atol", [(F64, 1e-11), (torch.float32, 2e-5)])
def test_fast_paths_match_reference_forward(batch, cam_shape, inside, dtype, atol):
    field = random_field(batch=batch, seed=4, dtype=dtype)
    n = math.prod(cam_shape) if cam_shape else 1
    cams = cameras_around(n, seed=5, inside=inside, dtype=dtype).reshape(*cam_shape) if cam_shape else cameras_around(1, seed=5, dtype=dtype)[0]
    ref = render_field_reference(field, cams, n_samples=24)
    for impl in ("dense", "sparse"):
        for chunk in (None, 7):  # chunks that do not divide the ray count
            assert_same(render_field(field, cams, n_samples=24, implementation=impl, chunk_rays=chunk), ref, atol)


def test_sparse_matches_on_a_mostly_empty_scene(monkeypatch):
    # Where most samples have zero weight (air, occluded space) the sparse path skips them; still the same image.
    field = driving_like_field((8, 32, 32), 4, seed=1)
    cams = ring_cameras(3, 24)
    ref = render_field_reference(field, cams, n_samples=48)
    assert_same(render_field(field, cams, n_samples=48, implementation="sparse", chunk_rays=500), ref, 3e-5)
    # A tiny memory budget: small ray chunks AND kept samples split into groups (here ~1000 of ~10^4 kept).
    monkeypatch.setattr(torch_paths, "CHUNK_BYTES", {"cpu": 2**19, "cuda": 2**19})
    assert_same(render_field(field, cams, n_samples=48, implementation="sparse"), ref, 3e-5)
    assert_same(render_naive_loop(field, cams, n_samples=48), ref, 3e-5)
    # skip_weight > 0 drops a little weight mass: bounded error, not equality.
    approx = render_field(field, cams, n_samples=48, implementation="sparse", skip_weight=1e-3)
    err = (approx.features - ref.features).abs().max() / ref.features.abs().max()
    assert 0 < err < 0.05


@pytest.mark.parametrize("batch,cam_shape,inside", CASES[:2] + CASES[3:4])
def test_fast_paths_match_reference_backward(batch, cam_shape, inside):
    field = random_field(batch=batch, seed=6)
    cams = cameras_around(math.prod(cam_shape), seed=7, inside=inside).reshape(*cam_shape)

    def grads(impl, with_density=True):
        f = field.detach()
        f.features.requires_grad_(True)
        f.density.requires_grad_(with_density)
        out = render_field(f, cams, n_samples=16, implementation=impl, chunk_rays=9)
        gen = torch.Generator().manual_seed(8)  # the same random cotangents for every implementation
        wf, wd, wa = (torch.randn(t.shape, generator=gen, dtype=F64) for t in (out.features, out.depth, out.alpha))
        fin = torch.isfinite(out.depth)
        loss = (wf * out.features).sum() + (wd * out.depth)[fin].sum() + (wa * out.alpha).sum()
        loss.backward()
        return f.density.grad, f.features.grad

    d_ref, f_ref = grads("reference")
    d_dense, f_dense = grads("dense")
    torch.testing.assert_close(d_dense, d_ref, atol=1e-10, rtol=1e-9)
    torch.testing.assert_close(f_dense, f_ref, atol=1e-10, rtol=1e-9)
    # the sparse path is differentiable w.r.t. features (density frozen) and gives the same feature gradient
    _, f_sparse = grads("sparse", with_density=False)
    _, f_ref2 = grads("reference", with_density=False)
    torch.testing.assert_close(f_sparse, f_ref2, atol=1e-10, rtol=1e-9)


def test_auto_picks_dense_for_density_grad_and_sparse_refuses_it():
    field = random_field().requires_grad_()
    cams = cameras_around(1)
    out = render_field(field, cams, n_samples=8)                    # auto -> dense: gradient reaches density
    out.features.sum().backward()
    assert field.density.grad is not None and field.density.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="dense"):
        render_field(field, cams, n_samples=8, implementation="sparse")
    with torch.no_grad():                                           # no grad needed: sparse is allowed
        render_field(field, cams, n_samples=8, implementation="sparse")
    with pytest.raises(ValueError, match="implementation"):
        render_field(field, cams, implementation="fused")


# ------------------------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("impl", ["reference", "dense"])
def test_gradcheck_density_and_features(impl):
    # Tiny 3×4×5 field, C = 2, double precision: analytic vs finite-difference Jacobians of features, alpha and
    # depth w.r.t. every voxel, seen from inside and outside the box.
    base = random_field(shape=(3, 4, 5), C=2, seed=9)
    cams = Cameras.stack([cameras_around(1, seed=10, width=3, height=2)[0],
                          cameras_around(1, seed=11, width=3, height=2, inside=True)[0]])

    def fn(density, features):  # a finite no_hit_depth: the outside camera's bottom row misses the box
        out = render_field(VoxelField(density, features, base.bounds), cams, n_samples=6, implementation=impl,
                           no_hit_depth=100.0)
        return out.features, out.alpha, out.depth

    depth = fn(base.density, base.features)[2]
    assert (depth == 100.0).any() and (depth < 100.0).any()
    assert torch.autograd.gradcheck(fn, (base.density.clone().requires_grad_(), base.features.clone().requires_grad_()),
                                    eps=1e-6, atol=1e-6)


def test_sparse_feature_gradcheck():
    base = random_field(shape=(3, 4, 5), C=2, seed=12)
    cams = cameras_around(2, seed=13, width=3, height=2)
    fn = lambda feats: render_field(VoxelField(base.density, feats, base.bounds), cams, n_samples=6,  # noqa: E731
                                    implementation="sparse").features
    assert torch.autograd.gradcheck(fn, (base.features.clone().requires_grad_(),), eps=1e-6, atol=1e-6)


def test_gradients_finite_with_empty_space_and_no_hits():
    # Half the field empty (σ = 0), some pixels miss everything (depth inf): every gradient stays finite.
    field = random_field(seed=14)
    field.density[:, :, :3] = 0.0
    field.requires_grad_()
    cams = Cameras.stack([cameras_around(1, seed=15)[0], Cameras.from_fov(60.0, 6, 5, looking_along_x(eye=(5.0, 0, 0)))])
    out = render_field(field, cams, n_samples=10)
    assert torch.isinf(out.depth[1]).all()
    fin = torch.isfinite(out.depth)
    (out.features.square().sum() + out.depth[fin].sum() + out.alpha.sum()).backward()
    assert torch.isfinite(field.density.grad).all() and torch.isfinite(field.features.grad).all()
    assert field.density.grad[:, :, :3].abs().sum() > 0         # empty voxels still get a density gradient


# ------------------------------------------------------------------------------------------------ stratified sampling
def test_stratified_sampling_is_seeded_and_shared():
    field = random_field(seed=16)
    cams = cameras_around(2, seed=17)
    runs = {impl: render_field(field, cams, n_samples=8, implementation=impl, stratified=True,
                               generator=torch.Generator().manual_seed(3)) for impl in IMPLS}
    for impl in ("dense", "sparse"):
        assert_same(runs[impl], runs["reference"], 1e-11)
    again = render_field(field, cams, n_samples=8, stratified=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again.features, runs["sparse"].features)
    mid = render_field(field, cams, n_samples=8)
    other = render_field(field, cams, n_samples=8, stratified=True, generator=torch.Generator().manual_seed(4))
    assert not torch.allclose(mid.features, runs["sparse"].features) and not torch.allclose(other.features, runs["sparse"].features)


# ------------------------------------------------------------------------------------------------ VoxelField
def test_voxel_field_geometry_and_validation():
    bounds = torch.tensor([[-1.0, 0.0, 2.0], [1.0, 4.0, 3.0]])
    f = VoxelField.empty((2, 4, 8), 3, bounds)
    assert f.grid_shape == (2, 4, 8) and f.num_channels == 3 and not f.is_batched and f.batch_size is None
    assert torch.allclose(f.voxel_size, torch.tensor([0.25, 1.0, 0.5]))     # (x, y, z): 2/8, 4/4, 1/2
    c = f.voxel_centers()                                                    # [Z, Y, X, 3]
    assert torch.allclose(c[0, 0, 0], torch.tensor([-0.875, 0.5, 2.25])) and torch.allclose(c[1, 3, 7], torch.tensor([0.875, 3.5, 2.75]))
    assert f.packed().shape == (4, 2, 4, 8)
    fb = VoxelField.empty((2, 4, 8), 3, bounds, batch_size=5)
    assert fb.is_batched and fb.batch_size == 5 and fb.bounds.shape == (5, 2, 3)
    assert fb[1].density.shape == (2, 4, 8) and fb[1:3].batch_size == 2
    assert VoxelField.stack([f, f]).batch_size == 2
    with pytest.raises(ValueError, match="max must exceed min"):
        VoxelField.empty((2, 2, 2), 1, torch.tensor([[0.0, 0, 0], [1.0, 0, 1]]))
    with pytest.raises(ValueError, match="must match"):
        VoxelField(torch.zeros(2, 3, 4), torch.zeros(1, 2, 3, 5), bounds)
    with pytest.raises(ValueError, match="bounds"):
        VoxelField(torch.zeros(2, 3, 4), torch.zeros(1, 2, 3, 4), torch.zeros(3, 2))


@pytest.mark.parametrize("batch", [None, 3])
def test_voxel_field_save_load_round_trip(tmp_path, batch):
    f = random_field(batch=batch, dtype=torch.float32, seed=18)
    path = f.save(tmp_path / "scene")                                        # suffix added
    assert path.name == "scene.safetensors"
    g = VoxelField.load(path)
    assert torch.equal(g.density, f.density) and torch.equal(g.features, f.features) and torch.equal(g.bounds, f.bounds)
    assert g.batch_size == f.batch_size and g.dtype == torch.float32
    from safetensors import safe_open
    with safe_open(str(path), "pt") as h:
        assert '"format": "nfldm.voxel_field"' in h.metadata()["nfldm"]
    with pytest.raises(FileNotFoundError, match="not found"):
        VoxelField.load(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file
    save_file({"density": f.density.contiguous()}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="VoxelField.save"):
        VoxelField.load(tmp_path / "other.safetensors")


# ------------------------------------------------------------------------------------------------ benchmark smoke
def test_render_bench_smoke():
    r = run_render_bench(size=16, n_samples=16, grid=(8, 32, 32), channels=4, batch=2, rounds=1)
    assert r.fast_images_per_s > 0 and r.naive_images_per_s > 0 and r.max_abs_diff < 1e-4 and r.max_depth_rel_diff < 1e-4
    assert r.dense_images_per_s is None
    assert 0 < r.kept_sample_fraction < 1
    assert "images/s" in format_render_bench(r)
