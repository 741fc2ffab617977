"""Stage-2 data: the LAE's training data (encoded scenes + their captured views) and the latent store it produces.

* `LatentSceneDataset` / `LatentDataModule` — each encoded scene (a `VoxelField` of an ``nfldm encode-voxels``
  store) paired with the captured views of its scene window, for the voxel and image losses of the LAE.
* `encode_latents` / `LatentStore` — ``nfldm encode-latents``: every scene's quantised latents (g, c, f) in a zarr
  v3 store with the latent normalisation statistics (`LatentStatsAccumulator`), the training data of stage 3.

The voxel store (`nfldm_training.stores.voxel_store`) records, per scene, ``(store_index, episode, anchor_frame)`` and,
in its root attrs, the source capture stores, ``window``, ``stride``, ``cameras`` and ``image_size`` it was encoded
with. `LatentSceneDataset` rebuilds those windows with `nfldm_training.data.capture_windows.SceneWindowDataset` (same window,
stride, cameras and image size, so the views' ``cam_to_scene`` are relative to the same anchor frame as the
field) and pairs every voxel scene with its window by ``(store_index, episode, anchor_frame)``.

Train/val split: the stage-1 rule (`SceneWindowDataset` with ``split="train"|"val"`` and ``val_fraction``: by
episode, or by time for a single-episode store), so stage 2 validates on the scenes stage 1 held out.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

try:
    from lightning.pytorch import LightningDataModule
except ImportError:  # pragma: no cover
    LightningDataModule = object  # type: ignore[misc,assignment]

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_training.data.capture_windows import SceneBatch, SceneWindow, SceneWindowDataset, collate_windows, seed_worker
from nfldm_training.stores.voxel_store import VoxelStore, create_or_resume_scene_store, open_scene_store, weights_sha256
from nfldm_training.errors import TrainingError, TrainingInputNotFound


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
                index_of[(r.store_index, r.episode)] = self.windows._store(r.store_index).episode(r.episode).index
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


class LatentDataModule(LightningDataModule):
    """Train/val `LatentSceneDataset` s and their loaders for stage 2.

    Args:
        voxels: voxel store path (``nfldm encode-voxels``).
        stores: capture stores (None: the voxel store's recorded ``source_stores``).
        train: ``LatentAETrainConfig`` (batch_size, val_fraction, num_workers, seed).
    """

    def __init__(self, voxels: str | Path, stores: Sequence[str] | None, train):
        super().__init__()
        self.voxels = str(voxels)
        self.stores = None if stores is None else [str(s) for s in stores]
        self.cfg = train
        self.train_set: LatentSceneDataset | None = None
        self.val_set: LatentSceneDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = LatentSceneDataset(self.voxels, self.stores, "train", self.cfg.val_fraction)
            self.val_set = LatentSceneDataset(self.voxels, self.stores, "val", self.cfg.val_fraction)
            if len(self.train_set) == 0:
                raise TrainingError(f"no training scenes in {self.voxels}: encode more windows (more episodes or frames)")

    def _loader(self, dataset: LatentSceneDataset, shuffle: bool, offset: int) -> torch.utils.data.DataLoader:
        g = torch.Generator().manual_seed(int(self.cfg.seed) + offset)
        workers = int(self.cfg.num_workers)
        bs = int(self.cfg.batch_size)
        return torch.utils.data.DataLoader(dataset, batch_size=bs, shuffle=shuffle, num_workers=workers,
                                           collate_fn=collate_latent, worker_init_fn=seed_worker, generator=g,
                                           drop_last=shuffle and len(dataset) >= bs, persistent_workers=workers > 0)

    def train_dataloader(self):
        self.setup()
        return self._loader(self.train_set, True, 0)

    def val_dataloader(self):
        self.setup()
        return self._loader(self.val_set, False, 1)


# ================================================================================================ latent store
# Written by `nfldm encode-latents`; the training data of stage 3 (hierarchical latent diffusion).
LATENT_STORE_FORMAT = "nfldm.latent_store"
LATENT_STORE_VERSION = 1
_LATENT_CONVENTIONS = ("g [S,g_dim]; c [S,4,Zc,Yc,Xc] (Zc vertical, scene frame x forward y left z up); "
                       "f [S,4,Y,X] bird's-eye view over the voxel box's (y, x); c and f are codebook vectors "
                       "(quantised), g the posterior mean; un-normalised: normalise with latent_stats")


class LatentStatsAccumulator:
    """Exact streaming mean and population std (ddof 0) of the latents, in float64.

    Batches are merged with Chan et al.'s parallel update (count, mean, sum of squared deviations), which stays
    accurate where ``E[x²] − E[x]²`` would cancel. g is pooled over all dims (one scalar), c and f per channel
    (see `nfldm_sdk.models.latent_ae.LatentStats`).
    """

    def __init__(self, c_channels: int, f_channels: int):
        self._state = {"g": self._zero(1), "c": self._zero(c_channels), "f": self._zero(f_channels)}
        self.num_scenes = 0

    @staticmethod
    def _zero(k: int):
        return [0, np.zeros(k), np.zeros(k)]  # n per channel, mean, M2

    @staticmethod
    def _merge(state, x: np.ndarray) -> None:
        """`x` ``[k, n]`` float64: n new values of each of the k channels."""
        n_b = x.shape[1]
        if n_b == 0:
            return
        mean_b = x.mean(1)
        m2_b = ((x - mean_b[:, None]) ** 2).sum(1)
        n, mean, m2 = state
        tot = n + n_b
        delta = mean_b - mean
        state[1] = mean + delta * (n_b / tot)
        state[2] = m2 + m2_b + delta ** 2 * (n * n_b / tot)
        state[0] = tot

    def update(self, g: np.ndarray, c: np.ndarray, f: np.ndarray) -> None:
        """Add a batch: g ``[B, g_dim]``, c ``[B, Cc, Zc, Yc, Xc]``, f ``[B, Cf, Y, X]`` (any float dtype)."""
        self._merge(self._state["g"], np.asarray(g, np.float64).reshape(1, -1))
        for key, x in (("c", c), ("f", f)):
            x = np.asarray(x, np.float64)
            self._merge(self._state[key], np.moveaxis(x, 1, 0).reshape(x.shape[1], -1))
        self.num_scenes += int(np.asarray(g).shape[0])

    def stats(self):
        """The `LatentStats` of everything added so far."""
        from nfldm_sdk.models.latent_ae import LatentStats

        if self.num_scenes == 0:
            raise TrainingError("no latents were added: cannot compute statistics of an empty data set")
        out = {}
        for key, (n, mean, m2) in self._state.items():
            out[key] = (mean.tolist(), np.sqrt(m2 / n).tolist())
        return LatentStats(g_mean=float(out["g"][0][0]), g_std=float(out["g"][1][0]), c_mean=tuple(out["c"][0]),
                           c_std=tuple(out["c"][1]), f_mean=tuple(out["f"][0]), f_std=tuple(out["f"][1]),
                           num_scenes=self.num_scenes)


class LatentStore:
    """Read access to a latent store written by `encode_latents`. ``len(store)`` = scenes written.

    Layout::

        <latents>.zarr/     root attrs: format, format_version, nfldm_version, model (class, config, weights_sha256),
                            voxels (source voxel store), source_stores, window, stride, cameras, image_size,
                            conventions, scenes_planned, scenes_written, latent_stats (after the last scene)
          g            [S, g_dim]            float32   posterior mean of g
          c            [S, 4, Zc, Yc, Xc]    float32   quantised coarse latent (codebook vectors)
          f            [S, 4, Y, X]          float32   quantised fine latent (codebook vectors)
          store_index  [S] int32, episode [S] int32, anchor_frame [S] int64   as in the voxel store
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.group = open_scene_store(path, LATENT_STORE_FORMAT, LATENT_STORE_VERSION, "latent", "encode-latents")
        self.attrs = dict(self.group.attrs)

    def __len__(self) -> int:
        return int(self.attrs.get("scenes_written", 0))

    @property
    def stats(self):
        """The `LatentStats` over all scenes (raises if the store is incomplete)."""
        from nfldm_sdk.models.latent_ae import LatentStats
        from nfldm_sdk.persistence import config_from_dict

        raw = self.attrs.get("latent_stats")
        if raw is None:
            raise TrainingError(f"{self.path} has no latent_stats: it is incomplete, rerun `nfldm encode-latents` to finish it")
        return config_from_dict(LatentStats, raw)

    def latents(self, start: int = 0, stop: int | None = None):
        """Scenes ``start:stop`` as `Latents` (float32 tensors)."""
        from nfldm_sdk.models.latent_ae import Latents

        n = len(self)
        stop = n if stop is None else min(int(stop), n)
        if not 0 <= start < stop:
            raise IndexError(f"scenes {start}:{stop} out of range: {self.path} has {n} scene(s) written")
        t = lambda k: torch.from_numpy(np.asarray(self.group[k][start:stop], dtype=np.float32))  # noqa: E731
        return Latents(g=t("g"), c=t("c"), f=t("f"))

    def ids(self) -> np.ndarray:
        """``[S, 3]`` int64 rows ``(store_index, episode, anchor_frame)``."""
        n = len(self)
        return np.stack([np.asarray(self.group[k][:n], dtype=np.int64) for k in ("store_index", "episode", "anchor_frame")], 1)

    def __repr__(self) -> str:
        return f"LatentStore({self.path!r}, {len(self)}/{self.attrs.get('scenes_planned')} scenes)"


@dataclass
class EncodeLatentsResult:
    """Outcome of `encode_latents`: store path, scenes in total, scenes encoded by this call, the statistics,
    the model config updated with them (or None), seconds."""

    path: str
    scenes: int
    written_now: int
    stats: object
    model_config_path: Path | None
    seconds: float


def write_latent_stats(model_dir: str | Path, stats) -> Path:
    """Set ``latent_stats`` in ``model_dir/config.json`` (weights untouched; written atomically). Returns the path."""
    from dataclasses import asdict

    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise TrainingInputNotFound(f"{path} not found: {model_dir} is not a saved LatentAutoEncoder folder")
    data = json.loads(path.read_text())
    data["latent_stats"] = asdict(stats)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def encode_latents(model, voxels: str | Path, out: str | Path, *, model_dir: str | Path | None = None,
                   batch_size: int = 8, device: str | torch.device = "cpu", overwrite: bool = False,
                   progress: bool = True, log=print) -> EncodeLatentsResult:
    """Encode every scene of a voxel store with ``model.encode`` into a latent store (resumable), and compute the
    latent normalisation statistics over all of them.

    The statistics are computed from exactly the float32 values written (streaming, `LatentStatsAccumulator`;
    a resumed run first re-reads the scenes already written), stored in the root attrs ``latent_stats`` and, when
    `model_dir` is given, in ``model_dir/config.json`` (``latent_stats``) so the model carries them.

    Args:
        model: a `LatentAutoEncoder` (put in eval mode; its codebooks are not changed).
        voxels: the ``nfldm encode-voxels`` store.
        out: latent store to write (zarr v3).
        model_dir: the folder `model` was loaded from (None: the statistics are only written to the store).
        overwrite: replace an existing store; otherwise one started with the same model and voxels is continued.
    """
    from tqdm.auto import tqdm

    from nfldm_sdk.persistence import class_path, config_to_dict, nfldm_version

    start_time = time.perf_counter()
    vs = VoxelStore(voxels)
    S = len(vs)
    if S == 0:
        raise TrainingError(f"{voxels} holds no scenes: run `nfldm encode-voxels` first")
    if int(vs.attrs.get("scenes_planned", S)) != S:
        raise TrainingError(f"{voxels} is incomplete ({S}/{vs.attrs.get('scenes_planned')} scenes): finish it by rerunning "
                            "`nfldm encode-voxels` with the same arguments")
    cfg = model.config
    model_attrs = {"class": class_path(type(model)), "config": config_to_dict(dataclasses.replace(cfg, latent_stats=None)),
                   "weights_sha256": weights_sha256(model)}
    attrs = {"format": LATENT_STORE_FORMAT, "format_version": LATENT_STORE_VERSION, "nfldm_version": nfldm_version(),
             "model": model_attrs, "voxels": str(voxels),
             **{k: vs.attrs.get(k) for k in ("source_stores", "window", "stride", "cameras", "image_size")},
             "conventions": _LATENT_CONVENTIONS, "scenes_planned": S}
    identity = ("model", "voxels", "scenes_planned")
    out = str(out)

    def create_arrays(group) -> None:
        group.create_array("g", shape=(S, *cfg.g_shape), chunks=(min(S, 4096), *cfg.g_shape), dtype=np.float32, fill_value=0)
        group.create_array("c", shape=(S, *cfg.c_shape), chunks=(1, *cfg.c_shape), dtype=np.float32, fill_value=0)
        group.create_array("f", shape=(S, *cfg.f_shape), chunks=(1, *cfg.f_shape), dtype=np.float32, fill_value=0)
        ids = vs.ids()
        for j, (k, dt) in enumerate((("store_index", np.int32), ("episode", np.int32), ("anchor_frame", np.int64))):
            group.create_array(k, shape=(S,), chunks=(S,), dtype=dt, fill_value=-1)
            group[k][:] = ids[:, j].astype(dt)

    group = create_or_resume_scene_store(out, attrs, identity, "latent", overwrite, create_arrays)
    done = int(group.attrs.get("scenes_written", 0))

    acc = LatentStatsAccumulator(cfg.coarse_channels, cfg.fine_channels)
    bar = tqdm(total=S, initial=0, desc="encode-latents", unit="scene", disable=not progress)
    for i in range(0, done, batch_size):  # a resumed run: statistics of the scenes already written
        j = min(done, i + batch_size)
        acc.update(group["g"][i:j], group["c"][i:j], group["f"][i:j])
        bar.update(j - i)
    if done:
        log(f"{out}: resuming after {done}/{S} scenes")
    model = model.to(device).eval()
    with torch.no_grad():
        for i in range(done, S, batch_size):
            j = min(S, i + batch_size)
            z = model.encode(vs.fields(i, j).to(device))
            g, c, f = (t.float().cpu().numpy() for t in (z.g, z.c, z.f))
            group["g"][i:j] = g
            group["c"][i:j] = c
            group["f"][i:j] = f
            group.attrs["scenes_written"] = j  # after the data: a crash never counts a scene it did not finish
            acc.update(g, c, f)
            bar.update(j - i)
    bar.close()
    stats = acc.stats()
    group.attrs["latent_stats"] = dataclasses.asdict(stats)
    config_path = write_latent_stats(model_dir, stats) if model_dir is not None else None
    if model_dir is not None:
        model.config.latent_stats = stats
    return EncodeLatentsResult(path=out, scenes=S, written_now=S - done, stats=stats, model_config_path=config_path,
                               seconds=time.perf_counter() - start_time)
