"""Preview images of generated scenes: four road-level views, RGB above inverse depth, in one PNG (optionally a
third row: the semantic labels in CARLA's palette).

    save_preview(scene, "out/scene_000000/preview.png")     # [2H, 4W, 3] uint8: front, left, back, right

The views are `nfldm_sdk.cameras.builders.preview_cameras`: from the scene origin at 1.6 m height looking front
(+x), left (+y), back and right. ``nfldm generate`` and ``nfldm refine`` write one per scene.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import imageio.v3 as iio
import numpy as np
import torch

from nfldm_sdk.cameras.builders import preview_cameras
from nfldm_sdk.labels.classes import colorize_tags
from nfldm_sdk.models.semantic_head import require_semantic_head

if TYPE_CHECKING:
    from nfldm_sdk.pipelines.scene import NeuralScene

__all__ = ["preview_image", "save_preview"]


def preview_image(scene: NeuralScene, width: int | None = None, height: int | None = None, *,
                  with_semantic: bool = False) -> np.ndarray:
    """``[2H, 4W, 3]`` uint8: the four preview views' RGB on top, inverse depth (1 m bright … far/none black) below;
    with `with_semantic` ``[3H, 4W, 3]``, the labels in CARLA's palette as a third row.

    The view size ``width`` × ``height`` (pixels) defaults to the decoder's training image size.

    Raises:
        ValueError: the scene has no decoder. SemanticsUnavailableError: `with_semantic` without a semantic head.
    """
    if scene.decoder is None:
        raise ValueError("the scene has no decoder to render the preview with")
    if with_semantic:
        require_semantic_head(getattr(scene.decoder, "semantic_head", None))
    h0, w0 = scene.decoder.config.image_size
    images = scene.render(preview_cameras(width or w0, height or h0))
    rgb = images.rgb.cpu().numpy()                                                    # [4, H, W, 3]
    inv = torch.where(torch.isfinite(images.depth), 1.0 / images.depth.clamp_min(1.0), torch.zeros_like(images.depth))
    gray = (inv.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()             # [4, H, W]
    top = np.concatenate(list(rgb), axis=1)                                          # [H, 4W, 3]
    bottom = np.repeat(np.concatenate(list(gray), axis=1)[..., None], 3, axis=-1)    # [H, 4W, 3]
    rows = [top, bottom]
    if with_semantic:
        rows.append(colorize_tags(np.concatenate(list(images.semantic.cpu().numpy()), axis=1)))   # [H, 4W, 3]
    return np.concatenate(rows, axis=0)


def save_preview(scene: NeuralScene, path: str | Path, *, with_semantic: bool = False) -> Path:
    """Write `preview_image` of `scene` (at the decoder's training image size; `with_semantic` adds the label row)
    as a PNG at `path` (its folder is created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, preview_image(scene, with_semantic=with_semantic))
    return path
