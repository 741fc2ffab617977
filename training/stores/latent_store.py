"""The latent store: every scene's latents (g, c, f) written by ``nfldm encode-latents``
(`nfldm_training.encoding.latents`), the training data of stage 3 (hierarchical latent diffusion), with the latent
normalisation statistics over all of them.

* `create_latent_arrays` — the arrays of a new store (the layout in `LatentStore`'s docstring);
* `LatentStore` — read access (the frame is `nfldm_training.stores.scene_store`'s).
"""
from __future__ import annotations

import numpy as np
import torch

from nfldm_sdk.models.latent_ae import Latents, LatentStats
from nfldm_sdk.persistence import config_from_dict
from nfldm_training.errors import TrainingError
from nfldm_training.stores.scene_store import SCENE_IDS, SceneStore

__all__ = ["LATENT_STORE_FORMAT", "LATENT_STORE_VERSION", "LATENT_CONVENTIONS", "create_latent_arrays", "LatentStore"]

LATENT_STORE_FORMAT = "nfldm.latent_store"
LATENT_STORE_VERSION = 2  # 2: the conditioning arrays bev and trajectory (version 1 stores load without them)
#: The ``conventions`` root attr: shapes, frames and meaning of the arrays.
LATENT_CONVENTIONS = ("g [S,g_dim]; c [S,4,Zc,Yc,Xc] (Zc vertical, scene frame x forward y left z up); "
                      "f [S,4,Y,X] bird's-eye view over the voxel box's (y, x); c and f are codebook vectors "
                      "(quantised), g the posterior mean; un-normalised: normalise with latent_stats; "
                      "bev [S,Y,X] uint8 CARLA tags of the captured window (255 unobserved), row y col x of the voxel grid; "
                      "trajectory [S,K,3] float32 ego (x, y, yaw) of the window's frames in the scene frame, metres, radians")


def create_latent_arrays(group, ids: np.ndarray, g_shape: tuple[int, ...], c_shape: tuple[int, ...],
                         f_shape: tuple[int, ...], bev_yx: tuple[int, int] | None = None,
                         trajectory_frames: int | None = None) -> None:
    """Create the arrays of a latent store in the zarr group `group` and write its scene ids (layout: `LatentStore`).

    Args:
        group: a writable ``zarr.Group`` (new, empty).
        ids: ``[S, 3]`` integer rows ``(store_index, episode, anchor_frame)`` of the S scenes (`SceneStore.ids` of
            the voxel store they are encoded from).
        g_shape, c_shape, f_shape: one scene's latent shapes (``LatentAEConfig.g_shape`` etc.).
        bev_yx: ``(Y, X)`` of the ``bev`` array (None: no conditioning arrays).
        trajectory_frames: K of the ``trajectory`` array (None: none).
    """
    S = len(ids)
    group.create_array("g", shape=(S, *g_shape), chunks=(min(S, 4096), *g_shape), dtype=np.float32, fill_value=0)
    group.create_array("c", shape=(S, *c_shape), chunks=(1, *c_shape), dtype=np.float32, fill_value=0)
    group.create_array("f", shape=(S, *f_shape), chunks=(1, *f_shape), dtype=np.float32, fill_value=0)
    if bev_yx is not None:
        group.create_array("bev", shape=(S, *bev_yx), chunks=(min(S, 256), *bev_yx), dtype=np.uint8, fill_value=255)
    if trajectory_frames is not None:
        K = int(trajectory_frames)
        group.create_array("trajectory", shape=(S, K, 3), chunks=(min(S, 4096), K, 3), dtype=np.float32, fill_value=0)
    for j, (k, dt) in enumerate(zip(SCENE_IDS, (np.int32, np.int32, np.int64))):
        group.create_array(k, shape=(S,), chunks=(S,), dtype=dt, fill_value=-1)
        group[k][:] = ids[:, j].astype(dt)


class LatentStore(SceneStore):
    """Read access to a latent store written by `encode_latents`. ``len(store)`` = scenes written.

    Layout::

        <latents>.zarr/     root attrs: format, format_version, nfldm_version, model (class, config, weights_sha256),
                            voxels (source voxel store), source_stores, window, stride, cameras, image_size,
                            conventions, scenes_planned, scenes_written, latent_stats (after the last scene)
          g            [S, g_dim]            float32   posterior mean of g
          c            [S, 4, Zc, Yc, Xc]    float32   quantised coarse latent (codebook vectors)
          f            [S, 4, Y, X]          float32   quantised fine latent (codebook vectors)
          bev          [S, Y, X]             uint8     BEV map of the scene's captured window (`window_bev`; v2+)
          trajectory   [S, K, 3]             float32   ego (x, y, yaw) of the window's K frames, scene frame (v2+)
          store_index  [S] int32, episode [S] int32, anchor_frame [S] int64   as in the voxel store
    """

    FORMAT, VERSION, KIND, COMMAND = LATENT_STORE_FORMAT, LATENT_STORE_VERSION, "latent", "encode-latents"

    @property
    def stats(self) -> LatentStats:
        """The `LatentStats` over all scenes (raises if the store is incomplete)."""
        raw = self.attrs.get("latent_stats")
        if raw is None:
            raise TrainingError(f"{self.path} has no latent_stats: it is incomplete, rerun `nfldm encode-latents` to finish it")
        return config_from_dict(LatentStats, raw)

    @property
    def has_conditioning(self) -> bool:
        """Whether the store holds the conditioning arrays ``bev`` and ``trajectory`` (format version 2+)."""
        return "bev" in self.group and "trajectory" in self.group

    def require_conditioning(self) -> None:
        """Raise `TrainingError` unless the store has ``bev`` and ``trajectory`` (naming the fix)."""
        if not self.has_conditioning:
            raise TrainingError(f"latent store {self.path} has no bev/trajectory arrays (format version "
                                f"{self.attrs.get('format_version')}): conditional training (bev_condition, "
                                "trajectory_in_g) needs them; re-run `nfldm encode-latents --overwrite` with this nfldm "
                                "(its capture stores must be readable)")

    def latents(self, start: int = 0, stop: int | None = None) -> Latents:
        """Scenes ``start:stop`` as `Latents` (float32 tensors)."""
        start, stop = self.scene_range(start, stop)
        t = lambda k: torch.from_numpy(np.asarray(self.group[k][start:stop], dtype=np.float32))  # noqa: E731
        return Latents(g=t("g"), c=t("c"), f=t("f"))
