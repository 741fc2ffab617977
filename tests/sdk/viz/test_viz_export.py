"""Open3D geometry (meshes, point clouds, line sets), offscreen screenshots, exports (PLY, zarr, frames, MP4) and the
`nfldm render` / `export` / `view` commands end to end on a saved tiny scene and a tiny model bundle.

The scene is test_sensors' hand-made field: ground slab z ∈ [−1, 0] over the whole box x ∈ [−8, 24], y ∈ [−8, 8] and
a box x ∈ [8, 12], y ∈ [−2, 2], z ∈ [0, 3] (σ = 20 /m, 1 m voxels).
"""
from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import open3d as o3d
import pytest
import torch
import zarr
from click.testing import CliRunner

from nfldm_sdk.viz.export import export_mesh, export_points, export_voxels, tile_frames, write_frames
from nfldm_sdk.rendering.api import HIT_ALPHA
from nfldm_sdk.models.bundle import read_manifest, write_bundle
from nfldm_sdk.pipelines.scene import NeuralScene
from nfldm_sdk.cameras.rig import CameraRig
from nfldm_sdk.sensors.trajectory_render import render_trajectory, render_trajectory_batched
from nfldm_sdk.cameras.trajectory import Trajectory, yaw_pose
from nfldm_sdk.viz.lines import camera_frustum_lines, trajectory_lines
from nfldm_sdk.viz.mesh import UNSEEN_GREY, field_to_mesh
from nfldm_sdk.viz.points import capture_to_point_cloud, scene_to_point_cloud
from nfldm_sdk.viz.viewer import ViewError, show
from test_rig_trajectory import write_ground_capture
from test_sensors import BOX, SIGMA, SIZE, tiny_decoder, tiny_field, tiny_scene

BACKGROUND = (1.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def scene() -> NeuralScene:
    return tiny_scene()


def constant_color_decoder(rgb=(0.2, 0.6, 0.4)):
    """The tiny decoder with its last conv zeroed and biased so every pixel decodes to `rgb` (sigmoid output)."""
    dec = tiny_decoder()
    last = dec.decoder.body[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.logit(torch.tensor(rgb)))
    return dec


# ============================================================================================ meshes
def test_mesh_geometry_normals_and_ply_round_trip(scene, tmp_path):
    mesh = field_to_mesh(scene, level=SIGMA / 2)
    v = np.asarray(mesh.vertices)
    # at level σ/2 marching cubes puts every face exactly on a voxel face: slab + box
    np.testing.assert_allclose(v.min(0), [-8.0, -8.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(v.max(0), [24.0, 8.0, 3.0], atol=1e-6)
    box = v[v[:, 2] > 0.01]
    np.testing.assert_allclose(box.min(0)[:2], [BOX[0][0], BOX[0][1]], atol=1e-6)   # (its side vertices sit at
                                                                                     # voxel-centre heights)
    np.testing.assert_allclose(box.max(0), [BOX[1][0], BOX[1][1], BOX[1][2]], atol=1e-6)
    n = np.asarray(mesh.vertex_normals)
    top = (np.abs(v[:, 2] - 3.0) < 1e-6) & (np.abs(v[:, 0] - 10) < 1.5) & (np.abs(v[:, 1]) < 1.5)
    assert top.sum() > 0 and (n[top, 2] > 0.9).all()                       # outward: the box top faces up
    front = (np.abs(v[:, 0] - 8.0) < 1e-6) & (v[:, 2] > 0.5) & (v[:, 2] < 2.5) & (np.abs(v[:, 1]) < 1.5)
    assert front.sum() > 0 and (n[front, 0] < -0.9).all()                   # the face towards the ego faces -x
    path = export_mesh(scene, tmp_path / "m.ply", level=SIGMA / 2, color_size=32)
    back = o3d.io.read_triangle_mesh(str(path))
    assert len(back.triangles) == len(mesh.triangles) > 0 and back.has_vertex_colors()
    np.testing.assert_allclose(np.asarray(back.vertices), v, atol=1e-5)
    ext = back.get_axis_aligned_bounding_box().get_extent()
    np.testing.assert_allclose(ext, [32.0, 16.0, 4.0], atol=1.0)            # the scene's size within a voxel


def test_mesh_colours_come_from_the_rendered_views(scene):
    rgb = (0.2, 0.6, 0.4)
    mesh = field_to_mesh(scene, level=SIGMA / 2, decoder=constant_color_decoder(rgb), color_size=32)
    v, c = np.asarray(mesh.vertices), np.asarray(mesh.vertex_colors)
    expect = np.round(np.array(rgb) * 255) / 255                             # uint8 rendering quantises
    seen = np.abs(c - expect).max(1) < 1e-6
    grey = np.abs(c - UNSEEN_GREY).max(1) < 1e-9
    assert (seen | grey).all()
    bottom = np.abs(v[:, 2] + 1.0) < 1e-6                                     # slab underside: no view sees it
    assert bottom.sum() > 0 and grey[bottom].all()
    box_top = (np.abs(v[:, 2] - 3.0) < 1e-6)                                  # box roof: the top-down view sees it
    assert seen[box_top].mean() > 0.9
    ground_top = (np.abs(v[:, 2]) < 1e-6) & (np.abs(v[:, 0] - 2) < 4) & (np.abs(v[:, 1]) < 4)
    assert seen[ground_top].mean() > 0.9
    hmesh = field_to_mesh(scene.field, level=SIGMA / 2)                      # no decoder: height colours
    hc = np.asarray(hmesh.vertex_colors)
    hv = np.asarray(hmesh.vertices)
    assert np.allclose(hc[hv[:, 2].argmin()], [0, 0, 1]) and np.allclose(hc[hv[:, 2].argmax()], [1, 0, 0])
    with pytest.raises(ValueError, match="never crosses level"):
        field_to_mesh(scene.field, level=100.0)


# ============================================================================================ point clouds
def test_scene_point_cloud_lies_on_the_surfaces_and_round_trips(scene, tmp_path):
    rig = CameraRig.preset("capture", SIZE, SIZE)
    cams = rig.cameras(np.stack([yaw_pose(0, 0, 0), yaw_pose(3, 0, 0)]))     # [2, 6]
    cloud = scene_to_point_cloud(scene, cams)
    p = np.asarray(cloud.points)
    assert len(p) > 500 and cloud.has_colors()
    # every point is near a surface: the ground top (z ≈ 0) or the box; within a voxel
    on_ground = np.abs(p[:, 2]) < 0.6
    in_box = (p[:, 0] > BOX[0][0] - 1) & (p[:, 0] < BOX[1][0] + 1) & (np.abs(p[:, 1]) < 3) & (p[:, 2] < 4)
    assert (on_ground | in_box).mean() > 0.98
    above = p[p[:, 2] > 0.6]                                                  # points on the box (above the ground)
    size = above.max(0) - above.min(0)
    assert abs(size[1] - 4.0) < 1.0 and abs(above[:, 2].max() - 3.0) < 1.0   # the box's width and height in a voxel
    path = export_points(scene, tmp_path / "p.ply", cams)
    back = o3d.io.read_point_cloud(str(path))
    assert len(back.points) == len(p) and back.has_colors()
    np.testing.assert_allclose(np.asarray(back.points), p, atol=1e-5)


def test_capture_point_cloud_fuses_the_ground_plane(tmp_path):
    import sim_bridge

    store = sim_bridge.open_store(write_ground_capture(tmp_path / "c.zarr", frames=3))
    ep = store.episode(0)
    cloud = capture_to_point_cloud(ep, frames=[0, 2], stride=1, K=store.rig.K())
    p, c = np.asarray(cloud.points), np.asarray(cloud.colors)
    valid = np.isfinite(np.asarray(ep.depth[[0, 2]])).sum()
    assert len(p) == valid > 0
    np.testing.assert_allclose(p[:, 2], 0.0, atol=1e-3)                      # every point back on the ground plane
    np.testing.assert_allclose(c[:, 1], 200 / 255)
    front = capture_to_point_cloud(ep, frames=slice(0, 1), cameras=[0], stride=2, K=store.rig.K(), max_depth=5.0)
    fp = np.asarray(front.points)
    assert (fp[:, 0] > 0.5).all() and len(fp) < len(p) / 12                 # the front camera sees ahead
    with pytest.raises(ValueError, match="pass K="):
        capture_to_point_cloud(ep)


def test_line_sets():
    rig = CameraRig.preset("capture", 32, 32)
    traj = Trajectory.arc(10.0, 90.0, 10.0, 5.0)
    ls = camera_frustum_lines(rig.cameras(traj.ego_to_world[:2]), scale=2.0)
    assert len(ls.points) == 2 * 6 * 5 and len(ls.lines) == 2 * 6 * 8
    pts = np.asarray(ls.points).reshape(12, 5, 3)
    cams = rig.cameras(traj.ego_to_world[:2]).flatten()
    # image corners at planar depth 2 m: 2 m in front of the centre along the optical axis
    axis = cams.cam_to_world[:, :3, 2].double().numpy()
    np.testing.assert_allclose(((pts[:, 1:] - pts[:, :1]) * axis[:, None]).sum(-1), 2.0, atol=1e-5)
    tl = trajectory_lines(traj, heading=1.0)
    assert len(tl.points) == 2 * len(traj) and len(tl.lines) == 2 * len(traj) - 1
    np.testing.assert_allclose(np.asarray(tl.points)[:len(traj)], traj.positions)


# ============================================================================================ screenshots
def test_offscreen_screenshot_shows_the_scene(scene, tmp_path):
    mesh = field_to_mesh(scene, level=SIGMA / 2)
    traj = Trajectory.straight(10.0, 10.0, 2.0)
    path = show([mesh, trajectory_lines(traj)], screenshot=tmp_path / "shot.png", width=160, height=120)
    assert path.is_file() and path.stat().st_size > 0
    img = iio.imread(path)
    assert img.shape == (120, 160, 3) and img.dtype == np.uint8
    background = np.all(img == 255, axis=-1)
    assert (~background).mean() > 0.05                                       # the scene covers part of the view
    assert background.mean() > 0.05                                          # ... framed, not filling everything
    from nfldm_sdk.cli.render import VIEW_NAMES
    from nfldm_sdk.viz.viewer import VIEWS

    assert tuple(VIEWS) == VIEW_NAMES                                          # the CLI's --view choices


def test_interactive_window_without_display_says_use_screenshot(scene, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(ViewError, match="no display.*screenshot"):
        show(trajectory_lines(Trajectory.straight(5.0, 5.0, 2.0)))


# ============================================================================================ files
def test_export_voxels_zarr_round_trip(scene, tmp_path):
    path = export_voxels(scene, tmp_path / "v.zarr")
    g = zarr.open_group(str(path), mode="r")
    np.testing.assert_array_equal(g["density"][:], scene.field.density.numpy())
    np.testing.assert_array_equal(g["features"][:], scene.field.features.numpy())
    np.testing.assert_array_equal(g["bounds"][:], scene.field.bounds.numpy())
    a = dict(g.attrs)
    assert a["format"] == "nfldm.voxel_export" and a["seed"] == 42 and a["bundle_hash"] == "test-bundle"
    assert a["voxel_size"] == [1.0, 1.0, 1.0] and a["grid_shape"] == [6, 16, 32]
    with pytest.raises(FileExistsError, match="overwrite"):
        export_voxels(scene, path)


def test_write_frames_folder_and_mp4(scene, tmp_path):
    rig = CameraRig.preset("capture", SIZE, SIZE)
    traj = Trajectory.straight(2.0, 10.0, 10.0)                              # 3 ticks
    batch = render_trajectory_batched(scene, traj, rig, with_range=True)
    res = write_frames(batch, tmp_path / "frames")
    assert (res.ticks, res.images) == (3, 18)
    meta = json.loads((tmp_path / "frames" / "frames.json").read_text())
    assert len(meta) == 18 and meta[7]["camera"] == "front_left" and meta[7]["frame"] == 1
    f = batch.frame(1, 1)
    np.testing.assert_array_equal(iio.imread(tmp_path / "frames" / meta[7]["rgb"]), f.rgb)
    np.testing.assert_array_equal(np.load(tmp_path / "frames" / meta[7]["depth"]), f.depth)
    np.testing.assert_array_equal(np.load(tmp_path / "frames" / meta[7]["range"]), f.range)
    # alpha beside depth, and the threshold that relates them: depth is inf exactly where alpha < hit_alpha (at the
    # decoder's render resolution; this scene's sky and its solid surfaces are far from it)
    alpha = np.load(tmp_path / "frames" / meta[7]["alpha"])
    assert meta[7]["alpha"] == "front_left/000001_alpha.npy" and alpha.dtype == np.float32
    np.testing.assert_array_equal(alpha, f.alpha)
    assert meta[7]["hit_alpha"] == HIT_ALPHA == 0.5
    assert (np.isinf(f.depth) == (alpha < HIT_ALPHA)).mean() > 0.95 and np.isinf(f.depth).any()
    np.testing.assert_allclose(meta[7]["cam_to_world"], f.cam_to_world)
    # video: lazily from the per-tick iterator; cameras tiled 3 × 2
    vid = write_frames(render_trajectory(scene, traj, rig), tmp_path / "drive.mp4")
    assert vid.ticks == 3 and vid.size == (3 * SIZE, 2 * SIZE)
    frames = iio.imread(tmp_path / "drive.mp4", index=None)
    assert frames.shape == (3, 2 * SIZE, 3 * SIZE, 3)
    # lossy, but the decoded frame resembles the tiled render
    tiled = tile_frames(list(batch.ticks())[0]).astype(float)
    assert np.abs(frames[0].astype(float) - tiled).mean() < 25
    odd = tile_frames([batch.frame(0, n) for n in range(5)], columns=5, with_depth=True)
    assert odd.shape == (2 * SIZE, 5 * SIZE, 3)


# ============================================================================================ CLI
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny model bundle (write_bundle from tiny random parts) and a scene of it saved with NeuralScene.save."""
    from nfldm_sdk.models.denoisers import (CDenoiser, CDenoiserConfig, FDenoiser, FDenoiserConfig, GDenoiser,
                                            GDenoiserConfig)
    from nfldm_sdk.models.latent_ae import LatentAEConfig, LatentAutoEncoder, LatentStats
    from nfldm_sdk.models.noise_schedule import NoiseSchedule

    root = tmp_path_factory.mktemp("cli")
    ae = tiny_decoder()
    torch.manual_seed(0)
    lcfg = LatentAEConfig.for_scene_ae(ae.config, g_dim=8, coarse_codebook_size=8, fine_codebook_size=8,
                                       g_encoder_widths=(8,), c_encoder_widths=(8, 8, 8), f_encoder_width=8,
                                       f_encoder_blocks=1, decoder_widths=(8, 8, 8))
    lae = LatentAutoEncoder(lcfg)
    den = {"g": GDenoiser(GDenoiserConfig(g_dim=8, width=16, num_blocks=1, time_channels=8)),
           "c": CDenoiser(CDenoiserConfig(latent_shape=lcfg.c_shape, g_dim=8, widths=(8, 8), norm_groups=4,
                                          embed_dim=16, time_channels=8)),
           "f": FDenoiser(FDenoiserConfig(latent_shape=lcfg.f_shape, c_shape=lcfg.c_shape, g_dim=8, widths=(8, 8),
                                          norm_groups=4, embed_dim=16, time_channels=8))}
    bundle = write_bundle(root / "bundle", scene_ae=ae, latent_ae=lae, denoisers=den, latent_stats=LatentStats(),
                          noise_schedule=NoiseSchedule(), preset="tiny")
    scene = NeuralScene(field=tiny_field(), seed=3, bundle_hash=read_manifest(bundle).bundle_hash, decoder=ae)
    folder = scene.save(root / "scene_000003")
    return str(bundle), str(folder), root


def test_cli_render_folder_and_video(saved):
    from nfldm_sdk.cli.render import render

    bundle, folder, root = saved
    r = CliRunner().invoke(render, [folder, "--model", bundle, "--rig", "capture", "--trajectory", "straight",
                                    "--length", "2", "--speed", "10", "--rate", "10", "--out", str(root / "out"),
                                    "--device", "cpu"])
    assert r.exit_code == 0, r.output
    meta = json.loads((root / "out" / "frames.json").read_text())
    assert (root / "out" / meta[0]["alpha"]).is_file() and meta[0]["alpha"].endswith("_alpha.npy")
    assert len(meta) == 3 * 6 and meta[0]["bundle_hash"] == read_manifest(bundle).bundle_hash and meta[0]["seed"] == 3
    assert iio.imread(root / "out" / "front" / "000002.png").shape == (32, 32, 3)   # the decoder's image size
    assert CameraRig.load(root / "out" / "rig.json") == CameraRig.preset("capture", 32, 32)
    assert len(Trajectory.load(root / "out" / "trajectory.json")) == 3
    traj_file = root / "arc.json"
    Trajectory.arc(10.0, 30.0, 10.0, 5.0).save(traj_file)
    r = CliRunner().invoke(render, [folder, "--model", bundle, "--rig", "front", "--trajectory", str(traj_file),
                                    "--rate", "5", "--width", "48", "--height", "32", "--out", str(root / "v.mp4"),
                                    "--batch-size", "2", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    frames = iio.imread(root / "v.mp4", index=None)
    assert frames.shape == (len(Trajectory.arc(10.0, 30.0, 10.0, 5.0)), 32, 48, 3)


def test_cli_render_errors_are_clear(saved):
    from nfldm_sdk.cli.render import render

    bundle, folder, root = saved
    run = lambda *extra: CliRunner().invoke(render, [folder, "--model", bundle, "--out", str(root / "x"),  # noqa: E731
                                                     "--device", "cpu", *extra])
    r = run("--rig", "ring9")
    assert r.exit_code != 0 and "unknown rig 'ring9'" in r.output and "Traceback" not in r.output
    r = run("--trajectory", "zigzag")
    assert r.exit_code != 0 and "unknown trajectory 'zigzag'" in r.output
    away = root / "away.json"
    Trajectory.straight(2.0, 10.0, 10.0, start=yaw_pose(80.0, 0.0, 0.0)).save(away)
    r = run("--trajectory", str(away))
    assert r.exit_code != 0 and "cannot see any of the scene box" in r.output


def test_cli_export_and_view_screenshot(saved):
    from nfldm_sdk.cli.render import export
    from nfldm_training.cli.view import view

    bundle, folder, root = saved
    r = CliRunner().invoke(export, [folder, "--model", bundle, "--mesh", str(root / "m.ply"), "--points",
                                    str(root / "p.ply"), "--voxels", str(root / "v.zarr"), "--level", "10",
                                    "--device", "cpu"])
    assert r.exit_code == 0, r.output
    mesh = o3d.io.read_triangle_mesh(str(root / "m.ply"))
    np.testing.assert_allclose(mesh.get_axis_aligned_bounding_box().get_extent(), [32, 16, 4], atol=1e-5)
    assert len(o3d.io.read_point_cloud(str(root / "p.ply")).points) > 100
    assert zarr.open_group(str(root / "v.zarr"), mode="r")["density"].shape == (6, 16, 32)
    r = CliRunner().invoke(export, [folder])
    assert r.exit_code != 0 and "nothing to export" in r.output
    r = CliRunner().invoke(view, [folder, "--model", bundle, "--screenshot", str(root / "view.png"), "--trajectory",
                                  "arc", "--radius", "8", "--angle", "60", "--size", "160", "120", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    img = iio.imread(root / "view.png")
    assert img.shape == (120, 160, 3) and (~np.all(img == 255, axis=-1)).mean() > 0.05


def test_training_view_dispatches_capture_and_scene(saved, tmp_path):
    from nfldm_training.cli.view import is_capture_store, view

    bundle, folder, _ = saved
    store = write_ground_capture(tmp_path / "c.zarr", frames=3, size=16)
    assert is_capture_store(store) and not is_capture_store(folder)
    r = CliRunner().invoke(view, [store, "--screenshot", str(tmp_path / "cap.png"), "--stride", "1", "--frames", "0:3",
                                  "--size", "160", "120"])
    assert r.exit_code == 0, r.output
    img = iio.imread(tmp_path / "cap.png")
    assert (~np.all(img == 255, axis=-1)).mean() > 0.02
    r = CliRunner().invoke(view, [folder, "--model", bundle, "--screenshot", str(tmp_path / "scene.png"),
                                  "--size", "96", "64", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert iio.imread(tmp_path / "scene.png").shape == (64, 96, 3)
    r = CliRunner().invoke(view, [str(tmp_path), "--screenshot", str(tmp_path / "x.png")])
    assert r.exit_code != 0 and "neither a capture store" in r.output
