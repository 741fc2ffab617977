"""The nuScenes conventions of the export, in one place: tokens, quaternions, channel names and the fixed tables.

nuScenes (the devkit's schema, ``nuscenes-devkit`` 1.1/1.2):

* **tokens** are 32 lowercase hex digits. Ours are ``uuid5(NFLDM_NAMESPACE, "<source>|<table>|<key>").hex``
  (`make_token`): the same source exported twice gets the same tokens, so two exports are byte-identical.
* **poses** are ``translation [x, y, z]`` (metres) and ``rotation [w, x, y, z]``, a unit quaternion in
  pyquaternion's order, scalar first (`matrix_to_quaternion`, sign fixed by ``w >= 0``). ``calibrated_sensor`` is
  sensor -> ego, ``ego_pose`` is ego -> global. The ego frame is the project's (x forward, y left, z up), the camera
  frame OpenCV's (x right, y down, z forward) — both are nuScenes' too, so matrices convert without an axis change;
  "global" is the capture's world (or a generated scene's scene frame).
* **timestamps** are integer microseconds.
* **channels**: cameras ``CAM_<NAME>`` (`channel_name`: ``front_left`` -> ``CAM_FRONT_LEFT``; a name that already
  starts with ``CAM_`` is kept), the LiDAR `LIDAR_CHANNEL` (``LIDAR_TOP``).
* **categories**: the 32 classes of nuScenes-lidarseg in their index order (`LIDARSEG_CATEGORIES`; the devkit's
  colour map names exactly these), so per-point LiDAR labels can be written as nuScenes-lidarseg
  (``lidarseg/<version>/<token>_lidarseg.bin``, one uint8 index per point). CARLA tags map to them by
  `CARLA_TO_LIDARSEG` (`lidarseg_indices`).
* **visibility**: nuScenes' four fixed levels (`VISIBILITY`), written for completeness (no boxes are exported).
"""
from __future__ import annotations

import re
import uuid

import numpy as np

from sim_bridge.errors import SimBridgeError

__all__ = ["ExportError", "NFLDM_NAMESPACE", "LIDAR_CHANNEL", "LIDARSEG_CATEGORIES", "CARLA_TO_LIDARSEG",
           "VISIBILITY", "EXPORT_FORMAT", "EXPORT_FORMAT_VERSION", "EXPORT_TABLE", "SAMPLE_DATA_EXTRA_TABLE",
           "make_token", "matrix_to_quaternion", "quaternion_to_matrix", "pose_fields", "channel_name",
           "lidarseg_indices", "check_version", "check_scene_name", "scene_spacing_us"]

#: ``format`` of `EXPORT_TABLE`'s record: how a reader recognises an export of ours (and ``--overwrite`` too).
EXPORT_FORMAT = "nfldm.nuscenes_export"
EXPORT_FORMAT_VERSION = 1
#: Extra JSON files beside the nuScenes tables (the devkit loads only its own tables and ignores these).
EXPORT_TABLE = "nfldm_export"              # one object: format, version, source, conventions, files
SAMPLE_DATA_EXTRA_TABLE = "nfldm_sample_data_extra"  # one record per sample_data: depth, semantic, tag files

#: Namespace of our uuid5 tokens (a fixed uuid4, never to change: it keeps tokens stable across versions).
NFLDM_NAMESPACE = uuid.UUID("6c1b6d0e-2f1d-4b67-9d5e-4a8f3c0b9e21")
LIDAR_CHANNEL = "LIDAR_TOP"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ExportError(SimBridgeError, ValueError):
    """An export cannot be written: bad input data, an output folder in the way, an unknown episode; the message
    names the problem and the fix."""


def make_token(source: str, table: str, key: str) -> str:
    """A deterministic nuScenes token: ``uuid5(NFLDM_NAMESPACE, f"{source}|{table}|{key}").hex`` (32 hex digits).

    Args:
        source: identifies what is exported (a store's or a scene's fingerprint), so two sources differ.
        table: the nuScenes table the record belongs to.
        key: the record's key within the table (scene name, frame index, channel, ...).
    """
    return uuid.uuid5(NFLDM_NAMESPACE, f"{source}|{table}|{key}").hex


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """``[4]`` float64 unit quaternion ``[w, x, y, z]`` (pyquaternion's order, ``w >= 0``) of a rotation ``R [3, 3]``.

    Shepperd's method (the largest of ``w, x, y, z`` computed first: no cancellation near 180°), then normalised, so
    a rotation that is orthonormal to float32 precision (CARLA's) still gives a unit quaternion.
    """
    m = np.asarray(R, dtype=np.float64)[:3, :3]
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    diag = (tr, m[0, 0], m[1, 1], m[2, 2])
    k = int(np.argmax(diag))
    if k == 0:
        s = 2.0 * np.sqrt(max(1.0 + tr, 0.0))
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif k == 1:
        s = 2.0 * np.sqrt(max(1.0 + m[0, 0] - m[1, 1] - m[2, 2], 0.0))
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif k == 2:
        s = 2.0 * np.sqrt(max(1.0 + m[1, 1] - m[0, 0] - m[2, 2], 0.0))
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(max(1.0 + m[2, 2] - m[0, 0] - m[1, 1], 0.0))
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.array(q, dtype=np.float64)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


def quaternion_to_matrix(q) -> np.ndarray:
    """``[3, 3]`` float64 rotation of a quaternion ``[w, x, y, z]`` (normalised first); inverse of
    `matrix_to_quaternion`."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def pose_fields(a_to_b: np.ndarray) -> dict:
    """``{"translation": [3], "rotation": [w, x, y, z]}`` (JSON lists of floats) of a rigid ``a_to_b [4, 4]``: the
    nuScenes form of a pose (``calibrated_sensor`` = sensor -> ego, ``ego_pose`` = ego -> global)."""
    m = np.asarray(a_to_b, dtype=np.float64)
    return {"translation": [float(v) for v in m[:3, 3]],
            "rotation": [float(v) for v in matrix_to_quaternion(m[:3, :3])]}


def channel_name(camera_name: str) -> str:
    """The nuScenes channel of a rig camera: ``CAM_`` + the name in upper case with every other character than a
    letter or digit as ``_`` (``front_left`` -> ``CAM_FRONT_LEFT``); a name already starting with ``CAM_`` is kept
    (upper-cased)."""
    upper = re.sub(r"[^A-Z0-9]+", "_", str(camera_name).upper()).strip("_")
    if not upper:
        raise ExportError(f"camera name {camera_name!r} gives no nuScenes channel: name the camera with letters or "
                          "digits (e.g. front_left)")
    return upper if upper.startswith("CAM_") else f"CAM_{upper}"


def check_version(version: str) -> str:
    """`version` (the tables' folder, e.g. ``v1.0-nfldm``, ``v1.0-mini``) if it is ``v`` + a safe folder name."""
    if not isinstance(version, str) or not version.startswith("v") or not _SAFE_NAME.match(version):
        raise ExportError(f"nuScenes version {version!r}: give a folder name such as v1.0-nfldm or v1.0-mini "
                          "(letters, digits, '.', '_', '-', starting with 'v')")
    return version


def check_scene_name(name: str) -> str:
    """`name` if it can be a nuScenes scene name and part of file names (letters, digits, ``.``, ``_``, ``-``)."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name):
        raise ExportError(f"scene name {name!r}: use letters, digits, '.', '_' and '-' only (it is part of the "
                          "exported file names)")
    return name


def scene_spacing_us(longest_scene_s: float) -> int:
    """Microseconds between the starts of consecutive scenes of one export: whole hours, at least the longest scene
    (`longest_scene_s` seconds) plus one second, so scenes never overlap in time and start at distinct timestamps
    (the devkit sorts scenes by their first sample's timestamp)."""
    hours = max(1, int(np.ceil((float(longest_scene_s) + 1.0) / 3600.0)))
    return hours * 3_600_000_000


#: nuScenes-lidarseg's 32 categories, in index order (index = position), with their descriptions.
LIDARSEG_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("noise", "Any lidar return that does not correspond to a physical object (here: CARLA Unlabeled, Sky)."),
    ("animal", "All animals."),
    ("human.pedestrian.adult", "Adult pedestrians (here: CARLA Pedestrian, Rider)."),
    ("human.pedestrian.child", "Child pedestrians."),
    ("human.pedestrian.construction_worker", "Construction workers."),
    ("human.pedestrian.personal_mobility", "Personal mobility devices."),
    ("human.pedestrian.police_officer", "Police officers."),
    ("human.pedestrian.stroller", "Strollers."),
    ("human.pedestrian.wheelchair", "Wheelchairs."),
    ("movable_object.barrier", "Temporary road barriers."),
    ("movable_object.debris", "Debris on the road."),
    ("movable_object.pushable_pullable", "Objects a pedestrian can push or pull (here: CARLA Dynamic)."),
    ("movable_object.trafficcone", "Traffic cones."),
    ("static_object.bicycle_rack", "Bicycle racks."),
    ("vehicle.bicycle", "Bicycles (here: CARLA Bicycle)."),
    ("vehicle.bus.bendy", "Bendy buses."),
    ("vehicle.bus.rigid", "Rigid buses (here: CARLA Bus)."),
    ("vehicle.car", "Cars, vans, SUVs (here: CARLA Car)."),
    ("vehicle.construction", "Construction vehicles."),
    ("vehicle.emergency.ambulance", "Ambulances."),
    ("vehicle.emergency.police", "Police vehicles."),
    ("vehicle.motorcycle", "Motorcycles (here: CARLA Motorcycle)."),
    ("vehicle.trailer", "Trailers."),
    ("vehicle.truck", "Trucks (here: CARLA Truck)."),
    ("flat.driveable_surface", "Drivable road surface (here: CARLA Roads, RoadLine)."),
    ("flat.other", "Other flat ground (here: CARLA Water, Ground, RailTrack)."),
    ("flat.sidewalk", "Sidewalks (here: CARLA SideWalks)."),
    ("flat.terrain", "Natural terrain (here: CARLA Terrain)."),
    ("static.manmade", "Man-made structures (here: CARLA Building, Wall, Fence, Pole, TrafficLight, TrafficSign, "
                       "Bridge, GuardRail)."),
    ("static.other", "Other static objects (here: CARLA Static, Other, Train)."),
    ("static.vegetation", "Vegetation (here: CARLA Vegetation)."),
    ("vehicle.ego", "The ego vehicle."),
)
_CATEGORY_INDEX = {name: i for i, (name, _) in enumerate(LIDARSEG_CATEGORIES)}

#: CARLA 0.9.14+ tag (`sim_bridge.semantics`) -> nuScenes-lidarseg category name; tags not listed are "noise".
CARLA_TO_LIDARSEG: dict[int, str] = {
    0: "noise", 1: "flat.driveable_surface", 2: "flat.sidewalk", 3: "static.manmade", 4: "static.manmade",
    5: "static.manmade", 6: "static.manmade", 7: "static.manmade", 8: "static.manmade", 9: "static.vegetation",
    10: "flat.terrain", 11: "noise", 12: "human.pedestrian.adult", 13: "human.pedestrian.adult", 14: "vehicle.car",
    15: "vehicle.truck", 16: "vehicle.bus.rigid", 17: "static.other", 18: "vehicle.motorcycle",
    19: "vehicle.bicycle", 20: "static.other", 21: "movable_object.pushable_pullable", 22: "static.other",
    23: "flat.other", 24: "flat.driveable_surface", 25: "flat.other", 26: "static.manmade", 27: "flat.other",
    28: "static.manmade",
}
_LOOKUP = np.zeros(256, dtype=np.uint8)
for _tag, _name in CARLA_TO_LIDARSEG.items():
    _LOOKUP[_tag] = _CATEGORY_INDEX[_name]


def lidarseg_indices(tags: np.ndarray) -> np.ndarray:
    """``[N]`` uint8 nuScenes-lidarseg category indices of ``[N]`` CARLA tags (`CARLA_TO_LIDARSEG`)."""
    return _LOOKUP[np.asarray(tags, dtype=np.uint8)]


#: nuScenes' visibility levels (its own tokens "1".."4"): the visible fraction of an annotation in the cameras.
VISIBILITY = (
    {"token": "1", "level": "v0-40", "description": "visibility of whole object is between 0 and 40%"},
    {"token": "2", "level": "v40-60", "description": "visibility of whole object is between 40 and 60%"},
    {"token": "3", "level": "v60-80", "description": "visibility of whole object is between 60 and 80%"},
    {"token": "4", "level": "v80-100", "description": "visibility of whole object is between 80 and 100%"},
)
