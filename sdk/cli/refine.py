"""`nfldm refine`: SDS post-optimisation of a generated scene (docs/method.md, stage 4; `nfldm_sdk.guidance.sds`).

    nfldm refine out/scenes/scene_000000 --model assets/models/small --guidance prior --steps 500 --alpha 3 \\
        --seed 0 --out out/refined/scene_000000
    nfldm refine SCENE --model BUNDLE --guidance clip-ldm --guidance-path models/sd-image-variations \\
        --dataset-images data/frames --out SCENE_OUT

Guidance (`nfldm_sdk.guidance.prior`, `nfldm_sdk.guidance.clip_ldm`):

* ``prior`` — our offline prior: without ``--guidance-path``, the bundle's ``prior/`` part (added by ``nfldm train
  prior --add-to-bundle`` or ``nfldm export-bundle --prior RUN``); with it, the run folder of ``nfldm train prior``
  (or its ``RUN/model``).
* ``clip-ldm`` — the paper's CLIP-image-conditioned LDM from a local sd-image-variations folder (``--guidance-path``,
  default ``models/sd-image-variations``; never downloaded), its CLIP embeddings from open_clip (``--clip-model``,
  default ``ViT-L-14-quickgelu``; ``--clip-checkpoint``, a local ``.safetensors`` file or folder, default
  ``GUIDANCE_PATH/open_clip/``). y = mean CLIP image embedding of ``--dataset-images`` (png/jpg) or the text
  embedding of ``--prompt``; y′ = the mean image embedding of renders of the raw scene from the SDS camera
  distribution, or the text embedding of ``--negative-prompt``; or both from ``--conditions FILE`` (written by
  ``--save-conditions``). Text embeddings are rescaled to the norm of the renders' image embedding (the U-Net was
  trained on image embeddings).

Writes ``SCENE_OUT/`` = the refined scene (``field.safetensors`` + ``scene.json``, `NeuralScene.save`, whose
``refinements`` list ends with this refinement: steps, guidance, α, negative, lr, views, seed), ``refine.json``
(settings, guidance, skipped non-finite steps, seconds, per-step history) and ``preview.png``.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from nfldm_sdk.cli.generate import SCENE_MARKER
from nfldm_sdk.cli.names import DEVICE_DEFAULT_HELP, default_device
from nfldm_sdk.cli.output_path import check_output, staged_output

if TYPE_CHECKING:  # torch is imported inside the functions: `--help` start-up time
    import torch

__all__ = ["refine", "load_guidance", "clip_conditions", "read_images", "DEFAULT_CLIP_LDM_PATH", "ARTIFACT_VIEWS"]

#: Where `--guidance clip-ldm` looks without --guidance-path.
DEFAULT_CLIP_LDM_PATH = "models/sd-image-variations"
#: Renders of the raw scene whose mean CLIP embedding is y′ (clip-ldm without --conditions).
ARTIFACT_VIEWS = 16


def read_images(folder: str | Path) -> list[torch.Tensor]:
    """The png/jpg images of `folder` (sorted by name) as float ``[3, H, W]`` tensors in [0, 1]
    (`nfldm_sdk.viz.images.read_rgb_images`; no image is a usage error of ``--dataset-images``)."""
    # start-up time: torch and imageio load only when images are read
    import torch

    from nfldm_sdk.viz.images import NoImagesError, read_rgb_images

    try:
        images = read_rgb_images(folder)
    except NoImagesError as e:
        raise click.BadParameter(str(e), param_hint="--dataset-images") from e
    return [torch.from_numpy(img).permute(2, 0, 1).float() / 255.0 for img in images]


def load_guidance(kind: str, bundle: str | Path, path: str | Path | None, device: str, *,
                  clip_model: str | None = None, clip_checkpoint: str | Path | None = None):
    """The guidance model `kind` (``"prior"`` / ``"clip-ldm"``) without its y/y′ set for clip-ldm (module docstring).

    Args:
        kind: ``"prior"`` (`path` = its run, or None for the bundle's ``prior/`` part) or ``"clip-ldm"`` (`path` =
            the sd-image-variations folder, default `DEFAULT_CLIP_LDM_PATH`).
        bundle: the model bundle folder.
        device: torch device.
        clip_model, clip_checkpoint: clip-ldm's open_clip model name and local checkpoint (defaults:
            `nfldm_sdk.guidance.open_clip_encoder.DEFAULT_CLIP_MODEL`, ``PATH/open_clip/``).
    """
    # start-up time: the guidance models import torch and diffusers
    from nfldm_sdk.guidance.clip_ldm import ClipImageLDMGuidance
    from nfldm_sdk.guidance.open_clip_encoder import DEFAULT_CLIP_MODEL
    from nfldm_sdk.guidance.prior import PriorGuidance

    if kind == "prior":
        return PriorGuidance.from_pretrained(path, device=device) if path else PriorGuidance.from_bundle(bundle, device=device)
    if kind == "clip-ldm":
        return ClipImageLDMGuidance.from_pretrained(path or DEFAULT_CLIP_LDM_PATH, device=device,
                                                    clip_model=clip_model or DEFAULT_CLIP_MODEL,
                                                    clip_checkpoint=clip_checkpoint)
    raise click.BadParameter(f"unknown guidance {kind!r}: prior or clip-ldm", param_hint="--guidance")


def clip_conditions(model_g, raw, seed: int, device: str, dataset_images: str | None, prompt: str | None,
                    negative_prompt: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """clip-ldm's ``(y, y′)``, each ``[D]`` (module docstring): y from `prompt` or the images of `dataset_images`,
    y′ from `negative_prompt` or `ARTIFACT_VIEWS` renders of the raw scene `raw` (SDS cameras seeded `seed`).
    Text embeddings are rescaled to the norm of the renders' mean image embedding."""
    import torch

    from nfldm_sdk.cameras.builders import sample_sds_cameras

    if prompt is None and not dataset_images:
        raise click.UsageError("clip-ldm needs the dataset condition y: pass --dataset-images DIR (captured frames as "
                               "png/jpg), --prompt TEXT or --conditions FILE")
    h, w = raw.decoder.config.image_size
    cams = sample_sds_cameras((ARTIFACT_VIEWS,), w, h, torch.Generator().manual_seed(int(seed)))
    renders = raw.render(cams).rgb.permute(0, 3, 1, 2).float() / 255.0                      # [V, 3, H, W]
    rendered = model_g.compute_condition(renders)
    norm = rendered.norm()
    y = (model_g.compute_text_condition(prompt, norm=norm) if prompt is not None
         else model_g.compute_condition([x.to(device) for x in read_images(dataset_images)]))
    y_prime = model_g.compute_text_condition(negative_prompt, norm=norm) if negative_prompt is not None else rendered
    return y, y_prime


@click.command("refine")
@click.argument("scene", type=click.Path(exists=True, file_okay=False))
@click.option("--model", "model", required=True, type=click.Path(exists=True, file_okay=False),
              help="The model bundle that generated the scene (its stage-1 decoder renders it).")
@click.option("--guidance", type=click.Choice(["prior", "clip-ldm"]), default="prior", show_default=True,
              help="2D diffusion model of the SDS gradient.")
@click.option("--guidance-path", type=click.Path(), default=None,
              help="prior: a `nfldm train prior` run folder or its model/ (default: the bundle's prior/ part, added "
                   "by `nfldm export-bundle --prior RUN`); "
                   "clip-ldm: the local "
                   f"sd-image-variations folder (default {DEFAULT_CLIP_LDM_PATH}).")
@click.option("--steps", type=int, default=500, show_default=True, help="Optimisation steps.")
@click.option("--alpha", type=float, default=3.0, show_default=True, help="Guidance scale α (1 = no negative guidance).")
@click.option("--negative", type=click.Choice(["artifact", "null"]), default="artifact", show_default=True,
              help="artifact: negative guidance with y′ (the paper); null: plain classifier-free guidance.")
@click.option("--lr", type=float, default=1e-2, show_default=True, help="Adam learning rate of the field.")
@click.option("--views", type=int, default=2, show_default=True, help="Views rendered per step.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of cameras, timesteps and noise.")
@click.option("--clip-model", default=None,
              help="clip-ldm: the open_clip model name of the CLIP encoder (default ViT-L-14-quickgelu, OpenAI's "
                   "ViT-L/14) or the path of an open_clip model-config .json.")
@click.option("--clip-checkpoint", type=click.Path(), default=None,
              help="clip-ldm: its local .safetensors checkpoint, or a folder holding one (default "
                   "GUIDANCE_PATH/open_clip/).")
@click.option("--dataset-images", type=click.Path(exists=True, file_okay=False), default=None,
              help="clip-ldm: folder of dataset images (png/jpg) whose mean CLIP embedding is y.")
@click.option("--prompt", default=None, help="clip-ldm: y from this text prompt instead of --dataset-images.")
@click.option("--negative-prompt", default=None,
              help="clip-ldm: y′ from this text prompt instead of renders of the raw scene.")
@click.option("--conditions", type=click.Path(exists=True, dir_okay=False), default=None,
              help="clip-ldm: y and y′ from a file written by --save-conditions.")
@click.option("--save-conditions", type=click.Path(dir_okay=False), default=None,
              help="clip-ldm: write the y and y′ used to this .safetensors file.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder of the refined scene.")
@click.option("--device", default=default_device, show_default=DEVICE_DEFAULT_HELP, help="torch device.")
@click.option("--preview/--no-preview", default=True, show_default=True, help="Write preview.png of the refined scene.")
@click.option("--progress/--no-progress", default=True, help="Show the progress bar.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it is a scene folder.")
def refine(scene, model, guidance, guidance_path, steps, alpha, negative, lr, views, seed, clip_model, clip_checkpoint,
           dataset_images, prompt, negative_prompt, conditions, save_conditions, out, device, preview, progress,
           overwrite):
    """Refine a generated scene by score distillation with negative guidance; writes the refined scene to OUT.

    An existing OUT (other than an empty folder) is refused before anything runs unless --overwrite is given, which
    replaces only a scene folder; the scene is written beside OUT and moved into place once complete."""
    # start-up time: torch and the pipeline load only when the command runs, not for --help
    from nfldm_sdk.guidance.base import GuidanceNotAvailable, load_conditions
    from nfldm_sdk.guidance.base import save_conditions as write_conditions
    from nfldm_sdk.guidance.sds import RefineConfig, refine_scene
    from nfldm_sdk.pipelines.refine import refinement_record
    from nfldm_sdk.models.bundle import BundleError
    from nfldm_sdk.pipelines.scene import NeuralScene
    from nfldm_sdk.viz.previews import save_preview

    if steps < 0 or views < 1 or seed < 0:
        raise click.BadParameter("need --steps >= 0, --views >= 1 and --seed >= 0")
    check_output(out, overwrite, marker=SCENE_MARKER, file_suffixes=())
    try:
        raw = NeuralScene.load(scene, decoder=model, device=device)   # checks that `model` generated the scene
        decoder = raw.decoder
        model_g = load_guidance(guidance, model, guidance_path, device, clip_model=clip_model,
                                clip_checkpoint=clip_checkpoint)
    except (BundleError, GuidanceNotAvailable, FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from e

    if guidance == "clip-ldm":
        if conditions:
            y, y_prime = load_conditions(conditions)
        else:
            y, y_prime = clip_conditions(model_g, raw, seed, device, dataset_images, prompt, negative_prompt)
        model_g.set_conditions(dataset=y.to(device), artifact=y_prime.to(device))
        if save_conditions:
            write_conditions(save_conditions, y, y_prime)

    cfg = RefineConfig(steps=steps, lr=lr, views_per_step=views, alpha=alpha, negative=negative)
    result = refine_scene(raw, decoder, model_g, cfg, seed=seed, progress=progress)
    refined = NeuralScene(field=result.field, seed=raw.seed, bundle_hash=raw.bundle_hash, decoder=decoder,
                          sampler=raw.sampler, steps=raw.steps, trajectory=raw.trajectory,
                          refinements=(*raw.refinements, refinement_record(result, model_g, seed)))
    folder = Path(out)
    info = {"source_scene": str(scene), "bundle": str(model), "guidance": guidance,
            "guidance_path": str(guidance_path) if guidance_path else None, "seed": seed,
            "config": dataclasses.asdict(cfg), "nonfinite_steps": result.nonfinite_steps,
            "nonfinite_step_indices": result.nonfinite_step_indices, "seconds": result.seconds,
            "history": result.history.to_dict()}
    with staged_output(folder) as tmp:
        refined.save(tmp)
        (tmp / "refine.json").write_text(json.dumps(info, indent=2) + "\n")
        if preview:
            save_preview(refined, tmp / "preview.png")
    skipped = f", {result.nonfinite_steps} non-finite step(s) skipped" if result.nonfinite_steps else ""
    click.echo(f"refined scene in {folder} ({steps} steps, α={alpha}, {guidance}, {result.seconds:.1f} s{skipped})")
