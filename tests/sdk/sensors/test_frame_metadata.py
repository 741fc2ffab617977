"""Frame metadata on every sensor path: the three poses (``cam_to_world == ego_to_world @ cam_to_ego`` bitwise),
camera model and distortion, timestamps in microseconds, the scene id; and their round trip through frames.json.

Scene: tests/semantic_scenes.py (road ground slab, building wall at x = 12 m, a tiny decoder with a semantic head).
The rig has a pinhole and an equidistant fisheye camera so the model metadata is not always "pinhole".
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from nfldm_sdk.cameras.rig import CameraRig, CameraSpec, mount_to_cam_to_ego
from nfldm_sdk.cameras.trajectory import Trajectory, rigid_inverse
from nfldm_sdk.pipelines.scene import NeuralScene
from nfldm_sdk.rendering.api import HIT_ALPHA
from nfldm_sdk.sensors.frames import (FRAME_METADATA_KEYS, Frame, compose_poses, scene_id_of, scene_identifier,
                                      timestamp_us)
from nfldm_sdk.sensors.renderer import render_views
from nfldm_sdk.sensors.trajectory_render import render_trajectory, render_trajectory_batched
from nfldm_sdk.sensors.world import SensorWorld
from nfldm_sdk.viz.export import write_frames
from semantic_scenes import semantic_decoder, slab_field

SIZE = 32
BUNDLE = "0123456789abcdef0123"
SCENE_ID = "0123456789ab-scene_000005"          # scene_identifier(5, BUNDLE)
TRAJ = Trajectory.straight(2.0, speed_mps=10.0, rate_hz=10.0)     # x = 0, 1, 2 m at t = 0, 0.1, 0.2 s
FISH = CameraSpec.from_fov("fish", 120.0, SIZE, SIZE, mount_to_cam_to_ego(1.0, 0.2, 1.6, 10.0, -5.0),
                           model="equidistant")
# The image keys of `Frame.metadata` that frames.json replaces with the paths of those images.
IMAGE_KEYS = ("depth", "alpha", "semantic", "semantic_confidence")


@pytest.fixture(scope="module")
def scene() -> NeuralScene:
    return NeuralScene(field=slab_field(), seed=5, bundle_hash=BUNDLE, decoder=semantic_decoder())


@pytest.fixture(scope="module")
def rig() -> CameraRig:
    return CameraRig((CameraRig.preset("capture", SIZE, SIZE)["front"], FISH))


def assert_poses(f: Frame, ego_to_world: np.ndarray, cam_to_ego: np.ndarray) -> None:
    """The frame's poses are the given ones and its cam_to_world their product, bitwise."""
    assert f.cam_to_world.dtype == f.ego_to_world.dtype == f.cam_to_ego.dtype == np.float64
    np.testing.assert_array_equal(f.ego_to_world, ego_to_world)
    np.testing.assert_array_equal(f.cam_to_ego, cam_to_ego)
    np.testing.assert_array_equal(f.cam_to_world, f.ego_to_world @ f.cam_to_ego)


def test_scene_identifier_and_timestamps():
    assert scene_identifier(5, BUNDLE) == SCENE_ID
    assert scene_identifier(5, BUNDLE, refinements=2) == SCENE_ID + "-refined2"
    assert scene_identifier(17) == "scene_000017" and scene_identifier(None, BUNDLE) == ""
    refined = NeuralScene(field=slab_field(), seed=5, bundle_hash=BUNDLE, refinements=({"steps": 1},))
    assert scene_id_of(refined) == SCENE_ID + "-refined1" and scene_id_of(slab_field()) == ""
    assert [timestamp_us(t) for t in TRAJ.timestamps] == [0, 100_000, 200_000]
    assert timestamp_us(0.3) == 300_000 and timestamp_us(1.0000004) == 1_000_000    # 0.3 · 1e6 = 299999.99…


def test_frame_defaults_and_pose_errors():
    img = np.zeros((2, 3, 3), np.uint8)
    c2w = mount_to_cam_to_ego(1.0, 2.0, 3.0, 30.0)
    f = Frame(img, np.ones((2, 3), np.float32), np.ones((2, 3), np.float32), 0.25, 2, "cam", np.eye(3), c2w)
    assert_poses(f, np.eye(4), c2w)                             # no ego: the ego is the scene frame
    assert (f.camera_model, f.scene_id, f.timestamp_us, f.width, f.height) == ("pinhole", "", 250_000, 3, 2)
    np.testing.assert_array_equal(f.distortion, np.zeros(4))
    assert tuple(f.metadata()) == FRAME_METADATA_KEYS
    with pytest.raises(ValueError, match="both ego_to_world and cam_to_ego"):
        Frame(img, f.depth, f.alpha, 0.0, 0, "cam", np.eye(3), c2w, ego_to_world=np.eye(4))
    with pytest.raises(ValueError, match="4 coefficients"):
        Frame(img, f.depth, f.alpha, 0.0, 0, "cam", np.eye(3), c2w, distortion=np.zeros(3))


def test_every_path_fills_the_poses_model_timestamps_and_scene_id(scene, rig):
    lazy = list(render_trajectory(scene, TRAJ, rig))
    batch = render_trajectory_batched(scene, TRAJ, rig)
    assert batch.scene_id == SCENE_ID and batch.camera_models == ["pinhole", "equidistant"]
    np.testing.assert_array_equal(batch.timestamps_us, [0, 100_000, 200_000])
    for t in range(len(TRAJ)):
        for n, spec in enumerate(rig.specs):
            for f in (lazy[t][n], batch.frame(t, n)):
                assert_poses(f, TRAJ.ego_to_world[t], spec.cam_to_ego)
                assert (f.camera_model, f.scene_id, f.seed, f.bundle_hash) == (spec.model, SCENE_ID, 5, BUNDLE)
                assert f.timestamp_us == 100_000 * t and f.frame == t
                np.testing.assert_array_equal(f.distortion, spec.distortion)
                np.testing.assert_array_equal(f.K, spec.K)
    assert batch.metadata() == [f.metadata() for tick in lazy for f in tick]
    np.testing.assert_array_equal(batch.cam_to_world, compose_poses(TRAJ.ego_to_world, rig.cam_to_ego()))
    # arbitrary cameras: no ego (identity), the cameras' own models
    views = render_views(scene, rig.cameras(TRAJ.ego_to_world[1]))
    for n, spec in enumerate(rig.specs):
        f = views.frame(0, n)
        assert_poses(f, np.eye(4), f.cam_to_world)
        np.testing.assert_allclose(f.cam_to_world, TRAJ.ego_to_world[1] @ spec.cam_to_ego, atol=1e-6)
        assert (f.camera_model, f.scene_id) == (spec.model, SCENE_ID)


def test_world_callbacks_carry_the_metadata_of_attached_and_static_cameras(scene, rig):
    world = SensorWorld(scene, TRAJ, rig=rig)
    got: dict[tuple[str, int], Frame] = {}
    for name in rig.names:
        world.spawn_camera(name, attach_to=world.ego).listen(lambda im: got.__setitem__((im.camera, im.frame), im))
    static = world.spawn_camera("nuscenes/CAM_FRONT")                        # fixed in the scene frame
    static.listen(lambda im: got.__setitem__((im.camera, im.frame), im))
    while not world.done:
        world.tick()
    for t in range(len(TRAJ)):
        e2w = TRAJ.ego_to_world[t]
        for spec in rig.specs:
            im = got[(spec.name, t)]
            assert_poses(im.data, e2w, spec.cam_to_ego)
            assert (im.camera_model, im.scene_id, im.timestamp_us) == (spec.model, SCENE_ID, 100_000 * t)
            np.testing.assert_array_equal(im.transform, im.ego_to_world @ im.cam_to_ego)
        im = got[("CAM_FRONT", t)]
        assert_poses(im.data, e2w, rigid_inverse(e2w) @ static.mount)          # its pose relative to the moving ego
        np.testing.assert_allclose(im.cam_to_world, static.mount, atol=1e-12)  # ... and still fixed in the scene


def test_metadata_round_trips_through_frames_json(scene, rig, tmp_path):
    ticks = list(render_trajectory(scene, TRAJ, rig))
    write_frames(iter(ticks), tmp_path / "frames")
    entries = json.loads((tmp_path / "frames" / "frames.json").read_text())
    frames = [f for tick in ticks for f in tick]
    assert len(entries) == len(frames) == 6
    for e, f in zip(entries, frames):
        meta = f.metadata()
        assert set(FRAME_METADATA_KEYS) <= set(e)
        for key in FRAME_METADATA_KEYS:
            if key not in IMAGE_KEYS:
                assert e[key] == meta[key], key                      # JSON keeps float64 exactly
        assert e["hit_alpha"] == HIT_ALPHA and isinstance(e["timestamp_us"], int)
        assert e["scene_id"] == SCENE_ID and e["camera_model"] == f.camera_model
        c2w, e2w, c2e = (np.array(e[k]) for k in ("cam_to_world", "ego_to_world", "cam_to_ego"))
        np.testing.assert_array_equal(c2w, e2w @ c2e)
        np.testing.assert_array_equal(c2w, f.cam_to_world)
        np.testing.assert_array_equal(np.array(e["distortion"]), f.distortion)
        assert e["depth"] == f"{f.camera}/{f.frame:06d}_depth.npy" and e["semantic_confidence"].endswith(".npy")
    assert entries[3]["camera"] == "fish" and entries[3]["timestamp_us"] == 100_000
