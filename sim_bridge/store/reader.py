"""Reading capture stores: validated on open, only committed frames visible, images read lazily.

    store = open_store("data/town03.zarr")            # or "s3://bucket/town03.zarr", "memory://x.zarr", ...
    ep = store.episode(0)
    ep.rgb[3]            # [N,H,W,3] uint8, all cameras of frame 3
    ep.depth[:, [0, 2]]  # [T,2,H,W] float32, cameras 0 and 2 of every committed frame
    ep.cam_to_world      # [T,N,4,4] float64 (numpy, loaded once)
    ep.lidar_range[3]    # [C,A] float32 range image of frame 3 (stores captured with --lidar; else None)

Layout and conventions: `sim_bridge.store.schema`.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from sim_bridge.backends.base import FrameData
from sim_bridge.lidar import LidarSpec
from sim_bridge.rig import Rig
from sim_bridge.store.schema import StoreError, open_group, size_on_disk
from sim_bridge.store.validate import EpisodeInspection, inspect_group, raise_if_problems

__all__ = ["open_store", "CaptureStore", "Episode", "FrameArray"]


def open_store(path: str, storage_options: dict | None = None, verify_chunks: bool = False) -> "CaptureStore":
    """Open the capture store at `path` (local path or fsspec URL such as ``memory://x.zarr``, ``file://...``,
    ``s3://bucket/x.zarr``) read-only, validating it.

    Always checks format version, root attributes, arrays (presence, shapes, dtypes), committed <= planned and
    that the committed poses are finite rigid transforms; `verify_chunks=True` also decodes every committed chunk.

    Raises:
        FileNotFoundError: nothing (no zarr group) at `path`.
        StoreError: (a ValueError) listing every problem, each naming the episode/array and the fix.
    """
    try:
        group = open_group(path, "r", storage_options)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"no capture store at {path}: check the path, or collect one with "
                                f"`sim_bridge collect --out {path}`") from e
    except Exception as e:  # noqa: BLE001 - unreadable metadata, not zarr v3, ...
        raise StoreError(str(path), [f"cannot be opened as a zarr v3 group ({type(e).__name__}: {e}): check that it is "
                                     "a capture store written by `sim_bridge collect`"]) from e
    ins = inspect_group(group, str(path), deep=verify_chunks)
    raise_if_problems(ins)
    return CaptureStore(str(path), ins.attrs, ins.rig, list(ins.episodes.values()), storage_options, ins.lidar)


class CaptureStore:
    """A validated capture store (read-only).

    Attributes:
        path: where it lives (path or URL as given).
        attrs: all root attributes.
        format_version, backend, town, weather, seed, fps: root attributes.
        rig: the camera rig (camera order = axis N of the arrays).
        lidar: the LiDAR the store was captured with (`sim_bridge.lidar.LidarSpec`; its beam tables lay out the
            range images), or None.
        episode_names: episode group names sorted by index.
    """

    def __init__(self, path: str, attrs: dict, rig: Rig, episodes: list[EpisodeInspection],
                 storage_options: dict | None = None, lidar: LidarSpec | None = None):
        self.path = path
        self.attrs = attrs
        self.storage_options = storage_options
        self.format_version = int(attrs["format_version"])
        self.backend = str(attrs["backend"])
        self.town = str(attrs["town"])
        self.weather = str(attrs["weather"])
        self.seed = int(attrs["seed"])
        self.fps = float(attrs["fps"])
        self.rig = rig
        self.lidar = lidar
        self._episodes = {e.name: Episode(e, rig) for e in episodes}
        self.episode_names = list(self._episodes)

    def __len__(self) -> int:
        return len(self.episode_names)

    def __iter__(self) -> Iterator["Episode"]:
        return iter(self._episodes.values())

    def episode(self, i: int | str) -> "Episode":
        """Episode by position in `episode_names` (equal to the episode index when episodes are numbered
        0, 1, … without gaps) or by name (``"episode_0003"``)."""
        if isinstance(i, str):
            if i not in self._episodes:
                raise KeyError(f"no episode {i!r} in {self.path}: it has {self.episode_names}")
            return self._episodes[i]
        if not -len(self) <= int(i) < len(self):
            raise IndexError(f"episode {i} out of range: {self.path} has {len(self)} episode(s)")
        return self._episodes[self.episode_names[int(i)]]

    @property
    def num_frames(self) -> int:
        """Committed frames over all episodes."""
        return sum(e.num_frames for e in self)

    def size_on_disk(self) -> int | None:
        """Bytes stored (None when the filesystem cannot tell)."""
        return size_on_disk(self.path, self.storage_options)

    def __repr__(self) -> str:
        return (f"CaptureStore({self.path!r}, {self.backend}, {self.town}, {len(self)} episode(s), "
                f"{self.num_frames} frames, {len(self.rig)} cameras {self.rig.width}x{self.rig.height})")


class Episode:
    """One episode of a capture store; only its committed frames are visible.

    Attributes:
        name, index, seed: group name, episode index, episode seed.
        num_frames: committed frames T; planned_frames: frames the collection planned.
        complete: all planned frames committed.
        num_cameras, height, width: N, H, W.
        rgb: `[T,N,H,W,3]` uint8, depth: `[T,N,H,W]` float32 (metres, inf = no hit), semantic: `[T,N,H,W]` uint8 —
            lazy `FrameArray`s (numpy-style indexing reads only the chunks needed).
        cam_to_world: `[T,N,4,4]` float64, ego_to_world: `[T,4,4]` float64, timestamp: `[T]` float64 seconds,
            frame: `[T]` int64 — read-only numpy arrays.
        lidar_range: `[T,C,A]` float32 (metres, inf = no return) and lidar_tag: `[T,C,A]` uint8 (0 = no return) —
            lazy `FrameArray`s; lidar_to_world: `[T,4,4]` float64 (sensor x fwd, y left, z up -> world), read-only
            numpy. All three None for a store captured without a LiDAR.
    """

    def __init__(self, ins: EpisodeInspection, rig: Rig):
        a = ins.attrs
        self.name = ins.name
        self.index = int(a["index"])
        self.seed = int(a["seed"])
        self.num_frames = int(ins.committed)
        self.planned_frames = int(a["planned_frames"])
        self.complete = bool(a["complete"])
        self.num_cameras, self.height, self.width = len(rig), rig.height, rig.width
        self.rgb = FrameArray(ins.arrays["rgb"], self.num_frames, f"{self.name}/rgb")
        self.depth = FrameArray(ins.arrays["depth"], self.num_frames, f"{self.name}/depth")
        self.semantic = FrameArray(ins.arrays["semantic"], self.num_frames, f"{self.name}/semantic")
        for key in ("cam_to_world", "ego_to_world", "timestamp", "frame"):
            v = ins.small[key]
            v.setflags(write=False)  # shared by every caller: must not be modified in place
            setattr(self, key, v)
        self.lidar_range = self.lidar_tag = self.lidar_to_world = None
        if "lidar_range" in ins.arrays:
            self.lidar_range = FrameArray(ins.arrays["lidar_range"], self.num_frames, f"{self.name}/lidar_range",
                                          "channel")
            self.lidar_tag = FrameArray(ins.arrays["lidar_tag"], self.num_frames, f"{self.name}/lidar_tag", "channel")
            self.lidar_to_world = ins.small["lidar_to_world"]
            self.lidar_to_world.setflags(write=False)

    @property
    def has_lidar(self) -> bool:
        """True when the episode holds LiDAR scans."""
        return self.lidar_range is not None

    def frame_data(self, t: int) -> FrameData:
        """All data of committed frame `t` (negative counts from the end)."""
        if not -self.num_frames <= int(t) < self.num_frames:
            raise IndexError(f"frame {t} out of range: {self.name} has {self.num_frames} committed frame(s)")
        t = int(t) % self.num_frames
        lidar = {}
        if self.has_lidar:
            lidar = dict(lidar_range=self.lidar_range[t], lidar_tag=self.lidar_tag[t],
                         lidar_to_world=np.array(self.lidar_to_world[t]))
        return FrameData(rgb=self.rgb[t], depth=self.depth[t], semantic=self.semantic[t],
                         cam_to_world=np.array(self.cam_to_world[t]), ego_to_world=np.array(self.ego_to_world[t]),
                         timestamp=float(self.timestamp[t]), frame=int(self.frame[t]), **lidar)

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        return (f"Episode({self.name}, {self.num_frames}/{self.planned_frames} frames, {self.num_cameras} cameras "
                f"{self.width}x{self.height}{', complete' if self.complete else ''})")


class FrameArray:
    """Lazy `[T,N,...]` view of an image array limited to the T committed frames.

    Indexing follows numpy (ints, slices with any step, integer lists/arrays, boolean masks, Ellipsis) and reads
    only the chunks of the selected frames and cameras; an integer frame index >= T raises IndexError. The second
    axis is named `second_axis` in errors (``camera``; ``channel`` for a LiDAR range image `[T,C,A]`).
    """

    def __init__(self, array, num_frames: int, name: str, second_axis: str = "camera"):
        self._array = array
        self._t = int(num_frames)
        self.name = name
        self.second_axis = second_axis

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._t, *self._array.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._array.dtype)

    @property
    def ndim(self) -> int:
        return self._array.ndim

    @property
    def chunks(self) -> tuple[int, ...]:
        """Chunk shape of the stored array (one image per chunk)."""
        return tuple(self._array.chunks)

    @property
    def zarr_array(self):
        """The underlying zarr array (its first axis is the planned frame count, not T)."""
        return self._array

    def __len__(self) -> int:
        return self._t

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out if dtype is None else out.astype(dtype)

    def __repr__(self) -> str:
        return f"FrameArray({self.name}, shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, key) -> np.ndarray:
        key = _expand(key, self.ndim)
        shape = self.shape
        reads, remapped, counts = [], [], []
        for axis, axis_name in ((0, "frame"), (1, self.second_axis)):
            read, mem, count = _axis_selection(key[axis], shape[axis], axis_name, self.name)
            reads.append(read)
            remapped.append(mem)
            counts.append(count)
        rest = shape[2:]
        if 0 in counts:
            data = np.empty((*counts, *rest), dtype=self.dtype)
        else:
            data = self._array.oindex[(*reads, *(slice(None),) * len(rest))]
        return data[(*remapped, *key[2:])]


def _expand(key, ndim: int) -> tuple:
    """`key` as a tuple of exactly `ndim` entries (Ellipsis expanded)."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is None for k in key):
        raise IndexError("np.newaxis/None is not supported when indexing store arrays: index first, then reshape")
    n_ellipsis = sum(1 for k in key if k is Ellipsis)
    if n_ellipsis > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if len(key) - n_ellipsis > ndim:
        raise IndexError(f"too many indices: the array has {ndim} dimensions, {len(key) - n_ellipsis} were indexed")
    if n_ellipsis:
        i = next(j for j, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (ndim - len(key) + 1) + key[i + 1:]
    return key + (slice(None),) * (ndim - len(key))


def _axis_selection(k, size: int, axis_name: str, where: str):
    """For one axis: (what to read from zarr, index into what was read, how many entries are read)."""
    if isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
        i = int(k)
        if not -size <= i < size:
            what = "committed frame(s)" if axis_name == "frame" else f"{axis_name}(s)"
            raise IndexError(f"{axis_name} {i} out of range: {where} has {size} {what}")
        i %= size
        return slice(i, i + 1), 0, 1
    if isinstance(k, slice):
        r = range(size)[k]
        if len(r) == 0:
            return slice(0, 0), slice(None), 0
        if r.step > 0:
            return slice(r.start, r.stop, r.step), slice(None), len(r)
        return slice(r[-1], r[0] + 1, -r.step), slice(None, None, -1), len(r)
    idx = np.asarray(k)
    if idx.dtype == bool:
        if idx.shape != (size,):
            raise IndexError(f"boolean {axis_name} mask of shape {idx.shape} does not match {where}'s {size} {axis_name}s")
        idx = np.flatnonzero(idx)
    elif not np.issubdtype(idx.dtype, np.integer):
        raise IndexError(f"{axis_name} index {k!r} of {where}: only integers, slices, integer or boolean arrays "
                         "and Ellipsis are valid indices")
    if idx.size and (idx.min() < -size or idx.max() >= size):
        bad = idx[(idx < -size) | (idx >= size)][0]
        what = "committed frame(s)" if axis_name == "frame" else f"{axis_name}(s)"
        raise IndexError(f"{axis_name} {bad} out of range: {where} has {size} {what}")
    idx = np.where(idx < 0, idx + size, idx)
    unique = np.unique(idx)
    return unique, np.searchsorted(unique, idx), int(unique.size)
