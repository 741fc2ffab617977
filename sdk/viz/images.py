"""Reading a folder of images: the dataset photos or renders a command or a training stage takes as a folder.

    images = read_rgb_images("data/frames")        # [uint8 [H, W, 3], ...], sorted by file name
"""
from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np

from nfldm_sdk.errors import NfldmError

__all__ = ["IMAGE_SUFFIXES", "NoImagesError", "image_files", "read_rgb_images"]

#: File suffixes (lower case) read as images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class NoImagesError(NfldmError, FileNotFoundError):
    """A folder that should hold images holds no file with one of the `IMAGE_SUFFIXES`."""


def image_files(folder: str | Path) -> list[Path]:
    """The files of `folder` whose suffix is one of `IMAGE_SUFFIXES` (any case), sorted by name.

    Raises:
        `NoImagesError` when there is none.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise NoImagesError(f"no {'/'.join(s.lstrip('.') for s in IMAGE_SUFFIXES)} images in {folder}")
    return files


def read_rgb_images(folder: str | Path) -> list[np.ndarray]:
    """The `image_files` of `folder` as RGB arrays ``[H, W, 3]`` in the files' own dtype (uint8 for 8-bit files):
    a grey image is repeated over the three channels, an alpha channel is dropped. Images may differ in size.

    Raises:
        `NoImagesError` when `folder` holds no image.
    """
    out = []
    for p in image_files(folder):
        img = np.asarray(iio.imread(p))
        img = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img[..., :3]
        out.append(np.ascontiguousarray(img))
    return out
