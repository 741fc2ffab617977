"""Capture store: round trips, crash safety and resume, fsspec URLs, chunking, and every fault named by validation."""
import json
import math
import shutil
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import zarr

from sim_bridge.backends.base import FrameData
from sim_bridge.rig import Rig, RigCamera, intrinsics_from_fov, mount_to_cam_to_ego
from sim_bridge.store import FORMAT_VERSION, StoreError, StoreWriter, open_store, validate_store
from sim_bridge.store.summary import store_summary

N, H, W = 2, 8, 12
SEED = 7


def tiny_rig() -> Rig:
    return Rig((RigCamera("front", intrinsics_from_fov(90.0, W, H), W, H, mount_to_cam_to_ego(0.8, 0.0, 1.5, 0.0)),
                RigCamera("left", intrinsics_from_fov(70.0, W, H), W, H, mount_to_cam_to_ego(0.2, 0.4, 1.6, 90.0, 5.0))))


def make_frame(t: int, rig: Rig) -> FrameData:
    """Deterministic frame `t`: the ego drives 1 m per frame along x while turning 3 degrees per frame."""
    rng = np.random.default_rng(t)
    yaw = math.radians(3.0 * t)
    ego = np.eye(4)
    ego[:3, :3] = [[math.cos(yaw), -math.sin(yaw), 0.0], [math.sin(yaw), math.cos(yaw), 0.0], [0.0, 0.0, 1.0]]
    ego[:3, 3] = [float(t), 0.0, 0.0]
    depth = rng.uniform(1.0, 80.0, (N, H, W)).astype(np.float32)
    depth[:, :2] = np.inf  # sky rows
    return FrameData(rgb=rng.integers(0, 256, (N, H, W, 3), dtype=np.uint8), depth=depth,
                     semantic=rng.integers(0, 29, (N, H, W), dtype=np.uint8), cam_to_world=ego @ rig.cam_to_ego(),
                     ego_to_world=ego, timestamp=0.1 * t, frame=1000 + t)


def root_attrs(rig: Rig) -> dict:
    return {"backend": "procedural", "town": "Town01", "weather": "ClearNoon", "seed": 3, "rig": rig.to_list(),
            "fps": 10.0, "collection": {"episodes": 1, "frames": 4, "width": W, "height": H, "rig": "tiny"},
            "software": {"carla": "0.9.16"}, "simulator": {"map": "Town01_Opt"}}


def write_store(path, planned: int = 4, committed: int = 3, episodes: int = 1, finish: bool = False) -> Rig:
    rig = tiny_rig()
    w = StoreWriter.create(str(path), root_attrs(rig))
    for e in range(episodes):
        ep = w.episode(e, planned, SEED + e)
        for t in range(committed):
            ep.append(make_frame(t, rig))
        if finish:
            ep.finish()
    w.close()
    return rig


def assert_frame_equal(a: FrameData, b: FrameData):
    for key in ("rgb", "depth", "semantic", "cam_to_world", "ego_to_world"):
        x, y = getattr(a, key), getattr(b, key)
        assert x.dtype == y.dtype and x.shape == y.shape, key
        assert x.tobytes() == y.tobytes(), key
    assert a.timestamp == b.timestamp and a.frame == b.frame


def assert_rig_equal(a: Rig, b: Rig):
    assert a.names == b.names and (a.width, a.height) == (b.width, b.height)
    np.testing.assert_array_equal(a.K(), b.K())
    np.testing.assert_array_equal(a.cam_to_ego(), b.cam_to_ego())


# ---------------------------------------------------------------------------------------------------- round trips


def test_round_trip_bytes_equal_and_only_committed_frames_visible(tmp_path):
    rig = write_store(tmp_path / "s.zarr", planned=6, committed=4)
    ep = open_store(str(tmp_path / "s.zarr")).episode(0)
    frames = [make_frame(t, rig) for t in range(4)]
    assert (ep.num_frames, ep.planned_frames, ep.complete) == (4, 6, False)
    assert (ep.num_cameras, ep.height, ep.width) == (N, H, W)
    assert ep.rgb.shape == (4, N, H, W, 3) and ep.depth.shape == (4, N, H, W) and len(ep.semantic) == 4
    for t, f in enumerate(frames):
        assert_frame_equal(ep.frame_data(t), f)
    np.testing.assert_array_equal(ep.rgb[:], np.stack([f.rgb for f in frames]))
    np.testing.assert_array_equal(ep.depth[...], np.stack([f.depth for f in frames]))
    np.testing.assert_array_equal(ep.semantic[:], np.stack([f.semantic for f in frames]))
    np.testing.assert_array_equal(ep.cam_to_world, np.stack([f.cam_to_world for f in frames]))
    np.testing.assert_array_equal(ep.ego_to_world, np.stack([f.ego_to_world for f in frames]))
    np.testing.assert_array_equal(ep.timestamp, [0.0, 0.1, 0.2, 0.30000000000000004])
    np.testing.assert_array_equal(ep.frame, [1000, 1001, 1002, 1003])
    assert ep.frame.dtype == np.int64 and ep.cam_to_world.dtype == np.float64
    # numpy-style selections read exactly what numpy would return
    full = np.stack([f.rgb for f in frames])
    depth = np.stack([f.depth for f in frames])
    for key in [3, -1, (2, 0), (slice(2, 5), 0), (slice(None, None, -2), 1), (slice(1, 3), [1, 0]), ([3, 0, 3], 1),
                (np.array([True, False, True, True]),), (Ellipsis, 0), (0, slice(None), 2, slice(1, 4)),
                (slice(10, 20),), ([0, 2], [1, 0])]:
        np.testing.assert_array_equal(ep.rgb[key], full[key], err_msg=str(key))
    np.testing.assert_array_equal(ep.depth[:, [0, 1]], depth[:, [0, 1]])
    assert np.asarray(ep.rgb).shape == (4, N, H, W, 3)
    # the planned-but-uncommitted frames 4 and 5 are not visible
    for bad in (4, -5, [1, 4]):
        with pytest.raises(IndexError, match="4 committed frame"):
            ep.rgb[bad]
    with pytest.raises(IndexError):
        ep.frame_data(4)
    with pytest.raises(IndexError, match="camera 2"):
        ep.depth[0, 2]


def test_metadata_round_trip(tmp_path):
    rig = write_store(tmp_path / "s.zarr", planned=4, committed=4, finish=True)
    store = open_store(str(tmp_path / "s.zarr"))
    assert_rig_equal(store.rig, rig)
    assert store.rig.to_list() == rig.to_list()
    assert (store.format_version, store.backend, store.town, store.weather, store.seed, store.fps) == \
        (FORMAT_VERSION, "procedural", "Town01", "ClearNoon", 3, 10.0)
    assert store.attrs["collection"] == root_attrs(rig)["collection"]
    assert store.attrs["simulator"] == {"map": "Town01_Opt"}
    software = store.attrs["software"]
    assert software["zarr"] == zarr.__version__ and software["numpy"] == np.__version__ and software["carla"] == "0.9.16"
    assert {"nfldm", "python"} <= set(software)
    assert {"world", "camera", "depth", "semantics", "image"} <= set(store.attrs["conventions"])
    assert "OpenCV" in store.attrs["conventions"]["camera"] and "inf" in store.attrs["conventions"]["depth"]
    datetime.fromisoformat(store.attrs["created"])
    assert store.episode_names == ["episode_0000"] and len(store) == 1
    ep = store.episode("episode_0000")
    assert (ep.name, ep.index, ep.seed, ep.num_frames, ep.planned_frames, ep.complete) == \
        ("episode_0000", 0, SEED, 4, 4, True)
    assert [e.name for e in store] == ["episode_0000"]
    with pytest.raises(IndexError):
        store.episode(1)


def test_fsspec_memory_url_write_read_validate():
    url = f"memory://nfldm-test-{uuid.uuid4().hex}.zarr"
    try:
        rig = write_store(url, planned=3, committed=3, episodes=2, finish=True)
        store = open_store(url, verify_chunks=True)
        assert len(store) == 2 and store.episode(1).seed == SEED + 1
        assert_frame_equal(store.episode(1).frame_data(2), make_frame(2, rig))
        assert validate_store(url) == []
        with pytest.raises(FileExistsError):
            StoreWriter.create(url, root_attrs(rig))
        assert store.size_on_disk() > 0
    finally:
        import fsspec

        fsspec.filesystem("memory").rm(url.removeprefix("memory://"), recursive=True)


def test_file_url_reads_local_store(tmp_path):
    rig = write_store(tmp_path / "s.zarr", planned=2, committed=2)
    store = open_store((tmp_path / "s.zarr").as_uri())
    assert_frame_equal(store.episode(0).frame_data(1), make_frame(1, rig))


def test_chunking_is_one_image_per_chunk(tmp_path):
    write_store(tmp_path / "s.zarr", planned=4, committed=3)
    ep = open_store(str(tmp_path / "s.zarr")).episode(0)
    assert ep.rgb.chunks == (1, 1, H, W, 3)
    assert ep.depth.chunks == (1, 1, H, W)
    assert ep.semantic.chunks == (1, 1, H, W)
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")["episodes/episode_0000"]
    assert g["cam_to_world"].chunks == (1, N, 4, 4) and g["ego_to_world"].chunks == (1, 4, 4)
    assert g["timestamp"].chunks == (1,) and g["frame"].chunks == (1,)
    codecs = [type(c).__name__ for c in g["depth"].metadata.codecs]
    assert codecs[-1] == "Crc32cCodec" and "BloscCodec" in codecs
    # one chunk file per committed image, none for the uncommitted frame
    chunk_files = [p for p in (tmp_path / "s.zarr/episodes/episode_0000/rgb/c").rglob("*") if p.is_file()]
    assert len(chunk_files) == 3 * N


def test_validate_store_good_store_is_clean(tmp_path):
    write_store(tmp_path / "s.zarr", planned=4, committed=4, episodes=2, finish=True)
    assert validate_store(str(tmp_path / "s.zarr")) == []
    assert validate_store(str(tmp_path / "s.zarr"), deep=False) == []


# ----------------------------------------------------------------------------------------- crash safety and resume

_CRASH_SCRIPT = """
import os, sys
sys.path.insert(0, {tests!r})
from test_store import make_frame, root_attrs, tiny_rig, SEED
from sim_bridge.store import StoreWriter
rig = tiny_rig()
w = StoreWriter.create({path!r}, root_attrs(rig))
ep = w.episode(0, 8, SEED)
for t in range(5):
    ep.append(make_frame(t, rig))
os._exit(1)  # a crash: no finish(), no close(), no interpreter cleanup
"""


def test_crash_then_resume_loses_and_duplicates_nothing(tmp_path):
    path = str(tmp_path / "s.zarr")
    script = _CRASH_SCRIPT.format(tests=str(Path(__file__).parent), path=path)
    assert subprocess.run([sys.executable, "-c", script], timeout=120).returncode == 1
    rig = tiny_rig()
    assert open_store(path).episode(0).num_frames == 5

    w = StoreWriter.open_for_resume(path)
    assert w.root_attrs["town"] == "Town01"
    ep = w.episode(0, 8, SEED)
    assert (ep.committed, ep.num_frames) == (5, 8)
    np.testing.assert_array_equal(ep.last_ego_to_world(), make_frame(4, rig).ego_to_world)
    for t in range(5, 8):
        ep.append(make_frame(t, rig))
    ep.finish()
    w.close()

    ep = open_store(path, verify_chunks=True).episode(0)
    assert ep.num_frames == 8 and ep.complete
    np.testing.assert_array_equal(ep.frame, np.arange(1000, 1008))
    for t in range(8):
        assert_frame_equal(ep.frame_data(t), make_frame(t, rig))


def test_resume_removes_the_temporary_files_of_writes_a_kill_interrupted(tmp_path):
    # zarr's local store writes NAME.<uuid hex>.partial and renames it; SIGKILL in between leaves the temp file.
    path = tmp_path / "s.zarr"
    write_store(path, planned=4, committed=2)
    chunk = next(p for p in sorted((path / "episodes").rglob("*")) if p.is_file() and "/c/" in str(p))
    before = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    stale = [chunk.with_suffix(f".{uuid.uuid4().hex}.partial"), path / f"zarr.{uuid.uuid4().hex}.partial"]
    for p in stale:
        p.write_bytes(b"half a chunk")
    keep = path / "episodes" / "notes.partial"                      # not zarr's pattern: left alone
    keep.write_bytes(b"mine")
    StoreWriter.open_for_resume(str(path)).close()
    assert not any(p.exists() for p in stale) and keep.read_bytes() == b"mine"
    assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file() and p != keep} == before


def test_frame_written_but_not_committed_is_invisible_and_overwritten_on_resume(tmp_path):
    path = str(tmp_path / "s.zarr")
    rig = write_store(path, planned=5, committed=3)
    # frame 3's data lands in every array, but the crash happens before committed_frames is bumped
    g = zarr.open_group(path, mode="r+")["episodes/episode_0000"]
    garbage = make_frame(99, rig)
    for key in ("rgb", "depth", "semantic", "cam_to_world", "ego_to_world", "timestamp", "frame"):
        g[key][3] = getattr(garbage, key)
    assert g.attrs["committed_frames"] == 3

    ep = open_store(path).episode(0)
    assert ep.num_frames == 3 and ep.rgb.shape[0] == 3 and len(ep.frame) == 3
    with pytest.raises(IndexError):
        ep.rgb[3]

    w = StoreWriter.open_for_resume(path)
    ew = w.episode(0, 5, SEED)
    assert ew.committed == 3
    ew.append(make_frame(3, rig))
    ep = open_store(path).episode(0)
    assert ep.num_frames == 4
    assert_frame_equal(ep.frame_data(3), make_frame(3, rig))


def test_last_frame_commit_marks_episode_complete_even_without_finish(tmp_path):
    write_store(tmp_path / "s.zarr", planned=3, committed=3, finish=False)
    assert open_store(str(tmp_path / "s.zarr")).episode(0).complete


def test_interrupted_episode_creation_is_reported_then_recreated_on_resume(tmp_path):
    path = str(tmp_path / "s.zarr")
    rig = write_store(path, planned=3, committed=3)
    # a crash while creating episode 1: its group exists without attributes or arrays
    zarr.open_group(path, mode="r+")["episodes"].create_group("episode_0001")
    problems = validate_store(path)
    assert len(problems) == 1 and "episode_0001" in problems[0] and "missing" in problems[0]
    w = StoreWriter.open_for_resume(path)
    ep = w.episode(1, 2, SEED + 1)
    assert ep.committed == 0
    ep.append(make_frame(0, rig))
    ep.append(make_frame(1, rig))
    w.close()
    assert validate_store(path) == []
    assert open_store(path).episode(1).num_frames == 2


def test_resumed_writer_stores_chunks_equal_to_the_fill_value(tmp_path):
    # zarr skips chunks equal to the fill value (0) unless told otherwise, on every open: a reopened episode
    # must still store frame 0's timestamp 0.0 and frame id 0, or the deep check takes them for lost chunks
    path = str(tmp_path / "s.zarr")
    rig = tiny_rig()
    w = StoreWriter.create(path, root_attrs(rig))
    w.episode(0, 3, SEED)
    w.close()
    w = StoreWriter.open_for_resume(path)
    ep = w.episode(0, 3, SEED)
    ep.append(FrameData(**{**make_frame(0, rig).__dict__, "frame": 0}))
    w.close()
    for key in ("timestamp", "frame"):
        assert (tmp_path / f"s.zarr/episodes/episode_0000/{key}/c/0").is_file(), key
    assert zarr.open_group(path)["episodes/episode_0000"].attrs["every_chunk_stored"] is True
    assert validate_store(path) == []


def _as_legacy(path: Path, episode: str = "episode_0000"):
    """Make an episode look written by the older writer (no every_chunk_stored attribute)."""
    _edit_json(path / f"episodes/{episode}/zarr.json", every_chunk_stored=None)


@pytest.mark.parametrize("legacy, chunk, outcome", [
    (True, "timestamp/c/0", "note"),           # timestamp 0.0 at frame 0 is data: an old writer skipped it
    (True, "frame/c/0", "note"),
    (True, "rgb/c/1/0/0/0/0", "note"),         # a black image is data anywhere
    (True, "timestamp/c/2", "problem"),        # timestamps increase: 0.0 at frame 2 is a lost chunk
    (True, "depth/c/1/0/0/0", "problem"),      # depth is > 0 or inf: never a whole chunk of 0
    (True, "ego_to_world/c/1/0/0", "problem"),
    (False, "timestamp/c/0", "problem"),       # this writer stores every chunk: absent means lost
    (False, "rgb/c/1/0/0/0/0", "problem"),
])
def test_absent_chunk_is_lost_unless_an_older_writer_may_have_skipped_fill_valued_data(tmp_path, legacy, chunk,
                                                                                      outcome):
    from sim_bridge.store.validate import validate_report

    path = tmp_path / "s.zarr"
    write_store(path, planned=3, committed=3)
    if legacy:
        _as_legacy(path)
    (path / "episodes/episode_0000" / chunk).unlink()
    report = validate_report(str(path))
    array = chunk.split("/")[0]
    if outcome == "note":
        assert report.problems == [] and len(report.notes) == 1, (report.problems, report.notes)
        assert f"episode_0000/{array}" in report.notes[0] and "older sim_bridge" in report.notes[0]
        open_store(str(path), verify_chunks=True)
    else:
        missing = [p for p in report.problems if f"episode_0000/{array}: chunk(s) of committed frames missing" in p]
        assert len(missing) == 1, report.problems
        with pytest.raises(StoreError):
            open_store(str(path), verify_chunks=True)


def test_resuming_an_episode_with_nothing_committed_makes_it_strict(tmp_path):
    path = tmp_path / "s.zarr"
    rig = write_store(path, planned=3, committed=0)
    _as_legacy(path)
    w = StoreWriter.open_for_resume(str(path))
    ep = w.episode(0, 3, SEED)
    ep.append(make_frame(0, rig))
    w.close()
    assert zarr.open_group(str(path))["episodes/episode_0000"].attrs["every_chunk_stored"] is True
    # committed frames of a legacy episode are not made strict by a resume: they may hold skipped chunks
    path2 = tmp_path / "t.zarr"
    write_store(path2, planned=3, committed=1)
    _as_legacy(path2)
    w = StoreWriter.open_for_resume(str(path2))
    w.episode(0, 3, SEED).append(make_frame(1, rig))
    w.close()
    assert "every_chunk_stored" not in zarr.open_group(str(path2))["episodes/episode_0000"].attrs


def test_validate_cli_exit_status_says_valid_incomplete_or_broken(tmp_path):
    from click.testing import CliRunner

    from sim_bridge.cli import main as cli

    complete, partial, broken = tmp_path / "c.zarr", tmp_path / "p.zarr", tmp_path / "b.zarr"
    write_store(complete, planned=3, committed=3, episodes=2)
    write_store(partial, planned=4, committed=3, episodes=2)
    write_store(broken, planned=4, committed=3, episodes=2)
    _fault_nan_pose(broken)
    ok = CliRunner().invoke(cli, ["validate", str(complete)])
    assert ok.exit_code == 0 and ok.output == f"{complete}: valid\n"
    inc = CliRunner().invoke(cli, ["validate", str(partial)])
    assert inc.exit_code == 3, inc.output
    assert inc.output == (f"{partial}: incomplete: 6 of 8 frames; resume with "
                          f"`sim_bridge collect --out {partial} --resume`\n")
    bad = CliRunner().invoke(cli, ["validate", str(broken)])
    assert bad.exit_code == 1 and "non-finite" in bad.output and "incomplete: 6 of 8 frames" in bad.output
    assert "3  valid but incomplete" in CliRunner().invoke(cli, ["validate", "--help"]).output


def test_incomplete_counts_recorded_episodes_not_yet_created(tmp_path):
    from sim_bridge.store.validate import validate_report

    path = tmp_path / "s.zarr"
    write_store(path, planned=4, committed=4)  # root_attrs records collection episodes=1, frames=4
    _edit_json(path / "zarr.json", collection={"episodes": 3, "frames": 4, "width": W, "height": H, "rig": "tiny"})
    report = validate_report(str(path))
    assert (report.problems, report.frames_committed, report.frames_planned, report.exit_code) == ([], 4, 12, 3)


# ------------------------------------------------------------------------------------------------- writer errors


def test_writer_rejects_bad_frames_and_misuse(tmp_path):
    rig = tiny_rig()
    w = StoreWriter.create(str(tmp_path / "s.zarr"), root_attrs(rig))
    ep = w.episode(0, 2, SEED)
    good = make_frame(0, rig)
    cases = [
        (dict(depth=good.depth.astype(np.float64)), "depth has dtype float64, expected float32"),
        (dict(rgb=good.rgb[:1]), "rgb has shape (1, 8, 12, 3), expected (2, 8, 12, 3)"),
        (dict(semantic=good.semantic.astype(np.int32)), "semantic has dtype int32"),
        (dict(cam_to_world=good.cam_to_world * 2.0), "cam_to_world camera 0 is not a rigid transform"),
        (dict(ego_to_world=np.full((4, 4), np.nan)), "ego_to_world is not a rigid transform: non-finite"),
        (dict(timestamp=float("nan")), "timestamp is nan"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError) as err:
            ep.append(FrameData(**{**good.__dict__, **change}))
        assert message in str(err.value) and "frame 0 to episode_0000" in str(err.value)
    assert ep.committed == 0 and zarr.open_group(str(tmp_path / "s.zarr"))["episodes/episode_0000"].attrs["committed_frames"] == 0
    ep.append(good)
    with pytest.raises(ValueError, match="1 of 2 frames committed"):
        ep.finish()
    ep.append(make_frame(1, rig))
    with pytest.raises(ValueError, match="already has all 2 planned frames"):
        ep.append(good)
    with pytest.raises(ValueError, match=r"planned_frames 2 \(asked 3\)"):
        w.episode(0, 3, SEED)
    with pytest.raises(ValueError, match=r"seed 7 \(asked 8\)"):
        w.episode(0, 2, SEED + 1)
    with pytest.raises(ValueError, match="missing \\['town'\\]"):
        StoreWriter.create(str(tmp_path / "t.zarr"), {k: v for k, v in root_attrs(rig).items() if k != "town"})


def test_create_refuses_existing_store_unless_overwrite(tmp_path):
    path = str(tmp_path / "s.zarr")
    rig = write_store(path, planned=2, committed=2)
    with pytest.raises(FileExistsError, match=r"pass --resume to continue it or --overwrite to replace it"):
        StoreWriter.create(path, root_attrs(rig))
    w = StoreWriter.create(path, root_attrs(rig), overwrite=True)
    assert len(open_store(path)) == 0
    w.close()
    other = tmp_path / "notes"
    other.mkdir()
    (other / "important.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a zarr store"):
        StoreWriter.create(str(other), root_attrs(rig), overwrite=True)
    assert (other / "important.txt").exists()


def test_open_missing_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="sim_bridge collect"):
        open_store(str(tmp_path / "nothing.zarr"))
    with pytest.raises(FileNotFoundError):
        StoreWriter.open_for_resume(str(tmp_path / "nothing.zarr"))
    problems = validate_store(str(tmp_path / "nothing.zarr"))
    assert len(problems) == 1 and "nothing.zarr" in problems[0]


# ------------------------------------------------------------------------------------------ faults found on disk


def _edit_json(path: Path, **changes):
    meta = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            meta["attributes"].pop(k)
        else:
            meta["attributes"][k] = v
    path.write_text(json.dumps(meta))


def _fault_truncate_chunk(p: Path):
    chunk = p / "episodes/episode_0000/rgb/c/1/1/0/0/0"
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])


def _fault_nan_pose(p: Path):
    zarr.open_group(str(p), mode="r+")["episodes/episode_0000/cam_to_world"][1, 0, 0, 0] = np.nan


def _fault_non_rigid(p: Path):
    arr = zarr.open_group(str(p), mode="r+")["episodes/episode_0000/cam_to_world"]
    m = arr[2, 1]
    m[:3, :3] *= 1.5
    arr[2, 1] = m


def _fault_bad_last_row(p: Path):
    arr = zarr.open_group(str(p), mode="r+")["episodes/episode_0000/ego_to_world"]
    m = arr[0]
    m[3] = [0.0, 0.0, 1.0, 1.0]
    arr[0] = m


def _fault_reflection(p: Path):
    arr = zarr.open_group(str(p), mode="r+")["episodes/episode_0000/ego_to_world"]
    m = arr[1]
    m[:3, 1] *= -1.0
    arr[1] = m


def _fault_delete_array(p: Path):
    shutil.rmtree(p / "episodes/episode_0000/depth")


def _fault_delete_chunk(p: Path):
    (p / "episodes/episode_0000/semantic/c/2/0/0/0").unlink()


def _fault_zero_focal_length_rig(p: Path):
    rig = json.loads((p / "zarr.json").read_text())["attributes"]["rig"]
    rig[1]["K"][0][0] = 0.0  # an older collect accepted such a rig and failed at frame 0
    _edit_json(p / "zarr.json", rig=rig)


def _fault_format_version(p: Path):
    _edit_json(p / "zarr.json", format_version=2)


def _fault_committed_beyond_planned(p: Path):
    _edit_json(p / "episodes/episode_0000/zarr.json", committed_frames=9)


def _fault_missing_root_attr(p: Path):
    _edit_json(p / "zarr.json", town=None)


def _fault_not_a_capture_store(p: Path):
    shutil.rmtree(p)
    zarr.open_group(str(p), mode="w")


def _fault_wrong_dtype(p: Path):
    g = zarr.open_group(str(p), mode="r+")["episodes/episode_0000"]
    del g["semantic"]
    g.create_array("semantic", shape=(4, N, H, W), dtype="uint16", chunks=(1, 1, H, W))


def _fault_wrong_shape(p: Path):
    g = zarr.open_group(str(p), mode="r+")["episodes/episode_0000"]
    del g["rgb"]
    g.create_array("rgb", shape=(4, N, H, W + 1, 3), dtype="uint8", chunks=(1, 1, H, W + 1, 3))


FAULTS = [
    # (fault, needs the deep check, substrings the single problem line must contain)
    (_fault_truncate_chunk, True, ["episode_0000/rgb", "frame 1 camera 1", "truncated or corrupt", "committed_frames"]),
    (_fault_delete_chunk, True, ["episode_0000/semantic", "missing", "frame 2 camera 0"]),
    (_fault_nan_pose, False, ["episode_0000/cam_to_world", "non-finite", "frame 1 camera 0", "collect --resume"]),
    (_fault_non_rigid, False, ["episode_0000/cam_to_world", "not orthonormal", "frame 2 camera 1"]),
    (_fault_bad_last_row, False, ["episode_0000/ego_to_world", "last row", "frame 0"]),
    (_fault_reflection, False, ["episode_0000/ego_to_world", "determinant", "frame 1"]),
    (_fault_delete_array, False, ["episode_0000/depth", "array missing", "collect --resume"]),
    (_fault_zero_focal_length_rig, False, ["root attribute 'rig' is invalid", "camera 'left'", "fx 0"]),
    (_fault_format_version, False, ["store format 1 expected, found 2: re-collect with this version of sim_bridge "
                                    "or use a matching nfldm"]),
    (_fault_committed_beyond_planned, False, ["episode_0000", "committed_frames 9 > planned_frames 4"]),
    (_fault_missing_root_attr, False, ["['town']", "missing", "re-collect"]),
    (_fault_not_a_capture_store, False, ["not a capture store"]),
    (_fault_wrong_dtype, False, ["episode_0000/semantic", "dtype uint16, expected uint8"]),
    (_fault_wrong_shape, False, ["episode_0000/rgb", "shape (4, 2, 8, 13, 3), expected (4, 2, 8, 12, 3)"]),
]


@pytest.mark.parametrize("fault, deep, expected", FAULTS, ids=[f[0].__name__[7:] for f in FAULTS])
def test_each_fault_is_named(tmp_path, fault, deep, expected):
    path = tmp_path / "s.zarr"
    write_store(path, planned=4, committed=3, episodes=2)
    fault(path)
    problems = validate_store(str(path), deep=True)
    assert len(problems) == 1, problems
    for text in expected:
        assert text in problems[0], (text, problems[0])
    if deep:  # the cheap check on open does not decode image chunks; verify_chunks does
        assert validate_store(str(path), deep=False) == []
        open_store(str(path))
    with pytest.raises(StoreError) as err:
        open_store(str(path), verify_chunks=True)
    assert isinstance(err.value, ValueError) and problems[0] in str(err.value)
    if not deep:
        with pytest.raises(StoreError, match="problem"):
            StoreWriter.open_for_resume(str(path))


def test_several_faults_give_one_line_each(tmp_path):
    path = tmp_path / "s.zarr"
    write_store(path, planned=4, committed=3, episodes=2)
    _fault_nan_pose(path)
    _fault_truncate_chunk(path)
    shutil.rmtree(path / "episodes/episode_0001/timestamp")
    problems = validate_store(str(path))
    assert len(problems) == 3, problems
    assert sum("episode_0000/cam_to_world" in p for p in problems) == 1
    assert sum("episode_0000/rgb" in p for p in problems) == 1
    assert sum("episode_0001/timestamp: array missing" in p for p in problems) == 1
    with pytest.raises(StoreError) as err:
        open_store(str(path))
    assert len(err.value.problems) == 2  # the truncated image chunk needs verify_chunks


# ------------------------------------------------------------------------------------------------------- summary


def test_summary_table(tmp_path):
    from rich.console import Console

    write_store(tmp_path / "s.zarr", planned=4, committed=3, episodes=2)
    table = store_summary(open_store(str(tmp_path / "s.zarr")))
    assert table.row_count == 2
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    for piece in ("procedural", "Town01", "ClearNoon", "seed 3", "10 fps", "format 1", "on disk", "episode_0001",
                  "3/4", f"{H}×{W}"):
        assert piece in text, piece
    # 3 frames 0.1 s apart; the ego moves 1 m per frame
    row = next(line for line in text.splitlines() if "episode_0000" in line)
    assert "0.2" in row and "2.0" in row and " no " in row
