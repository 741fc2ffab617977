"""`nfldm eval`: reconstruction and generation figures of a model bundle against held-out captured scenes.

Held-out data: the validation split of the capture stores (`SceneWindowDataset` with ``split="val"``: the last
``val_fraction`` of each store's episodes, or of a single episode's frames), windows of ``window`` frames, at the
bundle's image size. Evaluate on stores (or episodes) the model did not train on, or this is a training figure.

Reconstruction (per held-out window, all its views are encoder inputs and render targets):

* **stage 1** — ``SceneAutoEncoder.encode`` → ``decode``: PSNR (dB), SSIM (Gaussian, skimage settings) and depth
  AbsRel on the pixels whose captured surface lies in the voxel box (`nfldm_training.metrics.masks.box_depth_mask`);
* **stage 1 + LAE** — encode → ``LatentAutoEncoder.encode`` → ``decode`` → stage-1 render: the same figures.

Generation (``num_scenes`` generated scenes vs up to ``num_scenes`` held-out windows spread evenly over the split).
Every scene is looked at from the same camera rig: the anchor-frame cameras of a reference window (generated scene
i uses those of reference window ``i mod m``), at the bundle's image size.

* **3D point sets** — captured: the captured depth of the anchor views back-projected, kept where the surface is in
  the box; generated: the rendered depth (where the accumulated opacity ≥ `nfldm_sdk.rendering.api.HIT_ALPHA`, 0.5) back-projected and kept likewise.
  Each set is subsampled to ``points_per_scene`` points (seeded). Chamfer distance (metres) gives MMD, COV and
  1-NNA (`nfldm_training.metrics.scene_3d.mmd_cov_1nna`).
* **BEV layout** — geometric, so it works for bundles without a semantic head (the label figures are in
  `nfldm_training.evaluation.semantic`): the fraction of
  observed 1 m ground cells holding structure (a point ≥ 0.5 m above ground) and the histogram of point heights,
  pooled per side, compared as |difference| and TV/W1. The captured set's semantic class fractions (points per
  CARLA class group, from the captured semantic images) are reported as a reference only.
* **depth histograms** — rendered vs captured planar depth of the same rig in bins over [near, far]; captured
  surfaces outside the box count as no hit (the model cannot represent them), no hit counts as the far plane.
  TV and Wasserstein-1 (metres).
* **FID / KID** — only with the standard FID Inception weights file given by path (`nfldm_training.metrics.fid`); without
  it the report says so and holds no number.

Semantics (`nfldm_training.evaluation.semantic`): with a semantic head, the field's labels (user-facing rule) against
the captured tags of the reconstruction windows (mIoU, per-class IoU, majority-class baseline); with a perception
critic (the bundle's ``critic/`` part or `EvalConfig.critic`), the label agreement of rendered RGB with the field's
labels (generated scenes, stage-1 reconstructions), its ceiling on captured images, and the critic Fréchet distance
(CFD) of generated renders and its captured-vs-captured ceiling. Absent figures say "unavailable: <why>".
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.pipelines.generator import SceneGenerator
from nfldm_sdk.rendering.api import HIT_ALPHA
from nfldm_training.benchmarks.bench import machine_line
from nfldm_training.data.capture_bev import backproject
from nfldm_training.data.capture_windows import SceneWindowDataset, collate_windows, resize_depth
from nfldm_training.errors import TrainingError
from nfldm_training.evaluation.semantic import (SemanticEvaluation, SemanticFigures, load_eval_critic, semantic_markdown,
                                               spread_indices)
from nfldm_training.metrics.fid import FID_WEIGHTS_HELP, FIDInceptionV3, feature_fid, kernel_inception_distance
from nfldm_training.metrics.image import depth_abs_rel, psnr, ssim
from nfldm_training.metrics.masks import box_depth_mask
from nfldm_training.metrics.scene_3d import (BEVStats, HistDistances, SetMetrics, bev_stats, chamfer_matrix,
                                             depth_histogram, histogram_distances, mmd_cov_1nna, subsample_points)

__all__ = ["EvalConfig", "ReconFigures", "GenerationFigures", "EvalReport", "evaluate", "write_report",
           "backproject", "SEMANTIC_GROUPS"]

#: CARLA tag groups whose fractions the captured reference reports (sim_bridge.semantics tags).
SEMANTIC_GROUPS: dict[str, tuple[int, ...]] = {
    "road": (1, 24), "sidewalk": (2,), "building": (3, 4, 5), "vegetation/terrain": (9, 10, 25),
    "vehicle": (14, 15, 16, 17, 18, 19), "pole/sign/light": (6, 7, 8), "person": (12, 13),
}


@dataclass
class EvalConfig:
    """Settings of `evaluate` (the `nfldm eval` options)."""

    num_scenes: int = 16
    """Generated scenes, and the most held-out reference windows, of the generation figures."""
    window: int = 2
    """Frames per held-out window (use the stage-1 training window)."""
    cameras: tuple[str, ...] | None = None
    """Rig cameras used (None = all cameras of the store's rig)."""
    val_fraction: float = 0.2
    """Held-out fraction of each store's episodes (the training split rule; keep the training value)."""
    max_recon_windows: int | None = 32
    """Held-out windows of the reconstruction figures (spread evenly; None = all)."""
    points_per_scene: int = 2048
    """Points per scene set of the Chamfer-based figures."""
    depth_bins: int = 59
    """Bins of the depth histograms over [near, far] (1 m bins for the default 1–60 m)."""
    bev_cell: float = 1.0
    """BEV ground-cell size, metres."""
    structure_height: float = 0.5
    """Height above the ground from which a point counts as structure in the BEV occupancy, metres."""
    steps: int | None = None
    """Denoising steps per level (None = the bundle's sampler default)."""
    sampler: str | None = None
    """Sampler (None = the bundle's default)."""
    seed: int = 0
    """Seed of the generated scenes (scene i uses seed + i) and of the point subsampling."""
    batch_size: int = 2
    """Windows encoded / scenes generated at once."""
    inception_weights: str | None = None
    """Path of the standard FID Inception weights (pt_inception-2015-12-05-6726825d.pth); None = no FID/KID."""
    critic: str | None = None
    """A perception critic (`nfldm train critic` run or its model folder); None = the bundle's ``critic/`` part when
    it has one (else the critic figures are unavailable)."""


@dataclass
class ReconFigures:
    """Reconstruction figures over held-out windows (pixel-pooled AbsRel, image-mean PSNR/SSIM)."""

    psnr: float
    ssim: float
    abs_rel: float
    num_windows: int
    num_images: int


@dataclass
class GenerationFigures:
    """Generation figures (module docstring)."""

    sets: SetMetrics
    """MMD (m), COV, 1-NNA with Chamfer distance, generated vs captured point sets."""
    bev_generated: dict
    """Pooled BEV stats of the generated scenes: occupied_fraction, observed_fraction, height_hist."""
    bev_captured: dict
    """Pooled BEV stats of the captured reference windows."""
    bev_occupancy_diff: float
    """|occupied_fraction generated − captured|."""
    height_hist: HistDistances
    """TV / W1 (m) between the pooled point-height histograms."""
    depth_hist: HistDistances
    """TV / W1 (m) between the rendered (generated) and captured depth histograms of the same rig."""
    captured_semantics: dict
    """Reference only: fraction of captured in-box points per semantic group (SEMANTIC_GROUPS, plus "other")."""
    fid: float | None
    """FID (None without the standard Inception weights)."""
    kid_mean: float | None
    kid_std: float | None
    image_metric_note: str
    """Why FID/KID are absent, or what they were computed on."""
    num_generated: int
    num_reference: int
    oracle_sets: SetMetrics | None = None
    """The "oracle": MMD, COV, 1-NNA of the held-out windows' own stage-1 fields (encoded from their views, rendered
    at the same cameras) vs their captured point sets — what a generator that reproduced the held-out scenes through
    stage 1 would score."""


@dataclass
class EvalReport:
    """Everything `nfldm eval` measured (written as JSON and markdown by `write_report`)."""

    bundle: str
    bundle_hash: str
    stores: list[str]
    config: dict
    stage1: ReconFigures
    stage1_lae: ReconFigures
    generation: GenerationFigures
    seconds: float
    machine: str = ""
    notes: list[str] = field(default_factory=list)
    semantic: SemanticFigures | None = None
    """The semantic and perception-critic figures (`nfldm_training.evaluation.semantic`)."""


# ------------------------------------------------------------------------------------------------ helpers
def _pool_bev(stats: Sequence[BEVStats]) -> dict:
    return {"occupied_fraction": float(np.mean([s.occupied_fraction for s in stats])),
            "observed_fraction": float(np.mean([s.observed_fraction for s in stats])),
            "height_hist": np.mean([s.height_hist for s in stats], axis=0).round(5).tolist()}


# ------------------------------------------------------------------------------------------------ reconstruction
@torch.no_grad()
def _reconstruction(gen, dataset, indices: list[int], batch_size: int, device, observe: Callable | None = None
                    ) -> tuple[ReconFigures, ReconFigures]:
    """The reconstruction figures; ``observe(key, field, cameras, batch)`` (``key`` "s1" or "lae") sees every
    reconstructed batch (the semantic figures)."""
    ae, lae = gen.scene_ae, gen.latent_ae
    mc = ae.config
    acc = {k: {"psnr": [], "ssim": [], "rel": 0.0, "n": 0.0} for k in ("s1", "lae")}
    for start in range(0, len(indices), batch_size):
        batch = collate_windows([dataset[i] for i in indices[start:start + batch_size]]).to(device)
        cams = batch.cameras()
        field = ae.encode(batch.images, cams)
        usable = box_depth_mask(batch.depth, batch.valid, cams, ae.bounds, mc.near, mc.far)
        for key, f in (("s1", field), ("lae", lae.decode(lae.encode(field)))):
            out = ae.decode(f, cams)
            acc[key]["psnr"].append(psnr(out.rgb, batch.images).flatten().cpu())
            acc[key]["ssim"].append(ssim(out.rgb.clamp(0, 1), batch.images).flatten().cpu())
            s, n = depth_abs_rel(out.depth, batch.depth, usable, mc.near, mc.far)
            acc[key]["rel"] += float(s.sum())
            acc[key]["n"] += float(n.sum())
            if observe is not None:
                observe(key, f, cams, batch)
    res = []
    for key in ("s1", "lae"):
        a = acc[key]
        p = torch.cat(a["psnr"])
        res.append(ReconFigures(psnr=float(p.mean()), ssim=float(torch.cat(a["ssim"]).mean()),
                                abs_rel=a["rel"] / a["n"] if a["n"] else float("nan"), num_windows=len(indices),
                                num_images=int(p.numel())))
    return res[0], res[1]


# ------------------------------------------------------------------------------------------------ generation
def _anchor_views(window) -> torch.Tensor:
    return torch.nonzero(window.frame_index == window.anchor).flatten()


def _captured_semantics(dataset, i: int, views: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Counts per semantic tag (0..255) of the masked pixels of window i's anchor views."""
    ref = dataset.refs[i]
    ep = dataset.episode(ref)
    cams = dataset.camera_indices[ref.store_index]
    anchor = ref.start + dataset.anchor_offset
    sem = np.asarray(ep.semantic[anchor, cams]).astype(np.float32)                     # [n, H0, W0]
    sem = resize_depth(sem, dataset.image_size).round().long()                         # nearest: labels stay labels
    cam_of_view = (views % len(cams))
    labels = sem[cam_of_view][mask]
    return np.bincount(labels.numpy(), minlength=256)


@torch.no_grad()
def _generation(gen, dataset, cfg: EvalConfig, device, log, observe: Callable | None = None) -> GenerationFigures:
    """The generation figures; ``observe(scenes, rigs, captured_rgb)`` sees the generated scenes, the reference rigs
    (`Cameras` ``[V]`` each) and the captured anchor views (``[V, 3, H, W]`` each) (the semantic figures)."""
    mc = gen.scene_ae.config
    bounds = gen.scene_ae.bounds.detach().cpu()
    ref_idx = spread_indices(len(dataset), cfg.num_scenes)
    g = torch.Generator().manual_seed(int(cfg.seed))
    ref_sets, ref_bev, ref_rig, ref_rgb, oracle_sets = [], [], [], [], []
    cap_hist = np.zeros(cfg.depth_bins)
    sem_counts = np.zeros(256)
    for i in ref_idx:
        w = dataset[i]
        views = _anchor_views(w)
        H, W = w.images.shape[-2:]
        cams = Cameras(w.K[views], w.cam_to_scene[views], W, H)
        depth = w.depth[views]
        mask = box_depth_mask(depth, w.valid[views], cams, bounds, mc.near, mc.far)
        pts = backproject(depth, mask, cams)
        if len(pts) == 0:
            continue
        ref_sets.append(subsample_points(pts, cfg.points_per_scene, g))
        ref_bev.append(bev_stats(pts, bounds, cfg.bev_cell, cfg.structure_height))
        cap_hist += depth_histogram(torch.where(mask, depth, torch.full_like(depth, math.inf)), mc.near, mc.far, cfg.depth_bins)
        sem_counts += _captured_semantics(dataset, i, views, mask)
        ref_rig.append(cams)
        ref_rgb.append(w.images[views])
        oracle_sets.append(subsample_points(_stage1_points(gen.scene_ae, w, views, bounds, device), cfg.points_per_scene, g))
    if len(ref_sets) < 2:
        raise TrainingError(f"only {len(ref_sets)} held-out window(s) show surfaces inside the box: evaluate on stores with "
                            "more held-out episodes (collect more episodes)")
    log(f"generating {cfg.num_scenes} scenes (seed {cfg.seed}) ...")
    scenes = gen.generate(cfg.num_scenes, seed=cfg.seed, steps=cfg.steps, sampler=cfg.sampler, batch_size=cfg.batch_size)
    gen_sets, gen_bev, gen_rgb = [], [], []
    gen_hist = np.zeros(cfg.depth_bins)
    empty = 0
    for k, scene in enumerate(scenes):
        cams = ref_rig[k % len(ref_rig)]
        img = scene.render(cams.to(device=device))
        depth, alpha = img.depth.cpu(), img.alpha.cpu()
        hit = (alpha >= HIT_ALPHA) & torch.isfinite(depth)
        mask = box_depth_mask(depth, hit, cams, bounds, mc.near, mc.far)
        pts = backproject(depth, mask, cams)
        gen_hist += depth_histogram(torch.where(mask, depth, torch.full_like(depth, math.inf)), mc.near, mc.far, cfg.depth_bins)
        gen_rgb.append(img.rgb.cpu().permute(0, 3, 1, 2).float() / 255.0)
        if len(pts) == 0:  # an empty scene: the farthest possible set, a single point far outside the box
            empty += 1
            pts = torch.tensor([[1e3, 1e3, 1e3]])
        gen_sets.append(subsample_points(pts, cfg.points_per_scene, g))
        gen_bev.append(bev_stats(pts, bounds, cfg.bev_cell, cfg.structure_height))
    if empty:
        log(f"note: {empty} generated scene(s) show no surface in the box")
    if observe is not None:
        observe(scenes, ref_rig, ref_rgb)
    log("Chamfer distances ...")
    gs, rs = torch.stack(gen_sets), torch.stack(ref_sets)
    sets = mmd_cov_1nna(chamfer_matrix(gs, rs), chamfer_matrix(gs, gs), chamfer_matrix(rs, rs))
    os_ = torch.stack(oracle_sets)
    oracle = mmd_cov_1nna(chamfer_matrix(os_, rs), chamfer_matrix(os_, os_), chamfer_matrix(rs, rs))
    bg, bc = _pool_bev(gen_bev), _pool_bev(ref_bev)
    z_bin = float(bounds[1, 2] - bounds[0, 2]) / len(bg["height_hist"])
    total = max(sem_counts.sum(), 1)
    semantics = {name: float(sum(sem_counts[t] for t in tags) / total) for name, tags in SEMANTIC_GROUPS.items()}
    semantics["other"] = float(max(0.0, 1.0 - sum(semantics.values())))
    fid = kid_m = kid_s = None
    if cfg.inception_weights:
        net = FIDInceptionV3.load(cfg.inception_weights, device=device)
        feats = lambda imgs: torch.cat([net(x.to(device)).cpu() for x in torch.cat(imgs).split(16)]).numpy()  # noqa: E731
        fg, fr = feats(gen_rgb), feats(ref_rgb)
        fid = feature_fid(fg, fr)
        kid_m, kid_s = kernel_inception_distance(fg, fr, seed=cfg.seed)
        note = (f"FID/KID on {len(fg)} generated vs {len(fr)} captured {mc.image_size[0]}x{mc.image_size[1]} images "
                "(anchor-frame views), resized to 299x299; small sets bias FID upwards")
    else:
        note = "not computed: " + FID_WEIGHTS_HELP
    return GenerationFigures(
        sets=sets, bev_generated=bg, bev_captured=bc,
        bev_occupancy_diff=abs(bg["occupied_fraction"] - bc["occupied_fraction"]),
        height_hist=histogram_distances(np.array(bg["height_hist"]), np.array(bc["height_hist"]), z_bin),
        depth_hist=histogram_distances(gen_hist, cap_hist, (mc.far - mc.near) / cfg.depth_bins),
        captured_semantics=semantics, fid=fid, kid_mean=kid_m, kid_std=kid_s, image_metric_note=note,
        num_generated=len(gen_sets), num_reference=len(ref_sets), oracle_sets=oracle)


@torch.no_grad()
def _stage1_points(ae, window, views: torch.Tensor, bounds: torch.Tensor, device) -> torch.Tensor:
    """``[P, 3]`` scene-frame points of a window's own stage-1 field: encoded from all its views, rendered at the
    anchor `views` with the user-facing hit rule, back-projected inside the box (a far point when none)."""
    batch = collate_windows([window]).to(device)
    cams = batch.cameras()                                                            # [1, V]
    field = ae.encode(batch.images, cams)
    anchor = Cameras(window.K[views], window.cam_to_scene[views], window.images.shape[-1], window.images.shape[-2])
    out = ae.decode(field, anchor.to(device=device)[None], min_hit_alpha=HIT_ALPHA)
    depth, alpha = out.depth[0].cpu(), out.alpha[0].cpu()
    mc = ae.config
    mask = box_depth_mask(depth, (alpha >= HIT_ALPHA) & torch.isfinite(depth), anchor, bounds, mc.near, mc.far)
    pts = backproject(depth, mask, anchor)
    return pts if len(pts) else torch.tensor([[1e3, 1e3, 1e3]])


# ------------------------------------------------------------------------------------------------ entry point
def evaluate(model, stores: Sequence[str], config: EvalConfig | None = None, *, device: str | torch.device = "cpu",
             log: Callable[[str], None] = print) -> EvalReport:
    """Evaluate a bundle (path) or a `SceneGenerator` on the held-out windows of `stores` (module docstring)."""
    cfg = config or EvalConfig()
    start = time.perf_counter()
    gen = SceneGenerator.from_pretrained(model, device=device) if isinstance(model, (str, Path)) else model.to(device)
    mc = gen.scene_ae.config
    data = SceneWindowDataset(list(stores), cfg.window, cameras=cfg.cameras, image_size=mc.image_size, split="val",
                              val_fraction=cfg.val_fraction)
    if len(data) == 0:
        raise TrainingError(f"no held-out windows in {list(stores)}: stores need 2+ episodes (or enough frames for a time "
                            f"split) for window {cfg.window}")
    notes = []
    critic, critic_source = load_eval_critic(model, cfg.critic, device)
    sem = SemanticEvaluation(gen.scene_ae, critic, critic_source, device)
    recon_idx = spread_indices(len(data), cfg.max_recon_windows)
    log(f"reconstruction on {len(recon_idx)} of {len(data)} held-out windows ...")
    s1, s1_lae = _reconstruction(gen, data, recon_idx, cfg.batch_size, device, observe=sem.observe_reconstruction)
    generation = _generation(gen, data, cfg, device, log, observe=lambda scenes, rigs, rgb: sem.observe_generation(
        scenes, rigs, rgb, list(stores), mc.image_size, cfg.val_fraction, cfg.cameras))
    if generation.num_reference < cfg.num_scenes:
        notes.append(f"only {generation.num_reference} held-out reference windows (asked {cfg.num_scenes})")
    return EvalReport(bundle=str(model) if isinstance(model, (str, Path)) else "in-memory", bundle_hash=gen.bundle_hash,
                      stores=[str(s) for s in stores], config=asdict(cfg), stage1=s1, stage1_lae=s1_lae,
                      generation=generation, seconds=time.perf_counter() - start, machine=machine_line(str(device)),
                      notes=notes, semantic=sem.figures())


def report_markdown(r: EvalReport) -> str:
    """The report as a markdown page (tables of the reconstruction and generation figures)."""
    g = r.generation
    s = g.sets
    fmt = lambda v, p=3: "—" if v is None else f"{v:.{p}f}"  # noqa: E731
    lines = [
        f"# nfldm eval — {r.bundle} (hash {r.bundle_hash[:12]})", "",
        f"Held-out windows of {len(r.stores)} store(s); machine: {r.machine}; {r.seconds:.0f} s.", "",
        "## Reconstruction (held-out windows)", "",
        "| model | PSNR (dB) ↑ | SSIM ↑ | depth AbsRel ↓ | windows | images |", "|---|---|---|---|---|---|",
    ]
    for name, f in (("stage 1 (encode → decode)", r.stage1), ("stage 1 + LAE (→ g, c, f → V̂)", r.stage1_lae)):
        lines.append(f"| {name} | {f.psnr:.2f} | {f.ssim:.3f} | {f.abs_rel:.3f} | {f.num_windows} | {f.num_images} |")
    lines += [
        "", f"## Generation ({g.num_generated} generated vs {g.num_reference} captured held-out scenes)", "",
        "| metric | value |", "|---|---|",
        f"| MMD-CD (m) ↓ | {s.mmd:.3f} |", f"| COV-CD ↑ | {s.cov:.3f} |", f"| 1-NNA-CD (0.5 ideal) | {s.nna:.3f} |",
        *([] if g.oracle_sets is None else [
            f"| oracle (held-out scenes' own stage-1 fields): MMD-CD / COV-CD / 1-NNA-CD | {g.oracle_sets.mmd:.3f} / "
            f"{g.oracle_sets.cov:.3f} / {g.oracle_sets.nna:.3f} |"]),
        f"| BEV structure occupancy: generated / captured | {g.bev_generated['occupied_fraction']:.3f} / "
        f"{g.bev_captured['occupied_fraction']:.3f} (diff {g.bev_occupancy_diff:.3f}) |",
        f"| BEV observed ground cells: generated / captured | {g.bev_generated['observed_fraction']:.3f} / "
        f"{g.bev_captured['observed_fraction']:.3f} |",
        f"| point-height histogram TV / W1 (m) ↓ | {g.height_hist.tv:.3f} / {g.height_hist.w1:.3f} |",
        f"| depth histogram TV / W1 (m) ↓ | {g.depth_hist.tv:.3f} / {g.depth_hist.w1:.3f} |",
        f"| FID ↓ | {fmt(g.fid, 2)} |", f"| KID ↓ | {fmt(g.kid_mean, 4)} ± {fmt(g.kid_std, 4)} |" if g.kid_mean is not None
        else "| KID ↓ | — |",
        "", f"FID/KID: {g.image_metric_note}", "",
        "Captured reference, semantic class fractions of in-box points: "
        + ", ".join(f"{k} {v:.2f}" for k, v in g.captured_semantics.items()), "",
    ]
    if r.semantic is not None:
        lines += semantic_markdown(r.semantic)
    lines += [f"Note: {n}" for n in r.notes]
    return "\n".join(lines) + "\n"


def write_report(report: EvalReport, out: str | Path) -> tuple[Path, Path]:
    """Write ``OUT/eval.json`` and ``OUT/eval.md``; returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    j, m = out / "eval.json", out / "eval.md"
    j.write_text(json.dumps(asdict(report), indent=2, default=float) + "\n")
    m.write_text(report_markdown(report))
    return j, m
