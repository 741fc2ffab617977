"""Scene windows from capture stores: the training data of stage 1.

One item (`SceneWindow`) is ``window`` consecutive frames × the chosen cameras of one episode, V = window × cameras
views in frame-major order (view ``v = k * cameras + c`` is frame ``start + k``, camera ``c``).

Scene frame: the ego frame at the window's **anchor** frame, its middle frame ``start + (window - 1) // 2`` (the
middle keeps the window's trajectory centred in the voxel box). Every view carries
``cam_to_scene = inv(ego_to_world[anchor]) @ cam_to_world[t, n]`` (OpenCV camera -> scene; x forward, y left,
z up, metres), so the anchor's ego is the identity and the voxel box of `SceneAEConfig.bounds` is fixed to it.

Images are resized to the model's image size (bilinear, antialiased) with ``K`` scaled to match (field of view and
the pixel-centre-at-+0.5 convention kept); depth is resized with nearest-exact sampling, so ``inf`` (no hit) stays
``inf`` and never mixes with neighbours, and ``valid = isfinite(depth)``.

Input views vs target views: by default every view of a window is both an encoder input and a render target;
``SceneAETrainConfig.target_holdout`` holds out a random subset as targets only (done by the Lightning module with
a seeded generator, see `split_views`).

Train/val split, deterministic and by episode: the last ``n_val`` episodes of each store (by index) are
validation, ``n_val = round(val_fraction × episodes)``, at least 1 when a store has ≥ 2 episodes, or exactly the
episode indices given in ``val_episodes``. A store with a single episode cannot be split by episode; its windows
are split by time instead (the last ``val_fraction`` of its frames are validation, with no frame shared), and a
warning says so.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, fields
from typing import Sequence

import numpy as np
import sim_bridge
import torch
import torch.nn.functional as F

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_training.data.loaders import SeededDataModule
from nfldm_training.errors import TrainingError


# ------------------------------------------------------------------------------------------------ typed items
@dataclass(eq=False)
class SceneWindow:
    """One scene window (V views). Tensors are float32 unless noted.

    Attributes:
        images: ``[V, 3, H, W]`` RGB in [0, 1].
        depth: ``[V, H, W]`` planar depth, metres, ``inf`` = no hit.
        valid: ``[V, H, W]`` bool, ``isfinite(depth)``.
        semantic: ``[V, H, W]`` uint8 CARLA tags (resized like depth: nearest-exact, never mixed).
        K: ``[V, 3, 3]`` intrinsics at ``H×W``, pixels.
        cam_to_scene: ``[V, 4, 4]`` OpenCV camera -> scene frame (ego at the anchor frame).
        frame_index: ``[V]`` int64, episode frame of each view.
        camera_index: ``[V]`` int64, rig camera of each view.
        store_index: which of the dataset's stores.
        episode: episode index within the store (``Episode.index``).
        anchor: episode frame whose ego frame is the scene frame.
    """

    images: torch.Tensor
    depth: torch.Tensor
    valid: torch.Tensor
    semantic: torch.Tensor
    K: torch.Tensor
    cam_to_scene: torch.Tensor
    frame_index: torch.Tensor
    camera_index: torch.Tensor
    store_index: int
    episode: int
    anchor: int


@dataclass(eq=False)
class SceneBatch:
    """B collated `SceneWindow` s: the tensors gain a leading ``B``; the ids become ``[B]`` int64 tensors.

    Has ``.to(device)`` so Lightning moves it to the device like a tensor.
    """

    images: torch.Tensor        # [B, V, 3, H, W]
    depth: torch.Tensor         # [B, V, H, W]
    valid: torch.Tensor         # [B, V, H, W] bool
    semantic: torch.Tensor      # [B, V, H, W] uint8 CARLA tags
    K: torch.Tensor             # [B, V, 3, 3]
    cam_to_scene: torch.Tensor  # [B, V, 4, 4]
    frame_index: torch.Tensor   # [B, V]
    camera_index: torch.Tensor  # [B, V]
    store_index: torch.Tensor   # [B]
    episode: torch.Tensor       # [B]
    anchor: torch.Tensor        # [B]

    @property
    def batch_size(self) -> int:
        return self.images.shape[0]

    @property
    def num_views(self) -> int:
        return self.images.shape[1]

    def cameras(self) -> Cameras:
        """The views as `Cameras` of batch shape ``[B, V]`` at the image resolution, ``cam_to_world`` = cam_to_scene."""
        H, W = self.images.shape[-2:]
        return Cameras(self.K, self.cam_to_scene, W, H)

    def views(self, index: torch.Tensor) -> "SceneBatch":
        """The same windows restricted to views ``index`` (``[V']`` int64, shared by all windows)."""
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("images", "depth", "valid", "semantic", "K", "cam_to_scene", "frame_index", "camera_index"):
            kw[name] = kw[name][:, index]
        return SceneBatch(**kw)

    def to(self, device=None, non_blocking: bool = False) -> "SceneBatch":
        return SceneBatch(**{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)})

    def pin_memory(self) -> "SceneBatch":
        return SceneBatch(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})


def collate_windows(items: Sequence[SceneWindow]) -> SceneBatch:
    """Stack `SceneWindow` s of equal view count and image size into a `SceneBatch`."""
    if not items:
        raise ValueError("cannot collate an empty list of scene windows")
    stack = lambda name: torch.stack([getattr(it, name) for it in items])  # noqa: E731
    ids = lambda name: torch.tensor([getattr(it, name) for it in items], dtype=torch.int64)  # noqa: E731
    return SceneBatch(images=stack("images"), depth=stack("depth"), valid=stack("valid"), semantic=stack("semantic"), K=stack("K"),
                      cam_to_scene=stack("cam_to_scene"), frame_index=stack("frame_index"),
                      camera_index=stack("camera_index"), store_index=ids("store_index"), episode=ids("episode"),
                      anchor=ids("anchor"))


def split_views(num_views: int, holdout: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder-input and render-target view indices of a window.

    ``holdout == 0``: every view is both (inputs = targets = all). ``holdout > 0``: a random subset of
    ``holdout`` views (drawn with `generator`) is removed from the inputs; the targets stay all views, so the
    held-out ones test novel-view rendering while the others keep the reconstruction signal.

    Returns:
        ``(inputs [V - holdout], targets [V])`` int64, sorted.
    """
    all_views = torch.arange(num_views)
    if holdout <= 0:
        return all_views, all_views
    if holdout >= num_views:
        raise ValueError(f"target_holdout {holdout} must be smaller than the {num_views} views of a window")
    held = torch.randperm(num_views, generator=generator)[:holdout]
    keep = torch.ones(num_views, dtype=torch.bool)
    keep[held] = False
    return all_views[keep], all_views


# ------------------------------------------------------------------------------------------------ geometry
def scene_transforms(ego_to_world: np.ndarray, cam_to_world: np.ndarray, anchor: int) -> np.ndarray:
    """``cam_to_scene = inv(ego_to_world[anchor]) @ cam_to_world`` for any camera poses.

    Args:
        ego_to_world: ``[T, 4, 4]`` ego -> world per frame.
        cam_to_world: ``[..., 4, 4]`` camera -> world.
        anchor: frame index into `ego_to_world` whose ego frame is the scene frame.
    Returns:
        ``[..., 4, 4]`` float64 camera -> scene.
    """
    return np.linalg.inv(np.asarray(ego_to_world[anchor], dtype=np.float64)) @ np.asarray(cam_to_world, dtype=np.float64)


def scale_intrinsics(K: np.ndarray, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
    """``K [..., 3, 3]`` of an ``src_hw`` image rescaled to ``dst_hw`` (rows 0/1 scaled; the +0.5 pixel-centre
    convention makes this exact for the principal point too)."""
    K = np.array(K, dtype=np.float64, copy=True)
    K[..., 0, :] *= dst_hw[1] / src_hw[1]
    K[..., 1, :] *= dst_hw[0] / src_hw[0]
    return K


def resize_images(rgb: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """``[N, H, W, 3]`` uint8 -> ``[N, 3, h, w]`` float32 in [0, 1] at ``size = (h, w)`` (bilinear, antialiased)."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).float() / 255.0
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp_(0.0, 1.0)
    return x


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """``[N, H, W]`` float depth -> ``[N, h, w]`` by nearest-exact sampling (``inf`` kept, never averaged)."""
    d = torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))
    if tuple(d.shape[-2:]) != tuple(size):
        d = F.interpolate(d[:, None], size=size, mode="nearest-exact")[:, 0]
    return d


def resize_labels(tags: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """``[N, H, W]`` uint8 tags -> ``[N, h, w]`` uint8 by nearest-exact sampling, the same pixels `resize_depth`
    picks (labels are never mixed)."""
    t = torch.from_numpy(np.ascontiguousarray(tags, dtype=np.uint8))
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t[:, None].float(), size=size, mode="nearest-exact")[:, 0].to(torch.uint8)
    return t


# ------------------------------------------------------------------------------------------------ dataset
@dataclass(frozen=True)
class WindowRef:
    """Where one window comes from: store, episode, first frame; its anchor is ``start + (window-1)//2``."""

    store_index: int
    episode: int
    start: int


def held_out_episodes(n_episodes: int, val_fraction: float, val_episodes: Sequence[int] | None = None) -> set[int]:
    """The validation episodes of a store of `n_episodes` episodes (the split rule of the module docstring).

    Args:
        n_episodes: episodes in the store.
        val_fraction: fraction held out: the last ``round(val_fraction · n_episodes)`` episodes, at least 1 and at
            most ``n_episodes − 1``; none for a single-episode store or ``val_fraction <= 0``.
        val_episodes: explicit validation episode indices; they override `val_fraction`.
    Returns:
        episode indices (positions in the store).
    """
    if val_episodes is not None:
        return {int(e) for e in val_episodes}
    if n_episodes < 2 or val_fraction <= 0:
        return set()
    n_val = min(n_episodes - 1, max(1, round(val_fraction * n_episodes)))
    return set(range(n_episodes - n_val, n_episodes))


class SceneWindowDataset(torch.utils.data.Dataset):
    """Scene windows of one or more capture stores (see the module docstring for frames, split and resizing).

    Args:
        stores: capture-store paths or fsspec URLs.
        window: frames per window (≥ 1).
        cameras: rig camera names to use (None = all, in rig order); every store's rig must have them.
        image_size: ``(H, W)`` of the returned images (the model's ``image_size``).
        split: ``"train"``, ``"val"`` or ``"all"``.
        val_fraction: fraction of each store's episodes held out for ``"val"``.
        val_episodes: explicit validation episode indices (applied to every store); overrides `val_fraction`.
        stride: frames between the first frames of consecutive windows.
        cache: keep every window in memory after its first read (for small stores: saves the zarr reads and
            decoding of every later epoch; each DataLoader worker keeps its own cache).
    """

    def __init__(self, stores: Sequence[str], window: int, cameras: Sequence[str] | None = None,
                 image_size: tuple[int, int] = (64, 64), split: str = "train", val_fraction: float = 0.2,
                 val_episodes: Sequence[int] | None = None, stride: int = 1, cache: bool = False):
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
        if window < 1 or stride < 1:
            raise TrainingError(f"window and stride must be >= 1, got window={window}, stride={stride}")
        if isinstance(stores, (str, os.PathLike)):
            stores = [stores]
        if not stores:
            raise TrainingError("no capture stores given: pass at least one store path")
        self.stores = [str(s) for s in stores]
        self.window, self.stride, self.split = int(window), int(stride), split
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.anchor_offset = (self.window - 1) // 2
        self._opened: dict[int, object] = {}
        self._pid = os.getpid()
        self.cache = bool(cache)
        self._cache: dict[int, SceneWindow] = {}
        self.refs: list[WindowRef] = []
        self.camera_indices: list[list[int]] = []
        self.intrinsics: list[np.ndarray] = []  # per store: [n_cams, 3, 3] at image_size
        for si, path in enumerate(self.stores):
            store = sim_bridge.open_store(path)
            self._opened[si] = store
            rig = store.rig
            names = list(cameras) if cameras is not None else rig.names
            unknown = [n for n in names if n not in rig.names]
            if unknown:
                raise TrainingError(f"store {path} has no camera(s) {unknown}; its rig has {rig.names}")
            idx = [rig.names.index(n) for n in names]
            fisheye = [n for n, m in zip(rig.names, rig.models()) if m != "pinhole" and n in names]
            if fisheye:
                raise TrainingError(f"store {path}: camera(s) {fisheye} are fisheye; training reads pinhole cameras "
                                    f"only: pass the pinhole cameras with cameras=[...] (--set "
                                    f"scene_ae_train.cameras=...) or capture with a pinhole rig")
            self.camera_indices.append(idx)
            self.intrinsics.append(scale_intrinsics(rig.K()[idx], (rig.height, rig.width), self.image_size))
            n_eps = len(store.episode_names)
            val = held_out_episodes(n_eps, val_fraction, val_episodes)
            for e in range(n_eps):
                T = store.episode(e).num_frames
                starts = list(range(0, T - self.window + 1, self.stride))
                if n_eps == 1 and val_episodes is None and val_fraction > 0 and split != "all":
                    starts = self._time_split(path, T, starts, val_fraction)
                elif split == "train" and e in val or split == "val" and e not in val:
                    continue
                self.refs.extend(WindowRef(si, e, s) for s in starts)
        if cameras is not None:
            self.camera_names = list(cameras)
        else:
            rigs = {tuple(self._opened[i].rig.names) for i in range(len(self.stores))}
            if len(rigs) > 1:
                raise TrainingError(f"the stores have different rigs {sorted(rigs)}: pass the cameras to use (names common "
                                    "to every store), so every window has the same views")
            self.camera_names = self._opened[0].rig.names

    def _time_split(self, path: str, T: int, starts: list[int], val_fraction: float) -> list[int]:
        """Windows of a single-episode store: the last `val_fraction` of frames are validation, none shared."""
        first_val = T - max(self.window, math.ceil(val_fraction * T))
        warnings.warn(f"store {path} has a single episode: splitting it by time (validation = frames {first_val}..{T - 1})"
                      "; collect 2+ episodes for an episode split", stacklevel=3)
        if self.split == "val":
            return [s for s in starts if s >= first_val]
        return [s for s in starts if s + self.window <= first_val]

    # one open store per process: zarr handles are not shared with DataLoader workers
    def _store(self, i: int):
        if os.getpid() != self._pid:
            self._opened, self._pid = {}, os.getpid()
        if i not in self._opened:
            self._opened[i] = sim_bridge.open_store(self.stores[i])
        return self._opened[i]

    def episode(self, ref: WindowRef):
        """The capture-store episode (`sim_bridge` reader) that window `ref` (one of `refs`) comes from, opened once
        per process."""
        return self._store(ref.store_index).episode(ref.episode)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_opened"] = {}
        state["_cache"] = {}
        return state

    def __len__(self) -> int:
        return len(self.refs)

    @property
    def num_views(self) -> int:
        """V = window × cameras."""
        return self.window * len(self.camera_names)

    def __getitem__(self, i: int) -> SceneWindow:
        if self.cache:
            if i not in self._cache:
                self._cache[i] = self._read(i)
            return self._cache[i]
        return self._read(i)

    def _read(self, i: int) -> SceneWindow:
        ref = self.refs[i]
        ep = self.episode(ref)
        cams = self.camera_indices[ref.store_index]
        anchor = ref.start + self.anchor_offset
        frames = list(range(ref.start, ref.start + self.window))
        images, depth, semantic, c2s = [], [], [], []
        for t in frames:
            images.append(resize_images(ep.rgb[t, cams], self.image_size))            # [n, 3, H, W]
            depth.append(resize_depth(ep.depth[t, cams], self.image_size))            # [n, H, W]
            semantic.append(resize_labels(ep.semantic[t, cams], self.image_size))     # [n, H, W]
            c2s.append(scene_transforms(ep.ego_to_world, np.asarray(ep.cam_to_world[t])[cams], anchor))  # [n, 4, 4]
        n = len(cams)
        d = torch.cat(depth)
        return SceneWindow(
            images=torch.cat(images), depth=d, valid=torch.isfinite(d), semantic=torch.cat(semantic),
            K=torch.from_numpy(np.tile(self.intrinsics[ref.store_index], (self.window, 1, 1))).float(),
            cam_to_scene=torch.from_numpy(np.concatenate(c2s)).float(),
            frame_index=torch.tensor(frames, dtype=torch.int64).repeat_interleave(n),
            camera_index=torch.tensor(cams, dtype=torch.int64).repeat(self.window),
            store_index=ref.store_index, episode=ep.index, anchor=anchor)


# ------------------------------------------------------------------------------------------------ data module
class SceneDataModule(SeededDataModule):
    """Train/val `SceneWindowDataset` s and their seeded loaders for stage 1.

    Args:
        stores: capture-store paths.
        image_size: ``(H, W)`` (the model's ``image_size``).
        train: `SceneAETrainConfig` (window, stride, cameras, val_fraction, batch_size, num_workers, seed).
        batch_size: overrides ``train.batch_size`` when given.
    """

    def __init__(self, stores: Sequence[str], image_size: tuple[int, int], train, batch_size: int | None = None):
        super().__init__(train, batch_size or train.batch_size, collate_windows, pin_memory=torch.cuda.is_available())
        self.store_paths = [str(s) for s in stores]
        self.image_size = tuple(image_size)

    def _dataset(self, split: str) -> SceneWindowDataset:
        c = self.cfg
        with warnings.catch_warnings():
            if split == "val":  # the time-split warning is given once, by the train set
                warnings.simplefilter("ignore")
            return SceneWindowDataset(self.store_paths, c.window, c.cameras, self.image_size, split, c.val_fraction, None,
                                      c.stride, cache=c.cache_windows)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._dataset("train")
            self.val_set = self._dataset("val")
            if len(self.train_set) == 0:
                raise TrainingError(f"no training windows of {self.cfg.window} frames in {self.store_paths}: "
                                    "collect longer episodes or use a smaller window")

    @property
    def has_val(self) -> bool:
        """Whether there is at least one validation window."""
        self.setup()
        return len(self.val_set) > 0
