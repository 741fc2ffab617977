"""`nfldm eval --conditional`: how well a BEV-conditioned bundle follows the maps it is given, and how cleanly it edits.

Maps: the bird's-eye maps of held-out capture windows — the validation split of `nfldm eval` (the last
``val_fraction`` of each store's episodes, `SceneWindowDataset` with ``split="val"``), ``num_maps`` windows spread
evenly over it — made exactly like the conditioning data the denoisers were trained with
(`nfldm_training.data.capture_bev.window_bev` of the window at the capture's own image size, over the bundle's
voxel box and grid, `DEFAULT_CLASSES`).

Layout fidelity (`LayoutFigures`): per-class IoU over road, sidewalk, building and vegetation
(`nfldm_sdk.labels.bev_map.LAYOUT_CLASSES`) and their mean (mIoU, classes in neither map skipped) between each
requested map and the generated scene's `NeuralScene.bev`, pooled over all maps (intersections and unions summed:
`bev_class_iou` of the maps laid side by side), over the cells observed in both (``coverage`` says which fraction
of the requested map's observed cells the scene labels at all). Three rows:

* **conditional** — scene i generated under map i with seed ``seed + i``, for every guidance scale of the sweep;
* **unconditional (chance)** — the same seeds with ``bev=None``, against the same maps: what a map-blind model gets;
* **stage-1 ceiling** — the held-out window's own stage-1 field (its views, at the bundle's image size, through the
  bundle's encoder), whose `bev` against the window's map bounds what the latent model could reach;
* **through the LAE** — that field encoded and decoded by the bundle's latent autoencoder (quantised, decoded as
  generation decodes): the layout every generated scene passes through on its way out, so the bound a perfect
  denoiser would meet. Where the conditional row reaches it and the stage-1 ceiling is well above, the LAE, not the
  conditioning, is what loses the map.

Editing (`EditFigures`): for the first ``num_edits`` maps, the scene generated under map A (guidance
``edit_guidance_scale``) is edited inside ``edit_box`` (default a 16 m × 16 m box ahead of the ego) under map B =
map A with the box's cells painted from another held-out window's map (`SceneGenerator.edit`). Outside the region:
the max |Δ| of density and features over every voxel column outside it (exactly 0 by construction of the edit), and
the PSNR of the edited against the original scene rendered from the anchor-frame rig cameras of the window, over
every pixel of the views that look away from the region — views whose whole view frustum (near..far) misses the
region's columns widened by one voxel (trilinear sampling reads one voxel around a point), `views_away_from_box`;
the target is ≥ 40 dB, ``inf`` when the renders are identical. Inside: the layout IoU of the edited scene's `bev`
on the region's cells against map B, beside the same figure for the unedited scene (the before value).

Sampling time: seconds per scene of each sweep entry (``time.perf_counter`` around `SceneGenerator.generate`, CUDA
synchronised; one warm-up call first), at ``batch_size`` scenes per call; a guidance scale ≠ 1 runs each denoiser
on a doubled batch. The report names the machine (`machine_line`).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import sim_bridge
import torch
from tqdm.auto import tqdm

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.labels.bev_map import LAYOUT_CLASSES, BEVMap, bev_class_iou
from nfldm_sdk.labels.classes import DEFAULT_CLASSES, UNOBSERVED, SemanticClasses
from nfldm_sdk.models.semantic_head import SemanticsUnavailableError, require_semantic_head
from nfldm_sdk.pipelines.generator import SceneGenerator
from nfldm_sdk.pipelines.scene import NeuralScene
from nfldm_training.evaluation.report_files import write_report_files
from nfldm_training.benchmarks.bench import machine_line
from nfldm_training.data.capture_bev import window_bev
from nfldm_training.data.capture_windows import SceneWindowDataset, collate_windows
from nfldm_training.errors import TrainingError
from nfldm_training.evaluation.semantic import spread_indices

__all__ = ["ConditionalConfig", "ConditionalEvalError", "ConditionalReport", "EditFigures", "GuidanceFigures",
           "LayoutFigures", "conditional_markdown", "evaluate_conditional", "layout_figures", "require_conditional",
           "views_away_from_box", "write_conditional_report", "NOT_CONDITIONAL_FIX"]

#: The fix named when a bundle cannot be evaluated conditionally.
NOT_CONDITIONAL_FIX = ("evaluate a bundle trained with the `default` preset (`nfldm train-all --preset default`) or with "
                       "bev_condition=True denoisers (--set denoiser_g.bev_condition=true, and denoiser_c, denoiser_f, "
                       "on a latent store written with its bev maps), or run `nfldm eval` without --conditional")


class ConditionalEvalError(TrainingError):
    """The bundle cannot be evaluated conditionally (not BEV-conditioned, no semantic head) or there are no maps."""


@dataclass
class ConditionalConfig:
    """Settings of `evaluate_conditional` (the `nfldm eval --conditional` options)."""

    num_maps: int = 16
    """Held-out windows (maps) the layout figures are over, spread evenly over the split."""
    guidance_scales: tuple[float, ...] = (1.0, 2.0, 3.0)
    """Classifier-free guidance scales of the sweep."""
    window: int = 2
    """Frames per held-out window (the stage-1 training window, as in `nfldm eval`)."""
    cameras: tuple[str, ...] | None = None
    """Rig cameras of the windows (None = all)."""
    val_fraction: float = 0.2
    """Held-out fraction of each store's episodes (the training split rule)."""
    steps: int | None = None
    """Denoising steps per level (None = the bundle's sampler default)."""
    sampler: str | None = None
    """Sampler (None = the bundle's)."""
    seed: int = 0
    """Scene i of every row uses seed ``seed + i``; edit i uses seed ``seed + i`` too."""
    batch_size: int = 4
    """Scenes generated per call (the sampling time is per scene at this batch size)."""
    edit: bool = True
    """Measure editing."""
    num_edits: int = 4
    """Edits (the first ones of the maps)."""
    edit_box: tuple[float, float, float, float] = (8.0, -8.0, 24.0, 8.0)
    """The edited region ``(x0, y0, x1, y1)`` metres in the scene frame (x forward, y left): 16 m × 16 m ahead."""
    edit_guidance_scale: float = 2.0
    """Guidance scale of the scene that is edited and of the edit."""


@dataclass
class LayoutFigures:
    """Layout fidelity of labelled maps against requested maps, pooled over `num_maps` pairs.

    Attributes:
        miou: mean of `class_iou` over the classes present (``nan`` when none is).
        class_iou: class name (`LAYOUT_CLASSES`) -> pooled IoU, ``nan`` where the class is in neither side.
        coverage: cells observed in both / cells observed in the requested maps.
        cells: cells compared (observed in both).
        num_maps: map pairs pooled.
    """

    miou: float
    class_iou: dict
    coverage: float
    cells: int
    num_maps: int


@dataclass
class GuidanceFigures:
    """One row of the sweep: scenes of `num_scenes` seeds under their maps (``guidance_scale`` None: unconditional)."""

    guidance_scale: float | None
    layout: LayoutFigures
    seconds_per_scene: float
    """Wall time of `SceneGenerator.generate` / scenes (sampling of g, c, f and the LAE decode), seconds."""
    num_scenes: int


@dataclass
class EditFigures:
    """Editing figures over `num_edits` edits (module docstring)."""

    num_edits: int
    box: tuple
    """The region ``(x0, y0, x1, y1)`` metres; `region_cells` grid columns."""
    region_cells: int
    guidance_scale: float
    field_max_abs_diff_outside: float
    """max |Δ| of density and features over the voxel columns outside the region, all edits (0 = exact)."""
    field_mean_abs_diff_inside: float
    """mean |Δ density| inside the region (σ per metre): that the edit changed something."""
    changed_cells: float
    """Fraction of the region's cells (observed in both maps) where map B differs from map A."""
    away_views: int
    """Rig views that look away from the region (their pixels make the PSNR), of `total_views`."""
    total_views: int
    psnr_away_db: float | None
    """PSNR (dB, peak 1) of edited vs original renders over every pixel of the away views; inf = identical; None
    when no view looks away."""
    rgb_max_abs_diff_away: int | None
    """max |Δ| of the uint8 RGB over those pixels (0 = identical)."""
    inside_edited: LayoutFigures
    """The edited scene's bev on the region's cells vs map B."""
    inside_original: LayoutFigures
    """The unedited scene's bev on the region's cells vs map B (the before value)."""
    seconds_per_edit: float


@dataclass
class ConditionalReport:
    """Everything `nfldm eval --conditional` measured (written by `write_conditional_report`)."""

    bundle: str
    bundle_hash: str
    stores: list[str]
    config: dict
    maps: str
    """Where the maps come from (windows, episodes, image size)."""
    conditional: list[GuidanceFigures]
    unconditional: GuidanceFigures
    ceiling: LayoutFigures
    lae_ceiling: LayoutFigures
    """The held-out stage-1 fields encoded and decoded by the LAE (module docstring)."""
    edit: EditFigures | None
    machine: str
    device: str
    seconds: float
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ measures
def layout_figures(predicted: Sequence[np.ndarray], requested: Sequence[np.ndarray],
                   masks: Sequence[np.ndarray] | None = None, classes: SemanticClasses = DEFAULT_CLASSES,
                   names: Sequence[str] = LAYOUT_CLASSES) -> LayoutFigures:
    """Pooled layout fidelity of `predicted` against `requested` maps (module docstring).

    Args:
        predicted, requested: ``[Y, X]`` uint8 CARLA tags each (`UNOBSERVED` = 255), pairwise of one shape.
        masks: optional ``[Y, X]`` bool per pair: only those cells count (an edit's region).
        classes: the class set tags are grouped by; names: the classes reported and averaged.
    Returns:
        `LayoutFigures` over ``len(predicted)`` pairs.
    """
    if len(predicted) != len(requested) or not predicted:
        raise ValueError(f"need as many predicted as requested maps (>= 1), got {len(predicted)} and {len(requested)}")
    pick = lambda m, i: np.asarray(m).reshape(-1) if masks is None else np.asarray(m)[np.asarray(masks[i], bool)]  # noqa: E731
    a = np.concatenate([pick(m, i) for i, m in enumerate(predicted)])[None]           # [1, cells]: one long map
    b = np.concatenate([pick(m, i) for i, m in enumerate(requested)])[None]
    iou = dict(zip(classes.names, bev_class_iou(a, b, classes).tolist()))
    vals = [iou[n] for n in names if not math.isnan(iou[n])]
    both = int(((a != UNOBSERVED) & (b != UNOBSERVED)).sum())
    observed = int((b != UNOBSERVED).sum())
    return LayoutFigures(miou=float(np.mean(vals)) if vals else math.nan, class_iou={n: iou[n] for n in names},
                         coverage=both / observed if observed else math.nan, cells=both, num_maps=len(predicted))


def views_away_from_box(cameras: Cameras, lo, hi, near: float, far: float) -> np.ndarray:
    """Which pinhole views see nothing of an axis-aligned box: their frustum (image rectangle, planar depth
    ``near..far``) and the box are separated (separating-axis test, exact for two convex polyhedra).

    Args:
        cameras: `Cameras` ``[V]`` (pinhole), ``cam_to_world`` into the box's frame.
        lo, hi: ``[3]`` the box's min and max corners, metres.
        near, far: the renderer's planar depth range, metres.
    Returns:
        ``[V]`` bool, True where the view's frustum misses the box (touching counts as seeing it).
    """
    W, H = cameras.width, cameras.height
    uv = torch.tensor([[0, 0], [W, 0], [W, H], [0, H]], dtype=torch.float64)
    cams = cameras.to(dtype=torch.float64)
    z = torch.ones(4, dtype=torch.float64)
    fr = torch.cat([cams.pixels_to_world(uv, z * near), cams.pixels_to_world(uv, z * far)], -2).cpu().numpy()  # [V, 8, 3]
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    box = np.array([[hi[0] if i & 1 else lo[0], hi[1] if i & 2 else lo[1], hi[2] if i & 4 else lo[2]] for i in range(8)])
    out = np.zeros(len(fr), bool)
    for v, c in enumerate(fr):
        dirs = np.concatenate([np.eye(3), c[[1, 3]] - c[0], c[4:] - c[:4]])           # box axes, frustum edges: [9, 3]
        axes = np.concatenate([dirs, np.cross(dirs[:, None], dirs[None]).reshape(-1, 3)])
        axes = axes[np.linalg.norm(axes, axis=1) > 1e-9 * np.abs(c).max()]
        pf, pb = c @ axes.T, box @ axes.T                                               # [8, A] each
        out[v] = bool(((pf.max(0) < pb.min(0)) | (pb.max(0) < pf.min(0))).any())
    return out


def require_conditional(gen: SceneGenerator, where: str = "the bundle") -> None:
    """`ConditionalEvalError` naming the fix unless `gen` reads BEV maps and has a semantic head (`bev` needs it)."""
    if not gen.conditional:
        raise ConditionalEvalError(f"{where} is not BEV-conditioned (its denoisers were trained without bev_condition), "
                                   f"so there is no conditional generation to measure: {NOT_CONDITIONAL_FIX}")
    try:
        require_semantic_head(gen.scene_ae.semantic_head)
    except SemanticsUnavailableError as e:
        raise ConditionalEvalError(f"{where}: the layout figures compare scene.bev() with maps, and {e}") from e


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------------ steps
def _held_out(gen: SceneGenerator, stores: Sequence[str], cfg: ConditionalConfig):
    """``(maps [n] BEVMap, windows at the model's size, indices, description)`` of the held-out windows."""
    rig = sim_bridge.open_store(stores[0]).rig
    capture_size = (rig.height, rig.width)          # the size the training maps were made at (WindowConditioning)
    kw = dict(cameras=cfg.cameras, split="val", val_fraction=cfg.val_fraction)
    at_capture = SceneWindowDataset(list(stores), cfg.window, image_size=capture_size, **kw)
    at_model = SceneWindowDataset(list(stores), cfg.window, image_size=gen.scene_ae.config.image_size, **kw)
    if len(at_capture) == 0:
        raise ConditionalEvalError(f"no held-out windows in {list(stores)} at val_fraction {cfg.val_fraction}: the "
                                   f"stores need 2+ episodes (or enough frames for a time split) for window {cfg.window}")
    idx = spread_indices(len(at_capture), cfg.num_maps)
    bounds = torch.tensor(gen.scene_ae.config.bounds, dtype=torch.float64)
    xy = (tuple(bounds[0, :2].tolist()), tuple(bounds[1, :2].tolist()))
    maps = []
    for i in idx:
        w = at_capture[i]
        maps.append(BEVMap.from_tags(window_bev(w, bounds, gen.bev_grid_yx, DEFAULT_CLASSES).numpy(), xy,
                                     name=f"store {w.store_index} episode {w.episode} frame {w.anchor}"))
    episodes = {(r.store_index, r.episode) for r in at_capture.refs}
    desc = (f"{len(idx)} of {len(at_capture)} held-out windows ({len(episodes)} episode(s), window {cfg.window}, "
            f"val_fraction {cfg.val_fraction}), maps from the captures at {capture_size[1]}x{capture_size[0]}")
    return maps, at_model, idx, desc


def _sweep_row(gen, maps, cfg, scale, device, progress) -> GuidanceFigures:
    """Scenes of seeds ``seed .. seed + n − 1`` under `maps` (``scale`` None: unconditional), timed and measured."""
    _sync(device)
    t = time.perf_counter()
    scenes = gen.generate(len(maps), seed=cfg.seed, steps=cfg.steps, sampler=cfg.sampler, batch_size=cfg.batch_size,
                          progress=progress, bev=None if scale is None else list(maps),
                          guidance_scale=1.0 if scale is None else float(scale))
    _sync(device)
    seconds = (time.perf_counter() - t) / len(maps)
    layout = layout_figures([s.bev() for s in scenes], [m.tags for m in maps])
    return GuidanceFigures(scale, layout, seconds, len(maps))


@torch.no_grad()
def _ceiling(gen, data, idx, maps, cfg, device, progress) -> tuple[LayoutFigures, LayoutFigures]:
    """The held-out windows' stage-1 fields (encoded from their views) against their maps, and the same fields
    through the LAE (encode, decode as generation does)."""
    bevs, lae_bevs = [], []

    def bev(field):
        return NeuralScene(field=field, seed=0, bundle_hash=gen.bundle_hash, decoder=gen.scene_ae).bev()

    for start in tqdm(range(0, len(idx), cfg.batch_size), desc="stage-1 ceiling", unit="batch", disable=not progress):
        batch = collate_windows([data[i] for i in idx[start:start + cfg.batch_size]]).to(device)
        fields = gen.scene_ae.encode(batch.images, batch.cameras())
        decoded = gen.latent_ae.decode(gen.latent_ae.encode(fields),
                                       snap_to_codebook=gen.sampler_defaults.snap_to_codebook)
        bevs += [bev(fields[b]) for b in range(fields.batch_size)]
        lae_bevs += [bev(decoded[b]) for b in range(decoded.batch_size)]
    requested = [m.tags for m in maps]
    return layout_figures(bevs, requested), layout_figures(lae_bevs, requested)


def _anchor_cameras(window) -> Cameras:
    views = torch.nonzero(window.frame_index == window.anchor).flatten()
    H, W = window.images.shape[-2:]
    return Cameras(window.K[views], window.cam_to_scene[views], W, H)


@torch.no_grad()
def _edits(gen, data, idx, maps, cfg, device, progress) -> EditFigures:
    """The editing figures (module docstring) over the first ``num_edits`` maps."""
    mc = gen.scene_ae.config
    (_, _, zmin), (_, _, zmax) = mc.bounds
    n = min(cfg.num_edits, len(maps))
    mask = maps[0].region_mask(cfg.edit_box)                                          # [Y, X] True = regenerate
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    (x0, y0), _ = maps[0].bounds
    dx, dy = maps[0].cell_size
    vz = (zmax - zmin) / mc.grid_shape[0]
    # the region's columns, widened by one voxel: the renderer's trilinear samples read that far
    lo = (x0 + cols[0] * dx - dx, y0 + rows[0] * dy - dy, zmin - vz)
    hi = (x0 + (cols[-1] + 1) * dx + dx, y0 + (rows[-1] + 1) * dy + dy, zmax + vz)
    region = torch.from_numpy(mask).to(device)
    outside, inside, changed, edited_bev, original_bev, targets = 0.0, [], [], [], [], []
    sq, px, rgb_max, away_n, total_n, seconds = 0.0, 0, 0, 0, 0, 0.0
    for k in tqdm(range(n), desc="editing", unit="edit", disable=not progress):
        a, donor = maps[k], maps[(k + len(maps) // 2) % len(maps)]
        b_tags = a.tags.copy()
        b_tags[mask] = donor.tags[mask]                                               # map B: A painted in the box
        b = BEVMap.from_tags(b_tags, a.bounds, name=f"{a.name} + box of {donor.name}")
        scene = gen.generate(1, seed=cfg.seed + k, steps=cfg.steps, sampler=cfg.sampler, bev=a,
                             guidance_scale=cfg.edit_guidance_scale)[0]
        _sync(device)
        t = time.perf_counter()
        edited = gen.edit(scene, region, bev=b, seed=cfg.seed + k, steps=cfg.steps, sampler=cfg.sampler,
                          guidance_scale=cfg.edit_guidance_scale)
        _sync(device)
        seconds += time.perf_counter() - t
        f0, f1 = scene.field.to(device=device), edited.field.to(device=device)
        outside = max(outside, float((f1.density - f0.density)[:, ~region].abs().max()),
                      float((f1.features - f0.features)[:, :, ~region].abs().max()))
        inside.append(float((f1.density - f0.density)[:, region].abs().mean()))
        both = mask & (a.tags != UNOBSERVED) & (b_tags != UNOBSERVED)
        changed.append((int((a.tags != b_tags)[both].sum()), int(both.sum())))
        edited_bev.append(edited.bev())
        original_bev.append(scene.bev())
        targets.append(b_tags)
        cams = _anchor_cameras(data[idx[k]])
        away = views_away_from_box(cams, lo, hi, mc.near, mc.far)
        total_n += len(away)
        away_n += int(away.sum())
        if away.any():
            sel = cams[torch.from_numpy(np.flatnonzero(away))]
            r0, r1 = scene.render(sel).rgb.cpu(), edited.render(sel).rgb.cpu()
            diff = r1.double() - r0.double()
            sq += float((diff / 255.0).pow(2).sum())
            px += diff.numel()
            rgb_max = max(rgb_max, int(diff.abs().max()))
    psnr = None if px == 0 else (math.inf if sq == 0 else 10.0 * math.log10(px / sq))
    masks = [mask] * n
    ch, tot = (sum(v) for v in zip(*changed))
    return EditFigures(num_edits=n, box=tuple(cfg.edit_box), region_cells=int(mask.sum()),
                       guidance_scale=cfg.edit_guidance_scale, field_max_abs_diff_outside=outside,
                       field_mean_abs_diff_inside=float(np.mean(inside)), changed_cells=ch / tot if tot else math.nan,
                       away_views=away_n, total_views=total_n, psnr_away_db=psnr,
                       rgb_max_abs_diff_away=rgb_max if px else None,
                       inside_edited=layout_figures(edited_bev, targets, masks),
                       inside_original=layout_figures(original_bev, targets, masks), seconds_per_edit=seconds / n)


# ------------------------------------------------------------------------------------------------ entry point
def evaluate_conditional(generator, stores: Sequence[str], config: ConditionalConfig | None = None, *,
                         device: str | torch.device = "cpu", progress: bool = True,
                         log: Callable[[str], None] = print) -> ConditionalReport:
    """Measure the conditional generation of a bundle (a path) or a `SceneGenerator` on the held-out maps of
    `stores` (module docstring).

    Raises:
        `ConditionalEvalError` before any work when the bundle is not BEV-conditioned or has no semantic head, or
        when the stores have no held-out windows; `GenerateArgumentError` for a bad guidance scale, steps or sampler.
    """
    cfg = config or ConditionalConfig()
    start = time.perf_counter()
    path = isinstance(generator, (str, Path))
    gen = SceneGenerator.from_pretrained(generator, device=device) if path else generator.to(device)
    require_conditional(gen, f"bundle {generator}" if path else "the generator")
    if not cfg.guidance_scales:
        raise ConditionalEvalError("no guidance scales given: pass at least one, e.g. --guidance-scales 1,2,3")
    if cfg.edit and cfg.num_edits < 1:
        raise ConditionalEvalError(f"num_edits must be >= 1 with editing on, got {cfg.num_edits} (or turn editing off)")
    maps, data, idx, desc = _held_out(gen, stores, cfg)
    if cfg.edit and not maps[0].region_mask(cfg.edit_box).any():
        raise ConditionalEvalError(f"edit box {tuple(cfg.edit_box)} holds no cell of the maps over {maps[0].bounds}: give "
                                   "(x0, y0, x1, y1) metres inside the bundle's voxel box")
    log(f"maps: {desc}")
    notes = [] if len(maps) >= cfg.num_maps else [f"only {len(maps)} held-out windows (asked {cfg.num_maps})"]
    gen.generate(1, seed=cfg.seed, steps=1, sampler=cfg.sampler, bev=maps[0], guidance_scale=2.0)  # warm-up, untimed
    rows = []
    for s in cfg.guidance_scales:
        log(f"generating {len(maps)} scenes under their maps, guidance scale {s:g} ...")
        rows.append(_sweep_row(gen, maps, cfg, float(s), device, progress))
    log(f"generating {len(maps)} unconditional scenes (same seeds) ...")
    uncond = _sweep_row(gen, maps, cfg, None, device, progress)
    log("stage-1 fields of the held-out windows, and through the LAE ...")
    ceiling, lae_ceiling = _ceiling(gen, data, idx, maps, cfg, device, progress)
    edit = None
    if cfg.edit:
        if len(maps) < 2:
            notes.append("editing skipped: it paints the box from another held-out map and there is only one")
        else:
            log(f"editing {min(cfg.num_edits, len(maps))} scenes inside {tuple(cfg.edit_box)} m ...")
            edit = _edits(gen, data, idx, maps, cfg, device, progress)
    return ConditionalReport(bundle=str(generator) if path else "in-memory", bundle_hash=gen.bundle_hash,
                             stores=[str(s) for s in stores], config=asdict(cfg), maps=desc, conditional=rows,
                             unconditional=uncond, ceiling=ceiling, lae_ceiling=lae_ceiling, edit=edit, machine=machine_line(str(device)),
                             device=str(device), seconds=time.perf_counter() - start, notes=notes)


# ------------------------------------------------------------------------------------------------ report
def _f(v, p: int = 3) -> str:
    if v is None:
        return "—"
    return "nan" if isinstance(v, float) and math.isnan(v) else ("∞" if v == math.inf else f"{v:.{p}f}")


def _row(name: str, scale: str, f: LayoutFigures, secs: str) -> str:
    iou = " | ".join(_f(f.class_iou[n]) for n in LAYOUT_CLASSES)
    return f"| {name} | {scale} | {_f(f.miou)} | {iou} | {_f(f.coverage, 2)} | {f.num_maps} | {secs} |"


def conditional_markdown(r: ConditionalReport) -> str:
    """The report as a markdown page: the layout table (sweep, chance, ceiling), the editing table, the timing."""
    c = r.config
    head = " | ".join(LAYOUT_CLASSES)
    lines = [f"# nfldm eval --conditional — {r.bundle} (hash {r.bundle_hash[:12]})", "",
             f"Maps: {r.maps}. Machine: {r.machine}; device {r.device}; {c['steps'] or 'bundle default'} steps, "
             f"sampler {c['sampler'] or 'bundle default'}, {c['batch_size']} scenes per call; {r.seconds:.0f} s.", "",
             "## Layout fidelity: IoU of scene.bev() against the requested map (pooled over the maps)", "",
             f"| scenes | guidance scale | mIoU ↑ | {head} | coverage | maps | s / scene |",
             "|---|---|---|" + "---|" * len(LAYOUT_CLASSES) + "---|---|---|"]
    lines += [_row("conditional", f"{g.guidance_scale:g}", g.layout, f"{g.seconds_per_scene:.3f}") for g in r.conditional]
    u = r.unconditional
    lines += [_row("unconditional, same seeds (chance)", "—", u.layout, f"{u.seconds_per_scene:.3f}"),
              _row("stage-1 fields of the windows (ceiling)", "—", r.ceiling, "—"),
              _row("the same fields through the LAE (what decoding keeps)", "—", r.lae_ceiling, "—"), "",
              "IoU over the cells observed in both maps; coverage = those cells / the requested maps' observed cells. "
              "A guidance scale ≠ 1 runs every denoiser on a doubled batch.", ""]
    e = r.edit
    if e is not None:
        ok = e.psnr_away_db is not None and e.psnr_away_db >= 40
        psnr = (f"{_f(e.psnr_away_db, 2)} dB (target ≥ 40: {'PASS' if ok else 'FAIL'}; max \\|Δ rgb\\| "
                f"{e.rgb_max_abs_diff_away}/255)" if e.psnr_away_db is not None else "— (no view looks away)")
        lines += [f"## Editing ({e.num_edits} edits of box {e.box} m, {e.region_cells} cells, guidance scale "
                  f"{e.guidance_scale:g})", "", "| figure | value |", "|---|---|",
                  f"| field max \\|Δ\\| outside the region (exact: 0) | {e.field_max_abs_diff_outside:g} |",
                  f"| field mean \\|Δ density\\| inside (σ, 1/m) | {e.field_mean_abs_diff_inside:.4g} |",
                  f"| PSNR edited vs original, views looking away ({e.away_views} of {e.total_views}) | {psnr} |",
                  f"| region cells map B changes | {_f(e.changed_cells, 2)} |",
                  f"| mIoU inside vs map B, edited ↑ | {_f(e.inside_edited.miou)} ("
                  + ", ".join(f"{n} {_f(v)}" for n, v in e.inside_edited.class_iou.items()) + ") |",
                  f"| mIoU inside vs map B, before the edit | {_f(e.inside_original.miou)} |",
                  f"| seconds per edit | {e.seconds_per_edit:.3f} |", ""]
    lines += [f"Note: {n}" for n in r.notes]
    return "\n".join(lines) + "\n"


def write_conditional_report(report: ConditionalReport, out: str | Path) -> tuple[Path, Path]:
    """Write ``OUT/eval_conditional.json`` (strict JSON: nan as null, inf as "inf") and ``OUT/eval_conditional.md``."""
    return write_report_files(report, out, "eval_conditional", conditional_markdown(report))
