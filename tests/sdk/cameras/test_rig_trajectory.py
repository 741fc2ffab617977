"""Camera rigs (presets, JSON shared with sim_bridge, capture stores) and ego trajectories (interpolation, shapes)."""
import json
import math

import numpy as np
import pytest
import torch

from nfldm_sdk.cameras.rig import CameraRig, CameraSpec, RigError, mount_to_cam_to_ego
from nfldm_sdk.cameras.trajectory import (Trajectory, TrajectoryError, matrix_to_quaternion, quaternion_to_matrix, rigid_inverse,
                                  yaw_pose)
from sim_bridge import rig as sb_rig


def rot_z(deg: float) -> np.ndarray:
    return yaw_pose(0.0, 0.0, math.radians(deg))[:3, :3]


# ============================================================================================ rigs
@pytest.mark.parametrize("ours,theirs", [("capture", "default"), ("nuscenes", "nuscenes"), ("front", "front")])
def test_presets_equal_sim_bridge_presets(ours, theirs):
    rig = CameraRig.preset(ours, 320, 240)
    ref = sb_rig.RIG_PRESETS[theirs](320, 240)
    assert rig.names == ref.names
    np.testing.assert_array_equal(rig.K(), ref.K())
    np.testing.assert_array_equal(rig.cam_to_ego(), ref.cam_to_ego())


def test_capture_preset_geometry():
    rig = CameraRig.preset("capture", 256, 128)
    assert rig.names == ["front", "front_left", "back_left", "back", "back_right", "front_right"]
    for spec, yaw in zip(rig, (0, 60, 120, 180, -120, -60)):
        m = spec.cam_to_ego
        r = math.radians(yaw)
        # optical axis (camera +z) along the yaw direction, horizontal; mounted 1.6 m up, 0.5 m out along it
        np.testing.assert_allclose(m[:3, 2], [math.cos(r), math.sin(r), 0.0], atol=1e-12)
        np.testing.assert_allclose(m[:3, 3], [0.5 * math.cos(r), 0.5 * math.sin(r), 1.6], atol=1e-12)
        np.testing.assert_allclose(m[:3, 1], [0, 0, -1], atol=1e-12)          # image down = world down
        assert spec.hfov_deg == pytest.approx(90.0)
        np.testing.assert_allclose(spec.K, [[128, 0, 128], [0, 128, 64], [0, 0, 1]])
    nus = CameraRig.preset("nuscenes", 160, 90)
    assert nus["CAM_BACK"].hfov_deg == pytest.approx(110.0) and nus["CAM_FRONT"].hfov_deg == pytest.approx(70.0)
    np.testing.assert_allclose(nus["CAM_FRONT_LEFT"].cam_to_ego[:3, 2],
                               [math.cos(math.radians(55)), math.sin(math.radians(55)), 0], atol=1e-12)
    front = CameraRig.preset("front")
    np.testing.assert_allclose(front["front"].cam_to_ego[:3, 3], [0.8, 0.0, 1.5])


@pytest.mark.parametrize("name", ["capture", "nuscenes", "front"])
def test_rig_json_round_trip_and_sim_bridge_reads_it(name, tmp_path):
    rig = CameraRig.preset(name, 200, 100)
    rig.save(tmp_path / "ours.json")
    back = CameraRig.load(tmp_path / "ours.json")
    assert back == rig                                                  # exact: float64 through JSON
    theirs = sb_rig.Rig.load(tmp_path / "ours.json")                    # sim_bridge reads our file ...
    assert theirs.names == rig.names
    np.testing.assert_array_equal(theirs.K(), rig.K())
    np.testing.assert_array_equal(theirs.cam_to_ego(), rig.cam_to_ego())
    theirs.save(tmp_path / "theirs.json")                               # ... and we read sim_bridge's
    assert CameraRig.load(tmp_path / "theirs.json") == rig
    assert json.loads((tmp_path / "ours.json").read_text()) == json.loads((tmp_path / "theirs.json").read_text())


def test_cameras_compose_ego_and_mount():
    rig = CameraRig.preset("capture", 64, 32)
    e2w = np.stack([yaw_pose(1.0, 2.0, 0.3), yaw_pose(-4.0, 0.5, -1.0, z=0.2)])      # [2, 4, 4]
    cams = rig.cameras(e2w)
    assert tuple(cams.batch_shape) == (2, 6) and (cams.width, cams.height) == (64, 32)
    for t in range(2):
        for n in range(6):
            np.testing.assert_allclose(cams.cam_to_world[t, n].double().numpy(), e2w[t] @ rig.specs[n].cam_to_ego,
                                       atol=1e-6)
    # the front camera of pose 0 sees a point 10 m ahead of the ego at camera height in its image centre
    p = e2w[0] @ np.array([10.0, 0.0, 1.6, 1.0])
    uv, z = cams[0, 0].world_to_pixels(torch.tensor(p[None, :3], dtype=torch.float32))
    np.testing.assert_allclose(uv[0].numpy(), [32.0, 16.0], atol=1e-3)
    assert float(z[0]) == pytest.approx(9.5, abs=1e-4)                   # mounted 0.5 m forward


def test_resized_and_resolve(tmp_path):
    rig = CameraRig.preset("capture", 256, 256).resized(128, 64)
    assert (rig.width, rig.height) == (128, 64)
    np.testing.assert_allclose(rig.specs[0].K, [[64, 0, 64], [0, 32, 32], [0, 0, 1]])
    assert rig.specs[0].hfov_deg == pytest.approx(90.0)
    rig.save(tmp_path / "r.json")
    assert CameraRig.resolve(str(tmp_path / "r.json")) == rig
    assert CameraRig.resolve(str(tmp_path / "r.json"), width=64).height == 32       # aspect kept
    assert CameraRig.resolve("nuscenes", 96, 64).names[0] == "CAM_FRONT"
    with pytest.raises(RigError, match="unknown rig 'nonsense'.*preset"):
        CameraRig.resolve("nonsense")
    with pytest.raises(FileNotFoundError, match="rig file .*missing.json not found"):
        CameraRig.resolve(str(tmp_path / "missing.json"))


def test_rig_errors_name_the_problem(tmp_path):
    with pytest.raises(RigError, match="unknown rig preset 'ring9'"):
        CameraRig.preset("ring9")
    with pytest.raises(RigError, match="unique"):
        CameraRig((CameraSpec.from_fov("a", 90, 32, 32), CameraSpec.from_fov("a", 60, 32, 32)))
    with pytest.raises(RigError, match="one image size"):
        CameraRig((CameraSpec.from_fov("a", 90, 32, 32), CameraSpec.from_fov("b", 60, 64, 32)))
    bad = mount_to_cam_to_ego(0, 0, 1)
    bad[:3, :3] *= 2.0
    with pytest.raises(RigError, match="not a rigid transform.*orthonormal"):
        CameraSpec.from_fov("a", 90, 32, 32, bad)
    (tmp_path / "r.json").write_text(json.dumps({"cameras": [{"name": "x", "K": np.eye(3).tolist()}]}))
    with pytest.raises(RigError, match="lacks \\['cam_to_ego', 'height', 'width'\\]"):
        CameraRig.load(tmp_path / "r.json")
    (tmp_path / "s.json").write_text("{}")
    with pytest.raises(RigError, match="no 'cameras' list"):
        CameraRig.load(tmp_path / "s.json")


def write_ground_capture(path, frames: int = 3, size: int = 16, speed: float = 1.0) -> str:
    """A real capture store (sim_bridge's writer) of the capture rig driving along +x over a flat ground plane z = 0:
    depth is analytic (a ray with world direction d from height h meets the ground at planar depth -h / d_z; rays
    that point up see sky = inf); RGB is a per-camera colour."""
    from sim_bridge.backends.base import FrameData
    from sim_bridge.rig import Rig
    from sim_bridge.store import StoreWriter

    rig = CameraRig.preset("capture", size, size)
    K, c2e = rig.K(), rig.cam_to_ego()
    v, u = np.mgrid[0:size, 0:size] + 0.5
    d_cam = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).transpose(0, 2, 1)[:, None]   # [N,H,W,3]
    w = StoreWriter.create(str(path), {"backend": "procedural", "town": "Flat", "weather": "ClearNoon", "seed": 1,
                                       "rig": Rig.from_list(rig.to_list()), "fps": 10.0})
    ep = w.episode(0, frames, 1)
    for t in range(frames):
        e2w = yaw_pose(speed * t, 0.0, 0.0)
        c2w = e2w[None] @ c2e                                                            # [N, 4, 4]
        dz = np.einsum("nij,nhwj->nhwi", c2w[:, :3, :3], d_cam)[..., 2]                  # world z per unit depth
        depth = np.where(dz < -1e-6, -c2w[:, 2, 3][:, None, None] / np.minimum(dz, -1e-6), np.inf).astype(np.float32)
        rgb = np.zeros((len(rig), size, size, 3), np.uint8)
        rgb[..., 0] = np.arange(len(rig))[:, None, None] * 40
        rgb[..., 1] = 200
        ep.append(FrameData(rgb=rgb, depth=depth, semantic=np.zeros(depth.shape, np.uint8), cam_to_world=c2w,
                            ego_to_world=e2w, timestamp=0.1 * t, frame=t))
    w.close()
    return str(path)


def test_from_store_reads_the_capture_rig(tmp_path):
    """A real zarr v3 capture store: `from_store` on its path (zarr directly) and on an opened sim_bridge store."""
    import sim_bridge

    path = write_ground_capture(tmp_path / "c.zarr", frames=1)
    ref = sim_bridge.open_store(path).rig
    for source in (path, sim_bridge.open_store(path)):
        rig = CameraRig.from_store(source)
        assert rig.names == ref.names and (rig.width, rig.height) == (16, 16)
        np.testing.assert_array_equal(rig.cam_to_ego(), ref.cam_to_ego())
        np.testing.assert_array_equal(rig.K(), ref.K())
    assert rig == CameraRig.preset("capture", 16, 16)
    assert CameraRig.resolve(path) == rig
    with pytest.raises(FileNotFoundError, match="no capture store"):
        CameraRig.from_store(tmp_path / "nothing.zarr")


# ============================================================================================ quaternions
def test_quaternion_round_trip_including_180_degree_turns():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(200, 4))
    R = quaternion_to_matrix(q)
    extra = np.stack([rot_z(180.0), np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]), np.eye(3)])
    R = np.concatenate([R, extra])
    np.testing.assert_allclose(quaternion_to_matrix(matrix_to_quaternion(R)), R, atol=1e-12)


# ============================================================================================ trajectories
def test_interpolation_exact_at_knots_and_slerp_midpoints():
    poses = np.stack([yaw_pose(0, 0, 0), yaw_pose(2, 0, math.radians(90)), yaw_pose(2, 4, math.radians(170)),
                      yaw_pose(0, 4, math.radians(-170))])
    traj = Trajectory(np.array([0.0, 1.0, 2.0, 4.0]), poses)
    np.testing.assert_array_equal(traj.at(traj.timestamps), poses)        # bit-exact at the samples
    mid = traj.at([0.5, 1.5, 3.0])
    # 0 -> 90°: half way is 45°, translation half way
    np.testing.assert_allclose(mid[0], yaw_pose(1, 0, math.radians(45)), atol=1e-12)
    np.testing.assert_allclose(mid[1], yaw_pose(2, 2, math.radians(130)), atol=1e-12)
    # 170° -> -170° is a 20° turn through 180° (the short way, across the quaternion sign flip), not 340° back
    np.testing.assert_allclose(mid[2], yaw_pose(1, 4, math.radians(180)), atol=1e-12)
    # a quarter of the way through a 3D rotation: slerp = R0 · exp(u · log(R0^T R1))
    R1 = quaternion_to_matrix(np.array([0.5, 0.5, -0.5, 0.5]))            # 120° about (1, -1, 1)/√3
    m1 = np.eye(4)
    m1[:3, :3] = R1
    q = Trajectory(np.array([0.0, 1.0]), np.stack([np.eye(4), m1])).at(0.25)[0]
    axis = np.array([1.0, -1.0, 1.0]) / math.sqrt(3)
    angle = math.radians(30.0)
    Kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    np.testing.assert_allclose(q[:3, :3], np.eye(3) + math.sin(angle) * Kx + (1 - math.cos(angle)) * Kx @ Kx, atol=1e-12)


def test_at_refuses_extrapolation_and_resample_keeps_motion():
    traj = Trajectory.straight(10.0, 5.0, 10.0)                            # 2 s, 21 poses
    assert len(traj) == 21 and traj.duration == pytest.approx(2.0)
    with pytest.raises(TrajectoryError, match="outside the trajectory.*does not extrapolate"):
        traj.at(2.5)
    r = traj.resample(4.0)
    np.testing.assert_allclose(r.timestamps, np.arange(9) / 4.0)
    np.testing.assert_allclose(r.positions[:, 0], 5.0 * r.timestamps, atol=1e-12)
    assert r.rate_hz == pytest.approx(4.0)


def test_straight_arc_lane_change_geometry():
    s = Trajectory.straight(12.0, 4.0, 2.0, start=yaw_pose(1.0, 1.0, math.radians(90)))
    np.testing.assert_allclose(s.positions[-1], [1.0, 13.0, 0.0], atol=1e-12)      # along the start heading (+y)
    # arc: every position is radius r from the centre (0, r); heading = tangent; quarter turn ends at (r, r)
    r = 15.0
    a = Trajectory.arc(r, 90.0, speed_mps=r * math.pi / 2 / 3.0, rate_hz=10.0)      # 3 s for the quarter circle
    assert len(a) == 31
    np.testing.assert_allclose(np.linalg.norm(a.positions[:, :2] - [0.0, r], axis=1), r, atol=1e-9)
    np.testing.assert_allclose(a.positions[-1], [r, r, 0.0], atol=1e-9)
    np.testing.assert_allclose(a.ego_to_world[-1, :3, 0], [0.0, 1.0, 0.0], atol=1e-9)  # heading +y: turned left
    right = Trajectory.arc(r, -90.0, 10.0, 10.0)
    np.testing.assert_allclose(np.linalg.norm(right.positions[:, :2] - [0.0, -r], axis=1), r, atol=1e-9)
    # constant speed: consecutive chords equal
    chords = np.linalg.norm(np.diff(a.positions, axis=0), axis=1)
    np.testing.assert_allclose(chords, chords[0], rtol=1e-9)
    # lane change: y(x) = offset · smootherstep(x / d); arc length L = ∫ sqrt(1 + y'(x)²) dx (computed here densely)
    d, off = 40.0, 3.5
    x = np.linspace(0.0, d, 200001)
    s_ = x / d
    dy = off * (30 * s_**2 - 60 * s_**3 + 30 * s_**4) / d
    L = float(np.sum((np.sqrt(1 + dy[1:] ** 2) + np.sqrt(1 + dy[:-1] ** 2)) / 2 * np.diff(x)))
    lc = Trajectory.lane_change(off, d, speed_mps=L / 2.0, rate_hz=1.0)        # 2 s: samples at 0, 1, 2 s
    assert len(lc) == 3
    np.testing.assert_allclose(lc.positions[-1], [d, off, 0.0], atol=1e-6)     # ends exactly one offset over
    np.testing.assert_allclose(lc.positions[1], [d / 2, off / 2, 0.0], atol=1e-6)  # symmetric: half way at x = d/2
    np.testing.assert_allclose(lc.ego_to_world[-1, :3, 0], [1.0, 0.0, 0.0], atol=1e-9)  # straight again
    steepest = math.atan(off * 30 / 16 / d)                                      # y'(d/2) = offset · 30/16 / d
    np.testing.assert_allclose(lc.ego_to_world[1, :3, 0], [math.cos(steepest), math.sin(steepest), 0.0], atol=1e-6)
    fine = Trajectory.lane_change(off, d, 10.0, 20.0)
    step = np.linalg.norm(np.diff(fine.positions[:, :2], axis=0), axis=1)
    np.testing.assert_allclose(step, 10.0 / 20.0, rtol=1e-3)                    # constant speed along the path
    seg = np.diff(fine.positions[:, :2], axis=0)
    yaw = np.arctan2(fine.ego_to_world[:, 1, 0], fine.ego_to_world[:, 0, 0])
    np.testing.assert_allclose(np.arctan2(seg[:, 1], seg[:, 0]), (yaw[1:] + yaw[:-1]) / 2, atol=1e-3)  # tangent heading


def test_trajectory_validation_errors():
    with pytest.raises(TrajectoryError, match=r"strictly increasing: timestamps\[1\] = 1.0 s is followed by timestamps\[2\]"):
        Trajectory(np.array([0.0, 1.0, 1.0]), np.stack([np.eye(4)] * 3))
    scaled = np.stack([np.eye(4)] * 2)
    scaled[1, :3, :3] *= 1.1
    with pytest.raises(TrajectoryError, match=r"ego_to_world\[1\] is not a rigid transform: rotation is not orthonormal"):
        Trajectory.from_poses(scaled)
    mirrored = np.stack([np.eye(4)] * 2)
    mirrored[0, 1, 1] = -1.0
    with pytest.raises(TrajectoryError, match="determinant"):
        Trajectory.from_poses(mirrored)
    with pytest.raises(TrajectoryError, match="2 timestamps but 3 poses"):
        Trajectory(np.array([0.0, 1.0]), np.stack([np.eye(4)] * 3))


def test_from_poses_from_episode_anchored_and_json(tmp_path):
    poses = np.stack([yaw_pose(100.0 + i, 50.0, 0.1 * i, z=2.0) for i in range(5)])
    t = Trajectory.from_poses(poses, rate_hz=4.0)
    np.testing.assert_allclose(t.timestamps, np.arange(5) / 4.0)

    class Ep:                                                              # duck-typed capture episode
        timestamp = np.arange(5) * 0.2 + 3.0
        ego_to_world = poses

    e = Trajectory.from_episode(Ep())
    np.testing.assert_array_equal(e.timestamps, Ep.timestamp)
    anchored = e.anchored(0)
    np.testing.assert_allclose(anchored.ego_to_world[0], np.eye(4), atol=1e-12)
    np.testing.assert_allclose(anchored.ego_to_world[2], rigid_inverse(poses[0]) @ poses[2], atol=1e-12)
    e.save(tmp_path / "t.json")
    back = Trajectory.load(tmp_path / "t.json")
    np.testing.assert_array_equal(back.timestamps, e.timestamps)
    np.testing.assert_array_equal(back.ego_to_world, e.ego_to_world)
    (tmp_path / "bad.json").write_text(json.dumps({"timestamps": [0]}))
    with pytest.raises(TrajectoryError, match="not an nfldm trajectory"):
        Trajectory.load(tmp_path / "bad.json")
    with pytest.raises(TypeError, match="needs a capture episode"):
        Trajectory.from_episode(object())
