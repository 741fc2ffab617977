"""sim_bridge — capture posed RGB, depth and semantics from a driving simulator into zarr capture stores.

Two backends produce the same data: the real CARLA client (`--backend carla`) and a built-in procedural
simulator rendered with Open3D's raycaster (`--backend procedural`, the default when no CARLA server answers).

Conventions (see README "Conventions"):
  * world: right-handed, z up, metres; ego/vehicle frame: x forward, y left, z up, origin on the ground
    below the vehicle centre;
  * camera: OpenCV axes (x right, y down, z forward), `K [3,3]` in pixels, `cam_to_world [4,4]`;
  * depth: planar z-depth in metres, float32, `inf` where nothing was hit;
  * semantics: CARLA 0.9.14+ semantic tags, uint8 (see `sim_bridge.semantics`);
  * LiDAR (optional, `sim_bridge.lidar.LidarSpec`): sensor x forward, y left, z up; range images `[C,A]` of metres
    along each beam, `inf` where there is no return.
"""
from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("nfldm")
except _metadata.PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

from sim_bridge.lidar import LidarSpec  # noqa: E402
from sim_bridge.rig import Rig, RigCamera, RigError, RIG_PRESETS  # noqa: E402


def open_store(path, **kwargs):
    """Open a capture store for reading (validates on open). See `sim_bridge.store.reader.open_store`."""
    # start-up time: zarr loads when a store is opened, not with `import sim_bridge`
    from sim_bridge.store.reader import open_store as _open

    return _open(path, **kwargs)


__all__ = ["Rig", "RigCamera", "RigError", "RIG_PRESETS", "LidarSpec", "open_store", "__version__"]
