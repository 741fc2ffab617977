"""A spinning LiDAR's description: `LidarSpec` (beams, range, rotation, mount), its presets, its beam tables, its
CARLA blueprint attributes and its JSON file.

The beam model is CARLA's ray-cast LiDAR (``sensor.lidar.ray_cast`` / ``ray_cast_semantic``): ``channels`` beams
evenly spaced in elevation from ``upper_fov_deg`` down to ``lower_fov_deg``, each firing ``points_per_channel =
floor(points_per_second / rotation_frequency_hz / channels)`` times per rotation, evenly over 360°.

Sensor frame: x forward, y left, z up (the ego frame's axes), metres; azimuth 0 = +x, counter-clockwise seen from
above (towards +y); elevation positive above the horizontal plane. ``lidar_to_ego [4,4]`` float64 maps sensor
coordinates to the ego frame. (CARLA reports points in Unreal's left-handed frame, y right; converting is the CARLA
backend's job, not this spec's.)

Example::

    spec = LidarSpec.preset("nuscenes32")                          # 32 beams, 20 Hz, 2171 points per beam
    spec.elevations_deg()[[0, -1]]                                 # [10.67, -30.67]
    spec.directions().shape                                        # (32, 2171, 3) unit vectors, sensor frame
    LidarSpec.from_carla_attributes(spec.carla_attributes()) == spec
    spec.save("lidar.json"); LidarSpec.load("lidar.json")
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nfldm_sdk.cameras.json_files import read_json_file, write_json_file
from nfldm_sdk.cameras.trajectory import rigid_problem
from nfldm_sdk.errors import NfldmError

__all__ = ["LidarSpec", "LidarError", "LIDAR_PRESETS", "LIDAR_FORMAT", "LIDAR_FORMAT_VERSION", "CARLA_LIDAR_DEFAULTS",
           "default_lidar_to_ego"]

LIDAR_FORMAT = "nfldm.lidar"
LIDAR_FORMAT_VERSION = 1
#: Height of the default mount above the ego origin (the ground below the vehicle centre), metres: a roof LiDAR.
DEFAULT_MOUNT_HEIGHT_M = 1.8

#: CARLA's ``sensor.lidar.ray_cast`` blueprint defaults (CARLA's sensor reference; ``range`` in metres since 0.9.7),
#: used for attributes `LidarSpec.from_carla_attributes` is not given, as the blueprint library does.
CARLA_LIDAR_DEFAULTS = {"channels": "32", "range": "10.0", "points_per_second": "56000", "rotation_frequency": "10.0",
                        "upper_fov": "10.0", "lower_fov": "-30.0"}
#: CARLA LiDAR attributes this model has no counterpart for: accepted and ignored (the generated LiDAR has no
#: noise, drop-off or atmospheric intensity model, and scans one whole rotation per tick).
_CARLA_IGNORED = ("sensor_tick", "atmosphere_attenuation_rate", "dropoff_general_rate", "dropoff_intensity_limit",
                  "dropoff_zero_intensity", "noise_stddev", "noise_seed")


class LidarError(NfldmError, ValueError):
    """A LiDAR description is malformed (a field out of range, a bad CARLA attribute, an unreadable file); the
    message names the field and the fix."""


def default_lidar_to_ego() -> np.ndarray:
    """``[4,4]`` float64: the sensor 1.8 m above the ego origin, axes = the ego's (x forward, y left, z up)."""
    m = np.eye(4)
    m[2, 3] = DEFAULT_MOUNT_HEIGHT_M
    return m


@dataclass(frozen=True, eq=False)  # eq=False: an array field; __eq__ below compares values
class LidarSpec:
    """A spinning LiDAR: beam layout, maximum range, rotation rate, point rate and mount (validated here).

    Attributes:
        channels: number of beams (≥ 1).
        range_m: maximum range, metres (> 0): beams that meet nothing closer read "no return".
        upper_fov_deg, lower_fov_deg: elevation of the highest and lowest beam, degrees above the horizontal plane
            (in [−90, 90], upper ≥ lower; upper > lower for more than one beam).
        rotation_frequency_hz: rotations per second (> 0); one scan = one rotation.
        points_per_second: points fired by all beams per second (≥ 1 point per beam per rotation).
        lidar_to_ego: ``[4,4]`` float64 rigid transform, sensor frame (x forward, y left, z up) -> ego frame, metres
            (default `default_lidar_to_ego`: 1.8 m above the ego origin, the ego's axes).
        name: the sensor's name (CARLA's ``role_name``), e.g. ``"LIDAR_TOP"``.
    """

    channels: int
    range_m: float
    upper_fov_deg: float
    lower_fov_deg: float
    rotation_frequency_hz: float
    points_per_second: int
    lidar_to_ego: np.ndarray = field(default_factory=default_lidar_to_ego)
    name: str = "lidar"

    def __post_init__(self):
        def number(key, value, integer=False):
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise LidarError(f"LiDAR {self.name!r}: {key} must be a number, got {value!r}") from None
            if not math.isfinite(v) or (integer and v != int(v)):
                raise LidarError(f"LiDAR {self.name!r}: {key} must be a finite {'integer' if integer else 'number'}, "
                                 f"got {value!r}")
            return int(v) if integer else v

        channels = number("channels", self.channels, integer=True)
        pps = number("points_per_second", self.points_per_second, integer=True)
        rng, up, lo = number("range_m", self.range_m), number("upper_fov_deg", self.upper_fov_deg), \
            number("lower_fov_deg", self.lower_fov_deg)
        freq = number("rotation_frequency_hz", self.rotation_frequency_hz)
        if not isinstance(self.name, str) or not self.name:
            raise LidarError(f"a LiDAR's name must be a non-empty string, got {self.name!r}")
        if channels < 1:
            raise LidarError(f"LiDAR {self.name!r}: channels must be >= 1, got {channels}")
        if rng <= 0:
            raise LidarError(f"LiDAR {self.name!r}: range_m must be > 0 metres, got {rng}")
        if freq <= 0:
            raise LidarError(f"LiDAR {self.name!r}: rotation_frequency_hz must be > 0, got {freq}")
        if not (-90.0 <= lo <= 90.0 and -90.0 <= up <= 90.0):
            raise LidarError(f"LiDAR {self.name!r}: upper_fov_deg ({up}) and lower_fov_deg ({lo}) must lie in "
                             "[-90, 90] degrees above the horizontal")
        if up < lo or (channels > 1 and up == lo):
            raise LidarError(f"LiDAR {self.name!r}: upper_fov_deg ({up}) must exceed lower_fov_deg ({lo}) (the "
                             "highest beam first; equal only for one channel): swap them")
        if _points_per_channel(pps, freq, channels) < 1:
            raise LidarError(f"LiDAR {self.name!r}: points_per_second ({pps}) gives no point per channel per rotation "
                             f"at {channels} channels and {freq} Hz: raise it to at least {math.ceil(channels * freq)}")
        m = np.array(self.lidar_to_ego, dtype=np.float64)
        why = rigid_problem(m)
        if why:
            raise LidarError(f"LiDAR {self.name!r}: lidar_to_ego is not a rigid [4,4] transform ({why}): give a "
                             "rotation + translation, sensor -> ego, metres")
        m.setflags(write=False)
        for key, value in (("channels", channels), ("points_per_second", pps), ("range_m", rng),
                           ("upper_fov_deg", up), ("lower_fov_deg", lo), ("rotation_frequency_hz", freq),
                           ("lidar_to_ego", m)):
            object.__setattr__(self, key, value)

    def __eq__(self, other) -> bool:
        return isinstance(other, LidarSpec) and self.to_json() == other.to_json()

    __hash__ = None  # type: ignore[assignment]  # mutable-looking array field: specs are not dict keys

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str, lidar_to_ego: np.ndarray | None = None) -> "LidarSpec":
        """A named preset (`LIDAR_PRESETS`: ``nuscenes32``, ``hdl64``, ``os128``), mounted at `lidar_to_ego`
        (default `default_lidar_to_ego`).

        Numbers from the sensors' datasheets (and, for ``nuscenes32``, the nuScenes paper): beams, vertical field
        of view, rotation rate, points per second (nuScenes' "~1.39 M points/s" for the HDL-32E; Velodyne's
        "~1.3 M points/s" for the HDL-64E; 128 × 2048 × 10 = 2 621 440 for the OS1-128 in 2048×10 mode). Our
        choices: the ranges (70 m = nuScenes' usable returns for the HDL-32E, 120 m for the other two), the rotation
        rate of the HDL-64E and OS1-128 (both run 5–20 Hz; 10 Hz here), evenly spaced beams (CARLA's model: exact
        for the HDL-32E and the uniform OS1-128, an approximation of the HDL-64E's two laser blocks), the mount
        (1.8 m above the ego origin; nuScenes' LIDAR_TOP sits at about 1.84 m) and the sensor name.
        """
        if name not in LIDAR_PRESETS:
            raise LidarError(f"unknown LiDAR preset {name!r}: choose one of {', '.join(LIDAR_PRESETS)} or load a LiDAR "
                             "JSON file (LidarSpec.load)")
        mount = default_lidar_to_ego() if lidar_to_ego is None else lidar_to_ego
        return cls(**LIDAR_PRESETS[name], lidar_to_ego=mount, name=name)

    @classmethod
    def resolve(cls, spec: "LidarSpec | str | Path") -> "LidarSpec":
        """A `LidarSpec` from itself, a preset name or the path of a JSON file written by `save`."""
        if isinstance(spec, LidarSpec):
            return spec
        if isinstance(spec, str) and spec in LIDAR_PRESETS:
            return cls.preset(spec)
        if isinstance(spec, (str, Path)) and (Path(spec).suffix == ".json" or Path(spec).is_file()):
            return cls.load(spec)
        raise LidarError(f"unknown LiDAR {spec!r}: not a preset ({', '.join(LIDAR_PRESETS)}) nor a LiDAR JSON file")

    # ------------------------------------------------------------------ beam tables
    @property
    def points_per_channel(self) -> int:
        """Shots per beam per rotation ``A = floor(points_per_second / rotation_frequency_hz / channels)``."""
        return _points_per_channel(self.points_per_second, self.rotation_frequency_hz, self.channels)

    @property
    def rays_per_scan(self) -> int:
        """``channels × points_per_channel``: the size of one range image."""
        return self.channels * self.points_per_channel

    def elevations_deg(self) -> np.ndarray:
        """``[channels]`` float64 beam elevations, degrees, from ``upper_fov_deg`` down to ``lower_fov_deg`` evenly
        (CARLA's ray-cast LiDAR; one channel: ``[upper_fov_deg]``)."""
        if self.channels == 1:
            return np.array([self.upper_fov_deg])
        step = (self.upper_fov_deg - self.lower_fov_deg) / (self.channels - 1)
        return self.upper_fov_deg - step * np.arange(self.channels, dtype=np.float64)

    def azimuths_deg(self) -> np.ndarray:
        """``[A]`` float64 shot azimuths, degrees: ``360 · i / A`` for ``i = 0..A−1`` (0 = the sensor's +x axis,
        counter-clockwise seen from above, towards +y)."""
        a = self.points_per_channel
        return 360.0 * np.arange(a, dtype=np.float64) / a

    def directions(self) -> np.ndarray:
        """``[channels, A, 3]`` float64 unit beam directions in the sensor frame (x forward, y left, z up):
        ``(cos e cos a, cos e sin a, sin e)`` for elevation ``e`` (row) and azimuth ``a`` (column)."""
        e = np.radians(self.elevations_deg())[:, None]                      # [C, 1]
        a = np.radians(self.azimuths_deg())[None, :]                        # [1, A]
        ce = np.cos(e)
        return np.stack(np.broadcast_arrays(ce * np.cos(a), ce * np.sin(a), np.sin(e)), axis=-1)

    # ------------------------------------------------------------------ CARLA
    def carla_attributes(self) -> dict[str, str]:
        """CARLA ``sensor.lidar.ray_cast(_semantic)`` blueprint attributes (strings, as ``set_attribute`` takes
        them): ``channels``, ``range`` (metres), ``upper_fov``/``lower_fov`` (degrees), ``rotation_frequency`` (Hz),
        ``points_per_second``, ``horizontal_fov`` (360) and ``role_name``. Floats are written exactly (``repr``).
        The mount is a ``carla.Transform``, not an attribute: the CARLA backend converts `lidar_to_ego`."""
        return {"channels": str(self.channels), "range": repr(self.range_m), "upper_fov": repr(self.upper_fov_deg),
                "lower_fov": repr(self.lower_fov_deg), "rotation_frequency": repr(self.rotation_frequency_hz),
                "points_per_second": str(self.points_per_second), "horizontal_fov": "360.0", "role_name": self.name}

    @classmethod
    def from_carla_attributes(cls, attrs: dict[str, str], lidar_to_ego: np.ndarray | None = None,
                              name: str | None = None) -> "LidarSpec":
        """The spec of CARLA blueprint attributes (`carla_attributes`' names; missing ones take CARLA's defaults,
        `CARLA_LIDAR_DEFAULTS`). ``horizontal_fov`` must be 360 (one full rotation per scan); noise, drop-off,
        attenuation and ``sensor_tick`` are accepted and ignored. `name` defaults to ``role_name`` or ``"lidar"``.

        Raises:
            LidarError: an unknown attribute name, a value that does not parse, or a spec out of range.
        """
        known = {*CARLA_LIDAR_DEFAULTS, "horizontal_fov", "role_name", *_CARLA_IGNORED}
        unknown = sorted(set(attrs) - known)
        if unknown:
            raise LidarError(f"unknown CARLA LiDAR attribute(s) {unknown}: sensor.lidar.ray_cast takes "
                             f"{', '.join(sorted(known))}")
        a = {**CARLA_LIDAR_DEFAULTS, **{k: str(v) for k, v in attrs.items()}}

        def parse(key, kind):
            try:
                return kind(a[key].strip())
            except ValueError:
                raise LidarError(f"CARLA LiDAR attribute {key}={a[key]!r} is not a{'n integer' if kind is int else ' number'}"
                                 f": pass e.g. {key}={CARLA_LIDAR_DEFAULTS[key]!r}") from None

        if "horizontal_fov" in a:
            try:
                hfov = float(a["horizontal_fov"])
            except ValueError:
                hfov = math.nan
            if hfov != 360.0:
                raise LidarError(f"CARLA LiDAR attribute horizontal_fov={a['horizontal_fov']!r}: only a full 360° "
                                 "rotation is modelled: pass horizontal_fov='360'")
        return cls(channels=parse("channels", int), range_m=parse("range", float),
                   upper_fov_deg=parse("upper_fov", float), lower_fov_deg=parse("lower_fov", float),
                   rotation_frequency_hz=parse("rotation_frequency", float),
                   points_per_second=parse("points_per_second", int),
                   lidar_to_ego=default_lidar_to_ego() if lidar_to_ego is None else lidar_to_ego,
                   name=name if name is not None else a.get("role_name", "lidar") or "lidar")

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict:
        """JSON-ready ``{format, format_version, name, channels, range_m, upper_fov_deg, lower_fov_deg,
        rotation_frequency_hz, points_per_second, lidar_to_ego}`` (float64 values round-trip exactly)."""
        return {"format": LIDAR_FORMAT, "format_version": LIDAR_FORMAT_VERSION, "name": self.name,
                "channels": self.channels, "range_m": self.range_m, "upper_fov_deg": self.upper_fov_deg,
                "lower_fov_deg": self.lower_fov_deg, "rotation_frequency_hz": self.rotation_frequency_hz,
                "points_per_second": self.points_per_second, "lidar_to_ego": self.lidar_to_ego.tolist()}

    @classmethod
    def from_json(cls, data: dict, where: str = "LiDAR") -> "LidarSpec":
        """From `to_json`'s dict; `where` names the source in errors."""
        if not isinstance(data, dict):
            raise LidarError(f"{where}: a LiDAR description is a JSON object, got {type(data).__name__}")
        if data.get("format", LIDAR_FORMAT) != LIDAR_FORMAT or int(data.get("format_version", 1)) > LIDAR_FORMAT_VERSION:
            raise LidarError(f"{where}: format {data.get('format')!r} version {data.get('format_version')}, expected "
                             f"{LIDAR_FORMAT!r} version <= {LIDAR_FORMAT_VERSION}: write it with LidarSpec.save")
        keys = ("channels", "range_m", "upper_fov_deg", "lower_fov_deg", "rotation_frequency_hz", "points_per_second")
        missing = [k for k in keys if k not in data]
        if missing:
            raise LidarError(f"{where} lacks {missing}: a LiDAR file needs {', '.join(keys)} (and optionally "
                             "lidar_to_ego, name)")
        try:
            return cls(**{k: data[k] for k in keys}, name=data.get("name", "lidar"),
                       lidar_to_ego=data.get("lidar_to_ego", default_lidar_to_ego()))
        except LidarError as e:
            raise LidarError(f"{where}: {e}") from e

    def save(self, path: str | Path) -> Path:
        """Write `to_json` to `path` (parent folders created); returns the path."""
        return write_json_file(path, self.to_json(), indent=2)

    @classmethod
    def load(cls, path: str | Path) -> "LidarSpec":
        """Read a file written by `save`."""
        data = read_json_file(path, "LiDAR", f"pass a preset name ({', '.join(LIDAR_PRESETS)}) or a LiDAR JSON file "
                              "written by LidarSpec.save", LidarError)
        return cls.from_json(data, where=f"LiDAR file {Path(path)}")

    def __repr__(self) -> str:
        return (f"LidarSpec({self.name!r}: {self.channels} ch × {self.points_per_channel} pts, "
                f"{self.upper_fov_deg:+g}..{self.lower_fov_deg:+g}°, {self.rotation_frequency_hz:g} Hz, "
                f"{self.range_m:g} m)")


def _points_per_channel(points_per_second: float, rotation_frequency_hz: float, channels: int) -> int:
    # The small relative slack keeps exact ratios (2 621 440 / 10 / 128 = 2048) from rounding down to 2047.
    return int(math.floor(points_per_second / rotation_frequency_hz / channels * (1.0 + 1e-12)))


#: The presets' numbers (`LidarSpec.preset` says which come from datasheets).
LIDAR_PRESETS: dict[str, dict] = {
    "nuscenes32": dict(channels=32, range_m=70.0, upper_fov_deg=10.67, lower_fov_deg=-30.67,
                       rotation_frequency_hz=20.0, points_per_second=1_390_000),
    "hdl64": dict(channels=64, range_m=120.0, upper_fov_deg=2.0, lower_fov_deg=-24.8, rotation_frequency_hz=10.0,
                  points_per_second=1_300_000),
    "os128": dict(channels=128, range_m=120.0, upper_fov_deg=22.5, lower_fov_deg=-22.5, rotation_frequency_hz=10.0,
                  points_per_second=2_621_440),
}
