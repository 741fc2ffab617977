"""`nfldm render`, `nfldm export` and the scene viewer of `nfldm view` — the sensor and viewer commands of the `nfldm` CLI.

    nfldm render out/scene_000000 --model assets/models/small --rig capture --trajectory straight --length 30 \\
        --speed 10 --rate 10 --out drive.mp4                     # or --out frames/ (PNG + depth NPY + frames.json)
    nfldm export out/scene_000000 --model assets/models/small --mesh scene.ply   # or --points p.ply / --voxels v.zarr
    nfldm view out/scene_000000 --model assets/models/small --trajectory arc --screenshot view.png --color-by class

SCENE is a scene folder written by `NeuralScene.save` (``nfldm generate``); ``--model`` is the bundle that
generated it. ``--trajectory`` takes a built-in shape (``straight``, ``arc``, ``lane_change``, ``stationary``;
sized by ``--length --speed --rate --radius --angle --offset``) or a JSON file (`Trajectory.save`); ``--rig`` a
preset (``capture``, ``nuscenes``, ``front``), a rig JSON file or a capture store (its rig). Trajectories are in the
scene frame: the ego starts at the scene origin unless the file says otherwise. ``nfldm render`` refuses an existing
``--out`` (other than an empty folder) before rendering unless ``--overwrite`` is given, and then replaces only a
frame folder or a video it wrote, once the new output is complete (`nfldm_sdk.cli.output_path`).

Semantics: with a bundle whose stage-1 decoder has a semantic head, a frame folder also gets, per image, the labels in
CARLA's palette (``*_semantic.png``), the raw CARLA tags (``*_semantic_tags.png``, lossless 8-bit single channel) and
the confidence (``*_semantic_confidence.npy``) — `nfldm_sdk.viz.export.write_frames`; videos add a label row with
``--with-semantic``; ``nfldm export --points`` writes a ``label`` per point; ``--color-by class`` colours exports and
views by class. A head-less bundle renders RGB and depth as before and says in one line that semantics are
unavailable.

Viewing a capture store (``nfldm view data/town03.zarr``) lives in ``nfldm_training.cli.view``, which dispatches to
`view_scene` here for scene folders.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import click

from nfldm_sdk.cli.main import error_message
from nfldm_sdk.cli.names import DEVICE_DEFAULT_HELP, RIG_PRESET_NAMES, default_device
from nfldm_sdk.cli.output_path import check_output, staged_output
from nfldm_sdk.cli.route_views import export_route, is_route_folder, load_route
from nfldm_sdk.errors import NfldmError

if TYPE_CHECKING:  # torch-importing modules are imported inside the functions: `--help` start-up time
    from nfldm_sdk.cameras.rig import CameraRig
    from nfldm_sdk.cameras.trajectory import Trajectory

__all__ = ["render", "export", "view_scene", "trajectory_options", "build_trajectory", "load_scene",
           "friendly_errors", "semantics_unavailable_line", "scene_rig", "TRAJECTORY_SHAPES", "VIEW_NAMES",
           "COLOR_BY_NAMES"]

#: Built-in trajectory shapes of ``--trajectory``.
TRAJECTORY_SHAPES = ("straight", "arc", "lane_change", "stationary")
#: ``--view`` choices (`nfldm_sdk.viz.viewer.VIEWS`; listed here so `--help` does not import Open3D).
VIEW_NAMES = ("above_behind", "top", "side", "front")
#: ``--color-by`` choices (`nfldm_sdk.viz.points.COLOR_BY`; listed here so `--help` does not import torch).
COLOR_BY_NAMES = ("rgb", "class")
#: Exceptions whose messages already say what is wrong and how to fix it: shown without a traceback. The
#: project's own errors (`NfldmError`) are turned into one line by the `nfldm` group too; they are listed here so
#: that the commands say the same when invoked on their own (tests, other click groups).
USER_ERRORS = (NfldmError, FileNotFoundError, FileExistsError)


def friendly_errors(fn):
    """Turn `USER_ERRORS` into click errors (``Error: <message>``, exit status 1, no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            raise click.ClickException(error_message(e)) from e

    return wrapper


def trajectory_options(default: str | None = "straight"):
    """Decorator adding ``--trajectory`` (default `default`; None = no trajectory) and the built-in shapes' sizes."""
    help_default = "" if default else " Default: none."
    opts = [
        click.option("--trajectory", "trajectory", default=default, show_default=default is not None,
                     help=f"Built-in shape ({', '.join(TRAJECTORY_SHAPES)}) or a trajectory JSON file "
                          f"(Trajectory.save).{help_default}"),
        click.option("--length", type=float, default=20.0, show_default=True,
                     help="Metres driven: straight length, lane_change distance."),
        click.option("--speed", type=float, default=10.0, show_default=True, help="Ego speed, m/s."),
        click.option("--rate", type=float, default=10.0, show_default=True,
                     help="Ticks per second (frames are rendered at this rate; files are resampled to it)."),
        click.option("--radius", type=float, default=20.0, show_default=True, help="arc: turn radius, metres."),
        click.option("--angle", type=float, default=90.0, show_default=True,
                     help="arc: heading change in degrees, positive = left turn."),
        click.option("--offset", type=float, default=3.5, show_default=True,
                     help="lane_change: lateral offset in metres, positive = left."),
        click.option("--duration", type=float, default=2.0, show_default=True, help="stationary: seconds."),
    ]

    def decorate(fn):
        for o in reversed(opts):
            fn = o(fn)
        return fn

    return decorate


def build_trajectory(trajectory: str, length: float = 20.0, speed: float = 10.0, rate: float = 10.0,
                     radius: float = 20.0, angle: float = 90.0, offset: float = 3.5, duration: float = 2.0) -> Trajectory:
    """The `Trajectory` of the ``--trajectory`` options (a file is resampled to ``rate`` Hz)."""
    from nfldm_sdk.cameras.trajectory import Trajectory, TrajectoryError

    if trajectory == "straight":
        return Trajectory.straight(length, speed, rate)
    if trajectory == "arc":
        return Trajectory.arc(radius, angle, speed, rate)
    if trajectory == "lane_change":
        return Trajectory.lane_change(offset, length, speed, rate)
    if trajectory == "stationary":
        return Trajectory.stationary(duration, rate)
    p = Path(trajectory)
    if not p.is_file():
        raise TrajectoryError(f"unknown trajectory {trajectory!r}: use a built-in shape ({', '.join(TRAJECTORY_SHAPES)}) "
                              "or an existing trajectory JSON file (Trajectory.save)")
    traj = Trajectory.load(p)
    return traj.resample(rate) if len(traj) > 1 else traj


def load_scene(scene: str, model: str | None, device: str):
    """`NeuralScene.load(scene, decoder=model)` with CLI-friendly errors."""
    from nfldm_sdk.pipelines.scene import NeuralScene

    if not (Path(scene) / "scene.json").is_file():
        raise click.ClickException(f"{scene} is not a scene folder (no scene.json): generate one with `nfldm generate`")
    return NeuralScene.load(scene, decoder=model, device=device)


def semantics_unavailable_line(writing: str = "RGB and depth only") -> str:
    """The one line commands print when a bundle has no semantic head and they carry on without labels (`writing`
    says what they write instead)."""
    from nfldm_sdk.models.semantic_head import SEMANTICS_UNAVAILABLE  # start-up time: the module imports torch

    return f"note: {SEMANTICS_UNAVAILABLE} (writing {writing})"


def scene_rig(rig: str, width: int | None, height: int | None, scene) -> CameraRig:
    """The `CameraRig` of ``--rig`` (a preset, rig JSON file or capture store) with ``--width``/``--height``: presets
    default to the scene decoder's training image size."""
    from nfldm_sdk.cameras.rig import CameraRig

    if rig in RIG_PRESET_NAMES and not (width or height) and scene.decoder is not None:
        h, w = scene.decoder.config.image_size
        return CameraRig.preset(rig, w, h)
    return CameraRig.resolve(rig, width, height)


# ============================================================================================ render
@click.command("render")
@click.argument("scene", type=click.Path(exists=True, file_okay=False))
@click.option("--model", required=True, type=click.Path(exists=True, file_okay=False),
              help="The model bundle that generated SCENE (its stage-1 decoder renders).")
@click.option("--rig", default="capture", show_default=True,
              help=f"Rig preset ({', '.join(RIG_PRESET_NAMES)}), rig JSON file or capture store.")
@trajectory_options("straight")
@click.option("--out", required=True, type=click.Path(), help="Output folder (PNG + depth/alpha NPY + frames.json; with a "
              "semantic head also *_semantic.png, *_semantic_tags.png, *_semantic_confidence.npy) or video file (.mp4: "
              "cameras tiled per frame).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out (a frame folder or a video written by render).")
@click.option("--batch-size", type=click.IntRange(min=1), default=12, show_default=True,
              help="Views per decoder call (halved on OOM).")
@click.option("--width", type=click.IntRange(min=1), default=None,
              help="Image width, pixels (default: the rig's; presets: the decoder's).")
@click.option("--height", type=click.IntRange(min=1), default=None, help="Image height, pixels.")
@click.option("--device", default=default_device, show_default=DEVICE_DEFAULT_HELP, help="torch device.")
@click.option("--fps", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Video frame rate (default: --rate).")
@click.option("--with-range", is_flag=True, help="Also write ray-length NPYs (folders only).")
@click.option("--with-depth", is_flag=True, help="Videos: add an inverse-depth row.")
@click.option("--with-semantic", is_flag=True, help="Videos: add a row of semantic labels (CARLA palette).")
@click.option("--check-overlap/--no-check-overlap", default=True, show_default=True,
              help="Fail before rendering if a camera cannot see the scene box.")
@friendly_errors
def render(scene, model, rig, trajectory, length, speed, rate, radius, angle, offset, duration, out, overwrite,
           batch_size, width, height, device, fps, with_range, with_depth, with_semantic, check_overlap):
    """Render SCENE's RGB + depth (+ semantic labels with a semantic head) from a camera rig driven along a trajectory.

    SCENE may be a route folder (`nfldm generate-route`): the rig then drives the route's own drive (or
    --trajectory, in the world frame) and renders across the seams."""
    from nfldm_sdk.viz.export import VIDEO_SUFFIXES, write_frames
    from nfldm_sdk.sensors.trajectory_render import render_trajectory

    check_output(out, overwrite, marker="frames.json", file_suffixes=VIDEO_SUFFIXES)   # before anything is written
    route = None
    if is_route_folder(scene):                       # a route: world-frame drive, rendered across its seams
        route = load_route(scene, model, device)
        s = route.scenes[0]
    else:
        s = load_scene(scene, model, device)
    if not s.has_semantics:
        click.echo(semantics_unavailable_line())
        with_semantic = False
    cam_rig = scene_rig(rig, width, height, s)
    own_drive = click.get_current_context().get_parameter_source("trajectory") == click.core.ParameterSource.DEFAULT
    if route is not None and own_drive:
        traj = route.trajectory.resample(rate)       # a route renders along its own drive unless told otherwise
    else:
        traj = build_trajectory(trajectory, length, speed, rate, radius, angle, offset, duration)
    if route is not None:
        frames = route.render_trajectory(traj, cam_rig, batch_size=batch_size, with_range=with_range, device=device,
                                         progress=True, check_overlap=check_overlap)
    else:
        frames = render_trajectory(s, traj, cam_rig, batch_size=batch_size, with_range=with_range, device=device,
                                   check_overlap=check_overlap, progress=True)
    with staged_output(out) as tmp:    # the output appears, or replaces the old one, only once it is complete
        written = write_frames(frames, tmp, fps=fps or rate, with_depth=with_depth, with_semantic=with_semantic)
        if written.path.is_dir():
            cam_rig.save(written.path / "rig.json")
            traj.save(written.path / "trajectory.json")
    click.echo(f"{written.ticks} tick(s) × {len(cam_rig)} camera(s) ({cam_rig.width}x{cam_rig.height}) -> {out}")


# ============================================================================================ export
@click.command("export")
@click.argument("scene", type=click.Path(exists=True, file_okay=False))
@click.option("--model", type=click.Path(exists=True, file_okay=False), default=None,
              help="The model bundle that generated SCENE (needed for --points and for mesh colours).")
@click.option("--mesh", type=click.Path(dir_okay=False), default=None, help="Write a coloured mesh (.ply).")
@click.option("--points", type=click.Path(dir_okay=False), default=None, help="Write a coloured point cloud (.ply).")
@click.option("--voxels", type=click.Path(), default=None, help="Write the voxel field as a zarr v3 store.")
@click.option("--level", type=float, default=None, help="Mesh iso-level σ (1/m); default ln2 / voxel size.")
@click.option("--color-by", type=click.Choice(list(COLOR_BY_NAMES)), default="rgb", show_default=True,
              help="Colour the mesh/points by appearance or by semantic class (CARLA palette; needs a semantic head).")
@click.option("--device", default=default_device, show_default=DEVICE_DEFAULT_HELP, help="torch device.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --voxels store.")
@friendly_errors
def export(scene, model, mesh, points, voxels, level, color_by, device, overwrite):
    """Export SCENE as a mesh, a point cloud (with a label per point given a semantic head) and/or a voxel zarr store.

    SCENE may be a route folder (`nfldm generate-route`): --mesh and --points then cover the whole route in the world
    frame (each scene cut to its cell)."""
    from nfldm_sdk.models.semantic_head import require_semantic_head
    from nfldm_sdk.viz.export import export_mesh, export_points, export_voxels

    if not (mesh or points or voxels):
        raise click.UsageError("nothing to export: pass --mesh OUT.ply, --points OUT.ply and/or --voxels OUT.zarr")
    if (points or color_by == "class") and model is None:
        raise click.UsageError("--points and --color-by class render the scene: pass --model BUNDLE (the bundle that "
                               "generated it)")
    if is_route_folder(scene):
        return export_route(scene, model, mesh=mesh, points=points, voxels=voxels, level=level, color_by=color_by,
                            device=device)
    s = load_scene(scene, model, device)
    if color_by == "class":
        require_semantic_head(getattr(s.decoder, "semantic_head", None))      # before anything is written
    elif points and not s.has_semantics:
        click.echo(semantics_unavailable_line("points without labels"))
    if voxels:
        click.echo(f"voxels -> {export_voxels(s, voxels, overwrite=overwrite)}")
    if mesh:
        if model is None:
            click.echo("no --model: mesh coloured by height (pass --model for the decoded appearance)")
        colors = "class" if color_by == "class" else "auto"
        click.echo(f"mesh -> {export_mesh(s, mesh, level, colors=colors)}")
    if points:
        click.echo(f"points -> {export_points(s, points, color_by=color_by)}")


# ============================================================================================ view
def view_scene(scene: str, model: str | None, *, screenshot: str | None = None, rig: str | None = None,
               trajectory: str | None = None, traj_kwargs: dict | None = None, geometry: str = "mesh",
               level: float | None = None, width: int = 1280, height: int = 720, view: str = "above_behind",
               device: str = "cpu", frustum_every: int = 5, color_by: str = "rgb"):
    """Open (or screenshot) a scene: its mesh or point cloud (coloured by appearance, or by semantic class with
    ``color_by="class"``), the scene box, and optionally an ego trajectory with the rig's camera frustums every
    `frustum_every` ticks. Returns the screenshot path or None."""
    from nfldm_sdk.cameras.rig import CameraRig
    from nfldm_sdk.viz.viewer import show_scene

    s = load_scene(scene, model, device)
    if (geometry == "points" or color_by == "class") and s.decoder is None:
        raise click.UsageError(f"{'--geometry points' if geometry == 'points' else '--color-by class'} renders the "
                               "scene: pass --model BUNDLE")
    traj = None if trajectory is None else build_trajectory(trajectory, **(traj_kwargs or {}))
    cam_rig = None if rig is None else CameraRig.resolve(rig, 64, 64)
    return show_scene(s, trajectory=traj, rig=cam_rig, geometry=geometry, level=level, screenshot=screenshot,
                      width=width, height=height, view=view, device=device, frustum_every=frustum_every,
                      color_by=color_by)

