"""`sim_bridge.bev`: ground-truth BEV maps of the built-in towns — CARLA pose conventions (against the real carla
package), the top-down cast on known geometry, the palette and file twins of the SDK's `BEVMap`, the `sim_bridge
bev` command, and agreement with the BEV of a procedural capture (`window_bev`) at a captured ego pose."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from nfldm_sdk.labels.bev_map import DEFAULT_GRID_YX, DRIVING_BOX_XY, DRIVING_Z_RANGE, KNOWN_TAGS, BEVMap
from nfldm_sdk.labels.classes import CARLA_PALETTE, DEFAULT_CLASSES, SemanticClasses
from sim_bridge import conventions as conv
from sim_bridge.bev import (BEV_BOX_XY, BEV_GRID_YX, BEV_PALETTE, BEV_Z_MIN, BEVError, TownBEV,
                            carla_pose_to_ego_to_world, ego_to_world_to_carla_pose, town_bev, write_bev)
from sim_bridge.cli import main

ROAD, BUILDING, STATIC, WATER, UNOBSERVED = 1, 3, 20, 23, 255


# ------------------------------------------------------------------------------------------------ twins
def test_palette_box_and_grid_are_the_sdk_twins():
    assert sorted(BEV_PALETTE) == list(KNOWN_TAGS)
    for tag, rgb in BEV_PALETTE.items():
        assert tuple(CARLA_PALETTE[tag]) == rgb, tag
    assert BEV_BOX_XY == DRIVING_BOX_XY and BEV_GRID_YX == DEFAULT_GRID_YX and BEV_Z_MIN == DRIVING_Z_RANGE[0]


def test_files_written_here_are_the_files_bevmap_writes(tmp_path):
    rng = np.random.default_rng(0)
    tags = rng.choice(np.array(KNOWN_TAGS, np.uint8), size=(6, 9))
    box = ((-3.0, -2.0), (6.0, 4.0))
    for suffix in (".png", ".npy"):
        ours = write_bev(tmp_path / f"bridge_{suffix[1:]}{suffix}", tags, box, name="n", source="s", extra={"town": "Town01"})
        sdk = BEVMap.from_tags(tags, box, name="n", source="s").save(tmp_path / f"sdk_{suffix[1:]}{suffix}")
        assert ours.read_bytes() == sdk.read_bytes()
        assert BEVMap.load(ours) == BEVMap.load(sdk) == BEVMap.from_tags(tags, box)
        a, b = (json.loads(p.with_suffix(".json").read_text()) for p in (ours, sdk))
        assert a.pop("town") == "Town01" and a == b
    with pytest.raises(BEVError, match="exists.*--overwrite"):
        write_bev(tmp_path / "bridge_png.png", tags, box)
    with pytest.raises(BEVError, match=r"\.png or \.npy"):
        write_bev(tmp_path / "m.jpg", tags, box)


# ------------------------------------------------------------------------------------------------ poses
def test_carla_pose_is_carlas_transform_in_our_frames():
    import carla

    for x, y, yaw in ((100.0, 50.0, 90.0), (-3.5, 7.25, -135.0), (0.0, 0.0, 0.0)):
        ours = carla_pose_to_ego_to_world(x, y, yaw)
        real = conv.carla_to_ego_to_world(carla.Transform(carla.Location(x=x, y=y), carla.Rotation(yaw=yaw)))
        np.testing.assert_allclose(ours, real, atol=1e-12)
        back = conv.ego_to_world_to_carla(ours)
        np.testing.assert_allclose(ego_to_world_to_carla_pose(ours), (back.location.x, back.location.y,
                                                                      back.rotation.yaw), atol=1e-4)
    # by hand: CARLA's y is our −y and its yaw turns clockwise seen from above, so yaw 90° faces our world −y
    m = carla_pose_to_ego_to_world(100.0, 50.0, 90.0)
    np.testing.assert_allclose(m[:3, 3], (100.0, -50.0, 0.0), atol=1e-12)
    np.testing.assert_allclose(m[:3, 0], (0.0, -1.0, 0.0), atol=1e-12)      # forward
    np.testing.assert_allclose(m[:3, 1], (1.0, 0.0, 0.0), atol=1e-12)       # left


def _quad(x0, y0, x1, y1, z):
    return np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]]), np.array([[0, 1, 2], [0, 2, 3]])


def _box_without_floor(x0, y0, x1, y1, z1):
    """Walls and a roof (no floor: the procedural buildings' own shape)."""
    V = np.array([[x, y, z] for z in (0.0, z1) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))])
    walls = [[k, (k + 1) % 4, 4 + k] for k in range(4)] + [[(k + 1) % 4, 4 + (k + 1) % 4, 4 + k] for k in range(4)]
    return V, np.array(walls + [[4, 5, 6], [4, 6, 7]])


def _scene_in_ego_frame(ego_to_world):
    """Known geometry, written in the ego frame and moved into the world with `ego_to_world`."""
    parts = [(_quad(-16, -32, 30, 32, 0.0), ROAD),                 # the ground up to x = 30
             (_quad(30, -32, 48, 0, -5.0), WATER),                 # below z_min: unobserved
             (_box_without_floor(9, 4, 11, 6, 20.0), BUILDING),    # taller than the voxel box
             (_box_without_floor(0.1, 0.1, 0.45, 0.45, 1.0), STATIC)]   # a post in a quarter of cell (32, 16)
    V, F, T = [], [], []
    for (v, f), tag in parts:
        F.append(f + sum(len(p) for p in V))
        V.append(v)
        T += [tag] * len(f)
    V = np.concatenate(V)
    V = (np.c_[V, np.ones(len(V))] @ np.asarray(ego_to_world).T)[:, :3]
    return TownBEV(V, np.concatenate(F), np.array(T, np.uint8), name="known")


def test_a_known_layout_lands_in_the_cells_of_the_ego_frame():
    pose = (100.0, 50.0, 90.0)
    caster = _scene_in_ego_frame(carla_pose_to_ego_to_world(*pose))
    bev = caster.at(*pose)
    assert bev.shape == (64, 64) and bev.dtype == np.uint8
    expected = np.full((64, 64), ROAD, np.uint8)
    expected[36:38, 25:27] = BUILDING                    # y ∈ [4, 6) -> rows 36, 37; x ∈ [9, 11) -> columns 25, 26
    expected[:, 46:] = UNOBSERVED                        # x ≥ 30: water below z_min, or nothing at all
    np.testing.assert_array_equal(bev, expected)
    # 2 × 2 rays per cell: one meets the post, the highest hit wins
    fine = caster.at(*pose, samples=2)
    assert fine[32, 16] == STATIC and (fine != expected).sum() == 1
    assert caster.at(*pose, z_min=-6.0)[0, 50] == WATER  # the water counts once it is above z_min
    # another pose sees the same geometry elsewhere: the map is in the ego's frame, not the world's
    assert (caster.at(100.0, 50.0, 0.0) != expected).any()


@pytest.mark.parametrize("kwargs, words", [
    (dict(grid_yx=(0, 4)), "grid_yx"), (dict(box=((0, 0), (0, 1))), "xmin < xmax"),
    (dict(samples=0), "samples"), (dict(z_min=float("nan")), "z_min")])
def test_bad_requests_name_the_argument(kwargs, words):
    caster = _scene_in_ego_frame(np.eye(4))
    with pytest.raises(BEVError, match=words):
        caster.at(0.0, 0.0, 0.0, **kwargs)


# ------------------------------------------------------------------------------------------------ towns, CLI
def test_town_bev_of_a_built_in_town_and_the_cli(tmp_path):
    bev = town_bev("Town03", 0.0, 0.0, 0.0, seed=7)      # the roundabout at the centre of Town03
    assert bev.shape == (64, 64)
    shares = {t: (bev == t).mean() for t in (ROAD, 2, BUILDING, 9, 10)}
    assert shares[ROAD] > 0.2 and shares[2] > 0.05 and shares[BUILDING] > 0.05 and (bev != UNOBSERVED).all()
    out = tmp_path / "map.png"
    args = ["bev", "--town", "Town03", "--seed", "7", "--at", "10", "-20.5", "-30", "--out", str(out),
            "--size", "32", "48"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "Wrote" in r.output and "map.json" in r.output and "Roads" in r.output
    m = BEVMap.load(out)
    np.testing.assert_array_equal(m.tags, town_bev("Town03", 10.0, -20.5, -30.0, (32, 48), seed=7))
    assert m.bounds == DRIVING_BOX_XY and m.grid_yx == (32, 48)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["carla_pose"] == [10.0, -20.5, -30.0] and side["town"] == "Town03" and side["seed"] == 7
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "Error:" in again.output and "--overwrite" in again.output
    assert CliRunner().invoke(main, [*args, "--overwrite", "--extent", "0", "0", "8", "4"]).exit_code == 0
    assert BEVMap.load(out).bounds == ((0.0, 0.0), (8.0, 4.0))
    bad = CliRunner().invoke(main, ["bev", "--town", "Town99", "--at", "0", "0", "0", "--out", str(tmp_path / "x.png")])
    assert bad.exit_code == 1 and "Error: unknown town 'Town99'" in bad.output


# ------------------------------------------------------------------------------------------------ consistency
def _layout_classes() -> SemanticClasses:
    """The default classes with road lines counted as road: the town map holds markings as road (paint)."""
    names, tags = list(DEFAULT_CLASSES.names), [list(g) for g in DEFAULT_CLASSES.tags]
    tags[0] += tags.pop(1)
    names.pop(1)
    return SemanticClasses(tuple(names), tuple(tuple(g) for g in tags))


def test_town_bev_agrees_with_the_captured_bev_at_a_captured_pose(tiny_capture):
    """A window of the capture (8 frames × 6 cameras, 64×64) labels ~45% of the cells; there the town's map at
    the anchor's ego pose agrees on road, sidewalk and building (measured mIoU 0.74 on both windows; a wrong pose
    convention — y or yaw negated, yaw + 180°, rows flipped, the map transposed — scores 0.10–0.29)."""
    import sim_bridge
    from nfldm_training.data.capture_bev import window_bev
    from nfldm_training.data.capture_windows import SceneWindowDataset

    store = sim_bridge.open_store(tiny_capture)
    town = TownBEV.for_town(store.town, store.seed)
    ds = SceneWindowDataset([tiny_capture], window=8, image_size=(64, 64), split="all")
    classes, names = _layout_classes(), ("road", "sidewalk", "building")
    box = torch.tensor([[-16.0, -32, -2], [48, 32, 6]])
    for i in range(len(ds)):
        w = ds[i]
        captured = BEVMap.from_tags(window_bev(w, box, (64, 64), DEFAULT_CLASSES).numpy())
        x, y, yaw = ego_to_world_to_carla_pose(store.episode(w.episode).ego_to_world[w.anchor])
        truth = town.at(x, y, yaw)
        iou = captured.class_iou(BEVMap.from_tags(truth), classes)
        assert captured.observed.mean() > 0.35
        assert iou["road"] > 0.8 and iou["sidewalk"] > 0.5 and iou["building"] > 0.5, iou
        right = captured.miou(BEVMap.from_tags(truth), classes, names)
        assert right > 0.6
        for wrong in (town.at(x, -y, yaw), town.at(x, y, -yaw), town.at(x, y, yaw + 180.0), truth[::-1], truth.T):
            assert captured.miou(BEVMap.from_tags(wrong), classes, names) < right - 0.3
