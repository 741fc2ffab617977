"""A CARLA-like synchronous world around a generated scene: an ego following a trajectory, camera and LiDAR sensors.

``world = SensorWorld(scene, trajectory)``, ``cam = world.spawn_camera("front", attach_to=world.ego)``,
``cam.listen(callback)``, ``world.tick()``: each tick moves the ego one trajectory step, renders every listening
camera in batched decoder calls (`nfldm_sdk.sensors.renderer.BatchedRenderer`) and calls the listeners, in spawn
order, with a `CameraImage` (``.frame``, ``.timestamp``, ``.width``, ``.height``, ``.fov``, ``.transform``,
``.raw_data``, ``.rgb``, ``.depth``, ``.semantic``), a read-only view of the tick's `Frame`.

Blueprints (`CAMERA_BLUEPRINTS`, ``spawn_camera(..., blueprint=...)``): ``sensor.camera.rgbd`` (the default; CARLA's
``sensor.camera.rgb`` is accepted as the same camera) delivers a `CameraImage` whose ``raw_data`` is the RGB image;
``sensor.camera.semantic_segmentation`` is CARLA's semantic camera, a separate sensor whose `SemanticImage` carries
the CARLA tag of every pixel (``raw_data`` = one tag byte per pixel; ``save_to_disk(path, "cityscapes")`` writes
CARLA's CityScapes palette). It needs a decoder with a semantic head: spawning one on a head-less bundle raises
`SemanticsUnavailableError`. Every camera image of a model with a head carries ``.semantic`` too (the same labels).
Camera images live in `nfldm_sdk.sensors.camera_images`; each carries its frame's metadata (``ego_to_world``,
``cam_to_ego``, ``camera_model``, ``distortion``, ``scene_id``, ``timestamp_us``: `nfldm_sdk.sensors.frames`).

LiDAR: ``lidar = world.spawn_lidar("nuscenes32")`` (attached to the ego by default) is CARLA's
``sensor.lidar.ray_cast``: its listener gets a `LidarMeasurement` per tick (``points [N,4]`` float32 x, y, z,
intensity in the sensor frame, ``tags``, ``frame``, ``timestamp``, ``transform``, ``channels``,
``horizontal_angle``, ``raw_data`` in CARLA's float32 layout, ``len()``, iteration, ``save_to_disk`` as CARLA's PLY),
the scan `nfldm_sdk.sensors.lidar.render_lidar` gives for the same pose. Points stay in our right-handed sensor frame
(y left); CARLA's y points right (`nfldm_sdk.sensors.lidar_measurement`).
"""
from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Callable

import numpy as np
import torch

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.cameras.rig import CameraRig, CameraSpec
from nfldm_sdk.cameras.trajectory import Trajectory, check_rigid, rigid_inverse
from nfldm_sdk.errors import NfldmError
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.models.semantic_head import require_semantic_head
from nfldm_sdk.rendering.rays import HIT_ALPHA
from nfldm_sdk.sensors.camera_images import FRAME_ATTRIBUTES, CameraImage, SemanticImage
from nfldm_sdk.sensors.frames import Frame
from nfldm_sdk.sensors.lidar import lidar_samples, lidar_scan
from nfldm_sdk.sensors.lidar_measurement import LidarMeasurement
from nfldm_sdk.sensors.lidar_spec import LidarSpec
from nfldm_sdk.sensors.renderer import DEFAULT_BATCH_SIZE, renderer_for

__all__ = ["SensorWorld", "scene_world", "spawn_camera", "EgoVehicle", "SensorActor", "CameraSensor", "LidarSensor",
           "CameraImage", "SemanticImage", "LidarMeasurement", "WorldSnapshot", "SimulationFinished",
           "CAMERA_BLUEPRINTS", "RGBD_CAMERA", "SEMANTIC_CAMERA", "LIDAR_SENSOR", "FRAME_ATTRIBUTES",
           "LidarUnavailableError"]

#: The default camera: RGB with depth (and labels when the model has a semantic head).
RGBD_CAMERA = "sensor.camera.rgbd"
#: CARLA's semantic segmentation camera: its images carry the CARLA tag per pixel (`SemanticImage`).
SEMANTIC_CAMERA = "sensor.camera.semantic_segmentation"
#: Blueprint ids `SensorWorld.spawn_camera` accepts -> the image type its listeners receive (module docstring).
CAMERA_BLUEPRINTS = {RGBD_CAMERA: "CameraImage", "sensor.camera.rgb": "CameraImage", SEMANTIC_CAMERA: "SemanticImage"}
#: The ``type_id`` of `SensorWorld.spawn_lidar`'s actors (CARLA's ray-cast LiDAR).
LIDAR_SENSOR = "sensor.lidar.ray_cast"
#: `SensorWorld.spawn_lidar`'s default ``attach_to``: the world's ego.
_EGO = object()


class SimulationFinished(NfldmError, RuntimeError):
    """`SensorWorld.tick` was called after the trajectory's last pose."""


class LidarUnavailableError(NfldmError, ValueError):
    """`SensorWorld.spawn_lidar` on a world whose source is not one scene's field (e.g. a route of scenes)."""


@dataclass(frozen=True, eq=False)
class WorldSnapshot:
    """The world's state: ``frame`` (the last tick, −1 before the first), ``timestamp`` (seconds on the trajectory's
    clock) and the ego's ``ego_to_world [4,4]``."""

    frame: int
    timestamp: float
    ego_to_world: np.ndarray = dc_field(repr=False)


class EgoVehicle:
    """The ego actor: follows the world's trajectory; sensors attach to it (``attach_to=world.ego``)."""

    type_id = "vehicle.ego"

    def __init__(self, world: "SensorWorld"):
        self._world = world
        self.id = 0

    @property
    def world(self) -> "SensorWorld":
        """The world this ego drives in."""
        return self._world

    def get_transform(self) -> np.ndarray:
        """``ego_to_world [4,4]`` float64 at the current tick (the first pose before the first tick)."""
        return np.array(self._world._ego_to_world())

    def __repr__(self) -> str:
        return f"EgoVehicle(id={self.id}, position={np.round(self.get_transform()[:3, 3], 3).tolist()})"


class SensorActor:
    """What every sensor actor of a `SensorWorld` shares (CARLA's ``carla.Sensor``): an ``id``, a ``parent`` (the
    ego, or None for a sensor fixed in the scene frame), a ``mount`` ``[4,4]`` (sensor -> ego frame when attached,
    sensor -> scene frame when not), ``listen``/``stop``/``destroy``. It measures only while listening."""

    type_id = ""

    def __init__(self, world: "SensorWorld", actor_id: int, parent: EgoVehicle | None, mount: np.ndarray):
        self._world = world
        self.id = actor_id
        self.parent = parent
        self.mount = mount
        self._callback: Callable | None = None
        self.is_alive = True

    @property
    def name(self) -> str:
        """The sensor's name (its spec's)."""
        return self.spec.name

    @property
    def is_listening(self) -> bool:
        """Whether a listener is set (the sensor measures on the next tick)."""
        return self._callback is not None

    @property
    def callback(self) -> Callable | None:
        """The listener, or None."""
        return self._callback

    def poses(self, ego_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(sensor_to_ego, sensor_to_world)`` ``[4,4]`` float64 for the ego at `ego_to_world`: attached, the mount
        and ``ego_to_world @ mount``; fixed in the scene, ``rigid_inverse(ego_to_world) @ mount`` and the product of
        that with the ego pose again (= the mount to rounding), so ``sensor_to_world == ego_to_world @
        sensor_to_ego`` holds bitwise on both."""
        e2w = np.asarray(ego_to_world, dtype=np.float64)
        s2e = np.array(self.mount) if self.parent is not None else rigid_inverse(e2w) @ self.mount
        return s2e, e2w @ s2e

    def get_transform(self) -> np.ndarray:
        """Sensor -> scene frame ``[4,4]`` float64 at the current tick."""
        return self._world._ego_to_world() @ self.mount if self.parent is not None else np.array(self.mount)

    def listen(self, callback: Callable) -> None:
        """Call ``callback(data)`` on every tick from now on (replaces a previous callback)."""
        if not self.is_alive:
            raise RuntimeError(f"sensor {self.id} ({self.name!r}) was destroyed: spawn a new one")
        if not callable(callback):
            raise TypeError(f"listen needs a callable, got {type(callback).__name__}")
        self._callback = callback

    def stop(self) -> None:
        """Stop calling the listener (and measuring with this sensor)."""
        self._callback = None

    def destroy(self) -> bool:
        """Stop and remove the sensor from the world; returns True (as CARLA does) when it was alive."""
        was = self.is_alive
        self.stop()
        self.is_alive = False
        self._world._sensors = [s for s in self._world._sensors if s is not self]
        return was


class CameraSensor(SensorActor):
    """A camera actor spawned in a `SensorWorld`: CARLA's ``sensor.camera.rgb`` with depth (``type_id``
    ``sensor.camera.rgbd``) or its ``sensor.camera.semantic_segmentation`` (module docstring).

    Attached to the ego (``attach_to=world.ego``) its mount is ``cam_to_ego`` (the spec's, or ``transform``); not
    attached it stays fixed in the scene frame at ``cam_to_world`` = the spec's ``cam_to_ego`` (or ``transform``).
    It renders only while listening. Its listener receives a `SemanticImage` for the semantic blueprint, else a
    `CameraImage` (whose frame has ``ego_to_world``, ``cam_to_ego`` and ``cam_to_world = ego_to_world @
    cam_to_ego``: `SensorActor.poses`).
    """

    def __init__(self, world: "SensorWorld", actor_id: int, spec: CameraSpec, parent: EgoVehicle | None,
                 mount: np.ndarray, type_id: str = RGBD_CAMERA):
        super().__init__(world, actor_id, parent, mount)
        self.spec = spec
        self.type_id = type_id

    def image(self, frame: Frame) -> CameraImage:
        """`frame` as what this sensor's listener receives (`SemanticImage` for the semantic blueprint)."""
        cls = SemanticImage if self.type_id == SEMANTIC_CAMERA else CameraImage
        return cls(frame, self, self.spec.hfov_deg)

    def __repr__(self) -> str:
        where = "on ego" if self.parent is not None else "static"
        return f"CameraSensor(id={self.id}, {self.type_id}, {self.name!r} {self.spec.width}x{self.spec.height}, {where}, " \
               f"{'listening' if self.is_listening else 'idle'})"


class LidarSensor(SensorActor):
    """A LiDAR actor spawned by `SensorWorld.spawn_lidar` (CARLA's ``sensor.lidar.ray_cast``; with a semantic head
    each point also carries its tag, as ``ray_cast_semantic``): each tick it scans one rotation of its `LidarSpec`
    with `nfldm_sdk.sensors.lidar.lidar_scan` (the step of `render_lidar`) and calls its listener with a
    `LidarMeasurement`. Mount: ``lidar_to_ego`` attached, ``lidar_to_world`` fixed in the scene."""

    type_id = LIDAR_SENSOR

    def __init__(self, world: "SensorWorld", actor_id: int, spec: LidarSpec, parent: EgoVehicle | None,
                 mount: np.ndarray, n_samples: int, hit_alpha: float):
        super().__init__(world, actor_id, parent, mount)
        self.spec, self.n_samples, self.hit_alpha = spec, int(n_samples), float(hit_alpha)

    def __repr__(self) -> str:
        where = "on ego" if self.parent is not None else "static"
        return f"LidarSensor(id={self.id}, {self.name!r} {self.spec.channels} channels, {where}, " \
               f"{'listening' if self.is_listening else 'idle'})"


class SensorWorld:
    """A CARLA-like synchronous world around a generated scene: an ego following a trajectory, camera and LiDAR sensors.

    Each `tick` moves the ego to the next trajectory pose (the first tick to the first pose), renders every listening
    sensor in batched decoder calls, then calls the listeners in spawn order; it returns the frame id (the tick
    index). After the last pose `tick` raises `SimulationFinished` (see `done`).

    Args:
        scene: a `NeuralScene` (or `VoxelField` with `decoder`), or an object that makes its own renderer
            (``sensor_renderer(batch_size=, device=)``: `nfldm_sdk.sensors.renderer.renderer_for`), e.g. a route of
            scenes (`nfldm_sdk.routes.sensors.RouteScenes`, whose LiDAR scans the union of its cells).
        trajectory: the ego path in the scene frame (a route's world frame).
        rate_hz: resample the trajectory to this rate first (the "fixed delta seconds" of the world); default: tick
            through the trajectory's own samples.
        rig: where camera names given to `spawn_camera` are looked up (default: the ``capture`` preset at the
            decoder's training image size, the size it renders best; each side within 2× of it is supported).
        batch_size, device, check_overlap, with_range: as in `render_trajectory`. A tick renders its listening
            cameras in one batch: depth/alpha equal `render_trajectory`'s exactly, rgb within one level.

    Example::

        world = SensorWorld(scene, Trajectory.straight(20.0, 10.0, 10.0))
        cam = world.spawn_camera("front", attach_to=world.ego)
        cam.listen(lambda image: print(image.frame, image.timestamp, image.depth.min()))
        while not world.done:
            world.tick()
    """

    def __init__(self, scene, trajectory: Trajectory, *, rate_hz: float | None = None, rig: CameraRig | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, device: torch.device | str | None = None,
                 check_overlap: bool = True, with_range: bool = False, decoder: torch.nn.Module | None = None):
        self._renderer = renderer_for(scene, batch_size, device, decoder)
        self.scene = self._renderer.scene          # a RenderableScene, or the object that made its own renderer
        self.trajectory = trajectory.resample(rate_hz) if rate_hz else trajectory
        if rig is None:
            h, w = getattr(self.scene.decoder.config, "image_size", (256, 256))
            rig = CameraRig.preset("capture", w, h)
        self.rig = rig
        self.check_overlap = check_overlap
        self.with_range = with_range
        self.ego = EgoVehicle(self)
        self._sensors: list[SensorActor] = []
        self._next_id = 1
        self._tick = -1
        self._lidar_field: VoxelField | None = None          # the field as float32 on the render device, once

    # ------------------------------------------------------------------ state
    def _ego_to_world(self) -> np.ndarray:
        return self.trajectory.ego_to_world[max(self._tick, 0)]

    @property
    def frame(self) -> int:
        """The last tick's frame id (−1 before the first tick)."""
        return self._tick

    @property
    def done(self) -> bool:
        """True once the last trajectory pose has been ticked."""
        return self._tick >= len(self.trajectory) - 1

    @property
    def ticks_left(self) -> int:
        """Ticks still to come along the trajectory (0 at its last pose)."""
        return len(self.trajectory) - 1 - self._tick

    def get_snapshot(self) -> WorldSnapshot:
        """Frame id, time and ego pose now."""
        t = self.trajectory.timestamps[max(self._tick, 0)]
        return WorldSnapshot(self._tick, float(t), np.array(self._ego_to_world()))

    def get_sensors(self) -> list[SensorActor]:
        """The live sensors in spawn order."""
        return list(self._sensors)

    # ------------------------------------------------------------------ actors
    def _spec(self, spec: CameraSpec | str) -> CameraSpec:
        if isinstance(spec, CameraSpec):
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"spawn_camera takes a CameraSpec or a camera name, got {type(spec).__name__}")
        if "/" in spec:                                  # "preset/camera", e.g. "nuscenes/CAM_FRONT"
            preset, name = spec.split("/", 1)
            return CameraRig.preset(preset, self.rig.width, self.rig.height)[name]
        try:
            return self.rig[spec]
        except KeyError:
            raise KeyError(f"no camera {spec!r} in the world's rig ({', '.join(self.rig.names)}): pass a CameraSpec, "
                           "a 'preset/camera' name such as 'nuscenes/CAM_FRONT', or SensorWorld(rig=...)") from None

    @property
    def has_semantics(self) -> bool:
        """Whether the world's decoder has a semantic head (semantic cameras can be spawned, images carry labels)."""
        return getattr(self._renderer.decoder, "semantic_head", None) is not None

    def spawn_camera(self, spec: CameraSpec | str, attach_to: EgoVehicle | None = None,
                     transform: np.ndarray | None = None, blueprint: str = RGBD_CAMERA) -> CameraSensor:
        """Spawn a camera (CARLA's ``world.spawn_actor(blueprint, transform, attach_to)``).

        Args:
            spec: a `CameraSpec`, a camera name of the world's rig, or ``"preset/camera"``.
            attach_to: ``world.ego`` to ride on the ego (mount = ``cam_to_ego``); None for a camera fixed in the
                scene frame (``cam_to_world`` = the spec's ``cam_to_ego``), as in CARLA.
            transform: ``[4,4]`` mount overriding the spec's (``cam_to_ego`` attached, ``cam_to_world`` static).
            blueprint: a `CAMERA_BLUEPRINTS` id: ``"sensor.camera.rgbd"`` (default; ``"sensor.camera.rgb"`` is the
                same camera) or ``"sensor.camera.semantic_segmentation"`` (listeners get a `SemanticImage`).
        Raises:
            `SemanticsUnavailableError`: a semantic camera on a decoder without a semantic head.
        """
        if blueprint not in CAMERA_BLUEPRINTS:
            hint = " (depth is on every camera image: image.depth)" if blueprint == "sensor.camera.depth" else ""
            raise ValueError(f"unknown camera blueprint {blueprint!r}{hint}: use one of {', '.join(CAMERA_BLUEPRINTS)}")
        if blueprint == SEMANTIC_CAMERA:
            require_semantic_head(getattr(self._renderer.decoder, "semantic_head", None))
        spec = self._spec(spec)
        if attach_to is not None and attach_to is not self.ego:
            raise ValueError("attach_to must be this world's ego (world.ego) or None for a static camera")
        self._renderer.check_size(spec.width, spec.height)
        mount = spec.cam_to_ego if transform is None else check_rigid(np.asarray(transform, dtype=np.float64), "transform")
        sensor = CameraSensor(self, self._next_id, spec, attach_to, np.array(mount),
                              RGBD_CAMERA if blueprint == "sensor.camera.rgb" else blueprint)
        return self._add(sensor)

    def _add(self, sensor: SensorActor) -> SensorActor:
        self._next_id += 1
        self._sensors.append(sensor)
        return sensor

    def spawn_lidar(self, spec: LidarSpec | str, attach_to: EgoVehicle | None = _EGO, transform: np.ndarray | None = None,
                    *, n_samples: int | None = None, hit_alpha: float = HIT_ALPHA) -> LidarSensor:
        """Spawn a generated LiDAR (CARLA's ``world.spawn_actor(lidar_bp, transform, attach_to)``): its listener
        gets a `LidarMeasurement` per tick — the scan `render_lidar` gives for the same pose, spec, ``n_samples``
        and ``hit_alpha``.

        Frame: points are in the sensor frame x forward, y left, z up (right-handed, like every frame here); CARLA's
        LiDAR reports y to the right (Unreal's left-handed frame), so CARLA's ``(x, y, z)`` is our ``(x, -y, z)``.
        We keep the right-handed frame (`nfldm_sdk.sensors.lidar_measurement`).

        Args:
            spec: a `LidarSpec`, a preset name (``"nuscenes32"``, ``"hdl64"``, ``"os128"``) or a LiDAR JSON file.
            attach_to: the world's ego (the default) to ride on it (mount = ``lidar_to_ego``), or None for a LiDAR
                fixed in the scene frame (``lidar_to_world`` = the mount).
            transform: ``[4,4]`` mount overriding the spec's ``lidar_to_ego``.
            n_samples: samples per beam (default `lidar_samples`: steps of at most half a voxel).
            hit_alpha: the opacity that counts as a return (default `HIT_ALPHA`, the cameras' threshold).
        """
        route = hasattr(self.scene, "lidar_scan")       # a route of scenes scans itself (nfldm_sdk.routes.sensors)
        if getattr(self.scene, "field", None) is None and not route:
            raise LidarUnavailableError(f"this world renders a {type(self.scene).__name__}, which has neither one "
                                        "scene's field nor a lidar_scan: scan each scene with "
                                        "NeuralScene.render_lidar instead")
        spec = LidarSpec.resolve(spec)
        attach_to = self.ego if attach_to is _EGO else attach_to
        if attach_to is not None and attach_to is not self.ego:
            raise ValueError("attach_to must be this world's ego (world.ego) or None for a LiDAR fixed in the scene")
        if not 0.0 < float(hit_alpha) < 1.0:
            raise ValueError(f"hit_alpha must lie in (0, 1), got {hit_alpha}")
        if route:
            samples = self.scene.lidar_samples(spec.range_m) if n_samples is None else int(n_samples)
        else:
            if self._lidar_field is None:
                self._lidar_field = self.scene.field.to(device=self._renderer.device, dtype=torch.float32)
            samples = lidar_samples(self._lidar_field, spec.range_m) if n_samples is None else int(n_samples)
        if samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        mount = spec.lidar_to_ego if transform is None else check_rigid(np.asarray(transform, dtype=np.float64),
                                                                        "transform")
        return self._add(LidarSensor(self, self._next_id, spec, attach_to, np.array(mount), samples, hit_alpha))

    def _measure(self, s: LidarSensor, t: int, ts: float) -> LidarMeasurement:
        ego = np.array(self._ego_to_world())
        l2e, _ = s.poses(ego)
        head = getattr(self._renderer.decoder, "semantic_head", None)
        if hasattr(self.scene, "lidar_scan"):
            scan = self.scene.lidar_scan(s.spec, ego, l2e, n_samples=s.n_samples, hit_alpha=s.hit_alpha, head=head,
                                         frame=t, timestamp=ts, device=self._renderer.device)
        else:
            scan = lidar_scan(self._lidar_field, s.spec, ego, l2e, n_samples=s.n_samples, hit_alpha=s.hit_alpha,
                              head=head, frame=t, timestamp=ts, scene_id=self.scene.scene_id)
        return LidarMeasurement(scan, s.spec, s)

    # ------------------------------------------------------------------ the loop
    def tick(self) -> int:
        """Advance the ego one trajectory step, render the listening sensors, call their listeners in spawn order.

        Cameras of one image size render in one batch before any listener runs; a LiDAR scans when its listener is
        due. Every camera frame carries ``ego_to_world`` (this tick's pose), ``cam_to_ego`` and ``cam_to_world =
        ego_to_world @ cam_to_ego`` (`SensorActor.poses`), its camera model and distortion and the scene id.

        Returns:
            the new frame id (tick index).
        Raises:
            `SimulationFinished` after the last pose; `NoOverlapError` when a listening camera cannot see the scene.
        """
        if self.done:
            raise SimulationFinished(f"the trajectory has {len(self.trajectory)} poses and all were ticked (frame "
                                     f"{self._tick}): build a longer trajectory or a new SensorWorld")
        self._tick += 1
        t = self._tick
        live = [s for s in self._sensors if s.is_listening]
        frames: dict[int, Frame] = {}
        # One batched render per image size (one Cameras object holds one size).
        by_size: dict[tuple[int, int], list[CameraSensor]] = {}
        for s in live:
            if isinstance(s, CameraSensor):
                by_size.setdefault((s.spec.width, s.spec.height), []).append(s)
        ts = float(self.trajectory.timestamps[t])
        ego = np.array(self._ego_to_world())                                               # [4, 4] float64
        for (w, h), group in by_size.items():
            poses = [s.poses(ego) for s in group]                                          # (cam_to_ego, cam_to_world)
            c2w = np.stack([p[1] for p in poses])                                          # [S, 4, 4] float64
            K = np.stack([s.spec.K for s in group])
            models = [s.spec.model for s in group]                                         # fisheye specs too
            extra = {} if set(models) == {"pinhole"} else {
                "model": models, "distortion": torch.as_tensor(np.stack([s.spec.distortion for s in group]))}
            cams = Cameras(torch.as_tensor(K, dtype=torch.float32), torch.as_tensor(c2w, dtype=torch.float32), w, h,
                           **extra)
            if self.check_overlap:
                self._renderer.check(cams, [f"sensor {s.id} {s.name!r} at frame {t} ({ts:.3f} s)" for s in group])
            views = self._renderer.render(cams, self.with_range)
            for i, s in enumerate(group):
                frames[s.id] = Frame.from_views(views, i, timestamp=ts, frame=t, camera=s.name, K=s.spec.K,
                                                cam_to_world=c2w[i], seed=self._renderer.seed,
                                                bundle_hash=self._renderer.bundle_hash, ego_to_world=ego,
                                                cam_to_ego=poses[i][0], camera_model=s.spec.model,
                                                distortion=s.spec.distortion, scene_id=self._renderer.scene_id)
        for s in live:                                                                     # spawn order
            cb = s.callback
            if cb is None:                                         # a listener may stop another sensor
                continue
            cb(self._measure(s, t, ts) if isinstance(s, LidarSensor) else s.image(frames[s.id]))
        return t

    def __repr__(self) -> str:
        return (f"SensorWorld(frame {self._tick} of {len(self.trajectory)}, {len(self._sensors)} sensor(s), "
                f"device {self._renderer.device})")


def scene_world(scene, trajectory: Trajectory, **kwargs) -> SensorWorld:
    """`SensorWorld(scene, trajectory, **kwargs)` (the function form, like ``client.get_world()``)."""
    return SensorWorld(scene, trajectory, **kwargs)


def spawn_camera(scene, spec: CameraSpec | str, attach_to: EgoVehicle, transform: np.ndarray | None = None,
                 blueprint: str = RGBD_CAMERA) -> CameraSensor:
    """``scene.spawn_camera(spec, attach_to=ego)``: spawn a camera (`blueprint`: a `CAMERA_BLUEPRINTS` id) in the
    world of `attach_to` (an `EgoVehicle` of a `SensorWorld` built on this same scene, e.g.
    ``scene_world(scene, trajectory).ego``)."""
    if not isinstance(attach_to, EgoVehicle):
        raise TypeError("attach_to must be the ego of a SensorWorld of this scene: world = scene_world(scene, "
                        "trajectory); scene.spawn_camera(spec, attach_to=world.ego)")
    src = scene.field if isinstance(scene, VoxelField) else getattr(scene, "field", None)
    if attach_to.world.scene.field is not src:
        raise ValueError("attach_to belongs to a SensorWorld of another scene: spawn cameras in the world of the "
                         "scene they should see")
    return attach_to.world.spawn_camera(spec, attach_to=attach_to, transform=transform, blueprint=blueprint)
