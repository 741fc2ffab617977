"""Town names and weather presets: CARLA's names, CARLA's values, clear errors."""
from dataclasses import fields

import pytest

from sim_bridge.towns import TOWNS, check_town
from sim_bridge.weather import WEATHER_PRESETS, WeatherParams, check_weather

CARLA_TOWNS = ["Town01", "Town02", "Town03", "Town04", "Town05", "Town06", "Town07", "Town10HD"]
REQUIRED_WEATHER = ["ClearNoon", "CloudyNoon", "WetNoon", "WetCloudyNoon", "SoftRainNoon", "MidRainyNoon", "HardRainNoon",
                    "ClearSunset", "CloudySunset", "WetSunset", "SoftRainSunset", "ClearNight"]


def test_towns_are_carlas():
    assert list(TOWNS) == CARLA_TOWNS
    assert all(isinstance(v, str) and v for v in TOWNS.values())
    assert check_town("Town10HD") == "Town10HD"


def test_unknown_town_lists_towns():
    with pytest.raises(ValueError) as e:
        check_town("Town99")
    msg = str(e.value)
    assert "Town99" in msg and all(t in msg for t in CARLA_TOWNS)


def test_weather_presets_cover_required_names():
    assert set(REQUIRED_WEATHER) <= set(WEATHER_PRESETS)
    assert check_weather("ClearNight") == "ClearNight"
    with pytest.raises(ValueError) as e:
        check_weather("Sunny")
    assert "Sunny" in str(e.value) and all(n in str(e.value) for n in REQUIRED_WEATHER)


def test_weather_params_mirror_carla_fields():
    names = {f.name for f in fields(WeatherParams)}
    assert {"cloudiness", "precipitation", "precipitation_deposits", "wind_intensity", "sun_azimuth_angle",
            "sun_altitude_angle", "fog_density", "fog_distance", "wetness"} <= names
    assert WEATHER_PRESETS["ClearNoon"].sun_altitude_angle == 45.0
    assert WEATHER_PRESETS["ClearSunset"].sun_altitude_angle == 15.0
    assert WEATHER_PRESETS["ClearNight"].sun_altitude_angle == -90.0
    assert WEATHER_PRESETS["HardRainNoon"].precipitation == 100.0


def test_weather_values_equal_the_carla_client():
    carla = pytest.importorskip("carla")
    for name, p in WEATHER_PRESETS.items():
        w = getattr(carla.WeatherParameters, name)  # the CARLA backend applies presets this way
        for f in fields(p):
            assert getattr(p, f.name) == pytest.approx(getattr(w, f.name), abs=1e-4), (name, f.name)
