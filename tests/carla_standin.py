"""A stand-in CARLA server + client for tests: the subset of the `carla` 0.9.16 Python API the backend uses.

No CARLA server can run in CI, so this module imitates one in-process, faithfully to the real signatures
(checked against the installed package's `libcarla.pyi`): `Client(host, port, worker_threads=0)`,
`Client.get_trafficmanager(port=8000)`, `World.tick(seconds=10.0) -> int`, `World.spawn_actor(blueprint,
transform, attach_to=None, attachment_type=..., bone='')`, `World.try_spawn_actor` (None on collision),
`WorldSnapshot.find(id) -> ActorSnapshot | None`, `Vehicle.set_autopilot(enabled=True, port=8000)`,
`Sensor.listen(callback)/stop()/is_listening()`, `Actor.destroy() -> bool`, `Actor.is_alive` (property, local),
`Image.{frame, timestamp (float s), width, height, fov, raw_data (BGRA bytes), transform}`,
`SemanticLidarMeasurement.{frame, timestamp, transform, channels, horizontal_angle, raw_data, get_point_count(channel)}`
iterating `SemanticLidarDetection.{point, cos_inc_angle, object_idx, object_tag}`.

The maths is real: transforms, locations, rotations, timestamps, weather and world settings are the REAL
classes of the installed `carla` package (they work without a server), so every pose goes through CARLA's own
float32 `Transform`. Sensor world transforms are composed in UE coordinates here (independently of
`sim_bridge.conventions`), and images are rendered in UE coordinates:

* the scene is a flat ground plane at UE z = 0 under a sky;
* depth camera: planar depth (along the camera's UE +x) of the ground hit, encoded as CARLA's 24-bit BGRA
  code; rays that miss the ground or hit beyond 1000 m give the far-plane code (the sky);
* semantic camera: tag in R — SIDEWALK where the hit has UE y > `SIDEWALK_Y` (our world y < −SIDEWALK_Y,
  i.e. to the right of the x axis), ROAD elsewhere on the ground, SKY for the sky;
* RGB camera: BGRA of a 1 m checker on the road (`ROAD_LIGHT`/`ROAD_DARK` by parity of floor(x_ue) + floor(y_ue)),
  `SIDEWALK_RGB` on the sidewalk, `SKY_RGB` for the sky;
* semantic LiDAR (``sensor.lidar.ray_cast_semantic``): CARLA's own sweep (RayCastSemanticLidar.cpp): per tick
  ``round(points_per_second · dt / channels)`` shots per laser, lasers evenly from upper_fov down to lower_fov, shot
  k at UE yaw ``fmod(current + k · step, horizontal_fov) − horizontal_fov / 2`` with ``step = rotation_frequency ·
  horizontal_fov · dt / shots`` and ``current`` advancing by ``rotation_frequency · horizontal_fov · dt`` per tick;
  a shot is the forward vector of (pitch = laser elevation, yaw) composed with the sensor's rotation, traced to
  ``range`` metres against the ground; each hit is reported in UE sensor-local coordinates (x fwd, y right, z up)
  with cos_inc_angle, object_idx 0 (the map) and the ground's tag, channel by channel, as 24-byte
  `SemanticLidarDetection` records in `raw_data`.

Vehicles on autopilot drive straight ahead at `speed` m/s on the ground (z = 0, pitch = roll = 0).

Fault injection (`Faults`, keyed by the simulator frame id a tick produces):
* ``late[frame] = seconds`` — that frame's images are delivered from a timer thread after a delay;
* ``out_of_order`` — frames whose images are delivered in reversed sensor order, each followed by a stale
  re-delivery of the previous frame's image (older data arriving after newer);
* ``timeout[frame] = "before" | "after"`` — the tick raises CARLA's time-out RuntimeError, without advancing
  ("before") or after the server advanced and sent that frame's data ("after", the reply was lost); the
  client that saw it is then dead (every later call through it times out), as after a dropped connection;
* ``raise_at[frame] = exception`` — the tick raises that exception (mid-episode crash, KeyboardInterrupt);
* ``occupied`` — indices of spawn points blocked by another vehicle (spawning there collides).

Records for assertions: `applied_settings`, `destroyed`, `spawned`, `loads`, `clients`, `violations`
(API misuse a real server would punish: ticking an asynchronous world, autopilot without a synchronous
Traffic Manager, destroying a listening sensor, unknown blueprint attributes).
"""
from __future__ import annotations

import fnmatch
import math
import threading
from dataclasses import dataclass, field

import carla
import numpy as np

from sim_bridge import semantics

SKY_RGB = (70, 130, 180)
SIDEWALK_RGB = (180, 120, 40)
ROAD_LIGHT = (200, 200, 200)
ROAD_DARK = (60, 60, 60)
#: UE y (metres) beyond which the ground is sidewalk.
SIDEWALK_Y = 3.0
DEPTH_FAR = 1000.0
_MAX_CODE = 256**3 - 1

MAPS = ["/Game/Carla/Maps/Town01", "/Game/Carla/Maps/Town03", "/Game/Carla/Maps/Town10HD_Opt"]

#: Spawn points (UE coordinates, lifted 0.3 m like CARLA's). Close to the origin so float32 stays exact to ~1e-6.
SPAWN_POINTS = [(2.0, -3.0, 0.3, 0.0), (-6.0, 4.0, 0.3, 90.0), (10.0, 8.0, 0.3, -135.0), (-12.0, -9.0, 0.3, 33.3),
                (0.0, 15.0, 0.3, 180.0), (14.0, -14.0, 0.3, -90.0)]


def _timeout_error(host: str, port: int, seconds: float) -> RuntimeError:
    # The exact wording of libcarla's RPC time-out.
    return RuntimeError(f"time-out of {int(seconds * 1000)}ms while waiting for the simulator, make sure the "
                        f"simulator is ready and connected to {host}:{port}")


def copy_settings(s: carla.WorldSettings) -> carla.WorldSettings:
    """A copy of a real `carla.WorldSettings` (the class has no __copy__)."""
    out = carla.WorldSettings()
    for name in ("synchronous_mode", "no_rendering_mode", "fixed_delta_seconds", "substepping",
                 "max_substep_delta_time", "max_substeps", "max_culling_distance", "deterministic_ragdolls",
                 "tile_stream_distance", "actor_active_distance", "spectator_as_ego"):
        setattr(out, name, getattr(s, name))
    return out


def settings_tuple(s) -> tuple:
    """Comparable summary of a WorldSettings."""
    return (s.synchronous_mode, s.no_rendering_mode, s.fixed_delta_seconds, s.substepping,
            s.max_substep_delta_time, s.max_substeps)


def _copy_transform(t) -> carla.Transform:
    return carla.Transform(carla.Location(x=t.location.x, y=t.location.y, z=t.location.z),
                           carla.Rotation(pitch=t.rotation.pitch, yaw=t.rotation.yaw, roll=t.rotation.roll))


def _ue_rotation_from_matrix(R: np.ndarray) -> carla.Rotation:
    """Euler angles (UE pitch, yaw, roll, degrees) of a UE rotation matrix (stand-in's own, for composition)."""
    pitch = math.degrees(math.asin(float(np.clip(R[2, 0], -1, 1))))
    yaw = math.degrees(math.atan2(R[1, 0], R[0, 0]))
    roll = math.degrees(math.atan2(-R[2, 1], R[2, 2]))
    return carla.Rotation(pitch=pitch, yaw=yaw, roll=roll)


def compose(parent: carla.Transform, child: carla.Transform) -> carla.Transform:
    """World transform of `child` attached to `parent` (UE): location by CARLA's own `Transform.transform`."""
    loc = parent.transform(carla.Location(x=child.location.x, y=child.location.y, z=child.location.z))
    R = np.array(parent.get_matrix())[:3, :3] @ np.array(child.get_matrix())[:3, :3]
    return carla.Transform(carla.Location(x=loc.x, y=loc.y, z=loc.z), _ue_rotation_from_matrix(R))


@dataclass
class Faults:
    """Fault injection, keyed by the frame id a tick produces (see module docstring)."""

    late: dict = field(default_factory=dict)
    out_of_order: set = field(default_factory=set)
    timeout: dict = field(default_factory=dict)
    raise_at: dict = field(default_factory=dict)
    occupied: set = field(default_factory=set)


# ---------------------------------------------------------------------------------------------- blueprints
_CAMERA_ATTRS = {"image_size_x": "800", "image_size_y": "600", "fov": "90.0", "sensor_tick": "0.0", "role_name": "front"}
_BLUEPRINTS = {
    "vehicle.tesla.model3": {"role_name": "autopilot", "color": "17,37,103"},
    "vehicle.audi.a2": {"role_name": "autopilot", "color": "0,0,0"},
    "sensor.camera.rgb": {**_CAMERA_ATTRS, "motion_blur_intensity": "0.45", "gamma": "2.2"},
    "sensor.camera.depth": dict(_CAMERA_ATTRS),
    "sensor.camera.semantic_segmentation": dict(_CAMERA_ATTRS),
    # ray_cast_semantic has no noise, drop-off or attenuation attributes (those are ray_cast's)
    "sensor.lidar.ray_cast_semantic": {"channels": "32", "range": "10.0", "points_per_second": "56000",
                                       "rotation_frequency": "10.0", "upper_fov": "10.0", "lower_fov": "-30.0",
                                       "horizontal_fov": "360.0", "sensor_tick": "0.0", "role_name": "front"},
}
LIDAR_BLUEPRINT = "sensor.lidar.ray_cast_semantic"
_INT_ATTRS = ("image_size_x", "image_size_y", "channels", "points_per_second")
_FLOAT_ATTRS = ("fov", "range", "rotation_frequency", "upper_fov", "lower_fov", "horizontal_fov", "sensor_tick")


class ActorBlueprint:
    """carla.ActorBlueprint: id, has_attribute, set_attribute (str values), get_attribute."""

    def __init__(self, bp_id: str, attrs: dict):
        self.id = bp_id
        self._attrs = dict(attrs)
        self.tags = bp_id.split(".")

    def has_attribute(self, name: str) -> bool:
        return name in self._attrs

    def set_attribute(self, name: str, value: str) -> None:
        if name not in self._attrs:
            raise IndexError(f"blueprint {self.id!r} has no attribute {name!r}")
        if not isinstance(value, str):
            raise TypeError(f"set_attribute expects a str value (as the real binding does), got {type(value).__name__}")
        if name in _INT_ATTRS:
            int(value)
        if name in _FLOAT_ATTRS:
            float(value)
        self._attrs[name] = value

    def get_attribute(self, name: str) -> str:
        return self._attrs[name]

    def __repr__(self):
        return f"ActorBlueprint(id={self.id})"


class BlueprintLibrary:
    """carla.BlueprintLibrary: find (IndexError when missing), filter (fnmatch on ids), len, iter, getitem."""

    def __init__(self, blueprints: list[ActorBlueprint]):
        self._bps = blueprints

    def find(self, bp_id: str) -> ActorBlueprint:
        for bp in self._bps:
            if bp.id == bp_id:
                return ActorBlueprint(bp.id, bp._attrs)
        raise IndexError(f"blueprint {bp_id!r} not found")

    def filter(self, pattern: str) -> "BlueprintLibrary":
        return BlueprintLibrary([ActorBlueprint(b.id, b._attrs) for b in self._bps if fnmatch.fnmatch(b.id, pattern)])

    def __len__(self):
        return len(self._bps)

    def __iter__(self):
        return iter(self._bps)

    def __getitem__(self, i):
        return self._bps[i]


# ------------------------------------------------------------------------------------------------- actors
class Actor:
    """carla.Actor: id, type_id, is_alive (property, this handle), get_transform, destroy -> bool."""

    def __init__(self, server: "StandinServer", actor_id: int, bp: ActorBlueprint, transform, parent=None):
        self._server = server
        self.id = actor_id
        self.type_id = bp.id
        self.attributes = dict(bp._attrs)
        self.parent = parent
        self._destroyed = False
        server._state[actor_id] = _copy_transform(transform)  # world transform (vehicles) or relative (sensors)

    @property
    def is_alive(self) -> bool:
        return not self._destroyed

    def get_transform(self) -> carla.Transform:
        return self._server.world_transform(self.id)

    def destroy(self) -> bool:
        return self._server.destroy(self)


class Vehicle(Actor):
    """carla.Vehicle: set_autopilot(enabled=True, port=8000)."""

    def set_autopilot(self, enabled: bool = True, port: int = 8000) -> None:
        self._server.set_autopilot(self, enabled, port)


class Sensor(Actor):
    """carla.Sensor: listen(callback), stop(), is_listening()."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._callback = None

    def listen(self, callback) -> None:
        self._callback = callback

    def stop(self) -> None:
        self._callback = None

    def is_listening(self) -> bool:
        return self._callback is not None


class Image:
    """carla.Image: frame, timestamp (float seconds), width, height, fov, raw_data (BGRA bytes), transform."""

    def __init__(self, frame, timestamp, width, height, fov, raw_data, transform):
        self.frame = frame
        self.frame_number = frame
        self.timestamp = timestamp
        self.width = width
        self.height = height
        self.fov = fov
        self.raw_data = raw_data
        self.transform = transform

    def __repr__(self):
        return f"Image(frame={self.frame}, timestamp={self.timestamp:.3f}, width={self.width}, height={self.height})"


class SemanticLidarDetection:
    """carla.SemanticLidarDetection: point (carla.Location, sensor-local UE metres), cos_inc_angle, object_idx,
    object_tag."""

    def __init__(self, record):
        self.point = carla.Location(x=float(record["x"]), y=float(record["y"]), z=float(record["z"]))
        self.cos_inc_angle = float(record["cos_inc_angle"])
        self.object_idx = int(record["object_idx"])
        self.object_tag = int(record["object_tag"])


#: The 24-byte record of one detection in `SemanticLidarMeasurement.raw_data` (CARLA's FSemanticDetection).
DETECTION_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("cos_inc_angle", "<f4"), ("object_idx", "<u4"),
                            ("object_tag", "<u4")])


class SemanticLidarMeasurement:
    """carla.SemanticLidarMeasurement: frame, timestamp, transform, channels, horizontal_angle (radians),
    raw_data (the detections' bytes), get_point_count(channel), len / iter / getitem over detections."""

    def __init__(self, frame, timestamp, transform, horizontal_angle, records: np.ndarray, counts: list[int]):
        self.frame = frame
        self.frame_number = frame
        self.timestamp = timestamp
        self.transform = transform
        self.horizontal_angle = horizontal_angle
        self.channels = len(counts)
        self._records = records
        self._counts = list(counts)
        self.raw_data = bytes(records.tobytes())

    def get_point_count(self, channel: int) -> int:
        return self._counts[channel]

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, pos: int) -> SemanticLidarDetection:
        return SemanticLidarDetection(self._records[pos])

    def __iter__(self):
        return (SemanticLidarDetection(r) for r in self._records)

    def __repr__(self):
        return f"SemanticLidarMeasurement(frame={self.frame}, number_of_points={len(self)})"


class ActorSnapshot:
    """carla.ActorSnapshot: id, get_transform()."""

    def __init__(self, actor_id: int, transform):
        self.id = actor_id
        self._t = transform

    def get_transform(self) -> carla.Transform:
        return _copy_transform(self._t)


class WorldSnapshot:
    """carla.WorldSnapshot: frame, timestamp (real carla.Timestamp), find(id), has_actor(id)."""

    def __init__(self, frame: int, timestamp, actors: dict):
        self.frame = frame
        self.timestamp = timestamp
        self._actors = actors

    def find(self, actor_id: int):
        t = self._actors.get(actor_id)
        return None if t is None else ActorSnapshot(actor_id, t)

    def has_actor(self, actor_id: int) -> bool:
        return actor_id in self._actors


class Map:
    """carla.Map: name ("Carla/Maps/TownXX"), get_spawn_points() -> list[carla.Transform]."""

    def __init__(self, name: str):
        self.name = name

    def get_spawn_points(self) -> list:
        return [carla.Transform(carla.Location(x=x, y=y, z=z), carla.Rotation(yaw=yaw)) for x, y, z, yaw in SPAWN_POINTS]


class TrafficManager:
    """carla.TrafficManager: set_synchronous_mode, set_random_device_seed, get_port."""

    def __init__(self, port: int):
        self._port = port
        self.synchronous = False
        self.sync_history: list[bool] = []
        self.seed = None

    def set_synchronous_mode(self, mode_switch: bool) -> None:
        self.synchronous = bool(mode_switch)
        self.sync_history.append(bool(mode_switch))

    def set_random_device_seed(self, value: int) -> None:
        self.seed = int(value)

    def get_port(self) -> int:
        return self._port


# -------------------------------------------------------------------------------------------------- server
class StandinServer:
    """The simulated CARLA server (world state, sensors, faults, records). Make clients with `client_factory`."""

    def __init__(self, map_name: str = "Town03", server_version: str = "0.9.16", speed: float = 5.0,
                 first_frame: int = 1000, running: bool = True):
        self.server_version = server_version
        self.speed = float(speed)
        self.running = running
        self.faults = Faults()
        self.map = Map(f"Carla/Maps/{map_name}")
        self.settings = carla.WorldSettings()  # asynchronous, variable step: a fresh server
        self.settings.fixed_delta_seconds = None
        self.weather = carla.WeatherParameters.Default
        self.frame = int(first_frame)
        self.elapsed = 12.5  # arbitrary: episodes must not assume time starts at 0
        self.lock = threading.RLock()
        self.tms: dict[int, TrafficManager] = {}
        self.actors: dict[int, Actor] = {}
        self._state: dict[int, carla.Transform] = {}
        self._autopilot: dict[int, int] = {}
        self._next_id = 100
        self._last_images: dict[int, Image] = {}
        self._lidar_angle: dict[int, float] = {}  # sensor id -> horizontal angle (radians) of its next sweep
        self._timers: list[threading.Timer] = []
        # records
        self.applied_settings: list[carla.WorldSettings] = []
        self.destroyed: list[int] = []
        self.spawned: list[tuple[int, str, carla.Transform, int | None]] = []
        self.loads: list[str] = []
        self.clients: list["Client"] = []
        self.violations: list[str] = []
        self.timeouts_set: list[float] = []
        self.snapshots = {self.frame: self._snapshot()}

    # -- clients
    def client_factory(self, host: str = "127.0.0.1", port: int = 2000, worker_threads: int = 0) -> "Client":
        """Drop-in for `carla.Client(host, port, worker_threads=0)`."""
        c = Client(self, host, port)
        self.clients.append(c)
        return c

    # -- state
    def alive_actors(self) -> list[Actor]:
        return [a for a in self.actors.values() if a.is_alive]

    def world_transform(self, actor_id: int) -> carla.Transform:
        a = self.actors[actor_id]
        t = self._state[actor_id]
        return compose(self.world_transform(a.parent.id), t) if a.parent is not None else _copy_transform(t)

    def _snapshot(self) -> WorldSnapshot:
        ts = carla.Timestamp(self.frame, self.elapsed, self.settings.fixed_delta_seconds or 0.0, 0.0)
        actors = {i: self.world_transform(i) for i, a in self.actors.items() if a.is_alive}
        return WorldSnapshot(self.frame, ts, actors)

    def destroy(self, actor: Actor) -> bool:
        with self.lock:
            if actor._destroyed:
                return False
            if isinstance(actor, Sensor) and actor.is_listening():
                self.violations.append(f"sensor {actor.id} destroyed while listening (call stop() first)")
            actor._destroyed = True
            self.destroyed.append(actor.id)
            self._autopilot.pop(actor.id, None)
            return True

    def set_autopilot(self, vehicle: Vehicle, enabled: bool, port: int) -> None:
        if enabled:
            tm = self.tms.get(port)
            if tm is None or (self.settings.synchronous_mode and not tm.synchronous):
                self.violations.append(f"autopilot on port {port} without a synchronous Traffic Manager there")
            self._autopilot[vehicle.id] = port
        else:
            self._autopilot.pop(vehicle.id, None)

    def spawn(self, bp: ActorBlueprint, transform, attach_to=None) -> Actor | None:
        with self.lock:
            if bp.id.startswith("vehicle."):
                if attach_to is not None:
                    raise RuntimeError("stand-in: vehicles cannot be attached")
                for i in self.faults.occupied:
                    x, y, _, _ = SPAWN_POINTS[i]
                    if math.hypot(transform.location.x - x, transform.location.y - y) < 3.0:
                        return None
                for a in self.alive_actors():
                    if isinstance(a, Vehicle):
                        loc = self._state[a.id].location
                        if math.hypot(transform.location.x - loc.x, transform.location.y - loc.y) < 3.0:
                            return None
                cls = Vehicle
            elif bp.id.startswith("sensor.camera.") or bp.id == LIDAR_BLUEPRINT:
                cls = Sensor
            else:
                raise RuntimeError(f"stand-in cannot spawn {bp.id}")
            actor_id = self._next_id
            self._next_id += 1
            actor = cls(self, actor_id, bp, transform, parent=attach_to)
            self.actors[actor_id] = actor
            self.spawned.append((actor_id, bp.id, _copy_transform(transform), attach_to.id if attach_to else None))
            return actor

    # -- simulation
    def tick(self, client: "Client") -> int:
        with self.lock:
            nxt = self.frame + 1
            exc = self.faults.raise_at.pop(nxt, None)
            if exc is not None:
                raise exc
            mode = self.faults.timeout.pop(nxt, None)
            if mode == "before":
                client.dead = True
                raise _timeout_error(client.host, client.port, client.timeout)
            if not self.settings.synchronous_mode:
                self.violations.append("tick() on an asynchronous world")
            self.frame = nxt
            self.elapsed += self.settings.fixed_delta_seconds or 0.05
            dt = self.settings.fixed_delta_seconds or 0.05
            for vid in list(self.actors):
                a = self.actors[vid]
                if isinstance(a, Vehicle) and a.is_alive:
                    t = self._state[vid]
                    step = self.speed * dt if vid in self._autopilot else 0.0
                    yaw = math.radians(t.rotation.yaw)
                    self._state[vid] = carla.Transform(
                        carla.Location(x=t.location.x + step * math.cos(yaw), y=t.location.y + step * math.sin(yaw), z=0.0),
                        carla.Rotation(pitch=0.0, yaw=t.rotation.yaw, roll=0.0))
            self.snapshots[self.frame] = self._snapshot()
            self._deliver(self.frame)
            if mode == "after":
                client.dead = True
                raise _timeout_error(client.host, client.port, client.timeout)
            return self.frame

    def _deliver(self, frame: int) -> None:
        sensors = [a for a in self.actors.values() if isinstance(a, Sensor) and a.is_alive and a.is_listening()]
        items = [(s, self._render(s, frame)) for s in sensors]
        if frame in self.faults.out_of_order:
            deliveries = []
            for s, img in reversed(items):
                deliveries.append((s, img))
                if s.id in self._last_images:
                    deliveries.append((s, self._last_images[s.id]))  # an older frame arriving after a newer one
        else:
            deliveries = items
        for s, img in items:
            self._last_images[s.id] = img
        delay = self.faults.late.get(frame)
        for s, img in deliveries:
            cb = s._callback
            if delay is None:
                cb(img)
            else:  # from another thread, after the tick returned — like libcarla's streaming threads
                timer = threading.Timer(delay, cb, args=(img,))
                timer.daemon = True
                self._timers.append(timer)
                timer.start()

    def _sweep(self, sensor: Sensor, frame: int) -> SemanticLidarMeasurement:
        """One tick of a semantic LiDAR against the ground plane, in UE coordinates (see module docstring)."""
        a = sensor.attributes
        channels, pps = int(a["channels"]), int(a["points_per_second"])
        rng, freq, hfov = float(a["range"]), float(a["rotation_frequency"]), float(a["horizontal_fov"])
        upper, lower = float(a["upper_fov"]), float(a["lower_fov"])
        dt = self.settings.fixed_delta_seconds or 0.05
        shots = int(math.floor(pps * dt / channels + 0.5))           # FMath::RoundHalfFromZero of a positive value
        current = math.degrees(self._lidar_angle.get(sensor.id, 0.0))
        tick_angle = freq * hfov * dt
        delta = 0.0 if channels == 1 else (upper - lower) / (channels - 1)
        pitch = np.radians(upper - delta * np.arange(channels))[:, None]                           # [C, 1]
        yaw = np.radians(np.fmod(current + tick_angle / shots * np.arange(shots), hfov) - hfov / 2)[None, :]
        local = np.stack(np.broadcast_arrays(np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw),
                                             np.sin(pitch)), axis=-1)                              # [C, S, 3] UE
        t = self.world_transform(sensor.id)
        M = np.array(t.get_matrix(), dtype=np.float64)
        d = local @ M[:3, :3].T
        o = M[:3, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(d[..., 2] < 0, -o[2] / d[..., 2], np.inf)      # distance to the ground (unit directions)
        hit = s <= rng
        world = o + np.where(hit, s, 0.0)[..., None] * d
        records = np.zeros(int(hit.sum()), DETECTION_DTYPE)
        pts = (local * np.where(hit, s, 0.0)[..., None])[hit]                   # R^T (hit - o), channel by channel
        records["x"], records["y"], records["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
        records["cos_inc_angle"] = -d[..., 2][hit]                             # ground normal (0, 0, 1)
        records["object_tag"] = np.where(world[..., 1] > SIDEWALK_Y, semantics.SIDEWALK, semantics.ROAD)[hit]
        self._lidar_angle[sensor.id] = math.radians(math.fmod(current + tick_angle, hfov))
        return SemanticLidarMeasurement(frame, self.elapsed, t, self._lidar_angle[sensor.id], records,
                                        hit.sum(axis=1).tolist())

    def _render(self, sensor: Sensor, frame: int):
        """Render the ground plane for `sensor` in UE coordinates (see module docstring)."""
        if sensor.type_id == LIDAR_BLUEPRINT:
            return self._sweep(sensor, frame)
        w = int(sensor.attributes["image_size_x"])
        h = int(sensor.attributes["image_size_y"])
        fov = float(sensor.attributes["fov"])
        t = self.world_transform(sensor.id)
        M = np.array(t.get_matrix(), dtype=np.float64)
        f = w / (2.0 * math.tan(math.radians(fov) / 2.0))
        u = np.arange(w) + 0.5
        v = np.arange(h) + 0.5
        uu, vv = np.meshgrid(u, v)
        # UE camera local ray with unit forward component: (1, right, up).
        d_local = np.stack([np.ones_like(uu), (uu - w / 2.0) / f, -(vv - h / 2.0) / f], axis=-1)  # [H,W,3]
        d = d_local @ M[:3, :3].T  # [H,W,3] world
        o = M[:3, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            tt = np.where(d[..., 2] < 0, -o[2] / d[..., 2], np.inf)  # planar depth = ray parameter (forward comp. 1)
        hit = np.isfinite(tt) & (tt > 0) & (tt < DEPTH_FAR)
        p = o + np.where(hit, tt, 0.0)[..., None] * d
        bgra = np.zeros((h, w, 4), np.uint8)
        bgra[..., 3] = 255
        kind = sensor.type_id
        if kind == "sensor.camera.depth":
            code = np.where(hit, np.rint(np.where(hit, tt, 0) / DEPTH_FAR * _MAX_CODE), _MAX_CODE).astype(np.int64)
            bgra[..., 2] = code % 256
            bgra[..., 1] = (code // 256) % 256
            bgra[..., 0] = code // 65536
        elif kind == "sensor.camera.semantic_segmentation":
            tag = np.where(p[..., 1] > SIDEWALK_Y, semantics.SIDEWALK, semantics.ROAD)
            bgra[..., 2] = np.where(hit, tag, semantics.SKY)
        else:
            parity = (np.floor(p[..., 0]) + np.floor(p[..., 1])).astype(np.int64) % 2
            rgb = np.where(parity[..., None] == 0, np.array(ROAD_LIGHT), np.array(ROAD_DARK))
            rgb = np.where((p[..., 1] > SIDEWALK_Y)[..., None], np.array(SIDEWALK_RGB), rgb)
            rgb = np.where(hit[..., None], rgb, np.array(SKY_RGB))
            bgra[..., :3] = rgb[..., ::-1]
        return Image(frame, self.elapsed, w, h, fov, bytes(bgra.tobytes()), t)

    def wait_deliveries(self) -> None:
        """Join pending late-delivery timers (keeps tests free of stray threads)."""
        for t in self._timers:
            t.join()


# -------------------------------------------------------------------------------------------------- client
class Client:
    """carla.Client: set_timeout, get_client_version, get_server_version, get_world, load_world,
    get_available_maps, get_trafficmanager."""

    def __init__(self, server: StandinServer, host: str, port: int):
        self._server = server
        self.host = host
        self.port = port
        self.timeout = 5.0  # libcarla's default before set_timeout
        self.dead = False

    def _rpc(self):
        if self.dead or not self._server.running:
            raise _timeout_error(self.host, self.port, self.timeout)
        return self._server

    def set_timeout(self, seconds: float) -> None:
        self.timeout = float(seconds)
        self._server.timeouts_set.append(float(seconds))

    def get_client_version(self) -> str:
        return carla.Client("127.0.0.1", 2000).get_client_version()  # the installed package's version

    def get_server_version(self) -> str:
        return self._rpc().server_version

    def get_world(self) -> "World":
        self._rpc()
        return World(self)

    def get_available_maps(self) -> list:
        self._rpc()
        return list(MAPS)

    def load_world(self, map_name: str, reset_settings: bool = True, map_layers=None) -> "World":
        server = self._rpc()
        name = map_name.split("/")[-1]
        if not any(m.split("/")[-1] == name for m in MAPS):
            raise RuntimeError(f"map '{map_name}' not found")
        with server.lock:
            server.loads.append(map_name)
            server.loads_timeout = self.timeout
            for a in server.alive_actors():  # a new episode: every actor goes
                a._destroyed = True
            server.map = Map(f"Carla/Maps/{name}")
            if reset_settings:
                server.settings = carla.WorldSettings()
                server.settings.fixed_delta_seconds = None
        return World(self)

    def get_trafficmanager(self, client_connection: int = 8000) -> TrafficManager:
        server = self._rpc()
        return server.tms.setdefault(int(client_connection), TrafficManager(int(client_connection)))


class World:
    """carla.World (bound to the client it came from: dead client, dead world)."""

    def __init__(self, client: Client):
        self._client = client

    @property
    def _server(self) -> StandinServer:
        return self._client._rpc()

    def get_settings(self) -> carla.WorldSettings:
        return copy_settings(self._server.settings)

    def apply_settings(self, settings, seconds: float = 0.0) -> int:
        server = self._server
        server.settings = copy_settings(settings)
        server.applied_settings.append(copy_settings(settings))
        return server.frame

    def tick(self, seconds: float = 10.0) -> int:
        return self._server.tick(self._client)

    def get_map(self) -> Map:
        return self._server.map

    def get_blueprint_library(self) -> BlueprintLibrary:
        self._server
        return BlueprintLibrary([ActorBlueprint(k, v) for k, v in _BLUEPRINTS.items()])

    def spawn_actor(self, blueprint, transform, attach_to=None, attachment_type=None, bone: str = ""):
        actor = self._server.spawn(blueprint, transform, attach_to)
        if actor is None:
            raise RuntimeError("Spawn failed because of collision at spawn position")
        return actor

    def try_spawn_actor(self, blueprint, transform, attach_to=None, attachment_type=None, bone: str = ""):
        return self._server.spawn(blueprint, transform, attach_to)

    def get_snapshot(self) -> WorldSnapshot:
        server = self._server
        return server.snapshots[server.frame]

    def set_weather(self, weather) -> None:
        self._server.weather = weather

    def get_weather(self):
        return self._server.weather
