"""Weather presets with CARLA's names and parameters (`carla.WeatherParameters`).

The CARLA backend applies a preset with ``getattr(carla.WeatherParameters, name)``; the procedural backend
reads the same numbers from `WEATHER_PRESETS` to place the sun, tint the sky, add fog and darken wet roads.
The values are those of the carla 0.9.16 client's presets.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class WeatherParams:
    """Mirror of `carla.WeatherParameters` (same field names and units).

    Attributes:
        cloudiness: cloud cover, 0 (clear) .. 100 (overcast).
        precipitation: rain intensity, 0 .. 100.
        precipitation_deposits: puddles on the road, 0 .. 100.
        wind_intensity: wind, 0 .. 100.
        sun_azimuth_angle: sun azimuth in degrees, 0 .. 360; a negative value (CARLA's presets use -1) means
            "the map's default", which the procedural backend takes as `DEFAULT_SUN_AZIMUTH_DEG`.
        sun_altitude_angle: sun elevation in degrees, -90 (midnight) .. 90 (zenith).
        fog_density: fog concentration, 0 .. 100.
        fog_distance: distance in metres at which fog starts.
        fog_falloff: fog density fall-off with height (CARLA's unitless exponent).
        wetness: wetness of surfaces (camera-visible darkening), 0 .. 100.
        scattering_intensity: how much light scatters in the fog.
        mie_scattering_scale: Mie scattering scale (haze from large particles).
        rayleigh_scattering_scale: Rayleigh scattering scale (blue sky).
        dust_storm: dust storm strength, 0 .. 100.
    """

    cloudiness: float = 5.0
    precipitation: float = 0.0
    precipitation_deposits: float = 0.0
    wind_intensity: float = 10.0
    sun_azimuth_angle: float = -1.0
    sun_altitude_angle: float = 45.0
    fog_density: float = 2.0
    fog_distance: float = 0.75
    fog_falloff: float = 0.1
    wetness: float = 0.0
    scattering_intensity: float = 1.0
    mie_scattering_scale: float = 0.03
    rayleigh_scattering_scale: float = 0.0331
    dust_storm: float = 0.0

    def to_dict(self) -> dict:
        """JSON-ready dict of all fields."""
        return asdict(self)


#: Azimuth (degrees) used for a preset whose `sun_azimuth_angle` is negative ("map default").
DEFAULT_SUN_AZIMUTH_DEG = 135.0

_NIGHT = dict(sun_altitude_angle=-90.0, fog_density=60.0)

#: CARLA preset name -> parameters (carla 0.9.16 values; "Default" is omitted: it means "keep the map's").
WEATHER_PRESETS: dict[str, WeatherParams] = {
    "ClearNoon": WeatherParams(cloudiness=5, fog_density=2),
    "CloudyNoon": WeatherParams(cloudiness=60, fog_density=3),
    "WetNoon": WeatherParams(cloudiness=5, precipitation_deposits=50, fog_density=3),
    "WetCloudyNoon": WeatherParams(cloudiness=60, precipitation_deposits=50, fog_density=3),
    "SoftRainNoon": WeatherParams(cloudiness=20, precipitation=30, precipitation_deposits=50, wind_intensity=30, fog_density=3),
    "MidRainyNoon": WeatherParams(cloudiness=60, precipitation=60, precipitation_deposits=60, wind_intensity=60, fog_density=3),
    "HardRainNoon": WeatherParams(cloudiness=100, precipitation=100, precipitation_deposits=90, wind_intensity=100, fog_density=7),
    "ClearSunset": WeatherParams(cloudiness=5, sun_altitude_angle=15, fog_density=2),
    "CloudySunset": WeatherParams(cloudiness=60, sun_altitude_angle=15, fog_density=3),
    "WetSunset": WeatherParams(cloudiness=5, precipitation_deposits=50, sun_altitude_angle=15, fog_density=2),
    "WetCloudySunset": WeatherParams(cloudiness=60, precipitation_deposits=50, sun_altitude_angle=15, fog_density=2),
    "SoftRainSunset": WeatherParams(cloudiness=20, precipitation=30, precipitation_deposits=50, wind_intensity=30, sun_altitude_angle=15, fog_density=2),
    "MidRainSunset": WeatherParams(cloudiness=60, precipitation=60, precipitation_deposits=60, wind_intensity=60, sun_altitude_angle=15, fog_density=3),
    "HardRainSunset": WeatherParams(cloudiness=100, precipitation=100, precipitation_deposits=90, wind_intensity=100, sun_altitude_angle=15, fog_density=7),
    "ClearNight": WeatherParams(cloudiness=5, fog_distance=75.0, fog_falloff=1.0, **_NIGHT),
    "CloudyNight": WeatherParams(cloudiness=60, **_NIGHT),
    "WetNight": WeatherParams(cloudiness=5, precipitation_deposits=50, fog_distance=75.0, fog_falloff=1.0, wetness=60, **_NIGHT),
    "WetCloudyNight": WeatherParams(cloudiness=60, precipitation_deposits=50, wetness=60, **_NIGHT),
    "SoftRainNight": WeatherParams(cloudiness=60, precipitation=30, precipitation_deposits=50, wind_intensity=30, wetness=60, **_NIGHT),
    "MidRainyNight": WeatherParams(cloudiness=80, precipitation=60, precipitation_deposits=60, wind_intensity=60, wetness=80, **_NIGHT),
    "HardRainNight": WeatherParams(cloudiness=100, precipitation=100, precipitation_deposits=90, wind_intensity=100, fog_density=100, wetness=100, sun_altitude_angle=-90.0),
    "DustStorm": WeatherParams(cloudiness=100, wind_intensity=100, dust_storm=100),
}


def check_weather(name: str) -> str:
    """Return `name` if it is a known preset, else raise ValueError listing the presets.

    Args:
        name: a `carla.WeatherParameters` preset name, e.g. ``"ClearNoon"`` (case-sensitive).
    Returns:
        the same name.
    """
    if name not in WEATHER_PRESETS:
        raise ValueError(f"unknown weather {name!r}: choose one of {', '.join(WEATHER_PRESETS)}")
    return name
