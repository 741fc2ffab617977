"""`NuScenesWriter`: samples of plain numpy data -> a nuScenes-format dataset folder (the devkit's ``NuScenes``
loads it).

Layout of ``OUT/`` (nuScenes' own, plus our extras under ``nfldm/`` and two extra tables)::

    v1.0-<name>/                 the 13 nuScenes tables: scene, sample, sample_data, ego_pose, calibrated_sensor,
                                 sensor, log, map, category, attribute, visibility, instance, sample_annotation
                                 (+ lidarseg.json with LiDAR labels; + nfldm_export.json, nfldm_sample_data_extra.json)
    samples/CAM_FRONT/<scene>__CAM_FRONT__<timestamp_us>.jpg                  (or .png: ``image_format="png"``)
    samples/LIDAR_TOP/<scene>__LIDAR_TOP__<timestamp_us>.pcd.bin              float32 [N, 5] x, y, z, intensity, ring
    lidarseg/v1.0-<name>/<lidar sample_data token>_lidarseg.bin               uint8 [N] nuScenes-lidarseg indices
    nfldm/depth/CAM_FRONT/<...>.npy                                           float32 [H, W] planar z, m, inf = no hit
    nfldm/semantic/CAM_FRONT/<...>.png                                        uint8 [H, W] CARLA tags (8-bit grey)
    nfldm/lidar_tags/LIDAR_TOP/<...>.bin                                      uint8 [N] CARLA tags, row-aligned
    maps/<map token>.png                                                      a 1x1 background placeholder

Conventions (`sim_bridge.export.nuscenes_tables`): deterministic uuid5 tokens, quaternions ``[w, x, y, z]``,
``calibrated_sensor`` = sensor -> ego, ``ego_pose`` = ego -> global (one per sample_data, token = the sample_data's,
as nuScenes does), microsecond timestamps, every sample_data a key frame. LiDAR points are in the LiDAR's own frame
(ours: x forward, y left, z up; nuScenes' LIDAR_TOP is mounted turned by 90°, which its calibrated_sensor carries —
ours carries our mount), so the devkit's chain lidar -> ego -> global -> ego(camera time) -> camera lands them on
the camera images. Ring = the beam's row in the range image (0 = the highest beam).

Cameras: nuScenes has pinhole cameras only. A fisheye camera (``model`` ``equidistant`` or ``opencv_fisheye``) is
exported with its ``K`` as ``camera_intrinsic`` and two extra fields in its calibrated_sensor record,
``camera_model`` and ``camera_distortion`` (k1..k4, `sim_bridge.camera_models`); pinhole records have exactly
nuScenes' fields. Readers that project with ``camera_intrinsic`` alone must check ``camera_model`` first.

Nothing appears at ``OUT`` until `NuScenesWriter.close`: the dataset is written to a hidden folder beside it and
moved into place when complete (an existing export of ours is replaced only with ``overwrite=True``; any other
folder in the way is refused). No boxes are exported: ``instance``, ``sample_annotation`` and ``attribute`` are empty
lists; ``category`` holds the 32 nuScenes-lidarseg classes and ``visibility`` nuScenes' four levels.

Example::

    with NuScenesWriter("out/nusc", "v1.0-mini", source="town03") as w:
        w.add_scene("town03-ep0", samples, location="Town03", date_captured="2026-05-01")
"""
from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from sim_bridge import __version__ as nfldm_version
from sim_bridge.camera_models import CAMERA_MODELS
from sim_bridge.export.nuscenes_tables import (EXPORT_FORMAT, EXPORT_FORMAT_VERSION, EXPORT_TABLE, LIDAR_CHANNEL,
                                               LIDARSEG_CATEGORIES, SAMPLE_DATA_EXTRA_TABLE, VISIBILITY, ExportError,
                                               check_scene_name, check_version, lidarseg_indices, make_token,
                                               pose_fields)
from sim_bridge.rigid import rigid_problems

__all__ = ["CameraReading", "LidarReading", "Sample", "NuScenesWriter", "check_export_output", "is_nuscenes_export",
           "NUSCENES_TABLES"]

#: The tables the devkit's ``NuScenes`` loads (each a JSON list in ``v1.0-<name>/``).
NUSCENES_TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
                   "scene", "sample", "sample_data", "sample_annotation", "map")
#: How much a sensor's mount or intrinsics may change within a scene (nuScenes: one calibration per scene and sensor).
CALIBRATION_ATOL = 1e-9


@dataclass(eq=False)
class CameraReading:
    """One camera image of a sample.

    Attributes:
        channel: nuScenes channel, e.g. ``"CAM_FRONT"`` (`sim_bridge.export.nuscenes_tables.channel_name`).
        rgb: ``[H, W, 3]`` uint8 RGB.
        K: ``[3, 3]`` intrinsics, pixels (pixel centres at integer + 0.5, the project's and nuScenes' convention).
        cam_to_ego: ``[4, 4]`` OpenCV camera -> ego (x forward, y left, z up), metres; constant within a scene.
        ego_to_world: ``[4, 4]`` ego -> world at this image's time (its ego_pose record).
        timestamp_us: integer microseconds.
        depth: ``[H, W]`` float32 planar z-depth, metres, ``inf`` = no hit (extra file), or None.
        semantic: ``[H, W]`` uint8 CARLA tags (extra file), or None.
        model: camera model (``pinhole``, ``equidistant``, ``opencv_fisheye``); distortion: ``[4]`` k1..k4 or None.
    """

    channel: str
    rgb: np.ndarray
    K: np.ndarray
    cam_to_ego: np.ndarray
    ego_to_world: np.ndarray
    timestamp_us: int
    depth: np.ndarray | None = None
    semantic: np.ndarray | None = None
    model: str = "pinhole"
    distortion: np.ndarray | None = None


@dataclass(eq=False)
class LidarReading:
    """One LiDAR scan of a sample.

    Attributes:
        points: ``[N, 4]`` x, y, z (the LiDAR's frame, metres) and intensity.
        ring: ``[N]`` integer beam index of each point (the range image's row, 0 = the highest beam).
        lidar_to_ego: ``[4, 4]`` LiDAR -> ego, metres; constant within a scene.
        ego_to_world: ``[4, 4]`` ego -> world at the scan's time.
        timestamp_us: integer microseconds.
        tags: ``[N]`` uint8 CARLA tags of the points (lidarseg + extra file), or None.
        channel: nuScenes channel (default ``LIDAR_TOP``).
    """

    points: np.ndarray
    ring: np.ndarray
    lidar_to_ego: np.ndarray
    ego_to_world: np.ndarray
    timestamp_us: int
    tags: np.ndarray | None = None
    channel: str = LIDAR_CHANNEL


@dataclass(eq=False)
class Sample:
    """One nuScenes sample (a key frame): its timestamp (integer microseconds; strictly increasing within a scene),
    camera images and optional LiDAR scan."""

    timestamp_us: int
    cameras: list[CameraReading] = field(default_factory=list)
    lidar: LidarReading | None = None


def is_nuscenes_export(path: str | Path) -> bool:
    """Whether folder `path` holds an export written by `NuScenesWriter` (a ``v*/nfldm_export.json`` of ours)."""
    for meta in Path(path).glob(f"v*/{EXPORT_TABLE}.json"):
        try:
            if json.loads(meta.read_text()).get("format") == EXPORT_FORMAT:
                return True
        except (OSError, ValueError, AttributeError):
            continue
    return False


def check_export_output(out: str | Path, overwrite: bool) -> Path:
    """`out` as a path, if an export may be written there: absent, an empty folder, or (with `overwrite`) an export
    of ours. Raises `ExportError` otherwise, naming the fix; nothing is written."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise ExportError(f"--out {p} is a file: give a folder for the nuScenes dataset")
    if p.is_dir() and any(p.iterdir()):
        if not overwrite:
            raise ExportError(f"--out {p} already exists: pass --overwrite to replace it, or choose another folder")
        if not is_nuscenes_export(p):
            raise ExportError(f"--out {p} is not a nuScenes export written by nfldm (no v*/{EXPORT_TABLE}.json): "
                              "refusing to replace it; remove it yourself or choose another folder")
    return p


def _matrix(value, shape: tuple[int, ...], what: str) -> np.ndarray:
    try:
        m = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ExportError(f"{what} must be a numeric {list(shape)} matrix ({e})") from e
    if m.shape != shape or not np.isfinite(m).all():
        raise ExportError(f"{what} must be a finite {list(shape)} matrix, got shape {list(m.shape)}"
                          f"{'' if m.shape != shape else ' with non-finite values'}")
    return m


def _rigid(value, what: str) -> np.ndarray:
    m = _matrix(value, (4, 4), what)
    why = rigid_problems(m)[()]
    if why:
        raise ExportError(f"{what} is not a rigid transform ({why}): give [[R, t], [0, 0, 0, 1]] with R a rotation")
    return m


def _timestamp(value, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or int(value) < 0:
        raise ExportError(f"{what} timestamp_us must be a non-negative integer (microseconds), got {value!r}")
    return int(value)


class NuScenesWriter:
    """Writes a nuScenes-format dataset (module docstring): `add_scene` per scene, then `close` (or use ``with``).

    Args:
        out: the dataset folder (``dataroot`` of the devkit); checked here (`check_export_output`).
        version: the tables' folder name (``v1.0-<name>``; the devkit's ``version``).
        source: identifies what is exported in the tokens (`make_token`) and in ``nfldm_export.json``.
        source_info: JSON-ready facts about the source for ``nfldm_export.json`` (no paths or dates of the export,
            so that two exports of one source are byte-identical).
        overwrite: replace an existing export of ours at `out`.
        image_format: ``"jpg"`` (nuScenes' own; lossy) or ``"png"`` (lossless).
        jpeg_quality: JPEG quality, 1..100.
    """

    def __init__(self, out: str | Path, version: str = "v1.0-nfldm", *, source: str = "nfldm",
                 source_info: dict | None = None, overwrite: bool = False, image_format: str = "jpg",
                 jpeg_quality: int = 95):
        if image_format not in ("jpg", "png"):
            raise ExportError(f"image_format {image_format!r}: choose 'jpg' (nuScenes' own) or 'png' (lossless)")
        if not 1 <= int(jpeg_quality) <= 100:
            raise ExportError(f"jpeg_quality {jpeg_quality} must lie in 1..100")
        self.version = check_version(version)
        self.out = check_export_output(out, overwrite)
        self.source, self.source_info = str(source), dict(source_info or {})
        self.image_format, self.jpeg_quality = image_format, int(jpeg_quality)
        self.tables: dict[str, list[dict]] = {name: [] for name in NUSCENES_TABLES}
        self.lidarseg: list[dict] = []
        self.extra: list[dict] = []
        self.scene_names: list[str] = []
        self._sensors: dict[str, str] = {}                       # channel -> modality
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.staging = self.out.parent / f".{self.out.name}.partial-{uuid.uuid4().hex[:8]}"
        self.staging.mkdir()
        self._closed = False

    # ------------------------------------------------------------------ context
    def __enter__(self) -> "NuScenesWriter":
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.close()
        else:
            self.abort()

    def _token(self, table: str, key: str) -> str:
        return make_token(self.source, table, key)

    def abort(self) -> None:
        """Delete what was written so far (nothing at ``out`` is touched)."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self._closed = True

    # ------------------------------------------------------------------ scenes
    def add_scene(self, name: str, samples: Iterable[Sample], *, location: str, date_captured: str,
                  vehicle: str = "nfldm", logfile: str = "", description: str = "") -> str:
        """Write one scene (and its log) of `samples`, in time order; returns the scene token.

        Args:
            name: the scene's name (unique in the export; letters, digits, ``.``, ``_``, ``-``: part of file names).
            samples: the key frames (`Sample`; at least one); consumed lazily, one at a time.
            location, date_captured (``YYYY-MM-DD``), vehicle, logfile: the scene's log record.
            description: the scene's description.
        Raises:
            ExportError: a bad reading (the message names the scene, sample and channel); the export is then
                unusable: `abort` it (``with`` does).
        """
        if self._closed:
            raise ExportError("this NuScenesWriter is closed: make a new one")
        name = check_scene_name(name)
        if name in self.scene_names:
            raise ExportError(f"scene name {name!r} is used twice: give every scene its own name")
        scene_token, log_token = self._token("scene", name), self._token("log", name)
        calibrations: dict[str, tuple[str, np.ndarray, np.ndarray | None]] = {}
        last: dict[str, dict] = {}                               # channel -> its previous sample_data record
        samples_of_scene: list[dict] = []
        for i, sample in enumerate(samples):
            where = f"scene {name!r} sample {i}"
            ts = _timestamp(sample.timestamp_us, where)
            if samples_of_scene and ts <= samples_of_scene[-1]["timestamp"]:
                raise ExportError(f"{where}: timestamp_us {ts} does not increase (previous sample "
                                  f"{samples_of_scene[-1]['timestamp']}): samples must be in time order")
            rec = {"token": self._token("sample", f"{name}/{i}"), "timestamp": ts, "prev": "", "next": "",
                   "scene_token": scene_token}
            if samples_of_scene:
                rec["prev"] = samples_of_scene[-1]["token"]
                samples_of_scene[-1]["next"] = rec["token"]
            samples_of_scene.append(rec)
            readings = [*sample.cameras, *([sample.lidar] if sample.lidar is not None else [])]
            channels = [r.channel for r in readings]
            if len(set(channels)) != len(channels):
                raise ExportError(f"{where}: channels {channels} repeat: one reading per channel and sample")
            if not readings:
                raise ExportError(f"{where} has no camera image and no LiDAR scan: a sample needs at least one")
            for reading in readings:
                self._reading(name, i, rec["token"], reading, calibrations, last, f"{where} {reading.channel}")
        if not samples_of_scene:
            raise ExportError(f"scene {name!r} has no samples: a nuScenes scene needs at least one")
        starts = {self._first_timestamp(s): s["name"] for s in self.tables["scene"]}
        if samples_of_scene[0]["timestamp"] in starts:
            raise ExportError(f"scene {name!r} starts at timestamp_us {samples_of_scene[0]['timestamp']}, as scene "
                              f"{starts[samples_of_scene[0]['timestamp']]!r} does: give scenes distinct start times "
                              "(offset each by scene_spacing_us)")
        self.tables["sample"].extend(samples_of_scene)
        self.tables["scene"].append({"token": scene_token, "log_token": log_token, "nbr_samples": len(samples_of_scene),
                                     "first_sample_token": samples_of_scene[0]["token"],
                                     "last_sample_token": samples_of_scene[-1]["token"], "name": name,
                                     "description": str(description)})
        self.tables["log"].append({"token": log_token, "logfile": str(logfile), "vehicle": str(vehicle),
                                   "date_captured": str(date_captured), "location": str(location)})
        self.scene_names.append(name)
        return scene_token

    def _first_timestamp(self, scene: dict) -> int:
        return next(s["timestamp"] for s in self.tables["sample"] if s["token"] == scene["first_sample_token"])

    def _sensor(self, channel: str, modality: str) -> str:
        known = self._sensors.setdefault(channel, modality)
        if known != modality:
            raise ExportError(f"channel {channel!r} is a {known} and a {modality}: give each sensor its own channel")
        token = self._token("sensor", channel)
        if not any(s["token"] == token for s in self.tables["sensor"]):
            self.tables["sensor"].append({"token": token, "channel": channel, "modality": modality})
        return token

    def _calibration(self, scene: str, channel: str, modality: str, to_ego: np.ndarray, K: np.ndarray | None,
                     extra: dict, calibrations: dict, where: str) -> str:
        """The calibrated_sensor token of `channel` in `scene`, recorded on its first reading; later readings must
        carry the same mount and intrinsics."""
        if channel in calibrations:
            token, first_to_ego, first_K = calibrations[channel]
            if np.abs(first_to_ego - to_ego).max() > CALIBRATION_ATOL or (
                    K is not None and np.abs(first_K - K).max() > CALIBRATION_ATOL):
                raise ExportError(f"{where}: the sensor's mount or intrinsics changed within the scene: nuScenes has "
                                  "one calibrated_sensor per sensor and scene (split the scene where it changes)")
            return token
        token = self._token("calibrated_sensor", f"{scene}/{channel}")
        rec = {"token": token, "sensor_token": self._sensor(channel, modality), **pose_fields(to_ego),
               "camera_intrinsic": [] if K is None else K.tolist(), **extra}
        self.tables["calibrated_sensor"].append(rec)
        calibrations[channel] = (token, to_ego, K)
        return token

    def _reading(self, scene: str, i: int, sample_token: str, reading, calibrations: dict, last: dict,
                 where: str) -> None:
        channel = str(reading.channel)
        if not channel or "/" in channel or channel.startswith("."):
            raise ExportError(f"{where}: channel {channel!r} must be a plain name such as CAM_FRONT or LIDAR_TOP")
        ts = _timestamp(reading.timestamp_us, where)
        prev = last.get(channel)
        if prev is not None and ts <= prev["timestamp"]:
            raise ExportError(f"{where}: timestamp_us {ts} does not increase (previous {prev['timestamp']})")
        ego_to_world = _rigid(reading.ego_to_world, f"{where}: ego_to_world")
        token = self._token("sample_data", f"{scene}/{i}/{channel}")
        base = f"{scene}__{channel}__{ts}"
        if isinstance(reading, CameraReading):
            cs_token, filename, (h, w), extra = self._camera(scene, channel, base, reading, calibrations, where)
            fileformat = self.image_format
        elif isinstance(reading, LidarReading):
            cs_token, filename, (h, w), extra = self._lidar(scene, channel, base, token, reading, calibrations, where)
            fileformat = "pcd"
        else:
            raise ExportError(f"{where}: a reading is a CameraReading or a LidarReading, got {type(reading).__name__}")
        self.extra.append({"token": token, "sample_data_token": token, **extra})
        self.tables["ego_pose"].append({"token": token, "timestamp": ts, **pose_fields(ego_to_world)})
        rec = {"token": token, "sample_token": sample_token, "ego_pose_token": token,
               "calibrated_sensor_token": cs_token, "timestamp": ts, "fileformat": fileformat, "is_key_frame": True,
               "height": int(h), "width": int(w), "filename": filename, "prev": "", "next": ""}
        if prev is not None:
            rec["prev"], prev["next"] = prev["token"], token
        self.tables["sample_data"].append(rec)
        last[channel] = rec

    def _write(self, relative: str) -> Path:
        path = self.staging / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _camera(self, scene, channel, base, cam: CameraReading, calibrations, where):
        import imageio.v3 as iio  # start-up time: imageio (Pillow) only when images are written

        rgb = np.asarray(cam.rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ExportError(f"{where}: rgb must be [H, W, 3] uint8, got {list(rgb.shape)} {rgb.dtype}")
        h, w = rgb.shape[:2]
        K = _matrix(cam.K, (3, 3), f"{where}: K")
        if K[0, 0] <= 0 or K[1, 1] <= 0 or K[2].tolist() != [0.0, 0.0, 1.0]:
            raise ExportError(f"{where}: K must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0, got "
                              f"{K.tolist()}")
        if cam.model not in CAMERA_MODELS:
            raise ExportError(f"{where}: unknown camera model {cam.model!r}: one of {', '.join(CAMERA_MODELS)}")
        extra = {}
        if cam.model != "pinhole":
            dist = np.zeros(4) if cam.distortion is None else _matrix(cam.distortion, (4,), f"{where}: distortion")
            extra = {"camera_model": cam.model, "camera_distortion": dist.tolist()}
        cam_to_ego = _rigid(cam.cam_to_ego, f"{where}: cam_to_ego")
        filename = f"samples/{channel}/{base}.{self.image_format}"
        depth_file = semantic_file = ""
        if cam.depth is not None:
            depth = np.asarray(cam.depth)
            if depth.shape != (h, w) or not np.issubdtype(depth.dtype, np.floating) or np.isnan(depth).any():
                raise ExportError(f"{where}: depth must be [{h}, {w}] float32 metres (inf = no hit, no NaN), got "
                                  f"{list(depth.shape)} {depth.dtype}")
            depth_file = f"nfldm/depth/{channel}/{base}.npy"
        if cam.semantic is not None:
            sem = np.asarray(cam.semantic)
            if sem.shape != (h, w) or sem.dtype != np.uint8:
                raise ExportError(f"{where}: semantic must be [{h}, {w}] uint8 CARLA tags, got {list(sem.shape)} "
                                  f"{sem.dtype}")
            semantic_file = f"nfldm/semantic/{channel}/{base}.png"
        cs = self._calibration(scene, channel, "camera", cam_to_ego, K, extra, calibrations, where)
        # all checks done: the files
        if self.image_format == "jpg":
            iio.imwrite(self._write(filename), np.ascontiguousarray(rgb), extension=".jpg", quality=self.jpeg_quality)
        else:
            iio.imwrite(self._write(filename), np.ascontiguousarray(rgb), extension=".png")
        if depth_file:
            np.save(self._write(depth_file), np.ascontiguousarray(depth, dtype=np.float32))
        if semantic_file:
            iio.imwrite(self._write(semantic_file), np.ascontiguousarray(sem), extension=".png")
        return cs, filename, (h, w), {"depth_filename": depth_file, "semantic_filename": semantic_file}

    def _lidar(self, scene, channel, base, token, scan: LidarReading, calibrations, where):
        pts = np.asarray(scan.points)
        if pts.ndim != 2 or pts.shape[1] != 4 or not np.isfinite(pts).all():
            raise ExportError(f"{where}: points must be a finite [N, 4] array (x, y, z, intensity), got "
                              f"{list(pts.shape)}")
        ring = np.asarray(scan.ring)
        if ring.shape != (len(pts),) or (ring.size and (not np.issubdtype(ring.dtype, np.integer)
                                                        or ring.min() < 0 or ring.max() >= 1 << 24)):
            raise ExportError(f"{where}: ring must be [{len(pts)}] integers in [0, 2^24) (the beam of each point), got "
                              f"{list(ring.shape)} {ring.dtype}")
        tags = None if scan.tags is None else np.asarray(scan.tags)
        if tags is not None and (tags.shape != (len(pts),) or tags.dtype != np.uint8):
            raise ExportError(f"{where}: tags must be [{len(pts)}] uint8 CARLA tags, got {list(tags.shape)} "
                              f"{tags.dtype}")
        cs = self._calibration(scene, channel, "lidar", _rigid(scan.lidar_to_ego, f"{where}: lidar_to_ego"), None, {},
                               calibrations, where)
        filename = f"samples/{channel}/{base}.pcd.bin"
        np.column_stack([pts, ring]).astype("<f4").tofile(self._write(filename))
        tags_file = ""
        if tags is not None:
            tags_file = f"nfldm/lidar_tags/{channel}/{base}.bin"
            tags.tofile(self._write(tags_file))
            seg = f"lidarseg/{self.version}/{token}_lidarseg.bin"
            lidarseg_indices(tags).tofile(self._write(seg))
            self.lidarseg.append({"token": token, "sample_data_token": token, "filename": seg})
        return cs, filename, (0, 0), {"tags_filename": tags_file}

    # ------------------------------------------------------------------ tables
    def close(self) -> Path:
        """Write the tables and move the dataset into place at ``out`` (replacing an old export of ours); returns
        ``out``. A writer without scenes is refused."""
        import imageio.v3 as iio  # start-up time: imageio (Pillow) only when the map placeholder is written

        if self._closed:
            raise ExportError("this NuScenesWriter is closed already")
        if not self.scene_names:
            self.abort()
            raise ExportError("nothing to export: no scene was added")
        map_token = self._token("map", "semantic_prior")
        map_file = f"maps/{map_token}.png"
        iio.imwrite(self._write(map_file), np.zeros((1, 1), dtype=np.uint8), extension=".png")
        self.tables["map"] = [{"token": map_token, "log_tokens": [r["token"] for r in self.tables["log"]],
                               "category": "semantic_prior", "filename": map_file}]
        self.tables["category"] = [{"token": self._token("category", n), "name": n, "description": d, "index": i}
                                   for i, (n, d) in enumerate(LIDARSEG_CATEGORIES)]
        self.tables["visibility"] = [dict(v) for v in VISIBILITY]
        tables = dict(self.tables)
        if self.lidarseg:
            tables["lidarseg"] = self.lidarseg
        tables[SAMPLE_DATA_EXTRA_TABLE] = self.extra
        tables[EXPORT_TABLE] = self._export_record()
        root = self.staging / self.version
        root.mkdir(parents=True, exist_ok=True)
        for name, rows in tables.items():
            (root / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
        self._closed = True
        old = None
        if self.out.exists():                  # an export of ours or an empty folder (check_export_output)
            old = self.out.parent / f".{self.out.name}.old-{uuid.uuid4().hex[:8]}"
            self.out.rename(old)
        self.staging.rename(self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out

    def _export_record(self) -> dict:
        return {"format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION, "version": self.version,
                "software": {"nfldm": nfldm_version}, "source": self.source, "source_info": self.source_info,
                "scenes": list(self.scene_names), "image_format": self.image_format,
                "conventions": {
                    "tokens": "uuid5 of (source, table, key): deterministic",
                    "rotation": "unit quaternion [w, x, y, z] (pyquaternion order), w >= 0",
                    "calibrated_sensor": "sensor -> ego; ego x forward, y left, z up; camera OpenCV (x right, "
                                         "y down, z forward); LiDAR x forward, y left, z up; metres",
                    "ego_pose": "ego -> global (the capture's world or the generated scene's frame), one per "
                                "sample_data, token = the sample_data token",
                    "timestamp": "integer microseconds",
                    "camera_model": "pinhole unless calibrated_sensor.camera_model says equidistant or "
                                    "opencv_fisheye (camera_distortion = k1..k4); K keeps fx, fy, cx, cy",
                    "lidar_points": "float32 [N, 5]: x, y, z (LiDAR frame, m), intensity (not modelled: 1.0), ring "
                                    "(range-image row, 0 = highest beam)",
                    "lidarseg": "uint8 [N] nuScenes-lidarseg category index per point (category.index), mapped "
                                "from CARLA tags",
                    "map": "placeholder: a 1x1 background mask (no map data)",
                },
                "extra_files": {
                    SAMPLE_DATA_EXTRA_TABLE: "one record per sample_data (token = sample_data_token): cameras "
                                             "depth_filename, semantic_filename; LiDAR tags_filename ('' = none)",
                    "depth_filename": "float32 [H, W] .npy, planar z-depth along the optical axis, metres, inf = no hit",
                    "semantic_filename": "uint8 [H, W] 8-bit grey PNG of CARLA 0.9.14+ semantic tags",
                    "tags_filename": "uint8 [N] raw CARLA tags, row-aligned with the .pcd.bin points",
                }}
