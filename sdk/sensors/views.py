"""The one decode-and-quantise step: views of a voxel field through the stage-1 decoder, as `SceneImages`.

`NeuralScene.render` and the sensors' batched renderer (`nfldm_sdk.sensors.renderer`) both decode through
`decode_views`, so a pixel is quantised one way everywhere: ``rgb = round(255 · clamp(decoder rgb, 0, 1))`` as uint8,
depth planar z in metres with ``inf`` where the accumulated opacity stayed below
`nfldm_sdk.rendering.api.HIT_ALPHA`, alpha in [0, 1]. A decoder with a semantic head (``decoder.semantic_head``) also
labels every pixel by the depth's hit rule (`nfldm_sdk.labels.semantic_field.labels_from_probabilities` with ``hit =
isfinite(depth)``): sky (CARLA tag 11) exactly where depth is ``inf``, else the most likely solid class, written as its
representative CARLA tag; a decoder without one gives no labels (None), never made-up ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.labels.semantic_field import labels_from_probabilities
from nfldm_sdk.models.scene_ae import SceneRender
from nfldm_sdk.rendering.api import HIT_ALPHA

__all__ = ["SceneImages", "decode_views", "images_from_render", "ray_length_per_depth"]


@dataclass(eq=False)
class SceneImages:
    """Renders of one scene from N cameras (on the render device).

    Attributes:
        rgb: ``[N, H, W, 3]`` uint8 RGB (the project's image convention; ``round(255 · decoder output)``).
        depth: ``[N, H, W]`` float32 planar z-depth in metres; ``inf`` where the ray met nothing (valid = isfinite).
        alpha: ``[N, H, W]`` float32 accumulated opacity in [0, 1].
        range: ``[N, H, W]`` float32 ray length from the camera centre in metres (``inf`` for no hit), or None when
            not requested (``decode_views(..., with_range=True)``).
        semantic: ``[N, H, W]`` uint8 CARLA semantic tags (representative tag of each class; sky = 11 exactly where
            depth is ``inf``), or None when the decoder has no semantic head.
        semantic_confidence: ``[N, H, W]`` float32 in [0, 1], the probability of the chosen class (for sky
            ``1 − alpha``), or None with `semantic`.
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    alpha: torch.Tensor
    range: torch.Tensor | None = None
    semantic: torch.Tensor | None = None
    semantic_confidence: torch.Tensor | None = None

    @staticmethod
    def cat(parts: Sequence["SceneImages"]) -> "SceneImages":
        """The views of `parts` one after the other (``[sum N_i, ...]``); all parts have a range (labels) or none
        has."""
        def cat(name: str) -> torch.Tensor | None:
            return None if getattr(parts[0], name) is None else torch.cat([getattr(p, name) for p in parts])

        return SceneImages(cat("rgb"), cat("depth"), cat("alpha"), cat("range"), cat("semantic"),
                           cat("semantic_confidence"))

    def __getitem__(self, index) -> "SceneImages":
        """Views `index` (an int, slice or index tensor over N) of every image."""
        def pick(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[index]

        return SceneImages(self.rgb[index], self.depth[index], self.alpha[index], pick(self.range),
                           pick(self.semantic), pick(self.semantic_confidence))

    @property
    def has_semantics(self) -> bool:
        """Whether the views carry labels (the decoder had a semantic head)."""
        return self.semantic is not None


def ray_length_per_depth(cameras: Cameras) -> torch.Tensor:
    """``[V, H, W]`` ray length per metre of planar depth, ``1 / cos θ`` = the norm of the pixel's camera-frame ray
    direction with z = 1 (`Cameras.camera_directions`: ``K^-1 (u, v, 1)`` for a pinhole, the camera model's
    unprojection for a fisheye) of flattened cameras ``[V]``: a pixel at planar depth z lies at ray distance
    ``z ·`` this (metres per metre)."""
    return cameras.camera_directions().norm(dim=-1)                                   # [V, H, W]


@torch.no_grad()
def decode_views(decoder: torch.nn.Module, field: VoxelField, cameras: Cameras, *,
                 with_range: bool = False) -> SceneImages:
    """Decode one scene from `cameras` in one decoder call and quantise the result (module docstring).

    Args:
        decoder: a `SceneAutoEncoder` (anything with ``decode(field [1], cameras [1, n], *, min_hit_alpha) ->
            SceneRender``), in eval mode, on the device of `field` and `cameras`.
        field: the scene as a batch of one (``VoxelField.stack([field])``, float32); an unbatched field is stacked.
        cameras: flattened ``[n]`` `Cameras` (float32, on the decoder's device); ``width``/``height`` divisible by
            the decoder's downsample factor.
        with_range: also return the ray length (``depth · |K^-1 (u, v, 1)|``, ``inf`` stays ``inf``).
    Returns:
        `SceneImages` with rgb ``[n, H, W, 3]`` uint8, depth/alpha ``[n, H, W]`` float32, range (or None), and with
        a semantic head semantic ``[n, H, W]`` uint8 CARLA tags and semantic_confidence ``[n, H, W]`` float32
        (module docstring; None without a head).
    """
    if not field.is_batched:
        field = VoxelField.stack([field])
    n = cameras.batch_shape[0]
    out = decoder.decode(field, cameras.reshape(1, n), min_hit_alpha=HIT_ALPHA)          # rgb [1, n, 3, H, W]
    first = {k: None if getattr(out, k, None) is None else getattr(out, k)[0] for k in ("features", "semantic")}
    one = SceneRender(rgb=out.rgb[0], depth=out.depth[0], alpha=out.alpha[0], **first)
    return images_from_render(one, cameras, getattr(decoder, "semantic_head", None), with_range=with_range)


def images_from_render(render: SceneRender, cameras: Cameras, head: torch.nn.Module | None = None, *,
                       with_range: bool = False) -> SceneImages:
    """Quantise a decoded render of n views into `SceneImages` (module docstring): the step of `decode_views` after
    the decoder, shared by every renderer whose output is a `SceneRender` (e.g. a route's composite,
    `nfldm_sdk.routes.composite.render_route`).

    Args:
        render: `SceneRender` of n views without a scene axis: rgb ``[n, 3, H, W]`` in [0, 1], depth/alpha
            ``[n, H, W]`` (depth ``inf`` where alpha stayed below `HIT_ALPHA`), semantic ``[n, K, H, W]`` or None.
        cameras: the flattened ``[n]`` `Cameras` it was rendered from (for the range).
        head: the decoder's semantic head (None: no labels, whatever ``render.semantic`` holds).
        with_range: also return the ray length (``depth · |K^-1 (u, v, 1)|``, ``inf`` stays ``inf``).
    Returns:
        `SceneImages` as `decode_views` returns them.
    """
    rgb = (render.rgb.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1)     # [n, H, W, 3]
    depth = render.depth.float()                                                         # [n, H, W]
    rng = depth * ray_length_per_depth(cameras).float() if with_range else None          # inf stays inf
    tags = confidence = None
    if head is not None and render.semantic is not None:
        tags, confidence = labels_from_probabilities(render.semantic, torch.isfinite(depth), head.classes)
    return SceneImages(rgb.contiguous(), depth, render.alpha.float(), rng, tags, confidence)
