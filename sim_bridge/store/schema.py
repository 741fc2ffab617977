"""The capture-store format: version, attributes, array layout, codecs and the checks shared by writer and reader.

Layout (zarr v3, one store per collection run)::

    <store>/                     root group; attrs: format_version, backend, town, weather, seed, rig, fps,
                                 conventions, software, created, collection (+ any extra keys the collector adds)
      episodes/
        episode_0000/            attrs: index, seed, planned_frames, committed_frames, complete, every_chunk_stored
          rgb           [T,N,H,W,3] uint8    chunk (1,1,H,W,3)   RGB
          depth         [T,N,H,W]   float32  chunk (1,1,H,W)     planar z-depth, metres, inf = no hit
          semantic      [T,N,H,W]   uint8    chunk (1,1,H,W)     CARLA 0.9.14+ semantic tags
          cam_to_world  [T,N,4,4]   float64  chunk (1,N,4,4)     OpenCV camera -> world
          ego_to_world  [T,4,4]     float64  chunk (1,4,4)       ego (x fwd, y left, z up) -> world
          timestamp     [T]         float64  chunk (1,)          seconds since the episode started
          frame         [T]         int64    chunk (1,)          simulator frame id
          lidar_range   [T,C,A]     float32  chunk (1,C,A)       only with a LiDAR: metres along the beam, inf = none
          lidar_tag     [T,C,A]     uint8    chunk (1,C,A)       only with a LiDAR: CARLA tag, 0 = no return
          lidar_to_world [T,4,4]    float64  chunk (1,4,4)       only with a LiDAR: sensor (x fwd, y left, z up) -> world

A store captured with a LiDAR (`sim_bridge collect --lidar`) has the root attributes ``lidar`` (the
`sim_bridge.lidar.LidarSpec` as its JSON file holds it, ``LidarSpec.from_json(attrs["lidar"])``) and
``lidar_beams`` (``elevation_deg [C]``, ``azimuth_deg [A]``: row c of a range image is the beam at
``elevation_deg[c]``, column a the azimuth ``azimuth_deg[a]``, 0 = sensor +x, counter-clockwise seen from above),
and every episode has the three ``lidar_*`` arrays (`LIDAR_ARRAYS`); a store without them has none of this.

T is the planned number of frames; only the first `committed_frames` frames hold data. Every chunk holds one
frame (one image for the image arrays), so appending a frame never rewrites a chunk of a committed frame.
``every_chunk_stored`` (true; absent in episodes written by an older writer) says that every chunk of every
committed frame is on disk, also one equal to the fill value 0.

Codecs: image arrays use ``blosc(zstd, clevel 3)`` — byte shuffle for float32 depth, none for uint8 — and every
array ends its codec chain with ``crc32c``, so a truncated or bit-flipped chunk fails to decode instead of
returning wrong pixels (the deep check of `sim_bridge.store.validate` relies on it). Poses and small arrays use
``zstd(level 3)`` + ``crc32c``.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import zarr
from fsspec.core import url_to_fs
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from sim_bridge import __version__ as nfldm_version
from sim_bridge.errors import SimBridgeError

#: Version of the capture-store layout written by this code. Bump on any incompatible change.
FORMAT_VERSION = 1

#: Root attributes every capture store has (the writer adds format_version, conventions, software, created).
REQUIRED_ROOT_ATTRS = ("format_version", "backend", "town", "weather", "seed", "rig", "fps", "conventions", "software",
                       "created", "collection")

#: Root attributes the collector must pass to `StoreWriter.create`.
COLLECTOR_ROOT_ATTRS = ("backend", "town", "weather", "seed", "rig", "fps")

#: Attributes of every episode group.
EPISODE_ATTRS = ("index", "seed", "planned_frames", "committed_frames", "complete")

#: Episode attribute (true) of an episode whose committed frames have every chunk stored, also those equal to
#: the fill value. Older writers skipped such chunks after a resume and did not write it.
EVERY_CHUNK_STORED = "every_chunk_stored"

#: Name of the group holding the episodes.
EPISODES_GROUP = "episodes"

#: The project's conventions, recorded in every store so that a store explains itself.
CONVENTIONS = {
    "world": "right-handed, z up, metres",
    "ego": "vehicle frame: x forward, y left, z up, metres, origin on the ground below the vehicle centre",
    "camera": "OpenCV axes (x right, y down, z forward); K [3,3] in pixels with pixel centres at integer + 0.5; "
              "cam_to_world [4,4] maps camera to world coordinates; rig cameras are pinhole unless their 'model' is "
              "equidistant (r = f theta) or opencv_fisheye (theta_d = theta (1 + k1 theta^2 + ... + k4 theta^8))",
    "matrices": "named by direction: a_to_b maps coordinates in frame a to frame b (x_b = a_to_b @ x_a)",
    "depth": "planar z-depth along the camera z axis in metres, float32 (fisheye cameras too, all rays < 90 "
             "degrees off axis); inf where nothing was hit (sky); valid mask = isfinite(depth)",
    "semantics": "CARLA 0.9.14+ semantic tags, uint8 (road=1, sidewalk=2, building=3, ..., sky=11, car=14)",
    "image": "RGB, uint8, row-major [H,W,3], row 0 at the top",
    "time": "timestamp in seconds since the episode started; frame is the simulator's frame id",
    "store": "zarr v3; arrays [T,N,...] with T planned frames and N rig cameras in rig order; only the first "
             "committed_frames frames of an episode are valid",
    "lidar": "optional; sensor frame x forward, y left, z up, metres; lidar_to_world [T,4,4] maps it to the world; "
             "lidar_range [T,C,A] float32 metres along beam (c, a) from the sensor origin, inf = no return within "
             "range_m; row c = elevation lidar_beams.elevation_deg[c] (highest first), column a = azimuth "
             "lidar_beams.azimuth_deg[a] (0 = +x, counter-clockwise seen from above); lidar_tag [T,C,A] uint8 CARLA "
             "tags, 0 where no return",
}

#: Root attributes of a store captured with a LiDAR: the spec (its JSON file's form) and its beam tables.
LIDAR_ROOT_ATTRS = ("lidar", "lidar_beams")

_EPISODE_RE = re.compile(r"^episode_(\d{4,})$")


class StoreError(SimBridgeError, ValueError):
    """A capture store fails validation. `problems` holds one human-readable line per problem."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"capture store {path} has {len(self.problems)} problem(s):\n{lines}")


@dataclass(frozen=True)
class ArrayLayout:
    """One array of an episode group.

    Attributes:
        name: array name inside the episode group.
        dtype: numpy dtype of the array.
        frame_shape: `(N, H, W) -> shape of one frame` (the array is `[T, *frame_shape]`).
        chunk_shape: `(N, H, W) -> chunk shape` (first axis always 1: one frame per chunk).
        image: True for the per-camera image arrays (read lazily by the reader).
        zero_is_data: which frames can legitimately hold the fill value 0 in a whole chunk: "any" (a black
            image, an all-unlabelled semantic image), "first" (frame 0 only: timestamps start at 0 s and frame ids
            are non-negative, both strictly increasing) or "never" (planar depth is > 0 or inf; a zero matrix is
            not a pose).
    """

    name: str
    dtype: np.dtype
    frame_shape: Callable[[int, int, int], tuple[int, ...]]
    chunk_shape: Callable[[int, int, int], tuple[int, ...]]
    image: bool
    zero_is_data: str = "never"

    def zero_can_be_data(self, t: int) -> bool:
        """True when a chunk of frame `t` holding only the fill value 0 can be real data."""
        return self.zero_is_data == "any" or (self.zero_is_data == "first" and t == 0)

    def shape(self, t: int, n: int, h: int, w: int) -> tuple[int, ...]:
        """Full array shape for `t` planned frames, `n` cameras of `h`×`w` pixels."""
        return (t, *self.frame_shape(n, h, w))

    def chunks(self, n: int, h: int, w: int) -> tuple[int, ...]:
        return self.chunk_shape(n, h, w)


#: The arrays of an episode, in the order they are written for each frame.
ARRAYS: tuple[ArrayLayout, ...] = (
    ArrayLayout("rgb", np.dtype(np.uint8), lambda n, h, w: (n, h, w, 3), lambda n, h, w: (1, 1, h, w, 3), True, "any"),
    ArrayLayout("depth", np.dtype(np.float32), lambda n, h, w: (n, h, w), lambda n, h, w: (1, 1, h, w), True),
    ArrayLayout("semantic", np.dtype(np.uint8), lambda n, h, w: (n, h, w), lambda n, h, w: (1, 1, h, w), True, "any"),
    ArrayLayout("cam_to_world", np.dtype(np.float64), lambda n, h, w: (n, 4, 4), lambda n, h, w: (1, n, 4, 4), False),
    ArrayLayout("ego_to_world", np.dtype(np.float64), lambda n, h, w: (4, 4), lambda n, h, w: (1, 4, 4), False),
    ArrayLayout("timestamp", np.dtype(np.float64), lambda n, h, w: (), lambda n, h, w: (1,), False, "first"),
    ArrayLayout("frame", np.dtype(np.int64), lambda n, h, w: (), lambda n, h, w: (1,), False, "first"),
)

#: The arrays of an episode captured with a LiDAR, written after `ARRAYS` for each frame. Their shape functions take
#: the range image as one sensor of C×A pixels: ``(1, C, A)`` for ``(n, h, w)``.
LIDAR_ARRAYS: tuple[ArrayLayout, ...] = (
    ArrayLayout("lidar_range", np.dtype(np.float32), lambda n, h, w: (h, w), lambda n, h, w: (1, h, w), True),
    ArrayLayout("lidar_tag", np.dtype(np.uint8), lambda n, h, w: (h, w), lambda n, h, w: (1, h, w), True, "any"),
    ArrayLayout("lidar_to_world", np.dtype(np.float64), lambda n, h, w: (4, 4), lambda n, h, w: (1, 4, 4), False),
)
ARRAY_BY_NAME = {a.name: a for a in (*ARRAYS, *LIDAR_ARRAYS)}


def compressors_for(layout: ArrayLayout) -> list:
    """The zarr v3 bytes->bytes codec chain of an array (see the module docstring for the choice)."""
    if layout.image:
        shuffle = "shuffle" if layout.dtype.itemsize > 1 else "noshuffle"
        return [BloscCodec(cname="zstd", clevel=3, shuffle=shuffle, typesize=layout.dtype.itemsize), Crc32cCodec()]
    return [ZstdCodec(level=3), Crc32cCodec()]


def episode_name(index: int) -> str:
    """Group name of episode `index`: ``episode_0000``, ``episode_0001``, …"""
    if int(index) < 0:
        raise ValueError(f"episode index must be >= 0, got {index}")
    return f"episode_{int(index):04d}"


def parse_episode_name(name: str) -> int | None:
    """Episode index of a group name, or None if `name` is not an episode group name."""
    m = _EPISODE_RE.match(name)
    return int(m.group(1)) if m else None


def to_json(value: Any, where: str = "attribute") -> Any:
    """`value` as JSON-ready Python types (numpy arrays/scalars converted); raises TypeError naming `where`."""
    if isinstance(value, dict):
        return {str(k): to_json(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return to_json(value.tolist(), where)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        raise TypeError(f"{where} is {value}: store attributes must be finite numbers (JSON has no NaN/inf)")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "to_list"):  # a Rig
        return to_json(value.to_list(), where)
    raise TypeError(f"{where} has type {type(value).__name__}, which cannot be stored as a JSON attribute: "
                    "convert it to dict/list/str/int/float/bool first")


def software_versions(extra: dict | None = None) -> dict:
    """Versions recorded in the root attribute ``software``: nfldm, zarr, numpy, python (+ `extra`, e.g. carla)."""
    versions = {"nfldm": nfldm_version, "zarr": zarr.__version__, "numpy": np.__version__,
                "python": sys.version.split()[0]}
    versions.update({str(k): str(v) for k, v in (extra or {}).items()})
    return versions


def open_group(path: str, mode: str, storage_options: dict | None = None):
    """`zarr.open_group` for a local path or an fsspec URL (storage_options only passed for URLs)."""
    kwargs: dict[str, Any] = {"mode": mode, "zarr_format": 3, "use_consolidated": False}
    if storage_options:
        kwargs["storage_options"] = storage_options
    return zarr.open_group(str(path), **kwargs)


def filesystem(path: str, storage_options: dict | None = None):
    """`(fsspec filesystem, root path within it)` of a local path or fsspec URL."""
    return url_to_fs(str(path), **(storage_options or {}))


def size_on_disk(path: str, storage_options: dict | None = None) -> int | None:
    """Total bytes stored under `path` (None if the filesystem cannot tell)."""
    try:
        fs, root = filesystem(path, storage_options)
        return int(fs.du(root, total=True))
    except Exception:  # noqa: BLE001 - size is informational only
        return None
