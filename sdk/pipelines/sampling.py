"""The functional sampling core of the hierarchical latent diffusion (docs/method.md, stage 3).

* `NoiseSchedule` / `make_scheduler` (`nfldm_sdk.models.noise_schedule`) — the forward process a denoiser was
  trained with and the diffusers schedulers that sample it.
* `sample_level` — the ~30-line reverse-diffusion loop of one level of the hierarchy, optionally conditioned on
  BEV maps with classifier-free guidance (``v = v_u + s·(v_c − v_u)``).
* `normalize_level` / `denormalize_level` — one level of the LAE's `LatentStats` normalisation (the denoisers
  work on latents of about zero mean and unit variance; samples are de-normalised before the LAE decodes them).

Example::

    sched = make_scheduler("ddim", num_train_timesteps=1000)
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    g = sample_level(psi_g, (2, 16), (), sched, steps=50, generator=gens)             # [2, 16]
    c = sample_level(psi_c, (2, 4, 4, 8, 8), (g,), make_scheduler("ddim"), 50, gens)   # conditioned on g
"""
from __future__ import annotations

from typing import Sequence

import torch
from diffusers.utils.torch_utils import randn_tensor

from nfldm_sdk.models.latent_ae import LEVELS, LatentStats
from nfldm_sdk.models.noise_schedule import Scheduler

__all__ = ["sample_level", "normalize_level", "denormalize_level"]


@torch.no_grad()
def sample_level(denoiser: torch.nn.Module, shape: Sequence[int], cond: Sequence[torch.Tensor], scheduler: Scheduler,
                 steps: int, generator: torch.Generator | list[torch.Generator] | None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None, *,
                 condition: torch.Tensor | None = None, guidance_scale: float = 1.0,
                 known: torch.Tensor | None = None, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Sample one level of the hierarchy by running `scheduler` backwards from pure noise.

    Args:
        denoiser: called as ``denoiser(x_t, t, *cond)`` with ``x_t`` of `shape` and ``t [B]`` int64 timesteps;
            returns the prediction the scheduler's ``prediction_type`` names (v for our models).
        shape: ``[B, ...]`` of the sample (e.g. ``[B, g_dim]`` or ``[B, 4, Zc, Yc, Xc]``).
        cond: the clean, normalised upper-level latents the level is conditioned on (``()`` for g, ``(g,)`` for c,
            ``(g, c)`` for f), each with batch B.
        scheduler: a scheduler from `make_scheduler` (its state is reset by ``set_timesteps``).
        steps: number of denoising steps (model evaluations).
        generator: one CPU ``torch.Generator`` for the whole batch, or a list of B (scene i then depends only on
            generator i, whatever the batch size). Noise is drawn on the CPU and moved, so a seed gives the same
            noise on every device.
        device, dtype: where and in what precision to sample (default: the denoiser's).
        condition: ``[B, Y, X]`` uint8 BEV maps (CARLA tags) for a BEV-conditioned denoiser (``bev_condition``),
            passed as ``bev=``; None samples it unconditionally (its null tokens) — a denoiser without BEV
            conditioning is then called exactly as before.
        guidance_scale: s of classifier-free guidance, ``v = v_u + s·(v_c − v_u)`` (v_u with the null tokens); with
            s ≠ 1 each step is one batched call of 2B samples (conditional, then unconditional); s = 1 is the plain
            conditional model, s = 0 the unconditional one. Ignored without a `condition`.
        known, keep: masked sampling (editing, outpainting): `known` ``[B, ...]`` a clean normalised latent of
            `shape` and `keep` a bool mask broadcastable to it. Before every model call the kept entries are
            replaced by `known` noised to that step's level (``scheduler.add_noise``, fresh noise from `generator`),
            and the returned sample equals `known` exactly there; the rest is sampled in agreement with it.
    Returns:
        ``[B, ...]`` the sample ``x_0`` (normalised latent space).
    """
    if (known is None) != (keep is None):
        raise ValueError("masked sampling needs both `known` and `keep` (or neither)")
    if known is not None and tuple(known.shape) != tuple(shape):
        raise ValueError(f"known latent {tuple(known.shape)} does not match the sample shape {tuple(shape)}")
    if device is None or dtype is None:
        param = next(denoiser.parameters())
        device, dtype = device or param.device, dtype or param.dtype
    if isinstance(generator, list) and len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}: pass one per sample")
    guided = condition is not None and float(guidance_scale) != 1.0
    if condition is not None:
        condition = condition.to(device)
        if guided:  # one call of 2B: the first B conditional, the last B with the null tokens
            drop = torch.arange(2 * shape[0], device=device) >= shape[0]
            cond2 = tuple(torch.cat([c, c]) for c in cond)
            kwargs = {"bev": torch.cat([condition, condition]), "bev_drop": drop}
        else:
            kwargs = {"bev": condition}
    x = randn_tensor(tuple(shape), generator=generator, device=torch.device(device), dtype=dtype)
    x = x * scheduler.init_noise_sigma
    scheduler.set_timesteps(int(steps), device=device)
    if known is not None:
        known, keep = known.to(device=device, dtype=dtype), keep.to(device)
    for t in scheduler.timesteps:
        if known is not None:
            noise = randn_tensor(tuple(shape), generator=generator, device=torch.device(device), dtype=dtype)
            x = torch.where(keep, scheduler.add_noise(known, noise, t.reshape(1).to(device)), x)
        model_input = scheduler.scale_model_input(x, t)
        t_batch = t.reshape(1).expand(shape[0]).to(device)                     # [B] int64
        if guided:
            v = denoiser(torch.cat([model_input, model_input]), torch.cat([t_batch, t_batch]), *cond2, **kwargs)
            v_c, v_u = v.chunk(2)
            prediction = v_u + float(guidance_scale) * (v_c - v_u)
        elif condition is not None:
            prediction = denoiser(model_input, t_batch, *cond, **kwargs)
        else:
            prediction = denoiser(model_input, t_batch, *cond)
        x = scheduler.step(prediction, t, x, generator=generator).prev_sample
    return x if known is None else torch.where(keep, known, x)


# ============================================================================================ normalisation
def _level_mean_std(stats: LatentStats, level: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of `level` shaped to broadcast against ``x`` (``[B, G]`` scalar; ``[B, 4, ...]`` per channel)."""
    if level not in LEVELS:
        raise KeyError(f"unknown latent level {level!r}: one of {LEVELS}")
    mean, std = getattr(stats, f"{level}_mean"), getattr(stats, f"{level}_std")
    kw = dict(dtype=x.dtype, device=x.device)
    m = torch.as_tensor(mean, **kw).reshape(-1)
    s = torch.as_tensor(std, **kw).reshape(-1).clamp_min(stats.std_floor)
    if m.numel() == 1:
        return m.reshape([1] * x.dim()), s.reshape([1] * x.dim())
    if x.dim() < 2 or x.shape[1] != m.numel():
        raise ValueError(f"latent stats of {level} have {m.numel()} channels but the latent is {tuple(x.shape)} (channels = dim 1)")
    shape = (1, -1, *([1] * (x.dim() - 2)))
    return m.reshape(shape), s.reshape(shape)


def normalize_level(stats: LatentStats, level: str, x: torch.Tensor) -> torch.Tensor:
    """One level of ``LatentStats.normalize``: ``(x − mean) / max(std, std_floor)`` (g scalar, c/f per channel).

    Args: `level` ``"g"`` (``x [B, G]``), ``"c"`` (``[B, 4, Zc, Yc, Xc]``) or ``"f"`` (``[B, 4, Y, X]``).
    """
    m, s = _level_mean_std(stats, level, x)
    return (x - m) / s


def denormalize_level(stats: LatentStats, level: str, x: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalize_level`: ``x · max(std, std_floor) + mean``."""
    m, s = _level_mean_std(stats, level, x)
    return x * s + m
