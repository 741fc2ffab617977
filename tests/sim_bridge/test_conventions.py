"""sim_bridge.conventions against the REAL carla package (Transform.get_matrix / Transform.transform)."""
import math

import carla
import numpy as np
import pytest

from sim_bridge import conventions as conv
from sim_bridge.rig import intrinsics_from_fov, mount_to_cam_to_ego

# Axis changes written out independently of the module: mirror y (UE <-> ours); OpenCV -> UE camera local.
S = np.diag([1.0, -1.0, 1.0, 1.0])
A = np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=float)


def random_transforms(n=50, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x, y, z = rng.uniform(-50, 50, 3)
        pitch, yaw, roll = rng.uniform(-89, 89), rng.uniform(-180, 180), rng.uniform(-180, 180)
        out.append(carla.Transform(carla.Location(x=x, y=y, z=z), carla.Rotation(pitch=pitch, yaw=yaw, roll=roll)))
    return out


def mirror(v):
    return np.array([v.x, -v.y, v.z])


def test_ue_matrix_equals_carla_get_matrix():
    for t in random_transforms():
        np.testing.assert_allclose(conv.ue_transform_matrix(t), np.array(t.get_matrix()), atol=1e-5)


def test_cam_and_ego_to_world_are_axis_changes_of_get_matrix():
    for t in random_transforms(seed=1):
        M = np.array(t.get_matrix(), dtype=np.float64)
        np.testing.assert_allclose(conv.carla_to_cam_to_world(t), S @ M @ A, atol=1e-5)
        np.testing.assert_allclose(conv.carla_to_ego_to_world(t), S @ M @ S, atol=1e-5)


def test_points_match_carla_transform_then_mirror():
    rng = np.random.default_rng(2)
    for t in random_transforms(20, seed=3):
        p_cv = rng.uniform(-5, 5, 3)
        # OpenCV -> UE camera local by hand: x_ue = z_cv, y_ue = x_cv, z_ue = -y_cv; then CARLA's own transform.
        p_ue_world = t.transform(carla.Location(x=p_cv[2], y=p_cv[0], z=-p_cv[1]))
        ours = conv.carla_to_cam_to_world(t) @ np.append(p_cv, 1.0)
        np.testing.assert_allclose(ours[:3], mirror(p_ue_world), atol=1e-4)

        p_ego = rng.uniform(-5, 5, 3)  # ego (y left) -> UE actor local (y right)
        p_ue_world = t.transform(carla.Location(x=p_ego[0], y=-p_ego[1], z=p_ego[2]))
        ours = conv.carla_to_ego_to_world(t) @ np.append(p_ego, 1.0)
        np.testing.assert_allclose(ours[:3], mirror(p_ue_world), atol=1e-4)


def test_right_handed_rigid():
    for t in random_transforms(seed=4):
        for m in (conv.carla_to_cam_to_world(t), conv.carla_to_ego_to_world(t)):
            R = m[:3, :3]
            np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
            assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)
            np.testing.assert_array_equal(m[3], [0, 0, 0, 1])


def test_known_orientations():
    # UE yaw 90 looks along UE +y = our -y (to the right of a car facing +x).
    m = conv.carla_to_cam_to_world(carla.Transform(carla.Location(), carla.Rotation(yaw=90.0)))
    np.testing.assert_allclose(m[:3, 2], [0, -1, 0], atol=1e-7)   # optical axis
    np.testing.assert_allclose(m[:3, 1], [0, 0, -1], atol=1e-7)   # image down = world down
    np.testing.assert_allclose(m[:3, 0], [-1, 0, 0], atol=1e-7)   # image right = world -x when looking to -y
    # Identity: optical axis +x, image right = -y (right of the car), image down = -z.
    m = conv.carla_to_cam_to_world(carla.Transform())
    np.testing.assert_allclose(m[:3, :3], [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], atol=1e-12)
    # UE pitch +30 is nose-up: the optical axis rises.
    m = conv.carla_to_cam_to_world(carla.Transform(carla.Location(), carla.Rotation(pitch=30.0)))
    np.testing.assert_allclose(m[:3, 2], [math.cos(math.radians(30)), 0, 0.5], atol=1e-7)
    # A vehicle at UE (10, 5, 0) with yaw 90 is at our (10, -5, 0) heading -y; its left (+y_ego) is our +x.
    e = conv.carla_to_ego_to_world(carla.Transform(carla.Location(x=10, y=5), carla.Rotation(yaw=90.0)))
    np.testing.assert_allclose(e[:3, 3], [10, -5, 0], atol=1e-7)
    np.testing.assert_allclose(e[:3, 0], [0, -1, 0], atol=1e-7)
    np.testing.assert_allclose(e[:3, 1], [1, 0, 0], atol=1e-7)


def test_inverses_round_trip():
    for t in random_transforms(seed=5):
        cam = conv.carla_to_cam_to_world(t)
        t2 = conv.cam_to_world_to_carla(cam)
        assert isinstance(t2, carla.Transform)
        np.testing.assert_allclose(np.array(t2.get_matrix()), np.array(t.get_matrix()), atol=2e-5)
        np.testing.assert_allclose(conv.carla_to_cam_to_world(t2), cam, atol=2e-5)
        ego = conv.carla_to_ego_to_world(t)
        t3 = conv.ego_to_world_to_carla(ego)
        np.testing.assert_allclose(conv.carla_to_ego_to_world(t3), ego, atol=2e-5)
        # Angles themselves come back (pitch in (-90, 90) makes them unique).
        for a in ("pitch", "yaw", "roll"):
            d = (getattr(t3.rotation, a) - getattr(t.rotation, a) + 180) % 360 - 180
            assert abs(d) < 1e-3


def test_inverse_at_gimbal_lock():
    for pitch in (90.0, -90.0):
        t = carla.Transform(carla.Location(x=1, y=2, z=3), carla.Rotation(pitch=pitch, yaw=30.0, roll=0.0))
        m = conv.carla_to_ego_to_world(t)
        np.testing.assert_allclose(conv.carla_to_ego_to_world(conv.ego_to_world_to_carla(m)), m, atol=2e-5)


def test_inverse_rejects_non_rigid():
    bad = np.eye(4)
    bad[1, 1] = -1  # a mirror
    with pytest.raises(ValueError, match="rigid"):
        conv.cam_to_world_to_carla(bad)
    with pytest.raises(ValueError, match="rigid"):
        conv.ego_to_world_to_carla(np.diag([2.0, 2.0, 2.0, 1.0]))


def test_mount_to_carla_attachment_known_values():
    t = conv.cam_to_ego_to_carla(mount_to_cam_to_ego(0.8, 0.0, 1.5, yaw_deg=0.0))
    assert (t.location.x, t.location.y, t.location.z) == pytest.approx((0.8, 0.0, 1.5), abs=1e-6)
    assert (t.rotation.pitch, t.rotation.yaw, t.rotation.roll) == pytest.approx((0, 0, 0), abs=1e-6)
    # Mounted on the ego's left (y +0.4), turned 60° left, pitched 10° up -> in UE (y mirrored): y -0.4, yaw -60, pitch +10.
    t = conv.cam_to_ego_to_carla(mount_to_cam_to_ego(0.2, 0.4, 1.6, yaw_deg=60.0, pitch_deg=10.0))
    assert (t.location.x, t.location.y, t.location.z) == pytest.approx((0.2, -0.4, 1.6), abs=1e-6)
    assert (t.rotation.pitch, t.rotation.yaw, t.rotation.roll) == pytest.approx((10, -60, 0), abs=1e-4)


def test_mount_composition_equals_carla_attachment():
    """A sensor attached at the converted mount: CARLA-side world transform == ego_to_world @ cam_to_ego."""
    cam_to_ego = mount_to_cam_to_ego(1.0, -0.5, 1.7, yaw_deg=-120.0, pitch_deg=-8.0)
    rel = conv.cam_to_ego_to_carla(cam_to_ego)
    for parent in random_transforms(10, seed=6):
        world_ue = np.array(parent.get_matrix(), np.float64) @ np.array(rel.get_matrix(), np.float64)
        expected = conv.carla_to_ego_to_world(parent) @ cam_to_ego
        np.testing.assert_allclose(S @ world_ue @ A, expected, atol=1e-4)


# ------------------------------------------------------------------------------------------------ images
def depth_pixel(r, g, b):
    return np.array([[[b, g, r, 255]]], dtype=np.uint8)  # BGRA


def test_decode_depth_crafted_pixels():
    assert conv.decode_carla_depth(depth_pixel(255, 255, 255))[0, 0] == np.inf  # far plane = sky
    assert conv.decode_carla_depth(depth_pixel(1, 0, 0))[0, 0] == np.float32(1000.0 / (256**3 - 1))
    assert conv.decode_carla_depth(depth_pixel(0, 0, 0))[0, 0] == 0.0
    # 10 m: code = round(10/1000 * (2^24-1)) = 167772 = 0x028F5C -> R=0x5C, G=0x8F, B=0x02.
    code = 167772
    assert (code & 255, (code >> 8) & 255, code >> 16) == (0x5C, 0x8F, 0x02)
    d = conv.decode_carla_depth(depth_pixel(0x5C, 0x8F, 0x02))[0, 0]
    assert d == np.float32(code * 1000.0 / (256**3 - 1))
    assert abs(d - 10.0) < 1000.0 / 2**24
    # B weighs 256^2, G 256: (R, G, B) = (0, 0, 1) -> 65536 codes.
    assert conv.decode_carla_depth(depth_pixel(0, 0, 1))[0, 0] == np.float32(65536 * 1000.0 / (256**3 - 1))
    out = conv.decode_carla_depth(np.concatenate([depth_pixel(1, 0, 0), depth_pixel(255, 255, 255)], axis=1))
    assert out.dtype == np.float32 and out.shape == (1, 2)


def test_bgra_to_rgb_and_semantic():
    bgra = np.array([[[1, 2, 3, 255], [10, 20, 30, 255]],
                     [[100, 110, 120, 0], [0, 0, 14, 255]]], dtype=np.uint8)  # [H=2,W=2,4]
    rgb = conv.bgra_to_rgb(bgra.tobytes(), 2, 2)
    np.testing.assert_array_equal(rgb, [[[3, 2, 1], [30, 20, 10]], [[120, 110, 100], [14, 0, 0]]])
    assert rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    np.testing.assert_array_equal(conv.bgra_to_rgb(memoryview(bgra.tobytes()), 2, 2), rgb)
    np.testing.assert_array_equal(conv.semantic_from_carla(bgra), [[3, 30], [120, 14]])
    with pytest.raises(ValueError, match="expected 2x3x4"):
        conv.bgra_to_rgb(bgra.tobytes(), 3, 2)


def test_intrinsics_and_fov():
    K = conv.carla_intrinsics(800, 600, 90.0)
    np.testing.assert_allclose(K, [[400, 0, 400], [0, 400, 300], [0, 0, 1]])
    np.testing.assert_allclose(K, intrinsics_from_fov(90.0, 800, 600))
    assert conv.fov_from_intrinsics(conv.carla_intrinsics(64, 48, 73.5), 64, 48) == pytest.approx(73.5, abs=1e-9)
    off = K.copy()
    off[0, 2] += 3
    with pytest.raises(ValueError, match="principal point"):
        conv.fov_from_intrinsics(off, 800, 600)
    nonsq = K.copy()
    nonsq[1, 1] *= 1.1
    with pytest.raises(ValueError, match="non-square"):
        conv.fov_from_intrinsics(nonsq, 800, 600)
