"""The frame shared by the training's scene stores (`nfldm_training.stores.voxel_store`,
`nfldm_training.stores.latent_store`).

A scene store is a zarr v3 group of per-scene arrays (first axis S, one scene per encoded window) with the scene ids
``store_index [S] int32``, ``episode [S] int32``, ``anchor_frame [S] int64`` and the root attrs ``format,
format_version, scenes_planned, scenes_written``. Scenes are written in order, a batch at a time, and
``scenes_written`` is updated after each batch's data, so a crash loses at most the batch in flight and a rerun
continues after the last complete batch. Only the first ``scenes_written`` scenes are valid.

* `open_scene_store` / `SceneStore` — read access after a format check;
* `create_or_resume_scene_store` — write access: continue a store started with the same identity, or create one;
* `weights_sha256` — the fingerprint of the model a store records, so a resume (and stage 2) can tell models apart.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import zarr

from nfldm_training.errors import TrainingError, TrainingInputNotFound

__all__ = ["SCENE_IDS", "SceneStore", "open_scene_store", "create_or_resume_scene_store", "weights_sha256"]

#: The per-scene id arrays of every scene store, in the column order of `SceneStore.ids`.
SCENE_IDS = ("store_index", "episode", "anchor_frame")


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of a model's state dict (keys in sorted order, raw little-endian bytes), to tell models apart."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        v = v.detach().to("cpu")
        h.update((v.float() if v.dtype == torch.bfloat16 else v).contiguous().numpy().tobytes())  # numpy has no bf16
    return h.hexdigest()


def open_scene_store(path: str | Path, fmt: str, version: int, kind: str, command: str):
    """Open a scene store for reading (a read-only ``zarr.Group``) after checking its format attrs.

    Args:
        path: the store.
        fmt, version: the expected ``format`` attr and the newest ``format_version`` this nfldm reads.
        kind: the store's name in messages ("voxel", "latent").
        command: the nfldm command that writes it ("encode-voxels"), named in the error for a missing store.
    """
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


class SceneStore:
    """Read access to a scene store (module docstring). ``len(store)`` = scenes written.

    Subclasses name their format: `FORMAT` and `VERSION` (the newest ``format_version`` read), `KIND` (the store's
    name in messages) and `COMMAND` (the nfldm command that writes it).

    Attributes:
        path: the store's path or URL.
        group: the read-only ``zarr.Group``.
        attrs: its root attrs (a dict, read once at open).
    """

    FORMAT: str = ""
    VERSION: int = 0
    KIND: str = ""
    COMMAND: str = ""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.group = open_scene_store(path, self.FORMAT, self.VERSION, self.KIND, self.COMMAND)
        self.attrs = dict(self.group.attrs)

    def __len__(self) -> int:
        return int(self.attrs.get("scenes_written", 0))

    def ids(self) -> np.ndarray:
        """``[S, 3]`` int64 rows ``(store_index, episode, anchor_frame)`` of the written scenes."""
        n = len(self)
        return np.stack([np.asarray(self.group[k][:n], dtype=np.int64) for k in SCENE_IDS], 1)

    def scene_range(self, start: int, stop: int | None) -> tuple[int, int]:
        """``(start, stop)`` of a read of scenes ``start:stop`` (`stop` None or past the end: the written scenes'
        end). Raises `IndexError` for an empty or out-of-range read."""
        n = len(self)
        stop = n if stop is None else min(int(stop), n)
        if not 0 <= start < stop:
            raise IndexError(f"scenes {start}:{stop} out of range: {self.path} has {n} scene(s) written")
        return start, stop

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, {len(self)}/{self.attrs.get('scenes_planned')} scenes)"
