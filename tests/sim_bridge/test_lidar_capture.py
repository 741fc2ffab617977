"""Capture-side LiDAR: the spec (twin of the SDK's: beam tables, JSON, CARLA attributes), binning returns into the
range image, the procedural ray cast against analytic geometry, the CARLA semantic LiDAR against the stand-in
server (tests/carla_standin.py), the store (round trip, validation, resume, determinism, reprojection into the
captured camera depth) and `sim_bridge collect --lidar` errors.

Analytic scenes: a flat ground at z = 0 and, for the procedural cast, a box x ∈ [10, 12], y ∈ [−3, 3], z ∈ [0, 4] m.
A level sensor h metres above the ground sees it at range h / sin(−e) along a beam of elevation e < 0, whatever the
azimuth.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import carla_standin as cs
from sim_bridge import conventions as conv
from sim_bridge import semantics
from sim_bridge.backends.base import EpisodeSpec, FrameData
from sim_bridge.backends.carla_backend import CarlaBackend
from sim_bridge.backends.procedural import materials as M
from sim_bridge.backends.procedural.lidar_cast import LidarCaster
from sim_bridge.backends.procedural.meshes import MeshBuilder, box
from sim_bridge.backends.procedural.render import Renderer
from sim_bridge.backends.procedural.simulator import ego_to_world_matrix
from sim_bridge.cli import main as cli
from sim_bridge.lidar import LIDAR_PRESETS, LidarError, LidarSpec, range_image
from sim_bridge.rig import Rig
from sim_bridge.store.reader import open_store
from sim_bridge.store.validate import validate_store
from sim_bridge.store.writer import StoreWriter

SMALL = ["--backend", "procedural", "--town", "Town01", "--rig", "front", "--width", "64", "--height", "48", "--fps",
         "5", "--seed", "3", "--quiet"]


def small_spec(**kw) -> LidarSpec:
    """16 beams every 2° from +10° to −20°, 360 shots per beam (every degree), 40 m."""
    return LidarSpec(**{**dict(channels=16, range_m=40.0, upper_fov_deg=10.0, lower_fov_deg=-20.0,
                               rotation_frequency_hz=10.0, points_per_second=16 * 10 * 360, name="test"), **kw})


def mount(x=0.0, y=0.0, z=1.8, yaw_deg=0.0, pitch_deg=0.0, roll_deg=0.0) -> np.ndarray:
    """`lidar_to_ego [4,4]` at (x, y, z) m with R = Rz(yaw) · Ry(−pitch) · Rx(roll): a positive pitch raises +x."""
    a, b, c = (math.radians(v) for v in (yaw_deg, pitch_deg, roll_deg))
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    ry = np.array([[math.cos(b), 0, -math.sin(b)], [0, 1, 0], [math.sin(b), 0, math.cos(b)]])
    rx = np.array([[1, 0, 0], [0, math.cos(c), -math.sin(c)], [0, math.sin(c), math.cos(c)]])
    m = np.eye(4)
    m[:3, :3] = rz @ ry @ rx
    m[:3, 3] = (x, y, z)
    return m


# ============================================================================================ the spec
@pytest.mark.parametrize("name", list(LIDAR_PRESETS))
def test_beam_tables_json_and_carla_attributes_equal_the_sdks(name, tmp_path):
    from nfldm_sdk.sensors.lidar_spec import LidarSpec as SdkSpec

    ours, sdk = LidarSpec.preset(name, mount(0.2, 0.0, 1.9, yaw_deg=3.0)), SdkSpec.preset(name, mount(0.2, 0.0, 1.9, yaw_deg=3.0))
    assert ours.range_image_shape == (sdk.channels, sdk.points_per_channel)
    np.testing.assert_array_equal(ours.elevations_deg(), sdk.elevations_deg())
    np.testing.assert_array_equal(ours.azimuths_deg(), sdk.azimuths_deg())
    np.testing.assert_array_equal(ours.directions(), sdk.directions())
    assert ours.carla_attributes() == sdk.carla_attributes() and ours.to_json() == sdk.to_json()
    # a file written by either package is read by the other
    assert LidarSpec.load(sdk.save(tmp_path / "sdk.json")) == ours
    assert SdkSpec.load(ours.save(tmp_path / "ours.json")).to_json() == sdk.to_json()


def test_preset_numbers_and_beam_layout():
    spec = LidarSpec.preset("nuscenes32")
    assert spec.range_image_shape == (32, 2171)                        # 1 390 000 / 20 / 32 = 2171.875
    assert LidarSpec.preset("os128").range_image_shape == (128, 2048)   # exact ratio: not 2047
    el = spec.elevations_deg()
    assert el[0] == pytest.approx(10.67) and el[-1] == pytest.approx(-30.67)
    d = spec.directions()
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(d[0, 0], [math.cos(math.radians(10.67)), 0.0, math.sin(math.radians(10.67))])
    q = 2171 // 4 + 1                                                  # just past 90°: towards +y (left)
    assert d[5, q, 1] > 0.9 * math.cos(math.radians(el[5])) and abs(d[5, q, 0]) < 0.01


def test_carla_attributes_round_trip_defaults_and_errors():
    spec = small_spec(lidar_to_ego=mount(0.5, 0.0, 2.0, yaw_deg=10.0))
    attrs = spec.carla_attributes()
    assert attrs == {"channels": "16", "range": "40.0", "upper_fov": "10.0", "lower_fov": "-20.0",
                     "rotation_frequency": "10.0", "points_per_second": "57600", "horizontal_fov": "360.0",
                     "role_name": "test"}
    assert LidarSpec.from_carla_attributes(attrs, lidar_to_ego=spec.lidar_to_ego) == spec
    # CARLA's blueprint defaults for what is not given; noise / drop-off / sensor_tick are accepted and ignored
    d = LidarSpec.from_carla_attributes({"noise_stddev": "0.1", "sensor_tick": "0.05"})
    assert (d.channels, d.range_m, d.points_per_second, d.rotation_frequency_hz, d.upper_fov_deg, d.lower_fov_deg,
            d.name) == (32, 10.0, 56000, 10.0, 10.0, -30.0, "lidar")
    for bad, message in (({"colour": "red"}, "unknown CARLA LiDAR attribute"), ({"channels": "x"}, "channels='x'"),
                         ({"horizontal_fov": "180"}, "horizontal_fov='360'"), ({"range": "-1"}, "range_m")):
        with pytest.raises(LidarError, match=message):
            LidarSpec.from_carla_attributes(bad)


@pytest.mark.parametrize("change, message", [
    (dict(channels=0), "channels must be >= 1"), (dict(upper_fov_deg=-30.0), "swap them"),
    (dict(points_per_second=10), "raise it to at least 160"), (dict(range_m=float("nan")), "finite number"),
    (dict(lidar_to_ego=np.diag([1.0, 1.0, 2.0, 1.0])), "not a rigid"), (dict(channels=2.5), "finite integer"),
])
def test_bad_spec_names_the_field(change, message):
    with pytest.raises(LidarError, match=message):
        small_spec(**change)


def test_bad_files_and_names(tmp_path):
    with pytest.raises(LidarError, match="not found"):
        LidarSpec.resolve(str(tmp_path / "missing.json"))
    with pytest.raises(LidarError, match="unknown LiDAR 'vlp16'"):
        LidarSpec.resolve("vlp16")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(LidarError, match="not valid JSON"):
        LidarSpec.load(tmp_path / "broken.json")
    (tmp_path / "short.json").write_text(json.dumps({"channels": 4}))
    with pytest.raises(LidarError, match="lacks"):
        LidarSpec.load(tmp_path / "short.json")


# ============================================================================================ binning
def test_range_image_keeps_the_nearest_return_per_cell():
    spec = small_spec()                                                # rows: 10°, 8°, ..., columns: every 1°

    def point(el, az, r):
        e, a = math.radians(el), math.radians(az)
        return [r * math.cos(e) * math.cos(a), r * math.cos(e) * math.sin(a), r * math.sin(e)]

    pts = [point(10.0, 0.0, 5.0),            # row 0, column 0
           point(-20.0, 90.0, 7.0),          # row 15, column 90 (+y: left)
           point(-20.0, 90.3, 6.0),          # same cell, nearer: kept
           point(-19.2, -0.4, 3.0),          # row 15 (0.4° off the beam), azimuth 359.6° wraps to column 0
           point(-2.9, 180.0, 10.0),         # 0.45 of a 2° spacing off row 6 (−2°): row 6
           point(-3.0, 45.0, 10.0),          # exactly between rows 6 and 7: one of them, never dropped
           point(0.0, 10.0, 41.0),           # beyond range_m: dropped
           point(25.0, 10.0, 5.0)]           # above the highest beam by more than half a spacing: dropped
    rng, tag = range_image(np.array(pts), np.array([1, 2, 3, 4, 5, 6, 7, 8], np.uint32), spec)
    assert rng.shape == tag.shape == (16, 360) and rng.dtype == np.float32 and tag.dtype == np.uint8
    expect = {(0, 0): (5.0, 1), (15, 90): (6.0, 3), (15, 0): (3.0, 4), (6, 180): (10.0, 5)}
    for (c, a), (r, t) in expect.items():
        assert rng[c, a] == pytest.approx(r, rel=1e-6) and tag[c, a] == t
    assert ((rng[6:8, 45] == np.float32(10.0)).sum(), tag[6:8, 45].max()) == (1, 6)
    assert np.isfinite(rng).sum() == 5 and (tag > 0).sum() == 5 and tag[~np.isfinite(rng)].max() == 0


# ============================================================================================ procedural
def analytic_renderer(with_box: bool) -> Renderer:
    mb = MeshBuilder()
    mb.add(np.array([[-100, -100, 0], [100, -100, 0], [100, 100, 0], [-100, 100, 0]], float),
           np.array([[0, 1, 2], [0, 2, 3]]), semantics.ROAD, M.ASPHALT, (90, 90, 90))
    if with_box:
        V, F = box((11.0, 0.0), 0.0, 2.0, 6.0, 0.0, 4.0)
        mb.add(V, F, semantics.BUILDING, M.CONCRETE, (150, 150, 150))
    return Renderer(mb.build(), Rig.resolve("front", 8, 8))


def analytic_hits(o: np.ndarray, d: np.ndarray, grow: float) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit (t [R], tag [R]) of rays o + t d against the ground |x|, |y| <= 100 and the box grown by `grow`."""
    with np.errstate(divide="ignore", invalid="ignore"):
        tg = np.where(d[:, 2] < 0, -o[2] / d[:, 2], np.inf)
        lo, hi = np.array([10.0, -3.0, 0.0]) - grow, np.array([12.0, 3.0, 4.0]) + grow
        t1, t2 = (lo - o) / d, (hi - o) / d
    near = np.nanmax(np.minimum(t1, t2), axis=1)
    far = np.nanmin(np.maximum(t1, t2), axis=1)
    tb = np.where((near <= far) & (far > 0), np.maximum(near, 0.0), np.inf)
    t = np.minimum(tg, tb)
    return t, np.where(tb < tg, semantics.BUILDING, np.where(np.isfinite(tg), semantics.ROAD, 0))


def test_procedural_lidar_sees_a_flat_ground_at_h_over_sin_minus_elevation():
    spec = small_spec()
    rng, tag = LidarCaster(analytic_renderer(False), spec).scan(spec.lidar_to_ego)   # ego at the world origin
    e = np.radians(spec.elevations_deg())
    with np.errstate(divide="ignore"):
        expected = np.where(e < 0, 1.8 / np.sin(-e), np.inf)                         # [C]
    expected[expected > spec.range_m] = np.inf
    assert np.isfinite(expected).sum() == 9                             # −4° .. −20° (−2° meets it at 51.6 m > 40)
    np.testing.assert_allclose(rng, np.broadcast_to(expected[:, None], rng.shape).astype(np.float32), rtol=2e-6)
    np.testing.assert_array_equal(tag, np.where(np.isfinite(rng), semantics.ROAD, 0))


def test_procedural_lidar_matches_an_analytic_box_and_ground_from_a_turned_pose():
    spec = small_spec()
    lidar_to_ego = mount(0.4, 0.1, 1.8, yaw_deg=-20.0, pitch_deg=3.0)
    l2w = ego_to_world_matrix(2.0, -1.0, math.radians(15.0)) @ lidar_to_ego
    rng, tag = LidarCaster(analytic_renderer(True), spec).scan(l2w)
    d = spec.directions().reshape(-1, 3) @ l2w[:3, :3].T
    o = l2w[:3, 3]
    t, t_tag = analytic_hits(o, d, 0.0)
    # beams grazing an edge of the box, or ending near range_m, may go either way: leave them out
    ambiguous = (analytic_hits(o, d, 0.02)[1] != analytic_hits(o, d, -0.02)[1]) | (np.abs(t - 40.0) < 0.05)
    t_tag = np.where(t <= 40.0, t_tag, 0)
    t = np.where(t <= 40.0, t, np.inf)
    ok = ~ambiguous
    assert ok.mean() > 0.97 and (t_tag[ok] == semantics.BUILDING).sum() > 100 and (t_tag[ok] == semantics.ROAD).sum() > 1000
    np.testing.assert_allclose(rng.reshape(-1)[ok], t[ok].astype(np.float32), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(tag.reshape(-1)[ok], t_tag[ok])


# ============================================================================================ CARLA
W, H = 16, 12


@pytest.fixture
def server():
    s = cs.StandinServer(map_name="Town03")
    yield s
    s.wait_deliveries()


def carla_backend(server, spec, fps=10.0):
    return CarlaBackend("Town03", "ClearNoon", Rig.resolve("front", W, H), fps=fps, seed=11, warmup_ticks=2, timeout=2.0,
                        client_factory=server.client_factory, lidar=spec)


def test_carla_semantic_lidar_decodes_to_the_ground_from_a_tilted_mount(server):
    spec = small_spec(lidar_to_ego=mount(0.3, 0.2, 1.9, yaw_deg=25.0, pitch_deg=-4.0, roll_deg=3.0), name="TOP")
    with carla_backend(server, spec) as b:
        b.start_episode(EpisodeSpec(index=0, seed=5))
        frames = [b.step() for _ in range(2)]
        sensor = b._lidar_sensor.actors["lidar"]
        raw = server._sweep(sensor, server.frame)                      # the next sweep, decoded by hand below
    lidar_spawns = [s for s in server.spawned if s[1] == "sensor.lidar.ray_cast_semantic"]
    assert len(lidar_spawns) == 1 and lidar_spawns[0][3] is not None  # attached to the ego
    assert {k: sensor.attributes[k] for k in spec.carla_attributes()} == spec.carla_attributes()
    assert sensor.id in server.destroyed and not server.violations
    for f in frames:
        np.testing.assert_allclose(f.lidar_to_world, f.ego_to_world @ spec.lidar_to_ego, atol=2e-6)
        assert f.lidar_range.shape == f.lidar_tag.shape == (16, 360)
    # every decoded point lies on the ground (world z = 0) and on the side of the road its tag says
    points, tags, idx = conv.decode_semantic_lidar(raw.raw_data)
    assert len(points) == len(raw) > 1000 and (idx == 0).all()
    l2w = conv.carla_to_lidar_to_world(raw.transform)
    world = points @ l2w[:3, :3].T + l2w[:3, 3]
    np.testing.assert_allclose(world[:, 2], 0.0, atol=2e-5)
    clear = np.abs(world[:, 1] + cs.SIDEWALK_Y) > 1e-3
    np.testing.assert_array_equal(tags[clear], np.where(world[clear, 1] < -cs.SIDEWALK_Y, semantics.SIDEWALK,
                                                        semantics.ROAD))
    assert (tags == semantics.SIDEWALK).sum() > 100 and (tags == semantics.ROAD).sum() > 100
    p0 = raw[0].point                                                  # SemanticLidarDetection, UE (y right)
    np.testing.assert_allclose(points[0], [p0.x, -p0.y, p0.z], rtol=1e-6)


def test_carla_range_image_of_a_level_lidar_is_h_over_sin_minus_elevation(server):
    spec = small_spec(lidar_to_ego=mount(0.0, 0.0, 1.8, yaw_deg=40.0))
    with carla_backend(server, spec) as b:
        b.start_episode(EpisodeSpec(index=0, seed=5))
        f = b.step()
    e = np.radians(spec.elevations_deg())
    with np.errstate(divide="ignore"):
        expected = np.where(e < 0, 1.8 / np.sin(-e), np.inf)
    expected[expected > spec.range_m] = np.inf
    # one full rotation per tick: every column of every ground-seeing beam holds exactly that range
    np.testing.assert_allclose(f.lidar_range, np.broadcast_to(expected[:, None], f.lidar_range.shape), rtol=1e-5)
    # tags: the nominal beam direction of a cell (within half a column of its shot) meets the ground on the tag's side
    ok = np.isfinite(f.lidar_range)
    world = (spec.directions() * np.where(ok, f.lidar_range, 0)[..., None]) @ f.lidar_to_world[:3, :3].T \
        + f.lidar_to_world[:3, 3]
    clear = ok & (np.abs(world[..., 1] + cs.SIDEWALK_Y) > np.where(ok, f.lidar_range, 0) * math.radians(0.5) + 1e-3)
    want = np.where(world[..., 1] < -cs.SIDEWALK_Y, semantics.SIDEWALK, semantics.ROAD)
    np.testing.assert_array_equal(f.lidar_tag[clear], want[clear])
    assert clear.sum() > 0.9 * ok.sum() and (f.lidar_tag[~ok] == 0).all()


def test_carla_decode_of_hand_made_detections_mirrors_y_and_keeps_the_nearest():
    spec = small_spec()
    rec = np.zeros(3, conv.SEMANTIC_LIDAR_DTYPE)
    # UE (x fwd, y RIGHT): (10, 10, 0) is 45° to the right, i.e. azimuth −45° = column 315 in our frame
    rec["x"], rec["y"], rec["z"] = [10.0, 5.0, 0.0], [10.0, 5.0, 0.0], [0.0, 0.0, -2.0]
    rec["object_tag"] = [semantics.CAR, semantics.POLE, semantics.ROAD]
    points, tags, _ = conv.decode_semantic_lidar(rec.tobytes())
    np.testing.assert_array_equal(points[:2], [[10.0, -10.0, 0.0], [5.0, -5.0, 0.0]])
    rng, tag = range_image(points, tags, spec)
    assert rng[5, 315] == pytest.approx(math.hypot(5, 5)) and tag[5, 315] == semantics.POLE   # the nearer of two
    assert rng[0, 315] == np.inf and np.isfinite(rng).sum() == 1       # (0, 0, −2) is straight down: no beam
    with pytest.raises(ValueError, match="24-byte"):
        conv.decode_semantic_lidar(b"\0" * 16)


def test_carla_refuses_a_lidar_slower_than_the_tick_rate_before_connecting(server):
    with pytest.raises(LidarError, match="--fps 5 or less"):
        carla_backend(server, small_spec(rotation_frequency_hz=5.0, points_per_second=16 * 5 * 360), fps=10.0)
    assert server.clients == []


def test_lidar_mount_attachment_round_trips_through_carla():
    m = mount(0.3, -0.2, 1.9, yaw_deg=-70.0, pitch_deg=8.0, roll_deg=-2.0)
    t = conv.lidar_to_ego_to_carla(m)
    ego = ego_to_world_matrix(3.0, 4.0, 0.7)
    # the sensor's world transform is the vehicle's composed with the attachment, in UE (the stand-in's compose)
    world_t = cs.compose(conv.ego_to_world_to_carla(ego), t)
    np.testing.assert_allclose(conv.carla_to_lidar_to_world(world_t), ego @ m, atol=2e-6)


# ============================================================================================ store
@pytest.fixture(scope="module")
def lidar_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("lidar") / "a.zarr"
    result = CliRunner().invoke(cli, ["collect", "--out", str(path), *SMALL, "--frames", "3", "--lidar", "nuscenes32"])
    assert result.exit_code == 0, result.output
    return path


def test_store_round_trip_shapes_dtypes_attributes(lidar_store):
    store = open_store(str(lidar_store), verify_chunks=True)
    spec = LidarSpec.preset("nuscenes32")
    assert store.lidar == spec and store.attrs["lidar"] == spec.to_json()
    assert store.attrs["lidar_beams"] == spec.beam_tables() and "lidar" in store.attrs["conventions"]
    assert store.attrs["collection"]["lidar"] == "nuscenes32"
    ep = store.episode(0)
    assert ep.has_lidar and ep.lidar_range.shape == ep.lidar_tag.shape == (3, 32, 2171)
    assert (ep.lidar_range.dtype, ep.lidar_tag.dtype, ep.lidar_to_world.dtype) == (np.float32, np.uint8, np.float64)
    assert ep.lidar_range.chunks == (1, 32, 2171) and ep.lidar_to_world.shape == (3, 4, 4)
    np.testing.assert_allclose(ep.lidar_to_world, ep.ego_to_world @ spec.lidar_to_ego, atol=1e-12)
    r, t = ep.lidar_range[:], ep.lidar_tag[:]
    ok = np.isfinite(r)
    assert 0.5 < ok.mean() < 1 and (r[ok] > 0).all() and (r[ok] <= 70).all()
    assert (t[~ok] == 0).all() and (t[ok] > 0).all() and semantics.ROAD in t
    fd = ep.frame_data(1)
    np.testing.assert_array_equal(fd.lidar_range, r[1])
    assert validate_store(str(lidar_store)) == []
    with pytest.raises(IndexError, match="channel 40 out of range"):
        ep.lidar_range[0, 40]


def test_lidar_ranges_agree_with_the_captured_camera_depth(lidar_store):
    ep = open_store(str(lidar_store)).episode(0)
    spec = LidarSpec.preset("nuscenes32")
    K = open_store(str(lidar_store)).rig.K()[0]
    agree = tags_agree = total = 0
    for t in range(ep.num_frames):
        r = ep.lidar_range[t]
        ok = np.isfinite(r)
        p = (spec.directions()[ok] * r[ok, None].astype(np.float64)) @ ep.lidar_to_world[t][:3, :3].T \
            + ep.lidar_to_world[t][:3, 3]                                    # world points of the returns
        w2c = np.linalg.inv(ep.cam_to_world[t, 0])
        q = p @ w2c[:3, :3].T + w2c[:3, 3]
        front = q[:, 2] > 1.0
        uv = q[front, :2] / q[front, 2:] @ K[:2, :2].T + K[:2, 2]
        inside = (uv[:, 0] >= 1) & (uv[:, 0] < ep.width - 1) & (uv[:, 1] >= 1) & (uv[:, 1] < ep.height - 1)
        u, v = np.floor(uv[inside]).astype(int).T
        z = q[front][inside, 2]
        depth, sem = ep.depth[t, 0], ep.semantic[t, 0]
        win = np.stack([depth[v + dv, u + du] for dv in (-1, 0, 1) for du in (-1, 0, 1)])     # 3x3 around it
        smooth = np.isfinite(win).all(0) & (win.max(0) - win.min(0) < 0.04 * z)
        rel = np.abs(depth[v, u] - z) / z
        agree += int((rel[smooth] < 0.01).sum())
        total += int(smooth.sum())
        tags_agree += int((sem[v, u][smooth] == ep.lidar_tag[t][ok][front][inside][smooth]).sum())
    assert total > 300, total                                             # many beams seen by the camera
    assert agree > 0.97 * total and tags_agree > 0.95 * total, (agree, tags_agree, total)


def test_collect_is_deterministic_and_resume_continues_the_scans(lidar_store, tmp_path):
    again = tmp_path / "b.zarr"
    assert CliRunner().invoke(cli, ["collect", "--out", str(again), *SMALL, "--frames", "3", "--lidar",
                                    "nuscenes32"]).exit_code == 0
    # simulate a collection killed after frame 0: uncommit frames 1 and 2, then resume
    ep_attrs = zarr.open_group(str(again), mode="r+")["episodes/episode_0000"]
    ep_attrs.update_attributes({"committed_frames": 1, "complete": False})
    result = CliRunner().invoke(cli, ["collect", "--out", str(again), "--resume", "--quiet"])
    assert result.exit_code == 0 and "Wrote 2 frames" in result.output, result.output
    a, b = open_store(str(lidar_store)).episode(0), open_store(str(again), verify_chunks=True).episode(0)
    np.testing.assert_array_equal(a.lidar_range[:], b.lidar_range[:])
    np.testing.assert_array_equal(a.lidar_tag[:], b.lidar_tag[:])
    np.testing.assert_array_equal(a.lidar_to_world, b.lidar_to_world)
    np.testing.assert_array_equal(a.depth[:], b.depth[:])
    conflict = CliRunner().invoke(cli, ["collect", "--out", str(again), "--resume", "--lidar", "os128"])
    assert conflict.exit_code != 0 and "--lidar 'os128'" in conflict.output and "nuscenes32" in conflict.output


@pytest.mark.parametrize("bad, message", [(["--lidar", "vlp16"], "unknown LiDAR 'vlp16'"),
                                          (["--lidar", "{dir}/missing.json"], "not found"),
                                          (["--lidar", "{dir}/bad.json"], "channels must be >= 1")])
def test_collect_bad_lidar_fails_before_a_store_exists(tmp_path, bad, message):
    spec = small_spec().to_json()
    (tmp_path / "bad.json").write_text(json.dumps({**spec, "channels": 0}))
    out = tmp_path / "x.zarr"
    args = [a.format(dir=tmp_path) for a in bad]
    result = CliRunner().invoke(cli, ["collect", "--out", str(out), *SMALL, "--frames", "1", *args])
    assert result.exit_code == 1 and message in result.output and result.output.count("\n") == 1, result.output
    assert "Traceback" not in result.output and not out.exists()


# ------------------------------------------------------------------- writer and validator contracts
def _frame(rig: Rig, spec: LidarSpec | None, t: int = 0) -> FrameData:
    n, h, w = len(rig), rig.height, rig.width
    fd = FrameData(rgb=np.zeros((n, h, w, 3), np.uint8), depth=np.full((n, h, w), 5.0, np.float32),
                   semantic=np.ones((n, h, w), np.uint8), cam_to_world=np.stack([np.eye(4)] * n),
                   ego_to_world=np.eye(4), timestamp=0.1 * t, frame=t)
    if spec is not None:
        c, a = spec.range_image_shape
        fd.lidar_range = np.full((c, a), 7.0, np.float32)
        fd.lidar_range[0] = np.inf
        fd.lidar_tag = np.where(np.isfinite(fd.lidar_range), semantics.ROAD, 0).astype(np.uint8)
        fd.lidar_to_world = spec.lidar_to_ego.copy()
    return fd


def _writer(path, rig, spec):
    attrs = {"backend": "procedural", "town": "Town01", "weather": "ClearNoon", "seed": 0, "rig": rig, "fps": 10.0}
    if spec is not None:
        attrs["lidar"] = spec
    return StoreWriter.create(str(path), attrs)


def test_writer_refuses_missing_extra_or_bad_scans_and_stores_without_lidar_are_unchanged(tmp_path):
    rig, spec = Rig.resolve("front", 8, 6), small_spec()
    with _writer(tmp_path / "plain.zarr", rig, None) as w:
        ep = w.episode(0, 2, 1)
        with pytest.raises(ValueError, match="created without a LiDAR"):
            ep.append(_frame(rig, spec))
        ep.append(_frame(rig, None))
    plain = open_store(str(tmp_path / "plain.zarr"))
    assert plain.lidar is None and not plain.episode(0).has_lidar and "lidar_range" not in zarr.open_group(
        str(tmp_path / "plain.zarr"), mode="r")["episodes/episode_0000"]
    assert "lidar" not in plain.attrs and validate_store(str(tmp_path / "plain.zarr")) == []
    with _writer(tmp_path / "lidar.zarr", rig, spec) as w:
        ep = w.episode(0, 2, 1)
        with pytest.raises(ValueError, match="lacks"):
            ep.append(_frame(rig, None))
        bad = _frame(rig, spec)
        bad.lidar_range[3, 3] = np.nan
        with pytest.raises(ValueError, match="NaN or non-positive"):
            ep.append(bad)
        bad = _frame(rig, spec)
        bad.lidar_tag = bad.lidar_tag[:, :10]
        with pytest.raises(ValueError, match=r"lidar_tag has shape \(16, 10\)"):
            ep.append(bad)
        bad = _frame(rig, spec)
        bad.lidar_to_world = np.diag([2.0, 1.0, 1.0, 1.0])
        with pytest.raises(ValueError, match="lidar_to_world is not a rigid"):
            ep.append(bad)
        assert ep.committed == 0
        ep.append(_frame(rig, spec))
    store = open_store(str(tmp_path / "lidar.zarr"), verify_chunks=True)
    np.testing.assert_array_equal(store.episode(0).lidar_range[0], _frame(rig, spec).lidar_range)


def test_validator_reports_lidar_problems(tmp_path):
    rig, spec = Rig.resolve("front", 8, 6), small_spec()
    path = tmp_path / "s.zarr"
    with _writer(path, rig, spec) as w:
        w.episode(0, 1, 1).append(_frame(rig, spec))
    assert validate_store(str(path)) == []
    g = zarr.open_group(str(path), mode="r+")
    beams = dict(g.attrs["lidar_beams"])
    g.attrs["lidar_beams"] = {**beams, "azimuth_deg": beams["azimuth_deg"][:-1]}
    assert any("'lidar_beams'" in p and "disagrees" in p for p in validate_store(str(path)))
    g.attrs["lidar_beams"] = beams
    lidar = dict(g.attrs["lidar"])
    del g.attrs["lidar"], g.attrs["lidar_beams"]
    problems = validate_store(str(path))
    assert any("LiDAR array(s)" in p and "without the 'lidar' root attribute" in p for p in problems)
    g.attrs.update({"lidar": {**lidar, "channels": 8, "points_per_second": 8 * 10 * 360},
                    "lidar_beams": small_spec(channels=8, points_per_second=8 * 10 * 360).beam_tables()})
    problems = validate_store(str(path))
    assert any("lidar_range: shape (1, 16, 360), expected (1, 8, 360)" in p for p in problems), problems
