"""Camera rigs: named cameras with intrinsics and their mount on the ego vehicle.

Ego (vehicle) frame: right-handed, x forward, y left, z up, metres, origin on the ground below the vehicle
centre. Camera frame: OpenCV (x right, y down, z forward). `cam_to_ego [4,4]` maps camera coordinates to ego
coordinates.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Rotation taking OpenCV camera axes to ego axes for a camera looking along ego +x:
# cam x (right) -> ego -y, cam y (down) -> ego -z, cam z (forward) -> ego +x. Columns are images of cam axes.
_CV_TO_EGO_FORWARD = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def intrinsics_from_fov(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """Pinhole `K [3,3]` (pixels) with horizontal field of view `hfov_deg`, square pixels, centred principal point.

    The principal point is at (width/2, height/2): pixel centres are at integer + 0.5 (CARLA's convention too).
    """
    if not (0.0 < hfov_deg < 180.0):
        raise ValueError(f"hfov_deg must be in (0, 180), got {hfov_deg}")
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def mount_to_cam_to_ego(x: float, y: float, z: float, yaw_deg: float = 0.0, pitch_deg: float = 0.0) -> np.ndarray:
    """`cam_to_ego [4,4]` of a camera mounted at ego position (x, y, z) metres.

    `yaw_deg` turns the view to the left (counter-clockwise seen from above, about ego +z);
    `pitch_deg` > 0 tilts it up.
    """
    cy, sy = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    cp, sp = math.cos(math.radians(pitch_deg)), math.sin(math.radians(pitch_deg))
    yaw = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    # Pitch about ego -y so that a positive angle raises the optical axis (+x towards +z).
    pitch = np.array([[cp, 0.0, -sp], [0.0, 1.0, 0.0], [sp, 0.0, cp]])
    m = np.eye(4)
    m[:3, :3] = yaw @ pitch @ _CV_TO_EGO_FORWARD
    m[:3, 3] = (x, y, z)
    return m


@dataclass(frozen=True)
class RigCamera:
    """One camera of a rig.

    Attributes:
        name: unique name, e.g. ``"front"``.
        K: intrinsics `[3,3]`, pixels.
        width, height: image size in pixels.
        cam_to_ego: `[4,4]` rigid transform, OpenCV camera axes -> ego frame (metres).
    """

    name: str
    K: np.ndarray
    width: int
    height: int
    cam_to_ego: np.ndarray

    def to_dict(self) -> dict:
        """JSON-ready dict (the form stored in capture-store attributes)."""
        return {
            "name": self.name,
            "K": np.asarray(self.K, dtype=float).tolist(),
            "width": int(self.width),
            "height": int(self.height),
            "cam_to_ego": np.asarray(self.cam_to_ego, dtype=float).tolist(),
        }

    @staticmethod
    def from_dict(d: dict) -> "RigCamera":
        """Inverse of `to_dict`; validates shapes."""
        missing = {"name", "K", "width", "height", "cam_to_ego"} - set(d)
        if missing:
            raise ValueError(f"rig camera is missing {sorted(missing)}: each camera needs name, K, width, height, cam_to_ego")
        K = np.asarray(d["K"], dtype=float)
        m = np.asarray(d["cam_to_ego"], dtype=float)
        if K.shape != (3, 3) or m.shape != (4, 4):
            raise ValueError(f"camera {d['name']!r}: K must be 3x3 and cam_to_ego 4x4, got {K.shape} and {m.shape}")
        return RigCamera(str(d["name"]), K, int(d["width"]), int(d["height"]), m)

    def with_size(self, width: int, height: int) -> "RigCamera":
        """The same camera at another resolution (intrinsics scaled, field of view kept)."""
        sx, sy = width / self.width, height / self.height
        K = np.array(self.K, dtype=float)
        K[0] *= sx
        K[1] *= sy
        return RigCamera(self.name, K, width, height, np.array(self.cam_to_ego))


@dataclass(frozen=True)
class Rig:
    """An ordered set of cameras on the ego vehicle (the order is the camera axis N of the store arrays)."""

    cameras: tuple[RigCamera, ...] = field(default_factory=tuple)

    def __post_init__(self):
        names = [c.name for c in self.cameras]
        if not names:
            raise ValueError("a rig needs at least one camera")
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        sizes = {(c.width, c.height) for c in self.cameras}
        if len(sizes) != 1:
            raise ValueError(f"all cameras of a rig must share one image size (store arrays are [T,N,H,W]), got {sorted(sizes)}")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.cameras]

    @property
    def width(self) -> int:
        return self.cameras[0].width

    @property
    def height(self) -> int:
        return self.cameras[0].height

    def __len__(self) -> int:
        return len(self.cameras)

    def K(self) -> np.ndarray:
        """Intrinsics of all cameras, `[N,3,3]`."""
        return np.stack([c.K for c in self.cameras])

    def cam_to_ego(self) -> np.ndarray:
        """Mounts of all cameras, `[N,4,4]`."""
        return np.stack([c.cam_to_ego for c in self.cameras])

    def with_size(self, width: int, height: int) -> "Rig":
        return Rig(tuple(c.with_size(width, height) for c in self.cameras))

    def to_list(self) -> list[dict]:
        return [c.to_dict() for c in self.cameras]

    @staticmethod
    def from_list(cams: list[dict]) -> "Rig":
        return Rig(tuple(RigCamera.from_dict(c) for c in cams))

    def save(self, path: str | Path) -> None:
        """Write the rig as JSON: ``{"cameras": [ {name, K, width, height, cam_to_ego}, ... ]}``."""
        Path(path).write_text(json.dumps({"cameras": self.to_list()}, indent=2))

    @staticmethod
    def load(path: str | Path) -> "Rig":
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"rig file {p} not found: pass a preset name ({', '.join(RIG_PRESETS)}) or a JSON file")
        data = json.loads(p.read_text())
        if "cameras" not in data:
            raise ValueError(f"rig file {p} has no 'cameras' list")
        return Rig.from_list(data["cameras"])

    @staticmethod
    def resolve(spec: str, width: int | None = None, height: int | None = None) -> "Rig":
        """A preset name or a JSON path, optionally resized to `width`×`height`."""
        if spec in RIG_PRESETS:
            rig = RIG_PRESETS[spec](width or 256, height or 256)
        elif spec.endswith(".json") or Path(spec).exists():
            rig = Rig.load(spec)
            if width or height:
                rig = rig.with_size(width or rig.width, height or rig.height)
        else:
            raise ValueError(f"unknown rig {spec!r}: use a preset ({', '.join(RIG_PRESETS)}) or a JSON file path")
        return rig


def ring_rig(width: int = 256, height: int = 256) -> Rig:
    """Default capture rig: 6 roof cameras, 90° horizontal FOV, 60° apart — full 360° with overlap.

    Mounted 1.6 m above ground near the roof centre, each camera 0.5 m out along its viewing direction.
    """
    cams = []
    for name, yaw in [("front", 0), ("front_left", 60), ("back_left", 120), ("back", 180), ("back_right", -120), ("front_right", -60)]:
        r = math.radians(yaw)
        cams.append(RigCamera(name, intrinsics_from_fov(width, height, 90.0), width, height,
                              mount_to_cam_to_ego(0.5 * math.cos(r), 0.5 * math.sin(r), 1.6, yaw)))
    return Rig(tuple(cams))


def nuscenes_rig(width: int = 256, height: int = 256) -> Rig:
    """A nuScenes-like 6-camera ring: 70° FOV cameras at ±55° and front, a wide 110° back camera."""
    spec = [("CAM_FRONT", 1.70, 0.00, 1.51, 0, 70), ("CAM_FRONT_LEFT", 1.52, 0.49, 1.51, 55, 70),
            ("CAM_FRONT_RIGHT", 1.52, -0.49, 1.51, -55, 70), ("CAM_BACK", -0.02, 0.0, 1.51, 180, 110),
            ("CAM_BACK_LEFT", 1.03, 0.48, 1.51, 110, 70), ("CAM_BACK_RIGHT", 1.03, -0.48, 1.51, -110, 70)]
    return Rig(tuple(RigCamera(n, intrinsics_from_fov(width, height, fov), width, height, mount_to_cam_to_ego(x, y, z, yaw))
                     for n, x, y, z, yaw, fov in spec))


def front_rig(width: int = 256, height: int = 256) -> Rig:
    """A single forward camera, 90° FOV, at the windscreen (x=0.8 m, z=1.5 m)."""
    return Rig((RigCamera("front", intrinsics_from_fov(width, height, 90.0), width, height, mount_to_cam_to_ego(0.8, 0.0, 1.5, 0.0)),))


#: Rig presets by name: `name -> fn(width, height) -> Rig`. "default" is the capture rig.
RIG_PRESETS = {"default": ring_rig, "ring6": ring_rig, "nuscenes": nuscenes_rig, "front": front_rig}
