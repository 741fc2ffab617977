"""Sensor results: `Frame` (one camera at one tick, host numpy arrays, the devkit-style unit of sensor data) and
`FrameBatch` (all cameras × ticks of a render as ``[T, N, ...]`` tensors on the render device).

Conventions (`nfldm_sdk.sensors`): RGB uint8; depth planar z in metres, float32, ``inf`` where nothing was hit
(valid = ``isfinite``); ``range`` the ray length from the camera centre (metres), only on request; alpha the
accumulated opacity in [0, 1]; semantic labels uint8 CARLA tags (sky = 11 exactly where depth is ``inf``) with their
confidence float32, or None when the decoder has no semantic head; poses float64 ``[4, 4]``: ``ego_to_world`` (ego
frame -> scene frame), ``cam_to_ego`` (OpenCV camera -> ego frame) and ``cam_to_world = ego_to_world @ cam_to_ego``
(computed once from the two and stored, so the product of the stored matrices is bitwise the stored pose).

Metadata (what a dataset sample carries; `Frame.metadata`, `FrameBatch.metadata`, ``frames.json`` of
`nfldm_sdk.viz.export.write_frames`): the keys of `FRAME_METADATA_KEYS` — frame index, timestamp (seconds) and
``timestamp_us`` (integer microseconds, ``round(timestamp · 1e6)``), camera name, scene id, seed, bundle hash, image
``width``/``height``, ``K``, ``camera_model`` and ``distortion`` (`nfldm_sdk.cameras.projection`), the three poses,
``hit_alpha`` and what the depth, alpha (opacity), semantic and confidence images hold.

Scene id (`scene_identifier`): a scene is identified by what regenerates it — its seed and the bundle that sampled it
(``NeuralScene.seed``, ``NeuralScene.bundle_hash``) — not by where it was saved (a `NeuralScene` does not know its
folder, and one scene may be saved in many): ``"<bundle_hash[:12]>-scene_<seed:06d>"``, where ``scene_<seed:06d>`` is
the folder `nfldm generate` writes it to, plus ``"-refined<k>"`` after ``k`` SDS refinements (a refined scene is a
different scene of the same seed). A scene object with a non-empty ``scene_id`` attribute keeps its own; a bare
`VoxelField` (no seed) has ``""``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from nfldm_sdk.rendering.api import HIT_ALPHA
from nfldm_sdk.sensors.views import SceneImages

__all__ = ["Frame", "FrameBatch", "FRAME_METADATA_KEYS", "compose_poses", "scene_identifier", "scene_id_of",
           "timestamp_us"]

#: Keys of `Frame.metadata` (and of each entry of ``frames.json``, which adds the image paths), in order.
FRAME_METADATA_KEYS = ("frame", "timestamp", "timestamp_us", "camera", "scene_id", "seed", "bundle_hash", "width",
                       "height", "K", "camera_model", "distortion", "cam_to_world", "ego_to_world", "cam_to_ego",
                       "hit_alpha", "depth", "alpha", "semantic", "semantic_confidence")


def _host(x: torch.Tensor | None) -> np.ndarray | None:
    return None if x is None else x.detach().cpu().numpy()


def timestamp_us(seconds: float) -> int:
    """A timestamp in seconds as integer microseconds (``round(seconds · 1e6)``, the unit of exported samples)."""
    return int(round(float(seconds) * 1_000_000))


def scene_identifier(seed: int | None, bundle_hash: str = "", refinements: int = 0) -> str:
    """The scene id of a scene of `seed` sampled by bundle `bundle_hash` after `refinements` SDS refinements (module
    docstring): ``"<bundle_hash[:12]>-scene_<seed:06d>[-refined<k>]"``; ``"scene_<seed:06d>…"`` without a bundle
    hash; ``""`` when the seed is unknown."""
    if seed is None:
        return ""
    out = f"scene_{int(seed):06d}"
    if bundle_hash:
        out = f"{str(bundle_hash)[:12]}-{out}"
    if refinements:
        out += f"-refined{int(refinements)}"
    return out


def scene_id_of(scene) -> str:
    """The scene id of a `NeuralScene`-like object (duck-typed: its own non-empty ``scene_id``, else
    `scene_identifier` of ``seed``, ``bundle_hash`` and the number of ``refinements``); ``""`` for a bare field."""
    own = getattr(scene, "scene_id", None)
    if isinstance(own, str) and own:
        return own
    return scene_identifier(getattr(scene, "seed", None), str(getattr(scene, "bundle_hash", "") or ""),
                            len(getattr(scene, "refinements", ()) or ()))


def compose_poses(ego_to_world: np.ndarray, cam_to_ego: np.ndarray) -> np.ndarray:
    """``cam_to_world [T, N, 4, 4]`` float64 of ego poses ``ego_to_world [T, 4, 4]`` and mounts ``cam_to_ego
    [N, 4, 4]`` (or ``[T, N, 4, 4]``): ``ego_to_world[t] @ cam_to_ego[(t,) n]``, each one 2-D product, so that a
    consumer recomputing ``frame.ego_to_world @ frame.cam_to_ego`` gets the stored pose bitwise."""
    e2w = np.asarray(ego_to_world, dtype=np.float64).reshape(-1, 4, 4)
    c2e = np.asarray(cam_to_ego, dtype=np.float64)
    c2e = np.broadcast_to(c2e, (len(e2w),) + c2e.shape) if c2e.ndim == 3 else c2e
    if c2e.ndim != 4 or c2e.shape[0] != len(e2w) or c2e.shape[2:] != (4, 4):
        raise ValueError(f"cam_to_ego must be [N,4,4] or [T,N,4,4] for {len(e2w)} ego poses, got {c2e.shape}")
    out = np.empty(c2e.shape, dtype=np.float64)
    for t in range(len(e2w)):
        for n in range(c2e.shape[1]):
            out[t, n] = e2w[t] @ c2e[t, n]
    return out


def _poses(cam_to_world, ego_to_world, cam_to_ego, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 ``[4, 4]`` ``(cam_to_world, ego_to_world, cam_to_ego)`` of one camera; without an ego pose the ego is the scene frame
    (``ego_to_world = I``, ``cam_to_ego = cam_to_world``, so the product stays exact)."""
    c2w = np.array(cam_to_world, dtype=np.float64)
    if ego_to_world is None and cam_to_ego is None:
        return c2w, np.eye(4), c2w.copy()
    if ego_to_world is None or cam_to_ego is None:
        raise ValueError(f"{what} needs both ego_to_world and cam_to_ego (or neither: the ego is then the scene frame)")
    return c2w, np.array(ego_to_world, dtype=np.float64), np.array(cam_to_ego, dtype=np.float64)


def _metadata(*, frame, timestamp, camera, scene_id, seed, bundle_hash, width, height, K, camera_model, distortion,
              cam_to_world, ego_to_world, cam_to_ego, has_semantics) -> dict:
    """One camera image's JSON-ready metadata (`FRAME_METADATA_KEYS`)."""
    return {"frame": int(frame), "timestamp": float(timestamp), "timestamp_us": timestamp_us(timestamp),
            "camera": camera, "scene_id": scene_id, "seed": None if seed is None else int(seed),
            "bundle_hash": bundle_hash, "width": int(width), "height": int(height), "K": np.asarray(K).tolist(),
            "camera_model": camera_model, "distortion": np.asarray(distortion, dtype=np.float64).tolist(),
            "cam_to_world": np.asarray(cam_to_world).tolist(), "ego_to_world": np.asarray(ego_to_world).tolist(),
            "cam_to_ego": np.asarray(cam_to_ego).tolist(), "hit_alpha": HIT_ALPHA,
            "depth": "planar z, metres, float32, inf = no hit",
            "alpha": "accumulated opacity in [0, 1], float32; depth is inf where alpha < hit_alpha",
            "semantic": ("CARLA 0.9.14+ semantic tags, uint8 (sky = 11 where depth is inf)" if has_semantics
                         else None),
            "semantic_confidence": ("probability of the chosen class in [0, 1], float32" if has_semantics else None)}


@dataclass(eq=False)
class Frame:
    """One camera's image at one tick (host numpy arrays; the devkit-style unit of sensor data).

    Attributes:
        rgb: ``[H, W, 3]`` uint8 RGB.
        depth: ``[H, W]`` float32 planar z-depth, metres; ``inf`` where nothing was hit.
        alpha: ``[H, W]`` float32 accumulated opacity in [0, 1].
        timestamp: seconds (the trajectory's clock); `timestamp_us` the same in integer microseconds.
        frame: tick index along the trajectory (0-based).
        camera: camera name.
        K: ``[3, 3]`` float64 intrinsics, pixels (pixel centres at +0.5; (fx, fy, cx, cy) for every camera model).
        cam_to_world: ``[4, 4]`` float64, OpenCV camera -> scene frame; ``== ego_to_world @ cam_to_ego`` bitwise.
        seed: the scene's seed (None if unknown); bundle_hash: its model bundle ("" if unknown).
        range: ``[H, W]`` float32 ray length from the camera centre, metres (``inf`` for no hit), only when
            requested (``with_range=True``), else None.
        semantic: ``[H, W]`` uint8 CARLA semantic tags (`nfldm_sdk.labels.classes`; the representative tag of each
            class, sky = 11 exactly where depth is ``inf``), or None when the decoder has no semantic head.
        semantic_confidence: ``[H, W]`` float32 in [0, 1], the probability of the chosen class, or None.
        ego_to_world: ``[4, 4]`` float64, ego frame (x forward, y left, z up) -> scene frame at this tick (identity
            when the frame was rendered without an ego, e.g. `render_views`: the ego is then the scene frame).
        cam_to_ego: ``[4, 4]`` float64, OpenCV camera -> ego frame (the rig mount; for a camera fixed in the scene,
            its pose relative to the ego at this tick).
        camera_model: ``"pinhole"``, ``"equidistant"`` or ``"opencv_fisheye"`` (`nfldm_sdk.cameras.projection`).
        distortion: ``[4]`` float64 (k1, k2, k3, k4) of ``opencv_fisheye``, zeros otherwise.
        scene_id: the scene's identifier (`scene_identifier`; "" if unknown).
    Frames built without ``ego_to_world``/``cam_to_ego`` get identity / ``cam_to_world`` (give both or neither).
    """

    rgb: np.ndarray
    depth: np.ndarray
    alpha: np.ndarray
    timestamp: float
    frame: int
    camera: str
    K: np.ndarray
    cam_to_world: np.ndarray
    seed: int | None = None
    bundle_hash: str = ""
    range: np.ndarray | None = None
    semantic: np.ndarray | None = None
    semantic_confidence: np.ndarray | None = None
    ego_to_world: np.ndarray | None = None
    cam_to_ego: np.ndarray | None = None
    camera_model: str = "pinhole"
    distortion: np.ndarray | None = None
    scene_id: str = ""

    def __post_init__(self):
        self.cam_to_world, self.ego_to_world, self.cam_to_ego = _poses(self.cam_to_world, self.ego_to_world,
                                                                       self.cam_to_ego, "Frame")
        self.distortion = np.zeros(4) if self.distortion is None else np.array(self.distortion, dtype=np.float64)
        if self.distortion.shape != (4,):
            raise ValueError(f"Frame.distortion must be 4 coefficients (k1, k2, k3, k4), got {self.distortion.shape}")

    @classmethod
    def from_views(cls, views: SceneImages, i: int, *, timestamp: float, frame: int, camera: str, K: np.ndarray,
                   cam_to_world: np.ndarray, seed: int | None = None, bundle_hash: str = "",
                   ego_to_world: np.ndarray | None = None, cam_to_ego: np.ndarray | None = None,
                   camera_model: str = "pinhole", distortion: np.ndarray | None = None, scene_id: str = "") -> "Frame":
        """View `i` of rendered `views` (`SceneImages`, any device) as a host `Frame` with its metadata (`K`
        ``[3, 3]``, the ``[4, 4]`` poses and `distortion` ``[4]`` are copied as float64 arrays)."""
        def view(x: torch.Tensor | None) -> np.ndarray | None:
            return None if x is None else _host(x[i])

        return cls(rgb=_host(views.rgb[i]), depth=_host(views.depth[i]), alpha=_host(views.alpha[i]),
                   timestamp=float(timestamp), frame=int(frame), camera=camera, K=np.array(K, dtype=np.float64),
                   cam_to_world=cam_to_world, seed=seed, bundle_hash=bundle_hash, range=view(views.range),
                   semantic=view(views.semantic), semantic_confidence=view(views.semantic_confidence),
                   ego_to_world=ego_to_world, cam_to_ego=cam_to_ego, camera_model=str(camera_model),
                   distortion=distortion, scene_id=scene_id)

    @property
    def valid(self) -> np.ndarray:
        """``[H, W]`` bool: pixels that hit something (finite depth)."""
        return np.isfinite(self.depth)

    @property
    def has_semantics(self) -> bool:
        """Whether the frame carries labels (the decoder had a semantic head)."""
        return self.semantic is not None

    @property
    def height(self) -> int:
        """Image height, pixels."""
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        """Image width, pixels."""
        return int(self.rgb.shape[1])

    @property
    def timestamp_us(self) -> int:
        """The timestamp in integer microseconds (`timestamp_us`)."""
        return timestamp_us(self.timestamp)

    def metadata(self) -> dict:
        """JSON-ready metadata, everything but the images: a dict of `FRAME_METADATA_KEYS` (module docstring;
        matrices as nested lists, ``depth``/``alpha``/``semantic``/``semantic_confidence`` say what those images hold,
        ``semantic``/``semantic_confidence`` None without labels)."""
        return _metadata(frame=self.frame, timestamp=self.timestamp, camera=self.camera, scene_id=self.scene_id,
                         seed=self.seed, bundle_hash=self.bundle_hash, width=self.width, height=self.height, K=self.K,
                         camera_model=self.camera_model, distortion=self.distortion, cam_to_world=self.cam_to_world,
                         ego_to_world=self.ego_to_world, cam_to_ego=self.cam_to_ego, has_semantics=self.has_semantics)


@dataclass(eq=False)
class FrameBatch:
    """All cameras × ticks of a trajectory render, as tensors on the render device.

    Attributes:
        rgb: ``[T, N, H, W, 3]`` uint8.
        depth: ``[T, N, H, W]`` float32 planar metres, ``inf`` = no hit.
        alpha: ``[T, N, H, W]`` float32.
        range: ``[T, N, H, W]`` float32 ray length (metres), or None unless requested.
        semantic: ``[T, N, H, W]`` uint8 CARLA tags, semantic_confidence: ``[T, N, H, W]`` float32 (`Frame`), or None
            without a semantic head.
        timestamps: ``[T]`` float64 seconds; frames: ``[T]`` int64 tick indices.
        cameras: the N camera names; K: ``[N, 3, 3]`` float64; cam_to_world: ``[T, N, 4, 4]`` float64.
        seed, bundle_hash: the scene's provenance; scene_id: its identifier (`scene_identifier`).
        ego_to_world: ``[T, 4, 4]`` float64 ego poses (identity without an ego, e.g. `render_views`).
        cam_to_ego: ``[T, N, 4, 4]`` float64 mounts (``cam_to_world[t, n] == ego_to_world[t] @ cam_to_ego[t, n]``
            bitwise); camera_models: the N model names; distortion: ``[N, 4]`` float64 (zeros for pinhole cameras).
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    alpha: torch.Tensor
    timestamps: np.ndarray
    frames: np.ndarray
    cameras: list[str]
    K: np.ndarray
    cam_to_world: np.ndarray
    seed: int | None = None
    bundle_hash: str = ""
    range: torch.Tensor | None = None
    semantic: torch.Tensor | None = None
    semantic_confidence: torch.Tensor | None = None
    ego_to_world: np.ndarray | None = None
    cam_to_ego: np.ndarray | None = None
    camera_models: list[str] | None = None
    distortion: np.ndarray | None = None
    scene_id: str = ""

    def __post_init__(self):
        c2w = np.array(self.cam_to_world, dtype=np.float64)
        if self.ego_to_world is None and self.cam_to_ego is None:
            self.ego_to_world = np.broadcast_to(np.eye(4), (c2w.shape[0], 4, 4)).copy()
            self.cam_to_ego = c2w.copy()
        elif self.ego_to_world is None or self.cam_to_ego is None:
            raise ValueError("FrameBatch needs both ego_to_world and cam_to_ego (or neither: the ego is then the "
                             "scene frame)")
        else:
            self.ego_to_world = np.array(self.ego_to_world, dtype=np.float64)
            self.cam_to_ego = np.array(self.cam_to_ego, dtype=np.float64)
        self.cam_to_world = c2w
        N = len(self.cameras)
        self.camera_models = ["pinhole"] * N if self.camera_models is None else [str(m) for m in self.camera_models]
        self.distortion = (np.zeros((N, 4)) if self.distortion is None
                           else np.array(self.distortion, dtype=np.float64).reshape(N, 4))

    @classmethod
    def from_views(cls, views: SceneImages, T: int, N: int, **metadata) -> "FrameBatch":
        """Time-major flattened views ``[T·N, ...]`` (`SceneImages`) reshaped to ``[T, N, ...]``; `metadata` are the
        other fields (timestamps, frames, cameras, K, cam_to_world, seed, bundle_hash, ego_to_world, cam_to_ego,
        camera_models, distortion, scene_id)."""
        shape = lambda x: None if x is None else x.reshape(T, N, *x.shape[1:])  # noqa: E731
        return cls(rgb=shape(views.rgb), depth=shape(views.depth), alpha=shape(views.alpha), range=shape(views.range),
                   semantic=shape(views.semantic), semantic_confidence=shape(views.semantic_confidence), **metadata)

    @property
    def has_semantics(self) -> bool:
        """Whether the batch carries labels (the decoder had a semantic head)."""
        return self.semantic is not None

    @property
    def valid(self) -> torch.Tensor:
        """``[T, N, H, W]`` bool: finite depth."""
        return torch.isfinite(self.depth)

    @property
    def timestamps_us(self) -> np.ndarray:
        """``[T]`` int64 timestamps in microseconds (`timestamp_us`)."""
        return np.array([timestamp_us(t) for t in self.timestamps], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.timestamps)

    def _index(self, n: int | str) -> int:
        if isinstance(n, str):
            if n not in self.cameras:
                raise KeyError(f"no camera {n!r}; cameras are {self.cameras}")
            return self.cameras.index(n)
        return int(n)

    def frame(self, t: int, n: int | str) -> Frame:
        """Tick `t`, camera `n` (index or name) as a host `Frame`."""
        n = self._index(n)
        pick = lambda x: None if x is None else x[t]  # noqa: E731
        tick = SceneImages(self.rgb[t], self.depth[t], self.alpha[t], pick(self.range), pick(self.semantic),
                           pick(self.semantic_confidence))
        return Frame.from_views(tick, n, timestamp=self.timestamps[t], frame=self.frames[t], camera=self.cameras[n],
                                K=self.K[n], cam_to_world=self.cam_to_world[t, n], seed=self.seed,
                                bundle_hash=self.bundle_hash, ego_to_world=self.ego_to_world[t],
                                cam_to_ego=self.cam_to_ego[t, n], camera_model=self.camera_models[n],
                                distortion=self.distortion[n], scene_id=self.scene_id)

    def metadata(self) -> list[dict]:
        """`Frame.metadata` of every camera image, time-major (tick 0's N cameras first; the order of
        ``frames.json``), without copying any image to the host."""
        H, W = int(self.rgb.shape[2]), int(self.rgb.shape[3])
        return [_metadata(frame=self.frames[t], timestamp=self.timestamps[t], camera=self.cameras[n],
                          scene_id=self.scene_id, seed=self.seed, bundle_hash=self.bundle_hash, width=W, height=H,
                          K=self.K[n], camera_model=self.camera_models[n], distortion=self.distortion[n],
                          cam_to_world=self.cam_to_world[t, n], ego_to_world=self.ego_to_world[t],
                          cam_to_ego=self.cam_to_ego[t, n], has_semantics=self.has_semantics)
                for t in range(len(self)) for n in range(len(self.cameras))]

    def ticks(self) -> Iterator[list[Frame]]:
        """Per tick, the list of `Frame` s of all cameras (what `render_trajectory` yields)."""
        for t in range(len(self)):
            yield [self.frame(t, n) for n in range(len(self.cameras))]
