"""Stage-1 training data from a capture: windows in the anchor's scene frame, depth that reprojects between the frames
of a window, resizing, the train/validation split (by episode; by time for a single episode) and a deterministic
data module."""
import math

import pytest
import torch
import torch.nn.functional as F

import sim_bridge
from click.testing import CliRunner
from sim_bridge.cli import main as sim_cli
from sim_bridge.rig import Rig, RigCamera, intrinsics_from_fov, mount_to_cam_to_ego
from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_training.configs.presets import get_preset
from nfldm_training.data.capture_windows import SceneDataModule, SceneWindowDataset, split_views
from nfldm_training.errors import TrainingError

pytestmark = pytest.mark.usefixtures("one_thread_module")


def test_scene_frame_anchor_ego_is_identity(tiny_capture):
    store = sim_bridge.open_store(tiny_capture)
    ds = SceneWindowDataset([tiny_capture], window=3, image_size=(64, 64), split="all")
    n = len(store.rig)
    item = ds[1]
    assert item.images.shape == (3 * n, 3, 64, 64) and item.depth.shape == (3 * n, 64, 64)
    assert item.anchor == ds.refs[1].start + 1                                  # middle frame of 3
    at_anchor = item.frame_index == item.anchor
    assert at_anchor.sum() == n
    # at the anchor frame the ego is the scene frame, so cam_to_scene is the rig's mount cam_to_ego
    assert torch.allclose(item.cam_to_scene[at_anchor], torch.tensor(store.rig.cam_to_ego(), dtype=torch.float32), atol=1e-4)
    assert torch.allclose(item.K, torch.tensor(store.rig.K(), dtype=torch.float32).repeat(3, 1, 1))
    assert torch.equal(item.valid, torch.isfinite(item.depth))


def test_depth_reprojects_consistently_between_frames_of_a_window(tiny_capture):
    """Back-project frame A's depth with its cam_to_scene, project into frame B's camera: the depth there agrees.

    Only points above the ground are used (scene z > 0.5 m): for a camera moving parallel to flat ground, ground
    depth per pixel does not change, so ground pixels would agree even with wrong poses.
    """
    ds = SceneWindowDataset([tiny_capture], window=3, image_size=(64, 64), split="all")
    item = ds[0]
    n = len(ds.camera_names)
    cams = Cameras(item.K, item.cam_to_scene, 64, 64)
    v, u = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    rels = []
    for c in range(n):
        src, dst = c, 2 * n + c                          # camera c at the window's first and last frame
        ok = item.valid[src] & (item.depth[src] < 40)
        pts = cams[src].pixels_to_world(torch.stack([u[ok], v[ok]], -1), item.depth[src][ok])   # [P, 3] scene frame
        pts = pts[pts[:, 2] > 0.5]
        uv2, z2 = cams[dst].world_to_pixels(pts)
        inside = (z2 > 0.5) & (uv2 >= 0.5).all(-1) & (uv2 < 63.5).all(-1)
        grid = (uv2[inside] / 32.0 - 1.0)[None, None]                   # pixels -> [-1, 1] (align_corners=False)
        seen = F.grid_sample(item.depth[dst][None, None], grid, align_corners=False)[0, 0, 0]
        rel = (seen - z2[inside]).abs() / z2[inside]
        rels.append(torch.where(torch.isfinite(rel), rel, torch.full_like(rel, math.inf)))
    rel = torch.cat(rels)
    assert rel.numel() > 200, "the two frames should see much of the same scene above the ground"
    # exceptions: occlusion edges, where bilinear sampling mixes surfaces
    assert rel.median() < 0.01 and (rel < 0.02).float().mean() > 0.6, \
        f"median relative error {rel.median():.4f}, {(rel < 0.02).float().mean():.2f} within 2%"
    moved = (item.cam_to_scene[2 * n][:3, 3] - item.cam_to_scene[0][:3, 3]).norm()
    assert moved > 0.5, "the test needs the ego to move within the window"


def test_resizing_scales_intrinsics_and_keeps_no_hit(tiny_capture):
    full = SceneWindowDataset([tiny_capture], window=1, image_size=(64, 64), split="all")[0]
    half = SceneWindowDataset([tiny_capture], window=1, image_size=(32, 32), split="all")[0]
    assert half.images.shape[-2:] == (32, 32)
    assert torch.allclose(half.K[:, :2], full.K[:, :2] / 2)
    assert torch.equal(half.depth, full.depth[:, 1::2, 1::2])        # nearest-exact picks one source pixel
    assert torch.equal(half.valid, torch.isfinite(half.depth))


def test_train_val_split_is_by_episode(tiny_capture):
    train = SceneWindowDataset([tiny_capture], window=2, split="train", val_fraction=0.5)
    val = SceneWindowDataset([tiny_capture], window=2, split="val", val_fraction=0.5)
    every = SceneWindowDataset([tiny_capture], window=2, split="all")
    tr, va = {r.episode for r in train.refs}, {r.episode for r in val.refs}
    assert tr and va and not (tr & va)
    assert len(train) + len(val) == len(every)
    assert va == {1}                                                  # the last episode
    inputs, targets = split_views(12, 0)
    assert torch.equal(inputs, targets)
    g = torch.Generator().manual_seed(0)
    inputs, targets = split_views(12, 4, g)
    assert len(inputs) == 8 and len(targets) == 12


def test_single_episode_store_is_split_by_time(capture_factory, tmp_path):
    store = capture_factory(tmp_path / "one.zarr", episodes=1, frames=8)
    with pytest.warns(UserWarning, match="single episode"):
        train = SceneWindowDataset([store], window=2, split="train", val_fraction=0.25)
        val = SceneWindowDataset([store], window=2, split="val", val_fraction=0.25)
    frames = lambda ds: {r.start + k for r in ds.refs for k in range(2)}  # noqa: E731
    assert frames(val) == {6, 7} and frames(train) == set(range(6))    # the last quarter of 8 frames, no overlap


def test_data_module_is_deterministic(tiny_capture):
    cfg = get_preset("tiny", {"scene_ae_train.stride": 1}).scene_ae_train
    order = []
    for _ in range(2):
        dm = SceneDataModule([tiny_capture], (32, 32), cfg)
        order.append([b.anchor.tolist() for b in dm.train_dataloader()])
    assert order[0] == order[1] and len(order[0]) > 1
    batch = next(iter(dm.val_dataloader()))
    assert batch.images.shape[:2] == (cfg.batch_size, cfg.window * 6) and batch.cameras().batch_shape == batch.images.shape[:2]


def test_semantic_tags_are_resized_like_depth(tiny_capture):
    ds = SceneWindowDataset([tiny_capture], window=2, image_size=(32, 32), split="all")
    full = SceneWindowDataset([tiny_capture], window=2, image_size=(64, 64), split="all")
    w, big = ds[0], full[0]
    assert w.semantic.dtype == torch.uint8 and w.semantic.shape == w.depth.shape
    # nearest-exact picks source pixel floor((i + 0.5) * 2) = 2i + 1 for tags and depth alike
    assert torch.equal(w.semantic, big.semantic[:, 1::2, 1::2])
    assert torch.equal(w.depth, big.depth[:, 1::2, 1::2])


def test_fisheye_cameras_are_refused_with_the_fix(tmp_path):
    mount = mount_to_cam_to_ego(0.8, 0.0, 1.5)
    rig = Rig((RigCamera("front", intrinsics_from_fov(90.0, 32, 32), 32, 32, mount),
               RigCamera("fish", intrinsics_from_fov(120.0, 32, 32, model="equidistant"), 32, 32, mount,
                         "equidistant")))
    rig.save(tmp_path / "rig.json")
    store = tmp_path / "fish.zarr"
    result = CliRunner().invoke(sim_cli, ["collect", "--backend", "procedural", "--out", str(store), "--episodes",
                                           "2", "--frames", "2", "--seed", "0", "--quiet", "--rig",
                                           str(tmp_path / "rig.json")])
    assert result.exit_code == 0, result.output
    with pytest.raises(TrainingError, match="fisheye.*cameras="):
        SceneWindowDataset([str(store)], window=1, image_size=(32, 32))
    assert len(SceneWindowDataset([str(store)], window=1, image_size=(32, 32), cameras=["front"], split="all")) == 4
