"""``nfldm encode-voxels``: every scene window of the capture stores, encoded by the stage-1 model into a voxel
store (`nfldm_training.stores.voxel_store`, the training data of stages 2-3), resumably.

* `encode_voxels` — the job (windows of `nfldm_training.data.capture_windows.SceneWindowDataset`, in dataset order);
* `EncodeResult` — what it did.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from nfldm_sdk.persistence import class_path, config_to_dict, nfldm_version
from nfldm_training.data.capture_windows import SceneWindowDataset, collate_windows
from nfldm_training.errors import TrainingError
from nfldm_training.stores.scene_store import create_or_resume_scene_store, weights_sha256
from nfldm_training.stores.voxel_store import (VOXEL_CONVENTIONS, VOXEL_DTYPES, VOXEL_STORE_FORMAT, VOXEL_STORE_VERSION,
                                               create_voxel_arrays)

__all__ = ["EncodeResult", "encode_voxels"]


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
    if dtype not in VOXEL_DTYPES:
        raise TrainingError(f"dtype must be one of {sorted(VOXEL_DTYPES)}, got {dtype!r}")
    start_time = time.perf_counter()
    cfg = model.config
    data = SceneWindowDataset(list(stores), window, cameras, cfg.image_size, split="all", stride=stride)
    S = len(data)
    if S == 0:
        raise TrainingError(f"no windows of {window} frames in {list(stores)}: use a smaller --window")
    attrs = {
        "format": VOXEL_STORE_FORMAT, "format_version": VOXEL_STORE_VERSION, "nfldm_version": nfldm_version(),
        "model": {"class": class_path(type(model)), "config": config_to_dict(cfg), "weights_sha256": weights_sha256(model)},
        "source_stores": [str(s) for s in stores], "window": int(window), "stride": int(stride),
        "cameras": list(data.camera_names), "image_size": list(cfg.image_size),
        "anchor": "middle frame of the window: start + (window - 1) // 2", "dtype": dtype,
        "conventions": VOXEL_CONVENTIONS, "scenes_planned": S,
    }
    identity = ("model", "source_stores", "window", "stride", "cameras", "image_size", "dtype", "scenes_planned")
    out = str(out)

    def create_arrays(group) -> None:
        create_voxel_arrays(group, S, cfg.grid_shape, cfg.feature_channels, dtype)

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
            group["density"][i:i + b] = field.density.float().cpu().numpy().astype(VOXEL_DTYPES[dtype])
            group["features"][i:i + b] = field.features.float().cpu().numpy().astype(VOXEL_DTYPES[dtype])
            group["bounds"][i:i + b] = field.bounds.float().cpu().numpy()
            for k, v in (("store_index", batch.store_index), ("episode", batch.episode), ("anchor_frame", batch.anchor)):
                group[k][i:i + b] = v.cpu().numpy()
            i += b
            group.attrs["scenes_written"] = i  # after the data: a crash never counts a scene it did not finish
            bar.update(b)
    bar.close()
    return EncodeResult(out, S, S - done, time.perf_counter() - start_time)
