"""A real `sim_bridge collect` of 2 episodes, SIGKILLed at chosen points, resumed: the store validates and its
chunks are byte-identical to an uninterrupted run's."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sim_bridge.cli import main as cli
from sim_bridge.store.validate import EXIT_INCOMPLETE, EXIT_VALID

BIN = Path(sys.executable).parent
FRAMES = 8
ARGS = ["--backend", "procedural", "--town", "Town01", "--rig", "front", "--width", "64", "--height", "64",
        "--fps", "5", "--seed", "3", "--episodes", "2", "--frames", str(FRAMES), "--quiet"]


def _committed(store: Path, episode: int) -> int:
    """committed_frames of an episode, read from its metadata file (written atomically by the writer)."""
    try:
        meta = json.loads((store / f"episodes/episode_{episode:04d}/zarr.json").read_text())
        return int(meta["attributes"]["committed_frames"])
    except (OSError, ValueError, KeyError):
        return 0


def _chunks(store: Path) -> dict[str, bytes]:
    """Every chunk file of every episode array, by path relative to the store."""
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted((store / "episodes").rglob("*"))
            if p.is_file() and "/c/" in str(p.relative_to(store))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "reference.zarr"
    result = CliRunner().invoke(cli, ["collect", "--out", str(out), *ARGS])
    assert result.exit_code == 0, result.output
    return out


# (episode, committed frames of it at which the process is killed)
KILL_POINTS = {"in_first_episode": (0, 3), "between_episodes": (0, FRAMES), "in_last_episode": (1, 4)}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_killed_two_episode_capture_resumes_to_the_same_bytes(tmp_path, reference, point):
    episode, target = KILL_POINTS[point]
    store = tmp_path / "killed.zarr"
    proc = subprocess.Popen([str(BIN / "sim_bridge"), "collect", "--out", str(store), *ARGS],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while _committed(store, episode) < target and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # no cleanup runs: a crash mid-frame
    proc.wait()
    done = _committed(store, 0) + _committed(store, 1)
    assert 0 < done < 2 * FRAMES, f"the collection should have been killed mid-run, it committed {done} frames"
    if point == "between_episodes":
        assert _committed(store, 0) == FRAMES

    killed = CliRunner().invoke(cli, ["validate", str(store)])
    assert killed.exit_code == EXIT_INCOMPLETE, killed.output
    assert f"incomplete: {done} of {2 * FRAMES} frames" in killed.output
    assert f"sim_bridge collect --out {store} --resume" in killed.output

    resumed = CliRunner().invoke(cli, ["collect", "--out", str(store), "--resume", "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert f"Wrote {2 * FRAMES - done} frames" in resumed.output

    check = CliRunner().invoke(cli, ["validate", str(store)])
    assert check.exit_code == EXIT_VALID, check.output
    assert check.output.strip().endswith("valid") and "note" not in check.output
    from sim_bridge import open_store

    open_store(str(store), verify_chunks=True)
    # the same chunk files with the same bytes: nothing lost, nothing skipped, nothing repeated
    got, want = _chunks(store), _chunks(reference)
    assert sorted(got) == sorted(want)
    assert [k for k in want if got[k] != want[k]] == []
