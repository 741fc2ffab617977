"""`replace_scene_decoder` / `nfldm replace-decoder`: a bundle whose stage-1 decoder is swapped keeps every other part
and every field bit-identical, renders with the new decoder, gets a new hash, and a stage 1 that differs outside the
decoder (or another architecture) is refused before anything is written."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from click.testing import CliRunner

from nfldm_sdk.cameras.builders import preview_cameras
from nfldm_sdk.models.bundle import BundleError, read_manifest
from nfldm_sdk.models.bundle_decoder import replace_scene_decoder
from nfldm_sdk.models.scene_ae import SceneAutoEncoder
from nfldm_sdk.pipelines.generator import SceneGenerator


def _tuned(bundle, tmp_path, touch: str = "decoder."):
    """The bundle's stage 1 with every tensor under `touch` shifted by 0.01, saved to a folder."""
    model = SceneAutoEncoder.from_pretrained(bundle / "scene_ae")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(touch):
                p.add_(0.01)
    model.save_pretrained(tmp_path / f"tuned_{touch.rstrip('.')}")
    return tmp_path / f"tuned_{touch.rstrip('.')}"


def test_swap_keeps_the_other_parts_and_changes_the_render(tiny_bundle, tmp_path):
    src = SceneGenerator.from_pretrained(tiny_bundle)
    out = replace_scene_decoder(tiny_bundle, _tuned(tiny_bundle, tmp_path), tmp_path / "swapped")
    old, new = read_manifest(tiny_bundle), read_manifest(out)
    assert new.parts["scene_ae"]["sha256"] != old.parts["scene_ae"]["sha256"]
    assert all(new.parts[p] == old.parts[p] for p in old.parts if p != "scene_ae")
    assert new.bundle_hash != old.bundle_hash and new.bundle_hash == new.compute_hash()
    assert new.training_data["decoder_fine_tune"]["source_bundle"] == old.bundle_hash
    gen = SceneGenerator.from_pretrained(out)
    (scene_a,) = src.generate(num_scenes=1, seed=3, steps=2)
    (scene_b,) = gen.generate(num_scenes=1, seed=3, steps=2)
    assert torch.equal(scene_a.field.density, scene_b.field.density)     # same fields: LAE and denoisers unchanged
    assert torch.equal(scene_a.field.features, scene_b.field.features)
    cams = preview_cameras(32, 32)
    a, b = scene_a.render(cams), scene_b.render(cams)
    assert torch.equal(a.depth, b.depth)                                 # the geometry is the field's
    assert not torch.allclose(a.rgb, b.rgb)                              # the pixels are the new decoder's


def test_a_new_label_decoder_may_join_the_bundle_and_changes_only_the_labels(tiny_bundle, tmp_path):
    base = SceneAutoEncoder.from_pretrained(tiny_bundle / "scene_ae")
    cfg = dataclasses.replace(base.config, label_decoder_widths=base.config.decoder_widths)
    model = SceneAutoEncoder(cfg)
    model.load_state_dict(base.state_dict(), strict=False)
    with torch.no_grad():
        model.label_decoder.body[-1].bias.copy_(torch.linspace(-3.0, 3.0, model.label_decoder.body[-1].bias.numel()))
    model.save_pretrained(tmp_path / "labelled")
    out = replace_scene_decoder(tiny_bundle, tmp_path / "labelled", tmp_path / "with_labels")
    src, gen = SceneGenerator.from_pretrained(tiny_bundle), SceneGenerator.from_pretrained(out)
    assert gen.scene_ae.config.label_decoder_widths == cfg.label_decoder_widths
    (scene_a,) = src.generate(num_scenes=1, seed=3, steps=2)
    (scene_b,) = gen.generate(num_scenes=1, seed=3, steps=2)
    cams = preview_cameras(32, 32)
    a, b = scene_a.render(cams), scene_b.render(cams)
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.depth, b.depth)
    assert torch.equal(a.semantic == 11, b.semantic == 11)              # sky stays where the depth has no hit
    assert not torch.equal(a.semantic, b.semantic)
    # a label decoder of other widths than the bundle's own is another architecture
    other = SceneAutoEncoder(dataclasses.replace(cfg, label_decoder_widths=(4, 4, 4)))
    other.load_state_dict(base.state_dict(), strict=False)
    other.save_pretrained(tmp_path / "other_widths")
    with pytest.raises(BundleError, match="another architecture"):
        replace_scene_decoder(out, tmp_path / "other_widths", tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_a_stage1_changed_outside_the_decoder_is_refused_before_writing(tiny_bundle, tmp_path):
    with pytest.raises(BundleError, match="outside the decoder"):
        replace_scene_decoder(tiny_bundle, _tuned(tiny_bundle, tmp_path, "encoder."), tmp_path / "enc")
    other = SceneAutoEncoder(dataclasses.replace(SceneAutoEncoder.from_pretrained(tiny_bundle / "scene_ae").config,
                                                 feature_channels=3))
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(BundleError, match="another architecture"):
        replace_scene_decoder(tiny_bundle, tmp_path / "other", tmp_path / "arch")
    with pytest.raises(BundleError, match="source bundle"):
        replace_scene_decoder(tiny_bundle, _tuned(tiny_bundle, tmp_path), tiny_bundle)
    assert not (tmp_path / "enc").exists() and not (tmp_path / "arch").exists()


def test_cli_writes_the_bundle_and_names_errors(tiny_bundle, tmp_path):
    from nfldm_sdk.cli.main import main

    tuned = _tuned(tiny_bundle, tmp_path)
    res = CliRunner().invoke(main, ["replace-decoder", "--bundle", str(tiny_bundle), "--scene-ae", str(tuned),
                                    "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "stage-1 decoder from" in res.output
    res = CliRunner().invoke(main, ["replace-decoder", "--bundle", str(tiny_bundle), "--scene-ae", str(tuned),
                                    "--out", str(tmp_path / "b")])
    assert res.exit_code != 0 and "exists" in res.output
