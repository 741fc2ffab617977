"""The Open3D viewer: geometries in a window, or rendered offscreen to a PNG (EGL; works headless).

* `show` — any Open3D geometries (`nfldm_sdk.viz.mesh`, `nfldm_sdk.viz.points`, `nfldm_sdk.viz.lines`) from a
  named viewpoint (`VIEWS`);
* `show_scene` — a scene as `scene_geometries` draws it: mesh or points, its box, optionally an ego trajectory with
  a rig's camera frustums; coloured by appearance (``color_by="rgb"``) or by semantic class (``color_by="class"``,
  CARLA's palette; needs a decoder with a semantic head);
* `has_display` — whether a window can open.

Example::

    mesh = field_to_mesh(scene)                                      # coloured TriangleMesh, metres
    show([mesh, trajectory_lines(traj), camera_frustum_lines(rig.cameras(traj.ego_to_world[::5]))],
         screenshot="scene.png")
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import imageio.v3 as iio
import numpy as np
import torch

from nfldm_sdk.cameras.rig import CameraRig
from nfldm_sdk.errors import NfldmError
from nfldm_sdk.viz.lines import box_lines, camera_frustum_lines, trajectory_lines
from nfldm_sdk.viz.mesh import field_to_mesh, scene_field
from nfldm_sdk.viz.points import COLOR_BY, scene_to_point_cloud

__all__ = ["show", "show_scene", "scene_geometries", "has_display", "ViewError", "VIEWS"]

#: Named viewpoints for `show`: ``front`` (the direction from the look-at point towards the eye) and ``up``.
#: ``above_behind`` looks at the scene from behind the ego (−x) and above, the way a chase camera does.
VIEWS = {
    "above_behind": ((-1.0, 0.0, 0.9), (0.0, 0.0, 1.0)),
    "top": ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0)),
    "side": ((0.0, -1.0, 0.35), (0.0, 0.0, 1.0)),
    "front": ((1.0, 0.0, 0.6), (0.0, 0.0, 1.0)),
}


class ViewError(NfldmError, RuntimeError):
    """No window or offscreen context could be opened; the message says what to do."""


def scene_geometries(scene, trajectory=None, rig: CameraRig | None = None, *, geometry: str = "mesh",
                     level: float | None = None, frustum_every: int = 5, device: torch.device | str | None = None,
                     decoder=None, color_by: str = "rgb") -> list:
    """What `show_scene` draws: the scene as a mesh (`field_to_mesh`) or points (`scene_to_point_cloud`), its box,
    and optionally the ego `trajectory` (drawn 1 m above the ground, where a mesh does not hide it; heading ticks)
    with the `rig`'s camera frustums (default: the capture rig) every `frustum_every` ticks — or the rig at the scene
    origin when there is no trajectory. `color_by`: ``"rgb"`` (appearance; height without a decoder) or ``"class"``
    (semantic labels in CARLA's palette)."""
    if geometry not in ("mesh", "points"):
        raise ValueError(f"geometry must be 'mesh' or 'points', got {geometry!r}")
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {COLOR_BY}, got {color_by!r}")
    field = scene_field(scene)
    if geometry == "points":
        geoms = [scene_to_point_cloud(scene, decoder=decoder, device=device, color_by=color_by)]
    else:
        colors = "class" if color_by == "class" else "auto"
        geoms = [field_to_mesh(scene, level, decoder=decoder, device=device, colors=colors)]
    geoms.append(box_lines(field.bounds))
    if trajectory is not None:
        geoms.append(trajectory_lines(trajectory, heading=1.0, lift=1.0))
        cam_rig = rig if rig is not None else CameraRig.preset("capture", 64, 64)
        e2w = np.asarray(getattr(trajectory, "ego_to_world", trajectory), dtype=np.float64).reshape(-1, 4, 4)
        geoms.append(camera_frustum_lines(cam_rig.cameras(e2w[::max(1, int(frustum_every))]), scale=1.0))
    elif rig is not None:
        geoms.append(camera_frustum_lines(rig.cameras(np.eye(4)), scale=1.0))
    return geoms


def show_scene(scene, trajectory=None, rig: CameraRig | None = None, *, geometry: str = "mesh",
               level: float | None = None, screenshot: str | Path | None = None, width: int = 1280, height: int = 720,
               view="above_behind", frustum_every: int = 5, device: torch.device | str | None = None,
               decoder=None, color_by: str = "rgb") -> Path | None:
    """`show` the `scene_geometries` of a scene (mesh or points, box, optional trajectory and camera frustums;
    coloured by appearance or, ``color_by="class"``, by semantic class) in a window, or offscreen into the PNG
    `screenshot` (then its path is returned; else None)."""
    geoms = scene_geometries(scene, trajectory, rig, geometry=geometry, level=level, frustum_every=frustum_every,
                             device=device, decoder=decoder, color_by=color_by)
    return show(geoms, screenshot, width=width, height=height, view=view)


def has_display() -> bool:
    """Whether an interactive window can open: X11/Wayland on Linux (``DISPLAY``/``WAYLAND_DISPLAY``); macOS and
    Windows always have one."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


@dataclass(frozen=True)
class _View:
    front: tuple[float, float, float]
    up: tuple[float, float, float]


def _resolve_view(view) -> _View:
    if isinstance(view, str):
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}: choose one of {', '.join(VIEWS)} or pass (front, up) vectors")
        return _View(*VIEWS[view])
    front, up = view
    return _View(tuple(front), tuple(up))


def _setup(vis, geometries, view, background, point_size, zoom) -> None:
    for g in geometries:
        vis.add_geometry(g)
    opt = vis.get_render_option()
    opt.background_color = np.asarray(background, dtype=np.float64)
    opt.point_size = float(point_size)
    opt.mesh_show_back_face = True
    opt.line_width = 2.0
    v = _resolve_view(view)
    bbox = geometries[0].get_axis_aligned_bounding_box()
    for g in geometries[1:]:
        bbox += g.get_axis_aligned_bounding_box()
    ctl = vis.get_view_control()
    ctl.set_lookat(bbox.get_center())
    ctl.set_front(np.asarray(v.front, dtype=np.float64) / np.linalg.norm(v.front))
    ctl.set_up(np.asarray(v.up, dtype=np.float64))
    ctl.set_zoom(float(zoom))


def show(geometries, screenshot: str | Path | None = None, *, width: int = 1280, height: int = 720,
         view="above_behind", background: Sequence[float] = (1.0, 1.0, 1.0), point_size: float = 2.0,
         zoom: float = 0.55, title: str = "nfldm") -> Path | None:
    """Show Open3D geometries in a window, or render them offscreen to a PNG.

    Args:
        geometries: one geometry or a list (meshes, point clouds, line sets).
        screenshot: write a ``width`` × ``height`` PNG here instead of opening a window (offscreen through EGL:
            works without a display), then return its path.
        view: a `VIEWS` name (default ``above_behind``: from behind the ego and above) or ``(front, up)`` vectors;
            the view looks at the centre of all geometries.
        background: RGB in [0, 1]; point_size: pixels; zoom: Open3D zoom (smaller = closer).
    Returns:
        the PNG path with `screenshot`, else None (after the window is closed).
    Raises:
        ViewError: no display for a window (use `screenshot`), or no offscreen context.
    """
    import open3d as o3d  # start-up time: open3d

    geoms = list(geometries) if isinstance(geometries, (list, tuple)) else [geometries]
    if not geoms:
        raise ValueError("nothing to show: pass at least one geometry")
    if screenshot is None and not has_display():
        raise ViewError("no display is available for an interactive Open3D window (DISPLAY/WAYLAND_DISPLAY unset): "
                        "render offscreen with show(..., screenshot='view.png') (CLI: --screenshot view.png), or "
                        "forward a display (ssh -X)")
    vis = o3d.visualization.Visualizer()
    if not vis.create_window(window_name=title, width=int(width), height=int(height), visible=screenshot is None):
        raise ViewError("Open3D could not open a " + ("window" if screenshot is None else "offscreen (EGL) context") +
                        ": check the graphics drivers (headless rendering needs libEGL and Mesa: apt-get install "
                        "libegl1 libgl1)")
    try:
        _setup(vis, geoms, view, background, point_size, zoom)
        if screenshot is None:
            vis.run()
            return None
        vis.poll_events()
        vis.update_renderer()
        img = np.asarray(vis.capture_screen_float_buffer(do_render=True))             # [H, W, 3] float in [0, 1]
        if img.size == 0:
            raise ViewError("the offscreen render came back empty: Open3D's EGL context did not render")
        path = Path(screenshot)
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8))
        return path
    finally:
        vis.destroy_window()
