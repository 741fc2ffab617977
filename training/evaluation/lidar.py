"""`nfldm eval-lidar`: the generated LiDAR of a bundle's stage-1 fields against the captured LiDAR of held-out windows.

Data: the held-out windows of the capture stores, `SceneWindowDataset` with ``split="val"`` — the episode split of
every stage — with the window and ``val_fraction`` of the bundle's preset (``scene_ae_train``), or 2 frames and
0.25 (one of four episodes, the default model's split) when the preset is not in the table; options override both.
Stores must have been captured with a LiDAR (``sim_bridge collect --lidar nuscenes32``).

Per window: stage 1 (``load_part(bundle, "scene_ae")``) encodes every view of the window into one field in the
window's scene frame (the ego frame at the anchor, as `nfldm eval` reconstructs). For every frame ``t`` of the
window (the anchor and the others) the captured sensor pose is put into that frame, ``sensor_to_scene =
inv(ego_to_world[anchor]) @ lidar_to_world[t]``, the store's beams (its ``lidar`` attribute, read as
`nfldm_sdk.sensors.lidar_spec.LidarSpec` through the JSON form both specs share) are marched through the field
(`nfldm_sdk.sensors.lidar.march_lidar_rays`: the range where the opacity reaches ``HIT_ALPHA`` = 0.5, within
``range_m``), and the two range images are compared beam by beam (`compare_scan`).

Masks, per beam ("the box" = the field's voxel box in the scene frame, closed; `beam_masks`):

* **reach** — the beam's segment ``[0, range_m]`` meets the box, and the captured beam does not end before it enters
  the box (a surface outside the box would hide it);
* **captured return** — a reach beam with a finite captured range whose return point lies inside the box. As
  `nfldm_training.metrics.masks.box_depth_mask` does for camera pixels, a surface outside the box is one the field
  cannot hold, so such a beam counts as "no return in the box";
* **generated return** — a finite generated range (inside the box: the marcher is clipped to it);
* **compared** — captured and generated return both.

Figures, pooled over the scans (reported for the anchor frames alone and for every frame of the windows):

* **range AbsRel** ``mean |r_gen − r_cap| / r_cap`` and the mean absolute range error (metres) over compared beams;
* **Chamfer distance** (metres), per scan, between the captured returns and the generated returns (scene frame, exact
  nearest neighbours): ``CD = mean_c min_g ‖c − g‖ + mean_g min_c ‖g − c‖`` (`nfldm_training.metrics.scene_3d`'s
  definition), and its two halves, captured → generated (completeness) and generated → captured (accuracy); averaged
  over the scans where both sets are non-empty. Each half's mean is taken over at most ``chamfer_queries`` (8192)
  query points drawn from its set (seeded), their nearest neighbours searched among all points of the other set;
* **drop agreement** — the fraction of reach beams where both say "return" or both say "no return", with the two
  return rates (captured, generated) over the reach beams;
* **labels** (stage 1 with a semantic head) — over compared beams, the captured tag's class (the head's class set)
  against the class of the field's tag at the generated return (`nfldm_sdk.sensors.lidar.lidar_point_tags`):
  accuracy beside the majority-class accuracy (the chance level), mIoU beside the majority-class mIoU.

Speed: beams/s and points/s (returns) of the marcher on the render device, march time only (CUDA synchronised), after
one untimed warm-up scan, in the same run.
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
from scipy.spatial import cKDTree

from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.labels.classes import SemanticClasses
from nfldm_sdk.models.bundle import load_part, read_manifest
from nfldm_sdk.models.semantic_head import SEMANTICS_UNAVAILABLE, SemanticHead
from nfldm_sdk.rendering.rays import HIT_ALPHA, clip_rays_to_box
from nfldm_sdk.sensors.lidar import lidar_point_tags, lidar_samples, march_lidar_rays
from nfldm_sdk.sensors.lidar_spec import LidarError, LidarSpec
from nfldm_training.evaluation.report_files import write_report_files
from nfldm_training.benchmarks.bench import machine_line
from nfldm_training.configs.presets import PRESETS
from nfldm_training.data.capture_windows import SceneWindowDataset, collate_windows
from nfldm_training.errors import TrainingError
from nfldm_training.evaluation.semantic import spread_indices
from nfldm_training.metrics.semantic import majority_baseline_miou, mean_iou

__all__ = ["LidarEvalConfig", "ScanComparison", "LabelFigures", "LidarFigures", "LidarSpeed", "LidarEvalReport",
           "beam_masks", "chamfer_halves", "compare_scan", "store_lidar_spec", "evaluate_lidar", "lidar_markdown", "write_lidar_report",
           "FALLBACK_WINDOW", "FALLBACK_VAL_FRACTION"]

#: Window and held-out fraction when the bundle's preset is not in the table (the default model's split: 1 of 4).
FALLBACK_WINDOW = 2
FALLBACK_VAL_FRACTION = 0.25


@dataclass
class LidarEvalConfig:
    """Settings of `evaluate_lidar` (the `nfldm eval-lidar` options)."""

    window: int | None = None
    """Frames per held-out window (None = the bundle preset's stage-1 window, else `FALLBACK_WINDOW`)."""
    val_fraction: float | None = None
    """Held-out fraction of each store's episodes (None = the preset's, else `FALLBACK_VAL_FRACTION`)."""
    max_windows: int | None = 32
    """Held-out windows evaluated, spread evenly over the split (None = all)."""
    cameras: tuple[str, ...] | None = None
    """Rig cameras stage 1 encodes (None = all cameras of the store's rig)."""
    n_samples: int | None = None
    """Marcher samples per beam (None = `lidar_samples`: steps of at most half a voxel)."""
    hit_alpha: float = HIT_ALPHA
    """The opacity that counts as a generated return."""
    chamfer_queries: int | None = 8192
    """Query points per Chamfer half per scan (`chamfer_halves`: a seeded draw, all points searched; None = all)."""
    seed: int = 0
    """Seed of the Chamfer query draws (scan k uses seed + k)."""


@dataclass(eq=False)
class ScanComparison:
    """One generated scan against its captured scan (masks: module docstring). Counts are beams.

    Attributes:
        beams: beams of the scan, ``C × A``.
        reach: beams that reach the box.
        captured_returns, generated_returns: reach beams with a captured (in-box) / generated return.
        agree: reach beams where both agree on return / no return.
        compared: beams with both returns.
        abs_rel_sum: ``Σ |r_gen − r_cap| / r_cap`` over compared beams; abs_err_sum: ``Σ |r_gen − r_cap|``, metres.
        chamfer_cap_to_gen, chamfer_gen_to_cap: the Chamfer halves, metres (None when a set is empty).
        confusion: ``[K, K]`` float64 label counts over compared beams (rows captured class, columns field class),
            or None without a semantic head or captured tags.
        march_seconds: wall time of the marcher alone.
        generated: ``[C, A]`` float32 generated range image (``inf`` = no return).
    """

    beams: int
    reach: int
    captured_returns: int
    generated_returns: int
    agree: int
    compared: int
    abs_rel_sum: float
    abs_err_sum: float
    chamfer_cap_to_gen: float | None
    chamfer_gen_to_cap: float | None
    confusion: np.ndarray | None
    march_seconds: float
    generated: np.ndarray

    @property
    def chamfer(self) -> float | None:
        """Symmetric Chamfer distance, metres (the sum of both halves), or None when a set is empty."""
        a, b = self.chamfer_cap_to_gen, self.chamfer_gen_to_cap
        return None if a is None or b is None else a + b


@dataclass
class LabelFigures:
    """Label agreement of captured and generated returns (classes of the head's set)."""

    accuracy: float
    majority_accuracy: float
    """Accuracy of answering the most frequent captured class everywhere (the chance level)."""
    miou: float
    majority_miou: float
    returns: int


@dataclass
class LidarFigures:
    """Pooled figures of a set of scans (module docstring); None where undefined (nothing to average)."""

    scans: int
    beams: int
    reach_beams: int
    compared_returns: int
    abs_rel: float | None
    mean_abs_error_m: float | None
    chamfer_m: float | None
    chamfer_captured_to_generated_m: float | None
    chamfer_generated_to_captured_m: float | None
    chamfer_scans: int
    drop_agreement: float | None
    captured_return_rate: float | None
    generated_return_rate: float | None
    labels: LabelFigures | None = None


@dataclass
class LidarSpeed:
    """The marcher's speed on the render device (module docstring)."""

    device: str
    beams: int
    points: int
    seconds: float
    beams_per_s: float
    points_per_s: float
    samples_per_beam: int


@dataclass
class LidarEvalReport:
    """Everything `nfldm eval-lidar` measured (written by `write_lidar_report`)."""

    bundle: str
    bundle_hash: str
    stores: list[str]
    lidar: list[str]
    """Each store's `LidarSpec` (repr)."""
    config: dict
    """The resolved settings (window, val_fraction and where they came from, windows evaluated)."""
    anchor: LidarFigures
    """The anchor frames' scans (the scene frame's own ego pose)."""
    window: LidarFigures
    """Every frame of the windows."""
    speed: LidarSpeed
    labels_note: str
    seconds: float
    machine: str = ""
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ one scan
def beam_masks(captured: np.ndarray, generated: np.ndarray, origin: np.ndarray, directions: np.ndarray,
               bounds: np.ndarray, range_m: float) -> dict[str, np.ndarray]:
    """The per-beam masks of the module docstring.

    Args:
        captured, generated: ``[R]`` ranges, metres along the beam (``inf`` = no return).
        origin: ``[3]`` sensor position in the scene frame, metres.
        directions: ``[R, 3]`` unit beam directions in the scene frame.
        bounds: ``[2, 3]`` box min/max (x, y, z), metres.
        range_m: the LiDAR's maximum range, metres.
    Returns:
        ``{"reach", "captured", "generated", "compared"}``, each ``[R]`` bool.
    """
    o = torch.as_tensor(np.broadcast_to(origin, directions.shape).copy(), dtype=torch.float64)
    d = torch.as_tensor(directions, dtype=torch.float64)
    b = torch.as_tensor(bounds, dtype=torch.float64)
    t0, _, hit = clip_rays_to_box(o, d, b[0], b[1], 0.0, float(range_m))
    cap = captured.astype(np.float64)
    finite = np.isfinite(cap)
    reach = hit.numpy() & ~(finite & (cap < t0.numpy()))
    p = origin + directions * np.where(finite, cap, 0.0)[:, None]
    inside = ((p >= bounds[0]) & (p <= bounds[1])).all(-1)
    cap_ret, gen_ret = reach & finite & inside, reach & np.isfinite(generated)
    return {"reach": reach, "captured": cap_ret, "generated": gen_ret, "compared": cap_ret & gen_ret}


def chamfer_halves(a: np.ndarray, b: np.ndarray, queries: int | None = None, seed: int = 0
                   ) -> tuple[float | None, float | None]:
    """``(mean_a min_b ‖a − b‖, mean_b min_a ‖a − b‖)``, metres, of ``[P, 3]`` and ``[Q, 3]`` points (None if one
    is empty); exact nearest neighbours (k-d trees over all points).

    Args:
        queries: at most this many points of each set are the queries of its half (a seeded uniform draw without
            replacement; None = all): an unbiased estimate of the mean, for the cost of the far-away queries of a
            set that is mostly one small cluster.
        seed: seed of the draw.
    """
    if len(a) == 0 or len(b) == 0:
        return None, None
    rng = np.random.default_rng(seed)
    draw = lambda p: p if queries is None or len(p) <= queries else p[rng.choice(len(p), queries, replace=False)]  # noqa: E731
    workers = max(1, torch.get_num_threads())                              # the thread budget torch was given
    return (float(cKDTree(b).query(draw(a), workers=workers)[0].mean()),
            float(cKDTree(a).query(draw(b), workers=workers)[0].mean()))


def compare_scan(field: VoxelField, captured_range: np.ndarray, sensor_to_scene: np.ndarray, spec: LidarSpec | str, *,
                 captured_tags: np.ndarray | None = None, head: SemanticHead | None = None,
                 n_samples: int | None = None, hit_alpha: float = HIT_ALPHA,
                 chamfer_queries: int | None = None, seed: int = 0) -> ScanComparison:
    """March `spec`'s beams from `sensor_to_scene` through `field` and compare them with a captured range image.

    Args:
        field: unbatched `VoxelField` in the scene frame (σ per metre), on the render device.
        captured_range: ``[C, A]`` captured ranges, metres along the beam (``inf`` = no return), laid out as
            `spec`'s range image (row = beam elevation, highest first; column = azimuth).
        sensor_to_scene: ``[4, 4]`` sensor frame (x forward, y left, z up) -> scene frame, metres.
        spec: the LiDAR (a `LidarSpec`, preset name or JSON file).
        captured_tags: ``[C, A]`` uint8 captured CARLA tags (0 = no return), for the label figures with `head`.
        head: the stage-1 semantic head (labels the generated returns), or None.
        n_samples: marcher samples per beam (default `lidar_samples`).
        hit_alpha: the opacity of a generated return.
        chamfer_queries, seed: query points per Chamfer half and the seed of their draw (`chamfer_halves`).
    Returns:
        the `ScanComparison` (counts and sums, to be pooled over scans).
    Raises:
        LidarError: the range image does not have `spec`'s shape.
    """
    spec = LidarSpec.resolve(spec)
    shape = (spec.channels, spec.points_per_channel)
    cap = np.asarray(captured_range, dtype=np.float32)
    if cap.shape != shape:
        raise LidarError(f"captured range image {cap.shape} does not match LiDAR {spec!r} ({shape}): give the scan of "
                         "the store whose lidar attribute this spec is")
    s2s = np.asarray(sensor_to_scene, dtype=np.float64)
    dirs = spec.directions().reshape(-1, 3) @ s2s[:3, :3].T                 # [R, 3] scene frame
    origin = s2s[:3, 3].copy()
    samples = lidar_samples(field, spec.range_m) if n_samples is None else int(n_samples)
    sync = torch.cuda.synchronize if field.device.type == "cuda" else (lambda: None)   # time the kernels, not the launch
    sync()
    start = time.perf_counter()
    gen = march_lidar_rays(field, torch.from_numpy(np.broadcast_to(origin, dirs.shape).copy()), torch.from_numpy(dirs),
                           max_range=spec.range_m, n_samples=samples, hit_alpha=hit_alpha)
    sync()
    seconds = time.perf_counter() - start
    gen = gen.cpu().numpy()                                                 # [R] float32
    cap = cap.reshape(-1)
    bounds = field.bounds.detach().double().cpu().numpy()
    m = beam_masks(cap, gen, origin, dirs, bounds, spec.range_m)
    c, g = m["compared"], m["generated"]
    err = np.abs(gen[c].astype(np.float64) - cap[c])
    cap_pts = origin + dirs[m["captured"]] * cap[m["captured"], None].astype(np.float64)
    gen_pts = origin + dirs[g] * gen[g, None].astype(np.float64)
    c2g, g2c = chamfer_halves(cap_pts, gen_pts, chamfer_queries, seed)
    confusion = None
    if head is not None and captured_tags is not None:
        classes: SemanticClasses = head.classes
        tags = np.asarray(captured_tags, dtype=np.uint8).reshape(-1)
        hits = torch.from_numpy(origin + dirs[c] * gen[c, None].astype(np.float64))
        field_tags = lidar_point_tags(field, hits, head).cpu().numpy()
        k = classes.num_classes
        truth, pred = classes.tag_to_class[tags[c]], classes.tag_to_class[field_tags]
        keep = (truth >= 0) & (pred >= 0)
        confusion = np.bincount(truth[keep] * k + pred[keep], minlength=k * k).reshape(k, k).astype(np.float64)
    reach = m["reach"]
    return ScanComparison(beams=int(cap.size), reach=int(reach.sum()), captured_returns=int(m["captured"].sum()),
                          generated_returns=int(g.sum()), agree=int((m["captured"] == g)[reach].sum()),
                          compared=int(c.sum()), abs_rel_sum=float((err / cap[c]).sum()), abs_err_sum=float(err.sum()),
                          chamfer_cap_to_gen=c2g, chamfer_gen_to_cap=g2c, confusion=confusion, march_seconds=seconds,
                          generated=gen.reshape(shape))


# ------------------------------------------------------------------------------------------------ pooling
#: The `ScanComparison` counts and sums a pool adds up.
_SUMS = ("beams", "reach", "captured_returns", "generated_returns", "agree", "compared", "abs_rel_sum", "abs_err_sum",
         "march_seconds")


class _Pool:
    """Sums of `ScanComparison` s -> `LidarFigures`."""

    def __init__(self):
        self.n = 0
        self.sums = dict.fromkeys(_SUMS, 0)
        self.c2g: list[float] = []
        self.g2c: list[float] = []
        self.confusion: np.ndarray | None = None

    def add(self, s: ScanComparison) -> None:
        self.n += 1
        for k in _SUMS:
            self.sums[k] += getattr(s, k)
        if s.chamfer is not None:
            self.c2g.append(s.chamfer_cap_to_gen)
            self.g2c.append(s.chamfer_gen_to_cap)
        if s.confusion is not None:
            self.confusion = s.confusion.copy() if self.confusion is None else self.confusion + s.confusion

    def figures(self) -> LidarFigures:
        ratio = lambda a, b: a / b if b else None  # noqa: E731
        mean = lambda v: float(np.mean(v)) if v else None  # noqa: E731
        c2g, g2c, t = mean(self.c2g), mean(self.g2c), self.sums
        labels = None
        if self.confusion is not None and self.confusion.sum() > 0:
            conf, total = self.confusion, self.confusion.sum()
            labels = LabelFigures(accuracy=float(np.trace(conf) / total), majority_accuracy=float(conf.sum(1).max() / total),
                                  miou=mean_iou(torch.from_numpy(conf)),
                                  majority_miou=majority_baseline_miou(torch.from_numpy(conf)), returns=int(total))
        return LidarFigures(scans=self.n, beams=t["beams"], reach_beams=t["reach"], compared_returns=t["compared"],
                            abs_rel=ratio(t["abs_rel_sum"], t["compared"]),
                            mean_abs_error_m=ratio(t["abs_err_sum"], t["compared"]),
                            chamfer_m=None if c2g is None else c2g + g2c, chamfer_captured_to_generated_m=c2g,
                            chamfer_generated_to_captured_m=g2c, chamfer_scans=len(self.c2g),
                            drop_agreement=ratio(t["agree"], t["reach"]),
                            captured_return_rate=ratio(t["captured_returns"], t["reach"]),
                            generated_return_rate=ratio(t["generated_returns"], t["reach"]), labels=labels)


# ------------------------------------------------------------------------------------------------ entry point
def store_lidar_spec(store) -> LidarSpec:
    """The SDK `LidarSpec` of an open capture store's ``lidar`` attribute (the JSON form both specs share).

    Raises:
        TrainingError: the store was captured without a LiDAR (names the store and the collect option).
    """
    if store.lidar is None:
        raise TrainingError(f"capture store {store.path} has no LiDAR: collect it with `sim_bridge collect --lidar "
                            "nuscenes32 ...` (the same options plus --lidar) to evaluate generated LiDAR")
    return LidarSpec.from_json(store.lidar.to_json(), where=f"store {store.path} lidar attribute")


def _split(preset: str, cfg: LidarEvalConfig) -> tuple[int, float, str]:
    """(window, val_fraction, where they came from)."""
    known = PRESETS.get(preset)
    window = cfg.window if cfg.window is not None else (known.scene_ae_train.window if known else FALLBACK_WINDOW)
    val = cfg.val_fraction if cfg.val_fraction is not None else (
        known.scene_ae_train.val_fraction if known else FALLBACK_VAL_FRACTION)
    given = cfg.window is not None and cfg.val_fraction is not None
    source = "options" if given else f"preset {preset!r}" + (" (scene_ae_train)" if known else " not in the table: "
                                                              "the fallbacks") + " where no option was given"
    return int(window), float(val), source


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


@torch.no_grad()
def evaluate_lidar(bundle: str | Path, stores: Sequence[str], config: LidarEvalConfig | None = None, *,
                   device: str | torch.device = "cpu", log: Callable[[str], None] = print) -> LidarEvalReport:
    """Evaluate the generated LiDAR of `bundle`'s stage 1 on the held-out windows of `stores` (module docstring).

    Raises:
        TrainingError: a store without LiDAR, or no held-out window. `BundleError`: the bundle or its stage 1.
    """
    cfg = config or LidarEvalConfig()
    start = time.perf_counter()
    stores = [str(s) for s in stores]
    specs = [store_lidar_spec(sim_bridge.open_store(s)) for s in stores]   # checked before any model is loaded
    manifest = read_manifest(bundle)
    window, val_fraction, source = _split(manifest.preset, cfg)
    dev = torch.device(device)
    ae = load_part(bundle, "scene_ae", manifest, device=dev).eval()
    data = SceneWindowDataset(stores, window, cameras=cfg.cameras, image_size=ae.config.image_size, split="val",
                              val_fraction=val_fraction)
    if len(data) == 0:
        raise TrainingError(f"no held-out windows of {window} frames in {stores}: stores need 2+ episodes (or enough "
                            f"frames for a time split); val_fraction {val_fraction}")
    head = ae.semantic_head
    idx = spread_indices(len(data), cfg.max_windows)
    log(f"generated vs captured LiDAR on {len(idx)} of {len(data)} held-out windows ({window} frames each) ...")
    pools = {"anchor": _Pool(), "window": _Pool()}
    samples, warm = None, False
    for n, i in enumerate(idx):
        w, ref = data[i], data.refs[i]
        ep = data.episode(ref)
        spec = specs[ref.store_index]
        batch = collate_windows([w]).to(dev)
        fld = ae.encode(batch.images, batch.cameras())[0]
        scene_from_world = np.linalg.inv(np.asarray(ep.ego_to_world[w.anchor], dtype=np.float64))
        samples = lidar_samples(fld, spec.range_m) if cfg.n_samples is None else int(cfg.n_samples)
        for t in range(ref.start, ref.start + window):
            s2s = scene_from_world @ np.asarray(ep.lidar_to_world[t], dtype=np.float64)
            kw = dict(captured_tags=np.asarray(ep.lidar_tag[t]) if head is not None else None, head=head,
                      n_samples=samples, hit_alpha=cfg.hit_alpha, chamfer_queries=cfg.chamfer_queries,
                      seed=cfg.seed + pools["window"].n)
            rng = np.asarray(ep.lidar_range[t])
            if not warm:                                    # warm-up: allocator, kernels; not timed
                compare_scan(fld, rng, s2s, spec, **kw)
                warm = True
            s = compare_scan(fld, rng, s2s, spec, **kw)
            pools["window"].add(s)
            if t == w.anchor:
                pools["anchor"].add(s)
        if (n + 1) % 8 == 0 or n + 1 == len(idx):
            log(f"  {n + 1}/{len(idx)} windows")
    tot = pools["window"].sums
    beams, points, seconds = tot["beams"], tot["generated_returns"], tot["march_seconds"]
    speed = LidarSpeed(device=_device_name(dev), beams=beams, points=points, seconds=seconds,
                       beams_per_s=beams / seconds if seconds else math.nan,
                       points_per_s=points / seconds if seconds else math.nan, samples_per_beam=int(samples))
    left_out = pools["window"].n - len(pools["window"].c2g)
    notes = [f"{left_out} scan(s) without generated or captured returns in the box: left out of the Chamfer "
             "average"] if left_out else []
    resolved = {**asdict(cfg), "window": window, "val_fraction": val_fraction, "split_source": source,
                "windows_evaluated": len(idx), "held_out_windows": len(data), "samples_per_beam": int(samples)}
    return LidarEvalReport(
        bundle=str(bundle), bundle_hash=manifest.bundle_hash, stores=stores, lidar=[repr(s) for s in specs],
        config=resolved, anchor=pools["anchor"].figures(), window=pools["window"].figures(), speed=speed,
        labels_note="" if head is not None else f"unavailable: {SEMANTICS_UNAVAILABLE}",
        seconds=time.perf_counter() - start, machine=machine_line(str(dev)), notes=notes)


# ------------------------------------------------------------------------------------------------ report
def _fmt(v: float | None, p: int = 3) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.{p}f}"


def lidar_markdown(r: LidarEvalReport) -> str:
    """The report as a markdown page (one table: anchor frames and all frames of the windows)."""
    a, w, s, c = r.anchor, r.window, r.speed, r.config
    rows = [
        ("range AbsRel ↓", lambda f: _fmt(f.abs_rel)),
        ("mean \\|range error\\| (m) ↓", lambda f: _fmt(f.mean_abs_error_m)),
        ("Chamfer distance (m) ↓", lambda f: _fmt(f.chamfer_m)),
        ("  captured → generated (m)", lambda f: _fmt(f.chamfer_captured_to_generated_m)),
        ("  generated → captured (m)", lambda f: _fmt(f.chamfer_generated_to_captured_m)),
        ("drop agreement ↑", lambda f: _fmt(f.drop_agreement)),
        ("captured return rate", lambda f: _fmt(f.captured_return_rate)),
        ("generated return rate", lambda f: _fmt(f.generated_return_rate)),
        ("label accuracy ↑ (majority)", lambda f: "—" if f.labels is None else
         f"{f.labels.accuracy:.3f} ({f.labels.majority_accuracy:.3f})"),
        ("label mIoU ↑ (majority)", lambda f: "—" if f.labels is None else
         f"{_fmt(f.labels.miou)} ({_fmt(f.labels.majority_miou)})"),
        ("scans / beams reaching the box / compared", lambda f: f"{f.scans} / {f.reach_beams} / {f.compared_returns}"),
    ]
    lines = [f"# nfldm eval-lidar — {r.bundle} (hash {r.bundle_hash[:12]})", "",
             f"{c['windows_evaluated']} of {c['held_out_windows']} held-out windows ({c['window']} frames, val_fraction "
             f"{c['val_fraction']}: {c['split_source']}) of {len(r.stores)} store(s); LiDAR {', '.join(sorted(set(r.lidar)))}, "
             f"a generated return where the opacity reaches {c['hit_alpha']}; machine: {r.machine}; {r.seconds:.0f} s.", "",
             "| figure | anchor frames | all window frames |", "|---|---|---|"]
    lines += [f"| {name} | {f(a)} | {f(w)} |" for name, f in rows]
    lines += ["", f"Marcher on {s.device}: {s.beams_per_s:,.0f} beams/s, {s.points_per_s:,.0f} points/s (returns) "
              f"({s.samples_per_beam} samples per beam; {s.beams} beams in {s.seconds:.1f} s).", ""]
    if r.labels_note:
        lines += [f"Labels: {r.labels_note}", ""]
    lines += ["Masks: a beam counts where its segment [0, range] meets the voxel box; a captured return counts only "
              "inside the box (a surface outside it is \"no return\"); AbsRel and labels use beams with both returns; "
              "Chamfer = captured → generated + generated → captured mean nearest-point distances per scan.", ""]
    lines += [f"Note: {n}" for n in r.notes]
    return "\n".join(lines) + "\n"


def write_lidar_report(report: LidarEvalReport, out: str | Path) -> tuple[Path, Path]:
    """Write ``OUT/lidar_eval.json`` (strict JSON, `strict_json`) and ``OUT/lidar_eval.md``; returns both paths."""
    return write_report_files(report, out, "lidar_eval", lidar_markdown(report))
