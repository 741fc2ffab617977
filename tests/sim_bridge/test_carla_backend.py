"""CarlaBackend control flow against the stand-in server (tests/carla_standin.py), plus the real carla client
where it runs without a server (connection failure, probe)."""
import json
import logging
import socket
import threading

import carla
import numpy as np
import pytest

import carla_standin as cs
from sim_bridge import conventions as conv
from sim_bridge import semantics
from sim_bridge.backends.base import Backend, EpisodeSpec
from sim_bridge.backends.carla_backend import CarlaBackend
from sim_bridge.backends.carla_sensors import FrameQueue, SensorTimeoutError
from sim_bridge.backends.carla_server import CarlaConnectionError, CarlaVersionError, check_versions, physics_substeps, probe_carla
from sim_bridge.rig import Rig, RigCamera, intrinsics_from_fov, mount_to_cam_to_ego

W, H, FPS = 32, 24, 10.0
RIG = Rig((
    RigCamera("front", intrinsics_from_fov(90.0, W, H), W, H, mount_to_cam_to_ego(0.8, 0.0, 1.5)),
    RigCamera("left_down", intrinsics_from_fov(70.0, W, H), W, H, mount_to_cam_to_ego(0.3, 0.5, 1.6, yaw_deg=70.0, pitch_deg=-15.0)),
    RigCamera("back", intrinsics_from_fov(100.0, W, H), W, H, mount_to_cam_to_ego(-1.0, 0.0, 1.6, yaw_deg=180.0, pitch_deg=5.0)),
))
N_SENSORS = 3 * len(RIG)


@pytest.fixture
def server():
    s = cs.StandinServer(map_name="Town03")
    yield s
    s.wait_deliveries()


def make(server, rig=RIG, **kw):
    kw = {"warmup_ticks": 2, "timeout": 2.0, "fps": FPS, "seed": 11, **kw}
    return CarlaBackend("Town03", "ClearNoon", rig, client_factory=server.client_factory, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expected_images(K, cam_to_world):
    """Ground-plane depth / tags / colours of the stand-in's scene, computed in OUR conventions.

    Returns depth [H,W] (inf = sky), tags [H,W], rgb [H,W,3] and a mask of pixels safe to compare exactly
    (hit points ≥ 1 cm from checker and sidewalk borders, closer than 60 m; or clearly upward sky rays).
    """
    f, cx, cy = K[0, 0], K[0, 2], K[1, 2]
    uu, vv = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    d = np.stack([(uu - cx) / f, (vv - cy) / f, np.ones_like(uu)], -1) @ cam_to_world[:3, :3].T  # [H,W,3]
    o = cam_to_world[:3, 3]
    with np.errstate(divide="ignore"):
        depth = np.where(d[..., 2] < 0, -o[2] / d[..., 2], np.inf)  # planar: cv z-component of d is 1
    depth[depth >= cs.DEPTH_FAR] = np.inf
    hit = np.isfinite(depth)
    p = o + np.where(hit, depth, 0)[..., None] * d
    x_ue, y_ue = p[..., 0], -p[..., 1]  # the stand-in's texture lives in UE coordinates
    sidewalk = y_ue > cs.SIDEWALK_Y
    tags = np.where(hit, np.where(sidewalk, semantics.SIDEWALK, semantics.ROAD), semantics.SKY).astype(np.uint8)
    parity = (np.floor(x_ue) + np.floor(y_ue)).astype(np.int64) % 2
    rgb = np.where(parity[..., None] == 0, cs.ROAD_LIGHT, cs.ROAD_DARK)
    rgb = np.where(sidewalk[..., None], cs.SIDEWALK_RGB, rgb)
    rgb = np.where(hit[..., None], rgb, cs.SKY_RGB).astype(np.uint8)
    frac = lambda a: np.abs(a - np.round(a))  # noqa: E731 - distance to the nearest integer
    safe_ground = hit & (depth < 60) & (frac(x_ue) > 0.01) & (frac(y_ue) > 0.01) & (np.abs(y_ue - cs.SIDEWALK_Y) > 0.01)
    safe_sky = d[..., 2] > 1e-3
    return depth, tags, rgb, safe_ground | safe_sky


def check_frame(fd, rig=RIG):
    """Contracts of one FrameData from the stand-in: shapes, poses, images. Returns the compared-pixel count."""
    n = len(rig)
    assert fd.rgb.shape == (n, H, W, 3) and fd.rgb.dtype == np.uint8
    assert fd.depth.shape == (n, H, W) and fd.depth.dtype == np.float32
    assert fd.semantic.shape == (n, H, W) and fd.semantic.dtype == np.uint8
    assert fd.cam_to_world.shape == (n, 4, 4) and fd.ego_to_world.shape == (4, 4)
    # The camera pose CARLA reports on each image equals ego pose (snapshot of that tick) @ mount.
    np.testing.assert_allclose(fd.cam_to_world, fd.ego_to_world @ rig.cam_to_ego(), atol=1e-5)
    # The ego is on the ground (z = 0), upright.
    assert abs(fd.ego_to_world[2, 3]) < 1e-6
    np.testing.assert_allclose(fd.ego_to_world[:3, 2], [0, 0, 1], atol=1e-6)
    compared = 0
    for i, cam in enumerate(rig.cameras):
        depth, tags, rgb, safe = expected_images(cam.K, fd.cam_to_world[i])
        got = fd.depth[i]
        band = (depth > 900) | ((got > 900) & np.isfinite(got))  # rays grazing the far plane may flip to inf
        np.testing.assert_array_equal(np.isfinite(got)[~band], np.isfinite(depth)[~band])
        near = np.isfinite(depth) & (depth < 200)
        np.testing.assert_allclose(got[near], depth[near], rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(fd.semantic[i][safe], tags[safe])
        np.testing.assert_array_equal(fd.rgb[i][safe], rgb[safe])
        compared += int(safe.sum())
    assert compared > 0.8 * n * H * W
    return compared


# ----------------------------------------------------------------------------------------------- the basics
def test_records_frames_in_project_conventions(server):
    with make(server) as b:
        assert isinstance(b, Backend)
        b.start_episode(EpisodeSpec(index=0, seed=5))
        frames = [b.step() for _ in range(4)]
        # Server state while recording.
        s = server.settings
        assert s.synchronous_mode and s.fixed_delta_seconds == pytest.approx(1 / FPS)
        tm = server.tms[8000]
        assert tm.synchronous and tm.seed == 11
        assert server.weather == carla.WeatherParameters.ClearNoon
        vehicles = [a for a in server.alive_actors() if isinstance(a, cs.Vehicle)]
        sensors = [a for a in server.alive_actors() if isinstance(a, cs.Sensor)]
        assert [v.type_id for v in vehicles] == ["vehicle.tesla.model3"] and vehicles[0].attributes["role_name"] == "hero"
        assert server._autopilot == {vehicles[0].id: 8000}
        assert len(sensors) == N_SENSORS and all(x.parent is vehicles[0] for x in sensors)
        fovs = sorted({round(float(x.attributes["fov"]), 9) for x in sensors})
        assert fovs == [70.0, 90.0, 100.0]
        assert {(x.attributes["image_size_x"], x.attributes["image_size_y"]) for x in sensors} == {(str(W), str(H))}
        assert {x.attributes["motion_blur_intensity"] for x in sensors if x.type_id == "sensor.camera.rgb"} == {"0.0"}
        info = b.describe()
    assert json.loads(json.dumps(info)) == info
    assert info["backend"] == "carla" and info["town"] == "Town03" and info["weather"] == "ClearNoon"
    assert info["map"] == "Carla/Maps/Town03" and info["server_version"] == info["client_version"] == "0.9.16"

    ids = [fd.frame for fd in frames]
    assert ids == list(range(ids[0], ids[0] + 4))
    np.testing.assert_allclose([fd.timestamp for fd in frames], np.arange(4) / FPS, atol=1e-9)
    labels = set()
    for fd in frames:
        check_frame(fd)
        labels |= set(np.unique(fd.semantic).tolist())
    assert labels == {semantics.ROAD, semantics.SIDEWALK, semantics.SKY}
    # The autopilot drives straight ahead: the ego advances along its own +x by speed/fps per tick.
    for a, b_ in zip(frames, frames[1:]):
        np.testing.assert_allclose(b_.ego_to_world[:3, 3] - a.ego_to_world[:3, 3],
                                   server.speed / FPS * a.ego_to_world[:3, 0], atol=1e-5)
    assert server.violations == []


def test_depth_equals_analytic_ground_plane(server):
    """Spelled out for one pixel: the front camera, 1.5 m up and level, sees the ground below the horizon
    at planar depth h / tan(angle below the optical axis)."""
    with make(server) as b:
        b.start_episode(EpisodeSpec(0, 5))
        fd = b.step()
    f = RIG.cameras[0].K[0, 0]
    row = H - 1  # bottom row: pixel centre 11.5 px below the centre
    expected = 1.5 * f / (row + 0.5 - H / 2)
    np.testing.assert_allclose(fd.depth[0, row], expected, rtol=1e-5)
    assert np.isinf(fd.depth[0, : H // 2]).all()  # level camera: the upper half is sky
    assert (fd.semantic[0, : H // 2] == semantics.SKY).all()
    assert (fd.rgb[0, : H // 2] == cs.SKY_RGB).all()  # BGRA -> RGB order survives the whole pipeline


# ------------------------------------------------------------------------------------------- frame matching
def test_frame_queue_matches_ids():
    q = FrameQueue("cam/rgb")
    item = lambda f: type("Item", (), {"frame": f})()  # noqa: E731
    q.put(item(11))  # a newer frame first
    q.put(item(10))
    assert q.get(10, timeout=0.1).frame == 10
    assert sorted(q.pending) == [11]  # the newer one is kept for later
    q.put(item(9))  # stale: dropped on arrival
    assert sorted(q.pending) == [11] and q.dropped == 1
    assert q.get(11, timeout=0.1).frame == 11
    q.put(item(13))  # a newer frame is waiting while the asked-for one is late, from another thread
    threading.Timer(0.05, q.put, args=(item(12),)).start()
    assert q.get(12, timeout=2.0).frame == 12
    assert q.get(13, timeout=0.1).frame == 13
    q.discard_through(15)
    q.put(item(14))
    assert q.pending == {}
    with pytest.raises(SensorTimeoutError, match="no image for frame 16"):
        q.get(16, timeout=0.05)


def test_late_and_out_of_order_delivery(server):
    with make(server) as b:
        b.start_episode(EpisodeSpec(0, 3))
        f = server.frame
        server.faults.late = {f + 1: 0.05, f + 3: 0.08}
        server.faults.out_of_order = {f + 2, f + 3, f + 4}
        frames = [b.step() for _ in range(5)]
        dropped = sum(q.dropped for cam in b._cameras for q in cam.queues.values())
    assert [fd.frame for fd in frames] == list(range(f + 1, f + 6))
    for fd in frames:  # a stale image would sit speed/fps = 0.5 m behind the ego pose and its checker
        check_frame(fd)
    assert dropped >= 2 * N_SENSORS  # the stale re-deliveries were seen and discarded
    assert server.violations == []


# ------------------------------------------------------------------------------------------------- recovery
@pytest.mark.parametrize("mode", ["before", "after"])
def test_timeout_then_reconnect_continues_without_gaps(server, mode, caplog):
    with make(server) as b:
        b.start_episode(EpisodeSpec(0, 2))
        frames = [b.step() for _ in range(2)]
        server.faults.timeout = {server.frame + 1: mode}
        with caplog.at_level(logging.WARNING):
            frames += [b.step() for _ in range(3)]
    ids = [fd.frame for fd in frames]
    assert ids == list(range(ids[0], ids[0] + 5))  # nothing lost, nothing repeated
    np.testing.assert_allclose([fd.timestamp for fd in frames], np.arange(5) / FPS, atol=1e-9)
    for fd in frames:
        check_frame(fd)
    assert len(server.clients) == 2 and server.clients[0].dead
    assert any("reconnecting" in r.getMessage() for r in caplog.records)
    # Cleanup went through the new connection.
    assert server.alive_actors() == []
    assert cs.settings_tuple(server.settings) == (False, False, None, True, 0.01, 10)
    assert server.tms[8000].sync_history[-1] is False


def test_gives_up_after_retries(server):
    b = make(server, retries=2)
    b.start_episode(EpisodeSpec(0, 2))
    server.faults.timeout = {server.frame + 1: "before"}
    server.running = False  # the server is gone for good
    with pytest.raises(CarlaConnectionError, match="did not answer after 2 reconnection attempts"):
        b.step()
    assert len(server.clients) == 1 + 2
    b.close()  # cannot reach the server: logs, never raises
    assert server.alive_actors() == []  # actor handles still destroyed what they could


# -------------------------------------------------------------------------------------------------- cleanup
def assert_clean(server):
    assert server.alive_actors() == []
    assert len(server.destroyed) == 1 + N_SENSORS
    assert cs.settings_tuple(server.settings) == (False, False, None, True, 0.01, 10)  # the original settings
    assert cs.settings_tuple(server.applied_settings[-1]) == cs.settings_tuple(server.settings)
    assert server.tms[8000].sync_history == [True, False]
    assert server.violations == []  # sensors were stopped before being destroyed


def test_exception_mid_episode_cleans_up(server):
    with pytest.raises(RuntimeError, match="simulated crash"):
        with make(server) as b:
            b.start_episode(EpisodeSpec(0, 1))
            server.faults.raise_at = {server.frame + 2: RuntimeError("simulated crash")}
            for _ in range(5):
                b.step()
    assert_clean(server)


def test_keyboard_interrupt_inside_with_cleans_up(server):
    with pytest.raises(KeyboardInterrupt):
        with make(server) as b:
            b.start_episode(EpisodeSpec(0, 1))
            server.faults.raise_at = {server.frame + 1: KeyboardInterrupt()}
            b.step()
    assert_clean(server)


def test_keyboard_interrupt_without_with_cleans_up_and_close_is_idempotent(server):
    b = make(server)
    b.start_episode(EpisodeSpec(0, 1))
    server.faults.raise_at = {server.frame + 1: KeyboardInterrupt()}
    with pytest.raises(KeyboardInterrupt):
        b.step()
    assert_clean(server)
    n_applied = len(server.applied_settings)
    b.close()
    b.close()
    assert len(server.applied_settings) == n_applied
    with pytest.raises(RuntimeError, match="closed"):
        b.step()


def test_keyboard_interrupt_during_warmup_cleans_up(server):
    b = make(server, warmup_ticks=5)
    server.faults.raise_at = {server.frame + 3: KeyboardInterrupt()}
    with pytest.raises(KeyboardInterrupt):
        b.start_episode(EpisodeSpec(0, 1))
    assert_clean(server)


def test_new_episode_replaces_actors(server):
    with make(server) as b:
        b.start_episode(EpisodeSpec(0, 1))
        b.step()
        b.start_episode(EpisodeSpec(1, 2))
        assert len(server.alive_actors()) == 1 + N_SENSORS
        assert len(server.destroyed) == 1 + N_SENSORS
        fd = b.step()
        assert fd.timestamp == 0.0
        check_frame(fd)
    assert server.alive_actors() == [] and server.violations == []


# ------------------------------------------------------------------------------------ spawn points and resume
def ego_spawns(server):
    return [t for _, bp, t, parent in server.spawned if bp.startswith("vehicle.")]


def test_spawn_point_by_seed_and_next_on_collision(server):
    order = np.random.default_rng(5).permutation(len(cs.SPAWN_POINTS))
    with make(server) as b:
        b.start_episode(EpisodeSpec(0, 5))
    first = ego_spawns(server)[0]
    assert (first.location.x, first.location.y) == pytest.approx(cs.SPAWN_POINTS[order[0]][:2])

    other = cs.StandinServer()
    other.faults.occupied = {int(order[0])}
    with make(other) as b:
        b.start_episode(EpisodeSpec(0, 5))
    second = ego_spawns(other)[0]
    assert (second.location.x, second.location.y) == pytest.approx(cs.SPAWN_POINTS[order[1]][:2])


def test_resume_spawns_at_recorded_pose_and_continues(server):
    with make(server) as b:
        b.start_episode(EpisodeSpec(0, 5))
        recorded = [b.step() for _ in range(3)]
    M = recorded[-1].ego_to_world

    resumed_server = cs.StandinServer()
    with make(resumed_server, warmup_ticks=3) as b:
        b.start_episode(EpisodeSpec(0, 5, start_frame=3, resume_ego_to_world=M))
        spawn = ego_spawns(resumed_server)[0]
        lifted = M.copy()
        lifted[2, 3] += 0.5
        np.testing.assert_allclose(conv.carla_to_ego_to_world(spawn), lifted, atol=1e-5)
        fd = b.step()
    # The ego stayed put during warm-up (autopilot off), then drove one tick ahead of the last recorded pose.
    expected = M.copy()
    expected[:3, 3] += resumed_server.speed / FPS * M[:3, 0]
    np.testing.assert_allclose(fd.ego_to_world, expected, atol=1e-5)
    assert fd.timestamp == pytest.approx(3 / FPS, abs=1e-9)
    check_frame(fd)
    assert resumed_server.violations == []


# ------------------------------------------------------------------------------------ setup and its errors
def test_loads_map_with_long_timeout_only_when_different():
    other_map = cs.StandinServer(map_name="Town01")
    with make(other_map, timeout=3.0, load_timeout=77.0) as b:
        assert b.map_name == "Carla/Maps/Town03"
    assert other_map.loads == ["Town03"] and other_map.loads_timeout == 77.0
    assert other_map.clients[0].timeout == 3.0  # back to the normal timeout afterwards

    same_map = cs.StandinServer(map_name="Town03")
    with make(same_map):
        pass
    assert same_map.loads == []


def test_unknown_map_lists_available():
    server = cs.StandinServer(map_name="Town01")
    with pytest.raises(ValueError, match=r"Town99.*available maps: Town01, Town03, Town10HD_Opt"):
        CarlaBackend("Town99", "ClearNoon", RIG, client_factory=server.client_factory)


def test_unknown_weather_lists_names_and_never_connects(server):
    with pytest.raises(ValueError, match=r"unknown CARLA weather 'Sunny'.*ClearNoon.*WetSunset"):
        CarlaBackend("Town03", "Sunny", RIG, client_factory=server.client_factory)
    assert server.clients == []


def test_uncentred_intrinsics_rejected_before_connecting(server):
    K = intrinsics_from_fov(90.0, W, H)
    K[0, 2] += 2.0
    rig = Rig((RigCamera("front", K, W, H, mount_to_cam_to_ego(0.8, 0, 1.5)),))
    with pytest.raises(ValueError, match="cannot represent these intrinsics"):
        make(server, rig=rig)
    assert server.clients == []


def test_physics_substeps_cover_the_tick(server):
    assert physics_substeps(0.1, 0.01, 10) == (0.01, 10)       # 10 fps: CARLA's defaults suffice
    assert physics_substeps(0.05, 0.01, 10) == (0.01, 10)
    assert physics_substeps(0.125, 0.01, 10) == (0.01, 13)     # 8 fps: more substeps
    assert physics_substeps(0.2, 0.01, 10) == (0.0125, 16)     # 5 fps: 16 substeps of 12.5 ms
    with make(server, fps=5.0) as b:
        b.start_episode(EpisodeSpec(0, 1))
        fd = b.step()
        s = server.settings
        assert (s.fixed_delta_seconds, s.max_substep_delta_time, s.max_substeps) == pytest.approx((0.2, 0.0125, 16))
    assert fd.timestamp == 0.0
    assert cs.settings_tuple(server.settings) == (False, False, None, True, 0.01, 10)  # restored


def test_versions():
    assert check_versions("0.9.16", "0.9.16") is None
    assert "minor" in check_versions("0.9.16", "0.9.15")
    with pytest.raises(CarlaVersionError, match=r"client 0\.9\.16 .* server 0\.10\.0"):
        check_versions("0.9.16", "0.10.0")


def test_major_version_mismatch_refused_minor_warned(caplog):
    server = cs.StandinServer(server_version="0.10.0")
    with pytest.raises(CarlaVersionError, match="0.10.0"):
        make(server)
    assert server.applied_settings == []

    server = cs.StandinServer(server_version="0.9.15")
    with caplog.at_level(logging.WARNING):
        with make(server) as b:
            assert b.describe()["server_version"] == "0.9.15"
    assert any("minor version" in r.getMessage() for r in caplog.records)


def test_no_server_message_with_the_real_client():
    port = free_port()
    with pytest.raises(CarlaConnectionError) as info:
        CarlaBackend("Town03", "ClearNoon", RIG, port=port, timeout=0.2)  # real carla.Client
    assert str(info.value).startswith(f"no CARLA server at 127.0.0.1:{port} within 0.2s: start CarlaUE4.sh or use "
                                      f"--backend procedural")


def test_probe_carla():
    port = free_port()
    assert probe_carla("127.0.0.1", port, timeout=1.0) is None  # nothing listens: refused
    with socket.socket() as listener:  # something listens but is not CARLA
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        assert probe_carla("127.0.0.1", port, timeout=0.3) is None  # the real client times out
        assert probe_carla("127.0.0.1", port, timeout=0.3,
                           client_factory=cs.StandinServer(server_version="0.9.16").client_factory) == "0.9.16"
