"""The procedural simulator: protocol, determinism, resume, geometry of depth and poses, shading, driving."""
import dataclasses
import json
import math

import numpy as np
import open3d as o3d
import pytest

from sim_bridge import semantics as sem
from sim_bridge.backends.base import Backend, EpisodeSpec
from sim_bridge.backends.procedural import ProceduralBackend
from sim_bridge.backends.procedural import materials as M
from sim_bridge.backends.procedural.car_culling import CarShadowGrid
from sim_bridge.backends.procedural.car_meshes import CarFleet
from sim_bridge.backends.procedural.driving import RoadNet, Traffic
from sim_bridge.backends.procedural.layout import build_layout
from sim_bridge.backends.procedural.lighting import lighting_from_weather
from sim_bridge.backends.procedural.meshes import MeshBuilder, box
from sim_bridge.backends.procedural.placement import CAR_COLOURS, plan_town
from sim_bridge.backends.procedural.render import Renderer
from sim_bridge.backends.procedural.roads import build_roads
from sim_bridge.backends.procedural.scenes import commit_scene, outside_rect
from sim_bridge.backends.procedural.simulator import TRAFFIC, ego_to_world_matrix
from sim_bridge.backends.procedural.town_mesh import build_static_mesh, land_rect
from sim_bridge.rig import Rig
from sim_bridge.towns import TOWNS
from sim_bridge.weather import WEATHER_PRESETS

SIZE = 96


def _run(town="Town03", weather="ClearNoon", seed=0, ep_seed=11, frames=2, start=0, size=SIZE, rig="default"):
    with ProceduralBackend(town, weather, Rig.resolve(rig, size, size), fps=10.0, seed=seed) as b:
        b.start_episode(EpisodeSpec(0, ep_seed, start_frame=start))
        out = [b.step() for _ in range(frames)]
        return out, b


@pytest.fixture(scope="module")
def town03():
    """Frames 0..3 of a Town03 ClearNoon episode (default rig, 96×96) and the backend (closed)."""
    return _run(frames=4)


# ----------------------------------------------------------------------------------------------- contract


def test_protocol_and_frame_contract(town03):
    frames, b = town03
    assert isinstance(b, Backend) and b.name == "procedural"
    f = frames[0]
    N = 6
    assert f.rgb.shape == (N, SIZE, SIZE, 3) and f.rgb.dtype == np.uint8
    assert f.depth.shape == (N, SIZE, SIZE) and f.depth.dtype == np.float32
    assert f.semantic.shape == (N, SIZE, SIZE) and f.semantic.dtype == np.uint8
    assert f.cam_to_world.shape == (N, 4, 4) and f.cam_to_world.dtype == np.float64
    assert f.ego_to_world.shape == (4, 4)
    assert [fr.frame for fr in frames] == [0, 1, 2, 3]
    assert [fr.timestamp for fr in frames] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    # cam_to_world = ego_to_world @ cam_to_ego, exactly.
    rig = Rig.resolve("default", SIZE, SIZE)
    for fr in frames:
        np.testing.assert_allclose(fr.cam_to_world, fr.ego_to_world @ rig.cam_to_ego(), atol=1e-12)
        R = fr.ego_to_world[:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        assert fr.ego_to_world[2, 3] == 0.0  # the ego stands on the road (z = 0)
    # sky <=> no hit
    assert np.array_equal(~np.isfinite(f.depth), f.semantic == sem.SKY)
    assert (f.depth[np.isfinite(f.depth)] > 0).all()


def test_describe_and_close_twice():
    b = ProceduralBackend("Town02", "WetNoon", Rig.resolve("front", 32, 32))
    d = b.describe()
    assert json.loads(json.dumps(d)) == d  # JSON-serialisable for the store's attributes
    assert d["backend"] == "procedural" and d["town"] == "Town02" and d["weather"] == "WetNoon"
    assert d["map"]["triangles"] > 1000 and d["map"]["buildings"] > 10
    b.close()
    b.close()
    with pytest.raises(RuntimeError):
        b.start_episode(EpisodeSpec(0, 1))


def test_unknown_town_and_weather_are_errors():
    rig = Rig.resolve("front", 32, 32)
    with pytest.raises(ValueError, match="Town01.*Town10HD"):
        ProceduralBackend("Springfield", "ClearNoon", rig)
    with pytest.raises(ValueError, match="ClearNoon"):
        ProceduralBackend("Town01", "Sunny", rig)
    with pytest.raises(RuntimeError, match="start_episode"):
        ProceduralBackend("Town01", "ClearNoon", rig).step()


def test_town_is_built_once_per_backend():
    # Episodes reuse the built town (layout, meshes, BVH): only the first start pays for it.
    b = ProceduralBackend("Town10HD", "ClearNoon", Rig.resolve("front", 32, 32))
    assert b.build_seconds == 0.0
    b.start_episode(EpisodeSpec(0, 3))
    built, layout, renderer = b.build_seconds, b.layout, b.renderer
    assert built > 0.0
    b.start_episode(EpisodeSpec(1, 4))
    assert b.build_seconds == built and b.layout is layout and b.renderer is renderer


# ----------------------------------------------------------------------------------------------- determinism


def test_same_inputs_same_bytes(town03):
    frames, _ = town03
    again, _ = _run(frames=2)
    for a, b in zip(frames[:2], again):
        assert a.rgb.tobytes() == b.rgb.tobytes()
        assert a.depth.tobytes() == b.depth.tobytes()
        assert a.semantic.tobytes() == b.semantic.tobytes()
        assert a.cam_to_world.tobytes() == b.cam_to_world.tobytes()


def test_resume_replays_exactly(town03):
    frames, b = town03
    resumed, _ = _run(frames=1, start=3)
    a, r = frames[3], resumed[0]
    assert r.frame == 3 and r.timestamp == a.timestamp
    assert r.rgb.tobytes() == a.rgb.tobytes()
    assert r.depth.tobytes() == a.depth.tobytes()
    assert r.semantic.tobytes() == a.semantic.tobytes()
    assert r.ego_to_world.tobytes() == a.ego_to_world.tobytes()


def test_resume_checks_the_stored_pose(town03):
    frames, _ = town03
    rig = Rig.resolve("default", SIZE, SIZE)
    with ProceduralBackend("Town03", "ClearNoon", rig) as b:
        b.start_episode(EpisodeSpec(0, 11, start_frame=3, resume_ego_to_world=frames[2].ego_to_world))
        assert b.step().ego_to_world.tobytes() == frames[3].ego_to_world.tobytes()
        wrong = frames[2].ego_to_world.copy()
        wrong[0, 3] += 5.0
        with pytest.raises(ValueError, match="resume mismatch"):
            b.start_episode(EpisodeSpec(0, 11, start_frame=3, resume_ego_to_world=wrong))


def test_episodes_start_in_different_places():
    b = ProceduralBackend("Town01", "ClearNoon", Rig.resolve("front", 16, 16))
    starts = []
    for k in range(4):
        b.start_episode(EpisodeSpec(k, 100 + k))
        starts.append(b.ego_pose())
    xy = np.array([s[:2] for s in starts])
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    assert (d[np.triu_indices(4, 1)] > 5.0).all()


def test_towns_have_distinct_layouts_and_images():
    sigs = {}
    for t in TOWNS:
        L = build_layout(t, 0)
        sigs[t] = (len(L.nodes), len(L.edges), tuple(np.round(L.extent)))
    assert len(set(sigs.values())) == len(TOWNS)
    a, _ = _run("Town01", frames=1, size=32)
    b, _ = _run("Town05", frames=1, size=32)
    assert a[0].rgb.tobytes() != b[0].rgb.tobytes()
    assert build_layout("Town03", 0).nodes.tobytes() == build_layout("Town03", 0).nodes.tobytes()
    assert build_layout("Town03", 0).nodes.tobytes() != build_layout("Town03", 1).nodes.tobytes()


def test_town_characters():
    """Highways in Town04/06, a roundabout in Town03, narrow country roads in Town07, towers in Town10HD."""
    has_highway = {t: any(e.style.centre_line == "barrier" for e in build_layout(t, 0).edges) for t in TOWNS}
    assert has_highway["Town04"] and has_highway["Town06"] and not has_highway["Town01"]
    assert build_layout("Town03", 0).islands
    assert all(e.style.sidewalk == 0 and e.style.lanes == 1 for e in build_layout("Town07", 0).edges)
    assert all(e.style.lanes >= 2 for e in build_layout("Town05", 0).edges)
    deg = build_layout("Town01", 0).degree()
    assert (deg == 3).sum() > (deg == 4).sum()  # mostly T-junctions

    def mean_height(t):
        L = build_layout(t, 0)
        return np.mean([b.height for b in plan_town(L, build_roads(L), 0).buildings])

    assert mean_height("Town10HD") > 2.5 * mean_height("Town02")


# ----------------------------------------------------------------------------------------------- geometry


def _unproject(depth, K, cam_to_world):
    H, W = depth.shape
    u, v = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    pix = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(K).T
    pc = pix * depth[..., None]
    return pc @ cam_to_world[:3, :3].T + cam_to_world[:3, 3]


def _sample_inverse_depth(depth, uv):
    """Bilinear interpolation of 1/depth at continuous pixel coords uv [k,2] (exact for planes)."""
    H, W = depth.shape
    x, y = uv[:, 0] - 0.5, uv[:, 1] - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    ok = (x0 >= 0) & (y0 >= 0) & (x0 < W - 1) & (y0 < H - 1)
    x0, y0, ax, ay = x0[ok], y0[ok], (x - np.floor(x))[ok], (y - np.floor(y))[ok]
    inv = 1.0 / depth.astype(np.float64)
    d = [inv[y0, x0], inv[y0, x0 + 1], inv[y0 + 1, x0], inv[y0 + 1, x0 + 1]]
    val = (d[0] * (1 - ax) + d[1] * ax) * (1 - ay) + (d[2] * (1 - ax) + d[3] * ax) * ay
    return ok, val


def _reprojection_errors(fa, ca, fb, cb, K):
    """Relative depth errors of static points of frame fa / camera ca seen in frame fb / camera cb."""
    static = np.isfinite(fa.depth[ca]) & (fa.semantic[ca] != sem.CAR) & (fa.depth[ca] < 80)
    X = _unproject(np.where(static, fa.depth[ca], 1.0), K, fa.cam_to_world[ca])[static]
    w2c = np.linalg.inv(fb.cam_to_world[cb])
    pc = X @ w2c[:3, :3].T + w2c[:3, 3]
    front = pc[:, 2] > 0.5
    pc = pc[front]
    uv = pc[:, :2] / pc[:, 2:3] @ K[:2, :2].T + K[:2, 2]
    ok, inv = _sample_inverse_depth(fb.depth[cb], uv)
    z = pc[ok, 2]
    good = inv > 0  # a neighbour of inf depth (sky) gives inv 0: not comparable
    return np.abs(1.0 / inv[good] - z[good]) / z[good]


def test_depth_reprojects_into_next_frame_and_neighbour_camera(town03):
    frames, _ = town03
    K = Rig.resolve("default", SIZE, SIZE).cameras[0].K
    f0, f1 = frames[0], frames[1]
    assert np.linalg.norm(f1.ego_to_world[:3, 3] - f0.ego_to_world[:3, 3]) > 0.3  # the ego moved
    for ca, cb, fa, fb in [(0, 0, f0, f1), (3, 3, f0, f1), (0, 1, f0, f0), (0, 5, f1, f1), (1, 0, f0, f1)]:
        err = _reprojection_errors(fa, ca, fb, cb, K)
        assert len(err) > 300, (ca, cb, len(err))
        # exact geometry gives ~1e-7; a 0.3 m pose error already gives > 1e-3
        assert np.median(err) < 5e-4, (ca, cb, np.median(err))
        assert np.mean(err < 1e-3) > 0.75, (ca, cb, np.mean(err < 1e-3))


def test_ground_below_camera_matches_height(town03):
    """Bottom rows of the front camera see the flat road: distance = camera height / sin(down-angle)."""
    frames, _ = town03
    rig = Rig.resolve("default", SIZE, SIZE)
    cam = rig.cameras[0]
    h = cam.cam_to_ego[2, 3]
    K = cam.K
    f = frames[0]
    for v in range(SIZE - 6, SIZE):
        for u in range(SIZE // 2 - 8, SIZE // 2 + 8):
            assert f.semantic[0, v, u] in (sem.ROAD, sem.ROADLINE)
            ray = np.linalg.inv(K) @ [u + 0.5, v + 0.5, 1.0]
            down = math.asin(ray[1] / np.linalg.norm(ray))  # the camera is level: down-angle from cam y
            dist = f.depth[0, v, u] * np.linalg.norm(ray)
            assert dist == pytest.approx(h / math.sin(down), rel=1e-4)
            assert f.depth[0, v, u] == pytest.approx(h * K[1, 1] / (v + 0.5 - K[1, 2]), rel=1e-4)


def _box_scene(y_box):
    mb = MeshBuilder()
    mb.add(np.array([[-60, -60, 0], [60, -60, 0], [60, 60, 0], [-60, 60, 0]], float), np.array([[0, 1, 2], [0, 2, 3]]),
           sem.TERRAIN, M.GRASS, (100, 120, 60))
    V, F = box((12.0, y_box), 0.0, 4.0, 4.0, 0.0, 6.0)
    mb.add(V, F, sem.BUILDING, M.CONCRETE, (180, 180, 180))
    return mb.build()


def test_right_handed_left_is_left():
    """Ego frame x forward, y left: a building at ego y > 0 appears in the left half of the front image."""
    rig = Rig.resolve("front", 64, 64)
    light = lighting_from_weather(WEATHER_PRESETS["ClearNoon"])
    for y_box, left in [(6.0, True), (-6.0, False)]:
        r = Renderer(_box_scene(y_box), rig)
        out = r.render(rig.cam_to_ego(), light)  # ego at the world origin
        cols = np.nonzero(out.semantic[0] == sem.BUILDING)[1]
        assert len(cols) > 20
        assert (cols < 32).all() if left else (cols >= 32).all()
        # flat ground: planar depth of row v is h·fy / (v + 0.5 - cy), exactly
        K, h = rig.cameras[0].K, rig.cameras[0].cam_to_ego[2, 3]
        v = 60
        np.testing.assert_allclose(out.depth[0, v, 2:8], h * K[1, 1] / (v + 0.5 - K[1, 2]), rtol=1e-5)


def test_bytes_do_not_depend_on_grouping_or_threads():
    """Every pixel is computed independently: one camera group or three, one numba thread or two, same bytes."""
    import numba

    outs = []
    for groups, threads in [(None, numba.config.NUMBA_NUM_THREADS), (3, 1)]:
        b = ProceduralBackend("Town03", "WetNoon", Rig.resolve("default", 48, 48), seed=0)
        b.start_episode(EpisodeSpec(0, 4))
        if groups:
            b.renderer.groups = [range(a, a + 2) for a in range(0, 6, 2)]
        numba.set_num_threads(threads)
        try:
            outs.append([b.step() for _ in range(2)])
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for fa, fb in zip(*outs):
        for k in ("rgb", "depth", "semantic"):
            np.testing.assert_array_equal(getattr(fa, k), getattr(fb, k))


@pytest.mark.parametrize("altitude_deg", [60.0, 12.0])
def test_car_shadow_raster_is_conservative(altitude_deg):
    """Every shadow ray that a car occludes is among those the cars' raster selects (it may select more)."""
    rng = np.random.default_rng(0)
    fleet = CarFleet([(200, 30, 30)] * 5, [0, 1, 2, 0, 1])
    poses = np.column_stack([rng.uniform(-30, 30, 5), rng.uniform(-30, 30, 5), rng.uniform(-np.pi, np.pi, 5)])
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(fleet.vertices(poses)), o3d.core.Tensor(fleet.mesh.triangles))
    commit_scene(scene)
    a, az = math.radians(altitude_deg), 2.0
    sun = np.array([math.cos(a) * math.cos(az), math.cos(a) * math.sin(az), math.sin(a)], np.float32)
    n = 200_000
    srays = np.column_stack([rng.uniform(-45, 45, n), rng.uniform(-45, 45, n), rng.uniform(0.0, 2.0, n),
                             np.broadcast_to(sun, (n, 3))]).astype(np.float32)
    occluded = scene.test_occlusions(o3d.core.Tensor(srays)).numpy()
    near = CarShadowGrid(poses, sun, fleet.HEIGHT).near(srays)
    assert occluded.sum() > 300                # the cars do cast shadows on these points
    assert not (occluded & ~near).any()        # ... and the raster never misses one
    assert near.mean() < 0.5                   # while leaving most rays out


def test_outside_rect_known_triangles():
    mb = MeshBuilder()
    tri = np.array([[0, 1, 2]])
    for xs, ys in [((-5, -3, -4), (0, 0, 1)),     # x <= x0: outside
                   ((-5, 1, 0), (0, 0, 1)),       # crosses x0: inside part
                   ((2, 3, 2.5), (10, 12, 11)),   # y >= y1 (on the edge counts as outside)
                   ((4, 6, 5), (-1, -1, 5))]:     # x from the edge outwards: outside
        mb.add(np.array([[x, y, 0.0] for x, y in zip(xs, ys)]), tri, sem.TERRAIN, M.HILL, (0, 0, 0))
    mesh = mb.build()
    np.testing.assert_array_equal(outside_rect(mesh, (-3.0, -2.0, 4.0, 10.0)), [True, False, True, True])


def test_outer_terrain_scene_is_exact():
    """Keeping the terrain beyond the town in its own scene changes nothing: the same depth, labels, sun tests and
    pixels as one scene holding everything, for cameras looking out over the hills at sunset (long shadows) from
    inside the town and from outside it."""
    rig = Rig.resolve("default", 48, 48)
    b = ProceduralBackend("Town03", "ClearSunset", rig, seed=0)
    b.start_episode(EpisodeSpec(0, 1))
    rect = land_rect(b.plan)
    split, whole = Renderer(b.mesh, rig, inner_rect=rect), Renderer(b.mesh, rig)
    assert split.outer is not None and 0 < split.n_inner < b.mesh.n_triangles and whole.outer is None
    sunset = lighting_from_weather(WEATHER_PRESETS["ClearSunset"])
    # A sun 2° above the horizon makes the hills shadow the town's edge and each other (thousands of pixels on
    # these poses), so the outer scene's part of the sun test matters.
    low = [dataclasses.replace(sunset, sun_dir=np.array([math.cos(a), math.sin(a), 0.0], np.float32) * math.cos(0.035)
                               + np.array([0, 0, math.sin(0.035)], np.float32)) for a in (0.0, math.pi / 2)]
    x0, y0, x1, y1 = rect
    poses = [(x0 + 12.0, (y0 + y1) / 2, math.pi), (x1 - 8.0, y0 + 30.0, -0.5), (x0 - 40.0, y0 + 60.0, 0.3),
             (x1 + 150.0, (y0 + y1) / 2, 0.0)]
    hills = shadowed = 0
    for light in [sunset, *low]:
        for x, y, yaw in poses:
            c2w = ego_to_world_matrix(x, y, yaw) @ rig.cam_to_ego()
            a, c = split.render(c2w, light), whole.render(c2w, light)
            np.testing.assert_array_equal(a.depth, c.depth)
            np.testing.assert_array_equal(a.semantic, c.semantic)
            np.testing.assert_array_equal(a.sun_lit, c.sun_lit)
            np.testing.assert_array_equal(a.rgb, c.rgb)
            hills += int((a.semantic == sem.TERRAIN).sum())
            shadowed += int((a.sun_facing & ~a.sun_lit).sum())
    assert hills > 500 and shadowed > 5000  # the terrain beyond the town was in view; shadows were cast


# ----------------------------------------------------------------------------------------------- shading


def test_semantic_classes_in_town03(town03):
    frames, _ = town03
    present = set(np.unique(np.concatenate([f.semantic.ravel() for f in frames])).tolist())
    for tag in (sem.ROAD, sem.SIDEWALK, sem.BUILDING, sem.SKY, sem.VEGETATION, sem.ROADLINE, sem.TERRAIN):
        assert tag in present, sem.TAG_NAMES[tag]
    assert present <= set(sem.TAG_NAMES)


def _luma(rgb):
    return rgb.astype(np.float64) @ [0.299, 0.587, 0.114]


def test_cast_shadows_darken_the_road():
    _, b = _run("Town03", "ClearNoon", frames=1, size=128)
    out = b.last_render
    road = (out.semantic == sem.ROAD)
    shadowed = road & out.sun_facing & ~out.sun_lit
    lit = road & out.sun_lit
    assert shadowed.sum() > 200 and lit.sum() > 200
    y = _luma(out.rgb)
    assert np.median(y[shadowed]) < 0.75 * np.median(y[lit])


def test_weather_changes_light():
    imgs = {}
    for w in ("ClearNoon", "ClearSunset", "ClearNight", "HardRainNoon"):
        f, b = _run("Town03", w, frames=1, size=48)
        imgs[w] = f[0]
    noon, sunset, night = imgs["ClearNoon"], imgs["ClearSunset"], imgs["ClearNight"]
    assert _luma(night.rgb).mean() < 0.5 * _luma(noon.rgb).mean()
    # geometry and labels do not depend on the weather
    assert noon.depth.tobytes() == night.depth.tobytes()
    sky = noon.semantic == sem.SKY
    r_noon, b_noon = noon.rgb[sky][:, 0].mean(), noon.rgb[sky][:, 2].mean()
    r_sun, b_sun = sunset.rgb[sky][:, 0].mean(), sunset.rgb[sky][:, 2].mean()
    assert r_sun / b_sun > r_noon / b_noon + 0.15  # sunset skies are redder
    # rain: flatter contrast (overcast, no hard shadows)
    assert _luma(imgs["HardRainNoon"].rgb).std() < _luma(noon.rgb).std()
    # sun direction follows the preset's altitude
    assert lighting_from_weather(WEATHER_PRESETS["ClearNoon"]).sun_dir[2] == pytest.approx(math.sin(math.radians(45)), abs=1e-6)
    assert lighting_from_weather(WEATHER_PRESETS["ClearSunset"]).sun_dir[2] == pytest.approx(math.sin(math.radians(15)), abs=1e-6)


# ----------------------------------------------------------------------------------------------- driving


def _down_tags(scene, mesh, xy):
    rays = np.zeros((len(xy), 6), np.float32)
    rays[:, :2] = xy
    rays[:, 2] = 0.5  # below tree crowns and lamp arms, above the road (which is at z=0)
    rays[:, 5] = -1.0
    r = scene.cast_rays(o3d.core.Tensor(rays))
    pid = r["primitive_ids"].numpy().astype(np.int64)
    ok = np.isfinite(r["t_hit"].numpy())
    return np.where(ok, mesh.tag[np.where(ok, pid, 0)], 0), np.where(ok, pid, -1)


@pytest.mark.parametrize("town", ["Town01", "Town03", "Town04", "Town07", "Town10HD"])
def test_ego_drives_on_its_lane(town):
    L = build_layout(town, 0)
    roads = build_roads(L)
    mesh = build_static_mesh(plan_town(L, roads, 0), 0)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices), o3d.core.Tensor(mesh.triangles))
    traffic = Traffic(RoadNet(L, roads), seed=5, n_cars=6, colours=CAR_COLOURS)
    poses = []
    others = []
    for _ in range(400):  # 40 s at 10 fps
        p = traffic.poses()
        poses.append(p[0])
        others.append(p[1:, :2])
        traffic.tick(0.1)
    poses = np.array(poses)
    tags, pid = _down_tags(scene, mesh, poses[:, :2])
    assert (tags == sem.ROAD).all(), f"ego left the road at ticks {np.flatnonzero(tags != sem.ROAD)[:5]}"
    # Keep right: on marked road pieces the ego is right of the centre line of its direction of travel.
    on_edge = mesh.material[np.maximum(pid, 0)] == M.ROAD
    prm = mesh.params[pid[on_edge]]
    rel = poses[on_edge, :2] - prm[:, :2]
    lat = prm[:, 2] * rel[:, 1] - prm[:, 3] * rel[:, 0]
    along = np.cos(poses[on_edge, 2]) * prm[:, 2] + np.sin(poses[on_edge, 2]) * prm[:, 3]
    assert on_edge.mean() > 0.5
    assert (lat * np.sign(along) < -0.5).all()
    # Smooth heading, steady progress, and real turns at junctions.
    dyaw = np.abs((np.diff(poses[:, 2]) + math.pi) % (2 * math.pi) - math.pi)
    assert dyaw.max() < 0.2
    dist = np.linalg.norm(np.diff(poses[:, :2], axis=0), axis=1).sum()
    assert dist > 120.0
    if town != "Town04":  # the highway loop may run straight for 40 s
        assert dyaw.sum() > 1.2
    other_tags, _ = _down_tags(scene, mesh, np.concatenate(others))
    assert np.mean(other_tags == sem.ROAD) > 0.99


@pytest.mark.parametrize("town", ["Town03", "Town10HD"])
def test_traffic_does_not_collide_or_jam(town):
    """Car following and junction reservations keep vehicles apart; the ego keeps moving."""
    L = build_layout(town, 0)
    traffic = Traffic(RoadNet(L, build_roads(L)), seed=2, n_cars=TRAFFIC[town], colours=CAR_COLOURS)
    closest, ego_v = np.inf, []
    for _ in range(300):
        P = traffic.poses()
        d = np.linalg.norm(P[:, None, :2] - P[None, :, :2], axis=-1)
        np.fill_diagonal(d, np.inf)
        closest = min(closest, d.min())
        ego_v.append(traffic.vehicles[0].v)
        traffic.tick(0.1)
    assert closest > 3.0  # lanes are >= 3.2 m apart; car centres never come closer
    assert np.mean(np.array(ego_v) > 0.5) > 0.8
