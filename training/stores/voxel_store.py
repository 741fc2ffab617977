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
the model and the data are the same first). Only the first ``scenes_written`` scenes are valid.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.persistence import class_path, config_to_dict, nfldm_version
from nfldm_training.errors import TrainingError, TrainingInputNotFound

VOXEL_STORE_FORMAT = "nfldm.voxel_store"
VOXEL_STORE_VERSION = 1
_DTYPES = {"float16": np.float16, "float32": np.float32}
_CONVENTIONS = ("scene frame = ego frame at the window's anchor frame (x forward, y left, z up, metres); "
                "grids [S,C?,Z,Y,X]; bounds [S,2,3] = (x,y,z) min and max, metres; voxel centres at min + (i+0.5)*size")


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state dict (keys in sorted order, raw little-endian bytes), to tell models apart."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        v = v.detach().to("cpu")
        h.update((v.float() if v.dtype == torch.bfloat16 else v).contiguous().numpy().tobytes())  # numpy has no bf16
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ scene stores
# The voxel store and the latent store (training/data/latent_scenes.py) share the same frame: a zarr v3 group of per-scene
# arrays with root attrs ``format, format_version, scenes_planned, scenes_written``, written in order and resumable.
def open_scene_store(path: str | Path, fmt: str, version: int, kind: str, command: str):
    """Open a scene store for reading (a read-only ``zarr.Group``) after checking its format attrs.

    Args:
        path: the store.
        fmt, version: the expected ``format`` attr and the newest ``format_version`` this nfldm reads.
        kind: the store's name in messages ("voxel", "latent").
        command: the nfldm command that writes it ("encode-voxels"), named in the error for a missing store.
    """
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r", zarr_format=3)
    except FileNotFoundError as e:
        raise TrainingInputNotFound(f"no {kind} store at {path}: write one with `nfldm {command} --out {path}`") from e
    attrs = dict(group.attrs)
    if attrs.get("format") != fmt:
        raise TrainingError(f"{path} is not a {kind} store (format {attrs.get('format')!r}, expected {fmt!r})")
    if int(attrs.get("format_version", -1)) > version:
        raise TrainingError(f"{path} is {kind}-store format {attrs['format_version']}; this nfldm reads up to "
                            f"{version}: upgrade nfldm")
    return group


def create_or_resume_scene_store(out: str, attrs: dict, identity: Sequence[str], kind: str, overwrite: bool,
                                 create_arrays: Callable[[Any], None]):
    """Open the scene store `out` for writing (a ``zarr.Group``, mode r+ or w): continue an existing one, or create it.

    An existing store (unless `overwrite`, which deletes it first) must have ``attrs["format"]`` and the same
    values of the `identity` attrs as `attrs` (compared as JSON), else this raises; writing continues after its
    ``scenes_written`` scenes. A new store gets its arrays from ``create_arrays(group)``, then `attrs` with
    ``scenes_written = 0``.
    """
    import zarr

    exists = Path(out).exists()
    if exists and overwrite:
        shutil.rmtree(out)
        exists = False
    if exists:
        group = zarr.open_group(out, mode="r+", zarr_format=3)
        old = dict(group.attrs)
        if old.get("format") != attrs["format"]:
            raise TrainingError(f"{out} exists and is not a {kind} store: choose another --out or pass --overwrite")
        differs = [k for k in identity if json.loads(json.dumps(old.get(k))) != json.loads(json.dumps(attrs[k]))]
        if differs:
            raise TrainingError(f"{out} was started with a different {', '.join(differs)}: pass --overwrite to replace it "
                                "or choose another --out")
        return group
    group = zarr.open_group(out, mode="w", zarr_format=3)
    create_arrays(group)
    group.attrs.update({**attrs, "scenes_written": 0})
    return group


class VoxelStore:
    """Read access to a voxel store (see the module docstring). ``len(store)`` = scenes written."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.group = open_scene_store(path, VOXEL_STORE_FORMAT, VOXEL_STORE_VERSION, "voxel", "encode-voxels")
        self.attrs = dict(self.group.attrs)

    def __len__(self) -> int:
        return int(self.attrs.get("scenes_written", 0))

    @property
    def source_stores(self) -> list[str]:
        return list(self.attrs["source_stores"])

    @property
    def model_config(self) -> dict:
        return dict(self.attrs["model"]["config"])

    def ids(self) -> np.ndarray:
        """``[S, 3]`` int64 rows ``(store_index, episode, anchor_frame)`` of the written scenes."""
        n = len(self)
        return np.stack([np.asarray(self.group[k][:n], dtype=np.int64) for k in ("store_index", "episode", "anchor_frame")], 1)

    def fields(self, start: int = 0, stop: int | None = None, dtype: torch.dtype = torch.float32) -> VoxelField:
        """Scenes ``start:stop`` as one batched `VoxelField` (cast to `dtype`)."""
        n = len(self)
        stop = n if stop is None else min(int(stop), n)
        if not 0 <= start < stop:
            raise IndexError(f"scenes {start}:{stop} out of range: {self.path} has {n} scene(s) written")
        t = lambda k: torch.from_numpy(np.asarray(self.group[k][start:stop])).to(dtype)  # noqa: E731
        return VoxelField(t("density"), t("features"), t("bounds"))

    def field(self, i: int, dtype: torch.dtype = torch.float32) -> VoxelField:
        """Scene `i` as an unbatched `VoxelField`."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"scene {i} out of range: {self.path} has {n} scene(s) written")
        i %= n
        return self.fields(i, i + 1, dtype)[0]

    def __repr__(self) -> str:
        return f"VoxelStore({self.path!r}, {len(self)}/{self.attrs.get('scenes_planned')} scenes)"


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
    from nfldm_training.data.capture_windows import SceneWindowDataset, collate_windows

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

    from tqdm.auto import tqdm

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
