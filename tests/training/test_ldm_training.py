"""Stage-3 training: the v-prediction loss, the EMA, latent-level data (normalisation, the split by episode),
`train_ldm` saving the EMA denoiser, `nfldm export-bundle`, `nfldm train ldm` with resume, and the LDM presets fitting
the latent presets."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import zarr
from click.testing import CliRunner
from torch.optim.swa_utils import AveragedModel

from nfldm_sdk.models.denoisers import FDenoiser, GDenoiser, GDenoiserConfig
from nfldm_sdk.models.latent_ae import LatentStats
from nfldm_sdk.models.noise_schedule import NoiseSchedule, training_scheduler
from nfldm_sdk.persistence import config_to_dict
from nfldm_sdk.pipelines.generator import SceneGenerator
from nfldm_training.cli.ldm import export_bundle
from nfldm_training.cli.ldm import train_ldm as train_ldm_cli
from nfldm_training.configs.latent import LATENT_PRESETS
from nfldm_training.configs.ldm import get_ldm_preset, with_latent_shapes
from nfldm_training.configs.run_config import load_run_config
from nfldm_training.data.capture_windows import held_out_episodes
from nfldm_training.data.latent_levels import (LatentLevelDataModule, LatentLevelDataset, LatentLevels,
                                               split_by_episode, split_indices)
from nfldm_training.modules.diffusion import ema_multi_avg_fn, v_prediction_loss
from nfldm_training.modules.ldm import RUN_INFO, train_ldm
from nfldm_training.stores.latent_store import LATENT_STORE_FORMAT, LATENT_STORE_VERSION

pytestmark = pytest.mark.usefixtures("one_thread_module")


def _write_latent_store(path, n=6, seed=0, stats=None):
    """A latent store in the format of `nfldm encode-latents` (nfldm_training.stores.latent_store), random latents."""
    rng = np.random.default_rng(seed)
    grp = zarr.open_group(str(path), mode="w", zarr_format=3)
    arrays = {"g": rng.normal(size=(n, 16)), "c": rng.normal(size=(n, 4, 4, 8, 8)), "f": rng.normal(size=(n, 4, 32, 32))}
    for k, a in arrays.items():
        grp.create_array(k, shape=a.shape, dtype="float32", chunks=(1, *a.shape[1:]))[:] = a.astype(np.float32)
    for k, dt in (("store_index", "int32"), ("episode", "int32"), ("anchor_frame", "int64")):
        grp.create_array(k, shape=(n,), dtype=dt, chunks=(n,))[:] = np.arange(n) + seed * 100
    stats = stats or LatentStats(num_scenes=n)
    grp.attrs.update({"format": LATENT_STORE_FORMAT, "format_version": LATENT_STORE_VERSION, "scenes_written": n,
                      "latent_stats": config_to_dict(stats)})
    return str(path)


# ============================================================================================ v-prediction, EMA
def test_v_prediction_loss_is_zero_for_the_exact_velocity(oracle_factory):
    sched = training_scheduler(NoiseSchedule())
    x0 = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
    oracle = oracle_factory(x0, sched.alphas_cumprod)
    zero = GDenoiser(GDenoiserConfig(g_dim=4, width=8, num_blocks=1))
    torch.nn.init.zeros_(zero.out[-1].weight), torch.nn.init.zeros_(zero.out[-1].bias)
    gen = lambda: torch.Generator().manual_seed(2)  # noqa: E731 - same ε and t for both calls
    loss = v_prediction_loss(oracle, x0, (), sched, generator=gen())
    assert float(loss) < 1e-8
    # predicting 0 costs E‖v‖² = E[ᾱ ε² + (1−ᾱ) x0²] ≈ 1 for unit data: the loss compares with the real target
    assert 0.6 < float(v_prediction_loss(zero, x0, (), sched, generator=gen())) < 1.5
    # min-SNR weights are ≤ 1 (min(snr, γ)/(snr+1)), so the weighted loss of the same draw is smaller
    assert float(v_prediction_loss(zero, x0, (), sched, generator=gen(), weighting="min_snr")) < float(
        v_prediction_loss(zero, x0, (), sched, generator=gen()))


def test_ema_update_with_warmup_known_values():
    lin = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    ema = AveragedModel(lin, multi_avg_fn=ema_multi_avg_fn(0.99), use_buffers=False)
    ema.update_parameters(lin)                          # first update copies: 1.0
    with torch.no_grad():
        lin.weight.fill_(3.0)
    ema.update_parameters(lin)                          # n = 1: d = min(0.99, 2/11); ema = 1 + (1 − d)(3 − 1)
    d = 2.0 / 11.0
    assert math.isclose(float(ema.module.weight), 1.0 + (1.0 - d) * 2.0, rel_tol=1e-6)
    for _ in range(5000):                               # long run: d reaches 0.99, the EMA reaches the weights
        ema.update_parameters(lin)
    assert math.isclose(float(ema.module.weight), 3.0, rel_tol=1e-5)


# ============================================================================================ latent-level data
def test_latent_level_dataset_normalises_and_splits(tmp_path):
    assert split_indices(10, 0.2) == ([0, 1, 3, 4, 5, 6, 8, 9], [2, 7])  # centres of two equal halves
    assert split_indices(1, 0.5) == ([0], [])
    stats = LatentStats(g_mean=1.0, g_std=2.0, c_mean=(0.0, 1.0, 2.0, 3.0), c_std=(1.0, 2.0, 3.0, 4.0),
                        f_mean=(0.5,) * 4, f_std=(0.25,) * 4)
    path = _write_latent_store(tmp_path / "l.zarr", n=5, stats=stats)
    levels = LatentLevels(path)
    assert (len(levels), levels.g_dim, levels.c_shape, levels.f_shape) == (5, 16, (4, 4, 8, 8), (4, 32, 32))
    raw_c = torch.from_numpy(levels.read("c"))
    cached = LatentLevelDataset(path, ("c", "g"), [1, 3], stats, cache=True)
    lazy = LatentLevelDataset(path, ("c", "g"), [1, 3], stats, cache=False)
    item = cached[1]
    assert set(item) == {"c", "g"} and torch.equal(item["c"], lazy[1]["c"]) and torch.equal(item["g"], lazy[1]["g"])
    torch.testing.assert_close(item["c"][2], (raw_c[3, 2] - 2.0) / 3.0)          # channel 2: (x − 2) / 3
    torch.testing.assert_close(item["g"], (torch.from_numpy(levels.read("g"))[3] - 1.0) / 2.0)
    dm = LatentLevelDataModule(path, "f", batch_size=2, val_fraction=0.4)
    dm.setup()
    assert dm.val_idx == [1, 3] and len(dm.train_set) == 3 and set(dm.train_set[0]) == {"f", "g", "c"}
    h = levels.training_data_hash()
    assert len(h) == 64 and h == LatentLevels(path).training_data_hash()
    assert LatentLevels(_write_latent_store(tmp_path / "m.zarr", n=5, seed=1)).training_data_hash() != h  # other ids
    del zarr.open_group(path, mode="r+").attrs["latent_stats"]                       # an unfinished store
    with pytest.raises(ValueError, match="incomplete"):
        LatentLevels(path)


def test_stage3_split_holds_out_the_episodes_stage1_holds_out():
    # store 0: episodes 0..4 with 2 scenes each (rows 0-9); store 1: one episode with 4 scenes (rows 10-13)
    ids = np.array([(0, e, f) for e in range(5) for f in (3, 5)] + [(1, 0, f) for f in (3, 4, 5, 6)])
    train, val = split_by_episode(ids, 0.5)
    # store 0: stage 1 holds out its last round(0.5·5) = 2 episodes (3, 4) -> rows 6-9; store 1 (one episode):
    # every k-th scene, split_indices(4, 0.5) -> positions 0 and 2 -> rows 10 and 12
    assert held_out_episodes(5, 0.5, None) == {3, 4}
    assert val == [6, 7, 8, 9, 10, 12] and sorted(train + val) == list(range(14))
    assert split_by_episode(ids, 0.2)[1] == [8, 9]   # 1 episode of 5; 4 single-episode scenes: int(0.8) = 0 held out


# ============================================================================================ training and export
@pytest.fixture(scope="module")
def ldm_runs(tmp_path_factory):
    """``(root, store, results)``: three tiny `train_ldm` runs (levels g, c, f; 3 steps each) on one random latent
    store of 6 scenes; `results` maps the level to its `RunResult`."""
    root = tmp_path_factory.mktemp("ldm")
    store = _write_latent_store(root / "latents.zarr")
    ldm = get_ldm_preset("tiny")
    for level in "gcf":
        cfg = ldm.train_config(level)
        cfg.max_steps, cfg.batch_size, cfg.val_fraction, cfg.val_interval = 3, 2, 0.34, 3
    results = {level: train_ldm(store, level, ldm, root / f"run_{level}", preset_name="tiny", progress=False,
                                log=lambda m: None, accelerator="cpu", devices=1) for level in "gcf"}
    return root, store, results


def test_train_ldm_saves_the_ema_denoiser(ldm_runs):
    root, store, results = ldm_runs
    r = results["f"]
    assert r.global_step == 3 and r.val_loss is not None and r.val_loss_untrained is not None
    model = FDenoiser.from_pretrained(r.model_dir)
    assert model.latent_shape == (4, 32, 32) and model.config.c_shape == (4, 4, 8, 8) and model.config.g_dim == 16
    info = json.loads((r.run_dir / RUN_INFO).read_text())
    assert info["level"] == "f" and len(info["training_data_hash"]) == 64 and info["num_scenes"] == 6
    # the saved weights are the EMA's, which after 3 updates differ from the trained weights
    ckpt = torch.load(r.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    saved = model.state_dict()
    key = "unet.conv_out.weight"
    assert torch.equal(saved[key], ckpt[f"ema.module.{key}"]) and not torch.equal(saved[key], ckpt[f"model.{key}"])


def test_export_bundle_cli_assembles_a_loadable_bundle(ldm_runs, tiny_generator, tmp_path):
    root, store, results = ldm_runs
    tiny_generator.scene_ae.save_pretrained(tmp_path / "ae" / "model")
    tiny_generator.latent_ae.save_pretrained(tmp_path / "lae" / "model")
    args = ["--scene-ae", str(tmp_path / "ae"), "--latent-ae", str(tmp_path / "lae"), "--ldm-g", str(results["g"].run_dir),
            "--ldm-c", str(results["c"].run_dir), "--ldm-f", str(results["f"].run_dir), "--out", str(tmp_path / "bundle")]
    res = CliRunner().invoke(export_bundle, args + ["--half"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["training_data_hash"] == json.loads((results["g"].run_dir / "ldm_run.json").read_text())["training_data_hash"]
    assert manifest["preset"] == "tiny" and manifest["training_data"]["latent_store"] == store
    gen = SceneGenerator.from_pretrained(tmp_path / "bundle")
    assert gen.generate(1, seed=0, steps=2)[0].field.grid_shape == (8, 32, 32)
    # a run of the wrong level is refused with the option named
    bad = args.copy()
    bad[bad.index("--ldm-c") + 1] = str(results["g"].run_dir)
    res = CliRunner().invoke(export_bundle, bad[:-1] + [str(tmp_path / "bundle2")])
    assert res.exit_code != 0 and "--ldm-c" in res.output and "not 'c'" in res.output


def test_train_ldm_cli_trains_and_resumes(tmp_path):
    store = _write_latent_store(tmp_path / "l.zarr", n=4)
    run = tmp_path / "run_g"
    base = ["--level", "g", "--latents", store, "--preset", "tiny", "--out", str(run), "--batch-size", "2",
            "--accelerator", "cpu", "--devices", "1"]
    res = CliRunner().invoke(train_ldm_cli, base + ["--max-steps", "2"])
    assert res.exit_code == 0, res.output
    first = GDenoiser.from_pretrained(run / "model").state_dict()
    # continues from last.ckpt with the run's saved config: its preset (tiny, not the default small) and batch size
    res = CliRunner().invoke(train_ldm_cli, ["--level", "g", "--latents", store, "--out", str(run), "--accelerator", "cpu",
                                             "--devices", "1", "--max-steps", "4"])
    assert res.exit_code == 0 and "resuming from" in res.output and "4 steps" in res.output, res.output
    name, saved, extra = load_run_config(run / "config.json", "ldm")
    level = extra["level"]
    assert (level, name, saved.train_g.batch_size, saved.train_g.max_steps) == ("g", "tiny", 2, 4)
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 4
    assert not torch.equal(GDenoiser.from_pretrained(run / "model").state_dict()["out.2.weight"], first["out.2.weight"])
    res = CliRunner().invoke(train_ldm_cli, ["--level", "g", "--latents", str(tmp_path / "none.zarr"), "--out", str(run)])
    assert res.exit_code != 0 and "encode-latents" in res.output


@pytest.mark.parametrize("name", ["tiny", "default", "small", "paper"])
def test_ldm_presets_fit_the_latent_presets(name):
    lae = LATENT_PRESETS[name].latent_ae
    ldm = with_latent_shapes(get_ldm_preset(name), lae.g_dim, lae.c_shape, lae.f_shape)  # validates the U-Net sizes
    assert ldm.denoiser_c.latent_shape == lae.c_shape and ldm.denoiser_f.c_shape == lae.c_shape
    assert ldm.denoiser_f.latent_shape == lae.f_shape and ldm.denoiser_g.g_dim == lae.g_dim
    assert ldm.schedule.num_train_timesteps == 1000 and ldm.schedule.prediction_type == "v_prediction"
    assert ldm.sampler.steps == 50
    if name == "paper":
        assert (lae.g_dim, lae.c_shape, lae.f_shape) == (128, (4, 16, 32, 32), (4, 128, 128))  # docs/method.md's sizes
