"""`nfldm add-semantic-head`: give a bundle whose stage 1 has no semantic head one, fitted on its frozen field.

    nfldm add-semantic-head --model runs/bundle --data data/town03.zarr data/town05.zarr

Fits the linear head on the training episodes of the stores (`nfldm_training.modules.semantic_head_fit`), prints
the held-out mIoU, and replaces the bundle's ``scene_ae`` part (weights unchanged, the head and its class set added;
written to ``scene_ae.partial`` first, the manifest replaced last). The bundle hash changes: it is a new model.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

from nfldm_training.cli.common import capture_stores


def replace_scene_ae(bundle: Path, model) -> str:
    """Write `model` (a `SceneAutoEncoder`) as the bundle's ``scene_ae`` part, in the dtype the part had; returns
    the new bundle hash."""
    # start-up time: torch and the bundle format load only when the command runs
    import safetensors.torch
    from nfldm_sdk.models.bundle import part_hash, read_manifest, write_manifest

    manifest = read_manifest(bundle)
    folder = bundle / manifest.parts["scene_ae"]["path"]
    old = safetensors.torch.load_file(str(folder / "model.safetensors"))
    half = any(t.dtype.is_floating_point and t.dtype.itemsize == 2 for t in old.values())
    tmp = folder.with_name(folder.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    (model.half() if half else model).save_pretrained(tmp)
    shutil.rmtree(folder)
    tmp.rename(folder)
    manifest.parts["scene_ae"]["sha256"] = part_hash(folder)
    manifest.bundle_hash = manifest.compute_hash()
    write_manifest(bundle, manifest)
    return manifest.bundle_hash


@click.command("add-semantic-head")
@click.option("--model", "model_path", required=True, type=click.Path(exists=True, file_okay=False),
              help="Model bundle whose stage 1 gets the head (changed in place).")
@click.option("--data", multiple=True, required=True, help="Capture store(s) the bundle was trained on.")
@click.argument("more_stores", nargs=-1)
@click.option("--steps", default=400, show_default=True, type=click.IntRange(1), help="Adam steps (64 random views each).")
@click.option("--val-fraction", default=0.25, show_default=True, type=click.FloatRange(0.0, 0.9),
              help="Fraction of each store's episodes held out (use the bundle's training split).")
@click.option("--report", type=click.Path(dir_okay=False), help="Also write the figures as JSON here.")
def add_semantic_head(model_path, data, more_stores, steps, val_fraction, report):
    """Fit a semantic head on a trained bundle's frozen stage 1 and add it to the bundle."""
    # start-up time: torch loads only when the command runs
    from nfldm_sdk.models.bundle import load_part
    from nfldm_training.modules.semantic_head_fit import fit_semantic_head

    bundle = Path(model_path)
    stores = capture_stores(data, more_stores)
    scene_ae = load_part(bundle, "scene_ae")
    if scene_ae.semantic_head is not None:
        click.echo(f"{bundle}: stage 1 already has a semantic head ({len(scene_ae.config.semantic_classes)} "
                   "classes); fitting a new one on the frozen field")
    fit = fit_semantic_head(scene_ae.float(), stores, steps=steps, val_fraction=val_fraction, log=click.echo)
    new_hash = replace_scene_ae(bundle, fit.model)
    figures = {"train_windows": fit.train_windows, "val_windows": fit.val_windows, "train_loss": fit.train_loss,
               "val_miou": fit.val_miou, "val_majority_miou": fit.val_majority_miou,
               "val_class_iou": fit.val_class_iou, "bundle_hash": new_hash, "stores": list(stores), "steps": steps}
    if report:
        Path(report).write_text(json.dumps(figures, indent=2) + "\n")
    click.echo(f"{bundle}: semantic head added (bundle hash {new_hash[:12]}…)")
