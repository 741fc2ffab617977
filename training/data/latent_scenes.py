"""Stage-2 data: the LAE's training data, encoded scenes paired with their captured views.

`LatentSceneDataset` / `LatentDataModule` pair each encoded scene (a `VoxelField` of an ``nfldm encode-voxels``
store) with the captured views of its scene window, for the voxel and image losses of the LAE. What the trained
LAE produces, the latent store of stage 3, is `nfldm_training.stores.latent_store`.

The voxel store (`nfldm_training.stores.voxel_store`) records, per scene, ``(store_index, episode, anchor_frame)`` and,
in its root attrs, the source capture stores, ``window``, ``stride``, ``cameras`` and ``image_size`` it was encoded
with. `LatentSceneDataset` rebuilds those windows with `nfldm_training.data.capture_windows.SceneWindowDataset` (same window,
stride, cameras and image size, so the views' ``cam_to_scene`` are relative to the same anchor frame as the
field) and pairs every voxel scene with its window by ``(store_index, episode, anchor_frame)``.

Train/val split: the stage-1 rule (`SceneWindowDataset` with ``split="train"|"val"`` and ``val_fraction``: by
episode, or by time for a single-episode store), so stage 2 validates on the scenes stage 1 held out.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_training.data.capture_windows import SceneBatch, SceneWindow, SceneWindowDataset, collate_windows
from nfldm_training.data.loaders import SeededDataModule
from nfldm_training.errors import TrainingError
from nfldm_training.stores.voxel_store import VoxelStore


@dataclass(eq=False)
class LatentItem:
    """One encoded scene and its window's captured views.

    Attributes:
        field: unbatched `VoxelField` (density ``[Z,Y,X]``, features ``[C,Z,Y,X]``, bounds ``[2,3]``), float32.
        window: the `SceneWindow` (images ``[V,3,H,W]``, K, cam_to_scene relative to the same anchor frame).
        scene: index of the scene in the voxel store.
    """

    field: VoxelField
    window: SceneWindow
    scene: int


@dataclass(eq=False)
class LatentBatch:
    """B collated `LatentItem` s. Has ``.to(device)`` so Lightning moves it like a tensor.

    Attributes:
        field: batched `VoxelField` (density ``[B,Z,Y,X]``, features ``[B,C,Z,Y,X]``, bounds ``[B,2,3]``).
        views: `SceneBatch` of the windows (images ``[B,V,3,H,W]``, ``cameras()`` of batch shape ``[B,V]``).
        scene: ``[B]`` int64 scene indices in the voxel store.
    """

    field: VoxelField
    views: SceneBatch
    scene: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.scene.shape[0]

    def to(self, device=None, non_blocking: bool = False) -> "LatentBatch":
        return LatentBatch(self.field.to(device), self.views.to(device, non_blocking=non_blocking),
                           self.scene.to(device, non_blocking=non_blocking))


def collate_latent(items: Sequence[LatentItem]) -> LatentBatch:
    """Stack `LatentItem` s of one grid and one view count into a `LatentBatch`."""
    if not items:
        raise ValueError("cannot collate an empty list of latent items")
    return LatentBatch(VoxelField.stack([it.field for it in items]), collate_windows([it.window for it in items]),
                       torch.tensor([it.scene for it in items], dtype=torch.int64))


def _same_path(a: str, b: str) -> bool:
    if "://" in a or "://" in b:
        return a.rstrip("/") == b.rstrip("/")
    return Path(a).resolve() == Path(b).resolve()


class LatentSceneDataset(torch.utils.data.Dataset):
    """Voxel scenes of an encode-voxels store paired with their windows' captured views (module docstring).

    Args:
        voxels: path of the voxel store.
        stores: the capture stores, in the voxel store's ``source_stores`` order (None: those recorded paths).
            Give them when the stores moved since encoding; the count must match.
        split: ``"train"``, ``"val"`` or ``"all"``.
        val_fraction: fraction of each store's episodes held out for ``"val"`` (stage-1 rule).
    Raises:
        ValueError: the stores do not match the voxel store, or a voxel scene has no window in the capture.
    """

    def __init__(self, voxels: str | Path, stores: Sequence[str] | None = None, split: str = "train",
                 val_fraction: float = 0.2):
        self.voxels_path = str(voxels)
        vs = VoxelStore(self.voxels_path)
        a = vs.attrs
        recorded = [str(s) for s in a["source_stores"]]
        if stores is None:
            stores = recorded
        stores = [str(s) for s in stores]
        if len(stores) != len(recorded):
            raise TrainingError(f"{voxels} was encoded from {len(recorded)} capture store(s) {recorded} but {len(stores)} "
                                f"were given {stores}: pass the same stores in the same order")
        moved = [(r, s) for r, s in zip(recorded, stores) if not _same_path(r, s)]
        if moved:
            warnings.warn(f"capture stores differ from those {voxels} was encoded from ({moved}); using the given ones "
                          "in the recorded order", stacklevel=2)
        self.stores = stores
        self.window, self.stride = int(a["window"]), int(a["stride"])
        self.cameras = list(a["cameras"])
        self.image_size = tuple(int(v) for v in a["image_size"])
        with warnings.catch_warnings():
            if split == "val":  # the single-episode time-split warning is given by the train set
                warnings.simplefilter("ignore")
            self.windows = SceneWindowDataset(stores, self.window, self.cameras, self.image_size, split=split,
                                              val_fraction=val_fraction, stride=self.stride)
        # WindowRef.episode is the episode's position in its store; the voxel store records Episode.index.
        index_of = {}
        for r in self.windows.refs:
            if (r.store_index, r.episode) not in index_of:
                index_of[(r.store_index, r.episode)] = self.windows.episode(r).index
        key_to_window = {(r.store_index, index_of[(r.store_index, r.episode)], r.start + self.windows.anchor_offset): i
                         for i, r in enumerate(self.windows.refs)}
        ids = vs.ids()                                                           # [S, 3] (store, episode, anchor)
        self.num_scenes = len(vs)
        self.pairs: list[tuple[int, int]] = []                                   # (voxel scene, window index)
        for s, (si, ep, anchor) in enumerate(ids.tolist()):
            w = key_to_window.get((si, ep, anchor))
            if w is not None:
                self.pairs.append((s, w))
        if split == "all" and len(self.pairs) != self.num_scenes:
            missing = self.num_scenes - len(self.pairs)
            raise TrainingError(f"{missing} scene(s) of {voxels} have no window in {stores} (window {self.window}, stride "
                                f"{self.stride}): the capture stores are not the ones it was encoded from")
        self._store: VoxelStore | None = vs
        self._pid = os.getpid()

    # zarr handles are opened once per process (DataLoader workers open their own)
    def _voxels(self) -> VoxelStore:
        if self._store is None or os.getpid() != self._pid:
            self._store, self._pid = VoxelStore(self.voxels_path), os.getpid()
        return self._store

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_store"] = None
        return state

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def num_views(self) -> int:
        """V = window × cameras."""
        return self.windows.num_views

    def __getitem__(self, i: int) -> LatentItem:
        s, w = self.pairs[i]
        return LatentItem(field=self._voxels().field(s, dtype=torch.float32), window=self.windows[w], scene=s)


class LatentDataModule(SeededDataModule):
    """Train/val `LatentSceneDataset` s and their seeded loaders for stage 2.

    Args:
        voxels: voxel store path (``nfldm encode-voxels``).
        stores: capture stores (None: the voxel store's recorded ``source_stores``).
        train: ``LatentAETrainConfig`` (batch_size, val_fraction, num_workers, seed).
    """

    def __init__(self, voxels: str | Path, stores: Sequence[str] | None, train):
        super().__init__(train, train.batch_size, collate_latent)
        self.voxels = str(voxels)
        self.stores = None if stores is None else [str(s) for s in stores]

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = LatentSceneDataset(self.voxels, self.stores, "train", self.cfg.val_fraction)
            self.val_set = LatentSceneDataset(self.voxels, self.stores, "val", self.cfg.val_fraction)
            if len(self.train_set) == 0:
                raise TrainingError(f"no training scenes in {self.voxels}: encode more windows (more episodes or frames)")
