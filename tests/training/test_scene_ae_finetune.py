"""Fine-tuning a trained stage 1 (`train_scene_ae(init_from=..., latent_ae=...)`, `nfldm train scene-ae --init-from`):
the decoder-only mode leaves the encoder, the semantic head and so every encoded field bit-identical, learns from LAE
reconstructions, survives a resume without storing the frozen LAE, and bad combinations are refused before anything
is written. Also the learning-rate schedule every stage shares (`lr_factor`) and `VoxelField.where`."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from click.testing import CliRunner

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_training.configs.base import TrainConfig
from nfldm_training.configs.sections import SceneAETrainConfig
from nfldm_training.runs.trainer import lr_factor

pytestmark = pytest.mark.usefixtures("one_thread_module")


# ============================================================================================ the schedule
def test_lr_factor_warmup_then_constant():
    cfg = TrainConfig(warmup_steps=4, max_steps=20)
    assert [lr_factor(s, cfg) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor(19, cfg) == 1.0


def test_lr_factor_cosine_known_values():
    cfg = TrainConfig(warmup_steps=10, max_steps=110, lr_schedule="cosine", min_lr_fraction=0.1)
    assert lr_factor(4, cfg) == pytest.approx(0.5)                       # still warming up
    assert lr_factor(10, cfg) == pytest.approx(1.0)                      # the decay starts at the warm-up's end
    assert lr_factor(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5)          # half way: cos(π/2) = 0
    assert lr_factor(35, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(110, cfg) == pytest.approx(0.1)
    assert lr_factor(500, cfg) == pytest.approx(0.1)                     # held at the floor after max_steps


def test_bad_schedule_settings_are_refused():
    with pytest.raises(ValueError, match="lr_schedule 'linear'"):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="min_lr_fraction"):
        TrainConfig(min_lr_fraction=1.5)
    with pytest.raises(ValueError, match="trainable 'encoder'"):
        SceneAETrainConfig(trainable="encoder")
    with pytest.raises(ValueError, match="needs trainable='decoder'"):
        SceneAETrainConfig(lae_input_fraction=0.5)
    with pytest.raises(ValueError, match="ssim_weight must be in"):
        SceneAETrainConfig(ssim_weight=-0.1)


def test_voxel_field_where_picks_whole_scenes():
    box = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    a = VoxelField(torch.zeros(3, 2, 2, 2), torch.zeros(3, 4, 2, 2, 2), box.expand(3, 2, 3).clone())
    b = VoxelField(torch.ones(3, 2, 2, 2), torch.ones(3, 4, 2, 2, 2), (box + 5.0).expand(3, 2, 3).clone())
    m = a.where(torch.tensor([True, False, True]), b)
    assert m.density.flatten(1).mean(1).tolist() == [1.0, 0.0, 1.0]
    assert m.features.flatten(1).mean(1).tolist() == [1.0, 0.0, 1.0]
    assert m.bounds[:, 0, 0].tolist() == [5.0, 0.0, 5.0]
    with pytest.raises(ValueError, match="pick"):
        a.where(torch.tensor([True]), b)


# ============================================================================================ decoder fine-tune
@pytest.fixture(scope="module")
def finetune_source(tmp_path_factory, tiny_generator):
    """``(root, preset)``: the tiny generator's stage 1 and LAE saved, and the tiny preset set up for a 3-step
    decoder-only fine-tune with half the fields replaced by LAE reconstructions, a cosine schedule and the image
    loss's SSIM term."""
    from nfldm_training.configs.presets import get_preset

    root = tmp_path_factory.mktemp("s1_finetune")
    tiny_generator.scene_ae.save_pretrained(root / "scene_ae")
    tiny_generator.latent_ae.save_pretrained(root / "latent_ae")
    preset = get_preset("tiny")
    tc = dataclasses.replace(preset.scene_ae_train, max_steps=3, val_interval=1000, val_batches=1, log_every=1,
                             warmup_steps=0, lr=1e-2, trainable="decoder", lae_input_fraction=0.5,
                             lr_schedule="cosine", image_loss="l1", ssim_weight=0.2)
    return root, dataclasses.replace(preset, scene_ae_train=tc)


def _run(root, preset, capture, name, **kw):
    from nfldm_training.modules.scene_ae import train_scene_ae

    logs: list[str] = []
    res = train_scene_ae([capture], preset, root / name, progress=False, log=logs.append, accelerator="cpu",
                         devices=1, **kw)
    return res, logs


def test_decoder_fine_tune_keeps_the_fields_and_trains_the_decoder(finetune_source, tiny_capture, tiny_generator):
    from nfldm_sdk.models.scene_ae import SceneAutoEncoder
    from nfldm_training.data.capture_windows import SceneWindowDataset, collate_windows

    root, preset = finetune_source
    res, logs = _run(root, preset, tiny_capture, "dec", init_from=root / "scene_ae", latent_ae=root / "latent_ae")
    assert any("training the decoder alone" in m for m in logs)
    assert res.global_step == 3
    src = tiny_generator.scene_ae.state_dict()
    tuned = SceneAutoEncoder.from_pretrained(res.model_dir)
    new = tuned.state_dict()
    for k, v in src.items():
        if k.startswith("decoder."):
            continue
        assert torch.equal(new[k], v), f"{k} changed in a decoder-only fine-tune"
    assert any(not torch.equal(new[k], v) for k, v in src.items() if k.startswith("decoder."))
    # the frozen encoder writes exactly the fields the later stages were trained on
    window = collate_windows([SceneWindowDataset([tiny_capture], 2, image_size=tuned.config.image_size)[0]])
    with torch.no_grad():
        a = tiny_generator.scene_ae.encode(window.images, window.cameras())
        b = tuned.encode(window.images, window.cameras())
    assert torch.equal(a.density, b.density) and torch.equal(a.features, b.features)
    metrics = json.loads((res.run_dir / "metrics.json").read_text())
    # validation through the frozen LAE; the initial figures are the source model's own
    assert metrics["untrained"]["psnr_lae"] is not None and metrics["final"]["psnr_lae"] is not None
    header = (next((res.run_dir / "logs").glob("version_*")) / "metrics.csv").read_text().splitlines()[0]
    assert "val/psnr_lae" in header and "train/image" in header and "train/depth" not in header


def test_resume_of_a_fine_tune_does_not_store_the_frozen_lae(finetune_source, tiny_capture):
    root, preset = finetune_source
    first, _ = _run(root, preset, tiny_capture, "resumed", init_from=root / "scene_ae", latent_ae=root / "latent_ae")
    ckpt = torch.load(root / "resumed" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert not [k for k in ckpt["state_dict"] if k.startswith("latent_ae.")]
    assert ckpt["lr_schedulers"][0]["_last_lr"][0] < preset.scene_ae_train.lr     # the cosine decay ran
    more = dataclasses.replace(preset, scene_ae_train=dataclasses.replace(preset.scene_ae_train, max_steps=5))
    again, logs = _run(root, more, tiny_capture, "resumed", init_from=root / "scene_ae", latent_ae=root / "latent_ae")
    assert again.resumed_from is not None and again.global_step == 5
    assert not any("weights from" in m for m in logs)                              # the checkpoint, not the source


def test_decoder_mode_without_a_source_is_refused_before_writing(finetune_source, tiny_capture):
    from nfldm_training.errors import TrainingError

    root, preset = finetune_source
    with pytest.raises(TrainingError, match="--init-from"):
        _run(root, preset, tiny_capture, "no_source", latent_ae=root / "latent_ae")
    with pytest.raises(TrainingError, match="--latent-ae"):
        _run(root, preset, tiny_capture, "no_lae", init_from=root / "scene_ae")
    assert not (root / "no_source").exists() and not (root / "no_lae").exists()


def test_another_architecture_is_refused_before_writing(finetune_source, tiny_capture):
    from nfldm_training.errors import TrainingError

    root, preset = finetune_source
    wider = dataclasses.replace(preset, scene_ae=dataclasses.replace(preset.scene_ae, feature_channels=12))
    with pytest.raises(TrainingError, match=r"architecture differs .*feature_channels"):
        _run(root, wider, tiny_capture, "wider", init_from=root / "scene_ae", latent_ae=root / "latent_ae")
    assert not (root / "wider").exists()


def test_cli_names_a_missing_model(finetune_source, tiny_capture, tmp_path):
    from nfldm_sdk.cli.main import main

    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(main, ["train", "scene-ae", "--data", tiny_capture, "--preset", "tiny", "--out",
                                    str(tmp_path / "run"), "--init-from", str(tmp_path / "empty"), "--no-progress"])
    assert res.exit_code != 0 and "no saved scene auto-encoder" in res.output
    assert not (tmp_path / "run").exists()


# ============================================================================================ label decoder fine-tune
def _label_preset(preset, **train):
    """`preset` set up for a 3-step label-decoder fine-tune (class-balanced cross-entropy, half the fields V̂)."""
    mc = dataclasses.replace(preset.scene_ae, label_decoder_widths=preset.scene_ae.decoder_widths)
    tc = dataclasses.replace(preset.scene_ae_train, trainable="labels", semantic_balance=0.5, image_loss="l2",
                             ssim_weight=0.0, **train)
    return dataclasses.replace(preset, scene_ae=mc, scene_ae_train=tc)


def test_label_decoder_fine_tune_trains_it_alone_and_keeps_the_images(finetune_source, tiny_capture, tiny_generator):
    from nfldm_sdk.models.scene_ae import SceneAutoEncoder
    from nfldm_training.data.capture_windows import SceneWindowDataset, collate_windows

    root, preset = finetune_source
    res, logs = _run(root, _label_preset(preset), tiny_capture, "labels", init_from=root / "scene_ae",
                     latent_ae=root / "latent_ae")
    assert any("training the label decoder alone, a new one" in m for m in logs)
    src = tiny_generator.scene_ae.state_dict()
    tuned = SceneAutoEncoder.from_pretrained(res.model_dir)
    new = tuned.state_dict()
    assert all(torch.equal(new[k], v) for k, v in src.items()), "a label-decoder fine-tune changed another part"
    assert float(tuned.label_decoder.body[-1].weight.abs().sum()) > 0           # the zero-initialised output learnt
    window = collate_windows([SceneWindowDataset([tiny_capture], 2, image_size=tuned.config.image_size)[0]])
    with torch.no_grad():
        field = tuned.encode(window.images, window.cameras())
        a, b = tiny_generator.scene_ae.decode(field, window.cameras()), tuned.decode(field, window.cameras())
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.depth, b.depth)            # images: the same decoder's
    assert not torch.allclose(a.semantic, b.semantic)                             # labels: the new decoder's
    header = (next((res.run_dir / "logs").glob("version_*")) / "metrics.csv").read_text().splitlines()[0]
    assert "train/semantic" in header and "train/image" not in header
    # continuing from a stage 1 that has one keeps its weights (not "a new one")
    again, logs = _run(root, _label_preset(preset, max_steps=1, lae_input_fraction=0.0), tiny_capture, "labels_again",
                       init_from=res.model_dir)
    assert any(m.endswith("(training the label decoder alone)") for m in logs)


def test_label_decoder_settings_are_refused_before_writing(finetune_source, tiny_capture):
    from nfldm_training.errors import TrainingError

    root, preset = finetune_source
    no_widths = dataclasses.replace(preset, scene_ae_train=dataclasses.replace(
        preset.scene_ae_train, trainable="labels", lae_input_fraction=0.0))
    with pytest.raises(TrainingError, match="label_decoder_widths"):
        _run(root, no_widths, tiny_capture, "no_widths", init_from=root / "scene_ae")
    full = _label_preset(preset, lae_input_fraction=0.0)
    full = dataclasses.replace(full, scene_ae_train=dataclasses.replace(full.scene_ae_train, trainable="all"))
    with pytest.raises(TrainingError, match="trainable=labels"):
        _run(root, full, tiny_capture, "full")
    with pytest.raises(TrainingError, match="--init-from"):
        _run(root, _label_preset(preset, lae_input_fraction=0.0), tiny_capture, "no_source")
    # a source whose label decoder has other widths than the run's
    from nfldm_sdk.models.scene_ae import SceneAutoEncoder

    other = SceneAutoEncoder(dataclasses.replace(preset.scene_ae, label_decoder_widths=(4, 4, 4)))
    other.save_pretrained(root / "other_widths_src")
    with pytest.raises(TrainingError, match="label decoder differs"):
        _run(root, _label_preset(preset, lae_input_fraction=0.0), tiny_capture, "other_widths",
             init_from=root / "other_widths_src")
    assert not any((root / n).exists() for n in ("no_widths", "full", "no_source", "other_widths"))
    with pytest.raises(ValueError, match="semantic_balance"):
        SceneAETrainConfig(semantic_balance=-1.0)
