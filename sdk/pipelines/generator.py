"""`SceneGenerator`: sample scenes (`nfldm_sdk.pipelines.scene.NeuralScene`) from a model bundle.

Generation (docs/method.md, stage 3): ``g ~ p(g)``, ``c ~ p(c | g)``, ``f ~ p(f | g, c)`` — three reverse-diffusion
loops (`nfldm_sdk.pipelines.sampling.sample_level`), each conditioned on the already sampled, clean (normalised) upper levels —
then the latents are de-normalised with the bundle's latent statistics and the LAE decodes them into a voxel
field ``V``; the stage-1 decoder renders ``V`` from any camera.

Seeds: scene ``i`` of ``generate(num_scenes, seed=s)`` is sampled with its own CPU ``torch.Generator`` seeded
``s + i`` (its `NeuralScene.seed`), drawn on the CPU whatever the device. So scene i does not depend on the batch
size or on the other scenes, and ``generate(1, seed=scene.seed)`` regenerates a scene. Same seed, same bytes on one
device and batch size; across batch sizes the scenes agree up to float rounding of batched kernels.

Model bundles (the folder format, `write_bundle`, `load_part`, `BundleError`) live in `nfldm_sdk.models.bundle` and are
re-exported here; `SceneGenerator.from_pretrained` reads one and fails with a `BundleError` naming the part, the
file and the fix when a part is missing, holds the wrong class, changed since export (sha256), does not parse or
does not fit the others (latent shapes, voxel grid), or when the manifest's format version is unknown.

BEV-map conditioning: a bundle whose denoisers were trained with ``bev_condition`` takes ``bev=`` (a
`nfldm_sdk.labels.bev_map.BEVMap`, a list of them, one per scene, or a ``[Y, X]`` array of CARLA tags) and samples
every conditioned level with classifier-free guidance of scale ``guidance_scale`` (`sample_level`); without
``bev`` it samples the same bundle unconditionally (the null condition). A bundle whose ψ_g has ``trajectory_in_g``
also samples the ego trajectory of the scene's window (`NeuralScene.trajectory`).

Many scenes: `SceneGenerator.generate_iter` yields the scenes batch by batch in bounded memory (``nfldm generate``
writes each one as it comes); `SceneGenerator.generate` returns them all as a list.

Example::

    gen = SceneGenerator.from_pretrained("assets/models/small", device="cuda")
    scenes = gen.generate(num_scenes=4, seed=0, steps=25, sampler="dpmsolver++")
    images = scenes[0].render(cameras)           # SceneImages: rgb [N,H,W,3] uint8, depth/alpha [N,H,W]
    scenes[0].save("out/scene_000000")
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn

from nfldm_sdk.models.bundle import (PART_CLASSES,
                              BundleError, BundleManifest, PartMismatch, changed_parts,
                              check_consistency, default_model_path, describe_part, export_fix, load_part, read_manifest)
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.guidance.base import GuidanceNotAvailable
from nfldm_sdk.guidance.prior import ADD_PRIOR_FIX, PriorGuidance
from nfldm_sdk.pipelines.refine import refine_neural_scene
from nfldm_sdk.models.latent_ae import LatentAutoEncoder, Latents, LatentStats
from nfldm_sdk.models.scene_ae import SceneAutoEncoder
from nfldm_sdk.persistence import CONFIG_NAME, WEIGHTS_NAME, config_from_dict
from nfldm_sdk.pipelines.scene import NeuralScene
from nfldm_sdk.pipelines.editing import edit_scene
from nfldm_sdk.pipelines.sampling import denormalize_level, sample_level
from nfldm_sdk.models.latent_ae import LEVELS
from nfldm_sdk.models.noise_schedule import SamplerDefaults
from nfldm_sdk.models.noise_schedule import SAMPLERS, NoiseSchedule

from nfldm_sdk.models.denoisers import split_g_trajectory
from nfldm_sdk.pipelines.generate_args import GenerateArgumentError, check_bev_args, check_generate_args, check_int

__all__ = ["SceneGenerator"]


# ============================================================================================ the generator
class SceneGenerator:
    """Samples `NeuralScene` s from the hierarchical latent diffusion model of a bundle (see the module docstring).

    Build with `from_pretrained` (a bundle folder) or directly from models (tests, benchmarks).
    """

    def __init__(self, scene_ae: SceneAutoEncoder, latent_ae: LatentAutoEncoder, denoisers: Mapping[str, nn.Module],
                 latent_stats: LatentStats, noise_schedule: NoiseSchedule | None = None,
                 sampler_defaults: SamplerDefaults | None = None, bundle_hash: str = "unbundled",
                 manifest: BundleManifest | None = None):
        check_consistency(scene_ae, latent_ae, denoisers, latent_stats)
        self.scene_ae = scene_ae.eval()
        self.latent_ae = latent_ae.eval()
        self.denoisers = {k: denoisers[k].eval() for k in LEVELS}
        self.latent_stats = latent_stats
        self.noise_schedule = noise_schedule or NoiseSchedule()
        self.sampler_defaults = sampler_defaults or SamplerDefaults()
        self.bundle_hash = bundle_hash
        self.manifest = manifest
        self.bundle_path: Path | None = None
        """The bundle folder this generator was loaded from (`from_pretrained`), None when built from models."""
        self._prior = None                         # the bundle's prior/ part, loaded on first use (`bundle_prior`)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device: str | torch.device = "cpu",
                        verify: bool = True) -> "SceneGenerator":
        """Load a model bundle (module docstring); `verify` checks every part's sha256 against the manifest.

        With no `path`, the default model (`default_model_path`: ``$NFLDM_DEFAULT_MODEL`` or the shipped
        ``assets/models/default``).

        Raises:
            `BundleError` naming the part, the file and the fix (missing part, wrong class, changed since export, a
            config that is not JSON, truncated weights, shapes that do not fit, unknown manifest version). Parts
            that do not fit together are blamed on the part that changed since export when one did (with
            ``verify=False`` a hand-edited part still loads, and only then shows the mismatch).
        """
        if path is None:
            path = default_model_path()
        manifest = read_manifest(path)
        if manifest.compute_hash() != manifest.bundle_hash:
            raise BundleError(f"bundle {path}: the manifest's bundle_hash does not match its content (edited by hand?); "
                              "re-export the bundle with `nfldm export-bundle`")
        parts = {name: load_part(path, name, manifest, device=device, verify=verify) for name in PART_CLASSES}
        try:
            stats = config_from_dict(LatentStats, manifest.latent_stats)
            schedule = NoiseSchedule.from_dict(manifest.noise_schedule)
            defaults = SamplerDefaults(**manifest.sampler_defaults)
        except (TypeError, ValueError) as e:
            raise BundleError(f"bundle {path}: manifest entry does not parse ({e}); re-export the bundle with `nfldm export-bundle`") from e
        try:
            gen = cls(parts["scene_ae"], parts["latent_ae"], {k: parts[f"denoiser_{k}"] for k in LEVELS}, stats,
                      schedule, defaults, bundle_hash=manifest.bundle_hash, manifest=manifest)
            gen.bundle_path = Path(path)
            return gen
        except PartMismatch as e:
            # The parts fitted when the bundle was exported (write_bundle checks it), so a part that changed since
            # is the cause; blaming the part the export-time message names would send the user to the wrong one.
            changed = [p for p in changed_parts(path, manifest) if p in PART_CLASSES]
            if not changed:
                raise BundleError(f"bundle {path}: {e}") from e
            where = ", ".join(f"{Path(path) / manifest.parts[p].get('path', p)}/{{{CONFIG_NAME},{WEIGHTS_NAME}}}"
                              for p in changed)
            raise BundleError(f"bundle {path}: {', '.join(describe_part(p) for p in changed)} changed since export ({where} "
                              f"no longer match the manifest's sha256) and no longer fits the other parts: {e.fact}; "
                              f"restore the exported files or {export_fix(changed[0])}") from e

    @property
    def device(self) -> torch.device:
        return next(self.denoisers["g"].parameters()).device

    def to(self, device: str | torch.device) -> "SceneGenerator":
        """Move every model to `device` (in place; returns self)."""
        for m in (self.scene_ae, self.latent_ae, *self.denoisers.values(), *([self._prior] if self._prior else [])):
            m.to(device)
        return self

    def bundle_prior(self) -> PriorGuidance:
        """The SDS guidance of the bundle's optional ``prior/`` part (`nfldm_sdk.guidance.prior.PriorGuidance`),
        loaded on the first call (class and sha256 checked) onto the generator's device, then kept.

        Raises:
            `GenerateArgumentError` (a ``ValueError``) when the generator was not loaded from a bundle or the bundle
            has no prior: the message says how to train one (``nfldm train prior``) and add it
            (``nfldm export-bundle --prior``).
            `nfldm_sdk.models.bundle.BundleError`: the part is missing, of another class, changed or unreadable.
        """
        if self._prior is None:
            if self.bundle_path is None:
                raise GenerateArgumentError("guidance: refine=True needs a guidance model, and this generator was not "
                                            "loaded from a bundle (whose prior/ part it would use): pass "
                                            "guidance=PriorGuidance.from_pretrained(RUN) (see nfldm_sdk.guidance.prior)")
            try:
                self._prior = PriorGuidance.from_bundle(self.bundle_path, device=self.device)
            except GuidanceNotAvailable as e:
                raise GenerateArgumentError(f"guidance: refine=True needs a guidance model and bundle {self.bundle_path} "
                                            f"has no 'prior' part; {ADD_PRIOR_FIX}; or pass "
                                            "guidance=PriorGuidance.from_pretrained(RUN)") from e
        return self._prior

    @property
    def conditional(self) -> bool:
        """Whether any denoiser of the bundle reads a BEV map (``bev_condition``)."""
        return any(getattr(d, "conditional", False) for d in self.denoisers.values())

    @property
    def bev_grid_yx(self) -> tuple[int, int] | None:
        """``(Y, X)`` of the BEV maps the bundle is conditioned on (None for an unconditional bundle)."""
        for d in self.denoisers.values():
            if getattr(d, "conditional", False):
                return tuple(int(v) for v in d.config.bev_grid_yx)  # type: ignore[return-value]
        return None

    @torch.no_grad()
    def sample_latents(self, seeds: Sequence[int], steps: int | None = None, sampler: str | None = None, *,
                       bev: torch.Tensor | None = None, guidance_scale: float = 1.0) -> Latents:
        """Sample one batch of latents, scene i with a CPU generator seeded ``seeds[i]``: g, then c | g, then f | g, c.

        Args:
            bev: ``[B, Y, X]`` uint8 CARLA tags (checked maps, `check_bev_args`) for a conditional bundle; None:
                unconditional. Levels whose denoiser is not BEV-conditioned ignore it.
            guidance_scale: classifier-free guidance scale of the conditioned levels (`sample_level`).
        Returns:
            de-normalised `Latents` (g ``[B, G]``, c ``[B, 4, Zc, Yc, Xc]``, f ``[B, 4, Y, X]``) ready for the LAE
            (a ``trajectory_in_g`` ψ_g's trajectory is split off; `generate` puts it on the scenes).
        """
        return self._sample(seeds, steps, sampler, bev, guidance_scale)[0]

    def _sample(self, seeds, steps, sampler, bev, guidance_scale) -> tuple[Latents, torch.Tensor | None]:
        steps = self.sampler_defaults.steps if steps is None else check_int("steps", steps, 1)
        sampler = sampler or self.sampler_defaults.sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
        seeds = [check_int("seeds[i]", s, 0) for s in seeds]
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        sampled: dict[str, torch.Tensor] = {}
        trajectory = None
        for level in LEVELS:                                   # g -> c -> f, each conditioned on the clean upper levels
            denoiser = self.denoisers[level]
            cond = tuple(sampled[k] for k in denoiser.cond_levels)
            shape = (len(seeds), *getattr(denoiser, "sample_shape", denoiser.latent_shape))
            kw = {"condition": bev, "guidance_scale": guidance_scale} if getattr(denoiser, "conditional", False) else {}
            sampled[level] = sample_level(denoiser, shape, cond, self.noise_schedule.scheduler(sampler), steps, gens, **kw)
            if level == "g":
                sampled["g"], trajectory = split_g_trajectory(denoiser.config, sampled["g"])
        latents = Latents(**{k: denormalize_level(self.latent_stats, k, v) for k, v in sampled.items()})
        return latents, trajectory

    def edit(self, scene: NeuralScene, region, *, bev=None, seed: int = 0, steps: int | None = None,
             sampler: str | None = None, guidance_scale: float = 1.0) -> NeuralScene:
        """Regenerate `scene` inside a bird's-eye `region` (a box ``(x0, y0, x1, y1)`` metres or a ``[Y, X]`` bool
        mask), keeping every voxel column outside it: `nfldm_sdk.pipelines.editing.edit_scene`."""
        return edit_scene(self, scene, region, bev=bev, seed=seed, steps=steps, sampler=sampler,
                          guidance_scale=guidance_scale)

    def generate_route(self, trajectory, **kwargs):
        """A route of scenes along `trajectory` (a world-frame `Trajectory`) by outpainting, as a `NeuralRoute`:
        `nfldm_sdk.routes.outpaint.generate_route` (``bev=``, ``seed=``, ``overlap_m=``, ``feather=``, ``out=`` ...)."""
        from nfldm_sdk.routes.outpaint import generate_route  # cycle: the routes package builds on this module

        return generate_route(self, trajectory, **kwargs)

    def generate(self, num_scenes: int = 1, seed: int = 0, steps: int | None = None, sampler: str | None = None,
                 batch_size: int | None = None, progress: bool = False, *, refine: bool = False, guidance=None,
                 refine_config=None, bev=None, guidance_scale: float = 1.0) -> list[NeuralScene]:
        """Generate `num_scenes` scenes as a list; scene i uses seed ``seed + i`` (module docstring).

        The list holds every scene's field at once (the `small` preset: 128×128×32×(1+32) float32 ≈ 69 MB per
        scene), so for many scenes use `generate_iter`, which holds one batch at a time. Arguments, checks and
        results are `generate_iter`'s.

        Returns:
            list of `NeuralScene` (fields on the generator's device, decoder = the bundle's stage-1 model).
        """
        return list(self.generate_iter(num_scenes, seed, steps, sampler, batch_size, progress, refine=refine,
                                       guidance=guidance, refine_config=refine_config, bev=bev,
                                       guidance_scale=guidance_scale))

    def generate_iter(self, num_scenes: int = 1, seed: int = 0, steps: int | None = None, sampler: str | None = None,
                      batch_size: int | None = None, progress: bool = False, *, refine: bool = False, guidance=None,
                      refine_config=None, bev=None, guidance_scale: float = 1.0) -> Iterator[NeuralScene]:
        """Generate `num_scenes` scenes, yielding each one as soon as its batch is decoded (in seed order).

        Memory stays bounded whatever `num_scenes`: one batch of latents and fields is alive at a time, plus the
        scenes the caller keeps (``nfldm generate`` writes each to disk and drops it). The scenes are the same as
        `generate`'s; all arguments are checked before anything is sampled.

        Args:
            num_scenes: how many scenes, an integer >= 1.
            seed: seed of the first scene, an integer >= 0; scene i uses ``seed + i``.
            steps: denoising steps per level, an integer >= 1 (None: the bundle's sampler defaults, 50).
            sampler: ``"ddim"``, ``"dpmsolver++"`` or ``"ddpm"`` (None: the bundle's).
            batch_size: scenes sampled together, an integer >= 1 (None: ``min(num_scenes, 8)``); it does not change
                the scenes (beyond float rounding of batched kernels, module docstring).
            progress: show a progress bar over scenes.
            refine: post-optimise every scene by score distillation (`nfldm_sdk.guidance.sds`, method stage 4) with the
                same seed as its sampling, so a refined scene is reproducible from its seed alone.
            guidance: the `nfldm_sdk.guidance.base.GuidanceModel` for `refine`; None = the bundle's ``prior/`` part
                (`bundle_prior`, loaded on first use).
            refine_config: `nfldm_sdk.guidance.sds.RefineConfig` (steps, lr, views per step, guidance alpha).
            bev: the layout to generate (a BEV-conditioned bundle only): a `nfldm_sdk.labels.bev_map.BEVMap`, a
                list of `num_scenes` of them (scene i gets map i), or a ``[Y, X]`` integer array of CARLA tags
                (255 = unobserved), at the bundle's grid (`bev_grid_yx`); None: unconditional.
            guidance_scale: classifier-free guidance scale s (a finite float; 1: the conditional model, 0: the
                unconditional one, > 1: follow the map more closely); used only with `bev`.
        Returns:
            an iterator of `NeuralScene` (field on the generator's device, decoder = the bundle's stage-1 model).
        Raises:
            `nfldm_sdk.pipelines.generate_args.GenerateArgumentError` (a ``ValueError``) naming a bad argument (or,
            for `refine` without `guidance`, a bundle without a prior), before the first scene is sampled.
        """
        args = check_generate_args(num_scenes, seed, steps, batch_size, sampler, default_steps=self.sampler_defaults.steps,
                                   default_sampler=self.sampler_defaults.sampler, samplers=SAMPLERS)
        maps = check_bev_args(bev, guidance_scale, args.num_scenes, conditional=self.conditional,
                              grid_yx=self.bev_grid_yx, bounds=self.scene_ae.config.bounds)
        if refine and guidance is None:
            guidance = self.bundle_prior()
        return self._scenes(args, progress, guidance if refine else None, refine_config, maps, float(guidance_scale))

    def _scenes(self, args, progress: bool, guidance, refine_config, maps, guidance_scale) -> Iterator[NeuralScene]:
        # A generator of its own, so that generate_iter checks its arguments when called, not at the first next().
        bar = None
        if progress:
            from tqdm.auto import tqdm  # start-up time: tqdm only when a bar is asked for

            bar = tqdm(total=args.num_scenes, desc="generating", unit="scene")
        try:
            for start in range(0, args.num_scenes, args.batch_size):
                seeds = [args.seed + i for i in range(start, min(start + args.batch_size, args.num_scenes))]
                bev = None if maps is None else maps[start:start + len(seeds)]
                with torch.no_grad():
                    latents, trajectory = self._sample(seeds, args.steps, args.sampler, bev, guidance_scale)
                    fields = self.latent_ae.decode(latents, snap_to_codebook=self.sampler_defaults.snap_to_codebook)
                del latents
                batch = []
                for i, s in enumerate(seeds):
                    one = fields[i]
                    one = VoxelField(one.density.clone(), one.features.clone(), one.bounds.clone())  # not a view of the batch
                    traj = None if trajectory is None else trajectory[i].float().cpu().numpy()
                    batch.append(NeuralScene(field=one, seed=s, bundle_hash=self.bundle_hash, decoder=self.scene_ae,
                                             sampler=args.sampler, steps=args.steps, trajectory=traj))
                del fields, one                    # the batched field is freed before the scenes are handed out
                while batch:
                    scene = batch.pop(0)
                    if guidance is not None:
                        scene = refine_neural_scene(scene, guidance, refine_config, progress=progress).scene
                    if bar is not None:
                        bar.update(1)
                    yield scene
                    del scene                      # only the caller holds a scene once it is handed out
        finally:
            if bar is not None:
                bar.close()
