"""Fisheye rig cameras in capture: the numpy camera models (sim_bridge.camera_models), rig files, the procedural
simulator's fisheye rays and car culling, `sim_bridge collect --rig FILE` with a fisheye camera (its depth reprojects
into the rig's pinhole camera) and CARLA refusing fisheye rigs before it connects."""
import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import carla_standin as cs
from sim_bridge import semantics as sem
from sim_bridge.backends.carla_backend import CarlaBackend
from sim_bridge.backends.procedural.camera_rays import CameraRays
from sim_bridge.backends.procedural.car_culling import car_pixel_mask
from sim_bridge.camera_models import fisheye_distort, fisheye_undistort, project_normalized, unproject_normalized
from sim_bridge.cli import main as cli
from sim_bridge.rig import Rig, RigCamera, RigError, intrinsics_from_fov, mount_to_cam_to_ego

K4 = np.array([0.03, -0.01, 0.002, -0.0004])
S = 64


def fisheye_rig(size: int = S) -> Rig:
    """A forward pinhole camera and two fisheye cameras at the same mount (opencv 120°, equidistant 110°)."""
    mount = mount_to_cam_to_ego(0.8, 0.0, 1.5)
    return Rig((
        RigCamera("front", intrinsics_from_fov(90.0, size, size), size, size, mount),
        RigCamera("front_fish", intrinsics_from_fov(120.0, size, size, model="opencv_fisheye", distortion=K4), size,
                  size, mount, "opencv_fisheye", K4),
        RigCamera("front_eq", intrinsics_from_fov(110.0, size, size, model="equidistant"), size, size, mount,
                  "equidistant"),
    ))


def pixel_dirs(cam: RigCamera, model: str | None = None) -> np.ndarray:
    """[H*W, 3] camera-frame directions (z = 1) of the pixel centres of `cam` taken as `model` (default its own)."""
    u, v = np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5)
    m = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], 1) @ np.linalg.inv(cam.K).T
    return unproject_normalized(m[:, :2], model or cam.model, cam.distortion)


# ------------------------------------------------------------------------------------------------ models and rigs
def test_numpy_models_are_analytic_and_match_the_sdk():
    from nfldm_sdk.cameras.pinhole import Cameras  # the SDK's torch twin must give the same rays

    theta = np.radians([0.0, 10.0, 45.0, 80.0])
    p = np.stack([np.sin(theta), np.zeros(4), np.cos(theta)], 1) * 5.0
    np.testing.assert_allclose(project_normalized(p, "equidistant", np.zeros(4))[:, 0], theta, atol=1e-12)
    th = np.linspace(0.0, 1.4, 30)
    np.testing.assert_allclose(fisheye_undistort(fisheye_distort(th, K4), K4), th, atol=1e-12)
    m = project_normalized(p, "opencv_fisheye", K4)
    np.testing.assert_allclose(unproject_normalized(m, "opencv_fisheye", K4) * p[:, 2:], p, atol=1e-10)
    for cam in fisheye_rig(24).cameras:
        sdk = Cameras(torch.as_tensor(cam.K), torch.eye(4, dtype=torch.float64), cam.width, cam.height,
                      model=cam.model, distortion=torch.as_tensor(cam.distortion))
        np.testing.assert_allclose(pixel_dirs(cam), sdk.camera_directions().reshape(-1, 3).numpy(), atol=1e-12)


def test_rig_file_round_trip_old_files_and_errors(tmp_path):
    rig = fisheye_rig()
    rig.save(tmp_path / "rig.json")
    data = json.loads((tmp_path / "rig.json").read_text())["cameras"]
    assert "model" not in data[0] and data[1]["model"] == "opencv_fisheye" and data[1]["distortion"] == K4.tolist()
    back = Rig.load(tmp_path / "rig.json")
    assert back.models() == ["pinhole", "opencv_fisheye", "equidistant"] and not back.is_pinhole
    np.testing.assert_array_equal(back.cameras[1].distortion, K4)
    assert back.to_list() == rig.to_list()
    half = back.with_size(32, 32)
    assert half.models() == back.models() and np.array_equal(half.cameras[1].distortion, K4)
    old = [{k: v for k, v in c.items() if k not in ("model", "distortion")} for c in data[:1]]
    (tmp_path / "old.json").write_text(json.dumps({"cameras": old}))
    assert Rig.load(tmp_path / "old.json").is_pinhole
    wide = dict(data[2], K=intrinsics_from_fov(170.0, S, S, model="equidistant").tolist())
    (tmp_path / "wide.json").write_text(json.dumps({"cameras": [wide]}))
    with pytest.raises(RigError, match=r"wide.json: camera 'front_eq': the equidistant camera sees 90° or more"):
        Rig.load(tmp_path / "wide.json")
    with pytest.raises(RigError, match="unknown camera model 'fish'"):
        Rig.from_list([dict(data[1], model="fish")])
    with pytest.raises(RigError, match="takes no distortion coefficients"):
        Rig.from_list([dict(data[0], distortion=[0.1, 0, 0, 0])])


def test_carla_refuses_a_fisheye_rig_before_connecting():
    server = cs.StandinServer(map_name="Town03")
    with pytest.raises(RigError, match=r"CARLA has no fisheye camera sensor.*'front_fish' \(opencv_fisheye\).*"
                                       r"--backend procedural"):
        CarlaBackend("Town03", "ClearNoon", fisheye_rig(32), client_factory=server.client_factory)
    assert server.clients == []


# ------------------------------------------------------------------------------------------------ procedural rays
def test_fisheye_rays_have_unit_depth_per_parameter():
    rig = fisheye_rig(16)
    rays = CameraRays(rig)
    np.testing.assert_array_equal(rays.dirs_cam[..., 2], 1.0)          # t_hit is planar depth for every model
    np.testing.assert_allclose(rays.dirs_cam[1], pixel_dirs(rig.cameras[1]), atol=1e-12)
    # the fisheye camera sees farther off axis than the pinhole one of the same image, and less than 90°
    widest = lambda d: np.degrees(np.arctan(np.hypot(d[:, 0], d[:, 1]).max()))  # noqa: E731
    assert widest(rays.dirs_cam[0]) < 55.0 < 75.0 < widest(rays.dirs_cam[1]) < 90.0


def _boxes(centres: np.ndarray, size: np.ndarray) -> np.ndarray:
    """[K,8,3] axis-aligned box corners in the order car_pixel_mask's edges use (index = x + 2y + 4z)."""
    bits = np.array([[i & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], float) - 0.5
    return centres[:, None, :] + bits[None] * size


def test_fisheye_car_mask_holds_every_pixel_whose_ray_meets_a_box():
    rig = fisheye_rig(40)
    rays = CameraRays(rig)
    g = np.random.default_rng(0)
    for trial in range(6):
        centres = np.c_[g.uniform(1.0, 12.0, 5), g.uniform(-8.0, 8.0, 5), g.uniform(-1.0, 1.0, 5)]
        boxes = _boxes(centres, np.array([4.4, 2.0, 1.6]))
        c2w = np.repeat(np.eye(4)[None], 3, 0) @ rig.cam_to_ego()
        mask = car_pixel_mask(boxes, c2w, rig, dirs_cam=rays.dirs_cam).reshape(3, -1)
        for n in (1, 2):                                               # the fisheye cameras
            d = rays.dirs_cam[n] @ c2w[n, :3, :3].T                    # world directions, camera z = 1 per unit
            o = c2w[n, :3, 3]
            with np.errstate(divide="ignore", invalid="ignore"):
                inv = 1.0 / d
                lo = (boxes.min(1)[:, None] - o) * inv[None]           # [K, P, 3]
                hi = (boxes.max(1)[:, None] - o) * inv[None]
            t0 = np.nanmax(np.minimum(lo, hi), -1)
            t1 = np.nanmin(np.maximum(lo, hi), -1)
            hit = ((t1 > t0) & (t1 > 0.06)).any(0)                     # beyond the 5 cm near plane
            assert not (hit & ~mask[n]).any(), (trial, n)              # conservative
            assert hit.any() and mask[n].mean() < 0.6                  # and not simply everything


# ------------------------------------------------------------------------------------------------ a fisheye capture
def _inverse_depth_at(depth: np.ndarray, uv: np.ndarray):
    """Bilinear 1/depth of a pinhole depth image at pixel coordinates uv [P, 2] (exact for planes)."""
    H, W = depth.shape
    x, y = uv[:, 0] - 0.5, uv[:, 1] - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    ok = (x0 >= 0) & (y0 >= 0) & (x0 < W - 1) & (y0 < H - 1)
    x0, y0, ax, ay = x0[ok], y0[ok], (x - np.floor(x))[ok], (y - np.floor(y))[ok]
    inv = 1.0 / depth.astype(np.float64)
    d = [inv[y0, x0], inv[y0, x0 + 1], inv[y0 + 1, x0], inv[y0 + 1, x0 + 1]]
    return ok, (d[0] * (1 - ax) + d[1] * ax) * (1 - ay) + (d[2] * (1 - ax) + d[3] * ax) * ay


def _reprojection_errors(fd, rig: Rig, src: int, dst: int, model: str | None = None) -> np.ndarray:
    """Relative depth errors of camera `src`'s static pixels (unprojected with `model`, default its own) seen in
    the pinhole camera `dst` of the same frame."""
    cam, pin = rig.cameras[src], rig.cameras[dst]
    z = fd.depth[src].ravel().astype(np.float64)
    keep = np.isfinite(z) & (fd.semantic[src].ravel() != sem.CAR) & (z < 80)
    world = (pixel_dirs(cam, model)[keep] * z[keep, None]) @ fd.cam_to_world[src, :3, :3].T + fd.cam_to_world[src, :3, 3]
    w2c = np.linalg.inv(fd.cam_to_world[dst])
    pc = world @ w2c[:3, :3].T + w2c[:3, 3]
    pc = pc[pc[:, 2] > 0.5]
    uv = pc[:, :2] / pc[:, 2:3] @ pin.K[:2, :2].T + pin.K[:2, 2]
    ok, inv = _inverse_depth_at(fd.depth[dst], uv)
    zz = pc[ok, 2]
    good = inv > 0                                                     # a sky neighbour gives 1/inf = 0
    return np.abs(1.0 / inv[good] - zz[good]) / zz[good]


def test_collect_with_a_fisheye_rig_file_reprojects_into_its_pinhole_camera(tmp_path):
    from sim_bridge import open_store  # the reader, after the capture

    path = tmp_path / "fisheye.json"
    fisheye_rig().save(path)
    out = tmp_path / "fish.zarr"
    result = CliRunner().invoke(cli, ["collect", "--out", str(out), "--backend", "procedural", "--town", "Town03",
                                      "--frames", "1", "--fps", "5", "--seed", "0", "--quiet", "--rig", str(path)])
    assert result.exit_code == 0, result.output
    store = open_store(str(out))
    assert store.rig.models() == ["pinhole", "opencv_fisheye", "equidistant"]
    assert store.attrs["rig"][1]["distortion"] == K4.tolist()
    fd = store.episode(0).frame_data(0)
    assert fd.rgb.shape == (3, S, S, 3) and fd.semantic.shape == (3, S, S)
    for n in range(3):
        assert np.array_equal(~np.isfinite(fd.depth[n]), fd.semantic[n] == sem.SKY)      # sky <=> no hit
        assert 0.3 < np.isfinite(fd.depth[n]).mean() < 1.0
    for src in (1, 2):
        err = _reprojection_errors(fd, store.rig, src, 0)
        assert len(err) > 800, (src, len(err))
        # exact geometry gives ~1e-7 (float32 depth); the wrong ray model gives ~0.1-0.3
        assert np.median(err) < 1e-4 and np.mean(err < 1e-3) > 0.7, (src, np.median(err), np.mean(err < 1e-3))
        wrong = _reprojection_errors(fd, store.rig, src, 0, model="pinhole")
        assert np.median(wrong) > 0.03, (src, np.median(wrong))
    assert CliRunner().invoke(cli, ["validate", str(out)]).exit_code == 0
    # the SDK reads the capture's rig with its fisheye cameras
    from nfldm_sdk.cameras.rig import CameraRig  # the SDK twin of the rig format

    assert CameraRig.from_store(str(out)).models() == store.rig.models()
    assert math.isclose(CameraRig.from_store(str(out))["front_fish"].hfov_deg, 120.0, rel_tol=1e-9)
