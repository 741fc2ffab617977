"""``nfldm encode-latents``: every scene of a voxel store (`nfldm_training.stores.voxel_store`), encoded by a
`LatentAutoEncoder` into a latent store (`nfldm_training.stores.latent_store`, the training data of stage 3),
resumably, with the latent normalisation statistics over all of them.

* `encode_latents` — the job; it computes the statistics as it goes (`LatentStatsAccumulator`) and writes them into
  the store and the model's ``config.json`` (`write_latent_stats`);
* `EncodeLatentsResult` — what it did;
* `WindowConditioning` — the conditioning data of each scene, read back from its capture window: the BEV map
  (`nfldm_training.data.capture_bev.window_bev` of the window at the capture's own image size, over the scene's voxel
  box and grid) and the ego trajectory (``ego_to_world`` of each of the window's K frames mapped into the anchor's
  frame, as ``(x, y, yaw)``: metres, radians). The trajectory is exactly the window's frames (K = the voxel store's
  ``window``; 3 for the default presets), never extended past the window.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sim_bridge
import torch
from tqdm.auto import tqdm

from nfldm_sdk.labels.classes import DEFAULT_CLASSES
from nfldm_sdk.models.latent_ae import LatentStats
from nfldm_sdk.persistence import class_path, config_to_dict, nfldm_version
from nfldm_training.data.capture_bev import window_bev
from nfldm_training.data.capture_windows import SceneWindowDataset
from nfldm_training.errors import TrainingError, TrainingInputNotFound
from nfldm_training.stores.latent_store import (LATENT_CONVENTIONS, LATENT_STORE_FORMAT, LATENT_STORE_VERSION,
                                                create_latent_arrays)
from nfldm_training.stores.scene_store import create_or_resume_scene_store, weights_sha256
from nfldm_training.stores.voxel_store import VoxelStore

__all__ = ["LatentStatsAccumulator", "EncodeLatentsResult", "WindowConditioning", "write_latent_stats", "encode_latents"]


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


class WindowConditioning:
    """The BEV map and ego trajectory of each scene of a voxel store, from its capture window (module docstring).

    Args:
        vs: the voxel store; its ``source_stores``, ``window``, ``stride`` and ``cameras`` attrs name the windows.
    Raises:
        `TrainingError` when a capture store cannot be opened or a scene's window is not in it.
    """

    def __init__(self, vs: VoxelStore):
        self.vs = vs
        a = vs.attrs
        self.window = int(a["window"])
        try:
            rig = sim_bridge.open_store(vs.source_stores[0]).rig
            self.data = SceneWindowDataset(vs.source_stores, self.window, a.get("cameras"), (rig.height, rig.width),
                                           split="all", stride=int(a.get("stride", 1)))
        except Exception as e:  # any failure to read the captures has the same fix
            raise TrainingError(f"encode-latents writes each scene's BEV map and trajectory from its capture window, and "
                                f"the capture stores of {vs.path} ({vs.source_stores}) could not be read ({e}): make them "
                                "readable at those paths") from e
        self.index = {(r.store_index, r.episode, r.start + self.data.anchor_offset): i for i, r in enumerate(self.data.refs)}
        self.grid_yx = tuple(int(v) for v in vs.group["density"].shape[2:4])

    def scene(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Scene `i`'s ``(bev [Y, X] uint8, trajectory [K, 3] float32)``."""
        si, ep, anchor = (int(v) for v in self.vs.ids()[i])
        j = self.index.get((si, ep, anchor))
        if j is None:
            raise TrainingError(f"scene {i} of {self.vs.path} (store {si}, episode {ep}, anchor {anchor}) is not a window "
                                "of its capture stores: were they re-collected? Re-run `nfldm encode-voxels`")
        w = self.data[j]
        bounds = torch.from_numpy(np.asarray(self.vs.group["bounds"][i], dtype=np.float64))
        bev = window_bev(w, bounds, self.grid_yx, DEFAULT_CLASSES).numpy().astype(np.uint8)
        e2w = np.asarray(self.data.episode(self.data.refs[j]).ego_to_world, dtype=np.float64)
        start = anchor - self.data.anchor_offset
        rel = np.linalg.inv(e2w[anchor]) @ e2w[start:start + self.window]                  # [K, 4, 4] ego_t -> scene
        traj = np.stack([rel[:, 0, 3], rel[:, 1, 3], np.arctan2(rel[:, 1, 0], rel[:, 0, 0])], 1)
        return bev, traj.astype(np.float32)


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
                   progress: bool = True, log=print, conditioning: bool = True) -> EncodeLatentsResult:
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
        conditioning: also write each scene's ``bev`` and ``trajectory`` (`WindowConditioning`; needs the voxel
            store's capture stores); False writes a store for unconditional training only.
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
    attrs["conditioning"] = bool(conditioning)
    identity = ("model", "voxels", "scenes_planned", "format_version", "conditioning")
    out = str(out)
    cond = WindowConditioning(vs) if conditioning else None

    def create_arrays(group) -> None:
        create_latent_arrays(group, vs.ids(), cfg.g_shape, cfg.c_shape, cfg.f_shape,
                             cond.grid_yx if cond else None, cond.window if cond else None)

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
            if cond is not None:
                bev, traj = zip(*(cond.scene(k) for k in range(i, j)))
                group["bev"][i:j] = np.stack(bev)
                group["trajectory"][i:j] = np.stack(traj)
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
