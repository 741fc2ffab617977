"""What a `SensorWorld` camera's listener receives: `CameraImage` (CARLA's ``carla.Image`` plus depth) and
`SemanticImage` (CARLA's semantic camera image), read-only views of one `Frame`.

`FRAME_ATTRIBUTES` are the `Frame` fields and properties a `CameraImage` reads through to (its metadata included:
``ego_to_world``, ``cam_to_ego``, ``camera_model``, ``distortion``, ``scene_id``, ``timestamp_us``).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from nfldm_sdk.labels.classes import colorize_tags
from nfldm_sdk.sensors.frames import Frame

__all__ = ["CameraImage", "SemanticImage", "FRAME_ATTRIBUTES"]


class CameraImage:
    """What a sensor's listener receives (CARLA's ``carla.Image``, plus depth): a read-only view of one `Frame`.

    Attributes (read-only): every `Frame` field and property, read through to the frame — ``frame`` (tick index),
    ``timestamp`` (s), ``width``, ``height``, ``rgb``, ``depth`` (planar metres, inf = no hit), ``alpha``, ``range``
    (or None), ``semantic`` (``[H, W]`` uint8 CARLA tags, or None without a semantic head), ``semantic_confidence``,
    ``has_semantics``, ``valid``, ``K``, ``cam_to_world``, ``ego_to_world``, ``cam_to_ego``, ``camera_model``,
    ``distortion``, ``camera`` (name), ``scene_id``, ``seed``, ``bundle_hash``, ``timestamp_us`` — plus ``fov``
    (horizontal, degrees), ``transform`` (``cam_to_world [4,4]``, OpenCV camera -> scene frame — a matrix, not a
    carla.Transform), ``raw_data`` (bytes of the ``[H, W, 3]`` RGB image — RGB, not CARLA's BGRA), ``sensor`` (the
    `nfldm_sdk.sensors.world.CameraSensor` that took it) and ``data`` (the underlying `Frame`).
    """

    def __init__(self, data: Frame, sensor, fov: float):
        self.data, self.sensor, self.fov = data, sensor, fov

    transform = property(lambda self: self.data.cam_to_world, doc="``cam_to_world [4,4]`` of the frame.")

    @property
    def raw_data(self) -> bytes:
        """The RGB image as bytes, row-major ``[H, W, 3]`` uint8 (note: RGB, not CARLA's BGRA)."""
        return self.data.rgb.tobytes()

    def save_to_disk(self, path: str) -> str:
        """Write the RGB image as PNG. Like CARLA, ``%d``-style patterns in `path` take the frame number
        (``"out/%06d.png"``). Returns the path written."""
        import imageio.v3 as iio  # start-up time: imageio only when an image is saved

        if "%" in path:
            path = path % self.frame
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        iio.imwrite(path, self.data.rgb)
        return path

    def __repr__(self) -> str:
        return f"CameraImage(frame={self.frame}, timestamp={self.timestamp:.3f}, {self.camera!r} {self.width}x{self.height})"


class SemanticImage(CameraImage):
    """What a ``sensor.camera.semantic_segmentation`` listener receives (CARLA's semantic ``carla.Image``): a
    `CameraImage` whose payload is the label image.

    Attributes (read-only, beyond `CameraImage`'s): ``tags`` ``[H, W]`` uint8 CARLA tags (= ``semantic``; sky = 11
    exactly where ``depth`` is ``inf``), ``semantic_confidence`` ``[H, W]`` float32, ``raw_data`` (bytes of
    ``tags``, one byte per pixel row-major — not CARLA's BGRA with the tag in the red channel).
    """

    @property
    def tags(self) -> np.ndarray:
        """``[H, W]`` uint8 CARLA semantic tags."""
        return self.data.semantic

    @property
    def raw_data(self) -> bytes:
        """The tags as bytes, row-major ``[H, W]`` uint8 (one tag per pixel)."""
        return self.data.semantic.tobytes()

    def save_to_disk(self, path: str, color_converter: str = "raw") -> str:
        """Write the labels as PNG (``%d``-style patterns take the frame number, as in CARLA): ``color_converter``
        ``"raw"`` (CARLA's ``ColorConverter.Raw``) writes the tags as an 8-bit single-channel image (lossless: read
        it back with ``imageio.v3.imread``), ``"cityscapes"`` (``ColorConverter.CityScapesPalette``) the RGB picture
        in CARLA's palette. Returns the path written."""
        import imageio.v3 as iio  # start-up time: imageio only when an image is saved

        converters = {"raw": lambda t: t, "cityscapes": colorize_tags, "cityscapespalette": colorize_tags}
        convert = converters.get(str(color_converter).lower().replace("_", ""))
        if convert is None:
            raise ValueError(f"unknown color_converter {color_converter!r}: use 'raw' (the tags) or 'cityscapes' "
                             "(CARLA's CityScapes palette)")
        if "%" in path:
            path = path % self.frame
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        iio.imwrite(path, convert(self.data.semantic))
        return path

    def __repr__(self) -> str:
        return f"SemanticImage(frame={self.frame}, timestamp={self.timestamp:.3f}, {self.camera!r} {self.width}x{self.height})"


def _frame_attribute(name: str) -> property:
    """A read-only property of `CameraImage` returning its frame's attribute `name`."""
    return property(lambda self: getattr(self.data, name), doc=f"The frame's ``{name}`` (`Frame`).")


#: The `Frame` attributes a `CameraImage` reads through to: its fields and its derived properties.
FRAME_ATTRIBUTES = (*(f.name for f in dataclasses.fields(Frame)), "valid", "has_semantics", "width", "height",
                    "timestamp_us")
for _name in FRAME_ATTRIBUTES:
    setattr(CameraImage, _name, _frame_attribute(_name))
del _name
