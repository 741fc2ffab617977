"""The long-route figures of the README: a drive through a built-in town generated as a route, timed, with its seam
consistency, its layout fidelity along the route and pictures (a strip of frames across a seam, the route map next
to the generated route's labels).

    python scripts/route_figure.py --model assets/models/default --town Town03 --length 500 --out runs/route
    # -> runs/route/route_figures.json, route_figures.md, seam_strip.png, route_bev.png, the route folder

Sampling settings are the bundle's unless --steps is given; the route is conditioned on the town's ground-truth map
when the bundle is BEV-conditioned (--no-map: unconditional).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="assets/models/default")
    ap.add_argument("--town", default="Town03")
    ap.add_argument("--length", type=float, default=500.0)
    ap.add_argument("--route-seed", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--guidance-scale", type=float, default=1.0)
    ap.add_argument("--no-map", action="store_true")
    ap.add_argument("--no-feather", action="store_true", help="keep each scene's own decode over the overlaps")
    ap.add_argument("--out", default="runs/route")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()

    import imageio.v3 as iio
    import torch

    from nfldm_sdk.cameras.rig import CameraRig
    from nfldm_sdk.cameras.trajectory import Trajectory
    from nfldm_sdk.labels.bev_map import BEVMap
    from nfldm_sdk.pipelines.generator import SceneGenerator
    from nfldm_sdk.routes.outpaint import generate_route
    from nfldm_sdk.routes.seams import seam_consistency, seam_strip
    from nfldm_training.benchmarks.bench import machine_line
    from sim_bridge.route import route_bev, town_route

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    gen = SceneGenerator.from_pretrained(a.model, device=a.device)
    drive = town_route(a.town, a.length, seed=a.route_seed)
    traj = Trajectory(drive.timestamps, drive.ego_to_world)
    tags, bounds = route_bev(a.town, drive)
    town_map = BEVMap(tags, bounds=bounds, name=f"{a.town} route {a.route_seed}")
    cond = town_map if (gen.conditional and not a.no_map) else None
    t0 = time.perf_counter()
    route = generate_route(gen, traj, bev=cond, seed=a.seed, steps=a.steps, guidance_scale=a.guidance_scale,
                           feather=not a.no_feather, out=out / "route", overwrite=True, progress=True)
    gen_s = time.perf_counter() - t0
    h, w = gen.scene_ae.config.image_size
    rig = CameraRig.preset("capture", w, h)
    plan = route.plan
    t1 = time.perf_counter()
    seams = seam_consistency(route.scenes, plan.scene_to_world, plan.seam_points, plan.seam_normals, rig,
                             reach_m=plan.reach_m)
    seam_s = time.perf_counter() - t1
    seam_strip(route.scenes, plan.scene_to_world, plan.seam_points, plan.seam_normals, out / "seam_strip.png",
               seam=min(1, len(plan) - 2), modes=("composite", "nearest"))
    miou = route.world_bev(town_map.bounds, town_map.grid_yx).miou(town_map)
    iou = route.world_bev(town_map.bounds, town_map.grid_yx).class_iou(town_map)
    left, right = town_map.show(), route.world_bev(town_map.bounds, town_map.grid_yx).show()
    gap = np.full((left.shape[0], 8, 3), 255, np.uint8)
    iio.imwrite(out / "route_bev.png", np.concatenate([left, gap, right[:left.shape[0]]], 1))
    fig = {"town": a.town, "length_m": plan.length_m, "scenes": len(route), "conditioned": cond is not None,
           "guidance_scale": a.guidance_scale, "feather": not a.no_feather, "steps": route.settings["steps"], "sampler": route.settings["sampler"],
           "generate_s": gen_s, "metres_per_minute": plan.length_m / gen_s * 60.0, "seam_measure_s": seam_s,
           "layout_miou_vs_town_map": miou, "layout_class_iou": iou, "seams": seams.to_dict(),
           "machine": machine_line(a.device), "torch_threads": torch.get_num_threads()}
    (out / "route_figures.json").write_text(json.dumps(fig, indent=2, default=float) + "\n")
    m = seams.to_dict()["mean"]
    md = [f"# Route figures: {a.town}, {plan.length_m:.0f} m, {len(route)} scenes "
          f"({'conditioned on the town map' if cond is not None else 'unconditional'}; "
          f"{'feathered' if not a.no_feather else 'not feathered'} over the overlaps)", "",
          f"- generation: {gen_s:.0f} s = {fig['metres_per_minute']:.0f} m/min on {fig['machine']}",
          f"- layout mIoU of the route's labels vs the town map: {miou:.3f} ({', '.join(f'{k} {v:.2f}' for k, v in iou.items() if k in ('road', 'sidewalk', 'building', 'vegetation'))})",
          "", "| | PSNR (dB) | depth AbsRel | label agreement |", "|---|---|---|---|",
          f"| seam: scene j vs scene j+1 over their shared space | {m['psnr_db']:.2f} | {m['depth_absrel']:.3f} | "
          f"{m['label_agreement']:.3f} |",
          f"| baseline: one scene, 1 m apart | {m['baseline_psnr_db']:.2f} | {m['baseline_depth_absrel']:.3f} | "
          f"{m['baseline_label_agreement']:.3f} |",
          f"| crossing: the composited route 0.5 m before vs after the seam | {m['crossing_psnr_db']:.2f} | "
          f"{m['crossing_depth_absrel']:.3f} | {m['crossing_label_agreement']:.3f} |",
          f"| baseline: the composited route, 1 m apart inside a cell | {m['drive_psnr_db']:.2f} | "
          f"{m['drive_depth_absrel']:.3f} | {m['drive_label_agreement']:.3f} |",
          "", f"{len(route) - 1} seams × {seams.views} views each; seam strip: seam_strip.png (composited over nearest)"]
    (out / "route_figures.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
