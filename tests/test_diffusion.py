"""Stage 3: denoisers, schedulers and the sampling loop, LDM training, model bundles, SceneGenerator, NeuralScene."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from nfldm_sdk.models.denoisers import (CDenoiser, CDenoiserConfig, FDenoiser, FDenoiserConfig, GDenoiser,
                                        GDenoiserConfig)
from nfldm_sdk.models.latent_ae import Latents, LatentStats
from nfldm_sdk.pipelines.sampling import denormalize_level, normalize_level, sample_level
from nfldm_sdk.models.noise_schedule import SAMPLERS, NoiseSchedule, make_scheduler, training_scheduler
from nfldm_training.modules.diffusion import ema_multi_avg_fn, v_prediction_loss

pytestmark = pytest.mark.usefixtures("one_thread_module")

G_CFG = GDenoiserConfig(g_dim=4, width=16, num_blocks=2, time_channels=8)
C_CFG = CDenoiserConfig(latent_shape=(4, 2, 8, 8), g_dim=4, widths=(8, 16), norm_groups=4, embed_dim=16, time_channels=8)
F_CFG = FDenoiserConfig(latent_shape=(4, 16, 16), c_shape=(4, 2, 8, 8), g_dim=4, widths=(8, 16), norm_groups=4,
                        embed_dim=16, time_channels=8, mid_attention=True, attention_head_dim=8)


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


class Oracle(torch.nn.Module):
    """A 'denoiser' that knows the clean sample x*: returns the exact v of x_t, ``(√ᾱ_t x_t − x*) / √(1−ᾱ_t)``
    (from ``x_t = √ᾱ x* + √(1−ᾱ) ε`` and ``v = √ᾱ ε − √(1−ᾱ) x*``)."""

    def __init__(self, target: torch.Tensor, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.register_buffer("target", target)
        self.register_buffer("ac", alphas_cumprod.double())
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # sample_level reads the device/dtype from a parameter

    def forward(self, x_t, t):
        a = self.ac[t].reshape(-1, *[1] * (x_t.dim() - 1))
        return ((a.sqrt() * x_t.double() - self.target.double()) / (1 - a).sqrt()).to(x_t.dtype)


# ============================================================================================ v-prediction
def test_velocity_target_matches_diffusers_and_the_formula():
    sched = training_scheduler(NoiseSchedule())
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 3, 4, 4, generator=g), torch.randn(6, 3, 4, 4, generator=g)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    a = sched.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    expected = a.sqrt() * eps - (1 - a).sqrt() * x0                       # v = √ᾱ ε − √(1−ᾱ) x0
    torch.testing.assert_close(sched.get_velocity(x0, eps, t), expected)
    # and x_t is the forward process: x_t = √ᾱ x0 + √(1−ᾱ) ε; the cosine schedule ends (almost) at pure noise
    torch.testing.assert_close(sched.add_noise(x0, eps, t), a.sqrt() * x0 + (1 - a).sqrt() * eps)
    assert float(sched.alphas_cumprod[-1]) < 1e-6


def test_v_prediction_loss_is_zero_for_the_exact_velocity():
    sched = training_scheduler(NoiseSchedule())
    x0 = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    oracle = Oracle(x0, sched.alphas_cumprod)
    zero = GDenoiser(GDenoiserConfig(g_dim=4, width=8, num_blocks=1))
    torch.nn.init.zeros_(zero.out[-1].weight), torch.nn.init.zeros_(zero.out[-1].bias)
    gen = lambda: torch.Generator().manual_seed(2)  # noqa: E731 - same ε and t for both calls
    loss = v_prediction_loss(oracle, x0, (), sched, generator=gen())
    assert float(loss) < 1e-8
    # predicting 0 costs E‖v‖² = E[ᾱ ε² + (1−ᾱ) x0²] ≈ 1 for unit data: the loss compares with the real target
    assert 0.6 < float(v_prediction_loss(zero, x0, (), sched, generator=gen())) < 1.5
    # min-SNR weights are ≤ 1 (min(snr, γ)/(snr+1)), so the weighted loss of the same draw is smaller
    assert float(v_prediction_loss(zero, x0, (), sched, generator=gen(), weighting="min_snr")) < float(
        v_prediction_loss(zero, x0, (), sched, generator=gen()))


# ============================================================================================ samplers
@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("steps", [5, 20])
def test_each_sampler_lands_on_the_oracle_point(sampler, steps):
    sched = make_scheduler(sampler)
    target = torch.tensor([[1.5, -0.5, 0.25, 3.0]])
    oracle = Oracle(target, sched.alphas_cumprod)
    x = sample_level(oracle, (1, 4), (), sched, steps, _gens([0]))
    assert len(sched.timesteps) == steps and int(sched.timesteps[0]) == 999   # "trailing": starts at pure noise
    torch.testing.assert_close(x, target, atol=1e-3, rtol=0)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sampling_is_seeded_and_per_sample(sampler):
    torch.manual_seed(0)
    psi = CDenoiser(C_CFG).eval()
    g = torch.randn(3, 4, generator=torch.Generator().manual_seed(9))
    shape = (3, *C_CFG.latent_shape)
    a = sample_level(psi, shape, (g,), make_scheduler(sampler), 4, _gens([1, 2, 3]))
    b = sample_level(psi, shape, (g,), make_scheduler(sampler), 4, _gens([1, 2, 3]))
    c = sample_level(psi, shape, (g,), make_scheduler(sampler), 4, _gens([1, 2, 4]))
    assert torch.equal(a, b)                                              # same seeds, same bytes
    torch.testing.assert_close(a[:2], c[:2], atol=1e-5, rtol=0)           # sample i depends only on generator i
    assert (a[2] - c[2]).abs().max() > 0.1                                # ... and another seed gives another sample
    one = sample_level(psi, (1, *C_CFG.latent_shape), (g[1:2],), make_scheduler(sampler), 4, _gens([2]))
    torch.testing.assert_close(one[0], a[1], atol=1e-5, rtol=0)           # whatever the batch size


def test_make_scheduler_types_and_unknown_name():
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    assert isinstance(make_scheduler("ddpm"), DDPMScheduler)
    assert isinstance(make_scheduler("ddim"), DDIMScheduler)
    s = make_scheduler("dpmsolver++", num_train_timesteps=500)
    assert isinstance(s, DPMSolverMultistepScheduler) and s.config.algorithm_type == "dpmsolver++"
    assert s.config.prediction_type == "v_prediction" and s.config.num_train_timesteps == 500
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        make_scheduler("euler")


# ============================================================================================ learning
def test_psi_g_learns_a_gaussian_mixture():
    """ψ_g trained for a few seconds on a 2-component mixture in 2-D samples its mean, spread and both modes."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)

    def data(n):  # modes at ±(1.5, 1.5), std 0.3: mean 0, per-dim std √(1.5² + 0.3²) ≈ 1.53
        sign = torch.randint(0, 2, (n, 1), generator=gen) * 2.0 - 1.0
        return sign * 1.5 + 0.3 * torch.randn(n, 2, generator=gen)

    psi = GDenoiser(GDenoiserConfig(g_dim=2, width=64, num_blocks=2, time_channels=16))
    sched = training_scheduler(NoiseSchedule())
    opt = torch.optim.Adam(psi.parameters(), lr=3e-3)
    for _ in range(600):
        loss = v_prediction_loss(psi, data(256), (), sched, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    psi.eval()
    for sampler, steps in (("ddim", 25), ("dpmsolver++", 15), ("ddpm", 50)):
        x = sample_level(psi, (1000, 2), (), make_scheduler(sampler), steps, torch.Generator().manual_seed(1))
        assert x.mean(0).abs().max() < 0.25, (sampler, x.mean(0))
        assert ((x.std(0) - 1.53).abs() < 0.25).all(), (sampler, x.std(0))   # untrained: ~1.2; ε-trained: ~1.05
        near = torch.minimum((x - 1.5).norm(dim=1), (x + 1.5).norm(dim=1)) < 0.9   # within 3σ of a mode
        assert near.float().mean() > 0.8, sampler                                   # untrained: ~0.2
        assert 0.3 < (x.sum(1) > 0).float().mean() < 0.7, sampler                   # both modes, about evenly


# ============================================================================================ conditioning
def test_conditional_group_norm_really_uses_g():
    torch.manual_seed(0)
    psi_c, psi_f = CDenoiser(C_CFG).eval(), FDenoiser(F_CFG).eval()
    gen = torch.Generator().manual_seed(3)
    c_t, f_t = torch.randn(2, *C_CFG.latent_shape, generator=gen), torch.randn(2, *F_CFG.latent_shape, generator=gen)
    c0 = torch.randn(2, *C_CFG.latent_shape, generator=gen)
    g1, g2 = torch.randn(2, 4, generator=gen), torch.randn(2, 4, generator=gen)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        assert (psi_c(c_t, t, g1) - psi_c(c_t, t, g2)).abs().mean() > 1e-3          # different g, different output
        assert (psi_f(f_t, t, g1, c0) - psi_f(f_t, t, g2, c0)).abs().mean() > 1e-3
        assert (psi_f(f_t, t, g1, c0) - psi_f(f_t, t, g1, torch.zeros_like(c0))).abs().mean() > 1e-3  # c is read
        # g enters ONLY through conditional GroupNorm: with the AdaGroupNorm projections' weights zeroed (their
        # biases kept), the output no longer depends on g (nor on t) at all.
        from diffusers.models.normalization import AdaGroupNorm
        for psi in (psi_c, psi_f):
            ada = [m for m in psi.modules() if isinstance(m, AdaGroupNorm)]
            assert len(ada) >= 2 * 4                                               # both norms of every block
            for m in ada:
                m.linear.weight.zero_()
        assert torch.equal(psi_c(c_t, t, g1), psi_c(c_t, t, g2))
        assert torch.equal(psi_f(f_t, t, g1, c0), psi_f(f_t, t, g2, c0))


def test_denoisers_shapes_and_config_errors():
    torch.manual_seed(0)
    t = torch.tensor([0, 999])
    assert GDenoiser(G_CFG)(torch.randn(2, 4), t).shape == (2, 4)
    with pytest.raises(ValueError, match="divisible by 2"):
        CDenoiserConfig(latent_shape=(4, 2, 6, 6), widths=(8, 16, 16), norm_groups=4)
    with pytest.raises(ValueError, match="norm_groups"):
        FDenoiserConfig(widths=(12, 16), norm_groups=8)
    with pytest.raises(ValueError, match="expects c of shape"):
        CDenoiser(C_CFG)(torch.randn(2, 4, 3, 8, 8), t, torch.randn(2, 4))


@pytest.mark.parametrize("cls,cfg", [(GDenoiser, G_CFG), (CDenoiser, C_CFG), (FDenoiser, F_CFG)])
def test_denoiser_save_load_round_trip(tmp_path, cls, cfg):
    torch.manual_seed(0)
    model = cls(cfg).eval()
    model.save_pretrained(tmp_path / "m")
    same = cls.from_pretrained(tmp_path / "m")
    assert same.config == cfg
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, *model.latent_shape, generator=gen)
    cond = {"g": (), "c": (torch.randn(2, 4, generator=gen),),
            "f": (torch.randn(2, 4, generator=gen), torch.randn(2, *C_CFG.latent_shape, generator=gen))}[model.level]
    with torch.no_grad():
        assert torch.equal(model(x, torch.tensor([3, 700]), *cond), same(x, torch.tensor([3, 700]), *cond))


# ============================================================================================ EMA, stats
def test_ema_update_with_warmup_known_values():
    from torch.optim.swa_utils import AveragedModel

    lin = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema = AveragedModel(lin, multi_avg_fn=ema_multi_avg_fn(0.99), use_buffers=False)
    ema.update_parameters(lin)                          # first update copies: 1.0
    with torch.no_grad():
        lin.weight.fill_(3.0)
    ema.update_parameters(lin)                          # n = 1: d = min(0.99, 2/11); ema = 1 + (1 − d)(3 − 1)
    d = 2.0 / 11.0
    assert math.isclose(float(ema.module.weight), 1.0 + (1.0 - d) * 2.0, rel_tol=1e-6)
    for _ in range(5000):                               # long run: d reaches 0.99, the EMA reaches the weights
        ema.update_parameters(lin)
    assert math.isclose(float(ema.module.weight), 3.0, rel_tol=1e-5)


def test_level_normalisation_agrees_with_the_lae_stats():
    stats = LatentStats(g_mean=0.5, g_std=2.0, c_mean=(1.0, 2.0, 3.0, 4.0), c_std=(1.0, 0.5, 2.0, 4.0),
                        f_mean=(0.0, -1.0, 1.0, 0.0), f_std=(1.0, 1.0, 3.0, 0.1))
    gen = torch.Generator().manual_seed(0)
    lat = Latents(torch.randn(2, 6, generator=gen), torch.randn(2, 4, 2, 3, 3, generator=gen), torch.randn(2, 4, 5, 5, generator=gen))
    ref = stats.normalize(lat)
    for k in ("g", "c", "f"):
        torch.testing.assert_close(normalize_level(stats, k, getattr(lat, k)), getattr(ref, k))
        torch.testing.assert_close(denormalize_level(stats, k, getattr(ref, k)), getattr(lat, k))
    with pytest.raises(ValueError, match="channels"):
        normalize_level(stats, "c", torch.randn(2, 3, 2, 3, 3))


def test_latent_level_dataset_normalises_and_splits(tmp_path):
    from nfldm_training.data.latent_levels import LatentLevelDataModule, LatentLevelDataset, LatentLevels, split_indices

    assert split_indices(10, 0.2) == ([0, 1, 3, 4, 5, 6, 8, 9], [2, 7])  # centres of two equal halves
    assert split_indices(1, 0.5) == ([0], [])
    stats = LatentStats(g_mean=1.0, g_std=2.0, c_mean=(0.0, 1.0, 2.0, 3.0), c_std=(1.0, 2.0, 3.0, 4.0),
                        f_mean=(0.5,) * 4, f_std=(0.25,) * 4)
    path = _write_latent_store(tmp_path / "l.zarr", n=5, stats=stats)
    levels = LatentLevels(path)
    assert (len(levels), levels.g_dim, levels.c_shape, levels.f_shape) == (5, 16, (4, 4, 8, 8), (4, 32, 32))
    raw_c = torch.from_numpy(levels.read("c"))
    cached = LatentLevelDataset(path, ("c", "g"), [1, 3], stats, cache=True)
    lazy = LatentLevelDataset(path, ("c", "g"), [1, 3], stats, cache=False)
    item = cached[1]
    assert set(item) == {"c", "g"} and torch.equal(item["c"], lazy[1]["c"]) and torch.equal(item["g"], lazy[1]["g"])
    torch.testing.assert_close(item["c"][2], (raw_c[3, 2] - 2.0) / 3.0)          # channel 2: (x − 2) / 3
    torch.testing.assert_close(item["g"], (torch.from_numpy(levels.read("g"))[3] - 1.0) / 2.0)
    dm = LatentLevelDataModule(path, "f", batch_size=2, val_fraction=0.4)
    dm.setup()
    assert dm.val_idx == [1, 3] and len(dm.train_set) == 3 and set(dm.train_set[0]) == {"f", "g", "c"}
    h = levels.training_data_hash()
    assert len(h) == 64 and h == LatentLevels(path).training_data_hash()
    assert LatentLevels(_write_latent_store(tmp_path / "m.zarr", n=5, seed=1)).training_data_hash() != h  # other ids
    import zarr
    del zarr.open_group(path, mode="r+").attrs["latent_stats"]                       # an unfinished store
    with pytest.raises(ValueError, match="incomplete"):
        LatentLevels(path)


# ============================================================================================ bundles and generation


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory, tiny_generator, write_tiny_bundle):
    # non-trivial stats, so that de-normalisation is exercised
    stats = LatentStats(g_mean=0.1, g_std=0.5, c_mean=(0.0, 0.1, 0.2, 0.3), c_std=(1.0, 2.0, 0.5, 1.0),
                        f_mean=(0.0,) * 4, f_std=(0.7,) * 4)
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny", tiny_generator, latent_stats=stats)


def _broken_copy(bundle, tmp_path):
    dst = tmp_path / "broken"
    shutil.copytree(bundle, dst)
    return dst


def test_bundle_round_trip_generates_the_same_scenes(tiny_bundle, tiny_generator):
    from nfldm_sdk.pipelines.generator import SceneGenerator

    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["preset"] == "tiny" and len(manifest["bundle_hash"]) == 64
    assert set(manifest["parts"]) == {"scene_ae", "latent_ae", "denoiser_g", "denoiser_c", "denoiser_f"}
    loaded = SceneGenerator.from_pretrained(tiny_bundle)
    a = loaded.generate(2, seed=3, steps=3, sampler="ddim")
    b = tiny_generator.generate(2, seed=3, steps=3, sampler="ddim")
    for x, y in zip(a, b):
        assert torch.equal(x.field.density, y.field.density) and torch.equal(x.field.features, y.field.features)
        assert x.bundle_hash == manifest["bundle_hash"] and x.seed == y.seed


def test_bundle_missing_part_names_it(tiny_bundle, tmp_path):
    from nfldm_sdk.pipelines.bundle import BundleError
    from nfldm_sdk.pipelines.generator import SceneGenerator

    broken = _broken_copy(tiny_bundle, tmp_path)
    shutil.rmtree(broken / "denoiser_c")
    with pytest.raises(BundleError, match=r"part 'denoiser_c' is missing.*--ldm-c"):
        SceneGenerator.from_pretrained(broken)


def test_bundle_part_of_the_wrong_class_names_it(tiny_bundle, tmp_path):
    from nfldm_sdk.pipelines.bundle import BundleError
    from nfldm_sdk.pipelines.generator import SceneGenerator

    broken = _broken_copy(tiny_bundle, tmp_path)
    shutil.rmtree(broken / "denoiser_c")
    shutil.copytree(broken / "denoiser_g", broken / "denoiser_c")
    with pytest.raises(BundleError, match=r"part 'denoiser_c' holds a nfldm_sdk.models.denoisers.GDenoiser"):
        SceneGenerator.from_pretrained(broken)


def test_bundle_changed_part_and_manifest_version(tiny_bundle, tmp_path):
    from nfldm_sdk.pipelines.bundle import BundleError
    from nfldm_sdk.pipelines.generator import SceneGenerator

    broken = _broken_copy(tiny_bundle, tmp_path)
    torch.manual_seed(1)
    CDenoiser(CDenoiser.load_config(broken / "denoiser_c")).save_pretrained(broken / "denoiser_c")  # other weights
    with pytest.raises(BundleError, match=r"part 'denoiser_c' changed since export"):
        SceneGenerator.from_pretrained(broken)
    m = json.loads((broken / "manifest.json").read_text())
    m["format_version"] = 99
    (broken / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"bundle format version 99.*reads version 1"):
        SceneGenerator.from_pretrained(broken)
    with pytest.raises(BundleError, match="no manifest.json"):
        SceneGenerator.from_pretrained(tmp_path)


def test_bundle_with_inconsistent_latent_shapes_is_refused(tiny_generator, tmp_path):
    from nfldm_sdk.pipelines.bundle import BundleError, write_bundle

    gen = tiny_generator
    cfg = gen.denoisers["c"].config
    wrong = CDenoiser(CDenoiserConfig(**{**cfg.__dict__, "latent_shape": (4, 2, 8, 8)}))
    with pytest.raises(BundleError, match=r"part 'denoiser_c' models c of shape \(4, 2, 8, 8\).*\(4, 4, 8, 8\)"):
        write_bundle(tmp_path / "b", scene_ae=gen.scene_ae, latent_ae=gen.latent_ae,
                     denoisers={**gen.denoisers, "c": wrong}, latent_stats=gen.latent_stats,
                     noise_schedule=gen.noise_schedule)
    assert not (tmp_path / "b").exists()


def test_generate_is_deterministic_and_batch_independent(tiny_generator):
    gen = tiny_generator
    a = gen.generate(3, seed=10, steps=3, sampler="ddpm", batch_size=3)
    b = gen.generate(3, seed=10, steps=3, sampler="ddpm", batch_size=3)
    for x, y in zip(a, b):                                               # same seed, same bytes
        assert torch.equal(x.field.density, y.field.density) and torch.equal(x.field.features, y.field.features)
    assert [s.seed for s in a] == [10, 11, 12] and a[0].field.grid_shape == (8, 32, 32) and not a[0].field.is_batched
    other = gen.generate(1, seed=11, steps=3, sampler="ddpm")[0]         # scene 1 alone, batch of one
    torch.testing.assert_close(other.field.features, a[1].field.features, atol=1e-4, rtol=0)
    assert (a[0].field.features - a[1].field.features).abs().mean() > 1e-3  # different seeds, different scenes


def test_neural_scene_save_load_render(tiny_bundle, tiny_generator, tmp_path):
    from nfldm_sdk.cameras.builders import preview_cameras
    from nfldm_sdk.pipelines.bundle import BundleError
    from nfldm_sdk.pipelines.generator import SceneGenerator
    from nfldm_sdk.pipelines.scene import NeuralScene

    gen = SceneGenerator.from_pretrained(tiny_bundle)
    scene = gen.generate(1, seed=4, steps=2)[0]
    cams = preview_cameras(32, 16)
    img = scene.render(cams)
    assert img.rgb.shape == (4, 16, 32, 3) and img.rgb.dtype == torch.uint8
    assert img.depth.shape == (4, 16, 32) and img.alpha.shape == (4, 16, 32) and img.depth.dtype == torch.float32
    folder = scene.save(tmp_path / "scene")
    back = NeuralScene.load(folder, decoder=tiny_bundle)
    assert torch.equal(back.field.density, scene.field.density) and torch.equal(back.field.features, scene.field.features)
    assert (back.seed, back.bundle_hash, back.sampler, back.steps) == (4, gen.bundle_hash, "ddim", 2)
    again = back.render(cams)
    assert torch.equal(again.rgb, img.rgb) and torch.equal(again.alpha, img.alpha)
    with pytest.raises(ValueError, match="has no decoder"):
        NeuralScene.load(folder).render(cams)
    meta = json.loads((folder / "scene.json").read_text())
    meta["bundle_hash"] = "f" * 64
    (folder / "scene.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="pass the bundle that generated the scene"):
        NeuralScene.load(folder, decoder=tiny_bundle)


def test_preview_cameras_look_front_left_back_right():
    from nfldm_sdk.cameras.builders import preview_cameras

    cams = preview_cameras(64, 32)
    pts = torch.tensor([[10.0, 0.0, 1.6], [0.0, 10.0, 1.6], [-10.0, 0.0, 1.6], [0.0, -10.0, 1.6]])
    for i in range(4):
        uv, z = cams[i].world_to_pixels(pts[i:i + 1])
        torch.testing.assert_close(uv[0], torch.tensor([32.0, 16.0]))    # straight ahead: the image centre
        assert math.isclose(float(z[0]), 10.0, rel_tol=1e-6)
    uv, _ = cams[0].world_to_pixels(torch.tensor([[10.0, 0.0, 3.0]]))    # above the eye: up in the image (v smaller)
    assert uv[0, 1] < 16.0
    uv, _ = cams[0].world_to_pixels(torch.tensor([[10.0, -2.0, 1.6]]))   # to the right (−y): u larger
    assert uv[0, 0] > 32.0


def test_generate_cli_writes_scenes_and_previews(tiny_bundle, tmp_path):
    import imageio.v3 as iio
    from click.testing import CliRunner

    from nfldm_sdk.cli.generate import generate

    out = tmp_path / "scenes"
    res = CliRunner().invoke(generate, ["--model", str(tiny_bundle), "--num", "2", "--seed", "7", "--out", str(out),
                                        "--steps", "2", "--sampler", "dpmsolver++", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    for s in (7, 8):
        folder = out / f"scene_{s:06d}"
        assert (folder / "field.safetensors").is_file() and json.loads((folder / "scene.json").read_text())["seed"] == s
        img = iio.imread(folder / "preview.png")
        assert img.shape == (2 * 64, 4 * 64, 3) and img.dtype == np.uint8  # tiny decoder images are 64×64


def test_sampling_bench_runs_and_formats(tiny_generator):
    from nfldm_training.benchmarks.sampling import format_sampling_bench, run_sampling_bench

    r = run_sampling_bench(tiny_generator, samplers=("ddim", "dpmsolver++"), steps=(2,), batch=1)
    assert [(t.sampler, t.steps) for t in r.timings] == [("ddim", 2), ("dpmsolver++", 2)]
    assert all(t.seconds_per_scene > 0 for t in r.timings)
    text = format_sampling_bench(r)
    assert "dpmsolver++" in text and "s/scene" in text and r.latent_shapes["c"] == (4, 4, 8, 8)


# ============================================================================================ training and export
def _write_latent_store(path, n=6, seed=0, stats=None):
    """A latent store in the format of `nfldm encode-latents` (nfldm_training.stores.latent_store), random latents."""
    import zarr

    from nfldm_sdk.persistence import config_to_dict
    from nfldm_training.stores.latent_store import LATENT_STORE_FORMAT, LATENT_STORE_VERSION

    rng = np.random.default_rng(seed)
    grp = zarr.open_group(str(path), mode="w", zarr_format=3)
    arrays = {"g": rng.normal(size=(n, 16)), "c": rng.normal(size=(n, 4, 4, 8, 8)), "f": rng.normal(size=(n, 4, 32, 32))}
    for k, a in arrays.items():
        grp.create_array(k, shape=a.shape, dtype="float32", chunks=(1, *a.shape[1:]))[:] = a.astype(np.float32)
    for k, dt in (("store_index", "int32"), ("episode", "int32"), ("anchor_frame", "int64")):
        grp.create_array(k, shape=(n,), dtype=dt, chunks=(n,))[:] = np.arange(n) + seed * 100
    stats = stats or LatentStats(num_scenes=n)
    grp.attrs.update({"format": LATENT_STORE_FORMAT, "format_version": LATENT_STORE_VERSION, "scenes_written": n,
                      "latent_stats": config_to_dict(stats)})
    return str(path)


def test_stage3_split_holds_out_the_episodes_stage1_holds_out():
    import numpy as np

    from nfldm_training.data.capture_windows import held_out_episodes
    from nfldm_training.data.latent_levels import split_by_episode

    # store 0: episodes 0..4 with 2 scenes each (rows 0-9); store 1: one episode with 4 scenes (rows 10-13)
    ids = np.array([(0, e, f) for e in range(5) for f in (3, 5)] + [(1, 0, f) for f in (3, 4, 5, 6)])
    train, val = split_by_episode(ids, 0.5)
    # store 0: stage 1 holds out its last round(0.5·5) = 2 episodes (3, 4) -> rows 6-9; store 1 (one episode):
    # every k-th scene, split_indices(4, 0.5) -> positions 0 and 2 -> rows 10 and 12
    assert held_out_episodes(5, 0.5, None) == {3, 4}
    assert val == [6, 7, 8, 9, 10, 12] and sorted(train + val) == list(range(14))
    assert split_by_episode(ids, 0.2)[1] == [8, 9]   # 1 episode of 5; 4 single-episode scenes: int(0.8) = 0 held out


@pytest.fixture(scope="module")
def ldm_runs(tmp_path_factory):
    from nfldm_training.modules.ldm import train_ldm
    from nfldm_training.configs.ldm import get_ldm_preset

    root = tmp_path_factory.mktemp("ldm")
    store = _write_latent_store(root / "latents.zarr")
    ldm = get_ldm_preset("tiny")
    for level in "gcf":
        cfg = ldm.train_config(level)
        cfg.max_steps, cfg.batch_size, cfg.val_fraction, cfg.val_interval = 3, 2, 0.34, 3
    results = {level: train_ldm(store, level, ldm, root / f"run_{level}", preset_name="tiny", progress=False,
                                log=lambda m: None, accelerator="cpu", devices=1) for level in "gcf"}
    return root, store, results


def test_train_ldm_saves_the_ema_denoiser(ldm_runs):
    from nfldm_training.modules.ldm import RUN_INFO

    root, store, results = ldm_runs
    r = results["f"]
    assert r.global_step == 3 and r.val_loss is not None and r.val_loss_untrained is not None
    model = FDenoiser.from_pretrained(r.model_dir)
    assert model.latent_shape == (4, 32, 32) and model.config.c_shape == (4, 4, 8, 8) and model.config.g_dim == 16
    info = json.loads((r.run_dir / RUN_INFO).read_text())
    assert info["level"] == "f" and len(info["training_data_hash"]) == 64 and info["num_scenes"] == 6
    # the saved weights are the EMA's, which after 3 updates differ from the trained weights
    ckpt = torch.load(r.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    saved = model.state_dict()
    key = "unet.conv_out.weight"
    assert torch.equal(saved[key], ckpt[f"ema.module.{key}"]) and not torch.equal(saved[key], ckpt[f"model.{key}"])


def test_export_bundle_cli_assembles_a_loadable_bundle(ldm_runs, tiny_generator, tmp_path):
    from click.testing import CliRunner

    from nfldm_sdk.pipelines.generator import SceneGenerator
    from nfldm_training.cli.ldm import export_bundle

    root, store, results = ldm_runs
    tiny_generator.scene_ae.save_pretrained(tmp_path / "ae" / "model")
    tiny_generator.latent_ae.save_pretrained(tmp_path / "lae" / "model")
    args = ["--scene-ae", str(tmp_path / "ae"), "--latent-ae", str(tmp_path / "lae"), "--ldm-g", str(results["g"].run_dir),
            "--ldm-c", str(results["c"].run_dir), "--ldm-f", str(results["f"].run_dir), "--out", str(tmp_path / "bundle")]
    res = CliRunner().invoke(export_bundle, args + ["--half"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["training_data_hash"] == json.loads((results["g"].run_dir / "ldm_run.json").read_text())["training_data_hash"]
    assert manifest["preset"] == "tiny" and manifest["training_data"]["latent_store"] == store
    gen = SceneGenerator.from_pretrained(tmp_path / "bundle")
    assert gen.generate(1, seed=0, steps=2)[0].field.grid_shape == (8, 32, 32)
    # a run of the wrong level is refused with the option named
    bad = args.copy()
    bad[bad.index("--ldm-c") + 1] = str(results["g"].run_dir)
    res = CliRunner().invoke(export_bundle, bad[:-1] + [str(tmp_path / "bundle2")])
    assert res.exit_code != 0 and "--ldm-c" in res.output and "not 'c'" in res.output


def test_train_ldm_cli_trains_and_resumes(tmp_path):
    from click.testing import CliRunner

    from nfldm_training.cli.ldm import train_ldm
    from nfldm_training.configs.run_config import load_run_config

    store = _write_latent_store(tmp_path / "l.zarr", n=4)
    run = tmp_path / "run_g"
    base = ["--level", "g", "--latents", store, "--preset", "tiny", "--out", str(run), "--batch-size", "2",
            "--accelerator", "cpu", "--devices", "1"]
    res = CliRunner().invoke(train_ldm, base + ["--max-steps", "2"])
    assert res.exit_code == 0, res.output
    first = GDenoiser.from_pretrained(run / "model").state_dict()
    # continues from last.ckpt with the run's saved config: its preset (tiny, not the default small) and batch size
    res = CliRunner().invoke(train_ldm, ["--level", "g", "--latents", store, "--out", str(run), "--accelerator", "cpu",
                                         "--devices", "1", "--max-steps", "4"])
    assert res.exit_code == 0 and "resuming from" in res.output and "4 steps" in res.output, res.output
    name, saved, extra = load_run_config(run / "config.json", "ldm")
    level = extra["level"]
    assert (level, name, saved.train_g.batch_size, saved.train_g.max_steps) == ("g", "tiny", 2, 4)
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 4
    assert not torch.equal(GDenoiser.from_pretrained(run / "model").state_dict()["out.2.weight"], first["out.2.weight"])
    res = CliRunner().invoke(train_ldm, ["--level", "g", "--latents", str(tmp_path / "none.zarr"), "--out", str(run)])
    assert res.exit_code != 0 and "encode-latents" in res.output


@pytest.mark.parametrize("name", ["tiny", "small", "paper"])
def test_ldm_presets_fit_the_latent_presets(name):
    from nfldm_training.configs.latent import LATENT_PRESETS
    from nfldm_training.configs.ldm import get_ldm_preset, with_latent_shapes

    lae = LATENT_PRESETS[name].latent_ae
    ldm = with_latent_shapes(get_ldm_preset(name), lae.g_dim, lae.c_shape, lae.f_shape)  # validates the U-Net sizes
    assert ldm.denoiser_c.latent_shape == lae.c_shape and ldm.denoiser_f.c_shape == lae.c_shape
    assert ldm.denoiser_f.latent_shape == lae.f_shape and ldm.denoiser_g.g_dim == lae.g_dim
    assert ldm.schedule.num_train_timesteps == 1000 and ldm.schedule.prediction_type == "v_prediction"
    assert ldm.sampler.steps == 50
    if name == "paper":
        assert (lae.g_dim, lae.c_shape, lae.f_shape) == (128, (4, 16, 32, 32), (4, 128, 128))  # docs/method.md's sizes
