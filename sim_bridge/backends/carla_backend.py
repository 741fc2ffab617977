"""CARLA backend: drives a CARLA 0.9.x server in synchronous mode and returns `FrameData` in our conventions.

Per rig camera three sensors are attached to an autopilot ego vehicle at the same mount: `sensor.camera.rgb`,
`sensor.camera.depth` and `sensor.camera.semantic_segmentation`. Every `step()` ticks the world once and
collects, from each sensor's own queue, the image whose `.frame` equals the tick's frame id (data may arrive
late, from libcarla's streaming threads, or out of order). Poses come from the images' own transforms and the
world snapshot of that tick; all axis conversions live in `sim_bridge.conventions`. With a `LidarSpec` a
``sensor.lidar.ray_cast_semantic`` with the spec's blueprint attributes is attached at its mount too, and each
frame's measurement is binned into the spec's range image (`carla_sensors.lidar_scan`).

Robustness: a time-out of the RPC connection reconnects (up to `retries` times) and continues the episode
without losing or duplicating a frame (if the timed-out tick reached the server, its frame is used); `close()`
destroys every actor it spawned and restores the world settings and the Traffic Manager's mode on every exit
path, Ctrl-C included, and is idempotent.

The `carla` package is only needed when a `CarlaBackend` is created without a `client_factory`; tests inject
a stand-in client (tests/carla_standin.py).
"""
from __future__ import annotations

import logging

import numpy as np

from sim_bridge import conventions as conv
from sim_bridge.backends.base import EpisodeSpec, FrameData
from sim_bridge.backends.carla_sensors import (LIDAR_BLUEPRINT, SENSOR_BLUEPRINTS, SENSOR_KINDS, CameraSensors,
                                               FrameQueue, lidar_scan)
from sim_bridge.backends.carla_server import (
    CarlaConnectionError,
    CarlaEpisodeLostError,
    check_versions,
    is_timeout,
    map_basename,
    physics_substeps,
    weather_preset,
)
from sim_bridge.lidar import LidarError, LidarSpec
from sim_bridge.rig import Rig, RigError

logger = logging.getLogger(__name__)

#: Preferred ego blueprint; the first vehicle blueprint (sorted by id) is used when the server lacks it.
EGO_BLUEPRINT = "vehicle.tesla.model3"
#: Height (m) the ego is lifted when respawned at a recorded pose, so it does not collide with the ground.
RESUME_LIFT_M = 0.5


# ------------------------------------------------------------------------------------------------- backend
class CarlaBackend:
    """The `Backend` for a CARLA server (synchronous mode, Traffic-Manager autopilot ego, one RGB + depth +
    semantic camera per rig camera).

    Args:
        town: map name, e.g. ``"Town03"`` (loaded with `load_timeout` when the server runs another map).
        weather: a `carla.WeatherParameters` preset name, e.g. ``"ClearNoon"``.
        rig: the camera rig; every camera must be centred with square pixels (CARLA's pinhole model).
        fps: simulation rate; ``fixed_delta_seconds = 1/fps``.
        seed: run seed (the Traffic Manager's random seed; spawn points use each episode's seed).
        host, port: CARLA server RPC endpoint. tm_port: the Traffic Manager's own port.
        timeout: seconds for RPC calls, ticks and waiting for sensor data.
        load_timeout: seconds allowed for loading a map.
        warmup_ticks: ticks run (and their data discarded) after spawning, before the first recorded frame.
        retries: reconnection attempts after a time-out before giving up.
        client_factory: ``factory(host, port) -> client`` (default `carla.Client`; tests inject a stand-in).
        lidar: a semantic LiDAR on the ego (None: cameras only). A scan is the sweep of one tick, so its rotation
            frequency must be at least `fps` (one full rotation per tick; more rotations keep each cell's nearest
            return).

    Connects, loads the map, switches to synchronous mode and sets the weather on construction; use it as a
    context manager so that `close()` always runs.
    """

    name = "carla"

    def __init__(self, town: str, weather: str, rig: Rig, fps: float = 10.0, seed: int = 0,
                 host: str = "127.0.0.1", port: int = 2000, tm_port: int = 8000, timeout: float = 10.0,
                 load_timeout: float = 120.0, warmup_ticks: int = 20, retries: int = 3, client_factory=None,
                 lidar: LidarSpec | None = None):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.town, self.weather_name, self.rig = town, weather, rig
        self.fps, self.seed = float(fps), int(seed)
        self.host, self.port, self.tm_port = host, int(port), int(tm_port)
        self.timeout, self.load_timeout = float(timeout), float(load_timeout)
        self.warmup_ticks, self.retries = int(warmup_ticks), int(retries)
        # Validate everything that needs no server first, so bad arguments never touch the simulator.
        fisheye = [f"{c.name!r} ({c.model})" for c in rig.cameras if c.model != "pinhole"]
        if fisheye:
            raise RigError(f"CARLA has no fisheye camera sensor, and the rig's camera(s) {', '.join(fisheye)} are not "
                           "pinhole ones: capture this rig with the built-in simulator (`sim_bridge collect --backend "
                           "procedural`), or use a rig of pinhole cameras with CARLA")
        self._fovs = [conv.fov_from_intrinsics(c.K, c.width, c.height) for c in rig.cameras]
        self.lidar = lidar
        self._lidar_mount = None
        if lidar is not None:
            if lidar.rotation_frequency_hz < self.fps:
                raise LidarError(f"LiDAR {lidar.name!r} rotates at {lidar.rotation_frequency_hz:g} Hz, slower than "
                                 f"{self.fps:g} ticks per second: CARLA would sweep only part of a rotation per tick; "
                                 f"use --fps {lidar.rotation_frequency_hz:g} or less, or a LiDAR file with "
                                 f"rotation_frequency_hz >= {self.fps:g}")
            self._lidar_mount = conv.lidar_to_ego_to_carla(lidar.lidar_to_ego)
        self._mounts = [conv.cam_to_ego_to_carla(c.cam_to_ego) for c in rig.cameras]
        self._weather = weather_preset(weather)
        self._client_factory = client_factory or conv.import_carla().Client

        self._closed = False
        self._client = self._world = self._tm = None
        self._old_clients: list = []  # kept alive: sensors stream to the client that spawned them
        self._original_settings = None
        self._tm_sync_set = False
        self._ego = None
        self._cameras: list[CameraSensors] = []
        self._lidar_sensor: CameraSensors | None = None
        self._last_frame = -1
        self._t0: float | None = None
        self._start_frame = 0
        self.server_version = self.client_version = self.map_name = None
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    # -- connection and world setup
    def _connect(self):
        client = self._client_factory(self.host, self.port)
        client.set_timeout(self.timeout)
        try:
            server_version = client.get_server_version()
        except RuntimeError as err:
            raise CarlaConnectionError(
                f"no CARLA server at {self.host}:{self.port} within {self.timeout:g}s: start CarlaUE4.sh or use "
                f"--backend procedural ({err})") from err
        return client, str(server_version)

    def _setup(self) -> None:
        self._client, self.server_version = self._connect()
        self.client_version = str(self._client.get_client_version())
        check_versions(self.client_version, self.server_version)
        world = self._client.get_world()
        current = map_basename(world.get_map().name)
        if current != map_basename(self.town):
            logger.info("loading CARLA map %s (was %s)", self.town, current)
            self._client.set_timeout(self.load_timeout)
            try:
                world = self._client.load_world(self.town)
            except RuntimeError as err:
                if is_timeout(err):
                    raise CarlaConnectionError(f"loading map {self.town} took longer than {self.load_timeout:g}s: "
                                               f"raise load_timeout ({err})") from err
                try:
                    maps = ", ".join(sorted(map_basename(m) for m in self._client.get_available_maps()))
                except RuntimeError:
                    maps = "?"
                raise ValueError(f"CARLA cannot load map {self.town!r} ({err}); available maps: {maps}") from err
            finally:
                self._client.set_timeout(self.timeout)
        self._world = world
        self.map_name = str(world.get_map().name)

        self._original_settings = world.get_settings()
        settings = world.get_settings()
        dt = 1.0 / self.fps
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = dt
        if settings.substepping:
            settings.max_substep_delta_time, settings.max_substeps = physics_substeps(
                dt, settings.max_substep_delta_time, settings.max_substeps)
        world.apply_settings(settings)

        self._tm = self._client.get_trafficmanager(self.tm_port)
        self._tm_sync_set = True
        self._tm.set_synchronous_mode(True)
        self._tm.set_random_device_seed(self.seed)
        world.set_weather(self._weather)

    def _reconnect(self) -> None:
        """New client + world after a time-out; checks the episode survived (the server may have restarted)."""
        if self._client is not None:
            self._old_clients.append(self._client)
        self._client, _ = self._connect()
        self._world = self._client.get_world()
        self._tm = self._client.get_trafficmanager(self.tm_port)
        settings = self._world.get_settings()
        if not settings.synchronous_mode:
            raise CarlaEpisodeLostError("after reconnecting, the CARLA world is no longer synchronous (the server "
                                       "restarted?): the episode is lost; re-run collect to resume it")
        if self._ego is not None and not self._world.get_snapshot().has_actor(self._ego.id):
            raise CarlaEpisodeLostError("after reconnecting, the ego vehicle is gone (the server restarted?): the "
                                       "episode is lost; re-run collect to resume it")

    def _tick(self) -> int:
        """`world.tick()` with reconnection on time-outs; returns the frame id (each exactly once)."""
        err: BaseException | None = None
        for attempt in range(self.retries + 1):
            try:
                if attempt > 0:
                    logger.warning("CARLA did not answer (%s); reconnecting to %s:%d (attempt %d/%d)",
                                   err, self.host, self.port, attempt, self.retries)
                    self._reconnect()
                    landed = int(self._world.get_snapshot().frame)
                    if landed > self._last_frame:
                        # The timed-out tick reached the server: use its frame rather than skip it.
                        self._last_frame = landed
                        return landed
                frame = int(self._world.tick(self.timeout))
                self._last_frame = frame
                return frame
            except RuntimeError as e:
                if not is_timeout(e):
                    raise
                err = e
        raise CarlaConnectionError(f"CARLA at {self.host}:{self.port} did not answer after {self.retries} "
                                   f"reconnection attempts ({err}): is the server alive?") from err

    # -- actors
    def _destroy_episode_actors(self) -> list[str]:
        """Stop and destroy sensors, then the ego; returns error messages (cleanup goes on regardless)."""
        errors = []
        for cam in self._cameras + ([self._lidar_sensor] if self._lidar_sensor is not None else []):
            for kind, actor in cam.actors.items():
                for op in ("stop", "destroy"):
                    try:
                        getattr(actor, op)()
                    except Exception as e:  # noqa: BLE001 - keep cleaning up
                        errors.append(f"{op} sensor {cam.name}/{kind}: {e}")
        self._cameras = []
        self._lidar_sensor = None
        if self._ego is not None:
            try:
                self._ego.destroy()
            except Exception as e:  # noqa: BLE001
                errors.append(f"destroy ego: {e}")
            self._ego = None
        return errors

    def _ego_blueprint(self):
        lib = self._world.get_blueprint_library()
        found = list(lib.filter(EGO_BLUEPRINT))
        if not found:
            found = sorted(lib.filter("vehicle.*"), key=lambda b: b.id)
            if not found:
                raise RuntimeError("the CARLA server offers no vehicle blueprint to use as the ego")
        bp = found[0]
        if bp.has_attribute("role_name"):
            bp.set_attribute("role_name", "hero")
        return bp

    def _spawn_ego(self, spec: EpisodeSpec):
        bp = self._ego_blueprint()
        if spec.resume_ego_to_world is not None:
            t = conv.ego_to_world_to_carla(np.asarray(spec.resume_ego_to_world, dtype=np.float64))
            t.location.z += RESUME_LIFT_M
            ego = self._world.try_spawn_actor(bp, t)
            if ego is None:
                raise RuntimeError(f"cannot respawn the ego at the resume pose {t} (occupied): delete the "
                                   f"episode's frames or start a new store")
            return ego
        points = list(self._world.get_map().get_spawn_points())
        if not points:
            raise RuntimeError(f"map {self.map_name} has no spawn points")
        order = np.random.default_rng(spec.seed).permutation(len(points))
        for i in order:
            ego = self._world.try_spawn_actor(bp, points[int(i)])
            if ego is not None:
                return ego
            logger.info("spawn point %d is occupied; trying the next", int(i))
        raise RuntimeError(f"all {len(points)} spawn points of {self.map_name} are occupied: reduce traffic")

    def _spawn_cameras(self) -> None:
        lib = self._world.get_blueprint_library()
        for cam, fov, mount in zip(self.rig.cameras, self._fovs, self._mounts):
            actors, queues = {}, {}
            for kind in SENSOR_KINDS:
                bp = lib.find(SENSOR_BLUEPRINTS[kind])
                bp.set_attribute("image_size_x", str(int(cam.width)))
                bp.set_attribute("image_size_y", str(int(cam.height)))
                bp.set_attribute("fov", repr(float(fov)))
                if kind == "rgb" and bp.has_attribute("motion_blur_intensity"):
                    bp.set_attribute("motion_blur_intensity", "0.0")  # sharp images for reconstruction
                actor = self._world.spawn_actor(bp, mount, attach_to=self._ego)
                q = FrameQueue(f"{cam.name}/{kind}")
                actors[kind], queues[kind] = actor, q
                # Register before listening so that cleanup finds the actor even if listen() fails.
                if kind == SENSOR_KINDS[0]:
                    self._cameras.append(CameraSensors(cam.name, actors, queues))
                actor.listen(q.put)

    def _spawn_lidar(self) -> None:
        bp = self._world.get_blueprint_library().find(LIDAR_BLUEPRINT)
        for key, value in self.lidar.carla_attributes().items():
            bp.set_attribute(key, value)
        if bp.has_attribute("sensor_tick"):
            bp.set_attribute("sensor_tick", "0.0")  # a scan every tick
        actor = self._world.spawn_actor(bp, self._lidar_mount, attach_to=self._ego)
        q = FrameQueue(f"{self.lidar.name}/lidar")
        # Registered before listening so that cleanup finds the actor even if listen() fails.
        self._lidar_sensor = CameraSensors(self.lidar.name, {"lidar": actor}, {"lidar": q})
        actor.listen(q.put)

    def _all_queues(self) -> list[FrameQueue]:
        sensors = self._cameras + ([self._lidar_sensor] if self._lidar_sensor is not None else [])
        return [q for s in sensors for q in s.queues.values()]

    # -- Backend protocol
    def describe(self) -> dict:
        """Store metadata: backend, town, weather, map, versions, fps, server address."""
        return {"backend": self.name, "town": self.town, "weather": self.weather_name, "map": self.map_name,
                "server_version": self.server_version, "client_version": self.client_version, "fps": self.fps,
                "host": self.host, "port": self.port, "tm_port": self.tm_port, "ego_blueprint": EGO_BLUEPRINT,
                **({"lidar_blueprint": LIDAR_BLUEPRINT} if self.lidar is not None else {})}

    def start_episode(self, spec: EpisodeSpec) -> None:
        """Spawn the ego (at a seed-chosen spawn point, or at `spec.resume_ego_to_world` lifted 0.5 m when
        resuming) and its cameras, then run `warmup_ticks` ticks whose data are discarded.

        A fresh ego drives on autopilot during the warm-up (it starts moving); a respawned one stays put (it
        settles onto the ground where the recording stopped) and the autopilot starts afterwards.
        """
        self._require_open()
        try:
            errors = self._destroy_episode_actors()
            if errors:
                logger.warning("cleaning up the previous episode: %s", "; ".join(errors))
            self._ego = self._spawn_ego(spec)
            resuming = spec.resume_ego_to_world is not None
            if not resuming:
                self._ego.set_autopilot(True, self.tm_port)
            self._spawn_cameras()
            if self.lidar is not None:
                self._spawn_lidar()
            for _ in range(self.warmup_ticks):
                frame = self._tick()
                for q in self._all_queues():
                    q.discard_through(frame)
            if resuming:
                self._ego.set_autopilot(True, self.tm_port)
            self._start_frame = int(spec.start_frame)
            self._t0 = None
        except KeyboardInterrupt:
            self.close()
            raise

    def step(self) -> FrameData:
        """Tick once; return all cameras' RGB, depth, semantics and poses of that frame."""
        self._require_open()
        if self._ego is None:
            raise RuntimeError("call start_episode() before step()")
        try:
            return self._step()
        except KeyboardInterrupt:
            self.close()  # Ctrl-C outside a `with` block must still leave the server clean
            raise

    def _step(self) -> FrameData:
        frame = self._tick()
        snapshot = self._world.get_snapshot()
        if int(snapshot.frame) != frame:
            raise RuntimeError(f"world snapshot is of frame {snapshot.frame}, expected {frame}: another client is "
                               f"ticking this CARLA server; run one synchronous client per server")
        ego_snap = snapshot.find(self._ego.id)
        if ego_snap is None:
            raise RuntimeError(f"the ego vehicle {self._ego.id} is missing from frame {frame}")
        ego_to_world = conv.carla_to_ego_to_world(ego_snap.get_transform())
        elapsed = float(snapshot.timestamp.elapsed_seconds)
        if self._t0 is None:
            self._t0 = elapsed - self._start_frame / self.fps
        n, H, W = len(self.rig), self.rig.height, self.rig.width
        rgb = np.empty((n, H, W, 3), np.uint8)
        depth = np.empty((n, H, W), np.float32)
        sem = np.empty((n, H, W), np.uint8)
        cam_to_world = np.empty((n, 4, 4), np.float64)
        for i, cam in enumerate(self._cameras):
            imgs = {kind: cam.queues[kind].get(frame, self.timeout) for kind in SENSOR_KINDS}
            for kind, img in imgs.items():
                if (int(img.width), int(img.height)) != (W, H):
                    raise RuntimeError(f"sensor {cam.name}/{kind} sent {img.width}x{img.height}, expected {W}x{H}")
            rgb[i] = conv.bgra_to_rgb(imgs["rgb"].raw_data, W, H)
            depth[i] = conv.decode_carla_depth(conv.bgra_from_raw(imgs["depth"].raw_data, W, H))
            sem[i] = conv.semantic_from_carla(conv.bgra_from_raw(imgs["semantic"].raw_data, W, H))
            cam_to_world[i] = conv.carla_to_cam_to_world(imgs["rgb"].transform)
        out = FrameData(rgb=rgb, depth=depth, semantic=sem, cam_to_world=cam_to_world, ego_to_world=ego_to_world,
                        timestamp=elapsed - self._t0, frame=frame)
        if self._lidar_sensor is not None:
            measurement = self._lidar_sensor.queues["lidar"].get(frame, self.timeout)
            out.lidar_range, out.lidar_tag, out.lidar_to_world = lidar_scan(measurement, self.lidar)
        return out

    def _require_open(self) -> None:
        if self._closed:
            raise RuntimeError("this CarlaBackend is closed; create a new one")

    def close(self) -> None:
        """Stop and destroy all sensors and the ego, restore the world settings this backend found (after any
        map load) and turn the Traffic Manager's synchronous mode off. Each step runs even if an earlier one
        failed (failures are logged); idempotent; a Ctrl-C during cleanup is re-raised at its end."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        interrupted: BaseException | None = None
        steps = [("actors", lambda: errors.extend(self._destroy_episode_actors())),
                 ("world settings", self._restore_settings),
                 ("traffic manager", self._restore_tm)]
        for what, fn in steps:
            try:
                fn()
            except KeyboardInterrupt as e:
                interrupted = e
                errors.append(f"{what}: interrupted")
            except Exception as e:  # noqa: BLE001 - keep cleaning up
                errors.append(f"{what}: {e}")
        if errors:
            logger.warning("CARLA cleanup incomplete: %s", "; ".join(errors))
        self._old_clients.clear()
        if interrupted is not None:
            raise interrupted

    def _restore_settings(self) -> None:
        if self._world is not None and self._original_settings is not None:
            self._world.apply_settings(self._original_settings)

    def _restore_tm(self) -> None:
        if self._tm is not None and self._tm_sync_set:
            self._tm.set_synchronous_mode(False)

    def __enter__(self) -> "CarlaBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"CarlaBackend(town={self.town!r}, weather={self.weather_name!r}, cameras={len(self.rig)}, "
                f"server={self.host}:{self.port}, version={self.server_version})")
