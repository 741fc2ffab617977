"""The camera sensors of a rig camera on a CARLA ego, the semantic LiDAR, and their inboxes, which match data to
tick frame ids (libcarla delivers them from its own threads, possibly late or out of order)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from sim_bridge import conventions as conv
from sim_bridge.errors import SimBridgeError
from sim_bridge.lidar import LidarSpec, range_image

#: The three camera sensors spawned per rig camera, in the order they are collected.
SENSOR_KINDS = ("rgb", "depth", "semantic")
#: The CARLA blueprint of each sensor kind.
SENSOR_BLUEPRINTS = {"rgb": "sensor.camera.rgb", "depth": "sensor.camera.depth",
                     "semantic": "sensor.camera.semantic_segmentation"}
#: The CARLA blueprint of the LiDAR (points with CARLA semantic tags).
LIDAR_BLUEPRINT = "sensor.lidar.ray_cast_semantic"


class SensorTimeoutError(SimBridgeError, RuntimeError):
    """A sensor delivered no image for a ticked frame in time."""


class FrameQueue:
    """Per-sensor inbox matching data to frame ids (thread-safe: libcarla calls `put` from its own threads).

    Items with ``.frame <= floor`` (already consumed or discarded) are dropped on arrival; newer items wait in
    `pending` until asked for, so late and out-of-order deliveries are both handled.
    """

    def __init__(self, name: str):
        self.name = name
        self.pending: dict[int, object] = {}
        self.floor = -1
        self.dropped = 0
        self._cond = threading.Condition()

    def put(self, item) -> None:
        with self._cond:
            if item.frame <= self.floor:
                self.dropped += 1
                return
            self.pending[int(item.frame)] = item
            self._cond.notify_all()

    def discard_through(self, frame: int) -> None:
        """Forget everything up to and including `frame` (warm-up ticks), now and on late arrival."""
        with self._cond:
            self.floor = max(self.floor, int(frame))
            for f in [f for f in self.pending if f <= self.floor]:
                del self.pending[f]
                self.dropped += 1

    def get(self, frame: int, timeout: float):
        """The item of `frame`, waiting up to `timeout` s; older items are discarded, newer ones kept."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while frame not in self.pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SensorTimeoutError(
                        f"sensor {self.name} delivered no image for frame {frame} within {timeout:g}s "
                        f"(pending frames {sorted(self.pending)}): the server may be overloaded; raise --timeout")
                self._cond.wait(left)
            item = self.pending.pop(frame)
        self.discard_through(frame)
        return item


@dataclass
class CameraSensors:
    """The three CARLA sensors of one rig camera and their inboxes."""

    name: str
    actors: dict  # kind -> carla.Sensor
    queues: dict  # kind -> FrameQueue


def lidar_scan(measurement, spec: LidarSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A `carla.SemanticLidarMeasurement` as the store's range image.

    Its detections (`conventions.decode_semantic_lidar`: UE sensor-local points mirrored into the sensor frame x
    forward, y left, z up) are binned to their (channel, azimuth column) cell of `spec` by `sim_bridge.lidar.
    range_image`, the nearest return of a cell kept; a cell no shot of the tick fell in reads no return.

    Returns:
        ``range [C, A]`` float32 metres (inf = no return), ``tag [C, A]`` uint8 (0 = no return) and
        ``lidar_to_world [4, 4]`` float64 from the measurement's own transform.
    """
    points, tags, _ = conv.decode_semantic_lidar(measurement.raw_data)
    rng, tag = range_image(points, tags, spec)
    return rng, tag, conv.carla_to_lidar_to_world(measurement.transform)
