"""What a `SensorWorld` LiDAR's listener receives: `LidarMeasurement`, CARLA's ``carla.LidarMeasurement`` over one
generated `LidarScan`, and its `LidarDetection` s.

Frames: the points are in the sensor frame of `nfldm_sdk.sensors.lidar_spec` — right-handed, x forward, **y left**,
z up, metres. CARLA reports LiDAR points in Unreal's left-handed frame (x forward, **y right**, z up): a CARLA point
``(x, y, z)`` is ``(x, -y, z)`` here. We keep our right-handed frame (the project's one frame convention,
docs/conventions.md) and do not flip y; flip it yourself to compare against CARLA recordings.

CARLA's layout otherwise holds: ``raw_data`` is the points as consecutive float32 ``x, y, z, intensity`` (16 bytes a
point, native byte order — little-endian on every platform CARLA runs on), sorted by channel from the highest beam
(`get_point_count` per channel), and `LidarMeasurement.save_to_disk` writes the ASCII PLY CARLA writes (``property
float32 x / y / z / I``, four decimals).

Example::

    lidar = world.spawn_lidar("nuscenes32")                 # attached to world.ego
    lidar.listen(lambda m: m.save_to_disk("out/%06d.ply"))
    pts = np.frombuffer(m.raw_data, np.float32).reshape(-1, 4)    # == m.points
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from nfldm_sdk.sensors.lidar import LidarScan
from nfldm_sdk.sensors.lidar_spec import LidarSpec

__all__ = ["LidarMeasurement", "LidarDetection", "decode_lidar_raw_data"]


def decode_lidar_raw_data(raw: bytes) -> np.ndarray:
    """``[N, 4]`` float32 points (x, y, z, intensity) of CARLA-layout LiDAR ``raw_data`` bytes (a copy)."""
    if len(raw) % 16:
        raise ValueError(f"LiDAR raw_data holds 16 bytes per point (float32 x, y, z, intensity); got {len(raw)} bytes")
    return np.frombuffer(raw, dtype=np.float32).reshape(-1, 4).copy()


@dataclass(frozen=True)
class LidarDetection:
    """One return (CARLA's ``carla.LidarDetection``): ``point`` ``(x, y, z)`` float metres in the sensor frame (y left,
    module docstring), ``intensity`` (a placeholder, 1.0), and ``object_tag`` — its CARLA semantic tag (as in
    CARLA's ``SemanticLidarDetection``), or None without a semantic head."""

    point: tuple[float, float, float]
    intensity: float
    object_tag: int | None = None


class LidarMeasurement:
    """One tick of a LiDAR actor (CARLA's ``carla.LidarMeasurement``): a read-only view of one `LidarScan`.

    Attributes (read-only):
        points: ``[N, 4]`` float32 x, y, z (sensor frame, metres, y left: module docstring), intensity.
        tags: ``[N]`` uint8 CARLA tags of the points, or None without a semantic head.
        frame: the tick (frame id); timestamp: seconds; timestamp_us: integer microseconds.
        transform: ``[4, 4]`` float64 sensor -> scene frame (a matrix, not a ``carla.Transform``).
        channels: beams of the spec; horizontal_angle: radians, the rotor's angle at the end of the measurement —
            every tick scans one whole rotation from azimuth 0, so it ends where it began: 0.0.
        raw_data: bytes of `points` in CARLA's layout (float32 x, y, z, intensity per point).
        ranges: ``[channels, A]`` float32 range image (``inf`` = no return); scan: the `LidarScan`; spec: the
            `LidarSpec`; sensor: the actor that measured it.
    ``len(m)`` is the number of returns, ``m[i]`` and iteration give `LidarDetection` s.
    """

    horizontal_angle = 0.0

    def __init__(self, scan: LidarScan, spec: LidarSpec, sensor=None):
        self.scan, self.spec, self.sensor = scan, spec, sensor

    points = property(lambda self: self.scan.points, doc="``[N, 4]`` float32 x, y, z, intensity (sensor frame).")
    tags = property(lambda self: self.scan.tags, doc="``[N]`` uint8 CARLA tags, or None without a semantic head.")
    frame = property(lambda self: self.scan.frame, doc="The tick (frame id).")
    timestamp = property(lambda self: self.scan.timestamp, doc="Seconds on the trajectory's clock.")
    timestamp_us = property(lambda self: self.scan.timestamp_us, doc="The timestamp in integer microseconds.")
    transform = property(lambda self: self.scan.sensor_to_world, doc="``[4, 4]`` sensor -> scene frame.")
    ranges = property(lambda self: self.scan.ranges, doc="``[channels, A]`` float32 range image, inf = no return.")
    channels = property(lambda self: self.spec.channels, doc="Number of beams.")

    @property
    def raw_data(self) -> bytes:
        """The points as bytes in CARLA's layout: float32 x, y, z, intensity per point (`decode_lidar_raw_data`)."""
        return np.ascontiguousarray(self.scan.points, dtype=np.float32).tobytes()

    def get_point_count(self, channel: int) -> int:
        """Returns of beam `channel` (0 = the highest beam, as CARLA counts them)."""
        if not 0 <= int(channel) < self.channels:
            raise IndexError(f"channel {channel} out of range: the LiDAR has {self.channels} channels")
        return int(np.isfinite(self.scan.ranges[int(channel)]).sum())

    def __len__(self) -> int:
        return int(len(self.scan.points))

    def __getitem__(self, i: int) -> LidarDetection:
        p = self.scan.points[i]
        tag = None if self.scan.tags is None else int(self.scan.tags[i])
        return LidarDetection((float(p[0]), float(p[1]), float(p[2])), float(p[3]), tag)

    def __iter__(self) -> Iterator[LidarDetection]:
        for i in range(len(self)):
            yield self[i]

    def save_to_disk(self, path: str) -> str:
        """Write the points as CARLA does: an ASCII PLY (``element vertex N``, ``property float32 x``, ``y``, ``z``,
        ``I``; one ``x y z I`` line per point with four decimals). Like CARLA, ``%d``-style patterns in `path` take
        the frame number and ``.ply`` is appended to a path without a suffix. Returns the path written."""
        if "%" in path:
            path = path % self.frame
        if not os.path.splitext(path)[1]:
            path += ".ply"
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        pts = np.asarray(self.scan.points, dtype=np.float32)
        header = (f"ply\nformat ascii 1.0\nelement vertex {len(pts)}\nproperty float32 x\nproperty float32 y\n"
                  "property float32 z\nproperty float32 I\nend_header\n")
        with open(path, "w") as f:
            f.write(header)
            np.savetxt(f, pts, fmt="%.4f")
        return path

    def __repr__(self) -> str:
        return f"LidarMeasurement(frame={self.frame}, timestamp={self.timestamp:.3f}, {len(self)} points)"
