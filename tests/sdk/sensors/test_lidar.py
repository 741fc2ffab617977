"""Generated LiDAR: the spec (presets, beam tables, CARLA attributes, JSON), the beam marcher against analytic
media, and scans of an analytic wall along a trajectory.

The wall scene: a 0.5 m voxel grid over x, y ∈ [−16, 16], z ∈ [−2, 8] m, σ = 50 /m for x ∈ [10, 12], z ≤ 4 m (all
y), empty elsewhere. A LiDAR 1.8 m above the origin sees the wall's front face at range 10 / (cos e · cos a) plus
the crossing depth ln 2 / σ of a uniform medium (opacity 0.5 = `HIT_ALPHA`).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import nfldm_sdk
from nfldm_sdk.errors import NfldmError
from nfldm_sdk.cameras.trajectory import Trajectory, yaw_pose
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.pipelines.scene import NeuralScene
from nfldm_sdk.rendering.rays import HIT_ALPHA
from nfldm_sdk.sensors.lidar import LidarScan, lidar_samples, march_lidar_rays, render_lidar
from nfldm_sdk.sensors.lidar_spec import LIDAR_PRESETS, LidarError, LidarSpec

V = 0.5                                   # voxel edge, metres
LO, HI = (-16.0, -16.0, -2.0), (16.0, 16.0, 8.0)
SIGMA = 50.0
WALL_X, WALL_TOP = 10.0, 4.0
MOUNT_Z = 1.8


def wall_field() -> VoxelField:
    Z, Y, X = (round((h - lo) / V) for lo, h in zip(LO[::-1], HI[::-1]))
    xc = LO[0] + (torch.arange(X) + 0.5) * V
    zc = LO[2] + (torch.arange(Z) + 0.5) * V
    wall = (zc < WALL_TOP)[:, None, None] & ((xc > WALL_X) & (xc < WALL_X + 2.0))[None, None, :]
    density = (SIGMA * wall.float()).expand(Z, Y, X).contiguous()
    return VoxelField(density, torch.zeros(1, Z, Y, X), torch.tensor([LO, HI]))


def small_spec() -> LidarSpec:
    """13 beams every 5° from +30° to −30°, 72 shots per beam (every 5°), 40 m."""
    return LidarSpec(channels=13, range_m=40.0, upper_fov_deg=30.0, lower_fov_deg=-30.0, rotation_frequency_hz=10.0,
                     points_per_second=13 * 10 * 72, name="test")


# ============================================================================================ the spec
@pytest.mark.parametrize("name, channels, per_channel, upper, lower, step", [
    ("nuscenes32", 32, 2171, 10.67, -30.67, 360 / 2171),       # 1 390 000 / 20 / 32 = 2171.875
    ("hdl64", 64, 2031, 2.0, -24.8, 360 / 2031),               # 1 300 000 / 10 / 64 = 2031.25
    ("os128", 128, 2048, 22.5, -22.5, 360 / 2048),             # 2 621 440 / 10 / 128 = 2048
])
def test_presets_beam_tables(name, channels, per_channel, upper, lower, step):
    spec = LidarSpec.preset(name)
    el, az, dirs = spec.elevations_deg(), spec.azimuths_deg(), spec.directions()
    assert (spec.channels, spec.points_per_channel, spec.name) == (channels, per_channel, name)
    assert el.shape == (channels,) and az.shape == (per_channel,) and dirs.shape == (channels, per_channel, 3)
    assert el[0] == pytest.approx(upper) and el[-1] == pytest.approx(lower)
    np.testing.assert_allclose(np.diff(el), (lower - upper) / (channels - 1), atol=1e-12)   # even, downwards
    assert az[0] == 0.0 and np.diff(az) == pytest.approx(step) and az[-1] < 360.0
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.degrees(np.arcsin(dirs[:, 0, 2])), el, atol=1e-9)
    # Azimuth 0 = +x; a quarter turn later (counter-clockwise from above) = +y.
    horiz = LidarSpec(1, 10.0, 0.0, 0.0, 1.0, 4).directions()[0]
    np.testing.assert_allclose(horiz, [[1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]], atol=1e-12)
    np.testing.assert_array_equal(spec.lidar_to_ego, [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, MOUNT_Z], [0, 0, 0, 1]])


def test_unknown_preset_and_invalid_fields_name_the_field():
    with pytest.raises(LidarError, match="nuscenes32"):
        LidarSpec.preset("hdl32")
    base = LidarSpec.preset("nuscenes32")
    for change, word in [(dict(channels=0), "channels"), (dict(range_m=-1.0), "range_m"),
                         (dict(upper_fov_deg=-40.0), "upper_fov_deg"), (dict(rotation_frequency_hz=0.0), "rotation"),
                         (dict(points_per_second=10), "points_per_second"), (dict(channels=2.5), "channels"),
                         (dict(lidar_to_ego=np.diag([2.0, 1, 1, 1])), "lidar_to_ego"), (dict(name=""), "name")]:
        with pytest.raises(LidarError, match=word):
            dataclasses.replace(base, **change)
    assert issubclass(LidarError, ValueError) and issubclass(LidarError, NfldmError)


@pytest.mark.parametrize("name", sorted(LIDAR_PRESETS))
def test_carla_attributes_round_trip(name):
    spec = LidarSpec.preset(name)
    attrs = spec.carla_attributes()
    assert {"channels", "range", "upper_fov", "lower_fov", "rotation_frequency", "points_per_second"} <= set(attrs)
    assert all(isinstance(v, str) for v in attrs.values())
    assert float(attrs["range"]) == spec.range_m                               # metres, as CARLA >= 0.9.7
    assert LidarSpec.from_carla_attributes(attrs) == spec


def test_carla_attributes_defaults_and_errors():
    spec = LidarSpec.from_carla_attributes({"channels": "16", "range": "50", "sensor_tick": "0.05",
                                            "noise_stddev": "0.0"})
    assert (spec.channels, spec.range_m, spec.upper_fov_deg, spec.lower_fov_deg) == (16, 50.0, 10.0, -30.0)
    assert (spec.rotation_frequency_hz, spec.points_per_second, spec.name) == (10.0, 56000, "lidar")
    with pytest.raises(LidarError, match="channels='many'"):
        LidarSpec.from_carla_attributes({"channels": "many"})
    with pytest.raises(LidarError, match="upper_fov_deg"):                   # a typo: unknown name
        LidarSpec.from_carla_attributes({"upper_fov_deg": "10"})
    with pytest.raises(LidarError, match="horizontal_fov"):
        LidarSpec.from_carla_attributes({"horizontal_fov": "90"})


def test_json_round_trip_and_bad_files(tmp_path):
    spec = dataclasses.replace(LidarSpec.preset("os128", lidar_to_ego=yaw_pose(0.5, -0.25, 0.3, 2.0)), name="top")
    path = spec.save(tmp_path / "sub" / "lidar.json")
    same = LidarSpec.load(path)
    assert same == spec and same.name == "top"
    np.testing.assert_array_equal(same.lidar_to_ego, spec.lidar_to_ego)       # float64 exact
    assert LidarSpec.resolve(str(path)) == spec and LidarSpec.resolve("hdl64") == LidarSpec.preset("hdl64")
    with pytest.raises(FileNotFoundError, match="LidarSpec.save"):
        LidarSpec.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LidarError, match="bad.json"):
        LidarSpec.load(tmp_path / "bad.json")
    (tmp_path / "short.json").write_text('{"channels": 4}')
    with pytest.raises(LidarError, match="range_m"):
        LidarSpec.load(tmp_path / "short.json")


def test_public_names():
    assert nfldm_sdk.LidarSpec is LidarSpec and nfldm_sdk.LidarScan is LidarScan


# ============================================================================================ the marcher
@pytest.mark.parametrize("hit_alpha", [HIT_ALPHA, 0.9])
def test_march_uniform_medium_is_exact(hit_alpha):
    """Constant σ everywhere: the crossing is at ln(1 / (1 − hit_alpha)) / σ from the origin, whatever the step."""
    sigma = 2.0
    field = VoxelField(torch.full((4, 4, 4), sigma), torch.zeros(1, 4, 4, 4), torch.tensor([[-5.0] * 3, [5.0] * 3]))
    g = torch.Generator().manual_seed(0)
    d = torch.randn(64, 3, generator=g)
    o = torch.rand(64, 3, generator=g) - 0.5
    r = march_lidar_rays(field, o, d, max_range=30.0, n_samples=37, hit_alpha=hit_alpha)
    assert r.dtype == torch.float32 and r.shape == (64,)
    np.testing.assert_allclose(r.numpy(), math.log(1.0 / (1.0 - hit_alpha)) / sigma, rtol=1e-5)
    # Not enough medium within max_range (optical depth 2 · 0.2 < ln 2): no return.
    assert torch.isinf(march_lidar_rays(field, o, d, max_range=0.2, n_samples=8)).all()
    # A beam that misses the box: no return.
    far = march_lidar_rays(field, torch.tensor([[0.0, 0.0, 20.0]]), torch.tensor([[0.0, 0.0, 1.0]]),
                           max_range=30.0, n_samples=8)
    assert torch.isinf(far).all()


def test_march_chunks_do_not_change_ranges():
    field = wall_field()
    spec = small_spec()
    d = torch.from_numpy(spec.directions().reshape(-1, 3))
    o = torch.tensor([[0.0, 0.0, MOUNT_Z]], dtype=torch.float64).expand_as(d)
    a = march_lidar_rays(field, o, d, max_range=40.0, n_samples=100)
    b = march_lidar_rays(field, o, d, max_range=40.0, n_samples=100, max_samples_per_chunk=100 * 7)
    assert torch.equal(a, b)


# ============================================================================================ scans
def _classify(spec: LidarSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per beam of the range image: a clear front-face hit, a clear miss, and the face distance along the beam."""
    e = np.radians(spec.elevations_deg())[:, None]
    a = np.radians(spec.azimuths_deg())[None, :]
    ahead = np.cos(a) > 1e-6
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = 1.0 / (np.cos(e) * np.cos(a))                                 # beam metres per metre of x
        y = WALL_X * np.tan(a) + 0 * e                                        # where the beam crosses x = 10
        z = MOUNT_Z + WALL_X * np.tan(e) / np.cos(a)
    hit = ahead & (np.abs(y) < HI[1] - 2 * V) & (z > LO[2] + 2 * V) & (z < WALL_TOP - 2 * V)
    miss = ~ahead | (z > WALL_TOP + 2 * V) | (z < LO[2] - 2 * V) | (np.abs(y) > HI[1] + 2 * V)
    return hit, miss, WALL_X * scale


def test_wall_ranges_points_and_drops():
    field, spec = wall_field(), small_spec()
    scan = next(render_lidar(field, Trajectory.from_poses(np.eye(4)[None]), spec))
    hit, miss, face = _classify(spec)
    assert hit.sum() >= 20 and miss.sum() >= 400                              # both cases are exercised
    step = min(spec.range_m, math.dist(LO, HI)) / lidar_samples(field, spec.range_m)   # longest step, ≤ V / 2
    assert step <= V / 2
    expected = face + math.log(2.0) / SIGMA                                   # the crossing in a uniform medium
    tol = (V / 2) * np.abs(face) / WALL_X + step                              # trilinear ramp + one step
    assert scan.ranges.shape == (13, 72) and scan.ranges.dtype == np.float32
    assert np.all(np.abs(scan.ranges[hit] - expected[hit]) <= tol[hit])
    assert np.isinf(scan.ranges[miss]).all()                                  # up over the wall, backwards, floor
    assert len(scan.points) == np.isfinite(scan.ranges).sum() and scan.points.dtype == np.float32
    np.testing.assert_array_equal(scan.points[:, 3], 1.0)
    np.testing.assert_allclose(np.linalg.norm(scan.points[:, :3], axis=1), scan.ranges[np.isfinite(scan.ranges)],
                               rtol=1e-5)
    world = scan.points_world()
    front = world[:, 2] < WALL_TOP - 2 * V                                    # away from the wall's top edge
    assert front.sum() >= hit.sum()
    np.testing.assert_allclose(world[front, 0], WALL_X + math.log(2.0) / SIGMA, atol=V / 2 + step)


def test_trajectory_poses_and_scene_delegation():
    field, spec = wall_field(), small_spec()
    traj = Trajectory.straight(length_m=2.0, speed_mps=10.0, rate_hz=10.0)    # x = 0, 1, 2 m
    assert len(traj) == 3
    scans = list(render_lidar(field, traj, spec))
    assert [s.frame for s in scans] == [0, 1, 2]
    assert [s.timestamp for s in scans] == pytest.approx([0.0, 0.1, 0.2])
    horizontal = int(np.argmin(np.abs(spec.elevations_deg())))               # the 0° beam, azimuth 0
    for k, s in enumerate(scans):
        np.testing.assert_array_equal(s.sensor_to_world, traj.ego_to_world[k] @ spec.lidar_to_ego)
        assert s.sensor_to_world[:3, 3] == pytest.approx([k, 0.0, MOUNT_Z])
        assert s.ranges[horizontal, 0] == pytest.approx(WALL_X - k + math.log(2.0) / SIGMA, abs=V / 2 + V / 2)
        assert s.spec_name == "test"
    scene = NeuralScene(field=field, seed=0, bundle_hash="")
    via_scene = list(scene.render_lidar(traj, spec, n_samples=120))
    direct = list(render_lidar(field, traj, spec, n_samples=120))
    for a, b in zip(via_scene, direct):
        assert a.points.tobytes() == b.points.tobytes() and a.ranges.tobytes() == b.ranges.tobytes()


def test_deterministic_and_argument_errors():
    field, spec = wall_field(), small_spec()
    traj = Trajectory.from_poses(yaw_pose(0.5, 0.25, 0.2)[None])
    a, b = (next(render_lidar(field, traj, spec)) for _ in range(2))
    assert a.points.tobytes() == b.points.tobytes() and a.ranges.tobytes() == b.ranges.tobytes()
    with pytest.raises(TypeError, match="NeuralScene or a VoxelField"):
        render_lidar(object(), traj, spec)
    with pytest.raises(LidarError, match="nuscenes32"):
        render_lidar(field, traj, "no-such-lidar")
    with pytest.raises(LidarError, match="batched"):
        render_lidar(VoxelField.stack([field, field]), traj, spec)
