"""The sampling loop and its schedulers: the v-prediction target, every sampler landing on a known clean sample,
seeded per-sample sampling whatever the batch, `make_scheduler`, and the per-level latent normalisation."""
from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from nfldm_sdk.models.denoisers import CDenoiser, CDenoiserConfig
from nfldm_sdk.models.latent_ae import Latents, LatentStats
from nfldm_sdk.models.noise_schedule import SAMPLERS, NoiseSchedule, make_scheduler, training_scheduler
from nfldm_sdk.pipelines.sampling import denormalize_level, normalize_level, sample_level

pytestmark = pytest.mark.usefixtures("one_thread_module")

# a small ψ_c (c latent [4, 2, 8, 8], g_dim 4): the network the seeding test samples with
C_CFG = CDenoiserConfig(latent_shape=(4, 2, 8, 8), g_dim=4, widths=(8, 16), norm_groups=4, embed_dim=16, time_channels=8)


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


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


# ============================================================================================ samplers
@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("steps", [5, 20])
def test_each_sampler_lands_on_the_oracle_point(sampler, steps, oracle_factory):
    sched = make_scheduler(sampler)
    target = torch.tensor([[1.5, -0.5, 0.25, 3.0]])
    oracle = oracle_factory(target, sched.alphas_cumprod)
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
    assert isinstance(make_scheduler("ddpm"), DDPMScheduler)
    assert isinstance(make_scheduler("ddim"), DDIMScheduler)
    s = make_scheduler("dpmsolver++", num_train_timesteps=500)
    assert isinstance(s, DPMSolverMultistepScheduler) and s.config.algorithm_type == "dpmsolver++"
    assert s.config.prediction_type == "v_prediction" and s.config.num_train_timesteps == 500
    with pytest.raises(ValueError, match="unknown sampler 'euler'"):
        make_scheduler("euler")


# ============================================================================================ normalisation
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
