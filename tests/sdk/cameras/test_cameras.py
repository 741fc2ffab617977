"""Cameras: intrinsics from FOV, rays, projection round trips, batching (nfldm_sdk.cameras.pinhole)."""
import math

import pytest
import torch

from nfldm_sdk.cameras.pinhole import Cameras, intrinsics_from_fov

torch.set_num_threads(min(2, torch.get_num_threads()))


def look_at(eye, target, up=(0.0, 0.0, 1.0), dtype=torch.float64) -> torch.Tensor:
    """cam_to_world [4,4] of an OpenCV camera at `eye` looking at `target` (x right, y down, z forward)."""
    eye, target, up = (torch.tensor(v, dtype=dtype) for v in (eye, target, up))
    z = target - eye
    z = z / z.norm()
    x = torch.linalg.cross(z, up)
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    m = torch.eye(4, dtype=dtype)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, eye
    return m


def random_cameras(n: int, seed: int = 0, width: int = 7, height: int = 5, dtype=torch.float64) -> Cameras:
    g = torch.Generator().manual_seed(seed)
    mats = [look_at(torch.randn(3, generator=g).tolist(), (torch.randn(3, generator=g) + 5.0).tolist(), dtype=dtype)
            for _ in range(n)]
    K = intrinsics_from_fov(70.0, width, height, dtype=dtype).repeat(n, 1, 1)
    K[:, 0, 2] += torch.rand(n, generator=g, dtype=dtype)            # off-centre principal points
    K[:, 1, 1] *= 1.0 + 0.1 * torch.rand(n, generator=g, dtype=dtype)  # non-square pixels
    return Cameras(K, torch.stack(mats), width, height)


def test_from_fov_intrinsics():
    # 90° horizontal FOV at 200 px wide: f = 100 / tan(45°) = 100; principal point at the image centre.
    cams = Cameras.from_fov(90.0, 200, 100, torch.eye(4))
    assert torch.allclose(cams.K, torch.tensor([[100.0, 0.0, 100.0], [0.0, 100.0, 50.0], [0.0, 0.0, 1.0]]))
    # 60°: f = 32 / tan(30°) = 55.4256
    K = intrinsics_from_fov(60.0, 64, 48)
    assert K[0, 0].item() == pytest.approx(32 / math.tan(math.radians(30)), rel=1e-6)
    assert K[1, 1] == K[0, 0] and K[0, 2] == 32 and K[1, 2] == 24
    with pytest.raises(ValueError, match="hfov_deg"):
        intrinsics_from_fov(180.0, 10, 10)


def test_resized_keeps_fov_and_centre():
    cams = Cameras.from_fov(90.0, 256, 128, torch.eye(4))
    small = cams.resized(64, 32)
    # f scales with width (64 px at 90° -> f = 32), principal point stays at the centre (32, 16)
    assert torch.allclose(small.K, torch.tensor([[32.0, 0, 32.0], [0, 32.0, 16.0], [0, 0, 1]]))
    assert (small.width, small.height) == (64, 32)


def test_principal_ray_is_optical_axis():
    # Odd size: the centre pixel (3, 2) has centre (3.5, 2.5) = principal point of a centred 7x5 camera.
    m = look_at((1.0, 2.0, 3.0), (4.0, -2.0, 3.0))
    cams = Cameras.from_fov(80.0, 7, 5, m)
    rays = cams.rays()
    assert rays.directions.shape == (5, 7, 3) and rays.origins.shape == (5, 7, 3) and rays.z_per_t.shape == (5, 7)
    assert torch.allclose(rays.directions[2, 3], m[:3, 2], atol=1e-12)      # the camera's +z axis in world
    assert rays.z_per_t[2, 3].item() == pytest.approx(1.0)
    assert torch.allclose(rays.origins, m[:3, 3].expand(5, 7, 3))
    assert torch.allclose(rays.directions.norm(dim=-1), torch.ones(5, 7, dtype=torch.float64))


def test_rays_pixel_geometry_and_z_per_t():
    # Identity camera, 90° FOV, 4x4: f = 2, c = (2, 2). Pixel (0, 0) centre (0.5, 0.5) -> d_cam = (-0.75, -0.75, 1);
    # |d_cam| = sqrt(2.125), so z_per_t = 1 / sqrt(2.125).
    cams = Cameras.from_fov(90.0, 4, 4, torch.eye(4, dtype=torch.float64))
    rays = cams.rays()
    d = torch.tensor([-0.75, -0.75, 1.0], dtype=torch.float64)
    assert torch.allclose(rays.directions[0, 0], d / d.norm())
    assert rays.z_per_t[0, 0].item() == pytest.approx(1 / math.sqrt(2.125))
    # z_per_t converts ray distance to planar depth for every pixel of a rotated camera too
    cams = random_cameras(3, seed=1)
    rays = cams.rays()                                                         # [3, 5, 7]
    t = 2.5
    p = rays.origins + t * rays.directions                                     # [3, 5, 7, 3]
    _, z = cams.world_to_pixels(p.reshape(3, -1, 3))
    assert torch.allclose(z, (t * rays.z_per_t).reshape(3, -1), atol=1e-12)


def test_world_to_pixels_known_point():
    # Camera at the origin looking along world +x (OpenCV z = world x, x = world -y, y = world -z).
    m = look_at((0.0, 0.0, 0.0), (1.0, 0.0, 0.0))
    cams = Cameras.from_fov(90.0, 100, 100, m)                                 # f = 50, c = (50, 50)
    uv, z = cams.world_to_pixels(torch.tensor([[10.0, -2.0, 1.0]], dtype=torch.float64))
    # camera coords (x, y, z) = (2, -1, 10): u = 50 + 50·2/10 = 60, v = 50 + 50·(-1)/10 = 45
    assert torch.allclose(uv, torch.tensor([[60.0, 45.0]], dtype=torch.float64))
    assert z.item() == pytest.approx(10.0)


def test_projection_round_trip_batched():
    cams = random_cameras(4, seed=2).reshape(2, 2)
    g = torch.Generator().manual_seed(3)
    uv = torch.rand(2, 2, 9, 2, generator=g, dtype=torch.float64) * torch.tensor([7.0, 5.0], dtype=torch.float64)
    z = 0.5 + 20 * torch.rand(2, 2, 9, generator=g, dtype=torch.float64)
    p = cams.pixels_to_world(uv, z)                                            # [2, 2, 9, 3]
    uv2, z2 = cams.world_to_pixels(p)
    assert torch.allclose(uv2, uv, atol=1e-9) and torch.allclose(z2, z, atol=1e-9)
    # and the other way round, from world points in front of the cameras
    pts = cams.centers[..., None, :] + 3.0 * cams.cam_to_world[..., None, :3, 2] + 0.3 * torch.randn(2, 2, 5, 3, generator=g, dtype=torch.float64)
    uv3, z3 = cams.world_to_pixels(pts)
    assert torch.allclose(cams.pixels_to_world(uv3, z3), pts, atol=1e-9)


def test_world_to_cam_is_inverse():
    cams = random_cameras(3, seed=4)
    eye = torch.eye(4, dtype=torch.float64).expand(3, 4, 4)
    assert torch.allclose(cams.world_to_cam @ cams.cam_to_world, eye, atol=1e-12)


def test_batching_index_reshape_flatten_to():
    cams = random_cameras(6, seed=5, dtype=torch.float32)
    assert cams.batch_shape == (6,) and len(cams) == 6
    grid = cams.reshape(2, 3)
    assert grid.batch_shape == (2, 3)
    assert torch.equal(grid[1, 2].K, cams[5].K) and grid[1, 2].batch_shape == ()
    assert grid[:, 1:].batch_shape == (2, 2)
    assert grid.flatten().batch_shape == (6,)
    assert torch.equal(grid.flatten().cam_to_world, cams.cam_to_world)
    d = cams.to(dtype=torch.float64)
    assert d.K.dtype == torch.float64 and d.cam_to_world.dtype == torch.float64
    # a shared K broadcasts against batched poses
    shared = Cameras(cams.K[0], cams.cam_to_world, cams.width, cams.height)
    assert shared.K.shape == (6, 3, 3)
    assert Cameras.stack([cams[0], cams[1]]).batch_shape == (2,)
    with pytest.raises(TypeError):
        len(cams[0])
    with pytest.raises(IndexError, match="batch"):
        cams[0, 0]


def test_invalid_inputs_name_the_problem():
    with pytest.raises(ValueError, match="K"):
        Cameras(torch.eye(4), torch.eye(4), 4, 4)
    with pytest.raises(ValueError, match="broadcast"):
        Cameras(torch.eye(3).expand(2, 3, 3), torch.eye(4).expand(3, 4, 4), 4, 4)
    with pytest.raises(ValueError, match="image size"):
        Cameras(torch.eye(3), torch.eye(4), 0, 4)


# ------------------------------------------------------------------------------------------------ validation
def test_invalid_cameras_are_a_clear_error_naming_the_camera_and_the_fix():
    from nfldm_sdk.cameras.pinhole import CameraError
    from nfldm_sdk.errors import NfldmError

    good = random_cameras(4, dtype=torch.float32)
    K, m = good.K.clone(), good.cam_to_world.clone()

    def bad(K=K, m=m, width=7, height=5):
        with pytest.raises(CameraError) as e:
            Cameras(K, m, width, height)
        assert isinstance(e.value, NfldmError) and isinstance(e.value, ValueError)
        return str(e.value)

    m_nan = m.clone()
    m_nan[2, 0, 3] = float("nan")
    assert "cam_to_world of camera 2 holds NaN" in bad(m=m_nan)
    K_zero = K.clone()
    K_zero[1, 0, 0] = 0.0
    msg = bad(K=K_zero)
    assert "camera 1" in msg and "fx=0" in msg and "> 0" in msg
    K_inf = K.clone()
    K_inf[3, 1, 2] = float("inf")
    assert "K of camera 3 holds NaN or inf" in bad(K=K_inf)
    scaled = m.clone()
    scaled[0, :3, :3] *= 1.01                                        # 1 % scale: |RᵀR − I| = 0.0201
    msg = bad(m=scaled)
    assert "camera 0 is not rigid" in msg and "0.0201" in msg and "scale or shear" in msg
    mirrored = m.clone()
    mirrored[1, :3, 0] *= -1.0                                       # x axis flipped: a reflection
    assert "camera 1 is a reflection" in bad(m=mirrored)
    row = m.clone()
    row[3, 3, 0] = 0.5
    assert "camera 3 has bottom row" in bad(m=row)
    skew = K.clone()
    skew[0, 2, 0] = 0.1
    assert "not a pinhole matrix" in bad(K=skew)
    batched = m[None].repeat(2, 1, 1, 1)
    batched[1, 2, 0, 0] = float("nan")
    batched[1, 3, 0, 0] = float("nan")
    assert "camera (1, 2) (and 1 more of batch shape [2, 4])" in bad(K=K[None], m=batched)
    assert "image size must be positive" in bad(width=0)
    with pytest.raises(CameraError, match="image size must be positive"):
        good.resized(0, 5)
    # from_fov validates too
    with pytest.raises(CameraError, match="holds NaN"):
        Cameras.from_fov(90.0, 8, 8, torch.full((4, 4), float("nan")))
    # the tolerance suits float32: rotations composed in float32, or typed with 4 decimals, are accepted
    c, s_ = 0.7071, 0.7071
    typed = torch.tensor([[c, -s_, 0.0, 1.0], [s_, c, 0.0, 2.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    Cameras.from_fov(60.0, 8, 8, typed)
    Cameras.from_fov(60.0, 8, 8, (good.cam_to_world[0] @ good.cam_to_world[1] @ good.cam_to_world[2]).float())


def test_nan_pose_and_zero_focal_length_never_reach_the_renderer():
    """A NaN pose used to render an image (mean value 140) through `render_field`, and to raise a misleading "the
    trajectory probably leaves the scene" in `render_views`; a zero focal length raised torch's `_LinAlgError`
    from ``inv(K)``. Both now stop at `Cameras(...)`, before any rendering."""
    from nfldm_sdk.cameras.pinhole import CameraError

    m = look_at((0.0, 0.0, 0.0), (1.0, 0.0, 0.0))
    m[0, 3] = float("nan")
    with pytest.raises(CameraError, match="holds NaN"):
        Cameras.from_fov(60.0, 8, 8, m)
    K = intrinsics_from_fov(60.0, 8, 8)
    K[0, 0] = 0.0
    with pytest.raises(CameraError, match="fx=0"):
        Cameras(K, torch.eye(4), 8, 8)
