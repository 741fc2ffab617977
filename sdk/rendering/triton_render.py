"""Fused Triton volume rendering: `render_field(..., implementation="triton")`, forward and backward.

This module is the host side — the kernels' grid layout and its cache, the launches, the autograd function and
`render_field_triton`; the `@triton.jit` kernels are `nfldm_sdk.rendering.triton_kernels`. Triton is an optional
dependency: `nfldm_sdk.rendering.api` imports this module only when the triton path is asked for or considered.

The model is `nfldm_sdk.rendering.api`'s (its module docstring): midpoint (or stratified) samples over the box-clipped
segment, ``grid_sample(align_corners=False, padding_mode="border")`` trilinear interpolation, ``α_i = 1 − e^{−σ_i δ}``,
``w_i = T_i α_i``, ``features = Σ w_i f_i``, ``depth_num = Σ w_i z_i``, ``alpha = 1 − T_final``. The PyTorch
reference (`render_field_reference`) is the oracle of every test here.

Kernel design (one launch per render, one per backward; nothing per sample is ever written to memory):

* **Programs.** One program marches ``BLOCK_R`` rays (32: one warp on a GPU) of one field, all at once, each ray
  at its own sample index. A loop step interpolates density at every active ray's current sample (8 corner
  loads), composites, and reads the ``C`` feature channels (8 corner rows of the channels-last grid) only where
  the sample's weight is nonzero. Accumulation is fp32. The loop ends when every ray of the block is done.
* **Grid storage.** Features channels-last ``[B, Z, Y, X, C]`` in ``grid_dtype`` (default float16: one 64-byte
  row per voxel for C = 32); density ``[B, Z, Y, X]`` in float32 (one channel of 1+C, but its rounding enters
  the transmittance of every later sample: float16's 2^-11 relative rounding of σ would change T = e^{−τ} by up to
  ~5e-4·τ relative, 2e-3 behind an optical depth of 4).
  Float16 storage needs ``|features| < 65504``; use ``grid_dtype=torch.bfloat16`` or ``torch.float32`` otherwise.
* **Early ray termination.** A ray stops after the sample that takes its transmittance below ``early_stop``
  (default ``EARLY_STOP = 1e-4``). What it drops is bounded by that transmittance: ``|Δfeatures| ≤ T·max|f|``,
  ``|Δalpha| ≤ T`` and ``|Δdepth_num| ≤ T·z_far``, so ``1e-4`` keeps features and alpha within 1e-4·max|f|
  absolute, and the normalised depth of a pixel with ``alpha ≈ 1`` within ``1e-4·z_far/depth`` relative (2e-3 up
  to ``z_far = 20·depth``). ``alpha`` is the truncated ``Σ w_i`` (= 1 − T at the stop; summed rather than
  subtracted so that faint rays keep their relative precision). ``early_stop=0`` marches every sample.
* **Empty-space skipping (exact).** A coarse occupancy grid (`occupancy_grid`, cells of ``cell = 4`` voxels per
  axis) marks a cell occupied when ANY voxel that a trilinear sample inside it can read is nonzero (a max-pool of
  ``σ ≠ 0`` over the cell's voxels plus one more per axis: the upper corner of its last voxel). A sample in an
  unoccupied cell has all 8 corners at σ = 0, so σ = 0, w = 0 and T unchanged — bit for bit what marching it
  would give. Skipping jumps from the current sample to the first sample that may lie outside the cell (the
  ray's exit from the cell's box, pulled in by ``1e-3`` voxel against rounding); sample positions stay those of
  the model (whole samples are jumped, never re-spaced), and every sample visited after a jump is tested again.
  The grid is cached per density tensor and rebuilt when the density changes (`_GridCache`).
* **Backward** re-marches each ray with the saved per-ray outputs (no per-sample tensors). With
  ``c_i = g_F·f_i + g_D z_i`` and ``P_i = Σ_{j≤i} w_j c_j``, ``L = g_F·F + g_D·D`` (``F``, ``D`` the saved
  outputs): ``∂L/∂τ_i = T_{i+1} c_i − (L − P_i) + g_A T_final`` (``τ_i = σ_i δ``), scattered as ``δ ∂L/∂τ_i`` to
  the 8 density corners, and ``∂L/∂f_i = w_i g_F`` to the 8 feature corners (fp32 atomic adds). The march stops
  where the forward stopped (same arithmetic, same transmittance), so the gradient is that of the truncated
  forward. (In the kernel depth enters with ``z_i − z̄``, ``z̄ = D / A``, and ``g_D z̄`` joins the alpha term: the
  same gradient with far less cancellation in ``L − P_i`` for faint pixels, whose ``g_D ∝ 1/alpha`` is large.) Empty samples DO carry a density gradient (``−δ(L − P_i) + …`` ≠ 0 at σ = 0), so the backward skips
  nothing when density needs a gradient; with density frozen only ``w_i > 0`` samples matter and it skips
  exactly as the forward does.
* **No gradient to cameras or bounds** (the ray geometry is an input): `render_field_triton` refuses rays that
  require grad; use ``implementation="dense"`` there.

Triton's interpreter: ``TRITON_INTERPRET=1`` runs these kernels on CPU tensors (slowly: for tests). Triton reads
the variable when a kernel is decorated, i.e. when this module is first imported, so set it before (the test
suite's conftest sets it on machines without CUDA). Whether this process got compiled or interpreted kernels:
`INTERPRETED`.

Example::

    out = render_field(field.to("cuda"), cams, n_samples=128, implementation="triton")   # as render_field
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import triton

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.rendering.rays import HIT_ALPHA, RayBatch, RenderOutput, finish_render, prepare_rays
from nfldm_sdk.rendering.triton_kernels import backward_kernel, forward_kernel

__all__ = ["BLOCK_RAYS", "EARLY_STOP", "INTERPRETED", "INTERPRETER_BLOCK_RAYS", "KernelGrid",
           "KernelOptions", "KernelRays", "OCCUPANCY_CELL", "backward_launch", "check_device", "clear_cache",
           "forward_launch", "kernel_grid", "occupancy_grid", "render_batch_triton", "render_field_triton"]

EARLY_STOP = 1e-4
"""Default transmittance below which a ray stops (error bound: module docstring)."""
OCCUPANCY_CELL = 4
"""Default occupancy-grid cell size, voxels per axis."""
BLOCK_RAYS = 32
"""Rays per program on a GPU (one warp: one ray per thread)."""
INTERPRETER_BLOCK_RAYS = 256
"""Rays per program under the interpreter, whose cost is per operation: wide blocks run ~5× faster there."""

INTERPRETED = not isinstance(forward_kernel, triton.runtime.JITFunction)
"""True when this process's kernels run in Triton's CPU interpreter (``TRITON_INTERPRET=1`` at import)."""


# ====================================================================== grids: storage, occupancy, cache


def occupancy_grid(density: torch.Tensor, cell: int = OCCUPANCY_CELL) -> torch.Tensor:
    """Coarse occupancy of a density grid for exact empty-space skipping.

    Args:
        density: ``[B, Z, Y, X]`` (any float dtype).
        cell: voxels per cell along each axis.
    Returns:
        ``uint8 [B, ZC, YC, XC]`` with ``NC = max(N − 2, 0) // cell + 1`` (the cells of the trilinear lower-corner
        index ``min(floor(u), N − 2)``). Cell ``c`` is 1 when any voxel ``cK … cK + K`` (clipped to the grid) per axis
        is nonzero or NaN: every voxel a sample whose lower corner lies in the cell can read.
    """
    if cell < 1:
        raise ValueError(f"occupancy cell must be >= 1 voxel, got {cell}")
    Z, Y, X = density.shape[1:]
    nc = [max(n - 2, 0) // cell + 1 for n in (Z, Y, X)]                    # cells per axis (z, y, x)
    occ = (density != 0).to(torch.float16 if density.is_cuda else torch.float32)[:, None]   # [B, 1, Z, Y, X]
    # pad each axis to NC·K + 1 voxels so that window c = [cK, cK + K] exists for every cell (zeros: no voxel)
    pad = [p for n, c in zip((X, Y, Z), nc[::-1]) for p in (0, c * cell + 1 - n)]
    occ = F.max_pool3d(F.pad(occ, pad), kernel_size=cell + 1, stride=cell)  # [B, 1, ZC, YC, XC]
    return occ[:, 0].to(torch.uint8).contiguous()


@dataclass(eq=False)
class KernelGrid:
    """A field in the kernels' layout (see the module docstring); built by `kernel_grid`.

    Attributes:
        density: ``[B, Z, Y, X]`` float32, contiguous.
        features: ``[B, Z, Y, X, C]`` in the storage dtype, contiguous (channels-last).
        occupancy: ``[B, ZC, YC, XC]`` uint8 (`occupancy_grid`), or None without skipping.
        cell: occupancy cell size, voxels per axis.
    """

    density: torch.Tensor
    features: torch.Tensor
    occupancy: torch.Tensor | None
    cell: int


class _GridCache:
    """Derived grids (float32 density, channels-last features, occupancy) cached per SOURCE tensor.

    An entry is keyed on the source's data pointer, shape, strides, dtype and ``_version`` (bumped by every
    in-place change: an optimizer step, ``copy_``, ``+=``), and lives only as long as the source's root tensor
    (held by weak reference, so the cache never keeps a field alive and a freed address cannot alias a live
    entry). Not cacheable, hence rebuilt every call: inference-mode tensors (no version counter). Changes made
    through ``.data`` bypass the version counter: call `clear_cache` after those."""

    def __init__(self, max_entries: int = 8):
        self.max_entries = max_entries
        self.entries: list[tuple[weakref.ref, tuple, torch.Tensor]] = []
        self.builds = 0                                   # derived tensors built as new memory (tests count them)

    @staticmethod
    def _key(t: torch.Tensor, tag: tuple) -> tuple | None:
        if t.is_inference():
            return None
        return (tag, t.device, t.dtype, t.data_ptr(), tuple(t.shape), t.stride(), t._version)

    def get(self, source: torch.Tensor, tag: tuple, build) -> torch.Tensor:
        """The derived tensor ``build(source)`` for ``tag``, from the cache when ``source`` is unchanged."""
        key = self._key(source, tag)
        root = source._base if source._base is not None else source
        self.entries = [e for e in self.entries if e[0]() is not None]       # drop entries of freed tensors
        if key is not None:
            for ref, k, value in self.entries:
                if k == key and ref() is root:
                    return value
        value = build(source)
        if value.untyped_storage().data_ptr() == source.untyped_storage().data_ptr():
            return value          # a view of the source (already in the kernels' layout): free, and never cached
        self.builds += 1          # (a cached view would hold its source alive: see the weak reference above)
        if key is not None:
            self.entries = [e for e in self.entries if not (e[0]() is root and e[1][0] == tag)][-(self.max_entries - 1):]
            self.entries.append((weakref.ref(root), key, value))
        return value

    def clear(self) -> None:
        self.entries = []


_CACHE = _GridCache()


def clear_cache() -> None:
    """Forget every cached kernel-layout grid (needed only after changing a field through ``.data``)."""
    _CACHE.clear()


def kernel_grid(density: torch.Tensor, features: torch.Tensor, grid_dtype: torch.dtype, skip: bool,
                cell: int = OCCUPANCY_CELL) -> KernelGrid:
    """``density [B,1,Z,Y,X]``, ``features [B,C,Z,Y,X]`` -> the kernels' `KernelGrid`: features stored in
    ``grid_dtype``, an occupancy grid of ``cell``-voxel cells when ``skip`` (cached per source tensor, see
    `_GridCache`)."""
    B, _, Z, Y, X = features.shape
    dens = _CACHE.get(density, ("density",), lambda d: d.detach().reshape(B, Z, Y, X).to(torch.float32).contiguous())
    feats = _CACHE.get(features, ("features", grid_dtype),
                       lambda f: f.detach().permute(0, 2, 3, 4, 1).to(grid_dtype).contiguous())
    occ = _CACHE.get(density, ("occupancy", cell), lambda d: occupancy_grid(d.detach().reshape(B, Z, Y, X), cell)) \
        if skip else None
    return KernelGrid(dens, feats, occ, cell)


# ====================================================================== launches


@dataclass(eq=False)
class KernelRays:
    """Per-ray inputs of the kernels, float32 contiguous, detached (the fields of `RayBatch` of the same names).

    Attributes:
        o_n, d_n: ``[B, R, 3]`` origins and directions in normalised grid coordinates.
        t0, delta, z_per_t: ``[B, R]`` segment start and sample spacing (metres of ray), planar depth per metre.
        jitter: ``[B, R, S]`` stratified offsets in [0, 1), or None (midpoints).
    """

    o_n: torch.Tensor
    d_n: torch.Tensor
    t0: torch.Tensor
    delta: torch.Tensor
    z_per_t: torch.Tensor
    jitter: torch.Tensor | None

    @classmethod
    def from_batch(cls, b: RayBatch) -> "KernelRays":
        """The rays of a prepared `RayBatch` as the kernels read them."""
        def f32(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(torch.float32).contiguous()

        return cls(f32(b.o_n), f32(b.d_n), f32(b.t0), f32(b.delta), f32(b.z_per_t),
                   None if b.jitter is None else f32(b.jitter))


@dataclass(frozen=True)
class KernelOptions:
    """Per-call options of both kernels (`render_field_triton`'s arguments of the same meaning).

    Attributes:
        n_samples: samples per ray.
        early_stop: transmittance below which a ray stops (0: never).
        skip: empty-space skipping over the occupancy grid.
        block_rays: rays per program, a power of two.
    """

    n_samples: int
    early_stop: float
    skip: bool
    block_rays: int


def _shape_args(grid: KernelGrid, R: int, opts: KernelOptions) -> tuple:
    """The scalar arguments both kernels share (sizes, strides, clamps, occupancy extents)."""
    Z, Y, X, C = grid.features.shape[1:]
    if Z * Y * X * C >= 2**31:
        raise ValueError(f"one field of {Z}x{Y}x{X} voxels x {C} channels exceeds the kernels' int32 offsets: "
                         "render fewer channels at a time or use implementation='dense'")
    occ = grid.occupancy
    ZC, YC, XC = occ.shape[1:] if occ is not None else (1, 1, 1)
    return (R, C, Y, X, YC, XC, XC - 1, YC - 1, ZC - 1,
            1 if X > 1 else 0, X if Y > 1 else 0, X * Y if Z > 1 else 0,     # +1 step along x, y, z (0: 1 voxel)
            X / 2.0, Y / 2.0, Z / 2.0, X - 1.0, Y - 1.0, Z - 1.0,
            float(max(X - 2, 0)), float(max(Y - 2, 0)), float(max(Z - 2, 0)),
            opts.n_samples, float(opts.early_stop), Z * Y * X, Z * Y * X * C, ZC * YC * XC)


def _launch_config(grid: KernelGrid, R: int, opts: KernelOptions, has_jitter: bool) -> tuple[tuple[int, int], dict]:
    """Launch grid ``(ray blocks, B)`` and the compile-time parameters of both kernels."""
    B, C = grid.features.shape[0], grid.features.shape[-1]
    vec = min(16 // grid.features.element_size(), triton.next_power_of_2(C))   # 16-byte vectors
    meta = {"BLOCK_R": opts.block_rays, "NCH": triton.next_power_of_2(triton.cdiv(C, vec)), "VEC": vec,
            "CELL": grid.cell, "SKIP": grid.occupancy is not None, "HAS_JITTER": has_jitter}
    if not INTERPRETED:
        meta["num_warps"] = max(1, opts.block_rays // 32)                   # one ray per thread
    return (triton.cdiv(R, opts.block_rays), B), meta


def _common_args(grid: KernelGrid, rays: KernelRays) -> tuple:
    """Leading pointer arguments of both kernels (unused pointers stand in where there is no occupancy/jitter)."""
    occ = grid.occupancy if grid.occupancy is not None else grid.density
    jit = rays.jitter if rays.jitter is not None else rays.t0
    return (grid.density, grid.features, occ, rays.o_n, rays.d_n, rays.t0, rays.delta, rays.z_per_t, jit)


def forward_launch(grid: KernelGrid, rays: KernelRays, opts: KernelOptions) -> tuple:
    """``(launch grid, args, meta, outputs)`` of one `forward_kernel` launch (``forward_kernel[launch](*args,
    **meta)``); outputs ``feats [B,C,R]``, ``depth_num [B,R]``,
    ``alpha [B,R]`` (float32, every element written by the kernel)."""
    B, R = rays.t0.shape
    C = grid.features.shape[-1]
    dev = rays.t0.device
    outs = (torch.empty(B, C, R, device=dev, dtype=torch.float32), torch.empty(B, R, device=dev, dtype=torch.float32),
            torch.empty(B, R, device=dev, dtype=torch.float32))
    launch, meta = _launch_config(grid, R, opts, rays.jitter is not None)
    return launch, (*_common_args(grid, rays), *outs, *_shape_args(grid, R, opts)), meta, outs


def backward_launch(grid: KernelGrid, rays: KernelRays, opts: KernelOptions, saved: tuple, grads: tuple,
                    need_dsigma: bool, need_dfeat: bool) -> tuple:
    """``(launch grid, args, meta, (d density [B,Z,Y,X] | None, d features [B,Z,Y,X,C] | None))`` of one
    `backward_kernel` launch (fp32 gradient buffers, zero-filled, accumulated atomically).

    Args:
        grid, rays, opts: as for `forward_launch`.
        saved: the forward's outputs ``(feats [B,C,R], depth_num [B,R], alpha [B,R])``.
        grads: their upstream gradients, same shapes, float32 contiguous.
        need_dsigma, need_dfeat: which gradients to compute.
    """
    R = rays.t0.shape[1]
    dev = rays.t0.device
    dd = torch.zeros(grid.density.shape, device=dev, dtype=torch.float32) if need_dsigma else None
    df = torch.zeros(grid.features.shape, device=dev, dtype=torch.float32) if need_dfeat else None
    # Density frozen: only samples with w > 0 matter, and skipping is exact for them. Otherwise every sample
    # carries a density gradient: no skipping.
    if grid.occupancy is not None and need_dsigma:
        grid = KernelGrid(grid.density, grid.features, None, grid.cell)
    launch, meta = _launch_config(grid, R, opts, rays.jitter is not None)
    meta.update(NEED_DSIGMA=need_dsigma, NEED_DFEAT=need_dfeat)
    bufs = (grid.density if dd is None else dd, grid.density if df is None else df)   # stand-ins when unused
    args = (*_common_args(grid, rays), *saved, *grads, *bufs, *_shape_args(grid, R, opts))
    return launch, args, meta, (dd, df)


class _TritonRender(torch.autograd.Function):
    """``density [B,1,Z,Y,X]``, ``features [B,C,Z,Y,X]`` -> ``feats [B,C,R]``, ``depth_num [B,R]``, ``alpha [B,R]``
    (float32), differentiable w.r.t. density and features."""

    @staticmethod
    def forward(ctx, density, features, rays: KernelRays, opts: KernelOptions, grid_dtype: torch.dtype, cell: int):
        grid = kernel_grid(density, features, grid_dtype, opts.skip, cell)
        launch, args, meta, (feats, depth_num, alpha) = forward_launch(grid, rays, opts)
        forward_kernel[launch](*args, **meta)
        # The inputs are saved only for autograd's version check (an in-place change of the field before
        # backward is an error, as for any saved tensor); the kernels read the kernel-layout grid.
        ctx.grid, ctx.rays, ctx.opts = grid, rays, opts
        ctx.shapes = (density.shape, density.dtype, features.shape, features.dtype)
        ctx.save_for_backward(density, features, feats, depth_num, alpha)
        return feats, depth_num, alpha

    @staticmethod
    def backward(ctx, g_feats, g_depth_num, g_alpha):
        need_dsigma, need_dfeat = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        _, _, feats, depth_num, alpha = ctx.saved_tensors                      # (version-checked inputs first)
        grads = tuple(torch.zeros_like(ref) if g is None else g.to(torch.float32).contiguous()
                      for g, ref in ((g_feats, feats), (g_depth_num, depth_num), (g_alpha, alpha)))
        launch, args, meta, (dd, df) = backward_launch(ctx.grid, ctx.rays, ctx.opts, (feats, depth_num, alpha), grads,
                                                       need_dsigma, need_dfeat)
        backward_kernel[launch](*args, **meta)
        d_shape, d_dtype, _, f_dtype = ctx.shapes
        d_density = dd.reshape(d_shape).to(d_dtype) if dd is not None else None
        d_features = df.permute(0, 4, 1, 2, 3).to(f_dtype) if df is not None else None        # -> [B, C, Z, Y, X]
        return d_density, d_features, None, None, None, None


# ====================================================================== entry points


def check_device(device: torch.device) -> None:
    """Raise a ValueError naming the fix when the kernels cannot run on ``device`` in this process."""
    if device.type == "cuda" or (device.type == "cpu" and INTERPRETED):
        return
    if device.type == "cpu":
        raise ValueError("implementation='triton' on CPU tensors needs Triton's interpreter: set TRITON_INTERPRET=1 "
                         "before nfldm_sdk.rendering.triton_render is first imported (slow: for tests), or render on CUDA, or "
                         "use implementation='auto'")
    raise ValueError(f"implementation='triton' runs on CUDA tensors, got device {device}: use implementation='auto'")


def render_batch_triton(b: RayBatch, n_samples: int, *, grid_dtype: torch.dtype = torch.float16,
                        skip_empty: bool = True, early_stop: float = EARLY_STOP, cell: int = OCCUPANCY_CELL,
                        block_rays: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernels on a prepared `RayBatch` -> ``feats [B,C,R]``, ``depth_num [B,R]``, ``alpha [B,R]`` (float32;
    differentiable w.r.t. ``b.density`` and ``b.features``). Options: `render_field_triton`."""
    check_device(b.o_n.device)
    if not 0.0 <= early_stop < 1.0:
        raise ValueError(f"early_stop is a transmittance threshold in [0, 1), got {early_stop}")
    if block_rays is None:
        block_rays = INTERPRETER_BLOCK_RAYS if INTERPRETED else BLOCK_RAYS
    if block_rays < 1 or block_rays & (block_rays - 1):
        raise ValueError(f"block_rays must be a power of two, got {block_rays}")
    if grid_dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"grid_dtype must be torch.float16, torch.bfloat16 or torch.float32, got {grid_dtype}")
    geometry = (b.o_n, b.d_n, b.t0, b.delta, b.z_per_t)
    if torch.is_grad_enabled() and any(t.requires_grad for t in geometry):
        raise ValueError("implementation='triton' has no gradient w.r.t. cameras or the field's bounds (they "
                         "require grad here): use implementation='dense'")
    rays = KernelRays.from_batch(b)
    opts = KernelOptions(n_samples=int(n_samples), early_stop=float(early_stop), skip=bool(skip_empty),
                         block_rays=int(block_rays))
    return _TritonRender.apply(b.density, b.features, rays, opts, grid_dtype, int(cell))


def render_field_triton(field: VoxelField, cameras: Cameras, n_samples: int = 128, near: float = 0.0,
                        far: float | None = None, *, stratified: bool = False,
                        generator: torch.Generator | None = None, min_hit_alpha: float = HIT_ALPHA,
                        no_hit_depth: float = math.inf, grid_dtype: torch.dtype | None = None,
                        skip_empty: bool = True, early_stop: float = EARLY_STOP, cell: int = OCCUPANCY_CELL,
                        block_rays: int | None = None) -> RenderOutput:
    """`render_field` with the fused kernels (model and arguments: `nfldm_sdk.rendering.api.render_field`).

    Args:
        grid_dtype: storage dtype of the feature grid (default float16; density is always stored float32).
        skip_empty: skip samples in empty coarse cells (exact; the module docstring says why).
        early_stop: stop a ray once its transmittance falls below this (0: never; error bound: module docstring).
        cell: occupancy-grid cell size, voxels per axis.
        block_rays: rays per program, a power of two (default: `BLOCK_RAYS` = 32, one warp, on a GPU;
            `INTERPRETER_BLOCK_RAYS` under the interpreter).
    Returns:
        `RenderOutput` in the field's dtype; differentiable w.r.t. density and features (not cameras or bounds).
    """
    check_device(field.device)
    b = prepare_rays(field, cameras, n_samples, near, far, stratified, generator)
    feats, depth_num, alpha = render_batch_triton(b, n_samples, grid_dtype=grid_dtype or torch.float16,
                                                  skip_empty=skip_empty, early_stop=early_stop, cell=cell,
                                                  block_rays=block_rays)
    dt = field.dtype
    return finish_render(b, feats.to(dt), depth_num.to(dt), alpha.to(dt), min_hit_alpha, no_hit_depth)

