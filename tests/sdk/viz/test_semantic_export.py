"""Labels in files and views: `nfldm render` semantic PNGs (palette and raw tags) and confidences, labelled PLY point
clouds (round trip through our reader and Open3D), voxel down-sampling of labels, class colours of clouds, meshes,
videos and the `nfldm view` screenshot, and head-less bundles (RGB/depth as before, one line, clear errors).

Scenes and the hand-set head: tests/semantic_scenes.py (road ground slab, building wall at x = 12 m).
"""
from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import open3d as o3d
import pytest
from click.testing import CliRunner

from nfldm_sdk.cameras.rig import CameraRig
from nfldm_sdk.cameras.trajectory import Trajectory, yaw_pose
from nfldm_sdk.labels.classes import CARLA_PALETTE
from nfldm_sdk.models.bundle import read_manifest
from nfldm_sdk.models.semantic_head import SEMANTICS_UNAVAILABLE, SemanticsUnavailableError
from nfldm_sdk.pipelines.scene import NeuralScene
from nfldm_sdk.sensors.trajectory_render import render_trajectory, render_trajectory_batched
from nfldm_sdk.viz.export import export_points, tile_frames
from nfldm_sdk.viz.mesh import UNSEEN_GREY, field_to_mesh
from nfldm_sdk.viz.ply import read_points_ply, write_points_ply
from nfldm_sdk.viz.points import ScenePoints, capture_to_point_cloud, scene_points, scene_to_point_cloud, voxel_down_sample
from semantic_scenes import (BUILDING, ROAD, SKY_TAG, headless_decoder, on_wall, semantic_decoder, slab_field,
                             write_test_bundle)

SIZE = 32


@pytest.fixture(scope="module")
def scene() -> NeuralScene:
    return NeuralScene(field=slab_field(), seed=4, bundle_hash="semantic-test", decoder=semantic_decoder())


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Two bundles around the same tiny decoder, with and without the hand-set head, and a slab scene of each."""
    root = tmp_path_factory.mktemp("semantic_cli")
    out = {}
    for name, ae in (("semantic", semantic_decoder()), ("headless", headless_decoder())):
        bundle = write_test_bundle(root / name, ae)
        scene = NeuralScene(field=slab_field(), seed=4, bundle_hash=read_manifest(bundle).bundle_hash, decoder=ae)
        out[name] = (str(bundle), str(scene.save(root / name / "scene_000004")), scene)
    return out, root


def front_cameras():
    rig = CameraRig.preset("capture", SIZE, SIZE)
    return rig.cameras(np.stack([yaw_pose(0, 0, 0), yaw_pose(2, 0, 0)]))                 # [2, 6]


# ============================================================================================ nfldm render
def test_cli_render_writes_semantic_pngs_that_round_trip_the_tags(saved):
    from nfldm_sdk.cli.render import render

    (bundle, folder, scene), root = saved[0]["semantic"], saved[1]
    out = root / "frames"
    r = CliRunner().invoke(render, [folder, "--model", bundle, "--rig", "capture", "--trajectory", "straight",
                                    "--length", "1", "--speed", "10", "--rate", "10", "--out", str(out),
                                    "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "unavailable" not in r.output
    meta = json.loads((out / "frames.json").read_text())
    assert len(meta) == 2 * 6
    expected = [f for tick in render_trajectory(scene, Trajectory.straight(1.0, 10.0, 10.0),
                                                CameraRig.preset("capture", SIZE, SIZE)) for f in tick]
    for entry, f in zip(meta, expected):
        assert entry["semantic_tags"] == f"{f.camera}/{f.frame:06d}_semantic_tags.png"
        tags = iio.imread(out / entry["semantic_tags"])
        assert tags.dtype == np.uint8 and tags.shape == (SIZE, SIZE)                   # one channel, 8 bit
        np.testing.assert_array_equal(tags, f.semantic)                                # lossless round trip
        np.testing.assert_array_equal(iio.imread(out / entry["semantic"]), CARLA_PALETTE[tags])
        conf = np.load(out / entry["semantic_confidence"])
        assert conf.dtype == np.float32
        np.testing.assert_allclose(conf, f.semantic_confidence, atol=1e-6)
        np.testing.assert_array_equal(tags == SKY_TAG, np.isinf(np.load(out / entry["depth"])))
    front = iio.imread(out / meta[0]["semantic_tags"])
    assert {ROAD, BUILDING, SKY_TAG} <= set(np.unique(front).tolist())


def test_cli_render_headless_bundle_says_so_once_and_writes_rgb_depth(saved):
    from nfldm_sdk.cli.render import render

    (bundle, folder, _), root = saved[0]["headless"], saved[1]
    out = root / "headless_frames"
    r = CliRunner().invoke(render, [folder, "--model", bundle, "--rig", "front", "--trajectory", "straight",
                                    "--length", "1", "--speed", "10", "--rate", "10", "--out", str(out),
                                    "--device", "cpu"])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if "semantics are unavailable" in ln]
    assert len(lines) == 1 and SEMANTICS_UNAVAILABLE in lines[0]
    meta = json.loads((out / "frames.json").read_text())
    assert meta[0]["semantic"] is None and "semantic_tags" not in meta[0]
    assert (out / meta[0]["rgb"]).is_file() and (out / meta[0]["depth"]).is_file()
    assert not list(out.rglob("*_semantic*"))


def test_label_row_of_videos(scene):
    batch = render_trajectory_batched(scene, Trajectory.stationary(0.0, 10.0), CameraRig.preset("capture", SIZE, SIZE))
    frames = list(batch.ticks())[0]
    img = tile_frames(frames, with_depth=True, with_semantic=True)                     # rgb, depth, labels: 3 × 2 rows
    assert img.shape == (6 * SIZE, 3 * SIZE, 3)
    np.testing.assert_array_equal(img[4 * SIZE:5 * SIZE, :SIZE], CARLA_PALETTE[frames[0].semantic])
    np.testing.assert_array_equal(img[:SIZE, :SIZE], frames[0].rgb)
    headless = NeuralScene(field=slab_field(), seed=4, bundle_hash="h", decoder=headless_decoder())
    plain = list(render_trajectory(headless, Trajectory.stationary(0.0, 10.0), CameraRig.preset("front", SIZE, SIZE)))
    with pytest.raises(SemanticsUnavailableError):
        tile_frames(plain[0], with_semantic=True)


# ============================================================================================ point clouds
def test_exported_points_carry_the_label_of_their_pixel_and_round_trip(scene, tmp_path):
    cams = front_cameras()
    pts = scene_points(scene, cams)
    assert pts.labels is not None and pts.labels.shape == (len(pts),) and len(pts) > 500
    wall = on_wall(pts.points)
    assert (pts.labels[wall & (pts.points[:, 2] > 1.0)] == BUILDING).all()
    assert (pts.labels[~wall & (pts.points[:, 0] < 10.5)] == ROAD).all()
    assert SKY_TAG not in pts.labels                                                   # a point is a hit
    path = export_points(scene, tmp_path / "p.ply", cams)
    back = read_points_ply(path)
    np.testing.assert_array_equal(back.labels, pts.labels)
    np.testing.assert_array_equal(back.points, pts.points)                            # doubles: exact
    np.testing.assert_allclose(back.colors, pts.colors, atol=0.5 / 255)
    cloud = o3d.io.read_point_cloud(str(path))                                          # Open3D still reads it
    assert len(cloud.points) == len(pts) and cloud.has_colors()
    np.testing.assert_allclose(np.asarray(cloud.points), pts.points, atol=1e-9)
    np.testing.assert_allclose(np.asarray(cloud.colors), pts.colors, atol=0.5 / 255)
    by_class = read_points_ply(export_points(scene, tmp_path / "c.ply", cams, color_by="class"))
    np.testing.assert_allclose(by_class.colors, CARLA_PALETTE[pts.labels] / 255.0, atol=1e-9)
    # and an Open3D-written file (no label property) reads back unlabelled
    o3d.io.write_point_cloud(str(tmp_path / "o3d.ply"), cloud, write_ascii=False)
    plain = read_points_ply(tmp_path / "o3d.ply")
    assert plain.labels is None
    np.testing.assert_allclose(plain.points, pts.points, atol=1e-9)


def test_ply_writer_reader_and_voxel_down_sampling_on_known_points(tmp_path):
    pts = ScenePoints(np.array([[0.1, 0.1, 0.1], [0.2, 0.3, 0.4], [0.9, 0.2, 0.2], [1.5, 0.5, 0.5], [1.6, 0.6, 0.6]]),
                      np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [0, 0, 0]], dtype=float),
                      np.array([ROAD, BUILDING, BUILDING, 9, 14], np.uint8))
    back = read_points_ply(write_points_ply(tmp_path / "k.ply", pts))
    np.testing.assert_array_equal(back.points, pts.points)
    np.testing.assert_array_equal(back.colors, pts.colors)
    np.testing.assert_array_equal(back.labels, pts.labels)
    with pytest.raises(ValueError, match=".ply"):
        write_points_ply(tmp_path / "k.pcd", pts)
    (tmp_path / "bad.ply").write_bytes(b"not a ply")
    with pytest.raises(ValueError, match="not a PLY"):
        read_points_ply(tmp_path / "bad.ply")
    down = voxel_down_sample(pts, 1.0)                       # voxels [0,1)^3: three points, [1,2)x[0,1)^2: two
    assert len(down) == 2
    np.testing.assert_allclose(down.points[0], [0.4, 0.2, 0.7 / 3])
    np.testing.assert_allclose(down.colors[0], [1 / 3, 1 / 3, 1 / 3])
    assert down.labels.tolist() == [BUILDING, 9]             # majority; a tie (9 vs 14) goes to the smaller tag


def test_class_colours_of_clouds_meshes_and_the_view(scene, tmp_path):
    from nfldm_sdk.viz.viewer import show_scene

    cams = front_cameras()
    cloud = scene_to_point_cloud(scene, cams, color_by="class")
    pts = scene_points(scene, cams)
    np.testing.assert_allclose(np.asarray(cloud.colors), CARLA_PALETTE[pts.labels] / 255.0)
    mesh = field_to_mesh(scene, level=10.0, colors="class", color_size=32)
    c = np.asarray(mesh.vertex_colors)
    allowed = np.array([CARLA_PALETTE[ROAD] / 255.0, CARLA_PALETTE[BUILDING] / 255.0, UNSEEN_GREY])
    assert (np.abs(c[:, None] - allowed[None]).max(-1).min(-1) < 1e-9).all()         # only these colours
    v = np.asarray(mesh.vertices)
    wall_face = (np.abs(v[:, 0] - 12.0) < 0.6) & (v[:, 2] > 1.0) & (v[:, 2] < 2.5) & (np.abs(v[:, 1]) < 4)
    seen = np.abs(c - CARLA_PALETTE[BUILDING] / 255.0).max(-1) < 1e-9
    assert wall_face.sum() > 0 and seen[wall_face].mean() > 0.9
    shot = show_scene(scene, screenshot=tmp_path / "cls.png", width=96, height=64, color_by="class", geometry="points")
    img = iio.imread(shot)
    road = np.all(img == CARLA_PALETTE[ROAD], axis=-1)
    assert img.shape == (64, 96, 3) and road.sum() > 20                               # the road, in its colour
    headless = NeuralScene(field=slab_field(), seed=4, bundle_hash="h", decoder=headless_decoder())
    for make in (lambda: scene_to_point_cloud(headless, cams, color_by="class"),
                 lambda: field_to_mesh(headless, level=10.0, colors="class", color_size=32)):
        with pytest.raises(SemanticsUnavailableError):
            make()
    assert scene_points(headless, cams).labels is None
    with pytest.raises(ValueError, match="color_by"):
        scene_to_point_cloud(scene, cams, color_by="height")


def test_capture_cloud_by_class_uses_the_captured_tags():
    """A duck-typed one-camera capture episode: 4 × 4 pixels at 2 m, green, the left half road, the right building."""
    from types import SimpleNamespace

    tags = np.full((1, 1, 4, 4), ROAD, np.uint8)
    tags[..., 2:] = BUILDING
    ep = SimpleNamespace(rgb=np.broadcast_to(np.array([0, 200, 0], np.uint8), (1, 1, 4, 4, 3)),
                         depth=np.full((1, 1, 4, 4), 2.0, np.float32), semantic=tags,
                         cam_to_world=np.eye(4)[None, None])
    K = np.array([[4.0, 0, 2], [0, 4.0, 2], [0, 0, 1]])
    rgb = capture_to_point_cloud(ep, stride=1, K=K)
    cls = capture_to_point_cloud(ep, stride=1, K=K, color_by="class")
    p, c = np.asarray(cls.points), np.asarray(cls.colors)
    np.testing.assert_allclose(np.asarray(rgb.points), p)
    assert len(p) == 16 and np.allclose(np.asarray(rgb.colors)[:, 1], 200 / 255)
    right = p[:, 0] > 0                                                               # camera x = image columns
    np.testing.assert_allclose(c[~right], np.broadcast_to(CARLA_PALETTE[ROAD] / 255.0, (8, 3)))
    np.testing.assert_allclose(c[right], np.broadcast_to(CARLA_PALETTE[BUILDING] / 255.0, (8, 3)))
    with pytest.raises(TypeError, match="semantic"):
        capture_to_point_cloud(SimpleNamespace(rgb=ep.rgb, depth=ep.depth, cam_to_world=ep.cam_to_world), K=K,
                               color_by="class")


def test_cli_export_points_and_view_by_class(saved):
    from nfldm_sdk.cli.render import export
    from nfldm_training.cli.view import view

    (bundle, folder, _), root = saved[0]["semantic"], saved[1]
    r = CliRunner().invoke(export, [folder, "--model", bundle, "--points", str(root / "p.ply"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    labels = read_points_ply(root / "p.ply").labels
    assert labels is not None and {ROAD, BUILDING} <= set(np.unique(labels).tolist())
    r = CliRunner().invoke(view, [folder, "--model", bundle, "--screenshot", str(root / "v.png"), "--color-by", "class",
                                  "--size", "96", "64", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert iio.imread(root / "v.png").shape == (64, 96, 3)
    hb, hf, _ = saved[0]["headless"]
    r = CliRunner().invoke(export, [hf, "--model", hb, "--points", str(root / "h.ply"), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "semantics are unavailable" in r.output and read_points_ply(root / "h.ply").labels is None
    r = CliRunner().invoke(export, [hf, "--model", hb, "--points", str(root / "h2.ply"), "--color-by", "class",
                                    "--device", "cpu"])
    assert r.exit_code != 0 and SEMANTICS_UNAVAILABLE in r.output and "Traceback" not in r.output
    assert not (root / "h2.ply").exists()
