"""Which image sizes a model bundle renders well, and the one-time warning when a render departs from them.

The stage-1 decoder is a 2D CNN trained on images of one size: its bundle part records it as
``scene_ae/config.json`` ``image_size`` = ``(height, width)`` (`SceneAEConfig.image_size`; the model card states it
too, e.g. 64×64 for the shipped default model). The volume render itself works at any size, but the CNN sees the
rendered feature map at another scale when the image is much larger or smaller than that, and 2D convolutions
trained on square 64×64 views repeat their patterns across a wide one: renders far from the training size show
different content, edge artefacts, and for a 16:9 camera a row of repeated blobs.

Supported: each side within a factor `MAX_SIZE_RATIO` = 2 of the training size (``W/2 ≤ width ≤ 2·W`` and the
same for height; 32…128 px per side for a 64×64 model). Outside it a render still runs, and warns once per
decoder (that is, once per loaded bundle / `SceneGenerator`) with `RenderSizeWarning`. For bigger images, render
inside the range and resize the images.
"""
from __future__ import annotations

import warnings
import weakref

import torch

__all__ = ["MAX_SIZE_RATIO", "RenderSizeWarning", "training_image_size", "supported_size_range",
           "warn_if_unsupported_size"]

#: The largest factor by which a render's width or height may differ from the training size without a warning.
MAX_SIZE_RATIO = 2.0

# Decoders already warned about (weak: a decoder that is garbage-collected is forgotten with it).
_WARNED: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()


class RenderSizeWarning(UserWarning):
    """A render's image size departs from the decoder's training size by more than `MAX_SIZE_RATIO` in an axis."""


def training_image_size(decoder: torch.nn.Module) -> tuple[int, int] | None:
    """``(height, width)`` in pixels of the images the stage-1 decoder was trained on (``config.image_size``), or
    None for a decoder that does not record one."""
    size = getattr(getattr(decoder, "config", None), "image_size", None)
    if size is None:
        return None
    h, w = (int(v) for v in size)
    return h, w


def supported_size_range(decoder: torch.nn.Module) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """``((min_width, max_width), (min_height, max_height))`` in pixels rendered without a `RenderSizeWarning`
    (before rounding to the decoder's downsample factor), or None when the training size is unknown."""
    size = training_image_size(decoder)
    if size is None:
        return None
    h, w = size
    r = MAX_SIZE_RATIO
    return (int(-(-w // r)), int(w * r)), (int(-(-h // r)), int(h * r))


def warn_if_unsupported_size(decoder: torch.nn.Module, width: int, height: int, stacklevel: int = 3) -> bool:
    """Warn (`RenderSizeWarning`, once per `decoder`) when ``width × height`` departs from the decoder's training
    size by more than `MAX_SIZE_RATIO` in either axis. Returns True when the size is outside that range (warned
    now or before)."""
    size = training_image_size(decoder)
    if size is None:
        return False
    th, tw = size
    ratios = (width / tw, height / th)
    if all(1.0 / MAX_SIZE_RATIO <= r <= MAX_SIZE_RATIO for r in ratios):
        return False
    if decoder not in _WARNED:
        _WARNED.add(decoder)
        (lo_w, hi_w), (lo_h, hi_h) = supported_size_range(decoder)  # type: ignore[misc]
        warnings.warn(
            f"rendering {width}x{height} images with a decoder trained on {tw}x{th} (its bundle's "
            f"scene_ae/config.json image_size): beyond {MAX_SIZE_RATIO:g}x of the training size in an axis the 2D "
            f"decoder shows different content and edge artefacts (wide views repeat blobs). Render at widths "
            f"{lo_w}-{hi_w} and heights {lo_h}-{hi_h} px and resize the images, or train at the size you need. "
            "(Shown once per decoder.)", RenderSizeWarning, stacklevel=stacklevel)
    return True
