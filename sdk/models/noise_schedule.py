"""Noise schedules: the forward (noising) process a denoiser is trained with, and the diffusers schedulers that
sample it (docs/method.md, stage 3). A denoiser's schedule is part of what it is: training and sampling must use
the same one, so it is saved with the network's config and the bundle's manifest.

Our choices where the paper is silent, and why:

- ``prediction_type="v_prediction"``: the paper's choice (better convergence and stability);
- ``beta_schedule="squaredcos_cap_v2"`` (the cosine schedule of Nichol & Dhariwal): with it ``ᾱ_T`` is ~0,
  so the last training step is (almost) pure noise and matches the sampler's starting point ``x_T ~ N(0, I)``;
- ``timestep_spacing="trailing"``: the first sampling step is ``t = T - 1`` whatever the step count
  (Lin et al. 2023, "Common diffusion noise schedules and sample steps are flawed"); with ``"leading"``
  50 DDIM steps would start at ``t = 980`` from a sample that is not noise enough;
- ``clip_sample=False``: latents are normalised to about unit variance, not images in ``[-1, 1]``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

__all__ = ["SAMPLERS", "Scheduler", "NoiseSchedule", "SamplerDefaults", "make_scheduler", "training_scheduler"]

#: Sampler names `make_scheduler` understands.
SAMPLERS = ("ddpm", "ddim", "dpmsolver++")

#: The diffusers scheduler types `make_scheduler` returns.
Scheduler = DDPMScheduler | DDIMScheduler | DPMSolverMultistepScheduler


@dataclass
class NoiseSchedule:
    """The forward (noising) process of one denoiser; training and sampling must use the same one."""

    num_train_timesteps: int = 1000
    """T, the number of discrete training timesteps ``t ∈ {0, …, T-1}``."""
    beta_schedule: str = "squaredcos_cap_v2"
    """diffusers beta schedule: ``"squaredcos_cap_v2"`` (cosine), ``"linear"``, ``"scaled_linear"``."""
    beta_start: float = 1e-4
    """First β of the (scaled_)linear schedules (unused by the cosine schedule)."""
    beta_end: float = 0.02
    """Last β of the (scaled_)linear schedules (unused by the cosine schedule)."""
    prediction_type: str = "v_prediction"
    """What the denoiser predicts: ``"v_prediction"`` (``v = √ᾱ_t ε − √(1−ᾱ_t) x_0``), ``"epsilon"`` or ``"sample"``."""
    timestep_spacing: str = "trailing"
    """How sampling picks its timesteps among the T (``"trailing"``: always starts at ``T - 1``)."""

    def scheduler(self, name: str) -> Scheduler:
        """A diffusers scheduler named `name` (see `make_scheduler`) for this schedule."""
        return make_scheduler(name, **dataclasses.asdict(self))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "NoiseSchedule":
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"NoiseSchedule has no field(s) {unknown}: written by another nfldm version")
        return cls(**data)


def make_scheduler(name: str, num_train_timesteps: int = 1000, prediction_type: str = "v_prediction", *,
                   beta_schedule: str = "squaredcos_cap_v2", beta_start: float = 1e-4, beta_end: float = 0.02,
                   timestep_spacing: str = "trailing") -> Scheduler:
    """A diffusers scheduler for sampling (see the module docstring for the defaults and why).

    Args:
        name: ``"ddpm"`` (ancestral, stochastic: needs about as many steps as it was trained with to be good),
            ``"ddim"`` (deterministic, η = 0) or ``"dpmsolver++"`` (DPM-Solver++ 2nd-order multistep, deterministic,
            good in 10–25 steps).
        num_train_timesteps, prediction_type, beta_schedule, beta_start, beta_end, timestep_spacing: the
            `NoiseSchedule` the denoiser was trained with.
    Returns:
        ``DDPMScheduler``, ``DDIMScheduler`` or ``DPMSolverMultistepScheduler`` (``algorithm_type="dpmsolver++"``).
    """
    common = dict(num_train_timesteps=int(num_train_timesteps), beta_schedule=beta_schedule, beta_start=beta_start,
                  beta_end=beta_end, prediction_type=prediction_type, timestep_spacing=timestep_spacing)
    if name == "ddpm":
        return DDPMScheduler(**common, clip_sample=False)
    if name == "ddim":
        # set_alpha_to_one: the last step goes all the way to ᾱ = 1 (a clean sample), not to ᾱ_0.
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True)
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2,
                                           lower_order_final=True, final_sigmas_type="zero")
    raise ValueError(f"unknown sampler {name!r}: choose one of {', '.join(SAMPLERS)}")


def training_scheduler(schedule: NoiseSchedule) -> DDPMScheduler:
    """The ``DDPMScheduler`` whose ``add_noise`` / ``get_velocity`` define the training targets of `schedule`."""
    return schedule.scheduler("ddpm")  # type: ignore[return-value]


@dataclass
class SamplerDefaults:
    """How `SceneGenerator.generate` samples when the caller does not say (stored in a bundle's manifest)."""

    sampler: str = "ddim"
    """``"ddim"``, ``"dpmsolver++"`` or ``"ddpm"``."""
    steps: int = 50
    """Denoising steps per level."""
    snap_to_codebook: bool = True
    """Snap the sampled c and f to their nearest codebook vectors before the LAE decodes them (the LAE decoder
    was trained on quantised latents only)."""

    def __post_init__(self):
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}: choose one of {', '.join(SAMPLERS)}")
        if int(self.steps) < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
