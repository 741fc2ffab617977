"""``nfldm encode-latents``: every scene of a voxel store (`nfldm_training.stores.voxel_store`), encoded by a
`LatentAutoEncoder` into a latent store (`nfldm_training.stores.latent_store`, the training data of stage 3),
resumably, with the latent normalisation statistics over all of them.

* `encode_latents` — the job; it computes the statistics as it goes (`LatentStatsAccumulator`) and writes them into
  the store and the model's ``config.json`` (`write_latent_stats`);
* `EncodeLatentsResult` — what it did.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from nfldm_sdk.models.latent_ae import LatentStats
from nfldm_sdk.persistence import class_path, config_to_dict, nfldm_version
from nfldm_training.errors import TrainingError, TrainingInputNotFound
from nfldm_training.stores.latent_store import (LATENT_CONVENTIONS, LATENT_STORE_FORMAT, LATENT_STORE_VERSION,
                                                create_latent_arrays)
from nfldm_training.stores.scene_store import create_or_resume_scene_store, weights_sha256
from nfldm_training.stores.voxel_store import VoxelStore

__all__ = ["LatentStatsAccumulator", "EncodeLatentsResult", "write_latent_stats", "encode_latents"]


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

    def stats(self) -> LatentStats:
        """The `LatentStats` of everything added so far."""
        if self.num_scenes == 0:
            raise TrainingError("no latents were added: cannot compute statistics of an empty data set")
        out = {}
        for key, (n, mean, m2) in self._state.items():
            out[key] = (mean.tolist(), np.sqrt(m2 / n).tolist())
        return LatentStats(g_mean=float(out["g"][0][0]), g_std=float(out["g"][1][0]), c_mean=tuple(out["c"][0]),
                           c_std=tuple(out["c"][1]), f_mean=tuple(out["f"][0]), f_std=tuple(out["f"][1]),
                           num_scenes=self.num_scenes)


@dataclass
class EncodeLatentsResult:
    """Outcome of `encode_latents`: store path, scenes in total, scenes encoded by this call, the statistics,
    the model config updated with them (or None), seconds."""

    path: str
    scenes: int
    written_now: int
    stats: LatentStats
    model_config_path: Path | None
    seconds: float


def write_latent_stats(model_dir: str | Path, stats: LatentStats) -> Path:
    """Set ``latent_stats`` in ``model_dir/config.json`` (weights untouched; written atomically). Returns the path."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise TrainingInputNotFound(f"{path} not found: {model_dir} is not a saved LatentAutoEncoder folder")
    data = json.loads(path.read_text())
    data["latent_stats"] = dataclasses.asdict(stats)
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
             "conventions": LATENT_CONVENTIONS, "scenes_planned": S}
    identity = ("model", "voxels", "scenes_planned")
    out = str(out)

    def create_arrays(group) -> None:
        create_latent_arrays(group, vs.ids(), cfg.g_shape, cfg.c_shape, cfg.f_shape)

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
