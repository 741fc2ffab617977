"""The voxel neural field: a density grid and a feature grid over an axis-aligned box.

Grid layout and conventions:

* Arrays are indexed ``[z, y, x]`` (``density [Z,Y,X]``, ``features [C,Z,Y,X]``), optionally with a leading
  scene batch ``B`` (``[B,Z,Y,X]``, ``[B,C,Z,Y,X]``).
* ``bounds [2,3]`` (or ``[B,2,3]``) holds the world ``(x, y, z)`` minimum and maximum corners of the box, metres,
  in the scene frame (right-handed, z up). The box is split into equal voxels; voxel ``(k, j, i)`` covers
  ``min + ([i, j, k] + [0, 1)) * voxel_size`` and its value sits at the voxel centre ``min + ([i, j, k] + 0.5) *
  voxel_size``. This is ``torch.nn.functional.grid_sample``'s ``align_corners=False`` convention: the normalised
  coordinate −1 is the box's min face and +1 its max face.
* ``density`` is the extinction coefficient σ ≥ 0 per metre of ray; ``features`` are unconstrained.

On disk a field is ONE ``.safetensors`` file: tensors ``density``, ``features``, ``bounds`` plus a JSON
description in the safetensors header metadata (key ``nfldm``: format name and version, grid shape, channels,
batch size, conventions). No pickle.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = ["VoxelField", "FIELD_CONVENTIONS", "FIELD_FORMAT", "FIELD_FORMAT_VERSION"]

FIELD_FORMAT = "nfldm.voxel_field"
FIELD_FORMAT_VERSION = 1
#: The layout conventions in one line, written into every saved field's metadata (``conventions``) and into exports
#: of fields (`nfldm_sdk.viz.export`), so a file names its own axes, units and voxel-centre rule.
FIELD_CONVENTIONS = ("arrays [B?,C?,Z,Y,X]; bounds [B?,2,3] = world (x,y,z) min and max, metres, right-handed z-up; "
                     "voxel centres at min + (i+0.5)*voxel_size; density = sigma >= 0 per metre of ray")


@dataclass(eq=False)  # eq=False: tensors have no single truth value
class VoxelField:
    """Density and feature grids over an axis-aligned box (see the module docstring for the layout).

    Attributes:
        density: ``[Z,Y,X]`` or batched ``[B,Z,Y,X]``; σ ≥ 0 per metre.
        features: ``[C,Z,Y,X]`` or batched ``[B,C,Z,Y,X]``.
        bounds: ``[2,3]`` or ``[B,2,3]``: world (x, y, z) min and max of the box, metres. A ``[2,3]`` box given
            with batched grids is shared by all scenes (it is expanded to ``[B,2,3]``).

    Example::

        field = VoxelField.empty((32, 128, 128), 32, torch.tensor([[-25.6, -25.6, -2.0], [25.6, 25.6, 10.8]]))
        field.save("scene.safetensors"); same = VoxelField.load("scene.safetensors")
    """

    density: torch.Tensor
    features: torch.Tensor
    bounds: torch.Tensor

    def __post_init__(self):
        d, f = self.density, self.features
        if d.dim() not in (3, 4):
            raise ValueError(f"density must be [Z,Y,X] or [B,Z,Y,X], got shape {tuple(d.shape)}")
        if f.dim() != d.dim() + 1:
            raise ValueError(f"features must be [C,Z,Y,X] (or [B,C,Z,Y,X] with batched density), got {tuple(f.shape)} "
                             f"for density {tuple(d.shape)}")
        batched = d.dim() == 4
        if batched and f.shape[0] != d.shape[0]:
            raise ValueError(f"batch sizes differ: density has {d.shape[0]}, features {f.shape[0]}")
        if f.shape[-3:] != d.shape[-3:]:
            raise ValueError(f"density grid {tuple(d.shape[-3:])} and feature grid {tuple(f.shape[-3:])} must match")
        if f.dtype != d.dtype or f.device != d.device:
            raise ValueError(f"density ({d.dtype}, {d.device}) and features ({f.dtype}, {f.device}) need one dtype and device")
        b = torch.as_tensor(self.bounds, device=d.device)
        if not b.is_floating_point():
            b = b.to(d.dtype)
        if b.shape[-2:] != (2, 3) or b.dim() not in (2, 3):
            raise ValueError(f"bounds must be [2,3] (or [B,2,3]) = (x,y,z) min and max, got {tuple(b.shape)}")
        if batched and b.dim() == 2:
            b = b.expand(d.shape[0], 2, 3)
        if not batched and b.dim() == 3:
            raise ValueError(f"bounds {tuple(b.shape)} are batched but the grids are not: pass bounds [2,3]")
        if batched and b.shape[0] != d.shape[0]:
            raise ValueError(f"bounds batch {b.shape[0]} differs from the grid batch {d.shape[0]}")
        if not bool((b[..., 1, :] > b[..., 0, :]).all()):
            raise ValueError(f"bounds max must exceed min on every axis, got {b.tolist()}")
        self.bounds = b

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, grid_shape: tuple[int, int, int], num_channels: int, bounds: torch.Tensor, *,
              batch_size: int | None = None, dtype: torch.dtype = torch.float32,
              device: torch.device | str | None = None) -> "VoxelField":
        """An all-zero field (density 0 renders as empty space) of ``grid_shape = (Z, Y, X)`` voxels and
        ``num_channels`` features, batched over ``batch_size`` scenes when given."""
        lead = () if batch_size is None else (int(batch_size),)
        Z, Y, X = (int(s) for s in grid_shape)
        return cls(torch.zeros(*lead, Z, Y, X, dtype=dtype, device=device),
                   torch.zeros(*lead, int(num_channels), Z, Y, X, dtype=dtype, device=device),
                   torch.as_tensor(bounds, dtype=dtype, device=device))

    @classmethod
    def stack(cls, fields: list["VoxelField"]) -> "VoxelField":
        """Batch unbatched fields of one grid shape and channel count into ``[B, ...]``."""
        if not fields or any(f.is_batched for f in fields):
            raise ValueError("VoxelField.stack needs a non-empty list of unbatched fields")
        return cls(torch.stack([f.density for f in fields]), torch.stack([f.features for f in fields]),
                   torch.stack([f.bounds for f in fields]))

    def where(self, pick: torch.Tensor, other: "VoxelField") -> "VoxelField":
        """Per scene of a batch, `other`'s field where ``pick`` (``[B]`` bool) is True and this one's elsewhere
        (same grid, channels and batch size; the bounds are taken along with the grids)."""
        if not (self.is_batched and other.is_batched) or pick.shape != (self.batch_size,):
            raise ValueError(f"where needs two batched fields and pick [B]; got pick {tuple(pick.shape)} for "
                             f"batch sizes {self.batch_size} and {other.batch_size}")
        p = pick.to(self.density.device)
        return VoxelField(density=torch.where(p[:, None, None, None], other.density, self.density),
                          features=torch.where(p[:, None, None, None, None], other.features, self.features),
                          bounds=torch.where(p[:, None, None], other.bounds, self.bounds))

    # ------------------------------------------------------------------ properties
    @property
    def is_batched(self) -> bool:
        """True for a batch of scenes (``density [B,Z,Y,X]``), False for one scene (``[Z,Y,X]``)."""
        return self.density.dim() == 4

    @property
    def batch_size(self) -> int | None:
        """Number of scenes ``B`` of a batched field, ``None`` for an unbatched one."""
        return self.density.shape[0] if self.is_batched else None

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)`` voxel counts."""
        return tuple(self.density.shape[-3:])

    @property
    def num_channels(self) -> int:
        """``C``, the number of feature channels."""
        return self.features.shape[-4]

    @property
    def voxel_size(self) -> torch.Tensor:
        """``[3]`` (or ``[B,3]``) voxel edge lengths along world (x, y, z), metres."""
        Z, Y, X = self.grid_shape
        counts = torch.tensor([X, Y, Z], dtype=self.bounds.dtype, device=self.bounds.device)
        return (self.bounds[..., 1, :] - self.bounds[..., 0, :]) / counts

    @property
    def device(self) -> torch.device:
        """The device of the density grid (`to` moves density, features and bounds together)."""
        return self.density.device

    @property
    def dtype(self) -> torch.dtype:
        """The float dtype of the density grid (the PyTorch renderers compute in it)."""
        return self.density.dtype

    def voxel_centers(self) -> torch.Tensor:
        """World coordinates of the voxel centres, ``[Z,Y,X,3]`` (or ``[B,Z,Y,X,3]``) as (x, y, z), metres."""
        Z, Y, X = self.grid_shape
        k, j, i = torch.meshgrid(*(torch.arange(n, device=self.device, dtype=self.bounds.dtype) + 0.5 for n in (Z, Y, X)),
                                 indexing="ij")
        ijk = torch.stack([i, j, k], dim=-1)                                  # [Z,Y,X,3] as (x,y,z) index
        lo, vs = self.bounds[..., 0, :], self.voxel_size                     # [B?,3]
        return lo[..., None, None, None, :] + ijk * vs[..., None, None, None, :]

    def packed(self) -> torch.Tensor:
        """Density and features in one grid, ``[1+C,Z,Y,X]`` (or ``[B,1+C,Z,Y,X]``), density first — the layout
        the renderer samples in one pass."""
        return torch.cat([self.density.unsqueeze(-4), self.features], dim=-4)

    # ------------------------------------------------------------------ tensor plumbing
    def __getitem__(self, b) -> "VoxelField":
        """Scene ``b`` (an int gives an unbatched field; a slice or index tensor keeps the batch)."""
        if not self.is_batched:
            raise IndexError("an unbatched VoxelField cannot be indexed; build a batch with VoxelField.stack")
        return VoxelField(self.density[b], self.features[b], self.bounds[b])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "VoxelField":
        """The field with density, features and bounds moved to ``device`` and/or cast to ``dtype``."""
        return VoxelField(self.density.to(device=device, dtype=dtype), self.features.to(device=device, dtype=dtype),
                          self.bounds.to(device=device, dtype=dtype))

    def detach(self) -> "VoxelField":
        """The field with density, features and bounds detached from the autograd graph (shared storage)."""
        return VoxelField(self.density.detach(), self.features.detach(), self.bounds.detach())

    def requires_grad_(self, requires_grad: bool = True) -> "VoxelField":
        """Make density and features leaf tensors that collect gradients (in place; returns self)."""
        self.density.requires_grad_(requires_grad)
        self.features.requires_grad_(requires_grad)
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the field to one ``.safetensors`` file (the suffix is added if missing) and return its path.

        Tensors ``density``, ``features``, ``bounds`` keep their dtype; the header metadata key ``nfldm`` holds
        JSON ``{format, format_version, grid_shape, num_channels, batch_size, conventions}``.
        """
        p = Path(path)
        if p.suffix != ".safetensors":
            p = p.with_name(p.name + ".safetensors")
        p.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": FIELD_FORMAT, "format_version": FIELD_FORMAT_VERSION, "grid_shape": list(self.grid_shape),
                "num_channels": self.num_channels, "batch_size": self.batch_size, "conventions": FIELD_CONVENTIONS}
        tensors = {k: t.detach().contiguous().cpu() for k, t in
                   (("density", self.density), ("features", self.features), ("bounds", self.bounds))}
        save_file(tensors, str(p), metadata={"nfldm": json.dumps(meta)})
        return p

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str | None = None) -> "VoxelField":
        """Read a field written by ``save``; checks the format tag, version and every tensor's shape."""
        p = Path(path)
        if not p.is_file() and p.with_name(p.name + ".safetensors").is_file():
            p = p.with_name(p.name + ".safetensors")
        if not p.is_file():
            raise FileNotFoundError(f"voxel field file {p} not found (VoxelField.save writes one .safetensors file)")
        with safe_open(str(p), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get("nfldm")
            if raw is None:
                raise ValueError(f"{p} has no 'nfldm' metadata: it was not written by VoxelField.save")
            meta = json.loads(raw)
            if meta.get("format") != FIELD_FORMAT:
                raise ValueError(f"{p} holds format {meta.get('format')!r}, expected {FIELD_FORMAT!r}")
            if int(meta.get("format_version", -1)) > FIELD_FORMAT_VERSION:
                raise ValueError(f"{p} is voxel-field format {meta['format_version']}, this nfldm_sdk reads up to "
                                 f"{FIELD_FORMAT_VERSION}: upgrade nfldm")
            missing = {"density", "features", "bounds"} - set(f.keys())
            if missing:
                raise ValueError(f"{p} lacks tensors {sorted(missing)}")
            t = {k: f.get_tensor(k) for k in ("density", "features", "bounds")}
        field = cls(t["density"], t["features"], t["bounds"])
        expect = (tuple(meta["grid_shape"]), int(meta["num_channels"]), meta["batch_size"])
        if (field.grid_shape, field.num_channels, field.batch_size) != expect:
            raise ValueError(f"{p}: tensors give grid {field.grid_shape}, C={field.num_channels}, B={field.batch_size} "
                             f"but the metadata says {expect}; the file is corrupt")
        return field.to(device=device) if device is not None else field

    def __repr__(self) -> str:
        b = f"B={self.batch_size}, " if self.is_batched else ""
        return (f"VoxelField({b}grid(Z,Y,X)={self.grid_shape}, C={self.num_channels}, "
                f"bounds={[[round(v, 3) for v in r] for r in self.bounds.reshape(-1, 3)[:2].tolist()]}, "
                f"dtype={self.dtype}, device={self.device})")
