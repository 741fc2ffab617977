"""Labels on the sensor paths: frames from every path carry CARLA tags consistent with depth, a two-slab scene renders
the right class on each slab and sky above, CARLA's semantic camera, labelled generated LiDAR, head-less models.

Scenes and the hand-set semantic head: tests/semantic_scenes.py (road ground slab, building wall at x = 12 m).
"""
from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from nfldm_sdk.cameras.rig import CameraRig
from nfldm_sdk.cameras.trajectory import Trajectory
from nfldm_sdk.labels.classes import CARLA_PALETTE
from nfldm_sdk.models.semantic_head import SEMANTICS_UNAVAILABLE, SemanticsUnavailableError
from nfldm_sdk.pipelines.scene import NeuralScene
from nfldm_sdk.sensors.lidar import NO_RETURN_TAG, lidar_point_tags, render_lidar
from nfldm_sdk.sensors.lidar_spec import LidarSpec
from nfldm_sdk.sensors.renderer import render_views
from nfldm_sdk.sensors.trajectory_render import render_trajectory, render_trajectory_batched
from nfldm_sdk.sensors.views import SceneImages, decode_views
from nfldm_sdk.sensors.world import SEMANTIC_CAMERA, SemanticImage, SensorWorld
from semantic_scenes import (BUILDING, ROAD, SKY_TAG, VEGETATION, WALL_X, expected_labels, headless_decoder, on_wall,
                             semantic_decoder, slab_field)

SIZE = 32
ONE_TICK = Trajectory.stationary(0.0, 10.0)     # one pose: the ego at the origin


@pytest.fixture(scope="module")
def scene() -> NeuralScene:
    return NeuralScene(field=slab_field(), seed=5, bundle_hash="semantic-test", decoder=semantic_decoder())


@pytest.fixture(scope="module")
def rig() -> CameraRig:
    return CameraRig.preset("capture", SIZE, SIZE)


# ============================================================================================ frames
def test_two_labelled_slabs_render_road_building_and_sky_above(scene, rig):
    """Every camera of the ring: pixels on the ground are road, on the wall building, sky exactly where depth is inf;
    away from class boundaries (labels are upsampled from half resolution) every pixel matches its surface point."""
    (frames,) = list(render_trajectory(scene, ONE_TICK, rig))
    front = frames[0]
    assert front.camera == "front" and front.semantic.dtype == np.uint8 and front.semantic.shape == (SIZE, SIZE)
    assert {ROAD, BUILDING, SKY_TAG} <= set(np.unique(front.semantic).tolist())
    # the front camera (1.6 m up, 90°) sees the wall's top edge z = 3 m at x = 12 m a little above the horizon: the
    # upper rows are sky, the rows just above the image centre wall, the lower half road
    assert (front.semantic[:8] == SKY_TAG).all() and (front.semantic[-8:] == ROAD).all()
    assert (front.semantic[15, 8:24] == BUILDING).all()
    for f in frames:
        np.testing.assert_array_equal(f.semantic == SKY_TAG, ~np.isfinite(f.depth))     # the depth's hit rule
        expected, interior = expected_labels(f)
        assert interior.mean() > 0.7
        np.testing.assert_array_equal(f.semantic[interior], expected[interior], err_msg=f.camera)
        conf, hit = f.semantic_confidence, np.isfinite(f.depth)
        assert conf.dtype == np.float32 and conf.shape == (SIZE, SIZE) and ((conf >= 0) & (conf <= 1 + 1e-6)).all()
        assert (conf[hit] <= f.alpha[hit] + 1e-5).all()                       # p_k = α · softmax(L)_k ≤ α
        # opaque slabs and a one-class head: p ≈ 1 inside a slab's image; the low-resolution render mixes the two
        # classes' probabilities within a pixel or two of their boundary (never below the winning half)
        opaque = conf[interior & (f.alpha > 0.99)]
        assert np.median(opaque) > 0.99 and opaque.min() > 0.5


def test_every_frame_path_carries_the_same_labels(scene, rig):
    """decode_views, NeuralScene.render, render_views, render_trajectory (lazy, per tick), render_trajectory_batched
    (FrameBatch), SensorWorld listeners: one label image per view, identical across paths and batch sizes."""
    traj = Trajectory.straight(1.0, speed_mps=10.0, rate_hz=10.0)                     # 2 ticks
    rig = CameraRig(rig.specs[:3])                                                    # front, front_left, back_left
    ticks = list(render_trajectory(scene, traj, rig, batch_size=4))
    batch = render_trajectory_batched(scene, traj, rig, batch_size=12)
    assert batch.has_semantics and batch.semantic.shape == (2, 3, SIZE, SIZE) and batch.semantic.dtype == torch.uint8
    assert batch.semantic_confidence.dtype == torch.float32
    for t in range(2):
        for n in range(3):
            np.testing.assert_array_equal(ticks[t][n].semantic, batch.semantic[t, n].numpy())
            np.testing.assert_array_equal(batch.frame(t, n).semantic, ticks[t][n].semantic)
            np.testing.assert_allclose(batch.frame(t, n).semantic_confidence, ticks[t][n].semantic_confidence,
                                       atol=1e-6)
    cams = rig.cameras(traj.ego_to_world)                                             # [2, 3]
    direct = decode_views(scene.decoder, scene.field, cams.flatten())
    assert direct.has_semantics
    np.testing.assert_array_equal(direct.semantic.reshape(2, 3, SIZE, SIZE).numpy(), batch.semantic.numpy())
    np.testing.assert_array_equal(scene.render(cams, views_per_call=5).semantic.numpy(), direct.semantic.numpy())
    np.testing.assert_array_equal(render_views(scene, cams).semantic.numpy(), batch.semantic.numpy())
    # cat / getitem keep the labels with their views
    both = SceneImages.cat([direct[:3], direct[3:]])
    assert torch.equal(both.semantic, direct.semantic) and torch.equal(both.semantic_confidence,
                                                                        direct.semantic_confidence)
    assert torch.equal(direct[torch.tensor([4, 1])].semantic, direct.semantic[[4, 1]])
    # the sky's confidence is 1 − alpha (p_sky = 1 − α, upsampled like alpha)
    sky = direct.semantic == SKY_TAG
    torch.testing.assert_close(direct.semantic_confidence[sky], 1.0 - direct.alpha[sky], atol=1e-5, rtol=0)
    # SensorWorld callbacks
    world = SensorWorld(scene, traj, rig=rig)
    got = []
    world.spawn_camera("front", attach_to=world.ego).listen(lambda im: got.append((im.semantic, im.has_semantics)))
    while not world.done:
        world.tick()
    assert [h for _, h in got] == [True, True]
    for t in range(2):
        np.testing.assert_array_equal(got[t][0], ticks[t][0].semantic)
    assert ticks[0][0].metadata()["semantic"].startswith("CARLA")


def test_semantic_camera_blueprint_delivers_tags_like_carla(scene, rig, tmp_path):
    world = SensorWorld(scene, ONE_TICK, rig=rig)
    rgb_cam = world.spawn_camera("front", attach_to=world.ego)
    sem_cam = world.spawn_camera("front", attach_to=world.ego, blueprint=SEMANTIC_CAMERA)
    assert (rgb_cam.type_id, sem_cam.type_id) == ("sensor.camera.rgbd", SEMANTIC_CAMERA) and world.has_semantics
    assert world.spawn_camera("front", blueprint="sensor.camera.rgb").type_id == "sensor.camera.rgbd"
    images = {}
    rgb_cam.listen(lambda im: images.setdefault("rgb", im))
    sem_cam.listen(lambda im: images.setdefault("sem", im))
    world.tick()
    sem, rgb = images["sem"], images["rgb"]
    assert isinstance(sem, SemanticImage) and not isinstance(rgb, SemanticImage)
    np.testing.assert_array_equal(sem.tags, rgb.semantic)                     # a separate sensor, the same labels
    assert sem.tags.dtype == np.uint8 and sem.raw_data == sem.tags.tobytes() and len(sem.raw_data) == SIZE * SIZE
    assert rgb.raw_data == rgb.rgb.tobytes()
    raw = iio.imread(sem.save_to_disk(str(tmp_path / "sem_%04d.png")))
    assert (tmp_path / "sem_0000.png").is_file()
    np.testing.assert_array_equal(raw, sem.tags)                              # lossless 8-bit tags
    pal = iio.imread(sem.save_to_disk(str(tmp_path / "pal.png"), color_converter="cityscapes"))
    np.testing.assert_array_equal(pal, CARLA_PALETTE[sem.tags])
    with pytest.raises(ValueError, match="color_converter"):
        sem.save_to_disk(str(tmp_path / "x.png"), color_converter="depth")
    with pytest.raises(ValueError, match="image.depth"):
        world.spawn_camera("front", blueprint="sensor.camera.depth")
    with pytest.raises(ValueError, match="unknown camera blueprint"):
        world.spawn_camera("front", blueprint="sensor.lidar.ray_cast")


def test_headless_model_renders_rgb_depth_and_refuses_labels(rig):
    scene = NeuralScene(field=slab_field(), seed=5, bundle_hash="headless", decoder=headless_decoder())
    (frames,) = list(render_trajectory(scene, ONE_TICK, rig))
    f = frames[0]
    assert f.semantic is None and f.semantic_confidence is None and not f.has_semantics
    assert np.isfinite(f.depth).any() and f.rgb.shape == (SIZE, SIZE, 3)
    assert f.metadata()["semantic"] is None
    batch = render_trajectory_batched(scene, ONE_TICK, rig)
    assert batch.semantic is None and batch.frame(0, 0).semantic is None
    images = scene.render(rig.cameras(np.eye(4)[None]))
    assert images.semantic is None and SceneImages.cat([images[:2], images[2:]]).semantic is None
    world = SensorWorld(scene, ONE_TICK, rig=rig)
    assert not world.has_semantics
    with pytest.raises(SemanticsUnavailableError) as e:
        world.spawn_camera("front", attach_to=world.ego, blueprint=SEMANTIC_CAMERA)
    assert str(e.value) == SEMANTICS_UNAVAILABLE and "retrain stage 1" in str(e.value)
    assert world.get_sensors() == []                                          # nothing was spawned


# ============================================================================================ LiDAR
def test_lidar_returns_carry_the_class_of_the_surface_they_hit(scene):
    # 16 beams from +10° to -30°, 360 azimuths: the nuScenes layout, thinned to keep the test fast
    spec = LidarSpec(channels=16, range_m=70.0, upper_fov_deg=10.0, lower_fov_deg=-30.0, rotation_frequency_hz=10.0,
                     points_per_second=16 * 360 * 10)
    (scan,) = list(render_lidar(scene, ONE_TICK, spec))
    assert scan.tags is not None and scan.tags.shape == (len(scan.points),) and scan.tags.dtype == np.uint8
    p = scan.points_world()
    wall = on_wall(p)
    assert (~wall).sum() > 500 and wall.sum() > 200
    # away from the wall's foot (where the blurred surfaces of both slabs meet) every return has its slab's class
    assert (scan.tags[~wall & (p[:, 0] < WALL_X - 1.5)] == ROAD).all()
    assert (scan.tags[wall & (p[:, 2] > 1.0)] == BUILDING).all()
    image = scan.tag_image()
    assert image.shape == scan.ranges.shape
    np.testing.assert_array_equal(image[np.isfinite(scan.ranges)], scan.tags)
    assert (image[~np.isfinite(scan.ranges)] == NO_RETURN_TAG).all() and (~np.isfinite(scan.ranges)).any()
    # a bare field has no head: geometry only, unless a head is given
    (bare,) = list(render_lidar(scene.field, ONE_TICK, spec))
    assert bare.tags is None and bare.tag_image() is None
    np.testing.assert_array_equal(bare.ranges, scan.ranges)
    (given,) = list(render_lidar(scene.field, ONE_TICK, spec,
                                 semantic_head=scene.decoder.semantic_head))
    np.testing.assert_array_equal(given.tags, scan.tags)
    headless = NeuralScene(field=slab_field(), seed=5, bundle_hash="headless", decoder=headless_decoder())
    (none,) = list(headless.render_lidar(ONE_TICK, spec))
    assert none.tags is None and len(none.points) == len(scan.points)


def test_lidar_labels_ignore_the_features_of_empty_space():
    """Returns sit between a slab's first voxel centre and the air voxel in front of it (density is trilinear
    between centres: the wall's face at 12 m reads σ = 10 /m, half its 20). There the air's features, voting
    vegetation with twice the wall's magnitude, would win plain trilinear sampling (at x = 11.9 m: 0.6 · 2 > 0.4 · 1);
    density-weighted sampling reads only the wall. A point in open air (no density anywhere near) reads the air's
    own vote."""
    field = slab_field(air_channel=2)
    head = semantic_decoder().semantic_head
    pts = torch.tensor([[WALL_X - 0.1, 0.3, 1.5], [WALL_X, -4.2, 2.5], [3.0, 0.0, 0.3], [3.0, 0.0, 2.0]])
    tags = lidar_point_tags(field, pts, head).numpy()
    assert tags.tolist() == [BUILDING, BUILDING, ROAD, VEGETATION]
