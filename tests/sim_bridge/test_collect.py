"""`sim_bridge collect`: backend choice, resume after a killed process, clear errors, rig sizes."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from sim_bridge.cli import main as cli
from sim_bridge.collect import CollectConfig, choose_backend
from sim_bridge.rig import Rig

BIN = Path(sys.executable).parent
SMALL = ["--backend", "procedural", "--town", "Town01", "--rig", "front", "--width", "32", "--height", "24", "--fps", "5", "--seed", "3"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_auto_uses_builtin_simulator_when_no_server_answers():
    lines = []
    port = _free_port()  # nothing listens there
    assert choose_backend(CollectConfig(out="x", port=port), log=lines.append) == "procedural"
    assert len(lines) == 1 and "built-in procedural simulator" in lines[0] and str(port) in lines[0]


def _committed(path: Path) -> int:
    try:
        return int(zarr.open_group(str(path), mode="r")["episodes/episode_0000"].attrs["committed_frames"])
    except Exception:
        return 0


def test_resume_after_kill_loses_and_repeats_nothing(tmp_path):
    args = [*SMALL, "--episodes", "1", "--frames", "40"]
    reference = tmp_path / "reference.zarr"
    assert CliRunner().invoke(cli, ["collect", "--out", str(reference), "--quiet", *args]).exit_code == 0

    killed = tmp_path / "killed.zarr"
    proc = subprocess.Popen([str(BIN / "sim_bridge"), "collect", "--out", str(killed), "--quiet", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while _committed(killed) < 6 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # no cleanup runs: a crash mid-frame
    proc.wait()
    partial = _committed(killed)
    assert 0 < partial < 40, "the collection should have been killed mid-run"

    result = CliRunner().invoke(cli, ["collect", "--out", str(killed), "--resume", "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"Wrote {40 - partial} frames" in result.output

    from sim_bridge import open_store

    a, b = open_store(str(reference)).episode(0), open_store(str(killed), verify_chunks=True).episode(0)
    assert a.num_frames == b.num_frames == 40
    np.testing.assert_array_equal(a.frame, b.frame)
    np.testing.assert_array_equal(a.rgb[:], b.rgb[:])
    np.testing.assert_array_equal(a.depth[:], b.depth[:])
    np.testing.assert_array_equal(a.cam_to_world, b.cam_to_world)
    assert CliRunner().invoke(cli, ["validate", str(killed)]).exit_code == 0


def test_resume_refuses_conflicting_settings_and_existing_store_needs_a_flag(tmp_path):
    out = tmp_path / "s.zarr"
    args = [*SMALL, "--frames", "2"]
    assert CliRunner().invoke(cli, ["collect", "--out", str(out), "--quiet", *args]).exit_code == 0
    again = CliRunner().invoke(cli, ["collect", "--out", str(out), "--quiet", *args])
    assert again.exit_code != 0 and "--resume" in again.output and "--overwrite" in again.output
    conflict = CliRunner().invoke(cli, ["collect", "--out", str(out), "--resume", "--town", "Town02"])
    assert conflict.exit_code != 0 and "--town" in conflict.output and "Town01" in conflict.output
    # more episodes may be added on resume
    more = CliRunner().invoke(cli, ["collect", "--out", str(out), "--resume", "--episodes", "2", "--quiet"])
    assert more.exit_code == 0, more.output
    from sim_bridge import open_store

    assert len(open_store(str(out))) == 2


def test_store_records_the_rig_name_given_and_resume_accepts_its_other_names(tmp_path):
    base = ["--backend", "procedural", "--town", "Town01", "--width", "16", "--height", "16", "--fps", "5", "--quiet"]
    old, new = tmp_path / "old.zarr", tmp_path / "new.zarr"
    assert CliRunner().invoke(cli, ["collect", "--out", str(old), *base, "--frames", "1", "--rig", "default"]).exit_code == 0
    assert CliRunner().invoke(cli, ["collect", "--out", str(new), *base, "--frames", "1"]).exit_code == 0
    assert zarr.open_group(str(old), mode="r").attrs["collection"]["rig"] == "default"
    assert zarr.open_group(str(new), mode="r").attrs["collection"]["rig"] == "capture"  # the default preset
    assert zarr.open_group(str(old), mode="r").attrs["rig"] == zarr.open_group(str(new), mode="r").attrs["rig"]
    more = CliRunner().invoke(cli, ["collect", "--out", str(old), "--resume", "--rig", "capture", "--episodes", "2",
                                    "--quiet"])
    assert more.exit_code == 0, more.output
    assert zarr.open_group(str(old), mode="r").attrs["collection"]["rig"] == "default"
    other = CliRunner().invoke(cli, ["collect", "--out", str(old), "--resume", "--rig", "front"])
    assert other.exit_code != 0 and "--rig" in other.output and "'default'" in other.output


@pytest.mark.parametrize("bad, message", [(["--town", "Town99"], "Town03"), (["--weather", "Sunny"], "ClearNoon"),
                                          (["--rig", "no_such_rig"], "preset")])
def test_bad_input_names_the_fix(tmp_path, bad, message):
    result = CliRunner().invoke(cli, ["collect", "--out", str(tmp_path / "x.zarr"), *SMALL, *bad])
    assert result.exit_code != 0 and message in result.output
    assert not (tmp_path / "x.zarr").exists()


@pytest.mark.parametrize("fault, message", [("scaled_mount", "cam_to_ego is not a rigid transform"),
                                            ("zero_focal", "fx 0"), ("bad_json", "not valid JSON")])
def test_bad_rig_file_fails_before_a_store_exists(tmp_path, fault, message):
    rig = Rig.resolve("front", 32, 24).to_list()
    if fault == "scaled_mount":
        rig[0]["cam_to_ego"] = (np.array(rig[0]["cam_to_ego"]) * 1.2).tolist()
    if fault == "zero_focal":
        rig[0]["K"][0][0] = 0.0
    path = tmp_path / "rig.json"
    path.write_text(json.dumps({"cameras": rig})[: 20 if fault == "bad_json" else None])
    out = tmp_path / "x.zarr"
    result = CliRunner().invoke(cli, ["collect", "--out", str(out), "--quiet", *SMALL[:4], "--rig", str(path)])
    assert result.exit_code == 1 and message in result.output and str(path) in result.output, result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1  # one line
    if fault != "bad_json":
        assert "'front'" in result.output
    assert not out.exists()


def test_rig_file_keeps_its_own_size_and_resume_agrees(tmp_path):
    path = tmp_path / "wide.json"
    Rig.resolve("front", 48, 27).save(path)
    base = ["--backend", "procedural", "--town", "Town01", "--fps", "5", "--frames", "1", "--quiet", "--rig", str(path)]
    own, half, stretched = tmp_path / "own.zarr", tmp_path / "half.zarr", tmp_path / "stretched.zarr"
    assert CliRunner().invoke(cli, ["collect", "--out", str(own), *base]).exit_code == 0
    from sim_bridge import open_store

    store = open_store(str(own))
    assert (store.rig.width, store.rig.height) == (48, 27) and store.episode(0).rgb.shape == (1, 1, 27, 48, 3)
    np.testing.assert_array_equal(store.rig.K(), Rig.load(path).K())
    assert store.attrs["collection"]["width"] == 48 and store.attrs["collection"]["height"] == 27

    assert CliRunner().invoke(cli, ["collect", "--out", str(half), *base, "--width", "32"]).exit_code == 0
    assert (open_store(str(half)).rig.width, open_store(str(half)).rig.height) == (32, 18)
    bad = CliRunner().invoke(cli, ["collect", "--out", str(stretched), *base, "--width", "64", "--height", "64"])
    assert bad.exit_code == 1 and "would change its aspect ratio" in bad.output and not stretched.exists()

    # resume compares the size asked with the size recorded
    more = CliRunner().invoke(cli, ["collect", "--out", str(half), "--resume", "--episodes", "2", "--width", "32", "--quiet"])
    assert more.exit_code == 0, more.output
    other = CliRunner().invoke(cli, ["collect", "--out", str(half), "--resume", "--height", "20"])
    assert other.exit_code != 0 and "--height 20" in other.output and "store has 18" in other.output
