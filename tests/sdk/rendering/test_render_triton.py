"""The fused Triton renderer (nfldm_sdk.rendering.triton_render) against the PyTorch reference: forward and backward, batch
shapes, cameras inside/outside the box, rays that miss, near/far, stratified samples, grid dtypes, exact
empty-space skipping, the occupancy cache, early ray termination and implementation selection.

Without a GPU the kernels run in Triton's interpreter (conftest sets ``TRITON_INTERPRET=1``; 256-ray programs
there, 32-ray ones where a test says so): tiny sizes. With a GPU the same tests run the compiled kernels on CUDA,
and the GPU-only ones check the issue's sizes."""
import gc
import json
import math
import os
import subprocess
import sys
import weakref

import nfldm_sdk.rendering.api as render_module
import pytest
import torch
from nfldm_sdk.cameras.builders import ring_cameras
from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.fields.synthetic import driving_like_field, soft_noisy_field
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.rendering.api import render_field, render_field_reference
from nfldm_sdk.rendering.rays import prepare_rays
from test_render import cameras_around, looking_along_x, random_field, slab_field

pytest.importorskip("triton", reason="the fused renderer needs the triton package")
import nfldm_sdk.rendering.triton_render as rt
from nfldm_sdk.rendering.triton_kernels import forward_kernel

CUDA = torch.cuda.is_available()
DEV = torch.device("cuda" if CUDA else "cpu")
F32, F64 = torch.float32, torch.float64


def test_kernels_runnable_here():
    # Without a GPU, CPU tensors need the interpreter (conftest sets it before the module is imported).
    assert CUDA or rt.INTERPRETED


def tiny_field(batch=None, seed=0, dtype=F32) -> VoxelField:
    """4×6×5 grid (Z,Y,X), C = 3, dense positive density (test_render's random field)."""
    return random_field(shape=(4, 6, 5), C=3, seed=seed, dtype=dtype, batch=batch).to(device=DEV)


def sparse_field(seed=1) -> VoxelField:
    """Mostly empty: the driving-like scene on an 8×24×24 grid (3 feature channels)."""
    return driving_like_field((8, 24, 24), 3, seed=seed, device=DEV)


def cams_for(shape, inside=False, seed=5, width=7, height=5) -> Cameras:
    """Cameras of batch shape ``shape`` around / inside `tiny_field`'s box (7×5 px: 35 rays, not a block multiple)."""
    n = math.prod(shape) if shape else 1
    cams = cameras_around(n, seed=seed, width=width, height=height, inside=inside, dtype=F32)
    return (cams.reshape(*shape) if shape else cams[0]).to(device=DEV)


def oracle(field: VoxelField, cams: Cameras, n_samples: int, **kw):
    """The reference render, in float64 (stratified: float32, the dtype the jitter is drawn in, so that one seed
    gives the kernel and the reference the same samples)."""
    return render_field_reference(field.to(dtype=F32 if kw.get("stratified") else F64), cams, n_samples, **kw)


def assert_within_early_stop(out, ref):
    """Default early termination (T < 1e-4) drops at most T of weight: alpha within 1e-4, features within
    1e-4·max|f| (+ fp32 rounding), normalised depth within 1e-3 relative on these scenes."""
    bound = rt.EARLY_STOP * 1.01 + 1e-6
    assert (out.alpha.double() - ref.alpha).abs().max() <= bound
    assert (out.features.double() - ref.features).abs().max() <= bound * (1.0 + ref.features.abs().max())
    assert rel_errors(out, ref)["depth"] < 1e-3


def rel_errors(out, ref) -> dict:
    """Relative errors: features and alpha against their largest magnitude, depth per hit pixel."""
    fin = torch.isfinite(ref.depth)
    assert torch.equal(torch.isfinite(out.depth), fin), "hit / no-hit pixels differ"
    err = lambda a, b: ((a.double() - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()
    depth = ((out.depth.double() - ref.depth).abs() / ref.depth)[fin].max().item() if fin.any() else 0.0
    return {"features": err(out.features, ref.features), "alpha": err(out.alpha, ref.alpha), "depth": depth}


# ------------------------------------------------------------------------------------------------ forward
CASES = [  # (field batch, camera batch shape, cameras inside the box)
    (None, (2,), False), (None, (), True), (2, (2, 1), False), (2, (2, 2), True)]


@pytest.mark.parametrize("batch,cam_shape,inside", CASES)
def test_forward_matches_reference_fp32_grid(batch, cam_shape, inside):
    field = tiny_field(batch=batch, seed=4)
    cams = cams_for(cam_shape, inside=inside)
    out = render_field(field, cams, 12, implementation="triton", grid_dtype=F32)
    ref = oracle(field, cams, 12)
    assert out.features.shape == ref.features.shape and out.depth.shape == ref.depth.shape
    assert out.features.dtype == F32
    torch.testing.assert_close(out.features.double(), ref.features, atol=2e-5, rtol=0)
    torch.testing.assert_close(out.alpha.double(), ref.alpha, atol=2e-5, rtol=0)
    fin = torch.isfinite(ref.depth)
    torch.testing.assert_close(out.depth.double()[fin], ref.depth[fin], atol=2e-4, rtol=0)


def test_forward_half_grids_within_2e3():
    # The product's storage: features float16 (default) or bfloat16 (8 bits of mantissa: ~4e-3 per value, so
    # only the looser bound), density float32, fp32 accumulation.
    field = tiny_field(seed=6)
    cams = cams_for((2,), seed=7)
    ref = oracle(field, cams, 16)
    e16 = rel_errors(render_field(field, cams, 16, implementation="triton"), ref)
    assert max(e16.values()) <= 2e-3, e16
    assert e16["features"] > 1e-6                      # the fp16 grid really is in use (fp32 gives ~1e-7)
    ebf = rel_errors(render_field(field, cams, 16, implementation="triton", grid_dtype=torch.bfloat16), ref)
    assert ebf["features"] <= 8e-3 and ebf["alpha"] <= 1e-5, ebf          # density stays float32: alpha exact


def test_every_output_written_and_missed_rays_are_empty():
    # Outputs pre-filled with NaN: the kernel must write every element, also rays that miss the box (35 rays per
    # camera: the last block is partial).
    field = tiny_field(seed=8)
    away = looking_along_x(eye=(5.0, 0.0, 0.25), dtype=F32)             # the box (x ≤ 2) is behind it
    cams = Cameras.stack([cams_for((1,), seed=9)[0].to(device="cpu"),
                          Cameras.from_fov(60.0, 7, 5, away)]).to(device=DEV)
    b = prepare_rays(field, cams, 10, 0.0, None, False, None)
    grid = rt.kernel_grid(b.density, b.features, F32, True, rt.OCCUPANCY_CELL)
    rays = rt.KernelRays.from_batch(b)
    launch, args, meta, outs = rt.forward_launch(grid, rays, rt.KernelOptions(10, rt.EARLY_STOP, True, 32))
    for o in outs:
        o.fill_(math.nan)
    forward_kernel[launch](*args, **meta)
    assert all(torch.isfinite(o).all() for o in outs)
    feats, depth_num, alpha = outs
    miss = b.delta[0] == 0
    assert miss[35:].all() and not miss[:35].all()                       # the second camera sees nothing
    assert (alpha[0, miss] == 0).all() and (depth_num[0, miss] == 0).all() and (feats[0][:, miss] == 0).all()
    out = render_field(field, cams, 10, implementation="triton", no_hit_depth=50.0)
    assert (out.depth[1] == 50.0).all() and (out.alpha[1] == 0).all()


def test_near_far_and_stratified_match_reference():
    field = tiny_field(seed=10)
    cams = cams_for((2,), seed=11)
    ref = oracle(field, cams, 10, near=3.2, far=4.6)
    out = render_field(field, cams, 10, near=3.2, far=4.6, implementation="triton", grid_dtype=F32)
    assert max(rel_errors(out, ref).values()) < 2e-5
    # Stratified: the same generator draws the same jitter [B, R, S] for both.
    ref = oracle(field, cams, 10, stratified=True, generator=torch.Generator(device=DEV).manual_seed(3))
    out = render_field(field, cams, 10, implementation="triton", grid_dtype=F32, stratified=True,
                       generator=torch.Generator(device=DEV).manual_seed(3))
    assert max(rel_errors(out, ref).values()) < 2e-5


# ------------------------------------------------------------------------------------------------ skipping
def test_occupancy_grid_known_cells():
    # One nonzero voxel at (z, y, x) = (4, 1, 9) of a 6×8×12 grid, cells of 4: NC = (N − 2) // 4 + 1 = (2, 2, 3).
    # Cell c reads voxels cK … cK + 4 per axis: z = 4 is read by z-cells 0 ([0,4]) and 1 ([4,5]); y = 1 by cell 0
    # only; x = 9 by cell 2 ([8,11]) only.
    d = torch.zeros(1, 6, 8, 12)
    d[0, 4, 1, 9] = -0.5                          # nonzero counts, whatever the sign
    occ = rt.occupancy_grid(d, 4)
    assert occ.shape == (1, 2, 2, 3) and occ.dtype == torch.uint8
    expect = torch.zeros(1, 2, 2, 3, dtype=torch.uint8)
    expect[0, :, 0, 2] = 1
    assert torch.equal(occ, expect)
    # 1-voxel and 2-voxel axes: one cell each
    assert rt.occupancy_grid(torch.ones(2, 1, 2, 5), 4).shape == (2, 1, 1, 1)
    assert rt.occupancy_grid(torch.zeros(1, 3, 3, 3), 4).sum() == 0


@pytest.mark.parametrize("stratified", [False, True])
def test_skipping_is_exact_on_a_sparse_scene(stratified):
    # Same bits with and without skipping (skipped samples have σ = 0 exactly: T·e^0 = T, w = 0), from cameras
    # inside the scene and outside the box, and the same image as the reference.
    field = sparse_field()
    inside = ring_cameras(2, 10, device=DEV)
    outside = Cameras.from_fov(70.0, 10, 10, looking_along_x(eye=(-40.0, 3.0, 6.0), dtype=F32)[None]).to(device=DEV)
    for cams in (inside, outside):
        kw = lambda: {"stratified": stratified, "generator": torch.Generator(device=DEV).manual_seed(1)}
        skip = rt.render_field_triton(field, cams, 32, grid_dtype=F32, **kw())
        full = rt.render_field_triton(field, cams, 32, grid_dtype=F32, skip_empty=False, **kw())
        for name in ("features", "depth", "alpha"):
            assert torch.equal(getattr(skip, name), getattr(full, name)), name
        assert skip.alpha.max() > 0.9 and (skip.alpha == 0).any()     # both surfaces and air in view
        assert_within_early_stop(skip, oracle(field, cams, 32, **kw()))


def test_skipping_really_consults_the_occupancy_grid(monkeypatch):
    # An all-empty occupancy grid makes the kernel skip everything: nothing is rendered. (So the exactness test
    # above compares two different code paths.)
    field = tiny_field(seed=12)
    cams = cams_for((1,), seed=13)
    real = rt.occupancy_grid
    monkeypatch.setattr(rt, "occupancy_grid", lambda d, cell=4: torch.zeros_like(real(d, cell)))
    rt.clear_cache()
    out = rt.render_field_triton(field, cams, 8)
    assert (out.alpha == 0).all() and (out.features == 0).all()
    assert rt.render_field_triton(field, cams, 8, skip_empty=False).alpha.max() > 0.5
    rt.clear_cache()


def test_occupancy_cache_follows_in_place_updates():
    # The occupancy grid (and the kernel-layout copies) are cached per tensor and rebuilt when its version
    # changes: a blob written into empty space after a first render must appear in the second.
    field = sparse_field(seed=2)
    cams = ring_cameras(1, 10, device=DEV)
    rt.clear_cache()
    builds = rt._CACHE.builds
    before = rt.render_field_triton(field, cams, 24)
    assert rt._CACHE.builds == builds + 2                 # float16 features, occupancy (float32 density: a view)
    rt.render_field_triton(field, cams, 24)
    assert rt._CACHE.builds == builds + 2                 # unchanged field: all cached
    with torch.no_grad():
        field.density[2:5, 10:14, 16:20] = 8.0            # in front of camera 0 (looking along +x), in the air
    after = rt.render_field_triton(field, cams, 24)
    assert rt._CACHE.builds == builds + 3                 # occupancy rebuilt, features kept
    assert (after.alpha - before.alpha).abs().max() > 0.5  # the blob is in view ...
    ref = oracle(field, cams, 24)                         # ... and rendered as the reference renders it
    assert (after.alpha.double() - ref.alpha).abs().max() <= 1.01 * rt.EARLY_STOP
    assert max(rel_errors(after, ref).values()) < 2e-3


def test_cache_does_not_keep_fields_alive():
    field = tiny_field(seed=21)
    alive = weakref.ref(field.density)
    rt.render_field_triton(field, cams_for((1,), seed=22), 6)
    del field
    gc.collect()
    assert alive() is None


def test_optimizer_step_invalidates_the_cache():
    # An SDS-like loop: render with density grad through the kernel, optimizer step, render again — the second
    # render sees the updated density (Adam bumps the parameter's version).
    field = sparse_field(seed=3)
    density = field.density.clone().requires_grad_()
    cams = ring_cameras(1, 8, device=DEV)
    opt = torch.optim.Adam([density], lr=0.5)
    out = rt.render_field_triton(VoxelField(density, field.features, field.bounds), cams, 16)
    (out.features.square().sum() - out.alpha.sum()).backward()
    opt.step()
    assert (density.detach() != field.density).any()
    new = VoxelField(density.detach(), field.features, field.bounds)
    again = rt.render_field_triton(VoxelField(density, field.features, field.bounds), cams, 16)
    assert max(rel_errors(again, oracle(new, cams, 16)).values()) < 2e-3


# ------------------------------------------------------------------------------------------------ backward
def grads(field: VoxelField, cams: Cameras, n_samples: int, impl: str, density_grad=True, feature_grad=True,
          dtype=F32, **kw):
    """Density and feature gradients of a random linear loss on features, depth (hit pixels) and alpha.

    Pixels count as hits from alpha 1e-2: the normalised depth of a fainter pixel (a ray grazing the box) is
    ill-conditioned in float32 (its gradient differences nearly equal sample depths; the PyTorch float32 paths
    are off by ~1e-4 there too)."""
    f = VoxelField(field.density.to(dtype).clone().requires_grad_(density_grad),
                   field.features.to(dtype).clone().requires_grad_(feature_grad), field.bounds.to(dtype))
    out = render_field(f, cams, n_samples, implementation=impl, min_hit_alpha=1e-2, **kw)
    g = torch.Generator().manual_seed(8)  # the same cotangents for every implementation
    wf, wd, wa = (torch.randn(t.shape, generator=g, dtype=F64).to(device=DEV, dtype=dtype)
                  for t in (out.features, out.depth, out.alpha))
    fin = torch.isfinite(out.depth)
    ((wf * out.features).sum() + (wd * out.depth)[fin].sum() + (wa * out.alpha).sum()).backward()
    return f.density.grad, f.features.grad


def assert_grad_close(a, b, rel):
    assert (a is None) == (b is None)
    if a is not None:
        err = ((a.double() - b).abs().max() / b.abs().max()).item()
        assert err < rel, err


@pytest.mark.parametrize("batch,cam_shape,inside", [CASES[0], CASES[3]])
def test_backward_matches_reference(batch, cam_shape, inside):
    field = tiny_field(batch=batch, seed=14)
    field.density[..., :2] = 0.0                           # empty voxels still get density gradients
    cams = cams_for(cam_shape, inside=inside, seed=15)
    d_ref, f_ref = grads(field, cams, 12, "reference", dtype=F64)
    d_tri, f_tri = grads(field, cams, 12, "triton", grid_dtype=F32)
    assert d_tri.shape == field.density.shape and f_tri.shape == field.features.shape and d_tri.dtype == F32
    assert_grad_close(d_tri, d_ref, 1e-4)
    assert_grad_close(f_tri, f_ref, 1e-4)
    assert d_tri[..., :2].abs().sum() > 0


def test_backward_one_input_at_a_time_and_with_skipping():
    # Density frozen: the backward skips empty cells (only w > 0 samples carry feature gradients). Features
    # frozen: density gradient alone. Sparse scene, so skipping matters; fp16 grid for the features-only case.
    field = sparse_field(seed=4)
    cams = ring_cameras(1, 8, device=DEV)
    _, f_ref = grads(field, cams, 24, "reference", density_grad=False, dtype=F64)
    d_none, f_tri = grads(field, cams, 24, "triton", density_grad=False)
    assert d_none is None
    assert_grad_close(f_tri, f_ref, 1e-4)                  # feature gradients do not depend on feature values
    d_ref, _ = grads(field, cams, 24, "reference", feature_grad=False, dtype=F64)
    d_tri, f_none = grads(field, cams, 24, "triton", feature_grad=False, grid_dtype=F32)
    assert f_none is None
    assert_grad_close(d_tri, d_ref, 1e-4)
    d_16, _ = grads(field, cams, 24, "triton", feature_grad=False)            # float16 feature grid
    assert_grad_close(d_16, d_ref, 3e-3)


def test_backward_stratified_matches_reference():
    field = tiny_field(seed=16)
    cams = cams_for((1,), seed=17)
    kw = lambda: {"stratified": True, "generator": torch.Generator(device=DEV).manual_seed(5)}
    d_ref, f_ref = grads(field, cams, 10, "reference", dtype=F32, **kw())    # float32: the same jitter draw
    d_tri, f_tri = grads(field, cams, 10, "triton", grid_dtype=F32, **kw())
    assert_grad_close(d_tri, d_ref, 1e-4)
    assert_grad_close(f_tri, f_ref, 1e-4)


# ------------------------------------------------------------------------------------------------ early termination
def test_early_termination_on_an_opaque_wall():
    # Slab x-layers 4..5 (x ∈ [2.4, 2.6], 0.2 m) of σ = 50/m: optical depth 10 on axis, T behind it e^{−10} =
    # 4.5e-5 < 1e-4, so rays stop inside the wall. Behind it (layers 10..) a slab with features 1000×: what the
    # stopped rays drop is T·(its contribution) ≤ 4.5e-5·1000·|f| = 0.045·|f|, nonzero — termination happened —
    # and within the bound.
    field = slab_field(slice(4, 6), 50.0, dtype=F32)
    field.density[:, :, 10:] = 5.0
    field.features[:, :, :, 10:] *= 1000.0
    field = field.to(device=DEV)
    cams = Cameras.from_fov(10.0, 3, 3, looking_along_x(dtype=F32)).to(device=DEV)
    full = rt.render_field_triton(field, cams, 60, grid_dtype=F32, early_stop=0.0)
    ref = oracle(field, cams, 60)
    assert max(rel_errors(full, ref).values()) < 2e-5     # no termination: the reference
    stop = rt.render_field_triton(field, cams, 60, grid_dtype=F32)
    T_wall = 1.0 - stop.alpha                                # transmittance where each ray stopped
    assert (T_wall < rt.EARLY_STOP).all() and (T_wall > 1e-5).all()
    drop = (full.features - stop.features).abs().amax(0)    # [H, W]
    assert (drop > 0).all() and (drop <= T_wall * 1000.0 * 2.0 * 1.01).all()
    # Backward through the stopped render: gradients of the truncated sum (nothing behind the stop).
    _, f_tri = grads(field, cams, 60, "triton", grid_dtype=F32)
    assert f_tri.abs().max() > 0 and (f_tri[:, :, :, 8:] == 0).all()


# ------------------------------------------------------------------------------------------------ selection
def test_auto_selection_and_errors(monkeypatch):
    field = tiny_field(seed=18).to(device="cpu")
    cams = cams_for((1,), seed=19).to(device="cpu")
    assert not render_module.triton_preferred(field, cams)                # CPU: never, even with the interpreter
    monkeypatch.setattr(rt, "render_field_triton", lambda *a, **k: pytest.fail("auto chose triton on CPU"))
    render_field(field, cams, 6)
    monkeypatch.undo()
    # Without the interpreter, CPU tensors are a clear error naming the fix.
    monkeypatch.setattr(rt, "INTERPRETED", False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        render_field(field, cams, 6, implementation="triton")
    monkeypatch.undo()
    # Without triton installed: a clear error too.
    monkeypatch.setitem(sys.modules, "nfldm_sdk.rendering.triton_render", None)
    with pytest.raises(ValueError, match="pip install triton"):
        render_field(field, cams, 6, implementation="triton")
    monkeypatch.undo()
    # No gradient to cameras: refused (auto falls back to dense). Bad options: named.
    field, cams = field.to(device=DEV), cams.to(device=DEV)
    gcams = Cameras(cams.K.clone().requires_grad_(), cams.cam_to_world, cams.width, cams.height)
    assert not render_module.triton_preferred(field, gcams)
    with pytest.raises(ValueError, match="dense"):
        render_field(field, gcams, 6, implementation="triton")
    with pytest.raises(ValueError, match="early_stop"):
        rt.render_field_triton(field, cams, 6, early_stop=1.5)
    with pytest.raises(ValueError, match="grid_dtype"):
        rt.render_field_triton(field, cams, 6, grid_dtype=torch.int8)


@pytest.mark.skipif(not CUDA, reason="auto picks the kernel on CUDA only")
def test_auto_picks_triton_on_cuda(monkeypatch):
    field = tiny_field(seed=20)
    calls = []
    real = rt.render_field_triton
    monkeypatch.setattr(rt, "render_field_triton", lambda *a, **k: calls.append(1) or real(*a, **k))
    render_field(field, cams_for((1,)), 8)
    render_field(field.requires_grad_(), cams_for((1,)), 8).features.sum().backward()
    assert len(calls) == 2 and field.density.grad is not None
    assert not render_module.triton_preferred(field.to(dtype=F64), cams_for((1,)))


def test_kernels_compile_for_h100_without_a_gpu():
    # The interpreter does not run Triton's compiler; this does (sm_90, the issue's sizes), in a process with
    # compiled kernels. No spills: registers per thread stay in the budget.
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    code = ("import json; from nfldm_sdk.benchmarks.triton_report import compile_report; "
            "print(json.dumps(compile_report(90)))")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(report) == 7 and {x["kernel"] for x in report} == {"forward_kernel", "backward_kernel"}
    for x in report:
        assert x["registers"] is not None and x["registers"] <= 255 and x["spill_bytes"] == 0, x


def test_triton_bench_runs_under_the_interpreter():
    # The GPU bench's code path at toy sizes (figures meaningless here): every field filled, skipping exact, errors
    # within the float16 bound.
    from nfldm_sdk.benchmarks.render import format_triton_bench, run_triton_bench

    r = run_triton_bench(size=8, n_samples=8, grid=(4, 8, 8), channels=3, batch=2, backward_batch=1, rounds=1,
                         device=str(DEV))
    assert [(t.scene, t.skip) for t in r.forward] == [("sparse", True), ("sparse", False), ("soft", True), ("soft", False)]
    assert all(t.images_per_s > 0 and t.samples_per_s == t.images_per_s * 64 * 8 for t in r.forward)
    assert r.skip_exact == {"sparse": True, "soft": True}
    assert all(max(e.values()) < 2e-3 for e in r.rel_error.values()), r.rel_error
    assert r.backward_speedup > 0 and r.dram_gb_per_s > 0 and r.l2_gb_per_s > 0
    assert "G samples/s" in format_triton_bench(r)


# ------------------------------------------------------------------------------------------------ GPU, issue sizes
@pytest.mark.skipif(not CUDA, reason="needs a GPU (the issue's sizes)")
@pytest.mark.parametrize("scene", ["sparse", "soft"])
def test_cuda_issue_size_forward_error(scene):
    # 256×256, 128 samples, 128×128×32 grid with 1+32 channels; float16 features vs the float32 reference.
    field = (driving_like_field(device="cuda") if scene == "sparse" else soft_noisy_field(device="cuda"))
    cams = ring_cameras(2, 256, device="cuda")
    ref = render_field_reference(field, cams, 128)
    out = render_field(field, cams, 128)                     # auto -> triton
    errs = rel_errors(out, ref)
    assert max(errs.values()) <= 2e-3, errs
    noskip = rt.render_field_triton(field, cams, 128, skip_empty=False)
    assert torch.equal(noskip.features, out.features) and torch.equal(noskip.alpha, out.alpha)


@pytest.mark.skipif(not CUDA, reason="needs a GPU")
def test_cuda_backward_vs_dense_at_scale():
    field = driving_like_field((32, 64, 64), 32, device="cuda")
    cams = ring_cameras(2, 64, device="cuda")
    d_ref, f_ref = grads(field, cams, 64, "dense")
    d_tri, f_tri = grads(field, cams, 64, "triton", grid_dtype=F32)
    assert_grad_close(d_tri, d_ref.double(), 1e-3)
    assert_grad_close(f_tri, f_ref.double(), 1e-3)
