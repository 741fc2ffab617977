"""The contract every simulator backend fulfils (procedural and CARLA alike).

A backend renders, per tick, all cameras of a `Rig` mounted on a driving ego vehicle and returns a
`FrameData` already in the project's conventions (RGB uint8, planar z-depth metres with `inf` for no hit,
CARLA semantic tags, OpenCV `cam_to_world`, right-handed z-up world). Nothing outside the CARLA backend
knows about UE4 axes or BGRA.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class FrameData:
    """One tick of one episode, all cameras.

    Attributes:
        rgb: `[N,H,W,3]` uint8, RGB.
        depth: `[N,H,W]` float32, planar z-depth in metres, `inf` where nothing was hit (sky).
        semantic: `[N,H,W]` uint8, CARLA semantic tags.
        cam_to_world: `[N,4,4]` float64, OpenCV camera -> world.
        ego_to_world: `[4,4]` float64, ego (x fwd, y left, z up) -> world.
        timestamp: simulation time of the tick, seconds since the episode started.
        frame: the simulator's frame id of the tick (monotonic within an episode).
        lidar_range: `[C,A]` float32 LiDAR range image (a backend given a `sim_bridge.lidar.LidarSpec`, else None):
            metres along beam (row c, column a) of `LidarSpec.directions` from the sensor origin, `inf` = no return
            (nothing within ``range_m``).
        lidar_tag: `[C,A]` uint8 CARLA tag of each cell's return, 0 where there is none (None without a LiDAR).
        lidar_to_world: `[4,4]` float64 LiDAR sensor frame (x fwd, y left, z up) -> world (None without a LiDAR).
    """

    rgb: np.ndarray
    depth: np.ndarray
    semantic: np.ndarray
    cam_to_world: np.ndarray
    ego_to_world: np.ndarray
    timestamp: float
    frame: int
    lidar_range: np.ndarray | None = None
    lidar_tag: np.ndarray | None = None
    lidar_to_world: np.ndarray | None = None


@dataclass(frozen=True)
class EpisodeSpec:
    """What to collect in one episode.

    Attributes:
        index: episode number in the store (0-based).
        seed: seed of this episode (spawn point, traffic, …); derived from the run's seed and `index`.
        start_frame: number of frames already committed for this episode (resume); the backend must continue
            so that its next `step()` returns frame number `start_frame` of the episode. The procedural
            backend replays deterministically; CARLA respawns the ego at `resume_ego_to_world`.
        resume_ego_to_world: `[4,4]` ego pose of the last committed frame when resuming, else None.
    """

    index: int
    seed: int
    start_frame: int = 0
    resume_ego_to_world: np.ndarray | None = None


@runtime_checkable
class Backend(Protocol):
    """A simulator backend. Use as a context manager: `close()` must restore the simulator on every exit path."""

    #: "procedural" or "carla".
    name: str

    def describe(self) -> dict:
        """Metadata for the store's root attributes: at least ``town``, ``weather``, ``backend``, plus
        backend-specific facts (server version, map name, …). JSON-serialisable."""
        ...

    def start_episode(self, spec: EpisodeSpec) -> None:
        """Reset or continue the world for `spec` (spawn ego, traffic, warm-up ticks)."""
        ...

    def step(self) -> FrameData:
        """Advance one tick (1/fps seconds) and return all cameras' data for that tick."""
        ...

    def close(self) -> None:
        """Destroy actors and restore world settings. Safe to call twice."""
        ...

    def __enter__(self): ...

    def __exit__(self, *exc): ...


def episode_seed(run_seed: int, episode_index: int) -> int:
    """Seed of episode `episode_index` of a run seeded `run_seed` (stable across versions and platforms)."""
    return (int(run_seed) * 1_000_003 + int(episode_index) * 7919) % (2**31 - 1)
