"""Post-optimisation of generated scenes by score distillation (SDS) with negative guidance (docs/method.md, stage 4).

One step, for every scene of the (batched) field V:

1. cameras κ: ``views_per_step`` horizontal cameras at ``eye_height`` (1.6 m, the capture rig's height), their
   ground position uniform in a square of ``area_m2`` (6 m², i.e. √6 × √6 m) centred on the scene origin, their
   yaw (rotation about the vertical z axis) uniform in [0, 2π) (`sample_sds_cameras`; scene frame x forward,
   y left, z up);
2. render ``r(V, κ)`` with the stage-1 decoder (differentiable in V) at ``render_size`` (default: the decoder's
   training image size), encode it to the guidance model's sample ``x_0`` (a VAE latent or the image itself);
3. ``t ~ U{⌈0.02 T⌉, …, ⌊0.2 T⌋}``, ``ε ~ N(0, I)``, ``x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε``;
4. ε̂ with guidance scale α: ``ε̂ = ε(x_t|y′) + α (ε(x_t|y) − ε(x_t|y′))`` — negative guidance with y = dataset,
   y′ = artifact condition (``negative="artifact"``; the noise estimate of ``p(x|y)^α / p(x|y′)^(α−1)``, see
   `nfldm_sdk.guidance.base`), or plain CFG with the null condition (``negative="null"``);
5. the SDS gradient ``g = w(t) (ε̂ − ε)`` is applied as the gradient of ``x_0`` (the U-Net Jacobian is dropped, as
   in DreamFusion) and back-propagated through the encoder and the renderer into density and features:
   ``torch.autograd.grad(x_0, [σ, f], grad_outputs=g / N)`` with N = views in the step (per-view mean; the
   decoder's and guidance model's weights collect no gradient and stay untouched);
6. one Adam step on density and features. Density is kept ≥ 0 by **projection** (``clamp_(min=0)`` after each
   step) rather than a softplus parameterisation: empty space (σ = 0, common in generated fields) would sit where
   softplus has a vanishing gradient and could never become occupied.

Weighting: ``w(t) = 1 − ᾱ_t = σ_t²`` (DreamFusion's choice; ``weighting="one"`` gives w = 1).

Non-finite gradients (a NaN/inf anywhere in the field's gradient) are never zeroed silently: the step is skipped
(no Adam update), counted in `RefineResult.nonfinite_steps` with its index in ``nonfinite_step_indices``, and a
warning is issued at the end.

Determinism: cameras, timesteps and noise come from one CPU ``torch.Generator`` seeded with ``seed`` (drawn on the
CPU, moved to the device), so one seed gives the same bytes on one device.

Example::

    guidance = PriorGuidance.from_bundle("assets/models/small")
    result = refine_scene(scene, scene.decoder, guidance, steps=500, alpha=3.0, seed=0)
    refined = result.field                          # VoxelField, same batching as the input
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from nfldm_sdk.cameras.builders import sample_sds_cameras
from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.guidance.base import GuidanceModel, guided_noise

__all__ = ["RefineConfig", "RefineHistory", "RefineResult", "FieldDecoder", "refine_scene",
           "sds_weight", "sds_gradient", "WEIGHTINGS", "NEGATIVES"]

WEIGHTINGS = ("sigma2", "one")
NEGATIVES = ("artifact", "null")


class FieldDecoder(Protocol):
    """The renderer ``r(V, κ)``: `nfldm_sdk.models.scene_ae.SceneAutoEncoder` or anything with the same ``decode``."""

    def decode(self, field: VoxelField, cameras: Cameras) -> Any:
        """Batched field ``[B]`` and cameras ``[B, R]`` -> an object with ``rgb [B, R, 3, H, W]`` in [0, 1]."""
        ...


@dataclass
class RefineConfig:
    """Settings of `refine_scene` (the paper gives only the camera area and the t range; the rest is ours)."""

    steps: int = 500
    """Optimisation steps."""
    lr: float = 1e-2
    """Adam learning rate of the feature grid."""
    density_lr: float | None = None
    """Adam learning rate of the density grid (1/m per step); None = `lr`."""
    views_per_step: int = 2
    """Cameras rendered per scene and step."""
    alpha: float = 3.0
    """Guidance scale α: ``ε̂ = ε(y′) + α (ε(y) − ε(y′))``. 1 = conditional SDS with y only; larger trades more of
    the dataset look against artifacts (too large over-saturates, as with any CFG scale). 3 is our default."""
    negative: str = "artifact"
    """The other branch of the guidance: ``"artifact"`` (negative guidance with y′, the paper) or ``"null"``
    (plain classifier-free guidance with the unconditional model, for comparison)."""
    t_range: tuple[float, float] = (0.02, 0.2)
    """Timesteps are drawn uniformly from ``[t_range[0]·T, t_range[1]·T]`` (the paper's U[0.02T, 0.2T])."""
    weighting: str = "sigma2"
    """``w(t)``: ``"sigma2"`` = ``1 − ᾱ_t`` (DreamFusion), ``"one"`` = 1."""
    area_m2: float = 6.0
    """Camera positions are uniform in a square of this area (m²) around the scene origin (the paper's 6 m²)."""
    eye_height: float = 1.6
    """Camera height above the scene origin (metres; the capture rig's 1.6 m)."""
    hfov_deg: float = 90.0
    """Horizontal field of view of the SDS cameras (the capture rig's 90°)."""
    render_size: tuple[int, int] | None = None
    """``(H, W)`` of the renders; None = the decoder's ``config.image_size``. The guidance model resizes them."""
    log_every: int = 50
    """Steps between progress-bar updates of the logged numbers (every step is recorded in the history)."""

    def __post_init__(self):
        if int(self.steps) < 0 or int(self.views_per_step) < 1:
            raise ValueError(f"need steps >= 0 and views_per_step >= 1, got {self.steps}, {self.views_per_step}")
        if not (0.0 <= self.t_range[0] <= self.t_range[1] <= 1.0):
            raise ValueError(f"t_range must satisfy 0 <= lo <= hi <= 1 (fractions of T), got {self.t_range}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {self.weighting!r}: one of {WEIGHTINGS}")
        if self.negative not in NEGATIVES:
            raise ValueError(f"unknown negative {self.negative!r}: one of {NEGATIVES}")
        if self.alpha < 0 or self.lr <= 0 or self.area_m2 < 0:
            raise ValueError(f"need alpha >= 0, lr > 0, area_m2 >= 0; got {self.alpha}, {self.lr}, {self.area_m2}")


@dataclass
class RefineHistory:
    """Per-step log of `refine_scene` (one entry per step, skipped steps included).

    Attributes:
        loss: mean over latent elements of ``w(t) (ε̂ − ε)²`` — the weighted denoising residual SDS reduces.
        latent_grad_norm: L2 norm of the SDS gradient ``w (ε̂ − ε) / N`` on the encoded renders.
        density_grad_norm, feature_grad_norm: L2 norms of the field's gradient (NaN/inf when non-finite).
        t_mean: mean timestep of the step's views.
        finite: whether the step's gradient was finite (False = the step was skipped).
    """

    loss: list[float] = field(default_factory=list)
    latent_grad_norm: list[float] = field(default_factory=list)
    density_grad_norm: list[float] = field(default_factory=list)
    feature_grad_norm: list[float] = field(default_factory=list)
    t_mean: list[float] = field(default_factory=list)
    finite: list[bool] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(eq=False)
class RefineResult:
    """What `refine_scene` returns.

    Attributes:
        field: the refined `VoxelField` (detached; batched iff the input was).
        history: per-step `RefineHistory`.
        nonfinite_steps: steps skipped because the gradient was not finite (a warning was issued when > 0).
        nonfinite_step_indices: their indices.
        seconds: wall time.
        config: the settings used.
    """

    field: VoxelField
    history: RefineHistory
    nonfinite_steps: int
    nonfinite_step_indices: list[int]
    seconds: float
    config: RefineConfig


# ============================================================================================ the SDS gradient
def sds_weight(alpha_bar: torch.Tensor, weighting: str) -> torch.Tensor:
    """``w(t)`` of ``alpha_bar [N]``: ``1 − ᾱ_t`` (``"sigma2"``) or 1 (``"one"``)."""
    if weighting == "sigma2":
        return 1.0 - alpha_bar
    if weighting == "one":
        return torch.ones_like(alpha_bar)
    raise ValueError(f"unknown weighting {weighting!r}: one of {WEIGHTINGS}")


def sds_gradient(guidance: GuidanceModel, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, *, alpha: float,
                 negative: str = "artifact", weighting: str = "sigma2") -> tuple[torch.Tensor, torch.Tensor]:
    """The SDS gradient on clean samples ``x0 [N, c, h, w]`` for timesteps ``t [N]`` and noise ``noise [N, c, h, w]``.

    Returns:
        ``g = w(t) (ε̂ − ε)`` ``[N, c, h, w]`` (no graph) and the per-element loss ``w (ε̂ − ε)²`` mean (scalar).
    """
    a = guidance.alphas_cumprod.to(x0.device)[t].to(x0.dtype)             # [N]
    a4 = a.reshape(-1, *[1] * (x0.dim() - 1))
    with torch.no_grad():
        x_t = a4.sqrt() * x0.detach() + (1.0 - a4).sqrt() * noise
        other = None                                                      # α = 1: the other branch has weight 0
        if float(alpha) != 1.0:
            other = guidance.artifact_condition if negative == "artifact" else guidance.null_condition
        eps_hat = guided_noise(guidance, x_t, t, guidance.dataset_condition, other, alpha)
        w = sds_weight(a, weighting).reshape_as(a4)
        residual = eps_hat.to(x0.dtype) - noise
        return w * residual, (w * residual.square()).mean()


# ============================================================================================ the loop
def _config(config: RefineConfig | None, overrides: dict) -> RefineConfig:
    cfg = config or RefineConfig()
    given = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(cfg, **given) if given else cfg


@torch.enable_grad()  # SDS needs the render's graph even when called under no_grad (e.g. from SceneGenerator.generate)
def refine_scene(scene_or_field, decoder: FieldDecoder | None, guidance: GuidanceModel, config: RefineConfig | None = None,
                 *, steps: int | None = None, lr: float | None = None, views_per_step: int | None = None,
                 alpha: float | None = None, negative: str | None = None, seed: int = 0, progress: bool = True,
                 log_every: int | None = None) -> RefineResult:
    """Refine voxel field(s) by score distillation with negative guidance (module docstring).

    Args:
        scene_or_field: a `VoxelField` (unbatched ``[Z,Y,X]`` or batched ``[B,Z,Y,X]``) or a `NeuralScene`
            (its ``field``; its ``decoder`` when `decoder` is None). Not modified.
        decoder: the stage-1 renderer (`SceneAutoEncoder`), or None to use the scene's. Its weights are not changed.
        guidance: a `nfldm_sdk.guidance.base.GuidanceModel` (`PriorGuidance`, `ClipImageLDMGuidance`) on the field's
            device.
        config: all settings (`RefineConfig`); the keyword arguments below override its fields when given.
        steps, lr, views_per_step, alpha, negative, log_every: overrides of the `RefineConfig` fields.
        seed: seeds the CPU generator of cameras, timesteps and noise.
        progress: show a tqdm progress bar.
    Returns:
        `RefineResult` (refined field, history, count of skipped non-finite steps, seconds, config).
    """
    start = time.perf_counter()
    cfg = _config(config, dict(steps=steps, lr=lr, views_per_step=views_per_step, alpha=alpha, negative=negative,
                               log_every=log_every))
    field_in = getattr(scene_or_field, "field", scene_or_field)
    if decoder is None:
        decoder = getattr(scene_or_field, "decoder", None)
    if not isinstance(field_in, VoxelField):
        raise TypeError(f"refine_scene takes a VoxelField or a NeuralScene, got {type(scene_or_field).__name__}")
    if decoder is None:
        raise ValueError("no decoder: pass the stage-1 SceneAutoEncoder (e.g. load_part(BUNDLE, 'scene_ae'))")
    batched = field_in.is_batched
    fld = field_in if batched else VoxelField.stack([field_in])
    if cfg.render_size is not None:
        H, W = (int(v) for v in cfg.render_size)
    else:
        dcfg = getattr(decoder, "config", None)
        if dcfg is None or not hasattr(dcfg, "image_size"):
            raise ValueError("the decoder has no config.image_size: set RefineConfig.render_size")
        H, W = (int(v) for v in dcfg.image_size)
    B, V = fld.batch_size, int(cfg.views_per_step)
    T = int(guidance.num_train_timesteps)
    t_lo, t_hi = max(0, math.ceil(cfg.t_range[0] * T)), min(T - 1, math.floor(cfg.t_range[1] * T))
    if t_hi < t_lo:
        raise ValueError(f"t_range {cfg.t_range} holds no integer timestep of T={T}")

    density = fld.density.detach().clone().requires_grad_(True)          # [B, Z, Y, X], σ ≥ 0 (projected)
    features = fld.features.detach().clone().requires_grad_(True)        # [B, C, Z, Y, X]
    bounds = fld.bounds.detach()
    opt = torch.optim.Adam([{"params": [density], "lr": float(cfg.density_lr or cfg.lr)},
                            {"params": [features], "lr": float(cfg.lr)}])
    gen = torch.Generator("cpu").manual_seed(int(seed))
    history, bad = RefineHistory(), []
    device = density.device

    steps_iter = range(int(cfg.steps))
    bar = None
    if progress:
        from tqdm.auto import tqdm  # start-up time: tqdm only when a bar is asked for

        steps_iter = bar = tqdm(steps_iter, desc="SDS refine", unit="step")
    for step in steps_iter:
        cams = sample_sds_cameras((B, V), W, H, gen, area_m2=cfg.area_m2, eye_height=cfg.eye_height,
                                  hfov_deg=cfg.hfov_deg).to(device=device)
        render = decoder.decode(VoxelField(density, features, bounds), cams)
        images = render.rgb.flatten(0, 1)                                 # [N=B*V, 3, H, W]
        x0 = guidance.encode(images)                                      # [N, c, h, w], differentiable
        N = x0.shape[0]
        t = torch.randint(t_lo, t_hi + 1, (N,), generator=gen).to(device)
        noise = torch.randn(x0.shape, generator=gen, dtype=torch.float32).to(device=device, dtype=x0.dtype)
        g, loss = sds_gradient(guidance, x0, t, noise, alpha=cfg.alpha, negative=cfg.negative, weighting=cfg.weighting)
        g = g / N
        g_density, g_features = torch.autograd.grad(x0, [density, features], grad_outputs=g, allow_unused=True)
        g_density = torch.zeros_like(density) if g_density is None else g_density
        g_features = torch.zeros_like(features) if g_features is None else g_features
        finite = bool(torch.isfinite(g_density).all()) and bool(torch.isfinite(g_features).all())
        history.loss.append(float(loss))
        history.latent_grad_norm.append(float(g.norm()))
        history.density_grad_norm.append(float(g_density.norm()))
        history.feature_grad_norm.append(float(g_features.norm()))
        history.t_mean.append(float(t.float().mean()))
        history.finite.append(finite)
        if not finite:
            bad.append(step)                                              # skipped, counted, reported
        else:
            density.grad, features.grad = g_density, g_features
            opt.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                density.clamp_(min=0.0)                                   # projection onto σ ≥ 0
        if bar is not None and (step % max(1, int(cfg.log_every)) == 0 or step == cfg.steps - 1):
            bar.set_postfix(loss=f"{history.loss[-1]:.4g}", grad=f"{history.feature_grad_norm[-1]:.3g}",
                            skipped=len(bad))
    if bad:
        warnings.warn(f"SDS refinement skipped {len(bad)} of {cfg.steps} step(s) whose gradient was not finite "
                      f"(steps {bad[:10]}{' …' if len(bad) > 10 else ''}); no update was made at those steps. "
                      "Check the guidance model's precision (fp16 overflow) and the decoder.", RuntimeWarning, stacklevel=2)
    out = VoxelField(density.detach(), features.detach(), bounds.clone())
    return RefineResult(field=out if batched else out[0], history=history, nonfinite_steps=len(bad),
                        nonfinite_step_indices=bad, seconds=time.perf_counter() - start, config=cfg)
