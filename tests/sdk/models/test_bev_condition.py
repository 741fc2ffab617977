"""BEV-map conditioning of the stage-3 denoisers: unconditional configs unchanged (same parameters, same outputs as
the forward before conditioning existed), the map changes the output through cross-attention, the null condition,
classifier-free guidance in `sample_level`, the trajectory in g, and `SceneGenerator.generate(bev=...)` with its
errors and the `nfldm generate --bev` command."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from nfldm_sdk.labels.bev_map import BEVMap
from nfldm_sdk.models.bev_condition import BEVEncoder, bev_class_lut
from nfldm_sdk.models.denoisers import (CDenoiser, CDenoiserConfig, FDenoiser, FDenoiserConfig, GDenoiser,
                                        GDenoiserConfig, split_g_trajectory)
from nfldm_sdk.models.layout import fold_z, unfold_z
from nfldm_sdk.models.noise_schedule import make_scheduler
from nfldm_sdk.pipelines.generate_args import GenerateArgumentError
from nfldm_sdk.pipelines.sampling import sample_level
from nfldm_sdk.pipelines.scene import NeuralScene

pytestmark = pytest.mark.usefixtures("one_thread_module")

C_KW = dict(latent_shape=(4, 4, 8, 8), widths=(8, 16), norm_groups=4, attention_head_dim=8, embed_dim=16,
            time_channels=8)
F_KW = dict(latent_shape=(4, 16, 16), c_shape=(4, 4, 8, 8), widths=(8, 16), norm_groups=4, attention_head_dim=8,
            embed_dim=16, time_channels=8)
BEV_KW = dict(bev_condition=True, bev_grid_yx=(16, 16), bev_token_dim=8, bev_token_grid=4)


def _bev(b=2, seed=0):
    tags = np.asarray([1, 2, 3, 9, 10, 14, 24, 255], np.uint8)
    return torch.from_numpy(tags[np.random.default_rng(seed).integers(0, len(tags), (b, 16, 16))])


def _old_unet_forward(unet, x, emb):
    """The U-Net's forward as it was before BEV conditioning (no cross-attention), from its own modules."""
    h = unet.conv_in(x)
    skips = []
    for blocks, down in zip(unet.down_blocks, unet.downsamplers):
        for block in blocks:
            h = block(h, emb)
        skips.append(h)
        h = down(h)
    h = unet.mid1(h, emb)
    if unet.mid_attn is not None:
        h = unet.mid_attn(h)
    h = unet.mid2(h, emb)
    for blocks, up in zip(unet.up_blocks, unet.upsamplers):
        h = torch.cat([h, skips.pop()], dim=1)
        for block in blocks:
            h = block(h, emb)
        h = up(h)
    return unet.conv_out(F.silu(unet.norm_out(h)))


def test_unconditional_denoisers_have_no_new_parameters_and_the_old_outputs():
    torch.manual_seed(0)
    c = CDenoiser(CDenoiserConfig(**C_KW, mid_attention=True))
    f = FDenoiser(FDenoiserConfig(**F_KW))
    g = GDenoiser(GDenoiserConfig(g_dim=8, width=16, num_blocks=2))
    for m in (c, f, g):
        assert not any(k.startswith("bev") or "xattn" in k for k in m.state_dict()), type(m).__name__
    # the state dict of the pre-conditioning ψ_c / ψ_g (the module names the bundles on disk hold)
    assert sum(p.numel() for p in g.parameters()) == sum(p.numel() for n, p in g.named_parameters()
                                                         if n.split(".")[0] in ("time", "inp", "blocks", "out"))
    gen = torch.Generator().manual_seed(1)
    x, t, g0 = torch.randn(2, 4, 4, 8, 8, generator=gen), torch.tensor([5, 900]), torch.randn(2, 16, generator=gen)
    old = unfold_z(_old_unet_forward(c.unet, fold_z(x), c.cond(t, g0)), 4)
    assert torch.equal(c(x, t, g0), old)
    f_t, c0 = torch.randn(2, 4, 16, 16, generator=gen), torch.randn(2, 4, 4, 8, 8, generator=gen)
    c_up = F.interpolate(fold_z(c0), size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.equal(f(f_t, t, g0, c0), _old_unet_forward(f.unet, torch.cat([f_t, c_up], 1), f.cond(t, g0)))
    with pytest.raises(ValueError, match="not BEV-conditioned"):
        c(x, t, g0, bev=_bev())


def test_the_map_changes_the_output_and_the_null_condition_is_learned_tokens():
    torch.manual_seed(0)
    c = CDenoiser(CDenoiserConfig(**C_KW, **BEV_KW)).eval()
    assert any("xattn" in k for k in c.state_dict()) and "bev.null" in c.state_dict()
    gen = torch.Generator().manual_seed(1)
    x, t, g0 = torch.randn(2, 4, 4, 8, 8, generator=gen), torch.tensor([5, 900]), torch.randn(2, 16, generator=gen)
    a, b = _bev(seed=0), _bev(seed=1)
    with torch.no_grad():
        va, vb, vnull = c(x, t, g0, bev=a), c(x, t, g0, bev=b), c(x, t, g0)
        mixed = c(x, t, g0, bev=a, bev_drop=torch.tensor([False, True]))
        c.bev.null.add_(1.0)                                               # the null path reads the null tokens
        vnull2 = c(x, t, g0)
    assert (va - vb).abs().max() > 1e-5 and (va - vnull).abs().max() > 1e-5     # float noise is ~1e-7
    torch.testing.assert_close(mixed[0], va[0])
    torch.testing.assert_close(mixed[1], vnull[1])
    assert (vnull2 - vnull).abs().max() > 1e-5
    with pytest.raises(ValueError, match="uint8"):
        c(x, t, g0, bev=a.long())
    with pytest.raises(ValueError, match=r"\[B=2, 16, 16\]"):
        c(x, t, g0, bev=a[:, :8])


def test_bev_encoder_one_hot_groups_tags_and_marks_unobserved():
    lut = bev_class_lut()
    assert lut[1] == lut[25] == 0 != lut[24]              # road and ground are one class, road line another
    assert lut[255] == lut.max() == 13                     # 13 classes + unobserved
    enc = BEVEncoder((64, 64), 8, 16)
    assert enc.token_yx == (16, 16) and enc.num_tokens == 256
    assert enc(None, None, 3, torch.float32).shape == (3, 256, 8)


def test_guidance_scale_one_is_the_conditional_and_zero_the_unconditional_model():
    torch.manual_seed(0)
    f = FDenoiser(FDenoiserConfig(**F_KW, **BEV_KW)).eval()
    cond = (torch.randn(2, 16), torch.randn(2, 4, 4, 8, 8))
    bev = _bev()

    def run(denoiser):  # a plain function: device and dtype are given
        gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
        return sample_level(denoiser, (2, 4, 16, 16), cond, make_scheduler("ddim"), 3, gens, "cpu", torch.float32)

    conditional = run(lambda x, t, *c: f(x, t, *c, bev=bev))
    unconditional = run(lambda x, t, *c: f(x, t, *c))
    assert conditional.shape == (2, 4, 16, 16) and (conditional - unconditional).abs().max() > 1e-4
    assert torch.equal(_sample(f, cond, bev, 1.0), conditional)
    # s = 0: v_u + 0·(v_c − v_u) = v_u, from the batched 2B call (rounding of a batch of 4 vs 2 only)
    torch.testing.assert_close(_sample(f, cond, bev, 0.0), unconditional, atol=1e-5, rtol=1e-5)
    assert torch.equal(_sample(f, cond, None, 3.0), unconditional)             # no map: no guidance
    s3 = _sample(f, cond, bev, 3.0)
    assert (s3 - conditional).abs().max() > 1e-4        # s = 3 extrapolates away from the conditional sample


def _sample(f, cond, bev, s):
    gens = [torch.Generator().manual_seed(v) for v in (0, 1)]
    return sample_level(f, (2, 4, 16, 16), cond, make_scheduler("ddim"), 3, gens, condition=bev, guidance_scale=s)


def test_trajectory_in_g_is_sampled_with_g_and_split_off():
    cfg = GDenoiserConfig(g_dim=8, width=16, num_blocks=1, trajectory_in_g=True, trajectory_frames=3,
                          trajectory_mean=(1.0, 0.0, 0.0), trajectory_std=(2.0, 0.5, 0.1))
    g = GDenoiser(cfg)
    assert g.latent_shape == (8,) and g.sample_shape == (17,)
    x = torch.arange(17.0).reshape(1, 17)
    g0, tau = split_g_trajectory(cfg, x)
    assert torch.equal(g0, x[:, :8]) and tau.shape == (1, 3, 3)
    torch.testing.assert_close(tau[0, 0], torch.tensor([8 * 2.0 + 1.0, 9 * 0.5, 10 * 0.1]))


# ============================================================================================ the generator
def test_generate_with_a_map_and_the_trajectory(tiny_conditional_generator, tiny_generator, tmp_path):
    gen = tiny_conditional_generator
    assert gen.conditional and gen.bev_grid_yx == (32, 32) and not tiny_generator.conditional
    road = np.full((32, 32), 1, np.uint8)
    road[:, :8] = 3
    bev = BEVMap.from_tags(road)
    a = gen.generate(2, seed=3, steps=2, bev=bev, guidance_scale=2.0)
    b = gen.generate(2, seed=3, steps=2, bev=[bev, BEVMap.from_tags(np.full((32, 32), 9, np.uint8))], guidance_scale=2.0)
    u = gen.generate(1, seed=3, steps=2)
    torch.testing.assert_close(a[0].field.density, b[0].field.density)            # scene 0 got the same map
    assert (a[1].field.density - b[1].field.density).abs().max() > 0              # scene 1 another one
    assert (a[0].field.density - u[0].field.density).abs().max() > 0              # and the map matters
    arr = gen.generate(1, seed=3, steps=2, bev=road, guidance_scale=2.0)[0]         # a [Y, X] array is a map too
    torch.testing.assert_close(arr.field.density, a[0].field.density)
    assert a[0].trajectory.shape == (2, 3) and a[0].trajectory.dtype == np.float32
    loaded = NeuralScene.load(a[0].save(tmp_path / "s"))
    np.testing.assert_allclose(loaded.trajectory, a[0].trajectory, atol=1e-5)
    assert "trajectory" in json.loads((tmp_path / "s" / "scene.json").read_text())
    plain = tiny_generator.generate(1, seed=0, steps=1)[0]
    assert plain.trajectory is None and NeuralScene.load(plain.save(tmp_path / "p")).trajectory is None


def test_generate_bev_errors_come_before_sampling(tiny_conditional_generator, tiny_generator):
    gen = tiny_conditional_generator
    ok = np.ones((32, 32), np.uint8)
    with pytest.raises(GenerateArgumentError, match="not BEV-conditioned"):
        tiny_generator.generate(1, bev=ok)
    with pytest.raises(GenerateArgumentError, match="16×16 cells but the bundle's maps are 32×32"):
        gen.generate(1, bev=np.ones((16, 16), np.uint8))
    with pytest.raises(GenerateArgumentError, match=r"bev\[0\].*200"):
        gen.generate(1, bev=np.full((32, 32), 200, np.uint8))
    with pytest.raises(GenerateArgumentError, match="list of 1 maps for num_scenes=2"):
        gen.generate(2, bev=[ok])
    with pytest.raises(GenerateArgumentError, match="covers"):
        gen.generate(1, bev=BEVMap.from_tags(ok, ((0, 0), (10, 10))))
    with pytest.raises(GenerateArgumentError, match="guidance_scale"):
        gen.generate(1, bev=ok, guidance_scale=float("nan"))


def test_nfldm_generate_bev_cli(tiny_conditional_bundle, tiny_bundle, tmp_path):
    from nfldm_sdk.cli.generate import generate

    road = np.full((32, 32), 1, np.uint8)
    path = BEVMap.from_tags(road).save(tmp_path / "map.png")
    runner = CliRunner()
    args = ["--num", "1", "--steps", "1", "--no-preview", "--device", "cpu", "--bev", str(path)]
    res = runner.invoke(generate, ["--model", str(tiny_conditional_bundle), "--out", str(tmp_path / "o"), *args,
                                   "--guidance-scale", "1.5"])
    assert res.exit_code == 0, res.output
    scene = json.loads((tmp_path / "o" / "scene_000000" / "scene.json").read_text())
    assert len(scene["trajectory"]) == 2
    res = runner.invoke(generate, ["--model", str(tiny_bundle), "--out", str(tmp_path / "u"), *args])
    assert res.exit_code != 0 and "not BEV-conditioned" in str(res.exception or res.output)


def test_class_fractions_pool_the_one_hot_and_are_zero_where_dropped():
    from nfldm_sdk.models.bev_condition import BEV_CHANNELS, bev_class_fractions
    tags = torch.full((2, 4, 4), 1, dtype=torch.uint8)          # road everywhere ...
    tags[:, :2, :2] = 11                                        # ... but a 2x2 block of sky in one corner
    tags[1, 3, 3] = 255                                         # one unobserved cell
    frac = bev_class_fractions(tags, torch.tensor([False, True]), 2, (2, 2), torch.float32, "cpu")
    lut = bev_class_lut()
    assert frac.shape == (2, BEV_CHANNELS, 2, 2)
    torch.testing.assert_close(frac[0].sum(0), torch.ones(2, 2))
    assert frac[0, lut[11], 0, 0] == 1 and frac[0, lut[1], 0, 0] == 0 and frac[0, lut[1], 1, 1] == 1
    assert frac[1].abs().sum() == 0                              # dropped: zeros, which no map produces
    up = bev_class_fractions(tags[:1], None, 1, (8, 8), torch.float32, "cpu")
    assert up[0, lut[11], :4, :4].min() == 1 and up[0, lut[1], 4:, 4:].min() == 1
    assert bev_class_fractions(None, None, 3, (2, 2), torch.float32, "cpu").abs().sum() == 0
    with pytest.raises(ValueError, match="multiple"):
        bev_class_fractions(tags, None, 2, (3, 3), torch.float32, "cpu")


def test_the_spatial_path_puts_the_map_where_it_is():
    """With ``bev_spatial`` and no cross-attention reach (a one-level U-Net has only the middle's), changing the map
    in one corner changes ψ_f's output near that corner far more than in the opposite one."""
    torch.manual_seed(0)
    kw = {**F_KW, "widths": (8,)}
    f = FDenoiser(FDenoiserConfig(**kw, **BEV_KW, bev_spatial=True)).eval()
    plain = FDenoiser(FDenoiserConfig(**kw, **BEV_KW))
    assert f.unet.conv_in.in_channels == plain.unet.conv_in.in_channels + 14
    for p in f.parameters():                                    # the middle's cross-attention reads nothing local
        p.data.copy_(torch.randn_like(p) * 0.3) if p.dim() > 1 else None
    gen = torch.Generator().manual_seed(1)
    f_t, t, g0, c0 = torch.randn(1, 4, 16, 16, generator=gen), torch.tensor([5]), torch.randn(1, 16), torch.randn(1, 4, 4, 8, 8)
    a = torch.ones(1, 16, 16, dtype=torch.uint8)
    b = a.clone()
    b[:, :3, :3] = 9                                            # vegetation in the corner (y, x) < 3
    with torch.no_grad():
        d = (f(f_t, t, g0, c0, bev=a) - f(f_t, t, g0, c0, bev=b)).abs().sum(1)[0]
        dropped = f(f_t, t, g0, c0, bev=a, bev_drop=torch.tensor([True])) - f(f_t, t, g0, c0, bev=b, bev_drop=torch.tensor([True]))
    assert d[:4, :4].mean() > 10 * d[10:, 10:].mean()
    assert dropped.abs().max() == 0
