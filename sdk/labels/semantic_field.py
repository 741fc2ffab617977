"""The semantic field: class probabilities of a voxel field, rendered, per voxel and bird's-eye (functional core).

The model (docs/method.md, "Semantic field"). A linear head ``(W [K−1, C], b [K−1])`` on the feature grid gives every
point of the field logits over the K−1 *solid* classes (all but `SKY`): ``l(x) = W f(x) + b``. Along a camera ray
the logits are volume-rendered with the weights ``w_i`` of the features and normalised by the opacity, like depth:

    ``L = Σ_i w_i l_i / α = W (F / α) + b``,   ``F = Σ_i w_i f_i`` (the rendered feature map), ``α = Σ_i w_i``,

so the rendered label needs nothing but the feature map the decoder already gets. The class distribution of the
pixel mixes "the ray stopped in the field" (probability α, split by ``softmax(L)``) with "the ray left it" (the
background, `SKY`):

    ``p_k = α · softmax(L)_k`` for the solid classes,   ``p_sky = 1 − α``,

a proper distribution (``Σ p = 1``). A cross-entropy against captured tags therefore teaches both: the class of
surfaces, and emptiness wherever the capture saw sky (``−log(1 − α)`` on sky pixels).

Labels (`labels_from_probabilities`) follow the depth's hit rule, so RGB, depth and semantics of a pixel cannot
disagree: a pixel whose depth is ``inf`` (no hit, ``α < HIT_ALPHA``) is sky, every hit pixel takes its most likely
solid class; the confidence is that class's probability ``p_k`` (for sky ``1 − α``).

In 3D (`voxel_labels`) a voxel is labelled with the argmax of its logits where its own opacity across one voxel,
``1 − exp(−σ · mean voxel size)``, reaches `HIT_ALPHA`, else `UNOBSERVED` (empty). The bird's-eye map
(`field_bev`) composites every vertical column of the grid from the top down (one ray per ``(y, x)`` voxel column,
samples at the voxel centres, ``δ`` = the voxel height) and labels the column with the class of the surface that
ray meets (same normalised-logit rule), or `UNOBSERVED` where its opacity stays below `HIT_ALPHA`.
`refined_probabilities` sharpens rendered distributions at the image resolution with a 2D network's logit corrections
``Δ`` (the stage-1 label decoder, `nfldm_sdk.models.scene_ae.LabelDecoder`): the solid part becomes
``α · softmax(log q + Δ)`` with ``q = p_solid / α`` the field's solid-class distribution, and ``p_sky = 1 − α`` stays, so
the hit rule and ``Σ p = 1`` hold as before and ``Δ = 0`` gives the field's labels back.
`points_bev` is the same map made from labelled 3D points (a capture window unprojected to the scene frame): per
cell, the class of the highest point — the surface a top-down ray meets first.
"""
from __future__ import annotations

import torch

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.labels.classes import UNOBSERVED, SemanticClasses
from nfldm_sdk.rendering.rays import HIT_ALPHA

__all__ = ["class_indices_from_probabilities", "field_bev", "field_bev_probabilities", "labels_from_probabilities",
           "points_bev", "refined_probabilities", "semantic_probabilities", "solid_voxels", "voxel_labels", "voxel_logits"]

#: Opacity below which a ray's features are not divided by it (the normalised feature ``F / α`` of an empty ray is
#: meaningless, and its weight ``α`` in ``p`` is negligible anyway).
_MIN_ALPHA = 1e-4


def _solid_to_all(solid: torch.Tensor, sky: torch.Tensor, sky_index: int, dim: int) -> torch.Tensor:
    """Insert the sky entry ``sky`` at ``sky_index`` along ``dim`` of the solid-class tensor ``[..., K−1, ...]``."""
    before, after = solid.narrow(dim, 0, sky_index), solid.narrow(dim, sky_index, solid.shape[dim] - sky_index)
    return torch.cat([before, sky.unsqueeze(dim), after], dim)


def semantic_probabilities(features: torch.Tensor, alpha: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                           sky_index: int) -> torch.Tensor:
    """Per-pixel class distribution of rendered feature maps (module docstring).

    Args:
        features: ``[..., C, h, w]`` rendered features ``F = Σ w_i f_i``.
        alpha: ``[..., h, w]`` rendered opacity ``α`` in [0, 1].
        weight, bias: the semantic head, ``[K−1, C]`` and ``[K−1]`` (solid classes in class order, sky left out).
        sky_index: where the sky class sits in the class order.
    Returns:
        ``[..., K, h, w]`` probabilities (sum 1 over K), differentiable w.r.t. all inputs.
    """
    a = alpha.clamp(0.0, 1.0)
    mean_feature = features / a.clamp_min(_MIN_ALPHA).unsqueeze(-3)                   # [..., C, h, w]
    logits = torch.einsum("kc,...chw->...khw", weight, mean_feature) + bias[:, None, None]  # [..., K-1, h, w]
    solid = torch.softmax(logits, dim=-3) * a.unsqueeze(-3)
    return _solid_to_all(solid, 1.0 - a, sky_index, dim=-3)


def refined_probabilities(probs: torch.Tensor, correction: torch.Tensor, sky_index: int) -> torch.Tensor:
    """Rendered class distributions corrected by solid-class logit offsets (module docstring).

    Args:
        probs: ``[..., K, H, W]`` from `semantic_probabilities` (upsampled to the image if need be).
        correction: ``[..., K−1, H, W]`` logit offsets ``Δ`` of the solid classes (class order, sky left out).
        sky_index: where the sky class sits in the class order.
    Returns:
        ``[..., K, H, W]``: the sky entry of `probs` unchanged, the solid entries ``α · softmax(log q + Δ)``
        (``α = 1 − p_sky``, ``q = p_solid / α``); equal to `probs` where ``Δ = 0`` and ``α > 0``. Differentiable
        w.r.t. both inputs.
    """
    if correction.shape[-3] != probs.shape[-3] - 1 or correction.shape[-2:] != probs.shape[-2:]:
        raise ValueError(f"a correction of the solid classes of {tuple(probs.shape)} probabilities is "
                         f"[..., {probs.shape[-3] - 1}, H, W], got {tuple(correction.shape)}")
    sky = probs.narrow(-3, sky_index, 1)                                               # [..., 1, H, W]
    solid = torch.cat([probs.narrow(-3, 0, sky_index), probs.narrow(-3, sky_index + 1, probs.shape[-3] - sky_index - 1)],
                      dim=-3)                                                          # [..., K-1, H, W]
    alpha = (1.0 - sky).clamp(0.0, 1.0)
    # log q up to a per-pixel constant (softmax ignores it): log p_solid − log α
    log_q = torch.log(solid.clamp_min(1e-12))
    refined = torch.softmax(log_q + correction.to(log_q.dtype), dim=-3) * alpha
    return _solid_to_all(refined, sky.squeeze(-3), sky_index, dim=-3)


def class_indices_from_probabilities(probs: torch.Tensor, hit: torch.Tensor, sky_index: int
                                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Class indices and confidence of pixels by the label rule (module docstring): the most likely solid class
    where ``hit``, sky elsewhere.

    Args:
        probs: ``[..., K, H, W]`` from `semantic_probabilities`; hit: ``[..., H, W]`` bool; sky_index: the sky class.
    Returns:
        ``k [..., H, W]`` int64 indices into the class order and ``confidence [..., H, W]`` (probability of ``k``).
    """
    sky = sky_index
    solid = torch.cat([probs[..., :sky, :, :], probs[..., sky + 1:, :, :]], dim=-3)    # [..., K-1, H, W]
    p_best, k_best = solid.max(dim=-3)
    k_best = k_best + (k_best >= sky).to(k_best.dtype)                                 # back to the full class order
    k = torch.where(hit, k_best, torch.full_like(k_best, sky))
    return k, torch.where(hit, p_best, probs[..., sky, :, :])


def labels_from_probabilities(probs: torch.Tensor, hit: torch.Tensor, classes: SemanticClasses
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """CARLA tags and confidence of pixels from their class distribution and the depth's hit mask.

    Args:
        probs: ``[..., K, H, W]`` from `semantic_probabilities` (upsampled to the image if need be).
        hit: ``[..., H, W]`` bool, ``isfinite(depth)``.
        classes: the class set of the head.
    Returns:
        ``tags [..., H, W]`` uint8 (representative CARLA tags; sky where not ``hit``) and ``confidence [..., H, W]``
        float32, the probability of the chosen class.
    """
    k, confidence = class_indices_from_probabilities(probs, hit, classes.sky_index)
    lut = torch.as_tensor(classes.representative_tags, device=probs.device)
    return lut[k], confidence.float()


def _mean_voxel_size(field: VoxelField) -> torch.Tensor:
    """``[B?]`` mean edge length of a voxel, metres."""
    return field.voxel_size.mean(-1)


def voxel_logits(field: VoxelField, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The head's logits ``W f + b`` of every voxel, ``[B?, K−1, Z, Y, X]`` (solid classes), differentiable."""
    return (torch.einsum("kc,...czyx->...kzyx", weight.to(field.features.dtype), field.features)
            + bias.to(field.features.dtype)[:, None, None, None])


def solid_voxels(field: VoxelField) -> torch.Tensor:
    """``[B?, Z, Y, X]`` bool: voxels whose own opacity ``1 − exp(−σ · mean voxel size)`` reaches `HIT_ALPHA`."""
    size = _mean_voxel_size(field)
    if field.is_batched:
        size = size[:, None, None, None]
    return -torch.expm1(-field.density * size) >= HIT_ALPHA


def voxel_labels(field: VoxelField, weight: torch.Tensor, bias: torch.Tensor, classes: SemanticClasses
                 ) -> torch.Tensor:
    """Per-voxel CARLA tags ``[B?, Z, Y, X]`` uint8 of a field; `UNOBSERVED` where a voxel is empty (`solid_voxels`)."""
    k = voxel_logits(field, weight, bias).argmax(dim=-4)
    k = k + (k >= classes.sky_index).to(k.dtype)
    solid = solid_voxels(field)
    lut = torch.as_tensor(classes.representative_tags, device=k.device)
    return torch.where(solid, lut[k], torch.full_like(lut[k], UNOBSERVED))


def field_bev_probabilities(field: VoxelField, weight: torch.Tensor, bias: torch.Tensor, classes: SemanticClasses
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Class distribution of every top-down column ray (module docstring), differentiable w.r.t. the field.

    Args:
        field: a (batched) voxel field, features ``[B?, C, Z, Y, X]``, density ``[B?, Z, Y, X]`` (1/m).
        weight, bias: the semantic head, ``[K−1, C]`` and ``[K−1]``.
        classes: the head's class set.
    Returns:
        ``probs [B?, K, Y, X]`` (sum 1 over K; the sky entry is ``1 − α``) and the column opacity ``alpha [B?, Y, X]``.
    """
    dz = field.voxel_size[..., 2]                                                      # [B?]
    density = field.density.flip(-3)                                                   # top first: [B?, Z, Y, X]
    feats = field.features.flip(-3)                                                    # [B?, C, Z, Y, X]
    tau = density * (dz[:, None, None, None] if field.is_batched else dz)
    acc = torch.cumsum(tau, dim=-3)
    w = torch.exp(tau - acc) * -torch.expm1(-tau)                                      # [B?, Z, Y, X]
    alpha = w.sum(-3)                                                                  # [B?, Y, X]
    F = (feats * w.unsqueeze(-4)).sum(-3)                                              # [B?, C, Y, X]
    probs = semantic_probabilities(F, alpha, weight.to(F.dtype), bias.to(F.dtype), classes.sky_index)
    return probs, alpha


def field_bev(field: VoxelField, weight: torch.Tensor, bias: torch.Tensor, classes: SemanticClasses
              ) -> torch.Tensor:
    """Bird's-eye map ``[B?, Y, X]`` uint8 of CARLA tags: per grid column, the class of the surface a top-down
    ray meets (module docstring), `UNOBSERVED` where that ray's opacity stays below `HIT_ALPHA`."""
    probs, alpha = field_bev_probabilities(field, weight, bias, classes)
    tags, _ = labels_from_probabilities(probs, alpha >= HIT_ALPHA, classes)
    sky_tag = int(classes.representative_tags[classes.sky_index])
    return torch.where(tags == sky_tag, torch.full_like(tags, UNOBSERVED), tags)


def points_bev(points: torch.Tensor, tags: torch.Tensor, bounds: torch.Tensor, grid_yx: tuple[int, int],
               classes: SemanticClasses) -> torch.Tensor:
    """Bird's-eye map ``[Y, X]`` uint8 of labelled points: per cell, the (representative) tag of the highest point
    inside the box, `UNOBSERVED` where no point falls.

    Args:
        points: ``[P, 3]`` (x, y, z) in the scene frame, metres (non-finite rows are ignored).
        tags: ``[P]`` CARLA tags (uint8) of the points; sky points are ignored.
        bounds: ``[2, 3]`` the box (min, max), metres; cells split its x/y extent into ``grid_yx`` ``(Y, X)``.
        grid_yx: ``(Y, X)`` cells (the grid's, i.e. the fine latent's, resolution).
        classes: the class set (tags are grouped and written as representative tags).
    """
    Y, X = grid_yx
    bounds = bounds.to(points.device, torch.float64)
    p = points.to(torch.float64)
    cls = torch.as_tensor(classes.tag_to_class, device=points.device)[tags.long()]     # [P]
    inside = torch.isfinite(p).all(-1) & (p >= bounds[0]).all(-1) & (p < bounds[1]).all(-1)
    inside &= (cls >= 0) & (cls != classes.sky_index)
    p, cls = p[inside], cls[inside]
    size = (bounds[1] - bounds[0]) / torch.tensor([X, Y, 1.0], dtype=torch.float64, device=p.device)
    ij = ((p[:, :2] - bounds[0, :2]) / size[:2]).floor().long()                        # [P', 2] (ix, iy)
    ix, iy = ij[:, 0].clamp(0, X - 1), ij[:, 1].clamp(0, Y - 1)
    cell = iy * X + ix
    # the highest point of each cell; among points at exactly that height the largest class index (deterministic)
    best_z = torch.full((Y * X,), -torch.inf, dtype=torch.float64, device=p.device)
    best_z.scatter_reduce_(0, cell, p[:, 2], reduce="amax")
    top = p[:, 2] >= best_z[cell]
    out = torch.full((Y * X,), -1, dtype=torch.long, device=p.device)
    out.scatter_reduce_(0, cell[top], cls[top], reduce="amax")
    lut = torch.as_tensor(classes.to_tags(torch.arange(-1, classes.num_classes).numpy()), device=p.device)
    return lut[out + 1].reshape(Y, X)
