"""The compiled shading kernels (`shade_kernel`) against their numpy reference (`shading`) on real renders.

Both paths shade the same hits of one tick (`shade_bench.tick_hits`: the renderer's own `hits` and `shadows`);
the kernels follow numpy's float32/float64 choices term by term, so the images agree to the byte except where a
transcendental function rounds differently (numpy's SIMD `exp` vs libm's `expf`, at most 1 ulp of the fog term).
One ulp of a linear value moves it by at most one bin of the tone table, and adjacent bins of `TONE_LUT` differ by
at most one level (asserted below), so such a pixel is off by 1 level; 3 levels leaves room for an ulp in each
of the few terms of a pixel (fog, reflection, emission) that all land on bin edges, which should never happen.
"""
import dataclasses
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from sim_bridge import semantics as sem
from sim_bridge.backends.base import EpisodeSpec
from sim_bridge.backends.procedural import ProceduralBackend
from sim_bridge.backends.procedural import compiled_shading as K
from sim_bridge.backends.procedural import materials as M
from sim_bridge.backends.procedural import shade_bench as PB
from sim_bridge.backends.procedural.render import Renderer
from sim_bridge.backends.procedural.shading_tables import TONE_LUT
from sim_bridge.rig import Rig

SIZE = 64

# (town, weather, what the case must exercise)
CASES = [
    ("Town10HD", "ClearNoon", "day"),
    ("Town03", "HardRainNoon", "wet"),
    ("Town01", "ClearSunset", "sunset"),
    ("Town03", "ClearNight", "night"),
    ("Town10HD", "HardRainNight", "night"),
    ("Town01", "DustStorm", "dust"),
]


def _tick(town: str, weather: str) -> list[PB.TickHits]:
    """The camera groups of one tick (the 6-camera capture rig at SIZE×SIZE), ready to shade."""
    with ProceduralBackend(town, weather, Rig.resolve("capture", SIZE, SIZE), seed=0) as b:
        b.start_episode(EpisodeSpec(0, 11))
        b.renderer.shader = "numpy"  # the captured hits and the frame come from the numpy reference path
        return PB.tick_hits(b)


def _run(groups: list[PB.TickHits], path, **replace) -> SimpleNamespace:
    """`path` (reference_srgb8 or kernel_srgb8) on every group (TickHits fields overridden by `replace`), results
    concatenated over the groups: rgb `[P,3]`, semantic `[P]`, spec `[R]`, emis `[3,R]`, the hits after detail."""
    outs = [path(dataclasses.replace(t, **replace)) for t in groups]
    hs = [o[1] for o in outs]
    return SimpleNamespace(
        rgb=np.concatenate([o[0] for o in outs]), spec=np.concatenate([o[2] for o in outs]),
        semantic=np.concatenate([o[4] for o in outs]),
        emis=np.concatenate([o[3] for o in outs], axis=1), albedo=np.concatenate([h.albedo for h in hs], axis=1),
        **{k: np.concatenate([getattr(h, k) for h in hs]) for k in ("tag", "material", "x", "y", "z", "nx", "ny", "nz")})


@pytest.fixture(scope="module", params=CASES, ids=[f"{t}-{w}" for t, w, _ in CASES])
def case(request):
    town, weather, kind = request.param
    groups = _tick(town, weather)
    return kind, groups, _run(groups, PB.reference_srgb8), _run(groups, PB.kernel_srgb8)


def test_tone_table_steps_by_at_most_one_level():
    # The premise of the image tolerance: one bin more or less changes a channel by at most one level.
    assert np.abs(np.diff(TONE_LUT.astype(int))).max() == 1


def _assert_images_close(a: np.ndarray, b: np.ndarray) -> None:
    """uint8 `[P,3]` images: within 1 level on ≥ 99.5% of the pixels, within 3 on all but 1 in 10,000, and
    identical on ≥ 99% (what the kernels achieve; see the module docstring)."""
    d = np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=1)  # per pixel, worst channel
    assert (d <= 1).mean() >= 0.995, f"{(d > 1).mean():.4%} of pixels differ by more than 1 level"
    assert (d > 3).sum() <= max(1, len(d) // 10_000), f"{(d > 3).sum()} pixels differ by more than 3 levels"
    assert (d == 0).mean() >= 0.99, f"only {(d == 0).mean():.4%} of pixels are identical"


def test_capture_reproduces_the_render(case):
    # The harness feeds both paths what the renderer had: the reference re-shades the frame the renderer made.
    _, groups, ref, _ = case
    _assert_images_close(ref.rgb, np.concatenate([t.rendered_rgb for t in groups]))
    np.testing.assert_array_equal(ref.semantic, np.concatenate([t.rendered_semantic for t in groups]))


def test_kernel_matches_numpy_reference(case):
    _, _, ref, ker = case
    _assert_images_close(ker.rgb, ref.rgb)
    np.testing.assert_array_equal(ker.semantic, ref.semantic)
    np.testing.assert_array_equal(ker.tag, ref.tag)
    np.testing.assert_allclose(ker.spec, ref.spec, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ker.emis, ref.emis, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ker.albedo, ref.albedo, rtol=0, atol=1e-6)
    for k in ("nx", "ny", "nz"):
        np.testing.assert_allclose(getattr(ker, k), getattr(ref, k), rtol=0, atol=1e-6)


def test_cases_exercise_the_features(case):
    """The parity above must not pass vacuously: each case reaches the branches it is there for."""
    kind, groups, ref, _ = case
    mats = np.bincount(ref.material, minlength=M.N_MATERIALS)
    assert mats[M.ROAD] > 100 and mats[M.FACADE] > 100 and mats[M.SIDEWALK] > 10
    assert (ref.tag == sem.ROADLINE).sum() > 10  # lane markings were painted
    assert sum(len(t.mi) for t in groups) > 100  # some sky
    L = groups[0].lighting
    sun_lit = np.concatenate([t.sun_lit for t in groups])
    if kind in ("day", "wet"):
        assert mats[M.FOLIAGE] > 100
        assert 0 < sun_lit.mean() < 1  # sun and shadows
    if kind == "wet":
        assert L.wet > 0 and L.puddles > 0 and L.cloud > 0.02
        assert (ref.spec == np.float32(0.85)).sum() > 10  # puddles
        assert (ref.spec > 0.03).mean() > 0.2  # wet roads reflect the sky
    if kind == "sunset":
        assert 0 < L.sun_dir[2] < 0.5 and L.sun_rgb.max() > 0
    if kind == "night":
        lamps = groups[0].lamps
        assert L.night and lamps is not None and groups[0].headlight is not None
        assert (ref.emis.max(axis=0) > 0).sum() > 5  # lit windows, lamp heads or tail lights
        low = (ref.z < 2.5) & (ref.nz > 0.3)
        assert (lamps.sample(ref.x[low], ref.y[low]) > 0).sum() > 100  # lamp pools on the ground
        # The headlights light something: without them the kernel's image is darker somewhere.
        assert (_run(groups, PB.kernel_srgb8, headlight=None).rgb.astype(int) < ref.rgb.astype(int)).any()
    if kind == "night" or kind == "dust":
        assert L.fog_beta > 0.01  # dense fog / dust


def _numpy_shadow_rays(h, sd):
    """The numpy lines of `Renderer.shadows` that build the shadow rays (copied: they are inline there)."""
    facing = (h.nx * sd[0] + h.ny * sd[1] + h.nz * sd[2]) > 0.0
    fi = np.flatnonzero(facing)
    srays = np.empty((len(fi), 6), np.float32)
    lift = np.where(np.take(h.material, fi) == M.FOLIAGE, np.float32(1.2), np.float32(0.0))
    srays[:, 0] = np.take(h.x, fi) + np.take(h.nx, fi) * np.float32(0.03) + lift * sd[0]
    srays[:, 1] = np.take(h.y, fi) + np.take(h.ny, fi) * np.float32(0.03) + lift * sd[1]
    srays[:, 2] = np.take(h.z, fi) + np.take(h.nz, fi) * np.float32(0.03) + lift * sd[2]
    srays[:, 3:] = sd
    return facing, fi, srays


def test_gather_hits_and_shadow_rays_match_the_renderer(case):
    _, groups, _, _ = case
    for t in groups:
        origins, dirs, hi, t_hit, pid, nrm, N, norm, inv_norm = t.hits_args
        h = K.gather_hits(origins, dirs, hi, t_hit, pid, nrm, len(t_hit) // N, norm, inv_norm, t.tables,
                          t.hits.params_t, t.albedo_t)
        for k in ("x", "y", "z", "dx", "dy", "dz", "nx", "ny", "nz", "dist", "prim", "material", "tag", "albedo"):
            got, want = getattr(h, k), getattr(t.hits, k)
            assert got.dtype == want.dtype and got.shape == want.shape, k
            np.testing.assert_array_equal(got, want, err_msg=k)
        if t.lighting.sun_rgb.max() > 0:
            h = t.fresh_hits()
            K.surface_detail(h, t.road_styles, t.buildings, t.lighting)  # foliage normals, as before the shadows
            for got, want in zip(K.shadow_rays(h, t.lighting.sun_dir), _numpy_shadow_rays(h, t.lighting.sun_dir)):
                np.testing.assert_array_equal(got, want)


def test_two_threads_give_the_same_bytes():
    # The renderer calls the kernels from two worker threads at once (nogil): results must not depend on that.
    t = _tick("Town10HD", "ClearNight")[0]
    want = PB.kernel_srgb8(t)[0]
    got = [None, None]

    def work(k):
        got[k] = PB.kernel_srgb8(t)[0]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for g in got:
        np.testing.assert_array_equal(g, want)


def test_wrong_dtype_is_a_clear_error():
    t = _tick("Town01", "ClearNoon")[0]
    h = t.fresh_hits()
    h.x = h.x.astype(np.float64)
    with pytest.raises(TypeError, match=r"h\.x must be a C-contiguous float32"):
        K.surface_detail(h, t.road_styles, t.buildings, t.lighting)


@pytest.mark.parametrize("town, weather", [("Town03", "ClearNoon"), ("Town10HD", "HardRainNight")])
def test_renderer_compiled_shader_matches_numpy(town, weather):
    """End to end: the renderer with the compiled kernels (the default) gives the numpy reference's frames: the
    same depth, labels and sun tests, RGB within one level (and identical on almost every pixel)."""
    frames = {}
    for shader in ("numpy", "compiled"):
        with ProceduralBackend(town, weather, Rig.resolve("capture", SIZE, SIZE), seed=0) as b:
            b.start_episode(EpisodeSpec(0, 11))
            b.renderer.shader = shader
            frames[shader] = [(b.step(), b.last_render) for _ in range(2)]
    for (fa, ra), (fb, rb) in zip(frames["numpy"], frames["compiled"]):
        np.testing.assert_array_equal(fa.depth, fb.depth)
        np.testing.assert_array_equal(fa.semantic, fb.semantic)
        np.testing.assert_array_equal(ra.sun_lit, rb.sun_lit)
        d = np.abs(fa.rgb.astype(int) - fb.rgb.astype(int))
        assert d.max() <= 1 and (d.max(-1) == 0).mean() >= 0.999


def test_renderer_rejects_an_unknown_shader():
    with pytest.raises(ValueError, match="shader must be one of"):
        Renderer(None, Rig.resolve("front", 8, 8), shader="numba")  # checked before the mesh is touched
