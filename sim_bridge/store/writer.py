"""Writing capture stores frame by frame, crash-safe and resumable.

Each `EpisodeWriter.append` writes all arrays of frame `t = committed` (one chunk per image, all chunks of the
frame written concurrently in one zarr call) and only then rewrites the episode attributes with
``committed_frames = t + 1``. A crash therefore loses at most the frame in flight: its chunks may exist, but
readers never look past ``committed_frames`` and a resumed writer overwrites them. Local stores write every
file atomically (temporary file + rename); object stores write whole objects.

Every array the writer opens, created or reopened for a resume, stores every chunk it writes, also one equal to
the fill value 0 (zarr's ``write_empty_chunks`` is a runtime setting, not part of the array's metadata, so it is
passed on every open). The episode attribute ``every_chunk_stored`` records that for all committed frames, which
lets the validator call any absent chunk lost (see `sim_bridge.store.validate`).

A store created with a ``lidar`` root attribute (a `sim_bridge.lidar.LidarSpec`) also gets the LiDAR arrays
(`LIDAR_ARRAYS`) in every episode, and every appended frame must then carry its scan (`FrameData.lidar_range`,
``lidar_tag``, ``lidar_to_world``); a store without one refuses frames that carry a scan.

Layout, codecs and the conventions recorded in the store: `sim_bridge.store.schema`.
"""
from __future__ import annotations

import asyncio
import re
from datetime import datetime, timezone

import numpy as np
from zarr.core.sync import sync

from sim_bridge.backends.base import FrameData
from sim_bridge.lidar import LidarSpec
from sim_bridge.rig import Rig
from sim_bridge.rigid import rigid_problems
from sim_bridge.store.schema import (ARRAYS, COLLECTOR_ROOT_ATTRS, CONVENTIONS, EPISODES_GROUP, EVERY_CHUNK_STORED,
                                     FORMAT_VERSION, LIDAR_ARRAYS, compressors_for, episode_name, filesystem,
                                     open_group, software_versions, to_json)
from sim_bridge.store.validate import inspect_group, raise_if_problems

__all__ = ["StoreWriter", "EpisodeWriter", "INTERRUPTED_WRITE", "remove_interrupted_writes"]

_DIMENSION_NAMES = {
    "rgb": ("t", "camera", "y", "x", "channel"),
    "depth": ("t", "camera", "y", "x"),
    "semantic": ("t", "camera", "y", "x"),
    "cam_to_world": ("t", "camera", "row", "col"),
    "ego_to_world": ("t", "row", "col"),
    "timestamp": ("t",),
    "frame": ("t",),
    "lidar_range": ("t", "channel", "column"),
    "lidar_tag": ("t", "channel", "column"),
    "lidar_to_world": ("t", "row", "col"),
}

#: zarr runtime config of every array opened for writing: chunks equal to the fill value are stored too, so an
#: absent chunk of a committed frame means a lost one.
_WRITE_CONFIG = {"write_empty_chunks": True}


#: The temporary files zarr's local store writes a chunk or metadata file into before renaming it into place
#: (``NAME.<32 hex digits>.partial``): a process killed in between leaves one behind.
INTERRUPTED_WRITE = re.compile(r"\.[0-9a-f]{32}\.partial$")


def remove_interrupted_writes(path: str, storage_options: dict | None = None) -> list[str]:
    """Delete the temporary files of writes a killed process left under the store at `path` (`INTERRUPTED_WRITE`).

    They never hold committed data (the rename that would have made them a chunk did not happen, and the episode's
    ``committed_frames`` was not advanced past them), so a resume drops them and rewrites what they were for.
    Returns:
        the removed paths (filesystem paths of `path`'s fsspec filesystem).
    """
    fs, root = filesystem(path, storage_options)
    stale = [p for p in fs.find(root) if INTERRUPTED_WRITE.search(p)]
    for p in stale:
        fs.rm(p)
    return stale


class StoreWriter:
    """Creates or reopens a capture store and hands out `EpisodeWriter`s.

    Use `StoreWriter.create` for a new store and `StoreWriter.open_for_resume` to continue one.
    """

    def __init__(self, group, path: str, attrs: dict):
        self._group = group
        self._episodes = group[EPISODES_GROUP]
        self.path = str(path)
        self._attrs = attrs
        self._rig = Rig.from_list(attrs["rig"])
        self._lidar = LidarSpec.from_json(attrs["lidar"], where="root attribute 'lidar'") if "lidar" in attrs else None
        self._closed = False

    @classmethod
    def create(cls, path: str, root_attrs: dict, overwrite: bool = False,
               storage_options: dict | None = None) -> "StoreWriter":
        """Create a new store at `path` (local path or fsspec URL).

        Args:
            root_attrs: from the collector: ``backend, town, weather, seed, rig`` (list of `RigCamera.to_dict()`
                or a `Rig`), ``fps``, optionally ``collection`` (dict), ``software`` (extra versions, e.g.
                ``{"carla": "0.9.16"}``), ``lidar`` (a `LidarSpec` or its JSON dict, or None: no LiDAR) and any
                other JSON-ready keys. The writer adds ``format_version, conventions, software`` (nfldm, zarr,
                numpy, python), ``created`` (ISO 8601, UTC) and, with a LiDAR, its ``lidar_beams``.
            overwrite: replace an existing store at `path` (only a zarr store or an empty folder is replaced).
        Raises:
            FileExistsError: something exists at `path` and `overwrite` is False.
            ValueError: a required attribute is missing or invalid.
        """
        attrs = _root_attrs(root_attrs)
        fs, root = filesystem(path, storage_options)
        if fs.exists(root):
            if not overwrite:
                raise FileExistsError(f"store {path} exists: pass --resume to continue it or --overwrite to replace it")
            is_zarr = fs.isdir(root) and (fs.exists(f"{root.rstrip('/')}/zarr.json") or not fs.ls(root))
            if not is_zarr:
                raise FileExistsError(f"{path} exists and is not a zarr store: refusing to replace it with --overwrite; "
                                      "choose another --out or remove it yourself")
            fs.rm(root, recursive=True)
        group = open_group(path, "w-", storage_options)
        group.update_attributes(attrs)
        group.create_group(EPISODES_GROUP)
        return cls(group, path, attrs)

    @classmethod
    def open_for_resume(cls, path: str, storage_options: dict | None = None) -> "StoreWriter":
        """Reopen the store at `path` to continue collecting.

        Runs the reader's cheap checks (format version, attributes, arrays, poses of committed frames); problems
        of episodes with no committed frame are tolerated, `episode()` recreates those.
        Raises:
            FileNotFoundError: no store at `path`.
            StoreError: the store is of another format version or damaged (message lists every problem).
        """
        try:
            group = open_group(path, "r+", storage_options)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"no capture store at {path} to resume: check --out, or start a new collection "
                                    "without --resume") from e
        ins = inspect_group(group, str(path), deep=False)
        raise_if_problems(ins, only_committed=True)
        remove_interrupted_writes(path, storage_options)
        return cls(group, path, ins.attrs)

    @property
    def root_attrs(self) -> dict:
        """The root attributes as stored (a copy)."""
        return to_json(self._attrs)

    @property
    def rig(self) -> Rig:
        return self._rig

    @property
    def lidar(self) -> LidarSpec | None:
        """The store's LiDAR (None for a store captured without one)."""
        return self._lidar

    def _layouts(self) -> list:
        """(layout, (n, h, w)) of every array of an episode: the cameras', then the LiDAR's (range image 1×C×A)."""
        n, h, w = len(self._rig), self._rig.height, self._rig.width
        out = [(layout, (n, h, w)) for layout in ARRAYS]
        if self._lidar is not None:
            out += [(layout, (1, *self._lidar.range_image_shape)) for layout in LIDAR_ARRAYS]
        return out

    def update_collection(self, collection: dict) -> None:
        """Replace the root attribute ``collection`` (e.g. when a resume adds episodes)."""
        self._check_open()
        value = to_json(collection, "collection")
        self._group.attrs["collection"] = value
        self._attrs["collection"] = value

    def episode(self, index: int, num_frames: int, seed: int) -> "EpisodeWriter":
        """Writer of episode `index` (group ``episodes/episode_{index:04d}``) with `num_frames` planned frames.

        Creates the group and its arrays (shapes from the rig: N cameras, H×W), or reopens it to resume.
        An existing group with no committed frame and missing pieces (a crash while creating it) is recreated.
        Raises:
            ValueError: the episode exists with another planned frame count or seed.
        """
        self._check_open()
        if int(num_frames) < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        name = episode_name(index)
        if name in self._episodes:
            group = self._episodes[name]
            attrs = dict(group.attrs)
            if "planned_frames" in attrs and "seed" in attrs:
                diffs = []
                if attrs["planned_frames"] != int(num_frames):
                    diffs.append(f"planned_frames {attrs['planned_frames']} (asked {num_frames})")
                if attrs["seed"] != int(seed):
                    diffs.append(f"seed {attrs['seed']} (asked {seed})")
                if diffs:
                    raise ValueError(f"episode {name} of {self.path} exists with {', '.join(diffs)}: resume with the "
                                     "store's recorded settings, or collect into a new --out")
            arrays = self._existing_arrays(group, int(num_frames))
            committed = int(attrs.get("committed_frames", 0))
            if arrays is not None and "committed_frames" in attrs:
                if committed == 0 and not attrs.get(EVERY_CHUNK_STORED):
                    # nothing committed yet: every committed frame will be written through `arrays`
                    group.update_attributes({EVERY_CHUNK_STORED: True})
                return EpisodeWriter(group, arrays, name, int(index), int(seed), int(num_frames), committed,
                                     bool(attrs.get("complete", False)))
            if committed > 0:  # pragma: no cover - open_for_resume already refused such a store
                raise ValueError(f"episode {name} has {committed} committed frames but broken arrays: delete "
                                 f"episodes/{name} and resume")
            del self._episodes[name]
        return self._create_episode(name, int(index), int(num_frames), int(seed))

    def _existing_arrays(self, group, num_frames: int) -> dict | None:
        arrays = {}
        for layout, (n, h, w) in self._layouts():
            try:
                arr = group[layout.name]
            except KeyError:
                return None
            if tuple(arr.shape) != layout.shape(num_frames, n, h, w) or np.dtype(arr.dtype) != layout.dtype:
                return None
            arrays[layout.name] = arr.with_config(_WRITE_CONFIG)
        return arrays

    def _create_episode(self, name: str, index: int, num_frames: int, seed: int) -> "EpisodeWriter":
        # The group's attributes are written last: an episode without them was interrupted while being created.
        group = self._episodes.create_group(name)
        arrays = {}
        for layout, (n, h, w) in self._layouts():
            arrays[layout.name] = group.create_array(
                layout.name, shape=layout.shape(num_frames, n, h, w), dtype=layout.dtype, chunks=layout.chunks(n, h, w),
                compressors=compressors_for(layout), fill_value=0, dimension_names=_DIMENSION_NAMES[layout.name],
                config=_WRITE_CONFIG)
        group.update_attributes({"index": index, "seed": seed, "planned_frames": num_frames, "committed_frames": 0,
                                 "complete": False, EVERY_CHUNK_STORED: True})
        return EpisodeWriter(group, arrays, name, index, seed, num_frames, 0, False)

    def close(self) -> None:
        """Release the store. Committed frames are already durable; closing twice is fine."""
        if not self._closed:
            self._closed = True
            try:
                self._group.store.close()
            except Exception:  # noqa: BLE001 - closing is best effort; nothing is buffered
                pass

    def _check_open(self):
        if self._closed:
            raise RuntimeError(f"store writer of {self.path} is closed: reopen it with StoreWriter.open_for_resume")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class EpisodeWriter:
    """Appends frames to one episode; see the module docstring for the commit protocol.

    Attributes:
        name: group name (``episode_0000``).
        index, seed: the episode's index and seed.
        num_frames: planned frames T.
        committed: frames committed so far (the next `append` writes frame `committed`).
        complete: True once all planned frames are committed.
    """

    def __init__(self, group, arrays: dict, name: str, index: int, seed: int, num_frames: int, committed: int,
                 complete: bool):
        self._group = group
        self._arrays = arrays
        self.name = name
        self.index = index
        self.seed = seed
        self.num_frames = num_frames
        self.committed = committed
        self.complete = complete
        rgb = arrays["rgb"]
        self._n, self._h, self._w = int(rgb.shape[1]), int(rgb.shape[2]), int(rgb.shape[3])
        self._lidar_shape = tuple(int(v) for v in arrays["lidar_range"].shape[1:]) if "lidar_range" in arrays else None
        self._last_ego: np.ndarray | None = None

    def append(self, frame: FrameData) -> None:
        """Write `frame` as frame number `committed`, then commit it (``committed_frames += 1``).

        Raises:
            ValueError: shapes/dtypes differ from the rig's `[N,H,W,...]` (or the LiDAR's `[C,A]`), poses are not
                finite rigid transforms, a LiDAR range is NaN or not positive, the frame lacks the scan of a store
                with a LiDAR (or carries one the store has no arrays for), or all planned frames are already
                committed. Nothing is written then.
        """
        if self.committed >= self.num_frames:
            raise ValueError(f"{self.name} already has all {self.num_frames} planned frames committed: "
                             "nothing more can be appended")
        values = self._check(frame)
        t = self.committed
        async def _write_all():
            await asyncio.gather(*(self._arrays[k].async_array.setitem(t, v) for k, v in values.items()))

        sync(_write_all())
        n = t + 1
        # The commit: a single metadata write, after the data of frame t is stored.
        self._group.update_attributes({"committed_frames": n, "complete": n == self.num_frames})
        self.committed = n
        self.complete = n == self.num_frames
        self._last_ego = values["ego_to_world"]

    def _check(self, frame: FrameData) -> dict:
        n, h, w = self._n, self._h, self._w
        problems = []
        values = {}
        for key, shape, dtypes, store_dtype in (
                ("rgb", (n, h, w, 3), (np.uint8,), np.uint8),
                ("depth", (n, h, w), (np.float32,), np.float32),
                ("semantic", (n, h, w), (np.uint8,), np.uint8),
                ("cam_to_world", (n, 4, 4), (np.float64, np.float32), np.float64),
                ("ego_to_world", (4, 4), (np.float64, np.float32), np.float64)):
            v = np.asarray(getattr(frame, key))
            if v.shape != shape:
                problems.append(f"{key} has shape {v.shape}, expected {shape} ({n} rig cameras, {h}x{w} pixels)")
            elif v.dtype not in [np.dtype(d) for d in dtypes]:
                problems.append(f"{key} has dtype {v.dtype}, expected {np.dtype(dtypes[0])} (convert with "
                                f".astype(np.{np.dtype(dtypes[0]).name}))")
            else:
                values[key] = np.ascontiguousarray(v, dtype=store_dtype)
        problems += self._check_lidar(frame, values)
        for key in ("cam_to_world", "ego_to_world", "lidar_to_world"):
            if key in values:
                reasons = rigid_problems(values[key])
                bad = [(idx, r) for idx, r in np.ndenumerate(reasons) if r]
                if bad:
                    idx, r = bad[0]
                    cam = f" camera {idx[0]}" if idx else ""
                    problems.append(f"{key}{cam} is not a rigid transform: {r}")
        try:
            ts = float(frame.timestamp)
            if not np.isfinite(ts):
                problems.append(f"timestamp is {ts}, expected a finite number of seconds")
            values["timestamp"] = np.float64(ts)
        except (TypeError, ValueError):
            problems.append(f"timestamp {frame.timestamp!r} is not a number")
        if isinstance(frame.frame, (bool, np.bool_)) or not isinstance(frame.frame, (int, np.integer)):
            problems.append(f"frame {frame.frame!r} is not an integer frame id")
        else:
            values["frame"] = np.int64(frame.frame)
        if problems:
            raise ValueError(f"cannot append frame {self.committed} to {self.name}: " + "; ".join(problems))
        return values

    def _check_lidar(self, frame: FrameData, values: dict) -> list[str]:
        """Problems of the frame's LiDAR scan against the store's LiDAR arrays; puts the good arrays in `values`."""
        keys = ("lidar_range", "lidar_tag", "lidar_to_world")
        given = [k for k in keys if getattr(frame, k, None) is not None]
        if self._lidar_shape is None:
            return [f"the frame carries a LiDAR scan ({', '.join(given)}) but the store was created without a LiDAR: "
                    "collect with --lidar into a new store, or drop the scan"] if given else []
        if len(given) < len(keys):
            return [f"the store has a LiDAR but the frame lacks {[k for k in keys if k not in given]}: give the "
                    "backend the store's LidarSpec"]
        problems = []
        c, a = self._lidar_shape
        for key, shape, dtypes in (("lidar_range", (c, a), (np.float32,)), ("lidar_tag", (c, a), (np.uint8,)),
                                   ("lidar_to_world", (4, 4), (np.float64, np.float32))):
            v = np.asarray(getattr(frame, key))
            if v.shape != shape:
                problems.append(f"{key} has shape {v.shape}, expected {shape} (the LiDAR's channels x columns)")
            elif v.dtype not in [np.dtype(d) for d in dtypes]:
                problems.append(f"{key} has dtype {v.dtype}, expected {np.dtype(dtypes[0])}")
            else:
                values[key] = np.ascontiguousarray(v, dtype=dtypes[0])
        rng = values.get("lidar_range")
        if rng is not None and (np.isnan(rng).any() or (rng <= 0).any()):
            problems.append("lidar_range holds NaN or non-positive values: ranges are metres > 0, inf = no return")
        return problems

    def last_ego_to_world(self) -> np.ndarray | None:
        """`[4,4]` ego_to_world of the last committed frame, or None when nothing is committed."""
        if self.committed == 0:
            return None
        if self._last_ego is None:
            self._last_ego = np.asarray(self._arrays["ego_to_world"][self.committed - 1])
        return np.array(self._last_ego)

    def finish(self) -> None:
        """Mark the episode complete. Only valid once all planned frames are committed.

        (`append` already sets ``complete`` with the last commit, so a crash after the last frame leaves a
        complete episode; calling `finish` states the intent and checks it.)
        """
        if self.committed != self.num_frames:
            raise ValueError(f"{self.name} has {self.committed} of {self.num_frames} frames committed: "
                             "append the rest before finish()")
        if not self.complete:
            self._group.update_attributes({"complete": True})
            self.complete = True


def _root_attrs(root_attrs: dict) -> dict:
    """Validated, JSON-ready root attributes with the writer's additions."""
    missing = [k for k in COLLECTOR_ROOT_ATTRS if k not in root_attrs]
    if missing:
        raise ValueError(f"root_attrs is missing {missing}: the collector must pass {list(COLLECTOR_ROOT_ATTRS)}")
    rig = root_attrs["rig"]
    rig = rig if isinstance(rig, Rig) else Rig.from_list(list(rig))
    fps = root_attrs["fps"]
    if not isinstance(fps, (int, float, np.integer, np.floating)) or not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    reserved = {"format_version", "conventions", "created", "lidar_beams"} & set(root_attrs)
    if reserved:
        raise ValueError(f"root_attrs must not set {sorted(reserved)}: the writer records them")
    attrs = {k: to_json(v, f"root attribute {k!r}") for k, v in root_attrs.items()
             if k not in ("software", "rig", "lidar")}
    lidar = root_attrs.get("lidar")
    if lidar is not None:
        spec = lidar if isinstance(lidar, LidarSpec) else LidarSpec.from_json(lidar, where="root attribute 'lidar'")
        attrs.update(lidar=spec.to_json(), lidar_beams=spec.beam_tables())
    extra_software = root_attrs.get("software") or {}
    if not isinstance(extra_software, dict):
        raise ValueError(f"root attribute 'software' must be a dict of versions, got {type(extra_software).__name__}")
    attrs.update(format_version=FORMAT_VERSION, rig=rig.to_list(), fps=float(fps), conventions=dict(CONVENTIONS),
                 software=software_versions(extra_software),
                 created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    attrs.setdefault("collection", {})
    if not isinstance(attrs["collection"], dict):
        raise ValueError(f"root attribute 'collection' must be a dict, got {type(attrs['collection']).__name__}")
    return attrs
