"""Virtual camera sensors: render a generated scene from a camera rig moving along an ego trajectory.

Two ways in, one renderer underneath:

* dataset-devkit style — `render_trajectory(scene, trajectory, rig)` yields, per tick, one `Frame` per camera
  (host numpy arrays + metadata); `render_trajectory_batched` returns one `FrameBatch` of ``[T, N, ...]`` tensors on
  the render device (for GPU pipelines);
* CARLA style — ``world = SensorWorld(scene, trajectory)``, ``cam = world.spawn_camera("front",
  attach_to=world.ego)``, ``cam.listen(callback)``, ``world.tick()``: each tick moves the ego one trajectory step and
  calls the listeners, in spawn order, with a `CameraImage` (``.frame``, ``.timestamp``, ``.width``, ``.height``,
  ``.fov``, ``.transform``, ``.raw_data``, ``.rgb``, ``.depth``).

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
made on it; `SceneAutoEncoder.decode`). Poses: ``cam_to_world`` (OpenCV camera ->
scene frame).

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
from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass, field as dc_field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from nfldm_sdk.errors import NfldmError
from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.rendering.api import HIT_ALPHA, clip_rays_to_box
from nfldm_sdk.rendering.sizes import RenderSizeWarning, warn_if_unsupported_size
from nfldm_sdk.cameras.rig import CameraRig, CameraSpec
from nfldm_sdk.cameras.trajectory import Trajectory, check_rigid

__all__ = ["Frame", "FrameBatch", "RenderableScene", "NoOverlapError", "SensorWarning", "SimulationFinished",
           "resolve_scene", "frustum_overlap", "check_overlap", "render_views", "render_trajectory",
           "render_trajectory_batched", "SensorWorld", "scene_world", "spawn_camera", "EgoVehicle", "CameraSensor",
           "CameraImage", "WorldSnapshot", "DEFAULT_BATCH_SIZE", "RenderSizeWarning"]

#: Views per decoder call by default: a 6-camera rig × 2 ticks.
DEFAULT_BATCH_SIZE = 12


class NoOverlapError(NfldmError, ValueError):
    """A camera's view frustum does not meet the scene box: it would render nothing."""


class SensorWarning(UserWarning):
    """Something the sensors adapted to (e.g. a smaller batch after running out of memory)."""


class SimulationFinished(NfldmError, RuntimeError):
    """`SensorWorld.tick` was called after the trajectory's last pose."""


# ============================================================================================ scene plumbing
@dataclass(eq=False)
class RenderableScene:
    """What the sensors need of a scene: an unbatched field, the stage-1 decoder, and provenance for metadata.

    Attributes:
        field: unbatched `VoxelField` in the scene frame.
        decoder: a `SceneAutoEncoder` (anything with ``decode(field [B], cameras [B,R], *, min_hit_alpha) ->
            SceneRender`` and ``config.near/far/downsample``, optionally ``config.image_size``).
        seed: the scene's generation seed (None when unknown).
        bundle_hash: the model bundle's hash ("" when unknown).
    """

    field: VoxelField
    decoder: torch.nn.Module
    seed: int | None = None
    bundle_hash: str = ""

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device


def resolve_scene(scene, decoder: torch.nn.Module | None = None) -> RenderableScene:
    """A `RenderableScene` from a `NeuralScene` (duck-typed: ``.field``, ``.decoder``, ``.seed``, ``.bundle_hash``),
    a `RenderableScene`, or a `VoxelField` plus `decoder`. A given `decoder` overrides the scene's."""
    if isinstance(scene, RenderableScene):
        return scene if decoder is None else RenderableScene(scene.field, decoder, scene.seed, scene.bundle_hash)
    if isinstance(scene, VoxelField):
        field, seed, bundle = scene, None, ""
    elif hasattr(scene, "field"):
        field, seed, bundle = scene.field, getattr(scene, "seed", None), str(getattr(scene, "bundle_hash", "") or "")
        decoder = decoder if decoder is not None else getattr(scene, "decoder", None)
    else:
        raise TypeError(f"expected a NeuralScene or a VoxelField (+ decoder=), got {type(scene).__name__}")
    if field.is_batched:
        raise ValueError(f"the sensors render one scene at a time, got a batched field of {field.batch_size}: "
                         "index it (field[i])")
    if decoder is None:
        raise ValueError("the scene has no decoder: load it with NeuralScene.load(path, decoder=BUNDLE) or pass "
                         "decoder=SceneAutoEncoder")
    return RenderableScene(field, decoder, None if seed is None else int(seed), bundle)


def _decoder_on(scene: RenderableScene, device: torch.device | str | None) -> tuple[torch.nn.Module, torch.device]:
    """The decoder on `device` (a copy when it lives elsewhere; the scene's own decoder is never moved)."""
    here = scene.device
    dev = here if device is None else torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    dec = scene.decoder if dev == here else copy.deepcopy(scene.decoder).to(dev)
    return dec.eval(), dev


# ============================================================================================ results
@dataclass(eq=False)
class Frame:
    """One camera's image at one tick (host numpy arrays; the devkit-style unit of sensor data).

    Attributes:
        rgb: ``[H, W, 3]`` uint8 RGB.
        depth: ``[H, W]`` float32 planar z-depth, metres; ``inf`` where nothing was hit.
        alpha: ``[H, W]`` float32 accumulated opacity in [0, 1].
        timestamp: seconds (the trajectory's clock).
        frame: tick index along the trajectory (0-based).
        camera: camera name.
        K: ``[3, 3]`` float64 intrinsics, pixels.
        cam_to_world: ``[4, 4]`` float64, OpenCV camera -> scene frame.
        seed: the scene's seed (None if unknown); bundle_hash: its model bundle ("" if unknown).
        range: ``[H, W]`` float32 ray length from the camera centre, metres (``inf`` for no hit), only when
            requested (``with_range=True``), else None.
    """

    rgb: np.ndarray
    depth: np.ndarray
    alpha: np.ndarray
    timestamp: float
    frame: int
    camera: str
    K: np.ndarray
    cam_to_world: np.ndarray
    seed: int | None = None
    bundle_hash: str = ""
    range: np.ndarray | None = None

    @property
    def valid(self) -> np.ndarray:
        """``[H, W]`` bool: pixels that hit something (finite depth)."""
        return np.isfinite(self.depth)

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    def metadata(self) -> dict:
        """JSON-ready metadata (everything but the images)."""
        return {"frame": int(self.frame), "timestamp": float(self.timestamp), "camera": self.camera,
                "width": self.width, "height": self.height, "K": np.asarray(self.K).tolist(),
                "cam_to_world": np.asarray(self.cam_to_world).tolist(), "seed": self.seed,
                "bundle_hash": self.bundle_hash, "depth": "planar z, metres, float32, inf = no hit"}


@dataclass(eq=False)
class FrameBatch:
    """All cameras × ticks of a trajectory render, as tensors on the render device.

    Attributes:
        rgb: ``[T, N, H, W, 3]`` uint8.
        depth: ``[T, N, H, W]`` float32 planar metres, ``inf`` = no hit.
        alpha: ``[T, N, H, W]`` float32.
        range: ``[T, N, H, W]`` float32 ray length (metres), or None unless requested.
        timestamps: ``[T]`` float64 seconds; frames: ``[T]`` int64 tick indices.
        cameras: the N camera names; K: ``[N, 3, 3]`` float64; cam_to_world: ``[T, N, 4, 4]`` float64.
        seed, bundle_hash: the scene's provenance.
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    alpha: torch.Tensor
    timestamps: np.ndarray
    frames: np.ndarray
    cameras: list[str]
    K: np.ndarray
    cam_to_world: np.ndarray
    seed: int | None = None
    bundle_hash: str = ""
    range: torch.Tensor | None = None

    @property
    def valid(self) -> torch.Tensor:
        """``[T, N, H, W]`` bool: finite depth."""
        return torch.isfinite(self.depth)

    def __len__(self) -> int:
        return len(self.timestamps)

    def frame(self, t: int, n: int | str) -> Frame:
        """Tick `t`, camera `n` (index or name) as a host `Frame`."""
        if isinstance(n, str):
            if n not in self.cameras:
                raise KeyError(f"no camera {n!r}; cameras are {self.cameras}")
            n = self.cameras.index(n)
        arr = lambda x: None if x is None else x[t, n].detach().cpu().numpy()  # noqa: E731
        return Frame(rgb=arr(self.rgb), depth=arr(self.depth), alpha=arr(self.alpha),
                     timestamp=float(self.timestamps[t]), frame=int(self.frames[t]), camera=self.cameras[n],
                     K=np.array(self.K[n]), cam_to_world=np.array(self.cam_to_world[t, n]), seed=self.seed,
                     bundle_hash=self.bundle_hash, range=arr(self.range))

    def ticks(self) -> Iterator[list[Frame]]:
        """Per tick, the list of `Frame` s of all cameras (what `render_trajectory` yields)."""
        for t in range(len(self)):
            yield [self.frame(t, n) for n in range(len(self.cameras))]


# ============================================================================================ frustum checks
def frustum_overlap(cameras: Cameras, bounds: torch.Tensor, near: float, far: float, grid: int = 9) -> torch.Tensor:
    """Which cameras can see any of an axis-aligned box between planar depths `near` and `far`.

    A coarse, conservative-in-practice test: a camera overlaps when one of ``grid × grid`` rays spread over its
    image (borders included) meets the box within ``[near, far]``, or when a box corner projects into the image
    within ``[near, far]``. (A sliver of box slipping between the coarse rays without a corner inside the image
    can be missed; for a scene box seen by a road-level camera that does not happen.)

    Args:
        cameras: any batch shape ``[...]``.
        bounds: ``[2, 3]`` box min/max, metres.
        near, far: planar depth range, metres.
        grid: rays per image side.
    Returns:
        ``[...]`` bool.
    """
    cams = cameras.flatten().to(dtype=torch.float64, device="cpu")                     # [V]
    bounds = torch.as_tensor(bounds, dtype=torch.float64).reshape(2, 3)
    W, H = cams.width, cams.height
    v, u = torch.meshgrid(torch.linspace(0, H, grid, dtype=torch.float64),
                          torch.linspace(0, W, grid, dtype=torch.float64), indexing="ij")
    uv1 = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)                    # [G, 3]
    d_cam = uv1 @ torch.linalg.inv(cams.K).transpose(-1, -2)                            # [V, G, 3], z = 1
    R, t = cams.cam_to_world[:, :3, :3], cams.cam_to_world[:, :3, 3]                    # [V,3,3], [V,3]
    d = d_cam @ R.transpose(-1, -2)                                                     # [V, G, 3] (z_cam = 1 per unit)
    o = t[:, None].expand_as(d)
    # With camera-z = 1 per unit of t, the ray parameter IS planar depth: clip to [near, far] directly.
    _, _, hit = clip_rays_to_box(o, d, bounds[0], bounds[1], float(near), float(far))  # [V, G]
    lo, hi = bounds[0].tolist(), bounds[1].tolist()
    corners = torch.tensor([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])],
                           dtype=torch.float64)                                         # [8, 3]
    uv, z = cams.world_to_pixels(corners)                                               # [V, 8, 2], [V, 8]
    inside = (z >= near) & (z <= far) & (uv[..., 0] >= 0) & (uv[..., 0] <= W) & (uv[..., 1] >= 0) & (uv[..., 1] <= H)
    return (hit.any(-1) | inside.any(-1)).reshape(cameras.batch_shape)


def check_overlap(cameras: Cameras, bounds: torch.Tensor, near: float, far: float,
                  labels: Sequence[str] | None = None) -> None:
    """Raise `NoOverlapError` naming the cameras (``labels[i]`` for flattened camera i) that cannot see the box."""
    ok = frustum_overlap(cameras, bounds, near, far).reshape(-1)
    if bool(ok.all()):
        return
    bad = torch.nonzero(~ok).reshape(-1).tolist()
    names = [labels[i] if labels is not None else f"camera {i}" for i in bad]
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    b = torch.as_tensor(bounds).reshape(2, 3).tolist()
    raise NoOverlapError(
        f"{len(bad)} camera view(s) cannot see any of the scene box x {b[0][0]:.1f}…{b[1][0]:.1f}, "
        f"y {b[0][1]:.1f}…{b[1][1]:.1f}, z {b[0][2]:.1f}…{b[1][2]:.1f} m (scene frame) within depth {near:g}…{far:g} m: "
        f"{shown}. The trajectory probably leaves the scene or is not in its frame: start it inside the box (e.g. "
        "Trajectory.anchored(i) for a capture episode), shorten it, or pass check_overlap=False to render empty frames")


# ============================================================================================ the renderer
def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


@dataclass(eq=False)
class _Views:
    """Rendered views ``[V, ...]`` on the render device."""

    rgb: torch.Tensor            # [V, H, W, 3] uint8
    depth: torch.Tensor          # [V, H, W] float32
    alpha: torch.Tensor          # [V, H, W] float32
    range: torch.Tensor | None   # [V, H, W] float32 or None

    @staticmethod
    def cat(parts: list["_Views"]) -> "_Views":
        return _Views(torch.cat([p.rgb for p in parts]), torch.cat([p.depth for p in parts]),
                      torch.cat([p.alpha for p in parts]),
                      None if parts[0].range is None else torch.cat([p.range for p in parts]))

    def __getitem__(self, s) -> "_Views":
        return _Views(self.rgb[s], self.depth[s], self.alpha[s], None if self.range is None else self.range[s])


def _ray_length_per_depth(cams: Cameras) -> torch.Tensor:
    """``[V, H, W]`` ``|K^-1 (u, v, 1)|``: a pixel at planar depth z is at ray distance ``z ·`` this."""
    uv = cams.pixel_centers()                                                          # [H, W, 2]
    uv1 = torch.cat([uv, torch.ones_like(uv[..., :1])], -1)                            # [H, W, 3]
    d_cam = torch.einsum("vij,hwj->vhwi", torch.linalg.inv(cams.K), uv1)               # [V, H, W, 3], z = 1
    return d_cam.norm(dim=-1)


class _Renderer:
    """Decodes views of one scene in batches on one device; halves the batch on out-of-memory (kept halved)."""

    def __init__(self, scene: RenderableScene, batch_size: int, device: torch.device | str | None):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.scene = scene
        self.decoder, self.device = _decoder_on(scene, device)
        cfg = self.decoder.config
        self.near, self.far, self.downsample = float(cfg.near), float(cfg.far), int(cfg.downsample)
        f = scene.field
        if (f.grid_shape, f.num_channels) != (tuple(cfg.grid_shape), int(cfg.feature_channels)):
            raise ValueError(f"the decoder expects grid {tuple(cfg.grid_shape)} with C={cfg.feature_channels}, the scene "
                             f"has {f.grid_shape} with C={f.num_channels}: use the bundle that generated the scene")
        self.field = VoxelField.stack([f.to(device=self.device, dtype=torch.float32)])   # [1, ...]
        self.batch_size = int(batch_size)

    def check_size(self, width: int, height: int) -> None:
        f = self.downsample
        if width % f or height % f:
            raise ValueError(f"image size {width}x{height} is not divisible by the decoder's downsample factor {f}: "
                             f"pick a multiple of {f} (e.g. rig.resized({width - width % f or f}, {height - height % f or f}))")

    def check(self, cams: Cameras, labels: Sequence[str] | None) -> None:
        check_overlap(cams, self.scene.field.bounds.detach().cpu(), self.near, self.far, labels)

    @torch.no_grad()
    def _decode(self, cams: Cameras, with_range: bool) -> _Views:
        n = cams.batch_shape[0]
        out = self.decoder.decode(self.field, cams.reshape(1, n), min_hit_alpha=HIT_ALPHA)  # rgb [1, n, 3, H, W]
        # Same quantisation as NeuralScene.render: round(255 · clamp(rgb, 0, 1)).
        rgb = (out.rgb[0].clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1)  # [n, H, W, 3]
        depth = out.depth[0].float()                                                     # [n, H, W]
        rng = depth * _ray_length_per_depth(cams).float() if with_range else None         # inf stays inf
        return _Views(rgb.contiguous(), depth, out.alpha[0].float(), rng)

    def iter_chunks(self, cams: Cameras, with_range: bool) -> Iterator[tuple[int, _Views]]:
        """Decode flattened cameras ``[V]`` in chunks; yields ``(start, views)`` in order."""
        cams = cams.flatten().to(device=self.device, dtype=torch.float32)
        self.check_size(cams.width, cams.height)
        warn_if_unsupported_size(self.scene.decoder, cams.width, cams.height, stacklevel=4)
        start, V = 0, cams.batch_shape[0]
        while start < V:
            n = min(self.batch_size, V - start)
            try:
                views = self._decode(cams[start:start + n], with_range)
            except (torch.cuda.OutOfMemoryError, RuntimeError) as e:
                if not _is_oom(e):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if n <= 1:
                    raise RuntimeError(f"out of memory rendering a single {cams.width}x{cams.height} view on "
                                       f"{self.device}: lower the resolution or render on another device") from e
                self.batch_size = max(1, n // 2)
                warnings.warn(f"out of memory rendering {n} views at once on {self.device}: retrying with batches of "
                              f"{self.batch_size} (pass batch_size={self.batch_size} to start there)", SensorWarning,
                              stacklevel=3)
                continue
            yield start, views
            start += n

    def render(self, cams: Cameras, with_range: bool) -> _Views:
        return _Views.cat([v for _, v in self.iter_chunks(cams, with_range)])


def render_views(scene, cameras: Cameras, *, batch_size: int = DEFAULT_BATCH_SIZE, with_range: bool = False,
                 device: torch.device | str | None = None, check_overlap: bool = True,
                 decoder: torch.nn.Module | None = None) -> FrameBatch:
    """Render arbitrary cameras of batch shape ``[T, N]`` (or ``[N]``, taken as T = 1) into a `FrameBatch`
    (camera names ``cam0…``, timestamps 0, frames ``0…T-1``)."""
    src = resolve_scene(scene, decoder)
    cams = cameras if len(cameras.batch_shape) == 2 else cameras.reshape(1, -1)
    T, N = cams.batch_shape
    r = _Renderer(src, batch_size, device)
    if check_overlap:
        r.check(cams, [f"tick {t} cam{n}" for t in range(T) for n in range(N)])
    v = r.render(cams, with_range)
    shape = lambda x: None if x is None else x.reshape(T, N, *x.shape[1:])  # noqa: E731
    return FrameBatch(rgb=shape(v.rgb), depth=shape(v.depth), alpha=shape(v.alpha), range=shape(v.range),
                      timestamps=np.zeros(T), frames=np.arange(T, dtype=np.int64),
                      cameras=[f"cam{n}" for n in range(N)], K=cams.K[0].detach().cpu().double().numpy(),
                      cam_to_world=cams.cam_to_world.detach().cpu().double().numpy(), seed=src.seed,
                      bundle_hash=src.bundle_hash)


def _rig_cameras(rig: CameraRig, trajectory: Trajectory) -> tuple[Cameras, np.ndarray]:
    """``Cameras [T, N]`` (float32) and ``cam_to_world [T, N, 4, 4]`` float64 of a rig along a trajectory."""
    c2w = trajectory.ego_to_world[:, None] @ rig.cam_to_ego()[None]                      # [T, N, 4, 4] float64
    return rig.cameras(trajectory.ego_to_world), c2w


def _to_frame(views: _Views, i: int, t: int, n: int, trajectory: Trajectory, rig: CameraRig, c2w: np.ndarray,
              src: RenderableScene) -> Frame:
    return Frame(rgb=views.rgb[i].cpu().numpy(), depth=views.depth[i].cpu().numpy(), alpha=views.alpha[i].cpu().numpy(),
                 timestamp=float(trajectory.timestamps[t]), frame=t, camera=rig.specs[n].name, K=np.array(rig.specs[n].K),
                 cam_to_world=np.array(c2w[t, n]), seed=src.seed, bundle_hash=src.bundle_hash,
                 range=None if views.range is None else views.range[i].cpu().numpy())


def render_trajectory(scene, trajectory: Trajectory, rig: CameraRig, *, batch_size: int = DEFAULT_BATCH_SIZE,
                      with_range: bool = False, device: torch.device | str | None = None, check_overlap: bool = True,
                      progress: bool = False, decoder: torch.nn.Module | None = None) -> Iterator[list[Frame]]:
    """Render every camera of `rig` at every pose of `trajectory`, lazily, one tick at a time.

    Args:
        scene: a `NeuralScene` (or `VoxelField` with `decoder`); the trajectory is in its scene frame.
        trajectory: ``T`` ego poses (ego x forward, y left, z up) — resample it first for another rate.
        rig: ``N`` cameras (image size divisible by the decoder's downsample factor; supported: each side within 2×
            of the decoder's training size, else a one-time `RenderSizeWarning` — module docstring).
        batch_size: views (cameras × ticks, time-major) per decoder call; halved on out-of-memory. Depth, alpha and
            range do not depend on it; rgb may move by one level (module docstring, "Batch invariance").
        with_range: also return ray length (`Frame.range`).
        device: render device (default: the decoder's).
        check_overlap: fail before rendering if a camera cannot see the scene box (`NoOverlapError`).
        progress: show a tqdm bar over ticks.
        decoder: override the scene's decoder.
    Yields:
        per tick ``t = 0..T-1``, ``[Frame] * N`` in rig order (host numpy arrays and metadata; depth ``inf`` where
        alpha stayed below `nfldm_sdk.rendering.api.HIT_ALPHA`).
    """
    src = resolve_scene(scene, decoder)
    r = _Renderer(src, batch_size, device)
    cams, c2w = _rig_cameras(rig, trajectory)                                          # [T, N]
    T, N = len(trajectory), len(rig)
    r.check_size(rig.width, rig.height)
    if check_overlap:
        r.check(cams, [f"{rig.specs[n].name!r} at tick {t} ({trajectory.timestamps[t]:.3f} s)"
                       for t in range(T) for n in range(N)])
    return _iter_ticks(r, src, cams, c2w, trajectory, rig, with_range, progress)


def _iter_ticks(r: _Renderer, src: RenderableScene, cams: Cameras, c2w: np.ndarray, trajectory: Trajectory,
                rig: CameraRig, with_range: bool, progress: bool) -> Iterator[list[Frame]]:
    # A generator separate from render_trajectory so the argument and overlap checks run at call time.
    T, N = len(trajectory), len(rig)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=T, desc="rendering", unit="tick")
    pending: list[_Views] = []
    done = 0                                                                           # views already yielded
    try:
        for _, views in r.iter_chunks(cams, with_range):
            pending.append(views)
            buf = _Views.cat(pending)
            complete = buf.rgb.shape[0] // N                                           # whole ticks in the buffer
            for k in range(complete):
                t = done // N
                yield [_to_frame(buf, k * N + n, t, n, trajectory, rig, c2w, src) for n in range(N)]
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
    src = resolve_scene(scene, decoder)
    r = _Renderer(src, batch_size, device)
    cams, c2w = _rig_cameras(rig, trajectory)
    T, N = len(trajectory), len(rig)
    r.check_size(rig.width, rig.height)
    if check_overlap:
        r.check(cams, [f"{rig.specs[n].name!r} at tick {t} ({trajectory.timestamps[t]:.3f} s)"
                       for t in range(T) for n in range(N)])
    v = r.render(cams, with_range)
    shape = lambda x: None if x is None else x.reshape(T, N, *x.shape[1:])  # noqa: E731
    return FrameBatch(rgb=shape(v.rgb), depth=shape(v.depth), alpha=shape(v.alpha), range=shape(v.range),
                      timestamps=np.array(trajectory.timestamps), frames=np.arange(T, dtype=np.int64),
                      cameras=rig.names, K=rig.K(), cam_to_world=c2w, seed=src.seed, bundle_hash=src.bundle_hash)


# ============================================================================================ CARLA-like world
@dataclass(frozen=True, eq=False)
class WorldSnapshot:
    """The world's state: ``frame`` (the last tick, −1 before the first), ``timestamp`` (seconds on the trajectory's
    clock) and the ego's ``ego_to_world [4,4]``."""

    frame: int
    timestamp: float
    ego_to_world: np.ndarray = dc_field(repr=False)


class EgoVehicle:
    """The ego actor: follows the world's trajectory; sensors attach to it (``attach_to=world.ego``)."""

    type_id = "vehicle.ego"

    def __init__(self, world: "SensorWorld"):
        self._world = world
        self.id = 0

    @property
    def world(self) -> "SensorWorld":
        """The world this ego drives in."""
        return self._world

    def get_transform(self) -> np.ndarray:
        """``ego_to_world [4,4]`` float64 at the current tick (the first pose before the first tick)."""
        return np.array(self._world._ego_to_world())

    def __repr__(self) -> str:
        return f"EgoVehicle(id={self.id}, position={np.round(self.get_transform()[:3, 3], 3).tolist()})"


class CameraImage:
    """What a sensor's listener receives (CARLA's ``carla.Image``, plus depth): a view of one `Frame`.

    Attributes (read-only): ``frame`` (tick index), ``timestamp`` (s), ``width``, ``height``, ``fov`` (horizontal,
    degrees), ``transform`` (``cam_to_world [4,4]``, OpenCV camera -> scene frame — a matrix, not a carla.Transform),
    ``raw_data`` (bytes of the ``[H, W, 3]`` RGB image — RGB, not CARLA's BGRA), ``rgb``, ``depth`` (planar metres,
    inf = no hit), ``alpha``, ``range`` (or None), ``K``, ``camera`` (name), ``sensor`` (the `CameraSensor`) and
    ``data`` (the underlying `Frame`).
    """

    def __init__(self, data: Frame, sensor: "CameraSensor", fov: float):
        self.data, self.sensor, self.fov = data, sensor, fov

    frame = property(lambda self: self.data.frame)
    timestamp = property(lambda self: self.data.timestamp)
    width = property(lambda self: self.data.width)
    height = property(lambda self: self.data.height)
    transform = property(lambda self: self.data.cam_to_world)
    rgb = property(lambda self: self.data.rgb)
    depth = property(lambda self: self.data.depth)
    alpha = property(lambda self: self.data.alpha)
    range = property(lambda self: self.data.range)
    K = property(lambda self: self.data.K)
    camera = property(lambda self: self.data.camera)

    @property
    def raw_data(self) -> bytes:
        """The RGB image as bytes, row-major ``[H, W, 3]`` uint8 (note: RGB, not CARLA's BGRA)."""
        return self.data.rgb.tobytes()

    def save_to_disk(self, path: str) -> str:
        """Write the RGB image as PNG. Like CARLA, ``%d``-style patterns in `path` take the frame number
        (``"out/%06d.png"``). Returns the path written."""
        import imageio.v3 as iio

        if "%" in path:
            path = path % self.frame
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        iio.imwrite(path, self.data.rgb)
        return path

    def __repr__(self) -> str:
        return f"CameraImage(frame={self.frame}, timestamp={self.timestamp:.3f}, {self.camera!r} {self.width}x{self.height})"


class CameraSensor:
    """A camera actor spawned in a `SensorWorld` (CARLA's ``sensor.camera.rgb`` with depth).

    Attached to the ego (``attach_to=world.ego``) its mount is ``cam_to_ego`` (the spec's, or ``transform``); not
    attached it stays fixed in the scene frame at ``cam_to_world`` = the spec's ``cam_to_ego`` (or ``transform``).
    It renders only while listening.
    """

    type_id = "sensor.camera.rgbd"

    def __init__(self, world: "SensorWorld", actor_id: int, spec: CameraSpec, parent: EgoVehicle | None,
                 mount: np.ndarray):
        self._world = world
        self.id = actor_id
        self.spec = spec
        self.parent = parent
        self.mount = mount
        self._callback: Callable[[CameraImage], None] | None = None
        self.is_alive = True

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_listening(self) -> bool:
        return self._callback is not None

    def get_transform(self) -> np.ndarray:
        """``cam_to_world [4,4]`` float64 at the current tick."""
        return self._world._ego_to_world() @ self.mount if self.parent is not None else np.array(self.mount)

    def listen(self, callback: Callable[[CameraImage], None]) -> None:
        """Call ``callback(image)`` with a `CameraImage` on every tick from now on (replaces a previous callback)."""
        if not self.is_alive:
            raise RuntimeError(f"sensor {self.id} ({self.name!r}) was destroyed: spawn a new one")
        if not callable(callback):
            raise TypeError(f"listen needs a callable, got {type(callback).__name__}")
        self._callback = callback

    def stop(self) -> None:
        """Stop calling the listener (and rendering this camera)."""
        self._callback = None

    def destroy(self) -> bool:
        """Stop and remove the sensor from the world; returns True (as CARLA does) when it was alive."""
        was = self.is_alive
        self.stop()
        self.is_alive = False
        self._world._sensors = [s for s in self._world._sensors if s is not self]
        return was

    def __repr__(self) -> str:
        where = "on ego" if self.parent is not None else "static"
        return f"CameraSensor(id={self.id}, {self.name!r} {self.spec.width}x{self.spec.height}, {where}, " \
               f"{'listening' if self.is_listening else 'idle'})"


class SensorWorld:
    """A CARLA-like synchronous world around a generated scene: an ego following a trajectory, camera sensors.

    Each `tick` moves the ego to the next trajectory pose (the first tick to the first pose), renders every listening
    sensor in batched decoder calls, then calls the listeners in spawn order; it returns the frame id (the tick
    index). After the last pose `tick` raises `SimulationFinished` (see `done`).

    Args:
        scene: a `NeuralScene` (or `VoxelField` with `decoder`).
        trajectory: the ego path in the scene frame.
        rate_hz: resample the trajectory to this rate first (the "fixed delta seconds" of the world); default: tick
            through the trajectory's own samples.
        rig: where camera names given to `spawn_camera` are looked up (default: the ``capture`` preset at the
            decoder's training image size, the size it renders best; each side within 2× of it is supported).
        batch_size, device, check_overlap, with_range: as in `render_trajectory`. A tick renders its listening
            cameras in one batch: depth/alpha equal `render_trajectory`'s exactly, rgb within one level.

    Example::

        world = SensorWorld(scene, Trajectory.straight(20.0, 10.0, 10.0))
        cam = world.spawn_camera("front", attach_to=world.ego)
        cam.listen(lambda image: print(image.frame, image.timestamp, image.depth.min()))
        while not world.done:
            world.tick()
    """

    def __init__(self, scene, trajectory: Trajectory, *, rate_hz: float | None = None, rig: CameraRig | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, device: torch.device | str | None = None,
                 check_overlap: bool = True, with_range: bool = False, decoder: torch.nn.Module | None = None):
        self.scene = resolve_scene(scene, decoder)
        self.trajectory = trajectory.resample(rate_hz) if rate_hz else trajectory
        self._renderer = _Renderer(self.scene, batch_size, device)
        if rig is None:
            h, w = getattr(self.scene.decoder.config, "image_size", (256, 256))
            rig = CameraRig.preset("capture", w, h)
        self.rig = rig
        self.check_overlap = check_overlap
        self.with_range = with_range
        self.ego = EgoVehicle(self)
        self._sensors: list[CameraSensor] = []
        self._next_id = 1
        self._tick = -1

    # ------------------------------------------------------------------ state
    def _ego_to_world(self) -> np.ndarray:
        return self.trajectory.ego_to_world[max(self._tick, 0)]

    @property
    def frame(self) -> int:
        """The last tick's frame id (−1 before the first tick)."""
        return self._tick

    @property
    def done(self) -> bool:
        """True once the last trajectory pose has been ticked."""
        return self._tick >= len(self.trajectory) - 1

    @property
    def ticks_left(self) -> int:
        return len(self.trajectory) - 1 - self._tick

    def get_snapshot(self) -> WorldSnapshot:
        """Frame id, time and ego pose now."""
        t = self.trajectory.timestamps[max(self._tick, 0)]
        return WorldSnapshot(self._tick, float(t), np.array(self._ego_to_world()))

    def get_sensors(self) -> list[CameraSensor]:
        """The live sensors in spawn order."""
        return list(self._sensors)

    # ------------------------------------------------------------------ actors
    def _spec(self, spec: CameraSpec | str) -> CameraSpec:
        if isinstance(spec, CameraSpec):
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"spawn_camera takes a CameraSpec or a camera name, got {type(spec).__name__}")
        if "/" in spec:                                  # "preset/camera", e.g. "nuscenes/CAM_FRONT"
            preset, name = spec.split("/", 1)
            return CameraRig.preset(preset, self.rig.width, self.rig.height)[name]
        try:
            return self.rig[spec]
        except KeyError:
            raise KeyError(f"no camera {spec!r} in the world's rig ({', '.join(self.rig.names)}): pass a CameraSpec, "
                           "a 'preset/camera' name such as 'nuscenes/CAM_FRONT', or SensorWorld(rig=...)") from None

    def spawn_camera(self, spec: CameraSpec | str, attach_to: EgoVehicle | None = None,
                     transform: np.ndarray | None = None) -> CameraSensor:
        """Spawn a camera (CARLA's ``world.spawn_actor(blueprint, transform, attach_to)``).

        Args:
            spec: a `CameraSpec`, a camera name of the world's rig, or ``"preset/camera"``.
            attach_to: ``world.ego`` to ride on the ego (mount = ``cam_to_ego``); None for a camera fixed in the
                scene frame (``cam_to_world`` = the spec's ``cam_to_ego``), as in CARLA.
            transform: ``[4,4]`` mount overriding the spec's (``cam_to_ego`` attached, ``cam_to_world`` static).
        """
        spec = self._spec(spec)
        if attach_to is not None and attach_to is not self.ego:
            raise ValueError("attach_to must be this world's ego (world.ego) or None for a static camera")
        self._renderer.check_size(spec.width, spec.height)
        mount = spec.cam_to_ego if transform is None else check_rigid(np.asarray(transform, dtype=np.float64), "transform")
        sensor = CameraSensor(self, self._next_id, spec, attach_to, np.array(mount))
        self._next_id += 1
        self._sensors.append(sensor)
        return sensor

    # ------------------------------------------------------------------ the loop
    def tick(self) -> int:
        """Advance the ego one trajectory step, render the listening sensors, call their listeners in spawn order.

        Returns:
            the new frame id (tick index).
        Raises:
            `SimulationFinished` after the last pose; `NoOverlapError` when a listening camera cannot see the scene.
        """
        if self.done:
            raise SimulationFinished(f"the trajectory has {len(self.trajectory)} poses and all were ticked (frame "
                                     f"{self._tick}): build a longer trajectory or a new SensorWorld")
        self._tick += 1
        t = self._tick
        live = [s for s in self._sensors if s.is_listening]
        frames: dict[int, Frame] = {}
        # One batched render per image size (one Cameras object holds one size).
        by_size: dict[tuple[int, int], list[CameraSensor]] = {}
        for s in live:
            by_size.setdefault((s.spec.width, s.spec.height), []).append(s)
        ts = float(self.trajectory.timestamps[t])
        for (w, h), group in by_size.items():
            c2w = np.stack([s.get_transform() for s in group])                             # [S, 4, 4] float64
            K = np.stack([s.spec.K for s in group])
            cams = Cameras(torch.as_tensor(K, dtype=torch.float32), torch.as_tensor(c2w, dtype=torch.float32), w, h)
            if self.check_overlap:
                self._renderer.check(cams, [f"sensor {s.id} {s.name!r} at frame {t} ({ts:.3f} s)" for s in group])
            views = self._renderer.render(cams, self.with_range)
            for i, s in enumerate(group):
                frames[s.id] = Frame(rgb=views.rgb[i].cpu().numpy(), depth=views.depth[i].cpu().numpy(),
                                     alpha=views.alpha[i].cpu().numpy(), timestamp=ts, frame=t, camera=s.name,
                                     K=np.array(s.spec.K), cam_to_world=c2w[i], seed=self.scene.seed,
                                     bundle_hash=self.scene.bundle_hash,
                                     range=None if views.range is None else views.range[i].cpu().numpy())
        for s in live:                                                                     # spawn order
            cb = s._callback
            if cb is not None:                                     # a listener may stop another sensor
                cb(CameraImage(frames[s.id], s, s.spec.hfov_deg))
        return t

    def __repr__(self) -> str:
        return (f"SensorWorld(frame {self._tick} of {len(self.trajectory)}, {len(self._sensors)} sensor(s), "
                f"device {self._renderer.device})")


def scene_world(scene, trajectory: Trajectory, **kwargs) -> SensorWorld:
    """`SensorWorld(scene, trajectory, **kwargs)` (the function form, like ``client.get_world()``)."""
    return SensorWorld(scene, trajectory, **kwargs)


def spawn_camera(scene, spec: CameraSpec | str, attach_to: EgoVehicle, transform: np.ndarray | None = None
                 ) -> CameraSensor:
    """``scene.spawn_camera(spec, attach_to=ego)``: spawn a camera in the world of `attach_to` (an `EgoVehicle` of a
    `SensorWorld` built on this same scene, e.g. ``scene_world(scene, trajectory).ego``)."""
    if not isinstance(attach_to, EgoVehicle):
        raise TypeError("attach_to must be the ego of a SensorWorld of this scene: world = scene_world(scene, "
                        "trajectory); scene.spawn_camera(spec, attach_to=world.ego)")
    src = scene.field if isinstance(scene, VoxelField) else getattr(scene, "field", None)
    if attach_to.world.scene.field is not src:
        raise ValueError("attach_to belongs to a SensorWorld of another scene: spawn cameras in the world of the "
                         "scene they should see")
    return attach_to.world.spawn_camera(spec, attach_to=attach_to, transform=transform)
