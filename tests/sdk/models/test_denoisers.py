"""The stage-3 denoisers ψ_g, ψ_c, ψ_f: shapes and config errors, save/load round trip, conditioning through
conditional GroupNorm only, and ψ_g learning a small distribution."""
from __future__ import annotations

import pytest
import torch
from diffusers.models.normalization import AdaGroupNorm

from nfldm_sdk.models.denoisers import (CDenoiser, CDenoiserConfig, FDenoiser, FDenoiserConfig, GDenoiser,
                                        GDenoiserConfig)
from nfldm_sdk.models.noise_schedule import NoiseSchedule, make_scheduler, training_scheduler
from nfldm_sdk.pipelines.sampling import sample_level
from nfldm_training.modules.diffusion import v_prediction_loss

pytestmark = pytest.mark.usefixtures("one_thread_module")

G_CFG = GDenoiserConfig(g_dim=4, width=16, num_blocks=2, time_channels=8)
C_CFG = CDenoiserConfig(latent_shape=(4, 2, 8, 8), g_dim=4, widths=(8, 16), norm_groups=4, embed_dim=16, time_channels=8)
F_CFG = FDenoiserConfig(latent_shape=(4, 16, 16), c_shape=(4, 2, 8, 8), g_dim=4, widths=(8, 16), norm_groups=4,
                        embed_dim=16, time_channels=8, mid_attention=True, attention_head_dim=8)


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
