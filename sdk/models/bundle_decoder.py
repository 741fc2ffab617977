"""Swap the 2D decoders of a bundle's stage 1: a new bundle whose ``scene_ae`` is a decoder-only fine-tune.

A decoder-only fine-tune (``nfldm train scene-ae --init-from BUNDLE/scene_ae --set scene_ae_train.trainable=decoder``,
or ``=labels`` for the label decoder) changes only 2D CNNs after the volume render: the encoder, and so every voxel
field, the semantic head and its voxel labels stay bit-identical, and with them the LAE and the denoisers trained on
those fields. `replace_scene_decoder` writes a copy of the bundle with that stage 1 in place of the old one, after
checking that claim on the weights: the architecture is the same (but for a label decoder the bundle's stage 1 may
lack) and every tensor outside ``decoder.`` and ``label_decoder.`` is equal to the bundle's (as stored, float16 or
float32). Any other change of stage 1 needs the later stages retrained (`nfldm export-bundle`).
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch
from safetensors import safe_open

from nfldm_sdk.models.bundle import BundleError, load_part, part_hash, read_manifest, write_manifest
from nfldm_sdk.models.scene_ae import SceneAutoEncoder
from nfldm_sdk.persistence import WEIGHTS_NAME, resolve_model_dir

__all__ = ["replace_scene_decoder", "DECODER_PREFIXES"]

#: The state-dict prefixes of the stage-1 parameters a decoder-only fine-tune may change (the image decoder, the
#: label decoder).
DECODER_PREFIXES = ("decoder.", "label_decoder.")


def replace_scene_decoder(bundle: str | Path, scene_ae: str | Path, out: str | Path, *, overwrite: bool = False
                          ) -> Path:
    """Write ``out``: a copy of `bundle` whose stage 1 is `scene_ae`, a decoder-only fine-tune of the bundle's own.

    Args:
        bundle: the source bundle folder.
        scene_ae: the fine-tuned stage 1 (a ``nfldm train scene-ae`` run, its model folder, or a ``scene_ae`` folder).
        out: the bundle folder to write (not `bundle` itself: the source stays as it is).
        overwrite: replace an existing `out`.
    Returns:
        the new bundle's folder; its manifest lists the new ``scene_ae`` hash and a new bundle hash, and records
        the swap in ``training_data["decoder_fine_tune"]``.
    Raises:
        `BundleError` before anything is written when `scene_ae` has another architecture (a label decoder the
        bundle's stage 1 lacks is allowed), differs from the bundle's stage 1 outside the decoders, or `out`
        exists (without `overwrite`) or is `bundle`.
    """
    bundle, out = Path(bundle), Path(out)
    if out.resolve() == bundle.resolve():
        raise BundleError(f"--out {out} is the source bundle: write the new bundle to another folder")
    if out.exists() and not overwrite:
        raise BundleError(f"{out} exists: pass overwrite=True (--overwrite) or choose another --out")
    manifest = read_manifest(bundle)
    old = load_part(bundle, "scene_ae", manifest)
    try:
        new = SceneAutoEncoder.from_pretrained(resolve_model_dir(scene_ae))
    except FileNotFoundError as e:
        raise BundleError(f"{scene_ae}: no saved scene auto-encoder there ({e}); pass the run of `nfldm train scene-ae` "
                          "or its model folder") from None
    # the same architecture, except that a label decoder may join a stage 1 that has none
    if dataclasses.replace(new.config, label_decoder_widths=old.config.label_decoder_widths) != old.config \
            or (old.config.label_decoder_widths and new.config.label_decoder_widths != old.config.label_decoder_widths):
        raise BundleError(f"{scene_ae} has another architecture than {bundle}/scene_ae: only a decoder-only fine-tune "
                          "of the bundle's own stage 1 keeps its later stages valid; re-export with `nfldm export-bundle`")
    mine, theirs = new.state_dict(), old.state_dict()
    half = _stored_half(bundle / "scene_ae")
    changed = [k for k, v in theirs.items() if not k.startswith(DECODER_PREFIXES)
               and not torch.equal(_as_stored(mine[k], half), _as_stored(v, half))]
    if changed:
        raise BundleError(f"{scene_ae} differs from {bundle}/scene_ae outside the decoder ({changed[:3]}"
                          f"{' ...' if len(changed) > 3 else ''}): its fields differ, so the bundle's LAE and denoisers "
                          "no longer fit; fine-tune with --set scene_ae_train.trainable=decoder, or retrain the later "
                          "stages and re-export with `nfldm export-bundle`")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(bundle, tmp)
    shutil.rmtree(tmp / "scene_ae")
    (new.half() if half else new).save_pretrained(tmp / "scene_ae")
    manifest.parts["scene_ae"]["sha256"] = part_hash(tmp / "scene_ae")
    manifest.training_data = {**manifest.training_data, "decoder_fine_tune": {"source_bundle": manifest.bundle_hash,
                                                                              "scene_ae": str(scene_ae)}}
    manifest.bundle_hash = manifest.compute_hash()
    write_manifest(tmp, manifest)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _stored_half(folder: Path) -> bool:
    """Whether a saved part's weights are stored as float16."""
    with safe_open(str(folder / WEIGHTS_NAME), framework="pt") as fh:
        keys = list(fh.keys())
        return bool(keys) and fh.get_slice(keys[0]).get_dtype() == "F16"


def _as_stored(t: torch.Tensor, half: bool) -> torch.Tensor:
    """`t` as the bundle stores it (float16 when `half`), so equal weights compare equal after the round trip."""
    return t.half() if half and t.is_floating_point() else t
