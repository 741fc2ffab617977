"""Every `nfldm` and `sim_bridge` command ends with one ``Error:`` line and a non-zero exit for the project's own
errors; a bug (any other exception) keeps its traceback."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from nfldm_sdk.cli.main import error_message, main as nfldm_main
from sim_bridge.cli import error_message as bridge_error_message, main as bridge_main

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _broken_bundle(tmp_path: Path) -> Path:
    """The shipped default bundle without its ψ_g part."""
    bundle = tmp_path / "bundle"
    shutil.copytree(ROOT / "assets" / "models" / "default", bundle)
    shutil.rmtree(bundle / "denoiser_g")
    return bundle


def _one_error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert "Traceback" not in text, text
    assert len(lines) == 1 and lines[0].startswith("Error: "), text
    return lines[0]


def test_error_message_indents_the_rest_of_a_multi_line_message():
    for fmt in (error_message, bridge_error_message):
        assert fmt(ValueError("store x is invalid:\nepisode_0000/rgb: bad\nepisode_0001/depth: bad")) == \
            "store x is invalid:\n  episode_0000/rgb: bad\n  episode_0001/depth: bad"
        assert fmt(ValueError("one line")) == "one line"
        assert fmt(ValueError()) == "ValueError"


def test_generate_with_a_broken_bundle_is_one_line(tmp_path):
    bundle = _broken_bundle(tmp_path)
    r = CliRunner().invoke(nfldm_main, ["generate", "--model", str(bundle), "--out", str(tmp_path / "out"),
                                        "--device", "cpu"])
    assert r.exit_code == 1
    line = _one_error_line(r.output)
    assert "denoiser_g" in line and str(bundle) in line
    assert not (tmp_path / "out").exists()


def test_generate_with_a_broken_bundle_in_a_real_process(tmp_path):
    bundle = _broken_bundle(tmp_path)
    r = subprocess.run([str(BIN / "nfldm"), "generate", "--model", str(bundle), "--out", str(tmp_path / "out"),
                        "--device", "cpu"], capture_output=True, text=True)
    assert r.returncode == 1
    assert r.stdout == ""
    assert "denoiser_g" in _one_error_line(r.stderr)


def test_training_errors_are_one_line(tmp_path):
    # nfldm_training's errors derive from NfldmError: a missing latent store is one line, not a traceback.
    (tmp_path / "latents.zarr").mkdir()
    r = CliRunner().invoke(nfldm_main, ["train", "ldm", "--level", "g", "--latents", str(tmp_path / "latents.zarr"),
                                        "--preset", "tiny", "--out", str(tmp_path / "run")])
    assert r.exit_code == 1
    line = _one_error_line(r.output)
    assert str(tmp_path / "latents.zarr") in line and "nfldm encode-latents" in line


def test_training_error_types_refine_the_builtins():
    from nfldm_sdk.errors import NfldmError
    from nfldm_training.errors import TrainingError, TrainingInputNotFound

    assert issubclass(TrainingError, NfldmError) and issubclass(TrainingError, ValueError)
    assert issubclass(TrainingInputNotFound, NfldmError) and issubclass(TrainingInputNotFound, FileNotFoundError)


def test_sim_bridge_user_errors_are_one_line(tmp_path):
    rig = tmp_path / "rig.json"
    rig.write_text(json.dumps({"cameras": [{"name": "front"}]}))
    r = CliRunner().invoke(bridge_main, ["collect", "--rig", str(rig), "--out", str(tmp_path / "s.zarr"),
                                         "--backend", "procedural", "--frames", "1", "--quiet"])
    assert r.exit_code == 1 and "cam_to_ego" in _one_error_line(r.output)
    assert not (tmp_path / "s.zarr").exists()
    r = subprocess.run([str(BIN / "sim_bridge"), "info", str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 1 and str(tmp_path) in _one_error_line(r.stderr)


# A command of each group that raises the given error, run in a fresh process through the real group.
RAISER = """
import click
from {module} import main
from {errors} import {base}

class Broken({base}, ValueError):
    pass

@main.command("boom")
@click.option("--bug", is_flag=True)
def boom(bug):
    if bug:
        raise ZeroDivisionError("a bug")
    raise Broken("store /x is invalid:\\nepisode_0000/rgb: chunk 3 unreadable\\nepisode_0001: no frames")

main(prog_name="{prog}")
"""


def _run_raiser(module, errors, base, prog, *args):
    code = RAISER.format(module=module, errors=errors, base=base, prog=prog)
    return subprocess.run([sys.executable, "-c", code, "boom", *args], capture_output=True, text=True)


def test_project_errors_from_any_command_are_one_message_with_an_indented_rest():
    for module, errors, base, prog in (("sim_bridge.cli", "sim_bridge.errors", "SimBridgeError", "sim_bridge"),
                                       ("nfldm_sdk.cli.main", "nfldm_sdk.errors", "NfldmError", "nfldm")):
        r = _run_raiser(module, errors, base, prog)
        assert r.returncode == 1, r.stderr
        assert "Traceback" not in r.stderr
        assert r.stderr.splitlines() == ["Error: store /x is invalid:", "  episode_0000/rgb: chunk 3 unreadable",
                                         "  episode_0001: no frames"]


def test_bugs_keep_their_traceback():
    for module, errors, base, prog in (("sim_bridge.cli", "sim_bridge.errors", "SimBridgeError", "sim_bridge"),
                                       ("nfldm_sdk.cli.main", "nfldm_sdk.errors", "NfldmError", "nfldm")):
        r = _run_raiser(module, errors, base, prog, "--bug")
        assert r.returncode == 1
        assert "Traceback" in r.stderr and "ZeroDivisionError: a bug" in r.stderr
