"""Camera rigs for virtual sensors: named cameras (pinhole or fisheye) mounted on the ego vehicle.

Conventions (project-wide): ego frame x forward, y left, z up, metres, origin on the ground below the vehicle
centre; camera frame OpenCV (x right, y down, z forward); ``K [3,3]`` in pixels with pixel centres at integer + 0.5
(a centred camera has its principal point at ``(width/2, height/2)``); ``cam_to_ego [4,4]`` maps camera coordinates
to the ego frame. A camera's ``model`` is ``pinhole`` (the default), ``equidistant`` or ``opencv_fisheye`` with
``distortion`` (k1, k2, k3, k4) (`nfldm_sdk.cameras.projection`); one rig may mix models.

The JSON layout is the capture rig's (``sim_bridge.rig.Rig.save``) so rig files and capture-store rigs are
interchangeable: ``{"cameras": [{"name", "K", "width", "height", "cam_to_ego"}, ...]}`` (a capture store's root
attribute ``rig`` holds the bare list); a fisheye camera adds ``"model"`` and ``"distortion"`` (absent: pinhole,
zeros, so files written before fisheye cameras existed load unchanged). This module re-implements it: nfldm_sdk and sim_bridge are independent
packages.

Example::

    rig = CameraRig.preset("capture", 256, 256)        # the 6-camera capture ring
    cams = rig.cameras(trajectory.ego_to_world)          # Cameras [T, 6], cam_to_world in the scene frame
    rig.save("rig.json"); CameraRig.load("rig.json")
    rig = CameraRig.from_store("data/town03.zarr")      # the rig a capture was collected with
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from nfldm_sdk.errors import NfldmError
from nfldm_sdk.cameras.json_files import read_json_file, write_json_file
from nfldm_sdk.cameras.pinhole import Cameras, intrinsics_from_fov
from nfldm_sdk.cameras.projection import (CAMERA_MODELS, CameraError, check_distortion, fisheye_undistort,
                                          model_ids_from_names)
from nfldm_sdk.cameras.trajectory import rigid_problem

__all__ = ["CameraSpec", "CameraRig", "RigError", "RIG_PRESETS", "mount_to_cam_to_ego",
           "capture_rig", "nuscenes_rig", "front_rig"]

# Rotation taking OpenCV camera axes to ego axes for a camera looking along ego +x (columns = images of the camera
# axes): cam x (right) -> ego -y, cam y (down) -> ego -z, cam z (forward) -> ego +x.
_CV_TO_EGO_FORWARD = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


class RigError(NfldmError, ValueError):
    """A rig (file, preset name, store attribute) is unknown or malformed; the message names the fix."""


def mount_to_cam_to_ego(x: float, y: float, z: float, yaw_deg: float = 0.0, pitch_deg: float = 0.0,
                        roll_deg: float = 0.0) -> np.ndarray:
    """``cam_to_ego [4,4]`` of a camera at ego position ``(x, y, z)`` metres.

    ``yaw_deg`` turns the view left (counter-clockwise seen from above, about ego +z), ``pitch_deg > 0`` tilts it
    up, ``roll_deg > 0`` turns the image clockwise as seen by the camera (about its optical axis).
    With zero angles the camera looks along ego +x with image right = ego −y and image down = ego −z.
    """
    cy, sy = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    cp, sp = math.cos(math.radians(pitch_deg)), math.sin(math.radians(pitch_deg))
    cr, sr = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
    yaw = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    pitch = np.array([[cp, 0.0, -sp], [0.0, 1.0, 0.0], [sp, 0.0, cp]])   # about ego −y: positive raises +x towards +z
    roll = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])     # about the camera's z (optical) axis
    m = np.eye(4)
    m[:3, :3] = yaw @ pitch @ _CV_TO_EGO_FORWARD @ roll
    m[:3, 3] = (x, y, z)
    return m


@dataclass(frozen=True, eq=False)  # eq=False: arrays; __eq__ below compares values
class CameraSpec:
    """One named camera: intrinsics, image size, camera model and mount on the ego vehicle.

    Attributes:
        name: unique name within a rig, e.g. ``"front"``.
        K: ``[3,3]`` float64 intrinsics, pixels (pixel centres at integer + 0.5), for every model.
        width, height: image size, pixels.
        cam_to_ego: ``[4,4]`` float64 rigid transform, OpenCV camera -> ego frame, metres.
        model: ``"pinhole"`` (default), ``"equidistant"`` or ``"opencv_fisheye"`` (`CAMERA_MODELS`).
        distortion: ``[4]`` float64 (k1, k2, k3, k4) of ``opencv_fisheye``; zeros otherwise (None: zeros).
    """

    name: str
    K: np.ndarray
    width: int
    height: int
    cam_to_ego: np.ndarray
    model: str = "pinhole"
    distortion: np.ndarray | None = None

    def __post_init__(self):
        K = np.array(self.K, dtype=np.float64)
        m = np.array(self.cam_to_ego, dtype=np.float64)
        dist = np.zeros(4) if self.distortion is None else np.array(self.distortion, dtype=np.float64)
        if dist.shape != (4,):
            raise RigError(f"camera {self.name!r}: distortion must be 4 coefficients (k1, k2, k3, k4), got shape "
                           f"{dist.shape}")
        if K.shape != (3, 3) or m.shape != (4, 4):
            raise RigError(f"camera {self.name!r}: K must be 3x3 and cam_to_ego 4x4, got {K.shape} and {m.shape}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise RigError(f"camera {self.name!r}: image size must be positive, got {self.width}x{self.height}")
        if not (np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0 and np.allclose(K[2], [0, 0, 1])):
            raise RigError(f"camera {self.name!r}: K must be a pinhole matrix [[fx,s,cx],[0,fy,cy],[0,0,1]] with "
                           f"fx, fy > 0, got {K.tolist()}")
        why = rigid_problem(m)
        if why:
            raise RigError(f"camera {self.name!r}: cam_to_ego is not a rigid transform ({why})")
        try:
            ids = model_ids_from_names(self.model, ())
            if self.model != "pinhole" or dist.any():
                check_distortion(ids, torch.as_tensor(dist), torch.as_tensor(K), int(self.width), int(self.height))
        except CameraError as e:
            raise RigError(f"camera {self.name!r}: {e}") from e
        K.setflags(write=False)
        m.setflags(write=False)
        dist.setflags(write=False)
        object.__setattr__(self, "name", str(self.name))
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "cam_to_ego", m)
        object.__setattr__(self, "distortion", dist)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @classmethod
    def from_fov(cls, name: str, hfov_deg: float, width: int, height: int, cam_to_ego: np.ndarray | None = None,
                 *, model: str = "pinhole", distortion: Sequence[float] | None = None) -> "CameraSpec":
        """A centred camera with horizontal field of view `hfov_deg` (any `model`: the focal length puts the
        image's left and right edges at ``hfov_deg / 2`` off axis); `cam_to_ego` defaults to a forward camera at
        ``(0, 0, 1.6)`` (see `mount_to_cam_to_ego` to build mounts)."""
        mount = mount_to_cam_to_ego(0.0, 0.0, 1.6) if cam_to_ego is None else cam_to_ego
        K = intrinsics_from_fov(hfov_deg, width, height, dtype=torch.float64, model=model,
                                distortion=distortion).numpy()
        return cls(name, K, width, height, mount, model, distortion)

    def _half_angle(self, pixels: float, focal: float) -> float:
        """Angle (radians) off axis of a point ``pixels`` from the principal point along an axis of focal length
        ``focal``."""
        if self.model == "pinhole":
            return math.atan(pixels / focal)
        return float(fisheye_undistort(torch.tensor(pixels / focal, dtype=torch.float64),
                                       torch.tensor(self.distortion)))

    @property
    def hfov_deg(self) -> float:
        """Horizontal field of view in degrees (from ``fx``, the image width and the model; exact for a centred
        camera)."""
        return math.degrees(2.0 * self._half_angle(self.width / 2.0, self.K[0, 0]))

    @property
    def vfov_deg(self) -> float:
        """Vertical field of view in degrees."""
        return math.degrees(2.0 * self._half_angle(self.height / 2.0, self.K[1, 1]))

    def resized(self, width: int, height: int) -> "CameraSpec":
        """The same camera at ``width`` × ``height``: ``K``'s rows scaled by the size ratios (field of view and
        pixel-centre convention kept)."""
        K = np.array(self.K)
        K[0] *= width / self.width
        K[1] *= height / self.height
        return CameraSpec(self.name, K, width, height, self.cam_to_ego, self.model, self.distortion)

    def with_mount(self, cam_to_ego: np.ndarray) -> "CameraSpec":
        """The same camera mounted at `cam_to_ego`."""
        return CameraSpec(self.name, self.K, self.width, self.height, cam_to_ego, self.model, self.distortion)

    def to_dict(self) -> dict:
        """JSON-ready ``{name, K, width, height, cam_to_ego}`` (the capture store's layout), plus ``model`` and
        ``distortion`` for a camera that is not a pinhole one."""
        d = {"name": self.name, "K": self.K.tolist(), "width": self.width, "height": self.height,
             "cam_to_ego": self.cam_to_ego.tolist()}
        if self.model != "pinhole":
            d.update(model=self.model, distortion=self.distortion.tolist())
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CameraSpec":
        """Inverse of `to_dict`; validates keys and shapes (an absent ``model`` is ``pinhole``, an absent
        ``distortion`` zeros)."""
        if not isinstance(d, dict):
            raise RigError(f"a rig camera must be a JSON object, got {type(d).__name__}")
        missing = {"name", "K", "width", "height", "cam_to_ego"} - set(d)
        if missing:
            raise RigError(f"rig camera {d.get('name', '?')!r} lacks {sorted(missing)}: each camera needs name, K, "
                           "width, height, cam_to_ego")
        model = d.get("model", "pinhole")
        if not isinstance(model, str) or model not in CAMERA_MODELS:
            raise RigError(f"rig camera {d.get('name', '?')!r} has model {model!r}: choose one of "
                           f"{', '.join(CAMERA_MODELS)} (or leave it out for pinhole)")
        return cls(d["name"], np.asarray(d["K"], dtype=np.float64), int(d["width"]), int(d["height"]),
                   np.asarray(d["cam_to_ego"], dtype=np.float64), model,
                   np.asarray(d.get("distortion", [0.0] * 4), dtype=np.float64))

    def __eq__(self, other) -> bool:
        return (isinstance(other, CameraSpec) and (self.name, self.width, self.height, self.model) ==
                (other.name, other.width, other.height, other.model) and np.array_equal(self.K, other.K)
                and np.array_equal(self.cam_to_ego, other.cam_to_ego)
                and np.array_equal(self.distortion, other.distortion))

    def __hash__(self) -> int:
        return hash((self.name, self.width, self.height, self.K.tobytes(), self.cam_to_ego.tobytes(), self.model,
                     self.distortion.tobytes()))

    def __repr__(self) -> str:
        x, y, z = self.cam_to_ego[:3, 3]
        kind = "" if self.model == "pinhole" else f"{self.model}, "
        return (f"CameraSpec({self.name!r}, {self.width}x{self.height}, {kind}hfov {self.hfov_deg:.1f}°, "
                f"at ego ({x:.2f}, {y:.2f}, {z:.2f}) m)")


@dataclass(frozen=True, eq=False)
class CameraRig:
    """An ordered set of uniquely named cameras of one image size (the order is the camera axis N of renders).

    Attributes:
        specs: the cameras, in order.
    """

    specs: tuple[CameraSpec, ...]

    def __post_init__(self):
        specs = tuple(self.specs)
        if not specs:
            raise RigError("a rig needs at least one camera")
        if not all(isinstance(s, CameraSpec) for s in specs):
            raise RigError("CameraRig takes CameraSpec objects (build them with CameraSpec.from_fov or from_dict)")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise RigError(f"camera names must be unique, got {names}")
        sizes = sorted({(s.width, s.height) for s in specs})
        if len(sizes) != 1:
            raise RigError(f"all cameras of a rig share one image size (renders are [T,N,H,W]), got {sizes}: "
                           "use .resized(width, height)")
        object.__setattr__(self, "specs", specs)

    # ------------------------------------------------------------------ access
    @property
    def names(self) -> list[str]:
        """The cameras' names, in rig order (unique)."""
        return [s.name for s in self.specs]

    @property
    def width(self) -> int:
        """Image width in pixels, shared by every camera of the rig."""
        return self.specs[0].width

    @property
    def height(self) -> int:
        """Image height in pixels, shared by every camera of the rig."""
        return self.specs[0].height

    def __len__(self) -> int:
        return len(self.specs)

    def __iter__(self) -> Iterator[CameraSpec]:
        return iter(self.specs)

    def __getitem__(self, key: int | str) -> CameraSpec:
        """A camera by position or by name."""
        if isinstance(key, str):
            for s in self.specs:
                if s.name == key:
                    return s
            raise KeyError(f"rig has no camera {key!r}; its cameras are {self.names}")
        return self.specs[key]

    def __eq__(self, other) -> bool:
        return isinstance(other, CameraRig) and self.specs == other.specs

    def __hash__(self) -> int:
        return hash(self.specs)

    def K(self) -> np.ndarray:
        """``[N,3,3]`` intrinsics of all cameras."""
        return np.stack([s.K for s in self.specs])

    def cam_to_ego(self) -> np.ndarray:
        """``[N,4,4]`` mounts of all cameras."""
        return np.stack([s.cam_to_ego for s in self.specs])

    def models(self) -> list[str]:
        """The N cameras' model names, in rig order."""
        return [s.model for s in self.specs]

    def distortion(self) -> np.ndarray:
        """``[N,4]`` fisheye coefficients (k1, k2, k3, k4) of all cameras (zeros for pinhole and equidistant)."""
        return np.stack([s.distortion for s in self.specs])

    def resized(self, width: int, height: int) -> "CameraRig":
        """Every camera at ``width`` × ``height`` (fields of view kept)."""
        return CameraRig(tuple(s.resized(width, height) for s in self.specs))

    def select(self, names: Sequence[str]) -> "CameraRig":
        """The cameras named `names`, in that order."""
        return CameraRig(tuple(self[n] for n in names))

    def cameras(self, ego_to_world: np.ndarray | torch.Tensor, *, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> Cameras:
        """`Cameras` of batch shape ``[T, N]`` for ego poses ``ego_to_world [T,4,4]`` (or one ``[4,4]`` -> ``[N]``).

        ``cam_to_world[t, n] = ego_to_world[t] @ cam_to_ego[n]``, composed in float64 and then cast to `dtype`;
        each camera keeps its model and distortion (a rig of pinhole cameras builds plain pinhole `Cameras`).
        """
        e2w = np.asarray(ego_to_world.detach().cpu() if torch.is_tensor(ego_to_world) else ego_to_world, dtype=np.float64)
        single = e2w.shape == (4, 4)
        if single:
            e2w = e2w[None]
        if e2w.ndim != 3 or e2w.shape[1:] != (4, 4):
            raise RigError(f"ego_to_world must be [T,4,4] (or [4,4]), got {e2w.shape}")
        c2w = e2w[:, None] @ self.cam_to_ego()[None]                                     # [T, N, 4, 4]
        K = np.repeat(self.K()[None], c2w.shape[0], axis=0)                               # [T, N, 3, 3]
        models = self.models()
        extra = {} if set(models) == {"pinhole"} else {
            "model": models, "distortion": torch.as_tensor(self.distortion(), dtype=dtype, device=device)}
        cams = Cameras(torch.as_tensor(K, dtype=dtype, device=device),
                       torch.as_tensor(c2w, dtype=dtype, device=device), self.width, self.height, **extra)
        return cams[0] if single else cams

    # ------------------------------------------------------------------ construction
    @classmethod
    def preset(cls, name: str, width: int = 256, height: int = 256) -> "CameraRig":
        """A rig preset by name (`RIG_PRESETS`: ``capture`` (alias ``default``, ``ring6``), ``nuscenes``,
        ``front``) at ``width`` × ``height``."""
        if name not in RIG_PRESETS:
            raise RigError(f"unknown rig preset {name!r}: choose one of {', '.join(RIG_PRESETS)} or pass a rig JSON file")
        return RIG_PRESETS[name](int(width), int(height))

    @classmethod
    def from_list(cls, cameras: list[dict]) -> "CameraRig":
        """From the list of camera dicts (a capture store's ``rig`` attribute)."""
        if not isinstance(cameras, (list, tuple)):
            raise RigError(f"a rig is a list of cameras, got {type(cameras).__name__}")
        return cls(tuple(CameraSpec.from_dict(c) for c in cameras))

    def to_list(self) -> list[dict]:
        """The camera dicts, in order (a capture store's ``rig`` attribute)."""
        return [s.to_dict() for s in self.specs]

    def to_json(self) -> dict:
        """``{"cameras": [...]}``, the rig-file layout shared with ``sim_bridge.rig.Rig.save``."""
        return {"cameras": self.to_list()}

    @classmethod
    def from_json(cls, data: dict | list, where: str = "rig") -> "CameraRig":
        """From `to_json`'s ``{"cameras": [...]}`` or a bare camera list."""
        if isinstance(data, dict):
            if "cameras" not in data:
                raise RigError(f"{where} has no 'cameras' list: a rig file is {{\"cameras\": [{{name, K, width, height, "
                               "cam_to_ego}, ...]}")
            data = data["cameras"]
        try:
            return cls.from_list(data)
        except RigError as e:
            raise RigError(f"{where}: {e}") from e

    def save(self, path: str | Path) -> Path:
        """Write `to_json` to `path` (float64 values round-trip exactly)."""
        return write_json_file(path, self.to_json(), indent=2)

    @classmethod
    def load(cls, path: str | Path) -> "CameraRig":
        """Read a rig file (ours or ``sim_bridge``'s; same layout)."""
        data = read_json_file(path, "rig", f"pass a preset name ({', '.join(RIG_PRESETS)}) or a rig JSON file written "
                              "by CameraRig.save", RigError)
        return cls.from_json(data, where=f"rig file {Path(path)}")

    @classmethod
    def from_store(cls, store_or_path) -> "CameraRig":
        """The rig a capture was collected with.

        Args:
            store_or_path: an object with ``.attrs["rig"]`` (e.g. ``sim_bridge.open_store(...)``, a zarr group), or
                the path/fsspec URL of a zarr v3 capture store whose root attributes hold ``rig`` (read with zarr
                directly: nfldm_sdk stays independent of sim_bridge).
        """
        attrs = getattr(store_or_path, "attrs", None)
        where = f"capture store {getattr(store_or_path, 'path', store_or_path)}"
        if attrs is None:
            import zarr  # start-up time: zarr (~0.1 s), needed only to open a store by path

            path = str(store_or_path)
            try:
                attrs = zarr.open_group(path, mode="r", zarr_format=3, use_consolidated=False).attrs
            except FileNotFoundError as e:
                raise FileNotFoundError(f"no capture store at {path}: check the path (a zarr v3 store written by "
                                        "`sim_bridge collect`)") from e
            where = f"capture store {path}"
        attrs = dict(attrs)
        if "rig" not in attrs:
            raise RigError(f"{where} has no 'rig' root attribute: it is not a capture store written by `sim_bridge "
                           "collect`")
        return cls.from_json(attrs["rig"], where=where)

    @classmethod
    def resolve(cls, spec: "str | Path | CameraRig", width: int | None = None, height: int | None = None) -> "CameraRig":
        """A `CameraRig`, a preset name, a rig JSON file or a capture store path, optionally resized.

        Presets default to 256 × 256; files and stores keep their size unless `width`/`height` are given (one of
        them alone keeps the aspect ratio)."""
        if isinstance(spec, CameraRig):
            rig = spec
        elif str(spec) in RIG_PRESETS:
            return cls.preset(str(spec), width or height or 256, height or width or 256)
        else:
            p = Path(str(spec))
            if p.is_file():
                rig = cls.load(p)
            elif (p.is_dir() and (p / "zarr.json").is_file()) or "://" in str(spec):
                rig = cls.from_store(str(spec))
            elif p.suffix == ".json":
                raise FileNotFoundError(f"rig file {p} not found: pass an existing rig JSON file or a preset "
                                        f"({', '.join(RIG_PRESETS)})")
            else:
                raise RigError(f"unknown rig {str(spec)!r}: not a preset ({', '.join(RIG_PRESETS)}), a rig JSON file "
                               "or a capture store")
        if width or height:
            w = width or round(rig.width * height / rig.height)
            h = height or round(rig.height * width / rig.width)
            rig = rig.resized(w, h)
        return rig

    def __repr__(self) -> str:
        return f"CameraRig({len(self)} cameras {self.width}x{self.height}: {', '.join(self.names)})"


# ============================================================================================ presets
def capture_rig(width: int = 256, height: int = 256) -> CameraRig:
    """The capture rig (``sim_bridge``'s default): 6 roof cameras, 90° horizontal FOV, yaw 0/60/120/180/−120/−60
    (front, front_left, back_left, back, back_right, front_right), 1.6 m high, each 0.5 m out along its view."""
    K = intrinsics_from_fov(90.0, width, height, dtype=torch.float64).numpy()
    specs = []
    for name, yaw in [("front", 0), ("front_left", 60), ("back_left", 120), ("back", 180), ("back_right", -120),
                      ("front_right", -60)]:
        r = math.radians(yaw)
        specs.append(CameraSpec(name, K, width, height,
                                mount_to_cam_to_ego(0.5 * math.cos(r), 0.5 * math.sin(r), 1.6, yaw)))
    return CameraRig(tuple(specs))


def nuscenes_rig(width: int = 256, height: int = 256) -> CameraRig:
    """A nuScenes-like 6-camera ring: 70° cameras front and at ±55° and ±110°, a wide 110° back camera (the mounts
    of ``sim_bridge``'s ``nuscenes`` preset)."""
    spec = [("CAM_FRONT", 1.70, 0.00, 1.51, 0, 70), ("CAM_FRONT_LEFT", 1.52, 0.49, 1.51, 55, 70),
            ("CAM_FRONT_RIGHT", 1.52, -0.49, 1.51, -55, 70), ("CAM_BACK", -0.02, 0.0, 1.51, 180, 110),
            ("CAM_BACK_LEFT", 1.03, 0.48, 1.51, 110, 70), ("CAM_BACK_RIGHT", 1.03, -0.48, 1.51, -110, 70)]
    return CameraRig(tuple(CameraSpec(n, intrinsics_from_fov(fov, width, height, dtype=torch.float64).numpy(), width,
                                      height, mount_to_cam_to_ego(x, y, z, yaw)) for n, x, y, z, yaw, fov in spec))


def front_rig(width: int = 256, height: int = 256) -> CameraRig:
    """A single forward camera, 90° horizontal FOV, at the windscreen (x = 0.8 m, z = 1.5 m)."""
    K = intrinsics_from_fov(90.0, width, height, dtype=torch.float64).numpy()
    return CameraRig((CameraSpec("front", K, width, height, mount_to_cam_to_ego(0.8, 0.0, 1.5)),))


#: Rig presets: ``name -> fn(width, height) -> CameraRig``. ``default`` and ``ring6`` are the capture rig's names in
#: ``sim_bridge`` (``sim_bridge collect --rig default``), kept so the same name works in both CLIs.
RIG_PRESETS: dict[str, Callable[[int, int], CameraRig]] = {
    "capture": capture_rig, "nuscenes": nuscenes_rig, "front": front_rig, "default": capture_rig, "ring6": capture_rig,
}
