"""README picture of the semantic field: held-out captured views, their stage-1 reconstruction and the field's labels.

    python scripts/semantic_picture.py RUN STORE... --out docs/images/semantic_reconstruction.png [--window-index 40]

Rows: captured RGB, reconstructed RGB, rendered labels (CARLA palette; the user-facing rule: no hit = sky), captured
labels (grouped into the model's classes the same way); one column per camera of the window's anchor frame. A model
with a label decoder gets one more row above the rendered labels: the field's own labels (the label decoder off).
"""
from __future__ import annotations

import argparse

import imageio.v3 as iio
import numpy as np
import torch

from nfldm_sdk.labels.classes import colorize_tags
from nfldm_sdk.labels.semantic_field import labels_from_probabilities
from nfldm_sdk.models.scene_ae import SceneAutoEncoder
from nfldm_sdk.persistence import resolve_model_dir
from nfldm_sdk.rendering.api import HIT_ALPHA
from nfldm_training.data.capture_windows import SceneWindowDataset, collate_windows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("stores", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--window-index", type=int, default=40)
    ap.add_argument("--val-fraction", type=float, default=0.25)
    ap.add_argument("--scale", type=int, default=2, help="nearest-neighbour upscale of every tile")
    args = ap.parse_args()
    ae = SceneAutoEncoder.from_pretrained(resolve_model_dir(args.model)).eval()
    classes = ae.config.classes
    val = SceneWindowDataset(args.stores, 2, image_size=ae.config.image_size, split="val",
                             val_fraction=args.val_fraction)
    batch = collate_windows([val[args.window_index % len(val)]])
    cams = batch.cameras()
    with torch.no_grad():
        out = ae.decode(ae.encode(batch.images, cams), cams, min_hit_alpha=HIT_ALPHA)
        tags, _ = labels_from_probabilities(out.semantic, torch.isfinite(out.depth), classes)
        field_tags = None
        if ae.label_decoder is not None:
            label_decoder, ae.label_decoder = ae.label_decoder, None         # the field's labels alone, for comparison
            plain = ae.decode(ae.encode(batch.images, cams), cams, min_hit_alpha=HIT_ALPHA)
            ae.label_decoder = label_decoder
            field_tags, _ = labels_from_probabilities(plain.semantic, torch.isfinite(plain.depth), classes)
    n = batch.images.shape[1] // 2                                       # the anchor frame's cameras
    views = range(n)
    rgb = lambda x: (x.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)  # noqa: E731
    rows = [[rgb(batch.images[0, v]) for v in views], [rgb(out.rgb[0, v]) for v in views]]
    if field_tags is not None:
        rows.append([colorize_tags(field_tags[0, v].numpy()) for v in views])
    rows += [[colorize_tags(tags[0, v].numpy()) for v in views],
             [colorize_tags(classes.normalise_tags(batch.semantic[0, v].numpy())) for v in views]]
    sheet = np.concatenate([np.concatenate(r, axis=1) for r in rows], axis=0)
    sheet = sheet.repeat(args.scale, 0).repeat(args.scale, 1)
    iio.imwrite(args.out, sheet)
    print(f"wrote {args.out}: {sheet.shape[1]}x{sheet.shape[0]}")


if __name__ == "__main__":
    main()
