"""Talking to a CARLA server before any actor exists: its errors, version checks, physics substeps, weather
presets, map names and a cheap probe for a listening server.

The `carla` package is imported only by the functions that need it (through `conventions.import_carla`).
"""
from __future__ import annotations

import logging
import math
import re
import socket

from sim_bridge import conventions as conv
from sim_bridge.errors import SimBridgeError

logger = logging.getLogger(__name__)


class CarlaConnectionError(SimBridgeError, RuntimeError):
    """No CARLA server answered (or it stopped answering)."""


class CarlaEpisodeLostError(SimBridgeError, RuntimeError):
    """The server lost the episode (restarted): reconnecting cannot continue it; resume instead."""


class CarlaVersionError(SimBridgeError, RuntimeError):
    """Client and server versions are incompatible."""


def parse_version(v: str) -> tuple[int, ...] | None:
    """``"0.9.16"`` (optionally ``v``-prefixed, patch optional) -> (0, 9, 16); None when it is no version."""
    m = re.match(r"\s*v?(\d+)\.(\d+)(?:\.(\d+))?", str(v))
    if not m:
        return None
    return tuple(int(x) for x in m.groups(default="0"))


def check_versions(client_version: str, server_version: str) -> str | None:
    """Compare CARLA client and server versions.

    CARLA numbers releases ``0.9.N``; the leading ``0.9`` plays the part of the major version (0.9 → 0.10 is
    the UE4 → UE5 break, with an incompatible protocol) and ``N`` the minor. A major mismatch raises
    `CarlaVersionError` naming both; a minor mismatch (``0.9.15`` vs ``0.9.16``) returns a warning message (and
    logs it), as libcarla itself only warns; equal versions return None.
    """
    c, s = parse_version(client_version), parse_version(server_version)
    if c is None or s is None:
        msg = f"cannot parse CARLA versions (client {client_version!r}, server {server_version!r}); continuing"
        logger.warning(msg)
        return msg
    if c[:2] != s[:2]:
        raise CarlaVersionError(
            f"CARLA client {client_version} cannot talk to server {server_version} (major versions differ): "
            f"install the matching client, e.g. pip install carla=={server_version.strip()}")
    if c != s:
        msg = (f"CARLA client {client_version} and server {server_version} differ in minor version: the API may "
               f"not match; pip install carla=={server_version.strip()} to be safe")
        logger.warning(msg)
        return msg
    return None


#: CARLA accepts 1..16 physics substeps per tick.
MAX_SUBSTEPS = 16
#: Largest physics substep CARLA recommends (s); above it vehicle dynamics degrade.
MAX_GOOD_SUBSTEP_S = 1.0 / 60.0


def physics_substeps(fixed_delta_seconds: float, max_substep_delta_time: float, max_substeps: int) -> tuple[float, int]:
    """Substepping settings `(max_substep_delta_time, max_substeps)` that cover one tick of `fixed_delta_seconds`.

    CARLA needs ``max_substep_delta_time × max_substeps ≥ fixed_delta_seconds`` with 1..16 substeps. The
    server's values are kept when they suffice; otherwise the number of substeps grows (to 16 at most), then the
    substep length (with a warning beyond 1/60 s, where physics gets coarse — e.g. below ~3.75 fps).
    """
    dt = float(fixed_delta_seconds)
    if max_substep_delta_time * max_substeps >= dt - 1e-9:
        return float(max_substep_delta_time), int(max_substeps)
    steps = math.ceil(dt / max_substep_delta_time - 1e-9)
    if steps <= MAX_SUBSTEPS:
        return float(max_substep_delta_time), int(steps)
    sub = dt / MAX_SUBSTEPS
    if sub > MAX_GOOD_SUBSTEP_S + 1e-12:
        logger.warning("a CARLA tick of %.3f s needs physics substeps of %.4f s (> 1/60 s): vehicle physics will be "
                       "coarse; use a higher fps", dt, sub)
    return sub, MAX_SUBSTEPS


def weather_names() -> list[str]:
    """Names of CARLA's weather presets (attributes of `carla.WeatherParameters`)."""
    carla = conv.import_carla()
    return sorted(n for n in dir(carla.WeatherParameters)
                  if n[:1].isupper() and isinstance(getattr(carla.WeatherParameters, n), carla.WeatherParameters))


def weather_preset(name: str):
    """The `carla.WeatherParameters` preset `name`, or ValueError listing the valid names."""
    carla = conv.import_carla()
    w = getattr(carla.WeatherParameters, name, None) if name[:1].isupper() else None
    if not isinstance(w, carla.WeatherParameters):
        raise ValueError(f"unknown CARLA weather {name!r}: use one of {', '.join(weather_names())}")
    return w


def map_basename(name: str) -> str:
    """The map's own name of a CARLA map path (``"Carla/Maps/Town03"`` -> ``"Town03"``)."""
    return str(name).rstrip("/").split("/")[-1]


def is_timeout(err: BaseException) -> bool:
    """True when `err` is a time-out of the CARLA client (its RuntimeError says "time-out") or our own."""
    return isinstance(err, CarlaConnectionError) or (isinstance(err, RuntimeError) and "time-out" in str(err))


def probe_carla(host: str = "127.0.0.1", port: int = 2000, timeout: float = 1.0, client_factory=None) -> str | None:
    """The server version if a CARLA server answers at `host:port` within `timeout` seconds, else None.

    Checks first that the TCP port accepts a connection (fast when nothing listens), then asks the server
    its version through the client (`carla.Client` unless `client_factory` is given). Returns None for an
    absent, slow or foreign server; raises ImportError (with the install command) only when something listens
    but the `carla` package is missing, so the caller can say so.
    """
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError:
        return None
    factory = client_factory or conv.import_carla().Client
    try:
        client = factory(host, int(port))
        client.set_timeout(float(timeout))
        return str(client.get_server_version())
    except (RuntimeError, OSError):
        return None
