"""Fisheye back-projection of point clouds: depth maps of fisheye cameras land on the surface they saw.

The analytic case: a camera 1.5 m above the origin looking along +x at the tilted plane ``n · p = 6`` with
``n = (1, 0.3, 0.2)``. Each pixel's ray is computed here from the model's formula (independently of
`nfldm_sdk.cameras`): normalised radius ``|m| = θ_d``, ``θ_d = θ`` (equidistant) or ``θ (1 + k1 θ² + k2 θ⁴)``
(OpenCV fisheye, inverted by Newton), direction ``(sin θ · m/|m|, cos θ)``; the planar depth of the hit is
``t · cos θ``. Back-projected with the camera's model, every point lies on the plane; with K alone (pinhole) the
off-axis ones do not.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nfldm_sdk.cameras.pinhole import Cameras, intrinsics_from_fov
from nfldm_sdk.cameras.rig import CameraRig, CameraSpec, mount_to_cam_to_ego
from nfldm_sdk.pipelines.scene import NeuralScene
from nfldm_sdk.sensors.frames import Frame
from nfldm_sdk.sensors.renderer import render_views
from nfldm_sdk.viz.points import (capture_to_point_cloud, frame_points, rgbd_to_labelled_points, rgbd_to_points,
                                  scene_points)
from semantic_scenes import semantic_decoder, slab_field

W, H = 48, 40
NORMAL, OFFSET = np.array([1.0, 0.3, 0.2]), 6.0
C2W = mount_to_cam_to_ego(0.0, 0.0, 1.5)                           # looks along +x, image right = −y
K1, K2 = 0.05, -0.01


def fisheye_K(model: str, distortion=None) -> np.ndarray:
    return intrinsics_from_fov(130.0, W, H, dtype=torch.float64, model=model, distortion=distortion).numpy()


def analytic_depth(K: np.ndarray, k1: float = 0.0, k2: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``(depth [H, W], points [H, W, 3])`` of the plane seen through each pixel centre of the fisheye camera."""
    v, u = np.mgrid[0:H, 0:W] + 0.5
    mx, my = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    theta_d = np.hypot(mx, my)
    theta = theta_d.copy()
    for _ in range(50):                                              # θ (1 + k1 θ² + k2 θ⁴) = θ_d
        f = theta * (1 + k1 * theta**2 + k2 * theta**4) - theta_d
        theta -= f / (1 + 3 * k1 * theta**2 + 5 * k2 * theta**4)
    s = np.sin(theta) / np.maximum(theta_d, 1e-12)
    d_cam = np.stack([s * mx, s * my, np.cos(theta)], -1)            # unit directions, camera frame
    d_world = d_cam @ C2W[:3, :3].T
    o = C2W[:3, 3]
    t = (OFFSET - NORMAL @ o) / (d_world @ NORMAL)
    depth = np.where(t > 0, t * d_cam[..., 2], np.inf)
    return depth, o + t[..., None] * d_world


@pytest.mark.parametrize("model, distortion", [("equidistant", None), ("opencv_fisheye", [K1, K2, 0.0, 0.0])])
def test_fisheye_depth_back_projects_onto_the_analytic_plane(model, distortion):
    K = fisheye_K(model, distortion)
    k1, k2 = (0.0, 0.0) if distortion is None else distortion[:2]
    depth, expect = analytic_depth(K, k1, k2)
    hit = np.isfinite(depth)
    assert hit.mean() > 0.5 and depth[hit].max() > 1.5 * depth[hit].min()      # a tilted plane: depth varies
    rgb = np.zeros((1, H, W, 3), np.uint8)
    rgb[0, ..., 0] = np.arange(W, dtype=np.uint8)[None]                         # colour = column
    pts, cols = rgbd_to_points(rgb, depth[None], K, C2W[None], model=model, distortion=distortion)
    assert len(pts) == hit.sum()
    np.testing.assert_allclose(pts @ NORMAL, OFFSET, atol=1e-9)                 # on the plane
    np.testing.assert_allclose(pts, expect[hit], atol=1e-9)                     # at the pixel's own ray
    np.testing.assert_allclose(cols[:, 0] * 255, np.broadcast_to(np.arange(W), (H, W))[hit])
    # the views' Cameras carry the same model: same points; K alone (a pinhole) misplaces the periphery
    cams = Cameras(torch.as_tensor(K)[None], torch.as_tensor(C2W)[None], W, H, model=model,
                   distortion=None if distortion is None else torch.tensor([distortion], dtype=torch.float64))
    np.testing.assert_allclose(rgbd_to_points(rgb, depth[None], cams)[0], pts, atol=1e-12)
    pinhole, _ = rgbd_to_points(rgb, depth[None], K, C2W[None])
    assert np.abs(pinhole @ NORMAL - OFFSET).max() > 1.0
    labelled = rgbd_to_labelled_points(rgb, depth[None], np.full((1, H, W), 7, np.uint8), K, C2W[None], model=model,
                                       distortion=distortion, stride=3)
    assert (labelled.labels == 7).all() and np.abs(labelled.points @ NORMAL - OFFSET).max() < 1e-9


def test_frames_and_captures_use_their_camera_model():
    K = fisheye_K("equidistant")
    depth, expect = analytic_depth(K)
    hit = np.isfinite(depth)
    rgb = np.zeros((H, W, 3), np.uint8)
    f = Frame(rgb, depth.astype(np.float32), np.ones((H, W), np.float32), 0.0, 0, "fish", K, C2W,
              camera_model="equidistant")
    pts = frame_points([f]).points
    np.testing.assert_allclose(pts, expect[hit], atol=1e-4)                     # float32 depth
    # a capture episode whose rig says "equidistant": the fused cloud lies on the plane too
    rig = CameraRig((CameraSpec("fish", K, W, H, np.eye(4), "equidistant"),))
    episode = type("Episode", (), dict(rgb=rgb[None, None], depth=depth[None, None], cam_to_world=C2W[None, None],
                                       rig=rig))()
    cloud = capture_to_point_cloud(episode, stride=1)
    np.testing.assert_allclose(np.asarray(cloud.points) @ NORMAL, OFFSET, atol=1e-9)
    flat = capture_to_point_cloud(episode, stride=1, model="pinhole")
    assert np.abs(np.asarray(flat.points) @ NORMAL - OFFSET).max() > 1.0


def test_scene_points_of_fisheye_views_lie_on_the_ground():
    """A 120° equidistant camera 2 m up pitched 60° down sees the road slab of `slab_field` (its rendered surface
    sits at z ≈ 0.2–0.5 m, tests/semantic_scenes.py): the back-projected points short of the wall lie there, but
    for a few image-corner pixels whose depth the decoder's upsampling extrapolates. Read as a pinhole (K alone)
    the same depth map bends the ground into a bowl from −0.8 m to +1 m."""
    scene = NeuralScene(field=slab_field(), seed=0, bundle_hash="", decoder=semantic_decoder())
    spec = CameraSpec.from_fov("fish", 120.0, 32, 32, mount_to_cam_to_ego(0.0, 0.0, 2.0, 0.0, -60.0),
                               model="equidistant")
    cams = CameraRig((spec,)).cameras(np.eye(4))

    def on_ground(points: np.ndarray) -> float:
        z = points[points[:, 0] < 10.0, 2]
        assert len(z) > 500
        return float(((z > 0.1) & (z < 0.65)).mean())

    pts = scene_points(scene, cams, max_depth_jump=None)
    assert on_ground(pts.points) > 0.97
    views = render_views(scene, cams.reshape(1, -1))
    as_pinhole, _ = rgbd_to_points(views.rgb[0].numpy(), views.depth[0].numpy(), spec.K, views.cam_to_world[0])
    assert on_ground(as_pinhole) < 0.9
