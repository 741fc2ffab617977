"""A spinning LiDAR for capture: `LidarSpec` (beams, range, rotation, mount), its presets, beam tables, CARLA
blueprint attributes and JSON file, and the binning of returns into the fixed-shape range image a store keeps.

This is the capture-side twin of `nfldm_sdk.sensors.lidar_spec` (the two packages import nothing of each other):
the same fields, presets, beam tables, CARLA attributes and JSON format, so a LiDAR file written by one is read by
the other and both lay out a scan identically (tests/sim_bridge/test_lidar_capture.py compares them).

Beam model: CARLA's ray-cast LiDAR (``sensor.lidar.ray_cast`` / ``ray_cast_semantic``): ``channels`` beams evenly
spaced in elevation from ``upper_fov_deg`` down to ``lower_fov_deg``, each firing ``points_per_channel =
floor(points_per_second / rotation_frequency_hz / channels)`` times per rotation, evenly over 360°. A scan is the
range image ``[channels, points_per_channel]``: row ``c`` is beam ``elevations_deg()[c]`` (the highest first),
column ``a`` is azimuth ``azimuths_deg()[a]``.

Sensor frame: x forward, y left, z up (the ego frame's axes), metres; azimuth 0 = +x, counter-clockwise seen from
above (towards +y); elevation positive above the horizontal plane. ``lidar_to_ego [4,4]`` float64 maps sensor
coordinates to the ego frame. (CARLA reports points in Unreal's left-handed frame, y right: converting them is
`sim_bridge.conventions`' job.)

Example::

    spec = LidarSpec.resolve("nuscenes32")                          # 32 beams, 20 Hz, 2171 shots per beam
    spec.range_image_shape                                          # (32, 2171)
    rng, tag = range_image(points_xyz, point_tags, spec)            # [32, 2171] float32 (inf) and uint8 (0)
    LidarSpec.from_carla_attributes(spec.carla_attributes()) == spec
    spec.save("lidar.json"); LidarSpec.load("lidar.json")
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sim_bridge.errors import SimBridgeError
from sim_bridge.rigid import rigid_problems

__all__ = ["LidarSpec", "LidarError", "LIDAR_PRESETS", "LIDAR_FORMAT", "LIDAR_FORMAT_VERSION", "CARLA_LIDAR_DEFAULTS",
           "NO_RETURN_TAG", "default_lidar_to_ego", "range_image", "lidar_presets_text"]

LIDAR_FORMAT = "nfldm.lidar"
LIDAR_FORMAT_VERSION = 1
#: Height of the default mount above the ego origin (the ground below the vehicle centre), metres: a roof LiDAR.
DEFAULT_MOUNT_HEIGHT_M = 1.8
#: Tag of a range-image cell without a return: CARLA's 0, "Unlabeled".
NO_RETURN_TAG = 0

#: CARLA's ``sensor.lidar.ray_cast`` blueprint defaults (``range`` in metres since 0.9.7), used for attributes
#: `LidarSpec.from_carla_attributes` is not given, as the blueprint library does.
CARLA_LIDAR_DEFAULTS = {"channels": "32", "range": "10.0", "points_per_second": "56000", "rotation_frequency": "10.0",
                        "upper_fov": "10.0", "lower_fov": "-30.0"}
#: CARLA LiDAR attributes without a counterpart here: accepted and ignored (no noise, drop-off or intensity model;
#: one whole rotation per tick).
CARLA_IGNORED_ATTRIBUTES = ("sensor_tick", "atmosphere_attenuation_rate", "dropoff_general_rate",
                            "dropoff_intensity_limit", "dropoff_zero_intensity", "noise_stddev", "noise_seed")


class LidarError(SimBridgeError, ValueError):
    """A LiDAR description is malformed (a field out of range, a bad CARLA attribute, an unreadable file, an unknown
    preset); the message names the field and the fix."""


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
        rotation_frequency_hz: rotations per second (> 0).
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
            if isinstance(value, (bool, np.bool_)):
                raise LidarError(f"LiDAR {self.name!r}: {key} must be a number, got {value!r}")
            try:
                v = float(value)
            except (TypeError, ValueError):
                raise LidarError(f"LiDAR {self.name!r}: {key} must be a number, got {value!r}") from None
            if not math.isfinite(v) or (integer and v != int(v)):
                raise LidarError(f"LiDAR {self.name!r}: {key} must be a finite {'integer' if integer else 'number'}, "
                                 f"got {value!r}")
            return int(v) if integer else v

        if not isinstance(self.name, str) or not self.name:
            raise LidarError(f"a LiDAR's name must be a non-empty string, got {self.name!r}")
        channels = number("channels", self.channels, integer=True)
        pps = number("points_per_second", self.points_per_second, integer=True)
        rng, up, lo = number("range_m", self.range_m), number("upper_fov_deg", self.upper_fov_deg), \
            number("lower_fov_deg", self.lower_fov_deg)
        freq = number("rotation_frequency_hz", self.rotation_frequency_hz)
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
        try:
            m = np.array(self.lidar_to_ego, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise LidarError(f"LiDAR {self.name!r}: lidar_to_ego must be a numeric [4,4] matrix ({e})") from e
        why = f"shape {m.shape} is not (4, 4)" if m.shape != (4, 4) else rigid_problems(m)[()]
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
        (default `default_lidar_to_ego`); the numbers and their sources are `nfldm_sdk.sensors.lidar_spec`'s."""
        if name not in LIDAR_PRESETS:
            raise LidarError(f"unknown LiDAR preset {name!r}: choose one of {lidar_presets_text()} or a LiDAR JSON "
                             "file (LidarSpec.save writes one)")
        mount = default_lidar_to_ego() if lidar_to_ego is None else lidar_to_ego
        return cls(**LIDAR_PRESETS[name], lidar_to_ego=mount, name=name)

    @classmethod
    def resolve(cls, spec: "LidarSpec | str | Path") -> "LidarSpec":
        """A `LidarSpec` from itself, a preset name or the path of a JSON file written by `save`.

        Raises:
            LidarError: not a preset and no such file, or a file that is not a valid LiDAR description.
        """
        if isinstance(spec, LidarSpec):
            return spec
        if isinstance(spec, str) and spec in LIDAR_PRESETS:
            return cls.preset(spec)
        if isinstance(spec, (str, Path)) and (Path(spec).suffix == ".json" or Path(spec).is_file()):
            return cls.load(spec)
        raise LidarError(f"unknown LiDAR {spec!r}: not a preset ({lidar_presets_text()}) nor a LiDAR JSON file")

    # ------------------------------------------------------------------ beam tables
    @property
    def points_per_channel(self) -> int:
        """Shots per beam per rotation ``A = floor(points_per_second / rotation_frequency_hz / channels)``: the
        columns of the range image."""
        return _points_per_channel(self.points_per_second, self.rotation_frequency_hz, self.channels)

    @property
    def range_image_shape(self) -> tuple[int, int]:
        """``(channels, points_per_channel)``: the shape of one scan's range image."""
        return self.channels, self.points_per_channel

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

    def beam_tables(self) -> dict:
        """``{"elevation_deg": [channels], "azimuth_deg": [A]}`` as JSON lists (what a capture store records)."""
        return {"elevation_deg": self.elevations_deg().tolist(), "azimuth_deg": self.azimuths_deg().tolist()}

    # ------------------------------------------------------------------ CARLA
    def carla_attributes(self) -> dict[str, str]:
        """CARLA ``sensor.lidar.ray_cast(_semantic)`` blueprint attributes (strings, as ``set_attribute`` takes
        them): ``channels``, ``range`` (metres), ``upper_fov``/``lower_fov`` (degrees), ``rotation_frequency`` (Hz),
        ``points_per_second``, ``horizontal_fov`` (360) and ``role_name``. Floats are written exactly (``repr``).
        The mount is a ``carla.Transform``, not an attribute (`sim_bridge.conventions.lidar_to_ego_to_carla`)."""
        return {"channels": str(self.channels), "range": repr(self.range_m), "upper_fov": repr(self.upper_fov_deg),
                "lower_fov": repr(self.lower_fov_deg), "rotation_frequency": repr(self.rotation_frequency_hz),
                "points_per_second": str(self.points_per_second), "horizontal_fov": "360.0", "role_name": self.name}

    @classmethod
    def from_carla_attributes(cls, attrs: dict[str, str], lidar_to_ego: np.ndarray | None = None,
                              name: str | None = None) -> "LidarSpec":
        """The spec of CARLA blueprint attributes (`carla_attributes`' names; missing ones take CARLA's defaults,
        `CARLA_LIDAR_DEFAULTS`). ``horizontal_fov`` must be 360; noise, drop-off, attenuation and ``sensor_tick``
        are accepted and ignored. `name` defaults to ``role_name`` or ``"lidar"``.

        Raises:
            LidarError: an unknown attribute name, a value that does not parse, or a spec out of range.
        """
        known = {*CARLA_LIDAR_DEFAULTS, "horizontal_fov", "role_name", *CARLA_IGNORED_ATTRIBUTES}
        unknown = sorted(set(attrs) - known)
        if unknown:
            raise LidarError(f"unknown CARLA LiDAR attribute(s) {unknown}: sensor.lidar.ray_cast takes "
                             f"{', '.join(sorted(known))}")
        a = {**CARLA_LIDAR_DEFAULTS, **{k: str(v) for k, v in attrs.items()}}

        def parse(key, kind):
            try:
                return kind(a[key].strip())
            except ValueError:
                raise LidarError(f"CARLA LiDAR attribute {key}={a[key]!r} is not a"
                                 f"{'n integer' if kind is int else ' number'}: pass e.g. "
                                 f"{key}={CARLA_LIDAR_DEFAULTS[key]!r}") from None

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
        """From `to_json`'s dict (other keys are ignored); `where` names the source in errors."""
        if not isinstance(data, dict):
            raise LidarError(f"{where}: a LiDAR description is a JSON object, got {type(data).__name__}")
        version = data.get("format_version", 1)
        if data.get("format", LIDAR_FORMAT) != LIDAR_FORMAT or not isinstance(version, int) \
                or version > LIDAR_FORMAT_VERSION:
            raise LidarError(f"{where}: format {data.get('format')!r} version {version!r}, expected "
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
        """Write `to_json` to `path` (indented JSON; parent folders created); returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_json(), indent=2))
        return p

    @classmethod
    def load(cls, path: str | Path) -> "LidarSpec":
        """Read a file written by `save` (here or by `nfldm_sdk.sensors.lidar_spec.LidarSpec.save`).

        Raises:
            LidarError: no file at `path`, not JSON, or not a valid LiDAR description (the message names the file).
        """
        p = Path(path)
        if not p.is_file():
            raise LidarError(f"LiDAR file {p} not found: pass a preset name ({lidar_presets_text()}) or a LiDAR JSON "
                             "file written by LidarSpec.save")
        try:
            data = json.loads(p.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise LidarError(f"LiDAR file {p} is not valid JSON ({e}): fix it, or write one with LidarSpec.save") from e
        return cls.from_json(data, where=f"LiDAR file {p}")

    def __repr__(self) -> str:
        return (f"LidarSpec({self.name!r}: {self.channels} ch × {self.points_per_channel} pts, "
                f"{self.upper_fov_deg:+g}..{self.lower_fov_deg:+g}°, {self.rotation_frequency_hz:g} Hz, "
                f"{self.range_m:g} m)")


def _points_per_channel(points_per_second: float, rotation_frequency_hz: float, channels: int) -> int:
    # The small relative slack keeps exact ratios (2 621 440 / 10 / 128 = 2048) from rounding down to 2047.
    return int(math.floor(points_per_second / rotation_frequency_hz / channels * (1.0 + 1e-12)))


def range_image(points: np.ndarray, tags: np.ndarray, spec: LidarSpec) -> tuple[np.ndarray, np.ndarray]:
    """Bin returns into `spec`'s range image, keeping the nearest return of each cell.

    A return belongs to the beam nearest its elevation (dropped when that is more than half a beam spacing away, or
    beyond half a degree for a one-beam LiDAR) and to the column nearest its azimuth (wrapping at 360°). Returns
    farther than ``range_m`` (or at the origin) are dropped.

    Args:
        points: ``[P, 3]`` return positions in the sensor frame (x forward, y left, z up), metres.
        tags: ``[P]`` CARLA semantic tags of the returns (any integer dtype; stored as uint8).
        spec: the LiDAR.
    Returns:
        ``(range [C, A] float32`` metres, ``inf`` where no return; ``tag [C, A] uint8``, `NO_RETURN_TAG` where no
        return``)``.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    t = np.asarray(tags).reshape(-1)
    if len(t) != len(p):
        raise LidarError(f"range_image: {len(p)} points but {len(t)} tags: give one tag per point")
    C, A = spec.range_image_shape
    out_r = np.full(C * A, np.inf, np.float32)
    out_t = np.full(C * A, NO_RETURN_TAG, np.uint8)
    r = np.linalg.norm(p, axis=1)
    elev = np.degrees(np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1])))
    if C > 1:
        step = (spec.upper_fov_deg - spec.lower_fov_deg) / (C - 1)
        row_f = (spec.upper_fov_deg - elev) / step
        row = np.rint(row_f)
        ok = np.abs(row_f - row) <= 0.5 + 1e-6
    else:
        row = np.zeros(len(p))
        ok = np.abs(elev - spec.upper_fov_deg) <= 0.5
    ok &= (row >= 0) & (row < C) & (r > 0) & (r <= spec.range_m)
    az = np.degrees(np.arctan2(p[:, 1], p[:, 0])) % 360.0
    col = np.rint(az * (A / 360.0)).astype(np.int64) % A
    cell = row[ok].astype(np.int64) * A + col[ok]
    rk, tk = r[ok], t[ok]
    order = np.lexsort((rk, cell))                   # by cell, nearest first within a cell
    first = np.unique(cell[order], return_index=True)[1]
    keep = order[first]
    out_r[cell[keep]] = rk[keep].astype(np.float32)
    out_t[cell[keep]] = tk[keep].astype(np.uint8)
    return out_r.reshape(C, A), out_t.reshape(C, A)


#: The presets' numbers: the same as `nfldm_sdk.sensors.lidar_spec.LIDAR_PRESETS` (checked by the tests).
LIDAR_PRESETS: dict[str, dict] = {
    "nuscenes32": dict(channels=32, range_m=70.0, upper_fov_deg=10.67, lower_fov_deg=-30.67,
                       rotation_frequency_hz=20.0, points_per_second=1_390_000),
    "hdl64": dict(channels=64, range_m=120.0, upper_fov_deg=2.0, lower_fov_deg=-24.8, rotation_frequency_hz=10.0,
                  points_per_second=1_300_000),
    "os128": dict(channels=128, range_m=120.0, upper_fov_deg=22.5, lower_fov_deg=-22.5, rotation_frequency_hz=10.0,
                  points_per_second=2_621_440),
}


def lidar_presets_text() -> str:
    """The preset names for help texts: ``nuscenes32, hdl64, os128``."""
    return ", ".join(LIDAR_PRESETS)
