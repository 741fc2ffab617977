"""The SDS prior as a model bundle's optional ``prior/`` part: the round trip (float32 and float16), the generator
and ``nfldm refine`` using it when no prior is given (the same result as passing the prior's run, same seed), and
the error of a bundle without one."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

from nfldm_sdk.guidance.prior import PRIOR_PART, PriorGuidance, add_prior_to_bundle, bundle_has_prior
from nfldm_sdk.guidance.sds import RefineConfig
from nfldm_sdk.models.bundle import part_hash, read_manifest
from nfldm_sdk.models.prior_unet import PriorUNet
from nfldm_sdk.persistence import class_path
from nfldm_sdk.pipelines.generate_args import GenerateArgumentError
from nfldm_sdk.pipelines.generator import SceneGenerator

pytestmark = pytest.mark.usefixtures("one_thread_module")

CFG = RefineConfig(steps=2, views_per_step=1, render_size=(16, 16))


def _prior_run(run, seed=1):
    """A `nfldm train prior` run folder (``RUN/config.json`` + ``RUN/model``) holding a random-init tiny prior."""
    from nfldm_training.configs.prior import get_prior_preset
    from nfldm_training.configs.run_config import save_run_config

    preset = get_prior_preset("tiny")
    torch.manual_seed(seed)
    prior = PriorUNet(preset.prior)
    prior.save_pretrained(run / "model")
    save_run_config(run / "config.json", "prior", "tiny", preset)
    return run, prior


@pytest.fixture
def bundle_with_prior(default_stats_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(default_stats_bundle, bundle)
    run, prior = _prior_run(tmp_path / "prior_run")
    add_prior_to_bundle(bundle, run)
    return bundle, run, prior


def test_prior_part_round_trip_float32_and_float16(default_stats_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(default_stats_bundle, bundle)
    before = read_manifest(bundle)
    run, prior = _prior_run(tmp_path / "run")
    assert not bundle_has_prior(bundle)
    part = add_prior_to_bundle(bundle, run)                               # the run folder, as RUN/model
    m = read_manifest(bundle)
    assert part == bundle / PRIOR_PART and bundle_has_prior(bundle)
    assert m.parts[PRIOR_PART] == {"class": class_path(PriorUNet), "path": "prior", "sha256": part_hash(part)}
    assert m.bundle_hash == before.bundle_hash                           # optional parts leave the identity alone
    assert (part / "model.safetensors").read_bytes() == (run / "model" / "model.safetensors").read_bytes()
    loaded = PriorGuidance.from_bundle(bundle).prior
    assert all(torch.equal(p, q) for p, q in zip(loaded.state_dict().values(), prior.state_dict().values()))
    # float16 storage: half the bytes, the weights rounded to float16, loaded back as float32
    add_prior_to_bundle(bundle, run / "model", half=True)
    with safe_open(str(part / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    m16 = read_manifest(bundle)
    assert m16.parts[PRIOR_PART]["sha256"] == part_hash(part) != m.parts[PRIOR_PART]["sha256"]
    assert m16.bundle_hash == before.bundle_hash
    half = PriorGuidance.from_bundle(bundle).prior
    for (k, p), q in zip(half.state_dict().items(), prior.state_dict().values()):
        assert p.dtype == torch.float32 and torch.equal(p, q.half().float()), k
    assert not (bundle / "prior.partial").exists() and not (bundle / "manifest.json.partial").exists()
    SceneGenerator.from_pretrained(bundle)                                # the bundle still verifies


def test_generate_refine_without_guidance_uses_the_bundles_prior(bundle_with_prior):
    bundle, run, prior = bundle_with_prior
    gen = SceneGenerator.from_pretrained(bundle)
    assert gen.bundle_path == bundle
    implicit = gen.generate(2, seed=3, steps=2, refine=True, refine_config=CFG)
    explicit = gen.generate(2, seed=3, steps=2, refine=True, guidance=PriorGuidance.from_pretrained(run), refine_config=CFG)
    raw = gen.generate(2, seed=3, steps=2)
    for a, b, r in zip(implicit, explicit, raw):
        assert torch.equal(a.field.features, b.field.features) and torch.equal(a.field.density, b.field.density)
        assert not torch.equal(a.field.features, r.field.features)
        assert a.refinements == b.refinements and a.refinements[0]["guidance"] == "prior"
    # loaded once, then kept; the part's weights
    assert gen.bundle_prior() is gen.bundle_prior()
    assert all(torch.equal(p, q) for p, q in zip(gen.bundle_prior().prior.state_dict().values(), prior.state_dict().values()))


def test_refine_without_a_prior_names_train_prior_and_export_bundle(default_stats_bundle, tiny_generator, tmp_path):
    gen = SceneGenerator.from_pretrained(default_stats_bundle)
    with pytest.raises(GenerateArgumentError, match=r"has no 'prior' part.*`nfldm train prior .*--add-to-bundle`.*"
                                                    r"`nfldm export-bundle \.\.\. --prior RUN"):
        gen.generate(1, refine=True)
    with pytest.raises(GenerateArgumentError, match=r"not loaded from a bundle.*PriorGuidance.from_pretrained"):
        tiny_generator.generate(1, refine=True)
    assert tiny_generator.bundle_path is None
    # the CLI: one Error line with the same fix
    from nfldm_sdk.cli.main import main

    gen.generate(1, seed=4, steps=2)[0].save(tmp_path / "scene")
    res = CliRunner().invoke(main, ["refine", str(tmp_path / "scene"), "--model", str(default_stats_bundle), "--steps", "1",
                                    "--out", str(tmp_path / "out"), "--device", "cpu", "--no-progress"])
    assert res.exit_code == 1 and res.output.startswith("Error: bundle ")
    assert "has no 'prior' part" in res.output and "nfldm train prior" in res.output and "--prior RUN" in res.output
    assert not (tmp_path / "out").exists()


def test_cli_refine_without_guidance_path_equals_the_explicit_run(bundle_with_prior, tmp_path):
    from nfldm_sdk.cli.refine import refine
    from nfldm_sdk.pipelines.scene import NeuralScene

    bundle, run, _ = bundle_with_prior
    SceneGenerator.from_pretrained(bundle).generate(1, seed=4, steps=2)[0].save(tmp_path / "scene")
    base = [str(tmp_path / "scene"), "--model", str(bundle), "--steps", "2", "--alpha", "2", "--seed", "1",
            "--device", "cpu", "--no-progress", "--no-preview"]
    runner = CliRunner()
    res = runner.invoke(refine, base + ["--out", str(tmp_path / "implicit")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    res = runner.invoke(refine, base + ["--guidance-path", str(run), "--out", str(tmp_path / "explicit")],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    a, b = NeuralScene.load(tmp_path / "implicit"), NeuralScene.load(tmp_path / "explicit")
    assert torch.equal(a.field.features, b.field.features) and torch.equal(a.field.density, b.field.density)
    assert json.loads((tmp_path / "implicit" / "refine.json").read_text())["guidance_path"] is None
