"""Camera rigs: named cameras with intrinsics and their mount on the ego vehicle.

Ego (vehicle) frame: right-handed, x forward, y left, z up, metres, origin on the ground below the vehicle
centre. Camera frame: OpenCV (x right, y down, z forward). `cam_to_ego [4,4]` maps camera coordinates to ego
coordinates. A camera's ``model`` is ``pinhole`` (the default), ``equidistant`` or ``opencv_fisheye`` with
``distortion`` (k1, k2, k3, k4) (`sim_bridge.camera_models`); rig files and store attributes carry ``model`` and
``distortion`` only for fisheye cameras (absent: pinhole), so rigs written before fisheye cameras load unchanged.

A rig is checked completely where it is built (`RigCamera`, `Rig`, `Rig.load`): positive integer image sizes, a
``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` with finite positive focal lengths and its principal point inside the
image, a known model with usable coefficients (a fisheye camera must see less than 90° off axis at its image
corners: depth is planar z), a finite rigid ``cam_to_ego``, unique names and one image size; a bad rig raises `RigError` naming the file and the camera, so a
capture fails before its store is created.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sim_bridge.camera_models import distortion_problem, fisheye_distort
from sim_bridge.errors import SimBridgeError
from sim_bridge.rigid import rigid_problems

# Rotation taking OpenCV camera axes to ego axes for a camera looking along ego +x:
# cam x (right) -> ego -y, cam y (down) -> ego -z, cam z (forward) -> ego +x. Columns are images of cam axes.
_CV_TO_EGO_FORWARD = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


class RigError(SimBridgeError, ValueError):
    """A rig (a camera, a rig file, a requested size) is malformed; the message names the file, the camera and
    the fix."""


def intrinsics_from_fov(hfov_deg: float, width: int, height: int, *, model: str = "pinhole",
                        distortion=None) -> np.ndarray:
    """`K [3,3]` float64 (pixels) with horizontal field of view `hfov_deg` degrees, square pixels, centred
    principal point: ``f = (width/2) / tan(hfov/2)`` for a pinhole, ``(width/2) / θ_d(hfov/2)`` for the fisheye
    `model` s (``θ_d = θ`` for equidistant, OpenCV's polynomial of `distortion` (k1..k4) for opencv_fisheye). Same
    signature and values as `nfldm_sdk.cameras.pinhole.intrinsics_from_fov` (the two packages may not import each
    other).

    The principal point is at (width/2, height/2): pixel centres are at integer + 0.5 (CARLA's convention too).
    """
    if not (0.0 < hfov_deg < 180.0):
        raise RigError(f"hfov_deg must be in (0, 180), got {hfov_deg}")
    half = math.radians(hfov_deg) / 2.0
    if model == "pinhole":
        f = (width / 2.0) / math.tan(half)
    else:
        k = np.zeros(4) if distortion is None else np.asarray(distortion, dtype=np.float64)
        f = (width / 2.0) / float(fisheye_distort(half, k))
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
        K: intrinsics `[3,3]`, pixels (every model).
        width, height: image size in pixels.
        cam_to_ego: `[4,4]` rigid transform, OpenCV camera axes -> ego frame (metres).
        model: ``"pinhole"`` (default), ``"equidistant"`` or ``"opencv_fisheye"``.
        distortion: `[4]` float64 (k1, k2, k3, k4) of ``opencv_fisheye``, zeros otherwise (None: zeros).
    """

    name: str
    K: np.ndarray
    width: int
    height: int
    cam_to_ego: np.ndarray
    model: str = "pinhole"
    distortion: np.ndarray | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise RigError(f"camera name {self.name!r}: a camera needs a non-empty string name")
        cam = f"camera {self.name!r}"
        for key in ("width", "height"):
            v = getattr(self, key)
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise RigError(f"{cam}: {key} {v!r} must be a positive integer number of pixels")
            object.__setattr__(self, key, int(v))
        try:
            K = np.array(self.K, dtype=np.float64)
            m = np.array(self.cam_to_ego, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise RigError(f"{cam}: K and cam_to_ego must be numeric matrices ({e})") from e
        if K.shape != (3, 3) or m.shape != (4, 4):
            raise RigError(f"{cam}: K must be 3x3 and cam_to_ego 4x4, got {K.shape} and {m.shape}")
        if not np.isfinite(K).all() or K[1, 0] != 0 or K[2].tolist() != [0.0, 0.0, 1.0]:
            raise RigError(f"{cam}: K must be a finite pinhole matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got "
                           f"{K.tolist()}")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise RigError(f"{cam}: K has focal lengths fx {K[0, 0]:g}, fy {K[1, 1]:g} pixels; both must be > 0 "
                           "(intrinsics_from_fov(hfov_deg, width, height) builds a valid K)")
        if not (0 <= K[0, 2] <= self.width and 0 <= K[1, 2] <= self.height):
            raise RigError(f"{cam}: principal point ({K[0, 2]:g}, {K[1, 2]:g}) lies outside its "
                           f"{self.width}x{self.height} image; it is usually the image centre "
                           f"({self.width / 2:g}, {self.height / 2:g})")
        why = rigid_problems(m)[()]
        if why:
            raise RigError(f"{cam}: cam_to_ego is not a rigid transform: {why}; it must be [[R, t], [0, 0, 0, 1]] "
                           "with R a rotation (mount_to_cam_to_ego builds one)")
        try:
            dist = np.zeros(4) if self.distortion is None else np.array(self.distortion, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise RigError(f"{cam}: distortion must be 4 numbers (k1, k2, k3, k4) ({e})") from e
        why = distortion_problem(self.model, dist, K, self.width, self.height)
        if why:
            raise RigError(f"{cam}: {why}")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "cam_to_ego", m)
        object.__setattr__(self, "distortion", dist)

    def to_dict(self) -> dict:
        """JSON-ready dict (the form stored in capture-store attributes); ``model`` and ``distortion`` only for a
        camera that is not a pinhole one."""
        d = {
            "name": self.name,
            "K": np.asarray(self.K, dtype=float).tolist(),
            "width": int(self.width),
            "height": int(self.height),
            "cam_to_ego": np.asarray(self.cam_to_ego, dtype=float).tolist(),
        }
        if self.model != "pinhole":
            d.update(model=self.model, distortion=np.asarray(self.distortion, dtype=float).tolist())
        return d

    @staticmethod
    def from_dict(d: dict) -> "RigCamera":
        """Inverse of `to_dict`; validates every field (see `RigCamera`); an absent ``model`` is ``pinhole`` and
        an absent ``distortion`` zeros. Raises `RigError`."""
        if not isinstance(d, dict):
            raise RigError(f"a rig camera must be an object {{name, K, width, height, cam_to_ego}}, got "
                           f"{type(d).__name__}")
        missing = {"name", "K", "width", "height", "cam_to_ego"} - set(d)
        if missing:
            raise RigError(f"rig camera {d.get('name', '?')!r} is missing {sorted(missing)}: each camera needs name, "
                           "K, width, height, cam_to_ego")
        size = {}
        for key in ("width", "height"):
            v = d[key]
            # JSON may spell an integer as 192.0; anything else is not a pixel count
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            size[key] = v
        return RigCamera(d["name"], d["K"], size["width"], size["height"], d["cam_to_ego"], d.get("model", "pinhole"),
                         d.get("distortion"))

    def with_size(self, width: int, height: int) -> "RigCamera":
        """The same camera at another resolution (intrinsics scaled per axis: keep the aspect ratio, see
        `Rig.resolve`, or the pixels stop being square)."""
        sx, sy = width / self.width, height / self.height
        K = np.array(self.K, dtype=float)
        K[0] *= sx
        K[1] *= sy
        return RigCamera(self.name, K, width, height, np.array(self.cam_to_ego), self.model, self.distortion)


@dataclass(frozen=True)
class Rig:
    """An ordered set of cameras on the ego vehicle (the order is the camera axis N of the store arrays)."""

    cameras: tuple[RigCamera, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if any(not isinstance(c, RigCamera) for c in self.cameras):
            raise RigError("a Rig takes RigCamera objects (RigCamera.from_dict builds one from a dict)")
        names = [c.name for c in self.cameras]
        if not names:
            raise RigError("a rig needs at least one camera")
        if len(set(names)) != len(names):
            raise RigError(f"camera names must be unique, got {names}")
        sizes = {(c.width, c.height) for c in self.cameras}
        if len(sizes) != 1:
            raise RigError(f"all cameras of a rig must share one image size (store arrays are [T,N,H,W]), got "
                           f"{sorted(sizes)}")

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

    def models(self) -> list[str]:
        """The cameras' model names, in rig order."""
        return [c.model for c in self.cameras]

    @property
    def is_pinhole(self) -> bool:
        """Every camera is a pinhole one (what CARLA can capture)."""
        return all(c.model == "pinhole" for c in self.cameras)

    def with_size(self, width: int, height: int) -> "Rig":
        return Rig(tuple(c.with_size(width, height) for c in self.cameras))

    def to_list(self) -> list[dict]:
        return [c.to_dict() for c in self.cameras]

    @staticmethod
    def from_list(cams: list[dict]) -> "Rig":
        """A rig from `to_list`'s camera dicts (a store's ``rig`` attribute). Raises `RigError` naming the camera."""
        if not isinstance(cams, (list, tuple)):
            raise RigError(f"a rig is a list of cameras, got {type(cams).__name__}")
        return Rig(tuple(RigCamera.from_dict(c) for c in cams))

    def save(self, path: str | Path) -> None:
        """Write the rig as JSON: ``{"cameras": [ {name, K, width, height, cam_to_ego}, ... ]}`` (fisheye cameras
        add ``model`` and ``distortion``)."""
        Path(path).write_text(json.dumps({"cameras": self.to_list()}, indent=2))

    @staticmethod
    def load(path: str | Path) -> "Rig":
        """The rig of a JSON file ``{"cameras": [{name, K, width, height, cam_to_ego}, ...]}`` (see `save`).

        Raises:
            FileNotFoundError: no file at `path`.
            RigError: the file is not JSON, not that layout, or a camera is invalid (the message names the file
                and the camera).
        """
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"rig file {p} not found: pass a preset name ({', '.join(RIG_PRESETS)}) or a JSON file")
        try:
            data = json.loads(p.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RigError(f"rig file {p} is not valid JSON ({e}): fix it, or write a template with "
                           "`sim_bridge rigs --export DIR`") from e
        if not isinstance(data, dict) or not isinstance(data.get("cameras"), list):
            raise RigError(f"rig file {p} has no 'cameras' list: a rig file is {{\"cameras\": [{{name, K, width, "
                           "height, cam_to_ego}, ...]} (`sim_bridge rigs --export DIR` writes examples)")
        try:
            return Rig.from_list(data["cameras"])
        except RigError as e:
            raise RigError(f"rig file {p}: {e}") from e

    @staticmethod
    def resolve(spec: str, width: int | None = None, height: int | None = None) -> "Rig":
        """A preset name or a rig JSON file, at `width`×`height` pixels.

        Presets are built at the size asked (256 for an omitted one). A rig file keeps its own size unless
        `width`/`height` are given; one of them alone keeps the aspect ratio (the other is rounded to whole
        pixels), and both must keep it too (up to that rounding): resizing scales fx by the width ratio and fy by
        the height ratio, so another aspect ratio would stretch the image.
        Raises:
            FileNotFoundError: `spec` names a JSON file that does not exist.
            RigError: unknown preset, malformed file, or a size that changes the file's aspect ratio.
        """
        if spec in RIG_PRESETS:
            return RIG_PRESETS[spec](width or 256, height or 256)
        if not (spec.endswith(".json") or Path(spec).exists()):
            raise RigError(f"unknown rig {spec!r}: use a preset ({', '.join(RIG_PRESETS)}) or a JSON file path")
        rig = Rig.load(spec)
        if not (width or height):
            return rig
        w0, h0 = rig.width, rig.height
        w = width or max(1, round(height * w0 / h0))
        h = height or max(1, round(width * h0 / w0))
        if h != round(w * h0 / w0) and w != round(h * w0 / h0):
            raise RigError(f"rig file {spec} is {w0}x{h0} pixels; {w}x{h} would change its aspect ratio and stretch "
                           f"the image (fx, fy scaled by {w / w0:.3g} and {h / h0:.3g}): give only --width or only "
                           f"--height to keep it (e.g. --width {w} gives {w}x{max(1, round(w * h0 / w0))}), or edit "
                           "the rig file")
        return rig.with_size(w, h)


def capture_rig(width: int = 256, height: int = 256) -> Rig:
    """The capture rig (preset ``capture``, also called ``default`` and ``ring6``): 6 roof cameras, 90° horizontal
    FOV, 60° apart — full 360° with overlap. The same rig as `nfldm_sdk.cameras.rig.capture_rig`.

    Mounted 1.6 m above ground near the roof centre, each camera 0.5 m out along its viewing direction.
    """
    cams = []
    for name, yaw in [("front", 0), ("front_left", 60), ("back_left", 120), ("back", 180), ("back_right", -120), ("front_right", -60)]:
        r = math.radians(yaw)
        cams.append(RigCamera(name, intrinsics_from_fov(90.0, width, height), width, height,
                              mount_to_cam_to_ego(0.5 * math.cos(r), 0.5 * math.sin(r), 1.6, yaw)))
    return Rig(tuple(cams))


def nuscenes_rig(width: int = 256, height: int = 256) -> Rig:
    """A nuScenes-like 6-camera ring: 70° FOV cameras at ±55° and front, a wide 110° back camera."""
    spec = [("CAM_FRONT", 1.70, 0.00, 1.51, 0, 70), ("CAM_FRONT_LEFT", 1.52, 0.49, 1.51, 55, 70),
            ("CAM_FRONT_RIGHT", 1.52, -0.49, 1.51, -55, 70), ("CAM_BACK", -0.02, 0.0, 1.51, 180, 110),
            ("CAM_BACK_LEFT", 1.03, 0.48, 1.51, 110, 70), ("CAM_BACK_RIGHT", 1.03, -0.48, 1.51, -110, 70)]
    return Rig(tuple(RigCamera(n, intrinsics_from_fov(fov, width, height), width, height, mount_to_cam_to_ego(x, y, z, yaw))
                     for n, x, y, z, yaw, fov in spec))


def front_rig(width: int = 256, height: int = 256) -> Rig:
    """A single forward camera, 90° FOV, at the windscreen (x=0.8 m, z=1.5 m)."""
    return Rig((RigCamera("front", intrinsics_from_fov(90.0, width, height), width, height, mount_to_cam_to_ego(0.8, 0.0, 1.5, 0.0)),))


#: Rig presets by name: `name -> fn(width, height) -> Rig`, in the SDK's order (`nfldm_sdk.cameras.rig.RIG_PRESETS`).
#: ``default`` and ``ring6`` are other names of the capture rig: a store records the name it was collected with.
RIG_PRESETS = {"capture": capture_rig, "nuscenes": nuscenes_rig, "front": front_rig, "default": capture_rig,
               "ring6": capture_rig}
#: The preset `collect` and `bench` use when none is given.
DEFAULT_RIG = "capture"


def canonical_rig_name(spec: str) -> str:
    """The first name of the preset `spec` names (``default`` and ``ring6`` -> ``capture``); any other `spec` (a rig
    file) unchanged. Two specs with the same canonical name build the same rig."""
    make = RIG_PRESETS.get(spec)
    return next(name for name, fn in RIG_PRESETS.items() if fn is make) if make is not None else spec


def rig_presets_text() -> str:
    """The preset names for help texts: ``capture (also default, ring6), nuscenes, front``."""
    groups: dict = {}
    for name, fn in RIG_PRESETS.items():
        groups.setdefault(fn, []).append(name)
    return ", ".join(names[0] + (f" (also {', '.join(names[1:])})" if len(names) > 1 else "") for names in groups.values())
