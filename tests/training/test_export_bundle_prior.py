"""`nfldm export-bundle --prior RUN`: the SDS prior of `nfldm train prior` exported as the bundle's optional
``prior/`` part (float16 with ``--half``), found by `SceneGenerator.generate(refine=True)`; a bad ``--prior`` is
refused before anything is written.

The runs are real run folders (``RUN/model``, and for the denoisers ``RUN/config.json`` + ``RUN/ldm_run.json`` as
`nfldm train ldm` writes them) of the random-weight `tiny` models, so no training runs here.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

from nfldm_sdk.guidance.prior import PriorGuidance
from nfldm_sdk.guidance.sds import RefineConfig
from nfldm_sdk.models.bundle import read_manifest
from nfldm_sdk.models.prior_unet import PriorUNet
from nfldm_sdk.persistence import config_to_dict, nfldm_version
from nfldm_sdk.pipelines.generator import SceneGenerator
from nfldm_training.cli.ldm import export_bundle
from nfldm_training.configs.ldm import get_ldm_preset, with_latent_shapes
from nfldm_training.configs.prior import get_prior_preset
from nfldm_training.configs.run_config import save_run_config
from nfldm_training.modules.ldm import RUN_INFO

pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def stage_runs(tmp_path_factory, tiny_generator):
    """``{option: run folder}`` of the five generative runs, plus ``--prior`` (a tiny random-init prior run)."""
    root = tmp_path_factory.mktemp("runs")
    gen = tiny_generator
    lc = gen.latent_ae.config
    ldm = with_latent_shapes(get_ldm_preset("tiny"), lc.g_dim, lc.c_shape, lc.f_shape)
    runs = {"--scene-ae": root / "ae", "--latent-ae": root / "lae"}
    gen.scene_ae.save_pretrained(runs["--scene-ae"] / "model")
    gen.latent_ae.save_pretrained(runs["--latent-ae"] / "model")
    for level in "gcf":
        run = runs[f"--ldm-{level}"] = root / f"ldm_{level}"
        gen.denoisers[level].save_pretrained(run / "model")
        save_run_config(run / "config.json", "ldm", "tiny", ldm, level=level)
        info = {"level": level, "preset": "tiny", "latents": "latents.zarr", "num_scenes": 6, "training_data_hash": "0" * 64,
                "latent_stats": config_to_dict(gen.latent_stats), "noise_schedule": gen.noise_schedule.to_dict(),
                "sampler_defaults": dataclasses.asdict(gen.sampler_defaults), "nfldm_version": nfldm_version()}
        (run / RUN_INFO).write_text(json.dumps(info))
    preset = get_prior_preset("tiny")
    torch.manual_seed(5)
    runs["--prior"] = root / "prior"
    PriorUNet(preset.prior).save_pretrained(runs["--prior"] / "model")
    save_run_config(runs["--prior"] / "config.json", "prior", "tiny", preset)
    return runs


def _args(runs, out, *, prior=True):
    args = [a for opt, run in runs.items() if prior or opt != "--prior" for a in (opt, str(run))]
    return args + ["--out", str(out)]


def test_export_bundle_with_prior_adds_the_part(stage_runs, tmp_path):
    res = CliRunner().invoke(export_bundle, _args(stage_runs, tmp_path / "b"), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "with the SDS prior (prior/)" in res.output
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["parts"]["prior"]["path"] == "prior" and manifest["parts"]["prior"]["class"].endswith("PriorUNet")
    assert (tmp_path / "b" / "prior" / "model.safetensors").read_bytes() == \
        (stage_runs["--prior"] / "model" / "model.safetensors").read_bytes()
    # the prior does not count in the bundle's identity: the hash of the manifest without it is the same
    m = read_manifest(tmp_path / "b")
    without = dataclasses.replace(m, parts={k: v for k, v in m.parts.items() if k != "prior"})
    assert m.bundle_hash == without.compute_hash() == m.compute_hash()
    # without --prior: no prior part
    res = CliRunner().invoke(export_bundle, _args(stage_runs, tmp_path / "plain", prior=False), catch_exceptions=False)
    assert res.exit_code == 0 and "SDS prior" not in res.output, res.output
    assert "prior" not in json.loads((tmp_path / "plain" / "manifest.json").read_text())["parts"]
    # generate(refine=True) finds it: the same scenes as with the prior's run passed explicitly
    gen = SceneGenerator.from_pretrained(tmp_path / "b")
    cfg = RefineConfig(steps=1, views_per_step=1, render_size=(16, 16))
    a = gen.generate(1, seed=2, steps=2, refine=True, refine_config=cfg)[0]
    b = gen.generate(1, seed=2, steps=2, refine=True, guidance=PriorGuidance.from_pretrained(stage_runs["--prior"]),
                     refine_config=cfg)[0]
    assert torch.equal(a.field.features, b.field.features)


def test_export_bundle_half_stores_the_prior_in_float16(stage_runs, tmp_path):
    res = CliRunner().invoke(export_bundle, _args(stage_runs, tmp_path / "b") + ["--half"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    for part in ("prior", "scene_ae"):
        with safe_open(str(tmp_path / "b" / part / "model.safetensors"), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()} == {torch.float16}
    loaded = PriorGuidance.from_bundle(tmp_path / "b").prior
    trained = PriorUNet.from_pretrained(stage_runs["--prior"] / "model")
    assert all(p.dtype == torch.float32 and torch.equal(p, q.half().float())
               for p, q in zip(loaded.state_dict().values(), trained.state_dict().values()))


def test_export_bundle_refuses_a_bad_prior_before_writing(stage_runs, tmp_path):
    runs = dict(stage_runs)
    runs["--prior"] = stage_runs["--scene-ae"]                           # a saved network, but not a prior
    res = CliRunner().invoke(export_bundle, _args(runs, tmp_path / "b"))
    assert res.exit_code == 2 and "--prior" in res.output and "PriorUNet" in res.output
    assert not (tmp_path / "b").exists()
    (tmp_path / "empty").mkdir()
    runs["--prior"] = tmp_path / "empty"
    res = CliRunner().invoke(export_bundle, _args(runs, tmp_path / "b"))
    assert res.exit_code == 2 and "holds no saved model" in res.output and "nfldm train prior" in res.output
    assert not (tmp_path / "b").exists()
