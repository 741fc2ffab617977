"""Encoded scenes on disk: a zarr v3 store of `VoxelField` s, the training data of stages 2-3.

Layout (one store per `nfldm encode-voxels` run)::

    <voxels>.zarr/            root attrs: format, format_version, model (class, config, weights sha256),
                              source_stores, window, stride, cameras, image_size, anchor, conventions,
                              scenes_planned, scenes_written
      density      [S,Z,Y,X]    float16|float32  chunk (1,Z,Y,X)    σ ≥ 0 per metre
      features     [S,C,Z,Y,X]  float16|float32  chunk (1,C,Z,Y,X)
      bounds       [S,2,3]      float32          chunk (1,2,3)      box (x,y,z) min and max, metres
      store_index  [S]          int32            which of ``source_stores``          (chunks of 65536 scenes)
      episode      [S]          int32            episode index in that store
      anchor_frame [S]          int64            frame whose ego frame is the scene frame

Scenes are written in order, a batch at a time; ``scenes_written`` is updated after each batch's data, so a crash
loses at most the batch in flight and a rerun continues after the last complete batch (`encode_voxels` checks that
the model and the data are the same first). Only the first ``scenes_written`` scenes are valid (the frame of every
scene store, `nfldm_training.stores.scene_store`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.persistence import class_path, config_to_dict, nfldm_version
from nfldm_training.data.capture_windows import SceneWindowDataset, collate_windows
from nfldm_training.errors import TrainingError
from nfldm_training.stores.scene_store import SceneStore, create_or_resume_scene_store, weights_sha256

VOXEL_STORE_FORMAT = "nfldm.voxel_store"
VOXEL_STORE_VERSION = 1
_DTYPES = {"float16": np.float16, "float32": np.float32}
_CONVENTIONS = ("scene frame = ego frame at the window's anchor frame (x forward, y left, z up, metres); "
                "grids [S,C?,Z,Y,X]; bounds [S,2,3] = (x,y,z) min and max, metres; voxel centres at min + (i+0.5)*size")


class VoxelStore(SceneStore):
    """Read access to a voxel store (see the module docstring). ``len(store)`` = scenes written."""

    FORMAT, VERSION, KIND, COMMAND = VOXEL_STORE_FORMAT, VOXEL_STORE_VERSION, "voxel", "encode-voxels"

    @property
    def source_stores(self) -> list[str]:
        """The capture stores the scenes were encoded from (``store_index`` indexes this list)."""
        return list(self.attrs["source_stores"])

    @property
    def model_config(self) -> dict:
        """The config (as JSON) of the stage-1 model that encoded the scenes."""
        return dict(self.attrs["model"]["config"])

    def fields(self, start: int = 0, stop: int | None = None, dtype: torch.dtype = torch.float32) -> VoxelField:
        """Scenes ``start:stop`` as one batched `VoxelField` (cast to `dtype`)."""
        start, stop = self.scene_range(start, stop)
        t = lambda k: torch.from_numpy(np.asarray(self.group[k][start:stop])).to(dtype)  # noqa: E731
        return VoxelField(t("density"), t("features"), t("bounds"))

    def field(self, i: int, dtype: torch.dtype = torch.float32) -> VoxelField:
        """Scene `i` as an unbatched `VoxelField`."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"scene {i} out of range: {self.path} has {n} scene(s) written")
        i %= n
        return self.fields(i, i + 1, dtype)[0]


def open_voxel_store(path: str | Path) -> VoxelStore:
    """Open a voxel store written by `encode_voxels` for reading."""
    return VoxelStore(path)


@dataclass
class EncodeResult:
    """Outcome of `encode_voxels`: store path, scenes in total, scenes written by this call, seconds."""

    path: str
    scenes: int
    written_now: int
    seconds: float


def encode_voxels(model, stores: Sequence[str], out: str | Path, *, window: int, stride: int = 1,
                  cameras: Sequence[str] | None = None, batch_size: int = 4, dtype: str = "float16",
                  device: str | torch.device = "cpu", overwrite: bool = False, progress: bool = True,
                  log: Callable[[str], None] = print) -> EncodeResult:
    """Encode every scene window of `stores` with ``model.encode`` into the voxel store `out` (resumable).

    Windows are those of ``SceneWindowDataset(stores, window, cameras, model.config.image_size, "all", stride=stride)``
    in dataset order. An existing store at `out` is continued if it was started with the same model weights,
    stores, window, stride, cameras and dtype, else this raises (pass ``overwrite=True`` to replace it).
    """
    if dtype not in _DTYPES:
        raise TrainingError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    start_time = time.perf_counter()
    cfg = model.config
    data = SceneWindowDataset(list(stores), window, cameras, cfg.image_size, split="all", stride=stride)
    S = len(data)
    if S == 0:
        raise TrainingError(f"no windows of {window} frames in {list(stores)}: use a smaller --window")
    Z, Y, X = cfg.grid_shape
    C = cfg.feature_channels
    attrs = {
        "format": VOXEL_STORE_FORMAT, "format_version": VOXEL_STORE_VERSION, "nfldm_version": nfldm_version(),
        "model": {"class": class_path(type(model)), "config": config_to_dict(cfg), "weights_sha256": weights_sha256(model)},
        "source_stores": [str(s) for s in stores], "window": int(window), "stride": int(stride),
        "cameras": list(data.camera_names), "image_size": list(cfg.image_size),
        "anchor": "middle frame of the window: start + (window - 1) // 2", "dtype": dtype,
        "conventions": _CONVENTIONS, "scenes_planned": S,
    }
    identity = ("model", "source_stores", "window", "stride", "cameras", "image_size", "dtype", "scenes_planned")
    out = str(out)

    def create_arrays(group) -> None:
        npd = _DTYPES[dtype]
        group.create_array("density", shape=(S, Z, Y, X), chunks=(1, Z, Y, X), dtype=npd, fill_value=0)
        group.create_array("features", shape=(S, C, Z, Y, X), chunks=(1, C, Z, Y, X), dtype=npd, fill_value=0)
        group.create_array("bounds", shape=(S, 2, 3), chunks=(1, 2, 3), dtype=np.float32, fill_value=0)
        ids_chunk = (min(S, 65536),)
        group.create_array("store_index", shape=(S,), chunks=ids_chunk, dtype=np.int32, fill_value=-1)
        group.create_array("episode", shape=(S,), chunks=ids_chunk, dtype=np.int32, fill_value=-1)
        group.create_array("anchor_frame", shape=(S,), chunks=ids_chunk, dtype=np.int64, fill_value=-1)

    group = create_or_resume_scene_store(out, attrs, identity, "voxel", overwrite, create_arrays)
    done = int(group.attrs.get("scenes_written", 0))
    if done >= S:
        log(f"{out}: all {S} scenes already written")
        return EncodeResult(out, S, 0, time.perf_counter() - start_time)
    if done:
        log(f"{out}: resuming after {done}/{S} scenes")

    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(data, range(done, S)), batch_size=batch_size,
                                         shuffle=False, collate_fn=collate_windows)
    model = model.to(device).eval()
    bar = tqdm(total=S, initial=done, desc="encode-voxels", unit="scene", disable=not progress)
    i = done
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(device)
            field = model.encode(batch.images, batch.cameras())
            b = batch.batch_size
            group["density"][i:i + b] = field.density.float().cpu().numpy().astype(_DTYPES[dtype])
            group["features"][i:i + b] = field.features.float().cpu().numpy().astype(_DTYPES[dtype])
            group["bounds"][i:i + b] = field.bounds.float().cpu().numpy()
            for k, v in (("store_index", batch.store_index), ("episode", batch.episode), ("anchor_frame", batch.anchor)):
                group[k][i:i + b] = v.cpu().numpy()
            i += b
            group.attrs["scenes_written"] = i  # after the data: a crash never counts a scene it did not finish
            bar.update(b)
    bar.close()
    return EncodeResult(out, S, S - done, time.perf_counter() - start_time)
