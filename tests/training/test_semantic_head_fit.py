"""`nfldm add-semantic-head`: a head fitted on a frozen stage 1 and written into a bundle trained without one."""
import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.cli.main import main
from nfldm_sdk.labels.classes import DEFAULT_CLASSES
from nfldm_sdk.models.bundle import load_part, read_manifest
from nfldm_sdk.models.scene_ae import SceneAutoEncoder
from nfldm_training.modules.semantic_head_fit import with_semantic_head

pytestmark = pytest.mark.usefixtures("one_thread_module")


def test_with_semantic_head_keeps_every_weight_and_the_rgb_render(tiny_generator):
    plain_cfg = dataclasses.replace(tiny_generator.scene_ae.config, semantic_classes=())
    plain = SceneAutoEncoder(plain_cfg)
    plain.load_state_dict({k: v for k, v in tiny_generator.scene_ae.state_dict().items()
                           if not k.startswith("semantic_head.")})
    headed = with_semantic_head(plain)
    assert plain.semantic_head is None and headed.semantic_head is not None
    assert headed.config.classes == DEFAULT_CLASSES
    field = tiny_generator.generate(1, seed=0, steps=2)[0].field
    pose = torch.eye(4)
    pose[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])   # OpenCV z = scene x
    pose[2, 3] = 1.5
    H, W = plain_cfg.image_size
    cams = Cameras.from_fov(90.0, W, H, pose[None])
    a, b = plain.decode(field, cams), headed.decode(field, cams)
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.depth, b.depth)
    assert a.semantic is None and b.semantic is not None


@pytest.mark.slow
def test_add_semantic_head_to_a_bundle_without_one(tmp_path, tiny_generator, write_tiny_bundle, tiny_capture):
    bundle = write_tiny_bundle(tmp_path / "bundle", tiny_generator, semantic=False)
    before = read_manifest(bundle)
    old = load_part(bundle, "scene_ae")
    assert old.semantic_head is None
    report = tmp_path / "fit.json"
    result = CliRunner().invoke(main, ["add-semantic-head", "--model", str(bundle), "--data", tiny_capture,
                                       "--steps", "30", "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "held-out mIoU" in result.output and "semantic head added" in result.output
    after = read_manifest(bundle)
    assert after.bundle_hash != before.bundle_hash
    assert after.parts["latent_ae"] == before.parts["latent_ae"]
    new = load_part(bundle, "scene_ae")            # verifies the recorded sha256
    assert new.semantic_head is not None and new.config.classes == DEFAULT_CLASSES
    old_state, new_state = old.state_dict(), new.state_dict()
    assert all(torch.equal(old_state[k], new_state[k]) for k in old_state)
    figures = json.loads(report.read_text())
    assert figures["val_windows"] > 0 and 0.0 <= figures["val_miou"] <= 1.0
    assert figures["bundle_hash"] == after.bundle_hash
    assert not (bundle / "scene_ae.partial").exists()
