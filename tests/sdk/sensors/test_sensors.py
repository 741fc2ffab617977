"""Virtual camera sensors: geometry of rendered depth along a trajectory, batching, the CARLA-like world, errors.

The scene is hand-made so results are analytic: a 1 m voxel grid over x ∈ [−8, 24], y ∈ [−8, 8], z ∈ [−1, 5] m with
a ground slab (z ∈ [−1, 0]) and a 4 × 4 × 3 m box (x ∈ [8, 12], y ∈ [−2, 2], z ∈ [0, 3]), both σ = 20 /m; the
stage-1 decoder is a tiny randomly initialised `SceneAutoEncoder` (its colours are arbitrary, depth and alpha come
from the volume render and are exact functions of the field).
"""
from __future__ import annotations

import math
import warnings

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import nfldm_sdk
import nfldm_sdk.pipelines.scene as scene_module
from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.pipelines.scene import NeuralScene
from nfldm_sdk.models.scene_ae import SceneAEConfig, SceneAutoEncoder
from nfldm_sdk.cameras.rig import CameraRig, CameraSpec, mount_to_cam_to_ego
from nfldm_sdk.sensors.frames import Frame, FrameBatch
from nfldm_sdk.sensors.frustum import NoOverlapError, frustum_overlap
from nfldm_sdk.sensors.renderer import SensorWarning, render_views
from nfldm_sdk.sensors.trajectory_render import render_trajectory, render_trajectory_batched
from nfldm_sdk.sensors.views import SceneImages, decode_views
from nfldm_sdk.sensors.world import (FRAME_ATTRIBUTES, CameraImage, SensorWorld, SimulationFinished, scene_world,
                                     spawn_camera)
from nfldm_sdk.rendering.api import HIT_ALPHA, render_field
from nfldm_sdk.rendering.sizes import RenderSizeWarning
from nfldm_sdk.cameras.trajectory import Trajectory, yaw_pose

BOUNDS = ((-8.0, -8.0, -1.0), (24.0, 8.0, 5.0))
GRID = (6, 16, 32)                       # (Z, Y, X): 1 m voxels
BOX = ((8.0, -2.0, 0.0), (12.0, 2.0, 3.0))
SIGMA = 20.0
SIZE = 32                                # test image size (divisible by the decoder's downsample 2)


def tiny_config(**kw) -> SceneAEConfig:
    base = dict(image_size=(32, 32), downsample=2, depth_bins=8, near=0.5, far=40.0, feature_channels=4,
                grid_shape=GRID, bounds=BOUNDS, render_samples=64, encoder_widths=(8, 8), decoder_widths=(8, 8))
    return SceneAEConfig(**{**base, **kw})


def tiny_decoder(seed: int = 0, cls=SceneAutoEncoder, **kw) -> SceneAutoEncoder:
    torch.manual_seed(seed)
    return cls(tiny_config(**kw)).eval()


def tiny_field(seed: int = 1) -> VoxelField:
    """Ground slab + box (see the module docstring), features a seeded random vector per object."""
    Z, Y, X = GRID
    density = torch.zeros(Z, Y, X)
    density[0] = SIGMA                                              # z ∈ [-1, 0]
    density[1:4, 6:10, 16:20] = SIGMA                               # z ∈ [0, 3], y ∈ [-2, 2], x ∈ [8, 12]
    g = torch.Generator().manual_seed(seed)
    features = torch.zeros(4, Z, Y, X)
    features[:, 0] = torch.randn(4, 1, 1, generator=g)
    features[:, 1:4, 6:10, 16:20] = torch.randn(4, 1, 1, 1, generator=g)
    return VoxelField(density, features, torch.tensor(BOUNDS))


def tiny_scene(decoder: SceneAutoEncoder | None = None, bundle_hash: str = "test-bundle") -> NeuralScene:
    return NeuralScene(field=tiny_field(), seed=42, bundle_hash=bundle_hash,
                       decoder=decoder if decoder is not None else tiny_decoder())


@pytest.fixture(scope="module")
def scene() -> NeuralScene:
    return tiny_scene()


@pytest.fixture(scope="module")
def rig() -> CameraRig:
    return CameraRig.preset("capture", SIZE, SIZE)


def backproject(frame: Frame) -> np.ndarray:
    """World points ``[P, 3]`` of a frame's valid pixels (pixel centres at +0.5, planar depth)."""
    H, W = frame.depth.shape
    v, u = np.mgrid[0:H, 0:W] + 0.5
    ok = frame.valid
    p_cam = np.stack([u[ok], v[ok], np.ones(ok.sum())], -1) @ np.linalg.inv(frame.K).T * frame.depth[ok][:, None]
    return p_cam @ frame.cam_to_world[:3, :3].T + frame.cam_to_world[:3, 3]


def reprojection_error(a: Frame, b: Frame) -> tuple[np.ndarray, int]:
    """Relative |z_b(rendered) − z_b(predicted)| / z_b for frame a's points that land inside frame b, with frame b's
    depth bilinearly interpolated at the projected point (so pixel quantisation does not count) where its four
    neighbouring pixels all hit something."""
    pw = backproject(a)
    w2c = np.linalg.inv(b.cam_to_world)
    pb = pw @ w2c[:3, :3].T + w2c[:3, 3]
    z = pb[:, 2]
    uv = pb @ b.K.T
    uv = uv[:, :2] / np.maximum(uv[:, 2:], 1e-9) - 0.5                    # continuous pixel index (centres at ints)
    H, W = b.depth.shape
    i0 = np.floor(uv).astype(int)
    inside = (z > 0.1) & (i0[:, 0] >= 0) & (i0[:, 0] < W - 1) & (i0[:, 1] >= 0) & (i0[:, 1] < H - 1)
    i0, f, z = i0[inside], uv[inside] - i0[inside], z[inside]
    c, r = i0[:, 0], i0[:, 1]
    d00, d01, d10, d11 = b.depth[r, c], b.depth[r, c + 1], b.depth[r + 1, c], b.depth[r + 1, c + 1]
    ok = np.isfinite(d00) & np.isfinite(d01) & np.isfinite(d10) & np.isfinite(d11)
    fx, fy = f[:, 0], f[:, 1]
    with np.errstate(invalid="ignore"):
        db = (d00 * (1 - fx) + d01 * fx) * (1 - fy) + (d10 * (1 - fx) + d11 * fx) * fy
    return np.abs(db[ok] - z[ok]) / z[ok], int(ok.sum())


# ============================================================================================ geometry
def test_depth_reprojects_consistently_between_consecutive_frames(scene, rig):
    """Back-project frame t's depth with its cam_to_world, project into frame t+1: the rendered depth there agrees.
    (A wrong pose convention — mount, motion direction, camera axes — moves points by ≥ 0.5 m at 5–15 m: ≥ 5 %.)"""
    traj = Trajectory.straight(2.0, speed_mps=10.0, rate_hz=10.0)          # 3 ticks, 1 m per tick
    ticks = list(render_trajectory(scene, traj, rig))
    assert len(ticks) == 3 and all(len(t) == 6 for t in ticks)
    for t in range(2):
        for n in range(6):
            err, count = reprojection_error(ticks[t][n], ticks[t + 1][n])
            assert count > 100, (t, n, count)
            assert np.median(err) < 0.025, (rig.names[n], t, float(np.median(err)))
    # negative control: a pose 0.3 m off (e.g. a mount height mistake) breaks the consistency, so the check can fail
    import dataclasses

    for n in (0, 3):
        off = ticks[1][n].cam_to_world.copy()
        off[2, 3] += 0.3
        wrong = dataclasses.replace(ticks[1][n], cam_to_world=off)
        assert np.median(reprojection_error(ticks[0][n], wrong)[0]) > 0.05
    # the same camera moving forward 1 m sees the box face 1 m closer: front camera centre column
    front0, front1 = ticks[0][0], ticks[1][0]
    c = SIZE // 2
    # box face x = 8, camera at x = 0.5 (+1 per tick): planar depth 7.5 then 6.5, within a voxel (trilinear ramp)
    assert abs(front0.depth[c, c] - 7.5) < 0.5 and abs(front1.depth[c, c] - 6.5) < 0.5
    assert front0.depth[c, c] - front1.depth[c, c] == pytest.approx(1.0, abs=0.05)
    assert not front0.valid[:4].any()                                        # sky above the box: no hit = inf
    assert np.isinf(front0.depth[0]).all() and front0.alpha[0].max() < 1e-3


def test_frame_metadata_range_and_agreement_with_neural_scene_render(scene, rig):
    traj = Trajectory.arc(10.0, 20.0, speed_mps=10.0, rate_hz=10.0, start=yaw_pose(-2.0, 0.0, 0.0))
    ticks = list(render_trajectory(scene, traj, rig, with_range=True))
    f = ticks[-1][2]
    t = len(traj) - 1
    assert (f.frame, f.camera, f.seed, f.bundle_hash) == (t, "back_left", 42, "test-bundle")
    assert f.timestamp == pytest.approx(traj.timestamps[t])
    np.testing.assert_allclose(f.cam_to_world, traj.ego_to_world[t] @ rig.specs[2].cam_to_ego, atol=1e-12)
    np.testing.assert_array_equal(f.K, rig.specs[2].K)
    assert f.rgb.dtype == np.uint8 and f.rgb.shape == (SIZE, SIZE, 3)
    assert f.depth.dtype == np.float32 and f.range.dtype == np.float32 and f.alpha.shape == (SIZE, SIZE)
    # range = depth · |K^-1 (u, v, 1)|: at pixel (col 0, row SIZE-1) of a 90° camera that is sqrt(1 + a² + b²)
    fx = f.K[0, 0]
    a, b = (0.5 - SIZE / 2) / fx, (SIZE - 0.5 - SIZE / 2) / fx
    front = ticks[0][0]
    assert front.range[-1, 0] == pytest.approx(front.depth[-1, 0] * math.sqrt(1 + a * a + b * b), rel=1e-5)
    assert np.array_equal(np.isinf(front.range), np.isinf(front.depth))
    # same pixels as the generator's own render path
    ref = scene.render(rig.cameras(traj.ego_to_world[t]))
    np.testing.assert_array_equal(ref.rgb[2].numpy(), f.rgb)
    np.testing.assert_allclose(ref.depth[2].numpy(), f.depth, rtol=1e-5)
    meta = f.metadata()
    assert meta["camera"] == "back_left" and np.array(meta["cam_to_world"]).shape == (4, 4)


def test_scene_render_and_sensors_share_one_decode_step_and_one_result_type(scene, rig):
    """`NeuralScene.render`, `render_views` and `decode_views` are one decode-and-quantise step: the same bytes for
    the same views in one call; `SceneImages` is the result type of both; a `CameraImage` reads its `Frame`."""
    cams = rig.cameras(np.eye(4))                                             # [6]
    images = scene.render(cams, views_per_call=6)
    direct = decode_views(scene.decoder, scene.field, cams, with_range=True)
    assert type(images) is SceneImages and scene_module.SceneImages is nfldm_sdk.SceneImages is SceneImages
    assert images.range is None and direct.range is not None
    for name in ("rgb", "depth", "alpha"):
        assert torch.equal(getattr(images, name), getattr(direct, name))
    batch = render_views(scene, cams, batch_size=6, with_range=True)
    assert torch.equal(batch.rgb[0], direct.rgb) and torch.equal(batch.range[0], direct.range)
    assert torch.equal(SceneImages.cat([direct[:2], direct[2:]]).depth, direct.depth)
    frame = batch.frame(0, 3)
    image = CameraImage(frame, sensor=None, fov=90.0)
    for name in FRAME_ATTRIBUTES:
        assert getattr(image, name) is getattr(frame, name) or np.array_equal(getattr(image, name), getattr(frame, name))
    assert image.transform is frame.cam_to_world and image.raw_data == frame.rgb.tobytes()
    with pytest.raises(AttributeError):
        image.rgb = frame.rgb                                                 # read-only, like carla.Image


def test_batched_equals_per_frame_and_world(scene, rig):
    """The documented batch-invariance contract (`nfldm_sdk.sensors` docstring): chunking cameras × time differently
    (1 view per call; 5, spanning ticks; 18 at once; per-tick world renders) gives identical depth, alpha and
    range, and rgb within one level (the decoder's convolutions reduce in a batch-size-dependent order)."""
    traj = Trajectory.lane_change(1.0, 3.0, speed_mps=10.0, rate_hz=10.0)
    per_tick = list(render_trajectory(scene, traj, rig, batch_size=5, with_range=True))
    batch = render_trajectory_batched(scene, traj, rig, batch_size=18, with_range=True)
    single = render_trajectory_batched(scene, traj, rig, batch_size=1, with_range=True)
    assert isinstance(batch, FrameBatch) and tuple(batch.rgb.shape) == (len(traj), 6, SIZE, SIZE, 3)
    world = SensorWorld(scene, traj, rig=rig, batch_size=4, with_range=True)
    got: dict[tuple[int, str], CameraImage] = {}
    for name in rig.names:
        world.spawn_camera(name, attach_to=world.ego).listen(lambda im: got.__setitem__((im.frame, im.camera), im))
    while not world.done:
        world.tick()
    for t in range(len(traj)):
        for n, name in enumerate(rig.names):
            a, b, c, d = per_tick[t][n], batch.frame(t, n), got[(t, name)].data, single.frame(t, n)
            for other in (b, c, d):
                assert np.abs(a.rgb.astype(int) - other.rgb.astype(int)).max() <= 1
                assert np.array_equal(a.depth, other.depth) and np.array_equal(a.alpha, other.alpha)
                assert np.array_equal(a.range, other.range)
                np.testing.assert_allclose(a.cam_to_world, other.cam_to_world, atol=1e-12)
                assert (a.frame, a.camera, a.timestamp) == (other.frame, other.camera, other.timestamp)


# ============================================================================================ the hit threshold
def test_sensors_scene_render_and_point_clouds_share_the_hit_threshold(rig):
    """Uniform fog over the whole box, seen from inside: σ = 0.015 /m gives every ray (3.4-37 m of box) an alpha of
    0.05-0.43 — far above the old 1e-4, below HIT_ALPHA — so every output says no hit; σ = 0.5 /m (alpha ≥ 0.82)
    makes every pixel a hit. The sensors, `NeuralScene.render` and the point cloud agree with `render_field`'s
    default at the decoder's render resolution."""
    from nfldm_sdk.viz.points import scene_to_point_cloud

    dec = tiny_decoder()
    cams = rig.cameras(Trajectory.straight(1.0, 10.0, 10.0).ego_to_world[0])            # [6] at the origin
    for sigma, hit in ((0.015, False), (0.5, True)):
        field = tiny_field()
        field.density[:] = sigma
        scene = NeuralScene(field=field, seed=0, bundle_hash="fog", decoder=dec)
        views = render_views(scene, cams)
        low = render_field(field, cams.resized(SIZE // 2, SIZE // 2), n_samples=dec.config.render_samples,
                           near=dec.config.near, far=dec.config.far)
        assert bool((low.alpha >= HIT_ALPHA).all()) is hit and bool((low.alpha < HIT_ALPHA).all()) is not hit
        assert float(low.alpha.min()) > 0.04                                  # every ray meets fog
        assert bool(torch.isfinite(views.depth).all()) is hit and bool(torch.isinf(views.depth).all()) is not hit
        assert bool(torch.isfinite(scene.render(cams).depth).all()) is hit
        cloud = scene_to_point_cloud(scene, cams, max_depth_jump=None)
        assert len(cloud.points) == (6 * SIZE * SIZE if hit else 0)


def test_render_size_warning_once_per_decoder_outside_twice_the_training_size():
    dec = tiny_decoder()                                                      # trained size 32×32
    scene = tiny_scene(dec)
    traj = Trajectory.straight(1.0, 10.0, 10.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        list(render_trajectory(scene, traj, CameraRig.preset("front", 32, 32)))
        scene.render(CameraRig.preset("front", 64, 16).cameras(traj.ego_to_world[0]))    # 2× and ½: supported
        assert not [w for w in caught if issubclass(w.category, RenderSizeWarning)]
        list(render_trajectory(scene, traj, CameraRig.preset("front", 128, 128)))        # 4×: warned ...
        scene.render(CameraRig.preset("front", 128, 128).cameras(traj.ego_to_world[0]))   # ... once per decoder
        SensorWorld(scene, traj, rig=CameraRig.preset("front", 128, 128))
    got = [str(w.message) for w in caught if issubclass(w.category, RenderSizeWarning)]
    assert len(got) == 1, got
    assert "128x128" in got[0] and "trained on 32x32" in got[0] and "widths 16-64 and heights 16-64" in got[0]
    # a 16:9 camera at the training height departs 3× in width: a new decoder (e.g. another bundle) warns again
    other = tiny_scene(tiny_decoder(seed=3))
    with pytest.warns(RenderSizeWarning, match="96x32"):
        other.render(CameraRig.preset("front", 96, 32).cameras(traj.ego_to_world[0]))


# ============================================================================================ the CARLA-like world
def test_listen_callbacks_come_in_tick_order_with_matching_frame_ids(scene, tmp_path):
    traj = Trajectory.straight(3.0, speed_mps=10.0, rate_hz=10.0)           # 4 poses
    world = SensorWorld(scene, traj, rig=CameraRig.preset("capture", SIZE, SIZE))
    assert world.get_snapshot().frame == -1
    ego = world.ego
    np.testing.assert_array_equal(ego.get_transform(), np.eye(4))
    log: list[tuple[str, int, float]] = []
    front = world.spawn_camera("front", attach_to=ego)
    back = world.spawn_camera("back", attach_to=ego)
    wide = world.spawn_camera(CameraSpec.from_fov("wide", 120.0, 48, 24, mount_to_cam_to_ego(1.0, 0.0, 2.0, 0, -10)),
                              attach_to=ego)
    static = world.spawn_camera("nuscenes/CAM_FRONT")                        # not attached: fixed in the scene frame
    images: list[CameraImage] = []
    for s in (back, front, wide, static):                                    # listen order != spawn order
        s.listen(lambda im, s=s: (log.append((s.name, im.frame, im.timestamp)), images.append(im)))
    ids = [world.tick(), world.tick()]
    back.stop()
    ids.append(world.tick())
    wide.destroy()
    ids.append(world.tick())
    assert ids == [0, 1, 2, 3] and world.done
    with pytest.raises(SimulationFinished, match="all were ticked"):
        world.tick()
    expect = []
    for t in range(4):                                                       # spawn order within each tick
        names = ["front", "back", "wide", "CAM_FRONT"]
        names = [n for n in names if not (n == "back" and t >= 2) and not (n == "wide" and t >= 3)]
        expect += [(n, t, pytest.approx(0.1 * t)) for n in names]
    assert log == expect
    snap = world.get_snapshot()
    assert snap.frame == 3 and snap.timestamp == pytest.approx(0.3)
    np.testing.assert_allclose(snap.ego_to_world[:3, 3], [3.0, 0.0, 0.0])
    assert world.get_sensors() == [front, back, static] and not wide.is_alive
    with pytest.raises(RuntimeError, match="destroyed"):
        wide.listen(print)
    im = [i for i in images if i.camera == "wide"][0]
    assert (im.width, im.height, im.fov) == (48, 24, pytest.approx(120.0))
    assert len(im.raw_data) == 48 * 24 * 3 and im.depth.shape == (24, 48)
    np.testing.assert_allclose(im.transform, traj.ego_to_world[0] @ wide.spec.cam_to_ego, atol=1e-12)
    st = [i for i in images if i.camera == "CAM_FRONT"]
    np.testing.assert_allclose(st[0].transform, st[-1].transform)            # static camera does not move
    path = im.save_to_disk(str(tmp_path / "img_%06d.png"))
    assert path.endswith("img_000000.png")
    np.testing.assert_array_equal(iio.imread(path), im.rgb)


def test_scene_spawn_camera_delegates_to_the_ego_world(scene):
    world = scene_world(scene, Trajectory.straight(1.0, 10.0, 10.0), rig=CameraRig.preset("front", SIZE, SIZE))
    cam = spawn_camera(scene, "front", attach_to=world.ego)                  # what NeuralScene.spawn_camera calls
    assert world.get_sensors() == [cam] and cam.parent is world.ego
    seen = []
    cam.listen(lambda im: seen.append(im.frame))
    world.tick()
    assert seen == [0]
    other = scene_world(tiny_scene(), Trajectory.straight(1.0, 10.0, 10.0))
    with pytest.raises(ValueError, match="another scene"):
        spawn_camera(scene, "front", attach_to=other.ego)
    with pytest.raises(TypeError, match="attach_to must be the ego"):
        spawn_camera(scene, "front", attach_to=None)


def test_world_rate_resamples_and_world_spawn_errors(scene):
    traj = Trajectory.straight(4.0, speed_mps=10.0, rate_hz=10.0)           # 0.4 s
    world = SensorWorld(scene, traj, rate_hz=5.0, rig=CameraRig.preset("front", SIZE, SIZE))
    assert world.ticks_left == 3                                             # 0, 0.2, 0.4 s
    frames = []
    world.spawn_camera("front", attach_to=world.ego).listen(lambda im: frames.append(im.timestamp))
    while not world.done:
        world.tick()
    assert frames == pytest.approx([0.0, 0.2, 0.4])
    with pytest.raises(KeyError, match="no camera 'left'.*preset/camera"):
        world.spawn_camera("left")
    with pytest.raises(ValueError, match="not divisible by the decoder's downsample factor 2"):
        world.spawn_camera(CameraSpec.from_fov("odd", 90, 33, 32))


# ============================================================================================ errors and fallbacks
def test_no_overlap_is_a_clear_error_naming_camera_and_tick(scene, rig):
    # ego beyond the box's +x end (x max 24) facing +x: the front cameras look into nothing, the back ones see the box
    traj = Trajectory.straight(1.0, 10.0, 10.0, start=yaw_pose(40.0, 0.0, 0.0))
    with pytest.raises(NoOverlapError, match=r"cannot see any of the scene box.*'front' at tick 0") as e:
        list(render_trajectory(scene, traj, rig))
    assert "'back' at" not in str(e.value) and "Trajectory.anchored" in str(e.value)
    with pytest.raises(NoOverlapError):
        render_trajectory_batched(scene, traj, rig)
    frames = list(render_trajectory(scene, traj, rig, check_overlap=False))
    assert np.isinf(frames[0][0].depth).all() and np.isfinite(frames[0][3].depth).any()


def test_frustum_overlap_unit_cases():
    box = torch.tensor(BOUNDS)
    looking = torch.stack([torch.tensor(yaw_pose(0, 0, 0) @ mount_to_cam_to_ego(0, 0, 1.6, yaw), dtype=torch.float32)
                           for yaw in (0.0, 180.0)])
    cams = Cameras.from_fov(60.0, 32, 32, looking)
    assert frustum_overlap(cams, box, 0.5, 40.0).tolist() == [True, True]  # inside the box: every view overlaps
    outside = torch.tensor(np.stack([yaw_pose(60, 0, 0) @ mount_to_cam_to_ego(0, 0, 1.6, yaw) for yaw in (0.0, 180.0)]),
                           dtype=torch.float32)
    cams = Cameras.from_fov(60.0, 32, 32, outside)
    assert frustum_overlap(cams, box, 0.5, 100.0).tolist() == [False, True]
    assert frustum_overlap(cams, box, 0.5, 30.0).tolist() == [False, False]  # the box is beyond the far plane
    # a narrow camera that sees only one box corner between its coarse rays: found by the corner test
    corner = torch.tensor(_look_at(np.array([30.0, 14.0, 8.0]), np.array([24.0, 8.0, 5.0])), dtype=torch.float32)
    assert bool(frustum_overlap(Cameras.from_fov(2.0, 32, 32, corner), box, 0.1, 100.0))


def _look_at(eye, target):
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, np.cross(z, x), z, eye
    return m


class OOMDecoder(SceneAutoEncoder):
    """The real tiny decoder, but a decode of more than `limit` views fails like CUDA running out of memory."""

    limit = 3
    error = "cuda"
    calls: list[int]

    def decode(self, field, cameras, **kwargs):
        n = cameras.batch_shape[1]
        self.calls.append(n)
        if n > self.limit:
            if self.error == "cuda":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            raise RuntimeError("[enforce fail] DefaultCPUAllocator: out of memory: you tried to allocate 1 GB")
        return super().decode(field, cameras, **kwargs)


@pytest.mark.parametrize("error", ["cuda", "runtime"])
def test_out_of_memory_halves_the_batch_and_warns(scene, rig, error):
    dec = tiny_decoder(cls=OOMDecoder)
    dec.load_state_dict(scene.decoder.state_dict())
    dec.calls, dec.error = [], error
    traj = Trajectory.straight(1.0, 10.0, 10.0)                              # 2 ticks × 6 cameras
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = render_trajectory_batched(scene, traj, rig, batch_size=12, decoder=dec)
    msgs = [str(w.message) for w in caught if issubclass(w.category, SensorWarning)]
    assert len(msgs) == 2, msgs
    assert "out of memory rendering 12 views" in msgs[0] and "batches of 6" in msgs[0] and "batches of 3" in msgs[1]
    assert dec.calls == [12, 6, 3, 3, 3, 3]                                   # halved until it fits, then kept
    ref = render_trajectory_batched(scene, traj, rig)
    assert torch.equal(got.rgb, ref.rgb) or (got.rgb.int() - ref.rgb.int()).abs().max() <= 1
    torch.testing.assert_close(got.depth, ref.depth, rtol=1e-4, atol=0.0)
    dec.limit, dec.calls = 0, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SensorWarning)
        with pytest.raises(RuntimeError, match="out of memory rendering a single 32x32 view"):
            render_trajectory_batched(scene, traj, rig, batch_size=2, decoder=dec)


def test_clear_errors_for_missing_decoder_and_bad_sizes(scene, rig):
    bare = NeuralScene(field=scene.field, seed=1, bundle_hash="x", decoder=None)
    traj = Trajectory.straight(1.0, 10.0, 10.0)
    with pytest.raises(ValueError, match="no decoder.*NeuralScene.load"):
        render_trajectory(bare, traj, rig)
    with pytest.raises(ValueError, match="not divisible by the decoder's downsample factor 2"):
        render_trajectory(scene, traj, CameraRig.preset("front", 31, 32))
    other = tiny_decoder(feature_channels=3)
    with pytest.raises(ValueError, match="decoder expects grid .* C=3"):
        render_trajectory(scene, traj, rig, decoder=other)
    out = render_views(scene, rig.cameras(np.eye(4)))                       # arbitrary cameras [N] -> T = 1
    assert tuple(out.depth.shape) == (1, 6, SIZE, SIZE)


def test_bench_sensors_runs_and_formats(scene):
    from nfldm_training.benchmarks.sensors import format_sensor_bench, run_sensor_bench

    r = run_sensor_bench(size=16, ticks=2, batch_size=4, decoder=tiny_decoder(), rounds=1)
    assert r.cameras == 6 and r.ticks == 2 and r.frames_per_s > 0
    assert r.frames_per_s == pytest.approx(6 * r.ticks_per_s)
    assert "camera frames/s" in format_sensor_bench(r)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_render_matches_cpu(scene, rig):
    traj = Trajectory.straight(1.0, 10.0, 10.0)
    cpu = render_trajectory_batched(scene, traj, rig)
    gpu = render_trajectory_batched(scene, traj, rig, device="cuda")
    assert gpu.rgb.device.type == "cuda" and next(scene.decoder.parameters()).device.type == "cpu"
    assert (gpu.rgb.cpu().int() - cpu.rgb.int()).abs().max() <= 2
    assert torch.equal(torch.isfinite(gpu.depth.cpu()), torch.isfinite(cpu.depth))
    finite = torch.isfinite(cpu.depth)
    torch.testing.assert_close(gpu.depth.cpu()[finite], cpu.depth[finite], rtol=1e-3, atol=1e-3)
