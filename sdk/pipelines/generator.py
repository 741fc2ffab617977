"""`SceneGenerator`: sample scenes from a model bundle; `NeuralScene`: one generated scene you can render and save.

Generation (docs/method.md, stage 3): ``g ~ p(g)``, ``c ~ p(c | g)``, ``f ~ p(f | g, c)`` — three reverse-diffusion
loops (`nfldm_sdk.pipelines.sampling.sample_level`), each conditioned on the already sampled, clean (normalised) upper levels —
then the latents are de-normalised with the bundle's latent statistics and the LAE decodes them into a voxel
field ``V``; the stage-1 decoder renders ``V`` from any camera.

Seeds: scene ``i`` of ``generate(num_scenes, seed=s)`` is sampled with its own CPU ``torch.Generator`` seeded
``s + i`` (its `NeuralScene.seed`), drawn on the CPU whatever the device. So scene i does not depend on the batch
size or on the other scenes, and ``generate(1, seed=scene.seed)`` regenerates a scene. Same seed, same bytes on one
device and batch size; across batch sizes the scenes agree up to float rounding of batched kernels.

Model bundles (the folder format, `write_bundle`, `load_part`, `BundleError`) live in `nfldm_sdk.pipelines.bundle` and are
re-exported here; `SceneGenerator.from_pretrained` reads one and fails with a `BundleError` naming the part, the
file and the fix when a part is missing, holds the wrong class, changed since export (sha256), does not parse or
does not fit the others (latent shapes, voxel grid), or when the manifest's format version is unknown.

Many scenes: `SceneGenerator.generate_iter` yields the scenes batch by batch in bounded memory (``nfldm generate``
writes each one as it comes); `SceneGenerator.generate` returns them all as a list.

Example::

    gen = SceneGenerator.from_pretrained("assets/models/small", device="cuda")
    scenes = gen.generate(num_scenes=4, seed=0, steps=25, sampler="dpmsolver++")
    images = scenes[0].render(cameras)           # SceneImages: rgb [N,H,W,3] uint8, depth/alpha [N,H,W]
    scenes[0].save("out/scene_000000")
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn

from nfldm_sdk.pipelines.bundle import (BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, DEFAULT_MODEL_ENV, MANIFEST_NAME, PART_CLASSES,
                              PART_DESCRIPTIONS, BundleError, BundleManifest, PartMismatch, changed_parts,
                              check_consistency, default_model_path, describe_part, export_fix, load_part, part_hash,
                              read_manifest, write_bundle)
from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.errors import NfldmError
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.models.latent_ae import LatentAutoEncoder, Latents, LatentStats
from nfldm_sdk.models.scene_ae import SceneAutoEncoder
from nfldm_sdk.rendering.api import HIT_ALPHA
from nfldm_sdk.rendering.sizes import warn_if_unsupported_size
from nfldm_sdk.persistence import (CONFIG_NAME, WEIGHTS_NAME, ModelFileError, config_from_dict, nfldm_version,
                                   read_config)
from nfldm_sdk.pipelines.sampling import LEVELS, SAMPLERS, NoiseSchedule, SamplerDefaults, denormalize_level, sample_level

from nfldm_sdk.pipelines.generate_args import GenerateArgumentError, check_generate_args, check_int

__all__ = ["SceneGenerator", "NeuralScene", "SceneImages", "BundleManifest", "BundleError", "write_bundle",
           "read_manifest", "load_part", "BUNDLE_FORMAT", "BUNDLE_FORMAT_VERSION", "MANIFEST_NAME", "PART_CLASSES",
           "SCENE_FORMAT", "SCENE_FORMAT_VERSION", "part_hash", "DEFAULT_MODEL_ENV", "default_model_path",
           "PART_DESCRIPTIONS", "PartMismatch", "check_consistency", "changed_parts"]

SCENE_FORMAT = "nfldm.neural_scene"
SCENE_FORMAT_VERSION = 1


class SceneNotFoundError(NfldmError, FileNotFoundError):
    """A path given as a scene folder holds no ``scene.json``."""


class SceneFormatError(NfldmError, ValueError):
    """A scene folder's ``scene.json`` is unreadable or of another format version; the message names the file."""


# ============================================================================================ scenes
@dataclass(eq=False)
class SceneImages:
    """Renders of one scene from N cameras.

    Attributes:
        rgb: ``[N, H, W, 3]`` uint8 RGB (the project's image convention; ``round(255 · decoder output)``).
        depth: ``[N, H, W]`` float32 planar z-depth in metres; ``inf`` where the ray met nothing (valid = isfinite).
        alpha: ``[N, H, W]`` float32 accumulated opacity in [0, 1].
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    alpha: torch.Tensor


@dataclass(eq=False)
class NeuralScene:
    """One generated scene: its voxel field, its provenance and the stage-1 decoder that renders it.

    Attributes:
        field: unbatched `VoxelField` (density ``[Z, Y, X]``, features ``[C, Z, Y, X]``, bounds ``[2, 3]``) in the
            scene frame (x forward, y left, z up, metres; origin on the ground below the ego vehicle).
        seed: the seed of this scene's generator (``generate(1, seed=seed)`` with the same bundle, sampler and steps
            regenerates it).
        bundle_hash: the `BundleManifest.bundle_hash` of the bundle that generated it.
        decoder: the stage-1 `SceneAutoEncoder` that renders the field (None after `load` without a decoder:
            `render` then asks for one).
        sampler, steps: how it was sampled.
        refinements: one record per SDS refinement applied since sampling, oldest first (empty: the raw sample);
            each is `nfldm_sdk.guidance.sds.refinement_record`'s dict (steps, guidance, alpha, negative, lr, views, seed).
    """

    field: VoxelField
    seed: int
    bundle_hash: str
    decoder: SceneAutoEncoder | None = None
    sampler: str = ""
    steps: int = 0
    refinements: tuple[dict, ...] = ()

    @torch.no_grad()
    def render(self, cameras: Cameras, views_per_call: int = 8) -> SceneImages:
        """Render the scene from `cameras` through the stage-1 decoder (no gradients; for differentiable renders
        call ``decoder.decode`` on ``VoxelField.stack([scene.field])``).

        Args:
            cameras: `Cameras` of any batch shape (flattened to N views), OpenCV axes, ``cam_to_world`` into the
                scene frame; ``width`` and ``height`` divisible by the decoder's downsample factor. Supported sizes:
                each side within 2× of the decoder's training size (``decoder.config.image_size``, recorded in the
                bundle's ``scene_ae/config.json``); beyond it a `RenderSizeWarning` is shown once per decoder
                (`nfldm_sdk.rendering.sizes`).
            views_per_call: views rendered per decoder call (bounds memory; depth and alpha do not depend on it,
                rgb may move by one level).
        Returns:
            `SceneImages` (rgb uint8 ``[N, H, W, 3]``, depth/alpha float32 ``[N, H, W]``) on the decoder's device;
            depth is ``inf`` where alpha stayed below `nfldm_sdk.rendering.api.HIT_ALPHA` (0.5).
        """
        if self.decoder is None:
            raise ValueError("this NeuralScene has no decoder: load it with NeuralScene.load(path, decoder=BUNDLE) "
                             "(the bundle that generated it) or pass decoder=SceneAutoEncoder")
        dec = self.decoder
        device = next(dec.parameters()).device
        field = VoxelField.stack([self.field.to(device=device, dtype=torch.float32)])   # [1, ...]
        cams = cameras.flatten().to(device=device, dtype=torch.float32)                  # [N]
        warn_if_unsupported_size(dec, cams.width, cams.height, stacklevel=4)   # 4: past torch.no_grad's wrapper
        rgb, depth, alpha = [], [], []
        for start in range(0, len(cams), max(1, int(views_per_call))):
            chunk = cams[start:start + views_per_call]
            out = dec.decode(field, chunk.reshape(1, len(chunk)), min_hit_alpha=HIT_ALPHA)  # rgb [1, n, 3, H, W]
            rgb.append((out.rgb[0].clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1))  # [n, H, W, 3]
            depth.append(out.depth[0].float())
            alpha.append(out.alpha[0].float())
        return SceneImages(rgb=torch.cat(rgb), depth=torch.cat(depth), alpha=torch.cat(alpha))

    def save(self, path: str | Path) -> Path:
        """Write the scene to folder `path`: ``field.safetensors`` (`VoxelField.save`) + ``scene.json`` (format,
        version, seed, bundle hash, sampler, steps, ``refinements`` (`refinements`: ``[]`` for a raw sample), nfldm
        version). The decoder is not copied (it is in the bundle)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.field.save(path / "field.safetensors")
        meta = {"format": SCENE_FORMAT, "format_version": SCENE_FORMAT_VERSION, "seed": int(self.seed),
                "bundle_hash": self.bundle_hash, "sampler": self.sampler, "steps": int(self.steps),
                "refinements": [dict(r) for r in self.refinements], "field": "field.safetensors",
                "nfldm_version": nfldm_version()}
        (path / "scene.json").write_text(json.dumps(meta, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, decoder: SceneAutoEncoder | str | Path | None = None,
             device: str | torch.device | None = None) -> "NeuralScene":
        """Read a scene written by `save`.

        Args:
            path: the scene folder.
            decoder: None (the scene cannot `render` until given one), a `SceneAutoEncoder`, or the path of the
                model bundle that generated the scene (its ``scene_ae`` part is loaded; the bundle hash must match).
            device: where to put the field (and a decoder loaded from a bundle); default CPU.
        """
        path = Path(path)
        meta_path = path / "scene.json"
        if not meta_path.is_file():
            raise SceneNotFoundError(f"{meta_path} not found: {path} is not a scene folder written by NeuralScene.save "
                                     "(make one with `nfldm generate`)")
        try:
            meta = read_config(meta_path)
        except ModelFileError as e:
            raise SceneFormatError(f"{e}: restore it, or generate the scene again with `nfldm generate`") from e
        if meta.get("format") != SCENE_FORMAT or meta.get("format_version") != SCENE_FORMAT_VERSION:
            raise SceneFormatError(f"{meta_path}: format {meta.get('format')!r} version {meta.get('format_version')}, expected "
                             f"{SCENE_FORMAT!r} version {SCENE_FORMAT_VERSION}: save the scene again with this nfldm")
        field = VoxelField.load(path / meta.get("field", "field.safetensors"), device=device)
        if isinstance(decoder, (str, Path)):
            manifest = read_manifest(decoder)
            if manifest.bundle_hash != meta["bundle_hash"]:
                raise BundleError(f"scene {path} was generated by bundle {meta['bundle_hash'][:12]}…, but {decoder} is bundle "
                                  f"{manifest.bundle_hash[:12]}…: pass the bundle that generated the scene")
            decoder = load_part(decoder, "scene_ae", manifest, device=device or "cpu")  # type: ignore[assignment]
        elif decoder is not None and not isinstance(decoder, SceneAutoEncoder):
            raise TypeError(f"decoder must be None, a SceneAutoEncoder or a bundle path, got {type(decoder).__name__}")
        if decoder is not None:
            cfg = decoder.config  # type: ignore[union-attr]
            if (tuple(cfg.grid_shape), cfg.feature_channels) != (field.grid_shape, field.num_channels):
                raise ValueError(f"decoder expects grid {tuple(cfg.grid_shape)} with C={cfg.feature_channels}, the scene has "
                                 f"{field.grid_shape} with C={field.num_channels}: pass the bundle that generated the scene")
        return cls(field=field, seed=int(meta["seed"]), bundle_hash=str(meta["bundle_hash"]), decoder=decoder,  # type: ignore[arg-type]
                   sampler=str(meta.get("sampler", "")), steps=int(meta.get("steps", 0)),
                   refinements=tuple(meta.get("refinements", ())))

    # ---------------------------------------------------------------- sensors and viewing (nfldm_sdk.sensors.sensors / viz)
    def render_trajectory(self, trajectory, rig, *, batch_size: int = 12, with_range: bool = False, device=None,
                          check_overlap: bool = True, progress: bool = False):
        """Render `rig` (a `CameraRig`) along `trajectory` (a `Trajectory` in the scene frame): yields per tick a list
        of `nfldm_sdk.sensors.sensors.Frame` (rgb uint8 [H,W,3], depth float32 [H,W] planar metres, inf where alpha <
        `HIT_ALPHA`, alpha, metadata). The rig's image size should stay within 2× of the decoder's training size per
        side (``decoder.config.image_size``; a `RenderSizeWarning` otherwise)."""
        from nfldm_sdk.sensors.sensors import render_trajectory

        return render_trajectory(self, trajectory, rig, batch_size=batch_size, with_range=with_range, device=device,
                                 check_overlap=check_overlap, progress=progress)

    def world(self, trajectory, *, rate_hz=None, rig=None, batch_size: int = 12, device=None):
        """A CARLA-like `nfldm_sdk.sensors.sensors.SensorWorld` driving `trajectory` through this scene (default rig: the
        ``capture`` preset at the decoder's training image size)."""
        from nfldm_sdk.sensors.sensors import SensorWorld

        return SensorWorld(self, trajectory, rate_hz=rate_hz, rig=rig, batch_size=batch_size, device=device)

    def spawn_camera(self, spec, attach_to, transform=None):
        """Spawn a camera (a `CameraSpec` or a preset camera name) on `attach_to` (the ego of `scene.world(t)`)."""
        from nfldm_sdk.sensors.sensors import spawn_camera

        return spawn_camera(self, spec, attach_to, transform)

    def to_mesh(self, level: float | None = None, *, colors: str = "auto", color_size: int | None = None, device=None):
        """Marching-cubes `open3d.geometry.TriangleMesh` of the density (scene metres), coloured by the decoded
        appearance; `level` is a density in 1/m (default ln2 / voxel size)."""
        from nfldm_sdk.viz.viz import field_to_mesh

        return field_to_mesh(self, level, colors=colors, color_size=color_size, device=device)

    def to_point_cloud(self, cameras=None, *, min_alpha: float = HIT_ALPHA, stride: int = 1, voxel_size=None, device=None):
        """Coloured `open3d.geometry.PointCloud` back-projected from rendered RGB-D at `cameras` (default: 11
        overview views)."""
        from nfldm_sdk.viz.viz import scene_to_point_cloud

        return scene_to_point_cloud(self, cameras, min_alpha=min_alpha, stride=stride, voxel_size=voxel_size,
                                    device=device)

    def show(self, trajectory=None, rig=None, *, screenshot=None, geometry: str = "mesh", level=None,
             width: int = 1280, height: int = 720, view: str = "above_behind", device=None):
        """Open the scene in Open3D (mesh or points, rig frusta along `trajectory`, the path as a line), or with
        `screenshot=PATH` render the same view offscreen to a PNG and return its path."""
        from nfldm_sdk.viz.viz import show_scene

        return show_scene(self, trajectory, rig, geometry=geometry, level=level, screenshot=screenshot, width=width,
                          height=height, view=view, device=device)


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
            return cls(parts["scene_ae"], parts["latent_ae"], {k: parts[f"denoiser_{k}"] for k in LEVELS}, stats,
                       schedule, defaults, bundle_hash=manifest.bundle_hash, manifest=manifest)
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
        for m in (self.scene_ae, self.latent_ae, *self.denoisers.values()):
            m.to(device)
        return self

    @torch.no_grad()
    def sample_latents(self, seeds: Sequence[int], steps: int | None = None, sampler: str | None = None) -> Latents:
        """Sample one batch of latents, scene i with a CPU generator seeded ``seeds[i]``: g, then c | g, then f | g, c.

        Returns:
            de-normalised `Latents` (g ``[B, G]``, c ``[B, 4, Zc, Yc, Xc]``, f ``[B, 4, Y, X]``) ready for the LAE.
        """
        steps = self.sampler_defaults.steps if steps is None else check_int("steps", steps, 1)
        sampler = sampler or self.sampler_defaults.sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
        seeds = [check_int("seeds[i]", s, 0) for s in seeds]
        gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        sampled: dict[str, torch.Tensor] = {}
        for level in LEVELS:                                   # g -> c -> f, each conditioned on the clean upper levels
            denoiser = self.denoisers[level]
            cond = tuple(sampled[k] for k in denoiser.cond_levels)
            shape = (len(seeds), *denoiser.latent_shape)
            sampled[level] = sample_level(denoiser, shape, cond, self.noise_schedule.scheduler(sampler), steps, gens)
        return Latents(**{k: denormalize_level(self.latent_stats, k, v) for k, v in sampled.items()})

    def generate(self, num_scenes: int = 1, seed: int = 0, steps: int | None = None, sampler: str | None = None,
                 batch_size: int | None = None, progress: bool = False, *, refine: bool = False, guidance=None,
                 refine_config=None) -> list[NeuralScene]:
        """Generate `num_scenes` scenes as a list; scene i uses seed ``seed + i`` (module docstring).

        The list holds every scene's field at once (the `small` preset: 128×128×32×(1+32) float32 ≈ 69 MB per
        scene), so for many scenes use `generate_iter`, which holds one batch at a time. Arguments, checks and
        results are `generate_iter`'s.

        Returns:
            list of `NeuralScene` (fields on the generator's device, decoder = the bundle's stage-1 model).
        """
        return list(self.generate_iter(num_scenes, seed, steps, sampler, batch_size, progress, refine=refine,
                                       guidance=guidance, refine_config=refine_config))

    def generate_iter(self, num_scenes: int = 1, seed: int = 0, steps: int | None = None, sampler: str | None = None,
                      batch_size: int | None = None, progress: bool = False, *, refine: bool = False, guidance=None,
                      refine_config=None) -> Iterator[NeuralScene]:
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
            guidance: the `nfldm_sdk.guidance.guidance.GuidanceModel` for `refine` (e.g. ``PriorGuidance.from_bundle(path)``).
            refine_config: `nfldm_sdk.guidance.sds.RefineConfig` (steps, lr, views per step, guidance alpha).
        Returns:
            an iterator of `NeuralScene` (field on the generator's device, decoder = the bundle's stage-1 model).
        Raises:
            `nfldm_sdk.pipelines.generate_args.GenerateArgumentError` (a ``ValueError``) naming a bad argument (or a missing
            `guidance` for `refine`), before the first scene is sampled.
        """
        args = check_generate_args(num_scenes, seed, steps, batch_size, sampler, default_steps=self.sampler_defaults.steps,
                                   default_sampler=self.sampler_defaults.sampler, samplers=SAMPLERS)
        if refine and guidance is None:
            raise GenerateArgumentError("guidance: refine=True needs a guidance model, e.g. "
                                        "guidance=PriorGuidance.from_bundle(BUNDLE) after `nfldm train prior "
                                        "--add-to-bundle` (see nfldm_sdk.guidance.guidance)")
        return self._scenes(args, progress, guidance if refine else None, refine_config)

    def _scenes(self, args, progress: bool, guidance, refine_config) -> Iterator[NeuralScene]:
        # A generator of its own, so that generate_iter checks its arguments when called, not at the first next().
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=args.num_scenes, desc="generating", unit="scene")
        try:
            for start in range(0, args.num_scenes, args.batch_size):
                seeds = [args.seed + i for i in range(start, min(start + args.batch_size, args.num_scenes))]
                with torch.no_grad():
                    latents = self.sample_latents(seeds, args.steps, args.sampler)
                    fields = self.latent_ae.decode(latents, snap_to_codebook=self.sampler_defaults.snap_to_codebook)
                del latents
                batch = []
                for i, s in enumerate(seeds):
                    one = fields[i]
                    one = VoxelField(one.density.clone(), one.features.clone(), one.bounds.clone())  # not a view of the batch
                    batch.append(NeuralScene(field=one, seed=s, bundle_hash=self.bundle_hash, decoder=self.scene_ae,
                                             sampler=args.sampler, steps=args.steps))
                del fields, one                    # the batched field is freed before the scenes are handed out
                while batch:
                    scene = batch.pop(0)
                    if guidance is not None:
                        from nfldm_sdk.guidance.sds import refine_neural_scene

                        scene = refine_neural_scene(scene, guidance, refine_config, progress=progress).scene
                    if bar is not None:
                        bar.update(1)
                    yield scene
                    del scene                      # only the caller holds a scene once it is handed out
        finally:
            if bar is not None:
                bar.close()
