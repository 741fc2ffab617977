"""nfldm_sdk — everything a user of generated scenes needs.

Cameras and rigs, trajectories, the voxel neural field, volume rendering, lift/splat, the networks, sampling,
`SceneGenerator`, SDS refinement, virtual camera sensors, Open3D viewing and the `nfldm` CLI.

Conventions: world right-handed, z up, metres; scene frame = the ego frame (x forward, y left, z up) at the
scene's anchor time; cameras OpenCV (x right, y down, z forward) with `K [3,3]` in pixels and `cam_to_world
[4,4]`; depth is planar z-depth in metres with `inf` where nothing was hit.

Names are imported on first use, so `import nfldm_sdk` stays fast.
"""
from importlib import import_module as _import_module
from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("nfldm")
except _metadata.PackageNotFoundError:  # a source tree without installing
    __version__ = "0.0.0+unknown"

#: public name -> module that defines it
_EXPORTS = {
    "Cameras": "nfldm_sdk.cameras.pinhole",
    "Rays": "nfldm_sdk.cameras.pinhole",
    "VoxelField": "nfldm_sdk.fields.voxel_field",
    "RenderOutput": "nfldm_sdk.rendering.api",
    "render_field": "nfldm_sdk.rendering.api",
    "render_field_reference": "nfldm_sdk.rendering.api",
    "depth_bins": "nfldm_sdk.fields.lift_splat",
    "lift": "nfldm_sdk.fields.lift_splat",
    "frustum_points": "nfldm_sdk.fields.lift_splat",
    "splat": "nfldm_sdk.fields.lift_splat",
    "lift_splat": "nfldm_sdk.fields.lift_splat",
    "SceneAutoEncoder": "nfldm_sdk.models.scene_ae",
    "SceneAEConfig": "nfldm_sdk.models.scene_ae",
    "LatentAutoEncoder": "nfldm_sdk.models.latent_ae",
    "LatentAEConfig": "nfldm_sdk.models.latent_ae",
    "SceneGenerator": "nfldm_sdk.pipelines.generator",
    "NeuralScene": "nfldm_sdk.pipelines.scene",
    "SceneImages": "nfldm_sdk.sensors.views",
    "CameraSpec": "nfldm_sdk.cameras.rig",
    "CameraRig": "nfldm_sdk.cameras.rig",
    "Trajectory": "nfldm_sdk.cameras.trajectory",
    "Frame": "nfldm_sdk.sensors.frames",
    "FrameBatch": "nfldm_sdk.sensors.frames",
    "SensorWorld": "nfldm_sdk.sensors.world",
    "render_trajectory": "nfldm_sdk.sensors.trajectory_render",
    "LidarSpec": "nfldm_sdk.sensors.lidar_spec",
    "LidarScan": "nfldm_sdk.sensors.lidar",
}


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nfldm_sdk' has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS])


__all__ = [*_EXPORTS, "__version__"]
