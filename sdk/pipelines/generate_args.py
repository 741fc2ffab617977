"""Checks of the arguments of `SceneGenerator.generate` / `SceneGenerator.generate_iter`, made before any sampling.

Counts and seeds must be real integers (Python ``int`` or a numpy integer; not ``bool``, not ``1.5``), because a
float or a bool that is silently truncated or used as a flag gives scenes other than the ones asked for: before
these checks ``steps=0`` ran the default 50 steps, ``steps=-5`` returned a near-empty field, ``batch_size=0`` used
the default and ``batch_size=-1`` returned no scene at all.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from nfldm_sdk.errors import NfldmError

if TYPE_CHECKING:  # torch is imported where the maps are built (start-up time of the CLI)
    import torch

__all__ = ["GenerateArgumentError", "GenerateArgs", "check_int", "check_generate_args", "check_bev_args", "MAX_SEED",
           "DEFAULT_BATCH_SIZE"]

#: The largest seed a ``torch.Generator`` accepts (``manual_seed`` takes an unsigned 64-bit value).
MAX_SEED = 2**64 - 1
#: Scenes sampled together when `batch_size` is None (fewer when fewer scenes are asked for).
DEFAULT_BATCH_SIZE = 8


class GenerateArgumentError(NfldmError, ValueError):
    """An argument of `SceneGenerator.generate` is out of range or of the wrong type; the message names the
    argument, the bad value and the fix."""


def check_int(name: str, value: Any, minimum: int, *, hint: str = "") -> int:
    """`value` as an ``int`` when it is an integer (``int`` or numpy integer, not ``bool``) ``>= minimum``.

    Args:
        name: the argument's name, used in the message.
        value: the value to check.
        minimum: the smallest accepted value.
        hint: appended to the message (e.g. what None means).
    Raises:
        `GenerateArgumentError` naming `name`, the bad value and the accepted range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise GenerateArgumentError(f"{name} must be an integer >= {minimum}, got {value!r} "
                                    f"({type(value).__name__}): pass a whole number{hint}")
    if int(value) < minimum:
        raise GenerateArgumentError(f"{name} must be an integer >= {minimum}, got {int(value)}{hint or ''}")
    return int(value)


@dataclass(frozen=True)
class GenerateArgs:
    """The checked arguments of one `SceneGenerator.generate` call (defaults resolved)."""

    num_scenes: int
    """How many scenes (>= 1)."""
    seed: int
    """Seed of scene 0; scene i uses ``seed + i`` (all within [0, `MAX_SEED`])."""
    steps: int
    """Denoising steps per level (>= 1)."""
    batch_size: int
    """Scenes sampled together (>= 1, at most `num_scenes`)."""
    sampler: str
    """The sampler's name (one of `nfldm_sdk.models.noise_schedule.SAMPLERS`)."""


def check_generate_args(num_scenes: Any, seed: Any, steps: Any, batch_size: Any, sampler: Any, *,
                        default_steps: int, default_sampler: str, samplers: Sequence[str]) -> GenerateArgs:
    """Check and resolve the arguments of `SceneGenerator.generate` (module docstring).

    Args:
        num_scenes: integer >= 1.
        seed: integer >= 0 with ``seed + num_scenes - 1 <= MAX_SEED``.
        steps: integer >= 1, or None for `default_steps`.
        batch_size: integer >= 1, or None for ``min(num_scenes, DEFAULT_BATCH_SIZE)``.
        sampler: one of `samplers`, or None for `default_sampler`.
        default_steps, default_sampler: the bundle's sampler defaults.
        samplers: the accepted sampler names.
    Raises:
        `GenerateArgumentError` naming the first bad argument, its value and the fix.
    """
    num_scenes = check_int("num_scenes", num_scenes, 1)
    seed = check_int("seed", seed, 0)
    if seed + num_scenes - 1 > MAX_SEED:
        raise GenerateArgumentError(f"seed {seed} + num_scenes {num_scenes} - 1 exceeds the largest generator seed "
                                    f"{MAX_SEED}: pass a smaller seed")
    steps = default_steps if steps is None else check_int(
        "steps", steps, 1, hint=f"; pass steps=None for the bundle's default ({default_steps})")
    batch_size = min(num_scenes, DEFAULT_BATCH_SIZE) if batch_size is None else check_int(
        "batch_size", batch_size, 1, hint=f"; pass batch_size=None for min(num_scenes, {DEFAULT_BATCH_SIZE})")
    sampler = default_sampler if sampler is None else sampler
    if sampler not in samplers:
        raise GenerateArgumentError(f"sampler must be one of {', '.join(samplers)}, got {sampler!r}")
    return GenerateArgs(num_scenes=num_scenes, seed=seed, steps=steps, batch_size=min(batch_size, num_scenes),
                        sampler=sampler)


def check_bev_args(bev: Any, guidance_scale: Any, num_scenes: int, *, conditional: bool,
                   grid_yx: tuple[int, int] | None, bounds) -> "torch.Tensor | None":
    """Check the BEV condition of `SceneGenerator.generate` and return it as ``[num_scenes, Y, X]`` uint8 CARLA tags
    (None for ``bev=None``).

    Args:
        bev: None, a `nfldm_sdk.labels.bev_map.BEVMap`, a list of `num_scenes` of them, or a ``[Y, X]`` integer
            array (numpy or torch) of CARLA tags (255 = unobserved).
        guidance_scale: a finite real number.
        num_scenes: scenes to generate.
        conditional: whether the bundle reads BEV maps.
        grid_yx: ``(Y, X)`` the bundle's maps have (None when not conditional).
        bounds: the bundle's voxel box ``((xmin, ymin, zmin), (xmax, ymax, zmax))`` metres; a map's bounds must match.
    Raises:
        `GenerateArgumentError` naming the problem: a bundle that is not conditional, a map of another size or box,
        unknown tags, a list of the wrong length, a bad guidance scale.
    """
    import numpy as np
    import torch

    from nfldm_sdk.labels.bev_map import BEVMap, BEVMapError

    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real) or not np.isfinite(guidance_scale):
        raise GenerateArgumentError(f"guidance_scale must be a finite number (1 = the conditional model, 0 = the "
                                    f"unconditional one), got {guidance_scale!r}")
    if bev is None:
        return None
    if not conditional:
        raise GenerateArgumentError("bev: this bundle is not BEV-conditioned (its denoisers were trained without "
                                    "bev_condition): generate without bev=, or train the denoisers with "
                                    "--set denoiser_g.bev_condition=true (and denoiser_c, denoiser_f) on a latent store "
                                    "that has bev maps")
    maps = list(bev) if isinstance(bev, (list, tuple)) else [bev] * num_scenes
    if len(maps) != num_scenes:
        raise GenerateArgumentError(f"bev: got a list of {len(maps)} maps for num_scenes={num_scenes}: pass one map "
                                    "per scene, or a single map for all")
    (xmin, ymin, _), (xmax, ymax, _) = bounds
    out = []
    for i, m in enumerate(maps):
        try:
            if not isinstance(m, BEVMap):
                a = m.detach().cpu().numpy() if torch.is_tensor(m) else np.asarray(m)
                m = BEVMap.from_tags(a, ((xmin, ymin), (xmax, ymax)))
        except BEVMapError as e:
            raise GenerateArgumentError(f"bev[{i}]: {e}") from e
        if tuple(m.tags.shape) != tuple(grid_yx):
            raise GenerateArgumentError(f"bev[{i}] is {m.tags.shape[0]}×{m.tags.shape[1]} cells but the bundle's maps are "
                                        f"{grid_yx[0]}×{grid_yx[1]} (its voxel grid's Y×X): resize it (BEVMap.resized)")
        if not np.allclose(np.asarray(m.bounds), [[xmin, ymin], [xmax, ymax]], atol=1e-4):
            raise GenerateArgumentError(f"bev[{i}] covers {m.bounds} m but the bundle's scenes cover "
                                        f"{((xmin, ymin), (xmax, ymax))} m: crop or re-make the map over that box")
        out.append(torch.from_numpy(np.array(m.tags, dtype=np.uint8)))   # a copy: BEVMap tags are read-only
    return torch.stack(out)
