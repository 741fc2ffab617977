"""`SceneGenerator`: sample scenes from a model bundle; `NeuralScene`: one generated scene you can render and save.

Generation (method.md stage 3): ``g ~ p(g)``, ``c ~ p(c | g)``, ``f ~ p(f | g, c)`` — three reverse-diffusion loops
(`nfldm_sdk.sampling.sample_level`), each conditioned on the already sampled, clean (normalised) upper levels —
then the latents are de-normalised with the bundle's latent statistics and the LAE decodes them into a voxel
field ``V``; the stage-1 decoder renders ``V`` from any camera.

Seeds: scene ``i`` of ``generate(num_scenes, seed=s)`` is sampled with its own CPU ``torch.Generator`` seeded
``s + i`` (its `NeuralScene.seed`), drawn on the CPU whatever the device. So scene i does not depend on the batch
size or on the other scenes, and ``generate(1, seed=scene.seed)`` regenerates a scene. Same seed, same bytes on one
device and batch size; across batch sizes the scenes agree up to float rounding of batched kernels.

Model bundle (a folder)::

    BUNDLE/manifest.json      format + version, nfldm version, preset, latent stats, noise schedule, sampler defaults,
                              training-data hash, parts (class, folder, sha256), bundle hash
    BUNDLE/scene_ae/          stage 1 SceneAutoEncoder      (config.json + model.safetensors, save_pretrained)
    BUNDLE/latent_ae/         stage 2 LatentAutoEncoder
    BUNDLE/denoiser_g/        stage 3 GDenoiser  ψ_g
    BUNDLE/denoiser_c/        stage 3 CDenoiser  ψ_c
    BUNDLE/denoiser_f/        stage 3 FDenoiser  ψ_f

`write_bundle` writes one (``nfldm export-bundle`` calls it); `SceneGenerator.from_pretrained` reads it and fails with
a `BundleError` naming the part and the fix when a part is missing, holds the wrong class, changed since export
(sha256) or does not fit the others (latent shapes, voxel grid), or when the manifest's format version is unknown.
The manifest is written last: a folder with a manifest is a complete bundle.

Example::

    gen = SceneGenerator.from_pretrained("assets/models/small", device="cuda")
    scenes = gen.generate(num_scenes=4, seed=0, steps=25, sampler="dpmsolver++")
    images = scenes[0].render(cameras)           # SceneImages: rgb [N,H,W,3] uint8, depth/alpha [N,H,W]
    scenes[0].save("out/scene_000000")
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from nfldm_sdk.cameras import Cameras
from nfldm_sdk.field import VoxelField
from nfldm_sdk.models.denoisers import CDenoiser, FDenoiser, GDenoiser
from nfldm_sdk.models.latent_ae import LatentAutoEncoder, Latents, LatentStats
from nfldm_sdk.models.scene_ae import SceneAutoEncoder
from nfldm_sdk.persistence import CONFIG_NAME, WEIGHTS_NAME, class_path, config_from_dict, config_to_dict, nfldm_version
from nfldm_sdk.sampling import LEVELS, SAMPLERS, NoiseSchedule, SamplerDefaults, denormalize_level, sample_level
from .errors import NfldmError

__all__ = ["SceneGenerator", "NeuralScene", "SceneImages", "BundleManifest", "BundleError", "write_bundle",
           "read_manifest", "load_part", "BUNDLE_FORMAT", "BUNDLE_FORMAT_VERSION", "MANIFEST_NAME", "PART_CLASSES",
           "SCENE_FORMAT", "SCENE_FORMAT_VERSION", "part_hash", "DEFAULT_MODEL_ENV", "default_model_path"]

BUNDLE_FORMAT = "nfldm.model_bundle"
BUNDLE_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SCENE_FORMAT = "nfldm.neural_scene"
SCENE_FORMAT_VERSION = 1

#: The parts of a bundle: name -> network class (the part's folder has the same name).
PART_CLASSES: dict[str, type[nn.Module]] = {
    "scene_ae": SceneAutoEncoder, "latent_ae": LatentAutoEncoder,
    "denoiser_g": GDenoiser, "denoiser_c": CDenoiser, "denoiser_f": FDenoiser,
}
#: The `nfldm export-bundle` option that supplies each part (used in error messages).
_EXPORT_OPTION = {"scene_ae": "--scene-ae", "latent_ae": "--latent-ae", "denoiser_g": "--ldm-g",
                  "denoiser_c": "--ldm-c", "denoiser_f": "--ldm-f"}


class BundleError(NfldmError, ValueError):
    """A model bundle is incomplete or inconsistent; the message names the part and the fix."""


#: Environment variable naming the bundle `SceneGenerator.from_pretrained()` loads when given no path.
DEFAULT_MODEL_ENV = "NFLDM_DEFAULT_MODEL"


def default_model_path() -> Path:
    """The default model bundle: ``$NFLDM_DEFAULT_MODEL`` when set, else ``<repo>/assets/models/default`` beside the
    installed source tree (an editable install: the folder above ``nfldm_sdk``'s ``sdk/``).

    Raises:
        `BundleError` saying how to get or build the bundle when the folder holds no manifest.
    """
    import os

    env = os.environ.get(DEFAULT_MODEL_ENV)
    path = Path(env) if env else Path(__file__).resolve().parents[1] / "assets" / "models" / "default"
    if not (path / MANIFEST_NAME).is_file():
        where = f"${DEFAULT_MODEL_ENV}={env}" if env else str(path)
        raise BundleError(
            f"no default model bundle at {where} (no {MANIFEST_NAME}). It ships in the repository's "
            "assets/models/default (git checkout with an editable install: `pip install -e .`); or build one with "
            "scripts/train_default.sh (`nfldm train-all ... --bundle DIR`) and point "
            f"{DEFAULT_MODEL_ENV} at it, or pass a bundle path to SceneGenerator.from_pretrained(path)")
    return path


def _fix(part: str) -> str:
    return f"re-export the bundle with `nfldm export-bundle ... {_EXPORT_OPTION[part]} RUN --out BUNDLE`"


# ============================================================================================ manifest
@dataclass
class BundleManifest:
    """The contents of ``manifest.json``."""

    preset: str
    """Name of the preset the parts were trained with (``tiny``, ``small``, ``paper``, ``custom``)."""
    latent_stats: dict
    """The `LatentStats` (as a dict) that normalised the latents the denoisers were trained on."""
    noise_schedule: dict
    """The `NoiseSchedule` (as a dict) of the denoisers."""
    sampler_defaults: dict
    """The `SamplerDefaults` (as a dict)."""
    training_data_hash: str
    """sha256 of the description of the latent store the denoisers were trained on (root attributes and arrays)."""
    parts: dict
    """``{part: {"class": dotted class path, "path": folder relative to the bundle, "sha256": hex}}``."""
    bundle_hash: str = ""
    """sha256 over the part hashes, latent stats, noise schedule and training-data hash: the bundle's identity."""
    training_data: dict = field(default_factory=dict)
    """Free-form description of the training data (store paths, scene counts)."""
    format: str = BUNDLE_FORMAT
    format_version: int = BUNDLE_FORMAT_VERSION
    nfldm_version: str = ""
    """nfldm version that wrote the bundle."""
    created: str = ""
    """UTC time of the export, ISO 8601."""

    def compute_hash(self) -> str:
        """The bundle hash of this manifest's content (see `bundle_hash`).

        Only the generative parts (`PART_CLASSES`) count: optional parts such as an SDS ``prior`` are verified by
        their own sha256 but do not change the bundle's identity, so scenes generated before a prior was added
        still load with ``NeuralScene.load(path, decoder=BUNDLE)``."""
        generative = {k: v["sha256"] for k, v in sorted(self.parts.items()) if k in PART_CLASSES}
        key = {"format_version": self.format_version, "parts": generative,
               "latent_stats": self.latent_stats, "noise_schedule": self.noise_schedule,
               "training_data_hash": self.training_data_hash}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def read_manifest(bundle: str | Path) -> BundleManifest:
    """Read and check ``BUNDLE/manifest.json`` (format name and version, required keys)."""
    bundle = Path(bundle)
    path = bundle / MANIFEST_NAME
    if not bundle.is_dir():
        raise BundleError(f"model bundle {bundle} not found (a bundle is a folder written by `nfldm export-bundle`)")
    if not path.is_file():
        raise BundleError(f"{bundle} is not a model bundle: it has no {MANIFEST_NAME}. Build one with "
                          "`nfldm export-bundle --scene-ae RUN --latent-ae RUN --ldm-g RUN --ldm-c RUN --ldm-f RUN --out BUNDLE`")
    data = json.loads(path.read_text())
    if data.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: format {data.get('format')!r} is not {BUNDLE_FORMAT!r}; not a model bundle manifest")
    version = data.get("format_version")
    if version != BUNDLE_FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format version {version}, but this nfldm ({nfldm_version()}) reads version "
                          f"{BUNDLE_FORMAT_VERSION}: re-export the bundle with this nfldm's `nfldm export-bundle` "
                          f"(or install the nfldm {data.get('nfldm_version', '?')} that wrote it)")
    known = {f.name for f in dataclasses.fields(BundleManifest)}
    missing = sorted({"preset", "latent_stats", "noise_schedule", "sampler_defaults", "training_data_hash", "parts"} - set(data))
    if missing:
        raise BundleError(f"{path} lacks {missing}: the manifest is incomplete; re-export the bundle with `nfldm export-bundle`")
    return BundleManifest(**{k: v for k, v in data.items() if k in known})


def part_hash(folder: Path) -> str:
    """sha256 over a part folder's ``config.json`` and ``model.safetensors`` (names and bytes)."""
    h = hashlib.sha256()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        h.update(name.encode())
        with open(folder / name, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def load_part(bundle: str | Path, part: str, manifest: BundleManifest | None = None, device: str | torch.device = "cpu",
              verify: bool = True) -> nn.Module:
    """Load one part of a bundle, checking that it is listed, present, of the right class and unchanged since export.

    Raises `BundleError` naming the part and the fix.
    """
    bundle = Path(bundle)
    manifest = manifest or read_manifest(bundle)
    if part not in PART_CLASSES:
        raise KeyError(f"unknown bundle part {part!r}: one of {', '.join(PART_CLASSES)}")
    cls = PART_CLASSES[part]
    entry = manifest.parts.get(part)
    if entry is None:
        raise BundleError(f"bundle {bundle}: the manifest lists no part {part!r}; {_fix(part)}")
    folder = bundle / entry.get("path", part)
    if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise BundleError(f"bundle {bundle}: part {part!r} is missing ({folder} needs {CONFIG_NAME} and {WEIGHTS_NAME}); {_fix(part)}")
    stored = json.loads((folder / CONFIG_NAME).read_text()).get("_class")
    if stored != class_path(cls) or entry.get("class") != class_path(cls):
        raise BundleError(f"bundle {bundle}: part {part!r} holds a {stored or entry.get('class')}, expected a "
                          f"{class_path(cls)}; {_fix(part)}")
    if verify and entry.get("sha256") and part_hash(folder) != entry["sha256"]:
        raise BundleError(f"bundle {bundle}: part {part!r} changed since export (sha256 of {folder.name}/ differs from the "
                          f"manifest): it was replaced or corrupted; {_fix(part)} (or load with verify=False at your own risk)")
    try:
        return cls.from_pretrained(folder, device=device)  # type: ignore[attr-defined]
    except (ValueError, FileNotFoundError) as e:
        raise BundleError(f"bundle {bundle}: part {part!r} does not load: {e}\n{_fix(part)}") from e


def check_consistency(scene_ae: SceneAutoEncoder, latent_ae: LatentAutoEncoder, denoisers: Mapping[str, nn.Module],
                      latent_stats: LatentStats) -> None:
    """Check that the parts fit together; raises `BundleError` naming the part and the fix.

    * the LAE's voxel grid, feature channels and box are the stage-1 model's;
    * each denoiser's latent shapes (g_dim, c ``(C, Zc, Yc, Xc)``, f ``(C, Y, X)``) are the LAE's;
    * the latent statistics have the LAE's channel counts.
    """
    s, lc = scene_ae.config, latent_ae.config
    if (tuple(s.grid_shape), int(s.feature_channels)) != (tuple(lc.grid_shape), int(lc.feature_channels)):
        raise BundleError(f"part 'latent_ae' was built for voxel grid {tuple(lc.grid_shape)} with C={lc.feature_channels}, but "
                          f"part 'scene_ae' makes grid {tuple(s.grid_shape)} with C={s.feature_channels}: the LAE was trained "
                          f"on another stage-1 model's fields; {_fix('latent_ae')} using the LAE trained on this --scene-ae")
    if not torch.allclose(torch.tensor(s.bounds, dtype=torch.float64), torch.tensor(lc.bounds, dtype=torch.float64), atol=1e-4):
        raise BundleError(f"part 'latent_ae' decodes into box {lc.bounds} but part 'scene_ae' uses box {s.bounds}; "
                          f"{_fix('latent_ae')} using the LAE trained on this --scene-ae")
    expect = {"g": (lc.g_dim,), "c": tuple(lc.c_shape), "f": tuple(lc.f_shape)}
    for level in LEVELS:
        part = f"denoiser_{level}"
        d = denoisers.get(level)
        if d is None:
            raise BundleError(f"part {part!r} is missing; {_fix(part)}")
        if tuple(d.latent_shape) != expect[level]:
            raise BundleError(f"part {part!r} models {level} of shape {tuple(d.latent_shape)} but part 'latent_ae' makes "
                              f"{level} of shape {expect[level]}: the denoiser was trained on another LAE's latents; "
                              f"{_fix(part)} trained on latents of this --latent-ae")
        if level != "g" and int(d.config.g_dim) != lc.g_dim:
            raise BundleError(f"part {part!r} is conditioned on g of size {d.config.g_dim} but part 'latent_ae' makes "
                              f"g of size {lc.g_dim}; {_fix(part)} trained on latents of this --latent-ae")
    if tuple(denoisers["f"].config.c_shape) != tuple(lc.c_shape):
        raise BundleError(f"part 'denoiser_f' is conditioned on c of shape {tuple(denoisers['f'].config.c_shape)} but part "
                          f"'latent_ae' makes c of shape {tuple(lc.c_shape)}; {_fix('denoiser_f')} trained on latents of this --latent-ae")
    for level, n in (("c", lc.coarse_channels), ("f", lc.fine_channels)):
        for kind in ("mean", "std"):
            k = len(getattr(latent_stats, f"{level}_{kind}"))
            if k not in (1, n):
                raise BundleError(f"latent stats {level}_{kind} have {k} entries but {level} has {n} channels: the stats "
                                  "come from another LAE's latents; re-run `nfldm encode-latents` and re-export the bundle")


def write_bundle(out: str | Path, *, scene_ae: SceneAutoEncoder, latent_ae: LatentAutoEncoder,
                 denoisers: Mapping[str, nn.Module], latent_stats: LatentStats, noise_schedule: NoiseSchedule,
                 sampler_defaults: SamplerDefaults | None = None, preset: str = "custom", training_data_hash: str = "",
                 training_data: Mapping[str, Any] | None = None, half: bool = False, overwrite: bool = False) -> Path:
    """Write a model bundle (see the module docstring) and return its folder.

    Args:
        out: the bundle folder (must not exist unless `overwrite`).
        scene_ae, latent_ae: stage 1 and 2 models.
        denoisers: ``{"g": GDenoiser, "c": CDenoiser, "f": FDenoiser}`` (the EMA weights).
        latent_stats: the normalisation the denoisers were trained with.
        noise_schedule: their forward process.
        sampler_defaults: how `SceneGenerator.generate` samples by default.
        preset: preset name, recorded in the manifest.
        training_data_hash: sha256 of the latent store description (`nfldm_training.latent_store_data`).
        training_data: free-form description of the data (paths, counts), recorded as is.
        half: store weights as float16 (half the size on disk; they load back as float32 into the float32 modules).
        overwrite: replace an existing `out`.
    Raises:
        `BundleError` when the parts do not fit together (checked before anything is written).
    """
    out = Path(out)
    check_consistency(scene_ae, latent_ae, denoisers, latent_stats)
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} exists: choose another --out or pass overwrite=True (--overwrite)")
        shutil.rmtree(out)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    modules = {"scene_ae": scene_ae, "latent_ae": latent_ae, **{f"denoiser_{k}": denoisers[k] for k in LEVELS}}
    parts = {}
    for name, module in modules.items():
        if not isinstance(module, PART_CLASSES[name]):
            raise BundleError(f"part {name!r} must be a {PART_CLASSES[name].__name__}, got {type(module).__name__}; {_fix(name)}")
        m = copy.deepcopy(module).to("cpu")
        if half:
            m = m.half()
        m.save_pretrained(tmp / name)  # type: ignore[attr-defined]
        parts[name] = {"class": class_path(type(module)), "path": name, "sha256": part_hash(tmp / name)}
    manifest = BundleManifest(
        preset=preset, latent_stats=config_to_dict(latent_stats), noise_schedule=noise_schedule.to_dict(),
        sampler_defaults=dataclasses.asdict(sampler_defaults or SamplerDefaults()), training_data_hash=training_data_hash,
        parts=parts, training_data=dict(training_data or {}), nfldm_version=nfldm_version(),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    manifest.bundle_hash = manifest.compute_hash()
    (tmp / MANIFEST_NAME).write_text(json.dumps(dataclasses.asdict(manifest), indent=2) + "\n")
    tmp.rename(out)  # the complete bundle appears at once
    return out


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
    """

    field: VoxelField
    seed: int
    bundle_hash: str
    decoder: SceneAutoEncoder | None = None
    sampler: str = ""
    steps: int = 0

    @torch.no_grad()
    def render(self, cameras: Cameras, views_per_call: int = 8) -> SceneImages:
        """Render the scene from `cameras` through the stage-1 decoder (no gradients; for differentiable renders
        call ``decoder.decode`` on ``VoxelField.stack([scene.field])``).

        Args:
            cameras: `Cameras` of any batch shape (flattened to N views), OpenCV axes, ``cam_to_world`` into the
                scene frame; ``width`` and ``height`` divisible by the decoder's downsample factor.
            views_per_call: views rendered per decoder call (bounds memory).
        Returns:
            `SceneImages` (rgb uint8 ``[N, H, W, 3]``, depth/alpha float32 ``[N, H, W]``) on the decoder's device.
        """
        if self.decoder is None:
            raise ValueError("this NeuralScene has no decoder: load it with NeuralScene.load(path, decoder=BUNDLE) "
                             "(the bundle that generated it) or pass decoder=SceneAutoEncoder")
        dec = self.decoder
        device = next(dec.parameters()).device
        field = VoxelField.stack([self.field.to(device=device, dtype=torch.float32)])   # [1, ...]
        cams = cameras.flatten().to(device=device, dtype=torch.float32)                  # [N]
        rgb, depth, alpha = [], [], []
        for start in range(0, len(cams), max(1, int(views_per_call))):
            chunk = cams[start:start + views_per_call]
            out = dec.decode(field, chunk.reshape(1, len(chunk)))                         # rgb [1, n, 3, H, W]
            rgb.append((out.rgb[0].clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(0, 2, 3, 1))  # [n, H, W, 3]
            depth.append(out.depth[0].float())
            alpha.append(out.alpha[0].float())
        return SceneImages(rgb=torch.cat(rgb), depth=torch.cat(depth), alpha=torch.cat(alpha))

    def save(self, path: str | Path) -> Path:
        """Write the scene to folder `path`: ``field.safetensors`` (`VoxelField.save`) + ``scene.json`` (format,
        version, seed, bundle hash, sampler, steps, nfldm version). The decoder is not copied (it is in the bundle)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.field.save(path / "field.safetensors")
        meta = {"format": SCENE_FORMAT, "format_version": SCENE_FORMAT_VERSION, "seed": int(self.seed),
                "bundle_hash": self.bundle_hash, "sampler": self.sampler, "steps": int(self.steps),
                "field": "field.safetensors", "nfldm_version": nfldm_version()}
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
            raise FileNotFoundError(f"{meta_path} not found: {path} is not a scene folder written by NeuralScene.save")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != SCENE_FORMAT or meta.get("format_version") != SCENE_FORMAT_VERSION:
            raise ValueError(f"{meta_path}: format {meta.get('format')!r} version {meta.get('format_version')}, expected "
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
                   sampler=str(meta.get("sampler", "")), steps=int(meta.get("steps", 0)))

    # ---------------------------------------------------------------- sensors and viewing (nfldm_sdk.sensors / viz)
    def render_trajectory(self, trajectory, rig, *, batch_size: int = 12, with_range: bool = False, device=None,
                          check_overlap: bool = True, progress: bool = False):
        """Render `rig` (a `CameraRig`) along `trajectory` (a `Trajectory` in the scene frame): yields per tick a list
        of `nfldm_sdk.sensors.Frame` (rgb uint8 [H,W,3], depth float32 [H,W] planar metres, alpha, metadata)."""
        from nfldm_sdk.sensors import render_trajectory

        return render_trajectory(self, trajectory, rig, batch_size=batch_size, with_range=with_range, device=device,
                                 check_overlap=check_overlap, progress=progress)

    def world(self, trajectory, *, rate_hz=None, rig=None, batch_size: int = 12, device=None):
        """A CARLA-like `nfldm_sdk.sensors.SensorWorld` driving `trajectory` through this scene."""
        from nfldm_sdk.sensors import SensorWorld

        return SensorWorld(self, trajectory, rate_hz=rate_hz, rig=rig, batch_size=batch_size, device=device)

    def spawn_camera(self, spec, attach_to, transform=None):
        """Spawn a camera (a `CameraSpec` or a preset camera name) on `attach_to` (the ego of `scene.world(t)`)."""
        from nfldm_sdk.sensors import spawn_camera

        return spawn_camera(self, spec, attach_to, transform)

    def to_mesh(self, level: float | None = None, *, colors: str = "auto", color_size: int = 128, device=None):
        """Marching-cubes `open3d.geometry.TriangleMesh` of the density (scene metres), coloured by the decoded
        appearance; `level` is a density in 1/m (default ln2 / voxel size)."""
        from nfldm_sdk.viz import field_to_mesh

        return field_to_mesh(self, level, colors=colors, color_size=color_size, device=device)

    def to_point_cloud(self, cameras=None, *, min_alpha: float = 0.5, stride: int = 1, voxel_size=None, device=None):
        """Coloured `open3d.geometry.PointCloud` back-projected from rendered RGB-D at `cameras` (default: 11
        overview views)."""
        from nfldm_sdk.viz import scene_to_point_cloud

        return scene_to_point_cloud(self, cameras, min_alpha=min_alpha, stride=stride, voxel_size=voxel_size,
                                    device=device)

    def show(self, trajectory=None, rig=None, *, screenshot=None, geometry: str = "mesh", level=None,
             width: int = 1280, height: int = 720, view: str = "above_behind", device=None):
        """Open the scene in Open3D (mesh or points, rig frusta along `trajectory`, the path as a line), or with
        `screenshot=PATH` render the same view offscreen to a PNG and return its path."""
        from nfldm_sdk.viz import show_scene

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
            `BundleError` naming the part and the fix (missing part, wrong class, changed since export, shapes that do
            not fit, unknown manifest version).
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
        return cls(parts["scene_ae"], parts["latent_ae"], {k: parts[f"denoiser_{k}"] for k in LEVELS}, stats, schedule,
                   defaults, bundle_hash=manifest.bundle_hash, manifest=manifest)

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
        steps = int(steps or self.sampler_defaults.steps)
        sampler = sampler or self.sampler_defaults.sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
        if any(int(s) < 0 for s in seeds):
            raise ValueError(f"seeds must be >= 0, got {list(seeds)}")
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        sampled: dict[str, torch.Tensor] = {}
        for level in LEVELS:                                   # g -> c -> f, each conditioned on the clean upper levels
            denoiser = self.denoisers[level]
            cond = tuple(sampled[k] for k in denoiser.cond_levels)
            shape = (len(seeds), *denoiser.latent_shape)
            sampled[level] = sample_level(denoiser, shape, cond, self.noise_schedule.scheduler(sampler), steps, gens)
        return Latents(**{k: denormalize_level(self.latent_stats, k, v) for k, v in sampled.items()})

    @torch.no_grad()
    def generate(self, num_scenes: int = 1, seed: int = 0, steps: int | None = None, sampler: str | None = None,
                 batch_size: int | None = None, progress: bool = False, *, refine: bool = False, guidance=None,
                 refine_config=None) -> list[NeuralScene]:
        """Generate `num_scenes` scenes; scene i uses seed ``seed + i`` (module docstring).

        Args:
            num_scenes: how many scenes.
            seed: seed of the first scene (>= 0).
            steps: denoising steps per level (default: the bundle's sampler defaults, 50).
            sampler: ``"ddim"``, ``"dpmsolver++"`` or ``"ddpm"`` (default: the bundle's).
            batch_size: scenes sampled together (default ``min(num_scenes, 8)``); does not change the scenes.
            progress: show a progress bar over batches.
            refine: post-optimise every scene by score distillation (`nfldm_sdk.sds`, method stage 4) with the
                same seed as its sampling, so a refined scene is reproducible from its seed alone.
            guidance: the `nfldm_sdk.guidance.GuidanceModel` for `refine` (e.g. ``PriorGuidance.from_bundle(path)``).
            refine_config: `nfldm_sdk.sds.RefineConfig` (steps, lr, views per step, guidance alpha).
        Returns:
            list of `NeuralScene` (fields on the generator's device, decoder = the bundle's stage-1 model).
        """
        if num_scenes < 1:
            raise ValueError(f"num_scenes must be >= 1, got {num_scenes}")
        if refine and guidance is None:
            raise ValueError("refine=True needs a guidance model, e.g. PriorGuidance.from_bundle(BUNDLE) after "
                             "`nfldm train prior --add-to-bundle` (see nfldm_sdk.guidance)")
        steps = int(steps or self.sampler_defaults.steps)
        sampler = sampler or self.sampler_defaults.sampler
        batch_size = int(batch_size or min(num_scenes, 8))
        starts = range(0, num_scenes, batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="generating", unit="batch")
        scenes: list[NeuralScene] = []
        for start in starts:
            seeds = [seed + i for i in range(start, min(start + batch_size, num_scenes))]
            latents = self.sample_latents(seeds, steps, sampler)
            fields = self.latent_ae.decode(latents, snap_to_codebook=self.sampler_defaults.snap_to_codebook)
            for i, s in enumerate(seeds):
                one = fields[i]
                one = VoxelField(one.density.clone(), one.features.clone(), one.bounds.clone())  # not a view of the batch
                scenes.append(NeuralScene(field=one, seed=s, bundle_hash=self.bundle_hash, decoder=self.scene_ae,
                                          sampler=sampler, steps=steps))
        if refine:
            from nfldm_sdk.sds import refine_neural_scene

            scenes = [refine_neural_scene(s, guidance, refine_config, progress=progress).scene for s in scenes]
        return scenes
