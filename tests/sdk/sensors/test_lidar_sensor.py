"""`SensorWorld.spawn_lidar`: CARLA's ray-cast LiDAR actor over the generated LiDAR — its measurements equal
`NeuralScene.render_lidar` for the same trajectory and spec, CARLA's raw_data layout and PLY file, mounts, errors.

Scene: tests/semantic_scenes.py (road ground slab z ∈ [−1, 0], building wall x ∈ [12, 14] m, σ = 20 /m; a tiny
decoder with a hand-set semantic head: returns on the wall are buildings, on the ground road).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from nfldm_sdk.cameras.trajectory import Trajectory, yaw_pose
from nfldm_sdk.pipelines.scene import NeuralScene
from nfldm_sdk.sensors.lidar import lidar_samples, lidar_scan
from nfldm_sdk.sensors.lidar_measurement import LidarDetection, LidarMeasurement, decode_lidar_raw_data
from nfldm_sdk.sensors.lidar_spec import LidarError, LidarSpec
from nfldm_sdk.sensors.world import LIDAR_SENSOR, CameraImage, LidarSensor, SensorWorld
from semantic_scenes import BUILDING, ROAD, WALL_X, headless_decoder, semantic_decoder, slab_field

TRAJ = Trajectory.straight(2.0, speed_mps=10.0, rate_hz=10.0)     # x = 0, 1, 2 m at t = 0, 0.1, 0.2 s


def small_spec(name: str = "LIDAR_TOP") -> LidarSpec:
    """9 beams every 5° from +10° to −30°, 36 shots per beam (every 10°), 30 m."""
    return LidarSpec(channels=9, range_m=30.0, upper_fov_deg=10.0, lower_fov_deg=-30.0, rotation_frequency_hz=10.0,
                     points_per_second=9 * 10 * 36, name=name)


@pytest.fixture(scope="module")
def scene() -> NeuralScene:
    return NeuralScene(field=slab_field(), seed=3, bundle_hash="lidar-test-bundle", decoder=semantic_decoder())


def listen(sensor, store: list) -> None:
    sensor.listen(store.append)


def test_spawned_lidar_measures_what_render_lidar_scans(scene):
    spec = small_spec()
    world = SensorWorld(scene, TRAJ)
    lidar = world.spawn_lidar(spec)                                          # attached to the ego by default
    assert isinstance(lidar, LidarSensor) and lidar.parent is world.ego and lidar.type_id == LIDAR_SENSOR
    assert lidar.n_samples == lidar_samples(scene.field, spec.range_m)
    got: list[LidarMeasurement] = []
    listen(lidar, got)
    while not world.done:
        world.tick()
    ref = list(scene.render_lidar(TRAJ, spec))
    assert [m.frame for m in got] == [0, 1, 2] and len(ref) == 3
    for m, r in zip(got, ref):
        assert m.points.dtype == np.float32 and m.points.shape[1] == 4 and len(m) == len(r.points) > 0
        assert m.points.tobytes() == r.points.tobytes() and m.ranges.tobytes() == r.ranges.tobytes()
        assert m.tags.dtype == np.uint8 and np.array_equal(m.tags, r.tags)
        np.testing.assert_array_equal(m.transform, r.sensor_to_world)
        np.testing.assert_array_equal(m.transform, TRAJ.ego_to_world[m.frame] @ spec.lidar_to_ego)
        assert (m.timestamp, m.timestamp_us, m.channels, m.horizontal_angle) == (r.timestamp, r.timestamp_us, 9, 0.0)
        assert m.scan.scene_id == r.scene_id == "lidar-test-b-scene_000003"
        np.testing.assert_array_equal(r.sensor_to_world, r.ego_to_world @ r.lidar_to_ego)
    # the labels are the surfaces': the wall ahead is a building, the ground road
    world_pts = got[0].scan.points_world()
    wall = world_pts[:, 0] > WALL_X - 1.0
    assert wall.any() and (~wall).any()
    assert (got[0].tags[wall & (world_pts[:, 2] > 0.8)] == BUILDING).all()
    assert (got[0].tags[world_pts[:, 0] < 8.0] == ROAD).all()


def test_raw_data_iteration_counts_and_ply_follow_carla(scene, tmp_path):
    world = SensorWorld(scene, TRAJ)
    got: list[LidarMeasurement] = []
    listen(world.spawn_lidar(small_spec()), got)
    world.tick()
    world.tick()
    m = got[-1]
    raw = m.raw_data
    assert isinstance(raw, bytes) and len(raw) == 16 * len(m)
    np.testing.assert_array_equal(decode_lidar_raw_data(raw), m.points)
    np.testing.assert_array_equal(np.frombuffer(raw, dtype=np.float32).reshape(-1, 4)[:, :3], m.points[:, :3])
    with pytest.raises(ValueError, match="16 bytes per point"):
        decode_lidar_raw_data(raw[:-4])
    dets = list(m)
    assert len(dets) == len(m) and all(isinstance(d, LidarDetection) for d in dets)
    assert dets[5].point == tuple(float(v) for v in m.points[5, :3]) and dets[5].intensity == 1.0
    assert dets[5].object_tag == int(m.tags[5])
    counts = [m.get_point_count(c) for c in range(m.channels)]
    assert sum(counts) == len(m) and counts[0] < counts[-1]          # the upward beams miss the sky
    with pytest.raises(IndexError, match="9 channels"):
        m.get_point_count(9)
    path = m.save_to_disk(str(tmp_path / "lidar" / "%06d"))          # CARLA appends .ply
    assert path.endswith("lidar/000001.ply")
    with open(path) as f:
        header = [next(f).rstrip("\n") for _ in range(8)]
    assert header == ["ply", "format ascii 1.0", f"element vertex {len(m)}", "property float32 x",
                      "property float32 y", "property float32 z", "property float32 I", "end_header"]
    data = np.loadtxt(path, skiprows=8)
    assert data.shape == (len(m), 4)
    np.testing.assert_allclose(data, m.points, atol=5.1e-5)           # four decimals, as CARLA writes them
    import open3d as o3d  # start-up time: open3d only for this check

    assert len(o3d.io.read_point_cloud(path).points) == len(m)


def test_mounts_static_lidars_listener_order_and_errors(scene):
    spec = small_spec()
    world = SensorWorld(scene, TRAJ)
    order: list[str] = []
    cam = world.spawn_camera("front", attach_to=world.ego)
    high = np.array(spec.lidar_to_ego)
    high[2, 3] = 2.5                                                         # a mount 2.5 m up, overriding 1.8 m
    mounted = world.spawn_lidar(spec, transform=high)
    fixed = yaw_pose(4.0, 1.0, math.pi / 2, z=1.0)                           # fixed in the scene, facing +y
    static = world.spawn_lidar(small_spec("fixed"), attach_to=None, transform=fixed)
    seen: dict[str, list] = {"cam": [], "mounted": [], "static": []}
    for key, s in (("static", static), ("cam", cam), ("mounted", mounted)):  # listen order != spawn order
        s.listen(lambda data, key=key: (order.append(key), seen[key].append(data)))
    world.tick()
    world.tick()
    assert order == ["cam", "mounted", "static"] * 2                         # spawn order within each tick
    assert isinstance(seen["cam"][0], CameraImage) and isinstance(seen["static"][0], LidarMeasurement)
    m = seen["mounted"][1]
    np.testing.assert_array_equal(m.transform, TRAJ.ego_to_world[1] @ high)
    ref = lidar_scan(scene.field, spec, TRAJ.ego_to_world[1], high, n_samples=mounted.n_samples,
                     head=scene.decoder.semantic_head, frame=1)
    assert m.points.tobytes() == ref.points.tobytes()
    for s in seen["static"]:                                                 # the ego moves, the LiDAR does not
        np.testing.assert_allclose(s.transform, fixed, atol=1e-12)
        np.testing.assert_array_equal(s.transform, s.scan.ego_to_world @ s.scan.lidar_to_ego)
    np.testing.assert_allclose(seen["static"][0].ranges, seen["static"][1].ranges, atol=1e-4)
    mounted.destroy()
    assert world.get_sensors() == [cam, static] and not mounted.is_alive
    with pytest.raises(RuntimeError, match="destroyed"):
        mounted.listen(print)
    other = SensorWorld(scene, TRAJ)
    with pytest.raises(ValueError, match="attach_to must be this world's ego"):
        world.spawn_lidar(spec, attach_to=other.ego)
    with pytest.raises(LidarError, match="unknown"):
        world.spawn_lidar("no-such-lidar")
    with pytest.raises(ValueError, match="hit_alpha"):
        world.spawn_lidar(spec, hit_alpha=1.5)


def test_headless_model_lidar_has_no_tags():
    scene = NeuralScene(field=slab_field(), seed=0, bundle_hash="", decoder=headless_decoder())
    world = SensorWorld(scene, Trajectory.stationary(0.0, 10.0))
    got: list[LidarMeasurement] = []
    listen(world.spawn_lidar(small_spec()), got)
    world.tick()
    assert got[0].tags is None and len(got[0]) > 0 and next(iter(got[0])).object_tag is None
    assert got[0].scan.scene_id == "scene_000000"
