"""CARLA / Unreal Engine 4 conventions → the project's conventions. The ONLY module that knows UE4 axes.

Frames
------
* UE4 (CARLA) world and actor-local frames are **left-handed**: x forward, y right, z up, metres
  (CARLA's Python API reports metres and degrees, not UE centimetres).
* Our world is right-handed, z up; the ego frame is x forward, y left, z up (sim_bridge.rig).
* Our camera frame is OpenCV: x right, y down, z forward.

A `carla.Transform` (location x, y, z; rotation pitch, yaw, roll in degrees) maps UE local coordinates to UE
world coordinates; its 4×4 (`carla.Transform.get_matrix()`) is ``T = [[R, t], [0, 1]]`` with, writing
``c·``/``s·`` for cos/sin of pitch (p), yaw (y), roll (r) (CARLA's Transform.h)::

        R = [[cp·cy,  cy·sp·sr − sy·cr,  −cy·sp·cr − sy·sr],
             [cp·sy,  sy·sp·sr + cy·cr,  −sy·sp·cr + cy·sr],
             [sp,     −cp·sr,             cp·cr           ]]

Derivation
----------
* UE world → our world mirrors y:  ``p_world = S p_ue_world`` with ``S = diag(1, −1, 1)``.
* UE actor local (x fwd, y right, z up) → ego (x fwd, y left, z up) mirrors y as well: ``p_ue_local = S p_ego``.
* OpenCV camera → UE camera local: ``x_cv = y_ue, y_cv = −z_ue, z_cv = x_ue``, i.e. ``p_ue_local = A p_cv`` with::

        A = [[0, 0, 1],      x_ue =  z_cv  (forward)
             [1, 0, 0],      y_ue =  x_cv  (right)
             [0, −1, 0]]     z_ue = −y_cv  (up = −down)

Chaining ``p_cv → p_ue_local → p_ue_world → p_world``::

        cam_to_world = S · T · A          ego_to_world = S · T · S

(as 4×4 with S, A padded by a 1). det S = det A = −1 and det R = +1, so both results are proper rigid
transforms (rotation determinant +1) of right-handed frames. The inverses are ``T = S · cam_to_world · Aᵀ`` and
``T = S · ego_to_world · S``, from which location and Euler angles are read back (`_transform_from_ue_matrix`).

Because the vehicle's local frame and the ego frame differ by the same mirror S as the two worlds, a camera
mount ``cam_to_ego`` becomes the sensor's attachment transform relative to the vehicle with the very same
formula as ``cam_to_world`` (`cam_to_ego_to_carla`). The ego origin is the CARLA vehicle actor's origin: for
CARLA's vehicles it sits at ground level under the vehicle (``vehicle.bounding_box.location`` gives the small
offset of the box centre, which this bridge does not apply).

Images
------
CARLA cameras deliver 32-bit BGRA pixels. The depth camera encodes planar depth (distance along the optical
axis, our convention) as ``(R + G·256 + B·256²) / (256³ − 1) · 1000`` metres; the far plane (1000 m, the sky)
becomes ``inf``. The semantic-segmentation camera stores the CityObjectLabel tag in R. The cameras are
pinholes with a horizontal field of view, square pixels and the principal point at the image centre.

LiDAR
-----
A LiDAR's sensor frame is x forward, y left, z up (`sim_bridge.lidar`); UE's sensor-local frame is x forward,
y right, z up, so the two differ by the mirror S, like ego and vehicle-local. Hence ``lidar_to_world = S · T · S``
for the sensor's world transform T (`carla_to_lidar_to_world`), the attachment of a mount ``lidar_to_ego`` is
``S · lidar_to_ego · S`` (`lidar_to_ego_to_carla`), and a point CARLA reports in sensor-local UE coordinates
(x, y, z) is (x, −y, z) in the sensor frame. ``sensor.lidar.ray_cast_semantic`` delivers its points as
`carla.SemanticLidarMeasurement.raw_data`: per detection x, y, z, cos_inc_angle (float32), object_idx,
object_tag (uint32), 24 bytes, channel by channel (`SEMANTIC_LIDAR_DTYPE`, `decode_semantic_lidar`).

Every function accepts any object with ``.location`` (x, y, z) and ``.rotation`` (pitch, yaw, roll), so real
`carla.Transform` objects work and so do simple stand-ins; the inverses build real `carla.Transform` objects
(the `carla` package is imported only there).
"""
from __future__ import annotations

import math

import numpy as np

from sim_bridge.errors import MissingExtraError

#: Mirror of the y axis: UE world <-> our world, and UE actor local <-> ego. Its own inverse.
UE_MIRROR = np.diag([1.0, -1.0, 1.0, 1.0])
#: OpenCV camera axes -> UE camera-local axes (columns are the UE images of cv x, y, z). Inverse = transpose.
CV_TO_UE_CAMERA = np.array([[0.0, 0.0, 1.0, 0.0],
                            [1.0, 0.0, 0.0, 0.0],
                            [0.0, -1.0, 0.0, 0.0],
                            [0.0, 0.0, 0.0, 1.0]])

#: Far plane of CARLA's depth camera, metres (the largest encodable value; the sky renders at it).
CARLA_DEPTH_FAR_M = 1000.0
_DEPTH_MAX_CODE = 256**3 - 1


def import_carla():
    """The `carla` client module, or `MissingExtraError` naming the ``pip install`` when it is not installed."""
    try:
        import carla  # optional dependency: the `carla` extra
    except ImportError as err:  # pragma: no cover - the dev environment has it
        raise MissingExtraError("the `carla` client package is not installed: pip install 'nfldm[carla]' "
                                "(it must match the server version, e.g. carla==0.9.16)") from err
    return carla


# ----------------------------------------------------------------------------------------------- transforms
def ue_transform_matrix(transform) -> np.ndarray:
    """`[4,4]` float64 matrix of a CARLA transform (UE local -> UE world), as `carla.Transform.get_matrix()`.

    Computed in float64 from ``transform.location`` (metres) and ``transform.rotation`` (degrees), so it
    also works for duck-typed transforms; it equals CARLA's own float32 `get_matrix()` to float32 precision.
    """
    loc, rot = transform.location, transform.rotation
    p, y, r = (math.radians(float(a)) for a in (rot.pitch, rot.yaw, rot.roll))
    cp, sp, cy, sy, cr, sr = math.cos(p), math.sin(p), math.cos(y), math.sin(y), math.cos(r), math.sin(r)
    return np.array([
        [cp * cy, cy * sp * sr - sy * cr, -cy * sp * cr - sy * sr, float(loc.x)],
        [cp * sy, sy * sp * sr + cy * cr, -sy * sp * cr + cy * sr, float(loc.y)],
        [sp, -cp * sr, cp * cr, float(loc.z)],
        [0.0, 0.0, 0.0, 1.0],
    ])


def _check_rigid(m: np.ndarray, name: str) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError(f"{name} must be a 4x4 matrix, got shape {m.shape}")
    R = m[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0 or not np.allclose(m[3], (0, 0, 0, 1)):
        raise ValueError(f"{name} is not a rigid transform (rotation must be orthonormal with det +1, last row "
                         f"0 0 0 1); CARLA transforms cannot scale or mirror. Got\n{m}")
    return m


def _transform_from_ue_matrix(T: np.ndarray):
    """A real `carla.Transform` whose `get_matrix()` is `T` (UE local -> UE world, rigid, det +1).

    Inverts the rotation formula of the module docstring: pitch = asin(R[2,0]), yaw = atan2(R[1,0], R[0,0]),
    roll = atan2(−R[2,1], R[2,2]). At gimbal lock (|pitch| = 90°) yaw and roll are coupled; roll is set to 0
    and yaw read from the second column (R[0,1] = −sin yaw, R[1,1] = cos yaw when roll = 0).
    """
    carla = import_carla()
    R = T[:3, :3]
    sp = float(np.clip(R[2, 0], -1.0, 1.0))
    pitch = math.degrees(math.asin(sp))
    if math.sqrt(R[0, 0] ** 2 + R[1, 0] ** 2) > 1e-6:
        yaw = math.degrees(math.atan2(R[1, 0], R[0, 0]))
        roll = math.degrees(math.atan2(-R[2, 1], R[2, 2]))
    else:  # gimbal lock: cos(pitch) ~ 0
        yaw = math.degrees(math.atan2(-R[0, 1], R[1, 1]))
        roll = 0.0
    return carla.Transform(carla.Location(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                           carla.Rotation(pitch=pitch, yaw=yaw, roll=roll))


def carla_to_cam_to_world(transform) -> np.ndarray:
    """`cam_to_world [4,4]` float64 (OpenCV camera -> right-handed z-up world) of a CARLA camera transform.

    ``cam_to_world = S · T · A`` (module docstring). `transform` is the sensor's world transform, e.g.
    `carla.Image.transform`.
    """
    return UE_MIRROR @ ue_transform_matrix(transform) @ CV_TO_UE_CAMERA


def carla_to_ego_to_world(transform) -> np.ndarray:
    """`ego_to_world [4,4]` float64 (ego x fwd, y left, z up -> world) of a CARLA vehicle transform.

    ``ego_to_world = S · T · S``. `transform` is e.g. `vehicle.get_transform()` or an `ActorSnapshot`'s.
    """
    return UE_MIRROR @ ue_transform_matrix(transform) @ UE_MIRROR


def cam_to_world_to_carla(cam_to_world: np.ndarray):
    """Inverse of `carla_to_cam_to_world`: the `carla.Transform` of a camera whose pose is `cam_to_world [4,4]`."""
    m = _check_rigid(cam_to_world, "cam_to_world")
    return _transform_from_ue_matrix(UE_MIRROR @ m @ CV_TO_UE_CAMERA.T)


def ego_to_world_to_carla(ego_to_world: np.ndarray):
    """Inverse of `carla_to_ego_to_world`: the `carla.Transform` placing a vehicle at `ego_to_world [4,4]`."""
    m = _check_rigid(ego_to_world, "ego_to_world")
    return _transform_from_ue_matrix(UE_MIRROR @ m @ UE_MIRROR)


def cam_to_ego_to_carla(cam_to_ego: np.ndarray):
    """Attachment transform (relative to the vehicle actor) of a camera mounted at `cam_to_ego [4,4]`.

    Vehicle-local UE and ego differ by the same mirror as UE world and our world, so this is
    `cam_to_world_to_carla` applied to the mount; a sensor spawned with it (``attach_to=vehicle``) then has
    ``carla_to_cam_to_world(sensor transform) = ego_to_world · cam_to_ego``.
    """
    m = _check_rigid(cam_to_ego, "cam_to_ego")
    return _transform_from_ue_matrix(UE_MIRROR @ m @ CV_TO_UE_CAMERA.T)


def carla_to_lidar_to_world(transform) -> np.ndarray:
    """`lidar_to_world [4,4]` float64 (LiDAR sensor frame x fwd, y left, z up -> world) of a CARLA LiDAR's world
    transform (e.g. `carla.SemanticLidarMeasurement.transform`): ``S · T · S`` (module docstring, "LiDAR")."""
    return UE_MIRROR @ ue_transform_matrix(transform) @ UE_MIRROR


def lidar_to_ego_to_carla(lidar_to_ego: np.ndarray):
    """Attachment transform (relative to the vehicle actor) of a LiDAR mounted at `lidar_to_ego [4,4]`; a sensor
    spawned with it (``attach_to=vehicle``) has ``carla_to_lidar_to_world(sensor transform) = ego_to_world ·
    lidar_to_ego``."""
    m = _check_rigid(lidar_to_ego, "lidar_to_ego")
    return _transform_from_ue_matrix(UE_MIRROR @ m @ UE_MIRROR)


#: One detection of `carla.SemanticLidarMeasurement.raw_data` (CARLA's `SemanticLidarDetection`, 24 bytes).
SEMANTIC_LIDAR_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("cos_inc_angle", "<f4"),
                                 ("object_idx", "<u4"), ("object_tag", "<u4")])


def decode_semantic_lidar(raw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The detections of a ``sensor.lidar.ray_cast_semantic`` measurement in the project's sensor frame.

    Args:
        raw: `carla.SemanticLidarMeasurement.raw_data` (bytes-like; `SEMANTIC_LIDAR_DTYPE` records).
    Returns:
        (points, object_tag, object_idx): ``[P,3]`` float64 metres in the sensor frame (x forward, y left, z up:
        UE's y negated), ``[P]`` uint32 CARLA semantic tags, ``[P]`` uint32 actor ids (0 for the map).
    """
    buf = np.ascontiguousarray(raw).view(np.uint8).reshape(-1) if isinstance(raw, np.ndarray) else \
        np.frombuffer(raw, dtype=np.uint8)
    if len(buf) % SEMANTIC_LIDAR_DTYPE.itemsize:
        raise ValueError(f"semantic LiDAR buffer has {len(buf)} bytes, not a multiple of the "
                         f"{SEMANTIC_LIDAR_DTYPE.itemsize}-byte SemanticLidarDetection: is it raw_data of "
                         "sensor.lidar.ray_cast_semantic (ray_cast's points are 16 bytes)?")
    det = np.frombuffer(buf, dtype=SEMANTIC_LIDAR_DTYPE)
    points = np.stack([det["x"], -det["y"], det["z"]], axis=1).astype(np.float64)   # negating is exact
    return points, det["object_tag"].copy(), det["object_idx"].copy()


# ------------------------------------------------------------------------------------------------ intrinsics
def carla_intrinsics(width: int, height: int, fov_deg: float) -> np.ndarray:
    """`K [3,3]` (pixels) of a CARLA camera: horizontal FOV `fov_deg`, square pixels, principal point at the
    image centre (width/2, height/2), i.e. pixel centres at integer + 0.5."""
    if not (0.0 < fov_deg < 180.0):
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    f = (width / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def fov_from_intrinsics(K: np.ndarray, width: int, height: int, rtol: float = 1e-6) -> float:
    """Horizontal FOV in degrees of `K [3,3]` for a CARLA camera of `width`×`height` pixels.

    Raises ValueError when `K` has skew, non-square pixels or an off-centre principal point: a CARLA camera
    (image_size_x, image_size_y, fov) cannot represent those.
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be 3x3, got {K.shape}")
    fx, fy, cx, cy, skew = K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]
    problems = []
    if not math.isclose(fx, fy, rel_tol=rtol):
        problems.append(f"non-square pixels (fx={fx:g}, fy={fy:g})")
    if abs(cx - width / 2.0) > rtol * width or abs(cy - height / 2.0) > rtol * height:
        problems.append(f"principal point ({cx:g}, {cy:g}) is not the image centre ({width / 2:g}, {height / 2:g})")
    if abs(skew) > rtol * fx or not np.allclose(K[2], (0, 0, 1)) or K[1, 0] != 0:
        problems.append("skew or a malformed last row")
    if fx <= 0:
        problems.append(f"non-positive focal length {fx:g}")
    if problems:
        raise ValueError("a CARLA camera (image_size_x, image_size_y, fov) cannot represent these intrinsics: "
                         + "; ".join(problems) + ". Use a centred, square-pixel rig (sim_bridge.rig.intrinsics_from_fov) "
                         "or the procedural backend.")
    return math.degrees(2.0 * math.atan(width / (2.0 * fx)))


# ---------------------------------------------------------------------------------------------------- images
def bgra_from_raw(raw, width: int, height: int) -> np.ndarray:
    """View CARLA's flat BGRA buffer (`carla.Image.raw_data`, bytes-like, or an array) as `[H,W,4]` uint8."""
    arr = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else np.asarray(raw, dtype=np.uint8)
    if arr.size != width * height * 4:
        raise ValueError(f"BGRA buffer has {arr.size} bytes, expected {height}x{width}x4 = {width * height * 4}")
    return arr.reshape(height, width, 4)


def bgra_to_rgb(raw, width: int, height: int) -> np.ndarray:
    """`[H,W,3]` uint8 RGB (a copy) from a CARLA BGRA image (`raw_data` bytes or an `[H,W,4]` array)."""
    return np.ascontiguousarray(bgra_from_raw(raw, width, height)[..., 2::-1])


def _check_bgra(bgra: np.ndarray) -> np.ndarray:
    bgra = np.asarray(bgra)
    if bgra.dtype != np.uint8 or bgra.ndim < 1 or bgra.shape[-1] != 4:
        raise ValueError(f"expected BGRA uint8 [...,4], got dtype {bgra.dtype} shape {bgra.shape}")
    return bgra


def decode_carla_depth(bgra: np.ndarray) -> np.ndarray:
    """Planar z-depth `[H,W]` float32 metres from a CARLA depth image `[H,W,4]` uint8 (BGRA).

    depth = (R + G·256 + B·256²) / (256³ − 1) · 1000; the far-plane code (all 24 bits set, 1000 m: the sky)
    becomes ``inf`` (no hit). The 24-bit code is exact in float64; the result is rounded once to float32.
    """
    bgra = _check_bgra(bgra)
    code = (bgra[..., 2].astype(np.int64) + bgra[..., 1].astype(np.int64) * 256
            + bgra[..., 0].astype(np.int64) * 65536)
    depth = (code.astype(np.float64) * (CARLA_DEPTH_FAR_M / _DEPTH_MAX_CODE)).astype(np.float32)
    depth[code == _DEPTH_MAX_CODE] = np.inf
    return depth


def semantic_from_carla(bgra: np.ndarray) -> np.ndarray:
    """Semantic tags `[H,W]` uint8 (CARLA CityObjectLabel, sim_bridge.semantics) from the R channel of a
    raw semantic-segmentation image `[H,W,4]` uint8 (BGRA)."""
    return np.ascontiguousarray(_check_bgra(bgra)[..., 2])
