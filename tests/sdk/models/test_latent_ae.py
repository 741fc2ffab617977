"""Stage 2: vector quantiser, latent voxel auto-encoder, its Lightning training and `nfldm encode-latents`.

Unit tests use small synthetic voxel fields (a ground slab plus boxes with per-object features: compressible,
like real scenes); the integration test runs the real chain on the tiny procedural capture: stage-1 model ->
encode-voxels -> train latent-ae (Lightning, CPU) -> encode-latents.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.models.latent_ae import LatentAEConfig, Latents, LatentStats, LatentAutoEncoder
from nfldm_sdk.models.layout import fold_z, unfold_z
from nfldm_sdk.models.vq import (VectorQuantizer, code_statistics, ema_codebook_update, nearest_codes,
                                 revive_dead_codes)

TINY = dict(grid_shape=(8, 32, 32), feature_channels=8, g_dim=16, coarse_codebook_size=64, fine_codebook_size=64,
            dead_code_steps=20, g_encoder_widths=(16, 32, 32), c_encoder_widths=(16, 32, 32), f_encoder_width=16,
            f_encoder_blocks=1, decoder_widths=(32, 32, 16), blocks_per_stage=1)


def synthetic_fields(n: int, config: LatentAEConfig, seed: int = 0) -> VoxelField:
    """`n` scenes: a ground slab (σ = 4 /m at z index 1) and 3 boxes (σ = 3 /m) with one feature vector per object."""
    g = torch.Generator().manual_seed(seed)
    Z, Y, X = config.grid_shape
    C = config.feature_channels
    density = torch.zeros(n, Z, Y, X)
    features = torch.zeros(n, C, Z, Y, X)
    for s in range(n):
        density[s, 1] = 4.0
        features[s, :, 1] = torch.randn(C, 1, 1, generator=g)
        for _ in range(3):
            y0, x0 = (int(v) for v in torch.randint(0, Y - 8, (2,), generator=g))
            h, w, top = (int(v) for v in torch.randint(3, 8, (3,), generator=g))
            top = min(Z, 2 + top % (Z - 2))
            density[s, 2:top, y0:y0 + h, x0:x0 + w] = 3.0
            features[s, :, 2:top, y0:y0 + h, x0:x0 + w] = torch.randn(C, 1, 1, 1, generator=g)
    return VoxelField(density, features, config.bounds_tensor())


def tiny_config(**overrides) -> LatentAEConfig:
    return LatentAEConfig(**{**TINY, **overrides})


def voxel_l1(a: VoxelField, b: VoxelField) -> float:
    return float((a.density - b.density).abs().mean() + (a.features - b.features).abs().mean())


def train_steps(model: LatentAutoEncoder, field: VoxelField, steps: int, lr: float = 3e-3) -> list[float]:
    """Plain AdamW on the voxel loss + KL + VQ terms; returns the voxel L1 of every step."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    errors = []
    for _ in range(steps):
        out = model(field)
        err = (out.field.density - field.density).abs().mean() + (out.field.features - field.features).abs().mean()
        loss = err + model.config.kl_weight * out.kl + out.vq_loss_c + out.vq_loss_f
        opt.zero_grad()
        loss.backward()
        opt.step()
        errors.append(float(err.detach()))
    return errors


# ------------------------------------------------------------------------------------------------ VQ core
def test_nearest_codes_and_code_statistics_known_values():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    z = torch.tensor([[0.1, -0.1], [0.9, 0.2], [0.2, 0.7], [-3.0, -3.0], [1.0, 0.1]])
    assert nearest_codes(z, codebook).tolist() == [0, 1, 2, 0, 1]
    usage, perplexity = code_statistics(torch.tensor([2.0, 2.0, 0.0, 0.0]))
    assert float(usage) == 0.5 and float(perplexity) == pytest.approx(2.0)     # two equally used codes: exp(ln 2)
    usage, perplexity = code_statistics(torch.tensor([7.0, 0.0, 0.0]))
    assert float(usage) == pytest.approx(1 / 3) and float(perplexity) == pytest.approx(1.0)


def test_ema_update_with_no_memory_is_the_cluster_mean():
    # decay 0: the new codebook is the mean of the vectors assigned to each code (up to the tiny Laplace smoothing).
    counts = torch.tensor([2.0, 1.0, 1.0])
    sums = torch.tensor([[2.0, 4.0], [3.0, 3.0], [-1.0, 0.5]])
    cs, es, cb = ema_codebook_update(torch.ones(3), torch.zeros(3, 2), counts, sums, decay=0.0, eps=1e-9)
    assert torch.allclose(cs, counts) and torch.allclose(es, sums)
    assert torch.allclose(cb, torch.tensor([[1.0, 2.0], [3.0, 3.0], [-1.0, 0.5]]), atol=1e-6)


def test_revive_dead_codes_replaces_only_dead_codes_with_batch_vectors():
    codebook = torch.full((4, 3), 100.0)
    z = torch.randn(10, 3, generator=torch.Generator().manual_seed(1))
    dead = torch.tensor([True, False, True, False])
    new = revive_dead_codes(codebook, dead, z, generator=torch.Generator().manual_seed(0))
    assert torch.equal(new[~dead], codebook[~dead])
    for row in new[dead]:
        assert (z - row).abs().sum(1).min() == 0                               # an actual batch vector


@pytest.mark.parametrize("update", ["ema", "loss"])
def test_vq_straight_through_gradient_is_identity(update):
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 4, beta=0.25, update=update)
    z = torch.randn(2, 4, 3, 5, requires_grad=True)
    codebook = vq.codebook.detach().clone()                                   # a training call updates it (EMA)
    out = vq(z)
    assert out.z_q.shape == z.shape and out.indices.shape == (2, 3, 5)
    assert torch.allclose(out.z_q, codebook[out.indices].movedim(-1, 1), atol=1e-6)  # values are the codes
    w = torch.randn_like(z)
    (out.z_q * w).sum().backward()
    assert torch.allclose(z.grad, w)                                          # d z_q / d z = identity
    if update == "loss":
        z.grad = None
        vq.zero_grad()
        vq(z).loss.backward()                                                  # codebook term trains the codebook
        assert vq.codebook.grad is not None and vq.codebook.grad.abs().sum() > 0


def _far_codebook(vq: VectorQuantizer, offset: float = 50.0) -> None:
    """Move every code far from data of unit scale (EMA state kept consistent)."""
    with torch.no_grad():
        vq.codebook.copy_(offset + 0.01 * torch.randn_like(vq.codebook))
        if vq.update == "ema":
            vq.embed_sum.copy_(vq.codebook)
            vq.cluster_size.fill_(1.0)


def test_dead_code_revival_raises_usage_of_a_far_codebook():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(16, 4, generator=g) * 3.0
    data = lambda: (centres[torch.randint(0, 16, (512,), generator=g)] + 0.1 * torch.randn(512, 4, generator=g)).T[None]  # noqa: E731
    usage = {}
    for steps in (0, 3):
        torch.manual_seed(0)
        vq = VectorQuantizer(32, 4, dead_code_steps=steps, decay=0.9).train()
        _far_codebook(vq)
        first = float(vq(data()).usage)
        for _ in range(30):
            last = vq(data())
        usage[steps] = (first, float(last.usage), float(last.perplexity))
    assert usage[0][0] == pytest.approx(1 / 32) and usage[3][0] == pytest.approx(1 / 32)  # one code takes everything
    assert usage[0][1] == pytest.approx(1 / 32)                                # without revival it stays so
    assert usage[3][1] >= 0.4 and usage[3][2] >= 8.0                            # revived codes cover the 16 clusters


def test_vq_eval_mode_never_changes_the_codebook():
    vq = VectorQuantizer(8, 4).eval()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(torch.randn(2, 4, 6))
    assert all(torch.equal(before[k], v) for k, v in vq.state_dict().items())


# ------------------------------------------------------------------------------------------------ LAE
def test_paper_latent_shapes_and_tiny_small_forward_shapes():
    from nfldm_training.configs.latent import LATENT_PRESETS

    paper = LATENT_PRESETS["paper"].latent_ae
    assert paper.grid_shape == (32, 128, 128)
    assert paper.g_shape == (128,) and paper.c_shape == (4, 16, 32, 32) and paper.f_shape == (4, 128, 128)
    model = LatentAutoEncoder(paper)   # built (48 M parameters), not run: a CPU forward at 128x128x32 is too slow for CI
    assert model.encoder_c.head[-1].out_channels == 4 * 16                    # 4 channels x Zc folded
    assert model.encoder_f.head[-1].out_channels == 4
    assert model.decoder.conv_out.out_channels == (1 + 32) * 32               # (1 + C) x Z folded
    assert model.encoder_g.head.out_features == 2 * 128
    for name in ("tiny", "small"):
        cfg = LATENT_PRESETS[name].latent_ae
        model = LatentAutoEncoder(cfg).eval()
        field = synthetic_fields(1, cfg)
        with torch.no_grad():
            out = model(field, sample_g=False)
        Z, Y, X = cfg.grid_shape
        dz, dxy = cfg.coarse_downsample_z, cfg.coarse_downsample_xy
        assert out.latents.g.shape == (1, cfg.g_dim)
        assert out.latents.c.shape == (1, 4, Z // dz, Y // dxy, X // dxy)
        assert out.latents.f.shape == (1, 4, Y, X)
        assert out.field.density.shape == (1, Z, Y, X) and out.field.features.shape == (1, cfg.feature_channels, Z, Y, X)
        assert bool((out.field.density >= 0).all())
        assert torch.allclose(out.field.bounds[0], cfg.bounds_tensor())
    tiny = LATENT_PRESETS["tiny"].latent_ae
    assert tiny.g_shape == (16,) and tiny.c_shape == (4, 4, 8, 8) and tiny.f_shape == (4, 32, 32)


def test_fold_z_is_channel_major_and_inverts():
    x = torch.arange(2 * 3 * 4 * 1 * 1.0).reshape(2, 3, 4, 1, 1)
    folded = fold_z(x)
    assert folded.shape == (2, 12, 1, 1)
    assert folded[1, 2 * 4 + 3, 0, 0] == x[1, 2, 3, 0, 0]                     # channel k*Z + z
    assert torch.equal(unfold_z(folded, 3), x)


def test_save_load_round_trip_keeps_outputs_codebooks_and_stats(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config()
    model = LatentAutoEncoder(cfg)
    field = synthetic_fields(2, cfg)
    train_steps(model, field, 2)                                               # EMA buffers move away from their init
    model.config.latent_stats = LatentStats(g_mean=0.5, g_std=2.0, c_mean=(1.0, 2.0, 3.0, 4.0), num_scenes=7)
    model.eval()
    model.save_pretrained(tmp_path / "lae")
    again = LatentAutoEncoder.from_pretrained(tmp_path / "lae")
    assert again.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k
    z1, z2 = model.encode(field), again.encode(field)
    assert torch.equal(z1.g, z2.g) and torch.equal(z1.c, z2.c) and torch.equal(z1.f, z2.f)
    assert torch.equal(model.decode(z1).density, again.decode(z2).density)
    saved = json.loads((tmp_path / "lae" / "config.json").read_text())
    assert saved["latent_stats"]["c_mean"] == [1.0, 2.0, 3.0, 4.0]


def test_encode_is_quantised_deterministic_and_decode_checks_shapes():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = LatentAutoEncoder(cfg).eval()
    field = synthetic_fields(2, cfg)
    z = model.encode(field)
    assert torch.equal(z.g, model.encode(field).g)
    # c and f are codebook vectors: snapping them again changes nothing
    assert torch.allclose(model.vq_c.quantize(z.c), z.c) and torch.allclose(model.vq_f.quantize(z.f), z.f)
    out = model(field, sample_g=False)
    assert torch.allclose(out.field.density, model.decode(z).density, atol=1e-5)
    snapped = model.decode(Latents(z.g, z.c + 1e-3, z.f - 1e-3), snap_to_codebook=True)
    assert torch.allclose(snapped.density, model.decode(z).density, atol=1e-5)
    with pytest.raises(ValueError, match="latent c"):
        model.decode(Latents(z.g, z.c[:, :, :2], z.f))
    with pytest.raises(ValueError, match="batched VoxelField"):
        model.encode(field[0])
    moved = VoxelField(field.density, field.features, field.bounds + 1.0)
    with pytest.raises(ValueError, match="box"):
        model.encode(moved)


def test_lae_gradients_reach_all_encoders_through_the_quantisers():
    torch.manual_seed(0)
    cfg = tiny_config()
    model = LatentAutoEncoder(cfg).train()
    field = synthetic_fields(2, cfg)
    # g's conditioning layers start at zero (an untrained block is plain GroupNorm), so g gets a gradient from the
    # reconstruction only after one optimisation step has made them non-zero.
    train_steps(model, field, 1)
    model.zero_grad()
    out = model(field)
    (out.field.density.mean() + out.field.features.square().mean()).backward()  # reconstruction only, no VQ loss
    for name in ("encoder_g", "encoder_c", "encoder_f", "decoder"):
        grad = sum(float(p.grad.abs().sum()) for p in getattr(model, name).parameters() if p.grad is not None)
        assert grad > 0, f"no gradient reached {name}"


def test_lae_reconstruction_error_falls_and_codebook_usage_recovers_from_far_init():
    torch.manual_seed(0)
    cfg = tiny_config(dead_code_steps=3)
    model = LatentAutoEncoder(cfg)
    _far_codebook(model.vq_c)
    _far_codebook(model.vq_f)
    field = synthetic_fields(2, cfg)
    with torch.no_grad():
        start = model.train()(field)
    assert float(start.usage_c) <= 2 / 64 and float(start.usage_f) <= 2 / 64  # far codebook: (almost) one code used
    errors = train_steps(model, field, 16)
    with torch.no_grad():
        out = model.train()(field)
    assert float(out.usage_c) >= 0.3 and float(out.usage_f) >= 0.3, (float(out.usage_c), float(out.usage_f))
    assert min(errors[-4:]) < 0.6 * errors[0], errors                           # measured: ~0.25


# ------------------------------------------------------------------------------------------------ stats
def test_latent_stats_accumulator_matches_numpy_and_normalize_inverts():
    from nfldm_training.encoding.latents import LatentStatsAccumulator

    rng = np.random.default_rng(0)
    g = rng.normal(3.0, 2.0, (7, 5)).astype(np.float32)
    c = (rng.normal(0, 1, (7, 4, 2, 3, 3)) * np.array([1, 2, 3, 4])[None, :, None, None, None] + 10).astype(np.float32)
    f = rng.normal(-1.0, 0.5, (7, 4, 6, 6)).astype(np.float32)
    acc = LatentStatsAccumulator(4, 4)
    for i, j in ((0, 3), (3, 4), (4, 7)):                                       # uneven batches merge exactly
        acc.update(g[i:j], c[i:j], f[i:j])
    s = acc.stats()
    assert s.num_scenes == 7
    assert s.g_mean == pytest.approx(float(g.astype(np.float64).mean()), rel=1e-12)
    assert s.g_std == pytest.approx(float(g.astype(np.float64).std()), rel=1e-12)
    np.testing.assert_allclose(s.c_mean, c.astype(np.float64).mean((0, 2, 3, 4)), rtol=1e-12)
    np.testing.assert_allclose(s.c_std, c.astype(np.float64).std((0, 2, 3, 4)), rtol=1e-10)
    np.testing.assert_allclose(s.f_std, f.astype(np.float64).std((0, 2, 3)), rtol=1e-10)
    z = Latents(torch.from_numpy(g), torch.from_numpy(c), torch.from_numpy(f))
    n = s.normalize(z)
    assert abs(float(n.c.double().mean())) < 1e-5 and float(n.c[:, 3].double().std(unbiased=False)) == pytest.approx(1.0, rel=1e-4)
    back = s.denormalize(n)
    assert torch.allclose(back.c, z.c, atol=1e-4) and torch.allclose(back.g, z.g, atol=1e-5)


# ------------------------------------------------------------------------------------------------ voxel loss
def test_density_space_is_log_of_sigma_plus_eps_and_linear_at_zero():
    from nfldm_training.modules.latent_ae import density_space

    sigma = torch.tensor([0.0, 1e-3, 2.0])
    assert torch.equal(density_space(sigma, 0.0), sigma)
    torch.testing.assert_close(density_space(sigma, 1e-3), torch.tensor([math.log(1e-3), math.log(2e-3), math.log(2.001)]))
    with pytest.raises(ValueError, match="density_log_eps"):
        density_space(sigma, -1.0)


def test_voxel_errors_known_values_log_l2_density_and_l1_features():
    """One surface voxel of σ = 2 /m missed (σ̂ = 0) among 4, features off by 0.5 in one of 8 entries."""
    from nfldm_training.modules.latent_ae import voxel_errors

    bounds = torch.tensor([[[0.0, 0.0, 0.0], [4.0, 1.0, 1.0]]])
    target = VoxelField(torch.tensor([0.0, 0.0, 0.0, 2.0]).reshape(1, 1, 1, 4), torch.zeros(1, 2, 1, 1, 4), bounds)
    pred_features = torch.zeros(1, 2, 1, 1, 4)
    pred_features[0, 1, 0, 0, 3] = 0.5
    pred = VoxelField(torch.zeros(1, 1, 1, 4), pred_features, bounds)
    err = voxel_errors(pred, target, "l1", density_log_eps=1e-3, density_kind="l2")
    assert float(err.density) == pytest.approx(math.log(2.001 / 1e-3) ** 2 / 4, rel=1e-5)          # 14.45
    assert float(err.features) == pytest.approx(0.5 / 8, rel=1e-6)
    lin = voxel_errors(pred, target, "l1")                                    # the old loss: σ itself, L1
    assert float(lin.density) == pytest.approx(2.0 / 4, rel=1e-6)
    with pytest.raises(ValueError, match="unknown voxel loss"):
        voxel_errors(pred, target, "l1", density_kind="huber")


def test_log_density_loss_gradient_does_not_vanish_through_softplus():
    """Why the density is compared in log space: at a decoded σ̂ = softplus(−7) ≈ 9e−4 /m where the target has a
    surface (2 /m), the gradient on the logit of the linear L1 loss is −sigmoid(−7) ≈ −9e−4 (the LAE cannot grow the
    surface back), that of the log-L2 loss (ε = 1e−3) ≈ 2·log((σ̂+ε)/(2+ε))·sigmoid(−7)/(σ̂+ε) ≈ −6.6."""
    from nfldm_training.modules.latent_ae import voxel_errors

    bounds = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    target = VoxelField(torch.full((1, 1, 1, 1), 2.0), torch.zeros(1, 1, 1, 1, 1), bounds)
    grads = {}
    for name, kw in (("linear", {"kind": "l1"}), ("log", {"kind": "l1", "density_log_eps": 1e-3, "density_kind": "l2"})):
        raw = torch.full((1, 1, 1, 1), -7.0, requires_grad=True)
        pred = VoxelField(torch.nn.functional.softplus(raw), torch.zeros(1, 1, 1, 1, 1), bounds)
        voxel_errors(pred, target, **kw).density.backward()
        grads[name] = float(raw.grad)
    s, sig = math.log1p(math.exp(-7.0)), 1.0 / (1.0 + math.exp(7.0))
    assert grads["linear"] == pytest.approx(-sig, rel=1e-4)
    assert grads["log"] == pytest.approx(2.0 * math.log((s + 1e-3) / 2.001) * sig / (s + 1e-3), rel=1e-4)
    assert grads["log"] < -6.0 and abs(grads["linear"]) < 1e-3


def test_default_lae_training_uses_the_log_l2_density_loss():
    from nfldm_training.configs.presets import PRESETS
    from nfldm_training.configs.sections import LatentAETrainConfig

    assert (LatentAETrainConfig().density_log_eps, LatentAETrainConfig().density_loss) == (1e-3, "l2")
    for name, preset in PRESETS.items():
        assert (preset.latent_ae_train.density_log_eps, preset.latent_ae_train.density_loss) == (1e-3, "l2"), name


# ------------------------------------------------------------------------------------------------ integration
@pytest.fixture(scope="module")
def stage2(tiny_capture, tmp_path_factory):
    """Real chain on the tiny capture: stage-1 model (untrained, a valid frozen renderer) -> encode-voxels ->
    `nfldm train latent-ae` (tiny preset, 12 steps + 2 resumed, Lightning on CPU) -> `nfldm encode-latents`."""
    from click.testing import CliRunner

    from nfldm_sdk.models.scene_ae import SceneAutoEncoder
    from nfldm_training.cli.latent import encode_latents, train_latent_ae
    from nfldm_training.configs.presets import get_preset
    from nfldm_training.encoding.voxels import encode_voxels

    root = tmp_path_factory.mktemp("stage2")
    torch.manual_seed(0)
    scene_ae = SceneAutoEncoder(get_preset("tiny").scene_ae)
    scene_ae.save_pretrained(root / "ae" / "model")
    encode_voxels(scene_ae, [tiny_capture], root / "voxels.zarr", window=2, stride=2, batch_size=4, progress=False,
                  log=lambda m: None)
    runner = CliRunner()
    common = ["--voxels", str(root / "voxels.zarr"), "--scene-ae", str(root / "ae"), "--data", tiny_capture,
              "--preset", "tiny", "--out", str(root / "lae"), "--accelerator", "cpu", "--devices", "1", "--no-progress",
              # validate before and after only, on 2 scenes; render 2 of the 12 views per training step
              "--set", "latent_ae_train.val_interval=1000", "--set", "latent_ae_train.val_batches=1",
              "--set", "latent_ae_train.render_views=2"]
    train = runner.invoke(train_latent_ae, [*common, "--max-steps", "12"], catch_exceptions=False)
    assert train.exit_code == 0, train.output
    resumed = runner.invoke(train_latent_ae, [*common, "--max-steps", "14"], catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.output
    enc = runner.invoke(encode_latents, ["--model", str(root / "lae"), "--voxels", str(root / "voxels.zarr"),
                                         "--out", str(root / "latents.zarr"), "--device", "cpu", "--no-progress"],
                        catch_exceptions=False)
    assert enc.exit_code == 0, enc.output
    return dict(root=root, capture=tiny_capture, train_output=train.output, resumed_output=resumed.output)


def test_latent_dataset_pairs_every_voxel_scene_with_its_window(stage2):
    from nfldm_training.data.latent_scenes import LatentSceneDataset
    from nfldm_training.stores.voxel_store import VoxelStore

    vs = VoxelStore(stage2["root"] / "voxels.zarr")
    ds = LatentSceneDataset(stage2["root"] / "voxels.zarr", None, split="all")
    assert len(ds) == len(vs) == 8                                              # 2 episodes x 4 windows (8 frames, stride 2)
    ids = vs.ids()
    for i in (0, 5):
        item = ds[i]
        assert item.scene == ds.pairs[i][0]
        assert (0, item.window.episode, item.window.anchor) == tuple(ids[item.scene])
        assert torch.equal(item.field.density, vs.field(item.scene).density)
        assert item.window.images.shape == (12, 3, 64, 64)                       # 2 frames x 6 cameras
    train, val = (LatentSceneDataset(stage2["root"] / "voxels.zarr", None, split=s) for s in ("train", "val"))
    assert len(train) + len(val) == 8 and len(val) > 0
    assert not {p[0] for p in train.pairs} & {p[0] for p in val.pairs}


def test_train_latent_ae_reduces_voxel_error_and_resumes(stage2):
    run = stage2["root"] / "lae"
    metrics = json.loads((run / "metrics.json").read_text())
    u, f = metrics["untrained"], metrics["final"]
    assert metrics["global_step"] == 14 and "resuming from" in stage2["resumed_output"]
    assert f["density_error"] + f["feature_error"] < 0.7 * (u["density_error"] + u["feature_error"]), (u, f)
    assert f["psnr_render"] > u["psnr_render"], (u, f)
    assert 0 < f["usage_c"] <= 1 and 0 < f["usage_f"] <= 1
    assert all(math.isfinite(f[k]) for k in ("psnr_images", "psnr_stage1"))
    model = LatentAutoEncoder.from_pretrained(run / "model")
    assert model.config.grid_shape == (8, 32, 32) and model.config.c_shape == (4, 4, 8, 8)
    assert (run / "checkpoints" / "last.ckpt").is_file() and list((run / "val_images").glob("*.png"))


def test_encode_latents_decode_matches_model_and_stats_match_numpy(stage2):
    from nfldm_training.stores.latent_store import LatentStore
    from nfldm_training.stores.voxel_store import VoxelStore

    root = stage2["root"]
    store = LatentStore(root / "latents.zarr")
    vs = VoxelStore(root / "voxels.zarr")
    model = LatentAutoEncoder.from_pretrained(root / "lae" / "model")
    assert len(store) == len(vs) == 8
    np.testing.assert_array_equal(store.ids(), vs.ids())
    written = store.latents()
    fields = vs.fields()
    with torch.no_grad():
        z = model.encode(fields)
        assert torch.allclose(written.g, z.g, atol=1e-5) and torch.equal(written.c, z.c) and torch.equal(written.f, z.f)
        ref = model.decode(z)
        dec = model.decode(written)
    assert torch.allclose(dec.density, ref.density, atol=1e-5) and torch.allclose(dec.features, ref.features, atol=1e-5)
    # statistics: equal to numpy's over the written arrays, in the store and in the model's config.json
    g = np.asarray(store.group["g"][:], np.float64)
    c = np.asarray(store.group["c"][:], np.float64)
    f = np.asarray(store.group["f"][:], np.float64)
    s = store.stats
    assert s.num_scenes == 8
    assert s.g_mean == pytest.approx(g.mean(), rel=1e-9, abs=1e-12) and s.g_std == pytest.approx(g.std(), rel=1e-9)
    np.testing.assert_allclose(s.c_mean, c.mean((0, 2, 3, 4)), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(s.c_std, c.std((0, 2, 3, 4)), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(s.f_mean, f.mean((0, 2, 3)), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(s.f_std, f.std((0, 2, 3)), rtol=1e-9, atol=1e-12)
    assert model.config.latent_stats == s

