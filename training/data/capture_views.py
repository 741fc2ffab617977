"""Single captured views with their semantic tags: the training data of the perception critic.

One item is one camera image of one frame: ``(image [3, H, W] float32 in [0, 1], tags [H, W] uint8 CARLA tags)``,
resized to ``image_size`` like stage 1's windows (`nfldm_training.data.capture_windows.resize_images`, bilinear and
antialiased; tags nearest-exact with `resize_labels`, so labels never mix). Items are frame-major: item
``i`` is frame ``i // cameras`` of the split, camera ``i % cameras``.

The split is stage 1's: the frames are those of one-frame windows of `SceneWindowDataset` (``window=1``,
``stride=frame_stride``), so the held-out episodes (`held_out_episodes` with the same `val_fraction`) are exactly
those stage 1 and ``nfldm eval`` hold out; a single-episode store is split by time as stage 1 splits it.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch

from nfldm_training.data.capture_windows import SceneWindowDataset, resize_images, resize_labels
from nfldm_training.data.loaders import SeededDataModule
from nfldm_training.errors import TrainingError

__all__ = ["CaptureViewDataset", "CaptureViewDataModule", "collate_views"]


class CaptureViewDataset(torch.utils.data.Dataset):
    """Captured views and their tags of one split of capture stores (module docstring).

    Args:
        stores: capture-store paths or fsspec URLs.
        image_size: ``(H, W)`` of the returned images and tags.
        split: ``"train"``, ``"val"`` or ``"all"`` (stage 1's episode split).
        val_fraction: fraction of each store's episodes held out for ``"val"``.
        cameras: rig camera names to use (None = all, in rig order).
        frame_stride: use every k-th frame of an episode.
        cache: keep every item in memory after its first read (small stores only).
    """

    def __init__(self, stores: Sequence[str], image_size: tuple[int, int], split: str = "train",
                 val_fraction: float = 0.2, cameras: Sequence[str] | None = None, frame_stride: int = 1,
                 cache: bool = False):
        self.frames = SceneWindowDataset(stores, 1, cameras=cameras, image_size=image_size, split=split,
                                         val_fraction=val_fraction, stride=frame_stride)
        self.image_size = self.frames.image_size
        self.num_cameras = len(self.frames.camera_names)
        self.cache = bool(cache)
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.frames) * self.num_cameras

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"view {i} out of range: the split has {len(self)} views")
        if i in self._cache:
            return self._cache[i]
        ref = self.frames.refs[i // self.num_cameras]
        cam = self.frames.camera_indices[ref.store_index][i % self.num_cameras]
        ep = self.frames.episode(ref)
        image = resize_images(ep.rgb[ref.start, [cam]], self.image_size)[0]             # [3, H, W]
        tags = resize_labels(ep.semantic[ref.start, [cam]], self.image_size)[0]        # [H, W] uint8
        if self.cache:
            self._cache[i] = (image, tags)
        return image, tags

    def images(self, indices: Sequence[int]) -> torch.Tensor:
        """``[n, 3, H, W]`` the images of items `indices`."""
        return torch.stack([self[i][0] for i in indices]) if len(indices) else torch.zeros(0, 3, *self.image_size)


def collate_views(items: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(image, tags)`` items into ``(images [B, 3, H, W], tags [B, H, W] uint8)``."""
    if not items:
        raise ValueError("cannot collate an empty list of views")
    return torch.stack([im for im, _ in items]), torch.stack([t for _, t in items])


class CaptureViewDataModule(SeededDataModule):
    """Train/val `CaptureViewDataset` s and their seeded loaders for the critic.

    Args:
        stores: capture-store paths.
        image_size: ``(H, W)`` (the critic's ``image_size``).
        train: `nfldm_training.configs.sections.CriticTrainConfig` (val_fraction, cameras, frame_stride,
            cache_views, batch_size, num_workers, seed).
    """

    def __init__(self, stores: Sequence[str], image_size: tuple[int, int], train):
        super().__init__(train, train.batch_size, collate_views, pin_memory=torch.cuda.is_available())
        self.store_paths = [str(s) for s in stores]
        self.image_size = (int(image_size[0]), int(image_size[1]))

    def _dataset(self, split: str) -> CaptureViewDataset:
        c = self.cfg
        with warnings.catch_warnings():
            if split == "val":  # a single-episode store's time-split warning is given once, by the train set
                warnings.simplefilter("ignore")
            return CaptureViewDataset(self.store_paths, self.image_size, split, c.val_fraction, c.cameras,
                                      c.frame_stride, cache=c.cache_views)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._dataset("train")
            self.val_set = self._dataset("val")
            if len(self.train_set) == 0:
                raise TrainingError(f"no training views in {self.store_paths}: the stores hold no committed frames "
                                    "outside the held-out episodes (collect more episodes)")
