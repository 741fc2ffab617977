"""`nfldm export-nuscenes`: generated scenes driven through by a rig (and a LiDAR) as a nuScenes-format dataset.

    nfldm export-nuscenes out/scene_000000 --model assets/models/default --rig nuscenes --trajectory straight \\
        --length 30 --speed 10 --rate 10 --lidar nuscenes32 --out out/nusc      # NuScenes("v1.0-nfldm", "out/nusc")

One nuScenes scene per SCENE folder (``nfldm generate``), one sample per trajectory tick: per camera the rendered
RGB, its depth (``.npy``) and, with a semantic head, its CARLA tags (``.png``) as extras; with ``--lidar`` (a preset
``nuscenes32``/``hdl64``/``os128`` or a LiDAR JSON file) one ``LIDAR_TOP`` scan per tick
(`nfldm_sdk.sensors.lidar.render_lidar`: points in the sensor frame, ring = the beam's row, intensity 1.0; with a
semantic head also nuScenes-lidarseg labels). The writer is `sim_bridge.export.nuscenes` (this module lives in
nfldm_training because it uses both the SDK and sim_bridge).

Mapping: scene name = the scene id (``<bundle_hash[:12]>-scene_<seed>``, `nfldm_sdk.sensors.frames.scene_identifier`);
``ego_pose`` = the trajectory's ``ego_to_world`` ("global" is the scene frame), ``calibrated_sensor`` = the rig's
``cam_to_ego`` / the LiDAR's ``lidar_to_ego``; timestamps = ``round(timestamp · 1e6)`` of the trajectory (from the
Unix epoch), scene k offset by ``k`` times `sim_bridge.export.nuscenes_tables.scene_spacing_us` so scenes do not
overlap. Every check (output folder, LiDAR, scenes, rig, trajectory, camera overlap) runs before anything is
written, and the dataset appears at ``--out`` only once complete.
"""
from __future__ import annotations

from pathlib import Path

import click

from nfldm_sdk.cli.main import error_message
from nfldm_sdk.cli.names import DEVICE_DEFAULT_HELP, RIG_PRESET_NAMES, default_device
from nfldm_sdk.cli.route_views import is_route_folder, load_route
from nfldm_sdk.cli.render import (build_trajectory, friendly_errors, load_scene, scene_rig,
                                  semantics_unavailable_line, trajectory_options)

__all__ = ["export_nuscenes", "generated_samples"]


def generated_samples(frames, scans, start_us: int):
    """nuScenes samples (`sim_bridge.export.nuscenes.Sample`) of a rendered drive, lazily, one per tick.

    Args:
        frames: per tick the list of `nfldm_sdk.sensors.frames.Frame` s (`render_trajectory`).
        scans: per tick a `nfldm_sdk.sensors.lidar.LidarScan` (`render_lidar`), or None without a LiDAR.
        start_us: microseconds added to every timestamp (the scene's offset in the export).
    Yields:
        one `Sample` per tick: camera readings with the frames' poses, intrinsics, camera models, depth and labels;
        the scan's points, ring (row of each return in the range image, as `LidarScan.points` are ordered), tags.
    """
    # start-up time: numpy and the writer load only when the command runs
    import numpy as np

    from sim_bridge.export.nuscenes import CameraReading, LidarReading, Sample
    from sim_bridge.export.nuscenes_tables import channel_name

    scans = iter(scans) if scans is not None else None
    for tick in frames:
        cams = [CameraReading(channel=channel_name(f.camera), rgb=f.rgb, K=f.K, cam_to_ego=f.cam_to_ego,
                              ego_to_world=f.ego_to_world, timestamp_us=start_us + f.timestamp_us, depth=f.depth,
                              semantic=f.semantic, model=f.camera_model, distortion=f.distortion) for f in tick]
        lidar = None
        if scans is not None:
            scan = next(scans)
            lidar = LidarReading(points=scan.points, ring=np.nonzero(np.isfinite(scan.ranges))[0], tags=scan.tags,
                                 lidar_to_ego=scan.lidar_to_ego, ego_to_world=scan.ego_to_world,
                                 timestamp_us=start_us + scan.timestamp_us)
        yield Sample(timestamp_us=start_us + tick[0].timestamp_us, cameras=cams, lidar=lidar)


@click.command("export-nuscenes")
@click.argument("scenes", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--model", required=True, type=click.Path(exists=True, file_okay=False),
              help="The model bundle that generated the scenes (its stage-1 decoder renders).")
@click.option("--rig", default="nuscenes", show_default=True,
              help=f"Rig preset ({', '.join(RIG_PRESET_NAMES)}), rig JSON file or capture store.")
@trajectory_options("straight")
@click.option("--lidar", default=None, metavar="PRESET|FILE",
              help="Also scan a LiDAR: a preset (nuscenes32, hdl64, os128) or a LiDAR JSON file. Default: none.")
@click.option("--out", required=True, type=click.Path(), help="Dataset folder to write (the devkit's dataroot).")
@click.option("--overwrite", is_flag=True, help="Replace an existing export at --out.")
@click.option("--version", "version", default="v1.0-nfldm", show_default=True,
              help="Folder of the tables (the devkit's version), e.g. v1.0-mini.")
@click.option("--image-format", type=click.Choice(["jpg", "png"]), default="jpg", show_default=True,
              help="Camera images: jpg (nuScenes' own, lossy) or png (lossless).")
@click.option("--batch-size", type=click.IntRange(min=1), default=12, show_default=True,
              help="Views per decoder call (halved on OOM).")
@click.option("--width", type=click.IntRange(min=1), default=None,
              help="Image width, pixels (default: the rig's; presets: the decoder's).")
@click.option("--height", type=click.IntRange(min=1), default=None, help="Image height, pixels.")
@click.option("--device", default=default_device, show_default=DEVICE_DEFAULT_HELP, help="torch device.")
@click.option("--check-overlap/--no-check-overlap", default=True, show_default=True,
              help="Fail before rendering if a camera cannot see the scene box.")
@friendly_errors
def export_nuscenes(scenes, model, rig, trajectory, length, speed, rate, radius, angle, offset, duration, lidar, out,
                    overwrite, version, image_format, batch_size, width, height, device, check_overlap):
    """Render generated SCENES along a trajectory (cameras, optional LiDAR) into a nuScenes-format dataset."""
    # start-up time: the SDK's sensors (torch) and the writer load only when the command runs
    from nfldm_sdk.sensors.frames import scene_id_of
    from nfldm_sdk.sensors.lidar_spec import LidarSpec
    from nfldm_sdk.sensors.trajectory_render import render_trajectory
    from sim_bridge.errors import SimBridgeError
    from sim_bridge.export.nuscenes import NuScenesWriter, check_export_output
    from sim_bridge.export.nuscenes_tables import channel_name, check_scene_name, check_version, scene_spacing_us

    try:
        check_version(version)
        check_export_output(out, overwrite)                                  # before anything is rendered
        spec = LidarSpec.resolve(lidar) if lidar is not None else None
        traj = build_trajectory(trajectory, length, speed, rate, radius, angle, offset, duration)
        loaded, names, routes = [], [], {}
        own_drive = click.get_current_context().get_parameter_source("trajectory") == click.core.ParameterSource.DEFAULT
        for folder in scenes:
            if is_route_folder(folder):                  # a route: one nuScenes scene along its own drive
                route = load_route(folder, model, device)
                s = route.scenes[0]
                name = check_scene_name(Path(folder).name)
                routes[name] = (route, route.trajectory.resample(rate) if own_drive else traj)
            else:
                s = load_scene(folder, model, device)
                name = check_scene_name(scene_id_of(s) or Path(folder).name)
            if name in names:
                raise click.UsageError(f"scene {name} is given twice: pass each scene folder once")
            loaded.append(s)
            names.append(name)
        cam_rig = scene_rig(rig, width, height, loaded[0])
        channels = [channel_name(n) for n in cam_rig.names]
        if len(set(channels)) != len(channels):
            raise click.UsageError(f"the rig's cameras {cam_rig.names} give the nuScenes channels {channels}, which "
                                   "repeat: rename the cameras")
        if not all(s.has_semantics for s in loaded):
            click.echo(semantics_unavailable_line("RGB and depth without labels"))
        spacing = scene_spacing_us(max([traj.duration] + [d.duration for _, d in routes.values()]))
        ticks = {n: len(routes[n][1]) if n in routes else len(traj) for n in names}
        drives = []                                   # the overlap and LiDAR checks run here, before writing
        for k, (name, s) in enumerate(zip(names, loaded)):
            if name in routes:
                route, drive = routes[name]
                frames = route.render_trajectory(drive, cam_rig, batch_size=batch_size, device=device,
                                                 check_overlap=check_overlap)
                scans = route.render_lidar(drive, spec, device=device) if spec is not None else None
                drives.append(generated_samples(frames, scans, k * spacing))
                continue
            frames = render_trajectory(s, traj, cam_rig, batch_size=batch_size, device=device,
                                       check_overlap=check_overlap)
            scans = s.render_lidar(traj, spec, device=device) if spec is not None else None
            drives.append(generated_samples(frames, scans, k * spacing))
        info = {"kind": "generated scenes", "model_bundle": loaded[0].bundle_hash,
                "scenes": [{"name": n, "seed": s.seed, "bundle_hash": s.bundle_hash} for n, s in zip(names, loaded)],
                "rig": cam_rig.to_list(), "trajectory": traj.to_json(),
                "lidar": None if spec is None else spec.to_json()}
        with NuScenesWriter(out, version, source="generated|" + ",".join(names), source_info=info,
                            overwrite=overwrite, image_format=image_format) as writer:
            for name, s, drive in zip(names, loaded, drives):
                what = f"generated route of {len(routes[name][0])} scenes" if name in routes else "generated scene"
                writer.add_scene(name, drive, location="nfldm-generated", date_captured="1970-01-01",
                                 logfile=name, description=f"{what} (seed {s.seed}, bundle "
                                                           f"{s.bundle_hash[:12]}), {len(cam_rig)} camera(s), "
                                                           f"{ticks[name]} tick(s){', LiDAR ' + spec.name if spec else ''}")
                click.echo(f"{name}: {ticks[name]} sample(s)", err=True)
    except SimBridgeError as e:
        raise click.ClickException(error_message(e)) from e
    click.echo(f"Wrote {len(names)} scene(s) × {len(traj)} sample(s), {len(cam_rig)} camera(s)"
               f"{', LiDAR ' + spec.name if spec else ''} to {out} (load it with NuScenes(version={version!r}, "
               f"dataroot={str(out)!r}))")
