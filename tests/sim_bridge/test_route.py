"""`sim_bridge.route`: long drives through a built-in town (`town_route`) and their ground-truth world map
(`route_bev`) — length, spacing, rigid poses and seeds; the same path an episode's ego drives; the ego on the road;
the map in the world frame (against `TownBEV.at_ego` at a pose); the files read by the SDK
(`Trajectory.load`, `BEVMap.load`); the `sim_bridge route` command and its errors. Town01, 200 m (~1 s each)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from nfldm_sdk.cameras import trajectory as sdk_trajectory
from nfldm_sdk.cameras.trajectory import Trajectory
from nfldm_sdk.labels.bev_map import BEVMap
from sim_bridge.bev import BEV_BOX_XY, BEV_GRID_YX, TownBEV
from sim_bridge.cli import main
from sim_bridge.rigid import rigid_problems
from sim_bridge.route import (DRIVABLE_TAGS, TRAJECTORY_CONVENTIONS, TRAJECTORY_FORMAT, TRAJECTORY_FORMAT_VERSION,
                              RouteError, TownRoute, lane_route, max_route_length, route_bev, tags_under, town_route,
                              write_route)
from sim_bridge.semantics import ROAD, ROADLINE, TAG_NAMES

TOWN, LENGTH = "Town01", 200.0


@pytest.fixture(scope="module")
def drive() -> TownRoute:
    return town_route(TOWN, LENGTH, seed=0)


@pytest.fixture(scope="module")
def drive_map(drive):
    return route_bev(TOWN, drive)


# ------------------------------------------------------------------------------------------------ the drive
def test_length_spacing_time_and_rigid_poses(drive):
    assert len(drive) == 201 and drive.length_m == pytest.approx(LENGTH)
    np.testing.assert_allclose(drive.timestamps, np.arange(201) / 10.0)
    assert abs(drive.path_length - LENGTH) < 0.01 * LENGTH
    steps = np.linalg.norm(np.diff(drive.positions, axis=0), axis=1)
    np.testing.assert_allclose(steps, 1.0, rtol=0.01)               # speed / rate = 10 / 10 m (chords in curves)
    assert (rigid_problems(drive.ego_to_world) == "").all()
    assert drive.ego_to_world.dtype == np.float64 and (drive.positions[:, 2] == 0).all()   # the road is z = 0
    # ego x forward: the heading points along the motion
    fwd = drive.ego_to_world[:-1, :2, 0]
    assert ((fwd * np.diff(drive.positions[:, :2], axis=0)).sum(1) / steps > 0.99).all()
    other = town_route(TOWN, 30.0, seed=0, speed_mps=5.0, rate_hz=20.0)
    assert len(other) == 121 and other.timestamps[-1] == pytest.approx(6.0)
    np.testing.assert_allclose(np.linalg.norm(np.diff(other.positions, axis=0), axis=1), 0.25, rtol=0.01)
    np.testing.assert_allclose(other.positions[0], drive.positions[0])          # the same start, another sampling


def test_deterministic_under_a_seed_and_different_across_seeds(drive):
    again = town_route(TOWN, LENGTH, seed=0)
    assert np.array_equal(again.ego_to_world, drive.ego_to_world)
    for seed in (1, 2):
        other = town_route(TOWN, LENGTH, seed=seed)
        assert np.abs(other.positions - drive.positions).max() > 10.0


def test_it_is_the_path_an_episode_of_that_seed_drives():
    from sim_bridge.backends.base import EpisodeSpec
    from sim_bridge.backends.procedural import ProceduralBackend
    from sim_bridge.rig import RIG_PRESETS

    r = town_route(TOWN, 120.0, seed=3, speed_mps=1.0, rate_hz=4.0)
    path = lane_route(TOWN, 3)
    for k in (0, 17, 250, 479):
        x, y, yaw = path.pose(k * 0.25)                                       # the simulator's own pose
        np.testing.assert_allclose(r.ego_to_world[k, :2, 3], (x, y), atol=1e-9)
        np.testing.assert_allclose(r.ego_to_world[k, :2, 0], (np.cos(yaw), np.sin(yaw)), atol=1e-9)
    with ProceduralBackend(TOWN, "ClearNoon", RIG_PRESETS["front"](16, 16), fps=10.0, seed=0) as backend:
        backend.start_episode(EpisodeSpec(index=0, seed=3, start_frame=60))   # 6 s of traffic, nothing rendered
        x, y, yaw = backend.ego_pose()
    d = np.linalg.norm(r.positions[:, :2] - (x, y), axis=1)
    k = int(np.argmin(d))
    assert d[k] < 0.13 and k > 40                                             # on the path (0.25 m samples), moved
    assert abs(np.degrees(np.arctan2(r.ego_to_world[k, 1, 0], r.ego_to_world[k, 0, 0]) - yaw)) < 2.0


def test_a_start_point_begins_on_the_nearest_lane(drive):
    p = drive.ego_to_world[80]
    r = town_route(TOWN, 20.0, seed=5, start=p)
    assert np.linalg.norm(r.positions[0] - p[:3, 3]) < 0.5
    assert r.ego_to_world[0, :2, 0] @ p[:2, 0] > 0.99
    facing_back = town_route(TOWN, 20.0, seed=5, start=(p[0, 3], p[1, 3], np.arctan2(-p[1, 0], -p[0, 0])))
    assert facing_back.ego_to_world[0, :2, 0] @ p[:2, 0] < -0.9                 # the opposite lane
    with pytest.raises(RouteError, match="from the nearest lane of Town01.*pick a point on a road"):
        town_route(TOWN, 20.0, start=(5000.0, 0.0))
    with pytest.raises(RouteError, match="start must be"):
        town_route(TOWN, 20.0, start=(1.0, 2.0, 3.0, 4.0))


def test_bad_requests_name_the_fix():
    with pytest.raises(RouteError, match="unknown town 'Town99'"):
        town_route("Town99", 100.0)
    for length in (0.0, -5.0, float("nan")):
        with pytest.raises(RouteError, match="length_m must be a positive number of metres"):
            town_route(TOWN, length)
    longest = max_route_length(TOWN)
    assert 4000 < longest < 6000
    with pytest.raises(RouteError, match="longer than Town01's network allows.*shorter --length"):
        town_route(TOWN, longest + 1.0)
    with pytest.raises(RouteError, match="shorter than one tick.*--rate"):
        town_route(TOWN, 0.5)
    with pytest.raises(RouteError, match="speed_mps must be a positive"):
        town_route(TOWN, 10.0, speed_mps=0.0)
    with pytest.raises(RouteError, match="poses.*raise --speed or lower --rate"):
        town_route(TOWN, 4000.0, speed_mps=0.1, rate_hz=100.0)


# ------------------------------------------------------------------------------------------------ the map
def test_the_ego_stays_on_the_road_and_the_map_covers_the_route(drive, drive_map):
    tags, ((x0, y0), (x1, y1)) = drive_map
    xy = drive.positions[:, :2]
    assert tags.dtype == np.uint8 and tags.shape == (round(y1 - y0), round(x1 - x0))     # 1 m cells
    assert (x0, y0) <= tuple(xy.min(0) - 40.0) and (x1, y1) >= tuple(xy.max(0) + 40.0)
    assert (x1 - x0) < np.ptp(xy[:, 0]) + 82 and (y1 - y0) < np.ptp(xy[:, 1]) + 82
    assert set(np.unique(tags)) <= set(TAG_NAMES) | {255}
    assert (DRIVABLE_TAGS == (ROAD, ROADLINE)) and (tags == ROAD).mean() > 0.1
    for seed in (0, 1, 2, 3):
        r = drive if seed == 0 else town_route(TOWN, LENGTH, seed=seed)
        t, b = drive_map if seed == 0 else route_bev(TOWN, r)
        assert np.isin(tags_under(t, b, r.positions[:, :2]), DRIVABLE_TAGS).mean() >= 0.95, seed


def test_the_map_is_the_town_in_the_world_frame(drive, drive_map):
    # The ego-frame map `TownBEV.at_ego` casts around a pose, looked up cell by cell in the world map: a flipped,
    # mirrored world map agrees at ~30-65 %, the right one everywhere but at rotated cell borders.
    tags, bounds = drive_map
    town = TownBEV.for_town(TOWN, 0)
    (bx0, by0), (bx1, by1) = BEV_BOX_XY
    Y, X = BEV_GRID_YX
    gy, gx = np.meshgrid(by0 + (np.arange(Y) + 0.5) * (by1 - by0) / Y, bx0 + (np.arange(X) + 0.5) * (bx1 - bx0) / X,
                         indexing="ij")
    for k in (30, 120, 190):
        pose = drive.ego_to_world[k]
        ego_map = town.at_ego(pose)
        world = (np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size), np.ones(gx.size)], 1) @ pose.T)[:, :2]
        agree = (tags_under(tags, bounds, world) == ego_map.ravel()).mean()
        flipped = (tags_under(tags[::-1], bounds, world) == ego_map.ravel()).mean()
        assert agree > 0.9 and flipped < agree - 0.2, (k, agree, flipped)


def test_map_requests_must_match_the_route(drive):
    with pytest.raises(RouteError, match="drives Town01, not Town02"):
        route_bev("Town02", drive)
    with pytest.raises(RouteError, match="world seed 0, not 4"):
        route_bev(TOWN, drive, seed=4)
    with pytest.raises(RouteError, match=r"cell_m must be a positive number of metres \(--cell\)"):
        route_bev(TOWN, drive, cell_m=0.0)
    with pytest.raises(RouteError, match="--cell.*--margin"):
        route_bev(TOWN, drive, cell_m=0.01)
    bare, bounds = route_bev(TOWN, drive.ego_to_world[:5], margin_m=3.0, cell_m=2.0)   # bare poses, 2 m cells
    assert bare.shape == (round((bounds[1][1] - bounds[0][1]) / 2), round((bounds[1][0] - bounds[0][0]) / 2))


# ------------------------------------------------------------------------------------------------ files
def test_the_files_load_with_the_sdk(tmp_path, drive, drive_map):
    assert (TRAJECTORY_FORMAT, TRAJECTORY_FORMAT_VERSION) == (sdk_trajectory.TRAJECTORY_FORMAT,
                                                              sdk_trajectory.TRAJECTORY_FORMAT_VERSION)
    sdk_json = Trajectory(drive.timestamps, drive.ego_to_world).to_json()
    assert TRAJECTORY_CONVENTIONS == sdk_json["conventions"]
    ours = drive.to_json("test")
    assert {k: ours[k] for k in sdk_json} == sdk_json and ours["town"] == TOWN and ours["source"] == "test"
    written = write_route(tmp_path / "r", drive, drive_map, source="test")
    assert [p.name for p in written] == ["trajectory.json", "map.npy", "map.png", "map.json"]
    traj = Trajectory.load(tmp_path / "r" / "trajectory.json")
    assert np.array_equal(traj.ego_to_world, drive.ego_to_world) and np.array_equal(traj.timestamps, drive.timestamps)
    tags, bounds = drive_map
    for name in ("map.npy", "map.png"):
        m = BEVMap.load(tmp_path / "r" / name)
        assert np.array_equal(m.tags, tags) and np.allclose(m.bounds, bounds)
        (x0, y0), (x1, y1) = m.bounds
        xy = traj.positions[:, :2]
        assert ((xy > (x0, y0)) & (xy < (x1, y1))).all()
    meta = json.loads((tmp_path / "r" / "map.json").read_text())
    assert meta["frame"] == "world" and meta["town"] == TOWN and meta["source"] == "test"


# ------------------------------------------------------------------------------------------------ the command
def test_route_command_writes_and_refuses(tmp_path):
    out = tmp_path / "drive"
    r = CliRunner().invoke(main, ["route", "--town", TOWN, "--length", "200", "--seed", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "201 poses over 20 s, 200 m along the lanes of Town01" in r.output
    assert "cells of 1 m over world x" in r.output and "Roads" in r.output and "ego on road at" in r.output
    assert sorted(p.name for p in out.iterdir()) == ["map.json", "map.npy", "map.png", "trajectory.json"]
    before = (out / "trajectory.json").read_bytes()
    again = CliRunner().invoke(main, ["route", "--town", TOWN, "--length", "50", "--out", str(out)])
    assert again.exit_code == 1 and "exists and is not empty: choose another --out or pass --overwrite" in again.output
    assert (out / "trajectory.json").read_bytes() == before
    (out / "mine.txt").write_text("kept")
    r = CliRunner().invoke(main, ["route", "--town", TOWN, "--length", "50", "--out", str(out), "--overwrite", "--no-map"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt", "trajectory.json"]   # the stale map is gone
    assert len(Trajectory.load(out / "trajectory.json")) == 51


@pytest.mark.parametrize("args, message", [
    (["--town", "Town99"], "Error: unknown town 'Town99': choose one of Town01"),
    (["--length", "0"], "Error: length_m must be a positive number of metres (--length)"),
    (["--length", "1e6"], "longer than Town01's network allows"),
    (["--speed", "-1"], "Error: speed_mps must be a positive number of metres per second (--speed)"),
    (["--cell", "0"], "Error: cell_m must be a positive number of metres (--cell)"),
])
def test_route_command_errors_are_one_line_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "none"
    r = CliRunner().invoke(main, ["route", "--town", TOWN, "--length", "100", *args, "--out", str(out)])
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output, r.output
    assert not out.exists()
    (tmp_path / "file").write_text("")
    r = CliRunner().invoke(main, ["route", "--town", TOWN, "--out", str(tmp_path / "file"), "--overwrite"])
    assert r.exit_code == 1 and "is a file" in r.output
