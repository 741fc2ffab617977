"""SDS refinement of a `NeuralScene`: `nfldm_sdk.guidance.sds.refine_scene` on the scene's field with its own decoder,
returning a new scene that records the refinement (``scene.refinements``, saved in ``scene.json``).

Example::

    guidance = PriorGuidance.from_bundle("assets/models/small")
    refined = refine_neural_scene(scene, guidance, RefineConfig(steps=500, alpha=3.0)).scene
"""
from __future__ import annotations

from dataclasses import dataclass

from nfldm_sdk.guidance.base import GuidanceModel
from nfldm_sdk.guidance.sds import RefineConfig, RefineResult, refine_scene
from nfldm_sdk.pipelines.scene import NeuralScene

__all__ = ["RefinedScene", "refine_neural_scene", "refinement_record"]


@dataclass(eq=False)
class RefinedScene:
    """A refined `NeuralScene` (same seed, bundle hash, decoder and sampler as the raw one) and its `RefineResult`."""

    scene: NeuralScene
    result: RefineResult


def refine_neural_scene(scene: NeuralScene, guidance: GuidanceModel, config: RefineConfig | None = None, *, seed: int | None = None,
                        progress: bool = False) -> RefinedScene:
    """`refine_scene` of one `NeuralScene` with its own decoder; the SDS seed defaults to the scene's seed.

    Returns:
        `RefinedScene` whose ``scene`` is a new `NeuralScene` holding the refined field (the input is unchanged).
    """
    if not isinstance(scene, NeuralScene):
        raise TypeError(f"refine_neural_scene takes a NeuralScene, got {type(scene).__name__}")
    seed = int(scene.seed if seed is None else seed)
    result = refine_scene(scene, None, guidance, config, seed=seed, progress=progress)
    refined = NeuralScene(field=result.field, seed=scene.seed, bundle_hash=scene.bundle_hash, decoder=scene.decoder,
                          sampler=scene.sampler, steps=scene.steps, trajectory=scene.trajectory,
                          refinements=(*scene.refinements, refinement_record(result, guidance, seed)))
    return RefinedScene(scene=refined, result=result)


def refinement_record(result: RefineResult, guidance: GuidanceModel, seed: int) -> dict:
    """What a refined `NeuralScene` records of one refinement (its ``refinements``, saved in ``scene.json``).

    Returns:
        ``{"steps", "guidance", "alpha", "negative", "lr", "density_lr", "views_per_step", "seed",
        "nonfinite_steps"}``: the `RefineConfig` settings, the guidance model's ``guidance_name`` (``"prior"``,
        ``"clip-ldm"``; the class name for other models), the SDS seed and the skipped non-finite steps.
    """
    cfg = result.config
    return {"steps": int(cfg.steps), "guidance": str(getattr(guidance, "guidance_name", type(guidance).__name__)),
            "alpha": float(cfg.alpha), "negative": cfg.negative, "lr": float(cfg.lr),
            "density_lr": None if cfg.density_lr is None else float(cfg.density_lr),
            "views_per_step": int(cfg.views_per_step), "seed": int(seed), "nonfinite_steps": int(result.nonfinite_steps)}


