"""Sensors over a route (`nfldm_sdk.routes.sensors`): trajectory frames with world-frame metadata, the CARLA-like
`SensorWorld` driving a route of generated scenes (cameras; its LiDAR: test_route_lidar.py), the overlap check against the union of the boxes, and the
route's own renderer behind `render_trajectory` / `render_trajectory_batched`."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nfldm_sdk.cameras.rig import CameraRig
from nfldm_sdk.cameras.trajectory import Trajectory, yaw_pose
from nfldm_sdk.rendering.api import HIT_ALPHA
from nfldm_sdk.routes.placement import RouteError, plan_route
from nfldm_sdk.routes.sensors import RouteScenes, render_route_trajectory, route_world
from nfldm_sdk.sensors.frames import compose_poses, scene_id_of
from nfldm_sdk.sensors.frustum import NoOverlapError
from nfldm_sdk.sensors.trajectory_render import render_trajectory, render_trajectory_batched
from nfldm_sdk.sensors.world import SensorWorld
from route_scenes import SCENE_TO_WORLD, SEAM_NORMALS, SEAM_POINTS, SIZE, route_decoder, two_scene_route

pytestmark = pytest.mark.usefixtures("one_thread_module")
SKY = 11


@pytest.fixture(scope="module")
def route() -> RouteScenes:
    dec = route_decoder()
    return RouteScenes(two_scene_route(mirrored=True), dec, SCENE_TO_WORLD, SEAM_POINTS, SEAM_NORMALS, seed=7,
                       bundle_hash="b" * 64, scene_id="route-under-test")


@pytest.fixture(scope="module")
def generated(tiny_generator):
    """Two tiny generated scenes placed along a straight 60 m drive by `plan_route` (anchors 0 and 40 m, seam at
    36 m)."""
    scenes = tiny_generator.generate(2, seed=0, steps=2)
    plan = plan_route(Trajectory.straight(60.0), (-16.0, 48.0), overlap_m=24.0, reach_m=48.0)
    assert len(plan) == 2
    return scenes, plan


def test_route_trajectory_frames_carry_the_world_frame_metadata(route):
    rig = CameraRig.preset("capture", SIZE, SIZE)
    traj = Trajectory.straight(length_m=6.0, speed_mps=10.0, rate_hz=5.0, start=yaw_pose(29.0, 0.5, 0.0))  # 4 ticks
    ticks = list(render_trajectory(route, traj, rig, batch_size=5))              # a route where a scene goes
    assert len(ticks) == len(traj) == 4
    c2w = compose_poses(traj.ego_to_world, rig.cam_to_ego())
    for t, frames in enumerate(ticks):
        assert [f.camera for f in frames] == rig.names
        for n, f in enumerate(frames):
            assert (f.frame, f.timestamp) == (t, traj.timestamps[t])
            assert np.array_equal(f.ego_to_world, traj.ego_to_world[t]) and np.array_equal(f.cam_to_ego, rig.cam_to_ego()[n])
            assert np.array_equal(f.cam_to_world, c2w[t, n])
            assert np.array_equal(f.cam_to_world, f.ego_to_world @ f.cam_to_ego)
            assert (f.seed, f.bundle_hash, f.scene_id) == (7, "b" * 64, "route-under-test")
            assert f.rgb.shape == (SIZE, SIZE, 3) and f.rgb.dtype == np.uint8
            assert np.array_equal(np.isfinite(f.depth), f.alpha >= HIT_ALPHA)
            assert np.array_equal(f.semantic == SKY, ~np.isfinite(f.depth))
    # the same pixels as the route's own render of those cameras (any batching: depth and alpha per ray)
    views = route.render(rig.cameras(traj.ego_to_world), batch_size=24)
    depth = np.stack([f.depth for frames in ticks for f in frames])
    np.testing.assert_allclose(depth, views.depth.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.stack([f.alpha for frames in ticks for f in frames]), views.alpha.numpy(), atol=1e-6)
    # the batched form gives the same frames
    batch = render_trajectory_batched(route, traj, rig, batch_size=24)
    np.testing.assert_allclose(batch.depth.reshape(-1, SIZE, SIZE).numpy(), views.depth.numpy(), atol=1e-5)


def test_plain_arguments_and_modes(route):
    rig = CameraRig.preset("front", SIZE, SIZE)
    traj = Trajectory.from_poses(np.stack([yaw_pose(30.0, 0.5, 0.0), yaw_pose(34.0, 0.5, 0.0)]))
    pairs = [(f, route.decoder) for f in route.fields]
    comp = list(render_route_trajectory(pairs, SCENE_TO_WORLD, SEAM_POINTS, SEAM_NORMALS, traj, rig))
    near = list(render_route_trajectory(pairs, SCENE_TO_WORLD, SEAM_POINTS, SEAM_NORMALS, traj, rig, mode="nearest"))
    assert comp[0][0].scene_id == "" and comp[0][0].seed is None                   # bare fields: no provenance
    # at x = 30 the camera looks across the seam: the composite shows (mirrored) scene 1 beyond it, the nearest
    # scene shows scene 0's own content there; once past the seam both see scene 1 ahead
    assert np.abs(comp[0][0].rgb.astype(int) - near[0][0].rgb.astype(int)).mean() > 2
    with pytest.raises(RouteError, match="mode"):
        render_route_trajectory(pairs, SCENE_TO_WORLD, SEAM_POINTS, SEAM_NORMALS, traj, rig, mode="blend")
    with pytest.raises(RouteError, match="bundles"):
        RouteScenes.from_scenes([type("S", (), {"field": f, "decoder": route.decoder, "seed": 1, "bundle_hash": h})()
                                 for f, h in zip(route.fields, ("a" * 64, "c" * 64))],
                                SCENE_TO_WORLD, SEAM_POINTS, SEAM_NORMALS)


def test_the_overlap_check_is_against_the_union_of_the_boxes(route):
    rig = CameraRig.preset("front", SIZE, SIZE)
    inside = Trajectory.from_poses(np.stack([yaw_pose(75.0, 0.0, 0.0)]))            # only in scene 1's box
    assert np.isfinite(next(iter(render_trajectory(route, inside, rig)))[0].depth).any()
    away = Trajectory.from_poses(np.stack([yaw_pose(500.0, 0.0, 0.0)]))
    with pytest.raises(NoOverlapError, match="route's 2 scene boxes"):
        render_trajectory(route, away, rig)
    frames = next(iter(render_trajectory(route, away, rig, check_overlap=False)))
    assert not np.isfinite(frames[0].depth).any() and (frames[0].semantic == SKY).all()


def test_generated_scenes_drive_through_a_sensor_world(generated):
    scenes, plan = generated
    dec = scenes[0].decoder
    h, w = dec.config.image_size
    traj = Trajectory.straight(length_m=8.0, speed_mps=10.0, rate_hz=5.0, start=yaw_pose(32.0, 0.0, 0.0))  # crosses 36
    world = route_world(scenes, plan.scene_to_world, plan.seam_points, plan.seam_normals, traj, batch_size=4)
    assert isinstance(world, SensorWorld) and world.has_semantics
    got, labels = [], []
    cam = world.spawn_camera("front", attach_to=world.ego)
    cam.listen(got.append)
    sem = world.spawn_camera("front", attach_to=world.ego, blueprint="sensor.camera.semantic_segmentation")
    sem.listen(labels.append)
    world.spawn_lidar("nuscenes32", n_samples=32)                # a route scans itself (test_route_lidar.py)
    while not world.done:
        world.tick()
    assert [im.frame for im in got] == list(range(len(traj))) and len(labels) == len(traj)
    rig = CameraRig.preset("capture", w, h).select(["front"])
    ticks = list(render_route_trajectory(scenes, plan.scene_to_world, plan.seam_points, plan.seam_normals, traj, rig))
    for im, lab, frames in zip(got, labels, ticks):
        f = frames[0]
        assert np.array_equal(im.depth, f.depth)                                        # same rays, same composite
        assert np.abs(im.rgb.astype(int) - f.rgb.astype(int)).max() <= 1
        assert np.array_equal(im.transform, f.cam_to_world)
        assert im.scene_id == f.scene_id == f"{scene_id_of(scenes[0])}-route2"
        assert f.bundle_hash == scenes[0].bundle_hash and f.seed == scenes[0].seed
        assert np.array_equal(lab.tags, f.semantic)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_route_renders_on_another_device_without_moving_its_decoder(route):
    rig = CameraRig.preset("front", SIZE, SIZE)
    traj = Trajectory.from_poses(np.stack([yaw_pose(30.0, 0.5, 0.0)]))
    gpu = next(iter(render_trajectory(route, traj, rig, device="cuda")))[0]
    cpu = next(iter(render_trajectory(route, traj, rig)))[0]
    assert next(route.decoder.parameters()).device.type == "cpu"
    np.testing.assert_allclose(gpu.alpha, cpu.alpha, atol=1e-3)
