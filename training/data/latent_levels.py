"""Training data of stage 3: the latents written by ``nfldm encode-latents`` (`nfldm_training.stores.latent_store`).

The store (format ``nfldm.latent_store``, read through `LatentStore`) holds per scene
``g [S, g_dim]``, ``c [S, 4, Zc, Yc, Xc]``, ``f [S, 4, Y, X]`` (un-normalised), the ids ``store_index``,
``episode``, ``anchor_frame``, and in its root attrs ``scenes_written`` and ``latent_stats`` (the `LatentStats`
over all scenes, written when the store is complete; an incomplete store is refused).

* `LatentLevels` — the stage-3 view of a store: per-level shapes, the normalisation, and `training_data_hash`
  (sha256 of the store's description: root attrs, array shapes and dtypes, and the scene ids), which a model
  bundle records as its training-data hash.
* `LatentLevelDataset` — normalised latents of the levels one denoiser reads (its own and its conditions), and for
  conditional training the scene's ``bev [Y, X]`` uint8 map and ``trajectory [K, 3]`` (un-normalised: metres,
  radians; the store's arrays, format version 2+; `LatentStore.require_conditioning` names the fix for older stores).
* `LatentLevelDataModule` — the train/val split by episode (stage 1's rule, `split_by_episode`) and the loaders.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from lightning.pytorch import LightningDataModule

from nfldm_sdk.models.latent_ae import LatentStats
from nfldm_sdk.pipelines.sampling import normalize_level
from nfldm_sdk.models.latent_ae import LEVELS
from nfldm_training.data.capture_windows import held_out_episodes
from nfldm_training.errors import TrainingError
from nfldm_training.stores.latent_store import LatentStore

__all__ = ["LatentLevels", "LatentLevelDataset", "LatentLevelDataModule", "split_indices", "split_by_episode", "LEVEL_CONDITIONS"]

#: The levels each denoiser reads: its own first, then its conditions (docs/method.md, stage 3: p(g), p(c|g), p(f|g,c)).
LEVEL_CONDITIONS: dict[str, tuple[str, ...]] = {"g": ("g",), "c": ("c", "g"), "f": ("f", "g", "c")}
#: The conditioning arrays an item may carry besides the levels (un-normalised).
_EXTRAS = ("bev", "trajectory")
_CACHE_BYTES = 1 << 30  # load the needed arrays into memory when they take at most 1 GiB


def split_indices(num_scenes: int, val_fraction: float) -> tuple[list[int], list[int]]:
    """Deterministic train/val split: ``floor(S · val_fraction)`` validation scenes at the centres of S/n_val-long
    runs of the store (so they spread over its episodes)."""
    n_val = int(num_scenes * float(val_fraction)) if num_scenes > 1 else 0
    val = sorted({int(round((k + 0.5) * num_scenes / n_val - 0.5)) for k in range(n_val)}) if n_val else []
    vs = set(val)
    return [i for i in range(num_scenes) if i not in vs], val


def split_by_episode(ids: np.ndarray, val_fraction: float) -> tuple[list[int], list[int]]:
    """Train/val split of a latent store's scenes with stage 1's rule, so no stage trains on held-out episodes.

    Args:
        ids: ``[S, 3]`` rows ``(store_index, episode, anchor_frame)`` (`LatentStore.ids`).
        val_fraction: fraction of each capture store's episodes held out (stage 1's ``val_fraction``).
    Returns:
        ``(train, val)`` scene indices. Per capture store with ≥ 2 episodes, the scenes of its last
        ``round(val_fraction · episodes)`` episodes (at least one) are validation — exactly the episodes stage 1 and
        the LAE hold out and `nfldm eval` uses as the reference. Scenes of single-episode stores are split every k-th
        (`split_indices`), as no episode can be spared there.
    """
    ids = np.asarray(ids)
    val: list[int] = []
    single: list[int] = []
    for store in np.unique(ids[:, 0]):
        rows = np.flatnonzero(ids[:, 0] == store)
        episodes = sorted(int(e) for e in np.unique(ids[rows, 1]))
        if len(episodes) < 2:
            single.extend(int(r) for r in rows)
            continue
        held = {episodes[p] for p in held_out_episodes(len(episodes), val_fraction)}
        val.extend(int(r) for r in rows if int(ids[r, 1]) in held)
    if single:
        val.extend(single[i] for i in split_indices(len(single), val_fraction)[1])
    held_rows = set(val)
    return [i for i in range(len(ids)) if i not in held_rows], sorted(val)


class LatentLevels:
    """Stage 3's view of a latent store: ``len`` = scenes written, per-level shapes, stats, data hash."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.store = LatentStore(self.path)
        group = self.store.group
        missing = [k for k in LEVELS if k not in group]
        if missing:
            raise TrainingError(f"latent store {self.path} lacks array(s) {missing}: re-run `nfldm encode-latents`")
        self.num_scenes = len(self.store)
        if self.num_scenes < 1:
            raise TrainingError(f"latent store {self.path} holds no scenes: run `nfldm encode-latents` to completion")
        self.stats: LatentStats = self.store.stats  # raises for an incomplete store
        self.g_dim = int(group["g"].shape[1])
        self.c_shape: tuple[int, int, int, int] = tuple(int(v) for v in group["c"].shape[1:])  # type: ignore[assignment]
        self.f_shape: tuple[int, int, int] = tuple(int(v) for v in group["f"].shape[1:])  # type: ignore[assignment]
        self.has_conditioning = self.store.has_conditioning
        self.bev_grid_yx = tuple(int(v) for v in group["bev"].shape[1:]) if self.has_conditioning else None
        self.trajectory_frames = int(group["trajectory"].shape[1]) if self.has_conditioning else None

    def __len__(self) -> int:
        return self.num_scenes

    def shape(self, level: str) -> tuple[int, ...]:
        """Per-scene shape of `level`."""
        return {"g": (self.g_dim,), "c": self.c_shape, "f": self.f_shape}[level]

    def read(self, level: str, index: slice | None = None) -> np.ndarray:
        """Un-normalised latents of `level` for scenes `index` (all written scenes when None), float32 numpy; also
        ``"bev"`` (uint8 ``[S, Y, X]``) and ``"trajectory"`` (``[S, K, 3]``) of a store with conditioning."""
        if level in _EXTRAS:
            self.store.require_conditioning()
            dtype = np.uint8 if level == "bev" else np.float32
            return np.asarray(self.store.group[level][index or slice(0, self.num_scenes)], dtype=dtype)
        return np.asarray(self.store.group[level][index or slice(0, self.num_scenes)], dtype=np.float32)

    def trajectory_stats(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """``(mean, std)`` of ``(x, y, yaw)`` over every pose of every scene (metres, radians; population std)."""
        t = self.read("trajectory").reshape(-1, 3).astype(np.float64)
        return tuple(float(v) for v in t.mean(0)), tuple(float(v) for v in t.std(0))  # type: ignore[return-value]

    def training_data_hash(self) -> str:
        """sha256 of the store's description: root attrs (canonical JSON), array shapes/dtypes and the scene ids."""
        h = hashlib.sha256()
        h.update(json.dumps(self.store.attrs, sort_keys=True, default=str).encode())
        for k in LEVELS:
            a = self.store.group[k]
            h.update(f"{k}:{tuple(a.shape)}:{a.dtype}".encode())
        h.update(np.ascontiguousarray(self.store.ids()).tobytes())
        return h.hexdigest()


class LatentLevelDataset(torch.utils.data.Dataset):
    """Normalised latents of the `levels` one denoiser reads, for scenes `indices` of a latent store.

    Items are ``{level: float32 tensor of the level's per-scene shape}`` (normalised with `stats`), so the default
    collate gives ``{"g": [B, G], "c": [B, 4, Zc, Yc, Xc], ...}``; `extras` (``"bev"``, ``"trajectory"``) add the
    scene's conditioning arrays as they are stored. Arrays are held in memory when they are small
    (≤ 1 GiB together), else read per item (each DataLoader worker opens its own zarr handle).
    """

    def __init__(self, path: str | Path, levels: Sequence[str], indices: Sequence[int], stats: LatentStats,
                 cache: bool | None = None, extras: Sequence[str] = ()):
        self.path, self.levels, self.indices, self.stats = str(path), tuple(levels), list(indices), stats
        store = LatentLevels(self.path)
        self.extras = tuple(k for k in extras if k in _EXTRAS)
        if len(self.extras) != len(tuple(extras)):
            raise ValueError(f"extras must be among {_EXTRAS}, got {tuple(extras)}")
        if self.extras:
            store.store.require_conditioning()
        need = sum(int(np.prod(store.shape(k))) * 4 * len(store) for k in self.levels)
        self._cache: dict[str, torch.Tensor] | None = None
        if cache if cache is not None else need <= _CACHE_BYTES:
            self._cache = {k: normalize_level(stats, k, torch.from_numpy(store.read(k))) for k in self.levels}
            self._cache.update({k: torch.from_numpy(store.read(k)) for k in self.extras})
        self._store, self._pid = store, os.getpid()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_store"] = None
        return state

    def _open(self) -> LatentLevels:
        if self._store is None or os.getpid() != self._pid:
            self._store, self._pid = LatentLevels(self.path), os.getpid()
        return self._store

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.indices[i]
        if self._cache is not None:
            return {k: self._cache[k][s] for k in (*self.levels, *self.extras)}
        store = self._open()
        item = {k: normalize_level(self.stats, k, torch.from_numpy(store.read(k, slice(s, s + 1))))[0] for k in self.levels}
        item.update({k: torch.from_numpy(store.read(k, slice(s, s + 1)))[0] for k in self.extras})
        return item


class LatentLevelDataModule(LightningDataModule):
    """Train/val `LatentLevelDataset` s of one level and their loaders.

    Args:
        path: latent store (``nfldm encode-latents``).
        level: ``"g"``, ``"c"`` or ``"f"`` (loads the level and its conditions, `LEVEL_CONDITIONS`).
        batch_size, val_fraction, num_workers, seed: loader settings (`LDMTrainConfig`).
        stats: normalisation (default: the store's ``latent_stats``).
        extras: conditioning arrays to load too (``"bev"``, ``"trajectory"``); a store without them raises.
    """

    def __init__(self, path: str | Path, level: str, batch_size: int, val_fraction: float, num_workers: int = 0,
                 seed: int = 0, stats: LatentStats | None = None, extras: Sequence[str] = ()):
        super().__init__()
        if level not in LEVEL_CONDITIONS:
            raise ValueError(f"unknown level {level!r}: choose g, c or f")
        self.path, self.level = str(path), level
        self.batch_size, self.val_fraction, self.num_workers, self.seed = int(batch_size), float(val_fraction), int(num_workers), int(seed)
        self.store = LatentLevels(self.path)
        self.extras = tuple(extras)
        if self.extras:
            self.store.store.require_conditioning()
        self.stats = stats or self.store.stats
        self.train_idx, self.val_idx = split_by_episode(self.store.store.ids(), self.val_fraction)
        self.train_set: LatentLevelDataset | None = None
        self.val_set: LatentLevelDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            levels = LEVEL_CONDITIONS[self.level]
            self.train_set = LatentLevelDataset(self.path, levels, self.train_idx, self.stats, extras=self.extras)
            self.val_set = LatentLevelDataset(self.path, levels, self.val_idx, self.stats, extras=self.extras)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(self.seed)
        # drop_last only when a full batch exists: tiny stores still train
        return torch.utils.data.DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, generator=g,
                                           num_workers=self.num_workers, drop_last=len(self.train_set) >= self.batch_size,
                                           persistent_workers=self.num_workers > 0)

    def val_dataloader(self):
        return torch.utils.data.DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False,
                                           num_workers=self.num_workers)
