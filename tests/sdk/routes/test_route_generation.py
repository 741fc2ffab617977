"""Routes by outpainting: box placement along a drive, latent transfer between box frames, generation that holds the
overlap fixed, determinism, resumable route folders, save/load, world labels and the route mesh."""
import json
import math

import numpy as np
import pytest
import torch

from nfldm_sdk.cameras.trajectory import Trajectory, yaw_pose
from nfldm_sdk.labels.bev_map import BEVMap
from nfldm_sdk.routes.neural_route import NeuralRoute, cell_contains
from nfldm_sdk.routes.outpaint import generate_route
from nfldm_sdk.routes.transfer import map_for_box, transfer_columns
from nfldm_sdk.routes.placement import RouteError, plan_route

pytestmark = pytest.mark.usefixtures("one_thread_module")
BOX_X = (-16.0, 48.0)
BOUNDS_XY = ((-16.0, -32.0), (48.0, 32.0))


def test_straight_route_places_boxes_every_40_m_with_seams_mid_overlap():
    plan = plan_route(Trajectory.straight(length_m=150.0), BOX_X, overlap_m=24.0, reach_m=48.0)
    assert len(plan) == 4 and plan.spacing_m == 40.0
    np.testing.assert_allclose(plan.anchors_m, [0, 40, 80, 120])
    np.testing.assert_allclose(plan.scene_to_world[:, 0, 3], [0, 40, 80, 120], atol=1e-9)
    np.testing.assert_allclose(plan.seam_points[:, 0], [36, 76, 116], atol=1e-9)
    np.testing.assert_allclose(plan.seam_normals, [[1, 0, 0]] * 3, atol=1e-9)
    # every pose of the drive lies in exactly one cell
    bounds = ((-16.0, -32.0, -2.0), (48.0, 32.0, 6.0))
    pts = Trajectory.straight(length_m=150.0).positions + [0, 0, 1.0]
    owners = np.stack([cell_contains(plan, k, bounds, pts) for k in range(len(plan))])
    assert (owners.sum(0) == 1).all()
    assert len(plan_route(Trajectory.straight(length_m=30.0), BOX_X, overlap_m=24.0, reach_m=48.0)) == 1


def test_curved_route_anchors_lie_on_the_drive_and_face_along_it():
    traj = Trajectory.arc(radius_m=60.0, angle_deg=120.0)
    plan = plan_route(traj, BOX_X, overlap_m=24.0, reach_m=48.0)
    assert len(plan) == 1 + math.ceil((traj.path_length - 40.0) / 40.0)          # 125.7 m: 4 boxes
    for m, s in zip(plan.scene_to_world, plan.anchors_m):
        np.testing.assert_allclose(m[:3, :3].T @ m[:3, :3], np.eye(3), atol=1e-9)
        d = np.linalg.norm(traj.positions[:, :2] - m[:2, 3], axis=1).min()
        assert d < 0.2                                                     # on the arc (poses 1 m apart)
        theta = s / 60.0                                                   # heading of an arc after s metres
        # the heading is a ±2 m difference (one-sided at the start: off by ≤ 1/60 rad there)
        np.testing.assert_allclose(m[:2, 0], [math.cos(theta), math.sin(theta)], atol=2e-2)


@pytest.mark.parametrize("overlap", [0.0, -1.0, 64.0, 10.0, float("nan")])
def test_bad_overlaps_are_refused(overlap):
    with pytest.raises(RouteError, match="overlap"):
        plan_route(Trajectory.straight(length_m=100.0), BOX_X, overlap_m=overlap, reach_m=48.0)


def test_transfer_reproduces_linear_maps_under_any_rigid_motion_and_copies_on_aligned_grids():
    Y, X = 16, 16
    xs = -16 + (np.arange(X) + 0.5) * 4.0
    ys = -32 + (np.arange(Y) + 0.5) * 4.0
    gx, gy = np.meshgrid(xs, ys)
    src = torch.tensor(np.stack([gx, gy]), dtype=torch.float64)            # channel 0 = x, 1 = y (source frame)
    dst_to_src = yaw_pose(20.0, -3.0, math.radians(30.0))
    vals, inside = transfer_columns(src, BOUNDS_XY, dst_to_src)
    pts = np.stack([gx, gy, 0 * gx, 1 + 0 * gx], -1) @ dst_to_src.T
    assert inside.sum() > 10 and not inside.all()
    np.testing.assert_allclose(vals[0][inside].numpy(), pts[..., 0][inside.numpy()], atol=1e-9)
    np.testing.assert_allclose(vals[1][inside].numpy(), pts[..., 1][inside.numpy()], atol=1e-9)
    # a 40 m shift on a 4 m grid: the known columns are exact copies of the source's
    noise = torch.randn(3, Y, X)
    vals, inside = transfer_columns(noise, BOUNDS_XY, yaw_pose(40.0, 0.0, 0.0))
    assert int(inside.sum()) == Y * 6                                      # x = 26 ... 46 of the source
    assert torch.equal(vals[:, :, :6], noise[:, :, 10:])


def test_map_for_box_reads_the_world_map_under_the_box():
    tags = np.full((100, 300), 9, dtype=np.uint8)                          # vegetation ...
    tags[45:55, :] = 1                                                     # ... with a road along world y in [-5, 5)
    world = BEVMap(tags, bounds=((-50.0, -50.0), (250.0, 50.0)))
    m = map_for_box(world, yaw_pose(100.0, 0.0, 0.0), BOUNDS_XY, (64, 64))
    assert (m.tags[27:37] == 1).all() and (m.tags[:20] == 9).all()
    turned = map_for_box(world, yaw_pose(100.0, 0.0, math.pi / 2), BOUNDS_XY, (64, 64))
    assert (turned.tags[:, 11:21] == 1).all()                              # the road now crosses the box's x
    assert (map_for_box(world, yaw_pose(240.0, 0.0, 0.0), BOUNDS_XY, (64, 64)).tags[:, -10:] == 255).all()


def _latents(path, k):
    from safetensors.torch import load_file

    return load_file(str(path / f"scenes/{k:04d}/latents.safetensors"))


def test_generation_holds_the_overlap_fixed_and_follows_its_seed(tiny_generator, tmp_path):
    gen = tiny_generator
    traj = Trajectory.straight(length_m=130.0)
    route = generate_route(gen, traj, seed=3, steps=2, out=tmp_path / "r")
    # the default reach (12 m) and overlap (12 m): anchors 16 m apart, 0 … 128 m (the last trusts the end, 130 m)
    np.testing.assert_allclose(route.plan.anchors_m, np.arange(9) * 16.0)
    assert len(route) == 9 and [s.seed for s in route.scenes] == list(range(3, 12))
    X = _latents(tmp_path / "r", 0)["f"].shape[-1]
    cell = 64.0 / X
    shift, held = int(16.0 / cell), int(12.0 / cell)       # columns between anchors; columns of x in [-16, -4] m
    for k in range(1, len(route)):
        a, b = _latents(tmp_path / "r", k - 1), _latents(tmp_path / "r", k)
        assert torch.equal(a["g"], b["g"])                                 # one g for the whole route
        # the predecessor's part up to its reach (x <= 12 m there, x <= -4 m here) is held; beyond it is sampled
        assert torch.equal(b["f"][..., :held], a["f"][..., shift:shift + held])
        assert not torch.allclose(b["f"][..., held:X - shift], a["f"][..., shift + held:])
    again = generate_route(gen, traj, seed=3, steps=2)
    for s, t in zip(route.scenes, again.scenes):
        assert torch.equal(s.field.density, t.field.density)
    other = generate_route(gen, traj, seed=4, steps=2)
    assert not torch.allclose(other.scenes[0].field.density, route.scenes[0].field.density)


def test_an_interrupted_route_resumes_to_the_same_scenes(tiny_generator, tmp_path):
    gen = tiny_generator
    traj = Trajectory.straight(length_m=130.0)
    whole = generate_route(gen, traj, seed=1, steps=2)
    out = tmp_path / "r"
    generate_route(gen, traj, seed=1, steps=2, out=out)
    meta = json.loads((out / "route.json").read_text())
    meta["scenes"], meta["complete"] = meta["scenes"][:2], False           # as if stopped after two scenes
    (out / "route.json").write_text(json.dumps(meta))
    with pytest.raises(RouteError, match="did not finish"):
        NeuralRoute.load(out)
    resumed = generate_route(gen, traj, seed=1, steps=2, out=out)
    for s, t in zip(whole.scenes, resumed.scenes):
        assert torch.equal(s.field.density, t.field.density)
    with pytest.raises(RouteError, match="already holds a route"):
        generate_route(gen, traj, seed=2, steps=2, out=out)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("keep me")
    with pytest.raises(RouteError, match="not a route folder"):
        generate_route(gen, traj, seed=2, steps=2, out=tmp_path / "foreign")
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "keep me"
    generate_route(gen, traj, seed=2, steps=2, out=out, overwrite=True)


def test_save_load_round_trip_world_labels_and_mesh(tiny_generator, tmp_path):
    gen = tiny_generator
    route = generate_route(gen, Trajectory.arc(radius_m=80.0, angle_deg=60.0), seed=0, steps=2)
    route.save(tmp_path / "r")
    back = NeuralRoute.load(tmp_path / "r", decoder=gen.scene_ae)
    assert len(back) == len(route)
    np.testing.assert_array_equal(back.scene_to_world, route.scene_to_world)
    for s, t in zip(route.scenes, back.scenes):
        assert torch.equal(s.field.density.cpu(), t.field.density)
    with pytest.raises(RouteError, match="already holds a route"):
        route.save(tmp_path / "r")
    bev = back.world_bev()
    assert bev.tags.dtype == np.uint8 and bev.tags.shape[0] > 30
    # a cell of the world map takes the label of the scene that owns it
    k0 = route.scenes[0].bev()
    assert bev.miou(bev) == pytest.approx(1.0) or np.isnan(bev.miou(bev))
    assert k0.shape == route.scenes[0].field.density.shape[-2:]
    mesh = back.to_mesh()
    assert len(mesh.triangles) >= 0


def test_conditioned_route_uses_each_boxes_part_of_the_map(tiny_conditional_generator, tmp_path):
    gen = tiny_conditional_generator
    Y, X = gen.bev_grid_yx
    tags = np.full((80, 200), 9, dtype=np.uint8)
    tags[36:44] = 1
    world = BEVMap(tags, bounds=((-20.0, -40.0), (180.0, 40.0)))
    traj = Trajectory.straight(length_m=100.0)
    a = generate_route(gen, traj, bev=world, seed=0, steps=2, guidance_scale=2.0, out=tmp_path / "r")
    b = generate_route(gen, traj, seed=0, steps=2)
    assert not torch.allclose(a.scenes[1].field.density, b.scenes[1].field.density)
    assert NeuralRoute.load(tmp_path / "r").bev == world
    with pytest.raises(RouteError, match="world-frame BEVMap"):
        generate_route(gen, traj, bev=tags, steps=2)


def test_a_sharp_turn_shortens_the_spacing_so_the_drive_stays_inside_each_box():
    # 40 m straight, a 90° left turn of radius 6 m, 80 m straight: 36 m after the second anchor (where a fixed
    # 40 m spacing puts seam 1) the drive is 33 m to the side of that box's axis, beyond its 32 m half-width
    pts = [(float(x), 0.0) for x in np.arange(0.0, 40.0, 1.0)]
    pts += [(40.0 + 6 * math.sin(a), 6 - 6 * math.cos(a)) for a in np.linspace(0, math.pi / 2, 10)[1:]]
    pts += [(46.0, 6.0 + float(y)) for y in np.arange(1.0, 80.0, 1.0)]
    poses = []
    for i, (x, y) in enumerate(pts):
        nx, ny = pts[min(i + 1, len(pts) - 1)] if i + 1 < len(pts) else (2 * x - pts[i - 1][0], 2 * y - pts[i - 1][1])
        poses.append(yaw_pose(x, y, math.atan2(ny - y, nx - x)))
    traj = Trajectory.from_poses(np.stack(poses), rate_hz=1.0)
    box_y = (-32.0, 32.0)
    fixed = plan_route(traj, BOX_X, overlap_m=24.0, reach_m=48.0)
    adaptive = plan_route(traj, BOX_X, overlap_m=24.0, box_y=box_y, reach_m=48.0)
    assert (np.diff(fixed.anchors_m) == 40.0).all()
    steps = np.diff(adaptive.anchors_m)
    assert steps.min() < 40.0 and (steps % 4.0 == 0).all() and len(adaptive) > len(fixed)
    # every pose between an anchor and its seam lies inside the box by 12 m ahead and 16 m at the sides
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(traj.positions[:, :2], axis=0), axis=1))])
    for k in range(len(adaptive) - 1):
        m = adaptive.scene_to_world[k]
        seam_arc = adaptive.anchors_m[k] + (steps[k] + BOX_X[0] + 48.0) / 2          # the middle of the overlap
        sel = (arc >= adaptive.anchors_m[k]) & (arc <= seam_arc)
        local = (traj.positions[sel] - m[:3, 3]) @ m[:3, :3]
        assert (local[:, 0] <= 36.0 + 1e-6).all() and (np.abs(local[:, 1]) <= 16.0 + 1e-6).all()
    # a straight drive keeps the full spacing
    straight = plan_route(Trajectory.straight(length_m=150.0), BOX_X, overlap_m=24.0, box_y=box_y, reach_m=48.0)
    np.testing.assert_allclose(straight.anchors_m, [0, 40, 80, 120])
