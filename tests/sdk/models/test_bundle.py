"""Model bundles through `SceneGenerator.from_pretrained`: a round trip generates the same scenes, and a missing,
wrong-class or changed part, an unknown format version or inconsistent latent shapes are refused with the part named."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from nfldm_sdk.models.bundle import BundleError, write_bundle
from nfldm_sdk.models.denoisers import CDenoiser, CDenoiserConfig
from nfldm_sdk.pipelines.generator import SceneGenerator

pytestmark = pytest.mark.usefixtures("one_thread_module")


def _broken_copy(bundle, tmp_path):
    dst = tmp_path / "broken"
    shutil.copytree(bundle, dst)
    return dst


def test_bundle_round_trip_generates_the_same_scenes(tiny_bundle, tiny_generator):
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
    broken = _broken_copy(tiny_bundle, tmp_path)
    shutil.rmtree(broken / "denoiser_c")
    with pytest.raises(BundleError, match=r"part 'denoiser_c' is missing.*--ldm-c"):
        SceneGenerator.from_pretrained(broken)


def test_bundle_part_of_the_wrong_class_names_it(tiny_bundle, tmp_path):
    broken = _broken_copy(tiny_bundle, tmp_path)
    shutil.rmtree(broken / "denoiser_c")
    shutil.copytree(broken / "denoiser_g", broken / "denoiser_c")
    with pytest.raises(BundleError, match=r"part 'denoiser_c' holds a nfldm_sdk.models.denoisers.GDenoiser"):
        SceneGenerator.from_pretrained(broken)


def test_bundle_changed_part_and_manifest_version(tiny_bundle, tmp_path):
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
    gen = tiny_generator
    cfg = gen.denoisers["c"].config
    wrong = CDenoiser(CDenoiserConfig(**{**cfg.__dict__, "latent_shape": (4, 2, 8, 8)}))
    with pytest.raises(BundleError, match=r"part 'denoiser_c' models c of shape \(4, 2, 8, 8\).*\(4, 4, 8, 8\)"):
        write_bundle(tmp_path / "b", scene_ae=gen.scene_ae, latent_ae=gen.latent_ae,
                     denoisers={**gen.denoisers, "c": wrong}, latent_stats=gen.latent_stats,
                     noise_schedule=gen.noise_schedule)
    assert not (tmp_path / "b").exists()
