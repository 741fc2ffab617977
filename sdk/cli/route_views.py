"""The route branches of `nfldm render` and `nfldm view`: a route folder (``route.json``, `nfldm generate-route`)
rendered along a drive across its seams, or shown as one world-frame mesh with its drive."""
from __future__ import annotations

from pathlib import Path

import click

__all__ = ["is_route_folder", "load_route", "view_route", "export_route"]


def is_route_folder(path: str | Path) -> bool:
    """Whether `path` is a route folder (holds ``route.json``)."""
    return (Path(path) / "route.json").is_file()


def load_route(path: str, model: str | None, device: str):
    """`NeuralRoute.load(path, decoder=model)` with CLI-friendly errors."""
    from nfldm_sdk.routes.neural_route import NeuralRoute  # start-up time: imports torch

    if not is_route_folder(path):
        raise click.ClickException(f"{path} is not a route folder (no route.json): make one with `nfldm generate-route`")
    return NeuralRoute.load(path, decoder=model, device=device)


def view_route(path: str, model: str | None, *, screenshot: str | None = None, level: float | None = None,
               width: int = 1280, height: int = 720, view: str = "above_behind", device: str = "cpu"):
    """Open (or screenshot into a PNG) a route: its scenes' meshes cut to their cells in the world frame
    (`NeuralRoute.to_mesh`) and the drive as a line. Returns the screenshot path or None."""
    from nfldm_sdk.viz.lines import trajectory_lines  # start-up time: Open3D
    from nfldm_sdk.viz.viewer import show

    route = load_route(path, model, device)
    geoms = [route.to_mesh(level, device=device), trajectory_lines(route.trajectory.ego_to_world, heading=0.0, lift=1.5)]
    return show(geoms, screenshot, width=width, height=height, view=view)


def export_route(path: str, model: str | None, *, mesh: str | None = None, points: str | None = None,
                 voxels: str | None = None, level: float | None = None, color_by: str = "rgb", device: str = "cpu"):
    """`nfldm export ROUTE`: the whole route's mesh (`NeuralRoute.to_mesh`) and/or point cloud
    (`NeuralRoute.to_point_cloud`) as PLY files in the world frame. Voxels are per scene (each scene's own grid):
    export ``ROUTE/scenes/NNNN`` one by one."""
    if voxels:
        raise click.UsageError("--voxels: a route has one voxel grid per scene, in its own frame; export them one by one "
                               "(nfldm export ROUTE/scenes/0000 --voxels out.zarr), or use --mesh/--points for the route")
    import open3d as o3d  # start-up time: Open3D only when something is written

    route = load_route(path, model, device)
    colors = "class" if color_by == "class" else "auto"
    if mesh:
        if not o3d.io.write_triangle_mesh(str(mesh), route.to_mesh(level, colors=colors, device=device)):
            raise click.ClickException(f"could not write {mesh}: use a .ply, .obj or .glb path in a writable folder")
        click.echo(f"mesh -> {mesh}")
    if points:
        if not o3d.io.write_point_cloud(str(points), route.to_point_cloud(color_by=color_by, device=device)):
            raise click.ClickException(f"could not write {points}: use a .ply or .pcd path in a writable folder")
        click.echo(f"points -> {points}")
