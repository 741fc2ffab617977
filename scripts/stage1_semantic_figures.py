"""Held-out semantic figures of a stage-1 model (a run or a model folder) on capture stores, by `nfldm eval`'s rule.

    python scripts/stage1_semantic_figures.py RUN STORE... [--val-fraction 0.25] [--critic RUN] [--json out.json]

Every held-out window (`SceneWindowDataset(split="val")`: the episode split of every stage) is encoded and rendered
at its own views with the user-facing label rule (`HIT_ALPHA`; no hit = sky), and compared with the captured tags:
mIoU over the classes present, per-class IoU and the majority-class baseline of the same pixels
(`nfldm_training.evaluation.semantic.SemanticEvaluation`, the code `nfldm eval` runs). With ``--critic`` it also
gives the critic's mIoU on the captured views (the label-agreement ceiling) and the label agreement of the
reconstructions. For models that are not (yet) part of a bundle; `nfldm eval` gives the same figures for bundles.
"""
from __future__ import annotations

import argparse
import json

import torch

from nfldm_sdk.models.critic import PerceptionCritic
from nfldm_sdk.models.scene_ae import SceneAutoEncoder
from nfldm_sdk.persistence import resolve_model_dir
from nfldm_training.data.capture_windows import SceneWindowDataset, collate_windows
from nfldm_training.evaluation.semantic import SemanticEvaluation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("stores", nargs="+")
    ap.add_argument("--val-fraction", type=float, default=0.25)
    ap.add_argument("--window", type=int, default=2)
    ap.add_argument("--critic")
    ap.add_argument("--json")
    args = ap.parse_args()
    ae = SceneAutoEncoder.from_pretrained(resolve_model_dir(args.model)).eval()
    critic = PerceptionCritic.from_pretrained(resolve_model_dir(args.critic)).eval() if args.critic else None
    ev = SemanticEvaluation(ae, critic, args.critic or "unavailable: no --critic", "cpu")
    val = SceneWindowDataset(args.stores, args.window, image_size=ae.config.image_size, split="val",
                             val_fraction=args.val_fraction)
    with torch.no_grad():
        for i in range(len(val)):
            batch = collate_windows([val[i]])
            cams = batch.cameras()
            ev.observe_reconstruction("s1", ae.encode(batch.images, cams), cams, batch)
    figs = ev.figures()
    s1 = figs.stage1
    print(f"{len(val)} held-out windows: stage-1 mIoU {s1.miou:.3f} (majority-class baseline {s1.majority_miou:.3f})")
    print("per class: " + ", ".join(f"{k} {v:.2f}" for k, v in s1.class_iou.items()))
    if figs.critic_captured is not None:
        print(f"critic on captured views: mIoU {figs.critic_captured.miou:.3f}; label agreement of the "
              f"reconstructions {figs.agreement_stage1.miou:.3f}")
    if args.json:
        out = {"windows": len(val), "stage1": s1.__dict__,
               "critic_captured": None if figs.critic_captured is None else figs.critic_captured.__dict__,
               "agreement_stage1": None if figs.agreement_stage1 is None else figs.agreement_stage1.__dict__}
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
