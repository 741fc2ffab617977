"""Fisheye cameras (nfldm_sdk.cameras.projection, Cameras models): analytic projections, round trips, mixed batches,
validation, rig JSON, the render paths (rays, ray length, frustum points, frustum checks) and a depth reprojection
between a fisheye and a pinhole render of a synthetic field; pinhole outputs stay those of the plain K formulas."""
import json
import math

import numpy as np
import pytest
import torch

from nfldm_sdk.cameras.pinhole import CameraError, Cameras, intrinsics_from_fov
from nfldm_sdk.cameras.projection import fisheye_distort, fisheye_undistort
from nfldm_sdk.cameras.rig import CameraRig, CameraSpec, RigError, mount_to_cam_to_ego
from nfldm_sdk.fields.lift_splat import frustum_points
from nfldm_sdk.fields.synthetic import driving_like_field
from nfldm_sdk.rendering.api import render_field
from nfldm_sdk.rendering.rays import prepare_rays
from nfldm_sdk.sensors.frustum import frustum_overlap
from nfldm_sdk.sensors.views import ray_length_per_depth

torch.set_num_threads(min(2, torch.get_num_threads()))
F64 = torch.float64
K4 = torch.tensor([0.03, -0.01, 0.002, -0.0004], dtype=F64)


def forward_pose(height: float = 1.6) -> torch.Tensor:
    """cam_to_world of an OpenCV camera at (0, 0, height) looking along world +x (image right = −y, down = −z)."""
    m = torch.eye(4, dtype=F64)
    m[:3, :3] = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]], dtype=F64)
    m[2, 3] = height
    return m


def direction(theta: float, phi: float) -> list[float]:
    """Camera-frame unit vector θ off the optical axis at azimuth φ (from camera x towards y)."""
    return [math.sin(theta) * math.cos(phi), math.sin(theta) * math.sin(phi), math.cos(theta)]


# ------------------------------------------------------------------------------------------------ analytic models
def test_equidistant_radius_is_f_theta_at_known_angles():
    f, cx, cy = 40.0, 32.0, 24.0
    K = torch.tensor([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]], dtype=F64)
    cams = Cameras(K, torch.eye(4, dtype=F64), 64, 48, model="equidistant")
    for deg, phi in [(0.0, 0.0), (10.0, 0.3), (30.0, 0.0), (45.0, math.pi / 2), (60.0, -2.0), (80.0, 2.5)]:
        th = math.radians(deg)
        p = torch.tensor([direction(th, phi)], dtype=F64) * 7.0
        uv, z = cams.world_to_pixels(p)
        r = (uv[0] - torch.tensor([cx, cy], dtype=F64)).norm().item()
        assert r == pytest.approx(f * th, abs=1e-9)                                  # r = f·θ
        assert z.item() == pytest.approx(7.0 * math.cos(th))
        if deg > 0:
            assert math.atan2(uv[0, 1] - cy, uv[0, 0] - cx) == pytest.approx(phi)   # azimuth kept
        assert torch.allclose(cams.pixels_to_world(uv, z), p, atol=1e-10)           # round trip


def test_opencv_fisheye_matches_direct_evaluation_and_round_trips():
    K = torch.tensor([[38.0, 0.4, 33.0], [0.0, 36.0, 23.5], [0.0, 0.0, 1.0]], dtype=F64)
    cams = Cameras(K, forward_pose(), 64, 48, model="opencv_fisheye", distortion=K4)
    g = torch.Generator().manual_seed(0)
    p_cam = torch.randn(400, 3, generator=g, dtype=F64)
    p_cam[:, 2] = p_cam[:, 2].abs() + 0.2                                             # in front, up to ~80° off axis
    world = p_cam @ forward_pose()[:3, :3].T + forward_pose()[:3, 3]
    uv, z = cams.world_to_pixels(world)
    # OpenCV's cv::fisheye::projectPoints written out: θ = atan(r), θ_d = θ(1 + k1θ² + k2θ⁴ + k3θ⁶ + k4θ⁸),
    # (x', y') = θ_d/r (a, b), u = fx (x' + α y') + cx with fx·α = K[0,1], v = fy y' + cy.
    a, b = p_cam[:, 0] / p_cam[:, 2], p_cam[:, 1] / p_cam[:, 2]
    r = torch.sqrt(a * a + b * b)
    th = torch.atan(r)
    k1, k2, k3, k4 = K4.tolist()
    th_d = th * (1 + k1 * th**2 + k2 * th**4 + k3 * th**6 + k4 * th**8)
    xd, yd = th_d / r * a, th_d / r * b
    u = K[0, 0] * xd + K[0, 1] * yd + K[0, 2]
    v = K[1, 1] * yd + K[1, 2]
    assert torch.allclose(uv, torch.stack([u, v], -1), atol=1e-10)
    assert torch.allclose(z, p_cam[:, 2], atol=1e-12)                                 # planar depth
    assert torch.allclose(cams.pixels_to_world(uv, z), world, atol=1e-9)
    # the inverse of the polynomial, at known angles
    theta = torch.linspace(0.0, 1.4, 50, dtype=F64)
    assert torch.allclose(fisheye_undistort(fisheye_distort(theta, K4), K4), theta, atol=1e-12)


def test_rays_pass_through_their_pixels():
    K = intrinsics_from_fov(150.0, 40, 24, dtype=F64, model="opencv_fisheye", distortion=K4)
    cams = Cameras(K, forward_pose(), 40, 24, model="opencv_fisheye", distortion=K4)
    rays = cams.rays()
    assert torch.allclose(rays.directions.norm(dim=-1), torch.ones(24, 40, dtype=F64), atol=1e-12)
    pts = (rays.origins + 3.0 * rays.directions).reshape(-1, 3)                        # 3 m along each ray
    uv, z = cams.world_to_pixels(pts)
    assert torch.allclose(uv, cams.pixel_centers().reshape(-1, 2), atol=1e-9)
    # z_per_t is cos θ: the point 3 m along the ray has planar depth 3 · z_per_t
    assert torch.allclose(z, 3.0 * rays.z_per_t.reshape(-1), atol=1e-12)
    # the image's horizontal edges sit 75° off axis (intrinsics_from_fov's definition for a fisheye)
    edge = cams.pixels_to_camera(torch.tensor([[0.0, 12.0], [40.0, 12.0]], dtype=F64))
    assert torch.allclose(torch.atan2(edge[:, 0].abs(), edge[:, 2]), torch.full((2,), math.radians(75.0), dtype=F64))
    assert cams.model == "opencv_fisheye" and not cams.is_pinhole
    assert CameraSpec("f", K.numpy(), 40, 24, mount_to_cam_to_ego(0, 0, 1.6), "opencv_fisheye",
                      K4.numpy()).hfov_deg == pytest.approx(150.0)


# ------------------------------------------------------------------------------------------------ pinhole unchanged
def test_pinhole_outputs_are_the_plain_k_formulas_bit_for_bit():
    g = torch.Generator().manual_seed(3)
    K = intrinsics_from_fov(70.0, 9, 7).repeat(4, 1, 1)
    K[:, 0, 1] = 0.3
    K[:, 1, 1] *= 1.1
    c2w = torch.eye(4).repeat(4, 1, 1)
    c2w[:, :3, 3] = torch.randn(4, 3, generator=g)
    cams = Cameras(K, c2w, 9, 7)
    assert cams.model == "pinhole" and cams.is_pinhole and torch.equal(cams.distortion, torch.zeros(4, 4))
    # the computation as it is written with K alone (the formulas every pinhole path used before camera models)
    uv = cams.pixel_centers()
    uv1 = torch.cat([uv, torch.ones_like(uv[..., :1])], -1)
    d_cam = torch.einsum("...ij,hwj->...hwi", torch.linalg.inv(K), uv1)
    norm = d_cam.norm(dim=-1)
    rays = cams.rays()
    assert torch.equal(rays.directions, torch.einsum("...ij,...hwj->...hwi", c2w[:, :3, :3], d_cam / norm[..., None]))
    assert torch.equal(rays.z_per_t, d_cam[..., 2] / norm)
    assert torch.equal(ray_length_per_depth(cams), torch.einsum("vij,hwj->vhwi", torch.linalg.inv(K), uv1).norm(dim=-1))
    pts = torch.randn(4, 20, 3, generator=g) + torch.tensor([0.0, 0.0, 5.0])
    w2c = cams.world_to_cam
    p_cam = pts @ w2c[..., :3, :3].transpose(-1, -2) + w2c[..., None, :3, 3]
    uvw = p_cam @ K.transpose(-1, -2)
    got_uv, got_z = cams.world_to_pixels(pts)
    assert torch.equal(got_uv, uvw[..., :2] / p_cam[..., 2:3]) and torch.equal(got_z, p_cam[..., 2])
    q, z = torch.rand(4, 20, 2, generator=g) * 9, torch.rand(4, 20, generator=g) * 10
    pc = (torch.cat([q, torch.ones_like(q[..., :1])], -1) @ torch.linalg.inv(K).transpose(-1, -2)) * z[..., None]
    assert torch.equal(cams.pixels_to_world(q, z), pc @ c2w[:, :3, :3].transpose(-1, -2) + c2w[:, None, :3, 3])


def test_pinhole_rays_keep_their_stored_values():
    # Values computed with the pinhole-only implementation (a skewed, off-centre 3x2 camera looking along +x).
    K = torch.tensor([[3.0, 0.25, 1.75], [0.0, 2.5, 1.0], [0.0, 0.0, 1.0]], dtype=F64)
    m = torch.tensor([[0.0, 0.0, 1.0, 1.0], [-1.0, 0.0, 0.0, 2.0], [0.0, -1.0, 0.0, 1.5], [0, 0, 0, 1]], dtype=F64)
    cams = Cameras(K, m, 3, 2)
    stored = [[0.9128709291752769, 0.36514837167011066, 0.18257418583505539],
              [0.9784921095801633, 0.06523280730534416, 0.19569842191603268],
              [0.9486832980505138, -0.2529822128134703, 0.18973665961010275],
              [0.9024852563942802, 0.3910769444375214, -0.1804970512788561],
              [0.9759000729485331, 0.09759000729485323, -0.19518001458970669],
              [0.9558794818157492, -0.2230385457570081, -0.1911758963631499]]
    rays = cams.rays()
    assert torch.allclose(rays.directions.reshape(-1, 3), torch.tensor(stored, dtype=F64), rtol=0, atol=1e-15)
    assert torch.allclose(rays.z_per_t.reshape(-1), torch.tensor(stored, dtype=F64)[:, 0], rtol=0, atol=1e-15)
    uv, z = cams.world_to_pixels(torch.tensor([[5.0, 1.0, 2.0], [3.0, -2.0, 0.5]], dtype=F64))
    assert torch.allclose(uv, torch.tensor([[2.46875, 0.6875], [7.875, 2.25]], dtype=F64), atol=1e-14)
    assert torch.equal(z, torch.tensor([4.0, 2.0], dtype=F64))
    back = cams.pixels_to_world(torch.tensor([[0.5, 0.5], [2.0, 1.5]], dtype=F64), torch.tensor([2.0, 3.0], dtype=F64))
    assert torch.allclose(back, torch.tensor([[3.0, 2.8, 1.9], [4.0, 1.8, 0.9]], dtype=F64), atol=1e-14)


# ------------------------------------------------------------------------------------------------ batches
def mixed_cameras() -> Cameras:
    K = torch.stack([intrinsics_from_fov(90.0, 16, 12, dtype=F64),
                     intrinsics_from_fov(140.0, 16, 12, dtype=F64, model="equidistant"),
                     intrinsics_from_fov(140.0, 16, 12, dtype=F64, model="opencv_fisheye", distortion=K4)])
    dist = torch.stack([torch.zeros(4, dtype=F64), torch.zeros(4, dtype=F64), K4])
    return Cameras(K, forward_pose().expand(3, 4, 4), 16, 12, model=["pinhole", "equidistant", "opencv_fisheye"],
                   distortion=dist)


def test_mixed_batches_index_stack_reshape_resize_and_move():
    cams = mixed_cameras()
    assert cams.model == "mixed" and cams.model_names() == ["pinhole", "equidistant", "opencv_fisheye"]
    singles = [cams[i] for i in range(3)]
    assert [c.model for c in singles] == ["pinhole", "equidistant", "opencv_fisheye"]
    rays = cams.rays()
    for i, c in enumerate(singles):                                # a mixed batch = its cameras one by one
        assert torch.allclose(rays.directions[i], c.rays().directions, atol=1e-14)
    assert torch.equal(rays.directions[0], Cameras(cams.K[0], cams.cam_to_world[0], 16, 12).rays().directions)
    both = Cameras.stack([cams, cams], dim=1)                                        # [3, 2]
    assert both.model_names() == [[n, n] for n in cams.model_names()]
    assert both.reshape(6).model_names()[4:] == ["opencv_fisheye"] * 2
    assert both[:, 0][torch.tensor([2, 0])].model_names() == ["opencv_fisheye", "pinhole"]
    assert Cameras.stack([singles[1], singles[1]]).model == "equidistant"
    moved = cams.to(dtype=torch.float32)
    assert moved.model == "mixed" and moved.distortion.dtype == torch.float32
    assert torch.allclose(moved.rays().directions.double(), rays.directions, atol=1e-5)
    # resizing scales K only: a fisheye camera keeps its field of view
    small = cams.resized(8, 6)
    edge = small.pixels_to_camera(torch.tensor([[0.0, 3.0]], dtype=F64))            # [3, 1, 3]
    assert torch.allclose(torch.atan2(edge[1:, 0, 0].abs(), edge[1:, 0, 2]),
                          torch.full((2,), math.radians(70.0), dtype=F64))
    # one model name per camera broadcasts over time: [N] names with [T, N] poses
    tn = Cameras(cams.K, cams.cam_to_world.expand(2, 3, 4, 4), 16, 12, model=cams.model_names(),
                 distortion=cams.distortion)
    assert tn.batch_shape == (2, 3) and tn[1].model_names() == cams.model_names()


def test_bad_models_and_coefficients_are_refused():
    eye = torch.eye(4)
    K = intrinsics_from_fov(90.0, 32, 32)
    with pytest.raises(CameraError, match="unknown camera model 'fish'"):
        Cameras(K, eye, 32, 32, model="fish")
    with pytest.raises(CameraError, match="pinhole camera but has distortion"):
        Cameras(K, eye, 32, 32, distortion=torch.tensor([0.1, 0.0, 0.0, 0.0]))
    with pytest.raises(CameraError, match="equidistant camera but has distortion"):
        Cameras(K, eye, 32, 32, model="equidistant", distortion=torch.tensor([0.1, 0.0, 0.0, 0.0]))
    with pytest.raises(CameraError, match=r"distortion must be \[..., 4\]"):
        Cameras(K, eye, 32, 32, model="opencv_fisheye", distortion=torch.zeros(3))
    with pytest.raises(CameraError, match="NaN or inf"):
        Cameras(K, eye, 32, 32, model="opencv_fisheye", distortion=torch.tensor([math.nan, 0.0, 0.0, 0.0]))
    # 170° across the width of a square image puts its corners 120° off axis: planar depth is undefined there
    wide = intrinsics_from_fov(170.0, 32, 32, model="equidistant")
    with pytest.raises(CameraError, match="90° or more off its optical axis.*below 180°"):
        Cameras(wide, eye, 32, 32, model="equidistant")
    # k1 = -0.5 makes θ_d(θ) turn back at 46.7°, before this image's corner: no unique inverse
    with pytest.raises(CameraError, match="stops increasing at θ = 46.7°"):
        Cameras(intrinsics_from_fov(90.0, 32, 32, model="equidistant"), eye, 32, 32, model="opencv_fisheye",
                distortion=torch.tensor([-0.5, 0.0, 0.0, 0.0]))
    with pytest.raises(CameraError, match="do not broadcast"):
        Cameras(K, eye.expand(3, 4, 4), 32, 32, model=["pinhole", "equidistant"])


# ------------------------------------------------------------------------------------------------ rigs
def fisheye_rig(size: int = 32) -> CameraRig:
    mount = mount_to_cam_to_ego(0.8, 0.0, 1.5)
    return CameraRig((CameraSpec.from_fov("front", 90.0, size, size, mount),
                      CameraSpec.from_fov("front_fish", 120.0, size, size, mount, model="opencv_fisheye",
                                          distortion=K4.tolist()),
                      CameraSpec.from_fov("left_eq", 120.0, size, size, mount_to_cam_to_ego(0, 0.5, 1.5, 90),
                                          model="equidistant")))


def test_rig_json_round_trip_and_old_files(tmp_path):
    from sim_bridge.rig import Rig  # the capture package's twin reads the same files

    rig = fisheye_rig()
    path = rig.save(tmp_path / "rig.json")
    data = json.loads(path.read_text())["cameras"]
    assert "model" not in data[0] and "distortion" not in data[0]              # pinhole entries stay as they were
    assert data[1]["model"] == "opencv_fisheye" and data[1]["distortion"] == K4.tolist()
    back = CameraRig.load(path)
    assert back == rig and back.models() == ["pinhole", "opencv_fisheye", "equidistant"]
    np.testing.assert_array_equal(back.distortion(), rig.distortion())
    assert back.resized(16, 16)["front_fish"].model == "opencv_fisheye"
    assert back["front_fish"].resized(16, 16).hfov_deg == pytest.approx(120.0)
    # capture and SDK rig files are interchangeable, fisheye cameras included
    sim = Rig.load(path)
    assert sim.models() == back.models() and CameraRig.from_list(sim.to_list()) == rig
    sim.save(tmp_path / "sim.json")
    assert CameraRig.load(tmp_path / "sim.json") == rig
    # a file written before camera models existed (no model key) loads as pinhole
    old = [{k: v for k, v in c.items() if k not in ("model", "distortion")} for c in data[:1]]
    (tmp_path / "old.json").write_text(json.dumps({"cameras": old}))
    assert CameraRig.load(tmp_path / "old.json")[0].model == "pinhole"
    cams = rig.cameras(np.eye(4)[None].repeat(2, 0))                                 # [T=2, N=3]
    assert cams.model_names() == [rig.models()] * 2
    assert torch.allclose(cams.distortion[1, 1], K4.float())
    assert CameraRig.preset("capture", 8, 8).cameras(np.eye(4)).is_pinhole
    bad = dict(data[1], model="fisheye")
    with pytest.raises(RigError, match="model 'fisheye'"):
        CameraRig.from_list([bad])
    with pytest.raises(RigError, match="90° or more"):
        CameraRig.from_list([dict(data[2], K=intrinsics_from_fov(170.0, 32, 32, model="equidistant").tolist())])


# ------------------------------------------------------------------------------------------------ render paths
def test_render_paths_use_the_camera_rays():
    cams = mixed_cameras()
    rays = cams.rays()
    # the sensors' ray length per metre of depth is 1 / z_per_t of the actual rays
    assert torch.allclose(ray_length_per_depth(cams), 1.0 / rays.z_per_t, atol=1e-12)
    # the renderers' ray batch carries the same rays
    field = driving_like_field((4, 8, 8), 2, dtype=F64)
    b = prepare_rays(field, cams, 8)
    scale = 2.0 / (field.bounds[1] - field.bounds[0])
    assert torch.allclose(b.d_n[0], (rays.directions * scale).reshape(-1, 3), atol=1e-12)
    assert torch.allclose(b.z_per_t[0], rays.z_per_t.reshape(-1), atol=1e-12)
    # lift/splat's frustum points are the pixels back-projected to each bin's planar depth
    z = torch.tensor([1.0, 4.0, 9.0], dtype=F64)
    pts = frustum_points(cams, z)                                                    # [3, D, H, W, 3]
    uv = cams.pixel_centers().reshape(1, -1, 2)
    for d in range(3):
        want = cams.pixels_to_world(uv, torch.full((1, uv.shape[1]), z[d].item(), dtype=F64))
        assert torch.allclose(pts[:, d].reshape(3, -1, 3), want, atol=1e-12)
    _, zc = cams.world_to_pixels(pts.reshape(3, -1, 3))
    assert torch.allclose(zc.reshape(3, 3, -1), z[None, :, None].expand(3, 3, zc.shape[-1] // 3), atol=1e-12)
    # frustum checks see a box the wide cameras cover and the narrow one does not
    box = torch.tensor([[2.0, 5.0, 0.0], [3.0, 6.0, 1.0]], dtype=F64)                # ~65° to the left
    assert frustum_overlap(cams, box, 0.1, 50.0).tolist() == [False, True, True]


def _inverse_depth_at(depth: torch.Tensor, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear 1/depth of a pinhole depth image at pixel coordinates uv [P, 2] (exact for planes)."""
    H, W = depth.shape
    x, y = uv[:, 0] - 0.5, uv[:, 1] - 0.5
    x0, y0 = x.floor().long(), y.floor().long()
    inside = (x0 >= 0) & (y0 >= 0) & (x0 < W - 1) & (y0 < H - 1)
    x0, y0, ax, ay = x0[inside], y0[inside], (x - x.floor())[inside], (y - y.floor())[inside]
    inv = 1.0 / depth
    val = ((inv[y0, x0] * (1 - ax) + inv[y0, x0 + 1] * ax) * (1 - ay)
           + (inv[y0 + 1, x0] * (1 - ax) + inv[y0 + 1, x0 + 1] * ax) * ay)
    return inside, val


def _reprojection_errors(fish: Cameras, depth_fish: torch.Tensor, pin: Cameras, depth_pin: torch.Tensor):
    zf = depth_fish.reshape(-1)
    ok = torch.isfinite(zf)
    world = fish.pixels_to_world(fish.pixel_centers().reshape(-1, 2)[ok], zf[ok])
    uv, z = pin.world_to_pixels(world)
    inside, inv = _inverse_depth_at(depth_pin, uv)
    z = z[inside]
    both = inv > 0                                                       # a neighbour with no hit gives 1/inf = 0
    return (1.0 / inv[both] - z[both]).abs() / z[both]


def test_fisheye_depth_reprojects_into_a_pinhole_render():
    field = driving_like_field((16, 64, 64), 4, seed=0, dtype=F64)
    S = 48
    K = intrinsics_from_fov(120.0, S, S, dtype=F64, model="opencv_fisheye", distortion=K4)
    fish = Cameras(K, forward_pose(), S, S, model="opencv_fisheye", distortion=K4)
    pin = Cameras.from_fov(90.0, S, S, forward_pose())
    out_f = render_field(field, fish, n_samples=256)
    out_p = render_field(field, pin, n_samples=256)
    err = _reprojection_errors(fish, out_f.depth, pin, out_p.depth)
    assert len(err) > 300
    # both render the same surfaces: rendered depth is an expectation along each ray, so agreement is close, not exact
    assert err.median() < 5e-3 and (err < 0.05).double().mean() > 0.8
    # the same depth taken as a pinhole image (the model ignored) lands elsewhere: the check can fail
    wrong = _reprojection_errors(Cameras(K, forward_pose(), S, S), out_f.depth, pin, out_p.depth)
    assert wrong.median() > 0.05
    # range is the ray length: depth · |d_cam| = depth / cos θ
    rng = out_f.depth * ray_length_per_depth(fish.reshape(1))[0]
    hit = torch.isfinite(rng)
    pts = fish.rays().origins[hit] + rng[hit][:, None] * fish.rays().directions[hit]
    assert torch.allclose(fish.world_to_pixels(pts)[1], out_f.depth[hit], rtol=1e-9)


def test_triton_renders_fisheye_rays_like_the_reference():
    pytest.importorskip("triton", reason="the fused renderer needs the triton package")
    import nfldm_sdk.rendering.triton_render as rt  # optional: Triton (the interpreter on CPU, see conftest)

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cpu" and not rt.INTERPRETED:
        pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1")
    field = driving_like_field((8, 24, 24), 3, seed=1, device=dev)
    K = intrinsics_from_fov(140.0, 12, 8, model="opencv_fisheye", distortion=K4)
    cams = Cameras(K, forward_pose().float(), 12, 8, model="opencv_fisheye", distortion=K4).to(dev)
    ref = render_field(field, cams, n_samples=48, implementation="reference")
    out = render_field(field, cams, n_samples=48, implementation="triton", grid_dtype=torch.float32)
    assert torch.allclose(out.features, ref.features, atol=2e-4) and torch.allclose(out.alpha, ref.alpha, atol=2e-4)
    hit = torch.isfinite(ref.depth)
    assert hit.any() and torch.equal(hit, torch.isfinite(out.depth))
    assert torch.allclose(out.depth[hit], ref.depth[hit], rtol=1e-3)
