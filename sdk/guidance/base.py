"""What score distillation needs from an image diffusion model (docs/method.md, stage 4): the interface, the
guidance formulas, the image pre-processing the implementations share, and conditions on disk.

The interface (`GuidanceModel`) is what `nfldm_sdk.guidance.sds` needs from a 2D diffusion model:

* ``encode(images)`` — renders ``[B, 3, H, W]`` in [0, 1] -> the model's clean sample ``x_0`` (a VAE latent for a
  latent diffusion model, the image in [-1, 1] for a pixel model); differentiable, since the SDS gradient flows
  back through it into the voxel field;
* ``predict_noise(x_t, t, cond)`` — the noise ``ε̂(x_t; t, cond)`` of the forward process
  ``x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε`` (v-prediction models convert: ``ε = √ᾱ_t v + √(1−ᾱ_t) x_t``);
* the conditions: ``dataset_condition`` y (looks like the captured data), ``artifact_condition`` y′ (looks like raw
  model samples, artifacts included) and ``null_condition`` ∅ (the unconditional model).

Negative guidance — what the formula realises, exactly
------------------------------------------------------
Classifier-free guidance with scale s, condition c and "unconditional" branch u computes

    ε̂ = ε(x_t | u) + s · (ε(x_t | c) − ε(x_t | u)) = s · ε(x_t | c) + (1 − s) · ε(x_t | u).

The noise prediction is a scaled score, ``ε(x_t | c) = −σ_t ∇ log p_t(x_t | c)`` with ``σ_t = √(1−ᾱ_t)``, and the
score of a product of powers of densities is the same combination of their scores, so

    ε̂ = −σ_t ∇ log [ p_t(x_t | c)^s · p_t(x_t | u)^(1−s) ] = −σ_t ∇ log [ p_t(x_t | c)^s / p_t(x_t | u)^(s−1) ].

`negative_guidance_eps` is this formula with c = y (dataset) and u = y′ (artifact), s = α: it realises the
target ``p(x|y)^α / p(x|y′)^(α−1)``, whose exponents sum to one (α + (1 − α) = 1). The paper writes
``p(x|y)^α / p(x|y′)`` but describes the operation as "classifier-free guidance with condition y and the
unconditional embedding replaced by y′" — the formula above. The literal ``p^α / p′`` (score ``α ∇log p_y − ∇log
p_y′``) has exponents summing to α − 1: at α = 1 it would cancel the data term altogether, and its ε̂ is not a
noise estimate of unit scale. We implement the operational description; α = 1 gives plain conditional SDS with y,
α > 1 moves away from y′. Plain CFG (`cfg_eps`, u = ∅) realises ``p(x|y)^s · p(x)^(1−s)`` — the comparison
baseline. ``tests/sdk/guidance/test_sds.py`` checks the formula against autograd scores of Gaussians.

Implementations
---------------
* `nfldm_sdk.guidance.clip_ldm.ClipImageLDMGuidance` — the paper's recipe: a latent diffusion image-variation
  model conditioned on CLIP image embeddings, read from a local folder, its embeddings computed with open_clip
  from a local checkpoint (`nfldm_sdk.guidance.open_clip_encoder`; never downloaded).
* `nfldm_sdk.guidance.prior.PriorGuidance` — our offline pixel-space prior
  (`nfldm_sdk.models.prior_unet.PriorUNet`) trained by ``nfldm train prior``, optionally a model bundle's
  ``prior/`` part.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from nfldm_sdk.errors import NfldmError

__all__ = ["GuidanceModel", "GuidanceNotAvailable", "negative_guidance_eps", "cfg_eps", "guided_noise",
           "eps_from_prediction", "expand_condition", "check_images", "resize_images", "images_to_model_range",
           "load_conditions", "save_conditions"]


class GuidanceNotAvailable(NfldmError, FileNotFoundError):
    """A guidance model's weights are not on this machine; the message names what to download and where."""


# ============================================================================================ interface
@runtime_checkable
class GuidanceModel(Protocol):
    """What score distillation needs from a 2D diffusion model (see the module docstring).

    Attributes:
        num_train_timesteps: T; timesteps are integers ``0 … T−1``.
        alphas_cumprod: ``[T]`` float, ``ᾱ_t`` of the model's forward process.
        image_size: ``(H, W)`` pixels the model works at; renders are resized to it by `encode`.
        dataset_condition: y, an unbatched condition (``[D]`` embedding, or a 0-d class index).
        artifact_condition: y′, same kind as y.
        null_condition: ∅, same kind as y.
    """

    num_train_timesteps: int
    alphas_cumprod: torch.Tensor
    image_size: tuple[int, int]
    dataset_condition: torch.Tensor
    artifact_condition: torch.Tensor
    null_condition: torch.Tensor

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` RGB in [0, 1] (any size) -> clean samples ``x_0 [B, c, h, w]``; differentiable."""
        ...

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``x_t [B, c, h, w]``, ``t [B]`` int64, ``cond [B, ...]`` (batched conditions) -> ``ε̂ [B, c, h, w]``."""
        ...


def negative_guidance_eps(eps_y: torch.Tensor, eps_yprime: torch.Tensor, alpha: float) -> torch.Tensor:
    """Negative guidance: ``ε̂ = ε(x|y′) + α (ε(x|y) − ε(x|y′))``.

    It is the noise estimate of ``p(x|y)^α / p(x|y′)^(α−1)`` (module docstring: the score of a product of powers is
    the weighted sum of scores, ``ε = −σ_t · score``): α = 1 is plain conditional guidance with y, α > 1 pushes
    away from y′.

    Args:
        eps_y: ``[B, ...]`` ε̂ with the dataset condition y.
        eps_yprime: ``[B, ...]`` ε̂ with the artifact condition y′.
        alpha: α ≥ 0.
    """
    return cfg_eps(eps_y, eps_yprime, alpha)


def cfg_eps(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``ε̂ = ε_u + s (ε_c − ε_u)``, the noise estimate of ``p(x|c)^s · p(x|u)^(1−s)``.

    Args:
        eps_cond, eps_uncond: ``[B, ...]`` ε̂ with the condition and with the unconditional (null) branch.
        scale: s (1 = conditional only, 0 = unconditional only).
    """
    return eps_uncond + float(scale) * (eps_cond - eps_uncond)


def expand_condition(cond: torch.Tensor, batch: int) -> torch.Tensor:
    """An unbatched condition (``[D]`` embedding or 0-d class index) repeated for a batch: ``[batch, D]`` / ``[batch]``."""
    return cond.unsqueeze(0).expand(batch, *cond.shape)


@torch.no_grad()
def guided_noise(model: GuidanceModel, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                 negative: torch.Tensor | None, scale: float) -> torch.Tensor:
    """``ε̂`` with guidance: `cfg_eps` of the model's predictions with `cond` and with `negative` (one batched call).

    Args:
        model: a `GuidanceModel`.
        x_t: ``[B, c, h, w]`` noisy samples; t: ``[B]`` int64 timesteps.
        cond: unbatched condition (e.g. ``model.dataset_condition``).
        negative: unbatched condition of the other branch (``model.artifact_condition`` for negative guidance,
            ``model.null_condition`` for plain CFG); ignored when ``scale == 1`` (the branch has weight 0).
        scale: α (or s).
    Returns:
        ``[B, c, h, w]`` ε̂.
    """
    B = x_t.shape[0]
    if negative is None or float(scale) == 1.0:
        return model.predict_noise(x_t, t, expand_condition(cond, B))
    conds = torch.cat([expand_condition(cond, B), expand_condition(negative.to(cond), B)])
    eps = model.predict_noise(torch.cat([x_t, x_t]), torch.cat([t, t]), conds)
    return cfg_eps(eps[:B], eps[B:], scale)


def eps_from_prediction(prediction: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor,
                        prediction_type: str) -> torch.Tensor:
    """Convert a model output to ε.

    Args:
        prediction: ``[B, ...]`` what the model predicts.
        x_t: ``[B, ...]`` its input.
        alpha_bar: ``[B]`` ᾱ_t of each sample.
        prediction_type: ``"epsilon"`` (returned as is), ``"v_prediction"`` (``ε = √ᾱ v + √(1−ᾱ) x_t``, from
            ``v = √ᾱ ε − √(1−ᾱ) x_0`` and ``x_t = √ᾱ x_0 + √(1−ᾱ) ε``) or ``"sample"`` (``ε = (x_t − √ᾱ x̂_0) / √(1−ᾱ)``).
    """
    a = alpha_bar.to(prediction.dtype).reshape(-1, *[1] * (prediction.dim() - 1))
    if prediction_type == "epsilon":
        return prediction
    if prediction_type == "v_prediction":
        return a.sqrt() * prediction + (1.0 - a).sqrt() * x_t
    if prediction_type == "sample":
        return (x_t - a.sqrt() * prediction) / (1.0 - a).sqrt()
    raise ValueError(f"unknown prediction_type {prediction_type!r}: epsilon, v_prediction or sample")


def check_images(images: torch.Tensor) -> None:
    """Raise a ``ValueError`` unless `images` is a ``[B, 3, H, W]`` batch of RGB renders (values in [0, 1])."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W] RGB in [0, 1], got {tuple(images.shape)}")


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, 3, H, W]`` -> ``[B, 3, *size]`` (bilinear, antialiased when shrinking; differentiable; unchanged when
    already of that size)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrink = images.shape[-2] > size[0] or images.shape[-1] > size[1]
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink)


def images_to_model_range(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Renders ``[B, 3, H, W]`` in [0, 1] (checked by `check_images`) -> ``[B, 3, *size]`` in [-1, 1]
    (`resize_images`, then ``2·x − 1``): the input range of image diffusion models and their VAEs."""
    check_images(images)
    return resize_images(images, size) * 2.0 - 1.0


# ============================================================================================ conditions on disk
def save_conditions(path: str | Path, dataset: torch.Tensor, artifact: torch.Tensor) -> Path:
    """Write y (``dataset``) and y′ (``artifact``) embeddings ``[D]`` to one ``.safetensors`` file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"dataset": dataset.detach().float().cpu().contiguous(), "artifact": artifact.detach().float().cpu().contiguous()},
              str(path), metadata={"format": "nfldm.guidance_conditions"})
    return path


def load_conditions(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read ``(dataset, artifact)`` embeddings written by `save_conditions`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"guidance conditions {path} not found (written by save_conditions / `nfldm refine "
                                "--save-conditions`)")
    t = load_file(str(path))
    missing = {"dataset", "artifact"} - set(t)
    if missing:
        raise ValueError(f"{path} lacks {sorted(missing)}: not a guidance-conditions file")
    return t["dataset"], t["artifact"]
