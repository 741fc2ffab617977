"""`nfldm view TARGET`: open a capture store or a generated scene in Open3D (or screenshot it offscreen).

    nfldm view data/town03.zarr --episode 0 --stride 4 --screenshot capture.png   # fused RGB-D points + ego path
    nfldm view out/scene_000000 --model assets/models/small --trajectory arc       # scene mesh, box, trajectory

The one ``view`` command (the ``view`` entry point of ``nfldm.commands``). It lives in nfldm_training because
reading capture stores needs `sim_bridge`, which nfldm_sdk must not import; the scene branch is
`nfldm_sdk.cli.render.view_scene`.
"""
from __future__ import annotations

from pathlib import Path

import click

from nfldm_sdk.cli.names import DEVICE_DEFAULT_HELP, default_device
from nfldm_sdk.cli.render import COLOR_BY_NAMES, VIEW_NAMES, friendly_errors, trajectory_options, view_scene
from nfldm_sdk.cli.route_views import is_route_folder, view_route

__all__ = ["view", "view_capture", "is_capture_store"]


def is_capture_store(path: str) -> bool:
    """Whether `path` is a zarr v3 group with an ``episodes`` group (a `sim_bridge` capture store)."""
    if "://" not in path and not (Path(path) / "zarr.json").is_file():
        return False
    import zarr  # start-up time: zarr, imported only when the command runs

    try:
        group = zarr.open_group(path, mode="r", zarr_format=3, use_consolidated=False)
    except Exception:  # noqa: BLE001 - anything unreadable is simply not a store
        return False
    try:
        return isinstance(group["episodes"], zarr.Group)
    except KeyError:
        return False


def _frames(spec: str | None, n: int) -> list[int]:
    """``--frames``: ``"a:b[:step]"`` or ``"i,j,k"`` (default: every frame)."""
    if not spec:
        return list(range(n))
    try:
        if ":" in spec:
            parts = [int(p) if p else None for p in spec.split(":")]
            return list(range(n))[slice(*parts)]
        return [int(p) for p in spec.split(",") if p.strip()]
    except ValueError:
        raise click.BadParameter(f"{spec!r}: use START:STOP[:STEP] or a list I,J,K", param_hint="--frames") from None


def view_capture(store_path: str, *, episode: int | str = 0, frames: str | None = None, stride: int = 4,
                 max_depth: float | None = 80.0, voxel_size: float | None = None, screenshot: str | None = None,
                 width: int = 1280, height: int = 720, view: str = "above_behind", frustum_every: int = 4,
                 color_by: str = "rgb"):
    """Fuse an episode's RGB-D into coloured points (captured colours, or with ``color_by="class"`` the captured
    CARLA tags in CARLA's palette) and show them with the ego path and camera frustums (every `frustum_every`
    selected frames). Returns the screenshot path or None."""
    # start-up time: numpy, torch, the capture reader and Open3D, imported only when the command runs
    import numpy as np
    import torch
    from sim_bridge import open_store

    from nfldm_sdk.cameras.pinhole import Cameras
    from nfldm_sdk.viz.lines import camera_frustum_lines, trajectory_lines
    from nfldm_sdk.viz.points import capture_to_point_cloud
    from nfldm_sdk.viz.viewer import show

    store = open_store(store_path)
    try:
        ep = store.episode(int(episode) if str(episode).isdigit() else episode)
    except (KeyError, IndexError) as e:
        raise click.ClickException(f"{store_path} has no episode {episode!r}: it has {', '.join(store.episode_names)}") from e
    if ep.num_frames == 0:
        raise click.ClickException(f"episode {ep.name} of {store_path} has no committed frames yet")
    ts = _frames(frames, ep.num_frames)
    K = store.rig.K()
    cloud = capture_to_point_cloud(ep, frames=ts, stride=stride, rig=store.rig, max_depth=max_depth, voxel_size=voxel_size,
                                   color_by=color_by)
    c2w = np.asarray(ep.cam_to_world)[ts[::max(1, frustum_every)]]                  # [t, N, 4, 4]
    cams = Cameras(torch.as_tensor(np.broadcast_to(K, c2w.shape[:2] + (3, 3)).copy()), torch.as_tensor(c2w),
                   store.rig.width, store.rig.height)
    path = trajectory_lines(np.asarray(ep.ego_to_world)[ts], heading=1.0, lift=1.0)   # 1 m up: above the ground points
    geoms = [cloud, path, camera_frustum_lines(cams, 0.8)]
    return show(geoms, screenshot, width=width, height=height, view=view)


@click.command("view")
@click.argument("target", type=click.Path())
@click.option("--model", type=click.Path(exists=True, file_okay=False), default=None,
              help="Scenes: the model bundle that generated it (colours; needed for --geometry points).")
@click.option("--screenshot", type=click.Path(dir_okay=False), default=None,
              help="Render offscreen to this PNG instead of opening a window (works headless).")
@click.option("--rig", default=None, help="Scenes: draw this rig's camera frustums (preset, rig JSON, capture store).")
@trajectory_options(None)
@click.option("--geometry", type=click.Choice(["mesh", "points"]), default="mesh", show_default=True,
              help="Scenes: draw the density iso-surface or rendered RGB-D points.")
@click.option("--level", type=float, default=None, help="Scenes: mesh iso-level σ (1/m); default ln2 / voxel size.")
@click.option("--episode", default="0", show_default=True, help="Captures: episode index or name.")
@click.option("--frames", default=None, help="Captures: frames to fuse, START:STOP[:STEP] or I,J,K (default all).")
@click.option("--stride", type=int, default=4, show_default=True, help="Captures: keep every STRIDE-th pixel.")
@click.option("--max-depth", type=float, default=80.0, show_default=True, help="Captures: drop farther points (m).")
@click.option("--voxel-size", type=float, default=None, help="Captures: voxel down-sampling of the points (m).")
@click.option("--view", "view_name", type=click.Choice(list(VIEW_NAMES)), default="above_behind", show_default=True,
              help="Viewpoint: above_behind looks from behind the ego start and above.")
@click.option("--size", nargs=2, type=int, default=(1280, 720), show_default=True, help="Window/screenshot WIDTH HEIGHT.")
@click.option("--color-by", type=click.Choice(list(COLOR_BY_NAMES)), default="rgb", show_default=True,
              help="Colour by appearance or by semantic class (CARLA palette; scenes need a semantic head).")
@click.option("--device", default=default_device, show_default=DEVICE_DEFAULT_HELP, help="Scenes: torch device.")
@friendly_errors
def view(target, model, screenshot, rig, trajectory, length, speed, rate, radius, angle, offset, duration, geometry,
         level, episode, frames, stride, max_depth, voxel_size, view_name, size, color_by, device):
    """View a capture store (fused RGB-D points, ego path, cameras), a scene folder (mesh/points) or a route folder
    (the whole route's mesh and its drive) in Open3D."""
    if is_capture_store(target):
        out = view_capture(target, episode=episode, frames=frames, stride=stride, max_depth=max_depth,
                           voxel_size=voxel_size, screenshot=screenshot, width=size[0], height=size[1], view=view_name,
                           color_by=color_by)
    elif (Path(target) / "scene.json").is_file():
        traj_kwargs = dict(length=length, speed=speed, rate=rate, radius=radius, angle=angle, offset=offset,
                           duration=duration)
        out = view_scene(target, model, screenshot=screenshot, rig=rig, trajectory=trajectory, traj_kwargs=traj_kwargs,
                         geometry=geometry, level=level, width=size[0], height=size[1], view=view_name, device=device,
                         color_by=color_by)
    elif is_route_folder(target):
        out = view_route(target, model, screenshot=screenshot, level=level, width=size[0], height=size[1],
                         view=view_name, device=device)
    else:
        raise click.ClickException(f"{target} is neither a capture store (a zarr store with an 'episodes' group, from "
                                   "`sim_bridge collect`), a scene folder (with scene.json, from `nfldm generate`) nor a route folder (with "
                                   "route.json, from `nfldm generate-route`)")
    if out is not None:
        click.echo(f"screenshot -> {out}")
