"""Virtual camera sensors: render a generated scene from a camera rig moving along an ego trajectory.

Modules, one job each:

* `nfldm_sdk.sensors.views` — the one decode-and-quantise step (`decode_views`) and its result, `SceneImages`;
* `nfldm_sdk.sensors.frames` — the results: `Frame` (one camera, one tick, host arrays) and `FrameBatch`;
* `nfldm_sdk.sensors.frustum` — can a camera see the scene box (`frustum_overlap`, `check_overlap`)?
* `nfldm_sdk.sensors.renderer` — the batched, out-of-memory-halving renderer and `render_views`; `renderer_for` also
  takes sources that make their own renderer (a route of scenes: `nfldm_sdk.routes.sensors.RouteScenes`);
* `nfldm_sdk.sensors.trajectory_render` — dataset-devkit style: `render_trajectory(scene, trajectory, rig)` yields,
  per tick, one `Frame` per camera; `render_trajectory_batched` returns one `FrameBatch` of ``[T, N, ...]`` tensors
  on the render device (for GPU pipelines);
* `nfldm_sdk.sensors.world` — CARLA style: ``world = SensorWorld(scene, trajectory)``, ``cam =
  world.spawn_camera("front", attach_to=world.ego)``, ``cam.listen(callback)``, ``world.tick()``: each tick moves
  the ego one trajectory step and calls the listeners, in spawn order, with a `CameraImage`;
* `nfldm_sdk.sensors.lidar_spec` / `nfldm_sdk.sensors.lidar` — generated LiDAR: a spinning `LidarSpec` (presets
  ``nuscenes32``, ``hdl64``, ``os128``; CARLA ray-cast attributes), `render_lidar` marches the density field along its
  beams and returns, per tick, a `LidarScan` (range image and points) where the opacity reaches ``HIT_ALPHA``.

Rendering: the views of all cameras × ticks are flattened time-major and decoded ``batch_size`` views per decoder
call (`SceneAutoEncoder.decode`: volume rendering + 2D CNN), on the decoder's device unless ``device`` says
otherwise (the decoder is then copied there; the scene's own decoder is never moved). A CUDA out-of-memory error
halves the batch and retries, with a warning. Before rendering, every camera's frustum (between the decoder's near
and far planes) is checked against the scene box with the box corners and a coarse grid of rays: a camera that
cannot see any of the scene is an error naming the camera and tick (``check_overlap=False`` renders it anyway:
empty frames, depth ``inf``).

Outputs follow the project's conventions: RGB uint8; depth planar z in metres, float32, ``inf`` where nothing was
hit (valid = ``isfinite``); ``range`` (ray length from the camera centre, metres) only on request; alpha the
accumulated opacity in [0, 1]. "Hit" means the pixel's opacity reached `nfldm_sdk.rendering.api.HIT_ALPHA` (0.5), so
sky and faint fog read ``inf``, never a distance: ``isfinite(depth) == (alpha >= HIT_ALPHA)`` holds exactly at the
output size (alpha is upsampled bilinearly from the decoder's render resolution ``H/f × W/f``, and the hit test is
made on it; `SceneAutoEncoder.decode`). Poses: ``cam_to_world`` (OpenCV camera -> scene frame). Semantics: with a
decoder that has a semantic head every `Frame` carries ``semantic`` (``[H, W]`` uint8 CARLA tags, sky = 11 exactly where
depth is ``inf``) and ``semantic_confidence`` (float32), `SensorWorld` offers CARLA's
``sensor.camera.semantic_segmentation`` and every `LidarScan` carries ``tags`` per point; without a head they are None
(and a semantic camera raises `nfldm_sdk.models.semantic_head.SemanticsUnavailableError`).

Image sizes: any multiple of the decoder's downsample factor renders, but the 2D decoder was trained at one size
(its bundle's ``scene_ae/config.json`` ``image_size``, e.g. 64×64 for the default model): keep each side within
2× of it (`nfldm_sdk.rendering.sizes`); beyond that a `RenderSizeWarning` is shown once per decoder.

Batch invariance (how many views go into one decoder call — ``batch_size``, ticks of a `SensorWorld`, cameras
per tick): ``depth``, ``alpha`` and ``range`` are identical whatever the batching (each ray is composited on its
own); ``rgb`` may differ by one level (of 255) at a few pixels, because the decoder's convolutions reduce in a
batch-size-dependent order. Poses, intrinsics and timestamps are exact.

Example::

    scene = NeuralScene.load("out/scene_000000", decoder="assets/models/small", device="cuda")
    rig = CameraRig.preset("capture", 256, 256)
    traj = Trajectory.straight(length_m=30, speed_mps=10, rate_hz=10)
    for frames in render_trajectory(scene, traj, rig):        # per tick: [Frame] * 6
        stack_under_test.feed(frames)
"""
