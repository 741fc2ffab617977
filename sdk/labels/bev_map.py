"""Bird's-eye label maps as one immutable type, `BEVMap`: the layout that generation can be conditioned on.

A map is ``tags [Y, X]`` uint8 CARLA tags plus the box it covers, ``bounds = ((xmin, ymin), (xmax, ymax))`` metres
in the scene frame (the ego frame at the scene's anchor: x forward, y left). Cell ``(iy, ix)`` covers
``x ∈ xmin + [ix, ix+1)·Δx``, ``y ∈ ymin + [iy, iy+1)·Δy`` — row ``iy`` is the y index from ``ymin`` (row 0 is the
rightmost strip), column ``ix`` the x index from ``xmin``, exactly as `NeuralScene.bev` and
`nfldm_sdk.labels.semantic_field.points_bev` write them. A cell holds a CARLA tag 0..28 or `UNOBSERVED` (255).
Maps made from scenes or points hold representative tags (`SemanticClasses.to_tags`); `from_tags` keeps any CARLA
tag, and `normalised` groups them.

Files (`save` / `load`): ``map.png`` or ``map.npy`` plus the sidecar ``map.json`` (same stem) holding the bounds::

    {"format": "nfldm.bev_map", "format_version": 1, "bounds": [[xmin, ymin], [xmax, ymax]], "grid_yx": [Y, X],
     "png_layout": "...", "unobserved": 255, "unobserved_rgb": [255, 255, 255], "name": ..., "source": ...}

The PNG is RGB, one pixel per cell in `CARLA_PALETTE` colours (white = unobserved), drawn as a plot of the scene
frame, x to the right and y up: pixel ``(row r, column c)`` is cell ``(Y − 1 − r, c)``, so the ego's left is up and
its forward is right, and a map painted in an image editor reads as seen from above. The ``.npy`` holds the
``[Y, X]`` array itself (no flip). `sim_bridge.bev` writes the same files without importing this package (its
palette is a twin of `CARLA_PALETTE`, tested equal).

Layout fidelity (`bev_class_iou`, `BEVMap.class_iou`, `BEVMap.miou`): per-class IoU over the cells observed in both
maps, classes of `SemanticClasses` (tags grouped), ``nan`` for a class in neither map there.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.errors import NfldmError
from nfldm_sdk.labels.classes import CARLA_PALETTE, CARLA_TAG_NAMES, DEFAULT_CLASSES, UNOBSERVED, SemanticClasses
from nfldm_sdk.labels.semantic_field import points_bev

__all__ = ["BEV_FORMAT", "BEVMap", "BEVMapError", "DEFAULT_GRID_YX", "DRIVING_BOX_XY", "DRIVING_Z_RANGE", "KNOWN_TAGS",
           "LAYOUT_CLASSES", "bev_class_counts", "bev_class_iou"]

#: The voxel box of the presets in x/y, metres in the scene frame: x ∈ [−16, 48], y ∈ [−32, 32].
DRIVING_BOX_XY = ((-16.0, -32.0), (48.0, 32.0))
#: Its height range, metres: points outside it do not label a cell (the box of stage 1).
DRIVING_Z_RANGE = (-2.0, 6.0)
#: Cells ``(Y, X)`` of the default preset's grid (the fine latent f's resolution): 1 m cells over the box.
DEFAULT_GRID_YX = (64, 64)
#: Values a cell may hold: the CARLA 0.9.14+ tags and `UNOBSERVED`.
KNOWN_TAGS = (*sorted(CARLA_TAG_NAMES), UNOBSERVED)
#: The classes layout fidelity (`BEVMap.miou`) averages by default.
LAYOUT_CLASSES = ("road", "sidewalk", "building", "vegetation")
BEV_FORMAT, BEV_FORMAT_VERSION = "nfldm.bev_map", 1
_PNG_LAYOUT = "x right, y up: pixel (row r, column c) = cell (Y-1-r, c); rgb = CARLA palette, white = unobserved"
#: A 3×5 pixel font for the legend of `BEVMap.show`: per glyph five rows of 3 bits (4 = left pixel).
_FONT = dict(zip("abcdefghijklmnopqrstuvwxyz_ 0123456789", (
    "25755 65656 34443 65556 74647 74644 34553 55755 72227 11152 55655 44447 57755 65555 25552 65644 25563 65655 "
    "34216 72222 55557 55552 55775 55255 55222 71247 00007 00000 75557 26227 71747 71317 55711 74717 74757 71111 "
    "75757 75717").split()))


class BEVMapError(NfldmError, ValueError):
    """A BEV map, its file or an argument is malformed; the message names the problem and the fix."""


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)


def _check_bounds(bounds) -> tuple[tuple[float, float], tuple[float, float]]:
    b = _numpy(bounds).astype(np.float64)
    if b.shape not in ((2, 2), (2, 3)):
        raise BEVMapError(f"bounds must be ((xmin, ymin), (xmax, ymax)) metres (or a [2, 3] voxel box), got shape "
                          f"{b.shape}")
    b = b[:, :2]
    if not np.isfinite(b).all() or not (b[1] > b[0]).all():
        raise BEVMapError(f"bounds {b.tolist()} are not a box: need finite xmin < xmax and ymin < ymax, metres")
    return (float(b[0, 0]), float(b[0, 1])), (float(b[1, 0]), float(b[1, 1]))


def _check_grid(grid_yx) -> tuple[int, int]:
    g = tuple(grid_yx)
    if len(g) != 2 or any(isinstance(v, bool) or int(v) != v or int(v) < 1 for v in g):
        raise BEVMapError(f"grid_yx must be two integers >= 1 (Y rows, X columns), got {grid_yx!r}")
    return int(g[0]), int(g[1])


def _integer_cells(array, what: str) -> np.ndarray:
    """``[Y, X]`` int64 of a 2-D integer (or whole-valued float) array, or `BEVMapError`."""
    a = _numpy(array)
    if a.ndim != 2 or a.size == 0:
        raise BEVMapError(f"{what} must be a non-empty 2-D [Y, X] array (rows = y cells, columns = x cells), got "
                          f"shape {a.shape}")
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise BEVMapError(f"{what} must hold integers, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.floating):
        bad = ~np.isfinite(a) | (a != np.round(a))
        if bad.any():
            iy, ix = np.argwhere(bad)[0]
            raise BEVMapError(f"{what}: {int(bad.sum())} cell(s) are not whole numbers (first: {a[iy, ix]} at row "
                              f"{iy}, column {ix}); pass integer tags")
    return a.astype(np.int64)


def _check_tags(array, what: str = "tags") -> np.ndarray:
    """``[Y, X]`` uint8 CARLA tags (or `UNOBSERVED`) of `array`, or `BEVMapError` naming the bad values."""
    a = _integer_cells(array, what)
    ok = np.isin(a, KNOWN_TAGS)
    if not ok.all():
        vals, counts = np.unique(a[~ok], return_counts=True)
        iy, ix = np.argwhere(~ok)[0]
        listed = ", ".join(f"{v} ({c} cells)" for v, c in zip(vals[:8].tolist(), counts[:8].tolist()))
        raise BEVMapError(f"{what}: {int((~ok).sum())} cell(s) hold values that are not CARLA tags: {listed}"
                          f"{', ...' if len(vals) > 8 else ''} (first at row {iy}, column {ix}); write CARLA tags 0..28 "
                          f"(nfldm_sdk.labels.classes.CARLA_TAG_NAMES) or {UNOBSERVED} for unobserved cells; class "
                          "indices go through BEVMap.from_class_ids")
    return a.astype(np.uint8)


def bev_class_counts(a, b, classes: SemanticClasses = DEFAULT_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """Per-class intersection and union cell counts of two tag maps over the cells observed in both.

    Args:
        a, b: CARLA tags (uint8; `UNOBSERVED` = 255), same shape (any, e.g. ``[Y, X]`` or ``[B, Y, X]``).
        classes: the class set tags are grouped by (tags of one class count as equal).
    Returns:
        ``(inter [K], union [K])`` int64: for class k, ``|a = k ∧ b = k|`` and ``|a = k ∨ b = k|`` counted over the
        cells where neither map is `UNOBSERVED` (sums of these over many maps give their pooled IoU).
    """
    a, b = _numpy(a), _numpy(b)
    if a.shape != b.shape:
        raise BEVMapError(f"the maps have different grids {a.shape} and {b.shape}: resize one (BEVMap.resized)")
    both = (a != UNOBSERVED) & (b != UNOBSERVED)
    ca, cb = classes.from_tags(a[both]), classes.from_tags(b[both])
    K = classes.num_classes
    inter = np.bincount(ca[ca == cb], minlength=K).astype(np.int64)
    union = np.bincount(ca, minlength=K) + np.bincount(cb, minlength=K) - inter
    return inter, union.astype(np.int64)


def bev_class_iou(a, b, classes: SemanticClasses = DEFAULT_CLASSES) -> np.ndarray:
    """Per-class IoU of two tag maps over the cells observed in both (the layout-fidelity measure).

    Args:
        a, b: ``[Y, X]`` CARLA tags (uint8; `UNOBSERVED` = 255), same shape.
        classes: the class set tags are grouped by (tags of one class count as equal).
    Returns:
        ``[K]`` float64: for class k, ``|a = k ∧ b = k| / |a = k ∨ b = k|`` counted over the cells where neither map
        is `UNOBSERVED`; ``nan`` where class k is in neither map there (symmetric in a and b).
    """
    inter, union = bev_class_counts(a, b, classes)
    return np.where(union > 0, inter / np.maximum(union, 1), np.nan)


def _text_image(text: str, scale: int) -> np.ndarray:
    """``[5·scale, 4·len·scale]`` bool pixels of `text` in `_FONT` (unknown characters are blank)."""
    cols = []
    for ch in text.lower():
        rows = _FONT.get(ch, "00000")
        glyph = np.array([[(int(r) >> s) & 1 for s in (2, 1, 0)] for r in rows], bool)
        cols += [glyph, np.zeros((5, 1), bool)]
    img = np.concatenate(cols, axis=1)
    return np.kron(img, np.ones((scale, scale), bool)).astype(bool)


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value (`__eq__` below compares them)
class BEVMap:
    """An immutable bird's-eye label map (module docstring: cells, orientation, files).

    Attributes:
        tags: ``[Y, X]`` uint8 CARLA tags, `UNOBSERVED` (255) where nothing is known; read-only.
        bounds: ``((xmin, ymin), (xmax, ymax))`` metres in the scene frame (x forward, y left).
        name, source: optional labels (what the map shows, where it came from), kept in its files.
    """

    tags: np.ndarray
    bounds: tuple[tuple[float, float], tuple[float, float]] = DRIVING_BOX_XY
    name: str | None = None
    source: str | None = None

    def __post_init__(self):
        tags = _check_tags(self.tags).copy()
        tags.setflags(write=False)
        object.__setattr__(self, "tags", tags)
        object.__setattr__(self, "bounds", _check_bounds(self.bounds))

    # ------------------------------------------------------------------------------------------ constructors
    @classmethod
    def from_tags(cls, array, bounds=DRIVING_BOX_XY, *, name: str | None = None, source: str | None = None) -> BEVMap:
        """A map of ``array [Y, X]`` CARLA tags (any integer dtype; 0..28 or 255) over `bounds` (metres)."""
        return cls(array, bounds, name, source)

    @classmethod
    def from_class_ids(cls, ids, classes: SemanticClasses = DEFAULT_CLASSES, bounds=DRIVING_BOX_XY, *,
                       name: str | None = None) -> BEVMap:
        """A map of class indices ``ids [Y, X]`` (int, ``0..K−1`` of `classes`, negative = unobserved), written as
        the classes' representative tags."""
        a = _integer_cells(ids, "class ids")
        if (a >= classes.num_classes).any():
            bad = sorted(set(a[a >= classes.num_classes].tolist()))
            raise BEVMapError(f"class ids {bad[:8]} are out of range: the class set has {classes.num_classes} classes "
                              f"(0..{classes.num_classes - 1}: {', '.join(classes.names)}); use -1 for unobserved")
        return cls(classes.to_tags(a), bounds, name)

    @classmethod
    def from_scene(cls, scene, *, name: str | None = None) -> BEVMap:
        """The map of a generated scene: `NeuralScene.bev` (needs a semantic head) over its field's x/y bounds."""
        b = scene.field.bounds
        if b.ndim != 2:
            raise BEVMapError(f"the scene's field is batched (bounds {tuple(b.shape)}): take one scene of the batch")
        seed = getattr(scene, "seed", None)
        return cls(scene.bev(), b, name if name is not None else (f"scene_{seed}" if seed is not None else None),
                   f"NeuralScene(bundle_hash={getattr(scene, 'bundle_hash', None)})")

    @classmethod
    def from_points(cls, points, tags, *, bounds=DRIVING_BOX_XY, z_range=DRIVING_Z_RANGE,
                    grid_yx=DEFAULT_GRID_YX, classes: SemanticClasses = DEFAULT_CLASSES,
                    name: str | None = None) -> BEVMap:
        """The map of labelled points (`points_bev`): per cell the class of the highest point inside the box.

        Args:
            points: ``[P, 3]`` (x, y, z) metres in the scene frame (non-finite rows ignored).
            tags: ``[P]`` CARLA tags of the points (sky points ignored).
            bounds, z_range: the box, ``((xmin, ymin), (xmax, ymax))`` and ``(zmin, zmax)`` metres.
            grid_yx: ``(Y, X)`` cells.
            classes: the class set the cells are written in (representative tags).
        """
        (x0, y0), (x1, y1) = _check_bounds(bounds)
        z0, z1 = (float(z) for z in z_range)
        if not z1 > z0:
            raise BEVMapError(f"z_range {tuple(z_range)} must be (zmin, zmax) with zmin < zmax, metres")
        p = torch.as_tensor(_numpy(points), dtype=torch.float64)
        t = torch.as_tensor(_numpy(tags).astype(np.uint8))
        if p.ndim != 2 or p.shape[-1] != 3 or t.shape != p.shape[:1]:
            raise BEVMapError(f"points must be [P, 3] with tags [P], got {tuple(p.shape)} and {tuple(t.shape)}")
        box = torch.tensor([[x0, y0, z0], [x1, y1, z1]], dtype=torch.float64)
        bev = points_bev(p, t, box, _check_grid(grid_yx), classes)
        return cls(bev.numpy(), ((x0, y0), (x1, y1)), name)

    @classmethod
    def from_views(cls, depth, semantic, K, cam_to_scene, *, model="pinhole", distortion=None,
                   bounds=DRIVING_BOX_XY, z_range=DRIVING_Z_RANGE, grid_yx=DEFAULT_GRID_YX,
                   classes: SemanticClasses = DEFAULT_CLASSES, name: str | None = None) -> BEVMap:
        """The map of captured views: their depth back-projected into the scene frame, labelled by their tags.

        Args:
            depth: ``[V, H, W]`` planar depth, metres (``inf`` = no hit).
            semantic: ``[V, H, W]`` CARLA tags.
            K: ``[V, 3, 3]`` (or ``[3, 3]``) intrinsics, pixels; cam_to_scene: ``[V, 4, 4]`` OpenCV camera -> scene.
            model, distortion: the camera model(s) and ``[V, 4]`` fisheye coefficients (`Cameras`).
            bounds, z_range, grid_yx, classes: as `from_points`.
        """
        d = torch.as_tensor(_numpy(depth), dtype=torch.float64)
        s = torch.as_tensor(_numpy(semantic))
        m = torch.as_tensor(_numpy(cam_to_scene), dtype=torch.float64)
        if d.ndim != 3 or s.shape != d.shape or m.shape != (d.shape[0], 4, 4):
            raise BEVMapError(f"from_views needs depth and semantic [V, H, W] and cam_to_scene [V, 4, 4], got "
                              f"{tuple(d.shape)}, {tuple(s.shape)} and {tuple(m.shape)}")
        V, H, W = d.shape
        dist = None if distortion is None else torch.as_tensor(_numpy(distortion), dtype=torch.float64)
        cams = Cameras(torch.as_tensor(_numpy(K), dtype=torch.float64).expand(V, 3, 3), m, W, H, model=model,
                       distortion=dist)
        hit = torch.isfinite(d)
        p_cam = cams.camera_directions() * torch.where(hit, d, torch.zeros_like(d))[..., None]   # [V, H, W, 3]
        p = torch.einsum("vij,vhwj->vhwi", m[:, :3, :3], p_cam) + m[:, None, None, :3, 3]
        return cls.from_points(p[hit], s[hit], bounds=bounds, z_range=z_range, grid_yx=grid_yx, classes=classes,
                               name=name)

    @classmethod
    def from_episode(cls, episode, frame: int, *, rig, frames: Sequence[int] | None = None,
                     bounds=DRIVING_BOX_XY, z_range=DRIVING_Z_RANGE, grid_yx=DEFAULT_GRID_YX,
                     classes: SemanticClasses = DEFAULT_CLASSES) -> BEVMap:
        """The map of a captured episode in the ego frame of `frame` (the scene frame of a window anchored there).

        Duck-typed, so the SDK needs no capture reader: `episode` is any object with ``depth`` and ``semantic``
        indexable by frame (``[N, H, W]`` each), ``cam_to_world [T, N, 4, 4]`` and ``ego_to_world [T, 4, 4]`` — a
        `sim_bridge` store's ``store.episode(i)``. `rig` is the rig the store was captured with (``store.rig``: any
        object with ``K()`` -> ``[N, 3, 3]``, and ``models()`` / ``cameras[i].distortion`` for fisheye rigs) or
        the ``[N, 3, 3]`` intrinsics. `frames` (default ``[frame]``) are the frames whose views label the map.
        """
        ego_to_world = np.asarray(episode.ego_to_world, np.float64)
        T = len(ego_to_world)
        frames = [frame] if frames is None else list(frames)
        for t in [frame, *frames]:
            if not 0 <= int(t) < T:
                raise BEVMapError(f"frame {t} is out of range: the episode has {T} frames (0..{T - 1})")
        Ks = np.asarray(rig.K() if callable(getattr(rig, "K", None)) else rig, np.float64)
        models = rig.models() if callable(getattr(rig, "models", None)) else "pinhole"
        dist = None
        if hasattr(rig, "cameras"):
            dist = np.stack([np.zeros(4) if c.distortion is None else np.asarray(c.distortion, np.float64)
                             for c in rig.cameras])
        scene_from_world = np.linalg.inv(ego_to_world[frame])
        cam_to_world = np.asarray(episode.cam_to_world, np.float64)
        depth = np.concatenate([np.asarray(episode.depth[t]) for t in frames])
        semantic = np.concatenate([np.asarray(episode.semantic[t]) for t in frames])
        c2s = np.concatenate([scene_from_world @ cam_to_world[t] for t in frames])
        n = len(frames)
        return cls.from_views(depth, semantic, np.concatenate([Ks] * n), c2s, model=models * n if isinstance(models, list)
                              else models, distortion=None if dist is None else np.concatenate([dist] * n),
                              bounds=bounds, z_range=z_range, grid_yx=grid_yx, classes=classes,
                              name=f"{getattr(episode, 'name', 'episode')} frame {frame}")

    # ------------------------------------------------------------------------------------------ views
    grid_yx = property(lambda self: (int(self.tags.shape[0]), int(self.tags.shape[1])), doc="``(Y, X)`` cells.")

    @property
    def cell_size(self) -> tuple[float, float]:
        """``(Δx, Δy)`` metres."""
        (x0, y0), (x1, y1) = self.bounds
        return (x1 - x0) / self.tags.shape[1], (y1 - y0) / self.tags.shape[0]

    observed = property(lambda self: self.tags != UNOBSERVED, doc="``[Y, X]`` bool, cells that are not `UNOBSERVED`.")

    def cell_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x [X], y [Y])`` metres: the centres of the columns and of the rows."""
        (x0, y0), _ = self.bounds
        dx, dy = self.cell_size
        return x0 + (np.arange(self.tags.shape[1]) + 0.5) * dx, y0 + (np.arange(self.tags.shape[0]) + 0.5) * dy

    def class_ids(self, classes: SemanticClasses = DEFAULT_CLASSES) -> np.ndarray:
        """``[Y, X]`` int64 class indices of `classes` (−1 where unobserved): the form a denoiser embeds."""
        return classes.from_tags(self.tags)

    def normalised(self, classes: SemanticClasses = DEFAULT_CLASSES) -> BEVMap:
        """The map with every tag replaced by its class's representative tag (e.g. 7 TrafficLight -> 8)."""
        return BEVMap(classes.normalise_tags(self.tags), self.bounds, self.name, self.source)

    def __eq__(self, other) -> bool:
        return (isinstance(other, BEVMap) and self.tags.shape == other.tags.shape
                and bool((self.tags == other.tags).all()) and np.allclose(self.bounds, other.bounds, rtol=0, atol=1e-9))

    __hash__ = None

    def __repr__(self) -> str:
        (x0, y0), (x1, y1) = self.bounds
        return (f"BEVMap({self.name or 'unnamed'}: {self.grid_yx[0]}x{self.grid_yx[1]} cells of "
                f"{self.cell_size[0]:g}x{self.cell_size[1]:g} m over x [{x0:g}, {x1:g}], y [{y0:g}, {y1:g}], "
                f"{self.observed.mean():.0%} observed)")

    # ------------------------------------------------------------------------------------------ edits
    def resized(self, grid_yx) -> BEVMap:
        """The map on ``grid_yx (Y', X')`` cells over the same bounds, nearest cell (the source cell under each new
        cell's centre; labels are never mixed)."""
        Y2, X2 = _check_grid(grid_yx)
        Y, X = self.grid_yx
        iy = np.minimum(((np.arange(Y2) + 0.5) * Y / Y2).astype(np.int64), Y - 1)
        ix = np.minimum(((np.arange(X2) + 0.5) * X / X2).astype(np.int64), X - 1)
        return BEVMap(self.tags[iy][:, ix], self.bounds, self.name, self.source)

    def region_mask(self, box) -> np.ndarray:
        """``[Y, X]`` bool: cells whose centre lies in ``box = (x0, y0, x1, y1)`` metres (``x0 ≤ x < x1``,
        ``y0 ≤ y < y1``, scene frame) — the region an edit applies to."""
        b = np.asarray(box, np.float64)
        if b.shape != (4,) or not np.isfinite(b).all() or not (b[2] > b[0] and b[3] > b[1]):
            raise BEVMapError(f"box must be (x0, y0, x1, y1) metres with x0 < x1 and y0 < y1, got {box!r}")
        xs, ys = self.cell_centres()
        return ((ys >= b[1]) & (ys < b[3]))[:, None] & ((xs >= b[0]) & (xs < b[2]))[None, :]

    def crop(self, box) -> BEVMap:
        """The cells whose centre lies in ``box = (x0, y0, x1, y1)`` metres, with bounds snapped to their edges."""
        mask = self.region_mask(box)
        if not mask.any():
            raise BEVMapError(f"box {tuple(box)} holds no cell centre of the map over {self.bounds}: pick a box "
                              "inside the map")
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        (x0, y0), _ = self.bounds
        dx, dy = self.cell_size
        bounds = ((x0 + cols[0] * dx, y0 + rows[0] * dy), (x0 + (cols[-1] + 1) * dx, y0 + (rows[-1] + 1) * dy))
        return BEVMap(self.tags[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], bounds, self.name, self.source)

    def painted(self, region, tag: int) -> BEVMap:
        """A copy with the cells of `region` (a ``[Y, X]`` bool mask or a `region_mask` box) set to `tag`."""
        mask = np.asarray(region, bool) if np.ndim(region) == 2 else self.region_mask(region)
        if mask.shape != self.tags.shape:
            raise BEVMapError(f"region mask {mask.shape} does not match the map's grid {self.tags.shape}")
        out = self.tags.copy()
        out[mask] = _check_tags(np.array([[tag]]), "tag")[0, 0]
        return BEVMap(out, self.bounds, self.name, self.source)

    # ------------------------------------------------------------------------------------------ fidelity
    def _same_grid(self, other: BEVMap) -> None:
        if not isinstance(other, BEVMap):
            raise BEVMapError(f"compare a BEVMap with a BEVMap, got {type(other).__name__} (BEVMap.from_tags makes one)")
        if other.grid_yx != self.grid_yx or not np.allclose(self.bounds, other.bounds, rtol=0, atol=1e-6):
            raise BEVMapError(f"the maps cover different cells ({self.grid_yx} over {self.bounds} vs {other.grid_yx} "
                              f"over {other.bounds}): bring one onto the other's grid (resized, crop) first")

    def class_iou(self, other: BEVMap, classes: SemanticClasses = DEFAULT_CLASSES) -> dict[str, float]:
        """``{class name: IoU}`` against `other` over the cells observed in both (`bev_class_iou`)."""
        self._same_grid(other)
        return dict(zip(classes.names, bev_class_iou(self.tags, other.tags, classes).tolist()))

    def miou(self, other: BEVMap, classes: SemanticClasses = DEFAULT_CLASSES,
             names: Sequence[str] = LAYOUT_CLASSES) -> float:
        """Mean of `class_iou` over `names` (classes in neither map are skipped; ``nan`` if all are)."""
        unknown = [n for n in names if n not in classes.names]
        if unknown:
            raise BEVMapError(f"classes {unknown} are not in the class set {classes.names}")
        iou = self.class_iou(other, classes)
        vals = [iou[n] for n in names if not np.isnan(iou[n])]
        return float(np.mean(vals)) if vals else float("nan")

    # ------------------------------------------------------------------------------------------ files
    def _sidecar(self) -> dict:
        return {"format": BEV_FORMAT, "format_version": BEV_FORMAT_VERSION, "bounds": [list(b) for b in self.bounds],
                "grid_yx": list(self.grid_yx), "png_layout": _PNG_LAYOUT, "unobserved": UNOBSERVED,
                "unobserved_rgb": CARLA_PALETTE[UNOBSERVED].tolist(), "name": self.name, "source": self.source}

    def save(self, path) -> Path:
        """Write ``path`` (``.png``: palette colours, x right / y up; ``.npy``: the ``[Y, X]`` array) and its
        sidecar ``<stem>.json`` (module docstring). Returns `path`."""
        import imageio.v3 as iio  # start-up time: imageio (Pillow) only when a map is written

        path = Path(path)
        if path.suffix.lower() not in (".png", ".npy"):
            raise BEVMapError(f"{path}: a BEV map is saved as .png or .npy (with a .json sidecar)")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() == ".png":
            iio.imwrite(path, CARLA_PALETTE[self.tags[::-1]])
        else:
            np.save(path, np.ascontiguousarray(self.tags))
        path.with_suffix(".json").write_text(json.dumps(self._sidecar(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path, bounds=None) -> BEVMap:
        """Read a map written by `save` or `sim_bridge bev` (or painted in the palette: colours not in
        `CARLA_PALETTE` are refused, listed with where they are). The bounds come from the sidecar
        ``<stem>.json``; a file without one needs `bounds`."""
        import imageio.v3 as iio  # start-up time: imageio (Pillow) only when a map is read

        path = Path(path)
        if not path.is_file():
            raise BEVMapError(f"{path} not found: write a map with BEVMap.save or `sim_bridge bev --out {path}`")
        side = path.with_suffix(".json")
        meta: dict = {}
        if side.is_file():
            try:
                meta = json.loads(side.read_text())
            except json.JSONDecodeError as e:
                raise BEVMapError(f"{side} is not JSON ({e}): rewrite it with BEVMap.save") from e
            if meta.get("format") != BEV_FORMAT or int(meta.get("format_version", 0)) > BEV_FORMAT_VERSION:
                raise BEVMapError(f"{side} is not a {BEV_FORMAT} sidecar of version <= {BEV_FORMAT_VERSION} (format "
                                  f"{meta.get('format')!r}, version {meta.get('format_version')!r})")
            if bounds is not None and not np.allclose(_check_bounds(bounds), _check_bounds(meta["bounds"])):
                raise BEVMapError(f"bounds {bounds} disagree with {side} ({meta['bounds']}): drop the argument or "
                                  "edit the sidecar")
            bounds = meta["bounds"]
        elif bounds is None:
            raise BEVMapError(f"{path} has no sidecar {side.name} with its bounds: pass bounds=((xmin, ymin), (xmax, "
                              f"ymax)) metres, e.g. DRIVING_BOX_XY = {DRIVING_BOX_XY}")
        if path.suffix.lower() == ".npy":
            tags = _check_tags(np.load(path, allow_pickle=False), str(path))
        else:
            tags = cls._png_tags(iio.imread(path, mode="RGB"), path)
        if "grid_yx" in meta and list(tags.shape) != list(meta["grid_yx"]):
            raise BEVMapError(f"{path} has {tags.shape[0]}x{tags.shape[1]} cells but {side.name} says "
                              f"{meta['grid_yx']}: the two files do not belong together")
        return cls(tags, bounds, meta.get("name"), meta.get("source"))

    @staticmethod
    def _png_tags(rgb: np.ndarray, path: Path) -> np.ndarray:
        """``[Y, X]`` tags of a palette picture ``rgb [Y, X, 3]`` (x right, y up), or `BEVMapError` listing where
        its colours are not in the palette."""
        packed = lambda c: (c[..., 0].astype(np.int64) << 16) | (c[..., 1].astype(np.int64) << 8) | c[..., 2]  # noqa: E731
        keys = packed(CARLA_PALETTE[list(KNOWN_TAGS)])
        order = np.argsort(keys)
        px = packed(rgb)
        pos = np.clip(np.searchsorted(keys[order], px), 0, len(keys) - 1)
        ok = keys[order][pos] == px
        if not ok.all():
            colours, first, counts = np.unique(px[~ok], return_index=True, return_counts=True)
            where = np.argwhere(~ok)
            listed = "; ".join(f"rgb({c >> 16}, {(c >> 8) & 255}, {c & 255}) x{n} first at row {where[i][0]}, column "
                               f"{where[i][1]}" for c, i, n in zip(colours[:6], first[:6], counts[:6]))
            raise BEVMapError(f"{path}: {int((~ok).sum())} pixel(s) have colours outside the CARLA palette: {listed}"
                              f"{'; ...' if len(colours) > 6 else ''}; paint cells in CARLA_PALETTE colours "
                              "(nfldm_sdk.labels.classes) and white for unobserved, with no antialiasing")
        return np.asarray(KNOWN_TAGS, np.uint8)[order][pos][::-1]

    # ------------------------------------------------------------------------------------------ picture
    def show(self, path=None, *, scale: int | None = None) -> np.ndarray:
        """A picture ``[H, W, 3]`` uint8: the map upscaled (`scale` pixels per cell; default ≈ 512 px across), x
        right and y up like the PNG, the ego (scene origin) as a black dot with a forward tick, and a legend
        strip (colour, tag, CARLA name) of the tags present, most frequent first. Written as PNG to `path` if given."""
        Y, X = self.grid_yx
        s = int(scale) if scale is not None else max(1, 512 // max(Y, X))
        img = np.kron(CARLA_PALETTE[self.tags[::-1]], np.ones((s, s, 1), np.uint8))
        (x0, y0), _ = self.bounds
        dx, dy = self.cell_size
        cx, cy = -x0 / dx * s, (Y + y0 / dy) * s                     # the origin in picture pixels
        if 0 <= cx < img.shape[1] and 0 <= cy < img.shape[0]:
            r = max(2, s // 2)
            img[max(0, int(cy) - r):int(cy) + r, max(0, int(cx) - r):int(cx) + r] = 0
            img[max(0, int(cy) - 1):int(cy) + 1, int(cx):int(cx) + 3 * r] = 0
        tags, counts = np.unique(self.tags, return_counts=True)
        fs = 2
        rows = []
        for t in tags[np.argsort(-counts, kind="stable")]:
            label = "unobserved" if t == UNOBSERVED else CARLA_TAG_NAMES[int(t)].lower()
            text = _text_image(f"{int(t)} {label}", fs)
            row = np.full((7 * fs, 7 * fs + 4 + text.shape[1], 3), 235, np.uint8)
            row[fs:6 * fs, fs:6 * fs] = 0
            row[fs + 1:6 * fs - 1, fs + 1:6 * fs - 1] = CARLA_PALETTE[t]
            row[fs:6 * fs, 7 * fs + 2:7 * fs + 2 + text.shape[1]][text] = 0
            rows.append(row)
        width = max(r.shape[1] for r in rows) + 8
        legend = np.full((max(img.shape[0], 7 * fs * len(rows) + 8), width, 3), 235, np.uint8)
        for i, r in enumerate(rows):
            legend[4 + 7 * fs * i:4 + 7 * fs * (i + 1), 4:4 + r.shape[1]] = r
        canvas = np.full((legend.shape[0], img.shape[1] + width, 3), 235, np.uint8)
        canvas[:img.shape[0], :img.shape[1]] = img
        canvas[:, img.shape[1]:] = legend
        if path is not None:
            import imageio.v3 as iio  # start-up time: imageio (Pillow) only when a picture is written

            Path(path).parent.mkdir(parents=True, exist_ok=True)
            iio.imwrite(Path(path), canvas)
        return canvas
