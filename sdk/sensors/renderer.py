"""The sensors' batched renderer: views of one scene decoded ``batch_size`` at a time, halving on out-of-memory.

`resolve_scene` turns what the sensors accept (a `NeuralScene`, a `RenderableScene`, or a `VoxelField` plus a
decoder) into a `RenderableScene`; `BatchedRenderer` decodes flattened cameras in chunks through
`nfldm_sdk.sensors.views.decode_views` on the decoder's device unless ``device`` says otherwise (the decoder is then
copied there; the scene's own decoder is never moved). A CUDA out-of-memory error halves the batch and retries, with
a `SensorWarning`; the smaller batch is kept. `render_views` renders arbitrary cameras into a `FrameBatch`.

Other sources of views: the trajectory sensors and `SensorWorld` render through a `ViewRenderer` (the protocol
`BatchedRenderer` implements). `renderer_for` builds a `BatchedRenderer` for a scene, or asks an object that makes its
own — anything with ``sensor_renderer(batch_size=..., device=...)``, e.g. a route of scenes
(`nfldm_sdk.routes.sensors.RouteScenes`) — so those sensors drive it unchanged. `ChunkedRenderer` is the shared
batching and out-of-memory halving; a source subclasses it with its own `ChunkedRenderer.render_chunk` and
`ChunkedRenderer.check`.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.rendering.sizes import warn_if_unsupported_size
from nfldm_sdk.sensors.frames import FrameBatch, scene_id_of
from nfldm_sdk.sensors.frustum import check_overlap
from nfldm_sdk.sensors.views import SceneImages, decode_views

__all__ = ["DEFAULT_BATCH_SIZE", "SensorWarning", "RenderableScene", "resolve_scene", "ViewRenderer", "ChunkedRenderer",
           "BatchedRenderer", "renderer_for", "decoder_on", "render_views"]

#: Views per decoder call by default: a 6-camera rig × 2 ticks.
DEFAULT_BATCH_SIZE = 12


class SensorWarning(UserWarning):
    """Something the sensors adapted to (e.g. a smaller batch after running out of memory)."""


@dataclass(eq=False)
class RenderableScene:
    """What the sensors need of a scene: an unbatched field, the stage-1 decoder, and provenance for metadata.

    Attributes:
        field: unbatched `VoxelField` in the scene frame.
        decoder: a `SceneAutoEncoder` (anything with ``decode(field [B], cameras [B,R], *, min_hit_alpha) ->
            SceneRender`` and ``config.near/far/downsample``, optionally ``config.image_size``).
        seed: the scene's generation seed (None when unknown).
        bundle_hash: the model bundle's hash ("" when unknown).
        scene_id: the scene's identifier (`nfldm_sdk.sensors.frames.scene_identifier`; "" when unknown).
    """

    field: VoxelField
    decoder: torch.nn.Module
    seed: int | None = None
    bundle_hash: str = ""
    scene_id: str = ""

    @property
    def device(self) -> torch.device:
        """The decoder's device."""
        return next(self.decoder.parameters()).device


def resolve_scene(scene, decoder: torch.nn.Module | None = None) -> RenderableScene:
    """A `RenderableScene` from a `NeuralScene` (duck-typed: ``.field``, ``.decoder``, ``.seed``, ``.bundle_hash``),
    a `RenderableScene`, or a `VoxelField` plus `decoder`. A given `decoder` overrides the scene's. The scene id is
    `nfldm_sdk.sensors.frames.scene_id_of` the scene (``""`` for a bare field)."""
    if isinstance(scene, RenderableScene):
        return scene if decoder is None else RenderableScene(scene.field, decoder, scene.seed, scene.bundle_hash,
                                                             scene.scene_id)
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
    return RenderableScene(field, decoder, None if seed is None else int(seed), bundle,
                           "" if isinstance(scene, VoxelField) else scene_id_of(scene))


def decoder_on(decoder: torch.nn.Module, device: torch.device | str | None) -> tuple[torch.nn.Module, torch.device]:
    """``(decoder, device)``: `decoder` in eval mode on `device` (None: where it is) — a copy when it lives elsewhere,
    so the caller's decoder is never moved."""
    here = next(decoder.parameters()).device
    dev = here if device is None else torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    dec = decoder if dev == here else copy.deepcopy(decoder).to(dev)
    return dec.eval(), dev


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


@runtime_checkable
class ViewRenderer(Protocol):
    """What the trajectory sensors and `SensorWorld` render through (`BatchedRenderer` for one scene; a route's
    renderer, `nfldm_sdk.routes.sensors.RouteRenderer`, for a chain of scenes).

    Attributes:
        scene: the source (a `RenderableScene`, a route, ...): ``scene.decoder`` is the caller's decoder.
        decoder, device: the decoder used (eval mode) and the render device.
        batch_size: views per decoder call now (halved after an out-of-memory error).
        seed, bundle_hash, scene_id: provenance written into every `Frame` (None / "" when unknown).
    """

    scene: object
    decoder: torch.nn.Module
    device: torch.device
    batch_size: int
    seed: int | None
    bundle_hash: str
    scene_id: str

    def check_size(self, width: int, height: int) -> None:
        """Raise ValueError unless the image size (pixels) suits the decoder (a multiple of its downsample)."""

    def check(self, cams: Cameras, labels: Sequence[str] | None) -> None:
        """Raise `nfldm_sdk.sensors.frustum.NoOverlapError` naming the cameras (``labels[i]`` for flattened camera i)
        that cannot see the source within the decoder's near/far planes."""

    def iter_chunks(self, cams: Cameras, with_range: bool) -> Iterator[tuple[int, SceneImages]]:
        """Views of cameras of any batch shape (flattened ``[V]``) in order, in chunks: ``(start, views)``."""

    def render(self, cams: Cameras, with_range: bool) -> SceneImages:
        """All views of `cams` (flattened ``[V]``) at once."""


class ChunkedRenderer:
    """The batching every `ViewRenderer` shares: views decoded `batch_size` at a time on one device, the batch halved
    on out-of-memory (and kept halved). Subclasses render one chunk (`render_chunk`) and check overlap (`check`).

    Args:
        scene: the source; needs ``decoder`` (a `SceneAutoEncoder`: ``config.near/far/downsample``) and provenance
            ``seed``, ``bundle_hash``, ``scene_id``.
        batch_size: views per decoder call, >= 1.
        device: render device (None: the decoder's; elsewhere a copy of the decoder is used, `decoder_on`).
    Attributes:
        scene, decoder, device, batch_size; near, far (metres), downsample: from the decoder's config.
    """

    def __init__(self, scene, batch_size: int, device: torch.device | str | None):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.scene = scene
        self.decoder, self.device = decoder_on(scene.decoder, device)
        cfg = self.decoder.config
        self.near, self.far, self.downsample = float(cfg.near), float(cfg.far), int(cfg.downsample)
        self.batch_size = int(batch_size)

    @property
    def seed(self) -> int | None:
        """The source's seed (None when unknown)."""
        return self.scene.seed

    @property
    def bundle_hash(self) -> str:
        """The source's bundle hash ("" when unknown)."""
        return self.scene.bundle_hash

    @property
    def scene_id(self) -> str:
        """The source's identifier ("" when unknown)."""
        return self.scene.scene_id

    def check_size(self, width: int, height: int) -> None:
        """Raise ValueError unless `width` and `height` (pixels) are multiples of the decoder's downsample factor."""
        f = self.downsample
        if width % f or height % f:
            raise ValueError(f"image size {width}x{height} is not divisible by the decoder's downsample factor {f}: "
                             f"pick a multiple of {f} (e.g. rig.resized({width - width % f or f}, {height - height % f or f}))")

    def check(self, cams: Cameras, labels: Sequence[str] | None) -> None:
        """`ViewRenderer.check` (subclasses)."""
        raise NotImplementedError

    def render_chunk(self, cams: Cameras, with_range: bool) -> SceneImages:
        """Views of flattened float32 cameras ``[n]`` on `device`, in one decoder call (subclasses)."""
        raise NotImplementedError

    def iter_chunks(self, cams: Cameras, with_range: bool) -> Iterator[tuple[int, SceneImages]]:
        """Decode cameras of any batch shape, flattened to ``[V]``, in chunks; yields ``(start, views)`` in order."""
        cams = cams.flatten().to(device=self.device, dtype=torch.float32)
        self.check_size(cams.width, cams.height)
        warn_if_unsupported_size(self.scene.decoder, cams.width, cams.height, stacklevel=4)
        start, V = 0, cams.batch_shape[0]
        while start < V:
            n = min(self.batch_size, V - start)
            try:
                views = self.render_chunk(cams[start:start + n], with_range)
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

    def render(self, cams: Cameras, with_range: bool) -> SceneImages:
        """All views of `cams` (flattened ``[V]``) at once."""
        return SceneImages.cat([v for _, v in self.iter_chunks(cams, with_range)])


class BatchedRenderer(ChunkedRenderer):
    """Decodes views of one scene in batches on one device; halves the batch on out-of-memory (kept halved).

    Args:
        scene: the `RenderableScene` (its decoder must fit its field's grid and channels).
        batch_size: views per decoder call, >= 1.
        device: render device (None: the decoder's; elsewhere a copy of the decoder is used).
    Attributes:
        decoder, device: the decoder used and its device; near, far (metres), downsample: from its config;
        field: the scene's field as a float32 batch of one on `device`; batch_size: the current batch size.
    """

    def __init__(self, scene: RenderableScene, batch_size: int, device: torch.device | str | None):
        super().__init__(scene, batch_size, device)
        cfg = self.decoder.config
        f = scene.field
        if (f.grid_shape, f.num_channels) != (tuple(cfg.grid_shape), int(cfg.feature_channels)):
            raise ValueError(f"the decoder expects grid {tuple(cfg.grid_shape)} with C={cfg.feature_channels}, the scene "
                             f"has {f.grid_shape} with C={f.num_channels}: use the bundle that generated the scene")
        self.field = VoxelField.stack([f.to(device=self.device, dtype=torch.float32)])   # [1, ...]

    def check(self, cams: Cameras, labels: Sequence[str] | None) -> None:
        """`check_overlap` of `cams` against the scene box within the decoder's near/far planes."""
        check_overlap(cams, self.scene.field.bounds.detach().cpu(), self.near, self.far, labels)

    def render_chunk(self, cams: Cameras, with_range: bool) -> SceneImages:
        """`decode_views` of the scene from flattened cameras ``[n]`` (float32, on `device`)."""
        return decode_views(self.decoder, self.field, cams, with_range=with_range)


def renderer_for(scene, batch_size: int = DEFAULT_BATCH_SIZE, device: torch.device | str | None = None,
                 decoder: torch.nn.Module | None = None) -> ViewRenderer:
    """The `ViewRenderer` the sensors use for `scene`: the object's own when it makes one (``scene.sensor_renderer(
    batch_size=..., device=...)``, e.g. a route), else a `BatchedRenderer` of `resolve_scene` (scene, decoder)."""
    make = getattr(scene, "sensor_renderer", None)
    if callable(make):
        if decoder is not None:
            raise ValueError(f"a {type(scene).__name__} renders with its own decoder: pass decoder= when building it")
        return make(batch_size=batch_size, device=device)
    return BatchedRenderer(resolve_scene(scene, decoder), batch_size, device)


def render_views(scene, cameras: Cameras, *, batch_size: int = DEFAULT_BATCH_SIZE, with_range: bool = False,
                 device: torch.device | str | None = None, check_overlap: bool = True,
                 decoder: torch.nn.Module | None = None) -> FrameBatch:
    """Render arbitrary cameras of batch shape ``[T, N]`` (or ``[N]``, taken as T = 1) into a `FrameBatch`
    (camera names ``cam0…``, timestamps 0, frames ``0…T-1``; no ego: ``ego_to_world`` is the identity and
    ``cam_to_ego = cam_to_world``; intrinsics, camera models and distortion of tick 0)."""
    src = resolve_scene(scene, decoder)
    cams = cameras if len(cameras.batch_shape) == 2 else cameras.reshape(1, -1)
    T, N = cams.batch_shape
    r = BatchedRenderer(src, batch_size, device)
    if check_overlap:
        r.check(cams, [f"tick {t} cam{n}" for t in range(T) for n in range(N)])
    return FrameBatch.from_views(r.render(cams, with_range), T, N, timestamps=np.zeros(T),
                                 frames=np.arange(T, dtype=np.int64), cameras=[f"cam{n}" for n in range(N)],
                                 K=cams.K[0].detach().cpu().double().numpy(),
                                 cam_to_world=cams.cam_to_world.detach().cpu().double().numpy(), seed=src.seed,
                                 bundle_hash=src.bundle_hash, camera_models=cams[0].model_names(),
                                 distortion=cams.distortion[0].detach().cpu().double().numpy(), scene_id=src.scene_id)
