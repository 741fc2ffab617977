"""Encoded scenes on disk: a zarr v3 store of `VoxelField` s, the training data of stages 2-3.

Layout (one store per `nfldm encode-voxels` run, written by `nfldm_training.encoding.voxels`)::

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

* `create_voxel_arrays` — the arrays of a new store (the layout above);
* `VoxelStore` / `open_voxel_store` — read access.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_training.stores.scene_store import SceneStore

__all__ = ["VOXEL_STORE_FORMAT", "VOXEL_STORE_VERSION", "VOXEL_DTYPES", "VOXEL_CONVENTIONS", "create_voxel_arrays",
           "VoxelStore", "open_voxel_store"]

VOXEL_STORE_FORMAT = "nfldm.voxel_store"
VOXEL_STORE_VERSION = 1
#: The storage dtypes of the grids (``density``, ``features``), by the name the ``dtype`` root attr records.
VOXEL_DTYPES = {"float16": np.float16, "float32": np.float32}
#: The ``conventions`` root attr: frames, axes and units of the arrays.
VOXEL_CONVENTIONS = ("scene frame = ego frame at the window's anchor frame (x forward, y left, z up, metres); "
                     "grids [S,C?,Z,Y,X]; bounds [S,2,3] = (x,y,z) min and max, metres; voxel centres at min + (i+0.5)*size")


def create_voxel_arrays(group, num_scenes: int, grid_shape: tuple[int, int, int], feature_channels: int,
                        dtype: str) -> None:
    """Create the arrays of a voxel store of `num_scenes` scenes in the zarr group `group` (layout: module docstring).

    Args:
        group: a writable ``zarr.Group`` (new, empty).
        num_scenes: S.
        grid_shape: ``(Z, Y, X)`` voxels.
        feature_channels: C.
        dtype: a key of `VOXEL_DTYPES`, the grids' storage dtype.
    """
    S, (Z, Y, X), C = num_scenes, grid_shape, feature_channels
    npd = VOXEL_DTYPES[dtype]
    group.create_array("density", shape=(S, Z, Y, X), chunks=(1, Z, Y, X), dtype=npd, fill_value=0)
    group.create_array("features", shape=(S, C, Z, Y, X), chunks=(1, C, Z, Y, X), dtype=npd, fill_value=0)
    group.create_array("bounds", shape=(S, 2, 3), chunks=(1, 2, 3), dtype=np.float32, fill_value=0)
    ids_chunk = (min(S, 65536),)
    group.create_array("store_index", shape=(S,), chunks=ids_chunk, dtype=np.int32, fill_value=-1)
    group.create_array("episode", shape=(S,), chunks=ids_chunk, dtype=np.int32, fill_value=-1)
    group.create_array("anchor_frame", shape=(S,), chunks=ids_chunk, dtype=np.int64, fill_value=-1)


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
