"""Meshes of a scene's density: marching cubes, coloured by the decoded appearance.

Everything is in the scene frame: right-handed, z up, metres.

* `field_to_mesh` — the iso-surface of the density grid as an Open3D ``TriangleMesh``;
* `default_level` — its default iso-level, ``ln 2 / voxel size``;
* `scene_field` — the one unbatched `VoxelField` of a scene, checked.

Mesh colours: the stage-1 decoder is a 2D CNN over rendered feature maps, so features cannot be decoded per
vertex. Instead the scene is rendered from a set of virtual cameras (`nfldm_sdk.cameras.builders.mesh_color_cameras`:
the capture rig at the scene origin, four oblique views from above the box edges and one top-down view), every vertex
is projected into every view, and it takes the colour of the nearest view that actually sees it: the vertex faces the
camera (its normal points towards the camera centre) and its planar depth agrees with the rendered depth at that pixel
within one voxel. Vertices no view sees are grey (`UNSEEN_GREY`). Without a decoder vertices are coloured by height.
``colors="class"`` picks the same pixel's rendered semantic label instead and paints it in CARLA's palette
(`nfldm_sdk.labels.classes.CARLA_PALETTE`; needs a decoder with a semantic head).

    mesh = field_to_mesh(scene)                                      # coloured TriangleMesh, metres
"""
from __future__ import annotations

import math

import numpy as np
import torch
from skimage.measure import marching_cubes

from nfldm_sdk.cameras.builders import mesh_color_cameras
from nfldm_sdk.fields.voxel_field import VoxelField
from nfldm_sdk.labels.classes import colorize_tags
from nfldm_sdk.models.semantic_head import require_semantic_head
from nfldm_sdk.rendering.sizes import MAX_SIZE_RATIO, training_image_size
from nfldm_sdk.sensors.renderer import render_views, resolve_scene

__all__ = ["field_to_mesh", "default_level", "scene_field", "UNSEEN_GREY"]

#: Colour of mesh vertices that no colouring view sees.
UNSEEN_GREY = (0.6, 0.6, 0.6)


def scene_field(scene_or_field) -> VoxelField:
    """The `VoxelField` of a `NeuralScene` (or the field itself), which must hold one scene.

    Raises:
        TypeError: `scene_or_field` is neither a scene nor a field.
        ValueError: the field is batched.
    """
    field = scene_or_field if isinstance(scene_or_field, VoxelField) else getattr(scene_or_field, "field", None)
    if not isinstance(field, VoxelField):
        raise TypeError(f"expected a NeuralScene or a VoxelField, got {type(scene_or_field).__name__}")
    if field.is_batched:
        raise ValueError(f"expected one scene, got a batched field of {field.batch_size}: index it (field[i])")
    return field


def default_level(field: VoxelField) -> float:
    """The default iso-level (σ, 1/m) of `field_to_mesh`: ``ln 2 / voxel size`` — where one voxel of the field
    lets half the light through, a physical "surface" that does not depend on the scene's density scale."""
    return float(math.log(2.0) / field.voxel_size.mean())


def _height_colors(v: np.ndarray) -> np.ndarray:
    """``[P, 3]`` colours from blue (low) through green to red (high) by z."""
    z = v[:, 2]
    s = (z - z.min()) / max(float(np.ptp(z)), 1e-9)
    return np.stack([np.clip(2 * s - 1, 0, 1), 1 - np.abs(2 * s - 1), np.clip(1 - 2 * s, 0, 1)], -1)


@torch.no_grad()
def _appearance_colors(verts: np.ndarray, normals: np.ndarray, field: VoxelField, scene, decoder, size: int | None,
                       batch_size: int, device, by_class: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Colours ``[P, 3]`` in [0, 1] and a seen mask ``[P]`` from renders of `mesh_color_cameras` (module docstring):
    the rendered RGB, or with `by_class` the rendered label in CARLA's palette."""
    src = resolve_scene(scene if not isinstance(scene, VoxelField) else field, decoder)
    if size is None:                    # the largest square the decoder renders without departing from its training
        trained = training_image_size(src.decoder)
        size = 128 if trained is None else int(MAX_SIZE_RATIO * min(trained))
    f = int(src.decoder.config.downsample)
    size = max(f, size - size % f)
    cams = mesh_color_cameras(field.bounds.detach().cpu(), size)                    # [V]
    out = render_views(src, cams.reshape(1, -1), batch_size=batch_size, device=device, check_overlap=False)
    if by_class:
        rgb = colorize_tags(out.semantic[0].cpu().numpy())                           # [V, H, W, 3] class colours
    else:
        rgb = out.rgb[0].cpu().numpy()                                               # [V, H, W, 3]
    depth = out.depth[0].cpu().numpy()                                               # [V, H, W]
    uv, z = cams.to(dtype=torch.float64).world_to_pixels(torch.as_tensor(verts, dtype=torch.float64))  # [V,P,2], [V,P]
    uv, z = uv.numpy(), z.numpy()
    uv = np.where(np.isfinite(uv) & (z[..., None] > 1e-3), uv, -1.0)             # behind the camera: off-image
    col = np.floor(uv[..., 0]).astype(np.int64)
    row = np.floor(uv[..., 1]).astype(np.int64)
    inside = (z > 1e-3) & (col >= 0) & (col < size) & (row >= 0) & (row < size)
    colc, rowc = np.clip(col, 0, size - 1), np.clip(row, 0, size - 1)
    V = len(cams)
    d_at = depth[np.arange(V)[:, None], rowc, colc]                                  # [V, P] rendered depth there
    tol = float(field.voxel_size.max())
    centres = cams.centers.double().numpy()                                          # [V, 3]
    facing = np.einsum("pk,vpk->vp", normals, centres[:, None] - verts[None]) > 0    # [V, P] front faces only
    seen = inside & facing & np.isfinite(d_at) & (np.abs(d_at - z) < tol)           # [V, P]
    score = np.where(seen, z, np.inf)                                                # nearest view wins
    best = np.argmin(score, axis=0)                                                  # [P]
    any_seen = seen.any(axis=0)
    P = len(verts)
    colors = rgb[best, rowc[best, np.arange(P)], colc[best, np.arange(P)]].astype(np.float64) / 255.0
    colors[~any_seen] = UNSEEN_GREY
    return colors, any_seen


def field_to_mesh(scene_or_field, level: float | None = None, *, decoder=None, colors: str = "auto",
                  color_size: int | None = None, batch_size: int = 12, device: torch.device | str | None = None):
    """Iso-surface of the density grid as an Open3D ``TriangleMesh`` in scene metres.

    Marching cubes (``skimage.measure.marching_cubes``) runs on the voxel-centre samples of ``density`` padded by
    one zero voxel on every side, so surfaces close at the box faces (outside the box σ = 0, as the renderer sees
    it). Vertex ``(i, j, k)`` of the padded grid maps to ``min + (ijk − 0.5) · voxel_size`` (VoxelField's voxel-centre
    convention). A box of σ inside and 0 outside meshed at ``level = σ/2`` has its faces exactly on the voxel faces.

    Args:
        scene_or_field: a `NeuralScene` or an unbatched `VoxelField`.
        level: iso-level σ in 1/m (default `default_level`: ``ln 2 / voxel size``).
        decoder: a stage-1 decoder (default: the scene's) for appearance colours.
        colors: ``"auto"`` (appearance when a decoder is available, else height), ``"appearance"``, ``"class"``
            (the rendered semantic label in CARLA's palette), ``"height"`` or ``"none"`` (see the module docstring
            for how appearance colours are found).
        color_size: image size of the colouring views (default: twice the decoder's training size, 128 for a
            64×64 model — the largest it supports, `nfldm_sdk.rendering.sizes`); batch_size, device: their rendering.
    Returns:
        ``open3d.geometry.TriangleMesh`` with vertex normals (pointing out of dense regions) and vertex colours.
    Raises:
        ValueError: the density never crosses `level` (an empty scene or a level above every density).
        SemanticsUnavailableError: ``colors="class"`` with a decoder that has no semantic head.
    """
    import open3d as o3d  # start-up time: open3d

    field = scene_field(scene_or_field)
    level = default_level(field) if level is None else float(level)
    dens = field.density.detach().float().cpu().numpy()                               # [Z, Y, X]
    if not (min(float(dens.min()), 0.0) < level < float(dens.max())):                # padding adds zeros
        raise ValueError(f"the density ({dens.min():.3g}…{dens.max():.3g} /m) never crosses level {level:.3g}: the scene "
                         "is empty at that level; pass a lower level")
    vol = np.pad(dens, 1)                                                            # [Z+2, Y+2, X+2], zero outside
    verts_zyx, faces, _, _ = marching_cubes(vol, level=level)                          # vertices in (z, y, x) index space
    vs = field.voxel_size.detach().double().cpu().numpy()                              # [3] (x, y, z)
    lo = field.bounds[0].detach().double().cpu().numpy()
    verts = lo + (verts_zyx[:, ::-1].astype(np.float64) - 0.5) * vs                    # [P, 3] (x, y, z) metres
    # skimage winds the faces with normals towards higher values in its (z, y, x) index space; reordering the axes to
    # (x, y, z) is a mirror image, which turns them outward (towards lower density). tests/sdk/viz/test_viz_export checks it.
    faces = faces.astype(np.int32)
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(verts), o3d.utility.Vector3iVector(faces))
    mesh.compute_vertex_normals()
    dec = decoder if decoder is not None else getattr(scene_or_field, "decoder", None)
    mode = colors
    if mode == "auto":
        mode = "appearance" if dec is not None else "height"
    if mode in ("appearance", "class"):
        if dec is None:
            raise ValueError(f"{mode} colours need a decoder: pass decoder= or a NeuralScene with one, or colors='height'")
        if mode == "class":
            require_semantic_head(getattr(dec, "semantic_head", None))
        c, _ = _appearance_colors(verts, np.asarray(mesh.vertex_normals), field, scene_or_field, dec, color_size,
                                  batch_size, device, by_class=mode == "class")
        mesh.vertex_colors = o3d.utility.Vector3dVector(c)
    elif mode == "height":
        mesh.vertex_colors = o3d.utility.Vector3dVector(_height_colors(verts))
    elif mode != "none":
        raise ValueError(f"colors must be 'auto', 'appearance', 'class', 'height' or 'none', got {colors!r}")
    return mesh
