"""Every training stage under Lightning DDP on 2 CPU processes (gloo), through the real `nfldm train ...` CLI.

Each stage (scene-ae, latent-ae, ldm at level g, prior) trains a few steps of the tiny preset with
``--accelerator cpu --devices 2 --strategy ddp`` in a subprocess (Lightning re-launches the command for rank 1),
then resumes one more step. The run directory must be complete and consistent: one ``last.ckpt`` at the final
step, ``config.json`` that loads, ``metrics.json`` at the final step, and ``model/`` holding the weights of that
checkpoint (the EMA weights for the diffusion stages). Only rank 0 writes the run directory
(`nfldm_training.runs.trainer.on_run_writer`); a rank deleting or rewriting files would break these checks or the resume.
The DDP tests are marked ``slow`` (two processes start per run); the rank guard itself is checked without DDP.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

NFLDM = str(Path(sys.executable).with_name("nfldm"))
DDP = ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--no-progress"]


def _train(*args: str) -> str:
    """``nfldm train ARGS`` under DDP in a subprocess; its combined output (both ranks print)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)  # not needed by training; keeps the children's imports as in normal use
    res = subprocess.run([NFLDM, "train", *args, *DDP], capture_output=True, text=True, env=env, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    return out


def _invoke(args: list[str]):
    from nfldm_sdk.cli.main import main

    return CliRunner().invoke(main, args)


def _cli(args: list[str]) -> str:
    res = _invoke(args)
    assert res.exit_code == 0, res.output
    return res.output


def _check_run(run: Path, steps: int, model_class, prefix: str) -> dict:
    """The run directory after `steps` steps: one last.ckpt at `steps`, metrics.json at `steps`, and RUN/model
    equal to the checkpoint's weights under `prefix` (``model.`` or ``ema.module.``). Returns metrics.json."""
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("last*.ckpt")) == ["last.ckpt"]
    ckpt = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == steps
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == steps
    model = model_class.from_pretrained(run / "model")
    saved = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    assert saved.keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    assert json.loads((run / "config.json").read_text())  # the run's config (each stage's loader is checked below)
    return metrics


def _resumed(run: Path, out: str, before: dict, key: str) -> None:
    """A resume: it said so, kept the untrained figures, and logged into a new CSV version beside the first."""
    assert "resuming from" in out and str(run / "checkpoints" / "last.ckpt") in out
    assert json.loads((run / "metrics.json").read_text())[key] == before[key]
    assert sorted(p.parent.name for p in (run / "logs").glob("version_*/metrics.csv")) == ["version_0", "version_1"]


def test_only_the_writing_rank_touches_the_run_directory(tmp_path, monkeypatch):
    """`start_run` / `finish_run` / `on_run_writer`: rank 1 (and the first process of node 1) leave the run
    directory alone — no stale-checkpoint clearing, no config, no model, no metrics; rank 0 does all of it."""
    from lightning.pytorch.utilities import rank_zero_only

    from nfldm_sdk.models.denoisers import GDenoiser, GDenoiserConfig
    from nfldm_training.runs.trainer import finish_run, is_run_writer, on_run_writer, run_writer_log, start_run

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "step0000002.ckpt").write_bytes(b"stale")
    model = GDenoiser(GDenoiserConfig(g_dim=8))
    for rank, node in ((1, "0"), (0, "1")):
        monkeypatch.setattr(rank_zero_only, "rank", rank)
        monkeypatch.setenv("NODE_RANK", node)
        assert not is_run_writer() and on_run_writer(lambda: 1) is None
        printed = []
        run_writer_log(printed.append)("model: ...")                  # other ranks print nothing either
        assert printed == []
        assert start_run(run, True, lambda path: path.write_text("{}")) is None
        assert finish_run(run, model, {"global_step": 0}) == run / "model"
        assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == ["checkpoints", "checkpoints/step0000002.ckpt"]
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    monkeypatch.setenv("NODE_RANK", "0")
    assert is_run_writer() and on_run_writer(lambda x: x + 1, 1) == 2
    printed = []
    run_writer_log(printed.append)("model: ...")
    assert printed == ["model: ..."]
    assert start_run(run, True, lambda path: path.write_text("{}")) is None   # fresh run: stale checkpoints go
    finish_run(run, model, {"global_step": 0})
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()) == [
        "config.json", "metrics.json", "model/config.json", "model/model.safetensors"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ddp")


@pytest.fixture(scope="module")
def scene_ae_run(root, tiny_capture) -> Path:
    from nfldm_sdk.models.scene_ae import SceneAutoEncoder
    from nfldm_training.configs.run_config import load_run_config

    run = root / "ae"
    common = ["scene-ae", "--data", tiny_capture, "--preset", "tiny", "--out", str(run)]
    _train(*common, "--max-steps", "2", "--set", "scene_ae_train.val_interval=2", "--set", "scene_ae_train.val_batches=1",
           "--set", "scene_ae_train.stride=3")
    first = _check_run(run, 2, SceneAutoEncoder, "model.")
    assert first["untrained"]["psnr"] > 0 and first["final"]["step"] == 2
    out = _train(*common, "--max-steps", "3")
    _resumed(run, out, first, "untrained")
    _check_run(run, 3, SceneAutoEncoder, "model.")
    cfg = load_run_config(run / "config.json", "scene-ae").section  # the saved config, with the resume's --max-steps on top
    assert (cfg.name, cfg.scene_ae_train.stride, cfg.scene_ae_train.max_steps) == ("tiny", 3, 3)
    return run


@pytest.mark.slow
def test_scene_ae_trains_and_resumes_under_ddp(scene_ae_run):
    assert sorted(p.name for p in (scene_ae_run / "checkpoints").glob("*.ckpt"))[-1] == "step0000002.ckpt"


@pytest.fixture(scope="module")
def latent_ae_run(root, tiny_capture, scene_ae_run) -> Path:
    from nfldm_sdk.models.latent_ae import LatentAutoEncoder
    from nfldm_training.configs.run_config import load_run_config

    # a run directory resolves to its model/ (nfldm_sdk.persistence.resolve_model_dir) in both commands
    _cli(["encode-voxels", "--model", str(scene_ae_run), "--data", tiny_capture, "--out", str(root / "voxels.zarr"),
          "--stride", "2", "--no-progress"])
    run = root / "lae"
    common = ["latent-ae", "--voxels", str(root / "voxels.zarr"), "--scene-ae", str(scene_ae_run), "--data", tiny_capture,
              "--preset", "tiny", "--out", str(run)]
    _train(*common, "--max-steps", "2", "--set", "latent_ae_train.val_interval=1000",
           "--set", "latent_ae_train.val_batches=1", "--set", "latent_ae_train.render_views=2")
    first = _check_run(run, 2, LatentAutoEncoder, "model.")
    assert first["untrained"]["psnr_render"] > 0 and first["final"]["step"] == 2
    out = _train(*common, "--max-steps", "3")
    _resumed(run, out, first, "untrained")
    _check_run(run, 3, LatentAutoEncoder, "model.")
    assert load_run_config(run / "config.json", "latent-ae").section.latent_ae_train.render_views == 2   # the saved config is kept
    return run


@pytest.mark.slow
def test_latent_ae_trains_and_resumes_under_ddp(latent_ae_run):
    assert (latent_ae_run / "val_images").is_dir()


@pytest.mark.slow
def test_ldm_trains_and_resumes_under_ddp_with_its_saved_config(root, latent_ae_run):
    from nfldm_sdk.models.denoisers import DENOISER_CLASSES
    from nfldm_training.configs.run_config import load_run_config

    _cli(["encode-latents", "--model", str(latent_ae_run), "--voxels", str(root / "voxels.zarr"),
          "--out", str(root / "latents.zarr"), "--device", "cpu", "--no-progress"])
    run = root / "ldm_g"
    common = ["ldm", "--level", "g", "--latents", str(root / "latents.zarr"), "--preset", "tiny", "--out", str(run)]
    _train(*common, "--max-steps", "2", "--batch-size", "1")
    first = _check_run(run, 2, DENOISER_CLASSES["g"], "ema.module.")
    assert first["val_loss_untrained"] > 0 and first["val_loss"] > 0
    assert json.loads((run / "ldm_run.json").read_text())["level"] == "g"
    out = _train(*common, "--max-steps", "3")   # no --batch-size: the run's saved batch size 1 is kept
    _resumed(run, out, first, "val_loss_untrained")
    _check_run(run, 3, DENOISER_CLASSES["g"], "ema.module.")
    name, ldm, extra = load_run_config(run / "config.json", "ldm")
    level = extra["level"]
    assert (level, name, ldm.train_g.batch_size, ldm.train_g.max_steps) == ("g", "tiny", 1, 3)

    # the saved config names the run's level: resuming it as another level is an error naming the fix
    res = _invoke(["train", *common[:2], "c", *common[3:], "--accelerator", "cpu", "--devices", "1"])
    assert res.exit_code != 0 and "--level g" in res.output and "--no-resume" in res.output


@pytest.mark.slow
def test_prior_trains_and_resumes_under_ddp(root, tiny_capture):
    import imageio.v3 as iio

    from nfldm_sdk.models.prior_unet import PriorUNet
    from nfldm_training.configs.run_config import load_run_config
    from nfldm_training.modules.prior import ARTIFACTS_NAME

    art = root / "artifacts"
    art.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        iio.imwrite(art / f"a{i}.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    run = root / "prior"
    common = ["prior", "--data", tiny_capture, "--artifacts", str(art), "--preset", "tiny", "--out", str(run),
              "--batch-size", "2"]
    _train(*common, "--max-steps", "2")
    first = _check_run(run, 2, PriorUNet, "ema.module.")
    assert first["val_loss_untrained"] > 0 and first["val_loss"] > 0
    assert (run / ARTIFACTS_NAME).is_file() and not list(run.glob("*.partial"))
    out = _train(*common, "--max-steps", "3")
    assert "reusing the artifact images" in out
    _resumed(run, out, first, "val_loss_untrained")
    _check_run(run, 3, PriorUNet, "ema.module.")
    name, preset, _ = load_run_config(run / "config.json", "prior")
    assert (name, preset.train.batch_size, preset.train.max_steps) == ("tiny", 2, 3)
