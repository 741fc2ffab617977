"""The perception critic: network contract, save/load, the bundle's optional critic/ part, the critic Fréchet
distance on known answers, the view data, and training on the tiny capture beating chance."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from nfldm_sdk.labels.classes import DEFAULT_CLASSES
from nfldm_sdk.models.bundle import BundleError, read_manifest
from nfldm_sdk.models.critic import (CriticConfig, CriticUnavailableError, PerceptionCritic, add_critic_to_bundle,
                                     bundle_has_critic, load_critic_part)
from nfldm_training.configs.critic import CRITIC_PRESETS, get_critic_preset
from nfldm_training.configs.names import PRESET_NAMES
from nfldm_training.configs.run_config import load_run_config, save_run_config
from nfldm_training.errors import TrainingError
from nfldm_training.metrics.cfd import critic_frechet_distance
from nfldm_training.modules.critic import flip_views

pytestmark = pytest.mark.usefixtures("one_thread_module")


def _critic(seed: int = 0) -> PerceptionCritic:
    torch.manual_seed(seed)
    return PerceptionCritic(get_critic_preset("tiny").critic).eval()


# ------------------------------------------------------------------------------------------------ the network
def test_critic_shapes_tags_and_features():
    critic = _critic()
    K, D = DEFAULT_CLASSES.num_classes, critic.config.feature_dim
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert critic(x).shape == (3, K, 64, 64)
    assert critic.features(x).shape == (3, D) and D == critic.config.widths[-1]
    # another size: predictions come back at the input size, features stay [N, D]
    y = torch.rand(2, 3, 48, 80)
    tags = critic.predict_tags(y)
    assert tags.shape == (2, 48, 80) and tags.dtype == torch.uint8
    assert set(tags.unique().tolist()) <= set(DEFAULT_CLASSES.representative_tags.tolist())
    assert critic.features(y).shape == (2, D)
    # the tags are the representative tags of the predicted classes
    assert torch.equal(critic.predict_tags(x), torch.as_tensor(DEFAULT_CLASSES.representative_tags)[critic(x).argmax(1)])
    # no batch coupling (GroupNorm): an image's logits do not depend on the rest of the batch
    assert torch.allclose(critic(x[:1]), critic(x)[:1], atol=1e-5)
    with pytest.raises(ValueError, match=r"images \[N, 3, H, W\]"):
        critic(torch.rand(3, 64, 64))


def test_tiny_critic_is_small_and_the_presets_are_complete():
    n = sum(p.numel() for p in _critic().parameters())
    assert 20_000 < n < 100_000                                   # "a few 10k parameters" (61k)
    assert tuple(CRITIC_PRESETS) == PRESET_NAMES
    for name in PRESET_NAMES:
        p = get_critic_preset(name)
        assert p.critic.classes == DEFAULT_CLASSES.to_config()
    with pytest.raises(ValueError, match="flip is a probability"):
        get_critic_preset("tiny", {"train.flip": 2.0})
    with pytest.raises(ValueError, match="widths"):
        CriticConfig(widths=())


def test_save_load_round_trip_gives_identical_logits(tmp_path):
    critic = _critic(3)
    with torch.no_grad():                       # non-default GroupNorm affine weights are saved too
        for m in critic.modules():
            if isinstance(m, torch.nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    critic.save_pretrained(tmp_path / "c")
    loaded = PerceptionCritic.from_pretrained(tmp_path / "c")
    x = torch.rand(2, 3, 64, 64)
    assert loaded.config == critic.config and loaded.classes == DEFAULT_CLASSES
    assert torch.equal(loaded(x), critic(x))
    assert json.loads((tmp_path / "c" / "config.json").read_text())["_class"] == "nfldm_sdk.models.critic.PerceptionCritic"


def test_critic_run_config_round_trip(tmp_path):
    section = get_critic_preset("tiny", {"train.max_steps": 7})
    path = save_run_config(tmp_path / "config.json", "critic", "tiny", section)
    assert load_run_config(path, "critic") == ("tiny", section, {})
    with pytest.raises(TrainingError, match="nfldm train critic"):
        load_run_config(path, "prior")


# ------------------------------------------------------------------------------------------------ the bundle part
def test_bundle_critic_part_round_trip(tmp_path, tiny_generator, write_tiny_bundle):
    bundle = write_tiny_bundle(tmp_path / "bundle", tiny_generator)
    before = read_manifest(bundle)
    # a bundle without the part loads as before and says how to add one
    assert not bundle_has_critic(bundle)
    with pytest.raises(CriticUnavailableError, match="nfldm train critic"):
        load_critic_part(bundle)
    critic = _critic(4)
    critic.save_pretrained(tmp_path / "run" / "model")
    part = add_critic_to_bundle(bundle, tmp_path / "run")          # a run directory resolves to RUN/model
    after = read_manifest(bundle)
    assert part == bundle / "critic" and bundle_has_critic(bundle)
    assert after.bundle_hash == before.bundle_hash                 # optional parts leave the identity unchanged
    assert after.parts["critic"]["class"] == "nfldm_sdk.models.critic.PerceptionCritic"
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(load_critic_part(bundle)(x), critic(x))
    from nfldm_sdk.pipelines.generator import SceneGenerator

    assert SceneGenerator.from_pretrained(bundle).bundle_hash == before.bundle_hash
    # another network is refused before anything is copied; a changed part is refused when loading
    with pytest.raises(ValueError, match="not a nfldm_sdk.models.critic.PerceptionCritic"):
        add_critic_to_bundle(bundle, bundle / "scene_ae")
    (part / "config.json").write_text((part / "config.json").read_text().replace('"blocks_per_stage": 1',
                                                                                 '"blocks_per_stage": 2'))
    with pytest.raises(BundleError, match="critic.*changed since export"):
        load_critic_part(bundle)


# ------------------------------------------------------------------------------------------------ CFD
def test_critic_frechet_distance_known_values():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 8)) @ rng.normal(size=(8, 8))     # a correlated set
    assert critic_frechet_distance(a, a.copy()) == pytest.approx(0.0, abs=1e-6)
    shift = rng.normal(size=8)
    # a shifted copy has the same covariance: CFD = ‖Δμ‖² exactly
    assert critic_frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-6)
    with pytest.raises(TrainingError, match="at least 2 images"):
        critic_frechet_distance(a[:1], a)
    with pytest.raises(TrainingError, match=r"\[N, D\]"):
        critic_frechet_distance(a, a[:, :4])


# ------------------------------------------------------------------------------------------------ data
def test_flip_views_moves_labels_with_pixels():
    images = torch.arange(2 * 3 * 2 * 4, dtype=torch.float32).reshape(2, 3, 2, 4)
    target = torch.arange(2 * 2 * 4).reshape(2, 2, 4)
    im, t = flip_views(images, target, torch.tensor([True, False]))
    assert torch.equal(im[0, :, :, 0], images[0, :, :, 3]) and torch.equal(t[0, :, 0], target[0, :, 3])
    assert torch.equal(im[1], images[1]) and torch.equal(t[1], target[1])


def test_view_dataset_uses_stage_one_split(tiny_capture):
    import sim_bridge
    from nfldm_training.data.capture_views import CaptureViewDataset
    from nfldm_training.data.capture_windows import SceneWindowDataset, resize_images, resize_labels

    train = CaptureViewDataset([tiny_capture], (32, 32), "train", 0.2)
    val = CaptureViewDataset([tiny_capture], (32, 32), "val", 0.2)
    assert len(train) == len(val) == 8 * 6                       # 2 episodes x 8 frames x 6 cameras, one held out
    s1_train = SceneWindowDataset([tiny_capture], 2, image_size=(32, 32), split="train", val_fraction=0.2)
    s1_val = SceneWindowDataset([tiny_capture], 2, image_size=(32, 32), split="val", val_fraction=0.2)
    assert {r.episode for r in train.frames.refs} == {r.episode for r in s1_train.refs} == {0}
    assert {r.episode for r in val.frames.refs} == {r.episode for r in s1_val.refs} == {1}
    image, tags = val[7]                                         # frame-major: frame 1, camera 1 of episode 1
    ep = sim_bridge.open_store(tiny_capture).episode(1)
    assert torch.equal(image, resize_images(ep.rgb[1, [1]], (32, 32))[0])
    assert torch.equal(tags, resize_labels(ep.semantic[1, [1]], (32, 32))[0]) and tags.dtype == torch.uint8


# ------------------------------------------------------------------------------------------------ training
@pytest.mark.slow
def test_critic_trains_on_training_episodes_and_beats_chance(tiny_capture, tmp_path):
    from nfldm_training.modules.critic import train_critic

    preset = get_critic_preset("tiny", {"train.max_steps": 120, "train.val_interval": 120, "train.batch_size": 8})
    run = tmp_path / "critic"
    r = train_critic([tiny_capture], preset, run, preset_name="tiny", accelerator="cpu", progress=False,
                     log=lambda m: None)
    assert (r.train_views, r.val_views, r.global_step) == (48, 48, 120)
    # Measured on the tiny capture after 120 steps of 8 views (seeds 0-3, ~11 s): held-out mIoU 0.36-0.42 against a
    # majority-class baseline of 0.033 and an untrained 0.02-0.05 (pixel accuracy 0.69-0.81, sky IoU >= 0.92); the
    # margin of 0.2 leaves room for noise.
    assert r.final.miou > r.final.majority_miou + 0.2 and r.final.miou > r.untrained.miou + 0.2
    assert r.final.class_iou["sky"] > 0.8 and r.final.pixel_accuracy > 0.6
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["final"]["miou"] == pytest.approx(r.final.miou) and metrics["untrained"]["step"] == 0
    loaded = PerceptionCritic.from_pretrained(r.model_dir)
    assert load_run_config(run / "config.json", "critic").section == preset
    # a rerun resumes the finished run: no step is trained again, the untrained figures are kept
    again = train_critic([tiny_capture], preset, run, preset_name="tiny", accelerator="cpu", progress=False,
                         log=lambda m: None)
    assert again.resumed_from and again.global_step == 120 and again.untrained == r.untrained
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(PerceptionCritic.from_pretrained(again.model_dir)(x), loaded(x))


def test_train_critic_cli_adds_the_part_to_a_bundle(tiny_capture, tmp_path, tiny_generator, write_tiny_bundle):
    from nfldm_sdk.cli.main import main

    bundle = write_tiny_bundle(tmp_path / "bundle", tiny_generator)
    args = ["train", "critic", tiny_capture, "--preset", "tiny", "--out", str(tmp_path / "run"), "--max-steps", "2",
            "--set", "train.val_interval=2", "--accelerator", "cpu", "--no-progress", "--bundle", str(bundle)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "held-out mIoU" in r.output and "added to" in r.output and bundle_has_critic(bundle)
    assert load_critic_part(bundle).config == get_critic_preset("tiny").critic
    bad = CliRunner().invoke(main, ["train", "critic", tiny_capture, "--preset", "tiny", "--out", str(tmp_path / "run2"),
                                    "--bundle", str(tmp_path)])
    assert bad.exit_code != 0 and "not a model bundle" in bad.output and not (tmp_path / "run2").exists()
