"""`nfldm generate-route`: a drive through a built-in town conditioned on its map, a trajectory file, resumption
through the same command, and its refusals (one `Error:` line, nothing written)."""
import json

import pytest
from click.testing import CliRunner

from nfldm_sdk.cameras.trajectory import Trajectory
from nfldm_sdk.cli.main import main as cli
from nfldm_sdk.routes.neural_route import NeuralRoute

pytestmark = pytest.mark.usefixtures("one_thread_module")


def test_generate_route_through_a_town_with_its_map(tiny_conditional_bundle, tmp_path):
    out = tmp_path / "route"
    args = ["generate-route", "--model", str(tiny_conditional_bundle), "--town", "Town01", "--length", "90",
            "--steps", "2", "--guidance-scale", "2", "--out", str(out), "--device", "cpu"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    route = NeuralRoute.load(out, decoder=tiny_conditional_bundle)
    assert f"{len(route)} scenes along 90 m (conditioned on the route map)" in r.output
    assert len(route) >= 6 and route.bev is not None and route.settings["conditioned"]     # 16 m apart, or less
    (xmin, ymin), (xmax, ymax) = route.bev.bounds
    pos = route.trajectory.positions
    assert (pos[:, 0] > xmin).all() and (pos[:, 0] < xmax).all() and (pos[:, 1] > ymin).all() and (pos[:, 1] < ymax).all()
    meta = json.loads((out / "route.json").read_text())
    meta["scenes"], meta["complete"] = meta["scenes"][:1], False
    (out / "route.json").write_text(json.dumps(meta))
    again = CliRunner().invoke(cli, args)                                    # resumes after the first scene
    assert again.exit_code == 0, again.output
    assert NeuralRoute.load(out).scenes[2].field.density.equal(route.scenes[2].field.density)


def test_generate_route_from_a_trajectory_file_and_its_refusals(tiny_bundle, tmp_path):
    traj = Trajectory.straight(length_m=50.0)
    traj.save(tmp_path / "t.json")
    out = tmp_path / "r"
    base = ["generate-route", "--model", str(tiny_bundle), "--steps", "2", "--device", "cpu"]
    r = CliRunner().invoke(cli, [*base, "--trajectory", str(tmp_path / "t.json"), "--out", str(out)])
    assert r.exit_code == 0, r.output and "2 scenes along 50 m (unconditional)" in r.output
    r = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "x")])
    assert r.exit_code != 0 and "--trajectory FILE or as --town" in r.output
    r = CliRunner().invoke(cli, [*base, "--town", "Town99", "--out", str(tmp_path / "y")])
    assert r.exit_code == 1 and "Town99" in r.output and not (tmp_path / "y").exists()
    r = CliRunner().invoke(cli, [*base, "--trajectory", str(tmp_path / "t.json"), "--seed", "5", "--out", str(out)])
    assert r.exit_code == 1 and "already holds a route" in r.output


def test_render_and_view_a_route_folder(tiny_bundle, tmp_path):
    out = tmp_path / "r"
    traj = Trajectory.straight(length_m=60.0)
    traj.save(tmp_path / "t.json")
    base = ["--model", str(tiny_bundle), "--device", "cpu"]
    assert CliRunner().invoke(cli, ["generate-route", *base, "--trajectory", str(tmp_path / "t.json"), "--steps", "2",
                                    "--out", str(out)]).exit_code == 0
    frames = tmp_path / "frames"
    r = CliRunner().invoke(cli, ["render", str(out), *base, "--rate", "2", "--out", str(frames)])
    assert r.exit_code == 0, r.output
    meta = json.loads((frames / "frames.json").read_text())
    assert len(Trajectory.load(frames / "trajectory.json")) == 13          # the route's own 60 m drive at 2 Hz
    assert meta                                                            # frames were written
    shot = tmp_path / "route.png"
    r = CliRunner().invoke(cli, ["view", str(out), *base, "--screenshot", str(shot), "--size", "320", "240"])
    assert r.exit_code == 0, r.output
    assert shot.is_file() and shot.stat().st_size > 1000


def test_export_a_route_as_a_mesh_and_as_a_nuscenes_scene(tiny_bundle, tmp_path):
    nuscenes = pytest.importorskip("nuscenes.nuscenes", reason="the nuScenes devkit is not installed")
    traj = Trajectory.straight(length_m=50.0)
    traj.save(tmp_path / "t.json")
    route = tmp_path / "route"
    base = ["--model", str(tiny_bundle), "--device", "cpu"]
    assert CliRunner().invoke(cli, ["generate-route", *base, "--trajectory", str(tmp_path / "t.json"), "--steps", "2",
                                    "--out", str(route)]).exit_code == 0
    r = CliRunner().invoke(cli, ["export", str(route), *base, "--mesh", str(tmp_path / "route.ply")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "route.ply").stat().st_size > 0
    r = CliRunner().invoke(cli, ["export", str(route), *base, "--voxels", str(tmp_path / "v.zarr")])
    assert r.exit_code == 2 and "one voxel grid per scene" in r.output
    out = tmp_path / "ns"
    r = CliRunner().invoke(cli, ["export-nuscenes", str(route), *base, "--rig", "front", "--rate", "2",
                                 "--out", str(out), "--version", "v1.0-mini"])
    assert r.exit_code == 0, r.output
    ns = nuscenes.NuScenes(version="v1.0-mini", dataroot=str(out), verbose=False)
    assert len(ns.scene) == 1 and ns.scene[0]["nbr_samples"] == 11              # the route's 50 m drive at 2 Hz
    r = CliRunner().invoke(cli, ["export-nuscenes", str(route), *base, "--rig", "front", "--rate", "2", "--lidar",
                                 "nuscenes32", "--out", str(tmp_path / "ns2"), "--version", "v1.0-mini"])
    assert r.exit_code == 0, r.output                                          # the route's LiDAR (routes.lidar)
    ns = nuscenes.NuScenes(version="v1.0-mini", dataroot=str(tmp_path / "ns2"), verbose=False)
    sample = ns.get("sample", ns.scene[0]["first_sample_token"])
    lidar = ns.get("sample_data", sample["data"]["LIDAR_TOP"])
    from nuscenes.utils.data_classes import LidarPointCloud

    points = LidarPointCloud.from_file(str(tmp_path / "ns2" / lidar["filename"]))
    assert points.points.shape[1] > 100
