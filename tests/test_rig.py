"""Rig presets, JSON round trip and mount maths (ego: x fwd, y left, z up; camera: OpenCV)."""
import numpy as np
import pytest

from sim_bridge.rig import RIG_PRESETS, Rig, intrinsics_from_fov, mount_to_cam_to_ego


def test_intrinsics_from_fov_90deg():
    # tan(45°) = 1, so f = half the width.
    K = intrinsics_from_fov(256, 128, 90.0)
    np.testing.assert_allclose(K, [[128, 0, 128], [0, 128, 64], [0, 0, 1]])


def test_forward_camera_axes():
    m = mount_to_cam_to_ego(1.0, 0.0, 1.5)
    # optical axis (cam +z) looks along ego +x, image right (cam +x) is ego -y, image down (cam +y) is ego -z
    np.testing.assert_allclose(m[:3, 2], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(m[:3, 0], [0, -1, 0], atol=1e-12)
    np.testing.assert_allclose(m[:3, 1], [0, 0, -1], atol=1e-12)
    assert np.linalg.det(m[:3, :3]) == pytest.approx(1.0)


def test_yaw_left_and_pitch_up():
    left = mount_to_cam_to_ego(0, 0, 1.5, yaw_deg=90)
    np.testing.assert_allclose(left[:3, 2], [0, 1, 0], atol=1e-12)  # looks to ego +y = left
    up = mount_to_cam_to_ego(0, 0, 1.5, pitch_deg=10)
    assert up[2, 2] > 0  # optical axis tilted upwards


@pytest.mark.parametrize("name", sorted(RIG_PRESETS))
def test_presets_round_trip_json(name, tmp_path):
    rig = RIG_PRESETS[name](320, 240)
    rig.save(tmp_path / "rig.json")
    back = Rig.load(tmp_path / "rig.json")
    assert back.names == rig.names
    np.testing.assert_allclose(back.K(), rig.K())
    np.testing.assert_allclose(back.cam_to_ego(), rig.cam_to_ego())
    for m in rig.cam_to_ego():
        np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-12)


def test_default_rig_covers_360_degrees():
    rig = RIG_PRESETS["default"](256, 256)
    yaws = sorted(np.degrees(np.arctan2(m[1, 2], m[0, 2])) % 360 for m in rig.cam_to_ego())
    gaps = np.diff(yaws + [yaws[0] + 360])
    assert gaps.max() < 90.0  # each 90° camera overlaps its neighbours


def test_resolve_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="preset"):
        Rig.resolve("no-such-rig")
    with pytest.raises(FileNotFoundError, match="preset"):
        Rig.resolve(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="unique"):
        Rig((RIG_PRESETS["front"](8, 8).cameras[0],) * 2)
