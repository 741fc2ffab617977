"""``nfldm export-nuscenes``: a generated scene driven through by the nuScenes rig with a LiDAR, loaded with the real
nuScenes devkit. The scene is hand-made (a ground slab and a wall at x ∈ [12, 16] m, σ = 20 /m, in the tiny
preset's box) and decoded
by the tiny random generator's weights with 256 samples per camera ray (it has a semantic head, so labels are
exported): the tables walk, camera
records carry the rig's K and mount and the trajectory's ego poses, timestamps are the trajectory's in
microseconds, depth equals a direct render, the LiDAR lands on the exported depth through the devkit's chain, the
export is deterministic, and errors come before anything is written.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from nfldm_sdk.cameras.rig import CameraRig
from nfldm_sdk.cameras.trajectory import Trajectory
from nfldm_sdk.cli.main import main as nfldm
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.models.bundle import read_manifest
from nfldm_sdk.models.scene_ae import SceneAutoEncoder
from nfldm_sdk.pipelines.scene import NeuralScene
from nfldm_sdk.sensors.lidar_spec import LidarSpec
from nfldm_sdk.sensors.trajectory_render import render_trajectory

nuscenes = pytest.importorskip("nuscenes.nuscenes", reason="the nuScenes devkit is not installed: scripts/setup.sh "
                                                           "installs it (pip install --no-deps nuscenes-devkit)")
from nuscenes.utils.data_classes import LidarPointCloud  # noqa: E402
from nuscenes.utils.geometry_utils import transform_matrix, view_points  # noqa: E402
from pyquaternion import Quaternion  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread_module")
VERSION = "v1.0-gen"
TRAJ = ["--trajectory", "straight", "--length", "4", "--speed", "10", "--rate", "5"]


def trajectory() -> Trajectory:
    return Trajectory.straight(4.0, 10.0, 5.0)


@pytest.fixture(scope="module")
def drive(tmp_path_factory, tiny_generator, write_tiny_bundle):
    """(bundle, scene folder, LiDAR JSON, export folder) of one exported drive."""
    root = tmp_path_factory.mktemp("nusc_gen")
    # The tiny decoder's weights with 256 samples per camera ray instead of 32: its expected depth is then within a
    # fifth of a metre of the surface, so the LiDAR-on-depth check can be tight.
    gen = copy.copy(tiny_generator)
    cfg = dataclasses.replace(tiny_generator.scene_ae.config, render_samples=256)
    gen.scene_ae = SceneAutoEncoder(cfg)
    gen.scene_ae.load_state_dict(tiny_generator.scene_ae.state_dict())
    bundle = write_tiny_bundle(root / "bundle", gen)
    Z, Y, X = cfg.grid_shape
    lo, hi = np.array(cfg.bounds[0]), np.array(cfg.bounds[1])
    zc = lo[2] + (np.arange(Z) + 0.5) * (hi[2] - lo[2]) / Z                  # voxel centres, metres
    xc = lo[0] + (np.arange(X) + 0.5) * (hi[0] - lo[0]) / X
    ground = np.broadcast_to((zc < 0)[:, None, None], (Z, Y, X))               # below z = 0
    wall = np.broadcast_to(((xc > 12) & (xc < 16))[None, None, :], (Z, Y, X))  # x ∈ [12, 16], the box's height
    density = torch.from_numpy(np.where(ground | wall, 20.0, 0.0).astype(np.float32))
    feats = torch.randn(cfg.feature_channels, Z, Y, X, generator=torch.Generator().manual_seed(0))
    field = VoxelField(density, feats, torch.tensor(cfg.bounds))
    folder = NeuralScene(field=field, seed=3, bundle_hash=read_manifest(bundle).bundle_hash).save(root / "scene_000003")
    lidar = LidarSpec(channels=16, range_m=40.0, upper_fov_deg=10.0, lower_fov_deg=-20.0, rotation_frequency_hz=10.0,
                      points_per_second=16 * 10 * 360, name="small").save(root / "lidar.json")
    out = root / "nusc"
    r = CliRunner().invoke(nfldm, ["export-nuscenes", str(folder), "--model", str(bundle), *TRAJ, "--lidar", str(lidar),
                                   "--out", str(out), "--version", VERSION, "--device", "cpu"])
    assert r.exit_code == 0, r.output
    return bundle, folder, lidar, out


@pytest.fixture(scope="module")
def nusc(drive):
    return nuscenes.NuScenes(version=VERSION, dataroot=str(drive[3]), verbose=False)


def walk(nusc) -> list[dict]:
    out, token = [], nusc.scene[0]["first_sample_token"]
    while token:
        out.append(nusc.get("sample", token))
        token = out[-1]["next"]
    return out


def extras(root: Path) -> dict:
    return {r["sample_data_token"]: r for r in json.loads((root / VERSION / "nfldm_sample_data_extra.json").read_text())}


def test_scene_samples_cameras_poses_and_microseconds(nusc, drive):
    bundle = drive[0]
    traj, rig = trajectory(), CameraRig.preset("nuscenes", 64, 64)
    assert len(nusc.scene) == 1
    assert nusc.scene[0]["name"] == f"{read_manifest(bundle).bundle_hash[:12]}-scene_000003"
    samples = walk(nusc)
    assert len(samples) == nusc.scene[0]["nbr_samples"] == len(traj)
    assert [s["timestamp"] for s in samples] == [round(float(t) * 1e6) for t in traj.timestamps]
    for t, s in enumerate(samples):
        assert set(s["data"]) == set(rig.names) | {"LIDAR_TOP"}
        for n, cam in enumerate(rig):
            path, _, K = nusc.get_sample_data(s["data"][cam.name])
            assert Path(path).is_file()
            np.testing.assert_array_equal(K, cam.K)
            sd = nusc.get("sample_data", s["data"][cam.name])
            cs, pose = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]), nusc.get("ego_pose", sd["token"])
            np.testing.assert_allclose(transform_matrix(cs["translation"], Quaternion(cs["rotation"])), cam.cam_to_ego,
                                       atol=1e-12)
            np.testing.assert_allclose(transform_matrix(pose["translation"], Quaternion(pose["rotation"])),
                                       traj.ego_to_world[t], atol=1e-12)
    assert len(nusc.lidarseg) == len(traj)                    # the tiny bundle has a semantic head: labelled points


def test_depth_equals_a_direct_render_and_semantics_are_exported(nusc, drive):
    _, folder, _, out = drive
    import imageio.v3 as iio  # lazy: only this test reads PNGs back

    scene = NeuralScene.load(folder, decoder=drive[0])
    rig, ex = CameraRig.preset("nuscenes", 64, 64), extras(out)
    ticks = list(render_trajectory(scene, trajectory(), rig, batch_size=12))
    for s, frames in zip(walk(nusc), ticks):
        for f in frames:
            rec = ex[s["data"][f.camera]]
            np.testing.assert_array_equal(np.load(out / rec["depth_filename"]), f.depth)
            np.testing.assert_array_equal(iio.imread(out / rec["semantic_filename"]), f.semantic)
    assert any(np.isfinite(f.depth).any() for f in ticks[0])


def test_lidar_lands_on_the_exported_depth_through_the_devkit_chain(nusc, drive):
    out = drive[3]
    ex = extras(out)
    close = total = 0
    wall_rel = []
    for s in walk(nusc):
        lid = nusc.get("sample_data", s["data"]["LIDAR_TOP"])
        for channel in ("CAM_FRONT", "CAM_BACK"):
            cam = nusc.get("sample_data", s["data"][channel])
            pc = LidarPointCloud.from_file(nusc.get_sample_data_path(lid["token"]))
            cs_l, pose_l = nusc.get("calibrated_sensor", lid["calibrated_sensor_token"]), nusc.get("ego_pose", lid["token"])
            cs_c, pose_c = nusc.get("calibrated_sensor", cam["calibrated_sensor_token"]), nusc.get("ego_pose", cam["token"])
            for rec in (cs_l, pose_l):
                pc.rotate(Quaternion(rec["rotation"]).rotation_matrix)
                pc.translate(np.array(rec["translation"]))
            on_wall = pc.points[0] > 11.0                     # global (scene) x: the wall's density ramps up over [11, 13]
            for rec in (pose_c, cs_c):
                pc.translate(-np.array(rec["translation"]))
                pc.rotate(Quaternion(rec["rotation"]).rotation_matrix.T)
            z = pc.points[2]
            front = z > 1.0
            uv = view_points(pc.points[:3, front], np.array(cs_c["camera_intrinsic"]), normalize=True)[:2]
            depth = np.load(out / ex[cam["token"]]["depth_filename"])
            H, W = depth.shape
            inside = (uv[0] >= 1) & (uv[0] < W - 1) & (uv[1] >= 1) & (uv[1] < H - 1)
            u, v = np.floor(uv[:, inside]).astype(int)
            zi, wall = z[front][inside], on_wall[front][inside]
            win = np.stack([depth[v + dv, u + du] for dv in (-1, 0, 1) for du in (-1, 0, 1)])
            smooth = np.isfinite(win).all(0) & (win.max(0) - win.min(0) < 0.05 * zi)
            rel = np.abs(depth[v, u] - zi) / zi
            # Rendered depth is the opacity-weighted mean depth, a LiDAR return where the opacity reaches 0.5; on the
            # wall, met head-on, they agree to centimetres. The ground is met at grazing angles, where trilinear
            # sampling blurs the surface over a 1 m voxel in z: the two rays sink into it by different lengths.
            wall_rel.append(rel[smooth & wall])
            close += int((rel[smooth] < 0.05).sum())
            total += int(smooth.sum())
    wall_rel = np.concatenate(wall_rel)
    assert len(wall_rel) > 300 and total >= len(wall_rel), (len(wall_rel), total)
    # a metre's error in any pose of the chain would move points by 5-10 % at these 10-15 m
    assert np.median(wall_rel) < 0.01 and (wall_rel < 0.02).mean() > 0.9, np.percentile(wall_rel, [50, 90])
    assert close > 0.98 * total, (close, total)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_export_is_deterministic_and_errors_come_first(drive, tmp_path):
    bundle, folder, lidar, out = drive
    base = ["export-nuscenes", str(folder), "--model", str(bundle), *TRAJ, "--version", VERSION, "--device", "cpu"]
    run = lambda *a: CliRunner().invoke(nfldm, [*base, *a])  # noqa: E731
    r = run("--lidar", str(lidar), "--out", str(tmp_path / "again"))
    assert r.exit_code == 0, r.output
    assert _digest(tmp_path / "again") == _digest(out)
    before = _digest(out)
    r = run("--out", str(out))
    assert r.exit_code == 1 and "pass --overwrite" in r.output and _digest(out) == before
    r = run("--lidar", "no_such_lidar", "--out", str(tmp_path / "x"))
    assert r.exit_code == 1 and "unknown LiDAR" in r.output and not (tmp_path / "x").exists()
    r = CliRunner().invoke(nfldm, ["export-nuscenes", str(folder), str(folder), "--model", str(bundle), "--out",
                                   str(tmp_path / "twice"), "--device", "cpu"])
    assert r.exit_code == 2 and "given twice" in r.output and not (tmp_path / "twice").exists()
    r = run("--out", str(tmp_path / "y"), "--version", "bad/name")
    assert r.exit_code == 1 and "nuScenes version" in r.output and not (tmp_path / "y").exists()
