"""Generating scenes: deterministic and batch-independent `SceneGenerator.generate`, `NeuralScene` save/load/render,
the preview cameras, `nfldm generate` writing scenes and previews, and the sampling benchmark."""
from __future__ import annotations

import json
import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from nfldm_sdk.cameras.builders import preview_cameras
from nfldm_sdk.cli.generate import generate
from nfldm_sdk.models.bundle import BundleError
from nfldm_sdk.pipelines.generator import SceneGenerator
from nfldm_sdk.pipelines.scene import NeuralScene
from nfldm_training.benchmarks.sampling import format_sampling_bench, run_sampling_bench

# `tiny_bundle` first: it sets its non-trivial latent statistics on `tiny_generator`, so every test of the module
# generates with de-normalisation exercised.
pytestmark = pytest.mark.usefixtures("one_thread_module", "tiny_bundle")


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
    r = run_sampling_bench(tiny_generator, samplers=("ddim", "dpmsolver++"), steps=(2,), batch=1)
    assert [(t.sampler, t.steps) for t in r.timings] == [("ddim", 2), ("dpmsolver++", 2)]
    assert all(t.seconds_per_scene > 0 for t in r.timings)
    text = format_sampling_bench(r)
    assert "dpmsolver++" in text and "s/scene" in text and r.latent_shapes["c"] == (4, 4, 8, 8)
