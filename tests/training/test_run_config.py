"""`RUN/config.json`: one schema for the four training stages (`nfldm_training.configs.run_config`), the runs written
before it still read, a clear error for another stage's run, and the preset table importable without a cycle."""
from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from nfldm_sdk.persistence import config_to_dict
from nfldm_training.cli.common import resumed_run_config
from nfldm_training.configs.base import TrainConfig
from nfldm_training.configs.latent import LATENT_PRESETS, get_latent_preset
from nfldm_training.configs.ldm import LDM_PRESETS, get_ldm_preset
from nfldm_training.configs.presets import PRESETS, get_preset
from nfldm_training.configs.prior import PRIOR_PRESETS, get_prior_preset
from nfldm_training.configs.run_config import (RUN_CONFIG_FORMAT, RUN_CONFIG_VERSION, STAGE_SECTIONS, load_run_config,
                                               save_run_config)
from nfldm_training.configs.sections import (LatentAETrainConfig, LDMTrainConfig, PriorTrainConfig,
                                             SceneAETrainConfig)
from nfldm_training.errors import TrainingError, TrainingInputNotFound

ROOT = Path(__file__).resolve().parents[2]

#: The tiny preset's section of each stage, and the keys a run records beside it.
SECTIONS = {
    "scene-ae": (lambda: get_preset("tiny"), {}),
    "latent-ae": (lambda: get_latent_preset("tiny"), {}),
    "ldm": (lambda: get_ldm_preset("tiny"), {"level": "c"}),
    "prior": (lambda: get_prior_preset("tiny"), {}),
}

#: ``config.json`` of runs written before the schema (no "format" key: the bare section; preset tiny, ldm level c),
#: as the stage writers of nfldm 0.1.0 wrote them (there indented; the JSON is the same).
LEGACY_CONFIGS = {
    "scene-ae": (
        '{"name": "tiny", "description": "CI on CPU: seconds per stage (64x64 images, 8x32x32 voxels)", '
        '"scene_ae": {"image_size": [64, 64], "downsample": 4, "depth_bins": 16, "near": 1.0, "far": 60.0, '
        '"bin_spacing": "linear", "feature_channels": 8, "grid_shape": [8, 32, 32], "bounds": [[-16.0, -32.0, '
        '-2.0], [48.0, 32.0, 6.0]], "render_samples": 32, "encoder_widths": [16, 32, 32], "decoder_widths": [32, '
        '32, 16], "blocks_per_stage": 1, "initial_density": 0.0}, "scene_ae_train": {"window": 2, "stride": 1, '
        '"cameras": null, "target_holdout": 0, "val_fraction": 0.2, "batch_size": 2, "lr": 0.003, '
        '"warmup_steps": 0, "weight_decay": 0.0001, "max_steps": 100, "image_loss": "l2", "image_weight": 1.0, '
        '"depth_loss": "l1", "depth_weight": 0.02, "grad_clip": 1.0, "val_interval": 50, "val_batches": null, '
        '"num_workers": 0, "cache_windows": true, "precision": "32-true", "seed": 0, "log_every": 5}, '
        '"latent_ae": {"grid_shape": [8, 32, 32], "feature_channels": 8, "bounds": [[-16.0, -32.0, -2.0], [48.0, '
        '32.0, 6.0]], "g_dim": 16, "coarse_channels": 4, "coarse_downsample_xy": 4, "coarse_downsample_z": 2, '
        '"fine_channels": 4, "coarse_codebook_size": 64, "fine_codebook_size": 64, "codebook_update": "ema", '
        '"ema_decay": 0.99, "commitment_beta": 0.25, "dead_code_steps": 20, "kl_weight": 1e-05, '
        '"g_encoder_widths": [16, 32, 32], "c_encoder_widths": [16, 32, 32], "f_encoder_width": 16, '
        '"f_encoder_blocks": 1, "decoder_widths": [32, 32, 16], "blocks_per_stage": 1, "latent_stats": null}, '
        '"latent_ae_train": {"batch_size": 2, "lr": 0.002, "warmup_steps": 0, "weight_decay": 0.0001, '
        '"max_steps": 60, "grad_clip": 1.0, "voxel_loss": "l1", "density_loss": "l2", "density_weight": 1.0, '
        '"density_log_eps": 0.001, "feature_weight": 1.0, "image_loss": "l1", "image_weight": 1.0, '
        '"render_views": 4, "sample_g": true, "val_fraction": 0.2, "val_interval": 30, "val_batches": null, '
        '"num_workers": 0, "precision": "32-true", "seed": 0, "log_every": 5}, "ldm": {"denoiser_g": {"g_dim": 16, '
        '"width": 64, "num_blocks": 2, "time_channels": 32, "dropout": 0.0}, "denoiser_c": {"latent_shape": [4, 4, '
        '8, 8], "g_dim": 16, "widths": [16, 32], "blocks_per_level": 1, "mid_attention": false, '
        '"attention_head_dim": 32, "norm_groups": 4, "embed_dim": 64, "time_channels": 32, "dropout": 0.0}, '
        '"denoiser_f": {"latent_shape": [4, 32, 32], "c_shape": [4, 4, 8, 8], "g_dim": 16, "widths": [16, 32], '
        '"blocks_per_level": 1, "mid_attention": false, "attention_head_dim": 32, "norm_groups": 4, '
        '"embed_dim": 64, "time_channels": 32, "dropout": 0.0}, "schedule": {"num_train_timesteps": 1000, '
        '"beta_schedule": "squaredcos_cap_v2", "beta_start": 0.0001, "beta_end": 0.02, '
        '"prediction_type": "v_prediction", "timestep_spacing": "trailing"}, "train_g": {"batch_size": 8, '
        '"lr": 0.001, "warmup_steps": 0, "weight_decay": 0.0, "max_steps": 200, "ema_decay": 0.99, '
        '"loss_weighting": "none", "snr_gamma": 5.0, "grad_clip": 1.0, "val_fraction": 0.2, "val_interval": 100, '
        '"num_workers": 0, "precision": "32-true", "seed": 0, "log_every": 10}, "train_c": {"batch_size": 4, '
        '"lr": 0.001, "warmup_steps": 0, "weight_decay": 0.0, "max_steps": 200, "ema_decay": 0.99, '
        '"loss_weighting": "none", "snr_gamma": 5.0, "grad_clip": 1.0, "val_fraction": 0.2, "val_interval": 100, '
        '"num_workers": 0, "precision": "32-true", "seed": 0, "log_every": 10}, "train_f": {"batch_size": 4, '
        '"lr": 0.001, "warmup_steps": 0, "weight_decay": 0.0, "max_steps": 200, "ema_decay": 0.99, '
        '"loss_weighting": "none", "snr_gamma": 5.0, "grad_clip": 1.0, "val_fraction": 0.2, "val_interval": 100, '
        '"num_workers": 0, "precision": "32-true", "seed": 0, "log_every": 10}, "sampler": {"sampler": "ddim", '
        '"steps": 50, "snap_to_codebook": true}}, "prior": {"prior": {"image_size": [32, 32], '
        '"block_out_channels": [16, 32], "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], '
        '"up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "layers_per_block": 1, "attention_head_dim": 8, '
        '"norm_num_groups": 8, "schedule": {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", '
        '"beta_start": 0.0001, "beta_end": 0.02, "prediction_type": "v_prediction", '
        '"timestep_spacing": "trailing"}}, "train": {"batch_size": 8, "lr": 0.001, "warmup_steps": 0, '
        '"weight_decay": 0.0, "max_steps": 40, "ema_decay": 0.99, "cond_dropout": 0.1, "artifact_fraction": 0.5, '
        '"artifact_scenes": 2, "artifact_views": 4, "generate_steps": 4, "frame_stride": 2, "val_fraction": 0.1, '
        '"val_interval": 20, "grad_clip": 1.0, "num_workers": 0, "precision": "32-true", "seed": 0, '
        '"log_every": 5}}, "_nfldm_version": "0.1.0"}'
    ),
    "latent-ae": (
        '{"name": "tiny", "description": "CI on CPU: seconds per stage (64x64 images, 8x32x32 voxels)", '
        '"latent_ae": {"grid_shape": [8, 32, 32], "feature_channels": 8, "bounds": [[-16.0, -32.0, -2.0], [48.0, '
        '32.0, 6.0]], "g_dim": 16, "coarse_channels": 4, "coarse_downsample_xy": 4, "coarse_downsample_z": 2, '
        '"fine_channels": 4, "coarse_codebook_size": 64, "fine_codebook_size": 64, "codebook_update": "ema", '
        '"ema_decay": 0.99, "commitment_beta": 0.25, "dead_code_steps": 20, "kl_weight": 1e-05, '
        '"g_encoder_widths": [16, 32, 32], "c_encoder_widths": [16, 32, 32], "f_encoder_width": 16, '
        '"f_encoder_blocks": 1, "decoder_widths": [32, 32, 16], "blocks_per_stage": 1, "latent_stats": null}, '
        '"latent_ae_train": {"batch_size": 2, "lr": 0.002, "warmup_steps": 0, "weight_decay": 0.0001, '
        '"max_steps": 60, "grad_clip": 1.0, "voxel_loss": "l1", "density_loss": "l2", "density_weight": 1.0, '
        '"density_log_eps": 0.001, "feature_weight": 1.0, "image_loss": "l1", "image_weight": 1.0, '
        '"render_views": 4, "sample_g": true, "val_fraction": 0.2, "val_interval": 30, "val_batches": null, '
        '"num_workers": 0, "precision": "32-true", "seed": 0, "log_every": 5}, "_nfldm_version": "0.1.0"}'
    ),
    "ldm": (
        '{"level": "c", "preset": "tiny", "denoiser_g": {"g_dim": 16, "width": 64, "num_blocks": 2, '
        '"time_channels": 32, "dropout": 0.0}, "denoiser_c": {"latent_shape": [4, 4, 8, 8], "g_dim": 16, '
        '"widths": [16, 32], "blocks_per_level": 1, "mid_attention": false, "attention_head_dim": 32, '
        '"norm_groups": 4, "embed_dim": 64, "time_channels": 32, "dropout": 0.0}, '
        '"denoiser_f": {"latent_shape": [4, 32, 32], "c_shape": [4, 4, 8, 8], "g_dim": 16, "widths": [16, 32], '
        '"blocks_per_level": 1, "mid_attention": false, "attention_head_dim": 32, "norm_groups": 4, '
        '"embed_dim": 64, "time_channels": 32, "dropout": 0.0}, "schedule": {"num_train_timesteps": 1000, '
        '"beta_schedule": "squaredcos_cap_v2", "beta_start": 0.0001, "beta_end": 0.02, '
        '"prediction_type": "v_prediction", "timestep_spacing": "trailing"}, "train_g": {"batch_size": 8, '
        '"lr": 0.001, "warmup_steps": 0, "weight_decay": 0.0, "max_steps": 200, "ema_decay": 0.99, '
        '"loss_weighting": "none", "snr_gamma": 5.0, "grad_clip": 1.0, "val_fraction": 0.2, "val_interval": 100, '
        '"num_workers": 0, "precision": "32-true", "seed": 0, "log_every": 10}, "train_c": {"batch_size": 4, '
        '"lr": 0.001, "warmup_steps": 0, "weight_decay": 0.0, "max_steps": 200, "ema_decay": 0.99, '
        '"loss_weighting": "none", "snr_gamma": 5.0, "grad_clip": 1.0, "val_fraction": 0.2, "val_interval": 100, '
        '"num_workers": 0, "precision": "32-true", "seed": 0, "log_every": 10}, "train_f": {"batch_size": 4, '
        '"lr": 0.001, "warmup_steps": 0, "weight_decay": 0.0, "max_steps": 200, "ema_decay": 0.99, '
        '"loss_weighting": "none", "snr_gamma": 5.0, "grad_clip": 1.0, "val_fraction": 0.2, "val_interval": 100, '
        '"num_workers": 0, "precision": "32-true", "seed": 0, "log_every": 10}, "sampler": {"sampler": "ddim", '
        '"steps": 50, "snap_to_codebook": true}, "_nfldm_version": "0.1.0"}'
    ),
    "prior": (
        '{"preset": "tiny", "prior": {"image_size": [32, 32], "block_out_channels": [16, 32], '
        '"down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], '
        '"layers_per_block": 1, "attention_head_dim": 8, "norm_num_groups": 8, '
        '"schedule": {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "beta_start": 0.0001, '
        '"beta_end": 0.02, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}}, '
        '"train": {"batch_size": 8, "lr": 0.001, "warmup_steps": 0, "weight_decay": 0.0, "max_steps": 40, '
        '"ema_decay": 0.99, "cond_dropout": 0.1, "artifact_fraction": 0.5, "artifact_scenes": 2, '
        '"artifact_views": 4, "generate_steps": 4, "frame_stride": 2, "val_fraction": 0.1, "val_interval": 20, '
        '"grad_clip": 1.0, "num_workers": 0, "precision": "32-true", "seed": 0, "log_every": 5}, '
        '"_nfldm_version": "0.1.0"}'
    ),
}


@pytest.mark.parametrize("stage", list(SECTIONS))
def test_every_stage_round_trips_through_the_one_schema(tmp_path, stage):
    make, extra = SECTIONS[stage]
    section = make()
    path = save_run_config(tmp_path / "run" / "config.json", stage, "tiny", section, **extra)
    data = json.loads(path.read_text())
    assert {k: data[k] for k in ("format", "version", "stage", "preset")} == {
        "format": RUN_CONFIG_FORMAT, "version": RUN_CONFIG_VERSION, "stage": stage, "preset": "tiny"}
    assert data["config"] == json.loads(json.dumps(config_to_dict(section))) and "_nfldm_version" in data
    assert "_class" not in data                                # not a model folder (nfldm_sdk.persistence.resolve_model_dir)
    assert set(data) == {"format", "version", "stage", "preset", "config", "_nfldm_version", *extra}
    saved = load_run_config(path, stage)
    assert saved == ("tiny", section, extra) and isinstance(saved.section, STAGE_SECTIONS[stage])


def test_the_writer_checks_the_section_and_the_stage_keys(tmp_path):
    with pytest.raises(TypeError, match="LDMPreset"):
        save_run_config(tmp_path / "c.json", "ldm", "tiny", get_prior_preset("tiny"), level="g")
    with pytest.raises(TypeError, match="level"):
        save_run_config(tmp_path / "c.json", "ldm", "tiny", get_ldm_preset("tiny"))
    with pytest.raises(ValueError, match="choose g, c or f"):
        save_run_config(tmp_path / "c.json", "ldm", "tiny", get_ldm_preset("tiny"), level="x")
    with pytest.raises(ValueError, match="unknown training stage 'vae'"):
        save_run_config(tmp_path / "c.json", "vae", "tiny", get_preset("tiny"))
    assert not (tmp_path / "c.json").exists()


def _holds(loaded, held) -> bool:
    """Whether `loaded` has every key of `held` with its value (recursively); `loaded` may have more keys."""
    if isinstance(held, dict):
        return isinstance(loaded, dict) and all(k in loaded and _holds(loaded[k], v) for k, v in held.items())
    return loaded == held


@pytest.mark.parametrize("stage", list(LEGACY_CONFIGS))
def test_runs_written_before_the_schema_still_read(tmp_path, stage):
    text = LEGACY_CONFIGS[stage]
    path = tmp_path / "config.json"
    path.write_text(text)
    saved = load_run_config(path, stage)
    held = {k: v for k, v in json.loads(text).items() if not k.startswith("_") and k not in ("level", "preset")}
    assert saved.preset == "tiny" and saved.extra == SECTIONS[stage][1]
    loaded = json.loads(json.dumps(config_to_dict(saved.section)))
    assert _holds(loaded, held)      # every value of the file; settings added since take their defaults
    # and they resume: the CLI's reader takes them as it takes a run of the schema
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    ctx = click.Context(click.Command("train", params=[click.Option(["--preset"], default="small")]))
    assert resumed_run_config(ctx, tmp_path, "small", True, stage) == saved
    assert resumed_run_config(ctx, tmp_path, "small", False, stage) is None    # --no-resume: a fresh run


def test_legacy_values_are_the_sections_values(tmp_path):
    (tmp_path / "ldm.json").write_text(LEGACY_CONFIGS["ldm"])
    _, ldm, extra = load_run_config(tmp_path / "ldm.json", "ldm")
    assert extra == {"level": "c"} and ldm.train_c.max_steps == 200 and ldm.denoiser_c.latent_shape == (4, 4, 8, 8)
    (tmp_path / "prior.json").write_text(LEGACY_CONFIGS["prior"])
    name, prior, _ = load_run_config(tmp_path / "prior.json", "prior")
    assert (name, prior.train.max_steps, prior.prior.image_size) == ("tiny", 40, (32, 32))
    (tmp_path / "ae.json").write_text(LEGACY_CONFIGS["scene-ae"])
    assert load_run_config(tmp_path / "ae.json", "scene-ae").section.scene_ae_train.image_loss == "l2"


@pytest.mark.parametrize("written, asked, command", [
    ("ldm", "latent-ae", "nfldm train ldm --level c"),
    ("scene-ae", "prior", "nfldm train scene-ae"),
    ("prior", "ldm", "nfldm train prior"),
])
def test_another_stages_run_is_a_clear_error(tmp_path, written, asked, command):
    path = tmp_path / "config.json"
    make, extra = SECTIONS[written]
    for legacy in (False, True):
        if legacy:
            path.write_text(LEGACY_CONFIGS[written])
        else:
            save_run_config(path, written, "tiny", make(), **extra)
        with pytest.raises(TrainingError) as e:
            load_run_config(path, asked)
        msg = str(e.value)
        assert str(path) in msg and f"a {written} run, not of a {asked} run" in msg
        assert f"`{command}`" in msg and "--out" in msg


def test_resuming_an_ldm_run_with_train_latent_ae_is_one_error_line(tmp_path):
    from nfldm_sdk.cli.main import main as nfldm_main

    run = tmp_path / "ldm_c"
    save_run_config(run / "config.json", "ldm", "tiny", get_ldm_preset("tiny"), level="c")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    (tmp_path / "voxels.zarr").mkdir()
    (tmp_path / "ae").mkdir()
    r = CliRunner().invoke(nfldm_main, ["train", "latent-ae", "--voxels", str(tmp_path / "voxels.zarr"), "--scene-ae",
                                        str(tmp_path / "ae"), "--out", str(run)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    assert str(run / "config.json") in lines[0] and "ldm run" in lines[0] and "nfldm train ldm --level c" in lines[0]


def test_what_is_not_a_run_config_is_named(tmp_path):
    with pytest.raises(TrainingInputNotFound, match="nfldm train prior"):
        load_run_config(tmp_path / "none.json", "prior")
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(TrainingError, match="not valid JSON"):
        load_run_config(bad, "ldm")
    bad.write_text(json.dumps({"_class": "nfldm_sdk.models.scene_ae.SceneAutoEncoder", "grid_shape": [8, 32, 32]}))
    with pytest.raises(TrainingError, match="not a run config"):                  # a model folder's config.json
        load_run_config(bad, "scene-ae")
    bad.write_text(json.dumps({"format": RUN_CONFIG_FORMAT, "version": RUN_CONFIG_VERSION + 1, "stage": "ldm"}))
    with pytest.raises(TrainingError, match="newer nfldm"):
        load_run_config(bad, "ldm")
    save_run_config(bad, "prior", "tiny", get_prior_preset("tiny"))
    data = json.loads(bad.read_text())
    data["config"]["train"]["max_stepz"] = 3
    bad.write_text(json.dumps(data))
    with pytest.raises(TrainingError, match=r"config.json: PriorTrainConfig has no field\(s\) \['max_stepz'\]"):
        load_run_config(bad, "prior")


def test_the_stage_views_import_without_the_table_first_and_without_a_cycle():
    code = ("import sys\n"
            "import nfldm_training.configs.ldm as m\n"
            "assert isinstance(m.LDM_PRESETS, dict) and set(m.LDM_PRESETS) == {'tiny', 'default', 'small', 'paper'}\n"
            "import nfldm_training.configs.latent as l, nfldm_training.configs.prior as p\n"
            "assert isinstance(l.LATENT_PRESETS, dict) and isinstance(p.PRIOR_PRESETS, dict)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    for f in (ROOT / "training" / "configs").glob("*.py"):                        # plain names, no lazy attributes
        tree = ast.parse(f.read_text())
        assert not any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body), f
    assert "per-file-ignores" not in (ROOT / "pyproject.toml").read_text()


def test_the_stage_views_are_the_tables_sections():
    for name, p in PRESETS.items():
        assert LDM_PRESETS[name] is p.ldm and PRIOR_PRESETS[name] is p.prior
        assert LATENT_PRESETS[name].latent_ae is p.latent_ae and LATENT_PRESETS[name].latent_ae_train is p.latent_ae_train
        assert (LATENT_PRESETS[name].name, LATENT_PRESETS[name].description) == (p.name, p.description)
    for get in (get_preset, get_latent_preset, get_ldm_preset, get_prior_preset):
        with pytest.raises(KeyError, match="tiny, default, small, paper"):
            get("huge")
    assert get_ldm_preset("tiny", {"train_g.max_steps": 7}).train_g.max_steps == 7
    assert get_prior_preset("tiny", {"train.max_steps": 7}).train.max_steps == 7
    assert LDM_PRESETS["tiny"].train_g.max_steps == 200 and PRIOR_PRESETS["tiny"].train.max_steps == 40  # copies


#: The shared fields' defaults of each stage (a stage's section keeps its own where they differ).
SHARED_DEFAULTS = {
    SceneAETrainConfig: dict(batch_size=2, lr=1e-3, weight_decay=1e-4, max_steps=1000, val_fraction=0.2, val_interval=100),
    LatentAETrainConfig: dict(batch_size=2, lr=1e-3, weight_decay=1e-4, max_steps=1000, val_fraction=0.2, val_interval=100),
    LDMTrainConfig: dict(batch_size=32, lr=2e-4, weight_decay=0.0, max_steps=1000, val_fraction=0.2, val_interval=200),
    PriorTrainConfig: dict(batch_size=32, lr=2e-4, weight_decay=0.0, max_steps=2000, val_fraction=0.05, val_interval=500),
}


@pytest.mark.parametrize("cls", list(SHARED_DEFAULTS))
def test_every_training_section_derives_from_the_one_base_with_its_own_defaults(cls):
    assert issubclass(cls, TrainConfig)
    shared = {f.name for f in dataclasses.fields(TrainConfig)}
    assert shared == {"batch_size", "lr", "warmup_steps", "lr_schedule", "min_lr_fraction", "weight_decay",
                      "max_steps", "grad_clip", "val_fraction", "val_interval", "num_workers", "precision", "seed",
                      "log_every"}
    d = cls()
    assert {k: getattr(d, k) for k in SHARED_DEFAULTS[cls]} == SHARED_DEFAULTS[cls]
    assert (d.warmup_steps, d.grad_clip, d.num_workers, d.precision, d.seed, d.log_every) == (0, 1.0, 0, "32-true", 0, 10)
