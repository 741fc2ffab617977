"""The `sim_bridge` command line: collect, info, validate, export-nuscenes, bev, route, towns, weathers, rigs, bench.

`sim_bridge`'s own errors (`sim_bridge.errors.SimBridgeError` and everything derived from it: StoreError, RigError,
the CARLA errors, ...) end every command as ``Error: <message>`` and exit status 1 (a command's own documented exit
codes, e.g. `validate`'s, are kept); any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click
from click.core import ParameterSource

from sim_bridge.bench import format_capture_bench, run_capture_bench
from sim_bridge.errors import SimBridgeError
from sim_bridge.lidar import lidar_presets_text
from sim_bridge.rig import DEFAULT_RIG, RIG_PRESETS, canonical_rig_name, rig_presets_text
from sim_bridge.towns import TOWNS, check_town
from sim_bridge.weather import WEATHER_PRESETS, check_weather

# Each command imports what it runs inside its function (start-up time: `sim_bridge --help` and argument errors
# load no zarr, Open3D or numba).


def error_message(error: BaseException) -> str:
    """`error` as the CLI shows it: its first line, then any further lines (a store's problem list) indented."""
    first, *rest = (str(error) or type(error).__name__).splitlines()
    return "\n".join([first, *(f"  {line}" for line in rest)])


class _Group(click.Group):
    """The `sim_bridge` group: a `SimBridgeError` from any command becomes one ``Error:`` message, exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SimBridgeError as e:
            raise click.ClickException(error_message(e)) from e


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nfldm")
def main():
    """sim_bridge — capture posed RGB, depth and semantics from CARLA or the built-in simulator into zarr stores."""


@main.command()
@click.option("--town", default="Town03", show_default=True, help="CARLA town name (see `sim_bridge towns`).")
@click.option("--out", required=True, help="Store path or fsspec URL (e.g. data/town03.zarr, s3://bucket/x.zarr).")
@click.option("--backend", type=click.Choice(["auto", "carla", "procedural"]), default="auto", show_default=True,
              help="auto: CARLA when a server answers at --host/--port, otherwise the built-in simulator.")
@click.option("--episodes", type=click.IntRange(min=1), default=1, show_default=True, help="Episodes (spawn points / routes).")
@click.option("--frames", type=click.IntRange(min=1), default=100, show_default=True, help="Frames per episode.")
@click.option("--fps", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="Simulation ticks per second.")
@click.option("--width", type=click.IntRange(min=8), default=None,
              help="Image width (pixels). Default: 256 for a preset, a rig file's own width.")
@click.option("--height", type=click.IntRange(min=8), default=None,
              help="Image height (pixels). Default: 256 for a preset, a rig file's own height; one of --width/--height "
                   "alone keeps a rig file's aspect ratio, a size that changes it is an error.")
@click.option("--rig", default=DEFAULT_RIG, show_default=True, help=f"Rig preset: {rig_presets_text()}; or a rig JSON file.")
@click.option("--weather", default="ClearNoon", show_default=True, help="CARLA weather preset (see `sim_bridge weathers`).")
@click.option("--lidar", default=None, metavar="PRESET|FILE",
              help=f"Also capture a spinning LiDAR: a preset ({lidar_presets_text()}) or a LiDAR JSON file. Default: none.")
@click.option("--seed", type=int, default=0, show_default=True, help="Run seed (episodes derive theirs from it).")
@click.option("--host", default="127.0.0.1", show_default=True, help="CARLA server host.")
@click.option("--port", type=int, default=2000, show_default=True, help="CARLA server RPC port.")
@click.option("--tm-port", type=int, default=8000, show_default=True, help="CARLA Traffic Manager port.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="CARLA connection timeout (s).")
@click.option("--resume", is_flag=True, help="Continue an interrupted store at --out with its recorded settings.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store at --out.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def collect(ctx, quiet, **options):
    """Capture episodes of a multi-camera drive into a zarr capture store."""
    from sim_bridge.collect import CollectConfig, collect as run_collect

    if options["resume"] and options["overwrite"]:
        raise click.UsageError("--resume and --overwrite exclude each other")
    explicit = {name for name in options if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    cfg = CollectConfig(**options)
    try:
        if not options["resume"]:
            check_town(cfg.town)
            check_weather(cfg.weather)
        result = run_collect(cfg, explicitly_set=explicit, progress=not quiet, log=lambda m: click.echo(m, err=True))
    except KeyboardInterrupt:
        click.echo(f"Interrupted. Committed frames are kept; continue with: sim_bridge collect --out {cfg.out} --resume", err=True)
        sys.exit(130)
    except (FileExistsError, FileNotFoundError, ValueError, RuntimeError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"Wrote {result.frames_written} frames ({result.frames_total} in the store, {result.episodes} episode(s), "
               f"{result.backend} backend, {result.frames_per_s:.1f} frames/s) to {result.out}")


@main.command()
@click.argument("store")
def info(store):
    """Summary table of a capture store."""
    from rich.console import Console

    from sim_bridge.store.reader import open_store
    from sim_bridge.store.summary import store_summary

    try:
        s = open_store(store)
    except (FileNotFoundError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    Console().print(store_summary(s))


@main.command()
@click.argument("store")
@click.option("--shallow", is_flag=True, help="Skip decoding every chunk (metadata, shapes and poses only).")
def validate(store, shallow):
    """Check a capture store; prints one line per problem (and per note, prefixed "note:").

    \b
    Exit status:
      0  valid and complete
      1  problems found (each line names the episode/array and the fix)
      2  usage error (bad arguments)
      3  valid but incomplete (an interrupted collection): resume it with
         `sim_bridge collect --out STORE --resume`
    """
    from sim_bridge.store.validate import EXIT_VALID, validate_report

    report = validate_report(store, deep=not shallow)
    for p in report.problems:
        click.echo(p)
    for n in report.notes:
        click.echo(f"note: {n}")
    if report.incomplete:
        click.echo(report.incomplete_line())
    if report.problems:
        click.echo(f"{store}: {len(report.problems)} problem(s)", err=True)
    elif report.exit_code == EXIT_VALID:
        click.echo(f"{store}: valid")
    if report.exit_code != EXIT_VALID:
        sys.exit(report.exit_code)


@main.command("export-nuscenes")
@click.argument("store")
@click.option("--out", required=True, help="Dataset folder to write (the nuScenes devkit's dataroot).")
@click.option("--episodes", default=None, metavar="LIST",
              help="Episodes to export: indices or names, comma-separated (0,2 or episode_0001). Default: all.")
@click.option("--version", "version", default="v1.0-nfldm", show_default=True,
              help="Folder of the tables (the devkit's version), e.g. v1.0-mini.")
@click.option("--image-format", type=click.Choice(["jpg", "png"]), default="jpg", show_default=True,
              help="Camera images: jpg (nuScenes' own, lossy) or png (lossless).")
@click.option("--overwrite", is_flag=True, help="Replace an existing export at --out.")
def export_nuscenes(store, out, episodes, version, image_format, overwrite):
    """Export a capture store as a nuScenes-format dataset (one scene per episode, one sample per frame; LiDAR
    scans when the store has them; depth and semantics as extra files)."""
    from sim_bridge.export.capture import export_capture

    try:
        summary = export_capture(store, out, episodes=episodes, version=version, overwrite=overwrite,
                                 image_format=image_format, log=lambda m: click.echo(m, err=True))
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"Wrote {len(summary.scenes)} scene(s), {summary.samples} sample(s), {summary.sample_data} sample_data "
               f"record(s){' with LiDAR' if summary.lidar else ''} to {summary.out} (load it with "
               f"NuScenes(version={summary.version!r}, dataroot={str(summary.out)!r}))")


@main.command()
@click.option("--town", default="Town03", show_default=True, help="CARLA town name (see `sim_bridge towns`).")
@click.option("--at", "pose", nargs=3, type=float, required=True, metavar="X Y YAW",
              help="The ego's CARLA pose: x, y metres in CARLA's left-handed world (y to the right) and yaw degrees "
                   "(from +x towards +y, clockwise seen from above).")
@click.option("--out", required=True, help="map.png (CARLA palette, x right / y up) or map.npy; map.json beside it "
                                           "holds the bounds (what nfldm_sdk's BEVMap.load reads).")
@click.option("--size", nargs=2, type=click.IntRange(min=1), default=(64, 64), show_default=True, metavar="Y X",
              help="Cells: Y rows (along the ego's y, from its right) and X columns (along x, from behind).")
@click.option("--extent", nargs=4, type=float, default=(-16.0, -32.0, 48.0, 32.0), show_default=True,
              metavar="XMIN YMIN XMAX YMAX", help="The box in the ego frame (x forward, y left), metres.")
@click.option("--z-min", type=float, default=-2.0, show_default=True,
              help="Lowest height a hit may have, metres above the ego's ground (lower: unobserved, 255).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="World seed of the procedural town (a capture store's seed, see `sim_bridge info`).")
@click.option("--samples", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Rays per cell side; the highest hit labels the cell.")
@click.option("--overwrite", is_flag=True, help="Replace an existing map at --out.")
def bev(town, pose, out, size, extent, z_min, seed, samples, overwrite):
    """Ground-truth bird's-eye label map of a built-in town around an ego pose (rays cast straight down)."""
    from sim_bridge.bev import tag_fractions, town_bev, write_bev
    from sim_bridge.semantics import TAG_NAMES

    box = ((extent[0], extent[1]), (extent[2], extent[3]))
    tags = town_bev(town, *pose, grid_yx=size, box=box, z_min=z_min, seed=seed, samples=samples)
    x, y, yaw = pose
    source = f"sim_bridge bev --town {town} --seed {seed} --at {x:g} {y:g} {yaw:g}"
    written = write_bev(out, tags, box, name=f"{town} at ({x:g}, {y:g}, {yaw:g})", source=source,
                        extra={"town": town, "seed": seed, "carla_pose": [x, y, yaw]}, overwrite=overwrite)
    shares = ", ".join(f"{TAG_NAMES.get(t, 'unobserved')} {f:.0%}" for t, f in tag_fractions(tags).items())
    click.echo(f"Wrote {written} (+ {written.with_suffix('.json').name}): {size[0]}x{size[1]} cells over x "
               f"[{extent[0]:g}, {extent[2]:g}], y [{extent[1]:g}, {extent[3]:g}] m of the ego frame; {shares}")


@main.command()
@click.option("--town", default="Town03", show_default=True, help="CARLA town name (see `sim_bridge towns`).")
@click.option("--length", type=float, default=500.0, show_default=True, help="Metres to drive along the lanes.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Route seed: where the drive starts and which road it takes at each junction (an episode's seed).")
@click.option("--world-seed", type=int, default=0, show_default=True,
              help="World seed of the procedural town (a capture store's seed, see `sim_bridge info`).")
@click.option("--speed", type=float, default=10.0, show_default=True, help="Constant speed, m/s.")
@click.option("--rate", type=float, default=10.0, show_default=True, help="Poses per second.")
@click.option("--out", required=True, help="Folder to write: trajectory.json, map.npy, map.png, map.json.")
@click.option("--margin", type=float, default=40.0, show_default=True, help="Map beyond the route on every side, m.")
@click.option("--cell", type=float, default=1.0, show_default=True, help="Map cell size, m.")
@click.option("--no-map", is_flag=True, help="Write the trajectory only.")
@click.option("--overwrite", is_flag=True, help="Replace the route files in an existing --out folder.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def route(town, length, seed, world_seed, speed, rate, out, margin, cell, no_map, overwrite, quiet):
    """A drive of --length metres through a built-in town (its simulator's lane keeping and turns) as a trajectory
    file, with the town's ground-truth map around it in world coordinates."""
    import numpy as np

    from sim_bridge.bev import tag_fractions
    from sim_bridge.route import DRIVABLE_TAGS, check_out_dir, route_bev, tags_under, town_route, write_route
    from sim_bridge.semantics import TAG_NAMES

    out_dir = check_out_dir(out, overwrite)   # before any work: an existing folder is refused at once
    r = town_route(town, length, seed=seed, speed_mps=speed, rate_hz=rate, world_seed=world_seed)
    bev = None
    if not no_map:
        if not quiet:
            click.echo(f"Casting the map of {town} (world seed {world_seed}) around the route ...", err=True)
        bev = route_bev(town, r, margin_m=margin, cell_m=cell, progress=not quiet)
    source = (f"sim_bridge route --town {town} --length {length:g} --seed {seed} --world-seed {world_seed} "
              f"--speed {speed:g} --rate {rate:g}" + ("" if no_map else f" --margin {margin:g} --cell {cell:g}"))
    written = write_route(out_dir, r, bev, overwrite=overwrite, source=source)
    click.echo(f"Wrote {written[0]}: {len(r)} poses over {r.timestamps[-1]:g} s, {r.length_m:g} m along the lanes "
               f"of {town} (seed {seed}, world seed {world_seed}; {speed:g} m/s, {rate:g} Hz; path {r.path_length:.1f} m)")
    if bev is not None:
        tags, ((x0, y0), (x1, y1)) = bev
        shares = ", ".join(f"{TAG_NAMES.get(t, 'unobserved')} {f:.0%}" for t, f in tag_fractions(tags).items())
        on_road = float(np.isin(tags_under(tags, bev[1], r.positions[:, :2]), DRIVABLE_TAGS).mean())
        click.echo(f"Wrote {written[1]}, {written[2].name} (+ map.json): {tags.shape[0]}x{tags.shape[1]} cells of "
                   f"{cell:g} m over world x [{x0:g}, {x1:g}], y [{y0:g}, {y1:g}] m; {shares}; ego on road at "
                   f"{on_road:.1%} of poses")


@main.command()
def towns():
    """List the towns (CARLA names; the built-in simulator builds each its own way)."""
    for name, description in TOWNS.items():
        click.echo(f"{name:10s} {description}")


@main.command()
def weathers():
    """List the weather presets (CARLA's names)."""
    for name in WEATHER_PRESETS:
        click.echo(name)


@main.command()
@click.option("--export", "export_dir", default=None, help="Write every preset as <name>.json into this folder.")
def rigs(export_dir):
    """List the rig presets (or export them as JSON files to edit)."""
    for name, make in RIG_PRESETS.items():
        rig = make(256, 256)
        first = canonical_rig_name(name)
        described = f"{len(rig)} camera(s): {', '.join(rig.names)}" if first == name else f"another name of {first}"
        click.echo(f"{name:9s} {described}")
        if export_dir:
            Path(export_dir).mkdir(parents=True, exist_ok=True)
            rig.save(Path(export_dir) / f"{name}.json")


@main.command()
@click.option("--town", default="Town03", show_default=True)
@click.option("--width", type=int, default=256, show_default=True)
@click.option("--height", type=int, default=256, show_default=True)
@click.option("--frames", type=int, default=30, show_default=True, help="Ticks to time (after one warm-up tick).")
@click.option("--rig", default=DEFAULT_RIG, show_default=True, help=f"Rig preset: {rig_presets_text()}; or a rig JSON file.")
def bench(town, width, height, frames, rig):
    """Camera-frames per second of the procedural backend (and the raw raycaster in the same run)."""
    click.echo(format_capture_bench(run_capture_bench(town=town, width=width, height=height, frames=frames, rig=rig)))


if __name__ == "__main__":
    main()
