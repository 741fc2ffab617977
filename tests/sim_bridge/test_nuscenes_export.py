"""nuScenes-format export of captures (`sim_bridge.export`, ``sim_bridge export-nuscenes``), checked with the real
nuScenes devkit: the tables load, scene -> sample -> sample_data walks, camera records carry the rig's K and mount,
LiDAR files read with ``LidarPointCloud.from_file`` and land on the exported depth through the devkit's own chain
(lidar -> ego -> global -> ego at the camera's time -> camera), lidarseg labels, microsecond timestamps, quaternion
convention, deterministic bytes, extras (depth, semantics) equal to the store, and the errors before writing.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sim_bridge.cli import main as cli
from sim_bridge.export.capture import created_microseconds, export_capture
from sim_bridge.export.nuscenes import CameraReading, LidarReading, NuScenesWriter, Sample
from sim_bridge.export.nuscenes_tables import (LIDARSEG_CATEGORIES, ExportError, channel_name, lidarseg_indices,
                                               matrix_to_quaternion, quaternion_to_matrix, scene_spacing_us)
from sim_bridge.lidar import LidarSpec
from sim_bridge.store.reader import open_store

nuscenes = pytest.importorskip("nuscenes.nuscenes", reason="the nuScenes devkit is not installed: scripts/setup.sh "
                                                           "installs it (pip install --no-deps nuscenes-devkit)")
from nuscenes.utils.data_classes import LidarPointCloud  # noqa: E402
from nuscenes.utils.data_io import load_bin_file  # noqa: E402
from nuscenes.utils.geometry_utils import transform_matrix, view_points  # noqa: E402
from pyquaternion import Quaternion  # noqa: E402

VERSION = "v1.0-test"
FRAMES = 3


def small_lidar(path: Path) -> str:
    """16 beams every 2° from +10° to −20°, one shot per degree, 40 m, 1.8 m above the ego origin."""
    spec = LidarSpec(channels=16, range_m=40.0, upper_fov_deg=10.0, lower_fov_deg=-20.0, rotation_frequency_hz=10.0,
                     points_per_second=16 * 10 * 360, name="small")
    return str(spec.save(path))


@pytest.fixture(scope="module")
def capture(tmp_path_factory, capture_factory) -> str:
    """2 episodes × 3 frames, the 6-camera default rig at 64×64, with the small LiDAR."""
    root = tmp_path_factory.mktemp("nusc_capture")
    return capture_factory(root / "cap.zarr", episodes=2, frames=FRAMES, lidar=small_lidar(root / "lidar.json"))


@pytest.fixture(scope="module")
def exported(capture, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nusc_out") / "nusc"
    r = CliRunner().invoke(cli, ["export-nuscenes", capture, "--out", str(out), "--version", VERSION])
    assert r.exit_code == 0, r.output
    assert "Wrote 2 scene(s), 6 sample(s), 42 sample_data record(s) with LiDAR" in r.output
    return out


@pytest.fixture(scope="module")
def nusc(exported):
    return nuscenes.NuScenes(version=VERSION, dataroot=str(exported), verbose=False)


def extras(root: Path) -> dict:
    return {r["sample_data_token"]: r for r in json.loads((root / VERSION / "nfldm_sample_data_extra.json").read_text())}


def walk(nusc, scene) -> list[dict]:
    out, token = [], scene["first_sample_token"]
    while token:
        out.append(nusc.get("sample", token))
        token = out[-1]["next"]
    return out


def test_devkit_loads_and_walks_scene_sample_sample_data(nusc, capture, exported):
    store = open_store(capture)
    assert [s["name"] for s in nusc.scene] == ["Town03-episode_0000", "Town03-episode_0001"]
    channels = {channel_name(n) for n in store.rig.names}
    assert channels == {"CAM_FRONT", "CAM_FRONT_LEFT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT", "CAM_FRONT_RIGHT"}
    for scene in nusc.scene:
        samples = walk(nusc, scene)
        assert len(samples) == scene["nbr_samples"] == FRAMES and samples[-1]["token"] == scene["last_sample_token"]
        assert nusc.get("log", scene["log_token"])["location"] == "Town03"
        for s in samples:
            assert set(s["data"]) == channels | {"LIDAR_TOP"} and s["anns"] == []
            for sd_token in s["data"].values():
                sd = nusc.get("sample_data", sd_token)
                assert sd["is_key_frame"] and sd["timestamp"] == s["timestamp"]
                assert (exported / sd["filename"]).is_file()
    assert nusc.instance == nusc.sample_annotation == nusc.attribute == []
    assert [c["name"] for c in sorted(nusc.category, key=lambda c: c["index"])] == [n for n, _ in LIDARSEG_CATEGORIES]
    nusc.list_scenes()                                   # sorts scenes by start time: they must all differ


def test_camera_records_carry_the_rig_intrinsics_mount_and_captured_pose(nusc, capture):
    store = open_store(capture)
    ep = store.episode(0)
    first = walk(nusc, nusc.scene[0])
    for n, cam in enumerate(store.rig.cameras):
        sd_token = first[1]["data"][channel_name(cam.name)]
        path, boxes, K = nusc.get_sample_data(sd_token)
        assert Path(path).is_file() and boxes == []
        np.testing.assert_array_equal(K, cam.K)
        sd = nusc.get("sample_data", sd_token)
        assert (sd["width"], sd["height"], sd["fileformat"]) == (64, 64, "jpg")
        import imageio.v3 as iio  # lazy: only this test reads the JPEG back

        assert iio.imread(path).shape == (64, 64, 3)
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        pose = nusc.get("ego_pose", sd["ego_pose_token"])
        c2e = transform_matrix(cs["translation"], Quaternion(cs["rotation"]))
        e2w = transform_matrix(pose["translation"], Quaternion(pose["rotation"]))
        np.testing.assert_allclose(c2e, cam.cam_to_ego, atol=1e-12)
        np.testing.assert_allclose(e2w @ c2e, ep.cam_to_world[1, n], atol=1e-9)
        np.testing.assert_allclose(e2w, ep.ego_to_world[1], atol=1e-9)
        assert "camera_model" not in cs                        # a pinhole camera: exactly nuScenes' fields


def test_timestamps_are_microseconds_of_the_capture_clock(nusc, capture):
    store = open_store(capture)
    base = created_microseconds(store.attrs["created"])
    spacing = scene_spacing_us(max(float(e.timestamp[-1]) for e in store))
    assert spacing == 3_600_000_000
    for k, scene in enumerate(nusc.scene):
        ts = [s["timestamp"] for s in walk(nusc, scene)]
        assert all(isinstance(t, int) for t in ts)
        expected = [base + k * spacing + round(float(t) * 1e6) for t in store.episode(k).timestamp]
        assert ts == expected
        assert ts[1] - ts[0] == round(1e6 / store.fps)        # 5 fps: 200 000 µs apart


def test_lidar_file_ring_and_lidarseg(nusc, capture, exported):
    store = open_store(capture)
    ep = store.episode(1)
    sample = walk(nusc, nusc.scene[1])[2]
    sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    assert sd["fileformat"] == "pcd" and sd["filename"].endswith(".pcd.bin")
    pc = LidarPointCloud.from_file(str(exported / sd["filename"]))
    r = ep.lidar_range[2]
    ok = np.isfinite(r)
    assert pc.points.shape == (4, int(ok.sum()))
    raw = np.fromfile(exported / sd["filename"], dtype="<f4").reshape(-1, 5)
    np.testing.assert_array_equal(raw[:, 4], np.nonzero(ok)[0])          # ring = the range-image row
    np.testing.assert_allclose(np.linalg.norm(raw[:, :3], axis=1), r[ok], rtol=1e-6)
    assert (raw[:, 3] == 1.0).all()
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    np.testing.assert_allclose(transform_matrix(cs["translation"], Quaternion(cs["rotation"])),
                               store.lidar.lidar_to_ego, atol=1e-12)
    assert cs["camera_intrinsic"] == [] and nusc.get("sensor", cs["sensor_token"])["modality"] == "lidar"
    assert len(nusc.lidarseg) == 2 * FRAMES
    seg = next(s for s in nusc.lidarseg if s["sample_data_token"] == sd["token"])
    labels = load_bin_file(str(exported / seg["filename"]))
    tags = ep.lidar_tag[2][ok]
    np.testing.assert_array_equal(labels, lidarseg_indices(tags))
    road = [c["index"] for c in nusc.category if c["name"] == "flat.driveable_surface"][0]
    assert road == 24 and (labels[tags == 1] == road).all() and (labels == road).any()
    raw_tags = np.fromfile(exported / extras(exported)[sd["token"]]["tags_filename"], dtype=np.uint8)
    np.testing.assert_array_equal(raw_tags, tags)


def test_lidar_points_land_on_the_exported_depth_through_the_devkit_chain(nusc, exported):
    ex = extras(exported)
    agree = total = 0
    for scene in nusc.scene:
        for sample in walk(nusc, scene):
            lid = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
            for channel in ("CAM_FRONT", "CAM_BACK_LEFT"):
                cam = nusc.get("sample_data", sample["data"][channel])
                pc = LidarPointCloud.from_file(nusc.get_sample_data_path(lid["token"]))
                for rec, sign in ((nusc.get("calibrated_sensor", lid["calibrated_sensor_token"]), 1),
                                  (nusc.get("ego_pose", lid["ego_pose_token"]), 1),
                                  (nusc.get("ego_pose", cam["ego_pose_token"]), -1),
                                  (nusc.get("calibrated_sensor", cam["calibrated_sensor_token"]), -1)):
                    R = Quaternion(rec["rotation"]).rotation_matrix
                    if sign > 0:                                   # sensor -> ego, ego -> global
                        pc.rotate(R)
                        pc.translate(np.array(rec["translation"]))
                    else:                                          # global -> ego, ego -> camera
                        pc.translate(-np.array(rec["translation"]))
                        pc.rotate(R.T)
                K = np.array(nusc.get("calibrated_sensor", cam["calibrated_sensor_token"])["camera_intrinsic"])
                z = pc.points[2]
                front = z > 1.0
                uv = view_points(pc.points[:3, front], K, normalize=True)[:2]
                depth = np.load(exported / ex[cam["token"]]["depth_filename"])
                H, W = depth.shape
                inside = (uv[0] >= 1) & (uv[0] < W - 1) & (uv[1] >= 1) & (uv[1] < H - 1)
                u, v = np.floor(uv[:, inside]).astype(int)
                zi = z[front][inside]
                win = np.stack([depth[v + dv, u + du] for dv in (-1, 0, 1) for du in (-1, 0, 1)])
                smooth = np.isfinite(win).all(0) & (win.max(0) - win.min(0) < 0.04 * zi)
                agree += int((np.abs(depth[v, u] - zi)[smooth] < 0.01 * zi[smooth]).sum())
                total += int(smooth.sum())
    assert total > 300, total
    assert agree > 0.97 * total, (agree, total)


def test_extras_hold_the_captured_depth_and_semantics_exactly(nusc, capture, exported):
    import imageio.v3 as iio  # lazy: only this test reads PNGs back

    store = open_store(capture)
    ep, ex = store.episode(0), extras(exported)
    sample = walk(nusc, nusc.scene[0])[0]
    for n, name in enumerate(store.rig.names):
        rec = ex[sample["data"][channel_name(name)]]
        np.testing.assert_array_equal(np.load(exported / rec["depth_filename"]), ep.depth[0, n])   # inf kept
        np.testing.assert_array_equal(iio.imread(exported / rec["semantic_filename"]), ep.semantic[0, n])
    meta = json.loads((exported / VERSION / "nfldm_export.json").read_text())
    assert meta["format"] == "nfldm.nuscenes_export" and meta["source_info"]["town"] == "Town03"


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_two_exports_are_byte_identical_and_episodes_select_scenes(capture, exported, tmp_path):
    again = tmp_path / "again"
    export_capture(capture, again, version=VERSION)
    assert _digest(again) == _digest(exported)
    one = export_capture(capture, tmp_path / "one", version=VERSION, episodes="1")
    assert one.scenes == ("Town03-episode_0001",) and one.samples == FRAMES
    nusc = nuscenes.NuScenes(version=VERSION, dataroot=str(tmp_path / "one"), verbose=False)
    full = nuscenes.NuScenes(version=VERSION, dataroot=str(exported), verbose=False)
    assert nusc.scene[0]["token"] == full.scene[1]["token"]            # tokens do not depend on the selection
    first = full.get("sample", full.scene[1]["first_sample_token"])
    assert nusc.get("sample", nusc.scene[0]["first_sample_token"])["timestamp"] == first["timestamp"]


def test_errors_come_before_anything_is_written(capture, exported, tmp_path):
    run = lambda *a: CliRunner().invoke(cli, ["export-nuscenes", *a])  # noqa: E731
    r = run(str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "a"))
    assert r.exit_code == 1 and "no capture store" in r.output and not (tmp_path / "a").exists()
    r = run(capture, "--out", str(tmp_path / "b"), "--episodes", "7")
    assert r.exit_code == 1 and "episode 7 out of range" in r.output and not (tmp_path / "b").exists()
    r = run(capture, "--out", str(tmp_path / "c"), "--version", "../x")
    assert r.exit_code == 1 and "nuScenes version" in r.output and not (tmp_path / "c").exists()
    before = _digest(exported)
    r = run(capture, "--out", str(exported), "--version", VERSION)
    assert r.exit_code == 1 and "pass --overwrite" in r.output and _digest(exported) == before
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    r = run(capture, "--out", str(other), "--overwrite")
    assert r.exit_code == 1 and "refusing to replace it" in r.output and (other / "notes.txt").read_text() == "keep me"
    replaced = tmp_path / "replaced"
    export_capture(capture, replaced, episodes="0", version=VERSION)
    r = run(capture, "--out", str(replaced), "--overwrite", "--version", VERSION, "--image-format", "png")
    assert r.exit_code == 0, r.output
    assert not list(replaced.rglob("*.jpg")) and list(replaced.rglob("*.png"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]          # no staging folder left behind


# ============================================================================================ the writer alone
def test_quaternions_are_w_x_y_z_and_round_trip():
    c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
    yaw90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(matrix_to_quaternion(yaw90), [c, 0.0, 0.0, s], atol=1e-15)
    np.testing.assert_allclose(Quaternion(matrix_to_quaternion(yaw90)).rotation_matrix, yaw90, atol=1e-15)
    rng = np.random.default_rng(0)
    flips = [np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]), np.diag([-1.0, -1.0, 1.0])]   # 180° turns
    for R in [*flips, *(Quaternion(rng.normal(size=4)).rotation_matrix for _ in range(50))]:
        q = matrix_to_quaternion(R)
        assert q[0] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-12
        np.testing.assert_allclose(Quaternion(q).rotation_matrix, R, atol=1e-12)
        np.testing.assert_allclose(quaternion_to_matrix(q), R, atol=1e-12)
        ref = Quaternion(matrix=R).elements
        np.testing.assert_allclose(q, ref if ref[0] >= 0 else -ref, atol=1e-9)


def _camera(channel="CAM_FRONT", t=0, **kw) -> CameraReading:
    K = np.array([[32.0, 0, 32], [0, 32, 24], [0, 0, 1]])
    c2e = np.array([[0.0, 0, 1, 1.5], [-1, 0, 0, 0], [0, -1, 0, 1.6], [0, 0, 0, 1]])
    base = dict(channel=channel, rgb=np.full((48, 64, 3), 100, np.uint8), K=K, cam_to_ego=c2e, ego_to_world=np.eye(4),
                timestamp_us=t)
    return CameraReading(**{**base, **kw})


def test_fisheye_cameras_record_their_model_and_bad_readings_are_named(tmp_path):
    with NuScenesWriter(tmp_path / "fish", "v1.0-fish") as w:
        w.add_scene("fish", [Sample(0, [_camera(model="opencv_fisheye", distortion=[0.1, 0.01, 0, 0])])],
                    location="here", date_captured="2026-01-01")
    cs = json.loads((tmp_path / "fish" / "v1.0-fish" / "calibrated_sensor.json").read_text())[0]
    assert cs["camera_model"] == "opencv_fisheye" and cs["camera_distortion"] == [0.1, 0.01, 0.0, 0.0]
    nuscenes.NuScenes(version="v1.0-fish", dataroot=str(tmp_path / "fish"), verbose=False)

    cases = [
        ([Sample(0, [_camera(rgb=np.zeros((48, 64, 3), np.float32))])], "rgb must be \\[H, W, 3\\] uint8"),
        ([Sample(5, [_camera(t=5)]), Sample(5, [_camera(t=5)])], "does not increase"),
        ([Sample(0, [_camera()]), Sample(1, [_camera(t=1, K=np.diag([40.0, 40.0, 1.0]))])], "mount or intrinsics"),
        ([Sample(0, [_camera(depth=np.zeros((2, 2), np.float32))])], "depth must be \\[48, 64\\]"),
        ([Sample(0, [_camera(ego_to_world=np.diag([1.0, 1.0, -1.0, 1.0]))])], "ego_to_world is not a rigid"),
        ([Sample(0, [], LidarReading(np.zeros((3, 4), np.float32), np.zeros(2, int), np.eye(4), np.eye(4), 0))],
         "ring must be \\[3\\] integers"),
        ([], "has no samples"),
    ]
    for i, (samples, message) in enumerate(cases):
        out = tmp_path / f"bad{i}"
        with pytest.raises(ExportError, match=message):
            with NuScenesWriter(out) as w:
                w.add_scene("s", samples, location="here", date_captured="2026-01-01")
        assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(ExportError, match="distinct start times"):
        with NuScenesWriter(tmp_path / "tie") as w:
            for name in ("a", "b"):
                w.add_scene(name, [Sample(0, [_camera()])], location="here", date_captured="2026-01-01")
    assert not (tmp_path / "tie").exists()
