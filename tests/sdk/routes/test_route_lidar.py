"""LiDAR over a route (`nfldm_sdk.routes.lidar`): two scenes cut from one world scan like one field holding the whole
world, across the seam; the returns are labelled by the scene that returned them; `SensorWorld` and `NeuralRoute`
scan routes."""
from __future__ import annotations

import numpy as np
import pytest

from nfldm_sdk.cameras.trajectory import Trajectory, yaw_pose
from nfldm_sdk.routes.placement import plan_route
from nfldm_sdk.routes.sensors import RouteScenes
from nfldm_sdk.sensors.lidar import lidar_scan
from nfldm_sdk.sensors.lidar_spec import LidarSpec
from route_scenes import SCENE_TO_WORLD, SEAM_NORMALS, SEAM_POINTS, big_field, route_decoder, two_scene_route

pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def decoder():
    return route_decoder()


@pytest.mark.parametrize("x", [24.0, 31.0, 40.0])             # in cell 0, just before the seam (32 m), in cell 1
def test_a_route_scans_like_one_field_holding_its_world(decoder, x):
    route = RouteScenes(two_scene_route(), decoder, SCENE_TO_WORLD, SEAM_POINTS, SEAM_NORMALS)
    spec = LidarSpec.resolve("nuscenes32")
    ego = yaw_pose(x, 0.5, 0.0)
    got = route.lidar_scan(spec, ego, n_samples=512)
    ref = lidar_scan(big_field(), spec, ego, n_samples=768, head=decoder.semantic_head)
    assert np.array_equal(got.sensor_to_world, ref.sensor_to_world) and got.ranges.shape == ref.ranges.shape
    both = np.isfinite(got.ranges) & np.isfinite(ref.ranges)
    assert both.mean() > 0.5 and (np.isfinite(got.ranges) == np.isfinite(ref.ranges)).mean() > 0.99
    err = np.abs(got.ranges[both] - ref.ranges[both])
    assert np.median(err) < 0.05 and np.quantile(err, 0.99) < 0.5          # sample steps of ~0.1-0.2 m
    assert got.tags is not None and len(got.tags) == len(got.points) == int(np.isfinite(got.ranges).sum())
    assert (got.tags == ref.tags[np.isfinite(got.ranges[np.isfinite(ref.ranges)])]).mean() > 0.95


def test_a_sensor_world_and_a_neural_route_scan_the_route(tiny_generator, tmp_path):
    from nfldm_sdk.routes.outpaint import generate_route

    traj = Trajectory.straight(length_m=40.0)
    route = generate_route(tiny_generator, traj, seed=0, steps=2, out=tmp_path / "r")
    drive = Trajectory.straight(length_m=4.0, speed_mps=10.0, rate_hz=5.0, start=yaw_pose(12.0, 0.0, 0.0))
    scans = list(route.render_lidar(drive, "nuscenes32", n_samples=64))
    assert len(scans) == len(drive) and all(s.tags is not None for s in scans)
    world = route.world(drive, batch_size=4)
    got = []
    world.spawn_lidar("nuscenes32", n_samples=64).listen(got.append)
    while not world.done:
        world.tick()
    assert len(got) == len(drive)
    for m, s in zip(got, scans):
        assert np.array_equal(m.scan.ranges, s.ranges) and np.array_equal(m.scan.tags, s.tags)
    assert np.isfinite(scans[0].ranges).mean() > 0.2
    plan = plan_route(traj, (-16.0, 48.0))
    assert len(plan) == len(route)
