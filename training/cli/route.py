"""`nfldm generate-route`: a long route of generated scenes along a drive (outpainting, `nfldm_sdk.routes`).

    nfldm generate-route --model assets/models/default --town Town03 --length 500 --out out/route
    nfldm generate-route --model BUNDLE --trajectory drive/trajectory.json [--bev drive/map.npy] --out out/route

The drive is a trajectory file (world frame, `Trajectory.save`; e.g. ``sim_bridge route``'s) or, with ``--town``, a
drive of ``--length`` metres through a built-in town (`sim_bridge.route.town_route`; its ground-truth map conditions
a BEV-conditioned bundle unless ``--no-map``). Scenes are written into ``--out`` as they are made
(`nfldm_sdk.routes.neural_route`): an interrupted run continues when rerun with the same arguments. The command lives
in nfldm_training because ``--town`` needs `sim_bridge`, which nfldm_sdk must not import.
"""
from __future__ import annotations

from pathlib import Path

import click

from nfldm_sdk.cli.names import DEVICE_DEFAULT_HELP, SAMPLER_NAMES, default_device
from nfldm_sdk.cli.render import friendly_errors

__all__ = ["generate_route_command"]


@click.command("generate-route")
@click.option("--model", required=True, type=click.Path(exists=True, file_okay=False), help="Model bundle folder.")
@click.option("--trajectory", "trajectory_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The drive: a trajectory JSON in the world frame (Trajectory.save, `sim_bridge route`).")
@click.option("--town", default=None, help="Instead of --trajectory: drive through this built-in town (e.g. Town03).")
@click.option("--length", type=float, default=500.0, show_default=True, help="With --town: metres to drive.")
@click.option("--route-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --town: seed of the drive's start and turns (`sim_bridge route --seed`).")
@click.option("--bev", "bev_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A world-frame route map (map.npy/map.png with map.json) to condition on (a BEV-conditioned bundle).")
@click.option("--map/--no-map", "use_map", default=True, show_default=True,
              help="With --town: condition on the town's ground-truth map (when the bundle is BEV-conditioned).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the first scene; scene k uses seed + k.")
@click.option("--overlap", type=float, default=12.0, show_default=True,
              help="Route consecutive scenes share (held identical), metres.")
@click.option("--reach", type=float, default=None,
              help="How far ahead of its anchor a scene is trusted, metres (default 12, or the box's front).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Denoising steps per level (default: the bundle's).")
@click.option("--sampler", type=click.Choice(list(SAMPLER_NAMES)), default=None, help="Sampler (default: the bundle's).")
@click.option("--guidance-scale", type=float, default=1.0, show_default=True, help="Classifier-free guidance with a map.")
@click.option("--feather/--no-feather", default=True, show_default=True,
              help="Cross-fade each scene's field into its predecessor's over their overlap.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Route folder (written scene by scene).")
@click.option("--overwrite", is_flag=True, help="Replace a different route already in OUT.")
@click.option("--device", default=default_device, show_default=DEVICE_DEFAULT_HELP, help="torch device.")
@friendly_errors
def generate_route_command(model, trajectory_path, town, length, route_seed, bev_path, use_map, seed, overlap, reach, steps,
                           sampler, guidance_scale, feather, out, overwrite, device):
    """Generate a route of scenes along a drive; writes OUT/route.json, OUT/scenes/NNNN/ (resumable)."""
    # start-up time: torch, the SDK's pipelines and sim_bridge's town load only when the command runs
    import time

    from nfldm_sdk.cameras.trajectory import Trajectory
    from nfldm_sdk.labels.bev_map import BEVMap
    from nfldm_sdk.pipelines.generator import SceneGenerator
    from nfldm_sdk.routes.outpaint import generate_route

    if (trajectory_path is None) == (town is None):
        raise click.UsageError("give the drive as --trajectory FILE or as --town NAME --length METRES (one of them)")
    bev = BEVMap.load(bev_path) if bev_path else None
    gen = SceneGenerator.from_pretrained(model, device=device)
    if town is not None:
        from sim_bridge.errors import SimBridgeError
        from sim_bridge.route import route_bev, town_route

        try:
            drive = town_route(town, length, seed=route_seed)
            tags, bounds = route_bev(town, drive) if bev is None and use_map and gen.conditional else (None, None)
        except SimBridgeError as e:
            raise click.ClickException(str(e)) from e
        trajectory = Trajectory(drive.timestamps, drive.ego_to_world)
        if tags is not None:
            bev = BEVMap(tags, bounds=bounds, name=f"{town} route {route_seed}",
                         source=f"sim_bridge route --town {town} --length {length:g} --seed {route_seed}")
    else:
        trajectory = Trajectory.load(trajectory_path)
    t0 = time.perf_counter()
    route = generate_route(gen, trajectory, bev=bev, seed=seed, overlap_m=overlap, reach_m=reach, steps=steps, sampler=sampler,
                           guidance_scale=guidance_scale, feather=feather, out=Path(out), overwrite=overwrite, progress=True)
    dt = time.perf_counter() - t0
    how = "conditioned on the route map" if bev is not None else "unconditional"
    click.echo(f"{len(route)} scenes along {route.plan.length_m:.0f} m ({how}) in {out}: {dt:.0f} s this run, "
               f"{route.plan.length_m / max(dt, 1e-9) * 60:.0f} m/min")
