"""Start-up contract of the command lines: ``--help`` and argument errors import no heavy library.

The time itself is a benchmark (`nfldm_training.benchmarks.startup`, a row of `nfldm bench`), not a test; what is
tested is the deterministic cause of the time: which modules a fresh interpreter has imported after ``--help``.
"""
from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata

#: Libraries that take seconds to import (torch alone ~3-10 s on 2 cores) and that no ``--help`` may load.
HEAVY = ("torch", "lightning", "diffusers", "transformers", "open3d", "scipy", "numba", "zarr", "skimage",
         "torchvision", "safetensors")

PROBE = """
import json, sys
import click
from {module} import main
for args in {args!r}:
    try:
        main(args, prog_name="{prog}", standalone_mode=False)
    except click.UsageError:            # the argument errors: printed by click in standalone mode
        pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def _heavy_modules_after(module: str, prog: str, args: list[list[str]]) -> list[str]:
    code = PROBE.format(module=module, prog=prog, args=args, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_nfldm_help_and_argument_errors_import_no_heavy_library():
    commands = sorted(ep.name for ep in metadata.entry_points(group="nfldm.commands"))
    assert {"generate", "render", "train", "view", "bench"} <= set(commands)
    args = [["--help"], *([c, "--help"] for c in commands),
            *(["train", s, "--help"] for s in ("scene-ae", "latent-ae", "ldm", "prior", "critic")),
            ["generate", "--no-such-option"], ["generate", "--num", "many", "--model", "."], ["render"]]
    assert _heavy_modules_after("nfldm_sdk.cli.main", "nfldm", args) == []


def test_sim_bridge_help_imports_no_heavy_library():
    args = [["--help"], ["collect", "--help"], ["validate", "--help"], ["collect", "--frames", "none"]]
    assert _heavy_modules_after("sim_bridge.cli", "sim_bridge", args) == []


def test_help_lists_every_command_loaded():
    out = subprocess.run([sys.executable, "-m", "nfldm_sdk.cli.main", "--help"], capture_output=True, text=True, check=True)
    for ep in metadata.entry_points(group="nfldm.commands"):
        assert f"  {ep.name} " in out.stdout
    assert "unavailable" not in out.stdout


def test_help_shows_the_device_default_without_computing_it():
    from click.testing import CliRunner

    from nfldm_sdk.cli.main import main

    out = " ".join(CliRunner().invoke(main, ["generate", "--help"]).output.split())   # undo click's line wrapping
    assert "cuda when available, else cpu" in out and "ddpm|ddim|dpmsolver++" in out


def test_option_name_tables_match_the_modules_they_mirror():
    from nfldm_sdk.cli.names import RIG_PRESET_NAMES, SAMPLER_NAMES, default_device
    from nfldm_sdk.cameras.rig import RIG_PRESETS
    from nfldm_sdk.models.noise_schedule import SAMPLERS
    from nfldm_training.configs.names import PRESET_NAMES
    from nfldm_training.configs.presets import PRESETS
    from nfldm_training.configs.latent import LATENT_PRESETS
    from nfldm_training.configs.ldm import LDM_PRESETS
    from nfldm_training.configs.prior import PRIOR_PRESETS
    from nfldm_training.configs.critic import CRITIC_PRESETS

    import torch

    assert SAMPLER_NAMES == tuple(SAMPLERS)
    assert RIG_PRESET_NAMES == tuple(RIG_PRESETS)
    for table in (PRESETS, LATENT_PRESETS, LDM_PRESETS, PRIOR_PRESETS, CRITIC_PRESETS):
        assert PRESET_NAMES == tuple(table)
    assert default_device() == ("cuda" if torch.cuda.is_available() else "cpu")


def test_package_names_still_import_lazily():
    code = ("import sys, nfldm_sdk; assert 'torch' not in sys.modules; "
            "from nfldm_sdk import SceneGenerator; print(SceneGenerator.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "nfldm_sdk.pipelines.generator"
