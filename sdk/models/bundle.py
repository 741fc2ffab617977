"""Model bundles: the folder format, its manifest, loading and checking its parts, writing one.

Model bundle (a folder)::

    BUNDLE/manifest.json      format + version, nfldm version, preset, latent stats, noise schedule, sampler defaults,
                              training-data hash, parts (class, folder, sha256), bundle hash
    BUNDLE/scene_ae/          stage 1 SceneAutoEncoder      (config.json + model.safetensors, save_pretrained)
    BUNDLE/latent_ae/         stage 2 LatentAutoEncoder
    BUNDLE/denoiser_g/        stage 3 GDenoiser  ψ_g
    BUNDLE/denoiser_c/        stage 3 CDenoiser  ψ_c
    BUNDLE/denoiser_f/        stage 3 FDenoiser  ψ_f
    BUNDLE/prior/             optional: the SDS guidance prior (`nfldm_sdk.guidance.prior.add_prior_to_bundle`)
    BUNDLE/critic/            optional: the perception critic of `nfldm eval` (`nfldm_sdk.models.critic.add_critic_to_bundle`)

`write_bundle` writes one (``nfldm export-bundle`` calls it) and `add_part` adds an optional part to it; `load_part`
loads any part (the optional ones included) and fails with a `BundleError` naming the part, the file and the fix when a part is missing, holds the
wrong class, changed since export (sha256), has a ``config.json`` that is not JSON or weights that are truncated;
`check_consistency` checks that the parts fit together (latent shapes, voxel grid). The manifest is written last: a
folder with a manifest is a complete bundle. A part's class is recorded as its class path, read through
`nfldm_sdk.persistence.CLASS_PATH_ALIASES` so that bundles written before a class moved keep loading. `nfldm_sdk.pipelines.generator.SceneGenerator.from_pretrained` reads bundles.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from nfldm_sdk.models.latent_ae import LatentAutoEncoder, LatentStats
from nfldm_sdk.models.scene_ae import SceneAutoEncoder
from nfldm_sdk.persistence import (CONFIG_NAME, WEIGHTS_NAME, ModelFileError, class_path, config_to_dict, names_class,
                                   nfldm_version, read_config, read_json_object)
from nfldm_sdk.models.latent_ae import LEVELS
from nfldm_sdk.models.noise_schedule import NoiseSchedule, SamplerDefaults
from nfldm_sdk.errors import NfldmError
from nfldm_sdk.models.denoisers import CDenoiser, FDenoiser, GDenoiser

__all__ = ["BundleManifest", "BundleError", "PartMismatch", "write_bundle", "write_manifest", "add_part",
           "read_manifest", "load_part",
           "changed_parts", "check_consistency", "part_hash", "describe_part", "export_fix", "default_model_path",
           "shipped_model_path",
           "BUNDLE_FORMAT", "BUNDLE_FORMAT_VERSION", "MANIFEST_NAME", "PART_CLASSES", "PART_DESCRIPTIONS",
           "DEFAULT_MODEL_ENV"]

BUNDLE_FORMAT = "nfldm.model_bundle"
BUNDLE_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

#: The parts of a bundle: name -> network class (the part's folder has the same name).
PART_CLASSES: dict[str, type[nn.Module]] = {
    "scene_ae": SceneAutoEncoder, "latent_ae": LatentAutoEncoder,
    "denoiser_g": GDenoiser, "denoiser_c": CDenoiser, "denoiser_f": FDenoiser,
}
#: What each part is, in the words of error messages (optional parts included).
PART_DESCRIPTIONS = {
    "scene_ae": "stage 1, the scene auto-encoder", "latent_ae": "stage 2, the latent auto-encoder",
    "denoiser_g": "stage 3, the g denoiser", "denoiser_c": "stage 3, the c denoiser",
    "denoiser_f": "stage 3, the f denoiser", "prior": "the SDS guidance prior",
    "critic": "the perception critic of nfldm eval",
}
#: The `nfldm export-bundle` option that supplies each part (used in error messages).
_EXPORT_OPTION = {"scene_ae": "--scene-ae", "latent_ae": "--latent-ae", "denoiser_g": "--ldm-g",
                  "denoiser_c": "--ldm-c", "denoiser_f": "--ldm-f"}


class BundleError(NfldmError, ValueError):
    """A model bundle is incomplete or inconsistent; the message names the part and the fix."""


class PartMismatch(BundleError):
    """Two parts of a bundle do not fit together (`check_consistency`).

    Attributes:
        part: the part the message blames (the one whose export option fixes the mismatch).
        fact: the mismatch itself, without a fix (e.g. ``"part 'latent_ae' was built for voxel grid ..."``).
    """

    def __init__(self, part: str, fact: str, fix: str):
        super().__init__(f"{fact}; {fix}")
        self.part, self.fact = part, fact


def describe_part(part: str) -> str:
    """``"part 'scene_ae' (stage 1, the scene auto-encoder)"``: a part's name and role, as messages give it."""
    desc = PART_DESCRIPTIONS.get(part)
    return f"part {part!r} ({desc})" if desc else f"part {part!r}"


#: Environment variable naming the bundle `SceneGenerator.from_pretrained()` loads when given no path.
DEFAULT_MODEL_ENV = "NFLDM_DEFAULT_MODEL"


def shipped_model_path() -> Path:
    """Where the default bundle ships with this installation (whether or not it is there).

    A wheel (``pip install .``) carries it as package data, ``<site-packages>/nfldm_sdk/default_model``; a source
    checkout (editable install) has it in ``<repo>/assets/models/default``, the folder the wheel's copy is built from.
    """
    package_root = Path(str(resources.files("nfldm_sdk")))
    packaged = package_root / "default_model"
    if packaged.is_dir():
        return packaged
    return package_root.resolve().parent / "assets" / "models" / "default"


def default_model_path() -> Path:
    """The default model bundle: ``$NFLDM_DEFAULT_MODEL`` when set, else the bundle shipped with the package
    (`shipped_model_path`).

    Raises:
        `BundleError` saying how to get or build the bundle when the folder holds no manifest.
    """
    env = os.environ.get(DEFAULT_MODEL_ENV)
    path = Path(env) if env else shipped_model_path()
    if not (path / MANIFEST_NAME).is_file():
        where = f"${DEFAULT_MODEL_ENV}={env}" if env else str(path)
        raise BundleError(
            f"no default model bundle at {where} (no {MANIFEST_NAME}). It ships with the package (nfldm_sdk/"
            "default_model in a wheel, assets/models/default in a git checkout); reinstall nfldm, or build one with "
            "scripts/train_default.sh (`nfldm train-all ... --bundle DIR`) and point "
            f"{DEFAULT_MODEL_ENV} at it, or pass a bundle path to SceneGenerator.from_pretrained(path)")
    return path


def export_fix(part: str) -> str:
    """How to rebuild a generative part: the ``nfldm export-bundle`` command with the option that supplies it."""
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
    data = read_json_object(
        path, missing=BundleError(f"{bundle} is not a model bundle: it has no {MANIFEST_NAME}. Build one with `nfldm "
                                  "export-bundle --scene-ae RUN --latent-ae RUN --ldm-g RUN --ldm-c RUN --ldm-f RUN --out BUNDLE`"),
        broken=lambda e: BundleError(f"{e}: the manifest was edited or truncated; re-export the bundle with "
                                     "`nfldm export-bundle`"))
    fmt = data.get("format")
    if fmt != BUNDLE_FORMAT:
        raise BundleError(f"{path}: format {fmt!r} is not {BUNDLE_FORMAT!r}; not a model bundle manifest")
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
              verify: bool = True, *, cls: type[nn.Module] | None = None, fix: str | None = None) -> nn.Module:
    """Load one part of a bundle, checking that it is listed, present, of the right class and unchanged since export.

    Every part goes through here, the optional ones too (the SDS ``prior``: pass its `cls` and `fix`).

    Args:
        bundle: the bundle folder.
        part: a `PART_CLASSES` name, or an optional part's name with `cls`.
        manifest: the bundle's manifest (read when None).
        device: where to put the network.
        verify: check the part's sha256 against the manifest (a changed part is refused).
        cls: the part's network class (default ``PART_CLASSES[part]``).
        fix: how to repair the part, ending each message (default: re-export with the part's option).
    Raises:
        `BundleError` naming the part, the file and the fix: not listed, missing, wrong class, changed since
        export, a ``config.json`` that is not JSON or does not fit the class, unreadable (truncated) weights,
        weights that do not fit the config.
    """
    bundle = Path(bundle)
    manifest = manifest or read_manifest(bundle)
    if cls is None:
        if part not in PART_CLASSES:
            raise KeyError(f"unknown bundle part {part!r}: one of {', '.join(PART_CLASSES)}")
        cls = PART_CLASSES[part]
    fix = fix or export_fix(part)
    entry = manifest.parts.get(part)
    if entry is None:
        raise BundleError(f"bundle {bundle}: the manifest lists no part {part!r}; {fix}")
    folder = bundle / entry.get("path", part)
    if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise BundleError(f"bundle {bundle}: part {part!r} is missing ({folder} needs {CONFIG_NAME} and "
                          f"{WEIGHTS_NAME}); {fix}")
    try:
        stored = read_config(folder / CONFIG_NAME).get("_class")
    except ModelFileError as e:
        raise BundleError(f"bundle {bundle}: {describe_part(part)} does not load: {e.problem}; {fix}") from e
    if not names_class(stored, cls) or not names_class(entry.get("class"), cls):
        raise BundleError(f"bundle {bundle}: part {part!r} holds a {stored or entry.get('class')}, expected a "
                          f"{class_path(cls)}; {fix}")
    if verify and entry.get("sha256") and part_hash(folder) != entry["sha256"]:
        raise BundleError(f"bundle {bundle}: part {part!r} changed since export (sha256 of {folder.name}/ differs from the "
                          f"manifest): it was replaced or corrupted; {fix} (or load with verify=False at your own risk)")
    try:
        return cls.from_pretrained(folder, device=device)  # type: ignore[attr-defined]
    except (ValueError, FileNotFoundError) as e:   # a ModelFileError names the file; others name the folder
        problem = e.problem if isinstance(e, ModelFileError) else str(e)
        raise BundleError(f"bundle {bundle}: {describe_part(part)} does not load: {problem}; {fix}") from e


def changed_parts(bundle: str | Path, manifest: BundleManifest) -> list[str]:
    """The parts of `bundle` whose files no longer have the sha256 the manifest records (in manifest order)."""
    bundle = Path(bundle)
    out = []
    for part, entry in manifest.parts.items():
        folder = bundle / entry.get("path", part)
        if entry.get("sha256") and (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file():
            if part_hash(folder) != entry["sha256"]:
                out.append(part)
    return out


def check_consistency(scene_ae: SceneAutoEncoder, latent_ae: LatentAutoEncoder, denoisers: Mapping[str, nn.Module],
                      latent_stats: LatentStats) -> None:
    """Check that the parts fit together; raises `PartMismatch` (a `BundleError`) naming the part and the fix.

    * the LAE's voxel grid, feature channels and box are the stage-1 model's;
    * each denoiser's latent shapes (g_dim, c ``(C, Zc, Yc, Xc)``, f ``(C, Y, X)``) are the LAE's;
    * the latent statistics have the LAE's channel counts.
    """
    s, lc = scene_ae.config, latent_ae.config
    if (tuple(s.grid_shape), int(s.feature_channels)) != (tuple(lc.grid_shape), int(lc.feature_channels)):
        raise PartMismatch("latent_ae", f"part 'latent_ae' was built for voxel grid {tuple(lc.grid_shape)} with "
                           f"C={lc.feature_channels}, but part 'scene_ae' makes grid {tuple(s.grid_shape)} with "
                           f"C={s.feature_channels}", f"the LAE was trained on another stage-1 model's fields; "
                           f"{export_fix('latent_ae')} using the LAE trained on this --scene-ae")
    if not torch.allclose(torch.tensor(s.bounds, dtype=torch.float64), torch.tensor(lc.bounds, dtype=torch.float64), atol=1e-4):
        raise PartMismatch("latent_ae", f"part 'latent_ae' decodes into box {lc.bounds} but part 'scene_ae' uses box "
                           f"{s.bounds}", f"{export_fix('latent_ae')} using the LAE trained on this --scene-ae")
    expect = {"g": (lc.g_dim,), "c": tuple(lc.c_shape), "f": tuple(lc.f_shape)}
    for level in LEVELS:
        part = f"denoiser_{level}"
        d = denoisers.get(level)
        if d is None:
            raise PartMismatch(part, f"part {part!r} is missing", export_fix(part))
        if tuple(d.latent_shape) != expect[level]:
            raise PartMismatch(part, f"part {part!r} models {level} of shape {tuple(d.latent_shape)} but part "
                               f"'latent_ae' makes {level} of shape {expect[level]}", "the denoiser was trained on "
                               f"another LAE's latents; {export_fix(part)} trained on latents of this --latent-ae")
        if level != "g" and int(d.config.g_dim) != lc.g_dim:
            raise PartMismatch(part, f"part {part!r} is conditioned on g of size {d.config.g_dim} but part "
                               f"'latent_ae' makes g of size {lc.g_dim}", f"{export_fix(part)} trained on latents of this "
                               "--latent-ae")
    if tuple(denoisers["f"].config.c_shape) != tuple(lc.c_shape):
        raise PartMismatch("denoiser_f", f"part 'denoiser_f' is conditioned on c of shape "
                           f"{tuple(denoisers['f'].config.c_shape)} but part 'latent_ae' makes c of shape "
                           f"{tuple(lc.c_shape)}", f"{export_fix('denoiser_f')} trained on latents of this --latent-ae")
    for level, n in (("c", lc.coarse_channels), ("f", lc.fine_channels)):
        for kind in ("mean", "std"):
            k = len(getattr(latent_stats, f"{level}_{kind}"))
            if k not in (1, n):
                raise PartMismatch("latent_ae", f"latent stats {level}_{kind} have {k} entries but {level} has {n} "
                                   "channels", "the stats come from another LAE's latents; re-run `nfldm encode-latents` "
                                   "and re-export the bundle")


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
        training_data_hash: sha256 of the latent store description (`nfldm_training.data.latent_levels`).
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
            raise BundleError(f"part {name!r} must be a {PART_CLASSES[name].__name__}, got {type(module).__name__}; {export_fix(name)}")
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
    write_manifest(tmp, manifest)
    tmp.rename(out)  # the complete bundle appears at once
    return out


def write_manifest(bundle: str | Path, manifest: BundleManifest) -> Path:
    """Write `manifest` as ``BUNDLE/manifest.json`` (indented JSON), replacing any manifest atomically: it is
    written to ``manifest.json.partial`` first and renamed over the old one. Returns the manifest's path."""
    path = Path(bundle) / MANIFEST_NAME
    tmp = path.with_name(MANIFEST_NAME + ".partial")
    tmp.write_text(json.dumps(dataclasses.asdict(manifest), indent=2) + "\n")
    os.replace(tmp, path)
    return path


def add_part(bundle: str | Path, part: str, model_dir: str | Path, cls: type[nn.Module],
             manifest: BundleManifest | None = None, *, half: bool = False) -> Path:
    """Copy a saved network (``config.json`` + ``model.safetensors`` of a `cls`) into ``BUNDLE/<part>/`` and list it
    in the manifest (class path, folder, sha256); returns the part folder. For optional parts (the SDS ``prior``,
    the ``critic``).

    An existing part of that name is replaced. The part is copied to ``<part>.partial`` first and the manifest is
    replaced atomically last (`write_manifest`). The ``bundle_hash`` is recomputed; it counts only the generative
    parts (`BundleManifest.compute_hash`), so adding an optional part leaves the bundle's identity unchanged.

    Args:
        bundle: the bundle folder.
        part: the part's name and folder (not a generative part of `PART_CLASSES`).
        model_dir: the folder written by ``save_pretrained``.
        cls: the network class recorded for the part.
        manifest: the bundle's manifest (read when None).
        half: store the weights as float16 (as `write_bundle`'s `half`: loaded back as float32); the network is
            loaded with ``cls.from_pretrained`` and saved again instead of copied.
    Raises:
        `BundleError` when `bundle` is not a bundle; ``FileNotFoundError`` when `model_dir` lacks a file.
    """
    bundle, src = Path(bundle), Path(model_dir)
    if part in PART_CLASSES:
        raise ValueError(f"{part!r} is a generative part: write it with write_bundle (`nfldm export-bundle`)")
    manifest = manifest or read_manifest(bundle)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (src / name).is_file():
            raise FileNotFoundError(f"{src} has no {name}: save the network with save_pretrained")
    dst, tmp = bundle / part, bundle / (part + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    if half:
        cls.from_pretrained(src, device="cpu").half().save_pretrained(tmp)  # type: ignore[attr-defined]
    else:
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            shutil.copy2(src / name, tmp / name)
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    manifest.parts[part] = {"class": class_path(cls), "path": part, "sha256": part_hash(dst)}
    manifest.bundle_hash = manifest.compute_hash()
    write_manifest(bundle, manifest)
    return dst
