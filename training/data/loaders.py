"""Seeded data loading of stages 1 and 2: `SeededDataModule`, the Lightning data module both stages' data modules
are, and `seed_worker`, its loaders' ``worker_init_fn``.

Every random draw of the loading comes from a generator seeded by the stage's training seed (the shuffling, and
the workers' seeds, which `seed_worker` hands on to numpy and `random`), so a run loads the same batches every
time it is started with the same seed.
"""
from __future__ import annotations

import random
from typing import Any, Callable

import numpy as np
import torch
from lightning.pytorch import LightningDataModule

__all__ = ["SeededDataModule", "seed_worker"]


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive numpy/random seeds from torch's per-worker seed (itself from the
    loader's generator), so augmentations, if any, are reproducible per worker."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class SeededDataModule(LightningDataModule):
    """Train/val datasets and their seeded loaders.

    The train loader shuffles with a generator seeded ``seed`` and drops the last partial batch when the dataset
    holds a full one; the val loader keeps the dataset's order (its generator, seeded ``seed + 1``, seeds its
    workers). Subclasses build `train_set` and `val_set` in ``setup``, which the loaders call first.

    Args:
        train: the stage's training config; reads ``seed`` and ``num_workers``.
        batch_size: items per step (per device).
        collate_fn: stacks a list of items into a batch.
        pin_memory: the loaders' ``pin_memory``.
    """

    def __init__(self, train: Any, batch_size: int, collate_fn: Callable, pin_memory: bool = False):
        super().__init__()
        self.cfg = train
        self.batch_size = int(batch_size)
        self.collate_fn = collate_fn
        self.pin_memory = bool(pin_memory)
        self.train_set: torch.utils.data.Dataset | None = None
        self.val_set: torch.utils.data.Dataset | None = None

    def loader(self, dataset: torch.utils.data.Dataset, shuffle: bool, offset: int) -> torch.utils.data.DataLoader:
        """A loader of `dataset` whose generator is seeded ``seed + offset`` (shuffled when `shuffle`)."""
        g = torch.Generator().manual_seed(int(self.cfg.seed) + offset)
        workers = int(self.cfg.num_workers)
        return torch.utils.data.DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=workers,
                                           collate_fn=self.collate_fn, worker_init_fn=seed_worker, generator=g,
                                           drop_last=shuffle and len(dataset) >= self.batch_size,
                                           persistent_workers=workers > 0, pin_memory=self.pin_memory)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        """The training split, shuffled by a generator seeded ``cfg.seed``; the incomplete last batch is dropped when
        the split holds at least one full batch."""
        self.setup()
        return self.loader(self.train_set, True, 0)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        """The validation split in order (its generator, seeded ``cfg.seed + 1``, only seeds the workers)."""
        self.setup()
        return self.loader(self.val_set, False, 1)
