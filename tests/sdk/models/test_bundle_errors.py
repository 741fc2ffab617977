"""A corrupted bundle part gives a `BundleError` naming the part and the file, for every part (the SDS prior
included), whatever the corruption; bundles that record an old class path (`CLASS_PATH_ALIASES`) keep loading, and an
unknown class path is a clear error."""
from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from nfldm_sdk.errors import NfldmError
from nfldm_sdk.guidance.prior import PRIOR_PART, PriorGuidance, add_prior_to_bundle
from nfldm_sdk.models.prior_unet import PriorConfig, PriorUNet
from nfldm_sdk.persistence import (CLASS_PATH_ALIASES, ModelFileError, ModelNotFoundError, UnknownClassError, class_path,
                                   import_class, load_pretrained, names_class, read_config, resolve_model_dir)
from nfldm_sdk.models.bundle import PART_CLASSES, part_hash, read_manifest, shipped_model_path
from nfldm_sdk.models.bundle import BundleError
from nfldm_sdk.pipelines.generator import SceneGenerator

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
    (folder / "config.json").write_text('{"_class": "nfldm_sdk.models.prior_unet.PriorUNet", "preset": "tiny"}')
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
    from nfldm_sdk.pipelines.scene import NeuralScene, SceneFormatError, SceneNotFoundError

    with pytest.raises(SceneNotFoundError, match="scene.json not found"):
        NeuralScene.load(tmp_path)
    (tmp_path / "scene.json").write_text("{not json")
    with pytest.raises(SceneFormatError, match=re.escape(str(tmp_path / "scene.json")) + " is not valid JSON"):
        NeuralScene.load(tmp_path)
    (tmp_path / "scene.json").write_text("[1, 2]")
    with pytest.raises(SceneFormatError, match="holds a JSON list"):
        NeuralScene.load(tmp_path)
    assert issubclass(SceneFormatError, NfldmError) and issubclass(SceneNotFoundError, FileNotFoundError)


# ============================================================================================ class-path aliases
#: Where the prior network was before the guidance subpackage (the flat `nfldm_sdk/guidance.py`).
OLD_PRIOR_PATH = "nfldm_sdk.guidance.PriorUNet"


def _record_class(bundle, part: str, path: str) -> None:
    """Rewrite the class path a bundle part records (its config.json and the manifest), as an older nfldm wrote it,
    with the part's sha256 recomputed so that the part is an intact export."""
    config = bundle / part / "config.json"
    data = json.loads(config.read_text())
    data["_class"] = path
    config.write_text(json.dumps(data, indent=2) + "\n")
    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["parts"][part].update({"class": path, "sha256": part_hash(bundle / part)})
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")


@pytest.fixture(scope="module")
def old_bundle(bundle_with_prior, tmp_path_factory):
    """`bundle_with_prior` whose prior part records the class path bundles written before the restructure hold."""
    path = tmp_path_factory.mktemp("old_bundle") / "b"
    shutil.copytree(bundle_with_prior, path)
    _record_class(path, PRIOR_PART, OLD_PRIOR_PATH)
    return path


def test_every_alias_names_an_importable_class_by_its_current_path():
    assert OLD_PRIOR_PATH in CLASS_PATH_ALIASES
    for old, current in CLASS_PATH_ALIASES.items():
        cls = import_class(current)
        assert class_path(cls) == current, f"alias target {current} is not a current class path"
        assert import_class(old) is cls and names_class(old, cls) and names_class(current, cls)
        assert old != current


def test_a_bundle_whose_prior_records_the_old_class_path_loads(old_bundle):
    manifest = read_manifest(old_bundle)
    assert manifest.parts[PRIOR_PART]["class"] == OLD_PRIOR_PATH
    assert json.loads((old_bundle / PRIOR_PART / "config.json").read_text())["_class"] == OLD_PRIOR_PATH
    expected = load_pretrained(old_bundle / PRIOR_PART).state_dict()       # import_class reads the old path
    guidance = PriorGuidance.from_bundle(old_bundle)                        # load_part's class check and sha256
    assert isinstance(guidance.prior, PriorUNet)
    for name, tensor in guidance.prior.state_dict().items():
        assert torch.equal(tensor, expected[name])
    assert isinstance(PriorGuidance.from_pretrained(old_bundle / PRIOR_PART).prior, PriorUNet)   # the mixin's check
    SceneGenerator.from_pretrained(old_bundle)                              # the generative parts are untouched


def test_an_unknown_class_path_is_a_clear_error(old_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(old_bundle, bundle)
    unknown = "nfldm_sdk.guidance.NoSuchNet"
    _record_class(bundle, PRIOR_PART, unknown)
    with pytest.raises(BundleError, match=rf"part 'prior' holds a {unknown}, expected a {class_path(PriorUNet)}"):
        PriorGuidance.from_bundle(bundle)
    with pytest.raises(ValueError, match=rf"holds a {unknown}, not a {class_path(PriorUNet)}"):
        PriorUNet.from_pretrained(bundle / PRIOR_PART)
    with pytest.raises(UnknownClassError, match=rf"class '{unknown}' does not exist.*has no 'NoSuchNet'"):
        load_pretrained(bundle / PRIOR_PART)
    with pytest.raises(UnknownClassError, match="cannot import 'nfldm_sdk.no_such_module'"):
        import_class("nfldm_sdk.no_such_module.Net")
    assert issubclass(UnknownClassError, ImportError)


def test_the_shipped_bundle_records_current_class_paths():
    manifest = read_manifest(shipped_model_path())
    for part, cls in PART_CLASSES.items():
        assert manifest.parts[part]["class"] == class_path(cls)
        config = json.loads((shipped_model_path() / manifest.parts[part]["path"] / "config.json").read_text())
        assert config["_class"] == class_path(cls)
