"""Stage 4: SDS refinement with negative guidance, the guidance models, the prior's training and the refine CLI."""
from __future__ import annotations

import json
import math
import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from nfldm_sdk.cameras.builders import horizontal_cam_to_world, sample_sds_cameras
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.guidance.base import (GuidanceModel, GuidanceNotAvailable, cfg_eps, eps_from_prediction, guided_noise,
                                     negative_guidance_eps)
from nfldm_sdk.guidance.prior import PriorGuidance
from nfldm_sdk.guidance.sds import RefineConfig, refine_scene
from nfldm_sdk.models.prior_unet import PRIOR_CLASSES, PriorConfig, PriorUNet
from nfldm_sdk.models.scene_ae import SceneAEConfig, SceneAutoEncoder
from nfldm_sdk.rendering.api import render_field

pytestmark = pytest.mark.usefixtures("one_thread_module")

BOX = torch.tensor([[-6.0, -6.0, -1.0], [6.0, 6.0, 3.0]])
TINY_PRIOR = PriorConfig(image_size=(16, 16), block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                         up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8, norm_num_groups=4)
TINY_AE = SceneAEConfig(image_size=(16, 16), downsample=4, depth_bins=4, near=0.2, far=12.0, feature_channels=4,
                        grid_shape=(4, 16, 16), bounds=tuple(map(tuple, BOX.tolist())), render_samples=16,
                        encoder_widths=(8, 8, 8), decoder_widths=(8, 8, 8))


def _alphas_cumprod(T: int = 1000) -> torch.Tensor:
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=T).alphas_cumprod.float()


def _gauss_eps(x_t, a, mu, s2):
    """MMSE ε̂ for data x0 ~ N(mu, s2 I): x_t ~ N(√ᾱ mu, (ᾱ s2 + 1 − ᾱ) I), ε̂ = √(1−ᾱ)(x_t − √ᾱ mu)/(ᾱ s2 + 1 − ᾱ)."""
    return (1 - a).sqrt() * (x_t - a.sqrt() * mu) / (a * s2 + 1 - a)


class GaussianGuidance(torch.nn.Module):
    """A `GuidanceModel` whose data under condition c is per-pixel N(μ_c, s² I) in pixel "latents" 2·image − 1, so
    its optimal ε̂ is known in closed form (`_gauss_eps`). Conditions are the per-channel means μ_c ``[3]``."""

    def __init__(self, rgb_means: dict[str, tuple[float, float, float]], s: float = 0.1, size=(16, 16), nan_at_call=None):
        super().__init__()
        self.register_buffer("alphas_cumprod", _alphas_cumprod())
        self.num_train_timesteps, self.image_size, self.s2 = 1000, size, s * s
        self.means = {k: torch.tensor(v) * 2.0 - 1.0 for k, v in rgb_means.items()}
        self.calls, self.nan_at_call = 0, nan_at_call

    dataset_condition = property(lambda self: self.means["dataset"])
    artifact_condition = property(lambda self: self.means["artifact"])
    null_condition = property(lambda self: self.means["null"])

    def encode(self, images):
        return F.interpolate(images, size=self.image_size, mode="bilinear", antialias=True) * 2.0 - 1.0

    def predict_noise(self, x_t, t, cond):
        eps = _gauss_eps(x_t, self.alphas_cumprod[t].reshape(-1, 1, 1, 1), cond.reshape(-1, 3, 1, 1), self.s2)
        self.calls += 1
        if self.calls == self.nan_at_call:
            eps = eps.clone()
            eps[0, 0, 0, 0] = float("nan")
        return eps


class ColourDecoder:
    """The renderer r(V, κ) of the analytic tests: volume-rendered features, colour = sigmoid of the first three
    channels — every colour is reachable, so SDS's fixed point is exactly the guided target."""

    config = SimpleNamespace(image_size=(16, 16))

    def decode(self, field, cameras):
        out = render_field(field, cameras, n_samples=16, near=0.1, far=12.0)
        return SimpleNamespace(rgb=torch.sigmoid(out.features[:, :, :3]))


def _colour_field(seed=1):
    g = torch.Generator().manual_seed(seed)
    return VoxelField(torch.full((4, 16, 16), 0.5), torch.randn(4, 4, 16, 16, generator=g) * 0.3, BOX)


def _mean_colour(decoder, field):
    cams = sample_sds_cameras((1, 8), 16, 16, torch.Generator().manual_seed(99))
    with torch.no_grad():
        return decoder.decode(VoxelField.stack([field]), cams).rgb.mean(dim=(0, 1, 3, 4))


RGB = {"dataset": (0.75, 0.35, 0.6), "artifact": (0.45, 0.55, 0.4), "null": (0.6, 0.45, 0.5)}


# ============================================================================================ the formula
@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 3.5])
@pytest.mark.parametrize("t", [20, 200, 700])
def test_negative_guidance_is_the_noise_of_the_tempered_product(alpha, t):
    """ε̂ = ε(y′) + α(ε(y) − ε(y′)) equals −σ_t ∇ log [p_t(x|y)^α / p_t(x|y′)^(α−1)] — autograd scores of Gaussians
    with different means and variances — and NOT the score of the literal p^α / p′."""
    a = _alphas_cumprod()[t].double()
    g = torch.Generator().manual_seed(t)
    mu_y, mu_a = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    s2_y, s2_a = 0.3, 1.7
    x = torch.randn(5, generator=g, dtype=torch.float64).requires_grad_(True)

    def log_p(mu, s2):
        return torch.distributions.Normal(a.sqrt() * mu, (a * s2 + 1 - a).sqrt()).log_prob(x).sum()

    sigma = (1 - a).sqrt()
    score = torch.autograd.grad(alpha * log_p(mu_y, s2_y) - (alpha - 1) * log_p(mu_a, s2_a), x)[0]
    eps_y, eps_a = _gauss_eps(x.detach(), a, mu_y, s2_y), _gauss_eps(x.detach(), a, mu_a, s2_a)
    torch.testing.assert_close(negative_guidance_eps(eps_y, eps_a, alpha), -sigma * score)
    literal = torch.autograd.grad(alpha * log_p(mu_y, s2_y) - log_p(mu_a, s2_a), x)[0]
    if alpha != 2.0:  # α − 1 = 1 only at α = 2
        assert (negative_guidance_eps(eps_y, eps_a, alpha) + sigma * literal).abs().max() > 1e-3
    # plain CFG with the null branch: p(x|y)^s p(x)^(1−s)
    torch.testing.assert_close(cfg_eps(eps_y, eps_a, alpha), negative_guidance_eps(eps_y, eps_a, alpha))


def test_equal_variance_target_is_the_extrapolated_gaussian():
    """For equal variances p^α / p′^(α−1) is N(α μ_y + (1−α) μ_y′, s²): its ε̂ is the Gaussian MMSE of that mean."""
    a = _alphas_cumprod()[150]
    mu_y, mu_a, s2, alpha = torch.tensor([0.4, -0.2]), torch.tensor([-0.1, 0.3]), 0.2, 2.5
    x = torch.tensor([0.7, -1.1])
    got = negative_guidance_eps(_gauss_eps(x, a, mu_y, s2), _gauss_eps(x, a, mu_a, s2), alpha)
    torch.testing.assert_close(got, _gauss_eps(x, a, alpha * mu_y + (1 - alpha) * mu_a, s2))


def test_guided_noise_batches_both_branches_and_v_prediction_converts():
    guid = GaussianGuidance(RGB)
    assert isinstance(guid, GuidanceModel)
    x = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 100, 190])
    one = lambda c: guid.predict_noise(x, t, c.expand(3, 3))  # noqa: E731
    got = guided_noise(guid, x, t, guid.dataset_condition, guid.artifact_condition, 2.0)
    eps_y, eps_a = one(guid.dataset_condition), one(guid.artifact_condition)
    torch.testing.assert_close(got, eps_a + 2.0 * (eps_y - eps_a))
    assert guid.calls == 1 + 2  # one batched call for both branches (then the two single ones above)
    # v -> ε: v = √ᾱ ε − √(1−ᾱ) x0 and x_t = √ᾱ x0 + √(1−ᾱ) ε give ε = √ᾱ v + √(1−ᾱ) x_t
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(prediction_type="v_prediction")
    x0, eps = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    x_t, v = sched.add_noise(x0, eps, t), sched.get_velocity(x0, eps, t)
    torch.testing.assert_close(eps_from_prediction(v, x_t, sched.alphas_cumprod[t], "v_prediction"), eps, atol=1e-5, rtol=0)
    torch.testing.assert_close(eps_from_prediction(x0, x_t, sched.alphas_cumprod[t], "sample"), eps, atol=1e-4, rtol=0)


# ============================================================================================ cameras
def test_sds_cameras_sample_the_6m2_square_level_at_eye_height():
    cams = sample_sds_cameras((4, 256), 32, 16, torch.Generator().manual_seed(0))
    assert tuple(cams.batch_shape) == (4, 256) and (cams.width, cams.height) == (32, 16)
    c = cams.centers.reshape(-1, 3)
    half = math.sqrt(6.0) / 2
    assert float(c[:, :2].abs().max()) <= half and float(c[:, :2].abs().max()) > 0.9 * half   # fills the square
    torch.testing.assert_close(c[:, 2], torch.full_like(c[:, 2], 1.6))
    R = cams.cam_to_world.reshape(-1, 4, 4)[:, :3, :3]
    torch.testing.assert_close(R.transpose(1, 2) @ R, torch.eye(3).expand_as(R), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(len(R)), atol=1e-5, rtol=0)
    torch.testing.assert_close(R[:, :, 1], torch.tensor([0.0, 0.0, -1.0]).expand(len(R), 3), atol=1e-6, rtol=0)  # level
    yaw = torch.atan2(R[:, 1, 2], R[:, 0, 2])
    assert torch.histc(yaw, bins=4, min=-math.pi, max=math.pi).min() > 150                   # all directions
    again = sample_sds_cameras((4, 256), 32, 16, torch.Generator().manual_seed(0))
    assert torch.equal(again.cam_to_world, cams.cam_to_world)
    # yaw 0 looks along +x (forward) with the image's right = −y (y is left)
    m = horizontal_cam_to_world(torch.tensor([1.0, 2.0, 1.6]), torch.tensor(0.0))
    torch.testing.assert_close(m[:3, :3], torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]))


# ============================================================================================ SDS
def test_sds_moves_renders_to_the_data_mean_and_negative_guidance_away_from_artifacts():
    """With the analytic denoiser SDS's fixed point is the guided target mean α μ_y + (1−α) μ_other: μ_y for α = 1;
    negative guidance (other = artifact) lands further from μ_a than plain CFG (other = null) — same steps, seed."""
    dec, field = ColourDecoder(), _colour_field()
    mu = {k: torch.tensor(v) for k, v in RGB.items()}
    before = _mean_colour(dec, field)
    runs = {}
    for name, alpha, negative in (("sds", 1.0, "artifact"), ("neg", 1.5, "artifact"), ("cfg", 1.5, "null")):
        r = refine_scene(field, dec, GaussianGuidance(RGB), steps=100, lr=5e-2, alpha=alpha, negative=negative, seed=0,
                         progress=False)
        assert r.nonfinite_steps == 0 and len(r.history.loss) == 100
        assert sum(r.history.loss[-20:]) < 0.2 * sum(r.history.loss[:20])
        runs[name] = _mean_colour(dec, r.field)
    d0 = float((before - mu["dataset"]).norm())
    assert d0 > 0.3 and float((runs["sds"] - mu["dataset"]).norm()) < 0.05 * d0       # shrinks 20×
    torch.testing.assert_close(runs["neg"], 1.5 * mu["dataset"] - 0.5 * mu["artifact"], atol=0.04, rtol=0)
    torch.testing.assert_close(runs["cfg"], 1.5 * mu["dataset"] - 0.5 * mu["null"], atol=0.02, rtol=0)
    assert float((runs["neg"] - mu["artifact"]).norm()) > float((runs["cfg"] - mu["artifact"]).norm()) + 0.05
    assert float((runs["cfg"] - mu["artifact"]).norm()) > float((runs["sds"] - mu["artifact"]).norm()) + 0.05


def _tiny_ae(seed=0):
    torch.manual_seed(seed)
    return SceneAutoEncoder(TINY_AE).eval()


def _tiny_prior(seed=0):
    torch.manual_seed(seed)
    return PriorGuidance(PriorUNet(TINY_PRIOR))


def _random_field(seed=0, batch=None):
    g = torch.Generator().manual_seed(seed)
    lead = () if batch is None else (batch,)
    return VoxelField(torch.rand(*lead, 4, 16, 16, generator=g) * 0.3, torch.randn(*lead, 4, 4, 16, 16, generator=g), BOX)


def test_refinement_is_deterministic_and_leaves_inputs_alone():
    ae, prior, field = _tiny_ae(), _tiny_prior(), _random_field()
    dens0, feat0 = field.density.clone(), field.features.clone()
    params0 = [p.clone() for p in ae.parameters()]
    a = refine_scene(field, ae, prior, steps=4, seed=3, progress=False)
    b = refine_scene(field, ae, prior, steps=4, seed=3, progress=False)
    c = refine_scene(field, ae, prior, steps=4, seed=4, progress=False)
    assert torch.equal(a.field.density, b.field.density) and torch.equal(a.field.features, b.field.features)
    assert not torch.equal(a.field.features, c.field.features)
    with torch.no_grad():                                                                # grad is switched on inside
        assert torch.equal(refine_scene(field, ae, prior, steps=4, seed=3, progress=False).field.features, a.field.features)
    assert not torch.equal(a.field.features, feat0) and not a.field.is_batched
    assert float(a.field.density.min()) >= 0.0                                           # projected onto σ ≥ 0
    assert torch.equal(field.density, dens0) and torch.equal(field.features, feat0)     # input untouched
    assert all(torch.equal(p, q) and p.grad is None for p, q in zip(ae.parameters(), params0))
    assert all(p.grad is None for p in prior.parameters())
    assert all(n > 0 for n in a.history.feature_grad_norm) and a.history.finite == [True] * 4
    assert all(20 <= t <= 200 for t in a.history.t_mean)                                 # t ~ U[0.02T, 0.2T]
    # a batch of two scenes stays a batch, as deterministic
    two = _random_field(batch=2)
    r1 = refine_scene(two, ae, prior, steps=2, seed=5, progress=False)
    r2 = refine_scene(two, ae, prior, steps=2, seed=5, progress=False)
    assert r1.field.is_batched and r1.field.batch_size == 2 and torch.equal(r1.field.features, r2.field.features)


def test_nonfinite_gradients_are_counted_skipped_and_warned():
    dec, field = ColourDecoder(), _colour_field()
    # alpha = 1: one guidance call per step, so call k is step k-1
    with pytest.warns(RuntimeWarning, match="skipped 1 of 3 step"):
        r = refine_scene(field, dec, GaussianGuidance(RGB, nan_at_call=2), steps=3, alpha=1.0, seed=0, progress=False)
    assert r.nonfinite_steps == 1 and r.nonfinite_step_indices == [1] and r.history.finite == [True, False, True]
    assert math.isnan(r.history.feature_grad_norm[1]) and bool(torch.isfinite(r.field.features).all())
    with pytest.warns(RuntimeWarning):                                                  # the skipped step changes nothing
        one = refine_scene(field, dec, GaussianGuidance(RGB, nan_at_call=1), steps=1, alpha=1.0, seed=0, progress=False)
    assert torch.equal(one.field.features, field.features) and torch.equal(one.field.density, field.density)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                                  # no warning when all finite
        assert refine_scene(field, dec, GaussianGuidance(RGB), steps=2, alpha=1.0, progress=False).nonfinite_steps == 0


# ============================================================================================ the prior
def test_prior_round_trip_and_guidance_interface(tmp_path):
    prior = _tiny_prior()
    prior.prior.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "model.safetensors"]
    again = PriorGuidance.from_pretrained(tmp_path)                                     # RUN/model found from RUN
    assert isinstance(again, GuidanceModel) and again.image_size == (16, 16) and again.prediction_type == "v_prediction"
    x = torch.rand(2, 3, 40, 24, generator=torch.Generator().manual_seed(0))
    x0 = again.encode(x)
    assert x0.shape == (2, 3, 16, 16) and float(x0.min()) >= -1 and float(x0.max()) <= 1
    t = torch.tensor([30, 150])
    conds = {"dataset": again.dataset_condition, "artifact": again.artifact_condition, "null": again.null_condition}
    for name, cond in conds.items():
        assert int(cond) == PRIOR_CLASSES[name]
        torch.testing.assert_close(again.predict_noise(x0, t, cond.expand(2)), prior.predict_noise(x0, t, cond.expand(2)))
    # ε̂ is the v-prediction converted: √ᾱ v + √(1−ᾱ) x_t
    v = prior.prior(x0, t, again.dataset_condition.expand(2))
    a = again.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(again.predict_noise(x0, t, again.dataset_condition.expand(2)), a.sqrt() * v + (1 - a).sqrt() * x0)
    with pytest.raises(GuidanceNotAvailable, match="nfldm train prior"):
        PriorGuidance.from_pretrained(tmp_path / "nothing")


def test_prior_loads_from_a_training_run_folder_with_its_own_config(tmp_path):
    """`nfldm train prior --out RUN` writes the resolved preset as RUN/config.json beside RUN/model: RUN loads, as
    RUN/model does (one resolver, `nfldm_sdk.persistence.resolve_model_dir`), and so does add_prior_to_bundle."""
    from nfldm_training.configs.prior import get_prior_preset
    from nfldm_training.configs.run_config import save_run_config

    prior = _tiny_prior(seed=2)
    prior.prior.save_pretrained(tmp_path / "model")
    save_run_config(tmp_path / "config.json", "prior", "tiny", get_prior_preset("tiny"))
    assert "_class" not in json.loads((tmp_path / "config.json").read_text())
    for path in (tmp_path, tmp_path / "model"):
        again = PriorGuidance.from_pretrained(path)
        assert all(torch.equal(p, q) for p, q in zip(again.prior.state_dict().values(), prior.prior.state_dict().values()))


# ============================================================================================ bundle, training, CLI
def test_prior_as_a_bundle_part(default_stats_bundle, tmp_path):
    import shutil

    from nfldm_sdk.models.bundle import BundleError
    from nfldm_sdk.pipelines.generator import SceneGenerator
    from nfldm_sdk.guidance.prior import add_prior_to_bundle, bundle_has_prior

    bundle = tmp_path / "b"
    shutil.copytree(default_stats_bundle, bundle)
    assert not bundle_has_prior(bundle)
    with pytest.raises(GuidanceNotAvailable, match="has no 'prior' part"):
        PriorGuidance.from_bundle(bundle)
    prior = _tiny_prior(seed=1)
    prior.prior.save_pretrained(tmp_path / "run" / "model")
    part = add_prior_to_bundle(bundle, tmp_path / "run")
    assert part == bundle / "prior" and bundle_has_prior(bundle)
    assert not (bundle / "prior.partial").exists() and not (bundle / "manifest.json.partial").exists()
    loaded = PriorGuidance.from_bundle(bundle)
    for p, q in zip(loaded.prior.state_dict().values(), prior.prior.state_dict().values()):
        assert torch.equal(p, q)
    SceneGenerator.from_pretrained(bundle)                                                # the manifest still verifies
    w = (bundle / "prior" / "model.safetensors").read_bytes()
    (bundle / "prior" / "model.safetensors").write_bytes(w[:-4] + b"\0\0\0\1")
    with pytest.raises(BundleError, match="part 'prior' changed"):
        PriorGuidance.from_bundle(bundle)
    with pytest.raises(ValueError, match="holds a .*SceneAutoEncoder"):                 # not a prior
        add_prior_to_bundle(bundle, bundle / "scene_ae")


def test_generate_refined_is_seeded_per_scene(default_stats_bundle):
    from nfldm_sdk.pipelines.generator import SceneGenerator

    gen = SceneGenerator.from_pretrained(default_stats_bundle)
    prior = _tiny_prior()
    cfg = RefineConfig(steps=2, render_size=(16, 16))
    raw = gen.generate(2, seed=7, steps=2)
    a = gen.generate(2, seed=7, steps=2, refine=True, guidance=prior, refine_config=cfg)
    b = gen.generate(1, seed=8, steps=2, refine=True, guidance=prior, refine_config=cfg)
    assert [s.seed for s in a] == [7, 8] and a[1].decoder is gen.scene_ae
    assert not torch.equal(a[0].field.features, raw[0].field.features)
    # scene 8 alone = scene 8 of the batch (up to the float rounding of batched sampling kernels, see generator.py)
    torch.testing.assert_close(a[1].field.features, b[0].field.features, atol=1e-4, rtol=0)
    again = gen.generate(2, seed=7, steps=2, refine=True, guidance=prior, refine_config=cfg)
    assert all(torch.equal(x.field.features, y.field.features) for x, y in zip(a, again))  # same seed, same bytes
    assert gen.generate(2, seed=7, steps=2, refine=False)[0].field.features.equal(raw[0].field.features)
    with pytest.raises(ValueError, match="needs a guidance model"):
        gen.generate(1, refine=True)


def test_refined_scenes_record_their_refinement(default_stats_bundle, tmp_path):
    from nfldm_sdk.pipelines.generator import SceneGenerator
    from nfldm_sdk.pipelines.scene import NeuralScene

    gen = SceneGenerator.from_pretrained(default_stats_bundle)
    cfg = RefineConfig(steps=2, alpha=2.5, views_per_step=1, render_size=(16, 16))
    raw = gen.generate(1, seed=7, steps=2)[0]
    refined = gen.generate(1, seed=7, steps=2, refine=True, guidance=_tiny_prior(), refine_config=cfg)[0]
    assert raw.refinements == ()
    assert refined.refinements == ({"steps": 2, "guidance": "prior", "alpha": 2.5, "negative": "artifact", "lr": 0.01,
                                    "density_lr": None, "views_per_step": 1, "seed": 7, "nonfinite_steps": 0},)
    assert json.loads((raw.save(tmp_path / "raw") / "scene.json").read_text())["refinements"] == []
    meta = json.loads((refined.save(tmp_path / "refined") / "scene.json").read_text())
    assert meta["refinements"] == [dict(refined.refinements[0])] and meta["steps"] == 2     # sampling steps kept
    assert NeuralScene.load(tmp_path / "refined").refinements == refined.refinements


def test_cli_train_prior_then_refine(default_stats_bundle, tmp_path, capture_factory):
    import shutil

    from click.testing import CliRunner

    from nfldm_sdk.cli.refine import refine
    from nfldm_sdk.pipelines.generator import SceneGenerator
    from nfldm_sdk.pipelines.scene import NeuralScene
    from nfldm_training.cli.prior import train_prior

    capture = capture_factory(tmp_path / "cap.zarr", episodes=1, frames=4)
    bundle = tmp_path / "bundle"
    shutil.copytree(default_stats_bundle, bundle)
    runner = CliRunner()
    args = ["--data", capture, "--bundle", str(bundle), "--preset", "tiny", "--out", str(tmp_path / "prior"),
            "--max-steps", "3", "--batch-size", "4", "--accelerator", "cpu", "--devices", "1", "--no-progress"]
    res = runner.invoke(train_prior, args + ["--add-to-bundle"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    run = tmp_path / "prior"
    info = json.loads((run / "prior_run.json").read_text())
    # tiny: every 2nd of 4 frames × 6 cameras; 2 generated scenes × 4 views; every 10th image is validation
    assert info["dataset_images"] == 2 * 6 and info["artifact_images"] == 2 * 4
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 3 and metrics["val_loss"] is not None
    assert (run / "model" / "model.safetensors").is_file() and (bundle / "prior" / "config.json").is_file()
    assert PriorGuidance.from_bundle(bundle).image_size == (32, 32)
    # resume: continues to 5 steps from last.ckpt, reusing the rendered artifact images
    res = runner.invoke(train_prior, [a if a != "3" else "5" for a in args], catch_exceptions=False)
    assert res.exit_code == 0 and "resuming from" in res.output and "reusing the artifact images" in res.output
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 5

    scene = SceneGenerator.from_pretrained(bundle).generate(1, seed=4, steps=2)[0]
    scene.save(tmp_path / "scene")
    out = tmp_path / "refined"
    res = runner.invoke(refine, [str(tmp_path / "scene"), "--model", str(bundle), "--guidance", "prior", "--steps", "2",
                                 "--alpha", "2", "--seed", "1", "--out", str(out), "--device", "cpu", "--no-progress"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    refined = NeuralScene.load(out)
    assert refined.seed == 4 and not torch.equal(refined.field.features, scene.field.features)
    meta = json.loads((out / "refine.json").read_text())
    assert meta["nonfinite_steps"] == 0 and meta["config"]["alpha"] == 2.0 and len(meta["history"]["loss"]) == 2
    assert (out / "preview.png").is_file()
    scene_json = json.loads((out / "scene.json").read_text())                          # says that it was refined
    assert [{k: r[k] for k in ("steps", "guidance", "alpha", "negative", "seed")} for r in scene_json["refinements"]] == [
        {"steps": 2, "guidance": "prior", "alpha": 2.0, "negative": "artifact", "seed": 1}]
    # an existing --out is refused without --overwrite (before any work) and replaced whole with it
    from nfldm_sdk.cli.main import main

    written = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "refine.json"}
    again = ["refine", str(tmp_path / "scene"), "--model", str(bundle), "--guidance", "prior", "--steps", "2",
             "--alpha", "2", "--seed", "1", "--out", str(out), "--device", "cpu", "--no-progress"]
    res = runner.invoke(main, again)
    assert res.exit_code == 1 and f"Error: --out {out} exists: pass --overwrite" in res.output
    res = runner.invoke(main, [*again, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "refine.json"} == written
    assert not (tmp_path / "refined.partial").exists()
    # --guidance-path: the `nfldm train prior` run folder (with its own config.json) works as its model/ does
    fields = []
    for path in (run, run / "model"):
        res = runner.invoke(refine, [str(tmp_path / "scene"), "--model", str(bundle), "--guidance", "prior",
                                     "--guidance-path", str(path), "--steps", "1", "--seed", "1", "--no-preview",
                                     "--out", str(tmp_path / f"refined_{path.name}"), "--device", "cpu", "--no-progress"])
        assert res.exit_code == 0, res.output
        fields.append(NeuralScene.load(tmp_path / f"refined_{path.name}").field)
    assert torch.equal(fields[0].features, fields[1].features) and torch.equal(fields[0].density, fields[1].density)
    res = runner.invoke(refine, [str(tmp_path / "scene"), "--model", str(bundle), "--guidance", "clip-ldm",
                                 "--guidance-path", str(tmp_path / "none"), "--out", str(tmp_path / "x"), "--device", "cpu"])
    assert res.exit_code != 0 and "huggingface-cli download" in res.output
