"""Before/after figure of SDS refinement: generate scenes, refine them with the bundle's prior, compare the critic's
figures and write a picture.

    python scripts/refine_figure.py BUNDLE STORE... --out DIR [--num-scenes 8] [--seed 0] [--steps 500] \\
        [--alpha 3] [--views 2] [--sampling-steps N] [--prior RUN] [--critic RUN] [--device cuda]

Scenes ``seed … seed+N−1`` are sampled from BUNDLE and each is refined with the seed it was sampled with
(`nfldm_sdk.pipelines.refine.refine_neural_scene`, as ``generate(refine=True)`` does), guided by the bundle's
``prior/`` part (or ``--prior RUN``). Every scene, raw and refined, is rendered at the capture rig of the first
store (its anchor-frame cameras, at the bundle's image size) and judged by the perception critic (the bundle's
``critic/`` part or ``--critic RUN``) with the figures of ``nfldm eval``
(`nfldm_training.evaluation.semantic.SemanticEvaluation.observe_generation`):

* **CFD** ↓ — critic Fréchet distance between the renders and the captured held-out views of the stores, with its
  ceiling (captured training-episode views vs the same held-out views);
* **label agreement** ↑ — mIoU of the critic's labels on the renders' RGB against the field's own labels (needs a
  stage 1 with a semantic head).

Writes ``DIR/refine_figure.json`` (figures, settings, per-scene SDS numbers), ``DIR/refine_figure.md`` (the table)
and ``DIR/before_after.png`` (per pictured scene: one row of rig views before refinement, one after).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from nfldm_sdk.cameras.rig import CameraRig
from nfldm_sdk.errors import NfldmError
from nfldm_sdk.guidance.prior import PriorGuidance
from nfldm_sdk.guidance.sds import RefineConfig
from nfldm_sdk.pipelines.generator import SceneGenerator
from nfldm_sdk.pipelines.refine import refine_neural_scene
from nfldm_training.data.capture_views import CaptureViewDataset
from nfldm_training.evaluation.semantic import SemanticEvaluation, load_eval_critic, spread_indices


def critic_figures(gen: SceneGenerator, scenes, cams, captured: torch.Tensor, stores, val_fraction: float, critic,
                   source: str, device) -> dict:
    """``{"cfd", "cfd_ceiling", "cfd_images", "cfd_note", "label_agreement", "agreement_note"}`` of `scenes`
    rendered at `cams` (`Cameras` ``[V]``) against the captured held-out views ``captured [n, 3, H, W]``."""
    sem = SemanticEvaluation(gen.scene_ae, critic, source, device)
    sem.observe_generation(scenes, [cams], [captured], list(stores), tuple(gen.scene_ae.config.image_size), val_fraction,
                           None)
    f = sem.figures()
    agree = f.agreement_generated
    return {"cfd": f.cfd, "cfd_ceiling": f.cfd_ceiling, "cfd_images": f.cfd_images, "cfd_note": f.cfd_note,
            "label_agreement": None if agree is None else agree.miou,
            "label_agreement_majority": None if agree is None else agree.majority_miou,
            "agreement_note": f.agreement_note}


def picture(raw, refined, cams, rows: int, scale: int) -> np.ndarray:
    """``[H', W', 3]`` uint8: per scene a row of rig views before refinement and a row after."""
    out = []
    with torch.no_grad():
        for a, b in list(zip(raw, refined))[:rows]:
            for s in (a, b):
                rgb = s.render(cams).rgb.cpu().numpy()                                     # [V, H, W, 3]
                out.append(np.concatenate(list(rgb), axis=1))
    sheet = np.concatenate(out, axis=0)
    return sheet.repeat(scale, 0).repeat(scale, 1)


def fmt(v, p=3) -> str:
    return "—" if v is None else f"{v:.{p}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("stores", nargs="+", help="capture stores: the rig, and the captured views of the CFD")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--num-scenes", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sampling-steps", type=int, default=None, help="denoising steps (default: the bundle's)")
    ap.add_argument("--steps", type=int, default=500, help="SDS steps per scene")
    ap.add_argument("--alpha", type=float, default=3.0)
    ap.add_argument("--views", type=int, default=2, help="SDS views per step")
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--prior", default=None, help="a `nfldm train prior` run (default: the bundle's prior/ part)")
    ap.add_argument("--critic", default=None, help="a `nfldm train critic` run (default: the bundle's critic/ part)")
    ap.add_argument("--val-fraction", type=float, default=0.2, help="held-out episodes (as nfldm eval)")
    ap.add_argument("--picture-scenes", type=int, default=2, help="scenes in before_after.png")
    ap.add_argument("--scale", type=int, default=2, help="nearest-neighbour upscale of the picture")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    gen = SceneGenerator.from_pretrained(args.bundle, device=args.device)
    guidance = PriorGuidance.from_pretrained(args.prior, device=args.device) if args.prior else gen.bundle_prior()
    critic, source = load_eval_critic(args.bundle, args.critic, args.device)
    H, W = (int(v) for v in gen.scene_ae.config.image_size)
    rig = CameraRig.from_store(args.stores[0]).resized(W, H)
    cams = rig.cameras(np.eye(4), device=args.device)                                        # [V] anchor-frame cameras
    held_out = CaptureViewDataset(list(args.stores), (H, W), "val", args.val_fraction)
    captured = held_out.images(spread_indices(len(held_out), args.num_scenes * len(rig)))

    print(f"generating {args.num_scenes} scenes (seed {args.seed}) ...")
    raw = gen.generate(args.num_scenes, seed=args.seed, steps=args.sampling_steps)
    cfg = RefineConfig(steps=args.steps, alpha=args.alpha, views_per_step=args.views, lr=args.lr)
    refined, per_scene = [], []
    for s in raw:
        r = refine_neural_scene(s, guidance, cfg, progress=False)
        refined.append(r.scene)
        h = r.result.history
        per_scene.append({"seed": s.seed, "seconds": r.result.seconds, "nonfinite_steps": r.result.nonfinite_steps,
                          "sds_loss_first10": float(np.mean(h.loss[:10])) if h.loss else None,
                          "sds_loss_last10": float(np.mean(h.loss[-10:])) if h.loss else None})
        print(f"scene {s.seed}: refined in {r.result.seconds:.1f} s")
    figures = {name: critic_figures(gen, scenes, cams, captured, args.stores, args.val_fraction, critic, source,
                                    args.device) for name, scenes in (("before", raw), ("after", refined))}

    sheet = picture(raw, refined, cams, args.picture_scenes, args.scale)
    iio.imwrite(out / "before_after.png", sheet)
    report = {"bundle": str(args.bundle), "bundle_hash": gen.bundle_hash, "stores": list(args.stores),
              "prior": args.prior or str(Path(args.bundle) / "prior"), "critic": source,
              "num_scenes": args.num_scenes, "seed": args.seed, "sampling_steps": args.sampling_steps,
              "refine": dataclasses.asdict(cfg), "rig_cameras": rig.names, "figures": figures, "scenes": per_scene,
              "seconds": time.perf_counter() - start}
    (out / "refine_figure.json").write_text(json.dumps(report, indent=2) + "\n")
    b, a = figures["before"], figures["after"]
    md = [f"# SDS refinement — {args.bundle} (hash {gen.bundle_hash[:12]})", "",
          f"{args.num_scenes} scenes (seeds {args.seed}…{args.seed + args.num_scenes - 1}), {args.steps} SDS steps, "
          f"α = {args.alpha}, {args.views} views/step; rendered at the {len(rig)}-camera rig of {args.stores[0]}; "
          f"critic: {source}.", "",
          "| figure | before | after |", "|---|---|---|",
          f"| critic Fréchet distance (CFD) vs captured held-out ↓ | {fmt(b['cfd'])} | {fmt(a['cfd'])} |",
          f"| CFD ceiling (captured training vs held-out) | {fmt(b['cfd_ceiling'])} | {fmt(a['cfd_ceiling'])} |",
          f"| label agreement (critic on RGB vs field labels, mIoU) ↑ | {fmt(b['label_agreement'])} | "
          f"{fmt(a['label_agreement'])} |", "",
          f"CFD: {b['cfd_note']}", ""]
    if b["agreement_note"]:
        md += [f"Label agreement: {b['agreement_note']}", ""]
    md += ["![before (top) / after (bottom) rows per scene](before_after.png)", ""]
    (out / "refine_figure.md").write_text("\n".join(md))
    print("\n".join(md[4:9]))
    print(f"wrote {out}/refine_figure.json, refine_figure.md, before_after.png ({sheet.shape[1]}x{sheet.shape[0]}) "
          f"in {report['seconds']:.0f} s")


if __name__ == "__main__":
    try:
        main()
    except NfldmError as e:                   # a bundle without a prior, a broken part: one line with the fix
        raise SystemExit(f"error: {e}") from None
