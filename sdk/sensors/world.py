"""A CARLA-like synchronous world around a generated scene: an ego following a trajectory, camera sensors.

``world = SensorWorld(scene, trajectory)``, ``cam = world.spawn_camera("front", attach_to=world.ego)``,
``cam.listen(callback)``, ``world.tick()``: each tick moves the ego one trajectory step, renders every listening
camera in batched decoder calls (`nfldm_sdk.sensors.renderer.BatchedRenderer`) and calls the listeners, in spawn
order, with a `CameraImage` (``.frame``, ``.timestamp``, ``.width``, ``.height``, ``.fov``, ``.transform``,
``.raw_data``, ``.rgb``, ``.depth``), a read-only view of the tick's `Frame`.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field as dc_field
from typing import Callable

import numpy as np
import torch

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.cameras.rig import CameraRig, CameraSpec
from nfldm_sdk.cameras.trajectory import Trajectory, check_rigid
from nfldm_sdk.errors import NfldmError
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.sensors.frames import Frame
from nfldm_sdk.sensors.renderer import DEFAULT_BATCH_SIZE, BatchedRenderer, resolve_scene

__all__ = ["SensorWorld", "scene_world", "spawn_camera", "EgoVehicle", "CameraSensor", "CameraImage", "WorldSnapshot",
           "SimulationFinished"]


class SimulationFinished(NfldmError, RuntimeError):
    """`SensorWorld.tick` was called after the trajectory's last pose."""


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


class CameraImage:
    """What a sensor's listener receives (CARLA's ``carla.Image``, plus depth): a read-only view of one `Frame`.

    Attributes (read-only): every `Frame` field and property, read through to the frame — ``frame`` (tick index),
    ``timestamp`` (s), ``width``, ``height``, ``rgb``, ``depth`` (planar metres, inf = no hit), ``alpha``, ``range``
    (or None), ``valid``, ``K``, ``cam_to_world``, ``camera`` (name), ``seed``, ``bundle_hash`` — plus ``fov``
    (horizontal, degrees), ``transform`` (``cam_to_world [4,4]``, OpenCV camera -> scene frame — a matrix, not a
    carla.Transform), ``raw_data`` (bytes of the ``[H, W, 3]`` RGB image — RGB, not CARLA's BGRA), ``sensor`` (the
    `CameraSensor`) and ``data`` (the underlying `Frame`).
    """

    def __init__(self, data: Frame, sensor: "CameraSensor", fov: float):
        self.data, self.sensor, self.fov = data, sensor, fov

    transform = property(lambda self: self.data.cam_to_world, doc="``cam_to_world [4,4]`` of the frame.")

    @property
    def raw_data(self) -> bytes:
        """The RGB image as bytes, row-major ``[H, W, 3]`` uint8 (note: RGB, not CARLA's BGRA)."""
        return self.data.rgb.tobytes()

    def save_to_disk(self, path: str) -> str:
        """Write the RGB image as PNG. Like CARLA, ``%d``-style patterns in `path` take the frame number
        (``"out/%06d.png"``). Returns the path written."""
        import imageio.v3 as iio  # start-up time: imageio only when an image is saved

        if "%" in path:
            path = path % self.frame
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        iio.imwrite(path, self.data.rgb)
        return path

    def __repr__(self) -> str:
        return f"CameraImage(frame={self.frame}, timestamp={self.timestamp:.3f}, {self.camera!r} {self.width}x{self.height})"


def _frame_attribute(name: str) -> property:
    """A read-only property of `CameraImage` returning its frame's attribute `name`."""
    return property(lambda self: getattr(self.data, name), doc=f"The frame's ``{name}`` (`Frame`).")


#: The `Frame` attributes a `CameraImage` reads through to: its fields and its derived properties.
FRAME_ATTRIBUTES = (*(f.name for f in dataclasses.fields(Frame)), "valid", "width", "height")
for _name in FRAME_ATTRIBUTES:
    setattr(CameraImage, _name, _frame_attribute(_name))
del _name


class CameraSensor:
    """A camera actor spawned in a `SensorWorld` (CARLA's ``sensor.camera.rgb`` with depth).

    Attached to the ego (``attach_to=world.ego``) its mount is ``cam_to_ego`` (the spec's, or ``transform``); not
    attached it stays fixed in the scene frame at ``cam_to_world`` = the spec's ``cam_to_ego`` (or ``transform``).
    It renders only while listening.
    """

    type_id = "sensor.camera.rgbd"

    def __init__(self, world: "SensorWorld", actor_id: int, spec: CameraSpec, parent: EgoVehicle | None,
                 mount: np.ndarray):
        self._world = world
        self.id = actor_id
        self.spec = spec
        self.parent = parent
        self.mount = mount
        self._callback: Callable[[CameraImage], None] | None = None
        self.is_alive = True

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_listening(self) -> bool:
        return self._callback is not None

    def get_transform(self) -> np.ndarray:
        """``cam_to_world [4,4]`` float64 at the current tick."""
        return self._world._ego_to_world() @ self.mount if self.parent is not None else np.array(self.mount)

    def listen(self, callback: Callable[[CameraImage], None]) -> None:
        """Call ``callback(image)`` with a `CameraImage` on every tick from now on (replaces a previous callback)."""
        if not self.is_alive:
            raise RuntimeError(f"sensor {self.id} ({self.name!r}) was destroyed: spawn a new one")
        if not callable(callback):
            raise TypeError(f"listen needs a callable, got {type(callback).__name__}")
        self._callback = callback

    def stop(self) -> None:
        """Stop calling the listener (and rendering this camera)."""
        self._callback = None

    def destroy(self) -> bool:
        """Stop and remove the sensor from the world; returns True (as CARLA does) when it was alive."""
        was = self.is_alive
        self.stop()
        self.is_alive = False
        self._world._sensors = [s for s in self._world._sensors if s is not self]
        return was

    def __repr__(self) -> str:
        where = "on ego" if self.parent is not None else "static"
        return f"CameraSensor(id={self.id}, {self.name!r} {self.spec.width}x{self.spec.height}, {where}, " \
               f"{'listening' if self.is_listening else 'idle'})"


class SensorWorld:
    """A CARLA-like synchronous world around a generated scene: an ego following a trajectory, camera sensors.

    Each `tick` moves the ego to the next trajectory pose (the first tick to the first pose), renders every listening
    sensor in batched decoder calls, then calls the listeners in spawn order; it returns the frame id (the tick
    index). After the last pose `tick` raises `SimulationFinished` (see `done`).

    Args:
        scene: a `NeuralScene` (or `VoxelField` with `decoder`).
        trajectory: the ego path in the scene frame.
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
        self.scene = resolve_scene(scene, decoder)
        self.trajectory = trajectory.resample(rate_hz) if rate_hz else trajectory
        self._renderer = BatchedRenderer(self.scene, batch_size, device)
        if rig is None:
            h, w = getattr(self.scene.decoder.config, "image_size", (256, 256))
            rig = CameraRig.preset("capture", w, h)
        self.rig = rig
        self.check_overlap = check_overlap
        self.with_range = with_range
        self.ego = EgoVehicle(self)
        self._sensors: list[CameraSensor] = []
        self._next_id = 1
        self._tick = -1

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
        return len(self.trajectory) - 1 - self._tick

    def get_snapshot(self) -> WorldSnapshot:
        """Frame id, time and ego pose now."""
        t = self.trajectory.timestamps[max(self._tick, 0)]
        return WorldSnapshot(self._tick, float(t), np.array(self._ego_to_world()))

    def get_sensors(self) -> list[CameraSensor]:
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

    def spawn_camera(self, spec: CameraSpec | str, attach_to: EgoVehicle | None = None,
                     transform: np.ndarray | None = None) -> CameraSensor:
        """Spawn a camera (CARLA's ``world.spawn_actor(blueprint, transform, attach_to)``).

        Args:
            spec: a `CameraSpec`, a camera name of the world's rig, or ``"preset/camera"``.
            attach_to: ``world.ego`` to ride on the ego (mount = ``cam_to_ego``); None for a camera fixed in the
                scene frame (``cam_to_world`` = the spec's ``cam_to_ego``), as in CARLA.
            transform: ``[4,4]`` mount overriding the spec's (``cam_to_ego`` attached, ``cam_to_world`` static).
        """
        spec = self._spec(spec)
        if attach_to is not None and attach_to is not self.ego:
            raise ValueError("attach_to must be this world's ego (world.ego) or None for a static camera")
        self._renderer.check_size(spec.width, spec.height)
        mount = spec.cam_to_ego if transform is None else check_rigid(np.asarray(transform, dtype=np.float64), "transform")
        sensor = CameraSensor(self, self._next_id, spec, attach_to, np.array(mount))
        self._next_id += 1
        self._sensors.append(sensor)
        return sensor

    # ------------------------------------------------------------------ the loop
    def tick(self) -> int:
        """Advance the ego one trajectory step, render the listening sensors, call their listeners in spawn order.

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
            by_size.setdefault((s.spec.width, s.spec.height), []).append(s)
        ts = float(self.trajectory.timestamps[t])
        for (w, h), group in by_size.items():
            c2w = np.stack([s.get_transform() for s in group])                             # [S, 4, 4] float64
            K = np.stack([s.spec.K for s in group])
            cams = Cameras(torch.as_tensor(K, dtype=torch.float32), torch.as_tensor(c2w, dtype=torch.float32), w, h)
            if self.check_overlap:
                self._renderer.check(cams, [f"sensor {s.id} {s.name!r} at frame {t} ({ts:.3f} s)" for s in group])
            views = self._renderer.render(cams, self.with_range)
            for i, s in enumerate(group):
                frames[s.id] = Frame.from_views(views, i, timestamp=ts, frame=t, camera=s.name, K=s.spec.K,
                                                cam_to_world=c2w[i], seed=self.scene.seed,
                                                bundle_hash=self.scene.bundle_hash)
        for s in live:                                                                     # spawn order
            cb = s._callback
            if cb is not None:                                     # a listener may stop another sensor
                cb(CameraImage(frames[s.id], s, s.spec.hfov_deg))
        return t

    def __repr__(self) -> str:
        return (f"SensorWorld(frame {self._tick} of {len(self.trajectory)}, {len(self._sensors)} sensor(s), "
                f"device {self._renderer.device})")


def scene_world(scene, trajectory: Trajectory, **kwargs) -> SensorWorld:
    """`SensorWorld(scene, trajectory, **kwargs)` (the function form, like ``client.get_world()``)."""
    return SensorWorld(scene, trajectory, **kwargs)


def spawn_camera(scene, spec: CameraSpec | str, attach_to: EgoVehicle, transform: np.ndarray | None = None
                 ) -> CameraSensor:
    """``scene.spawn_camera(spec, attach_to=ego)``: spawn a camera in the world of `attach_to` (an `EgoVehicle` of a
    `SensorWorld` built on this same scene, e.g. ``scene_world(scene, trajectory).ego``)."""
    if not isinstance(attach_to, EgoVehicle):
        raise TypeError("attach_to must be the ego of a SensorWorld of this scene: world = scene_world(scene, "
                        "trajectory); scene.spawn_camera(spec, attach_to=world.ego)")
    src = scene.field if isinstance(scene, VoxelField) else getattr(scene, "field", None)
    if attach_to.world.scene.field is not src:
        raise ValueError("attach_to belongs to a SensorWorld of another scene: spawn cameras in the world of the "
                         "scene they should see")
    return attach_to.world.spawn_camera(spec, attach_to=attach_to, transform=transform)
