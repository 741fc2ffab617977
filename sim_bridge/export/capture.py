"""`export_capture`: the episodes of a capture store as a nuScenes-format dataset (``sim_bridge export-nuscenes``).

One nuScenes scene (and log) per episode, one sample per committed frame; per camera an image, its depth
(``.npy``) and CARLA tags (``.png``) as extras; with a LiDAR (``sim_bridge collect --lidar``) one ``LIDAR_TOP`` scan
per frame: the range image's returns as points ``r · direction`` in the sensor frame (`LidarSpec.directions`), ring =
the beam's row, intensity 1.0 (not modelled), labels as nuScenes-lidarseg and as raw CARLA tags.

Mapping (`sim_bridge.export.nuscenes`):

* scene name ``<town>-<episode group>`` (``Town03-episode_0000``); log location = the town, vehicle = the backend,
  date = the store's ``created`` date;
* timestamps: ``created`` (UTC, as microseconds since the Unix epoch) + ``index · spacing`` + ``round(timestamp ·
  1e6)``, so samples of an episode are ``timestamp`` seconds apart exactly as captured, and episodes follow each
  other without overlapping (``spacing``: whole hours longer than the store's longest episode,
  `sim_bridge.export.nuscenes_tables.scene_spacing_us`; the same whichever episodes are exported);
* ``calibrated_sensor``: the rig's ``cam_to_ego`` and ``K`` per camera, the LiDAR's ``lidar_to_ego``;
* ``ego_pose`` of each reading: the sensor's captured pose composed with the inverse mount (``cam_to_world ·
  cam_to_ego⁻¹``, ``lidar_to_world · lidar_to_ego⁻¹``), so the devkit's chain sensor -> ego -> global reproduces the
  captured sensor pose (it equals ``ego_to_world`` of the frame for a rigid rig).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from sim_bridge.export.nuscenes import CameraReading, LidarReading, NuScenesWriter, Sample, check_export_output
from sim_bridge.export.nuscenes_tables import ExportError, channel_name, check_version, scene_spacing_us
from sim_bridge.lidar import LidarSpec
from sim_bridge.rig import Rig

__all__ = ["export_capture", "ExportSummary", "capture_samples", "parse_episodes", "range_image_points",
           "created_microseconds"]


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote: the folder, the tables' version, scene names, samples and sample_data records, and
    whether LiDAR scans were written."""

    out: Path
    version: str
    scenes: tuple[str, ...]
    samples: int
    sample_data: int
    lidar: bool


def created_microseconds(created: str) -> int:
    """Microseconds since the Unix epoch of an ISO 8601 time (a store's ``created``; naive times are UTC)."""
    try:
        t = datetime.fromisoformat(str(created))
    except ValueError as e:
        raise ExportError(f"store attribute created={created!r} is not an ISO 8601 time: the store was not written "
                          "by `sim_bridge collect`") from e
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    delta = t - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def range_image_points(ranges: np.ndarray, directions: np.ndarray,
                       tags: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The returns of a range image as points.

    Args:
        ranges: ``[C, A]`` metres along each beam, ``inf`` = no return.
        directions: ``[C, A, 3]`` unit beam directions in the sensor frame (`LidarSpec.directions`).
        tags: ``[C, A]`` uint8 CARLA tags, or None.
    Returns:
        ``(points [N, 4] float32`` x, y, z (sensor frame, m) and intensity 1.0, ``ring [N] int64`` (the row),
        ``tags [N] uint8`` or None``)``, row-major over the image (the order of the SDK's `LidarScan.points`).
    """
    r = np.asarray(ranges)
    ok = np.isfinite(r)
    rows = np.nonzero(ok)[0].astype(np.int64)
    xyz = directions[ok] * r[ok, None].astype(np.float64)
    pts = np.concatenate([xyz, np.ones((len(xyz), 1))], axis=1).astype(np.float32)
    return pts, rows, None if tags is None else np.asarray(tags, dtype=np.uint8)[ok]


def parse_episodes(spec: str | Sequence[str | int] | None, names: list[str]) -> list[str]:
    """Episode group names of ``--episodes``: None = all; else indices or names (a comma-separated string or a
    list), in the order given. Raises `ExportError` for an unknown or repeated episode."""
    if spec is None:
        return list(names)
    items = [s.strip() for s in spec.split(",") if s.strip()] if isinstance(spec, str) else list(spec)
    if not items:
        raise ExportError("--episodes is empty: give indices (0,2) or names (episode_0000), or leave it out for all")
    out = []
    for item in items:
        text = str(item)
        if text.lstrip("-").isdigit():
            i = int(text)
            if not -len(names) <= i < len(names):
                raise ExportError(f"episode {i} out of range: the store has {len(names)} episode(s) "
                                  f"({', '.join(names)})")
            name = names[i]
        elif text in names:
            name = text
        else:
            raise ExportError(f"no episode {text!r}: the store has {', '.join(names)} (or give their indices)")
        if name in out:
            raise ExportError(f"episode {name} is selected twice in --episodes")
        out.append(name)
    return out


def _mount_inverse(m: np.ndarray) -> np.ndarray:
    inv = np.eye(4)
    inv[:3, :3] = m[:3, :3].T
    inv[:3, 3] = -m[:3, :3].T @ m[:3, 3]
    return inv


def capture_samples(episode, rig: Rig, lidar: LidarSpec | None, start_us: int) -> Iterator[Sample]:
    """The nuScenes samples of one `sim_bridge.store.reader.Episode`, one per committed frame, lazily (module
    docstring: timestamps ``start_us + round(timestamp · 1e6)``, per-reading ego poses from the sensor poses)."""
    channels = [channel_name(c.name) for c in rig.cameras]
    c2e = rig.cam_to_ego()                                                   # [N, 4, 4]
    e2c = [_mount_inverse(m) for m in c2e]
    dirs = lidar.directions() if lidar is not None and episode.has_lidar else None
    l2e = None if dirs is None else np.array(lidar.lidar_to_ego)
    for t in range(episode.num_frames):
        ts = int(start_us) + int(round(float(episode.timestamp[t]) * 1_000_000))
        rgb, depth, sem = episode.rgb[t], episode.depth[t], episode.semantic[t]
        cams = [CameraReading(channel=channels[n], rgb=rgb[n], K=cam.K, cam_to_ego=c2e[n],
                              ego_to_world=episode.cam_to_world[t, n] @ e2c[n], timestamp_us=ts, depth=depth[n],
                              semantic=sem[n], model=cam.model, distortion=cam.distortion)
                for n, cam in enumerate(rig.cameras)]
        scan = None
        if dirs is not None:
            pts, ring, tags = range_image_points(episode.lidar_range[t], dirs, episode.lidar_tag[t])
            scan = LidarReading(points=pts, ring=ring, tags=tags, lidar_to_ego=l2e,
                                ego_to_world=episode.lidar_to_world[t] @ _mount_inverse(l2e), timestamp_us=ts)
        yield Sample(timestamp_us=ts, cameras=cams, lidar=scan)


def export_capture(store: str, out: str | Path, *, episodes: str | Sequence[str | int] | None = None,
                   version: str = "v1.0-nfldm", overwrite: bool = False, image_format: str = "jpg",
                   jpeg_quality: int = 95, log: Callable[[str], None] | None = None) -> ExportSummary:
    """Export capture store `store` (path or fsspec URL) to a nuScenes-format dataset at `out`.

    Every check (the store opens and validates, the episodes exist and hold frames, the rig's channel names are
    distinct, `out` may be written: `check_export_output`) runs before anything is written; the dataset appears at
    `out` only once complete.

    Args:
        store: the capture store.
        out: the dataset folder (the devkit's ``dataroot``).
        episodes: which episodes (`parse_episodes`; default all with at least one committed frame).
        version: the tables' folder (``v1.0-<name>``).
        overwrite: replace an existing export of ours at `out`.
        image_format, jpeg_quality: camera images (`NuScenesWriter`).
        log: receives one line per exported episode.
    Raises:
        FileNotFoundError: no store at `store`. StoreError: the store is invalid. ExportError: anything else above.
    """
    from sim_bridge.store.reader import open_store  # start-up time: zarr loads only when an export runs

    check_version(version)
    check_export_output(out, overwrite)
    s = open_store(store)
    chosen = parse_episodes(episodes, s.episode_names)
    if episodes is None:
        chosen = [n for n in chosen if s.episode(n).num_frames > 0]
    empty = [n for n in chosen if s.episode(n).num_frames == 0]
    if empty or not chosen:
        raise ExportError(f"{store}: episode(s) {', '.join(empty) or '(all)'} hold no committed frame: nothing to "
                          "export (resume the collection with `sim_bridge collect --resume`, or choose others)")
    channels = [channel_name(c.name) for c in s.rig.cameras]
    if len(set(channels)) != len(channels):
        raise ExportError(f"the rig's cameras {s.rig.names} give the nuScenes channels {channels}, which repeat: "
                          "rename the cameras")
    attrs = s.attrs
    start_us = created_microseconds(attrs["created"])
    spacing = scene_spacing_us(max((float(e.timestamp[-1]) for e in s if e.num_frames), default=0.0))
    date = datetime.fromtimestamp(start_us / 1e6, tz=timezone.utc).date().isoformat()
    source = "|".join(str(attrs.get(k)) for k in ("backend", "town", "weather", "seed", "created"))
    info = {"kind": "capture store", "backend": s.backend, "town": s.town, "weather": s.weather, "seed": s.seed,
            "fps": s.fps, "created": attrs["created"], "format_version": s.format_version, "episodes": chosen,
            "rig": s.rig.to_list(), "lidar": None if s.lidar is None else s.lidar.to_json()}
    samples = sample_data = 0
    with NuScenesWriter(out, version, source=source, source_info=info, overwrite=overwrite, image_format=image_format,
                        jpeg_quality=jpeg_quality) as writer:
        for name in chosen:
            ep = s.episode(name)
            scene = f"{s.town}-{name}"
            writer.add_scene(scene, capture_samples(ep, s.rig, s.lidar, start_us + ep.index * spacing), location=s.town,
                             date_captured=date, vehicle=s.backend, logfile=name,
                             description=f"{s.backend} capture of {s.town}, {s.weather}, episode {ep.index} (seed "
                                         f"{ep.seed}), {ep.num_frames} frames")
            samples += ep.num_frames
            sample_data += ep.num_frames * (len(s.rig) + int(ep.has_lidar))
            if log is not None:
                log(f"{name}: {ep.num_frames} sample(s) -> scene {scene}")
    return ExportSummary(out=Path(out), version=version, scenes=tuple(f"{s.town}-{n}" for n in chosen),
                         samples=samples, sample_data=sample_data, lidar=s.lidar is not None)
