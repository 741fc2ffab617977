"""Differentiable volume rendering of a `VoxelField` from `Cameras` (docs/method.md, stage 1 step 4, ``î = r(V, κ)``).

The model, shared by every implementation:

1. One ray per pixel centre (``Cameras.rays``, through the cameras' own model: pinhole or fisheye, see
   `nfldm_sdk.cameras.projection`; every implementation, the Triton kernel included, reads these rays and never
   rebuilds them from ``K``). Each ray is clipped to the field's box with the slab method and to
   ``[near, far]`` (planar depths, converted per ray to ray distance ``t = z / z_per_t``). Rays that miss get
   zero weight everywhere.
2. ``n_samples`` samples uniformly spaced in ray distance over the clipped segment ``[t0, t1]``: the midpoints
   ``t_i = t0 + (i + 0.5) δ``, ``δ = (t1 - t0) / n_samples`` (with ``stratified=True``: ``t0 + (i + u_i) δ``,
   ``u_i ~ U[0,1)`` from ``generator``, one ``[B?, rays, n_samples]`` draw per call).
3. Density σ and features f are interpolated trilinearly at each sample (``grid_sample``, ``align_corners=False``,
   ``padding_mode="border"``): between voxel centres the field is the trilinear interpolant, in the outer
   half-voxel shell of the box it is held constant up to the box faces, and outside the box σ = 0 (rays are
   clipped). So a box-filling slab of σ seen through thickness L has transmittance exactly exp(−σL).
4. Compositing: ``α_i = 1 − exp(−σ_i δ)``, ``T_i = Π_{j<i} (1 − α_j) = exp(−Σ_{j<i} σ_j δ)``, ``w_i = T_i α_i``;
   ``features = Σ w_i f_i`` (no background colour), ``alpha = 1 − T_final = Σ w_i``.
5. Depth is planar z-depth (along the optical axis for fisheye cameras too, which see less than 90° off axis;
   the ray length is ``depth / z_per_t``), the *normalised* expected depth ``Σ w_i z_i / alpha`` (so a surface sits at its
   distance rather than being pulled towards 0 by the light that passes it). A ray *hits* when its opacity
   reaches ``min_hit_alpha``, by default `HIT_ALPHA` = 0.5: at least half of its light is absorbed inside the box,
   so the ray's termination distribution has its median there and the depth names a surface. Rays with
   ``alpha < min_hit_alpha`` (sky, faint fog) get ``no_hit_depth`` — ``inf`` by default, the project's no-hit
   convention (valid mask ``isfinite``). Every user-facing output uses `HIT_ALPHA` (this function, the sensors,
   `NeuralScene.render`, frame exports, point clouds); training passes its own smaller threshold (see
   `nfldm_sdk.models.scene_ae.TRAINING_MIN_HIT_ALPHA`). Training code comparing against ground-truth depth
   should mask with both depths' ``isfinite`` or pass a finite ``no_hit_depth`` (e.g. the far plane). Gradients
   never see the ``inf``.

Implementations (PyTorch ones run on any device; ``"triton"`` is the fused GPU kernel):

* ``render_field_reference`` (`nfldm_sdk.rendering.reference`) — the oracle: every sample of every ray in one
  tensor, one ``grid_sample``, transmittance by ``cumprod``. Readable, memory-hungry (about
  ``rays × n_samples × (C+1) × 4`` bytes).
* ``"dense"`` (`nfldm_sdk.rendering.torch_paths`) — rays in chunks, density and features in one ``grid_sample`` of the packed ``[1+C]`` grid,
  transmittance by an exclusive ``cumsum`` of ``σδ``; differentiable w.r.t. density and features (autograd keeps
  every chunk's samples for backward, so chunking bounds memory only without grad). The training path.
* ``"sparse"`` (`nfldm_sdk.rendering.torch_paths`) — rays in chunks; a 1-channel density lookup at every sample gives the weights, then features are
  read only where ``w_i > skip_weight`` (air and occluded space cost one channel instead of C+1), composited by an
  ``embedding_bag`` over a channel-last copy of the feature grid (no ``[rays, S, C]`` tensor at all). With the
  default ``skip_weight=0`` the output equals the dense one up to float summation order. It is differentiable
  w.r.t. features but NOT density (∂w_i/∂σ_i ≠ 0 at skipped samples), so it refuses a density that needs grad.
  The sensor path: ~7-30× the naive per-sample loop on CPU (``python -m nfldm_sdk.benchmarks.render``).
* ``"triton"`` — the fused Triton kernels of `nfldm_sdk.rendering.triton_render`: clipping, marching, trilinear
  interpolation of density and all features, front-to-back compositing with early ray termination (rays stop
  once ``T < 1e-4``) and exact empty-space skipping over a coarse occupancy grid, in one pass per ray; a fused
  backward gives gradients to density and features (none to cameras or bounds). Features stored channels-last in
  ``grid_dtype`` (default float16, rounding them by ≤ 2^-11 ≈ 5e-4 relative; density float32), float32 arithmetic
  whatever the field's dtype; early termination drops ≤ 1e-4 of weight. CUDA tensors; CPU tensors only under
  Triton's interpreter (``TRITON_INTERPRET=1``, tests).
  ``chunk_rays`` and ``skip_weight`` do not apply (no per-sample memory; skipping is exact).
* ``"auto"`` (default) — ``"triton"`` for a float32/16 field on CUDA when Triton is installed (with or without
  gradients) unless cameras or bounds need a gradient; otherwise ``"sparse"`` unless the density needs a
  gradient, then ``"dense"``.

All of them share the ray batch of `nfldm_sdk.rendering.rays` (`prepare_rays`, `finish_render`); this module is
the one dispatch point.

Example::

    cams = Cameras.from_fov(90.0, 64, 64, cam_to_world)           # [V]
    out = render_field(field, cams, n_samples=96)                 # features [V,C,64,64], depth/alpha [V,64,64]
"""
from __future__ import annotations

import math

import torch

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.rendering.rays import HIT_ALPHA, RenderOutput, clip_rays_to_box, finish_render, prepare_rays
from nfldm_sdk.rendering.reference import render_field_reference
from nfldm_sdk.rendering.torch_paths import render_rays_dense, render_rays_sparse

__all__ = ["HIT_ALPHA", "IMPLEMENTATIONS", "RenderOutput", "clip_rays_to_box", "render_field", "render_field_reference",
           "triton_preferred"]

IMPLEMENTATIONS = ("auto", "reference", "dense", "sparse", "triton")
"""The values of `render_field`'s ``implementation`` (module docstring)."""


def triton_preferred(field: VoxelField, cameras: Cameras) -> bool:
    """``"auto"``'s rule for the fused kernel: a float32/16 field on CUDA, compiled Triton kernels available, and no
    gradient wanted w.r.t. the ray geometry (the kernel gives none). Imports Triton only for CUDA fields."""
    if field.device.type != "cuda" or field.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in (cameras.K, cameras.cam_to_world, field.bounds)):
        return False
    try:
        import nfldm_sdk.rendering.triton_render as render_triton  # optional dependency: triton
    except ImportError:
        return False
    return not render_triton.INTERPRETED


def render_field(field: VoxelField, cameras: Cameras, n_samples: int = 128, near: float = 0.0,
                 far: float | None = None, implementation: str = "auto", chunk_rays: int | None = None, *,
                 stratified: bool = False, generator: torch.Generator | None = None, skip_weight: float = 0.0,
                 min_hit_alpha: float = HIT_ALPHA, no_hit_depth: float = math.inf,
                 grid_dtype: torch.dtype | None = None) -> RenderOutput:
    """Volume-render ``field`` from ``cameras`` (model, conventions and implementations: module docstring).

    Args:
        field: unbatched (``density [Z,Y,X]``) or batched (``[B,Z,Y,X]``) `VoxelField`.
        cameras: any batch shape ``[...]`` for an unbatched field; ``[B, ...]`` for a batched one. They are
            moved to the field's device and dtype.
        n_samples: samples per ray, uniform over the ray's segment inside the box.
        near, far: planar-depth range in metres (``far=None``: up to the box exit).
        implementation: ``"auto"``, ``"reference"``, ``"dense"``, ``"sparse"`` or ``"triton"``.
        chunk_rays: rays per chunk (all ``B`` fields at once); ``None`` sizes chunks to ~256 MiB (CPU) / 1 GiB (CUDA)
            of working set.
        stratified, generator: jitter samples inside their spacing (training); seeded by ``generator``.
        skip_weight: the sparse path samples features only where ``w_i > skip_weight``; 0 keeps it exact.
        min_hit_alpha, no_hit_depth: pixels with ``alpha < min_hit_alpha`` (default `HIT_ALPHA` = 0.5: less than half
            the ray's light absorbed) get depth ``no_hit_depth`` (default ``inf``).
        grid_dtype: the triton path's storage dtype of the feature grid (default float16; float32 for the
            closest match to the reference); other paths ignore it.
    Returns:
        `RenderOutput` with ``features [..., C, H, W]``, ``depth [..., H, W]`` (planar, metres), ``alpha [..., H, W]``.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    density_grad = torch.is_grad_enabled() and field.density.requires_grad
    if implementation == "auto":
        implementation = "triton" if triton_preferred(field, cameras) else "dense" if density_grad else "sparse"
    if implementation == "triton":
        try:
            from nfldm_sdk.rendering.triton_render import render_field_triton  # optional dependency: triton
        except ImportError as e:
            raise ValueError(f"implementation='triton' needs the triton package ({e}): pip install triton, or use "
                             "implementation='auto'") from e
        return render_field_triton(field, cameras, n_samples, near, far, stratified=stratified, generator=generator,
                                   min_hit_alpha=min_hit_alpha, no_hit_depth=no_hit_depth, grid_dtype=grid_dtype)
    if implementation == "reference":
        return render_field_reference(field, cameras, n_samples, near, far, stratified=stratified,
                                      generator=generator, min_hit_alpha=min_hit_alpha, no_hit_depth=no_hit_depth)
    if implementation == "sparse" and density_grad:
        raise ValueError("implementation='sparse' skips feature samples of zero weight and so drops the density "
                         "gradient there; use implementation='dense' (or 'auto') when density requires grad")
    b = prepare_rays(field, cameras, n_samples, near, far, stratified, generator)
    if implementation == "dense":
        feats, depth_num, alpha = render_rays_dense(b, n_samples, chunk_rays)
    else:
        feats, depth_num, alpha = render_rays_sparse(b, n_samples, chunk_rays, skip_weight)
    return finish_render(b, feats, depth_num, alpha, min_hit_alpha, no_hit_depth)
