"""A corrupted bundle part gives a `BundleError` naming the part and the file, for every part (the SDS prior
included), whatever the corruption (issue 12, item 9)."""
from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from nfldm_sdk.errors import NfldmError
from nfldm_sdk.pipelines.generator import BundleError, SceneGenerator
from nfldm_sdk.guidance.guidance import PriorConfig, PriorGuidance, PriorUNet, add_prior_to_bundle
from nfldm_sdk.persistence import ModelFileError, ModelNotFoundError, read_config, resolve_model_dir

pytestmark = pytest.mark.usefixtures("one_thread_module")

TINY_PRIOR = PriorConfig(image_size=(16, 16), block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                         up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1, attention_head_dim=8,
                         norm_num_groups=4)


@pytest.fixture(scope="module")
def bundle_with_prior(tmp_path_factory, tiny_generator, write_tiny_bundle):
    """A tiny bundle of random weights with a `prior/` part."""
    root = tmp_path_factory.mktemp("bundle")
    path = write_tiny_bundle(root / "tiny", tiny_generator)
    torch.manual_seed(0)
    PriorUNet(TINY_PRIOR).save_pretrained(root / "prior_run" / "model")
    add_prior_to_bundle(path, root / "prior_run")
    return path


def _copy(bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(bundle, dst)
    return dst


def _load(bundle, part, verify):
    if part == "prior":
        return PriorGuidance.from_bundle(bundle, verify=verify)
    return SceneGenerator.from_pretrained(bundle, verify=verify)


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("part", ["scene_ae", "denoiser_c", "prior"])
def test_malformed_config_json_names_the_part_and_the_file(bundle_with_prior, tmp_path, part, verify):
    b = _copy(bundle_with_prior, tmp_path)
    config = b / part / "config.json"
    config.write_text(config.read_text()[:40] + ",,}")                  # a hand edit gone wrong
    with pytest.raises(BundleError) as info:
        _load(b, part, verify)
    msg = str(info.value)
    assert not isinstance(info.value, json.JSONDecodeError) and isinstance(info.value, NfldmError)
    assert f"part '{part}'" in msg and f"{config} is not valid JSON" in msg and re.search(r"at line \d+ column \d+", msg)


@pytest.mark.parametrize("part", ["latent_ae", "denoiser_f", "prior"])
def test_truncated_weights_without_verify_name_the_part_and_the_file(bundle_with_prior, tmp_path, part):
    b = _copy(bundle_with_prior, tmp_path)
    weights = b / part / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:6])
    with pytest.raises(BundleError, match=rf"part '{part}'.* does not load: {re.escape(str(weights))} is not a "
                                          r"readable safetensors file .*truncated or corrupted"):
        _load(b, part, verify=False)
    with pytest.raises(BundleError, match=rf"part '{part}' changed since"):   # verify: refused by its sha256 first
        _load(b, part, verify=True)


def test_weights_cut_short_inside_the_data_name_the_file(bundle_with_prior, tmp_path):
    b = _copy(bundle_with_prior, tmp_path)
    weights = b / "denoiser_g" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:len(data) // 2])                             # a header that promises more bytes
    with pytest.raises(BundleError, match=rf"part 'denoiser_g'.*{re.escape(str(weights))} is not a readable safetensors"):
        SceneGenerator.from_pretrained(b, verify=False)


def test_hand_edited_stage1_grid_blames_stage1_and_its_files(bundle_with_prior, tmp_path):
    b = _copy(bundle_with_prior, tmp_path)
    config = b / "scene_ae" / "config.json"
    data = json.loads(config.read_text())
    data["grid_shape"] = [2 * data["grid_shape"][0], *data["grid_shape"][1:]]
    config.write_text(json.dumps(data))
    with pytest.raises(BundleError) as info:
        SceneGenerator.from_pretrained(b, verify=False)
    msg = str(info.value)
    assert msg.startswith(f"bundle {b}: part 'scene_ae' (stage 1, the scene auto-encoder) changed since export")
    assert f"{b / 'scene_ae'}/{{config.json,model.safetensors}}" in msg and "--scene-ae" in msg
    assert "--latent-ae" not in msg and "LAE was trained" not in msg       # the untouched LAE is not blamed
    with pytest.raises(BundleError, match=r"part 'scene_ae' changed since export"):
        SceneGenerator.from_pretrained(b)


def test_malformed_manifest_names_the_manifest(bundle_with_prior, tmp_path):
    b = _copy(bundle_with_prior, tmp_path)
    (b / "manifest.json").write_text('{"format": "nfldm.model_bundle", ')
    with pytest.raises(BundleError, match=rf"{re.escape(str(b / 'manifest.json'))} is not valid JSON.*nfldm export-bundle"):
        SceneGenerator.from_pretrained(b)
    (b / "manifest.json").write_text("[1, 2]")
    with pytest.raises(BundleError, match=r"manifest.json holds a JSON list, not an object.*nfldm export-bundle"):
        SceneGenerator.from_pretrained(b)


def test_pretrained_folder_errors_name_the_file(tmp_path):
    """Below bundles: `PretrainedMixin` and `resolve_model_dir` name the file they could not read."""
    folder = tmp_path / "prior"
    PriorUNet(TINY_PRIOR).save_pretrained(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match=rf"{re.escape(str(folder / 'config.json'))} is not valid JSON"):
        PriorUNet.from_pretrained(folder)
    with pytest.raises(ModelFileError, match="config.json is not valid JSON"):
        resolve_model_dir(folder)
    (folder / "config.json").write_text('{"_class": "nfldm_sdk.guidance.guidance.PriorUNet", "preset": "tiny"}')
    with pytest.raises(ModelFileError, match=rf"{re.escape(str(folder / 'config.json'))}: PriorConfig has no field"):
        PriorUNet.from_pretrained(folder)
    (folder / "config.json").write_text("[]")
    with pytest.raises(ModelFileError, match="holds a JSON list, not an object"):
        read_config(folder / "config.json")
    with pytest.raises(ModelNotFoundError, match=rf"{re.escape(str(tmp_path))} holds no saved model.*--out folder"):
        resolve_model_dir(tmp_path)
    assert issubclass(ModelNotFoundError, NfldmError) and issubclass(ModelNotFoundError, FileNotFoundError)


def test_broken_scene_json_names_the_file(tmp_path):
    """A scene folder whose scene.json is missing, not JSON, or not an object is a one-line project error."""
    from nfldm_sdk.pipelines.generator import NeuralScene, SceneFormatError, SceneNotFoundError

    with pytest.raises(SceneNotFoundError, match="scene.json not found"):
        NeuralScene.load(tmp_path)
    (tmp_path / "scene.json").write_text("{not json")
    with pytest.raises(SceneFormatError, match=re.escape(str(tmp_path / "scene.json")) + " is not valid JSON"):
        NeuralScene.load(tmp_path)
    (tmp_path / "scene.json").write_text("[1, 2]")
    with pytest.raises(SceneFormatError, match="holds a JSON list"):
        NeuralScene.load(tmp_path)
    assert issubclass(SceneFormatError, NfldmError) and issubclass(SceneNotFoundError, FileNotFoundError)
