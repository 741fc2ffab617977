"""Conditioning data and conditional stage-3 training: `encode_latents` writes each scene's BEV map (`window_bev` of
its capture window) and ego trajectory; `nfldm train ldm` with ``bev_condition`` / ``trajectory_in_g`` trains on them,
saves and loads; a store without them is refused for conditional training and still trains unconditionally."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from nfldm_sdk.labels.classes import DEFAULT_CLASSES
from nfldm_sdk.models.denoisers import CDenoiser, GDenoiser
from nfldm_sdk.models.latent_ae import LatentAutoEncoder
from nfldm_sdk.models.scene_ae import SceneAutoEncoder
from nfldm_training.cli.ldm import train_ldm as train_ldm_cli
from nfldm_training.configs.presets import get_preset
from nfldm_training.data.capture_bev import window_bev
from nfldm_training.data.capture_windows import SceneWindowDataset
from nfldm_training.data.latent_levels import LatentLevelDataModule, LatentLevels
from nfldm_training.encoding.latents import encode_latents
from nfldm_training.encoding.voxels import encode_voxels
from nfldm_training.errors import TrainingError
from nfldm_training.stores.latent_store import LATENT_STORE_VERSION, LatentStore
from nfldm_training.stores.voxel_store import VoxelStore

pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def stores(tmp_path_factory, tiny_capture):
    """A voxel store (window 2, stride 4) of the tiny capture, and latent stores with and without conditioning."""
    root = tmp_path_factory.mktemp("cond")
    torch.manual_seed(0)
    preset = get_preset("tiny")
    scene_ae = SceneAutoEncoder(preset.scene_ae)
    encode_voxels(scene_ae, [tiny_capture], root / "voxels.zarr", window=2, stride=4, batch_size=4, progress=False,
                  log=lambda m: None)
    lae = LatentAutoEncoder(preset.latent_ae)
    encode_latents(lae, root / "voxels.zarr", root / "latents.zarr", batch_size=3, progress=False, log=lambda m: None)
    encode_latents(lae, root / "voxels.zarr", root / "plain.zarr", progress=False, log=lambda m: None, conditioning=False)
    return dict(root=root, capture=tiny_capture)


def test_encode_latents_writes_the_window_bev_and_trajectory(stores):
    root = stores["root"]
    vs, ls = VoxelStore(root / "voxels.zarr"), LatentStore(root / "latents.zarr")
    assert ls.attrs["format_version"] == LATENT_STORE_VERSION == 2 and ls.has_conditioning and len(ls) == len(vs) == 4
    bev, traj = np.asarray(ls.group["bev"][:]), np.asarray(ls.group["trajectory"][:])
    assert bev.shape == (4, 32, 32) and bev.dtype == np.uint8 and traj.shape == (4, 2, 3)
    # the scene's window, read at the capture's own size (64×64), and its ego poses in the anchor's frame
    data = SceneWindowDataset([stores["capture"]], 2, image_size=(64, 64), split="all", stride=4)
    for i, (si, ep, anchor) in enumerate(vs.ids()):
        j = [k for k, r in enumerate(data.refs) if (r.store_index, r.episode, r.start) == (si, ep, anchor)][0]
        expected = window_bev(data[j], torch.from_numpy(np.asarray(vs.group["bounds"][i])).double(), (32, 32),
                              DEFAULT_CLASSES).numpy()
        np.testing.assert_array_equal(bev[i], expected)
        e2w = np.asarray(data.episode(data.refs[j]).ego_to_world, np.float64)
        rel = np.linalg.inv(e2w[anchor]) @ e2w[anchor + 1]                  # window of 2: anchor = start, then +1
        np.testing.assert_allclose(traj[i, 0], 0.0, atol=1e-6)              # the anchor is the scene frame's origin
        np.testing.assert_allclose(traj[i, 1], [rel[0, 3], rel[1, 3], np.arctan2(rel[1, 0], rel[0, 0])], atol=1e-5)
    assert (bev != 255).mean() > 0.2 and (traj[:, 1, 0] > 0.1).all()         # observed cells; the ego drives forward
    plain = LatentStore(root / "plain.zarr")
    assert not plain.has_conditioning
    np.testing.assert_allclose(np.asarray(plain.group["g"][:]), np.asarray(ls.group["g"][:]), atol=1e-6)  # batch 8 vs 3
    levels = LatentLevels(root / "latents.zarr")
    assert levels.bev_grid_yx == (32, 32) and levels.trajectory_frames == 2


def test_a_store_without_conditioning_refuses_conditional_training(stores):
    path = stores["root"] / "plain.zarr"
    with pytest.raises(TrainingError, match="no bev/trajectory arrays.*encode-latents --overwrite"):
        LatentLevelDataModule(path, "c", 2, 0.2, extras=("bev",))
    dm = LatentLevelDataModule(path, "c", 2, 0.2)                             # unconditional training still reads it
    dm.setup()
    assert set(dm.train_set[0]) == {"c", "g"}
    res = CliRunner().invoke(train_ldm_cli, ["--level", "c", "--latents", str(path), "--preset", "tiny", "--out",
                                             str(stores["root"] / "bad"), "--accelerator", "cpu", "--devices", "1",
                                             "--max-steps", "1", "--set", "denoiser_c.bev_condition=true"])
    assert res.exit_code != 0 and "no bev/trajectory arrays" in str(res.exception)   # the nfldm group prints it


@pytest.mark.parametrize("level,sets", [
    ("c", ["denoiser_c.bev_condition=true", "denoiser_c.bev_token_dim=16"]),
    ("g", ["denoiser_g.bev_condition=true", "denoiser_g.trajectory_in_g=true"]),
])
def test_conditional_ldm_training_runs_saves_and_loads(stores, level, sets):
    root = stores["root"]
    run = root / f"run_{level}"
    args = ["--level", level, "--latents", str(root / "latents.zarr"), "--preset", "tiny", "--out", str(run),
            "--batch-size", "2", "--accelerator", "cpu", "--devices", "1", "--max-steps", "2"]
    for s in sets:
        args += ["--set", s]
    res = CliRunner().invoke(train_ldm_cli, args)
    assert res.exit_code == 0, res.output
    cls = {"c": CDenoiser, "g": GDenoiser}[level]
    model = cls.from_pretrained(run / "model")
    assert model.conditional and tuple(model.config.bev_grid_yx) == (32, 32)
    assert "bev.null" in model.state_dict()
    if level == "g":
        traj = np.asarray(LatentStore(root / "latents.zarr").group["trajectory"][:]).reshape(-1, 3)
        assert model.config.trajectory_frames == 2 and model.sample_shape == (model.config.g_dim + 6,)
        np.testing.assert_allclose(model.config.trajectory_mean, traj.mean(0), atol=1e-5)
