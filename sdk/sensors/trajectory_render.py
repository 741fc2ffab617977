"""A camera rig driven along an ego trajectory: `render_trajectory` (per tick, one `Frame` per camera, lazily) and
`render_trajectory_batched` (one `FrameBatch` of ``[T, N, ...]`` tensors on the render device).

The views of all cameras × ticks are flattened time-major and decoded ``batch_size`` at a time by
`nfldm_sdk.sensors.renderer.BatchedRenderer`; before rendering, every view is checked against the scene box
(`nfldm_sdk.sensors.frustum`). Batching does not change depth, alpha or range; rgb may move by one level
(`nfldm_sdk.sensors`, "Batch invariance").
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.cameras.rig import CameraRig
from nfldm_sdk.cameras.trajectory import Trajectory
from nfldm_sdk.sensors.frames import Frame, FrameBatch, compose_poses
from nfldm_sdk.sensors.renderer import DEFAULT_BATCH_SIZE, ViewRenderer, renderer_for
from nfldm_sdk.sensors.views import SceneImages

__all__ = ["rig_cameras", "render_trajectory", "render_trajectory_batched"]


def rig_cameras(rig: CameraRig, trajectory: Trajectory) -> tuple[Cameras, np.ndarray]:
    """``Cameras [T, N]`` (float32) and ``cam_to_world [T, N, 4, 4]`` float64 of a rig along a trajectory
    (``ego_to_world[t] @ cam_to_ego[n]``, `compose_poses`)."""
    c2w = compose_poses(trajectory.ego_to_world, rig.cam_to_ego())                    # [T, N, 4, 4] float64
    return rig.cameras(trajectory.ego_to_world), c2w


def _prepare(scene, trajectory: Trajectory, rig: CameraRig, batch_size: int, device, check_overlap: bool,
             decoder) -> tuple[ViewRenderer, Cameras, np.ndarray]:
    """The scene's renderer (`renderer_for`), the rig's cameras ``[T, N]`` and poses, after the size and overlap
    checks."""
    r = renderer_for(scene, batch_size, device, decoder)
    cams, c2w = rig_cameras(rig, trajectory)                                           # [T, N]
    T, N = len(trajectory), len(rig)
    r.check_size(rig.width, rig.height)
    if check_overlap:
        r.check(cams, [f"{rig.specs[n].name!r} at tick {t} ({trajectory.timestamps[t]:.3f} s)"
                       for t in range(T) for n in range(N)])
    return r, cams, c2w


def render_trajectory(scene, trajectory: Trajectory, rig: CameraRig, *, batch_size: int = DEFAULT_BATCH_SIZE,
                      with_range: bool = False, device: torch.device | str | None = None, check_overlap: bool = True,
                      progress: bool = False, decoder: torch.nn.Module | None = None) -> Iterator[list[Frame]]:
    """Render every camera of `rig` at every pose of `trajectory`, lazily, one tick at a time.

    Args:
        scene: a `NeuralScene` (or `VoxelField` with `decoder`); the trajectory is in its scene frame. Also any
            object with ``sensor_renderer(batch_size=, device=)`` (`nfldm_sdk.sensors.renderer.renderer_for`), e.g.
            a route of scenes (`nfldm_sdk.routes.sensors.RouteScenes`), the trajectory then in its world frame.
        trajectory: ``T`` ego poses (ego x forward, y left, z up) — resample it first for another rate.
        rig: ``N`` cameras (image size divisible by the decoder's downsample factor; supported: each side within 2×
            of the decoder's training size, else a one-time `RenderSizeWarning` — `nfldm_sdk.sensors`).
        batch_size: views (cameras × ticks, time-major) per decoder call; halved on out-of-memory. Depth, alpha and
            range do not depend on it; rgb may move by one level (`nfldm_sdk.sensors`, "Batch invariance").
        with_range: also return ray length (`Frame.range`).
        device: render device (default: the decoder's).
        check_overlap: fail before rendering if a camera cannot see the scene box (`NoOverlapError`).
        progress: show a tqdm bar over ticks.
        decoder: override the scene's decoder.
    Yields:
        per tick ``t = 0..T-1``, ``[Frame] * N`` in rig order (host numpy arrays; depth ``inf`` where alpha stayed
        below `nfldm_sdk.rendering.api.HIT_ALPHA`) with their metadata: ``ego_to_world`` = the trajectory's pose
        ``t``, ``cam_to_ego`` = the rig mount, ``cam_to_world`` their product (`compose_poses`), the camera's K,
        model and distortion, timestamp (s; ``timestamp_us``), seed, bundle hash and scene id.
    """
    r, cams, c2w = _prepare(scene, trajectory, rig, batch_size, device, check_overlap, decoder)
    return _iter_ticks(r, cams, c2w, trajectory, rig, with_range, progress)


def _iter_ticks(r: ViewRenderer, cams: Cameras, c2w: np.ndarray, trajectory: Trajectory, rig: CameraRig,
                with_range: bool, progress: bool) -> Iterator[list[Frame]]:
    # A generator separate from render_trajectory so the argument and overlap checks run at call time.
    N = len(rig)
    c2e, dist = rig.cam_to_ego(), rig.distortion()                                    # [N, 4, 4], [N, 4]
    bar = None
    if progress:
        from tqdm.auto import tqdm  # start-up time: tqdm only when a bar is asked for

        bar = tqdm(total=len(trajectory), desc="rendering", unit="tick")
    pending: list[SceneImages] = []
    done = 0                                                                           # views already yielded
    try:
        for _, views in r.iter_chunks(cams, with_range):
            pending.append(views)
            buf = SceneImages.cat(pending)
            complete = buf.rgb.shape[0] // N                                           # whole ticks in the buffer
            for k in range(complete):
                t = done // N
                yield [Frame.from_views(buf, k * N + n, timestamp=trajectory.timestamps[t], frame=t,
                                        camera=rig.specs[n].name, K=rig.specs[n].K, cam_to_world=c2w[t, n],
                                        seed=r.seed, bundle_hash=r.bundle_hash,
                                        ego_to_world=trajectory.ego_to_world[t], cam_to_ego=c2e[n],
                                        camera_model=rig.specs[n].model, distortion=dist[n], scene_id=r.scene_id)
                       for n in range(N)]
                if bar is not None:
                    bar.update(1)
                done += N
            pending = [buf[complete * N:]] if buf.rgb.shape[0] > complete * N else []
    finally:
        if bar is not None:
            bar.close()


def render_trajectory_batched(scene, trajectory: Trajectory, rig: CameraRig, *, batch_size: int = DEFAULT_BATCH_SIZE,
                              with_range: bool = False, device: torch.device | str | None = None,
                              check_overlap: bool = True, decoder: torch.nn.Module | None = None) -> FrameBatch:
    """Like `render_trajectory` but all at once: a `FrameBatch` of ``[T, N, ...]`` tensors on the render device."""
    r, cams, c2w = _prepare(scene, trajectory, rig, batch_size, device, check_overlap, decoder)
    T = len(trajectory)
    return FrameBatch.from_views(r.render(cams, with_range), T, len(rig),
                                 timestamps=np.array(trajectory.timestamps), frames=np.arange(T, dtype=np.int64),
                                 cameras=rig.names, K=rig.K(), cam_to_world=c2w, seed=r.seed,
                                 bundle_hash=r.bundle_hash, ego_to_world=np.array(trajectory.ego_to_world),
                                 cam_to_ego=np.broadcast_to(rig.cam_to_ego(), (T, len(rig), 4, 4)).copy(),
                                 camera_models=rig.models(), distortion=rig.distortion(), scene_id=r.scene_id)
