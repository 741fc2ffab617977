"""Rendering a route as one world (`nfldm_sdk.routes.composite`): the one-scene route is `SceneAutoEncoder.decode`
exactly, two agreeing scenes render like the one big field they were cut from, images stay continuous across a
seam (the `nearest` baseline jumps), cell entries and cell masks against hand-computed values.

Scenes are analytic (`route_scenes`): one world function sampled on each scene's grid; the decoder is a tiny random
`SceneAutoEncoder` (its colours are arbitrary; alpha, depth and features are exact functions of the fields).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nfldm_sdk.cameras.pinhole import Cameras
from nfldm_sdk.cameras.rig import CameraRig
from nfldm_sdk.cameras.trajectory import yaw_pose
from nfldm_sdk.rendering.api import HIT_ALPHA, render_field
from nfldm_sdk.routes.composite import (cameras_in_frame, cell_density_masks, containing_cell, in_cells,
                                        ray_cell_entry, render_one_scene, render_route)
from nfldm_sdk.routes.placement import RouteError
from route_scenes import (SCENE_TO_WORLD, SEAM_NORMALS, SEAM_POINTS, SIZE, big_field, route_decoder, two_scene_route,
                          world_field)

pytestmark = pytest.mark.usefixtures("one_thread_module")
NO_SEAMS = (np.zeros((0, 3)), np.zeros((0, 3)))


@pytest.fixture(scope="module")
def decoder():
    return route_decoder()


def rig_at(x: float, y: float = 0.5, yaw: float = 0.0, preset: str = "capture") -> Cameras:
    """The rig's cameras ``[N]`` for the ego at world (x, y) heading `yaw` (radians)."""
    return CameraRig.preset(preset, SIZE, SIZE).cameras(yaw_pose(x, y, yaw)).flatten()


def _close(a, b, atol):
    torch.testing.assert_close(a, b, atol=atol, rtol=0.0)


@torch.no_grad()
@pytest.mark.parametrize("min_hit_alpha", [HIT_ALPHA, 1e-4])
def test_a_route_of_one_scene_renders_exactly_as_decode(decoder, min_hit_alpha):
    field = world_field(-16.0, 48.0, 32)
    cams = Cameras.stack([rig_at(4.0, yaw=0.3), rig_at(30.0, y=-3.0, yaw=2.0)]).flatten()          # 12 views
    out = render_route([field], decoder, np.eye(4)[None], *NO_SEAMS, cams, min_hit_alpha=min_hit_alpha)
    ref = decoder.decode(field, cams, min_hit_alpha=min_hit_alpha)
    for name in ("rgb", "alpha", "features", "semantic"):
        _close(getattr(out, name), getattr(ref, name), 1e-5)
    assert torch.equal(torch.isfinite(out.depth), torch.isfinite(ref.depth))
    hit = torch.isfinite(ref.depth)
    assert hit.float().mean() > 0.3                                                   # ground and buildings in view
    _close(out.depth[hit], ref.depth[hit], 1e-5)


@torch.no_grad()
def test_a_scene_placed_anywhere_renders_as_in_its_own_frame(decoder):
    # A general rigid placement (yaw, pitch, offset): world cameras = placement @ scene-frame cameras.
    c, s = math.cos(0.2), math.sin(0.2)
    tilt = np.array([[c, 0, s, 0], [0, 1, 0, 0], [-s, 0, c, 0], [0, 0, 0, 1.0]])
    s2w = yaw_pose(100.0, -40.0, 1.1, z=3.0) @ tilt
    field = world_field(-16.0, 48.0, 32)
    local = rig_at(10.0, yaw=0.5)
    world = cameras_in_frame(local.to(dtype=torch.float64), s2w).to(dtype=torch.float32)
    out = render_route([field], decoder, s2w[None], *NO_SEAMS, world)
    ref = decoder.decode(field, local, min_hit_alpha=HIT_ALPHA)
    _close(out.alpha, ref.alpha, 1e-4)
    _close(out.rgb, ref.rgb, 1e-3)
    _close(render_one_scene(field, decoder, s2w, world).rgb, ref.rgb, 1e-3)


def test_ray_cell_entry_matches_hand_computed_distances():
    bounds = torch.tensor([[[-16.0, -32.0, -2.0], [48.0, 32.0, 6.0]]] * 2)
    o = torch.tensor([[0.0, 0.0, 1.0], [60.0, 0.0, 1.0], [-30.0, 0.0, 1.0], [40.0, -50.0, 1.0], [20.0, 40.0, 1.0],
                      [10.0, 0.0, 1.0]])
    d = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0], [0.6, 0.8, 0]])
    t = ray_cell_entry(o, d, bounds, SCENE_TO_WORLD, SEAM_POINTS, SEAM_NORMALS)                 # [2, 6]
    inf = math.inf
    # cell 0: x < 32 of box x ∈ [-16, 48]; cell 1: x >= 32 of box x ∈ [16, 80] (all: |y| <= 32, z ∈ [-2, 6]).
    # Ray 4 enters at y = 32 (t = 8) with x = 20: cell 0 only; ray 5 (10, 0) + t (0.6, 0.8) reaches x = 32 at
    # t = 22 / 0.6, before it leaves through y = 32 at t = 40.
    expected = [[0.0, 28.0, 14.0, inf, 8.0, 0.0],
                [32.0, 0.0, 62.0, 18.0, inf, 22.0 / 0.6]]
    np.testing.assert_allclose(t.numpy(), expected, atol=1e-9)
    # t_max clips: the seam 28 m behind the ray from x = 60 is out of a 20 m range; t_min starts inside
    t = ray_cell_entry(o[:2], d[:2], bounds, SCENE_TO_WORLD, SEAM_POINTS, SEAM_NORMALS, t_min=0.5, t_max=20.0)
    np.testing.assert_allclose(t.numpy(), [[0.5, inf], [inf, 0.5]])
    # a rotated scene 1 (yaw 90° at (32, 0)): scene (x_s, y_s) is world (32 − y_s, x_s), so its box spans world
    # x ∈ [0, 64], y ∈ [−16, 48]; the +x ray at y = 0 is in the box from x = 0 but in the cell only past the seam
    s2w = np.stack([np.eye(4), yaw_pose(32.0, 0.0, math.pi / 2)])
    o2 = torch.tensor([[0.0, 0.0, 1.0], [0.0, 60.0, 1.0], [-10.0, 20.0, 1.0]])
    t = ray_cell_entry(o2, d[:1].expand(3, 3), bounds, s2w, SEAM_POINTS, SEAM_NORMALS, scenes=[1])
    np.testing.assert_allclose(t.numpy(), [[32.0, inf, 42.0]])


def test_cell_masks_partition_the_route():
    fields = two_scene_route()
    m0, m1 = cell_density_masks(fields, SCENE_TO_WORLD, SEAM_POINTS, SEAM_NORMALS)
    # voxel columns: scene 0 centres at x = -15, -13, ..., 47; scene 1's (world) at 17, 19, ..., 79: index i of
    # scene 1 is index i + 16 of scene 0; the seam x = 32 lies on a voxel face of both
    assert torch.equal(m0[..., :24], torch.ones_like(m0[..., :24])) and not m0[..., 24:].any()
    assert not m1[..., :8].any() and torch.equal(m1[..., 8:], torch.ones_like(m1[..., 8:]))
    assert torch.equal(m0[..., 16:] + m1[..., :16], torch.ones_like(m1[..., :16]))             # == 1 in the overlap
    # the masked densities add up to the big field's
    big = big_field().density
    total = torch.zeros_like(big)
    total[..., :32] += fields[0].density * m0
    total[..., 16:] += fields[1].density * m1
    assert torch.equal(total, big)
    # any world point lies in at most one cell, in exactly one inside the boxes' union (here also rotated scenes)
    s2w = np.stack([yaw_pose(0.0, 0.0, 0.3), yaw_pose(30.0, 12.0, 0.5)])
    normal = np.array([[math.cos(0.4), math.sin(0.4), 0.0]])
    point = np.array([[32.0, 14.0, 0.0]])
    pts = torch.rand(4000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * \
        torch.tensor([120.0, 120.0, 8.0], dtype=torch.float64) - torch.tensor([30.0, 50.0, 2.0], dtype=torch.float64)
    bounds = torch.stack([f.bounds for f in fields]).double()
    member = []
    for k in range(2):
        q = (pts - torch.as_tensor(s2w[k][:3, 3])) @ torch.as_tensor(s2w[k][:3, :3])
        in_box = ((q >= bounds[k, 0]) & (q <= bounds[k, 1])).all(-1)
        member.append(in_box & in_cells(pts, k, point, normal))
    member = torch.stack(member)
    assert member.sum(0).max() == 1
    owner = containing_cell(pts, bounds, s2w, point, normal)
    assert torch.equal(owner >= 0, member.any(0)) and torch.equal(owner[member[1]], torch.ones_like(owner[member[1]]))
    # the masks are the cells at the voxel centres
    masks = cell_density_masks(fields, s2w, point, normal)
    centres = fields[1].voxel_centers().double() @ torch.as_tensor(s2w[1][:3, :3]).T + torch.as_tensor(s2w[1][:3, 3])
    assert torch.equal(masks[1].bool(), in_cells(centres, 1, point, normal))


@torch.no_grad()
def test_two_agreeing_scenes_render_like_the_field_they_were_cut_from(decoder):
    fields, big = two_scene_route(), big_field()
    errors = {}
    for x in (30.0, 34.5):                                        # in cell 0 and in cell 1, both inside the overlap
        cams = rig_at(x, yaw=0.1)
        ref = decoder.decode(big, cams, min_hit_alpha=HIT_ALPHA)
        for mode in ("composite", "nearest"):
            out = render_route(fields, decoder, SCENE_TO_WORLD, SEAM_POINTS, SEAM_NORMALS, cams, mode=mode)
            errors[x, mode] = {k: (getattr(out, k) - getattr(ref, k)).abs() for k in ("alpha", "features", "rgb")}
    for x in (30.0, 34.5):
        e = errors[x, "composite"]
        assert e["alpha"].max() < 0.01 and e["features"].mean() < 5e-3 and e["rgb"].max() < 0.05, (x, e["rgb"].max())
        # the baseline (each camera from its own scene) misses what lies beyond the other scene's box
        assert e["rgb"].mean() * 3 < errors[x, "nearest"]["rgb"].mean()


@torch.no_grad()
def test_a_camera_crossing_a_seam_sees_continuous_images(decoder):
    # Scene 1 disagrees with scene 0 (mirrored): the composite still renders one fixed world, so consecutive frames
    # 12.5 cm apart differ as little across the seam as inside a scene; the nearest-scene baseline jumps.
    fields = two_scene_route(mirrored=True)
    xs = 32.0 - 0.8 + 0.125 * np.arange(-4, 5)                     # the front camera (0.8 m ahead) crosses x = 32
    steps = {}
    for mode in ("composite", "nearest"):
        imgs = [render_route(fields, decoder, SCENE_TO_WORLD, SEAM_POINTS, SEAM_NORMALS,
                             rig_at(float(x), preset="front"), mode=mode).rgb for x in xs]
        steps[mode] = np.array([float((b - a).abs().mean()) for a, b in zip(imgs, imgs[1:])])
    comp, near = steps["composite"], steps["nearest"]
    typical = float(np.median(comp))
    assert typical > 0
    assert comp.max() < 2.0 * typical, comp
    assert near.max() > 5.0 * typical, near


@torch.no_grad()
def test_nearest_mode_renders_each_camera_from_the_scene_it_is_in(decoder):
    fields = two_scene_route(mirrored=True)
    cams = Cameras.stack([rig_at(20.0)[:2], rig_at(40.0)[:2]]).flatten()              # 2 in cell 0, 2 in cell 1
    out = render_route(fields, decoder, SCENE_TO_WORLD, SEAM_POINTS, SEAM_NORMALS, cams, mode="nearest")
    for k, sl in ((0, slice(0, 2)), (1, slice(2, 4))):
        ref = render_one_scene(fields[k], decoder, SCENE_TO_WORLD[k], cams[sl])
        _close(out.alpha[sl], ref.alpha, 1e-6)
        _close(out.rgb[sl], ref.rgb, 1e-4)


def test_route_arguments_are_checked(decoder):
    fields = two_scene_route()
    cams = rig_at(0.0)[:1]
    with pytest.raises(RouteError, match="1 seams"):
        render_route(fields, decoder, SCENE_TO_WORLD, *NO_SEAMS, cams)
    with pytest.raises(RouteError, match=r"\[K=2, 4, 4\]"):
        render_route(fields, decoder, SCENE_TO_WORLD[:1], SEAM_POINTS, SEAM_NORMALS, cams)
    with pytest.raises(RouteError, match="non-zero"):
        render_route(fields, decoder, SCENE_TO_WORLD, SEAM_POINTS, SEAM_NORMALS * 0, cams)
    with pytest.raises(RouteError, match="mode"):
        render_route(fields, decoder, SCENE_TO_WORLD, SEAM_POINTS, SEAM_NORMALS, cams, mode="blend")


@torch.no_grad()
def test_the_composite_is_the_sum_of_its_cells_front_to_back(decoder):
    # Along the +x axis from x = 30 the ray crosses cell 0 (to the seam at 32) then cell 1: the composited alpha is
    # 1 − (1 − α0)(1 − α1) of the masked fields' own renders.
    fields = two_scene_route()
    cams = rig_at(30.0, preset="front")
    out = render_route(fields, decoder, SCENE_TO_WORLD, SEAM_POINTS, SEAM_NORMALS, cams)
    masks = cell_density_masks(fields, SCENE_TO_WORLD, SEAM_POINTS, SEAM_NORMALS)
    small = cams.resized(SIZE // 2, SIZE // 2)
    alphas = []
    for k in range(2):
        masked = type(fields[k])(fields[k].density * masks[k], fields[k].features, fields[k].bounds)
        local = cameras_in_frame(small, np.linalg.inv(SCENE_TO_WORLD[k]))
        alphas.append(render_field(masked, local, 128, 0.5, 40.0, min_hit_alpha=0.0).alpha)
    expected = 1 - (1 - alphas[0]) * (1 - alphas[1])
    up = torch.nn.functional.interpolate(expected[:, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    _close(out.alpha, up[:, 0], 1e-5)
