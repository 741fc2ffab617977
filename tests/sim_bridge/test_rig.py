"""Rig presets, JSON round trip and mount maths (ego: x fwd, y left, z up; camera: OpenCV)."""
import inspect
import json

import numpy as np
import pytest
import torch

from nfldm_sdk.cameras.pinhole import intrinsics_from_fov as sdk_intrinsics_from_fov
from sim_bridge.errors import SimBridgeError
from sim_bridge.rig import (RIG_PRESETS, Rig, RigCamera, RigError, canonical_rig_name, intrinsics_from_fov,
                            mount_to_cam_to_ego, rig_presets_text)


def test_intrinsics_from_fov_90deg():
    # tan(45°) = 1, so f = half the width.
    K = intrinsics_from_fov(90.0, 256, 128)
    np.testing.assert_allclose(K, [[128, 0, 128], [0, 128, 64], [0, 0, 1]])


@pytest.mark.parametrize("hfov, width, height", [(90.0, 256, 128), (70.0, 64, 48), (110.0, 33, 17)])
def test_intrinsics_from_fov_agrees_with_the_sdk(hfov, width, height):
    # The two packages may not import each other, so each keeps one definition: same signature, same K.
    names = lambda f: list(inspect.signature(f).parameters)[:3]
    assert names(intrinsics_from_fov) == names(sdk_intrinsics_from_fov) == ["hfov_deg", "width", "height"]
    K = intrinsics_from_fov(hfov, width, height)
    assert K.dtype == np.float64
    np.testing.assert_array_equal(K, sdk_intrinsics_from_fov(hfov, width, height, dtype=torch.float64).numpy())
    np.testing.assert_array_equal(K, intrinsics_from_fov(height=height, width=width, hfov_deg=hfov))
    assert (K[0, 2], K[1, 2]) == (width / 2, height / 2) and K[0, 0] == K[1, 1] > 0


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


def test_capture_rig_covers_360_degrees():
    rig = RIG_PRESETS["capture"](256, 256)
    yaws = sorted(np.degrees(np.arctan2(m[1, 2], m[0, 2])) % 360 for m in rig.cam_to_ego())
    gaps = np.diff(yaws + [yaws[0] + 360])
    assert gaps.max() < 90.0  # each 90° camera overlaps its neighbours


def test_capture_rig_has_two_other_names():
    # `capture` is the SDK's name of the rig; `default` and `ring6` (the names stores were collected with) stay.
    rigs = [Rig.resolve(name, 64, 48) for name in ("capture", "default", "ring6")]
    for rig in rigs[1:]:
        assert rig.to_list() == rigs[0].to_list()
    assert [canonical_rig_name(n) for n in ("capture", "default", "ring6", "front", "my_rig.json")] == \
        ["capture", "capture", "capture", "front", "my_rig.json"]
    assert rig_presets_text() == "capture (also default, ring6), nuscenes, front"


def test_resolve_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="preset"):
        Rig.resolve("no-such-rig")
    with pytest.raises(FileNotFoundError, match="preset"):
        Rig.resolve(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="unique"):
        Rig((RIG_PRESETS["front"](8, 8).cameras[0],) * 2)


# ------------------------------------------------------------------------------------ malformed rigs, rig sizes


def _camera(**changes) -> dict:
    d = RIG_PRESETS["front"](96, 54).cameras[0].to_dict()
    d["name"] = "windscreen"
    d.update(changes)
    return d


def _scaled_mount() -> list:
    m = np.array(_camera()["cam_to_ego"])
    m[:3, :3] *= 1.1
    return m.tolist()


def _reflected_mount() -> list:
    m = np.array(_camera()["cam_to_ego"])
    m[:3, 0] *= -1.0
    return m.tolist()


def _zero_fx() -> list:
    K = np.array(_camera()["K"])
    K[0, 0] = 0.0
    return K.tolist()


BAD_RIG_FILES = [
    # (file text, substrings the message must contain besides the file name)
    ('{"cameras": [', ["not valid JSON"]),
    ('{"cams": []}', ["no 'cameras' list"]),
    ('{"cameras": [42]}', ["must be an object"]),
    (json.dumps({"cameras": [{k: v for k, v in _camera().items() if k != "K"}]}), ["'windscreen'", "missing ['K']"]),
    (json.dumps({"cameras": [_camera(K=[[1, 0], [0, 1]])]}), ["'windscreen'", "K must be 3x3"]),
    (json.dumps({"cameras": [_camera(K=_zero_fx())]}), ["'windscreen'", "fx 0", "> 0"]),
    (json.dumps({"cameras": [_camera(K=[[50, 0, 48], [0, 50, 27], [0, 0, 2]])]}), ["'windscreen'", "pinhole"]),
    (json.dumps({"cameras": [_camera(K=[[50, 0, 480], [0, 50, 27], [0, 0, 1]])]}), ["'windscreen'", "principal point"]),
    (json.dumps({"cameras": [_camera(cam_to_ego=_scaled_mount())]}), ["'windscreen'", "cam_to_ego", "not orthonormal"]),
    (json.dumps({"cameras": [_camera(cam_to_ego=_reflected_mount())]}), ["'windscreen'", "determinant"]),
    (json.dumps({"cameras": [_camera(cam_to_ego=np.zeros((4, 4)).tolist())]}), ["'windscreen'", "last row"]),
    (json.dumps({"cameras": [_camera(width=0)]}), ["'windscreen'", "width 0", "positive integer"]),
    (json.dumps({"cameras": [_camera(height=54.5)]}), ["'windscreen'", "height 54.5"]),
    (json.dumps({"cameras": [_camera(width="96")]}), ["'windscreen'", "width '96'"]),
    (json.dumps({"cameras": [_camera(), _camera()]}), ["unique"]),
    (json.dumps({"cameras": [_camera(), _camera(name="b", width=48, height=27)]}), ["one image size"]),
]


@pytest.mark.parametrize("text, expected", BAD_RIG_FILES, ids=range(len(BAD_RIG_FILES)))
def test_malformed_rig_file_names_the_file_and_the_camera(tmp_path, text, expected):
    path = tmp_path / "my_rig.json"
    path.write_text(text)
    with pytest.raises(RigError) as err:
        Rig.resolve(str(path))
    assert isinstance(err.value, SimBridgeError) and isinstance(err.value, ValueError)
    message = str(err.value)
    assert str(path) in message, message
    for piece in expected:
        assert piece in message, (piece, message)


def test_cameras_built_in_code_are_checked_too():
    good = RIG_PRESETS["front"](32, 32).cameras[0]
    with pytest.raises(RigError, match="'front'.*fx 0"):
        RigCamera(good.name, np.diag([0.0, 16.0, 1.0]), 32, 32, good.cam_to_ego)
    with pytest.raises(RigError, match="non-finite"):
        RigCamera(good.name, good.K, 32, 32, np.full((4, 4), np.nan))
    with pytest.raises(RigError, match="width True"):
        RigCamera(good.name, good.K, True, 32, good.cam_to_ego)


def test_rig_file_keeps_its_size_unless_asked_and_never_changes_its_aspect_ratio(tmp_path):
    path = tmp_path / "wide.json"
    wide = RIG_PRESETS["front"](192, 108)
    wide.save(path)
    own = Rig.resolve(str(path))
    assert (own.width, own.height) == (192, 108)
    np.testing.assert_array_equal(own.K(), wide.K())
    half = Rig.resolve(str(path), width=96)
    assert (half.width, half.height) == (96, 54)
    np.testing.assert_allclose(half.K()[0], [[48.0, 0.0, 48.0], [0.0, 48.0, 27.0], [0.0, 0.0, 1.0]])  # square pixels
    assert (Rig.resolve(str(path), height=216).width, Rig.resolve(str(path), 384, 216).height) == (384, 216)
    assert Rig.resolve(str(path), 100, 56).height == 56  # the nearest whole-pixel height of 100 wide
    with pytest.raises(RigError, match=r"192x108 pixels; 256x256 would change its aspect ratio.*--width 256 gives 256x144"):
        Rig.resolve(str(path), 256, 256)
    # presets are built at the size asked, 256 by default
    assert (Rig.resolve("front").width, Rig.resolve("front").height) == (256, 256)
    assert (Rig.resolve("front", 96, 54).width, Rig.resolve("front", 96, 54).height) == (96, 54)
