"""`nfldm eval`: metric math on known answers, FID/KID closed forms, and an end-to-end run on a tiny store."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from nfldm_training.metrics.scene_3d import (bev_stats, chamfer_matrix, depth_histogram, histogram_distances, mmd_cov_1nna,
                                       subsample_points)


# ------------------------------------------------------------------------------------------------ Chamfer
def test_chamfer_matrix_known_values_and_symmetry():
    a = torch.zeros(1, 4, 3)
    b = torch.zeros(1, 5, 3)
    b[..., 0] = 2.0                                       # every point 2 m away: CD = 2 + 2
    c = torch.rand(3, 7, 3, generator=torch.Generator().manual_seed(0))
    assert chamfer_matrix(a, b).item() == pytest.approx(4.0)
    assert chamfer_matrix(c, c).diagonal().abs().max().item() < 1e-5       # a set to itself: 0
    d = chamfer_matrix(c, c)
    assert torch.allclose(d, d.T, atol=1e-6)
    # one-point sets: CD = 2 × Euclidean distance; chunking does not change the values
    p = torch.tensor([[[0.0, 0, 0]], [[3.0, 4, 0]]])
    assert torch.allclose(chamfer_matrix(p, p, max_elements=1), torch.tensor([[0.0, 10.0], [10.0, 0.0]]))


def test_chamfer_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, 9, 3, generator=g), torch.randn(3, 6, 3, generator=g)
    want = torch.empty(2, 3)
    for i in range(2):
        for j in range(3):
            d = ((a[i][:, None] - b[j][None]) ** 2).sum(-1).sqrt()
            want[i, j] = d.min(1).values.mean() + d.min(0).values.mean()
    assert torch.allclose(chamfer_matrix(a, b), want, atol=1e-5)


# ------------------------------------------------------------------------------------------------ MMD/COV/1-NNA
def _sets_metrics(gen, ref):
    return mmd_cov_1nna(chamfer_matrix(gen, ref), chamfer_matrix(gen, gen), chamfer_matrix(ref, ref))


def test_identical_sets():
    ref = torch.rand(6, 32, 3, generator=torch.Generator().manual_seed(2))
    m = _sets_metrics(ref.clone(), ref)
    assert m.mmd == pytest.approx(0.0, abs=1e-6)
    assert m.cov == 1.0
    # Each sample's nearest neighbour is its twin in the other set: a copying generator scores 0 (memorisation).
    assert m.nna == 0.0


def test_degenerate_identical_scenes_give_half():
    # All scenes the same: every distance is 0, the 1-NN classifier cannot decide -> ties count half -> 0.5.
    one = torch.rand(1, 16, 3, generator=torch.Generator().manual_seed(3))
    m = _sets_metrics(one.repeat(4, 1, 1), one.repeat(5, 1, 1))
    assert (m.mmd, m.cov, m.nna) == (pytest.approx(0.0, abs=1e-6), pytest.approx(1 / 5), 0.5)


def test_separated_sets_and_mode_collapse():
    g = torch.Generator().manual_seed(4)
    ref = torch.rand(5, 20, 3, generator=g)
    far = ref + torch.tensor([100.0, 0, 0])                 # same shapes, 100 m away: perfectly separable
    m = _sets_metrics(far, ref)
    assert m.nna == 1.0
    assert m.mmd == pytest.approx(200.0, rel=0.02)          # CD of a 100 m shift ≈ 2 × 100 m
    # mode collapse: every generated scene is reference scene 0 -> COV = 1/5, MMD = mean CD of refs to ref 0
    collapsed = ref[:1].repeat(4, 1, 1)
    m2 = _sets_metrics(collapsed, ref)
    assert m2.cov == pytest.approx(1 / 5)
    assert m2.mmd == pytest.approx(float(chamfer_matrix(ref[:1], ref).mean()), rel=1e-5)


def test_same_distribution_near_half():
    g = torch.Generator().manual_seed(5)
    a = torch.randn(60, 24, 3, generator=g) * 0.5 + torch.randn(60, 1, 3, generator=g)
    b = torch.randn(60, 24, 3, generator=g) * 0.5 + torch.randn(60, 1, 3, generator=g)
    assert abs(_sets_metrics(a, b).nna - 0.5) < 0.12


def test_subsample_points():
    g = torch.Generator().manual_seed(0)
    pts = torch.arange(30.0).view(10, 3)
    s = subsample_points(pts, 4, g)
    assert s.shape == (4, 3) and len({tuple(r.tolist()) for r in s}) == 4          # without replacement
    assert subsample_points(pts, 25, g).shape == (25, 3)                             # with replacement
    with pytest.raises(ValueError, match="empty"):
        subsample_points(pts[:0], 4, g)


# ------------------------------------------------------------------------------------------------ BEV / histograms
def test_bev_stats_worked_example():
    pts = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 2.0], [1.5, 0.5, 0.0], [2.5, 0.5, 0.1], [9.0, 9.0, 0.0]])
    bounds = torch.tensor([[0.0, 0.0, -1.0], [3.0, 1.0, 3.0]])
    s = bev_stats(pts, bounds, cell=1.0, structure_height=0.5, height_bins=4)
    assert s.occupied_fraction == pytest.approx(1 / 3)
    assert s.observed_fraction == pytest.approx(1.0)
    np.testing.assert_allclose(s.height_hist, [0.0, 0.75, 0.0, 0.25])   # z in [-1,0),[0,1),[1,2),[2,3]; the 5th point is outside


def test_histogram_distances_worked_example():
    p, q = np.array([1.0, 0, 0, 0]), np.array([0, 0, 0, 5.0])
    d = histogram_distances(p, q, bin_width=2.0)
    assert (d.tv, d.w1) == (pytest.approx(1.0), pytest.approx(6.0))
    same = histogram_distances(p, p * 3, 1.0)
    assert (same.tv, same.w1) == (0.0, 0.0)


def test_depth_histogram_far_plane_convention():
    h = depth_histogram(torch.tensor([1.5, 2.5, math.inf, 100.0, 0.2]), near=1.0, far=4.0, bins=3)
    np.testing.assert_array_equal(h, [2, 1, 2])                     # 0.2 -> first bin; inf and 100 -> far bin


# ------------------------------------------------------------------------------------------------ FID / KID
def test_frechet_distance_closed_form():
    from nfldm_training.metrics.fid import frechet_distance

    assert frechet_distance(np.zeros(1), np.eye(1), np.array([3.0]), 4 * np.eye(1)) == pytest.approx(10.0)
    # diagonal covariances: ‖μ1−μ2‖² + Σ (σ1 − σ2)²  (σ = standard deviations)
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 1.0])
    want = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert frechet_distance(mu1, np.diag(s1 ** 2), mu2, np.diag(s2 ** 2)) == pytest.approx(want, rel=1e-8)
    # a rotation of both covariances changes nothing
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    assert frechet_distance(q @ mu1, q @ np.diag(s1 ** 2) @ q.T, q @ mu2, q @ np.diag(s2 ** 2) @ q.T) == pytest.approx(want, rel=1e-6)


def test_feature_fid_and_kid_on_gaussian_samples():
    from nfldm_training.metrics.fid import feature_fid, kernel_inception_distance

    rng = np.random.default_rng(1)
    a = rng.normal(size=(4000, 4))
    b = rng.normal(size=(4000, 4)) * 2.0 + 1.0
    # population FID of N(0, I) vs N(1, 4I) in 4-D: 4·1 + 4·(1 − 2)² = 8
    assert feature_fid(a, b) == pytest.approx(8.0, rel=0.05)
    same = kernel_inception_distance(a, rng.normal(size=(4000, 4)), subsets=5, subset_size=500)
    diff = kernel_inception_distance(a, b, subsets=5, subset_size=500)
    assert abs(same[0]) < 0.05 < diff[0]
    # unbiased estimator: exact value on a hand-made 2-point set, k(x, y) = (x·y/d + 1)^3 with d = 1
    x, y = np.array([[0.0], [1.0]]), np.array([[2.0], [3.0]])
    kxx, kyy = (0 + 1) ** 3, (6 + 1) ** 3
    kxy = np.mean([(0 * 2 + 1) ** 3, (0 * 3 + 1) ** 3, (1 * 2 + 1) ** 3, (1 * 3 + 1) ** 3])
    assert kernel_inception_distance(x, y, subsets=1)[0] == pytest.approx(kxx + kyy - 2 * kxy)


def test_fid_inception_architecture_and_missing_weights(tmp_path):
    pytest.importorskip("torchvision")
    from nfldm_training.metrics.fid import FID_WEIGHTS_NAME, FIDInceptionV3

    with pytest.raises(FileNotFoundError, match=FID_WEIGHTS_NAME):
        FIDInceptionV3.load(tmp_path / "nothing.pth")
    net = FIDInceptionV3()
    sd = net.net.state_dict()
    # pytorch-fid's weights file: torchvision Inception3 keys with 1008 classes and no aux logits
    assert sd["fc.weight"].shape == (1008, 2048) and not any(k.startswith("AuxLogits") for k in sd)
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not the FID Inception weights"):
        FIDInceptionV3.load(bad)
    # random weights in the real architecture (the test cannot ship the real file): shapes of the features
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.normal_(m.weight, std=0.05)
    good = tmp_path / "random_arch.pth"
    torch.save(net.net.state_dict(), good)
    loaded = FIDInceptionV3.load(good)
    f = loaded(torch.rand(1, 3, 64, 64))
    assert f.shape == (1, 2048) and f.dtype == torch.float64 and torch.isfinite(f).all()


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    from click.testing import CliRunner

    from sim_bridge.cli import main

    out = tmp_path_factory.mktemp("eval") / "t.zarr"
    r = CliRunner().invoke(main, ["collect", "--backend", "procedural", "--town", "Town01", "--episodes", "3",
                                  "--frames", "3", "--width", "64", "--height", "64", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    return str(out)


def test_evaluate_end_to_end(tiny_store, tmp_path):
    from nfldm_training.evaluation.evaluate import EvalConfig, evaluate, write_report
    from nfldm_training.configs.ldm import random_generator

    gen = random_generator("tiny", seed=0)
    cfg = EvalConfig(num_scenes=3, window=2, val_fraction=0.34, points_per_scene=64, steps=2, max_recon_windows=2)
    r = evaluate(gen, [tiny_store], cfg, log=lambda s: None)
    assert r.stage1.num_windows == 2 and r.stage1.num_images == 2 * 2 * 6          # 2 windows × 2 frames × 6 cameras
    for f in (r.stage1, r.stage1_lae):
        assert math.isfinite(f.psnr) and -1 <= f.ssim <= 1 and f.abs_rel >= 0
    g = r.generation
    assert g.num_generated == 3 and g.num_reference == 2                           # one held-out episode: 2 windows
    assert g.sets.mmd >= 0 and 0 < g.sets.cov <= 1 and 0 <= g.sets.nna <= 1
    assert 0 <= g.depth_hist.tv <= 1 and 0 <= g.height_hist.tv <= 1
    assert g.fid is None and g.kid_mean is None and "not computed" in g.image_metric_note
    assert sum(g.captured_semantics.values()) == pytest.approx(1.0) and g.captured_semantics["road"] > 0
    j, m = write_report(r, tmp_path / "ev")
    data = json.loads(j.read_text())
    assert data["generation"]["fid"] is None and data["stage1"]["num_windows"] == 2
    text = m.read_text()
    assert "MMD-CD" in text and "FID ↓ | —" in text and "not computed" in text
    # semantics: the tiny preset has a head; without a critic its lines say why they are empty
    s = r.semantic
    assert s.stage1 is not None and s.stage1.images == 2 * 2 * 6 and 0 <= s.stage1.miou <= 1
    assert s.critic.startswith("unavailable: no perception critic") and s.cfd is None and s.agreement_generated is None
    assert "CFD ceiling: captured training vs held-out episodes ↓ | unavailable: no perception critic" in text
    assert data["semantic"]["cfd"] is None and data["semantic"]["stage1"]["pixels"] == 2 * 2 * 6 * 64 * 64


def test_eval_cli_without_bundle_names_the_fix(tiny_store, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from nfldm_training.cli.eval import eval_command

    monkeypatch.setenv("NFLDM_DEFAULT_MODEL", str(tmp_path / "missing"))
    r = CliRunner().invoke(eval_command, ["--data", tiny_store, "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "NFLDM_DEFAULT_MODEL" in r.output
    r = CliRunner().invoke(eval_command, ["--model", str(tmp_path), "--data", tiny_store, "--out", str(tmp_path / "o"),
                                          "--inception-weights", str(tmp_path / "x.pth")])
    assert r.exit_code != 0 and "x.pth does not exist" in r.output
    r = CliRunner().invoke(eval_command, ["--model", str(tmp_path), "--data", tiny_store, "--out", str(tmp_path / "o"),
                                          "--critic", str(tmp_path)])
    assert r.exit_code != 0 and "holds no saved model" in r.output and not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------ semantics
@pytest.fixture(scope="module")
def critic_run(tmp_path_factory):
    """A tiny perception critic with random weights, saved as a run's model folder (the CLI contract only)."""
    from nfldm_sdk.models.critic import PerceptionCritic
    from nfldm_training.configs.critic import get_critic_preset

    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("critic")
    PerceptionCritic(get_critic_preset("tiny").critic).save_pretrained(run / "model")
    return run


EVAL_ARGS = ["--num-scenes", "2", "--steps", "2", "--points", "64", "--max-recon-windows", "1", "--val-fraction", "0.34",
             "--device", "cpu"]
SEMANTIC_LINES = ("semantic mIoU vs captured tags, stage 1 ↑", "semantic mIoU vs captured tags, stage 1 + LAE ↑",
                  "label agreement (critic on RGB vs field labels), generated ↑",
                  "label agreement, stage-1 reconstructions ↑", "label agreement ceiling: critic vs captured tags ↑",
                  "critic Fréchet distance (CFD), captured held-out vs generated ↓",
                  "CFD ceiling: captured training vs held-out episodes ↓")


def _semantic_rows(text):
    """``{figure: value}`` of the report's two-column rows named in SEMANTIC_LINES."""
    rows = {}
    for line in text.splitlines():
        name, _, value = line.removeprefix("| ").removesuffix(" |").partition(" | ")
        if name in SEMANTIC_LINES:
            rows[name] = value
    return rows


def test_eval_cli_semantics_label_agreement_and_cfd(tiny_store, tmp_path, tiny_generator, write_tiny_bundle, critic_run):
    from click.testing import CliRunner

    from nfldm_sdk.models.critic import add_critic_to_bundle
    from nfldm_training.cli.eval import eval_command

    bundle = write_tiny_bundle(tmp_path / "b", tiny_generator)
    add_critic_to_bundle(bundle, critic_run)
    r = CliRunner().invoke(eval_command, ["--model", str(bundle), "--data", tiny_store, *EVAL_ARGS,
                                          "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output + repr(r.exception)
    rows = _semantic_rows(r.output)
    assert set(rows) == set(SEMANTIC_LINES) and not any("unavailable" in v for v in rows.values())
    assert "Per-class IoU of the semantic field" in r.output
    s = json.loads((tmp_path / "o" / "eval.json").read_text())["semantic"]
    views = 1 * 2 * 6                                    # 1 reconstruction window x 2 frames x 6 cameras
    for key in ("stage1", "stage1_lae", "critic_captured", "agreement_stage1"):
        f = s[key]
        assert f["images"] == views and f["pixels"] == views * 64 * 64 and 0 <= f["miou"] <= 1
        assert 0 < f["majority_miou"] <= 1 and set(f["class_iou"]) <= set(s["classes"]["critic"])
    # the same captured pixels are the targets of stage 1 and of the critic's ceiling (both in DEFAULT_CLASSES)
    assert s["stage1"]["majority_miou"] == pytest.approx(s["critic_captured"]["majority_miou"])
    assert s["agreement_generated"]["images"] == 2 * 6   # 2 generated scenes x the 6 anchor views of their rig
    # equal counts: 2 reference windows x 6 anchor views = 12 captured held-out, 12 generated, 12 of the 36 training
    assert s["cfd_images"] == 12 and s["cfd"] >= 0 and s["cfd_ceiling"] >= 0
    assert s["critic"] == str(bundle / "critic")


@pytest.mark.slow
def test_eval_without_head_with_critic_option(tiny_store, tmp_path, tiny_generator, write_tiny_bundle, critic_run):
    from click.testing import CliRunner

    from nfldm_sdk.models.semantic_head import SEMANTICS_UNAVAILABLE
    from nfldm_training.cli.eval import eval_command

    plain = write_tiny_bundle(tmp_path / "plain", tiny_generator, semantic=False)
    headed = write_tiny_bundle(tmp_path / "headed", tiny_generator)
    r = CliRunner().invoke(eval_command, ["--model", str(plain), "--data", tiny_store, *EVAL_ARGS, "--critic",
                                          str(critic_run), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output + repr(r.exception)
    rows = _semantic_rows(r.output)
    for key in SEMANTIC_LINES[:4]:                       # the field's labels are needed: unavailable, saying why
        assert rows[key] == f"unavailable: {SEMANTICS_UNAVAILABLE}"
    assert not any("unavailable" in rows[k] for k in SEMANTIC_LINES[4:])   # the critic alone still measures these
    plain_report = json.loads((tmp_path / "o" / "eval.json").read_text())
    s = plain_report["semantic"]
    assert s["stage1"] is None and s["agreement_generated"] is None and s["cfd"] >= 0
    # a bundle with a head but no critic part: the critic lines name the fix; the other figures are the same numbers
    r = CliRunner().invoke(eval_command, ["--model", str(headed), "--data", tiny_store, *EVAL_ARGS,
                                          "--out", str(tmp_path / "o2")])
    assert r.exit_code == 0, r.output + repr(r.exception)
    rows = _semantic_rows(r.output)
    assert rows[SEMANTIC_LINES[-1]].startswith("unavailable: bundle") and "nfldm train critic" in rows[SEMANTIC_LINES[-1]]
    headed_report = json.loads((tmp_path / "o2" / "eval.json").read_text())
    for key in ("stage1", "stage1_lae"):
        assert headed_report[key] == plain_report[key]
    assert headed_report["generation"]["sets"] == plain_report["generation"]["sets"]
