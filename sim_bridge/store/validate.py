"""Validation of capture stores: every problem found, one line each, naming the episode/array and the fix.

Cheap checks (always, also when the reader opens a store): format version, required root attributes, a
parseable rig, the `episodes` group, episode attributes, arrays present with the shapes and dtypes the rig
implies, committed_frames <= planned_frames, and finite rigid `cam_to_world`/`ego_to_world` (orthonormal
rotation, det +1, last row 0 0 0 1) and finite timestamps for the committed frames.

A store with the ``lidar`` root attribute (`sim_bridge.store.schema`) also needs a valid LiDAR description, beam
tables ``lidar_beams`` that agree with it, the ``lidar_*`` arrays of `LIDAR_ARRAYS` in every episode with the
range-image shape ``[T, channels, columns]`` and rigid committed ``lidar_to_world`` poses; a store without it must
have no ``lidar_*`` array. Stores captured without a LiDAR are checked exactly as before.

Deep checks (`deep=True`): every chunk of every committed frame exists and decodes (the crc32c codec at the end
of every chunk makes a truncated or corrupt chunk fail instead of returning wrong data).

Absent chunks. zarr reads an absent chunk as the array's fill value (0), and a writer without zarr's
``write_empty_chunks`` skips storing a chunk equal to it, so an absent chunk is either lost or fill-valued data.
The rule:

* An episode with ``every_chunk_stored: true`` (every episode this version writes: all its arrays, created or
  reopened for a resume, store every chunk) is strict: an absent chunk of a committed frame is lost, a problem.
* An episode without it was written by an older writer that skipped fill-valued chunks after a resume. There an
  absent chunk is accepted, as a note, where a whole chunk of 0 is a legitimate value of that array at that frame
  (`ArrayLayout.zero_is_data`: any frame of ``rgb``/``semantic`` — a black or all-unlabelled image — and frame 0
  of ``timestamp``/``frame``, which start at 0 and increase); everywhere else (``depth``, the poses, later
  timestamps and frame ids) it is lost, a problem. A lost black image in such an episode cannot be told from a
  skipped one; re-collect the episode if that matters.

Completeness is not a problem: `StoreInspection.frames_committed` of `frames_planned` (the planned frames of every
episode, plus the recorded ``collection.frames`` for each recorded episode not yet created) says how far a
collection got; `sim_bridge validate` reports an incomplete store with its own exit status (`EXIT_INCOMPLETE`).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from zarr.core.sync import sync

from sim_bridge.lidar import LidarError, LidarSpec
from sim_bridge.rig import Rig
from sim_bridge.rigid import rigid_problems
from sim_bridge.store.schema import (ARRAY_BY_NAME, ARRAYS, COLLECTOR_ROOT_ATTRS, EPISODE_ATTRS, EPISODES_GROUP,
                                     EVERY_CHUNK_STORED, FORMAT_VERSION, LIDAR_ARRAYS, REQUIRED_ROOT_ATTRS, StoreError,
                                     episode_name, open_group, parse_episode_name)

__all__ = ["validate_store", "validate_report", "ValidationReport", "StoreError", "inspect_group", "StoreInspection",
           "EpisodeInspection", "EXIT_VALID", "EXIT_PROBLEMS", "EXIT_INCOMPLETE"]

#: `sim_bridge validate` exit statuses (2 is click's usage error): valid and complete; problems found; valid but
#: incomplete (a collection was interrupted: resume it).
EXIT_VALID, EXIT_PROBLEMS, EXIT_INCOMPLETE = 0, 1, 3

#: Frames decoded per read in the deep check (one zarr call decodes their chunks concurrently).
_DEEP_BATCH = 16
#: Positions listed per problem line before "(+k more)".
_MAX_LISTED = 6


def _recollect(name: str) -> str:
    return f"delete episodes/{name} and run `sim_bridge collect --resume` on the store to capture it again"


def _keep_prefix(name: str, t: int) -> str:
    return (f"set the committed_frames attribute of episodes/{name} to {t} to keep the frames before it and run "
            f"`sim_bridge collect --resume`, or {_recollect(name)}")


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


@dataclass
class EpisodeInspection:
    """What validation learned about one episode group.

    Attributes:
        name: group name (``episode_0000``).
        group: the zarr group.
        attrs: its attributes.
        arrays: the zarr arrays found with the expected shape and dtype, by name.
        committed: committed frames (0 when unknown).
        planned: planned frames (0 when unknown).
        small: committed part of ``cam_to_world [T,N,4,4]``, ``ego_to_world [T,4,4]``, ``timestamp [T]``,
            ``frame [T]`` (and ``lidar_to_world [T,4,4]`` with a LiDAR) as numpy arrays (those that could be read).
        problems: one line per problem.
        notes: one line per fact worth knowing that is not a problem (absent chunks accepted as fill values).
    """

    name: str
    group: Any
    attrs: dict
    arrays: dict = field(default_factory=dict)
    committed: int = 0
    planned: int = 0
    small: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def recoverable(self) -> bool:
        """True when nothing is committed yet: the writer recreates such an episode on resume."""
        return self.committed == 0


@dataclass
class StoreInspection:
    """Result of `inspect_group`: root facts (`lidar`: the store's LiDAR or None), episodes (sorted by index) and
    all problems."""

    path: str
    group: Any
    attrs: dict
    rig: Rig | None
    episodes: dict = field(default_factory=dict)
    root_problems: list = field(default_factory=list)
    lidar: LidarSpec | None = None

    @property
    def problems(self) -> list[str]:
        """Every problem, root first, then by episode."""
        return self.root_problems + [p for e in self.episodes.values() for p in e.problems]

    @property
    def notes(self) -> list[str]:
        """Every note (not a problem), by episode."""
        return [n for e in self.episodes.values() for n in e.notes]

    @property
    def frames_committed(self) -> int:
        """Committed frames over all episodes."""
        return sum(e.committed for e in self.episodes.values())

    @property
    def frames_planned(self) -> int:
        """Planned frames over all episodes, plus the recorded ``collection.frames`` for each episode of the
        recorded ``collection.episodes`` that does not exist yet (a collection stopped before creating it)."""
        planned = sum(e.planned for e in self.episodes.values())
        collection = self.attrs.get("collection")
        if isinstance(collection, dict) and self.rig is not None:
            n, frames = collection.get("episodes"), collection.get("frames")
            if isinstance(n, int) and isinstance(frames, int) and not isinstance(n, bool):
                planned += frames * sum(1 for i in range(n) if episode_name(i) not in self.episodes)
        return planned


def _check_root_attrs(attrs: dict) -> tuple[list[str], Rig | None, bool]:
    """Problems of the root attributes, the parsed rig, and whether episode checks can go on."""
    problems: list[str] = []
    missing = [k for k in REQUIRED_ROOT_ATTRS if k not in attrs]
    if "format_version" not in attrs and all(k not in attrs for k in COLLECTOR_ROOT_ATTRS):
        return ([f"not a capture store: root attributes {missing} are missing; point at a store written by "
                 "`sim_bridge collect` (or collect one)"], None, False)
    version = attrs.get("format_version")
    if "format_version" in attrs and version != FORMAT_VERSION:
        return ([f"store format {FORMAT_VERSION} expected, found {version}: re-collect with this version of "
                 "sim_bridge or use a matching nfldm"], None, False)
    if missing:
        problems.append(f"root attribute(s) {missing} missing: the store is incomplete or was not written by "
                        "sim_bridge; re-collect it with `sim_bridge collect`")
    rig = None
    if "rig" in attrs:
        try:
            rig = Rig.from_list(attrs["rig"])
        except Exception as e:  # noqa: BLE001 - any malformed rig is reported the same way
            problems.append(f"root attribute 'rig' is invalid ({e}): it must be the list Rig.to_list() writes; "
                            "re-collect the store")
    fps = attrs.get("fps")
    if "fps" in attrs and (not isinstance(fps, (int, float)) or isinstance(fps, bool) or not np.isfinite(fps) or fps <= 0):
        problems.append(f"root attribute 'fps' is {fps!r}, expected a positive number: re-collect the store")
    return problems, rig, rig is not None


def _check_lidar_attrs(attrs: dict) -> tuple[list[str], LidarSpec | None]:
    """Problems of the ``lidar`` / ``lidar_beams`` root attributes and the parsed LiDAR (None without one)."""
    if "lidar" not in attrs:
        if "lidar_beams" in attrs:
            return ["root attribute 'lidar_beams' without 'lidar': the LiDAR description is missing; re-collect the "
                    "store with `sim_bridge collect --lidar`"], None
        return [], None
    try:
        spec = LidarSpec.from_json(attrs["lidar"], where="root attribute 'lidar'")
    except LidarError as e:
        return [f"{e}; re-collect the store with `sim_bridge collect --lidar`"], None
    beams = attrs.get("lidar_beams")
    want = spec.beam_tables()
    ok = isinstance(beams, dict) and all(
        isinstance(beams.get(k), list) and len(beams[k]) == len(v) and np.allclose(beams[k], v, rtol=0, atol=1e-9)
        for k, v in want.items())
    if not ok:
        return [f"root attribute 'lidar_beams' is missing or disagrees with the LiDAR {spec.name!r} ({spec.channels} "
                f"elevations, {spec.points_per_channel} azimuths expected): set it to LidarSpec.beam_tables() of "
                "attrs['lidar'], or re-collect the store"], spec
    return [], spec


def _ints(attrs: dict, keys: tuple[str, ...]) -> list[str]:
    return [k for k in keys if k in attrs and (not isinstance(attrs[k], int) or isinstance(attrs[k], bool))]


def _inspect_episode(name: str, group, rig: Rig, deep: bool, lidar: LidarSpec | None = None) -> EpisodeInspection:
    attrs = dict(group.attrs)
    ep = EpisodeInspection(name=name, group=group, attrs=attrs)
    missing = [k for k in EPISODE_ATTRS if k not in attrs]
    if missing:
        ep.problems.append(f"{name}: attribute(s) {missing} missing (collection stopped while creating it?): "
                           f"{_recollect(name)}")
        return ep
    bad = _ints(attrs, ("index", "seed", "planned_frames", "committed_frames"))
    if bad or not isinstance(attrs["complete"], bool):
        ep.problems.append(f"{name}: attribute(s) {bad + ([] if isinstance(attrs['complete'], bool) else ['complete'])} "
                           f"have the wrong type (integers, and a bool for complete): {_recollect(name)}")
        return ep
    planned, committed = attrs["planned_frames"], attrs["committed_frames"]
    ep.planned = max(planned, 0)
    if attrs["index"] != parse_episode_name(name):
        ep.problems.append(f"{name}: attribute index is {attrs['index']}, the group name says {parse_episode_name(name)}: "
                           f"set index to {parse_episode_name(name)}")
    if planned < 0 or committed < 0:
        ep.problems.append(f"{name}: planned_frames {planned} / committed_frames {committed} is negative: {_recollect(name)}")
        return ep
    if committed > planned:
        ep.problems.append(f"{name}: committed_frames {committed} > planned_frames {planned}: the attributes are "
                           f"corrupt; set committed_frames to at most {planned}, or {_recollect(name)}")
        ep.committed = planned  # not recoverable by recreating the episode
        committed = 0  # which frames hold data is unknown: check shapes only
    else:
        ep.committed = committed
        if attrs["complete"] and committed != planned:
            ep.problems.append(f"{name}: marked complete with {committed} of {planned} frames committed: set complete "
                               "to false and run `sim_bridge collect --resume` to capture the rest")

    n, h, w = len(rig), rig.height, rig.width
    layouts = [(layout, (n, h, w)) for layout in ARRAYS]
    if lidar is not None:
        layouts += [(layout, (1, *lidar.range_image_shape)) for layout in LIDAR_ARRAYS]
    else:
        stray = [a.name for a in LIDAR_ARRAYS if a.name in group]
        if stray:
            ep.problems.append(f"{name}: LiDAR array(s) {stray} in a store without the 'lidar' root attribute: "
                               f"delete them, or {_recollect(name)}")
    for layout, (n, h, w) in layouts:
        where = f"{name}/{layout.name}"
        try:
            arr = group[layout.name]
        except KeyError:
            ep.problems.append(f"{where}: array missing: {_recollect(name)}")
            continue
        except Exception as e:  # noqa: BLE001 - unreadable metadata
            ep.problems.append(f"{where}: array metadata cannot be read ({type(e).__name__}: {e}): {_recollect(name)}")
            continue
        if not hasattr(arr, "shape") or not hasattr(arr, "dtype") or hasattr(arr, "group_keys"):
            ep.problems.append(f"{where}: is a group, expected an array: {_recollect(name)}")
            continue
        expected = layout.shape(planned, n, h, w)
        if tuple(arr.shape) != expected:
            what = (f"{h} channels x {w} columns of the LiDAR" if layout in LIDAR_ARRAYS else
                    f"{n} rig cameras, {h}x{w} pixels")
            ep.problems.append(f"{where}: shape {tuple(arr.shape)}, expected {expected} (planned_frames, {what}): the "
                               f"array does not match the store's attributes; {_recollect(name)}")
            continue
        if np.dtype(arr.dtype) != layout.dtype:
            ep.problems.append(f"{where}: dtype {np.dtype(arr.dtype)}, expected {layout.dtype}: {_recollect(name)}")
            continue
        ep.arrays[layout.name] = arr

    for key in ("cam_to_world", "ego_to_world", "timestamp", "frame", "lidar_to_world"):
        if key not in ep.arrays:
            continue
        try:
            ep.small[key] = np.asarray(ep.arrays[key][:committed]) if committed else \
                np.zeros((0, *ep.arrays[key].shape[1:]), ep.arrays[key].dtype)
        except Exception as e:  # noqa: BLE001 - a corrupt chunk of a small array
            ep.problems.append(f"{name}/{key}: cannot be read ({type(e).__name__}: {e}): a chunk is truncated or "
                               f"corrupt; {_recollect(name)}")
    for key in ("cam_to_world", "ego_to_world", "lidar_to_world"):
        if key in ep.small:
            ep.problems += _pose_problems(name, key, ep.small[key])
    if "timestamp" in ep.small:
        bad_t = np.flatnonzero(~np.isfinite(ep.small["timestamp"]))
        if bad_t.size:
            ep.problems.append(f"{name}/timestamp: non-finite at frame(s) {_listing([str(t) for t in bad_t])}: "
                               f"{_keep_prefix(name, int(bad_t[0]))}")
    if deep:
        strict = attrs.get(EVERY_CHUNK_STORED) is True
        for layout, _ in layouts:
            if layout.name in ep.arrays:
                problems, notes = _deep_check(name, layout.name, ep.arrays[layout.name], committed, strict)
                ep.problems += problems
                ep.notes += notes
    return ep


def _pose_problems(name: str, key: str, mats: np.ndarray) -> list[str]:
    """One line per kind of defect of the `[T,(N,)4,4]` matrices `mats`."""
    reasons = rigid_problems(mats)
    by_reason: dict[str, list[tuple]] = {}
    for idx in zip(*np.nonzero(reasons != "")):
        by_reason.setdefault(str(reasons[idx]).split(" (")[0], []).append(tuple(int(i) for i in idx))
    lines = []
    for reason, where in by_reason.items():
        detail = str(reasons[where[0]])
        places = [f"frame {i[0]}" + (f" camera {i[1]}" if len(i) > 1 else "") for i in where]
        lines.append(f"{name}/{key}: not a rigid transform, {detail}, at {_listing(places)}: the capture wrote a "
                     f"bad pose; {_keep_prefix(name, where[0][0])}")
    return lines


def _chunk_grid(arr) -> list[int]:
    return [-(-s // c) for s, c in zip(arr.shape, arr.chunks)]


def _existing_keys(arr) -> set[str] | None:
    """Chunk keys stored under `arr` (relative to the store root), or None if the store cannot list."""
    store, prefix = arr.store_path.store, arr.store_path.path
    if not getattr(store, "supports_listing", False):
        return None

    async def _list():
        return {k async for k in store.list_prefix(prefix + "/")}

    return sync(_list())


def _deep_check(name: str, key: str, arr, committed: int, strict: bool) -> tuple[list[str], list[str]]:
    """(problems, notes) of the first `committed` frames of `arr`: absent chunks (lost, or with `strict` False
    possibly fill-valued data, see the module docstring) and undecodable ones."""
    if committed == 0:
        return [], []
    where = f"{name}/{key}"
    problems, notes = [], []
    grid = _chunk_grid(arr)
    keys = _existing_keys(arr)
    if keys is not None:
        missing, skipped = [], []
        layout = ARRAY_BY_NAME[key]
        for t in range(committed):
            for rest in itertools.product(*(range(g) for g in grid[1:])):
                k = f"{arr.store_path.path}/{arr.metadata.encode_chunk_key((t, *rest))}"
                if k not in keys:
                    (skipped if not strict and layout.zero_can_be_data(t) else missing).append((t, rest))

        def at(found):
            return _listing([f"frame {t}" + (f" camera {r[0]}" if grid[1:] and grid[1] > 1 else "") for t, r in found])

        if missing:
            problems.append(f"{where}: chunk(s) of committed frames missing at {at(missing)}: "
                            f"{_keep_prefix(name, missing[0][0])}")
        if skipped:
            notes.append(f"{where}: chunk(s) absent at {at(skipped)}, read as the fill value 0, which is valid "
                         f"data there; this episode was written by an older sim_bridge that did not store chunks "
                         f"equal to the fill value after a resume (no '{EVERY_CHUNK_STORED}' attribute): nothing to do")
    broken: list[tuple[int, int | None, str]] = []
    for t0 in range(0, committed, _DEEP_BATCH):
        t1 = min(committed, t0 + _DEEP_BATCH)
        try:
            arr[t0:t1]
            continue
        except Exception:  # noqa: BLE001 - locate the bad chunk(s) below
            pass
        for t in range(t0, t1):
            try:
                arr[t]
                continue
            except Exception as e:  # noqa: BLE001
                err = f"{type(e).__name__}: {e}"
            cams = range(arr.shape[1]) if arr.ndim > 1 and grid[1] > 1 else [None]
            bad_cams = []
            for c in cams:
                if c is None:
                    bad_cams.append((None, err))
                    continue
                try:
                    arr[t, c]
                except Exception as e:  # noqa: BLE001
                    bad_cams.append((c, f"{type(e).__name__}: {e}"))
            broken += [(t, c, msg) for c, msg in (bad_cams or [(None, err)])]
    if broken:
        places = [f"frame {t}" + (f" camera {c}" if c is not None else "") for t, c, _ in broken]
        problems.append(f"{where}: chunk(s) cannot be decoded (truncated or corrupt; {broken[0][2][:120]}) at "
                        f"{_listing(places)}: {_keep_prefix(name, broken[0][0])}")
    return problems, notes


def inspect_group(group, path: str, deep: bool = False) -> StoreInspection:
    """Check an opened capture-store root `group`; returns what was found and every problem (never raises
    for store content)."""
    attrs = dict(group.attrs)
    root_problems, rig, go_on = _check_root_attrs(attrs)
    ins = StoreInspection(path=path, group=group, attrs=attrs, rig=rig, root_problems=root_problems)
    if not go_on:
        return ins
    lidar_problems, ins.lidar = _check_lidar_attrs(attrs)
    ins.root_problems += lidar_problems
    try:
        episodes = group[EPISODES_GROUP]
    except KeyError:
        ins.root_problems.append(f"group '{EPISODES_GROUP}' missing: the store was not created by StoreWriter; "
                                 "re-collect it with `sim_bridge collect`")
        return ins
    members = []
    for key in sorted(episodes.keys()):
        index = parse_episode_name(key)
        if index is None:
            ins.root_problems.append(f"{EPISODES_GROUP}/{key} is not an episode (names are episode_NNNN): remove it")
            continue
        try:
            member = episodes[key]
        except Exception as e:  # noqa: BLE001 - unreadable group metadata
            ins.root_problems.append(f"{key}: group metadata cannot be read ({type(e).__name__}: {e}): {_recollect(key)}")
            continue
        if not hasattr(member, "group_keys"):
            ins.root_problems.append(f"{EPISODES_GROUP}/{key} is an array, expected an episode group: remove it")
            continue
        members.append((index, key, member))
    for _, key, member in sorted(members):
        ins.episodes[key] = _inspect_episode(key, member, rig, deep, ins.lidar)
    return ins


def validate_store(path: str, storage_options: dict | None = None, deep: bool = True) -> list[str]:
    """Every problem of the capture store at `path` (local path or fsspec URL), one human-readable line each.

    Returns [] for a valid store. `deep=True` also reads and decodes every chunk of every committed frame.
    """
    return validate_report(path, storage_options, deep).problems


@dataclass
class ValidationReport:
    """What `sim_bridge validate` reports about a store.

    Attributes:
        path: the store as given.
        problems: one line per problem ([] for a valid store).
        notes: one line per note (never affects validity).
        frames_committed, frames_planned: committed and planned frames over all episodes (0, 0 when the store
            could not be inspected).
    """

    path: str
    problems: list
    notes: list
    frames_committed: int
    frames_planned: int

    @property
    def incomplete(self) -> bool:
        """True when fewer frames are committed than planned (an interrupted collection)."""
        return self.frames_committed < self.frames_planned

    @property
    def exit_code(self) -> int:
        """`EXIT_PROBLEMS` if any problem, else `EXIT_INCOMPLETE` if incomplete, else `EXIT_VALID`."""
        return EXIT_PROBLEMS if self.problems else EXIT_INCOMPLETE if self.incomplete else EXIT_VALID

    def incomplete_line(self) -> str:
        """The line saying how far the collection got and how to continue it."""
        return (f"{self.path}: incomplete: {self.frames_committed} of {self.frames_planned} frames; resume with "
                f"`sim_bridge collect --out {self.path} --resume`")


def validate_report(path: str, storage_options: dict | None = None, deep: bool = True) -> ValidationReport:
    """Problems, notes and completeness of the capture store at `path` (see `validate_store`)."""
    try:
        group = open_group(path, "r", storage_options)
    except Exception as e:  # noqa: BLE001 - not found, not zarr v3, unreadable: all reported as one line
        return ValidationReport(str(path), [f"{path}: no zarr v3 group can be opened there ({type(e).__name__}: {e}): "
                                            "check the path or URL; capture stores are written by "
                                            f"`sim_bridge collect --out {path}`"], [], 0, 0)
    ins = inspect_group(group, str(path), deep=deep)
    return ValidationReport(str(path), ins.problems, ins.notes, ins.frames_committed, ins.frames_planned)


def raise_if_problems(ins: StoreInspection, only_committed: bool = False) -> None:
    """Raise `StoreError` listing the problems of `ins` (with `only_committed`, ignore those of episodes
    that have no committed frame yet: the writer recreates them)."""
    problems = list(ins.root_problems)
    for ep in ins.episodes.values():
        if not (only_committed and ep.recoverable):
            problems += ep.problems
    if problems:
        raise StoreError(ins.path, problems)
