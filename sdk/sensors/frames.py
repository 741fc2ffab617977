"""Sensor results: `Frame` (one camera at one tick, host numpy arrays, the devkit-style unit of sensor data) and
`FrameBatch` (all cameras × ticks of a render as ``[T, N, ...]`` tensors on the render device).

Conventions (`nfldm_sdk.sensors`): RGB uint8; depth planar z in metres, float32, ``inf`` where nothing was hit
(valid = ``isfinite``); ``range`` the ray length from the camera centre (metres), only on request; alpha the
accumulated opacity in [0, 1]; poses ``cam_to_world`` (OpenCV camera -> scene frame), float64.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from nfldm_sdk.sensors.views import SceneImages

__all__ = ["Frame", "FrameBatch"]


def _host(x: torch.Tensor | None) -> np.ndarray | None:
    return None if x is None else x.detach().cpu().numpy()


@dataclass(eq=False)
class Frame:
    """One camera's image at one tick (host numpy arrays; the devkit-style unit of sensor data).

    Attributes:
        rgb: ``[H, W, 3]`` uint8 RGB.
        depth: ``[H, W]`` float32 planar z-depth, metres; ``inf`` where nothing was hit.
        alpha: ``[H, W]`` float32 accumulated opacity in [0, 1].
        timestamp: seconds (the trajectory's clock).
        frame: tick index along the trajectory (0-based).
        camera: camera name.
        K: ``[3, 3]`` float64 intrinsics, pixels.
        cam_to_world: ``[4, 4]`` float64, OpenCV camera -> scene frame.
        seed: the scene's seed (None if unknown); bundle_hash: its model bundle ("" if unknown).
        range: ``[H, W]`` float32 ray length from the camera centre, metres (``inf`` for no hit), only when
            requested (``with_range=True``), else None.
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

    @classmethod
    def from_views(cls, views: SceneImages, i: int, *, timestamp: float, frame: int, camera: str, K: np.ndarray,
                   cam_to_world: np.ndarray, seed: int | None = None, bundle_hash: str = "") -> "Frame":
        """View `i` of rendered `views` (`SceneImages`, any device) as a host `Frame` with its metadata (`K`
        ``[3, 3]`` and `cam_to_world` ``[4, 4]`` are copied as float64 arrays)."""
        return cls(rgb=_host(views.rgb[i]), depth=_host(views.depth[i]), alpha=_host(views.alpha[i]),
                   timestamp=float(timestamp), frame=int(frame), camera=camera, K=np.array(K),
                   cam_to_world=np.array(cam_to_world), seed=seed, bundle_hash=bundle_hash,
                   range=None if views.range is None else _host(views.range[i]))

    @property
    def valid(self) -> np.ndarray:
        """``[H, W]`` bool: pixels that hit something (finite depth)."""
        return np.isfinite(self.depth)

    @property
    def height(self) -> int:
        """Image height, pixels."""
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        """Image width, pixels."""
        return int(self.rgb.shape[1])

    def metadata(self) -> dict:
        """JSON-ready metadata (everything but the images)."""
        return {"frame": int(self.frame), "timestamp": float(self.timestamp), "camera": self.camera,
                "width": self.width, "height": self.height, "K": np.asarray(self.K).tolist(),
                "cam_to_world": np.asarray(self.cam_to_world).tolist(), "seed": self.seed,
                "bundle_hash": self.bundle_hash, "depth": "planar z, metres, float32, inf = no hit"}


@dataclass(eq=False)
class FrameBatch:
    """All cameras × ticks of a trajectory render, as tensors on the render device.

    Attributes:
        rgb: ``[T, N, H, W, 3]`` uint8.
        depth: ``[T, N, H, W]`` float32 planar metres, ``inf`` = no hit.
        alpha: ``[T, N, H, W]`` float32.
        range: ``[T, N, H, W]`` float32 ray length (metres), or None unless requested.
        timestamps: ``[T]`` float64 seconds; frames: ``[T]`` int64 tick indices.
        cameras: the N camera names; K: ``[N, 3, 3]`` float64; cam_to_world: ``[T, N, 4, 4]`` float64.
        seed, bundle_hash: the scene's provenance.
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

    @classmethod
    def from_views(cls, views: SceneImages, T: int, N: int, **metadata) -> "FrameBatch":
        """Time-major flattened views ``[T·N, ...]`` (`SceneImages`) reshaped to ``[T, N, ...]``; `metadata` are the
        other fields (timestamps, frames, cameras, K, cam_to_world, seed, bundle_hash)."""
        shape = lambda x: None if x is None else x.reshape(T, N, *x.shape[1:])  # noqa: E731
        return cls(rgb=shape(views.rgb), depth=shape(views.depth), alpha=shape(views.alpha), range=shape(views.range),
                   **metadata)

    @property
    def valid(self) -> torch.Tensor:
        """``[T, N, H, W]`` bool: finite depth."""
        return torch.isfinite(self.depth)

    def __len__(self) -> int:
        return len(self.timestamps)

    def frame(self, t: int, n: int | str) -> Frame:
        """Tick `t`, camera `n` (index or name) as a host `Frame`."""
        if isinstance(n, str):
            if n not in self.cameras:
                raise KeyError(f"no camera {n!r}; cameras are {self.cameras}")
            n = self.cameras.index(n)
        tick = SceneImages(self.rgb[t], self.depth[t], self.alpha[t], None if self.range is None else self.range[t])
        return Frame.from_views(tick, n, timestamp=self.timestamps[t], frame=self.frames[t], camera=self.cameras[n],
                                K=self.K[n], cam_to_world=self.cam_to_world[t, n], seed=self.seed,
                                bundle_hash=self.bundle_hash)

    def ticks(self) -> Iterator[list[Frame]]:
        """Per tick, the list of `Frame` s of all cameras (what `render_trajectory` yields)."""
        for t in range(len(self)):
            yield [self.frame(t, n) for n in range(len(self.cameras))]
